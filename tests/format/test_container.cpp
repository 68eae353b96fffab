// .grphi container: bit-for-bit round trips for every option set, scalar type and base; degenerate
// tensors; hostile files (every single-byte corruption and truncation, forged sizes with valid
// checksums); atomic save. Runs under ASan/UBSan in CI.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <zlib.h>

#include <grphi/format/container.hpp>
#include <grphi/core/quantize.hpp>

#include "format1_fixtures.hpp"
#include "option_sets.hpp"

namespace fs = std::filesystem;

namespace {

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};
#define GRPHI_CONTAINER_COMBOS                                                                                 \
    combo<float, grphi::phi>, combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::two>, \
        combo<float, grphi::sqrt2>, combo<double, grphi::sqrt2>

struct one_and_a_half {  // a user base, stored by name and value
    static constexpr long double value = 1.5L;
    static constexpr const char* name = "one_and_a_half";
};

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Gaussian weights with exact zeros, denormals and extreme magnitudes sprinkled in.
template <class T>
matrix<T> weights(Eigen::Index rows, Eigen::Index cols, unsigned seed, double zero_fraction = 0.1) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> gauss(0.0, 0.05);
    std::bernoulli_distribution zero(zero_fraction);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = zero(rng) ? T(0) : static_cast<T>(gauss(rng));
    if (W.size() > 8) {
        W.data()[1] = std::numeric_limits<T>::denorm_min();
        W.data()[5] = -std::numeric_limits<T>::max() / 4;
        W.data()[7] = -T(0);
    }
    return W;
}

bool same_options(const grphi::options& a, const grphi::options& b) {
    return a.per_channel == b.per_channel && a.e_min == b.e_min && a.e_max == b.e_max && a.levels == b.levels &&
           a.fit_scale == b.fit_scale && a.cluster_size == b.cluster_size && a.round == b.round && a.under == b.under &&
           a.base_value == b.base_value;
}

template <class T, class B>
void check_same(const grphi::packed<T, B>& a, const grphi::packed<T, B>& b) {
    CHECK(a.rows == b.rows);
    CHECK(a.cols == b.cols);
    CHECK(same_options(a.opts, b.opts));
    CHECK(a.signs == b.signs);
    CHECK(a.exponents == b.exponents);
    CHECK(a.window_lo == b.window_lo);
    CHECK(a.window_hi == b.window_hi);
    CHECK(a.scale_steps == b.scale_steps);
}

template <class T, class B>
grphi::packed<T, B> round_trip(const grphi::packed<T, B>& p, const std::string& name = "w") {
    const auto bytes = grphi::serialize({grphi::named(name, p)});
    const auto back = grphi::deserialize(bytes);
    REQUIRE(back.size() == 1);
    CHECK(back[0].name == name);
    CHECK(back[0].template holds<T, B>());
    // All but the header (64), the tensor and metadata counts (1 + 1), the footer (32) and alignment padding.
    const std::size_t parts = grphi::file_reader(bytes.data(), bytes.size()).at(name).sections.size();
    CHECK(bytes.size() >= back[0].coded_bytes + 98);
    CHECK(bytes.size() < back[0].coded_bytes + 98 + 64 * std::max<std::size_t>(parts, 1));
    return back[0].template as<T, B>();
}

