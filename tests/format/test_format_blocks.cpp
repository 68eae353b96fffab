// Block-scaled tensors (options::block_size > 0) in format 2 (format/layout.hpp option tags 19/21/22,
// format/section_codec.hpp "block scales" of each row part): exact round trips for float and double,
// every block_format and search, block sizes 16/32/64 and a short last block (784 = 24 x 32 + 16),
// zeros and all-zero blocks, many parts, identical files for one and two threads, every single-byte
// corruption refused (or, behind the checksums, loaded into something the writer accepts again), and
// forged block fields refused by name.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <grphi/format/container.hpp>
#include <grphi/format/file_reader.hpp>
#include <grphi/format/file_writer.hpp>
#include <grphi/io/half.hpp>
#include <grphi/core/quantize.hpp>

namespace {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Gaussian weights with 10 % exact zeros, row 1 all zero, and the second block of row 2 all zero.
template <class T>
matrix<T> weights(Eigen::Index rows, Eigen::Index cols, unsigned seed, Eigen::Index zero_block = 32) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> g(0.0, 0.05);
    std::bernoulli_distribution zero(0.1);
    matrix<T> W(rows, cols);
    for (Eigen::Index i = 0; i < W.size(); ++i) W.data()[i] = zero(rng) ? T(0) : static_cast<T>(g(rng));
    if (rows > 1) W.row(1).setZero();
    if (rows > 2)
        for (Eigen::Index c = zero_block; c < std::min(cols, 2 * zero_block); ++c) W(2, c) = T(0);
    if (rows > 3 && cols > 0) W(3, 0) = T(3);  // one large weight: its block's top sits far above the others'
    return W;
}

template <class T>
bool same_bits(const matrix<T>& a, const matrix<T>& b) {
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(T) * static_cast<std::size_t>(a.size())) == 0);
}

grphi::writer_options parts_of(std::uint64_t weights) {
    grphi::writer_options o;
    o.part_weights = weights;
    o.durable = false;
    return o;
}

grphi::options blocked(int block, grphi::block_scale format, grphi::scale_search search, bool fit = false) {
    grphi::options o;
    o.levels = 8;
    o.block_size = block;
    o.block_format = format;
    o.search = search;
    o.fit_scale = fit;
    return o;
}

const char* format_name(grphi::block_scale f) {
    return f == grphi::block_scale::exponent ? "exponent" : f == grphi::block_scale::fp16 ? "fp16" : "e4m3";
}

template <class T, class B>
void check_same_packed(const grphi::packed<T, B>& a, const grphi::packed<T, B>& b) {
    CHECK(a.rows == b.rows);
    CHECK(a.cols == b.cols);
    CHECK(a.signs == b.signs);
    CHECK(a.exponents == b.exponents);
    CHECK(a.window_lo == b.window_lo);
    CHECK(a.window_hi == b.window_hi);
    CHECK(a.scale_steps == b.scale_steps);
    CHECK(a.block_top == b.block_top);
    CHECK(a.block_steps == b.block_steps);
    CHECK(a.block_scales == b.block_scales);
    CHECK(a.opts.block_size == b.opts.block_size);
    CHECK(a.opts.block_format == b.opts.block_format);
    CHECK(a.opts.search == b.opts.search);
    CHECK(a.opts.fit_scale == b.opts.fit_scale);
    CHECK(a.opts.levels == b.opts.levels);
    CHECK(a.opts.per_channel == b.opts.per_channel);
}

std::string open_error(const std::vector<std::uint8_t>& bytes, bool checksums = true) {
    try {
        grphi::load_options o;
        o.verify_checksums = checksums;
        const auto tensors = grphi::deserialize(bytes, "forged.grphi", o);
        for (const auto& t : tensors)
            if (t.holds<float, grphi::phi>()) t.as<float, grphi::phi>();
    } catch (const grphi::format_error& e) {
        return e.what();
    }
    return "no error";
}

// Rewrites section `part` of tensor 0 with edit(bytes) (same size), with valid section, index and footer
// checksums, so the edit reaches the section parser.
template <class Edit>
std::vector<std::uint8_t> edit_section(const std::vector<std::uint8_t>& file, std::size_t part, Edit&& edit) {
    const grphi::file_reader in(file.data(), file.size());
    std::vector<grphi::tensor_info> tensors = in.tensors();
    grphi::section_info& s = tensors[0].sections[part];
    std::vector<std::uint8_t> out = file;
    std::uint8_t* bytes = out.data() + s.offset;
    edit(bytes, static_cast<std::size_t>(s.size));
    s.crc = grphi::detail::crc32(bytes, static_cast<std::size_t>(s.size));
    const std::uint64_t offset = grphi::detail::load_u64(file.data() + file.size() - 32);
    out.resize(static_cast<std::size_t>(offset));
    const std::vector<std::uint8_t> index = grphi::format::detail::write_index(tensors, in.metadata());
    out.insert(out.end(), index.begin(), index.end());
    std::vector<std::uint8_t> footer;
    grphi::format::detail::write_footer(offset, index, footer);
    out.insert(out.end(), footer.begin(), footer.end());
    return out;
}

