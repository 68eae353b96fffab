// The tape's core (train/tape.hpp): an op defined here, outside the library, registers its closure
// and gets correct gradients; closures are reused across steps; a repeated training step over every
// op allocates nothing on the heap (beyond fake_quantize's own); the old include path still works.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <doctest/doctest.h>

#include <grphi/train/autodiff.hpp>  // the forwarding header: the pre-train/ include path keeps working
#include <grphi/core/base.hpp>
#include <grphi/core/options.hpp>
#include <grphi/train/tape.hpp>

#include <random>
#include <stdexcept>
#include <vector>

#include "allocation_counter.hpp"

namespace {

namespace ad = grphi::ad;
using ad::matrix;
using ad::parameter;
using ad::tape;
using ad::var;

template <class T>
matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    matrix<T> m(rows, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<T>(dist(gen));
    return m;
}

// A user-defined op, y = x .* x, written against the public tape API only.
struct square_op {
    var x;
    int backward_calls = 0;
    void backward(tape<double>& t, const matrix<double>&, matrix<double>& grad) {
        ++backward_calls;
        t.accumulate(x, (2 * t.value(x).array() * grad.array()).matrix());
    }
};

var square(tape<double>& t, var x) {
    auto r = t.record<square_op>(t.needs_grad(x), x.channels, x.height, x.width);
    r.op.x = x;
    r.op.backward_calls = 0;
    r.value = t.value(x).cwiseProduct(t.value(x));
    return r.out;
}

}  // namespace

TEST_CASE("an op defined outside the library records its value and its backward closure") {
    parameter<double> x(random_matrix<double>(3, 4, 1));
    const matrix<double> head = random_matrix<double>(3, 4, 2);
    tape<double> t;
    const var y = square(t, t.param(x));
    CHECK(t.value(y) == x.value.cwiseProduct(x.value));
    t.backward(ad::weighted_sum(t, y, head));
    REQUIRE(x.has_grad);
    CHECK((x.grad - 2 * x.value.cwiseProduct(head)).cwiseAbs().maxCoeff() < 1e-15);
    REQUIRE(t.closure_of<square_op>(y) != nullptr);
    CHECK(t.closure_of<square_op>(y)->backward_calls == 1);
    CHECK(t.closure_of<ad::relu_op<double>>(y) == nullptr);  // the type is checked
    CHECK(t.grad(y) == head);
}

TEST_CASE("a closure whose inputs need no gradient is recorded but never called") {
    const matrix<double> x = random_matrix<double>(2, 2, 3);
    parameter<double> w(random_matrix<double>(2, 2, 4));
    tape<double> t;
    const var c = square(t, t.constant(x));
    CHECK_FALSE(t.needs_grad(c));
    const var y = ad::matmul(t, c, t.param(w));
    CHECK(t.needs_grad(y));
    t.backward(ad::weighted_sum(t, y, matrix<double>::Ones(2, 2)));
    CHECK(t.closure_of<square_op>(c)->backward_calls == 0);
    CHECK(w.has_grad);
}

TEST_CASE("each op of a type gets the same closure object every step, in order") {
    parameter<double> x(random_matrix<double>(2, 3, 5));
    tape<double> t;
    std::vector<const square_op*> first;
    for (int step = 0; step < 3; ++step) {
        t.clear();
        const var a = square(t, t.param(x));
        const var b = square(t, a);
        const var r = ad::relu(t, b);
        std::vector<const square_op*> now{t.closure_of<square_op>(a), t.closure_of<square_op>(b)};
        CHECK(now[0] != now[1]);
        CHECK(t.closure_of<ad::relu_op<double>>(r) != nullptr);
        if (step == 0)
            first = now;
        else
            CHECK(now == first);
    }
}

