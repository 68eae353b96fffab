// gemv/gemm on code matrices: every instruction-set path against the scalar reference and against
// Eigen's product with dequantize(packed), within n*eps*sum|w*x|; exact where the arithmetic is exact.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>
#include <cmath>
#include <limits>
#include <random>
#include <string>

#include <grphi/compute/code_matrix.hpp>
#include <grphi/kernels/code_matmul.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

using grphi::kernels::isa;

namespace {

template <class T>
grphi::row_matrix<T> random_weights(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.05);
    grphi::row_matrix<T> W(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) W(r, c) = static_cast<T>(normal(rng));
    if (rows > 1 && cols > 3) {
        W(1, 3) = T(0);
        W(rows - 1, cols - 1) = T(0);
    }
    return W;
}

template <class A>
Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic> random_activations(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic> X(rows, cols);
    for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = static_cast<A>(u(rng));
    return X;
}

// |a - b| within 2 * gamma_n * sum|w x| (both sums are within gamma_n of the exact one), entry by entry.
template <class A, class T>
bool within_bound(const Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic>& a, const Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic>& b,
                  const grphi::row_matrix<T>& D, const Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic>& X, std::string& why) {
    const auto n = static_cast<double>(D.cols());
    const double eps = std::numeric_limits<A>::epsilon() / 2;
    const double gamma = n * eps / (1 - n * eps);
    const Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic> magnitude =
        D.template cast<A>().template cast<long double>().cwiseAbs() * X.template cast<long double>().cwiseAbs();
    for (Eigen::Index r = 0; r < a.rows(); ++r)
        for (Eigen::Index j = 0; j < a.cols(); ++j) {
            const long double bound = 2 * gamma * magnitude(r, j) + std::numeric_limits<A>::denorm_min();
            const long double diff = std::fabs(static_cast<long double>(a(r, j)) - static_cast<long double>(b(r, j)));
            if (!(diff <= bound)) {
                why = "(" + std::to_string(r) + "," + std::to_string(j) + "): " + std::to_string(static_cast<double>(a(r, j))) +
                      " vs " + std::to_string(static_cast<double>(b(r, j)));
                return false;
            }
        }
    return true;
}

template <class A, class T, class B>
void check_all_paths(const grphi::packed<T, B>& p, int bits, Eigen::Index m, grphi::level_product mode = grphi::level_product::multiply) {
    const grphi::code_matrix<T, B> codes(p, bits);
    const auto D = grphi::dequantize(p);
    const auto X = random_activations<A>(p.cols, m, 17);
    using matrix = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic>;
    const matrix eigen = D.template cast<A>() * X;
    matrix reference;
    {
        grphi::kernels::scoped_isa_limit cap(isa::scalar);
        reference = grphi::gemm(codes, X, mode);
    }
    for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
        const isa path = grphi::kernels::available_isa(i);
        grphi::kernels::scoped_isa_limit cap(path);
        const std::string path_name = grphi::kernels::isa_name(path);
        CAPTURE(path_name);
        CAPTURE(bits);
        CAPTURE(p.rows);
        CAPTURE(p.cols);
        const matrix Y = grphi::gemm(codes, X, mode);
        REQUIRE(Y.rows() == p.rows);
        REQUIRE(Y.cols() == m);
        std::string why;
        CHECK_MESSAGE(within_bound(Y, reference, D, X, why), why);
        CHECK_MESSAGE(within_bound(Y, eigen, D, X, why), why);
        if (path == isa::avx512 && std::is_same_v<A, float> && mode == grphi::level_product::multiply &&
            static_cast<std::size_t>(m) > grphi::kernels::gemm_gemv_columns) {
            // Outer-product gemm: the scalar reference's order, so equal to it bit for bit.
            CHECK(Y == reference);
        } else {
            // Each gemm column is the gemv of that column, bit for bit, on the same path.
            bool same = true;
            for (Eigen::Index j = 0; j < m; ++j) {
                const Eigen::Matrix<A, Eigen::Dynamic, 1> y = grphi::gemv(codes, X.col(j), mode);
                for (Eigen::Index r = 0; r < p.rows; ++r)
                    if (!(y(r) == Y(r, j))) same = false;
            }
            CHECK(same);
        }
    }
}

template <class T, class B>
grphi::packed<T, B> quantized(Eigen::Index rows, Eigen::Index cols, int levels, unsigned seed, bool fit = false) {
    grphi::options o;
    o.levels = levels;
    o.fit_scale = fit;
    return grphi::quantize<B>(random_weights<T>(rows, cols, seed), o);
}

}  // namespace

