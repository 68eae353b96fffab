// grphi: logarithmic weight quantization (sign * b^k) for neural networks. The umbrella header.
// Data flow: weights -> exponents (quantize) -> packed tensor -> coded stream (container), and back.
#pragma once

#include "base.hpp"
#include "continuous.hpp"
#include "entropy.hpp"
#include "levels.hpp"
#include "options.hpp"
#include "packed.hpp"
#include "quantize.hpp"

#define GRPHI_VERSION_MAJOR 0
#define GRPHI_VERSION_MINOR 1
#define GRPHI_VERSION_PATCH 0
