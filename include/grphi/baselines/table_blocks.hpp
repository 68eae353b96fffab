// The engine behind the fixed-table block formats (NF4, IQ4_NL, MXFP4, NVFP4, APoT, FP8 per channel,
// and the searched Q4_0/Q8_0): blocks of consecutive weights of a row share one scale s, and each
// weight becomes the code of the table value t nearest to w / s, rebuilt as s * t (in float, as the
// formats' own dequantizers do).
//
// A format says: the table (ascending signed values; code = index), the block length along a row
// (0 = the whole row, i.e. per channel), how the scale is stored (fp32, fp16, E8M0, or E4M3 under a
// per-tensor fp32 scale as in NVFP4), how the plain scale is chosen, and how ties round.
// The codes are chosen against the stored (decoded) scale, so the rebuilt weights are exactly what a
// decoder of the stored bytes produces. A short tail block holds only its row's real members.
//
// Scale search (search_options::enabled, the `_search` methods): a deterministic per-block search
// for the stored scale that minimises the squared error, optionally weighted per column (e.g. by the
// mean squared input activation): candidates are the plain scale times 1 + k/40 (k = -12..6), anchored
// on either end of the table for asymmetric tables, each also refitted by least squares for its
// codes; E8M0 scales try the exponents -2..+1 around the plain one. The plain scale is always a
// candidate, so a search never does worse than plain on the weighted error. Ties keep the first.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "../io/half.hpp"
#include "block_rows.hpp"
#include "minifloat.hpp"

namespace grphi::baselines {

enum class scale_storage {
    fp32,         // 32 bits per block
    fp16,         // 16 bits per block
    e8m0,         // 8 bits per block: a power of two (OCP MX)
    e4m3_tensor,  // 8 bits per block: E4M3 times one fp32 scale per tensor (NVFP4's two levels)
};

enum class scale_rule {
    absmax,          // s = max|w| / max|t|: the largest magnitude lands on the table's end
    signed_extreme,  // s = m / t_front, m the block's value of largest magnitude (Q4_0, IQ4_NL): m is exact
    mx_floor,        // s = 2^(floor(log2 max|w|) - floor(log2 max|t|)) (OCP MX shared exponent)
};

enum class tie_rule {
    upper,           // to the larger table value
    even_magnitude,  // to the value whose magnitude code is even (round-half-even of FP formats)
    away_from_zero,  // to the larger magnitude (C's round)
};

struct table_format {
    std::string name;
    std::vector<double> values;  // ascending; a weight's code is an index into it
    std::size_t block = 32;      // weights per block along a row; 0 = the whole row (per channel)
    scale_storage storage = scale_storage::fp16;
    scale_rule rule = scale_rule::absmax;
    tie_rule ties = tie_rule::upper;
    int code_bits = 4;  // bits per code in memory

