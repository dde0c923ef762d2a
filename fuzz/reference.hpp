// Shared by the chatsock fuzz targets: a check that traps, and small reference versions of
// the framing and text rules, written independently of chatsock.hpp to compare it against.
#ifndef CHATSOCK_FUZZ_REFERENCE_HPP
#define CHATSOCK_FUZZ_REFERENCE_HPP

#include "chatsock.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

// Reports which invariant broke, then traps so libFuzzer saves the input as a crash.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      __builtin_trap();                                                                  \
    }                                                                                    \
  } while (0)

namespace fuzzref {

// ---- reference implementations ---------------------------------------------------------

// Appends code point `cp` as UTF-8 (any value up to U+10FFFF, surrogates too: the inputs of
// the decoders under test, valid or not). Shared by the fuzz targets and tests/test_web.cpp.
inline void put_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

// A header is spaces, then at least one digit, then spaces: exactly ten bytes in all.
inline bool ref_parse_header(std::string_view h, unsigned long long& length) {
    if (h.size() != chatsock::header_size) return false;
    enum { leading, digits, trailing } state = leading;
    unsigned long long value = 0;
    for (char ch : h) {
        const bool digit = ch >= '0' && ch <= '9';
        if (ch == ' ') {
            if (state == digits) state = trailing;
        } else if (digit && state != trailing) {
            state = digits;
            value = value * 10 + static_cast<unsigned long long>(ch - '0');
        } else {
            return false;
        }
    }
    if (state == leading) return false;
    length = value;
    return true;
}

// Well-formed UTF-8 as the Unicode standard's table 3-7 lists it, byte range by byte range.
inline bool ref_valid_utf8(std::string_view s) {
    const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const auto in = [](unsigned char b, unsigned lo, unsigned hi) { return b >= lo && b <= hi; };
    std::size_t i = 0;
    while (i < s.size()) {
        const unsigned char b = at(i);
        std::size_t need = 0;
        unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (b <= 0x7F) {
            ++i;
            continue;
        }
        if (in(b, 0xC2, 0xDF)) need = 1;
        else if (b == 0xE0) {
            need = 2;
            lo = 0xA0;
        } else if (in(b, 0xE1, 0xEC) || in(b, 0xEE, 0xEF)) need = 2;
        else if (b == 0xED) {
            need = 2;
            hi = 0x9F;
        } else if (b == 0xF0) {
            need = 3;
            lo = 0x90;
        } else if (in(b, 0xF1, 0xF3)) need = 3;
        else if (b == 0xF4) {
            need = 3;
            hi = 0x8F;
        } else return false;
        if (s.size() - i <= need) return false;  // truncated sequence
        if (!in(at(i + 1), lo, hi)) return false;
        for (std::size_t k = 2; k <= need; ++k)
            if (!in(at(i + k), 0x80, 0xBF)) return false;
        i += need + 1;
    }
    return true;
}

// For text already known to be valid UTF-8: does it hold C0, DEL or C1 (U+0080..U+009F)?
inline bool ref_has_control(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        const unsigned char b = static_cast<unsigned char>(s[i]);
        if (b < 0x20 || b == 0x7F) return true;
        if (b == 0xC2 && i + 1 < s.size()) {
            const unsigned char c = static_cast<unsigned char>(s[i + 1]);
            if (c >= 0x80 && c <= 0x9F) return true;
        }
    }
    return false;
}

inline bool ref_equal_ci(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
        if (x != y) return false;
    }
    return true;
}

inline bool ref_username_ok(std::string_view name, std::string_view reserved,
                            std::size_t max_bytes) {
    return !name.empty() && name.size() <= max_bytes && ref_valid_utf8(name) &&
           !ref_has_control(name) && name.front() != ' ' && name.back() != ' ' &&
           !ref_equal_ci(name, reserved);
}

// ---- the framing reference: whole stream at once -----------------------------------------

struct Decoded {
    std::vector<std::string> frames;
    bool failed = false;
    std::size_t consumed = 0;  // bytes of the stream that the frames took, headers included
    // When failed: a well-formed header announced too much (its length), or a bad header.
    bool over_limit = false;
    unsigned long long over_length = 0;
};

