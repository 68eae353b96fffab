// weights -> exponents: quantize, dequantize and fake_quantize on Eigen matrices, maps and expressions.
// fake_quantize(W) == dequantize(quantize(W)) bit for bit: both read the same level tables.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "base.hpp"
#include "../detail/block_scales.hpp"
#include "levels.hpp"
#include "options.hpp"
#include "packed.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/quantize_avx512.hpp"
#include "../kernels/quantize_scalar.hpp"
#include "../kernels/quantize_xsimd.hpp"
#include "../kernels/quantize_tables.hpp"

// GCC 12's own AVX-512 intrinsics (their self-initialized _mm512_undefined_* operands) raise bogus
// -W(maybe-)uninitialized once inlined here under -march=native; nothing in this file is uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace grphi {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {

// Read-only row-major view; column-major or expression inputs are evaluated once into it.
template <class T>
using row_view = Eigen::Ref<const row_matrix<T>, 0, Eigen::OuterStride<>>;

// Per-row results before packing: exponent (clamped into the window), sign, clip flag.
template <class T>
struct row_scratch {
    std::vector<bits_t<T>> k, s;
    std::vector<std::uint8_t> clipped;
    void resize(std::size_t n) {
        k.resize(n);
        s.resize(n);
        clipped.resize(n);
    }

    // The register tables of channel state c (null when c does not fit them), built once for a run of
    // rows that share it: per-channel rows under a common clip window all do. One quantizer per scratch.
    template <class Quantizer>
    const window_tables<T>* tables_for(const Quantizer& q, const channel_state& c) {
        if (!tables_known || c.lo != tables_state.lo || c.hi != tables_state.hi || c.step != tables_state.step) {
            tables_fit = q.tables_for(c, tables);
            tables_state = c;
            tables_known = true;
        }
        return tables_fit ? &tables : nullptr;
    }

private:
    window_tables<T> tables;
    channel_state tables_state;
    bool tables_known = false, tables_fit = false;
};

// The absolute clip [e_min, e_max] intersected with the natural range (nearest end when disjoint).
template <class T, class Base>
std::pair<int, int> clip_bounds(const options& o, const grid<T, Base>& g) {
    const int lo = o.e_min ? std::clamp(*o.e_min, g.k_lo, g.k_hi) : g.k_lo;
    const int hi = o.e_max ? std::clamp(*o.e_max, g.k_lo, g.k_hi) : g.k_hi;
    return {lo, hi};
}

// Window of a channel (or block) on grid g given its largest magnitude (0 for an all-zero channel);
// top_drop lowers the top below the largest magnitude's exponent (the scale search's clipping candidates).
template <class T, class Base>
channel_state window_for(const options& o, const grid<T, Base>& g, T max_magnitude, int top_drop = 0) {
    auto [lo, hi] = clip_bounds(o, g);
    if (o.levels) {
        const int top = std::clamp(max_magnitude > 0 ? g.exponent(max_magnitude) - top_drop : 0, lo, hi);
        lo = std::max(lo, top - (*o.levels - 1));
        hi = top;
    }
    return {lo, hi, g.step};
}

// Whether the row kernels take their AVX-512 route (kernels/quantize_avx512.hpp), chosen at run time;
// otherwise the build's vectors (kernels/quantize_xsimd.hpp), or under a scalar cap the reference
// (kernels/quantize_scalar.hpp) every other route is tested against.
inline bool avx512_rows() {
#if GRPHI_X86_DISPATCH
    return kernels::active_isa() == kernels::isa::avx512;
#else
    return false;
#endif
}

template <class T, class Base>
class quantizer {
public:
    using I = bits_t<T>;

    explicit quantizer(const options& o) : opts_((o.validate(), o)), cells_(cell_table_for<T, Base>(o)) {}

    const options& opts() const { return opts_; }
    const cell_table<T, Base>& cells() const { return cells_; }
    const grid<T, Base>& grid_of(const channel_state& c) const {
        return c.step == 0 ? *cells_.source : grid_for<T, Base>(opts_, c.step);
    }

    // A channel's register tables on the unscaled grid; false when its window or cells are too wide,
    // or its bounds are denormal (those take the gather route with the exact denormal search).
    bool tables_for(const channel_state& c, window_tables<T>& t) const {
        using table = cell_table<T, Base>;
        const auto& g = *cells_.source;
        if (c.step != 0 || c.lo <= g.k_lo || c.lo > c.hi) return false;
        t.low = to_bits(g.threshold_of(c.lo));
        t.high = c.hi < g.k_hi ? I(to_bits(g.threshold_of(c.hi + 1)) - 1) : I(table::inf_bits - 1);
        if (t.low < table::min_normal_bits || t.high < t.low) return false;
        const I first = t.low >> cells_.shift, last = t.high >> cells_.shift;
        if (last - first >= I(window_tables<T>::entries)) return false;
        t.keep_from = std::max(flush_bits(c), I(1));
        t.lo = I(c.lo);
        for (I cell = first; cell <= last; ++cell) {
            const auto i = static_cast<std::size_t>(cell);
            const auto at = static_cast<std::size_t>(cell & I(window_tables<T>::entries - 1));
            const I k = cells_.base_k[i];
            t.threshold[at] = cells_.threshold_bits[i];
            t.base[at] = k;
            t.level_below[at] = to_bits(g.level_of(static_cast<int>(k)));
            t.level_above[at] = k < g.k_hi ? to_bits(g.level_of(static_cast<int>(k) + 1)) : I(0);
        }
        return true;
    }


    // Exponents, signs and clip flags of one row: step 0 on the best row kernel this CPU runs (AVX-512
    // register tables, the build's vectors, or the scalar reference); otherwise the exact search.
    void eval_row(const T* w, std::size_t n, const channel_state& c, row_scratch<T>& out, bool want_clipped = true) const {
        std::uint8_t* clipped = want_clipped ? out.clipped.data() : nullptr;
#if GRPHI_X86_DISPATCH
        window_tables<T> t;
        if (avx512_rows() && tables_for(c, t)) {
            kernels::avx512::eval_row(w, n, t, cells_.shift, out.k.data(), out.s.data(), clipped);
            return;
        }
#endif
        if (c.step != 0)
            eval_row_search(w, n, c, out.k.data(), out.s.data(), out.clipped.data());
        else if (kernels::baseline_vectors_allowed())
            kernels::baseline::eval_row(cells_, c.lo, c.hi, flush_bits(c), w, n, out.k.data(), out.s.data(), clipped);
        else
            kernels::scalar::eval_row(cells_, c.lo, c.hi, flush_bits(c), w, n, out.k.data(), out.s.data(), clipped);
    }

    // Shares one exponent per block of a row: round-half-even mean over the block's nonzero members.
    void cluster_row(std::size_t n, const channel_state& c, const row_scratch<T>& in, I* block_k) const {
        const auto size = static_cast<std::size_t>(opts_.cluster_size);
        // Block sums fit 32 bits while size * 32767 does: branch-free loops the compiler vectorizes.
        if (size <= (std::size_t(1) << 16))
            cluster_row_with<std::int32_t>(n, c, in, size, block_k);
        else
            cluster_row_with<long long>(n, c, in, size, block_k);
    }
    template <class Sum>
    void cluster_row_with(std::size_t n, const channel_state& c, const row_scratch<T>& in, std::size_t size,
                          I* block_k) const {
        const I* k = in.k.data();
        const I* s = in.s.data();
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t end = std::min(n, start + size);
            Sum sum = 0, count = 0;
            for (std::size_t i = start; i < end; ++i) {
                const Sum member = s[i] != 0 ? Sum(1) : Sum(0);
                sum += member * Sum(k[i]);
                count += member;
            }
            block_k[b] = count == 0 ? I(c.lo) : I(round_half_even_mean(sum, count));
        }
    }

    // Reconstruction of a row from exponents (per weight, or per block with block_size > 1) and signs.
    void compose_row(std::size_t n, const channel_state& c, const I* k, std::size_t block_size, const I* s,
                     T* out) const {
        const auto& g = grid_of(c);
        // Block by block: one level lookup per block, no division per weight.
        for (std::size_t start = 0, b = 0; start < n; start += block_size, ++b) {
            const T v = g.level_of(static_cast<int>(k[b]));
            // s in {-1, 0, 1} and v finite and positive: the product is exactly v, -v or +0.
            for (std::size_t i = start, end = std::min(n, start + block_size); i < end; ++i)
                out[i] = static_cast<T>(s[i]) * v;
        }
    }

    // The same from the packed int16 exponents and int8 signs (validated: inside the window, in {-1, 0, 1}).
    void compose_row_packed(std::size_t n, const channel_state& c, const std::int16_t* k, std::size_t block_size,
                            const std::int8_t* s, T* out) const {
        const auto& g = grid_of(c);
        auto value = [&](std::size_t i, int exponent) {
            const T v = g.level[static_cast<std::size_t>(exponent - g.k_lo)];
            return s[i] > 0 ? v : (s[i] < 0 ? -v : T(0));
        };
        if (block_size == 1) {
            for (std::size_t i = 0; i < n; ++i) out[i] = value(i, k[i]);
        } else {
            for (std::size_t start = 0, b = 0; start < n; start += block_size, ++b)
                for (std::size_t i = start, end = std::min(n, start + block_size); i < end; ++i) out[i] = value(i, k[b]);
        }
    }

    // Fake quantization of an unclustered step-0 row on the build's vectors or the scalar reference.
    void fake_row_table(const T* w, std::size_t n, const channel_state& c, T* out) const {
        if (kernels::baseline_vectors_allowed())
            kernels::baseline::fake_row(cells_, c.lo, c.hi, flush_bits(c), w, n, out);
        else
            kernels::scalar::fake_row(cells_, c.lo, c.hi, flush_bits(c), w, n, out);
    }

    // Largest magnitude of a row as bits (>= inf_bits means the row holds NaN or Inf).
    static I row_max_bits(const T* w, std::size_t n) {
        return kernels::baseline_vectors_allowed() ? kernels::baseline::row_max_bits(w, n) : kernels::scalar::row_max_bits(w, n);
    }

    // Int is 32-bit where the sums allow it: its division is several times faster than 64-bit.
    template <class Int>
    static Int round_half_even_mean(Int sum, Int count) {
        Int q = sum / count, r = sum % count;
        if (r < 0) {  // floor division
            q -= 1;
            r += count;
        }
        if (2 * r > count || (2 * r == count && (q & 1))) ++q;
        return q;
    }