    void validate() const {
        const std::string who = "grphi::baselines::table_format '" + name + "': ";
        if (values.size() < 2) throw std::invalid_argument(who + "needs at least two values");
        for (std::size_t i = 0; i < values.size(); ++i) {
            if (!std::isfinite(values[i])) throw std::invalid_argument(who + "values must be finite");
            if (i > 0 && !(values[i - 1] < values[i])) throw std::invalid_argument(who + "values must ascend strictly");
        }
        if (!(values.front() < 0 && values.back() > 0)) throw std::invalid_argument(who + "values must span both signs");
        if ((1ull << code_bits) < values.size()) throw std::invalid_argument(who + "code_bits too few for the table");
        if (ties == tie_rule::even_magnitude && zero_index() == values.size())
            throw std::invalid_argument(who + "even_magnitude ties need a 0 in the table");
        if (rule == scale_rule::signed_extreme && (storage == scale_storage::e8m0 || storage == scale_storage::e4m3_tensor))
            throw std::invalid_argument(who + "signed_extreme scales need a signed storage (fp16 or fp32)");
    }
    std::size_t zero_index() const {
        for (std::size_t i = 0; i < values.size(); ++i)
            if (values[i] == 0) return i;
        return values.size();
    }
    double max_magnitude() const { return std::max(-values.front(), values.back()); }
    bool symmetric() const { return -values.front() == values.back(); }
    std::size_t block_for(std::size_t cols) const { return block ? block : std::max<std::size_t>(cols, 1); }
    int scale_bits() const {
        switch (storage) {
            case scale_storage::fp32: return 32;
            case scale_storage::fp16: return 16;
            default: return 8;
        }
    }
    double tensor_bits() const { return storage == scale_storage::e4m3_tensor ? 32 : 0; }
    double fixed_bits_per_weight(std::size_t rows, std::size_t cols) const {
        return baselines::fixed_bits_per_weight(rows, cols, code_bits, block_for(cols), scale_bits(), tensor_bits());
    }
};

struct search_options {
    bool enabled = false;
    std::vector<double> column_importance;  // empty: every column weighs 1; else one finite value >= 0 per column
};

struct table_quantized {
    std::size_t rows = 0, cols = 0, block = 0;
    std::vector<std::uint16_t> codes;          // rows*cols, row-major: index into values
    std::vector<float> values;                 // the format's table, as the decoder holds it
    std::vector<std::uint32_t> stored_scales;  // per block, row after row: the stored bit pattern
    std::vector<float> scales;                 // per block: the decoded scale (tensor scale included)
    float tensor_scale = 1;                    // e4m3_tensor only
    double fixed_bits_per_weight = 0;
    int scale_bits = 16;
    double tensor_bits = 0;

    std::size_t row_blocks() const { return blocks_per_row(cols, block); }
    // The scales as stored: every block's scale plus the tensor scale, rounded up to whole bytes.
    std::size_t scale_bytes() const {
        return (scales.size() * static_cast<std::size_t>(scale_bits) + static_cast<std::size_t>(tensor_bits) + 7) / 8;
    }
    float value(std::size_t r, std::size_t c) const {
        return scales[r * row_blocks() + c / block] * values[codes[r * cols + c]];
    }
};

namespace detail {

// Nearest table entry of y by the midpoints between neighbours, with the format's tie rule.
class nearest_table {
public:
    explicit nearest_table(const table_format& f) : values_(f.values), ties_(f.ties), zero_(f.zero_index()) {
        for (std::size_t i = 0; i + 1 < values_.size(); ++i) mids_.push_back((values_[i] + values_[i + 1]) / 2);
    }
    std::uint16_t operator()(double y) const {
        const auto it = std::lower_bound(mids_.begin(), mids_.end(), y);  // first midpoint >= y
        const auto i = static_cast<std::size_t>(it - mids_.begin());
        if (it == mids_.end() || *it != y) return static_cast<std::uint16_t>(i);
        switch (ties_) {  // y is halfway between values_[i] and values_[i + 1]
            case tie_rule::upper: return static_cast<std::uint16_t>(i + 1);
            case tie_rule::away_from_zero:
                return static_cast<std::uint16_t>(std::fabs(values_[i + 1]) > std::fabs(values_[i]) ? i + 1 : i);
            case tie_rule::even_magnitude: {
                const std::size_t magnitude_code = i > zero_ ? i - zero_ : zero_ - i;
                return static_cast<std::uint16_t>(magnitude_code % 2 == 0 ? i : i + 1);
            }
        }
        return static_cast<std::uint16_t>(i);
    }
    double value(std::uint16_t code) const { return values_[code]; }

private:
    std::vector<double> values_;
    std::vector<double> mids_;
    tie_rule ties_;
    std::size_t zero_;
};

struct stored_scale {
    std::uint32_t bits = 0;
    float value = 0;  // decoded, tensor scale included
};

inline stored_scale store_scale(double s, scale_storage storage, float tensor_scale, const std::string& who) {
    stored_scale out;
    switch (storage) {
        case scale_storage::fp32: {
            const float f = static_cast<float>(s);
            if (!std::isfinite(f)) throw std::domain_error(who + ": block scale does not fit fp32");
            std::memcpy(&out.bits, &f, sizeof f);
            out.value = f;
            break;
        }
        case scale_storage::fp16: {
            const std::uint16_t h = float_to_half(static_cast<float>(s));
            if ((h & 0x7c00u) == 0x7c00u) throw std::domain_error(who + ": block scale does not fit fp16");
            out.bits = h;
            out.value = half_to_float(h);
            break;
        }
        case scale_storage::e8m0: {
            const int e = s > 0 ? static_cast<int>(std::lround(std::log2(s))) : -127;
            if (e > 127) throw std::domain_error(who + ": block scale does not fit E8M0");
            out.bits = e8m0_code(e);
            out.value = static_cast<float>(e8m0_value(static_cast<std::uint8_t>(out.bits)));
            break;
        }
        case scale_storage::e4m3_tensor: {
            out.bits = e4m3.encode_magnitude(tensor_scale > 0 ? s / static_cast<double>(tensor_scale) : 0.0);
            out.value = static_cast<float>(e4m3.magnitude(out.bits)) * tensor_scale;
            break;
        }
    }
    return out;
}

// One block: the chosen stored scale and its codes, for n real members x (importance w or null).
class block_quantizer {
public:
    block_quantizer(const table_format& f, float tensor_scale, std::string who)
        : f_(f), nearest_(f), tensor_scale_(tensor_scale), who_(std::move(who)), zero_code_(nearest_(0.0)) {}

