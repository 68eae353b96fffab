// The cross-base suite: quantize / fake_quantize / dequantize / entropy / encode / decode for phi, 2 and
// sqrt2 on float and double, with memcpy and a naive std::log fake-quantizer (the seed's method) in the
// same run. items_per_second is weights per second; the counter `vs_memcpy` divides it by the
// weights/s of a memcpy of the same scalar type and size, so ratios survive machine changes.
// Weight matrix: Gaussian sigma 0.02, 4096x4096 (GRPHI_BENCH_SIZE=N for NxN), per channel, 16-level window.
#include <benchmark/benchmark.h>

#include <grphi/coding/entropy.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/coding/rans.hpp>

#include <algorithm>
#include <ctime>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

Eigen::Index side() {
    static const Eigen::Index n = [] {
        const char* env = std::getenv("GRPHI_BENCH_SIZE");
        const long v = env ? std::strtol(env, nullptr, 10) : 0;
        return static_cast<Eigen::Index>(v > 0 ? v : 4096);
    }();
    return n;
}

template <class T>
const grphi::row_matrix<T>& weights() {
    static const grphi::row_matrix<T> W = [] {
        std::mt19937_64 rng(42);
        std::normal_distribution<double> gauss(0.0, 0.02);
        grphi::row_matrix<T> w(side(), side());
        for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<T>(gauss(rng));
        return w;
    }();
    return W;
}

grphi::options windowed() {
    grphi::options o;
    o.levels = 16;
    return o;
}

// Processor time of this process: like Google Benchmark's CPU column, robust to other jobs on the machine.
inline double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// Weights/s of memcpy per scalar type: set by BM_memcpy, or measured on first use when it is filtered out.
template <class T>
double& memcpy_rate() {
    static double rate = 0;
    return rate;
}

template <class T>
double measure_memcpy_rate() {
    const auto& W = weights<T>();
    std::vector<T> dst(static_cast<std::size_t>(W.size()));
    const auto bytes = sizeof(T) * dst.size();
    int reps = 0;
    const double t0 = cpu_seconds();
    double seconds = 0;
    while (seconds < 0.3 || reps < 3) {
        std::memcpy(dst.data(), W.data(), bytes);
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
        ++reps;
        seconds = cpu_seconds() - t0;
    }
    return static_cast<double>(W.size()) * reps / seconds;
}

// Times the body in CPU seconds, reports weights/s and the ratio to memcpy of the same scalar type.
template <class T, class F>
void timed(benchmark::State& state, F&& body, bool is_memcpy = false) {
    const double elements = static_cast<double>(weights<T>().size());
    double seconds = 0;
    for (auto _ : state) {
        const double t0 = cpu_seconds();
        body();
        seconds += cpu_seconds() - t0;
    }
    const double rate = elements * static_cast<double>(state.iterations()) / seconds;
    state.SetItemsProcessed(static_cast<std::int64_t>(elements) * state.iterations());
    if (is_memcpy) memcpy_rate<T>() = rate;
    if (memcpy_rate<T>() == 0) memcpy_rate<T>() = measure_memcpy_rate<T>();
    state.counters["vs_memcpy"] = rate / memcpy_rate<T>();
}

// The two streams a coded log tensor carries: a ternary sign/zero symbol per weight and the exponent
// of every nonzero weight, offset to start at 0.
template <class T, class B>
struct streams {
    grphi::packed<T, B> p;
    std::vector<grphi::rans::symbol> signs, exponents;
    std::vector<std::uint8_t> coded_signs, coded_exponents;
};

template <class T, class B>
const streams<T, B>& coded() {
    static const streams<T, B> s = [] {
        streams<T, B> out;
        out.p = grphi::quantize<B>(weights<T>(), windowed());
        const int lo = *std::min_element(out.p.window_lo.begin(), out.p.window_lo.end());
        out.signs.resize(out.p.size());
        for (std::size_t i = 0; i < out.p.size(); ++i) {
            out.signs[i] = static_cast<grphi::rans::symbol>(out.p.signs[i] + 1);
            if (out.p.signs[i] != 0) out.exponents.push_back(static_cast<grphi::rans::symbol>(out.p.exponents[i] - lo));
        }
        out.coded_signs = grphi::rans::encode(out.signs);
        out.coded_exponents = grphi::rans::encode(out.exponents);
        return out;
    }();
    return s;
}

template <class T>
void BM_memcpy(benchmark::State& state) {
    const auto& W = weights<T>();
    std::vector<T> dst(static_cast<std::size_t>(W.size()));
    timed<T>(state, [&] {
        std::memcpy(dst.data(), W.data(), sizeof(T) * dst.size());
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }, true);
}

