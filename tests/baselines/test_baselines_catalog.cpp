// The catalog: every baseline by name, its codes and scales consistent with the format's own call,
// and as an STE fake-quantizer in nn (weight_quantizer::from_function).
#include <grphi/baselines/catalog.hpp>
#include <grphi/train/nn.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <random>
#include <stdexcept>
#include <string>

namespace gb = grphi::baselines;

namespace {
using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
matrix gaussian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    matrix W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = normal(rng);
    return W;
}
}  // namespace

TEST_CASE("catalog: names, codes, scales and rebuilt weights of every baseline") {
    const matrix W = gaussian(7, 300, 1);
    for (gb::baseline b : gb::all_baselines) {
        CAPTURE(gb::name_of(b));
        CHECK(gb::baseline_by_name(gb::name_of(b)) == b);
        for (bool search : {false, true}) {
            const auto r = gb::run_baseline(b, W, {search, {}});
            REQUIRE(r.codes.size() == 2100);
            for (auto c : r.codes) CHECK(c < r.alphabet);
            CHECK(r.rebuilt.rows() == 7);
            CHECK(r.fixed_bits_per_weight >= 4.25);
            CHECK(r.fixed_bits_per_weight <= 8.6);
            CHECK(r.scale_bytes * 8 <= static_cast<std::size_t>(r.fixed_bits_per_weight * 2100) - 4 * 2100 + 8);
            const double sqnr = 10 * std::log10(W.squaredNorm() / (W - r.rebuilt).squaredNorm());
            CHECK(sqnr > 14);
            // The fake-quantizer is the same rebuild.
            matrix out, mask;
            if (search)
                gb::fake_quantize<gb::baseline::nf4, true, float>(W, grphi::options{}, out, &mask);
            else
                gb::fake_quantize<gb::baseline::nf4, false, float>(W, grphi::options{}, out, &mask);
            CHECK(out == gb::run_baseline(gb::baseline::nf4, W, {search, {}}).rebuilt);
            CHECK(mask.cwiseAbs().sum() == 0.0f);
        }
    }
    // Plain Q4_0 / Q8_0 are ggml's bit-exact blocks.
    CHECK(gb::run_baseline(gb::baseline::q4_0, W).rebuilt == gb::dequantize(gb::quantize_q4_0(W)));
    CHECK(gb::run_baseline(gb::baseline::q8_0, W).rebuilt == gb::dequantize(gb::quantize_q8_0(W)));
    CHECK(gb::run_baseline(gb::baseline::q4_k, W).rebuilt == gb::dequantize(gb::quantize_q4_k(W)));
    CHECK(!gb::baseline_by_name("q5_0"));
    CHECK_THROWS_AS(gb::format_of(gb::baseline::q4_k), std::invalid_argument);
    CHECK_THROWS_AS(gb::run_baseline(gb::baseline::q4_0, W, {false, std::vector<double>(300, 1.0)}), std::invalid_argument);
}

TEST_CASE("catalog: a baseline as an STE weight quantizer in nn") {
    const auto q = grphi::nn::weight_quantizer::from_function("q4_0", &gb::fake_quantize<gb::baseline::q4_0, false, float>,
                                                              &gb::fake_quantize<gb::baseline::q4_0, false, double>);
    CHECK(std::string(q.base_name()) == "q4_0");
    grphi::nn::linear layer(64, 4, false, 3);
    layer.quantizer = q;
    CHECK(layer.effective_weight() == gb::run_baseline(gb::baseline::q4_0, layer.weight.value).rebuilt);
    // A training step: the forward uses the quantized weights, the gradient reaches the latent ones.
    grphi::ad::tape<float> t;
    const matrix x = gaussian(3, 64, 2);
    layer.train();
    const grphi::ad::var y = layer.forward(t, t.constant(x));
    CHECK(t.value(y).isApprox(x * layer.effective_weight().transpose()));
    t.backward(grphi::ad::weighted_sum(t, y, matrix::Ones(3, 4)));
    CHECK(layer.weight.grad.cwiseAbs().sum() > 0);
    CHECK_THROWS_AS(q.entropy(layer.weight.value), std::logic_error);
    CHECK_THROWS_AS(q.stored("w", layer.weight.value), std::logic_error);
    CHECK_THROWS_AS(grphi::nn::weight_quantizer::from_function("x", nullptr, nullptr), std::invalid_argument);
}
