// SGD and AdamW: single steps against values worked out by hand (PyTorch's update rules).
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's kernels under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <doctest/doctest.h>

#include <grphi/train/optim.hpp>

#include <cmath>
#include <vector>

namespace {

using grphi::ad::matrix;
using grphi::ad::parameter;

template <class T>
parameter<T> scalar_param(double value) {
    parameter<T> p(matrix<T>::Constant(1, 1, static_cast<T>(value)));
    return p;
}

template <class T>
void set_grad(parameter<T>& p, double g) {
    p.grad = matrix<T>::Constant(1, 1, static_cast<T>(g));
    p.has_grad = true;
}

template <class T>
double tolerance() {
    return std::is_same_v<T, float> ? 1e-6 : 1e-13;
}

}  // namespace

TEST_CASE_TEMPLATE("sgd: plain, weight decay, momentum, dampening, nesterov", T, float, double) {
    using grphi::optim::sgd;
    SUBCASE("plain step: p - lr g") {
        auto p = scalar_param<T>(1.0);
        sgd<T> opt({&p}, {0.1});
        set_grad(p, 0.5);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.95).epsilon(tolerance<T>()));
    }
    SUBCASE("L2 weight decay joins the gradient: 1 - 0.1 (0.5 + 0.1 * 1) = 0.94") {
        auto p = scalar_param<T>(1.0);
        sgd<T> opt({&p}, {0.1, 0, 0, 0.1});
        set_grad(p, 0.5);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.94).epsilon(tolerance<T>()));
    }
    SUBCASE("momentum 0.9: buffer = g1, then 0.9 * 0.5 + 0.2 = 0.65") {
        auto p = scalar_param<T>(1.0);
        sgd<T> opt({&p}, {0.1, 0.9});
        set_grad(p, 0.5);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.95).epsilon(tolerance<T>()));
        set_grad(p, 0.2);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.885).epsilon(tolerance<T>()));
    }
    SUBCASE("dampening 0.5 applies from the second step: 0.45 + 0.5 * 0.2 = 0.55") {
        auto p = scalar_param<T>(1.0);
        sgd<T> opt({&p}, {0.1, 0.9, 0.5});
        set_grad(p, 0.5);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.95).epsilon(tolerance<T>()));
        set_grad(p, 0.2);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.895).epsilon(tolerance<T>()));
    }
    SUBCASE("nesterov: step g + mu * buf") {
        auto p = scalar_param<T>(1.0);
        grphi::optim::sgd_options o{0.1, 0.9};
        o.nesterov = true;
        sgd<T> opt({&p}, o);
        set_grad(p, 0.5);
        opt.step();  // 1 - 0.1 * (0.5 + 0.45)
        CHECK(p.value(0, 0) == doctest::Approx(0.905).epsilon(tolerance<T>()));
        set_grad(p, 0.2);
        opt.step();  // buf = 0.65; 0.905 - 0.1 * (0.2 + 0.585)
        CHECK(p.value(0, 0) == doctest::Approx(0.8265).epsilon(tolerance<T>()));
    }
    SUBCASE("a parameter without a gradient is left alone") {
        auto p = scalar_param<T>(1.0);
        auto q = scalar_param<T>(2.0);
        sgd<T> opt({&p, &q}, {0.1, 0.9});
        set_grad(p, 0.5);
        opt.step();
        CHECK(q.value(0, 0) == T(2));
        opt.zero_grad();
        CHECK_FALSE(p.has_grad);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.95).epsilon(tolerance<T>()));
    }
    SUBCASE("bad hyper-parameters throw") {
        auto p = scalar_param<T>(1.0);
        CHECK_THROWS_AS(sgd<T>({&p}, {-0.1}), std::invalid_argument);
        grphi::optim::sgd_options o{0.1, 0.0};
        o.nesterov = true;
        CHECK_THROWS_AS(sgd<T>({&p}, o), std::invalid_argument);
        CHECK_THROWS_AS(sgd<T>({nullptr}, {0.1}), std::invalid_argument);
    }
}

TEST_CASE_TEMPLATE("adamw: bias-corrected steps with decoupled weight decay", T, float, double) {
    using grphi::optim::adamw;
    SUBCASE("PyTorch defaults, two steps") {
        // Step 1, g = 0.5: p = 1 (1 - 1e-5) - 1e-3 * 0.5 / (0.5 + 1e-8) = 0.99899000002 (by hand).
        // Step 2, g = -0.25 (exact decimal arithmetic, 40 digits): 0.99871367308707826...
        auto p = scalar_param<T>(1.0);
        adamw<T> opt({&p});
        CHECK(opt.options().beta1 == 0.9);
        CHECK(opt.options().beta2 == 0.999);
        CHECK(opt.options().eps == 1e-8);
        CHECK(opt.options().weight_decay == 1e-2);
        set_grad(p, 0.5);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.99899000002).epsilon(tolerance<T>()));
        set_grad(p, -0.25);
        opt.step();
        CHECK(p.value(0, 0) == doctest::Approx(0.9987136730870782616).epsilon(tolerance<T>()));
        CHECK(opt.step_count(0) == 2);
    }
    SUBCASE("the first step moves every weight by about lr, whatever the gradient's size") {
        parameter<T> p(matrix<T>::Zero(2, 3));
        adamw<T> opt({&p}, {0.01, 0.9, 0.999, 1e-8, 0.0});
        p.grad.resize(2, 3);
        p.grad << 1e-3, -2, 50, -1e-4, 3, -7;
        p.has_grad = true;
        opt.step();
        for (Eigen::Index i = 0; i < 6; ++i)
            CHECK(p.value.data()[i] == doctest::Approx(-0.01 * (p.grad.data()[i] > 0 ? 1 : -1)).epsilon(1e-4));
    }
    SUBCASE("weight decay alone shrinks by 1 - lr * wd") {
        auto p = scalar_param<T>(2.0);
        adamw<T> opt({&p}, {0.1, 0.9, 0.999, 1e-8, 0.5});
        set_grad(p, 0.0);
        opt.step();  // m = v = 0: only the decay acts
        CHECK(p.value(0, 0) == doctest::Approx(2.0 * (1 - 0.05)).epsilon(tolerance<T>()));
    }
    SUBCASE("parameters without a gradient keep their step count") {
        auto p = scalar_param<T>(1.0);
        auto q = scalar_param<T>(1.0);
        adamw<T> opt({&p, &q});
        set_grad(p, 0.5);
        opt.step();
        CHECK(opt.step_count(0) == 1);
        CHECK(opt.step_count(1) == 0);
        CHECK(q.value(0, 0) == T(1));
    }
    SUBCASE("long tensors (chunked update) match the scalar rule") {
        parameter<T> p(matrix<T>::Constant(3, 1500, T(1)));
        p.grad = matrix<T>::Constant(3, 1500, T(0.5));
        p.has_grad = true;
        adamw<T> opt({&p});
        opt.step();
        CHECK(p.value.minCoeff() == doctest::Approx(0.99899000002).epsilon(tolerance<T>()));
        CHECK(p.value.maxCoeff() == doctest::Approx(0.99899000002).epsilon(tolerance<T>()));
    }
    SUBCASE("bad hyper-parameters throw") {
        auto p = scalar_param<T>(1.0);
        CHECK_THROWS_AS(adamw<T>({&p}, {1e-3, 1.0}), std::invalid_argument);
        CHECK_THROWS_AS(adamw<T>({&p}, {-1e-3}), std::invalid_argument);
    }
}
