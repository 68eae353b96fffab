// grphi: quantize real checkpoints (.safetensors files, shards, .npy) to the coded .grphi container, inspect,
// decode, report.
//
// Data flow: mapped input -> row chunks (jobs) -> workers: convert, quantize, code -> in-order writer.
// Every error is one line naming the file (and tensor), exit status 1 (2 for command-line mistakes).
#include <chrono>
#include <cstdint>
#include <malloc.h>
#include <cstdio>
#include <regex>
#include <exception>
#include <set>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <grphi/base.hpp>
#include <grphi/error.hpp>
#include <grphi/quantize.hpp>

#include "cli_args.hpp"
#include "cli_container.hpp"
#include "cli_input.hpp"
#include "cli_pipeline.hpp"
#include "cli_report.hpp"
#include "cli_signals.hpp"

#include <sys/stat.h>
#include <unistd.h>

namespace grphi::cli {
namespace {

// One unit of work: rows [first_row, first_row + rows) of a quantized tensor, or bytes [first_row,
// first_row + rows) of an exact one.
struct job {
    std::size_t tensor = 0;
    std::uint64_t first_row = 0;
    std::uint64_t rows = 0;
    bool last_of_tensor = true;
    bool exact = false;
};

// Exact tensors travel as byte carriers of at most this many bytes (3 bytes of memory per byte coded).
inline constexpr std::uint64_t exact_part_bytes = std::uint64_t{1} << 22;

// What happens to one input tensor: quantized with a spec, or kept exact; and which rule decided.
struct tensor_plan {
    quant_spec spec;   // spec.exact: kept byte for byte
    std::string rule;  // "--rule REGEX=SPEC", or "default"
};

// Whole rows, about `chunk_weights` weights per job; per-tensor options need the whole tensor at once
// (its window and scale depend on every row). A Fortran-order array kept exact is one job (reordered).
inline std::vector<job> plan_jobs(const input_checkpoint& in, const std::vector<tensor_plan>& plans,
                                  const arguments& args) {
    std::vector<job> jobs;
    for (std::size_t i = 0; i < in.tensors().size(); ++i) {
        const input_tensor& t = in.tensors()[i];
        if (plans[i].spec.exact) {
            const std::uint64_t part = in.raw_is_c_order(i) ? exact_part_bytes : std::max<std::uint64_t>(t.bytes, 1);
            for (std::uint64_t b = 0; b < t.bytes || b == 0; b += part) {
                const std::uint64_t n = std::min(part, t.bytes - b);
                jobs.push_back({i, b, n, b + n == t.bytes, true});
            }
            continue;
        }
        if (!plans[i].spec.opts.per_channel || t.rows == 0) {
            jobs.push_back({i, 0, t.rows, true});
            continue;
        }
        const std::uint64_t step = std::max<std::uint64_t>(1, args.chunk_weights / std::max<std::uint64_t>(1, t.cols));
        for (std::uint64_t r = 0; r < t.rows; r += step) {
            const std::uint64_t n = std::min(step, t.rows - r);
            jobs.push_back({i, r, n, r + n == t.rows});
        }
    }
    return jobs;
}

// Per tensor: the first rule whose regex matches its name; else the default spec for weight-like tensors
// the globs select. Integer, bool and empty tensors are always exact (an empty tensor's size is its shape,
// so storing it exactly costs nothing). A rule or glob that matches no tensor is an error.
inline std::vector<tensor_plan> plan_tensors(const input_checkpoint& in, const arguments& args) {
    std::vector<tensor_plan> plans;
    std::vector<bool> rule_used(args.rules.size(), false);
    for (const auto& t : in.tensors()) {
        tensor_plan plan;
        plan.rule = "default";
        bool ruled = false;
        for (std::size_t r = 0; r < args.rules.size(); ++r)
            if (std::regex_search(t.name, args.rules[r].regex)) {
                rule_used[r] = true;
                if (ruled) continue;  // the first match wins
                ruled = true;
                plan.spec = args.rules[r].spec;
                plan.rule = "--rule " + args.rules[r].text;
            }
        if (!ruled) {
            plan.spec = args.spec;
            plan.spec.exact = !(t.weight_like() && args.selected(t.name));
        }
        if (!t.floating || t.elements() == 0) plan.spec.exact = true;
        plans.push_back(std::move(plan));
    }
    const std::string example = in.tensors().empty() ? "" : " (names look like '" + in.tensors()[0].name + "')";
    for (std::size_t r = 0; r < args.rules.size(); ++r)
        if (!rule_used[r])
            throw std::runtime_error("--rule " + args.rules[r].text + ": matches no tensor of " + in.path() + example);
    auto check_globs = [&](const std::vector<std::string>& globs, const char* flag) {
        for (const auto& glob : globs) {
            bool any = false;
            for (const auto& t : in.tensors()) any = any || ::fnmatch(glob.c_str(), t.name.c_str(), 0) == 0;
            if (!any) throw std::runtime_error(std::string(flag) + " " + glob + ": matches no tensor of " + in.path() + example);
        }
    };
    check_globs(args.includes, "--include");
    check_globs(args.excludes, "--exclude");
    return plans;
}

// Calls fn(T{}, Base{}) with the scalar type for the tensor's dtype and the chosen base.
template <class Fn>
decltype(auto) dispatch(safetensors::dtype type, const std::string& base, Fn&& fn) {
    auto with_base = [&](auto scalar) -> decltype(auto) {
        if (base == "two") return fn(scalar, two{});
        if (base == "sqrt2") return fn(scalar, sqrt2{});
        if (base == "custom") return fn(scalar, custom{});  // b is in the options (base_value)
        return fn(scalar, phi{});
    };
    if (type == safetensors::dtype::F64) return with_base(double{});
    return with_base(float{});
}

// The rows of a job as a row-major matrix; the consumed input pages are released.
template <class T>
row_matrix<T> load_rows(const input_checkpoint& in, const job& j) {
    const input_tensor& t = in.tensors()[j.tensor];
    row_matrix<T> W(static_cast<Eigen::Index>(j.rows), static_cast<Eigen::Index>(t.cols));
    in.read_rows(j.tensor, j.first_row, j.rows, W.data());
    in.release_rows(j.tensor, j.first_row, j.rows);
    return W;
}

// Quantizes the rows of a job into p: straight from the mapped input when it holds them as T, else
// from a converted copy; the consumed input pages are released.
template <class Base, class T>
void quantize_rows(const input_checkpoint& in, const job& j, const options& opts, packed<T, Base>& p) {
    const input_tensor& t = in.tensors()[j.tensor];
    if (const T* rows = in.direct_rows<T>(j.tensor, j.first_row, j.rows)) {
        const Eigen::Map<const row_matrix<T>> W(rows, static_cast<Eigen::Index>(j.rows), static_cast<Eigen::Index>(t.cols));
        quantize<Base>(W, opts, p);
        in.release_rows(j.tensor, j.first_row, j.rows);
        return;
    }
    quantize<Base>(load_rows<T>(in, j), opts, p);
}

// Prefix a library error with where it happened.
[[noreturn]] inline void rethrow_with_context(const input_checkpoint& in, const job& j, const std::exception& error) {
    const input_tensor& t = in.tensors()[j.tensor];
    std::string where = in.file_of(t) + ": tensor '" + t.name + "'";
    if (j.first_row != 0 || j.rows != t.rows)
        where += " (rows " + std::to_string(j.first_row) + ".." + std::to_string(j.first_row + j.rows - 1) + ")";
    throw std::runtime_error(where + ": " + error.what());
}

int run_report(const arguments& args) {
    const input_checkpoint in(args.inputs);
    const std::vector<tensor_plan> plans = plan_tensors(in, args);
    const std::vector<job> jobs = plan_jobs(in, plans, args);
    std::uint64_t total_bytes = 0;
    for (const auto& t : in.tensors()) total_bytes += t.bytes;
    progress_line progress(!args.quiet, in.tensors().size(), total_bytes);

    std::vector<tensor_stats> stats(in.tensors().size());
    std::size_t tensors_done = 0;
    std::uint64_t bytes_done = 0;
    run_ordered<tensor_stats>(
        jobs, args.thread_count(),
        [&](const job& j) {
            const input_tensor& t = in.tensors()[j.tensor];
            if (j.exact) return tensor_stats{};
            try {
                const quant_spec& spec = plans[j.tensor].spec;
                return dispatch(t.type, spec.base, [&](auto scalar, auto base) {
                    using T = decltype(scalar);
                    using Base = decltype(base);
                    return analyse_rows<T, Base>(t.name, load_rows<T>(in, j), spec.opts);
                });
            } catch (const std::exception& error) {
                rethrow_with_context(in, j, error);
            }
        },
        [&](const job& j, tensor_stats&& s) {
            stats[j.tensor].merge(s);
            const input_tensor& t = in.tensors()[j.tensor];
            bytes_done += j.exact ? j.rows : (t.rows ? t.bytes / t.rows * j.rows : t.bytes);
            if (j.last_of_tensor) ++tensors_done;
            progress.update(tensors_done, bytes_done);
        });
    progress.finish();

    tensor_stats total;
    std::uint64_t exact_weights = 0;
    double exact_bits = 0;
    double coded_bits = 0;
    double entropy_bits = 0;
    if (args.csv)
        std::printf("tensor,dtype,shape,mode,weights,levels_used,exponent_entropy_bits,entropy_bits_per_weight,"
                    "coded_bits_per_weight,sqnr_db\n");
    else
        std::printf("%-40s %-5s %-20s %-24s %12s %6s %8s %8s %8s %8s\n", "tensor", "dtype", "shape", "spec", "weights",
                    "levels", "H(exp)", "H b/w", "coded", "SQNR dB");
    for (std::size_t i = 0; i < in.tensors().size(); ++i) {
        const input_tensor& t = in.tensors()[i];
        const tensor_stats& s = stats[i];
        std::string shape = shape_text(t.shape);
        if (args.csv) {
            for (auto& c : shape)
                if (c == ',') c = 'x';
            shape.erase(std::remove(shape.begin(), shape.end(), ' '), shape.end());
        }
        std::string spec = spec_text(plans[i].spec);
        if (args.csv && spec.find(',') != std::string::npos) spec = '"' + spec + '"';  // RFC 4180 quoting
        if (plans[i].spec.exact) {
            const double bits = 8.0 * static_cast<double>(safetensors::dtype_size(t.type));
            exact_weights += t.elements();
            exact_bits += bits * static_cast<double>(t.elements());
            if (args.csv)
                std::printf("%s,%s,%s,exact,%llu,,,%.4f,%.4f,inf\n", t.name.c_str(), safetensors::dtype_name(t.type),
                            shape.c_str(), static_cast<unsigned long long>(t.elements()), bits, bits);
            else
                std::printf("%-40s %-5s %-20s %-24s %12llu %6s %8s %8.3f %8.3f %8s\n", t.name.c_str(),
                            safetensors::dtype_name(t.type), shape.c_str(), "exact",
                            static_cast<unsigned long long>(t.elements()), "-", "-", bits, bits, "inf");
            continue;
        }
        total.merge(s);
        const double exponent_entropy = shannon_entropy(s.exponent_histogram());
        const double entropy_bpw = entropy_bits_per_weight(s, plans[i].spec.opts);
        const double coded_bpw = coded_bits_per_weight(s);
        coded_bits += coded_bpw * static_cast<double>(s.weights);
        entropy_bits += entropy_bpw * static_cast<double>(s.weights);
        if (args.csv)
            std::printf("%s,%s,%s,%s,%llu,%zu,%.4f,%.4f,%.4f,%s\n", t.name.c_str(), safetensors::dtype_name(t.type),
                        shape.c_str(), spec.c_str(), static_cast<unsigned long long>(s.weights),
                        s.exponent_counts.size(), exponent_entropy, entropy_bpw, coded_bpw,
                        format_db(s.sqnr_db()).c_str());
        else
            std::printf("%-40s %-5s %-20s %-24s %12llu %6zu %8.3f %8.3f %8.3f %8s\n", t.name.c_str(),
                        safetensors::dtype_name(t.type), shape.c_str(), spec.c_str(),
                        static_cast<unsigned long long>(s.weights), s.exponent_counts.size(), exponent_entropy,
                        entropy_bpw, coded_bpw, format_db(s.sqnr_db()).c_str());
    }
    const double all_weights = static_cast<double>(total.weights + exact_weights);
    const double quantized_coded = total.weights ? coded_bits / static_cast<double>(total.weights) : 0.0;
    const double overall = all_weights > 0 ? (coded_bits + exact_bits) / all_weights : 0.0;
    if (args.csv) {
        std::string spec = args.rules.empty() ? spec_text(args.spec) : "rules";
        if (spec.find(',') != std::string::npos) spec = '"' + spec + '"';
        std::printf("TOTAL quantized,,,%s,%llu,%zu,%.4f,%.4f,%.4f,%s\n", spec.c_str(),
                    static_cast<unsigned long long>(total.weights), total.exponent_counts.size(),
                    shannon_entropy(total.exponent_histogram()),
                    total.weights ? entropy_bits / static_cast<double>(total.weights) : 0.0, quantized_coded,
                    format_db(total.sqnr_db()).c_str());
        std::printf("TOTAL all,,,,%llu,,,,%.4f,\n", static_cast<unsigned long long>(total.weights + exact_weights),
                    overall);
    } else {
        std::printf("total quantized: %llu weights, %.3f coded bits/weight, SQNR %s dB\n",
                    static_cast<unsigned long long>(total.weights), quantized_coded, format_db(total.sqnr_db()).c_str());
        std::printf("total with exact tensors: %llu weights, %.3f bits/weight\n",
                    static_cast<unsigned long long>(total.weights + exact_weights), overall);
    }
    return 0;
}

// Container names of every job, and the manifest that ties them to the source tensors.
manifest plan_manifest(const input_checkpoint& in, const std::vector<job>& jobs, std::vector<std::string>& part_names) {
    manifest m;
    m.metadata = in.metadata();
    std::vector<std::size_t> parts_of(in.tensors().size(), 0);
    for (const auto& j : jobs) ++parts_of[j.tensor];
    for (const auto& t : in.tensors()) {
        if (t.name.rfind(tool_prefix, 0) == 0)
            throw format_error(in.path() + ": tensor '" + t.name + "': names starting with '" + tool_prefix +
                               "' are reserved");
        m.tensors.push_back({t.name, t.type, t.shape, true, {}});
    }
    std::set<std::string> used;
    for (const auto& j : jobs) {
        const input_tensor& t = in.tensors()[j.tensor];
        std::string name = j.exact ? exact_prefix + t.name : t.name;
        if (parts_of[j.tensor] > 1) name += "@" + std::to_string(j.first_row);
        if (!used.insert(name).second)
            throw format_error(in.path() + ": tensor '" + t.name + "': container name '" + name + "' is taken twice");
        manifest_tensor& mt = m.tensors[j.tensor];
        mt.quantized = !j.exact;
        mt.parts.push_back({name, j.first_row, j.rows});
        part_names.push_back(std::move(name));
    }
    return m;
}

// Refuses an output that would replace one of the inputs (the same file, also through a symbolic or hard link).
void check_not_an_input(const std::string& output, const std::vector<std::string>& inputs) {
    struct stat out {};
    if (::stat(output.c_str(), &out) != 0) return;
    for (const auto& input : inputs) {
        struct stat in {};
        if (::stat(input.c_str(), &in) == 0 && in.st_dev == out.st_dev && in.st_ino == out.st_ino)
            throw std::runtime_error(output + ": is the input file " + input +
                                     (input == output ? "" : " (through a link)") + "; refusing to overwrite it");
    }
}

using clock_type = std::chrono::steady_clock;

// The one line a script sees on success (a terminal has seen the progress line instead).
void summary_line(const arguments& args, const std::string& text, clock_type::time_point start, std::uint64_t bytes) {
    if (args.quiet || ::isatty(2)) return;
    const double seconds = std::chrono::duration<double>(clock_type::now() - start).count();
    std::fprintf(stderr, "grphi: %s in %.2f s (%.0f MB/s)\n", text.c_str(), seconds,
                 seconds > 0 ? static_cast<double>(bytes) / seconds / 1e6 : 0.0);
}

std::string megabytes(std::uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
    return text;
}

int run_quantize(const arguments& args) {
    const auto start = clock_type::now();
    if (!ends_with(args.output, ".grphi"))
        throw usage_error("quantize writes .grphi files: -o " + args.output + " has another extension");
    const input_checkpoint in(args.inputs);
    check_not_an_input(args.output, in.files());
    const std::vector<tensor_plan> plans = plan_tensors(in, args);
    const std::vector<job> jobs = plan_jobs(in, plans, args);
    std::vector<std::string> part_names;
    const manifest plan = plan_manifest(in, jobs, part_names);
    const std::string text = manifest_json(plan);
    const stored_tensor manifest_carrier =
        make_carrier(manifest_name, reinterpret_cast<const std::uint8_t*>(text.data()), text.size());
    // Room for the directory: every part's entry with its data size at a bound, and the manifest's.
    std::uint64_t entries_bound = entry_bytes_bound(manifest_carrier);
    for (std::size_t index = 0; index < jobs.size(); ++index) {
        const job& j = jobs[index];
        const input_tensor& t = in.tensors()[j.tensor];
        stored_tensor planned = make_carrier(part_names[index], nullptr, 0);
        if (j.exact) {
            planned.cols = static_cast<std::int64_t>(j.rows);
        } else {
            const quant_spec& spec = plans[j.tensor].spec;
            planned = dispatch(t.type, spec.base, [&](auto scalar, auto base) {
                packed<decltype(scalar), decltype(base)> p;
                p.rows = static_cast<Eigen::Index>(j.rows);
                p.cols = static_cast<Eigen::Index>(t.cols);
                p.opts = spec.opts;
                return to_stored(part_names[index], std::move(p));
            });
        }
        entries_bound += entry_bytes_bound(planned);
    }
    temporary_cleanup::protect(args.output);
    container_writer writer(args.output, jobs.size() + 1, entries_bound);

    const std::uint64_t total_bytes = in.total_bytes();
    progress_line progress(!args.quiet, in.tensors().size(), total_bytes);
    std::size_t tensors_done = 0;
    std::uint64_t bytes_done = 0;
    run_ordered<coded_tensor>(
        jobs, args.thread_count(),
        [&](const job& j) -> coded_tensor {
            const std::size_t index = static_cast<std::size_t>(&j - jobs.data());
            const std::string& name = part_names[index];
            try {
                if (j.exact) {
                    if (!in.raw_is_c_order(j.tensor)) {  // decode writes C order: reorder the elements
                        const input_tensor& t = in.tensors()[j.tensor];
                        std::vector<std::byte> c_order(static_cast<std::size_t>(t.bytes));
                        in.read_raw_rows(j.tensor, 0, t.rows, c_order.data());
                        return code_tensor(make_carrier(name, reinterpret_cast<const std::uint8_t*>(c_order.data()),
                                                        c_order.size()));
                    }
                    const auto* bytes = reinterpret_cast<const std::uint8_t*>(in.raw_bytes(j.tensor)) + j.first_row;
                    return code_tensor(make_carrier(name, bytes, static_cast<std::size_t>(j.rows)));
                }
                const input_tensor& t = in.tensors()[j.tensor];
                const quant_spec& spec = plans[j.tensor].spec;
                return dispatch(t.type, spec.base, [&](auto scalar, auto base) {
                    using T = decltype(scalar);
                    using Base = decltype(base);
                    thread_local packed<T, Base> p;  // reused job after job: its arrays are not allocated again
                    quantize_rows<Base>(in, j, spec.opts, p);
                    return code_packed(name, p);
                });
            } catch (const std::exception& error) {
                rethrow_with_context(in, j, error);
            }
        },
        [&](const job& j, coded_tensor&& coded) {
            writer.add(coded);
            const input_tensor& t = in.tensors()[j.tensor];
            bytes_done += j.exact ? j.rows : (t.rows ? t.bytes / t.rows * j.rows : t.bytes);
            if (j.last_of_tensor) ++tensors_done;
            progress.update(tensors_done, bytes_done);
        });
    writer.add(code_tensor(manifest_carrier));
    const std::uint64_t written = writer.finish();
    progress.update(tensors_done, bytes_done, true);
    progress.finish();
    std::size_t quantized = 0;
    for (const auto& p : plans) quantized += !p.spec.exact;
    summary_line(args,
                 "quantize: " + std::to_string(in.tensors().size()) + " tensors (" + std::to_string(quantized) +
                     " quantized, " + std::to_string(in.tensors().size() - quantized) + " exact), " +
                     megabytes(total_bytes) + " -> " + megabytes(written) + ": " + args.output,
                 start, total_bytes);
    return 0;
}

int run_info(const arguments& args) {
    const container_reader in(args.input());
    const manifest m = read_manifest(in);
    std::uint64_t weights = 0, coded = 0, exact_bytes = 0, quantized_weights = 0;
    std::printf("%s: %zu tensors\n", in.path().c_str(), m.tensors.size());
    for (const auto& [key, value] : m.metadata) std::printf("metadata %s = %s\n", key.c_str(), value.c_str());
    std::printf("%-40s %-9s %-5s %-20s %-28s %10s\n", "tensor", "kind", "dtype", "shape", "spec", "bits/w");
    for (const auto& t : m.tensors) {
        std::uint64_t bytes = 0;
        quant_spec spec;
        spec.exact = !t.quantized;
        for (const auto& p : t.parts) {
            const auto* e = in.find(p.tensor);
            bytes += e->coded_bytes();
            if (t.quantized) {
                spec.base = e->meta.base_name;
                spec.opts = e->meta.opts;
                if (spec.base == custom::name) spec.opts.base_value = e->meta.base_value;
            }
        }
        const std::uint64_t n = t.elements();
        weights += n;
        coded += bytes;
        if (t.quantized) quantized_weights += n;
        else exact_bytes += bytes;
        // Exact tensors: their payload, as report counts it.
        const double bits = !t.quantized ? 8.0 * static_cast<double>(safetensors::dtype_size(t.type))
                            : n          ? 8.0 * static_cast<double>(bytes) / static_cast<double>(n)
                                         : 0.0;
        std::printf("%-40s %-9s %-5s %-20s %-28s %10.3f\n", t.name.c_str(), t.quantized ? "quantized" : "exact",
                    safetensors::dtype_name(t.type), shape_text(t.shape).c_str(), spec_text(spec).c_str(), bits);
    }
    const double quantized_bits = quantized_weights ? 8.0 * static_cast<double>(coded - exact_bytes) /
                                                          static_cast<double>(quantized_weights)
                                                    : 0.0;
    std::printf("total: %llu weights (%llu quantized at %.3f bits/weight), %llu bytes of tensors\n",
                static_cast<unsigned long long>(weights), static_cast<unsigned long long>(quantized_weights),
                quantized_bits, static_cast<unsigned long long>(coded));
    return 0;
}

// Calls fn(T{}, Base{}) for a stored tensor's scalar type and base (custom: its value is in the tensor).
template <class Fn>
void dispatch_stored(const stored_tensor& t, const std::string& file, Fn&& fn) {
    auto with_base = [&](auto scalar) {
        using T = decltype(scalar);
        if (t.holds<T, phi>()) return fn(scalar, phi{});
        if (t.holds<T, two>()) return fn(scalar, two{});
        if (t.holds<T, sqrt2>()) return fn(scalar, sqrt2{});
        if (t.holds<T, custom>()) return fn(scalar, custom{});
        throw format_error(file + ": tensor '" + t.name + "': base '" + t.base_name + "' (" +
                           detail::number_text(t.base_value) + ") is not one this tool decodes (phi, two, sqrt2, custom)");
    };
    if (t.scalar == scalar_kind::float64) with_base(double{});
    else with_base(float{});
}

// Streams one manifest tensor into `write_values` (dequantized) or `write_bytes` (exact).
template <class Values, class Bytes>
void decode_tensor(const container_reader& in, const manifest_tensor& t, Values&& write_values, Bytes&& write_bytes) {
    for (const auto& p : t.parts) {
        const stored_tensor part = in.read(*in.find(p.tensor));
        if (!t.quantized) {
            const std::vector<std::uint8_t> bytes = carrier_bytes(part, in.path());
            write_bytes(bytes.data(), bytes.size());
            continue;
        }
        dispatch_stored(part, in.path(), [&](auto scalar, auto base) {
            using T = decltype(scalar);
            using Base = decltype(base);
            const row_matrix<T> values = dequantize(part.as<T, Base>());
            write_values(values.data(), static_cast<std::size_t>(values.size()));
        });
    }
}

// Decoded dtype: exact tensors keep theirs; quantized ones their source dtype (--dtype source), the values
// the library computes (f32: float32, or float64 when quantized in double), or float64 (f64).
safetensors::dtype decoded_type(const container_reader& in, const manifest_tensor& t, const std::string& choice) {
    using safetensors::dtype;
    if (!t.quantized) return t.type;
    const bool in_double = t.parts.empty() ? t.type == dtype::F64
                                           : in.find(t.parts[0].tensor)->meta.scalar == scalar_kind::float64;
    if (choice == "f64") return dtype::F64;
    if (choice == "f32") return in_double ? dtype::F64 : dtype::F32;
    if (safetensors::is_floating(t.type)) return t.type;
    return in_double ? dtype::F64 : dtype::F32;  // a plain library file's tensors
}

int run_decode(const arguments& args) {
    const auto start = clock_type::now();
    const bool to_npy = ends_with(args.output, ".npy");
    if (!to_npy && !ends_with(args.output, ".safetensors"))
        throw usage_error("decode writes .safetensors or .npy files: -o " + args.output + " has another extension");
    check_not_an_input(args.output, args.inputs);
    const container_reader in(args.input());
    const manifest m = read_manifest(in);
    std::vector<const manifest_tensor*> chosen;
    for (const auto& t : m.tensors)
        if (args.tensor.empty() || t.name == args.tensor) chosen.push_back(&t);
    if (!args.tensor.empty() && chosen.empty())
        throw std::runtime_error(in.path() + ": no tensor named '" + args.tensor + "'");
    temporary_cleanup::protect(args.output);

    std::uint64_t written = 0;
    if (to_npy) {
        if (chosen.size() != 1)
            throw std::runtime_error(in.path() + ": holds " + std::to_string(chosen.size()) +
                                     " tensors; an .npy file takes one: choose it with --tensor NAME");
        const manifest_tensor& t = *chosen[0];
        safetensors::dtype type = decoded_type(in, t, args.dtype);
        const bool widen = type == safetensors::dtype::BF16;  // NumPy has no bfloat16: float32 holds it exactly
        if (widen) type = safetensors::dtype::F32;
        if (!npy::writable(type))
            throw std::runtime_error(in.path() + ": tensor '" + t.name + "': dtype " + safetensors::dtype_name(type) +
                                     " has no NumPy equivalent; decode to .safetensors");
        npy::writer out(args.output, type, t.shape);
        decode_tensor(in, t, [&](const auto* v, std::size_t n) { out.write_values(v, n); },
                      [&](const std::uint8_t* b, std::size_t n) {
                          if (!widen) return out.write_bytes(b, n);
                          std::vector<float> values(n / 2);
                          safetensors::convert_to(safetensors::dtype::BF16, reinterpret_cast<const std::byte*>(b),
                                                  values.size(), values.data());
                          out.write_values(values.data(), values.size());
                      });
        out.finish();
        written = t.elements() * safetensors::dtype_size(type);
    } else {
        std::vector<safetensors::tensor_entry> entries;
        for (const auto* t : chosen) entries.push_back({t->name, decoded_type(in, *t, args.dtype), t->shape});
        safetensors::writer out(args.output, entries, m.metadata);
        progress_line progress(!args.quiet, chosen.size(), 0);
        std::size_t done = 0;
        for (const auto* t : chosen) {
            decode_tensor(in, *t, [&](const auto* v, std::size_t n) { out.write_values(v, n); },
                          [&](const std::uint8_t* b, std::size_t n) { out.write_bytes(b, n); });
            progress.update(++done, 0);
        }
        out.finish();
        progress.finish();
        for (const auto& e : entries) written += e.bytes();
    }
    summary_line(args, "decode: " + std::to_string(chosen.size()) + " tensors, " + megabytes(written) + ": " + args.output,
                 start, written);
    return 0;
}

}  // namespace
}  // namespace grphi::cli

