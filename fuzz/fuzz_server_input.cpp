// libFuzzer target for the server's input path: arbitrary bytes from a real TCP connection.
//
// One chatsock::Server runs in this process on 127.0.0.1 (port 0), driven by run_once(0) from
// the fuzz loop, with one well-behaved chatsock::Client, "observer", joined for the whole run.
// For each input a raw loopback socket connects, sends the bytes in input-derived chunks
// (pumping the server between chunks so it sees the pieces separately), shuts down its sending
// side and reads until the server closes. The first bytes pick the client's wire (issue 11):
// ten digits and spaces make a frame client, any other byte among them a line client (nc,
// telnet). Then, against a model built from an independent decode of the same bytes
// (fuzz/reference.hpp: ref_decode for frames, RefLines for lines):
//   - the raw client got exactly the notices it should (welcome, "message not delivered",
//     "name refused", "protocol error"), as well-formed frames or "* notice\r\n" lines (its
//     wire), and then end-of-stream;
//   - the observer got exactly "NAME joined", every relayed message, "NAME left ...", in order;
//   - the server is back to its one connection and the process holds no more descriptors;
//   - every 64 inputs a fresh chatsock::Client joins, says something, and the observer hears it.
// Every wait is bounded (kTimeLimit): a server that stops answering is reported, not waited for.
// Inputs that begin with an HTTP method and a space (a browser) are skipped: no model here
// says what a page request or a WebSocket should get; fuzz_wire checks answer_http and the
// WebSocket decoder, tests/e2e_browser.py the server's side of them.
//
// Input layout:
//   byte 0   chunking: 0-63 one piece; 64-127 byte by byte; 128-191 pieces of (byte0 & 63) + 1
//            bytes; 192-255 pieces of 1 .. (byte0 & 63) + 1 bytes from a generator
//   rest     the bytes the client sends

#include "chatsock.hpp"
#include "fuzz/reference.hpp"

#include <dirent.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace fuzzref;
using chatsock::milliseconds;

constexpr std::size_t kMaxPayload = 256;
constexpr const char* kServerName = "server";
constexpr const char* kObserver = "observer";
// Every input is over in a few milliseconds; these bounds only turn a hang into a report.
// The time limit is what counts; the turn limit guards against a clock that does not move.
constexpr long kPumpLimit = 50'000'000;                       // loop turns per wait, at most
constexpr auto kTimeLimit = std::chrono::milliseconds(3000);  // wall time per wait, at most

struct Heard {
    std::string from, text;
    bool any_refusal = false;  // expected only: "name refused: the name ...", any reason
    bool operator==(const Heard& o) const { return from == o.from && text == o.text; }
};

int open_descriptors() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (::readdir(d)) ++n;
        ::closedir(d);
    }
    return n;
}

void fail(const char* what) {
    std::fprintf(stderr, "fuzz_server_input: %s\n", what);
    __builtin_trap();
}

class World {
public:
    World() : server_(options()) {
        if (server_.listen()) fail("listen failed");
        port_ = server_.port();
        observer_.on_message = [this](const chatsock::Message& m) {
            heard_.push_back({m.from, m.text});
        };
        if (observer_.connect("127.0.0.1", port_, kObserver)) fail("observer cannot connect");
        expect_heard({{kServerName, "welcome, observer! 0 other users online"}});
        baseline_connections_ = server_.connection_count();
        if (baseline_connections_ != 1 || server_.client_count() != 1) fail("observer not joined");
    }

