// Linear-algebra ops on the tape: matmul (x W^T) and add_bias.
#pragma once

#include <string>

#include <Eigen/Core>

#include "../tape.hpp"

namespace grphi::ad {

// y = x W^T: dx += dy W, dW += dy^T x (Stan's multiply).
template <class T>
struct matmul_op {
    var x, w;
    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) {
        if (t.needs_grad(x)) t.accumulate(x, grad * t.value(w));
        if (t.needs_grad(w)) t.accumulate(w, grad.transpose() * t.value(x));
    }
};

// y = x * W^T, W stored out x in (PyTorch's Linear layout).
template <class T>
var matmul(tape<T>& t, var x, var w) {
    const matrix<T>& xv = t.value(x);
    const matrix<T>& wv = t.value(w);
    if (xv.cols() != wv.cols())
        detail::fail("matmul: x has " + std::to_string(xv.cols()) + " columns but W has " + std::to_string(wv.cols()));
    auto r = t.template record<matmul_op<T>>(t.needs_grad(x) || t.needs_grad(w), static_cast<int>(wv.rows()));
    r.op.x = x;
    r.op.w = w;
    r.value.noalias() = xv * wv.transpose();
    return r.out;
}

// y = x + b; per_channel: b holds one value per channel plane of an image tensor.
template <class T>
struct add_bias_op {
    var x, b;
    int channels = 0;  // 0: one bias per feature
    Eigen::Index plane = 1;
    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) {
        if (t.needs_grad(x)) t.accumulate(x, grad);
        if (!t.needs_grad(b)) return;
        if (channels == 0) {
            // Column sums land in the bias's own shape (1 x F or F x 1).
            if (t.value(b).rows() == 1)
                t.accumulate(b, grad.colwise().sum());
            else
                t.accumulate(b, grad.colwise().sum().transpose());
        } else {
            matrix<T>& db = t.scatter_grad(b);
            for (int c = 0; c < channels; ++c) db.data()[c] += grad.middleCols(c * plane, plane).sum();
        }
    }
};

// y = x + b: b (1 x F) per feature for flat inputs, (1 x C) per channel for image tensors.
template <class T>
var add_bias(tape<T>& t, var x, var b) {
    const matrix<T>& xv = t.value(x);
    const matrix<T>& bv = t.value(b);
    const bool per_channel = x.height * x.width > 1;
    const Eigen::Index expected = per_channel ? x.channels : xv.cols();
    if (bv.size() != expected)
        detail::fail("add_bias: bias has " + std::to_string(bv.size()) + " entries, expected " + std::to_string(expected));
    auto r = t.template record<add_bias_op<T>>(t.needs_grad(x) || t.needs_grad(b), x.channels, x.height, x.width);
    r.op.x = x;
    r.op.b = b;
    r.op.channels = per_channel ? x.channels : 0;
    r.op.plane = static_cast<Eigen::Index>(x.height) * x.width;
    r.value = xv;
    if (!per_channel) {
        r.value.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bv.data(), bv.size());
    } else {
        const Eigen::Index plane = r.op.plane;
        for (Eigen::Index row = 0; row < r.value.rows(); ++row)
            for (int c = 0; c < x.channels; ++c) r.value.row(row).segment(c * plane, plane).array() += bv.data()[c];
    }
    return r.out;
}

}  // namespace grphi::ad
