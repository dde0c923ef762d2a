// The server over loopback, in process and single-threaded: each test drives server.run_once()
// and its clients' poll() in turn (cst::pump). Only the stop-from-another-thread tests use a
// thread, and only where threads exist.
#include "chatsock.hpp"
#include "support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#if !defined(_WIN32)
#  include <fcntl.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <sys/stat.h>
#  include <sys/wait.h>
#  include <unistd.h>
#  include <atomic>
#  include <cerrno>
#  include <thread>
#endif

using namespace std::string_literals;
using chatsock::milliseconds;
using cst::ChatUser;
using cst::Clock;
using cst::RawPeer;

namespace {

struct Leave {
    std::string name, reason;
};

// Every on_leave call of a server, in order. Declare it after the server it watches.
struct Leaves : std::vector<Leave> {
    explicit Leaves(chatsock::Server& server) {
        server.on_leave = [this](const chatsock::ClientInfo& c, std::string_view reason) {
            push_back({c.name, std::string(reason)});
        };
    }
};

// "2026-11-25T03:39:03.123Z": checked by hand (std::regex trips g++ 12's warnings under ASan).
bool is_iso8601_utc_ms(const std::string& t) {
    const std::string shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (t.size() != shape.size()) return false;
    for (std::size_t i = 0; i < t.size(); ++i) {
        if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i]) return false;
    }
    const int month = std::stoi(t.substr(5, 2)), day = std::stoi(t.substr(8, 2));
    const int hour = std::stoi(t.substr(11, 2)), minute = std::stoi(t.substr(14, 2)),
              second = std::stoi(t.substr(17, 2));
    return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour < 24 && minute < 60 &&
           second < 61;
}

bool has_line(const std::vector<std::string>& lines, const std::string& needle) {
    for (const auto& l : lines)
        if (l.find(needle) != std::string::npos) return true;
    return false;
}

std::size_t count_messages(const ChatUser& u, std::string_view from, std::string_view text) {
    std::size_t n = 0;
    for (const auto& m : u.inbox) n += m.from == from && m.text == text;
    return n;
}

// The log line of the first event of this kind ("refused", "error" ...), split at its tabs.
std::vector<std::string> log_row(const std::string& path, const std::string& event) {
    for (const auto& line : cst::split_lines(cst::read_file(path))) {
        auto fields = cst::split_tabs(line);
        if (fields.size() == 4 && fields[1] == event) return fields;
    }
    return {};
}

// "127.0.0.1:<port>": how the server names the peer of a socket connected to it over IPv4.
std::string peer_of(chatsock::socket_t s) {
    return "127.0.0.1:" + std::to_string(chatsock::local_port(s));
}

// Whether this machine has an IPv6 loopback: plain system calls, not chatsock's, bind ::1.
bool have_ipv6_loopback() {
    chatsock::detail::start_network();
    chatsock::Socket s(::socket(AF_INET6, SOCK_STREAM, 0));
    if (!s) return false;
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr.s6_addr[15] = 1;  // ::1, port 0
    const auto len = static_cast<socklen_t>(sizeof addr);
    return ::bind(s.get(), reinterpret_cast<const sockaddr*>(&addr), len) == 0;
}

// The id of the joined user with this name (no_client if none).
chatsock::ClientId id_of(const chatsock::Server& server, const std::string& name) {
    for (const auto& c : server.clients())
        if (c.name == name) return c.id;
    return chatsock::no_client;
}

#if !defined(_WIN32)
// Runs server.run() on a thread of its own. However the test ends, the destructor stops the
// server and joins the thread (calling `while_stopping`, if given, as it waits).
class ServerThread {
public:
    explicit ServerThread(chatsock::Server& server, std::function<void()> while_stopping = {})
        : server_(server), while_stopping_(std::move(while_stopping)) {
        thread_ = std::thread([this] {
            server_.run();
            returned_.store(true);
        });
    }
    ~ServerThread() {
        server_.stop();
        const auto deadline = Clock::now() + cst::default_limit;
        while (!returned_.load() && Clock::now() < deadline) {
            if (while_stopping_) while_stopping_();
            cst::sleep_ms(5);
        }
        thread_.join();
    }
    ServerThread(const ServerThread&) = delete;
    ServerThread& operator=(const ServerThread&) = delete;
    bool returned() const { return returned_.load(); }

private:
    chatsock::Server& server_;
    std::function<void()> while_stopping_;
    std::atomic<bool> returned_{false};
    std::thread thread_;
};

// Runs `check` in a child process, so it can change process-wide settings (the descriptor
// limit) without touching this one. `check` returns "" when all is well, else what went wrong;
// this returns the same, or why the child did not report (crashed, hung).
std::string run_in_child(const std::function<std::string()>& check) {
    int report[2];
    if (::pipe(report) != 0) return "pipe() failed";
    std::fflush(nullptr);  // nothing buffered to be written twice, should the child flush
    const pid_t pid = ::fork();
    if (pid < 0) return "fork() failed";
    if (pid == 0) {
        ::close(report[0]);
        std::string result;
        try {
            result = check();
        } catch (...) { result = "the check threw an exception"; }
        if (!result.empty()) (void)!::write(report[1], result.data(), result.size());
        ::_exit(result.empty() ? 0 : 3);  // no atexit handlers, no doctest report in the child
    }
    ::close(report[1]);
    int status = 0;
    bool exited = false;
    for (const auto deadline = Clock::now() + cst::default_limit; Clock::now() < deadline;) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            break;
        }
        cst::sleep_ms(5);
    }
    if (!exited) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
    }
    std::string said;
    char buf[512];
    ssize_t n;
    while ((n = ::read(report[0], buf, sizeof buf)) > 0)
        said.append(buf, static_cast<std::size_t>(n));
    ::close(report[0]);
    if (!exited) return "the child did not finish in time";
    if (WIFSIGNALED(status))
        return "the child was killed by signal " + std::to_string(WTERMSIG(status));
    if (WEXITSTATUS(status) != 0 && said.empty())
        return "the child exited with status " + std::to_string(WEXITSTATUS(status));
    return said;
}
#endif

// The setup of the frame-timeout tests: a server with this frame_timeout, whose leaves are
// recorded, a reader and a raw peer already joined.
struct FrameTimeoutRoom {
    FrameTimeoutRoom(milliseconds frame_timeout, const char* reader_name, const char* peer_name)
        : server(with_frame_timeout(frame_timeout)), leaves(server) {
        const auto port = cst::start(server);
        cst::join_wait(server, reader, port, reader_name);
        cst::raw_join(server, peer, port, peer_name);
    }
    static chatsock::ServerOptions with_frame_timeout(milliseconds frame_timeout) {
        auto options = cst::quiet_options();
        options.frame_timeout = frame_timeout;
        return options;
    }
    chatsock::Server server;
    Leaves leaves;
    ChatUser reader;
    RawPeer peer;
};

}  // namespace

