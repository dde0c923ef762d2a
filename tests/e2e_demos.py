#!/usr/bin/env python3
"""End-to-end tests of the demo programs: demo_server and demo_client as real processes,
talking over loopback, driven through pipes. Ends with "RESULT passed=N failed=M".

    python3 tests/e2e_demos.py            (builds the demos first if needed)
"""
import os
import re
import shlex
import signal
import socket
import sys
import time
from datetime import datetime, timedelta, timezone

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DEMO_CLIENT, DEMO_SERVER, DEVNULL, HOST, SERVER_ON_WINDOWS, TIMEOUT,  # noqa: E402
                     ChatTestCase, build_demos, frame, free_port, main, recv_until_closed,
                     skip_if_windows_server)
from harness import SilentServer  # noqa: E402

LOG_LINE = re.compile(r"\A(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t(join|message|leave|refused|error)\t"
                      r"([^\t\r\n]*)\t([^\t\r\n]*)\Z")


def setUpModule():
    build_demos()


class DemoTestCase(ChatTestCase):
    def read_log(self, name="chat.log"):
        """The conversation log as (event, name, text) tuples, checking every line's format."""
        with open(self.path(name), "rb") as f:
            data = f.read()
        self.assertTrue(data.endswith(b"\n"), f"log does not end with a newline: {data!r}")
        text = data.decode("utf-8")  # strict: the log is UTF-8
        events = []
        now = datetime.now(timezone.utc)
        for line in text[:-1].split("\n"):
            m = LOG_LINE.match(line)
            self.assertIsNotNone(m, f"malformed log line {line!r}")
            stamp = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
            self.assertLess(abs(now - stamp), timedelta(minutes=2), f"timestamp is not UTC now: {line!r}")
            self.assertNotRegex(line, r"[\x00-\x08\x0a-\x1f\x7f-\x9f]", f"raw control character in {line!r}")
            events.append(m.group(2, 3, 4))
        return events

    def wait_log(self, last_event, name="chat.log", timeout=TIMEOUT):
        """The log's events once `last_event` is among them. For events the test learns of
        from the server's stdout, which the server prints just before it writes the log."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                events = self.read_log(name)
                if last_event in events:
                    return events
                self.fail(f"{last_event} not in the log: {events}")
            except (AssertionError, OSError):  # not there yet, or caught in mid-write
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def assert_exit(self, proc, ok, timeout=TIMEOUT):
        rc = proc.wait(timeout)
        if ok:
            self.assertEqual(rc, 0, proc.describe())
        else:
            self.assertNotEqual(rc, 0, proc.describe())
        return rc


class Conversation(DemoTestCase):
    def test_two_clients_chat_and_log(self):
        server, port = self.start_server()
        alice = self.client(port, "alice")
        alice.wait_for("server > welcome, alice! 0 other users online\n")
        bob = self.client(port, "bob")
        bob.wait_for("server > welcome, bob! 1 other user online\n")
        alice.wait_for("server > bob joined\n")

        bob.send("hello alice\n")
        alice.wait_for("\nbob > hello alice\n")
        alice.send("hi bob, ünïcødé ✓ 🎉\n")
        bob.wait_for("\nalice > hi bob, ünïcødé ✓ 🎉\n")

        bob.close_stdin()
        self.assert_exit(bob, ok=True)
        alice.wait_for("server > bob left\n")
        alice.close_stdin()
        self.assert_exit(alice, ok=True)

        self.assertNotIn(b"bob > hello alice", bob.out, "a message must not come back to its sender")
        self.assertNotIn(b"alice > hi bob", alice.out, "a message must not come back to its sender")
        self.assertEqual(alice.err, b"")
        self.assertEqual(bob.err, b"")
        server.wait_for("alice left\n")
        lines = [line for line in server.lines() if not line.startswith("the descriptor limit")]
        self.assertRegex(lines[0], rf"\Alistening on 127\.0\.0\.1:{port} \((epoll|poll|WSAPoll)\)\Z")
        self.assertRegex(lines[1], r"\Aalice joined from 127\.0\.0\.1:\d+\Z")
        self.assertRegex(lines[2], r"\Abob joined from 127\.0\.0\.1:\d+\Z")
        self.assertEqual(lines[3:5], ["bob left", "alice left"])

        events = self.wait_log(("leave", "alice", "left"))
        self.assertEqual([e for e in events if e[0] != "join"], [
            ("message", "bob", "hello alice"),
            ("message", "alice", "hi bob, ünïcødé ✓ 🎉"),
            ("leave", "bob", "left"),
            ("leave", "alice", "left")])
        joins = [e for e in events if e[0] == "join"]
        self.assertEqual([e[1] for e in joins], ["alice", "bob"])
        for _, _, peer in joins:
            self.assertRegex(peer, r"\A127\.0\.0\.1:\d+\Z")

    def test_message_reaches_every_other_client(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        carol = self.client(port, "carol")
        bob = self.client(port, "bob")
        bob.send("to everyone\n")
        alice.wait_for("\nbob > to everyone\n")
        carol.wait_for("\nbob > to everyone\n")
        bob.close_stdin()
        self.assert_exit(bob, ok=True)  # it reads until the server closes: nothing came back
        self.assertNotIn(b"> to everyone", bob.out)
        for c in (alice, carol):
            c.wait_for("server > bob left\n")
            c.close_stdin()
            self.assert_exit(c, ok=True)

    def test_message_shows_up_without_pressing_enter(self):
        _, port = self.start_server()
        idle = self.client(port, "idle")  # stdin open and silent from here on
        talker = self.client(port, "talker")
        talker.send("are you there?\n")
        idle.wait_for("\ntalker > are you there?\n")
        talker.send("still there?\n")
        idle.wait_for("\ntalker > still there?\n")
        self.assertIsNone(idle.p.poll(), "the idle client must still be running")

    def test_piped_client_delivers_everything_then_exits_0(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bot = self.spawn(["sh", "-c", f"printf 'hi\\nbye\\n' | {shlex.join(DEMO_CLIENT)} {HOST} {port} bot"],
                         stdin=DEVNULL, label="printf | demo_client")
        self.assert_exit(bot, ok=True)
        self.assertEqual(bot.err, b"")
        self.assertIn(b"server > welcome, bot!", bot.out)
        alice.wait_for("server > bot left\n")
        lines = alice.lines()
        self.assertEqual(lines[lines.index("server > bot joined"):],
                         ["server > bot joined", "bot > hi", "bot > bye", "server > bot left"])
        self.assertEqual([e for e in self.read_log() if e[1] == "bot" and e[0] != "join"],
                         [("message", "bot", "hi"), ("message", "bot", "bye"), ("leave", "bot", "left")])

    def test_last_line_without_newline_is_sent(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bot = self.client(port, "bot", joined=False)
        bot.send("first\r\nlast without newline")
        bot.close_stdin()
        self.assert_exit(bot, ok=True)
        alice.wait_for("server > bot left\n")
        self.assertIn("bot > first", alice.lines(), "a CRLF line ending is not part of the message")
        self.assertIn("bot > last without newline", alice.lines())

    def test_username_prompt(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        carol = self.client(port, None)  # no name on the command line
        carol.wait_for("Username: ")
        self.assertEqual(carol.out, b"Username: ", "the prompt comes first, before any connection")
        carol.send("carol\n")
        carol.wait_for("Username: server > welcome, carol! 1 other user online\n")
        alice.wait_for("server > carol joined\n")
        carol.send("hello from the prompt\n")
        alice.wait_for("\ncarol > hello from the prompt\n")
        carol.close_stdin()
        self.assert_exit(carol, ok=True)

    def test_username_prompt_from_a_pipe(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        dave = self.client(port, None, joined=False)
        dave.send("dave\nfirst line\nsecond line\n")
        dave.close_stdin()
        self.assert_exit(dave, ok=True)
        alice.wait_for("server > dave left\n")
        self.assertIn("dave > first line", alice.lines())
        self.assertIn("dave > second line", alice.lines())
        self.assertNotIn("dave > dave", alice.lines(), "the name is not a message")

    def test_empty_lines_are_not_sent(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send("\n\none\n\n\ntwo\n")
        alice.wait_for("\nbob > two\n")
        lines = alice.lines()
        self.assertEqual(lines[lines.index("bob > one"):], ["bob > one", "bob > two"])

    def test_large_message_arrives_whole(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        big = "".join(chr(ord("a") + i % 26) for i in range(60000))
        bob.send(big + "\n")
        alice.wait_for(f"\nbob > {big}\n")
        self.assertIn(("message", "bob", big), self.read_log())

    def test_message_over_the_limit_is_not_sent(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send("x" * 100000 + "\nafter the long one\n")
        alice.wait_for("\nbob > after the long one\n")
        bob.close_stdin()
        self.assert_exit(bob, ok=True)
        self.assertEqual(bob.err, b"demo_client: message not sent: it is 100000 bytes, "
                                  b"over the limit of 65536 bytes\n")
        self.assertNotIn(b"xxxxxxxxxx", alice.out)
        self.assertEqual([e[2] for e in self.read_log() if e[0] == "message"], ["after the long one"])

    def test_invalid_utf8_is_refused_by_the_server(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send(b"bad \xff\xfe bytes\nfine\n")
        bob.wait_for("server > message not delivered: it is not valid UTF-8\n")
        alice.wait_for("\nbob > fine\n")
        self.assertNotIn(b"bad", alice.out)
        self.assertNotIn("bad", [e[2] for e in self.read_log()])

    def test_default_log_file_is_message_log(self):
        server, port = self.start_server(log=None)
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send("logged by default\n")
        alice.wait_for("\nbob > logged by default\n")
        self.assertIn(("message", "bob", "logged by default"), self.read_log("message_log"))


class Names(DemoTestCase):
    def test_duplicate_name_is_refused(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        for name in ("alice", "ALICE"):
            with self.subTest(name=name):
                dup = self.client(port, name, joined=False)  # stdin open: the refusal ends it
                dup.wait_for(f'server > name refused: the name "{name}" is taken\n')
                self.assert_exit(dup, ok=False)
                self.assertEqual(dup.err, b"")  # the refusal says it all: no "connection closed"
                self.assertNotIn(b"welcome", dup.out)
        alice.send("still here\n")
        bob = self.client(port, "bob")
        alice.send("hello bob\n")
        bob.wait_for("\nalice > hello bob\n")
        self.assertNotIn(b"ALICE joined", alice.out)
        refused = [e for e in self.read_log() if e[0] == "refused"]
        self.assertEqual(len(refused), 2, refused)
        self.assertRegex(refused[0][1], r"\A127\.0\.0\.1:\d+\Z")
        self.assertEqual(refused[0][2], 'the name "alice" is taken')

    def test_refused_name_with_piped_input_exits_nonzero(self):
        # The input ends at once, so the client is already closing when the refusal arrives:
        # it must still not report success, and its message must not reach anyone.
        _, port = self.start_server()
        alice = self.client(port, "alice")
        dup = self.spawn(["sh", "-c", f"printf 'hi\\n' | {shlex.join(DEMO_CLIENT)} {HOST} {port} alice"],
                         stdin=DEVNULL, label="printf | demo_client")
        self.assert_exit(dup, ok=False)
        self.assertEqual(dup.out, b'server > name refused: the name "alice" is taken\n')
        bob = self.client(port, "bob")
        bob.send("sync\n")
        alice.wait_for("\nbob > sync\n")
        self.assertNotIn(b"> hi", alice.out)

    def test_bad_names_are_refused(self):
        _, port = self.start_server()
        cases = {
            "server": 'the name "server" is reserved',
            "Server": 'the name "Server" is reserved',
            " padded": "the name starts or ends with a space",
            "x" * 33: "the name is longer than 32 bytes",
            "\x1b[31mred": "the name contains control characters",
        }
        for name, reason in cases.items():
            with self.subTest(name=name):
                c = self.client(port, name, stdin=DEVNULL, joined=False)
                c.wait_for(f"server > name refused: {reason}\n")
                self.assert_exit(c, ok=False)
                self.assertNotIn(b"\x1b", c.out)

    def test_empty_name_from_the_prompt_is_asked_again(self):
        _, port = self.start_server()
        c = self.client(port, None, joined=False)
        c.wait_for("Username: ")
        c.send("\n")
        c.wait_for("Username: Username: ")
        c.send("bob\n")
        c.wait_for("server > welcome, bob! 0 other users online\n")
        c.close_stdin()
        self.assert_exit(c, ok=True)
        self.assertNotIn(("refused",), [e[:1] for e in self.read_log()])

    def test_the_name_is_asked_only_once_a_server_is_there(self):
        port = free_port()
        c = self.client(port, None, joined=False)
        self.assert_exit(c, ok=False)
        self.assertIn(f"cannot connect to 127.0.0.1:{port}".encode(), c.err)
        self.assertNotIn(b"Username", c.out)

    def test_a_name_over_the_frame_limit_says_the_limit(self):
        _, port = self.start_server()
        c = self.client(port, None, joined=False)  # typed: a Windows command line holds 32 K
        c.send("n" * 100000 + "\n")
        c.wait_for("demo_client: the name is 100000 bytes, over the limit of 65536 bytes\n", stream="err")
        c.wait_for("Username: Username: ")  # asked again
        c.close_stdin()
        self.assert_exit(c, ok=False)


class TerminalInjection(DemoTestCase):
    def test_control_characters_arrive_escaped(self):
        _, port = self.start_server()
        alice = self.client(port, "alice")
        mallory = self.client(port, "mallory")
        evil = "\x1b[2Jcleared\rover\x00nul\ttab\u009b31mcsi\x07bell\\backslash"
        mallory.send(evil.encode("utf-8") + b"\n")
        alice.wait_for("\nmallory > ")
        mallory.send("done\n")
        alice.wait_for("\nmallory > done\n")

        out = alice.out
        for raw in (b"\x1b", b"\r", b"\x00", b"\t", b"\xc2\x9b", b"\x07"):
            self.assertNotIn(raw, out, f"raw {raw!r} reached the terminal")
        self.assertIn("mallory > \\x1b[2Jcleared\\rover\\x00nul\\ttab\\u009b31mcsi\\x07bell\\backslash",
                      alice.lines())

        msgs = [e for e in self.read_log() if e[0] == "message"]
        self.assertEqual(msgs[0], ("message", "mallory",
                                   "\\x1b[2Jcleared\\rover\\x00nul\\ttab\\u009b31mcsi\\x07bell\\\\backslash"))
        self.assertEqual(msgs[1], ("message", "mallory", "done"), "the evil message took exactly one line")

    def test_newline_cannot_forge_a_log_line(self):
        # A line of input never holds "\n", but a raw client can send one inside a frame.
        _, port = self.start_server()
        alice = self.client(port, "alice")
        s = self.raw_connect(port, "forger")
        s.sendall(frame("x\n2026-01-01T00:00:00.000Z\tmessage\talice\tforged"))
        alice.wait_for("forger > x\\n2026-01-01T00:00:00.000Z\\tmessage\\talice\\tforged\n")
        s.shutdown(socket.SHUT_WR)  # a graceful leave: the server closes once all is sent
        recv_until_closed(s)
        alice.wait_for("server > forger left\n")
        events = self.read_log()
        self.assertNotIn(("message", "alice", "forged"), events)
        self.assertIn(("message", "forger", "x\\n2026-01-01T00:00:00.000Z\\tmessage\\talice\\tforged"), events)


class Stopping(DemoTestCase):
    def check_stop(self, sig):
        server, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send("before the stop\n")
        alice.wait_for("\nbob > before the stop\n")
        t0 = time.monotonic()
        server.signal(sig)
        self.assertEqual(server.wait(), 0, server.describe())
        self.assertLess(time.monotonic() - t0, 3.0, "stop drains for at most 2 s")
        server.wait_for("stopped\n")
        for c in (alice, bob):
            c.wait_for("server > the server is stopping\n")
            self.assert_exit(c, ok=False)
            self.assertEqual(c.err, b"Connection closed by the server\n")
        events = self.read_log()
        self.assertIn(("message", "bob", "before the stop"), events)
        self.assertIn(("leave", "alice", "server stopping"), events)
        self.assertIn(("leave", "bob", "server stopping"), events)

    def test_sigint_stops_cleanly(self):
        self.check_stop(signal.SIGINT)  # under wine: a CTRL_C_EVENT for SetConsoleCtrlHandler

    NO_SIGTERM = ("Windows has no SIGTERM; wine's default action for it ends the process "
                  "without running console control handlers (Ctrl+C is tested through SIGINT)")

    @skip_if_windows_server(NO_SIGTERM)
    def test_sigterm_stops_cleanly(self):
        self.check_stop(signal.SIGTERM)

    @skip_if_windows_server(NO_SIGTERM)
    def test_sigterm_with_nobody_connected(self):
        server, _ = self.start_server()
        server.signal(signal.SIGTERM)
        self.assertEqual(server.wait(), 0, server.describe())

    def test_log_survives_kill_9(self):
        server, port = self.start_server()
        alice = self.client(port, "alice")
        bob = self.client(port, "bob")
        bob.send("remember me\n")
        alice.wait_for("\nbob > remember me\n")  # delivered, so it must already be in the log
        server.p.kill()
        self.assertEqual(server.wait(), -signal.SIGKILL)
        self.assertIn(("message", "bob", "remember me"), self.read_log())
        for c in (alice, bob):
            self.assert_exit(c, ok=False)
            self.assertIn(b"Connection closed by the server", c.err)


class Errors(DemoTestCase):
    def test_port_in_use(self):
        first, port = self.start_server("first.log")
        second = self.spawn([*DEMO_SERVER, HOST, port, "second.log"], stdin=DEVNULL)
        rc = second.wait()
        self.assertNotEqual(rc, 0)
        err = second.err.decode()
        self.assertEqual(len(err.splitlines()), 1, f"one line expected: {err!r}")
        self.assertTrue(err.endswith("\n"))
        self.assertIn(f"127.0.0.1:{port}", err)
        if SERVER_ON_WINDOWS:  # Windows: "Only one usage of each socket address ... is normally
            # permitted"; wine 8 has no text for WSAEADDRINUSE, so chatsock says "error 10048"
            self.assertRegex(err.lower(), r"in use|only one usage of each socket address|error 10048")
        else:
            self.assertIn("in use", err.lower())
        self.assertNotIn(b"listening", second.out)
        alice = self.client(port, "alice")  # the first server is unharmed
        self.assertIsNone(first.p.poll())
        alice.close_stdin()
        self.assert_exit(alice, ok=True)

    def test_nothing_listening(self):
        port = free_port()
        t0 = time.monotonic()
        c = self.spawn([*DEMO_CLIENT, HOST, port, "alice"], stdin=DEVNULL)
        self.assert_exit(c, ok=False, timeout=6)
        self.assertLess(time.monotonic() - t0, 5.0)
        err = c.err.decode()
        self.assertIn(f"cannot connect to 127.0.0.1:{port}", err)
        self.assertIn("refused", err.lower())
        self.assertEqual(len(err.splitlines()), 1, err)

    def test_bad_port_arguments(self):
        for program in (DEMO_SERVER, DEMO_CLIENT):
            for port in ("notaport", "65536", "-1", "", "12345678", "80x"):
                with self.subTest(program=os.path.basename(program[-1]), port=port):
                    p = self.spawn([*program, HOST, port, "x.log" if program == DEMO_SERVER else "bob"],
                                   stdin=DEVNULL)
                    self.assertNotEqual(p.wait(), 0)
                    err = p.err.decode()
                    self.assertIn(f"'{port}' is not a port number", err)
                    self.assertEqual(len(err.splitlines()), 1, err)
                    self.assertNotIn(b"listening", p.out)
        self.assertFalse(os.path.exists(self.path("x.log")), "no log for a server that never started")

    def test_log_file_that_cannot_be_opened(self):
        p = self.spawn([*DEMO_SERVER, HOST, 0, self.path("no/such/dir/log")], stdin=DEVNULL)
        self.assertNotEqual(p.wait(), 0)
        err = p.err.decode()
        self.assertIn("no/such/dir/log", err)
        self.assertEqual(len(err.splitlines()), 1, err)

    def test_a_lone_port_is_not_taken_for_the_host(self):
        p = self.spawn([*DEMO_SERVER, "1234"], stdin=DEVNULL)
        self.assertEqual(p.wait(), 2, p.describe())
        self.assertEqual(p.err.decode(), "demo_server: '1234' looks like a port, but the first argument is the host: "
                                         "./demo_server 127.0.0.1 1234\n")
        self.assertEqual(os.listdir(self.dir), [], "no log file (message_log) for a server that never started")

    def test_a_failed_listen_leaves_no_log_file(self):
        _, port = self.start_server("first.log")
        second = self.spawn([*DEMO_SERVER, HOST, port, "newlog"], stdin=DEVNULL)
        self.assertNotEqual(second.wait(), 0, second.describe())
        self.assertFalse(os.path.exists(self.path("newlog")), "no log file for a server that never started")

    def test_a_server_that_never_closes_is_named_as_the_reason(self):
        # The input ends at once, so the client closes and waits for the server to close too;
        # this one accepts and reads, but never answers and never closes.
        silent = SilentServer()
        self.addCleanup(silent.close)
        c = self.spawn(["sh", "-c", f"printf 'x\\n' | {shlex.join(DEMO_CLIENT)} {HOST} {silent.port} t1"],
                       stdin=DEVNULL, label="printf | demo_client")
        rc = c.wait(timeout=3 * TIMEOUT)
        self.assertTrue(silent.accepted, c.describe())
        waited = time.monotonic() - silent.accepted[0]
        self.assertEqual(rc, 1, c.describe())
        self.assertRegex(c.err.decode(), r"\Ademo_client: the server did not close within 5000 ms; "
                                         r"\d+ bytes were still unsent\n\Z")
        self.assertGreater(waited, 4.5, "it gives the server 5 s to close")
        # ... and then gives up (the bound leaves room for a program under wine to exit).
        self.assertLess(waited, 5.0 + TIMEOUT, "and no more")


if __name__ == "__main__":
    main(__name__)
