// Products straight from codes: y = W x (gemv) and Y = W X (gemm) for a code_matrix W, float or
// double activations, on the best instruction set the CPU has (kernels/dispatch.hpp), OpenMP over rows.
// Every row is one task with a fixed summation order, so the output is identical for any thread count.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "../compute/code_matrix.hpp"
#include "code_avx2.hpp"
#include "code_avx512.hpp"
#include "code_scalar.hpp"
#include "dispatch.hpp"
#include "group_order.hpp"

namespace grphi {

using kernels::level_product;

namespace kernels {

// The path a product on v takes now: the active ISA, or scalar where SIMD does not apply (8-bit
// windows too wide for register tables, blocks that do not start on a 32-weight chunk).
inline isa code_path(const code_view& v, level_product mode) {
    const isa best = active_isa();
    if (best == isa::scalar) return isa::scalar;
    if (v.blocks_per_row > 1 && v.block_size % 32 != 0) return isa::scalar;
    if (mode == level_product::exponent_add && !v.pure_powers_of_two)
        return isa::scalar;  // the scalar path multiplies where levels are not powers of two
    return best;
}

// Whether the path reads the activations in its group order (group_order.hpp) instead
// of column order: the caller permutes x (each column of X) once per product.
template <class A>
bool reads_group_order(isa path, const code_view& v, level_product mode) {
#if GRPHI_X86_DISPATCH
    return (path == isa::avx2 || path == isa::avx512) && reads_groups<A>(v, mode);
#else
    (void)path, (void)v, (void)mode;
    return false;
#endif
}

// Group order's lanes on the path: AVX-512 reads groups of 128 weights, AVX2 of 64.
inline std::size_t group_lanes(isa path) { return path == isa::avx512 ? 16 : 8; }

// Entries of x in the path's group order (a multiple of 64 bytes).
inline std::size_t group_padded(isa path, std::size_t cols) {
    return group_lanes(path) == 16 ? group_padded<16>(cols) : group_padded<8>(cols);
}

// x (cols entries) permuted into the path's group order at out (group_padded(path, cols) entries).
template <class A>
void to_group_order(isa path, const A* x, std::size_t cols, A* out) {
    if (group_lanes(path) == 16)
        to_group_order<16>(x, cols, out);
    else
        to_group_order<8>(x, cols, out);
}

// n zeroed entries of store starting on a 64-byte boundary: full-width loads there never split cache lines.
template <class A>
A* aligned_zeros(std::vector<A>& store, std::size_t n) {
    constexpr std::size_t slack = 64 / sizeof(A);
    store.assign(n + slack, A(0));
    const auto address = reinterpret_cast<std::uintptr_t>(store.data());
    return store.data() + ((64 - address % 64) % 64) / sizeof(A);
}

// The activations x (cols entries) as the path reads them: x itself, or a 64-byte-aligned copy in store
// (in group order where the path reads it so).
template <class A>
const A* activations_for(isa path, const code_view& v, level_product mode, const A* x, std::vector<A>& store) {
#if GRPHI_X86_DISPATCH
    if (reads_group_order<A>(path, v, mode)) {
        A* out = aligned_zeros(store, group_padded(path, v.cols));
        to_group_order(path, x, v.cols, out);
        return out;
    }
    // Full-width loads of x must not split cache lines: an x off a 64-byte boundary (Eigen aligns to 16
    // bytes in a build without AVX-512) is copied once; measured 1.3-1.5x slower GEMV otherwise.
    if (path != isa::scalar && reinterpret_cast<std::uintptr_t>(x) % 64 != 0) {
        A* out = aligned_zeros(store, v.cols);
        std::copy(x, x + v.cols, out);
        return out;
    }
#endif
    (void)path, (void)v, (void)mode, (void)store;
    return x;
}

// Rows [r0, r1) of y = W x, x as activations_for gives it.
template <class A>
void gemv_rows(isa path, const code_view& v, std::size_t r0, std::size_t r1, const A* x, A* y, level_product mode) {
    switch (path) {
#if GRPHI_X86_DISPATCH
    case isa::avx512:
        if constexpr (std::is_same_v<A, float>) {
            if (reads_groups<A>(v, mode)) {
                std::size_t r = r0;
                for (; r + 2 <= r1; r += 2) avx512::dot_rows2_groups(v, r, x, y);
                for (; r < r1; ++r) y[r] = avx512::dot_row_groups(v, r, x);
                return;
            }
        }
        for (std::size_t r = r0; r < r1; ++r) y[r] = avx512::dot_row(v, r, x, mode);
        return;
    case isa::avx2:
        if constexpr (std::is_same_v<A, float>) {
            if (reads_groups<A>(v, mode)) {
                for (std::size_t r = r0; r < r1; ++r) y[r] = avx2::dot_row_groups(v, r, x);
                return;
            }
        }
        for (std::size_t r = r0; r < r1; ++r) y[r] = avx2::dot_row(v, r, x, mode);
        return;
#endif
    default:
        for (std::size_t r = r0; r < r1; ++r) y[r] = scalar::dot_row(v, r, x, mode);
        return;
    }
}

template <class A>
void gemm_rows(isa path, const code_view& v, std::size_t r0, std::size_t r1, const A* X, std::size_t ldx, std::size_t m,
               A* Y, std::size_t ldy, level_product mode, std::vector<A>& scratch) {
    switch (path) {
#if GRPHI_X86_DISPATCH
    case isa::avx512: return avx512::gemm_rows(v, r0, r1, X, ldx, m, Y, ldy, mode, scratch);
    case isa::avx2: return avx2::gemm_rows(v, r0, r1, X, ldx, m, Y, ldy, mode, scratch);
#endif
    default: return scalar::gemm_rows(v, r0, r1, X, ldx, m, Y, ldy, mode, scratch);
    }
}

// Rows per task: a tile of the gemm kernels, and few enough tasks to share among threads evenly.
inline constexpr std::size_t rows_per_task = 16;

}  // namespace kernels

// W: a code_matrix<T, Base> or an any_code_matrix<T>.
// y = W x. x: any Eigen vector expression of float or double (copied when not contiguous); y is
// resized when it is a plain vector. Throws std::invalid_argument on a shape mismatch.
template <class Codes, class XD, class YD>
void gemv(const Codes& W, const Eigen::MatrixBase<XD>& x, Eigen::MatrixBase<YD>& y,
          level_product mode = level_product::multiply) {
    using A = typename XD::Scalar;
    static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>, "grphi::gemv: activations are float or double");
    static_assert(std::is_same_v<typename YD::Scalar, A>, "grphi::gemv: y has the scalar type of x");
    if (x.cols() != 1 || x.rows() != W.cols())
        throw std::invalid_argument("grphi::gemv: x is " + std::to_string(x.rows()) + "x" + std::to_string(x.cols()) +
                                    ", expected a vector of " + std::to_string(W.cols()));
    using vector = Eigen::Matrix<A, Eigen::Dynamic, 1>;
    const Eigen::Ref<const vector> xs(x.derived());
    vector out(W.rows());
    const kernels::code_view v = W.view();
    const kernels::isa path = kernels::code_path(v, mode);
    std::vector<A> x_store;
    const A* xp = kernels::activations_for(path, v, mode, xs.data(), x_store);
    const auto tasks = static_cast<long>((v.rows + kernels::rows_per_task - 1) / kernels::rows_per_task);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (v.rows * v.cols >= (std::size_t(1) << 18))
#endif
    for (long t = 0; t < tasks; ++t) {
        const std::size_t r0 = static_cast<std::size_t>(t) * kernels::rows_per_task;
        const std::size_t r1 = std::min(v.rows, r0 + kernels::rows_per_task);
        kernels::gemv_rows<A>(path, v, r0, r1, xp, out.data(), mode);
    }
    if constexpr (std::is_same_v<YD, vector>) y.derived().resize(W.rows());
    if (y.rows() != W.rows() || y.cols() != 1)
        throw std::invalid_argument("grphi::gemv: y is " + std::to_string(y.rows()) + "x" + std::to_string(y.cols()) +
                                    ", expected a vector of " + std::to_string(W.rows()));
    y = out;
}

