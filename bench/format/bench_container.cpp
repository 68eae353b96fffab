// .grphi container on a real quantized 4096x4096 float tensor (Gaussian weights, base phi): save and
// load speed against memcpy of the packed arrays, coded size against the entropy of what is stored,
// and the exponent stream alone against zstd -19 on the same symbols (one byte each).
// Arg: 0 = default options (per-channel, natural window), 1 = per-channel window of 8 levels.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>
#include <zstd.h>

#include <grphi/format/container.hpp>
#include <grphi/core/quantize.hpp>

namespace {

constexpr Eigen::Index side = 4096;
using packed_t = grphi::packed<float, grphi::phi>;

const packed_t& tensor(int which) {
    static const auto make = [](int levels) {
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W(side, side);
        std::mt19937_64 rng(4096);
        std::normal_distribution<float> gauss(0.0f, 0.02f);
        for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = gauss(rng);
        grphi::options o;
        if (levels) o.levels = levels;
        return grphi::quantize<grphi::phi>(W, o);
    };
    static const packed_t natural = make(0), windowed = make(8);
    return which == 0 ? natural : windowed;
}

// Exponents of the nonzero weights as dense symbols (exponent - lowest): what the container codes.
std::vector<grphi::rans::symbol> exponent_symbols(const packed_t& p) {
    int lowest = 32767;
    for (std::size_t i = 0; i < p.signs.size(); ++i)
        if (p.signs[i] != 0) lowest = std::min<int>(lowest, p.exponents[i]);
    std::vector<grphi::rans::symbol> s;
    s.reserve(p.signs.size());
    for (std::size_t i = 0; i < p.signs.size(); ++i)
        if (p.signs[i] != 0) s.push_back(static_cast<grphi::rans::symbol>(p.exponents[i] - lowest));
    return s;
}

long double entropy_bytes(const std::vector<grphi::rans::symbol>& s) {
    std::vector<std::uint64_t> counts(grphi::rans::max_alphabet, 0);
    for (auto v : s) ++counts[v];
    long double bits = 0;
    for (auto c : counts)
        if (c) bits -= static_cast<long double>(c) * std::log2(static_cast<long double>(c) / s.size());
    return bits / 8;
}

void BM_memcpy_packed(benchmark::State& state) {  // the bytes a packed tensor holds: int8 sign + int16 exponent
    const auto& p = tensor(static_cast<int>(state.range(0)));
    std::vector<std::int8_t> signs(p.signs.size());
    std::vector<std::int16_t> exps(p.exponents.size());
    for (auto _ : state) {
        std::memcpy(signs.data(), p.signs.data(), signs.size());
        std::memcpy(exps.data(), p.exponents.data(), exps.size() * sizeof(std::int16_t));
        benchmark::DoNotOptimize(signs.data());
        benchmark::DoNotOptimize(exps.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.size()));
}

void BM_container_serialize(benchmark::State& state) {
    const auto& p = tensor(static_cast<int>(state.range(0)));
    const std::vector<grphi::stored_tensor> set = {grphi::named("w", p)};
    std::vector<std::uint8_t> bytes;
    for (auto _ : state) {
        bytes = grphi::serialize(set);
        benchmark::DoNotOptimize(bytes.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.size()));
    // Order-0 entropy of what the container stores: a ternary sign per weight, an exponent per nonzero weight.
    const auto exps = exponent_symbols(p);
    std::vector<grphi::rans::symbol> signs(p.signs.size());
    for (std::size_t i = 0; i < signs.size(); ++i) signs[i] = static_cast<grphi::rans::symbol>(p.signs[i] + 1);
    const double n = static_cast<double>(p.size());
    const double entropy_bits = static_cast<double>(8 * (entropy_bytes(exps) + entropy_bytes(signs)));
    state.counters["coded_bits_per_weight"] = 8.0 * static_cast<double>(bytes.size()) / n;
    state.counters["entropy_bits_per_weight"] = entropy_bits / n;  // signs + stored exponents, no metadata
    state.counters["over_entropy_pct"] = 100.0 * (8.0 * static_cast<double>(bytes.size()) / entropy_bits - 1.0);
}

void BM_container_deserialize(benchmark::State& state) {
    const auto& p = tensor(static_cast<int>(state.range(0)));
    const auto bytes = grphi::serialize({grphi::named("w", p)});
    for (auto _ : state) {
        auto back = grphi::deserialize(bytes);
        benchmark::DoNotOptimize(back.data());
    }
    if (grphi::deserialize(bytes).at(0).as<float, grphi::phi>().exponents != p.exponents)
        state.SkipWithError("container round trip differs");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(p.size()));
}

void BM_exponents_rans_encode(benchmark::State& state) {
    const auto s = exponent_symbols(tensor(static_cast<int>(state.range(0))));
    std::vector<std::uint8_t> coded;
    for (auto _ : state) {
        coded = grphi::rans::encode(s);
        benchmark::DoNotOptimize(coded.data());
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
    const long double entropy = entropy_bytes(s);
    state.counters["coded_bytes"] = static_cast<double>(coded.size());
    state.counters["entropy_bytes"] = static_cast<double>(entropy);
    state.counters["over_entropy_pct"] = static_cast<double>(100 * (coded.size() / entropy - 1));
}

void BM_exponents_rans_decode(benchmark::State& state) {
    const auto s = exponent_symbols(tensor(static_cast<int>(state.range(0))));
    const auto coded = grphi::rans::encode(s);
    std::vector<grphi::rans::symbol> back;
    for (auto _ : state) {
        back = grphi::rans::decode(coded);
        benchmark::DoNotOptimize(back.data());
    }
    if (back != s) state.SkipWithError("rANS round trip differs");
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(s.size()));
}

void BM_exponents_zstd19(benchmark::State& state) {
    const auto s = exponent_symbols(tensor(static_cast<int>(state.range(0))));
    const std::vector<std::uint8_t> bytes(s.begin(), s.end());  // alphabet < 256 here
    std::vector<std::uint8_t> out(ZSTD_compressBound(bytes.size()));
    std::size_t size = 0;
    for (auto _ : state) {
        size = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), 19);
        if (ZSTD_isError(size)) state.SkipWithError(ZSTD_getErrorName(size));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
    const long double entropy = entropy_bytes(s);
    state.counters["coded_bytes"] = static_cast<double>(size);
    state.counters["entropy_bytes"] = static_cast<double>(entropy);
    state.counters["over_entropy_pct"] = static_cast<double>(100 * (size / entropy - 1));
}

}  // namespace

BENCHMARK(BM_memcpy_packed)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_container_serialize)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_container_deserialize)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exponents_rans_encode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exponents_rans_decode)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exponents_zstd19)->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kMillisecond);
