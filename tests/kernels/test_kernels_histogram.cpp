// The counting kernels (kernels/histogram.hpp) against a brute-force count, and their users (rANS,
// the entropy report, the file writer's row collector) giving the same results on every path.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>
#include <vector>

#include <grphi/coding/entropy.hpp>
#include <grphi/format/section_codec.hpp>
#include <grphi/kernels/dispatch.hpp>
#include <grphi/kernels/histogram.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/coding/rans.hpp>

namespace {

const std::size_t adversarial_lengths[] = {0, 1, 31, 32, 33, 63, 64, 65, 1000};

// Exponents in [lo - 2, lo + width + 1] (some outside the window) with signs in {-1, 0, 1}; or one
// exponent everywhere.
struct row_data {
    std::vector<std::int16_t> exponents;
    std::vector<std::int8_t> signs;
};
row_data make_row(std::size_t n, int lo, int width, bool one_symbol, bool outside, std::mt19937& rng) {
    row_data r;
    r.exponents.resize(n);
    r.signs.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        const int spread = outside ? width + 4 : width;
        const int e = one_symbol ? lo + width / 2 : lo - (outside ? 2 : 0) + static_cast<int>(rng() % static_cast<unsigned>(spread));
        r.signs[i] = static_cast<std::int8_t>(static_cast<int>(rng() % 3) - 1);
        // Zero weights sit at the window bottom, as the quantizer writes them.
        r.exponents[i] = static_cast<std::int16_t>(r.signs[i] == 0 && !outside ? lo : e);
    }
    return r;
}

}  // namespace

TEST_CASE("histogram_4way equals a brute-force count, drops zero adds, and counts nothing for no input") {
    std::mt19937 rng(7);
    for (std::size_t n : adversarial_lengths)
        for (bool one_symbol : {false, true}) {
            CAPTURE(n);
            CAPTURE(one_symbol);
            std::vector<std::uint16_t> values(n);
            std::vector<std::uint8_t> add(n);
            for (std::size_t i = 0; i < n; ++i) {
                values[i] = static_cast<std::uint16_t>(one_symbol ? 5 : rng() % 40);
                add[i] = static_cast<std::uint8_t>(rng() % 4 != 0);
            }
            std::vector<std::uint64_t> want(40, 7), got(40, 7);  // counts are added to, not overwritten
            for (std::size_t i = 0; i < n; ++i) want[values[i]] += add[i];
            std::vector<std::uint32_t> sub(4 * 40, 123);  // scratch contents do not matter
            grphi::kernels::histogram_4way(
                n, 40, [&](std::size_t i) { return grphi::kernels::histogram_entry{values[i], add[i]}; }, sub.data(),
                got.data());
            CHECK(got == want);
        }
}

TEST_CASE("rans::histogram equals a brute-force count and still refuses symbols past the alphabet") {
    std::mt19937 rng(11);
    for (std::size_t n : adversarial_lengths) {
        std::vector<grphi::rans::symbol> s(n);
        for (auto& v : s) v = static_cast<grphi::rans::symbol>(rng() % 3 == 0 ? 4095 : rng() % 300);
        std::map<int, std::uint64_t> want;
        for (auto v : s) ++want[v];
        const auto got = grphi::rans::histogram(s);
        CHECK(got.size() == (n == 0 ? 0 : static_cast<std::size_t>(want.rbegin()->first) + 1));
        for (std::size_t v = 0; v < got.size(); ++v) CHECK(got[v] == (want.count(int(v)) ? want[int(v)] : 0));
    }
    std::vector<grphi::rans::symbol> bad(65, 3);
    bad[64] = 4096;
    CHECK_THROWS_WITH_AS(grphi::rans::histogram(bad), doctest::Contains("a symbol is >= 4096"), std::invalid_argument);
}

#if GRPHI_X86_DISPATCH
TEST_CASE("avx512::count_window_symbols equals the scalar count on random and adversarial rows") {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;
    std::mt19937 rng(3);
    for (int width : {1, 2, 15, 16, 17, 31, 32})
        for (std::size_t n : adversarial_lengths)
            for (bool one_symbol : {false, true})
                for (bool outside : {false, true})
                    for (int lo : {-40, 0, 32000}) {
                        CAPTURE(width);
                        CAPTURE(n);
                        CAPTURE(one_symbol);
                        CAPTURE(outside);
                        CAPTURE(lo);
                        const row_data r = make_row(n, lo, width, one_symbol, outside, rng);
                        std::uint64_t want[32] = {}, want_nonzero = 0, want_negative = 0;
                        for (std::size_t i = 0; i < n; ++i) {
                            if (r.signs[i] == 0) continue;
                            ++want_nonzero;
                            want_negative += r.signs[i] < 0;
                            const int d = r.exponents[i] - lo;
                            if (d >= 0 && d < width) ++want[d];
                        }
                        std::uint64_t got[32] = {}, nonzero = 0, negative = 0;
                        grphi::kernels::avx512::count_window_symbols(r.exponents.data(), r.signs.data(), n, lo, width, got,
                                                                     nonzero, negative);
                        CHECK(nonzero == want_nonzero);
                        CHECK(negative == want_negative);
                        for (int j = 0; j < width; ++j) CHECK(got[j] == want[j]);
                    }
}

