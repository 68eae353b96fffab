// rANS coder: round trips, size against an independently computed entropy, table validation, and
// every single-byte corruption / truncation of a small stream (run under ASan/UBSan in CI).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <grphi/coding/rans.hpp>

namespace rans = grphi::rans;
using rans::symbol;

namespace {

// Order-0 empirical entropy of the whole sequence in bytes, in long double, from its own count.
long double entropy_bytes(const std::vector<symbol>& s) {
    std::vector<long double> counts(rans::max_alphabet, 0.0L);
    for (symbol v : s) counts.at(v) += 1.0L;
    long double bits = 0;
    const auto n = static_cast<long double>(s.size());
    for (long double c : counts)
        if (c > 0) bits -= c * std::log2(c / n);
    return bits / 8;
}

// Two-sided geometric around `centre`, clamped to the alphabet: exponent-like data.
std::vector<symbol> laplacian(std::size_t n, double p, int centre, int alphabet, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::geometric_distribution<int> distance(p);
    std::bernoulli_distribution upper(0.5);
    std::vector<symbol> s(n);
    for (auto& v : s) {
        const int k = distance(rng);
        v = static_cast<symbol>(std::clamp(upper(rng) ? centre + k : centre - 1 - k, 0, alphabet - 1));
    }
    return s;
}

std::vector<symbol> uniform(std::size_t n, int alphabet, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> pick(0, alphabet - 1);
    std::vector<symbol> s(n);
    for (auto& v : s) v = static_cast<symbol>(pick(rng));
    return s;
}

void check_round_trip(const std::vector<symbol>& s) {
    const std::vector<std::uint8_t> coded = rans::encode(s);
    const std::vector<symbol> back = rans::decode(coded);
    REQUIRE(back.size() == s.size());
    CHECK(back == s);
}

}  // namespace

