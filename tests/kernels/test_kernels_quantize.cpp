// The quantizer's row kernels (kernels/quantize_avx512.hpp, quantize_xsimd.hpp) against the scalar reference
// (kernels/quantize_scalar.hpp), byte for byte:
// every path this machine runs gives the packed tensor, fake_quantize and dequantize of the scalar path.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <utility>
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

// ---- Block scales: every path against the exact definition, on weights at the block levels' thresholds ----

namespace {

template <class T>
T ulp_up(T v) { return std::nextafter(v, std::numeric_limits<T>::infinity()); }
template <class T>
T ulp_down(T v) { return std::nextafter(v, T(0)); }

// Whether magnitude a rounds to b or above between adjacent scaled levels a_lo < b: the rounding rule itself.
template <class T>
bool rounds_up(T a, T lo, T hi, grphi::rounding round) {
    return round == grphi::rounding::log ? grphi::detail::square_at_least(a, lo, hi) : grphi::detail::double_at_least(a, lo, hi);
}

// The smallest magnitude that rounds up between lo and hi, by a plain search from a long double estimate.
template <class T>
T definition_threshold(T lo, T hi, grphi::rounding round) {
    const long double guess = round == grphi::rounding::log ? std::sqrt(static_cast<long double>(lo) * hi)
                                                            : (static_cast<long double>(lo) + hi) / 2;
    T t = std::min(static_cast<T>(guess), hi);
    while (!rounds_up(t, lo, hi, round)) t = ulp_up(t);
    while (t > T(0) && rounds_up(ulp_down(t), lo, hi, round)) t = ulp_down(t);
    return t;
}

template <class T, class Base>
struct block_definition {
    const grphi::options& o;
    std::pair<int, int> clip(const grphi::grid<T, Base>& g) const {
        return {o.e_min ? std::clamp(*o.e_min, g.k_lo, g.k_hi) : g.k_lo, o.e_max ? std::clamp(*o.e_max, g.k_lo, g.k_hi) : g.k_hi};
    }
    // Exponent scales: the absmax top of a block with largest magnitude m.
    int absmax_top(T m) const {
        const auto& g = grphi::grid_for<T, Base>(o, 0);
        const auto [lo, hi] = clip(g);
        return std::clamp(m > 0 ? g.exponent(m) : 0, lo, hi);
    }
    // Exponent scales: a weight's exponent and sign in the block of top `top` on the grid of `step`.
    std::pair<int, int> exponent_weight(T w, int top, int step) const {
        const auto& g = grphi::grid_for<T, Base>(o, step);
        const int lo = std::max(clip(g).first, top - (*o.levels - 1));
        const T a = std::fabs(w);
        const bool keep = a != 0 && (o.under == grphi::underflow::clamp || a >= g.flush_of(lo));
        if (!keep) return {lo, 0};
        return {std::clamp(g.exponent(a), lo, top), w < 0 ? -1 : 1};
    }
    // fp16/e4m3 scales: the levels s * level(lo + j) of a block with scale code `code`.
    std::vector<T> scaled_values(int lo, int hi, std::uint16_t code) const {
        const auto& g = grphi::grid_for<T, Base>(o, 0);
        const T s = static_cast<T>(grphi::detail::block_scale_value(o.block_format, code));
        std::vector<T> v;
        for (int k = lo; k <= hi; ++k) v.push_back(s * g.level_of(k));
        return v;
    }
    std::uint16_t absmax_code(T m, int hi) const {
        const T top_level = grphi::grid_for<T, Base>(o, 0).level_of(hi);
        return grphi::detail::block_scale_code(o.block_format, m > 0 ? double(m) / double(top_level) : 1.0);
    }
    // A weight's offset above lo and sign on levels v: one step up per boundary it reaches.
    std::pair<int, int> scaled_weight(T w, const std::vector<T>& v) const {
        const T a = std::fabs(w);
        const bool keep = a != 0 && (o.under == grphi::underflow::clamp || 2 * static_cast<long double>(a) >= v[0]);
        if (!keep) return {0, 0};
        int j = 0;
        for (std::size_t i = 1; i < v.size(); ++i) j += rounds_up(a, v[i - 1], v[i], o.round) ? 1 : 0;
        return {j, w < 0 ? -1 : 1};
    }
};

// Rows whose blocks hold, besides their largest weight, the exact thresholds of the block's own levels (the
// scaled levels for fp16/e4m3, the grid's for exponent scales) and one ulp either side, the flush point,
// zeros and denormals; a row with ±max; a short last block.
template <class T, class Base>
matrix<T> block_stress_input(const grphi::options& o, Eigen::Index cols, std::uint64_t seed, int binades = 0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> unit(0.3, 1.0);
    const block_definition<T, Base> def{o};
    const auto& g = grphi::grid_for<T, Base>(o, 0);
    const Eigen::Index rows = 4;
    const auto size = static_cast<Eigen::Index>(o.block_size);
    matrix<T> W = matrix<T>::Zero(rows, cols);
    const T denormal = std::numeric_limits<T>::denorm_min();
    for (Eigen::Index r = 0; r < rows; ++r) {
        const T row_max = static_cast<T>(std::ldexp(unit(rng), static_cast<int>(rng() % 9) - 6 + binades));
        W(r, 0) = row_max;
        if (r == 3) {  // ±max, a denormal and a zero among tiny weights
            W(r, 0) = std::numeric_limits<T>::max();
            for (Eigen::Index c = 1; c < cols; ++c) {
                const T pool[] = {-std::numeric_limits<T>::max() / 3, denormal, T(0), T(1e-30), -std::numeric_limits<T>::min()};
                W(r, c) = pool[rng() % 5];
            }
            continue;
        }
        // The channel window of fp16/e4m3 scales (the row is the channel when per-channel; else a guess).
        int hi = g.k_lo;
        while (hi < g.k_hi && g.level_of(hi) < row_max) ++hi;
        const int lo = std::max(def.clip(g).first, hi - *o.levels + 1);
        for (Eigen::Index start = 0; start < cols; start += size) {
            const Eigen::Index len = std::min(size, cols - start);
            const T m = start == 0 ? row_max : static_cast<T>(row_max * unit(rng));
            W(r, start) = (rng() & 1) ? m : -m;
            std::vector<T> special;
            if (o.block_format == grphi::block_scale::exponent) {
                const int top = def.absmax_top(m);
                for (int k = top - *o.levels - 1; k <= top; ++k)
                    if (k > g.k_lo && k <= g.k_hi) special.push_back(g.threshold_of(k));
                special.push_back(g.flush_of(std::max(def.clip(g).first, top - (*o.levels - 1))));
            } else {
                const auto v = def.scaled_values(lo, hi, def.absmax_code(m, hi));
                for (std::size_t j = 1; j < v.size(); ++j) special.push_back(definition_threshold(v[j - 1], v[j], o.round));
                special.push_back(v[0] / 2);
                special.push_back(v[0]);
            }
            std::vector<T> pool = {T(0), denormal, T(3) * denormal};
            for (T t : special)
                if (t > 0 && t < m) {
                    pool.push_back(t);
                    pool.push_back(ulp_down(t));
                    if (ulp_up(t) < m) pool.push_back(ulp_up(t));
                }
            for (Eigen::Index i = 1; i < len; ++i) {
                const T v = pool[static_cast<std::size_t>(i <= static_cast<Eigen::Index>(pool.size()) ? i - 1 : rng() % pool.size())];
                W(r, start + i) = (rng() & 1) ? -v : v;
            }
        }
    }
    return W;
}

template <class T, class Base>
void check_blocks_against_definition(const matrix<T>& W, const grphi::options& o, const grphi::packed<T, Base>& p) {
    const block_definition<T, Base> def{o};
    const auto n = static_cast<std::size_t>(W.cols());
    const auto size = static_cast<std::size_t>(o.block_size);
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    const bool absmax = o.search == grphi::scale_search::absmax && !o.fit_scale;
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
        const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t len = std::min(size, n - start), at = static_cast<std::size_t>(r) * per_row + b;
            T m = 0;
            for (std::size_t i = 0; i < len; ++i) m = std::max(m, std::fabs(W(r, static_cast<Eigen::Index>(start + i))));
            std::vector<T> v;
            if (o.block_format == grphi::block_scale::exponent) {
                if (absmax) {
                    CHECK(p.block_top[at] == def.absmax_top(m));
                    CHECK(p.block_steps[at] == 0);
                }
            } else {
                if (absmax) CHECK(p.block_scales[at] == def.absmax_code(m, p.window_hi[ch]));
                v = def.scaled_values(p.window_lo[ch], p.window_hi[ch], p.block_scales[at]);
            }
            for (std::size_t i = start; i < start + len; ++i) {
                const T w = W(r, static_cast<Eigen::Index>(i));
                const std::size_t e = static_cast<std::size_t>(r) * n + i;
                CAPTURE(r);
                CAPTURE(i);
                CAPTURE(w);
                if (o.block_format == grphi::block_scale::exponent) {
                    const auto [k, sign] = def.exponent_weight(w, p.block_top[at], p.block_steps[at]);
                    CHECK(p.exponents[e] == k);
                    CHECK(p.signs[e] == sign);
                } else {
                    const auto [j, sign] = def.scaled_weight(w, v);
                    CHECK(p.exponents[e] == p.window_lo[ch] + j);
                    CHECK(p.signs[e] == sign);
                }
            }
        }
    }
}

