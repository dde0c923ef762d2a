#!/usr/bin/env python3
"""The server's three doors on one port, end to end: framed clients, line clients (nc, telnet)
and browsers (HTTP, WebSocket), in one room, and attacks on the two new doors. No browser: the
WebSocket client here is written with the standard library (handshake, masked frames, JSON).
Ends with "RESULT passed=N failed=M skipped=K".

    python3 tests/e2e_web.py                      (builds the demos and tests/bin/attack_server)
    CHATSOCK_SERVER_CMD="wine $PWD/demo_server.exe" CHATSOCK_CLIENT_CMD="wine $PWD/demo_client.exe" \\
        python3 tests/e2e_web.py                  (the Windows build; see "Under wine" below)

  MixedRoom        one room of five kinds of client, every one a real process or socket:
                   demo_client, the classic Python client (tests/classic), `nc` (a Python line
                   client if nc is missing), a telnet-style client sending IAC negotiation and
                   "\\r\\n", and a WebSocket client. Joins, numbered messages from each, leaves:
                   each seen exactly once, in order per sender, never echoed; the log has each
                   message once.
  Http             GET / and its errors (404, 405, 426, 400), each small, sized, closed; not logged.
  Lines            a line client's name, empty lines, "\\r\\n", refusals, leaving; `printf | nc -N`.
  WebSocketProtocol the handshake byte by byte, and with its first frames in the same packet; ping
                   and pong, fragments (a control frame amid them), a close answered with its code
                   (or 1002), refused names (1008), every protocol error with its close code, JSON
                   escaping, the stop (1001).
  WebAttacks       a request that never ends (431 past 8192 bytes, 408 at the handshake timeout),
                   a frame announcing 2^63 bytes (1009 at once, RSS flat), an unmasked frame (1002),
                   an endless line (refused after 4 KiB), a line of IAC IAC (the same limit), a
                   million one-byte lines, IAC floods (joined, and nameless), the web side off,
                   --max-line; the bystanders in the room (framed, WebSocket, line) chat on.

Under wine (CHATSOCK_SERVER_CMD naming a .exe): the server is demo_server.exe with its default
limits; the tests that need tests/bin/attack_server's flags (short timeouts, --no-web,
--max-line) are skipped, saying so. Everything else runs unchanged, memory checks included
(`wine demo_server.exe` becomes the Windows process: its /proc/PID/status is the server's).
"""
import base64
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ATTACK_SERVER, RssSampler, rss_bytes, DEMO_CLIENT, DEMO_SERVER, DEVNULL, HAVE_PROC_NET_TCP, HOST,  # noqa: E402
                     LISTENING_DEMO, SERVER_ON_WINDOWS, TIMEOUT, NotReadError, build_attack_server,
                     build_demos, frame, main, recv_until_closed, wait_until_read)
from e2e_demos import DemoTestCase  # noqa: E402  (read_log, wait_log: the log's format checked)

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IAC, DONT, DO, WONT, WILL, SB, GA, EL, EC, AYT, AO, IP, BRK, DM, NOP, SE = (
    255, 254, 253, 252, 251, 250, 249, 248, 247, 246, 245, 244, 243, 242, 241, 240)
ECHO, SGA, TTYPE, NAWS, LINEMODE = 1, 3, 24, 31, 34
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
MiB = 1 << 20

SANITIZED = bool(os.environ.get("CHATSOCK_SANITIZED"))  # RSS says nothing under AddressSanitizer
# The server's RSS from /proc/PID/status (under wine too: `wine x.exe` becomes the Windows process).
CAN_READ_RSS = sys.platform.startswith("linux") and not SANITIZED
# Tests that need tests/bin/attack_server's flags: skipped for the Windows demo_server.
needs_flags = unittest.skipIf(SERVER_ON_WINDOWS, "needs tests/bin/attack_server's flags (a Linux build); "
                                                 "the Windows demo_server has its default limits only")

# nc: the real one when installed (netcat-openbsd: `apt-get install netcat-openbsd`); -N shuts
# its sending side down at the end of its input, so closing its stdin is a graceful leave.
NC = shutil.which("nc")


