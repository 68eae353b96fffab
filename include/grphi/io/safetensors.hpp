// safetensors checkpoints: a validating reader over a memory-mapped file, a streaming writer, and the
// index of a sharded checkpoint (model.safetensors.index.json).
//
// Layout: 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data buffer; offsets are relative to the buffer. Every error names the file (and tensor).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/channels.hpp"
#include "../core/dtype.hpp"
#include "../detail/bytes.hpp"
#include "../detail/json.hpp"
#include "half.hpp"
#include "mapped_file.hpp"
#include "output_file.hpp"

namespace grphi::safetensors {

// The element types (core/dtype.hpp): one enum for safetensors, .npy and the .grphi file.
using grphi::dtype;
using grphi::dtype_name;
using grphi::dtype_size;
using grphi::is_floating;
using grphi::parse_dtype;

inline constexpr std::uint64_t max_header_bytes = 100'000'000;  // as the reference implementation

namespace detail {
using grphi::detail::host_is_little_endian;  // byte helpers: detail/bytes.hpp
// Reverse each element's bytes in place (only on big-endian hosts).
inline void swap_bytes(void* data, std::size_t count, std::size_t width) {
    auto* bytes = static_cast<unsigned char*>(data);
    for (std::size_t i = 0; i < count; ++i) std::reverse(bytes + i * width, bytes + (i + 1) * width);
}
}  // namespace detail

struct tensor_info {
    std::string name;
    dtype type = dtype::F32;
    std::vector<std::uint64_t> shape;
    std::uint64_t begin = 0;  // byte offsets into the data buffer
    std::uint64_t end = 0;

    std::uint64_t elements() const {
        std::uint64_t count = 1;
        for (const auto extent : shape) count *= extent;
        return count;
    }
    std::uint64_t bytes() const { return end - begin; }
};

// Decode `count` elements of a floating dtype from little-endian bytes into T, exactly (F64 -> float rounds).
template <class T>
void convert_to(dtype type, const std::byte* source, std::size_t count, T* out) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "convert_to: T must be float or double");
    if (count == 0) return;  // empty tensors may come with null buffers
    const bool little = detail::host_is_little_endian();
    switch (type) {
        case dtype::F32:
            if constexpr (std::is_same_v<T, float>) {
                std::memcpy(out, source, count * 4);
                if (!little) detail::swap_bytes(out, count, 4);
            } else {
                for (std::size_t i = 0; i < count; ++i) {
                    float value;
                    std::memcpy(&value, source + 4 * i, 4);
                    if (!little) detail::swap_bytes(&value, 1, 4);
                    out[i] = value;
                }
            }
            return;
        case dtype::F64:
            if constexpr (std::is_same_v<T, double>) {
                std::memcpy(out, source, count * 8);
                if (!little) detail::swap_bytes(out, count, 8);
            } else {
                for (std::size_t i = 0; i < count; ++i) {
                    double value;
                    std::memcpy(&value, source + 8 * i, 8);
                    if (!little) detail::swap_bytes(&value, 1, 8);
                    out[i] = static_cast<T>(value);
                }
            }
            return;
        case dtype::F16:
        case dtype::BF16:
            for (std::size_t i = 0; i < count; ++i) {
                const auto bits = static_cast<std::uint16_t>(static_cast<std::uint8_t>(source[2 * i]) |
                                                             (static_cast<std::uint8_t>(source[2 * i + 1]) << 8));
                out[i] = static_cast<T>(type == dtype::F16 ? half_to_float(bits) : bfloat16_to_float(bits));
            }
            return;
        default:
            throw std::invalid_argument(std::string("safetensors: dtype ") + dtype_name(type) + " is not a float type");
    }
}

