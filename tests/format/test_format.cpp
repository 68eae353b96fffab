// format/file_writer.hpp + format/file_reader.hpp (+ layout.hpp): format-2 round trips of quantized
// tensors (bit for bit against fake_quantize, whole, by part and by row range), raw tensors of every
// dtype and rank 0-4, metadata with non-ASCII text, empty tensors, identical files for any thread
// count, atomic files, format-1 files through the same reader, and hostile indexes.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <zlib.h>

#include <grphi/format/container.hpp>
#include <grphi/format/file_reader.hpp>
#include <grphi/format/file_writer.hpp>
#include <grphi/core/quantize.hpp>

#include "format1_fixtures.hpp"

namespace fs = std::filesystem;

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
matrix<T> gaussian(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 0.05);
    std::bernoulli_distribution zero(0.1);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = zero(rng) ? T(0) : static_cast<T>(g(rng));
    return W;
}

template <class T>
bool same_bits(const matrix<T>& a, const matrix<T>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.size())) == 0);
}

struct temp_dir {
    fs::path path;
    temp_dir() {
        std::random_device rd;
        path = fs::temp_directory_path() / ("grphi-format-test-" + std::to_string(rd()) + std::to_string(rd()));
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

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};

grphi::writer_options small_parts(std::uint64_t weights) {
    grphi::writer_options o;
    o.part_weights = weights;
    o.durable = false;
    return o;
}

std::string open_error(const std::vector<std::uint8_t>& bytes, const grphi::reader_limits& limits = {}) {
    try {
        grphi::file_reader in(bytes.data(), bytes.size(), "forged.grphi", limits);
        in.verify();
        for (const auto& t : in.tensors())
            if (t.kind == grphi::tensor_kind::quantized) in.read_stored(t);
    } catch (const grphi::format_error& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

#define GRPHI_FORMAT_COMBOS                                                                                   \
    combo<float, grphi::phi>, combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::two>, \
        combo<float, grphi::custom>, combo<double, grphi::sqrt2>

TEST_CASE_TEMPLATE("format: quantized tensors in several parts read back bit for bit, whole, by part and by rows", C,
                   GRPHI_FORMAT_COMBOS) {
    using T = typename C::scalar;
    using B = typename C::base;
    grphi::options o;
    if constexpr (grphi::is_custom_base_v<B>) o.base_value = 1.37;
    for (int variant = 0; variant < 3; ++variant) {
        CAPTURE(variant);
        grphi::options v = o;
        if (variant == 1) v.per_channel = false, v.levels = 5;
        if (variant == 2) v.cluster_size = 3, v.fit_scale = true;
        const matrix<T> W = gaussian<T>(37, 29, 40 + static_cast<unsigned>(variant));
        const auto p = grphi::quantize<B>(W, v);
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes, {}, small_parts(100));  // 3 rows per part: 13 parts
        out.add("w", p, {37, 29}, grphi::dtype::BF16);
        out.finish();

        const grphi::file_reader in(bytes.data(), bytes.size());
        in.verify();
        const grphi::tensor_info& t = in.at("w");
        CHECK(t.kind == grphi::tensor_kind::quantized);
        CHECK(t.source == grphi::dtype::BF16);
        CHECK(t.sections.size() == 13);
        for (const auto& s : t.sections) CHECK(s.offset % 64 == 0);
        const auto back = in.read<T, B>("w");
        CHECK(back.signs == p.signs);
        CHECK(back.exponents == p.exponents);
        CHECK(back.window_lo == p.window_lo);
        CHECK(back.window_hi == p.window_hi);
        CHECK(back.scale_steps == p.scale_steps);

        const matrix<T> expected = grphi::fake_quantize<B>(W, v);
        matrix<T> got;
        in.dequantize<T, B>("w", got);
        CHECK(same_bits(got, expected));
        matrix<T> by_file;
        in.dequantize("w", by_file);  // scalar and base from the file
        CHECK(same_bits(by_file, expected));

        // A row range across part boundaries decodes only its parts, straight into a block of a larger matrix.
        matrix<T> big = matrix<T>::Constant(20, 29, T(7));
        in.dequantize_rows<T, B>("w", 5, 17, big.middleRows(4, 12));
        CHECK(same_bits(matrix<T>(big.middleRows(4, 12)), matrix<T>(expected.middleRows(5, 12))));
        CHECK((big.topRows(4).array() == T(7)).all());
        CHECK((big.bottomRows(4).array() == T(7)).all());

        const auto part = in.read_part<T, B>("w", 4);  // rows 12..14
        CHECK(part.rows == 3);
        CHECK(std::equal(part.signs.begin(), part.signs.end(), p.signs.begin() + 12 * 29));
    }
}

// The reader reuses each worker's decode buffers from part to part and call to call: a part that is
// smaller, has zeros where the last had none, or another layout (blocks, clusters, per tensor) must
// carry nothing over.
TEST_CASE("format: one reader decodes tensors of every layout in any order, buffers reused between parts") {
    struct layout {
        const char* name;
        grphi::options opts;
        Eigen::Index rows, cols;
        double zeros;
    };
    std::vector<layout> layouts;
    grphi::options channel;
    layouts.push_back({"channel", channel, 40, 33, 0.0});
    layouts.push_back({"channel_zeros", channel, 9, 33, 0.5});
    grphi::options tensor_window;
    tensor_window.per_channel = false;
    tensor_window.levels = 5;
    layouts.push_back({"tensor", tensor_window, 31, 17, 0.1});
    grphi::options clusters;
    clusters.cluster_size = 4;
    clusters.fit_scale = true;
    layouts.push_back({"clusters", clusters, 23, 30, 0.2});
    grphi::options exponent_blocks;
    exponent_blocks.levels = 8;
    exponent_blocks.block_size = 16;
    layouts.push_back({"exponent_blocks", exponent_blocks, 27, 50, 0.1});
    grphi::options fp16_blocks = exponent_blocks;
    fp16_blocks.block_format = grphi::block_scale::fp16;
    layouts.push_back({"fp16_blocks", fp16_blocks, 19, 40, 0.3});
    grphi::options all_zero;
    layouts.push_back({"all_zero", all_zero, 12, 33, 1.0});

    std::vector<std::uint8_t> bytes;
    grphi::file_writer out(bytes, {}, small_parts(200));
    std::vector<matrix<float>> expected;
    std::mt19937_64 rng(77);
    for (const auto& l : layouts) {
        std::normal_distribution<double> g(0.0, 0.05);
        std::bernoulli_distribution zero(l.zeros);
        matrix<float> W(l.rows, l.cols);
        for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = zero(rng) ? 0.0f : static_cast<float>(g(rng));
        out.add(l.name, grphi::quantize<grphi::phi>(W, l.opts), {static_cast<std::uint64_t>(l.rows), static_cast<std::uint64_t>(l.cols)});
        expected.push_back(grphi::fake_quantize<grphi::phi>(W, l.opts));
    }
    out.finish();

    const grphi::file_reader in(bytes.data(), bytes.size());
    // Forward, backward and interleaved, twice each: every read equals fake_quantize bit for bit.
    std::vector<std::size_t> order;
    for (int round = 0; round < 2; ++round) {
        for (std::size_t i = 0; i < layouts.size(); ++i) order.push_back(i);
        for (std::size_t i = layouts.size(); i-- > 0;) order.push_back(i);
        for (std::size_t i = 0; i < layouts.size(); i += 2) order.push_back(i);
        for (std::size_t i = 1; i < layouts.size(); i += 2) order.push_back(i);
    }
    for (const std::size_t i : order) {
        CAPTURE(layouts[i].name);
        REQUIRE(in.at(layouts[i].name).sections.size() > 1);
        matrix<float> got;
        in.dequantize(layouts[i].name, got);
        CHECK(same_bits(got, expected[i]));
        // A row range inside one part, then one across parts.
        const Eigen::Index rows = layouts[i].rows;
        matrix<float> one_row;
        in.dequantize_rows(layouts[i].name, rows - 1, rows, one_row);
        CHECK(same_bits(one_row, matrix<float>(expected[i].bottomRows(1))));
        matrix<float> middle;
        in.dequantize_rows(layouts[i].name, 1, rows - 2, middle);
        CHECK(same_bits(middle, matrix<float>(expected[i].middleRows(1, rows - 3))));
    }
}

TEST_CASE("format: raw tensors of every dtype and rank 0-4 are byte-identical views into the file") {
    const std::vector<grphi::dtype> types = {grphi::dtype::F64, grphi::dtype::F32, grphi::dtype::F16, grphi::dtype::BF16,
                                             grphi::dtype::I8,  grphi::dtype::I16, grphi::dtype::I32, grphi::dtype::I64,
                                             grphi::dtype::U8,  grphi::dtype::U16, grphi::dtype::U32, grphi::dtype::U64,
                                             grphi::dtype::BOOL, grphi::dtype::F8_E5M2, grphi::dtype::F8_E4M3};
    const std::vector<std::vector<std::uint64_t>> shapes = {{}, {5}, {2, 3}, {2, 1, 3}, {1, 2, 3, 2}, {0}, {3, 0, 2}};
    std::mt19937_64 rng(3);
    std::vector<std::uint8_t> bytes;
    std::vector<std::vector<std::uint8_t>> contents;
    grphi::metadata_map meta = {{"format", "pt"}, {"note", "\xce\xb2\xce\xb1\xcf\x83\xce\xb7 \xe2\x86\x92 \xf0\x9f\x98\x80"},
                                {"", "empty key"}, {"empty", ""}};
    grphi::file_writer out(bytes, meta);
    for (std::size_t i = 0; i < types.size(); ++i)
        for (std::size_t j = 0; j < shapes.size(); ++j) {
            const std::size_t n = static_cast<std::size_t>(grphi::element_count(shapes[j])) * grphi::dtype_size(types[i]);
            std::vector<std::uint8_t> data(n);
            for (auto& b : data) b = static_cast<std::uint8_t>(rng());
            out.add_raw(std::string(grphi::dtype_name(types[i])) + "/" + std::to_string(j), types[i], shapes[j], data.data(), n);
            contents.push_back(std::move(data));
        }
    out.finish();
    const grphi::file_reader in(bytes.data(), bytes.size());
    in.verify();
    CHECK(in.metadata() == meta);
    REQUIRE(in.tensors().size() == types.size() * shapes.size());
    std::size_t k = 0;
    for (std::size_t i = 0; i < types.size(); ++i)
        for (std::size_t j = 0; j < shapes.size(); ++j, ++k) {
            const auto& name = in.tensors()[k].name;
            CHECK(name == std::string(grphi::dtype_name(types[i])) + "/" + std::to_string(j));
            const grphi::raw_view v = in.raw(name);
            CHECK(v.type == types[i]);
            CHECK(v.shape == shapes[j]);
            REQUIRE(v.size == contents[k].size());
            CHECK(std::equal(v.data, v.data + v.size, contents[k].begin()));
            CHECK(reinterpret_cast<std::uintptr_t>(v.data) % 64 == reinterpret_cast<std::uintptr_t>(bytes.data()) % 64);
            CHECK(grphi::parse_dtype(grphi::dtype_name(types[i])) == types[i]);
        }
}

TEST_CASE("format: quantized N-D shapes view as rows x (product of the rest); empty tensors round-trip") {
    const matrix<float> W = gaussian<float>(4, 6, 9);
    const auto p = grphi::quantize<grphi::two>(W);
    std::vector<std::uint8_t> bytes;
    grphi::file_writer out(bytes);
    out.add("conv", p, {4, 2, 3});
    CHECK_THROWS_AS(out.add("bad", p, {4, 5}), std::invalid_argument);  // 4 x 5 is not 4 x 6
    const auto scalar = grphi::quantize<grphi::phi>(matrix<double>::Constant(1, 1, 0.3));
    out.add("scalar", scalar, std::vector<std::uint64_t>{});  // rank 0 is 1 x 1: shape {} ...
    const auto no_rows = grphi::quantize<grphi::phi>(matrix<float>(0, 7));
    const auto no_cols = grphi::quantize<grphi::phi>(matrix<float>(5, 0));
    out.add("no_rows", no_rows);
    out.add("no_cols", no_cols, {5, 0, 3});
    out.finish();
    const grphi::file_reader in(bytes.data(), bytes.size());
    in.verify();
    CHECK(in.at("conv").shape == std::vector<std::uint64_t>{4, 2, 3});
    CHECK(in.at("conv").rows() == 4);
    CHECK(in.at("conv").cols() == 6);
    CHECK(in.at("no_rows").sections.empty());
    CHECK(in.at("no_cols").sections.size() == 1);
    CHECK(in.read<float, grphi::phi>("no_cols").window_lo == no_cols.window_lo);
    matrix<float> e;
    in.dequantize("no_rows", e);
    CHECK(e.rows() == 0);
    CHECK(e.cols() == 7);
    matrix<float> c;
    in.dequantize<float, grphi::two>("conv", c);
    CHECK(same_bits(c, grphi::fake_quantize<grphi::two>(W)));
    CHECK(in.read<double, grphi::phi>("scalar").exponents == scalar.exponents);
}

TEST_CASE("format: part by part, encoded on other threads and appended in order, gives the same file as add()") {
    const matrix<float> W = gaussian<float>(64, 50, 5);
    const auto p = grphi::quantize<grphi::phi>(W);
    std::vector<std::uint8_t> whole, by_parts;
    {
        grphi::file_writer out(whole, {{"k", "v"}}, small_parts(500));  // 10 rows per part
        out.add("w", p);
        out.finish();
    }
    {
        grphi::file_writer out(by_parts, {{"k", "v"}}, small_parts(500));
        out.begin_quantized(grphi::quantized_spec::of("w", p));
        std::vector<grphi::encoded_part> parts(7);
        std::vector<std::thread> workers;
        for (std::size_t i = 0; i < parts.size(); ++i)
            workers.emplace_back([&, i] {
                const auto r0 = static_cast<std::int64_t>(i) * 10;
                parts[i] = grphi::encode_part(p, r0, std::min<std::int64_t>(64, r0 + 10));
            });
        for (auto& w : workers) w.join();
        for (const auto& part : parts) out.append_part(part);
        out.end_quantized();
        out.finish();
    }
    CHECK(whole == by_parts);
}

TEST_CASE("format: the writer refuses a bad sign or an exponent outside its window wherever it sits") {
    const auto good = grphi::quantize<grphi::phi>(gaussian<float>(7, 33, 8));
    for (const std::size_t at : {std::size_t{0}, std::size_t{4 * 33 + 16}, std::size_t{7 * 33 - 1}}) {
        CAPTURE(at);
        const std::size_t channel = at / 33;
        auto sign = good;
        sign.signs[at] = 2;
        CHECK_THROWS_WITH_AS(grphi::encode_part(sign, 0, 7), doctest::Contains("a sign is not -1, 0 or +1"), std::invalid_argument);
        auto below = good;
        below.exponents[at] = static_cast<std::int16_t>(good.window_lo[channel] - 1);
        CHECK_THROWS_WITH_AS(grphi::encode_part(below, 0, 7), doctest::Contains("outside its channel window"), std::invalid_argument);
        auto above = good;
        above.exponents[at] = static_cast<std::int16_t>(good.window_hi[channel] + 1);
        CHECK_THROWS_WITH_AS(grphi::encode_part(above, 0, 7), doctest::Contains("outside its channel window"), std::invalid_argument);
    }
    CHECK_NOTHROW(grphi::encode_part(good, 0, 7));
}

TEST_CASE("format: one and two threads write identical files") {
    const matrix<float> W = gaussian<float>(300, 200, 6);
    const auto p = grphi::quantize<grphi::phi>(W);
    auto write = [&](int threads) {
#if defined(_OPENMP)
        omp_set_num_threads(threads);
#endif
        (void)threads;
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes, {}, small_parts(5000));
        out.add("w", p);
        out.finish();
        return bytes;
    };
    const auto one = write(1), two = write(2);
#if defined(_OPENMP)
    omp_set_num_threads(2);
#endif
    CHECK(one == two);
    const grphi::file_reader in(two.data(), two.size());
    CHECK(in.at("w").sections.size() == 12);  // 25 rows per part
    matrix<float> out;
    in.dequantize("w", out);
    CHECK(same_bits(out, grphi::fake_quantize<grphi::phi>(W)));
}

TEST_CASE("format: a file appears only when finished; an unfinished or failed writer leaves nothing") {
    temp_dir dir;
    const std::string path = (dir.path / "m.grphi").string();
    const auto p = grphi::quantize<grphi::phi>(gaussian<float>(3, 4, 1));
    {
        grphi::file_writer out(path);
        out.add("w", p);
        CHECK(dir.entries() == 1);  // the temporary
        CHECK(!fs::exists(path));
    }
    CHECK(dir.entries() == 0);
    {
        grphi::file_writer out(path);
        out.add("w", p);
        CHECK_THROWS_AS(out.add("w", p), std::invalid_argument);  // duplicate name
        auto bad = p;
        bad.scale_steps[0] = 9;  // the reader refuses steps outside [-8, 8]: never written
        CHECK_THROWS_AS(out.add("bad", bad), std::invalid_argument);
        out.finish();
    }
    CHECK(dir.entries() == 1);
    const grphi::file_reader in(path);
    CHECK(in.version() == 2);
    CHECK(in.tensors().size() == 1);
    CHECK(in.read<float, grphi::phi>("w").exponents == p.exponents);
}

TEST_CASE("format: the reader opens format-1 files, one section per tensor") {
    namespace f1 = grphi_test::format1;
    const std::string path = std::string(GRPHI_SOURCE_DIR) + "/tests/data/format1/mixed.grphi";
    const grphi::file_reader in(path);
    in.verify();
    CHECK(in.version() == 1);
    REQUIRE(in.tensors().size() == 3);
    const auto& a = in.at("a");
    CHECK(a.shape == std::vector<std::uint64_t>{2, 33});
    CHECK(a.source == grphi::dtype::F64);
    CHECK(a.sections.size() == 1);
    const auto spec = f1::files()[5].tensors[0];
    const auto W = f1::weights<double>(spec.rows, spec.cols, spec.seed);
    matrix<double> got;
    in.dequantize("a", got);
    CHECK(same_bits(got, grphi::fake_quantize<grphi::phi>(W, spec.opts)));
}

TEST_CASE("format: forged indexes are refused by name before anything is allocated") {
    const auto p = grphi::quantize<grphi::phi>(gaussian<float>(3, 4, 2));
    std::vector<std::uint8_t> bytes;
    grphi::file_writer out(bytes);
    out.add("w", p);
    out.finish();
    // Re-seals an edited index with valid checksums (footer layout from docs/format.md).
    auto reseal = [](std::vector<std::uint8_t> file, const std::vector<std::uint8_t>& index) {
        const std::uint64_t offset = grphi::detail::load_u64(file.data() + file.size() - 32);
        file.resize(static_cast<std::size_t>(offset));
        file.insert(file.end(), index.begin(), index.end());
        std::vector<std::uint8_t> footer;
        grphi::format::detail::write_footer(offset, index, footer);
        file.insert(file.end(), footer.begin(), footer.end());
        return file;
    };
    const grphi::file_reader honest(bytes.data(), bytes.size());
    auto index_with = [&](auto edit) {
        std::vector<grphi::tensor_info> tensors = honest.tensors();
        edit(tensors[0]);
        return grphi::format::detail::write_index(tensors, {});
    };
    CHECK(open_error(reseal(bytes, index_with([](auto&) {}))) == "no error");
    // Shape products that wrap 2^64: (2^32 + 1) * 2^32 * 2^32.
    CHECK(open_error(reseal(bytes, index_with([](auto& t) { t.shape = {(1ull << 32) + 1, 1ull << 32, 1ull << 32}; })))
              .find("2^62") != std::string::npos);
    // A huge all-zero claim: refused by the element limit, not allocated.
    CHECK(open_error(reseal(bytes, index_with([](auto& t) {
              t.shape = {1ull << 20, 1ull << 20};
              t.sections[0].rows = 1ll << 20;
          }))).find("limit") != std::string::npos);
    grphi::reader_limits tight;
    tight.max_elements = 10;
    CHECK(open_error(bytes, tight).find("limit") != std::string::npos);
    tight = {};
    tight.max_tensors = 0;
    CHECK(open_error(bytes, tight).find("limit") != std::string::npos);
    tight = {};
    tight.max_index_bytes = 4;
    CHECK(open_error(bytes, tight).find("limit") != std::string::npos);
    CHECK(open_error(reseal(bytes, index_with([](auto& t) { t.sections[0].offset += 64; }))).find("section 0") != std::string::npos);
    CHECK(open_error(reseal(bytes, index_with([](auto& t) { t.sections[0].rows = 2; }))).find("rows") != std::string::npos);
    CHECK(open_error(reseal(bytes, index_with([](auto& t) { t.shape = std::vector<std::uint64_t>(9, 1); }))).find("rank") !=
          std::string::npos);
    CHECK(open_error(reseal(bytes, index_with([](auto& t) { t.name = "\xff"; }))).find("UTF-8") != std::string::npos);
    // An unknown required option tag is refused; an unknown optional one is skipped.
    auto with_option = [&](std::uint64_t tag) {
        std::vector<std::uint8_t> record;
        grphi::format::detail::write_record(honest.tensors()[0], record);
        std::vector<std::uint8_t> index = {1};
        // name (2) kind dtype rank(1) 3 4 scalar base "phi"(4) value(8) = offset of the option count
        const std::size_t at = 2 + 1 + 1 + 1 + 2 + 1 + 4 + 8;
        REQUIRE(record[at] == 0);  // default options: no fields
        record[at] = 1;
        record.insert(record.begin() + static_cast<std::ptrdiff_t>(at + 1), {static_cast<std::uint8_t>(tag), 1, 7});
        index.insert(index.end(), record.begin(), record.end());
        index.push_back(0);
        return reseal(bytes, index);
    };
    CHECK(open_error(with_option(99)).find("unknown required option") != std::string::npos);
    CHECK(open_error(with_option(98)) == "no error");
}
