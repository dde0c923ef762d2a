#!/usr/bin/env python3
"""Interop tests: chatsock's demos against the classic Python select() chat, byte for byte.

  (a) raw sockets speak to demo_server exactly as the classic Python client does and check
      every byte that comes back;
  (b) tests/classic/classic_client.py chats through demo_server;
  (c) demo_client chats through tests/classic/classic_server.py.

Ends with "RESULT passed=N failed=M".   python3 tests/e2e_interop.py
"""
import os
import signal
import socket
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HOST, ChatTestCase, NotReadError, build_demos, frame, main,  # noqa: E402
                     needs_proc_net_tcp, recv_exactly, recv_frame, recv_until_closed, wait_until_read)


def setUpModule():
    build_demos()


# ============================================================================================
# (a) raw sockets, byte for byte, against demo_server
# ============================================================================================

class RawAgainstDemoServer(ChatTestCase):
    def setUp(self):
        super().setUp()
        self.server, self.port = self.start_server()

    def join(self, name):
        """A raw connection that has sent its name and read its welcome."""
        s = self.raw_connect(self.port, name)
        header, payload = recv_frame(s)
        self.assertEqual((header, payload), (b"6         ", b"server"))
        header, payload = recv_frame(s)
        self.assertTrue(payload.startswith(f"welcome, {name}!".encode()), payload)
        return s

    def expect_notice(self, s, text):
        """The next two frames are a server notice: "server", then `text`."""
        text = text.encode()
        self.assertEqual(recv_exactly(s, 26 + len(text)), b"6         server" + f"{len(text):<10}".encode() + text)

    def assert_nothing_pending(self, s, marker_sender, marker_socket):
        """Proves `s` has received nothing unexpected: a fresh marker message must be the very
        next thing it reads."""
        marker_socket.sendall(frame("marker"))
        name = marker_sender.encode()
        self.assertEqual(recv_exactly(s, 20 + len(name) + 6),
                         frame(name) + b"6         marker")

    def test_exact_bytes_of_welcome_notices_and_relay(self):
        alice = self.raw_connect(self.port)
        alice.sendall(b"5         alice")
        self.assertEqual(recv_exactly(alice, 62),
                         b"6         server" b"36        welcome, alice! 0 other users online")

        bob = self.raw_connect(self.port)
        bob.sendall(b"3         bob")
        self.assertEqual(recv_exactly(bob, 59),
                         b"6         server" b"33        welcome, bob! 1 other user online")
        self.assertEqual(recv_exactly(alice, 36), b"6         server" b"10        bob joined")

        bob.sendall(b"5         hello")
        self.assertEqual(recv_exactly(alice, 28), b"3         bob" b"5         hello")
        alice.sendall(b"12        hello, bob!!")
        self.assertEqual(recv_exactly(bob, 37), b"5         alice" b"12        hello, bob!!")
        self.assert_nothing_pending(alice, "bob", bob)  # bob's own "hello" did not come back
        self.assert_nothing_pending(bob, "alice", alice)

        bob.shutdown(socket.SHUT_WR)  # the classic client's way of leaving, done gracefully
        self.assertEqual(recv_until_closed(bob), b"")
        self.assertEqual(recv_exactly(alice, 34), b"6         server" b"8         bob left")

    def test_header_is_left_aligned_and_space_padded(self):
        alice = self.join("alice")
        bob = self.join("bob")
        self.expect_notice(alice, "bob joined")
        for size in (1, 9, 10, 99, 100, 12345, 65536):
            with self.subTest(size=size):
                payload = bytes(ord("a") + i % 26 for i in range(size))
                bob.sendall(frame(payload))
                header, name = recv_frame(alice)
                self.assertEqual((header, name), (b"3         ", b"bob"))
                header = recv_exactly(alice, 10)
                self.assertEqual(header, str(size).encode().ljust(10, b" "))
                self.assertRegex(header, rb"\A[1-9][0-9]* *\Z")
                self.assertEqual(recv_exactly(alice, size), payload)
        self.assertEqual(b"65536     ", str(65536).encode().ljust(10))  # what the largest looks like

    def test_lengths_count_utf8_bytes(self):
        alice = self.join("alice")
        bob = self.join("bøb")  # 4 bytes
        self.assertEqual(recv_exactly(alice, 37), b"6         server" b"11        b\xc3\xb8b joined")
        bob.sendall(b"10        h\xc3\xa9llo \xe2\x9c\x93")
        self.assertEqual(recv_exactly(alice, 34), b"4         b\xc3\xb8b" b"10        h\xc3\xa9llo \xe2\x9c\x93")

    @needs_proc_net_tcp
    def test_frames_split_and_batched_like_tcp_may_deliver_them(self):
        alice = self.join("alice")
        bob = self.raw_connect(self.port)
        # The name frame in three pieces, then two messages glued together in one send.
        for piece in (b"3    ", b"     b", b"ob"):
            bob.sendall(piece)
            wait_until_read(bob)  # the server has read this piece: the next comes in a read of its own
        bob.sendall(b"3         one" b"3         two")
        recv_frame(bob)
        recv_frame(bob)  # server + welcome
        self.assertEqual(recv_frame(alice), (b"6         ", b"server"))
        self.assertEqual(recv_frame(alice), (b"10        ", b"bob joined"))
        self.assertEqual(recv_exactly(alice, 52), b"3         bob3         one" b"3         bob3         two")
        # A message trickling in byte by byte arrives whole and once.
        for byte in b"5         slow!":
            bob.sendall(bytes([byte]))
        self.assertEqual(recv_exactly(alice, 28), b"3         bob5         slow!")

    def test_left_padded_header_is_accepted_and_relayed_canonically(self):
        alice = self.join("alice")
        bob = self.join("bob")
        self.expect_notice(alice, "bob joined")
        bob.sendall(b"   5      hello")
        self.assertEqual(recv_exactly(alice, 28), b"3         bob" b"5         hello")

    def test_empty_message_is_not_relayed(self):
        alice = self.join("alice")
        bob = self.join("bob")
        self.expect_notice(alice, "bob joined")
        bob.sendall(b"0         " b"4         real")
        self.assertEqual(recv_exactly(alice, 27), b"3         bob" b"4         real")
        self.assert_nothing_pending(alice, "bob", bob)

    def test_bad_header_gets_a_reason_and_a_close(self):
        alice = self.join("alice")
        bob = self.join("bob")
        self.expect_notice(alice, "bob joined")
        bob.sendall(b"hello worl")
        rest = recv_until_closed(bob)
        reason = b'protocol error: bad frame header "hello worl"'
        self.assertEqual(rest, b"6         server" + frame(reason))
        self.assertEqual(recv_frame(alice), (b"6         ", b"server"))
        self.assertEqual(recv_frame(alice)[1], b"bob left (" + reason + b")")

    def test_oversized_frame_is_refused_from_its_header(self):
        bob = self.join("bob")
        bob.sendall(b"65537     ")  # no payload follows: the header alone is enough to refuse
        rest = recv_until_closed(bob)
        self.assertEqual(rest, b"6         server" +
                         frame(b"protocol error: frame of 65537 bytes is over the limit of 65536"))

    def test_name_then_immediate_close(self):
        s = self.raw_connect(self.port)
        s.sendall(b"5         ghost")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_until_closed(s), b"6         server" b"36        welcome, ghost! 0 other users online")
        self.server.wait_for("ghost left\n")


