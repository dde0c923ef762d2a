// chatsock.hpp — a portable chat server and client in one C++17 header.
//
// WHAT IT IS
//   A small, complete chat over TCP: a poll abstraction over BSD sockets and Winsock, message
//   framing, broadcast with per-client write queues, and a conversation log. The wire format
//   is the classic Python select() chat's: every frame is a 10-byte ASCII length header
//   (left-aligned, space-padded) followed by that many bytes of UTF-8. A client's first frame
//   is its username; the server relays each later frame to every *other* client as two
//   frames, sender name then text. The same port serves `nc`/telnet as lines ("alice: hi") and
//   browsers (a built-in chat page, then WebSocket), all in one room. See docs/PROTOCOL.md.
//
// BUILD (no other flags, no other files)
//   Linux, macOS:  g++ -std=c++17 -O2 demo_server.cpp -o demo_server
//   MinGW-w64:     x86_64-w64-mingw32-g++ -std=c++17 -O2 -static demo_server.cpp
//                      -o demo_server.exe -lws2_32
//   MSVC:          cl /std:c++17 /O2 /EHsc demo_server.cpp      (links ws2_32 by #pragma)
//
// A COMPLETE SERVER
//   #include "chatsock.hpp"
//   int main() {
//       chatsock::ServerOptions options;            // 127.0.0.1:1234, no log file
//       options.log_path = "message_log";
//       chatsock::Server server(options);
//       chatsock::stop_on_ctrl_c(server);          // opt-in: Ctrl+C stops it cleanly
//       if (server.listen()) return 1;             // a diagnostic line says why
//       server.run();                               // until stop()
//   }
//
// A COMPLETE CLIENT
//   chatsock::Client client;
//   client.on_message = [](const chatsock::Message& m) {
//       chatsock::write_text(stdout, chatsock::printable(m.from) + " > " +
//                                    chatsock::printable(m.text) + "\n"); };
//   if (auto ec = client.connect("127.0.0.1", 1234, "alice")) return 1;
//   client.send("hello");
//   while (client.poll(std::chrono::milliseconds(100))) { /* ... */ }
//
// API AT A GLANCE, by layer, in the order the header teaches them (the rest is in detail::)
//   1 platform  Socket, socket_t: an owned socket      listen_tcp, accept_tcp, connect_tcp
//               send_some, recv_some, local_port       parse_port, command_line: UTF-8 args
//               write_text: UTF-8, even to a console   StdinLines: stdin, line by line
//   2 poller    Poller: epoll, or poll()/WSAPoll       PollEvent, want_read, want_write
//   3 framing   header_size, encode_frame, parse_header, FrameDecoder
//               is_valid_utf8, is_control, printable, check_username
//   4 web       Wire, detect_wire, LineDecoder, WebSocketDecoder: lines and browsers
//   5 buffers   SharedBytes, encode_message, OutputQueue, ConversationLog
//   6 server    Server, ServerOptions, ClientInfo, ClientId, stop_on_ctrl_c
//   7 client    Client, ClientOptions, Message, CloseReason
//
// CONFIGURATION MACROS (define before including)
//   CHATSOCK_USE_POLL   use the portable poll() backend even where epoll exists (Linux).
//   Everything else is a run-time option: see ServerOptions and ClientOptions below.
//
// WHY IT IS FAST (measured in bench/; README, "Performance")
//   A message is encoded once for all its recipients; a turn's output to a client is one writev;
//   frames are parsed in the read buffer; one log write per turn; an idle client costs < 1 KiB.
//
// LICENSE
//   MIT. Copyright (c) 2026 the chatsock authors. See LICENSE for the full text.

#ifndef CHATSOCK_HPP
#define CHATSOCK_HPP
#define CHATSOCK_VERSION "0.2.0"

// ==== 1. Platform: every difference between Winsock and BSD sockets lives in this section. =======
#if defined(_WIN32)
#  ifndef NOMINMAX
#    define NOMINMAX
#  endif
// The min and max macros of a <windows.h> included earlier break std::min: set them aside.
#  pragma push_macro("min")
#  pragma push_macro("max")
#  undef min
#  undef max
#  define CHATSOCK_RESTORE_MIN_MAX
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  if defined(_WIN32_WINNT) && _WIN32_WINNT < 0x0600
#    error "chatsock needs Windows Vista or later (_WIN32_WINNT >= 0x0600) for WSAPoll"
#  endif
#  if defined(__GNUC__) && defined(_WINSOCKAPI_) && !defined(_WINSOCK2API_)
// The user's <windows.h> brought the old winsock.h, and MinGW's winsock2.h would warn. (MSVC
// cannot mix the two: include chatsock.hpp first, or define WIN32_LEAN_AND_MEAN.)
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
#  include <sys/uio.h>
#  include <unistd.h>
#  include <mutex>
#  if defined(__linux__) && !defined(CHATSOCK_USE_POLL)
#    include <sys/epoll.h>
#    define CHATSOCK_HAS_EPOLL 1
#  endif
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <memory>
#include <set>
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
struct winsock_category_impl : std::error_category {
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
        using E = std::errc;
        // clang-format off
        static const std::pair<int, E> map[] = {
            {WSAEWOULDBLOCK, E::operation_would_block}, {WSAEINPROGRESS, E::operation_in_progress},
            {WSAEINTR, E::interrupted}, {WSAECONNREFUSED, E::connection_refused},
            {WSAECONNRESET, E::connection_reset}, {WSAECONNABORTED, E::connection_aborted},
            {WSAENOTCONN, E::not_connected}, {WSAETIMEDOUT, E::timed_out},
            {WSAEADDRINUSE, E::address_in_use}, {WSAEADDRNOTAVAIL, E::address_not_available},
            {WSAENETUNREACH, E::network_unreachable}, {WSAEHOSTUNREACH, E::host_unreachable},
            {WSAEAFNOSUPPORT, E::address_family_not_supported}, {WSAEMSGSIZE, E::message_size},
            {WSAEMFILE, E::too_many_files_open}, {WSAENOBUFS, E::no_buffer_space},
            {WSAEACCES, E::permission_denied}, {WSAEINVAL, E::invalid_argument}};
        // clang-format on
        for (const auto& [winsock, portable] : map)
            if (code == winsock) return portable;
        return std::error_condition(code, *this);
    }
};
inline const std::error_category& os_category() {
    static const winsock_category_impl category;
    return category;
}
inline std::error_code last_error() { return {WSAGetLastError(), os_category()}; }
inline void close_socket(socket_t s) { ::closesocket(s); }
// Stops sending: the peer reads end-of-stream once it has everything sent before.
inline void shutdown_send(socket_t s) { ::shutdown(s, SD_SEND); }
constexpr int send_flags = 0;
// Windows' SO_REUSEADDR lets another program steal the port; this is its safe variant.
constexpr int reuse_address = SO_EXCLUSIVEADDRUSE;
using io_size = int;  // what send() and recv() take and return

// Winsock must be started before other socket calls: resolve() starts it, once per process.
inline void start_network() {
    static const int failed = [] {
        WSADATA data;
        return ::WSAStartup(MAKEWORD(2, 2), &data);
    }();
    if (failed) throw std::system_error(failed, os_category(), "WSAStartup");
}

// Windows speaks UTF-16 to programs that ask for it; chatsock speaks UTF-8 everywhere.
inline std::string narrow(const wchar_t* text, int length) {
    int n = ::WideCharToMultiByte(CP_UTF8, 0, text, length, nullptr, 0, nullptr, nullptr);
    std::string out(static_cast<std::size_t>(std::max(n, 0)), '\0');
    if (n > 0) ::WideCharToMultiByte(CP_UTF8, 0, text, length, &out[0], n, nullptr, nullptr);
    if (length < 0 && !out.empty()) out.pop_back();  // the terminator it counted
    return out;
}
inline std::wstring widen(std::string_view text) {
    const int size = static_cast<int>(text.size());
    int n = ::MultiByteToWideChar(CP_UTF8, 0, text.data(), size, nullptr, 0);
    std::wstring out(static_cast<std::size_t>(std::max(n, 0)), L'\0');
    if (n > 0) ::MultiByteToWideChar(CP_UTF8, 0, text.data(), size, &out[0], n);
    return out;
}
#else
inline const std::error_category& os_category() { return std::system_category(); }
inline std::error_code last_error() { return {errno, std::system_category()}; }
inline void close_socket(socket_t s) { ::close(s); }
inline void shutdown_send(socket_t s) { ::shutdown(s, SHUT_WR); }
#  if defined(MSG_NOSIGNAL)
constexpr int send_flags = MSG_NOSIGNAL;  // a peer that hangs up must not raise SIGPIPE
#  else
constexpr int send_flags = 0;  // macOS/BSD: SO_NOSIGPIPE is set per socket
#  endif
using io_size = std::size_t;
constexpr int reuse_address = SO_REUSEADDR;  // a restarted server binds without waiting
inline void start_network() {}
#endif

inline bool would_block(const std::error_code& ec) {
    return ec == std::errc::operation_would_block ||
           ec == std::errc::resource_unavailable_try_again ||
           ec == std::errc::operation_in_progress;
}
inline bool interrupted(const std::error_code& ec) { return ec == std::errc::interrupted; }

// Calls `call` again while a signal interrupts it (EINTR). On failure (negative) `ec` says why.
template <class Call>
auto retry_interrupted(std::error_code& ec, Call call) {
    auto result = call();
    while (result < 0 && interrupted(ec = last_error())) result = call();
    if (result >= 0) ec.clear();
    return result;
}

// Raises `ulimit -n` (one descriptor per client) toward `wanted`; returns the limit in force.
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

// Out of descriptors or of the memory for one more socket: a reason to pause accepting.
inline bool out_of_descriptors(const std::error_code& ec) {
    return ec == std::errc::too_many_files_open || ec == std::errc::no_buffer_space ||
           ec == std::errc::too_many_files_open_in_system || ec == std::errc::not_enough_memory;
}

// getaddrinfo() reports its own error codes; give them their own category and text.
struct resolver_category_impl : std::error_category {
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
// The kernel holds about `bytes` unsent at most, so a slow reader's backlog waits in our queue,
// where flood control sees it (TCP_NOTSENT_LOWAT on Linux and macOS; elsewhere a small buffer).
inline void limit_unsent(socket_t s, int bytes) {
#if defined(TCP_NOTSENT_LOWAT)
    set_option(s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, bytes);
#else
    set_option(s, SOL_SOCKET, SO_SNDBUF, bytes);
#endif
}

// Every socket chatsock creates goes through here: non-blocking, no SIGPIPE, close-on-exec.
inline std::error_code prepare_socket(socket_t s) {
#if defined(_WIN32)
    u_long on = 1;
    if (::ioctlsocket(s, FIONBIO, &on) != 0) return last_error();
#else
#  if defined(SO_NOSIGPIPE)
    set_option(s, SOL_SOCKET, SO_NOSIGPIPE, 1);
#  endif
    int flags = ::fcntl(s, F_GETFL, 0);
    if (flags < 0 || ::fcntl(s, F_SETFL, flags | O_NONBLOCK) < 0) return last_error();
    ::fcntl(s, F_SETFD, FD_CLOEXEC);
#endif
    return {};
}
}  // namespace detail

// An owned socket: closed when it goes out of scope, movable, not copyable.
class Socket {
public:
    Socket() = default;
    explicit Socket(socket_t s) : s_(s) {}
    ~Socket() { close(); }
    Socket(Socket&& other) noexcept : s_(other.release()) {}
    Socket& operator=(Socket other) noexcept {  // the old socket closes with `other`
        std::swap(s_, other.s_);
        return *this;
    }
    socket_t get() const { return s_; }
    bool valid() const { return s_ != invalid_socket; }
    explicit operator bool() const { return valid(); }
    socket_t release() { return std::exchange(s_, invalid_socket); }
    void close() noexcept {
        if (valid()) detail::close_socket(release());
    }

private:
    socket_t s_ = invalid_socket;
};

namespace detail {
using AddrInfoList = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;
inline AddrInfoList resolve(const std::string& host, std::uint16_t port, bool passive,
                            std::error_code& ec) {
    start_network();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    addrinfo* list = nullptr;
    const std::string service = std::to_string(port);
    int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &list);
    ec.clear();
#if !defined(_WIN32)
    if (rc == EAI_SYSTEM) ec = last_error();
#endif
    if (rc != 0 && !ec) ec = {rc, resolver_category()};
    return AddrInfoList(rc == 0 ? list : nullptr, ::freeaddrinfo);
}

// Vectored send: a list of buffers in one system call. IoBuffer is the OS's own iovec/WSABUF.
#if defined(_WIN32)
using IoBuffer = WSABUF;
inline IoBuffer io_buffer(const char* p, std::size_t n) { return {ULONG(n), const_cast<char*>(p)}; }
inline std::size_t send_buffers(socket_t s, IoBuffer* buffers, std::size_t n, std::error_code& ec) {
    DWORD sent = 0;
    retry_interrupted(ec, [&] {
        return ::WSASend(s, buffers, static_cast<DWORD>(n), &sent, 0, nullptr, nullptr);
    });
    return ec ? 0 : sent;
}
#else
using IoBuffer = iovec;
inline IoBuffer io_buffer(const char* p, std::size_t n) { return {const_cast<char*>(p), n}; }
inline std::size_t send_buffers(socket_t s, IoBuffer* buffers, std::size_t n, std::error_code& ec) {
    msghdr msg{};
    msg.msg_iov = buffers;
    msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(n);
    ssize_t sent = retry_interrupted(ec, [&] { return ::sendmsg(s, &msg, send_flags); });
    return sent < 0 ? 0 : static_cast<std::size_t>(sent);
}
#endif
// At most this many buffers go in one call (Linux and the BSDs allow 1,024, POSIX only 16).
#if defined(IOV_MAX) && IOV_MAX < 1024
constexpr std::size_t max_send_buffers = IOV_MAX;
#else
constexpr std::size_t max_send_buffers = 1024;
#endif

// The poll() call, the same on both: MinGW's and MSVC's WSAPOLLFD has pollfd's layout.
#if defined(_WIN32)
using pollfd_t = WSAPOLLFD;
constexpr const char* poll_backend = "WSAPoll";
inline int poll_sockets(pollfd_t* fds, std::size_t n, int timeout_ms) {
    return ::WSAPoll(fds, static_cast<ULONG>(n), timeout_ms);
}
#else
using pollfd_t = pollfd;
constexpr const char* poll_backend = "poll";
inline int poll_sockets(pollfd_t* fds, std::size_t n, int timeout_ms) {
    return ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
}
#endif

// Waits until a connecting socket is connected (or has failed), up to `timeout`.
inline std::error_code wait_connected(socket_t s, milliseconds timeout) {
    const long long ms = std::max<long long>(timeout.count(), 0);
    std::error_code ec;
#if defined(_WIN32)
    // select(), not WSAPoll: WSAPoll does not report a failed connect on older Windows.
    fd_set writable{1, {s}}, failed{1, {s}};  // Winsock's fd_set: a count, then the sockets
    timeval tv{static_cast<long>(ms / 1000), static_cast<long>(ms % 1000 * 1000)};
    int n = retry_interrupted(ec, [&] { return ::select(0, nullptr, &writable, &failed, &tv); });
#else
    pollfd p{s, POLLOUT, 0};  // (an interrupted wait starts its time again: rare, and bounded)
    int n = retry_interrupted(ec, [&] { return poll_sockets(&p, 1, static_cast<int>(ms)); });
#endif
    if (ec) return ec;
    if (n == 0) return std::make_error_code(std::errc::timed_out);
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&err), &len);
    return err ? std::error_code(err, os_category()) : std::error_code();
}

// "127.0.0.1:1234" or "[::1]:1234" for a socket address.
inline std::string format_address(const sockaddr* addr, socklen_t len) {
    char host[INET6_ADDRSTRLEN + 1] = "?";
    char port[8] = "0";
    ::getnameinfo(addr, len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    return addr->sa_family == AF_INET6 ? "[" + std::string(host) + "]:" + port
                                       : std::string(host) + ":" + port;
}
}  // namespace detail

// The port a socket is bound to (after binding port 0, the one the OS chose).
inline std::uint16_t local_port(socket_t s) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return 0;
    if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

