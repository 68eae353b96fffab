// The table-format engine: nearest codes against a brute force, tie rules, zeros, short tail blocks,
// float and double, the scale search (never worse than plain, weighted by column importance), errors.
#include <grphi/baselines/formats.hpp>
#include <grphi/baselines/ggml_blocks.hpp>
#include <grphi/baselines/table_blocks.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace gb = grphi::baselines;

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
matrix<T> student_t(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::student_t_distribution<double> t(3.0);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(static_cast<float>(0.01 * t(rng)));  // float values, exact in both types
    return W;
}

template <class T>
double weighted_error(const matrix<T>& W, const matrix<float>& Q, const std::vector<double>& importance) {
    double e = 0;
    for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const double d = static_cast<double>(W(r, c)) - static_cast<double>(Q(r, c));
            e += (importance.empty() ? 1.0 : importance[static_cast<std::size_t>(c)]) * d * d;
        }
    return e;
}

std::vector<gb::table_format> all_formats() {
    return {gb::nf4_format(),      gb::iq4_nl_format(),   gb::mxfp4_format(), gb::nvfp4_format(), gb::fp8_e4m3_format(),
            gb::fp8_e5m2_format(), gb::apot4_format(),    gb::q4_0_format(),  gb::q8_0_format()};
}

}  // namespace

TEST_CASE_TEMPLATE("table blocks: every code is the nearest table value of w / s (brute force)", T, float, double) {
    const matrix<T> W = student_t<T>(5, 70, 1);  // 70 = 2 blocks of 32 and a tail of 6 (NVFP4: 4 of 16 and 6)
    for (const auto& f : all_formats()) {
        CAPTURE(f.name);
        const auto q = gb::quantize_table(W, f);
        REQUIRE(q.codes.size() == 350);
        REQUIRE(q.scales.size() == 5 * gb::blocks_per_row(70, f.block_for(70)));
        for (std::size_t r = 0; r < 5; ++r)
            for (std::size_t c = 0; c < 70; ++c) {
                const double s = q.scales[r * q.row_blocks() + c / q.block];
                const double y = static_cast<double>(W(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c))) / s;
                double best = std::numeric_limits<double>::infinity();
                for (double v : f.values) best = std::min(best, std::fabs(v - y));
                CHECK(std::fabs(f.values[q.codes[r * 70 + c]] - y) <= best + 1e-12);
            }
        // float and double inputs holding the same values give the same codes and scales.
        const auto qf = gb::quantize_table(W.template cast<float>().eval(), f);
        CHECK(qf.codes == q.codes);
        CHECK(qf.scales == q.scales);
    }
}

TEST_CASE("table blocks: tie rules") {
    gb::table_format f{"ties", {-2, -1, 0, 1, 2}, 0, gb::scale_storage::fp32, gb::scale_rule::absmax, gb::tie_rule::upper, 3};
    matrix<double> W(1, 5);
    W << 2, 0.5, -0.5, 1.5, -1.5;
    CHECK(gb::quantize_table(W, f).codes == std::vector<std::uint16_t>{4, 3, 2, 4, 1});
    f.ties = gb::tie_rule::away_from_zero;
    CHECK(gb::quantize_table(W, f).codes == std::vector<std::uint16_t>{4, 3, 1, 4, 0});
    f.ties = gb::tie_rule::even_magnitude;  // magnitude codes 0, 1, 2: ties go to 0 and 2
    CHECK(gb::quantize_table(W, f).codes == std::vector<std::uint16_t>{4, 2, 2, 4, 0});
}

TEST_CASE("table blocks: zero blocks, empty matrices, errors") {
    matrix<double> W = matrix<double>::Zero(2, 40);
    W(1, 35) = 0.5;
    for (const auto& f : all_formats()) {
        CAPTURE(f.name);
        const auto q = gb::quantize_table(W, f);
        const matrix<float> R = gb::dequantize(q);
        CHECK(R(0, 0) == 0.0f);
        CHECK(R(1, 0) == 0.0f);
        CHECK(R(1, 35) != 0.0f);
        CHECK(gb::quantize_table(matrix<float>(0, 7), f).codes.empty());
        CHECK(gb::quantize_table(matrix<float>(3, 0), f).scales.empty());
    }
    W(0, 3) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_AS(gb::quantize_table(W, gb::nf4_format()), std::domain_error);
    W(0, 3) = 1e6;  // IQ4_NL's d = 1e6 / 127 fits fp16? no: 7874 does; 1e7 / 127 does not
    CHECK_NOTHROW(gb::quantize_table(W, gb::iq4_nl_format()));
    W(0, 3) = 1e8;
    CHECK_THROWS_AS(gb::quantize_table(W, gb::iq4_nl_format()), std::domain_error);
    gb::search_options s;
    s.enabled = true;
    s.column_importance = {1.0, 2.0};
    CHECK_THROWS_AS(gb::quantize_table(W, gb::nf4_format(), s), std::invalid_argument);
    s.column_importance.assign(40, -1.0);
    CHECK_THROWS_AS(gb::quantize_table(W, gb::nf4_format(), s), std::invalid_argument);
    gb::table_format bad = gb::nf4_format();
    bad.values = {0.5, 0.25};
    CHECK_THROWS_AS(bad.validate(), std::invalid_argument);
    bad = gb::mxfp4_format();
    bad.rule = gb::scale_rule::signed_extreme;
    CHECK_THROWS_AS(bad.validate(), std::invalid_argument);
}

TEST_CASE("table blocks: the scale search never loses to plain, and importance moves the error where it weighs") {
    const matrix<float> W = student_t<float>(16, 96, 2);
    for (const auto& f : all_formats()) {
        CAPTURE(f.name);
        const auto plain = gb::quantize_table(W, f);
        gb::search_options s;
        s.enabled = true;
        const auto searched = gb::quantize_table(W, f, s);
        const double e_plain = weighted_error(W, gb::dequantize(plain), {});
        const double e_search = weighted_error(W, gb::dequantize(searched), {});
        CHECK(e_search <= e_plain);
        if (f.name != "fp8_e4m3" && f.name != "fp8_e5m2" && f.name != "q8_0") CHECK(e_search < 0.97 * e_plain);
        // Deterministic.
        CHECK(gb::quantize_table(W, f, s).codes == searched.codes);
        // Heavy importance on column 5: its error shrinks against the unweighted search.
        s.column_importance.assign(96, 1.0);
        s.column_importance[5] = 1000;
        const auto weighted = gb::quantize_table(W, f, s);
        CHECK(weighted_error(W, gb::dequantize(weighted), s.column_importance) <=
              weighted_error(W, gb::dequantize(searched), s.column_importance));
    }
}

TEST_CASE("table blocks: q4_0 as a table agrees with ggml's Q4_0 but for fp16 rounding of d") {
    const matrix<float> W = student_t<float>(32, 784, 3);
    const matrix<float> table = gb::dequantize(gb::quantize_table(W, gb::q4_0_format()));
    const matrix<float> ggml = gb::dequantize(gb::quantize_q4_0(W));
    Eigen::Index differ = 0;
    for (Eigen::Index i = 0; i < W.size(); ++i) differ += table.data()[i] != ggml.data()[i];
    CHECK(differ < W.size() / 500);
}
