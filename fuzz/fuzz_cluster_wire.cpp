// libFuzzer target for the cluster add-on's bus encoding, cluster/cluster_wire.hpp: every event
// a node takes from NATS goes through decode() first, and anyone allowed to publish on the
// room's subject can send any bytes. No libnats; checked against a model written here from
// the header's comments (the event format and decode's rules), independently of its code.
//
// Input layout:
//   byte 0   bit 0: the mode (below). In mode 1, byte0 >> 1 grows the event to a limit's edge:
//            1-3 to max_event - 1, max_event or max_event + 1 bytes (its last field made
//            longer), 4-6 to max_fields - 1, max_fields or max_fields + 1 fields (its last field
//            repeated); any other value leaves it as built (big events are slow to check: rare)
//   rest     mode 0: the event, as bytes from the bus
//            mode 1: fields, each a length byte and that many bytes (the last takes what is
//            left), written with put() after the version into an event
//
// Checks, on every event (mode 0's bytes, mode 1's encoding), given in a buffer of exactly its
// size so that ASan sees any read past its end:
//   - split() and decode() answer as the model does (ref_split, ref_decode), decode the same
//     twice, with left-over fields in its vector or not;
//   - when split() accepts, the fields are the input's own bytes: the version then each field
//     written with put() gives back exactly the input (one way to write a length, none padded),
//     so every field lies within it;
//   - when decode() accepts: the node is 1-32 of A-Z a-z 0-9 _ -, the boot id hex, the sequence
//     number decimal and not 0, the kind known with its own number of fields;
//   - a reason is printable ASCII (it goes to the log), of one of the three forms, naming the
//     node only once the node is known to be a token.
// In mode 1 also: split() gives back exactly the fields put() wrote; is_token, is_number and
// name_key agree with the model on each field (a key is "n." and the lowercase name in hex,
// so distinct names give distinct keys and case does not count).
//
// A violation calls __builtin_trap() (FUZZ_CHECK) so libFuzzer records a crash and its input.
//
// Build and run: make fuzz (see the Makefile), or this target alone (new inputs go in the first
// folder, so the seeds stay as they are):
//   make tests/bin/fuzz_cluster_wire
//   mkdir -p /tmp/cw && tests/bin/fuzz_cluster_wire /tmp/cw fuzz/corpus/cluster_wire

#include "chatsock.hpp"
#include "cluster/cluster_wire.hpp"
#include "fuzz/reference.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace wire = chatsock::cluster_wire;
using Fields = std::vector<std::string>;

// ---- the model ------------------------------------------------------------------------------

