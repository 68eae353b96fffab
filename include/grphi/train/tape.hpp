// The core of grphi's reverse-mode autodiff at Eigen-matrix granularity: a tape of values,
// gradients and backward closures. It knows leaves (parameters, constants) and no op by name.
//
// An op is a free function (train/ops/*.hpp) that records its output with tape::record<Op>(),
// computes the value, and leaves its inputs and scratch in the returned Op object: its closure.
// Op is a default-constructible struct with
//     void backward(tape<T>& t, const matrix<T>& value, matrix<T>& grad);
// that adds into its inputs' gradients (t.accumulate, t.scatter_grad); backward() walks the tape
// in reverse and calls it on every node that received a gradient (Stan's reverse_pass_callback,
// micrograd's _backward). Adding an op edits no file here.
//
// Storage: the tape keeps one pool of closures per Op type and hands the k-th op of a type the same
// object every step, so an op's scratch matrices keep their capacity; clear() resets the pools and
// the nodes without freeing them, and a step that repeats the same shapes allocates nothing.
// An Op must therefore (re)set every field it reads: it receives last step's object as it was.
//
// Layout: a batch is a row-major matrix with one sample per row. Image tensors are NCHW with
// C*H*W per row; a var carries its (channels, height, width) view of the row.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

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

namespace detail {
// Ops check their arguments with this; the message is built only on failure (no per-step strings).
[[noreturn]] inline void fail(const std::string& what) { throw std::invalid_argument("grphi::ad::" + what); }

// One address per closure type: the key of its pool (no global counter, no RTTI).
template <class Op>
struct closure_key {
    static constexpr char tag = 0;
};
}  // namespace detail

template <class T>
class tape {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "grphi::ad: scalar must be float or double");

