// One quantized data section: the per-channel state, the rANS sign stream and the exponent stream of a
// block of rows (a whole tensor in format 1, one row part in format 2). Byte layout: docs/format.md,
// "Quantized section". Writers check the tensor first (check_storable); the reader validates every
// count, table and exponent before use and throws grphi::format_error naming the field.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/channels.hpp"
#include "../detail/block_scales.hpp"
#include "../detail/bytes.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/histogram.hpp"
#include "../coding/rans.hpp"
#include "stored_tensor.hpp"

namespace grphi {

namespace container {
inline constexpr std::size_t max_name_bytes = 65535;  // tensor and base names, in both formats

// Exponent stream modes (low 2 bits of the mode byte); bit 7 set: every exponent is stored, zeros too.
enum class exponent_mode : std::uint8_t { none = 0, absolute = 1, below_window_top = 2, raw = 3 };
inline constexpr std::uint8_t all_exponents_stored = 0x80;
}  // namespace container

namespace detail {

// The shape-derived counts both sides agree on (core/channels.hpp, packed's blocks_per_row() and
// scale_blocks_per_row()).
struct tensor_geometry {
    bool per_channel;
    std::uint64_t rows, cols, channels, block, blocks_per_row;
    block_scale scale_format;                // with block scales (scale_block > 0)
    std::uint64_t scale_block, scale_blocks_per_row, scale_blocks;
    explicit tensor_geometry(const stored_tensor& t)
        : per_channel(t.opts.per_channel), rows(static_cast<std::uint64_t>(t.rows)), cols(static_cast<std::uint64_t>(t.cols)),
          channels(static_cast<std::uint64_t>(channel_count(t.opts.per_channel, t.rows))),
          block(t.opts.clustered() ? static_cast<std::uint64_t>(t.opts.cluster_size) : 1),
          blocks_per_row(cols == 0 ? 0 : (cols - 1) / block + 1), scale_format(t.opts.block_format),
          scale_block(t.opts.blocked() ? static_cast<std::uint64_t>(t.opts.block_size) : 0),
          scale_blocks_per_row(t.scale_blocks_per_row()), scale_blocks(rows * scale_blocks_per_row) {}
    std::uint64_t channel_of_row(std::uint64_t r) const {
        return static_cast<std::uint64_t>(grphi::channel_of_row(per_channel, static_cast<std::int64_t>(r)));
    }
    bool blocked() const { return scale_block > 0; }
    // Exponent block scales: every weight's window is its block's, [block bottom, block top].
    bool exponent_blocks() const { return blocked() && scale_format == block_scale::exponent; }
};

// The bottom of an exponent-scaled block's window as the file defines it: max(top - levels + 1, e_min,
// the channel's window_lo), which is grphi::quantize's block window unless the grid's own range clips it
// (then its zero weights' exponents are stored: see all_exponents_stored).
inline int block_bottom(const stored_tensor& t, int top, int channel_lo) {
    int bottom = std::max(top - (*t.opts.levels - 1), channel_lo);
    if (t.opts.e_min) bottom = std::max(bottom, *t.opts.e_min);
    return bottom;
}

// Calls visit(exponent_index, window_lo, window_hi, has_nonzero) for every exponent slot, row-major, with
// the window the exponent must lie in (its channel's, or with exponent block scales its block's); a slot
// without a nonzero weight has exponent window_lo unless the section stores every exponent.
template <class Visit>
void for_each_exponent(const stored_tensor& t, const tensor_geometry& g, Visit&& visit) {
    if (g.blocks_per_row == 0) return;  // no columns: nothing to visit, however many rows
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        const int lo = t.window_lo[ch], hi = t.window_hi[ch];
        const std::int8_t* row_signs = t.signs.data() + r * g.cols;
        if (g.exponent_blocks()) {  // never clustered (options::validate)
            for (std::uint64_t b = 0; b < g.scale_blocks_per_row; ++b) {
                const int top = t.block_top[r * g.scale_blocks_per_row + b];
                const int bottom = block_bottom(t, top, lo);
                for (std::uint64_t i = b * g.scale_block, end = std::min(g.cols, i + g.scale_block); i < end; ++i)
                    visit(r * g.cols + i, bottom, top, row_signs[i] != 0);
            }
            continue;
        }
        if (g.block == 1) {  // one exponent per weight: the common case, kept branch-light
            for (std::uint64_t i = 0; i < g.cols; ++i) visit(r * g.cols + i, lo, hi, row_signs[i] != 0);
            continue;
        }
        for (std::uint64_t b = 0; b < g.blocks_per_row; ++b) {
            const std::uint64_t begin = b * g.block;
            const std::uint64_t end = std::min(g.cols, begin + g.block);
            bool nonzero = false;
            for (std::uint64_t i = begin; i < end && !nonzero; ++i) nonzero = row_signs[i] != 0;
            visit(r * g.blocks_per_row + b, lo, hi, nonzero);
        }
    }
}

inline double histogram_bits(const std::vector<std::uint64_t>& counts) {
    std::uint64_t n = 0;
    for (auto c : counts) n += c;
    double bits = 0;
    for (auto c : counts)
        if (c) bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / static_cast<double>(n));
    return bits;
}

// ---------------------------------------------------------------------------------------------
// Unclustered tensors (one exponent per weight) in one pass per row: the sign symbols, the nonzero
// weights' exponents in order, and the histograms that pick the exponent map, so nothing is scanned
// twice and no symbol stream is histogrammed again before coding. The bytes are those of the general
// path below, which still handles clustered tensors and rule-breaking ones (an exponent outside its
// window, a zero weight whose exponent is not the window bottom).
struct row_collector {
    rans::symbol* sign_symbols;  // next row's sign + 1 goes here
    rans::symbol* stored;        // next nonzero exponent (int16 bits) goes here
    std::uint64_t negative = 0;
    std::uint64_t nonzero = 0;
};