    stored_scale run(const double* x, const double* w, std::size_t n, bool search, std::uint16_t* codes) {
        double amax = 0, extreme = 0;
        for (std::size_t j = 0; j < n; ++j)
            if (std::fabs(x[j]) > amax) {  // strict: the first value of largest magnitude, as ggml
                amax = std::fabs(x[j]);
                extreme = x[j];
            }
        if (amax == 0) {
            std::fill(codes, codes + n, zero_code_);
            return store_scale(0.0, f_.storage, tensor_scale_, who_);
        }
        const double plain = plain_scale(amax, extreme);
        stored_scale best = store_scale(plain, f_.storage, tensor_scale_, who_);
        double best_error = encode(x, w, n, best.value, codes);
        if (!search) return best;
        scratch_.resize(n);
        auto consider = [&](double s) {
            const stored_scale c = store_scale(s, f_.storage, tensor_scale_, who_);
            if (c.value == best.value) return;
            const double e = encode(x, w, n, c.value, scratch_.data());
            if (e < best_error) {
                best_error = e;
                best = c;
                std::copy(scratch_.begin(), scratch_.end(), codes);
            }
        };
        if (f_.storage == scale_storage::e8m0) {
            for (int k = -2; k <= 1; ++k) consider(plain * std::ldexp(1.0, k));
            return best;
        }
        std::vector<double> anchors{plain};
        if (!f_.symmetric()) anchors.push_back(f_.rule == scale_rule::signed_extreme ? extreme / f_.values.back()
                                                                                       : -amax / f_.values.front());
        for (double anchor : anchors)
            for (int k = -12; k <= 6; ++k) {
                const double s = anchor * (1.0 + k / 40.0);
                consider(s);
                consider(refit(x, w, n, s));
            }
        return best;
    }

private:
    double plain_scale(double amax, double extreme) const {
        switch (f_.rule) {
            case scale_rule::absmax: return amax / f_.max_magnitude();
            case scale_rule::signed_extreme: return extreme / f_.values.front();
            case scale_rule::mx_floor:
                return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(amax))) -
                                           static_cast<int>(std::floor(std::log2(f_.max_magnitude()))));
        }
        return amax;
    }
    // Codes for the decoded scale s and their (weighted) squared error.
    double encode(const double* x, const double* w, std::size_t n, float s, std::uint16_t* codes) const {
        double error = 0;
        for (std::size_t j = 0; j < n; ++j) {
            codes[j] = s != 0 ? nearest_(x[j] / static_cast<double>(s)) : zero_code_;
            const double d = x[j] - static_cast<double>(s * static_cast<float>(nearest_.value(codes[j])));
            error += (w ? w[j] : 1.0) * d * d;
        }
        return error;
    }
    // The least-squares scale for the codes that scale s gives: sum w x t / sum w t^2.
    double refit(const double* x, const double* w, std::size_t n, double s) const {
        double xt = 0, tt = 0;
        for (std::size_t j = 0; j < n; ++j) {
            const double t = nearest_.value(nearest_(x[j] / s));
            xt += (w ? w[j] : 1.0) * x[j] * t;
            tt += (w ? w[j] : 1.0) * t * t;
        }
        return tt > 0 ? xt / tt : s;
    }

    const table_format& f_;
    nearest_table nearest_;
    float tensor_scale_;
    std::string who_;
    std::uint16_t zero_code_;
    std::vector<std::uint16_t> scratch_;
};

}  // namespace detail

