// AVX2 + FMA kernels on code matrices (GRPHI_TARGET_AVX2). 4-bit, float activations: a block's 8
// magnitudes in one ymm register, stored XOR (offset << 28) so that XOR-ing the looked-up entry with
// (nibble << 28) both cancels that and sets the sign bit.
// GEMV and GEMM on 4-bit rows of one block (per channel) read whole 64-weight groups: the group's 32
// bytes as 8 words, shifted right by 4j, hold in lane L the code of weight group_lane_weight(j, L)
// (vpermps reads the low 3 bits), so per 8 weights it is a shift, a lookup, a shift and a XOR for the
// sign, an FMA, and one 32-byte load per 64 weights: no byte expansion. The activations are read in
// that order, permuted once per call (to_group_order).
// Other rows (8-bit, several blocks) decode 32-weight chunks with a byte expansion; 8-bit codes
// gather from the block's table. Double activations and the exponent-add product run the scalar
// reference here.
// Summation order (float): group order: vector j of every 64-weight group goes into accumulator j % 4;
// chunks: weights 8g..8g+7 of every 32-weight chunk into accumulator g. The row's sum is
// ((a0 + a1) + (a2 + a3)) reduced across lanes in a fixed order. gemm follows the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../compute/code_matrix.hpp"
#include "code_scalar.hpp"
#include "dispatch.hpp"
#include "group_order.hpp"

#if GRPHI_X86_DISPATCH
#include <immintrin.h>

namespace grphi::kernels::avx2 {

GRPHI_TARGET_AVX2 inline __m256 table8(const float* levels, std::uint32_t entry) {
    __m256 t = _mm256_loadu_ps(levels + (entry >> 1));  // in the segment: its zero padding follows
    if (entry & 1u) t = _mm256_blend_ps(t, _mm256_setzero_ps(), 0x80);  // the zero slot
    const __m256i offsets = _mm256_setr_epi32(0, 1 << 28, 2 << 28, 3 << 28, 4 << 28, 5 << 28, 6 << 28, 7 << 28);
    return _mm256_xor_ps(t, _mm256_castsi256_ps(offsets));
}

GRPHI_TARGET_AVX2 inline __m256 lookup4(__m256 table, __m256i nibbles) {
    return _mm256_xor_ps(_mm256_permutevar8x32_ps(table, nibbles), _mm256_castsi256_ps(_mm256_slli_epi32(nibbles, 28)));
}

// Lanes below n as a maskload mask.
GRPHI_TARGET_AVX2 inline __m256i first_lanes(std::size_t n) {
    const int k = n >= 8 ? 8 : static_cast<int>(n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
GRPHI_TARGET_AVX2 inline __m256 load_first(const float* x, std::size_t n, std::size_t g) {
    return n >= 8 * (g + 1) ? _mm256_loadu_ps(x + 8 * g)
                            : _mm256_maskload_ps(x + 8 * g, first_lanes(n > 8 * g ? n - 8 * g : 0));
}

// Weights 8g..8g+7 of a 4-bit chunk.
GRPHI_TARGET_AVX2 inline void decode_chunk4(const std::uint8_t* bytes, __m256 table, __m256 w[4]) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
    const __m256i i0 = _mm256_cvtepu8_epi32(b);
    const __m256i i1 = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b));
    w[0] = lookup4(table, i0);
    w[1] = lookup4(table, i1);
    w[2] = lookup4(table, _mm256_srli_epi32(i0, 4));
    w[3] = lookup4(table, _mm256_srli_epi32(i1, 4));
}

GRPHI_TARGET_AVX2 inline float reduce(const __m256 a[4]) {
    const __m256 s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

// Group order with 8 lanes (group_order.hpp): groups of 64 weights.
inline std::size_t group_padded(std::size_t cols) { return kernels::group_padded<8>(cols); }

// One 64-weight group (codes at group, activations xg in group order) into the four accumulators.
GRPHI_TARGET_AVX2 inline void group64(const std::uint8_t* group, const float* xg, __m256 table, __m256& a0, __m256& a1,
                                      __m256& a2, __m256& a3, std::size_t ahead) {
    // Compute-bound loop: fetch the codes ahead (rows are contiguous, so this runs into the next rows).
    _mm_prefetch(reinterpret_cast<const char*>(group + ahead), _MM_HINT_T1);
    const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group));
    a0 = _mm256_fmadd_ps(lookup4(table, d), _mm256_loadu_ps(xg), a0);
    a1 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 4)), _mm256_loadu_ps(xg + 8), a1);
    a2 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 8)), _mm256_loadu_ps(xg + 16), a2);
    a3 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 12)), _mm256_loadu_ps(xg + 24), a3);
    a0 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 16)), _mm256_loadu_ps(xg + 32), a0);
    a1 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 20)), _mm256_loadu_ps(xg + 40), a1);
    a2 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 24)), _mm256_loadu_ps(xg + 48), a2);
    a3 = _mm256_fmadd_ps(lookup4(table, _mm256_srli_epi32(d, 28)), _mm256_loadu_ps(xg + 56), a3);
}

