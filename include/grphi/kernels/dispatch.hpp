// Run-time kernel selection, the one mechanism every hot path uses: kernels for each instruction set
// are compiled side by side with target attributes, and `active_isa()` picks the best the CPU has, so
// a build without -march=native still runs AVX-512 code on an AVX-512 machine.
//
//   switch (grphi::kernels::active_isa()) {
//   case isa::avx512: return row_avx512(...);   // GRPHI_TARGET_AVX512 function
//   case isa::avx2:   return row_avx2(...);     // GRPHI_TARGET_AVX2 function
//   default:          return row_scalar(...);   // the reference every other path is tested against
//   }
//
// Tests (and users on odd hardware) cap the choice: `scoped_isa_limit guard(isa::avx2);`, or the
// environment variable GRPHI_ISA=scalar|avx2|avx512 read once at start-up.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace grphi::kernels {

// Ordered: a larger value is a superset of the smaller ones.
enum class isa : int {
    scalar = 0,  // portable C++ (may still auto-vectorise to the build's baseline)
    avx2 = 1,    // AVX2 + FMA + BMI2 + F16C + POPCNT + PCLMULQDQ
    avx512 = 2,  // AVX-512 F/BW/VL/DQ/CD on top of avx2
};

inline const char* isa_name(isa i) {
    switch (i) {
    case isa::avx512: return "avx512";
    case isa::avx2: return "avx2";
    default: return "scalar";
    }
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GRPHI_X86_DISPATCH 1
// Functions compiled for one instruction set regardless of the build's -march.
#define GRPHI_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,f16c,popcnt,lzcnt,pclmul")))
#define GRPHI_TARGET_AVX512 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma,bmi,bmi2,f16c,popcnt,lzcnt,pclmul")))
#else
#define GRPHI_X86_DISPATCH 0
#define GRPHI_TARGET_AVX2
#define GRPHI_TARGET_AVX512
#endif

// What the CPU supports (also checked: the OS saves the wide registers, which __builtin_cpu_supports does).
inline isa detected_isa() {
#if GRPHI_X86_DISPATCH
    static const isa best = [] {
        __builtin_cpu_init();
        const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt") &&
                          __builtin_cpu_supports("pclmul");
        const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512cd");
        return avx512 ? isa::avx512 : avx2 ? isa::avx2 : isa::scalar;
    }();
    return best;
#else
    return isa::scalar;
#endif
}

namespace detail {
inline isa isa_from_environment() {
    const char* text = std::getenv("GRPHI_ISA");
    if (text == nullptr) return isa::avx512;
    if (std::strcmp(text, "scalar") == 0) return isa::scalar;
    if (std::strcmp(text, "avx2") == 0) return isa::avx2;
    return isa::avx512;
}
// The cap set by tests or GRPHI_ISA; relaxed atomic: it is read on every dispatch from any thread.
inline std::atomic<int>& isa_limit() {
    static std::atomic<int> limit{static_cast<int>(isa_from_environment())};
    return limit;
}
}  // namespace detail

// The instruction set kernels use now: the CPU's best, capped by the limit.
inline isa active_isa() {
    const int limit = detail::isa_limit().load(std::memory_order_relaxed);
    const int best = static_cast<int>(detected_isa());
    return static_cast<isa>(best < limit ? best : limit);
}

// Whether kernels may use the build's own vector code (xsimd's default architecture): everywhere but
// under a scalar cap, so a scalar run is the plain C++ reference on every platform.
inline bool baseline_vectors_allowed() { return detail::isa_limit().load(std::memory_order_relaxed) > 0; }

inline void set_isa_limit(isa limit) { detail::isa_limit().store(static_cast<int>(limit), std::memory_order_relaxed); }

// Caps the kernels for a scope (tests run every path on one machine); restores the previous cap.
class scoped_isa_limit {
public:
    explicit scoped_isa_limit(isa limit) : previous_(detail::isa_limit().load()) { set_isa_limit(limit); }
    ~scoped_isa_limit() { detail::isa_limit().store(previous_); }
    scoped_isa_limit(const scoped_isa_limit&) = delete;
    scoped_isa_limit& operator=(const scoped_isa_limit&) = delete;

private:
    int previous_;
};

// The paths this machine can run, scalar first: tests loop over these.
inline int available_isa_count() { return static_cast<int>(detected_isa()) + 1; }
inline isa available_isa(int i) { return static_cast<isa>(i); }

}  // namespace grphi::kernels
