// The quantizer's scalar row kernels: one weight at a time from the published rule (the grid's exact
// exponent of each magnitude, clamped into the channel window). The reference every vector path
// (quantize_xsimd.hpp, quantize_avx512.hpp) is tested against byte for byte.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "quantize_tables.hpp"

namespace grphi::kernels::scalar {

using ::grphi::detail::bits_t;
using ::grphi::detail::cell_table;

template <class T>
bits_t<T> magnitude_bits(T w) {
    return ::grphi::detail::to_bits(w) & std::numeric_limits<bits_t<T>>::max();
}

// Largest magnitude of a row as bits (>= inf_bits means the row holds NaN or Inf).
template <class T>
bits_t<T> row_max_bits(const T* w, std::size_t n) {
    bits_t<T> best = 0;
    for (std::size_t i = 0; i < n; ++i) best = std::max(best, magnitude_bits(w[i]));
    return best;
}

// Exponents clamped into [lo, hi] (a zero's is the window bottom), signs (0 for zeros and magnitudes
// below flush) and, when clipped_out is not null, clip flags of one row on the unscaled grid.
template <class T, class Base>
void eval_row(const cell_table<T, Base>& cells, int lo, int hi, bits_t<T> flush_bits, const T* w, std::size_t n,
              bits_t<T>* k_out, bits_t<T>* s_out, std::uint8_t* clipped_out) {
    using I = bits_t<T>;
    for (std::size_t i = 0; i < n; ++i) {
        const I mag = magnitude_bits(w[i]);
        const int k = mag != 0 ? cells.exponent(mag) : lo;
        k_out[i] = I(std::clamp(k, lo, hi));
        s_out[i] = (mag != 0 && mag >= flush_bits) ? (w[i] < 0 ? I(-1) : I(1)) : I(0);
        if (clipped_out) clipped_out[i] = mag != 0 && (k < lo || k > hi);
    }
}

// Fake quantization of an unclustered step-0 row: the window level of each weight's exponent, signed.
template <class T, class Base>
void fake_row(const cell_table<T, Base>& cells, int lo, int hi, bits_t<T> flush_bits, const T* w, std::size_t n,
              T* out) {
    const auto& g = *cells.source;
    for (std::size_t i = 0; i < n; ++i) {
        const bits_t<T> mag = magnitude_bits(w[i]);
        if (mag == 0 || mag < flush_bits) {
            out[i] = T(0);
            continue;
        }
        const T level = g.level[static_cast<std::size_t>(std::clamp(cells.exponent(mag), lo, hi) - g.k_lo)];
        out[i] = w[i] < 0 ? -level : level;
    }
}

}  // namespace grphi::kernels::scalar
