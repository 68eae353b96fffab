// llama.cpp's Q4_0 and Q8_0: blocks of 32 consecutive weights of a row, one fp16 scale d per block.
//
// Written from the public definitions (ggml's reference quantizers):
//   Q4_0: m = the block's value of largest magnitude (signed; the first one on ties), d = m / -8,
//         code q = min(15, trunc(x / d + 8.5)) in 0..15 (round half up), value d * (q - 8).
//         So m itself becomes code 0 (value -8d = m) and the grid runs -8d..7d. 4 bits + 16/32 = 4.5 bits/weight.
//   Q8_0: d = max|x| / 127, code q = round(x / d) (half away from zero) in -127..127, value d * q.
//         8 bits + 16/32 = 8.5 bits/weight.
// As in ggml the codes are computed with the float d (via 1/d) and the stored scale is d rounded
// to fp16; an all-zero block has d = 0 (Q4_0: -0, from 0 / -8) and every code at the zero point.
//
// Byte layout (what the packed-weight kernels read): a matrix is rows * blocks_per_row(cols, 32)
// blocks, row after row. block_q4_0 = {fp16 d, 16 bytes}: byte j holds member j in its low nibble
// and member j + 16 in its high nibble. block_q8_0 = {fp16 d, 32 int8 codes in order}.
// The short tail block of a row whose length is not a multiple of 32 is stored as a whole block:
// its scale comes from its real members only, and every slot past the row's end holds the zero code
// (Q4_0: 8, Q8_0: 0), so it decodes to exactly 0 and a kernel may run the whole block as long as it
// reads no activation past the row's end (or pads activations with finite values). Fixed bits/weight
// still count only the real members' codes plus every block's scale (block_rows.hpp).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../io/half.hpp"
#include "block_rows.hpp"

namespace grphi::baselines {

struct block_q4_0 {
    static constexpr std::size_t members = 32;
    static constexpr int code_bits = 4;
    static constexpr int zero_code = 8;
    std::uint16_t d;         // fp16 scale
    std::uint8_t qs[16];     // member j: low nibble of qs[j % 16] for j < 16, high nibble for j >= 16
};
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 is 2 + 16 bytes, as in ggml");
static_assert(std::is_trivially_copyable_v<block_q4_0> && std::is_standard_layout_v<block_q4_0>);

struct block_q8_0 {
    static constexpr std::size_t members = 32;
    static constexpr int code_bits = 8;
    static constexpr int zero_code = 0;
    std::uint16_t d;       // fp16 scale
    std::int8_t qs[32];    // member j: qs[j]
};
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 is 2 + 32 bytes, as in ggml");
static_assert(std::is_trivially_copyable_v<block_q8_0> && std::is_standard_layout_v<block_q8_0>);

// Code of member j (0..31) of a block: 0..15 for Q4_0, -127..127 for Q8_0.
inline int block_code(const block_q4_0& b, std::size_t j) {
    const std::uint8_t byte = b.qs[j % 16];
    return j < 16 ? (byte & 0x0f) : (byte >> 4);
}
inline int block_code(const block_q8_0& b, std::size_t j) { return b.qs[j]; }

// Value of member j: d * (q - 8) for Q4_0, d * q for Q8_0, with d the stored fp16 scale.
inline float block_value(const block_q4_0& b, std::size_t j) {
    return half_to_float(b.d) * static_cast<float>(block_code(b, j) - 8);
}
inline float block_value(const block_q8_0& b, std::size_t j) {
    return half_to_float(b.d) * static_cast<float>(block_code(b, j));
}

namespace detail {

inline void check_finite_row(const float* x, std::size_t n, const char* who) {
    for (std::size_t i = 0; i < n; ++i)
        if (!std::isfinite(x[i]))
            throw std::domain_error(std::string(who) + ": non-finite value at position " + std::to_string(i));
}

inline std::uint16_t block_scale_to_half(float d, const char* who) {
    const std::uint16_t h = float_to_half(d);
    if ((h & 0x7c00u) == 0x7c00u)
        throw std::domain_error(std::string(who) + ": block scale " + std::to_string(d) +
                                " does not fit fp16 (weights too large for this format)");
    return h;
}

// One Q4_0 block from n <= 32 real members; the slots past n get the zero code.
inline block_q4_0 quantize_block_q4_0(const float* x, std::size_t n) {
    float amax = 0, max = 0;
    for (std::size_t j = 0; j < n; ++j)
        if (amax < std::fabs(x[j])) {  // strict: the first value of largest magnitude wins ties
            amax = std::fabs(x[j]);
            max = x[j];
        }
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    block_q4_0 b{};
    b.d = block_scale_to_half(d, "grphi::baselines::quantize_row_q4_0");
    for (std::size_t j = 0; j < 32; ++j) {
        int q = block_q4_0::zero_code;
        if (j < n) {
            const volatile float scaled = x[j] * id;  // volatile: one rounding here, no fused multiply-add
            q = std::min(15, static_cast<int>(scaled + 8.5f));
        }
        b.qs[j % 16] = static_cast<std::uint8_t>(b.qs[j % 16] | (j < 16 ? q : q << 4));
    }
    return b;
}

// One Q8_0 block from n <= 32 real members; the slots past n get code 0.
inline block_q8_0 quantize_block_q8_0(const float* x, std::size_t n) {
    float amax = 0;
    for (std::size_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    block_q8_0 b{};
    b.d = block_scale_to_half(d, "grphi::baselines::quantize_row_q8_0");
    for (std::size_t j = 0; j < n; ++j) b.qs[j] = static_cast<std::int8_t>(std::round(x[j] * id));
    return b;
}

}  // namespace detail

// Quantizes one row of n floats into blocks_per_row(n, 32) blocks at y. Throws on NaN/Inf or a
// block scale beyond fp16.
inline void quantize_row_q4_0(const float* x, std::size_t n, block_q4_0* y) {
    detail::check_finite_row(x, n, "grphi::baselines::quantize_row_q4_0");
    for (std::size_t b = 0, nb = blocks_per_row(n, 32); b < nb; ++b)
        y[b] = detail::quantize_block_q4_0(x + 32 * b, block_length(n, 32, b));
}
inline void quantize_row_q8_0(const float* x, std::size_t n, block_q8_0* y) {
    detail::check_finite_row(x, n, "grphi::baselines::quantize_row_q8_0");
    for (std::size_t b = 0, nb = blocks_per_row(n, 32); b < nb; ++b)
        y[b] = detail::quantize_block_q8_0(x + 32 * b, block_length(n, 32, b));
}

// Rebuilds the n real members of a row from its blocks.
template <class Block>
void dequantize_row(const Block* y, std::size_t n, float* x) {
    for (std::size_t i = 0; i < n; ++i) x[i] = block_value(y[i / 32], i % 32);
}

// A whole matrix in one block type: rows * blocks_per_row(cols, 32) blocks, row after row.
template <class Block>
struct ggml_matrix {
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::vector<Block> blocks;

