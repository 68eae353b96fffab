// The quantized tensor: signs, exponents and per-channel state, everything needed to rebuild it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "channels.hpp"
#include "base.hpp"
#include "options.hpp"

namespace grphi {

template <class T, class Base>
struct packed {
    using scalar_type = T;
    using base_type = Base;

    Eigen::Index rows = 0;                   // output channels
    Eigen::Index cols = 0;                   // weights per channel
    options opts;                            // the options it was quantized with
    std::vector<std::int8_t> signs;          // rows*cols, row-major: -1, 0 (exact zero) or +1
    std::vector<std::int16_t> exponents;     // rows*cols, or rows*blocks_per_row() when clustered
    std::vector<std::int16_t> window_lo;     // per channel (one entry when per-tensor): lowest exponent
    std::vector<std::int16_t> window_hi;     // per channel: highest exponent
    std::vector<std::int8_t> scale_steps;    // per channel: scale = b^(step/16); all 0 unless fit_scale
    // Block scales (opts.block_size > 0), rows*scale_blocks_per_row() entries, row-major; see block_scale.
    // The channel window [window_lo, window_hi] then spans every exponent its blocks can use.
    std::vector<std::int16_t> block_top;     // exponent scales: the block's window top
    std::vector<std::int8_t> block_steps;    // exponent scales: step j, levels b^(k + j/16); all 0 unless fit_scale
    std::vector<std::uint16_t> block_scales; // fp16 bits, or the e4m3 byte, of the block's scale in (0, 1]

    Eigen::Index channels() const { return static_cast<Eigen::Index>(channel_count(opts.per_channel, rows)); }
    Eigen::Index channel_of_row(Eigen::Index r) const { return static_cast<Eigen::Index>(grphi::channel_of_row(opts.per_channel, r)); }
    // Weights per stored exponent (cluster_size when clustered, else 1); not the scale block.
    Eigen::Index block_size() const { return opts.clustered() ? opts.cluster_size : 1; }
    // Scale blocks: opts.block_size weights of a row share a scale (the last block of a row may be short).
    Eigen::Index scale_block() const { return opts.block_size; }
    Eigen::Index scale_blocks_per_row() const {
        return opts.block_size > 0 ? (cols + opts.block_size - 1) / opts.block_size : 0;
    }
    std::size_t scale_block_count() const {
        return static_cast<std::size_t>(rows) * static_cast<std::size_t>(scale_blocks_per_row());
    }
    Eigen::Index blocks_per_row() const {
        const Eigen::Index b = block_size();
        return (cols + b - 1) / b;
    }
    std::size_t size() const { return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols); }
    // Exponent of weight (r, c): the block's exponent when clustered.
    std::int16_t exponent(Eigen::Index r, Eigen::Index c) const {
        return exponents[static_cast<std::size_t>(r * blocks_per_row() + c / block_size())];
    }
};

}  // namespace grphi
