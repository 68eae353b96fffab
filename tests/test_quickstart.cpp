// The README's quickstart, compiled and run; the test also checks README.md shows exactly this code.
#include <doctest/doctest.h>

#include <grphi/grphi.hpp>

#include <fstream>
#include <sstream>
#include <string>

namespace {

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot open " << path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// The lines between the quickstart markers of this file, without their 4-space test indentation.
std::string snippet_of_this_file() {
    const std::string self = read_file(std::string(GRPHI_SOURCE_DIR) + "/tests/test_quickstart.cpp");
    const std::string begin = "// [quickstart-begin]\n", end = "    // [quickstart-end]";
    const auto b = self.find(begin);
    const auto e = self.find(end, b == std::string::npos ? 0 : b);
    REQUIRE(b != std::string::npos);
    REQUIRE(e != std::string::npos);
    std::stringstream lines(self.substr(b + begin.size(), e - b - begin.size()));
    std::string line, out;
    while (std::getline(lines, line)) out += (line.rfind("    ", 0) == 0 ? line.substr(4) : line) + "\n";
    return out;
}

}  // namespace

TEST_CASE("README quickstart") {
    // [quickstart-begin]
    Eigen::MatrixXf W = Eigen::MatrixXf::Random(256, 784) * 0.05f;  // rows are output channels
    grphi::options opts;
    opts.levels = 16;                                   // per channel: 16 exponents under its largest weight
    auto packed = grphi::quantize<grphi::phi>(W, opts); // signs, exponents, per-channel windows
    Eigen::MatrixXf Wq = grphi::dequantize(packed);     // sign * phi^k, back as floats
    auto report = grphi::entropy(packed);               // report.exponent_entropy, report.bits_per_weight
    Eigen::MatrixXf Wf(W.rows(), W.cols());
    grphi::fake_quantize<grphi::phi>(W, opts, Wf);      // the QAT forward: the same values, bit for bit
    // [quickstart-end]

    CHECK(Wq == Wf);
    CHECK(packed.window_lo.size() == 256);
    CHECK(report.exponent_entropy > 1.0);
    CHECK(report.exponent_entropy <= 4.0);  // 16 levels at most
    CHECK(report.bits_per_weight > report.exponent_entropy);
    const double sqnr = 10 * std::log10(W.cast<double>().squaredNorm() / (W - Wq).cast<double>().squaredNorm());
    CHECK(sqnr > 15.0);

    const std::string readme = read_file(std::string(GRPHI_SOURCE_DIR) + "/README.md");
    CHECK_MESSAGE(readme.find(snippet_of_this_file()) != std::string::npos,
                  "README.md must contain the quickstart exactly as in tests/test_quickstart.cpp:\n"
                      << snippet_of_this_file());
}
