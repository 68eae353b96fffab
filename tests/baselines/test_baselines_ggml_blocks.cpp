// Q4_0 / Q8_0: hand-computed blocks from ggml's public definitions, the nibble layout, short tail
// blocks, zeros, ties, fp16 scale rounding, errors, and a brute-force nearest-code check.
#include <grphi/baselines/ggml_blocks.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace gb = grphi::baselines;

namespace {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::vector<float> gaussian_row(std::size_t n, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> x(n);
    for (auto& v : x) v = normal(rng);
    return x;
}

}  // namespace

TEST_CASE("ggml blocks: sizes and the bits/weight rule") {
    CHECK(sizeof(gb::block_q4_0) == 18);
    CHECK(sizeof(gb::block_q8_0) == 34);
    CHECK(gb::blocks_per_row(784, 32) == 25);
    CHECK(gb::block_length(784, 32, 24) == 16);
    CHECK(gb::block_length(784, 32, 23) == 32);
    CHECK_THROWS_AS(gb::block_length(784, 32, 25), std::out_of_range);
    CHECK_THROWS_AS(gb::blocks_per_row(10, 0), std::invalid_argument);
    CHECK(gb::fixed_bits_per_weight(256, 784, 4, 32, 16) == doctest::Approx(4 + 25.0 * 16 / 784));
    CHECK(gb::fixed_bits_per_weight(3, 64, 4, 32, 16) == doctest::Approx(4.5));
    CHECK(gb::fixed_bits_per_weight(0, 64, 4, 32, 16) == 0);
    const row_matrix<float> W = row_matrix<float>::Zero(256, 784);
    CHECK(gb::quantize_q4_0(W).fixed_bits_per_weight() == doctest::Approx(4.5102040816));
    CHECK(gb::quantize_q8_0(W).fixed_bits_per_weight() == doctest::Approx(8.5102040816));
}

TEST_CASE("q4_0: a hand-computed block with m = -8 (d = 1): codes trunc(x + 8.5), ties round up, 7.5 clips to 7") {
    std::vector<float> x(32);
    for (int j = 0; j < 32; ++j) x[j] = -8.0f + 0.5f * static_cast<float>(j);  // -8, -7.5, ..., 7.5
    gb::block_q4_0 b{};
    gb::quantize_row_q4_0(x.data(), 32, &b);
    CHECK(grphi::half_to_float(b.d) == 1.0f);
    for (int j = 0; j < 32; ++j) {
        CAPTURE(j);
        const int expected = std::min(15, (j + 1) / 2);  // -8 -> 0, -7.5 -> 1 (half up), -7 -> 1, ..., 7.5 -> 16 -> 15
        CHECK(gb::block_code(b, static_cast<std::size_t>(j)) == expected);
        CHECK(gb::block_value(b, static_cast<std::size_t>(j)) == static_cast<float>(expected - 8));
    }
    // Byte j: member j low, member j + 16 high. Byte 0: q0 = 0, q16 = 8; byte 15: q15 = 8, q31 = 15.
    CHECK(b.qs[0] == 0x80);
    CHECK(b.qs[1] == 0x91);  // q1 = 1, q17 = 9
    CHECK(b.qs[15] == 0xf8);
}

TEST_CASE("q4_0: a positive extreme gives a negative d, so -m clips to 7|d|") {
    // m = 4 -> d = -0.5, 1/d = -2.
    const float x[5] = {1.0f, 4.0f, -4.0f, 0.25f, -0.25f};
    gb::block_q4_0 b{};
    gb::quantize_row_q4_0(x, 5, &b);
    CHECK(grphi::half_to_float(b.d) == -0.5f);
    CHECK(gb::block_code(b, 0) == 6);   // -2 + 8.5 = 6.5 -> 6, value -0.5 * -2 = 1
    CHECK(gb::block_code(b, 1) == 0);   // -8 + 8.5 -> 0, value 4
    CHECK(gb::block_code(b, 2) == 15);  // 8 + 8.5 = 16.5 -> 16 -> 15, value -3.5
    CHECK(gb::block_code(b, 3) == 8);   // -0.5 + 8.5 = 8 -> 8, value 0
    CHECK(gb::block_code(b, 4) == 9);   // 0.5 + 8.5 = 9 -> 9, value -0.5 (the tie goes to the higher code)
    std::vector<float> y(5);
    gb::dequantize_row(&b, 5, y.data());
    CHECK(y == std::vector<float>{1.0f, 4.0f, -3.5f, 0.0f, -0.5f});
    for (std::size_t j = 5; j < 32; ++j) CHECK(gb::block_code(b, j) == 8);  // padding holds the zero code
}

