// The grphi tool on real checkpoint layouts and hostile files: sharded safetensors (index, directory, several
// files), per-tensor rules, source dtypes on the way out, integer and bool arrays, inputs recognised by
// content (GGUF, ONNX, pickle refused), safetensors gaps, outputs that would replace the input, zero-column
// tensors of 10^11 rows, and runs killed by signals or the file-size limit.
#include <doctest/doctest.h>

#include "cli_test_support.hpp"

#include <grphi/io/npy.hpp>
#include <grphi/core/quantize.hpp>
#include <grphi/io/safetensors.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#ifdef GRPHI_CLI_PATH

namespace st = grphi::safetensors;
using cli_test::run_grphi;
using cli_test::scratch_dir;

namespace {

struct tensor_spec {
    std::string name;
    st::dtype type;
    std::vector<std::uint64_t> shape;
    std::uint32_t seed = 0;  // float tensors: Gaussian weights from this seed; others: bytes from it
};

std::uint64_t elements(const std::vector<std::uint64_t>& shape) {
    std::uint64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

// Integer tensors get arbitrary bytes; bool tensors 0/1.
std::string raw_bytes(const tensor_spec& t) {
    const std::size_t n = static_cast<std::size_t>(elements(t.shape) * st::dtype_size(t.type));
    std::string bytes(n, '\0');
    std::uint32_t x = t.seed * 2654435761u + 1;
    for (auto& b : bytes) {
        x = x * 1664525u + 1013904223u;
        b = static_cast<char>(t.type == st::dtype::BOOL ? (x >> 31) : (x >> 24));
    }
    return bytes;
}

void write_safetensors(const std::string& path, const std::vector<tensor_spec>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
    std::vector<st::tensor_entry> entries;
    for (const auto& t : tensors) entries.push_back({t.name, t.type, t.shape});
    st::writer out(path, entries, metadata);
    for (const auto& t : tensors) {
        if (st::is_floating(t.type)) {
            const auto w = cli_test::weights(static_cast<std::size_t>(elements(t.shape)), t.seed);
            out.write_values(w.data(), w.size());
        } else {
            const std::string bytes = raw_bytes(t);
            out.write_bytes(bytes.data(), bytes.size());
        }
    }
    out.finish();
}

// A transformer-like checkpoint in three shards with an index: F32, BF16, F16 weights, I64 and BOOL
// buffers, 1-D norms, __metadata__ in every shard.
const std::vector<std::vector<tensor_spec>>& shard_tensors() {
    static const std::vector<std::vector<tensor_spec>> shards = {
        {{"model.embed_tokens.weight", st::dtype::BF16, {50, 16}, 1}, {"model.layers.0.attn.q.weight", st::dtype::F32, {16, 16}, 2},
         {"model.layers.0.norm.weight", st::dtype::F32, {16}, 3}},
        {{"model.layers.0.mlp.up.weight", st::dtype::F16, {32, 16}, 4}, {"model.layers.0.position_ids", st::dtype::I64, {1, 12}, 5},
         {"model.layers.0.attn.mask", st::dtype::BOOL, {4, 4}, 6}},
        {{"model.layers.1.attn.q.weight", st::dtype::BF16, {16, 16}, 7}, {"lm_head.weight", st::dtype::F32, {50, 16}, 8},
         {"model.norm.weight", st::dtype::BF16, {16}, 9}},
    };
    return shards;
}

std::vector<std::string> write_sharded(const scratch_dir& dir, const std::string& sub) {
    std::system(("mkdir -p '" + dir.file(sub) + "'").c_str());
    std::vector<std::string> files;
    std::string weight_map;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < 3; ++i) {
        const std::string name = "model-0000" + std::to_string(i + 1) + "-of-00003.safetensors";
        files.push_back(dir.file(sub + "/" + name));
        write_safetensors(files.back(), shard_tensors()[i], {{"format", "pt"}});
        for (const auto& t : shard_tensors()[i]) {
            weight_map += std::string(weight_map.empty() ? "" : ",") + "\"" + t.name + "\":\"" + name + "\"";
            total += elements(t.shape) * st::dtype_size(t.type);
        }
    }
    cli_test::spit(dir.file(sub + "/model.safetensors.index.json"),
                   "{\"metadata\":{\"total_size\":" + std::to_string(total) + ",\"note\":\"caf\xc3\xa9\"},\"weight_map\":{" +
                       weight_map + "}}");
    return files;
}

// A failing run: exit `status`, one line on stderr containing `needle`, nothing at `output`.
void check_failure(const scratch_dir& dir, const std::vector<std::string>& args, const std::string& needle,
                   const std::string& output, int status = 1) {
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    CAPTURE(joined);
    const auto r = run_grphi(dir, args);
    INFO(r.err);
    CHECK(r.status == status);
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    if (!output.empty()) CHECK(!cli_test::exists(output));
}

template <class Base>
grphi::row_matrix<float> fake(const st::reader& source, const std::string& name, const grphi::options& o) {
    const st::tensor_info& info = *source.find(name);
    const auto rows = static_cast<Eigen::Index>(info.shape.size() >= 2 ? info.shape[0] : 1);
    grphi::row_matrix<float> W(rows, static_cast<Eigen::Index>(info.elements()) / rows);
    source.read(info, 0, info.elements(), W.data());
    return grphi::fake_quantize<Base>(W, o);
}

// The bytes `type` holds for the values (F16/BF16 rounded to nearest even, as decode does).
std::string encoded(const grphi::row_matrix<float>& values, st::dtype type) {
    std::string bytes(static_cast<std::size_t>(values.size()) * st::dtype_size(type), '\0');
    st::convert_from(values.data(), static_cast<std::size_t>(values.size()), type,
                     reinterpret_cast<unsigned char*>(bytes.data()));
    return bytes;
}

std::string tensor_bytes(const st::reader& r, const std::string& name) {
    const st::tensor_info* info = r.find(name);
    REQUIRE(info != nullptr);
    return std::string(reinterpret_cast<const char*>(r.bytes(*info)), static_cast<std::size_t>(info->bytes()));
}

std::string line_of(const std::string& out, const std::string& name) {
    const std::size_t at = out.find(name + " ");
    REQUIRE(at != std::string::npos);
    return out.substr(at, out.find('\n', at) - at);
}

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> w;
    std::string word;
    for (const char c : line + " ") {
        if (c == ' ') {
            if (!word.empty()) w.push_back(word);
            word.clear();
        } else {
            word += c;
        }
    }
    return w;
}