// Reads a port number from a command line: 0 to 65535, digits only.
inline bool parse_port(std::string_view text, std::uint16_t& port) {
    std::uint16_t value = 0;
    const char* end = text.data() + text.size();
    auto [stop, ec] = std::from_chars(text.data(), end, value);
    if (text.empty() || ec != std::errc() || stop != end) return false;
    port = value;
    return true;
}

// The program's arguments as UTF-8: argv on POSIX; on Windows argv is in the ANSI code page
// ("João" would arrive mangled), so the UTF-16 command line is converted instead.
inline std::vector<std::string> command_line(int argc, char** argv) {
#if defined(_WIN32)
    int n = 0;
    if (LPWSTR* wide = ::CommandLineToArgvW(::GetCommandLineW(), &n)) {
        std::vector<std::string> args;
        for (int i = 0; i < n; ++i) args.push_back(detail::narrow(wide[i], -1));
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
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        Socket s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if (!s && (ec = detail::last_error())) continue;
        detail::set_option(s.get(), SOL_SOCKET, detail::reuse_address, 1);
        if (ai->ai_family == AF_INET6)  // dual stack: "::" also takes IPv4 (Windows defaults off)
            detail::set_option(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0);
        if (::bind(s.get(), ai->ai_addr, static_cast<socklen_t>(ai->ai_addrlen)) != 0 ||
            ::listen(s.get(), backlog) != 0)
            ec = detail::last_error();
        else if (!(ec = detail::prepare_socket(s.get()))) return s;
    }
    return Socket();
}

// Accepts one pending connection, non-blocking; sets *peer to its address when given.
// Returns an invalid socket with ec set: would_block() when nobody is waiting.
inline Socket accept_tcp(socket_t listener, std::error_code& ec, std::string* peer = nullptr) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    Socket s;
    do s = Socket(::accept(listener, reinterpret_cast<sockaddr*>(&addr), &len));
    while (!s && detail::interrupted(ec = detail::last_error()));
    if (!s || (ec = detail::prepare_socket(s.get()))) return Socket();
    detail::set_option(s.get(), IPPROTO_TCP, TCP_NODELAY, 1);  // chat lines are small
    if (peer) *peer = detail::format_address(reinterpret_cast<sockaddr*>(&addr), len);
    return s;
}

// Connects to host:port within timeout; the socket returned is non-blocking.
inline Socket connect_tcp(const std::string& host, std::uint16_t port, milliseconds timeout,
                          std::error_code& ec) {
    auto list = detail::resolve(host, port, false, ec);
    const auto deadline = Clock::now() + timeout;
    for (addrinfo* ai = list.get(); ai; ai = ai->ai_next) {
        Socket s(::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol));
        if ((!s && (ec = detail::last_error())) || (ec = detail::prepare_socket(s.get()))) continue;
        detail::set_option(s.get(), IPPROTO_TCP, TCP_NODELAY, 1);
        if (::connect(s.get(), ai->ai_addr, static_cast<socklen_t>(ai->ai_addrlen)) != 0) {
            ec = detail::last_error();
            if (!detail::would_block(ec)) continue;
            auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
            if ((ec = detail::wait_connected(s.get(), std::max(left, milliseconds(0))))) continue;
        }
        ec.clear();
        return s;
    }
    return Socket();
}

// Sends what the socket takes now: the byte count, or 0 with ec set (would_block(ec): full).
inline std::size_t send_some(socket_t s, const char* data, std::size_t size, std::error_code& ec) {
    size = std::min<std::size_t>(size, 1u << 30);  // Winsock counts in int
    auto n = detail::retry_interrupted(ec, [&] {
        return ::send(s, data, static_cast<detail::io_size>(size), detail::send_flags);
    });
    return n < 0 ? 0 : static_cast<std::size_t>(n);
}

// Receives what is there: the byte count; 0 with !ec: the peer closed; 0 with ec: an error
// (would_block(ec) when nothing is there yet).
inline std::size_t recv_some(socket_t s, char* data, std::size_t size, std::error_code& ec) {
    size = std::min<std::size_t>(size, 1u << 30);
    auto n = detail::retry_interrupted(
        ec, [&] { return ::recv(s, data, static_cast<detail::io_size>(size), 0); });
    return n < 0 ? 0 : static_cast<std::size_t>(n);
}

namespace detail {
// A non-blocking socket pair a poller can watch; by hand over loopback on Windows (WSAPoll).
inline void make_channel(Socket& read_end, Socket& write_end) {
#if defined(_WIN32)
    std::error_code ec;
    Socket listener = listen_tcp("127.0.0.1", 0, ec, 1);
    if (!ec)
        read_end = connect_tcp("127.0.0.1", local_port(listener.get()), milliseconds(5000), ec);
    const std::string ours = "127.0.0.1:" + std::to_string(local_port(read_end.get()));
    for (int tries = 0; read_end && tries < 500 && !write_end; ++tries) {
        std::string peer;
        write_end = accept_tcp(listener.get(), ec, &peer);
        if (write_end && peer != ours) write_end.close();  // another local program raced us
        if (!write_end) ::Sleep(1);
    }
    if (!read_end || !write_end) throw std::system_error(ec, "chatsock: socket pair");
#else
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        throw std::system_error(last_error(), "chatsock: socketpair");
    read_end = Socket(fds[0]);
    write_end = Socket(fds[1]);
    prepare_socket(fds[0]);
    prepare_socket(fds[1]);
#endif
}

// Lets another thread or a signal handler interrupt a wait.
class WakeChannel {
public:
    WakeChannel() { make_channel(read_, write_); }
    socket_t socket() const { return read_.get(); }
    // Async-signal-safe: one non-blocking write, errno preserved. A full channel already wakes.
    void signal() noexcept {
        const int saved = errno;
        ::send(write_.get(), "!", 1, send_flags);
        errno = saved;
    }
    // Whether `s` is this channel's own socket, which it then empties: a wake is not an event.
    bool absorb(socket_t s) noexcept {
        if (s != read_.get()) return false;
        char buf[256];
        while (::recv(read_.get(), buf, sizeof buf, 0) > 0) {}
        return true;
    }

private:
    Socket read_, write_;
};

// "2026-11-25T03:39:03.123Z": UTC, milliseconds.
inline std::string utc_timestamp(std::chrono::system_clock::time_point when) {
    const auto ms = std::chrono::duration_cast<milliseconds>(when.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
#if defined(_WIN32)
    ::gmtime_s(&tm, &secs);
#else
    ::gmtime_r(&secs, &tm);
#endif
    char text[80];  // room for any int the compiler imagines
    std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    return text;
}

// Opens a file (UTF-8 path) to append to, unbuffered: each fwrite is one write to the OS.
inline std::FILE* open_append(const std::string& path, std::error_code& ec) {
#if defined(_WIN32)
    std::FILE* f = ::_wfopen(widen(path).c_str(), L"ab");
#else
    std::FILE* f = std::fopen(path.c_str(), "ae");  // e: close-on-exec
#endif
    ec = f ? std::error_code() : std::error_code(errno, std::generic_category());
    if (f) std::setvbuf(f, nullptr, _IONBF, 0);
    return f;
}

// Ctrl+C, SIGTERM or closing the console call `on_stop()` (async-signal-safe; false: nobody to
// stop). A closed console ends the process when the handler returns: it waits stop_grace_ms.
inline std::atomic<bool (*)()> on_stop{nullptr};
inline std::atomic<long long> stop_grace_ms{0};
#if defined(_WIN32)
inline BOOL WINAPI on_console_event(DWORD event) {  // runs on a thread of its own
    if (event == CTRL_LOGOFF_EVENT || event == CTRL_SHUTDOWN_EVENT) return FALSE;
    bool (*stop)() = on_stop.load();
    if (!stop || !stop()) return FALSE;
    if (event == CTRL_CLOSE_EVENT) ::Sleep(static_cast<DWORD>(stop_grace_ms.load()) + 500);
    return TRUE;
}
inline void catch_stop_signals() { ::SetConsoleCtrlHandler(on_console_event, TRUE); }
#else
inline void on_stop_signal(int signal_number) {
    if (signal_number == SIGINT && ::isatty(2)) {  // "^C" was echoed: what follows starts anew
        [[maybe_unused]] ssize_t n = ::write(2, "\n", 1);
    }
    if (bool (*stop)() = on_stop.load()) stop();
}
inline void catch_stop_signals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, nullptr);
    ::sigaction(SIGTERM, &action, nullptr);
}
#endif

// A lock for where threads meet (Server::post). MinGW's default thread model has no std::mutex,
// so Windows uses its own slim lock. Locked holds one for a scope.
class Lock {
public:
#if defined(_WIN32)
    void lock() { ::AcquireSRWLockExclusive(&lock_); }
    void unlock() { ::ReleaseSRWLockExclusive(&lock_); }

private:
    SRWLOCK lock_ = SRWLOCK_INIT;
#else
    void lock() { mutex_.lock(); }
    void unlock() { mutex_.unlock(); }

private:
    std::mutex mutex_;
#endif
};
struct Locked {
    explicit Locked(Lock& lock) : lock_(lock) { lock_.lock(); }
    ~Locked() { lock_.unlock(); }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    Lock& lock_;
};
}  // namespace detail