// A unique path in the system temp directory, removed with its directory at scope exit.
struct temp_dir {
    fs::path path;
    temp_dir() {
        std::random_device rd;
        path = fs::temp_directory_path() / ("grphi-test-" + std::to_string(rd()) + std::to_string(rd()));
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::size_t entries() const {
        return static_cast<std::size_t>(std::distance(fs::directory_iterator(path), fs::directory_iterator{}));
    }
};

std::vector<std::uint8_t> small_valid_file() {
    grphi::options o;
    o.levels = 4;
    const auto a = grphi::quantize<grphi::phi>(weights<float>(3, 7, 1, 0.3), o);
    grphi::options c;
    c.cluster_size = 3;
    c.per_channel = false;
    const auto b = grphi::quantize<grphi::two>(weights<double>(2, 5, 2, 0.3), c);
    return grphi::serialize({grphi::named("conv1", a), grphi::named("fc", b)});
}

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// Builds a file from a raw directory and data sections with correct checksums, following
// docs/container.md independently of grphi::serialize (to forge hostile content that passes the CRCs).
std::vector<std::uint8_t> assemble(const std::vector<std::uint8_t>& directory, const std::vector<std::vector<std::uint8_t>>& data,
                                   std::uint16_t major = 1) {
    std::vector<std::uint8_t> out = {0x89, 'G', 'R', 'P', 'H', 'I', '\r', '\n',
                                     static_cast<std::uint8_t>(major), static_cast<std::uint8_t>(major >> 8), 0, 0};
    put_u32(out, static_cast<std::uint32_t>(directory.size()));
    put_u32(out, static_cast<std::uint32_t>(::crc32(0, out.data(), 16)));
    out.insert(out.end(), directory.begin(), directory.end());
    put_u32(out, static_cast<std::uint32_t>(::crc32(0, directory.data(), static_cast<uInt>(directory.size()))));
    for (const auto& d : data) {
        out.insert(out.end(), d.begin(), d.end());
        put_u32(out, static_cast<std::uint32_t>(::crc32(0, d.data(), static_cast<uInt>(d.size()))));
    }
    return out;
}

std::string load_error(const std::vector<std::uint8_t>& bytes, const grphi::load_options& limits = {}) {
    try {
        grphi::deserialize(bytes, "forged.grphi", limits);
    } catch (const grphi::format_error& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

TEST_CASE_TEMPLATE("container: bit-for-bit round trip for every option set", C, GRPHI_CONTAINER_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    const matrix<T> W = weights<T>(7, 45, 3);
    for (const auto& o : grphi_test::all_option_sets(-3, {0, 5, 32})) {
        const auto p = grphi::quantize<B>(W, o);
        const auto q = round_trip(p);
        check_same(p, q);
        const matrix<T> a = grphi::dequantize(p), b = grphi::dequantize(q);
        CHECK(std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.size())) == 0);
    }
}

TEST_CASE_TEMPLATE("container: degenerate tensors", C, GRPHI_CONTAINER_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    for (const auto& shape : {std::pair<int, int>{0, 0}, {0, 5}, {5, 0}, {1, 1}, {1, 300}, {300, 1}}) {
        const int rows = shape.first, cols = shape.second;  // not a structured binding: CAPTURE needs a variable
        CAPTURE(rows);
        CAPTURE(cols);
        for (int cluster : {0, 4}) {
            grphi::options o;
            o.cluster_size = cluster;
            const auto p = grphi::quantize<B>(weights<T>(rows, cols, 9), o);
            check_same(p, round_trip(p));
            const auto z = grphi::quantize<B>(matrix<T>::Zero(rows, cols), o);  // all zeros: no exponent stream
            check_same(z, round_trip(z));
        }
    }
    // One weight, negative and tiny.
    matrix<T> one(1, 1);
    one(0, 0) = -std::numeric_limits<T>::min();
    const auto p = grphi::quantize<B>(one);
    check_same(p, round_trip(p));
}

namespace {
// The exponent mode byte of a tensor's data section (after the channel state and the sign stream).
template <class T, class B>
int exponent_mode_of(const grphi::packed<T, B>& p) {
    std::vector<std::uint8_t> data;
    grphi::detail::write_tensor_data(grphi::named("x", p), data);
    grphi::rans::byte_reader in(data.data(), data.size());
    in.bytes(5 * static_cast<std::size_t>(p.channels()), "channel state");
    grphi::rans::decode(in, p.size());
    return in.u8("mode");
}
}  // namespace

TEST_CASE("container: exponents span wider than the coder's alphabet fall back to raw int16") {
    matrix<double> W(2, 4);
    W << 4.9e-324, 1e300, -1e-200, 3.0, 1e-310, -2e307, 0.0, 1e-5;
    for (bool per_channel : {true, false}) {
        grphi::options o;
        o.per_channel = per_channel;
        const auto p = grphi::quantize<grphi::sqrt2>(W, o);
        CHECK(exponent_mode_of(p) == 3);
        check_same(p, round_trip(p));
    }
}


TEST_CASE("container: each exponent map is chosen where it pays and round-trips") {
    // Rows of growing scale under a 6-level window: depth below each row's window top is the tight map.
    matrix<float> G = weights<float>(64, 64, 21, 0.0);
    for (Eigen::Index r = 0; r < G.rows(); ++r) G.row(r) *= 1.0f + 0.5f * static_cast<float>(r);
    grphi::options o;
    o.levels = 6;
    const auto windowed = grphi::quantize<grphi::phi>(G, o);
    CHECK(exponent_mode_of(windowed) == 2);
    check_same(windowed, round_trip(windowed));
    const auto natural = grphi::quantize<grphi::phi>(G);  // windows span the whole range: absolute map
    CHECK(exponent_mode_of(natural) == 1);
    check_same(natural, round_trip(natural));
    const auto zeros = grphi::quantize<grphi::phi>(matrix<float>::Zero(3, 3));
    CHECK(exponent_mode_of(zeros) == 0);
}

TEST_CASE("container: rows with and without zeros decode alike, and an exponent outside its window is refused in both") {
    // The reader copies a row without zeros straight from the symbols and expands the others weight by
    // weight; rows of both kinds, in both exponent maps, must give back the packed tensor exactly.
    matrix<float> G = weights<float>(64, 64, 21, 0.0);
    for (Eigen::Index r = 0; r < G.rows(); ++r) G.row(r) *= 1.0f + 0.5f * static_cast<float>(r);
    G(1, 7) = 0.0f;
    G(4, 0) = 0.0f;
    G(4, 63) = 0.0f;
    for (const bool windowed : {true, false}) {
        grphi::options o;
        if (windowed) o.levels = 6;
        const auto p = grphi::quantize<grphi::phi>(G, o);
        CHECK(exponent_mode_of(p) == (windowed ? 2 : 1));
        check_same(p, round_trip(p));
    }
    grphi::options o;
    o.levels = 6;
    const auto p = grphi::quantize<grphi::phi>(G, o);
    const auto zeros_in_row = [&](Eigen::Index r) {
        return std::count(p.signs.begin() + r * 64, p.signs.begin() + (r + 1) * 64, std::int8_t{0});
    };
    REQUIRE(zeros_in_row(1) > 0);
    REQUIRE(zeros_in_row(2) == 0);
    // Narrowing channel c's window to its top leaves that row's lower exponents outside it.
    for (const int c : {1, 2}) {  // row 1 holds a zero (expanded), row 2 none (copied)
        grphi::stored_tensor t = grphi::stored_tensor::from("x", p);
        std::vector<std::uint8_t> data;
        grphi::detail::write_tensor_data(t, data);
        std::memcpy(data.data() + 5 * c, data.data() + 5 * c + 2, 2);  // window_lo := window_hi
        grphi::stored_tensor back = grphi::stored_tensor::from("x", p);
        grphi::detail::byte_reader in(data.data(), data.size());
        CHECK_THROWS_WITH(grphi::detail::read_tensor_data(back, in), doctest::Contains("outside its channel window"));
    }
}

TEST_CASE("container: a sign symbol other than 0, 1 or 2 is refused, naming the first one") {
    grphi::options o;
    o.levels = 6;
    const auto p = grphi::quantize<grphi::phi>(weights<float>(8, 40, 5, 0.0), o);
    const grphi::stored_tensor t = grphi::stored_tensor::from("x", p);
    std::vector<std::uint8_t> data;
    grphi::detail::write_tensor_data(t, data);
    const std::size_t signs_at = 5 * 8;  // after the 8 channels' state (no block scales)
    grphi::rans::byte_reader r(data.data() + signs_at, data.size() - signs_at);
    const std::vector<grphi::rans::symbol> symbols = grphi::rans::decode(r);
    REQUIRE(symbols.size() == 320);
    const std::size_t rest = data.size() - r.remaining();  // the exponent stream
    for (const std::size_t at : {0, 77, 318})
        for (const grphi::rans::symbol bad : {3, 4095})
            for (const bool later : {false, true}) {
                CAPTURE(at);
                CAPTURE(bad);
                CAPTURE(later);
                std::vector<grphi::rans::symbol> s = symbols;
                s[at] = bad;
                if (later) s[319] = 7;  // a later bad symbol too: the message names the first
                std::vector<std::uint8_t> forged(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(signs_at));
                grphi::rans::encode(s.data(), s.size(), forged);
                forged.insert(forged.end(), data.begin() + static_cast<std::ptrdiff_t>(rest), data.end());
                grphi::stored_tensor back = grphi::stored_tensor::from("x", p);
                grphi::detail::byte_reader in(forged.data(), forged.size());
                const std::string expected = "sign symbol " + std::to_string(bad) + " at weight " + std::to_string(at) + " is not 0, 1 or 2";
                CHECK_THROWS_WITH(grphi::detail::read_tensor_data(back, in), doctest::Contains(expected.c_str()));
            }
    grphi::stored_tensor back = grphi::stored_tensor::from("x", p);  // the untouched section reads back
    grphi::detail::byte_reader in(data.data(), data.size());
    grphi::detail::read_tensor_data(back, in);
    CHECK(back.signs == t.signs);
}

TEST_CASE("container: a zero weight whose exponent is not window_lo still round-trips (all exponents stored)") {
    grphi::options o;
    o.levels = 5;
    auto p = grphi::quantize<grphi::phi>(weights<float>(4, 9, 4, 0.4), o);
    std::size_t changed = 0;
    for (std::size_t i = 0; i < p.signs.size(); ++i)
        if (p.signs[i] == 0) {
            p.exponents[i] = p.window_hi[i / 9];
            ++changed;
        }
    REQUIRE(changed > 0);
    CHECK((exponent_mode_of(p) & 0x80) != 0);
    check_same(p, round_trip(p));
}

TEST_CASE("container: a user base is stored by name and value; type and base mismatches are refused") {
    const auto p = grphi::quantize<one_and_a_half>(weights<double>(6, 10, 5));
    const auto back = grphi::deserialize(grphi::serialize({grphi::named("custom", p)}));
    REQUIRE(back.size() == 1);
    CHECK(back[0].base_name == "one_and_a_half");
    CHECK(back[0].base_value == 1.5);
    check_same(p, back[0].as<double, one_and_a_half>());
    CHECK_FALSE((back[0].holds<float, one_and_a_half>()));
    CHECK_THROWS_WITH_AS((back[0].as<double, grphi::phi>()), doctest::Contains("not float64 with base phi"), std::invalid_argument);
    CHECK_THROWS_AS((back[0].as<float, one_and_a_half>()), std::invalid_argument);
}

TEST_CASE("container: a run-time base is stored as 'custom' with its value, and loading checks it") {
    temp_dir dir;
    const std::string path = (dir.path / "custom.grphi").string();
    grphi::options o;
    o.levels = 6;
    o.base_value = 1.5;
    const auto a = grphi::quantize<grphi::custom>(weights<float>(5, 12, 31), o);
    grphi::options fitted;
    fitted.fit_scale = true;
    fitted.round = grphi::rounding::linear;
    fitted.base_value = 3.7;
    const auto b = grphi::quantize<grphi::custom>(weights<double>(4, 9, 32), fitted);
    const auto stored = grphi::named("a", a);
    CHECK(stored.base_name == "custom");
    CHECK(stored.base_value == 1.5);
    CHECK_FALSE(stored.opts.base_value.has_value());  // the value lives in base_value only
    grphi::save(path, {stored, grphi::named("b", b), grphi::named("c", grphi::quantize<grphi::two>(weights<float>(2, 3, 33)))});
    const auto loaded = grphi::load(path);
    REQUIRE(loaded.size() == 3);
    CHECK(loaded[0].holds<float, grphi::custom>());
    CHECK_FALSE(loaded[0].holds<float, grphi::two>());
    CHECK_FALSE(loaded[0].holds<double, grphi::custom>());
    CHECK_FALSE(loaded[2].holds<float, grphi::custom>());  // a named base is not a custom one, even of equal value
    const auto a_back = loaded[0].as<float, grphi::custom>();
    check_same(a, a_back);
    CHECK(a_back.opts.base_value == 1.5);
    CHECK(grphi::dequantize(a_back) == grphi::dequantize(a));
    const auto b_back = loaded[1].as<double, grphi::custom>();
    check_same(b, b_back);
    CHECK(grphi::dequantize(b_back) == grphi::fake_quantize<grphi::custom>(weights<double>(4, 9, 32), fitted));
    CHECK_THROWS_WITH_AS((loaded[0].as<float, grphi::phi>()), doctest::Contains("with base custom"), std::invalid_argument);
    CHECK_THROWS_AS((loaded[2].as<float, grphi::custom>()), std::invalid_argument);
    // A value that does not fit the stored windows, or options that name another value, are refused.
    auto moved = loaded[0];
    moved.base_value = 1e300;
    CHECK_THROWS_WITH_AS((moved.as<float, grphi::custom>()), doctest::Contains("natural range"), grphi::format_error);
    auto mismatch = loaded[0];
    mismatch.opts.base_value = 1.6;
    CHECK_THROWS_WITH_AS((mismatch.as<float, grphi::custom>()), doctest::Contains("differs from the base value 1.5"),
                         grphi::format_error);
    CHECK_THROWS_WITH_AS(grphi::serialize({mismatch}), doctest::Contains("differs"), std::invalid_argument);
    // A packed tensor whose options lost their value cannot be stored.
    auto lost = a;
    lost.opts.base_value.reset();
    CHECK_THROWS_WITH_AS(grphi::named("lost", lost), doctest::Contains("base_value is required"), std::invalid_argument);
}

TEST_CASE("container: save/load through files and streams, several tensors of mixed types") {
    temp_dir dir;
    const std::string path = (dir.path / "model.grphi").string();
    grphi::options o;
    o.levels = 8;
    const auto a = grphi::quantize<grphi::phi>(weights<float>(16, 33, 6), o);
    const auto b = grphi::quantize<grphi::two>(weights<double>(3, 8, 7));
    const auto c = grphi::quantize<grphi::sqrt2>(weights<float>(0, 4, 8));
    const std::vector<grphi::stored_tensor> set = {grphi::named("layer.0.weight", a), grphi::named("layer.1.weight", b),
                                                   grphi::named("empty", c)};
    grphi::save(path, set);
    CHECK(dir.entries() == 1);  // no temporary left behind
    const auto loaded = grphi::load(path);
    REQUIRE(loaded.size() == 3);
    CHECK(loaded[0].name == "layer.0.weight");
    check_same(a, loaded[0].as<float, grphi::phi>());
    check_same(b, loaded[1].as<double, grphi::two>());
    check_same(c, loaded[2].as<float, grphi::sqrt2>());
    CHECK(loaded[0].coded_bits_per_weight() > 0);
    CHECK(loaded[0].coded_bits_per_weight() == doctest::Approx(grphi::coded_bits_per_weight(a, "layer.0.weight")));

    std::stringstream stream;
    grphi::save(stream, set);
    CHECK(stream.str().size() == fs::file_size(path));
    const auto from_stream = grphi::load(stream);
    REQUIRE(from_stream.size() == 3);
    check_same(b, from_stream[1].as<double, grphi::two>());

    CHECK(grphi::deserialize(grphi::serialize({})).empty());
}

TEST_CASE("container: a failed save leaves the old file untouched and no temporary") {
    temp_dir dir;
    const std::string path = (dir.path / "model.grphi").string();
    const auto a = grphi::quantize<grphi::phi>(weights<float>(4, 4, 10));
    grphi::save(path, {grphi::named("a", a)});
    const auto before = fs::file_size(path);
    CHECK_THROWS_WITH_AS(grphi::save(path, {grphi::named("a", a), grphi::named("a", a)}), doctest::Contains("duplicate"),
                         std::invalid_argument);
    auto broken = grphi::named("b", a);
    broken.signs.pop_back();
    CHECK_THROWS_WITH_AS(grphi::save(path, {broken}), doctest::Contains("signs"), std::invalid_argument);
    CHECK(fs::file_size(path) == before);
    CHECK(dir.entries() == 1);
    CHECK(grphi::load(path).at(0).name == "a");
    CHECK_THROWS_AS(grphi::save((dir.path / "missing" / "x.grphi").string(), {grphi::named("a", a)}), grphi::io_error);
    CHECK_THROWS_AS(grphi::load((dir.path / "missing.grphi").string()), grphi::io_error);
}

TEST_CASE("container: the checksum is CRC-32 as zlib computes it") {
    std::mt19937_64 rng(3);
    for (std::size_t n : {0, 1, 3, 4, 5, 63, 1000, 4099}) {
        std::vector<std::uint8_t> bytes(n);
        for (auto& b : bytes) b = static_cast<std::uint8_t>(rng());
        CHECK(grphi::detail::crc32(bytes.data(), n) == ::crc32(0, bytes.data(), static_cast<uInt>(n)));
    }
}

TEST_CASE("container: coded size is close to the entropy of signs and stored exponents") {
    grphi::options o;
    o.levels = 8;
    const auto p = grphi::quantize<grphi::phi>(weights<float>(256, 256, 11, 0.05), o);
    // Independent order-0 entropies in long double: ternary signs per weight, exponents of nonzero weights.
    std::vector<long double> sign_counts(3, 0), exp_counts(1 << 16, 0);
    long double nonzero = 0;
    for (std::size_t i = 0; i < p.signs.size(); ++i) {
        sign_counts[static_cast<std::size_t>(p.signs[i] + 1)] += 1;
        if (p.signs[i] != 0) {
            exp_counts[static_cast<std::size_t>(p.exponents[i] + 32768)] += 1;
            nonzero += 1;
        }
    }
    auto bits = [](const std::vector<long double>& counts, long double n) {
        long double b = 0;
        for (long double c : counts)
            if (c > 0) b -= c * std::log2(c / n);
        return b;
    };
    const long double n = static_cast<long double>(p.signs.size());
    const long double entropy_bits = bits(sign_counts, n) + bits(exp_counts, nonzero);
    const long double metadata_bits = 40.0L * 256;  // per-channel window and scale step, stored raw
    const long double coded_bits = static_cast<long double>(grphi::coded_bits_per_weight(p)) * n;
    MESSAGE("coded " << static_cast<double>(coded_bits / n) << " bits/weight, entropy + metadata "
                     << static_cast<double>((entropy_bits + metadata_bits) / n));
    CHECK(coded_bits <= (entropy_bits + metadata_bits) * 1.003L + 8 * 96);
    CHECK(coded_bits >= entropy_bits);
}

TEST_CASE("container: every single-byte corruption and every truncation of a small file is refused") {
    const auto file = small_valid_file();
    REQUIRE(grphi::deserialize(file).size() == 2);
    MESSAGE("small file: " << file.size() << " bytes");
    for (std::size_t length = 0; length < file.size(); ++length) {
        const std::vector<std::uint8_t> prefix(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length));
        const std::string error = load_error(prefix);
        CHECK_MESSAGE(error != "no error", "truncated to ", length);
    }
    for (std::size_t at = 0; at < file.size(); ++at)
        for (unsigned flip = 1; flip < 256; ++flip) {
            auto bad = file;
            bad[at] = static_cast<std::uint8_t>(bad[at] ^ flip);
            const std::string error = load_error(bad);  // CRC-32 catches every single-byte change
            if (error == "no error") FAIL_CHECK("corruption at byte " << at << " xor " << flip << " went unnoticed");
        }
    // Behind the checksums the parsers themselves must refuse or survive every corruption.
    grphi::load_options unchecked;
    unchecked.verify_checksums = false;
    std::size_t accepted = 0;
    for (std::size_t at = 0; at < file.size(); ++at)
        for (unsigned flip = 1; flip < 256; ++flip) {
            auto bad = file;
            bad[at] = static_cast<std::uint8_t>(bad[at] ^ flip);
            accepted += load_error(bad, unchecked) == "no error";
        }
    MESSAGE(accepted << " of " << 255 * file.size() << " corruptions parse without checksums (CRC bytes, names, ...)");
    auto longer = file;
    longer.push_back(0);
    CHECK(load_error(longer).find("footer") != std::string::npos);
}

