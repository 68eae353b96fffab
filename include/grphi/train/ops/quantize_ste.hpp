// The straight-through-estimator quantize op: forward = fake_quantize(w), backward = identity into
// w, scaled, and optionally zeroed where the exponent window clipped the weight.
#pragma once

#include <Eigen/Core>

#include "../../core/options.hpp"
#include "../../core/quantize.hpp"
#include "../tape.hpp"

namespace grphi::ad {

// Straight-through estimator settings for the quantize op.
template <class T>
struct ste_options {
    T grad_scale = T(1);        // multiplies the gradient that reaches the latent weight
    bool mask_clipped = false;  // zero the gradient where the exponent window clipped the weight
};

// Signature of a fake-quantizer: out = Q(w); if clipped is non-null it receives the clip mask.
template <class T>
using fake_quantize_fn = void (*)(const matrix<T>& w, const grphi::options& opts, matrix<T>& out, matrix<T>* clipped);

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
}  // namespace detail

template <class T>
struct quantize_ste_op {
    var w;
    T grad_scale = T(1);
    bool masked = false;
    matrix<T> clipped;  // 1 where the window clipped the weight (mask_clipped only)

    void backward(tape<T>& t, const matrix<T>&, matrix<T>& grad) {
        if (masked)
            t.accumulate(w, ((T(1) - clipped.array()) * grad.array() * grad_scale).matrix());
        else if (grad_scale == T(1))
            t.accumulate_by_swap(w, grad);  // the identity STE: hand the buffer over, no copy
        else
            t.accumulate(w, grad * grad_scale);
    }
};

// STE quantize with a run-time quantizer (grphi::nn::weight_quantizer holds one per base).
template <class T>
var quantize_ste(tape<T>& t, var w, fake_quantize_fn<T> quantizer, const grphi::options& opts, const ste_options<T>& ste = {}) {
    auto r = t.template record<quantize_ste_op<T>>(t.needs_grad(w), w.channels, w.height, w.width);
    quantize_ste_op<T>& op = r.op;
    op.w = w;
    op.grad_scale = ste.grad_scale;
    op.masked = ste.mask_clipped;
    quantizer(t.value(w), opts, r.value, ste.mask_clipped ? &op.clipped : nullptr);
    return r.out;
}

// STE quantize: forward = fake_quantize<Base>(w); backward = identity into w, times grad_scale,
// zeroed where the weight was clipped (if mask_clipped).
template <class Base, class T>
var quantize_ste(tape<T>& t, var w, const grphi::options& opts, const ste_options<T>& ste = {}) {
    return quantize_ste(t, w, &detail::fake_quantize_into<Base, T>, opts, ste);
}

// The clip mask of a quantize_ste node made with mask_clipped (1 = clipped).
template <class T>
const matrix<T>& clipped_mask(const tape<T>& t, var q) {
    const quantize_ste_op<T>* op = t.template closure_of<quantize_ste_op<T>>(q);
    if (!op || !op->masked) detail::fail("clipped_mask: not a masked quantize_ste node");
    return op->clipped;
}

}  // namespace grphi::ad
