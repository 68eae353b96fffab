// A small CNN on Fashion-MNIST trained with phi QAT, then per-output-channel exponent statistics:
// each channel's exponent window, its histogram and entropy (the Conv2d example the seed offered).
//
// Net: conv 1->8 3x3 pad 1, ReLU, 2x2 max-pool; conv 8->16 3x3 pad 1, ReLU, 2x2 max-pool;
// linear 16*7*7 -> 10. Every weight is phi-quantized during training (STE): convs per channel
// with a window of 8 exponents below each channel's largest (levels = 8, inside [-16, 8]); the
// linear layer e_min -12, e_max 8 like TinyNet's fc2. AdamW lr 1e-3, batch 64.
//
// Usage: conv2d_stats [--epochs N=1] [--train-limit N] [--data DIR] [--save-grphi FILE.grphi]
// (--save-grphi: the trained net's quantized weights for examples/serve; biases in FILE.grphi.bias.npy)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <grphi/core/base.hpp>
#include <grphi/format/container.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/coding/entropy.hpp>
#include <grphi/train/fashion_mnist.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/train/optim.hpp>
#include <grphi/core/options.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/train/autodiff.hpp>
#include <grphi/train/reproducible.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace {

using namespace grphi;
namespace fm = grphi::fashion_mnist;

options conv_options() {
    options o;
    o.per_channel = true;
    o.levels = 8;
    o.e_min = -16;
    o.e_max = 8;
    return o;
}

options linear_options() {
    options o;
    o.per_channel = true;
    o.e_min = -12;
    o.e_max = 8;
    return o;
}

struct small_cnn {
    nn::conv2d conv1{1, 8, 3, 1, 1, true, 11};
    nn::conv2d conv2{8, 16, 3, 1, 1, true, 12};
    nn::linear fc{16 * 7 * 7, 10, true, 13};

    small_cnn() {
        conv1.quantizer = nn::weight_quantizer::make<phi>(conv_options());
        conv2.quantizer = nn::weight_quantizer::make<phi>(conv_options());
        fc.quantizer = nn::weight_quantizer::make<phi>(linear_options());
    }
    ad::var forward(ad::tape<float>& t, ad::var x) {
        x = ad::max_pool2x2(t, ad::relu(t, conv1.forward(t, x)));
        x = ad::max_pool2x2(t, ad::relu(t, conv2.forward(t, x)));
        return fc.forward(t, ad::flatten(t, x));
    }
    std::vector<ad::parameter<float>*> parameters() {
        std::vector<ad::parameter<float>*> all;
        for (auto* p : conv1.parameters()) all.push_back(p);
        for (auto* p : conv2.parameters()) all.push_back(p);
        for (auto* p : fc.parameters()) all.push_back(p);
        return all;
    }
    void train(bool on) {
        conv1.train(on);
        conv2.train(on);
        fc.train(on);
    }
};

double accuracy(small_cnn& net, const fm::dataset& data) {
    net.train(false);
    ad::tape<float> t;
    long correct = 0;
    const Eigen::Index chunk = 500;
    for (Eigen::Index start = 0; start < data.images.rows(); start += chunk) {
        const Eigen::Index n = std::min(chunk, data.images.rows() - start);
        t.clear();
        const ad::var logits = net.forward(t, t.constant(data.images.middleRows(start, n), 1, 28, 28));
        const std::vector<int> labels(data.labels.begin() + start, data.labels.begin() + start + n);
        correct += nn::count_correct(t.value(logits), labels);
    }
    net.train(true);
    return 100.0 * static_cast<double>(correct) / static_cast<double>(data.images.rows());
}

// One line per output channel: window, exponent histogram over the window, entropy of that histogram.
void print_channel_stats(const char* name, const ad::matrix<float>& weight, const options& opts) {
    const auto p = quantize<phi>(weight, opts);
    const auto report = entropy(p);
    std::printf("\n%s: %lld channels x %lld weights; layer: %.3f bits/exponent, %.3f bits/weight (signs + metadata included)\n",
                name, static_cast<long long>(p.rows), static_cast<long long>(p.cols), report.exponent_entropy, report.bits_per_weight);
    std::printf("| channel | window [lo, hi] | used [min, max] | zeros | histogram (counts from used min to max) | entropy (bits) |\n");
    std::printf("|---|---|---|---|---|---|\n");
    for (Eigen::Index r = 0; r < p.rows; ++r) {
        const int lo = p.window_lo[static_cast<std::size_t>(p.channel_of_row(r))];
        const int hi = p.window_hi[static_cast<std::size_t>(p.channel_of_row(r))];
        std::vector<std::uint64_t> histogram(static_cast<std::size_t>(hi - lo + 1), 0);
        long zeros = 0;
        int used_min = hi, used_max = lo;
        for (Eigen::Index c = 0; c < p.cols; ++c) {
            if (p.signs[static_cast<std::size_t>(r * p.cols + c)] == 0) {
                ++zeros;
                continue;
            }
            const int k = p.exponent(r, c);
            ++histogram[static_cast<std::size_t>(k - lo)];
            used_min = std::min(used_min, k);
            used_max = std::max(used_max, k);
        }
        std::string bars;  // only the used part of the window, to keep wide windows readable
        for (int k = used_min; k <= used_max; ++k)
            bars += (bars.empty() ? "" : " ") + std::to_string(histogram[static_cast<std::size_t>(k - lo)]);
        std::printf("| %lld | [%d, %d] | [%d, %d] | %ld | %s | %.3f |\n", static_cast<long long>(r), lo, hi, used_min, used_max,
                    zeros, bars.c_str(), shannon_entropy(histogram));
    }
}

