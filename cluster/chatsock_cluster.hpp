// chatsock_cluster.hpp — one chatsock room across many servers, over a NATS cluster.
//
// An add-on: chatsock.hpp itself has no dependency; this header links libnats (Debian:
// libnats-dev; build with -lnats -pthread). It plugs into chatsock::Server through its public
// API only: the on_join / on_message / on_leave callbacks, post(), broadcast(), send_to(),
// disconnect() and log_event().
//
//   chatsock::Server server(options);
//   chatsock::enable_commands(server);            // first: the cluster wraps what is there
//   chatsock::Cluster cluster(server, {{"nats://127.0.0.1:4222"}, "node-a"});
//   if (std::string problem = cluster.start(); !problem.empty()) ...
//   server.run();                                 // destroy the cluster after run() returns
//
// How it works (docs/CLUSTER.md has the whole story):
// - Every node publishes its room's events (joins, leaves, messages, heartbeats) on the subject
//   chatsock.<room>.events and relays what the other nodes publish there to its own clients.
//   Each event carries its node's name, the node's boot id and a per-node sequence number:
//   receivers drop their own echoes and duplicates; one NATS connection delivers one
//   publisher's events in order, so per-sender order holds. Core NATS delivers at most once:
//   a receiver that sees a gap holds what follows and asks the sender to publish the missing
//   events again (each node keeps its last resend_buffer bytes of events for that).
// - Names are unique across the cluster: a name is claimed in the JetStream key-value bucket
//   chatsock_<room>_names with an atomic create. The server checks a name synchronously, so a
//   user is accepted locally first and claimed at once, on a worker thread; a user whose claim
//   fails is disconnected with the usual rule text (name refused: the name "x" is taken). Its
//   messages wait (not relayed, not lost) until the claim succeeds.
// - A claim is a lease: its node renews it every name_ttl / 3; the bucket forgets a name
//   name_ttl after the last renewal (JetStream's expiry sweep adds up to a second or so). A
//   dead node's names are free within name_ttl + 1 s (measured: 16 s for the default 15).
// - A node that has not been heard for node_lost_after (heartbeats every `heartbeat`) is lost:
//   its users are announced as left ("node lost").
// - With ClusterOptions::commands (enable_commands(server) called first), /who, /me, /msg to
//   another node's user and /nick (claimed like a name at join) span the cluster; the add-on's
//   on_message sees each line before the core's commands and passes on what it does not run.
// - NATS unreachable: the node serves its local room (users are then local only and unclaimed)
//   and joins the cluster, claiming its users' names, when NATS appears.
#ifndef CHATSOCK_CLUSTER_HPP
#define CHATSOCK_CLUSTER_HPP

