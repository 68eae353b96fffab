// quantize / dequantize / fake_quantize against a brute-force reference built from the exact grid
// (the grid itself is checked against 256-bit arithmetic in test_levels.cpp).
#include <doctest/doctest.h>

#include <grphi/core/quantize.hpp>

#include "option_sets.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};
#define GRPHI_COMBOS                                                                                    \
    combo<float, grphi::phi>, combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::two>, \
        combo<float, grphi::sqrt2>

template <class T>
bool same_bits(T a, T b) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Gaussian weights with a sprinkling of special values: zeros, -0, denormals, tiny and huge magnitudes.
template <class T>
grphi::row_matrix<T> test_weights(Eigen::Index rows, Eigen::Index cols, unsigned seed, double sigma = 0.02,
                                  bool specials_too = true) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> gauss(0.0, sigma);
    grphi::row_matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(gauss(rng));
    const T specials[] = {T(0), -T(0), std::numeric_limits<T>::denorm_min(), -std::numeric_limits<T>::min(),
                          T(1e-30), T(-3.5), std::numeric_limits<T>::max(), -std::numeric_limits<T>::denorm_min() * 7};
    std::uniform_int_distribution<Eigen::Index> pick(0, W.size() - 1);
    if (specials_too && W.size() > 64)
        for (int rep = 0; rep < 3; ++rep)
            for (T s : specials) W.data()[pick(rng)] = s;
    return W;
}

std::string describe(const grphi::options& o) {
    return "per_channel=" + std::to_string(o.per_channel) + " levels=" + std::to_string(o.levels.value_or(0)) +
           " clip=" + std::to_string(o.e_min.has_value()) + " cluster=" + std::to_string(o.cluster_size) +
           " fit=" + std::to_string(o.fit_scale) + " linear=" + std::to_string(o.round == grphi::rounding::linear) +
           " flush=" + std::to_string(o.under == grphi::underflow::flush);
}

// The reference: the spec of issue 2 written out plainly, one weight at a time.
template <class T, class B>
struct reference {
    const grphi::options& o;

    // Window of a channel whose largest magnitude is m, on the grid with the given scale step.
    std::pair<int, int> window(T m, int step) const {
        const auto& g = grphi::grid_for<T, B>(o, step);
        int lo = g.k_lo, hi = g.k_hi;
        if (o.e_min) lo = std::min(std::max(*o.e_min, g.k_lo), g.k_hi);
        if (o.e_max) hi = std::min(std::max(*o.e_max, g.k_lo), g.k_hi);
        if (o.levels) {
            int top = m > 0 ? g.exponent(m) : 0;
            top = std::min(std::max(top, lo), hi);
            lo = std::max(lo, top - *o.levels + 1);
            hi = top;
        }
        return {lo, hi};
    }

    // Reconstruction of rows [r0, r1) with a window and scale step; returns the squared error.
    long double reconstruct(const grphi::row_matrix<T>& W, Eigen::Index r0, Eigen::Index r1, int lo, int hi, int step,
                            grphi::row_matrix<T>& out, std::vector<int>& exps, std::vector<int>& signs) const {
        const auto& g = grphi::grid_for<T, B>(o, step);
        long double error = 0;
        const Eigen::Index C = W.cols();
        const Eigen::Index block = o.cluster_size > 1 ? o.cluster_size : 1;
        for (Eigen::Index r = r0; r < r1; ++r) {
            std::vector<int> k(static_cast<std::size_t>(C)), s(static_cast<std::size_t>(C));
            for (Eigen::Index c = 0; c < C; ++c) {
                const T w = W(r, c);
                const T a = std::fabs(w);
                int kk = std::min(std::max(g.exponent(a), lo), hi);
                int ss = a == 0 ? 0 : (w < 0 ? -1 : 1);
                if (o.under == grphi::underflow::flush && a < g.flush_of(lo)) ss = 0;
                k[static_cast<std::size_t>(c)] = kk;
                s[static_cast<std::size_t>(c)] = ss;
            }
            for (Eigen::Index b0 = 0; b0 < C; b0 += block) {
                const Eigen::Index b1 = std::min(C, b0 + block);
                int shared = -100000;
                if (block > 1) {
                    long double sum = 0;
                    int count = 0;
                    for (Eigen::Index c = b0; c < b1; ++c)
                        if (s[static_cast<std::size_t>(c)]) {
                            sum += k[static_cast<std::size_t>(c)];
                            ++count;
                        }
                    shared = count ? static_cast<int>(std::nearbyint(sum / count)) : lo;  // half to even
                    exps.push_back(shared);
                }
                for (Eigen::Index c = b0; c < b1; ++c) {
                    const int kk = block > 1 ? shared : k[static_cast<std::size_t>(c)];
                    const int ss = s[static_cast<std::size_t>(c)];
                    if (block == 1) exps.push_back(ss ? kk : lo);
                    signs.push_back(ss);
                    const T level = g.level_of(kk);
                    out(r, c) = ss > 0 ? level : (ss < 0 ? -level : T(0));
                    const long double d = static_cast<long double>(W(r, c)) - out(r, c);
                    error += d * d;
                }
            }
        }
        return error;
    }

    struct result {
        grphi::row_matrix<T> values;
        std::vector<int> exps, signs, lo, hi, steps;
    };

