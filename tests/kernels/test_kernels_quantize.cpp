// The quantizer's row kernels (kernels/quantize_avx512.hpp, quantize_xsimd.hpp) against the scalar reference
// (kernels/quantize_scalar.hpp), byte for byte:
// every path this machine runs gives the packed tensor, fake_quantize and dequantize of the scalar path.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <grphi/kernels/dispatch.hpp>
#include <grphi/core/quantize.hpp>

namespace {

template <class T>
using matrix = grphi::row_matrix<T>;

// Bitwise equality (tells -0 from +0).
template <class T>
bool same_bits(const matrix<T>& a, const matrix<T>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.size())) == 0);
}

template <class T, class Base>
void check_same_packed(const grphi::packed<T, Base>& a, const grphi::packed<T, Base>& b) {
    CHECK(a.rows == b.rows);
    CHECK(a.cols == b.cols);
    CHECK(a.signs == b.signs);
    CHECK(a.exponents == b.exponents);
    CHECK(a.window_lo == b.window_lo);
    CHECK(a.window_hi == b.window_hi);
    CHECK(a.scale_steps == b.scale_steps);
    CHECK(a.block_top == b.block_top);
    CHECK(a.block_steps == b.block_steps);
    CHECK(a.block_scales == b.block_scales);
}

// Weights that stress the kernels: random over many octaves, zeros, denormals, huge values and values
// exactly at (and one ulp either side of) the grid's rounding thresholds.
template <class T, class Base>
std::vector<matrix<T>> stress_inputs(Eigen::Index cols) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(cols) * 7919u + sizeof(T));
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_int_distribution<int> octave(-30, 4);
    const Eigen::Index rows = 3;
    std::vector<matrix<T>> out;

    matrix<T> random(rows, cols);
    for (Eigen::Index i = 0; i < random.size(); ++i)
        random.data()[i] = static_cast<T>(normal(rng) * std::ldexp(1.0, octave(rng) / 3));
    out.push_back(random);

    out.push_back(matrix<T>::Zero(rows, cols));

    matrix<T> mixed(rows, cols);  // zeros, denormals, ±huge and ordinary weights side by side
    const T denormal = std::numeric_limits<T>::denorm_min();
    const T huge = std::numeric_limits<T>::max();
    const T pool[] = {T(0),   -T(0),        denormal * T(3), -denormal * T(1000), std::numeric_limits<T>::min(),
                      huge,   -huge / T(3), T(0.75),         T(-1.5e-3),          T(42)};
    for (Eigen::Index i = 0; i < mixed.size(); ++i) mixed.data()[i] = pool[static_cast<std::size_t>(rng() % 10)];
    out.push_back(mixed);

    matrix<T> ties(rows, cols);  // thresholds of exponents around 1 and their neighbours
    const auto& g = grphi::grid_for<T, Base>(grphi::options{}, 0);
    for (Eigen::Index i = 0; i < ties.size(); ++i) {
        const int k = std::clamp(static_cast<int>(rng() % 24) - 16, g.k_lo + 1, g.k_hi);
        T v = g.threshold_of(k);
        const auto nudge = rng() % 3;
        if (nudge == 1) v = std::nextafter(v, T(0));
        if (nudge == 2) v = std::nextafter(v, std::numeric_limits<T>::infinity());
        ties.data()[i] = (rng() & 1) ? -v : v;
    }
    out.push_back(ties);
    return out;
}

