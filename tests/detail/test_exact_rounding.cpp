// Certified interval arithmetic (detail/bigfloat.hpp) and the certified rounding of grid quantities
// (detail/exact_rounding.hpp): hand-computed values, exact ties of user (dyadic) bases, and the
// promise to report "undecided" rather than guess. The grids of φ, 2 and √2 are checked against an
// independent reference in test_levels.cpp.
#include <grphi/core/levels.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace {

using grphi::detail::bigfloat;
using grphi::detail::toward;
using grphi::detail::u128;

struct one_and_a_half {  // a dyadic user base: 1.5^k is a double up to k = 33
    static constexpr long double value = 1.5L;
    static constexpr const char* name = "1.5";
};
struct four {
    static constexpr long double value = 4.0L;
    static constexpr const char* name = "4";
};
struct split_base {  // a user base given as a double-double: exactly 7/4 - 2^-80
    static constexpr long double value = 1.75L;
    static constexpr const char* name = "7/4 - 2^-80";
    static constexpr double precise_hi = 1.75;
    static constexpr double precise_lo = -0x1p-80;
};

template <class T>
bigfloat<2> exact(T v) {
    return grphi::detail::from_scalar<2>(v);
}

// order_of for a quantity known exactly (q itself is a bigfloat).
auto against(const bigfloat<2>& q) {
    return [q](const bigfloat<2>& x) {
        const int c = grphi::detail::compare(x, q);
        return c < 0 ? grphi::detail::order::below : c > 0 ? grphi::detail::order::above : grphi::detail::order::equal;
    };
}

}  // namespace

TEST_CASE("exact rounding: bigfloat arithmetic rounds down and up around the exact value") {
    using namespace grphi::detail;
    // (2^64 - 1)^2 = 2^128 - 2^65 + 1 needs 128 bits: one limb brackets it by two neighbours.
    const bigfloat<1> all_ones = from_u128<1>(~std::uint64_t{0}, 0);
    const bigfloat<1> down = multiply(all_ones, all_ones, toward::zero), up = multiply(all_ones, all_ones, toward::up);
    CHECK(down.m[0] == 0xfffffffffffffffeULL);
    CHECK(down.scale == 128);
    CHECK(compare(next_up(down), up) == 0);
    // With two limbs the same product is exact.
    const bigfloat<2> wide = from_u128<2>(~std::uint64_t{0}, 0);
    CHECK(compare(multiply(wide, wide, toward::zero), multiply(wide, wide, toward::up)) == 0);
    // 3 * fl(1/3) = 1 - 2^-54 exactly; 0.75 + 0.25 = 1 with a carry into a new binade.
    const bigfloat<2> one_minus = from_u128<2>((u128{1} << 54) - 1, -54);  // 1 - 2^-54, not a double
    CHECK(compare(multiply(exact(3.0), exact(1.0 / 3.0), toward::zero), one_minus) == 0);
    CHECK(compare(multiply(exact(3.0), exact(1.0 / 3.0), toward::up), one_minus) == 0);
    CHECK(compare(add(exact(0.75), exact(0.25), toward::zero), exact(1.0)) == 0);
    CHECK(compare(add(exact(1.0), exact(0x1p-400), toward::zero), exact(1.0)) == 0);
    CHECK(compare(add(exact(1.0), exact(0x1p-400), toward::up), next_up(exact(1.0))) == 0);
    // Denormals and extremes convert exactly.
    CHECK(compare(exact(std::numeric_limits<double>::denorm_min()), power_of_two<2>(-1074)) == 0);
    CHECK(compare(exact(std::numeric_limits<float>::denorm_min()), power_of_two<2>(-149)) == 0);
    CHECK(compare(exact(0.0), exact(std::numeric_limits<double>::denorm_min())) < 0);
    CHECK(compare(exact(3.0), from_scalar<2>(3.0L)) == 0);
}

