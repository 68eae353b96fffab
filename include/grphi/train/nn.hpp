// Layers that own latent weights and, optionally, a logarithmic weight quantizer.
//
// train(): the forward pass uses fake_quantize(W) and the STE sends the gradient to the latent W
// (the seed's PhiWeightQuantizer semantics, with gradients that actually arrive).
// eval(): the forward pass uses the same fixed rounding and records no gradient for W.
#pragma once

#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "../compute/code_matrix.hpp"
#include "../kernels/code_matmul.hpp"
#include "autodiff.hpp"
#include "../core/base.hpp"
#include "../format/stored_tensor.hpp"
#include "../coding/entropy.hpp"
#include "../core/options.hpp"
#include "../core/quantize.hpp"

namespace grphi::nn {

// A base chosen at run time: the quantizer keeps function pointers instantiated for its base.
class weight_quantizer {
public:
    template <class Base>
    static weight_quantizer make(const grphi::options& opts, float grad_scale = 1.0f, bool mask_clipped = false) {
        grphi::check_base<Base>();
        opts.validate();
        weight_quantizer q;
        q.base_name_ = Base::name;
        q.opts_ = opts;
        q.grad_scale_ = grad_scale;
        q.mask_clipped_ = mask_clipped;
        q.float_fn_ = &ad::detail::fake_quantize_into<Base, float>;
        q.double_fn_ = &ad::detail::fake_quantize_into<Base, double>;
        q.entropy_fn_ = &entropy_of<Base>;
        q.store_fn_ = &store_as<Base>;
        return q;
    }

    // A base as grphi::parse_base spells it ("phi", "two", "sqrt2", or a number; a number at a named base
    // selects it): any other number is grphi::custom with that value (the options must not carry a
    // base_value of their own).
    static weight_quantizer by_name(std::string_view base, const grphi::options& opts, float grad_scale = 1.0f,
                                    bool mask_clipped = false) {
        grphi::base_choice choice;
        try {
            choice = grphi::parse_base(base);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(std::string("grphi::nn::weight_quantizer: ") + e.what());
        }
        if (choice.name == grphi::phi::name) return make<grphi::phi>(opts, grad_scale, mask_clipped);
        if (choice.name == grphi::two::name) return make<grphi::two>(opts, grad_scale, mask_clipped);
        if (choice.name == grphi::sqrt2::name) return make<grphi::sqrt2>(opts, grad_scale, mask_clipped);
        if (opts.base_value)
            throw std::invalid_argument("grphi::nn::weight_quantizer: base '" + std::string(base) +
                                        "' given, but the options already carry base_value");
        grphi::options with_value = opts;
        with_value.base_value = *choice.value;  // validate() names a value below 1.03 or not finite
        return make<grphi::custom>(with_value, grad_scale, mask_clipped);
    }

    // Any fake-quantizer pair (e.g. a block baseline's, grphi/baselines/fake_quantize.hpp) for STE
    // training and eval; entropy() and stored() need a log base and throw for these.
    static weight_quantizer from_function(const char* name, ad::fake_quantize_fn<float> float_fn,
                                          ad::fake_quantize_fn<double> double_fn, float grad_scale = 1.0f) {
        if (!float_fn || !double_fn) throw std::invalid_argument("grphi::nn::weight_quantizer::from_function: null function");
        weight_quantizer q;
        q.base_name_ = name;
        q.grad_scale_ = grad_scale;
        q.float_fn_ = float_fn;
        q.double_fn_ = double_fn;
        return q;
    }

    const char* base_name() const { return base_name_; }
    const grphi::options& opts() const { return opts_; }
    float grad_scale() const { return grad_scale_; }
    bool mask_clipped() const { return mask_clipped_; }

    template <class T>
    ad::fake_quantize_fn<T> function() const {
        if constexpr (std::is_same_v<T, float>)
            return float_fn_;
        else
            return double_fn_;
    }

