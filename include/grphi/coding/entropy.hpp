// How compressible a packed tensor is: the exponent histogram and its entropy (the seed's
// number), plus an honest bits-per-weight estimate that also pays for signs, zeros and metadata.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../core/packed.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/histogram.hpp"
#include "../core/quantize.hpp"

namespace grphi {

// Shannon entropy in bits per symbol of a histogram (0 for an empty or one-symbol histogram).
template <class Count>
double shannon_entropy(const std::vector<Count>& histogram) {
    long double total = 0;
    for (auto c : histogram) total += static_cast<long double>(c);
    if (total <= 0) return 0.0;
    long double bits = 0;
    for (auto c : histogram)
        if (c > 0) {
            const long double p = static_cast<long double>(c) / total;
            bits -= p * std::log2(p);
        }
    return static_cast<double>(bits);
}

struct entropy_report {
    std::size_t weights = 0;            // rows * cols
    std::size_t nonzero = 0;            // weights whose sign is -1 or +1
    std::size_t exponent_symbols = 0;   // exponents a coder must store: nonzero weights, or blocks with one
    std::size_t channels = 0;
    int symbol_min = 0;                 // histogram[i] counts exponent symbol_min + i
    std::vector<std::uint64_t> histogram;
    std::array<std::uint64_t, 3> sign_counts{};  // -1, 0, +1
    double exponent_entropy = 0;        // bits per stored exponent
    double sign_entropy = 0;            // bits per weight for the ternary {-, 0, +} symbol
    double metadata_bits = 0;           // per-channel window (2 x 16 bits) and scale step (5 bits if fitted),
                                        // plus every block's scale (block_scale_bits)
    double bits_per_weight = 0;         // (exponent_symbols * exponent_entropy + weights * sign_entropy + metadata) / weights
};

namespace detail {

// Counts exponents[i] where keep[i] != 0 into hist (index exponent - offset).
inline void masked_histogram(const std::int16_t* exponents, const std::int8_t* keep, std::size_t n, int offset,
                             std::size_t bins, std::vector<std::uint64_t>& hist) {
    std::vector<std::uint32_t> sub(4 * bins);
    kernels::histogram_4way(
        n, bins,
        [&](std::size_t i) {
            return kernels::histogram_entry{static_cast<std::size_t>(exponents[i] - offset), keep[i] != 0 ? 1u : 0u};
        },
        sub.data(), hist.data());
}

// Unclustered tensors whose channel windows are all narrow: per-row SIMD counts of each channel's
// alphabet, signs counted on the way. False (nothing counted) when this route does not apply.
template <class T, class Base>
bool count_narrow_windows(const packed<T, Base>& p, int lo, std::vector<std::uint64_t>& hist,
                          std::array<std::uint64_t, 3>& sign_counts) {
#if GRPHI_X86_DISPATCH
    if (kernels::active_isa() != kernels::isa::avx512 || p.opts.clustered()) return false;
    for (std::size_t c = 0; c < p.window_lo.size(); ++c)
        if (p.window_hi[c] - p.window_lo[c] >= 32) return false;
    const auto n = static_cast<std::size_t>(p.cols);
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
        const int first = p.window_lo[ch], width = p.window_hi[ch] - first + 1;
        const std::int16_t* exps = p.exponents.data() + static_cast<std::size_t>(r) * n;
        const std::int8_t* signs = p.signs.data() + static_cast<std::size_t>(r) * n;
        std::uint64_t counts[32] = {}, nonzero = 0, negative = 0, total = 0;
        kernels::avx512::count_window_symbols(exps, signs, n, first, width, counts, nonzero, negative);
        sign_counts[0] += negative;
        sign_counts[1] += n - nonzero;
        sign_counts[2] += nonzero - negative;
        for (int j = 0; j < width; ++j) total += counts[j];
        if (total == nonzero) {
            for (int j = 0; j < width; ++j) hist[static_cast<std::size_t>(first - lo + j)] += counts[j];
        } else {  // some exponents lie outside their channel window: the general count
            masked_histogram(exps, signs, n, lo, hist.size(), hist);
        }
    }
    return true;
#else
    (void)p, (void)lo, (void)hist, (void)sign_counts;
    return false;
#endif
}
}  // namespace detail

// Bits of one block's stored scale: exponent 8 (an int8 "E8M0" top; + 5 for a fitted step), fp16 16, e4m3 8.
inline double block_scale_bits(const options& o) {
    if (!o.blocked()) return 0;
    if (o.block_format == block_scale::fp16) return 16;
    return o.block_format == block_scale::e4m3 ? 8 : 8 + (o.fit_scale ? 5 : 0);
}

// Fixed-rate bits per weight of a block-scaled tensor in memory: sign + ceil(log2(levels)) offset bits
// per weight, every block's scale, and the per-channel window (2 x 16 bits). 0 for other tensors.
template <class T, class Base>
double fixed_bits_per_weight(const packed<T, Base>& p) {
    if (!p.opts.blocked() || p.size() == 0) return 0;
    int offset_bits = 0;
    while ((1 << offset_bits) < *p.opts.levels) ++offset_bits;
    const double weights = static_cast<double>(p.size());
    return 1.0 + offset_bits + (static_cast<double>(p.scale_block_count()) * block_scale_bits(p.opts) +
                                static_cast<double>(p.channels()) * 32.0) / weights;
}

