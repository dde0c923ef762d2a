// libFuzzer target for the decoders of untrusted bytes in chatsock.hpp's section 4 ("Lines and
// browsers"): detect_wire, LineDecoder, WebSocketDecoder, answer_http and
// detail::append_json_string (with detail::Outgoing, which sends it). Each reads or answers
// bytes from anyone who connects, so each is checked against an independent model or against
// the rules of its format; the chunked decoders also against themselves, fed in other chunks.
// No sockets (fuzz_server_input covers the server around them).
//
// Input layout:
//   byte 0   mode = byte0 % 5 (below); chunking = byte0 / 5 seeds the generator of chunk sizes
//            (1 .. 1 + chunking) and picks after how many lines or messages a decode() is stopped
//   byte 1   a parameter of the mode (below)
//   rest     the bytes of the mode
//
// Modes:
//   0 detect_wire on every prefix of the rest: the same answer twice; equal to the spec's rules
//     (fuzz/reference.hpp); once decided never changed by more bytes; never frames with a byte
//     other than a digit or a space among the first ten; never unknown from ten bytes on;
//     never websocket (only an upgrade makes one).
//   1 LineDecoder(max_line), byte 1: bits 0-2 max_line from kLimits, bit 3: the default, 4096.
//     One chunk, byte by byte, and chunks of generated sizes all give the lines and the error of
//     a byte-by-byte model of the spec (RefLines), and after every chunk buffered() equals the
//     model's (so at most max_line + 2, and one more for a telnet sequence under way); every
//     line is 1 .. max_line bytes, without "\n" and without the "\r" of its line end (the spec
//     drops one "\r": "a\r\r\n" is the line "a\r"); a failed decoder takes no more; on_line
//     returning false stops at once.
//   2 WebSocketDecoder(max), byte 1: bits 0-2 max from kLimits, bit 3: the default, 65536;
//     bit 7: the rest is a list of frames to encode (build_frames) rather than raw bytes.
//     One chunk, byte by byte and generated chunks all give the messages, controls and close
//     code of a model of RFC 6455 and the spec (ref_websocket), which also says after every
//     chunk what buffered() must be; messages are valid UTF-8 of at most max bytes; no
//     callback once failed; a failed decoder takes no more; returning false stops at once.
//   3 answer_http on a request: byte 1 bits 0-4 put the parts of a valid handshake (kParts)
//     before the rest, bit 6 a key made of the rest's first 24 bytes, bit 5 a blank line after.
//     Never a crash; the status is the one a small model of the spec gives (ref_http_status),
//     and the parts' own predictions hold; the response is "HTTP/1.1 ", a 3-digit status and a
//     reason, CRLF header lines of printable ASCII and a blank line; a Content-Length equal to
//     the body's size and "Connection: close", except for a 101, which has neither, no body,
//     and the RFC 6455 accept (checked against the RFC's own example for the example key).
//   4 append_json_string: valid JSON string syntax (only JSON's escapes, no raw control byte,
//     valid UTF-8), whose value is the text with each byte that starts no valid UTF-8 sequence
//     turned into U+FFFD. Then detail::Outgoing of the rest split at its first NUL (byte 1 bit
//     0: a notice): its frames are encode_message's, its line is one safe line, its WebSocket
//     frame is one unmasked text frame holding {"from":...,"text":...(,"notice":true)}.
//
// A violation calls __builtin_trap() (FUZZ_CHECK) so libFuzzer records a crash and its input.
//
// Build and run: make fuzz (see the Makefile), or by hand:
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -I. fuzz/fuzz_wire.cpp \
//       -o fuzz_wire
//   ./fuzz_wire fuzz/corpus/wire

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
using chatsock::Wire;

constexpr std::size_t kLimits[8] = {0, 1, 2, 3, 7, 16, 125, 200};
constexpr std::size_t npos = std::string::npos;

// The sizes of the chunks a stream is fed in: all at once (max_chunk 0), or 1 .. max_chunk
// bytes drawn from `rng` (always max_chunk without one).
struct Chunker {
    std::size_t max_chunk;
    Rng* rng;
    std::size_t next(std::size_t left) {
        if (max_chunk == 0) return left;
        const std::size_t n = rng ? 1 + rng->next() % max_chunk : max_chunk;
        return std::min(n, left);
    }
};

