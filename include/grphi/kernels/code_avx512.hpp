// AVX-512 kernels on code matrices (compiled with GRPHI_TARGET_AVX512 whatever the build's -march).
// 4-bit: a block's 16 signed levels sit in one zmm register; a zero-extended byte vector indexes it
// twice (vpermps reads the low 4 bits: the low nibble; a shift gives the high one).
// 8-bit: the block's first 32, 64 or 128 levels in 2, 4 or 8 registers (the matrix's widest block
// decides), permutes on the low 7 bits, the sign from bit 7.
// Summation order (float GEMV): per-channel 4-bit rows in group order (dot_row_groups); other rows:
// chunk q of 32 weights adds its two halves into accumulator pair q % 2; the row's sum is
// ((a0 + a1) + (a2 + a3)) reduced across lanes. gemm with up to 8 columns runs these; wider gemm sums in
// the scalar reference's order (outer_tile).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../compute/code_matrix.hpp"
#include "code_scalar.hpp"
#include "dispatch.hpp"
#include "group_order.hpp"

#if GRPHI_X86_DISPATCH
#include <immintrin.h>

// Small fixed loops over register arrays must unroll completely, or the arrays live in memory.
#define GRPHI_UNROLL _Pragma("GCC unroll 16")

namespace grphi::kernels::avx512 {

// A 4-bit block's table: +levels in lanes 0-7, -levels in 8-15; lane 7 (the zero slot) is 0 when reserved.
GRPHI_TARGET_AVX512 inline __m512 table16(const float* levels, std::uint32_t entry) {
    const __m256 mag = _mm256_maskz_loadu_ps(static_cast<__mmask8>(entry & 1u ? 0x7F : 0xFF), levels + (entry >> 1));
    const __m256 neg = _mm256_xor_ps(mag, _mm256_set1_ps(-0.0f));
    return _mm512_insertf32x8(_mm512_castps256_ps512(mag), neg, 1);
}

// Lanes below n (n may exceed 16).
GRPHI_TARGET_AVX512 inline __mmask16 first_lanes16(std::size_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}
GRPHI_TARGET_AVX512 inline __mmask8 first_lanes8(std::size_t n) {
    return n >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << n) - 1u);
}

// The two 16-weight halves of a 4-bit chunk as floats (lanes past n are whatever the padding codes give).
GRPHI_TARGET_AVX512 inline void decode_chunk4(const std::uint8_t* bytes, __m512 table, __m512& lo, __m512& hi) {
    const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
    lo = _mm512_permutexvar_ps(idx, table);
    hi = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), table);
}

