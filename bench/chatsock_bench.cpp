// chatsock_bench.cpp — a load generator for chatsock's wire protocol (and, for comparison, for
// the classic Python select() chat server and for Redis pub/sub), over loopback.
//
//   Build:  make bench           (g++ -std=c++17 -O2 bench/chatsock_bench.cpp -o bench/chatsock_bench)
//   Run:    bench/chatsock_bench --port 1234 --clients 50 --messages 2000 --size 64
//           bench/chatsock_bench --ports 4001,4002,4003 ...   one room over several servers
//
// One thread, non-blocking sockets, one epoll set. The bench does not use chatsock.hpp: it speaks
// the protocol itself, so it measures the server and not the library's client.
//
// WORKLOADS
//   (default)  N clients each send M messages of S payload bytes; the server relays each one to
//              the N-1 others. Every delivery is checked: payload intact, sender right, and per
//              sender per receiver the sequence numbers go up by exactly one.
//   --idle     connect N clients, then one message from client 0 must reach all N-1 others.
//   --raw      no server: TCP over loopback, a forked writer and the bench reading, no work but
//              the I/O (one connection by default, --raw-streams K for a fan-out's shape) — the
//              ceiling to compare delivered MB/s with.
//   --raw-broadcast K   no server: the floor of --idle's broadcast. A forked writer sends one
//              --raw-chunk to each of K connections in a plain loop of send() calls (what a
//              server's broadcast does with nothing else to do); the bench reads them all.
//   --mix frames:A,lines:B,websocket:C   (with the default workload, --idle or --rate; chatsock
//              only) one room of A+B+C clients of the three kinds a chatsock server tells apart
//              by their first bytes, interleaved (frames, lines, websocket, frames, ...); it sets
//              --clients. Every delivery is checked as above, whatever kind sent or received it.
//              The JSON line adds, per kind: clients, deliveries received and latency p50/p99.
//   --ports P1,P2,...   (chatsock only) the room is spread over several servers that share it,
//              such as the nodes of a cluster (bench/cluster.sh): client i connects to port
//              P(i mod K). Every delivery is checked as above, wherever sender and receiver are.
//              A welcome counts only the users its server knew of then (the others' joins may be
//              on the way); before measuring, the bench waits for at least N(N-1)/2 "X joined"
//              notices in all (each pair of clients: one of the two hears of the other) unless a
//              welcome says joins are not announced.
//
// FLOW CONTROL (--window W)
//   A sender may have at most W messages that have not yet been received by ALL N-1 other
//   clients. So at most N*W messages are in flight at any time, and what the server has queued
//   for one receiver is bounded by about (N-1)*W frames: the bench never trips the server's
//   per-client output limits through its own pacing. With --rate R, messages are instead
//   started at a steady R per second overall (round robin over the senders), the window only
//   being a safety bound. The default W keeps (N-1)*W*frame_bytes near 512 KiB (between 1 and
//   1024), half the server's default soft limit of 1 MiB.
//
// PROTOCOLS (--proto)
//   chatsock  a client is in once the server's welcome notice arrives; notices ("server") are
//             counted apart and never as deliveries; after everyone joined, the bench waits for
//             the "X joined" notices to finish arriving before it measures.
//   classic   no notices: client 0 sends "sync" until every other client has received one.
//   redis     RESP3 (HELLO 3). Client i subscribes to the channels of all the others and
//             PUBLISHes to its own, so each message reaches exactly the N-1 others, as in chat.
//             --idle: clients 1..N-1 subscribe to one channel, client 0 publishes.
//
// CLIENT KINDS (--mix; otherwise every client speaks frames, or RESP with --proto redis)
//   frames     the framed protocol: a 10-byte decimal header per frame; name, then messages;
//              the server sends (sender, text) frame pairs. The default, unchanged by --mix.
//   lines      nc/telnet: "NAME\n", then "TEXT\n" per message; receives "FROM: TEXT\r\n" and
//              "* NOTICE\r\n".
//   websocket  a browser: "GET / HTTP/1.1" with Upgrade: websocket (RFC 6455's sample key; the
//              101 must carry its accept value), then masked text frames, the name first; receives
//              unmasked text frames of {"from":"...","text":"..."} (notices add "notice":true).
//
// PAYLOAD (S >= 32 bytes, printable ASCII)
//   8 hex digits sender index, 8 hex digits sequence number, 16 hex digits send time (steady
//   clock, ns), then a letter pattern that depends on the sequence number up to S bytes.
//
// OUTPUT: one JSON line on stdout. Exit status 0 when every expected delivery arrived intact
// and in order within --timeout; 1 on loss, corruption, reordering, refusal or timeout; 2 on a
// usage or setup error.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace {

// ---- small utilities --------------------------------------------------------------------------

std::uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  // what std::chrono::steady_clock reads on Linux
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "chatsock_bench: %s\n", what);
    std::exit(2);
}

const char hexdigits[] = "0123456789abcdef";

void put_hex(char* out, std::uint64_t v, int digits) {
    for (int i = digits - 1; i >= 0; --i) {
        out[i] = hexdigits[v & 15];
        v >>= 4;
    }
}

bool get_hex(const char* in, int digits, std::uint64_t& v) {
    v = 0;
    for (int i = 0; i < digits; ++i) {
        const char ch = in[i];
        unsigned d;
        if (ch >= '0' && ch <= '9') d = static_cast<unsigned>(ch - '0');
        else if (ch >= 'a' && ch <= 'f') d = static_cast<unsigned>(ch - 'a' + 10);
        else return false;
        v = (v << 4) | d;
    }
    return true;
}

// A chat frame header: decimal digits, space padded (either side), exactly 10 bytes.
bool parse_frame_header(const char* h, std::uint64_t& len) {
    int i = 0;
    while (i < 10 && h[i] == ' ') ++i;
    const int first = i;
    len = 0;
    while (i < 10 && h[i] >= '0' && h[i] <= '9')
        len = len * 10 + static_cast<unsigned>(h[i++] - '0');
    if (i == first) return false;
    while (i < 10 && h[i] == ' ') ++i;
    return i == 10;
}

void append_frame_header(std::string& out, std::size_t len) {
    char h[16];
    std::snprintf(h, sizeof h, "%-10zu", len);
    out.append(h, 10);
}

void append_resp_bulk(std::string& out, std::string_view s) {
    char h[32];
    int n = std::snprintf(h, sizeof h, "$%zu\r\n", s.size());
    out.append(h, static_cast<std::size_t>(n));
    out.append(s.data(), s.size());
    out.append("\r\n", 2);
}

void append_resp_array_header(std::string& out, std::size_t count) {
    char h[32];
    int n = std::snprintf(h, sizeof h, "*%zu\r\n", count);
    out.append(h, static_cast<std::size_t>(n));
}

// Latency histogram: exact below 128 ns, then 128 sub-buckets per power of two (< 0.8% error).
class Histogram {
public:
    static constexpr int sub_bits = 7;
    Histogram() : buckets_(64 << sub_bits, 0) {}
    void add(std::uint64_t v) {
        ++buckets_[index(v)];
        ++count_;
        if (v > max_) max_ = v;
    }
    std::uint64_t count() const { return count_; }
    std::uint64_t max() const { return max_; }
    // Takes out what `part` (a subset of this histogram's values) holds; max() stays an upper bound.
    void subtract(const Histogram& part) {
        for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] -= part.buckets_[i];
        count_ -= part.count_;
    }
    std::uint64_t percentile(double p) const {
        if (count_ == 0) return 0;
        std::uint64_t want = static_cast<std::uint64_t>(p * static_cast<double>(count_) + 0.999999);
        if (want < 1) want = 1;
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < buckets_.size(); ++i) {
            seen += buckets_[i];
            if (seen >= want) return std::min(value(i), max_);
        }
        return max_;
    }

private:
    static std::size_t index(std::uint64_t v) {
        if (v < (1u << sub_bits)) return static_cast<std::size_t>(v);
        const int e = 63 - __builtin_clzll(v);
        return (static_cast<std::size_t>(e - sub_bits + 1) << sub_bits) +
               static_cast<std::size_t>((v >> (e - sub_bits)) & ((1u << sub_bits) - 1));
    }
    static std::uint64_t value(std::size_t i) {
        if (i < (1u << sub_bits)) return i;
        const int e = static_cast<int>(i >> sub_bits) + sub_bits - 1;
        const std::uint64_t sub = i & ((1u << sub_bits) - 1);
        const std::uint64_t low = ((1ull << sub_bits) + sub) << (e - sub_bits);
        return low + ((1ull << (e - sub_bits)) >> 1);
    }
    std::vector<std::uint64_t> buckets_;
    std::uint64_t count_ = 0, max_ = 0;
};

// A server process seen through /proc: memory and CPU time.
struct ProcSample {
    long rss_kb = -1, hwm_kb = -1;
    double cpu_s = -1;
};

ProcSample sample_process(long pid) {
    ProcSample s;
    if (pid <= 0) return s;
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%ld/status", pid);
    if (FILE* f = std::fopen(path, "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, f)) {
            if (!std::strncmp(line, "VmRSS:", 6)) s.rss_kb = std::strtol(line + 6, nullptr, 10);
            if (!std::strncmp(line, "VmHWM:", 6)) s.hwm_kb = std::strtol(line + 6, nullptr, 10);
        }
        std::fclose(f);
    }
    std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (FILE* f = std::fopen(path, "r")) {
        char buf[1024];
        std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        std::fclose(f);
        // after "pid (comm) ": state is field 3; utime and stime are fields 14 and 15
        if (char* p = std::strrchr(buf, ')')) {
            p += 2;
            unsigned long long ut = 0, st = 0;
            int field = 3;
            char* save = nullptr;
            for (char* tok = strtok_r(p, " ", &save); tok;
                 tok = strtok_r(nullptr, " ", &save), ++field) {
                if (field == 14) ut = std::strtoull(tok, nullptr, 10);
                if (field == 15) {
                    st = std::strtoull(tok, nullptr, 10);
                    break;
                }
            }
            s.cpu_s = static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
        }
    }
    return s;
}

