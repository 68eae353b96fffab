// A program that uses grphi the way a consumer would; every consumer test builds and runs it.
// Until include/grphi/grphi.hpp provides grphi::quantize this only exercises options and packed;
// the lead will switch it to `#include <grphi/grphi.hpp>` and a quantize/dequantize round trip.
#include <grphi/options.hpp>
#include <grphi/packed.hpp>

#include <cstdio>
#include <stdexcept>

int main() {
    grphi::options opts;
    opts.levels = 8;
    opts.validate();

    grphi::options bad;
    bad.cluster_size = -1;
    try {
        bad.validate();
        std::puts("grphi consumer: validate() accepted cluster_size=-1");
        return 1;
    } catch (const std::invalid_argument&) {
    }

    // packed pulls in Eigen through grphi's dependency, so this checks the include paths propagate.
    grphi::packed<float, grphi::phi> empty;
    empty.opts = opts;
    if (empty.size() != 0 || empty.channels() != 0) {
        std::puts("grphi consumer: an empty packed tensor is not empty");
        return 1;
    }
    std::printf("grphi consumer ok (base %s)\n", grphi::phi::name);
    return 0;
}