// ---- mode 0: detect_wire ------------------------------------------------------------------

void check_detect(std::string_view s) {
    Wire decided = Wire::unknown;
    for (std::size_t k = 0; k <= s.size() && k <= 3 * chatsock::header_size; ++k) {
        const std::string_view prefix = s.substr(0, k);
        const Wire w = chatsock::detect_wire(prefix);
        FUZZ_CHECK(chatsock::detect_wire(std::string(prefix)) == w);  // deterministic
        FUZZ_CHECK(w == ref_detect_wire(prefix));
        FUZZ_CHECK(w != Wire::websocket);
        if (decided != Wire::unknown) FUZZ_CHECK(w == decided);  // never changes its mind
        decided = w;
        const std::string_view first = prefix.substr(0, chatsock::header_size);
        if (first.find_first_not_of("0123456789 ") != npos) FUZZ_CHECK(w != Wire::frames);
        if (k >= chatsock::header_size) FUZZ_CHECK(w != Wire::unknown);
    }
    // Ten bytes always decide: the rest of a longer start changes nothing.
    if (s.size() > chatsock::header_size)
        FUZZ_CHECK(chatsock::detect_wire(s) == chatsock::detect_wire(s.substr(0, 10)));
}

// ---- mode 1: LineDecoder ------------------------------------------------------------------

struct LinesResult {
    std::vector<std::string> lines;
    bool failed = false;
    std::string error;
};

// Decodes the stream in chunks, each in a buffer of its own overwritten after the call (as the
// server's read buffer is), checking it against the model after every chunk.
LinesResult run_lines(std::string_view stream, std::size_t max_line, Chunker chunker) {
    chatsock::LineDecoder d(max_line);
    RefLines ref{max_line};
    LinesResult out;
    std::string chunk;
    for (std::size_t pos = 0; pos < stream.size();) {
        const std::size_t n = chunker.next(stream.size() - pos);
        chunk.assign(stream.data() + pos, n);
        const bool was_failed = d.failed();
        const std::size_t lines_before = out.lines.size();
        d.decode(chunk.data(), chunk.size(), [&](std::string_view line) {
            FUZZ_CHECK(!d.failed());
            FUZZ_CHECK(!line.empty() && line.size() <= max_line);
            FUZZ_CHECK(line.find('\n') == npos);
            // A trailing "\r" is the line's own: its line end was "\r\r\n" (the model agrees).
            out.lines.emplace_back(line);
            return true;
        });
        chunk.assign(chunk.size(), '#');
        ref.feed(stream.substr(pos, n));
        pos += n;
        FUZZ_CHECK(out.lines.size() == ref.lines.size());
        FUZZ_CHECK(d.failed() == ref.failed);
        FUZZ_CHECK(d.buffered() == ref.buffered());
        FUZZ_CHECK(d.buffered() <= max_line + 2 + (ref.telnet != RefLines::data));
        if (was_failed) FUZZ_CHECK(out.lines.size() == lines_before);  // takes no more
        if (d.failed()) {
            FUZZ_CHECK(d.error() == ref.error());
            FUZZ_CHECK(d.buffered() == 0);  // a broken stream frees its buffer
        } else {
            FUZZ_CHECK(d.error().empty());
        }
    }
    FUZZ_CHECK(out.lines == ref.lines);
    out.failed = d.failed();
    out.error = d.error();
    if (d.failed()) {  // stopped for good: a good line changes nothing
        bool called = false;
        d.decode("ok\n", 3, [&](std::string_view) { return called = true; });
        FUZZ_CHECK(!called && d.failed() && d.buffered() == 0 && d.error() == out.error);
    }
    return out;
}

// One decode() of the whole stream, stopped by on_line returning false at its `stop_after`th
// line (at the first for 0): exactly the first lines come, and nothing after.
void check_lines_stop(std::string_view stream, std::size_t max_line, std::size_t stop_after,
                      const LinesResult& want) {
    chatsock::LineDecoder d(max_line);
    std::vector<std::string> got;
    d.decode(stream.data(), stream.size(), [&](std::string_view line) {
        got.emplace_back(line);
        return got.size() < stop_after;
    });
    const std::size_t last = std::max<std::size_t>(stop_after, 1);
    FUZZ_CHECK(got.size() == std::min(last, want.lines.size()));
    FUZZ_CHECK(std::equal(got.begin(), got.end(), want.lines.begin()));
}