// counts[e - lo] += how often each packed exponent e occurs (all inside the window starting at lo), over
// the span the exponents cover (`scratch`: 4 * width counters for the kernel's sub-histograms).
inline void count_packed(const rans::symbol* packed, std::size_t kept, int lo, std::uint64_t* counts,
                         std::uint32_t* scratch) {
    if (kept == 0) return;
    int lowest = static_cast<std::int16_t>(packed[0]), highest = lowest;
    for (std::size_t i = 0; i < kept; ++i) {
        lowest = std::min<int>(lowest, static_cast<std::int16_t>(packed[i]));
        highest = std::max<int>(highest, static_cast<std::int16_t>(packed[i]));
    }
    const auto span = static_cast<std::size_t>(highest - lowest + 1);
    const auto offset = static_cast<rans::symbol>(lowest);
    kernels::histogram_4way(
        kept, span,
        [&](std::size_t i) { return kernels::histogram_entry{static_cast<rans::symbol>(packed[i] - offset), 1}; },
        scratch, counts + (lowest - lo));
}

// One row: counts[e - lo] for its nonzero exponents e (width entries). False when a sign is not -1, 0 or
// +1, an exponent lies outside [lo, lo + width) or a zero weight's exponent is not lo. Three simple
// passes (the first vectorises): symbols, counts and checks; packing; count_packed.
inline bool collect_row_scalar(const std::int8_t* signs, const std::int16_t* exponents, std::size_t n, int lo,
                               std::size_t width, std::uint64_t* counts, std::uint32_t* scratch, row_collector& c) {
    std::uint64_t negative = 0;
    int bad = 0, lowest = lo, highest = lo;
    for (std::size_t i = 0; i < n; ++i) {
        const int s = signs[i];
        const int e = exponents[i];
        c.sign_symbols[i] = static_cast<rans::symbol>(s + 1);
        negative += s < 0;
        bad |= (s < -1) | (s > 1) | ((s == 0) & (e != lo));
        const int kept_e = s != 0 ? e : lo;
        lowest = std::min(lowest, kept_e);
        highest = std::max(highest, kept_e);
    }
    if (bad || lowest < lo || highest - lo >= static_cast<int>(width)) return false;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
        c.stored[kept] = static_cast<rans::symbol>(exponents[i]);
        kept += signs[i] != 0;
    }
    count_packed(c.stored, kept, lo, counts, scratch);
    c.sign_symbols += n;
    c.stored += kept;
    c.negative += negative;
    c.nonzero += kept;
    return true;
}

#if GRPHI_X86_DISPATCH
// GCC 12's AVX-512 intrinsics (self-initialised _mm*_undefined_* operands) raise bogus
// -W(maybe-)uninitialized once inlined; nothing here is uninitialised.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// collect_row_avx512's step over 32 weights of a row (the lanes in m): sign symbols, checks, and the
// nonzero exponents packed; returns the exponents' offsets from the window bottom, counted where nonzero.
struct collect_step {
    const std::int8_t* signs;
    const std::int16_t* exponents;
    rans::symbol* sign_symbols;
    rans::symbol* out;  // the next packed exponent
    __m512i bottom, last;
    __mmask32 bad = 0;
    std::uint64_t negative = 0;

    GRPHI_TARGET_AVX512 __m512i operator()(std::size_t i, __mmask32& counted) {
        return lanes(i, ~__mmask32{0}, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(signs + i)),
                     _mm512_loadu_si512(exponents + i), counted);
    }
    GRPHI_TARGET_AVX512 __m512i operator()(std::size_t i, __mmask32 m, __mmask32& counted) {
        return lanes(i, m, _mm256_maskz_loadu_epi8(m, signs + i), _mm512_maskz_loadu_epi16(m, exponents + i), counted);
    }
    GRPHI_TARGET_AVX512 __m512i lanes(std::size_t i, __mmask32 m, __m256i s, __m512i e, __mmask32& counted) {
        const __m512i one = _mm512_set1_epi16(1);
        const __m512i two = _mm512_set1_epi16(2);
        const __mmask32 nonzero = _mm256_mask_test_epi8_mask(m, s, s);
        negative += static_cast<std::uint64_t>(__builtin_popcount(_mm256_movepi8_mask(s) & m));
        const __m512i sign_symbol = _mm512_add_epi16(_mm512_cvtepi8_epi16(s), one);
        _mm512_mask_storeu_epi16(sign_symbols + i, m, sign_symbol);
        bad |= _mm512_mask_cmpgt_epu16_mask(m, sign_symbol, two);
        const __m512i d = _mm512_sub_epi16(e, bottom);
        bad |= _mm512_mask_cmpgt_epu16_mask(nonzero, d, last);
        bad |= _mm512_mask_cmpneq_epi16_mask(m & ~nonzero, e, bottom);
        const auto low = static_cast<__mmask16>(nonzero), high = static_cast<__mmask16>(nonzero >> 16);
        const __m512i e_low = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(e));
        const __m512i e_high = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(e, 1));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(low, e_low)));
        out += __builtin_popcount(low);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(high, e_high)));
        out += __builtin_popcount(high);
        counted = nonzero;
        return d;
    }
};

