// Writes a `.grphi` format-2 file once, front to back: header, then each tensor's sections (64-byte
// aligned), then the index and footer on finish(). Quantized tensors are split into row parts that are
// encoded independently (encode_part runs on any thread) and appended in order; the file appears under
// its name only when finish() succeeds (a temporary is renamed into place; destroyed earlier, or after
// an error, the writer removes it).
//
//   grphi::file_writer out("model.grphi", {{"source", "model.safetensors"}});
//   out.add("fc1.weight", grphi::quantize<grphi::phi>(W));            // parts encoded in parallel
//   out.add_raw("fc1.bias", grphi::dtype::F32, {64}, bias.data(), 64 * sizeof(float));
//   out.finish();
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "../io/output_file.hpp"
#include "layout.hpp"
#include "section_codec.hpp"

namespace grphi {

// One row part, encoded and checksummed, ready to append.
struct encoded_part {
    std::int64_t rows = 0;
    std::vector<std::uint8_t> bytes;
    std::uint32_t crc = 0;
};

// Everything the index says about a quantized tensor except its sections.
struct quantized_spec {
    std::string name;
    std::vector<std::uint64_t> shape;  // N-D; its matrix view (core/channels.hpp) is the packed rows x cols
    dtype source = dtype::F32;
    scalar_kind scalar = scalar_kind::float32;
    std::string base_name;
    double base_value = 0;
    options opts;  // base_value unset (it is stored as base_value above)

