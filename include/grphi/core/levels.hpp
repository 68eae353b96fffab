// Exact exponent grids: correctly rounded levels b^(k+δ) and the exact decision thresholds
// between them, for every exponent a float or double can reach. Built once per
// (scalar, base, rounding, scale step) in extended precision, then only compared against.
// Named bases (phi, two, sqrt2, user tags) are types; grphi::custom takes b from options::base_value.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "base.hpp"
#include "../detail/exact_rounding.hpp"
#include "../detail/xfloat.hpp"
#include "options.hpp"

namespace grphi {

namespace detail {

// The base as an extended-precision number (hi + lo: 106 bits when the tag provides them).
inline xfloat base_xfloat(const base_spec& b) {
    return x_from_dd(b.hi, b.lo);
}

// b^(1/16): four square roots.
inline xfloat base_root16(const base_spec& b) {
    xfloat r = base_xfloat(b);
    for (int i = 0; i < 4; ++i) r = x_sqrt(r);
    return r;
}

// The base grphi uses for Base with these options: the tag's own value, or options::base_value for
// grphi::custom. Throws std::invalid_argument when base_value is missing, invalid, or set for a named base.
template <class Base>
base_spec base_spec_for(const options& o) {
    check_base<Base>();
    if constexpr (is_custom_base_v<Base>) {
        if (!o.base_value)
            throw std::invalid_argument("grphi::options: base_value is required with grphi::custom (set it to b >= 1.03)");
        options::check_base_value(*o.base_value);
        return custom_base_spec(*o.base_value);
    } else {
        if (o.base_value)
            throw std::invalid_argument("grphi::options: base_value=" + number_text(*o.base_value) + " is set, but the base is " +
                                        Base::name + "; base_value is only for grphi::custom");
        return named_base_spec<Base>();
    }
}

// A custom grid's identity: bits of the base value, rounding (0 log, 1 linear), scale step.
using custom_key = std::tuple<std::uint64_t, int, int>;

inline custom_key custom_key_of(const base_spec& b, rounding round, int step) {
    std::uint64_t bits = 0;
    std::memcpy(&bits, &b.hi, sizeof bits);
    return {bits, round == rounding::log ? 0 : 1, step};
}

// Program-lifetime cache for grphi::custom: one slot per key, built once (thread-safe, slots never move).
template <class V>
class keyed_cache {
public:
    using key = custom_key;

    template <class Build>
    const V& get(const key& k, Build&& build) {
        slot* s = nullptr;
        {
            const std::lock_guard<std::mutex> lock(mutex_);
            s = &slots_[k];
        }
        std::call_once(s->once, [&] { s->value = build(); });
        return *s->value;
    }

private:
    struct slot {
        std::once_flag once;
        std::unique_ptr<V> value;
    };
    std::mutex mutex_;
    std::map<key, slot> slots_;
};

// Same-width integer view of a scalar (order of non-negative values is the order of their bits).
template <class T>
using bits_t = std::conditional_t<std::is_same_v<T, float>, std::int32_t, std::int64_t>;

template <class T>
bits_t<T> to_bits(T v) {
    bits_t<T> b;
    std::memcpy(&b, &v, sizeof b);
    return b;
}
template <class T>
T from_bits(bits_t<T> b) {
    T v;
    std::memcpy(&v, &b, sizeof v);
    return v;
}

}  // namespace detail

// One exponent grid: levels b^(k + step/16) for k in [k_lo, k_hi], the natural range where the
// correctly rounded level is nonzero and finite, and the thresholds that decide between them.
template <class T, class Base>
struct grid {
    rounding round = rounding::log;
    int step = 0;                 // scale step j: levels are b^(k + j/16)
    int k_lo = 0, k_hi = 0;
    std::vector<T> level;         // [k - k_lo]: b^(k+δ) rounded to nearest
    std::vector<T> threshold;     // [k - k_lo]: smallest value assigned exponent >= k (unused at k_lo)
    std::vector<T> flush;         // [k - k_lo]: smallest value kept when k is the window bottom (b^(k+δ)/2 up)

    T level_of(int k) const { return level[static_cast<std::size_t>(k - k_lo)]; }
    T threshold_of(int k) const { return threshold[static_cast<std::size_t>(k - k_lo)]; }
    T flush_of(int k) const { return flush[static_cast<std::size_t>(k - k_lo)]; }

