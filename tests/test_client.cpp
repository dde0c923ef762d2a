// The client, in process and single-threaded: against a real Server driven by cst::pump, or
// against a "fake server" (a raw accepted socket) that the test scripts byte by byte.
#include "chatsock.hpp"
#include "support.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace std::string_literals;
using chatsock::milliseconds;
using cst::ChatUser;
using cst::Clock;

namespace {

// A listening socket the test accepts from by hand: the server side is whatever the test sends.
struct FakeServer {
    chatsock::Socket listener;
    chatsock::Socket conn;
    std::uint16_t port = 0;
    std::string received;
    bool peer_ended = false;

    FakeServer() {
        std::error_code ec;
        listener = chatsock::listen_tcp("127.0.0.1", 0, ec);
        REQUIRE_FALSE(ec);
        port = chatsock::local_port(listener.get());
    }
    void accept() {
        const auto deadline = Clock::now() + cst::default_limit;
        std::error_code ec;
        while (!conn.valid() && Clock::now() < deadline) {
            conn = chatsock::accept_tcp(listener.get(), ec);
            if (!conn.valid()) cst::sleep_ms(1);
        }
        REQUIRE(conn.valid());
    }
    void send(std::string_view bytes) {
        while (!bytes.empty()) {
            std::error_code ec;
            std::size_t n = chatsock::send_some(conn.get(), bytes.data(), bytes.size(), ec);
            REQUIRE((!ec || chatsock::detail::would_block(ec)));
            bytes.remove_prefix(n);
        }
    }
    void read_available() {
        char buf[65536];
        for (;;) {
            std::error_code ec;
            std::size_t n = chatsock::recv_some(conn.get(), buf, sizeof buf, ec);
            if (n > 0) {
                received.append(buf, n);
                continue;
            }
            if (!ec) peer_ended = true;
            return;
        }
    }
};

// Polls the client (and the fake server's socket) until done() or the limit.
template <class Done>
bool poll_until(chatsock::Client& client, FakeServer* fake, Done done,
                milliseconds limit = cst::default_limit) {
    const auto deadline = Clock::now() + limit;
    while (!done()) {
        if (Clock::now() >= deadline) return false;
        client.poll(milliseconds(5));
        if (fake && fake->conn.valid()) fake->read_available();
    }
    return true;
}

std::uint16_t unused_port() {
    std::error_code ec;
    chatsock::Socket probe = chatsock::listen_tcp("127.0.0.1", 0, ec);
    REQUIRE_FALSE(ec);
    return chatsock::local_port(probe.get());  // closed again on return
}

}  // namespace