// Several server processes (--server-pid P1,P2,...): their figures summed.
ProcSample sample_processes(const std::vector<long>& pids) {
    ProcSample sum;
    for (std::size_t i = 0; i < pids.size(); ++i) {
        const ProcSample s = sample_process(pids[i]);
        if (i == 0) sum = s;
        else {
            sum.rss_kb = sum.rss_kb < 0 || s.rss_kb < 0 ? -1 : sum.rss_kb + s.rss_kb;
            sum.hwm_kb = sum.hwm_kb < 0 || s.hwm_kb < 0 ? -1 : sum.hwm_kb + s.hwm_kb;
            sum.cpu_s = sum.cpu_s < 0 || s.cpu_s < 0 ? -1 : sum.cpu_s + s.cpu_s;
        }
    }
    return sum;
}

double self_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// ---- options ----------------------------------------------------------------------------------

enum class Proto { chatsock, classic, redis };

// What one client speaks. Every client of a run speaks frames (or redis with --proto redis)
// unless --mix asks for a room of several kinds.
enum class Kind : unsigned char { frames, lines, websocket, redis };
constexpr const char* kind_names[] = {"frames", "lines", "websocket"};  // the kinds --mix takes
constexpr int mix_kinds = 3;

struct Options {
    std::string host = "127.0.0.1";
    int port = 1234;
    std::size_t clients = 2;
    std::uint64_t messages = 1000;
    std::size_t size = 64;
    std::size_t window = 0;  // 0: automatic
    double rate = 0;
    double timeout = 60;
    bool idle = false;
    bool raw = false;
    std::uint64_t raw_bytes = 2ull << 30;
    std::size_t raw_chunk = 1u << 20;
    std::size_t raw_streams = 1;
    std::size_t raw_broadcast = 0;  // K connections for --raw-broadcast; 0: not that mode
    int writer_cpu = -1;            // pin the forked writer of --raw-broadcast to this CPU
    Proto proto = Proto::chatsock;
    long server_pid = 0;            // the first of server_pids
    std::vector<long> server_pids;  // --server-pid P1,P2,...: figures summed over them
    std::vector<int> ports;         // --ports P1,P2,...: client i connects to P(i mod K)
    std::size_t connect_batch = 256;
    std::string label;
    std::string mix;                     // --mix as given; empty: not a mixed room
    std::size_t mix_count[mix_kinds]{};  // clients of each kind (frames, lines, websocket)
};

void usage() {
    std::fputs(
        "usage: chatsock_bench [options]\n"
        "  --host H            server address (127.0.0.1)\n"
        "  --port P            server port (1234)\n"
        "  --ports P1,P2,...   several servers sharing one room: client i connects to P(i mod K)\n"
        "  --clients N         connections (2)\n"
        "  --messages M        messages per client (1000)\n"
        "  --size S            payload bytes, >= 32 (64)\n"
        "  --window W          messages a sender may have not yet received by all others (auto)\n"
        "  --rate R            global messages per second, round robin over senders (0: flat out)\n"
        "  --timeout T         seconds for the whole run (60)\n"
        "  --idle              connect N clients, then one broadcast from client 0 to all others\n"
        "  --raw               loopback ceiling: a forked sender, this process reading, 1 MiB I/O\n"
        "  --raw-bytes B       bytes to move in --raw mode (2 GiB)\n"
        "  --raw-chunk B       bytes per write and per read in --raw mode (1 MiB)\n"
        "  --raw-streams K     connections in --raw mode, written round robin (1)\n"
        "  --raw-broadcast K   broadcast floor: one --raw-chunk to each of K connections, sent in "
        "a\n"
        "                      plain loop by a forked writer (--writer-cpu C pins it), read here\n"
        "  --proto P           chatsock | classic | redis (chatsock)\n"
        "  --mix frames:A,lines:B,websocket:C\n"
        "                      a room of A+B+C clients of those kinds; sets --clients\n"
        "  --server-pid PID    sample the server's RSS and CPU time from /proc (PID1,PID2,...:\n"
        "                      several servers, their figures summed)\n"
        "  --connect-batch K   connections being set up at once (256)\n"
        "  --label TEXT        copied into the JSON line\n",
        stderr);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) {
                usage();
                die(("missing value for " + a).c_str());
            }
            return argv[++i];
        };
        auto number = [&]() -> double {
            const char* v = value();
            char* end = nullptr;
            double d = std::strtod(v, &end);
            if (!end || *end || d < 0) die(("bad number for " + a + ": " + v).c_str());
            return d;
        };
        if (a == "--host") o.host = value();
        else if (a == "--port") o.port = static_cast<int>(number());
        else if (a == "--clients") o.clients = static_cast<std::size_t>(number());
        else if (a == "--messages") o.messages = static_cast<std::uint64_t>(number());
        else if (a == "--size") o.size = static_cast<std::size_t>(number());
        else if (a == "--window") o.window = static_cast<std::size_t>(number());
        else if (a == "--rate") o.rate = number();
        else if (a == "--timeout") o.timeout = number();
        else if (a == "--idle") o.idle = true;
        else if (a == "--raw") o.raw = true;
        else if (a == "--raw-bytes") o.raw_bytes = static_cast<std::uint64_t>(number());
        else if (a == "--raw-broadcast")
            o.raw_broadcast = std::max<std::size_t>(1, static_cast<std::size_t>(number()));
        else if (a == "--writer-cpu") o.writer_cpu = static_cast<int>(number());
        else if (a == "--raw-streams")
            o.raw_streams = std::max<std::size_t>(1, static_cast<std::size_t>(number()));
        else if (a == "--raw-chunk")
            o.raw_chunk = std::max<std::size_t>(1, static_cast<std::size_t>(number()));
        else if (a == "--server-pid" || a == "--ports") {
            const std::string list = value();
            for (std::size_t at = 0; at <= list.size();) {
                const std::size_t comma = std::min(list.find(',', at), list.size());
                const std::string item = list.substr(at, comma - at);
                char* end = nullptr;
                const long v = std::strtol(item.c_str(), &end, 10);
                if (item.empty() || *end || v < 1) die(("bad " + a + ": " + list).c_str());
                if (a == "--ports") o.ports.push_back(static_cast<int>(v));
                else o.server_pids.push_back(v);
                at = comma + 1;
            }
            if (a == "--ports") o.port = o.ports[0];
            else o.server_pid = o.server_pids[0];
        } else if (a == "--connect-batch")
            o.connect_batch = std::max<std::size_t>(1, static_cast<std::size_t>(number()));
        else if (a == "--label") o.label = value();
        else if (a == "--mix") {
            o.mix = value();
            std::fill(std::begin(o.mix_count), std::end(o.mix_count), 0);
            std::size_t at = 0;
            while (at <= o.mix.size()) {
                const std::size_t comma = std::min(o.mix.find(',', at), o.mix.size());
                const std::string item = o.mix.substr(at, comma - at);
                const std::size_t colon = item.find(':');
                int k = 0;
                while (k < mix_kinds && item.substr(0, colon) != kind_names[k]) ++k;
                char* end = nullptr;
                const char* digits = colon == std::string::npos ? "" : item.c_str() + colon + 1;
                const unsigned long count = std::strtoul(digits, &end, 10);
                if (k == mix_kinds || !*digits || *end)
                    die(("bad --mix item \"" + item + "\" (frames:N,lines:N,websocket:N)").c_str());
                o.mix_count[k] = count;
                at = comma + 1;
            }
        } else if (a == "--proto") {
            std::string p = value();
            if (p == "chatsock") o.proto = Proto::chatsock;
            else if (p == "classic") o.proto = Proto::classic;
            else if (p == "redis") o.proto = Proto::redis;
            else die(("unknown --proto " + p).c_str());
        } else if (a == "-h" || a == "--help") {
            usage();
            std::exit(0);
        } else {
            usage();
            die(("unknown option " + a).c_str());
        }
    }
    if (o.raw_broadcast) o.raw = true;
    if (!o.mix.empty()) {
        if (o.proto != Proto::chatsock) die("--mix needs --proto chatsock");
        o.clients = 0;
        for (std::size_t count : o.mix_count) o.clients += count;
    }
    if (o.ports.empty()) o.ports.push_back(o.port);
    if (o.ports.size() > 1 && o.proto != Proto::chatsock) die("--ports needs --proto chatsock");
    for (int port : o.ports)
        if (port > 65535) die("--ports: a port must be 1..65535");
    if (o.port < 1 || o.port > 65535) {
        if (!o.raw) die("--port must be 1..65535");
    }
    if (o.size < 32) die("--size must be at least 32 (the payload carries 32 bytes of header)");
    if (o.size > 60000) die("--size must be at most 60000 (chatsock's default limit is 64 KiB)");
    if (!o.raw && !o.idle && o.clients < 2) die("--clients must be at least 2");
    if (o.idle && o.clients < 2) die("--idle needs at least 2 clients");
    if (o.messages > 0xffffffffull) die("--messages too large");
    return o;
}

