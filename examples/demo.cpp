// The core demo: quantize synthetic weights with phi and with 2 under several option sets and
// print SQNR, exponent entropy and the honest bits/weight estimate for each.
#include <grphi/grphi.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using matrix = grphi::row_matrix<float>;

matrix gaussian(Eigen::Index rows, Eigen::Index cols, double sigma, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, sigma);
    matrix W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>(g(rng));
    return W;
}

matrix laplacian(Eigen::Index rows, Eigen::Index cols, double scale, unsigned seed) {
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> e(1.0 / scale);
    std::bernoulli_distribution sign(0.5);
    matrix W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = static_cast<float>((sign(rng) ? 1 : -1) * e(rng));
    return W;
}

double sqnr_db(const matrix& W, const matrix& Q) {
    const double signal = W.cast<double>().squaredNorm();
    const double noise = (W - Q).cast<double>().squaredNorm();
    return noise == 0 ? INFINITY : 10 * std::log10(signal / noise);
}

struct option_set {
    std::string name;
    grphi::options opts;
};

template <class Base>
void row(const matrix& W, const option_set& set) {
    const auto p = grphi::quantize<Base>(W, set.opts);
    const auto Q = grphi::dequantize(p);
    const auto rep = grphi::entropy(p);
    std::printf("| %-5s | %-40s | %8.2f | %8.3f | %8.3f | %8.3f |\n", Base::name, set.name.c_str(), sqnr_db(W, Q),
                rep.exponent_entropy, rep.sign_entropy, rep.bits_per_weight);
}

}  // namespace

int main(int argc, char** argv) {
    const Eigen::Index n = argc > 1 ? std::stol(argv[1]) : 1024;
    std::vector<option_set> sets;
    {
        grphi::options o;
        sets.push_back({"per-channel, full range", o});
        o.levels = 16;
        sets.push_back({"per-channel, 16 levels", o});
        o.levels = 8;
        sets.push_back({"per-channel, 8 levels", o});
        o.levels = 8;
        o.under = grphi::underflow::flush;
        sets.push_back({"per-channel, 8 levels, flush", o});
        o = {};
        o.levels = 8;
        o.fit_scale = true;
        sets.push_back({"per-channel, 8 levels, fit_scale", o});
        o = {};
        o.round = grphi::rounding::linear;
        o.levels = 16;
        sets.push_back({"per-channel, 16 levels, linear", o});
        o = {};
        o.per_channel = false;
        o.e_min = -16;
        o.e_max = 8;
        sets.push_back({"per-tensor, e in [-16, 8] (seed)", o});
        o.cluster_size = 32;
        o.per_channel = true;
        sets.push_back({"per-channel, e in [-16, 8], cluster 32", o});
    }
    struct tensor {
        const char* name;
        matrix W;
    };
    const tensor tensors[] = {{"Gaussian sigma=0.02", gaussian(n, n, 0.02, 1)},
                              {"Laplacian b=0.01", laplacian(n, n, 0.01, 2)}};
    for (const auto& t : tensors) {
        std::printf("\n### %s, %ldx%ld float32\n\n", t.name, static_cast<long>(t.W.rows()), static_cast<long>(t.W.cols()));
        std::printf("| base  | options                                  | SQNR dB  | H(e) bit | H(s) bit | bits/w   |\n");
        std::printf("|-------|------------------------------------------|----------|----------|----------|----------|\n");
        for (const auto& set : sets) {
            row<grphi::phi>(t.W, set);
            row<grphi::two>(t.W, set);
        }
    }
    std::printf("\nH(e): entropy of the stored exponents; H(s): sign/zero entropy per weight;\n"
                "bits/w: (exponents * H(e) + weights * H(s) + per-channel metadata) / weights.\n");
    return 0;
}
