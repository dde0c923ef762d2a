// demo_client.cpp — a whole chat client: chatsock.hpp does the work.
//
//   Build:  g++ -std=c++17 -O2 demo_client.cpp -o demo_client
//           (MinGW: x86_64-w64-mingw32-g++ -std=c++17 -O2 -static demo_client.cpp
//                   -o demo_client.exe -lws2_32)
//   Run:    ./demo_client [host] [port] [username]    defaults: 127.0.0.1 1234, name asked
//
// Type a line and press Enter to send it. Messages from others appear as soon as they
// arrive, even while you type. End of input (Ctrl+D; on Windows Ctrl+Z then Enter; or the
// end of a pipe) sends what is left and exits.
#include "chatsock.hpp"

#include <algorithm>

static int fail(const std::string& why, int status = 1) {
    chatsock::write_text(stderr, "demo_client: " + why + "\n");
    return status;
}
static std::string over_limit(std::size_t bytes) {
    const std::size_t limit = chatsock::ClientOptions().max_payload;
    return std::to_string(bytes) + " bytes, over the limit of " + std::to_string(limit) + " bytes";
}

int main(int argc, char** argv) {
    const std::vector<std::string> args = chatsock::command_line(argc, argv);  // UTF-8 everywhere
    const std::string host = args.size() > 1 ? args[1] : "127.0.0.1";
    std::uint16_t port = 1234;
    if (args.size() > 2 && !chatsock::parse_port(args[2], port))
        return fail("'" + args[2] + "' is not a port number (0-65535)", 2);
    chatsock::Client client;
    if (std::error_code ec = client.connect(host, port))  // first: is anybody there?
        return fail("cannot connect to " + host + ":" + std::to_string(port) + ": " + ec.message());
    chatsock::StdinLines input;  // standard input, watched together with the socket
    std::string name = args.size() > 3 ? args[3] : "";
    while (name.empty() || client.join(name)) {  // not given, or too long: ask (again)
        if (!name.empty()) {
            fail("the name is " + over_limit(name.size()));
            if (args.size() > 3) return 2;
        }
        chatsock::write_text(stdout, "Username: ");
        if (!input.read_line(name)) return 1;
        // A slow typist may have outlived the server's time for a name: connect again.
        if (!client.poll(std::chrono::milliseconds(0)) && client.connect(host, port))
            return fail("cannot connect to " + host + " again");
    }
    // printable() escapes control characters: no peer can hijack this terminal.
    client.on_message = [](const chatsock::Message& m) {
        chatsock::write_text(
            stdout, chatsock::printable(m.from) + " > " + chatsock::printable(m.text) + "\n");
    };
    while (client.poll(std::chrono::milliseconds(-1), &input)) {
        for (std::string line; input.next(line);) {  // empty or only control characters: not chat
            if (std::all_of(line.begin(), line.end(), [](unsigned char c) { return c < 0x20; }))
                continue;
            if (client.send(line) == std::errc::message_size)
                fail("message not sent: it is " + over_limit(line.size()));
        }
        if (input.eof() && client.close()) return 0;  // delivers everything typed, then exits
        if (client.close_reason() == chatsock::CloseReason::not_acknowledged)
            return fail(client.close_detail());
    }
    switch (client.close_reason()) {
    case chatsock::CloseReason::refused: return 1;  // its notice, shown above, says why
    case chatsock::CloseReason::protocol_error:
        return fail("protocol error from the server: " + client.close_detail());
    case chatsock::CloseReason::connection_lost:
        return fail("connection lost: " + client.close_detail());
    default: chatsock::write_text(stderr, "Connection closed by the server\n"); return 1;
    }
}