void check_lines(std::string_view stream, std::size_t max_line, unsigned chunking) {
    const LinesResult want = run_lines(stream, max_line, {0, nullptr});  // one chunk
    const auto same = [&](const LinesResult& got) {
        FUZZ_CHECK(got.lines == want.lines);
        FUZZ_CHECK(got.failed == want.failed && got.error == want.error);
    };
    if (stream.size() <= 2048) same(run_lines(stream, max_line, {1, nullptr}));  // byte by byte
    Rng rng{0x9E3779B9u ^ (chunking * 0x01000193u)};
    same(run_lines(stream, max_line, {1 + chunking, &rng}));
    same(run_lines(stream, max_line, {1 + (chunking & 3), &rng}));  // small chunks
    check_lines_stop(stream, max_line, chunking & 7, want);
}

// ---- mode 2: WebSocketDecoder -------------------------------------------------------------

struct WsEvent {
    bool control;     // a close, ping or pong; else a whole text message
    unsigned opcode;  // the control's
    std::string payload;
    bool operator==(const WsEvent& o) const {
        return control == o.control && opcode == o.opcode && payload == o.payload;
    }
};

// RFC 6455 (section 5) as the spec narrows it, on a whole stream, remembering where each frame
// ends so that the decoder can be checked at any point of it.
struct WsModel {
    struct Frame {
        std::size_t end;      // the offset just past it
        std::size_t events;   // events so far, this frame's included
        std::size_t message;  // bytes of an unfinished fragmented message after it
    };
    std::vector<WsEvent> events;
    std::vector<Frame> frames;
    std::size_t fail_at = npos;        // bytes after which the stream is known to be broken
    std::vector<std::uint16_t> codes;  // the close codes of the rules it breaks there
};

WsModel ref_websocket(std::string_view s, std::size_t max) {
    WsModel m;
    std::string message;
    bool in_message = false;
    for (std::size_t pos = 0; s.size() - pos >= 2;) {
        const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[pos + k]); };
        const bool fin = byte(0) & 0x80;
        const unsigned op = byte(0) & 0x0F, length7 = byte(1) & 0x7F;
        const bool control = op >= 8;
        // The first two bytes: each rule broken adds its code (any one of them may be given).
        if (byte(0) & 0x70) m.codes.push_back(1002);     // RSV1-3 and no extension (5.2)
        if (!(byte(1) & 0x80)) m.codes.push_back(1002);  // a client frame must be masked (5.1)
        if (control && (!fin || length7 > 125)) m.codes.push_back(1002);  // 5.5
        if (op == 2) m.codes.push_back(1003);  // binary data is refused (the spec)
        if ((op >= 3 && op <= 7) || op >= 11) m.codes.push_back(1002);     // reserved opcodes
        if (!control && (op == 0) != in_message) m.codes.push_back(1002);  // 5.4: fragments
        if (!m.codes.empty()) {
            m.fail_at = pos + 2;
            break;
        }
        const std::size_t extra = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
        if (s.size() - pos < 2 + extra) break;
        std::uint64_t length = extra ? 0 : length7;
        for (std::size_t k = 0; k < extra; ++k) length = length << 8 | byte(2 + k);
        if (!control && length > max - message.size()) {  // from the header: nothing buffered
            m.codes.push_back(1009);
            m.fail_at = pos + 2 + extra;
            break;
        }
        if (length > s.size() || s.size() - pos < 2 + extra + 4 + length) break;
        const std::size_t start = pos + 2 + extra + 4, end = start + length;
        std::string payload(s.substr(start, length));
        for (std::size_t k = 0; k < payload.size(); ++k)
            payload[k] = static_cast<char>(payload[k] ^ s[start - 4 + k % 4]);
        if (control) {
            m.events.push_back({true, op, payload});
        } else {
            message += payload;
            in_message = !fin;
            if (fin && !ref_valid_utf8(message)) {
                m.codes.push_back(1007);
                m.fail_at = end;
                break;
            }
            if (fin) m.events.push_back({false, 0, message}), message.clear();
        }
        m.frames.push_back({end, m.events.size(), message.size()});
        pos = end;
    }
    return m;
}

