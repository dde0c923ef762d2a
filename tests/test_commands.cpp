// The chat commands (enable_commands, section 8 of the header), as framed clients see them;
// tests/test_web.cpp checks that line and WebSocket clients get the same.
#include "tests/support.hpp"

#include <string>
#include <vector>

using chatsock::milliseconds;
using cst::ChatUser;

namespace {

// A server with the commands on, and a log to read.
struct CommandRoom {
    cst::LoggedServer chat;
    CommandRoom() { chatsock::enable_commands(chat.server); }
};

// Sends `text` from `from` and pumps until `done` (or the time limit).
template <class Done, class... Users>
bool say(CommandRoom& room, ChatUser& from, const std::string& text, Done&& done,
         Users&... others) {
    if (from.client.send(text)) return false;
    return cst::pump(room.chat.server, std::forward<Done>(done), from, others...);
}

}  // namespace

TEST_SUITE("commands") {
    TEST_CASE("commands: /help and an unknown command answer the sender only, nothing is relayed") {
        CommandRoom room;
        ChatUser alice, bob;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        REQUIRE(say(
            room, alice, "/help", [&] { return alice.got_text_starting("commands: /who"); }, bob));
        REQUIRE(say(
            room, alice, "/dance",
            [&] { return alice.got("server", "unknown command /dance; /help lists the commands"); },
            bob));
        cst::run_for(milliseconds(30), room.chat.server, alice, bob);
        CHECK(bob.count_from("alice") == 0);
        CHECK(bob.texts_from("server") ==
              std::vector<std::string>{"welcome, bob! 1 other user online"});
        CHECK(room.chat.log().find("\tmessage\t") == std::string::npos);  // commands: not logged
    }

    TEST_CASE("commands: //text sends /text as a message, text without a slash is a message") {
        CommandRoom room;
        ChatUser alice, bob;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        REQUIRE(say(
            room, alice, "//who is there", [&] { return bob.got("alice", "/who is there"); }, bob));
        REQUIRE(say(
            room, alice, "a /slash inside", [&] { return bob.got("alice", "a /slash inside"); },
            bob));
    }

    TEST_CASE("commands: /who lists who is online, sorted, a big room gives the count and some") {
        CommandRoom room;
        ChatUser carol, alice, bob;
        cst::join_wait(room.chat.server, carol, room.chat.port, "carol");
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        REQUIRE(say(
            room, bob, "/who", [&] { return bob.got("server", "3 online: alice, bob, carol"); },
            alice, carol));

        cst::LoggedServer big([](chatsock::ServerOptions& o) { o.announce_up_to = 2; });
        chatsock::enable_commands(big.server);
        ChatUser a, b, c;
        cst::join_wait(big.server, a, big.port, "a");
        cst::join_wait(big.server, b, big.port, "b");
        cst::join_wait(big.server, c, big.port, "c");
        REQUIRE_FALSE(c.client.send("/who"));
        REQUIRE(cst::pump(
            big.server, [&] { return c.got("server", "3 online; the first 2: a, b"); }, a, b, c));
    }

    TEST_CASE("commands: /msg reaches only its target, marked private, and is logged as such") {
        CommandRoom room;
        ChatUser alice, bob, carol;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        cst::join_wait(room.chat.server, carol, room.chat.port, "carol");
        REQUIRE(say(
            room, alice, "/msg BOB meet at noon",
            [&] {
                return bob.got("server", "private from alice: meet at noon") &&
                       alice.got("server", "private to bob: meet at noon");
            },
            bob, carol));
        cst::run_for(milliseconds(30), room.chat.server, alice, bob, carol);
        CHECK_FALSE(carol.got_text_starting("private"));
        CHECK(carol.count_from("alice") == 0);
        CHECK(room.chat.log().find("\tprivate\talice\tto bob: meet at noon\n") !=
              std::string::npos);

        REQUIRE(say(
            room, alice, "/msg nobody hi",
            [&] { return alice.got("server", "no user named \"nobody\""); }, bob, carol));
        for (const char* bad : {"/msg", "/msg bob", "/msg bob "}) {
            CAPTURE(bad);
            alice.inbox.clear();
            REQUIRE(say(
                room, alice, bad, [&] { return alice.got("server", "usage: /msg NAME TEXT"); }, bob,
                carol));
        }
        // Too long to arrive whole: refused with a notice, never cut or relayed.
        REQUIRE(say(
            room, alice, "/msg bob " + std::string(65520, 'x'),
            [&] { return alice.got("server", "too long to send"); }, bob, carol));
        CHECK_FALSE(bob.got_text_starting("private from alice: xxx"));
    }

    TEST_CASE("commands: /me sends an action to the others, as a notice, logged as an action") {
        CommandRoom room;
        ChatUser alice, bob;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        REQUIRE(say(
            room, alice, "/me waves", [&] { return bob.got("server", "alice waves"); }, bob));
        CHECK_FALSE(alice.got_text("alice waves"));  // like a message: not back to its sender
        CHECK(room.chat.log().find("\taction\talice\twaves\n") != std::string::npos);
        REQUIRE(say(
            room, alice, "/me", [&] { return alice.got("server", "usage: /me TEXT"); }, bob));
    }

    TEST_CASE("commands: /nick renames under the join rules, everyone is told, the log too") {
        CommandRoom room;
        ChatUser alice, bob;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        REQUIRE(say(
            room, alice, "/nick ada",
            [&] {
                return bob.got("server", "alice is now known as ada") &&
                       alice.got("server", "alice is now known as ada");
            },
            bob));
        CHECK(room.chat.log().find("\tnick\talice\tada\n") != std::string::npos);
        std::vector<std::string> names;
        for (const auto& c : room.chat.server.clients()) names.push_back(c.name);
        std::sort(names.begin(), names.end());
        CHECK(names == std::vector<std::string>{"ada", "bob"});
        // Messages now come from the new name; the old one is free again.
        REQUIRE(say(
            room, alice, "hello again", [&] { return bob.got("ada", "hello again"); }, bob));
        ChatUser carol;
        cst::join_wait(room.chat.server, carol, room.chat.port, "Alice");

        // Refused with the rule's text: taken in any case, reserved, empty, control characters.
        const std::vector<std::pair<std::string, std::string>> refused = {
            {"/nick BOB", "name refused: the name \"BOB\" is taken"},
            {"/nick server", "name refused: the name \"server\" is reserved"},
            {"/nick a\x01b", "name refused: the name contains control characters"},
            {"/nick " + std::string(40, 'n'), "name refused: the name is longer than 32 bytes"},
            {"/nick", "usage: /nick NAME"},
        };
        for (const auto& case_ : refused) {
            const std::string& command = case_.first;  // (clang's lambdas cannot capture
            const std::string& answer = case_.second;  // structured bindings before C++20)
            CAPTURE(command);
            REQUIRE(say(
                room, alice, command, [&] { return alice.got("server", answer); }, bob, carol));
        }
        // Another case of one's own name is fine.
        REQUIRE(say(
            room, alice, "/nick ADA", [&] { return bob.got("server", "ada is now known as ADA"); },
            bob, carol));
    }

    TEST_CASE("commands: /quit leaves with the reason given, or just 'left'") {
        CommandRoom room;
        ChatUser alice, bob, carol;
        cst::join_wait(room.chat.server, alice, room.chat.port, "alice");
        cst::join_wait(room.chat.server, bob, room.chat.port, "bob");
        cst::join_wait(room.chat.server, carol, room.chat.port, "carol");
        REQUIRE(say(
            room, alice, "/quit gone fishing",
            [&] { return bob.got("server", "alice left (gone fishing)"); }, bob, carol));
        REQUIRE(say(
            room, carol, "/quit", [&] { return bob.got("server", "carol left"); }, bob));
        CHECK(room.chat.log().find("\tleave\talice\tgone fishing\n") != std::string::npos);
    }

    TEST_CASE("commands: the on_message set before enable_commands still gets the messages") {
        cst::LoggedServer chat;
        std::vector<std::string> seen;
        chat.server.on_message = [&](const chatsock::ClientInfo&, std::string& text) {
            seen.push_back(text);
            return text != "drop me";
        };
        chatsock::enable_commands(chat.server);
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        REQUIRE_FALSE(alice.client.send("drop me"));
        REQUIRE_FALSE(alice.client.send("/help"));
        REQUIRE_FALSE(alice.client.send("keep me"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "keep me"); }, alice, bob));
        CHECK(seen == std::vector<std::string>{"drop me", "keep me"});  // not the command
        CHECK_FALSE(bob.got("alice", "drop me"));
    }
}  // TEST_SUITE("commands")

