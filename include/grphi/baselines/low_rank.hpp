// Low-rank approximation for the comparison: the truncated SVD W ~ L R with L = U_r sqrt(S_r)
// (rows x r) and R = sqrt(S_r) V_r^T (r x cols), the best rank-r approximation in Frobenius norm
// (Eckart-Young), and the rank a bit budget buys. Quantizing the factors (or the residual W - L R)
// is the caller's choice: compare.hpp does both with the block formats.
#pragma once

#include <Eigen/Core>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace grphi::baselines {

struct low_rank {
    Eigen::MatrixXd left;    // rows x r: U_r sqrt(S_r)
    Eigen::MatrixXd right;   // r x cols: sqrt(S_r) V_r^T
    Eigen::VectorXd singular_values;  // all of W's, descending

    Eigen::Index rank() const { return left.cols(); }
    Eigen::MatrixXd product() const { return left * right; }
};

// The rank-r truncated SVD of any float or double matrix (computed in double, Eigen's BDCSVD).
template <class Derived>
low_rank truncated_svd(const Eigen::MatrixBase<Derived>& W, Eigen::Index rank) {
    if (rank < 0 || rank > std::min(W.rows(), W.cols()))
        throw std::invalid_argument("grphi::baselines::truncated_svd: rank " + std::to_string(rank) + " is outside [0, " +
                                    std::to_string(std::min(W.rows(), W.cols())) + "]");
    const Eigen::MatrixXd A = W.template cast<double>();
    if (!A.allFinite()) throw std::domain_error("grphi::baselines::truncated_svd: non-finite weight");
    low_rank out;
    if (A.size() == 0) {
        out.left.resize(A.rows(), 0);
        out.right.resize(0, A.cols());
        return out;
    }
    const Eigen::BDCSVD<Eigen::MatrixXd> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
    out.singular_values = svd.singularValues();
    const Eigen::VectorXd root = out.singular_values.head(rank).cwiseSqrt();
    out.left = svd.matrixU().leftCols(rank) * root.asDiagonal();
    out.right = root.asDiagonal() * svd.matrixV().leftCols(rank).transpose();
    return out;
}

// The largest rank whose factors, at factor_bits per stored entry, fit budget_bits per weight of W:
// r (rows + cols) factor_bits <= budget_bits rows cols, capped at min(rows, cols).
inline Eigen::Index rank_for_budget(Eigen::Index rows, Eigen::Index cols, double budget_bits, double factor_bits) {
    if (!(budget_bits >= 0) || !(factor_bits > 0))
        throw std::invalid_argument("grphi::baselines::rank_for_budget: need budget >= 0 and factor bits > 0");
    if (rows <= 0 || cols <= 0) return 0;
    const double r = std::floor(budget_bits * static_cast<double>(rows) * static_cast<double>(cols) /
                                (factor_bits * static_cast<double>(rows + cols)));
    return std::min<Eigen::Index>(static_cast<Eigen::Index>(r), std::min(rows, cols));
}

}  // namespace grphi::baselines