// info's spec column: the word before the last (bits/weight).
std::string spec_in_info(const std::string& out, const std::string& name) {
    const auto w = words(line_of(out, name));
    return w[w.size() - 2];
}

}  // namespace

TEST_CASE("cli checkpoints: a 3-shard checkpoint by index, directory or files gives one file; decode restores it") {
    scratch_dir dir;
    const std::vector<std::string> shards = write_sharded(dir, "ckpt");
    const std::string index = dir.file("ckpt/model.safetensors.index.json");
    const auto by_index = run_grphi(dir, {"quantize", index, "-o", dir.file("a.grphi"), "--levels", "6", "--quiet"});
    INFO(by_index.err);
    REQUIRE(by_index.status == 0);
    REQUIRE(run_grphi(dir, {"quantize", dir.file("ckpt"), "-o", dir.file("b.grphi"), "--levels", "6", "--quiet"}).status == 0);
    REQUIRE(run_grphi(dir, {"quantize", shards[0], shards[1], shards[2], "-o", dir.file("c.grphi"), "--levels", "6",
                            "--quiet"}).status == 0);
    CHECK(cli_test::slurp(dir.file("a.grphi")) == cli_test::slurp(dir.file("b.grphi")));
    // Named one by one, the shards make the same tensors (only the index's metadata is missing).
    REQUIRE(run_grphi(dir, {"decode", dir.file("c.grphi"), "-o", dir.file("c.safetensors")}).status == 0);

    const auto info = run_grphi(dir, {"info", dir.file("a.grphi")});
    REQUIRE(info.status == 0);
    CHECK(info.out.find("metadata format = pt") != std::string::npos);
    CHECK(info.out.find("metadata index/note = caf\xc3\xa9") != std::string::npos);
    CHECK(info.out.find(": 9 tensors") != std::string::npos);

    const auto decoded = run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("back.safetensors")});
    INFO(decoded.err);
    REQUIRE(decoded.status == 0);
    const st::reader back(dir.file("back.safetensors"));
    CHECK(back.tensors().size() == 9);
    CHECK(std::find(back.metadata().begin(), back.metadata().end(), std::make_pair(std::string("format"), std::string("pt"))) !=
          back.metadata().end());
    grphi::options o;
    o.levels = 6;
    std::uint64_t source_bytes = 0;
    for (std::size_t s = 0; s < 3; ++s) {
        const st::reader source(shards[s]);
        for (const auto& t : shard_tensors()[s]) {
            CAPTURE(t.name);
            const st::tensor_info* out = back.find(t.name);
            REQUIRE(out != nullptr);
            CHECK(out->type == t.type);  // F16 and BF16 come back as F16 and BF16
            CHECK(out->shape == t.shape);
            source_bytes += source.find(t.name)->bytes();
            const bool quantized = st::is_floating(t.type) && t.shape.size() >= 2;
            if (quantized) CHECK(tensor_bytes(back, t.name) == encoded(fake<grphi::phi>(source, t.name, o), t.type));
            else CHECK(tensor_bytes(back, t.name) == tensor_bytes(source, t.name));
        }
    }
    CHECK(back.file().size() <= source_bytes + 2048);  // not larger than the original (only the header differs)
    const st::reader from_files(dir.file("c.safetensors"));
    for (const auto& t : back.tensors()) CHECK(tensor_bytes(from_files, t.name) == tensor_bytes(back, t.name));

    // --dtype f32: the library's exact values.
    REQUIRE(run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("f32.safetensors"), "--dtype", "f32"}).status == 0);
    const st::reader wide(dir.file("f32.safetensors"));
    const st::reader shard0(shards[0]);
    CHECK(wide.find("model.embed_tokens.weight")->type == st::dtype::F32);
    CHECK(tensor_bytes(wide, "model.embed_tokens.weight") ==
          encoded(fake<grphi::phi>(shard0, "model.embed_tokens.weight", o), st::dtype::F32));
    CHECK(wide.find("model.layers.0.position_ids")->type == st::dtype::I64);

    // I64 and BOOL tensors decode to .npy byte for byte; BF16 to .npy as F32 (exactly).
    REQUIRE(run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("ids.npy"), "--tensor",
                            "model.layers.0.position_ids"}).status == 0);
    const grphi::npy::reader ids(dir.file("ids.npy"));
    CHECK(ids.info().type == grphi::npy::element_type::I64);
    CHECK(ids.info().shape == std::vector<std::uint64_t>{1, 12});
    CHECK(std::memcmp(ids.bytes(), raw_bytes(shard_tensors()[1][1]).data(), 96) == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("mask.npy"), "--tensor",
                            "model.layers.0.attn.mask"}).status == 0);
    CHECK(grphi::npy::reader(dir.file("mask.npy")).info().type == grphi::npy::element_type::BOOL);
    REQUIRE(run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("norm.npy"), "--tensor", "model.norm.weight"}).status == 0);
    const grphi::npy::reader norm(dir.file("norm.npy"));
    CHECK(norm.info().type == grphi::npy::element_type::F32);
    std::vector<float> norm_values(16), norm_source(16);
    norm.read_rows(0, 1, norm_values.data());
    st::reader(shards[2]).read(*st::reader(shards[2]).find("model.norm.weight"), 0, 16, norm_source.data());
    CHECK(norm_values == norm_source);
}

