// A Q4_K-style format (llama.cpp's k-quants): super-blocks of 256 weights along a row, 8 sub-blocks of
// 32, each with a 6-bit scale and a 6-bit min under the super-block's fp16 d and dmin:
//   value = d * sc * q - dmin * m,   q in 0..15, sc and m in 0..63.
// Layout as ggml's block_q4_K (144 bytes): d, dmin, 12 bytes of packed 6-bit scales and mins (below),
// 128 bytes of codes where byte l of chunk k (32 bytes) holds sub-block 2k's member l in its low nibble
// and sub-block 2k+1's member l in its high nibble.
// Scale packing (ggml's get_scale_min_k4): for j < 4, sc = s[j] & 63 and m = s[j+4] & 63; for j >= 4,
// sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4 and m = (s[j+4] >> 4) | (s[j] >> 6) << 4.
//
// The quantizer is ours. Plain: each sub-block takes min = min(0, min w) and scale = (max w - min) / 15;
// d = max scale / 63, dmin = max(-min) / 63 (fp16), sc and m the nearest 6-bit multiples, and codes the
// nearest q for the decoded sub-block scale and min. Search (llama.cpp's make_qkx2_quants idea): per
// sub-block, 21 candidate inverse scales around 15 / (max - min), each refitted by weighted least
// squares for scale and min (min kept <= 0), the lowest squared error wins; then the same 6-bit steps.
// A short tail super-block holds only its real members; its empty sub-blocks have sc = m = 0.
// Fixed bits/weight: 4 per weight + 32 per super-block (d, dmin) + 12 per sub-block holding a weight
// (Q4_K on 1024-wide rows: 4.5).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../io/half.hpp"
#include "block_rows.hpp"

namespace grphi::baselines {

struct block_q4_k {
    static constexpr std::size_t members = 256;
    static constexpr std::size_t sub_blocks = 8;
    std::uint16_t d;          // fp16 scale of the sub-block scales
    std::uint16_t dmin;       // fp16 scale of the sub-block mins
    std::uint8_t scales[12];  // 8 scales and 8 mins, 6 bits each, packed as in the header comment
    std::uint8_t qs[128];     // 4-bit codes
};
static_assert(sizeof(block_q4_k) == 144, "block_q4_k is 2 + 2 + 12 + 128 bytes, as ggml's block_q4_K");
static_assert(std::is_trivially_copyable_v<block_q4_k> && std::is_standard_layout_v<block_q4_k>);

// Sub-block j's 6-bit scale and min.
inline void q4_k_scale_min(const block_q4_k& b, std::size_t j, int& sc, int& m) {
    const std::uint8_t* s = b.scales;
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}
inline void q4_k_set_scale_min(block_q4_k& b, std::size_t j, int sc, int m) {
    std::uint8_t* s = b.scales;
    if (j < 4) {
        s[j] = static_cast<std::uint8_t>((s[j] & 0xc0) | sc);
        s[j + 4] = static_cast<std::uint8_t>((s[j + 4] & 0xc0) | m);
    } else {
        s[j + 4] = static_cast<std::uint8_t>((sc & 0x0f) | ((m & 0x0f) << 4));
        s[j - 4] = static_cast<std::uint8_t>((s[j - 4] & 0x3f) | ((sc >> 4) << 6));
        s[j] = static_cast<std::uint8_t>((s[j] & 0x3f) | ((m >> 4) << 6));
    }
}
// Code of member i (0..255).
inline int q4_k_code(const block_q4_k& b, std::size_t i) {
    const std::size_t sub = i / 32, l = i % 32;
    const std::uint8_t byte = b.qs[32 * (sub / 2) + l];
    return sub % 2 == 0 ? (byte & 0x0f) : (byte >> 4);
}
inline void q4_k_set_code(block_q4_k& b, std::size_t i, int q) {
    const std::size_t sub = i / 32, l = i % 32;
    std::uint8_t& byte = b.qs[32 * (sub / 2) + l];
    byte = static_cast<std::uint8_t>(sub % 2 == 0 ? ((byte & 0xf0) | q) : ((byte & 0x0f) | (q << 4)));
}
inline float q4_k_value(const block_q4_k& b, std::size_t i) {
    int sc = 0, m = 0;
    q4_k_scale_min(b, i / 32, sc, m);
    return half_to_float(b.d) * static_cast<float>(sc) * static_cast<float>(q4_k_code(b, i)) -
           half_to_float(b.dmin) * static_cast<float>(m);
}

struct q4_k_matrix {
    std::size_t rows = 0, cols = 0;
    std::vector<block_q4_k> blocks;  // rows * blocks_per_row(cols, 256), row after row