// Quantizes any float or double matrix with format f, plain or with the scale search.
template <class Derived>
table_quantized quantize_table(const Eigen::MatrixBase<Derived>& W, const table_format& f, const search_options& search = {}) {
    f.validate();
    const std::string who = "grphi::baselines::quantize_table(" + f.name + ")";
    table_quantized q;
    q.rows = static_cast<std::size_t>(W.rows());
    q.cols = static_cast<std::size_t>(W.cols());
    q.block = f.block_for(q.cols);
    q.values.assign(f.values.begin(), f.values.end());
    q.fixed_bits_per_weight = f.fixed_bits_per_weight(q.rows, q.cols);
    q.scale_bits = f.scale_bits();
    q.tensor_bits = f.tensor_bits();
    if (!search.column_importance.empty()) {
        if (search.column_importance.size() != q.cols)
            throw std::invalid_argument(who + ": column_importance has " + std::to_string(search.column_importance.size()) +
                                        " entries, the matrix " + std::to_string(q.cols) + " columns");
        for (double v : search.column_importance)
            if (!std::isfinite(v) || v < 0) throw std::invalid_argument(who + ": column_importance must be finite and >= 0");
    }
    std::vector<double> row(q.cols);
    double tensor_amax = 0;
    for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const double v = static_cast<double>(W(r, c));
            if (!std::isfinite(v))
                throw std::domain_error(who + ": non-finite weight at row " + std::to_string(r) + ", column " + std::to_string(c));
            tensor_amax = std::max(tensor_amax, std::fabs(v));
        }
    // NVFP4's second level: the tensor's largest block scale (amax / max|t|) maps to E4M3's 448.
    if (f.storage == scale_storage::e4m3_tensor)
        q.tensor_scale = tensor_amax > 0 ? static_cast<float>(tensor_amax / f.max_magnitude() / e4m3.max_value()) : 1.0f;
    q.codes.resize(q.rows * q.cols);
    q.stored_scales.resize(q.rows * q.row_blocks());
    q.scales.resize(q.stored_scales.size());
    detail::block_quantizer blocks(f, q.tensor_scale, who);
    const double* importance = search.column_importance.empty() ? nullptr : search.column_importance.data();
    for (std::size_t r = 0; r < q.rows; ++r) {
        for (std::size_t c = 0; c < q.cols; ++c)
            row[c] = static_cast<double>(W(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)));
        for (std::size_t b = 0; b < q.row_blocks(); ++b) {
            const std::size_t first = b * q.block, n = block_length(q.cols, q.block, b);
            const detail::stored_scale s = blocks.run(row.data() + first, importance ? importance + first : nullptr, n,
                                                      search.enabled, q.codes.data() + r * q.cols + first);
            q.stored_scales[r * q.row_blocks() + b] = s.bits;
            q.scales[r * q.row_blocks() + b] = s.value;
        }
    }
    return q;
}

template <class T = float>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dequantize(const table_quantized& q) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(static_cast<Eigen::Index>(q.rows),
                                                                          static_cast<Eigen::Index>(q.cols));
    for (std::size_t r = 0; r < q.rows; ++r)
        for (std::size_t c = 0; c < q.cols; ++c)
            out(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) = static_cast<T>(q.value(r, c));
    return out;
}

}  // namespace grphi::baselines
