// Framing and protocol rules: pure functions, no sockets.
#include "chatsock.hpp"
#include "support.hpp"

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <vector>

using namespace std::string_literals;

// Defined in second_tu.cpp: the header included from a second translation unit.
std::string second_tu_frame();
const void* second_tu_ctrl_c_target_address();
const void* second_tu_resolver_category_address();
std::size_t second_tu_idle_server_and_client();

namespace {

std::string header_of(std::string_view s) {
    return std::string(s.substr(0, chatsock::header_size));
}

bool header_ok(std::string_view header, unsigned long long expected) {
    unsigned long long length = 12345;
    return chatsock::parse_header(header, length) && length == expected;
}

bool header_bad(std::string_view header) {
    unsigned long long length = 0;
    return !chatsock::parse_header(header, length);
}

// 1 to 40 frames of random bytes (a fifth of them empty, the others up to 2,000 bytes).
struct RandomFrames {
    std::vector<std::string> payloads;
    std::string stream;  // their frames, back to back
    explicit RandomFrames(std::mt19937& rng) {
        for (int i = 0, count = 1 + static_cast<int>(rng() % 40); i < count; ++i) {
            std::string p(rng() % 5 == 0 ? 0 : rng() % 2000, '\0');
            for (char& c : p) c = static_cast<char>(rng() & 0xFF);
            stream += chatsock::encode_frame(p);
            payloads.push_back(std::move(p));
        }
    }
};

// Every frame the decoder has ready, taken one at a time.
std::vector<std::string> decode_all(cst::Frames& d) {
    std::vector<std::string> out;
    std::string_view frame;
    while (d.next(frame)) out.emplace_back(frame);
    return out;
}

}  // namespace

