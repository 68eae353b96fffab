// Uniform symmetric int-N quantization: the linear baseline grphi's log grids are compared against.
//
// A weight w of channel c becomes code = round(w / scale_c), clamped to [-(2^(N-1)-1), 2^(N-1)-1],
// and is rebuilt as code * scale_c with scale_c = max|w over c| / (2^(N-1)-1). The grid is symmetric
// (no -2^(N-1) code), so zero is exact and the codes fit int8 for every N in [2, 8].
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/channels.hpp"
#include "../core/base.hpp"

namespace grphi {

struct uniform_options {
    int bits = 4;             // N: codes in [-(2^(N-1)-1), 2^(N-1)-1]
    bool per_channel = true;  // rows are output channels, each with its own scale

    // Throws std::invalid_argument naming the offending option.
    void validate() const {
        if (bits < 2 || bits > 8)
            throw std::invalid_argument("grphi::uniform_options: bits=" + std::to_string(bits) +
                                        " must be in [2, 8]");
    }
    int max_code() const { return (1 << (bits - 1)) - 1; }
};

// The quantized tensor: one int8 code per weight and one scale per channel.
template <class T>
struct uniform_packed {
    using scalar_type = T;

    Eigen::Index rows = 0;
    Eigen::Index cols = 0;
    uniform_options opts;
    std::vector<std::int8_t> codes;  // rows*cols, row-major
    std::vector<T> scales;           // per channel (one entry when per-tensor); 0 for an all-zero channel

    Eigen::Index channels() const { return static_cast<Eigen::Index>(channel_count(opts.per_channel, rows)); }
    Eigen::Index channel_of_row(Eigen::Index r) const { return static_cast<Eigen::Index>(grphi::channel_of_row(opts.per_channel, r)); }
    std::size_t size() const { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); }
};

namespace detail {

// Evaluates costly expressions once; plain matrices and maps pass by reference.
template <class Derived>
using baseline_evaluated_t = typename Eigen::internal::nested_eval<Derived, 2>::type;

template <class Matrix>
void check_finite_baseline(const Matrix& W, const char* who) {
    for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c = 0; c < W.cols(); ++c)
            if (!std::isfinite(W(r, c)))
                throw std::domain_error(std::string(who) + ": non-finite weight at row " + std::to_string(r) +
                                        ", column " + std::to_string(c));
}

// Resizes a resizable output; anything else (Map, Ref, Block) must already have the shape.
template <class Out>
void prepare_baseline_output(Out& out, Eigen::Index rows, Eigen::Index cols, const char* who) {
    using O = std::decay_t<Out>;
    if (out.rows() == rows && out.cols() == cols) return;
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<O>, O>) {
        out.resize(rows, cols);
    } else {
        throw std::invalid_argument(std::string(who) + ": output is " + std::to_string(out.rows()) + "x" +
                                    std::to_string(out.cols()) + ", expected " + std::to_string(rows) + "x" +
                                    std::to_string(cols));
    }
}

// max|w| per channel, then the scale; one definition so quantize and fake_quantize agree bit for bit.
template <class T, class Matrix>
std::vector<T> uniform_scales(const Matrix& W, const uniform_options& opts) {
    const Eigen::Index rows = W.rows(), cols = W.cols();
    const auto channels = static_cast<Eigen::Index>(channel_count(opts.per_channel, rows));
    std::vector<T> max_abs(static_cast<std::size_t>(channels), T(0));
    for (Eigen::Index r = 0; r < rows; ++r) {
        T& m = max_abs[static_cast<std::size_t>(grphi::channel_of_row(opts.per_channel, r))];
        for (Eigen::Index c = 0; c < cols; ++c) m = std::max(m, static_cast<T>(std::abs(W(r, c))));
    }
    for (T& m : max_abs) {
        const T scale = m / static_cast<T>(opts.max_code());
        // A denormal maximum whose step underflows still gets the smallest step, so it is not zeroed.
        m = (scale == T(0) && m > T(0)) ? std::numeric_limits<T>::denorm_min() : scale;
    }
    return max_abs;
}

