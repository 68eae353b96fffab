// Exact exponent grids (issue 2): every level, threshold and flush point of grphi::grid_for, and the
// exponent of values one ulp either side of every threshold, checked against an independent exact
// reference built here from certified binary interval arithmetic (no floating-point log, pow or sqrt).
#include <grphi/core/levels.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Reference arithmetic: non-negative binary numbers with 320-bit mantissas, rounded down or up,
// so that every computed quantity is a certified interval [lo, hi].

__extension__ typedef unsigned __int128 wide_t;  // limb products; __extension__ keeps -Wpedantic quiet

constexpr int limbs = 5;
constexpr long mantissa_bits = 64L * limbs;

// mantissa * 2^exp; a nonzero mantissa has its top bit set, zero has every limb 0 and exp 0.
struct big {
    std::array<std::uint64_t, limbs> mantissa{};  // little-endian limbs
    long exp = 0;
    bool is_zero() const { return mantissa[limbs - 1] == 0; }
};

bool operator==(const big& a, const big& b) { return a.mantissa == b.mantissa && a.exp == b.exp; }

int compare(const big& a, const big& b) {
    if (a.is_zero() || b.is_zero()) return a.is_zero() ? (b.is_zero() ? 0 : -1) : 1;
    if (a.exp != b.exp) return a.exp < b.exp ? -1 : 1;
    for (int i = limbs - 1; i >= 0; --i)
        if (a.mantissa[i] != b.mantissa[i]) return a.mantissa[i] < b.mantissa[i] ? -1 : 1;
    return 0;
}

// Bits [pos, pos + 64) of the integer held in `words` (little-endian); bits outside it are 0.
std::uint64_t bits_at(const std::uint64_t* words, long n, long pos) {
    const long word = pos >= 0 ? pos / 64 : -((-pos + 63) / 64);  // floor(pos / 64)
    const int shift = static_cast<int>(pos - word * 64);
    auto at = [&](long i) { return i >= 0 && i < n ? words[i] : std::uint64_t{0}; };
    std::uint64_t r = at(word) >> shift;
    if (shift != 0) r |= at(word + 1) << (64 - shift);
    return r;
}

bool any_bit_below(const std::uint64_t* words, long n, long count) {
    for (long i = 0; i < count / 64 && i < n; ++i)
        if (words[i] != 0) return true;
    const long partial = count / 64;
    const int rest = static_cast<int>(count % 64);
    return rest != 0 && partial < n && (words[partial] & ((std::uint64_t{1} << rest) - 1)) != 0;
}

// One unit in the last place more (carrying into a new binade if need be).
big next_up(big r) {
    for (int i = 0; i < limbs; ++i)
        if (++r.mantissa[i] != 0) return r;
    r.mantissa[limbs - 1] = std::uint64_t{1} << 63;  // 2^mantissa_bits overflowed: renormalise
    r.exp += 1;
    return r;
}

// The integer words * 2^exp, rounded toward zero or upward to a big.
big normalise(const std::uint64_t* words, long n, long exp, bool up) {
    long top = n - 1;
    while (top >= 0 && words[top] == 0) --top;
    big r;
    if (top < 0) return r;
    const long length = 64 * top + (64 - __builtin_clzll(words[top]));
    const long drop = length - mantissa_bits;  // low bits that do not fit (negative: shift up)
    for (int i = 0; i < limbs; ++i) r.mantissa[static_cast<std::size_t>(i)] = bits_at(words, n, drop + 64L * i);
    r.exp = exp + drop;
    if (up && drop > 0 && any_bit_below(words, n, drop)) r = next_up(r);
    return r;
}

big power_of_two(long e) {
    big r;
    r.mantissa[limbs - 1] = std::uint64_t{1} << 63;
    r.exp = e - (mantissa_bits - 1);
    return r;
}

big scaled(big x, long e) {
    if (!x.is_zero()) x.exp += e;
    return x;
}

big multiply(const big& a, const big& b, bool up) {
    if (a.is_zero() || b.is_zero()) return big{};
    std::array<std::uint64_t, 2 * limbs> product{};
    for (int i = 0; i < limbs; ++i) {
        std::uint64_t carry = 0;
        for (int j = 0; j < limbs; ++j) {
            const wide_t t = static_cast<wide_t>(a.mantissa[i]) * b.mantissa[j] + product[i + j] + carry;
            product[i + j] = static_cast<std::uint64_t>(t);
            carry = static_cast<std::uint64_t>(t >> 64);
        }
        product[i + limbs] = carry;
    }
    return normalise(product.data(), 2 * limbs, a.exp + b.exp, up);
}

big add(const big& a, const big& b, bool up) {
    if (a.is_zero()) return b;
    if (b.is_zero()) return a;
    const big& high = a.exp >= b.exp ? a : b;  // the one with the larger binary exponent
    const big& low = a.exp >= b.exp ? b : a;
    const long d = high.exp - low.exp;
    if (d > 2 * mantissa_bits) return up ? next_up(high) : high;  // low is below high's last bit
    std::array<std::uint64_t, 3 * limbs + 3> sum{};
    const long word_shift = d / 64;
    const int bit_shift = static_cast<int>(d % 64);
    for (long i = 0; i < limbs; ++i) {  // high << d
        const std::uint64_t w = high.mantissa[static_cast<std::size_t>(i)];
        sum[static_cast<std::size_t>(i + word_shift)] |= w << bit_shift;
        if (bit_shift != 0) sum[static_cast<std::size_t>(i + word_shift + 1)] |= w >> (64 - bit_shift);
    }
    std::uint64_t carry = 0;
    for (std::size_t i = 0; i < sum.size(); ++i) {
        const wide_t t = static_cast<wide_t>(sum[i]) + (i < limbs ? low.mantissa[i] : 0) + carry;
        sum[i] = static_cast<std::uint64_t>(t);
        carry = static_cast<std::uint64_t>(t >> 64);
    }
    return normalise(sum.data(), static_cast<long>(sum.size()), low.exp, up);
}

