// Rate-distortion comparison: "does phi help my weights?" as a library call.
//
// For one weight matrix and a list of methods (log bases phi, 2, sqrt2 or a user base with option
// sets; uniform int-N; k-means), each method runs its whole path:
//   weights -> packed tensor -> coded bytes -> decoded -> rebuilt weights,
// (log methods through the .grphi container, the baselines through the same rANS coder plus their raw
// scales or codebook), and the row reports the real coded size (tables and metadata included),
// the order-0 entropy estimate of the same streams, the main stream's symbol entropy, and the SQNR
// of the weights rebuilt from the decoded streams. Writers render rows as markdown, CSV and SVG.
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
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "base.hpp"
#include "container.hpp"
#include "entropy.hpp"
#include "kmeans.hpp"
#include "options.hpp"
#include "packed.hpp"
#include "quantize.hpp"
#include "rans.hpp"
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
    out.entropy_bits = stream.entropy * static_cast<double>(p.size()) + 8.0 * static_cast<double>(metadata);
    out.symbol_entropy = stream.entropy;
    out.symbols = p.size();
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
    return s.str();
}

}  // namespace detail

// A log method: base Base with options opts. The family defaults to the base name.
template <class T, class Base>
comparison_method<T> log_method(const options& opts, std::string family = Base::name) {
    check_base<Base>();
    opts.validate();
    return {family, std::string(Base::name) + " " + detail::option_label(opts),
            [opts](const row_matrix<T>& W) { return detail::run_log<Base>(W, opts); }};
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
        row.entropy_bits_per_weight = out.entropy_bits / n;
        row.symbol_entropy = out.symbol_entropy;
        row.symbols = out.symbols;
        row.sqnr_db = sqnr_db(weights, out.rebuilt, &row.mse);
        if (on_rebuilt) on_rebuilt(row, out.rebuilt);
        rows.push_back(std::move(row));
    }
    return rows;
}

// ---------------------------------------------------------------------------------------------
// Writers.

namespace detail {

inline std::string fixed(double v, int digits) {
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    std::ostringstream s;
    s << std::fixed << std::setprecision(digits) << v;
    return s.str();
}

inline std::string csv_field(const std::string& v) {
    if (v.find_first_of(",\"\n") == std::string::npos) return v;
    std::string out = "\"";
    for (char c : v) {
        if (c == '"') out += '"';
        out += c;
    }
    return out + "\"";
}

inline std::string xml_escape(const std::string& v) {
    std::string out;
    for (char c : v) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            default: out += c;
        }
    }
    return out;
}

// Tick spacing of 1, 2 or 5 times a power of ten giving about `target` intervals over span.
inline double nice_step(double span, int target) {
    const double raw = span / target;
    const double power = std::pow(10.0, std::floor(std::log10(raw)));
    for (double m : {1.0, 2.0, 5.0, 10.0})
        if (m * power >= raw) return m * power;
    return 10.0 * power;
}

inline std::string number_label(double v, double step) {
    const int digits = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
    return fixed(std::abs(v) < step * 1e-9 ? 0.0 : v, digits);
}

}  // namespace detail

// One markdown table; rows of several tensors get a tensor column.
inline void write_markdown(std::ostream& os, const std::vector<comparison_row>& rows) {
    bool several = false;
    for (const auto& r : rows) several = several || r.tensor != rows.front().tensor;
    bool accuracy = false;
    for (const auto& r : rows) accuracy = accuracy || r.accuracy.has_value();
    os << (several ? "| tensor " : "") << "| method | coded bits/weight | entropy bits/weight | H(symbol) bits | SQNR dB |"
       << (accuracy ? " accuracy % |" : "") << "\n";
    os << (several ? "|---" : "") << "|---|---:|---:|---:|---:|" << (accuracy ? "---:|" : "") << "\n";
    for (const auto& r : rows) {
        if (several) os << "| " << r.tensor << " ";
        os << "| " << r.method << " | " << detail::fixed(r.coded_bits_per_weight, 3) << " | "
           << detail::fixed(r.entropy_bits_per_weight, 3) << " | " << detail::fixed(r.symbol_entropy, 3) << " | "
           << detail::fixed(r.sqnr_db, 2) << " |";
        if (accuracy) os << " " << (r.accuracy ? detail::fixed(100.0 * *r.accuracy, 2) : std::string("-")) << " |";
        os << "\n";
    }
}

inline void write_csv(std::ostream& os, const std::vector<comparison_row>& rows) {
    os << "tensor,family,method,weights,coded_bytes,coded_bits_per_weight,entropy_bits_per_weight,symbol_entropy,"
          "symbols,mse,sqnr_db,accuracy\n";
    os << std::setprecision(10);
    for (const auto& r : rows) {
        os << detail::csv_field(r.tensor) << ',' << detail::csv_field(r.family) << ',' << detail::csv_field(r.method)
           << ',' << r.weights << ',' << r.coded_bytes << ',' << r.coded_bits_per_weight << ','
           << r.entropy_bits_per_weight << ',' << r.symbol_entropy << ',' << r.symbols << ',' << r.mse << ','
           << r.sqnr_db << ',';
        if (r.accuracy) os << *r.accuracy;
        os << '\n';
    }
}

