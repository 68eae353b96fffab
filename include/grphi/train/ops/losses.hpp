// Scalar heads on the tape: softmax cross-entropy (the training loss) and weighted_sum (for tests
// and custom losses).
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../tape.hpp"

namespace grphi::ad {

// Mean cross-entropy: dz = (softmax - onehot) / N * dy.
template <class T>
struct softmax_cross_entropy_op {
    var logits;
    matrix<T> probabilities;
    matrix<T> dlogits;  // own buffer: the probabilities stay intact for a second backward()
    std::vector<int> labels;
    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) {
        const T g = grad(0, 0) / static_cast<T>(probabilities.rows());
        dlogits = probabilities;
        for (Eigen::Index r = 0; r < dlogits.rows(); ++r) dlogits(r, labels[static_cast<std::size_t>(r)]) -= T(1);
        dlogits *= g;
        t.accumulate(logits, dlogits);
    }
};

// Mean over the batch of -log softmax(logits)[label]; a 1x1 result.
template <class T, class Labels>
var softmax_cross_entropy(tape<T>& t, var logits, const Labels& labels) {
    const matrix<T>& z = t.value(logits);
    const Eigen::Index N = z.rows(), K = z.cols();
    if (static_cast<Eigen::Index>(labels.size()) != N)
        detail::fail("softmax_cross_entropy: " + std::to_string(labels.size()) + " labels for " + std::to_string(N) + " rows");
    if (N <= 0 || K <= 0) detail::fail("softmax_cross_entropy: empty logits");
    auto r = t.template record<softmax_cross_entropy_op<T>>(t.needs_grad(logits), 1);
    softmax_cross_entropy_op<T>& op = r.op;
    op.logits = logits;
    op.labels.resize(static_cast<std::size_t>(N));
    op.probabilities.resize(N, K);
    double total = 0;
    for (Eigen::Index row = 0; row < N; ++row) {
        const auto label = static_cast<long long>(labels[static_cast<std::size_t>(row)]);
        if (label < 0 || label >= K)
            throw std::out_of_range("grphi::ad::softmax_cross_entropy: label " + std::to_string(label) + " of row " +
                                    std::to_string(row) + " is outside [0, " + std::to_string(K) + ")");
        op.labels[static_cast<std::size_t>(row)] = static_cast<int>(label);
        const T top = z.row(row).maxCoeff();
        op.probabilities.row(row) = (z.row(row).array() - top).exp().matrix();
        const T sum = op.probabilities.row(row).sum();
        op.probabilities.row(row) /= sum;
        total += static_cast<double>(std::log(sum) - (z(row, label) - top));
    }
    r.value.resize(1, 1);
    r.value(0, 0) = static_cast<T>(total / static_cast<double>(N));
    return r.out;
}

// sum(x .* weights): dx += weights * dy.
template <class T>
struct weighted_sum_op {
    var x;
    matrix<T> weights;
    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) { t.accumulate(x, weights * grad(0, 0)); }
};

// sum(x .* weights) with constant weights: a scalar head for tests and custom losses.
template <class T, class Derived>
var weighted_sum(tape<T>& t, var x, const Eigen::MatrixBase<Derived>& weights) {
    const matrix<T>& xv = t.value(x);
    if (weights.rows() != xv.rows() || weights.cols() != xv.cols()) detail::fail("weighted_sum: shape mismatch");
    auto r = t.template record<weighted_sum_op<T>>(t.needs_grad(x), 1);
    r.op.x = x;
    r.op.weights = weights;
    r.value.resize(1, 1);
    r.value(0, 0) = xv.cwiseProduct(r.op.weights).sum();
    return r.out;
}

}  // namespace grphi::ad