// The float driver: chunk q of a row (32 weights) goes into accumulator pair q % 2, held in local
// registers; a decoder adds one chunk: d.accumulate(c, x0, x1, lo, hi) with the chunk's activations.
template <class Decoder>
GRPHI_TARGET_AVX512 inline float dot_float(const code_view& v, std::size_t r, const float* x, Decoder& d) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    if (v.block_size == 32 && v.blocks_per_row > 1) {
        // Blocks of one chunk (the common block format): block b is chunk b, without the general
        // loop's per-block branches; the same accumulators, so the same sums.
        const std::size_t full = v.cols / 32;
        std::size_t b = 0;
        for (; b + 2 <= full; b += 2) {
            const std::size_t c = 32 * b;
            d.start_block(r, b);
            d.accumulate(c, _mm512_loadu_ps(x + c), _mm512_loadu_ps(x + c + 16), a0, a1);
            d.start_block(r, b + 1);
            d.accumulate(c + 32, _mm512_loadu_ps(x + c + 32), _mm512_loadu_ps(x + c + 48), a2, a3);
        }
        if (b < full) {
            d.start_block(r, b);
            d.accumulate(32 * b, _mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16), a0, a1);
            ++b;
        }
        if (b < v.blocks_per_row) {  // the short last block: activations past the row end read as 0
            const std::size_t c = 32 * b, n = v.cols - c;
            const __m512 x0 = _mm512_maskz_loadu_ps(first_lanes16(n), x + c);
            const __m512 x1 = _mm512_maskz_loadu_ps(n > 16 ? first_lanes16(n - 16) : __mmask16(0), x + c + 16);
            d.start_block(r, b);
            if (b & 1)
                d.accumulate(c, x0, x1, a2, a3);
            else
                d.accumulate(c, x0, x1, a0, a1);
        }
        return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
    std::size_t q = 0;
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        d.start_block(r, b);
        std::size_t c = first;
        if ((q & 1) && c + 32 <= last) {
            d.accumulate(c, _mm512_loadu_ps(x + c), _mm512_loadu_ps(x + c + 16), a2, a3);
            c += 32;
            ++q;
        }
        for (; c + 64 <= last; c += 64, q += 2) {
            d.accumulate(c, _mm512_loadu_ps(x + c), _mm512_loadu_ps(x + c + 16), a0, a1);
            d.accumulate(c + 32, _mm512_loadu_ps(x + c + 32), _mm512_loadu_ps(x + c + 48), a2, a3);
        }
        if (c + 32 <= last) {  // q is even here
            d.accumulate(c, _mm512_loadu_ps(x + c), _mm512_loadu_ps(x + c + 16), a0, a1);
            c += 32;
            ++q;
        }
        if (c < last) {  // a short chunk: activations past the row end read as 0
            const std::size_t n = last - c;
            const __m512 x0 = _mm512_maskz_loadu_ps(first_lanes16(n), x + c);
            const __m512 x1 = _mm512_maskz_loadu_ps(n > 16 ? first_lanes16(n - 16) : __mmask16(0), x + c + 16);
            if (q & 1)
                d.accumulate(c, x0, x1, a2, a3);
            else
                d.accumulate(c, x0, x1, a0, a1);
            ++q;
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// 4-bit, multiply by the level.
struct dot4_multiply {
    const code_view& v;
    const std::uint8_t* row;
    __m512 table;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) {
        const std::uint32_t entry = v.block(r, b);
        table = v.signed_tables ? _mm512_load_ps(v.signed_tables + 16 * std::size_t(entry)) : table16(v.levels_f, entry);
    }
    GRPHI_TARGET_AVX512 void accumulate(std::size_t c, __m512 x0, __m512 x1, __m512& lo, __m512& hi) const {
        __m512 w0, w1;
        decode_chunk4(row + c / 2, table, w0, w1);
        lo = _mm512_fmadd_ps(w0, x0, lo);
        hi = _mm512_fmadd_ps(w1, x1, hi);
    }
};

// 4-bit, base 2: x * 2^k by adding k to x's exponent bits and the sign by the carry into bit 31;
// lanes where that is not exact (x or result not normal, zero codes) multiply.
struct dot4_exponent_add {
    const code_view& v;
    const std::uint8_t* row;
    __m512 table;
    __m512i addend, exponent;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) {
        const std::uint32_t entry = v.block(r, b);
        table = table16(v.levels_f, entry);
        const int top = v.top_exponent[r * v.blocks_per_row + b];
        alignas(64) std::int32_t add[16], k[16];
        for (int n = 0; n < 16; ++n) {
            const int offset = n & 7;
            const bool zero = (entry & 1u) && offset == 7;
            k[n] = zero ? -100000 : top - offset;
            add[n] = static_cast<std::int32_t>((static_cast<std::uint32_t>(top - offset) << 23) + (n >= 8 ? 0x80000000u : 0u));
        }
        addend = _mm512_load_si512(add);
        exponent = _mm512_load_si512(k);
    }
    GRPHI_TARGET_AVX512 __m512 product(__m512i idx, __m512 xv) const {
        const __m512i bits = _mm512_castps_si512(xv);
        const __m512i e = _mm512_and_si512(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(0xFF));
        const __m512i e_new = _mm512_add_epi32(e, _mm512_permutexvar_epi32(idx, exponent));
        const __m512i one = _mm512_set1_epi32(1), span = _mm512_set1_epi32(254);
        const __mmask16 ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(e, one), span) &
                             _mm512_cmplt_epu32_mask(_mm512_sub_epi32(e_new, one), span);
        const __m512 shifted = _mm512_castsi512_ps(_mm512_add_epi32(bits, _mm512_permutexvar_epi32(idx, addend)));
        if (ok == 0xFFFF) return shifted;
        return _mm512_mask_mov_ps(_mm512_mul_ps(_mm512_permutexvar_ps(idx, table), xv), ok, shifted);
    }
    GRPHI_TARGET_AVX512 void accumulate(std::size_t c, __m512 x0, __m512 x1, __m512& lo, __m512& hi) const {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2)));
        lo = _mm512_add_ps(lo, product(idx, x0));  // vpermd reads the low 4 bits: the low nibble
        hi = _mm512_add_ps(hi, product(_mm512_srli_epi32(idx, 4), x1));
    }
};

