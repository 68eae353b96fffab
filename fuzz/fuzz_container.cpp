// libFuzzer target: grphi::deserialize (what load() runs) on arbitrary bytes, seeded with format-1 files.
// It must either throw grphi::format_error or return tensors that re-serialize (as format 2) and load
// back unchanged. Seed corpus: fuzz/corpus/container/ (format-1 files written by
// fuzz/make_container_corpus.cpp before format 2; rerunning it now writes format 2); see docs/format.md.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include <grphi/format/container.hpp>

namespace {

template <class T, class Base>
void try_as(const grphi::stored_tensor& t) {
    if (!t.holds<T, Base>()) return;
    try {
        const auto p = t.as<T, Base>();
        if (p.signs.size() != t.signs.size()) std::abort();
    } catch (const grphi::format_error&) {  // e.g. a window outside the base's natural range
    }
}

bool same(const grphi::stored_tensor& a, const grphi::stored_tensor& b) {
    return a.name == b.name && a.scalar == b.scalar && a.base_name == b.base_name && a.base_value == b.base_value &&
           a.rows == b.rows && a.cols == b.cols && a.signs == b.signs && a.exponents == b.exponents &&
           a.window_lo == b.window_lo && a.window_hi == b.window_hi && a.scale_steps == b.scale_steps &&
           a.block_top == b.block_top && a.block_steps == b.block_steps && a.block_scales == b.block_scales;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<grphi::stored_tensor> tensors;
    try {
        // A small weight cap keeps forged all-zero giants from exhausting the fuzzer's memory; checksums
        // off so mutations reach the parsers (with them on, nearly every mutation stops at a CRC).
        grphi::load_options settings;
        settings.max_weights = std::uint64_t{1} << 20;
        settings.verify_checksums = false;
        tensors = grphi::deserialize(data, size, "fuzz input", settings);
    } catch (const grphi::format_error&) {
        return 0;
    }
    for (const auto& t : tensors) {
        try_as<float, grphi::phi>(t);
        try_as<double, grphi::phi>(t);
        try_as<float, grphi::two>(t);
        try_as<double, grphi::two>(t);
        try_as<float, grphi::sqrt2>(t);
        try_as<double, grphi::sqrt2>(t);
    }
    // Whatever load accepts, save must accept (one record rule, format::detail::validate_record, and the
    // section checks mirrored in check_storable), and the result must load back to the same tensors: an
    // exception here (std::invalid_argument from the writer) aborts the fuzzer.
    std::vector<std::uint8_t> bytes;
    try {
        bytes = grphi::serialize(tensors);
    } catch (const std::invalid_argument&) {
        std::abort();  // the reader accepted what the writer refuses
    }
    const auto again = grphi::deserialize(bytes);
    if (again.size() != tensors.size()) std::abort();
    for (std::size_t i = 0; i < again.size(); ++i)
        if (!same(again[i], tensors[i])) std::abort();
    return 0;
}
