// The grphi tool end to end: safetensors/npy -> .grphi -> safetensors/npy equals the library's fake_quantize
// bit for bit, exact tensors pass through byte for byte, threads do not change the file, and malformed
// inputs fail with a one-line message naming the file and tensor, exit status 1 and no output left behind.
#include <doctest/doctest.h>

#include "cli_test_support.hpp"

#include <grphi/format/container.hpp>
#include <grphi/format/file_reader.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/io/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifdef GRPHI_CLI_PATH

namespace st = grphi::safetensors;
using cli_test::run_grphi;
using cli_test::scratch_dir;

namespace {

struct source_tensor {
    std::string name;
    st::dtype type;
    std::vector<std::uint64_t> shape;
    std::vector<double> values;  // written rounded to `type`
};

std::vector<source_tensor> sample_tensors() {
    std::vector<source_tensor> tensors = {
        {"conv.weight", st::dtype::F32, {6, 3, 3, 3}, cli_test::weights(162, 1)},
        {"fc.weight", st::dtype::F32, {37, 29}, cli_test::weights(37 * 29, 2)},
        {"fc.bias", st::dtype::F32, {37}, cli_test::weights(37, 3)},
        {"emb.weight", st::dtype::F16, {17, 8}, cli_test::weights(136, 4)},
        {"proj.weight", st::dtype::BF16, {9, 11}, cli_test::weights(99, 5)},
        {"head.weight", st::dtype::F64, {5, 13}, cli_test::weights(65, 6)},
        {"steps", st::dtype::I64, {4}, {}},
        {"empty.weight", st::dtype::F32, {0, 7}, {}},
        {"scalar", st::dtype::F32, {}, {2.5}},
        {"zeros.weight", st::dtype::F32, {3, 4}, std::vector<double>(12, 0.0)},
    };
    tensors[1].values[5] = 1e-41;  // a float denormal
    tensors[3].values[9] = 60000.0;
    return tensors;
}

void write_checkpoint(const std::string& path, const std::vector<source_tensor>& tensors) {
    std::vector<st::tensor_entry> entries;
    for (const auto& t : tensors) entries.push_back({t.name, t.type, t.shape});
    st::writer writer(path, entries, {{"format", "pt"}});
    for (const auto& t : tensors) {
        if (t.type == st::dtype::I64) {
            const std::int64_t steps[4] = {1, 2, -3, 1ll << 50};
            writer.write_bytes(steps, sizeof steps);
        } else {
            writer.write_values(t.values.data(), t.values.size());
        }
    }
    writer.finish();
}

std::string join(const std::vector<std::string>& parts) {
    std::string text;
    for (const auto& p : parts) text += p + " ";
    return text;
}

grphi::options parse_options(const std::vector<std::string>& flags) {
    grphi::options o;
    for (std::size_t i = 0; i < flags.size(); ++i) {
        const std::string& f = flags[i];
        if (f == "--levels") o.levels = std::stoi(flags[++i]);
        else if (f == "--e-min") o.e_min = std::stoi(flags[++i]);
        else if (f == "--e-max") o.e_max = std::stoi(flags[++i]);
        else if (f == "--per-tensor") o.per_channel = false;
        else if (f == "--cluster") o.cluster_size = std::stoi(flags[++i]);
        else if (f == "--rounding") o.round = flags[++i] == "linear" ? grphi::rounding::linear : grphi::rounding::log;
        else if (f == "--underflow") o.under = flags[++i] == "flush" ? grphi::underflow::flush : grphi::underflow::clamp;
        else if (f == "--fit-scale") o.fit_scale = true;
        else if (f == "--block") o.block_size = std::stoi(flags[++i]);
        else if (f == "--block-format") {
            const std::string v = flags[++i];
            o.block_format = v == "fp16" ? grphi::block_scale::fp16 : v == "e4m3" ? grphi::block_scale::e4m3 : grphi::block_scale::exponent;
        } else if (f == "--search") o.search = flags[++i] == "mse" ? grphi::scale_search::mse : grphi::scale_search::absmax;
        else ++i;  // --base X, --chunk-weights N, --threads N
    }
    return o;
}

std::string base_of(const std::vector<std::string>& flags) {
    for (std::size_t i = 0; i + 1 < flags.size(); ++i)
        if (flags[i] == "--base") return flags[i + 1] == "1.4142135623730951" ? "sqrt2" : flags[i + 1];
    return "phi";
}

// What the library says the tool must produce for a tensor read as T.
template <class T>
grphi::row_matrix<T> expected_values(const st::reader& source, const st::tensor_info& info,
                                     const std::vector<std::string>& flags) {
    const auto rows = static_cast<Eigen::Index>(info.shape[0]);
    const auto cols = rows ? static_cast<Eigen::Index>(info.elements() / info.shape[0]) : 0;
    grphi::row_matrix<T> W(rows, cols);
    source.read(info, 0, info.elements(), W.data());
    grphi::options o = parse_options(flags);
    const std::string base = base_of(flags);
    if (base == "two") return grphi::fake_quantize<grphi::two>(W, o);
    if (base == "sqrt2") return grphi::fake_quantize<grphi::sqrt2>(W, o);
    if (base == "phi") return grphi::fake_quantize<grphi::phi>(W, o);
    o.base_value = std::stod(base);  // any other number is a run-time base
    return grphi::fake_quantize<grphi::custom>(W, o);
}

template <class T>
void check_bitwise(const st::reader& decoded, const st::tensor_info& info, const grphi::row_matrix<T>& expected) {
    std::vector<T> got(info.elements());
    decoded.read(info, 0, info.elements(), got.data());
    REQUIRE(static_cast<Eigen::Index>(got.size()) == expected.size());
    if (!got.empty()) CHECK(std::memcmp(got.data(), expected.data(), got.size() * sizeof(T)) == 0);
}

// quantize + decode with `flags`; every tensor checked against fake_quantize or the source bytes.
void check_round_trip(const scratch_dir& dir, const std::vector<std::string>& flags,
                      const std::vector<std::string>& exact_names) {
    CAPTURE(join(flags));
    const std::string in = dir.file("in.safetensors"), coded = dir.file("out.grphi"), back = dir.file("back.safetensors");
    std::vector<std::string> args = {"quantize", in, "-o", coded, "--quiet"};
    args.insert(args.end(), flags.begin(), flags.end());
    const auto quantized = run_grphi(dir, args);
    INFO(quantized.err);
    REQUIRE(quantized.status == 0);
    const auto decoded = run_grphi(dir, {"decode", coded, "-o", back});
    INFO(decoded.err);
    REQUIRE(decoded.status == 0);

    const st::reader source(in), result(back);
    REQUIRE(result.tensors().size() == source.tensors().size());
    for (const auto& info : source.tensors()) {
        CAPTURE(info.name);
        const st::tensor_info* out = result.find(info.name);
        REQUIRE(out != nullptr);
        CHECK(out->shape == info.shape);
        const bool exact = std::find(exact_names.begin(), exact_names.end(), info.name) != exact_names.end();
        if (exact) {
            CHECK(out->type == info.type);
            CHECK(out->bytes() == info.bytes());
            CHECK(std::memcmp(result.bytes(*out), source.bytes(info), info.bytes()) == 0);
        } else if (info.type == st::dtype::F64) {
            CHECK(out->type == st::dtype::F64);
            check_bitwise(result, *out, expected_values<double>(source, info, flags));
        } else if (info.type == st::dtype::F32) {
            CHECK(out->type == st::dtype::F32);
            check_bitwise(result, *out, expected_values<float>(source, info, flags));
        } else {
            // F16 and BF16 come back in their own dtype: the quantized float value rounded to nearest even.
            CHECK(out->type == info.type);
            const grphi::row_matrix<float> expected = expected_values<float>(source, info, flags);
            std::vector<unsigned char> bytes(static_cast<std::size_t>(expected.size()) * 2);
            st::convert_from(expected.data(), static_cast<std::size_t>(expected.size()), info.type, bytes.data());
            REQUIRE(out->bytes() == bytes.size());
            CHECK(std::memcmp(result.bytes(*out), bytes.data(), bytes.size()) == 0);
        }
    }
}


// A failing run: exit 1, exactly one line on stderr containing `needle`, nothing at `output`.
void check_failure(const scratch_dir& dir, const std::vector<std::string>& args, const std::string& needle,
                   const std::string& output) {
    CAPTURE(join(args));
    const auto r = run_grphi(dir, args);
    CHECK(r.status == 1);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(r.err.rfind("grphi: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    INFO(r.err);
    if (!output.empty()) CHECK(!cli_test::exists(output));
}

// The fields of a CSV line (RFC 4180 quotes, no embedded quotes).
std::vector<std::string> csv_fields(const std::string& line) {
    std::vector<std::string> fields(1);
    bool quoted = false;
    for (const char c : line) {
        if (c == '"') quoted = !quoted;
        else if (c == ',' && !quoted) fields.emplace_back();
        else fields.back() += c;
    }
    return fields;
}

}  // namespace

TEST_CASE("cli: safetensors -> grphi -> safetensors equals fake_quantize; exact tensors byte for byte") {
    scratch_dir dir;
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    const std::vector<std::string> exact = {"fc.bias", "steps", "scalar"};
    check_round_trip(dir, {}, exact);
    check_round_trip(dir, {"--levels", "4", "--fit-scale", "--chunk-weights", "50"}, exact);
    check_round_trip(dir, {"--per-tensor", "--e-min", "-20", "--e-max", "2", "--threads", "2"}, exact);
    check_round_trip(dir, {"--base", "two", "--cluster", "4", "--rounding", "linear", "--underflow", "flush",
                           "--chunk-weights", "30", "--threads", "2"},
                     exact);
    check_round_trip(dir, {"--base", "1.4142135623730951", "--levels", "6", "--cluster", "3", "--per-tensor"}, exact);
    check_round_trip(dir, {"--base", "sqrt2", "--levels", "3", "--underflow", "flush", "--fit-scale", "--rounding", "linear"},
                     exact);
    // Run-time bases (grphi::custom): the same exact machinery, the value travels in the file.
    check_round_trip(dir, {"--base", "1.5", "--levels", "8", "--chunk-weights", "50", "--threads", "2"}, exact);
    check_round_trip(dir, {"--base", "3.7", "--fit-scale", "--rounding", "linear", "--underflow", "flush", "--cluster", "3"},
                     exact);
    // Globs choose what is quantized; the rest passes through untouched.
    check_round_trip(dir, {"--exclude", "fc.*", "--exclude", "emb.*"}, {"fc.bias", "steps", "scalar", "fc.weight", "emb.weight"});
    check_round_trip(dir, {"--include", "conv.*"},
                     {"fc.bias", "steps", "scalar", "fc.weight", "emb.weight", "proj.weight", "head.weight",
                      "empty.weight", "zeros.weight"});
    CHECK(dir.listing().size() == 3);  // in, out, back: no temporaries left
}

TEST_CASE("cli: block-scaled tensors (--block, --rule ...,block=N) round-trip through the file bit for bit") {
    scratch_dir dir;
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    const std::vector<std::string> exact = {"fc.bias", "steps", "scalar"};
    check_round_trip(dir, {"--levels", "8", "--block", "32", "--chunk-weights", "50"}, exact);
    check_round_trip(dir, {"--levels", "8", "--block", "16", "--block-format", "e4m3", "--search", "mse", "--threads", "2"}, exact);
    check_round_trip(dir, {"--levels", "6", "--block", "8", "--block-format", "fp16", "--per-tensor", "--chunk-weights", "40"}, exact);
    check_round_trip(dir, {"--base", "two", "--levels", "4", "--block", "16", "--fit-scale", "--threads", "2"}, exact);

    // A rule gives one tensor blocks of 32 (fc.weight: 29 columns, one short block per row); info shows it.
    const std::string coded = dir.file("r.grphi");
    const auto q = run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", coded, "--quiet", "--levels", "5", "--rule",
                                   "fc\\.weight=phi,levels=8,block=32", "--chunk-weights", "100"});
    INFO(q.err);
    REQUIRE(q.status == 0);
    const auto info = run_grphi(dir, {"info", coded, "--verify"});
    INFO(info.err);
    REQUIRE(info.status == 0);
    std::istringstream lines(info.out);
    std::string line, fc_line;
    while (std::getline(lines, line))
        if (line.find("fc.weight") != std::string::npos) fc_line = line;
    CHECK(fc_line.find("phi,levels=8,block=32") != std::string::npos);
    const grphi::file_reader in(coded);
    CHECK(in.at("fc.weight").opts.block_size == 32);
    CHECK(in.at("fc.weight").sections.size() == 13);  // 3 rows per part
    CHECK(in.at("conv.weight").opts.block_size == 0);
    REQUIRE(run_grphi(dir, {"decode", coded, "-o", dir.file("r.safetensors")}).status == 0);
    const st::reader source(dir.file("in.safetensors")), back(dir.file("r.safetensors"));
    check_bitwise(back, *back.find("fc.weight"),
                  expected_values<float>(source, *source.find("fc.weight"), {"--levels", "8", "--block", "32"}));
    check_bitwise(back, *back.find("conv.weight"), expected_values<float>(source, *source.find("conv.weight"), {"--levels", "5"}));
}

