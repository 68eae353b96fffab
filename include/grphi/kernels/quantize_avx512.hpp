// AVX-512 row kernels of the quantizer (compiled with GRPHI_TARGET_AVX512 whatever the build's -march,
// chosen at run time by the driver in quantize.hpp). They read a channel's register tables
// (quantize_tables.hpp) and give bit for bit what the driver's reference route gives.
// Each kernel handles a whole row: a caller without the target attribute cannot inline them, so the
// driver dispatches once per row.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <type_traits>

#include "dispatch.hpp"
#include "quantize_tables.hpp"

namespace grphi::kernels::avx512 {
// Weights per zmm register (what the clustered route's block sizes must be a multiple of).
template <class T>
inline constexpr std::size_t lanes_of = 64 / sizeof(T);
}  // namespace grphi::kernels::avx512

#if GRPHI_X86_DISPATCH
#include <immintrin.h>

// GCC 12's own AVX-512 intrinsics (their self-initialized _mm512_undefined_* operands) raise bogus
// -W(maybe-)uninitialized once inlined (GCC bug 105593); nothing in this file is uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace grphi::kernels::avx512 {

using ::grphi::detail::bits_t;

// AVX-512 operations on the bit patterns of float (16 x int32) or double (8 x int64): one definition
// per operation, the two lane widths side by side.
template <class T>
struct zmm_bits {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "grphi: float or double lanes");
    static constexpr bool wide = std::is_same_v<T, double>;  // 64-bit lanes
    using mask = std::conditional_t<wide, __mmask8, __mmask16>;
    static constexpr std::size_t lanes = 64 / sizeof(T);
    static constexpr std::size_t table_registers = 4;  // 64 float / 32 double entries: φ's widest clip windows fit
    static constexpr mask all = static_cast<mask>((1u << lanes) - 1u);
    GRPHI_TARGET_AVX512 static mask first(std::size_t count) { return static_cast<mask>((1u << count) - 1u); }
    GRPHI_TARGET_AVX512 static __m512i set1(std::int64_t v) {
        if constexpr (wide) return _mm512_set1_epi64(v); else return _mm512_set1_epi32(static_cast<std::int32_t>(v));
    }
    GRPHI_TARGET_AVX512 static __m512i load(const void* p) { return _mm512_loadu_si512(p); }
    GRPHI_TARGET_AVX512 static __m512i load(const void* p, mask m) {
        if constexpr (wide) return _mm512_maskz_loadu_epi64(m, p); else return _mm512_maskz_loadu_epi32(m, p);
    }
    // The lanes of m from p, the others from fill.
    GRPHI_TARGET_AVX512 static __m512i load_or(const void* p, mask m, __m512i fill) {
        if constexpr (wide) return _mm512_mask_loadu_epi64(fill, m, p); else return _mm512_mask_loadu_epi32(fill, m, p);
    }
    // Lane L: t's lane i[L] (the index's low bits).
    GRPHI_TARGET_AVX512 static __m512i permute(__m512i t, __m512i i) {
        if constexpr (wide) return _mm512_permutexvar_epi64(i, t); else return _mm512_permutexvar_epi32(i, t);
    }
    GRPHI_TARGET_AVX512 static void store(void* p, __m512i v, mask m) {
        if constexpr (wide) _mm512_mask_storeu_epi64(p, m, v); else _mm512_mask_storeu_epi32(p, m, v);
    }
    GRPHI_TARGET_AVX512 static __m512i min(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_min_epi64(a, b); else return _mm512_min_epi32(a, b);
    }
    GRPHI_TARGET_AVX512 static __m512i max(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_max_epi64(a, b); else return _mm512_max_epi32(a, b);
    }
    GRPHI_TARGET_AVX512 static __m512i shift_right(__m512i a, __m512i s) {
        if constexpr (wide) return _mm512_srlv_epi64(a, s); else return _mm512_srlv_epi32(a, s);
    }
    // -1 in negative lanes, 0 elsewhere.
    GRPHI_TARGET_AVX512 static __m512i sign_fill(__m512i a) {
        if constexpr (wide) return _mm512_srai_epi64(a, 63); else return _mm512_srai_epi32(a, 31);
    }
    GRPHI_TARGET_AVX512 static __m512i add(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_add_epi64(a, b); else return _mm512_add_epi32(a, b);
    }
    GRPHI_TARGET_AVX512 static __m512i sub(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_sub_epi64(a, b); else return _mm512_sub_epi32(a, b);
    }
    GRPHI_TARGET_AVX512 static long long reduce_add(__m512i a) {
        if constexpr (wide) return _mm512_reduce_add_epi64(a); else return _mm512_reduce_add_epi32(a);
    }
    GRPHI_TARGET_AVX512 static long long reduce_min(__m512i a) {
        if constexpr (wide) return _mm512_reduce_min_epi64(a); else return _mm512_reduce_min_epi32(a);
    }
    GRPHI_TARGET_AVX512 static long long reduce_max(__m512i a) {
        if constexpr (wide) return _mm512_reduce_max_epi64(a); else return _mm512_reduce_max_epi32(a);
    }
    GRPHI_TARGET_AVX512 static __m512i add_where(mask m, __m512i a, __m512i b) {
        if constexpr (wide) return _mm512_mask_add_epi64(a, m, a, b); else return _mm512_mask_add_epi32(a, m, a, b);
    }
    GRPHI_TARGET_AVX512 static __m512i or_where(mask m, __m512i a, __m512i b) {
        if constexpr (wide) return _mm512_maskz_or_epi64(m, a, b); else return _mm512_maskz_or_epi32(m, a, b);
    }
    GRPHI_TARGET_AVX512 static __m512i keep_only(mask m, __m512i a) {
        if constexpr (wide) return _mm512_maskz_mov_epi64(m, a); else return _mm512_maskz_mov_epi32(m, a);
    }
    GRPHI_TARGET_AVX512 static __m512i blend(mask m, __m512i if_false, __m512i if_true) {
        if constexpr (wide) return _mm512_mask_blend_epi64(m, if_false, if_true);
        else return _mm512_mask_blend_epi32(m, if_false, if_true);
    }
    GRPHI_TARGET_AVX512 static mask ge(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_cmpge_epi64_mask(a, b); else return _mm512_cmpge_epi32_mask(a, b);
    }
    GRPHI_TARGET_AVX512 static mask lt(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_cmplt_epi64_mask(a, b); else return _mm512_cmplt_epi32_mask(a, b);
    }
    GRPHI_TARGET_AVX512 static mask gt(__m512i a, __m512i b) {
        if constexpr (wide) return _mm512_cmpgt_epi64_mask(a, b); else return _mm512_cmpgt_epi32_mask(a, b);
    }
    // Bits of a + a for the non-negative T with bits a (rounded as T adds: to infinity past the largest).
    GRPHI_TARGET_AVX512 static __m512i twice(__m512i a) {
        if constexpr (wide) return _mm512_castpd_si512(_mm512_add_pd(_mm512_castsi512_pd(a), _mm512_castsi512_pd(a)));
        else return _mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(a)));
    }
    GRPHI_TARGET_AVX512 static mask nonzero(__m512i a) {
        if constexpr (wide) return _mm512_test_epi64_mask(a, a); else return _mm512_test_epi32_mask(a, a);
    }
    // A table in four registers: two two-register permutes, the index bit above them picks one.
    GRPHI_TARGET_AVX512 static __m512i lookup(const __m512i* t, __m512i i) {
        if constexpr (wide) {
            const mask upper = _mm512_test_epi64_mask(i, _mm512_set1_epi64(16));
            return _mm512_mask_blend_epi64(upper, _mm512_permutex2var_epi64(t[0], i, t[1]),
                                           _mm512_permutex2var_epi64(t[2], i, t[3]));
        } else {
            const mask upper = _mm512_test_epi32_mask(i, _mm512_set1_epi32(32));
            return _mm512_mask_blend_epi32(upper, _mm512_permutex2var_epi32(t[0], i, t[1]),
                                           _mm512_permutex2var_epi32(t[2], i, t[3]));
        }
    }
    GRPHI_TARGET_AVX512 static __m512i gather(const void* table, __m512i i) {
        if constexpr (wide) return _mm512_i64gather_epi64(i, table, 8); else return _mm512_i32gather_epi32(i, table, 4);
    }
    GRPHI_TARGET_AVX512 static void store_int16(std::int16_t* p, mask m, __m512i v) {
        if constexpr (wide) _mm512_mask_cvtepi64_storeu_epi16(p, m, v); else _mm512_mask_cvtepi32_storeu_epi16(p, m, v);
    }
    GRPHI_TARGET_AVX512 static void store_int8(std::int8_t* p, mask m, __m512i v) {
        if constexpr (wide) _mm512_mask_cvtepi64_storeu_epi8(p, m, v); else _mm512_mask_cvtepi32_storeu_epi8(p, m, v);
    }
    GRPHI_TARGET_AVX512 static void store_uint8(std::uint8_t* p, mask m, __m512i v) {
        store_int8(reinterpret_cast<std::int8_t*>(p), m, v);
    }
    GRPHI_TARGET_AVX512 static __m512i load_int16(const std::int16_t* p) {
        if constexpr (wide) return _mm512_cvtepi16_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        else return _mm512_cvtepi16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    GRPHI_TARGET_AVX512 static __m512i load_int8(const std::int8_t* p) {
        if constexpr (wide) return _mm512_cvtepi8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        else return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    }
};