// collect_row_scalar for windows of at most Bins exponents, 32 weights per step: the window counts of
// kernels/histogram.hpp; a compress packs the nonzero exponents. Bins == 0 counts nothing (the caller
// counts the packed exponents). Needs 16 symbols of slack after the stored exponents (the compress
// writes whole vectors).
template <int Bins>
GRPHI_TARGET_AVX512 inline bool collect_row_avx512(const std::int8_t* signs, const std::int16_t* exponents,
                                                   std::size_t n, int lo, std::size_t width, std::uint64_t* counts,
                                                   row_collector& c) {
    collect_step step{signs, exponents, c.sign_symbols, c.stored, _mm512_set1_epi16(static_cast<std::int16_t>(lo)),
                      _mm512_set1_epi16(static_cast<std::int16_t>(width - 1))};
    if constexpr (Bins > 0) {
        kernels::avx512::count_offsets<Bins>(n, counts, width, step);
    } else {
        (void)counts;
        __mmask32 counted;
        std::size_t i = 0;
        for (; i + 32 <= n; i += 32) step(i, counted);
        if (i < n) step(i, static_cast<__mmask32>((std::uint64_t{1} << (n - i)) - 1), counted);
    }
    const auto kept = static_cast<std::uint64_t>(step.out - c.stored);
    c.sign_symbols += n;
    c.stored = step.out;
    c.negative += step.negative;
    c.nonzero += kept;
    return step.bad == 0;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Chooses the row kernel for the window's width at run time (scalar when no vector one applies).
inline bool collect_row(const std::int8_t* signs, const std::int16_t* exponents, std::size_t n, int lo,
                        std::size_t width, std::uint64_t* counts, std::uint32_t* scratch, row_collector& c) {
#if GRPHI_X86_DISPATCH
    if (kernels::active_isa() == kernels::isa::avx512) {
        if (width <= 4) return collect_row_avx512<4>(signs, exponents, n, lo, width, counts, c);
        if (width <= 8) return collect_row_avx512<8>(signs, exponents, n, lo, width, counts, c);
        if (width <= 16) return collect_row_avx512<16>(signs, exponents, n, lo, width, counts, c);
        const rans::symbol* packed = c.stored;
        if (!collect_row_avx512<0>(signs, exponents, n, lo, width, counts, c)) return false;
        count_packed(packed, static_cast<std::size_t>(c.stored - packed), lo, counts, scratch);
        return true;
    }
#endif
    return collect_row_scalar(signs, exponents, n, lo, width, counts, scratch, c);
}

// A histogram shaped as rans::histogram returns it: counts[first, last nonzero].
inline std::vector<std::uint64_t> trimmed_counts(const std::vector<std::uint64_t>& counts, std::size_t first) {
    std::size_t end = counts.size();
    while (end > first && counts[end - 1] == 0) --end;
    return std::vector<std::uint64_t>(counts.begin() + static_cast<std::ptrdiff_t>(first),
                                      counts.begin() + static_cast<std::ptrdiff_t>(end));
}

// The data section's sign and exponent streams for an unclustered tensor, the same bytes as
// write_streams_general; false (nothing written) when that general path must decide.
inline bool write_unclustered_streams(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out) {
    if (g.block != 1 || g.rows == 0 || g.cols == 0) return false;
    int min_lo = t.window_lo[0], max_hi = t.window_hi[0];
    std::size_t max_width = 0;
    for (std::uint64_t ch = 0; ch < g.channels; ++ch) {
        min_lo = std::min<int>(min_lo, t.window_lo[ch]);
        max_hi = std::max<int>(max_hi, t.window_hi[ch]);
        max_width = std::max<std::size_t>(max_width, static_cast<std::size_t>(t.window_hi[ch] - t.window_lo[ch] + 1));
    }
    // Row histograms cost O(width) per row: bounded by the row's own length.
    if (max_width > std::max<std::uint64_t>(64, g.cols)) return false;

    const std::size_t n = static_cast<std::size_t>(g.rows * g.cols);
    constexpr std::size_t slack = 16;  // the vector kernel's compress stores whole vectors
    const std::unique_ptr<rans::symbol[]> sign_symbols(new rans::symbol[n]);
    const std::unique_ptr<rans::symbol[]> stored(new rans::symbol[n + slack]);
    std::vector<std::uint64_t> row_stored(static_cast<std::size_t>(g.rows));
    std::vector<std::uint64_t> by_exponent(static_cast<std::size_t>(max_hi - min_lo + 1), 0);  // exponent min_lo + i
    std::vector<std::uint64_t> below_top(max_width, 0);                                         // window_hi - exponent
    std::vector<std::uint64_t> row_counts(max_width);
    std::vector<std::uint32_t> scratch(4 * max_width);
    row_collector c{sign_symbols.get(), stored.get()};
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        const int lo = t.window_lo[ch], hi = t.window_hi[ch];
        const auto width = static_cast<std::size_t>(hi - lo + 1);
        std::fill(row_counts.begin(), row_counts.begin() + static_cast<std::ptrdiff_t>(width), 0);
        const std::uint64_t before = c.nonzero;
        if (!collect_row(t.signs.data() + r * g.cols, t.exponents.data() + r * g.cols, static_cast<std::size_t>(g.cols), lo,
                         width, row_counts.data(), scratch.data(), c))
            return false;
        row_stored[static_cast<std::size_t>(r)] = c.nonzero - before;
        for (std::size_t j = 0; j < width; ++j) {
            by_exponent[static_cast<std::size_t>(lo - min_lo) + j] += row_counts[j];
            below_top[width - 1 - j] += row_counts[j];
        }
    }
    const std::uint64_t negative = c.negative, zero = n - c.nonzero, positive = c.nonzero - c.negative;
    std::vector<std::uint64_t> sign_counts = {negative, zero, positive};
    while (sign_counts.back() == 0) sign_counts.pop_back();
    rans::encode_counted(sign_symbols.get(), n, sign_counts, out);

    // Every zero weight sits at its window bottom here: zeros are skipped (flag clear).
    const auto count = static_cast<std::size_t>(c.nonzero);
    if (count == 0) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::none));
        return true;
    }
    std::size_t first = 0;
    while (by_exponent[first] == 0) ++first;
    std::size_t last = by_exponent.size() - 1;
    while (by_exponent[last] == 0) --last;
    std::size_t deepest = below_top.size() - 1;
    while (below_top[deepest] == 0) --deepest;
    const int lowest = min_lo + static_cast<int>(first);
    const bool absolute_fits = last - first < rans::max_alphabet;
    const bool below_top_fits = deepest < rans::max_alphabet;
    rans::symbol* symbols = stored.get();
    if (!absolute_fits && !below_top_fits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::raw));
        const std::size_t at = out.size();
        out.resize(at + 2 * count);
        for (std::size_t i = 0; i < count; ++i) store_u16(out.data() + at + 2 * i, symbols[i]);
        return true;
    }
    // Two symbol maps, as in the general path: keep the one with the smaller order-0 entropy.
    const std::vector<std::uint64_t> absolute = absolute_fits ? trimmed_counts(by_exponent, first) : std::vector<std::uint64_t>{};
    const std::vector<std::uint64_t> depth = below_top_fits ? trimmed_counts(below_top, 0) : std::vector<std::uint64_t>{};
    const double absolute_bits = absolute_fits ? histogram_bits(absolute) : std::numeric_limits<double>::infinity();
    const double below_top_bits = below_top_fits ? histogram_bits(depth) : std::numeric_limits<double>::infinity();
    if (absolute_bits <= below_top_bits) {
        const auto offset = static_cast<rans::symbol>(lowest);
        for (std::size_t i = 0; i < count; ++i) symbols[i] = static_cast<rans::symbol>(symbols[i] - offset);
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::absolute));
        put_varint(out, zigzag(lowest));
        rans::encode_counted(symbols, count, absolute, out);
    } else {
        rans::symbol* row = symbols;
        for (std::uint64_t r = 0; r < g.rows; ++r) {
            const auto top = static_cast<rans::symbol>(t.window_hi[g.channel_of_row(r)]);
            const auto kept = static_cast<std::size_t>(row_stored[static_cast<std::size_t>(r)]);
            for (std::size_t i = 0; i < kept; ++i) row[i] = static_cast<rans::symbol>(top - row[i]);
            row += kept;
        }
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::below_window_top));
        rans::encode_counted(symbols, count, depth, out);
    }
    return true;
}

