// The comparison pipeline's numbers are computed, not pasted: every row is checked against a direct
// computation on the same tensor (SQNR from an independent rebuild, entropy from an independent
// histogram, coded size from coding independently built streams), and the writers render what they get.
#include <grphi/baselines/compare.hpp>

#include "../examples/compare_report.hpp"

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct three_halves {  // a user base
    static constexpr long double value = 1.5L;
    static constexpr const char* name = "1.5";
};

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
matrix<T> laplacian(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> magnitude(40.0);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>((rng() & 1 ? 1 : -1) * magnitude(rng));
    W(1, 2) = T(0);  // a zero exercises the sign stream's third symbol
    return W;
}

// SQNR in dB from two matrices, by a loop of its own (double accumulation, not the library's).
template <class T>
double direct_sqnr(const matrix<T>& W, const matrix<T>& Q) {
    double signal = 0, noise = 0;
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        const double w = W.data()[i], d = w - static_cast<double>(Q.data()[i]);
        signal += w * w;
        noise += d * d;
    }
    return 10 * std::log10(signal / noise);
}

template <class Key>
double entropy_of(const std::vector<Key>& symbols) {
    std::map<Key, double> counts;
    for (Key s : symbols) counts[s] += 1;
    double h = 0;
    for (const auto& [s, c] : counts) h -= c / static_cast<double>(symbols.size()) * std::log2(c / static_cast<double>(symbols.size()));
    return h;
}

std::size_t coded_size(const std::vector<grphi::rans::symbol>& symbols) { return grphi::rans::encode(symbols).size(); }

// The accuracy field of the CSV's first data row.
std::string fields_of_first_accuracy(const std::string& csv) {
    std::istringstream in(csv);
    std::string line;
    std::getline(in, line);
    std::getline(in, line);
    return line.substr(line.rfind(',') + 1);
}

}  // namespace

TEST_CASE_TEMPLATE("compare: log rows match a direct quantize/dequantize/entropy/code", T, float, double) {
    const matrix<T> W = laplacian<T>(24, 70, 1);
    grphi::options windowed;
    windowed.levels = 8;
    grphi::options clustered;
    clustered.levels = 16;
    clustered.cluster_size = 4;
    const std::vector<grphi::comparison_method<T>> methods = {
        grphi::log_method<T, grphi::phi>(windowed), grphi::log_method<T, grphi::two>(grphi::options{}),
        grphi::log_method<T, grphi::sqrt2>(clustered), grphi::log_method<T, three_halves>(windowed)};
    const auto rows = grphi::compare(W, methods, "laplacian");
    REQUIRE(rows.size() == 4);

    auto check = [&](const grphi::comparison_row& row, const auto& p) {
        CAPTURE(row.method);
        const matrix<T> Q = grphi::dequantize(p);
        CHECK(row.sqnr_db == doctest::Approx(direct_sqnr(W, Q)).epsilon(1e-9));
        const grphi::entropy_report report = grphi::entropy(p);
        CHECK(row.symbol_entropy == doctest::Approx(report.exponent_entropy).epsilon(1e-12));
        CHECK(row.entropy_bits_per_weight == doctest::Approx(report.bits_per_weight).epsilon(1e-12));
        // Streams built here: signs of every weight; exponents of nonzero weights or of blocks holding one.
        std::vector<grphi::rans::symbol> signs, exponents;
        std::vector<std::int16_t> raw_exponents;
        const int lo = *std::min_element(p.window_lo.begin(), p.window_lo.end());
        for (Eigen::Index r = 0; r < W.rows(); ++r) {
            for (Eigen::Index c = 0; c < W.cols(); ++c) signs.push_back(static_cast<grphi::rans::symbol>(p.signs[r * W.cols() + c] + 1));
            for (Eigen::Index b = 0; b < p.blocks_per_row(); ++b) {
                bool any = false;
                for (Eigen::Index c = b * p.block_size(); c < std::min(W.cols(), (b + 1) * p.block_size()); ++c)
                    any = any || W(r, c) != T(0);
                if (any) {
                    const std::int16_t k = p.exponents[r * p.blocks_per_row() + b];
                    exponents.push_back(static_cast<grphi::rans::symbol>(k - lo));
                    raw_exponents.push_back(k);
                }
            }
        }
        CHECK(row.symbols == exponents.size());
        CHECK(row.symbol_entropy == doctest::Approx(entropy_of(raw_exponents)).epsilon(1e-9));
        // The coded size is the tensor's share of a .grphi file: these two streams, 5 bytes of window and
        // scale per channel, and an index record of a few dozen bytes.
        CHECK(row.coded_bytes == grphi::deserialize(grphi::serialize({grphi::named("weights", p)})).at(0).coded_bytes);
        const std::size_t streams = coded_size(signs) + coded_size(exponents);
        const std::size_t channel_state = 5 * static_cast<std::size_t>(p.channels());
        CHECK(row.coded_bytes >= coded_size(signs) + channel_state);
        CHECK(row.coded_bytes <= streams + channel_state + 80);
        CHECK(row.coded_bits_per_weight == doctest::Approx(8.0 * row.coded_bytes / W.size()));
        // A static coder cannot beat the order-0 entropy of the streams it codes; the container codes an
        // exponent either as itself or as its depth below the channel's window top, whichever is smaller.
        std::vector<int> depths;
        for (Eigen::Index r = 0, i = 0; r < W.rows(); ++r)
            for (Eigen::Index b = 0; b < p.blocks_per_row(); ++b) {
                bool any = false;
                for (Eigen::Index c = b * p.block_size(); c < std::min(W.cols(), (b + 1) * p.block_size()); ++c)
                    any = any || W(r, c) != T(0);
                if (any) depths.push_back(p.window_hi[static_cast<std::size_t>(p.channel_of_row(r))] - raw_exponents[static_cast<std::size_t>(i++)]);
            }
        const double payload_bits =
            entropy_of(signs) * W.size() + std::min(entropy_of(raw_exponents), entropy_of(depths)) * exponents.size();
        CHECK(8.0 * row.coded_bytes >= payload_bits);
    };
    check(rows[0], grphi::quantize<grphi::phi>(W, windowed));
    check(rows[1], grphi::quantize<grphi::two>(W, grphi::options{}));
    check(rows[2], grphi::quantize<grphi::sqrt2>(W, clustered));
    check(rows[3], grphi::quantize<three_halves>(W, windowed));
    CHECK(rows[0].family == "phi");
    CHECK(rows[3].method == "1.5 levels=8");
}