TEST_CASE_TEMPLATE("every path within the bound of the scalar reference and of Eigen, float activations", T, float, double) {
    for (auto shape : {std::pair<int, int>{1, 1}, {1, 31}, {3, 32}, {2, 33}, {5, 64}, {17, 65}, {7, 100}, {3, 127}, {3, 128}, {2, 129}, {33, 257}, {4, 1000}}) {
        const auto p = quantized<T, grphi::phi>(shape.first, shape.second, 7, 3);
        for (int bits : {4, 8})
            for (Eigen::Index m : {1, 2, 3, 5, 8, 9, 17, 40}) check_all_paths<float>(p, bits, m);
    }
    check_all_paths<float>(quantized<T, grphi::sqrt2>(9, 300, 8, 4), 8, 3);
    check_all_paths<float>(quantized<T, grphi::phi>(101, 600, 7, 4), 4, 33);  // several panels, a short last one
    // Column counts whose outer-product tiles take 4 vectors of 16, then 3 or 1 (64; 61 padded to 64; 112 = 64 + 48; 77 padded to 64 + 16).
    for (Eigen::Index m : {64, 61, 112, 77}) check_all_paths<float>(quantized<T, grphi::phi>(13, 300, 7, 6), 4, m);
    check_all_paths<float>(quantized<T, grphi::phi>(7, 530, 7, 7), 8, 64);
    check_all_paths<float>(quantized<T, grphi::two>(9, 300, 7, 5, true), 4, 3);
}

TEST_CASE_TEMPLATE("every path within the bound, double activations", T, float, double) {
    for (auto shape : {std::pair<int, int>{1, 1}, {2, 33}, {17, 65}, {7, 100}, {4, 1000}}) {
        const auto p = quantized<T, grphi::phi>(shape.first, shape.second, 7, 6);
        for (int bits : {4, 8}) check_all_paths<double>(p, bits, 3);
    }
}

TEST_CASE_TEMPLATE("exponent block scales: every path within the bound, GEMM columns equal GEMV", T, float, double) {
    // Blocks of 32 and 64 run the SIMD paths (blocks start on 32-weight chunks), 48 the scalar one.
    for (int block : {32, 48, 64})
        for (bool fit : {false, true}) {
            grphi::options o;
            o.levels = 7;
            o.block_size = block;
            o.fit_scale = fit;
            const auto p = grphi::quantize<grphi::phi>(random_weights<T>(7, 150, 23), o);
            for (int bits : {4, 8}) {
                check_all_paths<float>(p, bits, 3);
                check_all_paths<double>(p, bits, 2);
            }
        }
}