int main(int argc, char** argv) {
    using namespace grphi::cli;
    temporary_cleanup::install();  // before any thread starts
    // Row chunks allocate and free the same large buffers over and over: keep them in the heap instead of
    // fresh mmaps whose pages fault in anew each time (the peak is unchanged).
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    arguments args;
    auto usage_failure = [](const usage_error& error) {
        std::fprintf(stderr, "grphi: %s (see grphi --help)\n", error.what());
        return 2;
    };
    try {
        args = parse_arguments(argc, argv);
    } catch (const usage_error& error) {
        return usage_failure(error);
    }
    try {
        if (args.command == "version") {
            std::printf("grphi %s\n", GRPHI_TOOL_VERSION);
            return 0;
        }
        if (args.command == "man") {
            std::fputs(man_page().c_str(), stdout);
            return 0;
        }
        if (args.command == "help") {
            std::fputs(overview_text().c_str(), stdout);
            return 0;
        }
        if (args.help) {
            std::fputs(command_text(*find_help(args.command)).c_str(), stdout);
            return 0;
        }
        if (args.command == "report") return run_report(args);
        if (args.command == "quantize") return run_quantize(args);
        if (args.command == "info") return run_info(args);
        if (args.command == "decode") return run_decode(args);
    } catch (const usage_error& error) {
        return usage_failure(error);
    } catch (const std::exception& error) {
        std::string message = error.what();
        for (auto& c : message)
            if (c == '\n') c = ' ';
        std::fprintf(stderr, "grphi: %s\n", message.c_str());
        return 1;
    }
    return 2;
}