namespace detail {
// Block-scaled tensors: the stored symbol is a weight's offset below its block top (exponent scales) or
// its channel top (fp16/e4m3), so the histogram counts offsets (symbol_min = 0).
template <class T, class Base>
entropy_report block_entropy(const packed<T, Base>& p, entropy_report rep) {
    const auto n = static_cast<std::size_t>(p.cols);
    const auto size = static_cast<std::size_t>(p.opts.block_size);
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    const bool scaled = p.opts.block_format != block_scale::exponent;
    rep.symbol_min = 0;
    rep.histogram.assign(static_cast<std::size_t>(*p.opts.levels), 0);
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const auto row = static_cast<std::size_t>(r);
        const int channel_top = p.window_hi[static_cast<std::size_t>(p.channel_of_row(r))];
        for (std::size_t b = 0; b < per_row; ++b) {
            const int top = scaled ? channel_top : p.block_top[row * per_row + b];
            for (std::size_t i = b * size, end = std::min(n, i + size); i < end; ++i) {
                const std::int8_t s = p.signs[row * n + i];
                rep.sign_counts[static_cast<std::size_t>(s + 1)]++;
                if (s != 0) rep.histogram[static_cast<std::size_t>(top - p.exponents[row * n + i])]++;  // validated
            }
        }
    }
    rep.nonzero = rep.sign_counts[0] + rep.sign_counts[2];
    for (auto c : rep.histogram) rep.exponent_symbols += c;
    rep.exponent_entropy = shannon_entropy(rep.histogram);
    rep.sign_entropy = shannon_entropy(std::vector<std::uint64_t>(rep.sign_counts.begin(), rep.sign_counts.end()));
    rep.metadata_bits = static_cast<double>(rep.channels) * 32.0 +
                        static_cast<double>(p.scale_block_count()) * block_scale_bits(p.opts);
    rep.bits_per_weight = (static_cast<double>(rep.exponent_symbols) * rep.exponent_entropy +
                           static_cast<double>(rep.weights) * rep.sign_entropy + rep.metadata_bits) /
                          static_cast<double>(rep.weights);
    return rep;
}
}  // namespace detail

template <class T, class Base>
entropy_report entropy(const packed<T, Base>& p) {
    validate(p);  // the histogram indexes by exponent: a corrupt tensor must not write out of bounds
    entropy_report rep;
    rep.weights = p.size();
    rep.channels = static_cast<std::size_t>(p.channels());
    if (p.window_lo.empty() || p.size() == 0) return rep;
    if (p.opts.blocked()) return detail::block_entropy(p, rep);
    const int lo = *std::min_element(p.window_lo.begin(), p.window_lo.end());
    const int hi = *std::max_element(p.window_hi.begin(), p.window_hi.end());
    rep.symbol_min = lo;
    const auto bins = static_cast<std::size_t>(hi - lo + 1);
    rep.histogram.assign(bins, 0);

    if (!detail::count_narrow_windows(p, lo, rep.histogram, rep.sign_counts)) {
        for (auto s : p.signs) rep.sign_counts[static_cast<std::size_t>(s + 1)]++;
        if (!p.opts.clustered()) {
            detail::masked_histogram(p.exponents.data(), p.signs.data(), p.size(), lo, bins, rep.histogram);
        } else {
            // A block's exponent is stored when any member is nonzero.
            const auto n = static_cast<std::size_t>(p.cols);
            const auto per_row = static_cast<std::size_t>(p.blocks_per_row());
            const auto size = static_cast<std::size_t>(p.block_size());
            std::vector<std::int8_t> block_used(per_row);
            for (Eigen::Index r = 0; r < p.rows; ++r) {
                const std::int8_t* signs = p.signs.data() + static_cast<std::size_t>(r) * n;
                for (std::size_t b = 0; b < per_row; ++b) {
                    std::int8_t used = 0;
                    for (std::size_t i = b * size, e = std::min(n, i + size); i < e; ++i) used |= signs[i];
                    block_used[b] = used;
                }
                detail::masked_histogram(p.exponents.data() + static_cast<std::size_t>(r) * per_row, block_used.data(),
                                         per_row, lo, bins, rep.histogram);
            }
        }
    }
    rep.nonzero = rep.sign_counts[0] + rep.sign_counts[2];
    for (auto c : rep.histogram) rep.exponent_symbols += c;
    rep.exponent_entropy = shannon_entropy(rep.histogram);
    std::vector<std::uint64_t> signs(rep.sign_counts.begin(), rep.sign_counts.end());
    rep.sign_entropy = shannon_entropy(signs);
    rep.metadata_bits = static_cast<double>(rep.channels) * (32.0 + (p.opts.fit_scale ? 5.0 : 0.0));
    rep.bits_per_weight = (static_cast<double>(rep.exponent_symbols) * rep.exponent_entropy +
                           static_cast<double>(rep.weights) * rep.sign_entropy + rep.metadata_bits) /
                          static_cast<double>(rep.weights);
    return rep;
}

}  // namespace grphi
