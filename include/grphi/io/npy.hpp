// NumPy .npy arrays (format versions 1.0, 2.0, 3.0): a strict reader for little-endian float, integer and
// bool arrays in C or Fortran order, and a streaming writer. Every error names the file.
//
// Layout: "\x93NUMPY", major, minor, header length (u16 LE for v1, u32 LE for v2/v3), then a Python dict
// literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with spaces and ending in '\n'.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "mapped_file.hpp"
#include "output_file.hpp"
#include "safetensors.hpp"

namespace grphi::npy {

using element_type = safetensors::dtype;  // every safetensors dtype NumPy has (not BF16 or F8)

inline constexpr char magic[] = "\x93NUMPY";
inline constexpr std::size_t magic_size = 6;

struct array_info {
    element_type type = element_type::F32;
    std::vector<std::uint64_t> shape;
    bool fortran_order = false;
    int major_version = 1;
    std::uint64_t data_offset = 0;  // bytes from the start of the file

    std::uint64_t elements() const {
        std::uint64_t count = 1;
        for (const auto extent : shape) count *= extent;
        return count;
    }
    std::size_t item_size() const { return safetensors::dtype_size(type); }
    std::uint64_t bytes() const { return elements() * item_size(); }
    // rows = first dimension, cols = the rest flattened in C order (a scalar or 1-D array is one row).
    std::uint64_t rows() const { return shape.size() >= 2 ? shape[0] : 1; }
    std::uint64_t cols() const { return shape.size() >= 2 ? (shape[0] ? elements() / shape[0] : 0) : elements(); }
};

namespace detail {

// NumPy's type strings: '<' little-endian, '|' byte order irrelevant (one-byte types).
struct descr_row {
    element_type type;
    const char* descr;
};
inline constexpr descr_row descr_table[] = {
    {element_type::F16, "<f2"}, {element_type::F32, "<f4"}, {element_type::F64, "<f8"}, {element_type::I8, "|i1"},
    {element_type::I16, "<i2"}, {element_type::I32, "<i4"}, {element_type::I64, "<i8"}, {element_type::U8, "|u1"},
    {element_type::U16, "<u2"}, {element_type::U32, "<u4"}, {element_type::U64, "<u8"}, {element_type::BOOL, "|b1"},
};

// Parses the header dict: exactly the keys descr, fortran_order and shape, Python literal syntax.
class header_parser {
public:
    header_parser(std::string_view text, const std::string& path) : text_(text), path_(path) {}

