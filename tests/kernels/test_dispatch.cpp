// The run-time kernel selection: the CPU's best path, capped by tests and GRPHI_ISA.
#include <doctest/doctest.h>

#include <string>

#include <grphi/kernels/dispatch.hpp>

using grphi::kernels::isa;

TEST_CASE("active_isa is the detected one unless capped, and a scoped cap restores the previous one") {
    const isa best = grphi::kernels::detected_isa();
    CHECK(static_cast<int>(grphi::kernels::active_isa()) <= static_cast<int>(best));
    {
        grphi::kernels::scoped_isa_limit outer(isa::avx2);
        CHECK(static_cast<int>(grphi::kernels::active_isa()) <= static_cast<int>(isa::avx2));
        {
            grphi::kernels::scoped_isa_limit inner(isa::scalar);
            CHECK(grphi::kernels::active_isa() == isa::scalar);
        }
        CHECK(grphi::kernels::active_isa() == (best == isa::scalar ? isa::scalar : isa::avx2));
    }
    CHECK(grphi::kernels::available_isa_count() == static_cast<int>(best) + 1);
    CHECK(grphi::kernels::available_isa(0) == isa::scalar);
}

TEST_CASE("isa names") {
    CHECK(std::string(grphi::kernels::isa_name(isa::scalar)) == "scalar");
    CHECK(std::string(grphi::kernels::isa_name(isa::avx2)) == "avx2");
    CHECK(std::string(grphi::kernels::isa_name(isa::avx512)) == "avx512");
}
