// Tape autodiff: finite-difference gradient checks (double) for every op, STE semantics, and a
// QAT loop that must actually move the loss and the latent weights (the seed's failure).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <doctest/doctest.h>

#include <grphi/core/base.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/train/autodiff.hpp>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace {

using grphi::ad::matrix;
using grphi::ad::parameter;
using grphi::ad::tape;
using grphi::ad::var;
namespace ad = grphi::ad;

template <class T>
matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed, T lo = T(-1), T hi = T(1)) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> dist(static_cast<double>(lo), static_cast<double>(hi));
    matrix<T> m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(dist(gen));
    return m;
}

// Values in +-[0.1, 1]: ReLU kinks and max-pool ties stay far from the finite-difference step.
matrix<double> away_from_zero(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    matrix<double> m = random_matrix<double>(rows, cols, seed, 0.1, 1.0);
    std::mt19937 gen(seed + 1000);
    for (Eigen::Index i = 0; i < m.size(); ++i)
        if (gen() & 1u) m.data()[i] = -m.data()[i];
    return m;
}

using graph_fn = std::function<var(tape<double>&)>;

// Central differences over every entry of every parameter against the tape's gradients.
void check_gradients(const graph_fn& build, std::vector<parameter<double>*> params, double tolerance = 1e-6) {
    tape<double> t;
    for (auto* p : params) p->zero_grad();
    const var loss = build(t);
    t.backward(loss);
    const double step = 1e-6;
    for (std::size_t k = 0; k < params.size(); ++k) {
        parameter<double>& p = *params[k];
        REQUIRE(p.has_grad);
        const matrix<double> analytic = p.grad;
        REQUIRE(analytic.rows() == p.value.rows());
        REQUIRE(analytic.cols() == p.value.cols());
        for (Eigen::Index i = 0; i < p.value.size(); ++i) {
            const double saved = p.value.data()[i];
            p.value.data()[i] = saved + step;
            t.clear();
            const double up = t.value(build(t))(0, 0);
            p.value.data()[i] = saved - step;
            t.clear();
            const double down = t.value(build(t))(0, 0);
            p.value.data()[i] = saved;
            const double numeric = (up - down) / (2 * step);
            INFO("parameter " << k << " entry " << i);
            CHECK(analytic.data()[i] == doctest::Approx(numeric).epsilon(tolerance).scale(1.0));
        }
    }
}

// Direct (non-im2col) convolution, the reference for the forward pass.
template <class T>
matrix<T> naive_conv(const matrix<T>& x, int C, int H, int W, const matrix<T>& w, int kh, int kw, int stride, int pad) {
    const int O = static_cast<int>(w.rows());
    const int Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    matrix<T> y = matrix<T>::Zero(x.rows(), O * Ho * Wo);
    for (Eigen::Index n = 0; n < x.rows(); ++n)
        for (int o = 0; o < O; ++o)
            for (int oy = 0; oy < Ho; ++oy)
                for (int ox = 0; ox < Wo; ++ox) {
                    long double acc = 0;
                    for (int c = 0; c < C; ++c)
                        for (int ky = 0; ky < kh; ++ky)
                            for (int kx = 0; kx < kw; ++kx) {
                                const int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += static_cast<long double>(x(n, (c * H + iy) * W + ix)) *
                                       w(o, (c * kh + ky) * kw + kx);
                            }
                    y(n, (o * Ho + oy) * Wo + ox) = static_cast<T>(acc);
                }
    return y;
}

}  // namespace

TEST_CASE("matmul computes x * W^T and its gradients") {
    parameter<double> x(random_matrix<double>(4, 5, 1));
    parameter<double> w(random_matrix<double>(3, 5, 2));
    const matrix<double> head = random_matrix<double>(4, 3, 3);
    {
        tape<double> t;
        const var y = ad::matmul(t, t.param(x), t.param(w));
        const matrix<double> expected = x.value * w.value.transpose();
        CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < 1e-14);
    }
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::matmul(t, t.param(x), t.param(w)), head); }, {&x, &w});
}