TEST_CASE("exact rounding: the stored constants satisfy their defining equations") {
    using namespace grphi::detail;
    const auto phi = irrational_constant<6>(golden_ratio_limbs), root = irrational_constant<6>(sqrt_two_limbs);
    const auto phi_squared = phi * phi, phi_plus_one = phi + point(power_of_two<6>(0)), two = root * root;
    CHECK(compare(phi_squared.lo, phi_plus_one.hi) <= 0);  // φ² = φ + 1: the intervals overlap
    CHECK(compare(phi_plus_one.lo, phi_squared.hi) <= 0);
    CHECK(compare(two.lo, power_of_two<6>(1)) < 0);  // √2² = 2 strictly inside
    CHECK(compare(two.hi, power_of_two<6>(1)) > 0);
    CHECK(compare(phi.hi, from_scalar<6>(1.618033988749895)) < 0);  // φ's double lies above φ
    CHECK(compare(phi.lo, from_scalar<6>(std::nextafter(1.618033988749895, 0.0))) > 0);
    CHECK(compare(root.hi, from_scalar<6>(1.4142135623730951)) < 0);  // √2's double lies above √2
    CHECK(compare(root.lo, from_scalar<6>(std::nextafter(1.4142135623730951, 0.0))) > 0);
}

TEST_CASE("exact rounding: comparisons settle near ties and report overlaps as undecided") {
    using namespace grphi::detail;
    // φ^77 = L77 + φ^-77 with the Lucas number L77 = 12360848946698171 (2^-110 relative).
    const u128 lucas77 = 12360848946698171u;
    CHECK(exact_order<grphi::phi>(from_u128<2>(lucas77, 0), {1, 77, false, 0}) == order::below);
    CHECK(exact_order<grphi::phi>(from_u128<2>(lucas77 + 1, 0), {1, 77, false, 0}) == order::above);
    // x^32 against b^m reduces to x against b^(m/32): exact ties of φ^0, 2^k and √2^(2k).
    CHECK(exact_order<grphi::phi>(exact(1.0), {32, 0, false, 0}) == order::equal);
    CHECK(exact_order<grphi::two>(exact(0x1p-1074), {32, -32 * 1074, false, 0}) == order::equal);
    CHECK(exact_order<grphi::sqrt2>(exact(8.0), {16, 96, false, 0}) == order::equal);
    // The linear boundary (φ^-2 + φ^-1)/2 = φ^0/2 (1 + φ = φ²): (2x)^16 against φ^0, a tie at x = 1/2.
    CHECK(exact_order<grphi::phi>(exact(0.5), {16, 0, false, 1}) == order::equal);
    CHECK(exact_order<grphi::phi>(exact(std::nextafter(0.5, 1.0)), {16, 0, false, 1}) == order::above);
    // Dyadic bases: 2.25^32 against 1.5^64 is a tie; with the factor (1 + b)^16 no power can be reduced,
    // so 1.5^29 * 1.25 (49 bits, 784 bits at the 16th power) needs the 1792-bit second tier.
    CHECK(exact_order<one_and_a_half>(exact(2.25), {32, 64, false, 0}) == order::equal);
    const double linear_tie = std::ldexp(68630377364883.0 * 5, -31);  // (1.5^29 + 1.5^30)/2 = 3^29 * 5 / 2^31
    CHECK(exact_order<one_and_a_half>(exact(linear_tie), {16, 16 * 29, true, 1}) == order::equal);
    CHECK(exact_order<one_and_a_half>(exact(std::nextafter(linear_tie, 0.0)), {16, 16 * 29, true, 1}) ==
          order::below);
    // A 64-bit φ overlaps its own interval: the answer is "undecided", never a guess.
    const bigfloat<1> phi64 = resized<1>(irrational_constant<6>(golden_ratio_limbs).lo, toward::zero);
    CHECK(exact_order<grphi::phi, 1>(phi64, {1, 1, false, 0}) == order::undecided);
}