// A channel's register tables and constants, loaded once per row.
template <class T>
struct zmm_window {
    using zmm = zmm_bits<T>;
    using mask = typename zmm::mask;
    using I = bits_t<T>;
    __m512i low, high, keep_from, lo, shift, magnitude, one;
    __m512i threshold[zmm::table_registers], base[zmm::table_registers], below[zmm::table_registers],
        above[zmm::table_registers];
    GRPHI_TARGET_AVX512 zmm_window(const ::grphi::detail::window_tables<T>& t, int shift_bits)
        : low(zmm::set1(t.low)), high(zmm::set1(t.high)), keep_from(zmm::set1(t.keep_from)), lo(zmm::set1(t.lo)),
          shift(zmm::set1(shift_bits)), magnitude(zmm::set1(std::numeric_limits<I>::max())), one(zmm::set1(1)) {
        constexpr std::size_t per_register = 64 / sizeof(I);
        for (std::size_t j = 0; j < zmm::table_registers; ++j) {
            threshold[j] = zmm::load(t.threshold + j * per_register);
            base[j] = zmm::load(t.base + j * per_register);
            below[j] = zmm::load(t.level_below + j * per_register);
            above[j] = zmm::load(t.level_above + j * per_register);
        }
    }
    GRPHI_TARGET_AVX512 __m512i magnitude_of(__m512i bits) const { return _mm512_and_si512(bits, magnitude); }
    GRPHI_TARGET_AVX512 __m512i clamp(__m512i mag) const { return zmm::min(zmm::max(mag, low), high); }
    GRPHI_TARGET_AVX512 __m512i cell(__m512i clamped) const { return zmm::shift_right(clamped, shift); }
    // The exact exponent of a clamped magnitude: the cell's base, plus one at or past its threshold.
    GRPHI_TARGET_AVX512 __m512i exponent(__m512i clamped, __m512i cell_index) const {
        return zmm::add_where(zmm::ge(clamped, zmm::lookup(threshold, cell_index)), zmm::lookup(base, cell_index), one);
    }
    // Weights that keep their sign (nonzero and not flushed).
    GRPHI_TARGET_AVX512 mask keep(__m512i mag) const { return zmm::ge(mag, keep_from); }
    GRPHI_TARGET_AVX512 __m512i sign(__m512i bits, mask kept) const { return zmm::or_where(kept, zmm::sign_fill(bits), one); }
};

// Lanes of a row at i that exist (all but in the tail).
template <class T>
GRPHI_TARGET_AVX512 inline typename zmm_bits<T>::mask lanes_at(std::size_t i, std::size_t n) {
    using zmm = zmm_bits<T>;
    return i + zmm::lanes <= n ? zmm::all : zmm::first(n - i);
}

// quantize_row's one register: exponents and signs of the lanes in m.
template <class T>
GRPHI_TARGET_AVX512 inline void quantize_lanes(const zmm_window<T>& z, __m512i bits, typename zmm_bits<T>::mask m,
                                               std::int16_t* exps, std::int8_t* signs) {
    using zmm = zmm_bits<T>;
    const __m512i mag = z.magnitude_of(bits);
    const __m512i clamped = z.clamp(mag);
    const __m512i k = z.exponent(clamped, z.cell(clamped));
    const auto kept = z.keep(mag);
    // A zero or flushed weight's exponent is the window bottom, so equal tensors pack identically.
    zmm::store_int16(exps, m, zmm::blend(kept, z.lo, k));
    zmm::store_int8(signs, m, z.sign(bits, kept));
}

// Exponents and signs of a row straight into the packed int16/int8 arrays.
template <class T>
GRPHI_TARGET_AVX512 void quantize_row(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t, int shift,
                                      std::int16_t* exps, std::int8_t* signs) {
    using zmm = zmm_bits<T>;
    const zmm_window<T> z(t, shift);
    std::size_t i = 0;
    for (; i + zmm::lanes <= n; i += zmm::lanes) quantize_lanes(z, zmm::load(w + i), zmm::all, exps + i, signs + i);
    if (i < n) quantize_lanes(z, zmm::load(w + i, zmm::first(n - i)), zmm::first(n - i), exps + i, signs + i);
}

// fake_row's one register: the level from the cell's two candidate levels, with the weight's sign.
template <class T>
GRPHI_TARGET_AVX512 inline __m512i fake_lanes(const zmm_window<T>& z, __m512i bits) {
    using zmm = zmm_bits<T>;
    const __m512i mag = z.magnitude_of(bits);
    const __m512i clamped = z.clamp(mag);
    const __m512i cell = z.cell(clamped);
    const auto up = zmm::ge(clamped, zmm::lookup(z.threshold, cell));
    const __m512i level = zmm::blend(up, zmm::lookup(z.below, cell), zmm::lookup(z.above, cell));
    return zmm::or_where(z.keep(mag), level, _mm512_andnot_si512(z.magnitude, bits));
}

// Fake quantization of an unclustered row.
template <class T>
GRPHI_TARGET_AVX512 void fake_row(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t, int shift, T* out) {
    using zmm = zmm_bits<T>;
    const zmm_window<T> z(t, shift);
    std::size_t i = 0;
    for (; i + zmm::lanes <= n; i += zmm::lanes) zmm::store(out + i, fake_lanes(z, zmm::load(w + i)), zmm::all);
    if (i < n) {
        const auto m = zmm::first(n - i);
        zmm::store(out + i, fake_lanes(z, zmm::load(w + i, m)), m);
    }
}