@needs_proc_net_tcp
class WaitUntilRead(ChatTestCase):
    """The harness's wait_until_read, checked against a peer that reads when the test says so:
    it must time out while bytes are unread, and return once they have all been read."""

    def test_it_waits_for_the_peer_program_to_read(self):
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((HOST, 0))
        listener.listen(1)
        sender = self.raw_connect(listener.getsockname()[1])
        sender.sendall(b"x" * 1000)
        with self.assertRaises(NotReadError):  # still in the accept queue: nobody has read it
            wait_until_read(sender, timeout=0.3)
        peer, _ = listener.accept()
        self.addCleanup(peer.close)
        self.assertEqual(recv_exactly(peer, 600), b"x" * 600)
        with self.assertRaises(NotReadError):  # 400 bytes still unread
            wait_until_read(sender, timeout=0.3)
        self.assertEqual(recv_exactly(peer, 400), b"x" * 400)
        self.assertLess(wait_until_read(sender, timeout=1.0), 1.0)
        sender.sendall(b"y")
        with self.assertRaises(NotReadError):
            wait_until_read(sender, timeout=0.1)
        self.assertEqual(recv_exactly(peer, 1), b"y")
        wait_until_read(sender, timeout=1.0)


# ============================================================================================
# (b) the classic Python client through demo_server
# ============================================================================================

