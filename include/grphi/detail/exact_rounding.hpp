// Certified rounding of the grid quantities (levels b^(k+δ), flush points b^(k+δ)/2 and the
// boundaries between exponents) to float or double. A double-double value proposes each result;
// certified intervals confirm it, and where they cannot (exact ties, near ties such as φ^n close to
// a Lucas number) the decision becomes an exact comparison of integer powers: x^e against b^m.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/base.hpp"
#include "../core/options.hpp"
#include "bigfloat.hpp"
#include "xfloat.hpp"

namespace grphi::detail {

// ---------------------------------------------------------------------------------------------
// The base as exact arithmetic: b^m (m >= 0) as an interval that is a single point whenever b^m is
// a dyadic rational, so exact ties stay exact. A user base (a named tag or grphi::custom) is the
// dyadic rational hi + lo of its base_spec; φ and √2 ignore the spec and use their exact definitions.

template <class Base, class = void>
struct exact_base {
    static constexpr bool dyadic = true;           // b^m is rational: more limbs can settle any tie
    static constexpr int one_plus_base_power = 0;  // 0: 1 + b is no power of b

    template <int N>
    static interval<N> value(const base_spec& b) {
        return point(pair_sum<N>(b));
    }
    template <int N>
    static interval<N> power(long m, const base_spec& spec) {
        const interval<N> b = value<N>(spec);
        if (b.lo.is_power_of_two()) return point(power_of_two<N>((b.lo.scale - 1) * m));
        return grphi::detail::power(b, static_cast<unsigned long>(m));
    }
    template <int N>
    static interval<N> one_plus_base(const base_spec& b) {
        return point(power_of_two<N>(0)) + value<N>(b);
    }

private:
    // hi + lo exactly, for a double-double base value whose parts lie within 126 bits of each other.
    template <int N>
    static bigfloat<N> pair_sum(const base_spec& b) {
        if (b.lo == 0) return from_scalar<N>(b.hi);
        const int unit = std::min(lowest_bit(b.hi), lowest_bit(b.lo));  // both parts are integers times 2^unit
        const double hi_units = std::ldexp(b.hi, -unit);
        if (!(std::fabs(hi_units) < std::ldexp(1.0, 125)))
            throw std::logic_error("grphi: base " + b.label() + ": precise_hi + precise_lo spans more than 126 bits");
        const i128 sum = static_cast<i128>(hi_units) + static_cast<i128>(std::ldexp(b.lo, -unit));
        if (sum <= 0) throw std::logic_error("grphi: base " + b.label() + ": precise_hi + precise_lo is not positive");
        return from_u128<N>(static_cast<u128>(sum), unit);
    }
    // The exponent of the lowest set bit of a nonzero double.
    static int lowest_bit(double v) {
        int e = 0;
        const auto significand = static_cast<std::int64_t>(std::ldexp(std::frexp(std::fabs(v), &e), 53));
        return e - 53 + __builtin_ctzll(static_cast<unsigned long long>(significand));
    }
};

// √2: b^m = 2^(m/2) exactly for even m, else 2^((m-1)/2) √2.
template <>
struct exact_base<sqrt2> {
    static constexpr bool dyadic = false;
    static constexpr int one_plus_base_power = 0;
    template <int N>
    static interval<N> value(const base_spec& = {}) {
        return irrational_constant<N>(sqrt_two_limbs);
    }
    template <int N>
    static interval<N> power(long m, const base_spec& = {}) {
        if (m % 2 == 0) return point(power_of_two<N>(m / 2));
        return scaled(value<N>(), (m - 1) / 2);
    }
    template <int N>
    static interval<N> one_plus_base(const base_spec& = {}) {
        return point(power_of_two<N>(0)) + value<N>();
    }
};

// φ: 1 + φ = φ², so the linear boundary (φ^(k-1) + φ^k)/2 is φ^(k+1)/2, a single power.
template <>
struct exact_base<phi> {
    static constexpr bool dyadic = false;
    static constexpr int one_plus_base_power = 2;
    template <int N>
    static interval<N> value(const base_spec& = {}) {
        return irrational_constant<N>(golden_ratio_limbs);
    }
    template <int N>
    static interval<N> power(long m, const base_spec& = {}) {
        return grphi::detail::power(value<N>(), static_cast<unsigned long>(m));
    }
    template <int N>
    static interval<N> one_plus_base(const base_spec& = {}) {
        return power<N>(2);
    }
};

// ---------------------------------------------------------------------------------------------
// Exact comparisons. A quantity Q is given by the relation Q^e = b^m (1+b)^(e or 0) / 2^(e d):
// x < Q  <=>  (2^d x)^e < b^m (1+b)^(e or 0).

struct power_relation {
    int root = 1;                // e
    long base_power = 0;         // m
    bool one_plus_base = false;  // times (1 + b)^e
    int doublings = 0;           // d
};

enum class order { below, equal, above, undecided };

template <class Base, int N>
order exact_order(const bigfloat<N>& x, power_relation r, const base_spec& b = named_base_spec<Base>()) {
    if (x.is_zero()) return order::below;  // every quantity here is positive
    if (!r.one_plus_base) {                // x^e vs b^m  <=>  x^(e/g) vs b^(m/g): smaller powers, exact ties stay exact
        const long g = std::gcd(static_cast<long>(r.root), r.base_power);
        r.root = static_cast<int>(r.root / g);
        r.base_power /= g;
    }
    using B = exact_base<Base>;
    interval<N> left = power(point(scaled(x, r.doublings)), static_cast<unsigned long>(r.root));
    interval<N> right = r.one_plus_base ? power(B::template one_plus_base<N>(b), static_cast<unsigned long>(r.root))
                                        : point(power_of_two<N>(0));
    if (r.base_power >= 0)
        right = right * B::template power<N>(r.base_power, b);
    else
        left = left * B::template power<N>(-r.base_power, b);
    if (compare(left.hi, right.lo) < 0) return order::below;
    if (compare(left.lo, right.hi) > 0) return order::above;
    if (left.is_point() && right.is_point()) return order::equal;  // overlapping points are the same point
    return order::undecided;
}

// 384 bits settle every comparison the grids need; dyadic bases get 1792 bits more to reach exact
// ties of x^32 (53 * 32 bits) against a rational b^m.
template <class Base>
order exact_order(const bigfloat<2>& x, const power_relation& r, const base_spec& b = named_base_spec<Base>()) {
    order o = exact_order<Base, 6>(resized<6>(x, toward::zero), r, b);
    if constexpr (exact_base<Base>::dyadic)
        if (o == order::undecided) o = exact_order<Base, 28>(resized<28>(x, toward::zero), r, b);
    return o;
}

// ---------------------------------------------------------------------------------------------
// Rounding one positive quantity to T, starting from a candidate that is usually already right.

template <class T>
bigfloat<2> exact_of(T v) {
    return from_scalar<2>(v);
}

// (c + the next representable magnitude above c) / 2, where max's successor is 2^max_exponent.
template <class T>
bigfloat<2> midpoint_above(T c) {
    const bigfloat<2> next = c == std::numeric_limits<T>::max()
                                 ? power_of_two<2>(std::numeric_limits<T>::max_exponent)
                                 : exact_of(std::nextafter(c, std::numeric_limits<T>::infinity()));
    return scaled(add(exact_of(c), next, toward::zero), -1);  // exact: 55 bits at most
}

template <class T>
bool is_even(T v) {
    using I = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
    I bits;
    std::memcpy(&bits, &v, sizeof bits);
    return (bits & 1) == 0;
}

constexpr int max_candidate_moves = 64;

// The smallest finite T >= Q; order_of(x) is the order of x against Q.
template <class T, class OrderOf>
T certified_ceil(T candidate, OrderOf&& order_of) {
    constexpr T top = std::numeric_limits<T>::max();
    T c = std::isfinite(candidate) ? candidate : top;
    for (int moves = 0; moves < max_candidate_moves; ++moves) {
        if (order_of(exact_of(c)) == order::below) {
            if (c == top) throw std::logic_error("grphi: a grid boundary lies above the largest finite value");
            c = std::nextafter(c, std::numeric_limits<T>::infinity());
            continue;
        }
        if (c > 0) {
            const T below = std::nextafter(c, T(0));
            if (order_of(exact_of(below)) != order::below) {
                c = below;
                continue;
            }
        }
        return c;
    }
    throw std::logic_error("grphi: the double-double candidate is too far from the certified grid value");
}

// Q rounded to nearest, ties to even: 0 below denorm_min/2, inf from max + ulp/2 up.
template <class T, class OrderOf>
T certified_nearest(T candidate, OrderOf&& order_of) {
    constexpr T inf = std::numeric_limits<T>::infinity();
    T c = candidate;
    for (int moves = 0; moves < max_candidate_moves; ++moves) {
        if (c > 0) {  // the midpoint to the next value down
            const T below = std::nextafter(c, T(0));
            const order o = order_of(midpoint_above(below));
            if (o == order::above || (o == order::equal && !is_even(c))) {
                c = below;
                continue;
            }
        }
        if (c < inf) {  // the midpoint to the next value up
            const order o = order_of(midpoint_above(c));
            if (o == order::below || (o == order::equal && !is_even(c))) {
                c = std::nextafter(c, inf);
                continue;
            }
        }
        return c;
    }
    throw std::logic_error("grphi: the double-double candidate is too far from the certified grid value");
}

// ---------------------------------------------------------------------------------------------
// Rounding the quantities of one grid (scalar T, base, rounding, scale step j; δ = j/16).
// Fast path: certified 128-bit intervals from b^k (one multiplication per k) and a few constants;
// only a value inside such an interval needs the exact comparison.

template <class T, class Base>
class grid_rounder {
public:
    static constexpr int fast_limbs = 2;
    using fast_interval = interval<fast_limbs>;

