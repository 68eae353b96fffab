// entropy(packed): histogram, entropies and the bits-per-weight estimate against a direct count.
#include <doctest/doctest.h>

#include <grphi/coding/entropy.hpp>
#include <grphi/core/quantize.hpp>

#include <cmath>
#include <map>
#include <random>

namespace {

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};

long double entropy_of(const std::map<long long, long long>& counts) {
    long double total = 0, h = 0;
    for (const auto& kv : counts) total += kv.second;
    for (const auto& kv : counts)
        if (kv.second) h -= (kv.second / total) * std::log2(kv.second / total);
    return h;
}

template <class T>
grphi::row_matrix<T> laplace_weights(Eigen::Index rows, Eigen::Index cols, unsigned seed, double zero_fraction) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> expo(50.0);
    std::uniform_real_distribution<double> u(0, 1);
    grphi::row_matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        const double r = u(rng);
        W.data()[i] = r < zero_fraction ? T(0) : static_cast<T>((u(rng) < 0.5 ? -1 : 1) * expo(rng));
    }
    return W;
}

}  // namespace

TEST_CASE("shannon_entropy of simple histograms") {
    CHECK(grphi::shannon_entropy(std::vector<int>{}) == 0.0);
    CHECK(grphi::shannon_entropy(std::vector<int>{0, 0}) == 0.0);
    CHECK(grphi::shannon_entropy(std::vector<int>{7}) == 0.0);
    CHECK(grphi::shannon_entropy(std::vector<int>{5, 5}) == doctest::Approx(1.0));
    CHECK(grphi::shannon_entropy(std::vector<int>{1, 1, 1, 1, 0, 0, 1, 1, 1, 1}) == doctest::Approx(3.0));
    CHECK(grphi::shannon_entropy(std::vector<int>{1, 3}) == doctest::Approx(0.8112781244591328));
}

TEST_CASE_TEMPLATE("entropy report matches a direct count", C, combo<float, grphi::phi>, combo<double, grphi::two>,
                   combo<float, grphi::sqrt2>, combo<double, grphi::phi>) {
    using T = typename C::scalar;
    using B = typename C::base;
    const auto W = laplace_weights<T>(13, 97, 3, 0.1);
    for (int cluster : {0, 8}) {
        for (bool fit : {false, true}) {
            grphi::options o;
            o.levels = 6;
            o.cluster_size = cluster;
            o.fit_scale = fit;
            o.under = grphi::underflow::flush;
            const auto p = grphi::quantize<B>(W, o);
            const auto rep = grphi::entropy(p);

            std::map<long long, long long> exps;
            std::map<long long, long long> signs;
            long long nonzero = 0;
            for (Eigen::Index r = 0; r < p.rows; ++r)
                for (Eigen::Index c = 0; c < p.cols; ++c) {
                    const int s = p.signs[static_cast<std::size_t>(r * p.cols + c)];
                    signs[s]++;
                    nonzero += s != 0;
                }
            const Eigen::Index block = cluster > 1 ? cluster : 1;
            for (Eigen::Index r = 0; r < p.rows; ++r)
                for (Eigen::Index b = 0; b * block < p.cols; ++b) {
                    bool used = false;
                    for (Eigen::Index c = b * block; c < std::min(p.cols, (b + 1) * block); ++c)
                        used = used || p.signs[static_cast<std::size_t>(r * p.cols + c)] != 0;
                    if (used) exps[p.exponent(r, b * block)]++;
                }
            long long symbols = 0;
            for (const auto& kv : exps) {
                symbols += kv.second;
                CHECK(rep.histogram[static_cast<std::size_t>(kv.first - rep.symbol_min)] == std::uint64_t(kv.second));
            }
            CHECK(rep.exponent_symbols == std::size_t(symbols));
            CHECK(rep.nonzero == std::size_t(nonzero));
            CHECK(rep.weights == p.size());
            CHECK(rep.exponent_entropy == doctest::Approx(double(entropy_of(exps))).epsilon(1e-12));
            CHECK(rep.sign_entropy == doctest::Approx(double(entropy_of(signs))).epsilon(1e-12));
            const double metadata = double(p.rows) * (32 + (fit ? 5 : 0));
            CHECK(rep.metadata_bits == metadata);
            const double expected_bits = (double(symbols) * double(entropy_of(exps)) +
                                          double(p.size()) * double(entropy_of(signs)) + metadata) /
                                         double(p.size());
            CHECK(rep.bits_per_weight == doctest::Approx(expected_bits).epsilon(1e-12));
        }
    }
}

