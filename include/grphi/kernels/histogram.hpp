// Counting kernels, the one home of the library's histograms (rANS symbols, the entropy report's
// exponents, the file writer's exponent streams):
//   histogram_4way     the scalar reference: four interleaved sub-tables, so runs of one symbol do not
//                      serialise on one counter;
//   avx512::count_offsets   AVX-512 counts of small offsets (a channel's window), 32 int16 lanes per
//                      step, one compare per bin, the caller's step reading the lanes; GRPHI_TARGET_AVX512,
//                      for callers that chose the AVX-512 route at run time (kernels::active_isa()).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "dispatch.hpp"

namespace grphi::kernels {

// One element's contribution: add to counts[bin] (bin < bins; add is 0 or 1).
struct histogram_entry {
    std::size_t bin;
    std::uint32_t add;
};

// counts[b] += the sum of entry(i).add over i < n with entry(i).bin == b. sub is scratch of 4 * bins
// 32-bit counters (overwritten); they are drained every 2^30 elements, so none can overflow.
template <class Entry>
void histogram_4way(std::size_t n, std::size_t bins, Entry&& entry, std::uint32_t* sub, std::uint64_t* counts) {
    std::uint32_t* t0 = sub;
    std::uint32_t* t1 = t0 + bins;
    std::uint32_t* t2 = t1 + bins;
    std::uint32_t* t3 = t2 + bins;
    constexpr std::size_t chunk = std::size_t{1} << 30;
    for (std::size_t begin = 0; begin < n; begin += chunk) {
        std::fill(sub, sub + 4 * bins, 0u);
        const std::size_t end = std::min(n, begin + chunk);
        std::size_t i = begin;
        for (; i + 4 <= end; i += 4) {
            const histogram_entry a = entry(i), b = entry(i + 1), c = entry(i + 2), d = entry(i + 3);
            t0[a.bin] += a.add;
            t1[b.bin] += b.add;
            t2[c.bin] += c.add;
            t3[d.bin] += d.add;
        }
        for (; i < end; ++i) {
            const histogram_entry a = entry(i);
            t0[a.bin] += a.add;
        }
        for (std::size_t b = 0; b < bins; ++b) counts[b] += std::uint64_t{t0[b]} + t1[b] + t2[b] + t3[b];
    }
}

}  // namespace grphi::kernels

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

// Counts of int16 offsets 0 .. Bins-1 over n elements, 32 lanes per step, in 16-bit lane counters
// drained into counts[0 .. bins) before they can overflow. step(i, m, counted) reads the lanes in m of
// elements i .. i+31 and returns their offsets (wrapping int16 differences from the window bottom),
// setting `counted` to the lanes that count, and step(i, counted) the same for all 32 lanes (GCC keeps
// masked loads even under a constant full mask: 1.6x slower); it may do other work on the way.
// The counters are locals of this one loop so they stay in registers (a counter object carried between
// calls was spilled to the stack on every step: 4x slower).
template <int Bins, class Step>
GRPHI_TARGET_AVX512 inline void count_offsets(std::size_t n, std::uint64_t* counts, std::size_t bins, Step& step) {
    static_assert(Bins >= 1 && Bins <= 32, "grphi: a window count holds 1 to 32 bins in registers");
    constexpr std::size_t lanes = 32;
    constexpr std::size_t chunk = lanes * 32767;  // a lane gains at most one per step
    const __m512i one = _mm512_set1_epi16(1);
    __m512i count[Bins];  // the bins' constants are memory operands: 16 counters + 16 constants would spill
    for (auto& c : count) c = _mm512_setzero_si512();
    for (std::size_t start = 0; start < n; start += chunk) {
        const std::size_t end = std::min(n, start + chunk);
        std::size_t i = start;
        __mmask32 counted;
        for (; i + lanes <= end; i += lanes) {  // whole steps: step(i, counted), plain loads
            const __m512i offsets = step(i, counted);
            for (int b = 0; b < Bins; ++b)
                count[b] = _mm512_mask_add_epi16(count[b], _mm512_mask_cmpeq_epi16_mask(counted, offsets, _mm512_set1_epi16(static_cast<std::int16_t>(b))), count[b], one);
        }
        if (i < end) {
            const __m512i offsets = step(i, static_cast<__mmask32>((std::uint64_t{1} << (end - i)) - 1), counted);
            for (int b = 0; b < Bins; ++b)
                count[b] = _mm512_mask_add_epi16(count[b], _mm512_mask_cmpeq_epi16_mask(counted, offsets, _mm512_set1_epi16(static_cast<std::int16_t>(b))), count[b], one);
        }
        for (std::size_t b = 0; b < bins && b < static_cast<std::size_t>(Bins); ++b)
            counts[b] += static_cast<std::uint64_t>(_mm512_reduce_add_epi32(_mm512_madd_epi16(count[b], one)));
        for (auto& c : count) c = _mm512_setzero_si512();
    }
}

// The entropy report's step: offsets of the exponents from `bottom`, counted where the sign is nonzero;
// on the first pass also the nonzero and negative signs.
struct window_symbol_step {
    const std::int16_t* exponents;
    const std::int8_t* signs;
    __m512i bottom;
    bool count_signs;
    std::uint64_t nonzero = 0, negative = 0;

    GRPHI_TARGET_AVX512 __m512i operator()(std::size_t i, __mmask32& counted) {
        return lanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(signs + i)), _mm512_loadu_si512(exponents + i), counted);
    }
    GRPHI_TARGET_AVX512 __m512i operator()(std::size_t i, __mmask32 m, __mmask32& counted) {
        return lanes(_mm256_maskz_loadu_epi8(m, signs + i), _mm512_maskz_loadu_epi16(m, exponents + i), counted);
    }
    GRPHI_TARGET_AVX512 __m512i lanes(__m256i s, __m512i e, __mmask32& counted) {
        counted = _mm256_test_epi8_mask(s, s);
        if (count_signs) {
            nonzero += static_cast<std::uint64_t>(__builtin_popcount(counted));
            negative += static_cast<std::uint64_t>(__builtin_popcount(_mm256_movepi8_mask(s)));
        }
        return _mm512_sub_epi16(e, bottom);
    }
};

// counts[e - first] for the exponents e whose sign is nonzero, for first <= e < first + width (width <= 32;
// others are not counted: the caller compares the total with `nonzero`); also counts the nonzero and the
// negative signs.
GRPHI_TARGET_AVX512 inline void count_window_symbols(const std::int16_t* exponents, const std::int8_t* signs,
                                                     std::size_t n, int first, int width, std::uint64_t* counts,
                                                     std::uint64_t& nonzero, std::uint64_t& negative) {
    for (int pass = 0; pass < width; pass += 16) {
        window_symbol_step step{exponents, signs, _mm512_set1_epi16(static_cast<std::int16_t>(first + pass)), pass == 0};
        count_offsets<16>(n, counts + pass, static_cast<std::size_t>(std::min(16, width - pass)), step);
        nonzero += step.nonzero;
        negative += step.negative;
    }
}

}  // namespace grphi::kernels::avx512

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // GRPHI_X86_DISPATCH