// Raises the descriptor limit to the hard limit. Returns a note for the report.
std::string raise_nofile(rlim_t& soft_out) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    std::string note;
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) != 0)
            note = std::string("setrlimit refused: ") + std::strerror(errno);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    soft_out = rl.rlim_cur;
    return note;
}

std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (static_cast<unsigned char>(ch) < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", ch);
            out += b;
        } else out += ch;
    }
    return out;
}

// A JSON object built field by field.
class Json {
public:
    void str(const char* k, const std::string& v) {
        key(k);
        out_ += '"' + json_escape(v) + '"';
    }
    void num(const char* k, double v, int decimals = 3) {
        key(k);
        char b[64];
        std::snprintf(b, sizeof b, "%.*f", decimals, v);
        out_ += b;
    }
    void integer(const char* k, long long v) {
        key(k);
        out_ += std::to_string(v);
    }
    void boolean(const char* k, bool v) {
        key(k);
        out_ += v ? "true" : "false";
    }
    void null(const char* k) {
        key(k);
        out_ += "null";
    }
    std::string done() const { return "{" + out_ + "}"; }

private:
    void key(const char* k) {
        if (!out_.empty()) out_ += ',';
        out_ += '"';
        out_ += k;
        out_ += "\":";
    }
    std::string out_;
};

// ---- the loopback ceiling ---------------------------------------------------------------------

// K TCP connections over loopback (--raw-streams, 1 by default): a child process writes
// --raw-chunk bytes at a time to each, as fast as the sockets take them, always from the same
// buffer (as a server copies one shared frame to many sockets); this process reads them all.
// Two processes, as in a chat run (the server writes, the bench reads), and no work besides the
// I/O: the number to compare a run's delivered MB/s with.
int run_raw(const Options& o) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t alen = sizeof a;
    const std::size_t k = o.raw_streams;
    if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(ls, static_cast<int>(k)) != 0 ||
        getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen) != 0)
        die("raw: cannot listen on loopback");
    std::vector<int> tx(k), rx(k);
    for (std::size_t i = 0; i < k; ++i) {
        tx[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(tx[i], reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            die("raw: cannot connect");
        rx[i] = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (rx[i] < 0) die("raw: accept failed");
    }
    close(ls);

    const std::size_t chunk = o.raw_chunk;
    const std::uint64_t per_stream = o.raw_bytes / k, total = per_stream * k;
    const std::uint64_t t0 = now_ns(), deadline = t0 + static_cast<std::uint64_t>(o.timeout * 1e9);
    pid_t child = fork();
    if (child < 0) die("raw: fork failed");
    if (child == 0) {  // the sender
        for (int fd : rx) close(fd);
        std::vector<char> out(chunk, 'x');
        std::vector<std::uint64_t> sent(k, 0);
        if (k == 1) {  // blocking writes: the plainest possible sender
            while (sent[0] < per_stream) {
                ssize_t w = write(
                    tx[0], out.data(),
                    static_cast<std::size_t>(std::min<std::uint64_t>(chunk, per_stream - sent[0])));
                if (w < 0 && errno == EINTR) continue;
                if (w <= 0) _exit(1);
                sent[0] += static_cast<std::uint64_t>(w);
            }
            _exit(0);
        }
        int ep = epoll_create1(EPOLL_CLOEXEC);
        for (std::size_t i = 0; i < k; ++i) {
            fcntl(tx[i], F_SETFL, O_NONBLOCK);
            epoll_event ev{};
            ev.events = EPOLLOUT;
            ev.data.u64 = i;
            epoll_ctl(ep, EPOLL_CTL_ADD, tx[i], &ev);
        }
        std::size_t done = 0;
        while (done < k) {
            epoll_event evs[256];
            int n = epoll_wait(ep, evs, 256, 1000);
            for (int e = 0; e < n; ++e) {
                const std::size_t i = evs[e].data.u64;
                while (sent[i] < per_stream) {
                    ssize_t w = write(tx[i], out.data(),
                                      static_cast<std::size_t>(
                                          std::min<std::uint64_t>(chunk, per_stream - sent[i])));
                    if (w < 0 && errno == EINTR) continue;
                    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    if (w <= 0) _exit(1);
                    sent[i] += static_cast<std::uint64_t>(w);
                }
                if (sent[i] == per_stream) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, tx[i], nullptr);
                    ++done;
                }
            }
        }
        _exit(0);
    }
    for (int fd : tx) close(fd);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (std::size_t i = 0; i < k; ++i) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = i;
        epoll_ctl(ep, EPOLL_CTL_ADD, rx[i], &ev);
    }
    std::vector<char> in(
        std::max<std::size_t>(chunk, 1u << 20));  // large reads, as the chat bench does
    std::uint64_t received = 0;
    bool timed_out = false, broken = false;
    const double cpu0 = self_cpu_s();
    while (received < total && !broken) {
        if (now_ns() > deadline) {
            timed_out = true;
            break;
        }
        epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < n; ++e) {
            const int fd = rx[evs[e].data.u64];
            for (int reads = 0; reads < 4; ++reads) {
                ssize_t r = read(fd, in.data(), in.size());
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) break;  // EAGAIN: drained
                if (r == 0) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
                    break;
                }
                received += static_cast<std::uint64_t>(r);
                if (static_cast<std::size_t>(r) < in.size()) break;
            }
        }
        if (n < 0 && errno != EINTR) broken = true;
    }
    const double elapsed = static_cast<double>(now_ns() - t0) / 1e9;
    const double reader_cpu = self_cpu_s() - cpu0;
    for (int fd : rx) close(fd);
    if (timed_out || broken) kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    const bool ok = !timed_out && received == total;
    Json j;
    j.str("mode", "raw");
    if (!o.label.empty()) j.str("label", o.label);
    j.integer("streams", static_cast<long long>(k));
    j.integer("chunk", static_cast<long long>(chunk));
    j.integer("bytes", static_cast<long long>(received));
    j.num("elapsed_s", elapsed);
    j.num("payload_MBps", static_cast<double>(received) / 1e6 / elapsed, 1);
    j.num("bench_cpu_s", reader_cpu);
    j.boolean("timed_out", timed_out);
    j.boolean("ok", ok);
    std::printf("%s\n", j.done().c_str());
    return ok ? 0 : 1;
}

// The floor of the idle workload's broadcast (--raw-broadcast K): what K send() calls to K idle
// loopback connections cost, and K reads of them, with nothing else to do. The writer, a
// child, accepts the K connections this process makes, waits for a byte on a pipe, then sends
// one chunk to each in order; the clock runs from that byte to the last chunk read here.
int run_raw_broadcast(const Options& o) {
    rlim_t nofile = 0;
    raise_nofile(nofile);
    const std::size_t k = o.raw_broadcast, chunk = o.raw_chunk;
    if (nofile < k + 16) die("--raw-broadcast: more connections than the descriptor limit");
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    int go[2];
    if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(ls, 4096) != 0 || getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen) != 0 ||
        pipe(go) != 0)
        die("raw-broadcast: cannot listen on loopback");
    pid_t child = fork();
    if (child < 0) die("raw-broadcast: fork failed");
    if (child == 0) {  // the writer
        close(go[1]);
        if (o.writer_cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(o.writer_cpu, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        std::vector<int> tx;
        for (std::size_t i = 0; i < k; ++i) {
            const int fd = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) _exit(1);
            const int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            tx.push_back(fd);
        }
        char c;
        if (read(go[0], &c, 1) != 1) _exit(1);
        const std::vector<char> out(chunk, 'x');
        for (int fd : tx)  // blocking sockets: one small send to an idle connection never waits
            if (send(fd, out.data(), chunk, MSG_NOSIGNAL) != static_cast<ssize_t>(chunk)) _exit(1);
        if (read(go[0], &c, 1) < 0) _exit(1);  // stay until the reader is done (or gone)
        _exit(0);
    }
    close(go[0]);
    close(ls);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    std::vector<int> rx;
    for (std::size_t i = 0; i < k; ++i) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            die("raw-broadcast: cannot connect");
        fcntl(fd, F_SETFL, O_NONBLOCK);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = rx.size();
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        rx.push_back(fd);
    }
    usleep(200000);  // let the writer finish accepting and settle
    const std::uint64_t total = static_cast<std::uint64_t>(k) * chunk;
    std::uint64_t received = 0;
    std::vector<char> in(1u << 16);
    const std::uint64_t t0 = now_ns(), deadline = t0 + static_cast<std::uint64_t>(o.timeout * 1e9);
    bool timed_out = false;
    if (write(go[1], "g", 1) != 1) die("raw-broadcast: the writer is gone");
    while (received < total) {
        if (now_ns() > deadline) {
            timed_out = true;
            break;
        }
        epoll_event evs[512];
        const int n = epoll_wait(ep, evs, 512, 100);
        for (int e = 0; e < n; ++e) {
            const ssize_t r = recv(rx[evs[e].data.u64], in.data(), in.size(), 0);
            if (r > 0) received += static_cast<std::uint64_t>(r);
        }
    }
    const double ms = static_cast<double>(now_ns() - t0) / 1e6;
    close(go[1]);
    if (timed_out) kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    for (int fd : rx) close(fd);
    const bool ok =
        !timed_out && received == total && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    Json j;
    j.str("mode", "raw_broadcast");
    if (!o.label.empty()) j.str("label", o.label);
    j.integer("streams", static_cast<long long>(k));
    j.integer("chunk", static_cast<long long>(chunk));
    j.num("broadcast_ms", ms, 2);
    j.boolean("timed_out", timed_out);
    j.boolean("ok", ok);
    std::printf("%s\n", j.done().c_str());
    return ok ? 0 : 1;
}

// ---- the chat / pub-sub load generator --------------------------------------------------------

