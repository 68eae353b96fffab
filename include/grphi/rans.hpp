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

#include "error.hpp"

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

inline void put_u8(std::vector<std::uint8_t>& out, unsigned v) { out.push_back(static_cast<std::uint8_t>(v)); }

inline void put_varint(std::vector<std::uint8_t>& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<std::uint8_t>(v | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<std::uint8_t>(v));
}

inline unsigned ceil_log2(std::uint64_t v) {
    unsigned bits = 0;
    while ((std::uint64_t{1} << bits) < v) ++bits;
    return bits;
}

inline std::uint32_t load_u16(const std::uint8_t* p) {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8);
}
inline std::uint32_t load_u32(const std::uint8_t* p) {
    return load_u16(p) | (load_u16(p + 2) << 16);
}
inline void store_u16(std::uint8_t* p, std::uint32_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8);
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

// A bounded cursor over untrusted bytes: every read checks the remaining length first.
class byte_reader {
public:
    byte_reader(const std::uint8_t* data, std::size_t size, std::string context = "grphi::rans")
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
    std::uint32_t u32(const char* what) {
        need(4, what);
        const std::uint32_t v = detail::load_u32(ptr_);
        ptr_ += 4;
        return v;
    }
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

private:
    const std::uint8_t* ptr_;
    const std::uint8_t* end_;
    std::string context_;
};

// ---------------------------------------------------------------------------------------------
// Step 1: histogram. counts.size() = max symbol + 1 (empty for no symbols).
inline std::vector<std::uint64_t> histogram(const symbol* symbols, std::size_t n) {
    // Four sub-histograms so runs of one symbol do not serialise on one counter.
    std::vector<std::uint32_t> sub(4 * max_alphabet, 0);
    std::vector<std::uint64_t> counts(max_alphabet, 0);
    unsigned seen = 0;  // OR of all symbols: any symbol >= max_alphabet sets a high bit
    constexpr std::size_t chunk = std::size_t{1} << 30;  // keeps the 32-bit sub-counters from overflowing
    for (std::size_t begin = 0; begin < n; begin += chunk) {
        const std::size_t end = std::min(n, begin + chunk);
        std::size_t i = begin;
        for (; i + 4 <= end; i += 4) {
            const unsigned a = symbols[i], b = symbols[i + 1], c = symbols[i + 2], d = symbols[i + 3];
            seen |= a | b | c | d;
            ++sub[a & (max_alphabet - 1)];
            ++sub[max_alphabet + (b & (max_alphabet - 1))];
            ++sub[2 * max_alphabet + (c & (max_alphabet - 1))];
            ++sub[3 * max_alphabet + (d & (max_alphabet - 1))];
        }
        for (; i < end; ++i) {
            seen |= symbols[i];
            ++sub[symbols[i] & (max_alphabet - 1)];
        }
        for (std::size_t s = 0; s < max_alphabet; ++s) {
            counts[s] += std::uint64_t{sub[s]} + sub[max_alphabet + s] + sub[2 * max_alphabet + s] +
                         sub[3 * max_alphabet + s];
        }
        std::fill(sub.begin(), sub.end(), 0u);
    }
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
    std::vector<encoder_symbol> symbols;
};

// A decoder slot packed in 64 bits (one load): freq | (slot - start) << 16 | symbol << 32.
inline constexpr std::uint64_t pack_slot(std::uint32_t freq, std::uint32_t bias, std::uint32_t sym) {
    return std::uint64_t{freq} | (std::uint64_t{bias} << 16) | (std::uint64_t{sym} << 32);
}

struct decoder_table {
    unsigned scale_bits = 0;
    std::size_t alphabet = 0;
    std::vector<std::uint64_t> slots;  // 2^scale_bits packed entries (pack_slot)
};

inline encoder_table build_encoder(const frequency_table& table) {
    encoder_table enc;
    enc.scale_bits = table.scale_bits;
    enc.symbols.assign(table.alphabet(), encoder_symbol{0, 0, 0, 0, 0});
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
        start += f;
    }
    return enc;
}

inline decoder_table build_decoder(const frequency_table& table) {
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
    return dec;
}

// ---------------------------------------------------------------------------------------------
// Step 5: coding. Payload layout: u8 lanes_log2, lanes x u32 LE initial decoder states (lane 0 first),
// then the 16-bit LE renormalisation words in decoder read order. The decoder ends with every state == L.

// Lanes the one-call encoder uses: few for short streams (each lane costs ~2-4 flush bytes), many for speed.
inline unsigned default_lanes_log2(std::size_t n) {
    if (n < 2048) return 0;
    if (n < (std::size_t{1} << 18)) return 2;
    return 4;
}

