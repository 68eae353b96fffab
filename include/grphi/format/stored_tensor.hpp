// A quantized tensor as a file holds it: name, scalar type and base erased into values, the packed
// arrays as they are. stored_tensor::as<T, Base>() brings the typed grphi::packed back (validated).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "../core/base.hpp"
#include "../core/error.hpp"
#include "../core/options.hpp"
#include "../core/packed.hpp"
#include "../core/quantize.hpp"

namespace grphi {

class file_reader;

enum class scalar_kind : std::uint8_t { float32 = 1, float64 = 2 };

template <class T>
constexpr scalar_kind scalar_kind_of() {
    check_scalar<T>();
    return std::is_same_v<T, float> ? scalar_kind::float32 : scalar_kind::float64;
}

inline const char* scalar_kind_name(scalar_kind k) { return k == scalar_kind::float32 ? "float32" : "float64"; }

// A named packed tensor with its scalar type and base erased: what a .grphi file holds.
struct stored_tensor {
    std::string name;
    scalar_kind scalar = scalar_kind::float32;
    std::string base_name;                // "phi", "two", "sqrt2", a user tag's name, or "custom"
    double base_value = 0;                // the base's value rounded to double (exact for custom)
    std::int64_t rows = 0;
    std::int64_t cols = 0;
    options opts;
    std::vector<std::int8_t> signs;
    std::vector<std::int16_t> exponents;
    std::vector<std::int16_t> window_lo;
    std::vector<std::int16_t> window_hi;
    std::vector<std::int8_t> scale_steps;
    // Block scales (opts.block_size > 0), as grphi::packed keeps them: rows x blocks per row, row-major.
    std::vector<std::int16_t> block_top;
    std::vector<std::int8_t> block_steps;
    std::vector<std::uint16_t> block_scales;
    std::uint64_t coded_bytes = 0;        // bytes in the file (directory entry + data + checksum); set by load

    std::uint64_t size() const { return static_cast<std::uint64_t>(rows) * static_cast<std::uint64_t>(cols); }
    // Scale blocks per row (0 without block scales) and in all.
    std::uint64_t scale_blocks_per_row() const {
        return opts.block_size > 0 && cols > 0 ? (static_cast<std::uint64_t>(cols) - 1) / static_cast<std::uint64_t>(opts.block_size) + 1
                                               : 0;
    }
    std::uint64_t scale_block_count() const { return static_cast<std::uint64_t>(rows) * scale_blocks_per_row(); }
    double coded_bits_per_weight() const {
        return size() == 0 ? 0.0 : 8.0 * static_cast<double>(coded_bytes) / static_cast<double>(size());
    }

    // opts.base_value stays unset: a custom base's value is base_value (as<T, custom> moves it into the options).
    template <class T, class Base>
    bool holds() const {
        if constexpr (is_custom_base_v<Base>)
            return scalar == scalar_kind_of<T>() && base_name == Base::name;
        else
            return scalar == scalar_kind_of<T>() && base_name == Base::name &&
                   base_value == static_cast<double>(static_cast<long double>(Base::value));
    }

    // Back to the typed tensor; throws std::invalid_argument when the scalar type or base differ, and
    // format_error when the content is not a valid packed tensor (e.g. a window outside the base's range).
    template <class T, class Base>
    packed<T, Base> as() const& {
        return to_packed<T, Base>(*this, true);
    }
    // The same, moving the arrays out of a temporary.
    template <class T, class Base>
    packed<T, Base> as() && {
        return to_packed<T, Base>(std::move(*this), true);
    }

    template <class T, class Base>
    static stored_tensor from(std::string name, const packed<T, Base>& p) {
        validate(p);  // never write what cannot be read back
        return from_valid(std::move(name), packed<T, Base>(p));
    }

    // from() without the validation pass, moving p's arrays: for tensors valid by construction (straight
    // from grphi::quantize), where the pass would cost more than the move saves.
    template <class T, class Base>
    static stored_tensor from_valid(std::string name, packed<T, Base>&& p) {
        stored_tensor s;
        s.name = std::move(name);
        s.scalar = scalar_kind_of<T>();
        s.base_name = Base::name;
        s.base_value = base_value_of<Base>(p.opts);
        s.rows = p.rows;
        s.cols = p.cols;
        s.opts = p.opts;
        s.opts.base_value.reset();  // a custom base's value is stored once, as base_value
        s.signs = std::move(p.signs);
        s.exponents = std::move(p.exponents);
        s.window_lo = std::move(p.window_lo);
        s.window_hi = std::move(p.window_hi);
        s.scale_steps = std::move(p.scale_steps);
        s.block_top = std::move(p.block_top);
        s.block_steps = std::move(p.block_steps);
        s.block_scales = std::move(p.block_scales);
        return s;
    }
private:
    friend class file_reader;
    // as() && for a tensor that detail::read_tensor_data has just filled, which checked its values (signs,
    // exponents inside their windows) on the way: only the layout is validated again. Private, so that
    // only the reader, which fills and converts a part with nothing in between, can skip the checks.
    template <class T, class Base>
    packed<T, Base> as_decoded() && {
        return to_packed<T, Base>(std::move(*this), false);
    }
    template <class T, class Base, class Self>
    static packed<T, Base> to_packed(Self&& self, bool check_values) {
        if (!self.template holds<T, Base>())
            throw std::invalid_argument("grphi::stored_tensor::as: tensor '" + self.name + "' is " + scalar_kind_name(self.scalar) +
                                        " with base " + self.base_name + ", not " + scalar_kind_name(scalar_kind_of<T>()) +
                                        " with base " + Base::name);
        packed<T, Base> p;
        p.rows = static_cast<Eigen::Index>(self.rows);
        p.cols = static_cast<Eigen::Index>(self.cols);
        p.opts = self.opts;
        if constexpr (is_custom_base_v<Base>) {
            if (self.opts.base_value && *self.opts.base_value != self.base_value)
                throw format_error("grphi: tensor '" + self.name + "': options base_value " +
                                   detail::number_text(*self.opts.base_value) + " differs from the base value " +
                                   detail::number_text(self.base_value));
            p.opts.base_value = self.base_value;
        }
        p.signs = std::forward<Self>(self).signs;
        p.exponents = std::forward<Self>(self).exponents;
        p.window_lo = std::forward<Self>(self).window_lo;
        p.window_hi = std::forward<Self>(self).window_hi;
        p.scale_steps = std::forward<Self>(self).scale_steps;
        p.block_top = std::forward<Self>(self).block_top;
        p.block_steps = std::forward<Self>(self).block_steps;
        p.block_scales = std::forward<Self>(self).block_scales;
        try {
            detail::validate_packed(p, check_values);
        } catch (const std::invalid_argument& e) {
            throw format_error("grphi: tensor '" + self.name + "': " + e.what());
        }
        return p;
    }
};

template <class T, class Base>
stored_tensor named(std::string name, const packed<T, Base>& p) {
    return stored_tensor::from(std::move(name), p);
}


}  // namespace grphi
