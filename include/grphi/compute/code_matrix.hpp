// Packed weights for compute: 4-bit or 8-bit codes per weight, rows aligned to 64 bytes, and per
// block of a row only the position of its window top in one shared table of exact levels.
//
// The code rule (one definition: code_matrix_rule below, used by the builder, decode and every kernel):
//   code = sign << (bits - 1) | offset, offset = top - k, where top is the block's largest exponent
//   among its nonzero weights and k the weight's exponent; sign 1 = negative.
//   The lowest slot (offset 7 for 4-bit, 127 for 8-bit) is zero when the block reserves it:
//   8-bit blocks always do (up to 127 levels), a 4-bit block does when it holds an exact zero
//   (so up to 8 levels without zeros, 7 with). A zero weight is the code "+, lowest slot".
// Levels: the block's table entry `offset` is levels[index + offset], where levels is the matrix's
// descending table of correctly rounded b^(k + step/16) (the very values dequantize writes), so a
// block's 8 levels are one contiguous load. A block is a whole row (per channel), or with
// options::block_size and exponent block scales (issue 13) that many weights of a row with its own
// step (fit_scale); block sizes that are multiples of 32 run the SIMD paths, others the scalar one.
// With block scales stored as numbers (block_format fp16 / e4m3) a block's levels are its scale times
// the unscaled grid's, rounded in T as dequantize rounds them: one segment per (scale, top) pair.
// 4-bit byte order: within each 32-weight chunk of a row, byte i holds weight i in its low nibble and
// weight i + 16 in its high nibble, so one zero-extended byte vector feeds two 16-entry lookups.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <Eigen/Core>

#include "../format/container.hpp"
#include "../core/levels.hpp"
#include "../core/packed.hpp"
#include "../core/quantize.hpp"
#include "../detail/block_scales.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace grphi {

// The code rule, shared by builder, decoder and kernels.
struct code_matrix_rule {
    int bits = 4;  // 4 or 8
    int slots() const { return bits == 4 ? 8 : 128; }
    int zero_slot() const { return slots() - 1; }
    unsigned sign_bit() const { return 1u << (bits - 1); }
    // Levels a block may span: a reserved zero slot takes one.
    int capacity(bool reserves_zero) const { return reserves_zero ? slots() - 1 : slots(); }
    bool always_reserves_zero() const { return bits == 8; }
    // Bytes of one row's codes before alignment.
    std::size_t code_bytes(std::size_t cols) const { return bits == 4 ? (cols + 31) / 32 * 16 : cols; }
};

namespace detail {

// 64-byte aligned bytes; buffers of 4 MB and more are 2 MB aligned and advised onto huge pages.
class aligned_bytes {
public:
    aligned_bytes() = default;
    explicit aligned_bytes(std::size_t n) : size_(n) {
        if (n == 0) return;
        const std::size_t align = n >= (std::size_t(4) << 20) ? (std::size_t(2) << 20) : 64;
        const std::size_t rounded = (n + align - 1) / align * align;
        data_.reset(static_cast<std::uint8_t*>(std::aligned_alloc(align, rounded)));
        if (!data_) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
        if (align > 64) madvise(data_.get(), rounded, MADV_HUGEPAGE);
#endif
        std::memset(data_.get(), 0, rounded);
    }
    aligned_bytes(const aligned_bytes& o) : aligned_bytes(o.size_) {
        if (size_ != 0) std::memcpy(data_.get(), o.data_.get(), size_);
    }
    aligned_bytes& operator=(const aligned_bytes& o) {
        if (this != &o) *this = aligned_bytes(o);
        return *this;
    }
    aligned_bytes(aligned_bytes&&) noexcept = default;
    aligned_bytes& operator=(aligned_bytes&&) noexcept = default;

    std::uint8_t* data() { return data_.get(); }
    const std::uint8_t* data() const { return data_.get(); }
    std::size_t size() const { return size_; }

private:
    struct free_deleter {
        void operator()(std::uint8_t* p) const { std::free(p); }
    };
    std::unique_ptr<std::uint8_t, free_deleter> data_;
    std::size_t size_ = 0;
};

}  // namespace detail

