// grphi: logarithmic weight quantization (sign * b^k) for neural networks. The umbrella header.
// Data flow: weights -> exponents (quantize) -> packed tensor -> coded stream (container), and back.
// Not included here: fashion_mnist.hpp (needs zlib) and the checkpoint readers safetensors.hpp, npy.hpp.
#pragma once

#include "base.hpp"
#include "options.hpp"
#include "levels.hpp"
#include "quantize.hpp"
#include "packed.hpp"
#include "entropy.hpp"
#include "continuous.hpp"
#include "rans.hpp"
#include "container.hpp"
#include "uniform.hpp"
#include "kmeans.hpp"
#include "compare.hpp"
#include "autodiff.hpp"
#include "nn.hpp"
#include "optim.hpp"
#include "train/reproducible.hpp"
#include "kernels/dispatch.hpp"

#define GRPHI_VERSION_MAJOR 0
#define GRPHI_VERSION_MINOR 1
#define GRPHI_VERSION_PATCH 0
