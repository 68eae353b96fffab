// The quantizer's row kernels on the build's own vector width (xsimd's default architecture: SSE2 in
// a portable build, AVX-512 under -march=native), for step-0 windows. They read the grid's cell table
// (core/levels.hpp) by gathers and give bit for bit what the scalar reference (quantize_scalar.hpp) gives.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "quantize_tables.hpp"

namespace grphi::kernels::baseline {

using ::grphi::detail::bits_t;
using ::grphi::detail::cell_table;

template <class T>
using ibatch = xsimd::batch<bits_t<T>, xsimd::default_arch>;
template <class T>
inline constexpr std::size_t lanes = ibatch<T>::size;
template <class T>
inline constexpr bits_t<T> magnitude_mask = std::numeric_limits<bits_t<T>>::max();
template <class T>
inline constexpr bits_t<T> sign_mask = std::numeric_limits<bits_t<T>>::min();

static_assert(xsimd::batch<float, xsimd::default_arch>::size == ibatch<float>::size &&
                  xsimd::batch<double, xsimd::default_arch>::size == ibatch<double>::size,
              "grphi: scalar and integer batches must have the same lanes");

// Table lookup of bit patterns: xsimd 8.1's own gathers fall back to scalar code on AVX-512,
// so the native instructions are called here; other targets take a scalar loop.
template <class T>
ibatch<T> gather_bits(const T* table, const ibatch<T>& index) {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of_v<xsimd::avx512f, xsimd::default_arch>) {
        if constexpr (std::is_same_v<T, float>)
            return ibatch<T>(_mm512_castps_si512(_mm512_i32gather_ps(index, table, 4)));
        else
            return ibatch<T>(_mm512_castpd_si512(_mm512_i64gather_pd(index, table, 8)));
    }
#endif
#if XSIMD_WITH_AVX2
    if constexpr (std::is_base_of_v<xsimd::avx2, xsimd::default_arch>) {
        if constexpr (std::is_same_v<T, float>)
            return ibatch<T>(_mm256_castps_si256(_mm256_i32gather_ps(table, index, 4)));
        else
            return ibatch<T>(_mm256_castpd_si256(_mm256_i64gather_pd(table, index, 8)));
    }
#endif
    alignas(64) bits_t<T> lane[ibatch<T>::size];
    index.store_aligned(lane);
    for (auto& l : lane) l = ::grphi::detail::to_bits(table[l]);
    return ibatch<T>::load_aligned(lane);
}

template <class T>
ibatch<T> load_bits(const T* p) {
    return ibatch<T>::load_unaligned(reinterpret_cast<const bits_t<T>*>(p));
}
template <class T>
void store_bits(const ibatch<T>& b, T* p) {
    b.store_unaligned(reinterpret_cast<bits_t<T>*>(p));
}

// Largest magnitude of a row as bits (>= inf_bits means the row holds NaN or Inf).
template <class T>
bits_t<T> row_max_bits(const T* w, std::size_t n) {
    using I = bits_t<T>;
    constexpr std::size_t L = lanes<T>;
    // Four independent maxima keep several loads in flight; the max of magnitude bits is order-free.
    ibatch<T> m(I(0)), m1(I(0)), m2(I(0)), m3(I(0));
    const ibatch<T> magnitude(magnitude_mask<T>);
    std::size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        m = xsimd::max(m, load_bits(w + i) & magnitude);
        m1 = xsimd::max(m1, load_bits(w + i + L) & magnitude);
        m2 = xsimd::max(m2, load_bits(w + i + 2 * L) & magnitude);
        m3 = xsimd::max(m3, load_bits(w + i + 3 * L) & magnitude);
    }
    for (; i + L <= n; i += L) m = xsimd::max(m, load_bits(w + i) & magnitude);
    m = xsimd::max(xsimd::max(m, m1), xsimd::max(m2, m3));
    alignas(64) I lane_max[L];
    m.store_aligned(lane_max);
    I best = 0;
    for (std::size_t j = 0; j < L; ++j) best = std::max(best, lane_max[j]);
    for (; i < n; ++i) best = std::max(best, I(::grphi::detail::to_bits(w[i]) & magnitude_mask<T>));
    return best;
}