TEST_CASE_TEMPLATE("compare: int-N rows match an independent long-double quantizer", T, float, double) {
    const matrix<T> W = laplacian<T>(16, 33, 2);
    std::vector<grphi::comparison_method<T>> methods;
    for (int bits = 2; bits <= 8; ++bits)
        for (bool per_channel : {true, false}) methods.push_back(grphi::uniform_method<T>(bits, per_channel));
    const auto rows = grphi::compare(W, methods, "t");
    for (const auto& row : rows) {
        CAPTURE(row.method);
        const bool per_channel = row.family == "int-N per-channel";
        const int bits = std::stoi(row.method.substr(3));
        const long double max_code = (1 << (bits - 1)) - 1;
        matrix<T> Q(W.rows(), W.cols());
        std::vector<grphi::rans::symbol> codes;
        std::vector<int> raw;
        long double max_all = 0;
        for (Eigen::Index i = 0; i < W.size(); ++i) max_all = std::max(max_all, std::fabs(static_cast<long double>(W.data()[i])));
        for (Eigen::Index r = 0; r < W.rows(); ++r) {
            long double m = per_channel ? 0 : max_all;
            if (per_channel)
                for (Eigen::Index c = 0; c < W.cols(); ++c) m = std::max(m, std::fabs(static_cast<long double>(W(r, c))));
            const T scale = static_cast<T>(static_cast<T>(m) / static_cast<T>(max_code));
            for (Eigen::Index c = 0; c < W.cols(); ++c) {
                const long double code = std::round(static_cast<long double>(W(r, c)) / scale);
                Q(r, c) = static_cast<T>(code) * scale;
                codes.push_back(static_cast<grphi::rans::symbol>(code + max_code));
                raw.push_back(static_cast<int>(code));
            }
        }
        CHECK(row.sqnr_db == doctest::Approx(direct_sqnr(W, Q)).epsilon(1e-9));
        const double metadata_bytes = static_cast<double>((per_channel ? W.rows() : 1) * sizeof(T));
        CHECK(row.symbol_entropy == doctest::Approx(entropy_of(raw)).epsilon(1e-9));
        CHECK(row.entropy_bits_per_weight ==
              doctest::Approx((entropy_of(raw) * W.size() + 8 * metadata_bytes) / W.size()).epsilon(1e-9));
        CHECK(row.coded_bytes == coded_size(codes) + static_cast<std::size_t>(metadata_bytes));
        CHECK(row.coded_bits_per_weight >= row.entropy_bits_per_weight);
    }
    // More bits: more rate and less distortion, for both scale layouts.
    for (std::size_t i = 2; i < rows.size(); ++i) {
        CHECK(rows[i].sqnr_db > rows[i - 2].sqnr_db);
        CHECK(rows[i].entropy_bits_per_weight > rows[i - 2].entropy_bits_per_weight);
    }
}

