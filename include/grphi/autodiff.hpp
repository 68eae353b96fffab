// Tape-based reverse-mode autodiff at Eigen-matrix granularity, enough to train quantized networks.
//
// Ops push a node (value, gradient, backward function, its inputs) on a tape in execution order;
// backward() walks the tape in reverse, Stan-style. Parameters live outside the tape and keep
// their value and gradient across steps. clear() forgets the nodes but keeps their storage, so a
// training step that repeats the same shapes allocates nothing after the first one.
//
// Layout: a batch is a row-major matrix with one sample per row. Image tensors are NCHW with
// C*H*W per row; a var carries its (channels, height, width) view of the row.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <deque>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "options.hpp"
#include "quantize.hpp"

namespace grphi::ad {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A trainable tensor: value and gradient persist across steps; the optimizer reads both.
// has_grad follows PyTorch's zero_grad(set_to_none=True): false means "no gradient", and the
// next backward pass overwrites instead of accumulating (saves a pass that zeroes the buffer).
template <class T>
struct parameter {
    matrix<T> value;
    matrix<T> grad;
    bool has_grad = false;
    bool requires_grad = true;

    parameter() = default;
    explicit parameter(matrix<T> initial) : value(std::move(initial)) {}
    void zero_grad() { has_grad = false; }
    // The gradient as a dense matrix (zeros when there is none), for tests and inspection.
    matrix<T> grad_or_zero() const {
        return has_grad ? grad : matrix<T>::Zero(value.rows(), value.cols());
    }
};

// Handle to a tape node plus the (channels, height, width) view of each row.
struct var {
    std::size_t index = 0;
    int channels = 0;
    int height = 1;
    int width = 1;
    int features() const { return channels * height * width; }
};

// Straight-through estimator settings for the quantize op.
template <class T>
struct ste_options {
    T grad_scale = T(1);         // multiplies the gradient that reaches the latent weight
    bool mask_clipped = false;   // zero the gradient where the exponent window clipped the weight
};

struct conv_geometry {
    int kernel_h = 3;
    int kernel_w = 3;
    int stride = 1;
    int padding = 0;
};

// Signature of a fake-quantizer: out = Q(w); if clipped is non-null it receives the clip mask.
template <class T>
using fake_quantize_fn = void (*)(const matrix<T>& w, const grphi::options& opts, matrix<T>& out,
                                  matrix<T>* clipped);

namespace detail {
template <class Base, class T>
void fake_quantize_into(const matrix<T>& w, const grphi::options& opts, matrix<T>& out, matrix<T>* clipped) {
    out.resize(w.rows(), w.cols());
    if (clipped) {
        clipped->resize(w.rows(), w.cols());
        grphi::fake_quantize<Base>(w, opts, out, *clipped);
    } else {
        grphi::fake_quantize<Base>(w, opts, out);
    }
}

inline int conv_output_size(int in, int kernel, int stride, int padding) {
    return (in + 2 * padding - kernel) / stride + 1;
}
}  // namespace detail

template <class T>
class tape {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "grphi::ad: scalar must be float or double");

public:
    using matrix_type = matrix<T>;

    // Forget every node; storage (vectors, matrices) is kept for the next step.
    void clear() { used_ = 0; }
    std::size_t size() const { return used_; }

    // ---- leaves -------------------------------------------------------------------------------
    // A trainable parameter, read in place (no copy); gradients accumulate into p.grad.
    var param(parameter<T>& p, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(nullptr, p.requires_grad);
        node& n = nodes_[i];
        n.external_value = &p.value;
        n.param = &p;
        return make_var(i, p.value, channels, height, width);
    }

    // A constant input (copied): no gradient is ever computed for it.
    template <class Derived>
    var constant(const Eigen::MatrixBase<Derived>& x, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(nullptr, false);
        node& n = nodes_[i];
        n.value = x;
        return make_var(i, n.value, channels, height, width);
    }

    // A constant read in place (no copy); x must stay alive and unchanged until the tape is cleared.
    var constant_ref(const matrix_type& x, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(nullptr, false);
        nodes_[i].external_value = &x;
        return make_var(i, x, channels, height, width);
    }