// The same for the index: edit(tensor_info&) on tensor 0.
template <class Edit>
std::vector<std::uint8_t> edit_record(const std::vector<std::uint8_t>& file, Edit&& edit) {
    const grphi::file_reader in(file.data(), file.size());
    std::vector<grphi::tensor_info> tensors = in.tensors();
    edit(tensors[0]);
    const std::uint64_t offset = grphi::detail::load_u64(file.data() + file.size() - 32);
    std::vector<std::uint8_t> out(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(offset));
    const std::vector<std::uint8_t> index = grphi::format::detail::write_index(tensors, in.metadata());
    out.insert(out.end(), index.begin(), index.end());
    std::vector<std::uint8_t> footer;
    grphi::format::detail::write_footer(offset, index, footer);
    out.insert(out.end(), footer.begin(), footer.end());
    return out;
}

template <class T, class B>
struct combo {
    using scalar = T;
    using base = B;
};

}  // namespace

TEST_CASE_TEMPLATE("format blocks: every block format, search and size round-trips bit for bit through several parts", C,
                   combo<float, grphi::phi>, combo<double, grphi::phi>, combo<float, grphi::two>, combo<double, grphi::custom>) {
    using T = typename C::scalar;
    using B = typename C::base;
    const matrix<T> W = weights<T>(9, 784, 11);
    struct variant {
        grphi::block_scale format;
        bool fit;
    };
    for (const variant v : {variant{grphi::block_scale::exponent, false}, variant{grphi::block_scale::exponent, true},
                            variant{grphi::block_scale::fp16, false}, variant{grphi::block_scale::e4m3, false}})
        for (const auto search : {grphi::scale_search::absmax, grphi::scale_search::mse})
            for (const int block : {16, 32, 64})
                for (const bool per_channel : {true, false}) {
                    CAPTURE(format_name(v.format));
                    CAPTURE(v.fit);
                    CAPTURE(search == grphi::scale_search::mse);
                    CAPTURE(block);
                    CAPTURE(per_channel);
                    grphi::options o = blocked(block, v.format, search, v.fit);
                    o.per_channel = per_channel;
                    if constexpr (grphi::is_custom_base_v<B>) o.base_value = 1.41;
                    const auto p = grphi::quantize<B>(W, o);
                    REQUIRE(p.scale_blocks_per_row() == (784 + block - 1) / block);  // 784 / 32: 24 full blocks and one of 16

                    std::vector<std::uint8_t> bytes;
                    grphi::file_writer out(bytes, {}, parts_of(2 * 784));  // 2 rows per part: 5 parts
                    out.add("w", p);
                    out.finish();
                    const grphi::file_reader in(bytes.data(), bytes.size());
                    in.verify();
                    REQUIRE(in.at("w").sections.size() == 5);
                    const grphi::options& stored = in.at("w").opts;
                    CHECK(stored.block_size == block);
                    CHECK(stored.block_format == v.format);
                    CHECK(stored.search == search);
                    CHECK(!stored.importance);

                    check_same_packed(in.read<T, B>("w"), p);
                    const matrix<T> expected = grphi::fake_quantize<B>(W, o);
                    matrix<T> got;
                    in.dequantize("w", got);  // base and scalar from the file, parts in parallel
                    CHECK(same_bits(got, expected));
                    CHECK(same_bits(matrix<T>(grphi::dequantize(in.read<T, B>("w"))), expected));
                    // One part alone, and a row range across parts.
                    const auto part = in.read_part<T, B>("w", 2);  // rows 4, 5
                    CHECK(part.rows == 2);
                    CHECK(same_bits(matrix<T>(grphi::dequantize(part)), matrix<T>(expected.middleRows(4, 2))));
                    matrix<T> rows(5, 784);
                    in.dequantize_rows<T, B>("w", 3, 8, rows);
                    CHECK(same_bits(rows, matrix<T>(expected.middleRows(3, 5))));

                    // The container API: save/load of type-erased tensors.
                    const auto back = grphi::deserialize(grphi::serialize({grphi::named("w", p)}));
                    REQUIRE(back.size() == 1);
                    check_same_packed(back[0].template as<T, B>(), p);
                }
}