    array_info parse() {
        array_info info;
        bool seen_descr = false, seen_order = false, seen_shape = false;
        skip_spaces();
        expect('{');
        for (;;) {
            skip_spaces();
            if (peek() == '}') {
                ++pos_;
                break;
            }
            const std::string key = parse_quoted();
            skip_spaces();
            expect(':');
            skip_spaces();
            if (key == "descr") {
                if (seen_descr) fail("header repeats 'descr'");
                seen_descr = true;
                if (peek() == '[') fail("structured dtype is not supported (need a plain float, integer or bool dtype)");
                info.type = parse_descr(parse_quoted());
            } else if (key == "fortran_order") {
                if (seen_order) fail("header repeats 'fortran_order'");
                seen_order = true;
                if (text_.substr(pos_, 4) == "True") {
                    info.fortran_order = true;
                    pos_ += 4;
                } else if (text_.substr(pos_, 5) == "False") {
                    pos_ += 5;
                } else {
                    fail("header 'fortran_order' is not True or False");
                }
            } else if (key == "shape") {
                if (seen_shape) fail("header repeats 'shape'");
                seen_shape = true;
                info.shape = parse_shape();
            } else {
                fail("header has an unknown key '" + key + "'");
            }
            skip_spaces();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            skip_spaces();
            expect('}');
            break;
        }
        if (!seen_descr) fail("header lacks 'descr'");
        if (!seen_order) fail("header lacks 'fortran_order'");
        if (!seen_shape) fail("header lacks 'shape'");
        while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
        if (pos_ + 1 != text_.size() || text_[pos_] != '\n')
            fail("header does not end with spaces and a newline after the dict");
        return info;
    }

private:
    [[noreturn]] void fail(const std::string& what) const { throw format_error(path_ + ": " + what); }
    char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
    void skip_spaces() {
        while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("malformed header: expected '") + c + "' at byte " + std::to_string(pos_));
        ++pos_;
    }
    std::string parse_quoted() {
        const char quote = peek();
        if (quote != '\'' && quote != '"') fail("malformed header: expected a quoted string at byte " + std::to_string(pos_));
        ++pos_;
        const std::size_t start = pos_;
        while (pos_ < text_.size() && text_[pos_] != quote) {
            if (text_[pos_] == '\\' || text_[pos_] == '\n') fail("malformed header: unsupported string literal");
            ++pos_;
        }
        if (pos_ >= text_.size()) fail("malformed header: unterminated string");
        std::string value(text_.substr(start, pos_ - start));
        ++pos_;
        return value;
    }
    element_type parse_descr(const std::string& descr) const {
        for (const auto& row : descr_table) {
            if (descr == row.descr) return row.type;
            // One-byte types are the same in either byte order; '<i1' and '=u1' mean '|i1' and '|u1'.
            if (row.descr[0] == '|' && descr.size() == 3 && descr.substr(1) == row.descr + 1 &&
                (descr[0] == '<' || descr[0] == '>' || descr[0] == '='))
                return row.type;
        }
        if (descr == "?" || descr == "b1") return element_type::BOOL;
        if (descr.size() == 3 && descr[0] == '>')
            fail("big-endian dtype '" + descr + "' is not supported (save with arr.astype('<" + descr.substr(1) + "'))");
        if (descr == "O" || descr == "|O" || descr == "<O" || descr == ">O") fail("object dtype is not supported");
        fail("dtype '" + descr + "' is not supported (need a little-endian float, integer or bool: '<f4', '<i8', '|b1', ...)");
    }
    std::vector<std::uint64_t> parse_shape() {
        std::vector<std::uint64_t> shape;
        expect('(');
        for (;;) {
            skip_spaces();
            if (peek() == ')') {
                ++pos_;
                break;
            }
            if (peek() < '0' || peek() > '9') fail("header 'shape' is not a tuple of non-negative integers");
            std::uint64_t extent = 0;
            while (peek() >= '0' && peek() <= '9') {
                const auto digit = static_cast<std::uint64_t>(peek() - '0');
                if (extent > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail("header 'shape' overflows");
                extent = extent * 10 + digit;
                ++pos_;
            }
            if (peek() == 'L') ++pos_;  // Python 2 long literal, as old NumPy wrote
            shape.push_back(extent);
            skip_spaces();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            skip_spaces();
            expect(')');
            break;
        }
        return shape;
    }

    std::string_view text_;
    const std::string& path_;
    std::size_t pos_ = 0;
};

inline std::uint32_t load_le(const std::byte* p, int bytes) {
    std::uint32_t value = 0;
    for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | static_cast<std::uint8_t>(p[i]);
    return value;
}

}  // namespace detail

// Validates the preamble and header of an .npy image of `size` bytes.
inline array_info parse_header(const std::byte* data, std::size_t size, const std::string& path) {
    auto fail = [&](const std::string& what) -> array_info { throw format_error(path + ": " + what); };
    if (size < magic_size + 2 || std::memcmp(data, magic, magic_size) != 0)
        return fail("not an .npy file (bad magic)");
    const int major = static_cast<int>(static_cast<std::uint8_t>(data[6]));
    const int minor = static_cast<int>(static_cast<std::uint8_t>(data[7]));
    if (major < 1 || major > 3 || minor != 0)
        return fail("unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor));
    const int length_bytes = major == 1 ? 2 : 4;
    const std::size_t preamble = magic_size + 2 + static_cast<std::size_t>(length_bytes);
    if (size < preamble) return fail("truncated header");
    const std::uint64_t header_length = detail::load_le(data + 8, length_bytes);
    if (header_length > size - preamble)
        return fail("header length " + std::to_string(header_length) + " exceeds the file size (" +
                    std::to_string(size) + " bytes)");
    const std::string_view header(reinterpret_cast<const char*>(data + preamble), static_cast<std::size_t>(header_length));
    array_info info = detail::header_parser(header, path).parse();
    info.major_version = major;
    info.data_offset = preamble + header_length;

    std::uint64_t elements = 1;
    bool has_zero = false;
    for (const auto extent : info.shape) has_zero = has_zero || extent == 0;
    if (!has_zero)
        for (const auto extent : info.shape) {
            if (elements > std::numeric_limits<std::uint64_t>::max() / 8 / extent) return fail("shape is too large");
            elements *= extent;
        }
    const std::uint64_t need = info.bytes();
    const std::uint64_t have = size - info.data_offset;
    if (have < need)
        return fail("truncated data: " + std::to_string(have) + " bytes, shape needs " + std::to_string(need));
    if (have > need) return fail(std::to_string(have - need) + " bytes of trailing data after the array");
    return info;
}

class reader {
public:
    explicit reader(const std::string& path) : file_(path) { info_ = parse_header(file_.data(), file_.size(), path); }

    const std::string& path() const { return file_.path(); }
    const array_info& info() const { return info_; }
    const std::byte* bytes() const { return file_.data() + info_.data_offset; }

    // Rows [first_row, first_row+row_count) of the array viewed as rows() x cols(), written row-major into
    // `out`, columns in C order whatever the file's order (float arrays only).
    template <class T>
    void read_rows(std::uint64_t first_row, std::uint64_t row_count, T* out) const {
        const std::uint64_t cols = info_.cols();
        check_rows(first_row, row_count);
        const std::size_t width = info_.item_size();
        if (!info_.fortran_order || info_.shape.size() < 2) {
            safetensors::convert_to(info_.type, bytes() + first_row * cols * width,
                                    static_cast<std::size_t>(row_count * cols), out);
            return;
        }
        walk_fortran(first_row, row_count, [&](std::uint64_t element, std::uint64_t r, std::uint64_t c) {
            safetensors::convert_to(info_.type, bytes() + element * width, 1, out + r * cols + c);
        });
    }

    // The same rows as raw little-endian elements of the array's own type, in C order (any dtype).
    void read_raw_rows(std::uint64_t first_row, std::uint64_t row_count, std::byte* out) const {
        const std::uint64_t cols = info_.cols();
        check_rows(first_row, row_count);
        const std::size_t width = info_.item_size();
        if (!info_.fortran_order || info_.shape.size() < 2) {
            if (row_count * cols != 0) std::memcpy(out, bytes() + first_row * cols * width, row_count * cols * width);
            return;
        }
        walk_fortran(first_row, row_count, [&](std::uint64_t element, std::uint64_t r, std::uint64_t c) {
            std::memcpy(out + (r * cols + c) * width, bytes() + element * width, width);
        });
    }

    // Give back the pages of rows already consumed (C order only; Fortran rows interleave).
    void release_rows(std::uint64_t first_row, std::uint64_t row_count) const {
        if (info_.fortran_order && info_.shape.size() >= 2) return;
        const std::uint64_t row_bytes = info_.cols() * info_.item_size();
        file_.release(static_cast<std::size_t>(info_.data_offset + first_row * row_bytes),
                      static_cast<std::size_t>(row_count * row_bytes));
    }

private:
    void check_rows(std::uint64_t first_row, std::uint64_t row_count) const {
        if (first_row > info_.rows() || row_count > info_.rows() - first_row)
            throw std::out_of_range(path() + ": row range past the end");
    }

    // Calls visit(element index in the file, row - first_row, C-order column) for every element of the rows
    // of a Fortran-order array. Element (i0, i1, .., in) lives at i0 + d0*(i1 + d1*(i2 + ...)): the columns
    // are walked in C order with an odometer over (i1..in), tracking their Fortran offset.
    template <class Visit>
    void walk_fortran(std::uint64_t first_row, std::uint64_t row_count, Visit&& visit) const {
        const std::uint64_t rows = info_.rows();
        const std::uint64_t cols = info_.cols();
        const std::size_t dims = info_.shape.size();
        std::vector<std::uint64_t> index(dims, 0), stride(dims, 0);
        stride[1] = 1;
        for (std::size_t d = 2; d < dims; ++d) stride[d] = stride[d - 1] * info_.shape[d - 1];
        std::uint64_t fortran_column = 0;
        for (std::uint64_t c = 0; c < cols; ++c) {
            for (std::uint64_t r = 0; r < row_count; ++r) visit((first_row + r) + rows * fortran_column, r, c);
            for (std::size_t d = dims - 1; d >= 1; --d) {  // next C-order column
                if (++index[d] < info_.shape[d]) {
                    fortran_column += stride[d];
                    break;
                }
                fortran_column -= stride[d] * (info_.shape[d] - 1);
                index[d] = 0;
            }
        }
    }

    mapped_file file_;
    array_info info_;
};

// Whether NumPy has the dtype (BF16 and the F8 types it has not).
inline bool writable(element_type type) {
    for (const auto& row : detail::descr_table)
        if (row.type == type) return true;
    return false;
}

// The header block (magic .. newline) for a C-order array, 64-byte aligned; version 1 unless too long.
inline std::string make_header(element_type type, const std::vector<std::uint64_t>& shape) {
    const char* descr = nullptr;
    for (const auto& row : detail::descr_table)
        if (row.type == type) descr = row.descr;
    if (!descr)
        throw std::invalid_argument(std::string("npy: dtype ") + safetensors::dtype_name(type) + " has no NumPy equivalent");
    std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        dict += std::to_string(shape[i]);
        if (shape.size() == 1 || i + 1 < shape.size()) dict += ",";
        if (i + 1 < shape.size()) dict += ' ';
    }
    dict += "), }";
    for (int major = 1; major <= 2; ++major) {
        const std::size_t preamble = magic_size + 2 + (major == 1 ? 2 : 4);
        std::string padded = dict;
        while ((preamble + padded.size() + 1) % 64 != 0) padded += ' ';
        padded += '\n';
        if (major == 1 && padded.size() > 0xffff) continue;
        std::string block(magic, magic_size);
        block += static_cast<char>(major);
        block += '\0';
        const std::size_t length = padded.size();
        for (int i = 0; i < (major == 1 ? 2 : 4); ++i) block += static_cast<char>((length >> (8 * i)) & 0xffu);
        return block + padded;
    }
    throw std::invalid_argument("npy: header too long");
}

// The element count of an array to write, checked: std::invalid_argument when the shape holds more than
// 2^62 elements or its data more than 2^64 bytes (a wrapped product would size the file wrongly).
inline std::uint64_t checked_elements(element_type type, const std::vector<std::uint64_t>& shape) {
    const std::uint64_t count = element_count(shape), width = safetensors::dtype_size(type);
    if (count > std::numeric_limits<std::uint64_t>::max() / width)
        throw std::invalid_argument("npy: an array of shape " + std::to_string(shape.size()) + "-D holds more than 2^64 bytes");
    return count;
}

// Streams one C-order array: values in row-major order, in any number of pieces.
class writer {
public:
    writer(const std::string& path, element_type type, std::vector<std::uint64_t> shape)
        : type_(type), out_(path) {
        const std::string header = make_header(type, shape);
        total_ = checked_elements(type, shape);
        out_.write(header.data(), header.size());
    }