    // out = fake_quantize<base>(w, opts): the fixed rounding used by eval() and for export.
    template <class T>
    void fake_quantize(const ad::matrix<T>& w, ad::matrix<T>& out) const {
        function<T>()(w, opts_, out, nullptr);
    }

    // Entropy estimate of quantize<base>(w, opts): bits per weight including signs and metadata.
    grphi::entropy_report entropy(const ad::matrix<float>& w) const {
        if (!entropy_fn_) throw std::logic_error(std::string("grphi::nn::weight_quantizer: ") + base_name_ + " has no log-base entropy");
        return entropy_fn_(w, opts_);
    }

    // quantize<base>(w, opts) as a named tensor for the .grphi container (grphi::serialize / save).
    grphi::stored_tensor stored(std::string name, const ad::matrix<float>& w) const {
        if (!store_fn_) throw std::logic_error(std::string("grphi::nn::weight_quantizer: ") + base_name_ + " cannot be stored as a log tensor");
        return store_fn_(std::move(name), w, opts_);
    }

    template <class T>
    ad::var apply(ad::tape<T>& t, ad::var w) const {
        return ad::quantize_ste(t, w, function<T>(), opts_, ad::ste_options<T>{static_cast<T>(grad_scale_), mask_clipped_});
    }

private:
    template <class Base>
    static grphi::entropy_report entropy_of(const ad::matrix<float>& w, const grphi::options& opts) {
        return grphi::entropy(grphi::quantize<Base>(w, opts));
    }

    template <class Base>
    static grphi::stored_tensor store_as(std::string name, const ad::matrix<float>& w, const grphi::options& opts) {
        return grphi::named(std::move(name), grphi::quantize<Base>(w, opts));
    }

    weight_quantizer() = default;
    const char* base_name_ = "";
    grphi::options opts_;
    float grad_scale_ = 1.0f;
    bool mask_clipped_ = false;
    ad::fake_quantize_fn<float> float_fn_ = nullptr;
    ad::fake_quantize_fn<double> double_fn_ = nullptr;
    grphi::entropy_report (*entropy_fn_)(const ad::matrix<float>&, const grphi::options&) = nullptr;
    grphi::stored_tensor (*store_fn_)(std::string, const ad::matrix<float>&, const grphi::options&) = nullptr;
};

namespace detail {
// PyTorch's default init: kaiming_uniform(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
// and the bias uses the same bound. A fixed-seed mt19937_64 with our own mapping to [0, 1) keeps
// the numbers identical across standard libraries (std distributions are implementation-defined).
template <class T>
void uniform_fill(ad::matrix<T>& m, double bound, std::mt19937_64& gen) {
    for (Eigen::Index i = 0; i < m.size(); ++i) {
        const double unit = static_cast<double>(gen() >> 11) * 0x1.0p-53;
        m.data()[i] = static_cast<T>(-bound + 2 * bound * unit);
    }
}

inline void check_layer_dims(long a, long b, const char* what) {
    if (a <= 0 || b <= 0) throw std::invalid_argument(std::string("grphi::nn::") + what + ": dimensions must be positive");
}

// A layer's codes: its quantizer's stored tensor (the exponents, never floats) as 4- or 8-bit codes.
template <class T>
any_code_matrix<T> codes_of(const ad::matrix<T>& w, const std::optional<weight_quantizer>& quantizer, int code_bits,
                            const char* layer) {
    static_assert(std::is_same_v<T, float>, "grphi::nn: codes are built from the float quantizer");
    if (!quantizer)
        throw std::invalid_argument(std::string("grphi::nn::") + layer + "::use_codes: the layer has no quantizer");
    return code_matrix_from<T>(quantizer->stored("weight", w), code_bits);
}

// The layer's weight as it enters the forward pass, per mode and quantizer.
template <class T>
ad::var weight_var(ad::tape<T>& t, ad::parameter<T>& weight, const std::optional<weight_quantizer>& quantizer,
                   bool training, ad::matrix<T>& eval_cache) {
    if (!quantizer) return t.param(weight);
    if (training) return quantizer->apply(t, t.param(weight));
    quantizer->fake_quantize(weight.value, eval_cache);
    return t.constant_ref(eval_cache);
}
}  // namespace detail

inline constexpr std::uint64_t default_seed = 0x67727068u;  // "grph"

namespace detail {
// What linear and conv2d share: a weight with one output channel per row (fan_in wide), an optional
// bias, the quantizer and codes, the train/eval switch, and PyTorch's default initialisation.
template <class T>
class weighted_layer {
public:
    ad::parameter<T> weight;
    ad::parameter<T> bias;
    std::optional<weight_quantizer> quantizer;
    // eval() runs from these codes when set (use_codes): the packed kernels instead of fake_quantize.
    std::optional<any_code_matrix<T>> codes;