// round_half_even_mean_small for 16 blocks at a time (int32 sums and counts, in place; count 0 -> lo).
GRPHI_TARGET_AVX512 inline __m256i floor_quotient(__m256i s, __m256i d) {
    const __m512d q = _mm512_div_pd(_mm512_cvtepi32_pd(s), _mm512_cvtepi32_pd(d));
    return _mm512_cvttpd_epi32(_mm512_roundscale_pd(q, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
}
GRPHI_TARGET_AVX512 inline void round_half_even_means(std::int32_t* sums, const std::int32_t* counts, std::size_t blocks,
                                                      int lo) {
    const __m512i one = _mm512_set1_epi32(1), bottom = _mm512_set1_epi32(lo);
    for (std::size_t b = 0; b < blocks; b += 16) {
        const __mmask16 m = blocks - b >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (blocks - b)) - 1u);
        const __m512i sum = _mm512_maskz_loadu_epi32(m, sums + b);
        const __m512i count = _mm512_maskz_loadu_epi32(m, counts + b);
        const __mmask16 empty = _mm512_cmpeq_epi32_mask(count, _mm512_setzero_si512());
        const __m512i divisor = _mm512_mask_blend_epi32(empty, count, one);
        const __m512i q = _mm512_inserti64x4(
            _mm512_castsi256_si512(floor_quotient(_mm512_castsi512_si256(sum), _mm512_castsi512_si256(divisor))),
            floor_quotient(_mm512_extracti64x4_epi64(sum, 1), _mm512_extracti64x4_epi64(divisor, 1)), 1);
        const __m512i twice_r = _mm512_slli_epi32(_mm512_sub_epi32(sum, _mm512_mullo_epi32(q, divisor)), 1);
        const __mmask16 odd = _mm512_test_epi32_mask(q, one);
        const __mmask16 up = _mm512_cmpgt_epi32_mask(twice_r, divisor) | (_mm512_cmpeq_epi32_mask(twice_r, divisor) & odd);
        const __m512i mean = _mm512_mask_add_epi32(q, up, q, one);
        _mm512_mask_storeu_epi32(sums + b, m, _mm512_mask_blend_epi32(empty, mean, bottom));
    }
}

// Fake quantization of a clustered row whose blocks are whole registers (block_size % lanes == 0,
// block_size <= 2^16): each block's exponents are summed in a register, and its level written while it
// is in L1. Same result as the driver's eval_row + cluster_row + compose_row. g is the window's grid
// (level_of(k)); block_k and block_count hold one entry per block.
template <class T, class Grid>
GRPHI_TARGET_AVX512 void fake_row_clustered(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t, int shift,
                                            std::size_t block_size, int lo, const Grid& g, bits_t<T>* block_k,
                                            bits_t<T>* block_count, T* out) {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    const zmm_window<T> z(t, shift);
    const __m512i sign_bit = zmm::set1(std::numeric_limits<I>::min());
    // Every block's sum and count first, then their means in one loop.
    std::size_t b = 0;
    for (std::size_t start = 0; start < n; start += block_size, ++b) {
        const std::size_t end = std::min(n, start + block_size);
        __m512i sum = zmm::set1(0);
        int count = 0;
        for (std::size_t i = start; i < end; i += zmm::lanes) {
            const auto m = lanes_at<T>(i, n);
            const __m512i mag = z.magnitude_of(zmm::load(w + i, m));
            const __m512i clamped = z.clamp(mag);
            // Masked-off lanes load 0: below keep_from, so they are not members.
            const auto member = z.keep(mag);
            sum = zmm::add_where(member, sum, z.exponent(clamped, z.cell(clamped)));
            count += __builtin_popcount(static_cast<unsigned>(member));
        }
        // |sum| <= block_size * 32767 < 2^31 (block_size <= 2^16 on this route).
        block_k[b] = I(zmm::reduce_add(sum));
        block_count[b] = I(count);
    }
    const std::size_t blocks = b;
    if constexpr (std::is_same_v<T, float>)
        round_half_even_means(block_k, block_count, blocks, lo);
    else
        for (b = 0; b < blocks; ++b)
            block_k[b] = block_count[b] == 0 ? I(lo)
                                             : I(::grphi::detail::round_half_even_mean_small(static_cast<int>(block_k[b]),
                                                                                    static_cast<int>(block_count[b])));
    b = 0;
    for (std::size_t start = 0; start < n; start += block_size, ++b) {
        const std::size_t end = std::min(n, start + block_size);
        const __m512i level = zmm::set1(::grphi::detail::to_bits(g.level_of(static_cast<int>(block_k[b]))));
        for (std::size_t i = start; i < end; i += zmm::lanes) {
            const auto m = lanes_at<T>(i, n);
            const __m512i bits = zmm::load(w + i, m);
            const auto member = z.keep(z.magnitude_of(bits));
            zmm::store(out + i, zmm::or_where(member, level, _mm512_and_si512(bits, sign_bit)), m);
        }
    }
}

// eval_row's one register: clamped exponents, signs and (if wanted) clip flags.
template <class T>
GRPHI_TARGET_AVX512 inline void eval_lanes(const zmm_window<T>& z, __m512i bits, typename zmm_bits<T>::mask m,
                                           bits_t<T>* k_out, bits_t<T>* s_out, std::uint8_t* clipped_out) {
    using zmm = zmm_bits<T>;
    using mask = typename zmm::mask;
    const __m512i mag = z.magnitude_of(bits);
    const __m512i clamped = z.clamp(mag);
    zmm::store(k_out, z.exponent(clamped, z.cell(clamped)), m);
    zmm::store(s_out, z.sign(bits, z.keep(mag)), m);
    if (clipped_out) {
        const auto outside = static_cast<mask>(zmm::lt(mag, z.low) | zmm::gt(mag, z.high));
        zmm::store_uint8(clipped_out, m, zmm::keep_only(static_cast<mask>(outside & zmm::nonzero(mag)), z.one));
    }
}

// The driver's eval_row on register tables: clamped exponents, signs and clip flags (clipped_out may be null).
template <class T>
GRPHI_TARGET_AVX512 void eval_row(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t, int shift,
                                  bits_t<T>* k_out, bits_t<T>* s_out, std::uint8_t* clipped_out) {
    using zmm = zmm_bits<T>;
    const zmm_window<T> z(t, shift);
    auto clip_at = [&](std::size_t i) { return clipped_out ? clipped_out + i : nullptr; };
    std::size_t i = 0;
    for (; i + zmm::lanes <= n; i += zmm::lanes) eval_lanes(z, zmm::load(w + i), zmm::all, k_out + i, s_out + i, clip_at(i));
    if (i < n) {
        const auto m = zmm::first(n - i);
        eval_lanes(z, zmm::load(w + i, m), m, k_out + i, s_out + i, clip_at(i));
    }
}

// compose_row's one register: the level of each exponent (register table or gather), with its sign.
template <class T, bool InRegisters>
GRPHI_TARGET_AVX512 inline __m512i compose_lanes(const __m512i* levels, const T* grid_levels, __m512i offset,
                                                 __m512i sign_bit, const std::int16_t* e, const std::int8_t* s) {
    using zmm = zmm_bits<T>;
    const __m512i index = zmm::sub(zmm::load_int16(e), offset);
    __m512i level;
    if constexpr (InRegisters)
        level = zmm::lookup(levels, index);
    else
        level = zmm::gather(grid_levels, index);
    const __m512i sv = zmm::load_int8(s);
    return zmm::or_where(zmm::nonzero(sv), level, _mm512_and_si512(zmm::sign_fill(sv), sign_bit));
}

template <class T, bool InRegisters>
GRPHI_TARGET_AVX512 void compose_row_with(std::size_t n, int lo, const ::grphi::detail::window_levels<T>& t, const T* grid_levels,
                                          int grid_k_lo, const std::int16_t* exps, const std::int8_t* signs, T* out) {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    constexpr std::size_t per_register = 64 / sizeof(I);
    __m512i levels[zmm::table_registers];
    for (std::size_t j = 0; j < zmm::table_registers; ++j) levels[j] = zmm::load(t.level + j * per_register);
    const __m512i offset = zmm::set1(InRegisters ? lo : grid_k_lo);
    const __m512i sign_bit = zmm::set1(std::numeric_limits<I>::min());
    std::size_t i = 0;
    for (; i + zmm::lanes <= n; i += zmm::lanes)
        zmm::store(out + i, compose_lanes<T, InRegisters>(levels, grid_levels, offset, sign_bit, exps + i, signs + i), zmm::all);
    if (i < n) {
        // The tail reads padded copies: exponents at the window bottom, signs zero.
        std::int16_t e[zmm::lanes];
        std::int8_t s[16] = {};
        std::fill(e, e + zmm::lanes, static_cast<std::int16_t>(lo));
        std::copy(exps + i, exps + n, e);
        std::copy(signs + i, signs + n, s);
        zmm::store(out + i, compose_lanes<T, InRegisters>(levels, grid_levels, offset, sign_bit, e, s), zmm::first(n - i));
    }
}