TEST_CASE("cli checkpoints: decode writes shards with a correct model.safetensors.index.json") {
    scratch_dir dir;
    write_sharded(dir, "ckpt");
    REQUIRE(run_grphi(dir, {"quantize", dir.file("ckpt"), "-o", dir.file("m.grphi"), "--levels", "6", "--quiet"}).status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("whole.safetensors")}).status == 0);
    const st::reader whole(dir.file("whole.safetensors"));
    // 2000-byte shards: the 1600-byte embedding alone, then tensors packed up to the limit.
    const auto r = run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("out/"), "--max-shard-size", "2000"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    const st::shard_index index = st::read_index(dir.file("out/model.safetensors.index.json"));
    std::uint64_t total = 0;
    std::map<std::string, std::uint64_t> shard_bytes;
    for (const auto& [name, file] : index.weight_map) {
        const std::string& tensor_name = name;  // CAPTURE's lambda cannot capture a structured binding (clang 14)
        CAPTURE(tensor_name);
        const st::reader shard(dir.file("out/" + file));
        REQUIRE(shard.find(name) != nullptr);
        CHECK(tensor_bytes(shard, name) == tensor_bytes(whole, name));
        total += shard.find(name)->bytes();
        shard_bytes[file] += shard.find(name)->bytes();
    }
    CHECK(index.weight_map.size() == whole.tensors().size());
    CHECK(index.shards().size() >= 3);
    CHECK(index.shards()[0] == "model-00001-of-0000" + std::to_string(index.shards().size()) + ".safetensors");
    for (const auto& [file, bytes] : shard_bytes) CHECK((bytes <= 2000 || st::reader(dir.file("out/" + file)).tensors().size() == 1));
    std::string total_size;
    for (const auto& [key, value] : index.metadata)
        if (key == "total_size") total_size = value;
    CHECK(total_size == std::to_string(total));
    CHECK(std::find(index.metadata.begin(), index.metadata.end(), std::make_pair(std::string("note"), std::string("caf\xc3\xa9"))) !=
          index.metadata.end());
    CHECK(dir.listing().size() == 4);  // ckpt, m.grphi, whole.safetensors, out: no temporaries
    // The shards quantize again to the same tensors, through their index.
    REQUIRE(run_grphi(dir, {"quantize", dir.file("out"), "-o", dir.file("again.grphi"), "--quiet"}).status == 0);
    CHECK(run_grphi(dir, {"info", dir.file("again.grphi")}).out.find(": 9 tensors") != std::string::npos);
    // -o NAME.safetensors with --max-shard-size: NAME-0000i-of-0000N.safetensors and NAME.safetensors.index.json.
    REQUIRE(run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("named.safetensors"), "--max-shard-size=1MB"}).status == 0);
    CHECK(cli_test::exists(dir.file("named-00001-of-00001.safetensors")));
    CHECK(st::read_index(dir.file("named.safetensors.index.json")).weight_map.size() == 9);
    check_failure(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("x.safetensors"), "--max-shard-size", "lots"},
                  "--max-shard-size lots: expected a size", "", 2);
}

