// Static order-0 rANS over small alphabets (exponent symbols, sign/zero symbols).
//
// Layered like FSE, each step callable alone:
//   histogram -> normalize (power-of-two total) -> write_table / read_table -> encoder/decoder tables
//   -> encode_symbols / decode_symbols;  and the one-call encode(symbols) / decode(bytes) on top.
// Coder: `lanes` interleaved 32-bit states in [2^16, 2^32), 16-bit renormalisation (one word at most
// per symbol), probabilities with at most 16 scale bits. Symbol i belongs to lane i % lanes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <queue>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/bytes.hpp"
#include "../core/error.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/histogram.hpp"

// x86-64 with GCC/Clang: AVX2 and AVX-512 coders for 16 and 32 lanes, chosen at run time (target
// attributes, so no -mavx2 is needed); they read and write exactly what the scalar coder does.
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define GRPHI_RANS_AVX2 1
#include <immintrin.h>
#else
#define GRPHI_RANS_AVX2 0
#endif

namespace grphi::rans {

using symbol = std::uint16_t;

inline constexpr std::size_t max_alphabet = 4096;          // symbols are 0 .. max_alphabet-1
inline constexpr unsigned max_scale_bits = 16;             // with 16-bit renormalisation, M <= L
inline constexpr std::uint32_t state_lower = 1u << 16;     // L: a normalised state is in [L, 2^32)
inline constexpr unsigned max_lanes_log2 = 5;              // up to 32 interleaved states
inline constexpr std::size_t default_max_symbols = std::size_t{1} << 28;  // decode cap against forged counts

// Normalised frequencies: freq[s] > 0 for every used symbol, sum = 2^scale_bits.
// scale_bits == 0 is the one-symbol table (the last symbol has frequency 1 and costs no bits).
struct frequency_table {
    unsigned scale_bits = 0;
    std::vector<std::uint32_t> freq;   // indexed by symbol; size() is the alphabet (max symbol + 1)

    std::size_t alphabet() const { return freq.size(); }
    std::uint32_t total() const { return std::uint32_t{1} << scale_bits; }
    bool single_symbol() const { return scale_bits == 0; }
    friend bool operator==(const frequency_table& a, const frequency_table& b) {
        return a.scale_bits == b.scale_bits && a.freq == b.freq;
    }
};

namespace detail {

// The byte helpers live in detail/bytes.hpp; these names keep the coder's code short.
using grphi::detail::load_u16;
using grphi::detail::load_u32;
using grphi::detail::put_u8;
using grphi::detail::put_varint;
using grphi::detail::store_u16;

inline unsigned ceil_log2(std::uint64_t v) {
    unsigned bits = 0;
    while ((std::uint64_t{1} << bits) < v) ++bits;
    return bits;
}

// Calls f(0), f(1), ..., f(N-1) with compile-time indices: the lane loop unrolled on every compiler,
// so each lane's state stays in a register.
template <std::size_t N, class F, std::size_t... J>
inline void for_each_lane_impl(F&& f, std::index_sequence<J...>) {
    (f(std::integral_constant<std::size_t, J>{}), ...);
}
template <std::size_t N, class F>
inline void for_each_lane(F&& f) {
    for_each_lane_impl<N>(f, std::make_index_sequence<N>{});
}

// 64x64 -> high 64 bits; __extension__ keeps -Wpedantic quiet about __int128.
__extension__ typedef unsigned __int128 uint128;
inline std::uint64_t mul_high(std::uint64_t a, std::uint64_t b) {
    return static_cast<std::uint64_t>((static_cast<uint128>(a) * b) >> 64);
}

}  // namespace detail

// A bounded cursor over untrusted bytes (detail/bytes.hpp).
using byte_reader = grphi::detail::byte_reader;

// ---------------------------------------------------------------------------------------------
// Step 1: histogram. counts.size() = max symbol + 1 (empty for no symbols).
inline std::vector<std::uint64_t> histogram(const symbol* symbols, std::size_t n) {
    std::vector<std::uint32_t> sub(4 * max_alphabet);
    std::vector<std::uint64_t> counts(max_alphabet, 0);
    unsigned seen = 0;  // OR of all symbols: any symbol >= max_alphabet sets a high bit
    kernels::histogram_4way(
        n, max_alphabet,
        [&](std::size_t i) {
            seen |= symbols[i];
            return kernels::histogram_entry{symbols[i] & (max_alphabet - 1), 1};
        },
        sub.data(), counts.data());
    if (seen >= max_alphabet)
        throw std::invalid_argument("grphi::rans::histogram: a symbol is >= " + std::to_string(max_alphabet));
    std::size_t alphabet = max_alphabet;
    while (alphabet > 0 && counts[alphabet - 1] == 0) --alphabet;
    counts.resize(alphabet);
    return counts;
}

inline std::vector<std::uint64_t> histogram(const std::vector<symbol>& symbols) {
    return histogram(symbols.data(), symbols.size());
}

// ---------------------------------------------------------------------------------------------
// Step 2: normalise counts to 2^scale_bits. Every used symbol keeps a frequency >= 1, unused ones get 0;
// rounding errors are repaired greedily by the smallest coded-size change (exact for a separable convex cost).
inline frequency_table normalize(const std::vector<std::uint64_t>& counts, unsigned scale_bits) {
    std::size_t distinct = 0;
    std::uint64_t total = 0;
    for (std::uint64_t c : counts) {
        distinct += c != 0;
        total += c;
    }
    if (counts.size() > max_alphabet)
        throw std::invalid_argument("grphi::rans::normalize: alphabet of " + std::to_string(counts.size()) +
                                    " symbols exceeds " + std::to_string(max_alphabet));
    if (distinct == 0) throw std::invalid_argument("grphi::rans::normalize: no symbol has a nonzero count");
    if (counts.back() == 0)
        throw std::invalid_argument("grphi::rans::normalize: the last symbol of the alphabet has count 0");

    frequency_table table;
    table.freq.assign(counts.size(), 0);
    if (distinct == 1) {  // canonical one-symbol table: costs nothing to code
        table.scale_bits = 0;
        table.freq.back() = 1;
        return table;
    }
    if (scale_bits == 0 || scale_bits > max_scale_bits || (std::uint64_t{1} << scale_bits) < distinct)
        throw std::invalid_argument("grphi::rans::normalize: scale_bits=" + std::to_string(scale_bits) +
                                    " cannot hold " + std::to_string(distinct) + " symbols (max 16 bits)");
    table.scale_bits = scale_bits;
    const std::int64_t target = std::int64_t{1} << scale_bits;

    std::int64_t sum = 0;
    const long double ratio = static_cast<long double>(target) / static_cast<long double>(total);
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if (counts[s] == 0) continue;
        const long double ideal = static_cast<long double>(counts[s]) * ratio;
        auto f = static_cast<std::int64_t>(std::floor(ideal + 0.5L));
        f = std::max<std::int64_t>(1, std::min<std::int64_t>(f, target - 1));
        table.freq[s] = static_cast<std::uint32_t>(f);
        sum += f;
    }
    // Change in coded bits when symbol s moves from frequency f to f + step.
    auto delta_bits = [&](std::size_t s, int step) {
        const double f = table.freq[s];
        return static_cast<double>(counts[s]) * std::log2(f / (f + step));
    };
    using entry = std::pair<double, std::size_t>;
    if (sum > target) {  // take units where losing one costs least
        std::priority_queue<entry, std::vector<entry>, std::greater<entry>> cheapest;
        for (std::size_t s = 0; s < counts.size(); ++s)
            if (table.freq[s] > 1) cheapest.push({delta_bits(s, -1), s});
        while (sum > target) {
            const std::size_t s = cheapest.top().second;
            cheapest.pop();
            --table.freq[s];
            --sum;
            if (table.freq[s] > 1) cheapest.push({delta_bits(s, -1), s});
        }
    } else if (sum < target) {  // give units where one more saves most
        std::priority_queue<entry, std::vector<entry>, std::greater<entry>> best;
        for (std::size_t s = 0; s < counts.size(); ++s)
            if (counts[s] != 0) best.push({delta_bits(s, +1), s});
        while (sum < target) {
            const std::size_t s = best.top().second;
            best.pop();
            ++table.freq[s];
            ++sum;
            best.push({delta_bits(s, +1), s});
        }
    }
    // Invariants the coder relies on.
    std::int64_t check = 0;
    for (std::size_t s = 0; s < counts.size(); ++s) {
        if ((counts[s] != 0) != (table.freq[s] != 0))
            throw std::logic_error("grphi::rans::normalize: a used symbol lost its frequency");
        check += table.freq[s];
    }
    if (check != target) throw std::logic_error("grphi::rans::normalize: frequencies do not sum to 2^scale_bits");
    return table;
}

