// Uniform int-N: checked against a long-double reference of the same rule, grid values, shapes, errors.
#include <grphi/baselines/uniform.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

namespace {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using col_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

template <class T>
row_matrix<T> gaussian(Eigen::Index rows, Eigen::Index cols, double sigma, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, sigma);
    row_matrix<T> W(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) W(r, c) = static_cast<T>(normal(rng));
    return W;
}

template <class A, class B>
bool same_bits(const A& a, const B& b) {
    if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
    for (Eigen::Index r = 0; r < a.rows(); ++r)
        for (Eigen::Index c = 0; c < a.cols(); ++c) {
            const auto x = a(r, c);
            const auto y = b(r, c);
            if (std::memcmp(&x, &y, sizeof x) != 0) return false;
        }
    return true;
}

}  // namespace

TEST_CASE_TEMPLATE("uniform: codes match a long-double reference and the error is at most half a step", T, float,
                   double) {
    const row_matrix<T> W = gaussian<T>(37, 53, 0.02, 11);
    for (int bits = 2; bits <= 8; ++bits)
        for (bool per_channel : {true, false}) {
            CAPTURE(bits);
            CAPTURE(per_channel);
            const grphi::uniform_options opts{bits, per_channel};
            const auto p = grphi::quantize_uniform(W, opts);
            const long double max_code = (1 << (bits - 1)) - 1;
            REQUIRE(p.scales.size() == (per_channel ? 37u : 1u));
            // Independent: max|w| per channel, divided in long double, rounded once to T.
            for (Eigen::Index ch = 0; ch < p.channels(); ++ch) {
                long double m = 0;
                for (Eigen::Index r = 0; r < W.rows(); ++r)
                    if (!per_channel || r == ch)
                        for (Eigen::Index c = 0; c < W.cols(); ++c)
                            m = std::max(m, std::fabs(static_cast<long double>(W(r, c))));
                // The scale is max/max_code correctly rounded: no neighbour of it is closer (exact in long double).
                const T s = p.scales[static_cast<std::size_t>(ch)];
                const long double miss = std::fabs(static_cast<long double>(s) * max_code - m);
                CHECK(miss <= std::fabs(static_cast<long double>(std::nextafter(s, T(0))) * max_code - m));
                CHECK(miss <= std::fabs(static_cast<long double>(std::nextafter(s, T(1))) * max_code - m));
            }
            const row_matrix<T> Q = grphi::dequantize(p);
            bool reaches_max = false;
            for (Eigen::Index r = 0; r < W.rows(); ++r)
                for (Eigen::Index c = 0; c < W.cols(); ++c) {
                    const long double s = p.scales[static_cast<std::size_t>(p.channel_of_row(r))];
                    const long double w = W(r, c);
                    const int code = p.codes[static_cast<std::size_t>(r * W.cols() + c)];
                    const long double ratio = w / s;
                    const long double frac = std::fabs(ratio - std::floor(ratio));
                    // Away from ties the nearest level is unambiguous.
                    if (std::fabs(frac - 0.5L) > 1e-4L)
                        CHECK(code == static_cast<int>(std::max(-max_code, std::min(max_code, std::round(ratio)))));
                    CHECK(std::abs(code) <= max_code);
                    reaches_max = reaches_max || std::abs(code) == max_code;
                    const long double err = std::fabs(w - static_cast<long double>(Q(r, c)));
                    const long double eps = std::numeric_limits<T>::epsilon();
                    CHECK(err <= s * (0.5L + 4 * max_code * eps));
                    CHECK(Q(r, c) == static_cast<T>(code) * p.scales[static_cast<std::size_t>(p.channel_of_row(r))]);
                }
            CHECK(reaches_max);  // the largest weight lands on the outermost code
        }
}

TEST_CASE_TEMPLATE("uniform: weights on the grid come back exactly", T, float, double) {
    std::mt19937_64 rng(3);
    for (int bits = 2; bits <= 8; ++bits) {
        const int max_code = (1 << (bits - 1)) - 1;
        row_matrix<T> W(9, 15);
        std::vector<T> scale(9);
        for (Eigen::Index r = 0; r < W.rows(); ++r) {
            // 16-bit mantissa: scale*code is exact and so is max/max_code.
            scale[static_cast<std::size_t>(r)] = std::ldexp(static_cast<T>(32768 + rng() % 32768), -20 - static_cast<int>(r));
            for (Eigen::Index c = 0; c < W.cols(); ++c) {
                const int code = static_cast<int>(rng() % static_cast<std::uint64_t>(2 * max_code + 1)) - max_code;
                W(r, c) = static_cast<T>(code) * scale[static_cast<std::size_t>(r)];
            }
            W(r, r % W.cols()) = static_cast<T>(r % 2 ? -max_code : max_code) * scale[static_cast<std::size_t>(r)];
        }
        row_matrix<T> Q;
        grphi::fake_quantize_uniform(W, grphi::uniform_options{bits, true}, Q);
        CHECK(same_bits(Q, W));
        const auto p = grphi::quantize_uniform(W, grphi::uniform_options{bits, true});
        for (std::size_t r = 0; r < scale.size(); ++r) CHECK(p.scales[r] == scale[r]);
    }
}