// Encode `count` values as little-endian `type` (F16/BF16 round to nearest even) into `out`.
template <class T>
void convert_from(const T* values, std::size_t count, dtype type, unsigned char* out) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "convert_from: T must be float or double");
    if (count == 0) return;
    const bool little = detail::host_is_little_endian();
    switch (type) {
        case dtype::F32:
            for (std::size_t i = 0; i < count; ++i) {
                const auto value = static_cast<float>(values[i]);
                std::memcpy(out + 4 * i, &value, 4);
            }
            if (!little) detail::swap_bytes(out, count, 4);
            return;
        case dtype::F64:
            for (std::size_t i = 0; i < count; ++i) {
                const auto value = static_cast<double>(values[i]);
                std::memcpy(out + 8 * i, &value, 8);
            }
            if (!little) detail::swap_bytes(out, count, 8);
            return;
        case dtype::F16:
        case dtype::BF16:
            for (std::size_t i = 0; i < count; ++i) {
                const auto value = static_cast<float>(values[i]);
                const std::uint16_t bits = type == dtype::F16 ? float_to_half(value) : float_to_bfloat16(value);
                out[2 * i] = static_cast<unsigned char>(bits & 0xffu);
                out[2 * i + 1] = static_cast<unsigned char>(bits >> 8);
            }
            return;
        default:
            throw std::invalid_argument(std::string("safetensors: dtype ") + dtype_name(type) + " is not a float type");
    }
}

class reader {
public:
    explicit reader(const std::string& path) : file_(path) { parse(); }

    const std::string& path() const { return file_.path(); }
    // Tensors in data order (ascending offsets), which is also the best order to stream them.
    const std::vector<tensor_info>& tensors() const { return tensors_; }
    const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
    const tensor_info* find(std::string_view name) const {
        for (const auto& tensor : tensors_)
            if (tensor.name == name) return &tensor;
        return nullptr;
    }
    std::uint64_t data_offset() const { return data_offset_; }
    const mapped_file& file() const { return file_; }

    // The tensor's raw little-endian bytes inside the mapping (no alignment promised).
    const std::byte* bytes(const tensor_info& tensor) const { return file_.data() + data_offset_ + tensor.begin; }

    // Elements [first, first+count) of a floating tensor, converted to T.
    template <class T>
    void read(const tensor_info& tensor, std::uint64_t first, std::uint64_t count, T* out) const {
        if (!is_floating(tensor.type))
            throw format_error(path() + ": tensor '" + tensor.name + "': dtype " + dtype_name(tensor.type) +
                               " is not a floating type");
        if (first > tensor.elements() || count > tensor.elements() - first)
            throw std::out_of_range(path() + ": tensor '" + tensor.name + "': element range past the end");
        const std::size_t width = dtype_size(tensor.type);
        file_.prefetch(static_cast<std::size_t>(data_offset_ + tensor.begin + first * width),
                       static_cast<std::size_t>(count * width));
        convert_to(tensor.type, bytes(tensor) + first * width, static_cast<std::size_t>(count), out);
    }

    // Give back the tensor's pages once it has been consumed (bounded resident memory while streaming).
    void release(const tensor_info& tensor) const {
        file_.release(static_cast<std::size_t>(data_offset_ + tensor.begin), static_cast<std::size_t>(tensor.bytes()));
    }
    void release_bytes(std::uint64_t offset_in_data, std::uint64_t length) const {
        file_.release(static_cast<std::size_t>(data_offset_ + offset_in_data), static_cast<std::size_t>(length));
    }

private:
    [[noreturn]] void fail(const std::string& what) const { throw format_error(path() + ": " + what); }
    [[noreturn]] void fail_tensor(const std::string& name, const std::string& what) const {
        throw format_error(path() + ": tensor '" + name + "': " + what);
    }

