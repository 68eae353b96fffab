// Reads a `.grphi` file (format 2, or format 1) lazily: opening maps the file and parses only the
// footer and index, within documented limits (reader_limits); tensors are then decoded on demand, a
// part at a time, straight into the caller's output. Raw tensors are views into the map (no copy).
//
//   grphi::file_reader in("model.grphi");
//   for (const auto& t : in.tensors()) std::cout << t.name << " " << grphi::dtype_name(t.source) << "\n";
//   Eigen::MatrixXf W(in.at("fc1.weight").rows(), in.at("fc1.weight").cols());
//   in.dequantize("fc1.weight", W);                 // base and scalar type from the file, parts in parallel
//   auto p = in.read<float, grphi::phi>("fc1.weight");   // the packed tensor itself
//   grphi::raw_view bias = in.raw("fc1.bias");           // bytes in the map
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../io/mapped_file.hpp"
#include "../core/quantize.hpp"
#include "format1.hpp"
#include "layout.hpp"
#include "section_codec.hpp"

namespace grphi {

// A raw tensor's bytes inside the reader's map (valid while the reader lives): little-endian, C order.
struct raw_view {
    const std::uint8_t* data = nullptr;
    std::size_t size = 0;
    dtype type = dtype::U8;
    std::vector<std::uint64_t> shape;
    std::uint64_t elements() const { return element_count(shape); }
};

namespace detail {

// Keeps rows [a, b) of p (relative to p's first row), in place.
template <class T, class Base>
void keep_rows(packed<T, Base>& p, Eigen::Index a, Eigen::Index b) {
    if (a == 0 && b == p.rows) return;
    const auto cols = static_cast<std::size_t>(p.cols), per_row = static_cast<std::size_t>(p.blocks_per_row());
    auto slice = [](auto& v, std::size_t from, std::size_t to) {
        v.erase(v.begin() + static_cast<std::ptrdiff_t>(to), v.end());
        v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(from));
    };
    const auto ua = static_cast<std::size_t>(a), ub = static_cast<std::size_t>(b);
    slice(p.signs, ua * cols, ub * cols);
    slice(p.exponents, ua * per_row, ub * per_row);
    const auto scale_blocks = static_cast<std::size_t>(p.scale_blocks_per_row());
    if (!p.block_top.empty()) slice(p.block_top, ua * scale_blocks, ub * scale_blocks);
    if (!p.block_steps.empty()) slice(p.block_steps, ua * scale_blocks, ub * scale_blocks);
    if (!p.block_scales.empty()) slice(p.block_scales, ua * scale_blocks, ub * scale_blocks);
    if (p.opts.per_channel) {
        slice(p.window_lo, ua, ub);
        slice(p.window_hi, ua, ub);
        slice(p.scale_steps, ua, ub);
    }
    p.rows = b - a;
}

// One worker's decode buffers: a part's arrays and the rANS symbols. Fresh arrays fault their pages in
// anew on every part, which cost as much as decoding; these keep their capacity from part to part.
struct part_buffers {
    stored_tensor part;
    section_scratch scratch;
};

// Part buffers no call is using, kept for the next one while the reader lives: at most one set per
// thread that decoded at once, and only for parts of at most keep_weights weights (larger parts are
// rare, and keeping ~5 bytes per weight of them would surprise).
class part_buffer_pool {
public:
    static constexpr std::uint64_t keep_weights = std::uint64_t{1} << 24;

    struct lease {
        part_buffer_pool* pool;
        std::unique_ptr<part_buffers> buffers;
        ~lease() { pool->give_back(std::move(buffers)); }
        part_buffers* operator->() const { return buffers.get(); }
    };
    lease take() {
        std::unique_ptr<part_buffers> b;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!free_.empty()) {
                b = std::move(free_.back());
                free_.pop_back();
            }
        }
        if (!b) b = std::make_unique<part_buffers>();
        return lease{this, std::move(b)};  // a prvalue: no move of the lease
    }

private:
    void give_back(std::unique_ptr<part_buffers> b) {
        if (!b || b->part.signs.capacity() > keep_weights) return;
        std::lock_guard<std::mutex> lock(mutex_);
        free_.push_back(std::move(b));
    }
    std::mutex mutex_;
    std::vector<std::unique_ptr<part_buffers>> free_;
};

// Runs body(i) for i in [0, n), in parallel with OpenMP when `parallel`; rethrows the first exception.
template <class Body>
void for_each_part(std::size_t n, bool parallel, Body&& body) {
    std::exception_ptr error;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (parallel && n > 1)
#endif
    for (std::size_t i = 0; i < n; ++i) {
        try {
            body(i);
        } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(grphi_file_reader_error)
#endif
            if (!error) error = std::current_exception();
        }
    }
    (void)parallel;
    if (error) std::rethrow_exception(error);
}

}  // namespace detail

