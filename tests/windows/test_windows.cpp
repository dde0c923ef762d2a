// Windows-only tests: what the platform layer does differently there (Winsock start-up and
// error text, WSAPoll's wake channel, select() for connect, dual stack, the console Ctrl+C
// handler, header inclusion order). Built into unit.exe only (see WIN_TEST_SOURCES in the
// Makefile) and run under wine by tests/run_windows.sh; elsewhere this file is empty.
#if defined(_WIN32)
#  include "chatsock.hpp"
#  include "../support.hpp"

#  include <doctest/doctest.h>

#  include <algorithm>
#  include <atomic>
#  include <limits>
#  include <string>
#  include <vector>

// chatsock.hpp defines NOMINMAX before it includes <windows.h>: no min/max macros leak out.
#  if defined(min) || defined(max)
#    error "chatsock.hpp left min/max macros defined"
#  endif

// Defined in windows_h_first.cpp and winsock2_first.cpp, each with its own inclusion order.
int windows_h_first_max(int a, int b);
std::string windows_h_first_welcome();
std::string winsock2_first_welcome();
bool winsock2_first_socket_is_winsock();

using chatsock::milliseconds;
using cst::Clock;

namespace {

std::uint16_t unused_port() {
    std::error_code ec;
    chatsock::Socket probe = chatsock::listen_tcp("127.0.0.1", 0, ec);
    REQUIRE_FALSE(ec);
    return chatsock::local_port(probe.get());  // closed again on return
}

// Stops a server from a Win32 thread unless disarmed first: a test of run() fails, not hangs.
struct Win32Watchdog {
    chatsock::Server& server;
    HANDLE disarmed = ::CreateEventA(nullptr, TRUE, FALSE, nullptr);
    HANDLE thread = nullptr;
    std::atomic<bool> fired{false};
    explicit Win32Watchdog(chatsock::Server& s) : server(s) {
        thread = ::CreateThread(nullptr, 0, watch, this, 0, nullptr);
    }
    static DWORD WINAPI watch(void* self) {
        auto* w = static_cast<Win32Watchdog*>(self);
        if (::WaitForSingleObject(w->disarmed, 5000) == WAIT_TIMEOUT) {
            w->fired.store(true);
            w->server.stop();
        }
        return 0;
    }
    ~Win32Watchdog() {
        ::SetEvent(disarmed);
        ::WaitForSingleObject(thread, INFINITE);
        ::CloseHandle(thread);
        ::CloseHandle(disarmed);
    }
};

// wine's ntdll exports wine_get_version; Windows' does not. For the few places where wine
// behaves differently from Windows, so the test can hold each to its own behaviour.
const char* wine_version() {
    using Fn = const char* (*)();
    const HMODULE ntdll = ::GetModuleHandleA("ntdll.dll");
    const auto fn = ntdll ? reinterpret_cast<Fn>(reinterpret_cast<void*>(
                                ::GetProcAddress(ntdll, "wine_get_version")))
                          : nullptr;
    return fn ? fn() : nullptr;
}

DWORD WINAPI wake_after_50ms(void* poller) {
    ::Sleep(50);
    static_cast<chatsock::PollPoller*>(poller)->wake();
    return 0;
}

}  // namespace

