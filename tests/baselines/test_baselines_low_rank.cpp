// Truncated SVD: exact recovery of low-rank matrices, the Eckart-Young error against an independent
// JacobiSVD, float and double, the bit-budget rank rule, errors.
#include <grphi/baselines/low_rank.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>
#include <Eigen/SVD>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>

namespace gb = grphi::baselines;

namespace {
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> gaussian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(normal(rng));
    return W;
}
}  // namespace

TEST_CASE_TEMPLATE("low rank: a rank-3 matrix is recovered, and truncation error is the tail of the spectrum", T, float, double) {
    const Eigen::MatrixXd exact = gaussian<double>(30, 3, 1) * gaussian<double>(3, 45, 2);
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> W = exact.cast<T>();
    const auto lr = gb::truncated_svd(W, 3);
    CHECK(lr.rank() == 3);
    CHECK(lr.left.rows() == 30);
    CHECK(lr.right.cols() == 45);
    const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    CHECK((lr.product() - W.template cast<double>()).norm() <= tolerance * exact.norm());

    const Eigen::MatrixXd R = gaussian<double>(20, 33, 3);
    const Eigen::JacobiSVD<Eigen::MatrixXd> reference(R);
    for (Eigen::Index r : {0, 1, 5, 19, 20}) {
        CAPTURE(r);
        const auto approx = gb::truncated_svd(R, r);
        const double tail = std::sqrt(reference.singularValues().tail(20 - r).squaredNorm());
        CHECK(std::fabs((R - approx.product()).norm() - tail) <= 1e-9 * (1 + tail));
    }
}

TEST_CASE("low rank: the rank a budget buys, and errors") {
    // 4.5 bits/weight of Q8_0 factors (8.5 bits) on 256x784: floor(4.5*256*784 / (8.5*1040)) = 102.
    CHECK(gb::rank_for_budget(256, 784, 4.5, 8.5) == 102);
    CHECK(gb::rank_for_budget(10, 256, 4.5, 8.5) == 5);
    CHECK(gb::rank_for_budget(10, 256, 100, 1) == 10);  // capped at min(rows, cols)
    CHECK(gb::rank_for_budget(10, 256, 0.25, 8.5) == 0);
    CHECK(gb::rank_for_budget(0, 5, 4, 8) == 0);
    CHECK_THROWS_AS(gb::rank_for_budget(4, 4, -1, 8), std::invalid_argument);
    CHECK_THROWS_AS(gb::rank_for_budget(4, 4, 1, 0), std::invalid_argument);
    Eigen::MatrixXd W = gaussian<double>(4, 6, 4);
    CHECK_THROWS_AS(gb::truncated_svd(W, 5), std::invalid_argument);
    CHECK_THROWS_AS(gb::truncated_svd(W, -1), std::invalid_argument);
    W(1, 1) = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(gb::truncated_svd(W, 2), std::domain_error);
    CHECK(gb::truncated_svd(Eigen::MatrixXd(0, 3), 0).rank() == 0);
}