    void parse() {
        const std::size_t size = file_.size();
        if (size < 8)
            fail("truncated file: " + std::to_string(size) + " bytes, need 8 for the header length");
        const std::uint64_t header_length = grphi::detail::load_u64(file_.data());
        if (header_length > size - 8)
            fail("header length " + std::to_string(header_length) + " exceeds the file size (" + std::to_string(size) +
                 " bytes)");
        if (header_length > max_header_bytes)
            fail("header length " + std::to_string(header_length) + " is over the limit of " +
                 std::to_string(max_header_bytes) + " bytes");
        if (header_length < 2) fail("header length " + std::to_string(header_length) + " is too small for a JSON object");
        data_offset_ = 8 + header_length;
        const std::uint64_t data_size = size - data_offset_;
        const std::string_view header(reinterpret_cast<const char*>(file_.data() + 8),
                                      static_cast<std::size_t>(header_length));
        if (header.front() != '{') fail("header does not start with '{'");

        ::grphi::detail::json_value root;
        try {
            root = ::grphi::detail::parse_json(header);
        } catch (const ::grphi::detail::json_error& error) {
            fail(std::string("header: ") + error.what());
        }

        for (auto& [name, value] : root.members) {
            if (name == "__metadata__") {
                if (!value.is_object()) fail("__metadata__ is not a JSON object");
                for (auto& [key, text] : value.members) {
                    if (!text.is_string()) fail("__metadata__ value for '" + key + "' is not a string");
                    metadata_.emplace_back(key, text.text);
                }
                continue;
            }
            tensors_.push_back(parse_tensor(name, value, data_size));
        }

        // As the reference implementation: sorted by offsets, the tensors tile the data buffer exactly, from
        // byte 0 to its end, with no gap (unreadable bytes a checker would never see) and no overlap.
        std::stable_sort(tensors_.begin(), tensors_.end(), [](const tensor_info& a, const tensor_info& b) {
            return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
        });
        std::uint64_t covered = 0;
        const tensor_info* previous = nullptr;  // the tensor ending at `covered`
        for (const auto& tensor : tensors_) {
            const std::string range = "data_offsets [" + std::to_string(tensor.begin) + ", " + std::to_string(tensor.end) + ")";
            if (tensor.begin < covered)
                fail_tensor(tensor.name, range + " overlap tensor '" + previous->name + "' [" +
                                             std::to_string(previous->begin) + ", " + std::to_string(previous->end) + ")");
            if (tensor.begin > covered)
                fail_tensor(tensor.name, range + " leave bytes [" + std::to_string(covered) + ", " +
                                             std::to_string(tensor.begin) +
                                             ") of the data unused (a gap between tensors is not allowed)");
            covered = tensor.end;
            previous = &tensor;
        }
        if (covered != data_size)
            fail(std::to_string(data_size - covered) + " unused bytes after the last tensor's data (from byte " +
                 std::to_string(covered) + " of the data; a gap is not allowed)");
    }