    void run(const std::uint8_t* data, std::size_t size) {
        const int fds_before = open_descriptors();
        const std::uint8_t chunking = size ? data[0] : 0;
        const std::string_view bytes(reinterpret_cast<const char*>(data) + (size ? 1 : 0),
                                     size ? size - 1 : 0);
        const chatsock::Wire wire = ref_detect_wire(bytes);
        if (wire == chatsock::Wire::http) return;  // a browser: not modelled here (see above)
        std::vector<Heard> to_client, to_observer;
        model(bytes, wire, to_client, to_observer);

        std::error_code ec;
        chatsock::Socket raw = chatsock::connect_tcp("127.0.0.1", port_, milliseconds(2000), ec);
        if (ec) fail("raw client cannot connect");
        received_.clear();
        raw_open_ = true;

        Rng rng{0x2545F491u ^ chunking};
        for (std::size_t pos = 0; pos < bytes.size();) {
            std::size_t n = bytes.size() - pos;
            if (chunking >= 64 && chunking < 128) n = 1;
            else if (chunking >= 128 && chunking < 192)
                n = std::min<std::size_t>(n, (chunking & 63u) + 1);
            else if (chunking >= 192)
                n = std::min<std::size_t>(n, 1 + rng.next() % ((chunking & 63u) + 1));
            if (!send_all(raw, bytes.substr(pos, n)))
                break;  // the server closed: it stopped reading
            pos += n;
            pump(raw);
        }
        chatsock::detail::shutdown_send(raw.get());

        // Until the server has closed the connection and the observer has heard it all.
        const auto deadline = chatsock::Clock::now() + kTimeLimit;
        long turns = 0;
        for (;; ++turns) {
            pump(raw);
            if (!raw_open_ && server_.connection_count() == baseline_connections_ &&
                heard_.size() >= to_observer.size())
                break;
            if (turns > kPumpLimit || chatsock::Clock::now() > deadline) {
                std::fprintf(stderr, "raw open %d, connections %zu, observer heard %zu of %zu\n",
                             raw_open_, server_.connection_count(), heard_.size(),
                             to_observer.size());
                fail("the server did not finish with the connection in time");
            }
        }
        raw.close();

        if (wire == chatsock::Wire::lines) check_client_lines(to_client);
        else check_client_frames(to_client);
        check_observer(to_observer);
        if (server_.client_count() != 1) fail("observer lost");

        if (++inputs_ % 64 == 0) probe();
        if (open_descriptors() != fds_before) fail("descriptor leak");
    }

private:
    static chatsock::ServerOptions options() {
        chatsock::ServerOptions o;
        o.host = "127.0.0.1";
        o.port = 0;
        o.server_name = kServerName;
        o.diagnostics = nullptr;
        o.max_payload = kMaxPayload;
        o.max_clients = 8;
        o.history = 0;  // one server serves every input: no input may hear an earlier one
        // Every input ends with a half-close, so these never decide an input's outcome; they
        // are short so that a connection the server forgot still goes away.
        o.handshake_timeout = milliseconds(5000);
        o.frame_timeout = milliseconds(5000);
        o.stop_drain_time = milliseconds(100);
        return o;
    }

    // What the raw client and the observer must receive for `bytes`, sent on `wire` (frames, or
    // lines; unknown when the input ends before its first bytes decide: then nothing at all).
    static void model(std::string_view bytes, chatsock::Wire wire, std::vector<Heard>& to_client,
                      std::vector<Heard>& to_observer) {
        Decoded d;  // a line client's lines are its "frames": the name, then one per message
        std::string protocol_error;  // the server's reason, quoting what it could not use
        if (wire == chatsock::Wire::lines) {
            RefLines lines(std::min<std::size_t>(4096, kMaxPayload));  // max_line, capped
            lines.feed(bytes);
            lines.finish();  // every input ends with a half-close
            d.frames = lines.lines;
            d.failed = lines.failed;
            protocol_error = "protocol error: " + lines.error();
        } else if (wire == chatsock::Wire::frames) {
            d = ref_decode(bytes, kMaxPayload);
            if (d.over_limit)
                protocol_error = "protocol error: frame of " + std::to_string(d.over_length) +
                                 " bytes is over the limit of " + std::to_string(kMaxPayload);
            else
                protocol_error =
                    "protocol error: bad frame header \"" +
                    chatsock::printable(bytes.substr(d.consumed, chatsock::header_size)) + "\"";
        }
        if (d.frames.empty()) {
            if (d.failed) to_client.push_back({kServerName, protocol_error});
            return;
        }
        const std::string& name = d.frames[0];
        if (!ref_username_ok(name, kServerName, chatsock::detail::default_max_name_bytes)) {
            to_client.push_back({kServerName, "name refused: ", true});
            return;
        }
        if (ref_equal_ci(name, kObserver)) {
            to_client.push_back({kServerName, "name refused: the name \"" + name + "\" is taken"});
            return;
        }
        to_client.push_back({kServerName, "welcome, " + name + "! 1 other user online"});
        to_observer.push_back({kServerName, name + " joined"});
        for (std::size_t i = 1; i < d.frames.size(); ++i) {
            const std::string& text = d.frames[i];
            if (text.empty()) continue;
            if (ref_valid_utf8(text)) to_observer.push_back({name, text});
            else to_client.push_back({kServerName, "message not delivered: it is not valid UTF-8"});
        }
        if (d.failed) {
            to_client.push_back({kServerName, protocol_error});
            to_observer.push_back({kServerName, name + " left (" + protocol_error + ")"});
        } else {
            to_observer.push_back({kServerName, name + " left"});
        }
    }