// A float or double, exactly (its significand has at most 53 bits).
template <class T>
big exact(T v) {
    if (!(v >= 0) || !std::isfinite(v)) throw std::logic_error("reference: exact() needs a finite value >= 0");
    if (v == 0) return big{};
    int e = 0;
    const double fraction = std::frexp(static_cast<double>(v), &e);  // [0.5, 1), exact
    const auto word = static_cast<std::uint64_t>(std::ldexp(fraction, 64));
    return normalise(&word, 1, e - 64L, false);
}

big integer(std::uint64_t n) { return normalise(&n, 1, 0, false); }

// (a + b) / 2 for exact a and b; throws if it would not be exact (it always is for adjacent scalars).
big midpoint(const big& a, const big& b) {
    const big lo = add(a, b, false);
    if (!(lo == add(a, b, true))) throw std::logic_error("reference: midpoint is not exact");
    return scaled(lo, -1);
}

struct interval {
    big lo, hi;
    bool is_point() const { return lo == hi; }
};

interval point(const big& x) { return {x, x}; }

interval operator*(const interval& a, const interval& b) {
    return {multiply(a.lo, b.lo, false), multiply(a.hi, b.hi, true)};
}

interval operator+(const interval& a, const interval& b) { return {add(a.lo, b.lo, false), add(a.hi, b.hi, true)}; }

interval power(interval x, long e) {
    interval r = point(power_of_two(0));
    for (; e > 0; e >>= 1) {
        if (e & 1) r = r * x;
        if (e > 1) x = x * x;
    }
    return r;
}

// An irrational constant in (c, c + 2^-319) from its 320-bit truncation c = mantissa * 2^-319
// (limbs most significant first, as Python prints them).
interval irrational(const std::array<std::uint64_t, limbs>& msb_first) {
    big c;
    for (int i = 0; i < limbs; ++i) c.mantissa[static_cast<std::size_t>(i)] = msb_first[static_cast<std::size_t>(limbs - 1 - i)];
    c.exp = -(mantissa_bits - 1);
    return {c, next_up(c)};
}

// Regenerate with Python (N = 319 fraction bits; split the hex into 64-bit limbs):
// python3 -c "from math import isqrt; N=319; print(hex((2**N + isqrt(5 << 2*N)) >> 1)); print(hex(isqrt(2 << 2*N)))"
interval phi_interval() {
    return irrational({0xcf1bbcdcbfa53e0aULL, 0xf9ce60302e76e41aULL, 0x084113b5f9d13928ULL, 0xfc363508e860c74aULL,
                       0x93b3f858a9e93dbfULL});
}
interval sqrt2_interval() {
    return irrational({0xb504f333f9de6484ULL, 0x597d89b3754abe9fULL, 0x1d6f60ba893ba84cULL, 0xed17ac8583339915ULL,
                       0x4afc83043ab8a2c3ULL});
}

// ---------------------------------------------------------------------------------------------
// The bases as the reference sees them: b^m for m >= 0 as an interval that is a single point exactly
// when b^m is rational (so exact ties are decided exactly), and 1 + b = b^P * F for the linear boundary.

// Every reference base also gives options() (what grphi is asked for) and approx() (for guesses only).

template <class Base>
struct reference_base;

template <>
struct reference_base<grphi::two> {
    static interval power_of_base(long m) { return point(power_of_two(m)); }
    static constexpr long one_plus_base_power = 0;  // 1 + 2 = 3
    static interval one_plus_base_factor() { return point(exact(3.0)); }
    static long double approx() { return 2.0L; }
    static grphi::options options() { return {}; }
};

// A run-time base: the double `value` taken as exact, b^m by repeated squaring (a point while it fits).
template <>
struct reference_base<grphi::custom> {
    double value = 0;
    interval power_of_base(long m) const { return power(point(exact(value)), m); }
    static constexpr long one_plus_base_power = 0;
    interval one_plus_base_factor() const { return point(power_of_two(0)) + point(exact(value)); }
    long double approx() const { return value; }
    grphi::options options() const {
        grphi::options o;
        o.base_value = value;
        return o;
    }
};

template <>
struct reference_base<grphi::sqrt2> {
    // √2^m = 2^(m/2) exactly for even m: the boundaries that are powers of two stay exact.
    static interval power_of_base(long m) {
        const interval odd = (m % 2 != 0) ? sqrt2_interval() : point(power_of_two(0));
        return {scaled(odd.lo, m / 2), scaled(odd.hi, m / 2)};
    }
    static constexpr long one_plus_base_power = 0;
    static interval one_plus_base_factor() { return point(power_of_two(0)) + sqrt2_interval(); }
    static long double approx() { return grphi::sqrt2::value; }
    static grphi::options options() { return {}; }
};

