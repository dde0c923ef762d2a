// Shared helpers for the chatsock unit and in-process tests.
//
// Everything here is single-threaded: a test drives the server with run_once() and its clients
// with poll(0) in turn (see pump), so the suite also runs where threads are unavailable.
// Every wait is bounded; every socket is on loopback with a port the OS picks.
#ifndef CHATSOCK_TESTS_SUPPORT_HPP
#define CHATSOCK_TESTS_SUPPORT_HPP

#include "chatsock.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <deque>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#if !defined(_WIN32)
#  include <atomic>
#  include <thread>
#  include <time.h>
#endif

namespace cst {

using chatsock::Clock;
using chatsock::milliseconds;

// The longest any single wait in a test may take before the test fails.
constexpr milliseconds default_limit{5000};

inline void sleep_ms(long ms) {
#if defined(_WIN32)
    ::Sleep(static_cast<DWORD>(ms));
#else
    timespec ts{ms / 1000, (ms % 1000) * 1000000L};
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
#endif
}

inline long long elapsed_ms(Clock::time_point since) {
    return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

// Where this machine cannot run a test (no IPv6 loopback, say), the test says so and returns:
// `return cst::skip("why");`. tests/lib.sh and ctest count the line as a skip, never a pass.
inline void skip(const std::string& why) { MESSAGE("SKIPPED: ", why); }

// ---- files -------------------------------------------------------------------------------

inline std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return lines;
}

inline std::vector<std::string> split_tabs(const std::string& line) {
    std::vector<std::string> fields;
    std::size_t start = 0;
    for (;;) {
        std::size_t end = line.find('\t', start);
        fields.push_back(
            line.substr(start, end == std::string::npos ? std::string::npos : end - start));
        if (end == std::string::npos) return fields;
        start = end + 1;
    }
}

inline long process_id() {
#if defined(_WIN32)
    return static_cast<long>(::GetCurrentProcessId());
#else
    return static_cast<long>(::getpid());
#endif
}

// A fresh directory under the system's temporary directory, removed with its contents at the end.
class TempDir {
public:
    TempDir() {
        static int counter = 0;
        namespace fs = std::filesystem;
        for (int attempt = 0; attempt < 100; ++attempt) {
            fs::path candidate =
                fs::temp_directory_path() /
                ("chatsock-test-" + std::to_string(process_id()) + "-" + std::to_string(++counter));
            std::error_code ec;
            if (fs::create_directory(candidate, ec) && !ec) {
                path_ = candidate;
                return;
            }
        }
        FAIL("cannot create a temporary directory");
    }
    ~TempDir() {
        std::error_code ec;
        if (!path_.empty()) std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string file(const std::string& name) const { return (path_ / name).string(); }
    std::string path() const { return path_.string(); }

private:
    std::filesystem::path path_;
};

// ---- server options ----------------------------------------------------------------------

// 127.0.0.1, a port the OS picks, no diagnostics.
inline chatsock::ServerOptions quiet_options() {
    chatsock::ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.diagnostics = nullptr;
    return options;
}

// Like quiet_options, but every diagnostic line is appended to `lines` (which must outlive the server).
inline chatsock::ServerOptions capturing_options(std::vector<std::string>& lines) {
    chatsock::ServerOptions options = quiet_options();
    options.diagnostics = [&lines](std::string_view line) { lines.emplace_back(line); };
    return options;
}

// Listens, failing the test if it cannot; returns the port.
inline std::uint16_t start(chatsock::Server& server) {
    auto ec = server.listen();
    INFO("listen: ", ec.message());
    REQUIRE_FALSE(ec);
    const std::uint16_t port = server.port();
    REQUIRE(port != 0);
    return port;
}

// The setup of the tests that read the conversation log: a temporary folder, quiet_options()
// with the log in that folder (file `log_name`), a server with those options, listening.
// `setup`, if given, runs before the server exists: it may change the options (the log path
// is already set) or prepare the log file.
//
//     cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.max_clients = 2; });
//     cst::join_wait(chat.server, alice, chat.port, "alice");
//     CHECK(chat.log().find("\tjoin\talice\t") != std::string::npos);
struct LoggedServer {
    using Setup = std::function<void(chatsock::ServerOptions&)>;

