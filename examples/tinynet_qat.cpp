// The seed's TinyNet (784-256-10, no bias, ReLU) on Fashion-MNIST: FP32 training, then
// post-training quantization (PTQ) and quantization-aware training (QAT) with bases phi and 2.
//
// Recipe (the PyTorch reference's): AdamW lr 1e-3 (betas 0.9/0.999, weight decay 1e-2), batch 64,
// pixels in [0, 1]; 5 FP32 epochs; QAT starts from the FP32 weights, +2 epochs at lr 3e-4.
// Quantizer options follow the seed: per channel; fc1 cluster_size 32, e_min -16, e_max 8;
// fc2 e_min -12, e_max 8 (no clustering: its 256-wide rows are few and carry the decision).
//
// Usage: tinynet_qat [--epochs N] [--qat-epochs N] [--train-limit N] [--seed N] [--data DIR]
//                    [--save-weights PATH(.safetensors | directory for fc1.npy, fc2.npy)]
//                    [--save-grphi FILE.grphi]   (the QAT phi net, for examples/serve)
//                    [--fc1-cluster N] [--grad-scale X] [--ste-mask]   (defaults: 32; identity STE, no mask;
//                    with clusters, QAT also runs with fc1 unclustered)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags its own AVX-512 intrinsics inside Eigen's GEMM under -march=native (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <grphi/core/base.hpp>
#include <grphi/format/container.hpp>
#include <grphi/coding/entropy.hpp>
#include <grphi/train/fashion_mnist.hpp>
#include <grphi/train/nn.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/train/optim.hpp>
#include <grphi/core/options.hpp>
#include <grphi/io/safetensors.hpp>
#include <grphi/train/autodiff.hpp>
#include <grphi/train/reproducible.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <vector>

namespace {

using namespace grphi;
namespace fm = grphi::fashion_mnist;

struct tinynet {
    nn::linear fc1{784, 256, false, 1};
    nn::linear fc2{256, 10, false, 2};

