// Layers: PyTorch-like init, forward against direct formulas, train() (STE) vs eval() (fixed rounding).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <doctest/doctest.h>

#include <grphi/format/container.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/train/optim.hpp>
#include <grphi/core/quantize.hpp>

#include <cmath>
#include <random>
#include <vector>

namespace {

using grphi::ad::matrix;
using grphi::ad::tape;
using grphi::ad::var;
namespace ad = grphi::ad;

template <class T>
matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    matrix<T> m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(dist(gen));
    return m;
}

grphi::options window_options() {
    grphi::options o;
    o.e_min = -8;
    o.e_max = 0;
    return o;
}

}  // namespace

TEST_CASE_TEMPLATE("linear init: U(-1/sqrt(in), 1/sqrt(in)), deterministic per seed", T, float, double) {
    grphi::nn::basic_linear<T> a(100, 30, true, 5), b(100, 30, true, 5), c(100, 30, true, 6);
    const double bound = 1.0 / std::sqrt(100.0);
    CHECK(a.weight.value.rows() == 30);
    CHECK(a.weight.value.cols() == 100);
    CHECK(a.bias.value.cols() == 30);
    CHECK(a.weight.value.cwiseAbs().maxCoeff() <= bound);
    CHECK(a.bias.value.cwiseAbs().maxCoeff() <= bound);
    CHECK(a.weight.value.cwiseAbs().maxCoeff() > 0.9 * bound);  // fills the range
    CHECK(std::abs(static_cast<double>(a.weight.value.mean())) < 0.01);
    CHECK(a.weight.value == b.weight.value);
    CHECK(a.weight.value != c.weight.value);
    grphi::nn::basic_linear<T> no_bias(4, 3, false);
    CHECK_FALSE(no_bias.has_bias());
    CHECK(no_bias.parameters().size() == 1);
    CHECK(a.parameters().size() == 2);
    CHECK_THROWS_AS(grphi::nn::basic_linear<T>(0, 3), std::invalid_argument);
}

TEST_CASE("conv2d init uses fan_in = C * k * k") {
    grphi::nn::conv2d conv(3, 8, 5);
    CHECK(conv.weight.value.rows() == 8);
    CHECK(conv.weight.value.cols() == 75);
    CHECK(conv.weight.value.cwiseAbs().maxCoeff() <= 1.0 / std::sqrt(75.0));
    CHECK_THROWS_AS(grphi::nn::conv2d(3, 8, 0), std::invalid_argument);
}

TEST_CASE_TEMPLATE("linear without a quantizer: y = x W^T + b, gradients to W and b", T, float, double) {
    grphi::nn::basic_linear<T> layer(6, 4);
    const matrix<T> x = random_matrix<T>(3, 6, 1);
    tape<T> t;
    const var y = layer.forward(t, t.constant(x));
    const matrix<T> expected = (x * layer.weight.value.transpose()).rowwise() + layer.bias.value.row(0);
    CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < T(1e-5));
    const matrix<T> head = random_matrix<T>(3, 4, 2);
    t.backward(ad::weighted_sum(t, y, head));
    CHECK((layer.weight.grad - head.transpose() * x).cwiseAbs().maxCoeff() < T(1e-5));
    CHECK((layer.bias.grad - head.colwise().sum()).cwiseAbs().maxCoeff() < T(1e-5));
    CHECK_THROWS_AS(layer.forward(t, t.constant(matrix<T>::Zero(3, 5))), std::invalid_argument);
}

