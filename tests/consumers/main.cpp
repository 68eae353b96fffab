// A program that uses grphi the way a consumer would; every consumer test builds and runs it.
// It includes the umbrella header (so Eigen's and xsimd's include paths must reach the consumer),
// round-trips a small matrix and checks the result, then prints one line the runner compares.
#include <grphi/grphi.hpp>

#include <cmath>
#include <cstdio>
#include <stdexcept>

int main() {
    // Magnitudes in [0.1, 1] stay inside an 8-level phi window (phi^-5 < 0.1), plus one exact zero.
    Eigen::MatrixXf weights(3, 5);
    weights << 0.9f, -0.5f, 0.25f, 0.0f, -0.1f,
               1.0f, 0.3f, -0.7f, 0.15f, 0.6f,
               -0.2f, 0.45f, 0.8f, -0.35f, 0.12f;
    grphi::options opts;
    opts.levels = 8;

    const auto packed = grphi::quantize<grphi::phi>(weights, opts);
    const Eigen::MatrixXf restored = grphi::dequantize(packed);
    Eigen::MatrixXf forward(weights.rows(), weights.cols());
    grphi::fake_quantize<grphi::phi>(weights, opts, forward);

    // Log-domain rounding: each weight lands within a factor phi^(1/2) of itself, sign kept.
    const double max_relative_error = std::sqrt(static_cast<double>(grphi::phi::value)) - 1.0;
    for (Eigen::Index r = 0; r < weights.rows(); ++r) {
        for (Eigen::Index c = 0; c < weights.cols(); ++c) {
            const double w = weights(r, c), q = restored(r, c);
            const bool ok = w == 0.0 ? q == 0.0 : (q * w > 0.0 && std::fabs(q - w) <= max_relative_error * std::fabs(w));
            if (!ok || forward(r, c) != restored(r, c)) {
                std::printf("grphi consumer: weight (%ld, %ld) = %g came back as %g (fake_quantize: %g)\n",
                            static_cast<long>(r), static_cast<long>(c), w, q, static_cast<double>(forward(r, c)));
                return 1;
            }
        }
    }

    grphi::options bad;
    bad.cluster_size = -1;
    try {
        (void)grphi::quantize<grphi::phi>(weights, bad);
        std::puts("grphi consumer: quantize accepted cluster_size=-1");
        return 1;
    } catch (const std::invalid_argument&) {
    }

    std::printf("grphi consumer ok (base %s)\n", grphi::phi::name);
    return 0;
}
