// The grphi tool on a generated multi-hundred-MB checkpoint: peak resident memory of quantize and decode
// stays within 1.5 x the largest tensor plus a few MB, and one and two threads write identical files.
// Labelled 'heavy' (ctest -L heavy / -LE heavy).
#include <doctest/doctest.h>

#include "cli_test_support.hpp"

#include <grphi/io/safetensors.hpp>

#include <random>
#include <string>
#include <vector>

#ifdef GRPHI_CLI_PATH

namespace st = grphi::safetensors;

namespace {

// 16 tensors of 2048 x 2048 and one of 4096 x 4096 float32 (320 MiB in all, the largest 64 MiB), biases.
std::uint64_t write_big_checkpoint(const std::string& path) {
    std::vector<st::tensor_entry> entries;
    for (int i = 0; i < 16; ++i) {
        entries.push_back({"layers." + std::to_string(i) + ".weight", st::dtype::F32, {2048, 2048}});
        entries.push_back({"layers." + std::to_string(i) + ".bias", st::dtype::F32, {2048}});
        if (i == 7) entries.push_back({"embed.weight", st::dtype::F32, {4096, 4096}});
    }
    // One block of Gaussian rows, reused with a per-row rotation: realistic statistics, fast to make.
    std::mt19937 generator(42);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> block(1 << 20);
    for (auto& w : block) w = normal(generator);
    st::writer writer(path, entries);
    std::uint64_t largest = 0;
    std::size_t shift = 0;
    for (const auto& e : entries) {
        largest = std::max(largest, e.bytes());
        std::uint64_t left = e.bytes() / 4;
        while (left > 0) {
            shift = (shift + 7919) % block.size();
            const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size() - shift));
            writer.write_values(block.data() + shift, take);
            left -= take;
        }
    }
    writer.finish();
    return largest;
}

}  // namespace

TEST_CASE("cli heavy: bounded peak memory, identical output for 1 and 2 threads") {
    cli_test::scratch_dir dir;
    const std::string in = dir.file("big.safetensors");
    const std::uint64_t largest = write_big_checkpoint(in);
    const long bound_kb = static_cast<long>(1.5 * static_cast<double>(largest) / 1024.0) + 12 * 1024;

    const auto one = cli_test::run_grphi(dir, {"quantize", in, "-o", dir.file("1.grphi"), "--threads", "1", "--levels", "8"});
    INFO(one.err);
    REQUIRE(one.status == 0);
    const auto two = cli_test::run_grphi(dir, {"quantize", in, "-o", dir.file("2.grphi"), "--threads", "2", "--levels", "8"});
    INFO(two.err);
    REQUIRE(two.status == 0);
    MESSAGE("quantize peak RSS: 1 thread " << one.max_rss_kb / 1024 << " MiB, 2 threads " << two.max_rss_kb / 1024
                                           << " MiB; bound " << bound_kb / 1024 << " MiB (largest tensor "
                                           << largest / (1 << 20) << " MiB)");
    CHECK(one.max_rss_kb <= bound_kb);
    CHECK(two.max_rss_kb <= bound_kb);
    CHECK(cli_test::slurp(dir.file("1.grphi")) == cli_test::slurp(dir.file("2.grphi")));
    std::remove(dir.file("2.grphi").c_str());

    const auto decoded = cli_test::run_grphi(dir, {"decode", dir.file("1.grphi"), "-o", dir.file("back.safetensors")});
    INFO(decoded.err);
    REQUIRE(decoded.status == 0);
    MESSAGE("decode peak RSS: " << decoded.max_rss_kb / 1024 << " MiB");
    CHECK(decoded.max_rss_kb <= bound_kb);
    const st::reader back(dir.file("back.safetensors"));
    CHECK(back.tensors().size() == 33);
}

#endif  // GRPHI_CLI_PATH