template <class T, class Base>
void check_block_paths_against_definition() {
    std::uint64_t seed = 1;
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (auto search : {grphi::scale_search::absmax, grphi::scale_search::mse})
            for (auto round : {grphi::rounding::log, grphi::rounding::linear})
                for (auto under : {grphi::underflow::clamp, grphi::underflow::flush})
                    for (int variant = 0; variant < 3; ++variant)
                        for (int block : {1, 7, 16, 32, 48, 64}) {
                            grphi::options o;
                            o.levels = variant == 2 ? 1 : 8;
                            o.block_size = block;
                            o.block_format = format;
                            o.search = search;
                            o.round = round;
                            o.under = under;
                            o.per_channel = variant != 1;
                            if (variant == 1) {  // a clip window, per tensor, and (exponent scales) fitted steps
                                o.e_min = -40;
                                o.e_max = 1;
                                o.fit_scale = format == grphi::block_scale::exponent && block == 16;
                            }
                            const Eigen::Index cols = 3 * block + block / 2 + 1;
                            const matrix<T> W = block_stress_input<T, Base>(o, cols, seed++);
                            grphi::packed<T, Base> want;
                            {
                                grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
                                want = grphi::quantize<Base>(W, o);
                            }
                            CAPTURE(static_cast<int>(format));
                            CAPTURE(static_cast<int>(search));
                            CAPTURE(static_cast<int>(round));
                            CAPTURE(static_cast<int>(under));
                            CAPTURE(variant);
                            CAPTURE(block);
                            for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
                                grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
                                CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
                                const auto got = grphi::quantize<Base>(W, o);
                                check_same_packed(got, want);
                                check_blocks_against_definition<T, Base>(W, o, got);
                                CHECK(same_bits<T>(grphi::fake_quantize<Base>(W, o), grphi::dequantize(want)));
                            }
                        }
}

}  // namespace

