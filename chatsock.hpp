// chatsock.hpp — a portable chat server and client in one C++17 header.
//
// WHAT IT IS
//   A small, complete chat library over TCP: a poll abstraction over BSD sockets and Winsock,
//   message framing, broadcast with per-client write queues, and a conversation log. The wire
//   format is the classic Python select() chat: every frame is a 10-byte ASCII length header
//   (left-aligned, space-padded) followed by that many bytes of UTF-8. A client's first frame
//   is its username; the server relays each later frame to every *other* client as two
//   frames, sender name then text. See docs/PROTOCOL.md.
//
// BUILD (no other flags, no other files)
//   Linux, macOS:  g++ -std=c++17 -O2 demo_server.cpp -o demo_server
//   MinGW-w64:     x86_64-w64-mingw32-g++ -std=c++17 -O2 demo_server.cpp -o demo_server -lws2_32
//   MSVC:          cl /std:c++17 /O2 /EHsc demo_server.cpp      (links ws2_32 by #pragma)
//
// A COMPLETE SERVER
//   #include "chatsock.hpp"
//   int main() {
//       chatsock::ServerOptions options;            // 127.0.0.1:1234, no log file
//       options.log_path = "message_log";
//       chatsock::Server server(options);
//       chatsock::stop_on_ctrl_c(server);          // opt-in: Ctrl+C stops it cleanly
//       if (auto ec = server.listen()) return 1;   // ec.message() says why
//       server.run();                               // until stop()
//   }
//
// A COMPLETE CLIENT
//   chatsock::Client client;
//   client.on_message = [](const chatsock::Message& m) {
//       std::cout << chatsock::printable(m.from) << " > " << chatsock::printable(m.text) << "\n"; };
//   if (auto ec = client.connect("127.0.0.1", 1234, "alice")) return 1;
//   client.send("hello");
//   while (client.poll(std::chrono::milliseconds(100))) { /* ... */ }
//
// CONFIGURATION MACROS (define before including)
//   CHATSOCK_USE_POLL   use the portable poll() backend even where epoll exists (Linux).
//   Everything else is a run-time option: see ServerOptions and ClientOptions below.
//
// WHY IT IS FAST (measured in bench/; README, "Performance")
//   A message is encoded once and shared by every recipient's queue; what one loop turn queues
//   for a client leaves in one writev/WSASend; frames are parsed straight from the read buffer;
//   the log is one write per loop turn. An idle client costs the server under 1 KiB.
//
// LAYERS, read top to bottom
//   1. platform    socket handle, RAII socket, errors, resolve/listen/connect/send/recv
//   2. poller      epoll (Linux) / poll() (POSIX) / WSAPoll (Windows), with a wake() channel
//   3. framing     pure code: encode, incremental decode, UTF-8 and username rules, escaping
//   4. buffers     shared frames, per-connection output queue, conversation log
//   5. server      accept, handshake, relay, limits, callbacks, graceful stop
//   6. client      connect, send, poll-driven receive, graceful close, console input
//
// LICENSE
//   MIT. Copyright (c) 2026 the chatsock authors. See LICENSE for the full text.

#ifndef CHATSOCK_HPP
#define CHATSOCK_HPP

#define CHATSOCK_VERSION "0.1.0"

#if defined(_WIN32)
#  ifndef NOMINMAX
#    define NOMINMAX
#  endif
// A <windows.h> included before this header without NOMINMAX (MSVC's) has made min and max
// macros, which break std::min/std::max here and in the standard headers: set them aside until
// the end of this header, which puts them back.
#  pragma push_macro("min")
#  pragma push_macro("max")
#  undef min
#  undef max
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  if defined(_WIN32_WINNT) && _WIN32_WINNT < 0x0600
#    error "chatsock needs Windows Vista or later (_WIN32_WINNT >= 0x0600) for WSAPoll"
#  endif
#  if defined(__GNUC__) && defined(_WINSOCKAPI_) && !defined(_WINSOCK2API_)
// The user's <windows.h> came first and brought the old winsock.h; MinGW's winsock2.h copes
// but warns about the order. (MSVC cannot mix the two: there, include chatsock.hpp or winsock2.h first, or
// define WIN32_LEAN_AND_MEAN before <windows.h>.)
#    undef _WINSOCKAPI_  // the guard that makes winsock2.h warn; its own guards suffice
#  endif
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <windows.h>
#  include <shellapi.h>
#  ifdef _MSC_VER
#    pragma comment(lib, "ws2_32")
#    pragma comment(lib, "shell32")  // CommandLineToArgvW, for command_line()
#  endif
#else
#  include <arpa/inet.h>
#  include <fcntl.h>
#  include <netdb.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  include <poll.h>
#  include <signal.h>
#  include <sys/resource.h>
#  include <sys/socket.h>
#  include <sys/types.h>
#  include <sys/uio.h>
#  include <unistd.h>
#  if defined(__linux__) && !defined(CHATSOCK_USE_POLL)
#    include <sys/epoll.h>
#    define CHATSOCK_HAS_EPOLL 1
#  endif
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace chatsock {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ============================================================================================
// 1. Platform: every difference between Winsock and BSD sockets lives in this section.
// ============================================================================================

#if defined(_WIN32)
using socket_t = SOCKET;
constexpr socket_t invalid_socket = INVALID_SOCKET;
#else
using socket_t = int;
constexpr socket_t invalid_socket = -1;
#endif

namespace detail {

#if defined(_WIN32)
// Winsock error codes as std::error_code, with the system's own text.
class winsock_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "winsock"; }
    std::string message(int code) const override {
        char* text = nullptr;
        DWORD n = FormatMessageA(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM |
                                     FORMAT_MESSAGE_IGNORE_INSERTS,
                                 nullptr, static_cast<DWORD>(code), 0,
                                 reinterpret_cast<char*>(&text), 0, nullptr);
        std::string out = n ? std::string(text, n) : "error " + std::to_string(code);
        if (text) LocalFree(text);
        while (!out.empty() && (out.back() == '\n' || out.back() == '\r' || out.back() == '.'))
            out.pop_back();
        return out;
    }
    // So portable code can test `ec == std::errc::connection_refused` here as on POSIX.
    std::error_condition default_error_condition(int code) const noexcept override {
        switch (code) {
        case WSAEWOULDBLOCK: return std::errc::operation_would_block;
        case WSAEINPROGRESS: return std::errc::operation_in_progress;
        case WSAEINTR: return std::errc::interrupted;
        case WSAECONNREFUSED: return std::errc::connection_refused;
        case WSAECONNRESET: return std::errc::connection_reset;
        case WSAECONNABORTED: return std::errc::connection_aborted;
        case WSAENOTCONN: return std::errc::not_connected;
        case WSAETIMEDOUT: return std::errc::timed_out;
        case WSAEADDRINUSE: return std::errc::address_in_use;
        case WSAEADDRNOTAVAIL: return std::errc::address_not_available;
        case WSAENETUNREACH: return std::errc::network_unreachable;
        case WSAEHOSTUNREACH: return std::errc::host_unreachable;
        case WSAEAFNOSUPPORT: return std::errc::address_family_not_supported;
        case WSAEMFILE: return std::errc::too_many_files_open;
        case WSAENOBUFS: return std::errc::no_buffer_space;
        case WSAEMSGSIZE: return std::errc::message_size;
        case WSAEACCES: return std::errc::permission_denied;
        case WSAEINVAL: return std::errc::invalid_argument;
        default: return std::error_condition(code, *this);
        }
    }
};
inline const std::error_category& os_category() {
    static const winsock_category_impl category;
    return category;
}
inline std::error_code last_error() { return {WSAGetLastError(), os_category()}; }
inline bool would_block(const std::error_code& ec) {
    return ec.value() == WSAEWOULDBLOCK || ec.value() == WSAEINPROGRESS;
}
inline bool interrupted(const std::error_code& ec) { return ec.value() == WSAEINTR; }
inline void close_socket(socket_t s) { ::closesocket(s); }
inline constexpr int send_flags = 0;

// Winsock must be started before any socket call. WSAStartup counts its callers, so every
// object that owns sockets holds one of these and several servers/clients coexist.
struct NetworkInit {
    NetworkInit() {
        WSADATA data;
        if (int rc = WSAStartup(MAKEWORD(2, 2), &data))
            throw std::system_error(rc, os_category(), "WSAStartup");
    }
    ~NetworkInit() { WSACleanup(); }
    NetworkInit(const NetworkInit&) : NetworkInit() {}
    NetworkInit& operator=(const NetworkInit&) { return *this; }
};
// The free functions (listen_tcp, connect_tcp, format_address) work without a Server or Client
// alive: the first call starts Winsock for the rest of the process.
inline void start_network() { static const NetworkInit process_wide; }

// Windows speaks UTF-16 to programs that ask for it; chatsock speaks UTF-8 everywhere.
inline std::string narrow(const wchar_t* text, int length) {
    int n = ::WideCharToMultiByte(CP_UTF8, 0, text, length, nullptr, 0, nullptr, nullptr);
    std::string out(static_cast<std::size_t>(std::max(n, 0)), '\0');
    if (n > 0) ::WideCharToMultiByte(CP_UTF8, 0, text, length, &out[0], n, nullptr, nullptr);
    return out;
}
inline std::wstring widen(const std::string& text) {
    int n = ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), nullptr, 0);
    std::wstring out(static_cast<std::size_t>(std::max(n, 0)), L'\0');
    if (n > 0) ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), &out[0], n);
    return out;
}
#else
inline const std::error_category& os_category() { return std::system_category(); }
inline std::error_code last_error() { return {errno, std::system_category()}; }
inline bool would_block(const std::error_code& ec) {
    return ec == std::errc::operation_would_block || ec == std::errc::resource_unavailable_try_again ||
           ec == std::errc::operation_in_progress;
}
inline bool interrupted(const std::error_code& ec) { return ec == std::errc::interrupted; }
inline void close_socket(socket_t s) { ::close(s); }
#  if defined(MSG_NOSIGNAL)
inline constexpr int send_flags = MSG_NOSIGNAL;  // a peer that hangs up must not raise SIGPIPE
#  else
inline constexpr int send_flags = 0;             // macOS/BSD: SO_NOSIGPIPE is set per socket
#  endif
struct NetworkInit {
    NetworkInit() noexcept {}  // nothing to start on POSIX
};
inline void start_network() {}
#endif

// Every client costs a descriptor, and POSIX caps them per process (`ulimit -n`, often 1,024).
// Raises the soft limit toward `wanted` as far as the hard limit allows; returns the limit now
// in force. Windows has no such limit on sockets.
inline std::size_t raise_descriptor_limit(std::size_t wanted) {
#if defined(_WIN32)
    return wanted;
#else
    rlimit lim{};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return wanted;  // unknown: hope for the best
    const auto want = static_cast<rlim_t>(wanted);
    if (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur >= want) return wanted;
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
    return static_cast<std::size_t>(lim.rlim_cur);
#endif
}