inline Decoded ref_decode(std::string_view stream, std::size_t max_payload) {
    Decoded d;
    std::size_t pos = 0;
    while (stream.size() - pos >= chatsock::header_size) {
        unsigned long long length = 0;
        const bool well_formed =
            ref_parse_header(stream.substr(pos, chatsock::header_size), length);
        if (!well_formed || length > max_payload) {
            d.failed = true;
            d.over_limit = well_formed;
            d.over_length = well_formed ? length : 0;
            break;
        }
        if (stream.size() - pos - chatsock::header_size < length) break;
        d.frames.emplace_back(
            stream.substr(pos + chatsock::header_size, static_cast<std::size_t>(length)));
        pos += chatsock::header_size + static_cast<std::size_t>(length);
    }
    d.consumed = pos;
    return d;
}

// ---- section 4: which wire a connection speaks, and the line client's decoding ------------

// The spec's detection rules (docs/PROTOCOL.md, issue 11): an HTTP method and a space is HTTP,
// and a proper prefix of one may still become one; otherwise any byte among the first ten that
// is neither a digit nor a space makes a line client; ten digits and spaces are a frame header.
inline chatsock::Wire ref_detect_wire(std::string_view s) {
    static const char* const methods[] = {"GET ",     "HEAD ",  "POST ",    "PUT ",  "DELETE ",
                                          "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "};
    bool may_become_http = false;
    for (const char* m : methods) {
        const std::string_view method(m);
        if (s.size() >= method.size() && s.substr(0, method.size()) == method)
            return chatsock::Wire::http;
        if (s.size() < method.size() && method.substr(0, s.size()) == s) may_become_http = true;
    }
    for (std::size_t i = 0; i < s.size() && i < chatsock::header_size; ++i)
        if (s[i] != ' ' && !(s[i] >= '0' && s[i] <= '9'))
            return may_become_http ? chatsock::Wire::unknown : chatsock::Wire::lines;
    return s.size() >= chatsock::header_size ? chatsock::Wire::frames : chatsock::Wire::unknown;
}

// A line client's bytes, fed one at a time: lines end at "\n", one "\r" right before it is
// dropped, empty lines are skipped; telnet's IAC WILL/WONT/DO/DONT x, IAC SB ... IAC SE and
// IAC x are removed, IAC IAC is a data byte 255. A line whose bytes (its end not counted)
// pass max_line is an error as soon as that is certain: max_line + 1 bytes may still be a
// line of max_line bytes and the "\r" of its end, max_line + 2 may not.
struct RefLines {
    enum Telnet { data, command, option, sub, sub_command };
    explicit RefLines(std::size_t max) : max_line(max) {}
    std::size_t max_line;
    std::vector<std::string> lines;
    std::string line;  // the bytes of the line so far
    Telnet telnet = data;
    bool failed = false;

    void feed(unsigned char b) {
        if (failed) return;
        switch (telnet) {
        case data:
            if (b == 255) telnet = command;
            else if (b != '\n') add(b);
            else {
                if (!line.empty() && line.back() == '\r') line.pop_back();
                if (!line.empty()) lines.push_back(line);
                line.clear();
            }
            break;
        case command:
            telnet = b >= 251 && b <= 254 ? option : b == 250 ? sub : data;
            if (b == 255) add(b);
            break;
        case option: telnet = data; break;
        case sub: telnet = b == 255 ? sub_command : sub; break;
        case sub_command: telnet = b == 240 ? data : sub; break;
        }
    }
    void feed(std::string_view bytes) {
        for (char c : bytes) feed(static_cast<unsigned char>(c));
    }
    // The end of the input: a last line without its newline still counts (as the server does).
    void finish() {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!failed && !line.empty()) lines.push_back(line);
        line.clear();
    }
    // What the decoder holds: the line so far, and one for an unfinished telnet sequence.
    std::size_t buffered() const { return failed ? 0 : line.size() + (telnet != data); }
    std::string error() const { return "line over " + std::to_string(max_line) + " bytes"; }

private:
    void add(unsigned char b) {
        line += static_cast<char>(b);
        if (line.size() > max_line + 1 || (line.size() == max_line + 1 && b != '\r')) {
            failed = true;
            line.clear();
            telnet = data;
        }
    }
};

// A small generator for chunk sizes, seeded from the input.
struct Rng {
    std::uint32_t state;
    std::uint32_t next() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        return state;
    }
};

// Text that goes to a terminal or a log: no C0 byte, no DEL, valid UTF-8, no C1 code point.
inline void check_safe_text(std::string_view s) {
    FUZZ_CHECK(ref_valid_utf8(s));
    FUZZ_CHECK(!ref_has_control(s));
}

}  // namespace fuzzref

#endif  // CHATSOCK_FUZZ_REFERENCE_HPP
