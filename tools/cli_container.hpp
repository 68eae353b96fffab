// The grphi tool's layer over the .grphi container: a streaming writer and reader with the same byte layout
// as grphi::serialize / grphi::deserialize, plus the conventions that carry what the container itself does not
// hold yet: original N-D shape and dtype, exactly kept tensors, large tensors split into row parts.
//
// Conventions (all inside a valid container file, readable by grphi::load):
// - "__grphi_tool__/manifest": a byte-carrier tensor holding a JSON manifest
//   {"version":1,"metadata":{..},"tensors":[{"name","dtype","shape","kind":"quantized"|"exact","parts":[..]}]}
// - a byte carrier stores n raw bytes as a 1 x n packed tensor: sign +1, exponent = byte - 128, base two;
//   exact tensors are byte carriers named "__grphi_tool__/exact/<name>[@<offset>]".
// - a quantized tensor split into row parts stores each part as its own container tensor, named
//   "<name>" when it is one part, else "<name>@<first row>". Rows are channels, so parts quantize exactly as
//   the whole tensor would (per-tensor options keep the tensor in one part).
// - "__grphi_tool__/padding/<i>/...": empty byte carriers ending the directory, whose names fill the room
//   reserved for the directory (see container_writer); readers ignore them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <grphi/container.hpp>
#include <grphi/detail/json.hpp>
#include <grphi/error.hpp>
#include <grphi/mapped_file.hpp>
#include <grphi/output_file.hpp>
#include <grphi/safetensors.hpp>

namespace grphi::cli {

inline constexpr const char* tool_prefix = "__grphi_tool__/";
inline const std::string manifest_name = std::string(tool_prefix) + "manifest";
inline const std::string exact_prefix = std::string(tool_prefix) + "exact/";
inline constexpr int carrier_bias = 128;

// ---------------------------------------------------------------------------------------------
// Byte carriers.
inline stored_tensor make_carrier(std::string name, const std::uint8_t* bytes, std::size_t n) {
    stored_tensor t;
    t.name = std::move(name);
    t.scalar = scalar_kind::float32;
    t.base_name = two::name;
    t.base_value = 2.0;
    t.rows = 1;
    t.cols = static_cast<std::int64_t>(n);
    t.signs.assign(n, 1);
    t.exponents.resize(n);
    for (std::size_t i = 0; i < n; ++i) t.exponents[i] = static_cast<std::int16_t>(int{bytes[i]} - carrier_bias);
    t.window_lo = {-carrier_bias};
    t.window_hi = {255 - carrier_bias};
    t.scale_steps = {0};
    return t;
}

inline std::vector<std::uint8_t> carrier_bytes(const stored_tensor& t, const std::string& file) {
    const bool shaped = t.rows == 1 && !t.opts.clustered() && t.exponents.size() == t.size();
    if (!shaped) throw format_error(file + ": tensor '" + t.name + "' is not a byte carrier");
    std::vector<std::uint8_t> bytes(t.exponents.size());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        const int value = t.exponents[i] + carrier_bias;
        if (t.signs[i] != 1 || value < 0 || value > 255)
            throw format_error(file + ": tensor '" + t.name + "' is not a byte carrier (byte " + std::to_string(i) + ")");
        bytes[i] = static_cast<std::uint8_t>(value);
    }
    return bytes;
}

// ---------------------------------------------------------------------------------------------
// A packed tensor's arrays moved (not copied) into a container tensor; quantize's output is valid.
template <class T, class Base>
inline stored_tensor to_stored(std::string name, packed<T, Base>&& p) {
    return stored_tensor::from_valid(std::move(name), std::move(p));
}

// One container tensor, coded: its data section (with checksum) and directory entry.
struct coded_tensor {
    std::vector<std::uint8_t> section;  // data section followed by its CRC-32
    std::vector<std::uint8_t> entry;    // directory entry
    std::string name;
};