    explicit LoggedServer(const Setup& setup = {}, const std::string& log_name = "chat.log")
        : options(options_with_log(dir, log_name, setup)), server(options), port(start(server)) {}
    LoggedServer(const LoggedServer&) = delete;
    LoggedServer& operator=(const LoggedServer&) = delete;

    // Everything in the log so far.
    std::string log() const { return read_file(options.log_path); }

    TempDir dir;  // first: the others need it, and it must outlive the server
    chatsock::ServerOptions options;
    chatsock::Server server;
    const std::uint16_t port;

private:
    static chatsock::ServerOptions options_with_log(const TempDir& dir, const std::string& log_name,
                                                    const Setup& setup) {
        chatsock::ServerOptions options = quiet_options();
        options.log_path = dir.file(log_name);
        if (setup) setup(options);
        return options;
    }
};

// ---- frames one at a time ----------------------------------------------------------------

// Bytes in, whole frames out one at a time: FrameDecoder::decode() behind the feed()/next()
// that tests of the decoder read best with. The frames are copies, kept until taken.
class Frames {
public:
    explicit Frames(std::size_t max_payload = 65536) : decoder(max_payload) {}
    void feed(const char* data, std::size_t size) {
        decoder.decode(data, size, [this](std::string_view f) {
            ready_.emplace_back(f);
            return true;
        });
    }
    void feed(std::string_view bytes) { feed(bytes.data(), bytes.size()); }
    // The next whole payload, or false when there is none yet; valid until the next call.
    bool next(std::string_view& payload) {
        if (ready_.empty()) return false;
        current_ = std::move(ready_.front());
        ready_.pop_front();
        payload = current_;
        return true;
    }
    bool failed() const { return decoder.failed(); }
    const std::string& error() const { return decoder.error(); }
    std::size_t buffered() const { return decoder.buffered(); }

    chatsock::FrameDecoder decoder;

private:
    std::deque<std::string> ready_;
    std::string current_;
};

// ---- a client that records what it receives ----------------------------------------------

struct ChatUser {
    chatsock::Client client;
    std::vector<chatsock::Message> inbox;

    explicit ChatUser(chatsock::ClientOptions options = {}) : client(std::move(options)) {
        client.on_message = [this](const chatsock::Message& m) { inbox.push_back(m); };
    }
    ChatUser(const ChatUser&) = delete;
    ChatUser& operator=(const ChatUser&) = delete;

    std::error_code join(std::uint16_t port, std::string_view name,
                         const std::string& host = "127.0.0.1") {
        return client.connect(host, port, name);
    }
    bool got(std::string_view from, std::string_view text) const {
        for (const auto& m : inbox)
            if (m.from == from && m.text == text) return true;
        return false;
    }
    bool got_text(std::string_view text) const {
        for (const auto& m : inbox)
            if (m.text == text) return true;
        return false;
    }
    bool got_text_starting(std::string_view prefix) const {
        for (const auto& m : inbox)
            if (m.text.compare(0, prefix.size(), prefix) == 0) return true;
        return false;
    }
    std::size_t count_from(std::string_view from) const {
        std::size_t n = 0;
        for (const auto& m : inbox) n += m.from == from;
        return n;
    }
    std::vector<std::string> texts_from(std::string_view from) const {
        std::vector<std::string> out;
        for (const auto& m : inbox)
            if (m.from == from) out.push_back(m.text);
        return out;
    }
};

// ---- a raw socket that speaks the wire format by hand -------------------------------------

class RawPeer {
public:
    struct Frame2 {
        std::string from, text;
    };

