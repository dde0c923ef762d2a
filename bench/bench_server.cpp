// bench_server.cpp — demo_server with one more knob, for the benchmark's 10,000-client run.
//
//   bench/bench_server [host] [port] [logfile] [max_clients]
//
// Identical to demo_server (same options, same diagnostics on stdout) except that the fourth
// argument sets ServerOptions::max_clients, whose default of 1,000 makes demo_server refuse
// the 1,001st connection. An empty logfile ("") means no conversation log.
#include "../chatsock.hpp"

#include <cstdlib>
#include <iostream>

int main(int argc, char** argv) {
    chatsock::ServerOptions options;
    options.host = argc > 1 ? argv[1] : "127.0.0.1";
    options.log_path = argc > 3 ? argv[3] : "message_log";
    if (argc > 2 && !chatsock::parse_port(argv[2], options.port)) {
        std::cerr << "bench_server: '" << argv[2] << "' is not a port number (0-65535)\n";
        return 2;
    }
    if (argc > 4) {
        char* end = nullptr;
        unsigned long n = std::strtoul(argv[4], &end, 10);
        if (!end || *end || n == 0) {
            std::cerr << "bench_server: '" << argv[4] << "' is not a client count\n";
            return 2;
        }
        options.max_clients = n;
    }
    options.diagnostics = [](std::string_view line) { std::cout << line << std::endl; };

    chatsock::Server server(options);
    chatsock::stop_on_ctrl_c(server);
    if (std::error_code ec = server.listen()) {
        std::cerr << "bench_server: " << server.error_context() << ": " << ec.message() << "\n";
        return 1;
    }
    if (std::error_code ec = server.run()) {
        std::cerr << "bench_server: " << ec.message() << "\n";
        return 1;
    }
    return 0;
}
