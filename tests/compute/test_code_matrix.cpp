// code_matrix: exactly the weights dequantize gives, the zero rule, the width check, the memory bound.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

#include <grphi/compute/code_matrix.hpp>

#include "option_sets.hpp"

namespace {

template <class T>
grphi::row_matrix<T> random_weights(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.05);
    grphi::row_matrix<T> W(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) W(r, c) = static_cast<T>(normal(rng));
    if (rows > 0 && cols > 2) W(0, 1) = T(0);  // exact zeros occur in real tensors
    return W;
}

template <class T, class B>
void check_equals_dequantize(const grphi::packed<T, B>& p, const grphi::code_matrix<T, B>& m) {
    const auto D = grphi::dequantize(p);
    REQUIRE(m.rows() == p.rows);
    REQUIRE(m.cols() == p.cols);
    const auto dense = m.to_dense();
    bool same = true;
    for (Eigen::Index r = 0; r < p.rows; ++r)
        for (Eigen::Index c = 0; c < p.cols; ++c)
            if (!(dense(r, c) == D(r, c) && std::signbit(dense(r, c)) == std::signbit(D(r, c)))) same = false;
    CHECK(same);
}

struct phi_float {
    using scalar = float;
    using base = grphi::phi;
};
struct two_double {
    using scalar = double;
    using base = grphi::two;
};
struct sqrt2_float {
    using scalar = float;
    using base = grphi::sqrt2;
};
struct phi_double {
    using scalar = double;
    using base = grphi::phi;
};

}  // namespace

using phi_codes = grphi::code_matrix<float, grphi::phi>;

#define CODE_COMBOS phi_float, two_double, sqrt2_float, phi_double

TEST_CASE_TEMPLATE("every option set: 8-bit codes hold exactly the dequantized weights when the window fits", C, CODE_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = random_weights<T>(5, 77, 3);
    int built = 0;
    for (const auto& o : grphi_test::all_option_sets(2, {0, 4})) {
        const auto p = grphi::quantize<B>(W, o);
        for (int bits : {4, 8}) {
            try {
                const grphi::code_matrix<T, B> m(p, bits);
                check_equals_dequantize(p, m);
                ++built;
            } catch (const std::invalid_argument& e) {
                CHECK(std::string(e.what()).find("levels") != std::string::npos);
            }
        }
    }
    CHECK(built > 100);
}

TEST_CASE_TEMPLATE("4-bit codes: 8 levels without a zero, 7 with one", C, CODE_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    auto W = random_weights<T>(3, 64, 5);
    W(0, 1) = T(0.01);  // no zeros at all
    for (Eigen::Index r = 0; r < 3; ++r) W(r, 6) = T(1e-6);  // clamped to each row's window bottom: 8 levels used
    grphi::options o;
    o.levels = 8;
    const auto p = grphi::quantize<B>(W, o);
    const grphi::code_matrix<T, B> m(p, 4);  // 8 levels, no zero: fits
    check_equals_dequantize(p, m);

    W(1, 5) = T(0);
    auto pz = grphi::quantize<B>(W, o);
    // Row 1 now spans 8 levels and holds a zero: too wide for 4 bits.
    bool spans8 = false;
    {
        int lo = 1 << 20, hi = -(1 << 20);
        for (Eigen::Index c = 0; c < pz.cols; ++c)
            if (pz.signs[static_cast<std::size_t>(pz.cols + c)] != 0) {
                lo = std::min<int>(lo, pz.exponent(1, c));
                hi = std::max<int>(hi, pz.exponent(1, c));
            }
        spans8 = hi - lo + 1 == 8;
    }
    REQUIRE(spans8);
    try {
        const grphi::code_matrix<T, B> bad(pz, 4);
        FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        CHECK(what.find("row 1") != std::string::npos);
        CHECK(what.find("8 levels") != std::string::npos);
        CHECK(what.find("zero") != std::string::npos);
    }
    o.levels = 7;
    pz = grphi::quantize<B>(W, o);
    const grphi::code_matrix<T, B> ok(pz, 4);
    check_equals_dequantize(pz, ok);
    CHECK(ok.weight(1, 5) == T(0));

    // flush makes zeros: with 7 levels every row fits.
    o.under = grphi::underflow::flush;
    const auto pf = grphi::quantize<B>(W, o);
    check_equals_dequantize(pf, grphi::code_matrix<T, B>(pf, 4));
}

