// A second translation unit of the test program that includes chatsock.hpp. If anything in the
// header were defined without `inline` (a function, a variable, a static member), this program
// would fail to link with a duplicate symbol. The functions below are called from
// test_framing.cpp, which also checks that inline variables and function-local statics are one
// object across translation units.
#include "chatsock.hpp"

#include <string>

std::string second_tu_frame() { return chatsock::encode_frame("hi"); }

const void* second_tu_ctrl_c_target_address() { return &chatsock::detail::ctrl_c_target; }

const void* second_tu_resolver_category_address() { return &chatsock::detail::resolver_category(); }

// Instantiates the server and client here too, so their member functions are emitted in both TUs.
std::size_t second_tu_idle_server_and_client() {
    chatsock::ServerOptions options;
    options.diagnostics = nullptr;
    chatsock::Server server(options);
    chatsock::Client client;
    return server.client_count() + (client.is_open() ? 1 : 0);
}
