// AVX-512 kernels on code matrices (compiled with GRPHI_TARGET_AVX512 whatever the build's -march).
// 4-bit: a block's 16 signed levels sit in one zmm register; a zero-extended byte vector indexes it
// twice (vpermps reads the low 4 bits: the low nibble; a shift gives the high one).
// 8-bit: the block's first 32, 64 or 128 levels in 2, 4 or 8 registers (the matrix's widest block
// decides), permutes on the low 7 bits, the sign from bit 7.
// Summation order (float): chunk q of 32 weights adds its two halves into accumulator pair q % 2; the
// row's sum is ((a0 + a1) + (a2 + a3)) reduced across lanes. gemm follows the same order exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../code_matrix.hpp"
#include "code_scalar.hpp"
#include "dispatch.hpp"

#if GRPHI_X86_DISPATCH
#include <immintrin.h>

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

// The chunk loop shared by every float kernel: chunk(q, c, n, table_source) with n weights left in the
// chunk's block, chunk index q from the row start. Pairs of full chunks go first when q is even.
template <class Chunk>
GRPHI_TARGET_AVX512 inline void for_each_chunk(const code_view& v, std::size_t r, Chunk&& chunk) {
    std::size_t q = 0;
    for (std::size_t b = 0; b < v.blocks_per_row; ++b) {
        const std::size_t first = b * v.block_size, last = std::min(v.cols, first + v.block_size);
        chunk.start_block(r, b);
        for (std::size_t c = first; c < last;) {
            if ((q & 1) == 0 && c + 64 <= last) {
                chunk.full(c, 0);
                chunk.full(c + 32, 1);
                c += 64;
                q += 2;
            } else if (c + 32 <= last) {
                chunk.full(c, q & 1);
                c += 32;
                ++q;
            } else {
                chunk.partial(c, last - c, q & 1);
                c = last;
                ++q;
            }
        }
    }
}

struct float_accumulators {
    __m512 a[4];
};

GRPHI_TARGET_AVX512 inline float reduce(const float_accumulators& s) {
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s.a[0], s.a[1]), _mm512_add_ps(s.a[2], s.a[3])));
}

// 4-bit, float activations, multiply by the level.
struct dot4_multiply {
    const code_view& v;
    const std::uint8_t* row;
    const float* x;
    float_accumulators s;
    __m512 table;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) { table = table16(v.levels_f, v.block(r, b)); }
    GRPHI_TARGET_AVX512 void full(std::size_t c, std::size_t pair) {
        __m512 lo, hi;
        decode_chunk4(row + c / 2, table, lo, hi);
        s.a[2 * pair] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(x + c), s.a[2 * pair]);
        s.a[2 * pair + 1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(x + c + 16), s.a[2 * pair + 1]);
    }
    GRPHI_TARGET_AVX512 void partial(std::size_t c, std::size_t n, std::size_t pair) {
        __m512 lo, hi;
        decode_chunk4(row + c / 2, table, lo, hi);
        const __m512 x0 = _mm512_maskz_loadu_ps(first_lanes16(n), x + c);
        const __m512 x1 = _mm512_maskz_loadu_ps(n > 16 ? first_lanes16(n - 16) : __mmask16(0), x + c + 16);
        s.a[2 * pair] = _mm512_fmadd_ps(lo, x0, s.a[2 * pair]);
        s.a[2 * pair + 1] = _mm512_fmadd_ps(hi, x1, s.a[2 * pair + 1]);
    }
};