TEST_CASE_TEMPLATE("fp16 and e4m3 block scales: every path within the bound, GEMM columns equal GEMV", T, float, double) {
    // Blocks of 32 and 64 run the SIMD paths, 16 the scalar one; every block has its own table segment.
    for (auto format : {grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (int block : {16, 32, 64}) {
            grphi::options o;
            o.levels = 7;  // 7 levels and the flush zero fit a 4-bit block
            o.block_size = block;
            o.block_format = format;
            // 150 columns: an even count of full blocks and a short one; 110: an odd count and a short one.
            for (Eigen::Index cols : {150, 110, 64}) {
                const auto p = grphi::quantize<grphi::phi>(random_weights<T>(7, cols, 24), o);
                for (int bits : {4, 8}) {
                    check_all_paths<float>(p, bits, 3);
                    check_all_paths<double>(p, bits, 2);
                }
            }
        }
}

TEST_CASE("8-bit register tables of every size: narrow, medium and wide windows") {
    grphi::options o;
    for (int levels : {20, 50, 120}) {
        o.levels = levels;
        auto W = random_weights<float>(6, 200, 8);
        W(2, 7) = 1e-30f;  // pulls row 2's window down to its full width
        W(3, 9) = -1e-30f;
        const auto p = grphi::quantize<grphi::sqrt2>(W, o);
        check_all_paths<float>(p, 8, 2);
    }
}

TEST_CASE("x at any alignment gives the same product on every path") {
    // The SIMD paths copy an x that is off a 64-byte boundary; the result must not depend on where x sits.
    const auto p = quantized<float, grphi::phi>(37, 200, 7, 11);
    const grphi::code_matrix<float, grphi::phi> codes(p, 4);
    const Eigen::VectorXf x = random_activations<float>(200, 1, 3).col(0);
    std::vector<float> store(200 + 64);
    for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
        grphi::kernels::scoped_isa_limit limit(grphi::kernels::available_isa(i));
        CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
        const Eigen::VectorXf reference = grphi::gemv(codes, x);
        for (std::size_t offset = 0; offset < 16; ++offset) {
            std::copy(x.data(), x.data() + 200, store.data() + offset);
            const Eigen::Map<const Eigen::VectorXf> shifted(store.data() + offset, 200);
            CHECK(grphi::gemv(codes, shifted) == reference);
        }
    }
}

TEST_CASE("empty shapes") {
    for (auto shape : {std::pair<int, int>{0, 0}, {0, 7}, {4, 0}}) {
        const auto p = quantized<float, grphi::phi>(shape.first, shape.second, 7, 1);
        const grphi::code_matrix<float, grphi::phi> codes(p, 4);
        const Eigen::VectorXf x = Eigen::VectorXf::Ones(shape.second);
        const Eigen::VectorXf y = grphi::gemv(codes, x);
        CHECK(y.size() == shape.first);
        CHECK(y.cwiseAbs().sum() == 0.0f);
        const Eigen::MatrixXf Y = grphi::gemm(codes, Eigen::MatrixXf::Ones(shape.second, 3));
        CHECK(Y.rows() == shape.first);
        CHECK(Y.cols() == 3);
    }
}

TEST_CASE("shape mismatches throw") {
    const auto p = quantized<float, grphi::phi>(3, 10, 7, 1);
    const grphi::code_matrix<float, grphi::phi> codes(p, 4);
    CHECK_THROWS_AS(grphi::gemv(codes, Eigen::VectorXf::Ones(9)), std::invalid_argument);
    CHECK_THROWS_AS(grphi::gemm(codes, Eigen::MatrixXf::Ones(11, 2)), std::invalid_argument);
    Eigen::VectorXf y(3);
    Eigen::Map<Eigen::VectorXf> fixed(y.data(), 2);
    CHECK_THROWS_AS(grphi::gemv(codes, Eigen::VectorXf::Ones(10), fixed), std::invalid_argument);
}

TEST_CASE_TEMPLATE("exact arithmetic gives identical results on every path and in both products", T, float, double) {
    // Base 2 levels times small integers: every product and partial sum is exact, so order does not matter.
    grphi::packed<T, grphi::two> p;
    p.rows = 9;
    p.cols = 203;
    p.signs.resize(p.size());
    p.exponents.resize(p.size());
    std::mt19937 rng(4);
    for (std::size_t i = 0; i < p.size(); ++i) {
        p.signs[i] = static_cast<std::int8_t>(static_cast<int>(rng() % 3) - 1);
        p.exponents[i] = static_cast<std::int16_t>(-static_cast<int>(rng() % 7));
    }
    p.window_lo.assign(9, -6);
    p.window_hi.assign(9, 0);
    p.scale_steps.assign(9, 0);
    Eigen::MatrixXf X(203, 4);
    for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = static_cast<float>(static_cast<int>(rng() % 201) - 100);
    const auto D = grphi::dequantize(p);
    const Eigen::MatrixXf exact = D.template cast<float>() * X;
    for (int bits : {4, 8}) {
        const grphi::code_matrix<T, grphi::two> codes(p, bits);
        for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
            grphi::kernels::scoped_isa_limit cap(grphi::kernels::available_isa(i));
            CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
            for (auto mode : {grphi::level_product::multiply, grphi::level_product::exponent_add}) {
                CHECK(grphi::gemm(codes, X, mode) == exact);
                CHECK(grphi::gemv(codes, X.col(1), mode) == exact.col(1));
                const Eigen::MatrixXd Xd = X.cast<double>();
                CHECK(grphi::gemm(codes, Xd, mode) == exact.cast<double>());
            }
        }
    }
}

TEST_CASE("the exponent-add product equals the multiply where x or the result is not normal") {
    grphi::options o;
    o.levels = 7;
    auto W = random_weights<float>(5, 70, 12);
    for (Eigen::Index c = 0; c < W.cols(); ++c) W(0, c) = 0.5f + 0.001f * static_cast<float>(c);  // no zeros in row 0
    const auto p = grphi::quantize<grphi::two>(W, o);
    const grphi::code_matrix<float, grphi::two> codes(p, 4);
    Eigen::VectorXf x = random_activations<float>(70, 1, 3);
    x(0) = std::numeric_limits<float>::denorm_min() * 7;  // denormal activation
    x(1) = std::numeric_limits<float>::min();              // the product underflows
    x(2) = std::numeric_limits<float>::max() / 2;          // fine
    x(3) = 0.0f;
    x(4) = -0.0f;
    for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
        grphi::kernels::scoped_isa_limit cap(grphi::kernels::available_isa(i));
        CAPTURE(grphi::kernels::isa_name(grphi::kernels::available_isa(i)));
        const Eigen::VectorXf a = grphi::gemv(codes, x, grphi::level_product::multiply);
        const Eigen::VectorXf b = grphi::gemv(codes, x, grphi::level_product::exponent_add);
        // Same products; the multiply path may fuse (FMA) where a product is inexact, so allow one rounding.
        for (Eigen::Index r = 0; r < 5; ++r)
            CHECK(std::fabs(a(r) - b(r)) <= 2e-6f * (std::fabs(a(r)) + 1e-30f) * 70);
    }
}