TEST_CASE("cli checkpoints: decode into a directory shards like the source by default; the tool's own key stays inside") {
    scratch_dir dir;
    const std::vector<std::string> shards = write_sharded(dir, "ckpt");
    std::uint64_t largest = 0;  // the source's largest shard, in tensor bytes
    for (std::size_t s = 0; s < 3; ++s) {
        std::uint64_t bytes = 0;
        for (const auto& t : shard_tensors()[s]) bytes += elements(t.shape) * st::dtype_size(t.type);
        largest = std::max(largest, bytes);
    }
    REQUIRE(run_grphi(dir, {"quantize", dir.file("ckpt"), "-o", dir.file("m.grphi"), "--levels", "6", "--quiet"}).status == 0);
    CHECK(run_grphi(dir, {"info", dir.file("m.grphi")}).out.find("metadata grphi/source_shard_bytes = " + std::to_string(largest)) !=
          std::string::npos);
    const auto r = run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("out/")});
    INFO(r.err);
    REQUIRE(r.status == 0);
    const st::shard_index index = st::read_index(dir.file("out/model.safetensors.index.json"));
    CHECK(index.shards().size() == 3);  // this checkpoint's tensors, packed in order up to the source's shard size
    for (const auto& file : index.shards()) {
        const st::reader shard(dir.file("out/" + file));
        std::uint64_t bytes = 0;
        for (const auto& t : shard.tensors()) bytes += t.bytes();
        CHECK((bytes <= largest || shard.tensors().size() == 1));
        for (const auto& [key, value] : shard.metadata()) CHECK(key.rfind("grphi/", 0) == std::string::npos);
    }
    for (const auto& [key, value] : index.metadata) CHECK(key.rfind("grphi/", 0) == std::string::npos);
    // One file in, no key: into a directory the default stays 5GB (everything in one shard here).
    REQUIRE(run_grphi(dir, {"decode", dir.file("m.grphi"), "-o", dir.file("whole.safetensors")}).status == 0);
    REQUIRE(run_grphi(dir, {"quantize", dir.file("whole.safetensors"), "-o", dir.file("one.grphi"), "--quiet"}).status == 0);
    CHECK(run_grphi(dir, {"info", dir.file("one.grphi")}).out.find("grphi/source_shard_bytes") == std::string::npos);
    REQUIRE(run_grphi(dir, {"decode", dir.file("one.grphi"), "-o", dir.file("one/")}).status == 0);
    CHECK(st::read_index(dir.file("one/model.safetensors.index.json")).shards().size() == 1);
}

TEST_CASE("cli checkpoints: inconsistent shards and indexes are refused, naming the file") {
    scratch_dir dir;
    write_sharded(dir, "ckpt");
    const std::string index = dir.file("ckpt/model.safetensors.index.json");
    const std::string out = dir.file("o.grphi");
    const std::string good_index = cli_test::slurp(index);
    auto with = [&](const std::string& from, const std::string& to) {
        std::string text = good_index;
        text.replace(text.find(from), from.size(), to);
        cli_test::spit(index, text);
    };
    with("\"lm_head.weight\":\"model-00003-of-00003.safetensors\"", "\"lm_head.weight\":\"model-00002-of-00003.safetensors\"");
    check_failure(dir, {"quantize", index, "-o", out}, "weight_map puts tensor 'lm_head.weight' in model-00002-of-00003.safetensors", out);
    with("\"lm_head.weight\":\"model-00003-of-00003.safetensors\",", "");
    check_failure(dir, {"quantize", dir.file("ckpt"), "-o", out}, "tensor 'lm_head.weight' of model-00003-of-00003.safetensors is not in the weight_map", out);
    with("model-00001-of-00003.safetensors\"", "../elsewhere.safetensors\"");
    check_failure(dir, {"quantize", index, "-o", out}, "is not a file beside the index", out);
    with("\"weight_map\"", "\"weights\"");
    check_failure(dir, {"quantize", index, "-o", out}, "not a safetensors index", out);
    cli_test::spit(index, good_index);
    // The same tensor in two files; the same file twice.
    const std::string a = dir.file("ckpt/model-00001-of-00003.safetensors");
    std::system(("cp '" + a + "' '" + dir.file("copy.safetensors") + "'").c_str());
    check_failure(dir, {"quantize", a, dir.file("copy.safetensors"), "-o", out}, "tensor 'model.embed_tokens.weight' is also in", out);
    check_failure(dir, {"quantize", a, a, "-o", out}, "given twice", out);
    std::system(("mkdir -p '" + dir.file("empty") + "'").c_str());
    check_failure(dir, {"quantize", dir.file("empty"), "-o", out}, "no .safetensors files", out);
}