    // From a packed tensor: shape {rows, cols} (or the given N-D shape, {} for rank 0), source dtype the scalar's.
    template <class T, class Base>
    static quantized_spec of(std::string name, const packed<T, Base>& p) {
        return of(std::move(name), p, {static_cast<std::uint64_t>(p.rows), static_cast<std::uint64_t>(p.cols)});
    }
    template <class T, class Base>
    static quantized_spec of(std::string name, const packed<T, Base>& p, std::vector<std::uint64_t> shape,
                             std::optional<dtype> source = std::nullopt) {
        quantized_spec s;
        s.name = std::move(name);
        s.shape = std::move(shape);
        s.source = source.value_or(dtype_of<T>());
        s.scalar = scalar_kind_of<T>();
        s.base_name = Base::name;
        s.base_value = base_value_of<Base>(p.opts);
        s.opts = p.opts;
        s.opts.base_value.reset();
        return s;
    }
    static quantized_spec of(const stored_tensor& t) {
        return of(t, {static_cast<std::uint64_t>(t.rows), static_cast<std::uint64_t>(t.cols)});
    }
    static quantized_spec of(const stored_tensor& t, std::vector<std::uint64_t> shape, std::optional<dtype> source = std::nullopt) {
        quantized_spec s;
        s.name = t.name;
        s.shape = std::move(shape);
        s.source = source.value_or(t.scalar == scalar_kind::float32 ? dtype::F32 : dtype::F64);
        s.scalar = t.scalar;
        s.base_name = t.base_name;
        s.base_value = t.base_value;
        s.opts = t.opts;
        s.opts.base_value.reset();
        return s;
    }
};

namespace detail {

// Rows [r0, r1) of a tensor (a stored_tensor or a packed one: the same array names) as a tensor of
// their own (per-tensor state is repeated in every part; block scales go with their rows).
template <class Source>
stored_tensor stored_rows_of(const stored_tensor& header, const Source& src, std::int64_t blocks_per_row,
                             std::int64_t scale_blocks_per_row, std::int64_t r0, std::int64_t r1) {
    stored_tensor s;
    s.name = header.name;
    s.scalar = header.scalar;
    s.base_name = header.base_name;
    s.base_value = header.base_value;
    s.rows = r1 - r0;
    s.cols = header.cols;
    s.opts = header.opts;
    const auto a = static_cast<std::size_t>(r0), b = static_cast<std::size_t>(r1);
    auto rows_of = [&](auto& to, const auto& from, std::size_t per_row) {
        to.assign(from.begin() + static_cast<std::ptrdiff_t>(a * per_row), from.begin() + static_cast<std::ptrdiff_t>(b * per_row));
    };
    rows_of(s.signs, src.signs, static_cast<std::size_t>(header.cols));
    rows_of(s.exponents, src.exponents, static_cast<std::size_t>(blocks_per_row));
    const auto scale_blocks = static_cast<std::size_t>(scale_blocks_per_row);
    if (!src.block_top.empty()) rows_of(s.block_top, src.block_top, scale_blocks);
    if (!src.block_steps.empty()) rows_of(s.block_steps, src.block_steps, scale_blocks);
    if (!src.block_scales.empty()) rows_of(s.block_scales, src.block_scales, scale_blocks);
    const std::size_t c0 = header.opts.per_channel ? a : 0, c1 = header.opts.per_channel ? b : (b > a ? 1 : 0);
    auto channels_of = [&](auto& to, const auto& from) {
        to.assign(from.begin() + static_cast<std::ptrdiff_t>(c0), from.begin() + static_cast<std::ptrdiff_t>(c1));
    };
    channels_of(s.window_lo, src.window_lo);
    channels_of(s.window_hi, src.window_hi);
    channels_of(s.scale_steps, src.scale_steps);
    return s;
}

// Block-scale arrays are either empty or one entry per block (check_storable then checks which).
inline bool block_arrays_fit(std::size_t tops, std::size_t steps, std::size_t codes, std::size_t blocks) {
    return (tops == 0 || tops == blocks) && (steps == 0 || steps == blocks) && (codes == 0 || codes == blocks);
}

inline encoded_part encode_stored_part(const stored_tensor& part) {
    check_storable(part);
    encoded_part e;
    e.rows = part.rows;
    write_tensor_data(part, e.bytes);
    e.crc = crc32(e.bytes.data(), e.bytes.size());
    return e;
}

inline void check_row_range(std::int64_t rows, std::int64_t r0, std::int64_t r1, const char* who) {
    if (r0 < 0 || r1 <= r0 || r1 > rows)
        throw std::invalid_argument(std::string(who) + ": row range [" + std::to_string(r0) + ", " + std::to_string(r1) +
                                    ") is not a non-empty range inside [0, " + std::to_string(rows) + ")");
}

}  // namespace detail

// Encodes rows [r0, r1) of a stored tensor as one part; thread-safe (reads t only).
inline encoded_part encode_part(const stored_tensor& t, std::int64_t r0, std::int64_t r1) {
    detail::check_row_range(t.rows, r0, r1, "grphi::encode_part");
    const std::int64_t per_row = t.cols == 0 ? 0 : (t.cols - 1) / (t.opts.clustered() ? t.opts.cluster_size : 1) + 1;
    if (t.signs.size() != t.size() || t.exponents.size() != static_cast<std::size_t>(t.rows * per_row) ||
        t.window_lo.size() != static_cast<std::size_t>(channel_count(t.opts.per_channel, t.rows)) ||
        t.window_hi.size() != t.window_lo.size() || t.scale_steps.size() != t.window_lo.size() ||
        !detail::block_arrays_fit(t.block_top.size(), t.block_steps.size(), t.block_scales.size(),
                                  static_cast<std::size_t>(t.scale_block_count())))
        throw std::invalid_argument("grphi::encode_part: tensor '" + t.name + "': arrays do not match the shape");
    return detail::encode_stored_part(
        detail::stored_rows_of(t, t, per_row, static_cast<std::int64_t>(t.scale_blocks_per_row()), r0, r1));
}

// Encodes rows [r0, r1) of a packed tensor (validated by the caller, e.g. straight from quantize) as one
// part; thread-safe.
template <class T, class Base>
encoded_part encode_part(const packed<T, Base>& p, std::int64_t r0, std::int64_t r1) {
    detail::check_row_range(p.rows, r0, r1, "grphi::encode_part");
    stored_tensor header;
    header.scalar = scalar_kind_of<T>();
    header.base_name = Base::name;
    header.base_value = base_value_of<Base>(p.opts);
    header.cols = p.cols;
    header.opts = p.opts;
    header.opts.base_value.reset();
    if (p.signs.size() != p.size() || p.exponents.size() != static_cast<std::size_t>(p.rows * p.blocks_per_row()) ||
        p.window_lo.size() != static_cast<std::size_t>(p.channels()) || p.window_hi.size() != p.window_lo.size() ||
        p.scale_steps.size() != p.window_lo.size() ||
        !detail::block_arrays_fit(p.block_top.size(), p.block_steps.size(), p.block_scales.size(), p.scale_block_count()))
        throw std::invalid_argument("grphi::encode_part: arrays do not match the shape");
    return detail::encode_stored_part(detail::stored_rows_of(header, p, p.blocks_per_row(), p.scale_blocks_per_row(), r0, r1));
}

struct writer_options {
    std::uint64_t part_weights = std::uint64_t{1} << 20;  // add(): rows per part = max(1, part_weights / cols)
    bool durable = true;                                  // fsync the file before renaming it into place
};

class file_writer {
public:
    // Writes `path` (through a temporary beside it).
    explicit file_writer(std::string path, metadata_map metadata = {}, writer_options settings = {})
        : file_(std::make_unique<output_file>(std::move(path))), metadata_(std::move(metadata)), settings_(settings) {
        start();
    }
    // Writes into `memory` (replacing its contents); finish() completes it.
    explicit file_writer(std::vector<std::uint8_t>& memory, metadata_map metadata = {}, writer_options settings = {})
        : memory_(&memory), metadata_(std::move(metadata)), settings_(settings) {
        memory_->clear();
        start();
    }
    ~file_writer() = default;  // an unfinished output_file removes its temporary
    file_writer(const file_writer&) = delete;
    file_writer& operator=(const file_writer&) = delete;