private:
    I flush_bits(const channel_state& c) const {
        return opts_.under == underflow::flush ? to_bits(grid_of(c).flush_of(c.lo)) : I(0);
    }

    // Scaled grids (fit_scale): exact search seeded by the unscaled table, which is at most one step off.
    void eval_row_search(const T* w, std::size_t n, const channel_state& c, I* k_out, I* s_out,
                         std::uint8_t* clipped_out) const {
        const auto& g = grid_of(c);
        const T flush = opts_.under == underflow::flush ? g.flush_of(c.lo) : T(0);
        for (std::size_t i = 0; i < n; ++i) {
            const T a = std::fabs(w[i]);
            const int k = g.exponent_near(a, cells_.exponent(to_bits(a)));
            const bool nonzero = a != T(0);
            k_out[i] = I(std::clamp(k, c.lo, c.hi));
            s_out[i] = (nonzero && a >= flush) ? (w[i] < 0 ? I(-1) : I(1)) : I(0);
            clipped_out[i] = nonzero && (k < c.lo || k > c.hi);
        }
    }

    options opts_;
    const cell_table<T, Base>& cells_;
};

// Runs fn(row, scratch) over rows, optionally in parallel; each row's result depends on that row only.
template <class T, class Fn>
void for_each_row(Eigen::Index rows, Eigen::Index cols, Fn&& fn) {
#if defined(_OPENMP)
#pragma omp parallel if (rows * cols >= (Eigen::Index(1) << 18))
    {
        row_scratch<T> scratch;
        scratch.resize(static_cast<std::size_t>(cols));
#pragma omp for schedule(static)
        for (Eigen::Index r = 0; r < rows; ++r) fn(r, scratch);
    }
#else
    row_scratch<T> scratch;
    scratch.resize(static_cast<std::size_t>(cols));
    for (Eigen::Index r = 0; r < rows; ++r) fn(r, scratch);
#endif
}

template <class T>
const T* row_pointer(const row_view<T>& W, Eigen::Index r) {
    return W.data() + r * W.outerStride();
}

// Throws std::domain_error naming the first non-finite weight of row r.
template <class T>
[[noreturn]] void throw_non_finite(const row_view<T>& W, Eigen::Index r, const char* who) {
    for (Eigen::Index c = 0; c < W.cols(); ++c) {
        const T v = W(r, c);
        if (!std::isfinite(v))
            throw std::domain_error(std::string(who) + ": weight at row " + std::to_string(r) + ", column " +
                                    std::to_string(c) + " is " + (std::isnan(v) ? "NaN" : "infinite"));
    }
    throw std::logic_error(std::string(who) + ": row " + std::to_string(r) + " was reported non-finite");
}

// Checks every weight is finite (throws std::domain_error naming the first bad one) and returns
// each row's largest magnitude.
template <class T, class Base>
std::vector<T> checked_row_maxima(const row_view<T>& W, const char* who) {
    using Q = quantizer<T, Base>;
    std::vector<T> maxima(static_cast<std::size_t>(W.rows()), T(0));
    for (Eigen::Index r = 0; r < W.rows(); ++r) {
        const auto bits = Q::row_max_bits(row_pointer(W, r), static_cast<std::size_t>(W.cols()));
        if (bits >= cell_table<T, Base>::inf_bits) throw_non_finite(W, r, who);
        maxima[static_cast<std::size_t>(r)] = from_bits<T>(bits);
    }
    return maxima;
}

// Squared error of reconstructing rows [r0, r1) on channel state c.
template <class T, class Base>
double channel_error(const quantizer<T, Base>& q, const row_view<T>& W, Eigen::Index r0, Eigen::Index r1,
                     const channel_state& c, int scale_exp, row_scratch<T>& scratch, std::vector<bits_t<T>>& blocks,
                     std::vector<T>& values, const double* importance) {
    const auto n = static_cast<std::size_t>(W.cols());
    double error = 0;
    for (Eigen::Index r = r0; r < r1; ++r) {
        const T* w = row_pointer(W, r);
        q.eval_row(w, n, c, scratch);
        if (q.opts().clustered()) {
            q.cluster_row(n, c, scratch, blocks.data());
            q.compose_row(n, c, blocks.data(), static_cast<std::size_t>(q.opts().cluster_size), scratch.s.data(),
                          values.data());
        } else {
            q.compose_row(n, c, scratch.k.data(), 1, scratch.s.data(), values.data());
        }
        for (std::size_t i = 0; i < n; ++i) {
            // Scaled by an exact power of two so that errors near DBL_MAX do not overflow.
            const double d = std::ldexp(static_cast<double>(w[i]) - static_cast<double>(values[i]), -scale_exp);
            error += (importance ? importance[i] : 1.0) * d * d;
        }
    }
    return error;
}

// Window and scale of every channel: the per-channel state the seed lacks.
template <class T, class Base>
std::vector<channel_state> plan_channels(const quantizer<T, Base>& q, const row_view<T>& W,
                                         const std::vector<T>& row_max) {
    const options& o = q.opts();
    const Eigen::Index rows = W.rows();
    const auto channels = static_cast<Eigen::Index>(channel_count(o.per_channel, rows));
    std::vector<channel_state> plan(static_cast<std::size_t>(channels));
    auto channel_max = [&](Eigen::Index ch) {
        if (o.per_channel) return row_max[static_cast<std::size_t>(ch)];
        return row_max.empty() ? T(0) : *std::max_element(row_max.begin(), row_max.end());
    };
    const auto cols = static_cast<std::size_t>(W.cols());
    auto plan_one = [&](Eigen::Index ch, row_scratch<T>& scratch, std::vector<bits_t<T>>& blocks,
                        std::vector<T>& values) {
        const T m = channel_max(ch);
        channel_state best = window_for<T, Base>(o, grid_for<T, Base>(o, 0), m);
        const int drops = (o.search == scale_search::mse && o.levels) ? 2 : 1;
        if ((o.fit_scale || drops > 1) && m > 0) {
            const Eigen::Index r0 = o.per_channel ? ch : 0, r1 = o.per_channel ? ch + 1 : rows;
            const double* importance = o.importance ? o.importance->data() : nullptr;
            double best_error = std::numeric_limits<double>::infinity();
            // Candidates in order 0, -1, +1, -2, +2, ...: ties keep the smallest |step|, then the higher top.
            for (int t = 0; t <= (o.fit_scale ? 2 * scale_step_max : 0); ++t) {
                const int step = (t % 2 == 0) ? t / 2 : -(t + 1) / 2;
                for (int drop = 0; drop < drops; ++drop) {
                    const auto candidate = window_for<T, Base>(o, grid_for<T, Base>(o, step), m, drop);
                    if (drop > 0 && candidate.hi == window_for<T, Base>(o, grid_for<T, Base>(o, step), m).hi) continue;
                    const double e =
                        channel_error(q, W, r0, r1, candidate, std::ilogb(m), scratch, blocks, values, importance);
                    if (e < best_error) {
                        best_error = e;
                        best = candidate;
                    }
                }
            }
        }
        plan[static_cast<std::size_t>(ch)] = best;
    };
    if (o.fit_scale) {  // make every scaled grid before any parallel work
        for (int s = -scale_step_max; s <= scale_step_max; ++s) grid_for<T, Base>(o, s);
    }
    const std::size_t blocks_per_row = o.clustered() ? (cols + o.cluster_size - 1) / o.cluster_size : cols;
    if (o.per_channel && (o.fit_scale || o.search == scale_search::mse)) {
        for_each_row<T>(channels, W.cols(), [&](Eigen::Index ch, row_scratch<T>& scratch) {
            std::vector<bits_t<T>> blocks(blocks_per_row);
            std::vector<T> values(cols);
            plan_one(ch, scratch, blocks, values);
        });
    } else {
        row_scratch<T> scratch;
        scratch.resize(cols);
        std::vector<bits_t<T>> blocks(blocks_per_row);
        std::vector<T> values(cols);
        for (Eigen::Index ch = 0; ch < channels; ++ch) plan_one(ch, scratch, blocks, values);
    }
    return plan;
}

// ---- Block scales (options::block_size > 0): every block of a row has its own scale. ----

// The importance vector checked against the column count (null when unset).
inline const double* checked_importance(const options& o, Eigen::Index cols, const char* who) {
    if (!o.importance) return nullptr;
    if (o.importance->size() != static_cast<std::size_t>(cols))
        throw std::invalid_argument(std::string(who) + ": importance has " + std::to_string(o.importance->size()) +
                                    " entries, expected one per column (" + std::to_string(cols) + ")");
    return o.importance->data();
}

// fp16/e4m3 scales: the channel window's top is the smallest exponent whose level reaches the channel's
// largest magnitude, so a scale in (0, 1] can always place the block's largest weight at the top.
template <class T, class Base>
channel_state scaled_channel_window(const options& o, const grid<T, Base>& g, T max_magnitude) {
    const auto [clip_lo, clip_hi] = clip_bounds(o, g);
    int top = max_magnitude > 0 ? g.exponent(max_magnitude) : 0;
    if (max_magnitude > 0 && top < g.k_hi && g.level_of(top) < max_magnitude) ++top;
    top = std::clamp(top, clip_lo, clip_hi);
    return {std::max(clip_lo, top - (*o.levels - 1)), top, 0};
}

// One row's block results, written where the packed tensor (or fake_quantize's scratch) keeps them.
struct block_row {
    std::int16_t* exps = nullptr;     // per weight
    std::int8_t* signs = nullptr;     // per weight
    std::int16_t* tops = nullptr;     // per block (exponent scales)
    std::int8_t* steps = nullptr;     // per block (exponent scales)
    std::uint16_t* scales = nullptr;  // per block (fp16/e4m3 codes)
    std::uint8_t* clipped = nullptr;  // per weight, optional
    double max_magnitude = -1;        // the row's largest magnitude when the caller checked it is finite (< 0: unchecked)
    int lo = std::numeric_limits<int>::max();  // union of the row's block windows
    int hi = std::numeric_limits<int>::min();
};

// The levels of an fp16/e4m3-scaled block: v[j] = T(s) * level(lo + j), and thresholds th[j] (j >= 1), the
// smallest magnitude that takes v[j] or above (exact: see scaled_threshold).
template <class T>
struct scaled_view {
    const T* value = nullptr;      // [j]: T(s) * unit[j]
    const T* threshold = nullptr;  // [j]: for j >= 1 (th[0] unused)
    std::size_t n = 0;
    // Offset j of magnitude a > 0: the number of thresholds at or below it.
    std::size_t offset(T a) const {
        std::size_t j = 0;
        for (std::size_t i = 1; i < n; ++i) j += a >= threshold[i] ? 1 : 0;
        return j;
    }
};

