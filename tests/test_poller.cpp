// The pollers (each backend, same tests) and the socket layer under them.
#include "chatsock.hpp"
#include "support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#if !defined(_WIN32)
#  include <atomic>
#  include <thread>
#endif

using chatsock::milliseconds;
using chatsock::PollEvent;
using cst::Clock;

#if defined(CHATSOCK_HAS_EPOLL)
#  define CHATSOCK_TEST_POLLERS chatsock::PollPoller, chatsock::EpollPoller
#else
#  define CHATSOCK_TEST_POLLERS chatsock::PollPoller
#endif

namespace {

const PollEvent* find_event(const std::vector<PollEvent>& events, chatsock::socket_t s) {
    for (const auto& e : events)
        if (e.socket == s) return &e;
    return nullptr;
}

// Waits (bounded) until `s` shows up in the events with the predicate true.
template <class Poller, class Pred>
bool wait_for_event(Poller& poller, chatsock::socket_t s, Pred pred, PollEvent* out = nullptr) {
    std::vector<PollEvent> events;
    const auto deadline = Clock::now() + cst::default_limit;
    while (Clock::now() < deadline) {
        REQUIRE_FALSE(poller.wait(events, 50));
        if (const PollEvent* e = find_event(events, s)) {
            if (pred(*e)) {
                if (out) *out = *e;
                return true;
            }
        }
    }
    return false;
}

bool send_all(chatsock::socket_t s, std::string_view bytes) {
    const auto deadline = Clock::now() + cst::default_limit;
    while (!bytes.empty() && Clock::now() < deadline) {
        std::error_code ec;
        std::size_t n = chatsock::send_some(s, bytes.data(), bytes.size(), ec);
        if (ec && !chatsock::detail::would_block(ec)) return false;
        if (ec) {
            cst::sleep_ms(1);
            continue;
        }
        bytes.remove_prefix(n);
    }
    return bytes.empty();
}

}  // namespace

