// Does phi help my weights? Rate-distortion of log bases (phi, 2, sqrt2, a user base 2^(1/3)),
// uniform int-N and k-means on synthetic and trained tensors, every number from a real coded stream.
//
// Tensors: Gaussian (sigma 0.02) and Laplacian (same standard deviation) of --size x --size, plus the
// TinyNet weights that `tinynet_qat --save-weights DIR` writes (DIR/fc1.npy 256x784, DIR/fc2.npy 10x256)
// when --weights DIR is given; for those, the Fashion-MNIST test accuracy of the network with that one
// layer replaced by its rebuilt weights.
// Output: a markdown table per tensor on stdout; compare_tables.md, compare.csv and one SVG plot per tensor in --out.
//
// Usage: compare [--size N=1024] [--out DIR=compare-out] [--weights DIR] [--data DIR] [--seed N=1]
// The reference size of issue 5 is --size 4096 (about 2 minutes of CPU; the 1024 default about 10 s).
#include <grphi/compare.hpp>
#include <grphi/fashion_mnist.hpp>
#include <grphi/npy.hpp>

#include <Eigen/Core>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fm = grphi::fashion_mnist;
using matrix = grphi::row_matrix<float>;

// A user base: 2^(1/3), three levels per octave (finer than sqrt2).
struct cube_root_two {
    static constexpr long double value = 1.2599210498948731647672106072782284L;
    static constexpr const char* name = "cbrt2";
};

struct settings {
    int size = 1024;
    std::string out = "compare-out";
    std::string weights;
    std::string data = fm::default_directory;
    std::uint64_t seed = 1;
};

int parse_int(const std::string& flag, const char* text, int lo, int hi) {
    char* end = nullptr;
    const long v = std::strtol(text, &end, 10);
    if (!end || *end != '\0' || v < lo || v > hi)
        throw std::invalid_argument(flag + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                    "], got '" + text + "'");
    return static_cast<int>(v);
}

settings parse(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--size")
            s.size = parse_int(flag, value(), 1, 16384);
        else if (flag == "--out")
            s.out = value();
        else if (flag == "--weights")
            s.weights = value();
        else if (flag == "--data")
            s.data = value();
        else if (flag == "--seed")
            s.seed = static_cast<std::uint64_t>(parse_int(flag, value(), 0, 1 << 30));
        else if (flag == "--help" || flag == "-h") {
            std::printf("usage: compare [--size N=1024] [--out DIR=compare-out] [--weights DIR] [--data DIR] [--seed N=1]\n");
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown flag " + flag + " (try --help)");
        }
    }
    return s;
}

matrix gaussian(int n, double sigma, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, sigma);
    matrix W(n, n);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>(normal(rng));
    return W;
}

// Laplacian with standard deviation sigma: scale b = sigma / sqrt(2).
matrix laplacian(int n, double sigma, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> magnitude(std::sqrt(2.0) / sigma);
    matrix W(n, n);
    for (Eigen::Index i = 0; i < W.size(); ++i)
        W.data()[i] = static_cast<float>((rng() >> 63 ? 1.0 : -1.0) * magnitude(rng));
    return W;
}

matrix load_npy(const std::string& path) {
    const grphi::npy::reader in(path);
    matrix W(static_cast<Eigen::Index>(in.info().rows()), static_cast<Eigen::Index>(in.info().cols()));
    in.read_rows(0, in.info().rows(), W.data());
    return W;
}

matrix tinynet_hidden(const fm::dataset& test, const matrix& fc1) { return (test.images * fc1.transpose()).cwiseMax(0.0f); }

// TinyNet (784-256-10, no bias, ReLU) test accuracy from the hidden activations and the fc2 weights.
double tinynet_accuracy(const fm::dataset& test, const matrix& hidden, const matrix& fc2) {
    const matrix logits = hidden * fc2.transpose();
    std::size_t correct = 0;
    for (Eigen::Index i = 0; i < logits.rows(); ++i) {
        Eigen::Index best = 0;
        logits.row(i).maxCoeff(&best);
        correct += static_cast<std::size_t>(best) == test.labels[static_cast<std::size_t>(i)];
    }
    return static_cast<double>(correct) / static_cast<double>(logits.rows());
}

struct tensor {
    std::string name;
    std::string file;  // short name for the SVG file
    matrix weights;
    std::optional<int> layer;  // 0 = fc1, 1 = fc2 of the TinyNet
};