TEST_CASE("cli checkpoints: formats by content; unsupported inputs and output extensions are refused") {
    scratch_dir dir;
    const std::string out = dir.file("o.grphi");
    const struct {
        const char* name;
        std::string bytes;
        const char* message;
    } inputs[] = {
        {"model.safetensors", std::string("GGUF\x03\0\0\0", 8) + std::string(64, '\0'), "GGUF files are not supported"},
        {"model.bin", std::string("\x80\x02\x63\x63ollections\nOrderedDict\n", 28), "PyTorch pickle files are not supported"},
        {"model.pt", std::string("PK\x03\x04", 4) + std::string(60, '\0'), "PyTorch (zip) and .npz files are not supported"},
        {"model.onnx", std::string("\x08\x07\x12\x07pytorch", 10), "ONNX files are not supported"},
        {"weights.dat", std::string("hello world, not a tensor file"), "unrecognised content"},
    };
    for (const auto& input : inputs) {
        cli_test::spit(dir.file(input.name), input.bytes);
        check_failure(dir, {"quantize", dir.file(input.name), "-o", out}, input.message, out);
        check_failure(dir, {"report", dir.file(input.name)}, input.message, "");
    }
    // A safetensors file under another name, an .npy file named .safetensors: content decides.
    write_safetensors(dir.file("weights.bin"), {{"w", st::dtype::F32, {4, 4}, 1}}, {});
    CHECK(run_grphi(dir, {"quantize", dir.file("weights.bin"), "-o", out, "--quiet"}).status == 0);
    const std::vector<double> v = cli_test::weights(12, 3);
    grphi::npy::save(dir.file("arr.safetensors"), {3, 4}, v.data(), grphi::npy::element_type::F32);
    const auto npy_named = run_grphi(dir, {"quantize", dir.file("arr.safetensors"), "-o", out, "--quiet"});
    INFO(npy_named.err);
    CHECK(npy_named.status == 0);
    // A .grphi file as the input of quantize.
    check_failure(dir, {"quantize", out, "-o", dir.file("again.grphi")}, "is a .grphi file already", dir.file("again.grphi"));

    // Output extensions the tool does not write: a command-line mistake (exit 2), nothing written.
    check_failure(dir, {"quantize", dir.file("weights.bin"), "-o", dir.file("x.onnx")}, "quantize writes .grphi files", dir.file("x.onnx"), 2);
    check_failure(dir, {"decode", out, "-o", dir.file("out.pt")}, "decode writes .safetensors or .npy files", dir.file("out.pt"), 2);

    // safetensors with unused bytes between tensors (the reference implementation refuses them too).
    std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})";
    std::string image(8, '\0');
    for (int i = 0; i < 8; ++i) image[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    cli_test::spit(dir.file("gap.safetensors"), image + header + std::string(24, '\0'));
    check_failure(dir, {"quantize", dir.file("gap.safetensors"), "-o", dir.file("gap.grphi")},
                  "tensor 'b': data_offsets [16, 24) leave bytes [8, 16) of the data unused", dir.file("gap.grphi"));
}

TEST_CASE("cli checkpoints: integer and bool .npy arrays pass through exactly, also in Fortran order") {
    scratch_dir dir;
    const std::vector<std::int64_t> fortran = {1, 4, -2, 5, 1ll << 60, -6};  // (2, 3), column-major
    std::string dict = "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }";
    while ((10 + dict.size() + 1) % 64) dict += ' ';
    dict += '\n';
    cli_test::spit(dir.file("ids.npy"), std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(dict.size()) + '\0' + dict +
                                            std::string(reinterpret_cast<const char*>(fortran.data()), 48));
    const auto q = run_grphi(dir, {"quantize", dir.file("ids.npy"), "-o", dir.file("ids.grphi"), "--quiet"});
    INFO(q.err);
    REQUIRE(q.status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("ids.grphi"), "-o", dir.file("back.npy")}).status == 0);
    const grphi::npy::reader back(dir.file("back.npy"));
    CHECK(back.info().type == grphi::npy::element_type::I64);
    CHECK(!back.info().fortran_order);
    const std::vector<std::int64_t> c_order = {1, -2, 1ll << 60, 4, 5, -6};
    CHECK(std::memcmp(back.bytes(), c_order.data(), 48) == 0);

    std::string bools = "{'descr': '|b1', 'fortran_order': False, 'shape': (5,), }";
    while ((10 + bools.size() + 1) % 64) bools += ' ';
    bools += '\n';
    cli_test::spit(dir.file("flags.npy"), std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(bools.size()) + '\0' +
                                              bools + std::string("\x01\x00\x01\x01\x00", 5));
    REQUIRE(run_grphi(dir, {"quantize", dir.file("flags.npy"), "-o", dir.file("flags.grphi"), "--quiet"}).status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("flags.grphi"), "-o", dir.file("flags_back.npy")}).status == 0);
    const grphi::npy::reader flags(dir.file("flags_back.npy"));
    CHECK(flags.info().type == grphi::npy::element_type::BOOL);
    CHECK(std::memcmp(flags.bytes(), "\x01\x00\x01\x01\x00", 5) == 0);
    // Several .npy files in, one safetensors out: each array named by its stem.
    REQUIRE(run_grphi(dir, {"quantize", dir.file("ids.npy"), dir.file("flags.npy"), "-o", dir.file("both.grphi"), "--quiet"}).status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("both.grphi"), "-o", dir.file("both.safetensors")}).status == 0);
    const st::reader both(dir.file("both.safetensors"));
    CHECK(both.find("ids")->type == st::dtype::I64);
    CHECK(both.find("flags")->type == st::dtype::BOOL);
}