// The n values scale * unit[j], then the n thresholds (threshold[0] = 0), of a scaled block into out.
template <class T>
void build_scaled_levels(const T* unit, std::size_t n, T scale, rounding round, T* out) {
    T* value = out;
    T* threshold = out + n;
#if GRPHI_X86_DISPATCH
    if constexpr (std::is_same_v<T, float>) {
        if (n <= 16 && avx512_rows()) {
            kernels::avx512::scaled_levels(unit, n, scale, round == rounding::log, value, threshold);
            return;
        }
    }
#endif
    for (std::size_t j = 0; j < n; ++j) value[j] = scale * unit[j];
    threshold[0] = T(0);
    for (std::size_t j = 1; j < n; ++j) threshold[j] = scaled_threshold(value[j - 1], value[j], round);
}

// Scaled levels per scale code for one channel window, built once per thread and reused by every block
// with that code: codes repeat (a block's scale is its maximum over the window top, rounded to 11 or 4
// bits), and building the thresholds costs far more than a block's weights. Direct-mapped; an entry is
// tagged by the block quantizer that built it (its options), the window and the code.
template <class T>
struct scaled_level_cache {
    static constexpr std::size_t max_bytes = std::size_t(1) << 18;
    std::uint64_t owner = 0;
    std::size_t n = 0, mask = 0;
    std::vector<std::uint64_t> tags;  // 0: empty
    std::vector<T> data;              // per slot: n values, then n thresholds
    std::vector<std::uint32_t> handed;  // per slot: the last batch that handed it out (see batch_levels)
    std::uint32_t batch = 1;

    // Empties the cache unless it already serves this owner with n levels per window.
    void serve(std::uint64_t who, std::size_t levels) {
        if (who == owner && levels == n) return;
        owner = who;
        n = levels;
        std::size_t slots = 4096;
        while (slots > 16 && slots * 2 * n * sizeof(T) > max_bytes) slots /= 2;
        mask = slots - 1;
        tags.assign(slots, 0);
        data.resize(slots * 2 * n);
        handed.assign(slots, 0);
        batch = 1;
    }

    // Starts a batch of batch_levels lookups: the entries it hands out stay put until it ends.
    void new_batch() {
        if (++batch == 0) {  // wrapped: no slot may look handed out in the new batch
            std::fill(handed.begin(), handed.end(), 0u);
            batch = 1;
        }
    }

    static std::size_t window_hash(int lo, int hi) {
        return 977u * std::size_t(std::uint16_t(lo)) + 131u * std::size_t(std::uint16_t(hi));
    }
    std::size_t slot_of(int lo, int hi, std::uint16_t code) const { return (std::size_t(code) + window_hash(lo, hi)) & mask; }

    // The levels of code on window [lo, hi] (unit: its unscaled levels), built on a miss.
    scaled_view<T> levels(const T* unit, int lo, int hi, block_scale format, std::uint16_t code, rounding round) {
        const std::size_t slot = slot_of(lo, hi, code);
        const std::uint64_t tag = tag_of(lo, hi, code);
        if (tags[slot] != tag) build(slot, tag, unit, format, code, round);
        return {data.data() + slot * 2 * n, data.data() + slot * 2 * n + n, n};
    }

    // The levels of codes[0 .. count) on window [lo, hi] within the current batch, into levels[] (each:
    // its n values, then its n thresholds, valid until the batch ends; misses build their entries). Returns
    // how many it resolved: count, or fewer where the next entry would evict one this batch handed out.
    std::size_t batch_levels(const T* unit, int lo, int hi, block_scale format, rounding round, const std::uint16_t* codes,
                             std::size_t count, const T** levels) {
        // Locals, so the stores of a miss do not make the loop reload them.
        const std::uint64_t* tag = tags.data();
        std::uint32_t* hand = handed.data();
        const T* entries = data.data();
        const std::size_t entry = 2 * n, window = window_hash(lo, hi);
        const std::uint64_t window_tag = tag_of(lo, hi, 0);
        const std::uint32_t current = batch;
        const std::size_t slots = mask;
        constexpr std::size_t ahead = 8;  // lookups in flight: the tags and entries come from L2
        for (std::size_t b = 0; b < count; ++b) {
#if defined(__GNUC__)
            if (b + ahead < count) {
                const std::size_t next = (codes[b + ahead] + window) & slots;
                __builtin_prefetch(tag + next);
                __builtin_prefetch(entries + next * entry + n);
            }
#endif
            const std::size_t slot = (codes[b] + window) & slots;
            const std::uint64_t want = window_tag | (std::uint64_t(codes[b]) << 40);
            if (tag[slot] != want) {
                if (hand[slot] == current) return b;
                build(slot, want, unit, format, codes[b], round);
            }
            hand[slot] = current;
            levels[b] = entries + slot * entry;
        }
        return count;
    }

private:
    static std::uint64_t tag_of(int lo, int hi, std::uint16_t code) {
        return (std::uint64_t(code) << 40) | (std::uint64_t(std::uint16_t(lo)) << 24) | (std::uint64_t(std::uint16_t(hi)) << 8) | 1u;
    }

    void build(std::size_t slot, std::uint64_t tag, const T* unit, block_scale format, std::uint16_t code, rounding round) {
        tags[slot] = tag;
        build_scaled_levels(unit, n, static_cast<T>(block_scale_value(format, code)), round, data.data() + slot * 2 * n);
    }
};

// The scaled levels of one window for every scale mantissa. A scale 2^e * (1 + f / 1024) (every fp16 and
// e4m3 value is one) has the values and thresholds of the scale 1 + f / 1024 times 2^e, exactly, while
// all of them stay normal: so one entry per f serves every code with that fraction, and a block's kernel
// shifts its magnitudes by e binades instead of looking its code up. Entries are built on first use and
// kept across calls; the key is all a threshold depends on: the window's unit levels and the rounding.
template <class T>
struct scaled_mantissa_levels {
    static constexpr std::size_t fractions = 1024;
    using binades = kernels::avx512::binade_range;  // an entry not built yet: none
    std::vector<T> unit;
    rounding round = rounding::log;
    std::vector<T> data;  // per fraction: n values, then n thresholds
    std::vector<binades> exact;  // per fraction
    std::vector<std::uint8_t> built;

    bool serves(const std::vector<T>& u, rounding r) const {
        return r == round && u.size() == unit.size() && std::memcmp(u.data(), unit.data(), u.size() * sizeof(T)) == 0;
    }
    void reset(const std::vector<T>& u, rounding r) {
        unit = u;
        round = r;
        data.assign(fractions * 2 * u.size(), T(0));
        exact.assign(fractions, binades{});
        built.assign(fractions, 0);
    }
    // Builds entry f of the block with scale part (e * 1024 + f) if it was not yet; true when the block
    // can take it: its values and thresholds times 2^e are normal. (Its magnitudes over 2^e then stay
    // finite too: an absmax code keeps the block's largest magnitude within the code's rounding of
    // scale * top, and top * (1 + f / 1024) < 2^(max - 2).)
    bool build_for(std::int32_t part) {
        const std::int32_t f = part & 1023, e = (part - f) / 1024;
        if (!built[static_cast<std::size_t>(f)]) build(f);
        const binades& r = exact[static_cast<std::size_t>(f)];
        return static_cast<std::uint32_t>(e - r.lo) <= r.span;
    }

private:
    void build(std::int32_t f) {
        const std::size_t n = unit.size();
        T* value = data.data() + static_cast<std::size_t>(f) * 2 * n;
        build_scaled_levels(unit.data(), n, static_cast<T>(1 + f / 1024.0), round, value);
        // Entry and scaled values two binades inside the normal range, so that each was rounded as a normal
        // number (a product within an ulp of the smallest normal may round across it).
        constexpr int digits = std::numeric_limits<T>::digits - 1;
        constexpr int top_field = 2 * std::numeric_limits<T>::max_exponent - 1;  // 255 / 2047: Inf and NaN
        const int low = static_cast<int>(to_bits(value[0]) >> digits), high = static_cast<int>(to_bits(value[n - 1]) >> digits);
        if (low >= 2 && high <= top_field - 2)
            exact[static_cast<std::size_t>(f)] = {2 - low, static_cast<std::uint32_t>((top_field - 2 - high) - (2 - low))};
        built[static_cast<std::size_t>(f)] = 1;
    }
};

// A distinct number per block quantizer, so a thread's level cache never serves another's options.
inline std::uint64_t next_block_quantizer_id() {
    static std::atomic<std::uint64_t> counter{0};
    return ++counter;
}

template <class T, class Base>
class block_quantizer {
public:
    using I = bits_t<T>;

    block_quantizer(const quantizer<T, Base>& q, const double* importance)
        : q_(q), o_(q.opts()), importance_(importance), base_value_(base_value_of<Base>(q.opts())),
          id_(next_block_quantizer_id()) {
        if (o_.fit_scale)  // every scaled grid before any parallel work
            for (int s = -scale_step_max; s <= scale_step_max; ++s) grid_for<T, Base>(o_, s);
    }

    // Quantizes one row (exponent scales; the channel window argument is unused) or, with fp16/e4m3
    // scales, on channel window c. Scratch is per thread.
    // Returns false, writing nothing, when the row holds NaN or Inf (checked with exponent scales only:
    // fp16/e4m3 rows were checked by the channel pass).
    bool row(const T* w, std::size_t n, const channel_state& c, block_row& out) const {
        if (o_.block_format == block_scale::exponent) return exponent_row(w, n, out);
        scaled_row(w, n, c, out);
        return true;
    }

    // Rebuilds a row from its block results (the one reconstruction quantize/fake_quantize share).
    void compose(std::size_t n, const channel_state& c, const std::int16_t* exps, const std::int8_t* signs,
                 const std::int8_t* steps, const std::uint16_t* scales, T* out) const {
        const auto size = static_cast<std::size_t>(o_.block_size);
        const auto& unit = q_.grid_of({c.lo, c.hi, 0});
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t end = std::min(n, start + size);
            if (o_.block_format == block_scale::exponent) {
                const auto& g = q_.grid_of({0, 0, steps[b]});
                for (std::size_t i = start; i < end; ++i) out[i] = static_cast<T>(signs[i]) * g.level_of(exps[i]);
            } else {
                const T s = static_cast<T>(block_scale_value(o_.block_format, scales[b]));
                for (std::size_t i = start; i < end; ++i)
                    out[i] = static_cast<T>(signs[i]) * (s * unit.level_of(exps[i]));
            }
        }
    }