// A self-contained SVG rate-distortion plot: SQNR (dB) against coded bits/weight, one polyline per
// family (points in order of rate), ticks, axis labels and a legend. Lossless points (+inf dB) are left out.
inline void write_svg(std::ostream& os, const std::vector<comparison_row>& rows, const std::string& title) {
    constexpr double width = 860, height = 540, left = 70, right = 230, top = 50, bottom = 60;
    constexpr double plot_w = width - left - right, plot_h = height - top - bottom;
    std::vector<std::string> order;  // families in first-seen order
    std::map<std::string, std::vector<std::pair<double, double>>> curves;
    double x_max = 0, y_min = std::numeric_limits<double>::infinity(), y_max = -y_min;
    for (const auto& r : rows) {
        if (!std::isfinite(r.sqnr_db) || !std::isfinite(r.coded_bits_per_weight)) continue;
        if (!curves.count(r.family)) order.push_back(r.family);
        curves[r.family].push_back({r.coded_bits_per_weight, r.sqnr_db});
        x_max = std::max(x_max, r.coded_bits_per_weight);
        y_min = std::min(y_min, r.sqnr_db);
        y_max = std::max(y_max, r.sqnr_db);
    }
    if (order.empty()) {
        x_max = 1;
        y_min = 0;
        y_max = 1;
    }
    const double x_step = detail::nice_step(std::max(x_max, 1e-6), 8);
    const double x_hi = std::ceil(x_max / x_step) * x_step + (x_max == 0 ? x_step : 0);
    const double y_step = detail::nice_step(std::max(y_max - y_min, 1e-6), 8);
    const double y_lo = std::floor(y_min / y_step) * y_step, y_hi = std::ceil(y_max / y_step) * y_step + (y_max == y_min ? y_step : 0);
    auto px = [&](double x) { return left + plot_w * x / x_hi; };
    auto py = [&](double y) { return top + plot_h * (1 - (y - y_lo) / (y_hi - y_lo)); };
    static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};

    os << std::fixed << std::setprecision(2);
    os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
       << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    os << "<text x=\"" << left + plot_w / 2 << "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">"
       << detail::xml_escape(title) << "</text>\n";
    // Grid and ticks.
    for (double x = 0; x <= x_hi + x_step * 1e-6; x += x_step) {
        os << "<line x1=\"" << px(x) << "\" y1=\"" << top << "\" x2=\"" << px(x) << "\" y2=\"" << top + plot_h
           << "\" stroke=\"#e5e5e5\"/>\n";
        os << "<text x=\"" << px(x) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">"
           << detail::number_label(x, x_step) << "</text>\n";
    }
    for (double y = y_lo; y <= y_hi + y_step * 1e-6; y += y_step) {
        os << "<line x1=\"" << left << "\" y1=\"" << py(y) << "\" x2=\"" << left + plot_w << "\" y2=\"" << py(y)
           << "\" stroke=\"#e5e5e5\"/>\n";
        os << "<text x=\"" << left - 8 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">"
           << detail::number_label(y, y_step) << "</text>\n";
    }
    os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
       << "\" fill=\"none\" stroke=\"black\"/>\n";
    os << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 18
       << "\" text-anchor=\"middle\">coded bits per weight (rANS streams + metadata)</text>\n";
    os << "<text x=\"18\" y=\"" << top + plot_h / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
       << top + plot_h / 2 << ")\">SQNR (dB)</text>\n";
    // Curves and legend.
    for (std::size_t f = 0; f < order.size(); ++f) {
        auto points = curves[order[f]];
        std::sort(points.begin(), points.end());
        const char* colour = palette[f % (sizeof palette / sizeof *palette)];
        const std::string dash = f >= sizeof palette / sizeof *palette ? " stroke-dasharray=\"5,3\"" : "";
        os << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.8\"" << dash << " points=\"";
        for (const auto& [x, y] : points) os << px(x) << ',' << py(y) << ' ';
        os << "\"/>\n";
        for (const auto& [x, y] : points)
            os << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << colour << "\"><title>"
               << detail::xml_escape(order[f]) << ": " << detail::fixed(x, 3) << " bits/weight, " << detail::fixed(y, 2)
               << " dB</title></circle>\n";
        const double ly = top + 10 + 20.0 * static_cast<double>(f);
        os << "<line x1=\"" << left + plot_w + 15 << "\" y1=\"" << ly << "\" x2=\"" << left + plot_w + 40 << "\" y2=\""
           << ly << "\" stroke=\"" << colour << "\" stroke-width=\"2.5\"" << dash << "/>\n";
        os << "<text x=\"" << left + plot_w + 46 << "\" y=\"" << ly + 4 << "\">" << detail::xml_escape(order[f])
           << "</text>\n";
    }
    os << "</svg>\n";
}

}  // namespace grphi
