// The core's hot paths on a 4096x4096 weight, single thread, against memcpy of the same buffer and
// a naive std::log/std::exp fake-quantizer (the seed's method) in the same run.
// Counters `vs_memcpy` (wall clock) and `vs_memcpy_cpu` (thread CPU time) = this benchmark's elements/s divided by
// the elements/s of memcpy<T> of the same buffer (same scalar type) in the same run.
#include <benchmark/benchmark.h>

#include <grphi/grphi.hpp>

#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

namespace {

constexpr Eigen::Index rows = 4096, cols = 4096;
// memcpy's elements/s of the same buffer, per scalar type (index 0 float, 1 double): by wall clock and by
// thread CPU time; set by the memcpy benchmarks, which run first.
double memcpy_rate[2] = {0, 0};
double memcpy_cpu_rate[2] = {0, 0};

// A rows x cols matrix on huge pages (2 MB aligned, madvise(MADV_HUGEPAGE), touched once): with 4 KB
// pages the 128 MB double outputs measured 2-8x apart from run to run on these VMs.
template <class T>
struct huge_matrix {
    grphi::detail::aligned_bytes bytes{sizeof(T) * static_cast<std::size_t>(rows * cols)};
    Eigen::Map<grphi::row_matrix<T>> map{reinterpret_cast<T*>(bytes.data()), rows, cols};
};

template <class T>
const Eigen::Map<grphi::row_matrix<T>>& weights() {
    static huge_matrix<T> W = [] {
        std::mt19937_64 rng(42);
        std::normal_distribution<double> gauss(0.0, 0.02);
        huge_matrix<T> w;
        for (Eigen::Index i = 0; i < w.map.size(); ++i) w.map.data()[i] = static_cast<T>(gauss(rng));
        return w;
    }();
    return W.map;
}

grphi::options windowed() {
    grphi::options o;  // per-channel with a 16-exponent window
    o.levels = 16;
    return o;
}

double thread_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Times the loop body by wall clock and by this thread's CPU time, so that the ratios to memcpy can be
// reported as counters: vs_memcpy (wall) and vs_memcpy_cpu (CPU time: robust on a shared, loaded machine).
template <class T, class F>
void timed(benchmark::State& state, double elements, F&& body, bool is_baseline = false) {
    const int type = std::is_same_v<T, float> ? 0 : 1;
    double seconds = 0, cpu_seconds = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = thread_seconds();
        body();
        cpu_seconds += thread_seconds() - c0;
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const double rate = elements * static_cast<double>(state.iterations()) / seconds;
    const double cpu_rate = elements * static_cast<double>(state.iterations()) / cpu_seconds;
    state.SetItemsProcessed(static_cast<int64_t>(elements) * state.iterations());
    if (is_baseline) {
        memcpy_rate[type] = rate;
        memcpy_cpu_rate[type] = cpu_rate;
    }
    if (memcpy_rate[type] > 0) state.counters["vs_memcpy"] = rate / memcpy_rate[type];
    if (memcpy_cpu_rate[type] > 0) state.counters["vs_memcpy_cpu"] = cpu_rate / memcpy_cpu_rate[type];
}

template <class T>
void BM_memcpy(benchmark::State& state) {
    const auto& W = weights<T>();
    huge_matrix<T> dst;
    timed<T>(state, double(W.size()), [&] {
        std::memcpy(dst.map.data(), W.data(), sizeof(T) * static_cast<std::size_t>(W.size()));
        benchmark::DoNotOptimize(dst.map.data());
        benchmark::ClobberMemory();
    }, true);
}

template <class T, class B>
void BM_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    const auto o = windowed();
    grphi::packed<T, B> p;  // reused: the steady state of a training or export loop
    grphi::quantize<B>(W, o, p);  // untimed: the first call's page faults are not the steady state
    timed<T>(state, double(W.size()), [&] {
        grphi::quantize<B>(W, o, p);
        benchmark::DoNotOptimize(p.exponents.data());
    });
}

