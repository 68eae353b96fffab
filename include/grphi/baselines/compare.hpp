// Rate-distortion comparison: "does phi help my weights?" as a library call.
//
// For one weight matrix and a list of methods (log bases phi, 2, sqrt2 or a user base with option
// sets; uniform int-N; k-means; the block formats people quantize with today: Q4_0, Q8_0, Q4_K, NF4,
// IQ4_NL, MXFP4, NVFP4, FP8, APoT, plain or with a scale search; low rank + quantization), each method
// runs its whole path:
//   weights -> quantized -> coded bytes -> decoded -> rebuilt weights,
// (log methods through the .grphi container, the others through the same rANS coder plus their raw
// scales or codebook), and the row reports the fixed bits/weight of the method's memory layout (every
// scale included), the real coded size (tables and metadata included), the order-0 entropy estimate of
// the same streams, the main stream's symbol entropy, and the SQNR of the weights rebuilt from the
// decoded streams. Report writers (markdown, CSV, SVG) live with the programs that print them
// (examples/compare_report.hpp).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../core/base.hpp"
#include "catalog.hpp"
#include "low_rank.hpp"
#include "../format/container.hpp"
#include "../coding/entropy.hpp"
#include "kmeans.hpp"
#include "../core/options.hpp"
#include "../core/packed.hpp"
#include "../core/quantize.hpp"
#include "../coding/rans.hpp"
#include "uniform.hpp"