template <>
struct reference_base<grphi::phi> {
    // φ^m = φ^(m mod 256) * (φ^256)^(m / 256) from two tables: one multiplication per power.
    static interval power_of_base(long m) {
        static std::vector<interval> low, high;
        if (low.empty()) {
            low.push_back(point(power_of_two(0)));
            for (int i = 1; i < 256; ++i) low.push_back(low.back() * phi_interval());
            high.push_back(point(power_of_two(0)));
            high.push_back(low.back() * phi_interval());
        }
        while (static_cast<long>(high.size()) <= m / 256) high.push_back(high.back() * high[1]);
        return low[static_cast<std::size_t>(m % 256)] * high[static_cast<std::size_t>(m / 256)];
    }
    static constexpr long one_plus_base_power = 2;  // 1 + φ = φ², so linear boundaries are powers of φ
    static interval one_plus_base_factor() { return point(power_of_two(0)); }
    static long double approx() { return grphi::phi::value; }
    static grphi::options options() { return {}; }
};

enum class order { below, equal, above };  // the exact value relative to the reference quantity

// Order of x^e against b^m * g^e (g > 0), exactly: first reduced to x^(e/d) against b^(m/d) g^(e/d),
// d = gcd(e, m), so that exact ties of dyadic bases (x = 1.5^13, 2x = 3.7 * 4.7) stay within 320 bits.
// Negative m moves b^-m to the left side. Throws when the intervals overlap without being the same
// exact point: the reference cannot decide, the test fails.
template <class Base>
order compare_power(const big& x, long e, long m, const interval& g, const reference_base<Base>& base = {}) {
    if (x.is_zero()) return order::below;
    const long d = std::gcd(e, m);
    e /= d;
    m /= d;
    interval left = power(point(x), e);
    interval right = power(g, e);
    if (m >= 0)
        right = right * base.power_of_base(m);
    else
        left = left * base.power_of_base(-m);
    if (compare(left.hi, right.lo) < 0) return order::below;
    if (compare(left.lo, right.hi) > 0) return order::above;
    if (left.is_point() && right.is_point() && left.lo == right.lo) return order::equal;
    throw std::runtime_error("reference: cannot decide x^" + std::to_string(e) + " against b^" + std::to_string(m) +
                             " with 320-bit intervals");
}

// The exact rules of issue 2 for one grid (base b, rounding, scale step j, δ = j/16).
template <class T, class Base>
struct reference {
    grphi::rounding round;
    int step;
    reference_base<Base> base{};
    interval one = point(power_of_two(0));
    interval linear_factor = base.one_plus_base_factor();

    // x against the level b^(k+δ):  x^16 against b^(16k + j).
    order vs_level(const big& x, long k) const { return compare_power<Base>(x, 16, 16 * k + step, one, base); }
    // x against half the level, b^(k+δ)/2:  (2x)^16 against b^(16k + j).
    order vs_half_level(const big& x, long k) const {
        return compare_power<Base>(scaled(x, 1), 16, 16 * k + step, one, base);
    }
    // x against the boundary between exponents k-1 and k.
    //   log:    b^(k - 1/2 + δ)             x^32 against b^(32k - 16 + 2j)
    //   linear: (b^(k-1) + b^k)/2 * b^δ    (2x)^16 against b^(16(k-1) + j) * (1 + b)^16
    order vs_boundary(const big& x, long k) const {
        if (round == grphi::rounding::log) return compare_power<Base>(x, 32, 32 * k - 16 + 2L * step, one, base);
        return compare_power<Base>(scaled(x, 1), 16, 16 * (k - 1 + reference_base<Base>::one_plus_base_power) + step,
                                   linear_factor, base);
    }

    // The exponent of v >= 0 clamped to [k_lo, k_hi]: the largest k with v >= boundary_k.
    int exponent(T v, int k_lo, int k_hi) const {
        if (v == 0) return k_lo;
        const big x = exact(v);
        int k = std::clamp(guess(v), k_lo, k_hi);
        while (k < k_hi && vs_boundary(x, k + 1) != order::below) ++k;
        while (k > k_lo && vs_boundary(x, k) == order::below) --k;
        return k;
    }

    // A starting point only (the exact comparisons above settle the answer).
    int guess(T v) const {
        const long double log_b = std::log(base.approx());
        long double e = std::log(static_cast<long double>(v)) / log_b - step / 16.0L + 0.5L;
        if (round == grphi::rounding::linear) e += 0.5L - std::log((1 + base.approx()) / 2) / log_b;
        return static_cast<int>(std::clamp(std::floor(e), -100000.0L, 100000.0L));
    }
};

// ---------------------------------------------------------------------------------------------
// Helpers for the tests.

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};

template <class T>
using bits_of = std::conditional_t<std::is_same_v<T, float>, std::int32_t, std::int64_t>;

template <class T>
bits_of<T> bits(T v) {
    bits_of<T> b;
    std::memcpy(&b, &v, sizeof b);
    return b;
}

template <class T>
T from_bits(bits_of<T> b) {
    T v;
    std::memcpy(&v, &b, sizeof v);
    return v;
}

template <class T>
std::string describe(T v) {
    std::ostringstream s;
    s << std::hexfloat << v << std::defaultfloat << std::setprecision(std::numeric_limits<T>::max_digits10) << " ("
      << v << ")";
    return s.str();
}

const char* name_of(grphi::rounding r) { return r == grphi::rounding::log ? "log" : "linear"; }

// Counts failures and reports the first few in full, so one broken grid does not flood the output.
// A quiet log only counts (to show that the checks catch deliberately broken grids).
struct failure_log {
    std::string grid;
    bool quiet = false;
    long count = 0;
    void fail(const std::string& what) {
        const std::string message = grid + ": " + what;
        if (++count <= 8 && !quiet) FAIL_CHECK(message);
    }
    ~failure_log() {
        const std::string message = grid + ": " + std::to_string(count) + " failures in total";
        if (count > 8 && !quiet) FAIL_CHECK(message);
    }
};

