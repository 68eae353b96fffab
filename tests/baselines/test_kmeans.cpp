// k-means weight sharing: Lloyd's contract (monotone cost, nearest-centre indices, centres = cluster
// means at the fixed point) checked by brute force; exact recovery; determinism; shapes; bad inputs.
#include <grphi/baselines/kmeans.hpp>

#include <doctest/doctest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

template <class T>
using row_matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
row_matrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, bool laplacian, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.02);
    std::exponential_distribution<double> exponential(50.0);
    row_matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i)
        W.data()[i] = static_cast<T>(laplacian ? (rng() % 2 ? 1 : -1) * exponential(rng) : normal(rng));
    return W;
}

// Mean squared error of the reconstruction, computed directly in long double.
template <class T, class IndexT>
long double direct_mse(const row_matrix<T>& W, const grphi::kmeans_packed<T, IndexT>& p) {
    long double sum = 0;
    for (Eigen::Index r = 0; r < W.rows(); ++r)
        for (Eigen::Index c = 0; c < W.cols(); ++c) {
            const long double d = static_cast<long double>(W(r, c)) - static_cast<long double>(p.value(r, c));
            sum += d * d;
        }
    return W.size() ? sum / W.size() : 0;
}

template <class T, class IndexT>
void check_lloyd_contract(const row_matrix<T>& W, const grphi::kmeans_packed<T, IndexT>& p) {
    const std::size_t k = static_cast<std::size_t>(p.opts.k);
    REQUIRE(p.codebook.size() == static_cast<std::size_t>(p.channels()) * k);
    REQUIRE(p.indices.size() == p.size());
    REQUIRE(!p.distortion.empty());
    // Monotone non-increasing over iterations, and the last entry is the real error.
    for (std::size_t t = 1; t < p.distortion.size(); ++t) CHECK(p.distortion[t] <= p.distortion[t - 1]);
    const long double mse = direct_mse(W, p);
    CHECK(std::fabs(static_cast<long double>(p.distortion.back()) - mse) <= 1e-9L * mse + 1e-30L);
    const Eigen::Index rows_per_channel = p.opts.per_channel ? 1 : p.rows;
    for (Eigen::Index ch = 0; ch < p.channels(); ++ch) {
        const T* book = p.codebook.data() + static_cast<std::size_t>(ch) * k;
        CHECK(std::is_sorted(book, book + k));
        std::vector<long double> sum(k, 0.0L);
        std::vector<std::size_t> count(k, 0);
        for (Eigen::Index r = ch * rows_per_channel; r < (ch + 1) * rows_per_channel; ++r)
            for (Eigen::Index c = 0; c < p.cols; ++c) {
                const std::size_t idx = p.indices[static_cast<std::size_t>(r * p.cols + c)];
                REQUIRE(idx < k);
                const long double w = W(r, c);
                const long double mine = std::fabs(w - static_cast<long double>(book[idx]));
                // Brute force: no centre is nearer than the chosen one.
                for (std::size_t j = 0; j < k; ++j) CHECK(mine <= std::fabs(w - static_cast<long double>(book[j])));
                sum[idx] += w;
                ++count[idx];
            }
        // At convergence every used centre is its cluster's mean (up to rounding to T).
        if (p.converged && p.opts.tolerance == 0.0)
            for (std::size_t j = 0; j < k; ++j)
                if (count[j] > 0) {
                    const long double mean = sum[j] / static_cast<long double>(count[j]);
                    CHECK(std::fabs(mean - static_cast<long double>(book[j])) <=
                          4 * std::numeric_limits<T>::epsilon() * std::fabs(mean) + 1e-300L);
                }
    }
}

}  // namespace

TEST_CASE_TEMPLATE("kmeans: Lloyd's contract on Gaussian and Laplacian weights", T, float, double) {
    for (bool laplacian : {false, true})
        for (bool per_channel : {false, true})
            for (int k : {2, 16, 37, 256}) {
                CAPTURE(laplacian);
                CAPTURE(per_channel);
                CAPTURE(k);
                const row_matrix<T> W = random_matrix<T>(per_channel ? 7 : 40, per_channel ? 301 : 50, laplacian, 21);
                grphi::kmeans_options opts;
                opts.k = k;
                opts.per_channel = per_channel;
                const auto p = grphi::quantize_kmeans(W, opts);
                CHECK(p.converged);
                check_lloyd_contract(W, p);
                if (k < 256) CHECK(p.distortion.back() < p.distortion.front());  // Lloyd improves on the seeds
            }
}

