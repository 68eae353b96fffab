// half.hpp: binary16 and bfloat16 conversions, checked exhaustively against independent references.
#include <doctest/doctest.h>

#include <grphi/io/half.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace {

std::uint32_t bits_of(float value) {
    std::uint32_t bits;
    std::memcpy(&bits, &value, 4);
    return bits;
}
float float_of(std::uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}

// binary16 value from its fields by the definition, in double.
double half_reference(std::uint16_t h) {
    const int sign = (h >> 15) ? -1 : 1;
    const int exponent = (h >> 10) & 31;
    const int mantissa = h & 1023;
    if (exponent == 31) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
    if (exponent == 0) return sign * std::ldexp(mantissa, -24);
    return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Nearest binary16 by search over every finite positive value, ties to the even bit pattern.
std::uint16_t half_nearest_reference(float value, const std::vector<double>& positives) {
    const std::uint16_t sign = std::signbit(value) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(value));
    if (a >= 65520.0) return sign | 0x7c00;  // at or past the midpoint of 65504 and 2^16
    const auto above = std::lower_bound(positives.begin(), positives.end(), a);
    if (above == positives.begin()) return sign;
    if (above == positives.end()) return sign | 0x7bff;  // between 65504 and the midpoint to Inf
    const auto index_above = static_cast<std::uint16_t>(above - positives.begin());
    const auto index_below = static_cast<std::uint16_t>(index_above - 1);
    const double below_gap = a - positives[index_below];
    const double above_gap = *above - a;
    if (below_gap < above_gap) return sign | index_below;
    if (above_gap < below_gap) return sign | index_above;
    return sign | ((index_below & 1) ? index_above : index_below);
}

}  // namespace

TEST_CASE("half_to_float matches the binary16 definition for all 65536 patterns") {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const auto half = static_cast<std::uint16_t>(h);
        const float got = grphi::half_to_float(half);
        const double want = half_reference(half);
        if (std::isnan(want)) {
            REQUIRE(std::isnan(got));
        } else {
            REQUIRE(static_cast<double>(got) == want);
            REQUIRE(std::signbit(got) == ((h >> 15) != 0));
        }
    }
}

TEST_CASE("float_to_half inverts half_to_float and keeps NaN a NaN") {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const auto half = static_cast<std::uint16_t>(h);
        const float value = grphi::half_to_float(half);
        const std::uint16_t back = grphi::float_to_half(value);
        if (std::isnan(value)) {
            REQUIRE((back & 0x7c00) == 0x7c00);
            REQUIRE((back & 0x03ff) != 0);
            REQUIRE((back & 0x8000) == (half & 0x8000));
        } else {
            REQUIRE(back == half);
        }
    }
}