    // Exponent of a finite magnitude a >= 0, clamped into [k_lo, k_hi] (binary search).
    int exponent(T a) const {
        const auto first = threshold.begin() + 1;
        return k_lo + static_cast<int>(std::upper_bound(first, threshold.end(), a) - first);
    }
    // Same, starting from a guess that is at most a few steps off.
    int exponent_near(T a, int guess) const {
        int k = std::clamp(guess, k_lo, k_hi);
        while (k < k_hi && a >= threshold_of(k + 1)) ++k;
        while (k > k_lo && a < threshold_of(k)) --k;
        return k;
    }
};

namespace detail {

template <class T, class Base>
std::unique_ptr<grid<T, Base>> build_grid(const base_spec& base, rounding round, int step) {
    auto g = std::make_unique<grid<T, Base>>();
    g->round = round;
    g->step = step;
    // Double-double candidates; grid_rounder certifies each one exactly and moves it by an ulp if need be.
    const xfloat b = base_xfloat(base);
    const xfloat shift = x_pow(base_root16(base), step);                 // b^δ
    const xfloat half_step_down = x_div(shift, x_sqrt(b));                  // b^(δ - 1/2)
    const xfloat one{1.0, 0.0, 0};
    const xfloat inverse_base = x_div(one, b);
    const xfloat mid_linear = x_scale2(x_mul(x_add(one, inverse_base), shift), -1);  // (1 + 1/b)/2 * b^δ

    // Bracket the natural range from a floating estimate; the certified levels at its ends must be 0 and inf.
    const long double lb = std::log(base.approx());
    auto exponent_estimate = [lb](T v) {
        return static_cast<long>(std::floor(std::log(static_cast<long double>(v)) / lb));
    };
    const long top = exponent_estimate(std::numeric_limits<T>::max());
    const long bottom = exponent_estimate(std::numeric_limits<T>::denorm_min());
    for (long margin = 3;; margin *= 2) {
        const long k_first = bottom - margin, k_last = top + margin;
        if (k_first < -40000 || k_last > 40000)
            throw std::logic_error("grphi: exponent range exceeds int16 for this base");
        const grid_rounder<T, Base> rounder(base, round, step, k_first, k_last, shift, half_step_down, mid_linear,
                                            inverse_base);
        std::vector<T> level(static_cast<std::size_t>(k_last - k_first + 1));
        std::vector<xfloat> power(level.size());  // b^k, multiplied up: candidates need no more precision
        const xfloat start = x_pow(b, k_first);
        for (long k = k_first; k <= k_last; ++k) {
            const auto i = static_cast<std::size_t>(k - k_first);
            power[i] = k == k_first ? start : x_mul(power[i - 1], b);
            level[i] = rounder.level(k, x_round<T>(x_mul(power[i], shift), false));
        }
        if (level.front() != T(0) || !std::isinf(level.back())) continue;
        const auto nonzero = std::upper_bound(level.begin(), level.end(), T(0));
        const auto infinite = std::lower_bound(level.begin(), level.end(), std::numeric_limits<T>::infinity());
        const long k_lo = k_first + static_cast<long>(nonzero - level.begin());
        const long k_hi = k_first + static_cast<long>(infinite - level.begin()) - 1;
        if (k_lo < -32767 || k_hi > 32767) throw std::logic_error("grphi: exponent range exceeds int16 for this base");
        g->k_lo = static_cast<int>(k_lo);
        g->k_hi = static_cast<int>(k_hi);
        const auto n = static_cast<std::size_t>(k_hi - k_lo + 1);
        g->level.assign(nonzero, infinite);
        g->threshold.resize(n);
        g->flush.resize(n);
        for (long k = k_lo; k <= k_hi; ++k) {
            const auto i = static_cast<std::size_t>(k - k_lo);
            const xfloat& bk = power[static_cast<std::size_t>(k - k_first)];
            g->flush[i] = rounder.flush(k, x_round<T>(x_scale2(x_mul(bk, shift), -1), true));
            const xfloat boundary = round == rounding::log ? x_mul(bk, half_step_down) : x_mul(bk, mid_linear);
            g->threshold[i] = (k == k_lo) ? T(0) : rounder.threshold(k, x_round<T>(boundary, true));
        }
        return g;
    }
}

template <class T, class Base>
struct grid_cache {
    static constexpr int steps = 2 * scale_step_max + 1;
    std::array<std::array<std::once_flag, steps>, 2> once;
    std::array<std::array<std::unique_ptr<grid<T, Base>>, steps>, 2> grids;

