// grphi: logarithmic weight quantization (sign * b^k) for neural networks. The umbrella header.
// Data flow (docs/architecture.md): weights -> exponents (core/) -> packed tensor -> coded stream (coding/)
// -> file (format/), and back; packed -> codes -> kernels (kernels/). Side groups: io/ (checkpoints),
// train/ (autodiff, nn, optim), baselines/ (int-N, k-means, 4-bit block formats, the comparison).
// Not included here: train/fashion_mnist.hpp (needs zlib) and the checkpoint readers io/safetensors.hpp,
// io/npy.hpp. Only quantizing: grphi/core.hpp.
#pragma once

#include "core.hpp"
#include "coding/entropy.hpp"
#include "core/continuous.hpp"
#include "coding/rans.hpp"
#include "format/container.hpp"
#include "baselines/uniform.hpp"
#include "baselines/kmeans.hpp"
#include "baselines/compare.hpp"
#include "compute/code_matrix.hpp"
#include "train/autodiff.hpp"
#include "train/nn.hpp"
#include "train/optim.hpp"
#include "train/reproducible.hpp"
#include "kernels/dispatch.hpp"

#define GRPHI_VERSION_MAJOR 0
#define GRPHI_VERSION_MINOR 1
#define GRPHI_VERSION_PATCH 0