// 4-bit, float activations, base 2: x * 2^k by adding k to x's exponent bits and the sign by the
// carry into bit 31; lanes where that is not exact (x or result not normal, zero codes) multiply.
struct dot4_exponent_add {
    const code_view& v;
    const std::uint8_t* row;
    const float* x;
    float_accumulators s;
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
    GRPHI_TARGET_AVX512 void add(std::size_t c, __m512 x0, __m512 x1, std::size_t pair) {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c / 2)));
        const __m512i high = _mm512_and_si512(_mm512_srli_epi32(idx, 4), _mm512_set1_epi32(0xF));
        const __m512i low = _mm512_and_si512(idx, _mm512_set1_epi32(0xF));
        s.a[2 * pair] = _mm512_add_ps(s.a[2 * pair], product(low, x0));
        s.a[2 * pair + 1] = _mm512_add_ps(s.a[2 * pair + 1], product(high, x1));
    }
    GRPHI_TARGET_AVX512 void full(std::size_t c, std::size_t pair) {
        add(c, _mm512_loadu_ps(x + c), _mm512_loadu_ps(x + c + 16), pair);
    }
    GRPHI_TARGET_AVX512 void partial(std::size_t c, std::size_t n, std::size_t pair) {
        add(c, _mm512_maskz_loadu_ps(first_lanes16(n), x + c),
            _mm512_maskz_loadu_ps(n > 16 ? first_lanes16(n - 16) : __mmask16(0), x + c + 16), pair);
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
GRPHI_TARGET_AVX512 inline __m512 lookup8(const table8& tb, __m512i idx, int registers) {
    __m512 mag = _mm512_permutex2var_ps(tb.t[0], idx, tb.t[1]);
    if (registers > 2) {
        const __mmask16 bit5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
        mag = _mm512_mask_mov_ps(mag, bit5, _mm512_permutex2var_ps(tb.t[2], idx, tb.t[3]));
        if (registers > 4) {
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

struct dot8_multiply {
    const code_view& v;
    const std::uint8_t* row;
    const float* x;
    int registers;
    float_accumulators s;
    table8 tb;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) { load_table8(tb, v.levels_f, v.block(r, b), registers); }
    GRPHI_TARGET_AVX512 __m512 weights(std::size_t c) const {
        return lookup8(tb, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))), registers);
    }
    GRPHI_TARGET_AVX512 void full(std::size_t c, std::size_t pair) {
        s.a[2 * pair] = _mm512_fmadd_ps(weights(c), _mm512_loadu_ps(x + c), s.a[2 * pair]);
        s.a[2 * pair + 1] = _mm512_fmadd_ps(weights(c + 16), _mm512_loadu_ps(x + c + 16), s.a[2 * pair + 1]);
    }
    GRPHI_TARGET_AVX512 void partial(std::size_t c, std::size_t n, std::size_t pair) {
        // Codes past the row end are read from the row's padding (rows are 64-byte multiples, c + 32 <= that).
        const __m512 x0 = _mm512_maskz_loadu_ps(first_lanes16(n), x + c);
        const __m512 x1 = _mm512_maskz_loadu_ps(n > 16 ? first_lanes16(n - 16) : __mmask16(0), x + c + 16);
        s.a[2 * pair] = _mm512_fmadd_ps(weights(c), x0, s.a[2 * pair]);
        s.a[2 * pair + 1] = _mm512_fmadd_ps(weights(c + 16), x1, s.a[2 * pair + 1]);
    }
};

// Double activations: a chunk of 32 in four 8-lane groups, accumulator g for weights 8g..8g+7.
struct double_accumulators {
    __m512d a[4];
};
GRPHI_TARGET_AVX512 inline double reduce(const double_accumulators& s) {
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(s.a[0], s.a[1]), _mm512_add_pd(s.a[2], s.a[3])));
}

struct dot4_double {
    const code_view& v;
    const std::uint8_t* row;
    const double* x;
    double_accumulators s;
    __m512d positive, negative;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) {
        const std::uint32_t entry = v.block(r, b);
        positive = _mm512_maskz_loadu_pd(static_cast<__mmask8>(entry & 1u ? 0x7F : 0xFF), v.levels_d + (entry >> 1));
        negative = _mm512_castsi512_pd(
            _mm512_xor_si512(_mm512_castpd_si512(positive), _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ull))));
    }
    GRPHI_TARGET_AVX512 void add(std::size_t c, std::size_t n) {
        const __m512i i0 = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2)));
        const __m512i i1 = _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2 + 8)));
        const __m512d w[4] = {_mm512_permutex2var_pd(positive, i0, negative), _mm512_permutex2var_pd(positive, i1, negative),
                              _mm512_permutex2var_pd(positive, _mm512_srli_epi64(i0, 4), negative),
                              _mm512_permutex2var_pd(positive, _mm512_srli_epi64(i1, 4), negative)};
        for (std::size_t g = 0; g < 4; ++g) {
            const __m512d xv = n >= 32 ? _mm512_loadu_pd(x + c + 8 * g)
                                       : _mm512_maskz_loadu_pd(n > 8 * g ? first_lanes8(n - 8 * g) : __mmask8(0), x + c + 8 * g);
            s.a[g] = _mm512_fmadd_pd(w[g], xv, s.a[g]);
        }
    }
    GRPHI_TARGET_AVX512 void full(std::size_t c, std::size_t) { add(c, 32); }
    GRPHI_TARGET_AVX512 void partial(std::size_t c, std::size_t n, std::size_t) { add(c, n); }
};