TEST_SUITE("client") {
    TEST_CASE("connecting to a port where nobody listens fails quickly") {
        const auto port = unused_port();
        chatsock::Client client;
        const auto t0 = Clock::now();
        auto ec = client.connect("127.0.0.1", port, "alice");
        CHECK(ec);
        CHECK(ec == std::errc::connection_refused);
        CHECK(cst::elapsed_ms(t0) < 2000);
        CHECK_FALSE(client.is_open());
        CHECK_FALSE(client.poll(milliseconds(0)));
        CHECK(client.send("hello") == std::errc::not_connected);
    }

    TEST_CASE("connecting to a name that does not resolve fails") {
        chatsock::Client client;
        auto ec = client.connect("no.such.host.invalid", 1234, "alice");
        CHECK(ec);
        CHECK_FALSE(ec.message().empty());
        CHECK_FALSE(client.is_open());
    }

    TEST_CASE("a client that never connected is not open") {
        chatsock::Client client;
        CHECK_FALSE(client.is_open());
        CHECK(client.close_reason() == chatsock::CloseReason::open);
        CHECK(client.queued_bytes() == 0);
        CHECK(client.socket() == chatsock::invalid_socket);
        CHECK_FALSE(client.poll(milliseconds(0)));
        CHECK(client.send("x") == std::errc::not_connected);
        client.finish();  // harmless
        CHECK_FALSE(client.is_open());
    }

    TEST_CASE(
        "send: text over max_payload is refused with message_size, at the limit it is relayed") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        const std::string too_big(chatsock::detail::default_max_payload + 1, 'x');
        CHECK(alice.client.send(too_big) == std::errc::message_size);
        CHECK(alice.client.is_open());  // refused locally; the connection is fine
        const std::string just_fits(chatsock::detail::default_max_payload, 'y');
        REQUIRE_FALSE(alice.client.send(just_fits));
        REQUIRE(cst::pump(
            server, [&] { return bob.count_from("alice") == 1; }, alice, bob));
        CHECK(bob.texts_from("alice") == std::vector<std::string>{just_fits});

        chatsock::ClientOptions small;
        small.max_payload = 10;
        chatsock::Client limited(small);
        REQUIRE_FALSE(limited.connect("127.0.0.1", port, "carol"));
        CHECK(limited.send("0123456789") == std::error_code());
        CHECK(limited.send("0123456789a") == std::errc::message_size);
    }

    TEST_CASE("a username over the client's max_payload is refused before anything is sent") {
        chatsock::ClientOptions small;
        small.max_payload = 4;
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        chatsock::Client client(small);
        CHECK(client.connect("127.0.0.1", port, "abcde") == std::errc::message_size);
    }

    TEST_CASE("a client allowed bigger frames than the server is cut off with a protocol error") {
        chatsock::ClientOptions big;
        big.max_payload = 1 << 20;
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice(big), bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        REQUIRE_FALSE(alice.client.send(std::string(70000, 'z')));
        REQUIRE(cst::pump(
            server, [&] { return !alice.client.is_open(); }, alice, bob));
        CHECK(
            alice.got("server", "protocol error: frame of 70000 bytes is over the limit of 65536"));
        CHECK(bob.count_from("alice") == 0);
    }

    TEST_CASE("finish(): everything queued is delivered, in order, before the connection closes") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        std::vector<std::string> sent;
        for (int i = 0; i < 1000; ++i) {
            sent.push_back("message " + std::to_string(i));
            REQUIRE_FALSE(alice.client.send(sent.back()));
        }
        alice.client.finish();
        CHECK(alice.client.send("too late") == std::errc::not_connected);
        REQUIRE(cst::pump(
            server, [&] { return !alice.client.is_open(); }, alice, bob));
        CHECK(alice.client.close_reason() == chatsock::CloseReason::finished);
        REQUIRE(cst::pump(
            server, [&] { return bob.got("server", "alice left"); }, bob));
        CHECK(bob.texts_from("alice") == sent);
        CHECK_FALSE(alice.client.poll(milliseconds(0)));
        CHECK(alice.client.socket() == chatsock::invalid_socket);
    }

    TEST_CASE("queued_bytes: what the socket has not taken yet") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        CHECK(alice.client.queued_bytes() == 0);
        // With the server not reading, 16 MB cannot all fit in the kernel's buffers.
        const std::string chunk(60000, 'q');
        for (int i = 0; i < 280; ++i) REQUIRE_FALSE(alice.client.send(chunk));
        CHECK(alice.client.queued_bytes() > 0);
        CHECK(alice.client.queued_bytes() < 280u * (chunk.size() + chatsock::header_size));
        REQUIRE(cst::pump_within(
            milliseconds(20000), server, [&] { return bob.count_from("alice") == 280; }, alice,
            bob));
        CHECK(alice.client.queued_bytes() == 0);
    }

    TEST_CASE("messages split across reads, and many in one read, are put together") {
        FakeServer fake;
        chatsock::Client client;
        std::vector<chatsock::Message> inbox;
        client.on_message = [&](const chatsock::Message& m) { inbox.push_back(m); };
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        REQUIRE(poll_until(client, &fake, [&] { return fake.received == "5         alice"; }));

        fake.send("3         bob");  // the sender's frame alone ...
        client.poll(milliseconds(20));
        CHECK(inbox.empty());
        fake.send("2         h");  // ... then half the text
        client.poll(milliseconds(20));
        CHECK(inbox.empty());
        fake.send("i");
        REQUIRE(poll_until(client, &fake, [&] { return inbox.size() == 1; }));
        CHECK(inbox[0].from == "bob");
        CHECK(inbox[0].text == "hi");
        CHECK_FALSE(inbox[0].from_server);

        std::string many;
        for (int i = 0; i < 50; ++i)
            many += *chatsock::encode_message(i % 2 ? "server" : "bob", "n" + std::to_string(i));
        fake.send(many);
        REQUIRE(poll_until(client, &fake, [&] { return inbox.size() == 51; }));
        for (int i = 0; i < 50; ++i) {
            const auto& m = inbox[static_cast<std::size_t>(i) + 1];
            CHECK(m.text == "n" + std::to_string(i));
            CHECK(m.from_server == (i % 2 == 1));
        }
        // Empty frames are messages too.
        fake.send(*chatsock::encode_message("bob", ""));
        REQUIRE(poll_until(client, &fake, [&] { return inbox.size() == 52; }));
        CHECK(inbox.back().text.empty());
    }

    TEST_CASE("a server that breaks the framing closes the client with a reason") {
        FakeServer fake;
        chatsock::Client client;
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        fake.send("abc       ");
        REQUIRE(poll_until(client, &fake, [&] { return !client.is_open(); }));
        CHECK(client.close_reason() == chatsock::CloseReason::protocol_error);
        CHECK(client.close_detail() == "bad frame header \"abc       \"");
    }

    TEST_CASE("a server frame over the client's max_payload closes the client") {
        FakeServer fake;
        chatsock::ClientOptions small;
        small.max_payload = 100;
        chatsock::Client client(small);
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        fake.send("101       ");
        REQUIRE(poll_until(client, &fake, [&] { return !client.is_open(); }));
        CHECK(client.close_reason() == chatsock::CloseReason::protocol_error);
        CHECK(client.close_detail() == "frame of 101 bytes is over the limit of 100");
    }

    TEST_CASE("a reset from the server: connection lost") {
        FakeServer fake;
        chatsock::Client client;
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        cst::reset_socket(fake.conn);
        REQUIRE(poll_until(client, nullptr, [&] { return !client.is_open(); }));
#if defined(_WIN32)  // wine (at least) reports a reset as an orderly end-of-stream
        CHECK((client.close_reason() == chatsock::CloseReason::connection_lost ||
               client.close_reason() == chatsock::CloseReason::server_closed));
#else
        CHECK(client.close_reason() == chatsock::CloseReason::connection_lost);
        CHECK(client.close_detail() == std::make_error_code(std::errc::connection_reset).message());
#endif
    }

    TEST_CASE("close(): true once the server has closed too") {
        FakeServer fake;
        chatsock::Client client;
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        REQUIRE_FALSE(client.send("last words"));
        chatsock::detail::shutdown_send(
            fake.conn.get());  // the server has already said all it will
        const auto t0 = Clock::now();
        CHECK(client.close());
        CHECK(cst::elapsed_ms(t0) < 2000);
        CHECK_FALSE(client.is_open());
        CHECK(client.close_reason() == chatsock::CloseReason::finished);
        // The server got the name, the message and then end-of-stream.
        const auto deadline = Clock::now() + cst::default_limit;
        while (!fake.peer_ended && Clock::now() < deadline) {
            fake.read_available();
            cst::sleep_ms(1);
        }
        CHECK(fake.peer_ended);
        CHECK(fake.received ==
              chatsock::encode_frame("alice") + chatsock::encode_frame("last words"));
    }

    TEST_CASE("close(): false when the server never acknowledges within close_timeout") {
        FakeServer fake;
        chatsock::ClientOptions options;
        options.close_timeout = milliseconds(200);
        chatsock::Client client(options);
        REQUIRE_FALSE(client.connect("127.0.0.1", fake.port, "alice"));
        fake.accept();
        const auto t0 = Clock::now();
        CHECK_FALSE(client.close());
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 150);
        CHECK(ms < 2000);
        CHECK_FALSE(client.is_open());
        CHECK(client.close_reason() == chatsock::CloseReason::not_acknowledged);
        CHECK(client.close_detail() ==
              "the server did not close within 200 ms; 0 bytes were still unsent");
    }

    TEST_CASE("close_reason after the server goes away") {
        ChatUser alice;
        {
            chatsock::Server server(cst::quiet_options());
            const auto port = cst::start(server);
            cst::join_wait(server, alice, port, "alice");
        }  // the server object is destroyed without stop()
        REQUIRE(poll_until(alice.client, nullptr, [&] { return !alice.client.is_open(); }));
        CHECK(alice.client.close_reason() == chatsock::CloseReason::server_closed);
        CHECK(alice.client.close_detail() ==
              "welcome, alice! 0 other users online");  // its last notice
        CHECK_FALSE(alice.client.poll(milliseconds(0)));
    }

    TEST_CASE("poll() waits up to its timeout, no longer") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice;
        cst::join_wait(server, alice, port, "alice");
        const auto t0 = Clock::now();
        CHECK(alice.client.poll(milliseconds(60)));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(ms >= 50);
        CHECK(ms < 2000);
    }

    TEST_CASE("on_message may send from inside the callback") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, alice, port, "alice");
        cst::join_wait(server, bob, port, "bob");
        bob.client.on_message = [&](const chatsock::Message& m) {
            bob.inbox.push_back(m);
            if (m.from == "alice") bob.client.send("echo: " + m.text);
        };
        REQUIRE_FALSE(alice.client.send("one"));
        REQUIRE_FALSE(alice.client.send("two"));
        REQUIRE(cst::pump(
            server, [&] { return alice.count_from("bob") == 2; }, alice, bob));
        CHECK(alice.texts_from("bob") == std::vector<std::string>{"echo: one", "echo: two"});
    }

    TEST_CASE("a client can connect again after its connection closed") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser alice, bob;
        cst::join_wait(server, bob, port, "bob");
        for (int round = 0; round < 3; ++round) {
            CAPTURE(round);
            alice.inbox.clear();
            cst::join_wait(server, alice, port, "alice");
            CHECK(alice.client.close_reason() == chatsock::CloseReason::open);
            REQUIRE_FALSE(alice.client.send("round " + std::to_string(round)));
            REQUIRE(cst::pump(
                server, [&] { return bob.got("alice", "round " + std::to_string(round)); }, alice,
                bob));
            alice.client.finish();
            REQUIRE(cst::pump(
                server, [&] { return !alice.client.is_open(); }, alice, bob));
            CHECK(alice.client.close_reason() == chatsock::CloseReason::finished);
            REQUIRE(cst::pump(
                server, [&] { return server.client_count() == 1; }, bob));
        }
    }

    TEST_CASE("a client can connect again after the server cut it off mid-message") {
        chatsock::Server server(cst::quiet_options());
        const auto port = cst::start(server);
        ChatUser bob;
        cst::join_wait(server, bob, port, "bob");
        FakeServer fake;
        ChatUser alice;
        REQUIRE_FALSE(alice.join(fake.port, "alice"));
        fake.accept();
        // A whole sender frame and half a text frame from the fake server, then it resets.
        fake.send("3         bob5         hel");
        REQUIRE(poll_until(alice.client, &fake, [&] { return fake.received.size() >= 15; }));
        alice.client.poll(milliseconds(20));  // reads the half message
        alice.client.poll(milliseconds(20));
        CHECK(alice.inbox.empty());
        cst::reset_socket(fake.conn);
        REQUIRE(poll_until(alice.client, nullptr, [&] { return !alice.client.is_open(); }));
        // Now a real server: the half message must not leak into the new connection.
        cst::join_wait(server, alice, port, "alice");
        REQUIRE_FALSE(bob.client.send("fresh"));
        REQUIRE(cst::pump(
            server, [&] { return alice.got("bob", "fresh"); }, alice, bob));
        REQUIRE_FALSE(alice.inbox.empty());
        CHECK(alice.inbox.front().from == "server");  // the welcome, parsed from a clean start
        CHECK(alice.inbox.front().text == "welcome, alice! 1 other user online");
        CHECK(alice.texts_from("bob") == std::vector<std::string>{"fresh"});
    }

}  // TEST_SUITE("client")
