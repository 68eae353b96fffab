// The published 4- and 8-bit formats as table formats (table_blocks.hpp), each from its definition:
//   nf4       QLoRA / bitsandbytes NormalFloat4: 16 fixed values in [-1, 1], blocks of 64, fp32 absmax
//             scale (4 + 32/64 = 4.5 bits/weight).
//   iq4_nl    llama.cpp IQ4_NL: the fixed non-uniform int8 table {-127 .. 113}, blocks of 32, fp16 scale
//             d = m / -127 (m the value of largest magnitude) (4.5 bits/weight).
//   mxfp4     OCP MX FP4: E2M1 values, blocks of 32, E8M0 shared scale 2^(floor(log2 amax) - 2),
//             round half to even, saturating at 6 (4.25 bits/weight).
//   nvfp4     NVIDIA NVFP4: E2M1 values, blocks of 16, an E4M3 scale of amax/6 per block under one fp32
//             scale per tensor that maps the largest block scale to 448 (4.5 bits/weight + 32 per tensor).
//   fp8_e4m3  FP8 E4M3 (bias 7, max 448) with an fp32 absmax scale per output channel (8 + 32/cols).
//   fp8_e5m2  FP8 E5M2 (bias 15, max 57344), the same way.
//   apot4     APoT (Li, Dong, Wang, ICLR 2020) 4-bit weights: sign + the 8 sums a + b of
//             a in {0, 2^-1, 2^-2, 2^-4}, b in {0, 2^-3}, normalised to max 1, i.e. {0, .1, .2, .3, .4,
//             .6, .8, 1}; here with an fp16 absmax scale per block of 32 (4.5 bits/weight) in place of
//             the paper's learned per-layer clipping threshold.
//   q4_0, q8_0  llama.cpp's as tables ({-8..7}, signed-extreme fp16 scale; {-127..127}, absmax /127,
//             half away from zero): for their scale search. Plain q4_0/q8_0 are ggml_blocks.hpp, bit exact.
// Tables ascend; a format's codes are indices into them (for E2M1 and FP8: sign-magnitude order, -0 merged).
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "minifloat.hpp"
#include "table_blocks.hpp"

namespace grphi::baselines {

namespace detail {
// -m_K .. -m_1, 0, m_1 .. m_K from ascending magnitudes m_0 = 0 < m_1 < ... < m_K.
inline std::vector<double> signed_table(const std::vector<double>& magnitudes) {
    std::vector<double> out;
    for (std::size_t i = magnitudes.size(); i-- > 1;) out.push_back(-magnitudes[i]);
    out.insert(out.end(), magnitudes.begin(), magnitudes.end());
    return out;
}
}  // namespace detail

// bitsandbytes' NF4 code book (create_normal_map), index order.
inline const std::vector<double>& nf4_values() {
    static const std::vector<double> v{-1.0,
                                       -0.6961928009986877,
                                       -0.5250730514526367,
                                       -0.39491748809814453,
                                       -0.28444138169288635,
                                       -0.18477343022823334,
                                       -0.09105003625154495,
                                       0.0,
                                       0.07958029955625534,
                                       0.16093020141124725,
                                       0.24611230194568634,
                                       0.33791524171829224,
                                       0.44070982933044434,
                                       0.5626170039176941,
                                       0.7229568362236023,
                                       1.0};
    return v;
}

// ggml's kvalues_iq4nl.
inline const std::vector<double>& iq4_nl_values() {
    static const std::vector<double> v{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    return v;
}

// APoT 4-bit weight magnitudes: every sum a + b over the two sets, normalised by the largest (0.625).
inline std::vector<double> apot4_magnitudes() {
    std::vector<double> sums;
    for (double a : {0.0, 0.5, 0.25, 0.0625})
        for (double b : {0.0, 0.125}) sums.push_back(a + b);
    std::sort(sums.begin(), sums.end());
    sums.erase(std::unique(sums.begin(), sums.end()), sums.end());
    for (double& s : sums) s /= sums.back();
    return sums;
}

inline table_format nf4_format(std::size_t block = 64) {
    return {"nf4", nf4_values(), block, scale_storage::fp32, scale_rule::absmax, tie_rule::upper, 4};
}
inline table_format iq4_nl_format(std::size_t block = 32) {
    return {"iq4_nl", iq4_nl_values(), block, scale_storage::fp16, scale_rule::signed_extreme, tie_rule::upper, 4};
}
inline table_format mxfp4_format(std::size_t block = 32) {
    return {"mxfp4", detail::signed_table(e2m1.magnitudes()), block, scale_storage::e8m0, scale_rule::mx_floor,
            tie_rule::even_magnitude, 4};
}
inline table_format nvfp4_format(std::size_t block = 16) {
    return {"nvfp4", detail::signed_table(e2m1.magnitudes()), block, scale_storage::e4m3_tensor, scale_rule::absmax,
            tie_rule::even_magnitude, 4};
}
inline table_format fp8_e4m3_format() {
    return {"fp8_e4m3", detail::signed_table(e4m3.magnitudes()), 0, scale_storage::fp32, scale_rule::absmax,
            tie_rule::even_magnitude, 8};
}
inline table_format fp8_e5m2_format() {
    return {"fp8_e5m2", detail::signed_table(e5m2.magnitudes()), 0, scale_storage::fp32, scale_rule::absmax,
            tie_rule::even_magnitude, 8};
}
inline table_format apot4_format(std::size_t block = 32) {
    return {"apot4", detail::signed_table(apot4_magnitudes()), block, scale_storage::fp16, scale_rule::absmax,
            tie_rule::upper, 4};
}
inline table_format q4_0_format() {
    std::vector<double> v;
    for (int q = -8; q <= 7; ++q) v.push_back(q);
    return {"q4_0", v, 32, scale_storage::fp16, scale_rule::signed_extreme, tie_rule::upper, 4};
}
inline table_format q8_0_format() {
    std::vector<double> v;
    for (int q = -127; q <= 127; ++q) v.push_back(q);
    return {"q8_0", v, 32, scale_storage::fp16, scale_rule::absmax, tie_rule::away_from_zero, 8};
}

}  // namespace grphi::baselines