    ad::var forward(ad::tape<float>& t, ad::var x) { return fc2.forward(t, ad::relu(t, fc1.forward(t, x))); }
    std::vector<ad::parameter<float>*> parameters() { return {&fc1.weight, &fc2.weight}; }
    void train() {
        fc1.train();
        fc2.train();
    }
    void eval() {
        fc1.eval();
        fc2.eval();
    }
    void quantize_with(const std::string& base, int fc1_cluster, float grad_scale, bool mask_clipped) {
        options first;
        first.per_channel = true;
        first.cluster_size = fc1_cluster;
        first.e_min = -16;
        first.e_max = 8;
        options second;
        second.per_channel = true;
        second.e_min = -12;
        second.e_max = 8;
        fc1.quantizer = nn::weight_quantizer::by_name(base, first, grad_scale, mask_clipped);
        fc2.quantizer = nn::weight_quantizer::by_name(base, second, grad_scale, mask_clipped);
    }
    // Bits per weight of both layers in a .grphi container (rANS-coded, all headers and checksums).
    double coded_bits_per_weight() const {
        if (!fc1.quantizer) return 32.0;
        const auto bytes = grphi::serialize({fc1.quantizer->stored("fc1.weight", fc1.weight.value),
                                             fc2.quantizer->stored("fc2.weight", fc2.weight.value)});
        return 8.0 * static_cast<double>(bytes.size()) / static_cast<double>(fc1.weight.value.size() + fc2.weight.value.size());
    }
    // Entropy-estimated bits per weight over both layers (32 for unquantized FP32).
    double bits_per_weight() const {
        if (!fc1.quantizer) return 32.0;
        const auto a = fc1.quantizer->entropy(fc1.weight.value);
        const auto b = fc2.quantizer->entropy(fc2.weight.value);
        return (a.bits_per_weight * static_cast<double>(a.weights) + b.bits_per_weight * static_cast<double>(b.weights)) /
               static_cast<double>(a.weights + b.weights);
    }
};

struct settings {
    int epochs = 5;
    int qat_epochs = 2;
    double lr = 1e-3;
    double qat_lr = 3e-4;
    std::size_t train_limit = 0;  // 0: all 60000
    std::uint64_t seed = 0;
    std::string data = fm::default_directory;
    std::string save_weights;
    std::string save_grphi;      // the QAT phi net (fc1 clustered as --fc1-cluster) as a .grphi file, for examples/serve
    int fc1_cluster = 32;        // fc1's exponent-sharing block (0: one exponent per weight)
    float grad_scale = 1.0f;     // STE gradient scale
    bool mask_clipped = false;   // STE: no gradient where the exponent window clipped the weight
};

double accuracy(tinynet& net, const fm::dataset& data) {
    ad::tape<float> t;
    long correct = 0;
    const Eigen::Index chunk = 1000;
    for (Eigen::Index start = 0; start < data.images.rows(); start += chunk) {
        const Eigen::Index n = std::min(chunk, data.images.rows() - start);
        t.clear();
        const ad::var logits = net.forward(t, t.constant(data.images.middleRows(start, n)));
        std::vector<int> labels(data.labels.begin() + start, data.labels.begin() + start + n);
        correct += nn::count_correct(t.value(logits), labels);
    }
    return 100.0 * static_cast<double>(correct) / static_cast<double>(data.images.rows());
}

// Trains in place; returns the mean wall time of one training step in ms (batching included).
double train_model(tinynet& net, const fm::dataset& train_set, const fm::dataset& test_set, int epochs, double lr,
             std::uint64_t seed, const char* label) {
    net.train();
    optim::adamw<float> opt(net.parameters(), {lr});
    fm::batch_iterator batches(train_set, 64, seed);
    ad::tape<float> t;
    double seconds = 0;
    long steps = 0;
    const std::size_t per_epoch = batches.batches_per_epoch();
    for (int epoch = 1; epoch <= epochs; ++epoch) {
        batches.start_epoch();
        double loss_sum = 0;
        long seen = 0, correct = 0, window_steps = 0;
        std::size_t step = 0;
        for (;;) {
            const auto begin = std::chrono::steady_clock::now();
            if (!batches.next()) break;
            t.clear();
            opt.zero_grad();
            const ad::var logits = net.forward(t, t.constant_ref(batches.images()));
            const ad::var loss = ad::softmax_cross_entropy(t, logits, batches.labels());
            t.backward(loss);
            opt.step();
            seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
            ++steps;
            ++step;
            ++window_steps;
            loss_sum += t.value(loss)(0, 0);
            correct += nn::count_correct(t.value(logits), batches.labels());
            seen += static_cast<long>(batches.labels().size());
            if (step % 300 == 0 || step == per_epoch) {
                std::printf("[%s] epoch %d/%d step %zu/%zu loss %.4f train-acc %.2f%%\n", label, epoch, epochs, step, per_epoch,
                            loss_sum / static_cast<double>(window_steps), 100.0 * static_cast<double>(correct) / static_cast<double>(seen));
                std::fflush(stdout);
                loss_sum = 0;
                window_steps = 0;
                seen = correct = 0;
            }
        }
        net.eval();
        std::printf("[%s] epoch %d/%d test-acc %.2f%%\n", label, epoch, epochs, accuracy(net, test_set));
        net.train();
    }
    net.eval();
    return steps ? 1e3 * seconds / static_cast<double>(steps) : 0.0;
}

void save_weights(tinynet& net, const std::string& path) {
    const auto& w1 = net.fc1.weight.value;
    const auto& w2 = net.fc2.weight.value;
    auto shape = [](const ad::matrix<float>& m) {
        return std::vector<std::uint64_t>{static_cast<std::uint64_t>(m.rows()), static_cast<std::uint64_t>(m.cols())};
    };
    const std::string suffix = ".safetensors";
    if (path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0) {
        safetensors::writer out(path, {{"fc1.weight", safetensors::dtype::F32, shape(w1)}, {"fc2.weight", safetensors::dtype::F32, shape(w2)}},
                                {{"model", "grphi tinynet_qat FP32 (784-256-10, no bias)"}});
        out.write_values(w1.data(), static_cast<std::size_t>(w1.size()));
        out.write_values(w2.data(), static_cast<std::size_t>(w2.size()));
        out.finish();
        std::printf("saved FP32 weights to %s (fc1.weight 256x784, fc2.weight 10x256)\n", path.c_str());
    } else {
        npy::save(path + "/fc1.npy", shape(w1), w1.data(), npy::element_type::F32);
        npy::save(path + "/fc2.npy", shape(w2), w2.data(), npy::element_type::F32);
        std::printf("saved FP32 weights to %s/fc1.npy (256x784) and %s/fc2.npy (10x256)\n", path.c_str(), path.c_str());
    }
}

int parse_int(const char* flag, const char* text) {
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (!end || *end != '\0' || value < 0 || value > 1000000000)
        throw std::invalid_argument(std::string("bad value for ") + flag + ": " + text);
    return static_cast<int>(value);
}

settings parse(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
            return argv[++i];
        };
        if (flag == "--epochs")
            s.epochs = parse_int("--epochs", value());
        else if (flag == "--qat-epochs")
            s.qat_epochs = parse_int("--qat-epochs", value());
        else if (flag == "--train-limit")
            s.train_limit = static_cast<std::size_t>(parse_int("--train-limit", value()));
        else if (flag == "--seed")
            s.seed = static_cast<std::uint64_t>(parse_int("--seed", value()));
        else if (flag == "--data")
            s.data = value();
        else if (flag == "--save-weights")
            s.save_weights = value();
        else if (flag == "--save-grphi")
            s.save_grphi = value();
        else if (flag == "--fc1-cluster")
            s.fc1_cluster = parse_int("--fc1-cluster", value());
        else if (flag == "--grad-scale")
            s.grad_scale = std::stof(value());
        else if (flag == "--ste-mask")
            s.mask_clipped = true;
        else if (flag == "--help" || flag == "-h") {
            std::printf("usage: tinynet_qat [--epochs N=5] [--qat-epochs N=2] [--train-limit N] [--seed N] [--data DIR]\n"
                        "                   [--save-weights FILE.safetensors|DIR] [--save-grphi FILE.grphi]\n"
                        "                   [--fc1-cluster N=32] [--grad-scale X=1] [--ste-mask]\n");
            std::exit(0);
        } else {
            throw std::invalid_argument("unknown flag " + flag + " (try --help)");
        }
    }
    return s;
}