// Rebuilds an unclustered row [lo, ...] from packed exponents and signs: window levels t in registers
// when in_registers, else gathered from the grid's level table (grid_levels[k - grid_k_lo]).
template <class T>
GRPHI_TARGET_AVX512 void compose_row(std::size_t n, int lo, const ::grphi::detail::window_levels<T>& t, bool in_registers,
                                     const T* grid_levels, int grid_k_lo, const std::int16_t* exps,
                                     const std::int8_t* signs, T* out) {
    if (in_registers)
        compose_row_with<T, true>(n, lo, t, grid_levels, grid_k_lo, exps, signs, out);
    else
        compose_row_with<T, false>(n, lo, t, grid_levels, grid_k_lo, exps, signs, out);
}

// Exponent block scales on a row's register tables: per block, the largest magnitude's bits go to
// window(b, start, len, max_bits), which returns the block's window (or writes the block itself and
// returns vectorized = false); the kernel then writes the block's clamped exponents and signs.
template <class T, class BlockWindow>
GRPHI_TARGET_AVX512 void exponent_row(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t, int shift,
                                      std::size_t block_size, std::int16_t* exps, std::int8_t* signs,
                                      BlockWindow&& window) {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    const zmm_window<T> z(t, shift);
    for (std::size_t b = 0, start = 0; start < n; ++b, start += block_size) {
        const std::size_t len = std::min(n - start, block_size);
        const T* x = w + start;
        __m512i maxima = zmm::set1(0);
        for (std::size_t i = 0; i < len; i += zmm::lanes)
            maxima = zmm::max(maxima, z.magnitude_of(zmm::load(x + i, lanes_at<T>(i, len))));
        const ::grphi::detail::block_window<T> c = window(b, start, len, I(zmm::reduce_max(maxima)));
        if (!c.vectorized) continue;
        const __m512i lo = zmm::set1(c.lo), hi = zmm::set1(c.hi), keep_from = zmm::set1(c.keep_from);
        for (std::size_t i = 0; i < len; i += zmm::lanes) {
            const auto mask = lanes_at<T>(i, len);
            const __m512i bits = zmm::load(x + i, mask);
            const __m512i mag = z.magnitude_of(bits);
            const __m512i clamped = z.clamp(mag);
            const __m512i k = zmm::min(zmm::max(z.exponent(clamped, z.cell(clamped)), lo), hi);
            const auto kept = zmm::ge(mag, keep_from);
            zmm::store_int16(exps + start + i, mask, zmm::blend(kept, lo, k));
            zmm::store_int8(signs + start + i, mask, z.sign(bits, kept));
        }
    }
}

// Lane g of the result: the largest lane of v[g] (one register of lane-wise maxima per block, as many as
// lanes), by a tree that halves the lanes per block at each level instead of one horizontal reduction
// per block. A level pairs registers a and b in groups of 2S lanes: max([a's first S, b's last S],
// [a's last S, b's first S]), a blend and one two-source permute per pair (half the shuffles of taking
// both halves by shuffles). The tree leaves block g at the lane of g's bit-reversed index, which the
// final permute undoes (a bit reversal is its own inverse).
template <class T, std::size_t S>
struct pair_level {
    using I = bits_t<T>;
    static constexpr std::size_t lanes = zmm_bits<T>::lanes;
    struct index {
        I lane[lanes];
    };
    static constexpr index partner() {  // [a's last S, b's first S] of each group of 2S lanes
        index x{};
        for (std::size_t i = 0; i < lanes; ++i)
            x.lane[i] = static_cast<I>(i % (2 * S) < S ? i + S : lanes + i - S);
        return x;
    }
    static constexpr unsigned from_b() {  // lanes taken from b in the blend
        unsigned m = 0;
        for (std::size_t i = 0; i < lanes; ++i)
            if (i % (2 * S) >= S) m |= 1u << i;
        return m;
    }
};
template <class T, std::size_t S>
GRPHI_TARGET_AVX512 inline __m512i pair_maxima(__m512i a, __m512i b) {
    using zmm = zmm_bits<T>;
    using level = pair_level<T, S>;
    static constexpr typename level::index partner = level::partner();
    const __m512i idx = _mm512_loadu_si512(partner.lane);
    if constexpr (zmm::wide)
        return zmm::max(_mm512_mask_blend_epi64(static_cast<__mmask8>(level::from_b()), a, b), _mm512_permutex2var_epi64(a, idx, b));
    else
        return zmm::max(_mm512_mask_blend_epi32(static_cast<__mmask16>(level::from_b()), a, b), _mm512_permutex2var_epi32(a, idx, b));
}
template <class T, std::size_t S = zmm_bits<T>::lanes / 2>
GRPHI_TARGET_AVX512 inline void tree_levels(__m512i* v, std::size_t count) {
    for (std::size_t p = 0; p < count / 2; ++p) v[p] = pair_maxima<T, S>(v[2 * p], v[2 * p + 1]);
    if constexpr (S > 1) tree_levels<T, S / 2>(v, count / 2);
}
template <class T>
GRPHI_TARGET_AVX512 inline __m512i transposed_maxima(__m512i* v) {
    using zmm = zmm_bits<T>;
    tree_levels<T>(v, zmm::lanes);
    if constexpr (zmm::wide)
        return _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 4, 2, 6, 1, 5, 3, 7), v[0]);
    else
        return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15), v[0]);
}

// block_maxima on `blocks` (a multiple of the lane count) whole blocks of Registers registers each, their
// row maximum into row; returns blocks.
template <class T, std::size_t Registers>
GRPHI_TARGET_AVX512 inline std::size_t whole_block_maxima(const T* w, std::size_t blocks, bits_t<T>* block_max, __m512i& row, std::size_t ahead) {
    using zmm = zmm_bits<T>;
    const __m512i magnitude = zmm::set1(std::numeric_limits<bits_t<T>>::max());
    for (std::size_t first = 0; first < blocks; first += zmm::lanes) {
        const T* x = w + first * Registers * zmm::lanes;
        __m512i v[zmm::lanes];
        for (std::size_t j = 0; j < zmm::lanes; ++j) {
            for (std::size_t r = 0; r < Registers; ++r) _mm_prefetch(reinterpret_cast<const char*>(x + ahead + (j * Registers + r) * zmm::lanes), _MM_HINT_T1);
            __m512i maxima = _mm512_and_si512(zmm::load(x + j * Registers * zmm::lanes), magnitude);
            for (std::size_t r = 1; r < Registers; ++r)
                maxima = zmm::max(maxima, _mm512_and_si512(zmm::load(x + (j * Registers + r) * zmm::lanes), magnitude));
            v[j] = maxima;
        }
        const __m512i maxima = transposed_maxima<T>(v);
        row = zmm::max(row, maxima);
        zmm::store(block_max + first, maxima, zmm::all);
    }
    return blocks;
}

