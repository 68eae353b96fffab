// Q4_0 / Q8_0 GEMV: every path against the scalar reference and against the definition (decoded
// blocks times decoded Q8_0 activations, summed in double), within blocks * eps * sum|terms|.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <grphi/kernels/ggml_gemv.hpp>

using grphi::kernels::isa;

namespace {

Eigen::MatrixXf random_matrix(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Eigen::MatrixXf W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = normal(rng);
    return W;
}

template <class Matrix>
void check_paths(const Matrix& m, const Eigen::VectorXf& x) {
    std::vector<grphi::baselines::block_q8_0> xq(m.row_blocks());
    grphi::baselines::quantize_row_q8_0(x.data(), m.cols, xq.data());
    std::vector<float> xd(m.cols);
    grphi::baselines::dequantize_row(xq.data(), m.cols, xd.data());
    const auto D = grphi::baselines::dequantize<double>(m);
    const double eps = std::numeric_limits<float>::epsilon() / 2;
    const double gamma = static_cast<double>(m.row_blocks() + 3) * eps;
    std::vector<float> reference(m.rows);
    {
        grphi::kernels::scoped_isa_limit cap(isa::scalar);
        std::vector<grphi::baselines::block_q8_0> scratch;
        grphi::kernels::ggml_gemv(m, x.data(), reference.data(), scratch);
    }
    for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
        grphi::kernels::scoped_isa_limit cap(grphi::kernels::available_isa(i));
        const std::string path = grphi::kernels::isa_name(grphi::kernels::available_isa(i));
        CAPTURE(path);
        std::vector<float> y(m.rows);
        std::vector<grphi::baselines::block_q8_0> scratch;
        grphi::kernels::ggml_gemv(m, x.data(), y.data(), scratch);
        for (std::size_t r = 0; r < m.rows; ++r) {
            double exact = 0, magnitude = 0;
            for (std::size_t c = 0; c < m.cols; ++c) {
                exact += D(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) * xd[c];
                magnitude += std::fabs(D(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c)) * xd[c]);
            }
            CAPTURE(r);
            CHECK(std::fabs(y[r] - exact) <= gamma * magnitude + 1e-30);
            CHECK(std::fabs(y[r] - reference[r]) <= 2 * gamma * magnitude + 1e-30);
        }
    }
}

}  // namespace

TEST_CASE("Q4_0 and Q8_0 GEMV: every path against the reference and the definition") {
    for (auto shape : {std::pair<int, int>{1, 1}, {3, 31}, {5, 32}, {4, 64}, {7, 100}, {6, 96}, {9, 256}, {3, 1000}}) {
        const Eigen::MatrixXf W = random_matrix(shape.first, shape.second, 3);
        const Eigen::VectorXf x = random_matrix(shape.second, 1, 4);
        CAPTURE(shape.second);
        check_paths(grphi::baselines::quantize_q4_0(W), x);
        check_paths(grphi::baselines::quantize_q8_0(W), x);
    }
}

TEST_CASE("zero blocks and a zero activation vector") {
    Eigen::MatrixXf W = random_matrix(4, 96, 5);
    W.row(1).setZero();
    W.block(2, 32, 1, 32).setZero();
    check_paths(grphi::baselines::quantize_q4_0(W), Eigen::VectorXf::Zero(96));
    check_paths(grphi::baselines::quantize_q4_0(W), random_matrix(96, 1, 6));
    check_paths(grphi::baselines::quantize_q8_0(W), random_matrix(96, 1, 7));
}