class ClassicClientThroughDemoServer(ChatTestCase):
    def test_classic_client_and_demo_client_chat(self):
        server, port = self.start_server()
        dave = self.client(port, "dave")
        carol = self.classic_client(port, "carol")
        dave.wait_for("server > carol joined\n")

        carol.send("hello from the classic client\n")
        dave.wait_for("\ncarol > hello from the classic client\n")
        dave.send("hi classic, ünïcødé ✓\n")
        self.poke_until(carol, "dave > hi classic, ünïcødé ✓\n")
        lines = carol.lines()
        self.assertEqual(lines, ["server > welcome, carol! 1 other user online",
                                 "dave > hi classic, ünïcødé ✓"])

        carol.close_stdin()
        self.assertEqual(carol.wait(), 0, carol.describe())
        dave.wait_for("server > carol left\n")
        dave.close_stdin()
        self.assertEqual(dave.wait(), 0, dave.describe())
        with open(self.path("chat.log"), encoding="utf-8") as f:
            log = f.read()
        self.assertIn("\tmessage\tcarol\thello from the classic client\n", log)
        self.assertIn("\tmessage\tdave\thi classic, ünïcødé ✓\n", log)

    def test_two_classic_clients_chat_then_the_server_stops(self):
        server, port = self.start_server()
        ann = self.classic_client(port, "ann")
        server.wait_for("ann joined from")
        ben = self.classic_client(port, "ben")
        server.wait_for("ben joined from")
        ann.send("hi ben\n")
        self.poke_until(ben, "ann > hi ben\n")
        ben.send("hi ann\n")
        self.poke_until(ann, "ben > hi ann\n")
        self.poke_until(ann, "server > ben joined\n", timeout=0)  # arrived before ben's message

        server.signal(signal.SIGINT)
        for c in (ann, ben):  # the server waits (up to 2 s) for them to read and hang up
            self.poke_until(c, "server > the server is stopping\nConnection closed by the server\n")
            self.assertEqual(c.wait(), 1, c.describe())
        self.assertEqual(server.wait(), 0, server.describe())
        self.assertEqual(server.lines()[-1], "stopped")
        self.assertNotIn(b"ann > hi ben", ann.out)
        self.assertNotIn(b"ben > hi ann", ben.out)

    def test_classic_client_gets_the_refusal(self):
        _, port = self.start_server()
        self.client(port, "dave")
        dup = self.classic_client(port, "Dave")
        self.poke_until(dup, 'server > name refused: the name "Dave" is taken\n'
                             "Connection closed by the server\n")
        self.assertEqual(dup.wait(), 1)


# ============================================================================================
# (c) demo_client through the classic Python server
# ============================================================================================

