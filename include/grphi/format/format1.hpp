// Format 1 of `.grphi` (grphi 0.x, docs/container.md): header (20 bytes) | directory | CRC | one data
// section + CRC per tensor, 2-D quantized tensors only. Still read: its directory is parsed into the
// same tensor_info index as format 2 (one section per tensor), so every reader path serves both.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "layout.hpp"
#include "section_codec.hpp"

namespace grphi {

namespace container {
inline constexpr std::array<std::uint8_t, 8> magic = {0x89, 'G', 'R', 'P', 'H', 'I', '\r', '\n'};
inline constexpr std::uint16_t version_major = 1;  // format 1; grphi writes format 2 (format/layout.hpp)
inline constexpr std::uint16_t version_minor = 0;
inline constexpr std::size_t header_bytes = 20;
}  // namespace container

namespace detail {

// Kept for writers that still emit format 1 (the CLI until it moves to file_writer).
inline void write_directory_entry(const stored_tensor& t, std::uint64_t data_bytes, std::vector<std::uint8_t>& out) {
    put_string(out, t.name);
    out.push_back(static_cast<std::uint8_t>(t.scalar));
    put_string(out, t.base_name);
    std::uint64_t value_bits;
    std::memcpy(&value_bits, &t.base_value, sizeof value_bits);
    put_u64(out, value_bits);
    put_varint(out, static_cast<std::uint64_t>(t.rows));
    put_varint(out, static_cast<std::uint64_t>(t.cols));
    const options& o = t.opts;
    const std::uint8_t flags = static_cast<std::uint8_t>((o.per_channel ? 1 : 0) | (o.fit_scale ? 2 : 0) |
                                                         (o.e_min ? 4 : 0) | (o.e_max ? 8 : 0) | (o.levels ? 16 : 0));
    out.push_back(flags);
    if (o.e_min) put_varint(out, zigzag(*o.e_min));
    if (o.e_max) put_varint(out, zigzag(*o.e_max));
    if (o.levels) put_varint(out, static_cast<std::uint64_t>(*o.levels));
    put_varint(out, static_cast<std::uint64_t>(o.cluster_size));
    out.push_back(static_cast<std::uint8_t>(o.round == rounding::log ? 0 : 1));
    out.push_back(static_cast<std::uint8_t>(o.under == underflow::clamp ? 0 : 1));
    put_varint(out, data_bytes);
}

struct directory_entry {
    stored_tensor tensor;    // metadata only; arrays filled from the data section
    std::uint64_t data_bytes = 0;
    std::uint64_t entry_bytes = 0;
};

inline directory_entry read_directory_entry(byte_reader& in, const std::string& file) {
    const std::uint8_t* start = in.position();
    directory_entry e;
    stored_tensor& t = e.tensor;
    t.name = in.string(container::max_name_bytes, "tensor name");
    byte_reader named(in.position(), in.remaining(), file + ": tensor '" + t.name + "'");
    const std::uint8_t scalar = named.u8("scalar type");
    if (scalar != 1 && scalar != 2) named.fail("unknown scalar type " + std::to_string(scalar));
    t.scalar = static_cast<scalar_kind>(scalar);
    t.base_name = named.string(container::max_name_bytes, "base name");
    const std::uint8_t* value = named.bytes(8, "base value");
    std::uint64_t value_bits = 0;
    for (int i = 7; i >= 0; --i) value_bits = (value_bits << 8) | value[i];
    std::memcpy(&t.base_value, &value_bits, sizeof value_bits);
    if (!std::isfinite(t.base_value) || t.base_value < static_cast<double>(min_base_value))
        named.fail("base value " + std::to_string(t.base_value) + " is not a finite number >= 1.03");
    const std::uint64_t rows = named.varint("rows");
    const std::uint64_t cols = named.varint("cols");
    constexpr std::uint64_t max_extent = std::uint64_t{1} << 62;
    if (rows > max_extent || cols > max_extent) named.fail("shape " + std::to_string(rows) + " x " + std::to_string(cols) + " is too large");
    t.rows = static_cast<std::int64_t>(rows);
    t.cols = static_cast<std::int64_t>(cols);
    const std::uint8_t flags = named.u8("option flags");
    if (flags & ~0x1fu) named.fail("unknown option flags " + std::to_string(flags));
    options& o = t.opts;
    o.per_channel = flags & 1;
    o.fit_scale = flags & 2;
    auto small_int = [&](std::uint64_t v, const char* what) {
        const std::int64_t x = unzigzag(v);
        if (x < -32767 || x > 32767) named.fail(std::string(what) + "=" + std::to_string(x) + " is outside [-32767, 32767]");
        return static_cast<int>(x);
    };
    if (flags & 4) o.e_min = small_int(named.varint("e_min"), "e_min");
    if (flags & 8) o.e_max = small_int(named.varint("e_max"), "e_max");
    if (flags & 16) {
        const std::uint64_t levels = named.varint("levels");
        if (levels < 1 || levels > 65535) named.fail("levels=" + std::to_string(levels) + " is outside [1, 65535]");
        o.levels = static_cast<int>(levels);
    }
    const std::uint64_t cluster = named.varint("cluster_size");
    if (cluster > static_cast<std::uint64_t>(std::numeric_limits<int>::max()))
        named.fail("cluster_size=" + std::to_string(cluster) + " is too large");
    o.cluster_size = static_cast<int>(cluster);
    const std::uint8_t round = named.u8("rounding");
    const std::uint8_t under = named.u8("underflow");
    if (round > 1) named.fail("unknown rounding " + std::to_string(round));
    if (under > 1) named.fail("unknown underflow " + std::to_string(under));
    o.round = round == 0 ? rounding::log : rounding::linear;
    o.under = under == 0 ? underflow::clamp : underflow::flush;
    try {
        o.validate();
    } catch (const std::invalid_argument& err) {
        named.fail(err.what());
    }
    e.data_bytes = named.varint("data section size");
    in.bytes(static_cast<std::size_t>(named.position() - in.position()), "directory entry");
    e.entry_bytes = static_cast<std::uint64_t>(in.position() - start);
    return e;
}

}  // namespace detail

namespace format1 {

// Parses a format-1 header and directory into an index (sections point at the data sections).
inline format::index read_index(const std::uint8_t* data, std::size_t size, const std::string& file, const reader_limits& limits) {
    detail::byte_reader in(data, size, file);
    const std::uint8_t* header = in.bytes(container::header_bytes, "file header (not a .grphi file?)");
    if (!std::equal(container::magic.begin(), container::magic.end(), header)) in.fail("bad magic: not a .grphi file");
    const std::uint32_t header_crc = detail::load_u32(header + 16);
    if (limits.check_checksums && detail::crc32(header, 16) != header_crc) in.fail("file header checksum mismatch");
    const std::uint32_t major = detail::load_u16(header + 8);
    if (major != container::version_major)
        in.fail("unsupported format version " + std::to_string(major) + "." + std::to_string(detail::load_u16(header + 10)) +
                " (this reader reads versions 1 and 2)");
    const std::uint32_t directory_bytes = detail::load_u32(header + 12);
    if (directory_bytes > limits.max_index_bytes)
        in.fail("directory of " + std::to_string(directory_bytes) + " bytes exceeds the reader's limit of " +
                std::to_string(limits.max_index_bytes));
    const std::uint8_t* directory = in.bytes(directory_bytes, "tensor directory");
    if (in.u32("directory checksum") != detail::crc32(directory, directory_bytes) && limits.check_checksums)
        in.fail("tensor directory checksum mismatch");

    detail::byte_reader dir(directory, directory_bytes, file + ": directory");
    const std::uint64_t count = dir.varint("tensor count");
    if (count > directory_bytes) dir.fail("tensor count " + std::to_string(count) + " exceeds the directory size");
    if (count > limits.max_tensors) dir.fail(std::to_string(count) + " tensors exceed the reader's limit of " + std::to_string(limits.max_tensors));
    format::index result;
    std::set<std::string> names;
    std::uint64_t data_total = 0, weights_total = 0;
    std::vector<std::uint64_t> data_bytes;
    for (std::uint64_t i = 0; i < count; ++i) {
        detail::directory_entry e = detail::read_directory_entry(dir, file);
        const stored_tensor& s = e.tensor;
        if (!names.insert(s.name).second) dir.fail("duplicate tensor name '" + s.name + "'");
        const auto rows = static_cast<std::uint64_t>(s.rows), cols = static_cast<std::uint64_t>(s.cols);
        if (rows > limits.max_elements || cols > limits.max_elements || (cols != 0 && rows > limits.max_elements / cols) ||
            format::detail::weight_cost(rows, cols) > limits.max_elements - std::min(weights_total, limits.max_elements))
            dir.fail("tensor '" + s.name + "' has " + std::to_string(rows) + " x " + std::to_string(cols) +
                     " weights, past the load limit of " + std::to_string(limits.max_elements));
        weights_total += format::detail::weight_cost(rows, cols);
        if (e.data_bytes > size) dir.fail("tensor '" + s.name + "' data section is larger than the file");
        data_total += e.data_bytes + 4;
        tensor_info t;
        t.name = s.name;
        t.kind = tensor_kind::quantized;
        t.source = s.scalar == scalar_kind::float32 ? dtype::F32 : dtype::F64;
        t.shape = {rows, cols};
        t.scalar = s.scalar;
        t.base_name = s.base_name;
        t.base_value = s.base_value;
        t.opts = s.opts;
        t.record_bytes = e.entry_bytes;
        try {
            format::detail::validate_record(t);  // what loads must save again as format 2
        } catch (const std::invalid_argument& err) {
            dir.fail("tensor '" + t.name + "': " + err.what());
        }
        result.tensors.push_back(std::move(t));
        data_bytes.push_back(e.data_bytes);
    }
    if (dir.remaining() != 0) dir.fail(std::to_string(dir.remaining()) + " unused bytes at the end of the directory");
    if (data_total != in.remaining())
        in.fail("data sections take " + std::to_string(data_total) + " bytes but " + std::to_string(in.remaining()) +
                " bytes follow the directory (truncated or padded file)");
    auto offset = static_cast<std::uint64_t>(in.position() - data);
    for (std::size_t i = 0; i < result.tensors.size(); ++i) {
        section_info s;
        s.offset = offset;
        s.size = data_bytes[i];
        s.crc = detail::load_u32(data + offset + data_bytes[i]);
        s.first_row = 0;
        s.rows = result.tensors[i].rows();
        result.tensors[i].sections.push_back(s);
        offset += data_bytes[i] + 4;
    }
    return result;
}

}  // namespace format1

}  // namespace grphi