    result run(const grphi::row_matrix<T>& W) const {
        result res;
        res.values.resize(W.rows(), W.cols());
        const Eigen::Index channels = o.per_channel ? W.rows() : (W.rows() > 0 ? 1 : 0);
        for (Eigen::Index ch = 0; ch < channels; ++ch) {
            const Eigen::Index r0 = o.per_channel ? ch : 0, r1 = o.per_channel ? ch + 1 : W.rows();
            T m = 0;
            for (Eigen::Index r = r0; r < r1; ++r) m = std::max(m, W.row(r).cwiseAbs().maxCoeff());
            int best_step = 0;
            if (o.fit_scale && m > 0) {
                long double best = std::numeric_limits<long double>::infinity();
                for (int step = -8; step <= 8; ++step) {
                    auto [lo, hi] = window(m, step);
                    grphi::row_matrix<T> tmp(W.rows(), W.cols());
                    std::vector<int> e, s;
                    const long double err = reconstruct(W, r0, r1, lo, hi, step, tmp, e, s);
                    // Strictly better wins; ties keep the smaller |step|, then the negative one.
                    if (err < best || (err == best && (std::abs(step) < std::abs(best_step)))) {
                        best = err;
                        best_step = step;
                    }
                }
            }
            auto [lo, hi] = window(m, best_step);
            res.lo.push_back(lo);
            res.hi.push_back(hi);
            res.steps.push_back(best_step);
            reconstruct(W, r0, r1, lo, hi, best_step, res.values, res.exps, res.signs);
        }
        return res;
    }
};

// quantize, dequantize and fake_quantize of W with options o against the reference.
template <class T, class B>
void check_against_reference(const grphi::row_matrix<T>& W, const grphi::options& o) {
    const reference<T, B> ref{o};
    const auto expected = ref.run(W);
    const auto p = grphi::quantize<B>(W, o);
    grphi::validate(p);
    const auto deq = grphi::dequantize(p);
    const auto fake = grphi::fake_quantize<B>(W, o);
    REQUIRE(p.window_lo.size() == expected.lo.size());
    for (std::size_t c = 0; c < expected.lo.size(); ++c) {
        CHECK(p.window_lo[c] == expected.lo[c]);
        CHECK(p.window_hi[c] == expected.hi[c]);
    }
    // Scale steps: the chosen step must reach the reference's minimal error (ties may pick either).
    grphi::row_matrix<T> diff_ref = W - expected.values, diff_got = W - deq;
    if (!o.fit_scale) {
        for (auto s : p.scale_steps) CHECK(s == 0);
        REQUIRE(p.exponents.size() == expected.exps.size());
        for (std::size_t i = 0; i < expected.exps.size(); ++i) CHECK(p.exponents[i] == expected.exps[i]);
    }
    CHECK(diff_got.template cast<long double>().squaredNorm() <=
          diff_ref.template cast<long double>().squaredNorm() * (1 + 1e-12L));
    bool identical = true, zeros_kept = true;
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        identical = identical && same_bits(deq.data()[i], fake.data()[i]);
        if (W.data()[i] == 0) zeros_kept = zeros_kept && same_bits(fake.data()[i], T(0));
    }
    CHECK(identical);
    CHECK(zeros_kept);
    if (!o.fit_scale) {
        for (Eigen::Index i = 0; i < W.size(); ++i) {
            if (!same_bits(fake.data()[i], expected.values.data()[i])) {
                FAIL("value differs from reference at " << i << ": " << fake.data()[i] << " vs "
                                                      << expected.values.data()[i]);
                break;
            }
        }
    }
}

}  // namespace

TEST_CASE_TEMPLATE("quantize, dequantize and fake_quantize agree with the reference for every option set", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(7, 45, 11);
    for (const auto& o : grphi_test::all_option_sets(-5, {0, 1, 5, 32})) {
        CAPTURE(describe(o));
        check_against_reference<T, B>(W, o);
    }
}

// Clip windows from narrow to wider than the register tables (64 cells for float, 32 for double),
// with log-uniform magnitudes that reach both ends, for cluster sizes on and off the register route.
TEST_CASE_TEMPLATE("every clip window width, clustered or not, matches the reference", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    std::mt19937_64 rng(99);
    for (int half_width : {3, 8, 12, 16, 20, 23, 26, 32, 45}) {
        const int lo = -half_width - 2, hi = half_width - 2;
        const auto& g = grphi::grid_for<T, B>();
        std::uniform_real_distribution<double> exponent(lo - 3.0, hi + 3.0);
        grphi::row_matrix<T> W(5, 83);  // 83 = 5 blocks of 16 + 3: register blocks with a masked tail
        for (Eigen::Index i = 0; i < W.size(); ++i) {
            const double magnitude = std::pow(static_cast<double>(B::value), exponent(rng));
            W.data()[i] = static_cast<T>((i % 3 == 0 ? -1 : 1) * magnitude);
        }
        W(1, 4) = T(0);
        W(2, 80) = -T(0);
        for (int cluster : {0, 5, 16, 32, 48}) {
            for (auto under : {grphi::underflow::clamp, grphi::underflow::flush}) {
                grphi::options o;
                o.e_min = std::max(lo, g.k_lo);
                o.e_max = std::min(hi, g.k_hi);
                o.cluster_size = cluster;
                o.under = under;
                CAPTURE(half_width);
                CAPTURE(describe(o));
                const reference<T, B> ref{o};
                const auto expected = ref.run(W);
                const auto fake = grphi::fake_quantize<B>(W, o);
                const auto deq = grphi::dequantize(grphi::quantize<B>(W, o));
                bool fake_ok = true, deq_ok = true;
                for (Eigen::Index i = 0; i < W.size(); ++i) {
                    fake_ok = fake_ok && same_bits(fake.data()[i], expected.values.data()[i]);
                    deq_ok = deq_ok && same_bits(deq.data()[i], expected.values.data()[i]);
                }
                CHECK(fake_ok);
                CHECK(deq_ok);
            }
        }
    }
}

