// k-means weight sharing: every weight becomes one of k shared values (a codebook), stored as an index.
//
// 1-D k-means per tensor (or per channel): k-means++ seeding from a fixed seed, then Lloyd iterations
// until the assignment stops changing. In 1-D the clusters of sorted data are contiguous ranges split
// at the midpoints of sorted centres, so one Lloyd step is k binary searches over the sorted weights
// plus range sums, not a pass over every weight.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/channels.hpp"
#include "../core/base.hpp"
#include "uniform.hpp"  // detail::baseline_evaluated_t, check_finite, prepare_output

namespace grphi {

struct kmeans_options {
    int k = 16;                                   // codebook size, [2, 65536]
    bool per_channel = false;                     // one codebook per row instead of one per tensor
    std::uint64_t seed = 0x6772706869ULL;         // k-means++ draws ("grphi"); same seed, same codebook
    int max_iterations = 1000;                    // Lloyd iterations cap
    double tolerance = 0.0;                       // stop once an iteration gains less than this fraction

    // Throws std::invalid_argument naming the offending option.
    void validate() const {
        if (k < 2 || k > 65536)
            throw std::invalid_argument("grphi::kmeans_options: k=" + std::to_string(k) + " must be in [2, 65536]");
        if (max_iterations < 0)
            throw std::invalid_argument("grphi::kmeans_options: max_iterations=" + std::to_string(max_iterations) +
                                        " must be >= 0");
        if (!(tolerance >= 0.0) || !std::isfinite(tolerance))
            throw std::invalid_argument("grphi::kmeans_options: tolerance must be finite and >= 0");
    }
};

// Codebook + indices; IndexT is std::uint8_t (k <= 256) or std::uint16_t (k <= 65536).
template <class T, class IndexT = std::uint16_t>
struct kmeans_packed {
    using scalar_type = T;
    using index_type = IndexT;

    Eigen::Index rows = 0;
    Eigen::Index cols = 0;
    kmeans_options opts;
    std::vector<T> codebook;           // channels*k; each channel's centres ascending. A channel with
                                       // fewer than k distinct weights repeats its largest centre.
    std::vector<IndexT> indices;       // rows*cols, row-major
    std::vector<double> distortion;    // mean squared error per weight: [0] after seeding, then per iteration
    int iterations = 0;                // Lloyd iterations run (the slowest channel when per channel)
    bool converged = false;            // every channel reached a fixed point (or the tolerance)

    Eigen::Index channels() const { return static_cast<Eigen::Index>(channel_count(opts.per_channel, rows)); }
    Eigen::Index channel_of_row(Eigen::Index r) const { return static_cast<Eigen::Index>(grphi::channel_of_row(opts.per_channel, r)); }
    std::size_t size() const { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); }
    T value(Eigen::Index r, Eigen::Index c) const {
        const std::size_t i = static_cast<std::size_t>(r) * static_cast<std::size_t>(cols) + static_cast<std::size_t>(c);
        return codebook[static_cast<std::size_t>(channel_of_row(r)) * static_cast<std::size_t>(opts.k) + indices[i]];
    }
};