TEST_SUITE("poller") {
    TEST_CASE_TEMPLATE("poller: readable after the peer sends", P, CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
        std::vector<PollEvent> events;
        // Nothing sent yet: a short wait reports nothing for it.
        REQUIRE_FALSE(poller.wait(events, 20));
        CHECK(find_event(events, pair.server.get()) == nullptr);

        REQUIRE(send_all(pair.client.get(), "ping"));
        PollEvent e{};
        REQUIRE(wait_for_event(
            poller, pair.server.get(), [](const PollEvent& ev) { return ev.readable; }, &e));
        CHECK(e.readable);
        CHECK_FALSE(e.writable);  // not asked for
        CHECK_FALSE(e.hangup);
        char buf[16];
        std::error_code ec;
        CHECK(chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec) == 4);
        CHECK_FALSE(ec);
        CHECK(std::string(buf, 4) == "ping");
    }

    TEST_CASE_TEMPLATE("poller: a fresh connected socket is writable", P, CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.client.get(), chatsock::want_write));
        PollEvent e{};
        REQUIRE(wait_for_event(
            poller, pair.client.get(), [](const PollEvent& ev) { return ev.writable; }, &e));
        CHECK(e.writable);
        CHECK_FALSE(e.readable);
        CHECK_FALSE(e.hangup);
    }

    TEST_CASE_TEMPLATE("poller: interest 0 silences a socket, and it comes back", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read | chatsock::want_write));
        REQUIRE(send_all(pair.client.get(), "data"));
        REQUIRE(wait_for_event(poller, pair.server.get(),
                               [](const PollEvent& ev) { return ev.readable; }));

        REQUIRE_FALSE(poller.modify(pair.server.get(), 0));
        std::vector<PollEvent> events;
        for (int i = 0; i < 3; ++i) {
            REQUIRE_FALSE(poller.wait(events, 20));
            CHECK(find_event(events, pair.server.get()) ==
                  nullptr);  // data waits, but nobody asked
        }
        REQUIRE_FALSE(poller.modify(pair.server.get(), chatsock::want_write));
        PollEvent e{};
        REQUIRE(wait_for_event(
            poller, pair.server.get(), [](const PollEvent& ev) { return ev.writable; }, &e));
        CHECK_FALSE(e.readable);
        REQUIRE_FALSE(poller.modify(pair.server.get(), chatsock::want_read));
        REQUIRE(wait_for_event(
            poller, pair.server.get(), [](const PollEvent& ev) { return ev.readable; }, &e));
        CHECK_FALSE(e.writable);
    }

    TEST_CASE_TEMPLATE("poller: a removed socket reports nothing", P, CHATSOCK_TEST_POLLERS) {
        P poller;
        auto a = cst::make_pair();
        auto b = cst::make_pair();
        REQUIRE_FALSE(poller.add(a.server.get(), chatsock::want_read));
        REQUIRE_FALSE(poller.add(b.server.get(), chatsock::want_read));
        REQUIRE_FALSE(poller.remove(a.server.get()));
        REQUIRE(send_all(a.client.get(), "x"));
        REQUIRE(send_all(b.client.get(), "y"));
        // b is still watched (the removal kept the other slot right) ...
        REQUIRE(wait_for_event(poller, b.server.get(),
                               [](const PollEvent& ev) { return ev.readable; }));
        // ... a is not.
        std::vector<PollEvent> events;
        for (int i = 0; i < 3; ++i) {
            REQUIRE_FALSE(poller.wait(events, 20));
            CHECK(find_event(events, a.server.get()) == nullptr);
        }
        // Removing or modifying what is not there is an error; adding it back works.
        CHECK(poller.remove(a.server.get()));
        CHECK(poller.modify(a.server.get(), chatsock::want_read));
        REQUIRE_FALSE(poller.add(a.server.get(), chatsock::want_read));
        REQUIRE(wait_for_event(poller, a.server.get(),
                               [](const PollEvent& ev) { return ev.readable; }));
    }

    TEST_CASE_TEMPLATE("poller: adding the same socket twice fails", P, CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
        auto ec = poller.add(pair.server.get(), chatsock::want_write);
        CHECK(ec);
        CHECK(ec == std::errc::file_exists);
        // The first registration still works.
        REQUIRE(send_all(pair.client.get(), "z"));
        REQUIRE(wait_for_event(poller, pair.server.get(),
                               [](const PollEvent& ev) { return ev.readable; }));
    }

    TEST_CASE_TEMPLATE("poller: a wait with nothing ready times out on time", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
        std::vector<PollEvent> events{PollEvent{chatsock::invalid_socket, true, true, true}};
        const auto t0 = Clock::now();
        REQUIRE_FALSE(poller.wait(events, 100));
        const auto ms = cst::elapsed_ms(t0);
        CHECK(events.empty());  // replaced, not appended to
        CHECK(ms >= 80);
        CHECK(ms < 2000);
        // A zero timeout returns at once.
        const auto t1 = Clock::now();
        REQUIRE_FALSE(poller.wait(events, 0));
        CHECK(events.empty());
        CHECK(cst::elapsed_ms(t1) < 500);
    }

    TEST_CASE_TEMPLATE("poller: wake() before wait() makes the wait return at once", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        poller.wake();
        std::vector<PollEvent> events;
        const auto t0 = Clock::now();
        REQUIRE_FALSE(poller.wait(events, 5000));
        CHECK(cst::elapsed_ms(t0) < 1000);
        CHECK(events.empty());  // the wake channel itself is never reported
        // The wake was consumed: the next wait times out normally.
        const auto t1 = Clock::now();
        REQUIRE_FALSE(poller.wait(events, 50));
        CHECK(cst::elapsed_ms(t1) >= 40);
        // Many wakes collapse into one early return and do not block the caller.
        for (int i = 0; i < 100000; ++i) poller.wake();
        REQUIRE_FALSE(poller.wait(events, 5000));
        const auto t2 = Clock::now();
        REQUIRE_FALSE(poller.wait(events, 50));
        CHECK(cst::elapsed_ms(t2) >= 40);
    }

#if !defined(_WIN32)
    TEST_CASE_TEMPLATE("poller: wake() from another thread interrupts a wait without limit", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
        std::atomic<bool> returned{false};
        std::thread waker([&] {
            cst::sleep_ms(50);
            poller.wake();
            // Safety net so a broken wake() fails the test instead of hanging it: after a long
            // grace period, data on the watched socket ends the wait (and the test sees it).
            const auto deadline = Clock::now() + cst::default_limit;
            while (!returned.load() && Clock::now() < deadline) cst::sleep_ms(5);
            if (!returned.load()) send_all(pair.client.get(), "!");
        });
        std::vector<PollEvent> events;
        const auto t0 = Clock::now();
        auto ec = poller.wait(events, -1);
        returned.store(true);
        const auto ms = cst::elapsed_ms(t0);
        waker.join();
        CHECK_FALSE(ec);
        CHECK(events.empty());  // woken, not by the safety net's data
        CHECK(ms >= 30);
        CHECK(ms < 3000);
    }