template <class T, class Base>
std::string grid_name(grphi::rounding round, int step, const reference_base<Base>& base = {}) {
    std::string name = Base::name;
    if constexpr (grphi::is_custom_base_v<Base>) name += " " + grphi::detail::number_text(base.value);
    return name + (std::is_same_v<T, float> ? " float " : " double ") + name_of(round) + " step " + std::to_string(step);
}

constexpr int steps_under_test[] = {0, -8, -3, 5, 8};

// Every level, threshold and flush point of one grid, and the exponents around every threshold and
// of random magnitudes. `cells` (the bits route, built for step 0 only) may be null. The per-k checks
// can be narrowed to [k_first, k_last] (the mutation test only looks where it broke the grid).
template <class T, class Base>
void check_grid(const grphi::grid<T, Base>& g, const grphi::detail::cell_table<T, Base>* cells, failure_log& log,
                std::uint64_t seed, int k_first = INT_MIN, int k_last = INT_MAX, int random_count = 1500,
                const reference_base<Base>& base = {}) {
    const grphi::rounding round = g.round;
    const int step = g.step;
    const reference<T, Base> ref{round, step, base};
    grphi::options opts = base.options();
    opts.round = round;
    const auto n = static_cast<std::size_t>(g.k_hi - g.k_lo + 1);
    if (g.k_lo >= 0 || g.k_hi <= 0 || g.level.size() != n || g.threshold.size() != n || g.flush.size() != n) {
        log.fail("k_lo, k_hi and the table sizes do not agree");
        return;
    }

    constexpr T zero = 0;
    constexpr T max = std::numeric_limits<T>::max();
    const big half_denorm_min = scaled(exact(std::numeric_limits<T>::denorm_min()), -1);
    // Round to nearest gives inf from max + ulp/2 up (a tie goes to the even 2^max_exponent).
    const big overflow = midpoint(exact(max), power_of_two(std::numeric_limits<T>::max_exponent));

    // Natural range: the level just outside rounds to 0 (<= denorm_min/2, a tie goes to even 0) or to inf.
    if (ref.vs_level(half_denorm_min, g.k_lo - 1) == order::below) log.fail("level k_lo - 1 does not round to 0");
    if (ref.vs_level(overflow, g.k_hi + 1) == order::above) log.fail("level k_hi + 1 does not round to inf");

    auto check_exponent = [&](T v, const std::string& what) {
        const int expected = ref.exponent(v, g.k_lo, g.k_hi);
        const std::string where = what + ", v=" + describe(v);
        const int got = g.exponent(v);
        if (got != expected)
            log.fail("exponent(" + where + ") = " + std::to_string(got) + ", reference " + std::to_string(expected));
        for (int off : {-3, 3})
            if (g.exponent_near(v, expected + off) != expected)
                log.fail("exponent_near(" + where + ", guess " + std::to_string(expected + off) + ") is wrong");
        if (cells) {
            const int from_cells = cells->exponent(bits(v));
            if (from_cells != expected)
                log.fail("cell_table exponent(" + where + ") = " + std::to_string(from_cells) + ", reference " +
                         std::to_string(expected));
            if (grphi::exponent_of<Base>(v, opts) != expected) log.fail("exponent_of(" + where + ") is wrong");
        }
    };

    for (int k = std::max(g.k_lo, k_first); k <= std::min(g.k_hi, k_last); ++k) {
        const std::string at = " at k=" + std::to_string(k);
        // Level: round to nearest, ties to even. Between the midpoints to its neighbours.
        const T level = g.level_of(k);
        if (!(level > 0) || !std::isfinite(level)) {
            log.fail("level" + at + " is " + describe(level) + ", outside the natural range");
        } else {
            const big lower = midpoint(exact(std::nextafter(level, zero)), exact(level));
            const big upper = midpoint(exact(level), level == max ? power_of_two(std::numeric_limits<T>::max_exponent)
                                                                  : exact(std::nextafter(level, max)));
            const bool even = (bits(level) & 1) == 0;
            const order lo = ref.vs_level(lower, k), hi = ref.vs_level(upper, k);
            if (!(lo == order::below || (lo == order::equal && even)) ||
                !(hi == order::above || (hi == order::equal && even)))
                log.fail("level" + at + " = " + describe(level) + " is not b^(k+step/16) rounded to nearest");
        }
        // Flush point: the smallest value >= level/2 (the real level, not the rounded one).
        const T flush = g.flush_of(k);
        if (!(flush > 0) || !std::isfinite(flush) || ref.vs_half_level(exact(flush), k) == order::below ||
            ref.vs_half_level(exact(std::nextafter(flush, zero)), k) != order::below)
            log.fail("flush" + at + " = " + describe(flush) + " is not the smallest value >= b^(k+step/16)/2");
        if (k == g.k_lo) continue;
        // Threshold: the smallest value >= the boundary between k-1 and k.
        const T t = g.threshold_of(k);
        if (!(t > 0) || !std::isfinite(t) || ref.vs_boundary(exact(t), k) == order::below ||
            ref.vs_boundary(exact(std::nextafter(t, zero)), k) != order::below) {
            log.fail("threshold" + at + " = " + describe(t) + " is not the smallest value >= the boundary");
            continue;
        }
        check_exponent(std::nextafter(t, zero), "threshold - 1ulp" + at);
        check_exponent(t, "threshold" + at);
        if (t < max) check_exponent(std::nextafter(t, max), "threshold + 1ulp" + at);
    }

    // Special values and random magnitudes over the whole range, denormals included.
    using I = bits_of<T>;
    constexpr I min_normal_bits = I(1) << (std::numeric_limits<T>::digits - 1);
    const I inf_bits = bits(std::numeric_limits<T>::infinity());
    if (g.exponent(zero) != g.k_lo) log.fail("exponent(0) is not k_lo");
    if (cells && cells->exponent(0) != g.k_lo) log.fail("cell_table exponent(0) is not k_lo");
    for (T v : {zero, std::numeric_limits<T>::denorm_min(), std::numeric_limits<T>::min(), max, T(1)})
        check_exponent(v, "special value");
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<I> any_finite(1, inf_bits - 1);
    std::uniform_int_distribution<I> any_denormal(1, min_normal_bits - 1);
    for (int i = 0; i < random_count; ++i) check_exponent(from_bits<T>(any_finite(rng)), "random magnitude");
    for (int i = 0; i < random_count / 8; ++i) check_exponent(from_bits<T>(any_denormal(rng)), "random denormal");
}

}  // namespace