TEST_CASE_TEMPLATE("fit_scale picks the error-minimising step", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    // Rows scaled by off-grid factors so that different channels want different steps.
    grphi::row_matrix<T> W = test_weights<T>(6, 64, 5, 1.0, false);
    for (Eigen::Index r = 0; r < W.rows(); ++r) W.row(r) *= static_cast<T>(std::pow(1.13, double(r)));
    grphi::options o;
    o.fit_scale = true;
    const auto p = grphi::quantize<B>(W, o);
    const reference<T, B> ref{o};
    const auto expected = ref.run(W);
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
        const auto got = (W.row(r) - grphi::dequantize(p).row(r)).template cast<long double>().squaredNorm();
        const auto want = (W.row(r) - expected.values.row(r)).template cast<long double>().squaredNorm();
        CHECK(got <= want * (1 + 1e-12L));
    }
    // Scaling never loses to no scaling.
    grphi::options plain;
    const auto err_plain = (W - grphi::fake_quantize<B>(W, plain)).template cast<long double>().squaredNorm();
    const auto err_fit = (W - grphi::fake_quantize<B>(W, o)).template cast<long double>().squaredNorm();
    CHECK(err_fit <= err_plain);
}

TEST_CASE_TEMPLATE("layouts: column-major, strided maps and expressions give the same result", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(9, 33, 3);
    grphi::options o;
    o.levels = 8;
    const auto want = grphi::fake_quantize<B>(W, o);

    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> col_major = W;
    CHECK(grphi::fake_quantize<B>(col_major, o) == want);

    // A strided view: every other column of a wider buffer.
    grphi::row_matrix<T> wide(9, 66);
    for (Eigen::Index c = 0; c < 33; ++c) wide.col(2 * c) = W.col(c);
    Eigen::Map<const grphi::row_matrix<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> strided(wide.data(), 9, 33,
                                                                                       Eigen::Stride<Eigen::Dynamic, 2>(66, 2));
    CHECK(grphi::fake_quantize<B>(strided, o) == want);

    // An expression and a block.
    const grphi::row_matrix<T> half = W * T(0.5);
    CHECK(grphi::fake_quantize<B>(W * T(0.5), o) == grphi::fake_quantize<B>(half, o));
    grphi::row_matrix<T> big = grphi::row_matrix<T>::Zero(12, 40);
    big.block(2, 3, 9, 33) = W;
    CHECK(grphi::fake_quantize<B>(big.block(2, 3, 9, 33), o) == want);

    // Writing into a column-major output and into a block of a larger matrix.
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> out_cm(9, 33);
    grphi::fake_quantize<B>(W, o, out_cm);
    CHECK(out_cm == want);
    grphi::row_matrix<T> host = grphi::row_matrix<T>::Constant(11, 35, T(7));
    grphi::fake_quantize<B>(W, o, host.block(1, 1, 9, 33));
    CHECK(host.block(1, 1, 9, 33) == want);
    CHECK(host(0, 0) == T(7));

    // quantize sees the same values through every layout.
    CHECK(grphi::dequantize(grphi::quantize<B>(col_major, o)) == want);
    CHECK(grphi::dequantize(grphi::quantize<B>(strided, o)) == want);
}

TEST_CASE_TEMPLATE("shapes: empty, 1x1, single row and column, odd sizes", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    for (auto shape : {std::pair<int, int>{0, 0}, {0, 5}, {5, 0}, {1, 1}, {1, 17}, {17, 1}, {3, 63}, {2, 65}}) {
        CAPTURE(shape.first);
        CAPTURE(shape.second);
        grphi::row_matrix<T> W = test_weights<T>(shape.first, shape.second, 9);
        for (int cluster : {0, 4}) {
            grphi::options o;
            o.cluster_size = cluster;
            o.levels = 4;
            const auto p = grphi::quantize<B>(W, o);
            CHECK(p.rows == shape.first);
            CHECK(p.cols == shape.second);
            CHECK(p.signs.size() == std::size_t(shape.first) * std::size_t(shape.second));
            const auto d = grphi::dequantize(p);
            CHECK(d.rows() == shape.first);
            CHECK(d.cols() == shape.second);
            CHECK(d == grphi::fake_quantize<B>(W, o));
        }
    }
    grphi::row_matrix<T> one(1, 1);
    one(0, 0) = T(1);
    CHECK(grphi::fake_quantize<B>(one)(0, 0) == T(1));  // b^0 is exactly 1
    one(0, 0) = T(-1);
    CHECK(grphi::fake_quantize<B>(one)(0, 0) == T(-1));
}

TEST_CASE_TEMPLATE("zeros, denormals and the natural range", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto& g = grphi::grid_for<T, B>();
    grphi::row_matrix<T> W(1, 6);
    W << T(0), -T(0), std::numeric_limits<T>::denorm_min(), -std::numeric_limits<T>::min(), std::numeric_limits<T>::max(),
        -std::numeric_limits<T>::max();
    const auto p = grphi::quantize<B>(W);
    CHECK(p.signs[0] == 0);
    CHECK(p.signs[1] == 0);
    CHECK(p.signs[2] == 1);
    CHECK(p.signs[3] == -1);
    CHECK(p.exponents[2] == g.exponent(std::numeric_limits<T>::denorm_min()));
    CHECK(p.exponents[4] == g.k_hi);  // the largest finite value saturates at the top level
    const auto d = grphi::dequantize(p);
    CHECK(same_bits(d(0, 0), T(0)));
    CHECK(same_bits(d(0, 1), T(0)));
    CHECK(d(0, 2) > 0);
    CHECK(std::isfinite(d(0, 4)));
    CHECK(d(0, 5) == -d(0, 4));

    // Flush: below half of the lowest level is zero, at or above it is kept.
    grphi::options o;
    o.e_min = -3;
    o.e_max = 3;
    o.under = grphi::underflow::flush;
    const T half = g.flush_of(-3);
    grphi::row_matrix<T> F(1, 4);
    F << half, std::nextafter(half, T(0)), -half, T(0.5);
    const auto f = grphi::fake_quantize<B>(F, o);
    CHECK(f(0, 0) == g.level_of(-3));
    CHECK(same_bits(f(0, 1), T(0)));
    CHECK(f(0, 2) == -g.level_of(-3));
    o.under = grphi::underflow::clamp;
    CHECK(grphi::fake_quantize<B>(F, o)(0, 1) == g.level_of(-3));
}