// The largest magnitude (bits) of every block of a row; returns the row's (>= the infinity's bits when
// the row holds NaN or Inf). The first pass of exponent block scales: it reads the row from memory.
template <class T>
GRPHI_TARGET_AVX512 bits_t<T> block_maxima(const T* w, std::size_t n, std::size_t block_size, bits_t<T>* block_max) {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    const __m512i magnitude = zmm::set1(std::numeric_limits<I>::max());
    __m512i row = zmm::set1(0);
    const std::size_t blocks = (n + block_size - 1) / block_size;
    if (block_size % zmm::lanes == 0) {  // whole registers per block: a register of blocks at a time
        std::size_t first = 0;
        // Groups of whole blocks inside the row, unrolled for the common sizes (the loop below does the rest).
        const std::size_t whole = n / (block_size * zmm::lanes) * zmm::lanes;
        switch (block_size / zmm::lanes) {
        case 1: first = whole_block_maxima<T, 1>(w, whole, block_max, row, n); break;
        case 2: first = whole_block_maxima<T, 2>(w, whole, block_max, row, n); break;
        case 4: first = whole_block_maxima<T, 4>(w, whole, block_max, row, n); break;
        case 8: first = whole_block_maxima<T, 8>(w, whole, block_max, row, n); break;
        default: break;
        }
        for (; first < blocks; first += zmm::lanes) {
            __m512i v[zmm::lanes];
            for (std::size_t j = 0; j < zmm::lanes; ++j) {
                // Masked-off lanes and blocks past the row load 0, which no magnitude is below.
                const std::size_t start = (first + j) * block_size;
                __m512i maxima = start < n ? _mm512_and_si512(zmm::load(w + start, lanes_at<T>(start, n)), magnitude) : zmm::set1(0);
                for (std::size_t i = start + zmm::lanes; i < start + block_size && i < n; i += zmm::lanes)
                    maxima = zmm::max(maxima, _mm512_and_si512(zmm::load(w + i, lanes_at<T>(i, n)), magnitude));
                v[j] = maxima;
            }
            const __m512i maxima = transposed_maxima<T>(v);
            row = zmm::max(row, maxima);
            zmm::store(block_max + first, maxima, lanes_at<T>(first, blocks));
        }
        return I(zmm::reduce_max(row));
    }
    for (std::size_t b = 0, start = 0; start < n; ++b, start += block_size) {
        const std::size_t len = std::min(n - start, block_size);
        __m512i maxima = zmm::set1(0);
        for (std::size_t i = 0; i < len; i += zmm::lanes)
            maxima = zmm::max(maxima, _mm512_and_si512(zmm::load(w + start + i, lanes_at<T>(i, len)), magnitude));
        row = zmm::max(row, maxima);
        block_max[b] = I(zmm::reduce_max(maxima));
    }
    return I(zmm::reduce_max(row));
}

// exponent_row_blocks' one register at w + i: exponents clamped up to the block bottom lo (never above its
// top: clamping is monotone and the top is the largest magnitude's exponent), signs kept from `keep` up.
template <class T>
GRPHI_TARGET_AVX512 inline void exponent_block_lanes(const zmm_window<T>& z, const T* w, std::size_t i,
                                                     typename zmm_bits<T>::mask m, __m512i lo, __m512i keep,
                                                     std::int16_t* exps, std::int8_t* signs) {
    using zmm = zmm_bits<T>;
    const __m512i bits = zmm::load(w + i, m);
    const __m512i mag = z.magnitude_of(bits);
    const __m512i clamped = z.clamp(mag);
    const __m512i k = zmm::max(z.exponent(clamped, z.cell(clamped)), lo);
    const auto kept = zmm::ge(mag, keep);
    zmm::store_int16(exps + i, m, zmm::blend(kept, lo, k));
    zmm::store_int8(signs + i, m, z.sign(bits, kept));
}

// Exponent block scales on a row's register tables t (window [t.lo, hi_r]) from its block maxima, in two
// passes: the blocks' windows, a register of blocks at a time (top = the exponent of the largest magnitude,
// bottom = max(clip_lo, top - levels + 1)); then each block's clamped exponents and signs. A block whose
// largest magnitude lies below the tables (or is zero), or whose bottom does, is marked in `exact` and
// left to the caller (returns how many). keep_from[bottom - t.lo]: the smallest kept magnitude (bits) of each bottom (null: 1).
// block_max and block_lo (scratch) hold a register more than the blocks. Row window: [row_lo, row_hi]
// widened by the vectorized blocks.
template <class T>
GRPHI_TARGET_AVX512 std::size_t exponent_row_blocks(const T* w, std::size_t n, const ::grphi::detail::window_tables<T>& t,
                                             int shift, std::size_t block_size, int levels, int clip_lo,
                                             const bits_t<T>* keep_from, const bits_t<T>* block_max, bits_t<T>* block_lo,
                                             std::uint8_t* exact, std::int16_t* tops, std::int16_t* exps,
                                             std::int8_t* signs, int& row_lo, int& row_hi) {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    using mask = typename zmm::mask;
    const zmm_window<T> z(t, shift);
    const std::size_t blocks = (n + block_size - 1) / block_size;
    const __m512i drop = zmm::set1(levels - 1), bottom_clip = zmm::set1(clip_lo);
    __m512i lowest = zmm::set1(std::numeric_limits<std::int32_t>::max()), highest = zmm::set1(std::numeric_limits<std::int32_t>::min());
    std::size_t exact_blocks = 0;
    for (std::size_t b = 0; b < blocks; b += zmm::lanes) {
        const mask m = lanes_at<T>(b, blocks);
        const __m512i mx = zmm::load(block_max + b, m);
        const __m512i clamped = z.clamp(mx);
        const __m512i top = z.exponent(clamped, z.cell(clamped));
        const __m512i bottom = zmm::max(zmm::sub(top, drop), bottom_clip);
        const mask fast = static_cast<mask>(m & zmm::ge(mx, z.low) & zmm::ge(bottom, z.lo));
        zmm::store(block_lo + b, bottom, m);
        zmm::store_int16(tops + b, fast, top);
        zmm::store_uint8(exact + b, m, zmm::keep_only(static_cast<mask>(m & ~fast), z.one));
        exact_blocks += static_cast<std::size_t>(__builtin_popcount(static_cast<unsigned>(m & ~fast)));
        lowest = zmm::blend(fast, lowest, zmm::min(lowest, bottom));
        highest = zmm::blend(fast, highest, zmm::max(highest, top));
    }
    row_lo = std::min(row_lo, static_cast<int>(zmm::reduce_min(lowest)));
    row_hi = std::max(row_hi, static_cast<int>(zmm::reduce_max(highest)));
    const I lo_r = t.lo;
    // Whole-register blocks are written without a branch per block (the caller rewrites the exact ones);
    // blocks of 1, 2 or 4 registers unrolled.
    const std::size_t whole = block_size % zmm::lanes == 0 ? n - n % block_size : 0;
    std::size_t b = 0, start = 0;
    auto whole_blocks = [&](auto registers, auto flushed) GRPHI_TARGET_AVX512 {
        constexpr std::size_t size = decltype(registers)::value * zmm::lanes;
        for (; start < whole; ++b, start += size) {
            const __m512i lo = zmm::set1(block_lo[b]);
            __m512i keep = z.one;
            if constexpr (decltype(flushed)::value) keep = zmm::set1(!exact[b] ? keep_from[block_lo[b] - lo_r] : I(1));
            for (std::size_t r = 0; r < decltype(registers)::value; ++r) {
                const std::size_t i = start + r * zmm::lanes;
                // The next row (if rows are contiguous) into L2 while this compute-bound pass runs on cached data.
                _mm_prefetch(reinterpret_cast<const char*>(w + n + i), _MM_HINT_T1);
                exponent_block_lanes(z, w, i, zmm::all, lo, keep, exps, signs);
            }
        }
    };
    auto by_flush = [&](auto registers) GRPHI_TARGET_AVX512 {
        if (keep_from) whole_blocks(registers, std::true_type{}); else whole_blocks(registers, std::false_type{});
    };
    switch (whole > 0 ? block_size / zmm::lanes : 0) {
    case 1: by_flush(std::integral_constant<std::size_t, 1>{}); break;
    case 2: by_flush(std::integral_constant<std::size_t, 2>{}); break;
    case 4: by_flush(std::integral_constant<std::size_t, 4>{}); break;
    default: break;
    }
    for (; start < whole; ++b, start += block_size) {
        const __m512i lo = zmm::set1(block_lo[b]);
        const __m512i keep = zmm::set1(keep_from && !exact[b] ? keep_from[block_lo[b] - lo_r] : I(1));
        for (std::size_t i = start; i < start + block_size; i += zmm::lanes) {
            _mm_prefetch(reinterpret_cast<const char*>(w + n + i), _MM_HINT_T1);
            exponent_block_lanes(z, w, i, zmm::all, lo, keep, exps, signs);
        }
    }
    for (; b < blocks; ++b, start += block_size) {
        if (exact[b]) continue;
        const std::size_t len = std::min(n - start, block_size);
        const __m512i lo = zmm::set1(block_lo[b]);
        const __m512i keep = zmm::set1(keep_from ? keep_from[block_lo[b] - lo_r] : I(1));
        for (std::size_t i = 0; i < len; i += zmm::lanes) exponent_block_lanes(z, w, start + i, lanes_at<T>(i, len), lo, keep, exps, signs);
    }
    return exact_blocks;
}