    std::size_t row_blocks() const { return blocks_per_row(cols, Block::members); }
    const Block* row(std::size_t r) const { return blocks.data() + r * row_blocks(); }
    Block* row(std::size_t r) { return blocks.data() + r * row_blocks(); }
    // Real codes + one fp16 scale per block (Q4_0 on a 784-wide row: 4 + 25*16/784).
    double fixed_bits_per_weight() const {
        return baselines::fixed_bits_per_weight(rows, cols, Block::code_bits, Block::members, 16);
    }
};
using q4_0_matrix = ggml_matrix<block_q4_0>;
using q8_0_matrix = ggml_matrix<block_q8_0>;

namespace detail {
template <class Block, class Derived, class QuantizeRow>
ggml_matrix<Block> quantize_ggml(const Eigen::MatrixBase<Derived>& W, QuantizeRow quantize_row) {
    ggml_matrix<Block> m;
    m.rows = static_cast<std::size_t>(W.rows());
    m.cols = static_cast<std::size_t>(W.cols());
    m.blocks.resize(m.rows * m.row_blocks());
    std::vector<float> row(m.cols);
    for (std::size_t r = 0; r < m.rows; ++r) {
        for (std::size_t c = 0; c < m.cols; ++c)
            row[c] = static_cast<float>(W(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)));
        quantize_row(row.data(), m.cols, m.row(r));
    }
    return m;
}
}  // namespace detail

// Any float or double matrix (rounded to float first, as ggml quantizes float rows).
template <class Derived>
q4_0_matrix quantize_q4_0(const Eigen::MatrixBase<Derived>& W) {
    return detail::quantize_ggml<block_q4_0>(W, quantize_row_q4_0);
}
template <class Derived>
q8_0_matrix quantize_q8_0(const Eigen::MatrixBase<Derived>& W) {
    return detail::quantize_ggml<block_q8_0>(W, quantize_row_q8_0);
}

template <class T = float, class Block>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dequantize(const ggml_matrix<Block>& m) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(static_cast<Eigen::Index>(m.rows),
                                                                          static_cast<Eigen::Index>(m.cols));
    std::vector<float> row(m.cols);
    for (std::size_t r = 0; r < m.rows; ++r) {
        dequantize_row(m.row(r), m.cols, row.data());
        for (std::size_t c = 0; c < m.cols; ++c)
            out(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = static_cast<T>(row[c]);
    }
    return out;
}

}  // namespace grphi::baselines