// 8-bit tables: the block's first `entries` levels (32, 64 or 128) with the last one zero (the zero slot).
struct table8 {
    __m512 t[8];
};
GRPHI_TARGET_AVX512 inline void load_table8(table8& tb, const float* levels, std::uint32_t entry, int registers) {
    const float* p = levels + (entry >> 1);
    for (int i = 0; i < registers; ++i)
        tb.t[i] = _mm512_maskz_loadu_ps(i == registers - 1 ? __mmask16(0x7FFF) : __mmask16(0xFFFF), p + 16 * i);
}
template <int Registers>
GRPHI_TARGET_AVX512 inline __m512 lookup8(const table8& tb, __m512i idx) {
    __m512 mag = _mm512_permutex2var_ps(tb.t[0], idx, tb.t[1]);
    if constexpr (Registers > 2) {
        const __mmask16 bit5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
        mag = _mm512_mask_mov_ps(mag, bit5, _mm512_permutex2var_ps(tb.t[2], idx, tb.t[3]));
        if constexpr (Registers > 4) {
            __m512 upper = _mm512_permutex2var_ps(tb.t[4], idx, tb.t[5]);
            upper = _mm512_mask_mov_ps(upper, bit5, _mm512_permutex2var_ps(tb.t[6], idx, tb.t[7]));
            mag = _mm512_mask_mov_ps(mag, _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64)), upper);
        }
    }
    // a ^ (b & c): the sign bit 7 moved to bit 31.
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(mag), _mm512_slli_epi32(idx, 24),
                                                         _mm512_set1_epi32(static_cast<int>(0x80000000u)), 0x78));
}

// Registers an 8-bit table needs for this matrix: its widest block plus the zero slot must fit.
inline int table8_registers(const code_view& v) { return v.max_span < 32 ? 2 : v.max_span < 64 ? 4 : 8; }

template <int Registers>
struct dot8_multiply {
    const code_view& v;
    const std::uint8_t* row;
    table8 tb;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) { load_table8(tb, v.levels_f, v.block(r, b), Registers); }
    GRPHI_TARGET_AVX512 __m512 weights(std::size_t c) const {
        // Codes past the row end come from the row's padding (rows are 64-byte multiples, c + 32 <= that).
        return lookup8<Registers>(tb, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
    }
    GRPHI_TARGET_AVX512 void accumulate(std::size_t c, __m512 x0, __m512 x1, __m512& lo, __m512& hi) const {
        lo = _mm512_fmadd_ps(weights(c), x0, lo);
        hi = _mm512_fmadd_ps(weights(c + 16), x1, hi);
    }
};

// Double activations: a chunk of 32 in four 8-lane groups, accumulator g for weights 8g..8g+7.
template <class Decoder>
GRPHI_TARGET_AVX512 inline double dot_double(const code_view& v, std::size_t r, const double* x, Decoder& d) {
    __m512d a[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        d.start_block(r, b);
        for (std::size_t c = first; c < last; c += 32) {
            const std::size_t n = last - c;
            __m512d w[4];
            d.weights(c, w);
            for (std::size_t g = 0; g < 4; ++g) {
                const __m512d xv = n >= 32 ? _mm512_loadu_pd(x + c + 8 * g)
                                           : _mm512_maskz_loadu_pd(n > 8 * g ? first_lanes8(n - 8 * g) : __mmask8(0), x + c + 8 * g);
                a[g] = _mm512_fmadd_pd(w[g], xv, a[g]);
            }
        }
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a[0], a[1]), _mm512_add_pd(a[2], a[3])));
}