namespace detail {

// A uniform double in [0, 1) from the top 53 bits: identical on every standard library, unlike
// std::uniform_real_distribution whose algorithm is implementation-defined.
inline double unit_draw(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Squared distance of x to the nearest of the sorted centres; `next` is the first centre > x.
template <class T>
double nearest_squared_distance(T x, const std::vector<T>& centres, std::size_t next) {
    double best = std::numeric_limits<double>::infinity();
    if (next < centres.size()) {
        const double d = static_cast<double>(centres[next]) - static_cast<double>(x);
        best = d * d;
    }
    if (next > 0) {
        const double d = static_cast<double>(x) - static_cast<double>(centres[next - 1]);
        best = std::min(best, d * d);
    }
    return best;
}

// k-means++ over sorted values: each new centre is drawn with probability proportional to the squared
// distance to the nearest chosen centre. The squared distances are summed per block of the sorted
// data; adding a centre only changes the blocks between its two neighbours.
template <class T>
std::vector<T> kmeans_plus_plus(const std::vector<T>& xs, std::size_t k, std::mt19937_64& rng) {
    const std::size_t n = xs.size();
    std::vector<T> centres;
    if (n == 0) return centres;
    const std::size_t first = std::min(n - 1, static_cast<std::size_t>(unit_draw(rng) * static_cast<double>(n)));
    centres.push_back(xs[first]);

    const std::size_t block = std::max<std::size_t>(64, static_cast<std::size_t>(std::sqrt(static_cast<double>(n))));
    const std::size_t blocks = (n + block - 1) / block;
    std::vector<double> mass(blocks, 0.0);
    auto recompute = [&](std::size_t b) {
        const std::size_t lo = b * block, hi = std::min(n, lo + block);
        std::size_t next = static_cast<std::size_t>(std::upper_bound(centres.begin(), centres.end(), xs[lo]) - centres.begin());
        double sum = 0.0;
        for (std::size_t i = lo; i < hi; ++i) {
            while (next < centres.size() && centres[next] <= xs[i]) ++next;
            sum += nearest_squared_distance(xs[i], centres, next);
        }
        mass[b] = sum;
    };
    for (std::size_t b = 0; b < blocks; ++b) recompute(b);

    while (centres.size() < k) {
        double total = 0.0;
        for (double m : mass) total += m;
        if (!(total > 0.0)) break;  // every weight sits on a centre: fewer distinct values than k
        const double target = unit_draw(rng) * total;

        // The block whose running mass passes the target; rounding can miss, so fall back to the last heavy one.
        std::size_t chosen_block = blocks;
        double before = 0.0;
        for (std::size_t b = 0; b < blocks; ++b) {
            if (mass[b] > 0.0) chosen_block = b;
            if (before + mass[b] > target && mass[b] > 0.0) break;
            before += mass[b];
        }
        const std::size_t lo = chosen_block * block, hi = std::min(n, lo + block);
        std::size_t next = static_cast<std::size_t>(std::upper_bound(centres.begin(), centres.end(), xs[lo]) - centres.begin());
        std::size_t pick = n;
        double running = before;
        for (std::size_t i = lo; i < hi; ++i) {
            while (next < centres.size() && centres[next] <= xs[i]) ++next;
            const double d2 = nearest_squared_distance(xs[i], centres, next);
            if (d2 > 0.0) {
                pick = i;  // a weight already on a centre is never picked again
                running += d2;
                if (running > target) break;
            }
        }
        if (pick == n) break;  // unreachable while mass[chosen_block] > 0

        const T x = xs[pick];
        const auto pos = std::upper_bound(centres.begin(), centres.end(), x);
        const bool has_left = pos != centres.begin(), has_right = pos != centres.end();
        const T left = has_left ? *(pos - 1) : T(0), right = has_right ? *pos : T(0);
        centres.insert(pos, x);
        // Only weights strictly between the new centre's neighbours can have moved closer.
        const std::size_t from = has_left ? static_cast<std::size_t>(std::upper_bound(xs.begin(), xs.end(), left) - xs.begin()) : 0;
        const std::size_t to = has_right ? static_cast<std::size_t>(std::lower_bound(xs.begin(), xs.end(), right) - xs.begin()) : n;
        if (from < to)
            for (std::size_t b = from / block; b <= (to - 1) / block; ++b) recompute(b);
    }
    return centres;
}

// Sums of x and x^2 over any range of sorted values: long-double prefix sums every `stride` values.
template <class T>
class range_sums {
public:
    explicit range_sums(const std::vector<T>& xs) : xs_(xs) {
        const std::size_t blocks = xs.size() / stride + 1;
        s1_.resize(blocks + 1, 0.0L);
        s2_.resize(blocks + 1, 0.0L);
        long double a = 0.0L, b = 0.0L;
        for (std::size_t i = 0; i < xs.size(); ++i) {
            if (i % stride == 0) {
                s1_[i / stride] = a;
                s2_[i / stride] = b;
            }
            const long double x = xs[i];
            a += x;
            b += x * x;
        }
        if (xs.size() % stride == 0) {
            s1_[xs.size() / stride] = a;
            s2_[xs.size() / stride] = b;
        }
    }
    // Sums over [lo, hi).
    void sums(std::size_t lo, std::size_t hi, long double& s1, long double& s2) const {
        long double a1, a2, b1, b2;
        prefix(lo, a1, a2);
        prefix(hi, b1, b2);
        s1 = b1 - a1;
        s2 = b2 - a2;
    }

private:
    static constexpr std::size_t stride = 64;
    void prefix(std::size_t i, long double& s1, long double& s2) const {
        const std::size_t b = i / stride;
        s1 = s1_[b];
        s2 = s2_[b];
        for (std::size_t j = b * stride; j < i; ++j) {
            const long double x = xs_[j];
            s1 += x;
            s2 += x * x;
        }
    }
    const std::vector<T>& xs_;
    std::vector<long double> s1_, s2_;
};

// Nearest-centre rule shared by Lloyd and the final indices: x goes to centre j when
// mid(j-1) < x <= mid(j), mid(j) = (c_j + c_{j+1}) / 2 in long double (ties go to the lower centre).
template <class T>
std::vector<long double> midpoints(const std::vector<T>& centres) {
    std::vector<long double> mids;
    for (std::size_t j = 0; j + 1 < centres.size(); ++j)
        mids.push_back((static_cast<long double>(centres[j]) + static_cast<long double>(centres[j + 1])) / 2.0L);
    return mids;
}

template <class T>
struct lloyd_result {
    std::vector<T> centres;
    std::vector<long double> distortion;  // summed squared error per step
    int iterations = 0;
    bool converged = false;
};

// Lloyd iterations over sorted values from the given sorted, distinct seeds.
template <class T>
lloyd_result<T> lloyd(const std::vector<T>& xs, std::vector<T> centres, int max_iterations, double tolerance) {
    lloyd_result<T> out;
    const std::size_t n = xs.size(), m = centres.size();
    if (n == 0 || m == 0) {
        out.centres = std::move(centres);
        out.distortion.push_back(0.0L);
        out.converged = true;
        return out;
    }
    const range_sums<T> sums(xs);
    // Cluster j holds xs[bounds[j], bounds[j+1]).
    auto assign = [&](const std::vector<T>& c) {
        std::vector<std::size_t> bounds(m + 1, 0);
        const std::vector<long double> mids = midpoints(c);
        for (std::size_t j = 0; j < mids.size(); ++j) {
            const long double mid = mids[j];
            bounds[j + 1] = static_cast<std::size_t>(
                std::upper_bound(xs.begin(), xs.end(), mid, [](long double v, T x) { return v < static_cast<long double>(x); }) -
                xs.begin());
        }
        bounds[m] = n;
        return bounds;
    };
    auto cost = [&](const std::vector<std::size_t>& bounds, const std::vector<T>& c) {
        long double total = 0.0L;
        for (std::size_t j = 0; j < m; ++j) {
            const std::size_t lo = bounds[j], hi = bounds[j + 1];
            if (lo >= hi) continue;
            const long double cj = c[j];
            if (xs[lo] == xs[hi - 1]) {  // one distinct value: exact, no cancellation
                const long double d = static_cast<long double>(xs[lo]) - cj;
                total += d * d * static_cast<long double>(hi - lo);
                continue;
            }
            long double s1, s2;
            sums.sums(lo, hi, s1, s2);
            total += std::max(0.0L, s2 - 2.0L * cj * s1 + static_cast<long double>(hi - lo) * cj * cj);
        }
        return total;
    };
    auto means = [&](const std::vector<std::size_t>& bounds, const std::vector<T>& c) {
        std::vector<T> next = c;  // an empty cluster keeps its centre
        for (std::size_t j = 0; j < m; ++j) {
            const std::size_t lo = bounds[j], hi = bounds[j + 1];
            if (lo >= hi) continue;
            if (xs[lo] == xs[hi - 1]) {
                next[j] = xs[lo];
                continue;
            }
            long double s1, s2;
            sums.sums(lo, hi, s1, s2);
            const T mean = static_cast<T>(s1 / static_cast<long double>(hi - lo));
            next[j] = std::min(std::max(mean, xs[lo]), xs[hi - 1]);  // rounding never leaves the cluster
        }
        std::sort(next.begin(), next.end());
        return next;
    };

    std::vector<std::size_t> bounds = assign(centres);
    long double current = cost(bounds, centres);
    out.distortion.push_back(current);
    while (out.iterations < max_iterations) {
        std::vector<T> next = means(bounds, centres);
        if (next == centres) {
            out.converged = true;
            break;
        }
        std::vector<std::size_t> next_bounds = assign(next);
        const long double next_cost = cost(next_bounds, next);
        // In exact arithmetic a Lloyd step never increases the cost; a rise is rounding at the fixed point.
        if (next_cost > current) {
            out.converged = true;
            break;
        }
        ++out.iterations;
        const bool same_assignment = next_bounds == bounds;
        const bool small_gain = current - next_cost <= static_cast<long double>(tolerance) * current;
        centres = std::move(next);
        bounds = std::move(next_bounds);
        current = next_cost;
        out.distortion.push_back(current);
        if (same_assignment || small_gain) {
            out.converged = true;
            break;
        }
    }
    out.centres = std::move(centres);
    return out;
}

}  // namespace detail

// W: any Eigen matrix, Map or expression of float or double. NaN/Inf throws std::domain_error.
template <class IndexT = std::uint16_t, class Derived>
kmeans_packed<typename Derived::Scalar, IndexT> quantize_kmeans(const Eigen::MatrixBase<Derived>& W,
                                                                const kmeans_options& opts = {}) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    static_assert(std::is_same_v<IndexT, std::uint8_t> || std::is_same_v<IndexT, std::uint16_t>,
                  "grphi: k-means indices are std::uint8_t or std::uint16_t");
    opts.validate();
    if (static_cast<long long>(opts.k) - 1 > static_cast<long long>(std::numeric_limits<IndexT>::max()))
        throw std::invalid_argument("grphi::quantize_kmeans: k=" + std::to_string(opts.k) +
                                    " does not fit the index type (uint8 holds k <= 256)");
    const detail::baseline_evaluated_t<Derived> Wn(W.derived());
    detail::check_finite_baseline(Wn, "grphi::quantize_kmeans");