inline void write_streams_general(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out);
inline void write_block_scales(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out);

// Data section of one tensor: channel state, block scales (block_size > 0), sign stream, exponent stream.
inline void write_tensor_data(const stored_tensor& t, std::vector<std::uint8_t>& out) {
    const tensor_geometry g(t);
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        put_u16(out, static_cast<std::uint16_t>(t.window_lo[c]));
        put_u16(out, static_cast<std::uint16_t>(t.window_hi[c]));
        out.push_back(static_cast<std::uint8_t>(t.scale_steps[c]));
    }
    if (g.blocked()) {
        write_block_scales(t, g, out);
        write_streams_general(t, g, out);  // exponent block windows: the rule itself, not the row collector
        return;
    }
    if (!write_unclustered_streams(t, g, out)) write_streams_general(t, g, out);
}

// Block scale modes (a u8 before each coded array of block state).
enum class block_array_mode : std::uint8_t { coded = 0, raw = 1, all_zero = 2 };

// Block scales of the part's rows, row-major (docs/format.md, "Block scales"): exponent scales as two
// arrays, tops as their depth below the channel's window top (rANS, or raw i16 when that depth does not
// fit the coder's alphabet) and steps (all zero: one byte; else rANS of step + 8); fp16 codes as u16,
// e4m3 codes as u8.
inline void write_block_scales(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out) {
    const auto n = static_cast<std::size_t>(g.scale_blocks);
    if (n == 0) return;
    if (g.scale_format == block_scale::fp16) {
        for (std::uint16_t code : t.block_scales) put_u16(out, code);
        return;
    }
    if (g.scale_format == block_scale::e4m3) {
        for (std::uint16_t code : t.block_scales) out.push_back(static_cast<std::uint8_t>(code));
        return;
    }
    std::vector<rans::symbol> symbols(n);
    int deepest = 0;
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const int hi = t.window_hi[g.channel_of_row(r)];
        for (std::uint64_t b = 0; b < g.scale_blocks_per_row; ++b) {
            const std::size_t at = static_cast<std::size_t>(r * g.scale_blocks_per_row + b);
            const int depth = hi - t.block_top[at];
            deepest = std::max(deepest, depth);
            symbols[at] = static_cast<rans::symbol>(depth);
        }
    }
    if (deepest < static_cast<int>(rans::max_alphabet)) {
        out.push_back(static_cast<std::uint8_t>(block_array_mode::coded));
        rans::encode(symbols.data(), n, out);
    } else {
        out.push_back(static_cast<std::uint8_t>(block_array_mode::raw));
        for (std::int16_t top : t.block_top) put_u16(out, static_cast<std::uint16_t>(top));
    }
    bool steps = false;
    for (std::size_t i = 0; i < n; ++i) {
        symbols[i] = static_cast<rans::symbol>(t.block_steps[i] + scale_step_max);
        steps = steps || t.block_steps[i] != 0;
    }
    if (!steps) {
        out.push_back(static_cast<std::uint8_t>(block_array_mode::all_zero));
        return;
    }
    out.push_back(static_cast<std::uint8_t>(block_array_mode::coded));
    rans::encode(symbols.data(), n, out);
}

