// Does phi help my weights? Rate-distortion of grphi's log formats (phi, 2, sqrt2, a user base
// 2^(1/3); per channel, clustered, and block-scaled from the core's options::block_size) against the
// formats people quantize with today (Q4_0, Q8_0, Q4_K, NF4, IQ4_NL, MXFP4, NVFP4, FP8 E4M3/E5M2, APoT,
// plain and with a scale search; low rank + quantization), uniform int-N and k-means, on synthetic and
// trained tensors. Every number comes from a real quantize -> code -> decode -> rebuild path.
//
// Tensors: Gaussian (sigma 0.02), Laplacian and Student-t(3) (same standard deviation) of --size x
// --size; with --weights DIR the TinyNet layers `tinynet_qat --save-weights DIR` writes (DIR/fc1.npy
// 256x784, DIR/fc2.npy 10x256), each with the Fashion-MNIST test accuracy of the network with that one
// layer rebuilt, and the whole TinyNet (both layers rebuilt by the same method); with --cnn-epochs N
// a small CNN (conv 1->8, conv 8->16, linear 784->10) trained N epochs, all three layers rebuilt.
// The networks run PTQ for every block method and, with --qat-epochs N, QAT (STE, N epochs from the
// FP32 weights) for phi-block, NF4 and Q4_0 (rows `<method>_qat`).
// Output: a markdown table per tensor on stdout; in --out: compare.csv
// (tensor,method,fixed_bits_per_weight,coded_bits_per_weight,sqnr_db,accuracy), compare_tables.md,
// compare_key.md (the 4.25-4.5 bit formats side by side), and per tensor two SVG plots, SQNR against
// fixed bits (compare_<tensor>_fixed.svg) and against coded bits (compare_<tensor>.svg).
//
// Usage: compare [--size N=512] [--out DIR=compare-out] [--weights DIR] [--data DIR] [--seed N=1]
//                [--qat-epochs N=0] [--cnn-epochs N=0] [--train-limit N=0 (all)] [--quick]
// --quick: the block formats only (no per-channel log, int-N, k-means, low-rank rows).
// The default size keeps ./scripts/demo short (about a minute of CPU); docs/compare.md uses --size 1024.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <grphi/train/autodiff.hpp>
#include <grphi/baselines/catalog.hpp>
#include <grphi/baselines/compare.hpp>
#include <grphi/train/fashion_mnist.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/train/optim.hpp>
#include <grphi/train/reproducible.hpp>

#include "compare_report.hpp"

#include <Eigen/Core>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

namespace fm = grphi::fashion_mnist;
namespace gb = grphi::baselines;
using matrix = grphi::row_matrix<float>;
using method = grphi::comparison_method<float>;

// A user base: 2^(1/3), three levels per octave (finer than sqrt2).
struct cube_root_two {
    static constexpr long double value = 1.2599210498948731647672106072782284L;
    static constexpr const char* name = "cbrt2";
};

struct settings {
    int size = 512;
    std::string out = "compare-out";
    std::string weights;
    std::string data = fm::default_directory;
    std::uint64_t seed = 1;
    int qat_epochs = 0;
    int cnn_epochs = 0;
    std::size_t train_limit = 0;
    bool quick = false;
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
        else if (flag == "--qat-epochs")
            s.qat_epochs = parse_int(flag, value(), 0, 100);
        else if (flag == "--cnn-epochs")
            s.cnn_epochs = parse_int(flag, value(), 0, 100);
        else if (flag == "--train-limit")
            s.train_limit = static_cast<std::size_t>(parse_int(flag, value(), 0, 60000));
        else if (flag == "--quick")
            s.quick = true;
        else if (flag == "--help" || flag == "-h") {
            std::printf("usage: compare [--size N=512] [--out DIR=compare-out] [--weights DIR] [--data DIR] [--seed N=1]\n"
                        "               [--qat-epochs N=0] [--cnn-epochs N=0] [--train-limit N=0] [--quick]\n");
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown flag " + flag + " (try --help)");
        }
    }
    return s;
}