TEST_CASE_TEMPLATE("uniform: fake_quantize equals dequantize(quantize) bit for bit on every layout", T, float, double) {
    const row_matrix<T> W = gaussian<T>(19, 23, 1.0, 5);
    const col_matrix<T> Wc = W;
    for (int bits = 2; bits <= 8; ++bits)
        for (bool per_channel : {true, false}) {
            const grphi::uniform_options opts{bits, per_channel};
            const row_matrix<T> reference = grphi::dequantize(grphi::quantize_uniform(W, opts));
            row_matrix<T> out_row;
            grphi::fake_quantize_uniform(W, opts, out_row);
            CHECK(same_bits(out_row, reference));
            col_matrix<T> out_col(19, 23);
            grphi::fake_quantize_uniform(Wc, opts, out_col);
            CHECK(same_bits(out_col, reference));
            CHECK(same_bits(grphi::dequantize(grphi::quantize_uniform(Wc, opts)), reference));
            // An expression and a strided map of the same values.
            const row_matrix<T> twice = grphi::dequantize(grphi::quantize_uniform(W * T(2), opts));
            row_matrix<T> twice_fake;
            grphi::fake_quantize_uniform(W * T(2), opts, twice_fake);
            CHECK(same_bits(twice, twice_fake));
            row_matrix<T> wide(19, 46);
            for (Eigen::Index c = 0; c < 23; ++c) wide.col(2 * c) = W.col(c);
            const Eigen::Map<const row_matrix<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> strided(
                wide.data(), 19, 23, Eigen::Stride<Eigen::Dynamic, 2>(46, 2));
            row_matrix<T> out_strided(19, 23);
            grphi::fake_quantize_uniform(strided, opts, out_strided);
            CHECK(same_bits(out_strided, reference));
            // The STE mask: the scale covers max|w|, so nothing is ever clipped.
            row_matrix<T> out_masked;
            Eigen::MatrixXf mask = Eigen::MatrixXf::Ones(19, 23);
            grphi::fake_quantize_uniform(W, opts, out_masked, mask);
            CHECK(same_bits(out_masked, reference));
            CHECK(mask.isZero());
        }
}

TEST_CASE_TEMPLATE("uniform: zeros, denormals and all-zero channels", T, float, double) {
    row_matrix<T> W = row_matrix<T>::Zero(4, 6);
    W(1, 2) = T(0.5);
    W(1, 3) = T(-0.0);
    W(2, 0) = std::numeric_limits<T>::denorm_min();
    W(3, 5) = T(-3);
    W(3, 1) = std::numeric_limits<T>::min() / T(4);  // denormal, far below half a step
    const auto p = grphi::quantize_uniform(W, grphi::uniform_options{4, true});
    CHECK(p.scales[0] == T(0));  // all-zero channel
    const row_matrix<T> Q = grphi::dequantize(p);
    for (Eigen::Index r = 0; r < 4; ++r)
        for (Eigen::Index c = 0; c < 6; ++c)
            if (W(r, c) == T(0)) CHECK(Q(r, c) == T(0));
    CHECK(Q(1, 2) == T(0.5));
    CHECK(Q(3, 5) == T(-3));
    CHECK(Q(3, 1) == T(0));
    CHECK(Q(2, 0) != T(0));  // a denormal channel maximum still maps to the outermost code
    CHECK(std::fabs(static_cast<long double>(Q(2, 0)) - static_cast<long double>(W(2, 0))) <=
          static_cast<long double>(std::numeric_limits<T>::denorm_min()));
    const auto t = grphi::quantize_uniform(W, grphi::uniform_options{4, false});
    REQUIRE(t.scales.size() == 1);
    CHECK(t.scales[0] == T(3) / T(7));
    const row_matrix<T> Qt = grphi::dequantize(t);
    CHECK(Qt(2, 0) == T(0));
    CHECK(Qt(0, 0) == T(0));
}