TEST_CASE("a window wider than the code names the row and the width") {
    const auto W = random_weights<float>(4, 300, 9);
    const auto p = grphi::quantize<grphi::phi>(W);  // natural windows: dozens of levels
    try {
        const grphi::code_matrix<float, grphi::phi> m(p, 4);
        FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        CHECK(what.find("row 0") != std::string::npos);
        CHECK(what.find("4-bit codes hold at most 7 levels") != std::string::npos);
    }
    CHECK_THROWS_AS(phi_codes(p, 5), std::invalid_argument);
}

TEST_CASE("fit_scale: the scaled levels") {
    const auto W = random_weights<float>(6, 40, 11);
    grphi::options o;
    o.levels = 7;
    o.fit_scale = true;
    const auto p = grphi::quantize<grphi::phi>(W, o);
    bool scaled = false;
    for (auto s : p.scale_steps) scaled = scaled || s != 0;
    CHECK(scaled);
    check_equals_dequantize(p, grphi::code_matrix<float, grphi::phi>(p, 4));
    check_equals_dequantize(p, grphi::code_matrix<float, grphi::phi>(p, 8));
}

TEST_CASE_TEMPLATE("denormal levels at the bottom of the grid", T, float, double) {
    // A hand-built tensor whose window sits at the grid's lowest exponents (denormal levels).
    const auto& g = grphi::grid_for<T, grphi::two>();
    grphi::packed<T, grphi::two> p;
    p.rows = 2;
    p.cols = 33;
    p.signs.assign(p.size(), 1);
    p.exponents.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) p.exponents[i] = static_cast<std::int16_t>(g.k_lo + static_cast<int>(i % 8));
    p.signs[3] = -1;
    p.signs[40] = 0;
    p.window_lo = {static_cast<std::int16_t>(g.k_lo), static_cast<std::int16_t>(g.k_lo)};
    p.window_hi = {static_cast<std::int16_t>(g.k_lo + 7), static_cast<std::int16_t>(g.k_lo + 7)};
    p.scale_steps = {0, 0};
    using codes = grphi::code_matrix<T, grphi::two>;
    CHECK_THROWS_AS(codes(p, 4), std::invalid_argument);  // row 1: 8 levels and a zero
    p.signs[40] = 1;
    const grphi::code_matrix<T, grphi::two> m(p, 4);
    check_equals_dequantize(p, m);
    CHECK(m.weight(0, 0) == std::numeric_limits<T>::denorm_min());
    CHECK(m.weight(0, 3) == -std::ldexp(T(1), g.k_lo + 3));
}

TEST_CASE("empty and tiny shapes") {
    for (auto shape : {std::pair<int, int>{0, 0}, {0, 5}, {3, 0}, {1, 1}, {1, 31}, {2, 33}}) {
        const auto W = random_weights<float>(shape.first, shape.second, 2);
        grphi::options o;
        o.levels = 7;
        const auto p = grphi::quantize<grphi::phi>(W, o);
        const grphi::code_matrix<float, grphi::phi> m(p, 4);
        CHECK(m.rows() == shape.first);
        CHECK(m.cols() == shape.second);
        check_equals_dequantize(p, m);
        CHECK(m.row_bytes() % 64 == 0);
    }
}

TEST_CASE("4096x4096 with 4-bit codes takes at most 4.1 bits per weight") {
    grphi::packed<float, grphi::phi> p;
    p.rows = p.cols = 4096;
    p.opts.levels = 8;
    p.signs.assign(p.size(), 1);
    p.exponents.resize(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) p.exponents[i] = static_cast<std::int16_t>(-(static_cast<int>(i * 7 % 8)));
    p.window_lo.assign(4096, -7);
    p.window_hi.assign(4096, 0);
    p.scale_steps.assign(4096, 0);
    const grphi::code_matrix<float, grphi::phi> m(p, 4);
    CHECK(m.bits_per_weight() <= 4.1);
    CHECK(m.bits_per_weight() >= 4.0);
    CHECK(m.weight(4095, 4095) == grphi::dequantize(p)(4095, 4095));
}