private:
    struct scratch {
        std::vector<std::int16_t> exps;
        std::vector<std::int8_t> signs;
        scaled_level_cache<T> cache;
        std::vector<T> window_levels;
        std::vector<I> block_max;  // of a row's blocks (the AVX-512 route)
        std::vector<const T*> block_levels;  // per block of a row: its levels in the cache (the AVX-512 route)
        std::vector<std::int32_t> block_parts;  // per block of a row: its scale as e * 1024 + f (the AVX-512 route)
        std::vector<std::uint32_t> left;  // blocks of a row the mantissa levels did not take (the AVX-512 route)
        scaled_mantissa_levels<T> mantissa[4];  // the windows seen last, replaced in turn
        std::size_t next_mantissa = 0;

        scaled_mantissa_levels<T>& mantissa_levels(rounding round) {
            for (auto& m : mantissa)
                if (m.serves(window_levels, round)) return m;
            auto& m = mantissa[next_mantissa];
            next_mantissa = (next_mantissa + 1) % std::size(mantissa);
            m.reset(window_levels, round);
            return m;
        }
    };
    static scratch& thread_scratch(std::size_t size) {
        thread_local scratch s;
        if (s.exps.size() < size) {
            s.exps.resize(size);
            s.signs.resize(size);
        }
        return s;
    }

    static T block_max(const T* w, std::size_t len) { return from_bits<T>(quantizer<T, Base>::row_max_bits(w, len)); }

    int exponent_on(const grid<T, Base>& g, T a) const {
        const int k = q_.cells().exponent(to_bits(a));
        return g.step == 0 ? k : g.exponent_near(a, k);
    }

    // Exponent scales: one block on window c of grid g (c.step).
    void exponent_block(const grid<T, Base>& g, const channel_state& c, const T* w, std::size_t len,
                        std::int16_t* exps, std::int8_t* signs, std::uint8_t* clipped) const {
        const T flush = o_.under == underflow::flush ? g.flush_of(c.lo) : T(0);
        for (std::size_t i = 0; i < len; ++i) {
            const T a = std::fabs(w[i]);
            const int k = exponent_on(g, a);
            const bool keep = a != T(0) && a >= flush;
            exps[i] = static_cast<std::int16_t>(keep ? std::clamp(k, c.lo, c.hi) : c.lo);
            signs[i] = static_cast<std::int8_t>(keep ? (w[i] < 0 ? -1 : 1) : 0);
            if (clipped) clipped[i] = a != T(0) && (k < c.lo || k > c.hi);
        }
    }

    double exponent_error(const grid<T, Base>& g, const T* w, const double* importance, std::size_t len,
                          const std::int16_t* exps, const std::int8_t* signs, int scale_exp) const {
        double e = 0;
        for (std::size_t i = 0; i < len; ++i) {
            const T v = static_cast<T>(signs[i]) * g.level_of(exps[i]);
            const double d = std::ldexp(static_cast<double>(w[i]) - static_cast<double>(v), -scale_exp);
            e += (importance ? importance[i] : 1.0) * d * d;
        }
        return e;
    }

#if GRPHI_X86_DISPATCH
    // Exponent scales, absmax, step 0, on the row's register tables: one exact exponent per weight via
    // the row window [lo_r, t_r], then each block's bottom applied; blocks reaching below lo_r take
    // exponent_block. Same result as the generic route. Rows whose tables do not fit are left to it.
    enum class vector_row { done, not_finite, left };
    vector_row exponent_row_avx512(const T* w, std::size_t n, block_row& out) const {
        const auto& g = q_.grid_of({0, 0, 0});
        row_tables& rt = thread_row_tables();
        const auto size = static_cast<std::size_t>(o_.block_size);
        const std::size_t blocks = (n + size - 1) / size;
        const std::size_t padded = blocks + 64 / sizeof(T);
        if (rt.block_max.size() < padded) {
            rt.block_max.resize(padded);
            rt.block_lo.resize(padded);
            rt.exact.resize(padded);
        }
        const I row_max_bits = kernels::avx512::block_maxima(w, n, size, rt.block_max.data());
        if (row_max_bits >= cell_table<T, Base>::inf_bits) return vector_row::not_finite;
        const T row_max = from_bits<T>(row_max_bits);
        const channel_state row_top = window_for<T, Base>(o_, g, row_max);
        const auto [clip_lo, clip_hi] = clip_bounds(o_, g);
        if (rt.owner != id_ || rt.top != row_top.hi) {  // rows of a tensor mostly share their top
            rt.owner = id_;
            rt.top = row_top.hi;
            rt.fits = false;
            for (int width = static_cast<int>(window_tables<T>::entries) * 2 / 3; width >= *o_.levels && !rt.fits; width -= 4) {
                rt.lo = std::max(clip_lo, row_top.hi - width);
                rt.fits = q_.tables_for({rt.lo, row_top.hi, 0}, rt.tables);
            }
            rt.keep_from.clear();
            if (o_.under == underflow::flush)
                for (int k = rt.lo; k <= row_top.hi; ++k) rt.keep_from.push_back(std::max(to_bits(g.flush_of(k)), I(1)));
        }
        if (!rt.fits) return vector_row::left;
        std::fill(out.steps, out.steps + blocks, std::int8_t(0));
        const std::size_t exact_blocks = kernels::avx512::exponent_row_blocks(w, n, rt.tables, q_.cells().shift, size, *o_.levels, clip_lo,
                                             rt.keep_from.empty() ? nullptr : rt.keep_from.data(), rt.block_max.data(),
                                             rt.block_lo.data(), rt.exact.data(), out.tops, out.exps, out.signs, out.lo,
                                             out.hi);
        for (std::size_t b = 0; b < blocks && exact_blocks > 0; ++b) {
            if (!rt.exact[b]) continue;
            // window_for's window, with the exponent from the O(1) cell table instead of a search.
            const std::size_t start = b * size, len = std::min(n - start, size);
            const I m = rt.block_max[b];
            const int top = std::clamp(m != 0 ? q_.cells().exponent(m) : 0, clip_lo, clip_hi);
            const channel_state c{std::max(clip_lo, top - (*o_.levels - 1)), top, 0};
            out.tops[b] = static_cast<std::int16_t>(c.hi);
            out.lo = std::min(out.lo, c.lo);
            out.hi = std::max(out.hi, c.hi);
            exponent_block(g, c, w + start, len, out.exps + start, out.signs + start, nullptr);
        }
        return vector_row::done;
    }

    // A thread's register tables for rows with one top (and the scratch of exponent_row_blocks).
    struct row_tables {
        std::uint64_t owner = 0;
        int top = 0, lo = 0;
        bool fits = false;
        window_tables<T> tables;
        std::vector<I> keep_from, block_max, block_lo;
        std::vector<std::uint8_t> exact;
    };
    static row_tables& thread_row_tables() {
        thread_local row_tables t;
        return t;
    }
#endif

    bool exponent_row(const T* w, std::size_t n, block_row& out) const {
#if GRPHI_X86_DISPATCH
        if (!o_.fit_scale && o_.search == scale_search::absmax && out.clipped == nullptr && avx512_rows()) {
            const vector_row done = exponent_row_avx512(w, n, out);
            if (done != vector_row::left) return done == vector_row::done;
        }
#endif
        if (out.max_magnitude < 0 && quantizer<T, Base>::row_max_bits(w, n) >= cell_table<T, Base>::inf_bits) return false;
        const auto size = static_cast<std::size_t>(o_.block_size);
        const bool searched = o_.fit_scale || o_.search == scale_search::mse;
        const int drops = o_.search == scale_search::mse ? 2 : 1;
        const int step_candidates = o_.fit_scale ? 2 * scale_step_max + 1 : 1;
        const auto& unscaled = q_.grid_of({0, 0, 0});
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t len = std::min(n - start, size);
            const T* x = w + start;
            const T m = block_max(x, len);
            channel_state best = window_for<T, Base>(o_, unscaled, m);
            if (searched && m > T(0)) {
                scratch& s = thread_scratch(size);
                const double* importance = importance_ ? importance_ + start : nullptr;
                const int scale_exp = std::ilogb(m);
                double best_error = std::numeric_limits<double>::infinity();
                // Steps 0, -1, +1, -2, ... and tops t, t - 1: ties keep the earlier candidate.
                for (int t = 0; t < step_candidates; ++t) {
                    const int step = (t % 2 == 0) ? t / 2 : -(t + 1) / 2;
                    const auto& g = q_.grid_of({0, 0, step});
                    const channel_state highest = window_for<T, Base>(o_, g, m);
                    for (int drop = 0; drop < drops; ++drop) {
                        const channel_state c = window_for<T, Base>(o_, g, m, drop);
                        if (drop > 0 && c.hi == highest.hi) continue;
                        exponent_block(g, c, x, len, s.exps.data(), s.signs.data(), nullptr);
                        const double e = exponent_error(g, x, importance, len, s.exps.data(), s.signs.data(), scale_exp);
                        if (e < best_error) {
                            best_error = e;
                            best = c;
                        }
                    }
                }
            }
            exponent_block(q_.grid_of(best), best, x, len, out.exps + start, out.signs + start,
                           out.clipped ? out.clipped + start : nullptr);
            out.tops[b] = static_cast<std::int16_t>(best.hi);
            out.steps[b] = static_cast<std::int8_t>(best.step);
            out.lo = std::min(out.lo, best.lo);
            out.hi = std::max(out.hi, best.hi);
        }
        return true;
    }

    // fp16/e4m3 scales: one block with levels l (built for its scale) on channel window c.
    void scaled_block(const scaled_view<T>& l, const channel_state& c, const T* w, std::size_t len,
                      std::int16_t* exps, std::int8_t* signs, std::uint8_t* clipped) const {
        const T bottom = l.value[0], top = l.value[l.n - 1];
#if GRPHI_X86_DISPATCH
        if (clipped == nullptr && avx512_rows()) {
            kernels::avx512::scaled_block(w, len, l.threshold, l.n, to_bits(bottom), o_.under == underflow::flush, c.lo,
                                          exps, signs);
            return;
        }
#endif
        for (std::size_t i = 0; i < len; ++i) {
            const T a = std::fabs(w[i]);
            // Flush: below half the lowest value (a + a is exact here: a < bottom <= the largest finite T).
            const bool keep = a != T(0) && (o_.under == underflow::clamp || a >= bottom || a + a >= bottom);
            exps[i] = static_cast<std::int16_t>(keep ? c.lo + static_cast<int>(l.offset(a)) : c.lo);
            signs[i] = static_cast<std::int8_t>(keep ? (w[i] < 0 ? -1 : 1) : 0);
            if (clipped) clipped[i] = a != T(0) && (a < bottom || a > top);
        }
    }

    double scaled_error(const scaled_view<T>& l, const channel_state& c, const T* w, const double* importance,
                        std::size_t len, const std::int16_t* exps, const std::int8_t* signs, int scale_exp) const {
        double e = 0;
        for (std::size_t i = 0; i < len; ++i) {
            const T v = static_cast<T>(signs[i]) * l.value[static_cast<std::size_t>(exps[i] - c.lo)];
            const double d = std::ldexp(static_cast<double>(w[i]) - static_cast<double>(v), -scale_exp);
            e += (importance ? importance[i] : 1.0) * d * d;
        }
        return e;
    }

    // A row's unscaled window levels and the thread's level cache for them; returns code -> levels.
    auto prepare_levels(const channel_state& c, block_row& out, scratch& s) const {
        const auto& unit = q_.grid_of({c.lo, c.hi, 0});
        s.window_levels.clear();
        for (int k = c.lo; k <= c.hi; ++k) s.window_levels.push_back(unit.level_of(k));
        s.cache.serve(id_, s.window_levels.size());
        out.lo = c.lo;
        out.hi = c.hi;
        return [this, &s, c](std::uint16_t code) {
            return s.cache.levels(s.window_levels.data(), c.lo, c.hi, o_.block_format, code, o_.round);
        };
    }