class file_reader {
public:
    // Maps `path` and parses its index; throws io_error (cannot open) or format_error (bad content).
    explicit file_reader(const std::string& path, const reader_limits& limits = {})
        : file_(std::make_unique<mapped_file>(path)), name_(path), limits_(limits) {
        data_ = reinterpret_cast<const std::uint8_t*>(file_->data());
        size_ = file_->size();
        parse();
    }
    // Reads a file image in memory (borrowed: it must outlive the reader); `name` appears in messages.
    file_reader(const std::uint8_t* data, std::size_t size, std::string name = "grphi", const reader_limits& limits = {})
        : name_(std::move(name)), limits_(limits), data_(data), size_(size) {
        parse();
    }

    int version() const { return version_; }
    const std::string& name() const { return name_; }
    const reader_limits& limits() const { return limits_; }
    const std::vector<tensor_info>& tensors() const { return index_.tensors; }
    const metadata_map& metadata() const { return index_.metadata; }

    const tensor_info* find(const std::string& name) const {
        for (const auto& t : index_.tensors)
            if (t.name == name) return &t;
        return nullptr;
    }
    // Throws std::invalid_argument when there is no such tensor.
    const tensor_info& at(const std::string& name) const {
        if (const tensor_info* t = find(name)) return *t;
        throw std::invalid_argument(name_ + ": no tensor named '" + name + "'");
    }

    // True when the quantized tensor was stored from packed<T, Base>.
    template <class T, class Base>
    static bool holds(const tensor_info& t) {
        if (t.kind != tensor_kind::quantized || t.scalar != scalar_kind_of<T>() || t.base_name != Base::name) return false;
        if constexpr (is_custom_base_v<Base>) return true;
        else return t.base_value == static_cast<double>(static_cast<long double>(Base::value));
    }

    // One part (row section) of a quantized tensor, base erased; reads that section only.
    stored_tensor read_part_stored(const tensor_info& t, std::size_t part) const {
        stored_tensor p;
        detail::section_scratch scratch;
        read_part_into(t, part, p, scratch);
        return p;
    }

    // A whole quantized tensor, base erased (parts reassembled in row order).
    stored_tensor read_stored(const tensor_info& t) const {
        check_quantized(t, "read");
        stored_tensor whole = header_of(t);
        whole.rows = t.rows();
        for (std::size_t i = 0; i < t.sections.size(); ++i) {
            stored_tensor p = read_part_stored(t, i);
            if (t.sections.size() == 1) {
                p.name = t.name;
                whole = std::move(p);
                break;
            }
            append(whole.signs, p.signs);
            append(whole.exponents, p.exponents);
            append(whole.block_top, p.block_top);
            append(whole.block_steps, p.block_steps);
            append(whole.block_scales, p.block_scales);
            if (t.opts.per_channel || i == 0) {
                append(whole.window_lo, p.window_lo);
                append(whole.window_hi, p.window_hi);
                append(whole.scale_steps, p.scale_steps);
            } else if (p.window_lo != whole.window_lo || p.window_hi != whole.window_hi || p.scale_steps != whole.scale_steps) {
                throw format_error(name_ + ": tensor '" + t.name + "' part " + std::to_string(i) +
                                   ": per-tensor channel state differs from part 0");
            }
        }
        whole.coded_bytes = t.record_bytes + t.stored_bytes() + (version_ == 1 ? 4 : 0);
        return whole;
    }
    stored_tensor read_stored(const std::string& name) const { return read_stored(at(name)); }

    // The packed tensor (throws std::invalid_argument if it was not stored as packed<T, Base>).
    template <class T, class Base>
    packed<T, Base> read(const std::string& name) const {
        const tensor_info& t = at(name);
        check_holds<T, Base>(t);
        return read_stored(t).template as<T, Base>();
    }
    template <class T, class Base>
    packed<T, Base> read_part(const std::string& name, std::size_t part) const {
        const tensor_info& t = at(name);
        check_holds<T, Base>(t);
        return read_part_stored(t, part).template as<T, Base>();
    }

