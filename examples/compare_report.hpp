// Report writers of the comparison (examples/compare.cpp): markdown tables, the CSV
// `tensor,method,fixed_bits_per_weight,coded_bits_per_weight,sqnr_db,accuracy`, and self-contained SVG
// rate-distortion plots (SQNR against fixed or coded bits/weight). They render grphi::comparison_row
// values and compute nothing.
#pragma once

#include <grphi/baselines/compare.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace compare_report {

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

// One markdown table; rows of several tensors get a tensor column.
inline void write_markdown(std::ostream& os, const std::vector<grphi::comparison_row>& rows) {
    bool several = false, accuracy = false;
    for (const auto& r : rows) {
        several = several || r.tensor != rows.front().tensor;
        accuracy = accuracy || r.accuracy.has_value();
    }
    os << (several ? "| tensor " : "")
       << "| method | fixed bits/weight | coded bits/weight | entropy bits/weight | H(symbol) bits | SQNR dB |"
       << (accuracy ? " accuracy % |" : "") << "\n";
    os << (several ? "|---" : "") << "|---|---:|---:|---:|---:|---:|" << (accuracy ? "---:|" : "") << "\n";
    for (const auto& r : rows) {
        if (several) os << "| " << r.tensor << " ";
        os << "| " << r.method << " | " << fixed(r.fixed_bits_per_weight, 3) << " | " << fixed(r.coded_bits_per_weight, 3)
           << " | " << fixed(r.entropy_bits_per_weight, 3) << " | " << fixed(r.symbol_entropy, 3) << " | "
           << fixed(r.sqnr_db, 2) << " |";
        if (accuracy) os << " " << (r.accuracy ? fixed(100.0 * *r.accuracy, 2) : std::string("-")) << " |";
        os << "\n";
    }
}

inline void write_csv(std::ostream& os, const std::vector<grphi::comparison_row>& rows) {
    os << "tensor,method,fixed_bits_per_weight,coded_bits_per_weight,sqnr_db,accuracy\n";
    os << std::setprecision(10);
    for (const auto& r : rows) {
        os << csv_field(r.tensor) << ',' << csv_field(r.method) << ',' << r.fixed_bits_per_weight << ','
           << r.coded_bits_per_weight << ',' << r.sqnr_db << ',';
        if (r.accuracy) os << *r.accuracy;
        os << '\n';
    }
}

enum class rate_axis { fixed_bits, coded_bits };

