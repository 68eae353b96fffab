// libFuzzer target: grphi::npy::parse_header on arbitrary bytes (magic, version, header length, the
// Python-literal dict: descr, fortran_order, shape), then a bounded conversion of the data it accepts.
// It must throw grphi::format_error and never read outside the input.
// Seed corpus: fuzz/corpus/npy/ (fuzz/make_corpus.cpp).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <vector>

#include <grphi/io/npy.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto* bytes = reinterpret_cast<const std::byte*>(data);
        const grphi::npy::array_info info = grphi::npy::parse_header(bytes, size, "fuzz input");
        if (info.data_offset > size) std::abort();
        const std::size_t width = info.item_size();
        const std::uint64_t available = width ? (size - info.data_offset) / width : 0;
        const std::uint64_t n = std::min<std::uint64_t>({info.elements(), available, 4096});
        std::vector<double> out(static_cast<std::size_t>(n));
        grphi::safetensors::convert_to(info.type, bytes + info.data_offset, static_cast<std::size_t>(n), out.data());
    } catch (const grphi::format_error&) {
    } catch (const std::invalid_argument&) {  // convert_to refuses integer and bool dtypes by design
    }
    return 0;
}