TEST_CASE("add_bias per feature and per channel") {
    parameter<double> x(random_matrix<double>(3, 4, 4));
    parameter<double> b(random_matrix<double>(1, 4, 5));
    const matrix<double> head = random_matrix<double>(3, 4, 6);
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::add_bias(t, t.param(x), t.param(b)), head); }, {&x, &b});

    // Image tensor 2 channels x 2x3: the bias adds one value per channel plane.
    parameter<double> img(random_matrix<double>(2, 12, 7));
    parameter<double> cb(random_matrix<double>(1, 2, 8));
    const matrix<double> head2 = random_matrix<double>(2, 12, 9);
    {
        tape<double> t;
        const var y = ad::add_bias(t, t.param(img, 2, 2, 3), t.param(cb));
        for (int n = 0; n < 2; ++n)
            for (int j = 0; j < 12; ++j) CHECK(t.value(y)(n, j) == img.value(n, j) + cb.value(0, j / 6));
    }
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::add_bias(t, t.param(img, 2, 2, 3), t.param(cb)), head2); },
                    {&img, &cb});
}

TEST_CASE("add_bias with a column bias (F x 1) keeps the bias's shape in its gradient") {
    parameter<double> x(random_matrix<double>(3, 4, 12));
    parameter<double> b(random_matrix<double>(4, 1, 13));
    const matrix<double> head = random_matrix<double>(3, 4, 14);
    {
        tape<double> t;
        const var y = ad::add_bias(t, t.param(x), t.param(b));
        for (int n = 0; n < 3; ++n)
            for (int j = 0; j < 4; ++j) CHECK(t.value(y)(n, j) == x.value(n, j) + b.value(j, 0));
    }
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::add_bias(t, t.param(x), t.param(b)), head); }, {&x, &b});
    CHECK(b.grad.rows() == 4);
    CHECK(b.grad.cols() == 1);
}

TEST_CASE("weighted_sum value and gradient") {
    parameter<double> x(random_matrix<double>(2, 5, 15));
    const matrix<double> head = random_matrix<double>(2, 5, 16);
    tape<double> t;
    CHECK(t.value(ad::weighted_sum(t, t.param(x), head))(0, 0) == doctest::Approx(x.value.cwiseProduct(head).sum()));
    check_gradients([&](tape<double>& tt) { return ad::weighted_sum(tt, tt.param(x), head); }, {&x});
    CHECK_THROWS_AS(ad::weighted_sum(t, t.param(x), matrix<double>::Zero(5, 2)), std::invalid_argument);
}

TEST_CASE("ops with one constant input send the gradient only to the other one") {
    parameter<double> x(random_matrix<double>(2, 1 * 5 * 5, 17));
    parameter<double> w(random_matrix<double>(3, 1 * 3 * 3, 18));
    const matrix<double> x_fixed = x.value, w_fixed = w.value;
    const matrix<double> bias = random_matrix<double>(1, 3, 19);
    const matrix<double> head = random_matrix<double>(2, 3 * 3 * 3, 20);
    // conv2d: only dx, then only dW; add_bias with a constant bias.
    check_gradients(
        [&](tape<double>& t) {
            return ad::weighted_sum(t, ad::add_bias(t, ad::conv2d(t, t.param(x, 1, 5, 5), t.constant(w_fixed), {3, 3, 1, 0}), t.constant(bias)), head);
        },
        {&x});
    check_gradients(
        [&](tape<double>& t) { return ad::weighted_sum(t, ad::conv2d(t, t.constant(x_fixed, 1, 5, 5), t.param(w), {3, 3, 1, 0}), head); },
        {&w});
    // matmul: only dx, then only dW.
    parameter<double> a(random_matrix<double>(4, 3, 21));
    const matrix<double> m = random_matrix<double>(2, 3, 22), head2 = random_matrix<double>(4, 2, 23);
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::matmul(t, t.param(a), t.constant(m)), head2); }, {&a});
    parameter<double> b(m);
    check_gradients([&](tape<double>& t) { return ad::weighted_sum(t, ad::matmul(t, t.constant(a.value), t.param(b)), head2); }, {&b});
}