TEST_CASE("rans: one-call round trips on random, adversarial and degenerate inputs") {
    check_round_trip({});
    check_round_trip({0});
    check_round_trip({4095});
    check_round_trip({3, 3, 3});
    check_round_trip({0, 1});
    check_round_trip({4095, 0, 4095});
    for (std::size_t n : {1, 2, 3, 15, 16, 17, 31, 33, 100, 2047, 2048, 2049, 65535, 65536, 70001})
        for (int alphabet : {2, 3, 16, 255, 4096}) {
            CAPTURE(n);
            CAPTURE(alphabet);
            check_round_trip(uniform(n, alphabet, n * 7919 + static_cast<std::size_t>(alphabet)));
            check_round_trip(laplacian(n, 0.4, alphabet / 2, alphabet, n + 13));
        }
    // Huge skew: one rare symbol among a million of another (the rare one keeps frequency 1).
    std::vector<symbol> skew(1'000'000, 7);
    skew[123'456] = 4000;
    check_round_trip(skew);
    // Alternating common and very rare symbols at the end of every lane.
    std::vector<symbol> tail(4096, 1);
    for (std::size_t i = tail.size() - 40; i < tail.size(); ++i) tail[i] = static_cast<symbol>(i % 3 == 0 ? 2 : 0);
    check_round_trip(tail);
    // Every symbol of the full alphabet exactly once (scale must hold 4096 symbols).
    std::vector<symbol> all(rans::max_alphabet);
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<symbol>((i * 2654435761u) % rans::max_alphabet);
    check_round_trip(all);
}

TEST_CASE("rans: layered API round trips for every lane count and scale") {
    const std::vector<symbol> s = laplacian(10'007, 0.3, 20, 40, 5);
    const auto counts = rans::histogram(s);
    REQUIRE(counts.size() == 40);
    for (unsigned scale = rans::detail::ceil_log2(40); scale <= rans::max_scale_bits; ++scale) {
        const rans::frequency_table table = rans::normalize(counts, scale);
        const auto enc = rans::build_encoder(table);
        const auto dec = rans::build_decoder(table);
        for (unsigned lanes_log2 = 0; lanes_log2 <= rans::max_lanes_log2; ++lanes_log2) {
            CAPTURE(scale);
            CAPTURE(lanes_log2);
            std::vector<std::uint8_t> payload;
            rans::encode_symbols(enc, s.data(), s.size(), lanes_log2, payload);
            std::vector<symbol> back(s.size());
            rans::byte_reader in(payload.data(), payload.size());
            rans::decode_symbols(dec, in, payload.size(), back.data(), back.size());
            CHECK(in.remaining() == 0);
            CHECK(back == s);
        }
    }
}

namespace {

// The payload as docs/container.md describes it, with plain division: an independent reference for
// the optimised (scalar and AVX2) coders, which must produce exactly these bytes.
std::vector<std::uint8_t> reference_payload(const rans::frequency_table& t, const std::vector<symbol>& s, unsigned lanes_log2) {
    const std::size_t lanes = std::size_t{1} << lanes_log2;
    const std::uint64_t total = std::uint64_t{1} << t.scale_bits;
    std::vector<std::uint64_t> start(t.alphabet() + 1, 0);
    for (std::size_t i = 0; i < t.alphabet(); ++i) start[i + 1] = start[i] + t.freq[i];
    std::vector<std::uint64_t> state(lanes, 1u << 16);
    std::vector<std::uint16_t> words;  // in reverse read order
    for (std::size_t i = s.size(); i-- > 0;) {
        std::uint64_t& x = state[i % lanes];
        const std::uint64_t f = t.freq[s[i]];
        if (x >= (f << (32 - t.scale_bits))) {
            words.push_back(static_cast<std::uint16_t>(x & 0xffff));
            x >>= 16;
        }
        x = (x / f) * total + x % f + start[s[i]];
        REQUIRE(x < (std::uint64_t{1} << 32));
    }
    std::vector<std::uint8_t> out{static_cast<std::uint8_t>(lanes_log2)};
    for (std::uint64_t x : state)
        for (int b = 0; b < 4; ++b) out.push_back(static_cast<std::uint8_t>(x >> (8 * b)));
    for (std::size_t i = words.size(); i-- > 0;) {
        out.push_back(static_cast<std::uint8_t>(words[i]));
        out.push_back(static_cast<std::uint8_t>(words[i] >> 8));
    }
    return out;
}

}  // namespace

TEST_CASE("rans: the coders produce exactly the documented stream (independent reference)") {
    for (std::size_t n : {2, 31, 32, 33, 1000, 4099, 20000})
        for (unsigned scale : {9u, 12u, 16u}) {
            const auto s = laplacian(n, 0.3, 40, 80, n + scale);
            const auto table = rans::normalize(rans::histogram(s), std::max(scale, rans::detail::ceil_log2(80)));
            if (table.single_symbol()) continue;  // no payload to compare
            const auto enc = rans::build_encoder(table);
            const auto dec = rans::build_decoder(table);
            for (unsigned lanes_log2 = 0; lanes_log2 <= rans::max_lanes_log2; ++lanes_log2)
                for (bool vector_paths : {true, false}) {  // AVX2 (where the CPU has it) and scalar
                    CAPTURE(n);
                    CAPTURE(scale);
                    CAPTURE(lanes_log2);
                    CAPTURE(vector_paths);
                    rans::detail::vector_paths_allowed() = vector_paths;
                    std::vector<std::uint8_t> payload;
                    rans::encode_symbols(enc, s.data(), s.size(), lanes_log2, payload);
                    CHECK(payload == reference_payload(table, s, lanes_log2));
                    std::vector<symbol> back(s.size());
                    rans::byte_reader in(payload.data(), payload.size());
                    rans::decode_symbols(dec, in, payload.size(), back.data(), back.size());
                    CHECK(back == s);
                    rans::detail::vector_paths_allowed() = true;
                }
        }
}

TEST_CASE("rans: the vector encoder's division magic is exact for every frequency") {
    std::mt19937_64 rng(99);
    for (std::uint32_t f = 1; f < 65536; ++f) {
        // A two-symbol table whose symbol 0 has frequency f.
        rans::frequency_table table;
        table.scale_bits = 16;
        table.freq = {f, 65536 - f};
        const auto enc = rans::build_encoder(table);
        const std::uint64_t entry = enc.vector_entries[0];
        const auto magic = static_cast<std::uint32_t>(entry);
        REQUIRE((entry >> 48) == f);
        const unsigned l = rans::detail::ceil_log2(f);
        for (int trial = 0; trial < 64; ++trial) {
            const auto x = static_cast<std::uint32_t>(trial < 4 ? 0xffffffffu - static_cast<unsigned>(trial) : rng());
            const auto hi = static_cast<std::uint32_t>((std::uint64_t{x} * magic) >> 32);
            const std::uint32_t q = (hi + ((x - hi) >> std::min(l, 1u))) >> (l == 0 ? 0 : l - 1);
            if (q != x / f) FAIL_CHECK("f=" << f << " x=" << x << ": " << q << " != " << x / f);
        }
    }
}

TEST_CASE("rans: one distinct symbol costs no payload") {
    for (symbol v : {symbol{0}, symbol{5}, symbol{4095}}) {
        const std::vector<symbol> s(1'000'000, v);
        const auto coded = rans::encode(s);
        CHECK(coded.size() <= 8);  // count + scale byte + alphabet
        CHECK(rans::decode(coded) == s);
    }
}

TEST_CASE("rans: coded size <= empirical entropy + 0.3 % (tables and headers included) from 64K symbols") {
    struct source {
        const char* name;
        std::vector<symbol> symbols;
    };
    const std::vector<source> sources = {
        {"laplacian 16 symbols", laplacian(65536, 0.45, 8, 16, 1)},
        {"narrow laplacian", laplacian(65536, 0.7, 8, 16, 2)},
        {"wide laplacian 64 symbols", laplacian(1 << 18, 0.15, 32, 64, 3)},
        {"uniform 16", uniform(65536, 16, 4)},
        {"uniform 3 (sign/zero)", uniform(65536, 3, 5)},
        {"uniform 256", uniform(1 << 20, 256, 6)},
        {"laplacian 16M-like (1M)", laplacian(1 << 20, 0.45, 8, 16, 7)},
    };
    for (const auto& src : sources) {
        CAPTURE(std::string(src.name));
        const long double entropy = entropy_bytes(src.symbols);
        const auto coded = rans::encode(src.symbols);
        MESSAGE(src.name << ": " << coded.size() << " bytes, entropy " << static_cast<double>(entropy));
        CHECK(static_cast<long double>(coded.size()) <= entropy * 1.003L);
        CHECK(static_cast<long double>(coded.size()) >= entropy);  // nothing beats the entropy of its own histogram
    }
}

TEST_CASE("rans: normalize keeps every used symbol and sums to a power of two") {
    std::mt19937_64 rng(11);
    for (int trial = 0; trial < 200; ++trial) {
        const std::size_t alphabet = 1 + rng() % 600;
        std::vector<std::uint64_t> counts(alphabet, 0);
        std::size_t distinct = 0;
        for (auto& c : counts) {
            const auto kind = rng() % 4;  // zeros, ones, small, huge counts mixed
            c = kind == 0 ? 0 : kind == 1 ? 1 : kind == 2 ? rng() % 100 : rng() % 100'000'000;
        }
        counts.back() = 1 + rng() % 5;
        for (auto c : counts) distinct += c != 0;
        const unsigned lowest = std::max(1u, rans::detail::ceil_log2(distinct));
        for (unsigned scale = lowest; scale <= rans::max_scale_bits; ++scale) {
            const auto t = rans::normalize(counts, scale);
            std::uint64_t sum = 0;
            for (std::size_t s = 0; s < alphabet; ++s) {
                CHECK((counts[s] != 0) == (t.freq[s] != 0));
                sum += t.freq[s];
            }
            CHECK(sum == (std::uint64_t{1} << scale));
        }
        if (lowest > 1) CHECK_THROWS_AS(rans::normalize(counts, lowest - 1), std::invalid_argument);
    }
    CHECK_THROWS_AS(rans::normalize({}, 8), std::invalid_argument);
    CHECK_THROWS_AS(rans::normalize({0, 0}, 8), std::invalid_argument);
    CHECK_THROWS_AS(rans::normalize({1, 2}, 17), std::invalid_argument);
    CHECK_THROWS_AS(rans::normalize({1, 0}, 8), std::invalid_argument);  // alphabet must end on a used symbol
    // Exactly as many symbols as slots: every symbol gets frequency 1.
    const auto full = rans::normalize(std::vector<std::uint64_t>(256, 9), 8);
    CHECK(std::all_of(full.freq.begin(), full.freq.end(), [](std::uint32_t f) { return f == 1; }));
}

TEST_CASE("rans: table serialisation round trips and rejects malformed tables") {
    std::mt19937_64 rng(17);
    for (int trial = 0; trial < 100; ++trial) {
        std::vector<std::uint64_t> counts(1 + rng() % 4096, 0);
        for (auto& c : counts) c = rng() % 3 == 0 ? rng() % 1000 : 0;  // long zero runs
        counts.back() = 1;
        counts.front() += 1;
        const auto table = rans::normalize(counts, rans::choose_scale_bits(counts));
        std::vector<std::uint8_t> bytes;
        rans::write_table(table, bytes);
        CHECK(bytes.size() == rans::table_bytes(table));
        rans::byte_reader in(bytes.data(), bytes.size());
        CHECK(rans::read_table(in) == table);
        CHECK(in.remaining() == 0);
    }
    auto read = [](std::vector<std::uint8_t> bytes) {
        rans::byte_reader in(bytes.data(), bytes.size());
        return rans::read_table(in);
    };
    CHECK(read({0, 1}).single_symbol());
    CHECK(read({2, 2, 1, 3}).freq == std::vector<std::uint32_t>{1, 3});
    CHECK_THROWS_WITH_AS(read({17, 2, 1, 3}), doctest::Contains("scale_bits"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 0}), doctest::Contains("alphabet size"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 0x81, 0x20}), doctest::Contains("alphabet size"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 2, 1, 2}), doctest::Contains("sum"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 2, 4, 0}), doctest::Contains(">= 2^scale_bits"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 3, 0, 5, 4}), doctest::Contains("zero run"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 2, 0, 0, 4}), doctest::Contains("frequency"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 2, 4}), doctest::Contains(">= 2^scale_bits"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 3, 1, 3}), doctest::Contains("truncated"), grphi::format_error);
    CHECK_THROWS_WITH_AS(read({2, 0x82, 0x00}), doctest::Contains("minimally"), grphi::format_error);
}