struct row {
    std::string method;
    double accuracy;
    double coded_bits;
    double bits;
    std::optional<double> ms_per_step;
};

}  // namespace

int main(int argc, char** argv) try {
    const settings s = parse(argc, argv);
    grphi::train::pin_eigen_blocking();  // the same weights on any x86-64 CPU (see reproducible.hpp)
    fm::dataset train_set = fm::load(fm::split::train, fm::normalization::unit, s.data);
    const fm::dataset test_set = fm::load(fm::split::test, fm::normalization::unit, s.data);
    if (s.train_limit > 0 && s.train_limit < train_set.size()) {
        train_set.images.conservativeResize(static_cast<Eigen::Index>(s.train_limit), Eigen::NoChange);
        train_set.labels.resize(s.train_limit);
    }
    std::printf("Fashion-MNIST: %zu training, %zu test images; batch 64, AdamW\n", train_set.size(), test_set.size());

    std::vector<row> rows;
    tinynet fp32;
    const double fp32_ms = train_model(fp32, train_set, test_set, s.epochs, s.lr, s.seed, "fp32");
    rows.push_back({"FP32 (" + std::to_string(s.epochs) + " epochs)", accuracy(fp32, test_set), 32.0, 32.0, fp32_ms});
    if (!s.save_weights.empty()) save_weights(fp32, s.save_weights);

    for (const char* base : {"phi", "two"}) {
        tinynet ptq = fp32;
        ptq.quantize_with(base, s.fc1_cluster, s.grad_scale, s.mask_clipped);
        ptq.eval();
        rows.push_back({std::string("PTQ ") + base, accuracy(ptq, test_set), ptq.coded_bits_per_weight(), ptq.bits_per_weight(), std::nullopt});
    }
    {
        // Control: the same extra epochs without quantization, to separate fine-tuning from QAT.
        tinynet longer = fp32;
        const double ms = train_model(longer, train_set, test_set, s.qat_epochs, s.qat_lr, s.seed + 1, "fp32-more");
        rows.push_back({"FP32 (+" + std::to_string(s.qat_epochs) + " epochs, control)", accuracy(longer, test_set), 32.0, 32.0, ms});
    }
    // The seed's fc1 clusters, then (when clustered) one exponent per weight: the PyTorch reference
    // figures sit between the two, so both are shown.
    std::vector<int> clusterings{s.fc1_cluster};
    if (s.fc1_cluster > 1) clusterings.push_back(0);
    for (const int cluster : clusterings) {
        for (const char* base : {"phi", "two"}) {
            tinynet qat = fp32;
            qat.quantize_with(base, cluster, s.grad_scale, s.mask_clipped);
            const std::string label = std::string("qat-") + base + (cluster > 1 ? "" : "-unclustered");
            const double ms = train_model(qat, train_set, test_set, s.qat_epochs, s.qat_lr, s.seed + 1, label.c_str());
            const std::string fc1 = cluster > 1 ? "fc1 cluster " + std::to_string(cluster) : "fc1 unclustered";
            rows.push_back({"QAT " + std::string(base) + " (" + fc1 + ", +" + std::to_string(s.qat_epochs) + " epochs)",
                            accuracy(qat, test_set), qat.coded_bits_per_weight(), qat.bits_per_weight(), ms});
            if (!s.save_grphi.empty() && cluster == s.fc1_cluster && std::string(base) == "phi") {
                grphi::save(s.save_grphi, {qat.fc1.quantizer->stored("fc1.weight", qat.fc1.weight.value),
                                           qat.fc2.quantizer->stored("fc2.weight", qat.fc2.weight.value)});
                std::printf("saved the QAT phi TinyNet to %s (fc1.weight, fc2.weight)\n", s.save_grphi.c_str());
            }
        }
    }

    std::printf("\n| method | test accuracy | coded bits/weight (.grphi) | estimated bits/weight (entropy) | ms/step |\n|---|---|---|---|---|\n");
    for (const auto& r : rows) {
        char ms[32] = "-";
        if (r.ms_per_step) std::snprintf(ms, sizeof ms, "%.3f", *r.ms_per_step);
        std::printf("| %s | %.2f %% | %.3f | %.3f | %s |\n", r.method.c_str(), r.accuracy, r.coded_bits, r.bits, ms);
    }
    std::printf("\nquantizers: per channel; fc1 cluster_size %d (PTQ), e_min -16, e_max 8; fc2 e_min -12, e_max 8.\n"
                "Issue 3's PyTorch reference: FP32 86.8 %%; QAT phi 88.6 %%, base 2 88.7 %%.\n"
                "scripts/torch_tinynet.py (PyTorch, these exact semantics): FP32 87.44 %%; QAT fc1 cluster 32:\n"
                "phi 87.61 %%, 2 87.44 %%; fc1 unclustered: phi 88.43 %%, 2 88.17 %%.\n",
                s.fc1_cluster);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "tinynet_qat: %s\n", e.what());
    return 1;
}
