// Fashion-MNIST reader: small IDX files written (gzipped) by the test itself, corrupt and missing
// files, shuffled batches; plus the Debian package's files when they are installed.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's kernels under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <doctest/doctest.h>

#include <grphi/train/fashion_mnist.hpp>

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fm = grphi::fashion_mnist;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test case, removed at the end.
struct temp_dir {
    fs::path path;
    temp_dir() {
        static int counter = 0;
        path = fs::temp_directory_path() / ("grphi_test_fashion_mnist_" + std::to_string(::getpid()) + "_" + std::to_string(++counter));
        fs::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ignored;
        fs::remove_all(path, ignored);
    }
    std::string file(const std::string& name) const { return (path / name).string(); }
};

void put_u32(std::vector<std::uint8_t>& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

std::vector<std::uint8_t> idx_images_bytes(std::uint32_t count, std::uint32_t rows, std::uint32_t cols,
                                           const std::vector<std::uint8_t>& pixels) {
    std::vector<std::uint8_t> out;
    put_u32(out, 0x00000803);
    put_u32(out, count);
    put_u32(out, rows);
    put_u32(out, cols);
    out.insert(out.end(), pixels.begin(), pixels.end());
    return out;
}

std::vector<std::uint8_t> idx_labels_bytes(const std::vector<std::uint8_t>& labels) {
    std::vector<std::uint8_t> out;
    put_u32(out, 0x00000801);
    put_u32(out, static_cast<std::uint32_t>(labels.size()));
    out.insert(out.end(), labels.begin(), labels.end());
    return out;
}

void write_gz(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    if (!bytes.empty()) REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
    REQUIRE(gzclose(f) == Z_OK);
}

void write_plain(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// 5 images of 2x3 with pixel (i, j) = 10 * i + j, labels 0..4.
std::vector<std::uint8_t> sample_pixels() {
    std::vector<std::uint8_t> p;
    for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 6; ++j) p.push_back(static_cast<std::uint8_t>(10 * i + j + (i == 4 && j == 5 ? 210 : 0)));
    return p;
}

std::string message_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("gzipped IDX files round-trip into [0, 1] floats") {
    temp_dir dir;
    write_gz(dir.file("img.gz"), idx_images_bytes(5, 2, 3, sample_pixels()));
    write_gz(dir.file("lab.gz"), idx_labels_bytes({0, 1, 2, 3, 4}));

    const fm::idx_images raw = fm::read_idx_images(dir.file("img.gz"));
    CHECK(raw.count == 5);
    CHECK(raw.rows == 2);
    CHECK(raw.cols == 3);
    CHECK(raw.pixels == sample_pixels());
    CHECK(fm::read_idx_labels(dir.file("lab.gz")) == std::vector<std::uint8_t>{0, 1, 2, 3, 4});

    const fm::dataset unit = fm::load_files(dir.file("img.gz"), dir.file("lab.gz"));
    CHECK(unit.size() == 5);
    CHECK(unit.images.rows() == 5);
    CHECK(unit.images.cols() == 6);
    CHECK(unit.images(1, 2) == doctest::Approx(12.0 / 255.0));
    CHECK(unit.images(4, 5) == doctest::Approx(1.0));  // 255 -> 1
    CHECK(unit.images(0, 0) == 0.0f);

    const fm::dataset standard = fm::load_files(dir.file("img.gz"), dir.file("lab.gz"), fm::normalization::standardize);
    CHECK(standard.images(1, 2) == doctest::Approx((12.0 / 255.0 - 0.2860) / 0.3530));
}

TEST_CASE("uncompressed IDX files are read as well") {
    temp_dir dir;
    write_plain(dir.file("img"), idx_images_bytes(5, 2, 3, sample_pixels()));
    CHECK(fm::read_idx_images(dir.file("img")).pixels == sample_pixels());
}

TEST_CASE("missing files name the path and the Debian package") {
    temp_dir dir;
    const std::string missing = dir.file("nope-images-idx3-ubyte.gz");
    const std::string message = message_of([&] { fm::read_idx_images(missing); });
    CHECK(message.find(missing) != std::string::npos);
    CHECK(message.find("apt-get install dataset-fashion-mnist") != std::string::npos);
    const std::string from_load = message_of([&] { fm::load(fm::split::train, fm::normalization::unit, dir.path.string()); });
    CHECK(from_load.find("train-images-idx3-ubyte.gz") != std::string::npos);
    CHECK(from_load.find("apt-get install dataset-fashion-mnist") != std::string::npos);
}

TEST_CASE("corrupt files throw with a message naming the file") {
    temp_dir dir;
    const auto pixels = sample_pixels();
    auto expect_error = [&](const std::string& path, const std::string& fragment, bool labels) {
        const std::string message = message_of([&] {
            if (labels)
                fm::read_idx_labels(path);
            else
                fm::read_idx_images(path);
        });
        INFO(message);
        CHECK(message.find(path) != std::string::npos);
        CHECK(message.find(fragment) != std::string::npos);
    };

    SUBCASE("wrong magic (a label file read as images)") {
        write_gz(dir.file("a.gz"), idx_labels_bytes({1, 2}));
        expect_error(dir.file("a.gz"), "magic", false);
        write_gz(dir.file("b.gz"), idx_images_bytes(5, 2, 3, pixels));
        expect_error(dir.file("b.gz"), "magic", true);
    }
    SUBCASE("truncated payload") {
        auto bytes = idx_images_bytes(5, 2, 3, pixels);
        bytes.resize(bytes.size() - 1);
        write_gz(dir.file("t.gz"), bytes);
        expect_error(dir.file("t.gz"), "truncated", false);
    }
    SUBCASE("truncated header") {
        write_gz(dir.file("h.gz"), {0, 0, 8, 3, 0, 0});
        expect_error(dir.file("h.gz"), "truncated", false);
    }
    SUBCASE("empty file") {
        write_gz(dir.file("e.gz"), {});
        expect_error(dir.file("e.gz"), "truncated", true);
    }
    SUBCASE("trailing bytes") {
        auto bytes = idx_labels_bytes({1, 2});
        bytes.push_back(7);
        write_gz(dir.file("x.gz"), bytes);
        expect_error(dir.file("x.gz"), "unexpected bytes", true);
    }
    SUBCASE("implausible dimensions") {
        write_gz(dir.file("d.gz"), idx_images_bytes(5, 0, 3, {}));
        expect_error(dir.file("d.gz"), "dimensions", false);
        write_gz(dir.file("huge.gz"), idx_images_bytes(0xffffffffu, 28, 28, {}));
        expect_error(dir.file("huge.gz"), "dimensions", false);
    }
    SUBCASE("a header promising more than the file holds fails without allocating it") {
        write_gz(dir.file("lie.gz"), idx_images_bytes(1u << 20, 28, 28, pixels));
        expect_error(dir.file("lie.gz"), "truncated", false);
    }
    SUBCASE("damaged gzip stream") {
        write_gz(dir.file("z.gz"), idx_images_bytes(5, 2, 3, pixels));
        std::vector<char> raw;
        {
            std::ifstream in(dir.file("z.gz"), std::ios::binary);
            raw.assign(std::istreambuf_iterator<char>(in), {});
        }
        REQUIRE(raw.size() > 20);
        for (std::size_t i = 10; i < raw.size() - 8; ++i) raw[i] = static_cast<char>(raw[i] ^ 0x5a);
        {
            std::ofstream out(dir.file("z.gz"), std::ios::binary);
            out.write(raw.data(), static_cast<std::streamsize>(raw.size()));
        }
        const std::string message = message_of([&] { fm::read_idx_images(dir.file("z.gz")); });
        CHECK(message.find(dir.file("z.gz")) != std::string::npos);
    }
    SUBCASE("images and labels disagree, or a label is out of range") {
        write_gz(dir.file("img.gz"), idx_images_bytes(5, 2, 3, pixels));
        write_gz(dir.file("few.gz"), idx_labels_bytes({0, 1, 2}));
        CHECK_THROWS_AS(fm::load_files(dir.file("img.gz"), dir.file("few.gz")), std::runtime_error);
        write_gz(dir.file("big.gz"), idx_labels_bytes({0, 1, 2, 3, 10}));
        const std::string message = message_of([&] { fm::load_files(dir.file("img.gz"), dir.file("big.gz")); });
        CHECK(message.find("label 10") != std::string::npos);
    }
}

TEST_CASE("batches: every item once per epoch, fixed seed, reshuffled each epoch, partial last batch") {
    fm::dataset data;
    const int n = 103;
    data.images.resize(n, 2);
    data.labels.resize(n);
    for (int i = 0; i < n; ++i) {
        data.images(i, 0) = static_cast<float>(i);
        data.images(i, 1) = static_cast<float>(-i);
        data.labels[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i % 10);
    }
    auto epoch_items = [&](fm::batch_iterator& it, std::vector<std::size_t>* sizes) {
        std::vector<int> items;
        it.start_epoch();
        while (it.next()) {
            if (sizes) sizes->push_back(it.labels().size());
            for (Eigen::Index r = 0; r < it.images().rows(); ++r) {
                const int item = static_cast<int>(it.images()(r, 0));
                CHECK(it.images()(r, 1) == -static_cast<float>(item));
                CHECK(it.labels()[static_cast<std::size_t>(r)] == item % 10);
                items.push_back(item);
            }
        }
        return items;
    };
    fm::batch_iterator a(data, 10, 42), b(data, 10, 42), c(data, 10, 43);
    CHECK(a.batches_per_epoch() == 11);
    std::vector<std::size_t> sizes;
    const auto first = epoch_items(a, &sizes);
    CHECK(sizes.size() == 11);
    CHECK(sizes.back() == 3);
    auto sorted = first;
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < n; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
    CHECK(epoch_items(b, nullptr) == first);  // same seed, same order
    CHECK(epoch_items(c, nullptr) != first);  // another seed, another order
    CHECK(epoch_items(a, nullptr) != first);  // a new epoch reshuffles
    std::vector<int> identity(n);
    for (int i = 0; i < n; ++i) identity[static_cast<std::size_t>(i)] = i;
    CHECK(first != identity);

    fm::batch_iterator dropping(data, 10, 42, true, true);
    std::vector<std::size_t> kept;
    CHECK(epoch_items(dropping, &kept).size() == 100);
    CHECK(kept.size() == 10);
    fm::batch_iterator in_order(data, 10, 42, false);
    CHECK(epoch_items(in_order, nullptr) == identity);
    CHECK_THROWS_AS(fm::batch_iterator(data, 0, 1), std::invalid_argument);
}

TEST_CASE("the Debian dataset-fashion-mnist files, when installed") {
    const std::string probe = std::string(fm::default_directory) + "/t10k-labels-idx1-ubyte.gz";
    if (!fs::exists(probe)) {
        MESSAGE("skipped: " << probe << " not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    const fm::dataset train = fm::load(fm::split::train);
    const fm::dataset test = fm::load(fm::split::test);
    CHECK(train.images.rows() == 60000);
    CHECK(train.images.cols() == 784);
    CHECK(train.size() == 60000);
    CHECK(test.images.rows() == 10000);
    CHECK(test.size() == 10000);
    CHECK(train.images.minCoeff() == 0.0f);
    CHECK(train.images.maxCoeff() == 1.0f);
    CHECK(static_cast<double>(train.images.mean()) == doctest::Approx(fm::train_mean).epsilon(1e-3));
    std::vector<long> per_class(10, 0);
    for (auto label : train.labels) {
        REQUIRE(label < 10);
        ++per_class[label];
    }
    for (long count : per_class) CHECK(count == 6000);  // Fashion-MNIST is balanced
}
