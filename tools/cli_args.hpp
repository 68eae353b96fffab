// Command-line parsing for the grphi tool: commands, their help (also the source of the man page), inputs,
// output, quantizer options and per-tensor rules.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <fnmatch.h>

#include <grphi/core/base.hpp>
#include <grphi/format/layout.hpp>
#include <grphi/core/options.hpp>

#ifndef GRPHI_TOOL_VERSION
#define GRPHI_TOOL_VERSION "unknown"
#endif

namespace grphi::cli {

// A mistake on the command line: reported with the usage hint, exit status 2.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------------------------
// Help. Each command's text is what `grphi COMMAND --help` prints; the man page is made from the same
// texts (lines "  --flag ARG   text" become option entries).
struct command_help {
    const char* name;
    const char* synopsis;
    const char* summary;
    const char* details;
};

inline constexpr const char* quantizer_help =
    "quantizer options (the default spec for tensors no --rule matches):\n"
    "  --base phi|two|sqrt2|NUMBER   base b of the levels sign * b^k (default phi); any number >= 1.03\n"
    "  --levels N                    window of N exponents below each row's largest (default: no window,\n"
    "                                every weight gets its nearest level; zeros stay zero)\n"
    "  --e-min A, --e-max B          absolute exponent clip (default: none)\n"
    "  --per-tensor                  one window and scale for the whole tensor (default: one per row)\n"
    "  --cluster N                   one shared exponent per N consecutive weights of a row (default: off)\n"
    "  --rounding log|linear         nearest level in the log (default) or linear domain\n"
    "  --underflow clamp|flush       below the window: the lowest level (default) or zero\n"
    "  --fit-scale                   per-row scale b^(j/16) fitted by least squares (default: off)\n"
    "  --block N                     block scaling: one scale per N weights of a row, needs --levels\n"
    "                                (default: off)\n"
    "  --block-format exponent|fp16|e4m3  how a block's scale is stored (default exponent: a power of b)\n"
    "  --search absmax|mse           scale from the largest magnitude (default) or a least-squares search\n"
    "tensor selection:\n"
    "  --rule 'REGEX=SPEC'           tensors whose name REGEX matches (ECMAScript, anywhere in the name; the\n"
    "                                first '=' ends REGEX) get SPEC: 'exact', or a base and options, e.g.\n"
    "                                'two,levels=4', 'phi,levels=8,fit-scale', 'phi,block=32'. Options:\n"
    "                                levels=N e-min=A e-max=B per-tensor cluster=N rounding=log|linear\n"
    "                                underflow=clamp|flush fit-scale block=N block-format=F search=S;\n"
    "                                the others take the library's defaults (not the flags above).\n"
    "                                Repeatable; the first match wins.\n"
    "  --include GLOB, --exclude GLOB  of the tensors no rule matches, quantize those matching an --include\n"
    "                                (default: all) and no --exclude; repeatable\n"
    "                                A rule, --include or --exclude that matches no tensor is an error.\n"
    "By default float tensors of rank >= 2 are quantized (rows = first dimension, columns = the rest);\n"
    "1-D and 0-D tensors, integer and bool tensors and empty tensors are kept exact. A rule may quantize\n"
    "a 1-D float tensor (as one row); integer and bool tensors are always exact.\n";

inline constexpr const char* input_help =
    "INPUT: a .safetensors file, several of them (the shards of one checkpoint), a sharded checkpoint's\n"
    "model.safetensors.index.json, a directory holding one of these, or .npy arrays (named by their file\n"
    "stem). Files are recognised by their content; GGUF, ONNX and PyTorch pickle/zip files are refused.\n";

inline constexpr const char* common_help =
    "common options:\n"
    "  --threads N                   worker threads (default: all cores); the output does not depend on it\n"
    "  --quiet, -q                   no progress line and no summary line\n"
    "  --help, -h                    this help\n"
    "Options take their value as '--opt VALUE' or '--opt=VALUE'.\n";

inline const std::vector<command_help>& command_helps() {
    static const std::vector<command_help> helps = {
        {"quantize", "grphi quantize INPUT... -o OUT.grphi [options]",
         "quantize a checkpoint into one .grphi file (every tensor, shapes, dtypes, metadata)",
         "Writes OUT.grphi (the name must end in .grphi) holding every tensor of the input: quantized\n"
         "tensors as coded sign and exponent streams, the others byte for byte. The output appears only\n"
         "when complete: a failed or interrupted run leaves no file behind, and OUT may not be one of the\n"
         "inputs. On success a one-line summary goes to standard error unless it is a terminal (which shows\n"
         "a progress line instead) or --quiet is given.\n"},
        {"decode", "grphi decode FILE.grphi -o OUT.safetensors|OUT.npy|DIR/ [--tensor NAME] [--dtype source|f32|f64] [--max-shard-size SIZE]",
         "decode a .grphi file back to safetensors (one file or shards) or .npy",
         "Writes every tensor (or the one named by --tensor) to OUT: .safetensors, or .npy for a single\n"
         "tensor. Exact tensors come out byte for byte in their own dtype (BF16 goes to .npy as F32, which\n"
         "holds it exactly). With --max-shard-size, or when OUT is a directory (an existing one, or a\n"
         "name ending in '/'), the tensors go into shards NAME-00001-of-0000N.safetensors with an index\n"
         "NAME.safetensors.index.json (weight_map, total_size and the source index's metadata), NAME being\n"
         "OUT without .safetensors, or 'model' in a directory; all files appear together at the end.\n"
         "  --max-shard-size SIZE         largest shard, e.g. 5GB, 500MB, 2GiB (default: one file; into a\n"
         "                                directory, the source's shard size when it was sharded, else 5GB);\n"
         "                                tensors stay whole, a larger tensor gets its own shard\n"
         "  --tensor NAME                 decode only this tensor (needed for .npy when the file holds several)\n"
         "  --dtype source|f32|f64        dtype of quantized tensors (default source): source writes each in\n"
         "                                its original dtype, F16 and BF16 rounded to nearest (even) from the\n"
         "                                quantized value, so the output is no larger than the original; f32\n"
         "                                keeps the quantized values exactly (float32, float64 for tensors\n"
         "                                quantized in double); f64 writes float64\n"
         "  --verify                      check every data section's CRC-32 first (nothing decoded)\n"
         "  --max-elements N              refuse a file whose quantized tensors hold more than N weights in\n"
         "                                total (rows x cols + rows each; default 2^32)\n"
         "  --max-part-elements N         ... more than N in one row part (default 2^28)\n"
         "  --max-tensors N               ... more than N tensors (default 2^20)\n"
         "  --max-metadata-bytes SIZE     ... more metadata (keys + values) than SIZE (default 64MiB)\n"},
        {"info", "grphi info FILE.grphi [--verify]", "list the tensors of a .grphi file",
         "Prints the metadata and, per tensor, kind (quantized or exact), source dtype, shape, its spec (the\n"
         "rule it was quantized with, in --rule syntax) and stored bits per weight. Exact tensors count their\n"
         "payload, 8 x the dtype's size per element, as report does. With --verify it first checks every\n"
         "data section's CRC-32 and the alignment padding without decoding: a corrupted file fails (exit 1).\n"
         "  --verify                      check every data section's CRC-32 first (nothing decoded)\n"
         "  --max-elements N              refuse a file whose quantized tensors hold more than N weights in\n"
         "                                total (rows x cols + rows each; default 2^32)\n"
         "  --max-part-elements N         ... more than N in one row part (default 2^28)\n"
         "  --max-tensors N               ... more than N tensors (default 2^20)\n"
         "  --max-metadata-bytes SIZE     ... more metadata (keys + values) than SIZE (default 64MiB)\n"},
        {"report", "grphi report INPUT... [options] [--csv]",
         "what quantize would do, per tensor, without writing a file",
         "Prints per tensor: dtype, shape, spec, weights, levels used, exponent entropy, entropy bits per\n"
         "weight, coded bits per weight as quantize stores it, and SQNR; then totals.\n"
         "  --csv                         comma-separated output\n"},
    };
    return helps;
}

inline const command_help* find_help(const std::string& name) {
    for (const auto& h : command_helps())
        if (name == h.name) return &h;
    return nullptr;
}

inline bool takes_quantizer_options(const std::string& command) { return command == "quantize" || command == "report"; }

inline std::string overview_text() {
    std::string text = "grphi " GRPHI_TOOL_VERSION
                       " - quantize model checkpoints to logarithmic levels sign * b^k and store them coded\n\nusage:\n";
    for (const auto& h : command_helps()) text += std::string("  ") + h.synopsis + "\n";
    text += "  grphi COMMAND --help          a command's options and their defaults\n"
            "  grphi --version\n\n";
    for (const auto& h : command_helps()) text += std::string("  ") + h.name + std::string(10 - std::string(h.name).size(), ' ') + h.summary + "\n";
    return text;
}

inline std::string command_text(const command_help& h) {
    std::string text = std::string("usage: ") + h.synopsis + "\n\n" + h.summary + ".\n" + h.details;
    if (std::string(h.name) == "quantize" || std::string(h.name) == "report") text += std::string("\n") + input_help + "\n" + quantizer_help;
    return text + "\n" + common_help;
}

// The man page (roff), from the same texts as --help.
inline std::string man_page() {
    auto escape = [](const std::string& line) {
        std::string out;
        for (const char c : line) {
            if (c == '\\') out += "\\e";
            else if (c == '-') out += "\\-";
            else out += c;
        }
        if (!out.empty() && (out[0] == '.' || out[0] == '\'')) out = "\\&" + out;
        return out;
    };
    // "  --flag ARG    text" lines become .TP entries; deeper-indented lines continue them.
    auto body = [&](const std::string& text) {
        std::string out;
        std::size_t start = 0;
        while (start < text.size()) {
            std::size_t end = text.find('\n', start);
            if (end == std::string::npos) end = text.size();
            const std::string line = text.substr(start, end - start);
            start = end + 1;
            const std::size_t gap = line.find("   ");
            if (line.rfind("  -", 0) == 0 && gap != std::string::npos) {
                std::size_t rest = gap;
                while (rest < line.size() && line[rest] == ' ') ++rest;
                out += ".TP\n.B " + escape(line.substr(2, gap - 2)) + "\n" + escape(line.substr(rest)) + "\n";
            } else if (line.rfind("      ", 0) == 0) {
                std::size_t rest = 0;
                while (rest < line.size() && line[rest] == ' ') ++rest;
                out += escape(line.substr(rest)) + "\n";
            } else if (!line.empty() && line.back() == ':' && line.find(' ') == std::string::npos) {
                out += ".SS " + escape(line) + "\n";
            } else if (line.empty()) {
                out += ".PP\n";
            } else {
                out += (out.empty() || out.rfind("\n.TP\n") == std::string::npos ? "" : ".PP\n");
                out += escape(line) + "\n";
            }
        }
        return out;
    };
    std::string page = ".TH GRPHI 1 \"\" \"grphi " GRPHI_TOOL_VERSION "\" \"User Commands\"\n.SH NAME\n"
                       "grphi \\- quantize model checkpoints to logarithmic levels and store them coded\n.SH SYNOPSIS\n";
    for (const auto& h : command_helps()) page += ".B " + escape(h.synopsis) + "\n.br\n";
    page += ".B grphi \\-\\-version\n.SH COMMANDS\n";
    for (const auto& h : command_helps()) {
        page += ".SS " + escape(h.name) + "\n" + escape(std::string(h.summary)) + ".\n.PP\n";
        page += body(h.details);
    }
    page += ".SH INPUT\n" + body(input_help) + ".SH QUANTIZER OPTIONS\n" + body(quantizer_help) + ".SH COMMON OPTIONS\n" +
            body(common_help);
    page += ".SH EXIT STATUS\n0 on success, 1 when a file is unreadable, malformed or unwritable (one line on standard\n"
            "error names the file and tensor), 2 for a command-line mistake.\n";
    return page;
}

// ---------------------------------------------------------------------------------------------
// Quantizer specs: what happens to one tensor.
struct quant_spec {
    bool exact = false;
    std::string base = "phi";  // phi, two, sqrt2, or custom (the value is opts.base_value)
    options opts;
};

// options::block_size, when the library has it (block scaling).
template <class O, class = void>
struct has_block_size : std::false_type {};
template <class O>
struct has_block_size<O, std::void_t<decltype(std::declval<O&>().block_size)>> : std::true_type {};

template <class O>
void set_block_size(O& o, int n) {
    if constexpr (has_block_size<O>::value) o.block_size = n;
    else {
        (void)o;
        (void)n;
        throw usage_error("block=" + std::to_string(n) + ": this build of grphi has no block scaling");
    }
}
template <class O>
int block_size_of(const O& o) {
    if constexpr (has_block_size<O>::value) {
        const auto& b = o.block_size;
        if constexpr (std::is_integral_v<std::decay_t<decltype(b)>>) return static_cast<int>(b);
        else return b ? static_cast<int>(*b) : 0;
    } else {
        (void)o;
        return 0;
    }
}

// The shortest decimal text that reads back as v.
inline std::string shortest_text(double v) {
    char text[40];
    for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(text, sizeof text, "%.*g", digits, v);
        if (!std::isfinite(v) || std::strtod(text, nullptr) == v) break;
    }
    return text;
}