    std::size_t row_blocks() const { return blocks_per_row(cols, 256); }
    const block_q4_k* row(std::size_t r) const { return blocks.data() + r * row_blocks(); }
    float value(std::size_t r, std::size_t c) const { return q4_k_value(row(r)[c / 256], c % 256); }
    // d, dmin per super-block; 6 + 6 bits per sub-block holding a weight.
    double fixed_bits_per_weight() const {
        if (rows == 0 || cols == 0) return 0;
        const double weights = static_cast<double>(rows) * static_cast<double>(cols);
        const double supers = static_cast<double>(rows * row_blocks());
        const double subs = static_cast<double>(rows * blocks_per_row(cols, 32));
        return 4 + (32 * supers + 12 * subs) / weights;
    }
    std::size_t scale_bytes() const {
        return (rows * row_blocks() * 32 + rows * blocks_per_row(cols, 32) * 12 + 7) / 8;
    }
};

namespace detail {

// One sub-block's affine fit value = scale * q - offset (offset >= 0), plain or searched.
inline void fit_sub_block(const double* x, const double* w, std::size_t n, bool search, double& scale, double& offset) {
    double lo = 0, hi = 0;  // the min is kept <= 0
    for (std::size_t j = 0; j < n; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
    }
    scale = hi > lo ? (hi - lo) / 15 : 0;
    offset = -lo;
    if (!search || hi == lo) return;
    auto error_of = [&](double s, double o) {
        double e = 0;
        for (std::size_t j = 0; j < n; ++j) {
            const double q = std::clamp(std::round((x[j] + o) / s), 0.0, 15.0), d = x[j] - (s * q - o);
            e += (w ? w[j] : 1.0) * d * d;
        }
        return e;
    };
    double best = error_of(scale, offset);
    for (int step = 0; step <= 20; ++step) {
        const double inverse = (15 - 1 + 0.1 * step) / (hi - lo);  // around 15 / (max - min)
        // Codes for this candidate, then the weighted least-squares scale and min for them.
        double sw = 0, sq = 0, sqq = 0, sx = 0, sxq = 0;
        for (std::size_t j = 0; j < n; ++j) {
            const double q = std::clamp(std::round(inverse * (x[j] - lo)), 0.0, 15.0), wj = w ? w[j] : 1.0;
            sw += wj;
            sq += wj * q;
            sqq += wj * q * q;
            sx += wj * x[j];
            sxq += wj * x[j] * q;
        }
        const double det = sw * sqq - sq * sq;
        if (det <= 0) continue;
        double s = (sw * sxq - sq * sx) / det, mn = (sqq * sx - sq * sxq) / det;
        if (mn > 0) {  // the min must stay <= 0: refit the scale alone with min 0
            mn = 0;
            s = sqq > 0 ? sxq / sqq : s;
        }
        if (!(s > 0)) continue;
        const double e = error_of(s, -mn);
        if (e < best) {
            best = e;
            scale = s;
            offset = -mn;
        }
    }
}

inline std::uint16_t q4_k_half(double v, const char* who) {
    const std::uint16_t h = float_to_half(static_cast<float>(v));
    if ((h & 0x7c00u) == 0x7c00u) throw std::domain_error(std::string(who) + ": super-block scale does not fit fp16");
    return h;
}

}  // namespace detail

struct q4_k_options {
    bool search = false;
    std::vector<double> column_importance;  // empty: every column weighs 1
};

template <class Derived>
q4_k_matrix quantize_q4_k(const Eigen::MatrixBase<Derived>& W, const q4_k_options& opts = {}) {
    const char* who = "grphi::baselines::quantize_q4_k";
    q4_k_matrix m;
    m.rows = static_cast<std::size_t>(W.rows());
    m.cols = static_cast<std::size_t>(W.cols());
    if (!opts.column_importance.empty() && opts.column_importance.size() != m.cols)
        throw std::invalid_argument(std::string(who) + ": column_importance needs one entry per column");
    for (double v : opts.column_importance)
        if (!std::isfinite(v) || v < 0) throw std::invalid_argument(std::string(who) + ": column_importance must be finite and >= 0");
    m.blocks.assign(m.rows * m.row_blocks(), block_q4_k{});
    std::vector<double> row(m.cols);
    const double* importance = opts.column_importance.empty() ? nullptr : opts.column_importance.data();
    for (std::size_t r = 0; r < m.rows; ++r) {
        for (std::size_t c = 0; c < m.cols; ++c) {
            row[c] = static_cast<double>(W(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)));
            if (!std::isfinite(row[c]))
                throw std::domain_error(std::string(who) + ": non-finite weight at row " + std::to_string(r) +
                                        ", column " + std::to_string(c));
        }
        for (std::size_t sb = 0; sb < m.row_blocks(); ++sb) {
            block_q4_k& b = m.blocks[r * m.row_blocks() + sb];
            const std::size_t first = sb * 256, n = block_length(m.cols, 256, sb);
            double scales[8] = {}, offsets[8] = {}, max_scale = 0, max_offset = 0;
            for (std::size_t j = 0; j * 32 < n; ++j) {
                const std::size_t len = std::min<std::size_t>(32, n - 32 * j);
                detail::fit_sub_block(row.data() + first + 32 * j, importance ? importance + first + 32 * j : nullptr, len,
                                      opts.search, scales[j], offsets[j]);
                max_scale = std::max(max_scale, scales[j]);
                max_offset = std::max(max_offset, offsets[j]);
            }
            b.d = detail::q4_k_half(max_scale / 63, who);
            b.dmin = detail::q4_k_half(max_offset / 63, who);
            const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
            for (std::size_t j = 0; j < 8; ++j) {
                const int sc = d > 0 ? static_cast<int>(std::clamp(std::lround(scales[j] / d), 0L, 63L)) : 0;
                const int mn = dmin > 0 ? static_cast<int>(std::clamp(std::lround(offsets[j] / dmin), 0L, 63L)) : 0;
                q4_k_set_scale_min(b, j, sc, mn);
            }
            for (std::size_t i = 0; i < n; ++i) {
                int sc = 0, mn = 0;
                q4_k_scale_min(b, i / 32, sc, mn);
                const double step = static_cast<double>(d * static_cast<float>(sc));
                const double offset = static_cast<double>(dmin * static_cast<float>(mn));
                const int q = step > 0 ? static_cast<int>(std::clamp(std::round((row[first + i] + offset) / step), 0.0, 15.0)) : 0;
                q4_k_set_code(b, i, q);
            }
        }
    }
    return m;
}

template <class T = float>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dequantize(const q4_k_matrix& m) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(static_cast<Eigen::Index>(m.rows),
                                                                          static_cast<Eigen::Index>(m.cols));
    for (std::size_t r = 0; r < m.rows; ++r)
        for (std::size_t c = 0; c < m.cols; ++c)
            out(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = static_cast<T>(m.value(r, c));
    return out;
}

}  // namespace grphi::baselines
