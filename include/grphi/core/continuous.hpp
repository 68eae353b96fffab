// The continuous map of the seed's log_phi / pow_phi, vectorized: for users who want log_b(x) and
// b^e as real numbers. Quantization itself never uses these (they misround near boundaries).
#pragma once

#include <cmath>
#include <cstddef>

#include <Eigen/Core>
#include <xsimd/xsimd.hpp>

#include "base.hpp"

namespace grphi {

namespace detail {

// Applies a batch function over a contiguous array; the tail goes through the same batch code.
template <class T, class F>
void apply_batches(const T* in, T* out, std::size_t n, F&& f) {
    using batch = xsimd::batch<T>;
    constexpr std::size_t lanes = batch::size;
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes) f(batch::load_unaligned(in + i)).store_unaligned(out + i);
    if (i < n) {
        alignas(64) T tail[lanes];
        for (std::size_t j = 0; j < lanes; ++j) tail[j] = i + j < n ? in[i + j] : T(1);
        f(batch::load_aligned(tail)).store_aligned(tail);
        for (std::size_t j = 0; i + j < n; ++j) out[i + j] = tail[j];
    }
}

}  // namespace detail

// log_b(x) elementwise (x <= 0 gives -inf or NaN as std::log does).
template <class Base, class Derived>
Eigen::Array<typename Derived::Scalar, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime>
log_b(const Eigen::ArrayBase<Derived>& x) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    check_base<Base>();
    const Eigen::Array<T, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime> in = x;
    Eigen::Array<T, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime> out(in.rows(), in.cols());
    const T inv_log_b = static_cast<T>(1.0L / std::log(static_cast<long double>(Base::value)));
    detail::apply_batches(in.data(), out.data(), static_cast<std::size_t>(in.size()),
                          [&](const auto& v) { return xsimd::log(v) * inv_log_b; });
    return out;
}

// b^e elementwise.
template <class Base, class Derived>
Eigen::Array<typename Derived::Scalar, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime>
pow_b(const Eigen::ArrayBase<Derived>& e) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    check_base<Base>();
    const Eigen::Array<T, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime> in = e;
    Eigen::Array<T, Derived::RowsAtCompileTime, Derived::ColsAtCompileTime> out(in.rows(), in.cols());
    const T log_b_value = static_cast<T>(std::log(static_cast<long double>(Base::value)));
    detail::apply_batches(in.data(), out.data(), static_cast<std::size_t>(in.size()),
                          [&](const auto& v) { return xsimd::exp(v * log_b_value); });
    return out;
}

}  // namespace grphi
