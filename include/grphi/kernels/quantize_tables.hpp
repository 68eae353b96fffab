// What the quantizer's row kernels read: a channel's window and its register-sized tables. Shared by
// the driver (quantize.hpp builds them) and every instruction set's row kernels (which only read them).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../core/levels.hpp"

namespace grphi::detail {

// What a channel decided before its rows are quantized.
struct channel_state {
    int lo = 0;     // window bottom exponent
    int hi = 0;     // window top exponent
    int step = 0;   // scale step j: levels b^(k + j/16)
};

// A channel's tables small enough for registers. The magnitude is first clamped into [low, high],
// the exact bounds of the window's exponents, so clamp(k, lo, hi) is the exponent of the clamped
// magnitude and only the cells between low and high are read: when they fit the table (64 for float,
// 32 for double), register permutes replace the gathers. Entries sit at cell mod entries, so no index
// arithmetic is needed.
template <class T>
struct window_tables {
    using I = bits_t<T>;
    static constexpr std::size_t entries = std::is_same_v<T, float> ? 64 : 32;  // four zmm registers
    I low = 0;        // smallest magnitude (bits) whose exponent is >= the window bottom
    I high = 0;       // largest magnitude (bits) whose exponent is <= the window top
    I keep_from = 1;  // smallest magnitude (bits) that keeps its sign: 1, or the flush point
    I lo = 0;         // window bottom exponent
    alignas(64) I threshold[entries] = {};    // bits of the cell's threshold (or max)
    alignas(64) I base[entries] = {};         // exponent at the cell's start
    alignas(64) I level_below[entries] = {};  // bits of the level of base
    alignas(64) I level_above[entries] = {};  // bits of the level of base + 1
};

// Levels of a window for rebuilding from exponents: level of lo + j at entry j.
template <class T>
struct window_levels {
    using I = bits_t<T>;
    static constexpr std::size_t entries = window_tables<T>::entries;
    I lo = 0;
    alignas(64) I level[entries] = {};
};

// One block's window as the block-scale row kernels apply it (bits of the exponent bounds and of the
// smallest kept magnitude); `vectorized` false when the caller already wrote the block the exact way.
template <class T>
struct block_window {
    bool vectorized = false;
    bits_t<T> lo = 0, hi = 0, keep_from = 1;
};

// Round-half-even mean sum / count for |sum| < 2^31 and 0 < count <= 2^16 through a double division,
// faster than idiv: a non-integral quotient is >= 2^-16 from an integer and the division errs by
// < 2^-22, so floor is exact.
inline int round_half_even_mean_small(int sum, int count) {
    const int q = static_cast<int>(std::floor(static_cast<double>(sum) / static_cast<double>(count)));
    const int r = sum - q * count;  // in [0, count)
    return (2 * r > count || (2 * r == count && (q & 1))) ? q + 1 : q;
}

}  // namespace grphi::detail