    template <class T>
    void write_values(const T* values, std::size_t count) {
        if (count > total_ - done_) throw std::logic_error(out_.path() + ": more values written than the shape holds");
        constexpr std::size_t chunk = 16384;
        unsigned char staging[chunk * 8];
        const std::size_t width = safetensors::dtype_size(type_);
        while (count > 0) {
            const std::size_t take = count < chunk ? count : chunk;
            safetensors::convert_from(values, take, type_, staging);
            out_.write(staging, take * width);
            values += take;
            count -= take;
            done_ += take;
        }
    }

    // Raw little-endian elements of the array's own type (whole elements only).
    void write_bytes(const void* data, std::size_t bytes) {
        const std::size_t width = safetensors::dtype_size(type_);
        if (bytes % width != 0 || bytes / width > total_ - done_)
            throw std::logic_error(out_.path() + ": byte count does not fit the array");
        out_.write(data, bytes);
        done_ += bytes / width;
    }

    void finish() {
        if (done_ != total_) throw std::logic_error(out_.path() + ": array incomplete");
        out_.commit();
    }

private:
    element_type type_;
    output_file out_;
    std::uint64_t total_ = 1;
    std::uint64_t done_ = 0;
};

// The writer of a known shape filled in any order: header written and the file sized at construction;
// then any thread may write any range of elements (disjoint ranges, each element once); finish() checks
// that all arrived and moves the file into place.
class parallel_writer {
public:
    parallel_writer(const std::string& path, element_type type, const std::vector<std::uint64_t>& shape)
        : type_(type), out_(path) {
        const std::string header = make_header(type, shape);
        total_ = checked_elements(type, shape);
        out_.write(header.data(), header.size());
        data_offset_ = header.size();
        out_.set_size(data_offset_ + total_ * safetensors::dtype_size(type));
    }

