// Image ops on the tape (NCHW rows): conv2d by im2col + one GEMM, 2x2 max-pool, and flatten.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "../tape.hpp"

namespace grphi::ad {

struct conv_geometry {
    int kernel_h = 3;
    int kernel_w = 3;
    int stride = 1;
    int padding = 0;
};

namespace detail {
inline int conv_output_size(int in, int kernel, int stride, int padding) {
    return (in + 2 * padding - kernel) / stride + 1;
}

// One convolution's sizes: input C x H x W, output Ho x Wo per channel, and the kernel's geometry.
struct conv_shape {
    int C = 0, H = 0, W = 0, Ho = 0, Wo = 0;
    conv_geometry g;
    Eigen::Index positions() const { return static_cast<Eigen::Index>(Ho) * Wo; }
};

// Rows of x (NCHW images) into columns: (C*kh*kw) x (N*Ho*Wo), zeros where the kernel hangs over the padding.
template <class T>
void im2col(const matrix<T>& x, const conv_shape& s, matrix<T>& cols) {
    const int C = s.C, H = s.H, W = s.W, Ho = s.Ho, Wo = s.Wo, kh = s.g.kernel_h, kw = s.g.kernel_w;
    const int stride = s.g.stride, pad = s.g.padding;
    const Eigen::Index N = x.rows();
    const Eigen::Index positions = s.positions();
    cols.resize(static_cast<Eigen::Index>(C) * kh * kw, N * positions);
    for (Eigen::Index n = 0; n < N; ++n) {
        const T* img = x.row(n).data();
        for (int c = 0; c < C; ++c)
            for (int ky = 0; ky < kh; ++ky)
                for (int kx = 0; kx < kw; ++kx) {
                    T* dst = cols.row((c * kh + ky) * kw + kx).data() + n * positions;
                    for (int oy = 0; oy < Ho; ++oy) {
                        const int iy = oy * stride - pad + ky;
                        for (int ox = 0; ox < Wo; ++ox) {
                            const int ix = ox * stride - pad + kx;
                            const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                            dst[oy * Wo + ox] = inside ? img[(c * H + iy) * W + ix] : T(0);
                        }
                    }
                }
    }
}

// The adjoint of im2col: adds each column entry back into the image position it was read from.
template <class T>
void col2im_add(const matrix<T>& cols, const conv_shape& s, matrix<T>& dx) {
    const int C = s.C, H = s.H, W = s.W, Ho = s.Ho, Wo = s.Wo, kh = s.g.kernel_h, kw = s.g.kernel_w;
    const int stride = s.g.stride, pad = s.g.padding;
    const Eigen::Index positions = s.positions();
    for (Eigen::Index n = 0; n < dx.rows(); ++n) {
        T* img = dx.row(n).data();
        for (int c = 0; c < C; ++c)
            for (int ky = 0; ky < kh; ++ky)
                for (int kx = 0; kx < kw; ++kx) {
                    const T* src = cols.row((c * kh + ky) * kw + kx).data() + n * positions;
                    for (int oy = 0; oy < Ho; ++oy) {
                        const int iy = oy * stride - pad + ky;
                        if (iy < 0 || iy >= H) continue;
                        for (int ox = 0; ox < Wo; ++ox) {
                            const int ix = ox * stride - pad + kx;
                            if (ix >= 0 && ix < W) img[(c * H + iy) * W + ix] += src[oy * Wo + ox];
                        }
                    }
                }
    }
}
}  // namespace detail

// Keeps the im2col columns for dW and its own GEMM-layout buffers so that no step allocates.
template <class T>
struct conv2d_op {
    var x, w;
    detail::conv_shape shape;
    matrix<T> columns;       // im2col(x): (C*kh*kw) x (N*Ho*Wo)
    matrix<T> channel_major;  // output, then its gradient, as O x (N*Ho*Wo)
    matrix<T> dcolumns;      // own buffer: the columns stay valid for a second backward()

    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) {
        const Eigen::Index N = grad.rows();
        const matrix<T>& wv = t.value(w);
        const Eigen::Index O = wv.rows();
        const Eigen::Index positions = shape.positions();
        // Gather the NCHW gradient into the channel-major GEMM layout, O x (N*Ho*Wo).
        channel_major.resize(O, N * positions);
        for (Eigen::Index n = 0; n < N; ++n)
            for (Eigen::Index o = 0; o < O; ++o)
                channel_major.row(o).segment(n * positions, positions) = grad.row(n).segment(o * positions, positions);
        if (t.needs_grad(w)) t.accumulate(w, channel_major * columns.transpose());
        if (t.needs_grad(x)) {
            dcolumns.noalias() = wv.transpose() * channel_major;
            detail::col2im_add(dcolumns, shape, t.scatter_grad(x));
        }
    }
};