// The tensors coded here come from grphi::quantize or make_carrier, valid by construction, so the container's
// check_storable pass (8 % of the tool's time) is skipped.
inline coded_tensor code_tensor(const stored_tensor& t) {
    coded_tensor c;
    c.name = t.name;
    detail::write_tensor_data(t, c.section);
    const std::uint64_t data_bytes = c.section.size();
    detail::put_u32(c.section, detail::crc32(c.section.data(), c.section.size()));
    detail::write_directory_entry(t, data_bytes, c.entry);
    return c;
}

// code_tensor for a packed tensor: its arrays are lent to the container tensor and given back, so a caller
// that quantizes into the same packed tensor again reuses their memory (no allocation, no page faults).
template <class T, class Base>
coded_tensor code_packed(const std::string& name, packed<T, Base>& p) {
    stored_tensor s = to_stored(name, std::move(p));
    coded_tensor c = code_tensor(s);
    p.signs = std::move(s.signs);
    p.exponents = std::move(s.exponents);
    p.window_lo = std::move(s.window_lo);
    p.window_hi = std::move(s.window_hi);
    p.scale_steps = std::move(s.scale_steps);
    return c;
}

// The most bytes a tensor's directory entry can take once coded: its data section at an upper bound
// (channel state, two rANS streams of at most 2 bytes per symbol with full tables, or raw exponents), and
// room for options that differ from the planned ones.
inline std::uint64_t entry_bytes_bound(const stored_tensor& planned) {
    const auto rows = static_cast<std::uint64_t>(planned.rows), cols = static_cast<std::uint64_t>(planned.cols);
    const std::uint64_t data_bound = 5 * rows + 6 * rows * cols + 32768;
    std::vector<std::uint8_t> entry;
    detail::write_directory_entry(planned, data_bound, entry);
    return entry.size() + 16;
}