TEST_SUITE("framing") {
    TEST_CASE("the header links cleanly into two translation units") {
        CHECK(second_tu_frame() == "2         hi");
        CHECK(second_tu_frame() == chatsock::encode_frame("hi"));
        // Inline variables and function-local statics are one object program-wide.
        CHECK(second_tu_ctrl_c_target_address() ==
              static_cast<const void*>(&chatsock::detail::ctrl_c_target));
        CHECK(second_tu_resolver_category_address() ==
              static_cast<const void*>(&chatsock::detail::resolver_category()));
        CHECK(second_tu_idle_server_and_client() == 0);
    }

    TEST_CASE("encode_frame: 10-byte left-aligned space-padded length, then the payload") {
        CHECK(chatsock::encode_frame("hello") == "5         hello");
        CHECK(chatsock::encode_frame("") == "0         ");
        CHECK(chatsock::encode_frame("0123456789") == "10        0123456789");
        const std::string big(123456, 'x');
        const std::string frame = chatsock::encode_frame(big);
        CHECK(frame.size() == 10 + big.size());
        CHECK(header_of(frame) == "123456    ");
        CHECK(frame.substr(10) == big);
        // Binary payloads pass through untouched.
        const std::string binary("\0\x01\xff\n"s);
        CHECK(chatsock::encode_frame(binary) == "4         "s + binary);
        // Length counts bytes, not characters.
        CHECK(chatsock::encode_frame("数据") == "6         数据");
    }

    TEST_CASE("append_frame appends to what is there") {
        std::string out = "prefix";
        chatsock::detail::append_frame(out, "ab");
        chatsock::detail::append_frame(out, "");
        CHECK(out == "prefix2         ab0         ");
    }

    TEST_CASE("encode_message: the sender's frame then the text frame") {
        auto bytes = chatsock::encode_message("alice", "hi there");
        REQUIRE(bytes);
        CHECK(*bytes == "5         alice8         hi there");
        CHECK(*chatsock::encode_message("server", "") == "6         server0         ");
    }

    TEST_CASE("parse_header accepts digits padded with spaces on either side") {
        CHECK(header_ok("12        ", 12));  // left-aligned (what encode writes)
        CHECK(header_ok("        12", 12));  // right-aligned
        CHECK(header_ok("    12    ", 12));  // centered
        CHECK(header_ok("0000000012", 12));  // leading zeros
        CHECK(header_ok("0         ", 0));
        CHECK(header_ok("         0", 0));
        CHECK(header_ok("9999999999", 9999999999ull));  // the largest 10-digit length
        CHECK(header_ok("1234567890", 1234567890ull));
    }

    TEST_CASE("parse_header refuses everything else") {
        CHECK(header_bad("          "));  // all spaces
        CHECK(header_bad("+5        "));
        CHECK(header_bad("-5        "));
        CHECK(header_bad("1 2       "));  // inner space
        CHECK(header_bad("abc       "));
        CHECK(header_bad("5a        "));
        CHECK(header_bad("0x10      "));
        CHECK(header_bad("5\t        "));  // tab is not a space
        CHECK(header_bad("\t5        "));
        CHECK(header_bad("5\n        "));
        CHECK(header_bad("5\0        "s));  // NUL
        CHECK(header_bad("\0         "s));
        CHECK(header_bad("5.0       "));
        CHECK(header_bad("1e3       "));
        CHECK(header_bad("５        "));  // a full-width digit is not an ASCII digit
        // Wrong sizes: a header is exactly 10 bytes.
        CHECK(header_bad(""));
        CHECK(header_bad("5"));
        CHECK(header_bad("5        "));    // 9 bytes
        CHECK(header_bad("5          "));  // 11 bytes
    }

    TEST_CASE("parse_header reads back every length encode writes") {
        for (unsigned long long n :
             {0ull, 1ull, 9ull, 10ull, 99ull, 65536ull, 4294967296ull, 9999999999ull}) {
            char header[11];
            std::snprintf(header, sizeof header, "%-10llu", n);
            CAPTURE(n);
            CHECK(header_ok(std::string_view(header, 10), n));
        }
    }

    TEST_CASE("FrameDecoder: one byte at a time") {
        const std::vector<std::string> payloads = {"hello", "", "数据 João", std::string(300, 'z'),
                                                   "a\0b"s};
        std::string stream;
        for (const auto& p : payloads) stream += chatsock::encode_frame(p);

        cst::Frames d;
        std::vector<std::string> got;
        for (char c : stream) {
            d.feed(&c, 1);
            auto more = decode_all(d);
            got.insert(got.end(), more.begin(), more.end());
            CHECK(d.buffered() <= chatsock::header_size + 300);
        }
        CHECK(got == payloads);
        CHECK_FALSE(d.failed());
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("FrameDecoder: random chunk sizes give the same frames (many seeds)") {
        for (unsigned seed = 1; seed <= 200; ++seed) {
            CAPTURE(seed);
            std::mt19937 rng(seed);
            const RandomFrames frames(rng);
            const std::string& stream = frames.stream;
            cst::Frames d;
            std::vector<std::string> got;
            std::size_t pos = 0;
            while (pos < stream.size()) {
                std::size_t chunk = 1 + rng() % (seed % 3 == 0 ? 7 : 3000);
                chunk = std::min(chunk, stream.size() - pos);
                d.feed(std::string_view(stream).substr(pos, chunk));
                pos += chunk;
                auto more = decode_all(d);
                got.insert(got.end(), more.begin(), more.end());
            }
            REQUIRE_FALSE(d.failed());
            CHECK(d.buffered() == 0);
            CHECK(got == frames.payloads);
        }
    }

    TEST_CASE("FrameDecoder: several frames in one chunk, and a partial one kept for later") {
        cst::Frames d;
        const std::string stream = chatsock::encode_frame("one") + chatsock::encode_frame("two") +
                                   chatsock::encode_frame("three") + "5         par";
        d.feed(stream);
        CHECK(decode_all(d) == std::vector<std::string>{"one", "two", "three"});
        CHECK(d.buffered() == 13);
        d.feed("ts");
        CHECK(decode_all(d) == std::vector<std::string>{"parts"});
        CHECK(d.buffered() == 0);
        // A header split across feeds.
        d.feed("1");
        d.feed("1        hello");
        std::string_view frame;
        CHECK_FALSE(d.next(frame));
        d.feed(" world");
        REQUIRE(d.next(frame));
        CHECK(frame == "hello world");
    }

    // decode(): the zero-copy path. Each chunk lives in a buffer of its own that is overwritten
    // after the call, as the server's read buffer is, so a view kept past its call would show junk.
    std::vector<std::string> decode_chunks(chatsock::FrameDecoder & d, const std::string& stream,
                                           const std::vector<std::size_t>& sizes) {
        std::vector<std::string> got;
        std::string buffer;
        std::size_t pos = 0;
        for (std::size_t i = 0; pos < stream.size(); ++i) {
            const std::size_t n =
                std::min(i < sizes.size() ? sizes[i] : stream.size(), stream.size() - pos);
            buffer.assign(stream, pos, n);
            d.decode(buffer.data(), buffer.size(), [&](std::string_view frame) {
                got.emplace_back(frame);
                return true;
            });
            buffer.assign(buffer.size(), '#');
            pos += n;
        }
        return got;
    }

    TEST_CASE(
        "FrameDecoder::decode: frames from chunks of every size, only an unfinished one kept") {
        const std::vector<std::string> payloads = {"one", "", "three", std::string(300, 'x'),
                                                   "fünf"};
        std::string stream;
        for (const auto& p : payloads) stream += chatsock::encode_frame(p);
        for (std::size_t size = 1; size <= stream.size(); ++size) {
            CAPTURE(size);
            chatsock::FrameDecoder d;
            CHECK(decode_chunks(d, stream, std::vector<std::size_t>(stream.size(), size)) ==
                  payloads);
            CHECK_FALSE(d.failed());
            CHECK(d.buffered() == 0);
        }
        chatsock::FrameDecoder d;
        CHECK(decode_chunks(d, chatsock::encode_frame("whole") + "7         par", {}) ==
              std::vector<std::string>{"whole"});
        CHECK(d.buffered() == 13);  // the unfinished frame, copied
        CHECK(decode_chunks(d, "tia", {}) == std::vector<std::string>{});
        CHECK(d.buffered() == 16);
        CHECK(decode_chunks(d, "l" + chatsock::encode_frame("next"), {}) ==
              std::vector<std::string>{"partial", "next"});
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("FrameDecoder::decode: random chunks give what one big decode gives (many seeds)") {
        for (unsigned seed = 1; seed <= 100; ++seed) {
            CAPTURE(seed);
            std::mt19937 rng(seed);
            const RandomFrames frames(rng);
            std::vector<std::size_t> sizes;
            for (std::size_t total = 0; total < frames.stream.size(); total += sizes.back())
                sizes.push_back(1 + rng() % (seed % 2 ? 15 : 5000));
            chatsock::FrameDecoder d, whole;
            CHECK(decode_chunks(d, frames.stream, sizes) == frames.payloads);
            CHECK(decode_chunks(whole, frames.stream, {}) == frames.payloads);
            CHECK(d.buffered() == 0);
            CHECK(whole.buffered() == 0);
            // With part of one more frame at the end, both keep the same unfinished bytes.
            const std::string stream = frames.stream + chatsock::encode_frame("unfinished");
            const std::size_t cut = stream.size() - 1 - rng() % 20;  // 0-19 bytes of the last frame
            const std::string partial = stream.substr(0, cut);
            chatsock::FrameDecoder d2, whole2;
            CHECK(decode_chunks(d2, partial, sizes) == decode_chunks(whole2, partial, {}));
            CHECK(d2.buffered() == whole2.buffered());
            CHECK(whole2.buffered() == cut - frames.stream.size());
        }
    }

    TEST_CASE("FrameDecoder::decode: on_frame returning false stops it and a bad header fails it") {
        chatsock::FrameDecoder d;
        const std::string stream =
            chatsock::encode_frame("a") + chatsock::encode_frame("b") + chatsock::encode_frame("c");
        std::vector<std::string> got;
        d.decode(stream.data(), stream.size(), [&](std::string_view f) {
            got.emplace_back(f);
            return got.size() < 2;
        });
        CHECK(got == std::vector<std::string>{"a", "b"});

        // A stop says how far it got (the server keeps the rest while a client is paused), also
        // inside a frame finished from a chunk before; resuming there loses nothing.
        for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
            CAPTURE(cut);
            chatsock::FrameDecoder r;
            std::vector<std::string> all;
            const auto one = [&](std::string_view f) { return all.emplace_back(f), false; };
            std::size_t pos = r.decode(stream.data(), cut, one);
            CHECK(pos <= cut);
            while (pos < stream.size()) {
                const std::size_t used = r.decode(stream.data() + pos, stream.size() - pos, one);
                REQUIRE(used > 0);  // one frame per call, each ends somewhere in this chunk
                pos += used;
            }
            CHECK(all == std::vector<std::string>{"a", "b", "c"});
        }

        chatsock::FrameDecoder bad(16);
        const std::string junk =
            chatsock::encode_frame("fine") + "2x        " + chatsock::encode_frame("lost");
        CHECK(decode_chunks(bad, junk, {3, 9}) == std::vector<std::string>{"fine"});
        CHECK(bad.failed());
        CHECK(bad.error() == "bad frame header \"2x        \"");
        CHECK(bad.buffered() == 0);
        CHECK(decode_chunks(bad, chatsock::encode_frame("after"), {}) ==
              std::vector<std::string>{});

        chatsock::FrameDecoder small(
            4);  // an oversized frame is refused from its header, split or not
        CHECK(decode_chunks(small, "5    ", {}) == std::vector<std::string>{});
        CHECK(decode_chunks(small, "     hello", {}) == std::vector<std::string>{});
        CHECK(small.error() == "frame of 5 bytes is over the limit of 4");

        // A chunk that ends inside a header: its whole frames come first, then the finished one,
        // as one big decode gives them.
        const std::string two = chatsock::encode_frame("fed") + chatsock::encode_frame("new");
        chatsock::FrameDecoder split, whole;
        CHECK(decode_chunks(split, two, {15}) == std::vector<std::string>{"fed", "new"});
        CHECK(decode_chunks(whole, two, {}) == std::vector<std::string>{"fed", "new"});
    }

    TEST_CASE("FrameDecoder: a payload of exactly the maximum is accepted") {
        cst::Frames d(100);
        const std::string payload(100, 'm');
        d.feed(chatsock::encode_frame(payload));
        std::string_view frame;
        REQUIRE(d.next(frame));
        CHECK(frame == payload);
        CHECK_FALSE(d.failed());

        // A decoder made without a maximum has the default one.
        const std::size_t max = chatsock::detail::default_max_payload;
        chatsock::FrameDecoder by_default;
        CHECK(decode_chunks(by_default, chatsock::encode_frame(std::string(max, 'b')), {}).size() ==
              1);
        CHECK(decode_chunks(by_default, chatsock::encode_frame(std::string(max + 1, 'b')), {})
                  .empty());
        CHECK(by_default.failed());
        cst::Frames standard(chatsock::detail::default_max_payload);
        const std::string big(chatsock::detail::default_max_payload, 'b');
        standard.feed(chatsock::encode_frame(big));
        REQUIRE(standard.next(frame));
        CHECK(frame.size() == big.size());
    }

    TEST_CASE("FrameDecoder: one byte over the maximum is refused from the header alone") {
        cst::Frames d(100);
        d.feed("101       ");  // only the header: the decoder must not wait for 101 bytes
        std::string_view frame;
        CHECK_FALSE(d.next(frame));
        REQUIRE(d.failed());
        CHECK(d.error() == "frame of 101 bytes is over the limit of 100");
        CHECK(d.buffered() == 0);

        cst::Frames huge;  // the default maximum
        huge.feed("9999999999");
        CHECK_FALSE(huge.next(frame));
        REQUIRE(huge.failed());
        CHECK(huge.error() == "frame of 9999999999 bytes is over the limit of 65536");
        CHECK(huge.buffered() == 0);
    }

    TEST_CASE("FrameDecoder: frames before a bad header are delivered, then it stays failed") {
        cst::Frames d;
        d.feed(chatsock::encode_frame("ok") + "abc       " + chatsock::encode_frame("never"));
        CHECK(d.failed());  // decode() has read the bad header already; "ok" was decoded before it
        std::string_view frame;
        REQUIRE(d.next(frame));
        CHECK(frame == "ok");
        CHECK_FALSE(d.next(frame));
        REQUIRE(d.failed());
        CHECK(d.error() == "bad frame header \"abc       \"");
        CHECK(d.buffered() == 0);
        // Nothing more comes out, whatever is fed.
        d.feed(chatsock::encode_frame("later"));
        CHECK_FALSE(d.next(frame));
        CHECK(d.failed());
        CHECK(d.buffered() == 0);
        CHECK(d.error() == "bad frame header \"abc       \"");
    }

    TEST_CASE("FrameDecoder: error texts for other bad headers") {
        for (const char* bad : {"+5        ", "          ", "1 2       "}) {
            cst::Frames d;
            d.feed(bad);
            std::string_view frame;
            CHECK_FALSE(d.next(frame));
            CHECK(d.failed());
            CHECK(d.error() == "bad frame header \"" + std::string(bad) + "\"");
        }
        // Fewer than 10 bytes are not judged yet.
        cst::Frames d;
        d.feed("abc");
        std::string_view frame;
        CHECK_FALSE(d.next(frame));
        CHECK_FALSE(d.failed());
        CHECK(d.buffered() == 3);
    }

    TEST_CASE("FrameDecoder: memory stays bounded over a long stream") {
        chatsock::FrameDecoder d;
        const std::string frame = chatsock::encode_frame(std::string(1000, 'q'));
        std::size_t frames = 0;
        for (int i = 0; i < 5000; ++i) {
            frames += decode_chunks(d, frame.substr(0, 400), {}).size();
            CHECK(d.buffered() == 400);  // only the unfinished frame is kept
            frames += decode_chunks(d, frame.substr(400), {}).size();
            CHECK(d.buffered() == 0);
        }
        CHECK(frames == 5000);
    }

    TEST_CASE("UTF-8: valid sequences") {
        CHECK(chatsock::is_valid_utf8(""));
        CHECK(chatsock::is_valid_utf8("plain ascii"));
        CHECK(chatsock::is_valid_utf8("\0"s));
        CHECK(chatsock::is_valid_utf8("\xC3\xA9"));          // é, 2 bytes
        CHECK(chatsock::is_valid_utf8("\xC2\x80"));          // U+0080, smallest 2-byte
        CHECK(chatsock::is_valid_utf8("\xDF\xBF"));          // U+07FF
        CHECK(chatsock::is_valid_utf8("\xE0\xA0\x80"));      // U+0800, smallest 3-byte
        CHECK(chatsock::is_valid_utf8("\xE2\x82\xAC"));      // €
        CHECK(chatsock::is_valid_utf8("\xED\x9F\xBF"));      // U+D7FF, just below the surrogates
        CHECK(chatsock::is_valid_utf8("\xEE\x80\x80"));      // U+E000, just above
        CHECK(chatsock::is_valid_utf8("\xEF\xBF\xBF"));      // U+FFFF
        CHECK(chatsock::is_valid_utf8("\xF0\x90\x80\x80"));  // U+10000, smallest 4-byte
        CHECK(chatsock::is_valid_utf8("\xF0\x9F\x98\x80"));  // 😀
        CHECK(chatsock::is_valid_utf8("\xF4\x8F\xBF\xBF"));  // U+10FFFF, the last code point
        CHECK(chatsock::is_valid_utf8("João 数据 😀"));

        char32_t cp = 0;
        CHECK(chatsock::detail::utf8_sequence("\xE2\x82\xAC", 0, cp) == 3);
        CHECK(cp == U'\u20AC');
        CHECK(chatsock::detail::utf8_sequence("a\xF0\x9F\x98\x80", 1, cp) == 4);
        CHECK(cp == U'\U0001F600');
        CHECK(chatsock::detail::utf8_sequence("A", 0, cp) == 1);
        CHECK(cp == U'A');
    }

    TEST_CASE("UTF-8: invalid sequences") {
        // Overlong forms.
        CHECK_FALSE(chatsock::is_valid_utf8("\xC0\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xC1\xBF"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xE0\x80\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xE0\x9F\xBF"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xF0\x80\x80\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xF0\x8F\xBF\xBF"));
        // Surrogates.
        CHECK_FALSE(chatsock::is_valid_utf8("\xED\xA0\x80"));              // U+D800
        CHECK_FALSE(chatsock::is_valid_utf8("\xED\xBF\xBF"));              // U+DFFF
        CHECK_FALSE(chatsock::is_valid_utf8("\xED\xA0\xBD\xED\xB8\x80"));  // CESU-8 pair
        // Past U+10FFFF and bytes that never start a sequence.
        CHECK_FALSE(chatsock::is_valid_utf8("\xF4\x90\x80\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xF5\x80\x80\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xF8\x88\x80\x80\x80"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xFE"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xFF"));
        // Truncated sequences, at the end and in the middle.
        CHECK_FALSE(chatsock::is_valid_utf8("\xC3"));
        CHECK_FALSE(chatsock::is_valid_utf8("a\xC3"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xE2\x82"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xF0\x9F\x98"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xE2\x82z"));
        // Lone and misplaced continuation bytes.
        CHECK_FALSE(chatsock::is_valid_utf8("\x80"));
        CHECK_FALSE(
            chatsock::is_valid_utf8("a\xBF"
                                    "b"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xC3\x28"));
        CHECK_FALSE(chatsock::is_valid_utf8("\xC3\xA9\xA9"));

        char32_t cp = 0;
        CHECK(chatsock::detail::utf8_sequence("\xC0\x80", 0, cp) == 0);
        CHECK(chatsock::detail::utf8_sequence("\xF0\x9F", 0, cp) == 0);
    }

    TEST_CASE("is_control: C0, DEL and C1") {
        CHECK(chatsock::is_control(0));
        CHECK(chatsock::is_control(0x1B));
        CHECK(chatsock::is_control(0x1F));
        CHECK_FALSE(chatsock::is_control(0x20));
        CHECK_FALSE(chatsock::is_control(U'~'));
        CHECK(chatsock::is_control(0x7F));
        CHECK(chatsock::is_control(0x80));
        CHECK(chatsock::is_control(0x9B));
        CHECK(chatsock::is_control(0x9F));
        CHECK_FALSE(chatsock::is_control(0xA0));
    }

    TEST_CASE("printable escapes control characters and invalid bytes") {
        using chatsock::printable;
        CHECK(printable("a\nb") == "a\\nb");
        CHECK(printable("a\rb") == "a\\rb");
        CHECK(printable("a\tb") == "a\\tb");
        CHECK(printable("\x1b[2J") == "\\x1b[2J");
        CHECK(printable("\x1b]0;title\x07") == "\\x1b]0;title\\x07");
        CHECK(printable("\0"s) == "\\x00");
        CHECK(printable("\x7f") == "\\x7f");
        CHECK(printable("\xC2\x9B"
                        "31m") == "\\u009b31m");    // C1 CSI
        CHECK(printable("\xC2\x85") == "\\u0085");  // C1 NEL
        CHECK(printable("\xff") == "\\xff");
        CHECK(printable("ok\xC3") == "ok\\xc3");                // truncated
        CHECK(printable("\xC0\x80") == "\\xc0\\x80");           // overlong NUL
        CHECK(printable("\xED\xA0\x80") == "\\xed\\xa0\\x80");  // surrogate
        // No raw control byte survives.
        std::string all;
        for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
        for (unsigned char c : printable(all)) CHECK((c >= 0x20 && c != 0x7F));
    }

    TEST_CASE("printable leaves normal text alone") {
        using chatsock::printable;
        CHECK(printable("") == "");
        CHECK(printable("hello, world!") == "hello, world!");
        CHECK(printable("João 数据") == "João 数据");
        CHECK(printable("😀 \xC2\xA0 ~") == "😀 \xC2\xA0 ~");  // emoji, NBSP
        CHECK(printable("a\\nb") == "a\\nb");  // a literal backslash-n is left as it is ...
    }

    TEST_CASE("printable and is_valid_utf8 find a special byte at every position of a long text") {
        // They skip plain ASCII eight bytes at a time: a byte needing care must be found wherever it
        // sits in a word, and text around it must come out unchanged.
        const std::vector<std::pair<std::string, std::string>> specials = {{"\x00"s, "\\x00"},
                                                                           {"\x1f", "\\x1f"},
                                                                           {"\n", "\\n"},
                                                                           {"\x7f", "\\x7f"},
                                                                           {"\\", "\\\\"},
                                                                           {"\xc3\xa9", "\xc3\xa9"},
                                                                           {"\xc2\x9b", "\\u009b"},
                                                                           {"\xff", "\\xff"},
                                                                           {" ", " "},
                                                                           {"~", "~"}};
        for (std::size_t before = 0; before <= 19; ++before) {
            for (const auto& special : specials) {
                const std::string &raw = special.first,
                                  &shown = special.second;  // (CAPTURE can't take a binding)
                CAPTURE(before);
                CAPTURE(raw);
                const std::string head(before, 'a'), tail(11, 'z');
                CHECK(chatsock::printable(head + raw + tail, true) == head + shown + tail);
                CHECK(chatsock::is_valid_utf8(head + raw + tail) == (raw != "\xff"));
            }
        }
        CHECK(chatsock::printable("0123456789abcdef\\") ==
              "0123456789abcdef\\");  // kept without escape_backslash
    }

    TEST_CASE("printable with escape_backslash doubles backslashes, so escapes cannot be forged") {
        using chatsock::printable;
        CHECK(printable("a\\b", true) == "a\\\\b");
        CHECK(printable("a\\b", false) == "a\\b");
        // A real newline and a typed "\n" differ once backslashes are escaped.
        CHECK(printable("\n", true) == "\\n");
        CHECK(printable("\\n", true) == "\\\\n");
        CHECK(printable("\n", true) != printable("\\n", true));
        CHECK(printable("\\x1b", true) != printable("\x1b", true));
    }

    TEST_CASE("check_username") {
        using chatsock::check_username;
        CHECK(check_username("alice", "server") == "");
        CHECK(check_username("João", "server") == "");
        CHECK(check_username("数据", "server") == "");
        CHECK(check_username("b o b", "server") == "");
        CHECK(check_username("servers", "server") == "");
        CHECK(check_username(std::string(32, 'a'), "server") == "");
        CHECK(check_username("", "server") == "the name is empty");
        CHECK(check_username(std::string(33, 'a'), "server") == "the name is longer than 32 bytes");
        // The limit counts bytes: 16 two-byte letters fit, 11 three-byte ones do not.
        std::string e16, z11;
        for (int i = 0; i < 16; ++i) e16 += "é";
        for (int i = 0; i < 11; ++i) z11 += "数";
        CHECK(check_username(e16, "server") == "");
        CHECK(check_username(z11, "server") == "the name is longer than 32 bytes");
        CHECK(check_username("abcdef", "server", 5) == "the name is longer than 5 bytes");
        CHECK(check_username("abcde", "server", 5) == "");
        CHECK(check_username("bad\xff", "server") == "the name is not valid UTF-8");
        CHECK(check_username("\xC0\x80", "server") == "the name is not valid UTF-8");
        for (const std::string& name :
             {"a\tb"s, "a\nb"s, "a\x1b[2J"s, "a\x7f"s, "a\xC2\x9B"s, "a\0b"s}) {
            CAPTURE(name);
            CHECK(check_username(name, "server") == "the name contains control characters");
        }
        CHECK(check_username("server", "server") == "the name \"server\" is reserved");
        CHECK(check_username("SERVER", "server") == "the name \"SERVER\" is reserved");
        CHECK(check_username("SeRvEr", "server") == "the name \"SeRvEr\" is reserved");
        CHECK(check_username("server", "hub") == "");
        CHECK(check_username("Hub", "hub") == "the name \"Hub\" is reserved");
        CHECK(check_username(" bob", "server") == "the name starts or ends with a space");
        CHECK(check_username("bob ", "server") == "the name starts or ends with a space");
        CHECK(check_username(" ", "server") == "the name starts or ends with a space");
    }

    TEST_CASE("ascii_lower") {
        using chatsock::detail::ascii_lower;
        CHECK(ascii_lower("Alice") == ascii_lower("aLICE"));
        CHECK(ascii_lower("") == "");
        CHECK(ascii_lower("a[") != ascii_lower("a{"));  // only letters fold
        CHECK(ascii_lower("É") == "É");                 // ASCII only
        // Every letter folds, the first and the last too; their neighbours do not.
        CHECK(ascii_lower("@ABCDEFGHIJKLMNOPQRSTUVWXYZ[") == "@abcdefghijklmnopqrstuvwxyz[");
        CHECK(ascii_lower("ZED") == "zed");
    }

    TEST_CASE("parse_port") {
        std::uint16_t port = 4242;
        CHECK(chatsock::parse_port("0", port));
        CHECK(port == 0);
        CHECK(chatsock::parse_port("1234", port));
        CHECK(port == 1234);
        CHECK(chatsock::parse_port("65535", port));
        CHECK(port == 65535);
        CHECK(chatsock::parse_port("00080", port));
        CHECK(port == 80);
        port = 4242;
        for (const char* bad :
             {"", "65536", "99999", "123456", "-1", "+1", " 80", "80 ", "8O", "0x50", "1e3"}) {
            CAPTURE(bad);
            CHECK_FALSE(chatsock::parse_port(bad, port));
        }
        CHECK(port == 4242);  // unchanged on failure
    }

    TEST_CASE("utc_timestamp: ISO 8601, UTC, milliseconds") {
        using std::chrono::system_clock;
        CHECK(chatsock::detail::utc_timestamp(system_clock::time_point(
                  std::chrono::milliseconds(0))) == "1970-01-01T00:00:00.000Z");
        CHECK(chatsock::detail::utc_timestamp(system_clock::time_point(
                  std::chrono::milliseconds(1700000000123LL))) == "2023-11-14T22:13:20.123Z");
        CHECK(chatsock::detail::utc_timestamp(system_clock::time_point(
                  std::chrono::milliseconds(951782400999LL))) == "2000-02-29T00:00:00.999Z");
    }

}  // TEST_SUITE