// Serialised size of a table in bytes (see write_table).
inline std::size_t table_bytes(const frequency_table& table);

// Coded size in bits of `counts` under `table` (ignores lane flush and headers).
inline double coded_bits(const std::vector<std::uint64_t>& counts, const frequency_table& table) {
    if (table.single_symbol()) return 0.0;
    double bits = 0.0;
    for (std::size_t s = 0; s < counts.size(); ++s)
        if (counts[s] != 0)
            bits += static_cast<double>(counts[s]) *
                    (static_cast<double>(table.scale_bits) - std::log2(static_cast<double>(table.freq[s])));
    return bits;
}

// The smallest scale whose coded size + table size is within 0.01 % (or one byte) of the best scale:
// small decode tables stay in L1, large ones are only paid for when they save bits.
inline unsigned choose_scale_bits(const std::vector<std::uint64_t>& counts) {
    std::size_t distinct = 0;
    for (std::uint64_t c : counts) distinct += c != 0;
    if (distinct <= 1) return 0;
    const unsigned lowest = std::max(1u, detail::ceil_log2(distinct));
    double best = 0.0;
    std::vector<double> cost(max_scale_bits + 1, 0.0);
    for (unsigned bits = lowest; bits <= max_scale_bits; ++bits) {
        const frequency_table t = normalize(counts, bits);
        cost[bits] = coded_bits(counts, t) + 8.0 * static_cast<double>(table_bytes(t));
        if (bits == lowest || cost[bits] < best) best = cost[bits];
    }
    for (unsigned bits = lowest; bits <= max_scale_bits; ++bits)
        if (cost[bits] <= best + std::max(8.0, best * 1e-4)) return bits;
    return max_scale_bits;
}

// ---------------------------------------------------------------------------------------------
// Step 3: table serialisation.
// Layout: u8 scale_bits, varint alphabet, then (unless scale_bits == 0) per symbol varint freq, where a
// zero frequency is followed by a varint count of further zero-frequency symbols.
inline void write_table(const frequency_table& table, std::vector<std::uint8_t>& out) {
    detail::put_u8(out, table.scale_bits);
    detail::put_varint(out, table.alphabet());
    if (table.single_symbol()) return;
    for (std::size_t s = 0; s < table.alphabet();) {
        detail::put_varint(out, table.freq[s]);
        if (table.freq[s] != 0) {
            ++s;
            continue;
        }
        std::size_t run = 0;
        while (s + 1 + run < table.alphabet() && table.freq[s + 1 + run] == 0) ++run;
        detail::put_varint(out, run);
        s += 1 + run;
    }
}

inline std::size_t table_bytes(const frequency_table& table) {
    std::vector<std::uint8_t> bytes;
    write_table(table, bytes);
    return bytes.size();
}

// Reads and validates a table: scale range, alphabet bound, runs inside the alphabet, last symbol used,
// sum == 2^scale_bits, at least two symbols unless scale_bits == 0.
inline frequency_table read_table(byte_reader& in) {
    frequency_table table;
    table.scale_bits = in.u8("table scale_bits");
    if (table.scale_bits > max_scale_bits)
        in.fail("table scale_bits=" + std::to_string(table.scale_bits) + " exceeds " + std::to_string(max_scale_bits));
    const std::uint64_t alphabet = in.varint("table alphabet size");
    if (alphabet == 0 || alphabet > max_alphabet)
        in.fail("table alphabet size " + std::to_string(alphabet) + " is not in [1, " + std::to_string(max_alphabet) + "]");
    table.freq.assign(static_cast<std::size_t>(alphabet), 0);
    if (table.scale_bits == 0) {
        table.freq.back() = 1;
        return table;
    }
    const std::uint64_t target = std::uint64_t{1} << table.scale_bits;
    std::uint64_t sum = 0;
    std::size_t used = 0;
    for (std::size_t s = 0; s < table.freq.size();) {
        const std::uint64_t f = in.varint("table frequency");
        if (f >= target)
            in.fail("table frequency " + std::to_string(f) + " of symbol " + std::to_string(s) + " is >= 2^scale_bits");
        table.freq[s] = static_cast<std::uint32_t>(f);
        sum += f;
        if (f != 0) {
            ++used;
            ++s;
            continue;
        }
        const std::uint64_t run = in.varint("table zero run");
        if (run >= table.freq.size() - s) in.fail("table zero run of " + std::to_string(run) + " runs past the alphabet");
        s += 1 + static_cast<std::size_t>(run);
    }
    if (table.freq.back() == 0) in.fail("table: the last symbol of the alphabet has frequency 0");
    if (sum != target)
        in.fail("table frequencies sum to " + std::to_string(sum) + ", expected 2^" + std::to_string(table.scale_bits));
    if (used < 2) in.fail("table has one used symbol but scale_bits != 0");
    return table;
}

// ---------------------------------------------------------------------------------------------
// Step 4: coder tables.
struct encoder_symbol {
    std::uint64_t reciprocal;  // ceil(2^64 / freq): q = mul_high(x, reciprocal) = x / freq for x < 2^32
    std::uint32_t x_max;       // emit 16 bits first when the state is >= x_max
    std::uint32_t bias;        // start (+ M - 1 when freq == 1, where the reciprocal gives x - 1)
    std::uint32_t complement;  // M - freq
    std::uint32_t freq;
};

struct encoder_table {
    unsigned scale_bits = 0;
    std::vector<encoder_symbol> symbols;  // alphabet + 1 entries; the last (freq 0) catches invalid symbols
    // For the vector encoder, per symbol: division magic | (start | freq << 16) << 32, where
    // x / freq = (t + ((x - t) >> min(l, 1))) >> max(l - 1, 0), t = mulhi32(x, magic), l = ceil(log2 freq)
    // (Granlund-Montgomery, exact for every 32-bit x).
    std::vector<std::uint64_t> vector_entries;
};

// A decoder slot packed in 64 bits (one load): freq | (slot - start) << 16 | symbol << 32.
inline constexpr std::uint64_t pack_slot(std::uint32_t freq, std::uint32_t bias, std::uint32_t sym) {
    return std::uint64_t{freq} | (std::uint64_t{bias} << 16) | (std::uint64_t{sym} << 32);
}

struct decoder_table {
    unsigned scale_bits = 0;
    std::size_t alphabet = 0;
    std::vector<std::uint64_t> slots;  // 2^scale_bits packed entries (pack_slot)
    // Small tables (scale_bits <= 12, alphabet <= 256) also as 32 bits per slot for the vector decoder:
    // freq | (slot - start) << 12 | symbol << 24; one 8-wide gather instead of two 4-wide ones.
    std::vector<std::uint32_t> compact_slots;
    // Alphabets of at most compare_decode_alphabet symbols: each symbol's frequency and first slot, for
    // the AVX-512 decoder, which finds a slot's symbol by comparisons instead of a gather.
    std::vector<std::uint32_t> freq, start;
};

// Up to this many symbols (the sign stream's 3, a window of 8 levels) the AVX-512 decoder compares the
// slot against the symbols' first slots; on Zen 4 it beats the AVX2 gathers there (bench_rans
// BM_rans_decode_small_alphabet: 1.4x on a sign stream, 1.07x at 8 symbols) and loses at 16.
inline constexpr std::size_t compare_decode_alphabet = 8;