    // Sends all of `chunk`, serving the server while the socket is full. False if the server
    // has closed the connection.
    bool send_all(chatsock::Socket& raw, std::string_view chunk) {
        const auto deadline = chatsock::Clock::now() + kTimeLimit;
        for (long turns = 0; !chunk.empty(); ++turns) {
            std::error_code ec;
            const std::size_t n = chatsock::send_some(raw.get(), chunk.data(), chunk.size(), ec);
            if (ec && !chatsock::detail::would_block(ec)) return false;
            chunk.remove_prefix(n);
            if (turns > kPumpLimit || chatsock::Clock::now() > deadline)
                fail("the server stopped reading");
            if (!chunk.empty()) pump(raw);
        }
        return true;
    }

    // One turn of the server, the observer and the raw client's reading side.
    void pump(chatsock::Socket& raw) {
        if (server_.run_once(milliseconds(0))) fail("run_once failed");
        if (!observer_.poll(milliseconds(0))) fail("observer disconnected");
        while (raw_open_) {
            char buf[4096];
            std::error_code ec;
            const std::size_t n = chatsock::recv_some(raw.get(), buf, sizeof buf, ec);
            if (ec && chatsock::detail::would_block(ec)) break;
            if (ec) {
                std::fprintf(stderr, "raw client: %s\n", ec.message().c_str());
                fail("the server reset the connection instead of closing it");
            }
            if (n == 0) raw_open_ = false;
            received_.append(buf, n);
        }
    }

    void check_client_frames(const std::vector<Heard>& want) {
        chatsock::FrameDecoder d(1 << 20);
        std::vector<std::string> frames;
        d.decode(received_.data(), received_.size(), [&](std::string_view f) {
            frames.emplace_back(f);
            return true;
        });
        if (d.failed() || d.buffered() != 0) fail("the server sent a broken frame");
        if (frames.size() % 2 != 0) fail("the server sent a sender without a text");
        if (frames.size() / 2 != want.size()) {
            std::fprintf(stderr, "raw client got %zu messages, expected %zu\n", frames.size() / 2,
                         want.size());
            for (std::size_t i = 0; i + 1 < frames.size(); i += 2)
                std::fprintf(stderr, "  got %s > %s\n", chatsock::printable(frames[i]).c_str(),
                             chatsock::printable(frames[i + 1]).c_str());
            fail("wrong number of messages to the client");
        }
        for (std::size_t i = 0; i < want.size(); ++i) {
            const std::string& from = frames[2 * i];
            const std::string& text = frames[2 * i + 1];
            if (from != want[i].from) fail("a notice to the client from the wrong sender");
            if (!matches(text, want[i])) {
                std::fprintf(stderr, "got \"%s\", expected \"%s\"\n",
                             chatsock::printable(text).c_str(),
                             chatsock::printable(want[i].text).c_str());
                fail("wrong notice to the client");
            }
        }
    }

    // A line client hears one line per event, each ending "\r\n": "* text" for a notice.
    void check_client_lines(const std::vector<Heard>& want) {
        std::vector<std::string> lines;
        for (std::size_t at = 0; at < received_.size();) {
            const std::size_t end = received_.find("\r\n", at);
            if (end == std::string::npos) fail("the server sent a line without its \\r\\n");
            lines.push_back(received_.substr(at, end - at));
            at = end + 2;
        }
        if (lines.size() != want.size()) {
            std::fprintf(stderr, "raw line client got %zu lines, expected %zu\n", lines.size(),
                         want.size());
            for (const std::string& line : lines)
                std::fprintf(stderr, "  got %s\n", chatsock::printable(line).c_str());
            fail("wrong number of lines to the client");
        }
        for (std::size_t i = 0; i < want.size(); ++i) {
            if (!is_safe(lines[i])) fail("a line to the client with a control character");
            if (lines[i].rfind("* ", 0) != 0) fail("a notice to the client without its \"* \"");
            if (!matches(lines[i].substr(2), want[i])) {
                std::fprintf(stderr, "got \"%s\", expected \"* %s\"\n",
                             chatsock::printable(lines[i]).c_str(),
                             chatsock::printable(want[i].text).c_str());
                fail("wrong notice to the client");
            }
        }
    }