#include "../chatsock.hpp"
#include "cluster_wire.hpp"

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace chatsock {

struct ClusterOptions {
    std::vector<std::string> servers;  // NATS URLs, e.g. nats://127.0.0.1:4222 (credentials may
                                       // also go here: user:password@ or token@ before the host)
    std::string node;                  // this node's name, unique in the cluster: 1-32 of
                                       // A-Z a-z 0-9 _ -
    std::string room = "lobby";        // same characters; nodes of one room share it
    std::string user, password;        // NATS user/password authentication, when not empty
    std::string token;                 // NATS token authentication, when not empty
    milliseconds heartbeat{1000};
    milliseconds node_lost_after{5000};  // silent this long: the node's users are announced left
    milliseconds name_ttl{15000};        // a dead node's names are free after at most this
    int replicas = 1;                    // copies of the names bucket; 3 survives losing a server
    milliseconds reconnect_wait{250};    // between two attempts on the same NATS server
    // A NATS server that vanished without closing the connection (a machine lost, a network
    // cut) is noticed by pings: within about ping_interval * (max_pings_out + 1). libnats'
    // default, 2 minutes per ping, would leave the room cut off for minutes.
    milliseconds ping_interval{1000};
    int max_pings_out = 2;
    int reconnect_buffer = 8 << 20;  // bytes published while disconnected, kept until back
    // Events lost on the way (in flight to a NATS server that died, or sent while a node was
    // away) are asked for again: each node keeps its last resend_buffer bytes of events, and
    // a receiver holds what follows a gap up to resend_wait (plus a heartbeat) for them.
    std::size_t resend_buffer = 4 << 20;
    milliseconds resend_wait{1000};
    // Set when enable_commands(server) is on (call it before start()): /who, /msg, /me and
    // /nick then span the cluster. Off, the add-on leaves commands to the core alone.
    bool commands = false;

    // "nats://a:4222,nats://b:4222" (a command line's form): the servers, tried in that order.
    void set_servers(std::string_view list) {
        servers.clear();
        for (std::size_t at = 0; at <= list.size();) {
            const std::size_t comma = std::min(list.find(',', at), list.size());
            if (comma > at) servers.emplace_back(list.substr(at, comma - at));
            at = comma + 1;
        }
    }
    // The settings a deployment keeps out of the command line: CHATSOCK_NATS_USER and
    // CHATSOCK_NATS_PASSWORD, or CHATSOCK_NATS_TOKEN; CHATSOCK_NATS_REPLICAS (1 to 5). Empty
    // when they are fine, else what is wrong.
    std::string read_environment() {
        auto env = [](const char* name) -> std::string {
            const char* value = std::getenv(name);
            return value ? value : "";
        };
        user = env("CHATSOCK_NATS_USER"), password = env("CHATSOCK_NATS_PASSWORD");
        token = env("CHATSOCK_NATS_TOKEN");
        const std::string copies = env("CHATSOCK_NATS_REPLICAS");
        if (copies.empty()) return {};
        if (copies.size() != 1 || copies[0] < '1' || copies[0] > '5')
            return "CHATSOCK_NATS_REPLICAS must be 1 to 5, not '" + copies + "'";
        replicas = copies[0] - '0';
        return {};
    }
};

class Cluster {
public:
    Cluster(Server& server, ClusterOptions options)
        : server_(server),
          options_(std::move(options)),
          alive_(std::make_shared<char>()),
          alive_weak_(alive_) {
        std::random_device seed;
        char hex[17];
        std::snprintf(hex, sizeof hex, "%08x%08x", unsigned(seed()), unsigned(seed()));
        boot_ = hex;
        owner_ = options_.node + " " + boot_;
    }
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;
    // Installs the callbacks and connects; empty when started, else why not. NATS being
    // unreachable is no failure: the node serves its own room and joins the cluster later.
    std::string start() {
        if (!cluster_wire::is_token(options_.node))
            return "the node name must be 1-32 of A-Z a-z 0-9 _ -";
        if (!cluster_wire::is_token(options_.room))
            return "the room name must be 1-32 of A-Z a-z 0-9 _ -";
        if (options_.servers.empty()) return "no NATS server URL";
        subject_ = "chatsock." + options_.room + ".events";
        bucket_ = "chatsock_" + options_.room + "_names";
        std::vector<const char*> urls;
        for (const std::string& url : options_.servers) urls.push_back(url.c_str());
        natsStatus s = natsOptions_Create(&nats_options_);
        if (s == NATS_OK) s = natsOptions_SetServers(nats_options_, urls.data(), int(urls.size()));
        if (s == NATS_OK) s = natsOptions_SetNoRandomize(nats_options_, true);
        if (s == NATS_OK) s = natsOptions_SetName(nats_options_, options_.node.c_str());
        if (s == NATS_OK) s = natsOptions_SetNoEcho(nats_options_, true);
        if (s == NATS_OK && !options_.user.empty())
            s = natsOptions_SetUserInfo(nats_options_, options_.user.c_str(),
                                        options_.password.c_str());
        if (s == NATS_OK && !options_.token.empty())
            s = natsOptions_SetToken(nats_options_, options_.token.c_str());
        if (s == NATS_OK) s = natsOptions_SetMaxReconnect(nats_options_, -1);  // for ever
        if (s == NATS_OK)
            s = natsOptions_SetReconnectWait(nats_options_, options_.reconnect_wait.count());
        if (s == NATS_OK)
            s = natsOptions_SetReconnectBufSize(nats_options_, options_.reconnect_buffer);
        if (s == NATS_OK)
            s = natsOptions_SetPingInterval(nats_options_, options_.ping_interval.count());
        if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(nats_options_, options_.max_pings_out);
        if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(nats_options_, on_disconnected, this);
        if (s == NATS_OK) s = natsOptions_SetReconnectedCB(nats_options_, on_connected, this);
        if (s == NATS_OK) s = natsOptions_SetClosedCB(nats_options_, on_closed, this);
        if (s != NATS_OK) return std::string("NATS options: ") + natsStatus_GetText(s);
        // One attempt on this thread alone first: wrong credentials are no outage to wait out.
        // (Retrying, libnats' reconnect thread clears the connection's last error at once,
        // racing whoever reads it, and reports a refusal the same way as a server away.)
        s = natsConnection_Connect(&nc_, nats_options_);
        if (s == NATS_CONNECTION_AUTH_FAILED) return refused_credentials();
        if (s != NATS_OK) {  // NATS away: the attempts go on in the background
            s = natsOptions_SetRetryOnFailedConnect(nats_options_, true, on_connected, this);
            if (s == NATS_OK) s = natsConnection_Connect(&nc_, nats_options_);
        }
        install_callbacks();
        if (s == NATS_NOT_YET_CONNECTED)
            say("NATS is unreachable: serving the local room only, joining the cluster when "
                "NATS appears");
        else if (s != NATS_OK)
            return std::string("cannot connect to NATS: ") + natsStatus_GetText(s);
        else connected_ = true, say("connected to NATS at " + connected_url());
        s = natsConnection_Subscribe(&sub_, nc_, subject_.c_str(), on_bus, this);
        if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(sub_, on_sub_done, this);
        if (s == NATS_OK) s = natsConnection_JetStream(&js_, nc_, nullptr);
        if (s != NATS_OK) return std::string("cannot subscribe: ") + natsStatus_GetText(s);
        worker_ = std::thread([this] { work(); });
        beater_ = std::thread([this] { beat(); });
        return {};
    }
    // Why start() fails after a refused first attempt: the server's words, from this thread's
    // last error ("(conn.c:1905): Authorization Violation").
    static std::string refused_credentials() {
        const char* last = nats_GetLastError(nullptr);
        std::string text = last ? last : "";
        if (const std::size_t end = text.find("): "); text[0] == '(' && end != std::string::npos)
            text.erase(0, end + 3);
        return "NATS refused this node's credentials (" +
               (text.empty() ? natsStatus_GetText(NATS_CONNECTION_AUTH_FAILED) : text) +
               "): check the user and password, or the token";
    }
    ~Cluster() {
        alive_.reset();  // tasks already posted to the loop do nothing now
        {
            std::lock_guard<std::mutex> hold(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (sub_) natsSubscription_Unsubscribe(sub_);
        if (nc_ && connected_) natsConnection_FlushTimeout(nc_, 1000);  // the last leaves
        if (nc_) natsConnection_Close(nc_);  // also ends a key-value request under way
        if (worker_.joinable()) worker_.join();
        if (beater_.joinable()) beater_.join();
        {  // libnats calls back on its threads: wait (bounded) until it is done with `this`
            std::unique_lock<std::mutex> hold(mutex_);
            wake_.wait_for(hold, std::chrono::seconds(2),
                           [&] { return (!sub_ || sub_done_) && (!nc_ || closed_); });
        }
        kvStore_Destroy(kv_);
        jsCtx_Destroy(js_);
        natsSubscription_Destroy(sub_);
        natsConnection_Destroy(nc_);
        natsOptions_Destroy(nats_options_);
    }

private:
    enum class Claim { pending, claimed, local_only };
    struct Local {
        ClientInfo info;  // as the server gave it at join, its name kept up to date
        Claim claim = Claim::pending;
        bool renaming = false;          // a /nick's claim is under way
        std::vector<std::string> held;  // its lines (messages, commands) while a claim is pending
    };
    struct Peer {
        std::string boot;
        std::uint64_t seq = 0;  // the last applied
        Clock::time_point heard;
        std::map<std::uint64_t, std::vector<std::string>> early;  // after a gap, by number
        Clock::time_point gap_since;                              // when the gap was seen
        std::map<std::string, std::string> users;                 // lowercase name -> name
        std::set<std::string> listed;  // lowercase names of the roster under way
    };
    struct Job {  // for the worker thread
        enum Kind { claim, rename, release } kind;
        ClientId id;
        std::string name;
    };
    struct Lease {  // a name this node holds in the bucket (worker thread only)
        ClientId id;
        std::string name;
        std::uint64_t revision;
    };

    // ---- on the server's loop thread --------------------------------------------------------
    void install_callbacks() {
        server_.on_join = [this, next = std::move(server_.on_join)](const ClientInfo& who) {
            if (next) next(who);
            locals_[who.id].info = who;
            local_names_[detail::ascii_lower(who.name)] = who.id;
            submit({Job::claim, who.id, who.name});
        };
        next_line_ = std::move(server_.on_message);  // the core's commands, the program's policy
        server_.on_message = [this](const ClientInfo& who, std::string& text) {
            return on_line(who, text);
        };
        server_.on_leave = [this, next = std::move(server_.on_leave)](const ClientInfo& who,
                                                                      std::string_view reason) {
            auto it = locals_.find(who.id);
            if (it != locals_.end()) {
                if (it->second.claim == Claim::claimed) publish("leave", {who.name, reason});
                submit({Job::release, who.id, who.name});  // the worker frees it if it holds it
                local_names_.erase(detail::ascii_lower(it->second.info.name));
                local_names_.erase(detail::ascii_lower(who.name));
                locals_.erase(it);
            }
            if (next) next(who, reason);
        };
    }
    void publish(std::string_view kind, std::initializer_list<std::string_view> fields) {
        std::string event = header(kind);
        for (std::string_view f : fields) cluster_wire::put(event, f);
        send(std::move(event));
    }
    // Publishes an event, and keeps it a while for the nodes that may miss it (see resend).
    void send(std::string event) {
        if (!nc_) return;
        const natsStatus s =
            natsConnection_Publish(nc_, subject_.c_str(), event.data(), int(event.size()));
        if (s != NATS_OK && !std::exchange(publish_failed_, true))
            say(std::string("cannot publish on the bus: ") + natsStatus_GetText(s));
        if (s == NATS_OK) publish_failed_ = false;
        if (s == NATS_OK && !connected_)  // libnats keeps it in its reconnect buffer
            ++buffered_events_, buffered_bytes_ += event.size();
        kept_bytes_ += event.size();  // kept even when not published: a resend may get through
        kept_.emplace_back(seq_, std::move(event));
        while (kept_bytes_ > options_.resend_buffer && kept_.size() > 1)
            kept_bytes_ -= kept_.front().second.size(), kept_.pop_front();
    }
    // A node missed our events first..last (an event lost with the NATS server it was sent
    // to, or sent while that node was away): publish again those still kept, as they were.
    // The nodes that have them drop them as duplicates.
    void answer_resend(const std::string& node, const std::string& first_field,
                       const std::string& last_field) {
        if (!cluster_wire::is_number(first_field, false) ||
            !cluster_wire::is_number(last_field, false))
            return drop("a malformed resend request from node " + node);
        const std::uint64_t first = std::stoull(first_field), last = std::stoull(last_field);
        if (first == 0 || first > last || last > seq_) return drop("a resend of events we lack");
        std::size_t count = 0;
        for (const auto& [seq, event] : kept_)
            if (seq >= first && seq <= last && nc_)
                ++count,
                    natsConnection_Publish(nc_, subject_.c_str(), event.data(), int(event.size()));
        const std::uint64_t asked = last - first + 1;
        say("node " + node + " missed our events " + first_field + "-" + last_field + ": " +
            (count == asked ? "resent"
                            : std::to_string(count) + " resent, the others no longer kept"));
    }
    // Said on (re)connecting: what libnats kept in its reconnect buffer meanwhile, now sent.
    std::string buffered_news() {
        if (buffered_events_ == 0) return {};
        const std::string news = "; " + std::to_string(buffered_events_) + " events (" +
                                 std::to_string(buffered_bytes_) +
                                 " bytes) published while away were buffered, sent on now";
        buffered_events_ = buffered_bytes_ = 0;
        return news;
    }
    // The four fields every event starts with; the next sequence number is taken.
    std::string header(std::string_view kind) {
        std::string event(cluster_wire::version);
        cluster_wire::put(event, options_.node);
        cluster_wire::put(event, boot_);
        cluster_wire::put(event, std::to_string(++seq_));
        cluster_wire::put(event, kind);
        return event;
    }
    // This node's claimed users, in roster events of at most ~64 KiB, then roster-end.
    void publish_roster() {
        std::vector<std::string> names;
        for (const auto& [id, local] : locals_)
            if (local.claim == Claim::claimed) names.push_back(local.info.name);
        for (std::size_t i = 0; i < names.size();) {
            std::vector<std::string_view> chunk;
            for (std::size_t bytes = 0; i < names.size() && bytes < (64u << 10) &&
                                        chunk.size() < cluster_wire::max_fields - 4;
                 ++i)
                chunk.push_back(names[i]), bytes += names[i].size() + 8;
            std::string event = header("roster");  // like publish(), with a list
            for (std::string_view f : chunk) cluster_wire::put(event, f);
            send(std::move(event));
        }
        publish("roster-end", {});  // the list is whole: a receiver can tell who is gone
    }
    // A line from a local user; true: the server relays it to the local room. While the user's
    // name is being claimed, the line is held (nothing goes out under a name not yet ours, and
    // order holds). A cluster command is run here; anything else goes to the on_message that
    // was there before (the core's commands, the program's policy), and a message it keeps is
    // published.
    bool on_line(const ClientInfo& who, std::string& text) {
        auto it = locals_.find(who.id);
        if (it == locals_.end()) return !next_line_ || next_line_(who, text);
        Local& local = it->second;
        if (local.info.name != who.name) follow_rename(local, who.name);  // see follow_rename
        if (local.claim == Claim::pending || local.renaming) {
            local.held.push_back(text);  // replay_held runs it once the claim is settled
            return false;
        }
        if (local.claim == Claim::claimed && options_.commands && cluster_command(who, text))
            return false;
        const bool keep = !next_line_ || next_line_(who, text);
        it = locals_.find(who.id);  // the callbacks may have disconnected the user (/quit)
        if (it == locals_.end()) return keep;
        if (it->second.info.name != who.name) follow_rename(it->second, who.name);
        if (keep && it->second.claim == Claim::claimed) publish("msg", {who.name, text});
        return keep;
    }
    // Runs the lines a user sent while its claim was pending, in order, as if they came now.
    void replay_held(ClientId id) {
        auto it = locals_.find(id);
        if (it == locals_.end()) return;
        std::vector<std::string> lines;
        lines.swap(it->second.held);
        for (std::string& line : lines) {
            it = locals_.find(id);
            if (it == locals_.end()) return;  // it left meanwhile (/quit)
            const ClientInfo who = it->second.info;
            if (on_line(who, line))  // a line held again (a /nick) keeps its place in order
                server_.broadcast(line, who.name, id), server_.log_event("message", who.name, line);
        }
    }
    // A name the core changed without the cluster: a user not claimed cluster-wide (NATS
    // away) used the core's /nick. Its claim, when NATS is back, is for the new name. Seen
    // when the user's next line (or its leave) comes with the new name.
    void follow_rename(Local& local, const std::string& name) {
        local_names_.erase(detail::ascii_lower(local.info.name));
        local_names_[detail::ascii_lower(name)] = local.info.id;
        local.info.name = name;
    }

    // ---- commands across the cluster (ClusterOptions::commands) -------------------------------
    // /who, /me, /msg to a user of another node and /nick, for a user whose name is claimed;
    // false leaves the line to the core's commands, which answer as for one server (usage,
    // "no user named", "too long to send"), and keep /help and /quit.
    bool cluster_command(const ClientInfo& who, const std::string& line) {
        if (line.size() < 2 || line[0] != '/' || line[1] == '/') return false;  // "//": text
        const std::size_t space = std::min(line.find(' '), line.size());
        const std::string command = detail::ascii_lower(line.substr(0, space));
        const std::string rest =
            line.substr(std::min(line.find_first_not_of(' ', space), line.size()));
        if (command == "/who") return who_command(who), true;
        if (command == "/me") return action(who, rest);
        if (command == "/msg") return private_message(who, rest);
        if (command == "/nick") return nick(who, rest);
        return false;
    }
    void tell(ClientId id, const std::string& text) {  // as the core's commands answer
        server_.send_to(id,
                        text.size() <= server_.options().max_payload ? text : "too long to send");
    }
    // /who: the users of every node, in the core's format (chatsock.hpp, detail::run_command).
    void who_command(const ClientInfo& who) {
        std::vector<std::string> names;
        for (const ClientInfo& c : server_.clients()) names.push_back(c.name);
        for (const auto& [node, peer] : peers_)
            for (const auto& [key, name] : peer.users) names.push_back(name);
        std::sort(names.begin(), names.end());
        const std::size_t limit = server_.options().max_payload;
        std::string list = std::to_string(names.size()) + " online";
        const std::size_t shown = std::min(names.size(), server_.options().announce_up_to);
        if (shown < names.size()) list += "; the first " + std::to_string(shown);
        for (std::size_t i = 0; i < shown && list.size() + names[i].size() + 2 < limit; ++i)
            list += (i == 0 ? ": " : ", ") + names[i];
        tell(who.id, list);
    }
    // /me TEXT: the core's notice "alice waves" here, and on every other node.
    bool action(const ClientInfo& who, const std::string& rest) {
        if (rest.empty() || who.name.size() + 1 + rest.size() > server_.options().max_payload)
            return false;  // the core says why
        server_.broadcast(who.name + " " + rest, {}, who.id);
        server_.log_event("action", who.name, rest);
        publish("action", {who.name, rest});
        return true;
    }
    // /msg NAME TEXT to a user of another node. The sender is told at once, as for a local
    // user: the receiving node answers nothing (its user may have left meanwhile).
    bool private_message(const ClientInfo& who, const std::string& rest) {
        const std::size_t gap = std::min(rest.find(' '), rest.size());
        const std::string name = rest.substr(0, gap),
                          text = rest.substr(std::min(gap + 1, rest.size()));
        const std::string key = detail::ascii_lower(name);
        if (name.empty() || text.empty() || local_names_.count(key)) return false;  // the core's
        const std::string node = owner_of(key);
        if (node.empty()) return false;  // the core's "no user named"
        const std::string to = peers_[node].users[key];
        if (("private from " + who.name + ": " + text).size() > server_.options().max_payload)
            return tell(who.id, "too long to send"), true;
        publish("private", {who.name, to, text});
        server_.log_event("private", who.name, "to " + to + ": " + text);
        tell(who.id, "private to " + to + ": " + text);
        return true;
    }
    // /nick NAME: checked here against the users this node knows, then claimed in the bucket
    // (the worker; renamed() ends it). The user's lines wait meanwhile, as at join.
    bool nick(const ClientInfo& who, const std::string& name) {
        if (name.empty()) return false;  // the core's usage
        const ServerOptions& o = server_.options();
        const std::string key = detail::ascii_lower(name);
        const bool same_key = key == detail::ascii_lower(who.name);  // "alice" -> "Alice"
        std::string problem = check_username(name, o.server_name, o.max_name_bytes);
        if (problem.empty() && !same_key && (local_names_.count(key) || !owner_of(key).empty()))
            problem = "the name \"" + name + "\" is taken";
        if (!problem.empty()) return tell(who.id, "name refused: " + problem), true;
        if (same_key) return apply_nick(who.id, who.name, name), true;  // its claim is ours
        locals_[who.id].renaming = true;
        submit({Job::rename, who.id, name});
        return true;
    }
    // The worker's answer to a /nick's claim (why: empty when the new name is ours).
    void renamed(ClientId id, const std::string& name, const std::string& why) {
        auto it = locals_.find(id);
        if (it == locals_.end()) {  // it left meanwhile: its old name was released then
            if (why.empty()) submit({Job::release, id, name});
            return;
        }
        it->second.renaming = false;
        const std::string old_name = it->second.info.name;
        if (!why.empty()) tell(id, "name refused: " + why);
        else  // release whichever of the two names the user no longer has
            submit({Job::release, id, apply_nick(id, old_name, name) ? old_name : name});
        replay_held(id);
    }
    // Renames a user whose new name is ours cluster-wide. The core's rules apply once more (a
    // local user may have taken the name meanwhile); false when they refuse.
    bool apply_nick(ClientId id, const std::string& old_name, const std::string& name) {
        if (std::string problem = server_.rename(id, name); !problem.empty())
            return tell(id, "name refused: " + problem), false;
        follow_rename(locals_[id], name);
        server_.broadcast(old_name + " is now known as " + name);
        publish("nick", {old_name, name});
        return true;
    }

    void on_event(const std::string& data) {
        std::vector<std::string> f;
        if (std::string problem = cluster_wire::decode(data, f); !problem.empty())
            return drop(problem);
        const std::string node = f[0];      // a copy: f may move to the held events
        if (node == options_.node) return;  // our own echo (no_echo is on: this is a spare)
        const std::uint64_t seq = std::stoull(f[2]);
        Peer& peer = peers_[node];
        if (peer.boot != f[1]) {  // a node we did not know, or one that restarted
            if (!peer.boot.empty()) forget(node, peer, "node restarted");
            peer = Peer();
            peer.boot = f[1];
            peer.seq = seq - 1;
            say("node " + node + " is in the cluster");
            publish("who", {});  // it sends its roster in answer
        }
        if (seq <= peer.seq || peer.early.count(seq)) return;  // a duplicate
        peer.heard = Clock::now();
        // A resend request is answered at once, not held behind a gap in its sender's numbers:
        // two nodes that each missed the other's events would otherwise wait on each other.
        if (f[3] == "resend" && f[4] == options_.node) answer_resend(node, f[5], f[6]);
        if (seq > peer.seq + 1) return hold(node, peer, seq, std::move(f));
        peer.seq = seq;
        apply(node, peer, f);
        catch_up(node, peer);
    }
    // An event after a gap: it waits, in order, while the node is asked for the missing ones
    // (at most resend_wait; see give_up). One request per new gap.
    void hold(const std::string& node, Peer& peer, std::uint64_t seq, std::vector<std::string> f) {
        const std::uint64_t asked = peer.early.empty() ? peer.seq : peer.early.rbegin()->first;
        if (peer.early.empty()) peer.gap_since = Clock::now();
        peer.early.emplace(seq, std::move(f));
        if (peer.early.size() > max_early) return give_up(node, peer);  // a node gone astray
        if (seq > asked + 1)
            publish("resend", {node, std::to_string(asked + 1), std::to_string(seq - 1)});
    }
    // Applies the held events that now follow in order.
    void catch_up(const std::string& node, Peer& peer) {
        while (!peer.early.empty() && peer.early.begin()->first == peer.seq + 1) {
            auto first = peer.early.begin();
            std::vector<std::string> f = std::move(first->second);
            peer.early.erase(first);
            ++peer.seq;
            apply(node, peer, f);
        }
        if (!peer.early.empty()) peer.gap_since = Clock::now();  // the next gap's own wait
    }
    // The missing events did not come: they are lost (said so), and the held ones go on.
    void give_up(const std::string& node, Peer& peer) {
        if (peer.early.empty()) return;
        say("missed " + std::to_string(peer.early.begin()->first - peer.seq - 1) +
            " events from node " + node);
        peer.seq = peer.early.begin()->first - 1;
        catch_up(node, peer);
        publish("who", {});  // the rosters bring back the users whose joins were missed
    }
    void apply(const std::string& node, Peer& peer, const std::vector<std::string>& f) {
        const std::string& kind = f[3];
        if (kind == "who") {
            publish_roster();
        } else if (kind == "join") {
            add_user(node, peer, f[4]);
        } else if (kind == "roster") {
            for (std::size_t i = 4; i < f.size(); ++i)
                if (add_user(node, peer, f[i])) peer.listed.insert(detail::ascii_lower(f[i]));
        } else if (kind == "roster-end") {
            end_roster(node, peer);
        } else if (kind == "leave") {
            auto it = peer.users.find(detail::ascii_lower(f[4]));
            if (it == peer.users.end()) return drop("a leave of a user node " + node + " lacks");
            peer.users.erase(it);
            announce_leave(f[4], f[5], node);
        } else if (kind == "msg") {
            if (!add_user(node, peer, f[4])) return;
            if (f[5].size() > server_.options().max_payload || !is_valid_utf8(f[5]))
                return drop("a message from " + f[4] + "@" + node + " that clients cannot take");
            server_.broadcast(f[5], f[4]);
            server_.log_event("remote", f[4] + "@" + node, f[5]);
        } else if (kind == "action") {
            if (!add_user(node, peer, f[4])) return;
            const std::string notice = f[4] + " " + f[5];
            if (!fits(notice))
                return drop("an action from " + f[4] + "@" + node + " that clients cannot take");
            server_.broadcast(notice);
            server_.log_event("remote-action", f[4] + "@" + node, f[5]);
        } else if (kind == "private") {
            deliver_private(node, peer, f[4], f[5], f[6]);
        } else if (kind == "nick") {
            remote_nick(node, peer, f[4], f[5]);
        }  // resend: answered on arrival (on_event)
    }
    bool fits(const std::string& text) const {  // what every local client can take
        return text.size() <= server_.options().max_payload && is_valid_utf8(text);
    }
    // Every node hears a private message (it travels on the room's subject); the one whose
    // user it is delivers it, and logs it as that user's.
    void deliver_private(const std::string& node, Peer& peer, const std::string& from,
                         const std::string& to, const std::string& text) {
        auto local = local_names_.find(detail::ascii_lower(to));
        if (local == local_names_.end()) return;  // another node's user, or gone meanwhile
        if (!add_user(node, peer, from)) return;
        const std::string note = "private from " + from + ": " + text;
        if (!fits(note))
            return drop("a private message from " + from + "@" + node +
                        " that clients cannot take");
        server_.send_to(local->second, note);
        server_.log_event("remote-private", from + "@" + node,
                          "to " + locals_[local->second].info.name + ": " + text);
    }
    void remote_nick(const std::string& node, Peer& peer, const std::string& old_name,
                     const std::string& name) {
        const ServerOptions& o = server_.options();
        auto it = peer.users.find(detail::ascii_lower(old_name));
        if (it == peer.users.end()) return drop("a nick of a user node " + node + " lacks");
        if (!check_username(name, o.server_name, o.max_name_bytes).empty())
            return drop("an invalid name from node " + node);
        const std::string key = detail::ascii_lower(name);
        std::string owner;  // of the new name, unless only its case changes
        if (key != it->first) owner = local_names_.count(key) ? options_.node : owner_of(key);
        if (!owner.empty())
            return drop("node " + node + " claims \"" + name + "\", a user of node " + owner);
        const std::string was = it->second;
        peer.users.erase(it);
        peer.users[key] = name;
        server_.broadcast(was + " is now known as " + name);
        server_.log_event("nick", was, "node " + node + ": " + name);
    }
    // Makes `name` a user of `node` (announced as joined when new); false when it cannot be:
    // not a valid name, or another node's or ours.
    bool add_user(const std::string& node, Peer& peer, const std::string& name) {
        const ServerOptions& o = server_.options();
        if (!check_username(name, o.server_name, o.max_name_bytes).empty())
            return drop("an invalid name from node " + node), false;
        const std::string key = detail::ascii_lower(name);
        if (peer.users.count(key)) return true;
        const std::string owner = local_names_.count(key) ? options_.node : owner_of(key);
        if (!owner.empty())
            return drop("node " + node + " claims \"" + name + "\", a user of node " + owner),
                   false;
        peer.users[key] = name;
        server_.set_users_elsewhere(++remote_users_);  // the welcome counts them
        if (room_size() <= o.announce_up_to) server_.broadcast(name + " joined");
        server_.log_event("join", name, "node " + node);
        return true;
    }
    std::string owner_of(const std::string& key) const {
        for (const auto& [node, peer] : peers_)
            if (peer.users.count(key)) return node;
        return {};
    }
    void announce_leave(const std::string& name, std::string_view reason, const std::string& node) {
        server_.set_users_elsewhere(--remote_users_);
        const std::string notice =
            name + (reason == "left" ? " left" : " left (" + std::string(reason) + ")");
        if (room_size() + 1 <= server_.options().announce_up_to) server_.broadcast(notice);
        server_.log_event("leave", name, "node " + node + ": " + std::string(reason));
    }
    // A node's whole roster has come, in order with its other events: a user it does not list
    // left while we missed its events (a leave lost beyond the resend window).
    void end_roster(const std::string& node, Peer& peer) {
        for (auto it = peer.users.begin(); it != peer.users.end();) {
            if (peer.listed.count(it->first)) {
                ++it;
                continue;
            }
            const std::string name = it->second;
            it = peer.users.erase(it);
            announce_leave(name, "left", node);
        }
        peer.listed.clear();
    }
    // A lost or restarted node: its users leave.
    void forget(const std::string& node, Peer& peer, std::string_view reason) {
        std::map<std::string, std::string> users;
        users.swap(peer.users);
        for (const auto& [key, name] : users) announce_leave(name, reason, node);
    }
    std::size_t room_size() const { return server_.client_count() + remote_users_; }
    void tick() {  // every `heartbeat`, from beat()
        if (connected_) publish("hb", {}), reclaim();
        const auto now = Clock::now();
        for (auto& [node, peer] : peers_)
            if (!peer.early.empty() && now - peer.gap_since >= options_.resend_wait)
                give_up(node, peer);
        for (auto it = peers_.begin(); it != peers_.end();) {
            if (now - it->second.heard < options_.node_lost_after) {
                ++it;
                continue;
            }
            say("node " + it->first + " lost: not heard for " +
                std::to_string(options_.node_lost_after.count()) + " ms");
            forget(it->first, it->second, "node lost");
            it = peers_.erase(it);
        }
    }
    // The worker's answer to a claim: ok, taken (why: the rule text) or not possible now.
    void claimed(ClientId id, const std::string& name, Claim outcome, const std::string& why) {
        auto it = locals_.find(id);
        if (it == locals_.end() || it->second.info.name != name) return;  // gone meanwhile
        Local& local = it->second;
        if (!why.empty()) {
            local.held.clear();
            return server_.disconnect(id, "name refused: " + why);
        }
        local.claim = outcome;
        if (outcome == Claim::claimed) publish("join", {name});
        replay_held(id);  // published too once claimed; local only otherwise
    }
    // NATS is back (or the tick, while NATS is there): claim the names of the users who came
    // while NATS or the names bucket was away.
    void reclaim() {
        for (auto& [id, local] : locals_)
            if (local.claim == Claim::local_only)
                local.claim = Claim::pending, submit({Job::claim, id, local.info.name});
    }
    void drop(const std::string& what) { say("dropped " + what); }
    void say(const std::string& line) const {
        if (server_.options().diagnostics) server_.options().diagnostics("cluster: " + line);
    }
    std::string connected_url() {
        char url[256] = "";
        natsConnection_GetConnectedUrl(nc_, url, sizeof url);
        return url;
    }
    // Runs `task` on the loop's thread, unless this Cluster is gone by then.
    void to_loop(std::function<void()> task) {
        server_.post([alive = alive_weak_, task = std::move(task)] {
            if (alive.lock()) task();
        });
    }

    // ---- libnats' threads: hand everything to the loop --------------------------------------
    static void on_bus(natsConnection*, natsSubscription*, natsMsg* msg, void* self) {
        auto* cluster = static_cast<Cluster*>(self);
        const auto size = std::size_t(natsMsg_GetDataLength(msg));
        if (size > cluster_wire::max_event) {  // not even copied
            cluster->to_loop([cluster, size] {
                cluster->drop("an event of " + std::to_string(size) + " bytes (the limit is " +
                              std::to_string(cluster_wire::max_event) + ")");
            });
        } else {
            std::string data(natsMsg_GetData(msg), size);
            cluster->to_loop([cluster, data = std::move(data)] { cluster->on_event(data); });
        }
        natsMsg_Destroy(msg);
    }
    static void on_connected(natsConnection*, void* self) {
        auto* cluster = static_cast<Cluster*>(self);
        cluster->connected_ = true;
        cluster->to_loop([cluster] {
            cluster->say("connected to NATS at " + cluster->connected_url() +
                         cluster->buffered_news());
            cluster->reclaim();
        });
        cluster->wake_.notify_all();  // the worker may be waiting for NATS
    }
    static void on_disconnected(natsConnection*, void* self) {
        auto* cluster = static_cast<Cluster*>(self);
        if (!cluster->connected_.exchange(false)) return;
        cluster->to_loop([cluster] {
            cluster->say("lost the NATS connection: reconnecting; the local room carries on");
        });
    }
    static void on_closed(natsConnection*, void* self) {
        auto* cluster = static_cast<Cluster*>(self);
        std::lock_guard<std::mutex> hold(cluster->mutex_);
        cluster->closed_ = true;
        cluster->wake_.notify_all();
    }
    static void on_sub_done(void* self) {
        auto* cluster = static_cast<Cluster*>(self);
        std::lock_guard<std::mutex> hold(cluster->mutex_);
        cluster->sub_done_ = true;
        cluster->wake_.notify_all();
    }

    // ---- the worker thread: key-value requests block, so they run here ----------------------
    void submit(Job job) {
        std::lock_guard<std::mutex> hold(mutex_);
        jobs_.push_back(std::move(job));
        wake_.notify_all();
    }
    void work() {
        auto next_renewal = Clock::now() + options_.name_ttl / 3;
        std::unique_lock<std::mutex> hold(mutex_);
        while (!stopping_) {
            if (jobs_.empty()) wake_.wait_until(hold, next_renewal);
            std::deque<Job> jobs;
            jobs.swap(jobs_);
            hold.unlock();
            for (const Job& job : jobs) run(job);
            if (Clock::now() >= next_renewal)
                next_renewal = Clock::now() + options_.name_ttl / 3, renew();
            hold.lock();
        }
    }
    // The heartbeat has a thread of its own: a key-value request that keeps the worker waiting
    // (a JetStream leader election takes seconds) must not make the other nodes think us lost.
    void beat() {
        std::unique_lock<std::mutex> hold(mutex_);
        do {
            hold.unlock();  // post() takes the loop's lock: never both at once
            to_loop([this] { tick(); });
            hold.lock();
        } while (!wake_.wait_for(hold, options_.heartbeat, [this] { return stopping_; }));
    }
    void run(const Job& job) {
        const std::string key = cluster_wire::name_key(job.name);
        if (job.kind == Job::release) {
            auto it = leases_.find(key);
            if (it == leases_.end() || it->second.id != job.id) return;
            leases_.erase(it);
            if (open_bucket()) kvStore_Delete(kv_, key.c_str());  // else: free at its TTL
            return;
        }
        std::string why;
        Claim outcome = Claim::local_only;
        if (auto lease = leases_.find(key); lease != leases_.end() && lease->second.id != job.id) {
            why = "the name \"" + job.name + "\" is taken";  // by another user here (a /nick)
        } else if (open_bucket()) {
            std::uint64_t revision = 0;
            if (take(key, revision, why)) {
                leases_[key] = Lease{job.id, job.name, revision};
                outcome = Claim::claimed;
            } else if (!why.empty()) {
                why = "the name \"" + job.name + "\" is taken";
            }
        }
        if (job.kind == Job::rename) {  // a /nick is refused rather than left unclaimed
            if (outcome != Claim::claimed && why.empty())
                why = "the cluster's names are unreachable just now; try again";
            return to_loop([this, id = job.id, name = job.name, why] { renamed(id, name, why); });
        }
        to_loop([this, id = job.id, name = job.name, outcome, why] {
            claimed(id, name, outcome, why);
        });
    }
    // Claims `key` for this node: an atomic create, or a takeover of our own earlier boot's
    // claim. False with `why` set when another node holds it, with `why` empty on an error.
    bool take(const std::string& key, std::uint64_t& revision, std::string& why) {
        if (kvStore_CreateString(&revision, kv_, key.c_str(), owner_.c_str()) == NATS_OK)
            return true;
        kvEntry* entry = nullptr;
        if (kvStore_Get(&entry, kv_, key.c_str()) != NATS_OK) return false;
        const std::string holder = kvEntry_ValueString(entry);
        const std::uint64_t held_at = kvEntry_Revision(entry);
        kvEntry_Destroy(entry);
        if (holder.rfind(options_.node + " ", 0) != 0) {
            why = "taken by " + holder;
            return false;
        }  // ours: an update can fail for a while (a JetStream leader being elected): no refusal
        return kvStore_UpdateString(&revision, kv_, key.c_str(), owner_.c_str(), held_at) ==
               NATS_OK;
    }
    // Renews every lease; a lease lost meanwhile (expired while NATS was away, and claimed
    // elsewhere) disconnects its user.
    void renew() {
        if (!connected_ || !open_bucket()) return;
        std::size_t failed = 0;
        for (auto it = leases_.begin(); it != leases_.end();) {
            Lease& lease = it->second;
            std::string why;
            if (kvStore_UpdateString(&lease.revision, kv_, it->first.c_str(), owner_.c_str(),
                                     lease.revision) == NATS_OK ||
                take(it->first, lease.revision, why)) {
                ++it;
                continue;
            }
            if (why.empty()) {  // an error, not a loss: tried again at the next renewal
                ++failed, ++it;
                continue;
            }
            to_loop([this, id = lease.id, name = lease.name] {
                server_.disconnect(id, "name lost: \"" + name +
                                           "\" was claimed on another node while this one "
                                           "was away from NATS");
            });
            it = leases_.erase(it);
        }
        if (failed)
            to_loop([this, failed, error = std::string(nats_GetLastError(nullptr))] {
                say("could not renew " + std::to_string(failed) + " names (" + error +
                    "); trying again in name_ttl / 3");
            });
    }
    // The names bucket, made by whichever node comes first; tried at most once a second.
    bool open_bucket() {
        if (kv_) return true;
        if (!connected_ || Clock::now() < next_bucket_try_) return false;
        next_bucket_try_ = Clock::now() + std::chrono::seconds(1);
        natsStatus s = js_KeyValue(&kv_, js_, bucket_.c_str());
        if (s == NATS_NOT_FOUND) {
            kvConfig config;
            kvConfig_Init(&config);
            config.Bucket = bucket_.c_str();
            config.History = 1;
            config.TTL = std::chrono::nanoseconds(options_.name_ttl).count();
            config.StorageType = js_MemoryStorage;  // leases: nothing worth a disk
            config.Replicas = options_.replicas;
            s = js_CreateKeyValue(&kv_, js_, &config);
        }
        std::string news = "the names bucket " + bucket_ + " is ready";
        if (s != NATS_OK) {
            kv_ = nullptr;
            news = "the names bucket " + bucket_ + " is unavailable (" + natsStatus_GetText(s) +
                   ": " + nats_GetLastError(nullptr) + "); users stay local until it is";
        }
        if (news != bucket_news_) to_loop([this, news] { say(news); });  // once per change
        bucket_news_ = news;
        return kv_ != nullptr;
    }

    Server& server_;
    ClusterOptions options_;
    std::shared_ptr<char> alive_;           // posted tasks hold it weakly
    const std::weak_ptr<char> alive_weak_;  // copied on libnats' threads while alive_ resets
    std::string boot_, owner_;              // owner_: "node boot", the value of our claims
    std::string subject_, bucket_;
    natsOptions* nats_options_ = nullptr;
    natsConnection* nc_ = nullptr;
    natsSubscription* sub_ = nullptr;
    jsCtx* js_ = nullptr;
    std::atomic<bool> connected_{false};
    // The loop thread's.
    std::uint64_t seq_ = 0;
    bool publish_failed_ = false;
    std::deque<std::pair<std::uint64_t, std::string>> kept_;  // our last events, for resends
    std::size_t kept_bytes_ = 0;
    static constexpr std::size_t max_early = 10000;         // events held after one node's gaps
    std::size_t buffered_events_ = 0, buffered_bytes_ = 0;  // published while disconnected
    std::function<bool(const ClientInfo&, std::string&)> next_line_;
    std::unordered_map<ClientId, Local> locals_;
    std::unordered_map<std::string, ClientId> local_names_;  // lowercase name -> user
    std::map<std::string, Peer> peers_;
    std::size_t remote_users_ = 0;
    // The worker's, and what it shares under mutex_.
    kvStore* kv_ = nullptr;
    Clock::time_point next_bucket_try_;
    std::string bucket_news_;
    std::map<std::string, Lease> leases_;
    std::thread worker_, beater_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> jobs_;
    bool stopping_ = false, closed_ = false, sub_done_ = false;
};

}  // namespace chatsock

#endif  // CHATSOCK_CLUSTER_HPP
