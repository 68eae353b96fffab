// Writes the seed corpora of fuzz_format, fuzz_rans, fuzz_safetensors and fuzz_npy: a few tiny valid
// inputs each. (fuzz/corpus/container/ holds format-1 files written before format 2.) Build and run
// from the repository root:
//   g++ -std=c++17 -O1 -I include -I /usr/include/eigen3 fuzz/make_corpus.cpp -o /tmp/make_corpus
//   /tmp/make_corpus fuzz/corpus
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <Eigen/Core>
#include <grphi/format/file_writer.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/coding/rans.hpp>
#include <grphi/io/safetensors.hpp>

namespace {
void write(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <corpus root>\n", argv[0]);
        return 2;
    }
    const std::string root = argv[1];
    using row_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    row_f a(6, 5);
    for (Eigen::Index i = 0; i < a.size(); ++i) a.data()[i] = (i % 7 == 0) ? 0.f : 0.01f * static_cast<float>((i * 37) % 23 - 11);
    grphi::writer_options three_rows;
    three_rows.part_weights = 15;
    three_rows.durable = false;
    {
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes, {{"format", "pt"}, {"note", "\xce\xb2"}}, three_rows);
        out.add("w", grphi::quantize<grphi::phi>(a), {6, 5}, grphi::dtype::BF16);
        const float bias[3] = {1, -2, 0.5f};
        out.add_raw("b", grphi::dtype::F32, {3}, bias, sizeof bias);
        out.finish();
        write(root + "/format/quantized_and_raw.grphi", bytes);
    }
    {
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes, {}, three_rows);
        grphi::options o;
        o.per_channel = false;
        o.cluster_size = 2;
        o.levels = 4;
        out.add("clustered", grphi::quantize<grphi::two>(a, o));
        grphi::options c;
        c.base_value = 1.5;
        c.fit_scale = true;
        out.add("custom", grphi::quantize<grphi::custom>(a.cast<double>().eval(), c), {6, 5, 1});
        out.add("empty", grphi::quantize<grphi::phi>(row_f(0, 4)));
        out.finish();
        write(root + "/format/options_and_empty.grphi", bytes);
    }
    {
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes);
        out.finish();
        write(root + "/format/no_tensors.grphi", bytes);
    }
    for (int k = 0; k < 3; ++k) {
        std::vector<grphi::rans::symbol> s;
        for (int i = 0; i < (k == 0 ? 5 : k == 1 ? 300 : 3000); ++i) s.push_back(static_cast<grphi::rans::symbol>((i * i) % (k * 7 + 2)));
        write(root + "/rans/stream" + std::to_string(k) + ".bin", grphi::rans::encode(s));
    }
    {
        using grphi::safetensors::dtype;
        grphi::safetensors::writer out(root + "/safetensors/small.safetensors",
                                       {{"w", dtype::F32, {2, 3}}, {"h", dtype::F16, {4}}, {"i", dtype::I64, {1}}},
                                       {{"format", "pt"}});
        const float w[6] = {1, 2, 3, 4, 5, 6};
        out.write_values(w, 6);
        const float h[4] = {0.5f, -1, 65504, 0};
        out.write_values(h, 4);
        const std::int64_t i = 7;
        out.write_bytes(&i, 8);
        out.finish();
    }
    {
        const float v[6] = {1, 2, 3, 4, 5, 6};
        grphi::npy::save(root + "/npy/f32_2x3.npy", {2, 3}, v, grphi::npy::element_type::F32);
        grphi::npy::save(root + "/npy/f64_scalar.npy", {}, v, grphi::npy::element_type::F64);
        grphi::npy::save(root + "/npy/f16_6.npy", {6}, v, grphi::npy::element_type::F16);
    }
    return 0;
}