    kmeans_packed<T, IndexT> p;
    p.rows = Wn.rows();
    p.cols = Wn.cols();
    p.opts = opts;
    const std::size_t k = static_cast<std::size_t>(opts.k);
    const Eigen::Index channels = p.channels();
    p.codebook.assign(static_cast<std::size_t>(channels) * k, T(0));
    p.indices.assign(p.size(), IndexT(0));
    p.converged = true;
    const Eigen::Index rows_per_channel = opts.per_channel ? 1 : p.rows;
    std::vector<std::vector<long double>> histories;
    histories.reserve(static_cast<std::size_t>(channels));

    for (Eigen::Index ch = 0; ch < channels; ++ch) {
        const Eigen::Index r0 = ch * rows_per_channel;
        std::vector<T> xs;
        xs.reserve(static_cast<std::size_t>(rows_per_channel * p.cols));
        for (Eigen::Index r = r0; r < r0 + rows_per_channel; ++r)
            for (Eigen::Index c = 0; c < p.cols; ++c) xs.push_back(Wn(r, c) + T(0));  // -0 -> +0: one zero
        std::sort(xs.begin(), xs.end());

        // One stream per channel, so a channel's codebook does not depend on the others.
        std::mt19937_64 rng(opts.seed ^ (0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(ch)));
        detail::lloyd_result<T> fit =
            detail::lloyd(xs, detail::kmeans_plus_plus(xs, k, rng), opts.max_iterations, opts.tolerance);
        p.iterations = std::max(p.iterations, fit.iterations);
        p.converged = p.converged && fit.converged;
        histories.push_back(std::move(fit.distortion));

        const std::vector<long double> mids = detail::midpoints(fit.centres);
        T* book = p.codebook.data() + static_cast<std::size_t>(ch) * k;
        std::copy(fit.centres.begin(), fit.centres.end(), book);
        std::fill(book + fit.centres.size(), book + k, fit.centres.empty() ? T(0) : fit.centres.back());
        for (Eigen::Index r = r0; r < r0 + rows_per_channel; ++r)
            for (Eigen::Index c = 0; c < p.cols; ++c) {
                const long double x = static_cast<long double>(Wn(r, c));
                p.indices[static_cast<std::size_t>(r * p.cols + c)] =
                    static_cast<IndexT>(std::lower_bound(mids.begin(), mids.end(), x) - mids.begin());
            }
    }

