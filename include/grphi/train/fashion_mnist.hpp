// Fashion-MNIST from the Debian package dataset-fashion-mnist: a gzip IDX reader and shuffled
// mini-batches with a fixed seed.
//
// Pixels are scaled to [0, 1] (torchvision's ToTensor, the default here); standardize subtracts
// the training-set mean 0.2860 and divides by its std 0.3530, as many PyTorch recipes' Normalize do.
// Needs zlib (link with -lz).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <zlib.h>

#include "autodiff.hpp"

namespace grphi::fashion_mnist {

inline constexpr const char* default_directory = "/usr/share/datasets/fashion-mnist";
inline constexpr const char* install_hint = "apt-get install dataset-fashion-mnist";
inline constexpr float train_mean = 0.2860f;
inline constexpr float train_std = 0.3530f;

struct idx_images {
    std::size_t count = 0;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::vector<std::uint8_t> pixels;  // count * rows * cols, image after image, row-major
};

namespace detail {

// Closes the gzip handle on every path, including exceptions.
class gz_file {
public:
    explicit gz_file(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
        if (!file_)
            throw std::runtime_error("grphi::fashion_mnist: cannot open " + path + " (missing? install it with `" +
                                     install_hint + "`)");
    }
    gz_file(const gz_file&) = delete;
    gz_file& operator=(const gz_file&) = delete;
    ~gz_file() { gzclose(file_); }

    // Reads exactly n bytes or throws, naming what was being read.
    void read_exact(void* out, std::size_t n, const char* what) {
        auto* dst = static_cast<unsigned char*>(out);
        while (n > 0) {
            const unsigned chunk = static_cast<unsigned>(n < (1u << 20) ? n : (1u << 20));
            const int got = gzread(file_, dst, chunk);
            if (got < 0) {
                int code = 0;
                const char* message = gzerror(file_, &code);
                throw std::runtime_error("grphi::fashion_mnist: " + path_ + ": corrupt gzip data while reading " + what +
                                         " (" + (message ? message : "zlib error") + ")");
            }
            if (got == 0) throw std::runtime_error("grphi::fashion_mnist: " + path_ + ": file truncated while reading " + what);
            dst += got;
            n -= static_cast<std::size_t>(got);
        }
    }

    std::uint32_t read_u32_big_endian(const char* what) {
        unsigned char b[4];
        read_exact(b, 4, what);
        return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | std::uint32_t{b[3]};
    }

    // Reads `total` bytes in chunks, so a lying header cannot make us allocate more than the data holds.
    std::vector<std::uint8_t> read_payload(std::size_t total, const char* what) {
        std::vector<std::uint8_t> data;
        constexpr std::size_t chunk = std::size_t{1} << 20;
        while (data.size() < total) {
            const std::size_t start = data.size();
            const std::size_t n = total - start < chunk ? total - start : chunk;
            data.resize(start + n);
            read_exact(data.data() + start, n, what);
        }
        return data;
    }

    void expect_end() {
        unsigned char extra = 0;
        const int got = gzread(file_, &extra, 1);
        if (got != 0) throw std::runtime_error("grphi::fashion_mnist: " + path_ + ": unexpected bytes after the IDX payload");
    }

    const std::string& path() const { return path_; }

private:
    std::string path_;
    gzFile file_;
};

// IDX magic: two zero bytes, the type code (0x08 = unsigned byte), the number of dimensions.
inline void check_magic(gz_file& file, std::uint32_t magic, std::uint32_t dims) {
    const std::uint32_t expected = 0x0800u | dims;
    if (magic != expected) {
        char buffer[96];
        std::snprintf(buffer, sizeof buffer, "bad IDX magic 0x%08x (expected 0x%08x: unsigned bytes, %u dimensions)",
                      static_cast<unsigned>(magic), static_cast<unsigned>(expected), static_cast<unsigned>(dims));
        throw std::runtime_error("grphi::fashion_mnist: " + file.path() + ": " + buffer);
    }
}

inline constexpr std::uint32_t max_items = 1u << 24;      // far above any MNIST-like set
inline constexpr std::uint32_t max_side = 1u << 12;
}  // namespace detail

// An idx3-ubyte file (gzip or plain): images of rows x cols unsigned bytes.
inline idx_images read_idx_images(const std::string& path) {
    detail::gz_file file(path);
    detail::check_magic(file, file.read_u32_big_endian("the magic number"), 3);
    idx_images out;
    const std::uint32_t count = file.read_u32_big_endian("the image count");
    const std::uint32_t rows = file.read_u32_big_endian("the row count");
    const std::uint32_t cols = file.read_u32_big_endian("the column count");
    if (count > detail::max_items || rows == 0 || cols == 0 || rows > detail::max_side || cols > detail::max_side)
        throw std::runtime_error("grphi::fashion_mnist: " + path + ": implausible dimensions " + std::to_string(count) + " x " +
                                 std::to_string(rows) + " x " + std::to_string(cols));
    out.count = count;
    out.rows = rows;
    out.cols = cols;
    out.pixels = file.read_payload(out.count * out.rows * out.cols, "the pixels");
    file.expect_end();
    return out;
}

// An idx1-ubyte file (gzip or plain): one unsigned byte per item.
inline std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
    detail::gz_file file(path);
    detail::check_magic(file, file.read_u32_big_endian("the magic number"), 1);
    const std::uint32_t count = file.read_u32_big_endian("the label count");
    if (count > detail::max_items)
        throw std::runtime_error("grphi::fashion_mnist: " + path + ": implausible label count " + std::to_string(count));
    std::vector<std::uint8_t> labels = file.read_payload(count, "the labels");
    file.expect_end();
    return labels;
}

