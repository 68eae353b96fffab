// How block formats cut a matrix: blocks run along a row, and fixed bits/weight count every block's scale.
//
// A row of `cols` weights in blocks of `block` has ceil(cols / block) blocks; when `block` does not
// divide `cols` the last one is short and holds only the row's real members (fc1's 784-wide rows in
// blocks of 32: 24 full blocks and one of 16). Every baseline in include/grphi/baselines/ uses these.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

namespace grphi::baselines {

// Blocks in one row of `cols` weights; the last one is short when `block` does not divide `cols`.
inline std::size_t blocks_per_row(std::size_t cols, std::size_t block) {
    if (block == 0) throw std::invalid_argument("grphi::baselines::blocks_per_row: block size 0");
    return (cols + block - 1) / block;
}

// Real members of block `index` of a row: `block`, or fewer for the short tail block.
inline std::size_t block_length(std::size_t cols, std::size_t block, std::size_t index) {
    const std::size_t first = index * block;
    if (first >= cols)
        throw std::out_of_range("grphi::baselines::block_length: block " + std::to_string(index) +
                                " starts past the row's " + std::to_string(cols) + " weights");
    return cols - first < block ? cols - first : block;
}

// The one bits/weight rule of the fixed-rate formats: code_bits for every real weight, plus
// scale_bits for every block of every row, plus extra_bits for the whole tensor (e.g. per-channel
// scales), over rows*cols. Q4_0 on a 784-wide row: 4 + 25*16/784.
inline double fixed_bits_per_weight(std::size_t rows, std::size_t cols, double code_bits, std::size_t block,
                                    double scale_bits_per_block, double extra_bits = 0) {
    const double weights = static_cast<double>(rows) * static_cast<double>(cols);
    if (weights == 0) return 0;
    const double blocks = static_cast<double>(rows) * static_cast<double>(blocks_per_row(cols, block));
    return code_bits + (blocks * scale_bits_per_block + extra_bits) / weights;
}

}  // namespace grphi::baselines