    void set_metadata(std::string key, std::string value) {
        check_open("set_metadata");
        metadata_[std::move(key)] = std::move(value);
    }

    // Rows per part that add() uses for a tensor with `cols` columns.
    std::int64_t rows_per_part(std::int64_t cols) const {
        const std::uint64_t per = settings_.part_weights / static_cast<std::uint64_t>(std::max<std::int64_t>(cols, 1));
        return static_cast<std::int64_t>(std::max<std::uint64_t>(per, 1));
    }

    // A quantized tensor, validated, split into parts encoded in parallel (OpenMP) and appended in order;
    // the bytes do not depend on the thread count.
    template <class T, class Base>
    void add(const std::string& name, const packed<T, Base>& p) {
        add(name, p, {static_cast<std::uint64_t>(p.rows), static_cast<std::uint64_t>(p.cols)});
    }
    // The same with the source's N-D shape (viewed as rows x cols, core/channels.hpp; {} for rank 0) and dtype.
    template <class T, class Base>
    void add(const std::string& name, const packed<T, Base>& p, std::vector<std::uint64_t> shape,
             std::optional<dtype> source = std::nullopt) {
        try {
            validate(p);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument("grphi::file_writer: tensor '" + name + "': " + e.what());
        }
        begin_quantized(quantized_spec::of(name, p, std::move(shape), source));
        check_matrix(p.rows, p.cols);
        append_parts(p.rows, [&](std::int64_t r0, std::int64_t r1) { return encode_part(p, r0, r1); });
        end_quantized();
    }
    void add(const stored_tensor& t) { add(t, {static_cast<std::uint64_t>(t.rows), static_cast<std::uint64_t>(t.cols)}); }
    void add(const stored_tensor& t, std::vector<std::uint64_t> shape, std::optional<dtype> source = std::nullopt) {
        if (t.rows > 0) detail::check_storable(t);  // a bad tensor is refused before anything is written
        begin_quantized(quantized_spec::of(t, std::move(shape), source));
        check_matrix(t.rows, t.cols);
        append_parts(t.rows, [&](std::int64_t r0, std::int64_t r1) { return encode_part(t, r0, r1); });
        end_quantized();
    }

