// libFuzzer target: grphi::rans::decode on arbitrary bytes (frequency tables, lane counts, payloads).
// It must throw grphi::format_error or return at most the allowed number of symbols, and a decoded
// stream must re-encode and decode to the same symbols.
// Seed corpus: fuzz/corpus/rans/ (fuzz/make_corpus.cpp).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <grphi/coding/rans.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    constexpr std::size_t max_symbols = std::size_t{1} << 16;  // bounds every allocation
    std::vector<grphi::rans::symbol> symbols;
    try {
        grphi::rans::byte_reader in(data, size, "fuzz input");
        symbols = grphi::rans::decode(in, max_symbols);
    } catch (const grphi::format_error&) {
        return 0;
    }
    if (symbols.size() > max_symbols) std::abort();
    for (auto s : symbols)
        if (s >= grphi::rans::max_alphabet) std::abort();
    if (grphi::rans::decode(grphi::rans::encode(symbols), max_symbols) != symbols) std::abort();
    return 0;
}
