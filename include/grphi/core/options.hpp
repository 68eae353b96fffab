// The quantizer's options: one plain struct, validated before any work is done.
#pragma once

#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base.hpp"

namespace grphi {

enum class rounding { log, linear };        // nearest level in the log domain, or in the linear domain
enum class underflow { clamp, flush };      // below the window: lowest level, or exact zero

// How a block's scale is stored (options::block_size > 0). Every block of `levels` magnitudes:
//  exponent: the block's window top t, an exponent of the base (the base's own "E8M0"; int16 in
//            memory); with fit_scale also a step j in [-8, 8]: weight = sign * b^(k + j/16), k in
//            [t - levels + 1, t] (clipped by e_min/e_max), the exact levels of the grid.
//  fp16, e4m3: a number s in (0, 1] in that format (IEEE binary16; OCP FP8 E4M3), relative to its
//            channel's top level L = b^hi (hi: the smallest exponent whose level is >= the channel's
//            largest magnitude): weight = sign * (T(s) * level(k)), k in [hi - levels + 1, hi], the
//            product rounded to nearest in T. A weight takes the nearest of these values (log: by
//            x^2 against the product of neighbours; linear: by 2x against their sum; exactly).
enum class block_scale { exponent, fp16, e4m3 };

// How a scale (per block, or per channel without blocks) is chosen.
//  absmax: from the largest magnitude (the window top holds it); fit_scale adds the least-squares step.
//  mse:    a deterministic search for the scale with the least squared error, weighted by
//          options::importance when set (exponent scales: tops t and t - 1 x the steps; fp16/e4m3:
//          absmax * b^(-u/16), u = 0..32, each refitted once by least squares; e4m3 also every code
//          from absmax / b^2 to absmax * b^(1/2)).
enum class scale_search { absmax, mse };

struct options {
    bool per_channel = true;                // rows are output channels, each with its own window/scale
    std::optional<int> e_min;               // absolute exponent clip (inclusive)
    std::optional<int> e_max;
    std::optional<int> levels;              // per-channel window of this many exponents below the top
    bool fit_scale = false;                 // per-channel scale b^(j/16), j in [-8, 8], least squares
    int cluster_size = 0;                   // 0 or 1: off; else one shared exponent per block of a row
    rounding round = rounding::log;
    underflow under = underflow::clamp;
    std::optional<double> base_value;       // b for grphi::custom (finite, >= 1.03); unset for named bases
    int block_size = 0;                     // 0: off; else each run of this many weights of a row has its own scale
    block_scale block_format = block_scale::exponent;  // how a block scale is stored (block_size > 0)
    scale_search search = scale_search::absmax;
    // Per-column weights of the squared error in searches (e.g. mean squared activation): size = cols,
    // finite and >= 0. Calibration input, not part of the format: quantize does not keep it in packed::opts.
    std::shared_ptr<const std::vector<double>> importance;

    // Throws std::invalid_argument naming the offending option.
    void validate() const {
        constexpr int limit = 32767;
        if (e_min && (*e_min < -limit || *e_min > limit))
            throw std::invalid_argument("grphi::options: e_min=" + std::to_string(*e_min) + " is outside [-32767, 32767]");
        if (e_max && (*e_max < -limit || *e_max > limit))
            throw std::invalid_argument("grphi::options: e_max=" + std::to_string(*e_max) + " is outside [-32767, 32767]");
        if (e_min && e_max && *e_min > *e_max)
            throw std::invalid_argument("grphi::options: e_min=" + std::to_string(*e_min) + " is greater than e_max=" +
                                        std::to_string(*e_max));
        if (levels && (*levels < 1 || *levels > 65535))
            throw std::invalid_argument("grphi::options: levels=" + std::to_string(*levels) + " must be in [1, 65535]");
        if (cluster_size < 0)
            throw std::invalid_argument("grphi::options: cluster_size=" + std::to_string(cluster_size) + " must be >= 0");
        if (round != rounding::log && round != rounding::linear)
            throw std::invalid_argument("grphi::options: rounding has an unknown value");
        if (under != underflow::clamp && under != underflow::flush)
            throw std::invalid_argument("grphi::options: underflow has an unknown value");
        if (base_value) check_base_value(*base_value);
        if (block_size < 0 || block_size > (1 << 24))
            throw std::invalid_argument("grphi::options: block_size=" + std::to_string(block_size) + " must be in [0, 16777216]");
        if (block_format != block_scale::exponent && block_format != block_scale::fp16 && block_format != block_scale::e4m3)
            throw std::invalid_argument("grphi::options: block_format has an unknown value");
        if (search != scale_search::absmax && search != scale_search::mse)
            throw std::invalid_argument("grphi::options: search has an unknown value");
        if (blocked()) {
            if (!levels)
                throw std::invalid_argument("grphi::options: block_size=" + std::to_string(block_size) +
                                            " needs levels (the magnitudes of a block)");
            if (clustered())
                throw std::invalid_argument("grphi::options: block_size and cluster_size > 1 cannot be combined");
            if (block_format != block_scale::exponent && fit_scale)
                throw std::invalid_argument("grphi::options: fit_scale applies to exponent block scales; fp16/e4m3 "
                                            "scales are searched with search=mse");
            if (block_format != block_scale::exponent && *levels > 256)
                throw std::invalid_argument("grphi::options: levels=" + std::to_string(*levels) +
                                            " exceeds 256, the most an fp16/e4m3 block scale takes");
        } else if (block_format != block_scale::exponent) {
            throw std::invalid_argument("grphi::options: block_format fp16/e4m3 needs block_size > 0");
        }
        if (importance)
            for (double v : *importance)
                if (!(std::isfinite(v) && v >= 0))
                    throw std::invalid_argument("grphi::options: importance has " + detail::number_text(v) +
                                                "; every entry must be finite and >= 0");
    }

    bool clustered() const { return cluster_size > 1; }
    bool blocked() const { return block_size > 0; }

    // A run-time base (grphi::custom) must be finite and >= 1.03; throws std::invalid_argument naming it.
    static void check_base_value(double b) {
        if (!(std::isfinite(b) && b >= static_cast<double>(min_base_value)))
            throw std::invalid_argument("grphi::options: base_value=" + detail::number_text(b) +
                                        " must be a finite number >= 1.03");
    }
};

// Scale steps: a channel's scale is b^(step / scale_denominator).
inline constexpr int scale_denominator = 16;
inline constexpr int scale_step_max = scale_denominator / 2;

}  // namespace grphi
