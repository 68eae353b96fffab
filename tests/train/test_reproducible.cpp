// Pinned Eigen blocking: the same product, bit for bit, whatever cache sizes the CPU reports.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>

#include <Eigen/Core>

#include <grphi/train/reproducible.hpp>

namespace {
bool same_bits(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}
}  // namespace

TEST_CASE("pin_eigen_blocking makes a TinyNet-sized product independent of the reported cache sizes") {
    std::srand(7);
    const Eigen::MatrixXf activations = Eigen::MatrixXf::Random(64, 784);
    const Eigen::MatrixXf weights = Eigen::MatrixXf::Random(784, 256);

    // The premise: cache sizes of different machines give different summation orders (else this test
    // proves nothing). Which pairs differ depends on the build (vector width, threads), so try several.
    const std::ptrdiff_t machines[][3] = {{16 << 10, 256 << 10, 4 << 20},   {32 << 10, 512 << 10, 16 << 20},
                                          {48 << 10, 1 << 20, 32 << 20},    {32 << 10, 2 << 20, 512 << 20},
                                          {64 << 10, 4 << 20, 128 << 20},   {8 << 10, 64 << 10, 1 << 20}};
    Eigen::setCpuCacheSizes(machines[0][0], machines[0][1], machines[0][2]);
    const Eigen::MatrixXf first = activations * weights;
    bool orders_differ = false;
    for (const auto& m : machines) {
        Eigen::setCpuCacheSizes(m[0], m[1], m[2]);
        orders_differ = orders_differ || !same_bits(first, activations * weights);
    }
    CHECK(orders_differ);

    grphi::train::pin_eigen_blocking();
    const Eigen::MatrixXf pinned = activations * weights;
    Eigen::setCpuCacheSizes(16 * 1024, 256 * 1024, 4 * 1024 * 1024);  // another machine...
    grphi::train::pin_eigen_blocking();                                   // ...pins the same sizes
    CHECK(same_bits(pinned, activations * weights));

    std::ptrdiff_t l1 = 0, l2 = 0, l3 = 0;
    Eigen::internal::manage_caching_sizes(Eigen::GetAction, &l1, &l2, &l3);
    CHECK(l1 == grphi::train::pinned_l1_bytes);
    CHECK(l2 == grphi::train::pinned_l2_bytes);
    CHECK(l3 == grphi::train::pinned_l3_bytes);
}
