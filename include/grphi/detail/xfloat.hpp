// Extended-precision positive reals for building the threshold and level tables once:
// a double-double mantissa (about 106 bits) with a separate binary exponent, so that
// b^k stays accurate far beyond the range of double (φ^±1600 and below double denormals).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace grphi::detail {

// value = (hi + lo) * 2^exp with hi in [1, 2), |lo| <= ulp(hi) / 2; zero is not representable.
struct xfloat {
    double hi = 1.0;
    double lo = 0.0;
    long exp = 0;
};

// Error-free transformations (Knuth two-sum, fma two-product).
inline void two_sum(double a, double b, double& s, double& e) {
    s = a + b;
    const double bb = s - a;
    e = (a - (s - bb)) + (b - bb);
}
inline void quick_two_sum(double a, double b, double& s, double& e) {
    s = a + b;
    e = b - (s - a);
}
inline void two_prod(double a, double b, double& p, double& e) {
    p = a * b;
    e = std::fma(a, b, -p);
}

// Renormalise a double-double (hi, lo) scaled by 2^exp so that hi lands in [1, 2).
inline xfloat x_normalise(double hi, double lo, long exp) {
    double s, e;
    quick_two_sum(hi, lo, s, e);
    int shift = 0;
    std::frexp(s, &shift);       // s = f * 2^shift, f in [0.5, 1)
    shift -= 1;                  // hi should be in [1, 2)
    return xfloat{std::ldexp(s, -shift), std::ldexp(e, -shift), exp + shift};
}

// Exact conversion of a positive double or long double (64-bit mantissa fits hi + lo).
inline xfloat x_from(long double v) {
    if (!(v > 0) || !std::isfinite(v)) throw std::invalid_argument("grphi: xfloat needs a finite positive value");
    int e = 0;
    const long double m = std::frexp(v, &e) * 2;  // m in [1, 2)
    const double hi = static_cast<double>(m);
    const double lo = static_cast<double>(m - hi);
    return x_normalise(hi, lo, e - 1);
}
inline xfloat x_from_dd(double hi, double lo) {
    int e = 0;
    std::frexp(hi, &e);
    return x_normalise(std::ldexp(hi, 1 - e), std::ldexp(lo, 1 - e), e - 1);
}

inline xfloat x_mul(const xfloat& a, const xfloat& b) {
    double p, e;
    two_prod(a.hi, b.hi, p, e);
    e += a.hi * b.lo + a.lo * b.hi;
    return x_normalise(p, e, a.exp + b.exp);
}

// Sum of two positive values.
inline xfloat x_add(const xfloat& a, const xfloat& b) {
    const xfloat& big = a.exp >= b.exp ? a : b;
    const xfloat& small = a.exp >= b.exp ? b : a;
    const long d = big.exp - small.exp;
    if (d > 300) return big;  // far below the 106-bit precision
    const double shi = std::ldexp(small.hi, static_cast<int>(-d));
    const double slo = std::ldexp(small.lo, static_cast<int>(-d));
    double s, e;
    two_sum(big.hi, shi, s, e);
    e += big.lo + slo;
    return x_normalise(s, e, big.exp);
}

inline xfloat x_div(const xfloat& a, const xfloat& b) {
    // Long division in three double steps: q1 + q2 + q3 carries about 106 correct bits.
    const double q1 = a.hi / b.hi;
    double p, pe;
    two_prod(q1, b.hi, p, pe);
    pe += q1 * b.lo;
    double r = (a.hi - p) - pe + a.lo;  // a - q1*b, cancellation is exact in the leading part
    const double q2 = r / b.hi;
    two_prod(q2, b.hi, p, pe);
    pe += q2 * b.lo;
    r = (r - p) - pe;
    const double q3 = r / b.hi;
    double s, e;
    quick_two_sum(q1, q2, s, e);
    return x_normalise(s, e + q3, a.exp - b.exp);
}

inline xfloat x_sqrt(const xfloat& a) {
    // Make the exponent even, then one Newton step in double-double from a double estimate.
    double hi = a.hi, lo = a.lo;
    long exp = a.exp;
    if (exp % 2 != 0) {
        hi *= 2;
        lo *= 2;
        exp -= 1;
    }
    const double s = std::sqrt(hi);
    double p, pe;
    two_prod(s, s, p, pe);
    const double correction = ((hi - p) - pe + lo) / (2 * s);
    double r, re;
    quick_two_sum(s, correction, r, re);
    return x_normalise(r, re, exp / 2);
}

inline xfloat x_pow(const xfloat& base, long k) {
    xfloat result{1.0, 0.0, 0};
    xfloat square = base;
    unsigned long n = static_cast<unsigned long>(k < 0 ? -k : k);
    while (n) {
        if (n & 1) result = x_mul(result, square);
        n >>= 1;
        if (n) square = x_mul(square, square);
    }
    if (k < 0) result = x_div(xfloat{1.0, 0.0, 0}, result);
    return result;
}

inline xfloat x_scale2(xfloat a, long e) {
    a.exp += e;
    return a;
}

// Rounds x to the scalar type T: upward (ceil) or to nearest, ties to even.
// Returns +inf when the result exceeds T's largest finite value; 0 is possible when rounding to nearest.
template <class T>
T x_round(const xfloat& x, bool upward) {
    constexpr int digits = std::numeric_limits<T>::digits;          // 24 or 53
    constexpr int min_exp = std::numeric_limits<T>::min_exponent - 1;  // -126 or -1022
    constexpr int max_exp = std::numeric_limits<T>::max_exponent - 1;  // 127 or 1023
    if (x.exp > max_exp) return std::numeric_limits<T>::infinity();
    const long quantum_exp = (x.exp > min_exp ? x.exp : min_exp) - (digits - 1);
    const long shift = x.exp - quantum_exp;  // <= digits - 1
    if (shift < -1100) return upward ? std::numeric_limits<T>::denorm_min() : T(0);
    const double hs = std::ldexp(x.hi, static_cast<int>(shift));
    const double ls = std::ldexp(x.lo, static_cast<int>(shift));
    const double f = std::floor(hs);
    double n;
    if (upward) {
        n = (hs > f) ? f + 1 : (ls > 0 ? f + 1 : f);
    } else {
        const double frac = hs - f;
        if (frac > 0.5 || (frac == 0.5 && ls > 0))
            n = f + 1;
        else if (frac < 0.5 || ls < 0)
            n = f;
        else
            n = (std::fmod(f, 2.0) == 0) ? f : f + 1;  // exact tie: to even
    }
    // n * 2^quantum_exp is exactly representable in T (n <= 2^digits) unless it overflows.
    const double v = std::ldexp(n, static_cast<int>(quantum_exp));
    if (v > static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::infinity();
    return static_cast<T>(v);
}

}  // namespace grphi::detail
