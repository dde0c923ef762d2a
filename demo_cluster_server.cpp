// demo_cluster_server.cpp — demo_server, and one room shared with other nodes over NATS.
//
//   Build:  make cluster     (needs libnats-dev; or: g++ -std=c++17 -O2 demo_cluster_server.cpp
//                             -o demo_cluster_server -lnats -pthread)
//   Run:    ./demo_cluster_server HOST PORT LOGFILE NATS-URLS NODE
//           ./demo_cluster_server 127.0.0.1 1234 log-a nats://127.0.0.1:4222,nats://127.0.0.1:4223 a
//           ./demo_cluster_server --no-flood-control HOST ...   flood control off (benchmarks)
//
// NATS-URLS is a comma-separated list, tried in order; NODE names this node, uniquely in the
// cluster. Users on every node share one room, with unique names. From the environment:
// CHATSOCK_NATS_USER and CHATSOCK_NATS_PASSWORD, or CHATSOCK_NATS_TOKEN; CHATSOCK_NATS_REPLICAS,
// the names bucket's copies (3 survives the loss of a NATS server). docs/CLUSTER.md tells more.
#include "chatsock.hpp"
#include "cluster/chatsock_cluster.hpp"

#include <string>
#include <vector>

static int fail(const std::string& why, int status) {
    chatsock::write_text(stderr, "demo_cluster_server: " + why + "\n");
    return status;
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
    cluster_options.set_servers(args[4]);
    cluster_options.node = args[5];
    cluster_options.commands = true;  // enable_commands is on: /who, /msg, /me, /nick span nodes
    if (std::string problem = cluster_options.read_environment(); !problem.empty())
        return fail(problem, 2);

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