struct dot8_double {
    const code_view& v;
    const std::uint8_t* row;
    const double* x;
    double_accumulators s;
    const double* table;

    GRPHI_TARGET_AVX512 void start_block(std::size_t r, std::size_t b) { table = v.levels_d + (v.block(r, b) >> 1); }
    GRPHI_TARGET_AVX512 __m512d weights(std::size_t c) const {
        const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c)));
        const __m256i offset = _mm256_and_si256(idx, _mm256_set1_epi32(127));
        const __mmask8 nonzero = _mm256_cmpneq_epi32_mask(offset, _mm256_set1_epi32(127));
        const __m512d mag = _mm512_mask_i32gather_pd(_mm512_setzero_pd(), nonzero, offset, table, 8);
        const __m512i sign = _mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm256_srli_epi32(idx, 7)), 63);
        return _mm512_castsi512_pd(_mm512_xor_si512(_mm512_castpd_si512(mag), sign));
    }
    GRPHI_TARGET_AVX512 void add(std::size_t c, std::size_t n) {
        for (std::size_t g = 0; g < 4; ++g) {
            const __m512d xv = n >= 32 ? _mm512_loadu_pd(x + c + 8 * g)
                                       : _mm512_maskz_loadu_pd(n > 8 * g ? first_lanes8(n - 8 * g) : __mmask8(0), x + c + 8 * g);
            s.a[g] = _mm512_fmadd_pd(weights(c + 8 * g), xv, s.a[g]);
        }
    }
    GRPHI_TARGET_AVX512 void full(std::size_t c, std::size_t) { add(c, 32); }
    GRPHI_TARGET_AVX512 void partial(std::size_t c, std::size_t n, std::size_t) { add(c, n); }
};

template <class A>
GRPHI_TARGET_AVX512 A dot_row(const code_view& v, std::size_t r, const A* x, level_product mode) {
    if constexpr (std::is_same_v<A, float>) {
        if (v.bits == 4 && mode == level_product::exponent_add) {
            dot4_exponent_add k{v, v.row(r), x, {}, {}, {}, {}};
            for (auto& a : k.s.a) a = _mm512_setzero_ps();
            for_each_chunk(v, r, k);
            return reduce(k.s);
        }
        if (mode == level_product::exponent_add) return scalar::dot_row(v, r, x, mode);
        if (v.bits == 4) {
            dot4_multiply k{v, v.row(r), x, {}, {}};
            for (auto& a : k.s.a) a = _mm512_setzero_ps();
            for_each_chunk(v, r, k);
            return reduce(k.s);
        }
        dot8_multiply k{v, v.row(r), x, table8_registers(v), {}, {}};
        for (auto& a : k.s.a) a = _mm512_setzero_ps();
        for_each_chunk(v, r, k);
        return reduce(k.s);
    } else {
        if (mode == level_product::exponent_add) return scalar::dot_row(v, r, x, mode);
        if (v.bits == 4) {
            dot4_double k{v, v.row(r), x, {}, {}, {}};
            for (auto& a : k.s.a) a = _mm512_setzero_pd();
            for_each_chunk(v, r, k);
            return reduce(k.s);
        }
        dot8_double k{v, v.row(r), x, {}, {}};
        for (auto& a : k.s.a) a = _mm512_setzero_pd();
        for_each_chunk(v, r, k);
        return reduce(k.s);
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
                const int registers = table8_registers(v);
                table8 tb;
                load_table8(tb, v.levels_f, v.block(r, b), registers);
                for (std::size_t c = first; c < last; c += 16) {
                    const __m512 w = lookup8(tb, _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c))), registers);
                    _mm512_storeu_ps(out + c, _mm512_maskz_mov_ps(first_lanes16(last - c), w));
                }
            }
        }
    }
}