TEST_CASE("rans: hand-made tables that break the invariants are refused before building coder tables") {
    rans::frequency_table over;
    over.scale_bits = 4;
    over.freq = {9, 9};  // sums to 18 > 16: would overrun the decoder's slots
    CHECK_THROWS_AS(rans::build_decoder(over), std::invalid_argument);
    CHECK_THROWS_AS(rans::build_encoder(over), std::invalid_argument);
    rans::frequency_table one_used;
    one_used.scale_bits = 4;
    one_used.freq = {0, 16};
    CHECK_THROWS_AS(rans::build_decoder(one_used), std::invalid_argument);
    rans::frequency_table wide;
    wide.scale_bits = 17;
    wide.freq = {1 << 16, 1 << 16};
    CHECK_THROWS_AS(rans::build_encoder(wide), std::invalid_argument);
    CHECK_NOTHROW(rans::build_decoder(rans::normalize({3, 5}, 4)));
}

TEST_CASE("rans: invalid symbols are refused on the encode side") {
    CHECK_THROWS_AS(rans::encode(std::vector<symbol>{1, 4096}), std::invalid_argument);
    const auto table = rans::normalize({3, 0, 5}, 4);
    std::vector<std::uint8_t> out;
    const std::vector<symbol> has_unused{0, 1};
    CHECK_THROWS_AS(rans::encode_symbols(rans::build_encoder(table), has_unused.data(), 2, 0, out), std::invalid_argument);
    const std::vector<symbol> outside{0, 3};
    CHECK_THROWS_AS(rans::encode_symbols(rans::build_encoder(table), outside.data(), 2, 0, out), std::invalid_argument);
}

