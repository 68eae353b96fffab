// libFuzzer target: grphi::safetensors::reader on arbitrary bytes (header length, JSON header, dtypes,
// shapes, offsets, __metadata__), then a bounded read of every floating tensor. It must throw
// grphi::format_error (or std::out_of_range for a request past a tensor) and never read outside the file.
// Seed corpus: fuzz/corpus/safetensors/ (fuzz/make_corpus.cpp).
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <grphi/io/safetensors.hpp>

namespace {
// The reader maps a path: the input goes to one reused temporary file.
const std::string& scratch_path() {
    static const std::string path = [] {
        char name[] = "/tmp/grphi-fuzz-safetensors-XXXXXX";
        const int fd = ::mkstemp(name);
        if (fd < 0) std::abort();
        ::close(fd);
        return std::string(name);
    }();
    return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string& path = scratch_path();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) std::abort();
    if (size && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    try {
        const grphi::safetensors::reader in(path);
        std::vector<float> buffer(4096);
        for (const auto& t : in.tensors()) {
            if (t.end < t.begin || in.data_offset() + t.end > size) std::abort();
            if (!grphi::safetensors::is_floating(t.type)) continue;
            const std::uint64_t n = std::min<std::uint64_t>(t.elements(), buffer.size());
            try {
                in.read(t, 0, n, buffer.data());
            } catch (const std::out_of_range&) {
            }
        }
    } catch (const grphi::format_error&) {
    }
    return 0;
}
