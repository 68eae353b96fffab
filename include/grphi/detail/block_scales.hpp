// Block scales stored as small floats (IEEE fp16, OCP FP8 E4M3) and the exact comparisons that decide
// between the products T(s) * level of an fp16/e4m3-scaled block (see grphi::block_scale).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../io/half.hpp"
#include "../core/options.hpp"

namespace grphi::detail {

// The value of a block scale code: fp16 bits, or the e4m3 byte (bias 7, subnormals m * 2^-9, no infinities).
inline double block_scale_value(block_scale format, std::uint16_t code) {
    if (format == block_scale::fp16) return static_cast<double>(half_to_float(code));
    const int exponent_field = (code >> 3) & 15, mantissa = code & 7;
    const double magnitude = exponent_field == 0 ? std::ldexp(double(mantissa), -9)
                                                 : std::ldexp(double(8 + mantissa), exponent_field - 10);
    return (code & 0x80) ? -magnitude : magnitude;
}

// A code's value is a valid block scale: in (0, 1] (and the code a real e4m3 byte, not NaN).
inline bool valid_block_scale_code(block_scale format, std::uint16_t code) {
    if (format == block_scale::e4m3 && (code > 0xFF || (code & 0x7F) == 0x7F)) return false;
    const double v = block_scale_value(format, code);
    return v > 0 && v <= 1;  // false for NaN
}

// The code nearest to v (ties to even), kept in [the smallest positive value, 1]: a scale never
// makes a block's nonzero weights vanish and never lifts them above the channel's top level.
inline std::uint16_t block_scale_code(block_scale format, double v) {
    const int mantissa_bits = format == block_scale::fp16 ? 10 : 3;
    const int min_exponent = format == block_scale::fp16 ? -14 : -6;  // of the smallest normal
    if (!(v > 0)) v = 0;
    if (v >= 1) v = 1;
    int e = 0;
    std::frexp(v, &e);  // v = f * 2^e, f in [0.5, 1)
    const int binade = std::max(e - 1, min_exponent);
    const double quantum = std::ldexp(1.0, binade - mantissa_bits);
    double q = std::nearbyint(v / quantum);  // exact division by a power of two; ties to even
    if (q == 0) q = 1;
    const double rounded = std::min(q * quantum, 1.0);
    if (format == block_scale::fp16) return float_to_half(static_cast<float>(rounded));  // exact: representable
    int re = 0;
    const double f = std::frexp(rounded, &re);
    if (re - 1 < min_exponent) return static_cast<std::uint16_t>(std::ldexp(rounded, 9));  // subnormal m * 2^-9
    const int mantissa = static_cast<int>(std::ldexp(f, 4)) - 8;
    return static_cast<std::uint16_t>(((re - 1 + 7) << 3) | mantissa);
}

// A block scale code and its value.
struct scale_choice {
    std::uint16_t code;
    double value;  // block_scale_value(format, code)
};

// The fields of a scale format's codes (fp16 or e4m3), as block_scale_nearest and its vector kernel read them.
struct scale_code_fields {
    int mantissa_bits;
    int min_exponent;  // of the smallest normal
    int bias;
};
inline scale_code_fields code_fields(block_scale format) {
    return format == block_scale::fp16 ? scale_code_fields{10, -14, 15} : scale_code_fields{3, -6, 7};
}

// block_scale_code(format, v) and its value, from the bits of v instead of frexp/ldexp/nearbyint calls
// (the per-block hot path): the same binade, quantum and round-half-even, so the same code.
inline scale_choice block_scale_nearest(block_scale format, double v) {
    const auto [mantissa_bits, min_exponent, bias] = code_fields(format);
    auto power_of_two = [](int e) {  // 2^e for normal doubles
        const std::uint64_t bits = std::uint64_t(e + 1023) << 52;
        double p;
        std::memcpy(&p, &bits, sizeof p);
        return p;
    };
    if (v >= 1) return {static_cast<std::uint16_t>(bias << mantissa_bits), 1.0};
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof v);
    // v <= 0 and NaN: block_scale_code's binade of 0 (frexp's exponent 0), its quantum 2^(-1 - mantissa_bits).
    if (!(v > 0))
        return {static_cast<std::uint16_t>((bias - 1 - mantissa_bits) << mantissa_bits), power_of_two(-1 - mantissa_bits)};
    const int e = static_cast<int>(bits >> 52) - 1023;  // floor(log2 v) for normal v; denormals fall below
    const int binade = std::max(e, min_exponent);
    const int quantum_exponent = binade - mantissa_bits;
    // v / quantum < 2^(mantissa_bits + 1): adding and taking away 2^52 rounds it to an integer, ties to even.
    const double q = (v * power_of_two(-quantum_exponent) + 0x1p52) - 0x1p52;
    const int steps = q == 0 ? 1 : static_cast<int>(q);
    // The carry of a rounded-up binade lands in the exponent field, as the code's layout wants.
    const auto code = static_cast<std::uint16_t>(((binade + bias) << mantissa_bits) + steps - (1 << mantissa_bits));
    return {code, steps * power_of_two(quantum_exponent)};
}