TEST_CASE("avx512::count_offsets drains before its 16-bit lanes overflow (one symbol, > 32767 adds per lane)") {
    if (grphi::kernels::detected_isa() != grphi::kernels::isa::avx512) return;
    const std::size_t n = 32 * 32767 + 65;
    std::vector<std::int16_t> exponents(n, 3);
    std::vector<std::int8_t> signs(n, -1);
    std::uint64_t got[32] = {}, nonzero = 0, negative = 0;
    grphi::kernels::avx512::count_window_symbols(exponents.data(), signs.data(), n, 0, 8, got, nonzero, negative);
    CHECK(got[3] == n);
    CHECK(nonzero == n);
    CHECK(negative == n);
    for (int j = 0; j < 8; ++j)
        if (j != 3) CHECK(got[j] == 0);
}
#endif

TEST_CASE("the file writer's row collector gives the scalar results on every path") {
    std::mt19937 rng(5);
    for (int width : {1, 3, 4, 5, 8, 9, 16, 17, 40})
        for (std::size_t n : adversarial_lengths)
            for (bool one_symbol : {false, true})
                for (bool outside : {false, true}) {
                    CAPTURE(width);
                    CAPTURE(n);
                    CAPTURE(one_symbol);
                    CAPTURE(outside);
                    const int lo = -7;
                    row_data r = make_row(n, lo, width, one_symbol, outside, rng);
                    if (outside && n > 2) r.signs[n / 2] = 2;  // a sign the format does not have
                    auto run = [&](grphi::kernels::isa path, std::vector<std::uint64_t>& counts,
                                   std::vector<grphi::rans::symbol>& sign_symbols, std::vector<grphi::rans::symbol>& stored,
                                   grphi::detail::row_collector& c) {
                        grphi::kernels::scoped_isa_limit guard(path);
                        counts.assign(static_cast<std::size_t>(width), 0);
                        sign_symbols.assign(n, 0);
                        stored.assign(n + 16, 0);
                        std::vector<std::uint32_t> scratch(4 * static_cast<std::size_t>(width));
                        c = {sign_symbols.data(), stored.data()};
                        return grphi::detail::collect_row(r.signs.data(), r.exponents.data(), n, lo,
                                                          static_cast<std::size_t>(width), counts.data(), scratch.data(), c);
                    };
                    std::vector<std::uint64_t> want_counts, counts;
                    std::vector<grphi::rans::symbol> want_signs, want_stored, sign_symbols, stored;
                    grphi::detail::row_collector want_c{nullptr, nullptr}, c{nullptr, nullptr};
                    const bool want_ok = run(grphi::kernels::isa::scalar, want_counts, want_signs, want_stored, want_c);
                    if (!outside) CHECK(want_ok);
                    for (int i = 1; i < grphi::kernels::available_isa_count(); ++i) {
                        CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
                        const bool ok = run(grphi::kernels::available_isa(i), counts, sign_symbols, stored, c);
                        CHECK(ok == want_ok);
                        if (!want_ok) continue;  // a refused row is rewritten by the general path
                        CHECK(counts == want_counts);
                        CHECK(sign_symbols == want_signs);
                        const auto kept = static_cast<std::size_t>(want_c.nonzero);
                        CHECK(c.nonzero == want_c.nonzero);
                        CHECK(c.negative == want_c.negative);
                        CHECK(std::vector<grphi::rans::symbol>(stored.begin(), stored.begin() + static_cast<std::ptrdiff_t>(kept)) ==
                              std::vector<grphi::rans::symbol>(want_stored.begin(), want_stored.begin() + static_cast<std::ptrdiff_t>(kept)));
                    }
                }
}

TEST_CASE_TEMPLATE("entropy reports and coded tensor bytes are the same on every path", T, float, double) {
    std::mt19937 rng(9);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (Eigen::Index cols : {1, 17, 65, 300})
        for (int levels : {0, 4, 30}) {
            grphi::row_matrix<T> W(5, cols);
            for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<T>(normal(rng) * (i % 7 == 0 ? 0 : 1));
            grphi::options o;
            if (levels) o.levels = levels;
            const auto p = grphi::quantize<grphi::phi>(W, o);
            grphi::stored_tensor t;
            t.name = "w";
            t.base_name = "phi";
            t.rows = p.rows;
            t.cols = p.cols;
            t.opts = p.opts;
            t.signs = p.signs;
            t.exponents = p.exponents;
            t.window_lo = p.window_lo;
            t.window_hi = p.window_hi;
            t.scale_steps = p.scale_steps;
            grphi::entropy_report want;
            std::vector<std::uint8_t> want_bytes;
            {
                grphi::kernels::scoped_isa_limit scalar(grphi::kernels::isa::scalar);
                want = grphi::entropy(p);
                grphi::detail::write_tensor_data(t, want_bytes);
            }
            for (int i = 1; i < grphi::kernels::available_isa_count(); ++i) {
                grphi::kernels::scoped_isa_limit guard(grphi::kernels::available_isa(i));
                CAPTURE(cols);
                CAPTURE(levels);
                const auto got = grphi::entropy(p);
                CHECK(got.histogram == want.histogram);
                CHECK(got.sign_counts == want.sign_counts);
                CHECK(got.symbol_min == want.symbol_min);
                CHECK(got.exponent_entropy == want.exponent_entropy);
                CHECK(got.bits_per_weight == want.bits_per_weight);
                std::vector<std::uint8_t> bytes;
                grphi::detail::write_tensor_data(t, bytes);
                CHECK(bytes == want_bytes);
            }
        }
}
