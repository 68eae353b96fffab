// `grphi report`: per-tensor shape, levels used, entropy, coded bits/weight and SQNR, as a table or CSV.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <grphi/coding/entropy.hpp>
#include <grphi/format/file_writer.hpp>
#include <grphi/core/quantize.hpp>

#include "cli_args.hpp"
#include "cli_input.hpp"

namespace grphi::cli {

// What a tensor (or a row chunk of it) quantized to, in additive form so chunks merge exactly.
struct tensor_stats {
    std::map<int, std::uint64_t> exponent_counts;  // exponent -> stored symbols
    std::array<std::uint64_t, 3> sign_counts{};    // -1, 0, +1
    std::uint64_t weights = 0;
    std::uint64_t channels = 0;
    double signal = 0;  // sum of w^2
    double noise = 0;   // sum of (w - q)^2
    std::uint64_t coded_bytes = 0;  // data section bytes, as the file stores them

    void merge(const tensor_stats& other) {
        for (const auto& [k, n] : other.exponent_counts) exponent_counts[k] += n;
        for (std::size_t i = 0; i < 3; ++i) sign_counts[i] += other.sign_counts[i];
        weights += other.weights;
        channels += other.channels;
        signal += other.signal;
        noise += other.noise;
        coded_bytes += other.coded_bytes;
    }
    std::uint64_t exponent_symbols() const {
        std::uint64_t total = 0;
        for (const auto& entry : exponent_counts) total += entry.second;
        return total;
    }
    std::vector<std::uint64_t> exponent_histogram() const {
        std::vector<std::uint64_t> counts;
        for (const auto& entry : exponent_counts) counts.push_back(entry.second);
        return counts;
    }
    double sqnr_db() const {
        if (noise == 0) return std::numeric_limits<double>::infinity();
        if (signal == 0) return -std::numeric_limits<double>::infinity();
        return 10.0 * std::log10(signal / noise);
    }
};

// Per-channel metadata as the entropy report counts it: window (2 x 16 bits) and scale step (5 bits if fitted).
inline double metadata_bits(const tensor_stats& s, const options& o) {
    return static_cast<double>(s.channels) * (32.0 + (o.fit_scale ? 5.0 : 0.0));
}

inline double entropy_bits_per_weight(const tensor_stats& s, const options& o) {
    if (s.weights == 0) return 0.0;
    const std::vector<std::uint64_t> signs(s.sign_counts.begin(), s.sign_counts.end());
    return (static_cast<double>(s.exponent_symbols()) * shannon_entropy(s.exponent_histogram()) +
            static_cast<double>(s.weights) * shannon_entropy(signs) + metadata_bits(s, o)) /
           static_cast<double>(s.weights);
}

// What `quantize` stores for the tensor (all its row parts: directory entries, data, checksums) per weight.
inline double coded_bits_per_weight(const tensor_stats& s) {
    return s.weights == 0 ? 0.0 : 8.0 * static_cast<double>(s.coded_bytes) / static_cast<double>(s.weights);
}

// Quantize rows of a tensor (or all of it), code them as `quantize` would, and measure what happened.
template <class T, class Base>
tensor_stats analyse_rows(const std::string& part_name, const row_matrix<T>& W, const options& o) {
    packed<T, Base> p = quantize<Base>(W, o);
    const entropy_report rep = entropy(p);
    tensor_stats s;
    for (std::size_t i = 0; i < rep.histogram.size(); ++i)
        if (rep.histogram[i]) s.exponent_counts[rep.symbol_min + static_cast<int>(i)] += rep.histogram[i];
    s.sign_counts = rep.sign_counts;
    s.weights = rep.weights;
    s.channels = rep.channels;
    const row_matrix<T> Q = dequantize(p);
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
        double signal = 0, noise = 0;
        for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const double w = static_cast<double>(W(r, c));
            const double e = w - static_cast<double>(Q(r, c));
            signal += w * w;
            noise += e * e;
        }
        s.signal += signal;
        s.noise += noise;
    }
    (void)part_name;
    s.coded_bytes = p.rows > 0 ? encode_part(p, 0, p.rows).bytes.size() : 0;  // the data section the file stores
    return s;
}

inline std::string format_db(double db) {
    if (std::isinf(db)) return db > 0 ? "inf" : "-inf";
    char text[32];
    std::snprintf(text, sizeof text, "%.2f", db);
    return text;
}

}  // namespace grphi::cli