TEST_CASE("cli checkpoints: --rule REGEX=SPEC, first match wins; report and info show each tensor's spec") {
    scratch_dir dir;
    write_sharded(dir, "ckpt");
    const std::string ckpt = dir.file("ckpt");
    const std::vector<std::string> rules = {"--rule", "embed=two,levels=4",  "--rule", "attn\\.q=exact",
                                            "--rule", "layers\\.1=sqrt2",    "--rule=norm=phi,levels=3,fit-scale",
                                            "--levels", "7"};
    std::vector<std::string> args = {"quantize", ckpt, "-o", dir.file("r.grphi"), "--quiet"};
    args.insert(args.end(), rules.begin(), rules.end());
    const auto q = run_grphi(dir, args);
    INFO(q.err);
    REQUIRE(q.status == 0);
    REQUIRE(run_grphi(dir, {"decode", dir.file("r.grphi"), "-o", dir.file("r.safetensors"), "--dtype", "f32"}).status == 0);
    const st::reader back(dir.file("r.safetensors"));
    const st::reader shard0(dir.file("ckpt/model-00001-of-00003.safetensors"));
    const st::reader shard1(dir.file("ckpt/model-00002-of-00003.safetensors"));
    const st::reader shard2(dir.file("ckpt/model-00003-of-00003.safetensors"));
    grphi::options four, seven, plain, three;
    four.levels = 4;
    seven.levels = 7;
    three.levels = 3;
    three.fit_scale = true;
    CHECK(tensor_bytes(back, "model.embed_tokens.weight") ==
          encoded(fake<grphi::two>(shard0, "model.embed_tokens.weight", four), st::dtype::F32));
    CHECK(tensor_bytes(back, "model.layers.0.attn.q.weight") == tensor_bytes(shard0, "model.layers.0.attn.q.weight"));
    CHECK(back.find("model.layers.0.attn.q.weight")->type == st::dtype::F32);
    // layers.1.attn.q matches "attn\.q" first: exact, not sqrt2.
    CHECK(tensor_bytes(back, "model.layers.1.attn.q.weight") == tensor_bytes(shard2, "model.layers.1.attn.q.weight"));
    CHECK(tensor_bytes(back, "model.layers.0.mlp.up.weight") ==
          encoded(fake<grphi::phi>(shard1, "model.layers.0.mlp.up.weight", seven), st::dtype::F32));
    // A rule quantizes a 1-D norm (as one row); without one it would stay exact.
    CHECK(tensor_bytes(back, "model.layers.0.norm.weight") ==
          encoded(fake<grphi::phi>(shard0, "model.layers.0.norm.weight", three), st::dtype::F32));
    CHECK(tensor_bytes(back, "model.layers.0.position_ids") == tensor_bytes(shard1, "model.layers.0.position_ids"));

    const auto info = run_grphi(dir, {"info", dir.file("r.grphi")});
    REQUIRE(info.status == 0);
    CHECK(spec_in_info(info.out, "model.embed_tokens.weight") == "two,levels=4");
    CHECK(spec_in_info(info.out, "model.layers.0.norm.weight") == "phi,levels=3,fit-scale");
    CHECK(spec_in_info(info.out, "model.layers.0.mlp.up.weight") == "phi,levels=7");
    CHECK(spec_in_info(info.out, "model.layers.0.attn.q.weight") == "exact");
    std::vector<std::string> report_args = {"report", ckpt, "--quiet"};
    report_args.insert(report_args.end(), rules.begin(), rules.end());
    const auto report = run_grphi(dir, report_args);
    INFO(report.err);
    REQUIRE(report.status == 0);
    for (const char* name : {"model.embed_tokens.weight", "model.layers.0.norm.weight", "model.layers.0.mlp.up.weight",
                             "model.layers.0.attn.q.weight", "lm_head.weight"}) {
        CAPTURE(name);
        const auto r = words(line_of(report.out, name));
        const auto i = words(line_of(info.out, name));
        CHECK(r[r.size() - 7] == i[i.size() - 2]);  // the same spec
        CHECK(r[r.size() - 2] == i.back());  // the same bits/weight, exact tensors included
    }

    // A rule, --include or --exclude matching nothing is an error, not a silent "0 weights".
    check_failure(dir, {"quantize", ckpt, "-o", dir.file("n.grphi"), "--rule", "decoder=two"},
                  "--rule decoder=two: matches no tensor", dir.file("n.grphi"));
    check_failure(dir, {"report", ckpt, "--include", "*.conv.*"}, "--include *.conv.*: matches no tensor", "");
    check_failure(dir, {"report", ckpt, "--exclude", "nothing"}, "--exclude nothing: matches no tensor", "");
    // Bad rules are command-line mistakes.
    for (const char* rule : {"embed", "embed=", "=two", "embed=two,levels=0", "embed=exact,levels=3", "embed=two,frob=1",
                             "(=two", "embed=cubic"}) {
        CAPTURE(rule);
        check_failure(dir, {"report", ckpt, "--rule", rule}, "--rule", "", 2);
    }
}