public:
    using matrix_type = matrix<T>;
    using scalar = T;

    tape() = default;
    tape(const tape&) = delete;
    tape& operator=(const tape&) = delete;
    tape(tape&&) = default;
    tape& operator=(tape&&) = default;

    // Forget every node; storage (nodes, closures and their matrices) is kept for the next step.
    void clear() {
        used_ = 0;
        for (auto& p : pools_) p.pool->used = 0;
    }
    std::size_t size() const { return used_; }

    // ---- leaves -------------------------------------------------------------------------------
    // A trainable parameter, read in place (no copy); gradients accumulate into p.grad.
    var param(parameter<T>& p, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(p.requires_grad);
        node& n = nodes_[i];
        n.external_value = &p.value;
        n.param = &p;
        return make_leaf(i, p.value, channels, height, width);
    }

    // A constant input (copied): no gradient is ever computed for it.
    template <class Derived>
    var constant(const Eigen::MatrixBase<Derived>& x, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(false);
        node& n = nodes_[i];
        n.value = x;
        return make_leaf(i, n.value, channels, height, width);
    }

    // A constant read in place (no copy); x must stay alive and unchanged until the tape is cleared.
    var constant_ref(const matrix_type& x, int channels = -1, int height = 1, int width = 1) {
        const std::size_t i = push(false);
        nodes_[i].external_value = &x;
        return make_leaf(i, x, channels, height, width);
    }

    // ---- recording ops (for op authors) -------------------------------------------------------
    // What record() hands an op: the output var, the buffer its value goes into, and its closure.
    template <class Op>
    struct recorded {
        var out;
        matrix_type& value;
        Op& op;
    };

    // Pushes an output node with the given view; its closure's backward() runs in the reverse pass
    // if needs_grad (pass "any input needs a gradient"). The closure is last step's Op of the same
    // rank, or a new one the first time.
    template <class Op>
    recorded<Op> record(bool needs_grad, int channels, int height = 1, int width = 1) {
        static_assert(std::is_default_constructible_v<Op>, "grphi::ad::tape::record: an op closure must be default-constructible");
        Op& op = pool_for<Op>().next();
        const std::size_t i = push(needs_grad);
        node& n = nodes_[i];
        n.closure = &op;
        n.key = &detail::closure_key<Op>::tag;
        n.backward = needs_grad ? &tape::call_backward<Op> : nullptr;
        return {var{i, channels, height, width}, n.value, op};
    }

    // The closure of node v if it was recorded as an Op (nullptr otherwise): op-specific inspection.
    template <class Op>
    const Op* closure_of(var v) const {
        const node& n = node_at(v.index);
        return n.key == &detail::closure_key<Op>::tag ? static_cast<const Op*>(n.closure) : nullptr;
    }

    // Whether a gradient flows into v (it is a trainable parameter or depends on one).
    bool needs_grad(var v) const { return node_at(v.index).needs_grad; }

    // Adds expr into v's gradient: the first contribution assigns (no zeroing pass).
    template <class Expr>
    void accumulate(var v, const Expr& expr) {
        node& n = nodes_[v.index];
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

    // Like accumulate(v, g), but a parameter with no gradient yet takes g's buffer instead of a copy
    // (g receives the parameter's old buffer): for identity-like backward passes.
    void accumulate_by_swap(var v, matrix_type& g) {
        node& n = nodes_[v.index];
        if (n.param && !n.param->has_grad && n.param->value.rows() == g.rows() && n.param->value.cols() == g.cols()) {
            g.swap(n.param->grad);
            n.param->has_grad = true;
            return;
        }
        accumulate(v, g);
    }

    // v's gradient, zeroed if nothing was accumulated yet, for scatter-style (+= by index) backward passes.
    matrix_type& scatter_grad(var v) {
        node& n = nodes_[v.index];
        const matrix_type& value = n.value_ref();
        if (n.param) {
            parameter<T>& p = *n.param;
            if (!p.has_grad) {
                p.grad.setZero(value.rows(), value.cols());
                p.has_grad = true;
            }
            return p.grad;
        }
        if (!n.grad_set) {
            n.grad.setZero(value.rows(), value.cols());
            n.grad_set = true;
        }
        return n.grad;
    }

    // ---- backward -----------------------------------------------------------------------------
    // Seeds d(root)/d(root) = 1 (root must be 1x1) and walks the tape in reverse.
    void backward(var root) {
        if (root.index >= used_) detail::fail("backward: stale var");
        node& r = nodes_[root.index];
        if (r.value_ref().size() != 1) detail::fail("backward: root must be a scalar (1x1)");
        for (std::size_t k = 0; k < used_; ++k) nodes_[k].grad_set = false;
        if (!r.needs_grad) return;
        accumulate(root, matrix_type::Ones(1, 1));
        for (std::size_t k = root.index + 1; k-- > 0;) {
            node& n = nodes_[k];
            if (n.backward && n.grad_set) n.backward(*this, n);
        }
    }

    // ---- access -------------------------------------------------------------------------------
    const matrix_type& value(var v) const { return node_at(v.index).value_ref(); }
    // Gradient of a non-parameter node after backward(); parameters keep theirs in p.grad.
    const matrix_type& grad(var v) const {
        const node& n = node_at(v.index);
        if (n.param != nullptr) detail::fail("grad: a parameter's gradient is in parameter::grad");
        if (!n.grad_set) detail::fail("grad: node received no gradient");
        return n.grad;
    }

private:
    struct node;
    using backward_fn = void (*)(tape&, node&);

    struct node {
        matrix_type value;
        matrix_type grad;
        const matrix_type* external_value = nullptr;  // leaves that read their value in place
        parameter<T>* param = nullptr;
        void* closure = nullptr;  // the op's closure in its pool
        const void* key = nullptr;  // which pool (closure type) it came from
        backward_fn backward = nullptr;
        bool needs_grad = false;
        bool grad_set = false;

        const matrix_type& value_ref() const { return external_value ? *external_value : value; }
    };

    struct pool_base {
        virtual ~pool_base() = default;
        std::size_t used = 0;
    };

    // Closures of one type; a deque, so growing never moves the ones already handed out.
    template <class Op>
    struct pool final : pool_base {
        std::deque<Op> items;
        Op& next() {
            if (this->used == items.size()) items.emplace_back();
            return items[this->used++];
        }
    };

    struct keyed_pool {
        const void* key;
        std::unique_ptr<pool_base> pool;
    };

    std::deque<node> nodes_;  // a deque: pushing never moves nodes, so references to values stay valid
    std::size_t used_ = 0;
    std::vector<keyed_pool> pools_;  // a handful of op types: a linear search beats hashing

    template <class Op>
    pool<Op>& pool_for() {
        const void* key = &detail::closure_key<Op>::tag;
        for (auto& p : pools_)
            if (p.key == key) return static_cast<pool<Op>&>(*p.pool);
        pools_.push_back({key, std::make_unique<pool<Op>>()});
        return static_cast<pool<Op>&>(*pools_.back().pool);
    }

    template <class Op>
    static void call_backward(tape& t, node& n) {
        static_cast<Op*>(n.closure)->backward(t, n.value, n.grad);
    }

    std::size_t push(bool needs_grad) {
        if (used_ == nodes_.size()) nodes_.emplace_back();
        node& n = nodes_[used_];
        n.external_value = nullptr;
        n.param = nullptr;
        n.closure = nullptr;
        n.key = nullptr;
        n.backward = nullptr;
        n.needs_grad = needs_grad;
        n.grad_set = false;
        return used_++;
    }

    var make_leaf(std::size_t i, const matrix_type& v, int channels, int height, int width) const {
        if (channels < 0) return {i, static_cast<int>(v.cols()), 1, 1};
        if (static_cast<Eigen::Index>(channels) * height * width != v.cols())
            detail::fail("leaf: view " + std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width) +
                         " does not match " + std::to_string(v.cols()) + " columns");
        return {i, channels, height, width};
    }

    const node& node_at(std::size_t i) const {
        if (i >= used_) detail::fail("stale var (tape was cleared)");
        return nodes_[i];
    }
};

}  // namespace grphi::ad