    // Rows [begin, end) of the tensor's matrix view into out ((end - begin) x cols; plain matrices are
    // resized). Only the parts holding those rows are decoded, in parallel, each straight into its rows
    // of out: extra memory is about 5 bytes per weight of one part per thread, whatever out's size.
    template <class T, class Base, class Out>
    void dequantize_rows(const std::string& name, std::int64_t begin, std::int64_t end, Out&& out) const {
        const tensor_info& t = at(name);
        check_holds<T, Base>(t);
        const std::int64_t rows = t.rows();
        if (begin < 0 || end < begin || end > rows)
            throw std::invalid_argument(name_ + ": tensor '" + t.name + "': rows [" + std::to_string(begin) + ", " +
                                        std::to_string(end) + ") are not inside [0, " + std::to_string(rows) + ")");
        detail::prepare_output(out, static_cast<Eigen::Index>(end - begin), static_cast<Eigen::Index>(t.cols()),
                               "grphi::file_reader::dequantize", "output");
        if (end == begin) return;
        const std::size_t first = t.part_of_row(begin), last = t.part_of_row(end - 1);
        check_shared_state(t, first, last);
        detail::for_each_part(last - first + 1, true, [&](std::size_t i) {
            const std::size_t part = first + i;
            const section_info& s = t.sections[part];
            const auto buffers = buffer_pool_->take();
            read_part_into(t, part, buffers->part, buffers->scratch);
            packed<T, Base> p = std::move(buffers->part).template as_decoded<T, Base>();  // values checked by the decoder
            const std::int64_t a = std::max(begin, s.first_row), b = std::min(end, s.first_row + s.rows);
            detail::keep_rows(p, static_cast<Eigen::Index>(a - s.first_row), static_cast<Eigen::Index>(b - s.first_row));
            // as_decoded validated the part's layout, the decoder its values: no second pass before composing.
            detail::dequantize_valid(p, out.middleRows(static_cast<Eigen::Index>(a - begin), static_cast<Eigen::Index>(b - a)));
            buffers->part = stored_tensor::from_valid(std::string(), std::move(p));  // the arrays, for the next part
        });
    }
    template <class T, class Base, class Out>
    void dequantize(const std::string& name, Out&& out) const {
        dequantize_rows<T, Base>(name, 0, at(name).rows(), std::forward<Out>(out));
    }
    // Scalar type and base taken from the file (phi, two, sqrt2 or custom); out may have either scalar.
    template <class Out>
    void dequantize_rows(const std::string& name, std::int64_t begin, std::int64_t end, Out&& out) const {
        const tensor_info& t = at(name);
        check_quantized(t, "dequantize");
        if (t.scalar == scalar_kind::float32) dequantize_by_base<float>(t, begin, end, out);
        else dequantize_by_base<double>(t, begin, end, out);
    }
    template <class Out>
    void dequantize(const std::string& name, Out&& out) const {
        dequantize_rows(name, 0, at(name).rows(), std::forward<Out>(out));
    }

    // A raw tensor's bytes, in place.
    raw_view raw(const std::string& name) const {
        const tensor_info& t = at(name);
        if (t.kind != tensor_kind::raw) throw std::invalid_argument(name_ + ": tensor '" + name + "' is quantized, not raw");
        const section_info& s = t.sections.at(0);
        if (limits_.check_checksums && detail::crc32(data_ + s.offset, static_cast<std::size_t>(s.size)) != s.crc)
            throw format_error(name_ + ": tensor '" + name + "': data section checksum mismatch");
        return raw_view{data_ + s.offset, static_cast<std::size_t>(s.size), t.source, t.shape};
    }

    // Checks every section's CRC-32 and that the alignment padding is zero, decoding nothing; throws
    // format_error naming the first bad tensor and part.
    void verify() const {
        std::uint64_t cursor = version_ == 2 ? format::header_bytes : 0;
        for (const auto& t : index_.tensors)
            for (std::size_t i = 0; i < t.sections.size(); ++i) {
                const section_info& s = t.sections[i];
                const std::string where = name_ + ": tensor '" + t.name + "' part " + std::to_string(i);
                if (version_ == 2) check_zero(cursor, s.offset, where);
                if (detail::crc32(data_ + s.offset, static_cast<std::size_t>(s.size)) != s.crc)
                    throw format_error(where + ": data section checksum mismatch");
                cursor = s.offset + s.size;
            }
        if (version_ == 2) check_zero(cursor, size_ - format::footer_bytes - index_size_, name_ + ": before the index");
    }

    const std::uint8_t* data() const { return data_; }
    std::size_t size() const { return size_; }

private:
    void parse() {
        if (size_ >= 10 && std::equal(format::magic.begin(), format::magic.end(), data_) && detail::load_u16(data_ + 8) == 1) {
            version_ = 1;
            index_ = format1::read_index(data_, size_, name_, limits_);
        } else {
            version_ = 2;
            index_ = format::read_index(data_, size_, name_, limits_);
            index_size_ = detail::load_u64(data_ + size_ - format::footer_bytes + 8);
        }
    }