TEST_CASE("rans: a forged symbol count above the limit is refused before allocating") {
    std::vector<std::uint8_t> forged;
    rans::detail::put_varint(forged, std::uint64_t{1} << 40);
    forged.insert(forged.end(), {0, 1});  // one-symbol table
    CHECK_THROWS_WITH_AS(rans::decode(forged), doctest::Contains("exceeds the limit"), grphi::format_error);
    CHECK(rans::decode(rans::encode(std::vector<symbol>(100, 2)), 100).size() == 100);
    CHECK_THROWS_AS(rans::decode(rans::encode(std::vector<symbol>(101, 2)), 100), grphi::format_error);
}

TEST_CASE("rans: every truncation and every single-byte corruption of a small stream is caught or harmless") {
    for (unsigned lanes_log2 : {0u, 2u, 4u}) {
        CAPTURE(lanes_log2);
        const std::vector<symbol> s = laplacian(300, 0.35, 6, 12, lanes_log2 + 100);
        const auto counts = rans::histogram(s);
        const auto table = rans::normalize(counts, 11);
        std::vector<std::uint8_t> coded;
        rans::detail::put_varint(coded, s.size());
        rans::write_table(table, coded);
        std::vector<std::uint8_t> payload;
        rans::encode_symbols(rans::build_encoder(table), s.data(), s.size(), lanes_log2, payload);
        rans::detail::put_varint(coded, payload.size());
        coded.insert(coded.end(), payload.begin(), payload.end());
        REQUIRE(rans::decode(coded) == s);

        for (std::size_t length = 0; length < coded.size(); ++length) {
            // Heap copy of exactly `length` bytes so ASan sees any read past the end.
            const std::vector<std::uint8_t> prefix(coded.begin(), coded.begin() + static_cast<std::ptrdiff_t>(length));
            CHECK_THROWS_AS(rans::decode(prefix), grphi::format_error);
        }
        std::size_t undetected = 0, total = 0;
        for (std::size_t at = 0; at < coded.size(); ++at)
            for (unsigned flip = 1; flip < 256; ++flip) {
                std::vector<std::uint8_t> bad = coded;
                bad[at] = static_cast<std::uint8_t>(bad[at] ^ flip);
                ++total;
                try {
                    const auto back = rans::decode(bad);
                    // Without a checksum a corruption can decode to other symbols; it must stay in bounds.
                    CHECK(back.size() <= rans::default_max_symbols);
                    undetected += back != s;
                } catch (const grphi::format_error&) {
                }
            }
        MESSAGE("lanes 2^" << lanes_log2 << ": " << undetected << " of " << total
                           << " corruptions decoded to other symbols (the container's CRC catches them)");
        CHECK(undetected * 20 < total);  // the final-state and length checks catch the vast majority
    }
}