TEST_CASE_TEMPLATE("uniform: empty, 1x1 and odd shapes", T, float, double) {
    for (auto shape : {std::pair<int, int>{0, 0}, {0, 5}, {5, 0}, {1, 1}, {1, 7}, {7, 1}, {3, 5}}) {
        CAPTURE(shape.first);
        CAPTURE(shape.second);
        const row_matrix<T> W = gaussian<T>(shape.first, shape.second, 1.0, 9);
        for (bool per_channel : {true, false}) {
            const grphi::uniform_options opts{3, per_channel};
            const auto p = grphi::quantize_uniform(W, opts);
            CHECK(p.codes.size() == static_cast<std::size_t>(shape.first * shape.second));
            CHECK(p.scales.size() == static_cast<std::size_t>(p.channels()));
            const row_matrix<T> Q = grphi::dequantize(p);
            CHECK(Q.rows() == shape.first);
            CHECK(Q.cols() == shape.second);
            row_matrix<T> F;
            grphi::fake_quantize_uniform(W, opts, F);
            CHECK(same_bits(F, Q));
        }
    }
    // 1x1: the single weight is its own maximum, so it is exact.
    row_matrix<T> one(1, 1);
    one(0, 0) = T(-0.3);
    CHECK(grphi::dequantize(grphi::quantize_uniform(one, grphi::uniform_options{2, true}))(0, 0) == T(-0.3));
}

TEST_CASE_TEMPLATE("uniform: bad inputs throw and write nothing", T, float, double) {
    row_matrix<T> W = gaussian<T>(4, 5, 1.0, 2);
    for (int bits : {-1, 0, 1, 9, 16}) {
        CAPTURE(bits);
        CHECK_THROWS_AS(grphi::quantize_uniform(W, grphi::uniform_options{bits, true}), std::invalid_argument);
        row_matrix<T> out;
        CHECK_THROWS_AS(grphi::fake_quantize_uniform(W, grphi::uniform_options{bits, true}, out), std::invalid_argument);
    }
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                  -std::numeric_limits<T>::infinity()}) {
        row_matrix<T> V = W;
        V(2, 3) = bad;
        try {
            (void)grphi::quantize_uniform(V);
            FAIL("no exception");
        } catch (const std::domain_error& e) {
            CHECK(std::string(e.what()).find("row 2, column 3") != std::string::npos);
        }
        row_matrix<T> out = row_matrix<T>::Constant(4, 5, T(7));
        CHECK_THROWS_AS(grphi::fake_quantize_uniform(V, grphi::uniform_options{}, out), std::domain_error);
        CHECK((out.array() == T(7)).all());
    }
    // A fixed-size destination of the wrong shape is refused rather than overrun.
    std::vector<T> buffer(6);
    Eigen::Map<row_matrix<T>> small(buffer.data(), 2, 3);
    CHECK_THROWS_AS(grphi::fake_quantize_uniform(W, grphi::uniform_options{}, small), std::invalid_argument);
    grphi::uniform_packed<T> broken = grphi::quantize_uniform(W);
    broken.codes.pop_back();
    CHECK_THROWS_AS(grphi::dequantize(broken), std::invalid_argument);
}

TEST_CASE_TEMPLATE("uniform: QAT through the straight-through estimator trains", T, float, double) {
    // Fit Y = X * A with a 4-bit weight: forward uses fake-quantized W, the gradient flows to latent W.
    std::mt19937_64 rng(17);
    std::normal_distribution<double> normal(0.0, 1.0);
    const Eigen::Index n = 64, in = 8, outs = 6;
    row_matrix<T> X(n, in), A(in, outs);
    for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = static_cast<T>(normal(rng));
    for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = static_cast<T>(normal(rng));
    const row_matrix<T> Y = X * A;
    row_matrix<T> latent = row_matrix<T>::Constant(in, outs, T(0.01));
    latent(0, 0) = T(0.02);
    const grphi::uniform_options opts{4, false};
    auto loss_of = [&](const row_matrix<T>& Wq) { return static_cast<double>((X * Wq - Y).squaredNorm()) / n; };
    row_matrix<T> Wq;
    grphi::fake_quantize_uniform(latent, opts, Wq);
    const double initial = loss_of(Wq);
    const row_matrix<T> start = latent;
    for (int step = 0; step < 300; ++step) {
        grphi::fake_quantize_uniform(latent, opts, Wq);
        const row_matrix<T> grad = (X.transpose() * (X * Wq - Y)) * (T(2) / T(n));
        latent -= T(0.05) * grad;  // STE: dL/dW = dL/dWq
    }
    grphi::fake_quantize_uniform(latent, opts, Wq);
    const double final_loss = loss_of(Wq);
    CHECK((latent - start).norm() > T(1));
    CHECK(final_loss < 0.1 * initial);
}