    // A raw tensor: `bytes` bytes of `type` elements in C order, little-endian, stored as they are.
    void add_raw(const std::string& name, dtype type, std::vector<std::uint64_t> shape, const void* data, std::size_t bytes) {
        check_open("add_raw");
        tensor_info t;
        t.name = name;
        t.kind = tensor_kind::raw;
        t.source = type;
        t.shape = std::move(shape);
        check_record(t);
        const std::uint64_t n = element_count(t.shape);
        if (n > bytes / std::max<std::size_t>(dtype_size(type), 1) || n * dtype_size(type) != bytes)
            throw std::invalid_argument("grphi::file_writer: raw tensor '" + name + "': " + std::to_string(bytes) +
                                        " bytes given, the shape needs " + std::to_string(n) + " x " + std::to_string(dtype_size(type)));
        section_info s = append_section(data, bytes, detail::crc32(static_cast<const std::uint8_t*>(data), bytes));
        t.sections.push_back(s);
        names_.insert(t.name);
        tensors_.push_back(std::move(t));
    }

    // Part by part: begin, append parts in row order (encode them anywhere, e.g. concurrently), end.
    void begin_quantized(const quantized_spec& spec) {
        check_open("begin_quantized");
        tensor_info t;
        t.name = spec.name;
        t.kind = tensor_kind::quantized;
        t.source = spec.source;
        t.shape = spec.shape;
        t.scalar = spec.scalar;
        t.base_name = spec.base_name;
        t.base_value = spec.base_value;
        t.opts = spec.opts;  // base_value kept for the check, dropped below
        check_record(t);
        t.opts.base_value.reset();
        open_ = std::move(t);
        open_rows_ = 0;
    }
    void append_part(const encoded_part& part) {
        if (!open_) throw std::logic_error("grphi::file_writer::append_part: no quantized tensor begun");
        const std::int64_t rows = open_->rows();
        if (part.rows <= 0 || part.rows > rows - open_rows_)
            throw std::invalid_argument("grphi::file_writer: tensor '" + open_->name + "': part of " + std::to_string(part.rows) +
                                        " rows, " + std::to_string(rows - open_rows_) + " remain");
        section_info s = append_section(part.bytes.data(), part.bytes.size(), part.crc);
        s.first_row = open_rows_;
        s.rows = part.rows;
        open_rows_ += part.rows;
        open_->sections.push_back(s);
    }
    void end_quantized() {
        if (!open_) throw std::logic_error("grphi::file_writer::end_quantized: no quantized tensor begun");
        if (open_rows_ != open_->rows())
            throw std::invalid_argument("grphi::file_writer: tensor '" + open_->name + "': parts cover " + std::to_string(open_rows_) +
                                        " of " + std::to_string(open_->rows()) + " rows");
        names_.insert(open_->name);
        tensors_.push_back(std::move(*open_));
        open_.reset();
    }

    // Writes index and footer and moves the file into place; nothing may be added afterwards.
    void finish() {
        check_open("finish");
        for (const auto& [key, value] : metadata_)
            if (key.size() > format::max_name_bytes || !format::detail::valid_utf8(key) || !format::detail::valid_utf8(value))
                throw std::invalid_argument("grphi::file_writer: metadata entry '" + key + "' is not UTF-8 (keys <= 65535 bytes)");
        pad();
        const std::uint64_t index_offset = written_;
        const std::vector<std::uint8_t> index = format::detail::write_index(tensors_, metadata_);
        std::vector<std::uint8_t> tail = index;
        format::detail::write_footer(index_offset, index, tail);
        write(tail.data(), tail.size());
        finished_ = true;
        if (file_) file_->commit(settings_.durable);
    }

