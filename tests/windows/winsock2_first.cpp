// A translation unit that includes <winsock2.h> and <ws2tcpip.h> before chatsock.hpp, as a
// program with its own socket code would. test_windows.cpp calls what is below.
#if defined(_WIN32)
#  include <winsock2.h>
#  include <ws2tcpip.h>

#  include "chatsock.hpp"

#  include <string>

#  include "welcome_roundtrip.inc"

std::string winsock2_first_welcome() { return welcome_roundtrip("winsock2.h"); }

// The header's socket type is Winsock's own, so chatsock sockets mix with this program's calls.
bool winsock2_first_socket_is_winsock() {
    chatsock::detail::start_network();  // raw Winsock calls need it started
    chatsock::Socket s(::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP));
    return s.valid() && sizeof(chatsock::socket_t) == sizeof(SOCKET);
}
#endif
