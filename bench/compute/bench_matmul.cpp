// Products on packed weights against Eigen float32, one thread, weights from memory.
// Shapes 4096x4096 and 11008x4096 (a LLaMA-7B MLP matrix); GEMV (1 column) and GEMM with 8 and 64.
// Every benchmark rotates through copies of its weights totalling >= 256 MB (huge pages), so each
// product reads its weights from memory, and reports `vs_eigen_fp32`: Eigen's time for the same
// shape and column count in the same run divided by its own (> 1: faster than Eigen).
// Run: build-bench/bench/bench_matmul --benchmark_counters_tabular=true; scripts/bench_matmul runs the
// 4096x4096 set from a -march=native and a portable build and writes the portable/native ratios.
#include <benchmark/benchmark.h>

#include <grphi/baselines/ggml_blocks.hpp>
#include <grphi/compute/code_matrix.hpp>
#include <grphi/kernels/code_matmul.hpp>
#include <grphi/kernels/ggml_gemv.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

constexpr std::size_t rotation_bytes = std::size_t(256) << 20;

// How many copies of an object of `bytes` make >= 256 MB.
std::size_t copies_for(std::size_t bytes) { return std::max<std::size_t>(2, (rotation_bytes + bytes - 1) / std::max<std::size_t>(bytes, 1)); }

// A huge-page buffer (grphi's own aligned allocation: 2 MB aligned, madvise(MADV_HUGEPAGE)).
using buffer = grphi::detail::aligned_bytes;

const grphi::row_matrix<float>& weights(Eigen::Index rows, Eigen::Index cols) {
    static std::map<std::pair<Eigen::Index, Eigen::Index>, std::unique_ptr<grphi::row_matrix<float>>> cache;
    auto& w = cache[{rows, cols}];
    if (!w) {
        w = std::make_unique<grphi::row_matrix<float>>(rows, cols);
        std::mt19937_64 rng(42);
        std::normal_distribution<float> gauss(0.0f, 0.02f);
        for (Eigen::Index i = 0; i < w->size(); ++i) w->data()[i] = gauss(rng);
    }
    return *w;
}

Eigen::MatrixXf activations(Eigen::Index cols, Eigen::Index m) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    Eigen::MatrixXf X(cols, m);
    for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = u(rng);
    return X;
}

double thread_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

struct seconds_per_product {
    double wall = 0, cpu = 0;
};

// Times body(copy index) per iteration by wall clock and by this thread's CPU time (robust when the
// machine is shared: other processes' time is not counted); returns seconds per product.
template <class F>
seconds_per_product timed(benchmark::State& state, std::size_t copies, F&& body) {
    seconds_per_product s;
    std::size_t i = 0;
    for (auto _ : state) {
        const auto t0 = std::chrono::steady_clock::now();
        const double c0 = thread_seconds();
        body(i);
        s.cpu += thread_seconds() - c0;
        s.wall += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        i = (i + 1) % copies;
    }
    s.wall /= static_cast<double>(state.iterations());
    s.cpu /= static_cast<double>(state.iterations());
    return s;
}

// Eigen float32's seconds per product for (rows, cols, m), measured by BM_eigen_fp32 (registered first).
std::map<std::tuple<Eigen::Index, Eigen::Index, Eigen::Index>, seconds_per_product>& eigen_seconds() {
    static std::map<std::tuple<Eigen::Index, Eigen::Index, Eigen::Index>, seconds_per_product> t;
    return t;
}

// Counters: vs_eigen_fp32 (wall clock), vs_eigen_fp32_cpu (thread CPU time), us_cpu, GB/s of weights.
void report(benchmark::State& state, seconds_per_product s, Eigen::Index rows, Eigen::Index cols, Eigen::Index m,
            double weight_bytes) {
    const auto it = eigen_seconds().find({rows, cols, m});
    if (it != eigen_seconds().end()) {
        state.counters["vs_eigen_fp32"] = it->second.wall / s.wall;
        state.counters["vs_eigen_fp32_cpu"] = it->second.cpu / s.cpu;
    }
    state.counters["us_cpu"] = s.cpu * 1e6;
    state.counters["GB_per_s"] = weight_bytes / s.cpu * 1e-9;
    state.counters["bits_per_weight"] = 8.0 * weight_bytes / static_cast<double>(rows * cols);
}