struct dot4_double {
    const code_view& v;
    const std::uint8_t* row;
    __m512d positive, negative;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) {
        const std::uint32_t entry = v.block(r, b);
        positive = _mm512_maskz_loadu_pd(static_cast<__mmask8>(entry & 1u ? 0x7F : 0xFF), v.levels_d + (entry >> 1));
        negative = _mm512_castsi512_pd(
            _mm512_xor_si512(_mm512_castpd_si512(positive), _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ull))));
    }
    // vpermt2pd reads 4 index bits: 3 select the level, bit 3 (the sign) the negated table.
    GRPHI_TARGET_AVX512 void weights(std::size_t c, __m512d w[4]) const {
        const __m512i i0 = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2)));
        const __m512i i1 = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2 + 8)));
        w[0] = _mm512_permutex2var_pd(positive, i0, negative);
        w[1] = _mm512_permutex2var_pd(positive, i1, negative);
        w[2] = _mm512_permutex2var_pd(positive, _mm512_srli_epi64(i0, 4), negative);
        w[3] = _mm512_permutex2var_pd(positive, _mm512_srli_epi64(i1, 4), negative);
    }
};

struct dot8_double {
    const code_view& v;
    const std::uint8_t* row;
    const double* table;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) { table = v.levels_d + (v.block(r, b) >> 1); }
    GRPHI_TARGET_AVX512 __m512d group(std::size_t c) const {
        const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
        const __m256i offset = _mm256_and_si256(idx, _mm256_set1_epi32(127));
        const __mmask8 nonzero = _mm256_cmpneq_epi32_mask(offset, _mm256_set1_epi32(127));
        const __m512d mag = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), nonzero, offset, table, 8);
        const __m512i sign = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm256_srli_epi32(idx, 7)), 63);
        return _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(mag), sign));
    }
    GRPHI_TARGET_AVX512 void weights(std::size_t c, __m512d w[4]) const {
        for (std::size_t g = 0; g < 4; ++g) w[g] = group(c + 8 * g);
    }
};

// Group order (4-bit rows of one block, float activations, the multiply): a 128-weight group's 64
// bytes as 16 dwords, shifted right by 4j, hold in lane L the signed code of weight
// group_lane_weight(j, L) (vpermps reads the low 4 bits: sign and offset, the table is signed), so per
// 16 weights it is a shift, a permute and an FMA: no byte expansion, one shuffle instead of 1.5. The
// activations are read in that order, permuted once per call (to_group_order<16>). Summation order: vector j
// of every group into accumulator j % 4, reduced as ((a0 + a1) + (a2 + a3)).
// Row r (reads_groups) against activations in group order. A row's codes fill whole 64-byte groups
// (rows are 64-byte aligned); padding codes decode to finite levels, which meet zero activations.
GRPHI_TARGET_AVX512 inline float dot_row_groups(const code_view& v, std::size_t r, const float* xg) {
    const std::uint8_t* row = v.row(r);
    const std::uint32_t entry = v.block(r, 0);
    const __m512 table = v.signed_tables ? _mm512_load_ps(v.signed_tables + 16 * std::size_t(entry)) : table16(v.levels_f, entry);
    const std::size_t ahead = prefetch_ahead(v);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (std::size_t c = 0; c < v.cols; c += 128) {
        _mm_prefetch(reinterpret_cast<const char*>(row + c / 2 + ahead), _MM_HINT_T1);
        const __m512i d = _mm512_loadu_si512(row + c / 2);
        const float* x = xg + c;
        a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(d, table), _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table), _mm512_loadu_ps(x + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 8), table), _mm512_loadu_ps(x + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 12), table), _mm512_loadu_ps(x + 48), a3);
        a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 16), table), _mm512_loadu_ps(x + 64), a0);
        a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 20), table), _mm512_loadu_ps(x + 80), a1);
        a2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 24), table), _mm512_loadu_ps(x + 96), a2);
        a3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 28), table), _mm512_loadu_ps(x + 112), a3);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// Rows r and r + 1 (both reads_groups) at once: one pass over the activations for two rows, each row
