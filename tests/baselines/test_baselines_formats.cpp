// Each format reproduces its definition: the tables themselves and hand-computed blocks.
#include <grphi/baselines/formats.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <vector>

namespace gb = grphi::baselines;

namespace {

using matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

matrix row_of(const std::vector<double>& v) {
    matrix W(1, static_cast<Eigen::Index>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) W(0, static_cast<Eigen::Index>(i)) = v[i];
    return W;
}

std::vector<float> rebuilt(const gb::table_quantized& q) {
    std::vector<float> out;
    for (std::size_t c = 0; c < q.cols; ++c) out.push_back(q.value(0, c));
    return out;
}

}  // namespace

TEST_CASE("formats: the tables match their definitions") {
    // NF4 as printed in the QLoRA paper / issue 13 (4 decimals).
    const double printed[16] = {-1,     -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0,
                                0.0796, 0.1609,  0.2461,  0.3379,  0.4407,  0.5626,  0.7230,  1};
    REQUIRE(gb::nf4_values().size() == 16);
    for (std::size_t i = 0; i < 16; ++i) CHECK(gb::nf4_values()[i] == doctest::Approx(printed[i]).epsilon(6e-5));
    CHECK(gb::apot4_magnitudes() == std::vector<double>{0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0});
    const auto mx = gb::mxfp4_format();
    CHECK(mx.values == std::vector<double>{-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6});
    CHECK(gb::fp8_e4m3_format().values.back() == 448);
    CHECK(gb::fp8_e4m3_format().values.size() == 253);
    CHECK(gb::fp8_e5m2_format().values.back() == 57344);
    CHECK(gb::iq4_nl_values().front() == -127);
    CHECK(gb::iq4_nl_values().back() == 113);
    for (const auto& f : {gb::nf4_format(), gb::iq4_nl_format(), gb::mxfp4_format(), gb::nvfp4_format(),
                          gb::fp8_e4m3_format(), gb::fp8_e5m2_format(), gb::apot4_format(), gb::q4_0_format(),
                          gb::q8_0_format()})
        CHECK_NOTHROW(f.validate());
    // Fixed bits/weight, every block's scale counted (784-wide rows, as fc1).
    CHECK(gb::nf4_format().fixed_bits_per_weight(256, 784) == doctest::Approx(4 + 13 * 32.0 / 784));
    CHECK(gb::mxfp4_format().fixed_bits_per_weight(4, 1024) == doctest::Approx(4.25));
    CHECK(gb::nvfp4_format().fixed_bits_per_weight(4, 1024) == doctest::Approx(4.5 + 32.0 / 4096));
    CHECK(gb::fp8_e4m3_format().fixed_bits_per_weight(256, 784) == doctest::Approx(8 + 32.0 / 784));
    CHECK(gb::apot4_format().fixed_bits_per_weight(1, 64) == doctest::Approx(4.5));
}

TEST_CASE("nf4: a hand-computed block (absmax 2, fp32 scale)") {
    // 1.0 / 2 = 0.5 < (0.4407 + 0.5626) / 2 = 0.50166 -> 0.4407; -0.08 / 2 = -0.04 > (-0.0911 + 0) / 2 -> 0.
    const auto q = gb::quantize_table(row_of({2.0, -2.0, 1.0, -0.08, 1.5}), gb::nf4_format());
    CHECK(q.scales[0] == 2.0f);
    CHECK(q.codes == std::vector<std::uint16_t>{15, 0, 12, 7, 14});  // 1.5/2 = 0.75 -> 0.7230
    CHECK(rebuilt(q) == std::vector<float>{2.0f, -2.0f, 2.0f * 0.44070982933044434f, 0.0f, 2.0f * 0.7229568362236023f});
    CHECK(q.scale_bytes() == 4);
}

TEST_CASE("iq4_nl: a hand-computed block (m = -1.27, d = m / -127 in fp16)") {
    const auto q = gb::quantize_table(row_of({-1.27, 0.5, 0.05, 1.0}), gb::iq4_nl_format());
    const float d = 0.01000213623046875f;  // fp16 nearest to 0.01
    CHECK(q.stored_scales[0] == 0x211f);
    CHECK(q.scales[0] == d);
    // 0.5 / d = 49.99 -> 53 (midpoint 45.5); 0.05 / d = 5.0 -> 1 (midpoint 7); 1 / d = 99.98 -> 89 (midpoint 101).
    CHECK(q.codes == std::vector<std::uint16_t>{0, 12, 8, 14});
    CHECK(rebuilt(q) == std::vector<float>{-127 * d, 53 * d, d, 89 * d});
}