    // The tensor's distortion at step t: each channel at its own step t, or its last one if it stopped.
    std::size_t steps = 0;
    for (const auto& h : histories) steps = std::max(steps, h.size());
    const long double count = p.size() > 0 ? static_cast<long double>(p.size()) : 1.0L;
    for (std::size_t t = 0; t < steps; ++t) {
        long double total = 0.0L;
        for (const auto& h : histories) total += h[std::min(t, h.size() - 1)];
        p.distortion.push_back(static_cast<double>(total / count));
    }
    if (p.distortion.empty()) p.distortion.push_back(0.0);  // no channel at all: nothing to lose
    return p;
}

template <class T, class IndexT, class Out>
void dequantize(const kmeans_packed<T, IndexT>& p, Out&& out) {
    const std::size_t k = static_cast<std::size_t>(p.opts.k);
    if (p.indices.size() != p.size() || p.codebook.size() != static_cast<std::size_t>(p.channels()) * k)
        throw std::invalid_argument("grphi::dequantize(kmeans_packed): codebook/indices sizes do not match the shape");
    for (IndexT i : p.indices)
        if (static_cast<std::size_t>(i) >= k)
            throw std::invalid_argument("grphi::dequantize(kmeans_packed): index " + std::to_string(i) +
                                        " is outside the codebook of " + std::to_string(k));
    detail::prepare_baseline_output(out, p.rows, p.cols, "grphi::dequantize(kmeans_packed)");
    for (Eigen::Index r = 0; r < p.rows; ++r)
        for (Eigen::Index c = 0; c < p.cols; ++c)
            out(r, c) = static_cast<typename std::decay_t<Out>::Scalar>(p.value(r, c));
}

template <class T, class IndexT>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> dequantize(const kmeans_packed<T, IndexT>& p) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(p.rows, p.cols);
    dequantize(p, out);
    return out;
}

// The QAT forward (re-clusters on every call, so it is meant for occasional refreshes, not every step).
template <class Derived, class Out>
void fake_quantize_kmeans(const Eigen::MatrixBase<Derived>& W, const kmeans_options& opts, Out&& out) {
    const auto p = quantize_kmeans<std::uint16_t>(W, opts);
    dequantize(p, out);
}

}  // namespace grphi