// summed in dot_row_groups' order, so each result equals dot_row_groups'.
GRPHI_TARGET_AVX512 inline void dot_rows2_groups(const code_view& v, std::size_t r, const float* xg, float* y) {
    const std::uint8_t* row0 = v.row(r);
    const std::uint8_t* row1 = v.row(r + 1);
    const std::uint32_t e0 = v.block(r, 0), e1 = v.block(r + 1, 0);
    const __m512 t0 = v.signed_tables ? _mm512_load_ps(v.signed_tables + 16 * std::size_t(e0)) : table16(v.levels_f, e0);
    const __m512 t1 = v.signed_tables ? _mm512_load_ps(v.signed_tables + 16 * std::size_t(e1)) : table16(v.levels_f, e1);
    const std::size_t ahead = prefetch_ahead(v);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (std::size_t c = 0; c < v.cols; c += 128) {
        _mm_prefetch(reinterpret_cast<const char*>(row0 + c / 2 + ahead), _MM_HINT_T1);
        _mm_prefetch(reinterpret_cast<const char*>(row1 + c / 2 + ahead), _MM_HINT_T1);
        const __m512i d = _mm512_loadu_si512(row0 + c / 2);
        const __m512i e = _mm512_loadu_si512(row1 + c / 2);
        const float* x = xg + c;
        __m512 xv = _mm512_loadu_ps(x);
        a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(d, t0), xv, a0);
        b0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(e, t1), xv, b0);
#define GRPHI_STEP2(J, A, B) \
        xv = _mm512_loadu_ps(x + 16 * J); \
        A = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 4 * J), t0), xv, A); \
        B = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(e, 4 * J), t1), xv, B);
        GRPHI_STEP2(1, a1, b1)
        GRPHI_STEP2(2, a2, b2)
        GRPHI_STEP2(3, a3, b3)
        GRPHI_STEP2(4, a0, b0)
        GRPHI_STEP2(5, a1, b1)
        GRPHI_STEP2(6, a2, b2)
        GRPHI_STEP2(7, a3, b3)
#undef GRPHI_STEP2
    }
    y[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    y[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3)));
}

template <class A>
GRPHI_TARGET_AVX512 A dot_row(const code_view& v, std::size_t r, const A* x, level_product mode) {
    if constexpr (std::is_same_v<A, float>) {
        if (v.bits == 4 && mode == level_product::exponent_add) {
            dot4_exponent_add d{v, v.row(r), {}, {}, {}};
            return dot_float(v, r, x, d);
        }
        if (mode == level_product::exponent_add) return scalar::dot_row(v, r, x, mode);
        if (v.bits == 4) {
            dot4_multiply d{v, v.row(r), {}};
            return dot_float(v, r, x, d);
        }
        switch (table8_registers(v)) {
        case 2: {
            dot8_multiply<2> d{v, v.row(r), {}};
            return dot_float(v, r, x, d);
        }
        case 4: {
            dot8_multiply<4> d{v, v.row(r), {}};
            return dot_float(v, r, x, d);
        }
        default: {
            dot8_multiply<8> d{v, v.row(r), {}};
            return dot_float(v, r, x, d);
        }
        }
    } else {
        if (mode == level_product::exponent_add) return scalar::dot_row(v, r, x, mode);
        if (v.bits == 4) {
            dot4_double d{v, v.row(r), {}, {}};
            return dot_double(v, r, x, d);
        }
        dot8_double d{v, v.row(r), {}};
        return dot_double(v, r, x, d);
    }
}