// The invariants every table must meet before coder tables are built from it (read_table and normalize
// guarantee them; a hand-made table is checked here): scale <= 16, sum == 2^scale, canonical one-symbol form.
inline void check_table(const frequency_table& table, const char* who) {
    auto fail = [&](const std::string& what) { throw std::invalid_argument(std::string(who) + ": " + what); };
    if (table.scale_bits > max_scale_bits) fail("scale_bits > 16");
    if (table.freq.empty() || table.freq.size() > max_alphabet) fail("alphabet size must be in [1, 4096]");
    if (table.freq.back() == 0) fail("the last symbol of the alphabet has frequency 0");
    std::uint64_t sum = 0;
    std::size_t used = 0;
    for (std::uint32_t f : table.freq) {
        sum += f;
        used += f != 0;
    }
    if (table.single_symbol() ? (used != 1 || sum != 1) : (sum != table.total() || used < 2))
        fail("frequencies must sum to 2^scale_bits over at least two symbols (or be the one-symbol table)");
}

inline encoder_table build_encoder(const frequency_table& table) {
    check_table(table, "grphi::rans::build_encoder");
    encoder_table enc;
    enc.scale_bits = table.scale_bits;
    // One extra all-zero entry: symbols outside the alphabet are clamped onto it and flagged by freq == 0.
    enc.symbols.assign(table.alphabet() + 1, encoder_symbol{0, 0, 0, 0, 0});
    enc.vector_entries.assign(table.alphabet() + 1, 0);
    if (table.single_symbol()) return enc;
    const std::uint32_t total = table.total();
    std::uint32_t start = 0;
    for (std::size_t s = 0; s < table.alphabet(); ++s) {
        const std::uint32_t f = table.freq[s];
        encoder_symbol& e = enc.symbols[s];
        e.freq = f;
        if (f != 0) {
            e.x_max = ((state_lower >> table.scale_bits) << 16) * f;
            e.complement = total - f;
            if (f == 1) {
                e.reciprocal = ~std::uint64_t{0};
                e.bias = start + total - 1;
            } else {
                e.reciprocal = ~std::uint64_t{0} / f + 1;
                e.bias = start;
            }
        }
        if (f != 0) {
            const unsigned l = detail::ceil_log2(f);
            const std::uint64_t magic = ((std::uint64_t{1} << 32) * ((std::uint64_t{1} << l) - f)) / f + 1;
            enc.vector_entries[s] = magic | (std::uint64_t{start | (f << 16)} << 32);
        }
        start += f;
    }
    return enc;
}

inline decoder_table build_decoder(const frequency_table& table) {
    check_table(table, "grphi::rans::build_decoder");
    decoder_table dec;
    dec.scale_bits = table.scale_bits;
    dec.alphabet = table.alphabet();
    if (table.single_symbol()) return dec;
    dec.slots.resize(table.total());
    std::uint32_t slot = 0;
    for (std::size_t s = 0; s < table.alphabet(); ++s) {
        for (std::uint32_t i = 0; i < table.freq[s]; ++i, ++slot)
            dec.slots[slot] = pack_slot(table.freq[s], i, static_cast<std::uint32_t>(s));
    }
    if (slot != table.total()) throw std::logic_error("grphi::rans::build_decoder: frequencies do not fill the slots");
    if (table.alphabet() <= compare_decode_alphabet) {
        std::uint32_t first = 0;
        for (const std::uint32_t f : table.freq) {
            dec.freq.push_back(f);
            dec.start.push_back(first);
            first += f;
        }
    }
    if (table.scale_bits <= 12 && table.alphabet() <= 256) {
        dec.compact_slots.resize(dec.slots.size());
        for (std::size_t i = 0; i < dec.slots.size(); ++i) {
            const std::uint64_t e = dec.slots[i];
            dec.compact_slots[i] = static_cast<std::uint32_t>((e & 0xfff) | (((e >> 16) & 0xfff) << 12) | (((e >> 32) & 0xff) << 24));
        }
    }
    return dec;
}

// ---------------------------------------------------------------------------------------------
// Step 5: coding. Payload layout: u8 lanes_log2, lanes x u32 LE initial decoder states (lane 0 first),
// then the 16-bit LE renormalisation words in decoder read order. The decoder ends with every state == L.

// Lanes the one-call encoder uses: few for short streams (each lane costs ~2-4 flush bytes), many for speed.
inline unsigned default_lanes_log2(std::size_t n) {
    if (n < 2048) return 0;
    if (n < (std::size_t{1} << 18)) return 2;
    if (n < (std::size_t{1} << 20)) return 4;
    return 5;
}

namespace detail {

// Tests switch the vector paths off to check the scalar ones on the same machine.
inline bool& vector_paths_allowed() {
    static bool allowed = true;
    return allowed;
}

#if GRPHI_RANS_AVX2
// The one run-time choice (kernels/dispatch.hpp): the CPU's instruction sets, capped by GRPHI_ISA or a
// kernels::scoped_isa_limit like every other kernel.
inline bool cpu_has_avx2() { return kernels::active_isa() >= kernels::isa::avx2; }

// For each 8-bit refill mask, the permutation that hands lane j the word of rank popcount(mask below j).
inline const std::uint32_t* refill_permutations() {
    static const std::vector<std::uint32_t> table = [] {
        std::vector<std::uint32_t> t(256 * 8);
        for (unsigned mask = 0; mask < 256; ++mask)
            for (unsigned j = 0, rank = 0; j < 8; ++j) {
                t[mask * 8 + j] = rank;
                rank += (mask >> j) & 1;
            }
        return t;
    }();
    return table.data();
}

// One decode step for 8 lanes: returns their symbols (32-bit), advances the states.
__attribute__((target("avx2"), always_inline)) inline __m256i avx2_decode(__m256i& x, const long long* slots, __m256i mask,
                                                                           __m128i shift) {
    const __m256i evens_then_odds = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i slot = _mm256_and_si256(x, mask);
    const __m256i e0 = _mm256_i32gather_epi64(slots, _mm256_castsi256_si128(slot), 8);
    const __m256i e1 = _mm256_i32gather_epi64(slots, _mm256_extracti128_si256(slot, 1), 8);
    const __m256i a = _mm256_permutevar8x32_epi32(e0, evens_then_odds);
    const __m256i b = _mm256_permutevar8x32_epi32(e1, evens_then_odds);
    const __m256i freq_bias = _mm256_permute2x128_si256(a, b, 0x20);
    const __m256i freq = _mm256_and_si256(freq_bias, _mm256_set1_epi32(0xffff));
    x = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(x, shift)), _mm256_srli_epi32(freq_bias, 16));
    return _mm256_permute2x128_si256(a, b, 0x31);
}

// The same step from the compact 32-bit table.
__attribute__((target("avx2"), always_inline)) inline __m256i avx2_decode_compact(__m256i& x, const int* slots, __m256i mask,
                                                                                   __m128i shift) {
    const __m256i low12 = _mm256_set1_epi32(0xfff);
    const __m256i e = _mm256_i32gather_epi32(slots, _mm256_and_si256(x, mask), 4);
    const __m256i freq = _mm256_and_si256(e, low12);
    const __m256i bias = _mm256_and_si256(_mm256_srli_epi32(e, 12), low12);
    x = _mm256_add_epi32(_mm256_mullo_epi32(freq, _mm256_srl_epi32(x, shift)), bias);
    return _mm256_srli_epi32(e, 24);
}

template <bool Compact>
__attribute__((target("avx2"), always_inline)) inline __m256i avx2_decode_with(__m256i& x, const long long* slots,
                                                                                const int* compact, __m256i mask,
                                                                                __m128i shift) {
    if constexpr (Compact) return avx2_decode_compact(x, compact, mask, shift);
    else return avx2_decode(x, slots, mask, shift);
}

