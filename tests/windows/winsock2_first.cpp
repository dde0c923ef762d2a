// A translation unit that includes <winsock2.h> and <ws2tcpip.h> before chatsock.hpp, as a
// program with its own socket code would. test_windows.cpp calls what is below.
#if defined(_WIN32)
#include <winsock2.h>
#include <ws2tcpip.h>

#include "chatsock.hpp"

#include <string>

// A server and a client built in this translation unit: the welcome the client receives.
std::string winsock2_first_welcome() {
    chatsock::ServerOptions options;
    options.port = 0;
    options.diagnostics = nullptr;
    chatsock::Server server(options);
    if (server.listen()) return "listen failed";
    std::string welcome;
    chatsock::Client client;
    client.on_message = [&welcome](const chatsock::Message& m) { welcome = m.text; };
    if (client.connect("127.0.0.1", server.port(), "winsock2.h")) return "connect failed";
    for (int i = 0; i < 1000 && welcome.empty(); ++i) {
        server.run_once(chatsock::milliseconds(5));
        client.poll(chatsock::milliseconds(0));
    }
    return welcome;
}

// The header's socket type is Winsock's own, so chatsock sockets mix with this program's calls.
bool winsock2_first_socket_is_winsock() {
    chatsock::detail::NetworkInit winsock;  // raw Winsock calls need it started
    chatsock::Socket s(::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
    return s.valid() && sizeof(chatsock::socket_t) == sizeof(SOCKET);
}
#endif