TEST_CASE_TEMPLATE("block-scaled quantize on every path is the exact definition at the levels' thresholds", T, float,
                   double) {
    check_block_paths_against_definition<T, grphi::phi>();
    check_block_paths_against_definition<T, grphi::two>();
}

// The AVX-512 fp16/e4m3 route shares one set of levels among the scales with the same mantissa,
// shifted by the scale's binade; blocks whose shifted levels would leave T's normal range take their own.
// Rows at the ends of T's range (levels there are denormal or near the largest finite), and per-channel
// windows that change from row to row and between calls, must give the scalar route's result.
TEST_CASE_TEMPLATE("fp16/e4m3 blocks at the ends of the range and on changing windows give the exact result on every path", T,
                   float, double) {
    const bool single = std::is_same_v<T, float>;
    const std::vector<int> far = single ? std::vector<int>{-146, -140, -133, -125, -118, 100, 118}
                                        : std::vector<int>{-1070, -1060, -1040, -1020, 1000, 1015};
    std::uint64_t seed = 900;
    for (auto format : {grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (auto round : {grphi::rounding::log, grphi::rounding::linear})
            for (auto under : {grphi::underflow::clamp, grphi::underflow::flush})
                for (int binades : far)
                    for (int block : {7, 32, 64}) {  // a tail-only block and whole blocks of 2 and 4 (float) registers
                        grphi::options o;
                        o.levels = single && block == 7 ? 16 : 8;
                        o.block_size = block;
                        o.block_format = format;
                        o.round = round;
                        o.under = under;
                        const matrix<T> W = block_stress_input<T, grphi::phi>(o, 5 * block + 3, seed++, binades);
                        grphi::packed<T, grphi::phi> want;
                        {
                            grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
                            want = grphi::quantize<grphi::phi>(W, o);
                        }
                        CAPTURE(static_cast<int>(format));
                        CAPTURE(static_cast<int>(round));
                        CAPTURE(static_cast<int>(under));
                        CAPTURE(binades);
                        CAPTURE(block);
                        for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
                            grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
                            CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
                            const auto got = grphi::quantize<grphi::phi>(W, o);
                            check_same_packed(got, want);
                            check_blocks_against_definition<T, grphi::phi>(W, o, got);
                        }
                    }
    // Rows on six windows in turn (more than a thread keeps), quantized with each rounding in turn: every
    // row's levels are those of its own window and rounding.
    std::mt19937 rng(41);
    std::normal_distribution<double> gauss(0.0, 1.0);
    const Eigen::Index rows = 36, cols = 32 * 40 + 9;
    matrix<T> W(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) W(r, c) = static_cast<T>(std::ldexp(gauss(rng), static_cast<int>(r % 6) * 3 - 9));
    for (int pass = 0; pass < 4; ++pass) {
        grphi::options o;
        o.levels = 8;
        o.block_size = 32;
        o.block_format = pass == 3 ? grphi::block_scale::e4m3 : grphi::block_scale::fp16;
        o.round = pass % 2 ? grphi::rounding::linear : grphi::rounding::log;
        grphi::packed<T, grphi::phi> want;
        {
            grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
            want = grphi::quantize<grphi::phi>(W, o);
        }
        CAPTURE(pass);
        for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
            grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
            CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
            check_same_packed(grphi::quantize<grphi::phi>(W, o), want);
        }
    }
}