// Refills the 8 lanes below 2^16 from the next words, in lane order (as the scalar decoder reads).
__attribute__((target("avx2,popcnt"), always_inline)) inline void avx2_refill(__m256i& x, const std::uint8_t*& p,
                                                                               const std::uint32_t* permutations) {
    const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
    const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(need)));
    const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256i order = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(permutations + 8 * bits));
    const __m256i refilled = _mm256_or_si256(_mm256_slli_epi32(x, 16), _mm256_permutevar8x32_epi32(words, order));
    x = _mm256_blendv_epi8(x, refilled, need);
    p += 2 * static_cast<unsigned>(__builtin_popcount(bits));
}

// The coder states back to memory: the first Vectors of x0..x3.
template <unsigned Vectors>
__attribute__((target("avx2"), always_inline)) inline void avx2_store_states(__m256i* states, __m256i x0, __m256i x1,
                                                                             __m256i x2, __m256i x3) {
    _mm256_storeu_si256(states, x0);
    _mm256_storeu_si256(states + 1, x1);
    if constexpr (Vectors == 4) {
        _mm256_storeu_si256(states + 2, x2);
        _mm256_storeu_si256(states + 3, x3);
    }
}

__attribute__((target("avx2"), always_inline)) inline void avx2_store_symbols(symbol* out, __m256i lo, __m256i hi) {
    const __m256i packed16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), packed16);
}

// Fast path for 8*Vectors lanes (2 or 4 vectors, named so they stay in registers), whole groups only,
// while 2*lanes bytes remain (no read can overrun). Returns the next group; state and ptr advance
// exactly as in the scalar loop.
template <unsigned Vectors, bool Compact>
__attribute__((target("avx2,popcnt"))) inline std::size_t decode_groups_avx2(const decoder_table& dec,
                                                                               std::uint32_t* state, const std::uint8_t*& ptr,
                                                                               const std::uint8_t* end, symbol* out,
                                                                               std::size_t g, std::size_t groups) {
    static_assert(Vectors == 2 || Vectors == 4, "16 or 32 lanes");
    constexpr std::size_t lanes = 8 * Vectors;
    const unsigned scale = dec.scale_bits;
    const auto* slots = reinterpret_cast<const long long*>(dec.slots.data());
    const auto* compact = reinterpret_cast<const int*>(dec.compact_slots.data());
    const std::uint32_t* permutations = refill_permutations();
    const __m256i mask = _mm256_set1_epi32(static_cast<int>((std::uint32_t{1} << scale) - 1));
    const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(scale));
    auto* states = reinterpret_cast<__m256i*>(state);
    __m256i x0 = _mm256_loadu_si256(states), x1 = _mm256_loadu_si256(states + 1);
    __m256i x2 = x0, x3 = x0;
    if constexpr (Vectors == 4) {
        x2 = _mm256_loadu_si256(states + 2);
        x3 = _mm256_loadu_si256(states + 3);
    }
    const std::uint8_t* p = ptr;
    for (; g < groups && static_cast<std::size_t>(end - p) >= 2 * lanes; ++g) {
        symbol* group = out + g * lanes;
        const __m256i s0 = avx2_decode_with<Compact>(x0, slots, compact, mask, shift);
        const __m256i s1 = avx2_decode_with<Compact>(x1, slots, compact, mask, shift);
        if constexpr (Vectors == 4) {
            const __m256i s2 = avx2_decode_with<Compact>(x2, slots, compact, mask, shift);
            const __m256i s3 = avx2_decode_with<Compact>(x3, slots, compact, mask, shift);
            avx2_store_symbols(group + 16, s2, s3);
        }
        avx2_store_symbols(group, s0, s1);
        avx2_refill(x0, p, permutations);
        avx2_refill(x1, p, permutations);
        if constexpr (Vectors == 4) {
            avx2_refill(x2, p, permutations);
            avx2_refill(x3, p, permutations);
        }
    }
    avx2_store_states<Vectors>(states, x0, x1, x2, x3);
    ptr = p;
    return g;
}
// For each 8-bit emit mask, the permutation that packs the emitting lanes' words, in lane order, at the
// top of 8 slots (slot 8 - k + i takes the i-th emitting lane), so one store ends exactly at the pointer.
inline const std::uint32_t* emit_permutations() {
    static const std::vector<std::uint32_t> table = [] {
        std::vector<std::uint32_t> t(256 * 8, 0);
        for (unsigned mask = 0; mask < 256; ++mask) {
            const auto k = static_cast<unsigned>(__builtin_popcount(mask));
            for (unsigned j = 0, i = 0; j < 8; ++j)
                if ((mask >> j) & 1) t[mask * 8 + (8 - k) + i++] = j;
        }
        return t;
    }();
    return table.data();
}

__attribute__((target("avx2"), always_inline)) inline __m256i avx2_mulhi_epu32(__m256i a, __m256i b) {
    const __m256i even = _mm256_srli_epi64(_mm256_mul_epu32(a, b), 32);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32));
    return _mm256_blend_epi32(even, odd, 0xAA);
}

// Encodes 8 lanes: first the words of the lanes whose state is too large (written below p in lane order),
// then the symbols, as the scalar encoder does lane by lane.
__attribute__((target("avx2,popcnt"), always_inline)) inline void avx2_encode(__m256i& x, const symbol* symbols,
                                                                               const long long* entries, __m256i sentinel,
                                                                               __m128i freq_to_max, __m256i total,
                                                                               std::uint8_t*& p, const std::uint32_t* permutations,
                                                                               __m256i& missing) {
    const __m256i evens_then_odds = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i low16 = _mm256_set1_epi32(0xffff);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i index = _mm256_min_epu32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(symbols))),
                                           sentinel);
    const __m256i e0 = _mm256_i32gather_epi64(entries, _mm256_castsi256_si128(index), 8);
    const __m256i e1 = _mm256_i32gather_epi64(entries, _mm256_extracti128_si256(index, 1), 8);
    const __m256i a = _mm256_permutevar8x32_epi32(e0, evens_then_odds);
    const __m256i b = _mm256_permutevar8x32_epi32(e1, evens_then_odds);
    const __m256i magic = _mm256_permute2x128_si256(a, b, 0x20);
    const __m256i start_freq = _mm256_permute2x128_si256(a, b, 0x31);
    const __m256i freq = _mm256_srli_epi32(start_freq, 16);
    missing = _mm256_or_si256(missing, _mm256_cmpeq_epi32(freq, _mm256_setzero_si256()));
    const __m256i x_max = _mm256_sll_epi32(freq, freq_to_max);
    const __m256i emit = _mm256_cmpeq_epi32(_mm256_max_epu32(x, x_max), x);  // x >= x_max, unsigned
    const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(emit)));
    const __m256i order = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(permutations + 8 * bits));
    const __m256i words = _mm256_permutevar8x32_epi32(_mm256_and_si256(x, low16), order);
    const __m256i words16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(words, words), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p - 16), _mm256_castsi256_si128(words16));
    p -= 2 * static_cast<unsigned>(__builtin_popcount(bits));
    x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), emit);
    // q = x / freq; the shifts come from floor(log2(freq - 1)) read off a float's exponent field.
    const __m256i t = avx2_mulhi_epu32(x, magic);
    const __m256i freq_minus_1 = _mm256_sub_epi32(freq, one);
    const __m256i log_floor = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(freq_minus_1)), 23), _mm256_set1_epi32(127));
    const __m256i shift2 = _mm256_max_epi32(log_floor, _mm256_setzero_si256());
    const __m256i shift1 = _mm256_min_epu32(freq_minus_1, one);
    const __m256i q = _mm256_srlv_epi32(_mm256_add_epi32(t, _mm256_srlv_epi32(_mm256_sub_epi32(x, t), shift1)), shift2);
    const __m256i start = _mm256_and_si256(start_freq, low16);
    x = _mm256_add_epi32(_mm256_add_epi32(x, start), _mm256_mullo_epi32(q, _mm256_sub_epi32(total, freq)));
}