// What the model says of the decoder after `fed` bytes: failed, or how many events it gave and
// how many bytes it holds.
void expect_at(const WsModel& m, std::size_t fed, const chatsock::WebSocketDecoder& d,
               std::size_t events) {
    if (fed >= m.fail_at) {
        FUZZ_CHECK(d.failed());
        FUZZ_CHECK(std::find(m.codes.begin(), m.codes.end(), d.close_code()) != m.codes.end());
        FUZZ_CHECK(!d.error().empty());
        check_safe_text(d.error());
        if (d.close_code() == 1003) FUZZ_CHECK(d.error() == "binary messages are not accepted");
        if (d.close_code() == 1007) FUZZ_CHECK(d.error() == "a text message that is not UTF-8");
        FUZZ_CHECK(d.buffered() == 0);
        FUZZ_CHECK(events == m.events.size());
        return;
    }
    FUZZ_CHECK(!d.failed() && d.close_code() == 0 && d.error().empty());
    std::size_t i = 0;  // frames whole by now
    while (i < m.frames.size() && m.frames[i].end <= fed) ++i;
    const std::size_t taken = i ? m.frames[i - 1].end : 0;
    FUZZ_CHECK(events == (i ? m.frames[i - 1].events : 0));
    FUZZ_CHECK(d.buffered() == fed - taken + (i ? m.frames[i - 1].message : 0));
}

struct WsResult {
    std::vector<WsEvent> events;
    std::uint16_t code = 0;
    std::string error;
};

WsResult run_websocket(std::string_view stream, std::size_t max, const WsModel& model,
                       Chunker chunker) {
    chatsock::WebSocketDecoder d(max);
    WsResult out;
    std::string chunk;
    for (std::size_t pos = 0; pos < stream.size();) {
        const std::size_t n = chunker.next(stream.size() - pos);
        chunk.assign(stream.data() + pos, n);
        d.decode(
            chunk.data(), chunk.size(),
            [&](std::string_view text) {
                FUZZ_CHECK(!d.failed());
                FUZZ_CHECK(text.size() <= max && ref_valid_utf8(text));
                out.events.push_back({false, 0, std::string(text)});
                return true;
            },
            [&](chatsock::WebSocketDecoder::Opcode op, std::string_view payload) {
                FUZZ_CHECK(!d.failed());
                FUZZ_CHECK(op == chatsock::WebSocketDecoder::close ||
                           op == chatsock::WebSocketDecoder::ping ||
                           op == chatsock::WebSocketDecoder::pong);
                FUZZ_CHECK(payload.size() <= 125);
                out.events.push_back({true, static_cast<unsigned>(op), std::string(payload)});
                return true;
            });
        chunk.assign(chunk.size(), '#');
        pos += n;
        expect_at(model, pos, d, out.events.size());
        // At most a whole message and a frame's header (14 bytes), or a message so far and a
        // control frame in transit (6 + 125 bytes).
        FUZZ_CHECK(d.buffered() <= max + 6 + 125);
    }
    FUZZ_CHECK(
        std::equal(out.events.begin(), out.events.end(), model.events.begin(), model.events.end()));
    out.code = d.close_code();
    out.error = d.error();
    if (d.failed()) {  // stopped for good: a good text frame (masked, empty) changes nothing
        bool called = false;
        const auto yes = [&](auto&&...) { return called = true; };
        d.decode("\x81\x80\x01\x02\x03\x04", 6, yes, yes);
        FUZZ_CHECK(!called && d.failed() && d.buffered() == 0 && d.close_code() == out.code);
    }
    return out;
}

// One decode() of the whole stream, stopped by a callback returning false at the `stop_after`th
// event (the first for 0): exactly the first events come.
void check_websocket_stop(std::string_view stream, std::size_t max, std::size_t stop_after,
                          const WsModel& model) {
    chatsock::WebSocketDecoder d(max);
    std::size_t got = 0;
    const std::size_t last = std::max<std::size_t>(stop_after, 1);
    const auto take = [&](const WsEvent& e) {
        FUZZ_CHECK(got < model.events.size() && model.events[got] == e);
        return ++got < last;
    };
    d.decode(
        stream.data(), stream.size(),
        [&](std::string_view text) {
            return take({false, 0, std::string(text)});
        },
        [&](chatsock::WebSocketDecoder::Opcode op, std::string_view payload) {
            return take({true, static_cast<unsigned>(op), std::string(payload)});
        });
    FUZZ_CHECK(got == std::min(last, model.events.size()));
}