// getaddrinfo() reports its own error codes; give them their own category and text.
class resolver_category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "resolver"; }
    std::string message(int code) const override {
#if defined(_WIN32)
        return os_category().message(code);
#else
        return ::gai_strerror(code);
#endif
    }
};
inline const std::error_category& resolver_category() {
    static const resolver_category_impl category;
    return category;
}

inline void set_option(socket_t s, int level, int name, int value) {
    ::setsockopt(s, level, name, reinterpret_cast<const char*>(&value), sizeof value);
}

inline std::error_code set_nonblocking(socket_t s) {
#if defined(_WIN32)
    u_long on = 1;
    if (::ioctlsocket(s, FIONBIO, &on) != 0) return last_error();
#else
    int flags = ::fcntl(s, F_GETFL, 0);
    if (flags < 0 || ::fcntl(s, F_SETFL, flags | O_NONBLOCK) < 0) return last_error();
    ::fcntl(s, F_SETFD, FD_CLOEXEC);
#endif
    return {};
}

// Every socket chatsock creates goes through here: non-blocking, no SIGPIPE.
inline std::error_code prepare_socket(socket_t s) {
#if defined(SO_NOSIGPIPE)
    set_option(s, SOL_SOCKET, SO_NOSIGPIPE, 1);
#endif
    return set_nonblocking(s);
}

}  // namespace detail

// An owned socket: closed when it goes out of scope, movable, not copyable.
class Socket {
public:
    Socket() = default;
    explicit Socket(socket_t s) : s_(s) {}
    ~Socket() { close(); }
    Socket(Socket&& other) noexcept : s_(other.release()) {}
    Socket& operator=(Socket&& other) noexcept {
        if (this != &other) { close(); s_ = other.release(); }
        return *this;
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;

    socket_t get() const { return s_; }
    bool valid() const { return s_ != invalid_socket; }
    explicit operator bool() const { return valid(); }
    socket_t release() { socket_t s = s_; s_ = invalid_socket; return s; }
    void close() noexcept {
        if (valid()) detail::close_socket(release());
    }

private:
    socket_t s_ = invalid_socket;
};

namespace detail {

struct AddrInfoDeleter { void operator()(addrinfo* a) const { ::freeaddrinfo(a); } };
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoDeleter>;

inline AddrInfoList resolve(const std::string& host, std::uint16_t port, bool passive,
                            std::error_code& ec) {
    start_network();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo* list = nullptr;
    std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list);
    if (rc != 0) {
#if !defined(_WIN32)
        if (rc == EAI_SYSTEM) { ec = last_error(); return nullptr; }
#endif
        ec = {rc, resolver_category()};
        return nullptr;
    }
    ec.clear();
    return AddrInfoList(list);
}

inline std::error_code wait_writable(socket_t s, milliseconds timeout);

}  // namespace detail

// "127.0.0.1:1234" or "[::1]:1234" for a socket address.
inline std::string format_address(const sockaddr* addr, socklen_t len) {
    detail::start_network();
    char host[INET6_ADDRSTRLEN + 1] = "?";
    char port[8] = "0";
    ::getnameinfo(addr, len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    return addr->sa_family == AF_INET6 ? "[" + std::string(host) + "]:" + port
                                       : std::string(host) + ":" + port;
}

// The port a socket is bound to (after binding port 0, the one the OS chose).
inline std::uint16_t local_port(socket_t s) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
    if (addr.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

// Reads a port number from a command line: 0 to 65535, digits only.
inline bool parse_port(std::string_view text, std::uint16_t& port) {
    if (text.empty() || text.size() > 5) return false;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return false;
    port = static_cast<std::uint16_t>(value);
    return true;
}

// The program's arguments as UTF-8. On POSIX that is argv itself; on Windows argv is in the
// ANSI code page ("João" would arrive mangled), so the UTF-16 command line is converted instead.
inline std::vector<std::string> command_line(int argc, char** argv) {
#if defined(_WIN32)
    int n = 0;
    if (LPWSTR* wide = ::CommandLineToArgvW(::GetCommandLineW(), &n)) {
        std::vector<std::string> args;
        for (int i = 0; i < n; ++i) args.push_back(detail::narrow(wide[i], -1).c_str());
        ::LocalFree(wide);
        return args;
    }
#endif
    return std::vector<std::string>(argv, argv + argc);
}

// A non-blocking listening socket on host:port. Port 0 lets the OS choose (see local_port).
// "::" listens on IPv6 and IPv4 alike; "0.0.0.0" on all IPv4 addresses.
inline Socket listen_tcp(const std::string& host, std::uint16_t port, std::error_code& ec,
                         int backlog = SOMAXCONN) {
    auto list = detail::resolve(host, port, true, ec);
    if (!list) return Socket();
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        Socket s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if (!s) { ec = detail::last_error(); continue; }
#if defined(_WIN32)
        // Windows' SO_REUSEADDR lets another program steal the port; this is its safe variant.
        detail::set_option(s.get(), SOL_SOCKET, SO_EXCLUSIVEADDRUSE, 1);
#else
        // A restarted server binds at once instead of waiting out TIME_WAIT.
        detail::set_option(s.get(), SOL_SOCKET, SO_REUSEADDR, 1);
#endif
        if (ai->ai_family == AF_INET6)  // dual stack: "::" also accepts IPv4 (Windows defaults off)
            detail::set_option(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
        if (::bind(s.get(), ai->ai_addr, static_cast<socklen_t>(ai->ai_addrlen)) != 0 ||
            ::listen(s.get(), backlog) != 0 || (ec = detail::prepare_socket(s.get()))) {
            if (!ec) ec = detail::last_error();
            continue;
        }
        ec.clear();
        return s;
    }
    return Socket();
}

// Accepts one pending connection, non-blocking; sets *peer to its address when given.
// Returns an invalid socket with ec set: would_block() when nobody is waiting.
inline Socket accept_tcp(socket_t listener, std::error_code& ec, std::string* peer = nullptr) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    for (;;) {
        Socket s(::accept(listener, reinterpret_cast<sockaddr*>(&addr), &len));
        if (!s) {
            ec = detail::last_error();
            if (detail::interrupted(ec)) continue;
            return s;
        }
        if ((ec = detail::prepare_socket(s.get()))) return Socket();
        detail::set_option(s.get(), IPPROTO_TCP, TCP_NODELAY, 1);  // chat lines are small
        if (peer) *peer = format_address(reinterpret_cast<sockaddr*>(&addr), len);
        return s;
    }
}

// Connects to host:port within timeout; the socket returned is non-blocking.
inline Socket connect_tcp(const std::string& host, std::uint16_t port, milliseconds timeout,
                          std::error_code& ec) {
    auto list = detail::resolve(host, port, false, ec);
    if (!list) return Socket();
    const auto deadline = Clock::now() + timeout;
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        Socket s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if (!s) { ec = detail::last_error(); continue; }
        if ((ec = detail::prepare_socket(s.get()))) continue;
        detail::set_option(s.get(), IPPROTO_TCP, TCP_NODELAY, 1);
        if (::connect(s.get(), ai->ai_addr, static_cast<socklen_t>(ai->ai_addrlen)) != 0) {
            ec = detail::last_error();
            if (!detail::would_block(ec)) continue;
            auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
            if ((ec = detail::wait_writable(s.get(), std::max(left, milliseconds(0))))) continue;
        }
        ec.clear();
        return s;
    }
    return Socket();
}

// Sends what the socket takes now. Returns the byte count; 0 with ec set on error
// (would_block(ec) when the socket is full). EINTR is retried.
inline std::size_t send_some(socket_t s, const char* data, std::size_t size, std::error_code& ec) {
    for (;;) {
#if defined(_WIN32)
        int n = ::send(s, data, static_cast<int>(std::min<std::size_t>(size, 1u << 30)), 0);
#else
        ssize_t n = ::send(s, data, size, detail::send_flags);
#endif
        if (n >= 0) { ec.clear(); return static_cast<std::size_t>(n); }
        ec = detail::last_error();
        if (!detail::interrupted(ec)) return 0;
    }
}

// A view of bytes to send; a list of them goes out in one system call (writev / WSASend).
struct ConstBuffer {
    const char* data;
    std::size_t size;
};

// At most this many buffers go in one call (Linux and the BSDs allow 1,024, POSIX only 16): a
// queue of small frames leaves in a few large writes.
#if defined(IOV_MAX) && IOV_MAX < 1024
constexpr std::size_t max_send_buffers = IOV_MAX;
#else
constexpr std::size_t max_send_buffers = 1024;
#endif

inline std::size_t send_buffers(socket_t s, const ConstBuffer* buffers, std::size_t count,
                                 std::error_code& ec) {
    constexpr std::size_t max_buffers = max_send_buffers;
    count = std::min(count, max_buffers);
#if defined(_WIN32)
    WSABUF bufs[max_buffers];
    for (std::size_t i = 0; i < count; ++i) {
        bufs[i].buf = const_cast<char*>(buffers[i].data);
        bufs[i].len = static_cast<ULONG>(buffers[i].size);
    }
    DWORD sent = 0;
    if (::WSASend(s, bufs, static_cast<DWORD>(count), &sent, 0, nullptr, nullptr) != 0) {
        ec = detail::last_error();
        return 0;
    }
    ec.clear();
    return sent;
#else
    iovec iov[max_buffers];
    for (std::size_t i = 0; i < count; ++i) {
        iov[i].iov_base = const_cast<char*>(buffers[i].data);
        iov[i].iov_len = buffers[i].size;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(count);
    for (;;) {
        ssize_t n = ::sendmsg(s, &msg, detail::send_flags);
        if (n >= 0) { ec.clear(); return static_cast<std::size_t>(n); }
        ec = detail::last_error();
        if (!detail::interrupted(ec)) return 0;
    }
#endif
}

// Receives what is there. Returns the byte count; 0 with !ec means the peer closed;
// 0 with ec set is an error (would_block(ec) when nothing is there yet).
inline std::size_t recv_some(socket_t s, char* data, std::size_t size, std::error_code& ec) {
    for (;;) {
#if defined(_WIN32)
        int n = ::recv(s, data, static_cast<int>(std::min<std::size_t>(size, 1u << 30)), 0);
#else
        ssize_t n = ::recv(s, data, size, 0);
#endif
        if (n >= 0) { ec.clear(); return static_cast<std::size_t>(n); }
        ec = detail::last_error();
        if (!detail::interrupted(ec)) return 0;
    }
}

// Stops sending: the peer reads end-of-stream once it has everything sent before.
inline void shutdown_send(socket_t s) {
#if defined(_WIN32)
    ::shutdown(s, SD_SEND);
#else
    ::shutdown(s, SHUT_WR);
#endif
}

// ============================================================================================
// 2. Poller: which sockets are ready? epoll on Linux, poll() elsewhere, WSAPoll on Windows.
// ============================================================================================

constexpr unsigned want_read = 1;
constexpr unsigned want_write = 2;

struct PollEvent {
    socket_t socket;
    bool readable;  // data, a pending connection, or end-of-stream to read
    bool writable;  // room in the send buffer (or a connect finished)
    bool hangup;    // POLLHUP/POLLERR: the peer is gone or the socket failed; read to learn why
};

namespace detail {

#if defined(_WIN32)
inline int poll_sockets(WSAPOLLFD* fds, std::size_t n, int timeout_ms) {
    return ::WSAPoll(fds, static_cast<ULONG>(n), timeout_ms);
}
using pollfd_t = WSAPOLLFD;
#else
inline int poll_sockets(pollfd* fds, std::size_t n, int timeout_ms) {
    return ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
}
using pollfd_t = pollfd;
#endif

inline std::error_code wait_writable(socket_t s, milliseconds timeout) {
#if defined(_WIN32)
    // WSAPoll does not report a failed non-blocking connect on older Windows; select() does.
    fd_set writable, failed;
    FD_ZERO(&writable);
    FD_ZERO(&failed);
    FD_SET(s, &writable);
    FD_SET(s, &failed);
    timeval tv{static_cast<long>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000 * 1000)};
    int n = ::select(0, nullptr, &writable, &failed, &tv);
    if (n < 0) return last_error();
    if (n == 0) return std::make_error_code(std::errc::timed_out);
#else
    pollfd p{s, POLLOUT, 0};
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
        int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0)));
        if (n > 0) break;
        if (n == 0) return std::make_error_code(std::errc::timed_out);
        if (errno != EINTR) return last_error();
    }