// A base as the user writes it: its name, or the number of a run-time base.
inline std::string base_text(const std::string& base, const options& o) {
    return base == "custom" && o.base_value ? shortest_text(*o.base_value) : base;
}

// The spec in --rule syntax: "exact", or "base[,option...]" listing what differs from the defaults.
inline std::string spec_text(const quant_spec& s) {
    if (s.exact) return "exact";
    const options& o = s.opts;
    std::string text = base_text(s.base, o);
    if (o.levels) text += ",levels=" + std::to_string(*o.levels);
    if (o.e_min) text += ",e-min=" + std::to_string(*o.e_min);
    if (o.e_max) text += ",e-max=" + std::to_string(*o.e_max);
    if (!o.per_channel) text += ",per-tensor";
    if (o.clustered()) text += ",cluster=" + std::to_string(o.cluster_size);
    if (o.round == rounding::linear) text += ",rounding=linear";
    if (o.under == underflow::flush) text += ",underflow=flush";
    if (o.fit_scale) text += ",fit-scale";
    if (const int block = block_size_of(o)) text += ",block=" + std::to_string(block);
    if (o.block_format == block_scale::fp16) text += ",block-format=fp16";
    if (o.block_format == block_scale::e4m3) text += ",block-format=e4m3";
    if (o.search == scale_search::mse) text += ",search=mse";
    return text;
}