// Ratios at every scale code of format f, the midpoints between adjacent codes and an ulp either side,
// the special values, and random ratios over 30 binades.
std::vector<double> scale_code_probes(grphi::block_scale f) {
    std::vector<double> values;
    for (unsigned c = 0; c < (f == grphi::block_scale::fp16 ? 65536u : 256u); ++c)
        if (grphi::detail::valid_block_scale_code(f, static_cast<std::uint16_t>(c)))
            values.push_back(grphi::detail::block_scale_value(f, static_cast<std::uint16_t>(c)));
    std::sort(values.begin(), values.end());
    std::vector<double> probes = {0.0, -0.0, -1.0, 2.0, 1.0, 1e-300, 5e-324, std::numeric_limits<double>::quiet_NaN(),
                                  values.front() / 2, values.front() / 4};
    for (std::size_t i = 0; i < values.size(); ++i) {
        probes.push_back(values[i]);
        if (i + 1 < values.size()) {
            const double mid = values[i] / 2 + values[i + 1] / 2;  // exact: adjacent codes are close
            for (double d : {mid, std::nextafter(mid, 0.0), std::nextafter(mid, 2.0)}) probes.push_back(d);
        }
    }
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(0.0, 1.2);
    for (int i = 0; i < 100000; ++i) probes.push_back(std::ldexp(u(rng), -static_cast<int>(rng() % 30)));
    return probes;
}

TEST_CASE("block scale codes from the ratio's bits are block_scale_code's, at every code and midpoint") {
    for (auto f : {grphi::block_scale::fp16, grphi::block_scale::e4m3}) {
        for (double v : scale_code_probes(f)) {
            CAPTURE(v);
            const auto got = grphi::detail::block_scale_nearest(f, v);
            const std::uint16_t want = grphi::detail::block_scale_code(f, v);
            CHECK(got.code == want);
            CHECK(got.value == grphi::detail::block_scale_value(f, want));
        }
    }
}