    // ---- ops ----------------------------------------------------------------------------------
    // y = x * W^T, W stored out x in (PyTorch's Linear layout).
    var matmul(var x, var w) {
        check(value(x).cols() == value(w).cols(), "matmul: x has " + std::to_string(value(x).cols()) +
                                                      " columns but W has " + std::to_string(value(w).cols()));
        const std::size_t i = push(&tape::matmul_backward, needs(x) || needs(w));
        node& n = nodes_[i];
        n.in0 = x.index;
        n.in1 = w.index;
        n.value.noalias() = value(x) * value(w).transpose();
        return {i, static_cast<int>(n.value.cols()), 1, 1};
    }

    // y = x + b: b (1 x F) per feature for flat inputs, (1 x C) per channel for image tensors.
    var add_bias(var x, var b) {
        const auto& xv = value(x);
        const bool per_channel = x.height * x.width > 1;
        const Eigen::Index expected = per_channel ? x.channels : xv.cols();
        check(value(b).size() == expected, "add_bias: bias has " + std::to_string(value(b).size()) +
                                               " entries, expected " + std::to_string(expected));
        const std::size_t i = push(&tape::add_bias_backward, needs(x) || needs(b));
        node& n = nodes_[i];
        n.in0 = x.index;
        n.in1 = b.index;
        n.geometry[0] = per_channel ? x.channels : 0;
        n.geometry[1] = x.height * x.width;
        n.value = value(x);
        const auto& bv = value(b);
        if (!per_channel) {
            n.value.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bv.data(), bv.size());
        } else {
            const Eigen::Index plane = x.height * x.width;
            for (Eigen::Index r = 0; r < n.value.rows(); ++r)
                for (int c = 0; c < x.channels; ++c)
                    n.value.row(r).segment(c * plane, plane).array() += bv.data()[c];
        }
        return {i, x.channels, x.height, x.width};
    }

    var relu(var x) {
        const std::size_t i = push(&tape::relu_backward, needs(x));
        node& n = nodes_[i];
        n.in0 = x.index;
        n.value.noalias() = value(x).cwiseMax(T(0));
        return {i, x.channels, x.height, x.width};
    }

    // 2-D convolution (cross-correlation, like PyTorch): x is N x (C*H*W), w is O x (C*kh*kw).
    // im2col into a (C*kh*kw) x (N*Ho*Wo) matrix, one GEMM, then scatter to NCHW rows.
    var conv2d(var x, var w, const conv_geometry& g) {
        check(g.kernel_h > 0 && g.kernel_w > 0 && g.stride > 0 && g.padding >= 0, "conv2d: bad geometry");
        const int C = x.channels, H = x.height, W = x.width;
        const int Ho = detail::conv_output_size(H, g.kernel_h, g.stride, g.padding);
        const int Wo = detail::conv_output_size(W, g.kernel_w, g.stride, g.padding);
        check(Ho > 0 && Wo > 0, "conv2d: kernel larger than the padded input");
        const Eigen::Index patch = static_cast<Eigen::Index>(C) * g.kernel_h * g.kernel_w;
        check(value(w).cols() == patch, "conv2d: weight has " + std::to_string(value(w).cols()) +
                                            " columns, expected C*kh*kw = " + std::to_string(patch));
        const Eigen::Index N = value(x).rows();
        const Eigen::Index O = value(w).rows();
        const Eigen::Index positions = static_cast<Eigen::Index>(Ho) * Wo;

        const std::size_t i = push(&tape::conv2d_backward, needs(x) || needs(w));
        node& n = nodes_[i];
        n.in0 = x.index;
        n.in1 = w.index;
        n.geometry = {C, H, W, Ho, Wo, g.kernel_h, g.kernel_w, g.stride, g.padding};

        im2col(value(x), n.geometry, n.scratch);
        n.scratch2.noalias() = value(w) * n.scratch;  // O x (N*Ho*Wo)
        n.value.resize(N, O * positions);
        for (Eigen::Index s = 0; s < N; ++s)
            for (Eigen::Index o = 0; o < O; ++o)
                n.value.row(s).segment(o * positions, positions) = n.scratch2.row(o).segment(s * positions, positions);
        return {i, static_cast<int>(O), Ho, Wo};
    }

    // 2x2 max-pool, stride 2; odd trailing rows/columns are dropped (PyTorch's floor mode).
    var max_pool2x2(var x) {
        const int C = x.channels, H = x.height, W = x.width;
        const int Ho = H / 2, Wo = W / 2;
        check(Ho > 0 && Wo > 0, "max_pool2x2: input smaller than 2x2");
        const std::size_t i = push(&tape::max_pool_backward, needs(x));
        node& n = nodes_[i];
        n.in0 = x.index;
        const auto& xv = value(x);
        const Eigen::Index N = xv.rows();
        const Eigen::Index out_features = static_cast<Eigen::Index>(C) * Ho * Wo;
        n.value.resize(N, out_features);
        n.indices.resize(static_cast<std::size_t>(N * out_features));
        for (Eigen::Index s = 0; s < N; ++s) {
            const T* in = xv.row(s).data();
            T* out = n.value.row(s).data();
            int* arg = n.indices.data() + s * out_features;
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
        return {i, C, Ho, Wo};
    }

    // Rows are already flat (NCHW): flattening only changes the view, no node is needed.
    var flatten(var x) const { return {x.index, x.features(), 1, 1}; }

    // Mean over the batch of -log softmax(logits)[label]; a 1x1 result.
    template <class Labels>
    var softmax_cross_entropy(var logits, const Labels& labels) {
        const auto& z = value(logits);
        const Eigen::Index N = z.rows(), K = z.cols();
        check(static_cast<Eigen::Index>(labels.size()) == N,
              "softmax_cross_entropy: " + std::to_string(labels.size()) + " labels for " + std::to_string(N) + " rows");
        check(N > 0 && K > 0, "softmax_cross_entropy: empty logits");
        const std::size_t i = push(&tape::softmax_cross_entropy_backward, needs(logits));
        node& n = nodes_[i];
        n.in0 = logits.index;
        n.indices.resize(static_cast<std::size_t>(N));
        n.scratch.resize(N, K);
        double total = 0;
        for (Eigen::Index r = 0; r < N; ++r) {
            const auto label = static_cast<long long>(labels[static_cast<std::size_t>(r)]);
            if (label < 0 || label >= K)
                throw std::out_of_range("grphi::ad::softmax_cross_entropy: label " + std::to_string(label) +
                                        " of row " + std::to_string(r) + " is outside [0, " + std::to_string(K) + ")");
            n.indices[static_cast<std::size_t>(r)] = static_cast<int>(label);
            const T top = z.row(r).maxCoeff();
            n.scratch.row(r) = (z.row(r).array() - top).exp().matrix();
            const T sum = n.scratch.row(r).sum();
            n.scratch.row(r) /= sum;
            total += static_cast<double>(std::log(sum) - (z(r, label) - top));
        }
        n.value.resize(1, 1);
        n.value(0, 0) = static_cast<T>(total / static_cast<double>(N));
        return {i, 1, 1, 1};
    }

    // sum(x .* weights) with constant weights: a scalar head for tests and custom losses.
    template <class Derived>
    var weighted_sum(var x, const Eigen::MatrixBase<Derived>& weights) {
        check(weights.rows() == value(x).rows() && weights.cols() == value(x).cols(), "weighted_sum: shape mismatch");
        const std::size_t i = push(&tape::weighted_sum_backward, needs(x));
        node& n = nodes_[i];
        n.in0 = x.index;
        n.scratch = weights;
        n.value.resize(1, 1);
        n.value(0, 0) = value(x).cwiseProduct(n.scratch).sum();
        return {i, 1, 1, 1};
    }

    // STE quantize: forward = fake_quantize<Base>(w); backward = identity into w, times
    // grad_scale, zeroed where the weight was clipped (if mask_clipped).
    template <class Base>
    var quantize_ste(var w, const grphi::options& opts, const ste_options<T>& ste = {}) {
        return quantize_ste(w, &detail::fake_quantize_into<Base, T>, opts, ste);
    }

    var quantize_ste(var w, fake_quantize_fn<T> quantizer, const grphi::options& opts, const ste_options<T>& ste = {}) {
        const std::size_t i = push(&tape::quantize_ste_backward, needs(w));
        node& n = nodes_[i];
        n.in0 = w.index;
        n.scale = ste.grad_scale;
        n.geometry[0] = ste.mask_clipped ? 1 : 0;
        quantizer(value_of(w.index), opts, n.value, ste.mask_clipped ? &n.scratch : nullptr);
        return {i, w.channels, w.height, w.width};
    }

    // ---- backward -----------------------------------------------------------------------------
    // Seeds d(root)/d(root) = 1 (root must be 1x1) and walks the tape in reverse.
    void backward(var root) {
        check(root.index < used_, "backward: stale var");
        node& r = nodes_[root.index];
        check(r.value_ref().size() == 1, "backward: root must be a scalar (1x1)");
        for (std::size_t k = 0; k < used_; ++k) nodes_[k].grad_set = false;
        if (!r.needs_grad) return;
        accumulate(root.index, matrix_type::Ones(1, 1));
        for (std::size_t k = root.index + 1; k-- > 0;) {
            node& n = nodes_[k];
            if (n.backward && n.grad_set) n.backward(*this, k);
        }
    }

    // ---- access -------------------------------------------------------------------------------
    const matrix_type& value(var v) const { return value_of(v.index); }
    // conv2d's patch matrix, for kernels that run the product themselves (nn's eval from codes);
    // geometry = {C, H, W, Ho, Wo, kh, kw, stride, padding}.
    static void patches(const matrix_type& x, const std::array<int, 9>& geometry, matrix_type& cols) { im2col(x, geometry, cols); }
    // Gradient of a non-parameter node after backward(); parameters keep theirs in p.grad.
    const matrix_type& grad(var v) const {
        const node& n = nodes_.at(v.index);
        check(n.param == nullptr, "grad: a parameter's gradient is in parameter::grad");
        check(n.grad_set, "grad: node received no gradient");
        return n.grad;
    }
    // The clip mask of a quantize_ste node made with mask_clipped (1 = clipped).
    const matrix_type& clipped_mask(var v) const {
        const node& n = nodes_.at(v.index);
        check(n.backward == &tape::quantize_ste_backward && n.geometry[0] == 1, "clipped_mask: not a masked quantize_ste node");
        return n.scratch;
    }

private:
    using backward_fn = void (*)(tape&, std::size_t);

    struct node {
        matrix_type value;
        matrix_type grad;
        matrix_type scratch;   // op-specific: im2col columns, softmax probabilities, clip mask
        matrix_type scratch2;  // op-specific: GEMM output/gradient in channel-major layout
        matrix_type scratch3;  // op-specific: im2col column gradient
        std::vector<int> indices;  // op-specific: max-pool argmax, labels
        const matrix_type* external_value = nullptr;  // parameter leaves read the parameter in place
        parameter<T>* param = nullptr;
        backward_fn backward = nullptr;
        std::size_t in0 = 0, in1 = 0;
        std::array<int, 9> geometry{};
        T scale = T(1);
        bool needs_grad = false;
        bool grad_set = false;

        const matrix_type& value_ref() const { return external_value ? *external_value : value; }
    };

    std::deque<node> nodes_;  // a deque: pushing never moves nodes, so references to values stay valid
    std::size_t used_ = 0;

    static void check(bool ok, const std::string& what) {
        if (!ok) throw std::invalid_argument("grphi::ad::" + what);
    }

    std::size_t push(backward_fn fn, bool needs_grad) {
        if (used_ == nodes_.size()) nodes_.emplace_back();
        node& n = nodes_[used_];
        n.external_value = nullptr;
        n.param = nullptr;
        n.backward = needs_grad ? fn : nullptr;
        n.needs_grad = needs_grad;
        n.grad_set = false;
        n.geometry.fill(0);
        n.scale = T(1);
        return used_++;
    }

    var make_var(std::size_t i, const matrix_type& v, int channels, int height, int width) const {
        if (channels < 0) return {i, static_cast<int>(v.cols()), 1, 1};
        check(static_cast<Eigen::Index>(channels) * height * width == v.cols(),
              "leaf: view " + std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width) +
                  " does not match " + std::to_string(v.cols()) + " columns");
        return {i, channels, height, width};
    }

    bool needs(var v) const { return nodes_[v.index].needs_grad; }
    const matrix_type& value_of(std::size_t i) const {
        check(i < used_, "stale var (tape was cleared)");
        return nodes_[i].value_ref();
    }

    // Adds expr into node i's gradient: the first contribution assigns (no zeroing pass).
    template <class Expr>
    void accumulate(std::size_t i, const Expr& expr) {
        node& n = nodes_[i];
        if (n.param) {
            parameter<T>& p = *n.param;
            if (!p.has_grad) {
                p.grad.noalias() = expr;
                p.has_grad = true;
            } else {
                p.grad.noalias() += expr;
            }
        } else if (!n.grad_set) {
            n.grad.noalias() = expr;
            n.grad_set = true;
        } else {
            n.grad.noalias() += expr;
        }
    }

    // Node i's gradient, zeroed if nothing was accumulated yet, for scatter-style accumulation.
    matrix_type& gradient_for_scatter(std::size_t i) {
        node& n = nodes_[i];
        const matrix_type& v = n.value_ref();
        if (n.param) {
            parameter<T>& p = *n.param;
            if (!p.has_grad) {
                p.grad.setZero(v.rows(), v.cols());
                p.has_grad = true;
            }
            return p.grad;
        }
        if (!n.grad_set) {
            n.grad.setZero(v.rows(), v.cols());
            n.grad_set = true;
        }
        return n.grad;
    }

    static void matmul_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        const matrix_type& g = n.grad;
        if (t.nodes_[n.in0].needs_grad) t.accumulate(n.in0, g * t.value_of(n.in1));
        if (t.nodes_[n.in1].needs_grad) t.accumulate(n.in1, g.transpose() * t.value_of(n.in0));
    }

    static void add_bias_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        const matrix_type& g = n.grad;
        if (t.nodes_[n.in0].needs_grad) t.accumulate(n.in0, g);
        if (!t.nodes_[n.in1].needs_grad) return;
        const int channels = n.geometry[0];
        if (channels == 0) {
            // Column sums land in the bias's own shape (1 x F or F x 1).
            if (t.value_of(n.in1).rows() == 1)
                t.accumulate(n.in1, g.colwise().sum());
            else
                t.accumulate(n.in1, g.colwise().sum().transpose());
        } else {
            const Eigen::Index plane = n.geometry[1];
            matrix_type& db = t.gradient_for_scatter(n.in1);
            for (int c = 0; c < channels; ++c)
                db.data()[c] += g.middleCols(c * plane, plane).sum();
        }
    }

    static void relu_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        if (!t.nodes_[n.in0].needs_grad) return;
        t.accumulate(n.in0, (n.value.array() > T(0)).select(n.grad, T(0)).matrix());
    }

    // geometry = {C, H, W, Ho, Wo, kh, kw, stride, padding}
    static void im2col(const matrix_type& x, const std::array<int, 9>& geo, matrix_type& cols) {
        const int C = geo[0], H = geo[1], W = geo[2], Ho = geo[3], Wo = geo[4], kh = geo[5], kw = geo[6];
        const int stride = geo[7], pad = geo[8];
        const Eigen::Index N = x.rows();
        const Eigen::Index positions = static_cast<Eigen::Index>(Ho) * Wo;
        cols.resize(static_cast<Eigen::Index>(C) * kh * kw, N * positions);
        for (Eigen::Index s = 0; s < N; ++s) {
            const T* img = x.row(s).data();
            for (int c = 0; c < C; ++c)
                for (int ky = 0; ky < kh; ++ky)
                    for (int kx = 0; kx < kw; ++kx) {
                        T* dst = cols.row((c * kh + ky) * kw + kx).data() + s * positions;
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

    static void col2im_add(const matrix_type& cols, const std::array<int, 9>& geo, matrix_type& dx) {
        const int C = geo[0], H = geo[1], W = geo[2], Ho = geo[3], Wo = geo[4], kh = geo[5], kw = geo[6];
        const int stride = geo[7], pad = geo[8];
        const Eigen::Index positions = static_cast<Eigen::Index>(Ho) * Wo;
        for (Eigen::Index s = 0; s < dx.rows(); ++s) {
            T* img = dx.row(s).data();
            for (int c = 0; c < C; ++c)
                for (int ky = 0; ky < kh; ++ky)
                    for (int kx = 0; kx < kw; ++kx) {
                        const T* src = cols.row((c * kh + ky) * kw + kx).data() + s * positions;
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

    static void conv2d_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        const Eigen::Index N = n.grad.rows();
        const Eigen::Index O = t.value_of(n.in1).rows();
        const Eigen::Index positions = static_cast<Eigen::Index>(n.geometry[3]) * n.geometry[4];
        // Gather the NCHW gradient into the channel-major GEMM layout, O x (N*Ho*Wo).
        n.scratch2.resize(O, N * positions);
        for (Eigen::Index s = 0; s < N; ++s)
            for (Eigen::Index o = 0; o < O; ++o)
                n.scratch2.row(o).segment(s * positions, positions) = n.grad.row(s).segment(o * positions, positions);
        if (t.nodes_[n.in1].needs_grad) t.accumulate(n.in1, n.scratch2 * n.scratch.transpose());
        if (t.nodes_[n.in0].needs_grad) {
            // Own buffer for the column gradient: the columns stay valid for a second backward().
            n.scratch3.noalias() = t.value_of(n.in1).transpose() * n.scratch2;
            col2im_add(n.scratch3, n.geometry, t.gradient_for_scatter(n.in0));
        }
    }

    static void max_pool_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        matrix_type& dx = t.gradient_for_scatter(n.in0);
        const Eigen::Index per_row = n.value.cols();
        for (Eigen::Index s = 0; s < n.grad.rows(); ++s) {
            const int* arg = n.indices.data() + s * per_row;
            const T* g = n.grad.row(s).data();
            T* d = dx.row(s).data();
            for (Eigen::Index o = 0; o < per_row; ++o) d[arg[o]] += g[o];
        }
    }

    static void softmax_cross_entropy_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        const T g = n.grad(0, 0) / static_cast<T>(n.scratch.rows());
        // d/dz mean CE = (softmax - onehot) / N; the probabilities stay intact for a second backward.
        n.scratch2 = n.scratch;
        for (Eigen::Index r = 0; r < n.scratch2.rows(); ++r) n.scratch2(r, n.indices[static_cast<std::size_t>(r)]) -= T(1);
        n.scratch2 *= g;
        t.accumulate(n.in0, n.scratch2);
    }

    static void weighted_sum_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        t.accumulate(n.in0, n.scratch * n.grad(0, 0));
    }

    static void quantize_ste_backward(tape& t, std::size_t i) {
        node& n = t.nodes_[i];
        node& w = t.nodes_[n.in0];
        const bool masked = n.geometry[0] == 1;
        if (!masked && n.scale == T(1) && w.param && !w.param->has_grad &&
            w.param->value.rows() == n.grad.rows() && w.param->value.cols() == n.grad.cols()) {
            // Identity STE into an empty parameter gradient: hand over the buffer instead of copying.
            n.grad.swap(w.param->grad);
            w.param->has_grad = true;
            return;
        }
        if (masked)
            t.accumulate(n.in0, ((T(1) - n.scratch.array()) * n.grad.array() * n.scale).matrix());
        else
            t.accumulate(n.in0, n.grad * n.scale);
    }
};

}  // namespace grphi::ad
