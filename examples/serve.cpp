// Serving from packed weights: loads the TinyNet and the CNN that tinynet_qat --save-grphi and
// conv2d_stats --save-grphi wrote (.grphi files, the CNN's biases beside it in <file>.bias.npy),
// classifies the Fashion-MNIST test set with the packed-weight kernels (nn layers in eval mode run
// from codes) and prints, next to it, the fake-quantized evaluation (float32 on dequantize(packed)):
// accuracy of both, how many predictions agree, and the time per batch of each.
//
// Usage: serve [--tinynet FILE] [--cnn FILE] [--data DIR] [--bits 4|8] [--batch N=1000]
// (--bits: preferred code width; a layer whose windows do not fit 4-bit codes falls back to 8.)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <grphi/train/autodiff.hpp>
#include <grphi/compute/code_matrix.hpp>
#include <grphi/format/container.hpp>
#include <grphi/train/fashion_mnist.hpp>
#include <grphi/kernels/dispatch.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/io/npy.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace grphi;
namespace fm = grphi::fashion_mnist;

const stored_tensor& tensor_named(const std::vector<stored_tensor>& all, const std::string& name, const std::string& file) {
    for (const auto& t : all)
        if (t.name == name) return t;
    throw std::invalid_argument(file + ": no tensor '" + name + "'");
}

// Dequantized weights for the fake-quantized run, and the codes for the packed run.
template <class Layer>
void load_layer(Layer& layer, const stored_tensor& t, int bits, const char* name) {
    if (t.rows != layer.weight.value.rows() || t.cols != layer.weight.value.cols())
        throw std::invalid_argument(std::string(name) + ": stored tensor is " + std::to_string(t.rows) + "x" +
                                    std::to_string(t.cols) + ", the layer needs " + std::to_string(layer.weight.value.rows()) +
                                    "x" + std::to_string(layer.weight.value.cols()));
    try {
        layer.codes = code_matrix_from<float>(t, bits);
    } catch (const std::invalid_argument& e) {
        if (bits != 4) throw;
        std::printf("  %s: %s -> 8-bit codes\n", name, e.what());
        layer.codes = code_matrix_from<float>(t, 8);
    }
    if (t.base_name == phi::name)
        layer.weight.value = dequantize(t.as<float, phi>());
    else if (t.base_name == two::name)
        layer.weight.value = dequantize(t.as<float, two>());
    else if (t.base_name == sqrt2::name)
        layer.weight.value = dequantize(t.as<float, sqrt2>());
    else
        layer.weight.value = dequantize(t.as<float, custom>());
    std::printf("  %s: %lldx%lld, %d-bit codes, %.3f bits/weight in memory\n", name, static_cast<long long>(t.rows),
                static_cast<long long>(t.cols), layer.codes->code_bits(), layer.codes->bits_per_weight());
}

struct run_result {
    std::vector<int> predictions;
    double ms_per_batch = 0;
};

// forward(tape, batch images) -> logits; runs the whole test set in batches.
run_result classify(const fm::dataset& data, Eigen::Index batch, const std::function<ad::var(ad::tape<float>&, const ad::matrix<float>&)>& forward) {
    run_result r;
    ad::tape<float> t;
    double seconds = 0;
    long batches = 0;
    for (Eigen::Index start = 0; start < data.images.rows(); start += batch) {
        const Eigen::Index n = std::min(batch, data.images.rows() - start);
        const ad::matrix<float> images = data.images.middleRows(start, n);
        t.clear();
        const auto begin = std::chrono::steady_clock::now();
        const ad::var logits = forward(t, images);
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
        ++batches;
        for (Eigen::Index i = 0; i < n; ++i) {
            Eigen::Index best = 0;
            t.value(logits).row(i).maxCoeff(&best);
            r.predictions.push_back(static_cast<int>(best));
        }
    }
    r.ms_per_batch = batches ? 1e3 * seconds / static_cast<double>(batches) : 0;
    return r;
}

std::string report(const char* net, const fm::dataset& data, Eigen::Index batch, const run_result& fake, const run_result& packed) {
    long agree = 0, correct_fake = 0, correct_packed = 0;
    for (std::size_t i = 0; i < data.labels.size(); ++i) {
        agree += fake.predictions[i] == packed.predictions[i];
        correct_fake += fake.predictions[i] == data.labels[i];
        correct_packed += packed.predictions[i] == data.labels[i];
    }
    const double n = static_cast<double>(data.labels.size());
    char line[256];
    std::snprintf(line, sizeof line, "| %s | %.2f %% | %.2f %% | %.3f %% | %.3f | %.3f | %.2fx |\n", net,
                  100.0 * static_cast<double>(correct_fake) / n, 100.0 * static_cast<double>(correct_packed) / n,
                  100.0 * static_cast<double>(agree) / n, fake.ms_per_batch, packed.ms_per_batch,
                  packed.ms_per_batch > 0 ? fake.ms_per_batch / packed.ms_per_batch : 0.0);
    (void)batch;
    return line;
}

}  // namespace