enum class State { unstarted, connecting, naming, joined, failed };

// RFC 6455's sample handshake (section 1.3): this key's accept value is known, so the bench
// checks the server's answer without a SHA-1 of its own. The server's work is the same.
constexpr std::string_view websocket_key = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view websocket_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// A client's text frame header: final, opcode text, masked, then the 4-byte mask. Returns the
// mask, for the caller to apply to the `len` payload bytes it appends next.
std::uint32_t append_websocket_header(std::string& out, std::size_t len, std::uint32_t mask) {
    char h[8];
    std::size_t k = 0;
    h[k++] = static_cast<char>(0x81);
    if (len < 126) {
        h[k++] = static_cast<char>(0x80 | len);
    } else {  // the bench's payloads stay under 64 KiB (--size <= 60000)
        h[k++] = static_cast<char>(0x80 | 126);
        h[k++] = static_cast<char>(len >> 8);
        h[k++] = static_cast<char>(len & 0xff);
    }
    out.append(h, k);
    for (int i = 0; i < 4; ++i) out += static_cast<char>(mask >> (8 * i));
    return mask;
}

void apply_websocket_mask(char* p, std::size_t len, std::uint32_t mask) {
    for (std::size_t i = 0; i < len; ++i) p[i] ^= static_cast<char>(mask >> (8 * (i % 4)));
}

struct Client {
    int fd = -1;
    std::uint32_t index = 0;
    State state = State::unstarted;
    Kind kind = Kind::frames;
    bool upgraded = false;  // websocket: the server's 101 has arrived

    std::string in;   // bytes of an unfinished frame
    std::string out;  // bytes to send
    std::size_t out_off = 0;
    std::uint32_t events = 0;  // the epoll interest now registered
    bool dirty = false;        // in the list of senders to refill
    // chat framing: frames come in pairs (sender, text)
    bool have_sender = false;
    int sender_kind = 0;  // 0 ours, 1 server notice, 2 unknown
    std::uint32_t sender = 0;
    std::uint64_t sent = 0;  // messages this client has sent
    // redis
    bool hello_done = false;
    std::size_t subs = 0, subs_expected = 0;
};

class Bench {
public:
    explicit Bench(Options o) : o_(std::move(o)), n_(o_.clients) {}

    int run();

private:
    // setup
    void resolve();
    void start_connect(Client& c);
    void set_interest(Client& c, std::uint32_t events);
    void queue_handshake(Client& c);
    void fail_client(Client& c, const char* why, bool during_run);
    void mark_joined(Client& c);
    // io
    void pump(int timeout_ms);
    void on_event(Client& c, std::uint32_t events);
    void on_readable(Client& c);
    void flush(Client& c);
    void refill_senders();
    void mark_dirty(std::uint32_t s);
    // protocol
    std::size_t parse_chat(Client& c, const char* p, std::size_t n);
    std::size_t parse_redis(Client& c, const char* p, std::size_t n);
    // Out of line, so that the frames path's code (parse_chat, inlined into pump) stays as it was.
    [[gnu::noinline]] std::size_t parse_lines(Client& c, const char* p, std::size_t n);
    [[gnu::noinline]] std::size_t parse_websocket(Client& c, const char* p, std::size_t n);
    void parse_json(Client& c, const char* p, std::size_t n);
    void handle_text(Client& c, std::string_view from, std::string_view text);
    void handle_notice(Client& c, std::string_view text);
    void handle_payload(Client& c, std::uint32_t sender, const char* p, std::size_t len);
    void append_message(Client& c, std::uint64_t seq, std::uint64_t t);
    void append_sync(Client& c);
    bool can_send(std::uint32_t s) const {
        const Client& c = clients_[s];
        return c.state == State::joined && c.sent < o_.messages && c.sent < complete_[s] + window_;
    }
    void corrupt(const char* what);
    bool deadline_passed() const { return now_ns() >= deadline_; }

    Options o_;
    std::size_t n_;
    std::vector<sockaddr_storage> addrs_;  // one per --ports entry; client i uses i mod K
    std::vector<socklen_t> addr_lens_;
    int ep_ = -1;
    int timer_fd_ = -1;
    std::vector<Client> clients_;
    std::string tag_;
    std::string pad_;  // the padding pattern, S + 26 bytes
    std::uint64_t deadline_ = 0;
    std::uint64_t read_time_ = 0;   // when the bytes being parsed were read
    std::uint64_t ready_time_ = 0;  // when epoll_wait last returned: all it reported had arrived
    std::vector<char> scratch_;

    // progress
    std::size_t connected_ = 0, joined_ = 0, failed_ = 0, pending_ = 0, next_connect_ = 0;
    std::size_t connect_errors_ = 0, refused_ = 0, disconnected_ = 0, protocol_errors_ = 0;
    std::uint64_t join_notices_ = 0, leave_notices_ = 0, other_notices_ = 0;
    std::uint64_t join_notices_expected_ = 0;  // what the welcomes promised
    bool unannounced_ = false;                 // a welcome said joins are not announced
    std::uint64_t corrupt_ = 0, order_violations_ = 0, received_ = 0, stray_ = 0;
    std::uint64_t publish_mismatch_ = 0;
    bool measuring_ = false;
    std::size_t window_ = 1;
    std::vector<std::uint32_t> expect_;    // [receiver * N + sender]: next sequence number
    std::vector<std::uint32_t> complete_;  // [sender]: every message below this reached all others
    std::vector<std::uint32_t> ring_;      // [sender * W + seq % W]: receivers that have it
    std::vector<std::uint32_t> dirty_;     // senders whose window may have opened
    std::uint32_t receivers_per_message_ = 0;
    Histogram latency_;        // send -> just after the bench's read of it
    Histogram ready_latency_;  // send -> the epoll_wait that reported it (leaves out the bench's
                               // own reads of the sockets before it in the same batch)
    std::uint64_t broadcast_received_ = 0;
    int notes_printed_ = 0;
    // --mix: the latency of the line and WebSocket clients' deliveries apart (they are in
    // latency_ too; the frames clients' share is latency_ less these), made only for --mix;
    // and the counter the WebSocket masks come from.
    std::vector<Histogram> kind_latency_;
    std::uint32_t mask_seed_ = 0x9e3779b9u;
};

void Bench::corrupt(const char* what) {
    ++corrupt_;
    if (notes_printed_++ < 10) std::fprintf(stderr, "chatsock_bench: corrupt delivery: %s\n", what);
}

void Bench::resolve() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    for (int p : o_.ports) {
        addrinfo* list = nullptr;
        std::string port = std::to_string(p);
        if (getaddrinfo(o_.host.c_str(), port.c_str(), &hints, &list) != 0 || !list)
            die("cannot resolve --host");
        addrs_.emplace_back();
        std::memcpy(&addrs_.back(), list->ai_addr, list->ai_addrlen);
        addr_lens_.push_back(list->ai_addrlen);
        freeaddrinfo(list);
    }
}

void Bench::set_interest(Client& c, std::uint32_t events) {
    if (events == c.events) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = c.index;
    epoll_ctl(ep_, c.events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c.fd, &ev);
    c.events = events;
}