    tensor_info parse_tensor(const std::string& name, const ::grphi::detail::json_value& value,
                             std::uint64_t data_size) const {
        using ::grphi::detail::json_kind_name;
        if (!value.is_object()) fail_tensor(name, "entry is not a JSON object");
        for (const auto& member : value.members)
            if (member.first != "dtype" && member.first != "shape" && member.first != "data_offsets")
                fail_tensor(name, "unknown key '" + member.first + "'");
        const auto* dtype_value = value.find("dtype");
        const auto* shape_value = value.find("shape");
        const auto* offsets_value = value.find("data_offsets");
        if (!dtype_value) fail_tensor(name, "missing 'dtype'");
        if (!shape_value) fail_tensor(name, "missing 'shape'");
        if (!offsets_value) fail_tensor(name, "missing 'data_offsets'");
        if (!dtype_value->is_string())
            fail_tensor(name, std::string("dtype is ") + json_kind_name(dtype_value->type) + ", not a string");
        tensor_info tensor;
        tensor.name = name;
        const auto type = parse_dtype(dtype_value->text);
        if (!type) fail_tensor(name, "unknown dtype '" + dtype_value->text + "'");
        tensor.type = *type;

        if (!shape_value->is_array()) fail_tensor(name, "shape is not an array");
        std::uint64_t elements = 1;
        bool overflow = false;
        for (const auto& extent_value : shape_value->items) {
            const auto extent = extent_value.as_uint64();
            if (!extent) fail_tensor(name, "shape has an entry that is not a non-negative integer");
            tensor.shape.push_back(*extent);
            if (*extent != 0 && elements > std::numeric_limits<std::uint64_t>::max() / *extent) overflow = true;
            else elements *= *extent;
        }
        const std::size_t width = dtype_size(tensor.type);
        if (tensor.shape.end() != std::find(tensor.shape.begin(), tensor.shape.end(), 0)) overflow = false;
        if (overflow || (elements != 0 && elements > std::numeric_limits<std::uint64_t>::max() / width))
            fail_tensor(name, "shape is too large");

        if (!offsets_value->is_array() || offsets_value->items.size() != 2)
            fail_tensor(name, "data_offsets is not an array of two integers");
        const auto begin = offsets_value->items[0].as_uint64();
        const auto end = offsets_value->items[1].as_uint64();
        if (!begin || !end) fail_tensor(name, "data_offsets is not an array of two integers");
        tensor.begin = *begin;
        tensor.end = *end;
        if (tensor.begin > tensor.end)
            fail_tensor(name, "data_offsets [" + std::to_string(tensor.begin) + ", " + std::to_string(tensor.end) +
                                  "] begin after end");
        if (tensor.end > data_size)
            fail_tensor(name, "data_offsets [" + std::to_string(tensor.begin) + ", " + std::to_string(tensor.end) +
                                  "] past the end of the data (" + std::to_string(data_size) +
                                  " bytes; file truncated?)");
        const std::uint64_t expected = elements * width;
        if (tensor.end - tensor.begin != expected)
            fail_tensor(name, "data_offsets [" + std::to_string(tensor.begin) + ", " + std::to_string(tensor.end) +
                                  "] hold " + std::to_string(tensor.end - tensor.begin) + " bytes, shape x " +
                                  dtype_name(tensor.type) + " needs " + std::to_string(expected));
        return tensor;
    }

    mapped_file file_;
    std::uint64_t data_offset_ = 0;
    std::vector<tensor_info> tensors_;
    std::vector<std::pair<std::string, std::string>> metadata_;
};

// What the writer needs to know up front about each tensor (the header precedes the data).
struct tensor_entry {
    std::string name;
    dtype type = dtype::F32;
    std::vector<std::uint64_t> shape;

    // Throws std::invalid_argument when the shape holds more than 2^62 elements or 2^64 bytes.
    std::uint64_t bytes() const {
        const std::uint64_t count = element_count(shape), width = dtype_size(type);
        if (count > std::numeric_limits<std::uint64_t>::max() / width)
            throw std::invalid_argument("safetensors: tensor " + name + " holds more than 2^64 bytes");
        return count * width;
    }
};

// The header text for `tensors` laid out back to back in the given order, padded with spaces so the
// data starts 8-byte aligned (8 + header length is a multiple of 8).
inline std::string make_header(const std::vector<tensor_entry>& tensors,
                               const std::vector<std::pair<std::string, std::string>>& metadata) {
    using ::grphi::detail::json_quote;
    std::string header = "{";
    bool first = true;
    if (!metadata.empty()) {
        header += "\"__metadata__\":{";
        for (std::size_t i = 0; i < metadata.size(); ++i) {
            if (i) header += ',';
            header += json_quote(metadata[i].first) + ":" + json_quote(metadata[i].second);
        }
        header += '}';
        first = false;
    }
    std::uint64_t offset = 0;
    for (const auto& tensor : tensors) {
        if (!first) header += ',';
        first = false;
        header += json_quote(tensor.name) + ":{\"dtype\":\"" + dtype_name(tensor.type) + "\",\"shape\":[";
        for (std::size_t i = 0; i < tensor.shape.size(); ++i) {
            if (i) header += ',';
            header += std::to_string(tensor.shape[i]);
        }
        const std::uint64_t bytes = tensor.bytes();
        if (bytes > std::numeric_limits<std::uint64_t>::max() - offset)
            throw std::invalid_argument("safetensors: the tensors hold more than 2^64 bytes");
        const std::uint64_t end = offset + bytes;
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
        offset = end;
    }
    header += '}';
    while ((8 + header.size()) % 8 != 0) header += ' ';
    return header;
}

