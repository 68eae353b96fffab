// The grphi tool's view of an input checkpoint: .safetensors or .npy, as a list of tensors read by row ranges.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <grphi/error.hpp>
#include <grphi/mapped_file.hpp>
#include <grphi/npy.hpp>
#include <grphi/safetensors.hpp>

namespace grphi::cli {

struct input_tensor {
    std::string name;
    safetensors::dtype type = safetensors::dtype::F32;
    std::vector<std::uint64_t> shape;
    std::uint64_t rows = 0;  // rank >= 2: first dimension; else 1
    std::uint64_t cols = 0;  // the remaining dimensions flattened in C order
    std::uint64_t bytes = 0;
    bool floating = false;

    std::uint64_t elements() const { return rows * cols; }
    // Rank >= 2 float tensors are weights; biases, norms, scalars and integer buffers stay exact.
    bool weight_like() const { return floating && shape.size() >= 2; }
};

inline std::string shape_text(const std::vector<std::uint64_t>& shape) {
    std::string text = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
    return text + "]";
}

inline bool has_npy_magic(const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) return false;
    char head[6] = {};
    const std::size_t got = std::fread(head, 1, 6, file);
    std::fclose(file);
    return got == 6 && std::memcmp(head, npy::magic, 6) == 0;
}

// The stem of a path ("dir/weights.npy" -> "weights"): the tensor name of an .npy array.
inline std::string path_stem(const std::string& path) {
    const std::size_t slash = path.find_last_of('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    const std::size_t dot = name.find_last_of('.');
    if (dot != std::string::npos && dot > 0) name.resize(dot);
    return name.empty() ? "array" : name;
}

class input_checkpoint {
public:
    explicit input_checkpoint(const std::string& path) : path_(path) {
        if (has_npy_magic(path)) {
            npy_ = std::make_unique<npy::reader>(path);
            const auto& info = npy_->info();
            input_tensor t;
            t.name = path_stem(path);
            t.type = info.type;
            t.shape = info.shape;
            t.rows = info.rows();
            t.cols = info.cols();
            t.bytes = info.bytes();
            t.floating = true;
            tensors_.push_back(std::move(t));
            return;
        }
        st_ = std::make_unique<safetensors::reader>(path);
        for (const auto& info : st_->tensors()) {
            input_tensor t;
            t.name = info.name;
            t.type = info.type;
            t.shape = info.shape;
            t.rows = info.shape.size() >= 2 ? info.shape[0] : 1;
            t.cols = info.shape.size() >= 2 ? (t.rows ? info.elements() / t.rows : 0) : info.elements();
            if (info.shape.size() >= 2 && t.rows == 0) t.cols = 0;
            t.bytes = info.bytes();
            t.floating = safetensors::is_floating(info.type);
            tensors_.push_back(std::move(t));
        }
    }

    const std::string& path() const { return path_; }
    const std::vector<input_tensor>& tensors() const { return tensors_; }
    bool is_npy() const { return npy_ != nullptr; }
    const std::vector<std::pair<std::string, std::string>>& metadata() const {
        static const std::vector<std::pair<std::string, std::string>> none;
        return st_ ? st_->metadata() : none;
    }

    // Rows [first, first+count) of tensor `index`, row-major, converted to T.
    template <class T>
    void read_rows(std::size_t index, std::uint64_t first, std::uint64_t count, T* out) const {
        const input_tensor& t = tensors_[index];
        if (npy_) {
            npy_->read_rows(first, count, out);
            return;
        }
        st_->read(st_->tensors()[index], first * t.cols, count * t.cols, out);
    }

    // Rows [first, first+count) of tensor `index` in place in the mapped file when it already stores them
    // as T (same type, little-endian host, C order, aligned), so they need no copy; else nullptr.
    template <class T>
    const T* direct_rows(std::size_t index, std::uint64_t first, std::uint64_t count) const {
        (void)count;
        const input_tensor& t = tensors_[index];
        const safetensors::dtype own = std::is_same_v<T, float> ? safetensors::dtype::F32 : safetensors::dtype::F64;
        if (t.type != own || !safetensors::detail::host_is_little_endian() || !raw_is_c_order(index)) return nullptr;
        const std::byte* start = raw_bytes(index) + first * t.cols * sizeof(T);
        if (reinterpret_cast<std::uintptr_t>(start) % alignof(T) != 0) return nullptr;
        return reinterpret_cast<const T*>(start);
    }

    // The stored little-endian bytes of tensor `index` (for exact passthrough); npy data is C order only.
    const std::byte* raw_bytes(std::size_t index) const {
        if (npy_) return npy_->bytes();
        return st_->bytes(st_->tensors()[index]);
    }
    bool raw_is_c_order(std::size_t index) const {
        (void)index;
        return !npy_ || !npy_->info().fortran_order || npy_->info().shape.size() < 2;
    }

    // Done with these rows: give their pages back so the resident set stays bounded.
    void release_rows(std::size_t index, std::uint64_t first, std::uint64_t count) const {
        const input_tensor& t = tensors_[index];
        const std::size_t width = safetensors::dtype_size(t.type);
        if (npy_) {
            npy_->release_rows(first, count);
            return;
        }
        const auto& info = st_->tensors()[index];
        st_->release_bytes(info.begin + first * t.cols * width, count * t.cols * width);
    }

private:
    std::string path_;
    std::unique_ptr<safetensors::reader> st_;
    std::unique_ptr<npy::reader> npy_;
    std::vector<input_tensor> tensors_;
};

}  // namespace grphi::cli