// Decodes rows [r0, r0 + count) into dst (row stride `stride` floats, zeros past cols).
GRPHI_TARGET_AVX512 inline void decode_rows(const code_view& v, std::size_t r0, std::size_t count, float* dst,
                                            std::size_t stride) {
    for (std::size_t i = 0; i < count; ++i) {
        const std::size_t r = r0 + i;
        const std::uint8_t* row = v.row(r);
        float* out = dst + i * stride;
        for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
            const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
            if (v.bits == 4) {
                const __m512 table = table16(v.levels_f, v.block(r, b));
                for (std::size_t c = first; c < last; c += 32) {
                    __m512 lo, hi;
                    decode_chunk4(row + c / 2, table, lo, hi);
                    _mm512_storeu_ps(out + c, _mm512_maskz_mov_ps(first_lanes16(last - c), lo));
                    _mm512_storeu_ps(out + c + 16, _mm512_maskz_mov_ps(last - c > 16 ? first_lanes16(last - c - 16) : __mmask16(0), hi));
                }
            } else {
                table8 tb;
                load_table8(tb, v.levels_f, v.block(r, b), 8);
                for (std::size_t c = first; c < last; c += 16) {
                    const __m512 w = lookup8<8>(tb, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
                    _mm512_storeu_ps(out + c, _mm512_maskz_mov_ps(first_lanes16(last - c), w));
                }
            }
        }
    }
}

// Weights [c0, c1) of row r decoded into dst (c0 a multiple of 32).
GRPHI_TARGET_AVX512 inline void decode_range(const code_view& v, std::size_t r, std::size_t c0, std::size_t c1, float* dst) {
    const std::uint8_t* row = v.row(r);
    for (std::size_t b = c0 / v.block_size; b < v.blocks_per_row && b * v.block_size < c1; ++b) {
        const std::size_t first = std::max(c0, b * v.block_size), last = std::min({v.cols, (b + 1) * v.block_size, c1});
        if (v.bits == 4) {
            const __m512 table = table16(v.levels_f, v.block(r, b));
            for (std::size_t c = first; c < last; c += 32) {
                __m512 lo, hi;
                decode_chunk4(row + c / 2, table, lo, hi);
                const std::size_t n = last - c;
                _mm512_mask_storeu_ps(dst + (c - c0), first_lanes16(n), lo);
                if (n > 16) _mm512_mask_storeu_ps(dst + (c - c0) + 16, first_lanes16(n - 16), hi);
            }
        } else {
            table8 tb;
            load_table8(tb, v.levels_f, v.block(r, b), 8);
            for (std::size_t c = first; c < last; c += 16) {
                const __m512 w = lookup8<8>(tb, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))));
                _mm512_mask_storeu_ps(dst + (c - c0), first_lanes16(last - c), w);
            }
        }
    }
}

// GEMM as outer products: Yt(r, j) += W(r, c) * Xt(c, j) for c in order, R rows by J vectors of 16
// columns in registers. Per entry that is the scalar reference's order exactly (sum = fma(w, x, sum)
// from column 0 up), so gemm on this path equals the scalar gemm bit for bit.
template <int R, int J>
GRPHI_TARGET_AVX512 inline void outer_tile(const float* w, std::size_t wld, std::size_t k, const float* xt, std::size_t xld,
                                           float* yt, std::size_t yld) {
    __m512 acc[R][J];
    GRPHI_UNROLL
    for (int i = 0; i < R; ++i) {
        GRPHI_UNROLL
        for (int j = 0; j < J; ++j) acc[i][j] = _mm512_loadu_ps(yt + static_cast<std::size_t>(i) * yld + 16 * static_cast<std::size_t>(j));
    }
    for (std::size_t c = 0; c < k; ++c) {
        __m512 xv[J];
        GRPHI_UNROLL
        for (int j = 0; j < J; ++j) xv[j] = _mm512_loadu_ps(xt + c * xld + 16 * static_cast<std::size_t>(j));
        GRPHI_UNROLL
        for (int i = 0; i < R; ++i) {
            const __m512 wv = _mm512_set1_ps(w[static_cast<std::size_t>(i) * wld + c]);
            GRPHI_UNROLL
            for (int j = 0; j < J; ++j) acc[i][j] = _mm512_fmadd_ps(wv, xv[j], acc[i][j]);
        }
    }
    GRPHI_UNROLL
    for (int i = 0; i < R; ++i) {
        GRPHI_UNROLL
        for (int j = 0; j < J; ++j) _mm512_storeu_ps(yt + static_cast<std::size_t>(i) * yld + 16 * static_cast<std::size_t>(j), acc[i][j]);
    }
}