TEST_SUITE("server") {
    TEST_CASE("the timestamp checker used below can fail") {
        CHECK(is_iso8601_utc_ms("2026-11-25T03:39:03.123Z"));
        CHECK_FALSE(is_iso8601_utc_ms("2026-11-25 03:39:03.123Z"));
        CHECK_FALSE(is_iso8601_utc_ms("2026-11-25T03:39:03.123"));
        CHECK_FALSE(is_iso8601_utc_ms("2026-13-25T03:39:03.123Z"));
        CHECK_FALSE(is_iso8601_utc_ms("2026-11-25T03:39:03,123Z"));
    }

    TEST_CASE("two clients chat: the sender never gets its own message") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        CHECK(alice.got("server", "welcome, alice! 0 other users online"));
        cst::join_wait(server, bob, port, "bob");
        CHECK(bob.got("server", "welcome, bob! 1 other user online"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "bob joined"); }, alice, bob));

        REQUIRE_FALSE(alice.client.send("hello bob"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "hello bob"); }, alice, bob));
        // Bob answers; alice's stream has anything the server sent her before the answer.
        REQUIRE_FALSE(bob.client.send("hi alice"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("bob", "hi alice"); }, alice, bob));
        CHECK(alice.count_from("alice") == 0);
        CHECK(bob.count_from("bob") == 0);
        CHECK_FALSE(bob.got("alice", "hi alice"));

        for (const auto& m : bob.inbox) {
            CAPTURE(m.from);
            CHECK(m.from_server == (m.from == "server"));
        }
        // A third user gets the count right and everyone else hears of it.
        ChatUser carol;
        cst::join_wait(server, carol, port, "carol");
        CHECK(carol.got("server", "welcome, carol! 2 other users online"));
        REQUIRE(cst::pump(
            server,
            [&] {
                return alice.got("server", "carol joined") && bob.got("server", "carol joined");
            },
            alice, bob, carol));
        CHECK_FALSE(carol.got("server", "carol joined"));
    }

    TEST_CASE("join and leave notices come from the server, and callbacks see them") {
        chatsock::Server server(cst::quiet_options());
        std::vector<chatsock::ClientInfo> joins;
        std::vector<Leave> leaves;
        server.on_join = [&](const chatsock::ClientInfo& c) { joins.push_back(c); };
        server.on_leave = [&](const chatsock::ClientInfo& c, std::string_view reason) {
            leaves.push_back({c.name, std::string(reason)});
        };
        const auto port = cst::start(server);
        CHECK(server.client_count() == 0);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE(joins.size() == 2);
        CHECK(joins[0].name == "alice");
        CHECK(joins[1].name == "bob");
        CHECK(joins[0].id != joins[1].id);
        CHECK(joins[0].id != chatsock::no_client);
        CHECK(joins[1].peer.rfind("127.0.0.1:", 0) == 0);
        CHECK(server.client_count() == 2);
        CHECK(server.connection_count() == 2);
        auto infos = server.clients();
        REQUIRE(infos.size() == 2);
        CHECK(((infos[0].name == "alice" && infos[1].name == "bob") ||
               (infos[0].name == "bob" && infos[1].name == "alice")));

        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "bob joined"); }, alice, bob));
        const chatsock::Message* notice = nullptr;
        for (const auto& m : alice.inbox)
            if (m.text == "bob joined") notice = &m;
        REQUIRE(notice);
        CHECK(notice->from == "server");
        CHECK(notice->from_server);

        bob.client.finish();
        REQUIRE(cst::pump(
            server, [&] { return !bob.client.is_open() && alice.got("server", "bob left"); }, alice,
            bob));
        CHECK(bob.client.close_reason() == chatsock::CloseReason::finished);
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "bob");
        CHECK(leaves[0].reason == "left");
        CHECK(server.client_count() == 1);
        REQUIRE(cst::pump(
            server, [&] { return server.connection_count() == 1; }, alice));
    }

    TEST_CASE("a custom server_name names the notices and is reserved") {
        auto options = cst::quiet_options();
        options.server_name = "hub";
        chatsock::Server server(options);
        const auto port = cst::start(server);
        chatsock::ClientOptions client_options;
        client_options.server_name = "hub";
        ChatUser alice(client_options), bob(client_options);
        cst::join_wait(server, alice, port, "alice");
        REQUIRE(alice.got("hub", "welcome, alice! 0 other users online"));
        CHECK(alice.inbox.front().from_server);
        // "server" is an ordinary name now; "HUB" is not.
        cst::join_wait(server, bob, port, "server");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("hub", "server joined"); }, alice, bob));
        REQUIRE_FALSE(bob.client.send("hi from a user called server"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "hi from a user called server"); }, alice,
            bob));
        for (const auto& m : alice.inbox) {
            CAPTURE(m.text);
            CHECK(m.from_server == (m.from == "hub"));
        }
        ChatUser fake(client_options);
        REQUIRE_FALSE(fake.join(port, "HUB"));
        REQUIRE(cst::pump(
            server, [&] { return !fake.client.is_open(); }, fake));
        CHECK(fake.got("hub", "name refused: the name \"HUB\" is reserved"));
    }

    TEST_CASE("refused names: the client is told why and closed") {
        std::vector<std::string> diagnostics;
        chatsock::Server server(cst::capturing_options(diagnostics));
        std::size_t joins = 0;
        server.on_join = [&](const chatsock::ClientInfo&) { ++joins; };
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        REQUIRE(joins == 1);

        std::string name, reason;
        SUBCASE("taken, ignoring case") {
            name = "ALICE";
            reason = "the name \"ALICE\" is taken";
        }
        SUBCASE("empty") {
            name = "";
            reason = "the name is empty";
        }
        SUBCASE("33 bytes") {
            name = std::string(33, 'n');
            reason = "the name is longer than 32 bytes";
        }
        SUBCASE("invalid UTF-8") {
            name = "bad\xff";
            reason = "the name is not valid UTF-8";
        }
        SUBCASE("control character") {
            name = "evil\x1b[2J";
            reason = "the name contains control characters";
        }
        SUBCASE("reserved") {
            name = "Server";
            reason = "the name \"Server\" is reserved";
        }
        SUBCASE("leading space") {
            name = " alice";
            reason = "the name starts or ends with a space";
        }
        CAPTURE(name);

        ChatUser intruder;
        REQUIRE_FALSE(intruder.join(port, name));
        REQUIRE(cst::pump(
            server, [&] { return !intruder.client.is_open(); }, intruder, alice));
        REQUIRE(intruder.inbox.size() == 1);
        CHECK(intruder.inbox[0].from == "server");
        CHECK(intruder.inbox[0].from_server);
        CHECK(intruder.inbox[0].text == "name refused: " + reason);
        CHECK(intruder.client.close_reason() == chatsock::CloseReason::refused);
        CHECK(intruder.client.close_detail() == "name refused: " + reason);
        CHECK_FALSE(intruder.client.joined());
        CHECK(joins == 1);
        CHECK(server.client_count() == 1);
        CHECK(has_line(diagnostics, ": " + reason));
        REQUIRE(cst::pump(
            server, [&] { return server.connection_count() == 1; }, alice));
        // Alice heard nothing about it, and the chat still works.
        cst::run_for(milliseconds(20), server, alice);
        CHECK(alice.inbox.size() == 1);
        ChatUser bob;
        cst::join_wait(server, bob, port, "bob");
        REQUIRE_FALSE(bob.client.send("still here"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("bob", "still here"); }, alice, bob));
    }

    TEST_CASE("a name is free again once its user has left, in any ASCII case") {
        chatsock::Server server(cst::quiet_options());
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser bob;
        cst::join_wait(server, bob, port, "bob");
        // Joins `name`: true once welcomed, false once refused and closed.
        auto joins = [&](ChatUser& u, const std::string& name) {
            REQUIRE_FALSE(u.join(port, name));
            REQUIRE(cst::pump(
                server, [&] { return u.got_text_starting("welcome, ") || !u.client.is_open(); }, u,
                bob));
            return u.client.is_open();
        };
        auto refused_as_taken = [&](const std::string& name) {
            ChatUser u;
            CHECK_FALSE(joins(u, name));
            CHECK(u.got("server", "name refused: the name \"" + name + "\" is taken"));
        };

        // "Alice", not "alice": the server must free the name in the case it keeps names in.
        RawPeer first;
        cst::raw_join(server, first, port, "Alice");
        refused_as_taken("ALICE");
        refused_as_taken("alice");
        SUBCASE("she finishes") { first.shutdown_send(); }
        SUBCASE("her connection is reset") { first.reset(); }
        SUBCASE("the server disconnects her") { server.disconnect(id_of(server, "Alice"), "bye"); }
        SUBCASE("a protocol error cuts her off") { REQUIRE(first.send("abc       ")); }
        REQUIRE(cst::pump(
            server, [&] { return leaves.size() == 1; }, bob, first));
        CHECK(leaves[0].name == "Alice");
        CHECK(server.client_count() == 1);

        // Her name is free again, in another case; while that user is joined it is taken again.
        ChatUser second;
        CHECK(joins(second, "alice"));
        refused_as_taken("ALICE");
        second.client.finish();
        REQUIRE(cst::pump(
            server, [&] { return leaves.size() == 2; }, bob, second));
        ChatUser third;
        CHECK(joins(third, "Alice"));
        CHECK(server.client_count() == 2);
        REQUIRE(cst::pump(
            server, [&] { return count_messages(bob, "server", "Alice joined") == 2; }, bob,
            third));
    }

    TEST_CASE("the 32-byte name limit is in bytes and configurable") {
        auto options = cst::quiet_options();
        options.max_name_bytes = 8;
        chatsock::Server server(options);
        const auto port = cst::start(server);
        ChatUser ok, long_name;
        cst::join_wait(server, ok, port, "12345678");
        REQUIRE_FALSE(long_name.join(port, "123456789"));
        REQUIRE(cst::pump(
            server, [&] { return !long_name.client.is_open(); }, long_name));
        CHECK(long_name.got("server", "name refused: the name is longer than 8 bytes"));
    }

    TEST_CASE("a connection that sends no username in time is told and closed") {
        auto options = cst::quiet_options();
        options.handshake_timeout = milliseconds(200);
        chatsock::Server server(options);
        std::size_t joins = 0;
        server.on_join = [&](const chatsock::ClientInfo&) { ++joins; };
        const auto port = cst::start(server);
        RawPeer silent;
        silent.connect(port);
        const auto t0 = Clock::now();
        REQUIRE(cst::pump(
            server, [&] { return silent.ended(); }, silent));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 150);
        CHECK(ms < 2000);
        REQUIRE(silent.messages.size() == 1);
        CHECK(silent.messages[0].from == "server");
        CHECK(silent.messages[0].text == "no username within 200 ms");
        CHECK(joins == 0);
        silent.close();
        REQUIRE(cst::pump(server, [&] { return server.connection_count() == 0; }));

        // A client that names itself in time is not affected, even after the timeout has passed.
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        cst::run_for(milliseconds(300), server, alice);
        CHECK(alice.client.is_open());
        CHECK(server.client_count() == 1);
    }

    TEST_CASE("max_clients: connections beyond it are told and closed") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.max_clients = 2; });
        ChatUser alice, bob, carol;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        REQUIRE_FALSE(carol.join(chat.port, "carol"));
        const std::string carol_peer = peer_of(carol.client.socket());
        REQUIRE(cst::pump(
            chat.server, [&] { return !carol.client.is_open(); }, carol));
        REQUIRE(carol.inbox.size() == 1);
        CHECK(carol.inbox[0].from == "server");
        CHECK(carol.inbox[0].text == "the server is full (2 clients)");
        // The log names the refused connection by its address.
        const auto row = log_row(chat.options.log_path, "refused");
        REQUIRE(row.size() == 4);
        CHECK(row[2] == carol_peer);
        CHECK(row[3] == "server full");
        CHECK(chat.server.client_count() == 2);
        REQUIRE(cst::pump(
            chat.server, [&] { return chat.server.connection_count() == 2; }, alice, bob));
        CHECK_FALSE(alice.got("server", "carol joined"));

        // Once someone leaves there is room again.
        bob.client.finish();
        REQUIRE(cst::pump(
            chat.server, [&] { return chat.server.connection_count() == 1; }, alice, bob));
        ChatUser dave;
        cst::join_wait(chat.server, dave, chat.port, "dave");
        CHECK(chat.server.client_count() == 2);
    }

    TEST_CASE("announce_up_to: joins and leaves are announced only in rooms up to that size") {
        std::vector<std::string> lines;
        cst::LoggedServer chat([&](chatsock::ServerOptions& o) {
            o.diagnostics = cst::capturing_options(lines).diagnostics;
            o.announce_up_to = 2;
        });
        ChatUser alice, bob, carol;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        CHECK(alice.got("server", "welcome, alice! 0 other users online"));
        cst::join_wait(chat.server, bob, chat.port, "bob");  // a room of 2: announced
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob joined"); }, alice, bob));
        // A room of 3: not announced, and carol is told.
        cst::join_wait(chat.server, carol, chat.port, "carol");
        CHECK(carol.got("server",
                        "welcome, carol! 2 other users online; joins and leaves are not announced "
                        "in a room this big"));

        // Messages still reach everyone; a leave from the room of 3 is not announced either.
        REQUIRE_FALSE(carol.client.send("hi all"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("carol", "hi all") && bob.got("carol", "hi all"); },
            alice, bob, carol));
        carol.client.finish();
        REQUIRE(cst::pump(
            chat.server, [&] { return chat.server.client_count() == 2; }, alice, bob, carol));
        // Back to a room of 2: bob's leave is announced.
        bob.client.finish();
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob left"); }, alice, bob));
        CHECK_FALSE(alice.got_text("carol joined"));
        CHECK_FALSE(bob.got_text("carol joined"));
        CHECK_FALSE(alice.got_text("carol left"));
        CHECK_FALSE(alice.got_text_starting("welcome, carol"));

        // The server's own output and the log have every join and leave, announced or not.
        CHECK(has_line(lines, "carol joined from 127.0.0.1:"));
        CHECK(has_line(lines, "carol left"));
        const std::string log = chat.log();
        CHECK(log.find("\tjoin\tcarol\t") != std::string::npos);
        CHECK(log.find("\tleave\tcarol\tleft") != std::string::npos);
    }

