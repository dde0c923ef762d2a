// attack_server.cpp — demo_server with its limits on the command line, for tests/e2e_attacks.py.
//
//   tests/bin/attack_server [--host H] [--port P] [--log FILE] [--handshake-ms N] [--frame-ms N]
//                           [--hard BYTES] [--soft BYTES] [--soft-ms N] [--max-clients N]
//                           [--max-payload BYTES] [--accept-pause-ms N] [--drain-ms N]
//                           [--spare-fds N] [--max-line BYTES] [--history N] [--no-web]
//                           [--flood-messages N] [--flood-bytes BYTES] [--flood-burst-ms N]
//                           [--room-pressure BYTES] [--slow-down-ms N] [--no-flood-control]
//                           [--max-per-address N] [--new-per-address N]
//
// --spare-fds N opens N descriptors after listen(), as a program with files of its own would:
// listen() fits max_clients to `ulimit -n` without knowing of them, so the server can still run
// out of descriptors (POSIX only).
//
// --no-web turns the HTTP side off (ServerOptions::web = false) and --no-flood-control flood
// control (ServerOptions::no_flood_control()): the only flags without a value.
//
// Defaults are ServerOptions' own (port 0: the OS picks one). Like demo_server, it prints the
// library's diagnostics on stdout ("listening on ..." first) and stops on SIGINT/SIGTERM.
#include "chatsock.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#if !defined(_WIN32)
#  include <unistd.h>
#endif

namespace {
bool number(const char* text, unsigned long long& out) {
    if (!*text) return false;
    char* end = nullptr;
    errno = 0;
    out = std::strtoull(text, &end, 10);
    return errno == 0 && *end == '\0' && text[0] != '-';
}
}  // namespace

int main(int argc, char** argv) {
    chatsock::ServerOptions options;
    unsigned long long spare_fds = 0;
    options.port = 0;
    options.log_path = "message_log";
    for (int i = 1; i < argc; ++i) {
        const std::string flag = argv[i];
        if (flag == "--no-web") {
            options.web = false;
            continue;
        }
        if (flag == "--no-flood-control") {
            options.no_flood_control();
            continue;
        }
        if (i + 1 >= argc) {
            std::cerr << "attack_server: " << flag << " needs a value\n";
            return 2;
        }
        const char* value = argv[++i];
        unsigned long long n = 0;
        if (flag == "--host") {
            options.host = value;
            continue;
        }
        if (flag == "--log") {
            options.log_path = value;
            continue;
        }
        if (flag == "--port") {
            if (!chatsock::parse_port(value, options.port)) {
                std::cerr << "attack_server: '" << value << "' is not a port number (0-65535)\n";
                return 2;
            }
            continue;
        }
        if (!number(value, n)) {
            std::cerr << "attack_server: " << flag << ": '" << value << "' is not a number\n";
            return 2;
        }
        const auto ms = std::chrono::milliseconds(static_cast<long long>(n));
        if (flag == "--handshake-ms") options.handshake_timeout = ms;
        else if (flag == "--frame-ms") options.frame_timeout = ms;
        else if (flag == "--soft-ms") options.soft_limit_time = ms;
        else if (flag == "--accept-pause-ms") options.accept_pause = ms;
        else if (flag == "--drain-ms") options.stop_drain_time = ms;
        else if (flag == "--hard") options.output_hard_limit = n;
        else if (flag == "--soft") options.output_soft_limit = n;
        else if (flag == "--max-clients") options.max_clients = n;
        else if (flag == "--max-payload") options.max_payload = n;
        else if (flag == "--max-line") options.max_line = n;
        else if (flag == "--history") options.history = n;
        else if (flag == "--flood-messages") options.flood_messages = n;
        else if (flag == "--flood-bytes") options.flood_bytes = n;
        else if (flag == "--flood-burst-ms") options.flood_burst = ms;
        else if (flag == "--room-pressure") options.room_pressure = n;
        else if (flag == "--slow-down-ms") options.slow_down_after = ms;
        else if (flag == "--max-per-address") options.max_per_address = n;
        else if (flag == "--new-per-address") options.new_per_address = n;
        else if (flag == "--spare-fds") spare_fds = n;
        else {
            std::cerr << "attack_server: unknown option " << flag << "\n";
            return 2;
        }
    }
    options.diagnostics = [](std::string_view line) { std::cout << line << std::endl; };

    chatsock::Server server(options);
    chatsock::stop_on_ctrl_c(server);
    std::string attempt;
    if (std::error_code ec = server.listen(&attempt)) {
        std::cerr << "attack_server: " << attempt << ": " << ec.message() << "\n";
        return 1;
    }
#if !defined(_WIN32)
    for (unsigned long long i = 0; i < spare_fds; ++i) ::dup(2);  // held until exit
#else
    (void)spare_fds;
#endif
    if (std::error_code ec = server.run()) {
        std::cerr << "attack_server: " << ec.message() << "\n";
        return 1;
    }
    return 0;
}