TEST_CASE_TEMPLATE("kmeans: more centres never hurt much and rate-distortion behaves", T, float, double) {
    const row_matrix<T> W = random_matrix<T>(64, 64, false, 4);
    double previous = std::numeric_limits<double>::infinity();
    for (int k : {4, 16, 64, 256}) {
        grphi::kmeans_options opts;
        opts.k = k;
        const double mse = grphi::quantize_kmeans(W, opts).distortion.back();
        CHECK(mse < previous);
        previous = mse;
    }
    // A Lloyd-Max quantizer of a Gaussian at 16 levels: SQNR about 20.2 dB (Max 1960); sample noise aside.
    grphi::kmeans_options opts;
    opts.k = 16;
    const double mse = grphi::quantize_kmeans(W, opts).distortion.back();
    const double sqnr = 10 * std::log10(static_cast<double>(W.template cast<double>().squaredNorm()) / W.size() / mse);
    CHECK(sqnr > 19.5);
    CHECK(sqnr < 21.5);
}

TEST_CASE_TEMPLATE("kmeans: a tensor with only k distinct values is recovered exactly", T, float, double) {
    std::mt19937_64 rng(8);
    for (int k : {2, 5, 16, 255, 256}) {
        CAPTURE(k);
        std::vector<T> values;
        while (static_cast<int>(values.size()) < k) {
            const T v = static_cast<T>(std::ldexp(static_cast<double>(rng() % 2000001) - 1000000.0, -20));
            if (std::find(values.begin(), values.end(), v) == values.end()) values.push_back(v);
        }
        row_matrix<T> W(33, 41);
        for (Eigen::Index i = 0; i < W.size(); ++i)
            W.data()[i] = values[static_cast<std::size_t>(i < k ? i : static_cast<Eigen::Index>(rng() % static_cast<std::uint64_t>(k)))];
        grphi::kmeans_options opts;
        opts.k = k;
        const auto p = grphi::quantize_kmeans<std::uint8_t>(W, opts);
        CHECK(grphi::dequantize(p) == W);
        CHECK(p.distortion.back() == 0.0);
        CHECK(p.converged);
        std::vector<T> sorted = values;
        std::sort(sorted.begin(), sorted.end());
        CHECK(std::equal(sorted.begin(), sorted.end(), p.codebook.begin()));
    }
    // Fewer distinct values than k: still exact, the codebook tail repeats the largest value.
    row_matrix<T> W(3, 4);
    W << 1, 2, 3, 1, 2, 3, -0.0, 0, 1, 2, 3, 3;
    grphi::kmeans_options opts;
    opts.k = 16;
    const auto p = grphi::quantize_kmeans(W, opts);
    CHECK(grphi::dequantize(p) == W);
    CHECK(p.codebook[0] == T(0));
    CHECK(!std::signbit(p.codebook[0]));  // -0 and +0 share one centre
    CHECK(p.codebook[15] == T(3));
}

TEST_CASE_TEMPLATE("kmeans: deterministic for a seed, independent of weight order", T, float, double) {
    const row_matrix<T> W = random_matrix<T>(30, 40, true, 99);
    grphi::kmeans_options opts;
    opts.k = 32;
    const auto a = grphi::quantize_kmeans(W, opts);
    const auto b = grphi::quantize_kmeans(W, opts);
    CHECK(a.codebook == b.codebook);
    CHECK(a.indices == b.indices);
    CHECK(a.distortion == b.distortion);
    // The seeding works on sorted weights, so a permutation of the weights changes nothing but the order.
    row_matrix<T> reversed = W.reverse();
    const auto c = grphi::quantize_kmeans(reversed, opts);
    CHECK(c.codebook == a.codebook);
    CHECK(grphi::dequantize(c) == grphi::dequantize(a).reverse());
    // Another seed draws other seeds.
    opts.seed = 12345;
    const auto d = grphi::quantize_kmeans(W, opts);
    CHECK(d.distortion.front() != a.distortion.front());
    check_lloyd_contract(W, d);
}

TEST_CASE("kmeans: the uniform draw is the documented function of mt19937_64") {
    std::mt19937_64 rng(5489u);
    // First output of the standard mt19937_64 with its default seed (C++ [rand.predef]).
    CHECK(grphi::detail::unit_draw(rng) == static_cast<double>(14514284786278117030ULL >> 11) * 0x1.0p-53);
}