TEST_SUITE("history") {
    // The notices a user got after its welcome, in order.
    std::vector<std::string> after_welcome(const ChatUser& user) {
        std::vector<std::string> out = user.texts_from("server");
        if (!out.empty()) out.erase(out.begin());
        return out;
    }
    // "[03:39:03] alice: hello" without its time.
    std::string untimed(const std::string& note) {
        REQUIRE(note.size() > 11);
        CHECK(note[0] == '[');
        CHECK(note[3] == ':');
        CHECK(note[6] == ':');
        CHECK(note.compare(9, 2, "] ") == 0);
        return note.substr(11);
    }

    // Joins `newcomer` as `name` and returns the notices it got after its welcome, once they came.
    template <typename... Others>
    std::vector<std::string> history_for(cst::LoggedServer & chat, ChatUser & newcomer,
                                         const char* name, Others&... others) {
        cst::join_wait(chat.server, newcomer, chat.port, name);
        REQUIRE(cst::pump(
            chat.server, [&] { return !after_welcome(newcomer).empty(); }, others..., newcomer));
        cst::run_for(milliseconds(30), chat.server, others..., newcomer);
        return after_welcome(newcomer);
    }

    TEST_CASE("history: a newcomer gets the last N messages after its welcome, oldest first") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.history = 3; });
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        for (const char* text : {"one", "two", "three", "four", "five"}) {
            REQUIRE_FALSE((std::string(text) == "four" ? bob : alice).client.send(text));
            REQUIRE(cst::pump(
                chat.server, [&] { return alice.got_text(text) || bob.got_text(text); }, alice,
                bob));
        }
        ChatUser carol;
        cst::join_wait(chat.server, carol, chat.port, "carol");
        REQUIRE(cst::pump(
            chat.server, [&] { return after_welcome(carol).size() >= 3; }, alice, bob, carol));
        cst::run_for(milliseconds(30), chat.server, alice, bob, carol);
        const auto old = after_welcome(carol);
        REQUIRE(old.size() == 3);
        CHECK(untimed(old[0]) == "alice: three");
        CHECK(untimed(old[1]) == "bob: four");
        CHECK(untimed(old[2]) == "alice: five");
        CHECK(carol.count_from("alice") == 0);  // as notices, so nobody mistakes them for new
    }

    TEST_CASE("history: 0 turns it off, private messages and commands are never replayed") {
        cst::LoggedServer off([](chatsock::ServerOptions& o) { o.history = 0; });
        ChatUser a, b;
        cst::join_wait(off.server, a, off.port, "a");
        REQUIRE_FALSE(a.client.send("hello"));
        cst::run_for(milliseconds(30), off.server, a);
        cst::join_wait(off.server, b, off.port, "b");
        cst::run_for(milliseconds(30), off.server, a, b);
        CHECK(after_welcome(b).empty());

        cst::LoggedServer chat;  // the default: 20
        chatsock::enable_commands(chat.server);
        ChatUser alice, bob;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        cst::join_wait(chat.server, bob, chat.port, "bob");
        REQUIRE_FALSE(alice.client.send("/msg bob a secret"));
        REQUIRE_FALSE(alice.client.send("/me waves"));
        REQUIRE_FALSE(alice.client.send("in the open"));
        REQUIRE(cst::pump(
            chat.server, [&] { return bob.got("alice", "in the open"); }, alice, bob));
        ChatUser carol;
        const auto old = history_for(chat, carol, "carol", alice, bob);
        REQUIRE(old.size() == 1);
        CHECK(untimed(old[0]) == "alice: in the open");
    }

    TEST_CASE("history: a message too long to replay whole is left out, never cut") {
        cst::LoggedServer chat;
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        REQUIRE_FALSE(alice.client.send(std::string(65536, 'x')));  // max_payload exactly
        REQUIRE_FALSE(alice.client.send("short"));
        cst::run_for(milliseconds(50), chat.server, alice);
        ChatUser bob;
        const auto old = history_for(chat, bob, "bob", alice);
        REQUIRE(old.size() == 1);
        CHECK(untimed(old[0]) == "alice: short");
        CHECK(bob.client.is_open());
    }

    TEST_CASE("history: what the program broadcasts with a sender is replayed, a notice is not") {
        cst::LoggedServer chat;  // as the cluster add-on relays another node's user
        ChatUser alice;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        chat.server.broadcast("from far away", "zoe");
        chat.server.broadcast("a notice");
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("zoe", "from far away"); }, alice));
        ChatUser bob;
        const auto old = history_for(chat, bob, "bob", alice);
        REQUIRE(old.size() == 1);
        CHECK(untimed(old[0]) == "zoe: from far away");
    }
}  // TEST_SUITE("history")