TEST_CASE_TEMPLATE("format blocks: zeros, empty and short shapes", T, float, double) {
    for (const auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3})
        for (const auto& shape : std::vector<std::pair<Eigen::Index, Eigen::Index>>{{0, 10}, {3, 0}, {1, 1}, {2, 5}, {4, 33}, {5, 64}})
            for (const bool all_zero : {false, true}) {
                CAPTURE(format_name(format));
                CAPTURE(shape.first);
                CAPTURE(shape.second);
                CAPTURE(all_zero);
                matrix<T> W = weights<T>(shape.first, shape.second, 5, 16);
                if (all_zero) W.setZero();
                const grphi::options o = blocked(32, format, grphi::scale_search::absmax);
                const auto p = grphi::quantize<grphi::phi>(W, o);
                std::vector<std::uint8_t> bytes;
                grphi::file_writer out(bytes, {}, parts_of(40));
                out.add("w", p);
                out.finish();
                const grphi::file_reader in(bytes.data(), bytes.size());
                in.verify();
                check_same_packed(in.read<T, grphi::phi>("w"), p);
                matrix<T> got;
                in.dequantize("w", got);
                CHECK(same_bits(got, grphi::fake_quantize<grphi::phi>(W, o)));
            }
}

TEST_CASE("format blocks: the block state is compact (tops as depths below the channel top, rANS-coded)") {
    const matrix<float> W = weights<float>(64, 784, 3);
    const grphi::options exponent = blocked(32, grphi::block_scale::exponent, grphi::scale_search::absmax);
    const grphi::options plain = [] {
        grphi::options o;
        o.levels = 8;
        return o;
    }();
    const double per_channel_bits = grphi::coded_bits_per_weight(grphi::quantize<grphi::phi>(W, plain));
    const double block_bits = grphi::coded_bits_per_weight(grphi::quantize<grphi::phi>(W, exponent));
    const double fp16_bits =
        grphi::coded_bits_per_weight(grphi::quantize<grphi::phi>(W, blocked(32, grphi::block_scale::fp16, grphi::scale_search::absmax)));
    const double e4m3_bits =
        grphi::coded_bits_per_weight(grphi::quantize<grphi::phi>(W, blocked(32, grphi::block_scale::e4m3, grphi::scale_search::absmax)));
    MESSAGE("coded bits/weight, levels 8, 64 x 784 Gaussian: per channel " << per_channel_bits << ", blocks of 32 with exponent scales "
                                                                         << block_bits << ", fp16 " << fp16_bits << ", e4m3 " << e4m3_bits);
    // A block's exponents are coded below its own top: a block costs its top (a few bits), not a wider window.
    CHECK(block_bits < per_channel_bits + 0.25);
    CHECK(fp16_bits < per_channel_bits + 16.0 / 32 + 0.1);
    CHECK(e4m3_bits < per_channel_bits + 8.0 / 32 + 0.1);
}

TEST_CASE("format blocks: one and two threads write identical files") {
    const matrix<double> W = weights<double>(40, 300, 9);
    for (const auto format : {grphi::block_scale::exponent, grphi::block_scale::fp16, grphi::block_scale::e4m3}) {
        const grphi::options o = blocked(32, format, grphi::scale_search::mse, format == grphi::block_scale::exponent);
        const auto p = grphi::quantize<grphi::sqrt2>(W, o);
        auto write = [&](int threads) {
#if defined(_OPENMP)
            omp_set_num_threads(threads);
#endif
            (void)threads;
            std::vector<std::uint8_t> bytes;
            grphi::file_writer out(bytes, {}, parts_of(1000));
            out.add("w", p);
            out.finish();
            return bytes;
        };
        const auto one = write(1), two = write(2);
#if defined(_OPENMP)
        omp_set_num_threads(2);
#endif
        CHECK(one == two);
        const grphi::file_reader in(two.data(), two.size());
        CHECK(in.at("w").sections.size() == 14);  // 3 rows per part
        matrix<double> out;
        in.dequantize("w", out);
        CHECK(same_bits(out, grphi::fake_quantize<grphi::sqrt2>(W, o)));
    }
}

