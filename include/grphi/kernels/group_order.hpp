// Group order: how the SIMD GEMVs read 4-bit rows of one block without expanding bytes. A group of
// 8 * Lanes weights is 4 * Lanes bytes, loaded as Lanes 32-bit words; word L shifted right by 4j holds in
// its low bits the code of weight group_lane_weight(j, L) (byte i of a 32-weight chunk holds weights i and
// i + 16, and a word is 4 bytes). The activations are permuted into that order once per product, so
// vector j of a group meets the activations it multiplies. AVX2 reads groups of 64 (8 lanes), AVX-512
// groups of 128 (16 lanes).
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../compute/code_matrix.hpp"
#include "code_scalar.hpp"

namespace grphi::kernels {

inline std::size_t group_lane_weight(std::size_t j, std::size_t lane) {
    return 32 * (lane / 4) + 4 * (lane % 4) + j / 2 + 16 * (j % 2);
}

// Whether products on v read rows in group order: float activations, the multiply, 4-bit codes, one
// block per row (a block edge inside a group would need two tables in one register).
template <class A>
bool reads_groups(const code_view& v, level_product mode) {
    return std::is_same_v<A, float> && mode == level_product::multiply && v.bits == 4 && v.blocks_per_row == 1;
}

// Bytes ahead of the codes in use that the group loops prefetch into L2: whole row pairs (the AVX-512 GEMV
// reads rows two at a time, so a distance inside the pair fetches what the other row loads now), at least
// 8 KB. Zen 4, 4096 x 4096 from memory: no prefetch 2x slower, 2 KB ahead into L1 1.2x slower.
inline std::size_t prefetch_ahead(const code_view& v) {
    const std::size_t pair = 2 * v.row_bytes;
    return pair * std::max<std::size_t>(1, (8192 + pair - 1) / pair);
}

// Activations in group order: group_padded<Lanes>(cols) entries, zero past cols.
template <std::size_t Lanes>
std::size_t group_padded(std::size_t cols) {
    constexpr std::size_t group = 8 * Lanes;
    return (cols + group - 1) / group * group;
}
template <std::size_t Lanes, class A>
void to_group_order(const A* x, std::size_t cols, A* out) {
    for (std::size_t g = 0; g < group_padded<Lanes>(cols); g += 8 * Lanes)
        for (std::size_t j = 0; j < 8; ++j)
            for (std::size_t lane = 0; lane < Lanes; ++lane) {
                const std::size_t c = g + group_lane_weight(j, lane);
                out[g + Lanes * j + lane] = c < cols ? x[c] : A(0);
            }
}

}  // namespace grphi::kernels