TEST_CASE("flatten changes only the view") {
    tape<double> t;
    const var img = t.constant(random_matrix<double>(2, 3 * 4 * 5, 24), 3, 4, 5);
    const var flat = ad::flatten(t, img);
    CHECK(flat.index == img.index);
    CHECK(flat.channels == 60);
    CHECK(flat.height == 1);
    CHECK(flat.width == 1);
    CHECK(t.size() == 1);  // no node recorded
}

TEST_CASE("relu forward and gradient") {
    parameter<double> x(away_from_zero(3, 7, 10));
    const matrix<double> head = random_matrix<double>(3, 7, 11);
    tape<double> t;
    const var y = ad::relu(t, t.param(x));
    for (Eigen::Index i = 0; i < x.value.size(); ++i) CHECK(t.value(y).data()[i] == std::max(0.0, x.value.data()[i]));
    check_gradients([&](tape<double>& tt) { return ad::weighted_sum(tt, ad::relu(tt, tt.param(x)), head); }, {&x});
}

TEST_CASE("conv2d matches a direct convolution and its gradients, with stride and padding") {
    struct geometry_case { int C, H, W, O, kh, kw, stride, pad; };
    const geometry_case cases[] = {
        {1, 5, 5, 2, 3, 3, 1, 0},
        {2, 5, 6, 3, 3, 3, 2, 1},
        {3, 7, 4, 2, 2, 3, 1, 2},
        {2, 6, 6, 4, 1, 1, 3, 0},
    };
    unsigned seed = 20;
    for (const auto& g : cases) {
        CAPTURE(g.stride);
        CAPTURE(g.pad);
        parameter<double> x(random_matrix<double>(2, g.C * g.H * g.W, ++seed));
        parameter<double> w(random_matrix<double>(g.O, g.C * g.kh * g.kw, ++seed));
        const grphi::ad::conv_geometry geo{g.kh, g.kw, g.stride, g.pad};
        tape<double> t;
        const var y = ad::conv2d(t, t.param(x, g.C, g.H, g.W), t.param(w), geo);
        const matrix<double> expected = naive_conv(x.value, g.C, g.H, g.W, w.value, g.kh, g.kw, g.stride, g.pad);
        REQUIRE(t.value(y).rows() == expected.rows());
        REQUIRE(t.value(y).cols() == expected.cols());
        CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < 1e-13);
        CHECK(y.channels == g.O);
        const matrix<double> head = random_matrix<double>(expected.rows(), expected.cols(), ++seed);
        check_gradients([&](tape<double>& tt) { return ad::weighted_sum(tt, ad::conv2d(tt, tt.param(x, g.C, g.H, g.W), tt.param(w), geo), head); },
                        {&x, &w});
    }
}

TEST_CASE_TEMPLATE("conv2d forward in float and double against the direct loop", T, float, double) {
    const matrix<T> x = random_matrix<T>(3, 2 * 9 * 8, 40);
    const matrix<T> w = random_matrix<T>(5, 2 * 3 * 3, 41);
    tape<T> t;
    const var y = ad::conv2d(t, t.constant(x, 2, 9, 8), t.constant(w), {3, 3, 2, 1});
    const matrix<T> expected = naive_conv(x, 2, 9, 8, w, 3, 3, 2, 1);
    CHECK((t.value(y) - expected).cwiseAbs().maxCoeff() < T(1e-5));
}

