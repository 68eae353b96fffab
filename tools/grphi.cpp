// grphi: quantize real checkpoints (.safetensors files, shards, .npy) to the coded .grphi container, inspect,
// decode, report.
//
// Data flow: quantize: mapped input -> row chunks (jobs) -> workers: convert, quantize, code -> in-order
// writer; decode: mapped .grphi -> parts (jobs) -> workers: decode, convert, positioned write.
// Every error is one line naming the file (and tensor), exit status 1 (2 for command-line mistakes).
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
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

#include <grphi/core/base.hpp>
#include <grphi/core/error.hpp>
#include <grphi/format/file_reader.hpp>
#include <grphi/format/file_writer.hpp>
#include <grphi/io/mapped_file.hpp>
#include <grphi/core/quantize.hpp>

#include "cli_args.hpp"
#include "cli_input.hpp"
#include "cli_pipeline.hpp"
#include "cli_report.hpp"
#include "cli_signals.hpp"

#include <sys/stat.h>
#include <unistd.h>

namespace grphi::cli {
namespace {

// One unit of work: rows [first_row, first_row + rows) of a quantized tensor, or all the bytes of an
// exact one (first_row 0, rows its byte count).
struct job {
    std::size_t tensor = 0;
    std::uint64_t first_row = 0;
    std::uint64_t rows = 0;
    bool last_of_tensor = true;
    bool exact = false;
};

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
        if (plans[i].spec.exact) {  // one raw section, its bytes as they are
            jobs.push_back({i, 0, t.bytes, true, true});
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

// What a worker hands the in-order writer: a quantized job's parts (and, for a tensor's first job, the
// index record's fields), or an exact tensor's bytes reordered into C order (empty: straight from the map).
struct coded_job {
    std::optional<quantized_spec> spec;
    std::vector<encoded_part> parts;
    std::vector<std::byte> c_order;
};

// The metadata key under which quantize records a sharded source's shard size (the "grphi/" keys are
// the tool's own: decode reads them and does not write them out).
inline constexpr const char* source_shard_key = "grphi/source_shard_bytes";

int run_quantize(const arguments& args) {
    const auto start = clock_type::now();
    if (!ends_with(args.output, ".grphi"))
        throw usage_error("quantize writes .grphi files: -o " + args.output + " has another extension");
    const input_checkpoint in(args.inputs);
    check_not_an_input(args.output, in.files());
    const std::vector<tensor_plan> plans = plan_tensors(in, args);
    const std::vector<job> jobs = plan_jobs(in, plans, args);
    metadata_map metadata;
    for (const auto& [key, value] : in.metadata()) metadata[key] = value;
    // A sharded source's shard size, so that decode into a directory shards it the same way by default.
    if (in.files().size() > 1) metadata[source_shard_key] = std::to_string(in.largest_file_bytes());
    temporary_cleanup::protect(args.output);
    // The output's temporary is created first, so an unwritable target fails before any work is done.
    file_writer writer(args.output, std::move(metadata));

    const std::uint64_t total_bytes = in.total_bytes();
    progress_line progress(!args.quiet, in.tensors().size(), total_bytes);
    std::size_t tensors_done = 0;
    std::uint64_t bytes_done = 0;
    run_ordered<coded_job>(
        jobs, args.thread_count(),
        [&](const job& j) -> coded_job {
            const input_tensor& t = in.tensors()[j.tensor];
            coded_job coded;
            try {
                if (j.exact) {
                    if (!in.raw_is_c_order(j.tensor)) {  // decode writes C order: reorder the elements
                        coded.c_order.resize(static_cast<std::size_t>(t.bytes));
                        in.read_raw_rows(j.tensor, 0, t.rows, coded.c_order.data());
                    }
                    return coded;
                }
                const quant_spec& spec = plans[j.tensor].spec;
                dispatch(t.type, spec.base, [&](auto scalar, auto base) {
                    using T = decltype(scalar);
                    using Base = decltype(base);
                    thread_local packed<T, Base> p;  // reused job after job: its arrays are not allocated again
                    quantize_rows<Base>(in, j, spec.opts, p);
                    if (j.first_row == 0) coded.spec = quantized_spec::of(t.name, p, t.shape, t.type);
                    // A per-channel job is one part; a per-tensor tensor (one job) is split as the library splits.
                    const std::int64_t rows = p.rows;
                    const std::int64_t per = spec.opts.per_channel ? std::max<std::int64_t>(rows, 1) : writer.rows_per_part(p.cols);
                    for (std::int64_t r = 0; r < rows; r += per) coded.parts.push_back(encode_part(p, r, std::min(rows, r + per)));
                });
                return coded;
            } catch (const std::exception& error) {
                rethrow_with_context(in, j, error);
            }
        },
        [&](const job& j, coded_job&& coded) {
            const input_tensor& t = in.tensors()[j.tensor];
            try {
                if (j.exact) {
                    const void* bytes = coded.c_order.empty() ? static_cast<const void*>(in.raw_bytes(j.tensor)) : coded.c_order.data();
                    writer.add_raw(t.name, t.type, t.shape, bytes, static_cast<std::size_t>(t.bytes));
                    if (coded.c_order.empty()) in.release_rows(j.tensor, 0, t.rows);
                } else {
                    if (coded.spec) writer.begin_quantized(*coded.spec);
                    for (const auto& part : coded.parts) writer.append_part(part);
                    if (j.last_of_tensor) writer.end_quantized();
                }
            } catch (const std::exception& error) {
                rethrow_with_context(in, j, error);
            }
            bytes_done += j.exact ? j.rows : (t.rows ? t.bytes / t.rows * j.rows : t.bytes);
            if (j.last_of_tensor) ++tensors_done;
            progress.update(tensors_done, bytes_done);
        });
    writer.finish();
    const std::uint64_t written = writer.bytes_written();
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

// A quantized tensor's spec as the command line writes it.
quant_spec spec_of(const tensor_info& t) {
    quant_spec spec;
    spec.exact = t.kind == tensor_kind::raw;
    if (spec.exact) return spec;
    spec.base = t.base_name;
    spec.opts = t.opts;
    if (spec.base == custom::name) spec.opts.base_value = t.base_value;
    return spec;
}

int run_info(const arguments& args) {
    const file_reader in(args.input(), args.limits);
    if (args.verify) in.verify();  // every section's CRC-32, nothing decoded
    std::uint64_t weights = 0, coded = 0, exact_bytes = 0, quantized_weights = 0;
    std::printf("%s: %zu tensors\n", in.name().c_str(), in.tensors().size());
    for (const auto& [key, value] : in.metadata()) std::printf("metadata %s = %s\n", key.c_str(), value.c_str());
    std::printf("%-40s %-9s %-5s %-20s %-28s %10s\n", "tensor", "kind", "dtype", "shape", "spec", "bits/w");
    for (const auto& t : in.tensors()) {
        const bool quantized = t.kind == tensor_kind::quantized;
        const std::uint64_t bytes = t.stored_bytes();
        const std::uint64_t n = t.elements();
        weights += n;
        coded += bytes;
        if (quantized) quantized_weights += n;
        else exact_bytes += bytes;
        // Exact tensors: their payload, as report counts it.
        const double bits = !quantized ? 8.0 * static_cast<double>(grphi::dtype_size(t.source))
                            : n        ? 8.0 * static_cast<double>(bytes) / static_cast<double>(n)
                                       : 0.0;
        std::printf("%-40s %-9s %-5s %-20s %-28s %10.3f\n", t.name.c_str(), quantized ? "quantized" : "exact",
                    grphi::dtype_name(t.source), shape_text(t.shape).c_str(), spec_text(spec_of(t)).c_str(), bits);
    }
    const double quantized_bits = quantized_weights ? 8.0 * static_cast<double>(coded - exact_bytes) /
                                                          static_cast<double>(quantized_weights)
                                                    : 0.0;
    std::printf("total: %llu weights (%llu quantized at %.3f bits/weight), %llu bytes of tensors\n",
                static_cast<unsigned long long>(weights), static_cast<unsigned long long>(quantized_weights),
                quantized_bits, static_cast<unsigned long long>(coded));
    if (args.verify) std::printf("verified: every section's CRC-32 matches\n");
    return 0;
}

// One decode job: rows [begin, end) of a quantized tensor (one part, or part of one), or bytes [begin, end)
// of a raw tensor (copied from the map in pieces, so a large one is spread over the workers too).
struct decode_job {
    std::size_t tensor = 0;  // index into the chosen tensors
    std::uint64_t begin = 0, end = 0;
};
struct decode_buffers {  // a worker's, reused from job to job
    row_matrix<float> f;  // a part's values, in the scalar type it was quantized in
    row_matrix<double> d;
};

// Bytes of a raw tensor per job.
inline constexpr std::uint64_t raw_job_bytes = std::uint64_t{16} << 20;

// Decodes the chosen tensors on `threads` workers, every job written straight into its place in the
// output through the sink: sink.values(k, first_element, values, n) for quantized tensors, sink.bytes(k,
// byte_offset, bytes, n) for raw ones (positioned writes: no worker waits for another's order).
// tensor_done(k) after a tensor's last job (one call at a time). Jobs finish in any order and the output
// does not depend on it; each worker holds at most one part's values.
template <class Sink, class Done>
void decode_tensors(const file_reader& in, const std::vector<const tensor_info*>& chosen, unsigned threads, Sink& sink,
                    Done&& tensor_done) {
    std::vector<decode_job> jobs;
    std::vector<std::atomic<std::size_t>> left(chosen.size());
    std::vector<const std::uint8_t*> raw_data(chosen.size(), nullptr);  // raw tensors' bytes in the map
    for (std::size_t k = 0; k < chosen.size(); ++k) {
        const tensor_info& t = *chosen[k];
        const std::size_t before = jobs.size();
        if (t.kind == tensor_kind::raw) {
            const raw_view view = in.raw(t.name);  // checksum checked once, here, before any byte is written
            raw_data[k] = view.data;
            const std::uint64_t bytes = view.size;
            for (std::uint64_t b = 0; b < bytes; b += raw_job_bytes) jobs.push_back({k, b, std::min(bytes, b + raw_job_bytes)});
        } else {
            for (const section_info& s : t.sections)
                jobs.push_back({k, static_cast<std::uint64_t>(s.first_row), static_cast<std::uint64_t>(s.first_row + s.rows)});
        }
        if (jobs.size() == before) jobs.push_back({k, 0, 0});  // empty: nothing to write, but the tensor completes
        left[k].store(jobs.size() - before);
    }
    auto decode = [&](const decode_job& j, const tensor_info& t, auto& buffer) {
        in.dequantize_rows(t.name, static_cast<std::int64_t>(j.begin), static_cast<std::int64_t>(j.end), buffer);
        sink.values(j.tensor, j.begin * static_cast<std::uint64_t>(t.cols()), buffer.data(), static_cast<std::size_t>(buffer.size()));
    };
    std::mutex done_mutex;
    run_parallel<decode_buffers>(jobs, threads, [&](const decode_job& j, decode_buffers& buffers) {
        const tensor_info& t = *chosen[j.tensor];
        if (j.end > j.begin) {
            if (t.kind == tensor_kind::raw)
                sink.bytes(j.tensor, j.begin, raw_data[j.tensor] + j.begin, static_cast<std::size_t>(j.end - j.begin));
            else if (t.scalar == scalar_kind::float64) decode(j, t, buffers.d);
            else decode(j, t, buffers.f);
        }
        if (left[j.tensor].fetch_sub(1) == 1) {
            std::lock_guard<std::mutex> lock(done_mutex);
            tensor_done(j.tensor);
        }
    });
}

// decode_tensors' sink for an .npy file (one tensor; BF16 widened to F32, which NumPy has).
struct npy_sink {
    npy::parallel_writer& out;
    bool widen;
    template <class T>
    void values(std::size_t, std::uint64_t first, const T* v, std::size_t n) {
        out.write_values(first, v, n);
    }
    void bytes(std::size_t, std::uint64_t offset, const std::uint8_t* b, std::size_t n) {
        if (!widen) return out.write_bytes(offset / out_width, b, n);
        std::vector<float> wide(n / 2);
        safetensors::convert_to(safetensors::dtype::BF16, reinterpret_cast<const std::byte*>(b), wide.size(), wide.data());
        out.write_values(offset / 2, wide.data(), wide.size());
    }
    std::size_t out_width;  // bytes per element of the array
};

// decode_tensors' sink for safetensors files: tensor k goes to shard_of[k].
struct safetensors_sink {
    struct place_in_shard {
        safetensors::parallel_writer* out;
        std::size_t index;  // in its shard
    };
    std::vector<place_in_shard> shard_of;
    template <class T>
    void values(std::size_t k, std::uint64_t first, const T* v, std::size_t n) {
        shard_of[k].out->write_values(shard_of[k].index, first, v, n);
    }
    void bytes(std::size_t k, std::uint64_t offset, const std::uint8_t* b, std::size_t n) {
        shard_of[k].out->write_bytes(shard_of[k].index, offset, b, n);
    }
};

// Decoded dtype: exact tensors keep theirs; quantized ones their source dtype (--dtype source), the values
// the library computes (f32: float32, or float64 when quantized in double), or float64 (f64).
safetensors::dtype decoded_type(const tensor_info& t, const std::string& choice) {
    using safetensors::dtype;
    if (t.kind == tensor_kind::raw) return t.source;
    const bool in_double = t.scalar == scalar_kind::float64;
    if (choice == "f64") return dtype::F64;
    if (choice == "f32") return in_double ? dtype::F64 : dtype::F32;
    return t.source;
}

// Where decode writes shards: "DIR/model" or "path/stem" (a .safetensors name without its extension).
struct shard_plan {
    std::string stem;  // shards are stem-0000i-of-0000N.safetensors, the index stem.safetensors.index.json
    std::uint64_t max_bytes = 0;
};

// Where decode finds that size (keys under "grphi/" are the tool's own and are not written out).
std::uint64_t source_shard_bytes(const file_reader& in) {
    const auto found = in.metadata().find(source_shard_key);
    if (found == in.metadata().end()) return 0;
    try {
        return std::stoull(found->second);
    } catch (const std::exception&) {
        return 0;  // a hand-edited value: fall back to the default
    }
}

std::optional<shard_plan> plan_shards(const arguments& args, std::uint64_t source_shard) {
    struct stat info {};
    const bool directory = ends_with(args.output, "/") || (::stat(args.output.c_str(), &info) == 0 && S_ISDIR(info.st_mode));
    if (directory) {
        if (::mkdir(args.output.c_str(), 0777) != 0 && errno != EEXIST)
            throw std::runtime_error(args.output + ": cannot create the directory: " + std::strerror(errno));
        const std::string dir = ends_with(args.output, "/") ? args.output : args.output + "/";
        const std::uint64_t fallback = source_shard ? source_shard : 5'000'000'000ull;  // Hugging Face's default
        return shard_plan{dir + "model", args.max_shard_bytes ? args.max_shard_bytes : fallback};
    }
    if (!args.max_shard_bytes) return std::nullopt;
    return shard_plan{args.output.substr(0, args.output.size() - std::string(".safetensors").size()), args.max_shard_bytes};
}

std::string shard_name(std::size_t index, std::size_t count) {
    char text[64];
    std::snprintf(text, sizeof text, "-%05zu-of-%05zu.safetensors", index + 1, count);
    return text;
}

int run_decode(const arguments& args) {
    const auto start = clock_type::now();
    const bool to_npy = ends_with(args.output, ".npy");
    struct stat output_info {};
    const bool to_directory =
        ends_with(args.output, "/") || (::stat(args.output.c_str(), &output_info) == 0 && S_ISDIR(output_info.st_mode));
    if (!to_npy && !to_directory && !ends_with(args.output, ".safetensors"))
        throw usage_error("decode writes .safetensors or .npy files, or shards into a directory: -o " + args.output +
                          " has another extension");
    if (to_npy && args.max_shard_bytes) throw usage_error("decode: --max-shard-size needs a .safetensors or directory output");
    if (!to_directory) check_not_an_input(args.output, args.inputs);
    // Mapped here so each tensor's pages can be given back once decoded (bounded resident memory).
    const mapped_file map(args.input());
    const file_reader in(reinterpret_cast<const std::uint8_t*>(map.data()), map.size(), args.input(), args.limits);
    if (args.verify) in.verify();
    auto release = [&](const tensor_info& t) {
        for (const auto& s : t.sections) map.release(static_cast<std::size_t>(s.offset), static_cast<std::size_t>(s.size));
    };
    std::vector<const tensor_info*> chosen;
    for (const auto& t : in.tensors())
        if (args.tensor.empty() || t.name == args.tensor) chosen.push_back(&t);
    if (!args.tensor.empty() && chosen.empty())
        throw std::runtime_error(in.name() + ": no tensor named '" + args.tensor + "'");
    temporary_cleanup::protect(args.output);

    std::uint64_t written = 0;
    if (to_npy) {
        if (chosen.size() != 1)
            throw std::runtime_error(in.name() + ": holds " + std::to_string(chosen.size()) +
                                     " tensors; an .npy file takes one: choose it with --tensor NAME");
        const tensor_info& t = *chosen[0];
        safetensors::dtype type = decoded_type(t, args.dtype);
        const bool widen = type == safetensors::dtype::BF16;  // NumPy has no bfloat16: float32 holds it exactly
        if (widen) type = safetensors::dtype::F32;
        if (!npy::writable(type))
            throw std::runtime_error(in.name() + ": tensor '" + t.name + "': dtype " + safetensors::dtype_name(type) +
                                     " has no NumPy equivalent; decode to .safetensors");
        npy::parallel_writer out(args.output, type, t.shape);
        npy_sink sink{out, widen, safetensors::dtype_size(type)};
        decode_tensors(in, chosen, args.thread_count(), sink, [&](std::size_t) { release(t); });
        out.finish();
        written = t.elements() * safetensors::dtype_size(type);
    } else {
        std::vector<safetensors::tensor_entry> entries;
        for (const auto* t : chosen) entries.push_back({t->name, decoded_type(*t, args.dtype), t->shape});
        for (const auto& e : entries) written += e.bytes();
        // Shards: tensors kept whole, in order, a new shard when the next would pass the limit.
        const std::optional<shard_plan> shards = plan_shards(args, source_shard_bytes(in));
        std::vector<std::vector<safetensors::tensor_entry>> groups(1);
        std::uint64_t group_bytes = 0;
        for (const auto& e : entries) {
            if (shards && !groups.back().empty() && group_bytes + e.bytes() > shards->max_bytes) {
                groups.emplace_back();
                group_bytes = 0;
            }
            groups.back().push_back(e);
            group_bytes += e.bytes();
        }
        std::vector<std::string> paths;
        if (!shards) paths.push_back(args.output);
        for (std::size_t i = 0; shards && i < groups.size(); ++i) paths.push_back(shards->stem + shard_name(i, groups.size()));
        const std::string index_path = shards ? shards->stem + ".safetensors.index.json" : "";
        for (const auto& path : paths) check_not_an_input(path, args.inputs);
        if (shards) {
            check_not_an_input(index_path, args.inputs);
            temporary_cleanup::protect(shards->stem);
        }
        // The file's metadata: "index/<key>" entries came from a source index and go back into one.
        std::vector<std::pair<std::string, std::string>> file_metadata, index_metadata;
        for (const auto& [key, value] : in.metadata()) {
            if (key.rfind("grphi/", 0) == 0) continue;
            if (shards && key.rfind("index/", 0) == 0) index_metadata.emplace_back(key.substr(6), value);
            else file_metadata.emplace_back(key, value);
        }
        // Every shard is written in full before any is moved into place.
        std::vector<std::unique_ptr<safetensors::parallel_writer>> outs;
        for (std::size_t i = 0; i < groups.size(); ++i)
            outs.push_back(std::make_unique<safetensors::parallel_writer>(paths[i], groups[i], file_metadata));
        progress_line progress(!args.quiet, chosen.size(), 0);
        safetensors_sink sink;  // groups hold the tensors in order
        for (std::size_t i = 0; i < groups.size(); ++i)
            for (std::size_t n = 0; n < groups[i].size(); ++n) sink.shard_of.push_back({outs[i].get(), n});
        std::size_t done = 0;
        decode_tensors(in, chosen, args.thread_count(), sink, [&](std::size_t k) {
            release(*chosen[k]);
            progress.update(++done, 0);
        });
        std::unique_ptr<output_file> index_file;
        if (shards) {
            std::vector<std::pair<std::string, std::string>> weight_map;
            for (std::size_t i = 0; i < groups.size(); ++i) {
                const std::string file = paths[i].substr(paths[i].find_last_of('/') + 1);
                for (const auto& e : groups[i]) weight_map.emplace_back(e.name, file);
            }
            const std::string text = safetensors::index_json(written, index_metadata, weight_map);
            index_file = std::make_unique<output_file>(index_path);
            index_file->write(text.data(), text.size());
        }
        for (auto& out : outs) out->finish();
        if (index_file) index_file->commit();
        progress.finish();
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
    // fresh mmaps whose pages fault in anew each time (the peak is unchanged). 32 MiB is the largest
    // threshold glibc accepts (a larger value is silently refused); parts are a few MB.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
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