TEST_CASE("cli: the library's file_reader, knowing nothing of the tool, lists exactly the checkpoint's tensors") {
    scratch_dir dir;
    const std::vector<source_tensor> source = sample_tensors();
    write_checkpoint(dir.file("in.safetensors"), source);
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--levels", "6",
                            "--chunk-weights", "300"}).status == 0);
    const grphi::file_reader in(dir.file("m.grphi"));
    in.verify();
    // The same tensors, in the same order, with their N-D shapes and dtypes; the metadata as given.
    REQUIRE(in.tensors().size() == source.size());
    const st::reader original(dir.file("in.safetensors"));
    for (std::size_t i = 0; i < source.size(); ++i) {
        const grphi::tensor_info& t = in.tensors()[i];
        CAPTURE(source[i].name);
        CHECK(t.name == source[i].name);
        CHECK(t.shape == source[i].shape);
        CHECK(std::string(grphi::dtype_name(t.source)) == st::dtype_name(source[i].type));
        // Integer, empty, 1-D and rank-0 tensors are kept exact: raw, byte-identical to the source.
        const bool raw = source[i].type == st::dtype::I64 || source[i].shape.size() < 2 || source[i].name == "empty.weight";
        CHECK((t.kind == grphi::tensor_kind::raw) == raw);
        if (raw) {
            const grphi::raw_view view = in.raw(t.name);
            const st::tensor_info& o = *original.find(t.name);
            REQUIRE(view.size == o.bytes());
            CHECK(std::memcmp(view.data, original.bytes(o), view.size) == 0);
        }
    }
    CHECK(in.metadata() == grphi::metadata_map{{"format", "pt"}});
    // fc.weight (1073 weights) is stored as row parts of ~300 weights (10 rows), reassembled by the reader.
    const grphi::tensor_info& fc = in.at("fc.weight");
    CHECK(fc.sections.size() == 4);
    const auto conv = in.read<float, grphi::phi>("conv.weight");
    CHECK(conv.rows == 6);
    CHECK(conv.cols == 27);
    CHECK(conv.opts.levels == 6);
    // grphi::load sees the quantized tensors, with the matrix views' shapes.
    const std::vector<grphi::stored_tensor> stored = grphi::load(dir.file("m.grphi"));
    std::size_t quantized = 0;
    for (const auto& t : in.tensors()) quantized += t.kind == grphi::tensor_kind::quantized;
    CHECK(stored.size() == quantized);
}