    void check_observer(const std::vector<Heard>& want) {
        bool same = heard_.size() == want.size();
        for (std::size_t i = 0; same && i < want.size(); ++i)
            same = heard_[i].from == want[i].from && matches(heard_[i].text, want[i]);
        if (!same) {
            for (const Heard& h : heard_)
                std::fprintf(stderr, "  heard %s > %s\n", chatsock::printable(h.from).c_str(),
                             chatsock::printable(h.text).c_str());
            for (const Heard& h : want)
                std::fprintf(stderr, "  expected %s > %s\n", chatsock::printable(h.from).c_str(),
                             chatsock::printable(h.text).c_str());
            fail("the observer heard something else");
        }
        heard_.clear();
    }

    // The model leaves one text open: which rule a refused name broke (fuzz_decoder checks
    // check_username itself). Everything else must be equal.
    static bool matches(const std::string& got, const Heard& want) {
        if (want.any_refusal) return got.rfind("name refused: the name ", 0) == 0 && is_safe(got);
        return got == want.text;
    }
    static bool is_safe(std::string_view s) { return ref_valid_utf8(s) && !ref_has_control(s); }

    // A fresh well-behaved client joins, speaks and leaves; the observer must hear it.
    void probe() {
        std::vector<Heard> got_by_probe;
        chatsock::Client probe;
        probe.on_message = [&](const chatsock::Message& m) {
            got_by_probe.push_back({m.from, m.text});
        };
        const std::string text = "ping " + std::to_string(inputs_);
        if (probe.connect("127.0.0.1", port_, "probe")) fail("probe cannot connect");
        if (probe.send(text)) fail("probe cannot send");
        probe.finish();
        const std::vector<Heard> want = {
            {kServerName, "probe joined"}, {"probe", text}, {kServerName, "probe left"}};
        const auto deadline = chatsock::Clock::now() + kTimeLimit;
        for (long turns = 0; probe.is_open() || heard_.size() < want.size() ||
                             server_.connection_count() != baseline_connections_;
             ++turns) {
            if (server_.run_once(milliseconds(0))) fail("run_once failed");
            if (!observer_.poll(milliseconds(0))) fail("observer disconnected");
            probe.poll(milliseconds(0));
            if (turns > kPumpLimit || chatsock::Clock::now() > deadline)
                fail("the probe was not relayed in time");
        }
        // It finished first, so the server's close confirms it: not server_closed, not a reset.
        if (probe.close_reason() != chatsock::CloseReason::finished) {
            std::fprintf(stderr, "probe: close reason %d (%s)\n",
                         static_cast<int>(probe.close_reason()), probe.close_detail().c_str());
            fail("probe closed badly");
        }
        if (!(got_by_probe.size() == 1 &&
              got_by_probe[0] == Heard{kServerName, "welcome, probe! 1 other user online"}))
            fail("the probe was not welcomed");
        check_observer(want);
    }

    // Waits, bounded, until the observer has heard exactly `want`.
    void expect_heard(const std::vector<Heard>& want) {
        const auto deadline = chatsock::Clock::now() + kTimeLimit;
        for (long turns = 0; heard_.size() < want.size(); ++turns) {
            if (server_.run_once(milliseconds(0))) fail("run_once failed");
            if (!observer_.poll(milliseconds(0))) fail("observer disconnected");
            if (turns > kPumpLimit || chatsock::Clock::now() > deadline)
                fail("the observer heard nothing");
        }
        check_observer(want);
    }

    chatsock::Server server_;
    chatsock::Client observer_;
    std::uint16_t port_ = 0;
    std::vector<Heard> heard_;
    std::size_t baseline_connections_ = 0;
    std::string received_;
    bool raw_open_ = false;
    std::uint64_t inputs_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static World* world = new World();  // lives for the whole run, never destroyed
    world->run(data, size);
    return 0;
}
