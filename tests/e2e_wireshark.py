#!/usr/bin/env python3
"""End-to-end test of tools/chatsock.lua, the Wireshark dissector, on real traffic. Ends with
"RESULT passed=N failed=M skipped=K".

    python3 tests/e2e_wireshark.py          (builds the demos first if needed; run as root)

Once per run, dumpcap (Debian package tshark, which pulls in wireshark-common) captures on the
loopback interface `lo` with the capture filter "tcp port PORT", PORT being the ephemeral port
of a demo_server listening on 127.0.0.1. Three framed clients written here (raw sockets,
TCP_NODELAY) chat through it:

  alice   joins alone;
  bob     sends his username and a first message in one write (two frames in one segment);
  alice   sends a frame split across two TCP segments (the header and half the payload, 50 ms,
          the rest), then an empty frame split inside its header;
  mallory sends her username split in two, its second half in one write with a message (TCP
          hands the dissector a reassembled frame and then the rest of the same segment), then
          a bad header ("+5"): the server's protocol-error notice, her leave;
  bob, then alice, close; the server's "bob left" reaches alice.

Each client records the (sender, text) pairs it really read. Then tshark decodes the capture
with the dissector (-T pdml, parsed with xml.etree) and the tests compare:

  Dissector.test_usernames_and_messages   client-to-server: the handshake frame is the username,
                                          the later ones are messages (the empty one too)
  Dissector.test_pairs_and_notices        server-to-client: the pairs equal what each client read,
                                          notices marked exactly when the sender is "server"
  Dissector.test_split_frame_is_reassembled
                                          the split frames decode whole, once, from two segments
  Dissector.test_bad_header_is_an_expert_error
                                          an expert-info error, not a Lua error
  Dissector.test_one_pass_and_two_passes_agree
                                          tshark -2 decodes the same as one pass
  Dissector.test_port_is_a_preference     without -o chatsock.port:PORT (default 1234) nothing
                                          is decoded; with it, tcp.port maps PORT, not 1234, to
                                          the dissector

The whole file takes about 2 s once the demos are built (0.15 s of sleeps, four tshark runs).
The capture is live, not a file written by the test. Without tshark or dumpcap, or when this
user may not capture on `lo` (not root, no CAP_NET_RAW), every test is skipped with the reason.
Everything stays on 127.0.0.1; every wait is bounded and every process reaped.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import xml.etree.ElementTree as ET

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DEMO_SERVER, DEVNULL, HOST, LISTENING_DEMO, ROOT, TIMEOUT, Proc,  # noqa: E402
                     build_demos, frame, main, recv_frame, recv_until_closed)

DISSECTOR = os.path.join(ROOT, "tools", "chatsock.lua")
TSHARK = shutil.which("tshark")
DUMPCAP = shutil.which("dumpcap")
DECODE_TIMEOUT = 60.0  # one tshark run over a capture of a few dozen packets: well under a second

SPLIT_TEXT = "héllo bob: this frame crosses two TCP segments, and Wireshark joins them"
BAD_HEADER = b"+5        "  # a sign: refused by chatsock (PROTOCOL.md, Decoding rules)


class Capture:
    """The conversation described in the module's docstring, captured once for all the tests."""

    def __init__(self, directory):
        self.dir = directory
        self.procs = []
        self.socks = []
        self.pcap = os.path.join(directory, "chat.pcapng")
        self.read = {}  # client name -> the (sender, text) pairs it read, in order

    def close(self):
        for s in self.socks:
            s.close()
        for p in reversed(self.procs):
            p.kill()

    def spawn(self, args, label):
        p = Proc([str(a) for a in args], self.dir, stdin=DEVNULL, label=label)
        self.procs.append(p)
        return p

    def connect(self, name):
        s = socket.create_connection((HOST, self.port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socks.append(s)
        self.read[name] = []
        return s

    def expect(self, name, sock, sender, text_prefix):
        """Reads pairs as `name` until the expected one; every pair read is recorded for the
        comparison with tshark. Other notices on the way are let through (a server program may
        add its own, e.g. recent history for a newcomer); another user's message is not."""
        while True:
            pair = tuple(recv_frame(sock)[1].decode("utf-8") for _ in range(2))
            self.read[name].append(pair)
            if pair[0] == sender and pair[1].startswith(text_prefix):
                return
            if pair[0] != "server":
                raise AssertionError(f"{name} read {pair}, expected "
                                     f"({sender!r}, {text_prefix!r}...) after {self.read[name]}")

    def close_politely(self, name, sock):
        """Half-closes, then records the pairs still arriving until the server closes."""
        sock.shutdown(socket.SHUT_WR)
        data = recv_until_closed(sock)
        frames = []
        while data:
            length = int(data[:10].decode("ascii").strip())
            frames.append(data[10:10 + length].decode("utf-8"))
            data = data[10 + length:]
        self.read[name] += list(zip(frames[0::2], frames[1::2]))

    def start_capture(self):
        """dumpcap on lo; raises unittest.SkipTest when this user may not capture."""
        dumpcap = self.spawn([DUMPCAP, "-i", "lo", "-f", f"tcp port {self.port}", "-w", self.pcap],
                             label="dumpcap")
        deadline = time.monotonic() + 3 * TIMEOUT
        # dumpcap prints "File: ..." once the interface is open, the filter set and the file
        # created, so from then on every packet on the port is captured.
        while b"File: " not in dumpcap.err:
            if dumpcap.p.poll() is not None:
                dumpcap.wait()
                lines = dumpcap.err.decode(errors="replace").splitlines()
                why = [line for line in lines if "permission" in line or "not permitted" in line]
                if why:  # e.g. 'dumpcap: You do not have permission to capture on device "lo".'
                    raise unittest.SkipTest("capturing on lo is not permitted: " + why[0].strip())
                raise AssertionError(f"dumpcap failed: {dumpcap.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dumpcap did not start: {dumpcap.describe()}")
            time.sleep(0.02)
        return dumpcap

    def stop_capture(self, dumpcap):
        """Waits until the file stops growing (the last FIN and ACK are written), then stops
        dumpcap with SIGINT, which closes the file cleanly."""
        deadline = time.monotonic() + TIMEOUT
        size, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = os.path.getsize(self.pcap)
            if now_size != size:
                size, stable_since = now_size, time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                break
            time.sleep(0.05)
        dumpcap.signal(signal.SIGINT)
        if dumpcap.wait(TIMEOUT) != 0 or b"Packets captured: " not in dumpcap.err:
            raise AssertionError(f"dumpcap did not stop cleanly: {dumpcap.describe()}")

    def run(self):
        server = self.spawn([*DEMO_SERVER, HOST, 0, "chat.log"], label="demo_server")
        self.port = int(server.wait_for(LISTENING_DEMO).group(1))
        dumpcap = self.start_capture()

        alice = self.connect("alice")
        alice.sendall(frame("alice"))
        self.expect("alice", alice, "server", "welcome, alice! 0 other users online")
        bob = self.connect("bob")
        bob.sendall(frame("bob") + frame("hi alice"))  # the username and a message, one write
        self.expect("bob", bob, "server", "welcome, bob! 1 other user online")
        self.expect("alice", alice, "server", "bob joined")
        self.expect("alice", alice, "bob", "hi alice")

        data = frame(SPLIT_TEXT)
        cut = 10 + len(SPLIT_TEXT.encode()) // 2
        alice.sendall(data[:cut])
        time.sleep(0.05)  # TCP_NODELAY: the first half is on the wire, alone, by now
        alice.sendall(data[cut:])
        # An empty frame (the server ignores it, the dissector shows it), split in its header.
        alice.sendall(b"0    ")
        time.sleep(0.05)
        alice.sendall(b"     ")
        self.expect("bob", bob, "alice", SPLIT_TEXT)

        # A username split in two, its second half sharing a segment with a message: TCP
        # hands the dissector the reassembled username, then the rest of that segment.
        mallory = self.connect("mallory")
        mallory.sendall(frame("mallory")[:13])
        time.sleep(0.05)
        mallory.sendall(frame("mallory")[13:] + frame("hello all"))
        self.expect("mallory", mallory, "server", "welcome, mallory! 2 other users online")
        for name, sock in (("alice", alice), ("bob", bob)):
            self.expect(name, sock, "server", "mallory joined")
            self.expect(name, sock, "mallory", "hello all")
        mallory.sendall(BAD_HEADER + b"hello")
        self.expect("mallory", mallory, "server", 'protocol error: bad frame header "+5        "')
        self.close_politely("mallory", mallory)
        self.expect("alice", alice, "server", "mallory left (protocol error")
        self.expect("bob", bob, "server", "mallory left (protocol error")

        self.close_politely("bob", bob)
        self.expect("alice", alice, "server", "bob left")
        self.close_politely("alice", alice)
        self.stop_capture(dumpcap)
        server.signal(signal.SIGINT)
        server.wait(TIMEOUT)


def tshark(pcap, *options):
    """tshark with the dissector over the capture; returns its PDML output."""
    run = subprocess.run([TSHARK, "-n", "-r", pcap, "-X", f"lua_script:{DISSECTOR}", *options,
                          "-T", "pdml"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=DECODE_TIMEOUT)
    err = run.stderr.decode(errors="replace")
    if run.returncode != 0 or "lua" in err.lower() or "error" in err.lower():
        raise AssertionError(f"tshark {options} failed (exit {run.returncode}):\n{err}")
    if b"Lua Error" in run.stdout:
        raise AssertionError("the dissector raised a Lua error:\n"
                             + run.stdout.decode(errors="replace"))
    return run.stdout


def chatsock_frames(pdml):
    """Every chatsock frame tshark shows, in order: a dict with the packet's number, its TCP
    stream, how many segments the packet's reassembled bytes came from (1: none reassembled),
    and the chatsock fields by name ("length", "kind", ...; expert messages under "experts")."""
    frames = []
    for packet in ET.fromstring(pdml).iter("packet"):
        fields = {f.get("name"): f.get("show") for f in packet.iter("field")}
        for proto in packet.findall("proto[@name='chatsock']"):
            record = {"packet": int(fields["frame.number"]), "stream": int(fields["tcp.stream"]),
                      "segments": int(fields.get("tcp.segment.count", "1")), "experts": []}
            for field in proto.iter("field"):
                name = field.get("name")
                if name == "chatsock.notice":  # a boolean: "1" or "0"
                    record["notice"] = field.get("show") == "1"
                elif name.startswith("chatsock."):
                    record[name[len("chatsock."):]] = field.get("show")
                elif name == "_ws.expert.message":
                    record["experts"].append(field.get("show"))
                elif name == "_ws.expert.severity":  # "Severity level: Error"
                    record["severity"] = field.get("showname").split(": ", 1)[-1]
            frames.append(record)
    return frames


HAVE_TOOLS = TSHARK and DUMPCAP
_shared = {}  # the capture (or why there is none), made by the first test that needs it


def setUpModule():
    if HAVE_TOOLS:
        build_demos()


def tearDownModule():
    if "tmp" in _shared:
        _shared["tmp"].cleanup()


@unittest.skipUnless(HAVE_TOOLS, "tshark not installed (Debian: apt-get install tshark)")
class Dissector(unittest.TestCase):
    def setUp(self):
        if "error" not in _shared and "frames" not in _shared:
            self._capture()
        if "error" in _shared:
            raise _shared["error"]
        self.cap = _shared["capture"]
        self.frames = _shared["frames"]

    @staticmethod
    def _capture():
        _shared["tmp"] = tempfile.TemporaryDirectory(prefix="chatsock-wireshark-")
        cap = _shared["capture"] = Capture(_shared["tmp"].name)
        try:
            cap.run()
            _shared["frames"] = chatsock_frames(tshark(cap.pcap, "-o", f"chatsock.port:{cap.port}"))
        except Exception as e:  # noqa: BLE001 - a skip or a failure, the same for every test
            _shared["error"] = e
        finally:
            cap.close()

    def direction(self, direction, kind=None):
        """The decoded frames (not the protocol errors) in one direction, of one kind or all."""
        return [f for f in self.frames if f["direction"] == direction and "kind" in f
                and (kind is None or f["kind"] == kind)]

    def stream_of(self, name):
        [username] = [f for f in self.direction("client-to-server", "username")
                      if f["username"] == name]
        return username["stream"]

    def test_usernames_and_messages(self):
        c2s = self.direction("client-to-server")
        got = [(f["kind"], f.get("username", f.get("text"))) for f in c2s]
        self.assertEqual(sorted(got), sorted([
            ("username", "alice"), ("username", "bob"), ("username", "mallory"),
            ("message", "hi alice"), ("message", SPLIT_TEXT), ("message", ""),
            ("message", "hello all")]), c2s)
        for f in c2s:
            self.assertEqual(int(f["length"]), len(f.get("payload", "").encode()), f)
        # bob's username and first message came in one segment: one packet, two frames
        bob = [f for f in c2s if f["stream"] == self.stream_of("bob")]
        self.assertEqual([f["kind"] for f in bob], ["username", "message"])
        self.assertEqual(bob[0]["packet"], bob[1]["packet"])
        # mallory's username was split; its end and her message came in one segment
        mallory = [f for f in c2s if f["stream"] == self.stream_of("mallory")]
        self.assertEqual([f["kind"] for f in mallory], ["username", "message"])
        self.assertEqual(mallory[0]["packet"], mallory[1]["packet"])
        self.assertEqual(mallory[0]["segments"], 2, "the packet completes a reassembled frame")

    def test_pairs_and_notices(self):
        s2c = self.direction("server-to-client")
        for name, read in self.cap.read.items():
            frames = [f for f in s2c if f["stream"] == self.stream_of(name)]
            self.assertEqual([f["kind"] for f in frames], ["sender", "text"] * len(read), name)
            senders, texts = frames[0::2], frames[1::2]
            self.assertEqual([(s["sender"], t["sender"], t["text"])
                              for s, t in zip(senders, texts)],
                             [(sender, sender, text) for sender, text in read], name)
            for f in frames:
                self.assertIs(f["notice"], f["sender"] == "server", f)
                self.assertEqual(int(f["length"]), len(f["payload"].encode()), f)
        notices = [f["text"] for f in s2c if f["kind"] == "text" and f["notice"]]
        self.assertIn("bob left", notices)
        self.assertIn("hi alice", [f["text"] for f in s2c if f["kind"] == "text"
                                   and not f["notice"] and f["sender"] == "bob"])

    def test_split_frame_is_reassembled(self):
        split = [f for f in self.frames if f.get("text") == SPLIT_TEXT]
        c2s = [f for f in split if f["direction"] == "client-to-server"]
        self.assertEqual(len(c2s), 1, split)
        self.assertEqual(c2s[0]["segments"], 2, "the frame was sent in two TCP segments")
        self.assertEqual(int(c2s[0]["length"]), len(SPLIT_TEXT.encode()))
        # the empty frame, split in its header
        [empty] = [f for f in self.direction("client-to-server", "message") if f["length"] == "0"]
        self.assertEqual(empty["segments"], 2, "the empty frame's header came in two segments")
        # and the server relayed it to bob, whole
        self.assertEqual([f["sender"] for f in split if f["direction"] == "server-to-client"],
                         ["alice"])

    def test_bad_header_is_an_expert_error(self):
        errors = [f for f in self.frames if f["experts"]]
        self.assertEqual(len(errors), 1, errors)
        self.assertEqual(errors[0]["stream"], self.stream_of("mallory"))
        self.assertEqual(errors[0]["direction"], "client-to-server")
        self.assertEqual(errors[0]["experts"], [f'bad frame header "{BAD_HEADER.decode()}"'])
        self.assertEqual(errors[0]["severity"], "Error")
        self.assertNotIn("kind", errors[0], "a bad header is no frame")
        # the server's answer, on the other side of the same connection
        [notice] = [f for f in self.direction("server-to-client", "text")
                    if f["stream"] == errors[0]["stream"] and "protocol error" in f["text"]]
        self.assertEqual(notice["text"],
                         f'protocol error: bad frame header "{BAD_HEADER.decode()}"')
        self.assertIs(notice["notice"], True)

    def test_one_pass_and_two_passes_agree(self):
        two = chatsock_frames(tshark(self.cap.pcap, "-2", "-o", f"chatsock.port:{self.cap.port}"))
        self.assertEqual(two, self.frames)

    def test_port_is_a_preference(self):
        if self.cap.port == 1234:
            self.skipTest("the server's ephemeral port happens to be the default, 1234")
        self.assertEqual(chatsock_frames(tshark(self.cap.pcap)), [])
        # With -o the dissector moves: on the new port, and no longer on the default one.
        probe = os.path.join(self.cap.dir, "probe.lua")
        with open(probe, "w") as f:
            f.write(PORT_PROBE.replace("{ports}", f"{{ 1234, {self.cap.port} }}"))
        run = subprocess.run([TSHARK, "-n", "-r", self.cap.pcap, "-c", "1",
                              "-X", f"lua_script:{DISSECTOR}", "-X", f"lua_script:{probe}",
                              "-o", f"chatsock.port:{self.cap.port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=DECODE_TIMEOUT)
        out = run.stdout.decode(errors="replace")
        self.assertIn(f"port {self.cap.port}: CHATSOCK\n", out)
        self.assertNotIn("port 1234: CHATSOCK", out)


# A second Lua script for test_port_is_a_preference: which dissector holds which TCP port once
# a file is opened (after -o has been applied). {ports} is a Lua list.
PORT_PROBE = """
local probe = Proto("chatsock_probe", "chatsock_probe")
function probe.dissector() end
register_postdissector(probe)
function probe.init()
    for _, port in ipairs({ports}) do
        local dissector = DissectorTable.get("tcp.port"):get_dissector(port)
        print("port " .. port .. ": " .. tostring(dissector))
    end
end
"""


if __name__ == "__main__":
    main(__name__, {"server": DEMO_SERVER, "tshark": [TSHARK or "tshark (not installed)"]})