TEST_CASE("cli: info and decode read a plain library container (no tool manifest)") {
    scratch_dir dir;
    grphi::row_matrix<double> W(5, 9);
    const auto values = cli_test::weights(45, 11);
    std::copy(values.begin(), values.end(), W.data());
    grphi::options o;
    o.levels = 4;
    o.cluster_size = 2;
    const auto p = grphi::quantize<grphi::two>(W, o);
    grphi::save(dir.file("lib.grphi"), {grphi::named("w", p)});

    const auto info = run_grphi(dir, {"info", dir.file("lib.grphi")});
    INFO(info.err);
    REQUIRE(info.status == 0);
    CHECK(info.out.find("[5, 9]") != std::string::npos);
    CHECK(info.out.find("two,levels=4,cluster=2") != std::string::npos);
    const auto decoded = run_grphi(dir, {"decode", dir.file("lib.grphi"), "-o", dir.file("w.safetensors")});
    INFO(decoded.err);
    REQUIRE(decoded.status == 0);
    const st::reader back(dir.file("w.safetensors"));
    REQUIRE(back.tensors().size() == 1);
    CHECK(back.tensors()[0].type == st::dtype::F64);
    check_bitwise(back, back.tensors()[0], grphi::dequantize(p));
}

TEST_CASE("cli: a run-time base (--base <number>): info shows its value, decode and grphi::load read it") {
    scratch_dir dir;
    grphi::row_matrix<double> W(5, 9);
    const auto values = cli_test::weights(45, 12);
    std::copy(values.begin(), values.end(), W.data());
    grphi::options o;
    o.levels = 6;
    o.base_value = 1.5;
    const auto p = grphi::quantize<grphi::custom>(W, o);
    grphi::save(dir.file("lib.grphi"), {grphi::named("w", p)});
    const auto info = run_grphi(dir, {"info", dir.file("lib.grphi")});
    INFO(info.err);
    REQUIRE(info.status == 0);
    CHECK(info.out.find(" 1.5,levels=6 ") != std::string::npos);
    const auto decoded = run_grphi(dir, {"decode", dir.file("lib.grphi"), "-o", dir.file("w.safetensors")});
    INFO(decoded.err);
    REQUIRE(decoded.status == 0);
    const st::reader back(dir.file("w.safetensors"));
    REQUIRE(back.tensors().size() == 1);
    check_bitwise(back, back.tensors()[0], grphi::dequantize(p));

    // The tool's own file: the base value is stored with every quantized tensor.
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--base", "3.7"}).status == 0);
    const auto listing = run_grphi(dir, {"info", dir.file("m.grphi")});
    REQUIRE(listing.status == 0);
    CHECK(listing.out.find(" 3.7 ") != std::string::npos);  // the spec column: the base, no options
    for (const auto& t : grphi::load(dir.file("m.grphi")))
        if (t.name == "conv.weight") CHECK(t.as<float, grphi::custom>().opts.base_value == 3.7);
    const auto report = run_grphi(dir, {"report", dir.file("in.safetensors"), "--base", "3.7", "--csv", "--quiet"});
    REQUIRE(report.status == 0);
    CHECK(report.out.find("conv.weight,F32,[6x3x3x3],3.7,") != std::string::npos);
}