TEST_CASE("format blocks: every single-byte corruption is refused, or behind the checksums loads into what saves again") {
    // Exponent scales with steps, fp16 and e4m3 codes, per tensor and per channel, two parts each.
    grphi::options fitted = blocked(16, grphi::block_scale::exponent, grphi::scale_search::absmax, true);
    grphi::options half = blocked(16, grphi::block_scale::fp16, grphi::scale_search::mse);
    half.per_channel = false;
    const grphi::options e4m3 = blocked(16, grphi::block_scale::e4m3, grphi::scale_search::absmax);
    const auto a = grphi::quantize<grphi::phi>(weights<float>(4, 40, 1, 16), fitted);
    const auto b = grphi::quantize<grphi::phi>(weights<float>(4, 20, 2, 16), half);
    const auto c = grphi::quantize<grphi::phi>(weights<float>(4, 24, 3, 16), e4m3);
    std::vector<std::uint8_t> file;
    grphi::file_writer out(file, {}, parts_of(80));
    out.add("a", a);
    out.add("b", b);
    out.add("c", c);
    out.finish();
    REQUIRE(grphi::deserialize(file).size() == 3);
    MESSAGE("small block-scaled file: " << file.size() << " bytes");
    for (std::size_t length = 0; length < file.size(); ++length)
        CHECK_MESSAGE(open_error(std::vector<std::uint8_t>(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(length))) != "no error",
                      "truncated to ", length);
    std::size_t accepted = 0;
    for (std::size_t at = 0; at < file.size(); ++at)
        for (unsigned flip = 1; flip < 256; ++flip) {
            auto bad = file;
            bad[at] = static_cast<std::uint8_t>(bad[at] ^ flip);
            if (open_error(bad) == "no error") FAIL_CHECK("corruption at byte " << at << " xor " << flip << " went unnoticed");
            // Behind the checksums (every bit flip and the inverted byte, to keep the test quick under the
            // sanitizers): refused with format_error, or loaded into tensors the writer takes back.
            if ((flip & (flip - 1)) != 0 && flip != 255) continue;
            grphi::load_options unchecked;
            unchecked.verify_checksums = false;
            std::vector<grphi::stored_tensor> loaded;
            try {
                loaded = grphi::deserialize(bad, "corrupt", unchecked);
            } catch (const grphi::format_error&) {
                continue;
            }
            ++accepted;
            std::vector<std::uint8_t> again;
            try {
                again = grphi::serialize(loaded);
            } catch (const std::invalid_argument& e) {
                FAIL_CHECK("byte " << at << " xor " << flip << ": loads, but the writer refuses it: " << e.what());
                continue;
            }
            const auto reloaded = grphi::deserialize(again);
            REQUIRE(reloaded.size() == loaded.size());
            for (std::size_t i = 0; i < loaded.size(); ++i) {
                CHECK(reloaded[i].block_top == loaded[i].block_top);
                CHECK(reloaded[i].block_steps == loaded[i].block_steps);
                CHECK(reloaded[i].block_scales == loaded[i].block_scales);
                CHECK(reloaded[i].exponents == loaded[i].exponents);
                CHECK(reloaded[i].signs == loaded[i].signs);
                if (!loaded[i].holds<float, grphi::phi>()) continue;
                try {
                    grphi::dequantize(loaded[i].as<float, grphi::phi>());  // a clean error or values, never a crash
                } catch (const grphi::format_error&) {
                }
            }
        }
    MESSAGE(accepted << " of " << 9 * file.size() << " bit flips and inversions parse without checksums");
}