    void train(bool on = true) { training_ = on; }
    void eval() { training_ = false; }
    bool training() const { return training_; }
    bool has_bias() const { return has_bias_; }

    // The weights the forward pass multiplies by: latent, or fake-quantized if a quantizer is set.
    ad::matrix<T> effective_weight() const {
        if (!quantizer) return weight.value;
        ad::matrix<T> out;
        quantizer->fake_quantize(weight.value, out);
        return out;
    }

    // Codes of the quantized weight (4 or 8 bits; throws std::invalid_argument when it does not fit).
    void use_codes(int code_bits = 4) { codes = codes_of(weight.value, quantizer, code_bits, layer_); }

    std::vector<ad::parameter<T>*> parameters() {
        std::vector<ad::parameter<T>*> out{&weight};
        if (has_bias_) out.push_back(&bias);
        return out;
    }

protected:
    weighted_layer(int outputs, int fan_in, bool bias, std::uint64_t seed, const char* layer) : has_bias_(bias), layer_(layer) {
        std::mt19937_64 gen(seed);
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
        weight.value.resize(outputs, fan_in);
        uniform_fill(weight.value, bound, gen);
        if (has_bias_) {
            this->bias.value.resize(1, outputs);
            uniform_fill(this->bias.value, bound, gen);
        }
    }

    // The weight entering the forward pass; eval() rounds into a buffer reused across calls.
    ad::var weight_var(ad::tape<T>& t) { return detail::weight_var(t, weight, quantizer, training_, eval_weight_); }

    bool has_bias_;
    bool training_ = true;

private:
    const char* layer_;
    ad::matrix<T> eval_weight_;
};
}  // namespace detail

// y = x W^T (+ b), W stored out x in.
template <class T>
class basic_linear : public detail::weighted_layer<T> {
    using layer = detail::weighted_layer<T>;

public:
    basic_linear(int in_features, int out_features, bool bias = true, std::uint64_t seed = default_seed)
        : layer((detail::check_layer_dims(in_features, out_features, "linear"), out_features), in_features, bias, seed, "linear"),
          in_features_(in_features), out_features_(out_features) {}

    int in_features() const { return in_features_; }
    int out_features() const { return out_features_; }

    ad::var forward(ad::tape<T>& t, ad::var x) {
        if (x.features() != in_features_)
            throw std::invalid_argument("grphi::nn::linear: input has " + std::to_string(x.features()) +
                                        " features, expected " + std::to_string(in_features_));
        if (!this->training_ && this->codes) {
            // y^T = W x^T: x's row-major rows are the columns of a column-major matrix.
            const auto& xv = t.value(x);
            const Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> columns(xv.data(), in_features_, xv.rows());
            const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> yt = grphi::gemm(*this->codes, columns);
            ad::var y = t.constant(Eigen::Map<const ad::matrix<T>>(yt.data(), xv.rows(), out_features_));
            if (this->has_bias_) y = ad::add_bias(t, y, t.param(this->bias));
            return y;
        }
        ad::var y = ad::matmul(t, ad::flatten(t, x), this->weight_var(t));
        if (this->has_bias_) y = ad::add_bias(t, y, t.param(this->bias));
        return y;
    }

private:
    int in_features_, out_features_;
};

// Conv2d on NCHW rows; weight O x (C*k*k), one output channel per row (grphi's channel axis).
template <class T>
class basic_conv2d : public detail::weighted_layer<T> {
    using layer = detail::weighted_layer<T>;

public:
    basic_conv2d(int in_channels, int out_channels, int kernel, int stride = 1, int padding = 0, bool bias = true,
                 std::uint64_t seed = default_seed)
        : layer(out_channels, fan_in(in_channels, out_channels, kernel, stride, padding), bias, seed, "conv2d"),
          in_channels_(in_channels), out_channels_(out_channels), geometry_{kernel, kernel, stride, padding} {}