TEST_CASE("float_to_half rounds to nearest even: edges and random floats against a table search") {
    std::vector<double> positives;  // index i = bit pattern i, 0 .. 0x7bff
    for (std::uint32_t h = 0; h < 0x7c00; ++h) positives.push_back(half_reference(static_cast<std::uint16_t>(h)));

    CHECK(grphi::float_to_half(65504.0f) == 0x7bff);
    CHECK(grphi::float_to_half(std::nextafter(65520.0f, 0.0f)) == 0x7bff);
    CHECK(grphi::float_to_half(65520.0f) == 0x7c00);
    CHECK(grphi::float_to_half(-1e30f) == 0xfc00);
    CHECK(grphi::float_to_half(std::ldexp(1.0f, -25)) == 0x0000);  // tie between 0 and the smallest denormal
    CHECK(grphi::float_to_half(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
    CHECK(grphi::float_to_half(3 * std::ldexp(1.0f, -25)) == 0x0002);  // tie between 1 and 2: even
    CHECK(grphi::float_to_half(std::ldexp(1.0f, -14)) == 0x0400);      // smallest normal
    CHECK(grphi::float_to_half(std::nextafter(std::ldexp(1.0f, -14), 0.0f)) == 0x0400);  // rounds up into normal
    CHECK(grphi::float_to_half(-0.0f) == 0x8000);
    CHECK(grphi::float_to_half(std::numeric_limits<float>::denorm_min()) == 0x0000);
    CHECK(grphi::float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie: 1.0 is even
    CHECK(grphi::float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);

    std::mt19937 generator(12345);
    std::uniform_int_distribution<std::uint32_t> any_bits;
    std::uniform_int_distribution<std::uint32_t> near_half_range(0x33000000u - 0x100000u, 0x47800000u);
    for (int i = 0; i < 400000; ++i) {
        std::uint32_t bits = (i % 2) ? near_half_range(generator) : any_bits(generator);
        if (i % 4 == 3) bits |= 0x80000000u;
        const float value = float_of(bits);
        if (std::isnan(value)) continue;
        REQUIRE(grphi::float_to_half(value) == half_nearest_reference(value, positives));
    }
    // Every midpoint between neighbouring halves and one ulp either side.
    for (std::uint32_t h = 0; h + 1 < 0x7c00; ++h) {
        const float midpoint = static_cast<float>((positives[h] + positives[h + 1]) / 2);  // exact in float
        for (const float value : {std::nextafter(midpoint, 0.0f), midpoint, std::nextafter(midpoint, 1e9f)})
            REQUIRE(grphi::float_to_half(value) == half_nearest_reference(value, positives));
    }
}

TEST_CASE("bfloat16 widens exactly and narrows to nearest even") {
    for (std::uint32_t b = 0; b < 65536; ++b) {
        const auto bf16 = static_cast<std::uint16_t>(b);
        const float value = grphi::bfloat16_to_float(bf16);
        REQUIRE(bits_of(value) == (b << 16));
        const std::uint16_t back = grphi::float_to_bfloat16(value);
        if (std::isnan(value)) {
            REQUIRE((back & 0x7f80) == 0x7f80);
            REQUIRE((back & 0x007f) != 0);
        } else {
            REQUIRE(back == bf16);
        }
    }
    std::mt19937 generator(777);
    std::uniform_int_distribution<std::uint32_t> any_bits;
    for (int i = 0; i < 400000; ++i) {
        const std::uint32_t bits = (i % 3 == 0) ? (any_bits(generator) & 0xffff8000u) | 0x8000u : any_bits(generator);
        const float value = float_of(bits);
        if (std::isnan(value)) continue;
        // Reference: the two bfloat16 neighbours, compared in double (exact for these magnitudes).
        const std::uint32_t down = bits & 0xffff0000u;
        const std::uint32_t up = down + 0x10000u;
        const double a = std::fabs(static_cast<double>(value));
        const double low = std::fabs(static_cast<double>(float_of(down)));
        const float up_value = float_of(up);
        const double high = std::isnan(up_value) ? INFINITY
                          : std::isinf(up_value) ? std::ldexp(1.0, 128)  // the rounding midpoint to Inf uses 2^128
                                                 : std::fabs(static_cast<double>(up_value));
        std::uint16_t want;
        if (a - low < high - a) want = static_cast<std::uint16_t>(down >> 16);
        else if (high - a < a - low) want = static_cast<std::uint16_t>(up >> 16);
        else want = static_cast<std::uint16_t>(((down >> 16) & 1) ? up >> 16 : down >> 16);
        REQUIRE(grphi::float_to_bfloat16(value) == want);
    }
    CHECK(grphi::float_to_bfloat16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to Inf
    CHECK(grphi::float_to_bfloat16(std::numeric_limits<float>::denorm_min()) == 0x0000);
    CHECK(grphi::float_to_bfloat16(-std::numeric_limits<float>::infinity()) == 0xff80);
    CHECK(std::isnan(grphi::bfloat16_to_float(grphi::float_to_bfloat16(float_of(0x7f800001u)))));
}