template <int J>
GRPHI_TARGET_AVX512 inline void outer_rows(int rows, const float* w, std::size_t wld, std::size_t k, const float* xt,
                                           std::size_t xld, float* yt, std::size_t yld) {
    switch (rows) {
    case 6: return outer_tile<6, J>(w, wld, k, xt, xld, yt, yld);
    case 5: return outer_tile<5, J>(w, wld, k, xt, xld, yt, yld);
    case 4: return outer_tile<4, J>(w, wld, k, xt, xld, yt, yld);
    case 3: return outer_tile<3, J>(w, wld, k, xt, xld, yt, yld);
    case 2: return outer_tile<2, J>(w, wld, k, xt, xld, yt, yld);
    default: return outer_tile<1, J>(w, wld, k, xt, xld, yt, yld);
    }
}

// Panel sizes: 48 rows by 256 columns of decoded weights (48 KB) against a 256 x mp block of Xt.
inline constexpr std::size_t gemm_panel_rows = 48, gemm_panel_cols = 256;

// Rows [r0, r0 + count) of Yt (rows x mp, row-major, zero on entry) from Xt (cols x mp, row-major).
GRPHI_TARGET_AVX512 inline void gemm_panel(const code_view& v, std::size_t r0, std::size_t count, const float* xt,
                                           std::size_t mp, float* yt, std::vector<float>& scratch) {
    scratch.resize(gemm_panel_rows * gemm_panel_cols);
    float* w = scratch.data();
    for (std::size_t c0 = 0; c0 < v.cols; c0 += gemm_panel_cols) {
        const std::size_t k = std::min(gemm_panel_cols, v.cols - c0);
        for (std::size_t i = 0; i < count; ++i) decode_range(v, r0 + i, c0, c0 + k, w + i * gemm_panel_cols);
        // The next step's codes (48 rows, 2 KB apart) while this step computes: the stride defeats the prefetcher.
        if (c0 + gemm_panel_cols < v.cols)
            for (std::size_t i = 0; i < count; ++i)
                for (std::size_t b = 0; b < gemm_panel_cols * v.bits / 8; b += 64)
                    _mm_prefetch(reinterpret_cast<const char*>(v.row(r0 + i) + (c0 + gemm_panel_cols) * v.bits / 8 + b), _MM_HINT_T0);
        for (std::size_t jb = 0; jb < mp;) {
            const std::size_t vectors = std::min<std::size_t>(4, (mp - jb) / 16);
            for (std::size_t i = 0; i < count; i += 6) {
                const int rows = static_cast<int>(std::min<std::size_t>(6, count - i));
                float* y = yt + (r0 + i) * mp + jb;
                const float* wi = w + i * gemm_panel_cols;
                if (vectors == 4)
                    outer_rows<4>(rows, wi, gemm_panel_cols, k, xt + c0 * mp + jb, mp, y, mp);
                else if (vectors == 3)
                    outer_rows<3>(rows, wi, gemm_panel_cols, k, xt + c0 * mp + jb, mp, y, mp);
                else if (vectors == 2)
                    outer_rows<2>(rows, wi, gemm_panel_cols, k, xt + c0 * mp + jb, mp, y, mp);
                else
                    outer_rows<1>(rows, wi, gemm_panel_cols, k, xt + c0 * mp + jb, mp, y, mp);
            }
            jb += 16 * vectors;
        }
    }
}

template <class A>
GRPHI_TARGET_AVX512 void gemm_rows(const code_view& v, std::size_t r0, std::size_t r1, const A* X, std::size_t ldx,
                                   std::size_t m, A* Y, std::size_t ldy, level_product mode, std::vector<A>&) {
    if constexpr (std::is_same_v<A, float>) {
        if (reads_groups<A>(v, mode)) {  // X in group order (code_matmul's gemm passes it so)
            for (std::size_t r = r0; r < r1; ++r)
                for (std::size_t j = 0; j < m; ++j) Y[j * ldy + r] = dot_row_groups(v, r, X + j * ldx);
            return;
        }
    }
    for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t j = 0; j < m; ++j) Y[j * ldy + r] = dot_row(v, r, X + j * ldx, mode);
}

}  // namespace grphi::kernels::avx512
#endif
