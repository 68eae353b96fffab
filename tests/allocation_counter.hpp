// Counts heap allocations of the whole program: replaces malloc/calloc/realloc (glibc, forwarding to
// __libc_*) and so sees Eigen's matrices as well as operator new (libstdc++'s calls malloc).
// Include it in exactly one translation unit of an executable. Not available under sanitizers
// (they own malloc) or outside glibc: then available == false and the count stays 0.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>

namespace grphi::testing {

inline std::atomic<long> heap_allocations{0};

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define GRPHI_NO_ALLOCATION_COUNTER
#endif
#endif
#else
#define GRPHI_NO_ALLOCATION_COUNTER
#endif

#ifdef GRPHI_NO_ALLOCATION_COUNTER
inline constexpr bool allocation_counter_available = false;
#else
inline constexpr bool allocation_counter_available = true;
#endif

// Allocations made while running f().
template <class F>
long allocations_during(F&& f) {
    const long before = heap_allocations.load(std::memory_order_relaxed);
    f();
    return heap_allocations.load(std::memory_order_relaxed) - before;
}

}  // namespace grphi::testing

#ifndef GRPHI_NO_ALLOCATION_COUNTER
extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* p, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);

void* malloc(std::size_t size) noexcept {
    grphi::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
    return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) noexcept {
    grphi::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
    return __libc_calloc(count, size);
}
void* realloc(void* p, std::size_t size) noexcept {
    grphi::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
    return __libc_realloc(p, size);
}
// Aligned operator new and std::aligned_alloc end here.
void* aligned_alloc(std::size_t alignment, std::size_t size) noexcept {
    grphi::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
    return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) noexcept {
    grphi::testing::heap_allocations.fetch_add(1, std::memory_order_relaxed);
    *out = __libc_memalign(alignment, size);
    return *out ? 0 : ENOMEM;
}
}
#endif