    // base: the exact value (for phi and sqrt2 only its name is used); candidates: b^δ, b^(δ - 1/2),
    // (1 + 1/b)/2 * b^δ and 1/b as double-doubles.
    grid_rounder(const base_spec& base, rounding round, int step, long k_first, long k_last, const xfloat& shift,
                 const xfloat& half_step_down, const xfloat& mid_linear, const xfloat& inverse_base)
        : base_(base), round_(round), step_(step), k_first_(k_first) {
        shift_ = certified_constant(shift, {16, step, false, 0}, "b^(step/16)");
        if (round == rounding::log)
            boundary_factor_ = certified_constant(half_step_down, {32, 2L * step - 16, false, 0}, "b^(step/16 - 1/2)");
        else
            boundary_factor_ = certified_constant(mid_linear, linear_relation(0), "(1 + 1/b)/2 b^(step/16)");
        const fast_interval inverse = certified_constant(inverse_base, {1, -1, false, 0}, "1/b");
        const fast_interval b = exact_base<Base>::template value<fast_limbs>(base_);
        // b^k for every k in [k_first, k_last], outward from b^0 = 1.
        powers_.resize(static_cast<std::size_t>(k_last - k_first + 1));
        const fast_interval one = point(power_of_two<fast_limbs>(0));
        fast_interval p = one;
        for (long k = 0; k <= k_last; ++k, p = p * b)
            if (k >= k_first) powers_[index(k)] = p;
        p = one;
        for (long k = 0; k >= k_first; --k, p = p * inverse)
            if (k <= k_last) powers_[index(k)] = p;
        levels_.reserve(powers_.size());
        for (const fast_interval& power : powers_) levels_.push_back(power * shift_);
    }

