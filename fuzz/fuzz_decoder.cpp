// libFuzzer target for chatsock's pure framing code: FrameDecoder::decode, parse_header,
// printable, is_valid_utf8 and check_username. No sockets.
//
// Input layout:
//   byte 0   chunking: seeds the generator of chunk sizes (1 .. 1 + (byte0 >> 2)) and picks
//            the frame after which a decode() is stopped (on_frame returning false)
//   byte 1   bits 0-2: max_payload, one of kMaxPayloads; bit 3: the default maximum (64 KiB)
//            instead; bit 7: the stream is the rest repeated 8 times (buffers past 16 KiB);
//            byte1 >> 3: the max_bytes given to check_username
//   rest     the byte stream fed to the decoder, and the text given to the other functions
//
// Every check compares chatsock against the small references in fuzz/reference.hpp; a
// violation calls __builtin_trap() so libFuzzer records a crash and its input.
//
// Build and run: make fuzz (see the Makefile), or by hand:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_decoder.cpp -o fuzz_decoder
//   ./fuzz_decoder fuzz/corpus/decoder

#include "chatsock.hpp"
#include "fuzz/reference.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace fuzzref;

constexpr std::size_t kMaxPayloads[8] = {0, 1, 3, 7, 16, 32, 64, 200};

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Undoes printable(text, true). Returns false for an escape printable() never writes.
bool unescape(std::string_view s, std::string& out) {
    out.clear();
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        if (++i == s.size()) return false;
        const char kind = s[i];
        if (kind == '\\') out += '\\';
        else if (kind == 'n') out += '\n';
        else if (kind == 'r') out += '\r';
        else if (kind == 't') out += '\t';
        else if (kind == 'x' || kind == 'u') {
            const std::size_t digits = kind == 'x' ? 2 : 4;
            if (s.size() - i - 1 < digits) return false;
            unsigned value = 0;
            for (std::size_t k = 1; k <= digits; ++k) {
                const int h = hex_value(s[i + k]);
                if (h < 0) return false;
                value = value * 16 + static_cast<unsigned>(h);
            }
            i += digits;
            if (kind == 'x') out += static_cast<char>(value);
            else put_utf8(out, value);
        } else {
            return false;
        }
    }
    return true;
}

// Decodes the stream with FrameDecoder::decode, in chunks: sizes from `rng` between 1 and
// max_chunk (0: all at once). Each chunk lives in a buffer of its own that is overwritten after
// the call, as the server's read buffer is, so a view kept past its call would show junk.
Decoded run_decode(std::string_view stream, std::size_t max_payload, std::size_t max_chunk,
                   Rng* rng) {
    chatsock::FrameDecoder d(max_payload);
    Decoded out;
    std::string chunk;
    std::size_t pos = 0;
    while (pos < stream.size()) {
        std::size_t n = stream.size() - pos;
        if (max_chunk)
            n = std::min<std::size_t>(n, 1 + (rng ? rng->next() % max_chunk : max_chunk - 1));
        chunk.assign(stream.data() + pos, n);
        const bool was_failed = d.failed();
        const std::size_t frames_before = out.frames.size();
        d.decode(chunk.data(), chunk.size(), [&](std::string_view frame) {
            FUZZ_CHECK(!d.failed());
            FUZZ_CHECK(frame.size() <= max_payload);
            out.frames.emplace_back(frame);
            out.consumed += chatsock::header_size + frame.size();
            return true;
        });
        chunk.assign(chunk.size(), '#');
        pos += n;
        if (d.failed()) {
            FUZZ_CHECK(!d.error().empty());
            check_safe_text(d.error());
            FUZZ_CHECK(d.buffered() == 0);  // a broken stream frees its buffer
            if (was_failed) FUZZ_CHECK(out.frames.size() == frames_before);  // and takes no more
        } else {
            FUZZ_CHECK(d.error().empty());
            // Kept between chunks: exactly the bytes after the last whole frame, which are
            // less than a header, or a valid header and part of its payload.
            FUZZ_CHECK(d.buffered() == pos - out.consumed);
            FUZZ_CHECK(d.buffered() < chatsock::header_size + max_payload);
        }
    }
    out.failed = d.failed();
    if (d.failed()) {
        // Stopped for good: more bytes, even a valid frame, change nothing.
        const std::string good = chatsock::encode_frame("");
        const std::string error = d.error();
        bool called = false;
        d.decode(good.data(), good.size(), [&](std::string_view) { return called = true; });
        FUZZ_CHECK(!called && d.failed() && d.buffered() == 0 && d.error() == error);
    }
    return out;
}

// decode() of the whole stream, stopped by on_frame returning false after `stop_after` frames:
// it gives exactly the first frames, and no more.
void check_stop(std::string_view stream, std::size_t max_payload, std::size_t stop_after,
                const Decoded& want) {
    chatsock::FrameDecoder d(max_payload);
    std::vector<std::string> got;
    d.decode(stream.data(), stream.size(), [&](std::string_view frame) {
        got.emplace_back(frame);
        return got.size() < stop_after;
    });
    const std::size_t last = std::max<std::size_t>(stop_after, 1);  // on_frame said false there
    FUZZ_CHECK(got.size() == std::min(last, want.frames.size()));
    FUZZ_CHECK(std::equal(got.begin(), got.end(), want.frames.begin()));
    if (want.frames.size() >= last) FUZZ_CHECK(!d.failed() && d.buffered() == 0);  // rest dropped
}