// Whole groups from the last down to the first, 8*Vectors lanes; needs 16 bytes of room below ptr.
// Returns nonzero when a symbol had no frequency.
template <unsigned Vectors>
__attribute__((target("avx2,popcnt"))) inline std::uint32_t encode_groups_avx2(const encoder_table& enc, const symbol* symbols,
                                                                       std::size_t groups, std::uint32_t* state,
                                                                       std::uint8_t*& ptr) {
    static_assert(Vectors == 2 || Vectors == 4, "16 or 32 lanes");
    constexpr std::size_t lanes = 8 * Vectors;
    const auto* entries = reinterpret_cast<const long long*>(enc.vector_entries.data());
    const std::uint32_t* permutations = emit_permutations();
    const __m128i freq_to_max = _mm_cvtsi32_si128(static_cast<int>(32 - enc.scale_bits));
    const __m256i total = _mm256_set1_epi32(static_cast<int>(std::uint32_t{1} << enc.scale_bits));
    const __m256i sentinel = _mm256_set1_epi32(static_cast<int>(enc.vector_entries.size() - 1));
    __m256i missing = _mm256_setzero_si256();
    auto* states = reinterpret_cast<__m256i*>(state);
    __m256i x0 = _mm256_loadu_si256(states), x1 = _mm256_loadu_si256(states + 1);
    __m256i x2 = x0, x3 = x0;
    if constexpr (Vectors == 4) {
        x2 = _mm256_loadu_si256(states + 2);
        x3 = _mm256_loadu_si256(states + 3);
    }
    std::uint8_t* p = ptr;
    for (std::size_t g = groups; g-- > 0;) {
        const symbol* group = symbols + g * lanes;
        if constexpr (Vectors == 4) {
            avx2_encode(x3, group + 24, entries, sentinel, freq_to_max, total, p, permutations, missing);
            avx2_encode(x2, group + 16, entries, sentinel, freq_to_max, total, p, permutations, missing);
        }
        avx2_encode(x1, group + 8, entries, sentinel, freq_to_max, total, p, permutations, missing);
        avx2_encode(x0, group, entries, sentinel, freq_to_max, total, p, permutations, missing);
    }
    avx2_store_states<Vectors>(states, x0, x1, x2, x3);
    ptr = p;
    return static_cast<std::uint32_t>(_mm256_movemask_epi8(missing));
}

// AVX-512 (run-time dispatched like the AVX2 paths): 16 lanes per register; for alphabets of at most 63
// symbols the coder tables live in registers (two-register permutes, and a blend above 31 symbols,
// replace the gathers), and the emitted words are packed by a compress instead of a permutation table.
inline bool cpu_has_avx512() { return kernels::active_isa() >= kernels::isa::avx512; }

// Tests switch the AVX-512 encoder off to check the AVX2 one on the same machine.
inline bool& avx512_paths_allowed() {
    static bool allowed = true;
    return allowed;
}

inline constexpr std::size_t register_table_entries = 64;  // four zmm registers of 32-bit entries
inline constexpr std::size_t narrow_table_entries = 32;    // two: one permute per lookup

// The per-symbol constants of one encode step, 64 entries each (the sentinel and unused slots are
// all-zero: frequency 0 flags the symbol as missing).
struct register_tables {
    alignas(64) std::uint32_t start_freq[register_table_entries];  // start | freq << 16
    alignas(64) std::uint32_t magic[register_table_entries];       // division magic (see encoder_table)
    alignas(64) std::uint32_t shift1[register_table_entries];      // min(freq - 1, 1)
    alignas(64) std::uint32_t shift2[register_table_entries];      // max(ceil(log2 freq) - 1, 0)
    alignas(64) std::uint32_t log2_freq[register_table_entries];   // log2 freq when every freq is a power of two
    bool powers_of_two = true;                                     // every used frequency is a power of two
};

inline register_tables make_register_tables(const encoder_table& enc) {
    register_tables t{};
    for (std::size_t s = 0; s + 1 < enc.vector_entries.size(); ++s) {
        const std::uint64_t e = enc.vector_entries[s];
        const auto freq = static_cast<std::uint32_t>(e >> 48);
        if (freq == 0) continue;
        const unsigned l = ceil_log2(freq);
        t.start_freq[s] = static_cast<std::uint32_t>(e >> 32);
        t.magic[s] = static_cast<std::uint32_t>(e);
        t.shift1[s] = std::min(freq - 1, 1u);
        t.shift2[s] = l > 0 ? l - 1 : 0;
        t.log2_freq[s] = l;
        t.powers_of_two = t.powers_of_two && (freq & (freq - 1)) == 0;
    }
    return t;
}

// GCC 12's AVX-512 intrinsics (self-initialised _mm512_undefined_* operands) raise bogus
// -W(maybe-)uninitialized once inlined; nothing here is uninitialised.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#define GRPHI_RANS_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,popcnt")))

struct avx512_table {
    __m512i e0, e1, e2, e3;  // entries 0-15, 16-31, 32-47, 48-63
};

GRPHI_RANS_AVX512_TARGET inline avx512_table load_avx512_table(const std::uint32_t* entries) {
    return {_mm512_load_si512(entries), _mm512_load_si512(entries + 16), _mm512_load_si512(entries + 32),
            _mm512_load_si512(entries + 48)};
}

// Wide: 64 entries (index bit 5 picks the upper pair); else 32.
template <bool Wide>
GRPHI_RANS_AVX512_TARGET __attribute__((always_inline)) inline __m512i lookup(const avx512_table& t, __m512i index) {
    const __m512i low = _mm512_permutex2var_epi32(t.e0, index, t.e1);
    if constexpr (!Wide) {
        return low;
    } else {
        const __m512i high = _mm512_permutex2var_epi32(t.e2, index, t.e3);
        return _mm512_mask_blend_epi32(_mm512_test_epi32_mask(index, _mm512_set1_epi32(32)), low, high);
    }
}

// Encodes 16 lanes: the words of the lanes whose state is too large go below p in lane order, then
// every lane takes its symbol (the scalar encoder's step, lane by lane). With PowersOfTwo (every used
// frequency 2^k, e.g. the sign stream of weights without zeros) the division is a shift:
// x' = (x >> k) << scale | (x mod 2^k) + start; `magic` then holds k and the shift tables are unused.
template <bool PowersOfTwo, bool Wide>
GRPHI_RANS_AVX512_TARGET __attribute__((always_inline)) inline void avx512_encode(
    __m512i& x, const symbol* symbols, const avx512_table& start_freq, const avx512_table& magic,
    const avx512_table& shift1, const avx512_table& shift2, __m512i sentinel, __m128i freq_to_max, __m512i total,
    __m128i scale, std::uint8_t*& p, __mmask16& missing) {
    const __m512i index =
        _mm512_min_epu32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(symbols))), sentinel);
    const __m512i sf = lookup<Wide>(start_freq, index);
    const __m512i freq = _mm512_srli_epi32(sf, 16);
    missing = static_cast<__mmask16>(missing | _mm512_cmpeq_epi32_mask(freq, _mm512_setzero_si512()));
    const __mmask16 emit = _mm512_cmpge_epu32_mask(x, _mm512_sll_epi32(freq, freq_to_max));
    const auto count = static_cast<unsigned>(__builtin_popcount(emit));
    const __m256i words = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(emit, x));
    p -= 2 * count;
    _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << count) - 1), words);
    x = _mm512_mask_srli_epi32(x, emit, x, 16);
    const __m512i start = _mm512_and_si512(sf, _mm512_set1_epi32(0xffff));
    if constexpr (PowersOfTwo) {
        (void)shift1, (void)shift2, (void)total;
        const __m512i q = _mm512_srlv_epi32(x, lookup<Wide>(magic, index));
        const __m512i r = _mm512_and_si512(x, _mm512_sub_epi32(freq, _mm512_set1_epi32(1)));
        x = _mm512_add_epi32(_mm512_sll_epi32(q, scale), _mm512_add_epi32(r, start));
        return;
    }
    (void)scale;
    // q = x / freq (Granlund-Montgomery, as the AVX2 encoder), then x = x + start + q * (M - freq).
    const __m512i m = lookup<Wide>(magic, index);
    const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(x, m), 32);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m, 32));
    const __m512i t = _mm512_mask_blend_epi32(0xAAAA, even, odd);
    const __m512i q = _mm512_srlv_epi32(_mm512_add_epi32(t, _mm512_srlv_epi32(_mm512_sub_epi32(x, t), lookup<Wide>(shift1, index))),
                                        lookup<Wide>(shift2, index));
    x = _mm512_add_epi32(_mm512_add_epi32(x, start), _mm512_mullo_epi32(q, _mm512_sub_epi32(total, freq)));
}