TEST_SUITE("windows") {
    TEST_CASE("where these tests run") {
        const char* wine = wine_version();
        const std::string where =
            (wine ? "under wine " + std::string(wine) : "on Windows (not wine)") +
            "; Poller: " + chatsock::Poller::backend();
        MESSAGE(where);
        CHECK(std::string(chatsock::Poller::backend()) == "WSAPoll");
    }

    TEST_CASE("chatsock.hpp after <windows.h> or <winsock2.h>, in the same program") {
        CHECK(windows_h_first_max(2, 3) == 3);  // that TU's own min/max macros survived the header
        CHECK(windows_h_first_welcome() == "welcome, windows.h! 0 other users online");
        CHECK(winsock2_first_welcome() == "welcome, winsock2.h! 0 other users online");
        CHECK(winsock2_first_socket_is_winsock());
    }

    TEST_CASE("std::min and std::max are usable after chatsock.hpp") {
        CHECK(std::min(1, 2) == 1);
        CHECK(std::max(1, 2) == 2);
        CHECK((std::numeric_limits<int>::max)() == 2147483647);
        CHECK(std::numeric_limits<int>::min() < 0);
        CHECK(std::max<long long>(3, 4) == 4);
    }

    TEST_CASE("winsock errors: readable system text, and they compare with std::errc") {
        const std::error_code refused(WSAECONNREFUSED, chatsock::detail::os_category());
        const std::string text = refused.message();
        INFO("message: \"", text, "\"");
        CHECK_FALSE(text.empty());
        CHECK(text.rfind("error ", 0) != 0);  // found by FormatMessage, not the numeric fallback
        CHECK(text.find_first_of("\r\n") == std::string::npos);
        CHECK(text.back() != '.');
        CHECK(std::string(refused.category().name()) == "winsock");
        CHECK(refused == std::errc::connection_refused);

        const std::error_code in_use(WSAEADDRINUSE, chatsock::detail::os_category());
        CHECK_FALSE(in_use.message().empty());
        CHECK(in_use == std::errc::address_in_use);
        CHECK(in_use != std::errc::connection_refused);

        // A code the system has no text for still says something.
        const std::error_code unknown(123456789, chatsock::detail::os_category());
        CHECK(unknown.message() == "error 123456789");
    }

    TEST_CASE(
        "Winsock is started by whoever needs it: servers and clients side by side, then again") {
        for (int round = 0; round < 2; ++round) {
            CAPTURE(round);
            chatsock::Server first(cst::quiet_options());
            chatsock::Server second(cst::quiet_options());
            const auto port1 = cst::start(first);
            const auto port2 = cst::start(second);
            CHECK(port1 != port2);
            cst::ChatUser alice, bob;
            cst::join_wait(first, alice, port1, "alice");
            cst::join_wait(second, bob, port2, "bob");
            REQUIRE_FALSE(bob.client.send("hi"));
            CHECK(alice.got("server", "welcome, alice! 0 other users online"));
            CHECK(bob.got("server", "welcome, bob! 0 other users online"));
        }  // all gone: each WSACleanup matched its WSAStartup (the free functions' own stays)
        chatsock::Server later(cst::quiet_options());
        const auto port = cst::start(later);
        cst::ChatUser carol;
        cst::join_wait(later, carol, port, "carol");
        CHECK(carol.client.is_open());
    }

    TEST_CASE("a server on \"::\" also accepts IPv4 clients (dual stack)") {
        auto options = cst::quiet_options();
        options.host = "::";
        chatsock::Server server(options);
        std::vector<std::string> peers;
        server.on_join = [&](const chatsock::ClientInfo& c) { peers.push_back(c.peer); };
        if (auto ec = server.listen()) {
            MESSAGE("skipped: cannot listen on [::] here (" << ec.message()
                                                            << "); no IPv6 under this wine?");
            return;
        }
        const auto port = server.port();
        cst::ChatUser v4;
        cst::join_wait(server, v4, port, "v4", "127.0.0.1");
        REQUIRE(peers.size() == 1);
        INFO("peer: ", peers[0]);
        CHECK(peers[0].find("127.0.0.1") != std::string::npos);  // "[::ffff:127.0.0.1]:port"
        cst::ChatUser v6;
        if (v6.join(port, "v6", "::1")) {
            MESSAGE("no IPv6 loopback to connect from; the IPv4 half passed");
            return;
        }
        REQUIRE(cst::pump(
            server, [&] { return v6.got_text_starting("welcome, v6!"); }, v6));
    }

    TEST_CASE("connecting where nobody listens fails fast with a reason (select-based connect)") {
        const auto port = unused_port();
        std::error_code ec;
        auto t0 = Clock::now();
        chatsock::Socket s = chatsock::connect_tcp("127.0.0.1", port, milliseconds(5000), ec);
        const auto ms = cst::elapsed_ms(t0);
        CHECK_FALSE(s.valid());
        REQUIRE(ec);
        INFO("error: ", ec.message(), " after ", ms, " ms");
        CHECK(ec == std::errc::connection_refused);
        CHECK(ms < 3000);  // Windows retries a refused loopback SYN for 1-2 s; wine fails at once

        chatsock::Client client;
        t0 = Clock::now();
        ec = client.connect("127.0.0.1", port, "alice");
        CHECK(ec);
        CHECK_FALSE(ec.message().empty());
        CHECK_FALSE(client.is_open());
        CHECK(cst::elapsed_ms(t0) < 3000);
    }

    TEST_CASE("connect_tcp gives up at its timeout when a listener's backlog is full") {
        // A backlog of 1, never accepted: once it is full, later SYNs go unanswered (wine, Linux) or
        // are refused (Windows). Either way each attempt ends by itself, within its timeout.
        std::error_code ec;
        chatsock::Socket listener = chatsock::listen_tcp("127.0.0.1", 0, ec, 1);
        REQUIRE_FALSE(ec);
        const auto port = chatsock::local_port(listener.get());
        std::vector<chatsock::Socket> queued;
        for (int i = 0; i < 16; ++i) {
            const auto t0 = Clock::now();
            chatsock::Socket s = chatsock::connect_tcp("127.0.0.1", port, milliseconds(300), ec);
            const auto ms = cst::elapsed_ms(t0);
            if (s.valid()) {
                CHECK(ms < 300 + 200);
                queued.push_back(std::move(s));
                continue;
            }
            INFO("attempt ", i, ": ", ec.message(), " after ", ms, " ms");
            CHECK((ec == std::errc::timed_out || ec == std::errc::connection_refused));
            if (ec == std::errc::timed_out) CHECK(ms >= 250);
            CHECK(ms < 300 + 2500);
            break;
        }
        if (queued.size() == 16) MESSAGE("16 connections queued: the backlog is not enforced here");
    }

    TEST_CASE("PollPoller::wake() from a plain Win32 thread interrupts a wait") {
        chatsock::PollPoller poller;
        std::vector<chatsock::PollEvent> events;
        const auto t0 = Clock::now();
        HANDLE thread = ::CreateThread(nullptr, 0, wake_after_50ms, &poller, 0, nullptr);
        REQUIRE(thread != nullptr);
        auto ec =
            poller.wait(events, 10000);  // bounded, so a broken wake() fails instead of hanging
        const auto ms = cst::elapsed_ms(t0);
        ::WaitForSingleObject(thread, INFINITE);
        ::CloseHandle(thread);
        CHECK_FALSE(ec);
        CHECK(events.empty());
        CHECK(ms >= 30);
        CHECK(ms < 5000);
        // The wake was consumed: the next wait runs its full time.
        const auto t1 = Clock::now();
        CHECK_FALSE(poller.wait(events, 50));
        CHECK(cst::elapsed_ms(t1) >= 40);
    }

    TEST_CASE("a peer's reset: WSAECONNRESET on Windows, an orderly end-of-stream under wine") {
        chatsock::PollPoller poller;
        auto pair = cst::make_pair();
        REQUIRE_FALSE(poller.add(pair.server.get(), chatsock::want_read));
        cst::reset_socket(pair.client);
        std::vector<chatsock::PollEvent> events;
        const auto deadline = Clock::now() + cst::default_limit;
        while (events.empty() && Clock::now() < deadline) REQUIRE_FALSE(poller.wait(events, 100));
        REQUIRE(events.size() == 1);
        CHECK((events[0].readable || events[0].hangup));  // never silent (wine: POLLHUP|POLLERR)
        char buf[8];
        std::error_code ec;
        CHECK(chatsock::recv_some(pair.server.get(), buf, sizeof buf, ec) == 0);
        if (wine_version()) {
            // wine 8's recv() reports a reset as end-of-stream (polled or not), so a server says
            // "left" where Windows would say "connection lost: ...".
            CHECK_FALSE(ec);
        } else {
            CHECK(ec == std::errc::connection_reset);
        }
    }

    TEST_CASE(
        "the console Ctrl+C handler stops the server it points at, and only Ctrl+C/Break/close") {
        using chatsock::detail::on_console_event;
        {
            chatsock::Server server(cst::quiet_options());
            cst::start(server);
            chatsock::stop_on_ctrl_c(server);
            CHECK(on_console_event(CTRL_LOGOFF_EVENT) == FALSE);  // for services; not ours to take
            CHECK(on_console_event(CTRL_SHUTDOWN_EVENT) == FALSE);
            CHECK(on_console_event(CTRL_C_EVENT) == TRUE);  // as the system's handler thread would
            const auto t0 = Clock::now();
            {
                Win32Watchdog watchdog(server);
                CHECK_FALSE(server.run());
                CHECK_FALSE(watchdog.fired.load());
            }
            CHECK(cst::elapsed_ms(t0) < 3000);
        }
        // The server is gone: a late Ctrl+C falls through to the default handler.
        CHECK(on_console_event(CTRL_C_EVENT) == FALSE);
        ::SetConsoleCtrlHandler(on_console_event, FALSE);
    }

}  // TEST_SUITE("windows")
#endif  // _WIN32
