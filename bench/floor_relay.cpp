// floor_relay.cpp — the least a relay of this protocol can do, for bench/run.sh's latency floor.
//
//   bench/floor_relay [host] [port]     prints "listening on HOST:PORT" (port 0: the OS picks)
//
// Linux only, no checks, no limits, no log, no notices (the classic protocol): epoll, one recv
// per readable socket, and for each message one send of its two frames to every other client.
// Not a server to use: a measuring stick. What the bench measures on it is what this machine's
// system calls cost a relay with nothing else to do; chatsock's latency is compared with it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

struct Peer {
    std::string name;  // empty until the first frame
    std::string in;    // bytes of an unfinished frame
};

void append_frame(std::string& out, const char* data, std::size_t size) {
    char header[16];
    std::snprintf(header, sizeof header, "%-10zu", size);
    out.append(header, 10);
    out.append(data, size);
}

// The sockets are non-blocking; a full one is waited for (never, at the rates measured).
bool send_all(int fd, const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pollfd p{fd, POLLOUT, 0};
            poll(&p, 1, 1000);
            continue;
        }
        return false;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    const char* host = argc > 1 ? argv[1] : "127.0.0.1";
    const int port = argc > 2 ? std::atoi(argv[2]) : 0;
    const int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    socklen_t alen = sizeof a;
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 4096) != 0 ||
        getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
        std::perror("floor_relay: cannot listen");
        return 1;
    }
    std::printf("listening on %s:%d\n", host, ntohs(a.sin_port));
    std::fflush(stdout);

    const int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = ls;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    std::unordered_map<int, Peer> peers;
    std::vector<int> named;  // in the order they named themselves
    std::vector<char> buf(1 << 16);
    std::string out;
    for (;;) {
        epoll_event evs[256];
        const int n = epoll_wait(ep, evs, 256, -1);
        for (int e = 0; e < n; ++e) {
            const int fd = evs[e].data.fd;
            if (fd == ls) {
                for (int c;
                     (c = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0;) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    epoll_event cev{};
                    cev.events = EPOLLIN;
                    cev.data.fd = c;
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                    peers[c];
                }
                continue;
            }
            auto it = peers.find(fd);
            if (it == peers.end()) continue;
            Peer& p = it->second;
            const ssize_t r = recv(fd, buf.data(), buf.size(), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                named.erase(std::remove(named.begin(), named.end(), fd), named.end());
                peers.erase(it);
                close(fd);
                continue;
            }
            p.in.append(buf.data(), static_cast<std::size_t>(r));
            std::size_t pos = 0;
            while (p.in.size() - pos >= 10) {
                const std::size_t len = std::strtoul(p.in.substr(pos, 10).c_str(), nullptr, 10);
                if (p.in.size() - pos - 10 < len) break;
                const char* payload = p.in.data() + pos + 10;
                if (p.name.empty()) {
                    p.name.assign(payload, len);
                    named.push_back(fd);
                } else {
                    out.clear();
                    append_frame(out, p.name.data(), p.name.size());
                    append_frame(out, payload, len);
                    for (int other : named)
                        if (other != fd) send_all(other, out);
                }
                pos += 10 + len;
            }
            p.in.erase(0, pos);
        }
    }
}