// Encodes s on the AVX-512, AVX2 and scalar paths (where the CPU has them): each must write expected.
template <class Encoder, class Symbols>
void check_every_encoder_path(const Encoder& enc, const Symbols& s, unsigned lanes_log2,
                              const std::vector<std::uint8_t>& expected) {
    for (int path = 0; path < 3; ++path) {
        CAPTURE(lanes_log2);
        CAPTURE(path);
        rans::detail::avx512_paths_allowed() = path == 0;
        rans::detail::vector_paths_allowed() = path < 2;
        std::vector<std::uint8_t> payload;
        rans::encode_symbols(enc, s.data(), s.size(), lanes_log2, payload);
        CHECK(payload == expected);
        rans::detail::avx512_paths_allowed() = true;
        rans::detail::vector_paths_allowed() = true;
    }
}

TEST_CASE("rans: the AVX-512, AVX2 and scalar encoders write the documented stream for small alphabets") {
    // The AVX-512 coder tables live in registers: one permute up to 31 symbols, two and a blend up to 63;
    // larger alphabets take the AVX2 path.
    std::uint64_t seed = 5;
    for (int alphabet : {2, 3, 9, 16, 17, 31, 32, 40, 63, 64, 80})
        for (std::size_t n : {31, 32, 33, 1000, 65537}) {
            const auto s = alphabet == 2 ? uniform(n, 2, seed++) : laplacian(n, 0.3, alphabet / 2, alphabet, seed++);
            const auto counts = rans::histogram(s);
            const auto table = rans::normalize(counts, rans::choose_scale_bits(counts));
            if (table.single_symbol()) continue;
            const auto enc = rans::build_encoder(table);
            for (unsigned lanes_log2 : {4u, 5u}) {
                const std::vector<std::uint8_t> expected = reference_payload(table, s, lanes_log2);
                CAPTURE(alphabet);
                CAPTURE(n);
                check_every_encoder_path(enc, s, lanes_log2, expected);
            }
            // encode_counted with the histogram given is encode().
            std::vector<std::uint8_t> counted;
            rans::encode_counted(s.data(), s.size(), counts, counted);
            CHECK(counted == rans::encode(s));
        }
}

