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

    TEST_CASE("commands: //text sends /text as a message; text without a slash is a message") {
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

    TEST_CASE("commands: /who lists who is online, sorted; a big room gives the count and some") {
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

    TEST_CASE("commands: /nick renames under the join rules; everyone is told; the log too") {
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
        for (const auto& [command, answer] : refused) {
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