// The reference itself, on cases whose answers are known by hand: a reference that cannot fail is useless.
TEST_CASE("levels: the interval reference decides known comparisons exactly") {
    const interval one = point(power_of_two(0));
    CHECK(compare_power<grphi::two>(exact(1024.0), 1, 10, one) == order::equal);
    CHECK(compare_power<grphi::two>(exact(std::nextafter(1024.0, 0.0)), 1, 10, one) == order::below);
    CHECK(compare_power<grphi::two>(exact(0.125), 32, -96, one) == order::equal);
    CHECK(compare_power<grphi::sqrt2>(exact(8.0), 2, 12, one) == order::equal);  // 8^2 = √2^12
    CHECK(compare_power<grphi::sqrt2>(exact(1.4142135623730951), 1, 1, one) == order::above);
    CHECK(compare_power<grphi::sqrt2>(exact(1.4142135623730950), 1, 1, one) == order::below);
    CHECK(compare_power<grphi::phi>(exact(1.618033988749895), 1, 1, one) == order::above);  // φ's double is above φ
    CHECK(compare_power<grphi::phi>(exact(std::nextafter(1.618033988749895, 0.0)), 1, 1, one) == order::below);
    CHECK(compare_power<grphi::phi>(exact(1.0), 7, 0, one) == order::equal);
    CHECK(compare_power<grphi::phi>(exact(0.5), 16, -16, one) == order::below);  // 1/2 < 1/φ
    // φ^10 = 55 φ + 34 = 122.99186938124421...; φ^-10 = 0.008130618755783...
    CHECK(compare_power<grphi::phi>(exact(122.99186938124), 1, 10, one) == order::below);
    CHECK(compare_power<grphi::phi>(exact(122.99186938125), 1, 10, one) == order::above);
    CHECK(compare_power<grphi::phi>(exact(0.0081306187557834), 1, -10, one) == order::above);
    CHECK(compare_power<grphi::phi>(exact(0.0081306187557833), 1, -10, one) == order::below);
    // φ^77 = L77 + φ^-77 with the Lucas number L77 = 12360848946698171: a near-tie at 2^-110 relative.
    CHECK(compare_power<grphi::phi>(integer(12360848946698171u), 1, 77, one) == order::below);
    CHECK(compare_power<grphi::phi>(integer(12360848946698172u), 1, 77, one) == order::above);
    // A run-time base is its double, exactly: 1.5^2 = 2.25 and 1.5^-3 = 8/27 (no double, so never equal).
    const reference_base<grphi::custom> three_halves{1.5};
    CHECK(compare_power<grphi::custom>(exact(2.25), 1, 2, one, three_halves) == order::equal);
    CHECK(compare_power<grphi::custom>(exact(std::nextafter(2.25, 0.0)), 1, 2, one, three_halves) == order::below);
    CHECK(compare_power<grphi::custom>(exact(0.2962962962963), 1, -3, one, three_halves) == order::above);
    CHECK(compare_power<grphi::custom>(exact(0.2962962962962), 1, -3, one, three_halves) == order::below);
    CHECK(compare_power<grphi::custom>(exact(3.7), 16, 16, one, reference_base<grphi::custom>{3.7}) == order::equal);
    CHECK(compare_power<grphi::custom>(exact(std::nextafter(3.7, 4.0)), 16, 16, one, reference_base<grphi::custom>{3.7}) ==
          order::above);
    // The linear boundary between 1.5^0 and 1.5^1 is 1.25: (2 * 1.25)^16 against 1.5^0 * (1 + 1.5)^16.
    CHECK(compare_power<grphi::custom>(exact(2.5), 16, 0, point(exact(2.5)), three_halves) == order::equal);
    // An overlap that is not an exact tie must throw, never pass.
    CHECK_THROWS_AS(compare_power<grphi::phi>(exact(1.0), 1, 0, sqrt2_interval() * sqrt2_interval() * point(exact(0.5))),
                    std::runtime_error);
    // big arithmetic: carries, exact midpoints, zero.
    CHECK(add(exact(1.0), exact(std::ldexp(1.0, -400)), false) == exact(1.0));
    CHECK(add(exact(1.0), exact(std::ldexp(1.0, -400)), true) == next_up(exact(1.0)));
    CHECK(midpoint(exact(3.0), exact(5.0)) == exact(4.0));
    CHECK(multiply(exact(3.0), exact(0.75), false) == exact(2.25));
    CHECK(compare(exact(0.0), exact(std::numeric_limits<double>::denorm_min())) < 0);
}

