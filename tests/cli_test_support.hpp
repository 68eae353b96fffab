// Helpers for the tests that drive the built `grphi` tool: run it as a child process (exit status, output,
// peak resident memory), make scratch directories and synthetic checkpoints.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grphi/io/safetensors.hpp>

// The build defines GRPHI_CLI_PATH when the tool is built; without it the CLI tests compile to nothing.
#ifdef GRPHI_CLI_PATH

namespace cli_test {

struct scratch_dir {
    std::string path;
    scratch_dir() {
        char name[] = "/tmp/grphi-test-cli-XXXXXX";
        if (!::mkdtemp(name)) std::abort();
        path = name;
    }
    ~scratch_dir() { std::system(("rm -rf '" + path + "'").c_str()); }
    scratch_dir(const scratch_dir&) = delete;
    scratch_dir& operator=(const scratch_dir&) = delete;
    std::string file(const std::string& name) const { return path + "/" + name; }
    // Names in the directory (to check that no temporary was left behind).
    std::vector<std::string> listing() const {
        std::vector<std::string> names;
        const std::string list = file(".listing");
        std::system(("ls -A '" + path + "' > '" + list + "'").c_str());
        std::ifstream in(list);
        for (std::string line; std::getline(in, line);)
            if (line != ".listing") names.push_back(line);
        std::remove(list.c_str());
        return names;
    }
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
inline void spit(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}
inline bool exists(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0;
}

struct run_result {
    int status = -1;          // exit status, or -1 when killed by a signal
    std::string out, err;
    long max_rss_kb = 0;      // the child's own peak resident set (wait4)
};

// Starts the grphi tool with `args` (stdout and stderr into files in `dir`); `in_child` runs in the child
// just before exec (to set resource limits).
inline pid_t start_grphi(const scratch_dir& dir, const std::vector<std::string>& args,
                         const std::function<void()>& in_child = {}) {
    const std::string out_path = dir.file(".stdout"), err_path = dir.file(".stderr");
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(out, 1);
        ::dup2(err, 2);
        if (in_child) in_child();
        std::vector<char*> argv;
        static char tool[] = GRPHI_CLI_PATH;
        argv.push_back(tool);
        std::vector<std::string> copies(args);
        for (auto& a : copies) argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(tool, argv.data());
        ::_exit(127);
    }
    return pid;
}

// Waits for a child started by start_grphi and collects what it did.
inline run_result finish_grphi(const scratch_dir& dir, pid_t pid, int* signal = nullptr) {
    const std::string out_path = dir.file(".stdout"), err_path = dir.file(".stderr");
    run_result result;
    int status = 0;
    struct rusage usage {};
    ::wait4(pid, &status, 0, &usage);
    result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (signal) *signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    result.max_rss_kb = usage.ru_maxrss;
    result.out = slurp(out_path);
    result.err = slurp(err_path);
    std::remove(out_path.c_str());
    std::remove(err_path.c_str());
    return result;
}

// Runs the grphi tool with `args` (stdout and stderr captured through files in `dir`).
inline run_result run_grphi(const scratch_dir& dir, const std::vector<std::string>& args,
                            const std::function<void()>& in_child = {}) {
    return finish_grphi(dir, start_grphi(dir, args, in_child));
}

// Gaussian weights with exact zeros and a few extreme magnitudes mixed in.
inline std::vector<double> weights(std::size_t n, std::uint32_t seed, double sigma = 0.05) {
    std::mt19937 generator(seed);
    std::normal_distribution<double> normal(0.0, sigma);
    std::vector<double> w(n);
    for (std::size_t i = 0; i < n; ++i) {
        w[i] = normal(generator);
        if (i % 17 == 3) w[i] = 0.0;
        if (i % 101 == 7) w[i] *= 1e-6;
        if (i % 211 == 9) w[i] *= 40.0;
    }
    return w;
}

}  // namespace cli_test

#endif  // GRPHI_CLI_PATH