// Regression (issue 10, found by fuzz/fuzz_container.cpp): the format-1 reader accepted names that are not
// UTF-8, which the format-2 writer refuses, so a loaded file could not be saved again. Both readers and the
// writer now apply one record rule (format::detail::validate_record).
TEST_CASE("container: a format-1 name that is not UTF-8 is refused on load, as the writer refuses it") {
    // The fuzzer's input (checksums off): a format-1 file whose second tensor is named "e\xb9pty".
    const std::vector<std::uint8_t> found = {
        0x89, 0x47, 0x52, 0x50, 0x48, 0x49, 0x0d, 0x0a, 0x01, 0x00, 0x00, 0x00, 0x35, 0x00, 0x00, 0x00, 0x1e, 0x0b,
        0xcd, 0x03, 0x02, 0x05, 0x7a, 0x65, 0x72, 0x6f, 0x73, 0x01, 0x03, 0x70, 0x68, 0x69, 0xa8, 0xf4, 0x97, 0x9b,
        0x77, 0xe3, 0xf9, 0x3f, 0x02, 0x03, 0x01, 0x00, 0x00, 0x00, 0x0e, 0x05, 0x65, 0xb9, 0x70, 0x74, 0x79, 0x01,
        0x03, 0x74, 0x75, 0x6f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00,
        0x02, 0x70, 0xa9, 0x38, 0xe5, 0x28, 0xff, 0xb8, 0x00, 0x00, 0x28, 0xff, 0xb8, 0x00, 0x00, 0x06, 0x00, 0x02,
        0x00, 0x51, 0xa6, 0x2f, 0x7b, 0x00, 0x00, 0xff, 0x12, 0xd9, 0x41};
    grphi::load_options unchecked;
    unchecked.verify_checksums = false;
    const std::string error = load_error(found, unchecked);
    CHECK(error.find("tensor 'e\xb9pty': name is not valid UTF-8") != std::string::npos);
    // The smallest such file, with valid checksums: one empty tensor named "\xff" (and one whose base name is not UTF-8).
    auto t = grphi::named("\xff", grphi::quantize<grphi::phi>(weights<float>(0, 0, 1)));
    std::vector<std::uint8_t> data;
    grphi::detail::write_tensor_data(t, data);
    auto file_of = [&](const grphi::stored_tensor& entry) {
        std::vector<std::uint8_t> d;
        grphi::detail::put_varint(d, 1);
        grphi::detail::write_directory_entry(entry, data.size(), d);
        return assemble(d, {data});
    };
    CHECK(load_error(file_of(t)).find("name is not valid UTF-8") != std::string::npos);
    CHECK_THROWS_AS(grphi::serialize({t}), std::invalid_argument);  // the writer's refusal, by the same rule
    t.name = "ok";
    t.base_name = "\xc0\x80";  // an overlong NUL
    CHECK(load_error(file_of(t)).find("base name is not valid UTF-8") != std::string::npos);
    t.base_name = "phi";
    REQUIRE(load_error(file_of(t)) == "no error");
    CHECK(grphi::deserialize(grphi::serialize(grphi::deserialize(file_of(t)))).size() == 1);  // loads, saves, loads
}

