// Bytes on disk, the one home for them: little-endian loads and stores, appenders, LEB128 varints,
// zigzag, a bounds-checked reader of untrusted bytes, and CRC-32 (tables, or PCLMULQDQ chosen at run
// time through kernels/dispatch.hpp). Used by the rANS coder, the .grphi format and safetensors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../kernels/dispatch.hpp"

#if GRPHI_X86_DISPATCH
#include <immintrin.h>
#endif

namespace grphi::detail {

inline bool host_is_little_endian() {
    const std::uint16_t probe = 1;
    unsigned char first;
    std::memcpy(&first, &probe, 1);
    return first == 1;
}

// Little-endian loads and stores; one plain memory access on little-endian hosts.
inline std::uint32_t load_u16(const void* at) {
    const auto* p = static_cast<const std::uint8_t*>(at);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
#else
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8);
#endif
}
inline std::uint32_t load_u32(const void* at) {
    const auto* p = static_cast<const std::uint8_t*>(at);
    return load_u16(p) | (load_u16(p + 2) << 16);
}
inline std::uint64_t load_u64(const void* at) {
    const auto* p = static_cast<const std::uint8_t*>(at);
    return load_u32(p) | (static_cast<std::uint64_t>(load_u32(p + 4)) << 32);
}
inline void store_u16(void* at, std::uint32_t v) {
    auto* p = static_cast<std::uint8_t*>(at);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const auto w = static_cast<std::uint16_t>(v);
    std::memcpy(p, &w, 2);
#else
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
#endif
}
inline void store_u32(void* at, std::uint32_t v) {
    auto* p = static_cast<std::uint8_t*>(at);
    store_u16(p, v & 0xffff);
    store_u16(p + 2, v >> 16);
}
inline void store_u64(void* at, std::uint64_t v) {
    auto* p = static_cast<std::uint8_t*>(at);
    store_u32(p, static_cast<std::uint32_t>(v));
    store_u32(p + 4, static_cast<std::uint32_t>(v >> 32));
}