namespace kernels {

// What a kernel sees of a code_matrix: plain pointers and sizes.
struct code_view {
    std::size_t rows = 0, cols = 0;
    int bits = 4;
    std::size_t row_bytes = 0;         // stride between rows (a multiple of 64)
    std::size_t block_size = 0;        // weights per block (the last block of a row may be short)
    std::size_t blocks_per_row = 0;
    const std::uint8_t* codes = nullptr;
    const std::uint32_t* blocks = nullptr;  // rows * blocks_per_row entries: index << 1 | reserves_zero
    const float* levels_f = nullptr;   // descending exact levels (float copy)
    const double* levels_d = nullptr;  // same, double
    bool pure_powers_of_two = false;   // base 2 without scale steps: every level is exactly 2^k
    const std::int32_t* top_exponent = nullptr;  // per block: its window top k (for the multiplier-free kernel)
    int max_span = 0;                  // widest block's levels (8-bit kernels size their register tables by it)
    // 4-bit, when the level table is small: per block entry e, the 16 floats table16 would build from
    // it (levels, then negated levels; the zero slot zeroed), 64-byte aligned: one load per block.
    const float* signed_tables = nullptr;

    template <class A>
    const A* levels() const {
        if constexpr (std::is_same_v<A, float>)
            return levels_f;
        else
            return levels_d;
    }
    const std::uint8_t* row(std::size_t r) const { return codes + r * row_bytes; }
    std::uint32_t block(std::size_t r, std::size_t b) const { return blocks[r * blocks_per_row + b]; }
    // Code of weight c in a row (the layout's one decoder; SIMD kernels read the same bytes in bulk).
    unsigned code_at(const std::uint8_t* row_codes, std::size_t c) const {
        if (bits == 8) return row_codes[c];
        const std::size_t chunk = c / 32, lane = c % 32;
        const std::uint8_t byte = row_codes[chunk * 16 + lane % 16];
        return lane < 16 ? (byte & 0xFu) : (byte >> 4);
    }
    // The value of a code in a block, in activation precision A.
    template <class A>
    A value(std::uint32_t block_entry, unsigned code) const {
        const code_matrix_rule rule{bits};
        const unsigned offset = code & (rule.sign_bit() - 1);
        if ((block_entry & 1u) && offset == static_cast<unsigned>(rule.zero_slot())) return A(0);
        const A level = levels<A>()[(block_entry >> 1) + offset];
        return (code & rule.sign_bit()) ? -level : level;
    }
};

}  // namespace kernels

template <class T, class Base>
class code_matrix {
public:
    using scalar_type = T;
    using base_type = Base;

    code_matrix() = default;

