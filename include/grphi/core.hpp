// grphi's core, and nothing else: bases, options, exact level grids, the packed tensor and
// quantize / dequantize / fake_quantize. What a project that only quantizes needs (Eigen and xsimd).
#pragma once

#include "core/base.hpp"
#include "core/options.hpp"
#include "core/levels.hpp"
#include "core/packed.hpp"
#include "core/quantize.hpp"