// Appenders.
inline void put_u8(std::vector<std::uint8_t>& out, unsigned v) { out.push_back(static_cast<std::uint8_t>(v)); }
inline void put_u16(std::vector<std::uint8_t>& out, std::uint32_t v) {
    out.push_back(static_cast<std::uint8_t>(v));
    out.push_back(static_cast<std::uint8_t>(v >> 8));
}
inline void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    put_u16(out, v & 0xffff);
    put_u16(out, v >> 16);
}
inline void put_u64(std::vector<std::uint8_t>& out, std::uint64_t v) {
    put_u32(out, static_cast<std::uint32_t>(v));
    put_u32(out, static_cast<std::uint32_t>(v >> 32));
}
// LEB128: 7 bits per byte, low group first, high bit = more follows.
inline void put_varint(std::vector<std::uint8_t>& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<std::uint8_t>(v | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<std::uint8_t>(v));
}
inline std::size_t varint_size(std::uint64_t v) {
    std::size_t n = 1;
    for (; v >= 0x80; v >>= 7) ++n;
    return n;
}
// Signed integers as varints: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ...
inline std::uint64_t zigzag(std::int64_t v) {
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(-(static_cast<std::uint64_t>(v) >> 63));
}
inline std::int64_t unzigzag(std::uint64_t v) {
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}
// A string as varint length + bytes.
inline void put_string(std::vector<std::uint8_t>& out, const std::string& s) {
    put_varint(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}

// A bounded cursor over untrusted bytes: every read checks the remaining length first; failures throw
// grphi::format_error prefixed with the context (file, tensor, section).
class byte_reader {
public:
    byte_reader(const std::uint8_t* data, std::size_t size, std::string context = "grphi")
        : ptr_(data), end_(data + size), context_(std::move(context)) {}

    std::size_t remaining() const { return static_cast<std::size_t>(end_ - ptr_); }
    const std::uint8_t* position() const { return ptr_; }
    const std::string& context() const { return context_; }

    [[noreturn]] void fail(const std::string& what) const { throw format_error(context_ + ": " + what); }

    void need(std::size_t bytes, const char* what) const {
        if (remaining() < bytes)
            fail(std::string("truncated ") + what + " (needs " + std::to_string(bytes) + " bytes, " +
                 std::to_string(remaining()) + " left)");
    }
    std::uint8_t u8(const char* what) {
        need(1, what);
        return *ptr_++;
    }
    std::uint32_t u16(const char* what) { return load_u16(bytes(2, what)); }
    std::uint32_t u32(const char* what) { return load_u32(bytes(4, what)); }
    std::uint64_t u64(const char* what) { return load_u64(bytes(8, what)); }
    // Minimal LEB128 of at most 64 bits.
    std::uint64_t varint(const char* what) {
        std::uint64_t v = 0;
        for (unsigned shift = 0;; shift += 7) {
            const std::uint8_t b = u8(what);
            if (shift == 63 && b > 1) fail(std::string(what) + ": varint overflows 64 bits");
            v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) {
                if (b == 0 && shift != 0) fail(std::string(what) + ": varint is not minimally encoded");
                return v;
            }
        }
    }
    const std::uint8_t* bytes(std::size_t n, const char* what) {
        need(n, what);
        const std::uint8_t* p = ptr_;
        ptr_ += n;
        return p;
    }
    // A varint-length string of at most max_bytes bytes.
    std::string string(std::size_t max_bytes, const char* what) {
        const std::uint64_t n = varint(what);
        if (n > max_bytes)
            fail(std::string(what) + " is " + std::to_string(n) + " bytes long (max " + std::to_string(max_bytes) + ")");
        const std::uint8_t* p = bytes(static_cast<std::size_t>(n), what);
        return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
    }

private:
    const std::uint8_t* ptr_;
    const std::uint8_t* end_;
    std::string context_;
};

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected 0xEDB88320, the zlib/PNG checksum). Tables: slicing by 8 bytes; with
// kernels::isa::avx2 or better (which includes PCLMULQDQ) carry-less multiplication folds 64 bytes per step.
inline const std::array<std::array<std::uint32_t, 256>, 8>& crc32_tables() {
    static const auto tables = [] {
        std::array<std::array<std::uint32_t, 256>, 8> t{};
        for (std::uint32_t i = 0; i < 256; ++i) {
            std::uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (std::uint32_t i = 0; i < 256; ++i)
            for (std::size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
        return t;
    }();
    return tables;
}

// The CRC register after `data`, without the initial and final inversions.
inline std::uint32_t crc32_register_tables(const std::uint8_t* data, std::size_t size, std::uint32_t crc) {
    const auto& t = crc32_tables();
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        const std::uint32_t low = crc ^ load_u32(data + i);
        const std::uint32_t high = load_u32(data + i + 4);
        crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
              t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^ t[0][high >> 24];
    }
    for (; i < size; ++i) crc = t[0][(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

#if GRPHI_X86_DISPATCH
// Folding a 16-byte block A = L x^64 + H (L its first 8 bytes; bit 0 of a byte is its highest power) over
// D bits: A x^D = L x^(64+D) + H x^D (mod P). A reflected carry-less product carries one extra factor x,
// so the constants are x^(63+D) and x^(D-1) mod P, bit-reflected into 64 bits.
inline std::uint64_t crc32_fold_constant(unsigned power) {
    std::uint64_t r = 1;  // x^0; bit d is the coefficient of x^d
    for (unsigned i = 0; i < power; ++i) {
        r <<= 1;
        if (r >> 32) r ^= 0x104C11DB7u;  // the polynomial in normal (unreflected) form
    }
    std::uint64_t reflected = 0;
    for (unsigned d = 0; d < 32; ++d)
        if ((r >> d) & 1) reflected |= std::uint64_t{1} << (63 - d);
    return reflected;
}

GRPHI_TARGET_AVX2 inline __m128i crc32_fold(__m128i block, __m128i constants) {
    return _mm_xor_si128(_mm_clmulepi64_si128(block, constants, 0x00), _mm_clmulepi64_si128(block, constants, 0x11));
}

// The register after `data` (size >= 64): four 16-byte accumulators fold over 64 bytes at a time, then
// into one, whose register the tables finish together with the tail.
GRPHI_TARGET_AVX2 inline std::uint32_t crc32_register_clmul(const std::uint8_t* data, std::size_t size, std::uint32_t crc) {
    static const std::uint64_t by512[2] = {crc32_fold_constant(63 + 512), crc32_fold_constant(512 - 1)};
    static const std::uint64_t by128[2] = {crc32_fold_constant(63 + 128), crc32_fold_constant(128 - 1)};
    const __m128i k512 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(by512));
    const __m128i k128 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(by128));
    auto load = [&](std::size_t at) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + at)); };
    // A register c before the data is the same as c xor-ed into its first four bytes.
    __m128i a0 = _mm_xor_si128(load(0), _mm_cvtsi32_si128(static_cast<int>(crc)));
    __m128i a1 = load(16), a2 = load(32), a3 = load(48);
    std::size_t i = 64;
    for (; i + 64 <= size; i += 64) {
        a0 = _mm_xor_si128(crc32_fold(a0, k512), load(i));
        a1 = _mm_xor_si128(crc32_fold(a1, k512), load(i + 16));
        a2 = _mm_xor_si128(crc32_fold(a2, k512), load(i + 32));
        a3 = _mm_xor_si128(crc32_fold(a3, k512), load(i + 48));
    }
    a1 = _mm_xor_si128(crc32_fold(a0, k128), a1);
    a2 = _mm_xor_si128(crc32_fold(a1, k128), a2);
    a3 = _mm_xor_si128(crc32_fold(a2, k128), a3);
    for (; i + 16 <= size; i += 16) a3 = _mm_xor_si128(crc32_fold(a3, k128), load(i));
    std::uint8_t last[16];
    _mm_storeu_si128(reinterpret_cast<__m128i*>(last), a3);
    return crc32_register_tables(data + i, size - i, crc32_register_tables(last, 16, 0));
}
#endif

// CRC-32 of data[0, size), continuing from `crc` (the CRC of the bytes before; 0 to start).
inline std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0) {
#if GRPHI_X86_DISPATCH
    if (size >= 64 && kernels::active_isa() >= kernels::isa::avx2) return ~crc32_register_clmul(data, size, ~crc);
#endif
    return ~crc32_register_tables(data, size, ~crc);
}

}  // namespace grphi::detail