// The option sets the AVX-512 routes handle, and their neighbours that take the reference route.
std::vector<grphi::options> kernel_option_sets() {
    std::vector<grphi::options> sets;
    for (bool per_channel : {true, false})
        for (int levels : {0, 4})
            for (int cluster : {0, 3, 16, 32})
                for (bool fit : {false, true})
                    for (auto under : {grphi::underflow::clamp, grphi::underflow::flush}) {
                        grphi::options o;
                        o.per_channel = per_channel;
                        if (levels) o.levels = levels;
                        o.cluster_size = cluster;
                        o.fit_scale = fit;
                        o.under = under;
                        sets.push_back(o);
                    }
    grphi::options clipped;
    clipped.e_min = -14;
    clipped.e_max = 2;
    sets.push_back(clipped);
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (int block : {16, 32, 7})
            for (auto search : {grphi::scale_search::absmax, grphi::scale_search::mse})
                for (bool per_channel : {true, false}) {
                    grphi::options o;
                    o.per_channel = per_channel;
                    o.levels = 6;
                    o.block_size = block;
                    o.block_format = format;
                    o.search = search;
                    sets.push_back(o);
                    if (format == grphi::block_scale::exponent) {
                        o.fit_scale = true;
                        sets.push_back(o);
                    }
                }
    return sets;
}

template <class T, class Base>
void check_every_path_matches_scalar(std::initializer_list<Eigen::Index> lengths) {
    for (Eigen::Index cols : lengths) {
        const auto inputs = stress_inputs<T, Base>(cols);
        for (std::size_t input = 0; input < inputs.size(); ++input) {
            const matrix<T>& W = inputs[input];
            for (const auto& o : kernel_option_sets()) {
                grphi::packed<T, Base> want_packed;
                matrix<T> want_fake, want_deq;
                {
                    grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
                    want_packed = grphi::quantize<Base>(W, o);
                    want_fake = grphi::fake_quantize<Base>(W, o);
                    want_deq = grphi::dequantize(want_packed);
                }
                for (int i = 1; i < grphi::kernels::available_isa_count(); ++i) {
                    grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
                    CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
                    CAPTURE(cols);
                    CAPTURE(input);
                    CAPTURE(o.per_channel);
                    CAPTURE(o.levels.value_or(0));
                    CAPTURE(o.cluster_size);
                    CAPTURE(o.fit_scale);
                    CAPTURE(o.block_size);
                    CAPTURE(static_cast<int>(o.block_format));
                    CAPTURE(static_cast<int>(o.search));
                    CAPTURE(static_cast<int>(o.under));
                    const auto got = grphi::quantize<Base>(W, o);
                    check_same_packed(got, want_packed);
                    CHECK(same_bits<T>(grphi::fake_quantize<Base>(W, o), want_fake));
                    // The kernels' dequantize of the reference's packed tensor, and of their own.
                    CHECK(same_bits<T>(grphi::dequantize(want_packed), want_deq));
                    CHECK(same_bits<T>(grphi::dequantize(got), want_deq));
                }
            }
        }
    }
}

template <class T>
std::string refusal(const matrix<T>& W) {
    try {
        (void)grphi::quantize<grphi::phi>(W, grphi::options{});
    } catch (const std::domain_error& e) {
        return e.what();
    }
    return "";
}
template <class T>
std::string fake_refusal(const matrix<T>& W) {
    try {
        (void)grphi::fake_quantize<grphi::phi>(W, grphi::options{});
    } catch (const std::domain_error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE_TEMPLATE("every quantizer path matches the scalar one bit for bit (phi)", T, float, double) {
    check_every_path_matches_scalar<T, grphi::phi>({1, 15, 17, 33, 1000});
}

TEST_CASE_TEMPLATE("every quantizer path matches the scalar one bit for bit (two)", T, float, double) {
    check_every_path_matches_scalar<T, grphi::two>({17, 200});
}

TEST_CASE_TEMPLATE("every quantizer path refuses NaN and Inf with the scalar path's message", T, float, double) {
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), -std::numeric_limits<T>::infinity()}) {
        matrix<T> W = matrix<T>::Constant(4, 33, T(0.5));
        W(2, 17) = bad;
        std::string want, want_fake;
        {
            grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
            want = refusal(W);
            want_fake = fake_refusal(W);
        }
        CHECK(want.find("row 2, column 17") != std::string::npos);
        CHECK(!want_fake.empty());
        for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
            grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
            CHECK(refusal(W) == want);
            CHECK(fake_refusal(W) == want_fake);
        }
    }
}