TEST_CASE("cli: one and two threads write identical files, whatever the chunking") {
    scratch_dir dir;
    const std::string in = dir.file("in.safetensors");
    write_checkpoint(in, sample_tensors());
    for (const char* chunk : {"20", "1000000"}) {
        const auto one = run_grphi(dir, {"quantize", in, "-o", dir.file("1.grphi"), "--threads", "1", "--chunk-weights", chunk, "--levels", "5"});
        const auto two = run_grphi(dir, {"quantize", in, "-o", dir.file("2.grphi"), "--threads", "2", "--chunk-weights", chunk, "--levels", "5"});
        REQUIRE(one.status == 0);
        REQUIRE(two.status == 0);
        CHECK(cli_test::slurp(dir.file("1.grphi")) == cli_test::slurp(dir.file("2.grphi")));
    }
}

TEST_CASE("cli: with thousands of row parts, the file lists every part and decodes as the unsplit one") {
    scratch_dir dir;
    const std::string in = dir.file("in.safetensors");
    write_checkpoint(in, {{"tall.weight", st::dtype::F32, {3000, 2}, cli_test::weights(6000, 9)}});
    // One row per part: 3000 sections of one tensor.
    REQUIRE(run_grphi(dir, {"quantize", in, "-o", dir.file("rows.grphi"), "--chunk-weights", "2"}).status == 0);
    REQUIRE(run_grphi(dir, {"quantize", in, "-o", dir.file("whole.grphi")}).status == 0);
    const grphi::file_reader rows(dir.file("rows.grphi"));
    rows.verify();
    REQUIRE(rows.tensors().size() == 1);
    CHECK(rows.tensors()[0].sections.size() == 3000);
    CHECK(grphi::file_reader(dir.file("whole.grphi")).tensors()[0].sections.size() == 1);
    REQUIRE(run_grphi(dir, {"decode", dir.file("rows.grphi"), "-o", dir.file("rows.safetensors"), "--threads", "2"}).status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("whole.grphi"), "-o", dir.file("whole.safetensors")}).status == 0);
    CHECK(cli_test::slurp(dir.file("rows.safetensors")) == cli_test::slurp(dir.file("whole.safetensors")));
}

