// The `.grphi` container: a checksummed file of named packed tensors, exponents and signs rANS-coded.
// packed tensor -> stored_tensor -> bytes (serialize / save) -> stored_tensor (deserialize / load) -> packed.
// Byte layout: docs/container.md. Every size, count, offset, table and checksum is validated before use;
// a bad file throws grphi::format_error naming the file, tensor and field.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <istream>
#include <iterator>
#include <limits>
#include <memory>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "base.hpp"
#include "error.hpp"
#include "mapped_file.hpp"
#include "options.hpp"
#include "output_file.hpp"
#include "packed.hpp"
#include "quantize.hpp"
#include "rans.hpp"

namespace grphi {

namespace container {
inline constexpr std::array<std::uint8_t, 8> magic = {0x89, 'G', 'R', 'P', 'H', 'I', '\r', '\n'};
inline constexpr std::uint16_t version_major = 1;  // a reader rejects any other major version
inline constexpr std::uint16_t version_minor = 0;  // minor versions only add what old readers may ignore
inline constexpr std::size_t header_bytes = 20;
inline constexpr std::size_t max_name_bytes = 65535;

// Exponent stream modes (low 2 bits of the mode byte); bit 7 set: every exponent is stored, zeros too.
enum class exponent_mode : std::uint8_t { none = 0, absolute = 1, below_window_top = 2, raw = 3 };
inline constexpr std::uint8_t all_exponents_stored = 0x80;
}  // namespace container

enum class scalar_kind : std::uint8_t { float32 = 1, float64 = 2 };

template <class T>
constexpr scalar_kind scalar_kind_of() {
    check_scalar<T>();
    return std::is_same_v<T, float> ? scalar_kind::float32 : scalar_kind::float64;
}

inline const char* scalar_kind_name(scalar_kind k) { return k == scalar_kind::float32 ? "float32" : "float64"; }

struct load_options {
    // A tiny file can legitimately describe a huge all-zero tensor, so the number of weights a load
    // may allocate is capped (summed over the file's tensors); raise it for really large models.
    std::uint64_t max_weights = std::uint64_t{1} << 32;
    // Off only for fuzzing, so mutated inputs reach the parsers behind the checksums.
    bool verify_checksums = true;
};

// A named packed tensor with its scalar type and base erased: what a .grphi file holds.
struct stored_tensor {
    std::string name;
    scalar_kind scalar = scalar_kind::float32;
    std::string base_name;                // "phi", "two", "sqrt2", a user tag's name, or "custom"
    double base_value = 0;                // the base's value rounded to double (exact for custom)
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    options opts;
    std::vector<std::int8_t> signs;
    std::vector<std::int16_t> exponents;
    std::vector<std::int16_t> window_lo;
    std::vector<std::int16_t> window_hi;
    std::vector<std::int8_t> scale_steps;
    std::uint64_t coded_bytes = 0;        // bytes in the file (directory entry + data + checksum); set by load

    std::uint64_t size() const { return static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols); }
    double coded_bits_per_weight() const {
        return size() == 0 ? 0.0 : 8.0 * static_cast<double>(coded_bytes) / static_cast<double>(size());
    }

    // opts.base_value stays unset: a custom base's value is base_value (as<T, custom> moves it into the options).
    template <class T, class Base>
    bool holds() const {
        if constexpr (is_custom_base_v<Base>)
            return scalar == scalar_kind_of<T>() && base_name == Base::name;
        else
            return scalar == scalar_kind_of<T>() && base_name == Base::name &&
                   base_value == static_cast<double>(static_cast<long double>(Base::value));
    }

    // Back to the typed tensor; throws std::invalid_argument when the scalar type or base differ, and
    // format_error when the content is not a valid packed tensor (e.g. a window outside the base's range).
    template <class T, class Base>
    packed<T, Base> as() const {
        if (!holds<T, Base>())
            throw std::invalid_argument("grphi::stored_tensor::as: tensor '" + name + "' is " + scalar_kind_name(scalar) +
                                        " with base " + base_name + ", not " + scalar_kind_name(scalar_kind_of<T>()) +
                                        " with base " + Base::name);
        packed<T, Base> p;
        p.rows = static_cast<Eigen::Index>(rows);
        p.cols = static_cast<Eigen::Index>(cols);
        p.opts = opts;
        if constexpr (is_custom_base_v<Base>) {
            if (opts.base_value && *opts.base_value != base_value)
                throw format_error("grphi: tensor '" + name + "': options base_value " +
                                   detail::number_text(*opts.base_value) + " differs from the base value " +
                                   detail::number_text(base_value));
            p.opts.base_value = base_value;
        }
        p.signs = signs;
        p.exponents = exponents;
        p.window_lo = window_lo;
        p.window_hi = window_hi;
        p.scale_steps = scale_steps;
        try {
            validate(p);
        } catch (const std::invalid_argument& e) {
            throw format_error("grphi: tensor '" + name + "': " + e.what());
        }
        return p;
    }

    template <class T, class Base>
    static stored_tensor from(std::string name, const packed<T, Base>& p) {
        validate(p);  // never write what cannot be read back
        return from_valid(std::move(name), packed<T, Base>(p));
    }

    // from() without the validation pass, moving p's arrays: for tensors valid by construction (straight
    // from grphi::quantize), where the pass would cost more than the move saves.
    template <class T, class Base>
    static stored_tensor from_valid(std::string name, packed<T, Base>&& p) {
        if (p.opts.blocked())  // format 1 has no block scales: refuse rather than drop them
            throw std::invalid_argument("grphi::save: tensor '" + name + "' has block scales (block_size=" +
                                        std::to_string(p.opts.block_size) + "), which format 1 cannot store");
        stored_tensor s;
        s.name = std::move(name);
        s.scalar = scalar_kind_of<T>();
        s.base_name = Base::name;
        s.base_value = base_value_of<Base>(p.opts);
        s.rows = p.rows;
        s.cols = p.cols;
        s.opts = p.opts;
        s.opts.base_value.reset();  // a custom base's value is stored once, as base_value
        s.signs = std::move(p.signs);
        s.exponents = std::move(p.exponents);
        s.window_lo = std::move(p.window_lo);
        s.window_hi = std::move(p.window_hi);
        s.scale_steps = std::move(p.scale_steps);
        return s;
    }
};