void print_reference_check(const std::vector<grphi::comparison_row>& rows) {
    auto show = [&](const char* method, const char* reference) {
        for (const auto& r : rows)
            if (r.method == method)
                std::printf("  %-22s measured %6.2f dB at H(symbol) %.3f bits, coded %.3f bits/weight   (issue 5: %s)\n",
                            method, r.sqnr_db, r.symbol_entropy, r.coded_bits_per_weight, reference);
    };
    show("phi levels=all", "17.1 dB at H(e) 3.05");
    show("two levels=all", "13.7 dB at H(e) 2.54");
    show("int4 per-channel", "16.1 dB at 2.96 bits");
}

}  // namespace

int main(int argc, char** argv) try {
    const settings s = parse(argc, argv);
    std::filesystem::create_directories(s.out);

    std::vector<tensor> tensors;
    const std::string side = std::to_string(s.size) + "x" + std::to_string(s.size);
    tensors.push_back({"gaussian sigma=0.02 " + side, "gaussian", gaussian(s.size, 0.02, s.seed), std::nullopt});
    tensors.push_back({"laplacian sigma=0.02 " + side, "laplacian", laplacian(s.size, 0.02, s.seed + 1), std::nullopt});

    std::optional<fm::dataset> test_set;
    matrix fc1, fc2, fp32_hidden;  // fp32_hidden: fc1's activations on the test set, reused for fc2's rows
    if (!s.weights.empty()) {
        fc1 = load_npy(s.weights + "/fc1.npy");
        fc2 = load_npy(s.weights + "/fc2.npy");
        if (fc1.rows() != 256 || fc1.cols() != 784 || fc2.rows() != 10 || fc2.cols() != 256)
            throw std::runtime_error(s.weights + ": expected fc1 256x784 and fc2 10x256 (tinynet_qat --save-weights)");
        tensors.push_back({"tinynet fc1 256x784", "tinynet_fc1", fc1, 0});
        tensors.push_back({"tinynet fc2 10x256", "tinynet_fc2", fc2, 1});
        try {
            test_set = fm::load(fm::split::test, fm::normalization::unit, s.data);
            fp32_hidden = tinynet_hidden(*test_set, fc1);
            std::printf("TinyNet FP32 test accuracy: %.2f %%\n\n", 100.0 * tinynet_accuracy(*test_set, fp32_hidden, fc2));
        } catch (const std::exception& e) {
            std::printf("no accuracy column: %s\n\n", e.what());
        }
    }

    const auto methods = grphi::default_methods<float, cube_root_two>();
    std::vector<grphi::comparison_row> all;
    for (const auto& t : tensors) {
        const auto start = std::chrono::steady_clock::now();
        auto accuracy_of = [&](grphi::comparison_row& row, const matrix& rebuilt) {
            if (t.layer && test_set)
                row.accuracy = *t.layer == 0 ? tinynet_accuracy(*test_set, tinynet_hidden(*test_set, rebuilt), fc2)
                                              : tinynet_accuracy(*test_set, fp32_hidden, rebuilt);
        };
        const std::vector<grphi::comparison_row> rows = grphi::compare(t.weights, methods, t.name, accuracy_of);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf("## %s (%zu weights, %zu methods, %.1f s)\n\n", t.name.c_str(), static_cast<std::size_t>(t.weights.size()),
                    methods.size(), seconds);
        std::ostringstream table;
        grphi::write_markdown(table, rows);
        std::printf("%s\n", table.str().c_str());
        if (t.file == "gaussian") {
            std::printf("Reference points (Gaussian; issue 5 measured them at 4096x4096):\n");
            print_reference_check(rows);
            std::printf("\n");
        }
        std::ofstream svg(s.out + "/compare_" + t.file + ".svg");
        grphi::write_svg(svg, rows, "Rate-distortion: " + t.name);
        if (!svg) throw std::runtime_error("cannot write " + s.out + "/compare_" + t.file + ".svg");
        all.insert(all.end(), rows.begin(), rows.end());
    }

    std::ofstream csv(s.out + "/compare.csv");
    grphi::write_csv(csv, all);
    std::ofstream md(s.out + "/compare_tables.md");
    for (const auto& t : tensors) {
        std::vector<grphi::comparison_row> rows;
        for (const auto& r : all)
            if (r.tensor == t.name) rows.push_back(r);
        md << "## " << t.name << "\n\n";
        grphi::write_markdown(md, rows);
        md << "\n![rate-distortion](compare_" << t.file << ".svg)\n\n";
    }
    if (!csv || !md) throw std::runtime_error("cannot write the results in " + s.out);
    std::printf("wrote %s/compare.csv, %s/compare_tables.md and one compare_<tensor>.svg per tensor\n", s.out.c_str(), s.out.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "compare: %s\n", e.what());
    return 1;
}
