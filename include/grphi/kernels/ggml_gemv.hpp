// GEMV on llama.cpp's Q4_0 and Q8_0 block layouts (baselines/ggml_blocks.hpp), the way ggml runs them:
// the activation vector is quantized to Q8_0 once, then every block's dot product is an integer sum
// of 32 code products scaled by d_w * d_x. Scalar reference, AVX2 and AVX-512 through kernels/dispatch.hpp.
// Scalar order: per block the exact integer sum, then sum += (d_w * d_x) * isum block after block;
// SIMD paths keep per-lane partial sums (within n_blocks * eps * sum|d_w d_x isum| of the reference).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../baselines/ggml_blocks.hpp"
#include "../io/half.hpp"
#include "dispatch.hpp"

#if GRPHI_X86_DISPATCH
#include <immintrin.h>
#endif

namespace grphi::kernels {

namespace ggml_scalar {

inline int block_isum(const baselines::block_q4_0& w, const baselines::block_q8_0& x) {
    int s = 0;
    for (std::size_t j = 0; j < 32; ++j) s += (baselines::block_code(w, j) - 8) * x.qs[j];
    return s;
}
inline int block_isum(const baselines::block_q8_0& w, const baselines::block_q8_0& x) {
    int s = 0;
    for (std::size_t j = 0; j < 32; ++j) s += w.qs[j] * x.qs[j];
    return s;
}
template <class Block>
float dot(const Block* w, const baselines::block_q8_0* x, std::size_t blocks) {
    float sum = 0;
    for (std::size_t b = 0; b < blocks; ++b)
        sum += half_to_float(w[b].d) * half_to_float(x[b].d) * static_cast<float>(block_isum(w[b], x[b]));
    return sum;
}

}  // namespace ggml_scalar

#if GRPHI_X86_DISPATCH
namespace ggml_avx2 {

GRPHI_TARGET_AVX2 inline __m256i codes(const baselines::block_q4_0& w) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.qs));
    const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
    return _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
}
GRPHI_TARGET_AVX2 inline __m256i codes(const baselines::block_q8_0& w) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.qs));
}
// 8 int32 partial sums of a * b as floats (signed bytes: |a| times b with a's sign, as ggml does).
GRPHI_TARGET_AVX2 inline __m256 products(__m256i a, __m256i b) {
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
}
template <class Block>
GRPHI_TARGET_AVX2 float dot(const Block* w, const baselines::block_q8_0* x, std::size_t blocks) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    std::size_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
        const __m256 d0 = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d));
        const __m256 d1 = _mm256_set1_ps(_cvtsh_ss(w[b + 1].d) * _cvtsh_ss(x[b + 1].d));
        acc0 = _mm256_fmadd_ps(d0, products(codes(w[b]), codes(x[b])), acc0);
        acc1 = _mm256_fmadd_ps(d1, products(codes(w[b + 1]), codes(x[b + 1])), acc1);
    }
    if (b < blocks)
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d)), products(codes(w[b]), codes(x[b])), acc0);
    const __m256 s = _mm256_add_ps(acc0, acc1);
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
}

}  // namespace ggml_avx2