template <class T, class Base>
stored_tensor named(std::string name, const packed<T, Base>& p) {
    return stored_tensor::from(std::move(name), p);
}

namespace detail {

// CRC-32 (IEEE 802.3, reflected 0xEDB88320, the zlib/PNG checksum). Tables: slicing by 8 bytes;
// x86-64 with PCLMULQDQ (chosen at run time): carry-less multiplication folds 64 bytes per step.
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
        const std::uint32_t low = crc ^ rans::detail::load_u32(data + i);
        const std::uint32_t high = rans::detail::load_u32(data + i + 4);
        crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
              t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^ t[0][high >> 24];
    }
    for (; i < size; ++i) crc = t[0][(crc ^ data[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GRPHI_CRC32_CLMUL 1
inline bool cpu_has_clmul() {
    static const bool yes = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    }();
    return yes;
}

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

__attribute__((target("pclmul,sse4.1"))) inline __m128i crc32_fold(__m128i block, __m128i constants) {
    return _mm_xor_si128(_mm_clmulepi64_si128(block, constants, 0x00), _mm_clmulepi64_si128(block, constants, 0x11));
}

// The register after `data` (size >= 64): four 16-byte accumulators fold over 64 bytes at a time, then
// into one, whose register the tables finish together with the tail.
__attribute__((target("pclmul,sse4.1"))) inline std::uint32_t crc32_register_clmul(const std::uint8_t* data, std::size_t size,
                                                                                std::uint32_t crc) {
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
#else
#define GRPHI_CRC32_CLMUL 0
#endif

// Tests switch the carry-less path off to check the tables on the same machine.
inline bool& crc32_clmul_allowed() {
    static bool allowed = true;
    return allowed;
}

inline std::uint32_t crc32(const std::uint8_t* data, std::size_t size, std::uint32_t crc = 0) {
#if GRPHI_CRC32_CLMUL
    if (size >= 64 && crc32_clmul_allowed() && cpu_has_clmul()) return ~crc32_register_clmul(data, size, ~crc);
#endif
    return ~crc32_register_tables(data, size, ~crc);
}

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
inline std::uint64_t zigzag(std::int64_t v) {
    return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(-(static_cast<std::uint64_t>(v) >> 63));
}
inline std::int64_t unzigzag(std::uint64_t v) {
    return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}
inline void put_string(std::vector<std::uint8_t>& out, const std::string& s) {
    rans::detail::put_varint(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
}
inline std::string get_string(rans::byte_reader& in, const char* what) {
    const std::uint64_t n = in.varint(what);
    if (n > container::max_name_bytes) in.fail(std::string(what) + " is " + std::to_string(n) + " bytes long (max 65535)");
    const std::uint8_t* p = in.bytes(static_cast<std::size_t>(n), what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

// The shape-derived counts both sides agree on (mirrors packed's channels() / blocks_per_row()).
struct tensor_geometry {
    bool per_channel;
    std::uint64_t rows, cols, channels, block, blocks_per_row;
    explicit tensor_geometry(const stored_tensor& t)
        : per_channel(t.opts.per_channel), rows(static_cast<std::uint64_t>(t.rows)), cols(static_cast<std::uint64_t>(t.cols)),
          channels(t.opts.per_channel ? rows : (rows > 0 ? 1 : 0)),
          block(t.opts.clustered() ? static_cast<std::uint64_t>(t.opts.cluster_size) : 1),
          blocks_per_row(cols == 0 ? 0 : (cols - 1) / block + 1) {}
    std::uint64_t channel_of_row(std::uint64_t r) const { return per_channel ? r : 0; }
};

// Calls visit(exponent_index, channel, has_nonzero) for every exponent slot, row-major.
template <class Visit>
void for_each_exponent(const stored_tensor& t, const tensor_geometry& g, Visit&& visit) {
    if (g.blocks_per_row == 0) return;  // no columns: nothing to visit, however many rows
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        const std::int8_t* row_signs = t.signs.data() + r * g.cols;
        if (g.block == 1) {  // one exponent per weight: the common case, kept branch-light
            for (std::uint64_t i = 0; i < g.cols; ++i) visit(r * g.cols + i, ch, row_signs[i] != 0);
            continue;
        }
        for (std::uint64_t b = 0; b < g.blocks_per_row; ++b) {
            const std::uint64_t begin = b * g.block;
            const std::uint64_t end = std::min(g.cols, begin + g.block);
            bool nonzero = false;
            for (std::uint64_t i = begin; i < end && !nonzero; ++i) nonzero = row_signs[i] != 0;
            visit(r * g.blocks_per_row + b, ch, nonzero);
        }
    }
}

inline double histogram_bits(const std::vector<std::uint64_t>& counts) {
    std::uint64_t n = 0;
    for (auto c : counts) n += c;
    double bits = 0;
    for (auto c : counts)
        if (c) bits -= static_cast<double>(c) * std::log2(static_cast<double>(c) / static_cast<double>(n));
    return bits;
}

// ---------------------------------------------------------------------------------------------
// Unclustered tensors (one exponent per weight) in one pass per row: the sign symbols, the nonzero
// weights' exponents in order, and the histograms that pick the exponent map, so nothing is scanned
// twice and no symbol stream is histogrammed again before coding. The bytes are those of the general
// path below, which still handles clustered tensors and rule-breaking ones (an exponent outside its
// window, a zero weight whose exponent is not the window bottom).
struct row_collector {
    rans::symbol* sign_symbols;  // next row's sign + 1 goes here
    rans::symbol* stored;        // next nonzero exponent (int16 bits) goes here
    std::uint64_t negative = 0;
    std::uint64_t nonzero = 0;
};

// counts[e - lo] += how often each packed exponent e occurs (all inside the window starting at lo): four
// interleaved sub-histograms (`scratch`, 4 * width entries) over the span the exponents cover, so runs of
// one exponent do not wait on one counter.
inline void count_packed(const rans::symbol* packed, std::size_t kept, int lo, std::uint64_t* counts,
                         std::uint64_t* scratch) {
    if (kept == 0) return;
    int lowest = static_cast<std::int16_t>(packed[0]), highest = lowest;
    for (std::size_t i = 0; i < kept; ++i) {
        lowest = std::min<int>(lowest, static_cast<std::int16_t>(packed[i]));
        highest = std::max<int>(highest, static_cast<std::int16_t>(packed[i]));
    }
    const auto span = static_cast<std::size_t>(highest - lowest + 1);
    std::uint64_t* h[4] = {scratch, scratch + span, scratch + 2 * span, scratch + 3 * span};
    std::fill(scratch, scratch + 4 * span, 0);
    const auto offset = static_cast<rans::symbol>(lowest);
    std::size_t i = 0;
    for (; i + 4 <= kept; i += 4) {
        ++h[0][static_cast<rans::symbol>(packed[i] - offset)];
        ++h[1][static_cast<rans::symbol>(packed[i + 1] - offset)];
        ++h[2][static_cast<rans::symbol>(packed[i + 2] - offset)];
        ++h[3][static_cast<rans::symbol>(packed[i + 3] - offset)];
    }
    for (; i < kept; ++i) ++h[0][static_cast<rans::symbol>(packed[i] - offset)];
    for (std::size_t j = 0; j < span; ++j) counts[static_cast<std::size_t>(lowest - lo) + j] += h[0][j] + h[1][j] + h[2][j] + h[3][j];
}

// One row: counts[e - lo] for its nonzero exponents e (width entries). False when a sign is not -1, 0 or
// +1, an exponent lies outside [lo, lo + width) or a zero weight's exponent is not lo. Three simple
// passes (the first vectorises): symbols, counts and checks; packing; count_packed.
inline bool collect_row_scalar(const std::int8_t* signs, const std::int16_t* exponents, std::size_t n, int lo,
                               std::size_t width, std::uint64_t* counts, std::uint64_t* scratch, row_collector& c) {
    std::uint64_t negative = 0;
    int bad = 0, lowest = lo, highest = lo;
    for (std::size_t i = 0; i < n; ++i) {
        const int s = signs[i];
        const int e = exponents[i];
        c.sign_symbols[i] = static_cast<rans::symbol>(s + 1);
        negative += s < 0;
        bad |= (s < -1) | (s > 1) | ((s == 0) & (e != lo));
        const int kept_e = s != 0 ? e : lo;
        lowest = std::min(lowest, kept_e);
        highest = std::max(highest, kept_e);
    }
    if (bad || lowest < lo || highest - lo >= static_cast<int>(width)) return false;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
        c.stored[kept] = static_cast<rans::symbol>(exponents[i]);
        kept += signs[i] != 0;
    }
    count_packed(c.stored, kept, lo, counts, scratch);
    c.sign_symbols += n;
    c.stored += kept;
    c.negative += negative;
    c.nonzero += kept;
    return true;
}

#if defined(__AVX512BW__) && defined(__AVX512VL__)
// GCC 12's AVX-512 intrinsics (self-initialised _mm*_undefined_* operands) raise bogus
// -W(maybe-)uninitialized once inlined; nothing here is uninitialised.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// collect_row_scalar for windows of at most Bins exponents, 32 weights per step: one compare per bin
// counts into 16-bit lanes (flushed before they can overflow); a compress packs the nonzero exponents.
// Bins == 0 counts nothing (the caller counts the packed exponents).
// Needs 16 symbols of slack after the stored exponents (the compress writes whole vectors).
template <int Bins>
inline bool collect_row_avx512(const std::int8_t* signs, const std::int16_t* exponents, std::size_t n, int lo,
                               std::size_t width, std::uint64_t* counts, row_collector& c) {
    constexpr std::size_t lanes = 32;
    constexpr std::size_t chunk = lanes * 32767;  // a 16-bit lane gains at most one per step
    const __m512i one = _mm512_set1_epi16(1);
    const __m512i two = _mm512_set1_epi16(2);
    const __m512i bottom = _mm512_set1_epi16(static_cast<std::int16_t>(lo));
    const __m512i last = _mm512_set1_epi16(static_cast<std::int16_t>(width - 1));
    __m512i count[Bins > 0 ? Bins : 1];
    for (auto& bin : count) bin = _mm512_setzero_si512();
    __mmask32 bad = 0;
    std::uint64_t negative = 0;
    rans::symbol* out = c.stored;
    auto step = [&](std::size_t i, __mmask32 m) {
        const __m256i s = _mm256_maskz_loadu_epi8(m, signs + i);
        const __m512i e = _mm512_maskz_loadu_epi16(m, exponents + i);
        const __mmask32 nonzero = _mm256_mask_test_epi8_mask(m, s, s);
        negative += static_cast<std::uint64_t>(__builtin_popcount(_mm256_movepi8_mask(s) & m));
        const __m512i sign_symbol = _mm512_add_epi16(_mm512_cvtepi8_epi16(s), one);
        _mm512_mask_storeu_epi16(c.sign_symbols + i, m, sign_symbol);
        bad |= _mm512_mask_cmpgt_epu16_mask(m, sign_symbol, two);
        const __m512i d = _mm512_sub_epi16(e, bottom);
        bad |= _mm512_mask_cmpgt_epu16_mask(nonzero, d, last);
        bad |= _mm512_mask_cmpneq_epi16_mask(m & ~nonzero, e, bottom);
        for (int b = 0; b < Bins; ++b)
            count[b] = _mm512_mask_add_epi16(
                count[b], _mm512_mask_cmpeq_epi16_mask(nonzero, d, _mm512_set1_epi16(static_cast<std::int16_t>(b))),
                count[b], one);
        const auto low = static_cast<__mmask16>(nonzero), high = static_cast<__mmask16>(nonzero >> 16);
        const __m512i e_low = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(e));
        const __m512i e_high = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(e, 1));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(low, e_low)));
        out += __builtin_popcount(low);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(high, e_high)));
        out += __builtin_popcount(high);
    };
    for (std::size_t start = 0; start < n; start += chunk) {
        const std::size_t end = std::min(n, start + chunk);
        std::size_t i = start;
        for (; i + lanes <= end; i += lanes) step(i, ~__mmask32{0});
        if (i < end) step(i, static_cast<__mmask32>((std::uint64_t{1} << (end - i)) - 1));
        for (std::size_t b = 0; b < width && b < static_cast<std::size_t>(Bins); ++b) {
            counts[b] += static_cast<std::uint64_t>(_mm512_reduce_add_epi32(_mm512_madd_epi16(count[b], one)));
            count[b] = _mm512_setzero_si512();
        }
    }
    const auto kept = static_cast<std::uint64_t>(out - c.stored);
    c.sign_symbols += n;
    c.stored = out;
    c.negative += negative;
    c.nonzero += kept;
    return bad == 0;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Chooses the vector row kernel for the window's width (scalar when none applies).