inline long long parse_integer(const std::string& flag, const std::string& text, long long lo, long long hi) {
    errno = 0;
    char* end = nullptr;
    const long long value = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || value < lo || value > hi)
        throw usage_error(flag + " " + text + ": expected an integer in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
    return value;
}

// "5GB", "500MB", "2GiB", "123" (bytes): decimal units as Hugging Face's max_shard_size, binary with "i".
inline std::uint64_t parse_size(const std::string& flag, const std::string& text) {
    errno = 0;
    char* end = nullptr;
    const double number = std::strtod(text.c_str(), &end);
    const std::string unit = end ? std::string(end) : "";
    const struct {
        const char* name;
        double bytes;
    } units[] = {{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
                 {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
    for (const auto& u : units)
        if (unit == u.name && text.c_str() != end && errno == 0 && std::isfinite(number) && number * u.bytes >= 1 &&
            number * u.bytes < 1.8e19)
            return static_cast<std::uint64_t>(number * u.bytes);
    throw usage_error(flag + " " + text + ": expected a size such as 5GB, 500MB, 2GiB or a number of bytes");
}

// The library's one base parser, its error as a usage error naming the flag.
inline base_choice parse_base(const std::string& text, const std::string& flag = "--base") {
    try {
        return grphi::parse_base(text);
    } catch (const std::invalid_argument&) {
        throw usage_error(flag + " " + text + ": expected phi, two, sqrt2 or a finite number >= 1.03");
    }
}

// One quantizer option by name (a flag without its dashes, or a rule's key), into `o`.
// Returns false for a name that is not a quantizer option.
inline bool set_quantizer_option(quant_spec& s, const std::string& key, const std::optional<std::string>& value,
                                 const std::string& flag) {
    auto need = [&]() -> const std::string& {
        if (!value) throw usage_error(flag + " needs a value");
        return *value;
    };
    auto none = [&] {
        if (value) throw usage_error(flag + " does not take a value");
    };
    options& o = s.opts;
    if (key == "base") {
        const base_choice b = parse_base(need(), flag);
        s.base = b.name;
        o.base_value = b.value;
    } else if (key == "levels") o.levels = static_cast<int>(parse_integer(flag, need(), 1, 65535));
    else if (key == "e-min") o.e_min = static_cast<int>(parse_integer(flag, need(), -32767, 32767));
    else if (key == "e-max") o.e_max = static_cast<int>(parse_integer(flag, need(), -32767, 32767));
    else if (key == "per-tensor") none(), o.per_channel = false;
    else if (key == "cluster") o.cluster_size = static_cast<int>(parse_integer(flag, need(), 0, 1 << 20));
    else if (key == "block") set_block_size(o, static_cast<int>(parse_integer(flag, need(), 1, 1 << 20)));
    else if (key == "block-format") {
        const std::string& v = need();
        if (v == "exponent") o.block_format = block_scale::exponent;
        else if (v == "fp16") o.block_format = block_scale::fp16;
        else if (v == "e4m3") o.block_format = block_scale::e4m3;
        else throw usage_error(flag + " " + v + ": expected exponent, fp16 or e4m3");
    } else if (key == "search") {
        const std::string& v = need();
        if (v == "absmax") o.search = scale_search::absmax;
        else if (v == "mse") o.search = scale_search::mse;
        else throw usage_error(flag + " " + v + ": expected absmax or mse");
    } else if (key == "rounding") {
        const std::string& v = need();
        if (v == "log") o.round = rounding::log;
        else if (v == "linear") o.round = rounding::linear;
        else throw usage_error(flag + " " + v + ": expected log or linear");
    } else if (key == "underflow") {
        const std::string& v = need();
        if (v == "clamp") o.under = underflow::clamp;
        else if (v == "flush") o.under = underflow::flush;
        else throw usage_error(flag + " " + v + ": expected clamp or flush");
    } else if (key == "fit-scale") none(), o.fit_scale = true;
    else return false;
    return true;
}

inline void validate_spec(const quant_spec& s, const std::string& where) {
    try {
        s.opts.validate();
    } catch (const std::invalid_argument& error) {
        throw usage_error(where + ": " + error.what());
    }
}

// "exact" or "BASE[,key[=value]]...".
inline quant_spec parse_spec(const std::string& text, const std::string& where) {
    quant_spec s;
    std::vector<std::string> items;
    for (std::size_t start = 0;;) {
        const std::size_t comma = text.find(',', start);
        items.push_back(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (items[0] == "exact") {
        if (items.size() > 1) throw usage_error(where + ": 'exact' takes no options");
        s.exact = true;
        return s;
    }
    const base_choice b = parse_base(items[0], where + ": base");
    s.base = b.name;
    s.opts.base_value = b.value;
    for (std::size_t i = 1; i < items.size(); ++i) {
        const std::size_t eq = items[i].find('=');
        const std::string key = items[i].substr(0, eq);
        const std::optional<std::string> value =
            eq == std::string::npos ? std::nullopt : std::optional<std::string>(items[i].substr(eq + 1));
        if (key == "base" || !set_quantizer_option(s, key, value, where + ": " + key))
            throw usage_error(where + ": unknown option '" + key + "' (expected levels, e-min, e-max, per-tensor, "
                              "cluster, rounding, underflow, fit-scale, block, block-format or search)");
    }
    validate_spec(s, where);
    return s;
}

struct tensor_rule {
    std::string text;  // as given: REGEX=SPEC
    std::regex regex;
    quant_spec spec;
};

inline tensor_rule parse_rule(const std::string& text) {
    const std::size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == text.size())
        throw usage_error("--rule " + text + ": expected REGEX=SPEC, e.g. 'attn=two,levels=4' or 'embed=exact'");
    tensor_rule rule;
    rule.text = text;
    try {
        rule.regex = std::regex(text.substr(0, eq), std::regex::ECMAScript);
    } catch (const std::regex_error& error) {
        throw usage_error("--rule " + text + ": bad regular expression: " + error.what());
    }
    rule.spec = parse_spec(text.substr(eq + 1), "--rule " + text);
    return rule;
}

// ---------------------------------------------------------------------------------------------
struct arguments {
    std::string command;
    std::vector<std::string> inputs;
    std::string output;
    quant_spec spec;  // the default for tensors no rule matches
    std::vector<tensor_rule> rules;
    std::vector<std::string> includes, excludes;
    unsigned threads = 0;  // 0: hardware concurrency
    bool quiet = false;
    bool csv = false;
    bool help = false;
    std::string tensor;                      // decode: which tensor
    std::string dtype = "source";            // decode: source, f32 or f64
    std::uint64_t max_shard_bytes = 0;       // decode: 0 = one file (or 5 GB shards into a directory)
    std::uint64_t chunk_weights = 1u << 20;  // rows per job ~ this many weights (tuning/testing)
    bool verify = false;                     // info, decode: check every section's CRC-32 first
    reader_limits limits;                    // info, decode: what the .grphi reader accepts

    const std::string& input() const { return inputs.front(); }

    unsigned thread_count() const {
        if (threads) return threads;
        const unsigned hardware = std::thread::hardware_concurrency();
        return hardware ? hardware : 1;
    }

    // Of the tensors no rule matches: selected by the globs.
    bool selected(const std::string& name) const {
        bool keep = includes.empty();
        for (const auto& glob : includes)
            if (::fnmatch(glob.c_str(), name.c_str(), 0) == 0) keep = true;
        for (const auto& glob : excludes)
            if (::fnmatch(glob.c_str(), name.c_str(), 0) == 0) keep = false;
        return keep;
    }
};

inline arguments parse_arguments(int argc, char** argv) {
    arguments args;
    std::vector<std::string> positional;
    bool options_end = false;
    std::vector<std::string> quantizer_flags;  // given, to refuse them where they mean nothing
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (options_end || arg.empty() || arg[0] != '-' || arg == "-") {
            positional.push_back(arg);
            continue;
        }
        if (arg == "--") {
            options_end = true;
            continue;
        }
        // --opt=value or --opt value
        std::string flag = arg;
        std::optional<std::string> inline_value;
        const std::size_t eq = arg.find('=');
        if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            flag = arg.substr(0, eq);
            inline_value = arg.substr(eq + 1);
        }
        auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 >= argc) throw usage_error(flag + " needs a value");
            return argv[++i];
        };
        auto no_value = [&] {
            if (inline_value) throw usage_error(flag + " does not take a value");
        };
        if (flag == "-h" || flag == "--help") no_value(), args.help = true;
        else if (flag == "--version") no_value(), args.command = "version";
        else if (flag == "--man") no_value(), args.command = "man";
        else if (flag == "-o" || flag == "--output") args.output = value();
        else if (flag == "--rule") args.rules.push_back(parse_rule(value())), quantizer_flags.push_back(flag);
        else if (flag == "--include") args.includes.push_back(value()), quantizer_flags.push_back(flag);
        else if (flag == "--exclude") args.excludes.push_back(value()), quantizer_flags.push_back(flag);
        else if (flag == "--threads") args.threads = static_cast<unsigned>(parse_integer(flag, value(), 1, 256));
        else if (flag == "--quiet" || flag == "-q") no_value(), args.quiet = true;
        else if (flag == "--csv") no_value(), args.csv = true;
        else if (flag == "--tensor") args.tensor = value();
        else if (flag == "--dtype") {
            args.dtype = value();
            if (args.dtype != "source" && args.dtype != "f32" && args.dtype != "f64")
                throw usage_error("--dtype " + args.dtype + ": expected source, f32 or f64");
        } else if (flag == "--max-shard-size") {
            args.max_shard_bytes = parse_size(flag, value());
        } else if (flag == "--verify") {
            no_value(), args.verify = true;
        } else if (flag == "--max-elements") {
            args.limits.max_elements = static_cast<std::uint64_t>(parse_integer(flag, value(), 1, std::numeric_limits<long long>::max()));
        } else if (flag == "--max-part-elements") {
            args.limits.max_part_elements = static_cast<std::uint64_t>(parse_integer(flag, value(), 1, std::numeric_limits<long long>::max()));
        } else if (flag == "--max-tensors") {
            args.limits.max_tensors = static_cast<std::uint64_t>(parse_integer(flag, value(), 1, std::numeric_limits<long long>::max()));
        } else if (flag == "--max-metadata-bytes") {
            args.limits.max_metadata_bytes = parse_size(flag, value());
        } else if (flag == "--chunk-weights")
            args.chunk_weights = static_cast<std::uint64_t>(parse_integer(flag, value(), 1, 1ll << 40));
        else if (flag.rfind("--", 0) == 0) {
            const std::string key = flag.substr(2);
            const bool takes = key != "per-tensor" && key != "fit-scale";
            std::optional<std::string> v;
            if (takes) v = value();
            else if (inline_value) v = inline_value;
            if (key == "rule" || !set_quantizer_option(args.spec, key, v, flag))
                throw usage_error("unknown option " + flag);
            quantizer_flags.push_back(flag);
        } else throw usage_error("unknown option " + arg);
    }
    if (args.command == "version" || args.command == "man") return args;
    if (positional.empty()) {
        if (args.help) args.command = "help";
        else throw usage_error("missing command");
        return args;
    }
    args.command = positional[0];
    if (args.command == "help") {
        if (positional.size() > 1) {
            if (!find_help(positional[1])) throw usage_error("unknown command '" + positional[1] + "'");
            args.command = positional[1];
            args.help = true;
        }
        return args;
    }
    if (!find_help(args.command)) throw usage_error("unknown command '" + args.command + "'");
    if (args.help) return args;
    args.inputs.assign(positional.begin() + 1, positional.end());
    if (args.inputs.empty()) throw usage_error(args.command + ": missing input file");
    const bool many = takes_quantizer_options(args.command);
    if (!many && args.inputs.size() > 1) throw usage_error(args.command + ": unexpected argument '" + args.inputs[1] + "'");
    if ((args.command == "quantize" || args.command == "decode") && args.output.empty())
        throw usage_error(args.command + ": missing -o OUTPUT");
    if ((args.command == "info" || args.command == "report") && !args.output.empty())
        throw usage_error(args.command + " writes to standard output; -o is not used");
    if (!many && !quantizer_flags.empty())
        throw usage_error(args.command + ": " + quantizer_flags[0] + " is a quantizer option (quantize, report)");
    validate_spec(args.spec, "quantizer options");
    return args;
}

}  // namespace grphi::cli
