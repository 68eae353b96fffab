// Every combination of grphi::options the round-trip tests sweep, shared by several test files.
#pragma once

#include <initializer_list>
#include <vector>

#include <grphi/core/options.hpp>

namespace grphi_test {

// per_channel x levels {off, 1, 6} x clip {off, [-14, clip_max]} x the given cluster sizes x fit_scale
// x rounding x underflow.
inline std::vector<grphi::options> all_option_sets(int clip_max, std::initializer_list<int> cluster_sizes) {
    std::vector<grphi::options> sets;
    for (bool per_channel : {true, false})
        for (int levels : {0, 1, 6})
            for (int clip : {0, 1})
                for (int cluster : cluster_sizes)
                    for (bool fit : {false, true})
                        for (auto round : {grphi::rounding::log, grphi::rounding::linear})
                            for (auto under : {grphi::underflow::clamp, grphi::underflow::flush}) {
                                grphi::options o;
                                o.per_channel = per_channel;
                                if (levels) o.levels = levels;
                                if (clip) {
                                    o.e_min = -14;
                                    o.e_max = clip_max;
                                }
                                o.cluster_size = cluster;
                                o.fit_scale = fit;
                                o.round = round;
                                o.under = under;
                                sets.push_back(o);
                            }
    return sets;
}

}  // namespace grphi_test
