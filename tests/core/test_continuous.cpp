// log_b / pow_b: the vectorized continuous map, against long double std::log / std::exp.
#include <doctest/doctest.h>

#include <grphi/core/continuous.hpp>

#include <cmath>
#include <limits>
#include <random>

TEST_CASE_TEMPLATE("log_b and pow_b agree with long double within a few ulps, every tail length", T, float, double) {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> expo(-30, 30);
    for (Eigen::Index n : {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100}) {
        Eigen::Array<T, Eigen::Dynamic, 1> x(n), e(n);
        for (Eigen::Index i = 0; i < n; ++i) {
            x(i) = static_cast<T>(std::exp(expo(rng)));
            e(i) = static_cast<T>(expo(rng));
        }
        const auto lx = grphi::log_b<grphi::phi>(x);
        const auto pe = grphi::pow_b<grphi::phi>(e);
        REQUIRE(lx.size() == n);
        REQUIRE(pe.size() == n);
        const long double lphi = std::log(static_cast<long double>(grphi::phi::value));
        for (Eigen::Index i = 0; i < n; ++i) {
            const long double want_log = std::log(static_cast<long double>(x(i))) / lphi;
            const long double want_pow = std::exp(static_cast<long double>(e(i)) * lphi);
            const long double eps = std::numeric_limits<T>::epsilon();
            CHECK(std::fabs(lx(i) - want_log) <= 8 * eps * std::max<long double>(1, std::fabs(want_log)));
            // exp amplifies the argument's rounding: |e| log(phi) up to 15 -> allow 16 ulp + that.
            CHECK(std::fabs(pe(i) - want_pow) <= (16 + 16 * std::fabs(e(i))) * eps * want_pow);
        }
    }
}

TEST_CASE_TEMPLATE("log_b / pow_b keep shapes, exact anchors and special values", T, float, double) {
    Eigen::Array<T, 2, 3> x;
    x << T(1), T(2), T(4), T(0.5), T(8), T(1024);
    const auto l2 = grphi::log_b<grphi::two>(x);
    CHECK(l2.rows() == 2);
    CHECK(l2.cols() == 3);
    CHECK(l2(0, 0) == T(0));
    CHECK(l2(0, 1) == doctest::Approx(1.0));
    CHECK(l2(1, 2) == doctest::Approx(10.0));
    Eigen::Array<T, Eigen::Dynamic, 1> s(3);
    s << T(0), -T(1), std::numeric_limits<T>::infinity();
    const auto ls = grphi::log_b<grphi::phi>(s);
    CHECK(std::isinf(ls(0)));
    CHECK(ls(0) < 0);
    CHECK(std::isnan(ls(1)));
    CHECK(std::isinf(ls(2)));
    Eigen::Array<T, Eigen::Dynamic, 1> z(2);
    z << T(0), T(1);
    const auto pz = grphi::pow_b<grphi::sqrt2>(z);
    CHECK(pz(0) == T(1));
    CHECK(pz(1) == doctest::Approx(std::sqrt(2.0)));
}
