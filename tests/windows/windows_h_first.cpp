// A translation unit that includes the whole <windows.h> (no WIN32_LEAN_AND_MEAN, so it also
// brings the old winsock.h) before chatsock.hpp, as an existing Windows program would. It also
// defines min and max as macros, as MSVC's <windows.h> does without NOMINMAX (MinGW's spares
// C++), so this build catches what would break there. test_windows.cpp calls what is below.
#if defined(_WIN32)
#include <windows.h>
#ifndef min
#  define min(a, b) (((a) < (b)) ? (a) : (b))
#  define max(a, b) (((a) > (b)) ? (a) : (b))
#endif

#include "chatsock.hpp"

#include <string>

// chatsock.hpp set the macros aside and put them back: this program's own uses still work.
int windows_h_first_max(int a, int b) { return max(a, b); }

// A server and a client built in this translation unit: the welcome the client receives.
std::string windows_h_first_welcome() {
    chatsock::ServerOptions options;
    options.port = 0;
    options.diagnostics = nullptr;
    chatsock::Server server(options);
    if (server.listen()) return "listen failed";
    std::string welcome;
    chatsock::Client client;
    client.on_message = [&welcome](const chatsock::Message& m) { welcome = m.text; };
    if (client.connect("127.0.0.1", server.port(), "windows.h")) return "connect failed";
    for (int i = 0; i < 1000 && welcome.empty(); ++i) {
        server.run_once(chatsock::milliseconds(5));
        client.poll(chatsock::milliseconds(0));
    }
    return welcome;
}
#endif