int parse_count(const std::string& flag, const char* text) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (!end || *end != '\0' || value < 0 || value > 1000000000) throw std::invalid_argument("bad value for " + flag + ": " + text);
    return static_cast<int>(value);
}

}  // namespace

int main(int argc, char** argv) try {
    grphi::train::pin_eigen_blocking();  // the same weights on any x86-64 CPU (see reproducible.hpp)
    int epochs = 1;
    std::size_t train_limit = 0;
    std::string directory = fm::default_directory;
    std::string save_path;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::printf("usage: conv2d_stats [--epochs N=1] [--train-limit N] [--data DIR] [--save-grphi FILE.grphi]\n");
            return 0;
        }
        if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value (try --help)");
        const char* value = argv[++i];
        if (flag == "--epochs")
            epochs = parse_count(flag, value);
        else if (flag == "--train-limit")
            train_limit = static_cast<std::size_t>(parse_count(flag, value));
        else if (flag == "--save-grphi")
            save_path = value;
        else if (flag == "--data")
            directory = value;
        else
            throw std::invalid_argument("unknown flag " + flag + " (try --help)");
    }

    fm::dataset train_set = fm::load(fm::split::train, fm::normalization::unit, directory);
    const fm::dataset test_set = fm::load(fm::split::test, fm::normalization::unit, directory);
    if (train_limit > 0 && train_limit < train_set.size()) {
        train_set.images.conservativeResize(static_cast<Eigen::Index>(train_limit), Eigen::NoChange);
        train_set.labels.resize(train_limit);
    }

    small_cnn net;
    optim::adamw<float> opt(net.parameters(), {1e-3});
    fm::batch_iterator batches(train_set, 64, 0);
    ad::tape<float> t;
    const std::size_t per_epoch = batches.batches_per_epoch();
    double seconds = 0;
    long steps = 0;
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        batches.start_epoch();
        double loss_sum = 0;
        long window = 0, seen = 0, correct = 0;
        for (std::size_t step = 1; batches.next(); ++step) {
            const auto begin = std::chrono::steady_clock::now();
            t.clear();
            opt.zero_grad();
            const ad::var logits = net.forward(t, t.constant_ref(batches.images(), 1, 28, 28));
            const ad::var loss = ad::softmax_cross_entropy(t, logits, batches.labels());
            t.backward(loss);
            opt.step();
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
            ++steps;
            loss_sum += t.value(loss)(0, 0);
            ++window;
            correct += nn::count_correct(t.value(logits), batches.labels());
            seen += static_cast<long>(batches.labels().size());
            if (step % 200 == 0 || step == per_epoch) {
                std::printf("[cnn-phi-qat] epoch %d/%d step %zu/%zu loss %.4f train-acc %.2f%%\n", epoch, epochs, step, per_epoch,
                            loss_sum / static_cast<double>(window), 100.0 * static_cast<double>(correct) / static_cast<double>(seen));
                std::fflush(stdout);
                loss_sum = 0;
                window = seen = correct = 0;
            }
        }
        std::printf("[cnn-phi-qat] epoch %d/%d test-acc %.2f%% (eval: fixed phi rounding)\n", epoch, epochs, accuracy(net, test_set));
    }
    std::printf("%.3f ms per training step (batch 64)\n", steps ? 1e3 * seconds / static_cast<double>(steps) : 0.0);

    if (!save_path.empty()) {
        grphi::save(save_path, {net.conv1.quantizer->stored("conv1.weight", net.conv1.weight.value),
                                net.conv2.quantizer->stored("conv2.weight", net.conv2.weight.value),
                                net.fc.quantizer->stored("fc.weight", net.fc.weight.value)});
        std::vector<float> biases;  // conv1 (8), conv2 (16), fc (10): float, beside the quantized weights
        for (const auto* b : {&net.conv1.bias.value, &net.conv2.bias.value, &net.fc.bias.value})
            biases.insert(biases.end(), b->data(), b->data() + b->size());
        npy::save(save_path + ".bias.npy", {biases.size()}, biases.data(), npy::element_type::F32);
        std::printf("saved the CNN to %s (+ %s.bias.npy)\n", save_path.c_str(), save_path.c_str());
    }
    print_channel_stats("conv1 (8 x 1*3*3)", net.conv1.weight.value, conv_options());
    print_channel_stats("conv2 (16 x 8*3*3)", net.conv2.weight.value, conv_options());
    print_channel_stats("fc (10 x 784)", net.fc.weight.value, linear_options());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "conv2d_stats: %s\n", e.what());
    return 1;
}