enum class split { train, test };
enum class normalization {
    unit,         // x / 255, in [0, 1] (torchvision ToTensor)
    standardize,  // (x / 255 - 0.2860) / 0.3530 (ToTensor + Normalize with the training-set statistics)
};

struct dataset {
    ad::matrix<float> images;           // one 28*28 image per row
    std::vector<std::uint8_t> labels;   // 0..9
    std::size_t rows = 0, cols = 0;     // image height and width
    std::size_t size() const { return labels.size(); }
};

// Pairs an image file with a label file; checks they agree and that labels are < classes.
inline dataset load_files(const std::string& images_path, const std::string& labels_path,
                          normalization norm = normalization::unit, int classes = 10) {
    idx_images raw = read_idx_images(images_path);
    dataset out;
    out.labels = read_idx_labels(labels_path);
    if (out.labels.size() != raw.count)
        throw std::runtime_error("grphi::fashion_mnist: " + images_path + " holds " + std::to_string(raw.count) + " images but " +
                                 labels_path + " holds " + std::to_string(out.labels.size()) + " labels");
    for (std::size_t i = 0; i < out.labels.size(); ++i)
        if (out.labels[i] >= classes)
            throw std::runtime_error("grphi::fashion_mnist: " + labels_path + ": label " + std::to_string(out.labels[i]) +
                                     " of item " + std::to_string(i) + " is not below " + std::to_string(classes));
    out.rows = raw.rows;
    out.cols = raw.cols;
    const auto features = static_cast<Eigen::Index>(raw.rows * raw.cols);
    out.images.resize(static_cast<Eigen::Index>(raw.count), features);
    const float shift = norm == normalization::standardize ? train_mean : 0.0f;
    const float scale = norm == normalization::standardize ? 1.0f / train_std : 1.0f;
    for (std::size_t i = 0; i < raw.pixels.size(); ++i)
        out.images.data()[i] = (static_cast<float>(raw.pixels[i]) / 255.0f - shift) * scale;
    return out;
}

// The Debian files: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz under `directory`.
inline dataset load(split which, normalization norm = normalization::unit, const std::string& directory = default_directory) {
    const std::string prefix = directory + "/" + (which == split::train ? "train" : "t10k");
    dataset out = load_files(prefix + "-images-idx3-ubyte.gz", prefix + "-labels-idx1-ubyte.gz", norm);
    if (out.rows != 28 || out.cols != 28)
        throw std::runtime_error("grphi::fashion_mnist: " + prefix + "-images-idx3-ubyte.gz holds " + std::to_string(out.rows) +
                                 "x" + std::to_string(out.cols) + " images, expected 28x28");
    return out;
}

// Shuffled mini-batches: a new permutation per epoch from one fixed-seed generator, so runs repeat.
// The last batch is partial unless drop_last (PyTorch DataLoader semantics).
class batch_iterator {
public:
    batch_iterator(const dataset& data, std::size_t batch_size, std::uint64_t seed, bool shuffle = true, bool drop_last = false)
        : data_(data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), generator_(seed) {
        if (batch_size == 0) throw std::invalid_argument("grphi::fashion_mnist::batch_iterator: batch_size must be positive");
        order_.resize(data.size());
        std::iota(order_.begin(), order_.end(), std::size_t{0});
    }

    // Starts a new epoch (reshuffling if enabled); call before the first next().
    void start_epoch() {
        if (shuffle_) shuffle_order();
        position_ = 0;
    }

    // Loads the next batch; false when the epoch is over.
    bool next() {
        const std::size_t remaining = order_.size() - position_;
        if (remaining == 0 || (drop_last_ && remaining < batch_size_)) return false;
        const std::size_t n = remaining < batch_size_ ? remaining : batch_size_;
        images_.resize(static_cast<Eigen::Index>(n), data_.images.cols());
        labels_.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t item = order_[position_ + i];
            images_.row(static_cast<Eigen::Index>(i)) = data_.images.row(static_cast<Eigen::Index>(item));
            labels_[i] = data_.labels[item];
        }
        position_ += n;
        return true;
    }

    const ad::matrix<float>& images() const { return images_; }
    const std::vector<int>& labels() const { return labels_; }
    const std::vector<std::size_t>& order() const { return order_; }
    std::size_t batches_per_epoch() const {
        return drop_last_ ? order_.size() / batch_size_ : (order_.size() + batch_size_ - 1) / batch_size_;
    }

private:
    // Fisher-Yates with an unbiased bounded draw (rejection), identical on every standard library.
    void shuffle_order() {
        for (std::size_t i = order_.size(); i > 1; --i) {
            const std::uint64_t bound = i;
            const std::uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
            std::uint64_t draw = generator_();
            while (draw >= limit) draw = generator_();
            std::swap(order_[i - 1], order_[static_cast<std::size_t>(draw % bound)]);
        }
    }

    const dataset& data_;
    std::size_t batch_size_;
    bool shuffle_, drop_last_;
    std::mt19937_64 generator_;
    std::vector<std::size_t> order_;
    std::size_t position_ = 0;
    ad::matrix<float> images_;
    std::vector<int> labels_;
};

}  // namespace grphi::fashion_mnist
