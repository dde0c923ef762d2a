// Lines and browsers (issue 11): how a connection's first bytes pick its wire, the line decoder
// (nc, telnet), the WebSocket decoder, the handshake's SHA-1 and base64, the HTTP answers, the
// JSON and line forms of chat events, and the server serving all three kinds of client at once.
#include "chatsock.hpp"
#include "support.hpp"
#include "fuzz/reference.hpp"  // put_utf8, shared with the fuzz targets

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

using namespace std::string_literals;
using chatsock::milliseconds;
using chatsock::Wire;
using cst::ChatUser;
using cst::Clock;
using Ws = chatsock::WebSocketDecoder;

namespace {

// ---- detection -----------------------------------------------------------------------------

std::string wire_name(Wire w) {
    switch (w) {
    case Wire::unknown: return "unknown";
    case Wire::frames: return "frames";
    case Wire::lines: return "lines";
    case Wire::http: return "http";
    case Wire::websocket: return "websocket";
    }
    return "?";
}
std::string detect(std::string_view start) { return wire_name(chatsock::detect_wire(start)); }

// What the server decides for a stream that arrives cut at `cuts`: it keeps the first bytes, at
// most 10, and asks detect_wire after each read until the answer is not unknown. `after` is how
// many bytes it had then.
struct Detection {
    std::string wire;
    std::size_t after = 0;
};
Detection detect_fed(std::string_view stream, std::vector<std::size_t> cuts) {
    std::string first;
    std::size_t pos = 0;
    cuts.push_back(stream.size());
    for (std::size_t cut : cuts) {
        const std::string_view chunk = stream.substr(pos, cut - pos);
        pos = cut;
        first.append(chunk.substr(0, chatsock::header_size - first.size()));
        const Wire w = chatsock::detect_wire(first);
        if (w != Wire::unknown) return {wire_name(w), first.size()};
    }
    return {"unknown", first.size()};
}
// One byte per read: the decision comes after exactly as many bytes as detection needed.
Detection detect_bytewise(std::string_view stream) {
    std::vector<std::size_t> cuts;
    for (std::size_t k = 1; k < stream.size(); ++k) cuts.push_back(k);
    return detect_fed(stream, cuts);
}

struct Start {
    std::string stream;
    std::size_t after;  // the fewest bytes that decide it
};

// Checks that a stream is detected as `wire` however it is cut, and after exactly the bytes it
// needs: every prefix shorter than that is unknown, every longer one gives the same answer.
void check_detection(const Start& s, const std::string& wire) {
    CAPTURE(s.stream);
    const Detection bytewise = detect_bytewise(s.stream);
    CHECK(bytewise.wire == wire);
    CHECK(bytewise.after == s.after);
    for (std::size_t k = 0; k <= s.stream.size(); ++k) {
        CAPTURE(k);
        const std::string_view prefix = std::string_view(s.stream).substr(0, k);
        if (k < s.after) CHECK(detect(prefix) == "unknown");
        else CHECK(detect(prefix) == wire);
        CHECK(detect_fed(s.stream, {k}).wire == wire);
        for (std::size_t j = k + 1; j < std::min<std::size_t>(s.stream.size(), 12); ++j)
            CHECK(detect_fed(s.stream, {k, j}).wire == wire);
    }
}

// ---- lines -----------------------------------------------------------------------------------

// Feeds `stream` cut at `cuts`, each chunk from a buffer of its own that is overwritten after
// the call (as the server's read buffer is): a view kept past its call would show junk.
std::vector<std::string> decode_lines(chatsock::LineDecoder& d, std::string_view stream,
                                      std::vector<std::size_t> cuts = {}) {
    std::vector<std::string> got;
    std::string buffer;
    std::size_t pos = 0;
    cuts.push_back(stream.size());
    for (std::size_t cut : cuts) {
        buffer.assign(stream.substr(pos, cut - pos));
        pos = cut;
        d.decode(buffer.data(), buffer.size(), [&](std::string_view line) {
            got.emplace_back(line);
            return true;
        });
        buffer.assign(buffer.size(), '#');
    }
    return got;
}
std::vector<std::string> lines_of(std::string_view stream, std::size_t max_line = 4096) {
    chatsock::LineDecoder d(max_line);
    auto lines = decode_lines(d, stream);
    CHECK_FALSE(d.failed());
    return lines;
}
using Lines = std::vector<std::string>;

// Telnet (RFC 854): IAC and the commands that follow it.
const std::string IAC = "\xff", SB = "\xfa", SE = "\xf0", WILL = "\xfb", WONT = "\xfc", DO = "\xfd",
                  DONT = "\xfe", NOP = "\xf1", AYT = "\xf6";

// ---- WebSocket frames as a browser sends them ------------------------------------------------

constexpr unsigned char mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};  // RFC 6455's examples use it

struct FrameShape {
    bool fin = true;
    bool masked = true;
    unsigned rsv = 0;  // the three reserved bits, 0 to 7
};
// The bytes of a frame header announcing `length` (7, 16 or 64 bits, the shortest that fits).
std::string client_header(unsigned opcode, std::uint64_t length, FrameShape shape = {}) {
    std::string out;
    out += static_cast<char>((shape.fin ? 0x80 : 0) | (shape.rsv << 4) | opcode);
    const std::uint64_t mask_bit = shape.masked ? 0x80 : 0;
    const int extra = length < 126 ? 0 : length <= 0xFFFF ? 2 : 8;
    out += static_cast<char>(mask_bit | (extra == 0 ? length : extra == 2 ? 126 : 127));
    for (int k = extra - 1; k >= 0; --k) out += static_cast<char>(length >> (8 * k));
    return out;
}
// A whole client frame: header, mask key (when masked), payload masked with it.
std::string client_frame(unsigned opcode, std::string_view payload, FrameShape shape = {}) {
    std::string out = client_header(opcode, payload.size(), shape);
    if (!shape.masked) return out.append(payload.data(), payload.size());
    out.append(reinterpret_cast<const char*>(mask_key), 4);
    for (std::size_t k = 0; k < payload.size(); ++k)
        out += static_cast<char>(payload[k] ^ static_cast<char>(mask_key[k % 4]));
    return out;
}
std::string text_frame(std::string_view text, bool fin = true) {
    return client_frame(Ws::text, text, {fin});
}
std::string more_frame(std::string_view text, bool fin) {
    return client_frame(Ws::continuation, text, {fin});
}
std::string close_payload(std::uint16_t code, std::string_view reason = {}) {
    return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)} +
           std::string(reason);
}

// What a decoder reported, in order: "message <text>", "ping <payload>", "pong ...", "close ...".
std::vector<std::string> decode_ws(Ws& d, std::string_view stream,
                                   std::vector<std::size_t> cuts = {}) {
    std::vector<std::string> got;
    std::string buffer;
    std::size_t pos = 0;
    cuts.push_back(stream.size());
    for (std::size_t cut : cuts) {
        buffer.assign(stream.substr(pos, cut - pos));
        pos = cut;
        d.decode(
            buffer.data(), buffer.size(),
            [&](std::string_view text) {
                got.push_back("message " + std::string(text));
                return true;
            },
            [&](Ws::Opcode op, std::string_view payload) {
                const char* name = op == Ws::ping ? "ping " : op == Ws::pong ? "pong " : "close ";
                got.push_back(name + std::string(payload));
                return true;
            });
        buffer.assign(buffer.size(), '#');
    }
    return got;
}
using Events = std::vector<std::string>;

// A decoder fed `stream` whole; checks it failed with this close code and reason.
void check_ws_error(const std::string& stream, std::uint16_t code, const std::string& error,
                    std::size_t max_message = 65536) {
    Ws d(max_message);
    decode_ws(d, stream);
    CHECK(d.failed());
    CHECK(d.close_code() == code);
    CHECK(d.error() == error);
    CHECK(d.buffered() == 0);  // nothing kept of a connection that is over
}

// ---- bytes, hex, HTTP ------------------------------------------------------------------------

std::string hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}
std::string from_hex(std::string_view h) {
    std::string out;
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        out += static_cast<char>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16));
    return out;
}

// An HTTP response taken apart: status line, headers (names in lower case), body.
struct Response {
    std::string status;
    std::map<std::string, std::string> headers;
    std::string body;
    bool well_formed = false;  // a blank line ends the head, every header has a colon
};
Response parse_response(const std::string& text) {
    Response r;
    const std::size_t head_end = text.find("\r\n\r\n");
    if (head_end == std::string::npos) return r;
    r.body = text.substr(head_end + 4);
    std::size_t at = text.find("\r\n");
    r.status = text.substr(0, at);
    r.well_formed = true;
    while (at < head_end) {
        const std::size_t next = text.find("\r\n", at + 2);
        const std::string line = text.substr(at + 2, next - at - 2);
        at = next;
        const std::size_t colon = line.find(": ");
        if (colon == std::string::npos) {
            r.well_formed = false;
            continue;
        }
        r.headers[chatsock::detail::ascii_lower(line.substr(0, colon))] = line.substr(colon + 2);
    }
    return r;
}
// An answer to a request that is not an upgrade: the connection closes after it, and its
// Content-Length is its body's size.
Response answer(const std::string& request, std::string_view page = "<p>the page</p>") {
    const chatsock::detail::HttpAnswer a = chatsock::detail::answer_http(request, page);
    CAPTURE(request);
    CHECK_FALSE(a.upgrade);
    Response r = parse_response(a.response);
    CHECK(r.well_formed);
    CHECK(r.headers["connection"] == "close");
    CHECK(r.headers.count("content-length") == 1);
    if (r.headers.count("content-length"))
        CHECK(r.headers.at("content-length") == std::to_string(r.body.size()));
    return r;
}
// The RFC 6455 section 1.3 handshake, with `headers` in place of the usual ones when given.
const std::string rfc_key = "dGhlIHNhbXBsZSBub25jZQ==";
const std::string rfc_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
std::string upgrade_request(const std::string& headers = {}) {
    if (!headers.empty()) return "GET / HTTP/1.1\r\nHost: chat\r\n" + headers + "\r\n";
    return "GET / HTTP/1.1\r\nHost: chat\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: " +
           rfc_key + "\r\nSec-WebSocket-Version: 13\r\n\r\n";
}

// ---- JSON ------------------------------------------------------------------------------------