TEST_CASE("container: hostile format-1 content with valid checksums is refused with a message") {
    const auto a = grphi::quantize<grphi::phi>(weights<float>(2, 3, 12));
    auto t = grphi::named("t", a);
    std::vector<std::uint8_t> data;
    grphi::detail::write_tensor_data(t, data);
    auto directory_for = [&](const grphi::stored_tensor& entry, std::uint64_t data_bytes, std::uint64_t count = 1) {
        std::vector<std::uint8_t> d;
        grphi::rans::detail::put_varint(d, count);
        grphi::detail::write_directory_entry(entry, data_bytes, d);
        return d;
    };
    // The honest format-1 file loads to the tensor; unknown versions are refused.
    const auto honest = grphi::deserialize(assemble(directory_for(t, data.size()), {data}));
    REQUIRE(honest.size() == 1);
    CHECK(honest[0].signs == t.signs);
    CHECK(honest[0].exponents == t.exponents);
    CHECK(load_error(assemble(directory_for(t, data.size()), {data}, 3)).find("unsupported format version 3") != std::string::npos);

    auto huge = t;
    huge.rows = std::int64_t{1} << 40;
    huge.cols = std::int64_t{1} << 40;
    CHECK(load_error(assemble(directory_for(huge, data.size()), {data})).find("load limit") != std::string::npos);
    huge.rows = std::int64_t{1} << 31;
    huge.cols = 0;  // no weights, but 2^31 channels: the data section cannot hold their state
    CHECK(load_error(assemble(directory_for(huge, data.size()), {data})).find("channel state") != std::string::npos);
    auto wide = t;
    wide.cols = 1 << 20;  // shape disagrees with the streams
    CHECK(load_error(assemble(directory_for(wide, data.size()), {data})).find("sign stream") != std::string::npos);
    CHECK(load_error(assemble(directory_for(t, data.size()), {data}), grphi::load_options{5, true}).find("load limit") != std::string::npos);
    CHECK(load_error(assemble(directory_for(t, data.size() + 1), {data})).find("data sections take") != std::string::npos);
    CHECK(load_error(assemble(directory_for(t, data.size(), 1000), {data})).find("tensor count") != std::string::npos);
    auto bad_data = data;
    bad_data[0] = 0xff;  // window_lo of channel 0 becomes > window_hi
    bad_data[1] = 0x7f;
    CHECK(load_error(assemble(directory_for(t, data.size()), {bad_data})).find("window") != std::string::npos);
    auto renamed = t;
    renamed.base_name = "phi";
    renamed.base_value = 1.0;
    CHECK(load_error(assemble(directory_for(renamed, data.size()), {data})).find("base value") != std::string::npos);
    // A window outside the base's natural range passes the generic checks and is caught by as<T, Base>().
    auto far = t;
    std::vector<std::uint8_t> far_data;
    far.window_hi.assign(far.window_hi.size(), 32000);
    grphi::detail::write_tensor_data(far, far_data);
    const auto loaded = grphi::deserialize(assemble(directory_for(far, far_data.size()), {far_data}));
    CHECK_THROWS_WITH_AS((loaded.at(0).as<float, grphi::phi>()), doctest::Contains("natural range"), grphi::format_error);
}