// The seed's fake-quantizer: k = round(log|w| / log b), clamped to the channel window, out = sign * b^k.
template <class T, class B>
void BM_naive_log_fake_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    grphi::row_matrix<T> out(W.rows(), W.cols());
    const T log_b = static_cast<T>(std::log(static_cast<long double>(B::value)));
    timed<T>(state, [&] {
        for (Eigen::Index r = 0; r < W.rows(); ++r) {
            T top = 0;
            for (Eigen::Index c = 0; c < W.cols(); ++c) top = std::max(top, std::abs(W(r, c)));
            const T k_hi = std::round(std::log(top) / log_b), k_lo = k_hi - 15;
            for (Eigen::Index c = 0; c < W.cols(); ++c) {
                const T w = W(r, c);
                const T k = std::min(k_hi, std::max(k_lo, std::round(std::log(std::abs(w)) / log_b)));
                out(r, c) = w == 0 ? T(0) : std::copysign(std::exp(k * log_b), w);
            }
        }
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
}

template <class T, class B>
void BM_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    const auto o = windowed();
    grphi::packed<T, B> p;
    timed<T>(state, [&] {
        grphi::quantize<B>(W, o, p);
        benchmark::DoNotOptimize(p.exponents.data());
    });
}

template <class T, class B>
void BM_fake_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    const auto o = windowed();
    grphi::row_matrix<T> out(W.rows(), W.cols());
    timed<T>(state, [&] {
        grphi::fake_quantize<B>(W, o, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
}

template <class T, class B>
void BM_dequantize(benchmark::State& state) {
    const auto& s = coded<T, B>();
    grphi::row_matrix<T> out(s.p.rows, s.p.cols);
    timed<T>(state, [&] {
        grphi::dequantize(s.p, out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
}

template <class T, class B>
void BM_entropy(benchmark::State& state) {
    const auto& s = coded<T, B>();
    timed<T>(state, [&] {
        const grphi::entropy_report r = grphi::entropy(s.p);
        benchmark::DoNotOptimize(r.bits_per_weight);
    });
    state.counters["bits_per_weight"] = grphi::entropy(s.p).bits_per_weight;
}

// Both streams of the tensor, from symbols to bytes (histogram, table, rANS).
template <class T, class B>
void BM_encode(benchmark::State& state) {
    const auto& s = coded<T, B>();
    std::vector<std::uint8_t> bytes;
    timed<T>(state, [&] {
        bytes.clear();
        grphi::rans::encode(s.signs.data(), s.signs.size(), bytes);
        grphi::rans::encode(s.exponents.data(), s.exponents.size(), bytes);
        benchmark::DoNotOptimize(bytes.data());
    });
    state.counters["coded_bits_per_weight"] =
        8.0 * static_cast<double>(s.coded_signs.size() + s.coded_exponents.size()) / static_cast<double>(s.p.size());
}

template <class T, class B>
void BM_decode(benchmark::State& state) {
    const auto& s = coded<T, B>();
    timed<T>(state, [&] {
        const auto signs = grphi::rans::decode(s.coded_signs);
        const auto exponents = grphi::rans::decode(s.coded_exponents);
        benchmark::DoNotOptimize(signs.data());
        benchmark::DoNotOptimize(exponents.data());
    });
}

template <class T>
const char* type_name() {
    return std::is_same_v<T, float> ? "float" : "double";
}

template <class T, class B>
void register_base() {
    const std::string suffix = std::string("/") + B::name + "/" + type_name<T>();
    benchmark::RegisterBenchmark(("naive_log_fake_quantize" + suffix).c_str(), BM_naive_log_fake_quantize<T, B>)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("quantize" + suffix).c_str(), BM_quantize<T, B>)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("fake_quantize" + suffix).c_str(), BM_fake_quantize<T, B>)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("dequantize" + suffix).c_str(), BM_dequantize<T, B>)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("entropy" + suffix).c_str(), BM_entropy<T, B>)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("encode" + suffix).c_str(), BM_encode<T, B>)->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("decode" + suffix).c_str(), BM_decode<T, B>)->Unit(benchmark::kMillisecond);
}

template <class T>
void register_type() {
    benchmark::RegisterBenchmark((std::string("memcpy/") + type_name<T>()).c_str(), BM_memcpy<T>)
        ->Unit(benchmark::kMillisecond);
    register_base<T, grphi::phi>();
    register_base<T, grphi::two>();
    register_base<T, grphi::sqrt2>();
}

}  // namespace

int main(int argc, char** argv) {
    register_type<float>();
    register_type<double>();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