// Row r (reads_groups) against activations in group order.
GRPHI_TARGET_AVX2 inline float dot_row_groups(const code_view& v, std::size_t r, const float* xg) {
    const std::uint8_t* row = v.row(r);
    const __m256 table = table8(v.levels_f, v.block(r, 0));
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];  // registers, not the array
    const std::size_t ahead = prefetch_ahead(v);
    for (std::size_t c = 0; c < v.cols; c += 64) group64(row + c / 2, xg + c, table, a0, a1, a2, a3, ahead);
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
    return reduce(a);
}

// Row r (reads_groups) decoded in group order into dst (group_padded(cols) entries; padding codes
// decode to finite levels, which meet zero activations).
GRPHI_TARGET_AVX2 inline void decode_row_groups(const code_view& v, std::size_t r, float* dst) {
    const std::uint8_t* row = v.row(r);
    const __m256 table = table8(v.levels_f, v.block(r, 0));
    for (std::size_t c = 0; c < v.cols; c += 64) {
        const __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2));
        _mm256_storeu_ps(dst + c, lookup4(table, d));
        _mm256_storeu_ps(dst + c + 8, lookup4(table, _mm256_srli_epi32(d, 4)));
        _mm256_storeu_ps(dst + c + 16, lookup4(table, _mm256_srli_epi32(d, 8)));
        _mm256_storeu_ps(dst + c + 24, lookup4(table, _mm256_srli_epi32(d, 12)));
        _mm256_storeu_ps(dst + c + 32, lookup4(table, _mm256_srli_epi32(d, 16)));
        _mm256_storeu_ps(dst + c + 40, lookup4(table, _mm256_srli_epi32(d, 20)));
        _mm256_storeu_ps(dst + c + 48, lookup4(table, _mm256_srli_epi32(d, 24)));
        _mm256_storeu_ps(dst + c + 56, lookup4(table, _mm256_srli_epi32(d, 28)));
    }
}

// Weights c..c+7 of an 8-bit row (zero slot 127 always reserved).
GRPHI_TARGET_AVX2 inline __m256 decode8(const std::uint8_t* bytes, const float* table) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bytes)));
    const __m256i offset = _mm256_and_si256(idx, _mm256_set1_epi32(127));
    const __m256i nonzero = _mm256_xor_si256(_mm256_cmpeq_epi32(offset, _mm256_set1_epi32(127)), _mm256_set1_epi32(-1));
    const __m256 mag = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table, offset, _mm256_castsi256_ps(nonzero), 4);
    return _mm256_xor_ps(mag, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(idx, 7), 31)));
}

// The 32 weights of chunk c (n of them real; the rest decode padding).
GRPHI_TARGET_AVX2 inline void decode_chunk(const code_view& v, const std::uint8_t* row, std::size_t c, __m256 table4,
                                           const float* table, __m256 w[4]) {
    if (v.bits == 4) {
        decode_chunk4(row + c / 2, table4, w);
    } else {
        for (std::size_t g = 0; g < 4; ++g) w[g] = decode8(row + c + 8 * g, table);
    }
}


GRPHI_TARGET_AVX2 inline float dot_row_float(const code_view& v, std::size_t r, const float* x) {
    const std::uint8_t* row = v.row(r);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        const std::uint32_t entry = v.block(r, b);
        const __m256 table4 = v.bits == 4 ? table8(v.levels_f, entry) : _mm256_setzero_ps();
        const float* table = v.levels_f + (entry >> 1);
        std::size_t c = first;
        if (v.bits == 4) {
            __m256 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];  // registers, not the array
            for (; c + 32 <= last; c += 32) {
                const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2));
                const __m256i i0 = _mm256_cvtepu8_epi32(bytes);
                const __m256i i1 = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(bytes, bytes));
                a0 = _mm256_fmadd_ps(lookup4(table4, i0), _mm256_loadu_ps(x + c), a0);
                a1 = _mm256_fmadd_ps(lookup4(table4, i1), _mm256_loadu_ps(x + c + 8), a1);
                a2 = _mm256_fmadd_ps(lookup4(table4, _mm256_srli_epi32(i0, 4)), _mm256_loadu_ps(x + c + 16), a2);
                a3 = _mm256_fmadd_ps(lookup4(table4, _mm256_srli_epi32(i1, 4)), _mm256_loadu_ps(x + c + 24), a3);
            }
            acc[0] = a0;
            acc[1] = a1;
            acc[2] = a2;
            acc[3] = a3;
        }
        for (; c < last; c += 32) {
            __m256 w[4];
            decode_chunk(v, row, c, table4, table, w);
            const std::size_t n = last - c;
            for (std::size_t g = 0; g < 4; ++g) acc[g] = _mm256_fmadd_ps(w[g], load_first(x + c, n, g), acc[g]);
        }
    }
    return reduce(acc);
}