// Frames to feed the decoder, from records: [byte 0 as sent (FIN, RSV, opcode)] [b: bits 0-6
// the length, 126 and 127 meaning 100 + the next byte in the 16- and 64-bit forms; bit 7: sent
// unmasked] [the payload, masked here with a key drawn from the record's number].
std::string build_frames(std::string_view spec) {
    std::string out;
    std::size_t i = 0;
    for (unsigned frame = 0; i + 2 <= spec.size(); ++frame) {
        const unsigned char b0 = static_cast<unsigned char>(spec[i]);
        const unsigned char b = static_cast<unsigned char>(spec[i + 1]);
        i += 2;
        const unsigned length7 = b & 0x7F;
        std::size_t length = length7;
        if (length7 >= 126)
            length = 100 + (i < spec.size() ? static_cast<unsigned char>(spec[i++]) : 0);
        const bool masked = !(b & 0x80);
        out += static_cast<char>(b0);
        out += static_cast<char>((masked ? 0x80 : 0) | length7);
        for (int k = (length7 == 126 ? 2 : length7 == 127 ? 8 : 0) - 1; k >= 0; --k)
            out += static_cast<char>(static_cast<std::uint64_t>(length) >> (8 * k));
        const char key[4] = {static_cast<char>(0x5A + frame), static_cast<char>(0xC3 ^ frame),
                             static_cast<char>(frame * 37), '\x7E'};
        if (masked) out.append(key, 4);
        const std::string_view payload = spec.substr(i, std::min(length, spec.size() - i));
        for (std::size_t k = 0; k < payload.size(); ++k)
            out += masked ? static_cast<char>(payload[k] ^ key[k % 4]) : payload[k];
        i += payload.size();
    }
    return out;
}

void check_websocket(std::string_view stream, std::size_t max, unsigned chunking) {
    const WsModel model = ref_websocket(stream, max);
    const WsResult want = run_websocket(stream, max, model, {0, nullptr});
    const auto same = [&](const WsResult& got) {
        FUZZ_CHECK(got.events == want.events);
        FUZZ_CHECK(got.code == want.code && got.error == want.error);
    };
    if (stream.size() <= 2048) same(run_websocket(stream, max, model, {1, nullptr}));
    Rng rng{0x85EBCA6Bu ^ (chunking * 0x01000193u)};
    same(run_websocket(stream, max, model, {1 + chunking, &rng}));
    same(run_websocket(stream, max, model, {1 + (chunking & 3), &rng}));
    check_websocket_stop(stream, max, chunking & 7, model);
}

// ---- mode 3: answer_http ------------------------------------------------------------------