    // Elements [first, first + count), converted to the array's type.
    template <class T>
    void write_values(std::uint64_t first, const T* values, std::size_t count) {
        const std::uint64_t width = safetensors::dtype_size(type_);
        check_range(first, count);
        safetensors::write_values_at(out_, data_offset_ + first * width, type_, values, count);
        filled_.fetch_add(count, std::memory_order_relaxed);
    }

    // Raw little-endian elements [first, first + bytes / width) of the array's own type.
    void write_bytes(std::uint64_t first, const void* data, std::size_t bytes) {
        const std::uint64_t width = safetensors::dtype_size(type_);
        if (bytes % width != 0) throw std::logic_error(out_.path() + ": byte count is not whole elements");
        check_range(first, bytes / width);
        out_.write_at(static_cast<std::size_t>(data_offset_ + first * width), data, bytes);
        filled_.fetch_add(bytes / width, std::memory_order_relaxed);
    }

    void finish() {
        if (filled_.load() != total_) throw std::logic_error(out_.path() + ": array incomplete");
        out_.commit();
    }

private:
    void check_range(std::uint64_t first, std::uint64_t count) const {
        if (first > total_ || count > total_ - first)
            throw std::logic_error(out_.path() + ": " + std::to_string(count) + " elements from " + std::to_string(first) +
                                   " run past the array's end (" + std::to_string(total_) + " elements)");
    }

    element_type type_;
    output_file out_;
    std::uint64_t total_ = 1;
    std::uint64_t data_offset_ = 0;
    std::atomic<std::uint64_t> filled_{0};  // elements written
};

// One-call save of a C-order array.
template <class T>
void save(const std::string& path, const std::vector<std::uint64_t>& shape, const T* values, element_type type) {
    writer out(path, type, shape);
    std::uint64_t total = 1;
    for (const auto extent : shape) total *= extent;
    out.write_values(values, static_cast<std::size_t>(total));
    out.finish();
}

}  // namespace grphi::npy