inline bool collect_row(const std::int8_t* signs, const std::int16_t* exponents, std::size_t n, int lo,
                        std::size_t width, std::uint64_t* counts, std::uint64_t* scratch, row_collector& c) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    if (width <= 4) return collect_row_avx512<4>(signs, exponents, n, lo, width, counts, c);
    if (width <= 8) return collect_row_avx512<8>(signs, exponents, n, lo, width, counts, c);
    if (width <= 16) return collect_row_avx512<16>(signs, exponents, n, lo, width, counts, c);
    const rans::symbol* packed = c.stored;
    if (!collect_row_avx512<0>(signs, exponents, n, lo, width, counts, c)) return false;
    count_packed(packed, static_cast<std::size_t>(c.stored - packed), lo, counts, scratch);
    return true;
#endif
    return collect_row_scalar(signs, exponents, n, lo, width, counts, scratch, c);
}

// A histogram shaped as rans::histogram returns it: counts[first, last nonzero].
inline std::vector<std::uint64_t> trimmed_counts(const std::vector<std::uint64_t>& counts, std::size_t first) {
    std::size_t end = counts.size();
    while (end > first && counts[end - 1] == 0) --end;
    return std::vector<std::uint64_t>(counts.begin() + static_cast<std::ptrdiff_t>(first),
                                      counts.begin() + static_cast<std::ptrdiff_t>(end));
}

