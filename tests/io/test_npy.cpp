// npy.hpp: writer -> reader round trips, hand-built v1/v2/v3 and Fortran-order files, and malformed or
// unsupported files refused with a message naming the file.
#include <doctest/doctest.h>

#include <grphi/io/npy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace npy = grphi::npy;

namespace {

struct scratch_dir {
    std::string path;
    scratch_dir() {
        char name[] = "/tmp/grphi-test-npy-XXXXXX";
        REQUIRE(::mkdtemp(name) != nullptr);
        path = name;
    }
    ~scratch_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
    std::string file(const std::string& name) const { return path + "/" + name; }
};

void spit(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// An .npy image: version, header dict (padded to 64 with '\n' unless raw), then data bytes.
std::string image(int major, std::string dict, const std::string& data, bool pad = true) {
    const std::size_t preamble = major == 1 ? 10 : 12;
    if (pad) {
        while ((preamble + dict.size() + 1) % 64) dict += ' ';
        dict += '\n';
    }
    std::string bytes = "\x93NUMPY";
    bytes += static_cast<char>(major);
    bytes += '\0';
    for (std::size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) bytes += static_cast<char>((dict.size() >> (8 * i)) & 0xff);
    return bytes + dict + data;
}

template <class T>
std::string raw(const std::vector<T>& values) {
    return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string open_error(const scratch_dir& dir, const std::string& bytes) {
    const std::string path = dir.file("bad.npy");
    spit(path, bytes);
    try {
        npy::reader reader(path);
    } catch (const grphi::format_error& error) {
        const std::string message = error.what();
        CHECK(message.find('\n') == std::string::npos);
        CHECK(message.rfind(path + ": ", 0) == 0);
        return message;
    }
    return "";
}

}  // namespace

TEST_CASE("npy: header text is what NumPy writes") {
    const std::string header = npy::make_header(npy::element_type::F32, {2, 3});
    CHECK(header.size() % 64 == 0);
    CHECK(header.substr(0, 10) == std::string("\x93NUMPY\x01\x00", 8) + std::string(1, static_cast<char>(header.size() - 10)) + '\0');
    CHECK(header.substr(10, 59) == "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    CHECK(header.back() == '\n');
    CHECK(npy::make_header(npy::element_type::F64, {5}).find("'shape': (5,), }") != std::string::npos);
    CHECK(npy::make_header(npy::element_type::F64, {}).find("'shape': (), }") != std::string::npos);
    std::vector<std::uint64_t> many(30000, 1);  // too long for a v1 header: v2
    const std::string long_header = npy::make_header(npy::element_type::F32, many);
    CHECK(long_header[6] == 2);
    CHECK(long_header.size() % 64 == 0);
}

TEST_CASE_TEMPLATE("npy: round trip through the writer", T, float, double) {
    scratch_dir dir;
    const std::vector<std::uint64_t> shape = {3, 2, 2};
    std::vector<T> values(12);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<T>(i) * T(0.1) - T(0.5);
    values[3] = T(-0.0);
    const auto type = sizeof(T) == 4 ? npy::element_type::F32 : npy::element_type::F64;
    npy::save(dir.file("a.npy"), shape, values.data(), type);
    npy::reader reader(dir.file("a.npy"));
    CHECK(reader.info().shape == shape);
    CHECK(reader.info().rows() == 3);
    CHECK(reader.info().cols() == 4);
    CHECK(!reader.info().fortran_order);
    std::vector<T> back(12);
    reader.read_rows(0, 3, back.data());
    CHECK(std::memcmp(back.data(), values.data(), 12 * sizeof(T)) == 0);
    std::vector<T> row(4);
    reader.read_rows(2, 1, row.data());
    CHECK(row[0] == values[8]);
    CHECK_THROWS_AS(reader.read_rows(2, 2, back.data()), std::out_of_range);

    // Narrowed to F16 on write, read back as the nearest halves.
    npy::save(dir.file("h.npy"), {2}, values.data(), npy::element_type::F16);
    npy::reader halves(dir.file("h.npy"));
    CHECK(halves.info().type == npy::element_type::F16);
    std::vector<float> h(2);
    halves.read_rows(0, 1, h.data());
    CHECK(h[0] == -0.5f);
    CHECK(h[1] == grphi::half_to_float(grphi::float_to_half(static_cast<float>(values[1]))));

    // Empty and scalar arrays.
    npy::save<T>(dir.file("e.npy"), {0, 5}, nullptr, type);
    CHECK(npy::reader(dir.file("e.npy")).info().elements() == 0);
    const T scalar = T(3);
    npy::save(dir.file("s.npy"), {}, &scalar, type);
    CHECK(npy::reader(dir.file("s.npy")).info().elements() == 1);
}

TEST_CASE_TEMPLATE("npy: parallel_writer, filled in any order from two threads, writes the streaming writer's bytes", T, float, double) {
    scratch_dir dir;
    const std::vector<std::uint64_t> shape = {7, 13};
    std::vector<T> values(91);
    for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<T>(std::ldexp(1.0 + double(i) / 64, int(i % 40) - 20));
    values[4] = T(-0.0);
    for (const auto type : {npy::element_type::F32, npy::element_type::F64, npy::element_type::F16}) {
        npy::save(dir.file("s.npy"), shape, values.data(), type);
        {
            npy::parallel_writer out(dir.file("p.npy"), type, shape);
            auto half = [&](std::size_t from, std::size_t step) {  // pieces of 3 elements, alternating
                for (std::size_t f = from; f < values.size(); f += step) out.write_values(f, values.data() + f, std::min<std::size_t>(3, values.size() - f));
            };
            std::thread other(half, 3, 6);
            half(0, 6);
            other.join();
            out.finish();
        }
        std::ifstream a(dir.file("s.npy"), std::ios::binary), b(dir.file("p.npy"), std::ios::binary);
        const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
        CHECK(sa == sb);
    }
    {
        const std::int16_t raw[4] = {1, -2, 3, 4};
        npy::parallel_writer out(dir.file("r.npy"), npy::element_type::I16, {4});
        CHECK_THROWS_AS(out.write_bytes(0, raw, 3), std::logic_error);  // not whole elements
        CHECK_THROWS_AS(out.write_bytes(1, raw, 8), std::logic_error);  // past the end
        out.write_bytes(2, raw + 2, 4);
        CHECK_THROWS_WITH(out.finish(), doctest::Contains("incomplete"));
    }
    CHECK(std::system(("test ! -e '" + dir.file("r.npy") + "' && test -z \"$(ls -A '" + dir.path + "' | grep tmp)\"").c_str()) == 0);
}

TEST_CASE("npy: writers refuse shapes whose element count or byte size wraps 64 bits, and leave nothing") {
    scratch_dir dir;
    const std::uint64_t big = std::uint64_t{1} << 40;
    for (const auto& shape : {std::vector<std::uint64_t>{big, big}, {std::uint64_t{1} << 61, 16}, {~std::uint64_t{0}}}) {
        CHECK_THROWS_AS(npy::writer(dir.file("a.npy"), npy::element_type::F32, shape), std::invalid_argument);
        CHECK_THROWS_AS(npy::parallel_writer(dir.file("a.npy"), npy::element_type::F32, shape), std::invalid_argument);
    }
    // 2^62 elements of 8 bytes: a count within the limit, a byte size past 2^64.
    CHECK_THROWS_WITH_AS(npy::parallel_writer(dir.file("a.npy"), npy::element_type::F64, {std::uint64_t{1} << 62}),
                         doctest::Contains("2^64 bytes"), std::invalid_argument);
    CHECK(std::system(("test -z \"$(ls -A '" + dir.path + "')\"").c_str()) == 0);  // no file, no temporary
    npy::parallel_writer out(dir.file("b.npy"), npy::element_type::F32, {3});
    const float one[2] = {1, 2};
    CHECK_THROWS_WITH_AS(out.write_values(2, one, 2), doctest::Contains("2 elements from 2 run past the array's end (3 elements)"),
                         std::logic_error);
}

TEST_CASE("npy: versions 2 and 3, Fortran order, old long literals") {
    scratch_dir dir;
    // Shape (2, 3, 4) in Fortran order: element (i, j, k) is stored at i + 2*(j + 3*k).
    std::vector<float> fortran(24), c_order(24);
    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 4; ++k) {
                const float value = static_cast<float>(100 * i + 10 * j + k);
                fortran[static_cast<std::size_t>(i + 2 * (j + 3 * k))] = value;
                c_order[static_cast<std::size_t>((i * 3 + j) * 4 + k)] = value;
            }
    for (const int major : {1, 2, 3}) {
        CAPTURE(major);
        const std::string path = dir.file("f.npy");
        spit(path, image(major, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", raw(fortran)));
        npy::reader reader(path);
        CHECK(reader.info().major_version == major);
        CHECK(reader.info().fortran_order);
        std::vector<float> rows(24);
        reader.read_rows(0, 2, rows.data());
        CHECK(rows == c_order);
        std::vector<float> second(12);
        reader.read_rows(1, 1, second.data());
        CHECK(std::vector<float>(c_order.begin() + 12, c_order.end()) == second);
    }
    // A Fortran-order matrix is column-major.
    spit(dir.file("m.npy"), image(1, "{'fortran_order': True, 'shape': (2, 3), 'descr': '<f8'}", raw(std::vector<double>{1, 4, 2, 5, 3, 6})));
    std::vector<double> m(6);
    npy::reader(dir.file("m.npy")).read_rows(0, 2, m.data());
    CHECK(m == std::vector<double>{1, 2, 3, 4, 5, 6});
    // Python 2 era files wrote (2L, 3L) and double quotes are valid Python too.
    spit(dir.file("l.npy"), image(1, "{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (2L, 3L), }", raw(std::vector<double>(6, 1.0))));
    CHECK(npy::reader(dir.file("l.npy")).info().shape == std::vector<std::uint64_t>{2, 3});
}

TEST_CASE("npy: integer and bool arrays, every NumPy type string, raw rows in C order from Fortran order") {
    scratch_dir dir;
    const struct {
        const char* descr;
        npy::element_type type;
    } types[] = {{"<i8", npy::element_type::I64}, {"<i4", npy::element_type::I32}, {"<i2", npy::element_type::I16},
                 {"|i1", npy::element_type::I8},  {"<i1", npy::element_type::I8},  {"|u1", npy::element_type::U8},
                 {"<u2", npy::element_type::U16}, {"<u4", npy::element_type::U32}, {"<u8", npy::element_type::U64},
                 {"|b1", npy::element_type::BOOL}, {"?", npy::element_type::BOOL}};
    for (const auto& t : types) {
        CAPTURE(t.descr);
        const std::size_t width = grphi::safetensors::dtype_size(t.type);
        spit(dir.file("i.npy"), image(1, std::string("{'descr': '") + t.descr + "', 'fortran_order': False, 'shape': (3,), }",
                                      std::string(3 * width, '\x01')));
        CHECK(npy::reader(dir.file("i.npy")).info().type == t.type);
    }
    // A (2, 3) Fortran-order int64 array: raw rows come out in C order, bit for bit.
    const std::vector<std::int64_t> fortran = {1, 4, -2, 5, 1ll << 60, -6};  // columns (1, 4), (-2, 5), (2^60, -6)
    spit(dir.file("f.npy"), image(1, "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }", raw(fortran)));
    npy::reader reader(dir.file("f.npy"));
    std::vector<std::int64_t> rows(6);
    reader.read_raw_rows(0, 2, reinterpret_cast<std::byte*>(rows.data()));
    CHECK(rows == std::vector<std::int64_t>{1, -2, 1ll << 60, 4, 5, -6});
    std::vector<std::int64_t> second(3);
    reader.read_raw_rows(1, 1, reinterpret_cast<std::byte*>(second.data()));
    CHECK(second == std::vector<std::int64_t>{4, 5, -6});

    // The writer takes every type NumPy has, and refuses BF16.
    {
        npy::writer out(dir.file("w.npy"), npy::element_type::I64, {2, 3});
        out.write_bytes(rows.data(), 48);
        out.finish();
    }
    npy::reader back(dir.file("w.npy"));
    CHECK(back.info().type == npy::element_type::I64);
    CHECK(std::memcmp(back.bytes(), rows.data(), 48) == 0);
    CHECK(npy::writable(npy::element_type::BOOL));
    CHECK(!npy::writable(npy::element_type::BF16));
    CHECK_THROWS_AS(npy::make_header(npy::element_type::BF16, {2}), std::invalid_argument);
}

TEST_CASE("npy: malformed and unsupported files are refused with the right message") {
    scratch_dir dir;
    const std::string four = raw(std::vector<float>{1, 2, 3, 4});
    const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
    CHECK(open_error(dir, image(1, good, four)).empty());

    CHECK(open_error(dir, "PK\x03\x04 not npy").find("not an .npy file (bad magic)") != std::string::npos);
    std::string v4 = image(1, good, four);
    v4[6] = 4;
    CHECK(open_error(dir, v4).find("unsupported .npy version 4.0") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", four))
              .find("big-endian dtype '>f4' is not supported") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", four))
              .find("object dtype is not supported") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", four))
              .find("dtype '<c8' is not supported") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '>i8', 'fortran_order': False, 'shape': (2,), }", four))
              .find("big-endian dtype '>i8' is not supported") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", four))
              .find("structured dtype is not supported") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'shape': (4,), }", four)).find("header lacks 'fortran_order'") !=
          std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", four))
              .find("header has an unknown key 'x'") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}", four))
              .find("header repeats 'descr'") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'fortran_order': 0, 'shape': (4,), }", four))
              .find("'fortran_order' is not True or False") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }", four))
              .find("'shape' is not a tuple of non-negative integers") != std::string::npos);
    CHECK(open_error(dir, image(1, "{'descr': '<f4', 'fortran_order': False, 'shape': [4], }", four))
              .find("malformed header: expected '('") != std::string::npos);
    CHECK(open_error(dir, image(1, good + "     ", four, false)).find("does not end with spaces and a newline") !=
          std::string::npos);
    CHECK(open_error(dir, image(1, good, four.substr(0, 12))).find("truncated data: 12 bytes, shape needs 16") !=
          std::string::npos);
    CHECK(open_error(dir, image(1, good, four + "xx")).find("2 bytes of trailing data") != std::string::npos);
    std::string long_length = image(1, good, four);
    long_length[8] = '\xff';
    long_length[9] = '\xff';
    CHECK(open_error(dir, long_length).find("header length 65535 exceeds the file size") != std::string::npos);
    CHECK(open_error(dir, image(2, good, four).substr(0, 11)).find("truncated header") != std::string::npos);
}
