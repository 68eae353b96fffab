// The `.grphi` format 2 byte layout, defined once for the writer and the reader (docs/format.md):
//   header (64 bytes) | data sections, each at a 64-byte aligned offset | index | footer (32 bytes)
// The index lists every logical tensor (name, kind, N-D shape, source dtype, quantization parameters,
// tagged options, its sections with offset, size and CRC-32) and the metadata map.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../core/channels.hpp"
#include "../core/dtype.hpp"
#include "../detail/bytes.hpp"
#include "../core/options.hpp"
#include "stored_tensor.hpp"

namespace grphi {

// dtype (core/dtype.hpp): the element type a tensor had in its source checkpoint. Raw tensors store their
// bytes in it; quantized tensors remember it so a tool can write the checkpoint back in its own dtype.
template <class T>
constexpr dtype dtype_of() {
    check_scalar<T>();
    return std::is_same_v<T, float> ? dtype::F32 : dtype::F64;
}

enum class tensor_kind : std::uint8_t { quantized = 1, raw = 2 };
inline const char* tensor_kind_name(tensor_kind k) { return k == tensor_kind::quantized ? "quantized" : "raw"; }

using metadata_map = std::map<std::string, std::string>;

// One data section: a row part of a quantized tensor, or a raw tensor's bytes.
struct section_info {
    std::uint64_t offset = 0;     // from the start of the file
    std::uint64_t size = 0;       // bytes
    std::uint32_t crc = 0;        // CRC-32 of the bytes
    std::int64_t first_row = 0;   // quantized: the part's rows in the tensor's matrix view
    std::int64_t rows = 0;
};

// One logical tensor as the index describes it.
struct tensor_info {
    std::string name;
    tensor_kind kind = tensor_kind::quantized;
    dtype source = dtype::F32;            // the dtype of the source checkpoint (raw: of the stored bytes)
    std::vector<std::uint64_t> shape;     // N-D, row-major (C order)
    // Quantized only:
    scalar_kind scalar = scalar_kind::float32;
    std::string base_name;                // "phi", "two", "sqrt2", a user tag's name, or "custom"
    double base_value = 0;                // the base rounded to double (exact for custom)
    options opts;                         // base_value unset: a custom base's value is base_value above
    std::vector<section_info> sections;
    std::uint64_t record_bytes = 0;       // bytes of this tensor's index record (directory entry in format 1)