// The parts of a valid handshake that byte 1 puts before the rest (bits 0-4), and the RFC 6455
// example key (section 1.3) with its accept. The status of every request is also checked
// against ref_http_status; the parts make the statuses past the request line easy to reach.
constexpr const char* kParts[5] = {"GET / HTTP/1.1\r\n", "Upgrade: websocket\r\n",
                                   "Connection: Upgrade\r\n", "Sec-WebSocket-Version: 13\r\n",
                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"};
constexpr std::string_view kAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

bool contains_ci(std::string_view haystack, std::string_view lower_needle) {
    return chatsock::detail::ascii_lower(haystack).find(lower_needle) != npos;
}

// The headers of a response, one "Name: value" per line, or false if the syntax is broken.
bool split_response(std::string_view r, int& status, std::vector<std::string_view>& headers,
                    std::string_view& body) {
    if (r.substr(0, 9) != "HTTP/1.1 " || r.size() < 13) return false;
    for (std::size_t k = 9; k < 12; ++k)
        if (r[k] < '0' || r[k] > '9') return false;
    if (r[12] != ' ') return false;
    status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
    const std::size_t head_end = r.find("\r\n\r\n");
    if (head_end == npos) return false;
    const std::string_view head = r.substr(0, head_end + 2);
    body = r.substr(head_end + 4);
    std::size_t at = head.find("\r\n") + 2;  // past the status line
    for (std::size_t k = 0; k + 2 < at; ++k)
        if (head[k] < 0x20 || head[k] > 0x7E) return false;  // its reason: printable ASCII
    while (at < head.size()) {
        const std::size_t end = head.find("\r\n", at);
        const std::string_view line = head.substr(at, end - at);
        for (char c : line)
            if (c < 0x20 || c > 0x7E) return false;  // no bare CR or LF, nothing raw
        const std::size_t colon = line.find(": ");
        if (colon == npos || colon == 0) return false;
        headers.push_back(line);
        at = end + 2;
    }
    return true;
}

std::string_view header(const std::vector<std::string_view>& headers, std::string_view name,
                        int* count = nullptr) {
    std::string_view value;
    int n = 0;
    for (std::string_view h : headers)
        if (h.substr(0, name.size()) == name && h.substr(name.size(), 2) == ": ") {
            if (n++ == 0) value = h.substr(name.size() + 2);
        }
    if (count) *count = n;
    return value;
}

// The first header of that name (any case) in the lines after the request line, without the
// blanks around it; "" when there is none.
std::string_view ref_header(std::string_view request, std::string_view lower_name) {
    std::size_t at = request.find('\n');
    while (at != npos) {
        const std::size_t end = request.find('\n', at + 1);
        std::string_view line = request.substr(at + 1, end == npos ? npos : end - at - 1);
        at = end;
        const std::size_t colon = line.find(':');
        if (colon == npos || chatsock::detail::ascii_lower(line.substr(0, colon)) != lower_name)
            continue;
        line.remove_prefix(colon + 1);
        const std::size_t first = line.find_first_not_of(" \t");
        if (first == npos) return {};
        line.remove_prefix(first);
        return line.substr(0, line.find_last_not_of(" \t\r") + 1);
    }
    return {};
}

// Whether a header value lists `lower_token` as one of its words (split at commas and blanks).
bool ref_has_token(std::string_view value, std::string_view lower_token) {
    const std::string lower = chatsock::detail::ascii_lower(value);
    for (std::size_t at = 0; at <= lower.size();) {
        const std::size_t end = std::min(lower.find_first_of(", \t", at), lower.size());
        if (std::string_view(lower).substr(at, end - at) == lower_token) return true;
        at = end + 1;
    }
    return false;
}

// The status the spec gives a request: its line is "METHOD SP path SP HTTP/1.x" (400); only GET
// (405) of "/" or "/index.html" (404); the page (200) unless it asks for an upgrade to
// websocket, which needs version 13 (426), a key of 16 bytes in base64 and "Connection:
// Upgrade" (400), then 101.
int ref_http_status(std::string_view request) {
    const std::string_view line = request.substr(0, request.find_first_of("\r\n"));
    const std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == npos || sp2 == sp1 || line.substr(sp2 + 1, 7) != "HTTP/1.") return 400;
    if (line.substr(0, sp1) != "GET") return 405;
    const std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (path != "/" && path != "/index.html") return 404;
    if (!ref_has_token(ref_header(request, "upgrade"), "websocket")) return 200;
    if (ref_header(request, "sec-websocket-version") != "13") return 426;
    const std::string_view key = ref_header(request, "sec-websocket-key");
    static const std::string_view alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bool key_ok = key.size() == 24 && key.substr(22) == "==";
    for (std::size_t k = 0; key_ok && k < 22; ++k) key_ok = alphabet.find(key[k]) != npos;
    if (!key_ok || !ref_has_token(ref_header(request, "connection"), "upgrade")) return 400;
    return 101;
}