#if !defined(_WIN32)
    // The descriptor limit is process-wide, so each test sets a known one in a child process and
    // checks the server there (see run_in_child).
    //
    // Sets the soft limit to `soft` and the hard one to `hard`; returns the hard limit now in force
    // (0: none could be set). Lowering the hard limit is always allowed, except under valgrind,
    // which refuses any change to it: there the hard limit stays as it is.
    rlim_t set_descriptor_limit(rlim_t soft, rlim_t hard) {
        rlimit r{};
        r.rlim_cur = soft;
        r.rlim_max = hard;
        if (::setrlimit(RLIMIT_NOFILE, &r) == 0) return hard;
        ::getrlimit(RLIMIT_NOFILE, &r);
        r.rlim_cur = soft;
        if (::setrlimit(RLIMIT_NOFILE, &r) != 0) return 0;
        return r.rlim_max;
    }

    // Whether this process may set a hard descriptor limit of `hard` (only lowering is allowed).
    bool hard_limit_at_least(rlim_t hard) {
        rlimit r{};
        if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return false;
        return r.rlim_max == RLIM_INFINITY || r.rlim_max >= hard;
    }

    rlim_t soft_descriptor_limit() {
        rlimit r{};
        ::getrlimit(RLIMIT_NOFILE, &r);
        return r.rlim_cur;
    }

    TEST_CASE("listen() raises the descriptor limit to fit max_clients") {
        if (!hard_limit_at_least(600)) return cst::skip("the hard descriptor limit is under 600");
        const std::string failed = run_in_child([]() -> std::string {
            std::vector<std::string> lines;
            auto options = cst::capturing_options(lines);
            options.max_clients = 500;
            const rlim_t hard = set_descriptor_limit(100, 600);
            if (hard == 0) return "cannot set the descriptor limit";
            if (hard == RLIM_INFINITY || hard < 600)
                return "a hard limit of " + std::to_string(hard);
            chatsock::Server server(options);
            if (server.listen()) return "listen() failed";
            // The clients plus a reserve for the server's own descriptors.
            const rlim_t soft = soft_descriptor_limit();
            if (soft < 532)
                return "the soft limit is " + std::to_string(soft) + ", not 532 or more";
            if (server.options().max_clients != 500)
                return "max_clients became " + std::to_string(server.options().max_clients);
            if (has_line(lines, "descriptor limit")) return "a descriptor limit line was printed";
            return "";
        });
        CHECK(failed == "");
    }

    TEST_CASE("listen() lowers max_clients to what the descriptor limit allows, and says so") {
        if (!hard_limit_at_least(256)) return cst::skip("the hard descriptor limit is under 256");
        const std::string failed = run_in_child([]() -> std::string {
            const rlim_t hard = set_descriptor_limit(100, 256);
            if (hard == 0) return "cannot set the descriptor limit";
            if (hard == RLIM_INFINITY || hard < 256)
                return "a hard limit of " + std::to_string(hard);
            const auto n = static_cast<std::size_t>(hard);
            std::vector<std::string> lines;
            auto options = cst::capturing_options(lines);
            options.max_clients = n;  // can't fit with the server's own descriptors
            chatsock::Server server(options);
            if (server.listen()) return "listen() failed";
            const rlim_t soft = soft_descriptor_limit();  // raised as far as it goes
            if (soft != hard)
                return "the soft limit is " + std::to_string(soft) + ", not " +
                       std::to_string(hard);
            if (server.options().max_clients != n - 32)
                return "max_clients became " + std::to_string(server.options().max_clients);
            const std::string said = "the descriptor limit (ulimit -n) is " + std::to_string(n) +
                                     ": accepting " + std::to_string(n - 32) +
                                     " clients, not max_clients " + std::to_string(n);
            if (!has_line(lines, said)) return "no line \"" + said + "\"";
            return "";
        });
        CHECK(failed == "");
    }
