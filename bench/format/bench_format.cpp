// .grphi format 2 on a 4096x4096 float tensor (Gaussian weights, base phi), in parts of 2^20 weights:
// quantize, write (encode the parts + append, into memory), and read back (dequantize straight into a
// reused output), each with 1 and 2 OpenMP threads (Arg), against memcpy of the float matrix in the
// same run. Rates are weights per second (items); wall time (UseRealTime), since the work is parallel.
// Targets (issue 10): dequantize >= quantize rate; 2 threads >= 1.7x one.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <sys/mman.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <benchmark/benchmark.h>

#include <grphi/format/file_reader.hpp>
#include <grphi/format/file_writer.hpp>
#include <grphi/core/quantize.hpp>

namespace {

constexpr Eigen::Index side = 4096;
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using map = Eigen::Map<matrix>;

// A reused buffer backed by huge pages (fresh allocations page-fault slowly on this machine).
float* huge_buffer(int which) {
    static float* buffers[3] = {};
    if (!buffers[which]) {
        const std::size_t bytes = sizeof(float) * side * side;
        void* p = std::aligned_alloc(std::size_t{2} << 20, bytes);
        ::madvise(p, bytes, MADV_HUGEPAGE);
        std::memset(p, 0, bytes);
        buffers[which] = static_cast<float*>(p);
    }
    return buffers[which];
}

const map& weights() {
    static const map W = [] {
        map m(huge_buffer(0), side, side);
        std::mt19937_64 rng(4096);
        std::normal_distribution<float> gauss(0.0f, 0.02f);
        for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = gauss(rng);
        return m;
    }();
    return W;
}

const grphi::packed<float, grphi::phi>& packed_weights() {
    static const auto p = grphi::quantize<grphi::phi>(weights());
    return p;
}

const std::vector<std::uint8_t>& file_image() {
    static const std::vector<std::uint8_t> bytes = [] {
        std::vector<std::uint8_t> b;
        grphi::file_writer out(b);
        out.add("w", packed_weights());
        out.finish();
        return b;
    }();
    return bytes;
}

void set_threads(const benchmark::State& state) {
#if defined(_OPENMP)
    omp_set_num_threads(static_cast<int>(state.range(0)));
#else
    (void)state;
#endif
}

void weights_per_second(benchmark::State& state) {
    state.SetItemsProcessed(state.iterations() * side * side);
    state.SetBytesProcessed(state.iterations() * side * side * static_cast<std::int64_t>(sizeof(float)));
}

void BM_memcpy_floats(benchmark::State& state) {
    const map& W = weights();
    float* out = huge_buffer(1);
    for (auto _ : state) {
        std::memcpy(out, W.data(), sizeof(float) * static_cast<std::size_t>(W.size()));
        benchmark::DoNotOptimize(out);
        benchmark::ClobberMemory();
    }
    weights_per_second(state);
}

void BM_quantize(benchmark::State& state) {
    set_threads(state);
    const map& W = weights();
    grphi::packed<float, grphi::phi> p;
    for (auto _ : state) {
        grphi::quantize<grphi::phi>(W, grphi::options{}, p);
        benchmark::DoNotOptimize(p.signs.data());
    }
    weights_per_second(state);
}

void BM_format_write(benchmark::State& state) {
    set_threads(state);
    const auto& p = packed_weights();
    std::vector<std::uint8_t> bytes;
    bytes.reserve(file_image().size() + (1 << 20));
    for (auto _ : state) {
        grphi::file_writer out(bytes);
        out.add("w", p);
        out.finish();
        benchmark::DoNotOptimize(bytes.data());
    }
    weights_per_second(state);
    state.counters["file_MB"] = static_cast<double>(bytes.size()) / 1e6;
    state.counters["parts"] = static_cast<double>(grphi::file_reader(bytes.data(), bytes.size()).at("w").sections.size());
}

void BM_format_dequantize(benchmark::State& state) {
    set_threads(state);
    const auto& bytes = file_image();
    const grphi::file_reader in(bytes.data(), bytes.size());
    map out(huge_buffer(2), side, side);
    for (auto _ : state) {
        in.dequantize<float, grphi::phi>("w", out);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    weights_per_second(state);
}

void BM_format_verify(benchmark::State& state) {
    const auto& bytes = file_image();
    const grphi::file_reader in(bytes.data(), bytes.size());
    for (auto _ : state) in.verify();
    weights_per_second(state);
}

}  // namespace

BENCHMARK(BM_memcpy_floats)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_format_write)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_format_dequantize)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_format_verify)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();
