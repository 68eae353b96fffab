// IEEE binary16 (F16) and bfloat16 (BF16) <-> float: exact widening, round-to-nearest-even narrowing.
#pragma once

#include <cstdint>
#include <cstring>

namespace grphi {

namespace detail {
inline std::uint32_t float_bits(float value) noexcept {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}
inline float bits_float(std::uint32_t bits) noexcept {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}
}  // namespace detail

// Every binary16 value is a float: zeros, denormals (m * 2^-24), normals, infinities, NaN payloads.
inline float half_to_float(std::uint16_t half) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1fu;
    std::uint32_t mantissa = half & 0x3ffu;
    if (exponent == 0x1f) return detail::bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return detail::bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return detail::bits_float(sign);
    // Denormal: shift the leading one up to the implicit-bit position, one binade per shift.
    std::uint32_t biased = 113;
    while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        --biased;
    }
    return detail::bits_float(sign | (biased << 23) | ((mantissa & 0x3ffu) << 13));
}

// Nearest binary16, ties to even; overflow to infinity, underflow through denormals to zero; NaN stays NaN.
inline std::uint16_t float_to_half(float value) noexcept {
    const std::uint32_t bits = detail::float_bits(value);
    const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
    const std::uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u)  // NaN: keep the top payload bits, force quiet so it cannot become Inf
        return static_cast<std::uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
    if (magnitude >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to Inf
    if (magnitude >= 0x38800000u) {  // normal binary16 (>= 2^-14): round the 13 dropped bits, carry may bump the exponent
        const std::uint32_t rounded = magnitude + 0xfffu + ((magnitude >> 13) & 1u);
        return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
    }
    if (magnitude <= 0x33000000u) return sign;  // <= 2^-25: half the smallest denormal or less, ties to even zero
    // Denormal result: round(value * 2^24) = round(significand * 2^(e - 126)).
    const std::uint32_t exponent = magnitude >> 23;
    const std::uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent;  // 14..24 here
    std::uint32_t quotient = significand >> shift;
    const std::uint32_t remainder = significand & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (remainder > halfway || (remainder == halfway && (quotient & 1u))) ++quotient;
    return static_cast<std::uint16_t>(sign | quotient);
}

// bfloat16 is the top half of a float: widening is a shift.
inline float bfloat16_to_float(std::uint16_t bf16) noexcept {
    return detail::bits_float(static_cast<std::uint32_t>(bf16) << 16);
}

// Nearest bfloat16, ties to even; NaN stays NaN (quieted so truncation cannot turn it into Inf).
inline std::uint16_t float_to_bfloat16(float value) noexcept {
    const std::uint32_t bits = detail::float_bits(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
    const std::uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<std::uint16_t>(rounded >> 16);
}

}  // namespace grphi
