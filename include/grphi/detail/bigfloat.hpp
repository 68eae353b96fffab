// Certified binary interval arithmetic on non-negative reals with N 64-bit limbs: every operation
// rounds its lower end toward zero and its upper end upward, so [lo, hi] always holds the exact value.
// Used once per grid to certify the rounding decisions of the exponent tables (see exact_rounding.hpp).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

#if !defined(__SIZEOF_INT128__)
#error "grphi: the exact grid construction needs unsigned __int128 (GCC or Clang)"
#endif

namespace grphi::detail {

__extension__ typedef unsigned __int128 u128;  // 64x64-bit limb products; __extension__ keeps -Wpedantic quiet
__extension__ typedef __int128 i128;

enum class toward { zero, up };

// value = 0.m[0] m[1] ... m[N-1] (a binary fraction, m[0] most significant) * 2^scale.
// Nonzero values have the top bit of m[0] set; zero has every limb 0.
template <int N>
struct bigfloat {
    static_assert(N >= 1, "bigfloat needs at least one limb");
    std::array<std::uint64_t, N> m{};
    long scale = 0;
    bool is_zero() const { return m[0] == 0; }
    bool is_power_of_two() const {
        if (m[0] != std::uint64_t{1} << 63) return false;
        for (int i = 1; i < N; ++i)
            if (m[static_cast<std::size_t>(i)] != 0) return false;
        return true;
    }
};

// The next representable value above x (x nonzero): one unit in the last limb, carrying into a new binade.
template <int N>
bigfloat<N> next_up(bigfloat<N> x) {
    for (int i = N - 1; i >= 0; --i)
        if (++x.m[static_cast<std::size_t>(i)] != 0) return x;
    x.m[0] = std::uint64_t{1} << 63;  // 0.111...1 + ulp = 1.0: renormalise
    x.scale += 1;
    return x;
}

// The fraction 0.w[0] w[1] ... w[count-1] * 2^scale (w most significant first), rounded to N limbs.
template <int N>
bigfloat<N> pack(const std::uint64_t* w, int count, long scale, toward dir) {
    int first = 0;
    while (first < count && w[first] == 0) ++first;
    bigfloat<N> r;
    if (first == count) return r;
    const int lz = __builtin_clzll(w[first]);
    auto word = [&](int i) { return i < count ? w[i] : std::uint64_t{0}; };
    for (int i = 0; i < N; ++i) {
        const std::uint64_t a = word(first + i), b = word(first + i + 1);
        r.m[static_cast<std::size_t>(i)] = lz == 0 ? a : (a << lz) | (b >> (64 - lz));
    }
    r.scale = scale - 64L * first - lz;
    if (dir == toward::up) {
        bool dropped = (lz == 0 ? word(first + N) : word(first + N) << lz) != 0;
        for (int i = first + N + 1; i < count && !dropped; ++i) dropped = w[i] != 0;
        if (dropped) r = next_up(r);
    }
    return r;
}

template <int N>
bigfloat<N> power_of_two(long e) {
    bigfloat<N> r;
    r.m[0] = std::uint64_t{1} << 63;
    r.scale = e + 1;
    return r;
}

// v * 2^e exactly (N >= 2 holds any 128-bit integer).
template <int N>
bigfloat<N> from_u128(u128 v, long e) {
    const std::uint64_t w[2] = {static_cast<std::uint64_t>(v >> 64), static_cast<std::uint64_t>(v)};
    return pack<N>(w, 2, e + 128, toward::zero);
}

// A finite long double, float or double >= 0, exactly (significands of up to 113 bits).
template <int N>
bigfloat<N> from_scalar(long double v) {
    if (!(v >= 0) || !std::isfinite(v)) throw std::invalid_argument("grphi: bigfloat needs a finite value >= 0");
    if (v == 0) return bigfloat<N>{};
    int e = 0;
    const long double fraction = std::frexp(v, &e);  // [1/2, 1): times 2^120 it is an integer below 2^120
    static_assert(std::numeric_limits<long double>::digits <= 120, "long double significand wider than 120 bits");
    return from_u128<N>(static_cast<u128>(std::ldexp(fraction, 120)), e - 120L);
}

// A finite double >= 0 (or a float, converted exactly), straight from its bits: the hot conversion.
template <int N>
bigfloat<N> from_scalar(double v) {
    if (!(v >= 0) || !std::isfinite(v)) throw std::invalid_argument("grphi: bigfloat needs a finite value >= 0");
    std::uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    const auto field = static_cast<long>(bits >> 52);
    std::uint64_t significand = bits & ((std::uint64_t{1} << 52) - 1);
    if (field != 0) significand |= std::uint64_t{1} << 52;
    bigfloat<N> r;
    if (significand == 0) return r;
    const int lz = __builtin_clzll(significand);
    r.m[0] = significand << lz;
    r.scale = (field != 0 ? field - 1075 : -1074) + 64 - lz;  // v = significand * 2^(field - 1075), or denormal
    return r;
}
template <int N>
bigfloat<N> from_scalar(float v) {
    return from_scalar<N>(static_cast<double>(v));
}

template <int N>
bigfloat<N> scaled(bigfloat<N> x, long e) {
    if (!x.is_zero()) x.scale += e;
    return x;
}

// The same number with M limbs (exact when widening; rounded as asked when narrowing).
template <int M, int N>
bigfloat<M> resized(const bigfloat<N>& x, toward dir) {
    if constexpr (M == N)
        return x;
    else
        return pack<M>(x.m.data(), N, x.scale, dir);
}

// -1, 0, +1 as a <, ==, > b.
template <int N>
int compare(const bigfloat<N>& a, const bigfloat<N>& b) {
    if (a.is_zero() || b.is_zero()) return (a.is_zero() ? 0 : 1) - (b.is_zero() ? 0 : 1);
    if (a.scale != b.scale) return a.scale < b.scale ? -1 : 1;
    for (std::size_t i = 0; i < static_cast<std::size_t>(N); ++i)
        if (a.m[i] != b.m[i]) return a.m[i] < b.m[i] ? -1 : 1;
    return 0;
}

template <int N>
bigfloat<N> multiply(const bigfloat<N>& a, const bigfloat<N>& b, toward dir) {
    if (a.is_zero() || b.is_zero()) return bigfloat<N>{};
    std::array<std::uint64_t, 2 * N> p{};  // most significant first, like the limbs
    for (int i = N - 1; i >= 0; --i) {
        std::uint64_t carry = 0;
        for (int j = N - 1; j >= 0; --j) {
            auto& slot = p[static_cast<std::size_t>(i + j + 1)];
            const u128 t =
                static_cast<u128>(a.m[static_cast<std::size_t>(i)]) * b.m[static_cast<std::size_t>(j)] + slot + carry;
            slot = static_cast<std::uint64_t>(t);
            carry = static_cast<std::uint64_t>(t >> 64);
        }
        p[static_cast<std::size_t>(i)] = carry;
    }
    // The product of two fractions in [1/2, 1) lies in [1/4, 1): at most one leading zero bit.
    const int lz = static_cast<int>(p[0] >> 63) ^ 1;
    bigfloat<N> r;
    for (std::size_t i = 0; i < static_cast<std::size_t>(N); ++i)
        r.m[i] = lz == 0 ? p[i] : (p[i] << 1) | (p[i + 1] >> 63);
    r.scale = a.scale + b.scale - lz;
    if (dir == toward::up) {
        bool dropped = (p[static_cast<std::size_t>(N)] << lz) != 0;
        for (std::size_t i = static_cast<std::size_t>(N) + 1; i < 2 * static_cast<std::size_t>(N) && !dropped; ++i)
            dropped = p[i] != 0;
        if (dropped) r = next_up(r);
    }
    return r;
}

template <int N>
bigfloat<N> add(const bigfloat<N>& a, const bigfloat<N>& b, toward dir) {
    if (a.is_zero()) return b;
    if (b.is_zero()) return a;
    const bigfloat<N>& big = a.scale >= b.scale ? a : b;
    const bigfloat<N>& small = a.scale >= b.scale ? b : a;
    const long shift = big.scale - small.scale;
    if (shift > 64L * (N + 1)) return dir == toward::up ? next_up(big) : big;  // small only sets a sticky bit
    // Word 0 takes the carry; big fills words 1..N; small starts `shift` bits further right.
    std::array<std::uint64_t, 2 * N + 3> w{};
    for (int i = 0; i < N; ++i) w[static_cast<std::size_t>(i + 1)] = big.m[static_cast<std::size_t>(i)];
    const int word_shift = static_cast<int>(shift / 64), bit_shift = static_cast<int>(shift % 64);
    std::array<std::uint64_t, N + 1> s{};  // small >> bit_shift, most significant first
    for (int i = 0; i <= N; ++i) {
        const std::uint64_t above = i > 0 ? small.m[static_cast<std::size_t>(i - 1)] : 0;
        const std::uint64_t here = i < N ? small.m[static_cast<std::size_t>(i)] : 0;
        s[static_cast<std::size_t>(i)] = bit_shift == 0 ? here : (here >> bit_shift) | (above << (64 - bit_shift));
    }
    std::uint64_t carry = 0;
    for (int i = N; i >= 0; --i) {
        auto& slot = w[static_cast<std::size_t>(1 + word_shift + i)];
        const u128 t = static_cast<u128>(slot) + s[static_cast<std::size_t>(i)] + carry;
        slot = static_cast<std::uint64_t>(t);
        carry = static_cast<std::uint64_t>(t >> 64);
    }
    for (int i = word_shift; carry != 0 && i >= 0; --i) carry = ++w[static_cast<std::size_t>(i)] == 0 ? 1 : 0;
    return pack<N>(w.data(), 2 * N + 3, big.scale + 64, dir);
}

// ---------------------------------------------------------------------------------------------
// Intervals [lo, hi] of non-negative reals.

template <int N>
struct interval {
    bigfloat<N> lo, hi;
    bool is_point() const { return compare(lo, hi) == 0; }
};

template <int N>
interval<N> point(const bigfloat<N>& x) {
    return {x, x};
}

template <int N>
interval<N> operator*(const interval<N>& a, const interval<N>& b) {
    return {multiply(a.lo, b.lo, toward::zero), multiply(a.hi, b.hi, toward::up)};
}

template <int N>
interval<N> operator+(const interval<N>& a, const interval<N>& b) {
    return {add(a.lo, b.lo, toward::zero), add(a.hi, b.hi, toward::up)};
}

template <int N>
interval<N> scaled(const interval<N>& x, long e) {
    return {scaled(x.lo, e), scaled(x.hi, e)};
}

template <int M, int N>
interval<M> resized(const interval<N>& x) {
    return {resized<M>(x.lo, toward::zero), resized<M>(x.hi, toward::up)};
}

// x^e by squaring (e >= 0).
template <int N>
interval<N> power(interval<N> x, unsigned long e) {
    interval<N> r = point(power_of_two<N>(0));
    while (e != 0) {
        if (e & 1) r = r * x;
        e >>= 1;
        if (e != 0) x = x * x;
    }
    return r;
}

// ---------------------------------------------------------------------------------------------
// Irrational constants, truncated to 384 bits: the value lies in (c, c + 2^-383) for c in [1, 2).
// Regenerate (φ, then √2; split the hex digits into 64-bit limbs):
//   python3 -c "from math import isqrt; N=383; print(hex((2**N + isqrt(5<<2*N)) >> 1), hex(isqrt(2<<2*N)))"
inline constexpr int constant_limbs = 6;
inline constexpr std::array<std::uint64_t, constant_limbs> golden_ratio_limbs = {
    0xcf1bbcdcbfa53e0aULL, 0xf9ce60302e76e41aULL, 0x084113b5f9d13928ULL,
    0xfc363508e860c74aULL, 0x93b3f858a9e93dbfULL, 0x81a3822dadf8c13fULL};
inline constexpr std::array<std::uint64_t, constant_limbs> sqrt_two_limbs = {
    0xb504f333f9de6484ULL, 0x597d89b3754abe9fULL, 0x1d6f60ba893ba84cULL,
    0xed17ac8583339915ULL, 0x4afc83043ab8a2c3ULL, 0xa8b1fe6fdc83db39ULL};

template <int N>
interval<N> irrational_constant(const std::array<std::uint64_t, constant_limbs>& limbs) {
    static_assert(N <= constant_limbs, "the stored constants have 6 limbs");
    bigfloat<constant_limbs> c;
    c.m = limbs;
    c.scale = 1;  // [1, 2)
    return {resized<N>(c, toward::zero), resized<N>(next_up(c), toward::up)};
}

}  // namespace grphi::detail