TEST_CASE_TEMPLATE("compare: k-means rows and a lossless tensor", T, float, double) {
    const matrix<T> W = laplacian<T>(20, 30, 3);
    const auto rows = grphi::compare(W, {grphi::kmeans_method<T>(16), grphi::kmeans_method<T>(4, true)}, "t");
    for (const auto& [row, per_channel, k] : {std::tuple{rows[0], false, 16}, std::tuple{rows[1], true, 4}}) {
        grphi::kmeans_options opts;
        opts.k = k;
        opts.per_channel = per_channel;
        const auto p = grphi::quantize_kmeans(W, opts);
        const matrix<T> Q = grphi::dequantize(p);
        CHECK(row.sqnr_db == doctest::Approx(direct_sqnr(W, Q)).epsilon(1e-9));
        CHECK(row.mse == doctest::Approx(p.distortion.back()).epsilon(1e-9));
        const std::vector<grphi::rans::symbol> indices(p.indices.begin(), p.indices.end());
        CHECK(row.coded_bytes == coded_size(indices) + p.codebook.size() * sizeof(T));
        CHECK(row.symbol_entropy == doctest::Approx(entropy_of(indices)).epsilon(1e-9));
    }
    // Four distinct values and k = 4: exact, so +inf dB, printed as "inf" and left out of the plot.
    matrix<T> four(6, 5);
    for (Eigen::Index i = 0; i < four.size(); ++i) four.data()[i] = static_cast<T>(static_cast<int>(i % 4) - 1) / T(8);
    const auto exact = grphi::compare(four, {grphi::kmeans_method<T>(4)}, "four");
    CHECK(std::isinf(exact[0].sqnr_db));
    CHECK(exact[0].mse == 0.0);
    std::ostringstream md, svg;
    compare_report::write_markdown(md, exact);
    CHECK(md.str().find("| inf |") != std::string::npos);
    compare_report::write_svg(svg, exact, "t");
    CHECK(svg.str().find("<circle") == std::string::npos);
}