namespace {
// The row kernels called directly: the scalar kernel against the grid's own exponent search (the
// definition), and the build's vector kernel against the scalar one, lane by lane.
template <class T, class Base>
void check_row_kernels_against_definition() {
    using I = grphi::detail::bits_t<T>;
    const auto& cells = grphi::detail::cell_table_for<T, Base>(grphi::options{});
    const auto& g = *cells.source;
    std::mt19937_64 rng(sizeof(T) * 31u);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<T> w;
    for (int k = -6; k <= 3; ++k) {  // each threshold and one ulp either side
        const T t = g.threshold_of(k);
        for (T v : {t, std::nextafter(t, T(0)), std::nextafter(t, T(1e30))}) {
            w.push_back(v);
            w.push_back(-v);
        }
    }
    for (T v : {T(0), -T(0), std::numeric_limits<T>::denorm_min(), -std::numeric_limits<T>::denorm_min(),
                std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), -std::numeric_limits<T>::max()})
        w.push_back(v);
    for (int i = 0; i < 301; ++i) w.push_back(static_cast<T>(normal(rng) * std::ldexp(1.0, i % 40 - 30)));
    const int lo = -5, hi = 2;
    const I flush = grphi::detail::to_bits(g.level_of(lo)) / 2;  // a flush point between zero and the bottom
    for (I b : {I(flush - 1), flush, I(flush + 1)}) w.push_back(-grphi::detail::from_bits<T>(b));
    const std::size_t n = w.size();  // not a multiple of any vector width: the tail path runs
    std::vector<I> k_ref(n), s_ref(n), k_vec(n), s_vec(n);
    std::vector<std::uint8_t> c_ref(n), c_vec(n);
    std::vector<T> f_ref(n), f_vec(n);
    grphi::kernels::scalar::eval_row(cells, lo, hi, flush, w.data(), n, k_ref.data(), s_ref.data(), c_ref.data());
    grphi::kernels::baseline::eval_row(cells, lo, hi, flush, w.data(), n, k_vec.data(), s_vec.data(), c_vec.data());
    grphi::kernels::scalar::fake_row(cells, lo, hi, flush, w.data(), n, f_ref.data());
    grphi::kernels::baseline::fake_row(cells, lo, hi, flush, w.data(), n, f_vec.data());
    for (std::size_t i = 0; i < n; ++i) {
        const T a = std::fabs(w[i]);
        const I mag = grphi::detail::to_bits(a);
        const int k = a != T(0) ? g.exponent(a) : lo;
        CAPTURE(i);
        CAPTURE(w[i]);
        CHECK(k_ref[i] == I(std::clamp(k, lo, hi)));
        CHECK(s_ref[i] == I(a == T(0) || mag < flush ? 0 : (w[i] < 0 ? -1 : 1)));
        CHECK(c_ref[i] == std::uint8_t(a != T(0) && (k < lo || k > hi)));
        const T want = s_ref[i] == 0 ? T(0) : T(s_ref[i]) * g.level_of(std::clamp(k, lo, hi));
        CHECK(grphi::detail::to_bits(f_ref[i]) == grphi::detail::to_bits(want));
        if (s_ref[i] != 0) CHECK(k_vec[i] == k_ref[i]);  // a zero's exponent is not part of the result
        CHECK(s_vec[i] == s_ref[i]);
        CHECK(c_vec[i] == c_ref[i]);
        CHECK(grphi::detail::to_bits(f_vec[i]) == grphi::detail::to_bits(f_ref[i]));
    }
    CHECK(grphi::kernels::scalar::row_max_bits(w.data(), n) == grphi::kernels::baseline::row_max_bits(w.data(), n));
    CHECK(grphi::kernels::scalar::row_max_bits(w.data(), 0) == I(0));
}
}  // namespace

TEST_CASE_TEMPLATE("the scalar row kernel is the grid's definition and the vector kernel equals it", T, float, double) {
    check_row_kernels_against_definition<T, grphi::phi>();
    check_row_kernels_against_definition<T, grphi::two>();
}