// Reads and checks what write_block_scales wrote (channel windows already read): tops inside their
// channel window and [e_min, e_max], steps in [-8, 8], fp16/e4m3 codes finite scales in (0, 1].
inline void read_block_scales(stored_tensor& t, const tensor_geometry& g, byte_reader& in) {
    const auto n = static_cast<std::size_t>(g.scale_blocks);
    t.block_top.clear();
    t.block_steps.clear();
    t.block_scales.clear();
    if (n == 0) return;
    if (g.scale_format != block_scale::exponent) {
        const std::size_t width = g.scale_format == block_scale::fp16 ? 2 : 1;
        if (n > in.remaining() / width) in.fail("truncated block scale codes (" + std::to_string(n) + " blocks)");
        const std::uint8_t* p = in.bytes(n * width, "block scale codes");
        t.block_scales.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint16_t code = width == 2 ? load_u16(p + 2 * i) : p[i];
            if (!valid_block_scale_code(g.scale_format, code))
                in.fail("block " + std::to_string(i) + " has scale code " + std::to_string(code) + ", not a finite " +
                        (width == 2 ? "fp16" : "e4m3") + " scale in (0, 1]");
            t.block_scales[i] = code;
        }
        return;
    }
    const std::uint8_t top_mode = in.u8("block top mode");
    t.block_top.resize(n);
    if (top_mode == static_cast<std::uint8_t>(block_array_mode::coded)) {
        const std::vector<rans::symbol> depth = rans::decode(in, n);
        if (depth.size() != n) in.fail("block top stream has " + std::to_string(depth.size()) + " symbols, expected " + std::to_string(n));
        for (std::uint64_t r = 0; r < g.rows; ++r) {
            const int hi = t.window_hi[g.channel_of_row(r)];
            for (std::uint64_t b = 0; b < g.scale_blocks_per_row; ++b) {
                const std::size_t at = static_cast<std::size_t>(r * g.scale_blocks_per_row + b);
                t.block_top[at] = static_cast<std::int16_t>(std::max(hi - int{depth[at]}, -32768));
            }
        }
    } else if (top_mode == static_cast<std::uint8_t>(block_array_mode::raw)) {
        if (n > in.remaining() / 2) in.fail("truncated raw block tops (" + std::to_string(n) + " blocks)");
        const std::uint8_t* p = in.bytes(2 * n, "raw block tops");
        for (std::size_t i = 0; i < n; ++i) t.block_top[i] = static_cast<std::int16_t>(load_u16(p + 2 * i));
    } else {
        in.fail("unknown block top mode " + std::to_string(top_mode));
    }
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        for (std::uint64_t b = 0; b < g.scale_blocks_per_row; ++b) {
            const int top = t.block_top[static_cast<std::size_t>(r * g.scale_blocks_per_row + b)];
            if (top < t.window_lo[ch] || top > t.window_hi[ch] || (t.opts.e_min && top < *t.opts.e_min) ||
                (t.opts.e_max && top > *t.opts.e_max))
                in.fail("block " + std::to_string(r * g.scale_blocks_per_row + b) + " has top " + std::to_string(top) +
                        " outside its channel window [" + std::to_string(t.window_lo[ch]) + ", " +
                        std::to_string(t.window_hi[ch]) + "] or the e_min/e_max clip");
        }
    }
    const std::uint8_t step_mode = in.u8("block step mode");
    if (step_mode == static_cast<std::uint8_t>(block_array_mode::all_zero)) {
        t.block_steps.assign(n, 0);
        return;
    }
    if (step_mode != static_cast<std::uint8_t>(block_array_mode::coded)) in.fail("unknown block step mode " + std::to_string(step_mode));
    const std::vector<rans::symbol> steps = rans::decode(in, n);
    if (steps.size() != n) in.fail("block step stream has " + std::to_string(steps.size()) + " symbols, expected " + std::to_string(n));
    t.block_steps.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        if (steps[i] > 2 * scale_step_max)
            in.fail("block " + std::to_string(i) + " has step symbol " + std::to_string(steps[i]) + ", not a step in [-8, 8]");
        t.block_steps[i] = static_cast<std::int8_t>(int{steps[i]} - scale_step_max);
    }
}