    // Exactly the weights of p (validated first). Throws std::invalid_argument naming the row (and
    // block) whose window is wider than the code allows, and that width.
    explicit code_matrix(const packed<T, Base>& p, int code_bits = 4) : rule_{code_bits} {
        if (code_bits != 4 && code_bits != 8)
            throw std::invalid_argument("grphi::code_matrix: code_bits=" + std::to_string(code_bits) + " must be 4 or 8");
        validate(p);
        rows_ = static_cast<std::size_t>(p.rows);
        cols_ = static_cast<std::size_t>(p.cols);
        // A block per options::block_size weights of a row (block scales), else one per row (per channel).
        const bool blocked = p.opts.blocked();
        const bool scaled = blocked && p.opts.block_format != block_scale::exponent;  // fp16 / e4m3 numbers
        block_size_ = blocked ? static_cast<std::size_t>(p.opts.block_size) : cols_;
        blocks_per_row_ = rows_ > 0 && cols_ > 0 ? (cols_ + block_size_ - 1) / block_size_ : 0;
        row_bytes_ = (rule_.code_bytes(cols_) + 63) / 64 * 64;
        codes_ = detail::aligned_bytes(rows_ * row_bytes_);
        blocks_.assign(rows_ * blocks_per_row_, 0);
        tops_.assign(blocks_.size(), 0);
        pure_powers_of_two_ = std::is_same_v<Base, two> && !scaled;

        std::vector<int> segment_of_step(2 * scale_step_max + 1, -1);  // step -> start of its segment
        std::unordered_map<std::uint32_t, int> segment_of_scale;  // scale code << 16 | top -> start of its segment
        for (std::size_t r = 0; r < rows_; ++r) {
            const auto ch = static_cast<std::size_t>(p.channel_of_row(static_cast<Eigen::Index>(r)));
            const std::int8_t* signs = p.signs.data() + r * cols_;
            for (std::size_t b = 0; b < blocks_per_row_; ++b) {
                // The block's scale step: its own with exponent block scales, else its channel's (0 with
                // fp16 / e4m3 scales, whose levels are the scale times the unscaled grid's).
                const std::size_t block_index = r * blocks_per_row_ + b;
                const int step = scaled ? 0 : blocked ? p.block_steps[block_index] : p.scale_steps[ch];
                if (step != 0) pure_powers_of_two_ = false;
                const auto& g = grid_for<T, Base>(p.opts, step);
                const std::size_t first = b * block_size_, last = std::min(cols_, first + block_size_);
                int top = scaled ? p.window_hi[ch] : blocked ? p.block_top[block_index] : p.window_hi[ch], bottom = top;
                bool has_zero = false, any = false;
                for (std::size_t c = first; c < last; ++c) {
                    if (signs[c] == 0) {
                        has_zero = true;
                        continue;
                    }
                    const int k = p.exponent(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
                    top = any ? std::max(top, k) : k;
                    bottom = any ? std::min(bottom, k) : k;
                    any = true;
                }
                const bool reserves = has_zero || rule_.always_reserves_zero();
                const int width = top - bottom + 1;
                if (width > rule_.capacity(reserves))
                    throw std::invalid_argument(
                        "grphi::code_matrix: row " + std::to_string(r) +
                        (blocks_per_row_ > 1 ? ", block " + std::to_string(b) : std::string()) + " spans " +
                        std::to_string(width) + " levels (exponents " + std::to_string(bottom) + ".." +
                        std::to_string(top) + (has_zero ? ", and a zero" : "") + "); " + std::to_string(code_bits) +
                        "-bit codes hold at most " + std::to_string(rule_.capacity(reserves)) + " levels" +
                        (code_bits == 4 && has_zero ? " in a block with a zero (8 without)" : ""));
                if (any) max_span_ = std::max(max_span_, width);
                std::uint32_t index;
                if (scaled) {
                    // A segment per (scale, top): the block's levels from its top down, as dequantize
                    // computes them (scale times level, in T).
                    const std::uint16_t code = p.block_scales[block_index];
                    const auto key = std::uint32_t(code) << 16 | std::uint16_t(top);
                    const auto [it, added] = segment_of_scale.try_emplace(key, 0);
                    if (added) it->second = append_scaled_segment(g, top, static_cast<T>(detail::block_scale_value(p.opts.block_format, code)));
                    index = static_cast<std::uint32_t>(it->second);
                } else {
                    int& start = segment_of_step[static_cast<std::size_t>(step + scale_step_max)];
                    if (start < 0) start = append_segment(g);
                    index = static_cast<std::uint32_t>(start + (g.k_hi - top));
                }
                blocks_[block_index] = index << 1 | (reserves ? 1u : 0u);
                tops_[block_index] = top;
                for (std::size_t c = first; c < last; ++c) {
                    unsigned code;
                    if (signs[c] == 0) {
                        code = static_cast<unsigned>(rule_.zero_slot());
                    } else {
                        const int k = p.exponent(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(c));
                        code = static_cast<unsigned>(top - k) | (signs[c] < 0 ? rule_.sign_bit() : 0u);
                    }
                    put_code(r, c, code);
                }
            }
        }
        // Float activations read float levels: exact for float weights, rounded once for double weights.
        levels_f_.reserve(levels_d_.size());
        for (double v : levels_d_) levels_f_.push_back(static_cast<float>(v));
        build_signed_tables();
    }

    Eigen::Index rows() const { return static_cast<Eigen::Index>(rows_); }
    Eigen::Index cols() const { return static_cast<Eigen::Index>(cols_); }
    int code_bits() const { return rule_.bits; }
    Eigen::Index block_size() const { return static_cast<Eigen::Index>(block_size_); }
    std::size_t row_bytes() const { return row_bytes_; }
    // Bytes the kernels read per product: codes, block entries and the float level table (small per
    // channel or with exponent scales; a segment per distinct (scale, top) with fp16 / e4m3 scales).
    std::size_t weight_bytes() const {
        return codes_.size() + blocks_.size() * sizeof(std::uint32_t) + levels_f_.size() * sizeof(float) +
               signed_tables_.size();
    }
    double bits_per_weight() const {
        return rows_ * cols_ == 0 ? 0.0 : 8.0 * static_cast<double>(weight_bytes()) / static_cast<double>(rows_ * cols_);
    }

    kernels::code_view view() const {
        kernels::code_view v;
        v.rows = rows_;
        v.cols = cols_;
        v.bits = rule_.bits;
        v.row_bytes = row_bytes_;
        v.block_size = block_size_;
        v.blocks_per_row = blocks_per_row_;
        v.codes = codes_.data();
        v.blocks = blocks_.data();
        v.levels_f = levels_f_.data();
        v.levels_d = levels_d_.data();
        v.pure_powers_of_two = pure_powers_of_two_;
        v.top_exponent = tops_.data();
        v.max_span = max_span_;
        v.signed_tables = signed_tables_.size() ? reinterpret_cast<const float*>(signed_tables_.data()) : nullptr;
        return v;
    }

    // Weight (r, c) as the kernels see it (equals dequantize(p)(r, c)).
    T weight(Eigen::Index r, Eigen::Index c) const {
        const kernels::code_view v = view();
        const auto rr = static_cast<std::size_t>(r), cc = static_cast<std::size_t>(c);
        return v.value<T>(v.block(rr, cc / block_size_), v.code_at(v.row(rr), cc));
    }
    row_matrix<T> to_dense() const {
        row_matrix<T> out(rows(), cols());
        for (Eigen::Index r = 0; r < rows(); ++r)
            for (Eigen::Index c = 0; c < cols(); ++c) out(r, c) = weight(r, c);
        return out;
    }

private:
    // Appends the grid's levels in descending order plus zero padding; returns the segment start.
    template <class G>
    int append_segment(const G& g) {
        const int start = static_cast<int>(levels_d_.size());
        for (int k = g.k_hi; k >= g.k_lo; --k) levels_d_.push_back(static_cast<double>(g.level_of(k)));
        levels_d_.insert(levels_d_.end(), 128, 0.0);  // loads of a full table never leave the segment
        return start;
    }
    // Appends the rule's slots of levels scale * level(k) for k = top, top - 1, ... (zero below the
    // grid); returns the segment start. Kernels read at most the rule's slots from a block's index.
    template <class G>
    int append_scaled_segment(const G& g, int top, T scale) {
        const int start = static_cast<int>(levels_d_.size());
        for (int k = top; k > top - rule_.slots(); --k)
            levels_d_.push_back(k >= g.k_lo && k <= g.k_hi ? static_cast<double>(scale * g.level_of(k)) : 0.0);
        return start;
    }
    // Signed 16-entry tables for every possible 4-bit entry when they stay small (L1/L2-resident);
    // fp16 / e4m3 matrices with thousands of segments keep building tables from levels_f per block.
    void build_signed_tables() {
        static constexpr std::size_t max_entries = 2048;  // 128 KB of tables
        const std::size_t entries = 2 * levels_f_.size();
        // Per channel a row builds its one table once: nothing to gain there.
        if (rule_.bits != 4 || blocks_per_row_ < 2 || entries == 0 || entries > max_entries) return;
        signed_tables_ = detail::aligned_bytes(entries * 16 * sizeof(float));
        auto* t = reinterpret_cast<float*>(signed_tables_.data());
        for (std::size_t e = 0; e < entries; ++e)
            for (std::size_t n = 0; n < 16; ++n) {
                const std::size_t offset = n & 7u, index = (e >> 1) + offset;
                const bool zero = ((e & 1u) && offset == 7) || index >= levels_f_.size();
                const float level = zero ? 0.0f : levels_f_[index];
                t[16 * e + n] = n < 8 ? level : -level;
            }
    }
    void put_code(std::size_t r, std::size_t c, unsigned code) {
        std::uint8_t* row = codes_.data() + r * row_bytes_;
        if (rule_.bits == 8) {
            row[c] = static_cast<std::uint8_t>(code);
            return;
        }
        const std::size_t chunk = c / 32, lane = c % 32;
        std::uint8_t& byte = row[chunk * 16 + lane % 16];
        byte = static_cast<std::uint8_t>(lane < 16 ? (byte & 0xF0u) | code : (byte & 0x0Fu) | (code << 4));
    }

    code_matrix_rule rule_{4};
    std::size_t rows_ = 0, cols_ = 0, block_size_ = 0, blocks_per_row_ = 0, row_bytes_ = 0;
    detail::aligned_bytes codes_;
    std::vector<std::uint32_t> blocks_;
    std::vector<std::int32_t> tops_;
    std::vector<double> levels_d_;
    std::vector<float> levels_f_;
    detail::aligned_bytes signed_tables_;
    bool pure_powers_of_two_ = false;
    int max_span_ = 0;
};

// Any code matrix behind one type (the kernels need only its view): what a layer holds when its
// base is chosen at run time.
template <class T>
class any_code_matrix {
public:
    using scalar_type = T;
    template <class Base>
    explicit any_code_matrix(code_matrix<T, Base> m)
        : owner_(std::make_shared<const code_matrix<T, Base>>(std::move(m))),
          view_(static_cast<const code_matrix<T, Base>*>(owner_.get())->view()),
          bits_per_weight_(static_cast<const code_matrix<T, Base>*>(owner_.get())->bits_per_weight()) {}

