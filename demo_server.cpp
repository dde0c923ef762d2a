// demo_server.cpp — a whole chat server: chatsock.hpp does the work.
//
//   Build:  g++ -std=c++17 -O2 demo_server.cpp -o demo_server
//           (MinGW: x86_64-w64-mingw32-g++ -std=c++17 -O2 -static demo_server.cpp
//                   -o demo_server.exe -lws2_32)
//   Run:    ./demo_server [host] [port] [logfile]     defaults: 127.0.0.1 1234 message_log
//           ./demo_server --no-flood-control [...]    the same, with flood control off (benchmarks)
//
// Clients connect, send a username, then chat: each message goes to everyone else, and every
// event is appended to the log file. Framed clients, nc/telnet and browsers share the room; the
// chat commands are on. Ctrl+C stops the server cleanly.
#include "chatsock.hpp"

#include <string>
#include <vector>

// One line on stderr, then the exit status to return.
static int fail(const std::string& why, int status) {
    chatsock::write_text(stderr, "demo_server: " + why + "\n");
    return status;
}

int main(int argc, char** argv) {
    std::vector<std::string> args = chatsock::command_line(argc, argv);  // UTF-8 everywhere
    chatsock::ServerOptions options;  // every limit has a sensible default; see the header
    if (args.size() > 1 && args[1] == "--no-flood-control")
        options.no_flood_control(), args.erase(args.begin() + 1);
    options.host = args.size() > 1 ? args[1] : "127.0.0.1";
    options.log_path = args.size() > 3 ? args[3] : "message_log";
    if (args.size() == 2 && chatsock::parse_port(args[1], options.port))
        return fail("'" + args[1] + "' looks like a port, but the first argument is the host: " +
                        "./demo_server 127.0.0.1 " + args[1],
                    2);
    if (args.size() > 2 && !chatsock::parse_port(args[2], options.port))
        return fail("'" + args[2] + "' is not a port number (0-65535)", 2);
    // The library reports what happens (listening, joins, leaves, errors) as lines of text;
    // this server shows them on standard output.
    options.diagnostics = [](std::string_view line) {
        chatsock::write_text(stdout, std::string(line) + "\n");
    };

    chatsock::Server server(options);
    chatsock::enable_commands(server);  // /who, /msg, /me, /nick, /quit, /help
    chatsock::stop_on_ctrl_c(server);   // Ctrl+C or SIGTERM: tell everyone, flush, close
    std::string attempt;                // (handler first: "listening" means stoppable)
    if (std::error_code ec = server.listen(&attempt)) return fail(attempt + ": " + ec.message(), 1);
    if (std::error_code ec = server.run()) return fail(ec.message(), 1);
    return 0;
}
