// The reference kernels on code matrices: plain C++, one weight at a time in column order. They
// define the summation order (sum = fma(w, x, sum) from column 0 up); every SIMD path is tested against them.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "../compute/code_matrix.hpp"

namespace grphi::kernels {

// How a weight multiplies an activation: a multiply by its exact level, or (base 2, levels exactly
// 2^k) adding k to the activation's exponent bits and flipping its sign bit, for hardware without
// fast multipliers. Both give the same products: the exponent add is used only where it is exact.
enum class level_product { multiply, exponent_add };

namespace scalar {

// x * 2^k by exponent arithmetic where that is exact (x normal, result normal), else the multiply.
template <class A>
A times_power_of_two(A x, int k, bool negative, A level) {
    using U = std::conditional_t<std::is_same_v<A, float>, std::uint32_t, std::uint64_t>;
    constexpr int mantissa = std::numeric_limits<A>::digits - 1;
    constexpr int max_biased = 2 * std::numeric_limits<A>::max_exponent - 1;  // 255 or 2047
    U bits;
    std::memcpy(&bits, &x, sizeof bits);
    const int e = static_cast<int>((bits >> mantissa) & static_cast<U>(max_biased));
    if (e >= 1 && e < max_biased && k > -max_biased && k < max_biased && e + k >= 1 && e + k < max_biased) {
        bits += static_cast<U>(static_cast<std::make_signed_t<U>>(k)) << mantissa;
        if (negative) bits ^= U(1) << (sizeof(U) * 8 - 1);
        A out;
        std::memcpy(&out, &bits, sizeof out);
        return out;
    }
    return (negative ? -level : level) * x;
}

// Dot product of row r with x (cols entries).
template <class A>
A dot_row(const code_view& v, std::size_t r, const A* x, level_product mode = level_product::multiply) {
    const std::uint8_t* row = v.row(r);
    const code_matrix_rule rule{v.bits};
    A sum = 0;
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::uint32_t entry = v.block(r, b);
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        if (mode == level_product::exponent_add) {
            const int top = v.top_exponent[r * v.blocks_per_row + b];
            for (std::size_t c = first; c < last; ++c) {
                const unsigned code = v.code_at(row, c);
                const unsigned offset = code & (rule.sign_bit() - 1);
                const bool zero = (entry & 1u) && offset == static_cast<unsigned>(rule.zero_slot());
                // A zero weight multiplies (0 * x, as the multiply path gives for any x).
                const int k = zero ? std::numeric_limits<int>::min() / 2 : top - static_cast<int>(offset);
                const A level = zero ? A(0) : v.levels<A>()[(entry >> 1) + offset];
                sum += times_power_of_two(x[c], k, (code & rule.sign_bit()) != 0, level);
            }
        } else {
            for (std::size_t c = first; c < last; ++c) sum = std::fma(v.value<A>(entry, v.code_at(row, c)), x[c], sum);
        }
    }
    return sum;
}

// Y(r0..r1, :) = W(r0..r1, :) * X, X column-major with leading dimension ldx, m columns; the same
// order per entry as dot_row, so each column equals gemv of that column.
template <class A>
void gemm_rows(const code_view& v, std::size_t r0, std::size_t r1, const A* X, std::size_t ldx, std::size_t m, A* Y,
               std::size_t ldy, level_product mode, std::vector<A>& scratch) {
    scratch.resize(v.cols);
    for (std::size_t r = r0; r < r1; ++r) {
        if (mode == level_product::exponent_add) {
            for (std::size_t j = 0; j < m; ++j) Y[j * ldy + r] = dot_row(v, r, X + j * ldx, mode);
            continue;
        }
        const std::uint8_t* row = v.row(r);
        for (std::size_t c = 0; c < v.cols; ++c) scratch[c] = v.value<A>(v.block(r, c / v.block_size), v.code_at(row, c));
        for (std::size_t j = 0; j < m; ++j) {
            const A* x = X + j * ldx;
            A sum = 0;
            for (std::size_t c = 0; c < v.cols; ++c) sum = std::fma(scratch[c], x[c], sum);
            Y[j * ldy + r] = sum;
        }
    }
}

}  // namespace scalar
}  // namespace grphi::kernels