TEST_CASE_TEMPLATE("NaN and Inf throw std::domain_error naming the position, and nothing is written", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity(),
                  -std::numeric_limits<T>::infinity()}) {
        grphi::row_matrix<T> W = test_weights<T>(4, 50, 2);
        W(2, 37) = bad;
        CHECK_THROWS_AS(grphi::quantize<B>(W), std::domain_error);
        try {
            grphi::quantize<B>(W);
        } catch (const std::domain_error& e) {
            CHECK(std::string(e.what()).find("row 2, column 37") != std::string::npos);
        }
        // The reusing overload leaves its output empty (never half-written) and names the same weight.
        auto reused = grphi::quantize<B>(test_weights<T>(4, 50, 3));
        CHECK_THROWS_WITH_AS(grphi::quantize<B>(W, grphi::options{}, reused), doctest::Contains("row 2, column 37"),
                             std::domain_error);
        CHECK(reused.rows == 0);
        CHECK(reused.signs.empty());
        CHECK(reused.window_lo.empty());
        grphi::options per_tensor;
        per_tensor.per_channel = false;
        CHECK_THROWS_WITH_AS(grphi::quantize<B>(W, per_tensor), doctest::Contains("row 2, column 37"), std::domain_error);
        grphi::row_matrix<T> out = grphi::row_matrix<T>::Constant(4, 50, T(42));
        CHECK_THROWS_AS(grphi::fake_quantize<B>(W, grphi::options{}, out), std::domain_error);
        CHECK((out.array() == T(42)).all());
    }
}

TEST_CASE_TEMPLATE("invalid options and shapes are rejected with a message", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(3, 8, 1);
    grphi::options o;
    o.e_min = 3;
    o.e_max = 1;
    CHECK_THROWS_WITH_AS(grphi::quantize<B>(W, o), doctest::Contains("e_min"), std::invalid_argument);
    o = {};
    o.levels = 0;
    CHECK_THROWS_WITH_AS(grphi::fake_quantize<B>(W, o), doctest::Contains("levels"), std::invalid_argument);
    o = {};
    o.cluster_size = -2;
    CHECK_THROWS_WITH_AS(grphi::quantize<B>(W, o), doctest::Contains("cluster_size"), std::invalid_argument);
    // A fixed-size output of the wrong shape.
    Eigen::Matrix<T, 2, 2> small;
    CHECK_THROWS_AS(grphi::fake_quantize<B>(W, grphi::options{}, small), std::invalid_argument);
    // A packed tensor tampered with is refused by dequantize.
    auto p = grphi::quantize<B>(W);
    p.exponents.pop_back();
    CHECK_THROWS_WITH_AS(grphi::dequantize(p), doctest::Contains("exponents"), std::invalid_argument);
    p = grphi::quantize<B>(W);
    p.window_hi[0] = static_cast<std::int16_t>(p.window_lo[0] - 1);
    CHECK_THROWS_AS(grphi::dequantize(p), std::invalid_argument);
}

TEST_CASE_TEMPLATE("clustering: the tail block averages only its real members", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto& g = grphi::grid_for<T, B>();
    // Row of 5 with cluster 4: the tail block holds one weight at b^3; the seed's zero padding would give round(3/4)=1.
    grphi::row_matrix<T> W(1, 5);
    W << g.level_of(0), g.level_of(0), -g.level_of(2), T(0), g.level_of(3);
    grphi::options o;
    o.cluster_size = 4;
    const auto p = grphi::quantize<B>(W, o);
    REQUIRE(p.exponents.size() == 2);
    CHECK(p.exponents[0] == 1);  // mean of {0, 0, 2} over nonzero members (the zero is not counted)
    CHECK(p.exponents[1] == 3);
    // Ties round half to even: mean of {0, 1} is 0.5 -> 0; of {1, 2} is 1.5 -> 2.
    grphi::row_matrix<T> H(1, 4);
    H << g.level_of(0), g.level_of(1), g.level_of(1), g.level_of(2);
    o.cluster_size = 2;
    const auto q = grphi::quantize<B>(H, o);
    CHECK(q.exponents[0] == 0);
    CHECK(q.exponents[1] == 2);
    const auto d = grphi::dequantize(q);
    CHECK(d(0, 1) == g.level_of(0));
    CHECK(d(0, 2) == g.level_of(2));
}

TEST_CASE_TEMPLATE("the clip mask marks weights outside the window", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto& g = grphi::grid_for<T, B>();
    grphi::row_matrix<T> W(1, 5);
    W << g.level_of(-6), g.level_of(-2), g.level_of(0), -g.level_of(4), T(0);
    grphi::options o;
    o.e_min = -3;
    o.e_max = 2;
    grphi::row_matrix<T> out;
    Eigen::Matrix<unsigned char, Eigen::Dynamic, Eigen::Dynamic> mask;
    grphi::fake_quantize<B>(W, o, out, mask);
    CHECK(mask(0, 0) == 1);
    CHECK(mask(0, 1) == 0);
    CHECK(mask(0, 2) == 0);
    CHECK(mask(0, 3) == 1);
    CHECK(mask(0, 4) == 0);
    CHECK(out == grphi::fake_quantize<B>(W, o));
    CHECK(out(0, 3) == -g.level_of(2));
}