TEST_CASE("cli: info --verify checks every section's CRC-32 without decoding; reader limits are options") {
    scratch_dir dir;
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--chunk-weights", "300"}).status == 0);
    const auto good = run_grphi(dir, {"info", "--verify", dir.file("m.grphi")});
    INFO(good.err);
    REQUIRE(good.status == 0);
    CHECK(good.out.find("verified") != std::string::npos);
    // Flip one byte inside a data section (fc.weight's second part): the index still parses, info lists
    // the file, info --verify and decode --verify report the corruption.
    std::string image = cli_test::slurp(dir.file("m.grphi"));
    const grphi::section_info part = grphi::file_reader(dir.file("m.grphi")).at("fc.weight").sections.at(1);
    image[static_cast<std::size_t>(part.offset + part.size / 2)] ^= 0x20;
    cli_test::spit(dir.file("bad.grphi"), image);
    CHECK(run_grphi(dir, {"info", dir.file("bad.grphi")}).status == 0);
    const auto bad = run_grphi(dir, {"info", "--verify", dir.file("bad.grphi")});
    CHECK(bad.status == 1);
    CHECK(bad.err.find("bad.grphi: tensor 'fc.weight' part 1: data section checksum mismatch") != std::string::npos);
    const auto decode = run_grphi(dir, {"decode", "--verify", dir.file("bad.grphi"), "-o", dir.file("out.safetensors")});
    CHECK(decode.status == 1);
    CHECK(decode.err.find("checksum mismatch") != std::string::npos);
    CHECK(!cli_test::exists(dir.file("out.safetensors")));

    // --max-elements below the file's quantized weights: refused while the index is read.
    const auto limited = run_grphi(dir, {"info", "--max-elements", "100", dir.file("m.grphi")});
    CHECK(limited.status == 1);
    CHECK(limited.err.find("m.grphi") != std::string::npos);
    CHECK(run_grphi(dir, {"info", "--max-elements", "1000000", dir.file("m.grphi")}).status == 0);
    CHECK(run_grphi(dir, {"info", "--max-tensors", "2", dir.file("m.grphi")}).status == 1);
    CHECK(run_grphi(dir, {"info", "--max-elements", "0", dir.file("m.grphi")}).status == 2);
}

