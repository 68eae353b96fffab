// A small strict JSON parser (RFC 8259) for file headers: bounded nesting, no duplicate keys, UTF-8 checked.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace grphi::detail {

struct json_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct json_value {
    enum class kind { null, boolean, number, string, array, object };
    kind type = kind::null;
    bool boolean = false;
    std::string text;                                        // a string's contents, or a number's literal
    std::vector<json_value> items;                           // array elements
    std::vector<std::pair<std::string, json_value>> members;  // object members, in file order

    bool is_object() const { return type == kind::object; }
    bool is_array() const { return type == kind::array; }
    bool is_string() const { return type == kind::string; }
    bool is_number() const { return type == kind::number; }

    // A non-negative integer literal that fits uint64 (no sign, fraction or exponent), else nothing.
    std::optional<std::uint64_t> as_uint64() const {
        if (type != kind::number || text.empty()) return std::nullopt;
        std::uint64_t value = 0;
        for (const char c : text) {
            if (c < '0' || c > '9') return std::nullopt;
            const auto digit = static_cast<std::uint64_t>(c - '0');
            if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
            value = value * 10 + digit;
        }
        return value;
    }
    // Defined below the class: clang 14 in C++20 needs json_value complete to use the member pairs.
    const json_value* find(std::string_view key) const;
    json_value() = default;
    json_value(const json_value&);
    json_value(json_value&&) noexcept;
    json_value& operator=(const json_value&);
    json_value& operator=(json_value&&) noexcept;
    ~json_value();
};

inline json_value::json_value(const json_value&) = default;
inline json_value::json_value(json_value&&) noexcept = default;
inline json_value& json_value::operator=(const json_value&) = default;
inline json_value& json_value::operator=(json_value&&) noexcept = default;
inline json_value::~json_value() = default;

inline const json_value* json_value::find(std::string_view key) const {
    for (const auto& member : members)
        if (member.first == key) return &member.second;
    return nullptr;
}

inline const char* json_kind_name(json_value::kind k) {
    switch (k) {
        case json_value::kind::null: return "null";
        case json_value::kind::boolean: return "a boolean";
        case json_value::kind::number: return "a number";
        case json_value::kind::string: return "a string";
        case json_value::kind::array: return "an array";
        case json_value::kind::object: return "an object";
    }
    return "?";
}

class json_parser {
public:
    static constexpr int max_depth = 64;  // headers nest 3 deep; this bounds the recursion

    explicit json_parser(std::string_view input) : in_(input) {}

    // The whole input must be one value, optionally surrounded by whitespace.
    json_value parse_document() {
        skip_whitespace();
        json_value value = parse_value(0);
        skip_whitespace();
        if (pos_ != in_.size()) fail("unexpected data after the JSON value");
        return value;
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw json_error("JSON error at byte " + std::to_string(pos_) + ": " + what);
    }
    bool at_end() const { return pos_ >= in_.size(); }
    char peek() const { return at_end() ? '\0' : in_[pos_]; }
    void expect(char c) {
        if (at_end() || in_[pos_] != c) fail(std::string("expected '") + c + "'");
        ++pos_;
    }
    void skip_whitespace() {
        while (!at_end() && (in_[pos_] == ' ' || in_[pos_] == '\t' || in_[pos_] == '\n' || in_[pos_] == '\r')) ++pos_;
    }

    json_value parse_value(int depth) {
        if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
        if (at_end()) fail("unexpected end of input");
        json_value value;
        const char c = peek();
        if (c == '{') {
            value.type = json_value::kind::object;
            parse_object(value, depth);
        } else if (c == '[') {
            value.type = json_value::kind::array;
            parse_array(value, depth);
        } else if (c == '"') {
            value.type = json_value::kind::string;
            value.text = parse_string();
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            value.type = json_value::kind::number;
            value.text = parse_number();
        } else if (in_.substr(pos_, 4) == "true") {
            value.type = json_value::kind::boolean;
            value.boolean = true;
            pos_ += 4;
        } else if (in_.substr(pos_, 5) == "false") {
            value.type = json_value::kind::boolean;
            pos_ += 5;
        } else if (in_.substr(pos_, 4) == "null") {
            pos_ += 4;
        } else {
            fail("unexpected character");
        }
        return value;
    }

    void parse_object(json_value& object, int depth) {
        expect('{');
        skip_whitespace();
        if (peek() == '}') {
            ++pos_;
            return;
        }
        for (;;) {
            skip_whitespace();
            if (peek() != '"') fail("expected a string key");
            std::string key = parse_string();
            if (object.find(key)) fail("duplicate key \"" + key + "\"");
            skip_whitespace();
            expect(':');
            skip_whitespace();
            object.members.emplace_back(std::move(key), parse_value(depth + 1));
            skip_whitespace();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            expect('}');
            return;
        }
    }