namespace grphi {

// One method on one tensor.
struct comparison_row {
    std::string tensor;                  // e.g. "gaussian 1024x1024"
    std::string family;                  // one curve of the plot, e.g. "phi", "int-N per-channel"
    std::string method;                  // the row label, e.g. "phi levels=8"
    std::size_t weights = 0;
    std::size_t coded_bytes = 0;         // log: the tensor in a .grphi file; int-N, k-means: the rANS stream
                                         // (count, table, payload) + raw scales or codebook
    double coded_bits_per_weight = 0;    // 8 * coded_bytes / weights
    double fixed_bits_per_weight = 0;    // the method's fixed-rate layout in memory, every scale included
    double entropy_bits_per_weight = 0;  // order-0 entropy of the same streams + metadata, per weight
    double symbol_entropy = 0;           // bits per symbol of the main stream: H(e), H(code) or H(index)
    std::size_t symbols = 0;             // symbols in the main stream (exponents of nonzero weights, ...)
    double mse = 0;                      // mean squared error of the rebuilt weights
    double sqnr_db = 0;                  // 10 log10(sum w^2 / sum (w - q)^2); +inf when lossless
    std::optional<double> accuracy;      // test accuracy with the rebuilt weights, when the caller has a network
};

// What a method hands back: the weights rebuilt from its decoded streams and what the streams cost.
template <class T>
struct method_output {
    row_matrix<T> rebuilt;
    std::size_t coded_bytes = 0;
    double fixed_bits = 0;      // total bits of the fixed-rate layout, scales included
    double entropy_bits = 0;    // total, metadata included
    double symbol_entropy = 0;
    std::size_t symbols = 0;
};

template <class T>
struct comparison_method {
    std::string family;
    std::string name;
    std::function<method_output<T>(const row_matrix<T>&)> run;
};

namespace detail {

// Codes one symbol stream with the one-call rANS coder, decodes it back and checks the round trip.
struct coded_stream {
    std::size_t bytes = 0;
    double entropy = 0;  // bits per symbol, order 0
    std::vector<rans::symbol> decoded;
};

inline coded_stream code_stream(const std::vector<rans::symbol>& symbols, const char* what) {
    coded_stream s;
    const std::vector<std::uint8_t> bytes = rans::encode(symbols);
    s.bytes = bytes.size();
    s.entropy = symbols.empty() ? 0.0 : shannon_entropy(rans::histogram(symbols));
    s.decoded = rans::decode(bytes, std::max<std::size_t>(symbols.size(), 1));
    if (s.decoded != symbols)
        throw std::logic_error(std::string("grphi::compare: the ") + what + " stream did not survive the rANS round trip");
    return s;
}

inline double ceil_log2(double n) { return n <= 1 ? 0.0 : std::ceil(std::log2(n)); }

// The fixed-rate layout of a log tensor's values: per weight a code for zero or sign + level
// (ceil(log2(2L + 1)) bits, L the widest channel window), or with exponent sharing a sign/zero code
// (2 bits) per weight and a level code per cluster; per channel its window and scale (5 bytes, as the
// container stores them).
template <class T, class Base>
double log_fixed_bits(const packed<T, Base>& p) {
    int widest = 1;
    for (std::size_t c = 0; c < p.window_lo.size(); ++c) widest = std::max(widest, p.window_hi[c] - p.window_lo[c] + 1);
    const double weights = static_cast<double>(p.rows) * static_cast<double>(p.cols);
    const double channel_bits = 40.0 * static_cast<double>(p.channels());
    if (!p.opts.clustered()) return weights * ceil_log2(2.0 * widest + 1) + channel_bits;
    const double clusters = static_cast<double>(p.rows) * static_cast<double>(p.blocks_per_row());
    return weights * 2 + clusters * ceil_log2(widest) + channel_bits;
}

// A log method's coded size is what its tensor takes in a real .grphi file (index record, per-channel
// window and scale, rANS sign and exponent streams); the rebuilt weights come from loading that file.
template <class Base, class T>
method_output<T> run_log(const row_matrix<T>& W, const options& opts) {
    const packed<T, Base> p = quantize<Base>(W, opts);
    const entropy_report report = entropy(p);
    const std::vector<std::uint8_t> file = serialize({named("weights", p)});
    const std::vector<stored_tensor> loaded = deserialize(file, "grphi::compare");
    const packed<T, Base> q = loaded.at(0).template as<T, Base>();
    if (q.signs != p.signs || q.exponents != p.exponents || q.window_lo != p.window_lo ||
        q.window_hi != p.window_hi || q.scale_steps != p.scale_steps)
        throw std::logic_error("grphi::compare: the tensor loaded from the container differs from the quantized one");
    method_output<T> out;
    out.rebuilt = dequantize(q);
    out.coded_bytes = loaded.at(0).coded_bytes;  // the tensor's index record + sections, not the per-file header
    out.fixed_bits = log_fixed_bits(p);
    out.entropy_bits = report.bits_per_weight * static_cast<double>(report.weights);
    out.symbol_entropy = report.exponent_entropy;
    out.symbols = report.exponent_symbols;
    return out;
}

// int-N: one symbol per weight (code + max_code), and one scale of sizeof(T) bytes per channel.
template <class T>
method_output<T> run_uniform(const row_matrix<T>& W, const uniform_options& opts) {
    uniform_packed<T> p = quantize_uniform(W, opts);
    std::vector<rans::symbol> codes(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) codes[i] = static_cast<rans::symbol>(p.codes[i] + opts.max_code());
    const coded_stream stream = code_stream(codes, "int-N code");
    for (std::size_t i = 0; i < p.size(); ++i) p.codes[i] = static_cast<std::int8_t>(stream.decoded[i] - opts.max_code());
    method_output<T> out;
    out.rebuilt = dequantize(p);
    const std::size_t metadata = p.scales.size() * sizeof(T);
    out.coded_bytes = stream.bytes + metadata;
    out.fixed_bits = static_cast<double>(opts.bits) * static_cast<double>(p.size()) + 8.0 * static_cast<double>(metadata);
    out.entropy_bits = stream.entropy * static_cast<double>(p.size()) + 8.0 * static_cast<double>(metadata);
    out.symbol_entropy = stream.entropy;
    out.symbols = p.size();
    return out;
}

// k-means: one index symbol per weight, and a codebook of k values of sizeof(T) bytes per channel.
template <class T>
method_output<T> run_kmeans(const row_matrix<T>& W, const kmeans_options& opts) {
    kmeans_packed<T, std::uint16_t> p = quantize_kmeans<std::uint16_t>(W, opts);
    const std::vector<rans::symbol> indices(p.indices.begin(), p.indices.end());
    const coded_stream stream = code_stream(indices, "k-means index");
    std::copy(stream.decoded.begin(), stream.decoded.end(), p.indices.begin());
    method_output<T> out;
    out.rebuilt = dequantize(p);
    const std::size_t metadata = p.codebook.size() * sizeof(T);
    out.coded_bytes = stream.bytes + metadata;
    out.fixed_bits = ceil_log2(opts.k) * static_cast<double>(p.size()) + 8.0 * static_cast<double>(metadata);
    out.entropy_bits = stream.entropy * static_cast<double>(p.size()) + 8.0 * static_cast<double>(metadata);
    out.symbol_entropy = stream.entropy;
    out.symbols = p.size();
    return out;
}

// A blocked log method (options::block_size): one symbol per weight, zero or sign + the level's offset
// below its block's top (exponent scales) or its channel's top (fp16/e4m3 scales), through rANS; the
// block scales raw as stored (block_scale_bits, whole bytes) and an int16 window top per channel.
// Fixed layout: 1 + ceil(log2 levels) bits per weight, the block scales, 16 bits per channel.
template <class Base, class T>
method_output<T> run_log_blocked(const row_matrix<T>& W, const options& opts) {
    const packed<T, Base> p = quantize<Base>(W, opts);
    const int levels = *opts.levels;
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    const bool exponent_scales = opts.block_format == block_scale::exponent;
    std::vector<rans::symbol> symbols(p.size());
    for (Eigen::Index r = 0; r < p.rows; ++r)
        for (Eigen::Index c = 0; c < p.cols; ++c) {
            const std::size_t i = static_cast<std::size_t>(r * p.cols + c);
            if (p.signs[i] == 0) continue;
            const std::size_t b = static_cast<std::size_t>(r) * per_row + static_cast<std::size_t>(c / opts.block_size);
            const int top = exponent_scales ? p.block_top[b] : p.window_hi[static_cast<std::size_t>(p.channel_of_row(r))];
            const int offset = top - p.exponent(r, c);
            if (offset < 0 || offset >= levels)
                throw std::logic_error("grphi::compare: a blocked weight lies outside its block's " + std::to_string(levels) + " levels");
            symbols[i] = static_cast<rans::symbol>(1 + (p.signs[i] < 0 ? levels : 0) + offset);
        }
    const coded_stream stream = code_stream(symbols, "block level");
    if (stream.decoded != symbols) throw std::logic_error("grphi::compare: block level stream changed");
    const double blocks = static_cast<double>(p.scale_block_count());
    const std::size_t scale_bytes =
        static_cast<std::size_t>(std::ceil(blocks * block_scale_bits(opts) / 8)) + 2 * static_cast<std::size_t>(p.channels());
    method_output<T> out;
    out.rebuilt = dequantize(p);
    out.coded_bytes = stream.bytes + scale_bytes;
    out.fixed_bits = static_cast<double>(p.size()) * (1 + ceil_log2(levels)) + blocks * block_scale_bits(opts) +
                     16.0 * static_cast<double>(p.channels());
    out.entropy_bits = stream.entropy * static_cast<double>(p.size()) + 8.0 * static_cast<double>(scale_bytes);
    out.symbol_entropy = stream.entropy;
    out.symbols = symbols.size();
    return out;
}

// A block baseline: one code symbol per weight through rANS, its scales raw as stored.
template <class T>
method_output<T> run_block_baseline(const row_matrix<T>& W, baselines::baseline b, const baselines::baseline_options& opts,
                                    const char* name) {
    const baselines::baseline_result q = baselines::run_baseline(b, W, opts);
    const std::vector<rans::symbol> codes(q.codes.begin(), q.codes.end());
    const coded_stream stream = code_stream(codes, name);
    method_output<T> out;
    out.rebuilt = q.rebuilt.template cast<T>();  // the codes survived the round trip, so these are the decoded weights
    out.coded_bytes = stream.bytes + q.scale_bytes;
    out.fixed_bits = q.fixed_bits_per_weight * static_cast<double>(W.size());
    out.entropy_bits = stream.entropy * static_cast<double>(W.size()) + 8.0 * static_cast<double>(q.scale_bytes);
    out.symbol_entropy = stream.entropy;
    out.symbols = codes.size();
    return out;
}

// Sums two methods' costs (low rank: the factors, or the factors and the residual).
template <class T>
void add_cost(method_output<T>& total, const method_output<T>& part) {
    total.coded_bytes += part.coded_bytes;
    total.fixed_bits += part.fixed_bits;
    total.entropy_bits += part.entropy_bits;
    total.symbol_entropy = (total.symbol_entropy * static_cast<double>(total.symbols) +
                            part.symbol_entropy * static_cast<double>(part.symbols)) /
                           static_cast<double>(std::max<std::size_t>(total.symbols + part.symbols, 1));
    total.symbols += part.symbols;
}

// W ~ L R (truncated SVD of the given rank), each factor quantized with `factor_method` (L along its
// rows of length r, R along its rows of length cols); with `residual_method`, W - L R (the quantized
// factors' product) is quantized too and added back.
template <class T>
method_output<T> run_low_rank(const row_matrix<T>& W, Eigen::Index rank, const comparison_method<T>& factor_method,
                              const comparison_method<T>* residual_method) {
    const baselines::low_rank lr = baselines::truncated_svd(W, rank);
    method_output<T> out;
    out.rebuilt = row_matrix<T>::Zero(W.rows(), W.cols());
    if (rank > 0) {
        const method_output<T> left = factor_method.run(lr.left.template cast<T>());
        const method_output<T> right = factor_method.run(lr.right.template cast<T>());
        out.rebuilt = (left.rebuilt.template cast<double>() * right.rebuilt.template cast<double>()).template cast<T>();
        add_cost(out, left);
        add_cost(out, right);
    }
    if (residual_method) {
        const method_output<T> residual = residual_method->run((W - out.rebuilt).eval());
        out.rebuilt += residual.rebuilt;
        add_cost(out, residual);
    }
    return out;
}

inline std::string option_label(const options& o) {
    std::ostringstream s;
    s << (o.levels ? "levels=" + std::to_string(*o.levels) : std::string("levels=all"));
    if (!o.per_channel) s << " per-tensor";
    if (o.clustered()) s << " cluster=" << o.cluster_size;
    if (o.fit_scale) s << " fit_scale";
    if (o.round == rounding::linear) s << " linear";
    if (o.under == underflow::flush) s << " flush";
    if (o.e_min) s << " e_min=" << *o.e_min;
    if (o.e_max) s << " e_max=" << *o.e_max;
    if (o.blocked()) s << " block=" << o.block_size;
    return s.str();
}

}  // namespace detail

// A log method: base Base with options opts. The family defaults to the base name.
template <class T, class Base>
comparison_method<T> log_method(const options& opts, std::string family = Base::name) {
    check_base<Base>();
    opts.validate();
    if (opts.blocked())
        return {family, std::string(Base::name) + " " + detail::option_label(opts),
                [opts](const row_matrix<T>& W) { return detail::run_log_blocked<Base>(W, opts); }};
    return {family, std::string(Base::name) + " " + detail::option_label(opts),
            [opts](const row_matrix<T>& W) { return detail::run_log<Base>(W, opts); }};
}

// The name of a blocked log method: <base>_block<B>, then _fp16 / _e4m3 for float block scales,
// _fit for exponent scales with a fitted step, _search for the squared-error scale search.
inline std::string block_method_name(const char* base, const options& o) {
    std::string name = std::string(base) + "_block" + std::to_string(o.block_size);
    if (o.levels && *o.levels != 8) name += "_l" + std::to_string(*o.levels);
    if (o.block_format == block_scale::fp16) name += "_fp16";
    if (o.block_format == block_scale::e4m3) name += "_e4m3";
    if (o.fit_scale) name += "_fit";
    if (o.search == scale_search::mse) name += "_search";
    if (o.importance) name += "_imatrix";
    return name;
}

// A grphi block format from the core (options::block_size): per row, blocks of `block` weights, each
// with its own scale in `format`, `levels` magnitudes per block (8: sign + 3 bits, a 4-bit code).
template <class T, class Base>
comparison_method<T> block_method(int block, block_scale format, bool search, bool fit_scale = false, int levels = 8,
                                  std::shared_ptr<const std::vector<double>> importance = nullptr) {
    options o;
    o.levels = levels;
    o.block_size = block;
    o.block_format = format;
    o.fit_scale = fit_scale;
    o.search = search ? scale_search::mse : scale_search::absmax;
    o.importance = std::move(importance);
    comparison_method<T> m = log_method<T, Base>(o, std::string(Base::name) + "-block");
    m.name = block_method_name(Base::name, o);
    return m;
}

// The grphi block formats at 4.25-4.5 fixed bits/weight: exponent scales per 32 (MXFP4's rate), with a
// fitted step, fp16 scales per 32 (Q4_0's and NF4's rate), E4M3 scales per 16 (NVFP4's), each plain
// and searched.
template <class T, class Base>
void add_block_methods(std::vector<comparison_method<T>>& methods) {
    for (bool search : {false, true}) {
        methods.push_back(block_method<T, Base>(32, block_scale::exponent, search));
        methods.push_back(block_method<T, Base>(32, block_scale::exponent, search, true));
        methods.push_back(block_method<T, Base>(32, block_scale::fp16, search));
        methods.push_back(block_method<T, Base>(16, block_scale::e4m3, search));
    }
}

template <class T>
comparison_method<T> uniform_method(int bits, bool per_channel) {
    const uniform_options opts{bits, per_channel};
    opts.validate();
    return {per_channel ? "int-N per-channel" : "int-N per-tensor",
            "int" + std::to_string(bits) + (per_channel ? " per-channel" : " per-tensor"),
            [opts](const row_matrix<T>& W) { return detail::run_uniform(W, opts); }};
}

template <class T>
comparison_method<T> kmeans_method(int k, bool per_channel = false) {
    kmeans_options opts;
    opts.k = k;
    opts.per_channel = per_channel;
    opts.validate();
    return {per_channel ? "k-means per-channel" : "k-means",
            "k-means k=" + std::to_string(k) + (per_channel ? " per-channel" : ""),
            [opts](const row_matrix<T>& W) { return detail::run_kmeans(W, opts); }};
}

// A block baseline by name ("q4_0", "nf4", ...): `_search` in the name when `search`; importance,
// when given, weighs the search's squared error per column (the name gains `_imatrix`).
template <class T>
comparison_method<T> block_baseline_method(baselines::baseline b, bool search = false,
                                           std::vector<double> column_importance = {}) {
    std::string name = baselines::name_of(b);
    if (search) name += "_search";
    if (!column_importance.empty()) {
        if (!search) throw std::invalid_argument("grphi::block_baseline_method: column importance needs search");
        name += "_imatrix";
    }
    const baselines::baseline_options opts{search, std::move(column_importance)};
    return {baselines::name_of(b), name, [b, opts, name](const row_matrix<T>& W) {
                return detail::run_block_baseline(W, b, opts, name.c_str());
            }};
}

// Low rank: `lowrank_r<R>_<factor method>` (the factors quantized), or with a residual method
// `lowrank_r<R>_<factor method>+<residual method>` (the residual W - L R quantized as well). The rank is
// fixed, so one method object serves one tensor shape; see low_rank_rank for the bit-budget rule.
template <class T>
comparison_method<T> low_rank_method(Eigen::Index rank, comparison_method<T> factor_method,
                                     std::optional<comparison_method<T>> residual_method = std::nullopt) {
    std::string name = "lowrank_r" + std::to_string(rank) + "_" + factor_method.name;
    if (residual_method) name += "+" + residual_method->name;
    return {"low rank", name, [rank, factor_method, residual_method](const row_matrix<T>& W) {
                return detail::run_low_rank(W, rank, factor_method, residual_method ? &*residual_method : nullptr);
            }};
}

// The rank whose factors at factor_bits per entry take budget_bits per weight of a rows x cols tensor.
inline Eigen::Index low_rank_rank(Eigen::Index rows, Eigen::Index cols, double budget_bits, double factor_bits) {
    return baselines::rank_for_budget(rows, cols, budget_bits, factor_bits);
}

// Every block baseline, plain and searched.
template <class T>
void add_block_baselines(std::vector<comparison_method<T>>& methods, bool with_search = true) {
    for (baselines::baseline b : baselines::all_baselines) {
        methods.push_back(block_baseline_method<T>(b));
        if (with_search) methods.push_back(block_baseline_method<T>(b, true));
    }
}

// The option sets of one log base: windows of 2..16 levels and the natural range (one curve), and
// exponent sharing over blocks of 4..64 weights at 16 levels (a second curve).
template <class T, class Base>
void add_log_methods(std::vector<comparison_method<T>>& methods, bool with_clusters = true) {
    for (int levels : {2, 4, 8, 16}) {
        options o;
        o.levels = levels;
        methods.push_back(log_method<T, Base>(o));
    }
    methods.push_back(log_method<T, Base>(options{}));
    if (with_clusters)
        for (int cluster : {4, 16, 64}) {
            options o;
            o.levels = 16;
            o.cluster_size = cluster;
            methods.push_back(log_method<T, Base>(o, std::string(Base::name) + " cluster"));
        }
}

// phi, 2, sqrt2 and any user bases; int2..int8 per channel and per tensor; k-means k = 16..256.
template <class T, class... UserBases>
std::vector<comparison_method<T>> default_methods() {
    std::vector<comparison_method<T>> methods;
    add_log_methods<T, phi>(methods);
    add_log_methods<T, two>(methods);
    add_log_methods<T, sqrt2>(methods, false);
    (add_log_methods<T, UserBases>(methods, false), ...);
    for (bool per_channel : {true, false})
        for (int bits = 2; bits <= 8; ++bits) methods.push_back(uniform_method<T>(bits, per_channel));
    for (int k : {16, 32, 64, 128, 256}) methods.push_back(kmeans_method<T>(k));
    return methods;
}

// 10 log10(signal / noise) with both sums in long double; +inf when the rebuild is exact.
template <class A, class B>
double sqnr_db(const Eigen::MatrixBase<A>& W, const Eigen::MatrixBase<B>& Q, double* mse = nullptr) {
    if (W.rows() != Q.rows() || W.cols() != Q.cols()) throw std::invalid_argument("grphi::sqnr_db: shapes differ");
    long double signal = 0, noise = 0;
    for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const long double w = W(r, c), d = w - static_cast<long double>(Q(r, c));
            signal += w * w;
            noise += d * d;
        }
    if (mse) *mse = W.size() ? static_cast<double>(noise / static_cast<long double>(W.size())) : 0.0;
    if (noise == 0) return std::numeric_limits<double>::infinity();
    return static_cast<double>(10.0L * std::log10(signal / noise));
}

