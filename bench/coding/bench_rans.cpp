// rANS coder speed and size on 16M exponent-like symbols, against memcpy of the same bytes (speed
// baseline) and zstd -19 of the same symbols as one byte each (size baseline), all in one run.
// Counters: coded_bytes, entropy_bytes (empirical order-0 entropy, long double), over_entropy_pct.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <zstd.h>

#include <grphi/coding/rans.hpp>

namespace {

using grphi::rans::symbol;

constexpr std::size_t symbol_count = std::size_t{16} << 20;

// A discretised two-sided Laplacian over 16 symbols (centre 8): what per-channel exponents look like.
const std::vector<symbol>& exponent_like_symbols() {
    static const std::vector<symbol> symbols = [] {
        std::vector<symbol> s(symbol_count);
        std::mt19937_64 rng(20261127);
        std::geometric_distribution<int> distance(0.45);
        std::bernoulli_distribution upper(0.5);
        for (auto& v : s) {
            const int k = std::min(distance(rng), 7);
            v = static_cast<symbol>(upper(rng) ? 8 + k : 7 - k);
        }
        return s;
    }();
    return symbols;
}

long double entropy_bytes(const std::vector<symbol>& s) {
    std::vector<std::uint64_t> counts(grphi::rans::max_alphabet, 0);
    for (symbol v : s) ++counts[v];
    long double bits = 0;
    for (std::uint64_t c : counts)
        if (c) bits -= static_cast<long double>(c) * std::log2(static_cast<long double>(c) / s.size());
    return bits / 8;
}

void size_counters(benchmark::State& state, std::size_t coded) {
    const long double entropy = entropy_bytes(exponent_like_symbols());
    state.counters["coded_bytes"] = static_cast<double>(coded);
    state.counters["entropy_bytes"] = static_cast<double>(entropy);
    state.counters["over_entropy_pct"] = static_cast<double>(100 * (coded / entropy - 1));
}

void BM_memcpy_symbols(benchmark::State& state) {
    const auto& s = exponent_like_symbols();
    std::vector<symbol> copy(s.size());
    for (auto _ : state) {
        std::memcpy(copy.data(), s.data(), s.size() * sizeof(symbol));
        benchmark::DoNotOptimize(copy.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
}

void BM_rans_encode(benchmark::State& state) {  // prebuilt table: the coding loop alone
    const auto& s = exponent_like_symbols();
    const auto counts = grphi::rans::histogram(s);
    const auto table = grphi::rans::normalize(counts, grphi::rans::choose_scale_bits(counts));
    const auto enc = grphi::rans::build_encoder(table);
    const auto lanes = static_cast<unsigned>(state.range(0));
    std::vector<std::uint8_t> out;
    for (auto _ : state) {
        out.clear();
        grphi::rans::encode_symbols(enc, s.data(), s.size(), lanes, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
    size_counters(state, out.size() + grphi::rans::table_bytes(table));
    state.counters["scale_bits"] = table.scale_bits;
}

void BM_rans_decode(benchmark::State& state) {
    const auto& s = exponent_like_symbols();
    const auto counts = grphi::rans::histogram(s);
    const auto table = grphi::rans::normalize(counts, grphi::rans::choose_scale_bits(counts));
    std::vector<std::uint8_t> payload;
    grphi::rans::encode_symbols(grphi::rans::build_encoder(table), s.data(), s.size(),
                                static_cast<unsigned>(state.range(0)), payload);
    const auto dec = grphi::rans::build_decoder(table);
    std::vector<symbol> out(s.size());
    for (auto _ : state) {
        grphi::rans::byte_reader in(payload.data(), payload.size());
        grphi::rans::decode_symbols(dec, in, payload.size(), out.data(), out.size());
        benchmark::DoNotOptimize(out.data());
    }
    if (out != s) state.SkipWithError("rANS round trip differs");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
}

void BM_rans_encode_one_call(benchmark::State& state) {  // histogram + normalise + table + code
    const auto& s = exponent_like_symbols();
    std::vector<std::uint8_t> out;
    for (auto _ : state) {
        out = grphi::rans::encode(s);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
    size_counters(state, out.size());
}

void BM_rans_decode_one_call(benchmark::State& state) {
    const auto& s = exponent_like_symbols();
    const auto coded = grphi::rans::encode(s);
    std::vector<symbol> out;
    for (auto _ : state) {
        out = grphi::rans::decode(coded);
        benchmark::DoNotOptimize(out.data());
    }
    if (out != s) state.SkipWithError("rANS round trip differs");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
}

// 16M symbols of a small alphabet: 3 (sign-like: -1 and +1 about equally, 1 % zeros) or 8 (geometric, the
// offsets below an 8-level window's top).
std::vector<symbol> small_alphabet_symbols(int alphabet) {
    std::vector<symbol> s(symbol_count);
    std::mt19937_64 rng(20261204);
    if (alphabet == 3) {
        std::discrete_distribution<int> sign({49.5, 1.0, 49.5});
        for (auto& v : s) v = static_cast<symbol>(sign(rng));
    } else {
        std::geometric_distribution<int> offset(0.45);
        for (auto& v : s) v = static_cast<symbol>(std::min(offset(rng), alphabet - 1));
    }
    return s;
}

// Decoding a small alphabet, 32 lanes: range(1) = 0 lets the AVX-512 comparison decoder run (where the
// CPU has it), 1 caps it to the AVX2 gathers: the two in one run.
void BM_rans_decode_small_alphabet(benchmark::State& state) {
    const auto s = small_alphabet_symbols(static_cast<int>(state.range(0)));
    const auto counts = grphi::rans::histogram(s);
    const auto table = grphi::rans::normalize(counts, grphi::rans::choose_scale_bits(counts));
    std::vector<std::uint8_t> payload;
    grphi::rans::encode_symbols(grphi::rans::build_encoder(table), s.data(), s.size(), 5, payload);
    const auto dec = grphi::rans::build_decoder(table);
    std::vector<symbol> out(s.size());
    grphi::rans::detail::avx512_paths_allowed() = state.range(1) == 0;
    for (auto _ : state) {
        grphi::rans::byte_reader in(payload.data(), payload.size());
        grphi::rans::decode_symbols(dec, in, payload.size(), out.data(), out.size());
        benchmark::DoNotOptimize(out.data());
    }
    grphi::rans::detail::avx512_paths_allowed() = true;
    if (out != s) state.SkipWithError("rANS round trip differs");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
    state.counters["scale_bits"] = table.scale_bits;
}

// zstd sees each symbol as one byte (alphabet < 256), the densest plain byte stream of the same data.
const std::vector<std::uint8_t>& symbol_bytes() {
    static const std::vector<std::uint8_t> bytes = [] {
        const auto& s = exponent_like_symbols();
        return std::vector<std::uint8_t>(s.begin(), s.end());
    }();
    return bytes;
}

void BM_zstd19_compress(benchmark::State& state) {
    const auto& in = symbol_bytes();
    std::vector<std::uint8_t> out(ZSTD_compressBound(in.size()));
    std::size_t size = 0;
    for (auto _ : state) {
        size = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 19);
        if (ZSTD_isError(size)) state.SkipWithError(ZSTD_getErrorName(size));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
    size_counters(state, size);
}

void BM_zstd19_decompress(benchmark::State& state) {
    const auto& in = symbol_bytes();
    std::vector<std::uint8_t> coded(ZSTD_compressBound(in.size()));
    coded.resize(ZSTD_compress(coded.data(), coded.size(), in.data(), in.size(), 19));
    std::vector<std::uint8_t> out(in.size());
    for (auto _ : state) {
        const std::size_t size = ZSTD_decompress(out.data(), out.size(), coded.data(), coded.size());
        if (ZSTD_isError(size) || size != in.size()) state.SkipWithError("zstd round trip failed");
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
}

}  // namespace

BENCHMARK(BM_memcpy_symbols)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rans_encode)->ArgName("lanes_log2")->Arg(3)->Arg(4)->Arg(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rans_decode)->ArgName("lanes_log2")->Arg(3)->Arg(4)->Arg(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rans_decode_small_alphabet)->ArgNames({"alphabet", "avx2_only"})->Args({3, 0})->Args({3, 1})->Args({8, 0})->Args({8, 1})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rans_encode_one_call)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_rans_decode_one_call)->Unit(benchmark::kMillisecond);
// zstd -19 is slow (about 1 MB/s): one iteration is enough for its size and speed.
BENCHMARK(BM_zstd19_compress)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_zstd19_decompress)->Unit(benchmark::kMillisecond);