TEST_CASE("rans: tables of power-of-two frequencies (the vector encoders' shift path) write the documented stream") {
    std::mt19937_64 rng(8);
    for (const std::vector<std::uint32_t>& freq : {std::vector<std::uint32_t>{1, 0, 1}, {4, 8, 2, 2}, {1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512}}) {
        rans::frequency_table table;
        table.freq = freq;
        std::uint32_t total = 0;
        for (auto f : freq) total += f;
        table.scale_bits = rans::detail::ceil_log2(total);
        std::discrete_distribution<int> pick(freq.begin(), freq.end());
        std::vector<symbol> s(40000 + freq.size());
        for (auto& v : s) v = static_cast<symbol>(pick(rng));
        const auto enc = rans::build_encoder(table);
        for (unsigned lanes_log2 : {4u, 5u}) {
            const std::vector<std::uint8_t> expected = reference_payload(table, s, lanes_log2);
            CAPTURE(freq.size());
            check_every_encoder_path(enc, s, lanes_log2, expected);
        }
    }
}

namespace {

// Decodes payload on the AVX-512, AVX2 and scalar paths (where the CPU has them): each must give s and
// read the whole payload.
void check_every_decoder_path(const rans::decoder_table& dec, const std::vector<std::uint8_t>& payload,
                              const std::vector<symbol>& s) {
    for (int path = 0; path < 3; ++path) {
        CAPTURE(path);
        rans::detail::avx512_paths_allowed() = path == 0;
        rans::detail::vector_paths_allowed() = path < 2;
        std::vector<symbol> back(s.size(), symbol(0xffff));
        rans::byte_reader in(payload.data(), payload.size());
        rans::decode_symbols(dec, in, payload.size(), back.data(), back.size());
        CHECK(in.remaining() == 0);
        CHECK(back == s);
        rans::detail::avx512_paths_allowed() = true;
        rans::detail::vector_paths_allowed() = true;
    }
}

// The outcome of decoding payload on one path: the symbols, or the error message.
std::string decode_outcome(const rans::decoder_table& dec, const std::vector<std::uint8_t>& payload, std::size_t n) {
    std::vector<symbol> back(n);
    try {
        rans::byte_reader in(payload.data(), payload.size());
        rans::decode_symbols(dec, in, payload.size(), back.data(), back.size());
    } catch (const grphi::format_error& e) {
        return std::string("error: ") + e.what();
    }
    return std::string(reinterpret_cast<const char*>(back.data()), back.size() * sizeof(symbol));
}

}  // namespace

TEST_CASE("rans: the AVX-512 (comparison), AVX2 and scalar decoders agree on small alphabets") {
    // Up to compare_decode_alphabet symbols the AVX-512 decoder finds a slot's symbol by comparisons;
    // 9 and 16 symbols take the AVX2 gathers. Scales from the smallest that fits to 16, tables with
    // frequency-0 symbols inside the alphabet, stream lengths around the group and guard sizes.
    std::uint64_t seed = 40;
    std::vector<rans::frequency_table> tables;
    for (int alphabet : {2, 3, 4, 5, 6, 7, 8, 9, 16})
        for (unsigned scale : {0u, 12u, 16u}) {
            const auto s = laplacian(5000, 0.3, alphabet / 2, alphabet, seed++);
            const auto counts = rans::histogram(s);
            const auto table = rans::normalize(counts, scale == 0 ? rans::choose_scale_bits(counts) : scale);
            if (!table.single_symbol()) tables.push_back(table);
        }
    for (const std::vector<std::uint32_t>& freq :  // symbols of frequency 0, first, inside and next to the last
         {std::vector<std::uint32_t>{0, 3, 1}, {2, 0, 0, 2}, {5, 0, 1, 0, 7, 0, 0, 3}, {1, 1}, {65535, 1}}) {
        rans::frequency_table t;
        t.freq = freq;
        std::uint32_t total = 0;
        for (auto f : freq) total += f;
        t.scale_bits = rans::detail::ceil_log2(total);
        t.freq.back() += (1u << t.scale_bits) - total;  // the sum is a power of two
        tables.push_back(t);
    }
    std::mt19937_64 rng(3);
    for (const auto& table : tables) {
        const auto enc = rans::build_encoder(table);
        const auto dec = rans::build_decoder(table);
        CHECK(dec.freq.size() == (table.alphabet() <= rans::compare_decode_alphabet ? table.alphabet() : 0));
        std::discrete_distribution<int> pick(table.freq.begin(), table.freq.end());
        for (std::size_t n : {1, 15, 16, 17, 31, 32, 33, 64, 65, 1000, 20011}) {
            std::vector<symbol> s(n);
            for (auto& v : s) v = static_cast<symbol>(pick(rng));
            for (unsigned lanes_log2 : {4u, 5u}) {
                CAPTURE(table.alphabet());
                CAPTURE(table.scale_bits);
                CAPTURE(n);
                CAPTURE(lanes_log2);
                std::vector<std::uint8_t> payload;
                rans::encode_symbols(enc, s.data(), s.size(), lanes_log2, payload);
                REQUIRE(payload == reference_payload(table, s, lanes_log2));
                check_every_decoder_path(dec, payload, s);
            }
        }
    }
}