    bool finished() const { return finished_; }
    std::uint64_t bytes_written() const { return written_; }
    const std::vector<tensor_info>& tensors() const { return tensors_; }

private:
    void start() {
        std::vector<std::uint8_t> header;
        format::detail::write_header(header);
        write(header.data(), header.size());
    }

    void check_open(const char* who) const {
        if (finished_) throw std::logic_error(std::string("grphi::file_writer::") + who + ": the file is finished");
        if (open_ && std::string(who) != "append_part")
            throw std::logic_error(std::string("grphi::file_writer::") + who + ": tensor '" + open_->name + "' is still open (end_quantized)");
    }

    void check_record(const tensor_info& t) const {
        auto fail = [&](const std::string& what) { throw std::invalid_argument("grphi::file_writer: tensor '" + t.name + "': " + what); };
        try {
            format::detail::validate_record(t);  // the readers' rule
        } catch (const std::invalid_argument& e) {
            fail(e.what());
        }
        if (names_.count(t.name)) fail("duplicate tensor name");
    }

    // The open tensor's shape must view as the rows x cols being added (core/channels.hpp).
    void check_matrix(std::int64_t rows, std::int64_t cols) {
        const matrix_extent m = open_->matrix();
        if (m.rows != rows || m.cols != cols) {
            const std::string name = open_->name;
            open_.reset();
            throw std::invalid_argument("grphi::file_writer: tensor '" + name + "': its shape views as " + std::to_string(m.rows) +
                                        " x " + std::to_string(m.cols) + ", the data is " + std::to_string(rows) + " x " +
                                        std::to_string(cols));
        }
    }

    template <class Encode>
    void append_parts(std::int64_t rows, Encode&& encode) {
        const std::int64_t per = rows_per_part(open_->cols());
        const std::int64_t parts = rows == 0 ? 0 : (rows - 1) / per + 1;
#if defined(_OPENMP)
        const std::int64_t batch = std::max<std::int64_t>(1, 2 * omp_get_max_threads());
#else
        const std::int64_t batch = 1;
#endif
        std::vector<encoded_part> encoded(static_cast<std::size_t>(std::min(batch, std::max<std::int64_t>(parts, 1))));
        for (std::int64_t first = 0; first < parts; first += batch) {
            const std::int64_t count = std::min(batch, parts - first);
            std::exception_ptr error;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
#endif
            for (std::int64_t i = 0; i < count; ++i) {
                try {
                    const std::int64_t r0 = (first + i) * per;
                    encoded[static_cast<std::size_t>(i)] = encode(r0, std::min(rows, r0 + per));
                } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(grphi_file_writer_error)
#endif
                    if (!error) error = std::current_exception();
                }
            }
            if (error) {
                open_.reset();
                std::rethrow_exception(error);
            }
            for (std::int64_t i = 0; i < count; ++i) append_part(encoded[static_cast<std::size_t>(i)]);
        }
    }

    section_info append_section(const void* data, std::size_t bytes, std::uint32_t crc) {
        pad();
        section_info s;
        s.offset = written_;
        s.size = bytes;
        s.crc = crc;
        write(data, bytes);
        return s;
    }

    void pad() {
        static const std::uint8_t zeros[format::alignment] = {};
        write(zeros, static_cast<std::size_t>(format::align_up(written_) - written_));
    }

    void write(const void* data, std::size_t bytes) {
        if (bytes == 0) return;
        if (file_) file_->write(data, bytes);
        else memory_->insert(memory_->end(), static_cast<const std::uint8_t*>(data), static_cast<const std::uint8_t*>(data) + bytes);
        written_ += bytes;
    }

    std::unique_ptr<output_file> file_;
    std::vector<std::uint8_t>* memory_ = nullptr;
    metadata_map metadata_;
    writer_options settings_;
    std::vector<tensor_info> tensors_;
    std::set<std::string> names_;
    std::optional<tensor_info> open_;
    std::int64_t open_rows_ = 0;
    std::uint64_t written_ = 0;
    bool finished_ = false;
};

}  // namespace grphi