// The data section's sign and exponent streams for an unclustered tensor, the same bytes as
// write_streams_general; false (nothing written) when that general path must decide.
inline bool write_unclustered_streams(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out) {
    if (g.block != 1 || g.rows == 0 || g.cols == 0) return false;
    int min_lo = t.window_lo[0], max_hi = t.window_hi[0];
    std::size_t max_width = 0;
    for (std::uint64_t ch = 0; ch < g.channels; ++ch) {
        min_lo = std::min<int>(min_lo, t.window_lo[ch]);
        max_hi = std::max<int>(max_hi, t.window_hi[ch]);
        max_width = std::max<std::size_t>(max_width, static_cast<std::size_t>(t.window_hi[ch] - t.window_lo[ch] + 1));
    }
    // Row histograms cost O(width) per row: bounded by the row's own length.
    if (max_width > std::max<std::uint64_t>(64, g.cols)) return false;

    const std::size_t n = static_cast<std::size_t>(g.rows * g.cols);
    constexpr std::size_t slack = 16;  // the vector kernel's compress stores whole vectors
    const std::unique_ptr<rans::symbol[]> sign_symbols(new rans::symbol[n]);
    const std::unique_ptr<rans::symbol[]> stored(new rans::symbol[n + slack]);
    std::vector<std::uint64_t> row_stored(static_cast<std::size_t>(g.rows));
    std::vector<std::uint64_t> by_exponent(static_cast<std::size_t>(max_hi - min_lo + 1), 0);  // exponent min_lo + i
    std::vector<std::uint64_t> below_top(max_width, 0);                                         // window_hi - exponent
    std::vector<std::uint64_t> row_counts(max_width), scratch(4 * max_width);
    row_collector c{sign_symbols.get(), stored.get()};
    for (std::uint64_t r = 0; r < g.rows; ++r) {
        const std::uint64_t ch = g.channel_of_row(r);
        const int lo = t.window_lo[ch], hi = t.window_hi[ch];
        const auto width = static_cast<std::size_t>(hi - lo + 1);
        std::fill(row_counts.begin(), row_counts.begin() + static_cast<std::ptrdiff_t>(width), 0);
        const std::uint64_t before = c.nonzero;
        if (!collect_row(t.signs.data() + r * g.cols, t.exponents.data() + r * g.cols, static_cast<std::size_t>(g.cols), lo,
                         width, row_counts.data(), scratch.data(), c))
            return false;
        row_stored[static_cast<std::size_t>(r)] = c.nonzero - before;
        for (std::size_t j = 0; j < width; ++j) {
            by_exponent[static_cast<std::size_t>(lo - min_lo) + j] += row_counts[j];
            below_top[width - 1 - j] += row_counts[j];
        }
    }
    const std::uint64_t negative = c.negative, zero = n - c.nonzero, positive = c.nonzero - c.negative;
    std::vector<std::uint64_t> sign_counts = {negative, zero, positive};
    while (sign_counts.back() == 0) sign_counts.pop_back();
    rans::encode_counted(sign_symbols.get(), n, sign_counts, out);

    // Every zero weight sits at its window bottom here: zeros are skipped (flag clear).
    const auto count = static_cast<std::size_t>(c.nonzero);
    if (count == 0) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::none));
        return true;
    }
    std::size_t first = 0;
    while (by_exponent[first] == 0) ++first;
    std::size_t last = by_exponent.size() - 1;
    while (by_exponent[last] == 0) --last;
    std::size_t deepest = below_top.size() - 1;
    while (below_top[deepest] == 0) --deepest;
    const int lowest = min_lo + static_cast<int>(first);
    const bool absolute_fits = last - first < rans::max_alphabet;
    const bool below_top_fits = deepest < rans::max_alphabet;
    rans::symbol* symbols = stored.get();
    if (!absolute_fits && !below_top_fits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::raw));
        const std::size_t at = out.size();
        out.resize(at + 2 * count);
        for (std::size_t i = 0; i < count; ++i) rans::detail::store_u16(out.data() + at + 2 * i, symbols[i]);
        return true;
    }
    // Two symbol maps, as in the general path: keep the one with the smaller order-0 entropy.
    const std::vector<std::uint64_t> absolute = absolute_fits ? trimmed_counts(by_exponent, first) : std::vector<std::uint64_t>{};
    const std::vector<std::uint64_t> depth = below_top_fits ? trimmed_counts(below_top, 0) : std::vector<std::uint64_t>{};
    const double absolute_bits = absolute_fits ? histogram_bits(absolute) : std::numeric_limits<double>::infinity();
    const double below_top_bits = below_top_fits ? histogram_bits(depth) : std::numeric_limits<double>::infinity();
    if (absolute_bits <= below_top_bits) {
        const auto offset = static_cast<rans::symbol>(lowest);
        for (std::size_t i = 0; i < count; ++i) symbols[i] = static_cast<rans::symbol>(symbols[i] - offset);
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::absolute));
        rans::detail::put_varint(out, zigzag(lowest));
        rans::encode_counted(symbols, count, absolute, out);
    } else {
        rans::symbol* row = symbols;
        for (std::uint64_t r = 0; r < g.rows; ++r) {
            const auto top = static_cast<rans::symbol>(t.window_hi[g.channel_of_row(r)]);
            const auto kept = static_cast<std::size_t>(row_stored[static_cast<std::size_t>(r)]);
            for (std::size_t i = 0; i < kept; ++i) row[i] = static_cast<rans::symbol>(top - row[i]);
            row += kept;
        }
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::below_window_top));
        rans::encode_counted(symbols, count, depth, out);
    }
    return true;
}