    std::uint64_t elements() const { return element_count(shape); }
    matrix_extent matrix() const { return matrix_extent_of(shape); }
    std::int64_t rows() const { return matrix().rows; }
    std::int64_t cols() const { return matrix().cols; }
    std::uint64_t stored_bytes() const {
        std::uint64_t n = 0;
        for (const auto& s : sections) n += s.size;
        return n;
    }
    // The part holding row r of the matrix view (r < rows()).
    std::size_t part_of_row(std::int64_t r) const {
        std::size_t lo = 0, hi = sections.size();
        while (hi - lo > 1) {
            const std::size_t mid = (lo + hi) / 2;
            (sections[mid].first_row <= r ? lo : hi) = mid;
        }
        return lo;
    }
};

// What a reader accepts before it allocates: all documented, all adjustable (fuzzers make them small).
struct reader_limits {
    std::uint64_t max_elements = std::uint64_t{1} << 32;        // sum over quantized tensors of rows x cols + rows
    std::uint64_t max_part_elements = std::uint64_t{1} << 28;   // one quantized section's rows x cols + rows
    std::uint64_t max_tensors = std::uint64_t{1} << 20;
    std::uint64_t max_metadata_bytes = std::uint64_t{64} << 20;  // keys + values
    std::uint64_t max_index_bytes = std::uint64_t{256} << 20;
    bool check_checksums = true;  // off only for fuzzing: mutated inputs then reach the parsers behind the CRCs
};

namespace format {

inline constexpr std::array<std::uint8_t, 8> magic = {0x89, 'G', 'R', 'P', 'H', 'I', '\r', '\n'};  // as format 1
inline constexpr std::array<std::uint8_t, 8> footer_magic = {'G', 'R', 'P', 'H', 'I', 'E', 'N', 'D'};
inline constexpr std::uint16_t version_major = 2;  // a reader refuses other majors (format 1 is read by its own parser)
inline constexpr std::uint16_t version_minor = 1;  // minors only add what older readers may ignore or refuse by tag (1: block scales)
inline constexpr std::size_t header_bytes = 64;
inline constexpr std::size_t footer_bytes = 32;
inline constexpr std::size_t alignment = 64;       // every data section starts at a multiple of this
inline constexpr std::size_t max_rank = 8;
inline constexpr std::size_t max_name_bytes = 65535;

inline constexpr std::uint64_t align_up(std::uint64_t offset) { return (offset + alignment - 1) / alignment * alignment; }

// Options are tagged fields {varint tag, varint payload length, payload}, ascending by tag, each at
// most once; only fields that differ from the default options are written. tag = id * 2 + required:
// a reader that meets an unknown tag with the required bit set refuses the tensor (the field changes
// how values or sections are decoded); unknown optional tags are skipped.
namespace option_tag {
inline constexpr std::uint64_t required = 1;
inline constexpr std::uint64_t per_tensor = 1 * 2 + required;    // u8 1: one channel for the whole tensor
inline constexpr std::uint64_t fit_scale = 2 * 2 + required;     // u8 1
inline constexpr std::uint64_t e_min = 3 * 2 + required;         // zigzag varint in [-32767, 32767]
inline constexpr std::uint64_t e_max = 4 * 2 + required;         // zigzag varint
inline constexpr std::uint64_t levels = 5 * 2 + required;        // varint in [1, 65535]
inline constexpr std::uint64_t cluster_size = 6 * 2 + required;  // varint >= 2
inline constexpr std::uint64_t rounding = 7 * 2 + required;      // u8 1: linear
inline constexpr std::uint64_t underflow = 8 * 2 + required;     // u8 1: flush
inline constexpr std::uint64_t block_size = 9 * 2 + required;     // varint in [1, 2^24]: the section holds block scales
inline constexpr std::uint64_t block_format = 10 * 2 + required;  // u8 1: fp16, 2: e4m3 (absent: exponent)
inline constexpr std::uint64_t search = 11 * 2;                   // u8 1: mse (how scales were chosen; decoding ignores it)
// options::importance is calibration input, never stored. Ids 12-15 stay reserved for block scaling.
}  // namespace option_tag

namespace detail {

using grphi::detail::byte_reader;

// Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
inline bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    while (i < s.size()) {
        const unsigned c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n;
        std::uint32_t cp;
        if ((c & 0xe0) == 0xc0) n = 1, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0) n = 2, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0) n = 3, cp = c & 0x07;
        else return false;
        if (s.size() - i <= n) return false;  // n continuation bytes must follow
        for (std::size_t k = 1; k <= n; ++k) {
            if ((p[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

// One rule for a record's header fields, applied by the writer before it writes a record and by both
// readers (format 2 and format 1) after they parse one, so whatever loads can be saved again. Throws
// std::invalid_argument naming the field (callers add the file and tensor).
inline void validate_record(const tensor_info& t) {
    auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
    if (t.name.size() > max_name_bytes) fail("name longer than 65535 bytes");
    if (!valid_utf8(t.name)) fail("name is not valid UTF-8");
    if (t.kind != tensor_kind::quantized && t.kind != tensor_kind::raw)
        fail("unknown tensor kind " + std::to_string(static_cast<int>(t.kind)));
    if (dtype_size(t.source) == 0) fail("unknown dtype code " + std::to_string(static_cast<int>(t.source)));
    if (t.shape.size() > max_rank) fail("rank " + std::to_string(t.shape.size()) + " exceeds " + std::to_string(max_rank));
    matrix_extent_of(t.shape);  // throws when an extent or a product overflows
    if (t.kind == tensor_kind::raw) return;
    if (t.source != dtype::F64 && t.source != dtype::F32 && t.source != dtype::F16 && t.source != dtype::BF16)
        fail(std::string("quantized tensor with non-floating source dtype ") + dtype_name(t.source));
    if (t.scalar != scalar_kind::float32 && t.scalar != scalar_kind::float64)
        fail("unknown scalar type " + std::to_string(static_cast<int>(t.scalar)));
    if (t.base_name.size() > max_name_bytes) fail("base name longer than 65535 bytes");
    if (!valid_utf8(t.base_name)) fail("base name is not valid UTF-8");
    if (!std::isfinite(t.base_value) || t.base_value < static_cast<double>(min_base_value))
        fail("base value " + grphi::detail::number_text(t.base_value) + " is not a finite number >= 1.03");
    if (t.opts.base_value && *t.opts.base_value != t.base_value)
        fail("options base_value " + grphi::detail::number_text(*t.opts.base_value) + " differs from the base value " +
             grphi::detail::number_text(t.base_value));
    t.opts.validate();
}

inline void put_field(std::vector<std::uint8_t>& out, std::uint64_t tag, const std::vector<std::uint8_t>& payload) {
    grphi::detail::put_varint(out, tag);
    grphi::detail::put_varint(out, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
}

inline void write_options(const options& o, std::vector<std::uint8_t>& out) {
    std::vector<std::vector<std::uint8_t>> payloads;
    std::vector<std::uint64_t> tags;
    auto field = [&](std::uint64_t tag, auto&& fill) {
        std::vector<std::uint8_t> payload;
        fill(payload);
        tags.push_back(tag);
        payloads.push_back(std::move(payload));
    };
    using grphi::detail::put_varint;
    using grphi::detail::zigzag;
    if (!o.per_channel) field(option_tag::per_tensor, [](auto& b) { b.push_back(1); });
    if (o.fit_scale) field(option_tag::fit_scale, [](auto& b) { b.push_back(1); });
    if (o.e_min) field(option_tag::e_min, [&](auto& b) { put_varint(b, zigzag(*o.e_min)); });
    if (o.e_max) field(option_tag::e_max, [&](auto& b) { put_varint(b, zigzag(*o.e_max)); });
    if (o.levels) field(option_tag::levels, [&](auto& b) { put_varint(b, static_cast<std::uint64_t>(*o.levels)); });
    if (o.clustered()) field(option_tag::cluster_size, [&](auto& b) { put_varint(b, static_cast<std::uint64_t>(o.cluster_size)); });
    if (o.round == rounding::linear) field(option_tag::rounding, [](auto& b) { b.push_back(1); });
    if (o.under == underflow::flush) field(option_tag::underflow, [](auto& b) { b.push_back(1); });
    if (o.blocked()) field(option_tag::block_size, [&](auto& b) { put_varint(b, static_cast<std::uint64_t>(o.block_size)); });
    if (o.block_format != block_scale::exponent)
        field(option_tag::block_format, [&](auto& b) { b.push_back(o.block_format == block_scale::fp16 ? 1 : 2); });
    if (o.search == scale_search::mse) field(option_tag::search, [](auto& b) { b.push_back(1); });
    put_varint(out, tags.size());
    for (std::size_t i = 0; i < tags.size(); ++i) put_field(out, tags[i], payloads[i]);
}

inline options read_options(byte_reader& in) {
    options o;
    const std::uint64_t count = in.varint("option field count");
    if (count > in.remaining() / 2) in.fail("option field count " + std::to_string(count) + " exceeds the record");
    std::uint64_t previous = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        const std::uint64_t tag = in.varint("option tag");
        if (i > 0 && tag <= previous) in.fail("option tags are not strictly ascending (" + std::to_string(tag) + " after " + std::to_string(previous) + ")");
        previous = tag;
        const std::uint64_t length = in.varint("option payload length");
        if (length > in.remaining()) in.fail("option tag " + std::to_string(tag) + ": payload runs past the record");
        byte_reader field(in.bytes(static_cast<std::size_t>(length), "option payload"), static_cast<std::size_t>(length),
                          in.context() + ": option tag " + std::to_string(tag));
        auto flag = [&]() {
            if (field.u8("flag") != 1) field.fail("flag payload must be 1");
        };
        auto small_int = [&](const char* what) {
            const std::int64_t x = grphi::detail::unzigzag(field.varint(what));
            if (x < -32767 || x > 32767) field.fail(std::string(what) + "=" + std::to_string(x) + " is outside [-32767, 32767]");
            return static_cast<int>(x);
        };
        switch (tag) {
        case option_tag::per_tensor: flag(); o.per_channel = false; break;
        case option_tag::fit_scale: flag(); o.fit_scale = true; break;
        case option_tag::e_min: o.e_min = small_int("e_min"); break;
        case option_tag::e_max: o.e_max = small_int("e_max"); break;
        case option_tag::levels: {
            const std::uint64_t v = field.varint("levels");
            if (v < 1 || v > 65535) field.fail("levels=" + std::to_string(v) + " is outside [1, 65535]");
            o.levels = static_cast<int>(v);
            break;
        }
        case option_tag::cluster_size: {
            const std::uint64_t v = field.varint("cluster_size");
            if (v < 2 || v > static_cast<std::uint64_t>(std::numeric_limits<int>::max()))
                field.fail("cluster_size=" + std::to_string(v) + " must be in [2, 2^31)");
            o.cluster_size = static_cast<int>(v);
            break;
        }
        case option_tag::rounding: flag(); o.round = rounding::linear; break;
        case option_tag::underflow: flag(); o.under = underflow::flush; break;
        case option_tag::block_size: {
            const std::uint64_t v = field.varint("block_size");
            if (v < 1 || v > (std::uint64_t{1} << 24)) field.fail("block_size=" + std::to_string(v) + " is outside [1, 16777216]");
            o.block_size = static_cast<int>(v);
            break;
        }
        case option_tag::block_format: {
            const std::uint8_t v = field.u8("block_format");
            if (v != 1 && v != 2) field.fail("block_format " + std::to_string(v) + " is not 1 (fp16) or 2 (e4m3)");
            o.block_format = v == 1 ? block_scale::fp16 : block_scale::e4m3;
            break;
        }
        case option_tag::search: flag(); o.search = scale_search::mse; break;
        default:
            if (tag & option_tag::required)
                field.fail("unknown required option (written by a newer grphi?); this reader cannot decode the tensor");
            field.bytes(field.remaining(), "optional field");  // unknown optional: skipped
        }
        if (field.remaining() != 0) field.fail(std::to_string(field.remaining()) + " unused payload bytes");
    }
    try {
        o.validate();
    } catch (const std::invalid_argument& e) {
        in.fail(e.what());
    }
    return o;
}

inline void write_header(std::vector<std::uint8_t>& out) {
    std::vector<std::uint8_t> h(magic.begin(), magic.end());
    grphi::detail::put_u16(h, version_major);
    grphi::detail::put_u16(h, version_minor);
    h.resize(header_bytes - 4, 0);  // flags and reserved bytes: zero
    grphi::detail::put_u32(h, grphi::detail::crc32(h.data(), h.size()));
    out.insert(out.end(), h.begin(), h.end());
}

// The index: tensor records, then the metadata map.
inline void write_record(const tensor_info& t, std::vector<std::uint8_t>& out) {
    using grphi::detail::put_varint;
    grphi::detail::put_string(out, t.name);
    out.push_back(static_cast<std::uint8_t>(t.kind));
    out.push_back(static_cast<std::uint8_t>(t.source));
    put_varint(out, t.shape.size());
    for (const auto d : t.shape) put_varint(out, d);
    if (t.kind == tensor_kind::quantized) {
        out.push_back(static_cast<std::uint8_t>(t.scalar));
        grphi::detail::put_string(out, t.base_name);
        std::uint64_t bits;
        std::memcpy(&bits, &t.base_value, sizeof bits);
        grphi::detail::put_u64(out, bits);
        write_options(t.opts, out);
    }
    put_varint(out, t.sections.size());
    for (const auto& s : t.sections) {
        put_varint(out, s.offset);
        put_varint(out, s.size);
        grphi::detail::put_u32(out, s.crc);
        if (t.kind == tensor_kind::quantized) put_varint(out, static_cast<std::uint64_t>(s.rows));
    }
}

inline std::vector<std::uint8_t> write_index(const std::vector<tensor_info>& tensors, const metadata_map& metadata) {
    std::vector<std::uint8_t> out;
    grphi::detail::put_varint(out, tensors.size());
    for (const auto& t : tensors) write_record(t, out);
    grphi::detail::put_varint(out, metadata.size());
    for (const auto& [key, value] : metadata) {
        grphi::detail::put_string(out, key);
        grphi::detail::put_string(out, value);
    }
    return out;
}

inline void write_footer(std::uint64_t index_offset, const std::vector<std::uint8_t>& index, std::vector<std::uint8_t>& out) {
    std::vector<std::uint8_t> f;
    grphi::detail::put_u64(f, index_offset);
    grphi::detail::put_u64(f, index.size());
    grphi::detail::put_u32(f, grphi::detail::crc32(index.data(), index.size()));
    grphi::detail::put_u32(f, grphi::detail::crc32(f.data(), f.size()));
    f.insert(f.end(), footer_magic.begin(), footer_magic.end());
    out.insert(out.end(), f.begin(), f.end());
}

// The cost a quantized part or tensor counts against the limits: its weights plus one per row (channel state).
inline std::uint64_t weight_cost(std::uint64_t rows, std::uint64_t cols) { return rows * cols + rows; }

// Parses and checks one record; `cursor` is where its first section must start.
inline tensor_info read_record(byte_reader& in, std::uint64_t& cursor, std::uint64_t data_end, const reader_limits& limits,
                               std::uint64_t& weights_total) {
    const std::uint8_t* start = in.position();
    tensor_info t;
    t.name = in.string(max_name_bytes, "tensor name");
    byte_reader r(in.position(), in.remaining(), in.context() + ": tensor '" + t.name + "'");
    const std::uint8_t kind = r.u8("kind");
    if (kind != 1 && kind != 2) r.fail("unknown tensor kind " + std::to_string(kind));
    t.kind = static_cast<tensor_kind>(kind);
    t.source = static_cast<dtype>(r.u8("dtype"));
    const std::uint64_t rank = r.varint("rank");
    if (rank > max_rank) r.fail("rank " + std::to_string(rank) + " exceeds " + std::to_string(max_rank));  // before allocating
    for (std::uint64_t d = 0; d < rank; ++d) t.shape.push_back(r.varint("shape extent"));
    if (t.kind == tensor_kind::quantized) {
        t.scalar = static_cast<scalar_kind>(r.u8("scalar type"));
        t.base_name = r.string(max_name_bytes, "base name");
        const std::uint64_t bits = r.u64("base value");
        std::memcpy(&t.base_value, &bits, sizeof bits);
        t.opts = read_options(r);
    }
    try {
        validate_record(t);  // the writer's rule
    } catch (const std::invalid_argument& e) {
        r.fail(e.what());
    }
    const matrix_extent m = matrix_extent_of(t.shape);
    const std::uint64_t rows = static_cast<std::uint64_t>(m.rows), cols = static_cast<std::uint64_t>(m.cols);
    if (t.kind == tensor_kind::quantized) {
        if (rows > limits.max_elements || cols > limits.max_elements || (cols != 0 && rows > limits.max_elements / cols) ||
            weight_cost(rows, cols) > limits.max_elements - std::min(weights_total, limits.max_elements))
            r.fail("shape " + std::to_string(rows) + " x " + std::to_string(cols) +
                   " takes the tensors past the reader's limit of " + std::to_string(limits.max_elements) + " elements");
        weights_total += weight_cost(rows, cols);
    }
    const std::uint64_t sections = r.varint("section count");
    if (t.kind == tensor_kind::raw && sections != 1) r.fail("a raw tensor has exactly one section, not " + std::to_string(sections));
    if (t.kind == tensor_kind::quantized && (rows == 0 ? sections != 0 : (sections == 0 || sections > rows)))
        r.fail(std::to_string(sections) + " sections for " + std::to_string(rows) + " rows");
    if (sections > r.remaining() / 6) r.fail("section count " + std::to_string(sections) + " exceeds the index");
    std::int64_t next_row = 0;
    for (std::uint64_t i = 0; i < sections; ++i) {
        section_info s;
        s.offset = r.varint("section offset");
        s.size = r.varint("section size");
        s.crc = r.u32("section CRC");
        if (s.offset != align_up(cursor))
            r.fail("section " + std::to_string(i) + " starts at " + std::to_string(s.offset) + ", expected " +
                   std::to_string(align_up(cursor)) + " (sections follow each other in index order, 64-byte aligned)");
        if (s.offset > data_end || s.size > data_end - s.offset)
            r.fail("section " + std::to_string(i) + " [" + std::to_string(s.offset) + ", +" + std::to_string(s.size) +
                   ") runs past the data area");
        cursor = s.offset + s.size;
        if (t.kind == tensor_kind::quantized) {
            const std::uint64_t part_rows = r.varint("part rows");
            if (part_rows == 0 || part_rows > rows - static_cast<std::uint64_t>(next_row))
                r.fail("part " + std::to_string(i) + " has " + std::to_string(part_rows) + " rows, " +
                       std::to_string(rows - static_cast<std::uint64_t>(next_row)) + " remain");
            if ((cols != 0 && part_rows > limits.max_part_elements / cols) || weight_cost(part_rows, cols) > limits.max_part_elements)
                r.fail("part " + std::to_string(i) + " holds more than the reader's part limit of " +
                       std::to_string(limits.max_part_elements) + " elements");
            s.first_row = next_row;
            s.rows = static_cast<std::int64_t>(part_rows);
            next_row += s.rows;
        } else {
            const std::uint64_t size = element_count(t.shape);
            if (size > s.size / dtype_size(t.source) || size * dtype_size(t.source) != s.size)
                r.fail("raw section holds " + std::to_string(s.size) + " bytes, the shape needs " +
                       std::to_string(size) + " x " + std::to_string(dtype_size(t.source)));
        }
        t.sections.push_back(s);
    }
    if (t.kind == tensor_kind::quantized && static_cast<std::uint64_t>(next_row) != rows)
        r.fail("parts cover " + std::to_string(next_row) + " of " + std::to_string(rows) + " rows");
    in.bytes(static_cast<std::size_t>(r.position() - in.position()), "tensor record");
    t.record_bytes = static_cast<std::uint64_t>(in.position() - start);
    return t;
}

}  // namespace detail

// A parsed index: the tensors in file order and the metadata.
struct index {
    std::vector<tensor_info> tensors;
    metadata_map metadata;
};

// Parses the footer and index of a whole format-2 file image (the sections are not read).
inline index read_index(const std::uint8_t* data, std::size_t size, const std::string& file, const reader_limits& limits) {
    grphi::detail::byte_reader in(data, size, file);
    if (size < 12 || !std::equal(magic.begin(), magic.end(), data)) in.fail("bad magic: not a .grphi file");
    const std::uint32_t major = grphi::detail::load_u16(data + 8);
    if (major != version_major)
        in.fail("unsupported format version " + std::to_string(major) + "." + std::to_string(grphi::detail::load_u16(data + 10)) +
                " (this reader reads versions 1 and 2)");
    if (size < header_bytes + footer_bytes)
        in.fail("file of " + std::to_string(size) + " bytes is shorter than a format-2 header and footer");
    if (limits.check_checksums && grphi::detail::crc32(data, header_bytes - 4) != grphi::detail::load_u32(data + header_bytes - 4))
        in.fail("file header checksum mismatch");
    for (std::size_t i = 12; i < header_bytes - 4; ++i)
        if (data[i] != 0) in.fail("header byte " + std::to_string(i) + " is reserved and must be 0");
    const std::uint8_t* footer = data + size - footer_bytes;
    if (!std::equal(footer_magic.begin(), footer_magic.end(), footer + 24)) in.fail("bad footer magic (truncated file?)");
    if (limits.check_checksums && grphi::detail::crc32(footer, 20) != grphi::detail::load_u32(footer + 20))
        in.fail("footer checksum mismatch");
    const std::uint64_t index_offset = grphi::detail::load_u64(footer);
    const std::uint64_t index_size = grphi::detail::load_u64(footer + 8);
    const std::uint64_t index_end = size - footer_bytes;
    if (index_offset < header_bytes || index_offset > index_end || index_size != index_end - index_offset)
        in.fail("index [" + std::to_string(index_offset) + ", +" + std::to_string(index_size) +
                ") does not end where the footer starts (" + std::to_string(index_end) + ")");
    if (index_size > limits.max_index_bytes)
        in.fail("index of " + std::to_string(index_size) + " bytes exceeds the reader's limit of " + std::to_string(limits.max_index_bytes));
    const std::uint8_t* index_data = data + index_offset;
    if (limits.check_checksums && grphi::detail::crc32(index_data, static_cast<std::size_t>(index_size)) != grphi::detail::load_u32(footer + 16))
        in.fail("index checksum mismatch");

    grphi::detail::byte_reader r(index_data, static_cast<std::size_t>(index_size), file + ": index");
    index result;
    const std::uint64_t count = r.varint("tensor count");
    if (count > limits.max_tensors) r.fail(std::to_string(count) + " tensors exceed the reader's limit of " + std::to_string(limits.max_tensors));
    if (count > r.remaining() / 5) r.fail("tensor count " + std::to_string(count) + " exceeds the index size");
    std::set<std::string> names;
    std::uint64_t cursor = header_bytes, weights = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        result.tensors.push_back(detail::read_record(r, cursor, index_offset, limits, weights));
        if (!names.insert(result.tensors.back().name).second) r.fail("duplicate tensor name '" + result.tensors.back().name + "'");
    }
    if (align_up(cursor) != index_offset)
        r.fail("the index starts at " + std::to_string(index_offset) + ", expected " + std::to_string(align_up(cursor)) +
               " (right after the last section)");
    const std::uint64_t entries = r.varint("metadata count");
    if (entries > r.remaining() / 2) r.fail("metadata count " + std::to_string(entries) + " exceeds the index size");
    std::uint64_t metadata_bytes = 0;
    for (std::uint64_t i = 0; i < entries; ++i) {
        std::string key = r.string(max_name_bytes, "metadata key");
        std::string value = r.string(r.remaining(), "metadata value");
        metadata_bytes += key.size() + value.size();
        if (metadata_bytes > limits.max_metadata_bytes)
            r.fail("metadata exceeds the reader's limit of " + std::to_string(limits.max_metadata_bytes) + " bytes");
        if (!detail::valid_utf8(key) || !detail::valid_utf8(value)) r.fail("metadata entry '" + key + "' is not valid UTF-8");
        if (!result.metadata.empty() && !(result.metadata.rbegin()->first < key))
            r.fail("metadata keys are not strictly ascending at '" + key + "'");
        result.metadata.emplace_hint(result.metadata.end(), std::move(key), std::move(value));
    }
    if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " unused bytes at the end of the index");
    return result;
}

}  // namespace format

}  // namespace grphi