#endif

    TEST_CASE_TEMPLATE("poller: a peer that closes or resets is never silent", P,
                       CHATSOCK_TEST_POLLERS) {
        SUBCASE("orderly close") {
            P poller;
            auto pair = cst::make_pair();
            REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
            pair.client.close();
            PollEvent e{};
            REQUIRE(wait_for_event(
                poller, pair.server.get(),
                [](const PollEvent& ev) { return ev.readable || ev.hangup; }, &e));
            char buf[8];
            std::error_code ec;
            CHECK(chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec) == 0);
            CHECK_FALSE(ec);  // end-of-stream
        }
        SUBCASE("reset (SO_LINGER 0)") {
            P poller;
            auto pair = cst::make_pair();
            REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
            cst::reset_socket(pair.client);
            PollEvent e{};
            REQUIRE(wait_for_event(
                poller, pair.server.get(),
                [](const PollEvent& ev) { return ev.readable || ev.hangup; }, &e));
            char buf[8];
            std::error_code ec;
#if !defined(_WIN32)          // wine (at least) reports a reset as end-of-stream
            CHECK(e.hangup);  // the event itself says the connection failed
#endif
            CHECK(chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec) == 0);
#if !defined(_WIN32)
            CHECK(ec == std::errc::connection_reset);
#endif
            CHECK_FALSE(chatsock::detail::would_block(ec));
        }
        SUBCASE("reset while only writability is watched") {
            P poller;
            auto pair = cst::make_pair();
            // Fill the send buffer so the socket is not writable, then watch for writability only.
            std::string chunk(65536, 'f');
            for (int i = 0; i < 1000; ++i) {
                std::error_code ec;
                chatsock::send_some(pair.server.get(), chunk.data(), chunk.size(), ec);
                if (ec) break;
            }
            REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_write));
            cst::reset_socket(pair.client);
            PollEvent e{};
            REQUIRE(wait_for_event(
                poller, pair.server.get(),
                [](const PollEvent& ev) { return ev.writable || ev.hangup; }, &e));
        }
    }

    TEST_CASE_TEMPLATE("poller: a listener is readable when a connection is pending", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        std::error_code ec;
        chatsock::Socket listener = chatsock::listen_tcp("127.0.0.1", 0, ec);
        REQUIRE_FALSE(ec);
        REQUIRE_FALSE(poller.add(listener.get(), chatsock::want_read));
        std::vector<PollEvent> events;
        REQUIRE_FALSE(poller.wait(events, 20));
        CHECK(find_event(events, listener.get()) == nullptr);

        chatsock::Socket client = chatsock::connect_tcp(
            "127.0.0.1", chatsock::local_port(listener.get()), cst::default_limit, ec);
        REQUIRE_FALSE(ec);
        REQUIRE(wait_for_event(poller, listener.get(),
                               [](const PollEvent& ev) { return ev.readable; }));
        std::string peer;
        chatsock::Socket accepted = chatsock::accept_tcp(listener.get(), ec, &peer);
        REQUIRE(accepted.valid());
        CHECK(peer == "127.0.0.1:" + std::to_string(chatsock::local_port(client.get())));
        // Nobody else waiting: accept says would-block.
        chatsock::Socket none = chatsock::accept_tcp(listener.get(), ec);
        CHECK_FALSE(none.valid());
        CHECK(chatsock::detail::would_block(ec));
    }

    TEST_CASE_TEMPLATE("poller: many sockets, events for exactly the ready ones", P,
                       CHATSOCK_TEST_POLLERS) {
        P poller;
        std::vector<cst::SocketPair> pairs;
        for (int i = 0; i < 20; ++i) pairs.push_back(cst::make_pair());
        for (auto& p : pairs) REQUIRE_FALSE(poller.add(p.server.get(), chatsock::want_read));
        // Remove a few from the middle to exercise slot reuse.
        for (int i : {3, 10, 0})
            REQUIRE_FALSE(poller.remove(pairs[static_cast<std::size_t>(i)].server.get()));
        for (int i : {1, 3, 7, 19})
            REQUIRE(send_all(pairs[static_cast<std::size_t>(i)].client.get(), "r"));
        // Every socket reported in the next waits, until `count` have been seen (bounded).
        auto ready_sockets = [&](std::size_t count) {
            std::vector<chatsock::socket_t> seen;
            std::vector<PollEvent> events;
            const auto deadline = Clock::now() + cst::default_limit;
            while (seen.size() < count && Clock::now() < deadline) {
                REQUIRE_FALSE(poller.wait(events, 50));
                for (const auto& e : events)
                    if (std::find(seen.begin(), seen.end(), e.socket) == seen.end())
                        seen.push_back(e.socket);
            }
            REQUIRE_FALSE(poller.wait(events, 20));
            for (const auto& e : events)
                if (std::find(seen.begin(), seen.end(), e.socket) == seen.end())
                    seen.push_back(e.socket);
            std::sort(seen.begin(), seen.end());
            return seen;
        };
        auto servers = [&](std::vector<std::size_t> which) {
            std::vector<chatsock::socket_t> out;
            for (std::size_t i : which) out.push_back(pairs[i].server.get());
            std::sort(out.begin(), out.end());
            return out;
        };
        CHECK(ready_sockets(3) == servers({1, 7, 19}));  // 3 was removed: its data is not reported
        // The sockets that moved into the freed slots can still be changed and removed.
        REQUIRE_FALSE(poller.remove(pairs[19].server.get()));
        REQUIRE_FALSE(poller.modify(pairs[17].server.get(), 0));
        for (int i : {16, 17, 18})
            REQUIRE(send_all(pairs[static_cast<std::size_t>(i)].client.get(), "r"));
        CHECK(ready_sockets(4) == servers({1, 7, 16, 18}));
    }

    TEST_CASE("the default Poller is the platform's backend") {
#if defined(CHATSOCK_HAS_EPOLL)
        CHECK(std::string(chatsock::Poller::backend()) == "epoll");
#elif defined(_WIN32)
        CHECK(std::string(chatsock::Poller::backend()) == "WSAPoll");
#else
        CHECK(std::string(chatsock::Poller::backend()) == "poll");
#endif
#if defined(CHATSOCK_USE_POLL)
        CHECK(std::string(chatsock::Poller::backend()) != "epoll");
#endif
    }

}  // TEST_SUITE("poller")