TEST_CASE_TEMPLATE("quantized linear: train() uses the STE, eval() fixed rounding without weight gradient", T, float, double) {
    grphi::nn::basic_linear<T> layer(20, 7, true, 3);
    layer.quantizer = grphi::nn::weight_quantizer::make<grphi::phi>(window_options());
    const matrix<T> x = random_matrix<T>(5, 20, 4);
    const matrix<T> head = random_matrix<T>(5, 7, 5);
    matrix<T> wq(7, 20);
    grphi::fake_quantize<grphi::phi>(layer.weight.value, window_options(), wq);
    CHECK(layer.effective_weight() == wq);
    CHECK(wq != layer.weight.value);
    const matrix<T> expected = (x * wq.transpose()).rowwise() + layer.bias.value.row(0);

    SUBCASE("train") {
        CHECK(layer.training());
        tape<T> t;
        const var y = layer.forward(t, t.constant(x));
        CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < T(1e-5));
        t.backward(ad::weighted_sum(t, y, head));
        REQUIRE(layer.weight.has_grad);
        // Identity STE: the latent weight receives the gradient of the quantized one.
        CHECK((layer.weight.grad - head.transpose() * x).cwiseAbs().maxCoeff() < T(1e-5));
        CHECK(layer.bias.has_grad);
    }
    SUBCASE("eval") {
        layer.eval();
        CHECK_FALSE(layer.training());
        tape<T> t;
        const var y = layer.forward(t, t.constant(x));
        CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < T(1e-5));
        t.backward(ad::weighted_sum(t, y, head));
        CHECK_FALSE(layer.weight.has_grad);
        CHECK(layer.bias.has_grad);
    }
    SUBCASE("masked STE with a gradient scale") {
        layer.quantizer = grphi::nn::weight_quantizer::make<grphi::phi>(window_options(), 0.5f, true);
        matrix<T> clipped(7, 20), out(7, 20);
        grphi::fake_quantize<grphi::phi>(layer.weight.value, window_options(), out, clipped);
        REQUIRE(clipped.sum() > T(0));  // some weights sit below phi^-8, so the mask matters
        tape<T> t;
        t.backward(ad::weighted_sum(t, layer.forward(t, t.constant(x)), head));
        const matrix<T> upstream = head.transpose() * x;
        for (Eigen::Index i = 0; i < upstream.size(); ++i) {
            const T expected_grad = clipped.data()[i] != T(0) ? T(0) : T(0.5) * upstream.data()[i];
            CHECK(layer.weight.grad.data()[i] == doctest::Approx(expected_grad).epsilon(1e-5));
        }
    }
}

TEST_CASE("quantizers chosen at run time") {
    const grphi::options o = window_options();
    CHECK(std::string(grphi::nn::weight_quantizer::by_name("phi", o).base_name()) == "phi");
    CHECK(std::string(grphi::nn::weight_quantizer::by_name("2", o).base_name()) == "two");
    CHECK(std::string(grphi::nn::weight_quantizer::by_name("sqrt2", o).base_name()) == "sqrt2");
    CHECK_THROWS_AS(grphi::nn::weight_quantizer::by_name("e", o), std::invalid_argument);
    CHECK(std::string(grphi::nn::weight_quantizer::by_name("1.5", o).base_name()) == "custom");
    CHECK(grphi::nn::weight_quantizer::by_name("1.5", o).opts().base_value == 1.5);
    for (const char* bad_base : {"1.0", "1.02", "nan", "inf", "1.5x", " 1.5", ""})
        CHECK_THROWS_WITH_AS(grphi::nn::weight_quantizer::by_name(bad_base, o), doctest::Contains("base"),
                             std::invalid_argument);
    grphi::options valued = o;
    valued.base_value = 1.5;
    CHECK_THROWS_WITH_AS(grphi::nn::weight_quantizer::by_name("1.5", valued), doctest::Contains("base_value"),
                         std::invalid_argument);
    grphi::options bad;
    bad.e_min = 3;
    bad.e_max = 1;
    CHECK_THROWS_AS(grphi::nn::weight_quantizer::by_name("phi", bad), std::invalid_argument);

    // Each base rounds to its own grid: |w| becomes b^k exactly for some integer k.
    const matrix<float> w = random_matrix<float>(4, 9, 6);
    for (const char* base : {"phi", "two", "sqrt2", "1.5", "3.7"}) {
        const auto q = grphi::nn::weight_quantizer::by_name(base, grphi::options{});
        matrix<float> out;
        q.fake_quantize(w, out);
        const std::string name(base);
        const double b = name == "phi" ? (1 + std::sqrt(5.0)) / 2
                                       : (name == "two" ? 2.0 : (name == "sqrt2" ? std::sqrt(2.0) : std::stod(name)));
        for (Eigen::Index i = 0; i < out.size(); ++i) {
            const double k = std::log(std::abs(static_cast<double>(out.data()[i]))) / std::log(b);
            CHECK(std::abs(k - std::round(k)) < 1e-4);
        }
        const auto report = q.entropy(w);
        CHECK(report.weights == 36);
        CHECK(report.bits_per_weight > 0);
    }
    // A numeric base is grphi::custom: the same values as the library's fake_quantize with that value.
    grphi::options custom_options = window_options();
    custom_options.base_value = 1.5;
    const matrix<float> expected = grphi::fake_quantize<grphi::custom>(w, custom_options);
    matrix<float> got;
    grphi::nn::weight_quantizer::by_name("1.5", window_options()).fake_quantize(w, got);
    CHECK(got == expected);
    CHECK(grphi::nn::weight_quantizer::by_name("1.5", window_options()).stored("w", w).base_value == 1.5);
}