#if GRPHI_X86_DISPATCH
    // fp16/e4m3 rows without the search on AVX-512: block maxima, codes and offsets on the row kernels.
    bool maxima_route(const block_row& out) const {
        return o_.search == scale_search::absmax && out.clipped == nullptr && avx512_rows();
    }

    // The row's block maxima into s.block_max (room for a register more: the kernel stores whole
    // registers); returns the row's largest magnitude (bits).
    I row_block_maxima(const T* w, std::size_t n, scratch& s) const {
        const auto size = static_cast<std::size_t>(o_.block_size);
        const std::size_t room = n / size + 1 + 64 / sizeof(T);
        if (s.block_max.size() < room) s.block_max.resize(room);
        return kernels::avx512::block_maxima(w, n, size, s.block_max.data());
    }

    // scaled_row's loop without the search, on the row's block maxima (in s.block_max), after
    // prepare_levels: every block's code first (vectorized), then the levels of a run of blocks (misses
    // build their entries), then the run's weights on the kernel, so its loop holds no cache lookups. A run
    // ends where an entry would evict one the run still needs.
    void scaled_row_from_maxima(const T* w, std::size_t n, block_row& out, scratch& s) const {
        const auto size = static_cast<std::size_t>(o_.block_size);
        const std::size_t blocks = (n + size - 1) / size;
        const scale_code_fields f = code_fields(o_.block_format);
        const std::size_t window = s.window_levels.size();
        const bool flush = o_.under == underflow::flush;
        if (kernels::avx512::scaled_search_steps<T>(window) >= 0) {
            // Every block on its scale's mantissa entry; the rare block whose levels would leave the normal
            // range when scaled takes its own levels afterwards.
            if (s.block_parts.size() < blocks) s.block_parts.resize(blocks);
            kernels::avx512::block_scale_codes<T>(s.block_max.data(), blocks, static_cast<double>(s.window_levels.back()),
                                                  f.mantissa_bits, f.min_exponent, f.bias, out.scales, s.block_parts.data());
            scaled_mantissa_levels<T>& m = s.mantissa_levels(o_.round);
            if (s.left.size() < blocks) s.left.resize(blocks);
            const std::int32_t* parts = s.block_parts.data();
            const std::size_t left = kernels::avx512::scaled_blocks_by_mantissa(w, n, size, window, flush, out.lo, out.exps, out.signs,
                                                                                m.data.data(), m.exact.data(), parts, s.left.data());
            // Blocks on entries not built yet, or whose levels leave the normal range: on their own.
            const channel_state c{out.lo, out.hi, 0};
            for (std::size_t i = 0; i < left; ++i) {
                const std::size_t b = s.left[i], start = b * size, len = std::min(n - start, size);
                std::uint32_t none;
                if (m.build_for(parts[b]))
                    kernels::avx512::scaled_blocks_by_mantissa(w + start, len, size, window, flush, out.lo, out.exps + start,
                                                               out.signs + start, m.data.data(), m.exact.data(), parts + b, &none);
                else
                    scaled_block(s.cache.levels(s.window_levels.data(), out.lo, out.hi, o_.block_format, out.scales[b], o_.round), c,
                                 w + start, len, out.exps + start, out.signs + start, nullptr);
            }
            return;
        }
        kernels::avx512::block_scale_codes<T>(s.block_max.data(), blocks, static_cast<double>(s.window_levels.back()),
                                              f.mantissa_bits, f.min_exponent, f.bias, out.scales);
        if (s.block_levels.size() < blocks) s.block_levels.resize(blocks);
        std::size_t first = 0;  // of the run
        auto run_kernel = [&](std::size_t end) {
            const std::size_t start = first * size, stop = std::min(n, end * size);
            kernels::avx512::scaled_blocks(w + start, stop - start, size, window, flush, out.lo, out.exps + start,
                                           out.signs + start, s.block_levels.data() + first);
            first = end;
        };
        for (std::size_t b = 0; b < blocks;) {
            s.cache.new_batch();
            b += s.cache.batch_levels(s.window_levels.data(), out.lo, out.hi, o_.block_format, o_.round, out.scales + b,
                                      blocks - b, s.block_levels.data() + b);
            run_kernel(b);
        }
    }
#endif

public:
    // fp16/e4m3 per-channel rows: the row on the channel window window_of(its largest magnitude), which
    // it returns in c; false, writing nothing, when the row holds NaN or Inf. On the AVX-512 route the
    // block maxima give that magnitude, so the row is read once less.
    template <class WindowOf>
    bool scaled_channel_row(const T* w, std::size_t n, WindowOf&& window_of, block_row& out, channel_state& c) const {
#if GRPHI_X86_DISPATCH
        if (maxima_route(out)) {
            scratch& s = thread_scratch(static_cast<std::size_t>(o_.block_size));
            const I bits = row_block_maxima(w, n, s);
            if (bits >= cell_table<T, Base>::inf_bits) return false;
            c = window_of(from_bits<T>(bits));
            (void)prepare_levels(c, out, s);
            scaled_row_from_maxima(w, n, out, s);
            return true;
        }
#endif
        const I bits = quantizer<T, Base>::row_max_bits(w, n);
        if (bits >= cell_table<T, Base>::inf_bits) return false;
        c = window_of(from_bits<T>(bits));
        scaled_row(w, n, c, out);
        return true;
    }

private:
    void scaled_row(const T* w, std::size_t n, const channel_state& c, block_row& out) const {
        const auto size = static_cast<std::size_t>(o_.block_size);
        scratch& s = thread_scratch(size);
        auto levels_of = prepare_levels(c, out, s);
        const T top_level = s.window_levels.back();
        const block_scale format = o_.block_format;
#if GRPHI_X86_DISPATCH
        if (maxima_route(out)) {
            row_block_maxima(w, n, s);
            return scaled_row_from_maxima(w, n, out, s);
        }
#endif
        for (std::size_t b = 0, start = 0; start < n; ++b, start += size) {
            const std::size_t len = std::min(n - start, size);
            const T* x = w + start;
            const T m = block_max(x, len);
            const double ratio = static_cast<double>(m) / static_cast<double>(top_level);
            std::uint16_t code = block_scale_nearest(format, m > T(0) ? ratio : 1.0).code;
            if (o_.search == scale_search::mse && m > T(0)) {
                const double* importance = importance_ ? importance_ + start : nullptr;
                const int scale_exp = std::ilogb(m);
                double best_error = std::numeric_limits<double>::infinity();
                std::uint16_t best = code, last = 0xFFFF;
                auto consider = [&](std::uint16_t candidate) {
                    if (candidate == last) return;
                    last = candidate;
                    const scaled_view<T> l = levels_of(candidate);
                    scaled_block(l, c, x, len, s.exps.data(), s.signs.data(), nullptr);
                    const double e = scaled_error(l, c, x, importance, len, s.exps.data(), s.signs.data(), scale_exp);
                    if (e < best_error) {
                        best_error = e;
                        best = candidate;
                    }
                };
                // One base factor below absmax and one more (clipping the top level or two), in steps of
                // b^(1/16), each followed by its least-squares refit; e4m3 also tries every code up to absmax * b^(1/2).
                const double floor_ratio = ratio / (base_value_ * base_value_);
                if (format == block_scale::e4m3) {
                    const double ceiling = std::min(1.0, ratio * std::sqrt(base_value_));
                    for (std::uint16_t candidate = block_scale_code(format, ceiling); candidate >= 1; --candidate) {
                        const double v = block_scale_value(format, candidate);
                        if (v < floor_ratio) break;
                        if (v <= ceiling) consider(candidate);
                    }
                }
                for (int u = 0; u <= 2 * scale_denominator; ++u) {
                    consider(block_scale_nearest(format, ratio * std::pow(base_value_, -u / double(scale_denominator))).code);
                    double num = 0, den = 0;
                    for (std::size_t j = 0; j < len; ++j) {
                        if (s.signs[j] == 0) continue;
                        const double unit_level = static_cast<double>(s.window_levels[static_cast<std::size_t>(s.exps[j] - c.lo)]);
                        const double u_scaled = std::ldexp(unit_level, -scale_exp);
                        const double weight = importance ? importance[j] : 1.0;
                        num += weight * std::ldexp(std::fabs(static_cast<double>(x[j])), -scale_exp) * u_scaled;
                        den += weight * u_scaled * u_scaled;
                    }
                    if (den > 0) consider(block_scale_nearest(format, num / den).code);
                }
                code = best;
            }
            scaled_block(levels_of(code), c, x, len, out.exps + start, out.signs + start,
                         out.clipped ? out.clipped + start : nullptr);
            out.scales[b] = code;
        }
    }

    const quantizer<T, Base>& q_;
    const options& o_;
    const double* importance_;
    double base_value_;
    std::uint64_t id_;  // tags this quantizer's entries in the threads' level caches
};