// The sign and exponent streams of any tensor the container accepts, by the rule itself.
inline void write_streams_general(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out) {
    std::vector<rans::symbol> symbols(t.signs.size());
    for (std::size_t i = 0; i < t.signs.size(); ++i) symbols[i] = static_cast<rans::symbol>(t.signs[i] + 1);
    rans::encode(symbols.data(), symbols.size(), out);

    // A zero weight (or a block without a nonzero member) has exponent window_lo: skip it unless some
    // tensor breaks that rule, then store every exponent so the round trip stays exact.
    bool skip_zeros = true;
    for_each_exponent(t, g, [&](std::uint64_t i, int lo, int, bool nonzero) {
        if (!nonzero && t.exponents[i] != lo) skip_zeros = false;
    });
    std::vector<std::int16_t> stored_exponents;
    std::vector<std::int16_t> stored_tops;
    stored_exponents.reserve(t.exponents.size());
    stored_tops.reserve(t.exponents.size());
    for_each_exponent(t, g, [&](std::uint64_t i, int, int hi, bool nonzero) {
        if (nonzero || !skip_zeros) {
            stored_exponents.push_back(t.exponents[i]);
            stored_tops.push_back(static_cast<std::int16_t>(hi));
        }
    });
    const std::uint8_t flag = skip_zeros ? 0 : container::all_exponents_stored;
    if (stored_exponents.empty()) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::none) | flag);
        return;
    }
    int lowest = stored_exponents[0], highest = stored_exponents[0], deepest = 0;
    for (std::size_t i = 0; i < stored_exponents.size(); ++i) {
        lowest = std::min<int>(lowest, stored_exponents[i]);
        highest = std::max<int>(highest, stored_exponents[i]);
        deepest = std::max(deepest, stored_tops[i] - stored_exponents[i]);
    }
    const bool absolute_fits = highest - lowest < static_cast<int>(rans::max_alphabet);
    const bool below_top_fits = deepest < static_cast<int>(rans::max_alphabet);
    if (!absolute_fits && !below_top_fits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::raw) | flag);
        for (std::int16_t k : stored_exponents) put_u16(out, static_cast<std::uint16_t>(k));
        return;
    }
    // Two symbol maps: exponent - lowest, or depth below the channel's window top (aligns channels
    // whose windows differ); keep the one with the smaller order-0 entropy.
    std::vector<rans::symbol> absolute(stored_exponents.size()), below_top(stored_exponents.size());
    double absolute_bits = std::numeric_limits<double>::infinity(), below_top_bits = absolute_bits;
    if (absolute_fits) {
        for (std::size_t i = 0; i < absolute.size(); ++i) absolute[i] = static_cast<rans::symbol>(stored_exponents[i] - lowest);
        absolute_bits = histogram_bits(rans::histogram(absolute));
    }
    if (below_top_fits) {
        for (std::size_t i = 0; i < below_top.size(); ++i)
            below_top[i] = static_cast<rans::symbol>(stored_tops[i] - stored_exponents[i]);
        below_top_bits = histogram_bits(rans::histogram(below_top));
    }
    if (absolute_bits <= below_top_bits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::absolute) | flag);
        put_varint(out, zigzag(lowest));
        rans::encode(absolute.data(), absolute.size(), out);
    } else {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::below_window_top) | flag);
        rans::encode(below_top.data(), below_top.size(), out);
    }
}

// Shape and per-channel arrays must agree before anything is written.
inline void check_storable(const stored_tensor& t) {
    auto fail = [&](const std::string& what) {
        throw std::invalid_argument("grphi::save: tensor '" + t.name + "': " + what);
    };
    if (t.name.size() > container::max_name_bytes) fail("name longer than 65535 bytes");
    if (t.base_name.size() > container::max_name_bytes) fail("base name longer than 65535 bytes");
    if (t.scalar != scalar_kind::float32 && t.scalar != scalar_kind::float64) fail("unknown scalar type");
    if (!(t.base_value >= static_cast<double>(min_base_value)) || !std::isfinite(t.base_value)) fail("base value must be finite and >= 1.03");
    if (t.opts.base_value && *t.opts.base_value != t.base_value)
        fail("options base_value " + number_text(*t.opts.base_value) + " differs from the base value " +
             number_text(t.base_value));
    if (t.rows < 0 || t.cols < 0) fail("negative shape");
    if (t.cols != 0 && static_cast<std::uint64_t>(t.rows) > max_tensor_elements / static_cast<std::uint64_t>(t.cols))
        fail("shape " + std::to_string(t.rows) + " x " + std::to_string(t.cols) + " holds more than 2^62 weights");
    try {
        t.opts.validate();
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
    const tensor_geometry g(t);
    if (t.signs.size() != t.size()) fail("signs has the wrong size");
    if (t.exponents.size() != g.rows * g.blocks_per_row) fail("exponents has the wrong size");
    if (t.window_lo.size() != g.channels || t.window_hi.size() != g.channels || t.scale_steps.size() != g.channels)
        fail("per-channel state has the wrong size");
    std::uint32_t bad_sign = 0;  // branch-free so the loop vectorises: this check runs on every tensor written
    for (const std::int8_t s : t.signs) bad_sign |= static_cast<std::uint32_t>(s < -1) | static_cast<std::uint32_t>(s > 1);
    if (bad_sign != 0) fail("a sign is not -1, 0 or +1");
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        if (t.window_lo[c] > t.window_hi[c]) fail("channel " + std::to_string(c) + " has window_lo > window_hi");
        if (t.scale_steps[c] < -scale_step_max || t.scale_steps[c] > scale_step_max)  // the reader refuses those
            fail("channel " + std::to_string(c) + " has scale step " + std::to_string(t.scale_steps[c]) + " outside [-8, 8]");
    }
    // Block scales: the reader's checks (read_block_scales), so that whatever is written reads back.
    const bool exponent_blocks = g.exponent_blocks(), scaled_blocks = g.blocked() && !exponent_blocks;
    if (t.block_top.size() != (exponent_blocks ? g.scale_blocks : 0) || t.block_steps.size() != t.block_top.size() ||
        t.block_scales.size() != (scaled_blocks ? g.scale_blocks : 0))
        fail("block scales have " + std::to_string(t.block_top.size()) + " tops, " + std::to_string(t.block_steps.size()) +
             " steps and " + std::to_string(t.block_scales.size()) + " codes for " + std::to_string(g.blocked() ? g.scale_blocks : 0) +
             " blocks");
    for (std::size_t b = 0; b < t.block_scales.size(); ++b)
        if (!valid_block_scale_code(g.scale_format, t.block_scales[b]))
            fail("block " + std::to_string(b) + " has scale code " + std::to_string(t.block_scales[b]) + ", not a scale in (0, 1]");
    for (std::uint64_t r = 0; r < g.rows && exponent_blocks; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        for (std::uint64_t b = 0; b < g.scale_blocks_per_row; ++b) {
            const auto at = static_cast<std::size_t>(r * g.scale_blocks_per_row + b);
            const int top = t.block_top[at];
            if (top < t.window_lo[ch] || top > t.window_hi[ch] || (t.opts.e_min && top < *t.opts.e_min) ||
                (t.opts.e_max && top > *t.opts.e_max))
                fail("block " + std::to_string(at) + " has top " + std::to_string(top) + " outside its channel window or the e_min/e_max clip");
            if (t.block_steps[at] < -scale_step_max || t.block_steps[at] > scale_step_max)
                fail("block " + std::to_string(at) + " has scale step " + std::to_string(t.block_steps[at]) + " outside [-8, 8]");
        }
    }
    if (exponent_blocks) {
        bool inside = true;
        for_each_exponent(t, g, [&](std::uint64_t i, int lo, int hi, bool) {
            inside = inside && t.exponents[i] >= lo && t.exponents[i] <= hi;
        });
        if (!inside) fail("an exponent is outside its block window");
        return;
    }
    std::uint32_t outside = 0;  // every exponent slot, row by row, without a branch per slot
    for (std::uint64_t r = 0; r < g.rows && g.blocks_per_row != 0; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        const std::int16_t lo = t.window_lo[ch], hi = t.window_hi[ch];
        const std::int16_t* row_k = t.exponents.data() + r * g.blocks_per_row;
        for (std::uint64_t i = 0; i < g.blocks_per_row; ++i)
            outside |= static_cast<std::uint32_t>(row_k[i] < lo) | static_cast<std::uint32_t>(row_k[i] > hi);
    }
    if (outside != 0) fail("an exponent is outside its channel window");
}