#if GRPHI_X86_DISPATCH
TEST_CASE_TEMPLATE("AVX-512 block scale codes are block_scale_nearest's of max / top, at every code, midpoint and tail", T,
                   float, double) {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;  // nothing to run on this CPU
    using I = grphi::detail::bits_t<T>;
    for (auto f : {grphi::block_scale::fp16, grphi::block_scale::e4m3}) {
        const auto fields = grphi::detail::code_fields(f);
        std::vector<T> maxima;  // magnitudes: the probes that are not negative or NaN, in T
        for (double v : scale_code_probes(f))
            if (v >= 0) maxima.push_back(static_cast<T>(v));
        maxima.push_back(std::numeric_limits<T>::denorm_min());
        maxima.push_back(std::numeric_limits<T>::max());
        // top 1: the ratio is the maximum itself; the others round the division (and 2^1000 underflows
        // double's smallest ratios to 0).
        for (double top : {1.0, 0.75, 3.0, 1.6180339887498949, 0x1p1000}) {
            CAPTURE(top);
            CAPTURE(static_cast<int>(f));
            std::vector<I> bits(maxima.size());
            for (std::size_t i = 0; i < maxima.size(); ++i) bits[i] = grphi::detail::to_bits(maxima[i]);
            for (std::size_t blocks : {maxima.size(), std::size_t(13), std::size_t(8), std::size_t(1), std::size_t(0)}) {
                std::vector<std::uint16_t> got(blocks + 9, 0xBEEF);
                std::vector<std::int32_t> parts(blocks + 9, 0x7EEF);
                grphi::kernels::avx512::block_scale_codes<T>(bits.data(), blocks, top, fields.mantissa_bits, fields.min_exponent,
                                                             fields.bias, got.data(), (blocks % 2) ? parts.data() : nullptr);
                for (std::size_t i = 0; i < blocks; ++i) {
                    const T m = maxima[i];
                    const std::uint16_t want = grphi::detail::block_scale_nearest(f, m > T(0) ? static_cast<double>(m) / top : 1.0).code;
                    if (got[i] != want) {
                        CAPTURE(m);
                        CHECK(got[i] == want);
                    }
                    // The parts: the code's value as 2^e * (1 + fraction / 1024).
                    const std::int32_t fraction = parts[i] & 1023, e = (parts[i] - fraction) / 1024;
                    if ((blocks % 2) && std::ldexp(1 + fraction / 1024.0, e) != grphi::detail::block_scale_value(f, got[i])) {
                        CAPTURE(m);
                        CAPTURE(parts[i]);
                        CHECK(std::ldexp(1 + fraction / 1024.0, e) == grphi::detail::block_scale_value(f, got[i]));
                    }
                }
                for (std::size_t i = blocks; i < got.size(); ++i) CHECK(got[i] == 0xBEEF);  // nothing past the blocks
                for (std::size_t i = (blocks % 2) ? blocks : 0; i < parts.size(); ++i) CHECK(parts[i] == 0x7EEF);  // nothing else written
            }
        }
    }
}

