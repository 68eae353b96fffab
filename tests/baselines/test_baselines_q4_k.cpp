// Q4_K-style super-blocks: ggml's 144-byte layout and 6-bit scale packing, hand-computed blocks,
// short tails, the search never worse than plain, bits/weight, errors.
#include <grphi/baselines/q4_k.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace gb = grphi::baselines;

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
matrix<T> laplacian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> magnitude(50.0);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i)
        W.data()[i] = static_cast<T>(static_cast<float>((rng() & 1 ? 1 : -1) * magnitude(rng)));
    return W;
}

double squared_error(const matrix<float>& W, const matrix<float>& Q) {
    double e = 0;
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        const double d = static_cast<double>(W.data()[i]) - static_cast<double>(Q.data()[i]);
        e += d * d;
    }
    return e;
}

}  // namespace

TEST_CASE("q4_k: layout and ggml's 6-bit scale packing") {
    CHECK(sizeof(gb::block_q4_k) == 144);
    gb::block_q4_k b{};
    std::mt19937_64 rng(1);
    int sc[8], mn[8];
    for (std::size_t j = 0; j < 8; ++j) {
        sc[j] = static_cast<int>(rng() % 64);
        mn[j] = static_cast<int>(rng() % 64);
        gb::q4_k_set_scale_min(b, j, sc[j], mn[j]);
    }
    for (std::size_t j = 0; j < 8; ++j) {
        // The definition, written out: low sub-blocks in the low 6 bits, high ones split 4 + 2 bits.
        const std::uint8_t* s = b.scales;
        const int want_sc = j < 4 ? (s[j] & 63) : ((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
        const int want_m = j < 4 ? (s[j + 4] & 63) : ((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
        CHECK(want_sc == sc[j]);
        CHECK(want_m == mn[j]);
        int got_sc = -1, got_m = -1;
        gb::q4_k_scale_min(b, j, got_sc, got_m);
        CHECK(got_sc == sc[j]);
        CHECK(got_m == mn[j]);
    }
    gb::block_q4_k c{};
    gb::q4_k_set_scale_min(c, 4, 63, 63);
    CHECK(c.scales[8] == 0xff);
    CHECK(c.scales[0] == 0xc0);
    CHECK(c.scales[4] == 0xc0);
    // Codes: chunk k holds sub-block 2k low, 2k+1 high.
    gb::q4_k_set_code(c, 0, 3);
    gb::q4_k_set_code(c, 32, 9);
    gb::q4_k_set_code(c, 64 + 5, 12);
    CHECK(c.qs[0] == 0x93);
    CHECK(c.qs[32 + 5] == 12);
    CHECK(gb::q4_k_code(c, 32) == 9);
}

TEST_CASE("q4_k: hand-computed super-blocks") {
    // 16 weights 0.1 j: min 0, scale 0.1 -> d = fp16(0.1 / 63) = 0.0015869140625, sc = 63, dmin = 0;
    // step = 63 d = 0.0999755859375 and code j.
    matrix<double> A(1, 16);
    for (int j = 0; j < 16; ++j) A(0, j) = 0.1 * j;
    const auto a = gb::quantize_q4_k(A);
    REQUIRE(a.blocks.size() == 1);
    CHECK(a.blocks[0].d == 0x1680);
    CHECK(a.blocks[0].dmin == 0);
    for (int j = 0; j < 16; ++j) {
        CHECK(gb::q4_k_code(a.blocks[0], static_cast<std::size_t>(j)) == j);
        CHECK(a.value(0, static_cast<std::size_t>(j)) == 0.0015869140625f * 63.0f * static_cast<float>(j));
    }
    // [-1, 2, 0.5, 0...]: min -1, scale 0.2: d = fp16(0.2/63) = 0.003173828125, dmin = fp16(1/63) =
    // 0.015869140625, sc = m = 63: step 0.199951171875, offset 0.999755859375.
    matrix<double> B = matrix<double>::Zero(1, 32);
    B(0, 0) = -1;
    B(0, 1) = 2;
    B(0, 2) = 0.5;
    const auto b = gb::quantize_q4_k(B);
    CHECK(b.blocks[0].d == 0x1a80);
    CHECK(b.blocks[0].dmin == 0x2410);
    CHECK(gb::q4_k_code(b.blocks[0], 0) == 0);
    CHECK(gb::q4_k_code(b.blocks[0], 1) == 15);
    CHECK(gb::q4_k_code(b.blocks[0], 2) == 8);  // 1.49976 / 0.19995 = 7.5006
    CHECK(gb::q4_k_code(b.blocks[0], 3) == 5);  // 0 is exactly 5 steps above the min
    CHECK(b.value(0, 0) == -0.999755859375f);
    CHECK(b.value(0, 1) == 1.99951171875f);
    CHECK(b.value(0, 2) == 0.599853515625f);
    CHECK(b.value(0, 3) == 0.0f);
}

TEST_CASE_TEMPLATE("q4_k: tails, bits/weight, the search, float and double", T, float, double) {
    const matrix<T> W = laplacian<T>(6, 784, 2);  // 3 full super-blocks and one of 16
    const auto plain = gb::quantize_q4_k(W);
    CHECK(plain.blocks.size() == 24);
    CHECK(plain.fixed_bits_per_weight() == doctest::Approx(4 + (4 * 32 + 25 * 12) / 784.0));
    CHECK(gb::quantize_q4_k(matrix<T>::Zero(2, 1024)).fixed_bits_per_weight() == doctest::Approx(4.5));
    const matrix<float> Wf = W.template cast<float>();
    const matrix<float> P = gb::dequantize(plain);
    for (Eigen::Index i = 0; i < W.size(); ++i)  // within a step of the sub-block's range
        CHECK(std::fabs(P.data()[i] - Wf.data()[i]) < 0.2f * Wf.cwiseAbs().maxCoeff());
    gb::q4_k_options o;
    o.search = true;
    const auto searched = gb::quantize_q4_k(W, o);
    CHECK(squared_error(Wf, gb::dequantize(searched)) < squared_error(Wf, P));
    CHECK(gb::quantize_q4_k(Wf).blocks.size() == plain.blocks.size());
    const double sqnr = 10 * std::log10(Wf.squaredNorm() / squared_error(Wf, P));
    CHECK(sqnr > 15);
}

TEST_CASE("q4_k: zeros, empty, errors") {
    const auto z = gb::quantize_q4_k(matrix<float>::Zero(2, 300));
    CHECK(gb::dequantize(z).cwiseAbs().maxCoeff() == 0.0f);
    CHECK(gb::quantize_q4_k(matrix<float>(0, 5)).blocks.empty());
    matrix<float> W = matrix<float>::Zero(1, 8);
    W(0, 3) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(gb::quantize_q4_k(W), std::domain_error);
    W(0, 3) = 1;
    gb::q4_k_options o;
    o.column_importance = {1, 2};
    CHECK_THROWS_AS(gb::quantize_q4_k(W, o), std::invalid_argument);
}
