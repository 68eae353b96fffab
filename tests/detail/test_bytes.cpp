// detail/bytes.hpp: little-endian access, varints (minimal, bounded), zigzag, the bounds-checked reader,
// and CRC-32 on every run-time path (tables and carry-less) against zlib.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <zlib.h>

#include <grphi/detail/bytes.hpp>
#include <grphi/core/error.hpp>
#include <grphi/kernels/dispatch.hpp>

namespace d = grphi::detail;

TEST_CASE("bytes: little-endian loads and stores agree with the byte-by-byte definition") {
    std::uint8_t b[8];
    d::store_u64(b, 0x0807060504030201ull);
    for (int i = 0; i < 8; ++i) CHECK(b[i] == i + 1);
    CHECK(d::load_u16(b) == 0x0201u);
    CHECK(d::load_u32(b + 1) == 0x05040302u);
    CHECK(d::load_u64(b) == 0x0807060504030201ull);
    d::store_u32(b, 0xdeadbeefu);
    CHECK(b[0] == 0xef);
    CHECK(b[3] == 0xde);
    std::vector<std::uint8_t> out;
    d::put_u16(out, 0x1234);
    d::put_u32(out, 0x89abcdefu);
    d::put_u64(out, 1);
    REQUIRE(out.size() == 14);
    CHECK(out[0] == 0x34);
    CHECK(d::load_u32(out.data() + 2) == 0x89abcdefu);
    CHECK(d::load_u64(out.data() + 6) == 1);
}

TEST_CASE("bytes: varints round-trip at every length; overlong, overflowing and truncated ones are refused") {
    for (std::uint64_t v : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{127}, std::uint64_t{128}, std::uint64_t{16383},
                            std::uint64_t{16384}, std::uint64_t{1} << 35, std::numeric_limits<std::uint64_t>::max()}) {
        CAPTURE(v);
        std::vector<std::uint8_t> out;
        d::put_varint(out, v);
        CHECK(out.size() == d::varint_size(v));
        d::byte_reader in(out.data(), out.size(), "t");
        CHECK(in.varint("v") == v);
        CHECK(in.remaining() == 0);
    }
    const std::vector<std::vector<std::uint8_t>> bad = {
        {0x80, 0x00},                                                      // overlong zero
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},      // 65 bits
        {0x80, 0x80},                                                      // truncated
    };
    for (const auto& b : bad) {
        d::byte_reader in(b.data(), b.size(), "forged");
        CHECK_THROWS_AS(in.varint("v"), grphi::format_error);
    }
    for (std::int64_t v : {std::int64_t{0}, std::int64_t{-1}, std::int64_t{1}, std::int64_t{-32768},
                           std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()})
        CHECK(d::unzigzag(d::zigzag(v)) == v);
    CHECK(d::zigzag(-1) == 1);
    CHECK(d::zigzag(1) == 2);
}

TEST_CASE("bytes: the reader never reads past its end and names the field and context") {
    const std::vector<std::uint8_t> b = {3, 'a', 'b', 'c', 9, 1, 2};
    d::byte_reader in(b.data(), b.size(), "file.bin");
    CHECK(in.string(10, "name") == "abc");
    CHECK_THROWS_WITH_AS(in.string(100, "label"), doctest::Contains("file.bin: truncated label"), grphi::format_error);
    d::byte_reader again(b.data(), b.size(), "file.bin");
    CHECK_THROWS_WITH_AS(again.string(2, "name"), doctest::Contains("max 2"), grphi::format_error);
    d::byte_reader short_one(b.data(), 3, "x");
    CHECK_THROWS_AS(short_one.u32("word"), grphi::format_error);
    CHECK(short_one.remaining() == 3);
}

TEST_CASE("bytes: CRC-32 agrees with zlib on every run-time path, length and alignment") {
    std::mt19937_64 rng(11);
    std::vector<std::uint8_t> bytes(70000);
    for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
    const char* check = "123456789";
    for (int i = 0; i < grphi::kernels::available_isa_count(); ++i) {
        const auto isa = grphi::kernels::available_isa(i);
        CAPTURE(grphi::kernels::isa_name(isa));
        grphi::kernels::scoped_isa_limit limit(isa);
        CHECK(d::crc32(reinterpret_cast<const std::uint8_t*>(check), 9) == 0xCBF43926u);  // the CRC-32 check value
        for (std::size_t offset = 0; offset < 4; ++offset)
            for (std::size_t n = 0; n <= 300; ++n) {
                CAPTURE(offset);
                CAPTURE(n);
                const std::uint8_t* p = bytes.data() + offset;
                REQUIRE(d::crc32(p, n) == ::crc32(0, p, static_cast<uInt>(n)));
            }
        for (std::size_t n : {1023, 4096, 65537, 69990}) {
            CHECK(d::crc32(bytes.data() + 1, n) == ::crc32(0, bytes.data() + 1, static_cast<uInt>(n)));
            // Chained: the CRC of a concatenation continues from the CRC of its first part.
            const std::uint32_t first = d::crc32(bytes.data(), n / 3);
            CHECK(d::crc32(bytes.data() + n / 3, n - n / 3, first) == ::crc32(0, bytes.data(), static_cast<uInt>(n)));
        }
    }
}