TEST_CASE("AVX-512 scaled levels are scale * unit and scaled_threshold's, for every window size, code and rounding") {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;  // nothing to run on this CPU
    // Windows of the phi and base-2 grids at the top, the middle and the denormal end of float's range
    // (scaled values there round, flush to denormals, or to zero).
    std::vector<std::vector<float>> units;
    for (double base : {1.6180339887498949, 2.0, 1.0718})
        for (int top : {127, 0, -130, -140})
            for (std::size_t n = 1; n <= 16; ++n) {
                std::vector<float> u;
                for (std::size_t j = 0; j < n; ++j)
                    u.push_back(static_cast<float>(std::pow(base, static_cast<double>(top) * std::log(2.0) / std::log(base) - double(n - 1 - j))));
                units.push_back(u);
            }
    std::mt19937_64 rng(11);
    std::size_t checked = 0;
    for (auto f : {grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (unsigned code = 0; code < (f == grphi::block_scale::fp16 ? 0x3C01u : 0x80u); ++code) {
            if (!grphi::detail::valid_block_scale_code(f, static_cast<std::uint16_t>(code))) continue;
            if (f == grphi::block_scale::fp16 && code % 7 != 0 && code > 0x400 && code < 0x3B00) continue;  // a sample of the middle
            const float scale = static_cast<float>(grphi::detail::block_scale_value(f, static_cast<std::uint16_t>(code)));
            const auto& unit = units[rng() % units.size()];
            for (auto round : {grphi::rounding::log, grphi::rounding::linear}) {
                const std::size_t n = unit.size();
                std::vector<float> value(17, -1.0f), threshold(17, -1.0f);
                grphi::kernels::avx512::scaled_levels(unit.data(), n, scale, round == grphi::rounding::log, value.data(), threshold.data());
                CAPTURE(code);
                CAPTURE(n);
                CAPTURE(static_cast<int>(round));
                bool same = threshold[0] == 0.0f && value[n] == -1.0f && threshold[n] == -1.0f;  // nothing past n
                for (std::size_t j = 0; j < n; ++j) same = same && grphi::detail::to_bits(value[j]) == grphi::detail::to_bits(scale * unit[j]);
                for (std::size_t j = 1; j < n; ++j)
                    same = same && grphi::detail::to_bits(threshold[j]) ==
                                       grphi::detail::to_bits(grphi::detail::scaled_threshold(value[j - 1], value[j], round));
                CHECK(same);
                ++checked;
            }
        }
    CHECK(checked > 4000);
}

TEST_CASE_TEMPLATE("AVX-512 block maxima are every block's largest magnitude, at every block size and row tail", T, float,
                   double) {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;  // nothing to run on this CPU
    using I = grphi::detail::bits_t<T>;
    std::mt19937 rng(29);
    std::normal_distribution<double> gauss(0.0, 1.0);
    const T specials[] = {T(0), -T(0), std::numeric_limits<T>::denorm_min(), -std::numeric_limits<T>::min(),
                          std::numeric_limits<T>::max(), -std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN()};
    for (std::size_t n : {1, 7, 15, 16, 17, 31, 32, 33, 255, 256, 257, 511, 1000, 4099})
        for (std::size_t size : {8, 16, 24, 32, 48, 64, 128, 256})
            for (int special = -1; special < 7; ++special) {
                std::vector<T> w(n);
                for (auto& x : w) x = static_cast<T>(gauss(rng));
                if (special >= 0) w[n / 2] = specials[special];
                const std::size_t blocks = (n + size - 1) / size;
                std::vector<I> got(blocks + 64 / sizeof(T), I(12345));
                const I row = grphi::kernels::avx512::block_maxima(w.data(), n, size, got.data());
                I want_row = 0;
                bool same = true;
                for (std::size_t b = 0; b < blocks; ++b) {
                    I want = 0;
                    for (std::size_t i = b * size; i < std::min(n, (b + 1) * size); ++i)
                        want = std::max(want, static_cast<I>(grphi::detail::to_bits(w[i]) & std::numeric_limits<I>::max()));
                    same = same && got[b] == want;
                    want_row = std::max(want_row, want);
                }
                CAPTURE(n);
                CAPTURE(size);
                CAPTURE(special);
                CHECK(same);
                CHECK(row == want_row);
            }
}
#endif

#if GRPHI_X86_DISPATCH
// The comparison per threshold is always_inline: a caller compiled without -mavx512f needs this AVX-512 frame around it.
template <typename T>
GRPHI_TARGET_AVX512 void scaled_block_by_comparison(const T* w, std::size_t len, const T* threshold, std::size_t n,
                                                    grphi::detail::bits_t<T> bottom, bool flush, int origin,
                                                    std::int16_t* exponent, std::int8_t* sign) {
    grphi::kernels::avx512::scaled_block_lanes<T, -1>(w, len, threshold, n, bottom, flush, origin, exponent, sign);
}

TEST_CASE_TEMPLATE("AVX-512 searched scaled blocks equal the comparison per threshold, for every window, tie and tail", T,
                   float, double) {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;  // nothing to run on this CPU
    using I = grphi::detail::bits_t<T>;
    std::mt19937 rng(31);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::size_t checked = 0;
    for (std::size_t n = 1; n <= 20; ++n)
        for (int ties = 0; ties < 3; ++ties)
            for (std::size_t len : {1, 7, 8, 15, 16, 17, 33})
                for (bool flush : {false, true}) {
                    // Ascending thresholds; ties > 0 repeats some (a collapsed window), threshold[0] is never read.
                    std::vector<T> threshold(n);
                    double t = 0.01;
                    for (std::size_t j = 0; j < n; ++j) {
                        if (!(ties > 0 && j > 1 && rng() % (ties == 1 ? 4 : 2) == 0)) t *= 1.0 + u(rng);
                        threshold[j] = static_cast<T>(t);
                    }
                    // Weights at each threshold, an ulp either side, zeros, denormals and beyond the top.
                    std::vector<T> w(len);
                    for (std::size_t i = 0; i < len; ++i) {
                        const T at = threshold[rng() % n];
                        const T choices[] = {at, std::nextafter(at, T(0)), std::nextafter(at, T(10)), T(0), -T(0),
                                             std::numeric_limits<T>::denorm_min(), static_cast<T>(threshold[n - 1] * 3),
                                             static_cast<T>(u(rng) * t)};
                        const T x = choices[rng() % 8];
                        w[i] = rng() % 2 ? -x : x;
                    }
                    const T lowest = static_cast<T>(threshold[0] / 2);  // the lowest level: flush keeps |w| >= half of it
                    const I bottom = grphi::detail::to_bits(lowest);
                    std::vector<std::int16_t> want_e(len), got_e(len);
                    std::vector<std::int8_t> want_s(len), got_s(len);
                    scaled_block_by_comparison<T>(w.data(), len, threshold.data(), n, bottom, flush, -7, want_e.data(),
                                                  want_s.data());
                    grphi::kernels::avx512::scaled_block<T>(w.data(), len, threshold.data(), n, bottom, flush, -7, got_e.data(),
                                                            got_s.data());
                    CAPTURE(n);
                    CAPTURE(ties);
                    CAPTURE(len);
                    CAPTURE(flush);
                    CHECK(got_e == want_e);
                    CHECK(got_s == want_s);
                    // The reference itself: exponent -7 + the thresholds at or below |w|, for a kept weight.
                    bool defined = true;
                    for (std::size_t i = 0; i < len; ++i) {
                        const T mag = std::fabs(w[i]);
                        const bool kept = mag != 0 && (!flush || mag + mag >= lowest);
                        int k = 0;
                        for (std::size_t j = 1; j < n; ++j) k += mag >= threshold[j];
                        defined = defined && want_e[i] == (kept ? -7 + k : -7) && want_s[i] == (kept ? (w[i] < 0 ? -1 : 1) : 0);
                    }
                    CHECK(defined);
                    ++checked;
                }
    CHECK(checked == 20 * 3 * 7 * 2);
}
#endif

TEST_CASE_TEMPLATE("fp16 block scales over thousands of distinct codes give the scalar result on every path (the level cache evicts)",
                   T, float, double) {
    std::mt19937 rng(37);
    std::normal_distribution<double> gauss(0.0, 1.0);
    std::uniform_real_distribution<double> spread(-12.0, 12.0);
    for (int levels : {8, 16})
        for (int block : {16, 32}) {
            grphi::options o;
            o.levels = levels;
            o.block_size = block;
            o.block_format = grphi::block_scale::fp16;
            const Eigen::Index rows = 48, cols = 150 * block + 5;
            matrix<T> W(rows, cols);
            for (Eigen::Index r = 0; r < rows; ++r)
                for (Eigen::Index b = 0; b < cols; b += block) {
                    const double scale = std::exp2(spread(rng));  // a fresh scale code for almost every block
                    for (Eigen::Index c = b; c < std::min<Eigen::Index>(cols, b + block); ++c)
                        W(r, c) = static_cast<T>(scale * gauss(rng));
                }
            grphi::packed<T, grphi::phi> want;
            {
                grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
                want = grphi::quantize<grphi::phi>(W, o);
            }
            CAPTURE(levels);
            CAPTURE(block);
            for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
                grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
                CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
                check_same_packed(grphi::quantize<grphi::phi>(W, o), want);
            }
        }
}
