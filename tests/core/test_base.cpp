// Bases: the one text parser that the tool and nn::weight_quantizer share, against the tags' own values.
#include <grphi/core/base.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

TEST_CASE("base names: the three tags by name, numbers at a named base select it") {
    for (const char* name : {"phi", "two", "sqrt2"}) {
        const grphi::base_choice b = grphi::parse_base(name);
        CHECK(b.name == name);
        CHECK(!b.value);
    }
    // Numbers within 1e-12 of a named base take its exact (irrational) value, not the rounded double.
    CHECK(grphi::parse_base("2").name == "two");
    CHECK(grphi::parse_base("2.0000000000001").name == "two");
    CHECK(grphi::parse_base("1.618033988749895").name == "phi");
    CHECK(grphi::parse_base("1.4142135623730951").name == "sqrt2");
    CHECK(grphi::parse_base("1.4142135623731").name == "sqrt2");  // 5e-14 away
}

TEST_CASE("base names: any other finite number >= 1.03 is a custom base of that exact value") {
    for (double v : {1.03, 1.5, 1.41421356, 2.000000001, 3.7, 1e300}) {
        char text[40];
        std::snprintf(text, sizeof text, "%.17g", v);
        const grphi::base_choice b = grphi::parse_base(text);
        CHECK(b.name == "custom");
        REQUIRE(b.value);
        CHECK(*b.value == v);
    }
    CHECK(*grphi::parse_base("1.6180339").value == 1.6180339);  // 1e-8 from φ: not φ
}

TEST_CASE("base names: one set of spellings; anything else names itself in the error") {
    for (const char* bad : {"", " 2", "2 ", "sqrt(2)", "Phi", "PHI", "golden", "e", "1.5x", "1.02", "1", "0",
                            "-2", "nan", "inf", "-inf", "1e999", "0x2"}) {
        CAPTURE(bad);
        bool named_in_error = false;
        try {
            (void)grphi::parse_base(bad);
        } catch (const std::invalid_argument& e) {
            named_in_error = std::string(e.what()).find(std::string("'") + bad + "'") != std::string::npos;
        }
        CHECK(named_in_error);
    }
}