template <class Codes, class XD>
Eigen::Matrix<typename XD::Scalar, Eigen::Dynamic, 1> gemv(const Codes& W, const Eigen::MatrixBase<XD>& x,
                                                           level_product mode = level_product::multiply) {
    Eigen::Matrix<typename XD::Scalar, Eigen::Dynamic, 1> y(W.rows());
    gemv(W, x, y, mode);
    return y;
}

namespace kernels {

// Up to this many columns a gemm runs as gemvs on every path: the AVX-512 outer-product tiles are 16
// columns wide, and with 8 columns they took 7.0 ms against 4.3 ms for 8 gemvs (4096 x 4096, one thread).
inline constexpr std::size_t gemm_gemv_columns = 8;

// Y = W X by outer products on decoded panels (AVX-512, float): X transposed once with its columns
// padded to 16, the result through a row-major Yt. Same order per entry as the scalar reference.
inline void gemm_outer_avx512(const code_view& v, const float* X, std::size_t ldx, std::size_t m, float* Y, std::size_t ldy) {
#if GRPHI_X86_DISPATCH
    const std::size_t mp = (m + 15) / 16 * 16;
    std::vector<float> xt(v.cols * mp, 0.0f), yt(v.rows * mp, 0.0f);
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t c = 0; c < v.cols; ++c) xt[c * mp + j] = X[j * ldx + c];
    const std::size_t panel = avx512::gemm_panel_rows;
    const auto panels = static_cast<long>((v.rows + panel - 1) / panel);
#if defined(_OPENMP)
#pragma omp parallel if (v.rows * v.cols * m >= (std::size_t(1) << 18))
#endif
    {
        std::vector<float> scratch;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (long t = 0; t < panels; ++t) {
            const std::size_t r0 = static_cast<std::size_t>(t) * panel;
            avx512::gemm_panel(v, r0, std::min(panel, v.rows - r0), xt.data(), mp, yt.data(), scratch);
        }
    }
    for (std::size_t j = 0; j < m; ++j)
        for (std::size_t r = 0; r < v.rows; ++r) Y[j * ldy + r] = yt[r * mp + j];
#else
    (void)v, (void)X, (void)ldx, (void)m, (void)Y, (void)ldy;
#endif
}

}  // namespace kernels