// The checks must catch a grid that is off by one ulp anywhere, or whose range is one exponent short.
TEST_CASE_TEMPLATE("levels: the grid checks catch deliberately broken grids", T, float, double) {
    const auto& good = grphi::grid_for<T, grphi::sqrt2>(grphi::rounding::log, 0);
    auto failures_of = [](const grphi::grid<T, grphi::sqrt2>& g, int k_first = INT_MIN, int k_last = INT_MAX) {
        failure_log log{"mutant", true};
        check_grid<T, grphi::sqrt2>(g, nullptr, log, 7, k_first, k_last, k_first == INT_MIN ? 1500 : 0);
        return log.count;
    };
    CHECK(failures_of(good) == 0);
    const T up = std::numeric_limits<T>::infinity();
    for (int k : {good.k_lo + 1, -7, 0, 1, 33, good.k_hi}) {
        CAPTURE(k);
        const auto i = static_cast<std::size_t>(k - good.k_lo);
        auto mutant = good;
        mutant.level[i] = std::nextafter(mutant.level[i], up);
        CHECK(failures_of(mutant, k - 1, k + 1) > 0);
        mutant = good;
        mutant.threshold[i] = std::nextafter(mutant.threshold[i], up);
        CHECK(failures_of(mutant, k - 1, k + 1) > 0);
        mutant = good;
        mutant.threshold[i] = std::nextafter(mutant.threshold[i], T(0));
        CHECK(failures_of(mutant, k - 1, k + 1) > 0);
        mutant = good;
        mutant.flush[i] = std::nextafter(mutant.flush[i], T(0));
        CHECK(failures_of(mutant, k - 1, k + 1) > 0);
    }
    auto short_range = good;  // k_hi one too low
    short_range.k_hi -= 1;
    for (auto* v : {&short_range.level, &short_range.threshold, &short_range.flush}) v->pop_back();
    CHECK(failures_of(short_range, 0, 0) > 0);
    auto linear_labelled = good;  // log thresholds presented as the linear grid
    linear_labelled.round = grphi::rounding::linear;
    CHECK(failures_of(linear_labelled, -3, 3) > 0);
}

// Hand-computed grid values, independent of the interval reference: the exact ties of issue 2.
TEST_CASE_TEMPLATE("levels: exact ties and hand-computed values", T, float, double) {
    using lim = std::numeric_limits<T>;
    const auto& two = grphi::grid_for<T, grphi::two>(grphi::rounding::log, 0);
    CHECK(two.k_lo == lim::min_exponent - lim::digits);  // 2^-149 / 2^-1074 is the smallest level
    CHECK(two.k_hi == lim::max_exponent - 1);
    for (int k = two.k_lo; k <= two.k_hi; ++k) CHECK(two.level_of(k) == std::ldexp(T(1), k));
    CHECK(two.flush_of(0) == T(0.5));
    // Linear, base 2: the boundary between 2^0 and 2^1 is 1.5, ties go up.
    const auto& two_linear = grphi::grid_for<T, grphi::two>(grphi::rounding::linear, 0);
    CHECK(two_linear.threshold_of(1) == T(1.5));
    CHECK(two_linear.exponent(T(1.5)) == 1);
    CHECK(two_linear.exponent(std::nextafter(T(1.5), T(0))) == 0);
    // Base 2 with step ±8 (scale 2^±1/2): log boundaries are exact powers of two, and they belong to the upper k.
    const auto& two_up = grphi::grid_for<T, grphi::two>(grphi::rounding::log, 8);
    const auto& two_down = grphi::grid_for<T, grphi::two>(grphi::rounding::log, -8);
    for (int k : {-100, -1, 0, 1, 3, 100}) {
        CAPTURE(k);
        CHECK(two_up.threshold_of(k) == std::ldexp(T(1), k));
        CHECK(two_up.exponent(std::ldexp(T(1), k)) == k);
        CHECK(two_down.threshold_of(k) == std::ldexp(T(1), k - 1));
        CHECK(two_down.exponent(std::ldexp(T(1), k - 1)) == k);
    }
    // √2 with step ±8: b^(k - 1/2 ± 1/2) = 2^(m/2) is exact for even m.
    const auto& sqrt2_up = grphi::grid_for<T, grphi::sqrt2>(grphi::rounding::log, 8);
    CHECK(sqrt2_up.threshold_of(2) == T(2));
    CHECK(sqrt2_up.exponent(T(2)) == 2);
    CHECK(sqrt2_up.exponent(std::nextafter(T(2), T(0))) == 1);
    // √2 levels 2^(k/2) at even k, and their flush points 2^(k/2 - 1).
    const auto& sqrt2 = grphi::grid_for<T, grphi::sqrt2>(grphi::rounding::log, 0);
    for (int k : {-40, -2, 0, 2, 10, 60}) {
        CAPTURE(k);
        CHECK(sqrt2.level_of(k) == std::ldexp(T(1), k / 2));
        CHECK(sqrt2.flush_of(k) == std::ldexp(T(1), k / 2 - 1));
    }
    // φ, linear: (φ^-2 + φ^-1)/2 = 1/2 exactly (1 + φ = φ²); 1/2 is a tie and goes up to k = -1.
    const auto& phi_linear = grphi::grid_for<T, grphi::phi>(grphi::rounding::linear, 0);
    CHECK(phi_linear.threshold_of(-1) == T(0.5));
    CHECK(phi_linear.exponent(T(0.5)) == -1);
    CHECK(phi_linear.exponent(std::nextafter(T(0.5), T(0))) == -2);
    // φ, log, step ±8: the boundary φ^(0 - 1/2 + 1/2) = 1 (k = 0) and φ^(1 - 1/2 - 1/2) = 1 (k = 1).
    CHECK(grphi::grid_for<T, grphi::phi>(grphi::rounding::log, 8).threshold_of(0) == T(1));
    CHECK(grphi::grid_for<T, grphi::phi>(grphi::rounding::log, -8).threshold_of(1) == T(1));
    // φ to nearest: 1.6180339887498949 (double), 1.61803401f (float); levels b^0 = 1.
    const auto& phi = grphi::grid_for<T, grphi::phi>(grphi::rounding::log, 0);
    CHECK(phi.level_of(1) == static_cast<T>(1.6180339887498948482L));
    CHECK(phi.level_of(0) == T(1));
    CHECK(grphi::level<T, grphi::phi>(0) == T(1));
}