TEST_CASE("quantized conv2d: forward is the convolution with fake-quantized weights; eval gives no weight gradient") {
    grphi::nn::basic_conv2d<double> conv(2, 3, 3, 2, 1, true, 9);
    conv.quantizer = grphi::nn::weight_quantizer::make<grphi::two>(window_options());
    const matrix<double> x = random_matrix<double>(2, 2 * 7 * 7, 10);
    // Same convolution with an unquantized conv whose weights are already on the grid.
    grphi::nn::basic_conv2d<double> reference(2, 3, 3, 2, 1, true, 9);
    reference.weight.value = conv.effective_weight();
    tape<double> t;
    const var y = conv.forward(t, t.constant(x, 2, 7, 7));
    const var y_ref = reference.forward(t, t.constant(x, 2, 7, 7));
    CHECK(y.channels == 3);
    CHECK(y.height == 4);
    CHECK(y.width == 4);
    CHECK((t.value(y) - t.value(y_ref)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK_THROWS_AS(conv.forward(t, t.constant(x, 1, 14, 7)), std::invalid_argument);

    conv.eval();
    tape<double> t2;
    t2.backward(ad::softmax_cross_entropy(t2, ad::flatten(t2, conv.forward(t2, t2.constant(x, 2, 7, 7))), std::vector<int>{0, 5}));
    CHECK_FALSE(conv.weight.has_grad);
    CHECK(conv.bias.has_grad);
}

TEST_CASE("a quantized layer trained with AdamW moves its latent weights and lowers the loss") {
    grphi::nn::linear layer(10, 3, true, 11);
    layer.quantizer = grphi::nn::weight_quantizer::by_name("phi", window_options());
    const matrix<float> x = random_matrix<float>(30, 10, 12);
    std::vector<int> labels(30);
    for (int i = 0; i < 30; ++i) labels[static_cast<std::size_t>(i)] = x(i, 0) > 0 ? (x(i, 1) > 0 ? 2 : 1) : 0;
    grphi::optim::adamw<float> opt(layer.parameters(), {1e-2});
    const matrix<float> initial = layer.weight.value;
    tape<float> t;
    float first = 0, last = 0;
    for (int step = 0; step < 150; ++step) {
        t.clear();
        opt.zero_grad();
        const var loss = ad::softmax_cross_entropy(t, layer.forward(t, t.constant(x)), labels);
        t.backward(loss);
        opt.step();
        (step == 0 ? first : last) = t.value(loss)(0, 0);
    }
    CHECK(last < 0.6f * first);
    CHECK((layer.weight.value - initial).cwiseAbs().maxCoeff() > 0.05f);
}

TEST_CASE("a run-time quantizer stores its tensor in the container; it decodes to the forward's weights") {
    const auto q = grphi::nn::weight_quantizer::by_name("phi", window_options());
    const matrix<float> w = random_matrix<float>(5, 40, 13);
    const auto bytes = grphi::serialize({q.stored("layer.weight", w)});
    const auto tensors = grphi::deserialize(bytes.data(), bytes.size());
    REQUIRE(tensors.size() == 1);
    CHECK(tensors[0].name == "layer.weight");
    matrix<float> forward;
    q.fake_quantize(w, forward);
    CHECK(grphi::dequantize(tensors[0].as<float, grphi::phi>()) == forward);
}

TEST_CASE("count_correct takes the first maximum of each row") {
    matrix<float> logits(3, 3);
    logits << 1, 2, 0, 5, 5, 1, 0, 0, 3;
    CHECK(grphi::nn::count_correct(logits, std::vector<int>{1, 0, 2}) == 3);
    CHECK(grphi::nn::count_correct(logits, std::vector<int>{1, 1, 0}) == 1);
}