// Channel windows of fp16/e4m3-scaled tensors (exponent scales: unused, the row loop finds them).
template <class T, class Base>
std::vector<channel_state> scaled_channel_plan(const quantizer<T, Base>& q, const std::vector<T>& row_max) {
    const options& o = q.opts();
    const auto& g = q.grid_of({0, 0, 0});
    if (o.per_channel) {
        std::vector<channel_state> plan(row_max.size());
        for (std::size_t r = 0; r < row_max.size(); ++r) plan[r] = scaled_channel_window<T, Base>(o, g, row_max[r]);
        return plan;
    }
    if (row_max.empty()) return {};
    return {scaled_channel_window<T, Base>(o, g, *std::max_element(row_max.begin(), row_max.end()))};
}

template <class T, class Out>
constexpr bool is_row_major_direct() {
    using D = std::decay_t<Out>;
    constexpr int flags = Eigen::internal::traits<D>::Flags;
    return (flags & Eigen::RowMajorBit) && (flags & Eigen::DirectAccessBit) && std::is_same_v<typename D::Scalar, T>;
}

// Checks the output's shape, resizing plain matrices.
template <class Out>
void prepare_output(Out& out, Eigen::Index rows, Eigen::Index cols, const char* who, const char* what) {
    using D = std::decay_t<Out>;
    if (out.rows() == rows && out.cols() == cols) return;
    bool resizable = false;
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<D>, D>)
        resizable = (D::RowsAtCompileTime == Eigen::Dynamic || D::RowsAtCompileTime == rows) &&
                    (D::ColsAtCompileTime == Eigen::Dynamic || D::ColsAtCompileTime == cols);
    if (resizable) {
        if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<D>, D>) out.resize(rows, cols);
    } else {
        throw std::invalid_argument(std::string(who) + ": " + what + " is " + std::to_string(out.rows()) + "x" +
                                    std::to_string(out.cols()) + ", expected " + std::to_string(rows) + "x" +
                                    std::to_string(cols));
    }
}

// Writes a computed row into out (directly when out's rows are contiguous).
template <class T, class Out, class Fill>
void write_row(Out& out, Eigen::Index r, std::vector<T>& buffer, Fill&& fill) {
    if (out.cols() == 0) return;  // no row to point into (coeffRef would bind a null reference)
    if constexpr (is_row_major_direct<T, Out>()) {
        if (out.innerStride() == 1) {
            fill(&out.coeffRef(r, 0));
            return;
        }
    }
    fill(buffer.data());
    for (Eigen::Index c = 0; c < out.cols(); ++c)
        out.coeffRef(r, c) = static_cast<typename std::decay_t<Out>::Scalar>(buffer[static_cast<std::size_t>(c)]);
}

// fake_quantize with block scales: each row is quantized as quantize does and rebuilt by the same compose.
template <class T, class Base, class Out, class Mask>
void fake_quantize_blocked(const quantizer<T, Base>& q, const row_view<T>& W, Out& out, Mask* clipped, const char* who) {
    const options& opts = q.opts();
    const double* importance = checked_importance(opts, W.cols(), who);
    const bool scaled = opts.block_format != block_scale::exponent;
    const auto row_max = checked_row_maxima<T, Base>(W, who);
    const std::vector<channel_state> plan = scaled ? scaled_channel_plan(q, row_max) : std::vector<channel_state>{};
    const block_quantizer<T, Base> bq(q, importance);
    const auto n = static_cast<std::size_t>(W.cols());
    const auto per_row = (n + static_cast<std::size_t>(opts.block_size) - 1) / static_cast<std::size_t>(opts.block_size);
    for_each_row<T>(W.rows(), W.cols(), [&](Eigen::Index r, row_scratch<T>&) {
        thread_local std::vector<std::int16_t> exps, tops;
        thread_local std::vector<std::int8_t> signs, steps;
        thread_local std::vector<std::uint16_t> scales;
        thread_local std::vector<std::uint8_t> clip;
        thread_local std::vector<T> buffer;
        exps.resize(n);
        signs.resize(n);
        clip.resize(n);
        buffer.resize(n);
        tops.resize(per_row);
        steps.resize(per_row);
        scales.resize(per_row);
        block_row br;
        br.exps = exps.data();
        br.signs = signs.data();
        br.tops = tops.data();
        br.steps = steps.data();
        br.scales = scales.data();
        if constexpr (!std::is_same_v<Mask, std::nullptr_t>) br.clipped = clip.data();
        br.max_magnitude = static_cast<double>(row_max[static_cast<std::size_t>(r)]);
        const channel_state c = scaled ? plan[static_cast<std::size_t>(opts.per_channel ? r : 0)] : channel_state{};
        bq.row(row_pointer(W, r), n, c, br);
        write_row<T>(out, r, buffer, [&](T* dst) { bq.compose(n, c, exps.data(), signs.data(), steps.data(), scales.data(), dst); });
        if constexpr (!std::is_same_v<Mask, std::nullptr_t>) {
            for (Eigen::Index col = 0; col < W.cols(); ++col)
                clipped->coeffRef(r, col) = static_cast<typename Mask::Scalar>(clip[static_cast<std::size_t>(col)]);
        }
    });
}

// quantize with block scales: rows are independent (exponent scales need no channel pass at all).
template <class T, class Base>
void quantize_blocked(const quantizer<T, Base>& q, const row_view<T>& W, packed<T, Base>& p, const char* who) {
    const options& opts = q.opts();
    const double* importance = checked_importance(opts, W.cols(), who);
    const bool scaled = opts.block_format != block_scale::exponent;
    // Per-channel fp16/e4m3 windows depend on their row only: found in the row loop, which then reads the
    // weights from memory once.
    const bool scaled_rows = scaled && opts.per_channel;
    std::vector<channel_state> plan;
    if (scaled && !scaled_rows) {
        try {
            plan = scaled_channel_plan(q, checked_row_maxima<T, Base>(W, who));
        } catch (...) {
            p = packed<T, Base>{};
            throw;
        }
    }
    p.rows = W.rows();
    p.cols = W.cols();
    p.opts = opts;
    p.opts.importance.reset();
    const auto n = static_cast<std::size_t>(p.cols);
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    const std::size_t blocks = p.scale_block_count();
    p.signs.resize(p.size());
    p.exponents.resize(p.size());
    const auto channels = static_cast<std::size_t>(p.channels());
    p.window_lo.resize(channels);
    p.window_hi.resize(channels);
    p.scale_steps.assign(channels, 0);
    p.block_top.resize(scaled ? 0 : blocks);
    p.block_steps.resize(scaled ? 0 : blocks);
    p.block_scales.resize(scaled ? blocks : 0);
    std::vector<int> row_lo(static_cast<std::size_t>(p.rows)), row_hi(static_cast<std::size_t>(p.rows));
    const block_quantizer<T, Base> bq(q, importance);
    std::atomic<Eigen::Index> first_bad_row{p.rows};
    for_each_row<T>(p.rows, p.cols, [&](Eigen::Index r, row_scratch<T>&) {
        const T* w = row_pointer(W, r);
        block_row br;
        const auto row = static_cast<std::size_t>(r);
        br.exps = p.exponents.data() + row * n;
        br.signs = p.signs.data() + row * n;
        if (scaled) {
            br.scales = p.block_scales.data() + row * per_row;
        } else {
            br.tops = p.block_top.data() + row * per_row;
            br.steps = p.block_steps.data() + row * per_row;
        }
        channel_state c{};
        bool finite;
        if (scaled_rows) {
            // The row's window from its largest magnitude, found by the row's own pass.
            finite = bq.scaled_channel_row(w, n, [&](T max_magnitude) {
                return scaled_channel_window<T, Base>(opts, q.grid_of({0, 0, 0}), max_magnitude);
            }, br, c);
            p.window_lo[row] = static_cast<std::int16_t>(c.lo);
            p.window_hi[row] = static_cast<std::int16_t>(c.hi);
        } else {
            if (scaled) c = plan[static_cast<std::size_t>(p.channel_of_row(r))];
            finite = bq.row(w, n, c, br);  // exponent scales: the row's own pass finds NaN and Inf
        }
        if (!finite) {
            Eigen::Index seen = first_bad_row.load();
            while (r < seen && !first_bad_row.compare_exchange_weak(seen, r)) {
            }
            return;
        }
        row_lo[row] = br.lo;
        row_hi[row] = br.hi;
    });
    if (first_bad_row.load() < p.rows) {
        p = packed<T, Base>{};
        throw_non_finite(W, first_bad_row.load(), who);
    }
    if (scaled) {
        for (std::size_t ch = 0; ch < plan.size(); ++ch) {
            p.window_lo[ch] = static_cast<std::int16_t>(plan[ch].lo);
            p.window_hi[ch] = static_cast<std::int16_t>(plan[ch].hi);
        }
        return;
    }
    // Exponent scales: a channel's window spans its blocks' windows (an empty row: the all-zero window).
    const channel_state empty = window_for<T, Base>(opts, q.grid_of({0, 0, 0}), T(0));
    for (std::size_t ch = 0; ch < channels; ++ch) {
        int lo = std::numeric_limits<int>::max(), hi = std::numeric_limits<int>::min();
        const std::size_t r0 = opts.per_channel ? ch : 0, r1 = opts.per_channel ? ch + 1 : row_lo.size();
        for (std::size_t r = r0; r < r1; ++r) {
            lo = std::min(lo, row_lo[r]);
            hi = std::max(hi, row_hi[r]);
        }
        if (n == 0) {
            lo = empty.lo;
            hi = empty.hi;
        }
        p.window_lo[ch] = static_cast<std::int16_t>(lo);
        p.window_hi[ch] = static_cast<std::int16_t>(hi);
    }
}

