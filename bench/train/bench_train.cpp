// TinyNet (784-256-10, no bias) training step, batch 64, single thread: FP32 against phi- and
// base-2 QAT (per channel; fc1 cluster 32, e_min -16, e_max 8; fc2 e_min -12, e_max 8), plus the
// parts of a QAT step and a memcpy of fc1's weights as the machine's baseline.
// Goal (issue 3): phi-QAT step <= 1.0 ms and <= 1.3x the FP32 step.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#define EIGEN_DONT_PARALLELIZE  // the goal is single-threaded

#include <benchmark/benchmark.h>

#include <grphi/core/base.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/train/optim.hpp>
#include <grphi/core/options.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/train/autodiff.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
static const bool single_thread = [] {
    omp_set_num_threads(1);
    return true;
}();
#endif

namespace {

using namespace grphi;

struct tinynet {
    nn::linear fc1{784, 256, false, 1};
    nn::linear fc2{256, 10, false, 2};

    explicit tinynet(const char* base, int fc1_cluster = 32) {
        if (!base) return;
        options first;
        first.cluster_size = fc1_cluster;
        first.e_min = -16;
        first.e_max = 8;
        options second;
        second.e_min = -12;
        second.e_max = 8;
        fc1.quantizer = nn::weight_quantizer::by_name(base, first);
        fc2.quantizer = nn::weight_quantizer::by_name(base, second);
    }
    ad::var forward(ad::tape<float>& t, ad::var x) { return fc2.forward(t, ad::relu(t, fc1.forward(t, x))); }
};

// A fixed synthetic batch: the step's cost does not depend on the pixel values.
struct batch {
    ad::matrix<float> images;
    std::vector<int> labels;
    batch() : images(64, 784), labels(64) {
        std::mt19937 gen(7);
        std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
        for (Eigen::Index i = 0; i < images.size(); ++i) images.data()[i] = pixel(gen);
        for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int>(i % 10);
    }
};

void train_step(benchmark::State& state, const char* base, int fc1_cluster = 32) {
    tinynet net(base, fc1_cluster);
    optim::adamw<float> opt({&net.fc1.weight, &net.fc2.weight}, {1e-3});
    const batch b;
    ad::tape<float> t;
    for (auto _ : state) {
        t.clear();
        opt.zero_grad();
        const ad::var loss = ad::softmax_cross_entropy(t, net.forward(t, t.constant_ref(b.images)), b.labels);
        t.backward(loss);
        opt.step();
        benchmark::DoNotOptimize(net.fc1.weight.value.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * 64);  // images per second
}

void BM_train_step_fp32(benchmark::State& state) { train_step(state, nullptr); }
void BM_train_step_qat_phi(benchmark::State& state) { train_step(state, "phi"); }
void BM_train_step_qat_two(benchmark::State& state) { train_step(state, "two"); }
// The same without fc1's exponent sharing: isolates the cost of the clustered fake-quantize path.
void BM_train_step_qat_phi_unclustered(benchmark::State& state) { train_step(state, "phi", 0); }

// Parts of the QAT step, to see where the time over FP32 goes.
void fake_quantize_fc1(benchmark::State& state, int fc1_cluster) {
    tinynet net("phi", fc1_cluster);
    ad::matrix<float> out;
    for (auto _ : state) {
        net.fc1.quantizer->fake_quantize(net.fc1.weight.value, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(state.iterations() * net.fc1.weight.value.size());
}
void BM_fake_quantize_fc1_phi(benchmark::State& state) { fake_quantize_fc1(state, 32); }
void BM_fake_quantize_fc1_phi_unclustered(benchmark::State& state) { fake_quantize_fc1(state, 0); }

void BM_forward_fp32(benchmark::State& state) {
    tinynet net(nullptr);
    const batch b;
    ad::tape<float> t;
    for (auto _ : state) {
        t.clear();
        const ad::var loss = ad::softmax_cross_entropy(t, net.forward(t, t.constant_ref(b.images)), b.labels);
        benchmark::DoNotOptimize(t.value(loss).data());
    }
}

void BM_adamw_step(benchmark::State& state) {
    tinynet net(nullptr);
    net.fc1.weight.grad.setConstant(256, 784, 1e-3f);
    net.fc2.weight.grad.setConstant(10, 256, 1e-3f);
    optim::adamw<float> opt({&net.fc1.weight, &net.fc2.weight}, {1e-3});
    for (auto _ : state) {
        net.fc1.weight.has_grad = net.fc2.weight.has_grad = true;
        opt.step();
        benchmark::DoNotOptimize(net.fc1.weight.value.data());
    }
    state.SetItemsProcessed(state.iterations() * (784 * 256 + 256 * 10));
}

// Baseline: copying fc1's weights once (200704 floats).
void BM_memcpy_fc1(benchmark::State& state) {
    std::vector<float> src(784 * 256, 1.0f), dst(784 * 256);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), src.size() * sizeof(float));
        benchmark::DoNotOptimize(dst.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(state.iterations() * static_cast<long>(src.size()));
}

}  // namespace

BENCHMARK(BM_memcpy_fc1);
BENCHMARK(BM_train_step_fp32)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_train_step_qat_phi)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_train_step_qat_two)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_train_step_qat_phi_unclustered)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_forward_fp32)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fake_quantize_fc1_phi)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fake_quantize_fc1_phi_unclustered)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_adamw_step)->Unit(benchmark::kMillisecond);
