// Counting kernels, the one home of the library's histograms (rANS symbols, the entropy report's
// exponents, the file writer's exponent streams):
//   histogram_4way     the scalar reference: four interleaved sub-tables, so runs of one symbol do not
//                      serialise on one counter;
//   avx512::window_counter   AVX-512 counts of small offsets (a channel's window), 32 int16 lanes per
//                      step, one compare per bin; GRPHI_TARGET_AVX512, for callers that chose the
//                      AVX-512 route at run time (kernels::active_isa()).
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

// Counts of the int16 offsets 0 .. Bins-1 among 32 lanes per add(), in 16-bit lane counters: drain()
// into 64-bit counts at least every max_adds calls (a lane gains at most one per add).
template <int Bins>
struct window_counter {
    static_assert(Bins >= 1 && Bins <= 32, "grphi: a window counter holds 1 to 32 bins in registers");
    static constexpr std::size_t lanes = 32;
    static constexpr std::size_t max_adds = 32767;
    __m512i count[Bins];

    GRPHI_TARGET_AVX512 window_counter() {
        for (auto& bin : count) bin = _mm512_setzero_si512();
    }
    // Lanes in `counted` whose offset (wrapping int16 difference from the window bottom) is b count for bin b.
    GRPHI_TARGET_AVX512 void add(__m512i offsets, __mmask32 counted) {
        const __m512i one = _mm512_set1_epi16(1);
        for (int b = 0; b < Bins; ++b)
            count[b] = _mm512_mask_add_epi16(
                count[b], _mm512_mask_cmpeq_epi16_mask(counted, offsets, _mm512_set1_epi16(static_cast<std::int16_t>(b))),
                count[b], one);
    }
    // counts[b] += bin b for b < bins (<= Bins); every lane counter restarts from 0.
    GRPHI_TARGET_AVX512 void drain(std::uint64_t* counts, std::size_t bins) {
        const __m512i one = _mm512_set1_epi16(1);
        for (std::size_t b = 0; b < bins && b < static_cast<std::size_t>(Bins); ++b)
            counts[b] += static_cast<std::uint64_t>(_mm512_reduce_add_epi32(_mm512_madd_epi16(count[b], one)));
        for (auto& bin : count) bin = _mm512_setzero_si512();
    }
};

// counts[e - first] for the exponents e whose sign is nonzero, for first <= e < first + width (width <= 32;
// others are not counted: the caller compares the total with `nonzero`); also counts the nonzero and the
// negative signs.
GRPHI_TARGET_AVX512 inline void count_window_symbols(const std::int16_t* exponents, const std::int8_t* signs,
                                                     std::size_t n, int first, int width, std::uint64_t* counts,
                                                     std::uint64_t& nonzero, std::uint64_t& negative) {
    constexpr std::size_t lanes = window_counter<16>::lanes;
    constexpr std::size_t chunk = lanes * window_counter<16>::max_adds;
    for (int pass = 0; pass < width; pass += 16) {
        window_counter<16> counter;
        const __m512i bottom = _mm512_set1_epi16(static_cast<std::int16_t>(first + pass));
        for (std::size_t start = 0; start < n; start += chunk) {
            const std::size_t end = std::min(n, start + chunk);
            for (std::size_t i = start; i < end; i += lanes) {
                const auto m = end - i >= lanes ? ~__mmask32{0} : static_cast<__mmask32>((std::uint64_t{1} << (end - i)) - 1);
                const __m256i s = _mm256_maskz_loadu_epi8(m, signs + i);
                const __m512i e = _mm512_maskz_loadu_epi16(m, exponents + i);
                const __mmask32 keep = _mm256_test_epi8_mask(s, s);
                counter.add(_mm512_sub_epi16(e, bottom), keep);
                if (pass == 0) {
                    nonzero += static_cast<std::uint64_t>(__builtin_popcount(keep));
                    negative += static_cast<std::uint64_t>(__builtin_popcount(_mm256_movepi8_mask(s)));
                }
            }
            counter.drain(counts + pass, static_cast<std::size_t>(std::min(16, width - pass)));
        }
    }
}

}  // namespace grphi::kernels::avx512

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif  // GRPHI_X86_DISPATCH