// Reads back one JSON string literal (RFC 8259) as a browser's JSON.parse would; "<not JSON>"
// if it is not exactly one (unescaped quote or control character, bad escape, trailing bytes).
std::string json_unquote(std::string_view j) {
    const std::string bad = "<not JSON>";
    if (j.size() < 2 || j.front() != '"' || j.back() != '"') return bad;
    std::string out;
    for (std::size_t i = 1; i + 1 < j.size(); ++i) {
        const auto c = static_cast<unsigned char>(j[i]);
        if (c < 0x20 || c == '"') return bad;
        if (c != '\\') {
            out += static_cast<char>(c);
            continue;
        }
        if (++i + 1 >= j.size()) return bad;
        const char e = j[i];
        const std::string simple = "\"\\/bfnrt", meaning = "\"\\/\b\f\n\r\t";
        if (simple.find(e) != std::string::npos) {
            out += meaning[simple.find(e)];
            continue;
        }
        if (e != 'u' || i + 5 > j.size() - 1) return bad;
        const std::string digits(j.substr(i + 1, 4));
        if (digits.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) return bad;
        char32_t cp = static_cast<char32_t>(std::stoul(digits, nullptr, 16));
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && j.substr(i + 1, 2) == "\\u") {  // a surrogate pair
            const char32_t low =
                static_cast<char32_t>(std::stoul(std::string(j.substr(i + 3, 4)), nullptr, 16));
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            i += 6;
        }
        fuzzref::put_utf8(out, cp);
    }
    return out;
}
std::string json(std::string_view s) {
    std::string out;
    chatsock::detail::append_json_string(out, s);
    return out;
}

// ---- a raw socket for line clients and browsers ----------------------------------------------

// Sends bytes as given and keeps every byte it receives: nc or telnet, or a browser whose
// WebSocket handshake and frames the test writes by hand.
class BytePeer {
public:
    void connect(std::uint16_t port) {
        std::error_code ec;
        socket_ = chatsock::connect_tcp("127.0.0.1", port, cst::default_limit, ec);
        INFO("connect_tcp: ", ec.message());
        REQUIRE_FALSE(ec);
    }
    bool send(std::string_view bytes) {
        const auto deadline = Clock::now() + cst::default_limit;
        while (!bytes.empty()) {
            std::error_code ec;
            const std::size_t n =
                chatsock::send_some(socket_.get(), bytes.data(), bytes.size(), ec);
            if (ec && !chatsock::detail::would_block(ec)) return false;
            if (ec && Clock::now() >= deadline) return false;
            if (ec) cst::sleep_ms(1);
            else bytes.remove_prefix(n);
        }
        return true;
    }
    void read_available() {
        char buf[65536];
        while (socket_.valid() && !ended_) {
            std::error_code ec;
            const std::size_t n = chatsock::recv_some(socket_.get(), buf, sizeof buf, ec);
            if (ec && chatsock::detail::would_block(ec)) return;
            if (ec || n == 0) ended_ = true;
            else received.append(buf, n);
        }
    }
    bool ended() const { return ended_; }  // end-of-stream or a reset
    bool got(std::string_view bytes) const { return received.find(bytes) != std::string::npos; }
    void close() { socket_.close(); }

    std::string received;

private:
    chatsock::Socket socket_;
    bool ended_ = false;
};
void step(BytePeer& p) { p.read_available(); }  // found by cst::pump (argument-dependent lookup)

// One frame from the server: its opcode and payload; `masked` and `fin` as it came.
struct ServerFrame {
    unsigned opcode = 0;
    std::string payload;
    bool fin = false, masked = false;
};
// The whole server frames in `bytes` (a partial last one is left out).
std::vector<ServerFrame> server_frames(std::string_view bytes) {
    std::vector<ServerFrame> frames;
    while (bytes.size() >= 2) {
        const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
        ServerFrame f;
        f.fin = byte(0) & 0x80;
        f.opcode = byte(0) & 0x0F;
        f.masked = byte(1) & 0x80;
        const std::size_t extra = (byte(1) & 0x7F) == 126 ? 2 : (byte(1) & 0x7F) == 127 ? 8 : 0;
        if (bytes.size() < 2 + extra) break;
        std::uint64_t length = extra ? 0 : byte(1) & 0x7F;
        for (std::size_t k = 0; k < extra; ++k) length = length << 8 | byte(2 + k);
        const std::size_t start = 2 + extra + (f.masked ? 4 : 0);
        if (bytes.size() < start + length) break;
        f.payload.assign(bytes.substr(start, static_cast<std::size_t>(length)));
        frames.push_back(std::move(f));
        bytes.remove_prefix(start + static_cast<std::size_t>(length));
    }
    return frames;
}

// A browser over a raw socket: the handshake by hand, then masked frames out, frames in.
struct Browser : BytePeer {
    // Sends the RFC's handshake (and `then`, in the same write) and waits for the response.
    void handshake(chatsock::Server& server, std::uint16_t port, const std::string& then = {}) {
        connect(port);
        REQUIRE(send(upgrade_request() + then));
        REQUIRE(cst::pump(
            server, [&] { return got("\r\n\r\n") || ended(); }, *this));
        Response r = parse_response(head());
        REQUIRE(r.status == "HTTP/1.1 101 Switching Protocols");
        CHECK(r.headers["sec-websocket-accept"] == rfc_accept);
    }
    std::string head() const { return received.substr(0, received.find("\r\n\r\n") + 4); }
    std::vector<ServerFrame> frames() const {
        return server_frames(std::string_view(received).substr(head().size()));
    }
    // The payloads of the text frames so far.
    std::vector<std::string> texts() const {
        std::vector<std::string> out;
        for (const auto& f : frames())
            if (f.opcode == Ws::text) out.push_back(f.payload);
        return out;
    }
    bool got_text(const std::string& text) const {
        const auto t = texts();
        return std::find(t.begin(), t.end(), text) != t.end();
    }
    bool got_frame(unsigned opcode, const std::string& payload) const {
        for (const auto& f : frames())
            if (f.opcode == opcode && f.payload == payload) return true;
        return false;
    }
};
void step(Browser& p) { p.read_available(); }

std::string notice_json(const std::string& text) {
    return "{\"from\":\"server\",\"text\":" + json(text) + ",\"notice\":true}";
}
std::string message_json(const std::string& from, const std::string& text) {
    return "{\"from\":" + json(from) + ",\"text\":" + json(text) + "}";
}

// The wire each user had in on_join, by name. Declare it after the server it watches.
struct JoinedWires : std::map<std::string, std::string> {
    explicit JoinedWires(chatsock::Server& server) {
        server.on_join = [this](const chatsock::ClientInfo& c) {
            (*this)[c.name] = wire_name(c.wire);
        };
    }
};

}  // namespace