TEST_CASE_TEMPLATE("kmeans: empty, 1x1 and odd shapes", T, float, double) {
    for (auto shape : {std::pair<int, int>{0, 0}, {0, 3}, {3, 0}, {1, 1}, {1, 9}, {9, 1}, {5, 7}}) {
        CAPTURE(shape.first);
        CAPTURE(shape.second);
        const row_matrix<T> W = random_matrix<T>(shape.first, shape.second, false, 5);
        for (bool per_channel : {false, true}) {
            grphi::kmeans_options opts;
            opts.k = 4;
            opts.per_channel = per_channel;
            const auto p = grphi::quantize_kmeans(W, opts);
            CHECK(p.indices.size() == static_cast<std::size_t>(shape.first * shape.second));
            const row_matrix<T> Q = grphi::dequantize(p);
            CHECK(Q.rows() == shape.first);
            CHECK(Q.cols() == shape.second);
            check_lloyd_contract(W, p);
            if (shape.first * shape.second <= 4) CHECK(Q == W);  // at most k weights: every one is a centre
            row_matrix<T> F;
            grphi::fake_quantize_kmeans(W, opts, F);
            CHECK(F == Q);
        }
    }
}

TEST_CASE_TEMPLATE("kmeans: bad inputs throw", T, float, double) {
    const row_matrix<T> W = random_matrix<T>(4, 6, false, 1);
    for (int k : {-3, 0, 1, 65537}) {
        grphi::kmeans_options opts;
        opts.k = k;
        CHECK_THROWS_AS(grphi::quantize_kmeans(W, opts), std::invalid_argument);
    }
    grphi::kmeans_options opts;
    opts.k = 257;
    CHECK_THROWS_AS(grphi::quantize_kmeans<std::uint8_t>(W, opts), std::invalid_argument);
    CHECK_NOTHROW(grphi::quantize_kmeans<std::uint16_t>(W, opts));
    opts.k = 256;
    CHECK_NOTHROW(grphi::quantize_kmeans<std::uint8_t>(W, opts));
    opts.k = 4;
    opts.max_iterations = -1;
    CHECK_THROWS_AS(grphi::quantize_kmeans(W, opts), std::invalid_argument);
    opts.max_iterations = 10;
    opts.tolerance = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(grphi::quantize_kmeans(W, opts), std::invalid_argument);
    opts.tolerance = 0;
    row_matrix<T> V = W;
    V(3, 5) = std::numeric_limits<T>::quiet_NaN();
    try {
        (void)grphi::quantize_kmeans(V, opts);
        FAIL("no exception");
    } catch (const std::domain_error& e) {
        CHECK(std::string(e.what()).find("row 3, column 5") != std::string::npos);
    }
    V(3, 5) = -std::numeric_limits<T>::infinity();
    CHECK_THROWS_AS(grphi::quantize_kmeans(V, opts), std::domain_error);
    auto p = grphi::quantize_kmeans(W, opts);
    p.indices[2] = 4;  // outside a codebook of 4
    CHECK_THROWS_AS(grphi::dequantize(p), std::invalid_argument);
}

TEST_CASE_TEMPLATE("kmeans: max_iterations caps Lloyd and tolerance stops early", T, float, double) {
    const row_matrix<T> W = random_matrix<T>(50, 80, false, 6);
    grphi::kmeans_options opts;
    opts.k = 64;
    opts.max_iterations = 0;
    const auto seeds_only = grphi::quantize_kmeans(W, opts);
    CHECK(seeds_only.iterations == 0);
    CHECK(seeds_only.distortion.size() == 1);
    check_lloyd_contract(W, seeds_only);
    opts.max_iterations = 3;
    const auto three = grphi::quantize_kmeans(W, opts);
    CHECK(three.iterations <= 3);
    CHECK(three.distortion.size() == static_cast<std::size_t>(three.iterations) + 1);
    opts.max_iterations = 100000;
    opts.tolerance = 1e-3;
    const auto loose = grphi::quantize_kmeans(W, opts);
    opts.tolerance = 0;
    const auto full = grphi::quantize_kmeans(W, opts);
    CHECK(loose.iterations <= full.iterations);
    CHECK(full.distortion.back() <= loose.distortion.back());
    check_lloyd_contract(W, full);
}