void BM_eigen_fp32(benchmark::State& state) {
    const Eigen::Index rows = state.range(0), cols = state.range(1), m = state.range(2);
    const auto& W = weights(rows, cols);
    const std::size_t bytes = static_cast<std::size_t>(W.size()) * sizeof(float);
    const std::size_t copies = copies_for(bytes);
    std::vector<buffer> store;
    for (std::size_t i = 0; i < copies; ++i) {
        store.emplace_back(bytes);
        std::memcpy(store.back().data(), W.data(), bytes);
    }
    const Eigen::MatrixXf X = activations(cols, m);
    Eigen::MatrixXf Y(rows, m);
    using map = Eigen::Map<const grphi::row_matrix<float>, Eigen::Aligned64>;
    const seconds_per_product s = timed(state, copies, [&](std::size_t i) {
        const map Wi(reinterpret_cast<const float*>(store[i].data()), rows, cols);
        if (m == 1)
            Y.col(0).noalias() = Wi * X.col(0);
        else
            Y.noalias() = Wi * X;
        benchmark::DoNotOptimize(Y.data());
    });
    eigen_seconds()[{rows, cols, m}] = s;
    report(state, s, rows, cols, m, static_cast<double>(bytes));
}

// Sums as many bytes as a 4-bit code matrix of this shape holds: the memory system's ceiling.
void BM_read_bandwidth(benchmark::State& state) {
    const Eigen::Index rows = state.range(0), cols = state.range(1);
    const std::size_t bytes = static_cast<std::size_t>(rows * cols / 2);
    const std::size_t copies = copies_for(bytes);
    std::vector<buffer> store;
    for (std::size_t i = 0; i < copies; ++i) {
        store.emplace_back(bytes);
        std::memset(store.back().data(), static_cast<int>(i + 1), bytes);
    }
    const seconds_per_product s = timed(state, copies, [&](std::size_t i) {
        const auto* p = reinterpret_cast<const std::uint64_t*>(store[i].data());
        std::uint64_t sum[8] = {};
        for (std::size_t k = 0; k + 8 <= bytes / 8; k += 8)
            for (int j = 0; j < 8; ++j) sum[j] += p[k + static_cast<std::size_t>(j)];
        benchmark::DoNotOptimize(sum);
    });
    report(state, s, rows, cols, 1, static_cast<double>(bytes));
}

enum base_id { phi_base, two_base, sqrt2_base };

// Per channel, or with block scales: block_size weights of a row under an exponent / fp16 / e4m3 scale.
struct code_layout {
    int block_size = 0;
    grphi::block_scale format = grphi::block_scale::exponent;
};

template <class B>
grphi::code_matrix<float, B> codes_for(Eigen::Index rows, Eigen::Index cols, int bits, code_layout layout) {
    grphi::options o;
    // 4-bit: 7 levels, so rows with an exact zero fit too (16M float Gaussians hold a few zeros).
    if (bits == 4) o.levels = 7;
    if (layout.block_size > 0) {
        o.levels = 7;
        o.block_size = layout.block_size;
        o.block_format = layout.format;
    }
    const auto p = grphi::quantize<B>(weights(rows, cols), o);
    return grphi::code_matrix<float, B>(p, bits);
}

template <class B>
void run_codes(benchmark::State& state, int bits, grphi::level_product mode, grphi::kernels::isa cap,
               code_layout layout = {}) {
    const Eigen::Index rows = state.range(0), cols = state.range(1), m = state.range(2);
    grphi::kernels::scoped_isa_limit limit(cap);
    const auto first = codes_for<B>(rows, cols, bits, layout);
    const std::size_t copies = copies_for(first.weight_bytes());
    std::vector<grphi::code_matrix<float, B>> store(copies, first);
    const Eigen::MatrixXf X = activations(cols, m);
    Eigen::VectorXf y(rows);
    Eigen::MatrixXf Y(rows, m);
    const seconds_per_product s = timed(state, copies, [&](std::size_t i) {
        if (m == 1) {
            grphi::gemv(store[i], X.col(0), y, mode);
            benchmark::DoNotOptimize(y.data());
        } else {
            grphi::gemm(store[i], X, Y, mode);
            benchmark::DoNotOptimize(Y.data());
        }
    });
    state.SetLabel(std::string(grphi::kernels::isa_name(grphi::kernels::active_isa())));
    report(state, s, rows, cols, m, static_cast<double>(first.weight_bytes()));
}