    // b^(k+δ) to nearest (0 and inf included).
    T level(long k, T candidate) const {
        return certified_nearest(candidate, orderer(levels_[index(k)], {16, 16 * k + step_, false, 0}, "level", k));
    }
    // The smallest T >= b^(k+δ)/2.
    T flush(long k, T candidate) const {
        const fast_interval q = scaled(levels_[index(k)], -1);
        return certified_ceil(candidate, orderer(q, {16, 16 * k + step_, false, 1}, "flush point", k));
    }
    // The smallest T >= the boundary between exponents k-1 and k.
    T threshold(long k, T candidate) const {
        const fast_interval q = powers_[index(k)] * boundary_factor_;  // b^k times b^(δ - 1/2) or (1 + 1/b)/2 b^δ
        const power_relation r =
            round_ == rounding::log ? power_relation{32, 32 * k - 16 + 2L * step_, false, 0} : linear_relation(k);
        return certified_ceil(candidate, orderer(q, r, "threshold", k));
    }

    long exact_comparisons() const { return exact_comparisons_; }

private:
    base_spec base_;
    rounding round_;
    int step_;
    long k_first_;
    fast_interval shift_, boundary_factor_;
    std::vector<fast_interval> powers_;  // b^k
    std::vector<fast_interval> levels_;  // b^(k+δ)
    mutable long exact_comparisons_ = 0;

