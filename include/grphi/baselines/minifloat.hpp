// The small floating-point formats of today's 4- and 8-bit quantization, exactly:
//   E2M1 (OCP MX FP4): bias 1, no Inf/NaN, magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
//   E4M3 (OCP FP8 "fn"): bias 7, no Inf, S.1111.111 is NaN, max 448, smallest denormal 2^-9.
//   E5M2 (OCP FP8, IEEE-like): bias 15, Inf and NaN, max 57344, smallest denormal 2^-16.
//   E8M0 (OCP MX shared scale): 2^(code - 127) for code 0..254, 255 is NaN.
// Encoding rounds to nearest with ties to the even code and saturates to the largest finite value
// (the OCP spec's saturating conversion); NaN in throws, since a quantizer never needs to store one.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace grphi::baselines {

// A sign-magnitude minifloat with exponent_bits E and mantissa_bits M; its finite magnitudes are the
// codes 0 .. max_magnitude_code (the codes above it are Inf/NaN, or do not exist).
struct minifloat_format {
    const char* name;
    int exponent_bits;
    int mantissa_bits;
    int bias;
    std::uint32_t max_magnitude_code;

    // The value of a non-negative magnitude code <= max_magnitude_code.
    double magnitude(std::uint32_t code) const {
        const std::uint32_t exponent = code >> mantissa_bits;
        const double mantissa = static_cast<double>(code & ((1u << mantissa_bits) - 1u));
        const double fraction = mantissa / static_cast<double>(1u << mantissa_bits);
        if (exponent == 0) return std::ldexp(fraction, 1 - bias);  // denormal: 0.m * 2^(1 - bias)
        return std::ldexp(1.0 + fraction, static_cast<int>(exponent) - bias);
    }
    double max_value() const { return magnitude(max_magnitude_code); }
    std::uint32_t sign_bit() const { return 1u << (exponent_bits + mantissa_bits); }

    // The value of a full code (sign bit on top of the magnitude); NaN or Inf for the special codes.
    double value(std::uint32_t code) const {
        const std::uint32_t m = code & (sign_bit() - 1u);
        const double sign = (code & sign_bit()) ? -1.0 : 1.0;
        if (m > max_magnitude_code) {
            if (exponent_bits == 5 && m == (0x1fu << mantissa_bits)) return sign * INFINITY;  // E5M2's Inf
            return NAN;
        }
        return sign * magnitude(m);
    }

    // Nearest magnitude code of |x| (ties to even, saturating at max_magnitude_code); the magnitudes
    // grow with the code, so a binary search over the code's midpoints finds it.
    std::uint32_t encode_magnitude(double x) const {
        if (std::isnan(x)) throw std::domain_error(std::string("grphi::baselines::") + name + ": NaN has no code");
        x = std::fabs(x);
        if (x >= max_value()) return max_magnitude_code;
        std::uint32_t lo = 0, hi = max_magnitude_code;  // magnitude(lo) <= x < magnitude(hi)
        while (hi - lo > 1) {
            const std::uint32_t mid = lo + (hi - lo) / 2;
            (magnitude(mid) <= x ? lo : hi) = mid;
        }
        const double below = x - magnitude(lo), above = magnitude(hi) - x;
        if (below < above) return lo;
        if (above < below) return hi;
        return (lo & 1u) ? hi : lo;
    }
    std::uint32_t encode(double x) const {
        const std::uint32_t m = encode_magnitude(x);
        return std::signbit(x) ? (m | sign_bit()) : m;
    }
    double round(double x) const { return value(encode(x)); }

    // Every finite magnitude, ascending (code order).
    std::vector<double> magnitudes() const {
        std::vector<double> out;
        for (std::uint32_t c = 0; c <= max_magnitude_code; ++c) out.push_back(magnitude(c));
        return out;
    }
};

inline constexpr minifloat_format e2m1{"e2m1", 2, 1, 1, 0x7};
inline constexpr minifloat_format e4m3{"e4m3", 4, 3, 7, 0x7e};
inline constexpr minifloat_format e5m2{"e5m2", 5, 2, 15, 0x7b};

// E8M0: a power of two 2^(code - 127); code 255 is NaN.
inline double e8m0_value(std::uint8_t code) { return code == 0xff ? NAN : std::ldexp(1.0, static_cast<int>(code) - 127); }
// The code of 2^exponent, exponent clamped into E8M0's range [-127, 127].
inline std::uint8_t e8m0_code(int exponent) {
    return static_cast<std::uint8_t>((exponent < -127 ? -127 : exponent > 127 ? 127 : exponent) + 127);
}

}  // namespace grphi::baselines