#endif
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&err), &len);
    return err ? std::error_code(err, os_category()) : std::error_code();
}

// Lets another thread or a signal handler interrupt a wait: a pipe on POSIX, a connected
// loopback socket pair on Windows (WSAPoll only waits on sockets).
class WakeChannel {
public:
    WakeChannel() {
#if defined(_WIN32)
        std::error_code ec;
        Socket listener = listen_tcp("127.0.0.1", 0, ec, 1);
        if (!ec) read_ = connect_tcp("127.0.0.1", local_port(listener.get()), milliseconds(5000), ec);
        if (!ec) {
            std::string peer, ours = "127.0.0.1:" + std::to_string(local_port(read_.get()));
            for (int tries = 0; tries < 500 && !write_; ++tries) {
                write_ = accept_tcp(listener.get(), ec, &peer);
                if (write_ && peer != ours) write_.close();  // another local program raced us
                if (!write_) ::Sleep(1);
            }
        }
        if (!read_ || !write_) throw std::system_error(ec, "chatsock: wake channel");
#else
        int fds[2];
        if (::pipe(fds) != 0) throw std::system_error(last_error(), "chatsock: pipe");
        read_ = Socket(fds[0]);
        write_ = Socket(fds[1]);
        set_nonblocking(fds[0]);
        set_nonblocking(fds[1]);
#endif
    }
    socket_t socket() const { return read_.get(); }
    // Async-signal-safe: one non-blocking write, errno preserved. A full pipe already wakes.
    void signal() noexcept {
#if defined(_WIN32)
        ::send(write_.get(), "!", 1, 0);
#else
        int saved = errno;
        [[maybe_unused]] ssize_t n = ::write(write_.get(), "!", 1);
        errno = saved;
#endif
    }
    void drain() noexcept {
        char buf[256];
#if defined(_WIN32)
        while (::recv(read_.get(), buf, sizeof buf, 0) > 0) {}
#else
        while (::read(read_.get(), buf, sizeof buf) > 0) {}
#endif
    }

private:
    NetworkInit net_;
    Socket read_, write_;
};

// Bits shared by the backends: poll()-style flags to PollEvent.
inline short poll_interest(unsigned interest) {
    return static_cast<short>(((interest & want_read) ? POLLIN : 0) | ((interest & want_write) ? POLLOUT : 0));
}

}  // namespace detail

// The portable backend: poll() on POSIX, WSAPoll on Windows. O(1) add/modify/remove through
// an index from socket to slot; wait() is O(sockets watched).
class PollPoller {
public:
    PollPoller() { add(wake_.socket(), want_read); }