TEST_CASE("q4_0: equal magnitudes of both signs: the first one sets the sign of d") {
    const float plus_first[2] = {3.0f, -3.0f};
    const float minus_first[2] = {-3.0f, 3.0f};
    gb::block_q4_0 a{}, b{};
    gb::quantize_row_q4_0(plus_first, 2, &a);
    gb::quantize_row_q4_0(minus_first, 2, &b);
    CHECK(grphi::half_to_float(a.d) == -0.375f);
    CHECK(gb::block_value(a, 0) == 3.0f);
    CHECK(gb::block_value(a, 1) == -2.625f);
    CHECK(grphi::half_to_float(b.d) == 0.375f);
    CHECK(gb::block_value(b, 0) == -3.0f);
    CHECK(gb::block_value(b, 1) == 2.625f);
}

TEST_CASE("q4_0 / q8_0: the stored scale is d rounded to fp16, the codes use the float d") {
    // m = -1.0001: d = 0.1250125 (float) -> fp16 0x3000 = 0.125.
    const float x[2] = {-1.0001f, 0.5f};
    gb::block_q4_0 b{};
    gb::quantize_row_q4_0(x, 2, &b);
    CHECK(b.d == 0x3000);
    CHECK(gb::block_value(b, 0) == -1.0f);
    CHECK(gb::block_code(b, 1) == 12);  // 0.5 / 0.1250125 = 3.9996, + 8.5 = 12.4996 -> 12
    // amax = 1.27: d = 0.01f, fp16 0x211f = 0.01000213623046875; 0.5 * 100 = 50 -> 50 * fp16(d).
    const float y[3] = {1.27f, 0.5f, -0.5f};
    gb::block_q8_0 q{};
    gb::quantize_row_q8_0(y, 3, &q);
    CHECK(q.d == 0x211f);
    CHECK(q.qs[0] == 127);
    CHECK(q.qs[1] == 50);
    CHECK(q.qs[2] == -50);
    CHECK(gb::block_value(q, 1) == 50.0f * 0.01000213623046875f);
}

TEST_CASE("q8_0: a hand-computed block with amax = 127 (d = 1): round half away from zero") {
    const float x[7] = {127.0f, -127.0f, 0.5f, -0.5f, 1.5f, -2.5f, 0.49f};
    gb::block_q8_0 b{};
    gb::quantize_row_q8_0(x, 7, &b);
    CHECK(b.d == 0x3c00);  // 1.0
    const int expected[7] = {127, -127, 1, -1, 2, -3, 0};
    for (std::size_t j = 0; j < 7; ++j) CHECK(b.qs[j] == expected[j]);
    for (std::size_t j = 7; j < 32; ++j) CHECK(b.qs[j] == 0);
}

TEST_CASE("ggml blocks: zero blocks, a short tail block with only its real members, empty rows") {
    std::vector<float> x(40, 0.0f);
    for (int j = 32; j < 40; ++j) x[j] = static_cast<float>(j - 36);  // tail: -4..3, m = -4 -> d = 0.5
    gb::block_q4_0 b[2]{};
    gb::quantize_row_q4_0(x.data(), 40, b);
    CHECK(b[0].d == 0x8000);  // d = 0 / -8 = -0, as in ggml
    for (std::size_t j = 0; j < 16; ++j) CHECK(b[0].qs[j] == 0x88);
    CHECK(grphi::half_to_float(b[1].d) == 0.5f);  // from the 8 real members only
    for (std::size_t j = 8; j < 16; ++j) CHECK(b[1].qs[j] == 0x88);
    std::vector<float> y(40, 99.0f);
    gb::dequantize_row(b, 40, y.data());
    CHECK(y == x);  // -4..3 are on the grid 0.5 * (q - 8)

    gb::block_q8_0 q[2]{};
    gb::quantize_row_q8_0(x.data(), 40, q);
    CHECK(q[0].d == 0);
    CHECK(grphi::half_to_float(q[1].d) == doctest::Approx(4.0 / 127).epsilon(1e-3));
    for (std::size_t j = 8; j < 32; ++j) CHECK(q[1].qs[j] == 0);

    gb::quantize_row_q4_0(nullptr, 0, nullptr);  // no blocks, nothing touched
    const row_matrix<float> empty(3, 0);
    const auto m = gb::quantize_q4_0(empty);
    CHECK(m.blocks.empty());
    CHECK(gb::dequantize(m).rows() == 3);
}