template <class Draw>
matrix random_matrix(int n, std::uint64_t seed, Draw draw) {
    std::mt19937_64 rng(seed);
    matrix W(n, n);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>(draw(rng));
    return W;
}

matrix gaussian(int n, double sigma, std::uint64_t seed) {
    std::normal_distribution<double> normal(0.0, sigma);
    return random_matrix(n, seed, [&](std::mt19937_64& rng) { return normal(rng); });
}

// Laplacian with standard deviation sigma: scale b = sigma / sqrt(2).
matrix laplacian(int n, double sigma, std::uint64_t seed) {
    std::exponential_distribution<double> magnitude(std::sqrt(2.0) / sigma);
    return random_matrix(n, seed, [&](std::mt19937_64& rng) { return (rng() >> 63 ? 1.0 : -1.0) * magnitude(rng); });
}

// Student-t with 3 degrees of freedom (variance 3), scaled to standard deviation sigma: heavy tails.
matrix student_t3(int n, double sigma, std::uint64_t seed) {
    std::student_t_distribution<double> t(3.0);
    return random_matrix(n, seed, [&](std::mt19937_64& rng) { return sigma / std::sqrt(3.0) * t(rng); });
}

matrix load_npy(const std::string& path) {
    const grphi::npy::reader in(path);
    matrix W(static_cast<Eigen::Index>(in.info().rows()), static_cast<Eigen::Index>(in.info().cols()));
    in.read_rows(0, in.info().rows(), W.data());
    return W;
}

double fraction_correct(const matrix& logits, const std::vector<std::uint8_t>& labels) {
    std::size_t correct = 0;
    for (Eigen::Index i = 0; i < logits.rows(); ++i) {
        Eigen::Index best = 0;
        logits.row(i).maxCoeff(&best);
        correct += static_cast<std::size_t>(best) == labels[static_cast<std::size_t>(i)];
    }
    return static_cast<double>(correct) / static_cast<double>(logits.rows());
}

matrix tinynet_hidden(const fm::dataset& test, const matrix& fc1) { return (test.images * fc1.transpose()).cwiseMax(0.0f); }

// ---------------------------------------------------------------------------------------------
// Training (QAT and the CNN): AdamW, batch 64, pixels in [0, 1], as tinynet_qat.

template <class Net>
void train(Net& net, const fm::dataset& train_set, int epochs, double lr, std::uint64_t seed, const std::string& label) {
    grphi::optim::adamw<float> opt(net.parameters(), {lr});
    fm::batch_iterator batches(train_set, 64, seed);
    grphi::ad::tape<float> t;
    net.train(true);
    const auto start = std::chrono::steady_clock::now();
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        batches.start_epoch();
        while (batches.next()) {
            t.clear();
            opt.zero_grad();
            const grphi::ad::var loss = grphi::ad::softmax_cross_entropy(t, net.forward(t, net.input(t, batches.images())), batches.labels());
            t.backward(loss);
            opt.step();
        }
    }
    net.train(false);
    std::printf("  trained %s: %d epoch(s), %.1f s\n", label.c_str(), epochs,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    std::fflush(stdout);
}

template <class Net>
double network_accuracy(Net& net, const fm::dataset& data) {
    grphi::ad::tape<float> t;
    std::size_t correct = 0;
    const Eigen::Index chunk = 500;
    for (Eigen::Index start = 0; start < data.images.rows(); start += chunk) {
        const Eigen::Index n = std::min(chunk, data.images.rows() - start);
        t.clear();
        const matrix images = data.images.middleRows(start, n);
        const grphi::ad::var logits = net.forward(t, net.input(t, images));
        const std::vector<int> labels(data.labels.begin() + start, data.labels.begin() + start + n);
        correct += static_cast<std::size_t>(grphi::nn::count_correct(t.value(logits), labels));
    }
    return static_cast<double>(correct) / static_cast<double>(data.images.rows());
}