// Whether T's values are stored as they are in memory as `type` (float as F32, double as F64, on a
// little-endian host).
template <class T>
bool stored_as_is(dtype type) {
    return detail::host_is_little_endian() &&
           ((std::is_same_v<T, float> && type == dtype::F32) || (std::is_same_v<T, double> && type == dtype::F64));
}

// Tensor names a header can hold: unique, and not the metadata key.
inline void check_names(const std::string& path, const std::vector<tensor_entry>& tensors) {
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        if (tensors[i].name == "__metadata__")
            throw std::invalid_argument(path + ": '__metadata__' is reserved and cannot name a tensor");
        for (std::size_t j = 0; j < i; ++j)
            if (tensors[j].name == tensors[i].name)
                throw std::invalid_argument(path + ": tensor '" + tensors[i].name + "' declared twice");
    }
}

// The file's start, for `tensors` laid out back to back: the header's length (8 bytes) and the header.
// Returns where the data begin.
inline std::uint64_t write_preamble(output_file& out, const std::vector<tensor_entry>& tensors,
                                    const std::vector<std::pair<std::string, std::string>>& metadata) {
    check_names(out.path(), tensors);
    const std::string header = make_header(tensors, metadata);
    unsigned char length[8];
    grphi::detail::store_u64(length, header.size());
    out.write(length, 8);
    out.write(header.data(), header.size());
    return 8 + header.size();
}

// Writes the header at once, then each tensor's bytes in declaration order, in as many pieces as the
// caller likes; finish() checks that every byte arrived and moves the file into place.
class writer {
public:
    writer(const std::string& path, std::vector<tensor_entry> tensors,
           const std::vector<std::pair<std::string, std::string>>& metadata = {})
        : tensors_(std::move(tensors)), out_(path) {
        write_preamble(out_, tensors_, metadata);
        skip_finished_tensors();
    }

    // The tensor the next bytes belong to (tensors().size() once all are complete).
    std::size_t current() const { return current_; }
    const std::vector<tensor_entry>& tensors() const { return tensors_; }

    // Raw little-endian bytes of the current tensor; may span into following tensors.
    void write_bytes(const void* data, std::size_t bytes) {
        const auto* source = static_cast<const unsigned char*>(data);
        while (bytes > 0) {
            if (current_ >= tensors_.size())
                throw std::logic_error(out_.path() + ": more data written than the tensors declared");
            const std::uint64_t room = tensors_[current_].bytes() - done_in_current_;
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(room, bytes));
            out_.write(source, take);
            source += take;
            bytes -= take;
            done_in_current_ += take;
            skip_finished_tensors();
        }
    }

    // Values of the current tensor, converted to its dtype.
    template <class T>
    void write_values(const T* values, std::size_t count) {
        constexpr std::size_t chunk = 16384;
        unsigned char staging[chunk * 8];
        while (count > 0) {
            if (current_ >= tensors_.size())
                throw std::logic_error(out_.path() + ": more data written than the tensors declared");
            const dtype type = tensors_[current_].type;
            const std::size_t width = dtype_size(type);
            const std::uint64_t left_in_tensor = (tensors_[current_].bytes() - done_in_current_) / width;
            // Values already in the file's layout (float as F32, double as F64, little-endian host) go
            // out as they are, in one write: no staging copy.
            const bool as_is = stored_as_is<T>(type);
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>({as_is ? count : chunk, count, left_in_tensor}));
            if (as_is) {
                write_bytes(reinterpret_cast<const std::uint8_t*>(values), take * width);
            } else {
                convert_from(values, take, type, staging);
                write_bytes(staging, take * width);
            }
            values += take;
            count -= take;
        }
    }

    void finish() {
        if (current_ != tensors_.size())
            throw std::logic_error(out_.path() + ": tensor '" + tensors_[current_].name + "' is incomplete");
        out_.commit();
    }