TEST_CASE_TEMPLATE("entropy of known distributions", T, float, double) {
    const auto& g = grphi::grid_for<T, grphi::phi>();
    // Half the weights at phi^0, half at -phi^-1: one bit of exponent, one bit of sign.
    grphi::row_matrix<T> W(2, 8);
    for (Eigen::Index c = 0; c < 8; ++c) {
        W(0, c) = c % 2 ? g.level_of(0) : -g.level_of(-1);
        W(1, c) = c % 2 ? g.level_of(0) : -g.level_of(-1);
    }
    grphi::options o;
    o.per_channel = false;
    const auto rep = grphi::entropy(grphi::quantize<grphi::phi>(W, o));
    CHECK(rep.exponent_entropy == doctest::Approx(1.0));
    CHECK(rep.sign_entropy == doctest::Approx(1.0));
    CHECK(rep.bits_per_weight == doctest::Approx((16.0 + 16.0 + 32.0) / 16.0));

    // All zeros: nothing to code but the metadata.
    const grphi::row_matrix<T> Z = grphi::row_matrix<T>::Zero(3, 5);
    const auto z = grphi::entropy(grphi::quantize<grphi::phi>(Z));
    CHECK(z.exponent_symbols == 0);
    CHECK(z.exponent_entropy == 0.0);
    CHECK(z.sign_entropy == 0.0);
    CHECK(z.bits_per_weight == doctest::Approx(3 * 32.0 / 15.0));

    // Empty tensor: an empty report, no division by zero.
    const grphi::row_matrix<T> E(0, 4);
    const auto e = grphi::entropy(grphi::quantize<grphi::phi>(E));
    CHECK(e.weights == 0);
    CHECK(e.bits_per_weight == 0.0);
}

TEST_CASE("entropy refuses a corrupt packed tensor instead of writing out of bounds") {
    grphi::row_matrix<float> W = grphi::row_matrix<float>::Constant(2, 3, 0.5f);
    auto p = grphi::quantize<grphi::phi>(W);
    p.exponents[4] = static_cast<std::int16_t>(p.window_hi[1] + 100);
    CHECK_THROWS_AS(grphi::entropy(p), std::invalid_argument);
    p = grphi::quantize<grphi::phi>(W);
    p.signs.pop_back();
    CHECK_THROWS_AS(grphi::entropy(p), std::invalid_argument);
}

TEST_CASE("block-scaled tensors: offsets below the block top, and every block's scale in the bits") {
    grphi::row_matrix<float> W(2, 40);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = 0.01f * static_cast<float>((i % 13) - 6);
    grphi::options o;
    o.levels = 8;
    o.block_size = 32;  // 40 columns: one block of 32 and a short one of 8 per row
    for (auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3}) {
        o.block_format = format;
        const auto p = grphi::quantize<grphi::phi>(W, o);
        const auto rep = grphi::entropy(p);
        CHECK(rep.symbol_min == 0);
        REQUIRE(rep.histogram.size() == 8);
        CHECK(rep.exponent_symbols == rep.nonzero);
        const double scale_bits = format == grphi::block_scale::fp16 ? 16 : 8;
        CHECK(rep.metadata_bits == doctest::Approx(2 * 32.0 + 4 * scale_bits));
        // Fixed rate: sign + 3 offset bits, 2 rows x 2 blocks of scales, 2 channel windows, over 80 weights.
        CHECK(grphi::fixed_bits_per_weight(p) == doctest::Approx(4.0 + (4 * scale_bits + 64.0) / 80.0));
    }
}