TEST_CASE("format blocks: forged block fields with valid checksums are refused by name") {
    const matrix<float> W = weights<float>(3, 40, 4, 16);
    auto file_for = [&](const grphi::options& o) {
        std::vector<std::uint8_t> bytes;
        grphi::file_writer out(bytes);
        out.add("w", grphi::quantize<grphi::phi>(W, o));
        out.finish();
        REQUIRE(open_error(bytes) == "no error");
        return bytes;
    };
    auto contains = [](const std::string& error, const std::string& what) {
        CAPTURE(error);
        CHECK(error.find(what) != std::string::npos);
        CHECK(error.find("tensor 'w'") != std::string::npos);
    };
    // Sections of 3 rows, per channel: 15 bytes of channel state, then the block state (3 blocks per row).
    const std::size_t state = 15;
    const auto e4m3 = file_for(blocked(16, grphi::block_scale::e4m3, grphi::scale_search::absmax));
    contains(open_error(edit_section(e4m3, 0, [&](std::uint8_t* p, std::size_t) { p[state + 4] = 0x7F; })), "scale code 127");  // NaN
    contains(open_error(edit_section(e4m3, 0, [&](std::uint8_t* p, std::size_t) { p[state] = 0x00; })), "scale code 0");       // zero
    contains(open_error(edit_section(e4m3, 0, [&](std::uint8_t* p, std::size_t) { p[state] = 0xB8; })), "scale code 184");    // -1
    contains(open_error(edit_section(e4m3, 0, [&](std::uint8_t* p, std::size_t) { p[state] = 0x40; })), "scale code 64");     // 2
    const auto fp16 = file_for(blocked(16, grphi::block_scale::fp16, grphi::scale_search::absmax));
    auto code16 = [&](std::uint16_t code) {
        return open_error(edit_section(fp16, 0, [&](std::uint8_t* p, std::size_t) {
            p[state + 2] = static_cast<std::uint8_t>(code);
            p[state + 3] = static_cast<std::uint8_t>(code >> 8);
        }));
    };
    contains(code16(0x7C00), "scale code 31744");  // +inf
    contains(code16(0x7E00), "fp16");              // NaN
    contains(code16(0x8000), "scale code 32768");  // -0
    contains(code16(0x3C01), "(0, 1]");            // just above 1
    CHECK(code16(0x0001) == "no error");            // the smallest subnormal is a valid scale
    CHECK(code16(0x3C00) == "no error");            // 1

    const auto exponent = file_for(blocked(16, grphi::block_scale::exponent, grphi::scale_search::absmax));
    contains(open_error(edit_section(exponent, 0, [&](std::uint8_t* p, std::size_t) { p[state] = 7; })), "block top mode 7");
    // The steps' mode byte is the last byte before the sign stream: find it as the byte after the top stream.
    {
        const grphi::file_reader in(exponent.data(), exponent.size());
        const auto& s = in.at("w").sections[0];
        grphi::detail::byte_reader r(exponent.data() + s.offset + state + 1, static_cast<std::size_t>(s.size) - state - 1);
        grphi::rans::decode(r);  // the tops
        const auto step_at = static_cast<std::size_t>(r.position() - (exponent.data() + s.offset));
        CHECK(exponent[static_cast<std::size_t>(s.offset) + step_at] == 2);  // all steps zero
        contains(open_error(edit_section(exponent, 0, [&](std::uint8_t* p, std::size_t) { p[step_at] = 9; })), "block step mode 9");
    }
    // A top below its channel window: widen the depth by making window_hi of channel 0 smaller than a top.
    contains(open_error(edit_section(exponent, 0, [&](std::uint8_t* p, std::size_t) {
                 const auto lo = static_cast<std::int16_t>(grphi::detail::load_u16(p));
                 p[2] = static_cast<std::uint8_t>(lo);  // window_hi = window_lo: every top deeper than 0 falls below it
                 p[3] = static_cast<std::uint8_t>(static_cast<std::uint16_t>(lo) >> 8);
             })),
             "outside its channel window");

    // Options: block_size and block_format payloads out of range, block_format without block_size.
    contains(open_error(edit_record(exponent, [](grphi::tensor_info& t) { t.opts.block_size = 1 << 25; })), "block_size=33554432");
    contains(open_error(edit_record(e4m3, [](grphi::tensor_info& t) { t.opts.block_size = 0; })), "block_format");
    CHECK(open_error(edit_record(fp16, [](grphi::tensor_info& t) { t.opts.block_size = 8; })) != "no error");  // sections no longer fit
}

TEST_CASE("format blocks: the option tags are written byte for byte as docs/format.md lists them") {
    grphi::options o;
    o.levels = 8;
    o.block_size = 32;
    o.block_format = grphi::block_scale::e4m3;
    o.search = grphi::scale_search::mse;
    o.importance = std::make_shared<const std::vector<double>>(std::vector<double>{1, 2});  // not stored
    std::vector<std::uint8_t> bytes;
    grphi::format::detail::write_options(o, bytes);
    // 4 fields: levels (tag 11) = 8; block_size (19) = 32; block_format (21) = 2; search (22, optional) = 1.
    CHECK(bytes == std::vector<std::uint8_t>{4, 11, 1, 8, 19, 1, 32, 21, 1, 2, 22, 1, 1});
    grphi::detail::byte_reader r(bytes.data(), bytes.size());
    const grphi::options back = grphi::format::detail::read_options(r);
    CHECK(back.block_size == 32);
    CHECK(back.block_format == grphi::block_scale::e4m3);
    CHECK(back.search == grphi::scale_search::mse);
    CHECK(!back.importance);
    o.block_format = grphi::block_scale::fp16;
    o.search = grphi::scale_search::absmax;
    bytes.clear();
    grphi::format::detail::write_options(o, bytes);
    CHECK(bytes == std::vector<std::uint8_t>{3, 11, 1, 8, 19, 1, 32, 21, 1, 1});
}