#endif

    TEST_CASE("a protocol error disconnects that client only") {
        cst::LoggedServer chat;
        Leaves leaves(chat.server);
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");

        SUBCASE("a bad header after joining") {
            RawPeer mallory;
            cst::raw_join(chat.server, mallory, chat.port, "mallory");
            REQUIRE(mallory.send("abc       "));
            REQUIRE(cst::pump(
                chat.server, [&] { return mallory.ended(); }, mallory, alice, bob));
            CHECK(mallory.messages.back().from == "server");
            CHECK(mallory.messages.back().text ==
                  "protocol error: bad frame header \"abc       \"");
            REQUIRE(leaves.size() == 1);
            CHECK(leaves[0].name == "mallory");
            CHECK(leaves[0].reason == "protocol error: bad frame header \"abc       \"");
            REQUIRE(cst::pump(
                chat.server,
                [&] {
                    return alice.got(
                        "server", "mallory left (protocol error: bad frame header \"abc       \")");
                },
                alice, bob));
        }
        SUBCASE("a bad header instead of a username") {
            RawPeer mallory;
            mallory.connect(chat.port);
            const std::string peer = peer_of(mallory.get());
            // Digits and spaces: a frame client (a '-' would make it a line client, whose
            // first line has not ended).
            REQUIRE(mallory.send("1 2       "));
            REQUIRE(cst::pump(
                chat.server, [&] { return mallory.ended(); }, mallory, alice, bob));
            REQUIRE(mallory.messages.size() == 1);
            CHECK(mallory.messages[0].text == "protocol error: bad frame header \"1 2       \"");
            CHECK(leaves.empty());  // never joined
            // Logged under its address, as it has no name yet.
            const auto row = log_row(chat.options.log_path, "error");
            REQUIRE(row.size() == 4);
            CHECK(row[2] == peer);
            CHECK(row[3] == "protocol error: bad frame header \"1 2       \"");
        }
        SUBCASE("a header over the payload limit, refused before the payload") {
            RawPeer mallory;
            cst::raw_join(chat.server, mallory, chat.port, "mallory");
            REQUIRE(mallory.send("9999999999"));
            REQUIRE(cst::pump(
                chat.server, [&] { return mallory.ended(); }, mallory, alice, bob));
            CHECK(mallory.messages.back().text ==
                  "protocol error: frame of 9999999999 bytes is over the limit of 65536");
            REQUIRE(leaves.size() == 1);
            CHECK(leaves[0].reason ==
                  "protocol error: frame of 9999999999 bytes is over the limit of 65536");
        }
        SUBCASE("one byte over the default limit") {
            RawPeer mallory;
            cst::raw_join(chat.server, mallory, chat.port, "mallory");
            REQUIRE(mallory.send("65537     "));
            REQUIRE(cst::pump(
                chat.server, [&] { return mallory.ended(); }, mallory, alice, bob));
            CHECK(mallory.messages.back().text ==
                  "protocol error: frame of 65537 bytes is over the limit of 65536");
        }
        CHECK(chat.server.client_count() == 2);
        REQUIRE_FALSE(alice.client.send("unaffected"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "unaffected"); }, alice, bob));
        CHECK(alice.client.is_open());
        CHECK(bob.client.is_open());
    }

    TEST_CASE("max_payload: a frame of that size is relayed whole, one byte more is refused") {
        auto options = cst::quiet_options();
        options.max_payload = 100;
        chatsock::Server server(options);
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        RawPeer mallory;
        cst::raw_join(server, mallory, port, "mallory");

        const std::string largest = std::string(99, 'm') + "!";  // exactly max_payload bytes
        REQUIRE(mallory.send_frame(largest));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("mallory", largest) && bob.got("mallory", largest); },
            alice, bob, mallory));
        // A header announcing 101 bytes is refused at once, before any of its payload.
        REQUIRE(mallory.send("101       "));
        REQUIRE(cst::pump(
            server, [&] { return mallory.ended(); }, mallory, alice, bob));
        const std::string reason = "protocol error: frame of 101 bytes is over the limit of 100";
        REQUIRE_FALSE(mallory.messages.empty());
        CHECK(mallory.messages.back().from == "server");
        CHECK(mallory.messages.back().text == reason);
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "mallory");
        CHECK(leaves[0].reason == reason);
        const std::string notice = "mallory left (" + reason + ")";
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", notice) && bob.got("server", notice); }, alice,
            bob));
        // The others are unaffected.
        CHECK(server.client_count() == 2);
        REQUIRE_FALSE(alice.client.send("unaffected"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "unaffected"); }, alice, bob));
        CHECK(alice.client.is_open());
        CHECK(bob.client.is_open());
    }

    TEST_CASE("a message that is not valid UTF-8 is not relayed, and the sender is told") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE_FALSE(alice.client.send("bad \xff\xfe bytes"));
        REQUIRE_FALSE(alice.client.send("\xED\xA0\x80"));  // a surrogate
        REQUIRE_FALSE(alice.client.send("good"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "good"); }, alice, bob));
        REQUIRE(cst::pump(
            server,
            [&] {
                return count_messages(alice, "server",
                                      "message not delivered: it is not valid UTF-8") == 2;
            },
            alice, bob));
        CHECK(bob.texts_from("alice") == std::vector<std::string>{"good"});
        CHECK(alice.client.is_open());  // told, not disconnected
    }

    TEST_CASE("an empty message is not relayed") {
        chatsock::Server server(cst::quiet_options());
        std::size_t callbacks = 0;
        server.on_message = [&](const chatsock::ClientInfo&, std::string&) {
            ++callbacks;
            return true;
        };
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE_FALSE(alice.client.send(""));
        REQUIRE_FALSE(alice.client.send("after"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "after"); }, alice, bob));
        CHECK(bob.texts_from("alice") == std::vector<std::string>{"after"});
        CHECK(callbacks == 1);
        CHECK(alice.client.is_open());
    }

    TEST_CASE("on_message can rewrite a message or drop it") {
        cst::LoggedServer chat;
        std::vector<std::string> seen_by_callback;
        chat.server.on_message = [&](const chatsock::ClientInfo& from, std::string& text) {
            seen_by_callback.push_back(from.name + ":" + text);
            if (text == "drop me") return false;
            text = "[" + from.name + "] " + text;
            return true;
        };
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        REQUIRE_FALSE(alice.client.send("drop me"));
        REQUIRE_FALSE(alice.client.send("hello"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "[alice] hello"); }, alice, bob));
        CHECK(bob.texts_from("alice") == std::vector<std::string>{"[alice] hello"});
        CHECK(seen_by_callback == std::vector<std::string>{"alice:drop me", "alice:hello"});
        const std::string log = chat.log();
        CHECK(log.find("\tmessage\talice\t[alice] hello\n") != std::string::npos);
        CHECK(log.find("drop me") == std::string::npos);  // a dropped message is not logged
        // The sender is not told about a dropped message, nor sent the rewritten one.
        REQUIRE_FALSE(bob.client.send("ping"));
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("bob", "[bob] ping"); }, alice, bob));
        CHECK(alice.count_from("alice") == 0);
    }

    TEST_CASE("callbacks can send_to, broadcast and disconnect") {
        chatsock::Server server(cst::quiet_options());
        std::vector<Leave> leaves;
        chatsock::ClientId bob_id = chatsock::no_client;
        server.on_join = [&](const chatsock::ClientInfo& c) {
            server.send_to(c.id, "rules: be nice");
            server.send_to(c.id, "psst", "bot");
            if (c.name == "bob") bob_id = c.id;
        };
        server.on_message = [&](const chatsock::ClientInfo& from, std::string& text) {
            if (text == "/kick bob") {
                server.disconnect(bob_id, "kicked by " + from.name);
                return false;
            }
            if (text == "/announce") {
                server.broadcast("announcement");                  // to everyone, from the server
                server.broadcast("from the bot", "bot", from.id);  // to everyone but the sender
                return false;
            }
            return true;
        };
        server.on_leave = [&](const chatsock::ClientInfo& c, std::string_view reason) {
            leaves.push_back({c.name, std::string(reason)});
        };
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE(cst::pump(
            server, [&] { return bob.got("server", "rules: be nice") && bob.got("bot", "psst"); },
            alice, bob));
        for (const auto& m : bob.inbox) {
            if (m.from == "bot") CHECK_FALSE(m.from_server);
        }
        REQUIRE_FALSE(alice.client.send("/announce"));
        REQUIRE(cst::pump(
            server,
            [&] {
                return alice.got("server", "announcement") && bob.got("server", "announcement") &&
                       bob.got("bot", "from the bot");
            },
            alice, bob));
        REQUIRE_FALSE(alice.client.send("/kick bob"));
        REQUIRE(cst::pump(
            server, [&] { return !bob.client.is_open(); }, alice, bob));
        CHECK(bob.got("server", "kicked by alice"));
        CHECK_FALSE(bob.got("alice", "/kick bob"));
        CHECK_FALSE(alice.got("bot", "from the bot"));
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "bob");
        CHECK(leaves[0].reason == "kicked by alice");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "bob left (kicked by alice)"); }, alice));
        CHECK(server.client_count() == 1);
        // Ids that are gone or never existed are ignored.
        server.send_to(bob_id, "too late");
        server.send_to(987654, "nobody");
        server.disconnect(987654, "nobody");
        cst::run_for(milliseconds(20), server, alice);
        CHECK(alice.client.is_open());
    }

    TEST_CASE("send_to and broadcast from outside a callback, between run_once calls") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        auto infos = server.clients();
        REQUIRE(infos.size() == 2);
        const auto alice_id = infos[0].name == "alice" ? infos[0].id : infos[1].id;
        server.send_to(alice_id, "just for you");
        server.broadcast("for all");
        REQUIRE(cst::pump(
            server,
            [&] {
                return alice.got("server", "just for you") && alice.got("server", "for all") &&
                       bob.got("server", "for all");
            },
            alice, bob));
        CHECK_FALSE(bob.got("server", "just for you"));
        server.disconnect(alice_id, "bye now");
        REQUIRE(cst::pump(
            server, [&] { return !alice.client.is_open(); }, alice, bob));
        CHECK(alice.got("server", "bye now"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("server", "alice left (bye now)"); }, bob));
    }

    TEST_CASE("a client that resets its connection leaves with the reason") {
        chatsock::Server server(cst::quiet_options());
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        RawPeer rude;
        cst::raw_join(server, rude, port, "rude");
        rude.reset();
        REQUIRE(cst::pump(
            server, [&] { return !leaves.empty(); }, alice));
        CHECK(leaves[0].name == "rude");
#if defined(_WIN32)
        // Wine (at least) reports a reset as an orderly end-of-stream.
        const bool lost = leaves[0].reason.rfind("connection lost", 0) == 0;
        CHECK((lost || leaves[0].reason == "left"));
        const std::string notice = lost ? "rude left (connection lost" : "rude left";
#else
        CHECK(leaves[0].reason.rfind("connection lost", 0) == 0);
        const std::string notice = "rude left (connection lost";
#endif
        REQUIRE(cst::pump(
            server, [&] { return alice.got_text_starting(notice); }, alice));
        REQUIRE(cst::pump(
            server, [&] { return server.connection_count() == 1; }, alice));
    }

    TEST_CASE("a client whose end-of-stream comes with its output still queued gets that output") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        RawPeer brief;
        brief.connect(port);
        // Exactly 64 KiB, the server's read size, then end-of-stream, all before the server runs:
        // its first read is full, so it reads on and finds the end-of-stream in the same turn,
        // with the welcome still in the queue.
        const std::string name = chatsock::encode_frame("brief");
        const std::string text(65536 - name.size() - chatsock::header_size, 't');
        REQUIRE(brief.send(name + chatsock::encode_frame(text)));
        brief.shutdown_send();
        REQUIRE(cst::pump(
            server, [&] { return brief.ended(); }, brief, alice));
        CHECK_FALSE(brief.error());
        REQUIRE(brief.messages.size() == 1);
        CHECK(brief.messages[0].text == "welcome, brief! 1 other user online");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "brief left"); }, alice));
        CHECK(alice.got("brief", text));
    }

    TEST_CASE("a refused client that keeps its side open is closed a second later") {
        chatsock::Server server(cst::quiet_options());  // a handshake deadline of 10 s
        const auto port = cst::start(server);
        RawPeer stubborn;
        stubborn.connect(port);
        REQUIRE(stubborn.send_frame(""));
        REQUIRE(cst::pump(
            server, [&] { return stubborn.ended(); }, stubborn));  // told, then EOF
        CHECK(stubborn.got_text_starting("name refused: the name is empty"));
        const auto t0 = Clock::now();
        REQUIRE(cst::pump(server, [&] { return server.connection_count() == 0; }));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 800);  // the second it is given to close its side
        CHECK(ms < 3000);  // not the handshake's 10 s
    }

    TEST_CASE("a frame may take most of frame_timeout to arrive") {
        FrameTimeoutRoom room(milliseconds(1000), "alice", "typist");
        auto& server = room.server;
        auto& leaves = room.leaves;
        auto& alice = room.reader;
        auto& typist = room.peer;
        const std::string frame = chatsock::encode_frame("slow but in time");
        REQUIRE(typist.send(frame.substr(0, 12)));
        cst::run_for(milliseconds(600), server, alice, typist);  // 60% of the time allowed
        REQUIRE(typist.send(frame.substr(12)));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("typist", "slow but in time"); }, alice, typist));
        CHECK_FALSE(typist.ended());
        CHECK(leaves.empty());
    }

    TEST_CASE("a client that half-closes still gets what was queued for it") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        RawPeer brief;
        brief.connect(port);
        // Name, one message and end-of-stream, all before the server runs.
        REQUIRE(brief.send(chatsock::encode_frame("brief") +
                           chatsock::encode_frame("hello and goodbye")));
        brief.shutdown_send();
        REQUIRE(cst::pump(
            server, [&] { return brief.ended(); }, brief, alice));
        CHECK_FALSE(brief.error());  // an orderly end, after the welcome
        REQUIRE_FALSE(brief.messages.empty());
        CHECK(brief.messages[0].text == "welcome, brief! 1 other user online");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "brief left"); }, alice));
        CHECK(alice.got("brief", "hello and goodbye"));
        CHECK(alice.got("server", "brief joined"));
    }

    TEST_CASE("a frame arriving one byte at a time is put together intact") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        RawPeer slowpoke;
        slowpoke.connect(port);
        const std::string text = "héllo 数据 \xF0\x9F\x98\x80 end";
        const std::string bytes = chatsock::encode_frame("slowpoke") + chatsock::encode_frame(text);
        for (char c : bytes) {
            REQUIRE(slowpoke.send(std::string_view(&c, 1)));
            REQUIRE_FALSE(server.run_once(milliseconds(1)));
            alice.client.poll(milliseconds(0));
        }
        REQUIRE(cst::pump(
            server, [&] { return alice.got("slowpoke", text); }, alice, slowpoke));
        CHECK(alice.got("server", "slowpoke joined"));
        CHECK(alice.count_from("slowpoke") == 1);
    }

    TEST_CASE("many clients all receive a broadcast message") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        constexpr int n = 40;
        std::vector<std::unique_ptr<ChatUser>> users;
        for (int i = 0; i < n; ++i) {
            users.push_back(std::make_unique<ChatUser>());
            REQUIRE_FALSE(users.back()->join(port, "user" + std::to_string(i)));
        }
        auto all_have = [&](auto pred) {
            for (auto& u : users) {
                u->client.poll(milliseconds(0));
                if (!pred(*u)) return false;
            }
            return true;
        };
        REQUIRE(cst::pump(server, [&] {
            return all_have([](ChatUser& u) { return u.got_text_starting("welcome, "); });
        }));
        CHECK(server.client_count() == n);
        REQUIRE_FALSE(users[0]->client.send("hello everyone"));
        REQUIRE(cst::pump(server, [&] {
            return all_have([&](ChatUser& u) {
                return &u == users[0].get() || u.got("user0", "hello everyone");
            });
        }));
        CHECK(users[0]->count_from("user0") == 0);
    }

    namespace {

    // Alice sends `count` messages of 16 KiB in batches of 4 (64 KiB), waiting after each batch until
    // bob has it, so bob - who reads whenever the loop turns - never falls behind, while a peer that
    // does not read falls further behind with every batch. Returns what was sent.
    std::vector<std::string> send_in_batches(chatsock::Server& server, ChatUser& alice,
                                             ChatUser& bob, int count) {
        std::vector<std::string> sent;
        const std::size_t before = bob.count_from("alice");
        for (int i = 0; i < count; i += 4) {
            for (int k = i; k < std::min(count, i + 4); ++k) {
                sent.push_back(std::to_string(k) + ":" +
                               std::string(16 * 1024, static_cast<char>('a' + k % 26)));
                REQUIRE_FALSE(alice.client.send(sent.back()));
            }
            const std::size_t want = before + sent.size();
            INFO("bob has ", bob.count_from("alice"), " of ", want,
                 "; alice is open: ", alice.client.is_open(),
                 "; bob is open: ", bob.client.is_open());
            REQUIRE(cst::pump(
                server, [&] { return bob.count_from("alice") == want; }, alice, bob));
        }
        return sent;
    }

    }  // namespace

    TEST_CASE(
        "the hard output limit disconnects a client that does not read, others get everything") {
        auto options = cst::quiet_options();
        options.output_hard_limit = 256 * 1024;
        options.output_soft_limit = std::size_t(1) << 30;  // only the hard limit here
        chatsock::Server server(options);
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        RawPeer slow;
        cst::raw_join(server, slow, port, "slow");
        cst::join_wait(server, bob, port, "bob");

        // 16 MiB: more than the kernel buffers between the server and the slow peer can hold.
        const auto sent = send_in_batches(server, alice, bob, 1024);
        CHECK(bob.texts_from("alice") == sent);
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "slow");
        CHECK(leaves[0].reason == "too slow: output queue over 262144 bytes");
        const std::string notice = "slow left (too slow: output queue over 262144 bytes)";
        REQUIRE(cst::pump(
            server, [&] { return bob.got("server", notice) && alice.got("server", notice); }, alice,
            bob));
        CHECK(server.client_count() == 2);
        // The slow one finds its connection closed once it reads, having missed most of it.
        REQUIRE(cst::pump(
            server, [&] { return slow.ended(); }, slow));
        std::size_t slow_got = 0;
        for (const auto& m : slow.messages) slow_got += m.from == "alice";
        CHECK(slow_got < sent.size());
    }

    TEST_CASE("the soft output limit disconnects a client that stays over it for soft_limit_time") {
        auto options = cst::quiet_options();
        options.output_hard_limit = std::size_t(1) << 30;
        options.output_soft_limit = 256 * 1024;
        options.soft_limit_time = milliseconds(300);
        chatsock::Server server(options);
        std::vector<Leave> leaves;
        Clock::time_point left_at{};
        server.on_leave = [&](const chatsock::ClientInfo& c, std::string_view reason) {
            leaves.push_back({c.name, std::string(reason)});
            left_at = Clock::now();
        };
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        RawPeer slow;
        cst::raw_join(server, slow, port, "slow");
        slow.set_receive_buffer(4096);
        cst::join_wait(server, bob, port, "bob");
        // Connected for longer than soft_limit_time before it falls behind: the time counts from
        // when its queue goes over the limit, not from the connection.
        cst::run_for(milliseconds(400), server, alice, bob, slow);
        REQUIRE(leaves.empty());

        // One 16 MiB message, far more than the soft limit plus what the kernel buffers: the queue
        // goes over the limit inside send_to(), and slow never reads from now on.
        const std::string big(std::size_t(16) << 20, 'x');
        const auto slow_id = id_of(server, "slow");
        const auto over_at = Clock::now();
        server.send_to(slow_id, big);
        // The chat goes on meanwhile.
        std::vector<std::string> sent;
        const auto deadline = Clock::now() + cst::default_limit;
        while (leaves.empty() && Clock::now() < deadline) {
            sent.push_back("tick " + std::to_string(sent.size()));
            REQUIRE_FALSE(alice.client.send(sent.back()));
            REQUIRE(cst::pump(
                server, [&] { return bob.got("alice", sent.back()); }, alice, bob));
            cst::run_for(milliseconds(20), server, alice, bob);
        }
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "slow");
        const std::string reason = "too slow: output queue over 262144 bytes for 300 ms";
        CHECK(leaves[0].reason == reason);
        const auto after = std::chrono::duration_cast<milliseconds>(left_at - over_at).count();
        CHECK(after >= 300);  // not before soft_limit_time has passed ...
        CHECK(after < 2300);  // ... and not much later
        REQUIRE(cst::pump(
            server, [&] { return bob.got("server", "slow left (" + reason + ")"); }, alice, bob));
        CHECK(bob.texts_from("alice") == sent);
        CHECK(alice.client.is_open());
        CHECK(bob.client.is_open());
        // Its connection is gone (slow itself would take long to read what is still in flight).
        REQUIRE(cst::pump(
            server, [&] { return server.connection_count() == 2; }, alice, bob));
    }

    TEST_CASE("a burst over the soft limit is tolerated if the client catches up in time") {
        auto options = cst::quiet_options();
        options.output_hard_limit = std::size_t(1) << 30;
        options.output_soft_limit = 64 * 1024;
        options.soft_limit_time = milliseconds(800);
        chatsock::Server server(options);
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        RawPeer lagging;
        cst::raw_join(server, lagging, port, "lagging");

        // One 8 MiB message: lagging's queue goes over the soft limit inside send_to(), and stays
        // over while lagging does not read (the kernel buffers hold a few MiB at most) ...
        const std::string big(std::size_t(8) << 20, 'b');
        const auto over_at = Clock::now();
        server.send_to(id_of(server, "lagging"), big);
        cst::run_for(milliseconds(100), server, alice);
        // ... then it catches up, well within soft_limit_time.
        REQUIRE(cst::pump(
            server,
            [&] {
                return !lagging.messages.empty() &&
                       lagging.messages.back().text.size() == big.size();
            },
            alice, lagging));
        const auto caught_up_at = Clock::now();
        const auto catch_up_ms = cst::elapsed_ms(over_at);
        INFO("caught up ", catch_up_ms, " ms after going over");
        CHECK(lagging.messages.back().text == big);

        // The chat goes on until soft_limit_time has long passed, since it went over and since it
        // caught up: it stays connected and gets everything.
        std::vector<std::string> sent;
        auto from_alice = [&] {
            std::vector<std::string> texts;
            for (const auto& m : lagging.messages)
                if (m.from == "alice") texts.push_back(m.text);
            return texts;
        };
        while (Clock::now() < caught_up_at + options.soft_limit_time + milliseconds(300)) {
            sent.push_back("tick " + std::to_string(sent.size()));
            REQUIRE_FALSE(alice.client.send(sent.back()));
            REQUIRE(cst::pump(
                server, [&] { return from_alice().size() == sent.size() || lagging.ended(); },
                alice, lagging));
            REQUIRE_FALSE(lagging.ended());
            cst::run_for(milliseconds(50), server, alice, lagging);
        }
        CHECK(from_alice() == sent);
        CHECK_FALSE(lagging.ended());
        CHECK(leaves.empty());
        CHECK(server.client_count() == 2);
    }

    TEST_CASE("the conversation log: one tab-separated line per event, UTC timestamps") {
        cst::LoggedServer chat({}, "message_log");
        ChatUser alice, bob, nobody;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        REQUIRE_FALSE(alice.client.send("hello there"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "hello there"); }, alice, bob));
        bob.client.finish();
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob left"); }, alice, bob));
        REQUIRE_FALSE(nobody.join(chat.port, ""));
        REQUIRE(cst::pump(
            chat.server, [&] { return !nobody.client.is_open(); }, alice, nobody));

        const auto lines = cst::split_lines(chat.log());
        REQUIRE(lines.size() == 5);
        std::vector<std::vector<std::string>> rows;
        for (const auto& line : lines) {
            CAPTURE(line);
            auto fields = cst::split_tabs(line);
            REQUIRE(fields.size() == 4);
            CHECK(is_iso8601_utc_ms(fields[0]));
            rows.push_back(fields);
        }
        CHECK(rows[0][1] == "join");
        CHECK(rows[0][2] == "alice");
        CHECK(rows[0][3].rfind("127.0.0.1:", 0) == 0);
        CHECK(rows[1][1] == "join");
        CHECK(rows[1][2] == "bob");
        CHECK(rows[2][1] == "message");
        CHECK(rows[2][2] == "alice");
        CHECK(rows[2][3] == "hello there");
        CHECK(rows[3][1] == "leave");
        CHECK(rows[3][2] == "bob");
        CHECK(rows[3][3] == "left");
        CHECK(rows[4][1] == "refused");
        CHECK(rows[4][2].rfind("127.0.0.1:", 0) == 0);
        CHECK(rows[4][3] == "the name is empty");
        // Timestamps never go backwards.
        for (std::size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1][0] <= rows[i][0]);
        // The time is now (UTC), give or take a minute.
        const auto now = chatsock::detail::utc_timestamp(std::chrono::system_clock::now());
        CHECK(rows[0][0].substr(0, 10) == now.substr(0, 10));
    }

    TEST_CASE("the conversation log keeps every event on one line, escaped") {
        cst::LoggedServer chat;
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        const std::string nasty =
            "line1\nline2\rback\x1b[2Jclear"s + '\0' + "nul\ttab\\slash \xC2\x9B" + "c1 数据";
        REQUIRE_FALSE(alice.client.send(nasty));
        REQUIRE_FALSE(alice.client.send("\\n is not a newline"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "\\n is not a newline"); }, alice, bob));
        CHECK(bob.got("alice", nasty));  // relayed exactly as sent

        const std::string log = chat.log();
        for (unsigned char c : log) {
            CAPTURE(static_cast<int>(c));
            CHECK((c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7F)));
        }
        const auto lines = cst::split_lines(log);
        REQUIRE(lines.size() == 4);
        auto fields = cst::split_tabs(lines[2]);
        REQUIRE(fields.size() == 4);
        CHECK(fields[1] == "message");
        CHECK(fields[3] ==
              "line1\\nline2\\rback\\x1b[2Jclear\\x00nul\\ttab\\\\slash \\u009bc1 数据");
        fields = cst::split_tabs(lines[3]);
        REQUIRE(fields.size() == 4);
        CHECK(fields[3] == "\\\\n is not a newline");
    }

    TEST_CASE("the log escapes names and join details too, and refused peers") {
        cst::LoggedServer chat;
        ChatUser odd, bad;
        cst::join_wait(chat.server, odd, chat.port, "back\\slash");
        REQUIRE_FALSE(bad.join(chat.port, "ev\til"));
        REQUIRE(cst::pump(
            chat.server, [&] { return !bad.client.is_open(); }, bad));
        const auto lines = cst::split_lines(chat.log());
        REQUIRE(lines.size() == 2);
        CHECK(cst::split_tabs(lines[0])[2] == "back\\\\slash");
        auto refused = cst::split_tabs(lines[1]);
        REQUIRE(refused.size() == 4);
        CHECK(refused[1] == "refused");
        CHECK(refused[3] == "the name contains control characters");
    }

    TEST_CASE("a relayed message is already in the log when the receiver gets it") {
        cst::LoggedServer chat;
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        int checked = 0, found = 0;
        bob.client.on_message = [&](const chatsock::Message& m) {
            bob.inbox.push_back(m);
            if (m.from != "alice") return;
            ++checked;
            const std::string log = chat.log();
            if (log.find("\tmessage\talice\t" + m.text + "\n") != std::string::npos) ++found;
        };
        for (int i = 0; i < 20; ++i)
            REQUIRE_FALSE(alice.client.send("message " + std::to_string(i)));
        REQUIRE(cst::pump(
            chat.server, [&] { return checked == 20; }, alice, bob));
        CHECK(found == 20);
        // The leave line too is written before the notice goes out.
        bool leave_logged = false;
        alice.client.on_message = [&](const chatsock::Message& m) {
            alice.inbox.push_back(m);
            if (m.text == "bob left")
                leave_logged = chat.log().find("\tleave\tbob\tleft\n") != std::string::npos;
        };
        bob.client.finish();
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob left"); }, alice, bob));
        CHECK(leave_logged);
    }

