// demo_cluster_server.cpp — demo_server, and one room shared with other nodes over NATS.
//
//   Build:  make cluster     (needs libnats-dev; or: g++ -std=c++17 -O2 demo_cluster_server.cpp
//                             -o demo_cluster_server -lnats -pthread)
//   Run:    ./demo_cluster_server HOST PORT LOGFILE NATS-URLS NODE
//           ./demo_cluster_server 127.0.0.1 1234 log-a nats://127.0.0.1:4222,nats://127.0.0.1:4223 a
//           ./demo_cluster_server --no-flood-control HOST ...   flood control off (benchmarks)
//
// NATS-URLS is a comma-separated list, tried in order; NODE names this node, uniquely in the
// cluster. Users on every node share one room, with unique names. docs/CLUSTER.md tells more.
// From the environment: CHATSOCK_NATS_REPLICAS, the names bucket's copies (1 to 5; default 1,
// 3 survives the loss of a NATS server); CHATSOCK_NATS_USER and CHATSOCK_NATS_PASSWORD, or
// CHATSOCK_NATS_TOKEN, when the NATS servers want credentials.
#include "chatsock.hpp"
#include "cluster/chatsock_cluster.hpp"

#include <cstdlib>
#include <string>
#include <vector>

static int fail(const std::string& why, int status) {
    chatsock::write_text(stderr, "demo_cluster_server: " + why + "\n");
    return status;
}

static std::string env(const char* name) {
    const char* value = std::getenv(name);
    return value ? value : "";
}

int main(int argc, char** argv) {
    std::vector<std::string> args = chatsock::command_line(argc, argv);
    chatsock::ServerOptions options;
    if (args.size() > 1 && args[1] == "--no-flood-control")
        options.no_flood_control(), args.erase(args.begin() + 1);
    if (args.size() != 6)
        return fail(
            "usage: demo_cluster_server [--no-flood-control] HOST PORT LOGFILE NATS-URLS NODE", 2);
    options.host = args[1];
    options.log_path = args[3];
    if (!chatsock::parse_port(args[2], options.port))
        return fail("'" + args[2] + "' is not a port number (0-65535)", 2);
    options.diagnostics = [](std::string_view line) {
        chatsock::write_text(stdout, std::string(line) + "\n");
    };
    chatsock::ClusterOptions cluster_options;
    for (std::size_t at = 0; at <= args[4].size();) {  // "url1,url2"
        const std::size_t comma = std::min(args[4].find(',', at), args[4].size());
        if (comma > at) cluster_options.servers.push_back(args[4].substr(at, comma - at));
        at = comma + 1;
    }
    cluster_options.node = args[5];
    cluster_options.commands = true;  // enable_commands is on: /who, /msg, /me, /nick span nodes
    cluster_options.user = env("CHATSOCK_NATS_USER");
    cluster_options.password = env("CHATSOCK_NATS_PASSWORD");
    cluster_options.token = env("CHATSOCK_NATS_TOKEN");
    if (std::string replicas = env("CHATSOCK_NATS_REPLICAS"); !replicas.empty()) {
        if (replicas.size() != 1 || replicas[0] < '1' || replicas[0] > '5')
            return fail("CHATSOCK_NATS_REPLICAS must be 1 to 5, not '" + replicas + "'", 2);
        cluster_options.replicas = replicas[0] - '0';
    }

    chatsock::Server server(options);
    chatsock::enable_commands(server);  // before the cluster, which wraps the callbacks
    chatsock::stop_on_ctrl_c(server);
    chatsock::Cluster cluster(server, cluster_options);  // destroyed first: it uses the server
    if (std::string problem = cluster.start(); !problem.empty()) return fail(problem, 2);
    std::string attempt;
    if (std::error_code ec = server.listen(&attempt)) return fail(attempt + ": " + ec.message(), 1);
    if (std::error_code ec = server.run()) return fail(ec.message(), 1);
    return 0;
}
