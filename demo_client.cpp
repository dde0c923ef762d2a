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
#include <string>
#include <vector>

using chatsock::CloseReason;

static void say(const std::string& line) {
    chatsock::write_text(stderr, "demo_client: " + line + "\n");
}
static std::string too_long(std::size_t bytes) {
    return std::to_string(bytes) + " bytes, over the limit of " + std::to_string(65536) + " bytes";
}

int main(int argc, char** argv) {
    const std::vector<std::string> args = chatsock::command_line(argc, argv);  // UTF-8 everywhere
    const std::string host = args.size() > 1 ? args[1] : "127.0.0.1";
    std::uint16_t port = 1234;
    if (args.size() > 2 && !chatsock::parse_port(args[2], port))
        return say("'" + args[2] + "' is not a port number (0-65535)"), 2;
    const std::string server = host + ":" + std::to_string(port);

    chatsock::Client client;
    bool named = false;  // until then the server has nothing to say but "too late"
    client.on_message = [&named](const chatsock::Message& m) {
        // printable() escapes control characters: no peer can clear or hijack this terminal.
        if (named)
            chatsock::write_text(
                stdout, chatsock::printable(m.from) + " > " + chatsock::printable(m.text) + "\n");
    };
    if (std::error_code ec = client.connect(host, port))  // first: is anybody there?
        return say("cannot connect to " + server + ": " + ec.message()), 1;
    chatsock::StdinLines input;  // standard input, watched together with the socket
    std::string name = args.size() > 3 ? args[3] : "";
    for (;;) {
        while (name.empty()) {  // asked only now that the server is known to be there
            chatsock::write_text(stdout, "Username: ");
            if (!input.read_line(name)) return 1;
        }
        if (name.size() <= 65536) break;
        say("the name is " + too_long(name.size()));
        if (args.size() > 3) return 2;
        name.clear();
    }
    // A slow typist may have outlived the server's time for a name: connect again.
    if (!client.poll(std::chrono::milliseconds(0)) && client.connect(host, port))
        return say("cannot connect to " + server + " again"), 1;
    named = true;
    client.join(name);

    while (client.poll(std::chrono::milliseconds(-1), &input)) {
        for (std::string line; input.next(line);) {
            // Empty lines and lines of nothing but control characters are not chat.
            if (std::none_of(line.begin(), line.end(),
                             [](unsigned char c) { return c >= 0x20 && c != 0x7F; }))
                continue;
            if (line.size() > 65536) say("message not sent: it is " + too_long(line.size()));
            else client.send(line);
        }
        if (input.eof()) {  // delivers everything typed, then exits
            if (client.close()) return 0;
            if (client.close_reason() == CloseReason::not_acknowledged)
                return say(client.close_detail()), 1;
            break;  // the server closed first: why, below
        }
    }
    switch (client.close_reason()) {
    case CloseReason::refused: return 1;  // its notice, shown above, says why
    case CloseReason::protocol_error:
        say("protocol error from the server: " + client.close_detail());
        break;
    case CloseReason::connection_lost: say("connection lost: " + client.close_detail()); break;
    default: chatsock::write_text(stderr, "Connection closed by the server\n");
    }
    return 1;
}
