// E2M1, E4M3, E5M2, E8M0: the OCP specs' own values, and encoding against a brute force over every code.
#include <grphi/baselines/minifloat.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace gb = grphi::baselines;

TEST_CASE("minifloat: the specs' values") {
    CHECK(gb::e2m1.magnitudes() == std::vector<double>{0, 0.5, 1, 1.5, 2, 3, 4, 6});
    CHECK(gb::e2m1.value(0xf) == -6.0);
    CHECK(std::signbit(gb::e2m1.value(0x8)));
    CHECK(gb::e4m3.value(0x7e) == 448.0);
    CHECK(std::isnan(gb::e4m3.value(0x7f)));
    CHECK(std::isnan(gb::e4m3.value(0xff)));
    CHECK(gb::e4m3.value(0x08) == std::ldexp(1.0, -6));  // smallest normal
    CHECK(gb::e4m3.value(0x01) == std::ldexp(1.0, -9));  // smallest denormal
    CHECK(gb::e4m3.value(0x38) == 1.0);
    CHECK(gb::e4m3.value(0xb8) == -1.0);
    CHECK(gb::e4m3.magnitudes().size() == 127);
    CHECK(gb::e5m2.value(0x7b) == 57344.0);
    CHECK(std::isinf(gb::e5m2.value(0x7c)));
    CHECK(gb::e5m2.value(0xfc) == -INFINITY);
    CHECK(std::isnan(gb::e5m2.value(0x7d)));
    CHECK(gb::e5m2.value(0x04) == std::ldexp(1.0, -14));
    CHECK(gb::e5m2.value(0x01) == std::ldexp(1.0, -16));
    CHECK(gb::e5m2.value(0x3c) == 1.0);
    CHECK(gb::e8m0_value(127) == 1.0);
    CHECK(gb::e8m0_value(0) == std::ldexp(1.0, -127));
    CHECK(gb::e8m0_value(254) == std::ldexp(1.0, 127));
    CHECK(std::isnan(gb::e8m0_value(255)));
    CHECK(gb::e8m0_code(-200) == 0);
    CHECK(gb::e8m0_code(3) == 130);
    CHECK(gb::e8m0_code(500) == 254);
}

TEST_CASE("minifloat: round half to even, saturation, signed zero, NaN") {
    // E2M1 ties: 0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4; beyond 6 saturates.
    const double in[] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 1e30, 0.26};
    const double out[] = {0, 1, 1, 2, 2, 4, 4, 6, 6, 0.5};
    for (std::size_t i = 0; i < 10; ++i) {
        CAPTURE(in[i]);
        CHECK(gb::e2m1.round(in[i]) == out[i]);
        CHECK(gb::e2m1.round(-in[i]) == -out[i]);
    }
    CHECK(gb::e4m3.round(1.0625) == 1.0);    // between 1 (mantissa 000) and 1.125 (001)
    CHECK(gb::e4m3.round(1.1875) == 1.25);   // between 1.125 (001) and 1.25 (010)
    CHECK(gb::e4m3.round(464.0) == 448.0);   // saturating, not NaN
    CHECK(gb::e4m3.round(std::ldexp(1.0, -10)) == 0.0);  // half the smallest denormal: ties to 0
    CHECK(gb::e5m2.round(1.125) == 1.0);
    CHECK(gb::e5m2.round(1.375) == 1.5);
    CHECK(gb::e5m2.round(1e9) == 57344.0);
    CHECK(gb::e4m3.encode(-0.0) == 0x80);
    CHECK_THROWS_AS(gb::e4m3.encode(std::numeric_limits<double>::quiet_NaN()), std::domain_error);
}

TEST_CASE("minifloat: encoding equals a brute force over every finite code") {
    std::mt19937_64 rng(3);
    for (const gb::minifloat_format* f : {&gb::e2m1, &gb::e4m3, &gb::e5m2}) {
        CAPTURE(f->name);
        std::uniform_real_distribution<double> log_magnitude(std::log2(f->magnitude(1)) - 2, std::log2(f->max_value()) + 1);
        for (int i = 0; i < 3000; ++i) {
            double x = std::exp2(log_magnitude(rng));
            if (i % 3 == 0) {  // exact midpoints: the tie rule
                const std::uint32_t c = static_cast<std::uint32_t>(rng() % f->max_magnitude_code);
                x = (f->magnitude(c) + f->magnitude(c + 1)) / 2;
            }
            std::uint32_t best = 0;
            for (std::uint32_t c = 1; c <= f->max_magnitude_code; ++c) {
                const double d = std::fabs(f->magnitude(c) - x), e = std::fabs(f->magnitude(best) - x);
                if (d < e || (d == e && c % 2 == 0)) best = c;
            }
            CAPTURE(x);
            CHECK(f->encode_magnitude(x) == best);
            CHECK(f->encode(-x) == (best | f->sign_bit()));
        }
    }
}