struct tinynet {
    grphi::nn::linear fc1{784, 256, false, 1};
    grphi::nn::linear fc2{256, 10, false, 2};
    grphi::ad::var input(grphi::ad::tape<float>& t, const matrix& x) { return t.constant_ref(x); }
    grphi::ad::var forward(grphi::ad::tape<float>& t, grphi::ad::var x) { return fc2.forward(t, grphi::ad::relu(t, fc1.forward(t, x))); }
    std::vector<grphi::ad::parameter<float>*> parameters() { return {&fc1.weight, &fc2.weight}; }
    std::vector<grphi::ad::parameter<float>*> weights() { return {&fc1.weight, &fc2.weight}; }
    void quantize_with(const std::optional<grphi::nn::weight_quantizer>& q) { fc1.quantizer = fc2.quantizer = q; }
    void train(bool on) {
        fc1.train(on);
        fc2.train(on);
    }
};

// conv2d_stats' CNN: conv 1->8 3x3 pad 1, ReLU, max-pool; conv 8->16, ReLU, max-pool; linear 784->10.
struct small_cnn {
    grphi::nn::conv2d conv1{1, 8, 3, 1, 1, true, 11};
    grphi::nn::conv2d conv2{8, 16, 3, 1, 1, true, 12};
    grphi::nn::linear fc{16 * 7 * 7, 10, true, 13};
    grphi::ad::var input(grphi::ad::tape<float>& t, const matrix& x) { return t.constant_ref(x, 1, 28, 28); }
    grphi::ad::var forward(grphi::ad::tape<float>& t, grphi::ad::var x) {
        x = grphi::ad::max_pool2x2(t, grphi::ad::relu(t, conv1.forward(t, x)));
        x = grphi::ad::max_pool2x2(t, grphi::ad::relu(t, conv2.forward(t, x)));
        return fc.forward(t, grphi::ad::flatten(t, x));
    }
    std::vector<grphi::ad::parameter<float>*> parameters() {
        std::vector<grphi::ad::parameter<float>*> all;
        for (auto* p : conv1.parameters()) all.push_back(p);
        for (auto* p : conv2.parameters()) all.push_back(p);
        for (auto* p : fc.parameters()) all.push_back(p);
        return all;
    }
    std::vector<grphi::ad::parameter<float>*> weights() { return {&conv1.weight, &conv2.weight, &fc.weight}; }
    void quantize_with(const std::optional<grphi::nn::weight_quantizer>& q) { conv1.quantizer = conv2.quantizer = fc.quantizer = q; }
    void train(bool on) {
        conv1.train(on);
        conv2.train(on);
        fc.train(on);
    }
};

// ---------------------------------------------------------------------------------------------
// Methods.

// Every block format at 4-8.5 fixed bits: the baselines (plain, searched) and grphi's phi/2 blocks.
std::vector<method> block_methods() {
    std::vector<method> m;
    grphi::add_block_baselines(m);
    grphi::add_block_methods<float, grphi::phi>(m);
    m.push_back(grphi::block_method<float, grphi::two>(32, grphi::block_scale::exponent, false));
    m.push_back(grphi::block_method<float, grphi::two>(32, grphi::block_scale::fp16, true));
    return m;
}

// Low rank at 4.5 bits/weight: Q8_0 factors, Q4_0 factors; and a rank with 0.25 bits of Q8_0 factors
// under a Q4_0 residual.
void add_low_rank(std::vector<method>& m, Eigen::Index rows, Eigen::Index cols) {
    const method q8 = grphi::block_baseline_method<float>(gb::baseline::q8_0);
    const method q4 = grphi::block_baseline_method<float>(gb::baseline::q4_0);
    m.push_back(grphi::low_rank_method(grphi::low_rank_rank(rows, cols, 4.5, 8.5), q8));
    m.push_back(grphi::low_rank_method(grphi::low_rank_rank(rows, cols, 4.5, 4.5), q4));
    if (const Eigen::Index r = grphi::low_rank_rank(rows, cols, 0.25, 8.5); r > 0)
        m.push_back(grphi::low_rank_method(r, q8, std::optional<method>(q4)));
}