TEST_SUITE("sockets") {
    TEST_CASE("listen_tcp on port 0 picks a port, which local_port and format_address report") {
        std::error_code ec;
        chatsock::Socket listener = chatsock::listen_tcp("127.0.0.1", 0, ec);
        REQUIRE_FALSE(ec);
        const std::uint16_t port = chatsock::local_port(listener.get());
        CHECK(port != 0);
        sockaddr_storage addr{};
        socklen_t len = sizeof addr;
        REQUIRE(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
        CHECK(chatsock::detail::format_address(reinterpret_cast<sockaddr*>(&addr), len) ==
              "127.0.0.1:" + std::to_string(port));
        // The same port cannot be taken twice.
        chatsock::Socket second = chatsock::listen_tcp("127.0.0.1", port, ec);
        CHECK_FALSE(second.valid());
        CHECK(ec);
    }

    TEST_CASE("format_address brackets IPv6") {
        sockaddr_in6 a6{};
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons(4321);
        a6.sin6_addr = in6addr_loopback;
        CHECK(chatsock::detail::format_address(reinterpret_cast<sockaddr*>(&a6), sizeof a6) ==
              "[::1]:4321");
        sockaddr_in a4{};
        a4.sin_family = AF_INET;
        a4.sin_port = htons(80);
        a4.sin_addr.s_addr = htonl(0x7F000001);
        CHECK(chatsock::detail::format_address(reinterpret_cast<sockaddr*>(&a4), sizeof a4) ==
              "127.0.0.1:80");
    }

    TEST_CASE("listen_tcp reports a name that does not resolve") {
        std::error_code ec;
        chatsock::Socket s = chatsock::listen_tcp("no.such.host.invalid", 0, ec);
        CHECK_FALSE(s.valid());
        CHECK(ec);
        CHECK_FALSE(ec.message().empty());
    }

    TEST_CASE("connect_tcp to a port nobody listens on fails quickly") {
        std::error_code ec;
        std::uint16_t port = 0;
        {
            chatsock::Socket probe = chatsock::listen_tcp("127.0.0.1", 0, ec);
            REQUIRE_FALSE(ec);
            port = chatsock::local_port(probe.get());
        }
        const auto t0 = Clock::now();
        chatsock::Socket s = chatsock::connect_tcp("127.0.0.1", port, milliseconds(3000), ec);
        CHECK_FALSE(s.valid());
        CHECK(ec);
        CHECK(ec == std::errc::connection_refused);
        CHECK(cst::elapsed_ms(t0) < 2000);
    }

    TEST_CASE("Socket: owns, moves and releases") {
        std::error_code ec;
        chatsock::Socket a = chatsock::listen_tcp("127.0.0.1", 0, ec);
        REQUIRE(a.valid());
        const chatsock::socket_t raw = a.get();
        chatsock::Socket b(std::move(a));
        CHECK_FALSE(a.valid());
        CHECK(b.get() == raw);
        CHECK(static_cast<bool>(b));
        chatsock::Socket c;
        CHECK_FALSE(c.valid());
        c = std::move(b);
        CHECK(c.get() == raw);
        chatsock::Socket d(c.release());
        CHECK_FALSE(c.valid());
        CHECK(d.get() == raw);
        d.close();
        CHECK_FALSE(d.valid());
        d.close();  // twice is fine
    }

    TEST_CASE("recv_some: would-block, data, end-of-stream") {
        auto pair = cst::make_pair();
        char buf[64];
        std::error_code ec;
        CHECK(chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec) == 0);
        CHECK(chatsock::detail::would_block(ec));
        REQUIRE(send_all(pair.client.get(), "abc"));
        chatsock::detail::shutdown_send(pair.client.get());
        std::string got;
        const auto deadline = Clock::now() + cst::default_limit;
        bool eof = false;
        while (!eof && Clock::now() < deadline) {
            std::size_t n = chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec);
            if (n > 0) got.append(buf, n);
            else if (!ec) eof = true;
            else if (chatsock::detail::would_block(ec)) cst::sleep_ms(1);
            else break;
        }
        CHECK(eof);
        CHECK(got == "abc");
    }

    TEST_CASE("OutputQueue sends every byte in order across partial writes") {
        auto pair = cst::make_pair();
        chatsock::OutputQueue q;
        CHECK(q.empty());
        CHECK(q.size_bytes() == 0);
        std::string expected;
        std::mt19937 rng(7);
        for (int i = 0; i < 300; ++i) {
            auto chunk = std::make_shared<std::string>(1 + rng() % 40000, '\0');
            for (char& c : *chunk) c = static_cast<char>('a' + rng() % 26);
            expected += *chunk;
            q.push(chunk);
        }
        q.push(std::make_shared<std::string>());  // an empty chunk is ignored
        CHECK(q.size_bytes() == expected.size());

        std::string got;
        char buf[65536];
        const auto deadline = Clock::now() + cst::default_limit;
        while (got.size() < expected.size() && Clock::now() < deadline) {
            const std::size_t before = q.size_bytes();
            REQUIRE_FALSE(q.write_to(pair.server.get()));
            CHECK(q.size_bytes() <= before);
            CHECK(q.size_bytes() <=
                  expected.size() - got.size());  // what is queued was not yet received
            std::error_code ec;
            std::size_t n = chatsock::recv_some(pair.client.get(), buf, sizeof buf, ec);
            if (n > 0) got.append(buf, n);
            else if (ec && !chatsock::detail::would_block(ec)) break;
        }
        REQUIRE(got.size() == expected.size());
        CHECK(got == expected);
        CHECK(q.empty());
        CHECK(q.size_bytes() == 0);
    }

    TEST_CASE("OutputQueue: a shared frame is sent whole to each connection") {
        auto a = cst::make_pair();
        auto b = cst::make_pair();
        chatsock::OutputQueue qa, qb;
        auto frame = chatsock::encode_message("alice", "hello");
        qa.push(frame);
        qb.push(frame);
        CHECK(frame.use_count() == 3);
        REQUIRE_FALSE(qa.write_to(a.server.get()));
        REQUIRE_FALSE(qb.write_to(b.server.get()));
        CHECK(qa.empty());
        CHECK(qb.empty());
        CHECK(frame.use_count() == 1);  // released once sent
        char buf[64];
        std::string got;
        const auto deadline = Clock::now() + cst::default_limit;
        while (got.size() < frame->size() && Clock::now() < deadline) {
            std::error_code ec;
            std::size_t n = chatsock::recv_some(b.client.get(), buf, sizeof buf, ec);
            if (n) got.append(buf, n);
            else cst::sleep_ms(1);
        }
        CHECK(got == *frame);
    }

    TEST_CASE("OutputQueue reports a broken connection") {
        auto pair = cst::make_pair();
        chatsock::OutputQueue q;
        cst::reset_socket(pair.client);
        cst::sleep_ms(20);
        std::error_code ec;
        const auto deadline = Clock::now() + cst::default_limit;
        while (!ec && Clock::now() < deadline) {
            q.push(std::make_shared<std::string>(1000, 'x'));
            ec = q.write_to(pair.server.get());
            if (!ec) cst::sleep_ms(1);
        }
        CHECK(ec);
        CHECK_FALSE(chatsock::detail::would_block(ec));
    }

}  // TEST_SUITE("sockets")
