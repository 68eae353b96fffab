// Bases of the logarithmic grid: a base is any type with a long-double `value` > 1 and a `name`.
#pragma once

#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
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

// A base chosen at run time: its value is options::base_value (a double, taken as exact), so any
// b >= 1.03 gets the same exact levels and thresholds as the named bases.
struct custom {
    static constexpr const char* name = "custom";
};

template <class B>
inline constexpr bool is_custom_base_v = std::is_same_v<B, custom>;

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
    if constexpr (is_custom_base_v<B>)
        return true;
    else if constexpr (detail::has_base_members<B>::value)
        return static_cast<long double>(B::value) >= min_base_value;
    else
        return false;
}();

// A compile-time base tag: value and name as constants, value >= 1.03.
template <class B>
constexpr void check_named_base() {
    static_assert(!is_custom_base_v<B>, "grphi: grphi::custom takes its value from options::base_value: "
                                        "call the overload that takes options");
    static_assert(detail::has_base_members<B>::value,
                  "grphi: a base needs `static constexpr long double value` and `static constexpr const char* name`");
    static_assert(static_cast<long double>(B::value) >= min_base_value,
                  "grphi: base value must be >= 1.03 (value > 1, and exponents must fit int16)");
}

// Any base: a named tag (checked as above) or grphi::custom (its value is checked at run time).
template <class B>
constexpr void check_base() {
    if constexpr (!is_custom_base_v<B>) check_named_base<B>();
}

namespace detail {

// The shortest decimal text that reads back as v (for messages and tables).
inline std::string number_text(double v) {
    char text[40];
    for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(text, sizeof text, "%.*g", digits, v);
        if (std::strtod(text, nullptr) == v || !std::isfinite(v)) break;
    }
    return text;
}

// A base as the grid builders see it at run time: exactly hi + lo (a double-double), and a name.
struct base_spec {
    double hi = 2.0;
    double lo = 0.0;
    const char* name = "two";
    bool custom = false;  // the value came from options::base_value

    long double approx() const { return static_cast<long double>(hi) + static_cast<long double>(lo); }
    // For messages: "phi", or "custom 1.5".
    std::string label() const { return custom ? std::string(name) + " " + number_text(hi) : std::string(name); }
};

// A named tag's spec: its 106-bit value when it gives one, else its long double split into hi + lo.
template <class B>
base_spec named_base_spec() {
    check_named_base<B>();
    base_spec b;
    b.name = B::name;
    if constexpr (has_precise_value<B>::value) {
        b.hi = B::precise_hi;
        b.lo = B::precise_lo;
    } else {
        const auto v = static_cast<long double>(B::value);
        b.hi = static_cast<double>(v);
        b.lo = static_cast<double>(v - static_cast<long double>(b.hi));  // exact: 64 - 53 bits remain
    }
    return b;
}

// grphi::custom with value v (already validated).
inline base_spec custom_base_spec(double v) {
    base_spec b;
    b.hi = v;
    b.lo = 0.0;
    b.name = custom::name;
    b.custom = true;
    return b;
}

}  // namespace detail

// A base chosen by text: the one set of spellings that the grphi tool and nn::weight_quantizer accept.
struct base_choice {
    std::string name;             // "phi", "two", "sqrt2" or "custom"
    std::optional<double> value;  // custom only: the base b
};

// "phi", "two" or "sqrt2"; or a decimal number (the whole text, as std::strtod reads it): one within
// 1e-12 of φ, 2 or √2 selects that named base (so "2" is two, with its exact value), any other finite
// number >= 1.03 is grphi::custom with that value. Anything else throws std::invalid_argument naming it.
inline base_choice parse_base(std::string_view text) {
    if (text == phi::name || text == two::name || text == sqrt2::name) return {std::string(text), std::nullopt};
    const std::string copy(text);  // strtod needs a terminated string
    // Decimal only: strtod would also read spaces, hex ("0x2"), "inf" and "nan".
    const bool decimal = !copy.empty() && copy.find_first_not_of("0123456789+-.eE") == std::string::npos;
    errno = 0;
    char* end = nullptr;
    const double value = decimal ? std::strtod(copy.c_str(), &end) : 0.0;
    if (!decimal || end != copy.c_str() + copy.size() || errno == ERANGE || !std::isfinite(value) ||
        !(value >= static_cast<double>(min_base_value)))
        throw std::invalid_argument("grphi: base '" + copy + "': expected phi, two, sqrt2 or a finite number >= 1.03");
    const struct {
        const char* name;
        long double value;
    } named[] = {{phi::name, phi::value}, {two::name, two::value}, {sqrt2::name, sqrt2::value}};
    for (const auto& b : named)
        if (std::fabs(static_cast<long double>(value) - b.value) <= 1e-12L) return {b.name, std::nullopt};
    return {custom::name, value};
}

template <class T>
constexpr void check_scalar() {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "grphi: the scalar type must be float or double");
}

}  // namespace grphi