// A self-contained SVG rate-distortion plot: SQNR (dB) against fixed or coded bits/weight, one polyline
// per family (points in order of rate), ticks, axis labels and a legend. Lossless points (+inf dB) and
// rates beyond x_limit are left out.
inline void write_svg(std::ostream& os, const std::vector<grphi::comparison_row>& rows, const std::string& title,
                      rate_axis axis = rate_axis::coded_bits, double x_limit = std::numeric_limits<double>::infinity()) {
    std::vector<std::string> order;  // families in first-seen order
    std::map<std::string, std::vector<std::pair<double, double>>> curves;
    double x_max = 0, y_min = std::numeric_limits<double>::infinity(), y_max = -y_min;
    for (const auto& r : rows) {
        const double x = axis == rate_axis::fixed_bits ? r.fixed_bits_per_weight : r.coded_bits_per_weight;
        if (!std::isfinite(r.sqnr_db) || !std::isfinite(x) || x > x_limit) continue;
        if (!curves.count(r.family)) order.push_back(r.family);
        curves[r.family].push_back({x, r.sqnr_db});
        x_max = std::max(x_max, x);
        y_min = std::min(y_min, r.sqnr_db);
        y_max = std::max(y_max, r.sqnr_db);
    }
    if (order.empty()) {
        x_max = 1;
        y_min = 0;
        y_max = 1;
    }
    const double legend_h = 20.0 * static_cast<double>(order.size()) + 20;
    const double width = 900, left = 70, right = 250, top = 50, bottom = 60;
    const double height = std::max(540.0, top + legend_h + bottom);
    const double plot_w = width - left - right, plot_h = height - top - bottom;
    const double x_step = nice_step(std::max(x_max, 1e-6), 8);
    const double x_hi = std::ceil(x_max / x_step) * x_step + (x_max == 0 ? x_step : 0);
    const double y_step = nice_step(std::max(y_max - y_min, 1e-6), 8);
    const double y_lo = std::floor(y_min / y_step) * y_step, y_hi = std::ceil(y_max / y_step) * y_step + (y_max == y_min ? y_step : 0);
    auto px = [&](double x) { return left + plot_w * x / x_hi; };
    auto py = [&](double y) { return top + plot_h * (1 - (y - y_lo) / (y_hi - y_lo)); };
    static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"};
    constexpr std::size_t colours = sizeof palette / sizeof *palette;

    os << std::fixed << std::setprecision(2);
    os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
       << "\" viewBox=\"0 0 " << width << ' ' << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
    os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    os << "<text x=\"" << left + plot_w / 2 << "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
       << "</text>\n";
    for (double x = 0; x <= x_hi + x_step * 1e-6; x += x_step) {
        os << "<line x1=\"" << px(x) << "\" y1=\"" << top << "\" x2=\"" << px(x) << "\" y2=\"" << top + plot_h
           << "\" stroke=\"#e5e5e5\"/>\n";
        os << "<text x=\"" << px(x) << "\" y=\"" << top + plot_h + 18 << "\" text-anchor=\"middle\">"
           << number_label(x, x_step) << "</text>\n";
    }
    for (double y = y_lo; y <= y_hi + y_step * 1e-6; y += y_step) {
        os << "<line x1=\"" << left << "\" y1=\"" << py(y) << "\" x2=\"" << left + plot_w << "\" y2=\"" << py(y)
           << "\" stroke=\"#e5e5e5\"/>\n";
        os << "<text x=\"" << left - 8 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << number_label(y, y_step)
           << "</text>\n";
    }
    os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
       << "\" fill=\"none\" stroke=\"black\"/>\n";
    os << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << height - 18 << "\" text-anchor=\"middle\">"
       << (axis == rate_axis::fixed_bits ? "fixed bits per weight in memory (every scale included)"
                                         : "coded bits per weight (rANS streams + metadata)")
       << "</text>\n";
    os << "<text x=\"18\" y=\"" << top + plot_h / 2 << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 "
       << top + plot_h / 2 << ")\">SQNR (dB)</text>\n";
    for (std::size_t f = 0; f < order.size(); ++f) {
        auto points = curves[order[f]];
        std::sort(points.begin(), points.end());
        const char* colour = palette[f % colours];
        const std::string dash = (f / colours) % 2 == 1 ? " stroke-dasharray=\"5,3\"" : "";
        os << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.8\"" << dash << " points=\"";
        for (const auto& [x, y] : points) os << px(x) << ',' << py(y) << ' ';
        os << "\"/>\n";
        for (const auto& [x, y] : points)
            os << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << colour << "\"><title>"
               << xml_escape(order[f]) << ": " << fixed(x, 3) << " bits/weight, " << fixed(y, 2) << " dB</title></circle>\n";
        const double ly = top + 10 + 20.0 * static_cast<double>(f);
        os << "<line x1=\"" << left + plot_w + 15 << "\" y1=\"" << ly << "\" x2=\"" << left + plot_w + 40 << "\" y2=\"" << ly
           << "\" stroke=\"" << colour << "\" stroke-width=\"2.5\"" << dash << "/>\n";
        os << "<text x=\"" << left + plot_w + 46 << "\" y=\"" << ly + 4 << "\">" << xml_escape(order[f]) << "</text>\n";
    }
    os << "</svg>\n";
}

}  // namespace compare_report
