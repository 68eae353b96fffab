// The quantizer's options: one plain struct, validated before any work is done.
#pragma once

#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

#include "base.hpp"

namespace grphi {

enum class rounding { log, linear };        // nearest level in the log domain, or in the linear domain
enum class underflow { clamp, flush };      // below the window: lowest level, or exact zero

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
    }

    bool clustered() const { return cluster_size > 1; }

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
