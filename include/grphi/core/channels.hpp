// How a tensor's shape maps onto quantization channels, defined once: an N-D shape is viewed as a
// matrix (rows = output channels = the first extent, cols = the product of the others), and a tensor
// has one channel per row when per-channel, else one channel (none when it has no rows).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace grphi {

// Number of channels (window + scale states) of a rows x cols tensor.
constexpr std::int64_t channel_count(bool per_channel, std::int64_t rows) { return per_channel ? rows : (rows > 0 ? 1 : 0); }

// The channel that row r belongs to.
constexpr std::int64_t channel_of_row(bool per_channel, std::int64_t r) { return per_channel ? r : 0; }

// The matrix view of an N-D shape: rank 0 is 1 x 1, rank 1 is 1 x n, rank >= 2 is d0 x (d1 * ... * dn).
struct matrix_extent {
    std::int64_t rows = 0;
    std::int64_t cols = 0;
};

// Largest extent and element count grphi accepts (2^62): products stay far from wrapping 64 bits.
inline constexpr std::uint64_t max_tensor_elements = std::uint64_t{1} << 62;

// Element count of a shape; throws std::invalid_argument when it (or a prefix of it) exceeds 2^62,
// so a forged shape can never wrap around 2^64.
inline std::uint64_t element_count(const std::vector<std::uint64_t>& shape) {
    std::uint64_t n = 1;
    bool empty = false;
    for (const std::uint64_t d : shape) {
        if (d > max_tensor_elements)
            throw std::invalid_argument("grphi: shape extent " + std::to_string(d) + " exceeds 2^62");
        if (d == 0) empty = true;
        else if (!empty && n > max_tensor_elements / d)
            throw std::invalid_argument("grphi: shape holds more than 2^62 elements");
        else if (!empty) n *= d;
    }
    return empty ? 0 : n;
}

// The matrix view (see above); throws std::invalid_argument as element_count does. An empty shape
// keeps its row count (rows x 0 or 0 x cols), so its channel state is sized by rows alone.
inline matrix_extent matrix_extent_of(const std::vector<std::uint64_t>& shape) {
    element_count(shape);  // every extent and product checked
    if (shape.empty()) return {1, 1};
    if (shape.size() == 1) return {1, static_cast<std::int64_t>(shape[0])};
    std::vector<std::uint64_t> rest(shape.begin() + 1, shape.end());
    return {static_cast<std::int64_t>(shape[0]), static_cast<std::int64_t>(element_count(rest))};
}

}  // namespace grphi