// fp16/e4m3 block scales, one block on its scaled levels: exponent lo + the offset, the number of
// thresholds at or below |w| (threshold[1..n-1], ascending; non-negative T compare as their bits), and the
// sign. A zero weight, or under flush one below half the lowest level (bottom_bits), keeps exponent lo and
// sign 0. Steps >= 0: n <= 2^Steps <= lanes, and the offset is found by binary search, one comparison per
// halving (table s, lane L: threshold[L + 2^s], or +inf past the last, the one to compare once the offset
// so far is L). Steps < 0: any n, a comparison per threshold. A non-zero shift (e << mantissa bits, e <= 0)
// compares the magnitudes' bits minus shift with the thresholds: the same as comparing them with the
// thresholds times 2^e while those stay normal (the caller's check); bottom_bits is the scaled one.
template <class T, int Steps = -1>
struct scaled_search {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    using mask = typename zmm::mask;
    static_assert(Steps < 0 || (std::size_t(1) << Steps) <= zmm::lanes, "grphi: the search tables are one register");
    const T* threshold;
    std::size_t n;
    bool flush;
    __m512i magnitude, one, base, bottom, binades;
    __m512i table[Steps > 0 ? Steps : 1];

    GRPHI_TARGET_AVX512 inline __attribute__((always_inline)) scaled_search(const T* threshold_, std::size_t n_, I bottom_bits,
                                                                            bool flush_, int lo, I shift)
        : threshold(threshold_), n(n_), flush(flush_), magnitude(zmm::set1(std::numeric_limits<I>::max())), one(zmm::set1(1)),
          base(zmm::set1(lo)), bottom(zmm::set1(bottom_bits)), binades(zmm::set1(shift)) {
        if constexpr (Steps > 0) {
            table[Steps - 1] = zmm::set1(::grphi::detail::to_bits(threshold[std::size_t(1) << (Steps - 1)]));
            for (int s = 0; s + 1 < Steps; ++s) {
                const std::size_t stride = std::size_t(1) << s;
                table[s] = zmm::load_or(threshold + stride, zmm::first(n - stride), magnitude);
            }
        }
    }

    // The lanes m of one register at w.
    GRPHI_TARGET_AVX512 inline __attribute__((always_inline)) void lanes(const T* w, mask m, std::int16_t* exps,
                                                                         std::int8_t* signs) const {
        const __m512i bits = zmm::load(w, m);
        const __m512i mag = _mm512_and_si512(bits, magnitude);
        const __m512i scaled = zmm::sub(mag, binades);  // the magnitude's bits against thresholds 2^shift-binades down
        __m512i k;
        if constexpr (Steps > 0) {
            k = zmm::keep_only(zmm::ge(scaled, table[Steps - 1]), zmm::set1(std::int64_t(1) << (Steps - 1)));
            for (int s = Steps - 2; s >= 0; --s)
                k = zmm::add_where(zmm::ge(scaled, zmm::permute(table[s], k)), k, zmm::set1(std::int64_t(1) << s));
        } else {
            k = zmm::set1(0);
            for (std::size_t j = 1; j < n; ++j)
                k = zmm::add_where(zmm::ge(scaled, zmm::set1(::grphi::detail::to_bits(threshold[j]))), k, one);
        }
        auto kept = zmm::nonzero(mag);
        if (flush) kept = static_cast<decltype(kept)>(kept & zmm::ge(zmm::twice(mag), bottom));
        zmm::store_int16(exps, m, zmm::add_where(kept, base, k));
        zmm::store_int8(signs, m, zmm::or_where(kept, zmm::sign_fill(bits), one));
    }

    // A block of len weights.
    GRPHI_TARGET_AVX512 inline __attribute__((always_inline)) void block(const T* w, std::size_t len, std::int16_t* exps,
                                                                         std::int8_t* signs) const {
        for (std::size_t i = 0; i < len; i += zmm::lanes) lanes(w + i, lanes_at<T>(i, len), exps + i, signs + i);
    }
};

template <class T, int Steps = -1>
GRPHI_TARGET_AVX512 inline __attribute__((always_inline)) void scaled_block_lanes(const T* w, std::size_t len, const T* threshold, std::size_t n,
                                             bits_t<T> bottom_bits, bool flush, int lo, std::int16_t* exps,
                                             std::int8_t* signs, bits_t<T> shift = 0) {
    scaled_search<T, Steps>(threshold, n, bottom_bits, flush, lo, shift).block(w, len, exps, signs);
}

// The binary search's step count for a window of n levels: ceil(log2 n), or -1 when its tables would
// not fit in a register (a comparison per threshold then).
template <class T>
constexpr int scaled_search_steps(std::size_t n) {
    int steps = 0;
    while ((std::size_t(1) << steps) < n) ++steps;
    return (std::size_t(1) << steps) <= zmm_bits<T>::lanes ? steps : -1;
}

// Runs Kernel<T, Steps>::run(args...) with Steps = scaled_search_steps<T>(n): the one place a window
// size becomes the search's compile-time step count.
template <template <class, int> class Kernel, class T, class... Args>
GRPHI_TARGET_AVX512 inline void with_search_steps(std::size_t n, Args... args) {
    switch (scaled_search_steps<T>(n)) {
    case 0: return Kernel<T, 0>::run(args...);
    case 1: return Kernel<T, 1>::run(args...);
    case 2: return Kernel<T, 2>::run(args...);
    case 3: return Kernel<T, 3>::run(args...);
    case 4:
        if constexpr (zmm_bits<T>::lanes >= 16) return Kernel<T, 4>::run(args...);
        [[fallthrough]];
    default: return Kernel<T, -1>::run(args...);
    }
}

template <class T, int Steps>
struct scaled_block_kernel {
    GRPHI_TARGET_AVX512 static void run(const T* w, std::size_t len, const T* threshold, std::size_t n, bits_t<T> bottom_bits,
                                        bool flush, int lo, std::int16_t* exps, std::int8_t* signs) {
        scaled_block_lanes<T, Steps>(w, len, threshold, n, bottom_bits, flush, lo, exps, signs);
    }
};

// scaled_block_lanes for any n, called once per block (the searched route).
template <class T>
GRPHI_TARGET_AVX512 void scaled_block(const T* w, std::size_t len, const T* threshold, std::size_t n, bits_t<T> bottom_bits,
                                      bool flush, int lo, std::int16_t* exps, std::int8_t* signs) {
    with_search_steps<scaled_block_kernel, T>(n, w, len, threshold, n, bottom_bits, flush, lo, exps, signs);
}