TEST_CASE_TEMPLATE("per-tensor mode shares one window, per-channel gives each row its own", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    grphi::row_matrix<T> W = test_weights<T>(3, 40, 4, 1.0, false);
    W.row(1) *= T(100);
    grphi::options o;
    o.levels = 5;
    const auto pc = grphi::quantize<B>(W, o);
    CHECK(pc.window_lo.size() == 3);
    CHECK(pc.window_hi[1] > pc.window_hi[0]);
    for (std::size_t c = 0; c < 3; ++c) CHECK(pc.window_hi[c] - pc.window_lo[c] == 4);
    o.per_channel = false;
    const auto pt = grphi::quantize<B>(W, o);
    CHECK(pt.window_lo.size() == 1);
    CHECK(pt.window_hi[0] == pc.window_hi[1]);
}

#if defined(_OPENMP)
#include <omp.h>
TEST_CASE_TEMPLATE("OpenMP over channels changes nothing in the output", C, GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(512, 600, 21);  // large enough to take the parallel path
    for (int cluster : {0, 16}) {
        grphi::options o;
        o.levels = 12;
        o.cluster_size = cluster;
        o.fit_scale = cluster == 0;
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        const auto p1 = grphi::quantize<B>(W, o);
        const auto f1 = grphi::fake_quantize<B>(W, o);
        omp_set_num_threads(2);
        const auto p2 = grphi::quantize<B>(W, o);
        const auto f2 = grphi::fake_quantize<B>(W, o);
        omp_set_num_threads(saved);
        CHECK(p1.exponents == p2.exponents);
        CHECK(p1.signs == p2.signs);
        CHECK(p1.scale_steps == p2.scale_steps);
        CHECK(f1 == f2);
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// grphi::custom: the base comes from options::base_value at run time.

namespace {

grphi::options with_base(grphi::options o, double b) {
    o.base_value = b;
    return o;
}

}  // namespace

TEST_CASE_TEMPLATE("custom base 2 quantizes exactly like two, bit for bit", T, float, double) {
    const auto W = test_weights<T>(7, 45, 23);
    for (const auto& o : grphi_test::all_option_sets(-5, {0, 5})) {
        CAPTURE(describe(o));
        const auto named = grphi::quantize<grphi::two>(W, o);
        const auto custom = grphi::quantize<grphi::custom>(W, with_base(o, 2.0));
        CHECK(custom.opts.base_value == 2.0);
        CHECK(custom.signs == named.signs);
        CHECK(custom.exponents == named.exponents);
        CHECK(custom.window_lo == named.window_lo);
        CHECK(custom.window_hi == named.window_hi);
        CHECK(custom.scale_steps == named.scale_steps);
        const grphi::row_matrix<T> deq_named = grphi::dequantize(named), deq_custom = grphi::dequantize(custom);
        const grphi::row_matrix<T> fake_custom = grphi::fake_quantize<grphi::custom>(W, with_base(o, 2.0));
        CHECK(std::memcmp(deq_named.data(), deq_custom.data(), sizeof(T) * std::size_t(W.size())) == 0);
        CHECK(std::memcmp(deq_named.data(), fake_custom.data(), sizeof(T) * std::size_t(W.size())) == 0);
    }
}

TEST_CASE_TEMPLATE("custom bases 1.5 and 3.7 agree with the reference for every option set", T, float, double) {
    const auto W = test_weights<T>(7, 45, 11);
    for (double b : {1.5, 3.7})
        for (const auto& o : grphi_test::all_option_sets(-5, {0, 1, 5})) {
            CAPTURE(b);
            CAPTURE(describe(o));
            check_against_reference<T, grphi::custom>(W, with_base(o, b));
        }
    // The clip mask and layouts go through the same path.
    const grphi::options o = with_base([] {
        grphi::options l;
        l.levels = 5;
        return l;
    }(), 1.5);
    grphi::row_matrix<T> out(W.rows(), W.cols()), mask(W.rows(), W.cols());
    grphi::fake_quantize<grphi::custom>(W, o, out, mask);
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> col_major = W;
    CHECK(grphi::fake_quantize<grphi::custom>(col_major, o) == out);
    CHECK(grphi::dequantize(grphi::quantize<grphi::custom>(W, o)) == out);
    CHECK(mask.sum() > 0);  // five levels clip the small weights
}

TEST_CASE_TEMPLATE("custom base: base_value is required, validated, and refused by named bases", T, float, double) {
    const auto W = test_weights<T>(3, 8, 1);
    CHECK_THROWS_WITH_AS(grphi::quantize<grphi::custom>(W, grphi::options{}), doctest::Contains("base_value is required"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(grphi::fake_quantize<grphi::custom>(W, grphi::options{}),
                         doctest::Contains("base_value is required"), std::invalid_argument);
    for (double bad : {1.0, 1.02, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(grphi::quantize<grphi::custom>(W, with_base({}, bad)), doctest::Contains("base_value="),
                             std::invalid_argument);
        CHECK_THROWS_AS(grphi::fake_quantize<grphi::custom>(W, with_base({}, bad)), std::invalid_argument);
    }
    CHECK_THROWS_WITH_AS(grphi::quantize<grphi::custom>(W, with_base({}, 1.02)), doctest::Contains("1.02"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS(grphi::quantize<grphi::phi>(W, with_base({}, 1.5)), doctest::Contains("only for grphi::custom"),
                         std::invalid_argument);
    CHECK_THROWS_AS(grphi::fake_quantize<grphi::two>(W, with_base({}, 2.0)), std::invalid_argument);
    // Bad options throw before the output is touched.
    grphi::packed<T, grphi::custom> reused = grphi::quantize<grphi::custom>(W, with_base({}, 1.5));
    const auto before = reused.exponents;
    CHECK_THROWS_AS(grphi::quantize<grphi::custom>(W, grphi::options{}, reused), std::invalid_argument);
    CHECK(reused.exponents == before);
    // A packed tensor carries its base: dequantize needs it, and checks the windows against its range.
    auto p = grphi::quantize<grphi::custom>(W, with_base({}, 1.5));
    CHECK(grphi::dequantize(p) == grphi::fake_quantize<grphi::custom>(W, with_base({}, 1.5)));
    p.opts.base_value.reset();
    CHECK_THROWS_WITH_AS(grphi::dequantize(p), doctest::Contains("base_value is required"), std::invalid_argument);
    p.opts.base_value = 1e300;  // b = 1e300 has a natural range of one to three exponents: 1.5's windows fall outside
    CHECK_THROWS_WITH_AS(grphi::dequantize(p), doctest::Contains("natural range"), std::invalid_argument);
}

// ---- Block scales (options::block_size) ----

namespace {

std::vector<grphi::options> block_option_sets() {
    std::vector<grphi::options> sets;
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (int size : {16, 32, 64, 7})
            for (auto search : {grphi::scale_search::absmax, grphi::scale_search::mse})
                for (int variant = 0; variant < 4; ++variant) {
                    grphi::options o;
                    o.block_size = size;
                    o.block_format = format;
                    o.search = search;
                    o.levels = variant == 3 ? 3 : 8;
                    o.per_channel = variant != 2;
                    if (variant == 1) o.under = grphi::underflow::flush;
                    if (variant == 2) o.round = grphi::rounding::linear;
                    if (variant == 3) {
                        o.e_min = -12;
                        o.e_max = 2;
                    }
                    o.fit_scale = format == grphi::block_scale::exponent && variant == 1;
                    sets.push_back(o);
                }
    return sets;
}

std::string describe_blocks(const grphi::options& o) {
    return describe(o) + " block=" + std::to_string(o.block_size) + " format=" + std::to_string(int(o.block_format)) +
           " search=" + std::to_string(int(o.search));
}

}  // namespace

TEST_CASE_TEMPLATE("block scales: fake_quantize equals dequantize(quantize()), zeros stay zero, validate passes", C,
                   GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(6, 77, 5);
    for (const auto& o : block_option_sets()) {
        CAPTURE(describe_blocks(o));
        const auto p = grphi::quantize<B>(W, o);
        REQUIRE_NOTHROW(grphi::validate(p));
        CHECK(p.scale_block_count() == static_cast<std::size_t>(6 * ((77 + o.block_size - 1) / o.block_size)));
        const auto deq = grphi::dequantize(p);
        const auto fake = grphi::fake_quantize<B>(W, o);
        bool identical = true, zeros_kept = true;
        for (Eigen::Index i = 0; i < W.size(); ++i) {
            identical = identical && same_bits(deq.data()[i], fake.data()[i]);
            if (W.data()[i] == 0) zeros_kept = zeros_kept && same_bits(fake.data()[i], T(0));
        }
        CHECK(identical);
        CHECK(zeros_kept);
    }
}

TEST_CASE("block scales: NaN/Inf throw and leave the output empty") {
    grphi::row_matrix<float> W = grphi::row_matrix<float>::Constant(3, 40, 0.5f);
    W(2, 33) = std::numeric_limits<float>::quiet_NaN();
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16}) {
        grphi::options o;
        o.levels = 8;
        o.block_size = 16;
        o.block_format = format;
        grphi::packed<float, grphi::phi> p = grphi::quantize<grphi::phi>(grphi::row_matrix<float>::Ones(2, 2).eval(), o);
        CHECK_THROWS_WITH_AS(grphi::quantize<grphi::phi>(W, o, p), doctest::Contains("row 2, column 33 is NaN"),
                             std::domain_error);
        CHECK(p.size() == 0);
        CHECK(p.block_top.empty());
        CHECK_THROWS_AS(grphi::fake_quantize<grphi::phi>(W, o), std::domain_error);
    }
}

namespace {

// The block reference, written from the definitions in options.hpp with long-double logarithms and a
// search over every candidate level (no thresholds, no tables): exponent scales, absmax or searched.
template <class T, class B>
struct block_reference {
    const grphi::options& o;

    long double log_b() const { return std::log(static_cast<long double>(B::value)); }
    // Nearest of levels(k), k in [lo, hi] (log: by log distance; linear: by distance); ties to the larger.
    template <class Level>
    int nearest(T a, int lo, int hi, Level&& level) const {
        int best = hi;
        long double best_d = std::numeric_limits<long double>::infinity();
        for (int k = hi; k >= lo; --k) {
            const long double v = static_cast<long double>(level(k));
            const long double d = o.round == grphi::rounding::log ? std::fabs(std::log(static_cast<long double>(a)) - std::log(v))
                                                                  : std::fabs(static_cast<long double>(a) - v);
            if (d < best_d) {
                best_d = d;
                best = k;
            }
        }
        return best;
    }

    // Exponent scales: one block with top dropped by `drop` on step `step`; returns the squared error.
    long double exponent_block(const T* w, std::size_t len, int step, int drop, std::vector<T>& out, int& top) const {
        const auto& g = grphi::grid_for<T, B>(o, step);
        const int clip_lo = o.e_min ? std::clamp(*o.e_min, g.k_lo, g.k_hi) : g.k_lo;
        const int clip_hi = o.e_max ? std::clamp(*o.e_max, g.k_lo, g.k_hi) : g.k_hi;
        T m = 0;
        for (std::size_t i = 0; i < len; ++i) m = std::max(m, std::fabs(w[i]));
        auto level = [&](int k) { return g.level_of(k); };
        top = m > 0 ? nearest(m, g.k_lo, g.k_hi, level) - drop : 0;
        top = std::clamp(top, clip_lo, clip_hi);
        const int lo = std::max(clip_lo, top - *o.levels + 1);
        long double err = 0;
        for (std::size_t i = 0; i < len; ++i) {
            const T a = std::fabs(w[i]);
            T v = 0;
            if (a != 0 && !(o.under == grphi::underflow::flush && static_cast<long double>(a) < static_cast<long double>(g.level_of(lo)) / 2))
                v = g.level_of(nearest(a, lo, top, level));
            out[i] = v == 0 ? T(0) : (w[i] < 0 ? -v : v);  // zero and flushed weights are +0
            const long double d = static_cast<long double>(w[i]) - out[i];
            err += d * d;
        }
        return err;
    }

    // fp16/e4m3 scales: one block with scale s on channel window [lo, hi].
    long double scaled_block(const T* w, std::size_t len, T s, int lo, int hi, std::vector<T>& out) const {
        const auto& g = grphi::grid_for<T, B>(o, 0);
        auto value = [&](int k) { return static_cast<T>(s * g.level_of(k)); };
        long double err = 0;
        for (std::size_t i = 0; i < len; ++i) {
            const T a = std::fabs(w[i]);
            T v = 0;
            if (a != 0 && !(o.under == grphi::underflow::flush && static_cast<long double>(a) < static_cast<long double>(value(lo)) / 2))
                v = value(nearest(a, lo, hi, value));
            out[i] = (a == 0 || v == 0) ? T(0) : (w[i] < 0 ? -v : v);
            const long double d = static_cast<long double>(w[i]) - out[i];
            err += d * d;
        }
        return err;
    }
};

// Every positive scale code <= 1, by brute force over the code space.
std::vector<std::uint16_t> all_scale_codes(grphi::block_scale f) {
    std::vector<std::uint16_t> codes;
    for (unsigned c = 0; c < (f == grphi::block_scale::fp16 ? 65536u : 256u); ++c)
        if (grphi::detail::valid_block_scale_code(f, static_cast<std::uint16_t>(c))) codes.push_back(static_cast<std::uint16_t>(c));
    return codes;
}

template <class T, class B>
void check_blocks_against_reference(const grphi::row_matrix<T>& W, const grphi::options& o) {
    const block_reference<T, B> ref{o};
    const auto p = grphi::quantize<B>(W, o);
    grphi::validate(p);
    const auto got = grphi::dequantize(p);
    const auto n = static_cast<std::size_t>(W.cols());
    const auto size = static_cast<std::size_t>(o.block_size);
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    std::vector<T> out(size), best_out(size);
    const auto& g0 = grphi::grid_for<T, B>(o, 0);
    long double searched_error = 0, best_error = 0;
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
        const T* w = W.data() + r * W.cols();
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t len = std::min(size, n - start);
            const std::size_t at = static_cast<std::size_t>(r) * per_row + b;
            long double got_err = 0;
            for (std::size_t i = 0; i < len; ++i) {
                const long double d = static_cast<long double>(w[start + i]) - got(r, static_cast<Eigen::Index>(start + i));
                got_err += d * d;
            }
            long double best = std::numeric_limits<long double>::infinity();
            if (o.block_format == grphi::block_scale::exponent) {
                const bool searched = o.fit_scale || o.search == grphi::scale_search::mse;
                for (int step = o.fit_scale ? -8 : 0; step <= (o.fit_scale ? 8 : 0); ++step)
                    for (int drop = 0; drop <= (o.search == grphi::scale_search::mse ? 1 : 0); ++drop) {
                        int top = 0;
                        const long double e = ref.exponent_block(w + start, len, step, drop, out, top);
                        if (e < best) {
                            best = e;
                            best_out = out;
                        }
                        if (!searched) {
                            CHECK(p.block_top[at] == top);
                            CHECK(p.block_steps[at] == 0);
                        }
                    }
                if (!searched) {
                    for (std::size_t i = 0; i < len; ++i)
                        CHECK(same_bits(got(r, static_cast<Eigen::Index>(start + i)), best_out[i]));
                } else {
                    CHECK(got_err <= best * (1 + 1e-12L) + std::numeric_limits<long double>::min());
                    CHECK(got_err >= best * (1 - 1e-12L));
                }
            } else {
                const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
                // The channel top: the smallest exponent whose level reaches the channel's largest magnitude.
                T cm = 0;
                for (Eigen::Index rr = o.per_channel ? r : 0; rr < (o.per_channel ? r + 1 : W.rows()); ++rr)
                    cm = std::max(cm, W.row(rr).cwiseAbs().maxCoeff());
                int hi = g0.k_lo;
                while (hi < g0.k_hi && g0.level_of(hi) < cm) ++hi;
                if (o.e_max) hi = std::min(hi, std::max(*o.e_max, g0.k_lo));
                if (o.e_min) hi = std::max(hi, std::min(*o.e_min, g0.k_hi));
                const int lo = std::max(o.e_min ? std::clamp(*o.e_min, g0.k_lo, g0.k_hi) : g0.k_lo, hi - *o.levels + 1);
                CHECK(p.window_hi[ch] == hi);
                CHECK(p.window_lo[ch] == lo);
                const double s = grphi::detail::block_scale_value(o.block_format, p.block_scales[at]);
                const long double e = ref.scaled_block(w + start, len, static_cast<T>(s), lo, hi, out);
                for (std::size_t i = 0; i < len; ++i) {
                    CAPTURE(w[start + i]);
                    CAPTURE(s);
                    CAPTURE(out[i]);
                    CHECK(same_bits(got(r, static_cast<Eigen::Index>(start + i)), out[i]));
                }
                // The scale: absmax's nearest code, or (searched) no worse than absmax and near the best code.
                T m = 0;
                for (std::size_t i = 0; i < len; ++i) m = std::max(m, std::fabs(w[start + i]));
                const long double ratio = m > 0 ? static_cast<long double>(m) / g0.level_of(hi) : 1.0L;
                std::uint16_t nearest = 0;
                long double nearest_d = std::numeric_limits<long double>::infinity();
                long double best_code_err = std::numeric_limits<long double>::infinity(), absmax_err = 0;
                for (auto code : all_scale_codes(o.block_format)) {
                    const long double v = grphi::detail::block_scale_value(o.block_format, code);
                    const long double d = std::fabs(v - std::min(ratio, 1.0L));
                    if (d < nearest_d) {
                        nearest_d = d;
                        nearest = code;
                    }
                    if (o.search == grphi::scale_search::mse && v >= std::min(ratio, 1.0L) / (B::value * B::value) &&
                        v <= std::min(1.0L, ratio * std::sqrt(B::value)) && m > 0)
                        best_code_err = std::min(best_code_err, ref.scaled_block(w + start, len, static_cast<T>(v), lo, hi, out));
                }
                if (m > 0 && grphi::detail::block_scale_value(o.block_format, nearest) < 1e-300) nearest = 1;
                absmax_err = ref.scaled_block(w + start, len, static_cast<T>(grphi::detail::block_scale_value(o.block_format, nearest)), lo, hi, out);
                if (o.search == grphi::scale_search::absmax) {
                    CHECK(p.block_scales[at] == nearest);
                } else if (m > 0) {
                    CHECK(e <= absmax_err * (1 + 1e-12L));
                    // e4m3 tries every code in [absmax / b^2, absmax * b^(1/2)]: the best of them. fp16 takes a
                    // ladder with least-squares refits: over the tensor within 5% of the best codes' error.
                    if (o.block_format == grphi::block_scale::e4m3)
                        CHECK(e <= best_code_err * (1 + 1e-12L) + std::numeric_limits<long double>::min());
                    searched_error += e;
                    best_error += best_code_err;
                }
            }
        }
    }
    if (o.block_format == grphi::block_scale::fp16 && o.search == grphi::scale_search::mse)
        CHECK(searched_error <= best_error * 1.05L);
}

}  // namespace

TEST_CASE_TEMPLATE("block scales agree with a brute-force reference (sizes, short tails, clip, flush, search)", C,
                   GRPHI_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = test_weights<T>(4, 83, 17);  // 83 columns: a short tail block for every size
    for (const auto& o : block_option_sets()) {
        if (o.block_format == grphi::block_scale::fp16 && o.search == grphi::scale_search::mse && o.block_size != 16) continue;
        CAPTURE(describe_blocks(o));
        check_blocks_against_reference<T, B>(W, o);
    }
}

TEST_CASE("block scales: custom base and denormal-only blocks match the reference") {
    grphi::row_matrix<double> W = test_weights<double>(3, 50, 23);
    for (int c = 0; c < 16; ++c) W(1, c) = std::numeric_limits<double>::denorm_min() * (c + 1) * (c % 2 ? -1 : 1);
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16}) {
        grphi::options o;
        o.base_value = 1.7;
        o.levels = 8;
        o.block_size = 16;
        o.block_format = format;
        CAPTURE(int(format));
        const auto p = grphi::quantize<grphi::custom>(W, o);
        const auto fake = grphi::fake_quantize<grphi::custom>(W, o);
        const auto deq = grphi::dequantize(p);
        for (Eigen::Index i = 0; i < W.size(); ++i) CHECK(same_bits(fake.data()[i], deq.data()[i]));
        if (format == grphi::block_scale::exponent) {
            for (int c = 0; c < 16; ++c) CHECK(deq(1, c) != 0);  // clamp: denormals keep a nonzero level
        }
    }
}

TEST_CASE("block scales: validate names corrupt block fields, and options reject bad combinations") {
    const auto W = test_weights<float>(3, 40, 3);
    grphi::options o;
    o.levels = 8;
    o.block_size = 16;
    auto p = grphi::quantize<grphi::phi>(W, o);
    auto bad = p;
    bad.block_top.pop_back();
    CHECK_THROWS_WITH_AS(grphi::validate(bad), doctest::Contains("block scales"), std::invalid_argument);
    bad = p;
    bad.block_top[1] = static_cast<std::int16_t>(bad.block_top[1] - 9);
    CHECK_THROWS_AS(grphi::validate(bad), std::invalid_argument);
    bad = p;
    bad.block_steps[0] = 9;
    CHECK_THROWS_WITH_AS(grphi::validate(bad), doctest::Contains("scale step"), std::invalid_argument);
    o.block_format = grphi::block_scale::e4m3;
    p = grphi::quantize<grphi::phi>(W, o);
    bad = p;
    bad.block_scales[2] = 0x7F;  // NaN
    CHECK_THROWS_WITH_AS(grphi::validate(bad), doctest::Contains("scale code"), std::invalid_argument);
    bad = p;
    bad.block_scales[2] = 0;  // zero
    CHECK_THROWS_WITH_AS(grphi::validate(bad), doctest::Contains("scale code"), std::invalid_argument);
    grphi::options no_levels;
    no_levels.block_size = 32;
    CHECK_THROWS_WITH_AS(no_levels.validate(), doctest::Contains("needs levels"), std::invalid_argument);
    grphi::options fitted = o;
    fitted.fit_scale = true;
    CHECK_THROWS_WITH_AS(fitted.validate(), doctest::Contains("fit_scale"), std::invalid_argument);
    grphi::options unblocked;
    unblocked.block_format = grphi::block_scale::fp16;
    CHECK_THROWS_WITH_AS(unblocked.validate(), doctest::Contains("block_size > 0"), std::invalid_argument);
    grphi::options weighted = o;
    weighted.importance = std::make_shared<std::vector<double>>(39, 1.0);
    CHECK_THROWS_WITH_AS(grphi::quantize<grphi::phi>(W, weighted), doctest::Contains("importance has 39 entries"),
                         std::invalid_argument);
    weighted.importance = std::make_shared<std::vector<double>>(40, 1.0);
    CHECK(grphi::quantize<grphi::phi>(W, weighted).opts.importance == nullptr);
}