void Bench::start_connect(Client& c) {
    const std::size_t server = c.index % addrs_.size();
    c.fd = socket(addrs_[server].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        if (connect_errors_++ < 3)
            std::fprintf(stderr, "chatsock_bench: socket: %s\n", std::strerror(errno));
        c.state = State::failed;
        ++failed_;
        return;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(c.fd, reinterpret_cast<sockaddr*>(&addrs_[server]), addr_lens_[server]);
    if (rc != 0 && errno != EINPROGRESS) {
        if (connect_errors_++ < 3)
            std::fprintf(stderr, "chatsock_bench: connect: %s\n", std::strerror(errno));
        close(c.fd);
        c.fd = -1;
        c.state = State::failed;
        ++failed_;
        return;
    }
    c.state = State::connecting;
    ++pending_;
    queue_handshake(c);
    set_interest(c, EPOLLIN | EPOLLOUT);
}

void Bench::queue_handshake(Client& c) {
    if (o_.proto == Proto::redis) {
        c.out += "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
        std::vector<std::string> channels;
        if (o_.idle) {
            if (c.index != 0) channels.push_back(tag_ + ".all");
        } else {
            for (std::uint32_t j = 0; j < n_; ++j)
                if (j != c.index) channels.push_back(tag_ + "." + std::to_string(j));
        }
        c.subs_expected = channels.size();
        if (!channels.empty()) {
            append_resp_array_header(c.out, channels.size() + 1);
            append_resp_bulk(c.out, "SUBSCRIBE");
            for (const auto& ch : channels) append_resp_bulk(c.out, ch);
        }
    } else if (c.kind == Kind::frames) {
        std::string name = tag_ + "_" + std::to_string(c.index);
        append_frame_header(c.out, name.size());
        c.out += name;
    } else if (c.kind == Kind::lines) {
        c.out += tag_ + "_" + std::to_string(c.index) + "\n";
    } else {  // the name goes once the 101 is in (parse_websocket), as a browser waits for it
        c.out += "GET / HTTP/1.1\r\nHost: " + o_.host + ":" +
                 std::to_string(o_.ports[c.index % o_.ports.size()]) +
                 "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: " +
                 std::string(websocket_key) + "\r\nSec-WebSocket-Version: 13\r\n\r\n";
    }
}

void Bench::fail_client(Client& c, const char* why, bool during_run) {
    if (c.state == State::failed) return;
    if (c.state == State::connecting || c.state == State::naming) --pending_;
    if (c.state == State::joined) --joined_;
    if (during_run) ++disconnected_;
    if (notes_printed_++ < 10)
        std::fprintf(stderr, "chatsock_bench: client %u: %s\n", c.index, why);
    c.state = State::failed;
    ++failed_;
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
}

void Bench::mark_joined(Client& c) {
    if (c.state != State::naming && c.state != State::connecting) return;
    if (c.state == State::connecting) ++connected_;
    c.state = State::joined;
    --pending_;
    ++joined_;
}

void Bench::mark_dirty(std::uint32_t s) {
    Client& c = clients_[s];
    if (!c.dirty) {
        c.dirty = true;
        dirty_.push_back(s);
    }
}

// One message: the chat frame, or a Redis PUBLISH to the sender's own channel.
void Bench::append_message(Client& c, std::uint64_t seq, std::uint64_t t) {
    const std::size_t S = o_.size;
    std::uint32_t mask = 0;
    switch (c.kind) {
    case Kind::frames: append_frame_header(c.out, S); break;
    case Kind::redis: {
        std::string ch = o_.idle ? tag_ + ".all" : tag_ + "." + std::to_string(c.index);
        c.out += "*3\r\n$7\r\nPUBLISH\r\n";
        append_resp_bulk(c.out, ch);
        char h[32];
        int k = std::snprintf(h, sizeof h, "$%zu\r\n", S);
        c.out.append(h, static_cast<std::size_t>(k));
        break;
    }
    case Kind::lines: break;
    case Kind::websocket:
        mask_seed_ = mask_seed_ * 1664525u + 1013904223u;
        mask = append_websocket_header(c.out, S, mask_seed_);
        break;
    }
    const std::size_t at = c.out.size();
    c.out.resize(at + S);
    char* p = &c.out[at];
    put_hex(p, c.index, 8);
    put_hex(p + 8, seq, 8);
    put_hex(p + 16, t, 16);
    std::memcpy(p + 32, pad_.data() + seq % 26, S - 32);
    if (c.kind == Kind::frames) return;
    if (c.kind == Kind::redis) c.out.append("\r\n", 2);
    else if (c.kind == Kind::lines) c.out += '\n';
    else apply_websocket_mask(p, S, mask);
}

void Bench::append_sync(Client& c) {
    append_frame_header(c.out, 4);
    c.out += "sync";
}

void Bench::flush(Client& c) {
    if (c.fd < 0) return;
    while (c.out_off < c.out.size()) {
        ssize_t w = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (w > 0) {
            c.out_off += static_cast<std::size_t>(w);
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) break;
        return fail_client(c, (std::string("send: ") + std::strerror(errno)).c_str(), measuring_);
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
    } else if (c.out_off > (1u << 20)) {
        c.out.erase(0, c.out_off);
        c.out_off = 0;
    }
    set_interest(c, EPOLLIN | (c.out.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT)));
}

// Flat-out mode: every sender whose window has room appends what it may, then writes.
void Bench::refill_senders() {
    if (!measuring_ || o_.rate > 0 || o_.idle) {
        for (std::uint32_t s : dirty_) clients_[s].dirty = false;
        dirty_.clear();
        return;
    }
    std::vector<std::uint32_t> list;
    list.swap(dirty_);
    const std::uint64_t t = now_ns();
    for (std::uint32_t s : list) {
        Client& c = clients_[s];
        c.dirty = false;
        if (c.state != State::joined) continue;
        if (c.out.size() - c.out_off > (256u << 10))
            continue;  // the socket is behind; EPOLLOUT resumes
        int batch = 0;
        while (can_send(s) && batch < 256) {
            append_message(c, c.sent++, t);
            ++batch;
        }
        if (batch) flush(c);
    }
}

void Bench::on_event(Client& c, std::uint32_t events) {
    if (c.state == State::connecting && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            ++connect_errors_;
            return fail_client(c, (std::string("connect: ") + std::strerror(err)).c_str(), false);
        }
        c.state = State::naming;
        ++connected_;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if (c.state == State::failed) return;
    if (events & EPOLLOUT) {
        flush(c);
        if (c.state != State::failed && c.out.empty()) mark_dirty(c.index);
    }
}

void Bench::on_readable(Client& c) {
    std::size_t budget = 1u << 20;
    while (budget > 0 && c.fd >= 0) {
        const std::size_t have = c.in.size();
        if (have + 65536 > scratch_.size()) scratch_.resize(have + (512u << 10));
        if (have) std::memcpy(scratch_.data(), c.in.data(), have);
        const std::size_t room = scratch_.size() - have;
        ssize_t r = recv(c.fd, scratch_.data() + have, room, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            return fail_client(c, (std::string("recv: ") + std::strerror(errno)).c_str(),
                               c.state == State::joined);
        }
        if (r == 0) {
            const bool was_joined = c.state == State::joined;
            if (!was_joined && c.state != State::failed && o_.proto == Proto::chatsock) ++refused_;
            return fail_client(c, "connection closed by the server", was_joined);
        }
        read_time_ = now_ns();
        const std::size_t total = have + static_cast<std::size_t>(r);
        std::size_t used = 0;
        switch (c.kind) {
        case Kind::frames: used = parse_chat(c, scratch_.data(), total); break;
        case Kind::redis: used = parse_redis(c, scratch_.data(), total); break;
        case Kind::lines: used = parse_lines(c, scratch_.data(), total); break;
        case Kind::websocket: used = parse_websocket(c, scratch_.data(), total); break;
        }
        if (c.fd < 0) return;
        c.in.assign(scratch_.data() + used, total - used);
        budget -= std::min<std::size_t>(budget, static_cast<std::size_t>(r));
        if (static_cast<std::size_t>(r) < room) return;  // drained for now
    }
}

std::size_t Bench::parse_chat(Client& c, const char* p, std::size_t n) {
    std::size_t pos = 0;
    const std::size_t max_frame = std::max<std::size_t>(o_.size, 1u << 16) + 1024;
    while (n - pos >= 10) {
        std::uint64_t len = 0;
        if (!parse_frame_header(p + pos, len) || len > max_frame) {
            corrupt("bad frame header");
            fail_client(c, "bad frame header from the server", c.state == State::joined);
            return n;
        }
        if (n - pos - 10 < len) break;
        const char* f = p + pos + 10;
        pos += 10 + static_cast<std::size_t>(len);
        if (!c.have_sender) {
            c.have_sender = true;
            const std::string_view name(f, static_cast<std::size_t>(len));
            if (o_.proto == Proto::chatsock && name == "server") {
                c.sender_kind = 1;
            } else if (name.size() > tag_.size() + 1 && name.compare(0, tag_.size(), tag_) == 0 &&
                       name[tag_.size()] == '_') {
                std::uint64_t idx = 0;
                bool ok = true;
                for (std::size_t i = tag_.size() + 1; i < name.size(); ++i) {
                    if (name[i] < '0' || name[i] > '9') {
                        ok = false;
                        break;
                    }
                    idx = idx * 10 + static_cast<unsigned>(name[i] - '0');
                }
                c.sender_kind = ok && idx < n_ ? 0 : 2;
                c.sender = static_cast<std::uint32_t>(idx);
            } else {
                c.sender_kind = 2;
            }
            continue;
        }
        c.have_sender = false;
        const std::size_t flen = static_cast<std::size_t>(len);
        if (c.sender_kind == 1) {
            handle_notice(c, std::string_view(f, flen));
        } else if (c.sender_kind == 2) {
            ++stray_;
            if (notes_printed_++ < 10)
                std::fprintf(stderr, "chatsock_bench: frame from an unknown sender\n");
        } else if (flen == 4 && std::memcmp(f, "sync", 4) == 0 && c.sender == 0) {
            if (o_.proto == Proto::classic && c.state == State::naming) mark_joined(c);
        } else {
            handle_payload(c, c.sender, f, flen);
        }
        if (c.fd < 0) return n;
    }
    return pos;
}

void Bench::handle_notice(Client& c, std::string_view text) {
    auto ends_with = [&](std::string_view s) {
        return text.size() >= s.size() && text.substr(text.size() - s.size()) == s;
    };
    if (text.rfind("welcome, ", 0) == 0 && c.state == State::naming) {
        // "welcome, NAME! K other users online": K others get "NAME joined", unless the room is
        // too big for the server to announce joins ("...; joins and leaves are not announced...").
        const std::size_t bang = text.find("! ");
        std::uint64_t others = 0;
        for (std::size_t i = bang == std::string_view::npos ? text.size() : bang + 2;
             i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i)
            others = others * 10 + static_cast<unsigned>(text[i] - '0');
        if (text.find("not announced") == std::string_view::npos) join_notices_expected_ += others;
        else unannounced_ = true;
        mark_joined(c);
    } else if (ends_with(" joined") && text.rfind(tag_ + "_", 0) == 0) {
        ++join_notices_;
    } else if (text.find(" left") != std::string_view::npos) {
        ++leave_notices_;
    } else {
        ++other_notices_;
        if (c.state == State::naming) ++refused_;
        if (notes_printed_++ < 10)
            std::fprintf(stderr, "chatsock_bench: client %u: notice \"%.*s\"\n", c.index,
                         static_cast<int>(std::min<std::size_t>(text.size(), 200)), text.data());
        if (c.state == State::naming) fail_client(c, "refused by the server", false);
    }
}