    // Connects (non-blocking socket, TCP_NODELAY) or fails the test.
    void connect(std::uint16_t port, const std::string& host = "127.0.0.1") {
        std::error_code ec;
        socket_ = chatsock::connect_tcp(host, port, default_limit, ec);
        INFO("connect_tcp: ", ec.message());
        REQUIRE_FALSE(ec);
        REQUIRE(socket_.valid());
    }
    chatsock::socket_t get() const { return socket_.get(); }

    // Sends every byte, waiting (bounded) while the socket is full. False on error or timeout.
    bool send(std::string_view bytes) {
        const auto deadline = Clock::now() + default_limit;
        while (!bytes.empty()) {
            std::error_code ec;
            std::size_t n = chatsock::send_some(socket_.get(), bytes.data(), bytes.size(), ec);
            if (ec && !chatsock::detail::would_block(ec)) return false;
            if (ec) {
                if (Clock::now() >= deadline) return false;
                sleep_ms(1);
                continue;
            }
            bytes.remove_prefix(n);
        }
        return true;
    }
    bool send_frame(std::string_view payload) { return send(chatsock::encode_frame(payload)); }

    // Reads everything available now, decoding (sender, text) pairs into `messages`.
    void read_available() {
        if (!socket_.valid() || ended_) return;
        char buf[65536];
        for (;;) {
            std::error_code ec;
            std::size_t n = chatsock::recv_some(socket_.get(), buf, sizeof buf, ec);
            if (ec && chatsock::detail::would_block(ec)) return;
            if (ec) {
                error_ = ec;
                ended_ = true;
                return;
            }
            if (n == 0) {
                ended_ = true;
                return;
            }
            bytes_received_ += n;
            decoder_.decode(buf, n, [&](std::string_view frame) {
                if (!have_from_) {
                    from_.assign(frame);
                    have_from_ = true;
                } else {
                    have_from_ = false;
                    messages.push_back({from_, std::string(frame)});
                }
                return true;
            });
        }
    }
    // The server closed the connection (end-of-stream or a reset).
    bool ended() const { return ended_; }
    const std::error_code& error() const { return error_; }
    std::size_t bytes_received() const { return bytes_received_; }
    bool got_text_starting(std::string_view prefix) const {
        for (const auto& m : messages)
            if (m.text.compare(0, prefix.size(), prefix) == 0) return true;
        return false;
    }

    void shutdown_send() { chatsock::detail::shutdown_send(socket_.get()); }
    // Closes with a reset (SO_LINGER 0) instead of an orderly end-of-stream.
    void reset() {
        linger l{};
        l.l_onoff = 1;
        l.l_linger = 0;
        ::setsockopt(socket_.get(), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l),
                     sizeof l);
        socket_.close();
    }
    void close() { socket_.close(); }
    // A small receive buffer makes a peer that never reads fill up quickly.
    void set_receive_buffer(int bytes) {
        ::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVBUF, reinterpret_cast<const char*>(&bytes),
                     sizeof bytes);
    }

    std::vector<Frame2> messages;

private:
    chatsock::Socket socket_;
    chatsock::FrameDecoder decoder_{std::size_t(1) << 30};
    std::string from_;
    bool have_from_ = false;
    bool ended_ = false;
    std::error_code error_;
    std::size_t bytes_received_ = 0;
};

// Sets SO_LINGER 0 on a socket and closes it, so the peer sees a reset.
inline void reset_socket(chatsock::Socket& s) {
    linger l{};
    l.l_onoff = 1;
    l.l_linger = 0;
    ::setsockopt(s.get(), SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&l), sizeof l);
    s.close();
}

// A connected loopback pair (client end, server end) and the listener that made it.
struct SocketPair {
    chatsock::Socket listener, client, server;
};