    static grid_cache& instance() {
        static grid_cache cache;
        return cache;
    }
};

}  // namespace detail

// The grid for (T, Base, rounding, step) of a named base; built on first use, thread-safe, lives for the program.
template <class T, class Base>
const grid<T, Base>& grid_for(rounding round = rounding::log, int step = 0) {
    check_scalar<T>();
    check_named_base<Base>();
    if (step < -scale_step_max || step > scale_step_max)
        throw std::invalid_argument("grphi::grid_for: scale step " + std::to_string(step) + " is outside [-8, 8]");
    auto& cache = detail::grid_cache<T, Base>::instance();
    const auto r = static_cast<std::size_t>(round == rounding::log ? 0 : 1);
    const auto s = static_cast<std::size_t>(step + scale_step_max);
    std::call_once(cache.once[r][s],
                   [&] { cache.grids[r][s] = detail::build_grid<T, Base>(detail::named_base_spec<Base>(), round, step); });
    return *cache.grids[r][s];
}

// The grid for (T, Base, o.round, step) of any base, grphi::custom included (b = *o.base_value);
// custom grids are cached per (value, rounding, step) for the program. Throws std::invalid_argument
// when o.base_value does not fit Base (see base_value_of).
template <class T, class Base>
const grid<T, Base>& grid_for(const options& o, int step = 0) {
    check_scalar<T>();
    const detail::base_spec b = detail::base_spec_for<Base>(o);
    if constexpr (!is_custom_base_v<Base>) {
        return grid_for<T, Base>(o.round, step);
    } else {
        if (step < -scale_step_max || step > scale_step_max)
            throw std::invalid_argument("grphi::grid_for: scale step " + std::to_string(step) + " is outside [-8, 8]");
        static detail::keyed_cache<grid<T, Base>> cache;
        return cache.get(detail::custom_key_of(b, o.round, step),
                         [&] { return detail::build_grid<T, Base>(b, o.round, step); });
    }
}

// The value of b quantize uses for Base with options o: Base::value (rounded to double), or
// *o.base_value for grphi::custom. Throws std::invalid_argument naming the problem when base_value is
// missing for custom, set for a named base, not finite, or below 1.03.
template <class Base>
double base_value_of(const options& o) {
    const detail::base_spec b = detail::base_spec_for<Base>(o);
    if constexpr (is_custom_base_v<Base>)
        return b.hi;
    else
        return static_cast<double>(static_cast<long double>(Base::value));
}

// The exact exponent of one magnitude (a >= 0, finite), clamped to the natural range.
template <class Base, class T>
int exponent_of(T a, rounding round = rounding::log) {
    return grid_for<T, Base>(round).exponent(a);
}
template <class Base, class T>
int exponent_of(T a, const options& o) {
    return grid_for<T, Base>(o).exponent(a);
}

// The correctly rounded level b^k (named bases; the options overload serves grphi::custom too).
template <class T, class Base>
T level(int k, const options& o) {
    const auto& g = grid_for<T, Base>(o);
    if (k < g.k_lo || k > g.k_hi)
        throw std::out_of_range("grphi::level: exponent " + std::to_string(k) + " is outside [" + std::to_string(g.k_lo) +
                                ", " + std::to_string(g.k_hi) + "]");
    return g.level_of(k);
}
template <class T, class Base>
T level(int k, rounding round = rounding::log) {
    check_named_base<Base>();
    options o;
    o.round = round;
    return level<T, Base>(k, o);
}

namespace detail {

// The fast route from bits to exponent for normal magnitudes: cells of 2^-cell_bits binade,
// each holding at most one threshold. Denormals (rare in weights) go through the grid's search.
template <class T, class Base>
struct cell_table {
    using I = bits_t<T>;
    static constexpr int mantissa_bits = std::numeric_limits<T>::digits - 1;  // 23 or 52
    static constexpr I min_normal_bits = I(1) << mantissa_bits;
    static constexpr I inf_bits = I((std::uint64_t(1) << (sizeof(T) * 8 - 1)) - std::uint64_t(min_normal_bits));
    const grid<T, Base>* source = nullptr;
    int cell_bits = 0;
    int shift = 0;                    // mantissa_bits - cell_bits
    std::vector<I> base_k;            // exponent at the cell's start
    std::vector<I> threshold_bits;    // bits of the one threshold inside the cell, or max
    // The same two tables as bit patterns in T storage: xsimd 8.1 gathers only float/double natively.
    std::vector<T> base_k_as_t, threshold_as_t;