template <class T, class Base, class Out, class Mask>
void fake_quantize_impl(const row_view<T>& W, const options& opts, Out& out, Mask* clipped) {
    const char* who = "grphi::fake_quantize";
    const quantizer<T, Base> q(opts);
    prepare_output(out, W.rows(), W.cols(), who, "output");
    if constexpr (!std::is_same_v<Mask, std::nullptr_t>) prepare_output(*clipped, W.rows(), W.cols(), who, "clip mask");
    if (opts.blocked()) {
        fake_quantize_blocked(q, W, out, clipped, who);
        return;
    }
    checked_importance(opts, W.cols(), who);
    const auto row_max = checked_row_maxima<T, Base>(W, who);
    const auto plan = plan_channels(q, W, row_max);
    const auto n = static_cast<std::size_t>(W.cols());
    const bool fast = !opts.clustered() && !opts.fit_scale && clipped == nullptr;
    const std::size_t blocks_per_row = opts.clustered() ? (n + opts.cluster_size - 1) / opts.cluster_size : n;
#if GRPHI_X86_DISPATCH
    const bool avx512 = avx512_rows();
    const bool clustered_in_registers = opts.clustered() && !opts.fit_scale && clipped == nullptr &&
                                        static_cast<std::size_t>(opts.cluster_size) % kernels::avx512::lanes_of<T> == 0 &&
                                        opts.cluster_size <= (1 << 16);
#endif
    for_each_row<T>(W.rows(), W.cols(), [&](Eigen::Index r, row_scratch<T>& scratch) {
        const channel_state& c = plan[static_cast<std::size_t>(grphi::channel_of_row(opts.per_channel, r))];
        const T* w = row_pointer(W, r);
        thread_local std::vector<T> buffer;
        thread_local std::vector<bits_t<T>> blocks;
        buffer.resize(n);
#if GRPHI_X86_DISPATCH
        if (avx512 && (fast || clustered_in_registers)) {
            const window_tables<T>* tables = scratch.tables_for(q, c);
            if (tables) {
                const window_tables<T>& t = *tables;
                const int shift = q.cells().shift;
                if (fast)
                    write_row<T>(out, r, buffer, [&](T* dst) { kernels::avx512::fake_row(w, n, t, shift, dst); });
                else
                    write_row<T>(out, r, buffer, [&](T* dst) {
                        kernels::avx512::fake_row_clustered(w, n, t, shift, static_cast<std::size_t>(opts.cluster_size), c.lo,
                                                            q.grid_of(c), scratch.k.data(), scratch.s.data(), dst);
                    });
                return;
            }
        }
#endif
        if (fast) {
            write_row<T>(out, r, buffer, [&](T* dst) { q.fake_row_table(w, n, c, dst); });
            return;
        }
        q.eval_row(w, n, c, scratch);
        write_row<T>(out, r, buffer, [&](T* dst) {
            if (opts.clustered()) {
                blocks.resize(blocks_per_row);
                q.cluster_row(n, c, scratch, blocks.data());
                q.compose_row(n, c, blocks.data(), static_cast<std::size_t>(opts.cluster_size), scratch.s.data(), dst);
            } else {
                q.compose_row(n, c, scratch.k.data(), 1, scratch.s.data(), dst);
            }
        });
        if constexpr (!std::is_same_v<Mask, std::nullptr_t>) {
            for (Eigen::Index col = 0; col < W.cols(); ++col)
                    clipped->coeffRef(r, col) = static_cast<typename Mask::Scalar>(scratch.clipped[static_cast<std::size_t>(col)]);
        }
    });
}

}  // namespace detail

// Quantizes W (rows = output channels) into p, reusing p's storage (no allocation in steady state).
// On error (NaN/Inf input) p is left empty; bad options throw before p is touched.
template <class Base, class Derived>
void quantize(const Eigen::MatrixBase<Derived>& W, const options& opts, packed<typename Derived::Scalar, Base>& p) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    check_base<Base>();
    const detail::quantizer<T, Base> q(opts);
    const detail::row_view<T> view(W.derived());
    const char* who = "grphi::quantize";
    if (opts.blocked()) {
        detail::quantize_blocked(q, view, p, who);
        return;
    }
    // Per channel without a fitted scale, a row's window depends on that row only: find its
    // maximum and quantize it while it is in cache, so the weights are read from memory once.
    detail::checked_importance(opts, view.cols(), who);
    const bool one_pass = opts.per_channel && !opts.fit_scale && opts.search == scale_search::absmax;
    std::vector<detail::channel_state> plan;
    if (!one_pass) plan = detail::plan_channels(q, view, detail::checked_row_maxima<T, Base>(view, who));

    p.rows = view.rows();
    p.cols = view.cols();
    p.opts = opts;
    p.opts.importance.reset();
    p.block_top.clear();
    p.block_steps.clear();
    p.block_scales.clear();
    const auto n = static_cast<std::size_t>(p.cols);
    const auto per_row = static_cast<std::size_t>(p.blocks_per_row());
    p.signs.resize(p.size());
    p.exponents.resize(static_cast<std::size_t>(p.rows) * per_row);
    const auto channels = static_cast<std::size_t>(p.channels());
    p.window_lo.resize(channels);
    p.window_hi.resize(channels);
    p.scale_steps.resize(channels);
    for (std::size_t ch = 0; ch < plan.size(); ++ch) {
        p.window_lo[ch] = static_cast<std::int16_t>(plan[ch].lo);
        p.window_hi[ch] = static_cast<std::int16_t>(plan[ch].hi);
        p.scale_steps[ch] = static_cast<std::int8_t>(plan[ch].step);
    }
    const auto& unscaled = grid_for<T, Base>(opts, 0);
    std::atomic<Eigen::Index> first_bad_row{p.rows};
#if GRPHI_X86_DISPATCH
    const bool avx512 = detail::avx512_rows();
#endif
    detail::for_each_row<T>(p.rows, p.cols, [&](Eigen::Index r, detail::row_scratch<T>& scratch) {
        const T* w = detail::row_pointer(view, r);
        detail::channel_state c;
        if (one_pass) {
            const auto bits = detail::quantizer<T, Base>::row_max_bits(w, n);
            if (bits >= detail::cell_table<T, Base>::inf_bits) {
                Eigen::Index seen = first_bad_row.load();
                while (r < seen && !first_bad_row.compare_exchange_weak(seen, r)) {
                }
                return;
            }
            c = detail::window_for<T, Base>(opts, unscaled, detail::from_bits<T>(bits));
            p.window_lo[static_cast<std::size_t>(r)] = static_cast<std::int16_t>(c.lo);
            p.window_hi[static_cast<std::size_t>(r)] = static_cast<std::int16_t>(c.hi);
            p.scale_steps[static_cast<std::size_t>(r)] = 0;
        } else {
            c = plan[static_cast<std::size_t>(p.channel_of_row(r))];
        }
        std::int8_t* signs = p.signs.data() + static_cast<std::size_t>(r) * n;
        std::int16_t* exps = p.exponents.data() + static_cast<std::size_t>(r) * per_row;
#if GRPHI_X86_DISPATCH
        if (avx512 && !opts.clustered()) {
            detail::window_tables<T> t;
            if (q.tables_for(c, t)) {
                kernels::avx512::quantize_row(w, n, t, q.cells().shift, exps, signs);
                return;
            }
        }
#endif
        q.eval_row(w, n, c, scratch, false);
        for (std::size_t i = 0; i < n; ++i) signs[i] = static_cast<std::int8_t>(scratch.s[i]);
        if (opts.clustered()) {
            thread_local std::vector<detail::bits_t<T>> blocks;
            blocks.resize(per_row);
            q.cluster_row(n, c, scratch, blocks.data());
            for (std::size_t b = 0; b < per_row; ++b) exps[b] = static_cast<std::int16_t>(blocks[b]);
        } else {
            // A zero weight's exponent is the window bottom, so equal tensors pack identically.
            for (std::size_t i = 0; i < n; ++i)
                exps[i] = static_cast<std::int16_t>(scratch.s[i] != 0 ? scratch.k[i] : c.lo);
        }
    });
    if (first_bad_row.load() < p.rows) {
        p = packed<T, Base>{};
        detail::throw_non_finite(view, first_bad_row.load(), who);
    }
}

// Quantizes W (rows = output channels) to signs and exponents on the base-b grid.
template <class Base, class Derived>
packed<typename Derived::Scalar, Base> quantize(const Eigen::MatrixBase<Derived>& W, const options& opts = {}) {
    packed<typename Derived::Scalar, Base> p;
    quantize<Base>(W, opts, p);
    return p;
}

namespace detail {
// The block-scale part of validate: sizes, codes, and every weight inside its block's window.
template <class T, class Base, class Fail>
void validate_block_scales(const packed<T, Base>& p, Fail&& fail) {
    const std::size_t blocks = p.scale_block_count();
    const bool scaled = p.opts.blocked() && p.opts.block_format != block_scale::exponent;
    const bool exponent = p.opts.blocked() && !scaled;
    if (p.block_top.size() != (exponent ? blocks : 0) || p.block_steps.size() != (exponent ? blocks : 0) ||
        p.block_scales.size() != (scaled ? blocks : 0))
        fail("block scales have " + std::to_string(p.block_top.size()) + " tops, " + std::to_string(p.block_steps.size()) +
             " steps and " + std::to_string(p.block_scales.size()) + " codes; expected " + std::to_string(blocks) +
             (exponent ? " tops and steps" : scaled ? " codes" : " of none"));
    if (!p.opts.blocked()) return;
    for (std::size_t c = 0; c < p.scale_steps.size(); ++c)
        if (p.scale_steps[c] != 0) fail("channel " + std::to_string(c) + " has a scale step; block-scaled tensors keep 0");
    const auto n = static_cast<std::size_t>(p.cols);
    const auto size = static_cast<std::size_t>(p.opts.block_size);
    const auto per_row = static_cast<std::size_t>(p.scale_blocks_per_row());
    const int levels = *p.opts.levels;
    if (scaled) {
        for (std::size_t c = 0; c < p.window_lo.size(); ++c)
            if (p.window_hi[c] - p.window_lo[c] >= levels)
                fail("channel " + std::to_string(c) + " has a window wider than levels=" + std::to_string(levels));
        for (std::size_t b = 0; b < blocks; ++b)
            if (!valid_block_scale_code(p.opts.block_format, p.block_scales[b]))
                fail("block " + std::to_string(b) + " has scale code " + std::to_string(p.block_scales[b]) +
                     ", not a scale in (0, 1]");
        return;  // the weights' exponents are checked against the channel windows by the caller
    }
    const grid<T, Base>* grids[2 * scale_step_max + 1] = {};
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
        for (std::size_t b = 0; b < per_row; ++b) {
            const std::size_t at = static_cast<std::size_t>(r) * per_row + b;
            const int step = p.block_steps[at];
            if (step < -scale_step_max || step > scale_step_max)
                fail("block " + std::to_string(at) + " has scale step " + std::to_string(step) + " outside [-8, 8]");
            auto& g = grids[step + scale_step_max];
            if (!g) g = &grid_for<T, Base>(p.opts, step);
            const auto [clip_lo, clip_hi] = clip_bounds(p.opts, *g);
            const int top = p.block_top[at];
            const int lo = std::max(clip_lo, top - (levels - 1));
            if (top < clip_lo || top > clip_hi || lo < p.window_lo[ch] || top > p.window_hi[ch])
                fail("block " + std::to_string(at) + " has top " + std::to_string(top) +
                     " outside its clip range or its channel window");
            const std::int16_t* exps = p.exponents.data() + static_cast<std::size_t>(r) * n;
            for (std::size_t i = b * size, end = std::min(n, i + size); i < end; ++i)
                if (exps[i] < lo || exps[i] > top)
                    fail("exponent " + std::to_string(exps[i]) + " at row " + std::to_string(r) + ", column " +
                         std::to_string(i) + " is outside its block window [" + std::to_string(lo) + ", " +
                         std::to_string(top) + "]");
        }
    }
}