// Writes a container straight into the output file, each data section once: room for the header and
// directory is reserved first, sized from the planned entries (their data sizes bounded), data sections
// follow as they come, and finish() writes header and directory into the room. The directory fills it
// exactly thanks to padding entries: empty byte carriers named "__grphi_tool__/padding/<i>/...." whose
// names take up the difference between the planned and the actual entry sizes.
class container_writer {
public:
    // `tensors`: how many add() calls will come; `entries_bound`: the sum of their entry_bytes_bound.
    // The output's temporary is created first, so an unwritable target fails before any work is done.
    container_writer(std::string path, std::uint64_t tensors, std::uint64_t entries_bound)
        : path_(std::move(path)), out_(std::make_unique<output_file>(path_)), planned_(tensors),
          entries_bound_(entries_bound), paddings_(1 + entries_bound / padding_span) {
        for (std::uint64_t i = 0; i < paddings_; ++i) padding_entry_base_ += padding_entry(i, padding_min_name).size();
        padding_entry_base_ -= paddings_ * (2 + padding_min_name);  // the name's own bytes (varint + text) vary
        reserved_ = container::header_bytes + varint_bytes(planned_ + paddings_) + entries_bound_ + padding_entry_base_ +
                    paddings_ * (2 + padding_min_name) + 4;
        const std::vector<std::uint8_t> room(static_cast<std::size_t>(std::min<std::uint64_t>(reserved_, 1 << 16)), 0);
        for (std::uint64_t left = reserved_; left != 0;) {
            const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(left, room.size()));
            out_->write(room.data(), n);
            left -= n;
        }
    }
    container_writer(const container_writer&) = delete;
    container_writer& operator=(const container_writer&) = delete;

    void add(const coded_tensor& c) {
        if (count_ == planned_) throw std::logic_error(path_ + ": more tensors than planned");
        out_->write(c.section.data(), c.section.size());
        entries_.insert(entries_.end(), c.entry.begin(), c.entry.end());
        ++count_;
    }

    // Returns the file's size.
    std::uint64_t finish() {
        if (count_ != planned_ || entries_.size() > entries_bound_)
            throw std::logic_error(path_ + ": the directory does not fit the room planned for it");
        // Name bytes the paddings must take so the directory ends exactly at the reserved room's end.
        std::uint64_t slack = entries_bound_ - entries_.size() + paddings_ * (2 + padding_min_name);
        std::vector<std::uint8_t> directory;
        rans::detail::put_varint(directory, count_ + paddings_);
        directory.insert(directory.end(), entries_.begin(), entries_.end());
        for (std::uint64_t i = 0; i < paddings_; ++i) {
            // Names of 128..16383 bytes take 2 + length bytes: every size in [130, 16385] is reachable.
            const std::uint64_t take = i + 1 == paddings_ ? slack : std::min<std::uint64_t>(slack - 130 * (paddings_ - 1 - i), 2 + padding_max_name);
            if (take < 2 + padding_min_name || take > 2 + padding_max_name)
                throw std::logic_error(path_ + ": padding entries cannot fill the directory's room");
            slack -= take;
            const coded_tensor pad = padding_entry_coded(i, static_cast<std::size_t>(take - 2));
            directory.insert(directory.end(), pad.entry.begin(), pad.entry.end());
            out_->write(pad.section.data(), pad.section.size());
        }
        if (directory.size() > 0xffffffffu) throw std::invalid_argument(path_ + ": tensor directory exceeds 4 GiB");
        std::vector<std::uint8_t> head(container::magic.begin(), container::magic.end());
        detail::put_u16(head, container::version_major);
        detail::put_u16(head, container::version_minor);
        detail::put_u32(head, static_cast<std::uint32_t>(directory.size()));
        detail::put_u32(head, detail::crc32(head.data(), head.size()));
        head.insert(head.end(), directory.begin(), directory.end());
        detail::put_u32(head, detail::crc32(directory.data(), directory.size()));
        if (head.size() != reserved_) throw std::logic_error(path_ + ": the directory does not fill the room planned for it");
        out_->write_at(0, head.data(), head.size());
        const std::uint64_t size = out_->written();
        out_->commit();
        return size;
    }

private:
    static constexpr std::size_t padding_min_name = 128, padding_max_name = 16383;
    static constexpr std::uint64_t padding_span = padding_max_name - padding_min_name;

    static std::uint64_t varint_bytes(std::uint64_t v) {
        std::vector<std::uint8_t> bytes;
        rans::detail::put_varint(bytes, v);
        return bytes.size();
    }
    static coded_tensor padding_entry_coded(std::uint64_t index, std::size_t name_bytes) {
        std::string name = std::string(tool_prefix) + "padding/" + std::to_string(index) + "/";
        name.resize(std::max(name_bytes, name.size()), '.');
        return code_tensor(make_carrier(std::move(name), nullptr, 0));
    }
    static std::vector<std::uint8_t> padding_entry(std::uint64_t index, std::size_t name_bytes) {
        return padding_entry_coded(index, name_bytes).entry;
    }

    std::string path_;
    std::unique_ptr<output_file> out_;
    std::uint64_t planned_;
    std::uint64_t entries_bound_;
    std::uint64_t paddings_;
    std::uint64_t padding_entry_base_ = 0;
    std::uint64_t reserved_ = 0;
    std::vector<std::uint8_t> entries_;
    std::uint64_t count_ = 0;
};

// Reads a container one tensor at a time from a mapped file: the directory and every size are checked as
// grphi::deserialize does; a tensor's data section is decoded (and its checksum checked) only on demand.
class container_reader {
public:
    struct entry {
        stored_tensor meta;  // directory fields; arrays empty
        std::uint64_t data_offset = 0;
        std::uint64_t data_bytes = 0;
        std::uint64_t entry_bytes = 0;
        std::uint64_t coded_bytes() const { return entry_bytes + data_bytes + 4; }
    };