// Whole groups from the last down to the first, 16*Vectors lanes, symbols below register_table_entries - 1.
// Returns nonzero when a symbol had no frequency.
template <unsigned Vectors, bool PowersOfTwo, bool Wide>
GRPHI_RANS_AVX512_TARGET inline std::uint32_t encode_groups_avx512(const encoder_table& enc, const register_tables& tables,
                                                                   const symbol* symbols, std::size_t groups,
                                                                   std::uint32_t* state, std::uint8_t*& ptr) {
    static_assert(Vectors == 1 || Vectors == 2, "16 or 32 lanes");
    constexpr std::size_t lanes = 16 * Vectors;
    const avx512_table start_freq = load_avx512_table(tables.start_freq);
    const avx512_table magic = load_avx512_table(PowersOfTwo ? tables.log2_freq : tables.magic);
    const avx512_table shift1 = load_avx512_table(tables.shift1), shift2 = load_avx512_table(tables.shift2);
    const __m128i freq_to_max = _mm_cvtsi32_si128(static_cast<int>(32 - enc.scale_bits));
    const __m512i total = _mm512_set1_epi32(static_cast<int>(std::uint32_t{1} << enc.scale_bits));
    const __m512i sentinel = _mm512_set1_epi32(static_cast<int>(enc.symbols.size() - 1));
    const __m128i scale = _mm_cvtsi32_si128(static_cast<int>(enc.scale_bits));
    __mmask16 missing = 0;
    __m512i x0 = _mm512_loadu_si512(state);
    __m512i x1 = x0;
    if constexpr (Vectors == 2) x1 = _mm512_loadu_si512(state + 16);
    std::uint8_t* p = ptr;
    for (std::size_t g = groups; g-- > 0;) {
        const symbol* group = symbols + g * lanes;
        if constexpr (Vectors == 2)
            avx512_encode<PowersOfTwo, Wide>(x1, group + 16, start_freq, magic, shift1, shift2, sentinel, freq_to_max, total,
                                       scale, p, missing);
        avx512_encode<PowersOfTwo, Wide>(x0, group, start_freq, magic, shift1, shift2, sentinel, freq_to_max, total, scale, p,
                                   missing);
    }
    _mm512_storeu_si512(state, x0);
    if constexpr (Vectors == 2) _mm512_storeu_si512(state + 16, x1);
    ptr = p;
    return missing;
}

// One decode step for 16 lanes of an alphabet of Symbols <= 8 symbols: the slot's symbol is the count of
// symbols 1 .. Symbols-1 whose first slot is at or below it (a symbol of frequency 0 starts where the next
// one does, so it is never chosen); freq and start come from registers. Then the refill: lanes below 2^16
// take the next words in lane order (an expand of the 16 words at p), as the scalar decoder reads them.
template <int Symbols>
GRPHI_RANS_AVX512_TARGET __attribute__((always_inline)) inline __m512i avx512_decode_compare(
    __m512i& x, const __m512i (&starts)[8], __m512i freq, __m512i start, __m512i mask, __m128i scale, const std::uint8_t*& p) {
    const __m512i slot = _mm512_and_si512(x, mask), one = _mm512_set1_epi32(1);
    __m512i sym = _mm512_setzero_si512(), sym2 = sym;  // two chains of additions
    for (int k = 1; k < Symbols; k += 2) {
        sym = _mm512_mask_add_epi32(sym, _mm512_cmpge_epu32_mask(slot, starts[k]), sym, one);
        if (k + 1 < Symbols) sym2 = _mm512_mask_add_epi32(sym2, _mm512_cmpge_epu32_mask(slot, starts[k + 1]), sym2, one);
    }
    sym = _mm512_add_epi32(sym, sym2);
    const __m512i f = _mm512_permutexvar_epi32(sym, freq);
    const __m512i bias = _mm512_sub_epi32(slot, _mm512_permutexvar_epi32(sym, start));
    x = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x, scale)), bias);
    const __mmask16 need = _mm512_cmplt_epu32_mask(x, _mm512_set1_epi32(static_cast<int>(state_lower)));
    const __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    x = _mm512_mask_or_epi32(x, need, _mm512_slli_epi32(x, 16), _mm512_maskz_expand_epi32(need, words));
    p += 2 * static_cast<unsigned>(__builtin_popcount(need));
    return sym;
}

// Whole groups of 16*Vectors lanes while 2*lanes bytes remain (no read can overrun), for alphabets of
// Symbols <= compare_decode_alphabet; state and ptr advance exactly as in the scalar loop. Returns the next group.
template <unsigned Vectors, int Symbols>
GRPHI_RANS_AVX512_TARGET inline std::size_t decode_groups_compare(const decoder_table& dec, std::uint32_t* state,
                                                                 const std::uint8_t*& ptr, const std::uint8_t* end,
                                                                 symbol* out, std::size_t g, std::size_t groups) {
    static_assert(Vectors == 1 || Vectors == 2, "16 or 32 lanes");
    static_assert(Symbols >= 2 && Symbols <= static_cast<int>(compare_decode_alphabet), "a compare-decoded alphabet");
    constexpr std::size_t lanes = 16 * Vectors;
    alignas(64) std::uint32_t freq[16] = {}, start[16] = {};
    for (int s = 0; s < Symbols; ++s) {
        freq[s] = dec.freq[static_cast<std::size_t>(s)];
        start[s] = dec.start[static_cast<std::size_t>(s)];
    }
    __m512i starts[8];
    for (int s = 0; s < 8; ++s) starts[s] = _mm512_set1_epi32(static_cast<int>(start[s < Symbols ? s : 0]));
    const __m512i freq_v = _mm512_load_si512(freq), start_v = _mm512_load_si512(start);
    const __m512i mask = _mm512_set1_epi32(static_cast<int>((std::uint32_t{1} << dec.scale_bits) - 1));
    const __m128i scale = _mm_cvtsi32_si128(static_cast<int>(dec.scale_bits));
    __m512i x0 = _mm512_loadu_si512(state);
    __m512i x1 = x0;
    if constexpr (Vectors == 2) x1 = _mm512_loadu_si512(state + 16);
    const std::uint8_t* p = ptr;
    for (; g < groups && static_cast<std::size_t>(end - p) >= 2 * lanes; ++g) {
        symbol* group = out + g * lanes;
        const __m512i s0 = avx512_decode_compare<Symbols>(x0, starts, freq_v, start_v, mask, scale, p);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(group), _mm512_cvtepi32_epi16(s0));
        if constexpr (Vectors == 2) {
            const __m512i s1 = avx512_decode_compare<Symbols>(x1, starts, freq_v, start_v, mask, scale, p);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(group + 16), _mm512_cvtepi32_epi16(s1));
        }
    }
    _mm512_storeu_si512(state, x0);
    if constexpr (Vectors == 2) _mm512_storeu_si512(state + 16, x1);
    ptr = p;
    return g;
}

