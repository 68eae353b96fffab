// Writes the seed corpus of fuzz_container: a few tiny valid .grphi files covering the stream modes.
// Build and run from the repository root:
//   g++ -std=c++17 -O1 -I include -I /usr/include/eigen3 fuzz/make_container_corpus.cpp -o /tmp/make_corpus
//   /tmp/make_corpus /tmp/seeds
// The committed seeds without "block" in their names are format-1 files written before format 2: copy only
// new seeds (e.g. the block_*.grphi files, format 2) from /tmp/seeds into fuzz/corpus/container.
#include <cstdio>
#include <string>

#include <Eigen/Core>
#include <grphi/format/container.hpp>
#include <grphi/core/quantize.hpp>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <corpus directory>\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    using row_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using row_d = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    row_f a(3, 5);
    a << 0.5f, -0.25f, 0.f, 0.125f, -1.f, 0.3f, 0.f, 0.f, -0.07f, 0.9f, 0.01f, 0.02f, -0.03f, 0.f, 0.6f;
    row_d b(2, 4);
    b << 1e-3, -2e-3, 0.0, 4e-1, -5e-2, 6e-3, 7e-4, -8e-5;
    row_d wide(1, 3);
    wide << 4.9e-324, 1e300, -1.0;  // exponent span too wide for the coder: raw int16 mode

    grphi::options levels;
    levels.levels = 4;
    grphi::options clustered;
    clustered.cluster_size = 3;
    clustered.per_channel = false;
    clustered.fit_scale = true;
    grphi::options clipped;
    clipped.e_min = -10;
    clipped.e_max = -1;
    clipped.round = grphi::rounding::linear;
    clipped.under = grphi::underflow::flush;

    grphi::save(dir + "/levels_phi_float.grphi", {grphi::named("conv", grphi::quantize<grphi::phi>(a, levels))});
    grphi::save(dir + "/clustered_two_double.grphi", {grphi::named("fc", grphi::quantize<grphi::two>(b, clustered))});
    grphi::save(dir + "/two_tensors.grphi", {grphi::named("a", grphi::quantize<grphi::sqrt2>(a, clipped)),
                                             grphi::named("b", grphi::quantize<grphi::phi>(b))});
    grphi::save(dir + "/raw_exponents.grphi", {grphi::named("wide", grphi::quantize<grphi::sqrt2>(wide))});
    grphi::save(dir + "/zeros_and_empty.grphi", {grphi::named("zeros", grphi::quantize<grphi::phi>(row_f::Zero(2, 3))),
                                                 grphi::named("empty", grphi::quantize<grphi::two>(row_f(0, 4)))});
    grphi::save(dir + "/no_tensors.grphi", {});

    // Block scales (format 2 only): exponent tops with fitted steps over two parts, fp16 and e4m3 codes.
    row_f c(2, 20);
    for (Eigen::Index i = 0; i < c.size(); ++i) c.data()[i] = (i % 7 == 0) ? 0.f : 0.01f * static_cast<float>((i * 37) % 23 - 11);
    grphi::options exponent_blocks;
    exponent_blocks.levels = 4;
    exponent_blocks.block_size = 8;
    exponent_blocks.fit_scale = true;
    grphi::options fp16_blocks;
    fp16_blocks.levels = 4;
    fp16_blocks.block_size = 16;
    fp16_blocks.block_format = grphi::block_scale::fp16;
    fp16_blocks.per_channel = false;
    grphi::options e4m3_blocks;
    e4m3_blocks.levels = 8;
    e4m3_blocks.block_size = 8;
    e4m3_blocks.block_format = grphi::block_scale::e4m3;
    e4m3_blocks.search = grphi::scale_search::mse;
    {
        grphi::writer_options two_parts;
        two_parts.part_weights = 20;
        grphi::file_writer out(dir + "/block_exponent_parts.grphi", {}, two_parts);
        out.add("fc", grphi::quantize<grphi::phi>(c, exponent_blocks));
        out.finish();
    }
    grphi::save(dir + "/block_fp16_e4m3.grphi", {grphi::named("h", grphi::quantize<grphi::two>(c, fp16_blocks)),
                                                grphi::named("q", grphi::quantize<grphi::phi>(c, e4m3_blocks))});
    return 0;
}