TEST_SUITE("web") {
    // ---- detect_wire ---------------------------------------------------------------------------

    TEST_CASE("detect_wire: an HTTP method and a space is a browser, any of the nine") {
        for (const char* method : {"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ",
                                   "PATCH ", "CONNECT ", "TRACE "}) {
            CAPTURE(method);
            CHECK(detect(method) == "http");
            CHECK(detect(method + "/ HTTP/1.1\r\n"s) == "http");
        }
        // Methods are case-sensitive, and the space is part of the rule.
        CHECK(detect("get / HTTP/1.1") == "lines");
        CHECK(detect("GET/") == "lines");
        CHECK(detect("GET\n") == "lines");
        CHECK(detect(" GET ") == "lines");
    }

    TEST_CASE("detect_wire: a proper prefix of a method waits, one byte past it decides lines") {
        for (const char* prefix :
             {"",        "G",   "GE",    "GET", "H",       "HE", "HEA",   "HEAD",   "P",
              "PO",      "POS", "POST",  "PU",  "PUT",     "D",  "DELET", "DELETE", "O",
              "OPTIONS", "PA",  "PATCH", "C",   "CONNECT", "T",  "TRACE"}) {
            CAPTURE(prefix);
            CHECK(detect(prefix) == "unknown");
        }
        CHECK(detect("GEX") == "lines");
        CHECK(detect("GETX") == "lines");
        CHECK(detect("HEADS UP") == "lines");
        CHECK(detect("POSTMAN\n") == "lines");
        CHECK(detect("PX") == "lines");  // no method begins "PX", though "P" waited
        CHECK(detect("CONNECTED") == "lines");
    }

    TEST_CASE("detect_wire: ten bytes of digits and spaces are a frame header, good or bad") {
        CHECK(detect("5         hello") == "frames");
        CHECK(detect("5         ") == "frames");
        CHECK(detect("1234567890") == "frames");  // the documented ambiguity: a frame header
        CHECK(detect("12345678901") == "frames");
        CHECK(detect("  12      ") == "frames");
        CHECK(detect("1 2       ") == "frames");  // a bad header: the frame decoder refuses it
        CHECK(detect("          ") == "frames");
        // Fewer than ten: more may come.
        CHECK(detect("5") == "unknown");
        CHECK(detect("5        ") == "unknown");
        CHECK(detect("123456789") == "unknown");
        CHECK(detect(" ") == "unknown");
    }

    TEST_CASE("detect_wire: any other byte in the first ten makes a line client") {
        CHECK(detect("alice\n") == "lines");
        CHECK(detect("a") == "lines");
        CHECK(detect("42\n") == "lines");  // the newline is not a digit
        CHECK(detect("bob the builder\n") == "lines");
        CHECK(detect("\n") == "lines");
        CHECK(detect("\r\n") == "lines");
        CHECK(detect("123456789\n") == "lines");  // the tenth byte still counts
        CHECK(detect("12345678x9") == "lines");
        CHECK(detect("5\t        ") == "lines");  // a tab is not a space
        CHECK(detect("-1        ") == "lines");
        CHECK(detect("\xff\xfb\x01") == "lines");  // telnet's negotiation comes first
        CHECK(detect("\0"s) == "lines");
        // Past the tenth byte nothing counts: the header is decided.
        CHECK(detect("1234567890x") == "frames");
    }

    TEST_CASE("detect_wire decides as soon as it can: after exactly the bytes it needs") {
        const std::vector<std::pair<Start, std::string>> cases = {
            {{"a", 1}, "lines"},
            {{"alice\n", 1}, "lines"},
            {{"42\n", 3}, "lines"},
            {{"  7 x", 5}, "lines"},
            {{"GEORGE\n", 3}, "lines"},
            {{"HEADS UP\n", 5}, "lines"},
            {{"OPTIONSX", 8}, "lines"},
            {{"123456789\n", 10}, "lines"},
            {{"1234567890", 10}, "frames"},
            {{"1 2       x", 10}, "frames"},
            {{"GET / HTTP/1.1\r\n\r\n", 4}, "http"},
            {{"HEAD / HTTP/1.1\r\n\r\n", 5}, "http"},
            {{"DELETE /", 7}, "http"},
            {{"OPTIONS * HTTP/1.1\r\n\r\n", 8}, "http"},
            {{"CONNECT x:1 HTTP/1.1\r\n\r\n", 8}, "http"},
        };
        for (const auto& [start, wire] : cases) check_detection(start, wire);
    }

    TEST_CASE("detect_wire: framed streams are frames, however the first reads are cut") {
        // Names and messages as frame clients send them, back to back.
        const std::vector<std::vector<std::string>> conversations = {
            {"alice", "hello"},       {"bob the builder", "GET / HTTP/1.1"},
            {"42", "\n", "a"},        {"x"},
            {"", "empty name first"}, {"数据", std::string(300, 'z')},
            {"GET ", "POST "},        {"1234567890", "telnet \xff\xfb\x01"},
        };
        for (const auto& conversation : conversations) {
            std::string stream;
            for (const auto& payload : conversation) stream += chatsock::encode_frame(payload);
            check_detection({stream, 10}, "frames");
        }
    }

    TEST_CASE("detect_wire: line streams are never frames, HTTP requests always http") {
        const std::vector<Start> line_streams = {
            {"alice\nhello\n", 1},
            {"42\nhi\n", 3},
            {"bob the builder\r\nhi\r\n", 1},
            {"\n\nalice\n", 1},
            {"1 2 3 go\n", 7},
            {"9 lives\n", 3},
            {"\xff\xfb\x01\xff\xfd\x03"
             "alice\r\n",
             1},
            {"GEORGE\n", 3},
            {"POSTMAN PAT\n", 5},
            {"TRACEY\n", 6},
            {"123456789\nhi\n", 10},
        };
        for (const auto& s : line_streams) check_detection(s, "lines");
        const std::vector<Start> requests = {
            {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 4},
            {upgrade_request(), 4},
            {"POST /chat HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 5},
            {"HEAD / HTTP/1.0\n\n", 5},
            {"PUT /x HTTP/1.1\r\n\r\n", 4},
            {"DELETE /x HTTP/1.1\r\n\r\n", 7},
            {"OPTIONS * HTTP/1.1\r\n\r\n", 8},
            {"PATCH /x HTTP/1.1\r\n\r\n", 6},
            {"CONNECT h:443 HTTP/1.1\r\n\r\n", 8},
            {"TRACE / HTTP/1.1\r\n\r\n", 6},
        };
        for (const auto& s : requests) check_detection(s, "http");
    }

    // ---- LineDecoder ---------------------------------------------------------------------------

    TEST_CASE("LineDecoder: \\n or \\r\\n ends a line, empty lines are skipped") {
        CHECK(lines_of("alice\nhello\r\nbye\n") == Lines{"alice", "hello", "bye"});
        CHECK(lines_of("\n\r\n\n\r\nx\n\n") == Lines{"x"});
        // Only the \r right before the \n goes; others are part of the line.
        CHECK(lines_of("a\rb\n") == Lines{"a\rb"});
        CHECK(lines_of("x\r\r\n") == Lines{"x\r"});
        CHECK(lines_of("\rx\n") == Lines{"\rx"});
        CHECK(lines_of("\r\r\n") == Lines{"\r"});
        // Bytes are kept as they are: NUL, UTF-8, not-UTF-8 (the server checks that).
        CHECK(lines_of("a\0b\n"s) == Lines{"a\0b"s});
        CHECK(lines_of("数据 João\n") == Lines{"数据 João"});
        CHECK(lines_of("\xc3(\n") == Lines{"\xc3("});
        // A line without its end is held, not delivered.
        chatsock::LineDecoder d;
        CHECK(decode_lines(d, "one\ntwo\r") == Lines{"one"});
        CHECK(d.buffered() == 4);
        CHECK(decode_lines(d, "\n") == Lines{"two"});
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("LineDecoder: telnet IAC sequences are removed from the input") {
        // WILL/WONT/DO/DONT take an option byte, whatever it is (here a newline and a 255).
        CHECK(lines_of(IAC + WILL + "\x01" + "al" + IAC + DO + "\x03" + "ice\n") == Lines{"alice"});
        CHECK(lines_of(IAC + WONT + "\x01" + IAC + DONT + "\x22" + "hi\n") == Lines{"hi"});
        CHECK(lines_of(IAC + DO + "\n" + "ok\n") == Lines{"ok"});
        CHECK(lines_of(IAC + WILL + IAC + "ok\n") == Lines{"ok"});
        // Subnegotiation is skipped whole, newlines, IAC IAC and a lone SE byte included.
        CHECK(lines_of(IAC + SB + "\x18\x00xterm\n"s + IAC + SE + "hi\n") == Lines{"hi"});
        CHECK(lines_of(IAC + SB + "\x1f" + IAC + IAC + SE + "\x50" + IAC + SE + "hi\n") ==
              Lines{"hi"});
        // IAC IAC is one data byte 255.
        CHECK(lines_of("caf" + IAC + IAC + "e\n") == Lines{"caf\xff"
                                                           "e"});
        // Any other command is two bytes: NOP, Are You There, Go Ahead, Interrupt Process...
        CHECK(lines_of("a" + IAC + NOP + "b" + IAC + AYT + "c" + IAC + "\xf9" + IAC + "\xf4" +
                       "\n") == Lines{"abc"});
        // A line that is only negotiation is empty, and skipped.
        CHECK(lines_of(IAC + WILL + "\x03\r\n" + "x\n") == Lines{"x"});
    }

    TEST_CASE("LineDecoder: every split of the input gives the same lines") {
        const std::string stream = IAC + DO + "\x03" + "alice\r\n" + "he" + IAC + NOP + "llo\n" +
                                   IAC + SB + "\x18\x00vt100"s + IAC + IAC + "\n" + IAC + SE +
                                   "\r\n\n" + "caf" + IAC + IAC + "\r\n" + "a\rb\n" + "x\r\r\n" +
                                   "数据\n" + IAC + WILL + "\n" + "last\n";
        const Lines expected = {"alice", "hello", "caf\xff", "a\rb", "x\r", "数据", "last"};
        {
            chatsock::LineDecoder d;
            CHECK(decode_lines(d, stream) == expected);
        }
        for (std::size_t i = 0; i <= stream.size(); ++i) {
            for (std::size_t j = i; j <= stream.size(); ++j) {
                CAPTURE(i);
                CAPTURE(j);
                chatsock::LineDecoder d;
                const Lines got = decode_lines(d, stream, {i, j});
                CHECK(got == expected);
                CHECK(d.buffered() == 0);
            }
        }
        std::vector<std::size_t> every_byte;
        for (std::size_t k = 1; k < stream.size(); ++k) every_byte.push_back(k);
        chatsock::LineDecoder d;
        CHECK(decode_lines(d, stream, every_byte) == expected);
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("LineDecoder: a line of max_line bytes passes, one more fails") {
        const std::string eight(8, '8');
        for (const std::string& end : {"\n"s, "\r\n"s}) {
            CAPTURE(end);
            chatsock::LineDecoder d(8);
            CHECK(decode_lines(d, eight + end + "short" + end + eight + end) ==
                  Lines{eight, "short", eight});
            CHECK_FALSE(d.failed());
            CHECK(decode_lines(d, eight + "9" + end + "after\n").empty());
            CHECK(d.failed());
            CHECK(d.error() == "line over 8 bytes");
        }
        // The line end does not count, whatever the split; the bytes before do.
        const std::string ok = eight + "\r\n", over = eight + "\r" + "x\n";
        for (std::size_t k = 0; k <= ok.size(); ++k) {
            CAPTURE(k);
            chatsock::LineDecoder good(8), bad(8);
            CHECK(decode_lines(good, ok, {k}) == Lines{eight});
            CHECK_FALSE(good.failed());
            CHECK(decode_lines(bad, over, {k}).empty());
            CHECK(bad.failed());
        }
        // Found as the line grows, before its end arrives.
        chatsock::LineDecoder d(8);
        decode_lines(d, "123456789");
        CHECK(d.failed());
        CHECK(d.error() == "line over 8 bytes");
        CHECK(d.buffered() == 0);                    // dropped
        CHECK(decode_lines(d, "\nmore\n").empty());  // and it stays stopped
        // The default limit, and its wording.
        chatsock::LineDecoder standard;
        CHECK(decode_lines(standard, std::string(4096, 'x') + "\n").size() == 1);
        decode_lines(standard, std::string(4097, 'x') + "\n");
        CHECK(standard.error() == "line over 4096 bytes");
    }

    TEST_CASE("LineDecoder: an endless line fails without buffering more than max_line + 2") {
        SUBCASE("in big chunks") {
            chatsock::LineDecoder d(4096);
            const std::string chunk(1000, 'a');
            std::size_t chunks = 0;
            while (!d.failed() && chunks < 1000) {
                decode_lines(d, chunk);
                ++chunks;
                CHECK(d.buffered() <= 4096 + 2);
            }
            CHECK(d.failed());
            CHECK(chunks == 5);  // as soon as the line is over 4096 bytes
            CHECK(d.buffered() == 0);
        }
        SUBCASE("in one chunk of a megabyte") {
            chatsock::LineDecoder d(16);
            CHECK(decode_lines(d, std::string(1 << 20, 'a')).empty());
            CHECK(d.failed());
            CHECK(d.buffered() == 0);
        }
        SUBCASE("one byte at a time") {
            chatsock::LineDecoder d(16);
            std::size_t most = 0;
            for (int i = 0; i < 100 && !d.failed(); ++i) {
                decode_lines(d, "b");
                most = std::max(most, d.buffered());
            }
            CHECK(d.failed());
            CHECK(most <= 16 + 2);
        }
        SUBCASE("of carriage returns") {
            chatsock::LineDecoder d(16);
            for (int i = 0; i < 100 && !d.failed(); ++i) {
                decode_lines(d, "\r\r\r");
                CHECK(d.buffered() <= 16 + 2);
            }
            CHECK(d.failed());
        }
        SUBCASE("of telnet negotiation, which is not line content") {
            chatsock::LineDecoder d(16);
            for (int i = 0; i < 1000; ++i) decode_lines(d, IAC + WILL + "\x01");
            CHECK_FALSE(d.failed());
            CHECK(d.buffered() == 0);
        }
    }

    // An escaped 255 (IAC IAC) is a data byte of the line: it counts toward max_line like any
    // other, or a telnet peer could grow a line without limit by sending 255s (fixed in 913974b,
    // which the fuzzer found too).
    TEST_CASE("LineDecoder: data bytes 255 (IAC IAC) count toward max_line too") {
        SUBCASE("a line of 255s over the limit fails") {
            chatsock::LineDecoder d(4);
            std::string line;
            for (int i = 0; i < 5; ++i) line += IAC + IAC;
            const Lines got = decode_lines(d, line + "\n");
            CHECK(got.empty());
            CHECK(d.failed());
            CHECK(d.error() == "line over 4 bytes");
        }
        SUBCASE("a line of exactly max_line 255s passes") {
            chatsock::LineDecoder d(4);
            CHECK(decode_lines(d, IAC + IAC + IAC + IAC + "ab\n") == Lines{"\xff\xff"
                                                                           "ab"});
            CHECK_FALSE(d.failed());
        }
        SUBCASE("text then 255s over the limit fails") {
            chatsock::LineDecoder d(4);
            CHECK(decode_lines(d, "abc" + IAC + IAC + IAC + IAC + "\n").empty());
            CHECK(d.failed());
        }
        SUBCASE("an endless line of 255s is not buffered without limit") {
            chatsock::LineDecoder d(4096);
            std::string chunk;
            for (int i = 0; i < 500; ++i) chunk += IAC + IAC;
            for (int i = 0; i < 100 && !d.failed(); ++i) decode_lines(d, chunk);
            CHECK(d.failed());
            CHECK(d.buffered() <= 4096 + 2);
        }
    }

    TEST_CASE("LineDecoder: finish() ends a last line that has no newline, as input ends") {
        std::vector<std::string> lines;
        const auto take = [&](std::string_view line) {
            lines.emplace_back(line);
            return true;
        };
        chatsock::LineDecoder d(8);
        const std::string in = "one\ntwo\r";
        d.decode(in.data(), in.size(), take);
        d.finish(take);
        CHECK(lines == std::vector<std::string>{"one", "two"});
        lines.clear();
        chatsock::LineDecoder whole;  // nothing pending: finish() adds nothing
        whole.decode("x\n", 2, take);
        whole.finish(take);
        CHECK(lines == std::vector<std::string>{"x"});
        lines.clear();
        chatsock::LineDecoder iac;  // an unfinished telnet command does not hide the line
        iac.decode("hi\xff", 3, take);
        iac.finish(take);
        CHECK(lines == std::vector<std::string>{"hi"});
    }

    TEST_CASE("LineDecoder: on_line returning false stops at that line") {
        chatsock::LineDecoder d;
        Lines got;
        const std::string stream = "one\ntwo\nthree\n";
        const auto one = [&](std::string_view line) { return got.emplace_back(line), false; };
        CHECK(d.decode(stream.data(), stream.size(), one) == 4);  // how far: the rest is ours
        CHECK(d.decode(stream.data() + 4, stream.size() - 4, one) == 4);
        CHECK(d.decode(stream.data() + 8, stream.size() - 8, one) == 6);
        CHECK(got == Lines{"one", "two", "three"});
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("LineDecoder: a hundred thousand one-byte lines, whole and in chunks of any size") {
        std::string stream;
        for (int i = 0; i < 100'000; ++i) stream += "a\n";
        for (std::size_t chunk :
             {stream.size(), std::size_t(65536), std::size_t(1000), std::size_t(3)}) {
            CAPTURE(chunk);
            chatsock::LineDecoder d;
            std::size_t count = 0, wrong = 0;
            for (std::size_t pos = 0; pos < stream.size(); pos += chunk) {
                const std::size_t n = std::min(chunk, stream.size() - pos);
                CHECK(d.decode(stream.data() + pos, n, [&](std::string_view line) {
                    ++count;
                    wrong += line != "a";
                    return true;
                }) == n);
            }
            CHECK(count == 100'000);
            CHECK(wrong == 0);
            CHECK(d.buffered() == 0);
        }
    }

    // ---- WebSocketDecoder -----------------------------------------------------------------------

    TEST_CASE("WebSocketDecoder: RFC 6455's masked \"Hello\" example, and text messages") {
        Ws d;
        CHECK(decode_ws(d, from_hex("818537fa213d7f9f4d5158")) == Events{"message Hello"});
        CHECK(decode_ws(d, text_frame("alice") + text_frame("") + text_frame("数据 João")) ==
              Events{"message alice", "message ", "message 数据 João"});
        CHECK_FALSE(d.failed());
        CHECK(d.buffered() == 0);
        // A frame not yet whole is held.
        const std::string frame = text_frame("partial");
        CHECK(decode_ws(d, frame.substr(0, 5)).empty());
        CHECK(d.buffered() == 5);
        CHECK(decode_ws(d, frame.substr(5)) == Events{"message partial"});
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("WebSocketDecoder: fragments are put together, control frames may come between") {
        Ws d;
        const std::string stream = text_frame("Hel", false) +
                                   client_frame(Ws::ping, "are you there") +
                                   more_frame("lo ", false) + client_frame(Ws::pong, "") +
                                   more_frame("world", true) + text_frame("next");
        CHECK(decode_ws(d, stream) ==
              Events{"ping are you there", "pong ", "message Hello world", "message next"});
        // A character split between fragments is whole in the message.
        const std::string euro = "\xe2\x82\xac";
        CHECK(decode_ws(d, text_frame("5 " + euro.substr(0, 1), false) +
                               more_frame(euro.substr(1, 1), false) + more_frame("", false) +
                               more_frame(euro.substr(2), true)) == Events{"message 5 €"});
        CHECK_FALSE(d.failed());
        CHECK(d.buffered() == 0);
    }

    TEST_CASE("WebSocketDecoder: 7-, 16- and 64-bit lengths, up to max_message exactly") {
        for (std::size_t size : {125, 126, 127, 1000, 65535, 65536}) {
            CAPTURE(size);
            const std::string text(size, 't');
            Ws d(65536);
            const std::string frame = text_frame(text);
            CHECK(frame.size() == size + 4 + (size < 126 ? 2 : size <= 65535 ? 4 : 10));
            CHECK(decode_ws(d, frame) == Events{"message " + text});
            CHECK_FALSE(d.failed());
        }
        // A message of fragments may reach the limit too, and the next one starts afresh.
        Ws d(100);
        CHECK(decode_ws(d, text_frame(std::string(60, 'a'), false) +
                               more_frame(std::string(40, 'b'), true) +
                               text_frame(std::string(100, 'c'))) ==
              Events{"message " + std::string(60, 'a') + std::string(40, 'b'),
                     "message " + std::string(100, 'c')});
        CHECK_FALSE(d.failed());
    }

    TEST_CASE("WebSocketDecoder: every split of several frames gives the same messages") {
        const std::string stream = text_frame("alice") + text_frame("frag", false) +
                                   client_frame(Ws::ping, "p1") + more_frame("mented", true) +
                                   text_frame(std::string(200, 'x')) + client_frame(Ws::pong, "q") +
                                   text_frame("数据") +
                                   client_frame(Ws::close, close_payload(1000));
        const Events expected = {"message alice",
                                 "ping p1",
                                 "message fragmented",
                                 "message " + std::string(200, 'x'),
                                 "pong q",
                                 "message 数据",
                                 "close " + close_payload(1000)};
        for (std::size_t k = 0; k <= stream.size(); ++k) {
            CAPTURE(k);
            Ws d;
            CHECK(decode_ws(d, stream, {k}) == expected);
            CHECK(d.buffered() == 0);
        }
        std::vector<std::size_t> every_byte;
        for (std::size_t k = 1; k < stream.size(); ++k) every_byte.push_back(k);
        Ws d;
        CHECK(decode_ws(d, stream, every_byte) == expected);
        CHECK_FALSE(d.failed());
    }

    TEST_CASE("WebSocketDecoder: ping, pong and close reach on_control unmasked") {
        Ws d;
        const std::string max_ping(125, 'p');
        CHECK(decode_ws(d, client_frame(Ws::ping, "") + client_frame(Ws::ping, max_ping) +
                               client_frame(Ws::pong, "\x00\xff"s) +
                               client_frame(Ws::close, close_payload(1001, "going away"))) ==
              Events{"ping ", "ping " + max_ping, "pong \x00\xff"s,
                     "close " + close_payload(1001, "going away")});
        // RFC 6455 section 5.7: a masked pong with "Hello".
        CHECK(decode_ws(d, from_hex("8a8537fa213d7f9f4d5158")) == Events{"pong Hello"});
        CHECK_FALSE(d.failed());
    }

    TEST_CASE("WebSocketDecoder: on_message or on_control returning false stops there") {
        const std::string stream = text_frame("one") + text_frame("two");
        Ws d;
        int calls = 0;
        const auto stop = [&](std::string_view) {
            ++calls;
            return false;
        };
        const auto control = [&](Ws::Opcode, std::string_view) {
            ++calls;
            return false;
        };
        d.decode(stream.data(), stream.size(), stop, control);
        CHECK(calls == 1);
        Ws c;
        calls = 0;
        const std::string closing = client_frame(Ws::close, "") + text_frame("after");
        c.decode(closing.data(), closing.size(), stop, control);
        CHECK(calls == 1);
    }

    TEST_CASE("WebSocketDecoder: protocol errors and their close codes") {
        SUBCASE("an unmasked frame: 1002") {
            check_ws_error(client_frame(Ws::text, "hi", {true, false}), 1002,
                           "an unmasked client frame");
            // RFC 6455 section 5.7's unmasked "Hello" is a server's frame, not a client's.
            check_ws_error(from_hex("810548656c6c6f"), 1002, "an unmasked client frame");
        }
        SUBCASE("a reserved bit: 1002") {
            for (unsigned rsv : {1u, 2u, 4u, 7u}) {
                CAPTURE(rsv);
                check_ws_error(client_frame(Ws::text, "hi", {true, true, rsv}), 1002,
                               "reserved bits set");
            }
        }
        SUBCASE("a binary message: 1003") {
            check_ws_error(client_frame(Ws::binary, "\x01\x02"), 1003,
                           "binary messages are not accepted");
        }
        SUBCASE("text that is not UTF-8: 1007") {
            for (const std::string& bad :
                 {"\xff"s, "ab\xc3"s, "\xc0\xaf"s, "\xed\xa0\x80"s, "\xf4\x90\x80\x80"s}) {
                CAPTURE(bad);
                check_ws_error(text_frame(bad), 1007, "a text message that is not UTF-8");
            }
            // Checked on the whole message: a fragment ending mid-character is not enough.
            check_ws_error(text_frame("\xe2\x82", false) + more_frame("x", true), 1007,
                           "a text message that is not UTF-8");
        }
        SUBCASE("a continuation with nothing to continue: 1002") {
            check_ws_error(more_frame("x", true), 1002, "a continuation of nothing");
            check_ws_error(text_frame("whole") + more_frame("x", true), 1002,
                           "a continuation of nothing");
        }
        SUBCASE("a new message inside a fragmented one: 1002") {
            check_ws_error(text_frame("a", false) + text_frame("b"), 1002,
                           "a new message inside a fragmented one");
        }
        SUBCASE("a fragmented or oversized control frame: 1002") {
            const std::string too_long(126, 'x');
            for (unsigned op : {Ws::ping, Ws::pong, Ws::close}) {
                CAPTURE(op);
                check_ws_error(client_frame(op, "x", {false}), 1002,
                               "a fragmented or oversized control frame");
                check_ws_error(client_frame(op, too_long), 1002,
                               "a fragmented or oversized control frame");
            }
        }
        SUBCASE("an unknown opcode: 1002") {
            for (unsigned op : {3u, 4u, 5u, 6u, 7u, 11u, 12u, 13u, 14u, 15u}) {
                CAPTURE(op);
                check_ws_error(client_frame(op, "x"), 1002, "an unknown opcode");
            }
        }
    }

    TEST_CASE("WebSocketDecoder: a frame announcing too much is refused from its header (1009)") {
        SUBCASE("2^63 bytes: the header alone, nothing allocated for the payload") {
            Ws d;
            decode_ws(d, client_header(Ws::text, std::uint64_t(1) << 63));
            CHECK(d.failed());
            CHECK(d.close_code() == 1009);
            CHECK(d.error() == "a message over 65536 bytes");
            CHECK(d.buffered() == 0);
            decode_ws(d, std::string(4096, 'x'));  // the "payload": ignored
            CHECK(d.buffered() == 0);
        }
        SUBCASE("the largest 64-bit length") {
            check_ws_error(client_header(Ws::text, ~std::uint64_t(0)) + "mask", 1009,
                           "a message over 65536 bytes");
        }
        SUBCASE("max_message + 1, in 64 and 16 bits") {
            check_ws_error(text_frame(std::string(65537, 'x')), 1009, "a message over 65536 bytes");
            check_ws_error(text_frame(std::string(101, 'x')), 1009, "a message over 100 bytes",
                           100);
            Ws d(100);
            decode_ws(d, client_header(Ws::text, 101));  // the header, no more
            CHECK(d.close_code() == 1009);
        }
        SUBCASE("fragments that together go over") {
            Ws d(100);
            CHECK(decode_ws(d, text_frame(std::string(60, 'a'), false) +
                                   client_header(Ws::continuation, 41, {true})) == Events{});
            CHECK(d.close_code() == 1009);
            CHECK(d.error() == "a message over 100 bytes");
            CHECK(d.buffered() == 0);  // the fragments so far are dropped too
        }
    }

    TEST_CASE("WebSocketDecoder: after an error, earlier frames were delivered and no more are") {
        Ws d;
        CHECK(decode_ws(d, text_frame("before") + client_frame(Ws::binary, "b") +
                               text_frame("after")) == Events{"message before"});
        CHECK(d.close_code() == 1003);
        CHECK(decode_ws(d, text_frame("later")).empty());
        CHECK(d.close_code() == 1003);  // the first error stays
        CHECK(d.buffered() == 0);
    }

    // ---- SHA-1 and base64 -----------------------------------------------------------------------

    TEST_CASE("detail::sha1: the RFC 3174 / FIPS 180 vectors") {
        using chatsock::detail::sha1;
        CHECK(hex(sha1("abc")) == "a9993e364706816aba3e25717850c26c9cd0d89d");
        CHECK(hex(sha1("")) == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        CHECK(hex(sha1("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
              "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
        CHECK(hex(sha1("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmno"
                       "pjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")) ==
              "a49b2446a02c645bf419f995b67091253a04a259");
        CHECK(hex(sha1(std::string(1'000'000, 'a'))) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        CHECK(sha1("abc").size() == 20);  // raw bytes
    }

    TEST_CASE("detail::sha1: messages around the 64-byte block and its padding") {
        // Lengths where the padding just fits, just does not, or fills a block (Python's hashlib).
        const std::pair<std::size_t, const char*> vectors[] = {
            {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
            {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
            {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
            {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
            {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
            {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
            {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
        };
        for (const auto& vector : vectors) {
            const std::size_t n = vector.first;
            CAPTURE(n);
            CHECK(hex(chatsock::detail::sha1(std::string(n, 'a'))) == vector.second);
        }
        // High bytes are bytes, not negative chars.
        CHECK(hex(chatsock::detail::sha1("\xff\x80\x00"s)) ==
              "2323f47623403ba4df16b1732c4a6d722e33442e");
        std::string all_bytes;
        for (int b = 0; b < 256; ++b) all_bytes += static_cast<char>(b);
        CHECK(hex(chatsock::detail::sha1(all_bytes)) == "4916d6bdb7f78e6803698cab32d1586ea457dfc8");
    }

    TEST_CASE("detail::base64: the RFC 4648 vectors") {
        using chatsock::detail::base64;
        CHECK(base64("") == "");
        CHECK(base64("f") == "Zg==");
        CHECK(base64("fo") == "Zm8=");
        CHECK(base64("foo") == "Zm9v");
        CHECK(base64("foob") == "Zm9vYg==");
        CHECK(base64("fooba") == "Zm9vYmE=");
        CHECK(base64("foobar") == "Zm9vYmFy");
        // All 64 digits, and bytes over 127.
        CHECK(base64(from_hex("00108310518720928b30d38f41149351559761969b71d79f8218a39259a7a29aabb2"
                              "dbafc31cb3d35db7e39ebbf3dfbf")) ==
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
        CHECK(base64("\xff\xff\xff"s) == "////");
        CHECK(base64(chatsock::detail::sha1("")) == "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    }

    // ---- answer_http ----------------------------------------------------------------------------

    TEST_CASE("answer_http: RFC 6455 section 1.3's handshake gets its Sec-WebSocket-Accept") {
        const chatsock::detail::HttpAnswer a =
            chatsock::detail::answer_http(upgrade_request(), "page");
        CHECK(a.upgrade);
        CHECK(a.response.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
        CHECK(a.response.find("\r\nSec-WebSocket-Accept: " + rfc_accept + "\r\n") !=
              std::string::npos);
        const Response r = parse_response(a.response);
        CHECK(r.well_formed);
        CHECK(r.body.empty());  // the response ends at its blank line: frames follow it
        CHECK(r.headers.at("upgrade") == "websocket");
        CHECK(r.headers.at("connection") == "Upgrade");
        CHECK(r.headers.count("content-length") == 0);
        // The accept value is the key's: another key, another value.
        const std::string other = "AQIDBAUGBwgJCgsMDQ4PEA==";  // bytes 1..16
        const auto b = chatsock::detail::answer_http(
            upgrade_request("Upgrade: websocket\r\nConnection: "
                            "Upgrade\r\nSec-WebSocket-Key: " +
                            other + "\r\nSec-WebSocket-Version: 13\r\n"),
            "page");
        CHECK(b.upgrade);
        CHECK(parse_response(b.response).headers["sec-websocket-accept"] ==
              chatsock::detail::base64(
                  chatsock::detail::sha1(other + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")));
    }

    TEST_CASE("answer_http: GET / and /index.html get the page, then the connection closes") {
        const std::string page = "<!doctype html><p>chat</p>\n";
        for (const char* request :
             {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
              "GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\n\n"}) {
            Response r = answer(request, page);
            CHECK(r.status == "HTTP/1.1 200 OK");
            CHECK(r.headers["content-type"] == "text/html; charset=utf-8");
            CHECK(r.body == page);
        }
        // The real page, whatever its size.
        Response real = answer("GET / HTTP/1.1\r\n\r\n", chatsock::detail::chat_page);
        CHECK(real.body == chatsock::detail::chat_page);
        CHECK(real.headers["content-length"] == std::to_string(chatsock::detail::chat_page.size()));
        // A multi-byte page: Content-Length counts bytes.
        CHECK(answer("GET / HTTP/1.1\r\n\r\n", "数据").headers["content-length"] == "6");
    }

    TEST_CASE("answer_http: 404 for other paths, 405 with Allow: GET for other methods") {
        for (const char* path : {"/chat", "/index.htm", "/favicon.ico", "/?x=1", "/index.html/"}) {
            CAPTURE(path);
            Response r = answer("GET "s + path + " HTTP/1.1\r\n\r\n");
            CHECK(r.status == "HTTP/1.1 404 Not Found");
            CHECK(r.body == "404 Not Found\n");  // one line of text
            CHECK(r.headers["content-type"].rfind("text/plain", 0) == 0);
        }
        for (const char* method : {"POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"}) {
            CAPTURE(method);
            Response r = answer(method + " / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"s);
            CHECK(r.status == "HTTP/1.1 405 Method Not Allowed");
            CHECK(r.headers["allow"] == "GET");
        }
    }

    TEST_CASE("answer_http: 400 for a malformed request line") {
        for (const char* request :
             {"GET /\r\n\r\n", "GET\r\n\r\n", "\r\n\r\n", "GET / FTP/1.0\r\n\r\n",
              "GET / HTTP/2\r\n\r\n", "GET/ HTTP/1.1\r\n\r\n", "hello\n\n"}) {
            Response r = answer(request);
            CHECK(r.status == "HTTP/1.1 400 Bad Request");
        }
    }

    TEST_CASE("answer_http: a handshake needs version 13 (426) and a 16-byte base64 key (400)") {
        const std::string upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        const std::string key = "Sec-WebSocket-Key: " + rfc_key + "\r\n";
        for (const std::string& version :
             {"Sec-WebSocket-Version: 8\r\n"s, ""s, "Sec-WebSocket-Version: 13, 8\r\n"s}) {
            CAPTURE(version);
            Response r = answer(upgrade_request(upgrade + key + version));
            CHECK(r.status == "HTTP/1.1 426 Upgrade Required");
            CHECK(r.headers["sec-websocket-version"] == "13");
        }
        const std::string v13 = "Sec-WebSocket-Version: 13\r\n";
        for (const std::string& bad_key :
             {""s, "Sec-WebSocket-Key: \r\n"s,
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n"s,    // 23 characters
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n"s,  // 25
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=\r\n"s,   // not base64
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!Q==\r\n"s,
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j-Q==\r\n"s,  // base64url is not base64
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\n"s,  // 18 bytes, not 16
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSBh\r\n"s,  // 18 bytes
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j ZQ==\r\n"s,
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSBhbmQgbW9yZQ==\r\n"s}) {  // 25 bytes
            CAPTURE(bad_key);
            Response r = answer(upgrade_request(upgrade + bad_key + v13));
            CHECK(r.status == "HTTP/1.1 400 Bad Request");
        }
        // Without Connection: Upgrade it is no handshake.
        CHECK_FALSE(
            chatsock::detail::answer_http(
                upgrade_request("Upgrade: websocket\r\nConnection: keep-alive\r\n" + key + v13),
                "page")
                .upgrade);
    }

    TEST_CASE("answer_http: header names in any case, spaces around values, several tokens") {
        const std::vector<std::string> handshakes = {
            "upgrade: WebSocket\r\nconnection: upgrade\r\nsec-websocket-key: " + rfc_key +
                "\r\nsec-websocket-version: 13\r\n",
            "UPGRADE:websocket\r\nCONNECTION:Upgrade\r\nSEC-WEBSOCKET-KEY:" + rfc_key +
                "\r\nSEC-WEBSOCKET-VERSION:13\r\n",
            "Upgrade:   websocket  \r\nConnection: \tUpgrade \r\nSec-WebSocket-Key:   " + rfc_key +
                "   \r\nSec-WebSocket-Version:  13 \r\n",
            // Firefox's Connection header; other headers between.
            "User-Agent: test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            "Sec-WebSocket-Key: " +
                rfc_key + "\r\nAccept: */*\r\nSec-WebSocket-Version: 13\r\n",
            "Upgrade: websocket\r\nConnection: Upgrade,keep-alive\r\nSec-WebSocket-Key: " +
                rfc_key + "\r\nSec-WebSocket-Version: 13\r\n",
        };
        for (const std::string& headers : handshakes) {
            CAPTURE(headers);
            const chatsock::detail::HttpAnswer a =
                chatsock::detail::answer_http(upgrade_request(headers), "page");
            CHECK(a.upgrade);
            CHECK(parse_response(a.response).headers["sec-websocket-accept"] == rfc_accept);
        }
        // Lines ending in a bare \n work too.
        std::string bare = upgrade_request();
        for (std::size_t at; (at = bare.find("\r\n")) != std::string::npos;) bare.erase(at, 1);
        CHECK(chatsock::detail::answer_http(bare, "page").upgrade);
        // A token must be whole: "upgrade-insecure" is not "upgrade".
        CHECK_FALSE(chatsock::detail::answer_http(
                        upgrade_request("Upgrade: websocket\r\nConnection: "
                                        "upgrade-insecure\r\nSec-WebSocket-Key: " +
                                        rfc_key + "\r\nSec-WebSocket-Version: 13\r\n"),
                        "page")
                        .upgrade);
    }

    // ---- server frames, JSON, events ------------------------------------------------------------

    TEST_CASE("detail::append_websocket_frame: header bytes exactly as RFC 6455 says") {
        using chatsock::detail::append_websocket_frame;
        const auto frame = [](unsigned op, std::size_t n) {
            std::string out;
            append_websocket_frame(out, op, std::string(n, 'x'));
            return out;
        };
        CHECK(hex(frame(Ws::text, 0)) == "8100");
        CHECK(hex(frame(Ws::text, 125).substr(0, 2)) == "817d");
        CHECK(hex(frame(Ws::text, 126).substr(0, 4)) == "817e007e");
        CHECK(hex(frame(Ws::text, 65535).substr(0, 4)) == "817effff");
        CHECK(hex(frame(Ws::text, 65536).substr(0, 10)) == "817f0000000000010000");
        for (std::size_t n : {0, 125, 126, 65535, 65536}) {
            CAPTURE(n);
            const std::string f = frame(Ws::text, n);
            CHECK(f.size() == n + (n < 126 ? 2 : n <= 65535 ? 4 : 10));
            CHECK(f.substr(f.size() - n) == std::string(n, 'x'));
        }
        // RFC 6455 section 5.7: an unmasked "Hello"; a 256-byte frame.
        std::string hello = "kept:";
        append_websocket_frame(hello, Ws::text, "Hello");
        CHECK(hello == "kept:" + from_hex("810548656c6c6f"));
        CHECK(hex(frame(Ws::pong, 0)) == "8a00");
        CHECK(hex(frame(Ws::text, 256).substr(0, 4)) == "817e0100");
        // A close frame carries its status code in network byte order.
        CHECK(hex(chatsock::detail::websocket_close(1000)) == "880203e8");
        CHECK(hex(chatsock::detail::websocket_close(1009)) == "880203f1");
    }

    TEST_CASE("detail::append_json_string: escapes what JSON needs, keeps valid UTF-8") {
        CHECK(json("hi") == "\"hi\"");
        CHECK(json("") == "\"\"");
        CHECK(json("say \"hi\"") == "\"say \\\"hi\\\"\"");
        CHECK(json("C:\\dir") == "\"C:\\\\dir\"");
        CHECK(json("é€😀 数据") == "\"é€😀 数据\"");  // kept as they are
        // Control characters as \u00XX; the JSON reads back to the same bytes.
        for (char c = 0; c < 0x20; ++c) {
            const std::string s = "a"s + c + "b";
            CAPTURE(static_cast<int>(c));
            const std::string j = json(s);
            CHECK(j.size() == 2 + 2 + 6);
            CHECK(chatsock::detail::ascii_lower(j.substr(2, 4)) == "\\u00");
            CHECK(json_unquote(j) == s);
        }
        CHECK(json_unquote(json("\x1b[2J\r\n\t\"\\/ ok")) == "\x1b[2J\r\n\t\"\\/ ok");
        // Invalid UTF-8 becomes U+FFFD; what is valid around it stays.
        CHECK(json("a\xff"
                   "b") == "\"a\\ufffdb\"");
        CHECK(json("\xc3") == "\"\\ufffd\"");
        CHECK(json("\x80x") == "\"\\ufffdx\"");
        for (const std::string& bad :
             {"\xc0\xaf"s, "\xed\xa0\x80"s, "\xf4\x90\x80\x80"s, "\xe2\x82"s, "ok \xe2\x82(€"s}) {
            CAPTURE(bad);
            const std::string back = json_unquote(json(bad));
            CHECK(chatsock::is_valid_utf8(back));
            CHECK(back.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD
        }
        const std::string around = json_unquote(json("ok \xe2\x82(€"));
        CHECK(around.rfind("ok \xef\xbf\xbd", 0) == 0);
        CHECK(around.substr(around.size() - 4) == "(€");
        // It appends.
        std::string out = "{\"a\":";
        chatsock::detail::append_json_string(out, "b");
        CHECK(out == "{\"a\":\"b\"");
    }

    TEST_CASE("detail::Outgoing: one event as a line, as frames and as WebSocket JSON") {
        using chatsock::detail::Outgoing;
        const auto ws_text = [](const std::string& json_text) {
            std::string frame;
            chatsock::detail::append_websocket_frame(frame, Ws::text, json_text);
            return frame;
        };
        Outgoing message("alice", "hi", false);
        CHECK(*message.as(Wire::lines) == "alice: hi\r\n");
        CHECK(*message.as(Wire::frames) == *chatsock::encode_message("alice", "hi"));
        CHECK(*message.as(Wire::websocket) == ws_text("{\"from\":\"alice\",\"text\":\"hi\"}"));

        Outgoing notice("server", "bob joined", true);
        CHECK(*notice.as(Wire::lines) == "* bob joined\r\n");
        CHECK(*notice.as(Wire::frames) == *chatsock::encode_message("server", "bob joined"));
        Outgoing x("server", "x", true);
        CHECK(*x.as(Wire::websocket) ==
              ws_text("{\"from\":\"server\",\"text\":\"x\",\"notice\":true}"));

        // A line goes to a terminal: printable(), so no peer can send it escapes.
        Outgoing evil(
            "ev\x1b"
            "e",
            "a\x1b[2Jb\nc\r\x9b", false);
        CHECK(*evil.as(Wire::lines) == "ev\\x1be: a\\x1b[2Jb\\nc\\r\\x9b\r\n");
        CHECK(evil.as(Wire::lines)->find('\x1b') == std::string::npos);
        CHECK(evil.as(Wire::lines)->find('\n') == evil.as(Wire::lines)->size() - 1);
        Outgoing evil_notice("server", "x\ny", true);
        CHECK(*evil_notice.as(Wire::lines) == "* x\\ny\r\n");
        // JSON escapes instead, and the text reads back whole.
        const auto frames = server_frames(*evil.as(Wire::websocket));
        REQUIRE(frames.size() == 1);
        CHECK(frames[0].payload.find('\x1b') == std::string::npos);

        // Each wire's bytes are made once and shared by every recipient.
        Outgoing shared("alice", "hello", false);
        for (Wire w : {Wire::lines, Wire::frames, Wire::websocket}) {
            CAPTURE(wire_name(w));
            const chatsock::SharedBytes first = shared.as(w);
            CHECK(first.get() == shared.as(w).get());
        }
        CHECK(shared.as(Wire::lines).get() != shared.as(Wire::websocket).get());
    }

    // ---- the server: three kinds of client in one room ------------------------------------------

    TEST_CASE("server: a line client and a framed client see each other's messages and joins") {
        cst::LoggedServer chat;
        JoinedWires wires(chat.server);
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");

        BytePeer bob;  // telnet: negotiation first, then the name, \r\n line ends
        bob.connect(chat.port);
        REQUIRE(bob.send(IAC + DO + "\x03" + IAC + WILL + "\x18" + "bob\r\n"));
        REQUIRE(cst::pump(
            chat.server,
            [&] {
                return bob.got("* welcome, bob! 1 other user online\r\n") &&
                       alice.got("server", "bob joined");
            },
            alice, bob));
        CHECK(bob.received == "* welcome, bob! 1 other user online\r\n");

        REQUIRE(bob.send("hi alice\r\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("bob", "hi alice"); }, alice, bob));
        REQUIRE_FALSE(alice.client.send("hello bob"));
        REQUIRE_FALSE(alice.client.send("colours \x1b[31mred"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("colours"); }, alice, bob));
        CHECK(bob.got("\r\nalice: hello bob\r\nalice: colours \\x1b[31mred\r\n"));
        CHECK(bob.received.find('\x1b') == std::string::npos);

        // Empty lines are nothing; a line split over several sends is one message.
        REQUIRE(bob.send("\r\n\n"));
        REQUIRE(bob.send("in "));
        cst::run_for(milliseconds(20), chat.server, alice, bob);
        REQUIRE(bob.send("parts\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("bob", "in parts"); }, alice, bob));
        CHECK(alice.count_from("bob") == 2);
        // A line that is not UTF-8 is not relayed; the sender is told, as a line.
        REQUIRE(bob.send("caf\xe9\n"));
        REQUIRE(cst::pump(
            chat.server,
            [&] { return bob.got("* message not delivered: it is not valid UTF-8\r\n"); }, alice,
            bob));

        // Another line client joins: the line client hears of it as a line.
        BytePeer carol;
        carol.connect(chat.port);
        REQUIRE(carol.send("carol\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("* carol joined\r\n"); }, alice, bob, carol));
        CHECK(carol.got("* welcome, carol! 2 other users online\r\n"));

        bob.close();
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob left"); }, alice, carol));
        CHECK(carol.got("* bob left\r\n"));
        CHECK(wires == std::map<std::string, std::string>{
                           {"alice", "frames"}, {"bob", "lines"}, {"carol", "lines"}});
        // The log is the same for every kind of client.
        const std::string log = chat.log();
        CHECK(log.find("\tjoin\tbob\t") != std::string::npos);
        CHECK(log.find("\tmessage\tbob\thi alice\n") != std::string::npos);
        CHECK(log.find("\tleave\tbob\tleft\n") != std::string::npos);
    }

    TEST_CASE("server: a line client's refused name, in its own format") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        BytePeer other;
        other.connect(port);
        REQUIRE(other.send("Alice\n"));
        REQUIRE(cst::pump(
            server, [&] { return other.ended(); }, alice, other));
        CHECK(other.received == "* name refused: the name \"Alice\" is taken\r\n");
    }

    TEST_CASE("server: a line over max_line is refused with the notice, and closed") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.max_line = 16; });
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        BytePeer dave;
        dave.connect(chat.port);
        REQUIRE(dave.send("dave\n" + std::string(16, 'x') + "\r\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("dave", std::string(16, 'x')); }, alice, dave));
        REQUIRE(dave.send(std::string(17, 'y')));  // refused before its end arrives
        REQUIRE(cst::pump(
            chat.server, [&] { return dave.ended(); }, alice, dave));
        CHECK(dave.got("* protocol error: line over 16 bytes\r\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got_text_starting("dave left"); }, alice));
        CHECK(alice.count_from("dave") == 1);
        CHECK(chat.log().find("\terror\tdave\tprotocol error: line over 16 bytes\n") !=
              std::string::npos);

        // The name line is held to the same limit.
        BytePeer eve;
        eve.connect(chat.port);
        REQUIRE(eve.send(std::string(40, 'e') + "\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return eve.ended(); }, alice, eve));
        CHECK(eve.received == "* protocol error: line over 16 bytes\r\n");
    }

    TEST_CASE("server: max_line is never more than max_payload") {
        chatsock::ServerOptions options = cst::quiet_options();
        options.max_payload = 100;  // max_line stays 4096
        chatsock::Server server(options);
        const auto port = cst::start(server);
        BytePeer frank;
        frank.connect(port);
        REQUIRE(
            frank.send("frank\n" + std::string(100, 'f') + "\n" + std::string(101, 'g') + "\n"));
        REQUIRE(cst::pump(
            server, [&] { return frank.ended(); }, frank));
        CHECK(frank.got("* protocol error: line over 100 bytes\r\n"));
    }

    TEST_CASE("server: a WebSocket client joins, chats with a framed client, pings, closes") {
        cst::LoggedServer chat;
        JoinedWires wires(chat.server);
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");

        Browser carol;
        carol.handshake(chat.server, chat.port);
        REQUIRE(carol.send(text_frame("carol")));
        REQUIRE(cst::pump(
            chat.server,
            [&] {
                return carol.got_text(notice_json("welcome, carol! 1 other user online")) &&
                       alice.got("server", "carol joined");
            },
            alice, carol));
        for (const auto& f : carol.frames()) {
            CHECK_FALSE(f.masked);  // a server's frames are never masked
            CHECK(f.fin);
        }

        REQUIRE(carol.send(text_frame("hi alice")));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("carol", "hi alice"); }, alice, carol));
        REQUIRE_FALSE(alice.client.send("hello \"carol\" \x01"));
        REQUIRE(cst::pump(
            chat.server,
            [&] { return carol.got_text(message_json("alice", "hello \"carol\" \x01")); }, alice,
            carol));
        // A fragmented message with a ping in the middle: the pong carries the ping's payload.
        REQUIRE(carol.send(text_frame("in ", false) + client_frame(Ws::ping, "ping!") +
                           more_frame("pieces", true)));
        REQUIRE(cst::pump(
            chat.server,
            [&] { return alice.got("carol", "in pieces") && carol.got_frame(Ws::pong, "ping!"); },
            alice, carol));

        // A close (1001: the page is going away) is answered with a close of the same code.
        REQUIRE(carol.send(client_frame(Ws::close, close_payload(1001, "bye"))));
        REQUIRE(cst::pump(
            chat.server, [&] { return carol.ended(); }, alice, carol));
        const auto frames = carol.frames();
        REQUIRE_FALSE(frames.empty());
        CHECK(frames.back().opcode == Ws::close);
        CHECK(frames.back().payload == close_payload(1001));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "carol left"); }, alice));
        CHECK(wires ==
              std::map<std::string, std::string>{{"alice", "frames"}, {"carol", "websocket"}});
        CHECK(chat.log().find("\tmessage\tcarol\tin pieces\n") != std::string::npos);
    }

    TEST_CASE("server: a close's code comes back when a peer may send it, else 1002") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        const std::pair<std::string, std::string> cases[] = {
            {close_payload(1000), close_payload(1000)},
            {close_payload(1003, "why"), close_payload(1003)},
            {close_payload(1011), close_payload(1011)},
            {close_payload(3000), close_payload(3000)},
            {close_payload(4999), close_payload(4999)},
            {"", close_payload(1000)},  // no code: a normal close
            // Codes no endpoint may send (RFC 6455, 7.4), or a body too short for one.
            {close_payload(1005), close_payload(1002)},
            {close_payload(1006), close_payload(1002)},
            {close_payload(999), close_payload(1002)},
            {close_payload(5000), close_payload(1002)},
            {"\x03", close_payload(1002)},
        };
        for (const auto& c : cases) {
            const std::string sent = c.first, expected = c.second;
            CAPTURE(hex(sent));
            Browser b;
            b.handshake(server, port);
            REQUIRE(b.send(text_frame("user") + client_frame(Ws::close, sent)));
            REQUIRE(cst::pump(
                server, [&] { return b.ended(); }, b));
            const auto frames = b.frames();
            REQUIRE_FALSE(frames.empty());
            CHECK(frames.back().opcode == Ws::close);
            CHECK(frames.back().payload == expected);
        }
    }

    TEST_CASE("server: the first frames may come in the same write as the handshake") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        JoinedWires wires(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        Browser dora;
        dora.handshake(server, port, text_frame("dora") + text_frame("first words"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("dora", "first words"); }, alice, dora));
        CHECK(wires["dora"] == "websocket");
    }

    TEST_CASE("server: a WebSocket protocol error or refused name: notice, close frame, close") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        const auto check_refusal = [&](const std::string& send, const std::string& notice,
                                       std::uint16_t code) {
            CAPTURE(notice);
            Browser b;
            b.handshake(server, port);
            REQUIRE(b.send(send));
            REQUIRE(cst::pump(
                server, [&] { return b.ended(); }, alice, b));
            const auto frames = b.frames();
            REQUIRE(frames.size() >= 2);
            CHECK(frames[frames.size() - 2].opcode == Ws::text);
            CHECK(frames[frames.size() - 2].payload == notice_json(notice));
            CHECK(frames.back().opcode == Ws::close);
            CHECK(frames.back().payload == close_payload(code));
        };
        check_refusal(client_frame(Ws::text, "unmasked", {true, false}),
                      "protocol error: an unmasked client frame", 1002);
        check_refusal(client_frame(Ws::binary, "bytes"),
                      "protocol error: binary messages are not accepted", 1003);
        check_refusal(text_frame("\xff"), "protocol error: a text message that is not UTF-8", 1007);
        check_refusal(client_header(Ws::text, 70000), "protocol error: a message over 65536 bytes",
                      1009);
        check_refusal(text_frame("ALICE"), "name refused: the name \"ALICE\" is taken", 1008);
        check_refusal(text_frame("server"), "name refused: the name \"server\" is reserved", 1008);
    }

    TEST_CASE("server: the page over HTTP, then the connection closes") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        BytePeer browser;
        browser.connect(port);
        REQUIRE(browser.send("GET / HTTP/1.0\n\n"));  // printf 'GET / HTTP/1.0\n\n' | nc
        REQUIRE(cst::pump(
            server, [&] { return browser.ended(); }, browser));
        Response r = parse_response(browser.received);
        CHECK(r.status == "HTTP/1.1 200 OK");
        CHECK(r.body == chatsock::detail::chat_page);
        BytePeer poster;
        poster.connect(port);
        REQUIRE(poster.send("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        REQUIRE(cst::pump(
            server, [&] { return poster.ended(); }, poster));
        CHECK(parse_response(poster.received).status == "HTTP/1.1 405 Method Not Allowed");
        CHECK(server.client_count() == 0);
    }

    TEST_CASE("server: a request arriving one byte at a time is answered once whole") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        // The end of the request ("\r\n\r\n" or "\n\n") is found across reads of any size.
        for (const std::string& request : {upgrade_request(), "GET / HTTP/1.0\n\n"s}) {
            CAPTURE(request);
            BytePeer slow;
            slow.connect(port);
            for (char byte : request) {
                CHECK(slow.received.empty());  // no answer to half a request
                REQUIRE(slow.send(std::string(1, byte)));
                cst::run_for(milliseconds(2), server, slow);
            }
            REQUIRE(cst::pump(
                server, [&] { return slow.got("\r\n\r\n"); }, slow));
            const std::string status = parse_response(slow.received).status;
            CHECK(status == (request == upgrade_request() ? "HTTP/1.1 101 Switching Protocols"
                                                          : "HTTP/1.1 200 OK"));
        }
    }

    TEST_CASE("server: a request over 8192 bytes gets 431, one not finished in time 408") {
        cst::LoggedServer chat(
            [](chatsock::ServerOptions& o) { o.handshake_timeout = milliseconds(200); });
        BytePeer big;
        big.connect(chat.port);
        REQUIRE(big.send("GET / HTTP/1.1\r\nCookie: " + std::string(9000, 'c') + "\r\n\r\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return big.ended(); }, big));
        Response r = parse_response(big.received);
        CHECK(r.status == "HTTP/1.1 431 Request Header Fields Too Large");
        CHECK(r.headers["content-length"] == std::to_string(r.body.size()));
        CHECK(chat.log().find("\trefused\t127.0.0.1:") != std::string::npos);
        CHECK(chat.log().find("an HTTP request over 8192 bytes\n") != std::string::npos);

        BytePeer stalled;
        stalled.connect(chat.port);
        REQUIRE(stalled.send("GET / HTTP/1.1\r\nHost: x\r\n"));  // no blank line
        REQUIRE(cst::pump(
            chat.server, [&] { return stalled.ended(); }, stalled));
        CHECK(parse_response(stalled.received).status == "HTTP/1.1 408 Request Timeout");
        CHECK(chat.log().find("no username in time") != std::string::npos);
    }

    TEST_CASE("server: stopping tells line and WebSocket clients in their own formats") {
        auto options = cst::quiet_options();
        options.stop_drain_time = milliseconds(300);
        chatsock::Server server(options);
        const auto port = cst::start(server);
        BytePeer bob;
        bob.connect(port);
        REQUIRE(bob.send("bob\n"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("* welcome, bob!"); }, bob));
        Browser carol;
        carol.handshake(server, port);
        REQUIRE(carol.send(text_frame("carol")));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("* carol joined\r\n"); }, bob, carol));
        server.stop();
        CHECK_FALSE(server.run());  // nobody reads here: it waits out stop_drain_time
        const auto deadline = Clock::now() + cst::default_limit;
        while (!(bob.ended() && carol.ended()) && Clock::now() < deadline) {
            bob.read_available();
            carol.read_available();
            cst::sleep_ms(1);
        }
        CHECK(bob.got("\r\n* the server is stopping\r\n"));
        const auto frames = carol.frames();
        REQUIRE(frames.size() >= 2);
        CHECK(frames[frames.size() - 2].payload == notice_json("the server is stopping"));
        CHECK(frames.back().opcode == Ws::close);
        CHECK(frames.back().payload == close_payload(1001));
    }

    TEST_CASE("server: web = false closes an HTTP request without a response") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.web = false; });
        JoinedWires wires(chat.server);
        BytePeer browser;
        browser.connect(chat.port);
        REQUIRE(browser.send(upgrade_request()));
        REQUIRE(cst::pump(
            chat.server, [&] { return browser.ended(); }, browser));
        CHECK(browser.received.empty());
        CHECK(chat.log().find("\trefused\t127.0.0.1:") != std::string::npos);
        // Line and frame clients are served as ever.
        BytePeer bob;
        bob.connect(chat.port);
        REQUIRE(bob.send("bob\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("* welcome, bob!"); }, bob));
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("* alice joined\r\n"); }, alice, bob));
        CHECK(wires == std::map<std::string, std::string>{{"alice", "frames"}, {"bob", "lines"}});
    }
    // ---- the room's rules are the same for every kind of client -----------------------------

    TEST_CASE("server: announce_up_to and the name rules hold for line and WebSocket clients") {
        auto options = cst::quiet_options();
        options.announce_up_to = 2;
        chatsock::Server server(options);
        const auto port = cst::start(server);
        BytePeer bob;
        bob.connect(port);
        REQUIRE(bob.send("bob\n"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("* welcome, bob! 0 other users online\r\n"); }, bob));
        Browser ann;
        ann.handshake(server, port);
        REQUIRE(ann.send(text_frame("ann")));
        REQUIRE(cst::pump(
            server,
            [&] {
                return ann.got_text(notice_json("welcome, ann! 1 other user online")) &&
                       bob.got("* ann joined\r\n");
            },
            bob, ann));
        // A third user makes the room bigger than announce_up_to: nobody hears of the join.
        BytePeer cy;
        cy.connect(port);
        REQUIRE(cy.send("cy\n"));
        REQUIRE(cst::pump(
            server, [&] { return cy.got("\r\n"); }, bob, ann, cy));
        CHECK(cy.received ==
              "* welcome, cy! 2 other users online; joins and leaves are not announced in a "
              "room this big\r\n");
        cst::run_for(milliseconds(50), server, bob, ann, cy);
        CHECK_FALSE(bob.got("cy joined"));
        CHECK_FALSE(ann.got("cy joined"));

        // The name rules: a name taken in another case, the reserved name in any case.
        Browser dup;
        dup.handshake(server, port);
        REQUIRE(dup.send(text_frame("BOB")));
        REQUIRE(cst::pump(
            server,
            [&] { return dup.got_text(notice_json("name refused: the name \"BOB\" is taken")); },
            bob, ann, cy, dup));
        BytePeer reserved;
        reserved.connect(port);
        REQUIRE(reserved.send("Server\n"));
        REQUIRE(cst::pump(
            server,
            [&] { return reserved.got("* name refused: the name \"Server\" is reserved\r\n"); },
            bob, ann, cy, reserved));
    }

    TEST_CASE("server: a line or WebSocket client that stops reading is cut off like any other") {
        for (const bool web : {false, true}) {
            CAPTURE(web);
            auto options = cst::quiet_options();
            options.output_soft_limit = 128 * 1024;
            options.output_hard_limit = 256 * 1024;
            chatsock::Server server(options);
            const auto port = cst::start(server);
            ChatUser alice;
            cst::join_wait(server, alice, port, "alice");
            Browser slow;  // joins, then never reads again
            if (web) {
                slow.handshake(server, port);
                REQUIRE(slow.send(text_frame("slow")));
            } else {
                slow.connect(port);
                REQUIRE(slow.send("slow\n"));
            }
            REQUIRE(cst::pump(
                server, [&] { return alice.got("server", "slow joined"); }, alice));
            // Far more than the kernel's buffers and the hard limit together, in big messages.
            const std::string big(60000, 'x');
            const std::string why = "too slow: output queue over 262144 bytes";
            for (int i = 0; i < 2000 && !alice.got("server", "slow left (" + why + ")"); ++i) {
                REQUIRE_FALSE(alice.client.send(big));
                cst::run_for(milliseconds(1), server, alice);
            }
            CHECK(alice.got("server", "slow left (" + why + ")"));
        }
    }

    TEST_CASE("server: exit_when_empty returns once the last user, a line client, has left") {
        auto options = cst::quiet_options();
        options.exit_when_empty = true;
        chatsock::Server server(options);
        const auto port = cst::start(server);
        BytePeer bob;
        bob.connect(port);
        REQUIRE(bob.send("bob\n"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("* welcome, bob! 0 other users online\r\n"); }, bob));
        bob.close();
        cst::StopWatchdog watchdog(server, milliseconds(4000));
        const auto t0 = Clock::now();
        CHECK_FALSE(server.run());
        watchdog.disarm();
        CHECK_FALSE(watchdog.fired());
        CHECK(cst::elapsed_ms(t0) < 3000);
    }
    TEST_CASE("server: the chat commands work the same for line and WebSocket clients") {
        cst::LoggedServer chat;
        chatsock::enable_commands(chat.server);
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        BytePeer bob;
        bob.connect(chat.port);
        REQUIRE(bob.send("bob\n"));
        Browser ann;
        ann.handshake(chat.server, chat.port);
        REQUIRE(ann.send(text_frame("ann")));
        REQUIRE(cst::pump(
            chat.server,
            [&] { return alice.got("server", "bob joined") && alice.got("server", "ann joined"); },
            alice, bob, ann));
        REQUIRE(bob.send("/who\n"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("* 3 online: alice, ann, bob\r\n"); }, alice, bob,
            ann));
        REQUIRE(ann.send(text_frame("/msg bob psst")));
        REQUIRE(cst::pump(
            chat.server,
            [&] {
                return bob.got("* private from ann: psst\r\n") &&
                       ann.got_text(notice_json("private to bob: psst"));
            },
            alice, bob, ann));
        CHECK_FALSE(alice.got_text_starting("private"));
        REQUIRE(bob.send("/me waves\n"));
        REQUIRE(cst::pump(
            chat.server,
            [&] {
                return ann.got_text(notice_json("bob waves")) && alice.got("server", "bob waves");
            },
            alice, bob, ann));
        REQUIRE(ann.send(text_frame("/nick annie")));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("* ann is now known as annie\r\n"); }, alice, bob,
            ann));
        REQUIRE(ann.send(text_frame("//slash")));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("annie: /slash\r\n"); }, alice, bob, ann));
    }
}  // TEST_SUITE("web")