void Bench::handle_payload(Client& c, std::uint32_t sender, const char* p, std::size_t len) {
    if (len != o_.size) return corrupt("payload of the wrong size");
    std::uint64_t s = 0, seq = 0, t = 0;
    if (!get_hex(p, 8, s) || !get_hex(p + 8, 8, seq) || !get_hex(p + 16, 16, t))
        return corrupt("payload fields are not hex");
    if (s != sender) return corrupt("payload's sender does not match the frame's sender");
    if (std::memcmp(p + 32, pad_.data() + seq % 26, len - 32) != 0)
        return corrupt("payload padding damaged");
    if (sender == c.index) return corrupt("a client received its own message");
    ++received_;
    if (read_time_ > t) latency_.add(read_time_ - t);
    // Bytes that came after epoll_wait returned (read in the same recv) count from the read.
    const std::uint64_t ready = ready_time_ > t ? ready_time_ : read_time_;
    if (ready > t) ready_latency_.add(ready - t);
    if (o_.idle) {
        ++broadcast_received_;
        return;
    }
    std::uint32_t& want = expect_[static_cast<std::size_t>(c.index) * n_ + sender];
    if (seq != want) {
        if (order_violations_++ < 5)
            std::fprintf(stderr,
                         "chatsock_bench: order: receiver %u got seq %" PRIu64
                         " from %u, expected %u\n",
                         c.index, seq, sender, want);
        want = static_cast<std::uint32_t>(seq + 1);
        return;
    }
    ++want;
    // Window accounting: the message is done once all N-1 receivers have it.
    std::uint32_t& done = complete_[sender];
    if (seq < done || seq >= static_cast<std::uint64_t>(done) + window_) return;
    std::uint32_t* ring = &ring_[static_cast<std::size_t>(sender) * window_];
    ++ring[seq % window_];
    bool advanced = false;
    while (done < clients_[sender].sent && ring[done % window_] == receivers_per_message_) {
        ring[done % window_] = 0;
        ++done;
        advanced = true;
    }
    if (advanced) mark_dirty(sender);
}

// ---- the line and WebSocket clients (--mix) -------------------------------------------------

// A delivery to a line or WebSocket client, its sender's name and text already taken apart.
void Bench::handle_text(Client& c, std::string_view from, std::string_view text) {
    std::uint64_t idx = 0;
    bool ours = from.size() > tag_.size() + 1 && from.compare(0, tag_.size(), tag_) == 0 &&
                from[tag_.size()] == '_';
    for (std::size_t i = tag_.size() + 1; ours && i < from.size(); ++i) {
        ours = from[i] >= '0' && from[i] <= '9';
        idx = idx * 10 + static_cast<unsigned>(from[i] - '0');
    }
    if (!ours || idx >= n_) {
        ++stray_;
        if (notes_printed_++ < 10)
            std::fprintf(stderr, "chatsock_bench: a message from an unknown sender \"%.*s\"\n",
                         static_cast<int>(std::min<std::size_t>(from.size(), 64)), from.data());
        return;
    }
    const std::uint64_t before = received_;
    handle_payload(c, static_cast<std::uint32_t>(idx), text.data(), text.size());
    std::uint64_t t = 0;
    if (received_ != before && get_hex(text.data() + 16, 16, t) && read_time_ > t)
        kind_latency_[static_cast<int>(c.kind)].add(read_time_ - t);
}

// "FROM: TEXT\r\n" and "* NOTICE\r\n", one line each.
std::size_t Bench::parse_lines(Client& c, const char* p, std::size_t n) {
    std::size_t pos = 0;
    while (pos < n) {
        const void* nl = std::memchr(p + pos, '\n', n - pos);
        if (!nl) {
            if (n - pos > std::max<std::size_t>(o_.size, 1u << 16) + 1024) {
                corrupt("a line with no end");
                fail_client(c, "a line with no end from the server", c.state == State::joined);
                return n;
            }
            break;
        }
        const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        std::string_view line(p + pos, end - pos);
        pos = end + 1;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() >= 2 && line[0] == '*' && line[1] == ' ') {
            handle_notice(c, line.substr(2));
        } else {
            const std::size_t colon = line.find(": ");
            if (colon == std::string_view::npos)
                corrupt("a line that is neither a message nor a notice");
            else handle_text(c, line.substr(0, colon), line.substr(colon + 2));
        }
        if (c.fd < 0) return n;
    }
    return pos;
}

// The end of a JSON string whose text starts at s[i]: the index of its closing quote, or npos.
std::size_t json_string_end(std::string_view s, std::size_t i) {
    for (std::size_t q = s.find('"', i); q != std::string_view::npos; q = s.find('"', q + 1)) {
        std::size_t slashes = 0;
        while (q - slashes > i && s[q - slashes - 1] == '\\') ++slashes;
        if (slashes % 2 == 0) return q;
    }
    return std::string_view::npos;
}

// {"from":"...","text":"..."} or {"from":"server","text":"...","notice":true}. A notice's text
// is used as it stands, escapes and all (only its words matter); a message's text must be the
// payload as sent, which needs no escaping.
void Bench::parse_json(Client& c, const char* p, std::size_t n) {
    constexpr std::string_view from_key = "{\"from\":\"", text_key = ",\"text\":\"";
    const std::string_view s(p, n);
    const std::size_t from_end = s.compare(0, from_key.size(), from_key) == 0
                                     ? json_string_end(s, from_key.size())
                                     : std::string_view::npos;
    const std::size_t text_at = from_end + 1 + text_key.size();
    const std::size_t text_end = from_end != std::string_view::npos &&
                                         s.compare(from_end + 1, text_key.size(), text_key) == 0
                                     ? json_string_end(s, text_at)
                                     : std::string_view::npos;
    if (text_end == std::string_view::npos)
        return corrupt("a WebSocket message that is not chat JSON");
    const std::string_view rest = s.substr(text_end + 1),
                           text = s.substr(text_at, text_end - text_at);
    if (rest == ",\"notice\":true}") handle_notice(c, text);
    else if (rest == "}")
        handle_text(c, s.substr(from_key.size(), from_end - from_key.size()), text);
    else corrupt("a WebSocket message that is not chat JSON");
}

// The server's 101, then its frames: unmasked, one final text frame per event.
std::size_t Bench::parse_websocket(Client& c, const char* p, std::size_t n) {
    std::size_t pos = 0;
    if (!c.upgraded) {
        const std::string_view head(p, n);
        const std::size_t end = head.find("\r\n\r\n");
        if (end == std::string_view::npos && n <= 8192) return 0;
        const std::string_view status = head.substr(0, head.find('\r'));
        if (end == std::string_view::npos || status.rfind("HTTP/1.1 101 ", 0) != 0 ||
            head.substr(0, end).find(websocket_accept) == std::string_view::npos) {
            if (c.state == State::naming) ++refused_;
            if (notes_printed_++ < 10)
                std::fprintf(stderr,
                             "chatsock_bench: client %u: WebSocket handshake answered \"%.*s\"\n",
                             c.index, static_cast<int>(std::min<std::size_t>(status.size(), 200)),
                             status.data());
            fail_client(c, "WebSocket handshake refused", false);
            return n;
        }
        c.upgraded = true;
        pos = end + 4;
        const std::string name = tag_ + "_" + std::to_string(c.index);
        mask_seed_ = mask_seed_ * 1664525u + 1013904223u;
        const std::uint32_t mask = append_websocket_header(c.out, name.size(), mask_seed_);
        const std::size_t at = c.out.size();
        c.out += name;
        apply_websocket_mask(&c.out[at], name.size(), mask);
        flush(c);
        if (c.fd < 0) return n;
    }
    const std::size_t max_frame = std::max<std::size_t>(o_.size, 1u << 16) + 1024;
    while (n - pos >= 2) {
        const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(p[pos + k]); };
        const unsigned op = byte(0) & 0x0f, length7 = byte(1) & 0x7f;
        const std::size_t extra = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
        if (n - pos < 2 + extra) break;
        std::uint64_t len = extra ? 0 : length7;
        for (std::size_t k = 0; k < extra; ++k) len = len << 8 | byte(2 + k);
        if ((byte(1) & 0x80) || (byte(0) & 0x70) || len > max_frame) {
            corrupt("a masked, reserved-bit or oversized WebSocket frame from the server");
            fail_client(c, "a bad WebSocket frame from the server", c.state == State::joined);
            return n;
        }
        if (n - pos - 2 - extra < len) break;
        const char* f = p + pos + 2 + extra;
        const bool fin = byte(0) & 0x80;
        pos += 2 + extra + static_cast<std::size_t>(len);
        if (op == 8) {  // close: the notice that says why came before it
            fail_client(c, "a WebSocket close frame from the server", c.state == State::joined);
            return n;
        }
        if (op == 9 || op == 10) continue;  // ping, pong: the server sends none; not chat
        if (op != 1 || !fin) {
            corrupt("a WebSocket frame that is not one whole text message");
            fail_client(c, "an unexpected WebSocket frame from the server",
                        c.state == State::joined);
            return n;
        }
        parse_json(c, f, static_cast<std::size_t>(len));
        if (c.fd < 0) return n;
    }
    return pos;
}

// RESP2/RESP3: returns the end of the value starting at pos, 0 when incomplete, SIZE_MAX when
// malformed. Top-level children that are strings or numbers are collected into `parts`.
struct RespValue {
    char type = 0;
    std::string_view parts[4];
    std::size_t nparts = 0;
    long long integer = 0;
};

constexpr std::size_t resp_bad = static_cast<std::size_t>(-1);

std::size_t resp_line_end(const char* p, std::size_t pos, std::size_t n) {
    const void* cr = std::memchr(p + pos, '\r', n - pos);
    if (!cr) return 0;
    std::size_t at = static_cast<std::size_t>(static_cast<const char*>(cr) - p);
    if (at + 1 >= n) return 0;
    return at;  // index of '\r'
}