namespace {

// A valid unclustered tensor drawn directly (not via quantize): per-channel windows of `width` exponents
// somewhere in [-60, 40], a share of zero weights (exponent = window bottom), `negative` of the rest negative.
grphi::stored_tensor drawn_tensor(std::int64_t rows, std::int64_t cols, bool per_channel, int width, double zeros,
                                  double negative, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    grphi::stored_tensor t;
    t.name = "drawn";
    t.base_name = grphi::phi::name;
    t.base_value = static_cast<double>(grphi::phi::value);
    t.rows = rows;
    t.cols = cols;
    t.opts.per_channel = per_channel;
    const auto channels = static_cast<std::size_t>(per_channel ? rows : 1);
    std::uniform_int_distribution<int> bottom(-60, 40 - width);
    for (std::size_t c = 0; c < channels; ++c) {
        t.window_lo.push_back(static_cast<std::int16_t>(bottom(rng)));
        t.window_hi.push_back(static_cast<std::int16_t>(t.window_lo.back() + width - 1));
        t.scale_steps.push_back(0);
    }
    std::bernoulli_distribution zero(zeros), minus(negative);
    std::geometric_distribution<int> depth(0.35);  // exponent-like: most weights near the window top
    for (std::int64_t r = 0; r < rows; ++r) {
        const auto c = static_cast<std::size_t>(per_channel ? r : 0);
        for (std::int64_t i = 0; i < cols; ++i) {
            const bool is_zero = zero(rng);
            t.signs.push_back(static_cast<std::int8_t>(is_zero ? 0 : (minus(rng) ? -1 : 1)));
            t.exponents.push_back(static_cast<std::int16_t>(
                is_zero ? t.window_lo[c] : std::max<int>(t.window_lo[c], t.window_hi[c] - depth(rng))));
        }
    }
    return t;
}

// The data section written by the general rule alone.
std::vector<std::uint8_t> general_section(const grphi::stored_tensor& t) {
    const grphi::detail::tensor_geometry g(t);
    std::vector<std::uint8_t> out;
    for (std::uint64_t c = 0; c < g.channels; ++c) {
        out.push_back(static_cast<std::uint8_t>(t.window_lo[c]));
        out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(t.window_lo[c]) >> 8));
        out.push_back(static_cast<std::uint8_t>(t.window_hi[c]));
        out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(t.window_hi[c]) >> 8));
        out.push_back(static_cast<std::uint8_t>(t.scale_steps[c]));
    }
    grphi::detail::write_streams_general(t, g, out);
    return out;
}

}  // namespace

