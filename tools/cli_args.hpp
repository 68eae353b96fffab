// Command-line parsing for the grphi tool: subcommand, input, output and quantizer options.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fnmatch.h>

#include <grphi/base.hpp>
#include <grphi/options.hpp>

namespace grphi::cli {

// A mistake on the command line: reported with the usage hint, exit status 2.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline constexpr const char* usage_text =
    "usage:\n"
    "  grphi quantize IN.safetensors|IN.npy -o OUT.grphi [options]\n"
    "  grphi info FILE.grphi\n"
    "  grphi decode FILE.grphi -o OUT.safetensors|OUT.npy [--tensor NAME]\n"
    "  grphi report IN.safetensors|IN.npy [options] [--csv]\n"
    "\n"
    "quantizer options (quantize, report):\n"
    "  --base phi|two|sqrt2|<number>  base b of the levels sign * b^k (default phi); any number >= 1.03\n"
    "  --levels N                     per-channel window of N exponents below the channel's top\n"
    "  --e-min A --e-max B            absolute exponent clip\n"
    "  --per-tensor                   one window/scale for the whole tensor (default: per row)\n"
    "  --cluster N                    share one exponent per N consecutive weights of a row\n"
    "  --rounding log|linear          nearest level in the log (default) or linear domain\n"
    "  --underflow clamp|flush        below the window: lowest level (default) or zero\n"
    "  --fit-scale                    per-channel scale b^(j/16) fitted to least squares\n"
    "  --include GLOB, --exclude GLOB tensors to quantize (repeatable; others are kept exact)\n"
    "  --threads N                    worker threads (default: all cores); output is identical\n"
    "  --quiet                        no progress line\n"
    "Tensors of rank >= 2 are quantized with rows = first dimension; 1-D tensors and non-float\n"
    "dtypes are kept exact.\n";

struct arguments {
    std::string command;
    std::string input;
    std::string output;
    std::string base = "phi";  // phi, two, sqrt2, or custom (the value is opts.base_value)
    options opts;
    std::vector<std::string> includes, excludes;
    unsigned threads = 0;  // 0: hardware concurrency
    bool quiet = false;
    bool csv = false;
    std::string tensor;                      // decode: which tensor goes to an .npy
    std::uint64_t chunk_weights = 1u << 20;  // rows per job ~ this many weights (tuning/testing)

    // The base as the user sees it: its name, or the number of a custom base.
    std::string base_text() const {
        return base == "custom" && opts.base_value ? detail::number_text(*opts.base_value) : base;
    }

    unsigned thread_count() const {
        if (threads) return threads;
        const unsigned hardware = std::thread::hardware_concurrency();
        return hardware ? hardware : 1;
    }

    // A tensor is quantized when it is weight-like and selected by the globs.
    bool selected(const std::string& name) const {
        bool keep = includes.empty();
        for (const auto& glob : includes)
            if (::fnmatch(glob.c_str(), name.c_str(), 0) == 0) keep = true;
        for (const auto& glob : excludes)
            if (::fnmatch(glob.c_str(), name.c_str(), 0) == 0) keep = false;
        return keep;
    }
};

inline long long parse_integer(const std::string& flag, const std::string& text, long long lo, long long hi) {
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || value < lo || value > hi)
        throw usage_error(flag + " " + text + ": expected an integer in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
    return value;
}

struct base_choice {
    std::string name;             // phi, two, sqrt2 or custom
    std::optional<double> value;  // custom only: b
};

// phi, two, sqrt2, or a number: one within 1e-12 of φ, 2 or √2 selects that named base (with its exact,
// irrational value); any other finite number >= 1.03 is a run-time base (grphi::custom), taken as the
// double it reads as.
inline base_choice parse_base(const std::string& text) {
    if (text == "phi" || text == "two" || text == "sqrt2") return {text, std::nullopt};
    errno = 0;
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || errno == ERANGE || !std::isfinite(value) ||
        !(value >= static_cast<double>(min_base_value)))
        throw usage_error("--base " + text + ": expected phi, two, sqrt2 or a finite number >= 1.03");
    const struct {
        const char* name;
        double value;
    } known[] = {{"phi", 1.6180339887498949}, {"two", 2.0}, {"sqrt2", 1.4142135623730951}};
    for (const auto& base : known)
        if (std::fabs(value - base.value) <= 1e-12) return {base.name, std::nullopt};
    return {"custom", value};
}