template <class T>
std::int8_t uniform_code(T w, T scale, int max_code) {
    if (scale == T(0)) return 0;  // all-zero channel (or a max|w| whose scale underflows)
    const T q = std::round(w / scale);
    const T limit = static_cast<T>(max_code);
    return static_cast<std::int8_t>(q > limit ? limit : (q < -limit ? -limit : q));
}

template <class T>
T uniform_value(std::int8_t code, T scale) {
    return static_cast<T>(code) * scale;
}

}  // namespace detail

// W: any Eigen matrix, Map or expression of float or double. NaN/Inf throws std::domain_error.
template <class Derived>
uniform_packed<typename Derived::Scalar> quantize_uniform(const Eigen::MatrixBase<Derived>& W,
                                                          const uniform_options& opts = {}) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    opts.validate();
    const detail::baseline_evaluated_t<Derived> Wn(W.derived());
    detail::check_finite_baseline(Wn, "grphi::quantize_uniform");

    uniform_packed<T> p;
    p.rows = Wn.rows();
    p.cols = Wn.cols();
    p.opts = opts;
    p.scales = detail::uniform_scales<T>(Wn, opts);
    p.codes.resize(p.size());
    const int max_code = opts.max_code();
    std::size_t i = 0;
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const T scale = p.scales[static_cast<std::size_t>(p.channel_of_row(r))];
        for (Eigen::Index c = 0; c < p.cols; ++c) p.codes[i++] = detail::uniform_code(Wn(r, c), scale, max_code);
    }
    return p;
}

// Writes the rebuilt weights into out (resized if it is a plain matrix, else it must match).
template <class T, class Out>
void dequantize(const uniform_packed<T>& p, Out&& out) {
    if (p.codes.size() != p.size() || p.scales.size() != static_cast<std::size_t>(p.channels()))
        throw std::invalid_argument("grphi::dequantize(uniform_packed): codes/scales sizes do not match the shape");
    detail::prepare_baseline_output(out, p.rows, p.cols, "grphi::dequantize(uniform_packed)");
    std::size_t i = 0;
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const T scale = p.scales[static_cast<std::size_t>(p.channel_of_row(r))];
        for (Eigen::Index c = 0; c < p.cols; ++c)
            out(r, c) = static_cast<typename std::decay_t<Out>::Scalar>(detail::uniform_value(p.codes[i++], scale));
    }
}

template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dequantize(const uniform_packed<T>& p) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(p.rows, p.cols);
    dequantize(p, out);
    return out;
}

// The QAT forward: out = dequantize(quantize_uniform(W, opts)) bit for bit, without the packed detour.
template <class Derived, class Out>
void fake_quantize_uniform(const Eigen::MatrixBase<Derived>& W, const uniform_options& opts, Out&& out) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    opts.validate();
    const detail::baseline_evaluated_t<Derived> Wn(W.derived());
    detail::check_finite_baseline(Wn, "grphi::fake_quantize_uniform");
    // Scales are read before out is written, so out may alias W.
    const std::vector<T> scales = detail::uniform_scales<T>(Wn, opts);
    detail::prepare_baseline_output(out, Wn.rows(), Wn.cols(), "grphi::fake_quantize_uniform");
    const int max_code = opts.max_code();
    for (Eigen::Index r = 0; r < Wn.rows(); ++r) {
        const T scale = scales[static_cast<std::size_t>(grphi::channel_of_row(opts.per_channel, r))];
        for (Eigen::Index c = 0; c < Wn.cols(); ++c)
            out(r, c) = static_cast<typename std::decay_t<Out>::Scalar>(
                detail::uniform_value(detail::uniform_code(Wn(r, c), scale, max_code), scale));
    }
}

// Same, plus the STE gradient mask: the scale covers max|w|, so no weight is ever clipped and the
// mask is all zero; it exists so int-N drops into the same STE op as the log quantizers.
template <class Derived, class Out, class Mask>
void fake_quantize_uniform(const Eigen::MatrixBase<Derived>& W, const uniform_options& opts, Out&& out,
                           Mask&& clipped) {
    fake_quantize_uniform(W, opts, out);
    detail::prepare_baseline_output(clipped, out.rows(), out.cols(), "grphi::fake_quantize_uniform (mask)");
    clipped.setZero();
}

}  // namespace grphi
