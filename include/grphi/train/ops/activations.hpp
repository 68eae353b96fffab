// Element-wise activations on the tape.
#pragma once

#include "../tape.hpp"

namespace grphi::ad {

// dx += dy where y > 0 (the output says where the input was positive).
template <class T>
struct relu_op {
    var x;
    void backward(tape<T>& t, const matrix<T>& value, matrix<T>& grad) {
        if (t.needs_grad(x)) t.accumulate(x, (value.array() > T(0)).select(grad, T(0)).matrix());
    }
};

template <class T>
var relu(tape<T>& t, var x) {
    auto r = t.template record<relu_op<T>>(t.needs_grad(x), x.channels, x.height, x.width);
    r.op.x = x;
    r.value.noalias() = t.value(x).cwiseMax(T(0));
    return r.out;
}

}  // namespace grphi::ad
