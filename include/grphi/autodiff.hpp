// Forwarding header (kept for one release): the autodiff now lives in grphi/train/autodiff.hpp,
// the tape in grphi/train/tape.hpp and the ops as free functions in grphi/train/ops/*.hpp.
#pragma once

#include "train/autodiff.hpp"