// Unclamped exponent of magnitudes (bits); denormal lanes take the cell table's exact search.
template <class T, class Base>
ibatch<T> raw_exponent(const cell_table<T, Base>& cells, const ibatch<T>& mag) {
    using I = bits_t<T>;
    const ibatch<T> idx = mag >> cells.shift;
    const ibatch<T> base = gather_bits(cells.base_k_as_t.data(), idx);
    const ibatch<T> threshold = gather_bits(cells.threshold_as_t.data(), idx);
    ibatch<T> k = xsimd::select(mag >= threshold, base + ibatch<T>(I(1)), base);
    const auto denormal = (mag < ibatch<T>(cell_table<T, Base>::min_normal_bits)) & (mag != ibatch<T>(I(0)));
    if (xsimd::any(denormal)) {
        alignas(64) I m[lanes<T>], kk[lanes<T>];
        mag.store_aligned(m);
        k.store_aligned(kk);
        for (std::size_t j = 0; j < lanes<T>; ++j)
            if (m[j] != 0 && m[j] < cell_table<T, Base>::min_normal_bits) kk[j] = I(cells.exponent(m[j]));
        k = ibatch<T>::load_aligned(kk);
    }
    return k;
}

// Exponents (clamped into [lo, hi]), signs (0 for zeros and magnitudes below flush) and, when clipped_out
// is not null, clip flags of one row on the unscaled grid.
template <class T, class Base>
void eval_row(const cell_table<T, Base>& cells, int window_lo, int window_hi, bits_t<T> flush_bits, const T* w,
              std::size_t n, bits_t<T>* k_out, bits_t<T>* s_out, std::uint8_t* clipped_out) {
    using I = bits_t<T>;
    using B = ibatch<T>;
    constexpr std::size_t L = lanes<T>;
    const B lo = B(I(window_lo)), hi = B(I(window_hi)), flush = B(flush_bits);
    auto one = [&](const B& bits, I* k_dst, I* s_dst, std::uint8_t* clip_dst, std::size_t count) {
        const B mag = bits & B(magnitude_mask<T>);
        const B k = raw_exponent(cells, mag);
        const auto nonzero = mag != B(I(0));
        const auto keep = nonzero & (mag >= flush);
        const B sign = xsimd::select(keep, xsimd::select(bits < B(I(0)), B(I(-1)), B(I(1))), B(I(0)));
        const B clipped = xsimd::select(nonzero & ((k < lo) | (k > hi)), B(I(1)), B(I(0)));
        if (count == L) {
            xsimd::min(xsimd::max(k, lo), hi).store_unaligned(k_dst);
            sign.store_unaligned(s_dst);
        } else {
            alignas(64) I kk[L], ss[L];
            xsimd::min(xsimd::max(k, lo), hi).store_aligned(kk);
            sign.store_aligned(ss);
            std::copy(kk, kk + count, k_dst);
            std::copy(ss, ss + count, s_dst);
        }
        if (clip_dst) {
            alignas(64) I clip_lanes[L];
            clipped.store_aligned(clip_lanes);
            for (std::size_t j = 0; j < count; ++j) clip_dst[j] = static_cast<std::uint8_t>(clip_lanes[j]);
        }
    };
    auto clip_at = [&](std::size_t i) { return clipped_out ? clipped_out + i : nullptr; };
    std::size_t i = 0;
    for (; i + L <= n; i += L) one(load_bits(w + i), k_out + i, s_out + i, clip_at(i), L);
    if (i < n) {
        alignas(64) T tail[L] = {};
        std::copy(w + i, w + n, tail);
        one(load_bits(tail), k_out + i, s_out + i, clip_at(i), n - i);
    }
}

// Fake quantization of an unclustered step-0 row: exponents never leave registers.
template <class T, class Base>
void fake_row(const cell_table<T, Base>& cells, int window_lo, int window_hi, bits_t<T> flush_bits, const T* w,
              std::size_t n, T* out) {
    using I = bits_t<T>;
    using B = ibatch<T>;
    constexpr std::size_t L = lanes<T>;
    const auto& g = *cells.source;
    const B lo = B(I(window_lo)), hi = B(I(window_hi)), k_lo = B(I(g.k_lo)), flush = B(flush_bits);
    auto one = [&](const B& bits) {
        const B mag = bits & B(magnitude_mask<T>);
        const B k = xsimd::min(xsimd::max(raw_exponent(cells, mag), lo), hi);
        const B level = gather_bits(g.level.data(), k - k_lo);
        const auto keep = (mag != B(I(0))) & (mag >= flush);
        return xsimd::select(keep, level | (bits & B(sign_mask<T>)), B(I(0)));
    };
    std::size_t i = 0;
    for (; i + L <= n; i += L) store_bits(one(load_bits(w + i)), out + i);
    if (i < n) {
        alignas(64) T tail_in[L] = {};
        alignas(64) T tail_out[L];
        std::copy(w + i, w + n, tail_in);
        store_bits(one(load_bits(tail_in)), tail_out);
        std::copy(tail_out, tail_out + (n - i), out + i);
    }
}

}  // namespace grphi::kernels::baseline