void check_same(const Decoded& a, const Decoded& b) {
    FUZZ_CHECK(a.failed == b.failed);
    FUZZ_CHECK(a.frames == b.frames);
    FUZZ_CHECK(a.consumed == b.consumed);
}

void check_framing(std::string_view stream, std::size_t max_payload, std::uint8_t chunking) {
    const Decoded want = ref_decode(stream, max_payload);

    // One big decode, byte by byte, and in chunks of sizes drawn from the input: all agree
    // with the reference.
    check_same(run_decode(stream, max_payload, 0, nullptr), want);
    if (stream.size() <= 1024) check_same(run_decode(stream, max_payload, 1, nullptr), want);
    Rng rng{0x9E3779B9u ^ (static_cast<std::uint32_t>(chunking) * 0x01000193u)};
    check_same(run_decode(stream, max_payload, 1 + (chunking >> 2), &rng), want);
    check_same(run_decode(stream, max_payload, 1 + (chunking & 3), &rng), want);  // small chunks
    check_stop(stream, max_payload, chunking & 7, want);

    // Each frame's payload is the stream's bytes after its header; re-encoding a frame gives
    // back the stream's bytes exactly where the header was written in canonical form.
    std::size_t pos = 0;
    bool canonical = true;
    std::string reencoded;
    for (const std::string& f : want.frames) {
        const std::string frame = chatsock::encode_frame(f);
        FUZZ_CHECK(frame.size() == chatsock::header_size + f.size());
        unsigned long long length = 0;
        FUZZ_CHECK(chatsock::parse_header(std::string_view(frame).substr(0, chatsock::header_size),
                                          length));
        FUZZ_CHECK(length == f.size());
        FUZZ_CHECK(stream.substr(pos + chatsock::header_size, f.size()) == f);
        if (stream.substr(pos, chatsock::header_size) !=
            std::string_view(frame).substr(0, chatsock::header_size))
            canonical = false;
        reencoded += frame;
        pos += frame.size();
    }
    if (canonical) FUZZ_CHECK(reencoded == stream.substr(0, want.consumed));

    // A re-encoded stream decodes to the same frames, in one chunk and byte by byte.
    if (!want.frames.empty()) {
        const std::size_t biggest = reencoded.size();  // ample: every frame fits
        const Decoded again = run_decode(reencoded, biggest, 0, nullptr);
        FUZZ_CHECK(!again.failed && again.frames == want.frames &&
                   again.consumed == reencoded.size());
    }
}

void check_header(std::string_view bytes) {
    unsigned long long got = 0, want = 0;
    const bool ok = chatsock::parse_header(bytes, got);
    FUZZ_CHECK(ok == ref_parse_header(bytes, want));
    if (ok) FUZZ_CHECK(got == want);
}

void check_text(std::string_view s) {
    const bool valid = chatsock::is_valid_utf8(s);
    FUZZ_CHECK(valid == ref_valid_utf8(s));

    const std::string shown = chatsock::printable(s);
    for (char c : shown) {
        const unsigned char b = static_cast<unsigned char>(c);
        FUZZ_CHECK(b >= 0x20 && b != 0x7F);
    }
    check_safe_text(shown);
    if (valid && !ref_has_control(s)) FUZZ_CHECK(shown == s);  // nothing to escape

    const std::string logged = chatsock::printable(s, true);
    check_safe_text(logged);
    std::string back;
    FUZZ_CHECK(unescape(logged, back));  // the escaping can be undone, byte for byte
    FUZZ_CHECK(back == s);
}

void check_name(std::string_view name, std::size_t max_bytes) {
    const std::string problem = chatsock::check_username(name, "server", max_bytes);
    FUZZ_CHECK(problem.empty() == ref_username_ok(name, "server", max_bytes));
    if (problem.empty()) {
        FUZZ_CHECK(chatsock::is_valid_utf8(name));
        FUZZ_CHECK(name.size() <= max_bytes);
    } else {
        check_safe_text(problem);  // the server sends it, so it must not carry raw bytes back
    }
    // The default limit is 32 bytes.
    const std::string with_default = chatsock::check_username(name, "server");
    const std::size_t default_max = chatsock::detail::default_max_name_bytes;
    FUZZ_CHECK(with_default.empty() == ref_username_ok(name, "server", default_max));
    if (with_default.empty()) FUZZ_CHECK(name.size() <= 32);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t chunking = data[0];
    const std::size_t max_payload =
        (data[1] & 8) ? chatsock::detail::default_max_payload : kMaxPayloads[data[1] & 7];
    const std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
    std::string repeated;
    for (int i = 0; i < ((data[1] & 0x80) ? 8 : 1); ++i) repeated += rest;
    const std::string_view stream = repeated;

    check_framing(stream, max_payload, chunking);

    for (std::size_t i = 0; i + chatsock::header_size <= stream.size() && i < 64; ++i)
        check_header(stream.substr(i, chatsock::header_size));
    check_header(stream.substr(0, std::min<std::size_t>(stream.size(), 12)));  // wrong sizes too

    check_text(rest);

    check_name(rest.substr(0, std::min<std::size_t>(rest.size(), 40)), data[1] >> 3);
    for (const std::string& f : ref_decode(rest, 200).frames) {
        check_name(f, data[1] >> 3);
        check_text(f);
    }
    return 0;
}