namespace ggml_avx512 {

// Two blocks in one register: 16 int32 partial sums (lanes 0-7 block 0, 8-15 block 1).
GRPHI_TARGET_AVX512 inline __m512i codes2(const baselines::block_q4_0& a, const baselines::block_q4_0& b) {
    const __m256i qa = _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a.qs)));
    const __m256i qab = _mm256_inserti128_si256(qa, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)), 1);
    // Low nibbles of both blocks, then high nibbles: reorder to block a (lo, hi), block b (lo, hi).
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(qab), _mm256_srli_epi16(qab, 4), 1);
    const __m512i order = _mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7);
    const __m512i nibbles = _mm512_and_si512(_mm512_permutexvar_epi64(order, both), _mm512_set1_epi8(0x0F));
    return _mm512_sub_epi8(nibbles, _mm512_set1_epi8(8));
}
GRPHI_TARGET_AVX512 inline __m512i codes2(const baselines::block_q8_0& a, const baselines::block_q8_0& b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs))),
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)), 1);
}
GRPHI_TARGET_AVX512 inline __m512 products(__m512i a, __m512i b) {
    const __m512i abs_a = _mm512_abs_epi8(a);
    const __m512i signed_b = _mm512_mask_sub_epi8(b, _mm512_movepi8_mask(a), _mm512_setzero_si512(), b);
    const __m512i pairs = _mm512_maddubs_epi16(abs_a, signed_b);
    return _mm512_cvtepi32_ps(_mm512_madd_epi16(pairs, _mm512_set1_epi16(1)));
}
// d_w * d_x of blocks i and i + 1, each over its 8 lanes.
template <class Block>
GRPHI_TARGET_AVX512 inline __m512 scale2(const Block* w, const baselines::block_q8_0* x, std::size_t i) {
    return _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(w[i].d) * _cvtsh_ss(x[i].d)),
                              _mm256_set1_ps(_cvtsh_ss(w[i + 1].d) * _cvtsh_ss(x[i + 1].d)), 1);
}
template <class Block>
GRPHI_TARGET_AVX512 float dot(const Block* w, const baselines::block_q8_0* x, std::size_t blocks) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    std::size_t b = 0;
    for (; b + 4 <= blocks; b += 4) {
        acc0 = _mm512_fmadd_ps(scale2(w, x, b), products(codes2(w[b], w[b + 1]), codes2(x[b], x[b + 1])), acc0);
        acc1 = _mm512_fmadd_ps(scale2(w, x, b + 2), products(codes2(w[b + 2], w[b + 3]), codes2(x[b + 2], x[b + 3])), acc1);
    }
    for (; b + 2 <= blocks; b += 2)
        acc0 = _mm512_fmadd_ps(scale2(w, x, b), products(codes2(w[b], w[b + 1]), codes2(x[b], x[b + 1])), acc0);
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    if (b < blocks) sum += _cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d) * static_cast<float>(ggml_scalar::block_isum(w[b], x[b]));
    return sum;
}

}  // namespace ggml_avx512
#endif

// Row dot products on the given path: blocks of one row times the quantized activations.
template <class Block>
float ggml_dot(const Block* row, const baselines::block_q8_0* x, std::size_t blocks, isa path) {
    switch (path) {
#if GRPHI_X86_DISPATCH
    case isa::avx512: return ggml_avx512::dot(row, x, blocks);
    case isa::avx2: return ggml_avx2::dot(row, x, blocks);
#endif
    default: return ggml_scalar::dot(row, x, blocks);
    }
}

// y = W x for rows * blocks_per_row(cols, 32) blocks at `blocks` (row after row), as llama.cpp
// computes it: x quantized to Q8_0 (into xq, reused), then block dot products.
template <class Block>
void ggml_gemv(const Block* blocks, std::size_t rows, std::size_t cols, const float* x, float* y,
               std::vector<baselines::block_q8_0>& xq) {
    const std::size_t per_row = baselines::blocks_per_row(cols, Block::members);
    xq.resize(per_row);
    baselines::quantize_row_q8_0(x, cols, xq.data());
    const isa path = active_isa();
    const auto n = static_cast<long>(rows);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows * cols >= (std::size_t(1) << 18))
#endif
    for (long r = 0; r < n; ++r)
        y[r] = ggml_dot(blocks + static_cast<std::size_t>(r) * per_row, xq.data(), per_row, path);
}

template <class Block>
void ggml_gemv(const baselines::ggml_matrix<Block>& m, const float* x, float* y, std::vector<baselines::block_q8_0>& xq) {
    ggml_gemv(m.blocks.data(), m.rows, m.cols, x, y, xq);
}

}  // namespace grphi::kernels