TEST_CASE_TEMPLATE("levels: every grid value and threshold neighbour is exact", C, combo<float, grphi::phi>,
                   combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::two>,
                   combo<float, grphi::sqrt2>, combo<double, grphi::sqrt2>) {
    using T = typename C::scalar;
    using Base = typename C::base;
    std::uint64_t seed = 2024;
    for (grphi::rounding round : {grphi::rounding::log, grphi::rounding::linear})
        for (int step : steps_under_test) {
            const auto& g = grphi::grid_for<T, Base>(round, step);
            CHECK(g.round == round);
            CHECK(g.step == step);
            failure_log log{grid_name<T, Base>(round, step)};
            check_grid(g, step == 0 ? &grphi::detail::cell_table_for<T, Base>(round) : nullptr, log, ++seed);
        }
}

TEST_CASE_TEMPLATE("levels: level() and grid_for() reject what is outside their range", C, combo<float, grphi::phi>,
                   combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::two>,
                   combo<float, grphi::sqrt2>, combo<double, grphi::sqrt2>) {
    using T = typename C::scalar;
    using Base = typename C::base;
    for (grphi::rounding round : {grphi::rounding::log, grphi::rounding::linear}) {
        const auto& g = grphi::grid_for<T, Base>(round);
        CHECK(&g == &grphi::grid_for<T, Base>(round, 0));  // built once, shared
        auto level_at = [round](int k) { return grphi::level<T, Base>(k, round); };
        auto grid_at = [round](int step) { return grphi::grid_for<T, Base>(round, step).step; };
        for (int k = g.k_lo; k <= g.k_hi; ++k) CHECK(level_at(k) == g.level_of(k));
        for (int k : {g.k_lo - 1, g.k_hi + 1, INT_MIN, INT_MAX, -40000, 40000})
            CHECK_THROWS_AS(level_at(k), std::out_of_range);
        for (int step : {-9, 9, -100, 100, INT_MIN, INT_MAX}) CHECK_THROWS_AS(grid_at(step), std::invalid_argument);
        for (int step = -8; step <= 8; ++step) CHECK(grid_at(step) == step);
    }
}

// ---------------------------------------------------------------------------------------------
// grphi::custom: a base given at run time goes through the same exact machinery.

namespace {

grphi::options custom_options(double b, grphi::rounding round = grphi::rounding::log) {
    grphi::options o;
    o.base_value = b;
    o.round = round;
    return o;
}

}  // namespace

TEST_CASE_TEMPLATE("levels: grphi::custom with value 2 is the grid of two, bit for bit", T, float, double) {
    for (grphi::rounding round : {grphi::rounding::log, grphi::rounding::linear}) {
        const grphi::options o = custom_options(2.0, round);
        for (int step : steps_under_test) {
            CAPTURE(step);
            const auto& custom = grphi::grid_for<T, grphi::custom>(o, step);
            const auto& two = grphi::grid_for<T, grphi::two>(round, step);
            CHECK(&custom == &grphi::grid_for<T, grphi::custom>(o, step));  // built once, shared
            CHECK(custom.round == round);
            CHECK(custom.step == step);
            CHECK(custom.k_lo == two.k_lo);
            CHECK(custom.k_hi == two.k_hi);
            CHECK(custom.level == two.level);
            CHECK(custom.threshold == two.threshold);
            CHECK(custom.flush == two.flush);
        }
        const auto& cells = grphi::detail::cell_table_for<T, grphi::custom>(o);
        const auto& two_cells = grphi::detail::cell_table_for<T, grphi::two>(round);
        CHECK(cells.source == &grphi::grid_for<T, grphi::custom>(o));
        CHECK(cells.cell_bits == two_cells.cell_bits);
        CHECK(cells.base_k == two_cells.base_k);
        CHECK(cells.threshold_bits == two_cells.threshold_bits);
    }
    CHECK(grphi::level<T, grphi::custom>(-3, custom_options(2.0)) == T(0.125));
    CHECK(grphi::exponent_of<grphi::custom>(T(3), custom_options(2.0, grphi::rounding::linear)) == 2);  // 3 is a tie: up
}