// 2-D convolution (cross-correlation, like PyTorch): x is N x (C*H*W), w is O x (C*kh*kw).
// im2col into a (C*kh*kw) x (N*Ho*Wo) matrix, one GEMM, then scatter to NCHW rows.
template <class T>
var conv2d(tape<T>& t, var x, var w, const conv_geometry& g) {
    if (!(g.kernel_h > 0 && g.kernel_w > 0 && g.stride > 0 && g.padding >= 0)) detail::fail("conv2d: bad geometry");
    const int C = x.channels, H = x.height, W = x.width;
    const int Ho = detail::conv_output_size(H, g.kernel_h, g.stride, g.padding);
    const int Wo = detail::conv_output_size(W, g.kernel_w, g.stride, g.padding);
    if (!(Ho > 0 && Wo > 0)) detail::fail("conv2d: kernel larger than the padded input");
    const matrix<T>& xv = t.value(x);
    const matrix<T>& wv = t.value(w);
    const Eigen::Index patch = static_cast<Eigen::Index>(C) * g.kernel_h * g.kernel_w;
    if (wv.cols() != patch)
        detail::fail("conv2d: weight has " + std::to_string(wv.cols()) + " columns, expected C*kh*kw = " + std::to_string(patch));
    const Eigen::Index N = xv.rows();
    const Eigen::Index O = wv.rows();
    const Eigen::Index positions = static_cast<Eigen::Index>(Ho) * Wo;

    auto r = t.template record<conv2d_op<T>>(t.needs_grad(x) || t.needs_grad(w), static_cast<int>(O), Ho, Wo);
    conv2d_op<T>& op = r.op;
    op.x = x;
    op.w = w;
    op.shape = {C, H, W, Ho, Wo, g};
    detail::im2col(xv, op.shape, op.columns);
    op.channel_major.noalias() = wv * op.columns;  // O x (N*Ho*Wo)
    r.value.resize(N, O * positions);
    for (Eigen::Index n = 0; n < N; ++n)
        for (Eigen::Index o = 0; o < O; ++o)
            r.value.row(n).segment(o * positions, positions) = op.channel_major.row(o).segment(n * positions, positions);
    return r.out;
}

// Routes each output's gradient to the input that won its window.
template <class T>
struct max_pool2x2_op {
    var x;
    std::vector<int> argmax;  // per output entry: the winning input column of its row
    void backward(tape<T>& t, const matrix<T>& value, matrix<T>& grad) {
        matrix<T>& dx = t.scatter_grad(x);
        const Eigen::Index per_row = value.cols();
        for (Eigen::Index n = 0; n < grad.rows(); ++n) {
            const int* arg = argmax.data() + n * per_row;
            const T* g = grad.row(n).data();
            T* d = dx.row(n).data();
            for (Eigen::Index o = 0; o < per_row; ++o) d[arg[o]] += g[o];
        }
    }
};

// 2x2 max-pool, stride 2; odd trailing rows/columns are dropped (PyTorch's floor mode).
template <class T>
var max_pool2x2(tape<T>& t, var x) {
    const int C = x.channels, H = x.height, W = x.width;
    const int Ho = H / 2, Wo = W / 2;
    if (!(Ho > 0 && Wo > 0)) detail::fail("max_pool2x2: input smaller than 2x2");
    auto r = t.template record<max_pool2x2_op<T>>(t.needs_grad(x), C, Ho, Wo);
    max_pool2x2_op<T>& op = r.op;
    op.x = x;
    const matrix<T>& xv = t.value(x);
    const Eigen::Index N = xv.rows();
    const Eigen::Index out_features = static_cast<Eigen::Index>(C) * Ho * Wo;
    r.value.resize(N, out_features);
    op.argmax.resize(static_cast<std::size_t>(N * out_features));
    for (Eigen::Index n = 0; n < N; ++n) {
        const T* in = xv.row(n).data();
        T* out = r.value.row(n).data();
        int* arg = op.argmax.data() + n * out_features;
        for (int c = 0; c < C; ++c)
            for (int oy = 0; oy < Ho; ++oy)
                for (int ox = 0; ox < Wo; ++ox) {
                    const int base = (c * H + 2 * oy) * W + 2 * ox;
                    const int cand[4] = {base, base + 1, base + W, base + W + 1};
                    int best = cand[0];
                    for (int k = 1; k < 4; ++k)
                        if (in[cand[k]] > in[best]) best = cand[k];
                    const int o = (c * Ho + oy) * Wo + ox;
                    out[o] = in[best];
                    arg[o] = best;
                }
    }
    return r.out;
}

// Rows are already flat (NCHW): flattening only changes the view, no node is recorded.
template <class T>
var flatten(const tape<T>&, var x) {
    return {x.index, x.features(), 1, 1};
}

}  // namespace grphi::ad
