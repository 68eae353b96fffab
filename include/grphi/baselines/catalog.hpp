// Every block baseline behind one call, by name: quantize a matrix with it (plain or with the scale
// search), and get the rebuilt weights, one code symbol per weight (what an entropy coder sees), the
// bytes its scales take, and its fixed bits/weight in memory. Also each one as a fake-quantizer with
// the autodiff signature, for STE training (nn::weight_quantizer::from_function).
//   q4_0 q8_0   ggml_blocks.hpp (bit exact; `_search`: the table engine's search on the same layout)
//   q4_k        q4_k.hpp
//   nf4 iq4_nl mxfp4 nvfp4 fp8_e4m3 fp8_e5m2 apot4   formats.hpp
#pragma once

#include <Eigen/Core>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../core/options.hpp"
#include "formats.hpp"
#include "ggml_blocks.hpp"
#include "q4_k.hpp"
#include "table_blocks.hpp"

namespace grphi::baselines {

enum class baseline { q4_0, q8_0, q4_k, nf4, iq4_nl, mxfp4, nvfp4, fp8_e4m3, fp8_e5m2, apot4 };

inline constexpr std::array<baseline, 10> all_baselines{baseline::q4_0,  baseline::q8_0,     baseline::q4_k,
                                                        baseline::nf4,   baseline::iq4_nl,   baseline::mxfp4,
                                                        baseline::nvfp4, baseline::fp8_e4m3, baseline::fp8_e5m2,
                                                        baseline::apot4};

inline const char* name_of(baseline b) {
    switch (b) {
        case baseline::q4_0: return "q4_0";
        case baseline::q8_0: return "q8_0";
        case baseline::q4_k: return "q4_k";
        case baseline::nf4: return "nf4";
        case baseline::iq4_nl: return "iq4_nl";
        case baseline::mxfp4: return "mxfp4";
        case baseline::nvfp4: return "nvfp4";
        case baseline::fp8_e4m3: return "fp8_e4m3";
        case baseline::fp8_e5m2: return "fp8_e5m2";
        case baseline::apot4: return "apot4";
    }
    return "?";
}

inline std::optional<baseline> baseline_by_name(std::string_view name) {
    for (baseline b : all_baselines)
        if (name == name_of(b)) return b;
    return std::nullopt;
}

// The table format of the table-driven baselines (and of q4_0/q8_0 for their search).
inline table_format format_of(baseline b) {
    switch (b) {
        case baseline::q4_0: return q4_0_format();
        case baseline::q8_0: return q8_0_format();
        case baseline::nf4: return nf4_format();
        case baseline::iq4_nl: return iq4_nl_format();
        case baseline::mxfp4: return mxfp4_format();
        case baseline::nvfp4: return nvfp4_format();
        case baseline::fp8_e4m3: return fp8_e4m3_format();
        case baseline::fp8_e5m2: return fp8_e5m2_format();
        case baseline::apot4: return apot4_format();
        case baseline::q4_k: break;
    }
    throw std::invalid_argument("grphi::baselines::format_of: q4_k is not a table format");
}

struct baseline_result {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> rebuilt;
    std::vector<std::uint16_t> codes;  // one symbol per weight, row-major
    std::size_t alphabet = 0;          // symbols are 0 .. alphabet-1
    std::size_t scale_bytes = 0;       // every scale as stored (whole bytes)
    double fixed_bits_per_weight = 0;  // codes + every scale, per weight
};

struct baseline_options {
    bool search = false;                    // the `_search` variant: scales that minimise the squared error
    std::vector<double> column_importance;  // optional per-column weights of that error
};

template <class Derived>
baseline_result run_baseline(baseline b, const Eigen::MatrixBase<Derived>& W, const baseline_options& opts = {}) {
    baseline_result out;
    const auto rows = static_cast<std::size_t>(W.rows()), cols = static_cast<std::size_t>(W.cols());
    if (b == baseline::q4_k) {
        const q4_k_matrix m = quantize_q4_k(W, q4_k_options{opts.search, opts.column_importance});
        out.rebuilt = dequantize<float>(m);
        out.codes.resize(rows * cols);
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t c = 0; c < cols; ++c)
                out.codes[r * cols + c] = static_cast<std::uint16_t>(q4_k_code(m.row(r)[c / 256], c % 256));
        out.alphabet = 16;
        out.scale_bytes = m.scale_bytes();
        out.fixed_bits_per_weight = m.fixed_bits_per_weight();
        return out;
    }
    if (!opts.search && (b == baseline::q4_0 || b == baseline::q8_0)) {  // ggml's own rounding, bit exact
        if (!opts.column_importance.empty())
            throw std::invalid_argument("grphi::baselines::run_baseline: column importance needs search");
        out.codes.resize(rows * cols);
        auto fill = [&](const auto& m, int offset) {
            out.rebuilt = dequantize<float>(m);
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t c = 0; c < cols; ++c)
                    out.codes[r * cols + c] = static_cast<std::uint16_t>(block_code(m.row(r)[c / 32], c % 32) + offset);
            out.scale_bytes = 2 * m.blocks.size();
            out.fixed_bits_per_weight = m.fixed_bits_per_weight();
        };
        if (b == baseline::q4_0) {
            fill(quantize_q4_0(W), 0);
            out.alphabet = 16;
        } else {
            fill(quantize_q8_0(W), 127);
            out.alphabet = 255;
        }
        return out;
    }
    const table_format f = format_of(b);
    const table_quantized q = quantize_table(W, f, search_options{opts.search, opts.column_importance});
    out.rebuilt = dequantize<float>(q);
    out.codes = q.codes;
    out.alphabet = f.values.size();
    out.scale_bytes = q.scale_bytes();
    out.fixed_bits_per_weight = q.fixed_bits_per_weight;
    return out;
}

// out = the baseline's rebuilt w, for nn::weight_quantizer::from_function (the options are unused;
// no clip mask: every entry of *clipped is 0).
template <baseline B, bool Search, class T>
void fake_quantize(const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& w, const grphi::options&,
                   Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>& out,
                   Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>* clipped) {
    out = run_baseline(B, w, baseline_options{Search, {}}).rebuilt.template cast<T>();
    if (clipped) clipped->setZero(w.rows(), w.cols());
}

}  // namespace grphi::baselines
