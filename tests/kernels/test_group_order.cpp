// The group order the SIMD GEMVs read 4-bit rows in: checked against the byte layout of the codes
// (byte i of a 32-weight chunk holds weights i and i + 16) by decoding nibbles the slow way.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>
#include <vector>

#include <grphi/kernels/group_order.hpp>

namespace {

// Nibble j of 32-bit word L of a group (little-endian bytes), as a shift by 4j exposes it.
unsigned nibble_of_word(const std::vector<std::uint8_t>& bytes, std::size_t word, std::size_t j) {
    std::uint32_t w = 0;
    for (std::size_t b = 0; b < 4; ++b) w |= std::uint32_t(bytes[4 * word + b]) << (8 * b);
    return (w >> (4 * j)) & 0xFu;
}

template <std::size_t Lanes>
void check_lanes() {
    constexpr std::size_t group = 8 * Lanes;
    // Codes of a group laid out as code_matrix stores them: weight c in chunk c / 32, byte c % 16, high
    // nibble when c % 32 >= 16. Each weight gets a code that names it (c % 16) in a second copy of bits.
    std::vector<unsigned> code(group);
    std::vector<std::uint8_t> bytes(group / 2, 0);
    for (std::size_t c = 0; c < group; ++c) {
        code[c] = static_cast<unsigned>((c * 7 + 3) % 16);
        const std::size_t chunk = c / 32, within = c % 32, byte = 16 * chunk + within % 16;
        bytes[byte] |= static_cast<std::uint8_t>(code[c] << (within >= 16 ? 4 : 0));
    }
    std::set<std::size_t> seen;
    for (std::size_t j = 0; j < 8; ++j)
        for (std::size_t lane = 0; lane < Lanes; ++lane) {
            const std::size_t w = grphi::kernels::group_lane_weight(j, lane);
            REQUIRE(w < group);
            CHECK(nibble_of_word(bytes, lane, j) == code[w]);
            seen.insert(w);
        }
    CHECK(seen.size() == group);  // every weight of the group exactly once
}

}  // namespace

TEST_CASE("group_lane_weight names the weight whose nibble each shifted word holds, 8 and 16 lanes") {
    check_lanes<8>();
    check_lanes<16>();
}

TEST_CASE_TEMPLATE("to_group_order permutes each group and pads with zeros", A, float, double) {
    for (std::size_t cols : {0u, 1u, 63u, 64u, 65u, 127u, 128u, 129u, 300u}) {
        std::vector<A> x(cols);
        for (std::size_t c = 0; c < cols; ++c) x[c] = A(c + 1);
        std::vector<A> g8(grphi::kernels::group_padded<8>(cols)), g16(grphi::kernels::group_padded<16>(cols));
        CHECK(g8.size() % 64 == 0);
        CHECK(g16.size() % 128 == 0);
        CHECK(g8.size() >= cols);
        CHECK(g16.size() < cols + 128);
        grphi::kernels::to_group_order<8>(x.data(), cols, g8.data());
        grphi::kernels::to_group_order<16>(x.data(), cols, g16.data());
        for (std::size_t g = 0; g < g16.size(); g += 128)
            for (std::size_t j = 0; j < 8; ++j)
                for (std::size_t lane = 0; lane < 16; ++lane) {
                    const std::size_t c = g + grphi::kernels::group_lane_weight(j, lane);
                    CHECK(g16[g + 16 * j + lane] == (c < cols ? A(c + 1) : A(0)));
                }
        A sum8 = 0, sum16 = 0;
        for (A v : g8) sum8 += v;
        for (A v : g16) sum16 += v;
        CHECK(sum8 == A(cols * (cols + 1) / 2));  // a permutation plus zeros
        CHECK(sum16 == A(cols * (cols + 1) / 2));
    }
}

TEST_CASE("reads_groups: float activations, the multiply, 4-bit codes, one block per row") {
    grphi::kernels::code_view v{};
    v.bits = 4;
    v.blocks_per_row = 1;
    using grphi::kernels::level_product;
    CHECK(grphi::kernels::reads_groups<float>(v, level_product::multiply));
    CHECK_FALSE(grphi::kernels::reads_groups<double>(v, level_product::multiply));
    CHECK_FALSE(grphi::kernels::reads_groups<float>(v, level_product::exponent_add));
    v.blocks_per_row = 2;
    CHECK_FALSE(grphi::kernels::reads_groups<float>(v, level_product::multiply));
    v.blocks_per_row = 1;
    v.bits = 8;
    CHECK_FALSE(grphi::kernels::reads_groups<float>(v, level_product::multiply));
}