    std::error_code add(socket_t s, unsigned interest) {
        if (index_.count(s)) return std::make_error_code(std::errc::file_exists);
        index_[s] = fds_.size();
        fds_.push_back(detail::pollfd_t{s, detail::poll_interest(interest), 0});
        return {};
    }
    std::error_code modify(socket_t s, unsigned interest) {
        auto it = index_.find(s);
        if (it == index_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
        fds_[it->second].events = detail::poll_interest(interest);
        return {};
    }
    std::error_code remove(socket_t s) {
        auto it = index_.find(s);
        if (it == index_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
        std::size_t slot = it->second;
        index_.erase(it);
        if (slot != fds_.size() - 1) {
            fds_[slot] = fds_.back();
            index_[fds_[slot].fd] = slot;
        }
        fds_.pop_back();
        return {};
    }
    // Waits up to timeout_ms (-1: no limit) and replaces `events` with what is ready.
    // A wake() or a signal returns early, possibly with no events.
    std::error_code wait(std::vector<PollEvent>& events, int timeout_ms) {
        events.clear();
        int n = detail::poll_sockets(fds_.data(), fds_.size(), timeout_ms);
        if (n < 0) {
            auto ec = detail::last_error();
            return detail::interrupted(ec) ? std::error_code() : ec;
        }
        for (std::size_t i = 0; i < fds_.size() && n > 0; ++i) {
            const auto& p = fds_[i];
            if (p.revents == 0) continue;
            --n;
            if (p.fd == wake_.socket()) { wake_.drain(); continue; }
            events.push_back({p.fd, (p.revents & POLLIN) != 0, (p.revents & POLLOUT) != 0,
                              (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0});
        }
        return {};
    }
    // Interrupts a wait from any thread or from a signal handler.
    void wake() noexcept { wake_.signal(); }
    static const char* backend() {
#if defined(_WIN32)
        return "WSAPoll";
#else
        return "poll";
#endif
    }

private:
    detail::WakeChannel wake_;
    std::vector<detail::pollfd_t> fds_;
    std::unordered_map<socket_t, std::size_t> index_;
};

#if defined(CHATSOCK_HAS_EPOLL)
// Linux: the kernel keeps the interest list, so wait() costs O(ready), not O(watched).
class EpollPoller {
public:
    EpollPoller() : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
        if (!ep_) throw std::system_error(detail::last_error(), "chatsock: epoll_create1");
        if (auto ec = add(wake_.socket(), want_read)) throw std::system_error(ec, "chatsock: epoll");
    }
    std::error_code add(socket_t s, unsigned interest) { return control(EPOLL_CTL_ADD, s, interest); }
    std::error_code modify(socket_t s, unsigned interest) { return control(EPOLL_CTL_MOD, s, interest); }
    std::error_code remove(socket_t s) { return control(EPOLL_CTL_DEL, s, 0); }

    std::error_code wait(std::vector<PollEvent>& events, int timeout_ms) {
        events.clear();
        epoll_event ready[256];
        int n = ::epoll_wait(ep_.get(), ready, 256, timeout_ms);
        if (n < 0) return errno == EINTR ? std::error_code() : detail::last_error();
        for (int i = 0; i < n; ++i) {
            const int fd = ready[i].data.fd;
            const auto e = ready[i].events;
            if (fd == wake_.socket()) { wake_.drain(); continue; }
            events.push_back({fd, (e & EPOLLIN) != 0, (e & EPOLLOUT) != 0,
                              (e & (EPOLLHUP | EPOLLERR)) != 0});
        }
        return {};
    }
    void wake() noexcept { wake_.signal(); }
    static const char* backend() { return "epoll"; }

private:
    std::error_code control(int op, socket_t s, unsigned interest) {
        epoll_event ev{};
        ev.events = ((interest & want_read) ? EPOLLIN : 0u) | ((interest & want_write) ? EPOLLOUT : 0u);
        ev.data.fd = s;
        return ::epoll_ctl(ep_.get(), op, s, &ev) == 0 ? std::error_code() : detail::last_error();
    }
    Socket ep_;  // an epoll descriptor closes like any other
    detail::WakeChannel wake_;
};
using Poller = EpollPoller;
#else
using Poller = PollPoller;
#endif

// ============================================================================================
// 3. Framing and protocol rules: pure functions, no I/O.
// ============================================================================================

constexpr std::size_t header_size = 10;
constexpr std::size_t default_max_payload = 64 * 1024;
constexpr std::size_t default_max_name_bytes = 32;

// Appends one frame: the payload length, left-aligned in 10 space-padded ASCII digits, then the
// payload. Throws std::length_error for a payload whose length does not fit in 10 digits.
inline void append_frame(std::string& out, std::string_view payload) {
    if (payload.size() > 9'999'999'999ull) throw std::length_error("chatsock: frame too large");
    char digits[header_size];
    std::size_t n = 0;
    for (unsigned long long v = payload.size(); n == 0 || v != 0; v /= 10) digits[n++] = char('0' + v % 10);
    const std::size_t at = out.size();
    out.append(header_size, ' ');  // left-aligned: the digits first, then the padding
    for (std::size_t i = 0; i < n; ++i) out[at + i] = digits[n - 1 - i];
    out.append(payload.data(), payload.size());
}

inline std::string encode_frame(std::string_view payload) {
    std::string out;
    out.reserve(header_size + payload.size());
    append_frame(out, payload);
    return out;
}

// Reads a frame header: digits, padded with spaces on either side ("12        ", "  12      ").
// Returns false for anything else: signs, letters, inner spaces, an all-space header.
inline bool parse_header(std::string_view header, unsigned long long& length) {
    if (header.size() != header_size) return false;
    std::size_t i = 0;
    while (i < header.size() && header[i] == ' ') ++i;
    const std::size_t first_digit = i;
    length = 0;
    while (i < header.size() && header[i] >= '0' && header[i] <= '9')
        length = length * 10 + static_cast<unsigned>(header[i++] - '0');  // 10 digits fit in 64 bits
    if (i == first_digit) return false;
    while (i < header.size() && header[i] == ' ') ++i;
    return i == header.size();
}

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 if it is not valid UTF-8
// (overlong forms, surrogates and code points past U+10FFFF are all invalid).
inline std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t& cp) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b0 = byte(i);
    std::size_t len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return 0;
    cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1Fu) : len == 3 ? (b0 & 0x0Fu) : (b0 & 0x07u);
    for (std::size_t k = 1; k < len; ++k) {
        if ((byte(i + k) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (byte(i + k) & 0x3Fu);
    }
    static constexpr char32_t min_for_length[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

namespace detail {
// Chat text is mostly plain ASCII, so validating and escaping skip it eight bytes at a time:
// a few word operations tell whether any byte of a 64-bit word needs a closer look.
inline std::uint64_t load8(const char* p) { std::uint64_t w; std::memcpy(&w, p, 8); return w; }
constexpr std::uint64_t bytes_of(unsigned char b) { return 0x0101010101010101ull * b; }
constexpr std::uint64_t high_bits = bytes_of(0x80);
constexpr std::uint64_t has_byte_below(std::uint64_t w, unsigned char n) {  // n <= 0x80
    return (w - bytes_of(n)) & ~w & high_bits;
}
constexpr std::uint64_t has_byte(std::uint64_t w, unsigned char b) { return has_byte_below(w ^ bytes_of(b), 1); }

// How many bytes from s[i] on are ASCII.
inline std::size_t ascii_run(std::string_view s, std::size_t i) {
    const std::size_t start = i;
    while (i + 8 <= s.size() && !(load8(s.data() + i) & high_bits)) i += 8;
    while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
    return i - start;
}
// How many bytes from s[i] on printable() copies as they are: ASCII 0x20-0x7E, and no
// backslash when backslashes are escaped.
inline std::size_t plain_run(std::string_view s, std::size_t i, bool escape_backslash) {
    const std::size_t start = i;
    for (; i + 8 <= s.size(); i += 8) {
        const std::uint64_t w = load8(s.data() + i);
        if ((w & high_bits) | has_byte_below(w, 0x20) | has_byte(w, 0x7F) |
            (escape_backslash ? has_byte(w, '\\') : 0))
            break;
    }
    while (i < s.size() && s[i] >= 0x20 && s[i] < 0x7F && (s[i] != '\\' || !escape_backslash)) ++i;
    return i - start;
}
}  // namespace detail

inline bool is_valid_utf8(std::string_view s) {
    char32_t cp;
    for (std::size_t i = 0, n; i < s.size(); i += n)
        if ((n = detail::ascii_run(s, i)) == 0 && (n = utf8_sequence(s, i, cp)) == 0) return false;
    return true;
}

inline bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

// Makes received text safe for a terminal or a one-line-per-event file: control characters
// (C0, DEL, C1 — the bytes that start terminal escape sequences) and invalid UTF-8 bytes
// become visible escapes like \n, \x1b, \u009b; everything else passes unchanged.
// With escape_backslash, a literal backslash is doubled so the escaping can be undone.
// append_printable() writes the result to the end of `out` (no allocation of its own).
inline void append_printable(std::string& out, std::string_view s, bool escape_backslash = false) {
    char hex[8];
    for (std::size_t i = 0, n; i < s.size(); i += n) {
        if ((n = detail::plain_run(s, i, escape_backslash)) > 0) {  // most text: one append
            out.append(s.data() + i, n);
            continue;
        }
        char32_t cp = 0;
        n = utf8_sequence(s, i, cp);
        if (n == 0) {  // not UTF-8: show the raw byte
            std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(s[i]));
            out += hex;
            n = 1;
        } else if (cp == '\n') { out += "\\n";
        } else if (cp == '\r') { out += "\\r";
        } else if (cp == '\t') { out += "\\t";
        } else if (cp == '\\' && escape_backslash) { out += "\\\\";
        } else if (is_control(cp)) {
            std::snprintf(hex, sizeof hex, cp < 0x80 ? "\\x%02x" : "\\u%04x", static_cast<unsigned>(cp));
            out += hex;
        } else {
            out.append(s.data() + i, n);
        }
    }
}
inline std::string printable(std::string_view s, bool escape_backslash = false) {
    std::string out;
    out.reserve(s.size());
    append_printable(out, s, escape_backslash);
    return out;
}

// Turns a byte stream, fed in chunks of any size, into whole frames. A bad header or a payload
// over the maximum is a protocol error: the decoder stops and error() says why. An oversized
// payload is refused from its header alone, before any of it is buffered.
class FrameDecoder {
public:
    explicit FrameDecoder(std::size_t max_payload = default_max_payload) : max_payload_(max_payload) {}

    void feed(const char* data, std::size_t size) {
        if (!failed() && size) {
            compact();
            buffer_.append(data, size);
        }
    }
    void feed(std::string_view bytes) { feed(bytes.data(), bytes.size()); }

    // The next whole payload, or false when more bytes are needed or the stream is broken.
    // The view stays valid until the next call to feed() or next().
    bool next(std::string_view& payload) {
        if (start_ == buffer_.size()) compact();
        if (failed() || buffer_.size() - start_ < header_size) return false;
        std::size_t length = 0;
        if (!frame_length(buffer_.data() + start_, length)) return false;
        if (buffer_.size() - start_ - header_size < length) return false;
        payload = std::string_view(buffer_.data() + start_ + header_size, length);
        start_ += header_size + length;
        return true;
    }

    // The same decoding without the copy, for a reader with a chunk in hand: calls
    // on_frame(payload) for each whole frame in `data` (after finishing one begun in an earlier
    // chunk) and keeps only an unfinished last frame. The views live as long as the call.
    // on_frame returns false to stop; the rest of the chunk is then dropped.
    template <class OnFrame>
    void decode(const char* data, std::size_t size, OnFrame&& on_frame) {
        for (std::string_view fed; next(fed);)  // frames left by feed(), if it was used
            if (!on_frame(fed)) return;
        if (failed()) return;
        if (buffered() > 0) {  // finish the frame begun before: its header, then its payload
            compact();
            auto take_up_to = [&](std::size_t total) {  // copies only this frame's own bytes
                const std::size_t take = std::min(size, total > buffer_.size() ? total - buffer_.size() : 0);
                buffer_.append(data, take);
                data += take, size -= take;
                return buffer_.size() >= total;
            };
            std::size_t length = 0;
            if (!take_up_to(header_size) || !frame_length(buffer_.data(), length) ||
                !take_up_to(header_size + length))
                return;  // the chunk is used up (or the header is bad)
            start_ = buffer_.size();
            if (!on_frame(std::string_view(buffer_.data() + header_size, length))) return;
        }
        while (size >= header_size) {  // whole frames straight from the chunk
            std::size_t length = 0;
            if (!frame_length(data, length)) return;
            if (size - header_size < length) break;
            if (!on_frame(std::string_view(data + header_size, length))) return;
            data += header_size + length, size -= header_size + length;
        }
        if (size) feed(data, size);  // the start of a frame to finish next time
    }

    bool failed() const { return !error_.empty(); }
    const std::string& error() const { return error_; }
    std::size_t buffered() const { return buffer_.size() - start_; }  // bytes of unfinished frames
    std::size_t max_payload() const { return max_payload_; }

private:
    // Reads and checks a frame's header: a payload length up to max_payload, or a protocol error.
    bool frame_length(const char* header_bytes, std::size_t& length) {
        const std::string_view header(header_bytes, header_size);
        unsigned long long value = 0;
        if (!parse_header(header, value)) return fail("bad frame header \"" + printable(header) + "\"");
        if (value > max_payload_)
            return fail("frame of " + std::to_string(value) + " bytes is over the limit of " +
                        std::to_string(max_payload_));
        length = static_cast<std::size_t>(value);
        return true;
    }
    bool fail(std::string why) {
        error_ = std::move(why);
        buffer_.clear();
        buffer_.shrink_to_fit();
        start_ = 0;
        return false;
    }
    // Drops consumed bytes before growing: memory stays at most one frame plus one chunk.
    void compact() {
        if (start_ == 0) return;
        if (start_ == buffer_.size() && buffer_.capacity() > 16384)
            std::string().swap(buffer_);  // an idle connection does not keep a big buffer
        else
            buffer_.erase(0, start_);
        start_ = 0;
    }

    std::size_t max_payload_;
    std::string buffer_;
    std::size_t start_ = 0;
    std::string error_;
};

// Names compare without regard to ASCII case: "Alice" and "alice" are the same user.
inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}
inline bool equal_ignoring_ascii_case(std::string_view a, std::string_view b) {
    return a.size() == b.size() && ascii_lower(a) == ascii_lower(b);
}

// Checks a username against the rules every chatsock server applies; empty when it is fine,
// otherwise the reason, ready to show to the user. (Uniqueness is the server's to check.)
inline std::string check_username(std::string_view name, std::string_view reserved_name,
                                  std::size_t max_bytes = default_max_name_bytes) {
    if (name.empty()) return "the name is empty";
    if (name.size() > max_bytes) return "the name is longer than " + std::to_string(max_bytes) + " bytes";
    if (!is_valid_utf8(name)) return "the name is not valid UTF-8";
    char32_t cp = 0;  // g++ -O1 -Werror=maybe-uninitialized cannot see that the check above sets it
    for (std::size_t i = 0, n; i < name.size(); i += n) {
        n = utf8_sequence(name, i, cp);
        if (is_control(cp)) return "the name contains control characters";
    }
    if (name.front() == ' ' || name.back() == ' ') return "the name starts or ends with a space";
    if (equal_ignoring_ascii_case(name, reserved_name)) return "the name \"" + std::string(name) + "\" is reserved";
    return {};
}

// ============================================================================================
// 4. Buffers: shared outgoing frames, per-connection output queues, the conversation log.
// ============================================================================================

// Frames encoded once and shared by every recipient's queue: a broadcast to 1,000 clients
// costs one encoding and 1,000 reference counts, not 1,000 copies.
using SharedBytes = std::shared_ptr<const std::string>;

// One relayed message as it goes on the wire: the sender's name frame, then the text frame.
inline SharedBytes encode_message(std::string_view from, std::string_view text) {
    auto bytes = std::make_shared<std::string>();
    bytes->reserve(2 * header_size + from.size() + text.size());
    append_frame(*bytes, from);
    append_frame(*bytes, text);
    return bytes;
}

// What a connection still has to send. Writes resume where the socket stopped taking bytes,
// and everything queued goes out in one vectored send per call. The chunks live in a vector
// read from `head_` on, so a queue that keeps being filled and drained allocates nothing.
class OutputQueue {
public:
    void push(SharedBytes bytes) {
        if (bytes->empty()) return;
        bytes_ += bytes->size();
        chunks_.push_back(std::move(bytes));
    }
    bool empty() const { return head_ == chunks_.size(); }
    std::size_t size_bytes() const { return bytes_ - offset_; }

    // Sends as much as the socket takes now. Returns an error only for a broken connection;
    // a full socket just leaves the rest queued.
    std::error_code write_to(socket_t s) {
        while (!empty()) {
            ConstBuffer buffers[max_send_buffers];
            std::size_t count = 0;
            for (std::size_t i = head_; i < chunks_.size() && count < max_send_buffers; ++i, ++count) {
                const std::size_t skip = count == 0 ? offset_ : 0;
                buffers[count] = {chunks_[i]->data() + skip, chunks_[i]->size() - skip};
            }
            std::error_code ec;
            std::size_t sent = send_buffers(s, buffers, count, ec);
            if (ec) return detail::would_block(ec) ? std::error_code() : ec;
            consume(sent);
            if (count < max_send_buffers && !empty()) return {};  // the socket took less than offered
        }
        return {};
    }
    void clear() { chunks_.clear(); head_ = bytes_ = offset_ = 0; }

private:
    void consume(std::size_t n) {
        offset_ += n;
        while (!empty() && offset_ >= chunks_[head_]->size()) {
            offset_ -= chunks_[head_]->size();
            bytes_ -= chunks_[head_]->size();
            chunks_[head_++].reset();
        }
        if (empty()) {
            // Keeps room for one full writev for the next burst; gives a bigger vector back
            // (idle clients should cost little).
            if (chunks_.capacity() > max_send_buffers) chunks_ = {}; else chunks_.clear();
            head_ = 0;
        } else if (head_ >= 64 && head_ * 2 >= chunks_.size()) {  // a slow reader: reclaim the front
            chunks_.erase(chunks_.begin(), chunks_.begin() + static_cast<std::ptrdiff_t>(head_));
            head_ = 0;
        }
    }
    std::vector<SharedBytes> chunks_;  // [head_, end) still to send
    std::size_t head_ = 0;
    std::size_t bytes_ = 0;   // total size of the queued chunks
    std::size_t offset_ = 0;  // bytes of the first chunk already sent
};

namespace detail {

// "2026-11-25T03:39:03.123Z"
// Formats "2026-11-25T03:39:03.123Z"; the calendar part is worked out once per second.
class UtcClock {
public:
    void append(std::string& out, std::chrono::system_clock::time_point when) {
        const auto ms = std::chrono::duration_cast<milliseconds>(when.time_since_epoch()).count();
        const long long secs = ms / 1000;
        if (secs != cached_second_) {
            const std::time_t t = static_cast<std::time_t>(secs);
            std::tm tm{};
#if defined(_WIN32)
            ::gmtime_s(&tm, &t);
#else
            ::gmtime_r(&t, &tm);
#endif
            char text[80];  // room for any int the compiler imagines
            std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
            prefix_ = text;
            cached_second_ = secs;
        }
        const int milli = static_cast<int>(ms % 1000);
        out += prefix_;
        out += char('0' + milli / 100);
        out += char('0' + milli / 10 % 10);
        out += char('0' + milli % 10);
        out += 'Z';
    }

private:
    long long cached_second_ = -1;
    std::string prefix_;
};

inline std::string utc_timestamp(std::chrono::system_clock::time_point when) {
    std::string out;
    UtcClock().append(out, when);
    return out;
}

// An append-only file written with plain OS calls, so each write reaches the OS at once.
class AppendFile {
public:
    std::error_code open(const std::string& path) {
#if defined(_WIN32)
        handle_ = ::CreateFileW(widen(path).c_str(), FILE_APPEND_DATA, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                nullptr, OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
        if (handle_ == INVALID_HANDLE_VALUE) return {static_cast<int>(::GetLastError()), os_category()};
#else
        fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd_ < 0) return last_error();
#endif
        return {};
    }
    std::error_code write(const std::string& bytes) {
        std::size_t done = 0;
        while (done < bytes.size()) {
#if defined(_WIN32)
            DWORD n = 0;
            if (!::WriteFile(handle_, bytes.data() + done, static_cast<DWORD>(bytes.size() - done), &n, nullptr))
                return {static_cast<int>(::GetLastError()), os_category()};
#else
            ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return last_error();
#endif
            done += static_cast<std::size_t>(n);
        }
        return {};
    }
    ~AppendFile() {
#if defined(_WIN32)
        if (handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
#else
        if (fd_ >= 0) ::close(fd_);
#endif
    }
    AppendFile() = default;
    AppendFile(const AppendFile&) = delete;
    AppendFile& operator=(const AppendFile&) = delete;

private:
#if defined(_WIN32)
    HANDLE handle_ = INVALID_HANDLE_VALUE;
#else
    int fd_ = -1;
#endif
};

}  // namespace detail

// Diagnostics: one line of text for a human (listening, joins, errors). The default writes it to
// stderr; set ServerOptions::diagnostics to your own function, or to nullptr for silence.
using DiagnosticSink = std::function<void(std::string_view line)>;

inline void print_to_stderr(std::string_view line) {
    std::string out = "chatsock: " + std::string(line) + "\n";
    std::fwrite(out.data(), 1, out.size(), stderr);
    std::fflush(stderr);
}

// The conversation log: one line per event, tab-separated, appended as events happen:
//   2026-11-25T03:39:03.123Z<TAB>message<TAB>alice<TAB>hello\tworld
// Fields are escaped with printable(..., true), so no text can forge a line or carry terminal
// escapes into the file. Lines collect during one loop iteration and go to the OS in one
// write before any message of that iteration is sent on, so a crash never loses a delivered line.
class ConversationLog {
public:
    std::error_code open(const std::string& path) {
        path_ = path;
        auto ec = file_.open(path);
        open_ = !ec;
        return ec;
    }
    bool is_open() const { return open_; }

    void add(std::string_view event, std::string_view who, std::string_view text) {
        if (!open_) return;
        // One reading of the clock per batch: the lines of one loop iteration share a time.
        if (pending_.empty()) batch_time_ = std::chrono::system_clock::now();
        clock_.append(pending_, batch_time_);
        pending_ += '\t';
        pending_ += event;
        pending_ += '\t';
        append_printable(pending_, who, true);
        pending_ += '\t';
        append_printable(pending_, text, true);
        pending_ += '\n';
    }
    // Writes the collected lines. A failure is reported once; the chat goes on without the log.
    void flush(const DiagnosticSink& report) {
        if (pending_.empty()) return;
        auto ec = file_.write(pending_);
        pending_.clear();
        if (ec && !failed_) {
            failed_ = true;
            if (report) report("cannot write the conversation log " + path_ + ": " + ec.message());
        } else if (!ec) {
            failed_ = false;
        }
    }

private:
    detail::AppendFile file_;
    detail::UtcClock clock_;
    std::chrono::system_clock::time_point batch_time_;
    std::string path_;
    std::string pending_;
    bool open_ = false;
    bool failed_ = false;
};

// ============================================================================================
// 5. Server
// ============================================================================================

class Server;
namespace detail {
inline std::atomic<Server*> ctrl_c_target{nullptr};  // see stop_on_ctrl_c()
}

using ClientId = std::uint64_t;  // unique for the server's lifetime; never reused
constexpr ClientId no_client = 0;

struct ServerOptions {
    std::string host = "127.0.0.1";        // "::" for every IPv6 and IPv4 address
    std::uint16_t port = 1234;             // 0: the OS picks one; read it back with port()
    std::string log_path;                  // conversation log; empty: none
    std::string server_name = "server";    // reserved sender name of server notices
    std::size_t max_payload = default_max_payload;
    std::size_t max_name_bytes = default_max_name_bytes;
    std::size_t max_clients = 10000;       // connections beyond it are told so and closed; listen()
                                           // raises `ulimit -n` to fit, or lowers this to fit it
    std::size_t announce_up_to = 1000;     // "X joined"/"X left" go to everyone while at most this
                                           // many users are online; above, they are only logged
    milliseconds handshake_timeout{10000}; // to send a username after connecting
    milliseconds frame_timeout{30000};     // for a frame to arrive whole once it has begun
    std::size_t output_hard_limit = 8u << 20;  // queued bytes: over it, disconnect at once
    std::size_t output_soft_limit = 1u << 20;  // over it for longer than soft_limit_time: disconnect
    milliseconds soft_limit_time{10000};
    milliseconds stop_drain_time{2000};    // stop(): time for queued output to reach clients
    milliseconds accept_pause{100};        // out of file descriptors: pause accepting this long
    bool exit_when_empty = false;          // run() returns once the last user has left
    DiagnosticSink diagnostics = print_to_stderr;
};

// What callbacks learn about a client.
struct ClientInfo {
    ClientId id;
    std::string name;  // the username once joined; empty before
    std::string peer;  // "127.0.0.1:50312"
};

class Server {
public:
    explicit Server(ServerOptions options = {}) : options_(std::move(options)) {}
    ~Server() {
        Server* self = this;  // a late Ctrl+C must not reach a destroyed server
        detail::ctrl_c_target.compare_exchange_strong(self, nullptr);
    }
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Called on the loop's thread. Callbacks may call send_to, broadcast and disconnect.
    std::function<void(const ClientInfo&)> on_join;
    // May rewrite `text`; return false to drop the message (nobody receives it, nothing is logged).
    std::function<bool(const ClientInfo&, std::string& text)> on_message;
    std::function<void(const ClientInfo&, std::string_view reason)> on_leave;

    // Opens the conversation log and the listening socket. After this, port() is known.
    std::error_code listen() {
        fit_descriptor_limit();
        if (!options_.log_path.empty()) {
            if (auto ec = log_.open(options_.log_path)) {
                error_context_ = "cannot open the conversation log " + options_.log_path;
                return ec;
            }
        }
        std::error_code ec;
        listener_ = listen_tcp(options_.host, options_.port, ec);
        if (ec) {
            error_context_ = "cannot listen on " + address_of(options_.host, options_.port);
            return ec;
        }
        if ((ec = poller_.add(listener_.get(), want_read))) return ec;
        listening_ = true;
        say("listening on " + address_of(options_.host, port()) + " (" + Poller::backend() + ")");
        return {};
    }
    // For an error from listen(): what was being attempted, e.g. "cannot listen on 127.0.0.1:1234".
    const std::string& error_context() const { return error_context_; }

    std::uint16_t port() const { return local_port(listener_.get()); }

    // Serves until stop() (or, with exit_when_empty, until the last user leaves), then
    // says goodbye to everyone, lets their queues drain for stop_drain_time and closes.
    std::error_code run() {
        if (!listening_) if (auto ec = listen()) return ec;
        while (!stop_requested_.load() && !(options_.exit_when_empty && had_users_ && members_.empty()))
            if (auto ec = run_once(milliseconds(-1))) return ec;
        shut_down();
        return {};
    }

    // One turn of the event loop: waits up to max_wait (-1: until something happens) for
    // sockets and timers, then handles everything ready. For programs with their own loop.
    std::error_code run_once(milliseconds max_wait) {
        if (auto ec = poller_.wait(events_, next_timeout(max_wait))) return ec;
        for (const PollEvent& ev : events_) {
            if (ev.socket == listener_.get()) { accept_all(); continue; }
            auto it = connections_.find(ev.socket);
            if (it == connections_.end() || it->second->dead) continue;
            Connection& c = *it->second;
            if (ev.readable || ev.hangup) read_from(c, ev.hangup);
            if (ev.writable && !c.dead) mark_dirty(c);
        }
        check_timers();
        finish_iteration();
        return {};
    }

    // Asks run() to finish. Safe from a signal handler and from any thread: it only sets a
    // flag and wakes the poller.
    void stop() noexcept {
        stop_requested_.store(true);
        poller_.wake();
    }

    // Sends one message to one client (from the server's name unless `from` is given).
    void send_to(ClientId id, std::string_view text, std::string_view from = {}) {
        auto it = by_id_.find(id);
        if (it == by_id_.end() || it->second->dead) return;
        enqueue(*it->second, encode_message(from.empty() ? options_.server_name : from, text));
    }
    // Sends one message to every joined client except `except`.
    void broadcast(std::string_view text, std::string_view from = {}, ClientId except = no_client) {
        relay(encode_message(from.empty() ? options_.server_name : from, text), except);
    }
    // Closes a client's connection after telling it why.
    void disconnect(ClientId id, std::string_view reason) {
        auto it = by_id_.find(id);
        if (it != by_id_.end()) refuse(*it->second, std::string(reason));
    }

    std::size_t client_count() const { return members_.size(); }  // joined users
    std::size_t connection_count() const { return connections_.size(); }
    std::vector<ClientInfo> clients() const {
        std::vector<ClientInfo> out;
        for (const Connection* c : members_) out.push_back(c->info);
        return out;
    }
    const ServerOptions& options() const { return options_; }

private:
    enum class State { naming, joined, closing };
    struct Connection {
        Socket socket;
        ClientInfo info;
        State state = State::naming;
        FrameDecoder input;
        OutputQueue output;
        Clock::time_point deadline;         // naming: handshake; closing: when to give up
        Clock::time_point over_soft_since;  // when the queue went over the soft limit
        bool over_soft = false;
        Clock::time_point partial_since;    // when the frame still incomplete began to arrive
        bool partial = false;
        bool write_interest = false;        // registered for writability with the poller
        bool dirty = false;                 // has output to try at the end of this iteration
        bool dead = false;                  // to be closed at the end of this iteration
        bool sent_eof = false;              // closing: shutdown_send done
        bool peer_finished = false;         // the peer closed its sending side
        std::string leave_reason;
        std::size_t member_slot = 0;        // index in members_ when joined
        explicit Connection(std::size_t max_payload) : input(max_payload) {}
    };

    void say(const std::string& line) const {
        if (options_.diagnostics) options_.diagnostics(line);
    }
    // Like Redis: make room for max_clients descriptors, and if the OS will not, accept fewer
    // clients so that the last ones are told "the server is full" instead of failing to accept.
    void fit_descriptor_limit() {
        constexpr std::size_t reserve = 32;  // listener, log, poller, wake pipe, stdio, one to refuse with
        const std::size_t limit = detail::raise_descriptor_limit(options_.max_clients + reserve);
        if (limit >= options_.max_clients + reserve) return;
        const std::size_t fits = limit > 2 * reserve ? limit - reserve : limit / 2;
        say("the descriptor limit (ulimit -n) is " + std::to_string(limit) + ": accepting " +
            std::to_string(fits) + " clients, not max_clients " + std::to_string(options_.max_clients));
        options_.max_clients = fits;
    }
    static std::string address_of(const std::string& host, std::uint16_t port) {
        return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
    }

    // ---- accepting ------------------------------------------------------------------------
    void accept_all() {
        for (int i = 0; i < 256; ++i) {  // bounded, so a connection storm cannot starve the chat
            std::error_code ec;
            std::string peer;
            Socket s = accept_tcp(listener_.get(), ec, &peer);
            if (!s) {
                if (detail::would_block(ec)) return;
                if (is_out_of_descriptors(ec)) {
                    // The pending connection stays in the backlog, so the listener would stay
                    // readable and the loop would spin: stop watching it for a moment.
                    if (!accept_paused_logged_) say("cannot accept: " + ec.message() + "; pausing accepts");
                    accept_paused_logged_ = true;
                    poller_.modify(listener_.get(), 0);
                    accept_resume_at_ = Clock::now() + options_.accept_pause;
                    accepts_paused_ = true;
                } else if (!detail::interrupted(ec)) {
                    say("accept failed: " + ec.message());
                }
                return;
            }
            accept_paused_logged_ = false;
            add_connection(std::move(s), std::move(peer));
        }
    }
    static bool is_out_of_descriptors(const std::error_code& ec) {
#if defined(_WIN32)
        return ec.value() == WSAEMFILE || ec.value() == WSAENOBUFS;
#else
        return ec == std::errc::too_many_files_open || ec == std::errc::too_many_files_open_in_system ||
               ec == std::errc::no_buffer_space || ec == std::errc::not_enough_memory;
#endif
    }
    void add_connection(Socket s, std::string peer) {
        const socket_t fd = s.get();
        auto c = std::make_unique<Connection>(options_.max_payload);
        c->socket = std::move(s);
        c->info = ClientInfo{next_id_++, std::string(), std::move(peer)};
        c->deadline = Clock::now() + options_.handshake_timeout;
        if (auto ec = poller_.add(fd, want_read)) {
            say("cannot watch " + c->info.peer + ": " + ec.message());
            return;
        }
        Connection& ref = *c;
        by_id_[ref.info.id] = &ref;
        connections_[fd] = std::move(c);
        naming_.push_back({ref.info.id, ref.deadline});
        if (connections_.size() > options_.max_clients) {
            log_.add("refused", ref.info.peer, "server full");
            refuse(ref, "the server is full (" + std::to_string(options_.max_clients) + " clients)");
        }
    }

    // ---- reading --------------------------------------------------------------------------
    void read_from(Connection& c, bool hangup) {
        char buf[65536];
        std::size_t total = 0;
        while (total < 4 * sizeof buf) {  // a fair share per iteration; level-triggered polling
            std::error_code ec;            // brings us back for the rest
            std::size_t n = recv_some(c.socket.get(), buf, sizeof buf, ec);
            if (ec && detail::would_block(ec)) {
                if (hangup) close_connection(c, "connection lost");
                return;
            }
            if (ec) return close_connection(c, "connection lost: " + ec.message());
            if (n == 0) return peer_finished(c);
            total += n;
            // A short read drained the socket: skip the recv that would only say "empty".
            // Polling is level-triggered, so anything arriving later is reported again.
            const bool drained = n < sizeof buf && !hangup;
            if (c.state == State::closing) continue;  // discard: we are only waiting for EOF
            bool completed = false;
            c.input.decode(buf, n, [&](std::string_view frame) {  // frames straight from buf
                handle_frame(c, frame);
                completed = true;
                return c.state != State::closing && !c.dead;
            });
            if (c.dead) return;
            if (c.input.failed()) {
                log_.add("error", who(c), "protocol error: " + c.input.error());
                return refuse(c, "protocol error: " + c.input.error());
            }
            track_partial_frame(c, completed);
            if (drained) return;
        }
    }
    // A frame must arrive whole within frame_timeout of its first byte: a client that sends half
    // a frame and stalls (slowloris) holds a buffer and a descriptor, so it is dropped.
    void track_partial_frame(Connection& c, bool completed_one) {
        if (c.state != State::joined || c.input.buffered() == 0) { c.partial = false; return; }
        if (c.partial && !completed_one) return;  // the same frame is still arriving
        c.partial_since = Clock::now();
        if (!c.partial) partial_.push_back(c.info.id);
        c.partial = true;
    }
    // The peer sent all it will (it may still read): deliver what is queued for it, then close.
    void peer_finished(Connection& c) {
        if (c.state == State::joined) remove_member(c, "left");
        if (c.state != State::closing) start_closing(c, "left");
        c.peer_finished = true;
        if (c.output.empty()) return close_connection(c, c.leave_reason);
        c.write_interest = true;  // end-of-stream stays readable: watch for writability only
        poller_.modify(c.socket.get(), want_write);
    }
    std::string who(const Connection& c) const { return c.info.name.empty() ? c.info.peer : c.info.name; }

    void handle_frame(Connection& c, std::string_view frame) {
        if (c.state == State::naming) return handle_username(c, frame);
        if (frame.empty()) return;  // nothing to say
        if (!is_valid_utf8(frame)) return send_to(c.info.id, "message not delivered: it is not valid UTF-8");
        if (!on_message) return deliver(c, frame);
        std::string text(frame);  // the callback may rewrite it
        if (!on_message(c.info, text)) return;
        if (c.state == State::joined && !c.dead) deliver(c, text);  // unless it cut the sender off
    }
    void deliver(Connection& c, std::string_view text) {
        log_.add("message", c.info.name, text);
        relay(encode_message(c.info.name, text), c.info.id);
    }

    void handle_username(Connection& c, std::string_view frame) {
        std::string name(frame);
        std::string problem = check_username(name, options_.server_name, options_.max_name_bytes);
        if (problem.empty() && names_in_use_.count(ascii_lower(name)))
            problem = "the name \"" + name + "\" is taken";
        if (!problem.empty()) {
            log_.add("refused", c.info.peer, problem);
            say("refused " + c.info.peer + ": " + problem);
            return refuse(c, "name refused: " + problem);
        }
        names_in_use_.insert(ascii_lower(name));
        c.info.name = std::move(name);
        c.state = State::joined;
        c.member_slot = members_.size();
        members_.push_back(&c);
        had_users_ = true;
        log_.add("join", c.info.name, c.info.peer);
        say(printable(c.info.name) + " joined from " + c.info.peer);
        const std::size_t others = members_.size() - 1;
        send_to(c.info.id, "welcome, " + c.info.name + "! " + std::to_string(others) +
                               (others == 1 ? " other user" : " other users") + " online" +
                               (announced(members_.size()) ? "" : "; joins and leaves are not announced in a room this big"));
        if (announced(members_.size())) broadcast(c.info.name + " joined", {}, c.info.id);
        if (on_join) on_join(c.info);
    }

    // Joins and leaves in a room of this many users go to everyone? A room filling up to N users
    // would get N²/2 join notices: big rooms get none.
    bool announced(std::size_t room) const { return room <= options_.announce_up_to; }

    // ---- writing --------------------------------------------------------------------------
    void relay(const SharedBytes& bytes, ClientId except) {
        // enqueue() may cut a member off; it stays in members_ (marked dead) until the end of
        // the iteration, so this walk is never disturbed.
        for (Connection* m : members_)
            if (m->info.id != except && !m->dead) enqueue(*m, bytes);
    }
    void enqueue(Connection& c, SharedBytes bytes) {
        c.output.push(std::move(bytes));
        if (c.output.size_bytes() > options_.output_hard_limit) {
            // Writes wait for the end of the iteration; before calling this client slow, give
            // it what its socket takes now (the log goes first, as always).
            log_.flush(options_.diagnostics);
            if (auto ec = c.output.write_to(c.socket.get())) return close_connection(c, "connection lost: " + ec.message());
        }
        if (c.output.size_bytes() > options_.output_hard_limit)
            return close_connection(c, "too slow: output queue over " + std::to_string(options_.output_hard_limit) + " bytes");
        if (c.output.size_bytes() > options_.output_soft_limit && !c.over_soft) {
            c.over_soft = true;
            c.over_soft_since = Clock::now();
            over_soft_.push_back(c.info.id);
        }
        mark_dirty(c);
    }
    void mark_dirty(Connection& c) {
        if (!c.dirty) { c.dirty = true; dirty_.push_back(c.info.id); }
    }
    void flush(Connection& c) {
        c.dirty = false;
        if (auto ec = c.output.write_to(c.socket.get()))
            return close_connection(c, "connection lost: " + ec.message());
        if (c.over_soft && c.output.size_bytes() <= options_.output_soft_limit) c.over_soft = false;
        if (c.state == State::closing && c.output.empty()) {
            if (c.peer_finished) return close_connection(c, c.leave_reason);
            if (!c.sent_eof) shutdown_send(c.socket.get());  // all sent; wait for the peer to close
            c.sent_eof = true;
        }
        const bool want = !c.output.empty();
        if (want != c.write_interest) {
            c.write_interest = want;
            poller_.modify(c.socket.get(), (c.peer_finished ? 0 : want_read) | (want ? want_write : 0));
        }
    }

    // Tells a client why, then closes once that has been sent (or after a second at most).
    void refuse(Connection& c, std::string reason) {
        if (c.dead || c.state == State::closing) return;
        enqueue(c, encode_message(options_.server_name, reason));
        if (c.dead) return;
        if (c.state == State::joined) remove_member(c, reason);
        start_closing(c, std::move(reason));
    }
    void start_closing(Connection& c, std::string reason) {
        c.state = State::closing;
        c.leave_reason = std::move(reason);
        c.deadline = Clock::now() + milliseconds(1000);
        closing_.push_back(c.info.id);
    }

    // ---- closing --------------------------------------------------------------------------
    void close_connection(Connection& c, const std::string& reason) {
        if (c.dead) return;
        c.dead = true;  // nothing more is read from it, relayed to it or relayed from it
        if (c.state == State::joined) c.leave_reason = reason;  // announced in finish_iteration()
        doomed_.push_back(c.socket.get());
    }
    void remove_member(Connection& c, const std::string& reason) {
        Connection* last = members_.back();
        members_[c.member_slot] = last;
        last->member_slot = c.member_slot;
        members_.pop_back();
        names_in_use_.erase(ascii_lower(c.info.name));
        log_.add("leave", c.info.name, reason);
        const std::string notice = c.info.name + (reason == "left" ? " left" : " left (" + reason + ")");
        say(printable(notice));
        if (announced(members_.size() + 1)) broadcast(notice);  // the room still counting the leaver
        if (on_leave) on_leave(c.info, reason);
    }

    // ---- timers ---------------------------------------------------------------------------
    // Three short lists instead of a scan of every connection: handshakes expire in order of
    // arrival, and few connections are ever over the soft limit or closing at once.
    struct Timer { ClientId id; Clock::time_point when; };
    Connection* live(ClientId id) {
        auto it = by_id_.find(id);
        return it == by_id_.end() || it->second->dead ? nullptr : it->second;
    }
    void check_timers() {
        const auto now = Clock::now();
        while (!naming_.empty() && naming_.front().when <= now) {
            Connection* c = live(naming_.front().id);
            naming_.pop_front();
            if (c && c->state == State::naming) {
                log_.add("refused", c->info.peer, "no username in time");
                refuse(*c, "no username within " + std::to_string(options_.handshake_timeout.count()) + " ms");
            }
        }
        sweep(partial_, [&](Connection& c) {
            if (!c.partial) return true;
            if (now - c.partial_since < options_.frame_timeout) return false;
            log_.add("error", c.info.name, "incomplete frame");
            refuse(c, "a frame took longer than " + std::to_string(options_.frame_timeout.count()) + " ms to arrive");
            return true;
        });
        sweep(over_soft_, [&](Connection& c) {
            if (!c.over_soft) return true;
            if (now - c.over_soft_since < options_.soft_limit_time) return false;
            close_connection(c, "too slow: output queue over " + std::to_string(options_.output_soft_limit) +
                                    " bytes for " + std::to_string(options_.soft_limit_time.count()) + " ms");
            return true;
        });
        sweep(closing_, [&](Connection& c) {
            if (c.deadline > now) return false;
            close_connection(c, c.leave_reason);
            return true;
        });
        if (accepts_paused_ && now >= accept_resume_at_) {
            accepts_paused_ = false;
            poller_.modify(listener_.get(), want_read);
        }
    }
    // Keeps the ids for which done(connection) is false; drops the rest and the dead.
    template <class Done>
    void sweep(std::vector<ClientId>& ids, Done done) {
        ids.erase(std::remove_if(ids.begin(), ids.end(), [&](ClientId id) {
            Connection* c = live(id);
            return !c || done(*c);
        }), ids.end());
    }
    int next_timeout(milliseconds max_wait) const {
        if (!dirty_.empty() || !doomed_.empty()) return 0;
        auto soonest = Clock::time_point::max();
        if (!naming_.empty()) soonest = naming_.front().when;
        if (!over_soft_.empty() || !partial_.empty()) soonest = std::min(soonest, Clock::now() + milliseconds(100));
        if (!closing_.empty()) soonest = std::min(soonest, Clock::now() + milliseconds(50));
        if (accepts_paused_) soonest = std::min(soonest, accept_resume_at_);
        long long ms = max_wait.count();  // negative: no limit of the caller's
        if (soonest != Clock::time_point::max()) {
            long long until = std::chrono::duration_cast<milliseconds>(soonest - Clock::now()).count() + 1;
            ms = ms < 0 ? until : std::min(ms, until);
        }
        return ms < 0 ? -1 : static_cast<int>(std::min(std::max(ms, 0ll), 60'000ll));
    }

    // The end of every iteration: log first, then the sockets, then the closes.
    void finish_iteration() {
        while (!dirty_.empty() || !doomed_.empty()) {
            log_.flush(options_.diagnostics);  // every line reaches the OS before its message leaves
            // Swapped with kept buffers: flushing may queue more, and no iteration allocates.
            dirty_now_.swap(dirty_);
            for (ClientId id : dirty_now_)
                if (Connection* c = live(id)) flush(*c);
            dirty_now_.clear();
            doomed_now_.swap(doomed_);
            for (socket_t fd : doomed_now_) {
                auto it = connections_.find(fd);
                Connection& c = *it->second;
                if (c.state == State::joined) {
                    c.state = State::closing;
                    remove_member(c, c.leave_reason);  // notices the others, calls on_leave
                }
                poller_.remove(fd);
                by_id_.erase(it->second->info.id);
                connections_.erase(it);  // closes the socket
            }
            doomed_now_.clear();
        }
        log_.flush(options_.diagnostics);
    }

    void shut_down() {
        poller_.remove(listener_.get());
        listener_.close();
        accepts_paused_ = false;
        // Messages that reached us before the stop are still relayed and logged.
        for (Connection* c : std::vector<Connection*>(members_))
            if (!c->dead && c->state == State::joined) read_from(*c, false);
        finish_iteration();
        broadcast("the server is stopping");
        for (auto& entry : connections_) {
            Connection& c = *entry.second;
            if (c.dead) continue;
            if (c.state == State::joined) {
                log_.add("leave", c.info.name, "server stopping");
                if (on_leave) on_leave(c.info, "server stopping");
            }
            c.state = State::closing;
            c.leave_reason = "server stopping";
            mark_dirty(c);
        }
        members_.clear();
        names_in_use_.clear();
        finish_iteration();
        const auto deadline = Clock::now() + options_.stop_drain_time;
        while (!connections_.empty() && Clock::now() < deadline)  // the listener is gone: only
            if (run_once(milliseconds(20))) break;                  // the goodbyes are served
        connections_.clear();
        by_id_.clear();
        say("stopped");
    }

    ServerOptions options_;
    detail::NetworkInit net_;
    Poller poller_;
    Socket listener_;
    ConversationLog log_;
    std::unordered_map<socket_t, std::unique_ptr<Connection>> connections_;
    std::unordered_map<ClientId, Connection*> by_id_;
    std::vector<Connection*> members_;  // joined users, in no particular order
    std::unordered_set<std::string> names_in_use_;  // their names, in lower case
    std::deque<Timer> naming_;
    std::vector<ClientId> over_soft_, partial_, closing_, dirty_;
    std::vector<socket_t> doomed_;
    std::vector<ClientId> dirty_now_;   // finish_iteration()'s working copies
    std::vector<socket_t> doomed_now_;
    std::vector<PollEvent> events_;
    ClientId next_id_ = 1;
    std::atomic<bool> stop_requested_{false};
    bool listening_ = false;
    bool had_users_ = false;
    bool accepts_paused_ = false;
    bool accept_paused_logged_ = false;
    Clock::time_point accept_resume_at_;
    std::string error_context_;
};


// Ctrl+C (and SIGTERM) call server.stop(), then the program goes on from run(). Opt-in and
// explicit, because a library must not take over process-wide signal handling on its own.
// One server at a time; a later call points the handler at another server.
namespace detail {
#if defined(_WIN32)
inline BOOL WINAPI on_console_event(DWORD event) {  // runs on a thread of its own
    Server* s = ctrl_c_target.load();
    if (!s || event == CTRL_LOGOFF_EVENT || event == CTRL_SHUTDOWN_EVENT) return FALSE;
    s->stop();
    // Closing the console window ends the process as soon as this returns: give run() the
    // time it needs to say goodbye (Windows allows about five seconds).
    if (event == CTRL_CLOSE_EVENT) ::Sleep(static_cast<DWORD>(s->options().stop_drain_time.count()) + 500);
    return TRUE;
}
#else
inline void on_stop_signal(int) {
    if (Server* s = ctrl_c_target.load()) s->stop();
}
#endif
}  // namespace detail

inline void stop_on_ctrl_c(Server& server) {
    detail::ctrl_c_target.store(&server);
#if defined(_WIN32)
    ::SetConsoleCtrlHandler(detail::on_console_event, TRUE);
#else
    struct sigaction action{};
    action.sa_handler = detail::on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
#endif
}

// ============================================================================================
// 6. Client
// ============================================================================================

// One message as a client receives it.
struct Message {
    std::string from;  // the sender's username, or the server's reserved name for a notice
    std::string text;
    bool from_server;  // a notice: someone joined or left, a name was refused, the server stops
};

// Standard input, line by line, without blocking the loop: Client::poll watches it together
// with the socket. Works for a terminal, a pipe and a redirected file.
class StdinLines {
public:
#if defined(_WIN32)
    // On Windows the console also speaks UTF-8 while this exists, so "João" and "数据" print
    // as themselves; the previous code pages come back afterwards.
    StdinLines() : input_cp_(::GetConsoleCP()), output_cp_(::GetConsoleOutputCP()) {
        ::SetConsoleCP(CP_UTF8);
        ::SetConsoleOutputCP(CP_UTF8);
    }
    ~StdinLines() {
        if (input_cp_) ::SetConsoleCP(input_cp_);
        if (output_cp_) ::SetConsoleOutputCP(output_cp_);
    }
#else
    StdinLines() = default;
#endif
    StdinLines(const StdinLines&) = delete;
    StdinLines& operator=(const StdinLines&) = delete;

    // The next whole line, without its "\n" or "\r\n"; false when none is ready yet.
    bool next(std::string& line) {
        std::size_t end = buffer_.find('\n');
        if (end == std::string::npos) {
            if (!ended_ || buffer_.empty()) return false;
            end = buffer_.size();  // the last line had no newline
        }
        line.assign(buffer_, 0, end);
        buffer_.erase(0, end + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
    }
    bool has_line() const { return buffer_.find('\n') != std::string::npos || (ended_ && !buffer_.empty()); }
    // True once input has ended and every line has been taken.
    bool eof() const { return ended_ && buffer_.empty(); }
    // Waits for one whole line (for a prompt before the chat starts). False at end of input.
    bool read_line(std::string& line) {
        while (!has_line() && !ended_) read_some();
        return next(line);
    }

private:
    friend class Client;
#if defined(_WIN32)
    // A console cannot be waited on with WSAPoll, so a Win32 thread reads standard input and
    // signals a socket pair that the poller can wait on. The thread shares this state and may
    // outlive the StdinLines (it stays blocked in a read until the process exits).
    struct Shared {
        CRITICAL_SECTION lock;
        std::string data;
        bool ended = false;
        detail::WakeChannel ready;
        Shared() { ::InitializeCriticalSection(&lock); }
        ~Shared() { ::DeleteCriticalSection(&lock); }
    };
    static DWORD WINAPI reader(void* arg) {
        std::shared_ptr<Shared> shared = *static_cast<std::shared_ptr<Shared>*>(arg);
        delete static_cast<std::shared_ptr<Shared>*>(arg);
        const HANDLE in = ::GetStdHandle(STD_INPUT_HANDLE);
        DWORD mode = 0, n = 0;
        const bool console = ::GetConsoleMode(in, &mode) != 0;
        for (bool more = true; more;) {
            std::string chunk;
            if (console) {  // UTF-16 from the console, whatever its code page, to UTF-8
                wchar_t wide[4096];
                more = ::ReadConsoleW(in, wide, 4096, &n, nullptr) && n > 0 && wide[0] != 0x1A;  // Ctrl+Z
                if (more) chunk = detail::narrow(wide, static_cast<int>(n));
            } else {        // a pipe or a file: bytes as they are
                char buf[65536];
                more = ::ReadFile(in, buf, sizeof buf, &n, nullptr) && n > 0;
                chunk.assign(buf, more ? n : 0);
            }
            ::EnterCriticalSection(&shared->lock);
            shared->data += chunk;
            shared->ended = !more;
            ::LeaveCriticalSection(&shared->lock);
            shared->ready.signal();
        }
        return 0;
    }
    socket_t handle() {
        if (!shared_) {
            shared_ = std::make_shared<Shared>();
            HANDLE t = ::CreateThread(nullptr, 0, reader, new std::shared_ptr<Shared>(shared_), 0, nullptr);
            if (!t) throw std::system_error(static_cast<int>(::GetLastError()), detail::os_category(), "chatsock: stdin thread");
            ::CloseHandle(t);
        }
        return shared_->ready.socket();
    }
    // Takes what the reader thread has collected; waits for it when `wait` is set.
    void read_some(bool wait = true) {
        if (wait) {
            fd_set ready;
            FD_ZERO(&ready);
            FD_SET(handle(), &ready);
            ::select(0, &ready, nullptr, nullptr, nullptr);
        }
        shared_->ready.drain();
        ::EnterCriticalSection(&shared_->lock);
        buffer_ += shared_->data;
        shared_->data.clear();
        ended_ = shared_->ended;
        ::LeaveCriticalSection(&shared_->lock);
    }
    std::shared_ptr<Shared> shared_;
    UINT input_cp_, output_cp_;
#else
    static socket_t handle() { return 0; }
    // One read of what is there. Called when the poller says stdin is readable (or for a
    // regular file, always readable), so it does not block the loop; read_line() waits in it.
    void read_some(bool = true) {
        char buf[65536];
        ssize_t n;
        do n = ::read(0, buf, sizeof buf);
        while (n < 0 && errno == EINTR);
        if (n <= 0) ended_ = true;
        else buffer_.append(buf, static_cast<std::size_t>(n));
    }
#endif
    std::string buffer_;
    bool ended_ = false;
};

struct ClientOptions {
    std::string server_name = "server";  // sender name that marks server notices
    std::size_t max_payload = default_max_payload;
    milliseconds connect_timeout{5000};
    milliseconds close_timeout{5000};    // close(): time for queued messages to be delivered
};

class Client {
public:
    explicit Client(ClientOptions options = {})
        : options_(std::move(options)), input_(options_.max_payload) {}
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Called from poll() for every message and notice received.
    std::function<void(const Message&)> on_message;

    // Connects within connect_timeout and sends the username. The server's answer (a welcome,
    // or a refusal and a close) arrives through poll().
    std::error_code connect(const std::string& host, std::uint16_t port, std::string_view username) {
        if (open_) return std::make_error_code(std::errc::already_connected);
        // Nothing of an earlier connection (unsent bytes, half a frame, a sent EOF) carries over.
        output_.clear();
        sent_ = 0;
        input_ = FrameDecoder(options_.max_payload);
        have_sender_ = eof_sent_ = write_interest_ = false;
        std::error_code ec;
        socket_ = connect_tcp(host, port, options_.connect_timeout, ec);
        if (ec) return ec;
        if ((ec = poller_.add(socket_.get(), want_read))) return ec;
        open_ = true;
        finishing_ = false;
        close_reason_.clear();
        return queue_frame(username);
    }

    // Queues one message and starts sending it. Errors: not connected, closing, or the text
    // is longer than the server accepts (std::errc::message_size).
    std::error_code send(std::string_view text) {
        if (!open_ || finishing_) return std::make_error_code(std::errc::not_connected);
        return queue_frame(text);
    }

    // Waits up to `timeout` for the server (and for `input`, when given), sends what is queued
    // and hands every message received to on_message. Returns false once the connection is
    // closed; close_reason() then says why.
    bool poll(milliseconds timeout, StdinLines* input = nullptr) {
        if (!open_) return false;
        watch(input);
        if (input && (input->has_line() || input->eof() || input_is_file_)) timeout = milliseconds(0);
        if (auto ec = poller_.wait(events_, static_cast<int>(timeout.count()))) {
            fail("poll failed: " + ec.message());
            return false;
        }
        for (const PollEvent& ev : events_) {
            if (ev.socket == socket_.get() && (ev.readable || ev.hangup)) receive();
            else if (input && ev.socket == input->handle()) input->read_some(false);
        }
        if (input && input_is_file_ && !input->ended_) input->read_some();
        if (input && input_watched_ && input->ended_) {
            poller_.remove(input->handle());  // end of input stays "readable" forever
            input_watched_ = false;
        }
        if (open_) flush();
        return open_;
    }

    // Graceful close, without blocking: once everything queued is sent, the connection's
    // sending side is closed; the server then closes too and poll() returns false.
    void finish() {
        finishing_ = true;
        if (open_) flush();
    }
    // Graceful close that waits (up to close_timeout) until the server has received everything
    // and closed. Returns true when it did.
    bool close() {
        finish();
        const auto deadline = Clock::now() + options_.close_timeout;
        while (open_ && Clock::now() < deadline)
            poll(std::chrono::duration_cast<milliseconds>(deadline - Clock::now()) + milliseconds(1));
        const bool delivered = !open_ && eof_sent_ && close_reason_ == closed_by_server;
        if (open_) fail("closed before the server acknowledged");
        return delivered;
    }

    bool is_open() const { return open_; }
    const std::string& close_reason() const { return close_reason_; }
    std::size_t queued_bytes() const { return output_.size() - sent_; }
    socket_t socket() const { return socket_.get(); }

private:
    static constexpr const char* closed_by_server = "connection closed by the server";

    std::error_code queue_frame(std::string_view payload) {
        if (payload.size() > options_.max_payload) return std::make_error_code(std::errc::message_size);
        append_frame(output_, payload);
        flush();
        return {};
    }
    void watch(StdinLines* input) {
        if (!input || input_watched_ || input_is_file_ || input->ended_) return;
        if (poller_.add(input->handle(), want_read)) input_is_file_ = true;  // epoll refuses files
        else input_watched_ = true;
    }
    void receive() {
        char buf[65536];
        for (;;) {
            std::error_code ec;
            std::size_t n = recv_some(socket_.get(), buf, sizeof buf, ec);
            if (ec && detail::would_block(ec)) return;
            if (ec) return fail("connection lost: " + ec.message());
            if (n == 0) return fail(closed_by_server);
            input_.feed(buf, n);
            std::string_view frame;
            while (input_.next(frame)) {
                if (!have_sender_) {
                    sender_.assign(frame);
                    have_sender_ = true;
                    continue;
                }
                have_sender_ = false;
                Message m{sender_, std::string(frame), sender_ == options_.server_name};
                if (on_message) on_message(m);
                if (!open_) return;
            }
            if (input_.failed()) return fail("protocol error from the server: " + input_.error());
        }
    }
    void flush() {
        while (sent_ < output_.size()) {
            std::error_code ec;
            std::size_t n = send_some(socket_.get(), output_.data() + sent_, output_.size() - sent_, ec);
            if (ec && detail::would_block(ec)) break;
            if (ec) return fail("connection lost: " + ec.message());
            sent_ += n;
        }
        if (sent_ == output_.size()) {
            output_.clear();
            sent_ = 0;
            if (finishing_ && !eof_sent_) {
                shutdown_send(socket_.get());
                eof_sent_ = true;
            }
        }
        const bool want = !output_.empty();
        if (want != write_interest_) {
            write_interest_ = want;
            poller_.modify(socket_.get(), want_read | (want ? want_write : 0));
        }
    }
    void fail(std::string reason) {
        if (!open_) return;
        open_ = false;
        close_reason_ = std::move(reason);
        poller_.remove(socket_.get());
        socket_.close();
    }

    ClientOptions options_;
    detail::NetworkInit net_;
    Poller poller_;
    Socket socket_;
    FrameDecoder input_;
    std::string output_;
    std::size_t sent_ = 0;
    std::string sender_;
    bool have_sender_ = false;
    bool open_ = false, finishing_ = false, eof_sent_ = false, write_interest_ = false;
    bool input_watched_ = false, input_is_file_ = false;
    std::string close_reason_;
    std::vector<PollEvent> events_;
};

}  // namespace chatsock

#if defined(_WIN32)
#  pragma pop_macro("max")
#  pragma pop_macro("min")
#endif

#endif  // CHATSOCK_HPP