std::vector<method> tensor_methods(const settings& s, Eigen::Index rows, Eigen::Index cols) {
    std::vector<method> m = s.quick ? std::vector<method>{} : grphi::default_methods<float, cube_root_two>();
    for (auto& b : block_methods()) m.push_back(std::move(b));
    if (!s.quick) add_low_rank(m, rows, cols);
    return m;
}

// The QAT methods: grphi's phi block (exponent scales per 32), NF4, Q4_0 (the STE quantizer and the
// comparison method that measures the trained weights).
struct qat_method {
    std::string name;
    grphi::nn::weight_quantizer quantizer;
    method measure;
};

std::vector<qat_method> qat_methods() {
    grphi::options phi_block;
    phi_block.levels = 8;
    phi_block.block_size = 32;
    return {{"phi_block32", grphi::nn::weight_quantizer::make<grphi::phi>(phi_block),
             grphi::block_method<float, grphi::phi>(32, grphi::block_scale::exponent, false)},
            {"nf4",
             grphi::nn::weight_quantizer::from_function("nf4", &gb::fake_quantize<gb::baseline::nf4, false, float>,
                                                        &gb::fake_quantize<gb::baseline::nf4, false, double>),
             grphi::block_baseline_method<float>(gb::baseline::nf4)},
            {"q4_0",
             grphi::nn::weight_quantizer::from_function("q4_0", &gb::fake_quantize<gb::baseline::q4_0, false, float>,
                                                        &gb::fake_quantize<gb::baseline::q4_0, false, double>),
             grphi::block_baseline_method<float>(gb::baseline::q4_0)}};
}

// ---------------------------------------------------------------------------------------------
// Networks: every weight layer rebuilt by the same method, one row per method.

struct layered_row_parts {
    double weights = 0, signal = 0, noise = 0, coded_bits = 0, fixed_bits = 0, entropy_bits = 0, symbol_bits = 0, symbols = 0;
};

grphi::comparison_row network_row(const std::string& tensor, const method& m, const std::vector<matrix>& layers,
                                  std::vector<matrix>& rebuilt) {
    layered_row_parts parts;
    rebuilt.clear();
    for (const matrix& W : layers) {
        const grphi::method_output<float> out = m.run(W);
        const Eigen::ArrayXd d = (W.cast<double>() - out.rebuilt.cast<double>()).array().reshaped();
        parts.weights += static_cast<double>(W.size());
        parts.signal += W.cast<double>().squaredNorm();
        parts.noise += d.square().sum();
        parts.coded_bits += 8.0 * static_cast<double>(out.coded_bytes);
        parts.fixed_bits += out.fixed_bits;
        parts.entropy_bits += out.entropy_bits;
        parts.symbol_bits += out.symbol_entropy * static_cast<double>(out.symbols);
        parts.symbols += static_cast<double>(out.symbols);
        rebuilt.push_back(out.rebuilt);
    }
    grphi::comparison_row row;
    row.tensor = tensor;
    row.family = m.family;
    row.method = m.name;
    row.weights = static_cast<std::size_t>(parts.weights);
    row.coded_bytes = static_cast<std::size_t>(parts.coded_bits / 8);
    row.coded_bits_per_weight = parts.coded_bits / parts.weights;
    row.fixed_bits_per_weight = parts.fixed_bits / parts.weights;
    row.entropy_bits_per_weight = parts.entropy_bits / parts.weights;
    row.symbol_entropy = parts.symbols > 0 ? parts.symbol_bits / parts.symbols : 0;
    row.symbols = static_cast<std::size_t>(parts.symbols);
    row.mse = parts.noise / parts.weights;
    row.sqnr_db = parts.noise > 0 ? 10 * std::log10(parts.signal / parts.noise) : INFINITY;
    return row;
}