// Exact predicates on non-negative finite T (float or double), for the thresholds of scaled levels
// (levels that underflowed are 0).
// t * t >= a * b:
template <class T>
bool square_at_least(T t, T a, T b) {
    if constexpr (std::is_same_v<T, float>) {
        return double(t) * double(t) >= double(a) * double(b);  // 24-bit products are exact in double
    } else {
        if (a == 0 || b == 0) return true;  // frexp's exponent of 0 would mislead the ratio below
        if (t == 0) return false;
        int et = 0, ea = 0, eb = 0;
        const double mt = std::frexp(t, &et), ma = std::frexp(a, &ea), mb = std::frexp(b, &eb);  // in [0.5, 1)
        const int d = 2 * et - ea - eb;                 // t^2 / ab = (mt^2 / (ma mb)) * 2^d, the ratio in (1/4, 4)
        if (d >= 2) return true;
        if (d <= -2) return false;
        const double left = std::ldexp(mt, d + 2);      // mt * 2^(d+2) in [0.125, 4): exact, no underflow
        const double p = left * mt, pe = std::fma(left, mt, -p);
        const double q = 4.0 * ma * mb, qe = std::fma(4.0 * ma, mb, -q);
        return p > q || (p == q && pe >= qe);
    }
}

// t + t >= a + b:
template <class T>
bool double_at_least(T t, T a, T b) {
    if constexpr (std::is_same_v<T, float>) {
        return 2.0 * double(t) >= double(a) + double(b);  // exact in double
    } else {
        // Halve everything when large (exact there) so that neither side overflows.
        if (t > 0x1p1000 || a > 0x1p1000 || b > 0x1p1000) {
            t *= 0.25;
            a *= 0.25;
            b *= 0.25;
        }
        const double s = a + b, z = s - a, e = (a - (s - z)) + (b - z);  // two-sum: a + b = s + e exactly
        const double twice = t + t;
        return twice > s || (twice == s && e <= 0);
    }
}

// The next T above / below a non-negative finite x (x > 0 for below): one step of its bit pattern, the
// same value std::nextafter gives there without the library call.
template <class T>
T next_up_nonnegative(T x) {
    using U = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
    U bits;
    std::memcpy(&bits, &x, sizeof(T));
    ++bits;
    std::memcpy(&x, &bits, sizeof(T));
    return x;
}
template <class T>
T next_down_positive(T x) {
    using U = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
    U bits;
    std::memcpy(&bits, &x, sizeof(T));
    --bits;
    std::memcpy(&x, &bits, sizeof(T));
    return x;
}

// The smallest T value x with pred(x) (pred monotone, true at `upper` > 0), starting from a guess.
template <class T, class Pred>
T smallest_satisfying(T guess, T upper, Pred&& pred) {
    T x = std::min(std::max(guess, T(0)), upper);
    while (x < upper && !pred(x)) x = next_up_nonnegative(x);
    while (x > T(0) && pred(next_down_positive(x))) x = next_down_positive(x);
    return x;
}

// Threshold between the adjacent positive levels a < b of a scaled block: the smallest T that rounds to b
// or above, t * t >= a * b (log rounding) or t + t >= a + b (linear). The guess is within an ulp or two
// (float: from the exact double product or sum), and the exact predicate walks the rest.
template <class T>
T scaled_threshold(T a, T b, rounding round) {
    if (round == rounding::log) {
        const T guess = std::is_same_v<T, float> ? static_cast<T>(std::sqrt(double(a) * double(b)))
                                                 : std::sqrt(a) * std::sqrt(b);
        return smallest_satisfying<T>(guess, b, [&](T t) { return square_at_least(t, a, b); });
    }
    const T guess = std::is_same_v<T, float> ? static_cast<T>(0.5 * (double(a) + double(b))) : a / 2 + b / 2;
    return smallest_satisfying<T>(guess, b, [&](T t) { return double_at_least(t, a, b); });
}

}  // namespace grphi::detail