    explicit container_reader(const std::string& path, const load_options& limits = {}) : file_(path), limits_(limits) {
        const auto* data = reinterpret_cast<const std::uint8_t*>(file_.data());
        const std::size_t size = file_.size();
        rans::byte_reader in(data, size, path);
        const std::uint8_t* header = in.bytes(container::header_bytes, "file header (not a .grphi file?)");
        if (!std::equal(container::magic.begin(), container::magic.end(), header)) in.fail("bad magic: not a .grphi file");
        if (detail::crc32(header, 16) != rans::detail::load_u32(header + 16)) in.fail("file header checksum mismatch");
        const std::uint32_t major = rans::detail::load_u16(header + 8);
        if (major != container::version_major)
            in.fail("unsupported format version " + std::to_string(major) + "." +
                    std::to_string(rans::detail::load_u16(header + 10)));
        const std::uint32_t directory_bytes = rans::detail::load_u32(header + 12);
        const std::uint8_t* directory = in.bytes(directory_bytes, "tensor directory");
        if (detail::crc32(directory, directory_bytes) != in.u32("directory checksum")) in.fail("tensor directory checksum mismatch");

        rans::byte_reader dir(directory, directory_bytes, path + ": directory");
        const std::uint64_t count = dir.varint("tensor count");
        if (count > directory_bytes) dir.fail("tensor count " + std::to_string(count) + " exceeds the directory size");
        std::uint64_t offset = static_cast<std::uint64_t>(in.position() - data);
        std::uint64_t data_total = 0;
        for (std::uint64_t i = 0; i < count; ++i) {
            detail::directory_entry e = detail::read_directory_entry(dir, path);
            const auto rows = static_cast<std::uint64_t>(e.tensor.rows), cols = static_cast<std::uint64_t>(e.tensor.cols);
            if (rows > limits.max_weights || cols > limits.max_weights || (cols != 0 && rows > limits.max_weights / cols))
                dir.fail("tensor '" + e.tensor.name + "' has " + std::to_string(rows) + " x " + std::to_string(cols) +
                         " weights, above the load limit of " + std::to_string(limits.max_weights));
            if (e.data_bytes > size) dir.fail("tensor '" + e.tensor.name + "' data section is larger than the file");
            for (const auto& other : entries_)
                if (other.meta.name == e.tensor.name) dir.fail("duplicate tensor name '" + e.tensor.name + "'");
            entry item;
            item.meta = std::move(e.tensor);
            item.data_offset = offset + data_total;
            item.data_bytes = e.data_bytes;
            item.entry_bytes = e.entry_bytes;
            data_total += e.data_bytes + 4;
            entries_.push_back(std::move(item));
        }
        if (dir.remaining() != 0) dir.fail(std::to_string(dir.remaining()) + " unused bytes at the end of the directory");
        if (data_total != in.remaining())
            in.fail("data sections take " + std::to_string(data_total) + " bytes but " + std::to_string(in.remaining()) +
                    " bytes follow the directory (truncated or padded file)");
    }

    const std::string& path() const { return file_.path(); }
    const std::vector<entry>& entries() const { return entries_; }
    const entry* find(const std::string& name) const {
        for (const auto& e : entries_)
            if (e.meta.name == name) return &e;
        return nullptr;
    }

    // The full tensor (checksum checked); its pages are released afterwards.
    stored_tensor read(const entry& e) const {
        const std::string where = path() + ": tensor '" + e.meta.name + "'";
        const auto* base = reinterpret_cast<const std::uint8_t*>(file_.data());
        const auto* section = base + e.data_offset;
        const auto bytes = static_cast<std::size_t>(e.data_bytes);
        if (detail::crc32(section, bytes) != rans::detail::load_u32(section + bytes))
            throw format_error(where + ": data section checksum mismatch");
        rans::byte_reader body(section, bytes, where);
        stored_tensor t = e.meta;
        detail::read_tensor_data(t, body);
        if (body.remaining() != 0) body.fail(std::to_string(body.remaining()) + " unused bytes at the end of the data section");
        t.coded_bytes = e.coded_bytes();
        file_.release(static_cast<std::size_t>(e.data_offset), static_cast<std::size_t>(e.data_bytes + 4));
        return t;
    }

private:
    mapped_file file_;
    load_options limits_;
    std::vector<entry> entries_;
};