TEST_CASE("rans: corrupted and truncated streams decode alike on the AVX-512, AVX2 and scalar paths") {
    // The vector loops stop 2 x lanes bytes before the end and leave the rest to the checked loop, so
    // every path must give the same symbols or the same error for any damage.
    const std::vector<symbol> s = laplacian(3000, 0.35, 2, 3, 77);  // 3 symbols: the sign stream's alphabet
    const auto table = rans::normalize(rans::histogram(s), 10);
    const auto dec = rans::build_decoder(table);
    REQUIRE(dec.freq.size() == 3);
    std::vector<std::uint8_t> payload;
    rans::encode_symbols(rans::build_encoder(table), s.data(), s.size(), 5, payload);
    std::mt19937_64 rng(12);
    std::size_t differing_from_s = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::vector<std::uint8_t> bad = payload;
        if (trial % 4 == 3) {
            bad.resize(bad.size() - 1 - rng() % 200);  // truncated (an odd length is refused up front)
        } else {
            const std::size_t at = 129 + rng() % (bad.size() - 129);  // a word, not a lane state
            bad[at] = static_cast<std::uint8_t>(bad[at] ^ (1u + rng() % 255));
        }
        std::string outcome[3];
        for (int path = 0; path < 3; ++path) {
            rans::detail::avx512_paths_allowed() = path == 0;
            rans::detail::vector_paths_allowed() = path < 2;
            outcome[path] = decode_outcome(dec, bad, s.size());
        }
        rans::detail::avx512_paths_allowed() = true;
        rans::detail::vector_paths_allowed() = true;
        CAPTURE(trial);
        CHECK(outcome[0] == outcome[2]);
        CHECK(outcome[1] == outcome[2]);
        differing_from_s += outcome[2].rfind("error: ", 0) == 0;
    }
    CHECK(differing_from_s > 300);  // nearly every damaged stream is refused (the final-state check)
}

TEST_CASE("rans: the AVX-512 encoder flags a symbol outside the table") {
    std::vector<symbol> s = laplacian(4096, 0.3, 4, 9, 21);
    const auto table = rans::normalize(rans::histogram(s), 10);
    const auto enc = rans::build_encoder(table);
    for (symbol bad : {symbol(9), symbol(31), symbol(32), symbol(4095)}) {
        CAPTURE(bad);
        s[1234] = bad;
        std::vector<std::uint8_t> payload;
        CHECK_THROWS_AS(rans::encode_symbols(enc, s.data(), s.size(), 5, payload), std::invalid_argument);
    }
}

TEST_CASE("rans: decode_into reuses one buffer block after block and leaves exactly each block's symbols") {
    std::mt19937 rng(5);
    std::vector<std::vector<grphi::rans::symbol>> blocks;
    for (std::size_t n : {5000u, 17u, 0u, 3000u, 1u, 64u}) {
        std::vector<grphi::rans::symbol> s(n);
        for (auto& v : s) v = static_cast<grphi::rans::symbol>(rng() % 9);
        blocks.push_back(s);
    }
    blocks.push_back(std::vector<grphi::rans::symbol>(700, 3));  // one distinct symbol: no payload
    std::vector<std::uint8_t> stream;
    for (const auto& b : blocks) grphi::rans::encode(b.data(), b.size(), stream);
    grphi::detail::byte_reader in(stream.data(), stream.size());
    std::vector<grphi::rans::symbol> out(9000, 0xBEEF);  // stale contents that must not survive
    for (const auto& b : blocks) {
        grphi::rans::decode_into(in, out);
        CHECK(out == b);
    }
    CHECK(in.remaining() == 0);
}