TEST_CASE("max_pool2x2 picks the maximum of each window, floors odd sizes, routes the gradient") {
    parameter<double> x(away_from_zero(2, 2 * 5 * 7, 50));
    tape<double> t;
    const var y = ad::max_pool2x2(t, t.param(x, 2, 5, 7));
    CHECK(y.height == 2);
    CHECK(y.width == 3);
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 2; ++c)
            for (int oy = 0; oy < 2; ++oy)
                for (int ox = 0; ox < 3; ++ox) {
                    double best = -1e300;
                    for (int dy = 0; dy < 2; ++dy)
                        for (int dx = 0; dx < 2; ++dx)
                            best = std::max(best, x.value(n, (c * 5 + 2 * oy + dy) * 7 + 2 * ox + dx));
                    CHECK(t.value(y)(n, (c * 2 + oy) * 3 + ox) == best);
                }
    const matrix<double> head = random_matrix<double>(2, 12, 51);
    check_gradients([&](tape<double>& tt) { return ad::weighted_sum(tt, ad::max_pool2x2(tt, tt.param(x, 2, 5, 7)), head); }, {&x});
}

TEST_CASE("softmax cross-entropy value and gradient") {
    SUBCASE("uniform logits give log K") {
        tape<double> t;
        const matrix<double> z = matrix<double>::Zero(3, 4);
        const var loss = ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{0, 3, 1});
        CHECK(t.value(loss)(0, 0) == doctest::Approx(std::log(4.0)));
    }
    SUBCASE("hand-computed two-class value") {
        // logits (0, ln 3): p(class 1) = 3/4, loss of label 1 = ln(4/3); of label 0 = ln 4; mean.
        tape<double> t;
        matrix<double> z(2, 2);
        z << 0, std::log(3.0), 0, std::log(3.0);
        const var loss = ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{1, 0});
        CHECK(t.value(loss)(0, 0) == doctest::Approx((std::log(4.0 / 3.0) + std::log(4.0)) / 2));
    }
    SUBCASE("large logits stay finite") {
        tape<double> t;
        matrix<double> z(1, 3);
        z << 1000, 0, -1000;
        const var loss = ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{1});
        CHECK(t.value(loss)(0, 0) == doctest::Approx(1000.0));
    }
    SUBCASE("finite differences") {
        parameter<double> z(random_matrix<double>(5, 4, 60, -3.0, 3.0));
        const std::vector<int> labels{0, 3, 2, 2, 1};
        check_gradients([&](tape<double>& t) { return ad::softmax_cross_entropy(t, t.param(z), labels); }, {&z});
    }
    SUBCASE("labels out of range throw") {
        tape<double> t;
        const matrix<double> z = matrix<double>::Zero(2, 3);
        CHECK_THROWS_AS(ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{0, 3}), std::out_of_range);
        CHECK_THROWS_AS(ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{-1, 0}), std::out_of_range);
        CHECK_THROWS_AS(ad::softmax_cross_entropy(t, t.constant(z), std::vector<int>{0}), std::invalid_argument);
    }
}

TEST_CASE("a whole CNN: conv, bias, relu, pool, flatten, matmul, loss") {
    parameter<double> x(random_matrix<double>(2, 1 * 6 * 6, 70));
    parameter<double> k(random_matrix<double>(3, 1 * 3 * 3, 71));
    parameter<double> kb(random_matrix<double>(1, 3, 72));
    parameter<double> w(random_matrix<double>(4, 3 * 3 * 3, 73));
    const std::vector<int> labels{2, 1};
    check_gradients(
        [&](tape<double>& t) {
            var h = ad::conv2d(t, t.param(x, 1, 6, 6), t.param(k), {3, 3, 1, 1});
            h = ad::relu(t, ad::add_bias(t, h, t.param(kb)));
            h = ad::flatten(t, ad::max_pool2x2(t, h));
            return ad::softmax_cross_entropy(t, ad::matmul(t, h, t.param(w)), labels);
        },
        {&x, &k, &kb, &w}, 1e-5);
}

TEST_CASE("gradients are skipped for constants and accumulate across backward calls") {
    parameter<double> w(random_matrix<double>(3, 4, 80));
    const matrix<double> x = random_matrix<double>(2, 4, 81);
    const matrix<double> head = random_matrix<double>(2, 3, 82);
    tape<double> t;
    const var in = t.constant(x);
    const var loss = ad::weighted_sum(t, ad::matmul(t, in, t.param(w)), head);
    t.backward(loss);
    const matrix<double> once = w.grad;
    CHECK((once - head.transpose() * x).cwiseAbs().maxCoeff() < 1e-14);
    CHECK_THROWS_AS(t.grad(in), std::invalid_argument);  // the input never gets a gradient
    t.backward(loss);
    CHECK((w.grad - 2 * once).cwiseAbs().maxCoeff() < 1e-14);
    w.zero_grad();
    CHECK(w.grad_or_zero().isZero());
}