#if !defined(_WIN32)
    namespace {

    // Appends whatever a non-blocking descriptor has to read now to `text`.
    void read_available(int fd, std::string& text) {
        char buf[4096];
        for (;;) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n > 0) text.append(buf, static_cast<std::size_t>(n));
            else if (n < 0 && errno == EINTR) continue;
            else return;  // empty for now
        }
    }

    // Fills a pipe through a non-blocking write end, to the last byte: a later write of any size
    // blocks until someone reads. The filler is whole lines ("filler", then empty ones).
    void fill_pipe(int fd) {
        const std::string line = "filler " + std::string(56, '.') + "\n";
        for (int i = 0; i < 1 << 16; ++i)
            if (::write(fd, line.data(), line.size()) < 0) break;
        // What the last lines left free: byte by byte, or the kernel would fit a short write in.
        for (int i = 0; i < 1 << 16; ++i)
            if (::write(fd, "\n", 1) < 0) break;
    }

    struct FdCloser {
        int fd;
        ~FdCloser() {
            if (fd >= 0) ::close(fd);
        }
    };

    }  // namespace

    TEST_CASE("a relayed message is not sent before its log line has been written") {
        // The log is a FIFO that the test fills up, so the server's next write to it blocks until
        // the test reads. The server runs on a thread of its own; the clients are polled here.
        cst::TempDir dir;
        const std::string path = dir.file("chat.log");
        REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
        // The read end first, non-blocking, so the server's open() for writing does not wait.
        FdCloser reader{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
        REQUIRE(reader.fd >= 0);
#  if defined(F_SETPIPE_SZ)
        ::fcntl(reader.fd, F_SETPIPE_SZ, 4096);  // less to fill; the test works without it too
#  endif
        std::string log;  // everything read from the pipe
        auto options = cst::quiet_options();
        options.log_path = path;
        options.stop_drain_time = milliseconds(50);  // nobody polls the clients as it stops
        chatsock::Server server(options);
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::StopWatchdog watchdog(server, milliseconds(10000));
        // Keeps the pipe drained while it stops the server, so no log write holds it up.
        ServerThread runner(server, [&] { read_available(reader.fd, log); });

        REQUIRE_FALSE(alice.join(port, "alice"));
        REQUIRE_FALSE(bob.join(port, "bob"));
        auto deadline = Clock::now() + cst::default_limit;
        auto joined = [&] {
            return bob.got_text_starting("welcome, ") && alice.got("server", "bob joined");
        };
        while (!joined() && Clock::now() < deadline) {
            alice.client.poll(milliseconds(5));
            bob.client.poll(milliseconds(5));
            read_available(reader.fd, log);
        }
        REQUIRE(bob.got_text_starting("welcome, "));
        REQUIRE(alice.got("server", "bob joined"));
        read_available(reader.fd, log);
        REQUIRE(log.find("\tjoin\tbob\t") != std::string::npos);  // written before bob's welcome

        {
            FdCloser writer{::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)};
            REQUIRE(writer.fd >= 0);
            fill_pipe(writer.fd);
        }
        const std::string text = "logged before it leaves";
        REQUIRE_FALSE(alice.client.send(text));
        // While the pipe is full the server cannot log the message, so it must not relay it.
        const auto until = Clock::now() + milliseconds(300);
        while (Clock::now() < until) {
            alice.client.poll(milliseconds(5));
            bob.client.poll(milliseconds(5));
        }
        CHECK(alice.client.queued_bytes() == 0);  // the message did reach the server
        CHECK_FALSE(bob.got("alice", text));

        // Room in the pipe: the line is written, then the message goes out. Whenever bob has it,
        // the line must already be in the pipe.
        deadline = Clock::now() + cst::default_limit;
        while (!bob.got("alice", text) && Clock::now() < deadline) {
            read_available(reader.fd, log);
            bob.client.poll(milliseconds(5));
        }
        REQUIRE(bob.got("alice", text));
        read_available(reader.fd, log);
        CHECK(log.find("\tmessage\talice\t" + text + "\n") != std::string::npos);
        CHECK_FALSE(runner.returned());
        CHECK_FALSE(watchdog.fired());
    }