inline SocketPair make_pair(const std::string& host = "127.0.0.1") {
    SocketPair p;
    std::error_code ec;
    p.listener = chatsock::listen_tcp(host, 0, ec);
    INFO("listen_tcp: ", ec.message());
    REQUIRE(p.listener.valid());
    p.client =
        chatsock::connect_tcp(host, chatsock::local_port(p.listener.get()), default_limit, ec);
    INFO("connect_tcp: ", ec.message());
    REQUIRE(p.client.valid());
    const auto deadline = Clock::now() + default_limit;
    while (!p.server.valid() && Clock::now() < deadline) {
        p.server = chatsock::accept_tcp(p.listener.get(), ec);
        if (!p.server.valid()) sleep_ms(1);
    }
    REQUIRE(p.server.valid());
    return p;
}

// ---- driving the loop ----------------------------------------------------------------------

inline void step(chatsock::Client& c) { c.poll(milliseconds(0)); }
inline void step(ChatUser& u) { u.client.poll(milliseconds(0)); }
inline void step(RawPeer& r) { r.read_available(); }

// Alternates server.run_once(5 ms) and one non-blocking turn of every peer until done() is true
// (returns true) or `limit` has passed (returns false). Use as REQUIRE(pump(...)).
template <class Done, class... Peers>
bool pump_within(milliseconds limit, chatsock::Server& server, Done&& done, Peers&... peers) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
        if (done()) return true;
        if (Clock::now() >= deadline) return false;
        auto ec = server.run_once(milliseconds(5));
        if (ec) {
            FAIL_CHECK("run_once failed: ", ec.message());
            return false;
        }
        (step(peers), ...);
    }
}

template <class Done, class... Peers>
bool pump(chatsock::Server& server, Done&& done, Peers&... peers) {
    return pump_within(default_limit, server, std::forward<Done>(done), peers...);
}

// Runs the loop for a fixed time (for "nothing else happens" checks; keep it short).
template <class... Peers>
void run_for(milliseconds duration, chatsock::Server& server, Peers&... peers) {
    pump_within(
        duration, server, [] { return false; }, peers...);
}

// Connects a ChatUser and waits for its welcome.
inline void join_wait(chatsock::Server& server, ChatUser& user, std::uint16_t port,
                      std::string_view name, const std::string& host = "127.0.0.1") {
    auto ec = user.join(port, name, host);
    INFO("connect: ", ec.message());
    REQUIRE_FALSE(ec);
    REQUIRE(pump(
        server, [&] { return user.got_text_starting("welcome, "); }, user));
    REQUIRE(user.client.is_open());
}

// Connects a RawPeer, sends its username and waits for its welcome.
inline void raw_join(chatsock::Server& server, RawPeer& peer, std::uint16_t port,
                     std::string_view name) {
    peer.connect(port);
    REQUIRE(peer.send_frame(name));
    REQUIRE(pump(
        server, [&] { return peer.got_text_starting("welcome, "); }, peer));
}

// Where threads exist: calls server.stop() if run() has not returned within `limit`, so a test
// of run() fails (fired() is true) instead of hanging. Elsewhere it does nothing.
class StopWatchdog {
public:
    StopWatchdog(chatsock::Server& server, milliseconds limit) {
#if !defined(_WIN32)
        thread_ = std::thread([this, &server, limit] {
            const auto deadline = Clock::now() + limit;
            while (!disarmed_.load() && Clock::now() < deadline) sleep_ms(5);
            if (!disarmed_.load()) {
                fired_.store(true);
                server.stop();
            }
        });
#else
        (void)server;
        (void)limit;
#endif
    }
    void disarm() {
#if !defined(_WIN32)
        disarmed_.store(true);
        if (thread_.joinable()) thread_.join();
#endif
    }
    ~StopWatchdog() { disarm(); }
    bool fired() const {
#if !defined(_WIN32)
        return fired_.load();
#else
        return false;
#endif
    }

private:
#if !defined(_WIN32)
    std::atomic<bool> disarmed_{false}, fired_{false};
    std::thread thread_;
#endif
};

}  // namespace cst

#endif  // CHATSOCK_TESTS_SUPPORT_HPP