bool ref_digit(char c) { return c >= '0' && c <= '9'; }
bool ref_hex_digit(char c) {
    return ref_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool ref_token(std::string_view s) {
    if (s.empty() || s.size() > 32) return false;
    for (char c : s)
        if (!ref_digit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '_' &&
            c != '-')
            return false;
    return true;
}

bool ref_number(std::string_view s, bool hex) {
    if (s.empty() || s.size() > (hex ? 16u : 19u)) return false;
    for (char c : s)
        if (!(hex ? ref_hex_digit(c) : ref_digit(c))) return false;
    return true;
}

// "CS1", then fields as " <length>:<bytes>": the length 1-7 decimal digits, no leading zero
// (but "0" itself), at most max_event bytes in all and max_fields fields.
bool ref_split(std::string_view in, Fields& out) {
    out.clear();
    if (in.size() > wire::max_event || in.size() < 3 || in[0] != 'C' || in[1] != 'S' ||
        in[2] != '1')
        return false;
    std::size_t i = 3;
    while (i != in.size()) {
        if (in[i] != ' ') return false;
        const std::size_t first = ++i;
        while (i != in.size() && ref_digit(in[i])) ++i;
        const std::size_t digits = i - first;
        if (digits < 1 || digits > 7 || (digits > 1 && in[first] == '0')) return false;
        if (i == in.size() || in[i] != ':') return false;
        std::size_t length = 0;
        for (std::size_t k = first; k != i; ++k) length = length * 10 + std::size_t(in[k] - '0');
        ++i;
        if (in.size() - i < length || out.size() == wire::max_fields) return false;
        out.emplace_back(in.substr(i, length));
        i += length;
    }
    return true;
}

// How many fields of its own a kind has: -1 any, -2 no such kind.
int ref_own_fields(std::string_view kind) {
    if (kind == "hb" || kind == "who" || kind == "roster-end") return 0;
    if (kind == "join") return 1;
    if (kind == "leave" || kind == "msg" || kind == "action" || kind == "nick") return 2;
    if (kind == "private" || kind == "resend") return 3;
    if (kind == "roster") return -1;
    return -2;
}

std::string ref_decode(std::string_view in) {
    Fields f;
    if (!ref_split(in, f) || f.size() < 4 || !ref_token(f[0]) || !ref_number(f[1], true) ||
        !ref_number(f[2], false))
        return "a malformed event of " + std::to_string(in.size()) + " bytes";
    const int own = ref_own_fields(f[3]);
    if (own == -2 || (own >= 0 && f.size() != 4 + std::size_t(own)))
        return "an event of unknown kind or size from node " + f[0];
    if (f[2].find_first_not_of('0') == std::string::npos)
        return "an event numbered 0 from node " + f[0];
    return {};
}

std::string ref_name_key(std::string_view name) {
    std::string key = "n.";
    char hex[3];
    for (char c : name) {
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
        std::snprintf(hex, sizeof hex, "%02x", unsigned(static_cast<unsigned char>(c)));
        key += hex;
    }
    return key;
}

// ---- the checks -----------------------------------------------------------------------------

std::string encode(const Fields& fields) {
    std::string out(wire::version);
    for (const std::string& f : fields) wire::put(out, f);
    return out;
}

bool printable_ascii(std::string_view s) {
    for (char c : s)
        if (c < 0x20 || c > 0x7E) return false;
    return true;
}

void check_event(std::string_view in) {
    Fields model_fields;
    const bool model_split = ref_split(in, model_fields);
    Fields fields;
    const bool split = wire::split(in, fields);
    FUZZ_CHECK(split == model_split);
    if (split) {
        FUZZ_CHECK(fields == model_fields);
        FUZZ_CHECK(encode(fields) == in);  // canonical, and every field within the input
    }

    const std::string reason = wire::decode(in, fields);
    FUZZ_CHECK(reason == ref_decode(in));
    Fields again = {"left", "over"};
    FUZZ_CHECK(wire::decode(in, again) == reason && again == fields);
    FUZZ_CHECK(printable_ascii(reason));
    if (!reason.empty()) return;

    FUZZ_CHECK(split && fields == model_fields && encode(fields) == in);
    FUZZ_CHECK(fields.size() >= 4 && fields.size() <= wire::max_fields);
    FUZZ_CHECK(ref_token(fields[0]) && wire::is_token(fields[0]));
    FUZZ_CHECK(ref_number(fields[1], true) && ref_number(fields[2], false));
    FUZZ_CHECK(fields[2].find_first_not_of('0') != std::string::npos);
    const int own = ref_own_fields(fields[3]);
    FUZZ_CHECK(own != -2);
    if (own >= 0) FUZZ_CHECK(fields.size() == 4 + std::size_t(own));
    bool known = false;
    const int arity = wire::arity(fields[3], known);
    FUZZ_CHECK(known && arity == own);
}

// The field rules and name_key on one field of any bytes.
void check_field(std::string_view f) {
    FUZZ_CHECK(wire::is_token(f) == ref_token(f));
    FUZZ_CHECK(wire::is_number(f, true) == ref_number(f, true));
    FUZZ_CHECK(wire::is_number(f, false) == ref_number(f, false));
    const std::string key = wire::name_key(f);
    FUZZ_CHECK(key == ref_name_key(f));  // injective on the lowercase name
    std::string flipped(f);              // the same name in other case: the same key
    for (char& c : flipped)
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) c = char(c ^ 0x20);
    FUZZ_CHECK(wire::name_key(flipped) == key);
}

// Mode 1's fields: a length byte, then that many bytes (fewer for the last, at the end).
Fields read_fields(std::string_view rest) {
    Fields fields;
    for (std::size_t i = 0; i < rest.size();) {
        const std::size_t length = static_cast<unsigned char>(rest[i++]);
        fields.emplace_back(rest.substr(i, length));
        i += fields.back().size();
    }
    return fields;
}

// Lengthens the last field until the event is `size` bytes (unless no length gives it: the
// length's digits jump past it).
void grow_to_size(Fields& fields, std::size_t size) {
    if (fields.empty()) return;
    const std::size_t without =
        encode(fields).size() - fields.back().size() - std::to_string(fields.back().size()).size();
    for (std::size_t digits = 1; digits <= 7; ++digits) {
        if (size < without + digits) break;
        const std::size_t length = size - without - digits;
        if (std::to_string(length).size() != digits || length < fields.back().size()) continue;
        fields.back().resize(length, 'x');
        return;
    }
}

void check_fields(const Fields& sent) {
    const std::string event = encode(sent);
    // Exactly sized, so that a read past the end is a heap overflow.
    const std::unique_ptr<char[]> exact(new char[event.size() ? event.size() : 1]);
    std::memcpy(exact.get(), event.data(), event.size());
    const std::string_view in(exact.get(), event.size());

    Fields got;
    const bool fits = event.size() <= wire::max_event && sent.size() <= wire::max_fields;
    FUZZ_CHECK(wire::split(in, got) == fits);
    if (fits) FUZZ_CHECK(got == sent);
    check_event(in);
    for (std::size_t k = 0; k < sent.size() && k < 64; ++k)  // a grown roster repeats one
        if (sent[k].size() <= 4096) check_field(sent[k]);    // the rules' limits are far below
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const unsigned mode = data[0] & 1, edge = data[0] >> 1;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (mode == 0) return check_event(rest), 0;

    Fields fields = read_fields(rest);
    if (edge >= 1 && edge <= 3) grow_to_size(fields, wire::max_event - 2 + edge);  // else as built
    if (edge >= 4 && edge <= 6 && !fields.empty()) {
        const std::string last = fields.back();
        fields.resize(std::max(fields.size(), wire::max_fields - 5 + edge), last);
    }
    check_fields(fields);
    return 0;
}