// PTQ rows for every method, and QAT rows when epochs > 0. `net` holds the FP32 weights on entry and on exit.
template <class Net>
std::vector<grphi::comparison_row> network_rows(const std::string& tensor, Net& net, const std::vector<method>& methods,
                                                const fm::dataset* train_set, const fm::dataset& test_set, int qat_epochs,
                                                std::uint64_t seed) {
    std::vector<matrix> fp32;
    for (auto* w : net.weights()) fp32.push_back(w->value);
    auto accuracy_with = [&](const std::vector<matrix>& layers) {
        const auto params = net.weights();
        for (std::size_t i = 0; i < params.size(); ++i) params[i]->value = layers[i];
        const double a = network_accuracy(net, test_set);
        for (std::size_t i = 0; i < params.size(); ++i) params[i]->value = fp32[i];
        return a;
    };
    std::vector<grphi::comparison_row> rows;
    std::printf("  %s FP32 test accuracy: %.2f %%\n", tensor.c_str(), 100.0 * accuracy_with(fp32));
    std::vector<matrix> rebuilt;
    for (const method& m : methods) {
        grphi::comparison_row row = network_row(tensor, m, fp32, rebuilt);
        row.accuracy = accuracy_with(rebuilt);
        rows.push_back(std::move(row));
    }
    if (qat_epochs > 0 && train_set)
        for (const qat_method& q : qat_methods()) {
            Net trained = net;
            trained.quantize_with(q.quantizer);
            train(trained, *train_set, qat_epochs, 3e-4, seed + 1, tensor + " QAT " + q.name);
            trained.quantize_with(std::nullopt);
            std::vector<matrix> latent;
            for (auto* w : trained.weights()) latent.push_back(w->value);
            grphi::comparison_row row = network_row(tensor, q.measure, latent, rebuilt);
            row.method += "_qat";
            row.family = "QAT";
            const auto params = trained.weights();
            for (std::size_t i = 0; i < params.size(); ++i) params[i]->value = rebuilt[i];
            row.accuracy = network_accuracy(trained, test_set);
            rows.push_back(std::move(row));
        }
    return rows;
}

// The key table: the 4.25-4.5 bit formats on every tensor (SQNR dB, accuracy % when measured).
void write_key_table(std::ostream& os, const std::vector<grphi::comparison_row>& rows, const std::vector<std::string>& tensors) {
    const std::vector<std::string> keys = {"q4_0",          "q4_0_search",          "nf4",
                                           "nf4_search",    "mxfp4",                "mxfp4_search",
                                           "nvfp4",         "nvfp4_search",         "phi_block32",
                                           "phi_block32_search", "phi_block32_fit_search", "phi_block32_fp16_search",
                                           "phi_block16_e4m3_search", "phi_block32_qat", "nf4_qat",
                                           "q4_0_qat"};
    os << "| method | fixed bits/weight |";
    for (const auto& t : tensors) os << ' ' << t << " |";
    os << "\n|---|---:|";
    for (std::size_t i = 0; i < tensors.size(); ++i) os << "---:|";
    os << '\n';
    for (const auto& key : keys) {
        std::ostringstream line;
        bool any = false;
        std::string bits = "-";
        for (const auto& t : tensors) {
            std::string cell = "-";
            for (const auto& r : rows)
                if (r.tensor == t && r.method == key) {
                    cell = compare_report::fixed(r.sqnr_db, 2) + " dB";
                    if (r.accuracy) cell += ", " + compare_report::fixed(100 * *r.accuracy, 2) + " %";
                    if (bits == "-") bits = compare_report::fixed(r.fixed_bits_per_weight, 3);  // on the first tensor that has it
                    any = true;
                }
            line << ' ' << cell << " |";
        }
        if (any) os << "| " << key << " | " << bits << " |" << line.str() << '\n';
    }
}

