// The `.grphi` container, in one call: save/serialize write a format-2 file of named quantized tensors
// (format/file_writer.hpp), load/deserialize read format 2 or format 1 back (format/file_reader.hpp).
// packed tensor -> stored_tensor -> bytes -> stored_tensor -> packed. Byte layout: docs/format.md.
// Every size, count, offset, table and checksum is validated before use; a bad file throws
// grphi::format_error naming the file, tensor and field. For raw tensors, N-D shapes, metadata, row
// ranges and lazy access use file_writer / file_reader directly.
#pragma once

#include <cstdint>
#include <istream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "file_reader.hpp"
#include "file_writer.hpp"
#include "format1.hpp"
#include "section_codec.hpp"
#include "stored_tensor.hpp"
#include "../core/packed.hpp"

namespace grphi {

struct load_options {
    // A tiny file can legitimately describe a huge all-zero tensor, so the number of weights a load
    // may allocate is capped (summed over the file's tensors, plus one per row); raise it for really large models.
    std::uint64_t max_weights = std::uint64_t{1} << 32;
    // Off only for fuzzing, so mutated inputs reach the parsers behind the checksums.
    bool verify_checksums = true;

    reader_limits limits() const {
        reader_limits l;
        l.max_elements = max_weights;
        l.max_part_elements = max_weights;
        l.check_checksums = verify_checksums;
        return l;
    }
};

// Encodes the tensors as a format-2 file image (rows split into parts of about 2^20 weights).
inline std::vector<std::uint8_t> serialize(const std::vector<stored_tensor>& tensors) {
    std::vector<std::uint8_t> bytes;
    file_writer out(bytes);
    for (const auto& t : tensors) out.add(t);
    out.finish();
    return bytes;
}

// Decodes every quantized tensor of a whole file image (format 2 or 1; raw tensors are skipped: see
// file_reader::raw); `file` names it in error messages. Checks all checksums and padding first.
inline std::vector<stored_tensor> deserialize(const std::uint8_t* data, std::size_t size, const std::string& file = "grphi",
                                              const load_options& settings = {}) {
    const file_reader in(data, size, file, settings.limits());
    if (settings.verify_checksums) in.verify();
    std::vector<stored_tensor> tensors;
    for (const auto& t : in.tensors())
        if (t.kind == tensor_kind::quantized) tensors.push_back(in.read_stored(t));
    return tensors;
}

inline std::vector<stored_tensor> deserialize(const std::vector<std::uint8_t>& bytes, const std::string& file = "grphi",
                                              const load_options& settings = {}) {
    return deserialize(bytes.data(), bytes.size(), file, settings);
}

// ---------------------------------------------------------------------------------------------
// Files and streams. save(path) writes a temporary beside the target and renames it into place:
// a failed save leaves no partial file and the old file (if any) untouched.
inline void save(const std::string& path, const std::vector<stored_tensor>& tensors) {
    file_writer out(path);
    for (const auto& t : tensors) out.add(t);
    out.finish();
}

inline void save(std::ostream& stream, const std::vector<stored_tensor>& tensors) {
    const std::vector<std::uint8_t> bytes = serialize(tensors);
    stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    stream.flush();
    if (!stream) throw io_error("grphi::save: cannot write to the stream");
}

inline std::vector<stored_tensor> load(const std::string& path, const load_options& settings = {}) {
    const mapped_file file(path);
    return deserialize(reinterpret_cast<const std::uint8_t*>(file.data()), file.size(), path, settings);
}

inline std::vector<stored_tensor> load(std::istream& stream, const load_options& settings = {}) {
    const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
    if (stream.bad()) throw io_error("grphi::load: cannot read from the stream");
    return deserialize(bytes.data(), bytes.size(), "grphi stream", settings);
}

// Coded size of one tensor as format 2 stores it (index record + sections), in bits per weight.
template <class T, class Base>
double coded_bits_per_weight(const packed<T, Base>& p, const std::string& name = "") {
    std::vector<std::uint8_t> bytes;
    file_writer out(bytes);
    out.add(name, p);
    const tensor_info& t = out.tensors().back();
    std::vector<std::uint8_t> record;
    format::detail::write_record(t, record);
    const double n = static_cast<double>(p.size());
    return n == 0 ? 0.0 : 8.0 * static_cast<double>(record.size() + t.stored_bytes()) / n;
}

}  // namespace grphi