// Y = W X. On the AVX-512 path (float activations) with more than gemm_gemv_columns columns every entry
// is summed in the scalar reference's order, so it equals the scalar gemm bit for bit; otherwise column
// j equals gemv(W, X.col(j)) bit for bit.
template <class Codes, class XD, class YD>
void gemm(const Codes& W, const Eigen::MatrixBase<XD>& X, Eigen::MatrixBase<YD>& Y,
          level_product mode = level_product::multiply) {
    using A = typename XD::Scalar;
    static_assert(std::is_same_v<A, float> || std::is_same_v<A, double>, "grphi::gemm: activations are float or double");
    static_assert(std::is_same_v<typename YD::Scalar, A>, "grphi::gemm: Y has the scalar type of X");
    if (X.rows() != W.cols())
        throw std::invalid_argument("grphi::gemm: X has " + std::to_string(X.rows()) + " rows, expected " +
                                    std::to_string(W.cols()));
    using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic>;  // column-major: columns are contiguous
    if constexpr (std::is_same_v<YD, matrix>) Y.derived().resize(W.rows(), X.cols());
    if (Y.rows() != W.rows() || Y.cols() != X.cols())
        throw std::invalid_argument("grphi::gemm: Y is " + std::to_string(Y.rows()) + "x" + std::to_string(Y.cols()) +
                                    ", expected " + std::to_string(W.rows()) + "x" + std::to_string(X.cols()));
    const Eigen::Ref<const matrix> Xs(X.derived());
    matrix out(W.rows(), X.cols());
    const kernels::code_view v = W.view();
    const kernels::isa path = kernels::code_path(v, mode);
    const auto m = static_cast<std::size_t>(X.cols());
    const auto ldx = static_cast<std::size_t>(Xs.outerStride());
    if (std::is_same_v<A, float> && path == kernels::isa::avx512 && mode == level_product::multiply && v.rows * m > 0 && m > kernels::gemm_gemv_columns) {
        if constexpr (std::is_same_v<A, float>)
            kernels::gemm_outer_avx512(v, Xs.data(), ldx, m, out.data(), static_cast<std::size_t>(out.rows()));
    } else {
        // Columns in the order the path reads rows (a copy only where that is not column order).
        const A* xp = Xs.data();
        std::size_t ld = ldx;
        std::vector<A> x_store;
#if GRPHI_X86_DISPATCH
        if (kernels::reads_group_order<A>(path, v, mode) && m > 0) {
            ld = kernels::group_padded(path, v.cols);  // a multiple of 64 bytes: every column stays aligned
            A* permuted = kernels::aligned_zeros(x_store, ld * m);
            for (std::size_t j = 0; j < m; ++j) kernels::to_group_order(path, Xs.data() + j * ldx, v.cols, permuted + j * ld);
            xp = permuted;
        }
#endif
        const auto tasks = static_cast<long>((v.rows + kernels::rows_per_task - 1) / kernels::rows_per_task);
#if defined(_OPENMP)
#pragma omp parallel if (v.rows * v.cols * m >= (std::size_t(1) << 18))
#endif
        {
            std::vector<A> scratch;
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
            for (long t = 0; t < tasks; ++t) {
                const std::size_t r0 = static_cast<std::size_t>(t) * kernels::rows_per_task;
                const std::size_t r1 = std::min(v.rows, r0 + kernels::rows_per_task);
                kernels::gemm_rows<A>(path, v, r0, r1, xp, ld, m, out.data(), static_cast<std::size_t>(out.rows()), mode,
                                      scratch);
            }
        }
    }
    Y = out;
}

template <class Codes, class XD>
Eigen::Matrix<typename XD::Scalar, Eigen::Dynamic, Eigen::Dynamic> gemm(const Codes& W,
                                                                        const Eigen::MatrixBase<XD>& X,
                                                                        level_product mode = level_product::multiply) {
    Eigen::Matrix<typename XD::Scalar, Eigen::Dynamic, Eigen::Dynamic> Y(W.rows(), X.cols());
    gemm(W, X, Y, mode);
    return Y;
}

}  // namespace grphi
