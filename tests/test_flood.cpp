// Flood control and per-address caps, in process (docs/PROTOCOL.md, "Flood control"). The room's
// back-pressure needs readers slower than a sender, on real sockets: tests/e2e_attacks.py.
#include "tests/support.hpp"

#include <algorithm>
#include <string>
#include <vector>

using chatsock::Clock;
using chatsock::milliseconds;
using cst::RawPeer;

namespace {

const std::string slow_down =
    "slow down: you are sending faster than the room can take it; the rest waits, nothing is lost";

std::vector<std::string> texts_from(const RawPeer& peer, const std::string& from) {
    std::vector<std::string> out;
    for (const auto& m : peer.messages)
        if (m.from == from) out.push_back(m.text);
    return out;
}

std::vector<std::string> numbered(const std::string& prefix, int count) {
    std::vector<std::string> out;
    for (int i = 0; i < count; ++i) out.push_back(prefix + std::to_string(i));
    return out;
}

// The frames of `texts`, back to back: what one send of many messages looks like.
std::string frames_of(const std::vector<std::string>& texts) {
    std::string out;
    for (const auto& t : texts) out += chatsock::encode_frame(t);
    return out;
}

// 50 messages a second in bursts of 200 ms (10, and the one that goes over), room pressure off.
chatsock::ServerOptions budget_options() {
    auto options = cst::quiet_options();
    options.flood_messages = 50;
    options.flood_bytes = 0;
    options.flood_burst = milliseconds(200);
    options.room_pressure = 0;
    options.slow_down_after = milliseconds(100);
    return options;
}

}  // namespace

TEST_SUITE("flood") {
    TEST_CASE("a client over its budget is read at the budget's pace: in order, nothing lost") {
        chatsock::Server server(budget_options());
        const auto port = cst::start(server);
        RawPeer reader, fast, person;
        cst::raw_join(server, reader, port, "reader");
        cst::raw_join(server, fast, port, "fast");
        cst::raw_join(server, person, port, "person");

        // Ten at once are within the burst: all there in one go, and no notice.
        REQUIRE(person.send(frames_of(numbered("p", 10))));
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "person").size() == 10; }, reader, person));

        // Sixty at once: the burst passes, then 50 a second, so the last is read no sooner than
        // (60 - 11) / 50 s after the first.
        const auto t0 = Clock::now();
        REQUIRE(fast.send(frames_of(numbered("f", 60))));
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "fast").size() >= 11; }, reader, fast));
        const double seconds = static_cast<double>(cst::elapsed_ms(t0)) / 1000.0;
        CHECK(texts_from(reader, "fast").size() <= 11 + static_cast<std::size_t>(50 * seconds) + 1);
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "fast").size() == 60; }, reader, fast, person));
        CHECK(cst::elapsed_ms(t0) >= 900);
        CHECK(texts_from(reader, "fast") == numbered("f", 60));
        const auto told = [&](const RawPeer& p) {
            const auto notices = texts_from(p, "server");
            return std::count(notices.begin(), notices.end(), slow_down);
        };
        CHECK(told(fast) == 1);    // once
        CHECK(told(person) == 0);  // the person is left alone
    }

    TEST_CASE("a line client's input kept while it is paused goes on in order when it resumes") {
        chatsock::Server server(budget_options());
        const auto port = cst::start(server);
        RawPeer reader, lines;
        cst::raw_join(server, reader, port, "reader");
        lines.connect(port);
        std::string all = "lou\n";  // the name and forty lines in one send: one read
        for (const auto& t : numbered("line ", 40)) all += t + "\r\n";
        REQUIRE(lines.send(all));
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "lou").size() == 40; }, reader, lines));
        CHECK(texts_from(reader, "lou") == numbered("line ", 40));
    }

    TEST_CASE("input kept in order even when the budget runs out within the first bytes") {
        // The first bytes of a connection are copied aside to tell its wire format: a budget of
        // one message (and the one over) runs out inside them, and the rest must queue behind.
        auto options = budget_options();
        options.flood_messages = 10;
        options.flood_burst = milliseconds(100);
        chatsock::Server server(options);
        const auto port = cst::start(server);
        RawPeer reader, lines;
        cst::raw_join(server, reader, port, "reader");
        lines.connect(port);
        REQUIRE(lines.send("u\na\nb\nc\nd\ne\nf\n"));
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "u").size() == 6; }, reader, lines));
        CHECK(texts_from(reader, "u") == std::vector<std::string>{"a", "b", "c", "d", "e", "f"});
    }

    TEST_CASE("flood control off: sixty at once go through at once") {
        auto options = budget_options();
        options.no_flood_control();
        chatsock::Server server(options);
        const auto port = cst::start(server);
        RawPeer reader, fast;
        cst::raw_join(server, reader, port, "reader");
        cst::raw_join(server, fast, port, "fast");
        REQUIRE(fast.send(frames_of(numbered("f", 60))));
        REQUIRE(cst::pump(
            server, [&] { return texts_from(reader, "fast").size() == 60; }, reader, fast));
        for (const auto& notice : texts_from(fast, "server")) CHECK(notice != slow_down);
    }

    TEST_CASE("per-address caps: at once, and new a second, told why, then closed") {
        auto options = cst::quiet_options();
        options.max_per_address = 2;
        chatsock::Server server(options);
        const auto port = cst::start(server);
        RawPeer a, b, c;
        cst::raw_join(server, a, port, "a");
        cst::raw_join(server, b, port, "b");
        c.connect(port);
        REQUIRE(cst::pump(
            server, [&] { return c.ended(); }, c));
        REQUIRE(c.messages.size() == 1);
        CHECK(c.messages[0].text == "too many connections from 127.0.0.1 (at most 2 at once)");

        auto rate_options = cst::quiet_options();
        rate_options.new_per_address = 3;
        chatsock::Server rate(rate_options);
        const auto rate_port = cst::start(rate);
        RawPeer r[4];
        for (int i = 0; i < 3; ++i) cst::raw_join(rate, r[i], rate_port, "r" + std::to_string(i));
        r[3].connect(rate_port);
        REQUIRE(cst::pump(
            rate, [&] { return r[3].ended(); }, r[3]));
        REQUIRE(r[3].messages.size() == 1);
        CHECK(r[3].messages[0].text ==
              "too many new connections from 127.0.0.1 (at most 3 a second)");
    }
}