inline void write_streams_general(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out);

// Data section of one tensor: channel state, sign stream, exponent stream.
inline void write_tensor_data(const stored_tensor& t, std::vector<std::uint8_t>& out) {
    const tensor_geometry g(t);
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        put_u16(out, static_cast<std::uint16_t>(t.window_lo[c]));
        put_u16(out, static_cast<std::uint16_t>(t.window_hi[c]));
        out.push_back(static_cast<std::uint8_t>(t.scale_steps[c]));
    }
    if (!write_unclustered_streams(t, g, out)) write_streams_general(t, g, out);
}

// The sign and exponent streams of any tensor the container accepts, by the rule itself.
inline void write_streams_general(const stored_tensor& t, const tensor_geometry& g, std::vector<std::uint8_t>& out) {
    std::vector<rans::symbol> symbols(t.signs.size());
    for (std::size_t i = 0; i < t.signs.size(); ++i) symbols[i] = static_cast<rans::symbol>(t.signs[i] + 1);
    rans::encode(symbols.data(), symbols.size(), out);

    // A zero weight (or a block without a nonzero member) has exponent window_lo: skip it unless some
    // tensor breaks that rule, then store every exponent so the round trip stays exact.
    bool skip_zeros = true;
    for_each_exponent(t, g, [&](std::uint64_t i, std::uint64_t ch, bool nonzero) {
        if (!nonzero && t.exponents[i] != t.window_lo[ch]) skip_zeros = false;
    });
    std::vector<std::int16_t> stored_exponents;
    std::vector<std::int16_t> stored_tops;
    stored_exponents.reserve(t.exponents.size());
    stored_tops.reserve(t.exponents.size());
    for_each_exponent(t, g, [&](std::uint64_t i, std::uint64_t ch, bool nonzero) {
        if (nonzero || !skip_zeros) {
            stored_exponents.push_back(t.exponents[i]);
            stored_tops.push_back(t.window_hi[ch]);
        }
    });
    const std::uint8_t flag = skip_zeros ? 0 : container::all_exponents_stored;
    if (stored_exponents.empty()) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::none) | flag);
        return;
    }
    int lowest = stored_exponents[0], highest = stored_exponents[0], deepest = 0;
    for (std::size_t i = 0; i < stored_exponents.size(); ++i) {
        lowest = std::min<int>(lowest, stored_exponents[i]);
        highest = std::max<int>(highest, stored_exponents[i]);
        deepest = std::max(deepest, stored_tops[i] - stored_exponents[i]);
    }
    const bool absolute_fits = highest - lowest < static_cast<int>(rans::max_alphabet);
    const bool below_top_fits = deepest < static_cast<int>(rans::max_alphabet);
    if (!absolute_fits && !below_top_fits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::raw) | flag);
        for (std::int16_t k : stored_exponents) put_u16(out, static_cast<std::uint16_t>(k));
        return;
    }
    // Two symbol maps: exponent - lowest, or depth below the channel's window top (aligns channels
    // whose windows differ); keep the one with the smaller order-0 entropy.
    std::vector<rans::symbol> absolute(stored_exponents.size()), below_top(stored_exponents.size());
    double absolute_bits = std::numeric_limits<double>::infinity(), below_top_bits = absolute_bits;
    if (absolute_fits) {
        for (std::size_t i = 0; i < absolute.size(); ++i) absolute[i] = static_cast<rans::symbol>(stored_exponents[i] - lowest);
        absolute_bits = histogram_bits(rans::histogram(absolute));
    }
    if (below_top_fits) {
        for (std::size_t i = 0; i < below_top.size(); ++i)
            below_top[i] = static_cast<rans::symbol>(stored_tops[i] - stored_exponents[i]);
        below_top_bits = histogram_bits(rans::histogram(below_top));
    }
    if (absolute_bits <= below_top_bits) {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::absolute) | flag);
        rans::detail::put_varint(out, zigzag(lowest));
        rans::encode(absolute.data(), absolute.size(), out);
    } else {
        out.push_back(static_cast<std::uint8_t>(container::exponent_mode::below_window_top) | flag);
        rans::encode(below_top.data(), below_top.size(), out);
    }
}