void check_http(unsigned parts, std::string_view rest) {
    std::string request;
    for (int k = 0; k < 5; ++k)
        if (parts & (1u << k)) request += kParts[k];
    if (parts & 64) {  // a key of the fuzzer's: the rest's first 24 bytes
        request.append("Sec-WebSocket-Key: ").append(rest.substr(0, 24)).append("\r\n");
        rest.remove_prefix(std::min<std::size_t>(24, rest.size()));
    }
    request.append(rest.data(), rest.size());
    if (parts & 32) request += "\r\n";  // the blank line that ends it
    const std::string_view page = chatsock::detail::chat_page;
    const chatsock::detail::HttpAnswer answer = chatsock::detail::answer_http(request, page);

    int status = 0;
    std::vector<std::string_view> headers;
    std::string_view body;
    FUZZ_CHECK(split_response(answer.response, status, headers, body));
    FUZZ_CHECK((status == 101) == answer.upgrade);
    FUZZ_CHECK(status == ref_http_status(request));
    int lengths = 0;
    const std::string_view length = header(headers, "Content-Length", &lengths);
    if (status == 101) {
        FUZZ_CHECK(body.empty() && lengths == 0);
        FUZZ_CHECK(header(headers, "Upgrade") == "websocket");
        FUZZ_CHECK(header(headers, "Connection") == "Upgrade");
        const std::string_view accept = header(headers, "Sec-WebSocket-Accept");
        FUZZ_CHECK(accept.size() == 28 && accept.back() == '=');
    } else {
        FUZZ_CHECK(lengths == 1 && length == std::to_string(body.size()));
        FUZZ_CHECK(header(headers, "Connection") == "close");
        FUZZ_CHECK(status == 200 || status == 400 || status == 404 || status == 405 ||
                   status == 426);
        const std::string status_line = answer.response.substr(9, answer.response.find('\r') - 9);
        if (status == 200) FUZZ_CHECK(body == page);
        else FUZZ_CHECK(body == status_line + "\n");  // one line: "404 Not Found"
        if (status == 405) FUZZ_CHECK(header(headers, "Allow") == "GET");
        if (status == 426) FUZZ_CHECK(header(headers, "Sec-WebSocket-Version") == "13");
    }

    // With the request line given, what the parts decide (the first of a header counts, so the
    // rest cannot undo a part; a part left out is only missing if the rest has no such header).
    if (!(parts & 1)) return;
    const bool all = (parts & 31) == 31;
    if (all) FUZZ_CHECK(status == 101 && header(headers, "Sec-WebSocket-Accept") == kAccept);
    if (!(parts & 2) && !contains_ci(rest, "upgrade")) FUZZ_CHECK(status == 200);
    if ((parts & 2) && !(parts & 8) && !contains_ci(rest, "sec-websocket-version"))
        FUZZ_CHECK(status == 426);
    if ((parts & 10) == 10 && !(parts & 80) && !contains_ci(rest, "sec-websocket-key"))
        FUZZ_CHECK(status == 400);
    if ((parts & 26) == 26 && !(parts & 4) && !contains_ci(rest, "connection"))
        FUZZ_CHECK(status == 400);
}

// ---- mode 4: JSON strings and Outgoing ----------------------------------------------------

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool read_hex4(std::string_view s, std::size_t at, std::uint32_t& v) {
    if (s.size() < at + 4) return false;
    v = 0;
    for (std::size_t k = 0; k < 4; ++k) {
        const int h = hex_value(s[at + k]);
        if (h < 0) return false;
        v = v * 16 + static_cast<std::uint32_t>(h);
    }
    return true;
}

// One JSON string (RFC 8259 section 7) at s[i]: i moves past it and `value` gets what it says.
// False for anything JSON does not allow: a raw byte under 0x20, an unknown escape, a lone
// surrogate, a missing quote. (UTF-8 validity is checked on the whole text.)
bool parse_json_string(std::string_view s, std::size_t& i, std::string& value) {
    value.clear();
    if (i >= s.size() || s[i++] != '"') return false;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i++]);
        if (c == '"') return true;
        if (c < 0x20) return false;
        if (c != '\\') {
            value += static_cast<char>(c);
            continue;
        }
        if (i == s.size()) return false;
        switch (s[i++]) {
        case '"': value += '"'; break;
        case '\\': value += '\\'; break;
        case '/': value += '/'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'n': value += '\n'; break;
        case 'r': value += '\r'; break;
        case 't': value += '\t'; break;
        case 'u': {
            std::uint32_t cp = 0, low = 0;
            if (!read_hex4(s, i, cp)) return false;
            i += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s.substr(i, 2) != "\\u" || !read_hex4(s, i + 2, low)) return false;
                if (low < 0xDC00 || low > 0xDFFF) return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                i += 6;
            }
            put_utf8(value, cp);
            break;
        }
        default: return false;
        }
    }
    return false;
}