TEST_CASE_TEMPLATE("levels: grphi::custom grids are exact against the reference (1.5, 3.7)", T, float, double) {
    std::uint64_t seed = 4242;
    for (double b : {1.5, 3.7}) {
        const reference_base<grphi::custom> base{b};
        for (grphi::rounding round : {grphi::rounding::log, grphi::rounding::linear})
            for (int step : {0, -8, 5}) {
                const grphi::options o = custom_options(b, round);
                const auto& g = grphi::grid_for<T, grphi::custom>(o, step);
                failure_log log{grid_name<T, grphi::custom>(round, step, base)};
                check_grid<T, grphi::custom>(g, step == 0 ? &grphi::detail::cell_table_for<T, grphi::custom>(o) : nullptr,
                                             log, ++seed, INT_MIN, INT_MAX, 1500, base);
                CHECK(log.count == 0);
            }
    }
    // Distinct values get distinct grids, and 1.5's levels are its exact powers while they fit.
    const auto& g15 = grphi::grid_for<T, grphi::custom>(custom_options(1.5));
    CHECK(&g15 != &grphi::grid_for<T, grphi::custom>(custom_options(3.7)));
    T p = 1;
    for (int k = 0; k <= 15; ++k, p *= T(1.5)) CHECK(g15.level_of(k) == p);
    // The reference sees an ulp anywhere, exact ties included (1.5^13 / 2 is a flush point and a double).
    const reference_base<grphi::custom> base15{1.5};
    auto failures_of = [&](const grphi::grid<T, grphi::custom>& g, int k) {
        failure_log log{"mutant", true};
        check_grid<T, grphi::custom>(g, nullptr, log, 1, k - 1, k + 1, 0, base15);
        return log.count;
    };
    CHECK(failures_of(g15, 13) == 0);
    const auto at = [&](int k) { return static_cast<std::size_t>(k - g15.k_lo); };
    auto mutant = g15;
    mutant.flush[at(13)] = std::nextafter(mutant.flush[at(13)], T(0));
    CHECK(failures_of(mutant, 13) > 0);
    mutant = g15;
    mutant.level[at(-20)] = std::nextafter(mutant.level[at(-20)], T(1));
    CHECK(failures_of(mutant, -20) > 0);
    mutant = g15;
    mutant.threshold[at(7)] = std::nextafter(mutant.threshold[at(7)], T(0));
    CHECK(failures_of(mutant, 7) > 0);
}

TEST_CASE("levels: the smallest run-time base, 1.03, still fits int16 and is exact (float)") {
    const double b = 1.03;
    const grphi::options o = custom_options(b);
    const auto& g = grphi::grid_for<float, grphi::custom>(o);
    CHECK(g.k_lo < -3000);
    CHECK(g.k_hi > 2900);
    failure_log log{grid_name<float, grphi::custom>(grphi::rounding::log, 0, reference_base<grphi::custom>{b})};
    check_grid<float, grphi::custom>(g, &grphi::detail::cell_table_for<float, grphi::custom>(o), log, 99, INT_MIN,
                                     INT_MAX, 1500, reference_base<grphi::custom>{b});
    CHECK(log.count == 0);
    // And the double grid builds, inside int16, with levels around 1 that are the correctly rounded powers.
    const auto& d = grphi::grid_for<double, grphi::custom>(o);
    CHECK(d.k_lo >= -32767);
    CHECK(d.k_hi <= 32767);
    CHECK(d.level_of(0) == 1.0);
    CHECK(d.level_of(1) == 1.03);
    CHECK(d.level_of(2) == 1.03 * 1.03);  // 1.0609 rounded once: the product of doubles is within half an ulp
}

TEST_CASE_TEMPLATE("levels: options::base_value is required for custom and refused for named bases", T, float, double) {
    using grphi::custom;
    CHECK_THROWS_WITH_AS((grphi::grid_for<T, custom>(grphi::options{})), doctest::Contains("base_value is required"),
                         std::invalid_argument);
    for (double bad : {1.0, 1.02, 1.0299999999999998, 0.5, -2.0, 0.0, std::numeric_limits<double>::quiet_NaN(),
                       std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS((grphi::grid_for<T, custom>(custom_options(bad))), doctest::Contains("base_value="),
                             std::invalid_argument);
        grphi::options o;
        o.base_value = bad;
        CHECK_THROWS_AS(o.validate(), std::invalid_argument);
    }
    CHECK_THROWS_WITH_AS((grphi::grid_for<T, grphi::two>(custom_options(2.0))),
                         doctest::Contains("base_value=2 is set, but the base is two"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(grphi::base_value_of<grphi::phi>(custom_options(1.5)), doctest::Contains("only for grphi::custom"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((grphi::grid_for<T, custom>(custom_options(1.02))), doctest::Contains("1.02"),
                         std::invalid_argument);
    CHECK_THROWS_WITH_AS((grphi::grid_for<T, custom>(custom_options(std::numeric_limits<double>::quiet_NaN()))),
                         doctest::Contains("nan"), std::invalid_argument);
    CHECK_THROWS_AS((grphi::grid_for<T, custom>(custom_options(1.5), 9)), std::invalid_argument);
    CHECK_THROWS_AS((grphi::level<T, custom>(40000, custom_options(1.5))), std::out_of_range);
    CHECK(grphi::base_value_of<custom>(custom_options(1.5)) == 1.5);
    CHECK(grphi::base_value_of<custom>(custom_options(1.03)) == 1.03);
    CHECK(grphi::base_value_of<grphi::phi>(grphi::options{}) == 1.618033988749895);
    CHECK(grphi::base_value_of<grphi::two>(grphi::options{}) == 2.0);
    CHECK(grphi::is_base_v<custom>);
    CHECK(std::string(custom::name) == "custom");
}