// validate(p); with values == false the per-weight scans (exponents inside their windows, signs in
// {-1, 0, +1}) are left out: for a reader that has just checked exactly those while decoding them.
template <class T, class Base>
void validate_packed(const packed<T, Base>& p, bool values);
}  // namespace detail

// Checks a packed tensor's internal consistency; throws std::invalid_argument naming the problem.
template <class T, class Base>
void validate(const packed<T, Base>& p) {
    detail::validate_packed(p, true);
}

template <class T, class Base>
void detail::validate_packed(const packed<T, Base>& p, bool values) {
    check_scalar<T>();
    check_base<Base>();
    const char* who = "grphi::validate(packed)";
    p.opts.validate();
    auto fail = [&](const std::string& what) { throw std::invalid_argument(std::string(who) + ": " + what); };
    try {
        base_value_of<Base>(p.opts);
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
    if (p.rows < 0 || p.cols < 0) fail("negative shape");
    if (p.cols != 0 && static_cast<std::uint64_t>(p.rows) > max_tensor_elements / static_cast<std::uint64_t>(p.cols))
        fail("shape " + std::to_string(p.rows) + " x " + std::to_string(p.cols) + " holds more than 2^62 weights");
    if (p.signs.size() != p.size()) fail("signs has " + std::to_string(p.signs.size()) + " entries, expected " + std::to_string(p.size()));
    const auto expected_exps = static_cast<std::size_t>(p.rows) * static_cast<std::size_t>(p.blocks_per_row());
    if (p.exponents.size() != expected_exps)
        fail("exponents has " + std::to_string(p.exponents.size()) + " entries, expected " + std::to_string(expected_exps));
    const auto ch = static_cast<std::size_t>(p.channels());
    if (p.window_lo.size() != ch || p.window_hi.size() != ch || p.scale_steps.size() != ch)
        fail("per-channel state must have " + std::to_string(ch) + " entries");
    // Fitted block scales use every step's grid: the channel windows may span all their natural ranges.
    int blocks_k_lo = std::numeric_limits<int>::max(), blocks_k_hi = std::numeric_limits<int>::min();
    if (p.opts.blocked() && p.opts.fit_scale)
        for (int s = -scale_step_max; s <= scale_step_max; ++s) {
            blocks_k_lo = std::min(blocks_k_lo, grid_for<T, Base>(p.opts, s).k_lo);
            blocks_k_hi = std::max(blocks_k_hi, grid_for<T, Base>(p.opts, s).k_hi);
        }
    for (std::size_t c = 0; c < ch; ++c) {
        if (p.scale_steps[c] < -scale_step_max || p.scale_steps[c] > scale_step_max)
            fail("channel " + std::to_string(c) + " has scale step " + std::to_string(p.scale_steps[c]) + " outside [-8, 8]");
        const auto& g = grid_for<T, Base>(p.opts, p.scale_steps[c]);
        const int k_lo = std::min(g.k_lo, blocks_k_lo), k_hi = std::max(g.k_hi, blocks_k_hi);
        if (p.window_lo[c] > p.window_hi[c] || p.window_lo[c] < k_lo || p.window_hi[c] > k_hi)
            fail("channel " + std::to_string(c) + " has window [" + std::to_string(p.window_lo[c]) + ", " +
                 std::to_string(p.window_hi[c]) + "] outside the natural range [" + std::to_string(k_lo) + ", " +
                 std::to_string(k_hi) + "]");
    }
    detail::validate_block_scales(p, fail);
    if (!values) return;
    // Branch-free min/max scans (they vectorize); the first offender is searched only on failure.
    const auto per_row = static_cast<std::size_t>(p.blocks_per_row());
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const auto c = static_cast<std::size_t>(p.channel_of_row(r));
        const std::int16_t* exps = p.exponents.data() + static_cast<std::size_t>(r) * per_row;
        std::int16_t low = std::numeric_limits<std::int16_t>::max(), high = std::numeric_limits<std::int16_t>::min();
        for (std::size_t b = 0; b < per_row; ++b) {
            low = std::min(low, exps[b]);
            high = std::max(high, exps[b]);
        }
        if (per_row == 0 || (low >= p.window_lo[c] && high <= p.window_hi[c])) continue;
        for (std::size_t b = 0; b < per_row; ++b) {
            const int k = exps[b];
            if (k < p.window_lo[c] || k > p.window_hi[c])
                fail("exponent " + std::to_string(k) + " at row " + std::to_string(r) + ", block " + std::to_string(b) +
                     " is outside its channel window");
        }
    }
    std::int8_t low = 0, high = 0;
    for (auto s : p.signs) {
        low = std::min(low, s);
        high = std::max(high, s);
    }
    if (low < -1 || high > 1)
        for (auto s : p.signs)
            if (s < -1 || s > 1) fail("sign value " + std::to_string(s) + " is not -1, 0 or +1");
}

namespace detail {
// dequantize() of a tensor already validated (the file reader validates each part once).
template <class T, class Base, class Out>
void dequantize_valid(const packed<T, Base>& p, Out&& out) {
    detail::prepare_output(out, p.rows, p.cols, "grphi::dequantize", "output");
    const detail::quantizer<T, Base> q(p.opts);
    const auto n = static_cast<std::size_t>(p.cols);
    const auto per_row = static_cast<std::size_t>(p.blocks_per_row());
    const auto block = static_cast<std::size_t>(p.block_size());
    std::vector<T> buffer(n);
#if GRPHI_X86_DISPATCH
    const bool avx512 = detail::avx512_rows();
#endif
    if (p.opts.blocked()) {
        const detail::block_quantizer<T, Base> bq(q, nullptr);
        const auto scale_blocks = static_cast<std::size_t>(p.scale_blocks_per_row());
        const bool scaled = p.opts.block_format != block_scale::exponent;
        for (Eigen::Index r = 0; r < p.rows; ++r) {
            const auto row = static_cast<std::size_t>(r);
            const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
            const detail::channel_state c{p.window_lo[ch], p.window_hi[ch], 0};
            const std::int8_t* steps = scaled ? nullptr : p.block_steps.data() + row * scale_blocks;
            const std::uint16_t* scales = scaled ? p.block_scales.data() + row * scale_blocks : nullptr;
            detail::write_row<T>(out, r, buffer, [&](T* dst) {
                bq.compose(n, c, p.exponents.data() + row * n, p.signs.data() + row * n, steps, scales, dst);
            });
        }
        return;
    }
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const auto ch = static_cast<std::size_t>(p.channel_of_row(r));
        const detail::channel_state c{p.window_lo[ch], p.window_hi[ch], p.scale_steps[ch]};
        const auto* exps = p.exponents.data() + static_cast<std::size_t>(r) * per_row;
        const auto* signs = p.signs.data() + static_cast<std::size_t>(r) * n;
        detail::write_row<T>(out, r, buffer, [&](T* dst) {
#if GRPHI_X86_DISPATCH
            if (avx512 && block == 1) {
                // Window levels in registers when the window fits the register table, else gathered.
                const auto& g = q.grid_of(c);
                const bool in_registers = c.hi - c.lo < int(detail::window_levels<T>::entries);
                detail::window_levels<T> t;
                if (in_registers)
                    for (int k = c.lo; k <= c.hi; ++k) t.level[k - c.lo] = detail::to_bits(g.level_of(k));
                kernels::avx512::compose_row(n, c.lo, t, in_registers, g.level.data(), g.k_lo, exps, signs, dst);
                return;
            }
#endif
            q.compose_row_packed(n, c, exps, block, signs, dst);
        });
    }
}
}  // namespace detail

// Rebuilds the weights into out (any Eigen matrix of the right shape; plain matrices are resized).
template <class T, class Base, class Out>
void dequantize(const packed<T, Base>& p, Out&& out) {
    validate(p);
    detail::dequantize_valid(p, std::forward<Out>(out));
}

template <class T, class Base>
row_matrix<T> dequantize(const packed<T, Base>& p) {
    row_matrix<T> out;  // sized after validation: a forged shape never reaches Eigen
    dequantize(p, out);
    return out;
}

// The QAT forward: out = dequantize(quantize(W, opts)), bit for bit, without building the packed tensor.
template <class Base, class Derived, class Out>
void fake_quantize(const Eigen::MatrixBase<Derived>& W, const options& opts, Out&& out) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    check_base<Base>();
    const detail::row_view<T> view(W.derived());
    detail::fake_quantize_impl<T, Base, std::remove_reference_t<Out>, std::nullptr_t>(view, opts, out, nullptr);
}

// Same, and clipped(r, c) = 1 where the weight's exponent fell outside its channel window (the STE mask).
template <class Base, class Derived, class Out, class Mask>
void fake_quantize(const Eigen::MatrixBase<Derived>& W, const options& opts, Out&& out, Mask&& clipped) {
    using T = typename Derived::Scalar;
    check_scalar<T>();
    check_base<Base>();
    const detail::row_view<T> view(W.derived());
    auto* mask = &clipped;
    detail::fake_quantize_impl<T, Base, std::remove_reference_t<Out>, std::remove_reference_t<Mask>>(view, opts, out, mask);
}

template <class Base, class Derived>
row_matrix<typename Derived::Scalar> fake_quantize(const Eigen::MatrixBase<Derived>& W, const options& opts = {}) {
    row_matrix<typename Derived::Scalar> out(W.rows(), W.cols());
    fake_quantize<Base>(W, opts, out);
    return out;
}

}  // namespace grphi

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