def _nc_has_shutdown_flag():
    if not NC:
        return False
    try:
        run = subprocess.run([NC, "-h"], stdin=DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"-N" in run.stdout


NC_SHUTDOWN = _nc_has_shutdown_flag()


def setUpModule():
    build_demos()
    if not SERVER_ON_WINDOWS:
        build_attack_server()
    if not NC:
        print("NOTE: nc is not installed: a Python socket line client stands in for it "
              "(apt-get install netcat-openbsd for the real one)", flush=True)


# ---- WebSocket frames (RFC 6455) ----------------------------------------------------------------
def ws_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One client frame; `length` announces another length than the payload's."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    if payload:
        stream = (key * (len(payload) // 4 + 1))[:len(payload)]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(payload), "big")
    return head + key + payload


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def read_http_head(sock, timeout=TIMEOUT):
    """(status line, {lowercase header: value}, bytes after the blank line) of a response."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no whole response head within {timeout}s: {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError(f"closed before the response head ended: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, rest


def padded_request(size):
    """A GET / of exactly `size` bytes, its blank line included."""
    head, tail = b"GET / HTTP/1.1\r\nX-Pad: ", b"\r\n\r\n"
    return head + b"p" * (size - len(head) - len(tail)) + tail


def parse_http_response(data):
    """(status line, headers, body) of a whole response (the connection closed after it)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no blank line in the response: {data!r}"
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, body


# ---- readers: a socket read on a thread of its own, every byte kept ----------------------------
class Collector(threading.Thread):
    """Reads a socket until the peer closes it, keeping every byte (recv of 1 MiB at a time:
    fast enough to keep up with the server in the flood tests). Subclasses parse on demand."""

    def __init__(self, sock, initial=b""):
        super().__init__(daemon=True)
        self.sock = sock
        self.data = bytearray(initial)
        self.closed = False
        self.cond = threading.Condition()
        sock.settimeout(None)
        self.start()

    def run(self):
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                chunk = b""
            with self.cond:
                if chunk:
                    self.data += chunk
                else:
                    self.closed = True
                self.cond.notify_all()
            if not chunk:
                return

    def stop(self):
        """Wakes and ends the thread (shutdown, not only close, wakes a blocked recv)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(TIMEOUT)
        self.sock.close()

    def wait(self, predicate, timeout=TIMEOUT, what="condition"):
        """Waits until predicate() (called with the lock held) is true; fails at the deadline."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what}: not within {timeout}s; {self.describe()}")
                self.cond.wait(min(left, 0.5))

    def wait_closed(self, timeout=TIMEOUT):
        self.wait(lambda: self.closed, timeout, "the server's close")

    def scanner(self, pattern, start=0):
        """A predicate for wait(): how many times `pattern` (a whole message, which cannot
        overlap itself) has arrived after byte `start`, counted on, not again from the start,
        each time it is called: wait(lambda: scan() >= n) stays cheap on megabytes."""
        state = {"at": start, "found": 0}

        def scan():
            end = max(state["at"], len(self.data) - len(pattern) + 1)  # no match starts past it unseen
            state["found"] += self.data.count(pattern, state["at"], end + len(pattern) - 1)
            state["at"] = end
            return state["found"]
        return scan

    def describe(self):
        with self.cond:
            data = bytes(self.data)
        tail = data[-600:]
        return f"closed={self.closed}, {len(data)} bytes received, the last {len(tail)}: {tail!r}"


class LineReader(Collector):
    """A line client's view: "\\r\\n"-ended lines, as (sender, text); a notice is ("server", text)."""

    def __init__(self, sock, initial=b""):
        self._pos, self._events = 0, []
        super().__init__(sock, initial)

    def _parse(self):
        while True:
            end = self.data.find(b"\r\n", self._pos)
            if end < 0:
                return
            line = bytes(self.data[self._pos:end])
            self._pos = end + 2
            self._events.append(line_event(line))

    def chat(self):
        with self.cond:
            self._parse()
            return list(self._events)

    def wait_for(self, event, timeout=TIMEOUT):
        def seen():
            self._parse()
            return event in self._events
        self.wait(seen, timeout, f"{event!r}")


def line_event(line):
    """("server", text) for "* text", (name, text) for "name: text"; ("?", line) otherwise."""
    text = line.decode("utf-8")  # strict: the server writes UTF-8
    if text.startswith("* "):
        return "server", text[2:]
    name, sep, rest = text.partition(": ")
    return (name, rest) if sep else ("?", text)


class FrameReader(Collector):
    """A framed client's view: (sender, text) from each pair of frames."""

    def __init__(self, sock, initial=b""):
        self._pos, self._events = 0, []
        super().__init__(sock, initial)

    def _parse(self):
        while True:
            pair = []
            at = self._pos
            for _ in range(2):
                if len(self.data) - at < 10:
                    return
                n = int(self.data[at:at + 10])
                if len(self.data) - at - 10 < n:
                    return
                pair.append(bytes(self.data[at + 10:at + 10 + n]).decode("utf-8"))
                at += 10 + n
            self._pos = at
            self._events.append(tuple(pair))

    def chat(self):
        with self.cond:
            self._parse()
            return list(self._events)

    def wait_for(self, event, timeout=TIMEOUT):
        def seen():
            self._parse()
            return event in self._events
        self.wait(seen, timeout, f"{event!r}")


class WsReader(Collector):
    """The server's WebSocket frames: ("text", dict) for each JSON message, ("close", code,
    reason), ("ping", payload), ("pong", payload); ("bad", why) for a frame a server must not
    send (masked, reserved bits, unknown opcode, text that is not one JSON object)."""

    def __init__(self, sock, initial=b""):
        self._pos, self._frames = 0, []
        super().__init__(sock, initial)

    def _parse(self):
        data = self.data
        while True:
            at = self._pos
            if len(data) - at < 2:
                return
            b0, b1 = data[at], data[at + 1]
            n, at = b1 & 0x7F, at + 2
            if n == 126:
                if len(data) - at < 2:
                    return
                n, at = struct.unpack("!H", data[at:at + 2])[0], at + 2
            elif n == 127:
                if len(data) - at < 8:
                    return
                n, at = struct.unpack("!Q", data[at:at + 8])[0], at + 8
            if b1 & 0x80:
                self._frames.append(("bad", f"a masked server frame: {bytes(data[self._pos:at + 8])!r}"))
                at += 4
            if len(data) - at < n:
                return
            payload = bytes(data[at:at + n])
            self._pos = at + n
            op = b0 & 0x0F
            if b0 & 0x70 or not b0 & 0x80:
                self._frames.append(("bad", f"reserved bits or a fragment from the server: {b0:#x}"))
            if op == TEXT:
                try:
                    obj = json.loads(payload.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as e:
                    self._frames.append(("bad", f"not JSON ({e}): {payload!r}"))
                    continue
                if not isinstance(obj, dict) or set(obj) - {"from", "text", "notice"} or \
                        not isinstance(obj.get("from"), str) or not isinstance(obj.get("text"), str) or \
                        obj.get("notice", True) is not True or (obj.get("notice") and obj["from"] != "server"):
                    self._frames.append(("bad", f"not a chat event: {payload!r}"))
                    continue
                self._frames.append(("text", obj))
            elif op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self._frames.append(("close", code, payload[2:].decode("utf-8", "replace")))
            elif op in (PING, PONG):
                self._frames.append(("ping" if op == PING else "pong", payload))
            else:
                self._frames.append(("bad", f"opcode {op} from the server: {payload[:100]!r}"))

    def frames(self):
        with self.cond:
            self._parse()
            return list(self._frames)

    def chat(self):
        """(sender, text) of every JSON message; a notice is ("server", text)."""
        return [(f[1]["from"], f[1]["text"]) for f in self.frames() if f[0] == "text"]

    def wait_frame(self, predicate, timeout=TIMEOUT, what="frame"):
        def seen():
            self._parse()
            return any(predicate(f) for f in self._frames)
        self.wait(seen, timeout, what)

    def wait_for(self, event, timeout=TIMEOUT):
        self.wait_frame(lambda f: f[0] == "text" and (f[1]["from"], f[1]["text"]) == event, timeout, f"{event!r}")

    def wait_close(self, timeout=TIMEOUT):
        """The close frame's (code, reason), once it has come."""
        self.wait_frame(lambda f: f[0] == "close", timeout, "a close frame")
        return next(f[1:] for f in self.frames() if f[0] == "close")


# ---- the five kinds of client, each seen as (sender, text) events --------------------------------
def arrow_events(lines):
    """demo_client's and the classic client's output: "name > text" lines."""
    events = []
    for line in lines:
        name, sep, text = line.partition(" > ")
        events.append((name, text) if sep else ("?", line))
    return events


class DemoClient:
    kind = "demo_client"

    def __init__(self, proc, name):
        self.proc, self.name = proc, name

    def send(self, text):
        self.proc.send(text + "\n")

    def chat(self):
        out = self.proc.out.decode("utf-8", "replace")
        return arrow_events(out.split("\n")[:-1])  # whole lines only

    def refresh(self):
        pass

    def leave(self):
        self.proc.close_stdin()

    def wait_gone(self, test):
        test.assertEqual(self.proc.wait(), 0, self.proc.describe())

    def describe(self):
        return self.proc.describe()


class ClassicClient(DemoClient):
    kind = "classic client"

    def refresh(self):
        """It reads the socket only after a line of input: an empty one, which it does not send."""
        try:
            self.proc.send(b"\n")
        except OSError:
            pass


class NcClient(DemoClient):
    kind = "nc"

    def chat(self):
        return [line_event(line) for line in self.proc.out.split(b"\r\n")[:-1]]

    def leave(self):
        self.proc.close_stdin()  # nc -N: shuts its sending side down, reads on until closed

    def wait_gone(self, test):
        if NC_SHUTDOWN:
            test.assertEqual(self.proc.wait(), 0, self.proc.describe())
        else:
            self.proc.kill()  # an nc without -N never tells the server its input ended


class SocketLineClient:
    """A line client on a raw socket: nc's stand-in, and the telnet-style client (`telnet`:
    "\\r\\n" line ends and IAC negotiation)."""

    def __init__(self, sock, reader, name, telnet):
        self.sock, self.reader, self.name, self.telnet = sock, reader, name, telnet
        self.kind = "telnet" if telnet else "nc (a Python stand-in)"
        self.sent_lines = 0

    def send(self, text):
        data = text.encode("utf-8")
        if self.telnet:
            self.sent_lines += 1
            if self.sent_lines % 3 == 1:  # the window was resized: a new NAWS, before the line
                data = bytes([IAC, SB, NAWS, 0, 100 + self.sent_lines, 0, 30, IAC, SE]) + data
            elif self.sent_lines % 3 == 2:  # a negotiation in the middle of the line
                cut = len(data) // 2
                data = data[:cut] + bytes([IAC, WONT, LINEMODE, IAC, NOP]) + data[cut:]
            data += b"\r\n"
        else:
            data += b"\n"
        self.sock.sendall(data)

    def chat(self):
        return self.reader.chat()

    def refresh(self):
        pass

    def leave(self):
        self.sock.shutdown(socket.SHUT_WR)

    def wait_gone(self, test):
        self.reader.wait_closed()

    def describe(self):
        return f"{self.kind} {self.name}: {self.reader.describe()}"


class WsClient:
    kind = "WebSocket"

    def __init__(self, sock, name, reader):
        self.sock, self.name, self.reader = sock, name, reader

    def send(self, text):
        self.sock.sendall(ws_frame(TEXT, text))

    def chat(self):
        return self.reader.chat()

    def refresh(self):
        pass

    def leave(self):
        self.sock.sendall(ws_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))

    def wait_gone(self, test):
        test.assertEqual(self.reader.wait_close(), (1000, ""), "the close is answered with its code")
        self.sock.shutdown(socket.SHUT_WR)
        self.reader.wait_closed()

    def describe(self):
        return f"WebSocket {self.name}: {self.reader.describe()}"


# =============================================================================================
class WebTestCase(DemoTestCase):
    """Clients of every kind, and the server of the suite: demo_server (the Windows one under
    wine) or, for the attacks, tests/bin/attack_server with its flags."""

    def connect(self, port):
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(s.close)
        return s

    def keep(self, reader):
        self.addCleanup(reader.stop)
        return reader

    def websocket(self, port, name=None, path="/"):
        """A WebSocket after a checked handshake (and, with `name`, joined: welcome read)."""
        s = self.connect(port)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: http://{HOST}:{port}\r\nUser-Agent: e2e_web.py\r\n\r\n").encode())
        status, headers, rest = read_http_head(s)
        self.assertEqual(status, "HTTP/1.1 101 Switching Protocols", headers)
        self.assertEqual(headers.get("upgrade", "").lower(), "websocket", headers)
        self.assertIn("upgrade", headers.get("connection", "").lower(), headers)
        self.assertEqual(headers.get("sec-websocket-accept"), accept_for(key), headers)
        reader = self.keep(WsReader(s, rest))
        if name is not None:
            s.sendall(ws_frame(TEXT, name))
            reader.wait_frame(lambda f: f[0] == "text" and f[1]["from"] == "server", what="a welcome")
            first = reader.chat()[0]
            self.assertEqual(first[0], "server")
            self.assertTrue(first[1].startswith(f"welcome, {name}!"), first)
        return s, reader

    def line_client(self, port, name, telnet=False, read_welcome=True):
        s = self.connect(port)
        if telnet:  # what a telnet client says first: its options, the window size
            s.sendall(bytes([IAC, DO, ECHO, IAC, DO, SGA, IAC, WILL, NAWS, IAC, WILL, TTYPE,
                             IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE]))
        s.sendall(name.encode() + (b"\r\n" if telnet else b"\n"))
        reader = self.keep(LineReader(s))
        if read_welcome:
            reader.wait(lambda: b"\r\n" in reader.data, what="a welcome")
            first = reader.chat()[0]
            self.assertEqual(first[0], "server")
            self.assertTrue(first[1].startswith(f"welcome, {name}!"), first)
        return s, reader

    def framed_client(self, port, name):
        s = self.connect(port)
        s.sendall(frame(name))
        reader = self.keep(FrameReader(s))
        reader.wait(lambda: (reader._parse(), reader._events)[1], what="a welcome")
        first = reader.chat()[0]
        self.assertEqual(first[0], "server")
        self.assertTrue(first[1].startswith(f"welcome, {name}!"), first)
        return s, reader

    # ---- the server ---------------------------------------------------------------------------
    def start_web_server(self, *flags, log="chat.log"):
        """tests/bin/attack_server with `flags` (Linux), or demo_server.exe with its defaults
        under wine, where a test that needs flags is skipped. Returns (process, port)."""
        if not SERVER_ON_WINDOWS:
            args = [ATTACK_SERVER, "--host", HOST, "--port", "0", "--log", log, *map(str, flags)]
            server = self.spawn(args, stdin=DEVNULL, label="attack_server")
            return server, int(server.wait_for(LISTENING_DEMO).group(1))
        if flags:
            self.skipTest(f"needs tests/bin/attack_server {' '.join(map(str, flags))} (a Linux build); "
                          f"the Windows demo_server has its default limits only")
        return self.start_server(log)

    def rss(self, server):
        return rss_bytes(server.p.pid) if CAN_READ_RSS else None


# =============================================================================================
class MixedRoom(WebTestCase):
    ROUNDS = 6

    def wait_all(self, clients, check, what, timeout=TIMEOUT):
        """Waits until check(client) holds for every client (the classic client is nudged with
        Enter meanwhile); polls every 50 ms."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [c for c in clients if not check(c)]
            if not missing:
                return
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {timeout}s for " + "; ".join(
                    f"{c.kind} {c.name}: {c.chat()[-8:]}\n    {c.describe()}" for c in missing))
            for c in missing:
                c.refresh()
            time.sleep(0.05)

    def test_five_kinds_of_client_in_one_room(self):
        server, port = self.start_server()
        room = []

        def joined(client):
            others = len(room)
            welcome = f"welcome, {client.name}! {others} other user{'' if others == 1 else 's'} online"
            self.wait_all([client], lambda c: ("server", welcome) in c.chat(), f"{client.name}'s welcome")
            self.wait_all(room, lambda c: ("server", f"{client.name} joined") in c.chat(),
                          f"the notice of {client.name}'s join")
            room.append(client)

        joined(DemoClient(self.client(port, "dora"), "dora"))
        joined(ClassicClient(self.classic_client(port, "carl"), "carl"))
        if NC:
            nc = self.spawn([NC, *(["-N"] if NC_SHUTDOWN else []), HOST, port], label="nc[nina]")
            nc.send("nina\n")
            joined(NcClient(nc, "nina"))
        else:
            joined(SocketLineClient(*self.line_client(port, "nina", read_welcome=False), "nina", telnet=False))
        joined(SocketLineClient(*self.line_client(port, "tess", telnet=True, read_welcome=False), "tess", telnet=True))
        s, reader = self.websocket(port)
        s.sendall(ws_frame(TEXT, "wes"))
        joined(WsClient(s, "wes", reader))

        # Numbered messages, every client in turn with no waiting: UTF-8, and JSON's special
        # characters (quotes, a backslash, braces) in some.
        sent = {c.name: [] for c in room}
        for i in range(1, self.ROUNDS + 1):
            for c in room:
                text = f"{c.name} #{i} ünï ✓"
                if i == 2:
                    text += ' "quoted" back\\slash'
                if i == 3:
                    text += " {json} [array] <tag>"
                c.send(text)
                sent[c.name].append(text)

        def everything(c):  # as many as were sent (which, exactly, is checked below)
            chat = c.chat()
            return all(sum(1 for f, _ in chat if f == other) >= len(sent[other]) for other in sent if other != c.name)

        self.wait_all(room, everything, "every message from every other client", timeout=3 * TIMEOUT)

        names = [c.name for c in room]
        for i, c in enumerate(room):
            with self.subTest(client=c.kind, name=c.name):
                chat = c.chat()
                for other in names:
                    got = [t for f, t in chat if f == other]
                    self.assertEqual(got, [] if other == c.name else sent[other],
                                     f"{c.name} from {other}: exactly once, in order, never its own")
                notices = [t for f, t in chat if f == "server"]
                welcome = f"welcome, {c.name}! {i} other user{'' if i == 1 else 's'} online"
                self.assertEqual(notices, [welcome] + [f"{n} joined" for n in names[i + 1:]])
                self.assertEqual([e for e in chat if e[0] not in names + ["server"]], [], "nothing else")

        for c in room:  # a line client gets no IAC back, and no raw control characters
            raw = bytes(c.reader.data) if isinstance(c, SocketLineClient) else \
                c.proc.raw_out if isinstance(c, NcClient) else None
            if raw is not None:
                self.assertNotIn(b"\xff", raw, c.name)
                self.assertNotRegex(raw.replace(b"\r\n", b""), rb"[\x00-\x1f\x7f]", c.name)

        # Everyone leaves, the browser first: each leave is seen once by those still there.
        for k, c in enumerate(list(reversed(room))):
            c.leave()
            c.wait_gone(self)
            staying = room[:len(room) - 1 - k]
            self.wait_all(staying, lambda s: ("server", f"{c.name} left") in s.chat(), f"{c.name}'s leave")
        for i, c in enumerate(room[:-1]):
            leaves = [t for f, t in c.chat() if f == "server" and t.endswith(" left")]
            self.assertEqual(leaves, [f"{n} left" for n in reversed(names[i + 1:])], c.name)

        events = self.wait_log(("leave", "dora", "left"))
        self.assertEqual([e[1] for e in events if e[0] == "join"], names)
        for name in names:
            logged = [e[2] for e in events if e[0] == "message" and e[1] == name]
            self.assertEqual(logged, [t.replace("\\", "\\\\") for t in sent[name]], f"{name}'s messages in the log")
        self.assertEqual(sum(1 for e in events if e[0] == "message"), len(names) * self.ROUNDS)
        self.assertEqual(sorted(e[1] for e in events if e[0] == "leave"), sorted(names))
        self.assertEqual([e for e in events if e[0] in ("refused", "error")], [])


# =============================================================================================
class Http(WebTestCase):
    def request(self, port, data, shut=True):
        """The whole response to `data` (bytes), and the seconds until the server closed."""
        s = self.connect(port)
        t0 = time.monotonic()
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        response = recv_until_closed(s)
        return parse_http_response(response), time.monotonic() - t0

    def test_the_page_and_the_errors(self):
        _, port = self.start_server()
        upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        cases = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
            (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "200 OK"),
            (b"GET / HTTP/1.0\n\n", "200 OK"),  # printf 'GET / HTTP/1.0\n\n' | nc
            (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404 Not Found"),
            (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", "404 Not Found"),
            (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "405 Method Not Allowed"),
            (b"HEAD / HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (b"OPTIONS * HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
            (f"GET / HTTP/1.1\r\n{upgrade}{key}Sec-WebSocket-Version: 8\r\n\r\n".encode(), "426 Upgrade Required"),
            (f"GET / HTTP/1.1\r\n{upgrade}Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n".encode(),
             "400 Bad Request"),
            (f"GET / HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n".encode(), "400 Bad Request"),
            (f"GET / HTTP/1.1\r\nUpgrade: websocket\r\n{key}Sec-WebSocket-Version: 13\r\n\r\n".encode(),
             "400 Bad Request"),  # no Connection: Upgrade
            (b"GET /\r\n\r\n", "400 Bad Request"),  # HTTP/0.9: no version
            (b"GET / FTP/1.0\r\n\r\n", "400 Bad Request"),
            (padded_request(8192), "200 OK"),  # the limit, blank line included
            (padded_request(8193), "431 Request Header Fields Too Large"),
        ]
        for data, status in cases:
            with self.subTest(request=data[:60]):
                (line, headers, body), _ = self.request(port, data)
                self.assertEqual(line, f"HTTP/1.1 {status}")
                self.assertEqual(headers.get("content-length"), str(len(body)), headers)
                self.assertEqual(headers.get("connection", "").lower(), "close", headers)
                if status == "200 OK":
                    self.assertEqual(headers.get("content-type"), "text/html; charset=utf-8")
                    self.assertRegex(body[:100].lower(), rb"\A<!doctype html")
                    continue
                self.assertEqual(body, status.encode() + b"\n", "a one-line text body")
                self.assertLess(len(line) + len(body) + sum(map(len, headers.values())), 400, "small")
                if status.startswith("405"):
                    self.assertEqual(headers.get("allow"), "GET")
                if status.startswith("426"):
                    self.assertEqual(headers.get("sec-websocket-version"), "13")
        # A client that keeps its side open is closed all the same, soon after the response.
        (line, _, _), took = self.request(port, b"GET /nope HTTP/1.1\r\n\r\n", shut=False)
        self.assertEqual(line, "HTTP/1.1 404 Not Found")
        self.assertLess(took, 1.0 + TIMEOUT / 2)
        events = self.read_log()  # pages and 4xx answers are not logged; only the 431 is
        self.assertEqual([e[::2] for e in events], [("refused", "an HTTP request over 8192 bytes")], events)

    @needs_flags
    def test_refused_on_arrival_each_in_its_own_format(self):
        # A connection over a cap is told why in the format its first bytes show: a browser
        # gets an HTTP answer (429 over a per-address cap, 503 when the server is full), a line
        # client a line, a framed client (or one that says nothing for a second) a notice.
        _, port = self.start_web_server("--max-per-address", 1)
        self.framed_client(port, "alice")  # the one connection 127.0.0.1 may have
        why = f"too many connections from {HOST} (at most 1 at once)"
        (line, headers, body), _ = self.request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((line, body), ("HTTP/1.1 429 Too Many Requests", why.encode() + b"\n"))
        self.assertEqual(headers.get("content-length"), str(len(body)))
        s = self.connect(port)
        s.sendall(b"lou\n")
        self.assertEqual(recv_until_closed(s), f"* {why}\r\n".encode())
        silent = self.connect(port)
        t0 = time.monotonic()
        data = recv_until_closed(silent)
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "told once a second has passed")
        self.assertEqual(data, frame("server") + frame(why))
        _, full_port = self.start_web_server("--max-clients", 1, log="full.log")
        self.framed_client(full_port, "bob")
        (line, _, body), _ = self.request(full_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((line, body), ("HTTP/1.1 503 Service Unavailable", b"the server is full (1 clients)\n"))


# =============================================================================================
class Lines(WebTestCase):
    def test_line_clients_names_refusals_and_leaving(self):
        _, port = self.start_server()
        fred, fred_in = self.framed_client(port, "fred")
        s = self.connect(port)
        s.sendall(b"\n\r\nlou\r\n")  # empty lines first: ignored, the name is the first real line
        lou = self.keep(LineReader(s))
        lou.wait_for(("server", "welcome, lou! 1 other user online"))
        s.sendall(b"one\n\n\r\ntwo\r\nbad \xfe\xc0 bytes\nthree\r\n")  # (0xff is IAC here)
        fred_in.wait_for(("lou", "three"))
        lou.wait_for(("server", "message not delivered: it is not valid UTF-8"))
        self.assertEqual([e for e in fred_in.chat() if e[0] == "lou"], [("lou", "one"), ("lou", "two"), ("lou", "three")])
        fred.sendall(frame("hi lou"))
        lou.wait_for(("fred", "hi lou"))
        # Names that begin like an HTTP method, but are not one: line clients all the same.
        for name in ("GET", "POSTman", "P"):
            with self.subTest(name=name):
                _, reader = self.line_client(port, name)
                fred_in.wait_for(("server", f"{name} joined"))
        for name, why in (("LOU", 'the name "LOU" is taken'), ("server", 'the name "server" is reserved'),
                          (" lou", "the name starts or ends with a space")):
            with self.subTest(refused=name):
                refused, reader = self.line_client(port, name, read_welcome=False)
                reader.wait_for(("server", f"name refused: {why}"))
                if name != "LOU":  # (the server closes on its own a second later; no need to wait)
                    refused.shutdown(socket.SHUT_WR)
                reader.wait_closed()
                self.assertEqual(reader.chat(), [("server", f"name refused: {why}")])
                self.assertTrue(reader.data.endswith(b"\r\n"))
        s.shutdown(socket.SHUT_WR)  # nc's end of input, with -N
        lou.wait_closed()
        fred_in.wait_for(("server", "lou left"))
        self.assertNotIn(("lou", "one"), lou.chat(), "never its own")

    @unittest.skipUnless(NC_SHUTDOWN, "needs an nc with -N (netcat-openbsd)")
    def test_nc_in_a_pipe(self):
        _, port = self.start_server()
        fred, fred_in = self.framed_client(port, "fred")
        # The last line has no newline: the end of the input ends it, as for a file.
        nc = self.spawn(["sh", "-c", f"printf 'nico\\nhello from a pipe\\nno newline' | {NC} -N {HOST} {port}"],
                        stdin=DEVNULL, label="printf | nc")
        self.assertEqual(nc.wait(), 0, nc.describe())
        fred_in.wait_for(("server", "nico left"))
        self.assertEqual(fred_in.chat()[1:], [("server", "nico joined"), ("nico", "hello from a pipe"),
                                              ("nico", "no newline"), ("server", "nico left")])
        self.assertEqual(nc.raw_out, b"* welcome, nico! 1 other user online\r\n")
        self.assertEqual(nc.err, b"")


# =============================================================================================
class WebSocketProtocol(WebTestCase):
    def notice_and_close(self, reader, text, code):
        """A refusal as a browser sees it: the notice (JSON), then a close frame with `code`,
        then nothing more; the server closes the connection."""
        reader.wait_for(("server", text))
        self.assertEqual(reader.wait_close()[0], code, reader.frames())
        reader.sock.shutdown(socket.SHUT_WR)
        reader.wait_closed()
        frames = reader.frames()
        at = frames.index(("text", {"from": "server", "text": text, "notice": True}))
        self.assertEqual([f[0] for f in frames[at + 1:]], ["close"], frames)
        self.assertEqual([f for f in frames if f[0] == "bad"], [])

    def test_ping_fragments_and_close(self):
        _, port = self.start_server()
        fred, fred_in = self.framed_client(port, "fred")
        ws, reader = self.websocket(port, "wes")
        fred_in.wait_for(("server", "wes joined"))

        ws.sendall(ws_frame(PING, b"are you there?"))
        reader.wait_frame(lambda f: f == ("pong", b"are you there?"), what="the pong")
        ws.sendall(ws_frame(PONG, b"unasked"))  # ignored
        ws.sendall(ws_frame(PING))
        reader.wait_frame(lambda f: f == ("pong", b""), what="an empty pong")

        e_acute = "é".encode()  # split between two fragments: valid once put together
        ws.sendall(ws_frame(TEXT, b"frag", fin=False) + ws_frame(0, b"-men" + e_acute[:1], fin=False))
        ws.sendall(ws_frame(PING, b"in between"))  # a control frame amid a fragmented message
        ws.sendall(ws_frame(0, e_acute[1:] + b"ted \xe2\x9c\x93", fin=True))
        fred_in.wait_for(("wes", "frag-menéted ✓"))
        reader.wait_frame(lambda f: f == ("pong", b"in between"), what="the pong amid fragments")

        fred.sendall(frame("hi wes"))
        reader.wait_for(("fred", "hi wes"))
        big = "".join(chr(ord("a") + i % 26) for i in range(65536))  # the limit, in 3 fragments
        ws.sendall(ws_frame(TEXT, big[:100], fin=False) + ws_frame(0, big[100:40000], fin=False) +
                   ws_frame(0, big[40000:]))
        fred_in.wait_for(("wes", big))

        ws.sendall(ws_frame(CLOSE, struct.pack("!H", 4321) + b"going away"))
        self.assertEqual(reader.wait_close(), (4321, ""), "the close is answered with the same code")
        ws.shutdown(socket.SHUT_WR)
        reader.wait_closed()
        fred_in.wait_for(("server", "wes left"))
        self.assertEqual([f for f in reader.frames() if f[0] == "bad"], [])
        self.assertEqual([f for f in fred_in.chat() if f[0] == "wes"], [("wes", "frag-menéted ✓"), ("wes", big)])

        # No status code: answered with 1000. A code no peer may send (1005, 1006, 1015, under
        # 1000, a one-byte body): answered with 1002, not echoed (RFC 6455, 7.4).
        for i, (body, answer) in enumerate(((b"", 1000), (struct.pack("!H", 1001), 1001),
                                            (struct.pack("!H", 3000), 3000), (struct.pack("!H", 1005), 1002),
                                            (struct.pack("!H", 1006), 1002), (struct.pack("!H", 1015), 1002),
                                            (struct.pack("!H", 999), 1002), (b"\x03", 1002))):
            with self.subTest(close=body):
                ws2, reader2 = self.websocket(port, f"wes{i}")
                ws2.sendall(ws_frame(CLOSE, body))
                self.assertEqual(reader2.wait_close()[0], answer)
                ws2.shutdown(socket.SHUT_WR)
                reader2.wait_closed()
                fred_in.wait_for(("server", f"wes{i} left"))

    @unittest.skipUnless(HAVE_PROC_NET_TCP, "no /proc/net/tcp: cannot tell what the server has read")
    def test_a_handshake_byte_by_byte_and_one_with_its_first_frame(self):
        _, port = self.start_server()
        fred, fred_in = self.framed_client(port, "fred")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET / HTTP/1.1\r\nHost: {HOST}\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n"
                   f"sec-websocket-key: {key}\r\nsec-websocket-version: 13\r\n\r\n").encode()
        s = self.connect(port)
        for i in range(len(request)):  # each byte a read of its own: every split of the request
            s.sendall(request[i:i + 1])
            wait_until_read(s)
        status, headers, rest = read_http_head(s)
        self.assertEqual(status, "HTTP/1.1 101 Switching Protocols")
        self.assertEqual(headers.get("sec-websocket-accept"), accept_for(key))
        name = ws_frame(TEXT, "slow")
        for i in range(len(name)):  # and the name, a byte at a time
            s.sendall(name[i:i + 1])
            wait_until_read(s)
        fred_in.wait_for(("server", "slow joined"))
        reader = self.keep(WsReader(s, rest))
        reader.wait_for(("server", "welcome, slow! 1 other user online"))

        # A client that does not wait for the 101: the request, its name and a message at once.
        key = base64.b64encode(os.urandom(16)).decode()
        s = self.connect(port)
        s.sendall(request.replace(request[request.index(b"sec-websocket-key: ") + 19:][:24], key.encode()) +
                  ws_frame(TEXT, "eager") + ws_frame(TEXT, "hello at once"))
        status, headers, rest = read_http_head(s)
        self.assertEqual((status, headers.get("sec-websocket-accept")), ("HTTP/1.1 101 Switching Protocols", accept_for(key)))
        reader = self.keep(WsReader(s, rest))
        reader.wait_for(("server", "welcome, eager! 2 other users online"))
        fred_in.wait_for(("eager", "hello at once"))

    def test_refused_names(self):
        _, port = self.start_server()
        self.websocket(port, "wes")
        for name, why in (("wes", 'the name "wes" is taken'), ("WES", 'the name "WES" is taken'),
                          ("server", 'the name "server" is reserved'), ("x" * 33, "the name is longer than 32 bytes"),
                          ("\x1b[31mred", "the name contains control characters")):
            with self.subTest(name=name):
                ws, reader = self.websocket(port)
                ws.sendall(ws_frame(TEXT, name))
                self.notice_and_close(reader, f"name refused: {why}", 1008)

    # (frames after joining, the error, the close code)
    ERRORS = [
        (ws_frame(TEXT, "hello", mask=False), "an unmasked client frame", 1002),
        (ws_frame(TEXT, "hello", rsv=4), "reserved bits set", 1002),
        (ws_frame(TEXT, "hello", rsv=1), "reserved bits set", 1002),
        (ws_frame(BINARY, b"\x00\x01"), "binary messages are not accepted", 1003),
        (ws_frame(3, b"x"), "an unknown opcode", 1002),
        (ws_frame(11, b"x"), "an unknown opcode", 1002),
        (ws_frame(0, b"more"), "a continuation of nothing", 1002),
        (ws_frame(TEXT, b"one", fin=False) + ws_frame(TEXT, b"two"), "a new message inside a fragmented one", 1002),
        (ws_frame(PING, b"x", fin=False), "a fragmented or oversized control frame", 1002),
        (ws_frame(PING, b"p" * 126), "a fragmented or oversized control frame", 1002),
        (ws_frame(TEXT, b"bad \xff\xfe"), "a text message that is not UTF-8", 1007),
        (ws_frame(TEXT, b"\xe2\x9c", fin=False) + ws_frame(0, b"x"), "a text message that is not UTF-8", 1007),
        (ws_frame(TEXT, b"\xed\xa0\x80"), "a text message that is not UTF-8", 1007),  # a surrogate
        (ws_frame(TEXT, b"x" * 65537), "a message over 65536 bytes", 1009),
        (ws_frame(TEXT, b"x" * 65536, fin=False) + ws_frame(0, b"y"), "a message over 65536 bytes", 1009),
    ]

    def test_protocol_errors_close_with_their_code(self):
        _, port = self.start_server()
        fred, fred_in = self.framed_client(port, "fred")
        for i, (data, why, code) in enumerate(self.ERRORS):
            with self.subTest(error=why, case=i):
                name = f"m{i}"
                ws, reader = self.websocket(port, name)
                fred_in.wait_for(("server", f"{name} joined"))
                ws.sendall(data)
                self.notice_and_close(reader, f"protocol error: {why}", code)
                fred_in.wait_for(("server", f"{name} left (protocol error: {why})"))
        self.assertEqual([e for e in fred_in.chat() if e[0] != "server"], [], "nothing got through")
        events = self.read_log()
        self.assertEqual([e for e in events if e[0] == "message"], [])
        self.assertEqual([e[2] for e in events if e[0] == "error"], [f"protocol error: {e[1]}" for e in self.ERRORS])

    def test_text_is_json_escaped_and_line_clients_get_it_printable(self):
        _, port = self.start_server()
        ws, reader = self.websocket(port, "wes")
        _, carol = self.line_client(port, "carol")
        fred, fred_in = self.framed_client(port, "zoë ✓")
        reader.wait_for(("server", "zoë ✓ joined"))
        evil = 'q"uote \\back \n new\tline \x01\x1b[2J \x7f \u009b \u2028 \U0001f389 </script>'
        fred.sendall(frame(evil))
        reader.wait_for(("zoë ✓", evil))
        carol.wait(lambda: b"\xc3\xab \xe2\x9c\x93: " in carol.data, what="the message at the line client")
        raw = bytes(reader.data)
        self.assertNotRegex(raw[raw.index(b'"q'):], rb"[\x00-\x1f]", "no raw control characters in the JSON")
        line = [t for f, t in carol.chat() if f == "zoë ✓"]
        self.assertEqual(len(line), 1, carol.chat())
        self.assertNotRegex(line[0], "[\x00-\x1f\x7f\x80-\x9f]", "a terminal gets no control characters")
        self.assertIn("\\x1b[2J", line[0])

    def test_the_stop_says_so_and_closes_1001(self):
        server, port = self.start_server()
        ws, reader = self.websocket(port, "wes")
        _, carol = self.line_client(port, "carol")
        server.signal(signal.SIGINT)  # under wine: a Ctrl+C event
        self.notice_and_close(reader, "the server is stopping", 1001)
        carol.wait_for(("server", "the server is stopping"))
        carol.sock.shutdown(socket.SHUT_WR)  # both gone: the server need not wait out its 2 s
        carol.wait_closed()
        self.assertEqual(server.wait(), 0, server.describe())
        self.assertEqual(carol.chat()[-1], ("server", "the server is stopping"))
        events = self.read_log()
        self.assertIn(("leave", "wes", "server stopping"), events)
        self.assertIn(("leave", "carol", "server stopping"), events)


# =============================================================================================
NOTICE = re.compile(r"\A(welcome, .+! \d+ other users? online|\S+ joined|\S+ left( \(.+\))?)\Z")


class WebAttacks(WebTestCase):
    """Each attack with bystanders in the room: alice (frames), bob (WebSocket), carol (a line
    client), who must chat on, unaffected."""

    def room(self, port):
        self.said = {"alice": [], "bob": [], "carol": []}
        self.others = {}  # what clients other than the bystanders are expected to have said
        alice, alice_in = self.framed_client(port, "alice")
        bob, bob_in = self.websocket(port, "bob")
        carol, carol_in = self.line_client(port, "carol")
        alice_in.wait_for(("server", "carol joined"))
        bob_in.wait_for(("server", "carol joined"))
        self.bystanders = {"alice": (alice, alice_in, frame), "bob": (bob, bob_in, lambda t: ws_frame(TEXT, t)),
                           "carol": (carol, carol_in, lambda t: t.encode() + b"\n")}
        return self.bystanders

    def say(self, name, text):
        sock, _, encode = self.bystanders[name]
        sock.sendall(encode(text))
        self.said[name].append(text)

    def round_trip(self, tag, timeout=TIMEOUT):
        """Each bystander says something; the other two get it. Returns the seconds it took."""
        t0 = time.monotonic()
        for name in self.bystanders:
            self.say(name, f"{name} {tag}")
        for name, (_, reader, _) in self.bystanders.items():
            for other in self.bystanders:
                if other != name:
                    reader.wait_for((other, f"{other} {tag}"), timeout)
        return time.monotonic() - t0

    def assert_unaffected(self, tag="after"):
        """The bystanders chat on, and have received nothing but each other's messages, each
        once and in order, and notices of joins and leaves."""
        self.round_trip(tag)
        for name, (_, reader, _) in self.bystanders.items():
            with self.subTest(bystander=name):
                chat = reader.chat()
                for other in self.bystanders:
                    got = [t for f, t in chat if f == other]
                    self.assertEqual(got, [] if other == name else self.said[other], f"{name} from {other}")
                for other, texts in self.others.items():
                    self.assertEqual([t for f, t in chat if f == other], texts, f"{name} from {other}")
                strays = [e for e in chat if e[0] not in self.said and e[0] not in self.others and
                          (e[0] != "server" or not NOTICE.match(e[1]))]
                self.assertEqual(strays, [], f"{name} got something else")
                self.assertFalse(reader.closed)
        self.assertNotIn(b"\xff", bytes(self.bystanders["carol"][1].data))
        self.assertEqual([f for f in self.bystanders["bob"][1].frames() if f[0] != "text"], [])

    def attacker_left(self, name, reason):
        for _, reader, _ in self.bystanders.values():
            reader.wait_for(("server", f"{name} left ({reason})"))

    # ---- HTTP requests that never end ----------------------------------------------------------
    @unittest.skipUnless(HAVE_PROC_NET_TCP, "no /proc/net/tcp: cannot tell what the server has read")
    def test_an_endless_http_request_gets_431_past_8192_bytes(self):
        server, port = self.start_web_server()
        self.room(port)
        s = self.connect(port)
        sent = 0
        chunk = b"X-Trickle: " + b"t" * 85 + b"\r\n"  # 98 bytes, and never the blank line
        answered_at = None
        for data in [b"GET / HTTP/1.1\r\nHost: x\r\n"] + [chunk] * 700:
            s.sendall(data)
            sent += len(data)
            wait_until_read(s)  # one read per chunk: the server sees the request grow
            if select.select([s], [], [], 0.3 if sent >= 8192 else 0)[0]:
                answered_at = sent
                break
        self.assertIsNotNone(answered_at, f"no answer after {sent} bytes")
        self.assertGreaterEqual(answered_at, 8192, "answered before the request was over the limit")
        self.assertLess(answered_at, 8192 + len(chunk), "not answered once over 8192 bytes")
        t0 = time.monotonic()
        (line, headers, body) = parse_http_response(recv_until_closed(s))  # our side stays open
        self.assertLess(time.monotonic() - t0, 1.0 + TIMEOUT / 2, "closed soon after the answer")
        self.assertEqual(line, "HTTP/1.1 431 Request Header Fields Too Large")
        self.assertEqual(headers.get("content-length"), str(len(body)))
        self.assertEqual(headers.get("connection"), "close")
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        self.assertIn(("refused", peer, "an HTTP request over 8192 bytes"), self.read_log())
        self.assert_unaffected()

    @needs_flags
    def test_a_trickling_http_request_gets_408_at_the_handshake_timeout(self):
        server, port = self.start_web_server("--handshake-ms", 800)
        self.room(port)
        t0 = time.monotonic()  # before the server's accept, where its clock starts
        s = self.connect(port)
        s.sendall(b"GET / HTTP/1.1\r\n")
        trickle = b"X-Slow: " + b"s" * 1000
        answered = None
        for k in range(400):  # a byte every 10 ms: bytes keep coming, the request never ends
            if select.select([s], [], [], 0.01)[0]:
                answered = time.monotonic() - t0
                break
            s.sendall(trickle[k:k + 1])
            if k % 50 == 0:  # and the room chats on meanwhile
                self.round_trip(f"during {k}")
        self.assertIsNotNone(answered, "no answer within 4 s")
        self.assertGreaterEqual(answered, 0.8)
        self.assertLess(answered, 0.8 + 2.0)
        line, headers, body = parse_http_response(recv_until_closed(s))
        self.assertEqual(line, "HTTP/1.1 408 Request Timeout")
        self.assertEqual(headers.get("content-length"), str(len(body)))
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        server.wait_for(f"refused {peer}: no username in time\n")
        self.assertIn(("refused", peer, "no username in time"), self.read_log())
        self.assert_unaffected()

    @needs_flags
    def test_a_websocket_that_never_names_itself_is_refused_in_time(self):
        _, port = self.start_web_server("--handshake-ms", 600)
        self.room(port)
        t0 = time.monotonic()
        ws, reader = self.websocket(port)
        ws.sendall(ws_frame(PING, b"still here"))  # pings are not a name
        reader.wait_for(("server", "no username within 600 ms"))
        self.assertGreaterEqual(time.monotonic() - t0, 0.6)
        self.assertEqual(reader.wait_close()[0], 1008)
        reader.wait_closed()
        self.assert_unaffected()

    @needs_flags
    def test_the_web_side_off(self):
        server, port = self.start_web_server("--no-web")
        s = self.connect(port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(recv_until_closed(s), b"", "closed at once, with no response")
        s = self.connect(port)
        s.sendall(b"GE")  # may still be a method: detection waits ...
        wait_until_read(s) if HAVE_PROC_NET_TCP else time.sleep(0.05)
        s.sendall(b"T / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        self.assertEqual(recv_until_closed(s), b"")
        peer = f"127.0.0.1:{s.getsockname()[1]}"
        self.wait_log(("refused", peer, "an HTTP request, and the web side is off"))
        alice, alice_in = self.framed_client(port, "alice")
        _, carol_in = self.line_client(port, "carol")  # the other two doors are open
        alice.sendall(frame("still chatting"))
        carol_in.wait_for(("alice", "still chatting"))

    # ---- WebSocket frames ------------------------------------------------------------------------
    def test_a_frame_announcing_2_63_bytes_is_refused_at_once(self):
        server, port = self.start_web_server()
        self.room(port)
        for i, length in enumerate((1 << 63, (1 << 64) - 1, (1 << 32) + 5, 65537)):
            with self.subTest(length=length):
                name = f"mallory{i}"
                ws, reader = self.websocket(port, name)
                self.bystanders["alice"][1].wait_for(("server", f"{name} joined"))
                before = self.rss(server)
                sampler = RssSampler(server.p.pid) if before else None
                t0 = time.monotonic()
                ws.sendall(ws_frame(TEXT, b"", length=length))  # the header alone: 14 bytes
                reader.wait_for(("server", "protocol error: a message over 65536 bytes"))
                self.assertLess(time.monotonic() - t0, 1.0, "refused from the header, at once")
                self.assertEqual(reader.wait_close()[0], 1009)
                try:  # what follows is read and dropped, never buffered
                    for _ in range(64):
                        ws.sendall(b"\0" * 65536)
                except OSError:
                    pass  # the server has closed
                reader.wait_closed()
                if sampler:
                    peak = sampler.stop()
                    self.assertLess(peak - before, 1 * MiB, f"RSS {before / MiB:.1f} -> {peak / MiB:.1f} MiB")
                self.attacker_left(name, "protocol error: a message over 65536 bytes")
        self.assert_unaffected()

    def test_an_unmasked_client_frame_closes_1002(self):
        _, port = self.start_web_server()
        self.room(port)
        ws, reader = self.websocket(port, "mallory")
        self.bystanders["bob"][1].wait_for(("server", "mallory joined"))
        ws.sendall(ws_frame(TEXT, "unmasked hello", mask=False))
        reader.wait_for(("server", "protocol error: an unmasked client frame"))
        self.assertEqual(reader.wait_close()[0], 1002)
        reader.wait_closed()
        self.attacker_left("mallory", "protocol error: an unmasked client frame")
        self.assert_unaffected()
        self.assertNotIn(("message", "mallory", "unmasked hello"), self.read_log())

    # ---- lines -------------------------------------------------------------------------------------
    @unittest.skipUnless(HAVE_PROC_NET_TCP, "no /proc/net/tcp: cannot tell what the server has read")
    def test_an_endless_line_is_refused_after_4_kib(self):
        _, port = self.start_web_server()
        self.room(port)
        for who in ("lenny", None):  # joined, and a name that never ends
            with self.subTest(joined=bool(who)):
                s = self.connect(port)
                if who:
                    s.sendall(b"lenny\n")
                    self.bystanders["alice"][1].wait_for(("server", "lenny joined"))
                reader = self.keep(LineReader(s))
                refused = reader.scanner(b"* protocol error: line over 4096 bytes\r\n")
                refused_at, sent = None, 0
                while sent < 16 * 1024:  # 1 KiB at a time, each read by the server before the next
                    s.sendall(b"x" * 1024)
                    sent += 1024
                    try:
                        wait_until_read(s)
                    except NotReadError:
                        pass  # it has stopped reading: closed
                    try:
                        reader.wait(refused, timeout=0.5 if sent > 4096 else 0, what="the refusal")
                    except AssertionError:
                        continue
                    refused_at = sent
                    break
                self.assertEqual(refused_at, 5120, "refused with the read that took it over 4096 bytes: "
                                 + reader.describe())
                reader.wait_closed()
                self.assertEqual(reader.chat(), [("server", "welcome, lenny! 3 other users online")] * bool(who) +
                                 [("server", "protocol error: line over 4096 bytes")])
        self.attacker_left("lenny", "protocol error: line over 4096 bytes")
        # The limit itself is fine, with "\n" or "\r\n" after it.
        s, lines = self.line_client(port, "maxine")
        s.sendall(b"m" * 4096 + b"\n" + b"n" * 4096 + b"\r\n")
        self.others["maxine"] = ["m" * 4096, "n" * 4096]
        self.bystanders["alice"][1].wait_for(("maxine", "n" * 4096))
        self.bystanders["bob"][1].wait_for(("maxine", "m" * 4096))
        events = self.read_log()
        self.assertIn(("error", "lenny", "protocol error: line over 4096 bytes"), events)
        self.assertIn(("message", "maxine", "m" * 4096), events)
        self.assert_unaffected()

    def test_flood_control_holds_back_lines_and_browsers(self):
        # The defaults (the Windows demo_server's too): 500 messages a second, bursts of a
        # second's worth. 1,500 lines in one send from a line client, and 1,500 WebSocket
        # messages from a browser, are read at that pace: 2 s or more, every one in order, one
        # "slow down" notice each; the bystanders chat on meanwhile.
        server, port = self.start_web_server()
        self.room(port)
        count = 1500
        lou, lou_in = self.line_client(port, "lou")
        web, web_in = self.websocket(port, "web")
        self.bystanders["alice"][1].wait_for(("server", "web joined"))
        t0 = time.monotonic()
        lou.sendall(b"".join(f"lou {i}\n".encode() for i in range(count)))
        web.sendall(b"".join(ws_frame(TEXT, f"web {i}") for i in range(count)))
        self.say("alice", "alice, amid the flood")
        for name in ("bob", "carol"):
            self.bystanders[name][1].wait_for(("alice", "alice, amid the flood"))
        for name, (_, reader, _) in self.bystanders.items():
            reader.wait(lambda: ("lou", f"lou {count - 1}") in reader.chat() and
                        ("web", f"web {count - 1}") in reader.chat(), 4 * TIMEOUT, f"{name}: both floods")
        took = time.monotonic() - t0
        self.others = {"lou": [f"lou {i}" for i in range(count)], "web": [f"web {i}" for i in range(count)]}
        self.assertGreaterEqual(took, 1.8, "1,500 messages at 500 a second, bursts of 501")
        told = ("server", "slow down: you are sending faster than the room can take it; "
                          "the rest waits, nothing is lost")
        lou_in.wait_for(told)
        web_in.wait_for(told)
        self.assertEqual(lou_in.chat().count(told), 1)
        self.assertEqual(web_in.chat().count(told), 1)
        self.assert_unaffected()

    @needs_flags
    def test_max_line_flag_and_max_payload_bound_it(self):
        for flags, limit in ((("--max-line", 100), 100), (("--max-line", 100000, "--max-payload", 50), 50)):
            with self.subTest(flags=flags):
                _, port = self.start_web_server(*flags, log=f"log{limit}")
                s, reader = self.line_client(port, "lina")
                _, alice_in = self.framed_client(port, "alice")
                s.sendall(b"y" * limit + b"\r\n" + b"z" * (limit + 1) + b"\n")
                alice_in.wait_for(("lina", "y" * limit))
                reader.wait_for(("server", f"protocol error: line over {limit} bytes"))
                reader.wait_closed()

    @needs_flags
    def test_a_million_one_byte_lines(self):
        # The relay's own speed with lines: flood control off (with it on, 500 lines a second
        # would take half an hour; test_flood_control_holds_back_lines_and_browsers has it on).
        count = 1_000_000
        server, port = self.start_web_server("--no-flood-control")
        self.room(port)
        spam, spam_in = self.line_client(port, "spam")
        self.bystanders["carol"][1].wait_for(("server", "spam joined"))
        patterns = {"alice": frame("spam") + frame("a"), "bob": b"\x81\x1a" + b'{"from":"spam","text":"a"}',
                    "carol": b"spam: a\r\n"}
        # From here on the bystanders' readers only collect bytes (parsing a million messages
        # each as they come would slow them down until the server cut them off).
        starts = {n: len(r.data) for n, (_, r, _) in self.bystanders.items()}
        counters = {n: self.bystanders[n][1].scanner(p, starts[n]) for n, p in patterns.items()}
        sender = threading.Thread(target=spam.sendall, args=(b"a\n" * count,), daemon=True)
        t0 = time.monotonic()
        sender.start()
        latencies = []
        k = 0
        while sender.is_alive() or k < 2:  # alice talks while the flood goes on (and after)
            text = f"alice says {k} amid the flood"
            marks = {"bob": f'{{"from":"alice","text":"{text}"}}'.encode(), "carol": f"alice: {text}\r\n".encode()}
            t1 = time.monotonic()
            self.bystanders["alice"][0].sendall(frame(text))
            self.said["alice"].append(text)
            for name, mark in marks.items():
                self.bystanders[name][1].wait(self.bystanders[name][1].scanner(mark, starts[name]), 3 * TIMEOUT,
                                              f"{name} getting {text!r}")
            latencies.append(time.monotonic() - t1)
            k += 1
            time.sleep(0.2)
        sender.join(TIMEOUT)
        for name, counter in counters.items():
            self.bystanders[name][1].wait(lambda: counter() >= count, 6 * TIMEOUT, f"{name} getting {count} lines")
        took = time.monotonic() - t0
        for name, pattern in patterns.items():  # exactly once each, and the rest parses as before
            reader = self.bystanders[name][1]
            with reader.cond:
                self.assertEqual(reader.data.count(pattern), count, name)
                reader.data[starts[name]:] = reader.data[starts[name]:].replace(pattern, b"")
        self.assertLess(max(latencies), 2 * TIMEOUT, f"alice's messages amid the flood took {latencies}")
        rss = f", server RSS {self.rss(server) / MiB:.1f} MiB" if CAN_READ_RSS else ""
        print(f"\n  {count} lines relayed to 3 clients in {took:.1f} s; alice's {len(latencies)} messages "
              f"amid them took at most {max(latencies):.2f} s{rss}", flush=True)
        with open(self.path("chat.log"), "rb") as f:
            self.assertEqual(f.read().count(b"\tmessage\tspam\ta\n"), count)
        self.assertEqual([e for e in spam_in.chat() if e[0] == "spam"], [], "nothing came back to spam")
        self.assertEqual([t for f, t in spam_in.chat() if f == "alice"], self.said["alice"])
        self.assert_unaffected()

    # ---- telnet --------------------------------------------------------------------------------------
    def iac_flood(self, size, seed, text_every=None, texts=()):
        """`size` bytes of telnet commands: negotiations with every option byte (a "\\n" or an IAC
        among them), two-byte commands, subnegotiations holding newlines and escaped IACs;
        `texts` are put in between, each line split by a command."""
        rnd = random.Random(seed)
        out, pieces, texts = bytearray(), [], list(texts)
        while len(out) < size:
            kind = rnd.randrange(4)
            if kind == 0:
                piece = bytes([IAC, rnd.choice((WILL, WONT, DO, DONT)), rnd.randrange(256)])
            elif kind == 1:
                piece = bytes([IAC, rnd.choice((NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SE))])
            elif kind == 2:
                body = bytes(rnd.choice(b"\n\r xyz\0\x01\xfe") for _ in range(rnd.randrange(40)))
                piece = bytes([IAC, SB, rnd.randrange(256)]) + body + bytes([IAC, IAC]) + body + bytes([IAC, SE])
            else:
                piece = bytes([IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE])
            out += piece
            if text_every and texts and len(out) // text_every > len(pieces):
                t = texts.pop(0).encode()
                out += t[:3] + bytes([IAC, DO, 10]) + t[3:] + b"\r\n"  # IAC DO "\n" mid-line
                pieces.append(t)
        return bytes(out)

    def test_iac_floods(self):
        server, port = self.start_web_server()
        self.room(port)
        s, iggy_in = self.line_client(port, "iggy", telnet=True)
        self.bystanders["bob"][1].wait_for(("server", "iggy joined"))
        size = 4 * MiB
        texts = [f"iggy line {k}" for k in range(16)]
        flood = self.iac_flood(size, seed=11, text_every=size // 16, texts=texts)
        before = self.rss(server)
        sampler = RssSampler(server.p.pid) if before else None
        sender = threading.Thread(target=s.sendall, args=(flood,), daemon=True)
        sender.start()
        rounds = 0
        while sender.is_alive() and rounds < 50:  # the chat goes on meanwhile
            self.round_trip(f"amid the flood {rounds}")
            rounds += 1
        sender.join(3 * TIMEOUT)
        self.assertFalse(sender.is_alive(), "the server stopped reading the flood")
        for name, (_, reader, _) in self.bystanders.items():
            reader.wait_for(("iggy", texts[-1]))
            self.assertEqual([t for f, t in reader.chat() if f == "iggy"], texts, name)
        if sampler:
            peak = sampler.stop()
            self.assertLess(peak - before, 2 * MiB, f"RSS {before / MiB:.1f} -> {peak / MiB:.1f} MiB")
        s.sendall(b"iggy still here\r\n")
        self.bystanders["alice"][1].wait_for(("iggy", "iggy still here"))
        self.others["iggy"] = texts + ["iggy still here"]
        self.assertEqual([e for e in iggy_in.chat() if e[0] not in self.said and e[0] != "server"], [])
        self.assertEqual(iggy_in.chat()[0], ("server", "welcome, iggy! 3 other users online"))
        events = self.read_log()
        self.assertEqual([e[2] for e in events if e[0] == "message" and e[1] == "iggy"], texts + ["iggy still here"])
        self.assertEqual([e for e in events if e[0] == "error"], [])
        self.assert_unaffected()

    def test_a_line_of_escaped_iacs_is_held_to_the_line_limit(self):
        # IAC IAC is a literal byte 255 in the line: it counts toward max_line like any other.
        server, port = self.start_web_server()
        self.room(port)
        s, reader = self.line_client(port, "ivan", telnet=True)
        self.bystanders["carol"][1].wait_for(("server", "ivan joined"))
        before = self.rss(server)
        sampler = RssSampler(server.p.pid) if before else None
        total = 0
        try:
            for _ in range(8):  # 8 MiB in all: 4 Mi literal 255 bytes, and no line end
                s.sendall(bytes([IAC, IAC]) * (512 * 1024))
                total += MiB
                if reader.closed:
                    break
        except OSError:
            pass  # refused and closed
        try:
            reader.wait_closed(timeout=2.0)
        except AssertionError:
            pass
        peak = sampler.stop() if sampler else None
        memory = f"; server RSS {before / MiB:.1f} -> peak {peak / MiB:.1f} MiB" if sampler else ""
        got = [t for f, t in reader.chat() if f == "server"][1:]
        self.assertEqual(got, ["protocol error: line over 4096 bytes"],
                         f"{total} bytes of IAC IAC (= {total // 2} bytes of 255 in one line) sent{memory}")
        if sampler:
            self.assertLess(peak - before, 2 * MiB, f"RSS {before / MiB:.1f} -> {peak / MiB:.1f} MiB")
        self.attacker_left("ivan", "protocol error: line over 4096 bytes")
        self.assert_unaffected()

    @needs_flags
    def test_an_iac_flood_cannot_hold_a_nameless_connection(self):
        _, port = self.start_web_server("--handshake-ms", 800)
        self.room(port)
        t0 = time.monotonic()  # before the server's accept, where its clock starts
        s = self.connect(port)
        reader = self.keep(LineReader(s))
        flood = self.iac_flood(64 * 1024, seed=5)
        at = 0
        while not reader.closed and time.monotonic() - t0 < 0.8 + TIMEOUT:
            chunk = flood[at:at + 1024]  # the flood over and over, in 1 KiB pieces
            try:
                s.sendall(chunk)
            except OSError:
                break
            at = (at + len(chunk)) % len(flood)
            time.sleep(0.005)
        reader.wait_closed()
        self.assertGreaterEqual(time.monotonic() - t0, 0.8)
        self.assertEqual(reader.chat(), [("server", "no username within 800 ms")])
        self.assert_unaffected()


if __name__ == "__main__":
    main(__name__, programs={"server": DEMO_SERVER, "client": DEMO_CLIENT,
                             "attack server": [ATTACK_SERVER], "nc": [NC or "(missing: a Python stand-in)"]})