TEST_CASE("a cleared tape rejects its old vars") {
    tape<double> t;
    const var a = t.constant(matrix<double>::Ones(2, 2));
    const var b = square(t, a);
    t.clear();
    CHECK(t.size() == 0);
    CHECK_THROWS_AS(t.value(b), std::invalid_argument);
    CHECK_THROWS_AS(t.backward(b), std::invalid_argument);
    CHECK_THROWS_AS(t.needs_grad(a), std::invalid_argument);
}

TEST_CASE_TEMPLATE("a repeated training step allocates nothing on the heap beyond what fake_quantize does", T, float, double) {
    if (!grphi::testing::allocation_counter_available) return;  // sanitizer builds own malloc
    // A small CNN with both STE flavours, so every op (and its scratch) is on the tape.
    parameter<T> k(random_matrix<T>(3, 1 * 3 * 3, 10));
    parameter<T> kb(random_matrix<T>(1, 3, 11));
    parameter<T> w(random_matrix<T>(4, 3 * 3 * 3, 12));
    parameter<T> fb(random_matrix<T>(1, 4, 13));
    const matrix<T> images = random_matrix<T>(5, 1 * 6 * 6, 14);
    const std::vector<int> labels{0, 1, 2, 3, 0};
    const matrix<T> head = matrix<T>::Ones(1, 1);
    grphi::options opts;
    opts.e_min = -8;
    opts.e_max = 2;
    tape<T> t;
    auto step = [&](bool quantized) {
        t.clear();
        for (auto* p : {&k, &kb, &w, &fb}) p->zero_grad();
        const var qk = quantized ? ad::quantize_ste<grphi::phi>(t, t.param(k), opts, {T(1), true}) : t.param(k);
        var h = ad::conv2d(t, t.constant_ref(images, 1, 6, 6), qk, {3, 3, 1, 1});
        h = ad::max_pool2x2(t, ad::relu(t, ad::add_bias(t, h, t.param(kb))));
        const var qw = quantized ? ad::quantize_ste<grphi::two>(t, t.param(w), opts) : t.param(w);
        const var logits = ad::add_bias(t, ad::matmul(t, ad::flatten(t, h), qw), t.param(fb));
        const var loss = ad::softmax_cross_entropy(t, logits, labels);
        t.backward(ad::weighted_sum(t, loss, head));
    };
    auto steady_allocations = [&](bool quantized) {
        step(quantized);  // the first step sizes every buffer
        step(quantized);  // the identity STE swaps gradient buffers: let both of them reach their size
        return grphi::testing::allocations_during([&] {
            for (int i = 0; i < 3; ++i) step(quantized);
        });
    };
    CHECK(steady_allocations(false) == 0);
    // fake_quantize itself allocates (quantize.hpp's business): the tape must add nothing to it.
    // (The same entry point as the op's: fake_quantize's allocations depend on its argument types.)
    matrix<T> out(k.value.rows(), k.value.cols()), clipped(k.value.rows(), k.value.cols());
    matrix<T> out2(w.value.rows(), w.value.cols());
    auto quantize_both = [&] {
        ad::detail::fake_quantize_into<grphi::phi>(k.value, opts, out, &clipped);
        ad::detail::fake_quantize_into<grphi::two>(w.value, opts, out2, static_cast<matrix<T>*>(nullptr));
    };
    quantize_both();
    const long quantizer = grphi::testing::allocations_during([&] {
        for (int i = 0; i < 3; ++i) quantize_both();
    });
    CHECK(steady_allocations(true) <= quantizer);
    CHECK(k.has_grad);
    CHECK(w.has_grad);
}

TEST_CASE("the allocation counter sees both operator new and Eigen's matrices") {
    if (!grphi::testing::allocation_counter_available) return;
    const long vectors = grphi::testing::allocations_during([] {
        std::vector<int> v(100);
        CHECK(v.size() == 100);
    });
    CHECK(vectors >= 1);
    const long matrices = grphi::testing::allocations_during([] {
        matrix<float> m(10, 10);
        m.setZero();
        CHECK(m.sum() == 0.0f);
    });
    CHECK(matrices >= 1);
}
