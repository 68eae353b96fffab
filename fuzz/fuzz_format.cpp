// libFuzzer target: grphi::file_reader on arbitrary bytes as a format-2 (or format-1) file: index
// parsing, every part of every quantized tensor, dequantize by the file's base, raw views, verify().
// Each must either throw (format_error, or invalid_argument for a request the file cannot serve) or
// give results consistent with the index. Small limits keep every input fast and bounded.
// Seed corpus: fuzz/corpus/format/ (fuzz/make_corpus.cpp); see docs/format.md.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include <grphi/format/file_reader.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    grphi::reader_limits limits;
    limits.max_elements = std::uint64_t{1} << 18;
    limits.max_part_elements = std::uint64_t{1} << 16;
    limits.max_tensors = 64;
    limits.max_metadata_bytes = 1 << 16;
    limits.max_index_bytes = 1 << 20;
    limits.check_checksums = false;  // mutations reach the parsers behind the CRCs
    try {
        const grphi::file_reader in(data, size, "fuzz input", limits);
        try {
            in.verify();
        } catch (const grphi::format_error&) {
        }
        for (const auto& t : in.tensors()) {
            if (t.kind == grphi::tensor_kind::raw) {
                const grphi::raw_view v = in.raw(t.name);
                if (v.size != v.elements() * grphi::dtype_size(v.type)) std::abort();
                if (v.data < data || v.data + v.size > data + size) std::abort();
                continue;
            }
            try {
                for (std::size_t i = 0; i < t.sections.size(); ++i) {
                    const grphi::stored_tensor p = in.read_part_stored(t, i);
                    if (p.rows != t.sections[i].rows || p.signs.size() != p.size()) std::abort();
                }
                Eigen::MatrixXf out;
                in.dequantize(t.name, out);
                if (out.rows() != t.rows() || out.cols() != t.cols()) std::abort();
            } catch (const grphi::format_error&) {
            } catch (const std::invalid_argument&) {  // a user base's name, or a window outside the base's range
            }
        }
    } catch (const grphi::format_error&) {
    }
    return 0;
}
