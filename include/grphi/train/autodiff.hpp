// grphi's reverse-mode autodiff: the tape (tape.hpp) and every op (ops/*.hpp), in one include.
// See docs/autodiff.md for how an op registers its backward closure.
#pragma once

#include "tape.hpp"
#include "ops/activations.hpp"
#include "ops/conv_pool.hpp"
#include "ops/linear_algebra.hpp"
#include "ops/losses.hpp"
#include "ops/quantize_ste.hpp"