TEST_CASE_TEMPLATE("exact rounding: candidates move to the certified value, ties to even", T, float, double) {
    using lim = std::numeric_limits<T>;
    using grphi::detail::certified_ceil;
    using grphi::detail::certified_nearest;
    const T one = 1, tiny = lim::denorm_min(), max = lim::max(), inf = lim::infinity();
    // Nearest: from 3 ulps off either side; ties to even (1.5 denorm_min goes to 2 denorm_min).
    const bigfloat<2> q = exact(T(1.25));
    CHECK(certified_nearest(std::nextafter(std::nextafter(std::nextafter(T(1.25), inf), inf), inf), against(q)) ==
          T(1.25));
    CHECK(certified_nearest(std::nextafter(std::nextafter(std::nextafter(T(1.25), T(0)), T(0)), T(0)), against(q)) ==
          T(1.25));
    const bigfloat<2> one_and_a_half_tiny = grphi::detail::scaled(exact(T(3) * tiny), -1);
    CHECK(certified_nearest(tiny, against(one_and_a_half_tiny)) == 2 * tiny);
    CHECK(certified_nearest(T(0), against(grphi::detail::scaled(exact(tiny), -1))) == T(0));  // tie: even 0
    CHECK(certified_nearest(tiny, against(grphi::detail::scaled(exact(tiny), -1))) == T(0));
    // Overflow: max + ulp/2 is a tie between max (odd) and 2^max_exponent (even): inf.
    const bigfloat<2> half_ulp_above = grphi::detail::midpoint_above(max);
    CHECK(certified_nearest(max, against(half_ulp_above)) == inf);
    CHECK(certified_nearest(inf, against(exact(max))) == max);
    // Ceiling: the smallest value >= q.
    CHECK(certified_ceil(std::nextafter(one, inf), against(exact(one))) == one);
    CHECK(certified_ceil(std::nextafter(one, T(0)), against(exact(one))) == one);
    CHECK(certified_ceil(2 * tiny, against(grphi::detail::scaled(exact(tiny), -3))) == tiny);
}

TEST_CASE_TEMPLATE("exact rounding: user bases keep their exact ties", T, float, double) {
    const int exact_powers = std::is_same_v<T, float> ? 15 : 33;  // 3^k < 2^24 or 2^53
    const auto& log0 = grphi::grid_for<T, one_and_a_half>(grphi::rounding::log, 0);
    const auto& log_up = grphi::grid_for<T, one_and_a_half>(grphi::rounding::log, 8);
    const auto& log_down = grphi::grid_for<T, one_and_a_half>(grphi::rounding::log, -8);
    const auto& linear = grphi::grid_for<T, one_and_a_half>(grphi::rounding::linear, 0);
    T p = 1;
    for (int k = 0; k <= exact_powers; ++k, p *= T(1.5)) {
        CAPTURE(k);
        CHECK(log0.level_of(k) == p);
        CHECK(log0.flush_of(k) == p / 2);
        CHECK(log_up.threshold_of(k) == p);          // b^(k - 1/2 + 1/2) = 1.5^k, and it belongs to k
        CHECK(log_down.threshold_of(k + 1) == p);    // b^(k + 1 - 1/2 - 1/2)
        CHECK(log_up.exponent(std::nextafter(p, T(0))) == k - 1);
        if (k >= 1 && k <= exact_powers - 3) CHECK(linear.threshold_of(k) == p / T(1.5) * T(1.25));
    }
    // A base that is a power of two: levels 4^k, log boundaries 4^(k - 1/2) = 2^(2k-1).
    const auto& by_four = grphi::grid_for<T, four>(grphi::rounding::log, 0);
    for (int k : {-20, -1, 0, 1, 20}) {
        CAPTURE(k);
        CHECK(by_four.level_of(k) == std::ldexp(T(1), 2 * k));
        CHECK(by_four.threshold_of(k) == std::ldexp(T(1), 2 * k - 1));
    }
    // A double-double base is its exact sum: 7/4 - 2^-80 is no double and its level rounds to 7/4.
    const auto& split = grphi::grid_for<T, split_base>(grphi::rounding::log, 0);
    CHECK(split.level_of(1) == T(1.75));
    CHECK(split.level_of(0) == T(1));
}

TEST_CASE("exact rounding: 1.5^34 needs 54 bits and rounds to even") {
    // 3^34 = 16677181699666569 is odd and above 2^53: 1.5^34 is a tie between two doubles (Python:
    // float(Fraction(3, 2)**34).hex() == '0x1.d9fe779881944p+19').
    CHECK(grphi::grid_for<double, one_and_a_half>(grphi::rounding::log, 0).level_of(34) == 0x1.d9fe779881944p+19);
}