#endif

    TEST_CASE("the log's timestamps move on with the clock") {
        cst::LoggedServer chat;
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::run_for(milliseconds(30), chat.server, alice);  // the time passing is the point here
        cst::join_wait(chat.server, bob, chat.port, "bob");
        const auto lines = cst::split_lines(chat.log());
        REQUIRE(lines.size() == 2);
        const std::string first = cst::split_tabs(lines[0])[0],
                          second = cst::split_tabs(lines[1])[0];
        CHECK(is_iso8601_utc_ms(second));
        CHECK(second > first);  // same format, same day: later sorts after
    }

    TEST_CASE("the log appends to an existing file") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) {
            std::ofstream(o.log_path, std::ios::binary) << "earlier line\n";
        });
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        const auto lines = cst::split_lines(chat.log());
        REQUIRE(lines.size() == 2);
        CHECK(lines[0] == "earlier line");
        CHECK(cst::split_tabs(lines[1])[1] == "join");
    }

    TEST_CASE("listen() errors say what was attempted") {
        std::string attempt;
        SUBCASE("a log that cannot be opened, and no log file is left behind") {
            cst::TempDir dir;
            auto options = cst::quiet_options();
            options.log_path = dir.file("no-such-dir/chat.log");
            chatsock::Server server(options);
            CHECK(server.listen(&attempt));
            CHECK(attempt == "cannot open the conversation log " + options.log_path);
        }
        SUBCASE("a port already taken") {
            chatsock::Server first(cst::quiet_options());
            const auto port = cst::start(first);
            cst::TempDir dir;
            auto options = cst::quiet_options();
            options.port = port;
            options.log_path = dir.file("chat.log");
            chatsock::Server second(options);
            auto ec = second.listen(&attempt);
            CHECK(ec == std::errc::address_in_use);
            CHECK(attempt == "cannot listen on 127.0.0.1:" + std::to_string(port));
            CHECK_FALSE(std::filesystem::exists(options.log_path));  // a server that never started
        }
        SUBCASE("a host that does not resolve") {
            auto options = cst::quiet_options();
            options.host = "no.such.host.invalid";
            chatsock::Server server(options);
            CHECK(server.listen(&attempt));
            CHECK(attempt == "cannot listen on no.such.host.invalid:0");
            CHECK(server.listen());  // the description is optional
        }
    }

    TEST_CASE("diagnostics: listening, joins, refusals, and nullptr silences them") {
        std::vector<std::string> lines;
        chatsock::Server server(cst::capturing_options(lines));
        const auto port = cst::start(server);
        REQUIRE_FALSE(lines.empty());
        CHECK(lines[0] == "listening on 127.0.0.1:" + std::to_string(port) + " (" +
                              chatsock::Poller::backend() + ")");
        ChatUser alice, bad;
        cst::join_wait(server, alice, port, "alice");
        CHECK(has_line(lines, "alice joined from 127.0.0.1:"));
        REQUIRE_FALSE(bad.join(port, "bad\x1b"));
        REQUIRE(cst::pump(
            server, [&] { return !bad.client.is_open(); }, bad));
        CHECK(has_line(lines, "refused 127.0.0.1:"));
        alice.client.finish();
        REQUIRE(cst::pump(
            server, [&] { return has_line(lines, "alice left"); }, alice));
        for (const auto& l : lines) {
            CAPTURE(l);
            CHECK(l.find('\n') == std::string::npos);
            CHECK(l.find('\x1b') == std::string::npos);  // names are escaped before printing
        }
    }

    TEST_CASE("run_once returns after max_wait when nothing happens") {
        chatsock::Server server(cst::quiet_options());
        cst::start(server);
        const auto t0 = Clock::now();
        REQUIRE_FALSE(server.run_once(milliseconds(60)));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 50);
        CHECK(ms < 2000);
        const auto t1 = Clock::now();
        REQUIRE_FALSE(server.run_once(milliseconds(0)));
        CHECK(cst::elapsed_ms(t1) < 500);
    }

    TEST_CASE("IPv6: a server on ::1 serves clients connecting to ::1") {
        if (!have_ipv6_loopback())
            return cst::skip("no IPv6 loopback: cannot bind a socket to ::1");
        auto options = cst::quiet_options();
        options.host = "::1";
        std::vector<std::string> lines;
        options.diagnostics = [&](std::string_view l) { lines.emplace_back(l); };
        chatsock::Server server(options);
        const auto port = cst::start(server);  // fails the test: this machine has ::1
        REQUIRE_FALSE(lines.empty());
        CHECK(lines[0] == "listening on [::1]:" + std::to_string(port) + " (" +
                              chatsock::Poller::backend() + ")");
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice", "::1");
        cst::join_wait(server, bob, port, "bob", "::1");
        REQUIRE_FALSE(alice.client.send("over v6"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "over v6"); }, alice, bob));
        const auto clients = server.clients();
        REQUIRE(clients.size() == 2);
        for (const auto& c : clients) CHECK(c.peer.rfind("[::1]:", 0) == 0);
    }

    TEST_CASE("IPv6: a server on :: also accepts IPv4 clients (dual stack)") {
        if (!have_ipv6_loopback())
            return cst::skip("no IPv6 loopback: cannot bind a socket to ::1");
        auto options = cst::quiet_options();
        options.host = "::";
        chatsock::Server server(options);
        const auto port = cst::start(server);
        ChatUser v4, v6;
        cst::join_wait(server, v4, port, "v4", "127.0.0.1");
        cst::join_wait(server, v6, port, "v6", "::1");
        // They chat with each other, both ways.
        REQUIRE_FALSE(v4.client.send("from v4"));
        REQUIRE(cst::pump(
            server, [&] { return v6.got("v4", "from v4"); }, v4, v6));
        REQUIRE_FALSE(v6.client.send("from v6"));
        REQUIRE(cst::pump(
            server, [&] { return v4.got("v6", "from v6"); }, v4, v6));
        std::string v4_peer, v6_peer;
        for (const auto& c : server.clients()) (c.name == "v4" ? v4_peer : v6_peer) = c.peer;
        CAPTURE(v4_peer);
        CAPTURE(v6_peer);
        CHECK(v4_peer.find("127.0.0.1") != std::string::npos);  // maybe as [::ffff:127.0.0.1]
        CHECK(v6_peer.rfind("[::1]:", 0) == 0);
    }

    TEST_CASE("a sender cut off inside a callback leaves once and sends nothing more") {
        auto options = cst::quiet_options();
        chatsock::Server server(options);
        std::vector<Leave> leaves;
        server.on_message = [&](const chatsock::ClientInfo& from, std::string& text) {
            if (text == "kick me") server.disconnect(from.id, "kicked");
            return true;
        };
        server.on_leave = [&](const chatsock::ClientInfo& c, std::string_view reason) {
            leaves.push_back({c.name, std::string(reason)});
        };
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        RawPeer p;
        cst::raw_join(server, p, port, "p");
        // Two messages and end-of-stream, all read by the server in one go.
        REQUIRE(p.send(chatsock::encode_frame("kick me") + chatsock::encode_frame("after")));
        p.shutdown_send();
        REQUIRE(cst::pump(
            server, [&] { return server.connection_count() == 2; }, alice, bob, p));
        cst::run_for(milliseconds(30), server, alice, bob, p);
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].name == "p");
        CHECK(leaves[0].reason == "kicked");
        CHECK(server.client_count() == 2);
        CHECK(count_messages(bob, "server", "p left (kicked)") == 1);
        CHECK(count_messages(bob, "server", "p left") == 0);
        CHECK_FALSE(bob.got("p", "kick me"));  // the callback cut p off: its message goes nowhere
        CHECK_FALSE(bob.got("p", "after"));    // nothing from p after it was cut off
        // Both remaining users are still members.
        REQUIRE_FALSE(alice.client.send("still there?"));
        REQUIRE(cst::pump(
            server, [&] { return bob.got("alice", "still there?"); }, alice, bob));
        REQUIRE_FALSE(bob.client.send("yes"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("bob", "yes"); }, alice, bob));
    }

    TEST_CASE("stop() then run(): clients are told the server is stopping, then closed") {
        auto options = cst::quiet_options();
        options.stop_drain_time = milliseconds(300);
        chatsock::Server server(options);
        Leaves leaves(server);
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        server.stop();
        const auto t0 = Clock::now();
        CHECK_FALSE(
            server.run());  // nobody polls the clients here, so it waits out stop_drain_time
        CHECK(cst::elapsed_ms(t0) < 2000);
        CHECK(server.connection_count() == 0);
        CHECK(leaves.size() == 2);
        for (const auto& l : leaves) CHECK(l.reason == "server stopping");
        const auto deadline = Clock::now() + cst::default_limit;
        while ((alice.client.is_open() || bob.client.is_open()) && Clock::now() < deadline) {
            alice.client.poll(milliseconds(5));
            bob.client.poll(milliseconds(5));
        }
        for (ChatUser* u : {&alice, &bob}) {
            CHECK_FALSE(u->client.is_open());
            CHECK(u->got("server", "the server is stopping"));
            CHECK(u->client.close_reason() == chatsock::CloseReason::server_closed);
            CHECK(u->client.close_detail() == "the server is stopping");
            CHECK_FALSE(u->client.poll(milliseconds(0)));
        }
    }

    TEST_CASE("stop(): messages that arrived before the stop are still relayed, then the notice") {
        auto options = cst::quiet_options();
        options.stop_drain_time = milliseconds(300);
        chatsock::Server server(options);
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("server", "bob joined"); }, alice, bob));
        REQUIRE_FALSE(
            alice.client.send("last words"));  // reaches the server's socket, not yet read
        server.stop();
        CHECK_FALSE(server.run());
        const auto deadline = Clock::now() + cst::default_limit;
        while (bob.client.is_open() && Clock::now() < deadline) bob.client.poll(milliseconds(5));
        REQUIRE(bob.inbox.size() >= 2);
        CHECK(bob.inbox[bob.inbox.size() - 2].from == "alice");
        CHECK(bob.inbox[bob.inbox.size() - 2].text == "last words");
        CHECK(bob.inbox.back().text == "the server is stopping");
    }

    TEST_CASE("a frame that stalls halfway is cut off after frame_timeout") {
        FrameTimeoutRoom room(milliseconds(200), "alice", "staller");
        auto& server = room.server;
        auto& leaves = room.leaves;
        auto& alice = room.reader;
        auto& staller = room.peer;
        REQUIRE(staller.send(chatsock::encode_frame("complete") + "20        only half"));
        const auto t0 = Clock::now();
        REQUIRE(cst::pump(
            server, [&] { return staller.ended(); }, staller, alice));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 150);
        CHECK(ms < 3000);
        CHECK(staller.messages.back().text == "a frame took longer than 200 ms to arrive");
        REQUIRE(leaves.size() == 1);
        CHECK(leaves[0].reason == "a frame took longer than 200 ms to arrive");
        REQUIRE(cst::pump(
            server, [&] { return alice.got("staller", "complete"); }, alice));
        CHECK(alice.client.is_open());  // alice, idle and with no partial frame, is not affected
    }

    TEST_CASE("frame_timeout counts from each frame's first byte, not from the first partial one") {
        FrameTimeoutRoom room(milliseconds(300), "bob", "streamer");
        auto& server = room.server;
        auto& leaves = room.leaves;
        auto& bob = room.reader;
        auto& streamer = room.peer;

        // Every 50 ms for 1.2 s (four times frame_timeout), one send with the rest of frame k and
        // the first half of frame k+1: the server always holds a partial frame, each one for 50 ms.
        std::vector<std::string> sent;
        auto next_frame = [&] {
            sent.push_back("message " + std::to_string(sent.size()) + " of a steady stream");
            return chatsock::encode_frame(sent.back());
        };
        std::string frame = next_frame();
        REQUIRE(streamer.send(frame.substr(0, frame.size() / 2)));
        for (int k = 0; k < 24; ++k) {
            cst::run_for(milliseconds(50), server, bob, streamer);
            REQUIRE_FALSE(streamer.ended());
            const std::string next = next_frame();
            REQUIRE(
                streamer.send(frame.substr(frame.size() / 2) + next.substr(0, next.size() / 2)));
            frame = next;
        }
        REQUIRE(streamer.send(frame.substr(frame.size() / 2)));
        REQUIRE(cst::pump(
            server, [&] { return bob.count_from("streamer") == sent.size() || streamer.ended(); },
            bob, streamer));
        CHECK(bob.texts_from("streamer") == sent);
        CHECK_FALSE(streamer.ended());
        CHECK(leaves.empty());
        CHECK(server.client_count() == 2);
    }

    TEST_CASE("frame_timeout leaves alone a client that sends whole frames far apart") {
        FrameTimeoutRoom room(milliseconds(300), "bob", "typist");
        auto& server = room.server;
        auto& leaves = room.leaves;
        auto& bob = room.reader;
        auto& typist = room.peer;
        // Types slowly: 400 ms, more than frame_timeout, between whole frames.
        std::vector<std::string> sent;
        for (int i = 0; i < 2; ++i) {
            cst::run_for(milliseconds(400), server, bob, typist);
            sent.push_back("slowly typed line " + std::to_string(i));
            REQUIRE(typist.send_frame(sent.back()));
            REQUIRE(cst::pump(
                server, [&] { return bob.got("typist", sent.back()) || typist.ended(); }, bob,
                typist));
        }
        cst::run_for(milliseconds(400), server, bob, typist);
        CHECK(bob.texts_from("typist") == sent);
        CHECK_FALSE(typist.ended());
        CHECK(leaves.empty());
        CHECK(server.client_count() == 2);
    }

    TEST_CASE("exit_when_empty: run() returns once the last user has left") {
        auto options = cst::quiet_options();
        options.exit_when_empty = true;
        chatsock::Server server(options);
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        alice.client.finish();
        cst::StopWatchdog watchdog(server, milliseconds(4000));
        const auto t0 = Clock::now();
        CHECK_FALSE(server.run());
        watchdog.disarm();
        CHECK_FALSE(watchdog.fired());
        CHECK(cst::elapsed_ms(t0) < 3000);
        REQUIRE(cst::pump_within(
            milliseconds(3000), server, [&] { return !alice.client.is_open(); }, alice));
    }