    kernels::code_view view() const { return view_; }
    Eigen::Index rows() const { return static_cast<Eigen::Index>(view_.rows); }
    Eigen::Index cols() const { return static_cast<Eigen::Index>(view_.cols); }
    int code_bits() const { return view_.bits; }
    double bits_per_weight() const { return bits_per_weight_; }

private:
    std::shared_ptr<const void> owner_;
    kernels::code_view view_;
    double bits_per_weight_ = 0;
};

// Codes for a tensor of a .grphi file, straight from its exponents (the library's reader, no float
// round trip); base phi, two, sqrt2 or custom. Throws std::invalid_argument for another base, a
// scalar type other than T, or a window too wide for the code (naming the row and the width).
template <class T>
any_code_matrix<T> code_matrix_from(const stored_tensor& t, int code_bits = 4) {
    if (t.base_name == phi::name) return any_code_matrix<T>(code_matrix<T, phi>(t.as<T, phi>(), code_bits));
    if (t.base_name == two::name) return any_code_matrix<T>(code_matrix<T, two>(t.as<T, two>(), code_bits));
    if (t.base_name == sqrt2::name) return any_code_matrix<T>(code_matrix<T, sqrt2>(t.as<T, sqrt2>(), code_bits));
    if (t.base_name == custom::name) return any_code_matrix<T>(code_matrix<T, custom>(t.as<T, custom>(), code_bits));
    throw std::invalid_argument("grphi::code_matrix_from: tensor '" + t.name + "' has base '" + t.base_name +
                                "' (codes are built for phi, two, sqrt2 and custom)");
}

}  // namespace grphi