    int in_channels() const { return in_channels_; }
    int out_channels() const { return out_channels_; }
    const ad::conv_geometry& geometry() const { return geometry_; }

    ad::var forward(ad::tape<T>& t, ad::var x) {
        if (x.channels != in_channels_)
            throw std::invalid_argument("grphi::nn::conv2d: input has " + std::to_string(x.channels) +
                                        " channels, expected " + std::to_string(in_channels_));
        if (!this->training_ && this->codes) return forward_from_codes(t, x);
        ad::var y = ad::conv2d(t, x, this->weight_var(t), geometry_);
        if (this->has_bias_) y = ad::add_bias(t, y, t.param(this->bias));
        return y;
    }

private:
    // Checked before the weight is sized from it.
    static int fan_in(int in_channels, int out_channels, int kernel, int stride, int padding) {
        detail::check_layer_dims(in_channels, out_channels, "conv2d");
        if (kernel <= 0 || stride <= 0 || padding < 0)
            throw std::invalid_argument("grphi::nn::conv2d: kernel and stride must be positive, padding >= 0");
        return in_channels * kernel * kernel;
    }

    // The patch matrix times the codes, scattered back to NCHW rows.
    ad::var forward_from_codes(ad::tape<T>& t, ad::var x) {
        const ad::conv_geometry& g = geometry_;
        const int Ho = (x.height + 2 * g.padding - g.kernel_h) / g.stride + 1;
        const int Wo = (x.width + 2 * g.padding - g.kernel_w) / g.stride + 1;
        if (Ho <= 0 || Wo <= 0) throw std::invalid_argument("grphi::nn::conv2d: kernel larger than the padded input");
        ad::detail::conv_shape shape;
        shape.C = x.channels;
        shape.H = x.height;
        shape.W = x.width;
        shape.Ho = Ho;
        shape.Wo = Wo;
        shape.g = g;
        ad::matrix<T> patches;
        ad::detail::im2col(t.value(x), shape, patches);
        const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> columns = patches;
        const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> y = grphi::gemm(*this->codes, columns);
        const Eigen::Index N = t.value(x).rows(), positions = static_cast<Eigen::Index>(Ho) * Wo;
        ad::matrix<T> out(N, out_channels_ * positions);
        for (Eigen::Index s = 0; s < N; ++s)
            for (Eigen::Index o = 0; o < out_channels_; ++o)
                for (Eigen::Index p = 0; p < positions; ++p) out(s, o * positions + p) = y(o, s * positions + p);
        ad::var result = t.constant(out, out_channels_, Ho, Wo);
        if (this->has_bias_) result = ad::add_bias(t, result, t.param(this->bias));
        return result;
    }

    int in_channels_, out_channels_;
    ad::conv_geometry geometry_;
};

using linear = basic_linear<float>;
using conv2d = basic_conv2d<float>;

// Number of rows whose largest logit sits at the label's column (first maximum wins).
template <class T, class Labels>
long count_correct(const ad::matrix<T>& logits, const Labels& labels) {
    long correct = 0;
    for (Eigen::Index r = 0; r < logits.rows(); ++r) {
        Eigen::Index best = 0;
        logits.row(r).maxCoeff(&best);
        if (static_cast<long long>(best) == static_cast<long long>(labels[static_cast<std::size_t>(r)])) ++correct;
    }
    return correct;
}

}  // namespace grphi::nn
