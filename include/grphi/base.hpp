// Bases of the logarithmic grid: a base is any type with a long-double `value` > 1 and a `name`.
#pragma once

#include <type_traits>

namespace grphi {

// The golden ratio φ = (1 + √5) / 2.
struct phi {
    static constexpr long double value = 1.6180339887498948482045868343656381L;
    static constexpr const char* name = "phi";
    // φ as a double-double (hi + lo), 106 bits: the threshold tables need more than long double.
    static constexpr double precise_hi = 1.618033988749895;
    static constexpr double precise_lo = -5.432115203682506e-17;
};

struct two {
    static constexpr long double value = 2.0L;
    static constexpr const char* name = "two";
    static constexpr double precise_hi = 2.0;
    static constexpr double precise_lo = 0.0;
};

struct sqrt2 {
    static constexpr long double value = 1.4142135623730950488016887242096981L;
    static constexpr const char* name = "sqrt2";
    static constexpr double precise_hi = 1.4142135623730951;
    static constexpr double precise_lo = -9.667293313452913e-17;
};

namespace detail {
template <class B, class = void>
struct has_base_members : std::false_type {};
template <class B>
struct has_base_members<B, std::void_t<decltype(B::value), decltype(B::name)>>
    : std::bool_constant<std::is_convertible_v<decltype(B::value), long double> &&
                         std::is_convertible_v<decltype(B::name), const char*>> {};

template <class B, class = void>
struct has_precise_value : std::false_type {};
template <class B>
struct has_precise_value<B, std::void_t<decltype(B::precise_hi), decltype(B::precise_lo)>> : std::true_type {};
}  // namespace detail

// Smallest base grphi accepts: below it exponents of double denormals overflow int16.
inline constexpr long double min_base_value = 1.03L;

template <class B>
inline constexpr bool is_base_v = [] {
    if constexpr (detail::has_base_members<B>::value)
        return static_cast<long double>(B::value) >= min_base_value;
    else
        return false;
}();

template <class B>
constexpr void check_base() {
    static_assert(detail::has_base_members<B>::value,
                  "grphi: a base needs `static constexpr long double value` and `static constexpr const char* name`");
    static_assert(static_cast<long double>(B::value) >= min_base_value,
                  "grphi: base value must be >= 1.03 (value > 1, and exponents must fit int16)");
}

template <class T>
constexpr void check_scalar() {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "grphi: the scalar type must be float or double");
}

}  // namespace grphi