// decode_groups_compare for the table's alphabet (2 .. compare_decode_alphabet symbols).
template <unsigned Vectors>
inline std::size_t decode_groups_avx512(const decoder_table& dec, std::uint32_t* state, const std::uint8_t*& ptr,
                                        const std::uint8_t* end, symbol* out, std::size_t g, std::size_t groups) {
    switch (dec.alphabet) {
    case 2: return decode_groups_compare<Vectors, 2>(dec, state, ptr, end, out, g, groups);
    case 3: return decode_groups_compare<Vectors, 3>(dec, state, ptr, end, out, g, groups);
    case 4: return decode_groups_compare<Vectors, 4>(dec, state, ptr, end, out, g, groups);
    case 5: return decode_groups_compare<Vectors, 5>(dec, state, ptr, end, out, g, groups);
    case 6: return decode_groups_compare<Vectors, 6>(dec, state, ptr, end, out, g, groups);
    case 7: return decode_groups_compare<Vectors, 7>(dec, state, ptr, end, out, g, groups);
    default: return decode_groups_compare<Vectors, 8>(dec, state, ptr, end, out, g, groups);
    }
}

#undef GRPHI_RANS_AVX512_TARGET
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

// Returns false when a symbol had no frequency in the table (the output is then garbage).
template <unsigned Lanes>
inline bool encode_lanes(const encoder_table& enc, const symbol* symbols, std::size_t n, std::uint8_t*& out_ptr) {
    std::uint8_t* ptr = out_ptr;  // a local: byte stores through a uint8_t*& could alias the pointer itself
    std::uint32_t state[Lanes];
    for (unsigned j = 0; j < Lanes; ++j) state[j] = state_lower;
    const encoder_symbol* table = enc.symbols.data();
    const std::size_t sentinel = enc.symbols.size() - 1;
    std::uint32_t missing = 0;  // becomes nonzero when a symbol has no frequency (checked once at the end)
    auto step = [&](std::uint32_t& x, symbol s) {
        const encoder_symbol& e = table[s < sentinel ? s : sentinel];
        missing |= e.freq == 0;
        // Branch-free renormalisation (the emit bit is data-dependent): the word is written always and
        // kept only when emitting; masks instead of ?: so compilers do not reintroduce a branch.
        const std::uint32_t emit = x >= e.x_max;
        const std::uint32_t keep_high = 0u - emit;
        store_u16(ptr - 2, x);
        ptr -= 2 * emit;
        x = (x & ~keep_high) | ((x >> 16) & keep_high);
        const auto q = static_cast<std::uint32_t>(mul_high(x, e.reciprocal));
        x = x + e.bias + q * e.complement;
    };
    const std::size_t groups = n / Lanes;
    const std::size_t tail = n % Lanes;
    for (std::size_t j = tail; j-- > 0;) step(state[j], symbols[groups * Lanes + j]);
    std::size_t g = groups;
#if GRPHI_RANS_AVX2
    if constexpr (Lanes >= 16) {
        if (vector_paths_allowed() && avx512_paths_allowed() && cpu_has_avx512() &&
            enc.symbols.size() <= register_table_entries) {
            const register_tables tables = make_register_tables(enc);
            constexpr unsigned v = Lanes / 16;
            if (enc.symbols.size() <= narrow_table_entries)
                missing |= tables.powers_of_two ? encode_groups_avx512<v, true, false>(enc, tables, symbols, groups, state, ptr)
                                                : encode_groups_avx512<v, false, false>(enc, tables, symbols, groups, state, ptr);
            else
                missing |= tables.powers_of_two ? encode_groups_avx512<v, true, true>(enc, tables, symbols, groups, state, ptr)
                                                : encode_groups_avx512<v, false, true>(enc, tables, symbols, groups, state, ptr);
            g = 0;
        } else if (vector_paths_allowed() && cpu_has_avx2()) {
            missing |= encode_groups_avx2<Lanes / 8>(enc, symbols, groups, state, ptr);
            g = 0;
        }
    }
#endif
    while (g-- > 0) {
        const symbol* group = symbols + g * Lanes;
        for_each_lane<Lanes>([&](auto k) {
            constexpr std::size_t j = Lanes - 1 - decltype(k)::value;
            step(state[j], group[j]);
        });
    }
    for (unsigned j = Lanes; j-- > 0;) {
        ptr -= 4;
        store_u16(ptr, state[j]);
        store_u16(ptr + 2, state[j] >> 16);
    }
    out_ptr = ptr;
    return missing == 0;
}

template <unsigned Lanes>
inline void decode_lanes(const decoder_table& dec, byte_reader& in, std::size_t payload_end_remaining, symbol* out,
                         std::size_t n) {
    std::uint32_t state[Lanes];
    for (unsigned j = 0; j < Lanes; ++j) state[j] = in.u32("rans lane state");
    const std::size_t word_bytes = in.remaining() - payload_end_remaining;
    const std::uint8_t* ptr = in.position();
    const std::uint8_t* const end = ptr + word_bytes;
    const std::uint64_t* table = dec.slots.data();
    const unsigned scale = dec.scale_bits;
    const std::uint32_t mask = (std::uint32_t{1} << scale) - 1;
    const std::size_t groups = n / Lanes;
    const std::size_t tail = n % Lanes;
    std::size_t g = 0;
#if GRPHI_RANS_AVX2
    if constexpr (Lanes >= 16) {
        if (vector_paths_allowed() && avx512_paths_allowed() && cpu_has_avx512() && dec.alphabet >= 2 &&
            dec.alphabet <= compare_decode_alphabet && dec.freq.size() == dec.alphabet) {
            g = decode_groups_avx512<Lanes / 16>(dec, state, ptr, end, out, g, groups);
        } else if (vector_paths_allowed() && cpu_has_avx2()) {
            const bool compact = dec.compact_slots.size() == dec.slots.size();
            g = compact ? decode_groups_avx2<Lanes / 8, true>(dec, state, ptr, end, out, g, groups)
                        : decode_groups_avx2<Lanes / 8, false>(dec, state, ptr, end, out, g, groups);
        }
    }
#endif
    // Fast path: a group reads at most Lanes words, so with 2*Lanes bytes left no read can overrun.
    for (; g < groups && static_cast<std::size_t>(end - ptr) >= 2 * Lanes; ++g) {
        symbol* group = out + g * Lanes;
        for_each_lane<Lanes>([&](auto k) {
            constexpr std::size_t j = decltype(k)::value;
            std::uint32_t x = state[j];
            const std::uint64_t e = table[x & mask];
            group[j] = static_cast<symbol>(e >> 32);
            x = static_cast<std::uint32_t>(e & 0xffff) * (x >> scale) + static_cast<std::uint32_t>((e >> 16) & 0xffff);
            // Branch-free refill: the refill bit is data-dependent and unpredictable.
            const std::uint32_t refill = x < state_lower;
            const std::uint32_t word = load_u16(ptr) & (0u - refill);
            x = (x << (refill << 4)) | word;
            ptr += 2 * refill;
            state[j] = x;
        });
    }
    auto checked_step = [&](std::uint32_t& x, symbol& result) {
        const std::uint64_t e = table[x & mask];
        result = static_cast<symbol>(e >> 32);
        x = static_cast<std::uint32_t>(e & 0xffff) * (x >> scale) + static_cast<std::uint32_t>((e >> 16) & 0xffff);
        if (x < state_lower) {
            if (end - ptr < 2) in.fail("rans payload truncated: renormalisation word past the end");
            x = (x << 16) | load_u16(ptr);
            ptr += 2;
        }
    };
    for (; g < groups; ++g)
        for (unsigned j = 0; j < Lanes; ++j) checked_step(state[j], out[g * Lanes + j]);
    for (std::size_t j = 0; j < tail; ++j) checked_step(state[j], out[groups * Lanes + j]);
    if (ptr != end)
        in.fail("rans payload has " + std::to_string(end - ptr) + " unread bytes (corrupt stream)");
    for (unsigned j = 0; j < Lanes; ++j)
        if (state[j] != state_lower) in.fail("rans final state of lane " + std::to_string(j) + " is wrong (corrupt stream)");
    in.bytes(word_bytes, "rans payload");
}

}  // namespace detail