    void check_zero(std::uint64_t from, std::uint64_t to, const std::string& where) const {
        for (std::uint64_t i = from; i < to; ++i)
            if (data_[i] != 0) throw format_error(where + ": alignment padding byte at " + std::to_string(i) + " is not zero");
    }

    void check_quantized(const tensor_info& t, const char* who) const {
        if (t.kind != tensor_kind::quantized)
            throw std::invalid_argument(name_ + ": " + who + ": tensor '" + t.name + "' is raw (" + dtype_name(t.source) +
                                        "), not quantized: use raw()");
    }

    template <class T, class Base>
    void check_holds(const tensor_info& t) const {
        check_quantized(t, "read");
        if (!holds<T, Base>(t))
            throw std::invalid_argument(name_ + ": tensor '" + t.name + "' is " + scalar_kind_name(t.scalar) + " with base " +
                                        t.base_name + ", not " + scalar_kind_name(scalar_kind_of<T>()) + " with base " + Base::name);
    }

    // Per-tensor state is repeated in every part: the parts a decode uses must agree with part 0.
    void check_shared_state(const tensor_info& t, std::size_t first, std::size_t last) const {
        if (t.opts.per_channel || t.sections.size() < 2) return;
        auto state = [&](std::size_t i) {
            const section_info& s = t.sections[i];
            if (s.size < 5) throw format_error(name_ + ": tensor '" + t.name + "' part " + std::to_string(i) + ": truncated channel state");
            return data_ + s.offset;
        };
        const std::uint8_t* reference = state(0);
        for (std::size_t i = first; i <= last; ++i)
            if (std::memcmp(state(i), reference, 5) != 0)
                throw format_error(name_ + ": tensor '" + t.name + "' part " + std::to_string(i) +
                                   ": per-tensor channel state differs from part 0");
    }

    template <class T, class Out>
    void dequantize_by_base(const tensor_info& t, std::int64_t begin, std::int64_t end, Out& out) const {
        if (holds<T, phi>(t)) return dequantize_rows<T, phi>(t.name, begin, end, out);
        if (holds<T, two>(t)) return dequantize_rows<T, two>(t.name, begin, end, out);
        if (holds<T, sqrt2>(t)) return dequantize_rows<T, sqrt2>(t.name, begin, end, out);
        if (holds<T, custom>(t)) return dequantize_rows<T, custom>(t.name, begin, end, out);
        throw std::invalid_argument(name_ + ": tensor '" + t.name + "' has base '" + t.base_name +
                                    "', not a built-in one: call dequantize<T, YourBase>()");
    }

    // Decodes part `part` of t into p, reusing p's arrays and the scratch (see part_buffers).
    void read_part_into(const tensor_info& t, std::size_t part, stored_tensor& p, detail::section_scratch& scratch) const {
        check_quantized(t, "read_part");
        if (part >= t.sections.size())
            throw std::invalid_argument(name_ + ": tensor '" + t.name + "' has " + std::to_string(t.sections.size()) +
                                        " parts, not " + std::to_string(part + 1));
        const section_info& s = t.sections[part];
        const std::string where = name_ + ": tensor '" + t.name + "' part " + std::to_string(part);
        const std::uint8_t* bytes = data_ + s.offset;
        if (limits_.check_checksums && detail::crc32(bytes, static_cast<std::size_t>(s.size)) != s.crc)
            throw format_error(where + ": data section checksum mismatch");
        assign_header(t, p);
        p.rows = s.rows;
        detail::byte_reader body(bytes, static_cast<std::size_t>(s.size), where);
        detail::read_tensor_data(p, body, scratch);
        if (body.remaining() != 0) body.fail(std::to_string(body.remaining()) + " unused bytes at the end of the data section");
        p.coded_bytes = s.size;
    }

    // The record's fields every part of t shares (name, type, base, columns, options).
    static void assign_header(const tensor_info& t, stored_tensor& s) {
        s.name = t.name;
        s.scalar = t.scalar;
        s.base_name = t.base_name;
        s.base_value = t.base_value;
        s.cols = t.cols();
        s.opts = t.opts;
    }
    static stored_tensor header_of(const tensor_info& t) {
        stored_tensor s;
        assign_header(t, s);
        return s;
    }

    template <class V>
    static void append(V& to, const V& from) {
        to.insert(to.end(), from.begin(), from.end());
    }

    std::unique_ptr<mapped_file> file_;
    std::string name_;
    reader_limits limits_;
    const std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
    int version_ = 2;
    format::index index_;
    std::uint64_t index_size_ = 0;
    // Decode buffers kept between parts and calls (behind a pointer: the reader stays movable).
    std::unique_ptr<detail::part_buffer_pool> buffer_pool_ = std::make_unique<detail::part_buffer_pool>();
};

}  // namespace grphi