// Two rows times two columns from decoded rows, in dot_row's order (chunk q into pair q % 2).
template <int R, int M>
GRPHI_TARGET_AVX512 inline void tile(const float* w, std::size_t stride, std::size_t cols, const float* X, std::size_t ldx,
                                     float* Y, std::size_t ldy) {
    __m512 acc[R][M][4];
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < M; ++j)
            for (int a = 0; a < 4; ++a) acc[i][j][a] = _mm512_setzero_ps();
    std::size_t c = 0;
    for (; c + 64 <= cols; c += 64) {
        for (int h = 0; h < 4; ++h) {
            __m512 xv[M];
            for (int j = 0; j < M; ++j) xv[j] = _mm512_loadu_ps(X + static_cast<std::size_t>(j) * ldx + c + 16 * h);
            for (int i = 0; i < R; ++i) {
                const __m512 wv = _mm512_loadu_ps(w + static_cast<std::size_t>(i) * stride + c + 16 * h);
                for (int j = 0; j < M; ++j) acc[i][j][h] = _mm512_fmadd_ps(wv, xv[j], acc[i][j][h]);
            }
        }
    }
    for (std::size_t q = c / 32; c < cols; c += 32, ++q) {  // at most one full chunk and one partial one
        const std::size_t pair = q & 1, n = cols - c;
        for (int h = 0; h < 2; ++h) {
            const __mmask16 mask = n > 16 * static_cast<std::size_t>(h) ? first_lanes16(n - 16 * static_cast<std::size_t>(h)) : __mmask16(0);
            __m512 xv[M];
            for (int j = 0; j < M; ++j) xv[j] = _mm512_maskz_loadu_ps(mask, X + static_cast<std::size_t>(j) * ldx + c + 16 * h);
            for (int i = 0; i < R; ++i) {
                const __m512 wv = _mm512_loadu_ps(w + static_cast<std::size_t>(i) * stride + c + 16 * h);
                for (int j = 0; j < M; ++j) acc[i][j][2 * pair + h] = _mm512_fmadd_ps(wv, xv[j], acc[i][j][2 * pair + h]);
            }
        }
    }
    for (int i = 0; i < R; ++i)
        for (int j = 0; j < M; ++j) {
            float_accumulators s;
            for (int a = 0; a < 4; ++a) s.a[a] = acc[i][j][a];
            Y[static_cast<std::size_t>(j) * ldy + static_cast<std::size_t>(i)] = reduce(s);
        }
}

template <class A>
GRPHI_TARGET_AVX512 void gemm_rows(const code_view& v, std::size_t r0, std::size_t r1, const A* X, std::size_t ldx,
                                   std::size_t m, A* Y, std::size_t ldy, level_product mode, std::vector<A>& scratch) {
    if constexpr (std::is_same_v<A, float>) {
        if (mode == level_product::multiply) {
            const std::size_t stride = (v.cols + 63) / 64 * 64;
            scratch.assign(2 * stride, 0.0f);
            for (std::size_t r = r0; r < r1; r += 2) {
                const std::size_t rows = std::min<std::size_t>(2, r1 - r);
                decode_rows(v, r, rows, scratch.data(), stride);
                std::size_t j = 0;
                for (; j + 2 <= m; j += 2) {
                    if (rows == 2)
                        tile<2, 2>(scratch.data(), stride, v.cols, X + j * ldx, ldx, Y + j * ldy + r, ldy);
                    else
                        tile<1, 2>(scratch.data(), stride, v.cols, X + j * ldx, ldx, Y + j * ldy + r, ldy);
                }
                if (j < m) {
                    if (rows == 2)
                        tile<2, 1>(scratch.data(), stride, v.cols, X + j * ldx, ldx, Y + j * ldy + r, ldy);
                    else
                        tile<1, 1>(scratch.data(), stride, v.cols, X + j * ldx, ldx, Y + j * ldy + r, ldy);
                }
            }
            return;
        }
    }
    (void)scratch;
    for (std::size_t r = r0; r < r1; ++r)
        for (std::size_t j = 0; j < m; ++j) Y[j * ldy + r] = dot_row(v, r, X + j * ldx, mode);
}

}  // namespace grphi::kernels::avx512
#endif