// Buffers a reader reuses section after section (rANS symbols of one stream at a time).
struct section_scratch {
    std::vector<rans::symbol> symbols;
};

// Decodes one data section into t (whose header fields are set); t's arrays and the scratch keep their
// capacity, so a reader decoding part after part into the same objects allocates once.
inline void read_tensor_data(stored_tensor& t, byte_reader& in, section_scratch& scratch) {
    const tensor_geometry g(t);
    if (g.channels > in.remaining() / 5) in.fail("truncated channel state (" + std::to_string(g.channels) + " channels)");
    t.window_lo.resize(g.channels);
    t.window_hi.resize(g.channels);
    t.scale_steps.resize(g.channels);
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        const std::uint8_t* p = in.bytes(5, "channel state");
        t.window_lo[c] = static_cast<std::int16_t>(load_u16(p));
        t.window_hi[c] = static_cast<std::int16_t>(load_u16(p + 2));
        t.scale_steps[c] = static_cast<std::int8_t>(p[4]);
        if (t.window_lo[c] > t.window_hi[c])
            in.fail("channel " + std::to_string(c) + " window [" + std::to_string(t.window_lo[c]) + ", " +
                    std::to_string(t.window_hi[c]) + "] is empty");
        if (t.scale_steps[c] < -scale_step_max || t.scale_steps[c] > scale_step_max)
            in.fail("channel " + std::to_string(c) + " scale step " + std::to_string(t.scale_steps[c]) + " is outside [-8, 8]");
    }
    read_block_scales(t, g, in);
    {  // one symbol buffer for the signs and then the exponents: peak memory ~5 bytes per weight
        std::vector<rans::symbol>& signs = scratch.symbols;
        rans::decode_into(in, signs, static_cast<std::size_t>(t.size()));
        if (signs.size() != t.size())
            in.fail("sign stream has " + std::to_string(signs.size()) + " symbols, expected " + std::to_string(t.size()));
        // Converted and checked in one pass that vectorises; the first bad symbol is searched only on failure.
        t.signs.resize(signs.size());
        const rans::symbol* __restrict from = signs.data();
        std::int8_t* __restrict to = t.signs.data();
        std::uint32_t bad_symbol = 0;
        const std::size_t count = signs.size();  // a local: int8 stores could otherwise move the vector's end
        for (std::size_t i = 0; i < count; ++i) {
            bad_symbol |= static_cast<std::uint32_t>(from[i] > 2);
            to[i] = static_cast<std::int8_t>(static_cast<int>(from[i]) - 1);
        }
        if (bad_symbol != 0) {
            const auto bad = std::find_if(signs.begin(), signs.end(), [](rans::symbol s) { return s > 2; });
            in.fail("sign symbol " + std::to_string(*bad) + " at weight " + std::to_string(bad - signs.begin()) +
                    " is not 0, 1 or 2");
        }
    }

    const std::uint8_t mode_byte = in.u8("exponent mode");
    if (mode_byte & 0x7c) in.fail("unknown exponent mode " + std::to_string(mode_byte));
    const auto mode = static_cast<container::exponent_mode>(mode_byte & 3);
    const bool store_all = mode_byte & container::all_exponents_stored;
    t.exponents.resize(g.rows * g.blocks_per_row);  // every slot is written below
    std::uint64_t expected = 0;
    std::vector<std::uint32_t> stored_per_row;  // one exponent per weight: counted per row (the slots are set below)
    const bool channel_windows = g.block == 1 && !g.exponent_blocks();  // each weight in its channel's window
    if (channel_windows) {
        stored_per_row.assign(static_cast<std::size_t>(g.rows), static_cast<std::uint32_t>(g.cols));
        if (!store_all && g.cols != 0)
            for (std::uint64_t r = 0; r < g.rows; ++r) {
                const std::int8_t* row_signs = t.signs.data() + r * g.cols;
                std::uint32_t zeros = 0;  // a branch-free count the compiler vectorises
                for (std::uint64_t i = 0; i < g.cols; ++i) zeros += static_cast<std::uint32_t>(row_signs[i] == 0);
                stored_per_row[static_cast<std::size_t>(r)] -= zeros;
            }
        for (const std::uint32_t n : stored_per_row) expected += n;
    } else {
        for_each_exponent(t, g, [&](std::uint64_t i, int lo, int, bool nonzero) {
            t.exponents[i] = static_cast<std::int16_t>(lo);
            expected += nonzero || store_all;
        });
    }
    if (mode == container::exponent_mode::none) {
        if (expected != 0) in.fail("exponent stream missing for " + std::to_string(expected) + " exponents");
        if (channel_windows)  // every weight is zero: its slot holds the window's low end
            for_each_exponent(t, g, [&](std::uint64_t i, int lo, int, bool) { t.exponents[i] = static_cast<std::int16_t>(lo); });
        return;
    }
    std::int64_t lowest = 0;
    std::vector<rans::symbol>& symbols = scratch.symbols;
    std::vector<std::int16_t> raw;
    if (mode == container::exponent_mode::raw) {
        if (expected > in.remaining() / 2) in.fail("truncated raw exponents");
        raw.resize(static_cast<std::size_t>(expected));
        for (auto& k : raw) k = static_cast<std::int16_t>(load_u16(in.bytes(2, "raw exponent")));
    } else {
        if (mode == container::exponent_mode::absolute) {
            lowest = unzigzag(in.varint("exponent offset"));
            if (lowest < -32768 || lowest > 32767) in.fail("exponent offset " + std::to_string(lowest) + " is outside int16");
        }
        rans::decode_into(in, symbols, static_cast<std::size_t>(expected));
        if (symbols.size() != expected)
            in.fail("exponent stream has " + std::to_string(symbols.size()) + " symbols, expected " + std::to_string(expected));
    }
    if (channel_windows && mode != container::exponent_mode::raw) {
        // The common case without branches per weight: every slot reads the next symbol (clamped to the
        // last one) and advances only when its weight is stored; the others keep the window's low end.
        const rans::symbol no_symbol = 0;
        const rans::symbol* sym = expected != 0 ? symbols.data() : &no_symbol;
        const std::size_t last = expected != 0 ? static_cast<std::size_t>(expected - 1) : 0;
        const bool relative = mode == container::exponent_mode::below_window_top;
        std::size_t next = 0;
        bool inside = true;
        // The direction is a compile-time constant in each loop: no multiply per weight.
        auto copy_row = [&](const rans::symbol* row_sym, std::int32_t origin, std::int32_t lo, std::int32_t hi,
                            std::int16_t* row_k, auto direction) {
            std::uint32_t outside = 0;
            for (std::uint64_t i = 0; i < g.cols; ++i) {
                const std::int32_t k = origin + decltype(direction)::value * static_cast<std::int32_t>(row_sym[i]);
                outside |= static_cast<std::uint32_t>(k < lo) | static_cast<std::uint32_t>(k > hi);
                row_k[i] = static_cast<std::int16_t>(k);
            }
            return outside == 0;
        };
        for (std::uint64_t r = 0; r < g.rows; ++r) {
            const std::uint64_t ch = g.channel_of_row(r);
            const std::int32_t lo = t.window_lo[ch], hi = t.window_hi[ch];
            const std::int32_t origin = relative ? hi : static_cast<std::int32_t>(lowest), direction = relative ? -1 : 1;
            const std::int8_t* row_signs = t.signs.data() + r * g.cols;
            std::int16_t* row_k = t.exponents.data() + r * g.cols;
            if (stored_per_row[static_cast<std::size_t>(r)] == g.cols) {  // no zeros in the row: a straight copy
                const rans::symbol* row_sym = sym + next;
                const bool ok = relative ? copy_row(row_sym, origin, lo, hi, row_k, std::integral_constant<int, -1>{})
                                         : copy_row(row_sym, origin, lo, hi, row_k, std::integral_constant<int, 1>{});
                inside = inside && ok;
                next += static_cast<std::size_t>(g.cols);
                continue;
            }
            for (std::uint64_t i = 0; i < g.cols; ++i) {
                const bool stored = store_all || row_signs[i] != 0;
                const std::int32_t k = origin + direction * static_cast<std::int32_t>(sym[std::min(next, last)]);
                const bool ok = k >= lo && k <= hi;
                inside = inside && (ok || !stored);
                row_k[i] = static_cast<std::int16_t>(stored && ok ? k : lo);
                next += stored;
            }
        }
        if (!inside) in.fail("an exponent lies outside its channel window");
        return;
    }
    if (channel_windows)  // raw exponents: slots of unstored weights hold the window's low end
        for_each_exponent(t, g, [&](std::uint64_t i, int lo, int, bool) { t.exponents[i] = static_cast<std::int16_t>(lo); });
    std::size_t next = 0;
    bool inside = true;
    for_each_exponent(t, g, [&](std::uint64_t i, int lo, int hi, bool nonzero) {
        if (!(nonzero || store_all)) return;
        std::int64_t k;
        if (mode == container::exponent_mode::raw) k = raw[next];
        else if (mode == container::exponent_mode::absolute) k = lowest + symbols[next];
        else k = std::int64_t{hi} - symbols[next];
        ++next;
        inside = inside && k >= lo && k <= hi;
        t.exponents[i] = static_cast<std::int16_t>(inside ? k : lo);
    });
    if (!inside) in.fail(g.exponent_blocks() ? "an exponent lies outside its block window" : "an exponent lies outside its channel window");
}

inline void read_tensor_data(stored_tensor& t, byte_reader& in) {
    section_scratch scratch;
    read_tensor_data(t, in, scratch);
}

}  // namespace detail

}  // namespace grphi