TEST_CASE("a second backward() over every op doubles every gradient") {
    parameter<double> x(away_from_zero(2, 1 * 6 * 6, 85));
    parameter<double> k(random_matrix<double>(2, 9, 86));
    parameter<double> kb(random_matrix<double>(1, 2, 87));
    parameter<double> w(random_matrix<double>(3, 2 * 3 * 3, 88));
    tape<double> t;
    var h = ad::conv2d(t, t.param(x, 1, 6, 6), t.param(k), {3, 3, 1, 1});
    h = ad::flatten(t, ad::max_pool2x2(t, ad::relu(t, ad::add_bias(t, h, t.param(kb)))));
    const var loss = ad::softmax_cross_entropy(t, ad::matmul(t, h, ad::quantize_ste<grphi::two>(t, t.param(w), grphi::options{})), std::vector<int>{1, 2});
    t.backward(loss);
    std::vector<matrix<double>> once;
    for (auto* p : {&x, &k, &kb, &w}) once.push_back(p->grad);
    t.backward(loss);
    std::size_t i = 0;
    for (auto* p : {&x, &k, &kb, &w}) {
        CHECK((p->grad - 2 * once[i]).cwiseAbs().maxCoeff() < 1e-12);
        CHECK(once[i].cwiseAbs().maxCoeff() > 0);
        ++i;
    }
}

TEST_CASE("the tape reuses its storage across steps") {
    parameter<float> w(random_matrix<float>(8, 6, 90));
    const matrix<float> x = random_matrix<float>(5, 6, 91);
    const std::vector<int> labels{0, 1, 2, 3, 4};
    tape<float> t;
    std::vector<const float*> first;
    for (int step = 0; step < 3; ++step) {
        t.clear();
        w.zero_grad();
        const var in = t.constant(x);
        const var h = ad::relu(t, ad::matmul(t, in, t.param(w)));
        const var loss = ad::softmax_cross_entropy(t, h, labels);
        t.backward(loss);
        const std::vector<const float*> now{t.value(in).data(), t.value(h).data(), t.value(loss).data()};
        if (step == 0)
            first = now;
        else
            CHECK(now == first);
        CHECK(t.size() == 5);
    }
}

TEST_CASE("shape errors throw invalid_argument") {
    tape<double> t;
    const var a = t.constant(matrix<double>::Zero(2, 3));
    const var b = t.constant(matrix<double>::Zero(4, 5));
    CHECK_THROWS_AS(ad::matmul(t, a, b), std::invalid_argument);
    CHECK_THROWS_AS(ad::add_bias(t, a, t.constant(matrix<double>::Zero(1, 4))), std::invalid_argument);
    CHECK_THROWS_AS(ad::conv2d(t, t.constant(matrix<double>::Zero(1, 4), 1, 2, 2), t.constant(matrix<double>::Zero(1, 9)), {3, 3, 1, 0}),
                    std::invalid_argument);
    CHECK_THROWS_AS(t.constant(matrix<double>::Zero(1, 5), 1, 2, 2), std::invalid_argument);
    CHECK_THROWS_AS(t.backward(a), std::invalid_argument);  // not a scalar
}

