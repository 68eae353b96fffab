// The grphi tool's view of its input: safetensors files (one, several shards, their index, or a directory)
// and .npy arrays, recognised by their content, as one list of tensors read by row ranges.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dirent.h>
#include <sys/stat.h>

#include <grphi/core/error.hpp>
#include <grphi/io/mapped_file.hpp>
#include <grphi/io/npy.hpp>
#include <grphi/io/safetensors.hpp>

namespace grphi::cli {

// True on a little-endian host, where stored F32/F64 bytes are the values themselves.
inline bool host_is_little_endian() {
    const std::uint16_t one = 1;
    std::uint8_t first = 0;
    std::memcpy(&first, &one, 1);
    return first == 1;
}

struct input_tensor {
    std::string name;
    safetensors::dtype type = safetensors::dtype::F32;
    std::vector<std::uint64_t> shape;
    std::uint64_t rows = 0;  // rank >= 2: first dimension; else 1
    std::uint64_t cols = 0;  // the remaining dimensions flattened in C order
    std::uint64_t bytes = 0;
    bool floating = false;
    std::size_t source = 0;  // which input file
    std::size_t index = 0;   // which tensor of that file

    std::uint64_t elements() const { return rows * cols; }
    // Rank >= 2 float tensors with weights are quantized by default; biases, norms, scalars, integer
    // buffers and empty tensors stay exact (an empty tensor's size is its shape alone, so it costs nothing).
    bool weight_like() const { return floating && shape.size() >= 2 && elements() != 0; }
};

inline std::string shape_text(const std::vector<std::uint64_t>& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + "]";
}

inline bool ends_with(const std::string& text, const std::string& suffix) {
    return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What a file is, by its first bytes (the name only breaks ties for files too short or too damaged to tell).
enum class file_kind { safetensors, npy, grphi, index, gguf, pickle, zip, onnx, directory, unknown };

inline file_kind detect_kind(const std::string& path) {
    struct stat info {};
    if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) return file_kind::directory;
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) throw io_error(path + ": cannot open: " + std::strerror(errno));
    unsigned char head[16] = {};
    const std::size_t got = std::fread(head, 1, sizeof head, file);
    std::fclose(file);
    auto starts = [&](const char* magic, std::size_t n) { return got >= n && std::memcmp(head, magic, n) == 0; };
    if (starts("\x93NUMPY", 6)) return file_kind::npy;
    if (starts("\x89GRPHI", 6)) return file_kind::grphi;
    if (starts("GGUF", 4)) return file_kind::gguf;
    if (starts("PK\x03\x04", 4)) return file_kind::zip;
    if (got >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5) return file_kind::pickle;
    if (got >= 9 && head[8] == '{') return file_kind::safetensors;
    std::size_t first = 0;
    while (first < got && (head[first] == ' ' || head[first] == '\n' || head[first] == '\r' || head[first] == '\t')) ++first;
    if (first < got && head[first] == '{') return file_kind::index;
    // ONNX is a protobuf ModelProto: field 1 (ir_version, a small varint), then another field's tag.
    if (got >= 3 && head[0] == 0x08 && head[1] < 0x80 && (head[2] & 0x07) == 2 && head[2] >= 0x12 && head[2] <= 0x4a)
        return file_kind::onnx;
    if (ends_with(path, ".onnx")) return file_kind::onnx;
    if (ends_with(path, ".safetensors")) return file_kind::safetensors;  // its reader says what is wrong
    if (ends_with(path, ".npy")) return file_kind::npy;
    if (ends_with(path, ".json")) return file_kind::index;
    return file_kind::unknown;
}

