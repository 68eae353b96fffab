// The committed format-1 fixtures (tests/data/format1/*.grphi): which tensors each file holds and the
// deterministic weights they were quantized from, so a test can recompute every expected value.
// The files were written by tests/data/format1/make_fixtures.cpp with the format-1 writer (commit
// "format 1 fixtures", before format 2 existed); they must never be regenerated with a newer writer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Core>

#include <grphi/core/options.hpp>

namespace grphi_test::format1 {

// Weights from integer arithmetic only (no libm), so every platform recomputes the same values:
// about one in seven is an exact zero, the rest are (k/1000) * 2^-j with k in [-1000, 1000], j in [0, 5].
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> weights(Eigen::Index rows, Eigen::Index cols,
                                                                         std::uint32_t seed, bool zeros_only = false) {
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) {
            std::uint32_t h = seed * 2654435761u + static_cast<std::uint32_t>(r) * 40503u + static_cast<std::uint32_t>(c) * 9973u;
            h ^= h >> 15;
            h *= 2246822519u;
            h ^= h >> 13;
            const int k = static_cast<int>(h % 2001u) - 1000;
            const int j = static_cast<int>((h >> 11) % 6u);
            W(r, c) = (zeros_only || h % 7u == 0) ? T(0) : static_cast<T>(k) / T(1000) / static_cast<T>(1 << j);
        }
    return W;
}

enum class scalar { f32, f64 };
enum class base { phi, two, custom_1_5 };

struct tensor {
    std::string name;
    scalar type;
    base b;
    Eigen::Index rows, cols;
    std::uint32_t seed;
    bool zeros_only;
    grphi::options opts;  // base_value set for custom_1_5
};

struct file {
    std::string name;  // under tests/data/format1/
    std::vector<tensor> tensors;
};

inline std::vector<file> files() {
    grphi::options plain;
    grphi::options fit;
    fit.fit_scale = true;
    fit.levels = 6;
    grphi::options custom;
    custom.base_value = 1.5;
    custom.e_min = -12;
    custom.e_max = 2;
    grphi::options clustered;
    clustered.cluster_size = 4;
    clustered.per_channel = false;
    grphi::options linear_flush;
    linear_flush.round = grphi::rounding::linear;
    linear_flush.under = grphi::underflow::flush;
    linear_flush.levels = 3;
    return {
        {"float_phi.grphi", {{"w", scalar::f32, base::phi, 5, 7, 1, false, plain}}},
        {"double_two_fit_scale.grphi", {{"layer.weight", scalar::f64, base::two, 4, 9, 2, false, fit}}},
        {"float_custom.grphi", {{"custom", scalar::f32, base::custom_1_5, 3, 8, 3, false, custom}}},
        {"double_phi_clustered.grphi", {{"clustered", scalar::f64, base::phi, 4, 10, 4, false, clustered}}},
        {"zeros_and_empty.grphi",
         {{"zeros", scalar::f32, base::two, 3, 4, 5, true, plain},
          {"no_rows", scalar::f32, base::phi, 0, 5, 6, false, plain},
          {"no_cols", scalar::f64, base::two, 3, 0, 7, false, plain}}},
        {"mixed.grphi",
         {{"a", scalar::f64, base::phi, 2, 33, 8, false, linear_flush},
          {"b", scalar::f32, base::two, 6, 3, 9, false, fit},
          {"c", scalar::f32, base::custom_1_5, 1, 1, 10, false, custom}}},
        {"no_tensors.grphi", {}},
    };
}

}  // namespace grphi_test::format1