// Standard input line by line, on a descriptor a poller can watch (Client::poll does). WSAPoll
// cannot wait on a console: on Windows a thread copies it to a socket pair (it may outlive this).
class StdinLines {
public:
    StdinLines() = default;
    StdinLines(const StdinLines&) = delete;
    StdinLines& operator=(const StdinLines&) = delete;
#if defined(_WIN32)
    socket_t handle() {
        if (!from_thread_) {  // the first look starts the thread
            auto* to_reader = new Socket;
            detail::make_channel(from_thread_, *to_reader);
            HANDLE t = ::CreateThread(nullptr, 0, forward_input, to_reader, 0, nullptr);
            if (!t) throw std::system_error(int(::GetLastError()), detail::os_category(), "stdin");
            ::CloseHandle(t);
        }
        return from_thread_.get();
    }
#else
    static socket_t handle() { return 0; }
#endif
    // The next whole line, without its "\n" or "\r\n"; false when none is ready yet.
    bool next(std::string& line) {
        if (!has_line()) return false;
        const std::size_t end = std::min(buffer_.find('\n'), buffer_.size());  // or input's end
        line.assign(buffer_, 0, end);
        buffer_.erase(0, end + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return true;
    }
    bool has_line() const {
        return buffer_.find('\n') != std::string::npos || (ended_ && !buffer_.empty());
    }
    // True once input has ended and every line has been taken.
    bool eof() const { return ended_ && buffer_.empty(); }
    // Waits for one whole line (for a prompt before the chat starts). False at end of input.
    bool read_line(std::string& line) {
        while (!has_line() && !ended_) read_some(true);
        return next(line);
    }
    // Takes in what has arrived (first waiting for it, with `wait`).
    void read_some(bool wait) {
        if (ended_) return;
        detail::pollfd_t p{handle(), POLLIN, 0};
        if (wait) detail::poll_sockets(&p, 1, -1);
        char buf[65536];
        std::error_code ec;
#if defined(_WIN32)
        long n = detail::retry_interrupted(ec, [&] { return ::recv(p.fd, buf, sizeof buf, 0); });
#else
        long n = detail::retry_interrupted(ec, [&] { return ::read(p.fd, buf, sizeof buf); });
#endif
        if (n > 0) buffer_.append(buf, static_cast<std::size_t>(n));
        ended_ = n == 0 || (n < 0 && !detail::would_block(ec));
    }
    bool ended() const { return ended_; }  // input has ended (lines may be left to take)

private:
#if defined(_WIN32)
    static DWORD WINAPI forward_input(void* arg) {
        std::unique_ptr<Socket> out(static_cast<Socket*>(arg));
        u_long blocking = 0;
        ::ioctlsocket(out->get(), FIONBIO, &blocking);
        const HANDLE in = ::GetStdHandle(STD_INPUT_HANDLE);
        DWORD mode = 0, n = 0;
        const bool console = ::GetConsoleMode(in, &mode) != 0;
        for (bool more = true; more;) {
            std::string chunk;
            if (console) {  // UTF-16 from the console, whatever its code page, to UTF-8
                wchar_t wide[4096];
                // A line starting with Ctrl+Z (Windows' end of input) or Ctrl+D ends the input.
                more = ::ReadConsoleW(in, wide, 4096, &n, nullptr) && n > 0 && wide[0] != 0x1A &&
                       wide[0] != 0x04;
                if (more) chunk = detail::narrow(wide, static_cast<int>(n));
            } else {  // a pipe or a file: bytes as they are
                char buf[65536];
                more = ::ReadFile(in, buf, sizeof buf, &n, nullptr) && n > 0;
                chunk.assign(buf, more ? n : 0);
            }
            for (std::size_t sent = 0; more && sent < chunk.size();) {
                int k = ::send(out->get(), chunk.data() + sent, int(chunk.size() - sent), 0);
                if (k <= 0) return 0;  // the reader is gone
                sent += static_cast<std::size_t>(k);
            }
        }
        return 0;  // closing `out` is the end of input for the reader
    }
    Socket from_thread_;
#endif
    std::string buffer_;
    bool ended_ = false;
};

// Writes UTF-8 text to stdout or stderr, flushed, so that every character shows: to a Windows
// console (bytes would show in its code page) as UTF-16, to anything else as bytes.
inline void write_text(std::FILE* stream, std::string_view text) {
#if defined(_WIN32)
    const HANDLE h = ::GetStdHandle(stream == stderr ? STD_ERROR_HANDLE : STD_OUTPUT_HANDLE);
    DWORD mode = 0;
    if ((stream == stdout || stream == stderr) && ::GetConsoleMode(h, &mode)) {
        std::fflush(stream);
        const std::wstring wide = detail::widen(text);
        DWORD written = 0;
        ::WriteConsoleW(h, wide.data(), static_cast<DWORD>(wide.size()), &written, nullptr);
        return;
    }
#endif
    std::fwrite(text.data(), 1, text.size(), stream);
    std::fflush(stream);
}

// ==== 2. Poller: which sockets are ready? epoll on Linux, poll() elsewhere, WSAPoll on Windows. ==
constexpr unsigned want_read = 1;
constexpr unsigned want_write = 2;
struct PollEvent {
    socket_t socket;
    bool readable;  // data, a pending connection, or end-of-stream to read
    bool writable;  // room in the send buffer (or a connect finished)
    bool hangup;    // POLLHUP/POLLERR: the peer is gone or the socket failed; read to learn why
};

// The portable backend, poll() or WSAPoll: O(1) add/modify/remove, wait() O(sockets watched).
class PollPoller {
public:
    PollPoller() { add(wake_.socket(), want_read); }
    std::error_code add(socket_t s, unsigned interest) {
        if (index_.count(s)) return std::make_error_code(std::errc::file_exists);
        index_[s] = fds_.size();
        fds_.push_back(detail::pollfd_t{s, events_for(interest), 0});
        return {};
    }
    std::error_code modify(socket_t s, unsigned interest) {
        auto it = index_.find(s);
        if (it == index_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
        fds_[it->second].events = events_for(interest);
        return {};
    }
    std::error_code remove(socket_t s) {
        auto it = index_.find(s);
        if (it == index_.end()) return std::make_error_code(std::errc::no_such_file_or_directory);
        const std::size_t slot = it->second;
        fds_[slot] = fds_.back();  // the last one fills the hole (or was the one removed)
        index_[fds_[slot].fd] = slot;
        index_.erase(s);
        fds_.pop_back();
        return {};
    }
    // Replaces `events` with what is ready within timeout_ms (-1: no limit); a wake() or a
    // signal returns early, possibly with no events.
    std::error_code wait(std::vector<PollEvent>& events, int timeout_ms) {
        events.clear();
        int n = detail::poll_sockets(fds_.data(), fds_.size(), timeout_ms);
        if (n < 0 && detail::interrupted(detail::last_error())) return {};  // a signal
        if (n < 0) return detail::last_error();
        for (std::size_t i = 0; i < fds_.size() && n > 0; ++i) {
            const auto& p = fds_[i];
            if (p.revents == 0) continue;
            --n;
            if (wake_.absorb(p.fd)) continue;
            events.push_back({p.fd, (p.revents & POLLIN) != 0, (p.revents & POLLOUT) != 0,
                              (p.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0});
        }
        return {};
    }
    // Interrupts a wait from any thread or from a signal handler.
    void wake() noexcept { wake_.signal(); }
    static const char* backend() { return detail::poll_backend; }

private:
    static short events_for(unsigned interest) {
        return static_cast<short>(((interest & want_read) ? POLLIN : 0) |
                                  ((interest & want_write) ? POLLOUT : 0));
    }
    detail::WakeChannel wake_;
    std::vector<detail::pollfd_t> fds_;
    std::unordered_map<socket_t, std::size_t> index_;
};

#if defined(CHATSOCK_HAS_EPOLL)
// Linux: the kernel keeps the interest list, so wait() costs O(ready), not O(watched).
class EpollPoller {
public:
    EpollPoller() : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
        if (!ep_ || add(wake_.socket(), want_read))
            throw std::system_error(detail::last_error(), "chatsock: epoll");
    }
    std::error_code add(socket_t s, unsigned wanted) { return ctl(EPOLL_CTL_ADD, s, wanted); }
    std::error_code modify(socket_t s, unsigned wanted) { return ctl(EPOLL_CTL_MOD, s, wanted); }
    std::error_code remove(socket_t s) { return ctl(EPOLL_CTL_DEL, s, 0); }
    std::error_code wait(std::vector<PollEvent>& events, int timeout_ms) {
        events.clear();
        epoll_event ready[256];
        int n = ::epoll_wait(ep_.get(), ready, 256, timeout_ms);
        if (n < 0) return errno == EINTR ? std::error_code() : detail::last_error();
        for (int i = 0; i < n; ++i) {
            const int fd = ready[i].data.fd;
            const auto e = ready[i].events;
            if (wake_.absorb(fd)) continue;
            events.push_back(
                {fd, (e & EPOLLIN) != 0, (e & EPOLLOUT) != 0, (e & (EPOLLHUP | EPOLLERR)) != 0});
        }
        return {};
    }
    void wake() noexcept { wake_.signal(); }
    static const char* backend() { return "epoll"; }

private:
    std::error_code ctl(int op, socket_t s, unsigned wanted) {
        epoll_event ev{};
        ev.events = ((wanted & want_read) ? EPOLLIN : 0u) | ((wanted & want_write) ? EPOLLOUT : 0u);
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

// ==== 3. Framing and protocol rules: pure functions, no I/O. =====================================
constexpr std::size_t header_size = 10;
namespace detail {
constexpr std::size_t default_max_payload = 64 * 1024;
constexpr std::size_t default_max_name_bytes = 32;

// Appends one frame: the payload length, left-aligned in 10 space-padded ASCII digits, then the
// payload. Throws std::length_error when the length does not fit in 10 digits.
inline void append_frame(std::string& out, std::string_view payload) {
    if (payload.size() > 9'999'999'999ull) throw std::length_error("chatsock: frame too large");
    char header[header_size];
    std::fill(header, header + header_size, ' ');  // left-aligned: digits, then the padding
    std::to_chars(header, header + header_size, static_cast<unsigned long long>(payload.size()));
    out.append(header, header_size);
    out.append(payload.data(), payload.size());
}
}  // namespace detail

inline std::string encode_frame(std::string_view payload) {
    std::string out;
    out.reserve(header_size + payload.size());
    detail::append_frame(out, payload);
    return out;
}

// Reads a frame header: digits, padded with spaces on either side ("12        ", "  12      ").
// Returns false for anything else: signs, letters, inner spaces, an all-space header.
inline bool parse_header(std::string_view header, unsigned long long& length) {
    if (header.size() != header_size) return false;
    const char* p = header.data();
    const char* end = p + header.size();
    while (p < end && *p == ' ') ++p;
    auto [stop, ec] = std::from_chars(p, end, length);  // digits only: no sign, no space
    if (ec != std::errc()) return false;
    while (stop < end && *stop == ' ') ++stop;
    return stop == end;
}

inline bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

namespace detail {
// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 if it is not valid UTF-8
// (overlong forms, surrogates and code points past U+10FFFF are all invalid).
inline std::size_t utf8_sequence(std::string_view s, std::size_t i, char32_t& cp) {
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char b0 = byte(i);
    const std::size_t len = b0 < 0x80           ? 1
                            : (b0 >> 5) == 0x6  ? 2
                            : (b0 >> 4) == 0xE  ? 3
                            : (b0 >> 3) == 0x1E ? 4
                                                : 0;
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

// Chat text is mostly ASCII: validating and escaping skip it eight bytes at a time, a few word
// operations telling whether any byte of a 64-bit word needs a closer look.
inline std::uint64_t load8(const char* p) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
}
constexpr std::uint64_t bytes_of(unsigned char b) { return 0x0101010101010101ull * b; }
constexpr std::uint64_t high_bits = bytes_of(0x80);
constexpr std::uint64_t has_byte_below(std::uint64_t w, unsigned char n) {  // n <= 0x80
    return (w - bytes_of(n)) & ~w & high_bits;
}
constexpr std::uint64_t has_byte(std::uint64_t w, unsigned char b) {
    return has_byte_below(w ^ bytes_of(b), 1);
}

// How many bytes from s[i] on are ASCII.
inline std::size_t ascii_run(std::string_view s, std::size_t i) {
    const std::size_t start = i;
    while (i + 8 <= s.size() && !(load8(s.data() + i) & high_bits)) i += 8;
    while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
    return i - start;
}
// How many bytes from s[i] on printable() copies as they are: ASCII 0x20-0x7E (\ if unescaped).
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

// printable(), written to the end of `out` (no allocation of its own).
inline void append_printable(std::string& out, std::string_view s, bool escape_backslash = false) {
    char hex[8];
    for (std::size_t i = 0, n; i < s.size(); i += n) {
        if ((n = plain_run(s, i, escape_backslash)) > 0) {  // most text: one append
            out.append(s.data() + i, n);
            continue;
        }
        char32_t cp = 0;
        const bool raw = (n = utf8_sequence(s, i, cp)) == 0;  // not UTF-8: show the byte, \xNN
        if (raw) n = 1, cp = static_cast<unsigned char>(s[i]);
        if (cp == '\n') out += "\\n";
        else if (cp == '\r') out += "\\r";
        else if (cp == '\t') out += "\\t";
        else if (cp == '\\' && escape_backslash) out += "\\\\";
        else if (!raw && !is_control(cp)) out.append(s.data() + i, n);
        else {
            std::snprintf(hex, sizeof hex, raw || cp < 0x80 ? "\\x%02x" : "\\u%04x", unsigned(cp));
            out += hex;
        }
    }
}
// Names compare without regard to ASCII case: "Alice" and "alice" are the same user.
inline std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}
}  // namespace detail

inline bool is_valid_utf8(std::string_view s) {
    char32_t cp;
    for (std::size_t i = 0, n; i < s.size(); i += n)
        if ((n = detail::ascii_run(s, i)) == 0 && (n = detail::utf8_sequence(s, i, cp)) == 0)
            return false;
    return true;
}

// Makes received text safe for a terminal or a one-line-per-event file: control characters
// (C0, DEL, C1: they start terminal escapes) and invalid UTF-8 bytes become escapes like \n,
// \x1b, \u009b. With escape_backslash, a backslash is doubled so the escaping can be undone.
inline std::string printable(std::string_view s, bool escape_backslash = false) {
    std::string out;
    out.reserve(s.size());
    detail::append_printable(out, s, escape_backslash);
    return out;
}

// Turns a byte stream, fed in chunks of any size, into whole frames. A bad header or a payload
// over the maximum is a protocol error: the decoder stops and error() says why. An oversized
// payload is refused from its header alone, before any of it is buffered.
class FrameDecoder {
public:
    explicit FrameDecoder(std::size_t max_payload = detail::default_max_payload)
        : max_payload_(max_payload) {}
    // Calls on_frame(payload) for each whole frame, read straight from the chunk (views valid
    // during the call), and keeps only an unfinished last one. on_frame returns false to stop.
    // Returns the bytes used: all, unless it stopped (the rest is the caller's, to keep or drop).
    template <class OnFrame>
    std::size_t decode(const char* data, std::size_t size, OnFrame&& on_frame) {
        const std::size_t all = size;
        if (failed()) return all;
        if (!pending_.empty()) {  // finish the frame begun before: its header, then its payload
            auto take_up_to = [&](std::size_t total) {  // copies only this frame's own bytes
                const std::size_t take = std::min(size, total - std::min(total, pending_.size()));
                pending_.append(data, take);
                data += take, size -= take;
                return pending_.size() >= total;
            };
            std::size_t length = 0;
            if (!take_up_to(header_size) || !frame_length(pending_.data(), length) ||
                !take_up_to(header_size + length))
                return all;  // the chunk is used up (or the header is bad)
            const bool more = on_frame(std::string_view(pending_.data() + header_size, length));
            // An idle connection does not keep a big buffer.
            if (pending_.capacity() > 16384) std::string().swap(pending_);
            else pending_.clear();
            if (!more) return all - size;
        }
        while (size >= header_size) {  // whole frames straight from the chunk
            std::size_t length = 0;
            if (!frame_length(data, length)) return all;
            if (size - header_size < length) break;
            const bool more = on_frame(std::string_view(data + header_size, length));
            data += header_size + length, size -= header_size + length;
            if (!more) return all - size;  // the caller has the rest
        }
        pending_.assign(data, size);  // the start of a frame to finish next time
        return all;
    }
    bool failed() const { return !error_.empty(); }
    const std::string& error() const { return error_; }
    std::size_t buffered() const { return pending_.size(); }  // bytes of an unfinished frame

private:
    // Reads and checks a frame's header: a payload length up to max_payload, or a protocol error.
    bool frame_length(const char* header_bytes, std::size_t& length) {
        const std::string_view header(header_bytes, header_size);
        unsigned long long value = 0;
        if (!parse_header(header, value))
            return fail("bad frame header \"" + printable(header) + "\"");
        if (value > max_payload_)
            return fail("frame of " + std::to_string(value) + " bytes is over the limit of " +
                        std::to_string(max_payload_));
        length = static_cast<std::size_t>(value);
        return true;
    }
    bool fail(std::string why) {
        error_ = std::move(why);
        std::string().swap(pending_);
        return false;
    }
    std::size_t max_payload_;
    std::string pending_;  // the start of a frame that has not arrived whole
    std::string error_;
};

// Checks a username against the rules every chatsock server applies; empty when it is fine,
// otherwise the reason, ready to show to the user. (Uniqueness is the server's to check.)
inline std::string check_username(std::string_view name, std::string_view reserved_name,
                                  std::size_t max_bytes = detail::default_max_name_bytes) {
    if (name.empty()) return "the name is empty";
    if (name.size() > max_bytes)
        return "the name is longer than " + std::to_string(max_bytes) + " bytes";
    if (!is_valid_utf8(name)) return "the name is not valid UTF-8";
    if (printable(name) != name) return "the name contains control characters";  // escaped
    if (name.front() == ' ' || name.back() == ' ') return "the name starts or ends with a space";
    if (detail::ascii_lower(name) == detail::ascii_lower(reserved_name))
        return "the name \"" + std::string(name) + "\" is reserved";
    return {};
}

// ==== 4. Lines and browsers: two more wire formats, and how a connection shows which it speaks ==
// One port serves three kinds of client, told apart by their first bytes (docs/PROTOCOL.md):
// an HTTP request is a browser (the chat page, or a WebSocket); ten bytes of digits and spaces
// are a frame header; anything else (a letter, a newline) is a line client such as nc or telnet.
enum class Wire : unsigned char { unknown, frames, lines, http, websocket };

// The wire a connection speaks from its first bytes, or unknown while more are needed.
inline Wire detect_wire(std::string_view start) {
    static constexpr std::string_view methods[] = {
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "};
    bool maybe_http = false;
    for (std::string_view method : methods) {
        if (start.substr(0, method.size()) != method.substr(0, start.size())) continue;
        if (start.size() >= method.size()) return Wire::http;
        maybe_http = true;  // "GE" may become "GET "
    }
    for (std::size_t i = 0; i < std::min(start.size(), header_size); ++i)
        if (start[i] != ' ' && (start[i] < '0' || start[i] > '9'))
            return maybe_http ? Wire::unknown : Wire::lines;
    return start.size() >= header_size ? Wire::frames : Wire::unknown;
}

// Turns the bytes of nc or telnet into lines: "\n" or "\r\n" ends one, empty lines are skipped,
// telnet's IAC negotiation is dropped (even split across reads). A line over max_line bytes is
// a protocol error, found before the rest of it is buffered.
class LineDecoder {
public:
    explicit LineDecoder(std::size_t max_line = 4096) : max_line_(max_line) {}

    // Calls on_line(line) for each whole line; on_line returns false to stop. Returns the bytes
    // used: all, unless it stopped (the rest is the caller's, to keep or drop).
    template <class OnLine>
    std::size_t decode(const char* data, std::size_t size, OnLine&& on_line) {
        for (std::size_t i = 0; i < size && !failed(); ++i) {
            const unsigned char byte = static_cast<unsigned char>(data[i]);
            switch (telnet_) {
            case Telnet::data:
                if (byte == '\n') {
                    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
                    const bool more = line_.empty() || on_line(std::string_view(line_));
                    if (line_.capacity() > 16384) std::string().swap(line_);
                    else line_.clear();
                    if (!more) return i + 1;
                } else if (byte == 255) {
                    telnet_ = Telnet::command;
                } else {
                    const std::size_t run = plain_bytes(data + i, size - i);
                    append(data + i, run);
                    i += run - 1;
                }
                break;
            case Telnet::command:  // IAC IAC is a data byte 255; WILL, WONT, DO, DONT take one more
                telnet_ = byte >= 251 && byte <= 254 ? Telnet::option
                          : byte == 250              ? Telnet::sub
                                                     : Telnet::data;
                if (byte == 255) append("\xff", 1);
                break;
            case Telnet::option: telnet_ = Telnet::data; break;
            case Telnet::sub: telnet_ = byte == 255 ? Telnet::sub_command : Telnet::sub; break;
            case Telnet::sub_command: telnet_ = byte == 240 ? Telnet::data : Telnet::sub; break;
            }
        }
        return size;
    }
    // The end of the input: a last line without its "\n" still counts.
    template <class OnLine>
    void finish(OnLine&& on_line) {
        telnet_ = Telnet::data;  // an unfinished telnet command ends with the input
        decode("\n", 1, on_line);
    }
    bool failed() const { return !error_.empty(); }
    const std::string& error() const { return error_; }
    std::size_t buffered() const { return line_.size() + (telnet_ != Telnet::data); }

private:
    enum class Telnet : unsigned char { data, command, option, sub, sub_command };
    static std::size_t plain_bytes(const char* p, std::size_t n) {
        std::size_t k = 0;
        while (k < n && p[k] != '\n' && p[k] != '\xff') ++k;
        return k;
    }
    // Adds to the line, never past the limit (plus a '\r' that may end it): over it, fails.
    void append(const char* p, std::size_t n) {
        line_.append(p, std::min(n, max_line_ + 2 - line_.size()));
        if (line_.size() <= max_line_ + (line_.back() == '\r')) return;
        error_ = "line over " + std::to_string(max_line_) + " bytes";
        std::string().swap(line_);
    }
    std::size_t max_line_;
    std::string line_;
    Telnet telnet_ = Telnet::data;
    std::string error_;
};

namespace detail {
// SHA-1 (RFC 3174), only for the WebSocket handshake: no secret depends on it.
inline std::string sha1(std::string_view message) {
    std::uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    std::string m(message);
    const std::uint64_t bits = static_cast<std::uint64_t>(message.size()) * 8;
    m += '\x80';
    while (m.size() % 64 != 56) m += '\0';
    for (int i = 7; i >= 0; --i) m += static_cast<char>(bits >> (8 * i));
    const auto rotl = [](std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
    for (std::size_t block = 0; block < m.size(); block += 64) {
        std::uint32_t w[80];
        for (int t = 0; t < 16; ++t) {
            const auto* p = reinterpret_cast<const unsigned char*>(m.data() + block + 4 * t);
            w[t] = std::uint32_t(p[0]) << 24 | std::uint32_t(p[1]) << 16 | p[2] << 8 | p[3];
        }
        for (int t = 16; t < 80; ++t) w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
        std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int t = 0; t < 80; ++t) {
            std::uint32_t f = b ^ c ^ d, k = t < 40 ? 0x6ED9EBA1 : 0xCA62C1D6;
            if (t < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            if (t >= 40 && t < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            const std::uint32_t next = rotl(a, 5) + f + e + k + w[t];
            e = d, d = c, c = rotl(b, 30), b = a, a = next;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    std::string digest;
    for (std::uint32_t word : h)
        for (int i = 3; i >= 0; --i) digest += static_cast<char>(word >> (8 * i));
    return digest;
}

inline std::string base64(std::string_view bytes) {
    static constexpr char digits[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (std::size_t i = 0; i < bytes.size(); i += 3) {
        const std::size_t n = std::min<std::size_t>(3, bytes.size() - i);
        std::uint32_t v = 0;
        for (std::size_t k = 0; k < 3; ++k)
            v = v << 8 | (k < n ? static_cast<unsigned char>(bytes[i + k]) : 0u);
        for (std::size_t k = 0; k < 4; ++k) out += k <= n ? digits[(v >> (18 - 6 * k)) & 63] : '=';
    }
    return out;
}
}  // namespace detail

// Turns a browser's WebSocket frames (RFC 6455) into whole text messages, put together from
// fragments within max_message bytes. Client frames must be masked. A frame that announces more
// than the limit is refused from its header, before any of it is buffered. On an error the
// decoder stops; error() says why and close_code() is the code a close frame carries (1002
// protocol error, 1003 binary data, 1007 invalid UTF-8, 1009 too big).
class WebSocketDecoder {
public:
    enum Opcode : unsigned char { continuation = 0, text = 1, binary = 2, close = 8, ping, pong };
    explicit WebSocketDecoder(std::size_t max_message = detail::default_max_payload)
        : max_message_(max_message) {}

    // Calls on_message(text) for each whole text message and on_control(opcode, payload) for a
    // close, a ping or a pong; each returns false to stop (the rest waits for the next call).
    template <class OnMessage, class OnControl>
    void decode(const char* data, std::size_t size, OnMessage&& on_message,
                OnControl&& on_control) {
        if (failed()) return;
        pending_.append(data, size);
        std::size_t used = 0;
        for (bool more = true; more && !failed();) {
            const std::size_t frame = frame_size(used);
            if (frame == 0) break;  // not all there yet (or refused)
            more = take_frame(used, frame, on_message, on_control);
            used += frame;
        }
        if (failed()) return std::string().swap(pending_);
        pending_.erase(0, used);
        if (pending_.empty() && pending_.capacity() > 16384) std::string().swap(pending_);
    }
    bool failed() const { return code_ != 0; }
    const std::string& error() const { return error_; }
    std::uint16_t close_code() const { return code_; }
    std::size_t buffered() const { return pending_.size() + message_.size(); }

private:
    // The size of the whole frame starting at pending_[at], or 0 while it has not all arrived.
    std::size_t frame_size(std::size_t at) {
        const std::size_t have = pending_.size() - at;
        if (have < 2) return 0;
        const auto byte = [&](std::size_t k) {
            return static_cast<unsigned char>(pending_[at + k]);
        };
        const unsigned op = byte(0) & 0x0F, length7 = byte(1) & 0x7F;
        if (byte(0) & 0x70) return fail(1002, "reserved bits set");
        if (!(byte(1) & 0x80)) return fail(1002, "an unmasked client frame");
        if (op >= close && (!(byte(0) & 0x80) || length7 > 125))
            return fail(1002, "a fragmented or oversized control frame");
        if (op == binary) return fail(1003, "binary messages are not accepted");
        if ((op > binary && op < close) || op > pong) return fail(1002, "an unknown opcode");
        if (op < close && (op == continuation) != in_message_)
            return fail(1002, in_message_ ? "a new message inside a fragmented one"
                                          : "a continuation of nothing");
        const std::size_t extra = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
        if (have < 2 + extra) return 0;
        std::uint64_t length = length7;
        if (extra) length = 0;
        for (std::size_t k = 0; k < extra; ++k) length = length << 8 | byte(2 + k);
        if (op < close && length > max_message_ - message_.size())
            return fail(1009, "a message over " + std::to_string(max_message_) + " bytes");
        const std::size_t total = 2 + extra + 4 + static_cast<std::size_t>(length);
        return have < total ? 0 : total;
    }
    template <class OnMessage, class OnControl>
    bool take_frame(std::size_t at, std::size_t frame, OnMessage& on_message,
                    OnControl& on_control) {
        const char* p = pending_.data() + at;
        const bool fin = static_cast<unsigned char>(p[0]) & 0x80;
        const unsigned op = p[0] & 0x0F, length7 = p[1] & 0x7F;
        const std::size_t start = 2 + (length7 == 126 ? 2 : length7 == 127 ? 8 : 0) + 4;
        std::string control;  // a control frame's payload, kept apart from a message's fragments
        std::string& into = op >= close ? control : message_;
        const std::size_t from = into.size();
        into.append(p + start, frame - start);
        for (std::size_t k = from; k < into.size(); ++k) into[k] ^= p[start - 4 + (k - from) % 4];
        if (op >= close) return on_control(static_cast<Opcode>(op), std::string_view(control));
        in_message_ = !fin;
        if (in_message_) return true;
        if (!is_valid_utf8(message_)) return fail(1007, "a text message that is not UTF-8");
        const bool more = on_message(std::string_view(message_));
        message_.clear();
        return more;
    }
    std::size_t fail(std::uint16_t code, std::string why) {
        if (!code_) code_ = code, error_ = std::move(why);
        std::string().swap(message_);
        return 0;
    }
    std::size_t max_message_;
    std::string pending_;  // frames not yet whole
    std::string message_;  // the fragments so far of an unfinished message
    bool in_message_ = false;
    std::uint16_t code_ = 0;
    std::string error_;
};

namespace detail {
// One server frame: unmasked, final, with its length in 7, 16 or 64 bits.
inline void append_websocket_frame(std::string& out, unsigned opcode, std::string_view payload) {
    out += static_cast<char>(0x80 | opcode);
    const std::uint64_t n = payload.size();
    const int extra = n < 126 ? 0 : n <= 0xFFFF ? 2 : 8;
    out += static_cast<char>(extra == 0 ? n : extra == 2 ? 126 : 127);
    for (int k = extra - 1; k >= 0; --k) out += static_cast<char>(n >> (8 * k));
    out.append(payload.data(), payload.size());
}
inline std::string websocket_close(std::uint16_t code) {
    const char status[2] = {static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
    std::string frame;
    append_websocket_frame(frame, WebSocketDecoder::close, std::string_view(status, 2));
    return frame;
}

// A JSON string: quotes, backslashes and control characters escaped; invalid UTF-8 as U+FFFD.
inline void append_json_string(std::string& out, std::string_view s) {
    out += '"';
    char32_t cp = 0;
    for (std::size_t i = 0, n; i < s.size(); i += n) {
        n = utf8_sequence(s, i, cp);
        if (n == 0) n = 1, out += "\\ufffd";
        else if (cp == '"' || cp == '\\') out += '\\', out += static_cast<char>(cp);
        else if (cp >= 0x20) out.append(s.data() + i, n);
        else {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\u%04x", unsigned(cp));
            out += hex;
        }
    }
    out += '"';
}

constexpr std::size_t max_http_request = 8192;  // request line and headers, in bytes

// A complete HTTP/1.1 response that closes the connection.
inline std::string http_response(std::string_view status, std::string_view type,
                                 std::string_view body, std::string_view headers = {}) {
    std::string out = "HTTP/1.1 ";
    out.append(status).append("\r\nContent-Type: ").append(type);
    out.append("\r\nContent-Length: ").append(std::to_string(body.size()));
    out.append("\r\nConnection: close\r\nCache-Control: no-store\r\n").append(headers);
    return out.append("\r\n").append(body);
}
inline std::string http_error(std::string_view status, std::string_view headers = {}) {
    return http_response(status, "text/plain; charset=utf-8", std::string(status) + "\n", headers);
}

// The value of an HTTP header in a request ("" when absent); names ignore case.
inline std::string_view header_value(std::string_view request, std::string_view name) {
    for (std::size_t at = request.find('\n'); at != std::string_view::npos;) {
        const std::size_t end = std::min(request.find('\n', at + 1), request.size());
        std::string_view line = request.substr(at + 1, end - at - 1);
        at = end < request.size() ? end : std::string_view::npos;
        const std::size_t colon = line.find(':');
        if (colon == std::string_view::npos || ascii_lower(line.substr(0, colon)) != name) continue;
        line.remove_prefix(colon + 1);
        while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
            line.remove_prefix(1);
        while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r'))
            line.remove_suffix(1);
        return line;
    }
    return {};
}
// Whether a comma-separated header value holds `token`, in any case ("keep-alive, Upgrade").
inline bool has_token(std::string_view value, std::string_view token) {
    const std::string lower = ascii_lower(value);
    for (std::size_t at = lower.find(token); at != std::string::npos;
         at = lower.find(token, at + 1)) {
        const std::size_t end = at + token.size();
        const auto edge = [&](std::size_t k) {
            return lower[k] == ',' || lower[k] == ' ' || lower[k] == '\t';
        };
        if ((at == 0 || edge(at - 1)) && (end == lower.size() || edge(end))) return true;
    }
    return false;
}

// What a whole HTTP request asks for: `response` is what to send; `upgrade` when it is a valid
// WebSocket handshake for the chat (the connection then speaks WebSocket), else the connection
// closes once `response` is sent. `page` is the chat page's HTML.
struct HttpAnswer {
    std::string response;
    bool upgrade = false;
};
inline HttpAnswer answer_http(std::string_view request, std::string_view page) {
    using detail::http_error;
    const std::size_t line_end = request.find_first_of("\r\n");
    const std::string_view line = request.substr(0, line_end);
    const std::size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 <= sp1 || line.substr(sp2 + 1, 7) != "HTTP/1.")
        return {http_error("400 Bad Request")};
    if (line.substr(0, sp1) != "GET")
        return {http_error("405 Method Not Allowed", "Allow: GET\r\n")};
    const std::string_view path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (path != "/" && path != "/index.html") return {http_error("404 Not Found")};
    if (!detail::has_token(detail::header_value(request, "upgrade"), "websocket"))
        return {detail::http_response("200 OK", "text/html; charset=utf-8", page)};
    if (detail::header_value(request, "sec-websocket-version") != "13")
        return {http_error("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n")};
    const std::string_view key = detail::header_value(request, "sec-websocket-key");
    const bool key_ok =
        key.size() == 24 && key.substr(22) == "==" &&
        key.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") ==
            22;
    if (!key_ok || !detail::has_token(detail::header_value(request, "connection"), "upgrade"))
        return {http_error("400 Bad Request")};
    const std::string accept =
        detail::base64(detail::sha1(std::string(key) + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"));
    return {
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: " +
            accept + "\r\n\r\n",
        true};
}

// The chat page a browser gets at "/": it joins the room over a WebSocket on this same port.
inline constexpr std::string_view chat_page = R"chatsock(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>chatsock</title>
<style>
  /* One column that fits a phone: the log takes whatever height the forms leave. */
  html, body { height: 100%; margin: 0; box-sizing: border-box; }
  body { display: flex; flex-direction: column; max-width: 42rem; margin: 0 auto;
         padding: .75rem; font: 16px/1.4 system-ui, sans-serif; background: #f6f7f9; }
  h1 { font-size: 1.25rem; margin: 0; }
  #status { color: #667; font-size: .9rem; margin: .1rem 0 .5rem; }
  #log { flex: 1; overflow-y: auto; padding: .5rem .75rem; background: #fff;
         border: 1px solid #dde; border-radius: 8px; }
  /* pre-wrap keeps a message's spaces; anywhere breaks a long word instead of widening. */
  .msg, .notice { margin: .2rem 0; white-space: pre-wrap; overflow-wrap: anywhere; }
  .msg b { color: #2456b3; } .mine b { color: #1f7a3f; }
  .notice { color: #778; font-style: italic; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  input, button { font: inherit; padding: .45rem .75rem; border-radius: 8px; }
  input { flex: 1; min-width: 0; border: 1px solid #bbc; }
  input:focus { outline: 2px solid #2456b3; outline-offset: -1px; }
  button { border: 0; background: #2456b3; color: #fff; }
  button:disabled { background: #99a; }
  [hidden] { display: none; } /* beats "form { display: flex }" above */
</style>
</head>
<body>
<h1>chatsock</h1>
<div id="status">not connected</div>
<div id="log" aria-live="polite"></div>
<!-- Forms, so that Enter submits them: the browser does that for us. -->
<form id="join-form">
  <input id="name" placeholder="your name" autocomplete="nickname" autofocus>
  <button id="join">Join</button>
</form>
<form id="chat-form" hidden>
  <input id="text" placeholder="say something" autocomplete="off">
  <button id="send">Send</button>
</form>
<script>
const $ = (id) => document.getElementById(id);
let ws = null, me = "";  // the WebSocket while there is one; our name, for our own lines

// One chat event = one line in #log. Received text only ever goes through textContent
// (never innerHTML), so a message like "<img onerror=...>" shows as the text it is.
function show(kind, from, text) {
  const line = document.createElement("div");
  line.className = kind;
  if (kind === "notice") {
    line.textContent = "* " + text;
  } else {
    const who = document.createElement("b");
    who.textContent = from;
    line.append(who, ": " + text);  // append() turns a string into a text node
  }
  $("log").append(line);
  $("log").scrollTop = $("log").scrollHeight;  // keep the newest line in view
}
function joined(yes) {
  $("join-form").hidden = yes;
  $("chat-form").hidden = !yes;
  $(yes ? "text" : "name").focus();
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();  // a form would reload the page; we only want its Enter key
  me = $("name").value.trim();
  if (!me || ws) return;
  // The chat is on this page's own port: ws:// here, wss:// if a proxy serves us https.
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + "/");
  $("join").disabled = true;
  $("status").textContent = "connecting...";
  ws.onopen = () => {
    ws.send(me);  // the first text message is our name; the server answers with a notice
    $("status").textContent = "connected as " + me;
    joined(true);
  };
  // The server sends one JSON object per message: {"from", "text"} and, for its own
  // notices (welcome, joined, left, refusals), "notice": true.
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    show(m.notice ? "notice" : "msg", m.from, m.text);
  };
  ws.onclose = (event) => {
    const why = event.reason || (event.code === 1000 ? "" : "code " + event.code);
    $("status").textContent = "disconnected" + (why ? ": " + why : "");
    show("notice", "", "connection closed" + (why ? " (" + why + ")" : ""));
    ws = null; $("join").disabled = false;
    joined(false);  // so one can join again, perhaps under another name
  };
});

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(text);
  show("msg mine", me, text);  // the server relays to the others only, so show it here
  $("text").value = "";
});
</script>
</body>
</html>
)chatsock";
}  // namespace detail

// ==== 5. Buffers: shared outgoing frames, per-connection output queues, the conversation log. ====
// Frames encoded once and shared by every recipient's queue: a broadcast to 1,000 clients
// costs one encoding and 1,000 reference counts, not 1,000 copies.
using SharedBytes = std::shared_ptr<const std::string>;
// One relayed message as it goes on the wire: the sender's name frame, then the text frame.
inline SharedBytes encode_message(std::string_view from, std::string_view text) {
    auto bytes = std::make_shared<std::string>();
    bytes->reserve(2 * header_size + from.size() + text.size());
    detail::append_frame(*bytes, from);
    detail::append_frame(*bytes, text);
    return bytes;
}

namespace detail {
// One chat event in each wire format, each encoded at most once and shared by every recipient
// that speaks it: frames (sender, text), a line ("alice: hi", "* notice") or a WebSocket JSON text.
class Outgoing {
public:
    Outgoing(std::string_view from, std::string_view text, bool notice)
        : from_(from), text_(text), notice_(notice) {}
    const SharedBytes& as(Wire wire) {  // (a connection not yet decided gets frames)
        const int slot = wire == Wire::lines ? 1 : wire == Wire::websocket ? 2 : 0;
        if (!encoded_[slot]) encoded_[slot] = slot ? encode(wire) : encode_message(from_, text_);
        return encoded_[slot];
    }

private:
    SharedBytes encode(Wire wire) const {
        auto out = std::make_shared<std::string>();
        if (wire == Wire::lines) {  // through printable(): no peer can send escapes to a terminal
            if (notice_) *out += "* ";
            else append_printable(*out, from_), *out += ": ";
            append_printable(*out, text_);
            *out += "\r\n";
            return out;
        }
        std::string json;
        json.reserve(32 + from_.size() + text_.size());
        json += "{\"from\":";
        append_json_string(json, from_);
        json += ",\"text\":";
        append_json_string(json, text_);
        json += notice_ ? ",\"notice\":true}" : "}";
        append_websocket_frame(*out, WebSocketDecoder::text, json);
        return out;
    }
    std::string_view from_, text_;
    bool notice_;
    SharedBytes encoded_[3];  // frames, lines, websocket
};
}  // namespace detail

// What a connection still has to send, in one vectored send per call. The chunks live in a
// vector read from `head_` on, so a queue that keeps being filled and drained allocates nothing.
class OutputQueue {
public:
    void push(SharedBytes bytes) {
        if (bytes->empty()) return;
        bytes_ += bytes->size();
        chunks_.push_back(std::move(bytes));
    }
    bool empty() const { return head_ == chunks_.size(); }
    std::size_t size_bytes() const { return bytes_ - offset_; }
    // Sends what the socket takes now. An error only for a broken connection, not a full one.
    std::error_code write_to(socket_t s) {
        while (!empty()) {
            detail::IoBuffer buffers[detail::max_send_buffers];
            std::size_t count = 0;
            for (std::size_t i = head_; i < chunks_.size() && count < detail::max_send_buffers;
                 ++i, ++count) {
                const std::size_t skip = count == 0 ? offset_ : 0;
                buffers[count] =
                    detail::io_buffer(chunks_[i]->data() + skip, chunks_[i]->size() - skip);
            }
            std::error_code ec;
            const std::size_t sent = detail::send_buffers(s, buffers, count, ec);
            if (ec) return detail::would_block(ec) ? std::error_code() : ec;
            consume(sent);
            if (count < detail::max_send_buffers && !empty()) return {};  // the socket is full
        }
        return {};
    }

private:
    void consume(std::size_t n) {
        offset_ += n;
        while (!empty() && offset_ >= chunks_[head_]->size()) {
            offset_ -= chunks_[head_]->size();
            bytes_ -= chunks_[head_]->size();
            chunks_[head_++].reset();
        }
        if (empty()) {
            // Keeps room for one full writev; gives a bigger vector back (idle clients are cheap).
            if (chunks_.capacity() > detail::max_send_buffers) chunks_ = {};
            else chunks_.clear();
            head_ = 0;
        } else if (head_ >= 64 && head_ * 2 >= chunks_.size()) {  // a slow reader: reclaim
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
// One end of a chat connection, the server's or the client's: socket, decoder, output queue.
struct Link {
    explicit Link(std::size_t max_payload = default_max_payload) : input(max_payload) {}
    Socket socket;
    FrameDecoder input;
    OutputQueue output;
    bool write_interest = false;  // the poller watches for writability: output is waiting
    bool paused = false;          // not read for now (flood control)
    bool sent_eof = false;        // our side is shut down (shutdown_send)
    bool peer_finished = false;   // the peer's side is: end-of-stream was read
    // Sends what the socket takes now and, when `finishing` and all is sent, shuts our side
    // down. The poller watches for writability exactly while output waits.
    std::error_code send_queued(Poller& poller, bool finishing) {
        if (auto ec = output.write_to(socket.get())) return ec;
        if (finishing && output.empty() && !std::exchange(sent_eof, true))
            shutdown_send(socket.get());
        if (std::exchange(write_interest, !output.empty()) != write_interest) watch(poller);
        return {};
    }
    void watch(Poller& poller) const {
        poller.modify(socket.get(), (peer_finished || paused ? 0 : want_read) |
                                        (write_interest ? want_write : 0));
    }
};
}  // namespace detail

// The conversation log: one line per event, tab-separated, appended as events happen:
//   2026-11-25T03:39:03.123Z<TAB>message<TAB>alice<TAB>hello\tworld
// Fields are escaped with printable(..., true): no text can forge a line or carry terminal
// escapes. A loop turn's lines, with one timestamp, go to the OS in one write before any message
// of that turn is sent on, so a crash never loses a delivered line.
class ConversationLog {
public:
    std::error_code open(const std::string& path) {
        std::error_code ec;
        path_ = path;
        file_.reset(detail::open_append(path, ec));
        return ec;
    }
    void add(std::string_view event, std::string_view who, std::string_view text) {
        if (!file_) return;
        if (pending_.empty()) stamp_batch();
        pending_.append(time_).append(1, '\t').append(event).append(1, '\t');
        detail::append_printable(pending_, who, true);
        pending_ += '\t';
        detail::append_printable(pending_, text, true);
        pending_ += '\n';
    }
    // Writes the collected lines. A failure is reported once; the chat goes on without the log.
    void flush(const std::function<void(std::string_view)>& report) {
        if (pending_.empty()) return;
        const bool written =
            std::fwrite(pending_.data(), 1, pending_.size(), file_.get()) == pending_.size();
        const std::error_code ec(written ? 0 : errno, std::generic_category());
        pending_.clear();
        if (!written && !failed_ && report)
            report("cannot write the conversation log " + path_ + ": " + ec.message());
        failed_ = !written;
    }

private:
    // One reading of the clock per batch, formatted once per millisecond: a busy server has
    // many batches in each.
    void stamp_batch() {
        const auto now = std::chrono::system_clock::now();
        const auto ms = std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count();
        if (ms != time_ms_) time_ = detail::utc_timestamp(now);
        time_ms_ = ms;
    }
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file_{nullptr, std::fclose};
    std::string path_;
    std::string pending_;  // this batch's lines
    std::string time_;     // this batch's timestamp, "2026-11-25T03:39:03.123Z"
    long long time_ms_ = -1;
    bool failed_ = false;
};

// ==== 6. Server ==================================================================================
class Server;
namespace detail {
inline std::atomic<Server*> ctrl_c_target{nullptr};  // see stop_on_ctrl_c()
}

using ClientId = std::uint64_t;  // unique for the server's lifetime; never reused
constexpr ClientId no_client = 0;
struct ServerOptions {
    std::string host = "127.0.0.1";      // "::" for every IPv6 and IPv4 address
    std::uint16_t port = 1234;           // 0: the OS picks one; read it back with port()
    std::string log_path;                // conversation log; empty: none
    std::string server_name = "server";  // reserved sender name of server notices
    std::size_t max_payload = detail::default_max_payload;
    std::size_t max_name_bytes = detail::default_max_name_bytes;
    std::size_t max_line = 4096;        // a line client's longest line (never over max_payload)
    bool web = true;                    // the chat page and WebSocket clients, on this same port
    std::size_t max_clients = 10000;    // more are told so and closed; fitted to `ulimit -n`
    std::size_t announce_up_to = 1000;  // joins and leaves are announced up to this many users
    milliseconds handshake_timeout{10000};     // to send a username after connecting
    milliseconds frame_timeout{30000};         // for a frame to arrive whole once it has begun
    std::size_t output_hard_limit = 8u << 20;  // queued bytes: over it, disconnect at once
    std::size_t output_soft_limit = 1u << 20;  // over it for soft_limit_time: disconnect
    milliseconds soft_limit_time{10000};
    milliseconds stop_drain_time{2000};  // stop(): time for queued output to reach clients
    milliseconds accept_pause{100};      // out of file descriptors: pause accepting this long
    bool exit_when_empty = false;        // run() returns once the last user has left
    std::size_t history = 20;            // recent messages replayed to a newcomer; 0: none
    // Flood control, by back-pressure (docs/PROTOCOL.md, "Flood control"): a client is not read
    // while it is over its budget, or while a recipient that is still reading has more than
    // room_pressure bytes queued. TCP slows the sender down; nothing is lost. 0: a rule is off.
    std::size_t flood_messages = 500;        // a client's budget: messages a second ...
    std::size_t flood_bytes = 2u << 20;      // ... and bytes a second,
    milliseconds flood_burst{1000};          // with bursts of this long's worth
    std::size_t room_pressure = 256u << 10;  // queued bytes (and 64 KiB in the kernel at most)
    milliseconds slow_down_after{2000};      // held back this long: one "slow down: ..." notice
    // Per-address caps, off by default (a classroom shares one address): connections at once,
    // and new connections a second. Excess connections are told why, then closed.
    std::size_t max_per_address = 0;
    std::size_t new_per_address = 0;
    void no_flood_control() { flood_messages = flood_bytes = room_pressure = 0; }
    // One line per event for a human (listening, joins, refusals, errors); nullptr: silence.
    std::function<void(std::string_view line)> diagnostics = [](std::string_view line) {
        write_text(stderr, "chatsock: " + std::string(line) + "\n");
    };
};

// What callbacks learn about a client.
struct ClientInfo {
    ClientId id;
    std::string name;           // the username once joined; empty before
    std::string peer;           // "127.0.0.1:50312"
    Wire wire = Wire::unknown;  // frames, lines or websocket, once its first bytes have said
};

class Server {
public:
    explicit Server(ServerOptions options = {}) : options_(std::move(options)) {
        watch_above_ = std::min(options_.output_soft_limit, options_.output_hard_limit);
        if (options_.room_pressure) watch_above_ = std::min(watch_above_, options_.room_pressure);
    }
    ~Server() {
        Server* self = this;  // a late Ctrl+C must not reach a destroyed server
        detail::ctrl_c_target.compare_exchange_strong(self, nullptr);
    }
    // Called on the loop's thread. Callbacks may call send_to, broadcast and disconnect.
    std::function<void(const ClientInfo&)> on_join;
    // May rewrite `text`; return false to drop the message (nobody receives it, nothing is logged).
    std::function<bool(const ClientInfo&, std::string& text)> on_message;
    std::function<void(const ClientInfo&, std::string_view reason)> on_leave;
    // Opens the listening socket, then the log; port() is then known. On failure, *attempt (when
    // given) says what failed: "cannot listen on 127.0.0.1:1234".
    std::error_code listen(std::string* attempt = nullptr) {
        fit_descriptor_limit();
        std::error_code ec;
        listener_ = listen_tcp(options_.host, options_.port, ec);
        if (ec && attempt)
            *attempt = "cannot listen on " + address_of(options_.host, options_.port);
        if (ec) return ec;
        if (!options_.log_path.empty() && (ec = log_.open(options_.log_path))) {
            if (attempt) *attempt = "cannot open the conversation log " + options_.log_path;
            listener_.close();
            return ec;
        }
        if ((ec = poller_.add(listener_.get(), want_read))) return ec;
        listening_ = true;
        say("listening on " + address_of(options_.host, port()) + " (" + Poller::backend() + ")");
        return {};
    }
    std::uint16_t port() const { return local_port(listener_.get()); }
    // Serves until stop() (or exit_when_empty's last leave), then says goodbye, drains, closes.
    std::error_code run() {
        if (auto ec = listening_ ? std::error_code() : listen()) return ec;
        while (!stop_requested_.load() && !(options_.exit_when_empty && had_users_ && joined_ == 0))
            if (auto ec = run_once(milliseconds(-1))) return ec;
        shut_down();
        return {};
    }
    // One turn of the event loop, for programs with their own: waits up to max_wait (-1: no
    // limit) for sockets and deadlines, then handles everything ready.
    std::error_code run_once(milliseconds max_wait) {
        if (auto ec = poller_.wait(events_, next_timeout(max_wait))) return ec;
        now_ = Clock::now();  // the turn's time: for flood control, not for the log
        for (const PollEvent& ev : events_) {
            if (ev.socket == listener_.get()) accept_all();
            auto it = connections_.find(ev.socket);  // the listener is not a connection
            if (it == connections_.end() || it->second->dead) continue;
            Connection& c = *it->second;
            reading_ = &c;  // whose input the relays of this read come from
            if (ev.readable || ev.hangup) read_from(c, ev.hangup);
            reading_ = nullptr;
            if (ev.writable && !c.dead) mark_dirty(c);
        }
        catch_up_resumed();
        run_posted();  // what other threads asked for
        check_deadlines();
        finish_iteration();
        return {};
    }
    // Asks run() to finish. Safe from a signal handler and from any thread.
    void stop() noexcept {
        stop_requested_.store(true);
        poller_.wake();
    }
    // Runs `task` on the loop's thread, soon: safe from any thread (a game loop, a timer). Tasks
    // run in the order posted. Once stop() has been called, returns false and drops the task.
    bool post(std::function<void()> task) {
        bool first = false;
        {
            detail::Locked hold(posted_lock_);
            if (stop_requested_.load()) return false;
            first = posted_.empty();
            posted_.push_back(std::move(task));
        }
        // The loop may be asleep in its wait. One wake per batch: the loop empties the wake
        // channel before it takes the list, so a task behind the first is taken with it.
        if (first) poller_.wake();
        return true;
    }
    // Sends one message to one client (from the server's name unless `from` is given).
    void send_to(ClientId id, std::string_view text, std::string_view from = {}) {
        if (Connection* c = live(id)) enqueue(*c, event(from, text).as(c->info.wire));
    }
    // Sends one message to every joined client except `except`. A message with a sender is
    // one of the room's: newcomers get it in the history too.
    void broadcast(std::string_view text, std::string_view from = {}, ClientId except = no_client) {
        relay(event(from, text), except);
        if (!from.empty()) remember(from, text);
    }
    // Closes a client's connection after telling it why.
    void disconnect(ClientId id, std::string_view reason) {
        if (Connection* c = live(id)) refuse(*c, std::string(reason));
    }
    // Renames a joined user, under the rules of a name at join; returns why not (empty: done).
    // The log records it; telling the room is the caller's policy (see enable_commands).
    std::string rename(ClientId id, const std::string& name) {
        Connection* c = live(id);
        if (!c || c->state != State::joined) return "no such user";
        const std::string problem = name_problem(name, c->info.name);
        if (!problem.empty()) return problem;
        names_in_use_.erase(detail::ascii_lower(c->info.name));
        names_in_use_.insert(detail::ascii_lower(name));
        log_.add("nick", c->info.name, name);
        c->info.name = name;
        return {};
    }
    // Adds an event of the program's own to the conversation log (a command's private message).
    void log_event(std::string_view kind, std::string_view who, std::string_view text) {
        log_.add(kind, who, text);
    }

    std::size_t client_count() const { return joined_; }  // joined users
    // Users of this room served elsewhere (a cluster's other nodes): counted in the welcome's
    // "N other users online" and against announce_up_to, as if they were here.
    void set_users_elsewhere(std::size_t count) { users_elsewhere_ = count; }
    std::size_t connection_count() const { return connections_.size(); }
    std::vector<ClientInfo> clients() const {
        std::vector<ClientInfo> out;
        for (const auto& group : members_)
            for (const Connection* c : group) out.push_back(c->info);
        return out;
    }
    const ServerOptions& options() const { return options_; }

private:
    // A connection's life, one state at a time:
    //
    //   accept ──► naming ──name accepted──► joined
    //                │                          │ refuse(): told why   peer_finished(): its
    //                │ refuse(): told why       │ (leave_room)         EOF (leave_room)
    //                ▼                          ▼
    //              closing: its queue drains, then our side shuts down; closed once the peer
    //                │       closes too, or at its deadline (1 s)
    //                ▼
    //              dead ◄── close_now() from any state: a reset, an error, a limit
    //                       (a joined user leaves the room first); removed at the end of the turn
    enum class State { naming, joined, closing };
    // The decoders of the other wire formats, made only for the connections that speak them.
    struct OtherWire {
        LineDecoder lines;
        WebSocketDecoder websocket;
        std::string request;  // an HTTP request, until it is whole
    };
    static constexpr Clock::time_point never = Clock::time_point::max();
    struct Connection : detail::Link {
        explicit Connection(std::size_t max_payload) : Link(max_payload) {}
        ClientInfo info;
        State state = State::naming;
        Clock::time_point state_until;          // naming: for the name; closing: for the peer
        Clock::time_point frame_until = never;  // a frame has begun: when it must be whole
        Clock::time_point soft_until = never;   // over the soft limit: when it must be back under
        Clock::time_point deadline = never;     // its entry in deadlines_, if any
        // Flood control: its budget, holds, and whether it has been told to slow down.
        Clock::time_point messages_due, bytes_due;  // when its buckets would be full (GCRA)
        Clock::time_point budget_until = never;     // over its budget: not read until then
        Clock::time_point held_since = never;       // a streak of holds began
        Clock::time_point progress_at;              // its socket last took bytes
        bool room_held = false;                     // not read until a recipient's queue drains
        std::vector<ClientId> holding;              // senders not read until its own queue drains
        Clock::time_point told_at = Clock::time_point::min();  // its last "slow down" notice
        bool unwatched = false;                                // see stop_watching()
        std::string unread;   // input read, not yet decoded: it was paused (see catch_up())
        std::string address;  // its peer's address, when per-address caps count it
        std::string refusal;  // refused as it arrived: why (see refuse_on_arrival())
        const char* refusal_status = nullptr;  // and the HTTP status, should it be a browser
        bool dirty = false;                    // has output to try at the end of this turn
        bool dead = false;                     // to be closed at the end of this turn
        std::string leave_reason;
        std::size_t member_slot = 0;       // index in its group of members_ when joined
        std::string first_bytes;           // while its wire is unknown
        std::unique_ptr<OtherWire> other;  // made for a client that does not speak frames
    };
    void say(const std::string& line) const {
        if (options_.diagnostics) options_.diagnostics(line);
    }
    // A message from `from`; a notice from the server when it is empty or the server's name.
    detail::Outgoing event(std::string_view from, std::string_view text) const {
        const bool notice = from.empty() || from == options_.server_name;
        return detail::Outgoing(notice ? std::string_view(options_.server_name) : from, text,
                                notice);
    }
    static std::string address_of(const std::string& host, std::uint16_t port) {
        const bool v6 = host.find(':') != std::string::npos;
        return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
    }
    Connection* live(ClientId id) {
        auto it = by_id_.find(id);
        return it == by_id_.end() || it->second->dead ? nullptr : it->second;
    }
    // Like Redis: make room for max_clients descriptors or accept fewer clients, so that the
    // last ones are told "the server is full" instead of failing to accept.
    void fit_descriptor_limit() {
        constexpr std::size_t reserve = 32;  // listener, log, poller, wake pipe, stdio, a spare
        const std::size_t limit = detail::raise_descriptor_limit(options_.max_clients + reserve);
        if (limit >= options_.max_clients + reserve) return;
        const std::size_t fits = limit > 2 * reserve ? limit - reserve : limit / 2;
        say("the descriptor limit (ulimit -n) is " + std::to_string(limit) + ": accepting " +
            std::to_string(fits) + " clients, not max_clients " +
            std::to_string(options_.max_clients));
        options_.max_clients = fits;
    }
    // ---- accepting ------------------------------------------------------------------------
    void accept_all() {
        std::error_code ec;
        std::string peer;
        for (int i = 0; i < 256; ++i) {  // bounded, so a connection storm cannot starve the chat
            Socket s = accept_tcp(listener_.get(), ec, &peer);
            if (!s) break;
            accept_paused_logged_ = false;
            add_connection(std::move(s), std::move(peer));
        }
        if (detail::out_of_descriptors(ec)) {
            // The listener stays readable and the loop would spin: stop watching it a while.
            if (!std::exchange(accept_paused_logged_, true))
                say("cannot accept: " + ec.message() + "; pausing accepts");
            deadlines_.insert({Clock::now() + options_.accept_pause, no_client});
            poller_.modify(listener_.get(), 0);
        } else if (ec && !detail::would_block(ec)) {
            say("accept failed: " + ec.message());
        }
    }
    void add_connection(Socket s, std::string peer) {
        const socket_t fd = s.get();
        auto c = std::make_unique<Connection>(options_.max_payload);
        c->socket = std::move(s);
        c->info = ClientInfo{next_id_++, std::string(), std::move(peer)};
        c->state_until = Clock::now() + options_.handshake_timeout;
        c->progress_at = now_;
        if (auto ec = poller_.add(fd, want_read))
            return say("cannot watch " + c->info.peer + ": " + ec.message());
        if (options_.room_pressure) detail::limit_unsent(fd, 64 << 10);
        Connection& ref = *c;
        by_id_[ref.info.id] = &ref;
        connections_[fd] = std::move(c);
        schedule(ref);  // the handshake's deadline
        if (connections_.size() > options_.max_clients) {
            log_.add("refused", ref.info.peer, "server full");
            const std::string why = std::to_string(options_.max_clients) + " clients";
            refuse_on_arrival(ref, "the server is full (" + why + ")", "503 Service Unavailable");
        } else if (options_.max_per_address || options_.new_per_address) {
            std::string problem = count_address(ref);
            if (problem.empty()) return;
            log_.add("refused", ref.info.peer, problem);
            say("refused " + ref.info.peer + ": " + problem);
            refuse_on_arrival(ref, std::move(problem), "429 Too Many Requests");
        }
    }
    // Refused as it arrives: told why in its own wire format once its first bytes show it (a
    // browser gets an HTTP answer, not a stray frame), or in frames if none come within 1 s.
    void refuse_on_arrival(Connection& c, std::string why, const char* http_status) {
        c.refusal = std::move(why);
        c.refusal_status = http_status;
        c.state_until = Clock::now() + milliseconds(1000);
        schedule(c);
    }
    // Per-address caps: connections at once, and new ones a second (GCRA, bursts of a second).
    std::string count_address(Connection& c) {
        c.address = c.info.peer.substr(0, c.info.peer.rfind(':'));  // "[::1]:5000" -> "[::1]"
        if (addresses_.size() >= sweep_addresses_at_) {  // forget the idle ones, now and then
            for (auto it = addresses_.begin(); it != addresses_.end();)
                it = it->second.open == 0 && it->second.next_free <= now_ ? addresses_.erase(it)
                                                                          : std::next(it);
            sweep_addresses_at_ = 2 * addresses_.size() + 64;
        }
        AddressUse& use = addresses_[c.address];
        const std::size_t most = options_.max_per_address, rate = options_.new_per_address;
        if (++use.open > most && most)
            return "too many connections from " + c.address + " (at most " + std::to_string(most) +
                   " at once)";
        if (!rate) return {};
        const auto next = std::max(use.next_free, now_) + per(1, rate);
        if (next - now_ > std::chrono::seconds(1))
            return "too many new connections from " + c.address + " (at most " +
                   std::to_string(rate) + " a second)";
        use.next_free = next;
        return {};
    }
    // ---- reading --------------------------------------------------------------------------
    void read_from(Connection& c, bool hangup) {
        char buf[65536];
        std::size_t total = 0;
        if (!c.paused && !c.unread.empty() && !catch_up(c)) return;  // what came first goes first
        // A fair share per turn; level-triggered polling brings us back for the rest. A paused
        // client is not read, unless it hangs up (the poller would report that in every turn).
        while (total < 4 * sizeof buf && (!c.paused || hangup)) {
            std::error_code ec;
            const std::size_t n = recv_some(c.socket.get(), buf, sizeof buf, ec);
            if (ec && detail::would_block(ec)) {
                if (hangup) close_now(c, "connection lost");
                return;
            }
            if (ec) return close_now(c, "connection lost: " + ec.message());
            if (n == 0 && (c.paused || !c.unread.empty())) return stop_watching(c);
            if (n == 0 && c.info.wire == Wire::lines && c.state != State::closing)
                take_input(c, nullptr, 0);  // a last line without its newline
            if (n == 0) return c.dead ? void() : peer_finished(c);
            total += n;
            // A short read drained the socket: no recv to hear "empty" (level-triggered polling).
            const bool drained = n < sizeof buf && !hangup;
            if (c.state == State::closing) continue;  // discard: we are only waiting for EOF
            if (!take_input(c, buf, n)) return;
            if (drained && c.unread.empty()) end_streak(c);
            if (drained) return;
        }
    }
    // Decodes input and handles what it brings; false once the connection is closing or dead.
    // No data: the end of a line client's input, where a last line needs no newline.
    bool take_input(Connection& c, const char* data, std::size_t size) {
        bool completed = false;
        auto on_payload = [&](std::string_view payload) {  // straight from buf, mostly
            handle_frame(c, payload);
            completed = true;
            return c.state != State::closing && !c.dead && !c.paused;
        };
        if (data) decode(c, data, size, on_payload);
        else c.other->lines.finish(on_payload);
        if (c.dead) return false;
        if (const std::string* error = input_error(c)) {
            const std::string why = "protocol error: " + *error;
            log_.add("error", c.info.name.empty() ? c.info.peer : c.info.name, why);
            if (c.state == State::naming) say("refused " + c.info.peer + ": " + why);
            const bool web = c.info.wire == Wire::websocket;
            refuse(c, why, web ? c.other->websocket.close_code() : 1008);
            return false;
        }
        track_partial_frame(c, completed);
        return c.state != State::closing;
    }
    // Input read while flood control paused the client waits in c.unread (a browser's, in its
    // decoder), and goes on when it is read again, before anything newer.
    bool catch_up(Connection& c) {
        std::string unread = std::move(c.unread);
        c.unread = std::string();
        return take_input(c, unread.data(), unread.size());  // (paused again: the rest waits)
    }
    // Hands what arrived to the decoder of the connection's wire, which its first bytes pick.
    template <class OnPayload>
    void decode(Connection& c, const char* data, std::size_t size, OnPayload& on_payload) {
        if (c.info.wire == Wire::unknown) {
            const std::size_t take = std::min(size, header_size - c.first_bytes.size());
            c.first_bytes.append(data, take);
            if ((c.info.wire = detect_wire(c.first_bytes)) == Wire::unknown) return;
            if (c.info.wire == Wire::http && !options_.web) {
                log_.add("refused", c.info.peer, "an HTTP request, and the web side is off");
                return close_now(c, "HTTP is off");
            }
            if (c.info.wire != Wire::frames)
                c.other.reset(
                    new OtherWire{LineDecoder(std::min(options_.max_line, options_.max_payload)),
                                  WebSocketDecoder(options_.max_payload), std::string()});
            if (c.info.wire == Wire::http && !c.refusal.empty())
                return respond(c,
                               detail::http_response(c.refusal_status, "text/plain; charset=utf-8",
                                                     c.refusal + "\n"));
            if (!c.refusal.empty()) return refuse(c, c.refusal);
            const std::string first = std::move(c.first_bytes);
            std::string().swap(c.first_bytes);
            decode(c, first.data(), first.size(), on_payload);
            if (c.state == State::closing || c.dead) return;
            data += take, size -= take;
        }
        if (c.paused) return void(c.unread.append(data, size));  // held back: kept, in order
        std::size_t used = size;
        switch (c.info.wire) {
        case Wire::frames: used = c.input.decode(data, size, on_payload); break;
        case Wire::lines: used = c.other->lines.decode(data, size, on_payload); break;
        case Wire::http: return read_request(c, data, size, on_payload);
        default:
            return c.other->websocket.decode(
                data, size, on_payload, [&](WebSocketDecoder::Opcode op, std::string_view body) {
                    return websocket_control(c, op, body);
                });
        }
        if (used < size && c.paused) c.unread.append(data + used, size - used);
    }
    // An HTTP request: once whole, the page or an error is sent (then the connection closes),
    // or the connection upgrades to WebSocket and what follows the request is its first frames.
    template <class OnPayload>
    void read_request(Connection& c, const char* data, std::size_t size, OnPayload& on_payload) {
        std::string& request = c.other->request;
        const std::size_t had = request.size();
        request.append(data, std::min(size, detail::max_http_request - had));
        std::size_t end = had < 3 ? 0 : had - 3;  // just past the blank line that ends it
        while ((end = request.find('\n', end)) != std::string::npos && ++end < request.size())
            if (request[end] == '\n' || (request[end] == '\r' && end + 1 < request.size() &&
                                         request[end + 1] == '\n' && ++end))
                break;
        if (end == std::string::npos || end >= request.size()) {
            if (request.size() < detail::max_http_request) return;
            log_.add("refused", c.info.peer, "an HTTP request over 8192 bytes");
            return respond(c, detail::http_error("431 Request Header Fields Too Large"));
        }
        detail::HttpAnswer answer =
            detail::answer_http(std::string_view(request).substr(0, ++end), detail::chat_page);
        if (!answer.upgrade) return respond(c, std::move(answer.response));
        enqueue(c, std::make_shared<const std::string>(std::move(answer.response)));
        c.info.wire = Wire::websocket;
        const std::size_t used = end - had;
        std::string().swap(request);
        decode(c, data + used, size - used, on_payload);
    }
    // Sends an HTTP response, then closes.
    void respond(Connection& c, std::string response) {
        enqueue(c, std::make_shared<const std::string>(std::move(response)));
        if (!c.dead) begin_closing(c, "HTTP");
    }
    bool websocket_control(Connection& c, WebSocketDecoder::Opcode op, std::string_view body) {
        if (op == WebSocketDecoder::ping) {
            auto pong = std::make_shared<std::string>();
            detail::append_websocket_frame(*pong, WebSocketDecoder::pong, body);
            enqueue(c, std::move(pong));
        }
        if (op != WebSocketDecoder::close) return !c.dead;
        // Its code comes back, if it is one a peer may send (RFC 6455, 7.4); else 1002.
        const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(body[k]); };
        const unsigned code = body.empty() ? 1000 : body.size() < 2 ? 0 : byte(0) << 8 | byte(1);
        const bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                           (code >= 3000 && code <= 4999);
        begin_closing(c, "left", static_cast<std::uint16_t>(valid ? code : 1002));
        return false;
    }
    std::size_t buffered(const Connection& c) const {
        if (c.info.wire == Wire::frames) return c.input.buffered();
        if (c.info.wire == Wire::lines) return c.other->lines.buffered();
        return c.info.wire == Wire::websocket ? c.other->websocket.buffered() : 0;
    }
    const std::string* input_error(const Connection& c) const {
        if (c.info.wire == Wire::frames) return c.input.failed() ? &c.input.error() : nullptr;
        if (c.info.wire == Wire::lines)
            return c.other->lines.failed() ? &c.other->lines.error() : nullptr;
        if (c.info.wire != Wire::websocket || !c.other->websocket.failed()) return nullptr;
        return &c.other->websocket.error();
    }
    // A frame must arrive whole within frame_timeout of its first byte: a client that stalls
    // mid-frame (slowloris) holds a buffer and a descriptor, so it is dropped.
    void track_partial_frame(Connection& c, bool completed_one) {
        const bool partial = c.state == State::joined && buffered(c) > 0;
        if (!partial) {
            c.frame_until = never;
        } else if (c.frame_until == never || completed_one) {  // a new frame has begun
            c.frame_until = Clock::now() + options_.frame_timeout;
            schedule(c);
        }
    }
    void handle_frame(Connection& c, std::string_view frame) {
        if (c.state == State::naming) return handle_username(c, frame);
        if (options_.flood_messages || options_.flood_bytes) charge(c, frame.size());
        if (frame.empty()) return;  // nothing to say
        if (!is_valid_utf8(frame))
            return send_to(c.info.id, "message not delivered: it is not valid UTF-8");
        if (!on_message) return deliver(c, frame);
        std::string text = std::move(rewrite_);  // the callback may rewrite it; the buffer is
        text.assign(frame);                      // kept from one message to the next
        const bool keep = on_message(c.info, text);
        if (keep && c.state == State::joined && !c.dead) deliver(c, text);  // not if cut off
        rewrite_ = std::move(text);
    }
    void deliver(Connection& c, std::string_view text) {
        log_.add("message", c.info.name, text);
        relay(detail::Outgoing(c.info.name, text, false), c.info.id);
        remember(c.info.name, text);
    }
    // The last `history` messages, in a ring whose strings keep their memory: a newcomer gets
    // them after the welcome, as notices "[03:39:03] alice: hello" (UTC). Only what was relayed
    // to the room: never a private message.
    void remember(std::string_view from, std::string_view text) {
        if (options_.history == 0) return;
        if (history_.size() < options_.history) history_.emplace_back();
        Remembered& r = history_[history_next_];
        r.when = std::chrono::system_clock::now();
        r.from.assign(from);
        r.text.assign(text);
        history_next_ = (history_next_ + 1) % options_.history;
    }
    void replay_history(Connection& c) {
        for (std::size_t i = 0; i < history_.size(); ++i) {  // the oldest first
            const Remembered& r = history_[(history_next_ + i) % history_.size()];
            const std::string note =
                "[" + detail::utc_timestamp(r.when).substr(11, 8) + "] " + r.from + ": " + r.text;
            if (note.size() <= options_.max_payload) send_to(c.info.id, note);  // else: left out
        }
    }
    // Why `name` cannot be used (empty: it can): the name rules, then no other user may have it
    // in any ASCII case (`current`, a user's own name, does not count).
    std::string name_problem(const std::string& name, const std::string& current = {}) const {
        std::string problem = check_username(name, options_.server_name, options_.max_name_bytes);
        const std::string key = detail::ascii_lower(name);
        if (problem.empty() && key != detail::ascii_lower(current) && names_in_use_.count(key))
            problem = "the name \"" + name + "\" is taken";
        return problem;
    }
    void handle_username(Connection& c, std::string_view frame) {
        std::string name(frame);
        if (std::string problem = name_problem(name); !problem.empty()) {
            log_.add("refused", c.info.peer, problem);
            say("refused " + c.info.peer + ": " + problem);
            return refuse(c, "name refused: " + problem);
        }
        names_in_use_.insert(detail::ascii_lower(name));
        c.info.name = std::move(name);
        c.state = State::joined;
        auto& group = members_[group_of(c.info.wire)];
        c.member_slot = group.size();
        group.push_back(&c);
        ++joined_;
        had_users_ = true;
        log_.add("join", c.info.name, c.info.peer);
        say(printable(c.info.name) + " joined from " + c.info.peer);
        const std::size_t others = joined_ - 1 + users_elsewhere_;
        const bool announce = announced(joined_ + users_elsewhere_);
        send_to(c.info.id,
                "welcome, " + c.info.name + "! " + std::to_string(others) +
                    (others == 1 ? " other user" : " other users") + " online" +
                    (announce ? "" : "; joins and leaves are not announced in a room this big"));
        replay_history(c);
        if (announce) broadcast(c.info.name + " joined", {}, c.info.id);
        if (on_join) on_join(c.info);
    }
    static std::size_t group_of(Wire wire) {
        return wire == Wire::lines ? 1 : wire == Wire::websocket ? 2 : 0;
    }
    // Joins and leaves are announced only in rooms this small: N joins would cost N²/2 notices.
    bool announced(std::size_t room) const { return room <= options_.announce_up_to; }
    // ---- writing --------------------------------------------------------------------------
    // Each wire format's encoding is made once, for its group of members, if it has any.
    void relay(detail::Outgoing&& message, ClientId except) {
        static constexpr Wire group_wire[] = {Wire::frames, Wire::lines, Wire::websocket};
        for (std::size_t g = 0; g < 3; ++g) {
            if (members_[g].empty()) continue;
            const SharedBytes& bytes = message.as(group_wire[g]);
            // A member enqueue() cuts off stays in members_ (dead) until the end of the turn.
            for (Connection* m : members_[g])
                if (m->info.id != except && !m->dead) enqueue(*m, bytes);
        }
    }
    void enqueue(Connection& c, const SharedBytes& bytes) {
        c.output.push(bytes);
        const std::size_t queued = c.output.size_bytes();
        if (queued > watch_above_) return over_limits(c);  // rare: kept out of the relay loop
        mark_dirty(c);
    }
    // The queue has passed room_pressure (the client being read may be held), the soft limit
    // (its deadline starts) or the hard one (cut off now).
    void over_limits(Connection& c) {
        if (options_.room_pressure && c.output.size_bytes() > options_.room_pressure)
            hold_for_room(c);
        const std::size_t hard = options_.output_hard_limit;
        if (c.output.size_bytes() > hard) {
            // Before calling this client slow, give it what its socket takes now (log first).
            log_.flush(options_.diagnostics);
            if (auto ec = c.output.write_to(c.socket.get()))
                return close_now(c, "connection lost: " + ec.message());
        }
        if (c.output.size_bytes() > hard)
            return close_now(c, "too slow: output queue over " + std::to_string(hard) + " bytes");
        if (c.output.size_bytes() > options_.output_soft_limit && c.soft_until == never) {
            c.soft_until = Clock::now() + options_.soft_limit_time;
            schedule(c);
        }
        mark_dirty(c);
    }
    void mark_dirty(Connection& c) {
        if (!std::exchange(c.dirty, true)) dirty_.push_back(c.info.id);
    }
    void flush(Connection& c) {
        c.dirty = false;
        const std::size_t queued = c.output.size_bytes();
        // Closing: all sent, our side shuts down; the peer's turn to close, if it has not.
        if (auto ec = c.send_queued(poller_, c.state == State::closing))
            return close_now(c, "connection lost: " + ec.message());
        if (c.output.size_bytes() < queued) c.progress_at = now_;  // it is reading
        if (c.output.size_bytes() <= options_.room_pressure / 2) release_held(c);
        if (c.output.size_bytes() <= options_.output_soft_limit) c.soft_until = never;
        if (c.sent_eof && c.peer_finished) close_now(c, c.leave_reason);
    }
    // ---- closing: the verbs of the state machine above ------------------------------------
    // Tells a client why, then closes gracefully.
    void refuse(Connection& c, std::string reason, std::uint16_t close_code = 1008) {
        if (c.dead || c.state == State::closing) return;
        enqueue(c, event({}, reason).as(c.info.wire));
        if (!c.dead) begin_closing(c, std::move(reason), close_code);
    }
    // -> closing: a joined user leaves the room now; the connection lives on until its queue
    // is sent and the peer has closed, a second at most.
    void begin_closing(Connection& c, std::string reason, std::uint16_t close_code = 1000) {
        if (c.state == State::joined) leave_room(c, reason);
        release_held(c);
        if (c.paused) c.room_held = false, c.budget_until = never, set_paused(c);  // for its EOF
        c.state = State::closing;
        c.leave_reason = std::move(reason);
        c.state_until = Clock::now() + milliseconds(1000);
        schedule(c);
        if (c.info.wire == Wire::websocket)  // a browser is told with a close frame too
            enqueue(c, std::make_shared<const std::string>(detail::websocket_close(close_code)));
    }
    // The peer sent all it will (it may still read): deliver what is queued for it, then close.
    void peer_finished(Connection& c) {
        if (c.state != State::closing) begin_closing(c, "left");
        c.peer_finished = true;
        if (c.output.empty()) return close_now(c, c.leave_reason);
        c.write_interest = true;  // end-of-stream stays readable: watch for writability only
        c.watch(poller_);
    }
    // -> dead: nothing more is read, relayed to it or from it. The socket closes at the end of
    // the turn, where a joined user leaves the room.
    void close_now(Connection& c, const std::string& reason) {
        if (c.dead) return;
        c.dead = true;
        if (c.state == State::joined) c.leave_reason = reason;
        release_held(c);
        doomed_.push_back(c.socket.get());
    }
    // Out of the room for good (closing, or dead): the name is free again, the others are told,
    // on_leave is called.
    void leave_room(Connection& c, const std::string& reason) {
        c.state = State::closing;
        auto& group = members_[group_of(c.info.wire)];
        group[c.member_slot] = group.back();  // the last one fills the hole
        group[c.member_slot]->member_slot = c.member_slot;
        group.pop_back();
        --joined_;
        names_in_use_.erase(detail::ascii_lower(c.info.name));
        log_.add("leave", c.info.name, reason);
        const std::string notice =
            c.info.name + (reason == "left" ? " left" : " left (" + reason + ")");
        say(printable(notice));
        if (announced(joined_ + 1 + users_elsewhere_))
            broadcast(notice);  // the room still counting the leaver
        if (on_leave) on_leave(c.info, reason);
    }
    // ---- flood control: by back-pressure, nothing dropped ---------------------------------
    static Clock::duration per(std::size_t amount, std::size_t rate) {  // amount/rate seconds
        return std::chrono::duration_cast<Clock::duration>(
            std::chrono::nanoseconds(amount * 1'000'000'000ull / rate));
    }
    // A client's budget is two token buckets, each kept as the time it would be full again
    // (GCRA): a message costs 1/flood_messages s, a byte 1/flood_bytes s. A client more than
    // flood_burst in debt is not read until it is back within it.
    void charge(Connection& c, std::size_t bytes) {
        if (options_.flood_messages)
            c.messages_due = std::max(c.messages_due, now_) + per(1, options_.flood_messages);
        if (options_.flood_bytes)
            c.bytes_due = std::max(c.bytes_due, now_) + per(bytes, options_.flood_bytes);
        const auto within_budget = std::max(c.messages_due, c.bytes_due) - options_.flood_burst;
        if (within_budget <= now_) return;
        c.budget_until = within_budget;
        set_paused(c);
    }
    // The client being read filled the queue of `recipient`, which is still reading (its socket
    // took bytes in the last reading_window): it is not read until that queue is half drained,
    // or the recipient stops reading or leaves. One that stops is left to the output limits.
    static constexpr milliseconds reading_window{2000};
    void hold_for_room(Connection& recipient) {
        Connection* sender = reading_;
        const bool still_reading = now_ - recipient.progress_at <= reading_window;
        if (!sender || sender == &recipient || sender->room_held || !still_reading ||
            sender->state != State::joined || recipient.state != State::joined)
            return;
        sender->room_held = true;
        recipient.holding.push_back(sender->info.id);
        schedule(recipient);  // when it would stop counting as reading
        set_paused(*sender);
    }
    void release_held(Connection& recipient) {
        for (ClientId id : recipient.holding)
            if (Connection* sender = live(id); sender && sender->room_held)
                sender->room_held = false, set_paused(*sender);
        recipient.holding.clear();
    }
    // Reads a client, or not, as its holds say. Holds make a streak until nothing of the client
    // waits (end_streak): a streak longer than slow_down_after earns a notice, one a minute.
    void set_paused(Connection& c) {
        const bool paused = c.room_held || c.budget_until != never;
        if (paused && c.held_since == never) c.held_since = now_;
        if (paused == std::exchange(c.paused, paused)) return;
        if (!paused && c.frame_until != never)  // a frame's time does not run while we wait
            c.frame_until = now_ + options_.frame_timeout;
        if (!paused) resumed_.push_back(c.info.id);  // what it sent before is handled first
        if (!paused && std::exchange(c.unwatched, false)) poller_.add(c.socket.get(), 0);
        c.watch(poller_);
        schedule(c);
    }
    // It has sent all it will (WSAPoll then reports a hang-up in every turn) while what it sent
    // waits: out of the poller until it is read again; its end is seen then, in its turn.
    void stop_watching(Connection& c) {
        poller_.remove(c.socket.get());
        c.unwatched = true;
    }
    // Nothing of the client's waits (its socket drained, nothing kept): a streak of holds ends,
    // even if it is held now. A person whose one line waited behind a flood is not told.
    void end_streak(Connection& c) { c.held_since = never; }
    Clock::time_point notice_due(const Connection& c) const {
        if (c.held_since == never) return never;
        return std::max(c.held_since + options_.slow_down_after,
                        c.told_at + std::chrono::minutes(1));
    }
    Clock::time_point stops_reading(const Connection& c) const {
        return c.holding.empty() ? never : c.progress_at + reading_window;
    }
    // Its entry in deadlines_ has come: a budget refilled, a notice due, a recipient stopped.
    void flood_timers(Connection& c, Clock::time_point now) {
        if (now >= c.budget_until) c.budget_until = never, set_paused(c);
        if (now >= notice_due(c)) {
            c.told_at = now;
            send_to(c.info.id,
                    "slow down: you are sending faster than the room can take it; "
                    "the rest waits, nothing is lost");
        }
        if (now >= stops_reading(c)) release_held(c);
        schedule(c);
    }
    // Clients read again (a budget refilled, a recipient drained): input kept while they were
    // paused is handled now, though no new bytes may come to wake us for it.
    void catch_up_resumed() {
        resumed_now_.swap(resumed_);
        for (ClientId id : resumed_now_) {
            Connection* c = live(id);
            if (!c || c->paused || c->state != State::joined) continue;
            reading_ = c;
            if (!c->unread.empty() || c->info.wire == Wire::websocket) catch_up(*c);
            reading_ = nullptr;
        }
        resumed_now_.clear();
    }
    void uncount_address(const std::string& address) {
        auto it = addresses_.find(address);
        if (--it->second.open == 0 && it->second.next_free <= now_) addresses_.erase(it);
    }
    // ---- deadlines ------------------------------------------------------------------------
    // A connection has at most one entry in deadlines_, its state's soonest: naming: the name;
    // joined: a frame arriving whole (unless paused), the queue back under the soft limit, flood
    // control's times; closing: the peer's close. An entry that is too early (the deadline moved
    // later) is set again when it fires.
    Clock::time_point due(const Connection& c) const {
        if (c.state != State::joined) return c.state_until;
        return std::min({c.paused ? never : c.frame_until, c.soft_until, c.budget_until,
                         notice_due(c), stops_reading(c)});
    }
    // Called whenever a connection's deadline may have come nearer.
    void schedule(Connection& c) {
        const auto when = due(c);
        if (c.deadline <= when) return;  // an entry that fires first, and reschedules (or none)
        unschedule(c);
        deadlines_.insert({c.deadline = when, c.info.id});
    }
    void unschedule(Connection& c) {
        const auto when = std::exchange(c.deadline, never);
        if (when != never) deadlines_.erase({when, c.info.id});
    }
    // Accepting pauses too (out of descriptors) have an entry, for no client.
    void check_deadlines() {
        const auto now = Clock::now();
        while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
            const ClientId id = deadlines_.begin()->second;
            deadlines_.erase(deadlines_.begin());
            if (id == no_client) {  // the pause is over: the listener is watched again
                if (listener_) poller_.modify(listener_.get(), want_read);
                continue;
            }
            Connection& c = *by_id_.at(id);
            c.deadline = never;
            if (!c.dead) expire(c, now);
        }
    }
    void expire(Connection& c, Clock::time_point now) {
        if (due(c) > now) return schedule(c);  // not yet: the deadline moved later
        if (c.state == State::naming && !c.refusal.empty()) {
            refuse(c, c.refusal);  // it has said nothing yet: told in frames
        } else if (c.state == State::naming) {
            log_.add("refused", c.info.peer, "no username in time");
            say("refused " + c.info.peer + ": no username in time");
            if (c.info.wire == Wire::http)
                return respond(c, detail::http_error("408 Request Timeout"));
            refuse(c, "no username within " + std::to_string(options_.handshake_timeout.count()) +
                          " ms");
        } else if (c.state == State::closing) {
            close_now(c, c.leave_reason);
        } else if (now >= c.frame_until && !c.paused) {
            log_.add("error", c.info.name, "incomplete frame");
            refuse(c, "a frame took longer than " + std::to_string(options_.frame_timeout.count()) +
                          " ms to arrive");
        } else if (now >= c.soft_until) {
            close_now(c, "too slow: output queue over " +
                             std::to_string(options_.output_soft_limit) + " bytes for " +
                             std::to_string(options_.soft_limit_time.count()) + " ms");
        } else {
            flood_timers(c, now);
        }
    }
    int next_timeout(milliseconds max_wait) const {
        if (!dirty_.empty() || !doomed_.empty() || !resumed_.empty()) return 0;
        auto soonest = deadlines_.empty() ? never : deadlines_.begin()->first;
        long long ms = max_wait.count();  // negative: no limit of the caller's
        if (soonest != never) {           // rounded up: never wake before it
            const auto left = std::chrono::ceil<milliseconds>(soonest - Clock::now()).count();
            ms = std::max(0ll, ms < 0 ? left : std::min<long long>(ms, left));  // due: no wait
        }
        return ms < 0 ? -1 : static_cast<int>(std::min(std::max(ms, 0ll), 60'000ll));
    }
    // The end of every turn: log first, then the sockets, then the closes.
    void finish_iteration() {
        while (!dirty_.empty() || !doomed_.empty()) {
            log_.flush(options_.diagnostics);  // the log first: lines before messages
            // Swapped with kept buffers: flushing may queue more, and no turn allocates.
            dirty_now_.swap(dirty_);
            for (ClientId id : dirty_now_)
                if (Connection* c = live(id)) flush(*c);
            dirty_now_.clear();
            doomed_now_.swap(doomed_);
            for (socket_t fd : doomed_now_) {
                auto it = connections_.find(fd);
                Connection& c = *it->second;
                if (c.state == State::joined) leave_room(c, c.leave_reason);
                if (!c.address.empty()) uncount_address(c.address);
                unschedule(c);
                poller_.remove(fd);
                by_id_.erase(c.info.id);
                connections_.erase(it);  // closes the socket
            }
            doomed_now_.clear();
        }
        log_.flush(options_.diagnostics);
    }
    // The tasks post() queued, on this thread. The lock is held only to take the list: a task
    // may post again (it then runs next turn).
    void run_posted() {
        {
            detail::Locked taking(posted_lock_);
            posting_.swap(posted_);
        }
        for (auto& task : posting_) task();
        posting_.clear();
    }
    // stop(): run what was posted, relay what has arrived, say goodbye, let the queues drain.
    void shut_down() {
        run_posted();  // posted before stop(): accepted, so it runs
        poller_.remove(listener_.get());
        listener_.close();
        // Messages that reached us before the stop are still relayed and logged.
        for (const ClientInfo& member : clients())
            if (Connection* c = live(member.id); c && c->state == State::joined)
                read_from(*c, false);
        finish_iteration();
        broadcast("the server is stopping");
        const auto deadline = Clock::now() + options_.stop_drain_time;
        for (auto& entry : connections_) {
            Connection& c = *entry.second;
            if (c.dead) continue;
            if (c.state == State::joined) {
                log_.add("leave", c.info.name, "server stopping");
                if (on_leave) on_leave(c.info, "server stopping");
            }
            const bool told = c.state == State::closing;  // a browser has its close frame then
            c.state = State::closing;
            c.leave_reason = "server stopping";
            c.state_until = deadline;
            if (c.info.wire == Wire::websocket && !told)
                enqueue(c, std::make_shared<const std::string>(detail::websocket_close(1001)));
            schedule(c);  // an earlier entry finds, when it fires, that this one is due later
            mark_dirty(c);
        }
        for (auto& group : members_) group.clear();
        joined_ = 0;
        names_in_use_.clear();
        finish_iteration();
        while (!connections_.empty() && Clock::now() < deadline)  // the listener is gone: only
            if (run_once(milliseconds(20))) break;                // the goodbyes are served
        connections_.clear();
        by_id_.clear();
        deadlines_.clear();
        say("stopped");
    }
    ServerOptions options_;
    Poller poller_;
    Socket listener_;
    ConversationLog log_;
    std::unordered_map<socket_t, std::unique_ptr<Connection>> connections_;
    std::unordered_map<ClientId, Connection*> by_id_;
    std::vector<Connection*> members_[3];  // joined users by wire (frames, lines, web): any order
    std::size_t joined_ = 0;               // in all three
    std::size_t users_elsewhere_ = 0;      // see set_users_elsewhere()
    std::unordered_set<std::string> names_in_use_;  // their names, in lower case
    std::set<std::pair<Clock::time_point, ClientId>> deadlines_;
    std::vector<ClientId> dirty_, dirty_now_;      // finish_iteration()'s lists and their
    std::vector<socket_t> doomed_, doomed_now_;    // working copies
    std::vector<ClientId> resumed_, resumed_now_;  // see catch_up_resumed()
    std::vector<PollEvent> events_;
    ClientId next_id_ = 1;
    Clock::time_point now_;          // this turn's time
    Connection* reading_ = nullptr;  // the client whose input is being handled
    std::size_t watch_above_ = 0;    // queued bytes over which enqueue() looks closer
    struct AddressUse {
        std::size_t open = 0;         // connections from it now
        Clock::time_point next_free;  // its new-connection budget, as in charge()
    };
    std::unordered_map<std::string, AddressUse> addresses_;  // only with per-address caps
    std::size_t sweep_addresses_at_ = 64;
    struct Remembered {
        std::chrono::system_clock::time_point when;
        std::string from, text;
    };
    std::vector<Remembered> history_;  // see remember()
    std::string rewrite_;              // see handle_frame()
    std::size_t history_next_ = 0;
    std::atomic<bool> stop_requested_{false};
    detail::Lock posted_lock_;                             // guards posted_, the one list
    std::vector<std::function<void()>> posted_, posting_;  // that other threads touch
    bool listening_ = false, had_users_ = false;
    bool accept_paused_logged_ = false;
};

// Ctrl+C (SIGTERM, closing the console window) calls server.stop(); the program goes on from
// run(). Opt-in: a library must not take over signals on its own. One server at a time.
inline void stop_on_ctrl_c(Server& server) {
    detail::ctrl_c_target.store(&server);
    detail::stop_grace_ms.store(server.options().stop_drain_time.count());
    detail::on_stop.store([] {
        Server* s = detail::ctrl_c_target.load();
        if (s) s->stop();
        return s != nullptr;
    });
    detail::catch_stop_signals();
}

// ==== 7. Client ==================================================================================
// One message as a client receives it.
struct Message {
    std::string from;  // the sender's username, or the server's reserved name for a notice
    std::string text;
    bool from_server;  // a notice: someone joined or left, a name was refused, the server stops
};

struct ClientOptions {
    std::string server_name = "server";  // sender name that marks server notices
    std::size_t max_payload = detail::default_max_payload;
    milliseconds connect_timeout{5000};
    milliseconds close_timeout{5000};  // close(): time for queued messages to be delivered
};

// Why a client's connection ended; Client::close_detail() has the words.
enum class CloseReason {
    open,              // not closed (or never connected)
    refused,           // closed before a welcome (name refused, server full); detail: its notice
    server_closed,     // the server closed the connection (its last notice, if any, is the detail)
    finished,          // we finished, and the server confirmed by closing too
    not_acknowledged,  // close() gave up waiting for the server to close
    protocol_error,    // the server broke the framing; the detail says how
    connection_lost,   // a reset or a network error; the detail is the system's text
};

class Client {
public:
    explicit Client(ClientOptions options = {})
        : options_(std::move(options)), link_(options_.max_payload) {}
    // Called from poll() for every message and notice received.
    std::function<void(const Message&)> on_message;
    // Connects within connect_timeout, then sends the username; the answer (a welcome, or a
    // refusal and a close) arrives through poll(). A name over max_payload: message_size.
    std::error_code connect(const std::string& host, std::uint16_t port,
                            std::string_view username) {
        if (auto ec = connect(host, port)) return ec;
        return join(username);
    }
    // Only connects: join() sends the username later (once the user knows the server is there).
    std::error_code connect(const std::string& host, std::uint16_t port) {
        if (open_) return std::make_error_code(std::errc::already_connected);
        std::error_code ec;
        Socket s = connect_tcp(host, port, options_.connect_timeout, ec);
        if (ec) return ec;
        if ((ec = poller_.add(s.get(), want_read))) return ec;
        // Nothing of an earlier connection (unsent bytes, half a frame, a sent EOF) carries over.
        link_ = detail::Link(options_.max_payload);
        link_.socket = std::move(s);
        have_sender_ = refused_ = finishing_ = false;
        last_notice_.clear();
        received_ = 0;
        open_ = true;
        close_reason_ = CloseReason::open;
        close_detail_.clear();
        return {};
    }
    std::error_code join(std::string_view username) { return send(username); }
    // Queues one message and starts sending it. Errors: not_connected (or closing), message_size.
    std::error_code send(std::string_view text) {
        if (!open_ || finishing_) return std::make_error_code(std::errc::not_connected);
        if (text.size() > options_.max_payload)
            return std::make_error_code(std::errc::message_size);
        link_.output.push(std::make_shared<const std::string>(encode_frame(text)));
        flush();
        return {};
    }
    // Waits up to `timeout` for the server (and `input`), sends what is queued and hands every
    // message to on_message. False once the connection is closed: close_reason() says why.
    bool poll(milliseconds timeout, StdinLines* input = nullptr) {
        if (!open_) return false;
        watch(input);
        if (input && (input->has_line() || input->eof() || input_is_file_))
            timeout = milliseconds(0);
        if (auto ec = poller_.wait(events_, static_cast<int>(timeout.count()))) {
            end(CloseReason::connection_lost, "poll failed: " + ec.message());
            return false;
        }
        for (const PollEvent& ev : events_) {
            if (ev.socket == link_.socket.get() && (ev.readable || ev.hangup)) receive();
            else if (input && ev.socket == input->handle()) input->read_some(false);
        }
        if (input && input_is_file_) input->read_some(true);
        if (input && input->ended() && std::exchange(input_watched_, false))
            poller_.remove(input->handle());  // end of input stays "readable" forever
        if (open_) flush();
        return open_;
    }
    // Graceful close, not blocking: once all is sent our side closes; then the server's does.
    void finish() {
        finishing_ = true;
        if (open_) flush();
    }
    // Graceful close that waits (up to close_timeout) for the server to close; true if it did.
    bool close() {
        finish();
        const auto deadline = Clock::now() + options_.close_timeout;
        while (open_ && Clock::now() < deadline)
            poll(std::chrono::ceil<milliseconds>(deadline - Clock::now()));
        if (open_)
            end(CloseReason::not_acknowledged, "the server did not close within " +
                                                   std::to_string(options_.close_timeout.count()) +
                                                   " ms; " + std::to_string(queued_bytes()) +
                                                   " bytes were still unsent");
        return close_reason_ == CloseReason::finished;
    }
    bool is_open() const { return open_; }
    bool joined() const { return received_ > 0 && !refused_; }  // the server has welcomed us
    CloseReason close_reason() const { return close_reason_; }
    const std::string& close_detail() const { return close_detail_; }
    std::size_t queued_bytes() const { return link_.output.size_bytes(); }
    socket_t socket() const { return link_.socket.get(); }

private:
    void watch(StdinLines* input) {
        if (!input || input_watched_ || input_is_file_ || input->ended()) return;
        if (poller_.add(input->handle(), want_read)) input_is_file_ = true;  // epoll refuses files
        else input_watched_ = true;
    }
    void receive() {
        char buf[65536];
        for (;;) {
            std::error_code ec;
            const std::size_t n = recv_some(link_.socket.get(), buf, sizeof buf, ec);
            if (ec && detail::would_block(ec)) return;
            if (ec) return end(CloseReason::connection_lost, ec.message());
            if (n == 0) return server_closed();
            link_.input.decode(buf, n,
                               [this](std::string_view frame) { return take_frame(frame); });
            if (!open_) return;
            if (link_.input.failed()) return end(CloseReason::protocol_error, link_.input.error());
        }
    }
    // One frame received; false stops decoding once on_message has closed the connection.
    bool take_frame(std::string_view frame) {
        have_sender_ = !have_sender_;  // frames alternate: the sender's name, then the text
        if (have_sender_) {
            sender_.assign(frame);
            return true;
        }
        Message m{sender_, std::string(frame), sender_ == options_.server_name};
        // The server's first message is its welcome, or a refusal before it closes.
        if (received_++ == 0) refused_ = m.from_server && m.text.rfind("welcome, ", 0) != 0;
        if (m.from_server) last_notice_ = m.text;
        if (on_message) on_message(m);
        return open_;
    }
    void server_closed() {
        if (refused_) return end(CloseReason::refused, last_notice_);
        if (link_.sent_eof) return end(CloseReason::finished, {});  // all sent, then our EOF
        end(CloseReason::server_closed, last_notice_);
    }
    void flush() {
        if (auto ec = link_.send_queued(poller_, finishing_))
            end(CloseReason::connection_lost, ec.message());
    }
    void end(CloseReason why, std::string detail) {
        if (!open_) return;
        open_ = false;
        close_reason_ = why;
        close_detail_ = std::move(detail);
        poller_.remove(link_.socket.get());
        link_.socket.close();
    }
    ClientOptions options_;
    Poller poller_;
    detail::Link link_;
    std::string sender_, last_notice_;
    std::size_t received_ = 0;
    bool have_sender_ = false, refused_ = false;
    bool open_ = false, finishing_ = false;
    bool input_watched_ = false, input_is_file_ = false;
    CloseReason close_reason_ = CloseReason::open;
    std::string close_detail_;
    std::vector<PollEvent> events_;
};

// ==== 8. Chat commands: the worked example of the public API ====================================
// /who, /msg NAME TEXT, /me TEXT, /nick NAME, /quit [REASON], /help; "//text" sends "/text".
// Only Server's public callbacks and functions are used, as a program of yours would use them.
namespace detail {
inline void run_command(Server& server, const ClientInfo& who, const std::string& line) {
    const std::size_t space = std::min(line.find(' '), line.size());
    const std::string command = ascii_lower(line.substr(0, space));
    std::string rest = line.substr(std::min(line.find_first_not_of(' ', space), line.size()));
    const std::size_t limit = server.options().max_payload;  // what any client accepts
    const auto tell = [&](const std::string& text) {
        server.send_to(who.id, text.size() <= limit ? text : "too long to send");
    };
    if (command == "/help") {
        tell(
            "commands: /who, /msg NAME TEXT, /me TEXT, /nick NAME, /quit [REASON], /help; "
            "//text sends /text");
    } else if (command == "/who") {
        std::vector<std::string> names;
        for (const ClientInfo& c : server.clients()) names.push_back(c.name);
        std::sort(names.begin(), names.end());
        std::string list = std::to_string(names.size()) + " online";
        const std::size_t shown = std::min(names.size(), server.options().announce_up_to);
        if (shown < names.size()) list += "; the first " + std::to_string(shown);
        for (std::size_t i = 0; i < shown && list.size() + names[i].size() + 2 < limit; ++i)
            list += (i == 0 ? ": " : ", ") + names[i];
        tell(list);
    } else if (command == "/msg") {
        const std::size_t gap = std::min(rest.find(' '), rest.size());
        const std::string name = rest.substr(0, gap),
                          text = rest.substr(std::min(gap + 1, rest.size()));
        if (name.empty() || text.empty()) return tell("usage: /msg NAME TEXT");
        for (const ClientInfo& c : server.clients()) {
            if (ascii_lower(c.name) != ascii_lower(name)) continue;
            const std::string note = "private from " + who.name + ": " + text;
            if (note.size() > limit) return tell("too long to send");
            server.send_to(c.id, note);  // a notice: no user can forge one
            server.log_event("private", who.name, "to " + c.name + ": " + text);
            return tell("private to " + c.name + ": " + text);
        }
        tell("no user named \"" + name + "\"");
    } else if (command == "/me") {
        if (rest.empty()) return tell("usage: /me TEXT");
        if (who.name.size() + 1 + rest.size() > limit) return tell("too long to send");
        server.broadcast(who.name + " " + rest, {}, who.id);  // a notice: "* alice waves"
        server.log_event("action", who.name, rest);
    } else if (command == "/nick") {
        if (rest.empty()) return tell("usage: /nick NAME");
        const std::string old_name = who.name;  // `who` is the user's own: it changes with it
        const std::string problem = server.rename(who.id, rest);
        if (!problem.empty()) return tell("name refused: " + problem);
        server.broadcast(old_name + " is now known as " + rest);
    } else if (command == "/quit") {
        server.disconnect(who.id, rest.empty() ? "left" : rest);
    } else {
        tell("unknown command " + command + "; /help lists the commands");
    }
}
}  // namespace detail

// Turns the commands on. A message that is not a command goes on to the on_message that was
// there before; a command is never relayed.
inline void enable_commands(Server& server) {
    server.on_message = [&server, next = std::move(server.on_message)](const ClientInfo& who,
                                                                       std::string& text) {
        if (!text.empty() && text[0] == '/') {
            if (text.size() < 2 || text[1] != '/')
                return detail::run_command(server, who, text), false;
            text.erase(0, 1);  // "//text": "/text", relayed
        }
        return !next || next(who, text);
    };
}

}  // namespace chatsock

#if defined(CHATSOCK_RESTORE_MIN_MAX)  // set aside in the platform section
#  pragma pop_macro("max")
#  pragma pop_macro("min")
#  undef CHATSOCK_RESTORE_MIN_MAX
#endif

#endif  // CHATSOCK_HPP