// Every block of a row on its levels: levels[b] points at block b's `window` values, then its `window`
// thresholds.
template <class T, int Steps>
struct scaled_row_kernel {
    GRPHI_TARGET_AVX512 static void run(const T* w, std::size_t n, std::size_t block_size, std::size_t window, bool flush,
                                        int lo, std::int16_t* exps, std::int8_t* signs, const T* const* levels) {
        using zmm = zmm_bits<T>;
        for (std::size_t b = 0, start = 0; start < n; ++b, start += block_size) {
            const std::size_t len = std::min(n - start, block_size);
            // The next row (if rows are contiguous) into L2 while this compute-bound pass runs on cached data.
            for (std::size_t i = 0; i < len; i += zmm::lanes) _mm_prefetch(reinterpret_cast<const char*>(w + n + start + i), _MM_HINT_T1);
            const T* value = levels[b];
            scaled_block_lanes<T, Steps>(w + start, len, value + window, window, ::grphi::detail::to_bits(value[0]), flush, lo,
                                         exps + start, signs + start);
        }
    }
};

// Every block of a row on the levels of its scale's mantissa (core's scaled_mantissa_levels): block b's
// scale is 2^e * (1 + f / 1024) with parts[b] = e * 1024 + f, and entry f of `table` holds the `window`
// values, then the `window` thresholds, of the scale 1 + f / 1024. The caller checked that every block's
// levels stay normal when scaled by 2^e.
// The binades e a mantissa entry is exact for: e - lo <= span as unsigned (none: span 0, lo out of reach).
struct binade_range {
    std::int32_t lo = 1 << 20;
    std::uint32_t span = 0;
};

template <class T, int Steps>
struct scaled_mantissa_row_kernel {
    using zmm = zmm_bits<T>;
    using I = bits_t<T>;
    static constexpr I binade = I(1) << (std::numeric_limits<T>::digits - 1);  // one step of the exponent field

    // Block b's search: its mantissa's entry, its magnitudes shifted by its binade.
    GRPHI_TARGET_AVX512 static inline __attribute__((always_inline)) scaled_search<T, Steps> search(
        const T* table, std::size_t window, bool flush, int lo, std::int32_t part) {
        const T* value = table + static_cast<std::size_t>(part & 1023) * 2 * window;
        const I shift = static_cast<I>((part - (part & 1023)) / 1024) * binade;
        return {value + window, window, ::grphi::detail::to_bits(value[0]) + shift, flush, lo, shift};
    }

    // Whether block part's entry is exact at its binade.
    GRPHI_TARGET_AVX512 static inline __attribute__((always_inline)) bool exact_at(const binade_range* exact, std::int32_t part) {
        const binade_range r = exact[part & 1023];
        return static_cast<std::uint32_t>((part - (part & 1023)) / 1024 - r.lo) <= r.span;
    }

    // Whole blocks of Registers registers each (unrolled, no tail masks), from block `first` up to `end`;
    // returns the new count of blocks left to the caller.
    template <std::size_t Registers>
    GRPHI_TARGET_AVX512 static std::size_t whole_blocks(const T* w, std::size_t n, std::size_t first, std::size_t end, std::size_t window,
                                                        bool flush, int lo, std::int16_t* exps, std::int8_t* signs, const T* table,
                                                        const binade_range* exact, const std::int32_t* parts, std::uint32_t* left,
                                                        std::size_t count) {
        constexpr std::size_t size = Registers * zmm::lanes;
        for (std::size_t b = first; b < end; ++b) {
            const std::size_t start = b * size;
            if (!exact_at(exact, parts[b])) {
                left[count++] = static_cast<std::uint32_t>(b);
                continue;
            }
            const scaled_search<T, Steps> s = search(table, window, flush, lo, parts[b]);
            for (std::size_t r = 0; r < Registers; ++r) {
                const std::size_t i = start + r * zmm::lanes;
                // The next row (if rows are contiguous) into L2 while this compute-bound pass runs on cached data.
                _mm_prefetch(reinterpret_cast<const char*>(w + n + i), _MM_HINT_T1);
                s.lanes(w + i, zmm::all, exps + i, signs + i);
            }
        }
        return count;
    }

    GRPHI_TARGET_AVX512 static std::size_t run(const T* w, std::size_t n, std::size_t block_size, std::size_t window, bool flush,
                                               int lo, std::int16_t* exps, std::int8_t* signs, const T* table,
                                               const binade_range* exact, const std::int32_t* parts, std::uint32_t* left) {
        std::size_t b = 0, count = 0;
        const std::size_t whole = n / block_size;
        switch (block_size % zmm::lanes == 0 ? block_size / zmm::lanes : 0) {
        case 1: count = whole_blocks<1>(w, n, 0, whole, window, flush, lo, exps, signs, table, exact, parts, left, count); b = whole; break;
        case 2: count = whole_blocks<2>(w, n, 0, whole, window, flush, lo, exps, signs, table, exact, parts, left, count); b = whole; break;
        case 4: count = whole_blocks<4>(w, n, 0, whole, window, flush, lo, exps, signs, table, exact, parts, left, count); b = whole; break;
        default: break;
        }
        for (std::size_t start = b * block_size; start < n; ++b, start += block_size) {
            if (!exact_at(exact, parts[b])) {
                left[count++] = static_cast<std::uint32_t>(b);
                continue;
            }
            const std::size_t len = std::min(n - start, block_size);
            for (std::size_t i = 0; i < len; i += zmm::lanes) _mm_prefetch(reinterpret_cast<const char*>(w + n + start + i), _MM_HINT_T1);
            search(table, window, flush, lo, parts[b]).block(w + start, len, exps + start, signs + start);
        }
        return count;
    }
};

// fp16/e4m3 block scales on a row whose codes are chosen, every block on its mantissa's entry of table
// (see scaled_mantissa_row_kernel) where exact says the entry holds at the block's binade. The others
// (entries not built, or levels that would leave the normal range) are left untouched and listed in
// `left`; returns how many.
template <class T>
GRPHI_TARGET_AVX512 std::size_t scaled_blocks_by_mantissa(const T* w, std::size_t n, std::size_t block_size, std::size_t window,
                                                          bool flush, int lo, std::int16_t* exps, std::int8_t* signs, const T* table,
                                                          const binade_range* exact, const std::int32_t* parts, std::uint32_t* left) {
    switch (scaled_search_steps<T>(window)) {
    case 0: return scaled_mantissa_row_kernel<T, 0>::run(w, n, block_size, window, flush, lo, exps, signs, table, exact, parts, left);
    case 1: return scaled_mantissa_row_kernel<T, 1>::run(w, n, block_size, window, flush, lo, exps, signs, table, exact, parts, left);
    case 2: return scaled_mantissa_row_kernel<T, 2>::run(w, n, block_size, window, flush, lo, exps, signs, table, exact, parts, left);
    case 3: return scaled_mantissa_row_kernel<T, 3>::run(w, n, block_size, window, flush, lo, exps, signs, table, exact, parts, left);
    case 4:
        if constexpr (zmm_bits<T>::lanes >= 16)
            return scaled_mantissa_row_kernel<T, 4>::run(w, n, block_size, window, flush, lo, exps, signs, table, exact, parts, left);
        [[fallthrough]];
    default: throw std::logic_error("grphi: scaled_blocks_by_mantissa needs a window whose search fits a register");
    }
}

