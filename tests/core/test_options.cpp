// Tests of grphi/core/options.hpp (validation, defaults) and grphi/core/base.hpp (what counts as a base).
#include <grphi/core/base.hpp>
#include <grphi/core/options.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

namespace {

// The message of the std::invalid_argument that validate() throws, or "" when it accepts the options.
// Any other exception type escapes and fails the test.
std::string rejection(const grphi::options& opts) {
    try {
        opts.validate();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return {};
}

bool mentions(const std::string& message, const char* word) { return message.find(word) != std::string::npos; }

grphi::options with_range(std::optional<int> e_min, std::optional<int> e_max) {
    grphi::options o;
    o.e_min = e_min;
    o.e_max = e_max;
    return o;
}

grphi::options with_levels(int levels) {
    grphi::options o;
    o.levels = levels;
    return o;
}

grphi::options with_cluster(int cluster_size) {
    grphi::options o;
    o.cluster_size = cluster_size;
    return o;
}

}  // namespace

// Test types live in a named namespace: in an anonymous one clang flags their unused `name` members.
namespace options_test {

// User bases: any type with a long-double `value` >= 1.03 and a `name`.
struct base_three {
    static constexpr long double value = 3.0L;
    static constexpr const char* name = "three";
};
struct base_at_minimum {
    static constexpr long double value = 1.03L;
    static constexpr const char* name = "min";
};
struct base_too_small {
    static constexpr long double value = 1.02L;
    static constexpr const char* name = "small";
};
struct base_one {
    static constexpr long double value = 1.0L;
    static constexpr const char* name = "one";
};
struct base_below_one {
    static constexpr long double value = 0.5L;
    static constexpr const char* name = "half";
};
struct no_members {};
struct only_value {
    static constexpr long double value = 2.0L;
};
struct only_name {
    static constexpr const char* name = "nameless";
};
struct name_not_a_string {
    static constexpr long double value = 2.0L;
    static constexpr int name = 7;
};

}  // namespace options_test

TEST_CASE("default options are valid and mean: per-channel, no clip, no window, log rounding, clamp") {
    const grphi::options o;
    CHECK(rejection(o).empty());
    CHECK(o.per_channel);
    CHECK_FALSE(o.e_min.has_value());
    CHECK_FALSE(o.e_max.has_value());
    CHECK_FALSE(o.levels.has_value());
    CHECK_FALSE(o.fit_scale);
    CHECK(o.cluster_size == 0);
    CHECK_FALSE(o.clustered());
    CHECK(o.round == grphi::rounding::log);
    CHECK(o.under == grphi::underflow::clamp);
}

TEST_CASE("e_min > e_max is rejected with a message naming both") {
    const std::string message = rejection(with_range(3, 2));
    REQUIRE_FALSE(message.empty());
    CHECK(mentions(message, "e_min"));
    CHECK(mentions(message, "e_max"));

    CHECK(!rejection(with_range(-5, -6)).empty());
    CHECK(rejection(with_range(2, 2)).empty());       // a one-exponent range is allowed
    CHECK(rejection(with_range(-40, 3)).empty());
    CHECK(rejection(with_range(std::nullopt, -7)).empty());
    CHECK(rejection(with_range(7, std::nullopt)).empty());
}

TEST_CASE("e_min and e_max outside the int16 exponent range are rejected, the edges accepted") {
    for (const int bad : {-32768, 32768, -100000, 100000}) {
        CAPTURE(bad);
        const std::string low = rejection(with_range(bad, std::nullopt));
        CHECK(mentions(low, "e_min"));
        const std::string high = rejection(with_range(std::nullopt, bad));
        CHECK(mentions(high, "e_max"));
    }
    CHECK(rejection(with_range(-32767, 32767)).empty());
    CHECK(rejection(with_range(32767, 32767)).empty());
    CHECK(rejection(with_range(-32767, -32767)).empty());
}

TEST_CASE("levels < 1 is rejected with a message naming levels") {
    for (const int bad : {0, -1, -1000}) {
        CAPTURE(bad);
        CHECK(mentions(rejection(with_levels(bad)), "levels"));
    }
    CHECK(mentions(rejection(with_levels(65536)), "levels"));   // more levels than int16 exponents
    for (const int good : {1, 2, 13, 65535}) {
        CAPTURE(good);
        CHECK(rejection(with_levels(good)).empty());
    }
}

TEST_CASE("cluster_size < 0 is rejected; 0 and 1 mean no clustering") {
    for (const int bad : {-1, -32}) {
        CAPTURE(bad);
        CHECK(mentions(rejection(with_cluster(bad)), "cluster_size"));
    }
    CHECK(rejection(with_cluster(0)).empty());
    CHECK(rejection(with_cluster(1)).empty());
    CHECK(rejection(with_cluster(32)).empty());
    CHECK_FALSE(with_cluster(0).clustered());
    CHECK_FALSE(with_cluster(1).clustered());
    CHECK(with_cluster(2).clustered());
}

TEST_CASE("enum values outside the declared ones are rejected, naming the option") {
    grphi::options bad_rounding;
    bad_rounding.round = static_cast<grphi::rounding>(7);
    CHECK(mentions(rejection(bad_rounding), "rounding"));

    grphi::options bad_underflow;
    bad_underflow.under = static_cast<grphi::underflow>(-1);
    CHECK(mentions(rejection(bad_underflow), "underflow"));

    grphi::options linear_flush;
    linear_flush.round = grphi::rounding::linear;
    linear_flush.under = grphi::underflow::flush;
    CHECK(rejection(linear_flush).empty());
}

TEST_CASE("every problem is found whatever the other options") {
    grphi::options o;
    o.per_channel = false;
    o.fit_scale = true;
    o.levels = 4;
    o.e_min = -10;
    o.e_max = 0;
    o.cluster_size = 8;
    CHECK(rejection(o).empty());
    o.cluster_size = -8;
    CHECK(mentions(rejection(o), "cluster_size"));
    o.cluster_size = 8;
    o.levels = 0;
    CHECK(mentions(rejection(o), "levels"));
}

TEST_CASE("the built-in bases are bases and their values are right") {
    static_assert(grphi::is_base_v<grphi::phi>);
    static_assert(grphi::is_base_v<grphi::two>);
    static_assert(grphi::is_base_v<grphi::sqrt2>);
    // Independent long-double references (the tags are written as decimal literals).
    const long double phi_ref = (1.0L + std::sqrt(5.0L)) / 2.0L;
    const long double sqrt2_ref = std::sqrt(2.0L);
    const long double eps = 4 * std::numeric_limits<long double>::epsilon();
    CHECK(std::fabs(grphi::phi::value - phi_ref) <= eps * phi_ref);
    CHECK(grphi::two::value == 2.0L);
    CHECK(std::fabs(grphi::sqrt2::value - sqrt2_ref) <= eps * sqrt2_ref);
    // phi^2 = phi + 1 holds to long-double precision.
    CHECK(std::fabs(grphi::phi::value * grphi::phi::value - grphi::phi::value - 1.0L) <= 4 * eps);
    CHECK(std::strcmp(grphi::phi::name, "phi") == 0);
    CHECK(std::strcmp(grphi::two::name, "two") == 0);
    CHECK(std::strcmp(grphi::sqrt2::name, "sqrt2") == 0);
}

TEST_CASE("the double-double base values are the long-double value split into hi + lo") {
    const auto check_split = [](double hi, double lo, long double value) {
        // hi is value rounded to double; lo carries the next bits, so hi + lo is closer than hi alone.
        CHECK(static_cast<double>(value) == hi);
        CHECK(std::fabs(lo) <= std::ldexp(std::fabs(hi), -53));
        const long double split = static_cast<long double>(hi) + static_cast<long double>(lo);
        CHECK(std::fabs(split - value) <= std::fabs(static_cast<long double>(hi) - value));
        CHECK(std::fabs(split - value) <= 2 * std::numeric_limits<long double>::epsilon() * value);
    };
    check_split(grphi::phi::precise_hi, grphi::phi::precise_lo, (1.0L + std::sqrt(5.0L)) / 2.0L);
    check_split(grphi::two::precise_hi, grphi::two::precise_lo, 2.0L);
    check_split(grphi::sqrt2::precise_hi, grphi::sqrt2::precise_lo, std::sqrt(2.0L));
}

TEST_CASE("user types are bases exactly when they have value >= 1.03 and a name") {
    static_assert(grphi::is_base_v<options_test::base_three>);
    static_assert(grphi::is_base_v<options_test::base_at_minimum>);
    static_assert(!grphi::is_base_v<options_test::base_too_small>);
    static_assert(!grphi::is_base_v<options_test::base_one>);
    static_assert(!grphi::is_base_v<options_test::base_below_one>);
    static_assert(!grphi::is_base_v<options_test::no_members>);
    static_assert(!grphi::is_base_v<options_test::only_value>);
    static_assert(!grphi::is_base_v<options_test::only_name>);
    static_assert(!grphi::is_base_v<options_test::name_not_a_string>);
    static_assert(!grphi::is_base_v<int>);
    static_assert(!grphi::is_base_v<float>);
    // The same answers at run time, so a regression shows up as a failed check, not only a build error.
    CHECK(grphi::is_base_v<options_test::base_three>);
    CHECK_FALSE(grphi::is_base_v<options_test::base_too_small>);
    CHECK_FALSE(grphi::is_base_v<options_test::no_members>);
}
