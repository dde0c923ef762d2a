// demo_server.cpp — a whole chat server: chatsock.hpp does the work.
//
//   Build:  g++ -std=c++17 -O2 demo_server.cpp -o demo_server      (MinGW: add -lws2_32)
//   Run:    ./demo_server [host] [port] [logfile]     defaults: 127.0.0.1 1234 message_log
//
// Clients connect, send a username, then chat: each message goes to everyone else, and every
// event is appended to the log file. Ctrl+C stops the server cleanly.
#include "chatsock.hpp"

#include <iostream>

int main(int argc, char** argv) {
    const std::vector<std::string> args = chatsock::command_line(argc, argv);  // UTF-8 everywhere
    chatsock::ServerOptions options;  // every limit has a sensible default; see the header
    options.host = args.size() > 1 ? args[1] : "127.0.0.1";
    options.log_path = args.size() > 3 ? args[3] : "message_log";
    if (args.size() > 2 && !chatsock::parse_port(args[2], options.port)) {
        std::cerr << "demo_server: '" << args[2] << "' is not a port number (0-65535)\n";
        return 2;
    }
    // The library reports what happens (listening, joins, leaves, errors) as lines of text;
    // this server shows them on standard output.
    options.diagnostics = [](std::string_view line) { std::cout << line << std::endl; };

    chatsock::Server server(options);
    chatsock::stop_on_ctrl_c(server);  // Ctrl+C or SIGTERM: tell everyone, flush, close
    if (std::error_code ec = server.listen()) {  // (handler first: "listening" means stoppable)
        std::cerr << "demo_server: " << server.error_context() << ": " << ec.message() << "\n";
        return 1;
    }
    if (std::error_code ec = server.run()) {
        std::cerr << "demo_server: " << ec.message() << "\n";
        return 1;
    }
    return 0;
}
