// The cluster add-on's bus encoding (cluster/cluster_wire.hpp): what a node writes, and what
// it accepts from the bus, where anyone allowed to publish can send any bytes. Builds without
// libnats; fuzz/fuzz_cluster_wire.cpp checks the same rules on generated input.
#include "chatsock.hpp"
#include "cluster/cluster_wire.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
namespace wire = chatsock::cluster_wire;

namespace {

using Fields = std::vector<std::string>;

// An event with these fields, as a node writes it (Cluster::header and publish).
std::string event(const Fields& fields) {
    std::string out(wire::version);
    for (const std::string& f : fields) wire::put(out, f);
    return out;
}

// The four fields every event starts with, then the kind's own.
Fields from_alpha(const std::string& kind, const Fields& own = {}) {
    Fields f = {"alpha", "0123abcd", "7", kind};
    f.insert(f.end(), own.begin(), own.end());
    return f;
}

// What on_event logs after "dropped " for `in`; empty when it takes the event.
std::string verdict(std::string_view in) {
    Fields fields;
    return wire::decode(in, fields);
}

std::string malformed(std::string_view in) {
    return "a malformed event of " + std::to_string(in.size()) + " bytes";
}

const std::string wrong_kind = "an event of unknown kind or size from node alpha";

// The kinds and how many fields of their own each has (the header's table, written out).
const std::map<std::string, std::size_t> fixed_kinds = {
    {"hb", 0},  {"roster-end", 0}, {"who", 0},     {"join", 1}, {"leave", 2},
    {"msg", 2}, {"action", 2},     {"private", 3}, {"nick", 2}, {"resend", 3}};

// A "msg" event of exactly `size` bytes (its text fills it; the length's digits count too).
std::string msg_of_size(std::size_t size) {
    for (std::size_t text = size; text > 0; --text) {
        std::string e = event(from_alpha("msg", {"bob", std::string(text, 'x')}));
        if (e.size() == size) return e;
    }
    return {};
}

}  // namespace