private:
    void skip_finished_tensors() {
        while (current_ < tensors_.size() && done_in_current_ == tensors_[current_].bytes()) {
            ++current_;
            done_in_current_ = 0;
        }
    }

    std::vector<tensor_entry> tensors_;
    output_file out_;
    std::size_t current_ = 0;
    std::uint64_t done_in_current_ = 0;
};

// Writes `count` values as little-endian `type` at byte `offset` of a sized output (output_file::set_size):
// as they are when already in that layout, otherwise converted through a small staging buffer.
// Thread-safe for disjoint ranges.
template <class T>
void write_values_at(output_file& out, std::uint64_t offset, dtype type, const T* values, std::size_t count) {
    const std::size_t width = dtype_size(type);
    if (stored_as_is<T>(type)) return out.write_at(static_cast<std::size_t>(offset), values, count * width);
    constexpr std::size_t chunk = 16384;
    unsigned char staging[chunk * 8];
    while (count > 0) {
        const std::size_t take = std::min(count, chunk);
        convert_from(values, take, type, staging);
        out.write_at(static_cast<std::size_t>(offset), staging, take * width);
        offset += take * width;
        values += take;
        count -= take;
    }
}

// The writer for a known layout filled in any order: the header is written and the file given its final
// size at construction; then any thread may write any tensor's elements or bytes by position (disjoint
// ranges, each byte once); finish() checks that every tensor was filled and moves the file into place.
// Used to decode parts in parallel straight into their places.
class parallel_writer {
public:
    parallel_writer(const std::string& path, std::vector<tensor_entry> tensors,
                    const std::vector<std::pair<std::string, std::string>>& metadata = {})
        : tensors_(std::move(tensors)), filled_(tensors_.size()), out_(path) {
        std::uint64_t offset = write_preamble(out_, tensors_, metadata);
        for (const auto& t : tensors_) {
            offsets_.push_back(offset);
            offset += t.bytes();
        }
        out_.set_size(offset);
        for (auto& f : filled_) f.store(0, std::memory_order_relaxed);
    }

    const std::vector<tensor_entry>& tensors() const { return tensors_; }

    // Elements [first, first + count) of tensor k, converted to its dtype.
    template <class T>
    void write_values(std::size_t k, std::uint64_t first, const T* values, std::size_t count) {
        const std::uint64_t width = dtype_size(at(k).type);
        check_range(k, first, count, width);
        write_values_at(out_, offsets_[k] + first * width, tensors_[k].type, values, count);
        filled_[k].fetch_add(count * width, std::memory_order_relaxed);
    }

    // Bytes [offset, offset + bytes) of tensor k, as they are (little-endian, its dtype).
    void write_bytes(std::size_t k, std::uint64_t offset, const void* data, std::size_t bytes) {
        check_range(k, offset, bytes, 1);
        out_.write_at(static_cast<std::size_t>(offsets_[k] + offset), data, bytes);
        filled_[k].fetch_add(bytes, std::memory_order_relaxed);
    }

    void finish() {
        for (std::size_t k = 0; k < tensors_.size(); ++k)
            if (filled_[k].load() != tensors_[k].bytes())
                throw std::logic_error(out_.path() + ": tensor '" + tensors_[k].name + "' is incomplete");
        out_.commit();
    }

private:
    const tensor_entry& at(std::size_t k) const {
        if (k >= tensors_.size())
            throw std::logic_error(out_.path() + ": tensor " + std::to_string(k) + " of " + std::to_string(tensors_.size()));
        return tensors_[k];
    }
    void check_range(std::size_t k, std::uint64_t first, std::uint64_t count, std::uint64_t width) const {
        const std::uint64_t total = at(k).bytes() / width;
        if (first > total || count > total - first)
            throw std::logic_error(out_.path() + ": tensor '" + tensors_[k].name + "': " + std::to_string(count) +
                                   (width == 1 ? " bytes" : " elements") + " from " + std::to_string(first) +
                                   " run past its end (" + std::to_string(total) + ")");
    }