// The text with every byte that does not start a well-formed UTF-8 sequence (Unicode table 3-7)
// replaced by U+FFFD, the sequences kept as they are.
std::string ref_replace_invalid(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
        const unsigned char b = static_cast<unsigned char>(s[i]);
        const std::size_t n = b < 0x80 ? 1 : b < 0xC2 ? 0 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        if (n && i + n <= s.size() && ref_valid_utf8(s.substr(i, n))) {
            out.append(s.data() + i, n);
            i += n;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

void check_json_string(std::string_view s) {
    std::string out = "x";  // it appends, and touches nothing before
    chatsock::detail::append_json_string(out, s);
    FUZZ_CHECK(out[0] == 'x');
    const std::string_view json = std::string_view(out).substr(1);
    FUZZ_CHECK(ref_valid_utf8(json));
    std::size_t i = 0;
    std::string value;
    FUZZ_CHECK(parse_json_string(json, i, value));
    FUZZ_CHECK(i == json.size());
    FUZZ_CHECK(value == ref_replace_invalid(s));
}

// The server's frame of an Outgoing: final, unmasked, text, with the shortest length form.
bool parse_server_frame(std::string_view f, std::string_view& payload) {
    if (f.size() < 2 || static_cast<unsigned char>(f[0]) != 0x81) return false;
    const unsigned length7 = static_cast<unsigned char>(f[1]);  // the mask bit must be clear
    if (length7 > 127) return false;
    const std::size_t extra = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
    if (f.size() < 2 + extra) return false;
    std::uint64_t length = extra ? 0 : length7;
    for (std::size_t k = 0; k < extra; ++k)
        length = length << 8 | static_cast<unsigned char>(f[2 + k]);
    if ((extra == 2 && length < 126) || (extra == 8 && length <= 0xFFFF)) return false;
    if (f.size() - 2 - extra != length) return false;
    payload = f.substr(2 + extra);
    return true;
}

void check_outgoing(std::string_view from, std::string_view text, bool notice) {
    chatsock::detail::Outgoing event(from, text, notice);
    const chatsock::SharedBytes& frames = event.as(Wire::frames);
    FUZZ_CHECK(*frames == *chatsock::encode_message(from, text));
    FUZZ_CHECK(event.as(Wire::frames).get() == frames.get());  // encoded once

    const std::string line = *event.as(Wire::lines);
    FUZZ_CHECK(line.size() >= 2 && line.substr(line.size() - 2) == "\r\n");
    const std::string_view shown = std::string_view(line).substr(0, line.size() - 2);
    check_safe_text(shown);  // one line, nothing a terminal would obey
    const std::string lead = notice ? "* " : chatsock::printable(from) + ": ";
    FUZZ_CHECK(shown == lead + chatsock::printable(text));

    const chatsock::SharedBytes& ws = event.as(Wire::websocket);
    FUZZ_CHECK(event.as(Wire::websocket).get() == ws.get());
    std::string_view json;
    FUZZ_CHECK(parse_server_frame(*ws, json));
    FUZZ_CHECK(ref_valid_utf8(json));
    std::size_t i = 0;
    std::string value;
    FUZZ_CHECK(json.substr(0, 8) == "{\"from\":");
    i = 8;
    FUZZ_CHECK(parse_json_string(json, i, value) && value == ref_replace_invalid(from));
    FUZZ_CHECK(json.substr(i, 8) == ",\"text\":");
    i += 8;
    FUZZ_CHECK(parse_json_string(json, i, value) && value == ref_replace_invalid(text));
    FUZZ_CHECK(json.substr(i) == (notice ? ",\"notice\":true}" : "}"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const unsigned mode = data[0] % 5, chunking = data[0] / 5u;
    const std::uint8_t param = data[1];
    const std::string_view rest(reinterpret_cast<const char*>(data) + 2, size - 2);
    switch (mode) {
    case 0: check_detect(rest); break;
    case 1: check_lines(rest, (param & 8) ? 4096 : kLimits[param & 7], chunking); break;
    case 2: {
        const std::size_t max =
            (param & 8) ? chatsock::detail::default_max_payload : kLimits[param & 7];
        check_websocket((param & 0x80) ? build_frames(rest) : std::string(rest), max, chunking);
        break;
    }
    case 3: check_http(param & 127, rest); break;
    default: {
        check_json_string(rest);
        const std::size_t nul = std::min(rest.find('\0'), rest.size());
        check_outgoing(rest.substr(0, nul), rest.substr(std::min(nul + 1, rest.size())), param & 1);
    }
    }
    return 0;
}
