// Wrote the format-1 fixtures in this directory with the format-1 writer (grphi::save before format 2).
// Kept to document how they were made; rebuilding it on a format-2 tree writes format 2, so never rerun it
// into this directory. Was built and run from the repository root as:
//   g++ -std=c++17 -O1 -I include -I /usr/include/eigen3 tests/data/format1/make_fixtures.cpp -o /tmp/make_fixtures
//   /tmp/make_fixtures tests/data/format1
#include <cstdio>
#include <string>
#include <vector>

#include <grphi/format/container.hpp>
#include <grphi/core/quantize.hpp>

#include "../../format1_fixtures.hpp"

namespace f1 = grphi_test::format1;

template <class T>
grphi::stored_tensor make(const f1::tensor& t) {
    const auto W = f1::weights<T>(t.rows, t.cols, t.seed, t.zeros_only);
    switch (t.b) {
    case f1::base::phi: return grphi::named(t.name, grphi::quantize<grphi::phi>(W, t.opts));
    case f1::base::two: return grphi::named(t.name, grphi::quantize<grphi::two>(W, t.opts));
    default: return grphi::named(t.name, grphi::quantize<grphi::custom>(W, t.opts));
    }
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <output directory>\n", argv[0]);
        return 2;
    }
    for (const auto& f : f1::files()) {
        std::vector<grphi::stored_tensor> tensors;
        for (const auto& t : f.tensors) tensors.push_back(t.type == f1::scalar::f32 ? make<float>(t) : make<double>(t));
        grphi::save(std::string(argv[1]) + "/" + f.name, tensors);
    }
    return 0;
}