std::size_t resp_value(const char* p, std::size_t pos, std::size_t n, int depth, RespValue* top) {
    if (pos >= n) return 0;
    if (depth > 8) return resp_bad;
    const char type = p[pos];
    const std::size_t cr = resp_line_end(p, pos + 1, n);
    if (cr == 0) return 0;
    const std::string_view line(p + pos + 1, cr - pos - 1);
    const std::size_t after = cr + 2;
    long long num = 0;
    auto parse_num = [&]() {
        bool neg = false;
        std::size_t i = 0;
        if (!line.empty() && line[0] == '-') {
            neg = true;
            i = 1;
        }
        for (; i < line.size(); ++i) {
            if (line[i] < '0' || line[i] > '9') return false;
            num = num * 10 + (line[i] - '0');
        }
        if (neg) num = -num;
        return true;
    };
    if (top) {
        top->type = type;
        top->nparts = 0;
    }
    switch (type) {
    case '+':
    case '-':
    case ',':
    case '(':
    case '#':
    case '_':
        if (top) {
            top->parts[0] = line;
            top->nparts = 1;
        }
        return after;
    case ':':
        if (!parse_num()) return resp_bad;
        if (top) top->integer = num;
        return after;
    case '$':
    case '=':
    case '!': {
        if (!parse_num()) return resp_bad;
        if (num < 0) return after;  // null
        const std::size_t end = after + static_cast<std::size_t>(num);
        if (end + 2 > n) return 0;
        if (top) {
            top->parts[0] = std::string_view(p + after, static_cast<std::size_t>(num));
            top->nparts = 1;
        }
        return end + 2;
    }
    case '*':
    case '>':
    case '~':
    case '%':
    case '|': {
        if (!parse_num()) return resp_bad;
        if (num < 0) return after;
        long long count = type == '%' || type == '|' ? num * 2 : num;
        std::size_t at = after;
        for (long long i = 0; i < count; ++i) {
            const char child_type = at < n ? p[at] : 0;
            RespValue child;
            std::size_t next = resp_value(p, at, n, depth + 1, &child);
            if (next == 0 || next == resp_bad) return next;
            if (top && top->nparts < 4) {
                if (child_type == ':')
                    top->parts[top->nparts++] = std::string_view(p + at + 1, next - at - 3);
                else top->parts[top->nparts++] = child.nparts ? child.parts[0] : std::string_view();
            }
            at = next;
        }
        return at;
    }
    default: return resp_bad;
    }
}

std::size_t Bench::parse_redis(Client& c, const char* p, std::size_t n) {
    std::size_t pos = 0;
    while (pos < n) {
        RespValue v;
        const std::size_t next = resp_value(p, pos, n, 0, &v);
        if (next == 0) break;
        if (next == resp_bad) {
            ++protocol_errors_;
            fail_client(c, "malformed RESP from the server", c.state == State::joined);
            return n;
        }
        pos = next;
        if (v.type == '>' && v.nparts >= 3 && v.parts[0] == "message") {
            const std::string_view ch = v.parts[1];
            std::uint32_t sender = 0;
            if (ch.size() > tag_.size() + 1 && ch.compare(0, tag_.size(), tag_) == 0) {
                std::string_view rest = ch.substr(tag_.size() + 1);
                if (rest == "all") sender = 0;
                else {
                    std::uint64_t idx = 0;
                    for (char d : rest) idx = idx * 10 + static_cast<unsigned>(d - '0');
                    sender = static_cast<std::uint32_t>(idx);
                }
                if (sender < n_) handle_payload(c, sender, v.parts[2].data(), v.parts[2].size());
                else ++stray_;
            } else {
                ++stray_;
            }
        } else if (v.type == '>' && v.nparts >= 1 && v.parts[0] == "subscribe") {
            ++c.subs;
            if (c.hello_done && c.subs == c.subs_expected && c.state == State::naming)
                mark_joined(c);
        } else if (v.type == ':') {
            // a PUBLISH reply: how many subscribers got it
            const long long want =
                o_.idle ? static_cast<long long>(joined_) - 1 : static_cast<long long>(n_) - 1;
            if (v.integer != want) ++publish_mismatch_;
        } else if (v.type == '-' || v.type == '!') {
            ++protocol_errors_;
            if (notes_printed_++ < 10)
                std::fprintf(stderr, "chatsock_bench: redis error: %.*s\n",
                             static_cast<int>(v.parts[0].size()), v.parts[0].data());
        } else if (!c.hello_done && (v.type == '%' || v.type == '*')) {
            c.hello_done = true;
            if (c.subs == c.subs_expected && c.state == State::naming) mark_joined(c);
        }
    }
    return pos;
}

void Bench::pump(int timeout_ms) {
    epoll_event evs[512];
    int n = epoll_wait(ep_, evs, 512, timeout_ms);
    if (n > 0) ready_time_ = now_ns();
    for (int i = 0; i < n; ++i) {
        const std::uint64_t id = evs[i].data.u64;
        if (id == UINT64_MAX) {  // the rate timer
            std::uint64_t ticks;
            [[maybe_unused]] ssize_t r = read(timer_fd_, &ticks, sizeof ticks);
            continue;
        }
        Client& c = clients_[id];
        if (c.state == State::failed) continue;
        on_event(c, evs[i].events);
    }
    refill_senders();
}