TEST_CASE("cli checkpoints: --version, per-command help with defaults, --opt=value, summary line, man page") {
    scratch_dir dir;
    const auto version = run_grphi(dir, {"--version"});
    CHECK(version.status == 0);
    CHECK(version.out.rfind("grphi ", 0) == 0);
    for (const char* command : {"quantize", "decode", "info", "report"}) {
        CAPTURE(command);
        const auto help = run_grphi(dir, {command, "--help"});
        CHECK(help.status == 0);
        CHECK(help.out.find(std::string("usage: grphi ") + command) != std::string::npos);
        CHECK(help.out.find("default") != std::string::npos);
        CHECK(run_grphi(dir, {"help", command}).out == help.out);
    }
    CHECK(run_grphi(dir, {"quantize", "--help"}).out.find("--levels N") != std::string::npos);
    CHECK(run_grphi(dir, {"decode", "--help"}).out.find("--dtype source|f32|f64") != std::string::npos);

    write_safetensors(dir.file("in.safetensors"), {{"w", st::dtype::F32, {8, 8}, 1}, {"b", st::dtype::F32, {8}, 2}}, {});
    const auto spaced = run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("a.grphi"), "--levels", "5", "--base", "two"});
    const auto joined = run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("b.grphi"), "--levels=5", "--base=two", "--quiet"});
    REQUIRE(spaced.status == 0);
    REQUIRE(joined.status == 0);
    CHECK(cli_test::slurp(dir.file("a.grphi")) == cli_test::slurp(dir.file("b.grphi")));
    // stderr is a file here, not a terminal: one summary line, none with --quiet.
    CHECK(spaced.err.rfind("grphi: quantize: 2 tensors (1 quantized, 1 exact)", 0) == 0);
    CHECK(std::count(spaced.err.begin(), spaced.err.end(), '\n') == 1);
    CHECK(joined.err.empty());
    const auto decoded = run_grphi(dir, {"decode", dir.file("a.grphi"), "-o", dir.file("a.safetensors")});
    CHECK(decoded.err.rfind("grphi: decode: 2 tensors", 0) == 0);
    check_failure(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("c.grphi"), "--quiet=yes"},
                  "--quiet does not take a value", dir.file("c.grphi"), 2);
    check_failure(dir, {"info", dir.file("a.grphi"), "--levels", "4"}, "--levels is a quantizer option", "", 2);

    const auto man = run_grphi(dir, {"--man"});
    CHECK(man.status == 0);
    CHECK(man.out.rfind(".TH GRPHI 1", 0) == 0);
    for (const char* text : {".SS quantize", ".SS decode", ".SS info", ".SS report", "\\-\\-rule", "EXIT STATUS"})
        CHECK(man.out.find(text) != std::string::npos);
}

TEST_CASE("cli checkpoints: zero-column tensors of 10^11 rows are stored in bounded space") {
    scratch_dir dir;
    std::string header = R"({"huge":{"dtype":"F32","shape":[100000000000,0],"data_offsets":[0,0]}})";
    while ((8 + header.size()) % 8) header += ' ';
    std::string image(8, '\0');
    for (int i = 0; i < 8; ++i) image[static_cast<std::size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    cli_test::spit(dir.file("huge.safetensors"), image + header);
    CHECK(cli_test::slurp(dir.file("huge.safetensors")).size() == 80);
    const auto q = run_grphi(dir, {"quantize", dir.file("huge.safetensors"), "-o", dir.file("huge.grphi"), "--quiet"});
    INFO(q.err);
    REQUIRE(q.status == 0);
    CHECK(cli_test::slurp(dir.file("huge.grphi")).size() < 4096);
    REQUIRE(run_grphi(dir, {"decode", dir.file("huge.grphi"), "-o", dir.file("back.safetensors")}).status == 0);
    const st::reader back(dir.file("back.safetensors"));
    CHECK(back.find("huge")->shape == std::vector<std::uint64_t>{100000000000ull, 0});

    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 0), }";
    while ((10 + dict.size() + 1) % 64) dict += ' ';
    dict += '\n';
    cli_test::spit(dir.file("wide.npy"), std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(dict.size()) + '\0' + dict);
    // An extent of 2^64 - 1 is past what format 2 stores (extents up to 2^62): refused, nothing written.
    const auto n = run_grphi(dir, {"quantize", dir.file("wide.npy"), "-o", dir.file("wide.grphi"), "--quiet"});
    CHECK(n.status == 1);
    CHECK(n.err.find("wide.npy: tensor 'wide'") != std::string::npos);
    CHECK(n.err.find("exceeds 2^62") != std::string::npos);
    CHECK(!cli_test::exists(dir.file("wide.grphi")));
    CHECK(dir.listing().size() == 4);  // huge.safetensors, huge.grphi, back.safetensors, wide.npy: no temporary
    // Even a rule cannot make the tool quantize an empty tensor.
    const auto ruled = run_grphi(dir, {"report", dir.file("huge.safetensors"), "--rule", "huge=two", "--csv", "--quiet"});
    REQUIRE(ruled.status == 0);
    CHECK(ruled.out.find("huge,F32,[100000000000x0],exact,0") != std::string::npos);
}