template <class B, int Bits>
void BM_codes(benchmark::State& state) {
    run_codes<B>(state, Bits, grphi::level_product::multiply, grphi::kernels::isa::avx512);
}
template <class B, int Bits>
void BM_codes_avx2(benchmark::State& state) {
    run_codes<B>(state, Bits, grphi::level_product::multiply, grphi::kernels::isa::avx2);
}
void BM_two_exponent_add(benchmark::State& state) {
    run_codes<grphi::two>(state, 4, grphi::level_product::exponent_add, grphi::kernels::isa::avx512);
}

// φ 4-bit codes with a scale per 32 weights of a row: exponent (the base's own E8M0) or fp16 numbers.
void BM_codes_block32_exponent(benchmark::State& state) {
    run_codes<grphi::phi>(state, 4, grphi::level_product::multiply, grphi::kernels::isa::avx512,
                          {32, grphi::block_scale::exponent});
}
void BM_codes_block32_fp16(benchmark::State& state) {
    run_codes<grphi::phi>(state, 4, grphi::level_product::multiply, grphi::kernels::isa::avx512,
                          {32, grphi::block_scale::fp16});
}

template <class Matrix, class Quantize>
void run_ggml(benchmark::State& state, Quantize quantize) {
    using block = typename decltype(Matrix::blocks)::value_type;
    const Eigen::Index rows = state.range(0), cols = state.range(1);
    const Matrix first = quantize(weights(rows, cols));
    const std::size_t bytes = first.blocks.size() * sizeof(block);
    const std::size_t copies = copies_for(bytes);
    std::vector<buffer> store;
    for (std::size_t i = 0; i < copies; ++i) {
        store.emplace_back(bytes);
        std::memcpy(store.back().data(), first.blocks.data(), bytes);
    }
    const Eigen::VectorXf x = activations(cols, 1);
    std::vector<float> y(static_cast<std::size_t>(rows));
    std::vector<grphi::baselines::block_q8_0> xq;
    const seconds_per_product s = timed(state, copies, [&](std::size_t i) {
        grphi::kernels::ggml_gemv(reinterpret_cast<const block*>(store[i].data()), first.rows, first.cols, x.data(), y.data(), xq);
        benchmark::DoNotOptimize(y.data());
    });
    report(state, s, rows, cols, 1, static_cast<double>(bytes));
}
void BM_q4_0(benchmark::State& state) {
    run_ggml<grphi::baselines::q4_0_matrix>(state, [](const auto& W) { return grphi::baselines::quantize_q4_0(W); });
}
void BM_q8_0(benchmark::State& state) {
    run_ggml<grphi::baselines::q8_0_matrix>(state, [](const auto& W) { return grphi::baselines::quantize_q8_0(W); });
}

void shapes(benchmark::internal::Benchmark* b, std::initializer_list<long> columns) {
    for (long rows : {4096L, 11008L})
        for (long m : columns) b->Args({rows, 4096, m});
    b->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(0.3);
}
void all_columns(benchmark::internal::Benchmark* b) { shapes(b, {1, 8, 64}); }
void gemv_only(benchmark::internal::Benchmark* b) { shapes(b, {1}); }

}  // namespace

// Eigen first: every other benchmark divides by its time.
BENCHMARK(BM_eigen_fp32)->Apply(all_columns);
BENCHMARK(BM_read_bandwidth)->Apply(gemv_only);
BENCHMARK_TEMPLATE(BM_codes, grphi::phi, 4)->Apply(all_columns);
BENCHMARK_TEMPLATE(BM_codes, grphi::two, 4)->Apply(all_columns);
BENCHMARK_TEMPLATE(BM_codes, grphi::sqrt2, 4)->Apply(all_columns);
BENCHMARK_TEMPLATE(BM_codes, grphi::phi, 8)->Apply(all_columns);
BENCHMARK_TEMPLATE(BM_codes, grphi::two, 8)->Apply(all_columns);
BENCHMARK_TEMPLATE(BM_codes, grphi::sqrt2, 8)->Apply(all_columns);
BENCHMARK(BM_two_exponent_add)->Apply(gemv_only);
BENCHMARK(BM_codes_block32_exponent)->Apply(gemv_only);
BENCHMARK(BM_codes_block32_fp16)->Apply(gemv_only);
BENCHMARK_TEMPLATE(BM_codes_avx2, grphi::phi, 4)->Apply(gemv_only);
BENCHMARK(BM_q4_0)->Apply(gemv_only);
BENCHMARK(BM_q8_0)->Apply(gemv_only);

int main(int argc, char** argv) {
#if defined(_OPENMP)
    omp_set_num_threads(1);  // one thread: the figures are per core
#endif
    Eigen::setNbThreads(1);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