TEST_CASE("mxfp4: hand-computed blocks (E8M0 2^(floor(log2 amax) - 2), ties to even, saturation)") {
    // amax 7 -> floor(log2 7) = 2 -> scale 2^0 = 1.
    const auto q = gb::quantize_table(row_of({7, 5, 0.25, 0.75, 2.5, -3.5, 1.25, -0.1}), gb::mxfp4_format());
    CHECK(q.stored_scales[0] == 127);
    CHECK(rebuilt(q) == std::vector<float>{6, 4, 0, 1, 2, -4, 1, 0});
    // amax 0.03 -> floor(log2 0.03) = -6 -> scale 2^-8; 0.03 / 2^-8 = 7.68 saturates to 6.
    const auto small = gb::quantize_table(row_of({0.03, -0.01}), gb::mxfp4_format());
    CHECK(small.stored_scales[0] == 119);
    CHECK(rebuilt(small) == std::vector<float>{6.0f / 256, -3.0f / 256});  // -0.01 / 2^-8 = -2.56 -> -3
}

TEST_CASE("nvfp4: hand-computed blocks (E4M3 amax/6 per 16 under an fp32 tensor scale)") {
    std::vector<double> v(32, 0.0);
    v[0] = 6 * 448;  // tensor scale 6*448 / 6 / 448 = 1; block 0's scale is E4M3's 448
    v[16] = 1.0;     // block 1: 1/6 = 0.1667 -> E4M3 0.171875 (11 * 2^-6, the nearer of 0.15625 and 0.171875)
    v[17] = -0.4;    // -0.4 / 0.171875 = -2.33 -> -2
    v[18] = 0.3;     // 1.745 -> 1.5
    const auto q = gb::quantize_table(row_of(v), gb::nvfp4_format());
    CHECK(q.tensor_scale == 1.0f);
    CHECK(q.scales[0] == 448.0f);
    CHECK(q.stored_scales[0] == 0x7e);
    CHECK(q.scales[1] == 0.171875f);
    const auto r = rebuilt(q);
    CHECK(r[0] == 2688.0f);
    CHECK(r[16] == 6 * 0.171875f);
    CHECK(r[17] == -2 * 0.171875f);
    CHECK(r[18] == 1.5f * 0.171875f);
    CHECK(q.scale_bytes() == 2 + 4);
}

TEST_CASE("fp8: per-channel fp32 absmax scale, then E4M3 / E5M2 round half to even") {
    const auto e4 = gb::quantize_table(row_of({896, 1, 3.3, 2.125, -2.375}), gb::fp8_e4m3_format());
    CHECK(e4.scales.size() == 1);
    CHECK(e4.scales[0] == 2.0f);
    // 3.3/2 = 1.65 -> 1.625; 2.125/2 = 1.0625 ties to 1.0; 2.375/2 = 1.1875 ties to 1.25.
    CHECK(rebuilt(e4) == std::vector<float>{896, 1, 3.25f, 2, -2.5f});
    const auto e5 = gb::quantize_table(row_of({57344, 1.1, 1.125, 1.375}), gb::fp8_e5m2_format());
    CHECK(e5.scales[0] == 1.0f);
    CHECK(rebuilt(e5) == std::vector<float>{57344, 1, 1, 1.5f});
}

TEST_CASE("apot4: a hand-computed block (levels {0, .1, .2, .3, .4, .6, .8, 1} times the fp16 absmax)") {
    const auto q = gb::quantize_table(row_of({1.0, 0.52, 0.68, -0.27, 0.04, -0.93}), gb::apot4_format());
    CHECK(q.scales[0] == 1.0f);
    const auto r = rebuilt(q);
    const std::vector<double> expected{1.0, 0.6, 0.6, -0.3, 0.0, -1.0};
    for (std::size_t i = 0; i < r.size(); ++i) CHECK(r[i] == static_cast<float>(expected[i]));
}

TEST_CASE("q4_0 / q8_0 as tables: the ggml rules") {
    // m = 4 -> d = -0.5: 4 -> code 0 (value 4), -4 -> 16 clips to 15 (value -3.5), -0.25 ties up to 9.
    const auto q4 = gb::quantize_table(row_of({1, 4, -4, 0.25, -0.25}), gb::q4_0_format());
    CHECK(q4.scales[0] == -0.5f);
    CHECK(rebuilt(q4) == std::vector<float>{1, 4, -3.5f, 0, -0.5f});
    const auto q8 = gb::quantize_table(row_of({127, 0.5, -0.5, -2.5}), gb::q8_0_format());
    CHECK(rebuilt(q8) == std::vector<float>{127, 1, -1, -3});  // half away from zero
}
