// cluster_wire.hpp — the cluster add-on's events on the bus: how they are written and read.
//
// Apart from chatsock_cluster.hpp so that it builds without libnats: the unit tests and the
// fuzzer (fuzz/fuzz_cluster_wire.cpp) take every byte a NATS subject can bring through it.
#ifndef CHATSOCK_CLUSTER_WIRE_HPP
#define CHATSOCK_CLUSTER_WIRE_HPP

#include "../chatsock.hpp"

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace chatsock {

// The events on the bus: a versioned, length-checked text encoding, no JSON. An event is
// "CS1" followed by its fields, each as " <length>:<bytes>" (the length in decimal, at most 7
// digits), so any byte may appear in a field. The first four fields are always the node, its
// boot id (hex), its sequence number (decimal) and the kind; the kind's own fields follow:
//   hb                  heartbeat             who                  "send me your users"
//   roster NAME...      users present, a part of the list      roster-end   "that was all"
//   join NAME           a user came           leave NAME REASON    a user went
//   msg NAME TEXT       a message             action NAME TEXT     "/me TEXT"
//   private FROM TO TEXT  "/msg TO TEXT"      nick OLD NEW         "/nick NEW"
//   resend NODE FIRST LAST  "NODE: publish your events FIRST..LAST again, I missed them"
namespace cluster_wire {
constexpr std::string_view version = "CS1";
constexpr std::size_t max_event = 256 * 1024;  // longer events are dropped unread
constexpr std::size_t max_fields = 4 + 1024;

inline void put(std::string& out, std::string_view field) {
    out.append(1, ' ').append(std::to_string(field.size())).append(1, ':').append(field);
}
// Splits an event into its fields; false when it is not a well-formed event.
inline bool split(std::string_view in, std::vector<std::string>& fields) {
    if (in.size() > max_event || in.substr(0, version.size()) != version) return false;
    for (std::size_t at = version.size(); at < in.size();) {
        if (in[at++] != ' ' || fields.size() == max_fields) return false;
        std::size_t length = 0, digits = 0;
        for (; at < in.size() && in[at] >= '0' && in[at] <= '9' && digits < 7; ++at, ++digits)
            length = length * 10 + std::size_t(in[at] - '0');
        const bool padded = digits > 1 && in[at - digits] == '0';  // one way to write a length
        if (digits == 0 || padded || at == in.size() || in[at++] != ':' || length > in.size() - at)
            return false;
        fields.emplace_back(in.substr(at, length));
        at += length;
    }
    return true;
}
// Node and room names: 1-32 of A-Z a-z 0-9 _ - (safe in NATS subjects and bucket names).
// ASCII only, whatever locale the program has set (<cctype> would follow it).
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_token(std::string_view s) {
    if (s.empty() || s.size() > 32) return false;
    for (char c : s)
        if (!is_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '_' &&
            c != '-')
            return false;
    return true;
}
inline bool is_number(std::string_view s, bool hex) {
    if (s.empty() || s.size() > (hex ? 16 : 19)) return false;
    for (char c : s)
        if (!is_digit(c) && !(hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))))
            return false;
    return true;
}
// How many fields of its own each kind has (-1: any number); 0 for an unknown kind too.
inline int arity(std::string_view kind, bool& known) {
    static const std::map<std::string_view, int> kinds = {
        {"hb", 0},  {"who", 0},    {"roster", -1}, {"roster-end", 0}, {"join", 1},  {"leave", 2},
        {"msg", 2}, {"action", 2}, {"private", 3}, {"nick", 2},       {"resend", 3}};
    auto it = kinds.find(kind);
    known = it != kinds.end();
    return known ? it->second : 0;
}
// A name's key in the bucket: its ASCII-lowercase form in hex (keys allow few characters).
inline std::string name_key(std::string_view name) {
    static const char digits[] = "0123456789abcdef";
    std::string key = "n.";
    for (unsigned char c : detail::ascii_lower(name)) key += digits[c >> 4], key += digits[c & 15];
    return key;
}
// Checks an event from the bus and splits it into its fields: empty when it is well formed
// (a node name, a boot id in hex, a sequence number from 1, a known kind with its number of
// fields), else what is wrong with it, for the log. Nothing here trusts the sender.
inline std::string decode(std::string_view in, std::vector<std::string>& fields) {
    fields.clear();
    if (!split(in, fields) || fields.size() < 4 || !is_token(fields[0]) ||
        !is_number(fields[1], true) || !is_number(fields[2], false))
        return "a malformed event of " + std::to_string(in.size()) + " bytes";
    bool known = false;
    const int own = arity(fields[3], known);
    if (!known || (own >= 0 && fields.size() != 4u + std::size_t(own)))
        return "an event of unknown kind or size from node " + fields[0];
    if (fields[2].find_first_not_of('0') == std::string::npos)
        return "an event numbered 0 from node " + fields[0];
    return {};
}
}  // namespace cluster_wire

}  // namespace chatsock

#endif  // CHATSOCK_CLUSTER_WIRE_HPP