struct tensor {
    std::string name;
    std::string file;  // short name for the SVG files
    matrix weights;
    std::optional<int> layer;  // 0 = fc1, 1 = fc2 of the TinyNet
};

void write_plots(const settings& s, const std::string& file, const std::string& title,
                 const std::vector<grphi::comparison_row>& rows) {
    for (const auto axis : {compare_report::rate_axis::coded_bits, compare_report::rate_axis::fixed_bits}) {
        const bool fixed = axis == compare_report::rate_axis::fixed_bits;
        const std::string path = s.out + "/compare_" + file + (fixed ? "_fixed" : "") + ".svg";
        std::ofstream svg(path);
        compare_report::write_svg(svg, rows, "Rate-distortion: " + title, axis, fixed ? 9.0 : 10.0);
        if (!svg) throw std::runtime_error("cannot write " + path);
    }
}

}  // namespace

int main(int argc, char** argv) try {
    const settings s = parse(argc, argv);
    grphi::train::pin_eigen_blocking();  // the same trained CNN on any x86-64 CPU (see reproducible.hpp)
    std::filesystem::create_directories(s.out);

    std::vector<tensor> tensors;
    const std::string side = std::to_string(s.size) + "x" + std::to_string(s.size);
    tensors.push_back({"gaussian " + side, "gaussian", gaussian(s.size, 0.02, s.seed), std::nullopt});
    tensors.push_back({"laplacian " + side, "laplacian", laplacian(s.size, 0.02, s.seed + 1), std::nullopt});
    tensors.push_back({"student-t3 " + side, "student_t3", student_t3(s.size, 0.02, s.seed + 2), std::nullopt});

    std::optional<fm::dataset> test_set, train_set;
    matrix fc1, fc2, fp32_hidden;  // fp32_hidden: fc1's activations on the test set, reused for fc2's rows
    const bool want_data = !s.weights.empty() || s.cnn_epochs > 0;
    if (want_data) {
        try {
            test_set = fm::load(fm::split::test, fm::normalization::unit, s.data);
            if (s.qat_epochs > 0 || s.cnn_epochs > 0) {
                train_set = fm::load(fm::split::train, fm::normalization::unit, s.data);
                if (s.train_limit > 0 && s.train_limit < train_set->size()) {
                    train_set->images.conservativeResize(static_cast<Eigen::Index>(s.train_limit), Eigen::NoChange);
                    train_set->labels.resize(s.train_limit);
                }
            }
        } catch (const std::exception& e) {
            std::printf("no accuracy column: %s\n\n", e.what());
        }
    }
    if (!s.weights.empty()) {
        fc1 = load_npy(s.weights + "/fc1.npy");
        fc2 = load_npy(s.weights + "/fc2.npy");
        if (fc1.rows() != 256 || fc1.cols() != 784 || fc2.rows() != 10 || fc2.cols() != 256)
            throw std::runtime_error(s.weights + ": expected fc1 256x784 and fc2 10x256 (tinynet_qat --save-weights)");
        tensors.push_back({"tinynet fc1 256x784", "tinynet_fc1", fc1, 0});
        tensors.push_back({"tinynet fc2 10x256", "tinynet_fc2", fc2, 1});
        if (test_set) {
            fp32_hidden = tinynet_hidden(*test_set, fc1);
            std::printf("TinyNet FP32 test accuracy: %.2f %%\n\n", 100.0 * fraction_correct(fp32_hidden * fc2.transpose(), test_set->labels));
        }
    }

    std::vector<grphi::comparison_row> all;
    std::vector<std::string> names;
    for (const auto& t : tensors) {
        const auto start = std::chrono::steady_clock::now();
        auto accuracy_of = [&](grphi::comparison_row& row, const matrix& rebuilt) {
            if (t.layer && test_set)
                row.accuracy = *t.layer == 0 ? fraction_correct(tinynet_hidden(*test_set, rebuilt) * fc2.transpose(), test_set->labels)
                                              : fraction_correct(fp32_hidden * rebuilt.transpose(), test_set->labels);
        };
        const std::vector<method> methods = tensor_methods(s, t.weights.rows(), t.weights.cols());
        const std::vector<grphi::comparison_row> rows = grphi::compare(t.weights, methods, t.name, accuracy_of);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::printf("## %s (%zu weights, %zu methods, %.1f s)\n\n", t.name.c_str(), static_cast<std::size_t>(t.weights.size()),
                    methods.size(), seconds);
        std::ostringstream table;
        compare_report::write_markdown(table, rows);
        std::printf("%s\n", table.str().c_str());
        std::fflush(stdout);
        write_plots(s, t.file, t.name, rows);
        all.insert(all.end(), rows.begin(), rows.end());
        names.push_back(t.name);
    }

    // Whole networks: TinyNet from --weights, the CNN trained here.
    struct network_result {
        std::string name, file;
    };
    std::vector<network_result> networks;
    if (test_set && !s.weights.empty()) {
        const auto start = std::chrono::steady_clock::now();
        tinynet net;
        net.fc1.weight.value = fc1;
        net.fc2.weight.value = fc2;
        net.train(false);
        const std::string name = "tinynet fc1+fc2";
        const auto rows = network_rows(name, net, block_methods(), train_set ? &*train_set : nullptr, *test_set, s.qat_epochs, s.seed);
        std::printf("## %s (%.1f s)\n\n", name.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        std::ostringstream table;
        compare_report::write_markdown(table, rows);
        std::printf("%s\n", table.str().c_str());
        write_plots(s, "tinynet", name, rows);
        all.insert(all.end(), rows.begin(), rows.end());
        names.push_back(name);
    }
    if (test_set && train_set && s.cnn_epochs > 0) {
        const auto start = std::chrono::steady_clock::now();
        small_cnn net;
        train(net, *train_set, s.cnn_epochs, 1e-3, s.seed, "CNN FP32");
        const std::string name = "cnn conv1+conv2+fc";
        const auto rows = network_rows(name, net, block_methods(), &*train_set, *test_set, s.qat_epochs, s.seed);
        std::printf("## %s (%.1f s)\n\n", name.c_str(), std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        std::ostringstream table;
        compare_report::write_markdown(table, rows);
        std::printf("%s\n", table.str().c_str());
        write_plots(s, "cnn", name, rows);
        all.insert(all.end(), rows.begin(), rows.end());
        names.push_back(name);
    }

    std::ofstream csv(s.out + "/compare.csv");
    compare_report::write_csv(csv, all);
    std::ofstream md(s.out + "/compare_tables.md");
    for (const auto& name : names) {
        std::vector<grphi::comparison_row> rows;
        for (const auto& r : all)
            if (r.tensor == name) rows.push_back(r);
        md << "## " << name << "\n\n";
        compare_report::write_markdown(md, rows);
        md << '\n';
    }
    std::ostringstream key;
    write_key_table(key, all, names);
    std::ofstream key_md(s.out + "/compare_key.md");
    key_md << key.str();
    std::printf("## 4.25-4.5 fixed bits/weight: SQNR (and test accuracy)\n\n%s\n", key.str().c_str());
    if (!csv || !md || !key_md) throw std::runtime_error("cannot write the results in " + s.out);
    std::printf("wrote %s/compare.csv, compare_tables.md, compare_key.md and compare_<tensor>[_fixed].svg\n", s.out.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "compare: %s\n", e.what());
    return 1;
}