TEST_SUITE("users elsewhere") {
    TEST_CASE("users elsewhere: the welcome counts them, and so does announce_up_to") {
        cst::LoggedServer chat([](chatsock::ServerOptions& o) { o.announce_up_to = 4; });
        chat.server.set_users_elsewhere(2);  // a cluster's other nodes hold two
        ChatUser alice, bob, carol;
        cst::join_wait(chat.server, alice, chat.port, "alice");
        REQUIRE(cst::pump(
            chat.server, [&] { return !alice.texts_from("server").empty(); }, alice));
        CHECK(alice.texts_from("server").front() == "welcome, alice! 2 other users online");
        cst::join_wait(chat.server, bob, chat.port, "bob");  // a room of 4: announced
        REQUIRE(cst::pump(
            chat.server, [&] { return alice.got("server", "bob joined"); }, alice, bob));
        cst::join_wait(chat.server, carol, chat.port, "carol");  // 5: over announce_up_to
        REQUIRE(cst::pump(
            chat.server, [&] { return !carol.texts_from("server").empty(); }, alice, bob, carol));
        cst::run_for(milliseconds(30), chat.server, alice, bob, carol);
        CHECK(carol.texts_from("server").front() ==
              "welcome, carol! 4 other users online; joins and leaves are not announced in a "
              "room this big");
        CHECK_FALSE(alice.got("server", "carol joined"));
        carol.client.close();  // the room still counts 5 as she leaves: not announced either
        cst::run_for(milliseconds(100), chat.server, alice, bob);
        CHECK(chat.server.client_count() == 2);
        CHECK_FALSE(alice.got("server", "carol left"));
    }
}  // TEST_SUITE("users elsewhere")