TEST_CASE("container: the one-pass writer of unclustered tensors writes exactly the general rule's bytes") {
    std::uint64_t seed = 1;
    // Widths cover each vector kernel (<= 4, 8, 16) and the scalar one; columns cover whole vectors and tails.
    for (int width : {1, 2, 4, 5, 8, 9, 16, 17, 40})
        for (std::int64_t cols : {1, 5, 31, 32, 33, 100, 1000})
            for (bool per_channel : {true, false})
                for (double zeros : {0.0, 0.3, 1.0}) {
                    CAPTURE(width);
                    CAPTURE(cols);
                    CAPTURE(per_channel);
                    CAPTURE(zeros);
                    const grphi::stored_tensor t = drawn_tensor(7, cols, per_channel, width, zeros, 0.4, seed++);
                    std::vector<std::uint8_t> section;
                    grphi::detail::write_tensor_data(t, section);
                    CHECK(section == general_section(t));
                    // And it decodes to the tensor.
                    grphi::rans::byte_reader in(section.data(), section.size());
                    grphi::stored_tensor back = t;
                    back.signs.clear();
                    back.exponents.clear();
                    grphi::detail::read_tensor_data(back, in);
                    CHECK(in.remaining() == 0);
                    CHECK(back.signs == t.signs);
                    CHECK(back.exponents == t.exponents);
                }
    SUBCASE("one sign only, both exponent maps, a single row, a long row") {
        for (double negative : {0.0, 1.0})
            for (std::int64_t rows : {1, 3}) {
                const grphi::stored_tensor t = drawn_tensor(rows, 70000, true, 8, 0.01, negative, seed++);
                std::vector<std::uint8_t> section;
                grphi::detail::write_tensor_data(t, section);
                CHECK(section == general_section(t));
            }
    }
    SUBCASE("tensors the one-pass writer leaves to the general rule") {
        grphi::stored_tensor zero_off_bottom = drawn_tensor(3, 40, true, 6, 0.3, 0.5, seed++);
        for (std::size_t i = 0; i < zero_off_bottom.signs.size(); ++i)
            if (zero_off_bottom.signs[i] == 0) {
                ++zero_off_bottom.exponents[i];  // still inside the window, but not its bottom
                break;
            }
        grphi::stored_tensor wide = drawn_tensor(5, 3, true, 100, 0.0, 0.5, seed++);  // window wider than 64 and the row
        grphi::stored_tensor outside = drawn_tensor(2, 50, false, 8, 0.0, 0.5, seed++);
        outside.signs[17] = 1;
        outside.exponents[17] = static_cast<std::int16_t>(outside.window_lo[0] - 1);  // not storable, yet written alike
        for (const auto& t : {zero_off_bottom, wide, outside}) {
            std::vector<std::uint8_t> section;
            grphi::detail::write_tensor_data(t, section);
            CHECK(section == general_section(t));
        }
    }
}