// The sentence for an input the tool does not read.
inline std::string unsupported_input(const std::string& path, file_kind kind) {
    const std::string hint = " (grphi reads safetensors files, their model.safetensors.index.json, and .npy arrays)";
    switch (kind) {
        case file_kind::gguf: return path + ": GGUF files are not supported" + hint;
        case file_kind::pickle: return path + ": PyTorch pickle files are not supported" + hint;
        case file_kind::zip: return path + ": PyTorch (zip) and .npz files are not supported" + hint;
        case file_kind::onnx: return path + ": ONNX files are not supported" + hint;
        case file_kind::grphi: return path + ": is a .grphi file already (use grphi info or grphi decode)";
        default: return path + ": not a safetensors, index or .npy file (unrecognised content)" + hint;
    }
}

// The stem of a path ("dir/weights.npy" -> "weights"): the tensor name of an .npy array.
inline std::string path_stem(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    const std::size_t dot = name.find_last_of('.');
    if (dot != std::string::npos && dot > 0) name.resize(dot);
    return name.empty() ? "array" : name;
}

inline std::string directory_of(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

// Sorted names in a directory.
inline std::vector<std::string> list_directory(const std::string& path) {
    std::vector<std::string> names;
    DIR* dir = ::opendir(path.c_str());
    if (!dir) throw io_error(path + ": cannot open directory: " + std::strerror(errno));
    while (const dirent* entry = ::readdir(dir)) names.emplace_back(entry->d_name);
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    return names;
}

class input_checkpoint {
public:
    // `paths`: safetensors files, index files, directories (their index, else their *.safetensors), .npy files.
    explicit input_checkpoint(const std::vector<std::string>& paths) {
        named_ = paths;
        for (const auto& path : paths) add_path(path);
        if (files_.empty()) throw format_error("no input files");
        for (std::size_t i = 0; i < files_.size(); ++i)
            for (std::size_t j = 0; j < i; ++j)
                if (files_[i].device == files_[j].device && files_[i].inode == files_[j].inode)
                    throw format_error(files_[i].path + ": is the same file as " + files_[j].path + " (given twice)");
        for (std::size_t i = 0; i < tensors_.size(); ++i)
            for (std::size_t j = 0; j < i; ++j)
                if (tensors_[i].name == tensors_[j].name)
                    throw format_error(files_[tensors_[i].source].path + ": tensor '" + tensors_[i].name +
                                       "' is also in " + files_[tensors_[j].source].path);
    }

    // The input as the user named it: one file, or the first of several "and N more".
    std::string path() const {
        return named_.size() == 1 ? named_[0] : named_[0] + " and " + std::to_string(named_.size() - 1) + " more";
    }
    const std::vector<input_tensor>& tensors() const { return tensors_; }
    const std::string& file_of(const input_tensor& t) const { return files_[t.source].path; }
    // Every input file (to refuse writing over one of them).
    std::vector<std::string> files() const {
        std::vector<std::string> all;
        for (const auto& f : files_) all.push_back(f.path);
        return all;
    }
    // The most tensor bytes one input file holds: a sharded source's shard size, which decode repeats.
    std::uint64_t largest_file_bytes() const {
        std::vector<std::uint64_t> per_file(files_.size(), 0);
        for (const auto& t : tensors_) per_file[t.source] += t.bytes;
        return per_file.empty() ? 0 : *std::max_element(per_file.begin(), per_file.end());
    }
    std::uint64_t total_bytes() const {
        std::uint64_t total = 0;
        for (const auto& t : tensors_) total += t.bytes;
        return total;
    }
    // The shards' __metadata__ (merged; shards must agree) and an index's metadata under "index/<key>"
    // (total_size is left out: it changes with the dtypes and is recomputed when an index is written).
    const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }

    // Rows [first, first+count) of tensor `index`, row-major, converted to T.
    template <class T>
    void read_rows(std::size_t index, std::uint64_t first, std::uint64_t count, T* out) const {
        const input_tensor& t = tensors_[index];
        const source_file& f = files_[t.source];
        if (f.npy) {
            f.npy->read_rows(first, count, out);
            return;
        }
        f.st->read(f.st->tensors()[t.index], first * t.cols, count * t.cols, out);
    }

    // Rows [first, first+count) of tensor `index` in place in the mapped file when it already stores them
    // as T (same type, little-endian host, C order, aligned), so they need no copy; else nullptr.
    template <class T>
    const T* direct_rows(std::size_t index, std::uint64_t first, std::uint64_t count) const {
        (void)count;
        const input_tensor& t = tensors_[index];
        const safetensors::dtype own = std::is_same_v<T, float> ? safetensors::dtype::F32 : safetensors::dtype::F64;
        if (t.type != own || !host_is_little_endian() || !raw_is_c_order(index)) return nullptr;
        const std::byte* start = raw_bytes(index) + first * t.cols * sizeof(T);
        if (reinterpret_cast<std::uintptr_t>(start) % alignof(T) != 0) return nullptr;
        return reinterpret_cast<const T*>(start);
    }

    // The stored little-endian bytes of tensor `index` (for exact passthrough; C order unless
    // raw_is_c_order says otherwise, then read_raw_rows gives C order).
    const std::byte* raw_bytes(std::size_t index) const {
        const input_tensor& t = tensors_[index];
        const source_file& f = files_[t.source];
        if (f.npy) return f.npy->bytes();
        return f.st->bytes(f.st->tensors()[t.index]);
    }
    bool raw_is_c_order(std::size_t index) const {
        const source_file& f = files_[tensors_[index].source];
        return !f.npy || !f.npy->info().fortran_order || f.npy->info().shape.size() < 2;
    }
    // A Fortran-order array's raw elements, reordered to C order.
    void read_raw_rows(std::size_t index, std::uint64_t first, std::uint64_t count, std::byte* out) const {
        files_[tensors_[index].source].npy->read_raw_rows(first, count, out);
    }

    // Done with these rows: give their pages back so the resident set stays bounded.
    void release_rows(std::size_t index, std::uint64_t first, std::uint64_t count) const {
        const input_tensor& t = tensors_[index];
        const source_file& f = files_[t.source];
        const std::size_t width = safetensors::dtype_size(t.type);
        if (f.npy) {
            f.npy->release_rows(first, count);
            return;
        }
        const auto& info = f.st->tensors()[t.index];
        f.st->release_bytes(info.begin + first * t.cols * width, count * t.cols * width);
    }

private:
    struct source_file {
        std::string path;
        std::unique_ptr<safetensors::reader> st;
        std::unique_ptr<npy::reader> npy;
        unsigned long long device = 0, inode = 0;
    };

    void add_path(const std::string& path) {
        const file_kind kind = detect_kind(path);
        switch (kind) {
            case file_kind::directory: return add_directory(path);
            case file_kind::index: return add_index(path);
            case file_kind::safetensors: add_safetensors(path); return;
            case file_kind::npy: return add_npy(path);
            default: throw format_error(unsupported_input(path, kind));
        }
    }

    void add_directory(const std::string& path) {
        const std::vector<std::string> names = list_directory(path);
        const std::string dir = ends_with(path, "/") ? path : path + "/";
        std::vector<std::string> indexes, shards;
        for (const auto& name : names) {
            if (ends_with(name, ".safetensors.index.json")) indexes.push_back(name);
            else if (ends_with(name, ".safetensors")) shards.push_back(name);
        }
        if (std::find(indexes.begin(), indexes.end(), "model.safetensors.index.json") != indexes.end())
            indexes = {"model.safetensors.index.json"};
        if (indexes.size() > 1)
            throw format_error(path + ": holds several indexes (" + indexes[0] + ", " + indexes[1] +
                               ", ...): name the one to read");
        if (indexes.size() == 1) return add_index(dir + indexes[0]);
        if (shards.empty()) throw format_error(path + ": no .safetensors files or model.safetensors.index.json in the directory");
        for (const auto& name : shards) add_safetensors(dir + name);
    }

    void add_index(const std::string& path) {
        const safetensors::shard_index index = safetensors::read_index(path);
        if (index.weight_map.empty()) throw format_error(path + ": the index's weight_map is empty");
        for (const auto& [key, value] : index.metadata)
            if (key != "total_size") add_metadata("index/" + key, value, path);
        const std::string dir = directory_of(path) + "/";
        for (const auto& shard : index.shards()) {
            const std::size_t file = add_safetensors(dir + shard);
            const safetensors::reader& reader = *files_[file].st;
            for (const auto& [name, where] : index.weight_map)
                if (where == shard && !reader.find(name))
                    throw format_error(path + ": weight_map puts tensor '" + name + "' in " + shard + ", which does not hold it");
            for (const auto& t : reader.tensors()) {
                const auto entry = std::find_if(index.weight_map.begin(), index.weight_map.end(),
                                                [&](const auto& e) { return e.first == t.name; });
                if (entry == index.weight_map.end() || entry->second != shard)
                    throw format_error(path + ": tensor '" + t.name + "' of " + shard + " is not in the weight_map" +
                                       (entry == index.weight_map.end() ? "" : " for that file"));
            }
        }
    }

    std::size_t open_file(const std::string& path) {
        source_file f;
        f.path = path;
        struct stat info {};
        if (::stat(path.c_str(), &info) != 0) throw io_error(path + ": cannot open: " + std::strerror(errno));
        f.device = static_cast<unsigned long long>(info.st_dev);
        f.inode = static_cast<unsigned long long>(info.st_ino);
        files_.push_back(std::move(f));
        return files_.size() - 1;
    }

    std::size_t add_safetensors(const std::string& path) {
        const file_kind kind = detect_kind(path);
        if (kind != file_kind::safetensors) throw format_error(unsupported_input(path, kind));
        const std::size_t file = open_file(path);
        files_[file].st = std::make_unique<safetensors::reader>(path);
        const safetensors::reader& reader = *files_[file].st;
        for (const auto& [key, value] : reader.metadata()) add_metadata(key, value, path);
        for (std::size_t i = 0; i < reader.tensors().size(); ++i) {
            const auto& info = reader.tensors()[i];
            input_tensor t;
            t.name = info.name;
            t.type = info.type;
            t.shape = info.shape;
            t.rows = info.shape.size() >= 2 ? info.shape[0] : 1;
            t.cols = info.shape.size() >= 2 ? (t.rows ? info.elements() / t.rows : 0) : info.elements();
            if (info.shape.size() >= 2 && t.rows == 0) t.cols = 0;
            t.bytes = info.bytes();
            t.floating = safetensors::is_floating(info.type);
            t.source = file;
            t.index = i;
            tensors_.push_back(std::move(t));
        }
        return file;
    }

    void add_npy(const std::string& path) {
        const std::size_t file = open_file(path);
        files_[file].npy = std::make_unique<npy::reader>(path);
        const auto& info = files_[file].npy->info();
        input_tensor t;
        t.name = path_stem(path);
        t.type = info.type;
        t.shape = info.shape;
        t.rows = info.rows();
        t.cols = info.cols();
        t.bytes = info.bytes();
        t.floating = safetensors::is_floating(info.type);
        t.source = file;
        tensors_.push_back(std::move(t));
    }

    void add_metadata(const std::string& key, const std::string& value, const std::string& path) {
        for (const auto& [k, v] : metadata_)
            if (k == key) {
                if (v != value)
                    throw format_error(path + ": __metadata__ '" + key + "' is '" + value + "' here but '" + v +
                                       "' in an earlier file; the shards must agree");
                return;
            }
        metadata_.emplace_back(key, value);
    }

    std::vector<source_file> files_;
    std::vector<std::string> named_;  // the inputs as given on the command line
    std::vector<input_tensor> tensors_;
    std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace grphi::cli