TEST_CASE_TEMPLATE("exponent block scales: every block its own window top and step, exactly the dequantized weights", C,
                   CODE_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = random_weights<T>(6, 150, 21);  // 150 = 4 blocks of 32 and a short one of 22
    for (int block : {32, 48, 64, 150, 200})
        for (bool fit : {false, true}) {
            grphi::options o;
            o.levels = 7;
            o.block_size = block;
            o.fit_scale = fit;
            const auto p = grphi::quantize<B>(W, o);
            CAPTURE(block);
            CAPTURE(fit);
            for (int bits : {4, 8}) {
                const grphi::code_matrix<T, B> m(p, bits);
                CHECK(m.block_size() == block);
                check_equals_dequantize(p, m);
            }
        }
}

TEST_CASE_TEMPLATE("fp16 and e4m3 block scales: a block's levels are its scale times the grid's, exactly the dequantized weights",
                   C, CODE_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    auto W = random_weights<T>(5, 150, 22);  // 150 = 4 blocks of 32 and a short one of 22
    W.row(1).segment(40, 30).setZero();      // whole zero blocks and blocks with zeros
    W(2, 7) = T(0);
    for (auto format : {grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (int block : {16, 32, 64, 150}) {
            grphi::options o;
            o.levels = 7;  // 7 levels and the flush zero fit a 4-bit block
            o.block_size = block;
            o.block_format = format;
            const auto p = grphi::quantize<B>(W, o);
            REQUIRE(p.block_scales.size() == p.scale_block_count());
            CAPTURE(block);
            CAPTURE(int(format));
            for (int bits : {4, 8}) {
                const grphi::code_matrix<T, B> m(p, bits);
                CHECK(m.block_size() == block);
                check_equals_dequantize(p, m);
                // Independent of the table: weight = sign * (scale * b^k) in T, the published rule.
                const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
                const auto& g = grphi::grid_for<T, B>(p.opts, 0);
                bool rule = true;
                for (Eigen::Index r = 0; r < p.rows; ++r)
                    for (Eigen::Index c = 0; c < p.cols; ++c) {
                        const std::size_t i = static_cast<std::size_t>(r * p.cols + c);
                        const T scale = static_cast<T>(grphi::detail::block_scale_value(
                            format, p.block_scales[static_cast<std::size_t>(r) * per_row + static_cast<std::size_t>(c / block)]));
                        const T expected = p.signs[i] == 0 ? T(0) : static_cast<T>(p.signs[i]) * (scale * g.level_of(p.exponent(r, c)));
                        if (!(m.weight(r, c) == expected)) rule = false;
                    }
                CHECK(rule);
            }
        }
}

TEST_CASE("fp16 block scales: a block spanning more levels than the code holds names the row and block") {
    Eigen::MatrixXf W(2, 32);
    W.setConstant(1.0f);
    W(1, 3) = 1e-3f;  // 8-bit window, 4-bit codes: block 0 of row 1 spans more than 8 levels
    grphi::options o;
    o.levels = 32;
    o.block_size = 32;
    o.block_format = grphi::block_scale::fp16;
    const auto p = grphi::quantize<grphi::phi>(W, o);
    try {
        const grphi::code_matrix<float, grphi::phi> m(p, 4);
        FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
        const std::string what = e.what();
        CHECK(what.find("row 1") != std::string::npos);
        CHECK(what.find("levels") != std::string::npos);
    }
    const grphi::code_matrix<float, grphi::phi> wide(p, 8);  // 8-bit codes hold it
    check_equals_dequantize(p, wide);
}

TEST_CASE("4-bit byte layout: byte i of a 32-weight chunk holds weights i and i + 16") {
    // The layout every kernel reads (documented in code_matrix.hpp and docs/kernels.md).
    grphi::packed<float, grphi::two> p;
    p.rows = 1;
    p.cols = 40;
    p.signs.assign(40, 1);
    p.exponents.resize(40);
    for (int c = 0; c < 40; ++c) p.exponents[static_cast<std::size_t>(c)] = static_cast<std::int16_t>(-(c % 7));
    p.window_lo.assign(1, -6);
    p.window_hi.assign(1, 0);
    p.scale_steps.assign(1, 0);
    const grphi::code_matrix<float, grphi::two> m(p, 4);
    const auto v = m.view();
    for (std::size_t c = 0; c < 40; ++c) {
        const std::uint8_t byte = v.codes[c / 32 * 16 + c % 16];
        const unsigned code = c % 32 < 16 ? byte & 0xFu : byte >> 4u;
        CHECK(code == static_cast<unsigned>(c % 7));  // offset below the top 0, sign +
    }
}