TEST_CASE("cli: info lists every tensor with its shape and mode") {
    scratch_dir dir;
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--levels", "7"}).status == 0);
    const auto info = run_grphi(dir, {"info", dir.file("m.grphi")});
    INFO(info.err);
    REQUIRE(info.status == 0);
    for (const auto& t : sample_tensors()) CHECK(info.out.find(t.name) != std::string::npos);
    CHECK(info.out.find("[6, 3, 3, 3]") != std::string::npos);
    CHECK(info.out.find("[37, 29]") != std::string::npos);
    CHECK(info.out.find("exact") != std::string::npos);
    CHECK(info.out.find("phi") != std::string::npos);
}

TEST_CASE("cli: .npy in (Fortran order) and .npy out") {
    scratch_dir dir;
    // A (4, 3, 2) Fortran-order float64 array, hand-built.
    const std::vector<double> values = cli_test::weights(24, 9);
    std::string dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (4, 3, 2), }";
    while ((10 + dict.size() + 1) % 64) dict += ' ';
    dict += '\n';
    std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(dict.size()) + '\0' + dict;
    std::vector<double> fortran(24);
    grphi::row_matrix<double> c_order(4, 6);
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 2; ++k) {
                fortran[static_cast<std::size_t>(i + 4 * (j + 3 * k))] = values[static_cast<std::size_t>((i * 3 + j) * 2 + k)];
                c_order(i, j * 2 + k) = values[static_cast<std::size_t>((i * 3 + j) * 2 + k)];
            }
    bytes.append(reinterpret_cast<const char*>(fortran.data()), 24 * 8);
    cli_test::spit(dir.file("w.npy"), bytes);

    const auto q = run_grphi(dir, {"quantize", dir.file("w.npy"), "-o", dir.file("w.grphi"), "--levels", "6"});
    INFO(q.err);
    REQUIRE(q.status == 0);
    const auto d = run_grphi(dir, {"decode", dir.file("w.grphi"), "-o", dir.file("back.npy")});
    INFO(d.err);
    REQUIRE(d.status == 0);
    grphi::npy::reader back(dir.file("back.npy"));
    CHECK(back.info().shape == std::vector<std::uint64_t>{4, 3, 2});
    CHECK(back.info().type == grphi::npy::element_type::F64);
    std::vector<double> got(24);
    back.read_rows(0, 4, got.data());
    grphi::options o;
    o.levels = 6;
    const grphi::row_matrix<double> expected = grphi::fake_quantize<grphi::phi>(c_order, o);
    CHECK(std::memcmp(got.data(), expected.data(), 24 * 8) == 0);

    // A multi-tensor file needs --tensor to go to .npy.
    write_checkpoint(dir.file("in.safetensors"), sample_tensors());
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi")}).status == 0);
    check_failure(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("m.npy")}, "--tensor", dir.file("m.npy"));
    const auto one = run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("fc.npy"), "--tensor", "fc.bias"});
    INFO(one.err);
    REQUIRE(one.status == 0);
    grphi::npy::reader bias(dir.file("fc.npy"));
    CHECK(bias.info().shape == std::vector<std::uint64_t>{37});
    std::vector<float> b(37);
    bias.read_rows(0, 1, b.data());
    CHECK(b[0] == static_cast<float>(sample_tensors()[2].values[0]));
    check_failure(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("x.npy"), "--tensor", "nope"}, "'nope'",
                  dir.file("x.npy"));
}