inline arguments parse_arguments(int argc, char** argv) {
    arguments args;
    std::vector<std::string> positional;
    int i = 1;
    auto value = [&](const std::string& flag) -> std::string {
        if (i + 1 >= argc) throw usage_error(flag + " needs a value");
        return argv[++i];
    };
    bool options_end = false;
    for (; i < argc; ++i) {
        const std::string arg = argv[i];
        if (options_end || arg.empty() || arg[0] != '-' || arg == "-") {
            positional.push_back(arg);
            continue;
        }
        if (arg == "--") options_end = true;
        else if (arg == "-h" || arg == "--help") args.command = "help";
        else if (arg == "-o" || arg == "--output") args.output = value(arg);
        else if (arg == "--base") {
            const base_choice b = parse_base(value(arg));
            args.base = b.name;
            args.opts.base_value = b.value;
        }
        else if (arg == "--levels") args.opts.levels = static_cast<int>(parse_integer(arg, value(arg), 1, 65535));
        else if (arg == "--e-min") args.opts.e_min = static_cast<int>(parse_integer(arg, value(arg), -32767, 32767));
        else if (arg == "--e-max") args.opts.e_max = static_cast<int>(parse_integer(arg, value(arg), -32767, 32767));
        else if (arg == "--per-tensor") args.opts.per_channel = false;
        else if (arg == "--cluster") args.opts.cluster_size = static_cast<int>(parse_integer(arg, value(arg), 0, 1 << 20));
        else if (arg == "--rounding") {
            const std::string v = value(arg);
            if (v == "log") args.opts.round = rounding::log;
            else if (v == "linear") args.opts.round = rounding::linear;
            else throw usage_error("--rounding " + v + ": expected log or linear");
        } else if (arg == "--underflow") {
            const std::string v = value(arg);
            if (v == "clamp") args.opts.under = underflow::clamp;
            else if (v == "flush") args.opts.under = underflow::flush;
            else throw usage_error("--underflow " + v + ": expected clamp or flush");
        } else if (arg == "--fit-scale") args.opts.fit_scale = true;
        else if (arg == "--include") args.includes.push_back(value(arg));
        else if (arg == "--exclude") args.excludes.push_back(value(arg));
        else if (arg == "--threads") args.threads = static_cast<unsigned>(parse_integer(arg, value(arg), 1, 256));
        else if (arg == "--quiet" || arg == "-q") args.quiet = true;
        else if (arg == "--csv") args.csv = true;
        else if (arg == "--tensor") args.tensor = value(arg);
        else if (arg == "--chunk-weights")
            args.chunk_weights = static_cast<std::uint64_t>(parse_integer(arg, value(arg), 1, 1ll << 40));
        else throw usage_error("unknown option " + arg);
    }
    if (args.command == "help") return args;
    if (positional.empty()) throw usage_error("missing command");
    args.command = positional[0];
    const bool takes_input = args.command == "quantize" || args.command == "info" || args.command == "decode" ||
                             args.command == "report";
    if (!takes_input) throw usage_error("unknown command '" + args.command + "'");
    if (positional.size() < 2) throw usage_error(args.command + ": missing input file");
    if (positional.size() > 2) throw usage_error(args.command + ": unexpected argument '" + positional[2] + "'");
    args.input = positional[1];
    if ((args.command == "quantize" || args.command == "decode") && args.output.empty())
        throw usage_error(args.command + ": missing -o OUTPUT");
    if ((args.command == "info" || args.command == "report") && !args.output.empty())
        throw usage_error(args.command + " writes to standard output; -o is not used");
    try {
        args.opts.validate();
    } catch (const std::invalid_argument& error) {
        throw usage_error(error.what());
    }
    return args;
}

}  // namespace grphi::cli
