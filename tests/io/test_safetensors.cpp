// safetensors.hpp (and its JSON parser): writer -> reader round trips, and hand-built malformed files that
// must be refused with a one-line message naming the file and the tensor.
#include <doctest/doctest.h>

#include <grphi/io/safetensors.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace st = grphi::safetensors;

namespace {

// A private scratch directory, removed with its files at the end of the test.
struct scratch_dir {
    std::string path;
    scratch_dir() {
        char name[] = "/tmp/grphi-test-st-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~scratch_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string file(const std::string& name) const { return path + "/" + name; }
};

bool exists(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0;
}

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors image from a header text and a data buffer, with an optional forged length.
std::string image(const std::string& header, const std::string& data, std::uint64_t forged_length = 0) {
    const std::uint64_t length = forged_length ? forged_length : header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
    return bytes + header + data;
}

// The message of the format_error that opening `bytes` as a safetensors file raises ("" if none).
std::string open_error(const scratch_dir& dir, const std::string& bytes) {
    const std::string path = dir.file("bad.safetensors");
    spit(path, bytes);
    try {
        st::reader reader(path);
    } catch (const grphi::format_error& error) {
        const std::string message = error.what();
        CHECK(message.find('\n') == std::string::npos);
        CHECK(message.rfind(path + ": ", 0) == 0);
        return message;
    }
    return "";
}

}  // namespace

TEST_CASE("json: strict parsing") {
    using grphi::detail::parse_json;
    const auto value = parse_json(R"( {"a": [1, 2, {"b": "x\u00e9\ud83d\ude00"}], "c": -1.5e3, "d": true, "e": null} )");
    REQUIRE(value.is_object());
    REQUIRE(value.members.size() == 4);
    CHECK(value.find("a")->items[1].as_uint64() == 2u);
    CHECK(value.find("a")->items[2].find("b")->text == "x\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(value.find("c")->text == "-1.5e3");
    CHECK(!value.find("c")->as_uint64());
    CHECK(parse_json("18446744073709551615").as_uint64() == std::numeric_limits<std::uint64_t>::max());
    CHECK(!parse_json("18446744073709551616").as_uint64());

    for (const char* bad : {"", "{", "{\"a\":1,}", "[1,]", "{\"a\" 1}", "{'a':1}", "01", "1.", "-", "\"\\x\"",
                            "\"a\nb\"", "{\"a\":1}{", "tru", "{\"a\":1,\"a\":2}", "\"\\ud800\"", "\"\\udc00\"",
                            "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"abc", "nul"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(parse_json(bad), grphi::detail::json_error);
    }
    std::string deep(100, '[');
    deep += std::string(100, ']');
    CHECK_THROWS_WITH_AS(parse_json(deep), doctest::Contains("nesting deeper"), grphi::detail::json_error);
    std::string shallow(60, '[');
    shallow += std::string(60, ']');
    CHECK_NOTHROW(parse_json(shallow));
    CHECK_THROWS_WITH(parse_json("{\"a\":1,\"a\":2}"), doctest::Contains("duplicate key \"a\""));
}

TEST_CASE("safetensors: writer output reads back with the same values, bytes and metadata") {
    scratch_dir dir;
    const std::string path = dir.file("model.safetensors");
    const std::vector<float> w32 = {1.5f, -0.0f, 3.25e-39f, std::numeric_limits<float>::infinity(), 7.0f, -2.0f};
    const std::vector<double> w64 = {0.1, -1e300, 4.9e-324};
    const std::vector<float> w16 = {1.0f, -65504.0f, std::ldexp(1.0f, -24), 0.333251953125f};  // exact in f16
    const std::vector<float> wbf = {1.0f, std::ldexp(-1.5f, 127), 0.15625f};                                   // exact in bf16
    const std::vector<std::int64_t> ids = {1, -2, 1ll << 40};
    const std::vector<st::tensor_entry> entries = {
        {"layer.0.weight", st::dtype::F32, {2, 3}}, {"odd \"name\"\\", st::dtype::F64, {3}},
        {"h", st::dtype::F16, {2, 2}},             {"b", st::dtype::BF16, {3, 1, 1}},
        {"empty", st::dtype::F32, {0, 4}},         {"ids", st::dtype::I64, {3}},
        {"scalar", st::dtype::F32, {}},
    };
    {
        st::writer writer(path, entries, {{"format", "pt"}, {"note", "line\nbreak"}});
        writer.write_values(w32.data(), 4);  // in pieces
        writer.write_values(w32.data() + 4, 2);
        writer.write_values(w64.data(), w64.size());
        writer.write_values(w16.data(), w16.size());
        writer.write_values(wbf.data(), wbf.size());
        CHECK(writer.current() == 5);  // the empty tensor is skipped by itself
        writer.write_bytes(ids.data(), ids.size() * 8);
        const float scalar = 42.0f;
        writer.write_values(&scalar, 1);
        CHECK(!exists(path));  // nothing visible until finish
        writer.finish();
    }
    REQUIRE(exists(path));
    const std::string bytes = slurp(path);
    std::uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | static_cast<std::uint8_t>(bytes[static_cast<std::size_t>(i)]);
    CHECK((8 + header_length) % 8 == 0);
    CHECK(bytes[8] == '{');
    const std::size_t close = bytes.rfind('}', 8 + header_length - 1);
    for (std::size_t i = close + 1; i < 8 + header_length; ++i) CHECK(bytes[i] == ' ');

    st::reader reader(path);
    REQUIRE(reader.tensors().size() == entries.size());
    for (std::size_t i = 0; i < entries.size(); ++i) {  // data order = declaration order, contiguous
        CHECK(reader.tensors()[i].name == entries[i].name);
        CHECK(reader.tensors()[i].type == entries[i].type);
        CHECK(reader.tensors()[i].shape == entries[i].shape);
        if (i > 0) CHECK(reader.tensors()[i].begin == reader.tensors()[i - 1].end);
    }
    CHECK(reader.data_offset() + reader.tensors().back().end == bytes.size());
    REQUIRE(reader.metadata().size() == 2);
    CHECK(reader.metadata()[1].second == "line\nbreak");

    std::vector<float> f(6);
    reader.read(*reader.find("layer.0.weight"), 0, 6, f.data());
    for (std::size_t i = 0; i < 6; ++i) CHECK(std::memcmp(&f[i], &w32[i], 4) == 0);
    std::vector<double> d(3);
    reader.read(*reader.find("odd \"name\"\\"), 0, 3, d.data());
    CHECK(std::memcmp(d.data(), w64.data(), 24) == 0);
    std::vector<float> h(4);
    reader.read(*reader.find("h"), 0, 4, h.data());
    CHECK(h == w16);
    std::vector<double> hb(3);
    reader.read(*reader.find("b"), 0, 3, hb.data());
    for (std::size_t i = 0; i < 3; ++i) CHECK(hb[i] == static_cast<double>(wbf[i]));
    reader.read(*reader.find("layer.0.weight"), 4, 2, f.data());  // a sub-range
    CHECK(f[0] == 7.0f);
    CHECK(std::memcmp(reader.bytes(*reader.find("ids")), ids.data(), 24) == 0);
    CHECK(reader.find("empty")->bytes() == 0);
    CHECK(reader.find("scalar")->elements() == 1);
    CHECK_THROWS_AS(reader.read(*reader.find("ids"), 0, 1, f.data()), grphi::format_error);
    CHECK_THROWS_AS(reader.read(*reader.find("h"), 3, 2, f.data()), std::out_of_range);
    reader.release(*reader.find("layer.0.weight"));  // pages come back on the next read
    reader.read(*reader.find("layer.0.weight"), 0, 1, f.data());
    CHECK(f[0] == 1.5f);
}

TEST_CASE("safetensors: F16 and BF16 writes round to nearest even") {
    scratch_dir dir;
    const std::string path = dir.file("r.safetensors");
    const std::vector<double> values = {1.0 + std::ldexp(1.0, -11), 1.0 + 3 * std::ldexp(1.0, -11), 1e10, 1.0 + std::ldexp(1.0, -8)};
    {
        st::writer writer(path, {{"h", st::dtype::F16, {4}}, {"b", st::dtype::BF16, {4}}});
        writer.write_values(values.data(), 4);
        writer.write_values(values.data(), 4);
        writer.finish();
    }
    st::reader reader(path);
    std::vector<float> out(4);
    reader.read(*reader.find("h"), 0, 4, out.data());
    CHECK(out[0] == 1.0f);
    CHECK(out[1] == 1.0f + std::ldexp(1.0f, -9));
    CHECK(std::isinf(out[2]));
    reader.read(*reader.find("b"), 0, 4, out.data());
    CHECK(out[0] == 1.0f);
    CHECK(out[2] == 9999220736.0f);  // nearest bfloat16 to 1e10
    CHECK(out[3] == 1.0f);           // tie to even
}

TEST_CASE("safetensors: a failed or abandoned write leaves no file behind") {
    scratch_dir dir;
    const std::string path = dir.file("partial.safetensors");
    {
        st::writer writer(path, {{"w", st::dtype::F32, {4}}});
        const float one = 1.0f;
        writer.write_values(&one, 1);
        CHECK_THROWS_WITH(writer.finish(), doctest::Contains("tensor 'w' is incomplete"));
    }
    CHECK(!exists(path));
    CHECK(std::system(("test -z \"$(ls -A '" + dir.path + "')\"").c_str()) == 0);  // no temporary left either
    CHECK_THROWS_WITH_AS(st::writer(dir.file("missing/dir/out.safetensors"), {}), doctest::Contains("cannot create output"),
                         grphi::io_error);
    CHECK_THROWS_AS(st::writer(path, {{"a", st::dtype::F32, {1}}, {"a", st::dtype::F32, {1}}}), std::invalid_argument);
    st::writer writer(path, {{"w", st::dtype::F32, {1}}});
    const float values[2] = {1.0f, 2.0f};
    CHECK_THROWS_AS(writer.write_values(values, 2), std::logic_error);
}

TEST_CASE("safetensors: parallel_writer, filled in any order from several threads, writes the streaming writer's bytes") {
    scratch_dir dir;
    const std::vector<st::tensor_entry> entries = {
        {"w", st::dtype::F32, {64, 33}}, {"h", st::dtype::F16, {5, 7}}, {"empty", st::dtype::BF16, {0, 3}},
        {"d", st::dtype::F64, {17}},     {"ids", st::dtype::I32, {9}},   {"scalar", st::dtype::BF16, {}},
    };
    const std::vector<std::pair<std::string, std::string>> metadata = {{"format", "pt"}, {"unicode", "\xcf\x86 \xe2\x89\x88 1.618"}};
    // Values with every kind of rounding for F16/BF16: ties, subnormals, overflow, NaN, signed zero.
    std::vector<double> values;
    for (int i = 0; i < 64 * 33 + 35 + 17 + 1; ++i) values.push_back(std::ldexp(1.0 + i / 2048.0, (i % 61) - 30) * (i % 3 ? 1 : -1));
    values[5] = std::numeric_limits<double>::quiet_NaN();
    values[6] = -0.0;
    values[64 * 33 + 3] = 1e6;  // past F16's range
    std::vector<std::int32_t> ids = {1, -2, 3, 1 << 30, -4, 5, 6, 7, 8};
    auto value_at = [&](std::size_t k) {  // first value of tensor k in `values`
        std::size_t first = 0;
        for (std::size_t i = 0; i < k; ++i)
            if (entries[i].type != st::dtype::I32) first += static_cast<std::size_t>(entries[i].bytes() / st::dtype_size(entries[i].type));
        return values.data() + first;
    };
    const std::string streamed = dir.file("streamed.safetensors"), parallel = dir.file("parallel.safetensors");
    {
        st::writer writer(streamed, entries, metadata);
        for (std::size_t k = 0; k < entries.size(); ++k) {
            const auto n = static_cast<std::size_t>(entries[k].bytes() / st::dtype_size(entries[k].type));
            if (entries[k].type == st::dtype::I32) writer.write_bytes(ids.data(), ids.size() * 4);
            else writer.write_values(value_at(k), n);
        }
        writer.finish();
    }
    {
        st::parallel_writer writer(parallel, entries, metadata);
        // Pieces of 5 elements (odd, so pieces straddle F16 pairs), taken in reverse by 3 threads.
        struct piece {
            std::size_t k;
            std::uint64_t first, count;
        };
        std::vector<piece> pieces;
        for (std::size_t k = 0; k < entries.size(); ++k) {
            const std::uint64_t n = entries[k].bytes() / st::dtype_size(entries[k].type);
            for (std::uint64_t f = 0; f < n; f += 5) pieces.push_back({k, f, std::min<std::uint64_t>(5, n - f)});
        }
        std::atomic<std::size_t> next{0};
        auto work = [&] {
            for (std::size_t i; (i = next.fetch_add(1)) < pieces.size();) {
                const piece& p = pieces[pieces.size() - 1 - i];
                if (entries[p.k].type == st::dtype::I32)
                    writer.write_bytes(p.k, p.first * 4, ids.data() + p.first, static_cast<std::size_t>(p.count * 4));
                else
                    writer.write_values(p.k, p.first, value_at(p.k) + p.first, static_cast<std::size_t>(p.count));
            }
        };
        std::thread a(work), b(work);
        work();
        a.join();
        b.join();
        CHECK(!exists(parallel));  // nothing visible until finish
        writer.finish();
    }
    CHECK(slurp(parallel) == slurp(streamed));
}

TEST_CASE("safetensors: parallel_writer refuses ranges past a tensor and an incomplete file, and leaves nothing") {
    scratch_dir dir;
    const std::string path = dir.file("p.safetensors");
    {
        st::parallel_writer writer(path, {{"w", st::dtype::F32, {2, 2}}, {"b", st::dtype::U8, {3}}});
        const float four[4] = {1, 2, 3, 4};
        CHECK_THROWS_WITH_AS(writer.write_values(0, 1, four, 4), doctest::Contains("tensor 'w'"), std::logic_error);
        CHECK_THROWS_AS(writer.write_values(0, 5, four, 0), std::logic_error);
        CHECK_THROWS_AS(writer.write_bytes(1, 2, four, 2), std::logic_error);
        CHECK_THROWS_AS(writer.write_bytes(2, 0, four, 1), std::logic_error);  // no tensor 2
        writer.write_values(0, 0, four, 4);
        CHECK_THROWS_WITH(writer.finish(), doctest::Contains("tensor 'b' is incomplete"));
    }
    CHECK(!exists(path));
    CHECK(std::system(("test -z \"$(ls -A '" + dir.path + "')\"").c_str()) == 0);  // no temporary left either
    CHECK_THROWS_AS(st::parallel_writer(path, {{"a", st::dtype::F32, {1}}, {"a", st::dtype::F32, {1}}}), std::invalid_argument);
}

TEST_CASE("safetensors: writers refuse shapes and layouts past 2^64 bytes, and leave nothing") {
    scratch_dir dir;
    const std::string path = dir.file("big.safetensors");
    const std::uint64_t big = std::uint64_t{1} << 40;
    const std::vector<st::tensor_entry> wrapping[] = {
        {{"w", st::dtype::F32, {big, big}}},                               // 2^80 elements
        {{"w", st::dtype::F64, {std::uint64_t{1} << 62}}},                 // 2^62 elements, 2^65 bytes
        {{"a", st::dtype::U8, {std::uint64_t{1} << 62}}, {"b", st::dtype::U8, {std::uint64_t{1} << 62}},
         {"c", st::dtype::U8, {std::uint64_t{1} << 62}}, {"d", st::dtype::U8, {std::uint64_t{1} << 62}}},  // offsets reach 2^64
    };
    for (const auto& tensors : wrapping) {
        CHECK_THROWS_AS(st::parallel_writer(path, tensors), std::invalid_argument);
        CHECK_THROWS_AS(st::writer(path, tensors), std::invalid_argument);
    }
    CHECK(std::system(("test -z \"$(ls -A '" + dir.path + "')\"").c_str()) == 0);  // no file, no temporary
    st::parallel_writer writer(dir.file("p.safetensors"), {{"w", st::dtype::F32, {3}}});
    const float two[2] = {1, 2};
    CHECK_THROWS_WITH_AS(writer.write_values(0, 2, two, 2), doctest::Contains("2 elements from 2 run past its end (3)"), std::logic_error);
}

TEST_CASE("safetensors: malformed files are refused with the right message") {
    scratch_dir dir;
    const std::string good_entry = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    const std::string eight(8, '\x01');
    CHECK(open_error(dir, image(good_entry, eight)).empty());

    CHECK(open_error(dir, "abc").find("truncated file: 3 bytes") != std::string::npos);
    CHECK(open_error(dir, image(good_entry, eight, 1000)).find("header length 1000 exceeds the file size") !=
          std::string::npos);
    CHECK(open_error(dir, image(good_entry, eight, 200'000'000ull).substr(0, 8) + std::string(10, ' '))
              .find("exceeds the file size") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", eight))
              .find("header: JSON error at byte") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},})", eight))
              .find("JSON error") != std::string::npos);
    CHECK(open_error(dir, image("[1, 2]", eight)).find("header does not start with '{'") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", eight))
              .find("tensor 'w': unknown dtype 'Q4'") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", eight))
              .find("tensor 'w': data_offsets [4, 12] past the end of the data (8 bytes") != std::string::npos);
    // Truncated: the header promises more data than the file holds.
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight))
              .find("file truncated?") != std::string::npos);
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                eight))
              .find("tensor 'b': data_offsets [4, 8) overlap tensor 'a' [0, 8)") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight))
              .find("tensor 'w': data_offsets [0, 8] hold 8 bytes, shape x F32 needs 12") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight))
              .find("begin after end") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight))
              .find("tensor 'w': shape has an entry that is not a non-negative integer") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", eight))
              .find("tensor 'w': shape is too large") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight))
              .find("data_offsets is not an array of two integers") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", eight)).find("tensor 'w': missing 'dtype'") !=
          std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", eight))
              .find("tensor 'w': unknown key 'x'") != std::string::npos);
    CHECK(open_error(dir, image(R"({"w":[]})", eight)).find("tensor 'w': entry is not a JSON object") != std::string::npos);
    CHECK(open_error(dir, image(R"({"__metadata__":{"k":1}})", eight)).find("__metadata__ value for 'k' is not a string") !=
          std::string::npos);
    CHECK(open_error(dir, image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{}})", eight))
              .find("duplicate key \"w\"") != std::string::npos);
    // As the reference implementation: the tensors must tile the data exactly; the header may have trailing spaces.
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}   )",
                                eight))
              .empty());
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                eight))
              .find("tensor 'e': data_offsets [4, 4) overlap tensor 'a' [0, 8)") != std::string::npos);
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})",
                                eight))
              .find("tensor 'b': data_offsets [8, 8) leave bytes [4, 8) of the data unused") != std::string::npos);
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight))
              .find("tensor 'a': data_offsets [4, 8) leave bytes [0, 4) of the data unused") != std::string::npos);
    CHECK(open_error(dir, image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight))
              .find("4 unused bytes after the last tensor's data") != std::string::npos);
    CHECK_THROWS_WITH_AS(st::reader(dir.file("does-not-exist.safetensors")), doctest::Contains("cannot open"),
                         grphi::io_error);
}