inline void write_directory_entry(const stored_tensor& t, std::uint64_t data_bytes, std::vector<std::uint8_t>& out) {
    put_string(out, t.name);
    out.push_back(static_cast<std::uint8_t>(t.scalar));
    put_string(out, t.base_name);
    std::uint64_t value_bits;
    std::memcpy(&value_bits, &t.base_value, sizeof value_bits);
    put_u64(out, value_bits);
    rans::detail::put_varint(out, static_cast<std::uint64_t>(t.rows));
    rans::detail::put_varint(out, static_cast<std::uint64_t>(t.cols));
    const options& o = t.opts;
    const std::uint8_t flags = static_cast<std::uint8_t>((o.per_channel ? 1 : 0) | (o.fit_scale ? 2 : 0) |
                                                         (o.e_min ? 4 : 0) | (o.e_max ? 8 : 0) | (o.levels ? 16 : 0));
    out.push_back(flags);
    if (o.e_min) rans::detail::put_varint(out, zigzag(*o.e_min));
    if (o.e_max) rans::detail::put_varint(out, zigzag(*o.e_max));
    if (o.levels) rans::detail::put_varint(out, static_cast<std::uint64_t>(*o.levels));
    rans::detail::put_varint(out, static_cast<std::uint64_t>(o.cluster_size));
    out.push_back(static_cast<std::uint8_t>(o.round == rounding::log ? 0 : 1));
    out.push_back(static_cast<std::uint8_t>(o.under == underflow::clamp ? 0 : 1));
    rans::detail::put_varint(out, data_bytes);
}