class DemoClientThroughClassicServer(ChatTestCase):
    def test_two_demo_clients_chat(self):
        server, port = self.start_classic_server()
        alice = self.client(port, "alice", joined=False)
        server.wait_for("username: alice\n")
        bob = self.client(port, "bob", joined=False)
        server.wait_for("username: bob\n")
        bob.send("hello alice\n")
        alice.wait_for("bob > hello alice\n")
        alice.send("hi bob ✓\n")
        bob.wait_for("alice > hi bob ✓\n")
        bob.close_stdin()
        self.assertEqual(bob.wait(), 0, bob.describe())  # delivered, closed, acknowledged
        server.wait_for("Closed connection from: bob\n")
        alice.close_stdin()
        self.assertEqual(alice.wait(), 0, alice.describe())
        self.assertEqual(alice.lines(), ["bob > hello alice"])  # no welcome, no notices: classic
        self.assertEqual(bob.lines(), ["alice > hi bob ✓"])
        self.assertEqual(alice.err + bob.err, b"")

    def test_piped_demo_client_through_classic_server(self):
        server, port = self.start_classic_server()
        alice = self.client(port, "alice", joined=False)
        server.wait_for("username: alice\n")
        bot = self.client(port, "bot", joined=False)
        bot.send("hi\nbye\n")
        bot.close_stdin()
        self.assertEqual(bot.wait(), 0, bot.describe())
        alice.wait_for("bot > hi\nbot > bye\n")

    def test_demo_client_and_classic_client_chat(self):
        server, port = self.start_classic_server()
        alice = self.client(port, "alice", joined=False)
        server.wait_for("username: alice\n")
        carol = self.classic_client(port, "carol")
        server.wait_for("username: carol\n")
        carol.send("from classic\n")
        alice.wait_for("carol > from classic\n")
        alice.send("from chatsock\n")
        self.poke_until(carol, "alice > from chatsock\n")

    def test_classic_server_relays_header_bytes_verbatim(self):
        # What makes the server "classic": the frames it relays are the sender's own bytes,
        # header included. demo_client must read a left-padded header as well.
        server, port = self.start_classic_server()
        alice = self.raw_connect(port, "alice")
        server.wait_for("username: alice\n")
        demo = self.client(port, "demo", joined=False)
        server.wait_for("username: demo\n")
        mallory = self.raw_connect(port)
        mallory.sendall(b"  7       mallory")
        server.wait_for("username: mallory\n")
        mallory.sendall(b" 5        hello")
        self.assertEqual(recv_exactly(alice, 32), b"  7       mallory" b" 5        hello")
        demo.wait_for("mallory > hello\n")

    def test_demo_client_escapes_what_a_classic_server_passes_through(self):
        # The classic server checks nothing; the client alone keeps the terminal safe.
        server, port = self.start_classic_server()
        demo = self.client(port, "demo", joined=False)
        server.wait_for("username: demo\n")
        evil = self.raw_connect(port, "\x1b[31mevil\r")
        server.wait_for(b"username: \x1b[31mevil\r\n")
        evil.sendall(frame(b"\x1b[2Jclear\rx\x00y \xff\xfe bad \xc2\x9b done"))
        demo.wait_for(" done\n")
        self.assertEqual(demo.lines(), ["\\x1b[31mevil\\r > \\x1b[2Jclear\\rx\\x00y \\xff\\xfe bad \\u009b done"])
        for raw in (b"\x1b", b"\r", b"\x00", b"\xff", b"\xc2\x9b"):
            self.assertNotIn(raw, demo.out)

    def test_demo_client_when_the_classic_server_dies(self):
        server, port = self.start_classic_server()
        demo = self.client(port, "demo", joined=False)
        server.wait_for("username: demo\n")
        server.p.kill()
        server.wait()
        self.assertNotEqual(demo.wait(), 0, demo.describe())
        self.assertRegex(demo.err.decode(), r"\AConnection closed by the server( \(.*\))?\n\Z")


if __name__ == "__main__":
    main(__name__)