    // Exponent of a finite magnitude given by its bits; equals source->exponent(a).
    int exponent(I mag_bits) const {
        if (mag_bits < min_normal_bits) return source->exponent(from_bits<T>(mag_bits));
        const auto i = static_cast<std::size_t>(mag_bits >> shift);
        return static_cast<int>(base_k[i] + (mag_bits >= threshold_bits[i] ? 1 : 0));
    }
};

template <class T, class Base>
std::unique_ptr<cell_table<T, Base>> build_cell_table(const grid<T, Base>& g) {
    using table = cell_table<T, Base>;
    using I = typename table::I;
    constexpr int M = table::mantissa_bits;
    constexpr int exponent_fields = 1 << (sizeof(T) * 8 - 1 - M);  // 256 or 2048, the inf/NaN field included
    for (int m = 0; m <= 8; ++m) {
        auto t = std::make_unique<table>();
        t->source = &g;
        t->cell_bits = m;
        t->shift = M - m;
        const std::size_t cells = static_cast<std::size_t>(exponent_fields) << m;
        t->base_k.assign(cells, I(g.k_lo));
        t->threshold_bits.assign(cells, std::numeric_limits<I>::max());
        bool fits = true;
        for (std::size_t i = std::size_t(1) << m; i < cells && fits; ++i) {
            const I start = I(i) << t->shift;
            const T v0 = from_bits<T>(start);
            if (!std::isfinite(v0)) {
                t->base_k[i] = I(g.k_hi);
                continue;
            }
            const I end = I(start + (I(1) << t->shift));  // exclusive; at most the bits of +inf
            const int k0 = g.exponent(v0);
            t->base_k[i] = I(k0);
            int inside = 0;
            for (int k = k0 + 1; k <= g.k_hi; ++k) {
                const I tb = to_bits(g.threshold_of(k));
                if (tb >= end) break;
                if (++inside == 1) t->threshold_bits[i] = tb;
            }
            fits = inside <= 1;
        }
        if (fits) {
            t->base_k_as_t.resize(cells);
            t->threshold_as_t.resize(cells);
            for (std::size_t i = 0; i < cells; ++i) {
                t->base_k_as_t[i] = from_bits<T>(t->base_k[i]);
                t->threshold_as_t[i] = from_bits<T>(t->threshold_bits[i]);
            }
            return t;
        }
    }
    throw std::logic_error(std::string("grphi: base ") + Base::name + " is too close to 1 for the exponent cell table");
}

template <class T, class Base>
const cell_table<T, Base>& cell_table_for(rounding round) {
    static std::once_flag once[2];
    static std::unique_ptr<cell_table<T, Base>> tables[2];
    const int r = round == rounding::log ? 0 : 1;
    std::call_once(once[r], [&] { tables[r] = build_cell_table<T, Base>(grid_for<T, Base>(round)); });
    return *tables[r];
}

// The cell table of the unscaled grid for any base (grphi::custom: per value and rounding, for the program).
template <class T, class Base>
const cell_table<T, Base>& cell_table_for(const options& o) {
    const base_spec b = base_spec_for<Base>(o);
    if constexpr (!is_custom_base_v<Base>) {
        return cell_table_for<T, Base>(o.round);
    } else {
        static keyed_cache<cell_table<T, Base>> cache;
        return cache.get(custom_key_of(b, o.round, 0), [&] { return build_cell_table<T, Base>(grid_for<T, Base>(o)); });
    }
}

}  // namespace detail

}  // namespace grphi