#if !defined(_WIN32)
    TEST_CASE("exit_when_empty: run() waits for a first user before it can exit") {
        auto options = cst::quiet_options();
        options.exit_when_empty = true;
        options.handshake_timeout = milliseconds(100);
        chatsock::Server server(options);
        const auto port = cst::start(server);
        chatsock::Client alice;
        ServerThread runner(server);
        // A connection that never names itself: run() accepts it and, after handshake_timeout,
        // refuses it, all with no user ever joined, so it must not have returned.
        RawPeer nameless;
        nameless.connect(port);
        auto deadline = Clock::now() + cst::default_limit;
        while (!nameless.got_text_starting("no username within") && !runner.returned() &&
               Clock::now() < deadline) {
            nameless.read_available();
            cst::sleep_ms(5);
        }
        CHECK(nameless.got_text_starting("no username within"));
        CHECK_FALSE(runner.returned());  // nobody has joined yet
        nameless.close();
        bool welcomed = false;
        alice.on_message = [&](const chatsock::Message& m) {
            welcomed |= m.text.rfind("welcome", 0) == 0;
        };
        REQUIRE_FALSE(alice.connect("127.0.0.1", port, "alice"));
        deadline = Clock::now() + cst::default_limit;
        while (!welcomed && Clock::now() < deadline) alice.poll(milliseconds(10));
        CHECK(welcomed);
        CHECK_FALSE(runner.returned());
        CHECK(alice.close());  // graceful close: the server runs in its own thread here
        deadline = Clock::now() + cst::default_limit;
        while (!runner.returned() && Clock::now() < deadline) cst::sleep_ms(5);
        CHECK(runner.returned());
    }

    TEST_CASE("stop() from another thread ends run(): clients hear why and are closed promptly") {
        auto options = cst::quiet_options();
        options.stop_drain_time = milliseconds(4000);
        chatsock::Server server(options);
        std::vector<Leave> leaves;  // written by the server thread, read after join
        server.on_leave = [&](const chatsock::ClientInfo& c, std::string_view reason) {
            leaves.push_back({c.name, std::string(reason)});
        };
        const auto port = cst::start(server);
        std::atomic<bool> returned{false};
        std::error_code run_ec;
        std::thread runner([&] {
            run_ec = server.run();
            returned.store(true);
        });

        ChatUser alice, bob;
        REQUIRE_FALSE(alice.join(port, "alice"));
        REQUIRE_FALSE(bob.join(port, "bob"));
        auto deadline = Clock::now() + cst::default_limit;
        while (!(alice.got_text_starting("welcome") && bob.got_text_starting("welcome")) &&
               Clock::now() < deadline) {
            alice.client.poll(milliseconds(5));
            bob.client.poll(milliseconds(5));
        }
        REQUIRE(alice.got_text_starting("welcome"));
        REQUIRE(bob.got_text_starting("welcome"));

        const auto t0 = Clock::now();
        server.stop();
        deadline = Clock::now() + cst::default_limit;
        while ((alice.client.is_open() || bob.client.is_open() || !returned.load()) &&
               Clock::now() < deadline) {
            alice.client.poll(milliseconds(5));
            bob.client.poll(milliseconds(5));
            // A closed client's poll() returns at once: wait, rather than spin, for the server's
            // thread (under valgrind, which runs one thread at a time, a spinning one starves it).
            if (!alice.client.is_open() && !bob.client.is_open()) cst::sleep_ms(5);
        }
        const auto ms = cst::elapsed_ms(t0);
        runner.join();
        CHECK(returned.load());
        CHECK_FALSE(run_ec);
        CHECK(ms < 2000);  // the clients closed at once, so run() did not wait out stop_drain_time
        for (ChatUser* u : {&alice, &bob}) {
            CHECK_FALSE(u->client.is_open());
            CHECK(u->got("server", "the server is stopping"));
            CHECK(u->inbox.back().text == "the server is stopping");
            CHECK(u->inbox.back().from_server);
            CHECK(u->client.close_reason() == chatsock::CloseReason::server_closed);
        }
        REQUIRE(leaves.size() == 2);
        for (const auto& l : leaves) CHECK(l.reason == "server stopping");
        // No "left" notices were sent during the stop.
        CHECK_FALSE(alice.got("server", "bob left"));
    }
#endif

}  // TEST_SUITE("server")

TEST_CASE("a burst larger than the hard limit does not cut off a client that reads") {
    // The server queues a whole read turn of relays before it writes; a reader with room in
    // its socket must not be mistaken for a slow one.
    auto options = cst::quiet_options();
    options.output_hard_limit = 32 * 1024;
    chatsock::Server server(options);
    Leaves leaves(server);
    const auto port = cst::start(server);
    ChatUser bob;
    cst::join_wait(server, bob, port, "bob");
    RawPeer burst;
    cst::raw_join(server, burst, port, "burst");
    std::string bytes;
    std::vector<std::string> sent;
    for (int i = 0; i < 24; ++i) {  // 24 x 4 KiB = 96 KiB, three times the limit, in one write
        sent.push_back(std::to_string(i) + std::string(4096, 'a' + i % 26));
        bytes += chatsock::encode_frame(sent.back());
    }
    REQUIRE(burst.send(bytes));
    REQUIRE(cst::pump(
        server, [&] { return bob.texts_from("burst").size() == sent.size(); }, bob, burst));
    CHECK(bob.texts_from("burst") == sent);
    CHECK(leaves.empty());
    CHECK(server.client_count() == 2);
}