namespace detail {

template <unsigned Lanes>
inline void encode_lanes(const encoder_table& enc, const symbol* symbols, std::size_t n, std::uint8_t*& ptr) {
    std::uint32_t state[Lanes];
    for (unsigned j = 0; j < Lanes; ++j) state[j] = state_lower;
    const encoder_symbol* table = enc.symbols.data();
    auto step = [&](std::uint32_t& x, symbol s) {
        const encoder_symbol& e = table[s];
        const std::uint32_t emit = x >= e.x_max;
        store_u16(ptr - 2, x);  // written always, kept only when emitting (branch-free)
        ptr -= 2 * emit;
        x >>= 16 * emit;
        const auto q = static_cast<std::uint32_t>(mul_high(x, e.reciprocal));
        x = x + e.bias + q * e.complement;
    };
    const std::size_t groups = n / Lanes;
    const std::size_t tail = n % Lanes;
    for (std::size_t j = tail; j-- > 0;) step(state[j], symbols[groups * Lanes + j]);
    for (std::size_t g = groups; g-- > 0;) {
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

// Appends the payload of n symbols (all with nonzero frequency in the table) to `out`.
inline void encode_symbols(const encoder_table& enc, const symbol* symbols, std::size_t n, unsigned lanes_log2,
                           std::vector<std::uint8_t>& out) {
    if (lanes_log2 > max_lanes_log2) throw std::invalid_argument("grphi::rans::encode_symbols: lanes_log2 > 5");
    if (enc.scale_bits == 0) throw std::invalid_argument("grphi::rans::encode_symbols: one-symbol table has no payload");
    for (std::size_t i = 0; i < n; ++i)  // a symbol outside the table would corrupt the stream silently
        if (symbols[i] >= enc.symbols.size() || enc.symbols[symbols[i]].freq == 0)
            throw std::invalid_argument("grphi::rans::encode_symbols: symbol " + std::to_string(symbols[i]) +
                                        " at index " + std::to_string(i) + " has frequency 0");
    const unsigned lanes = 1u << lanes_log2;
    // At most one word per symbol, plus the states, plus the always-written spare word.
    const std::size_t capacity = 2 * n + 4 * lanes + 2;
    const std::unique_ptr<std::uint8_t[]> buffer(new std::uint8_t[capacity]);  // uninitialised: every kept byte is written
    std::uint8_t* const end = buffer.get() + capacity;
    std::uint8_t* ptr = end;
    switch (lanes_log2) {
        case 0: detail::encode_lanes<1>(enc, symbols, n, ptr); break;
        case 1: detail::encode_lanes<2>(enc, symbols, n, ptr); break;
        case 2: detail::encode_lanes<4>(enc, symbols, n, ptr); break;
        case 3: detail::encode_lanes<8>(enc, symbols, n, ptr); break;
        case 4: detail::encode_lanes<16>(enc, symbols, n, ptr); break;
        default: detail::encode_lanes<32>(enc, symbols, n, ptr); break;
    }
    detail::put_u8(out, lanes_log2);
    out.insert(out.end(), ptr, end);
}

// Decodes n symbols from exactly `payload_bytes` bytes of `in` into out[0, n).
inline void decode_symbols(const decoder_table& dec, byte_reader& in, std::size_t payload_bytes, symbol* out,
                           std::size_t n) {
    if (dec.scale_bits == 0) {
        if (payload_bytes != 0) in.fail("one-symbol stream has a payload");
        std::fill(out, out + n, static_cast<symbol>(dec.alphabet - 1));
        return;
    }
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
inline void encode(const symbol* symbols, std::size_t n, std::vector<std::uint8_t>& out) {
    detail::put_varint(out, n);
    if (n == 0) return;
    const std::vector<std::uint64_t> counts = histogram(symbols, n);
    const frequency_table table = normalize(counts, choose_scale_bits(counts));
    write_table(table, out);
    if (table.single_symbol()) return;
    std::vector<std::uint8_t> payload;
    encode_symbols(build_encoder(table), symbols, n, default_lanes_log2(n), payload);
    detail::put_varint(out, payload.size());
    out.insert(out.end(), payload.begin(), payload.end());
}

inline std::vector<std::uint8_t> encode(const std::vector<symbol>& symbols) {
    std::vector<std::uint8_t> out;
    encode(symbols.data(), symbols.size(), out);
    return out;
}

// Reads one encoded block from `in`; the count must be <= max_symbols (guards allocation on forged input).
inline std::vector<symbol> decode(byte_reader& in, std::size_t max_symbols = default_max_symbols) {
    const std::uint64_t n = in.varint("symbol count");
    if (n > max_symbols)
        in.fail("symbol count " + std::to_string(n) + " exceeds the limit " + std::to_string(max_symbols));
    if (n == 0) return {};
    const frequency_table table = read_table(in);
    if (table.single_symbol()) return std::vector<symbol>(static_cast<std::size_t>(n), static_cast<symbol>(table.alphabet() - 1));
    const std::uint64_t payload = in.varint("rans payload size");
    in.need(payload, "rans payload");  // before allocating: the payload bytes must exist
    std::vector<symbol> out(static_cast<std::size_t>(n));
    decode_symbols(build_decoder(table), in, static_cast<std::size_t>(payload), out.data(), out.size());
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