TEST_CASE("cli checkpoints: an output that is the input (also through a link) is refused; the input survives") {
    scratch_dir dir;
    write_safetensors(dir.file("in.safetensors"), {{"w", st::dtype::F32, {8, 8}, 1}}, {});
    const std::string original = cli_test::slurp(dir.file("in.safetensors"));
    REQUIRE(run_grphi(dir, {"quantize", dir.file("in.safetensors"), "-o", dir.file("m.grphi"), "--quiet"}).status == 0);
    const std::string coded = cli_test::slurp(dir.file("m.grphi"));
    // quantize onto its own input: a .safetensors named .grphi.
    std::system(("cp '" + dir.file("in.safetensors") + "' '" + dir.file("st.grphi") + "'").c_str());
    REQUIRE(::symlink(dir.file("st.grphi").c_str(), dir.file("st-link.grphi").c_str()) == 0);
    REQUIRE(::link(dir.file("st.grphi").c_str(), dir.file("st-hard.grphi").c_str()) == 0);
    for (const auto& out : {dir.file("st.grphi"), dir.file("st-link.grphi"), dir.file("st-hard.grphi")}) {
        CAPTURE(out);
        check_failure(dir, {"quantize", dir.file("st.grphi"), "-o", out}, "refusing to overwrite it", "");
    }
    CHECK(cli_test::slurp(dir.file("st.grphi")) == original);
    // decode onto its own input: a .grphi named .safetensors.
    std::system(("cp '" + dir.file("m.grphi") + "' '" + dir.file("g.safetensors") + "'").c_str());
    REQUIRE(::symlink(dir.file("g.safetensors").c_str(), dir.file("g-link.safetensors").c_str()) == 0);
    for (const auto& out : {dir.file("g.safetensors"), dir.file("g-link.safetensors")}) {
        CAPTURE(out);
        check_failure(dir, {"decode", dir.file("g.safetensors"), "-o", out}, "refusing to overwrite it", "");
    }
    CHECK(cli_test::slurp(dir.file("g.safetensors")) == coded);
    CHECK(cli_test::slurp(dir.file("in.safetensors")) == original);
    CHECK(cli_test::slurp(dir.file("m.grphi")) == coded);
}

TEST_CASE("cli checkpoints: a run killed by SIGINT or SIGTERM, or stopped by the file-size limit, leaves no temporary") {
    scratch_dir dir;
    // 256 MiB of float32 weights: long enough to interrupt while the temporary exists.
    {
        std::vector<st::tensor_entry> entries;
        for (int i = 0; i < 16; ++i) entries.push_back({"w" + std::to_string(i), st::dtype::F32, {2048, 2048}});
        st::writer out(dir.file("big.safetensors"), entries);
        const std::vector<double> block = cli_test::weights(1 << 16, 5);
        std::vector<float> row(block.begin(), block.end());
        for (int i = 0; i < 16 * 64; ++i) out.write_values(row.data(), row.size());
        out.finish();
    }
    auto temporaries = [&] {
        std::size_t n = 0;
        for (const auto& name : dir.listing()) n += name.find(".tmp-") != std::string::npos;
        return n;
    };
    for (const int signal : {SIGINT, SIGTERM}) {
        CAPTURE(signal);
        const pid_t pid = cli_test::start_grphi(dir, {"quantize", dir.file("big.safetensors"), "-o", dir.file("out.grphi"),
                                                      "--threads", "1", "--fit-scale", "--quiet"});
        const auto start = std::chrono::steady_clock::now();
        while (temporaries() == 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(20))
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        REQUIRE(temporaries() == 1);
        ::kill(pid, signal);
        int killed_by = 0;
        const auto r = cli_test::finish_grphi(dir, pid, &killed_by);
        INFO(r.err);
        CHECK(killed_by == signal);
        CHECK(temporaries() == 0);
        CHECK(!cli_test::exists(dir.file("out.grphi")));
    }
    // RLIMIT_FSIZE of 1 MiB: the write fails (SIGXFSZ is ignored), the run reports it and cleans up.
    const auto limited = cli_test::run_grphi(dir, {"quantize", dir.file("big.safetensors"), "-o", dir.file("out.grphi"), "--quiet"},
                                             [] {
                                                 struct rlimit limit {};
                                                 limit.rlim_cur = limit.rlim_max = 1 << 20;
                                                 ::setrlimit(RLIMIT_FSIZE, &limit);
                                             });
    CHECK(limited.status == 1);
    CHECK(limited.err.find("File too large") != std::string::npos);
    CHECK(temporaries() == 0);
    CHECK(!cli_test::exists(dir.file("out.grphi")));
    const auto unlimited = cli_test::run_grphi(dir, {"quantize", dir.file("big.safetensors"), "-o", dir.file("ok.grphi"), "--quiet", "--levels", "4"});
    REQUIRE(unlimited.status == 0);
    const auto d = cli_test::run_grphi(dir, {"decode", dir.file("ok.grphi"), "-o", dir.file("back.safetensors")}, [] {
        struct rlimit limit {};
        limit.rlim_cur = limit.rlim_max = 1 << 20;
        ::setrlimit(RLIMIT_FSIZE, &limit);
    });
    CHECK(d.status == 1);
    CHECK(temporaries() == 0);
    CHECK(!cli_test::exists(dir.file("back.safetensors")));
}

#endif  // GRPHI_CLI_PATH