TEST_SUITE("cluster") {
    TEST_CASE("cluster_wire: put appends each field as space length colon bytes") {
        std::string out = "CS1";
        wire::put(out, "");
        CHECK(out == "CS1 0:");
        wire::put(out, "a b:c");
        CHECK(out == "CS1 0: 5:a b:c");
        out.clear();
        wire::put(out, std::string(10, 'z'));
        CHECK(out == " 10:zzzzzzzzzz");
        out.clear();
        wire::put(out, "\0\n"s);
        CHECK(out == " 2:\0\n"s);
        out.clear();
        wire::put(out, "é");  // bytes, not characters
        CHECK(out == " 2:é");
    }

    TEST_CASE("cluster_wire: split gives back exactly the fields put wrote whatever their bytes") {
        std::string every_byte;
        for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
        const Fields odd = {"",
                            " ",
                            ":",
                            " 3:abc",
                            "0",
                            "007",
                            "12",
                            "\0"s,
                            "a\0b"s,
                            "\r\n",
                            "CS1",
                            " 0:",
                            every_byte,
                            std::string(1000, ':'),
                            std::string(12345, '9')};
        Fields got;
        REQUIRE(wire::split(event(odd), got));
        CHECK(got == odd);
        for (const std::string& one : odd) {  // each alone, as the last field of an event
            got.clear();
            CHECK(wire::split(event({one}), got));
            CHECK(got == Fields{one});
        }
        got.clear();
        CHECK(wire::split("CS1", got));  // no fields at all is well formed for split
        CHECK(got.empty());

        // Random fields, half their bytes from those the encoding itself uses.
        std::mt19937 rng(20240601);
        const std::string alphabet = "0123456789 :CS\0\xff"s;
        for (int round = 0; round < 300; ++round) {
            Fields fields(rng() % 20);
            for (std::string& f : fields) {
                f.resize(rng() % 4 == 0 ? 0 : rng() % 300);
                for (char& c : f)
                    c = rng() % 2 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
            }
            CAPTURE(round);
            got.clear();
            CHECK(wire::split(event(fields), got));
            CHECK(got == fields);
        }
    }

    TEST_CASE("cluster_wire: decode accepts every kind with its own fields and gives them back") {
        const std::map<std::string, Fields> own = {
            {"hb", {}},
            {"who", {}},
            {"join", {"bob"}},
            {"leave", {"bob", "quit: bye"}},
            {"msg", {"bob", "hi there"}},
            {"action", {"bob", "waves"}},
            {"private", {"bob", "carol", "psst"}},
            {"nick", {"bob", "robert"}},
            {"resend", {"beta", "3", "9"}},
            {"roster", {"bob", "carol"}},
            {"roster-end", {}},
        };
        for (const auto& kind_fields : own) {
            const std::string& kind = kind_fields.first;  // (CAPTURE can't take a binding)
            const Fields& fields = kind_fields.second;
            CAPTURE(kind);
            Fields got = {"left over", "from before"};  // decode starts afresh
            CHECK(wire::decode(event(from_alpha(kind, fields)), got) == "");
            CHECK(got == from_alpha(kind, fields));
        }
        // The edges of the header fields: a 32-character node of every allowed character, a
        // 16-digit boot id, a long sequence number.
        const Fields edges = {"Node_of-32_chars_aZ09xxxxxxxxxxx", "0123456789abcdef",
                              "1234567890123456789", "hb"};
        REQUIRE(edges[0].size() == 32);
        CHECK(verdict(event(edges)) == "");
        // Text fields hold any bytes.
        CHECK(verdict(event(from_alpha("msg", {"bob", "a\0b 3:x\r\n"s}))) == "");
        CHECK(verdict(event(from_alpha("msg", {"bob", ""}))) == "");
    }

    TEST_CASE("cluster_wire: decode refuses a malformed event and says how many bytes it had") {
        const std::string good = event(from_alpha("msg", {"bob", "hi"}));
        REQUIRE(good == "CS1 5:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");
        REQUIRE(verdict(good) == "");
        const auto refused = [](const std::string& in) {
            CAPTURE(in);
            CHECK(verdict(in) == malformed(in));
        };
        // What a log reader sees, in full.
        CHECK(verdict("hello") == "a malformed event of 5 bytes");
        CHECK(verdict("") == "a malformed event of 0 bytes");

        // Not version CS1.
        for (const char* version : {"CS2", "CS0", "cs1", "CS", "XCS1", " CS1"})
            refused(version + good.substr(3));
        refused("CS");
        // A missing or wrong separator.
        refused("CS1" + good.substr(4));                          // "CS15:alpha ..."
        refused("CS1 5:alpha8:0123abcd 1:7 3:msg 3:bob 2:hi");    // none between fields
        refused("CS1  5:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");  // two spaces
        refused("CS1\t5:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");  // a tab
        refused("CS1 5alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");    // no colon
        refused("CS1 :alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");    // no length
        refused("CS1 +5:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");  // a sign
        refused(good + " ");                                      // a space and no field
        refused(good + " 2");                                     // a length and no colon
        refused(good + "x");                                      // a byte after the end
        // A length has one way to be written: no leading zeros.
        refused("CS1 05:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");
        refused("CS1 5:alpha 8:0123abcd 1:7 3:msg 3:bob 02:hi");
        refused(event(from_alpha("msg", {"bob"})) + " 00:");
        // A length past the end.
        refused("CS1 5:alpha 8:0123abcd 1:7 3:msg 3:bob 3:hi");
        refused("CS1 99:evil");
        // More than 7 digits, even one that would wrap around to 5 in a 64-bit (or 32-bit)
        // size_t and so read "alpha" as the first field.
        refused("CS1 18446744073709551621:alpha 8:0123abcd 1:7 3:msg 3:bob 2:hi");
        refused("CS1 12345678:");
        // Too few fields for the node, boot id, number and kind.
        refused("CS1");
        refused("CS1 4:evil");
        refused(event({"alpha", "0123abcd", "7"}));
        // Over max_event (256 KiB); exactly max_event is fine.
        const std::string largest = msg_of_size(wire::max_event);
        REQUIRE(largest.size() == wire::max_event);
        CHECK(verdict(largest) == "");
        const std::string over = msg_of_size(wire::max_event + 1);
        REQUIRE(over.size() == wire::max_event + 1);
        CHECK(verdict(over) == "a malformed event of 262145 bytes");

        // A node name that is not 1-32 of A-Z a-z 0-9 _ - (it goes into the log, and is a key).
        for (const std::string& node : {""s, std::string(33, 'a'), "al pha"s, "al.pha"s, "alpha*"s,
                                        "alpha>"s, "alpha\n"s, "alpha\0"s, "é"s}) {
            CAPTURE(node);
            refused(event({node, "0123abcd", "7", "hb"}));
        }
        // A boot id that is not 1-16 hex digits.
        for (const std::string& boot :
             {""s, "xyz"s, "0x12"s, "12 34"s, "-1"s, "0123abcd0123abcd0"s, "0123abcg"s}) {
            CAPTURE(boot);
            refused(event({"alpha", boot, "7", "hb"}));
        }
        // A sequence number that is not 1-19 decimal digits (stoull takes any 19).
        for (const std::string& seq : {""s, "1a"s, "a"s, "-1"s, "+1"s, " 1"s, "1 "s, "1.0"s, "٣"s,
                                       "99999999999999999999"s}) {
            CAPTURE(seq);
            refused(event({"alpha", "0123abcd", seq, "hb"}));
        }
    }

    TEST_CASE("cluster_wire: decode names the node of an event numbered 0") {
        for (const char* zero : {"0", "000"}) {
            CAPTURE(zero);
            CHECK(verdict(event({"alpha", "0123abcd", zero, "hb"})) ==
                  "an event numbered 0 from node alpha");
        }
        CHECK(verdict(event({"alpha", "0123abcd", "1", "hb"})) == "");
    }

    TEST_CASE("cluster_wire: decode names the node of an event of unknown kind or wrong size") {
        for (const std::string& kind : {""s, "HB"s, "Msg"s, "shout"s, "hb "s, "hb\0"s, "rosters"s,
                                        "roster-"s, "roster-End"s, "msg\n"s}) {
            CAPTURE(kind);
            CHECK(verdict(event(from_alpha(kind))) == wrong_kind);
            CHECK(verdict(event(from_alpha(kind, {"bob", "hi"}))) == wrong_kind);
        }
        // Every kind with a fixed count: one field fewer, one more, and the right count.
        for (const auto& kind_count : fixed_kinds) {
            const std::string& kind = kind_count.first;
            const std::size_t count = kind_count.second;
            CAPTURE(kind);
            const Fields right(count, "bob");
            CHECK(verdict(event(from_alpha(kind, right))) == "");
            Fields more = right;
            more.push_back("bob");
            CHECK(verdict(event(from_alpha(kind, more))) == wrong_kind);
            if (count == 0) continue;
            const Fields fewer(count - 1, "bob");
            CHECK(verdict(event(from_alpha(kind, fewer))) == wrong_kind);
        }
    }

    TEST_CASE("cluster_wire: a roster holds any number of names up to the field limit") {
        for (std::size_t names : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(77),
                                  wire::max_fields - 4}) {
            CAPTURE(names);
            const Fields sent = from_alpha("roster", Fields(names, "bob"));
            Fields got;
            CHECK(wire::decode(event(sent), got) == "");
            CHECK(got == sent);
        }
        // One field more than max_fields is malformed (a node sends its roster in chunks).
        const std::string too_many = event(from_alpha("roster", Fields(wire::max_fields - 3, "b")));
        CHECK(verdict(too_many) == malformed(too_many));
    }

    TEST_CASE("cluster_wire: is_token takes 1 to 32 of A-Z a-z 0-9 _ - and nothing else") {
        for (int b = 0; b < 256; ++b) {
            const char c = static_cast<char>(b);
            const bool allowed = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                 (c >= '0' && c <= '9') || c == '_' || c == '-';
            CAPTURE(b);
            CHECK(wire::is_token(std::string(1, c)) == allowed);
            CHECK(wire::is_token("ab" + std::string(1, c) + "cd") == allowed);
        }
        CHECK(wire::is_token(std::string(32, 'z')));
        CHECK_FALSE(wire::is_token(std::string(33, 'z')));
        CHECK_FALSE(wire::is_token(""));
    }

    TEST_CASE("cluster_wire: is_number takes 1 to 19 decimal digits or 1 to 16 hex digits") {
        CHECK(wire::is_number("0", false));
        CHECK(wire::is_number("9999999999999999999", false));         // 19 digits: fits in 64 bits
        CHECK_FALSE(wire::is_number("18446744073709551616", false));  // 2^64: 20 digits
        CHECK_FALSE(wire::is_number("", false));
        CHECK_FALSE(wire::is_number("12a", false));
        CHECK_FALSE(wire::is_number("-1", false));
        CHECK_FALSE(wire::is_number("+1", false));
        CHECK_FALSE(wire::is_number(" 1", false));
        CHECK(wire::is_number("12a", true));
        CHECK(wire::is_number("0123456789abcdef", true));
        CHECK_FALSE(wire::is_number("0123456789abcdef0", true));  // 17 digits
        CHECK_FALSE(wire::is_number("", true));
        CHECK_FALSE(wire::is_number("g", true));
        CHECK_FALSE(wire::is_number("0x1", true));
    }

    TEST_CASE("cluster_wire: name_key is the ASCII-lowercase name in hex") {
        CHECK(wire::name_key("Ab-9") == "n.61622d39");
        CHECK(wire::name_key("") == "n.");
        CHECK(wire::name_key("ALICE") == wire::name_key("alice"));
        CHECK(wire::name_key("aLiCe") == wire::name_key("alice"));
        CHECK(wire::name_key("Zz_") == "n.7a7a5f");
        // Only ASCII folds, as the core compares names: É and é are two names.
        CHECK(wire::name_key("É") != wire::name_key("é"));
        CHECK(wire::name_key("\xff\x80"s) == "n.ff80");

        // Distinct names (ignoring ASCII case) give distinct keys, of the characters bucket keys
        // allow.
        std::mt19937 rng(7);
        const std::string alphabet = "aAbB_-09 .\xc3\xa9\xc3\x89\0"s;
        std::map<std::string, std::string> owner;  // key -> the lowercase name it came from
        for (int i = 0; i < 3000; ++i) {
            std::string name(1 + rng() % 6, 'a');
            for (char& c : name) c = alphabet[rng() % alphabet.size()];
            std::string lower = name;
            for (char& c : lower)
                if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
            const std::string key = wire::name_key(name);
            CAPTURE(name);
            CHECK(key.size() == 2 + 2 * name.size());
            CHECK(key.find_first_not_of("0123456789abcdef", 2) == std::string::npos);
            const auto [it, fresh] = owner.emplace(key, lower);
            if (!fresh) CHECK(it->second == lower);
        }
        std::set<std::string> keys;
        for (const char* name : {"a", "b", "ab", "ba", "a-b", "a_b", "aa", "a0", "0a", "a1"})
            keys.insert(wire::name_key(name));
        CHECK(keys.size() == 10);
    }
}  // TEST_SUITE("cluster")