TEST_CASE("container: the one-pass writer stores raw exponents when neither map fits the coder's alphabet") {
    grphi::stored_tensor t = drawn_tensor(2, 5000, true, 1, 0.0, 0.5, 5);
    std::mt19937_64 rng(6);
    std::uniform_int_distribution<int> spread(0, 4999);
    for (std::size_t c = 0; c < 2; ++c) {
        t.window_lo[c] = -10000;
        t.window_hi[c] = -10000 + 4999;
    }
    for (auto& e : t.exponents) e = static_cast<std::int16_t>(-10000 + spread(rng));
    t.exponents[0] = -10000;
    t.exponents[1] = -10000 + 4999;
    std::vector<std::uint8_t> section;
    grphi::detail::write_tensor_data(t, section);
    CHECK(section == general_section(t));
    const auto back = grphi::deserialize(grphi::serialize({t}));
    CHECK(back.at(0).exponents == t.exponents);
}

// ---------------------------------------------------------------------------------------------
// Format-1 files (written before format 2) still load: the committed fixtures hold exactly what
// quantizing their documented weights gives, and dequantize to fake_quantize bit for bit.
namespace {

template <class T, class B>
void check_fixture_tensor(const grphi::stored_tensor& s, const grphi_test::format1::tensor& t) {
    const auto W = grphi_test::format1::weights<T>(t.rows, t.cols, t.seed, t.zeros_only);
    REQUIRE(s.template holds<T, B>());
    const auto p = s.template as<T, B>();
    check_same(p, grphi::quantize<B>(W, t.opts));
    const auto expected = grphi::fake_quantize<B>(W, t.opts);
    const auto got = grphi::dequantize(p);
    REQUIRE(got.rows() == expected.rows());
    REQUIRE(got.cols() == expected.cols());
    // Empty tensors have no data pointer, and memcmp must not see a null one.
    if (got.size() > 0)
        CHECK(std::memcmp(got.data(), expected.data(), sizeof(T) * static_cast<std::size_t>(got.size())) == 0);
}

template <class T>
void check_fixture_tensor(const grphi::stored_tensor& s, const grphi_test::format1::tensor& t) {
    using grphi_test::format1::base;
    if (t.b == base::phi) check_fixture_tensor<T, grphi::phi>(s, t);
    else if (t.b == base::two) check_fixture_tensor<T, grphi::two>(s, t);
    else check_fixture_tensor<T, grphi::custom>(s, t);
}

}  // namespace