TEST_CASE("ggml blocks: NaN, Inf and scales beyond fp16 throw") {
    float x[3] = {1.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
    gb::block_q4_0 b{};
    gb::block_q8_0 q{};
    CHECK_THROWS_AS(gb::quantize_row_q4_0(x, 3, &b), std::domain_error);
    x[1] = std::numeric_limits<float>::infinity();
    CHECK_THROWS_AS(gb::quantize_row_q8_0(x, 3, &q), std::domain_error);
    x[1] = 1e6f;  // Q4_0 d = 125000 > 65504; Q8_0 d = 7874 fits
    CHECK_THROWS_AS(gb::quantize_row_q4_0(x, 3, &b), std::domain_error);
    CHECK_NOTHROW(gb::quantize_row_q8_0(x, 3, &q));
    x[1] = 1e7f;
    CHECK_THROWS_AS(gb::quantize_row_q8_0(x, 3, &q), std::domain_error);
}

TEST_CASE("ggml blocks: every code is the nearest grid point of x / d (brute force over all codes)") {
    const std::size_t n = 784;
    const std::vector<float> x = gaussian_row(n, 5);
    std::vector<gb::block_q4_0> b4(gb::blocks_per_row(n, 32));
    std::vector<gb::block_q8_0> b8(gb::blocks_per_row(n, 32));
    gb::quantize_row_q4_0(x.data(), n, b4.data());
    gb::quantize_row_q8_0(x.data(), n, b8.data());
    for (std::size_t blk = 0; blk < b4.size(); ++blk) {
        const std::size_t len = gb::block_length(n, 32, blk);
        double m = 0, amax = 0;
        for (std::size_t j = 0; j < len; ++j) {
            const double v = x[32 * blk + j];
            if (std::fabs(v) > std::fabs(m)) m = v;
            amax = std::max(amax, std::fabs(v));
        }
        for (std::size_t j = 0; j < len; ++j) {
            const double t4 = x[32 * blk + j] / (m / -8), t8 = x[32 * blk + j] / (amax / 127);
            int best4 = 0, best8 = -127;
            for (int q = 0; q < 16; ++q)
                if (std::fabs(t4 - (q - 8)) < std::fabs(t4 - (best4 - 8)) - 1e-6) best4 = q;
            for (int q = -127; q <= 127; ++q)
                if (std::fabs(t8 - q) < std::fabs(t8 - best8) - 1e-6) best8 = q;
            CHECK(gb::block_code(b4[blk], j) == best4);
            CHECK(gb::block_code(b8[blk], j) == best8);
        }
    }
}

TEST_CASE_TEMPLATE("ggml blocks: matrix round trip for float and double, rows independent", T, float, double) {
    row_matrix<T> W(3, 70);
    const std::vector<float> x = gaussian_row(210, 9);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(x[static_cast<std::size_t>(i)]);
    const auto m4 = gb::quantize_q4_0(W);
    const auto m8 = gb::quantize_q8_0(W);
    REQUIRE(m4.blocks.size() == 9);
    REQUIRE(m8.blocks.size() == 9);
    const row_matrix<T> R4 = gb::dequantize<T>(m4), R8 = gb::dequantize<T>(m8);
    for (std::size_t r = 0; r < 3; ++r) {
        std::vector<gb::block_q4_0> own(3);
        gb::quantize_row_q4_0(x.data() + 70 * r, 70, own.data());
        CHECK(std::memcmp(own.data(), m4.row(r), 3 * sizeof(gb::block_q4_0)) == 0);
    }
    double e4 = 0, e8 = 0, s = 0;
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        const double w = static_cast<double>(W.data()[i]);
        s += w * w;
        e4 += (w - static_cast<double>(R4.data()[i])) * (w - static_cast<double>(R4.data()[i]));
        e8 += (w - static_cast<double>(R8.data()[i])) * (w - static_cast<double>(R8.data()[i]));
    }
    CHECK(10 * std::log10(s / e4) > 15);  // Gaussian Q4_0 is about 20 dB, Q8_0 about 40 dB
    CHECK(10 * std::log10(s / e8) > 35);
}
