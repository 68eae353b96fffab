// Optimizers with PyTorch's update rules: SGD (momentum, dampening, Nesterov, L2 weight decay)
// and AdamW (bias-corrected moments, decoupled weight decay).
//
// Both update the parameters they were given, in order; a parameter without a gradient
// (has_grad == false, PyTorch's grad is None) is skipped and its step count does not advance.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "autodiff.hpp"

namespace grphi::optim {

template <class T>
using parameter_list = std::vector<ad::parameter<T>*>;

namespace detail {
template <class T>
void check_parameters(const parameter_list<T>& params, const char* who) {
    for (std::size_t i = 0; i < params.size(); ++i)
        if (params[i] == nullptr)
            throw std::invalid_argument(std::string("grphi::optim::") + who + ": parameter " + std::to_string(i) + " is null");
}
inline void check_hyper(bool ok, const char* who, const char* name, double value) {
    if (!ok)
        throw std::invalid_argument(std::string("grphi::optim::") + who + ": invalid " + name + "=" + std::to_string(value));
}
}  // namespace detail

struct sgd_options {
    double lr = 1e-2;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;  // L2: added to the gradient, as torch.optim.SGD does
    bool nesterov = false;
};

template <class T>
class sgd {
public:
    sgd(parameter_list<T> params, const sgd_options& opts) : params_(std::move(params)), opts_(opts) {
        detail::check_parameters(params_, "sgd");
        detail::check_hyper(opts.lr >= 0, "sgd", "lr", opts.lr);
        detail::check_hyper(opts.momentum >= 0, "sgd", "momentum", opts.momentum);
        detail::check_hyper(opts.weight_decay >= 0, "sgd", "weight_decay", opts.weight_decay);
        detail::check_hyper(!opts.nesterov || (opts.momentum > 0 && opts.dampening == 0), "sgd",
                            "nesterov (needs momentum > 0 and dampening 0), momentum", opts.momentum);
        momentum_buffers_.resize(params_.size());
        has_buffer_.assign(params_.size(), false);
    }

    void step() {
        const T lr = static_cast<T>(opts_.lr), mu = static_cast<T>(opts_.momentum);
        const T damp = static_cast<T>(1 - opts_.dampening), wd = static_cast<T>(opts_.weight_decay);
        for (std::size_t i = 0; i < params_.size(); ++i) {
            ad::parameter<T>& p = *params_[i];
            if (!p.has_grad) continue;
            direction_ = p.grad;
            if (wd != T(0)) direction_ += wd * p.value;
            if (mu != T(0)) {
                ad::matrix<T>& buf = momentum_buffers_[i];
                if (!has_buffer_[i]) {
                    buf = direction_;  // PyTorch: the first step copies the gradient, no dampening
                    has_buffer_[i] = true;
                } else {
                    buf = mu * buf + damp * direction_;
                }
                if (opts_.nesterov)
                    direction_ += mu * buf;
                else
                    direction_ = buf;
            }
            p.value -= lr * direction_;
        }
    }

    void zero_grad() {
        for (auto* p : params_) p->zero_grad();
    }
    void set_lr(double lr) { opts_.lr = lr; }
    const sgd_options& options() const { return opts_; }

private:
    parameter_list<T> params_;
    sgd_options opts_;
    std::vector<ad::matrix<T>> momentum_buffers_;
    std::vector<bool> has_buffer_;
    ad::matrix<T> direction_;  // reused across parameters and steps
};

struct adamw_options {
    double lr = 1e-3;
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 1e-2;  // decoupled: p *= 1 - lr * weight_decay before the Adam update
};

template <class T>
class adamw {
public:
    adamw(parameter_list<T> params, const adamw_options& opts = {}) : params_(std::move(params)), opts_(opts) {
        detail::check_parameters(params_, "adamw");
        detail::check_hyper(opts.lr >= 0, "adamw", "lr", opts.lr);
        detail::check_hyper(opts.beta1 >= 0 && opts.beta1 < 1, "adamw", "beta1", opts.beta1);
        detail::check_hyper(opts.beta2 >= 0 && opts.beta2 < 1, "adamw", "beta2", opts.beta2);
        detail::check_hyper(opts.eps >= 0, "adamw", "eps", opts.eps);
        detail::check_hyper(opts.weight_decay >= 0, "adamw", "weight_decay", opts.weight_decay);
        state_.resize(params_.size());
    }

    void step() {
        for (std::size_t i = 0; i < params_.size(); ++i) {
            ad::parameter<T>& p = *params_[i];
            if (!p.has_grad) continue;
            moments& s = state_[i];
            if (s.step == 0) {
                s.m.setZero(p.value.rows(), p.value.cols());
                s.v.setZero(p.value.rows(), p.value.cols());
            }
            ++s.step;
            // Bias corrections in double, like PyTorch's Python-float arithmetic.
            const double correction1 = 1 - std::pow(opts_.beta1, static_cast<double>(s.step));
            const double correction2_sqrt = std::sqrt(1 - std::pow(opts_.beta2, static_cast<double>(s.step)));
            const T decay = static_cast<T>(1 - opts_.lr * opts_.weight_decay);
            const T step_size = static_cast<T>(opts_.lr / correction1);
            const T b1 = static_cast<T>(opts_.beta1), b2 = static_cast<T>(opts_.beta2);
            // sqrt(v) / sqrt(1 - beta2^t) as a product: one division per weight instead of two.
            const T eps = static_cast<T>(opts_.eps), inv_c2 = static_cast<T>(1.0 / correction2_sqrt);
            // Three vectorized passes per L1-sized chunk: memory is streamed once, not three times.
            const Eigen::Index total = p.value.size();
            constexpr Eigen::Index chunk = 1024;
            for (Eigen::Index start = 0; start < total; start += chunk) {
                const Eigen::Index n = std::min(chunk, total - start);
                Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> g(p.grad.data() + start, n);
                Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> w(p.value.data() + start, n);
                Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> m(s.m.data() + start, n);
                Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> v(s.v.data() + start, n);
                m = b1 * m + (T(1) - b1) * g;
                v = b2 * v + (T(1) - b2) * g.square();
                w = w * decay - step_size * m / (v.sqrt() * inv_c2 + eps);
            }
        }
    }

    void zero_grad() {
        for (auto* p : params_) p->zero_grad();
    }
    void set_lr(double lr) { opts_.lr = lr; }
    const adamw_options& options() const { return opts_; }
    // Steps taken by parameter i (0 before its first gradient).
    long step_count(std::size_t i) const { return state_.at(i).step; }

private:
    struct moments {
        ad::matrix<T> m, v;
        long step = 0;
    };
    parameter_list<T> params_;
    adamw_options opts_;
    std::vector<moments> state_;
};

}  // namespace grphi::optim
