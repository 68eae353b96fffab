// Element types of checkpoint tensors, defined once: the safetensors names, the sizes, and the ids the
// `.grphi` file stores (docs/format.md). safetensors, .npy and the file format all speak this enum.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace grphi {

// The numeric values are the file format's dtype ids: never renumber them.
enum class dtype : std::uint8_t {
    F64 = 1, F32 = 2, F16 = 3, BF16 = 4,
    I8 = 5, I16 = 6, I32 = 7, I64 = 8,
    U8 = 9, U16 = 10, U32 = 11, U64 = 12,
    BOOL = 13, F8_E5M2 = 14, F8_E4M3 = 15,
};

namespace detail {
struct dtype_row {
    dtype type;
    const char* name;
    std::size_t size;
};
inline constexpr dtype_row dtype_rows[] = {
    {dtype::F64, "F64", 8},  {dtype::F32, "F32", 4},  {dtype::F16, "F16", 2},   {dtype::BF16, "BF16", 2},
    {dtype::I8, "I8", 1},    {dtype::I16, "I16", 2},  {dtype::I32, "I32", 4},   {dtype::I64, "I64", 8},
    {dtype::U8, "U8", 1},    {dtype::U16, "U16", 2},  {dtype::U32, "U32", 4},   {dtype::U64, "U64", 8},
    {dtype::BOOL, "BOOL", 1}, {dtype::F8_E5M2, "F8_E5M2", 1}, {dtype::F8_E4M3, "F8_E4M3", 1},
};
}  // namespace detail

// "F32", "BF16", ... (the safetensors spelling); "?" for a value outside the enum.
inline const char* dtype_name(dtype t) {
    for (const auto& row : detail::dtype_rows)
        if (row.type == t) return row.name;
    return "?";
}
// Bytes per element; 0 for a value outside the enum.
inline std::size_t dtype_size(dtype t) {
    for (const auto& row : detail::dtype_rows)
        if (row.type == t) return row.size;
    return 0;
}
inline std::optional<dtype> parse_dtype(std::string_view name) {
    for (const auto& row : detail::dtype_rows)
        if (name == row.name) return row.type;
    return std::nullopt;
}
// The dtypes grphi converts to float/double for quantization; the rest can only pass through.
inline bool is_floating(dtype t) { return t == dtype::F16 || t == dtype::BF16 || t == dtype::F32 || t == dtype::F64; }

}  // namespace grphi