namespace detail {

// A payload coded into a buffer of its own: bytes [begin, end) of `storage`.
struct coded_payload {
    std::unique_ptr<std::uint8_t[]> storage;
    const std::uint8_t* begin = nullptr;
    const std::uint8_t* end = nullptr;
    std::size_t size() const { return static_cast<std::size_t>(end - begin); }
};

// The payload of n symbols (all with nonzero frequency in the table), coded backwards from the buffer's end.
inline coded_payload encode_payload(const encoder_table& enc, const symbol* symbols, std::size_t n, unsigned lanes_log2) {
    if (lanes_log2 > max_lanes_log2) throw std::invalid_argument("grphi::rans::encode_symbols: lanes_log2 > 5");
    if (enc.scale_bits == 0) throw std::invalid_argument("grphi::rans::encode_symbols: one-symbol table has no payload");
    if (enc.symbols.size() < 2 || enc.vector_entries.size() != enc.symbols.size())
        throw std::invalid_argument("grphi::rans::encode_symbols: encoder table not made by build_encoder");
    const unsigned lanes = 1u << lanes_log2;
    // The lanes byte, at most one word per symbol, the states (written last: room for the vector
    // encoders' spare stores) and the scalar encoder's always-written spare word.
    const std::size_t capacity = 1 + 2 * n + 4 * lanes + 2;
    coded_payload payload;
    payload.storage.reset(new std::uint8_t[capacity]);  // uninitialised: every kept byte is written
    std::uint8_t* const end = payload.storage.get() + capacity;
    std::uint8_t* ptr = end;
    bool valid = false;
    switch (lanes_log2) {
        case 0: valid = encode_lanes<1>(enc, symbols, n, ptr); break;
        case 1: valid = encode_lanes<2>(enc, symbols, n, ptr); break;
        case 2: valid = encode_lanes<4>(enc, symbols, n, ptr); break;
        case 3: valid = encode_lanes<8>(enc, symbols, n, ptr); break;
        case 4: valid = encode_lanes<16>(enc, symbols, n, ptr); break;
        default: valid = encode_lanes<32>(enc, symbols, n, ptr); break;
    }
    if (!valid) {  // checked inside the coding loop (a symbol without frequency would corrupt the stream)
        for (std::size_t i = 0; i < n; ++i)
            if (symbols[i] + std::size_t{1} >= enc.symbols.size() || enc.symbols[symbols[i]].freq == 0)
                throw std::invalid_argument("grphi::rans::encode_symbols: symbol " + std::to_string(symbols[i]) +
                                            " at index " + std::to_string(i) + " has frequency 0");
    }
    *--ptr = static_cast<std::uint8_t>(lanes_log2);
    payload.begin = ptr;
    payload.end = end;
    return payload;
}

}  // namespace detail

// Appends the payload of n symbols (all with nonzero frequency in the table) to `out`.
inline void encode_symbols(const encoder_table& enc, const symbol* symbols, std::size_t n, unsigned lanes_log2,
                           std::vector<std::uint8_t>& out) {
    const detail::coded_payload payload = detail::encode_payload(enc, symbols, n, lanes_log2);
    out.insert(out.end(), payload.begin, payload.end);
}

// Decodes n symbols from exactly `payload_bytes` bytes of `in` into out[0, n).
inline void decode_symbols(const decoder_table& dec, byte_reader& in, std::size_t payload_bytes, symbol* out,
                           std::size_t n) {
    if (dec.scale_bits == 0) {
        if (payload_bytes != 0) in.fail("one-symbol stream has a payload");
        std::fill(out, out + n, static_cast<symbol>(dec.alphabet - 1));
        return;
    }
    if (dec.scale_bits > max_scale_bits || dec.slots.size() != (std::size_t{1} << dec.scale_bits))
        throw std::invalid_argument("grphi::rans::decode_symbols: decoder table not made by build_decoder");
    in.need(payload_bytes, "rans payload");
    if (payload_bytes == 0) in.fail("rans payload is empty");
    const std::size_t after = in.remaining() - payload_bytes;
    const unsigned lanes_log2 = in.u8("rans lanes");
    if (lanes_log2 > max_lanes_log2) in.fail("rans lanes_log2=" + std::to_string(lanes_log2) + " exceeds 5");
    const std::size_t lanes = std::size_t{1} << lanes_log2;
    if (payload_bytes < 1 + 4 * lanes) in.fail("rans payload shorter than its lane states");
    if ((payload_bytes - 1) % 2 != 0) in.fail("rans payload has an odd number of word bytes");
    switch (lanes_log2) {
        case 0: detail::decode_lanes<1>(dec, in, after, out, n); break;
        case 1: detail::decode_lanes<2>(dec, in, after, out, n); break;
        case 2: detail::decode_lanes<4>(dec, in, after, out, n); break;
        case 3: detail::decode_lanes<8>(dec, in, after, out, n); break;
        case 4: detail::decode_lanes<16>(dec, in, after, out, n); break;
        default: detail::decode_lanes<32>(dec, in, after, out, n); break;
    }
}

// ---------------------------------------------------------------------------------------------
// One call: varint count, [table, varint payload bytes, payload] (nothing after the count when it is 0;
// no payload for a one-symbol table).
// encode() for symbols whose histogram is already known (counts == histogram(symbols, n), as a caller that
// builds the symbols can count them on the way): the same bytes without the histogram pass.
inline void encode_counted(const symbol* symbols, std::size_t n, const std::vector<std::uint64_t>& counts,
                           std::vector<std::uint8_t>& out) {
    detail::put_varint(out, n);
    if (n == 0) return;
    const frequency_table table = normalize(counts, choose_scale_bits(counts));
    write_table(table, out);
    if (table.single_symbol()) return;
    const detail::coded_payload payload = detail::encode_payload(build_encoder(table), symbols, n, default_lanes_log2(n));
    detail::put_varint(out, payload.size());
    out.insert(out.end(), payload.begin, payload.end);
}

inline void encode(const symbol* symbols, std::size_t n, std::vector<std::uint8_t>& out) {
    if (n == 0) {
        detail::put_varint(out, 0);
        return;
    }
    encode_counted(symbols, n, histogram(symbols, n), out);
}

inline std::vector<std::uint8_t> encode(const std::vector<symbol>& symbols) {
    std::vector<std::uint8_t> out;
    encode(symbols.data(), symbols.size(), out);
    return out;
}

// Reads one encoded block from `in` into `out` (resized to the block's count; its capacity is reused, so
// a caller decoding block after block allocates once). The count must be <= max_symbols (guards
// allocation on forged input); on error `out` holds no meaningful symbols.
inline void decode_into(byte_reader& in, std::vector<symbol>& out, std::size_t max_symbols = default_max_symbols) {
    const std::uint64_t n = in.varint("symbol count");
    if (n > max_symbols)
        in.fail("symbol count " + std::to_string(n) + " exceeds the limit " + std::to_string(max_symbols));
    if (n == 0) {
        out.clear();
        return;
    }
    const frequency_table table = read_table(in);
    if (table.single_symbol()) {
        out.assign(static_cast<std::size_t>(n), static_cast<symbol>(table.alphabet() - 1));
        return;
    }
    const std::uint64_t payload = in.varint("rans payload size");
    in.need(payload, "rans payload");  // before allocating: the payload bytes must exist
    out.resize(static_cast<std::size_t>(n));
    decode_symbols(build_decoder(table), in, static_cast<std::size_t>(payload), out.data(), out.size());
}

// Reads one encoded block from `in`; the count must be <= max_symbols.
inline std::vector<symbol> decode(byte_reader& in, std::size_t max_symbols = default_max_symbols) {
    std::vector<symbol> out;
    decode_into(in, out, max_symbols);
    return out;
}

inline std::vector<symbol> decode(const std::uint8_t* data, std::size_t size,
                                  std::size_t max_symbols = default_max_symbols) {
    byte_reader in(data, size);
    std::vector<symbol> out = decode(in, max_symbols);
    if (in.remaining() != 0) in.fail(std::to_string(in.remaining()) + " trailing bytes after the stream");
    return out;
}

inline std::vector<symbol> decode(const std::vector<std::uint8_t>& bytes, std::size_t max_symbols = default_max_symbols) {
    return decode(bytes.data(), bytes.size(), max_symbols);
}

}  // namespace grphi::rans