    std::size_t index(long k) const { return static_cast<std::size_t>(k - k_first_); }

    // (b^(k-1) + b^k)/2 b^δ:  (2x)^16 against b^(16(k-1) + j) (1 + b)^16, or one power when 1 + b is one.
    power_relation linear_relation(long k) const {
        constexpr int p = exact_base<Base>::one_plus_base_power;
        if constexpr (p != 0)
            return {16, 16 * (k - 1 + p) + step_, false, 1};
        else
            return {16, 16 * (k - 1) + step_, true, 1};
    }

    [[noreturn]] void undecided(const std::string& what) const {
        throw std::logic_error("grphi: cannot certify " + what + " for base " + base_.label() +
                               (std::is_same_v<T, float> ? ", float, " : ", double, ") +
                               (round_ == rounding::log ? "log" : "linear") + " rounding, step " +
                               std::to_string(step_) + ": the exact comparison stayed undecided");
    }

    // order_of(x) for one quantity: its fast interval first, the exact comparison inside it.
    auto orderer(const fast_interval& q, power_relation r, const char* what, long k) const {
        return [this, q, r, what, k](const bigfloat<2>& x) {
            const bigfloat<fast_limbs> xf = resized<fast_limbs>(x, toward::zero);  // exact: x has <= 128 bits
            if (compare(xf, q.lo) < 0) return order::below;
            if (compare(xf, q.hi) > 0) return order::above;
            ++exact_comparisons_;
            const order o = exact_order<Base>(x, r, base_);
            if (o == order::undecided) undecided(std::string("the ") + what + " at k=" + std::to_string(k));
            return o;
        };
    }

    // A certified interval around a double-double estimate y of the quantity r describes: y itself
    // when it is exact, else y widened by 2^-100 relative (then more), checked exactly at both ends.
    fast_interval certified_constant(const xfloat& y, power_relation r, const char* what) const {
        const i128 signed_mantissa =
            static_cast<i128>(std::ldexp(y.hi, 116)) + static_cast<i128>(std::ldexp(y.lo, 116));
        const u128 m = static_cast<u128>(signed_mantissa);  // y = m 2^(exp - 116), m in [2^115, 2^118)
        const long e = y.exp - 116;
        if (exact_order<Base>(from_u128<2>(m, e), r, base_) == order::equal) return point(from_u128<fast_limbs>(m, e));
        for (int width : {100, 88, 72, 56}) {
            const u128 lo = m - (m >> width), hi = m + (m >> width) + 1;
            const order below = exact_order<Base>(from_u128<2>(lo, e), r, base_);
            const order above = exact_order<Base>(from_u128<2>(hi, e), r, base_);
            if (below == order::below && above == order::above)
                return {from_u128<fast_limbs>(lo, e), from_u128<fast_limbs>(hi, e)};
        }
        undecided(std::string("the constant ") + what);
    }
};

}  // namespace grphi::detail