int main(int argc, char** argv) try {
    std::string tinynet_file, cnn_file, directory = fm::default_directory;
    int bits = 4;
    long batch = 1000;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::printf("usage: serve [--tinynet FILE] [--cnn FILE] [--data DIR] [--bits 4|8] [--batch N=1000]\n");
            return 0;
        }
        if (i + 1 >= argc) throw std::invalid_argument("missing value for " + flag);
        const std::string value = argv[++i];
        if (flag == "--tinynet")
            tinynet_file = value;
        else if (flag == "--cnn")
            cnn_file = value;
        else if (flag == "--data")
            directory = value;
        else if (flag == "--bits")
            bits = std::stoi(value);
        else if (flag == "--batch")
            batch = std::stol(value);
        else
            throw std::invalid_argument("unknown flag " + flag + " (try --help)");
    }
    if (bits != 4 && bits != 8) throw std::invalid_argument("--bits must be 4 or 8");
    if (batch <= 0) throw std::invalid_argument("--batch must be positive");
    if (tinynet_file.empty() && cnn_file.empty()) throw std::invalid_argument("give --tinynet FILE and/or --cnn FILE");
    const fm::dataset test_set = fm::load(fm::split::test, fm::normalization::unit, directory);
    std::printf("kernels: %s; %zu test images, batches of %ld\n", kernels::isa_name(kernels::active_isa()), test_set.size(), batch);

    std::vector<std::string> rows;
    if (!tinynet_file.empty()) {
        std::printf("TinyNet from %s\n", tinynet_file.c_str());
        const auto tensors = load(tinynet_file);
        nn::linear fc1{784, 256, false, 1}, fc2{256, 10, false, 2};
        load_layer(fc1, tensor_named(tensors, "fc1.weight", tinynet_file), bits, "fc1");
        load_layer(fc2, tensor_named(tensors, "fc2.weight", tinynet_file), bits, "fc2");
        fc1.eval();
        fc2.eval();
        auto forward = [&](ad::tape<float>& t, const ad::matrix<float>& x) {
            return fc2.forward(t, ad::relu(t, fc1.forward(t, t.constant(x))));
        };
        auto c1 = std::move(fc1.codes), c2 = std::move(fc2.codes);
        fc1.codes.reset();
        fc2.codes.reset();
        const run_result fake = classify(test_set, batch, forward);
        fc1.codes = std::move(c1);
        fc2.codes = std::move(c2);
        const run_result packed = classify(test_set, batch, forward);
        rows.push_back(report("TinyNet", test_set, batch, fake, packed));
    }
    if (!cnn_file.empty()) {
        std::printf("CNN from %s\n", cnn_file.c_str());
        const auto tensors = load(cnn_file);
        nn::conv2d conv1{1, 8, 3, 1, 1, true, 11}, conv2{8, 16, 3, 1, 1, true, 12};
        nn::linear fc{16 * 7 * 7, 10, true, 13};
        load_layer(conv1, tensor_named(tensors, "conv1.weight", cnn_file), bits, "conv1");
        load_layer(conv2, tensor_named(tensors, "conv2.weight", cnn_file), bits, "conv2");
        load_layer(fc, tensor_named(tensors, "fc.weight", cnn_file), bits, "fc");
        const npy::reader biases(cnn_file + ".bias.npy");
        const auto count = static_cast<std::size_t>(biases.info().elements());
        if (count != 8 + 16 + 10) throw std::invalid_argument(cnn_file + ".bias.npy: expected 34 biases, found " + std::to_string(count));
        std::vector<float> b(count);
        biases.read_rows(0, biases.info().rows(), b.data());
        for (int i = 0; i < 8; ++i) conv1.bias.value(0, i) = b[static_cast<std::size_t>(i)];
        for (int i = 0; i < 16; ++i) conv2.bias.value(0, i) = b[static_cast<std::size_t>(8 + i)];
        for (int i = 0; i < 10; ++i) fc.bias.value(0, i) = b[static_cast<std::size_t>(24 + i)];
        conv1.eval();
        conv2.eval();
        fc.eval();
        auto forward = [&](ad::tape<float>& t, const ad::matrix<float>& x) {
            ad::var h = ad::max_pool2x2(t, ad::relu(t, conv1.forward(t, t.constant(x, 1, 28, 28))));
            h = ad::max_pool2x2(t, ad::relu(t, conv2.forward(t, h)));
            return fc.forward(t, ad::flatten(t, h));
        };
        auto k1 = std::move(conv1.codes), k2 = std::move(conv2.codes), k3 = std::move(fc.codes);
        conv1.codes.reset();
        conv2.codes.reset();
        fc.codes.reset();
        const run_result fake = classify(test_set, batch, forward);
        conv1.codes = std::move(k1);
        conv2.codes = std::move(k2);
        fc.codes = std::move(k3);
        const run_result packed = classify(test_set, batch, forward);
        rows.push_back(report("CNN", test_set, batch, fake, packed));
    }
    std::printf("\n| net | accuracy, fake-quantized (float32) | accuracy, packed codes | same prediction | ms/batch float32 | ms/batch codes | speed-up |\n|---|---|---|---|---|---|---|\n");
    for (const auto& r : rows) std::printf("%s", r.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "serve: %s\n", e.what());
    return 1;
}
