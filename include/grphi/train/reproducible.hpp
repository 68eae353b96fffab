// Training that repeats bit for bit on any x86-64 CPU: Eigen sizes its matrix-product blocks from the
// cache sizes it reads off the CPU at run time, and the block size sets the summation order, so the
// same binary trains to different weights on machines with different caches. Pinning the sizes fixes
// the order. (A -march=native build still sums differently from a portable one: FMA and vector width.)
#pragma once

#include <cstddef>

#include <Eigen/Core>

namespace grphi::train {

// The cache sizes grphi's examples and tests pin: typical of current x86-64 server cores.
inline constexpr std::ptrdiff_t pinned_l1_bytes = 32 * 1024;
inline constexpr std::ptrdiff_t pinned_l2_bytes = 1024 * 1024;
inline constexpr std::ptrdiff_t pinned_l3_bytes = 32 * 1024 * 1024;

// Call once before training (it sets Eigen's process-wide blocking parameters; not thread-safe with
// products running on other threads).
inline void pin_eigen_blocking() { Eigen::setCpuCacheSizes(pinned_l1_bytes, pinned_l2_bytes, pinned_l3_bytes); }

}  // namespace grphi::train