// Block scales (8 levels, state.range(0) weights per block, state.range(1): 0 exponent, 1 fp16) against
// the per-channel quantize above in the same run: compare their items/s.
template <class T, class B>
void BM_quantize_blocks(benchmark::State& state) {
    const auto& W = weights<T>();
    grphi::options o;
    o.levels = 8;
    o.block_size = static_cast<int>(state.range(0));
    o.block_format = state.range(1) == 0 ? grphi::block_scale::exponent : grphi::block_scale::fp16;
    grphi::packed<T, B> p;
    grphi::quantize<B>(W, o, p);  // untimed, as in BM_quantize
    timed<T>(state, double(W.size()), [&] {
        grphi::quantize<B>(W, o, p);
        benchmark::DoNotOptimize(p.exponents.data());
    });
}

template <class T, class B>
void BM_quantize_allocating(benchmark::State& state) {
    const auto& W = weights<T>();
    const auto o = windowed();
    timed<T>(state, double(W.size()), [&] {
        auto p = grphi::quantize<B>(W, o);
        benchmark::DoNotOptimize(p.exponents.data());
    });
}

template <class T, class B>
void BM_fake_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    const auto o = windowed();
    huge_matrix<T> huge_out;
    auto& out = huge_out.map;
    timed<T>(state, double(W.size()), [&] {
        grphi::fake_quantize<B>(W, o, out);
        benchmark::DoNotOptimize(out.data());
    });
}

template <class T, class B>
void BM_dequantize(benchmark::State& state) {
    const auto p = grphi::quantize<B>(weights<T>(), windowed());
    huge_matrix<T> huge_out;
    auto& out = huge_out.map;
    timed<T>(state, double(p.size()), [&] {
        grphi::dequantize(p, out);
        benchmark::DoNotOptimize(out.data());
    });
}

template <class T, class B>
void BM_entropy(benchmark::State& state) {
    const auto p = grphi::quantize<B>(weights<T>(), windowed());
    timed<T>(state, double(p.size()), [&] {
        auto rep = grphi::entropy(p);
        benchmark::DoNotOptimize(rep.bits_per_weight);
    });
}

// The seed's method in C++: e = round(log(|w|) / log b), per-channel window by max, w = sign * exp(e log b).
template <class T, class B>
void BM_naive_log_fake_quantize(benchmark::State& state) {
    const auto& W = weights<T>();
    huge_matrix<T> huge_out;
    auto& out = huge_out.map;
    const T lb = static_cast<T>(std::log(static_cast<long double>(B::value)));
    timed<T>(state, double(W.size()), [&] {
        for (Eigen::Index r = 0; r < rows; ++r) {
            const T top = std::round(std::log(W.row(r).cwiseAbs().maxCoeff()) / lb);
            for (Eigen::Index c = 0; c < cols; ++c) {
                const T w = W(r, c);
                T e = std::round(std::log(std::fabs(w) + T(1e-12)) / lb);
                e = std::min(std::max(e, top - 15), top);
                out(r, c) = w == 0 ? T(0) : std::copysign(std::exp(e * lb), w);
            }
        }
        benchmark::DoNotOptimize(out.data());
    });
}

}  // namespace

BENCHMARK(BM_memcpy<float>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_memcpy<double>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize<float, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize<double, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize<double, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize_blocks<float, grphi::phi>)->Args({32, 0})->Args({16, 0})->Args({128, 0})->Args({32, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize_blocks<double, grphi::phi>)->Args({32, 0})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize_allocating<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_fake_quantize<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_fake_quantize<float, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_fake_quantize<double, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_fake_quantize<double, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dequantize<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dequantize<float, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dequantize<double, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_dequantize<double, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_entropy<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_entropy<float, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_entropy<double, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_entropy<double, grphi::two>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_naive_log_fake_quantize<float, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_naive_log_fake_quantize<double, grphi::phi>)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