TEST_CASE("container: the committed format-1 fixtures load to the values their weights quantize to") {
    namespace f1 = grphi_test::format1;
    for (const auto& f : f1::files()) {
        CAPTURE(f.name);
        const auto tensors = grphi::load(std::string(GRPHI_SOURCE_DIR) + "/tests/data/format1/" + f.name);
        REQUIRE(tensors.size() == f.tensors.size());
        for (std::size_t i = 0; i < tensors.size(); ++i) {
            CAPTURE(f.tensors[i].name);
            CHECK(tensors[i].name == f.tensors[i].name);
            if (f.tensors[i].type == f1::scalar::f32) check_fixture_tensor<float>(tensors[i], f.tensors[i]);
            else check_fixture_tensor<double>(tensors[i], f.tensors[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile shapes and arrays: refused with std::invalid_argument before any array is read or sized.
TEST_CASE("container: shapes whose rows x cols overflow are refused by validate, dequantize and serialize") {
    grphi::packed<float, grphi::phi> p;
    p.rows = std::int64_t{1} << 33;
    p.cols = std::int64_t{1} << 31;  // rows x cols wraps to 0 in 64 bits: the empty arrays "match"
    p.opts.per_channel = false;
    p.window_lo = {-3};
    p.window_hi = {0};
    p.scale_steps = {0};
    CHECK_THROWS_WITH_AS(grphi::validate(p), doctest::Contains("2^62"), std::invalid_argument);
    CHECK_THROWS_AS(grphi::dequantize(p), std::invalid_argument);
    CHECK_THROWS_AS(grphi::named("w", p), std::invalid_argument);
    grphi::stored_tensor s;
    s.name = "w";
    s.base_name = "phi";
    s.base_value = static_cast<double>(grphi::phi::value);
    s.rows = p.rows;
    s.cols = p.cols;
    s.opts = p.opts;
    s.window_lo = p.window_lo;
    s.window_hi = p.window_hi;
    s.scale_steps = p.scale_steps;
    CHECK_THROWS_WITH_AS(grphi::serialize({s}), doctest::Contains("2^62"), std::invalid_argument);
}

TEST_CASE("container: dequantize of a packed tensor with negative rows throws before Eigen sees the shape") {
    grphi::packed<double, grphi::two> p;
    p.rows = -3;
    p.cols = 4;
    CHECK_THROWS_WITH_AS(grphi::dequantize(p), doctest::Contains("negative shape"), std::invalid_argument);
    matrix<double> out;
    CHECK_THROWS_AS(grphi::dequantize(p, out), std::invalid_argument);
}

TEST_CASE("container: serialize never writes a scale step the reader refuses") {
    auto t = grphi::named("w", grphi::quantize<grphi::phi>(weights<float>(2, 3, 4)));
    t.scale_steps[1] = 9;
    CHECK_THROWS_WITH_AS(grphi::serialize({t}), doctest::Contains("scale step 9"), std::invalid_argument);
    t.scale_steps[1] = -9;
    CHECK_THROWS_AS(grphi::serialize({t}), std::invalid_argument);
    t.scale_steps[1] = 8;
    CHECK_NOTHROW(grphi::serialize({t}));
}

TEST_CASE("container: a tiny file claiming a huge all-zero tensor is refused by the limits, not allocated") {
    grphi::options per_tensor;
    per_tensor.per_channel = false;
    const auto zeros = grphi::quantize<grphi::two>(matrix<float>::Zero(4, 4), per_tensor);
    std::vector<std::uint8_t> bytes = grphi::serialize({grphi::named("z", zeros)});
    const grphi::file_reader honest(bytes.data(), bytes.size());
    std::vector<grphi::tensor_info> tensors = honest.tensors();
    tensors[0].shape = {std::uint64_t{1} << 17, std::uint64_t{1} << 17};  // 2^34 weights
    tensors[0].sections[0].rows = std::int64_t{1} << 17;
    const std::vector<std::uint8_t> index = grphi::format::detail::write_index(tensors, {});
    const std::uint64_t offset = grphi::detail::load_u64(bytes.data() + bytes.size() - 32);
    bytes.resize(static_cast<std::size_t>(offset));
    bytes.insert(bytes.end(), index.begin(), index.end());
    grphi::format::detail::write_footer(offset, index, bytes);
    MESSAGE("forged file: " << bytes.size() << " bytes claiming 2^34 weights");
    CHECK(load_error(bytes).find("limit") != std::string::npos);
    grphi::load_options generous;
    generous.max_weights = std::uint64_t{1} << 40;
    generous.verify_checksums = true;
    // Within a raised total limit the single part still exceeds what the sections can decode to.
    CHECK(load_error(bytes, generous) != "no error");
}