TEST_CASE("cli: report shows every tensor; SQNR agrees with fake_quantize") {
    scratch_dir dir;
    const auto tensors = sample_tensors();
    write_checkpoint(dir.file("in.safetensors"), tensors);
    const auto r = run_grphi(dir, {"report", dir.file("in.safetensors"), "--csv", "--levels", "5", "--chunk-weights", "40"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    std::map<std::string, std::vector<std::string>> rows;
    std::istringstream lines(r.out);
    std::string line;
    std::getline(lines, line);
    CHECK(line.rfind("tensor,dtype,shape,mode,weights,levels_used", 0) == 0);
    while (std::getline(lines, line)) {
        rows[csv_fields(line)[0]] = csv_fields(line);
    }
    CHECK(rows.size() == tensors.size() + 2);
    CHECK(rows["fc.bias"][3] == "exact");
    REQUIRE(rows["fc.weight"].size() == 10);
    CHECK(rows["fc.weight"][2] == "[37x29]");
    CHECK(rows["fc.weight"][4] == "1073");
    const int levels_used = std::stoi(rows["fc.weight"][5]);
    CHECK(levels_used >= 5);  // windows of 5 per row, tops differ between rows
    CHECK(levels_used <= 20);

    // SQNR of fc.weight recomputed from the library.
    const st::reader source(dir.file("in.safetensors"));
    const st::tensor_info& info = *source.find("fc.weight");
    grphi::row_matrix<float> W(37, 29);
    source.read(info, 0, info.elements(), W.data());
    grphi::options o;
    o.levels = 5;
    const grphi::row_matrix<float> Q = grphi::fake_quantize<grphi::phi>(W, o);
    double signal = 0, noise = 0;
    for (Eigen::Index i = 0; i < W.size(); ++i) {
        signal += double(W.data()[i]) * W.data()[i];
        noise += (double(W.data()[i]) - Q.data()[i]) * (double(W.data()[i]) - Q.data()[i]);
    }
    CHECK(std::stod(rows["fc.weight"][9]) == doctest::Approx(10 * std::log10(signal / noise)).epsilon(1e-3));
    CHECK(std::stod(rows["fc.weight"][8]) > 1.0);  // 37 one-row parts here: mostly per-part overhead

    // Unsplit, the coded size is what `quantize` stores: compare with `info` on the real file.
    const auto text = run_grphi(dir, {"report", dir.file("in.safetensors"), "--levels", "5"});
    REQUIRE(text.status == 0);
    CHECK(text.out.find("total quantized:") != std::string::npos);
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--levels", "5"}).status == 0);
    const auto listing = run_grphi(dir, {"info", dir.file("m.grphi")});
    REQUIRE(listing.status == 0);
    auto bits_of = [](const std::string& out, const std::string& name) {
        const std::size_t at = out.find(name + " ");
        REQUIRE(at != std::string::npos);
        const std::string line = out.substr(at, out.find('\n', at) - at);
        std::istringstream fields(line);
        std::vector<std::string> words;
        for (std::string w; fields >> w;) words.push_back(w);
        return words;
    };
    const auto report_words = bits_of(text.out, "fc.weight");
    const auto info_words = bits_of(listing.out, "fc.weight");
    CHECK(report_words[report_words.size() - 2] == info_words.back());  // same coded bits/weight
    CHECK(std::stod(info_words.back()) < 8.0);
}

TEST_CASE("cli: malformed inputs and bad outputs fail with one line, exit 1, and leave nothing behind") {
    scratch_dir dir;
    const std::string out = dir.file("out.grphi");
    const std::string header = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
    auto image = [](const std::string& h, std::size_t data_bytes) {
        std::string bytes(8, '\0');
        for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
        return bytes + h + std::string(data_bytes, '\0');
    };
    const std::string bad = dir.file("bad.safetensors");
    cli_test::spit(bad, image(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})", 16));
    check_failure(dir, {"quantize", bad, "-o", out}, bad + ": header: JSON error", out);
    cli_test::spit(bad, image(R"({"w":{"dtype":"Q8","shape":[2,2],"data_offsets":[0,16]}})", 16));
    check_failure(dir, {"quantize", bad, "-o", out}, bad + ": tensor 'w': unknown dtype 'Q8'", out);
    cli_test::spit(bad, image(header, 12));
    check_failure(dir, {"quantize", bad, "-o", out}, "tensor 'w': data_offsets [0, 16] past the end of the data", out);
    cli_test::spit(bad, image(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16));
    check_failure(dir, {"report", bad}, "tensor 'b': data_offsets [8, 16) overlap tensor 'a'", "");
    cli_test::spit(bad, image(header, 16).substr(0, 5));
    check_failure(dir, {"quantize", bad, "-o", out}, "truncated file", out);

    const std::string be = dir.file("be.npy");
    std::string dict = "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }";
    while ((10 + dict.size() + 1) % 64) dict += ' ';
    cli_test::spit(be, std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(dict.size() + 1) + '\0' + dict + "\n" +
                           std::string(16, '\0'));
    check_failure(dir, {"quantize", be, "-o", out}, be + ": big-endian dtype '>f4' is not supported", out);

    // NaN inside a weight: named by tensor; an existing output file is left as it was.
    auto tensors = sample_tensors();
    tensors[1].values[40] = std::nan("");
    const std::string nan_in = dir.file("nan.safetensors");
    write_checkpoint(nan_in, tensors);
    cli_test::spit(out, "previous contents");
    check_failure(dir, {"quantize", nan_in, "-o", out, "--chunk-weights", "100"}, nan_in + ": tensor 'fc.weight'", "");
    CHECK(cli_test::slurp(out) == "previous contents");
    std::remove(out.c_str());

    const std::string good = dir.file("good.safetensors");
    write_checkpoint(good, sample_tensors());
    check_failure(dir, {"quantize", good, "-o", dir.file("no/such/dir/x.grphi")}, dir.file("no/such/dir/x.grphi"), "");
    check_failure(dir, {"quantize", dir.file("missing.safetensors"), "-o", out}, "missing.safetensors: cannot open", out);

    // A damaged .grphi: decode and info refuse it, decode writes nothing.
    REQUIRE(run_grphi(dir, {"quantize", good, "-o", out}).status == 0);
    const std::string coded = cli_test::slurp(out);
    cli_test::spit(dir.file("cut.grphi"), coded.substr(0, coded.size() / 2));
    check_failure(dir, {"decode", dir.file("cut.grphi"), "-o", dir.file("cut.safetensors")}, dir.file("cut.grphi"),
                  dir.file("cut.safetensors"));
    check_failure(dir, {"info", dir.file("cut.grphi")}, dir.file("cut.grphi"), "");
    check_failure(dir, {"decode", good, "-o", dir.file("x.safetensors")}, good, dir.file("x.safetensors"));

    // Command-line mistakes: exit 2, one line.
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"quantize", good}, {"frobnicate", good}, {"quantize", good, "-o", out, "--levels", "0"},
          {"quantize", good, "-o", out, "--base", "1.0"}, {"quantize", good, "-o", out, "--base", "abc"},
          {"quantize", good, "-o", out, "--base", "1.02"}, {"quantize", good, "-o", out, "--base", "nan"},
          {"quantize", good, "-o", out, "--base", "inf"}, {"quantize", good, "-o", out, "--rounding", "up"},
          {"report", good, "--e-min", "3", "--e-max", "1"}, {}}) {
        CAPTURE(join(args));
        const auto r = run_grphi(dir, args);
        CHECK(r.status == 2);
        CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
        if (args.size() == 6 && args[4] == "--base") CHECK(r.err.find("--base " + args[5] + ": expected") != std::string::npos);
    }
    const auto help = run_grphi(dir, {"--help"});
    CHECK(help.status == 0);
    CHECK(help.out.find("grphi quantize") != std::string::npos);

    auto names = dir.listing();
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"bad.safetensors", "be.npy", "cut.grphi", "good.safetensors", "nan.safetensors", "out.grphi"});
}

#endif  // GRPHI_CLI_PATH