#if defined(_OPENMP)
TEST_CASE("output identical for any thread count") {
    const auto p = quantized<float, grphi::phi>(300, 1100, 7, 9);
    const grphi::code_matrix<float, grphi::phi> codes(p, 4);
    const auto X = random_activations<float>(1100, 3, 5);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const Eigen::MatrixXf one = grphi::gemm(codes, X);
    const Eigen::VectorXf v1 = grphi::gemv(codes, X.col(0));
    omp_set_num_threads(2);
    const Eigen::MatrixXf two = grphi::gemm(codes, X);
    const Eigen::VectorXf v2 = grphi::gemv(codes, X.col(0));
    omp_set_num_threads(saved);
    CHECK(one == two);
    CHECK(v1 == v2);
}
#endif

#include <grphi/train/nn.hpp>

TEST_CASE("nn::linear and nn::conv2d in eval mode run from codes, matching the fake-quantized forward") {
    grphi::options o;
    o.levels = 7;
    grphi::nn::linear fc(50, 13, true, 3);
    fc.quantizer = grphi::nn::weight_quantizer::make<grphi::phi>(o);
    grphi::nn::conv2d conv(2, 5, 3, 1, 1, true, 4);
    conv.quantizer = grphi::nn::weight_quantizer::make<grphi::phi>(o);
    fc.eval();
    conv.eval();
    const Eigen::MatrixXf input = random_activations<float>(7, 2 * 6 * 5, 9);
    const grphi::ad::matrix<float> x = input;
    auto run = [&](bool codes) {
        if (codes) {
            fc.use_codes(4);
            conv.use_codes(8);
        } else {
            fc.codes.reset();
            conv.codes.reset();
        }
        grphi::ad::tape<float> t;
        const grphi::ad::var in = t.constant(x, 2, 6, 5);
        const grphi::ad::var c = conv.forward(t, in);
        const grphi::ad::var y = fc.forward(t, grphi::ad::flatten(t, t.constant(t.value(c).leftCols(50))));
        return std::make_pair(grphi::ad::matrix<float>(t.value(c)), grphi::ad::matrix<float>(t.value(y)));
    };
    const auto fake = run(false);
    const auto packed = run(true);
    REQUIRE(fake.first.rows() == packed.first.rows());
    REQUIRE(fake.first.cols() == packed.first.cols());
    CHECK(conv.codes->code_bits() == 8);
    CHECK((fake.first - packed.first).cwiseAbs().maxCoeff() <= 1e-5f * (1 + fake.first.cwiseAbs().maxCoeff()));
    CHECK((fake.second - packed.second).cwiseAbs().maxCoeff() <= 1e-5f * (1 + fake.second.cwiseAbs().maxCoeff()));
    grphi::nn::linear plain(4, 3);
    CHECK_THROWS_AS(plain.use_codes(), std::invalid_argument);
}

TEST_CASE("codes from a stored tensor (the .grphi reader) equal the packed tensor's") {
    const auto p = quantized<float, grphi::sqrt2>(6, 70, 7, 2);
    const auto stored = grphi::stored_tensor::from("w", p);
    const auto bytes = grphi::serialize({stored});
    const auto loaded = grphi::deserialize(bytes);
    const auto any = grphi::code_matrix_from<float>(loaded.at(0), 4);
    const grphi::code_matrix<float, grphi::sqrt2> direct(p, 4);
    const Eigen::VectorXf x = random_activations<float>(70, 1, 1);
    CHECK(grphi::gemv(any, x) == grphi::gemv(direct, x));
    CHECK(any.bits_per_weight() == direct.bits_per_weight());
}

TEST_CASE("codes from a stored tensor with e4m3 block scales equal the packed tensor's and Eigen on dequantize") {
    grphi::options o;
    o.levels = 7;
    o.block_size = 32;
    o.block_format = grphi::block_scale::e4m3;
    const auto p = grphi::quantize<grphi::phi>(random_weights<float>(9, 96, 25), o);
    const auto loaded = grphi::deserialize(grphi::serialize({grphi::stored_tensor::from("w", p)}));
    const auto any = grphi::code_matrix_from<float>(loaded.at(0), 4);
    const grphi::code_matrix<float, grphi::phi> direct(p, 4);
    const Eigen::VectorXf x = random_activations<float>(96, 1, 3);
    const Eigen::VectorXf y = grphi::gemv(any, x);
    CHECK(y == grphi::gemv(direct, x));
    const Eigen::VectorXf reference = (grphi::dequantize(p).template cast<double>() * x.cast<double>()).cast<float>();
    for (Eigen::Index r = 0; r < y.size(); ++r) CHECK(std::abs(y(r) - reference(r)) <= 1e-5f * (1 + std::abs(reference(r))));
}