TEST_CASE("compare: the writers render every row") {
    const matrix<float> W = laplacian<float>(12, 40, 4);
    std::vector<grphi::comparison_method<float>> methods;
    grphi::add_log_methods<float, grphi::phi>(methods);
    methods.push_back(grphi::uniform_method<float>(4, true));
    methods.push_back(grphi::uniform_method<float>(6, true));
    methods.push_back(grphi::kmeans_method<float>(16));
    auto rows = grphi::compare(W, methods, "w<1>");
    rows[0].accuracy = 0.8765;

    std::ostringstream md;
    compare_report::write_markdown(md, rows);
    std::vector<std::string> lines;
    std::istringstream md_in(md.str());
    for (std::string line; std::getline(md_in, line);) lines.push_back(line);
    REQUIRE(lines.size() == rows.size() + 2);
    CHECK(lines[0].find("accuracy") != std::string::npos);
    CHECK(lines[2].find("87.65") != std::string::npos);
    CHECK(lines[2].find(rows[0].method) != std::string::npos);

    std::ostringstream csv;
    compare_report::write_csv(csv, rows);
    std::istringstream csv_in(csv.str());
    std::string line;
    std::getline(csv_in, line);
    CHECK(line == "tensor,method,fixed_bits_per_weight,coded_bits_per_weight,sqnr_db,accuracy");
    for (const auto& row : rows) {
        REQUIRE(std::getline(csv_in, line));
        std::vector<std::string> fields;
        std::stringstream fs(line);
        for (std::string f; std::getline(fs, f, ',');) fields.push_back(f);
        if (line.back() == ',') fields.push_back("");
        REQUIRE(fields.size() == 6);
        CHECK(fields[1] == row.method);
        CHECK(std::stod(fields[2]) == doctest::Approx(row.fixed_bits_per_weight).epsilon(1e-9));
        CHECK(std::stod(fields[3]) == doctest::Approx(row.coded_bits_per_weight).epsilon(1e-9));
        CHECK(std::stod(fields[4]) == doctest::Approx(row.sqnr_db).epsilon(1e-9));
    }
    CHECK(fields_of_first_accuracy(csv.str()) == "0.8765");
    CHECK(!std::getline(csv_in, line));

    std::ostringstream svg;
    compare_report::write_svg(svg, rows, "R&D <test>");
    const std::string s = svg.str();
    CHECK(s.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
    CHECK(s.find("</svg>") == s.size() - 7);
    CHECK(s.find("R&amp;D &lt;test&gt;") != std::string::npos);
    std::size_t polylines = 0, circles = 0;
    for (std::size_t at = s.find("<polyline"); at != std::string::npos; at = s.find("<polyline", at + 1)) ++polylines;
    for (std::size_t at = s.find("<circle"); at != std::string::npos; at = s.find("<circle", at + 1)) ++circles;
    CHECK(polylines == 4);  // phi, phi cluster, int-N per-channel, k-means
    CHECK(circles == rows.size());
    for (const char* legend : {">phi<", ">phi cluster<", ">int-N per-channel<", ">k-means<", ">SQNR (dB)<"})
        CHECK(s.find(legend) != std::string::npos);
}

TEST_CASE("compare: bad inputs") {
    matrix<float> empty(0, 4);
    CHECK_THROWS_AS(grphi::compare(empty, {grphi::uniform_method<float>(4, true)}, "e"), std::invalid_argument);
    matrix<float> W = laplacian<float>(3, 4, 5);
    W(2, 1) = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(grphi::compare(W, {grphi::uniform_method<float>(4, true)}, "nan"), std::domain_error);
    CHECK_THROWS_AS(grphi::uniform_method<float>(9, true), std::invalid_argument);
    CHECK_THROWS_AS(grphi::kmeans_method<float>(1), std::invalid_argument);
    grphi::options bad;
    bad.levels = 0;
    CHECK_THROWS_AS((grphi::log_method<float, grphi::phi>(bad)), std::invalid_argument);
}

TEST_CASE_TEMPLATE("compare: block baseline rows match a direct quantize, code and size", T, float, double) {
    const matrix<T> W = laplacian<T>(8, 70, 6);
    std::vector<grphi::comparison_method<T>> methods;
    grphi::add_block_baselines(methods);
    const auto rows = grphi::compare(W, methods, "t");
    REQUIRE(rows.size() == 2 * grphi::baselines::all_baselines.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        const auto& row = rows[i];
        CAPTURE(row.method);
        const auto b = grphi::baselines::all_baselines[i / 2];
        const bool search = i % 2 == 1;
        CHECK(row.method == std::string(grphi::baselines::name_of(b)) + (search ? "_search" : ""));
        const auto q = grphi::baselines::run_baseline(b, W, {search, {}});
        CHECK(row.sqnr_db == doctest::Approx(direct_sqnr(W, matrix<T>(q.rebuilt.template cast<T>()))).epsilon(1e-9));
        const std::vector<grphi::rans::symbol> codes(q.codes.begin(), q.codes.end());
        CHECK(row.coded_bytes == coded_size(codes) + q.scale_bytes);
        CHECK(row.fixed_bits_per_weight == doctest::Approx(q.fixed_bits_per_weight));
        CHECK(row.symbol_entropy == doctest::Approx(entropy_of(codes)).epsilon(1e-9));
    }
    // The fixed rates of the definitions on 70-wide rows (3 blocks of 32; NF4 2 of 64; NVFP4 5 of 16).
    auto fixed_of = [&](const std::string& name) {
        for (const auto& r : rows)
            if (r.method == name) return r.fixed_bits_per_weight;
        return -1.0;
    };
    CHECK(fixed_of("q4_0") == doctest::Approx(4 + 3 * 16 / 70.0));
    CHECK(fixed_of("q8_0") == doctest::Approx(8 + 3 * 16 / 70.0));
    CHECK(fixed_of("nf4") == doctest::Approx(4 + 2 * 32 / 70.0));
    CHECK(fixed_of("mxfp4") == doctest::Approx(4 + 3 * 8 / 70.0));
    CHECK(fixed_of("nvfp4") == doctest::Approx(4 + 5 * 8 / 70.0 + 32 / 560.0));
    CHECK(fixed_of("fp8_e4m3") == doctest::Approx(8 + 32 / 70.0));
    CHECK(fixed_of("q4_k") == doctest::Approx(4 + (32 + 3 * 12) / 70.0));
    CHECK_THROWS_AS(grphi::block_baseline_method<T>(grphi::baselines::baseline::nf4, false, {1.0}), std::invalid_argument);
}

TEST_CASE_TEMPLATE("compare: phi-block rows code sign + offset per weight and count every block scale", T, float, double) {
    const matrix<T> W = laplacian<T>(6, 70, 7);
    for (const auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (bool search : {false, true}) {
            const auto m = grphi::block_method<T, grphi::phi>(32, format, search);
            CAPTURE(m.name);
            const auto row = grphi::compare(W, {m}, "t").at(0);
            grphi::options o;
            o.levels = 8;
            o.block_size = 32;
            o.block_format = format;
            o.search = search ? grphi::scale_search::mse : grphi::scale_search::absmax;
            const auto p = grphi::quantize<grphi::phi>(W, o);
            CHECK(row.sqnr_db == doctest::Approx(direct_sqnr(W, matrix<T>(grphi::dequantize(p)))).epsilon(1e-9));
            const double scale_bits = format == grphi::block_scale::fp16 ? 16 : 8;
            CHECK(row.fixed_bits_per_weight == doctest::Approx(4 + (18 * scale_bits + 6 * 16) / 420.0));
            CHECK(row.symbols == 420);
            CHECK(row.coded_bits_per_weight < row.fixed_bits_per_weight + 1);
        }
    CHECK(grphi::block_method<T, grphi::phi>(32, grphi::block_scale::exponent, true).name == "phi_block32_search");
    CHECK(grphi::block_method<T, grphi::phi>(16, grphi::block_scale::e4m3, false).name == "phi_block16_e4m3");
    CHECK(grphi::block_method<T, grphi::two>(32, grphi::block_scale::fp16, true).name == "two_block32_fp16_search");
}

TEST_CASE("compare: low-rank rows are the product of the quantized factors (plus the quantized residual)") {
    const matrix<float> W = laplacian<float>(20, 40, 8);
    const auto q8 = grphi::block_baseline_method<float>(grphi::baselines::baseline::q8_0);
    const auto q4 = grphi::block_baseline_method<float>(grphi::baselines::baseline::q4_0);
    const auto plain = grphi::low_rank_method<float>(5, q8);
    const auto residual = grphi::low_rank_method<float>(2, q8, q4);
    CHECK(plain.name == "lowrank_r5_q8_0");
    CHECK(residual.name == "lowrank_r2_q8_0+q4_0");
    const auto rows = grphi::compare(W, {plain, residual}, "t");
    const auto lr = grphi::baselines::truncated_svd(W, 5);
    const auto L = q8.run(lr.left.cast<float>()), R = q8.run(lr.right.cast<float>());
    const matrix<float> product = (L.rebuilt.cast<double>() * R.rebuilt.cast<double>()).cast<float>();
    CHECK(rows[0].sqnr_db == doctest::Approx(direct_sqnr(W, product)).epsilon(1e-9));
    CHECK(rows[0].fixed_bits_per_weight == doctest::Approx((L.fixed_bits + R.fixed_bits) / 800.0));
    CHECK(rows[0].fixed_bits_per_weight == doctest::Approx((20 * (5 * 8 + 16) + 5 * (40 * 8 + 2 * 16)) / 800.0));  // L: rows of 5, R: rows of 40
    CHECK(rows[1].fixed_bits_per_weight > 4.5);
    CHECK(rows[1].sqnr_db > 15);
    CHECK(grphi::low_rank_rank(1024, 1024, 4.5, 8.5) == 271);
}

TEST_CASE("compare: fixed bits of int-N, k-means and log methods") {
    const matrix<float> W = laplacian<float>(10, 50, 9);
    grphi::options eight;
    eight.levels = 8;
    const auto rows = grphi::compare(W, {grphi::uniform_method<float>(4, true), grphi::kmeans_method<float>(16),
                                         grphi::log_method<float, grphi::phi>(eight)}, "t");
    CHECK(rows[0].fixed_bits_per_weight == doctest::Approx(4 + 10 * 32 / 500.0));
    CHECK(rows[1].fixed_bits_per_weight == doctest::Approx(4 + 16 * 32 / 500.0));
    CHECK(rows[2].fixed_bits_per_weight == doctest::Approx(5 + 10 * 40 / 500.0));  // 17 symbols -> 5 bits
    std::ostringstream fixed_svg;
    compare_report::write_svg(fixed_svg, rows, "t", compare_report::rate_axis::fixed_bits);
    CHECK(fixed_svg.str().find("fixed bits per weight in memory") != std::string::npos);
}