    std::vector<tensor_entry> tensors_;
    std::vector<std::uint64_t> offsets_;        // of each tensor's data in the file
    std::vector<std::atomic<std::uint64_t>> filled_;  // bytes written per tensor
    output_file out_;
};

// The index of a sharded checkpoint, model.safetensors.index.json:
// {"metadata": {"total_size": N, ...}, "weight_map": {"tensor name": "model-00001-of-00003.safetensors", ...}}.
struct shard_index {
    std::vector<std::pair<std::string, std::string>> metadata;    // values as text (numbers as their literal)
    std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file, relative to the index

    // The shard files in order of first appearance.
    std::vector<std::string> shards() const {
        std::vector<std::string> files;
        for (const auto& entry : weight_map)
            if (std::find(files.begin(), files.end(), entry.second) == files.end()) files.push_back(entry.second);
        return files;
    }
};

// Reads and checks an index: a JSON object with a "weight_map" of strings; shard names are plain file
// names or relative paths without "..", so an index cannot point outside its directory.
inline shard_index read_index(const std::string& path) {
    const mapped_file file(path);
    auto fail = [&](const std::string& what) -> shard_index { throw format_error(path + ": " + what); };
    if (file.size() > max_header_bytes) return fail("index of " + std::to_string(file.size()) + " bytes is over the limit");
    ::grphi::detail::json_value root;
    try {
        root = ::grphi::detail::parse_json(
            std::string_view(reinterpret_cast<const char*>(file.data()), static_cast<std::size_t>(file.size())));
    } catch (const ::grphi::detail::json_error& error) {
        return fail(std::string("index: ") + error.what());
    }
    const auto* map = root.is_object() ? root.find("weight_map") : nullptr;
    if (!map || !map->is_object()) return fail("not a safetensors index (no \"weight_map\" object)");
    shard_index index;
    if (const auto* metadata = root.find("metadata")) {
        if (!metadata->is_object()) return fail("index \"metadata\" is not a JSON object");
        for (const auto& [key, value] : metadata->members) {
            if (!value.is_string() && !value.is_number())
                return fail("index metadata '" + key + "' is not a string or a number");
            index.metadata.emplace_back(key, value.text);
        }
    }
    for (const auto& [name, file_name] : map->members) {
        if (!file_name.is_string()) return fail("weight_map entry for '" + name + "' is not a string");
        const std::string& shard = file_name.text;
        if (shard.empty() || shard.front() == '/' || shard == ".." || shard.rfind("../", 0) == 0 ||
            shard.find("/../") != std::string::npos || (shard.size() >= 3 && shard.compare(shard.size() - 3, 3, "/..") == 0))
            return fail("weight_map entry for '" + name + "': shard '" + shard + "' is not a file beside the index");
        index.weight_map.emplace_back(name, shard);
    }
    return index;
}

// The text of an index: "metadata" with total_size (a number) and the other entries (strings), then the
// weight map.
inline std::string index_json(std::uint64_t total_size, const std::vector<std::pair<std::string, std::string>>& metadata,
                              const std::vector<std::pair<std::string, std::string>>& weight_map) {
    using ::grphi::detail::json_quote;
    std::string text = "{\n  \"metadata\": {\n    \"total_size\": " + std::to_string(total_size);
    for (const auto& [key, value] : metadata)
        if (key != "total_size") text += ",\n    " + json_quote(key) + ": " + json_quote(value);
    text += "\n  },\n  \"weight_map\": {";
    for (std::size_t i = 0; i < weight_map.size(); ++i)
        text += std::string(i ? "," : "") + "\n    " + json_quote(weight_map[i].first) + ": " + json_quote(weight_map[i].second);
    return text + "\n  }\n}\n";
}

}  // namespace grphi::safetensors