TEST_CASE_TEMPLATE("STE forward is fake_quantize and backward is the scaled, masked upstream gradient", T, float, double) {
    grphi::options opts;
    opts.e_min = -3;
    opts.e_max = 0;  // phi^-3 ~ 0.236: small weights clip up, weights above ~1.27 clip down
    parameter<T> w(random_matrix<T>(6, 10, 100, T(-2), T(2)));
    w.value(0, 0) = T(0);
    const matrix<T> upstream = random_matrix<T>(6, 10, 101);
    matrix<T> expected_q(6, 10), clipped(6, 10);
    grphi::fake_quantize<grphi::phi>(w.value, opts, expected_q, clipped);
    REQUIRE(clipped.sum() > 0);
    REQUIRE(clipped.sum() < T(60));

    for (const bool masked : {false, true})
        for (const T scale : {T(1), T(0.25)}) {
            CAPTURE(masked);
            CAPTURE(scale);
            tape<T> t;
            w.zero_grad();
            const var q = ad::quantize_ste<grphi::phi>(t, t.param(w), opts, {scale, masked});
            CHECK(t.value(q) == expected_q);
            if (masked) CHECK(ad::clipped_mask(t, q) == clipped);
            t.backward(ad::weighted_sum(t, q, upstream));
            REQUIRE(w.has_grad);
            for (Eigen::Index i = 0; i < w.value.size(); ++i) {
                const T expected = (masked && clipped.data()[i] != T(0)) ? T(0) : upstream.data()[i] * scale;
                CHECK(w.grad.data()[i] == doctest::Approx(expected));
            }
        }
}

TEST_CASE("STE into an intermediate node passes the scaled gradient through") {
    parameter<double> x(random_matrix<double>(3, 4, 105));
    parameter<double> w(random_matrix<double>(2, 4, 106));
    const matrix<double> upstream = random_matrix<double>(3, 2, 107);
    for (const double scale : {1.0, 0.5}) {
        CAPTURE(scale);
        tape<double> t;
        x.zero_grad();
        w.zero_grad();
        const var y = ad::matmul(t, t.param(x), t.param(w));
        const var q = ad::quantize_ste<grphi::two>(t, y, grphi::options{}, {scale, false});
        t.backward(ad::weighted_sum(t, q, upstream));
        CHECK((t.grad(y) - upstream * scale).cwiseAbs().maxCoeff() < 1e-15);
        CHECK((w.grad - scale * upstream.transpose() * x.value).cwiseAbs().maxCoeff() < 1e-14);
        CHECK_THROWS_AS(ad::clipped_mask(t, q), std::invalid_argument);  // not masked
        CHECK_THROWS_AS(ad::clipped_mask(t, y), std::invalid_argument);  // not a quantize_ste node
    }
}

TEST_CASE("QAT on a synthetic problem lowers the loss and moves the latent weights (the seed's failure)") {
    // 3 separable classes in 8 dimensions; linear classifier with phi-quantized weights, plain SGD.
    const int n = 96, d = 8, k = 3;
    const matrix<float> centers = random_matrix<float>(k, d, 110, -2.0f, 2.0f);
    matrix<float> x(n, d);
    std::vector<int> labels(n);
    const matrix<float> noise = random_matrix<float>(n, d, 111, -0.5f, 0.5f);
    for (int i = 0; i < n; ++i) {
        labels[static_cast<std::size_t>(i)] = i % k;
        x.row(i) = centers.row(i % k) + noise.row(i);
    }
    parameter<float> w(random_matrix<float>(k, d, 112, -0.1f, 0.1f));
    const matrix<float> initial = w.value;
    grphi::options opts;
    opts.e_min = -12;
    opts.e_max = 4;
    tape<float> t;
    auto loss_now = [&] {
        t.clear();
        const var q = ad::quantize_ste<grphi::phi>(t, t.param(w), opts);
        return ad::softmax_cross_entropy(t, ad::matmul(t, t.constant(x), q), labels);
    };
    const float first = t.value(loss_now())(0, 0);
    for (int step = 0; step < 200; ++step) {
        w.zero_grad();
        const var loss = loss_now();
        t.backward(loss);
        REQUIRE(w.has_grad);
        w.value -= 0.05f * w.grad;
    }
    const float last = t.value(loss_now())(0, 0);
    CHECK(last < 0.5f * first);
    CHECK((w.value - initial).cwiseAbs().maxCoeff() > 0.1f);
}