    void parse_array(json_value& array, int depth) {
        expect('[');
        skip_whitespace();
        if (peek() == ']') {
            ++pos_;
            return;
        }
        for (;;) {
            skip_whitespace();
            array.items.push_back(parse_value(depth + 1));
            skip_whitespace();
            if (peek() == ',') {
                ++pos_;
                continue;
            }
            expect(']');
            return;
        }
    }

    std::string parse_number() {
        const std::size_t start = pos_;
        auto digits = [&] {
            const std::size_t first = pos_;
            while (!at_end() && in_[pos_] >= '0' && in_[pos_] <= '9') ++pos_;
            return pos_ - first;
        };
        if (peek() == '-') ++pos_;
        if (peek() == '0') {
            ++pos_;
            if (peek() >= '0' && peek() <= '9') fail("leading zero in a number");
        } else if (digits() == 0) {
            fail("expected a digit");
        }
        if (peek() == '.') {
            ++pos_;
            if (digits() == 0) fail("expected a digit after '.'");
        }
        if (peek() == 'e' || peek() == 'E') {
            ++pos_;
            if (peek() == '+' || peek() == '-') ++pos_;
            if (digits() == 0) fail("expected a digit in the exponent");
        }
        return std::string(in_.substr(start, pos_ - start));
    }

    unsigned hex4() {
        if (in_.size() - pos_ < 4) fail("truncated \\u escape");
        unsigned value = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = in_[pos_++];
            value <<= 4;
            if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return value;
    }

    static void append_utf8(std::string& out, unsigned code) {
        if (code < 0x80) {
            out += static_cast<char>(code);
        } else if (code < 0x800) {
            out += static_cast<char>(0xc0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3f));
        } else if (code < 0x10000) {
            out += static_cast<char>(0xe0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (code & 0x3f));
        } else {
            out += static_cast<char>(0xf0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (code & 0x3f));
        }
    }

    // One well-formed UTF-8 sequence (no overlongs, no surrogates, <= U+10FFFF), copied through.
    void copy_utf8(std::string& out) {
        const auto lead = static_cast<unsigned char>(in_[pos_]);
        std::size_t length = 0;
        unsigned code = 0;
        unsigned minimum = 0;
        if (lead >= 0xc2 && lead <= 0xdf) { length = 2; code = lead & 0x1fu; minimum = 0x80; }
        else if (lead >= 0xe0 && lead <= 0xef) { length = 3; code = lead & 0x0fu; minimum = 0x800; }
        else if (lead >= 0xf0 && lead <= 0xf4) { length = 4; code = lead & 0x07u; minimum = 0x10000; }
        else fail("invalid UTF-8");
        if (in_.size() - pos_ < length) fail("truncated UTF-8 sequence");
        for (std::size_t i = 1; i < length; ++i) {
            const auto next = static_cast<unsigned char>(in_[pos_ + i]);
            if ((next & 0xc0u) != 0x80u) fail("invalid UTF-8");
            code = (code << 6) | (next & 0x3fu);
        }
        if (code < minimum || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) fail("invalid UTF-8");
        out.append(in_.substr(pos_, length));
        pos_ += length;
    }

    std::string parse_string() {
        expect('"');
        std::string out;
        for (;;) {
            if (at_end()) fail("unterminated string");
            const auto c = static_cast<unsigned char>(in_[pos_]);
            if (c == '"') {
                ++pos_;
                return out;
            }
            if (c < 0x20) fail("control character in a string");
            if (c >= 0x80) {
                copy_utf8(out);
                continue;
            }
            ++pos_;
            if (c != '\\') {
                out += static_cast<char>(c);
                continue;
            }
            if (at_end()) fail("unterminated escape");
            const char escape = in_[pos_++];
            switch (escape) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned code = hex4();
                    if (code >= 0xdc00 && code <= 0xdfff) fail("lone low surrogate in \\u escape");
                    if (code >= 0xd800 && code <= 0xdbff) {  // a high surrogate must pair with a low one
                        if (in_.substr(pos_, 2) != "\\u") fail("unpaired high surrogate in \\u escape");
                        pos_ += 2;
                        const unsigned low = hex4();
                        if (low < 0xdc00 || low > 0xdfff) fail("unpaired high surrogate in \\u escape");
                        code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                    }
                    append_utf8(out, code);
                    break;
                }
                default: fail("unknown escape");
            }
        }
    }

    std::string_view in_;
    std::size_t pos_ = 0;
};

inline json_value parse_json(std::string_view input) { return json_parser(input).parse_document(); }

// JSON string literal (with quotes) for writing headers: escapes quotes, backslashes and control characters.
inline std::string json_quote(std::string_view text) {
    std::string out = "\"";
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else out += ch;
    }
    out += '"';
    return out;
}

}  // namespace grphi::detail