// The scaled levels of a float block, branch-free (the level cache's miss path): value[j] = scale *
// unit[j] for j < n <= 16, threshold[0] = 0 and, for j >= 1, scaled_threshold(value[j - 1], value[j]):
// the smallest float t with t * t >= a * b (log) or t + t >= a + b (linear), exact in double. The float
// nearest to the double root (or midpoint) is within an ulp of it, so one comparison settles t: that
// float, or the next one up.
GRPHI_TARGET_AVX512 inline void scaled_levels(const float* unit, std::size_t n, float scale, bool log_rounding,
                                             float* value, float* threshold) {
    const auto all = static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1u);
    const auto upper = static_cast<__mmask16>(all & ~1u);  // thresholds 1 .. n-1
    const __m512 v = _mm512_mul_ps(_mm512_set1_ps(scale), _mm512_maskz_loadu_ps(all, unit));
    _mm512_mask_storeu_ps(value, all, v);
    // Lane j: a = value[j - 1], b = value[j] (lane 0 unused).
    const __m512 a = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14), v);
    __m512 t[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int half = 0; half < (n > 8 ? 2 : 1); ++half) {  // thresholds 8 .. 15 only for windows past 8
        const __m512d ad = _mm512_cvtps_pd(half ? _mm512_extractf32x8_ps(a, 1) : _mm512_castps512_ps256(a));
        const __m512d bd = _mm512_cvtps_pd(half ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v));
        const __m512d target = log_rounding ? _mm512_mul_pd(ad, bd) : _mm512_add_pd(ad, bd);  // exact
        const __m512d centre = log_rounding ? _mm512_sqrt_pd(target) : _mm512_mul_pd(target, _mm512_set1_pd(0.5));
        const __m256 g = _mm512_cvtpd_ps(centre);
        const __m512d gd = _mm512_cvtps_pd(g);
        const __m512d lhs = log_rounding ? _mm512_mul_pd(gd, gd) : _mm512_add_pd(gd, gd);
        const __mmask8 enough = _mm512_cmp_pd_mask(lhs, target, _CMP_GE_OQ);
        const __m256i gi = _mm256_castps_si256(g);
        const __m256i next = _mm256_mask_add_epi32(gi, static_cast<__mmask8>(~enough), gi, _mm256_set1_epi32(1));
        t[half] = _mm512_castps256_ps512(_mm256_castsi256_ps(next));
    }
    const __m512 thresholds = _mm512_insertf32x8(t[0], _mm512_castps512_ps256(t[1]), 1);
    _mm512_mask_storeu_ps(threshold, upper, thresholds);
    threshold[0] = 0.0f;
}

// fp16/e4m3 block scale codes of `blocks` blocks from their largest magnitudes (bits), eight blocks per
// register: block_scale_nearest(max / top) in double lanes (a zero block: the code of 1). The format's
// fields: mantissa bits, smallest normal exponent, bias (detail::code_fields). With parts, also every
// code's value as 2^e * (1 + f / 1024), e * 1024 + f (exact for fp16 and e4m3, subnormal codes included).
template <class T>
GRPHI_TARGET_AVX512 void block_scale_codes(const bits_t<T>* block_max, std::size_t blocks, double top, int mantissa_bits,
                                           int min_exponent, int bias, std::uint16_t* codes, std::int32_t* parts = nullptr) {
    const __m512d one = _mm512_set1_pd(1.0), zero = _mm512_setzero_pd(), top_v = _mm512_set1_pd(top), round = _mm512_set1_pd(0x1p52);
    const __m512i code_of_one = _mm512_set1_epi64(std::int64_t(bias) << mantissa_bits);
    const __m512i code_of_zero = _mm512_set1_epi64(std::int64_t(bias - 1 - mantissa_bits) << mantissa_bits);
    const __m512i smallest = _mm512_set1_epi64(min_exponent), exponent_bias = _mm512_set1_epi64(1023);
    const __m512i code_bias = _mm512_set1_epi64(bias), unit = _mm512_set1_epi64(1);
    const __m512i mantissa = _mm512_set1_epi64(mantissa_bits), implicit = _mm512_set1_epi64(std::int64_t(1) << mantissa_bits);
    for (std::size_t b = 0; b < blocks; b += 8) {
        const auto m = static_cast<__mmask8>(blocks - b >= 8 ? 0xFF : (1u << (blocks - b)) - 1u);
        __m512d max;
        if constexpr (std::is_same_v<T, float>) max = _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_maskz_loadu_epi32(m, block_max + b)));
        else max = _mm512_castsi512_pd(_mm512_maskz_loadu_epi64(m, block_max + b));
        const __m512d v = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(max, zero, _CMP_EQ_OQ), _mm512_div_pd(max, top_v), one);
        const __mmask8 at_least_one = _mm512_cmp_pd_mask(v, one, _CMP_GE_OQ);
        const __mmask8 not_positive = _mm512_cmp_pd_mask(v, zero, _CMP_NGT_UQ);  // an underflowed ratio (double T)
        const __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(_mm512_castpd_si512(v), 52), exponent_bias);
        const __m512i binade = _mm512_max_epi64(e, smallest);
        const __m512i quantum_exponent = _mm512_sub_epi64(binade, mantissa);
        // v / quantum < 2^(mantissa_bits + 1): adding and taking away 2^52 rounds it to an integer, ties to even.
        const __m512d inverse_quantum = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_sub_epi64(exponent_bias, quantum_exponent), 52));
        const __m512d q = _mm512_sub_pd(_mm512_add_pd(_mm512_mul_pd(v, inverse_quantum), round), round);
        __m512i steps = _mm512_cvttpd_epi64(q);
        steps = _mm512_mask_blend_epi64(_mm512_cmpeq_epi64_mask(steps, _mm512_setzero_si512()), steps, unit);
        // The carry of a rounded-up binade lands in the exponent field, as the code's layout wants.
        __m512i code = _mm512_sub_epi64(_mm512_add_epi64(_mm512_sllv_epi64(_mm512_add_epi64(binade, code_bias), mantissa), steps), implicit);
        code = _mm512_mask_blend_epi64(not_positive, code, code_of_zero);
        code = _mm512_mask_blend_epi64(at_least_one, code, code_of_one);
        _mm512_mask_cvtepi64_storeu_epi16(codes + b, m, code);
        if (parts) {
            // The code's value in double: significand (implicit bit unless subnormal) times 2^(binade - mantissa bits).
            const __m512i field = _mm512_srlv_epi64(code, mantissa);
            const __m512i fraction = _mm512_and_si512(code, _mm512_sub_epi64(implicit, unit));
            const __mmask8 normal = _mm512_cmpneq_epi64_mask(field, _mm512_setzero_si512());
            const __m512i significand = _mm512_mask_add_epi64(fraction, normal, fraction, implicit);
            const __m512i power = _mm512_sub_epi64(_mm512_sub_epi64(_mm512_max_epi64(field, unit), code_bias), mantissa);
            const __m512d scale = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(power, exponent_bias), 52));
            const __m512i value = _mm512_castpd_si512(_mm512_mul_pd(_mm512_cvtepi64_pd(significand), scale));
            const __m512i e = _mm512_sub_epi64(_mm512_srli_epi64(value, 52), exponent_bias);
            const __m512i f = _mm512_and_si512(_mm512_srli_epi64(value, 42), _mm512_set1_epi64(1023));
            _mm512_mask_cvtepi64_storeu_epi32(parts + b, m, _mm512_or_si512(_mm512_slli_epi64(e, 10), f));
        }
    }
}

// fp16/e4m3 block scales on a row of window size `window` (levels per block) whose codes are chosen:
// levels[b] points at block b's `window` values, then its `window` thresholds.
template <class T>
GRPHI_TARGET_AVX512 void scaled_blocks(const T* w, std::size_t n, std::size_t block_size, std::size_t window, bool flush,
                                       int lo, std::int16_t* exps, std::int8_t* signs, const T* const* levels) {
    with_search_steps<scaled_row_kernel, T>(window, w, n, block_size, window, flush, lo, exps, signs, levels);
}

}  // namespace grphi::kernels::avx512

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // GRPHI_X86_DISPATCH
