// demo_client.cpp — a whole chat client: chatsock.hpp does the work.
//
//   Build:  g++ -std=c++17 -O2 demo_client.cpp -o demo_client      (MinGW: add -lws2_32)
//   Run:    ./demo_client [host] [port] [username]    defaults: 127.0.0.1 1234, name asked
//
// Type a line and press Enter to send it. Messages from others appear as soon as they
// arrive, even while you type. End of input (Ctrl+D, or the end of a pipe) sends what is
// left and exits.
#include "chatsock.hpp"

#include <iostream>

int main(int argc, char** argv) {
    const std::vector<std::string> args = chatsock::command_line(argc, argv);  // UTF-8 everywhere
    const std::string host = args.size() > 1 ? args[1] : "127.0.0.1";
    std::uint16_t port = 1234;
    if (args.size() > 2 && !chatsock::parse_port(args[2], port)) {
        std::cerr << "demo_client: '" << args[2] << "' is not a port number (0-65535)\n";
        return 2;
    }
    chatsock::StdinLines input;  // standard input, watched together with the socket
    std::string name = args.size() > 3 ? args[3] : "";
    if (args.size() <= 3) {
        std::cout << "Username: " << std::flush;
        if (!input.read_line(name)) return 1;
    }

    chatsock::Client client;
    bool refused = false;  // the server said "name refused: ...": the chat never started
    client.on_message = [&refused](const chatsock::Message& m) {
        if (m.from_server && m.text.rfind("name refused:", 0) == 0) refused = true;
        // printable() escapes control characters: no peer can clear or hijack this terminal.
        std::cout << chatsock::printable(m.from) << " > " << chatsock::printable(m.text) << std::endl;
    };
    if (std::error_code ec = client.connect(host, port, name)) {
        std::cerr << "demo_client: cannot connect to " << host << ":" << port << ": " << ec.message() << "\n";
        return 1;
    }
    while (client.poll(std::chrono::milliseconds(-1), &input)) {
        for (std::string line; input.next(line);) {
            if (line.empty()) continue;
            if (std::error_code ec = client.send(line))
                std::cerr << "demo_client: message not sent: " << ec.message() << "\n";
        }
        if (input.eof()) return client.close() && !refused ? 0 : 1;  // delivers everything typed, then exits
    }
    std::cerr << "Connection closed by the server";
    if (client.close_reason() != "connection closed by the server") std::cerr << " (" << client.close_reason() << ")";
    std::cerr << "\n";
    return 1;
}