template <class A>
GRPHI_TARGET_AVX2 A dot_row(const code_view& v, std::size_t r, const A* x, level_product mode) {
    if constexpr (std::is_same_v<A, float>) {
        if (mode == level_product::multiply) return dot_row_float(v, r, x);
    }
    return scalar::dot_row(v, r, x, mode);
}

// Decodes row r into dst (zeros past cols, dst holds a multiple of 32).
GRPHI_TARGET_AVX2 inline void decode_row(const code_view& v, std::size_t r, float* dst) {
    const std::uint8_t* row = v.row(r);
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        const std::uint32_t entry = v.block(r, b);
        const __m256 table4 = v.bits == 4 ? table8(v.levels_f, entry) : _mm256_setzero_ps();
        for (std::size_t c = first; c < last; c += 32) {
            __m256 w[4];
            decode_chunk(v, row, c, table4, v.levels_f + (entry >> 1), w);
            const std::size_t n = last - c;
            for (std::size_t g = 0; g < 4; ++g) {
                const __m256i keep = first_lanes(n > 8 * g ? n - 8 * g : 0);
                _mm256_storeu_ps(dst + c + 8 * g, _mm256_and_ps(w[g], _mm256_castsi256_ps(keep)));
            }
        }
    }
}

// x[c..c+7]; masked: lanes at and past cols read as 0.
GRPHI_TARGET_AVX2 inline __m256 load_activations(const float* x, std::size_t c, std::size_t cols, bool masked) {
    return masked ? load_first(x + c, cols > c ? cols - c : 0, 0) : _mm256_loadu_ps(x + c);
}

// Y(r, j) for one decoded row w (n entries, a multiple of 32) against columns j of X: the same
// accumulators as the GEMV (vector k of the row into accumulator k % 4). masked: lanes at and past
// `cols` of X read as 0 (natural order); unmasked: X is zero there already (group order).
GRPHI_TARGET_AVX2 inline void dot_decoded(const float* w, std::size_t n, std::size_t cols, bool masked, const float* X,
                                          std::size_t ldx, std::size_t m, float* y, std::size_t ldy) {
    std::size_t j = 0;
    for (; j + 2 <= m; j += 2) {  // two columns: 8 accumulators
        const float* x0 = X + j * ldx;
        const float* x1 = x0 + ldx;
        __m256 a0[4], a1[4];
        for (std::size_t g = 0; g < 4; ++g) a0[g] = a1[g] = _mm256_setzero_ps();
        for (std::size_t c = 0; c < n; c += 32)
            for (std::size_t g = 0; g < 4; ++g) {
                const __m256 wv = _mm256_loadu_ps(w + c + 8 * g);
                a0[g] = _mm256_fmadd_ps(wv, load_activations(x0, c + 8 * g, cols, masked), a0[g]);
                a1[g] = _mm256_fmadd_ps(wv, load_activations(x1, c + 8 * g, cols, masked), a1[g]);
            }
        y[j * ldy] = reduce(a0);
        y[(j + 1) * ldy] = reduce(a1);
    }
    for (; j < m; ++j) {
        const float* x0 = X + j * ldx;
        __m256 a0[4];
        for (std::size_t g = 0; g < 4; ++g) a0[g] = _mm256_setzero_ps();
        for (std::size_t c = 0; c < n; c += 32)
            for (std::size_t g = 0; g < 4; ++g) a0[g] = _mm256_fmadd_ps(_mm256_loadu_ps(w + c + 8 * g), load_activations(x0, c + 8 * g, cols, masked), a0[g]);
        y[j * ldy] = reduce(a0);
    }
}

// Rows [r0, r1) of Y = W X. When reads_groups(v), X must be in group order (to_group_order<8> per
// column, leading dimension ldx >= group_padded(cols)), as code_matmul's gemm passes it.
template <class A>
GRPHI_TARGET_AVX2 void gemm_rows(const code_view& v, std::size_t r0, std::size_t r1, const A* X, std::size_t ldx,
                                 std::size_t m, A* Y, std::size_t ldy, level_product mode, std::vector<A>& scratch) {
    if constexpr (std::is_same_v<A, float>) {
        if (reads_groups<A>(v, mode)) {
            const std::size_t n = group_padded(v.cols);
            scratch.assign(n, 0.0f);
            for (std::size_t r = r0; r < r1; ++r) {
                decode_row_groups(v, r, scratch.data());
                dot_decoded(scratch.data(), n, v.cols, false, X, ldx, m, Y + r, ldy);
            }
            return;
        }
        if (mode == level_product::multiply) {
            const std::size_t stride = (v.cols + 31) / 32 * 32;
            scratch.assign(stride, 0.0f);
            for (std::size_t r = r0; r < r1; ++r) {
                decode_row(v, r, scratch.data());
                dot_decoded(scratch.data(), stride, v.cols, true, X, ldx, m, Y + r, ldy);
            }
            return;
        }
    }
    (void)scratch;
    for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t j = 0; j < m; ++j) Y[j * ldy + r] = dot_row(v, r, X + j * ldx, mode);
}

}  // namespace grphi::kernels::avx2
#endif