// ---------------------------------------------------------------------------------------------
// The manifest: what each original tensor was and where its parts are.
struct manifest_part {
    std::string tensor;       // container tensor name
    std::uint64_t first = 0;  // first row (quantized) or first byte (exact)
    std::uint64_t count = 0;  // rows or bytes
};

struct manifest_tensor {
    std::string name;
    safetensors::dtype type = safetensors::dtype::F32;  // the source dtype
    std::vector<std::uint64_t> shape;
    bool quantized = true;
    std::vector<manifest_part> parts;

    std::uint64_t elements() const {
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    std::uint64_t rows() const { return shape.size() >= 2 ? shape[0] : 1; }
    std::uint64_t cols() const { return shape.size() >= 2 ? (shape[0] ? elements() / shape[0] : 0) : elements(); }
};

struct manifest {
    std::vector<manifest_tensor> tensors;
    std::vector<std::pair<std::string, std::string>> metadata;
};

inline std::string manifest_json(const manifest& m) {
    using ::grphi::detail::json_quote;
    std::string text = "{\"version\":1,\"metadata\":{";
    for (std::size_t i = 0; i < m.metadata.size(); ++i)
        text += (i ? "," : "") + json_quote(m.metadata[i].first) + ":" + json_quote(m.metadata[i].second);
    text += "},\"tensors\":[";
    for (std::size_t i = 0; i < m.tensors.size(); ++i) {
        const auto& t = m.tensors[i];
        text += std::string(i ? "," : "") + "{\"name\":" + json_quote(t.name) + ",\"dtype\":\"" +
                safetensors::dtype_name(t.type) + "\",\"shape\":[";
        for (std::size_t d = 0; d < t.shape.size(); ++d) text += (d ? "," : "") + std::to_string(t.shape[d]);
        text += std::string("],\"kind\":\"") + (t.quantized ? "quantized" : "exact") + "\",\"parts\":[";
        for (std::size_t p = 0; p < t.parts.size(); ++p)
            text += std::string(p ? "," : "") + "[" + json_quote(t.parts[p].tensor) + "," +
                    std::to_string(t.parts[p].first) + "," + std::to_string(t.parts[p].count) + "]";
        text += "]}";
    }
    return text + "]}";
}

inline manifest parse_manifest(const std::string& text, const std::string& file) {
    using ::grphi::detail::json_value;
    auto fail = [&](const std::string& what) -> manifest { throw format_error(file + ": tool manifest: " + what); };
    json_value root;
    try {
        root = ::grphi::detail::parse_json(text);
    } catch (const ::grphi::detail::json_error& e) {
        return fail(e.what());
    }
    const json_value* version = root.find("version");
    const json_value* tensors = root.find("tensors");
    const json_value* metadata = root.find("metadata");
    if (!root.is_object() || !version || version->as_uint64() != 1u || !tensors || !tensors->is_array())
        return fail("unsupported layout");
    manifest m;
    if (metadata && metadata->is_object())
        for (const auto& [k, v] : metadata->members)
            if (v.is_string()) m.metadata.emplace_back(k, v.text);
    for (const auto& item : tensors->items) {
        manifest_tensor t;
        const json_value* name = item.find("name");
        const json_value* dtype = item.find("dtype");
        const json_value* shape = item.find("shape");
        const json_value* kind = item.find("kind");
        const json_value* parts = item.find("parts");
        if (!name || !name->is_string() || !dtype || !dtype->is_string() || !shape || !shape->is_array() || !kind ||
            !kind->is_string() || !parts || !parts->is_array())
            return fail("malformed tensor entry");
        t.name = name->text;
        const auto type = safetensors::parse_dtype(dtype->text);
        if (!type) return fail("tensor '" + t.name + "': unknown dtype '" + dtype->text + "'");
        t.type = *type;
        std::uint64_t elements = 1;
        bool empty = false, wraps = false;
        for (const auto& d : shape->items) {
            const auto extent = d.as_uint64();
            if (!extent) return fail("tensor '" + t.name + "': bad shape");
            t.shape.push_back(*extent);
            empty = empty || *extent == 0;
            if (*extent != 0 && elements > std::numeric_limits<std::uint64_t>::max() / 8 / *extent) wraps = true;
            else elements *= *extent;
        }
        if (wraps && !empty) return fail("tensor '" + t.name + "': shape has more than 2^61 elements");
        t.quantized = kind->text == "quantized";
        for (const auto& p : parts->items) {
            if (!p.is_array() || p.items.size() != 3 || !p.items[0].is_string() || !p.items[1].as_uint64() ||
                !p.items[2].as_uint64())
                return fail("tensor '" + t.name + "': malformed part");
            t.parts.push_back({p.items[0].text, *p.items[1].as_uint64(), *p.items[2].as_uint64()});
        }
        m.tensors.push_back(std::move(t));
    }
    return m;
}

// The manifest of a container: the tool's own, or one made up for a plain library file (each tensor 2-D,
// quantized, one part).
inline manifest read_manifest(const container_reader& in) {
    if (const auto* e = in.find(manifest_name)) {
        const std::vector<std::uint8_t> bytes = carrier_bytes(in.read(*e), in.path());
        manifest m = parse_manifest(std::string(bytes.begin(), bytes.end()), in.path());
        // Every part must exist and match its declared extent.
        for (const auto& t : m.tensors) {
            std::uint64_t covered = 0;
            for (const auto& p : t.parts) {
                const auto* part = in.find(p.tensor);
                if (!part) throw format_error(in.path() + ": tensor '" + t.name + "': part '" + p.tensor + "' is missing");
                if (p.first != covered)
                    throw format_error(in.path() + ": tensor '" + t.name + "': part '" + p.tensor + "' is out of order");
                covered += p.count;
                if (t.quantized && (static_cast<std::uint64_t>(part->meta.rows) != p.count ||
                                    static_cast<std::uint64_t>(part->meta.cols) != t.cols()))
                    throw format_error(in.path() + ": tensor '" + t.name + "': part '" + p.tensor + "' has the wrong shape");
                if (!t.quantized && static_cast<std::uint64_t>(part->meta.cols) != p.count)
                    throw format_error(in.path() + ": tensor '" + t.name + "': part '" + p.tensor + "' has the wrong size");
            }
            const std::uint64_t expected =
                t.quantized ? t.rows() : t.elements() * safetensors::dtype_size(t.type);
            if (covered != expected)
                throw format_error(in.path() + ": tensor '" + t.name + "': parts cover " + std::to_string(covered) +
                                   (t.quantized ? " rows" : " bytes") + ", expected " + std::to_string(expected));
        }
        return m;
    }
    manifest m;
    for (const auto& e : in.entries()) {
        manifest_tensor t;
        t.name = e.meta.name;
        t.type = e.meta.scalar == scalar_kind::float64 ? safetensors::dtype::F64 : safetensors::dtype::F32;
        t.shape = {static_cast<std::uint64_t>(e.meta.rows), static_cast<std::uint64_t>(e.meta.cols)};
        t.parts.push_back({e.meta.name, 0, static_cast<std::uint64_t>(e.meta.rows)});
        m.tensors.push_back(std::move(t));
    }
    return m;
}

}  // namespace grphi::cli