// Runs every method on W. `on_rebuilt`, when given, sees each row with its method's rebuilt weights
// before the row is stored, e.g. to fill row.accuracy from a network using those weights.
template <class Derived>
std::vector<comparison_row> compare(
    const Eigen::MatrixBase<Derived>& W, const std::vector<comparison_method<typename Derived::Scalar>>& methods,
    const std::string& tensor_name,
    const std::function<void(comparison_row&, const row_matrix<typename Derived::Scalar>&)>& on_rebuilt = {}) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    const row_matrix<T> weights = W;
    detail::check_finite_baseline(weights, "grphi::compare");
    if (weights.size() == 0) throw std::invalid_argument("grphi::compare: the tensor '" + tensor_name + "' is empty");
    std::vector<comparison_row> rows;
    for (const auto& m : methods) {
        const method_output<T> out = m.run(weights);
        comparison_row row;
        row.tensor = tensor_name;
        row.family = m.family;
        row.method = m.name;
        row.weights = static_cast<std::size_t>(weights.size());
        row.coded_bytes = out.coded_bytes;
        const double n = static_cast<double>(row.weights);
        row.coded_bits_per_weight = 8.0 * static_cast<double>(out.coded_bytes) / n;
        row.fixed_bits_per_weight = out.fixed_bits / n;
        row.entropy_bits_per_weight = out.entropy_bits / n;
        row.symbol_entropy = out.symbol_entropy;
        row.symbols = out.symbols;
        row.sqnr_db = sqnr_db(weights, out.rebuilt, &row.mse);
        if (on_rebuilt) on_rebuilt(row, out.rebuilt);
        rows.push_back(std::move(row));
    }
    return rows;
}

}  // namespace grphi