int Bench::run() {
    rlim_t nofile = 0;
    const std::string nofile_note = raise_nofile(nofile);
    if (nofile < n_ + 16) {
        std::fprintf(
            stderr,
            "chatsock_bench: %zu clients need more descriptors than the limit of %llu%s%s\n", n_,
            static_cast<unsigned long long>(nofile), nofile_note.empty() ? "" : ": ",
            nofile_note.c_str());
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    resolve();
    {
        char t[16];
        std::snprintf(t, sizeof t, "%04x",
                      static_cast<unsigned>((getpid() ^ (now_ns() >> 10)) & 0xffff));
        tag_ = t;  // keeps this run's names apart from an earlier run's still leaving
    }
    pad_.resize(o_.size + 26);
    for (std::size_t i = 0; i < pad_.size(); ++i) pad_[i] = static_cast<char>('a' + i % 26);
    scratch_.resize(512u << 10);
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    clients_.resize(n_);
    for (std::size_t i = 0; i < n_; ++i) clients_[i].index = static_cast<std::uint32_t>(i);
    if (o_.proto == Proto::redis)
        for (Client& c : clients_) c.kind = Kind::redis;
    if (!o_.mix.empty()) {  // interleaved: frames, lines, websocket, frames, ... while each lasts
        kind_latency_.resize(mix_kinds);
        std::size_t left[mix_kinds], i = 0;
        std::copy(std::begin(o_.mix_count), std::end(o_.mix_count), left);
        for (int k = 0; i < n_; k = (k + 1) % mix_kinds)
            if (left[k]) --left[k], clients_[i++].kind = static_cast<Kind>(k);
    }

    const std::size_t name_bytes = tag_.size() + 1 + std::to_string(n_).size();
    // A delivery's bytes on the wire: two frame headers; a WebSocket frame's header (2 or 4
    // bytes) and JSON ({"from":"","text":""}: 21 bytes) take a little more, lines less.
    const bool websocket = o_.mix_count[static_cast<int>(Kind::websocket)] > 0;
    const std::size_t wire = (websocket ? 25 : 20) + name_bytes + o_.size;
    if (o_.window) window_ = o_.window;
    else if (o_.rate > 0) window_ = 1024;
    else
        window_ =
            std::max<std::size_t>(1, std::min<std::size_t>(1024, (512u << 10) / ((n_ - 1) * wire)));
    receivers_per_message_ = static_cast<std::uint32_t>(n_ - 1);
    if (!o_.idle) {
        expect_.assign(n_ * n_, 0);
        complete_.assign(n_, 0);
        ring_.assign(n_ * window_, 0);
    }

    const ProcSample server_start = sample_processes(o_.server_pids);
    const double bench_cpu0 = self_cpu_s();
    const std::uint64_t t_start = now_ns();
    deadline_ = t_start + static_cast<std::uint64_t>(o_.timeout * 1e9);
    bool timed_out = false;

    // 1. Connect everyone (a bounded number being set up at a time), each waits for its welcome.
    std::uint64_t last_sync = 0;
    while (joined_ + failed_ < n_) {
        while (pending_ < o_.connect_batch && next_connect_ < n_)
            start_connect(clients_[next_connect_++]);
        if (o_.proto == Proto::classic) {
            // classic: nobody is told they are in. Client 0 is in once its name is sent; its
            // "sync" reaching another client proves that one is in too.
            Client& c0 = clients_[0];
            if (c0.state == State::naming && c0.out.empty()) mark_joined(c0);
            if (c0.state == State::joined && now_ns() - last_sync > 20'000'000ull) {
                append_sync(c0);
                flush(c0);
                last_sync = now_ns();
            }
        }
        if (deadline_passed()) {
            timed_out = true;
            break;
        }
        pump(o_.proto == Proto::classic ? 5 : 50);
    }
    const std::uint64_t t_joined = now_ns();
    const bool all_joined = joined_ == n_;

    // 2. chatsock: let the "X joined" notices finish, so they are not part of the measurement.
    if (o_.proto == Proto::chatsock && !timed_out) {
        std::uint64_t want = join_notices_expected_;
        // Several servers sharing the room (--ports): a welcome counts only the users its server
        // knew of then; of each pair of clients, one at least hears of the other (whichever
        // joined first sees the other's join arrive, from its server or over the cluster).
        if (addrs_.size() > 1 && !unannounced_)
            want = std::max<std::uint64_t>(want, static_cast<std::uint64_t>(n_) * (n_ - 1) / 2);
        while (join_notices_ < want && !deadline_passed()) pump(50);
        if (join_notices_ < want) timed_out = true;
    }
    const std::uint64_t t_settled = now_ns();
    const ProcSample server_loaded = sample_processes(o_.server_pids);

    // 3. Measure.
    std::uint64_t expected = 0;
    const std::uint64_t t0 = now_ns();
    std::uint64_t broadcast_done = 0;
    measuring_ = true;
    const std::size_t disconnected_before = disconnected_;
    if (!timed_out && joined_ >= 2 && (all_joined || o_.idle)) {
        if (o_.idle) {
            expected = joined_ - 1;
            Client& c0 = clients_[0];
            if (c0.state == State::joined) {
                append_message(c0, 0, now_ns());
                c0.sent = 1;
                flush(c0);
            } else {
                expected = 0;
            }
            while (broadcast_received_ < expected && disconnected_ == disconnected_before &&
                   !deadline_passed())
                pump(50);
            broadcast_done = now_ns();
        } else {
            expected = static_cast<std::uint64_t>(n_) * o_.messages * (n_ - 1);
            if (o_.rate > 0) {
                timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.u64 = UINT64_MAX;
                epoll_ctl(ep_, EPOLL_CTL_ADD, timer_fd_, &ev);
            }
            for (std::uint32_t s = 0; s < n_; ++s) mark_dirty(s);
            refill_senders();
            std::uint64_t k = 0;  // rate mode: the next message overall
            const std::uint64_t total = static_cast<std::uint64_t>(n_) * o_.messages;
            const double interval = o_.rate > 0 ? 1e9 / o_.rate : 0;
            while (received_ + corrupt_ < expected && disconnected_ == disconnected_before &&
                   !deadline_passed()) {
                if (o_.rate > 0) {
                    const std::uint64_t now = now_ns();
                    std::vector<std::uint32_t> touched;
                    while (k < total &&
                           t0 + static_cast<std::uint64_t>(static_cast<double>(k) * interval) <=
                               now) {
                        const std::uint32_t s = static_cast<std::uint32_t>(k % n_);
                        if (!can_send(s)) break;  // the window is full: the rate lags
                        Client& c = clients_[s];
                        append_message(c, c.sent++, now_ns());
                        touched.push_back(s);
                        ++k;
                    }
                    for (std::uint32_t s : touched) flush(clients_[s]);
                    if (k < total) {
                        const std::uint64_t due =
                            t0 + static_cast<std::uint64_t>(static_cast<double>(k) * interval);
                        itimerspec its{};
                        its.it_value.tv_sec = static_cast<time_t>(due / 1000000000ull);
                        its.it_value.tv_nsec = static_cast<long>(due % 1000000000ull);
                        timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
                    }
                }
                pump(20);
            }
        }
    }
    const std::uint64_t t_end = o_.idle && broadcast_done ? broadcast_done : now_ns();
    measuring_ = false;
    if (received_ + corrupt_ < expected && deadline_passed()) timed_out = true;
    const ProcSample server_end = sample_processes(o_.server_pids);
    const double bench_cpu = self_cpu_s() - bench_cpu0;

    // 4. Report.
    const double elapsed = static_cast<double>(t_end - t0) / 1e9;
    const bool ok = !timed_out && all_joined && refused_ == 0 && received_ == expected &&
                    expected > 0 && corrupt_ == 0 && order_violations_ == 0 && disconnected_ == 0 &&
                    stray_ == 0 && protocol_errors_ == 0;
    Json j;
    j.str("mode", o_.idle ? "idle" : o_.rate > 0 ? "latency" : "throughput");
    j.str("proto", o_.proto == Proto::chatsock  ? "chatsock"
                   : o_.proto == Proto::classic ? "classic"
                                                : "redis");
    if (!o_.label.empty()) j.str("label", o_.label);
    j.integer("clients", static_cast<long long>(n_));
    j.integer("messages", static_cast<long long>(o_.messages));
    j.integer("size", static_cast<long long>(o_.size));
    j.integer("window", static_cast<long long>(window_));
    j.num("rate", o_.rate, 0);
    j.integer("nofile", static_cast<long long>(nofile));
    if (!nofile_note.empty()) j.str("nofile_note", nofile_note);
    j.integer("joined", static_cast<long long>(joined_));
    j.integer("refused", static_cast<long long>(refused_));
    j.integer("connect_errors", static_cast<long long>(connect_errors_));
    j.num("connect_ms", static_cast<double>(t_joined - t_start) / 1e6, 1);
    j.num("settle_ms", static_cast<double>(t_settled - t_joined) / 1e6, 1);
    j.integer("join_notices", static_cast<long long>(join_notices_));
    j.integer("expected", static_cast<long long>(expected));
    j.integer("received", static_cast<long long>(received_));
    j.integer("lost", static_cast<long long>(expected > received_ ? expected - received_ : 0));
    j.integer("order_violations", static_cast<long long>(order_violations_));
    j.integer("corrupt", static_cast<long long>(corrupt_));
    j.integer("stray", static_cast<long long>(stray_));
    j.integer("disconnected", static_cast<long long>(disconnected_));
    j.integer("other_notices", static_cast<long long>(other_notices_));
    if (!o_.mix.empty()) {
        // Per kind of receiving client: how many, what they received, how long it took them.
        j.str("mix", o_.mix);
        std::uint64_t got[mix_kinds]{};
        if (!o_.idle)
            for (std::size_t r = 0; r < n_; ++r)
                for (std::size_t s = 0; s < n_; ++s)
                    got[static_cast<int>(clients_[r].kind)] += expect_[r * n_ + s];
        Histogram frames_latency = latency_;  // what is left once the others are taken out
        for (int k = 1; k < mix_kinds; ++k) frames_latency.subtract(kind_latency_[k]);
        for (int k = 0; k < mix_kinds; ++k) {
            if (!o_.mix_count[k]) continue;
            const Histogram& h = k == 0 ? frames_latency : kind_latency_[k];
            const std::string name = kind_names[k];
            j.integer(("clients_" + name).c_str(), static_cast<long long>(o_.mix_count[k]));
            if (!o_.idle) j.integer(("received_" + name).c_str(), static_cast<long long>(got[k]));
            j.num(("lat_p50_us_" + name).c_str(), static_cast<double>(h.percentile(0.50)) / 1e3, 1);
            j.num(("lat_p99_us_" + name).c_str(), static_cast<double>(h.percentile(0.99)) / 1e3, 1);
        }
    }
    if (o_.proto == Proto::redis) {
        j.integer("protocol_errors", static_cast<long long>(protocol_errors_));
        j.integer("publish_count_mismatch", static_cast<long long>(publish_mismatch_));
    }
    j.num("elapsed_s", elapsed, 4);
    j.num("deliveries_per_s", elapsed > 0 ? static_cast<double>(received_) / elapsed : 0, 0);
    j.num("payload_MBps",
          elapsed > 0
              ? static_cast<double>(received_) * static_cast<double>(o_.size) / 1e6 / elapsed
              : 0,
          2);
    if (o_.idle)
        j.num("broadcast_ms", broadcast_done ? static_cast<double>(broadcast_done - t0) / 1e6 : -1,
              3);
    j.num("lat_p50_us", static_cast<double>(latency_.percentile(0.50)) / 1e3, 1);
    j.num("lat_p99_us", static_cast<double>(latency_.percentile(0.99)) / 1e3, 1);
    j.num("lat_max_us", static_cast<double>(latency_.max()) / 1e3, 1);
    j.num("lat_ready_p50_us", static_cast<double>(ready_latency_.percentile(0.50)) / 1e3, 1);
    j.num("lat_ready_p99_us", static_cast<double>(ready_latency_.percentile(0.99)) / 1e3, 1);
    j.num("bench_cpu_s", bench_cpu, 3);
    if (o_.ports.size() > 1) j.integer("servers", static_cast<long long>(o_.ports.size()));
    if (o_.server_pid > 0) {
        j.integer("server_pid", o_.server_pid);
        if (o_.server_pids.size() > 1)  // the server_ figures below are their sums
            j.integer("server_pids", static_cast<long long>(o_.server_pids.size()));
        j.integer("server_rss_start_kb", server_start.rss_kb);
        j.integer("server_rss_loaded_kb", server_loaded.rss_kb);
        j.integer("server_rss_end_kb", server_end.rss_kb);
        j.integer("server_hwm_kb", server_end.hwm_kb);
        if (server_start.rss_kb >= 0 && server_loaded.rss_kb >= 0 && joined_ > 0)
            j.num("server_rss_per_client_kb",
                  static_cast<double>(server_loaded.rss_kb - server_start.rss_kb) /
                      static_cast<double>(joined_),
                  2);
        j.num("server_cpu_s", server_end.cpu_s - server_loaded.cpu_s, 3);
        j.num("server_cpu_connect_s", server_loaded.cpu_s - server_start.cpu_s, 3);
    }
    j.boolean("timed_out", timed_out);
    j.boolean("ok", ok);
    std::printf("%s\n", j.done().c_str());
    std::fflush(stdout);

    // Tear down at once: a reset needs no goodbye from anyone.
    linger lg{1, 0};
    for (Client& c : clients_) {
        if (c.fd < 0) continue;
        setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c.fd);
        c.fd = -1;
    }
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse_options(argc, argv);
    if (o.raw_broadcast) return run_raw_broadcast(o);
    if (o.raw) return run_raw(o);
    Bench bench(std::move(o));
    return bench.run();
}