// Shape and per-channel arrays must agree before anything is written.
inline void check_storable(const stored_tensor& t) {
    auto fail = [&](const std::string& what) {
        throw std::invalid_argument("grphi::save: tensor '" + t.name + "': " + what);
    };
    if (t.name.size() > container::max_name_bytes) fail("name longer than 65535 bytes");
    if (t.base_name.size() > container::max_name_bytes) fail("base name longer than 65535 bytes");
    if (t.scalar != scalar_kind::float32 && t.scalar != scalar_kind::float64) fail("unknown scalar type");
    if (!(t.base_value >= static_cast<double>(min_base_value)) || !std::isfinite(t.base_value)) fail("base value must be finite and >= 1.03");
    if (t.opts.base_value && *t.opts.base_value != t.base_value)
        fail("options base_value " + number_text(*t.opts.base_value) + " differs from the base value " +
             number_text(t.base_value));
    if (t.rows < 0 || t.cols < 0) fail("negative shape");
    try {
        t.opts.validate();
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
    const tensor_geometry g(t);
    if (t.signs.size() != t.size()) fail("signs has the wrong size");
    if (t.exponents.size() != g.rows * g.blocks_per_row) fail("exponents has the wrong size");
    if (t.window_lo.size() != g.channels || t.window_hi.size() != g.channels || t.scale_steps.size() != g.channels)
        fail("per-channel state has the wrong size");
    for (std::int8_t s : t.signs)
        if (s < -1 || s > 1) fail("a sign is not -1, 0 or +1");
    for (std::uint64_t c = 0; c < g.channels; ++c)
        if (t.window_lo[c] > t.window_hi[c]) fail("channel " + std::to_string(c) + " has window_lo > window_hi");
    bool inside = true;
    for_each_exponent(t, g, [&](std::uint64_t i, std::uint64_t ch, bool) {
        inside = inside && t.exponents[i] >= t.window_lo[ch] && t.exponents[i] <= t.window_hi[ch];
    });
    if (!inside) fail("an exponent is outside its channel window");
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Encoding: header | directory | CRC | (data section | CRC) per tensor.
inline std::vector<std::uint8_t> serialize(const std::vector<stored_tensor>& tensors) {
    std::set<std::string> names;
    for (const auto& t : tensors) {
        detail::check_storable(t);
        if (!names.insert(t.name).second) throw std::invalid_argument("grphi::save: duplicate tensor name '" + t.name + "'");
    }
    std::vector<std::vector<std::uint8_t>> data(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) detail::write_tensor_data(tensors[i], data[i]);
    std::vector<std::uint8_t> directory;
    rans::detail::put_varint(directory, tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) detail::write_directory_entry(tensors[i], data[i].size(), directory);
    if (directory.size() > std::numeric_limits<std::uint32_t>::max())
        throw std::invalid_argument("grphi::save: tensor directory exceeds 4 GiB");

    std::vector<std::uint8_t> out(container::magic.begin(), container::magic.end());
    detail::put_u16(out, container::version_major);
    detail::put_u16(out, container::version_minor);
    detail::put_u32(out, static_cast<std::uint32_t>(directory.size()));
    detail::put_u32(out, detail::crc32(out.data(), out.size()));
    out.insert(out.end(), directory.begin(), directory.end());
    detail::put_u32(out, detail::crc32(directory.data(), directory.size()));
    for (const auto& d : data) {
        out.insert(out.end(), d.begin(), d.end());
        detail::put_u32(out, detail::crc32(d.data(), d.size()));
    }
    return out;
}

namespace detail {

struct directory_entry {
    stored_tensor tensor;    // metadata only; arrays filled from the data section
    std::uint64_t data_bytes = 0;
    std::uint64_t entry_bytes = 0;
};

inline directory_entry read_directory_entry(rans::byte_reader& in, const std::string& file) {
    const std::uint8_t* start = in.position();
    directory_entry e;
    stored_tensor& t = e.tensor;
    t.name = get_string(in, "tensor name");
    rans::byte_reader named(in.position(), in.remaining(), file + ": tensor '" + t.name + "'");
    const std::uint8_t scalar = named.u8("scalar type");
    if (scalar != 1 && scalar != 2) named.fail("unknown scalar type " + std::to_string(scalar));
    t.scalar = static_cast<scalar_kind>(scalar);
    t.base_name = get_string(named, "base name");
    const std::uint8_t* value = named.bytes(8, "base value");
    std::uint64_t value_bits = 0;
    for (int i = 7; i >= 0; --i) value_bits = (value_bits << 8) | value[i];
    std::memcpy(&t.base_value, &value_bits, sizeof value_bits);
    if (!std::isfinite(t.base_value) || t.base_value < static_cast<double>(min_base_value))
        named.fail("base value " + std::to_string(t.base_value) + " is not a finite number >= 1.03");
    const std::uint64_t rows = named.varint("rows");
    const std::uint64_t cols = named.varint("cols");
    constexpr std::uint64_t max_extent = std::uint64_t{1} << 62;
    if (rows > max_extent || cols > max_extent) named.fail("shape " + std::to_string(rows) + " x " + std::to_string(cols) + " is too large");
    t.rows = static_cast<std::int64_t>(rows);
    t.cols = static_cast<std::int64_t>(cols);
    const std::uint8_t flags = named.u8("option flags");
    if (flags & ~0x1fu) named.fail("unknown option flags " + std::to_string(flags));
    options& o = t.opts;
    o.per_channel = flags & 1;
    o.fit_scale = flags & 2;
    auto small_int = [&](std::uint64_t v, const char* what) {
        const std::int64_t x = unzigzag(v);
        if (x < -32767 || x > 32767) named.fail(std::string(what) + "=" + std::to_string(x) + " is outside [-32767, 32767]");
        return static_cast<int>(x);
    };
    if (flags & 4) o.e_min = small_int(named.varint("e_min"), "e_min");
    if (flags & 8) o.e_max = small_int(named.varint("e_max"), "e_max");
    if (flags & 16) {
        const std::uint64_t levels = named.varint("levels");
        if (levels < 1 || levels > 65535) named.fail("levels=" + std::to_string(levels) + " is outside [1, 65535]");
        o.levels = static_cast<int>(levels);
    }
    const std::uint64_t cluster = named.varint("cluster_size");
    if (cluster > static_cast<std::uint64_t>(std::numeric_limits<int>::max()))
        named.fail("cluster_size=" + std::to_string(cluster) + " is too large");
    o.cluster_size = static_cast<int>(cluster);
    const std::uint8_t round = named.u8("rounding");
    const std::uint8_t under = named.u8("underflow");
    if (round > 1) named.fail("unknown rounding " + std::to_string(round));
    if (under > 1) named.fail("unknown underflow " + std::to_string(under));
    o.round = round == 0 ? rounding::log : rounding::linear;
    o.under = under == 0 ? underflow::clamp : underflow::flush;
    try {
        o.validate();
    } catch (const std::invalid_argument& err) {
        named.fail(err.what());
    }
    e.data_bytes = named.varint("data section size");
    in.bytes(static_cast<std::size_t>(named.position() - in.position()), "directory entry");
    e.entry_bytes = static_cast<std::uint64_t>(in.position() - start);
    return e;
}

inline void read_tensor_data(stored_tensor& t, rans::byte_reader& in) {
    const tensor_geometry g(t);
    if (g.channels > in.remaining() / 5) in.fail("truncated channel state (" + std::to_string(g.channels) + " channels)");
    t.window_lo.resize(g.channels);
    t.window_hi.resize(g.channels);
    t.scale_steps.resize(g.channels);
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        const std::uint8_t* p = in.bytes(5, "channel state");
        t.window_lo[c] = static_cast<std::int16_t>(rans::detail::load_u16(p));
        t.window_hi[c] = static_cast<std::int16_t>(rans::detail::load_u16(p + 2));
        t.scale_steps[c] = static_cast<std::int8_t>(p[4]);
        if (t.window_lo[c] > t.window_hi[c])
            in.fail("channel " + std::to_string(c) + " window [" + std::to_string(t.window_lo[c]) + ", " +
                    std::to_string(t.window_hi[c]) + "] is empty");
        if (t.scale_steps[c] < -scale_step_max || t.scale_steps[c] > scale_step_max)
            in.fail("channel " + std::to_string(c) + " scale step " + std::to_string(t.scale_steps[c]) + " is outside [-8, 8]");
    }
    const std::vector<rans::symbol> signs = rans::decode(in, static_cast<std::size_t>(t.size()));
    if (signs.size() != t.size())
        in.fail("sign stream has " + std::to_string(signs.size()) + " symbols, expected " + std::to_string(t.size()));
    t.signs.resize(signs.size());
    for (std::size_t i = 0; i < signs.size(); ++i) {
        if (signs[i] > 2) in.fail("sign symbol " + std::to_string(signs[i]) + " at weight " + std::to_string(i) + " is not 0, 1 or 2");
        t.signs[i] = static_cast<std::int8_t>(static_cast<int>(signs[i]) - 1);
    }

    const std::uint8_t mode_byte = in.u8("exponent mode");
    if (mode_byte & 0x7c) in.fail("unknown exponent mode " + std::to_string(mode_byte));
    const auto mode = static_cast<container::exponent_mode>(mode_byte & 3);
    const bool store_all = mode_byte & container::all_exponents_stored;
    t.exponents.assign(g.rows * g.blocks_per_row, 0);
    std::uint64_t expected = 0;
    for_each_exponent(t, g, [&](std::uint64_t i, std::uint64_t ch, bool nonzero) {
        t.exponents[i] = t.window_lo[ch];
        expected += nonzero || store_all;
    });
    if (mode == container::exponent_mode::none) {
        if (expected != 0) in.fail("exponent stream missing for " + std::to_string(expected) + " exponents");
        return;
    }
    std::int64_t lowest = 0;
    std::vector<rans::symbol> symbols;
    std::vector<std::int16_t> raw;
    if (mode == container::exponent_mode::raw) {
        if (expected > in.remaining() / 2) in.fail("truncated raw exponents");
        raw.resize(static_cast<std::size_t>(expected));
        for (auto& k : raw) k = static_cast<std::int16_t>(rans::detail::load_u16(in.bytes(2, "raw exponent")));
    } else {
        if (mode == container::exponent_mode::absolute) {
            lowest = unzigzag(in.varint("exponent offset"));
            if (lowest < -32768 || lowest > 32767) in.fail("exponent offset " + std::to_string(lowest) + " is outside int16");
        }
        symbols = rans::decode(in, static_cast<std::size_t>(expected));
        if (symbols.size() != expected)
            in.fail("exponent stream has " + std::to_string(symbols.size()) + " symbols, expected " + std::to_string(expected));
    }
    std::size_t next = 0;
    bool inside = true;
    for_each_exponent(t, g, [&](std::uint64_t i, std::uint64_t ch, bool nonzero) {
        if (!(nonzero || store_all)) return;
        std::int64_t k;
        if (mode == container::exponent_mode::raw) k = raw[next];
        else if (mode == container::exponent_mode::absolute) k = lowest + symbols[next];
        else k = std::int64_t{t.window_hi[ch]} - symbols[next];
        ++next;
        inside = inside && k >= t.window_lo[ch] && k <= t.window_hi[ch];
        t.exponents[i] = static_cast<std::int16_t>(inside ? k : t.window_lo[ch]);
    });
    if (!inside) in.fail("an exponent lies outside its channel window");
}

}  // namespace detail

// Decodes a whole file image; `file` names it in error messages.
inline std::vector<stored_tensor> deserialize(const std::uint8_t* data, std::size_t size, const std::string& file = "grphi",
                                              const load_options& settings = {}) {
    rans::byte_reader in(data, size, file);
    const std::uint8_t* header = in.bytes(container::header_bytes, "file header (not a .grphi file?)");
    if (!std::equal(container::magic.begin(), container::magic.end(), header)) in.fail("bad magic: not a .grphi file");
    const std::uint32_t header_crc = rans::detail::load_u32(header + 16);
    if (settings.verify_checksums && detail::crc32(header, 16) != header_crc) in.fail("file header checksum mismatch");
    const std::uint32_t major = rans::detail::load_u16(header + 8);
    if (major != container::version_major)
        in.fail("unsupported format version " + std::to_string(major) + "." +
                std::to_string(rans::detail::load_u16(header + 10)) + " (this reader reads version 1)");
    const std::uint32_t directory_bytes = rans::detail::load_u32(header + 12);
    const std::uint8_t* directory = in.bytes(directory_bytes, "tensor directory");
    if (in.u32("directory checksum") != detail::crc32(directory, directory_bytes) && settings.verify_checksums) in.fail("tensor directory checksum mismatch");

    rans::byte_reader dir(directory, directory_bytes, file + ": directory");
    const std::uint64_t count = dir.varint("tensor count");
    if (count > directory_bytes) dir.fail("tensor count " + std::to_string(count) + " exceeds the directory size");
    std::vector<detail::directory_entry> entries;
    std::set<std::string> names;
    std::uint64_t data_total = 0, weights_total = 0;
    for (std::uint64_t i = 0; i < count; ++i) {
        entries.push_back(detail::read_directory_entry(dir, file));
        const auto& e = entries.back();
        if (!names.insert(e.tensor.name).second) dir.fail("duplicate tensor name '" + e.tensor.name + "'");
        const auto rows = static_cast<std::uint64_t>(e.tensor.rows), cols = static_cast<std::uint64_t>(e.tensor.cols);
        if (rows > settings.max_weights || cols > settings.max_weights || (cols != 0 && rows > settings.max_weights / cols))
            dir.fail("tensor '" + e.tensor.name + "' has " + std::to_string(rows) + " x " + std::to_string(cols) +
                     " weights, above the load limit of " + std::to_string(settings.max_weights));
        weights_total += rows * cols;
        if (weights_total > settings.max_weights)
            dir.fail("the tensors hold more than the load limit of " + std::to_string(settings.max_weights) + " weights");
        if (e.data_bytes > size) dir.fail("tensor '" + e.tensor.name + "' data section is larger than the file");
        data_total += e.data_bytes + 4;
    }
    if (dir.remaining() != 0) dir.fail(std::to_string(dir.remaining()) + " unused bytes at the end of the directory");
    if (data_total != in.remaining())
        in.fail("data sections take " + std::to_string(data_total) + " bytes but " + std::to_string(in.remaining()) +
                " bytes follow the directory (truncated or padded file)");

    std::vector<stored_tensor> tensors;
    tensors.reserve(entries.size());
    for (auto& e : entries) {
        const std::string where = file + ": tensor '" + e.tensor.name + "'";
        const auto section_bytes = static_cast<std::size_t>(e.data_bytes);
        const std::uint8_t* section = in.bytes(section_bytes, "data section");
        if (in.u32("data section checksum") != detail::crc32(section, section_bytes) && settings.verify_checksums)
            throw format_error(where + ": data section checksum mismatch");
        rans::byte_reader body(section, section_bytes, where);
        stored_tensor t = std::move(e.tensor);
        detail::read_tensor_data(t, body);
        if (body.remaining() != 0) body.fail(std::to_string(body.remaining()) + " unused bytes at the end of the data section");
        t.coded_bytes = e.entry_bytes + e.data_bytes + 4;
        tensors.push_back(std::move(t));
    }
    return tensors;
}

inline std::vector<stored_tensor> deserialize(const std::vector<std::uint8_t>& bytes, const std::string& file = "grphi",
                                              const load_options& settings = {}) {
    return deserialize(bytes.data(), bytes.size(), file, settings);
}

// ---------------------------------------------------------------------------------------------
// Files and streams. save(path) writes a temporary beside the target and renames it into place:
// a failed save leaves no partial file and the old file (if any) untouched.
inline void save(const std::string& path, const std::vector<stored_tensor>& tensors) {
    const std::vector<std::uint8_t> bytes = serialize(tensors);
    output_file out(path);
    out.write(bytes.data(), bytes.size());
    out.commit();
}

inline void save(std::ostream& stream, const std::vector<stored_tensor>& tensors) {
    const std::vector<std::uint8_t> bytes = serialize(tensors);
    stream.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    stream.flush();
    if (!stream) throw io_error("grphi::save: cannot write to the stream");
}

inline std::vector<stored_tensor> load(const std::string& path, const load_options& settings = {}) {
    const mapped_file file(path);
    return deserialize(reinterpret_cast<const std::uint8_t*>(file.data()), file.size(), path, settings);
}

inline std::vector<stored_tensor> load(std::istream& stream, const load_options& settings = {}) {
    const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>()};
    if (stream.bad()) throw io_error("grphi::load: cannot read from the stream");
    return deserialize(bytes.data(), bytes.size(), "grphi stream", settings);
}

// Coded size of one tensor as it would be stored (directory entry + data + checksum), in bits per weight.
template <class T, class Base>
double coded_bits_per_weight(const packed<T, Base>& p, const std::string& name = "") {
    stored_tensor t = named(name, p);
    std::vector<std::uint8_t> data, entry;
    detail::write_tensor_data(t, data);
    detail::write_directory_entry(t, data.size(), entry);
    t.coded_bytes = data.size() + entry.size() + 4;
    return t.coded_bits_per_weight();
}

}  // namespace grphi
