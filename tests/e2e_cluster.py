#!/usr/bin/env python3
"""End-to-end tests of the cluster add-on: three nats-server processes routed into one NATS
cluster (JetStream on, stores in the test's temporary folder, ephemeral ports on 127.0.0.1),
one demo_cluster_server attached to each, framed clients on every node. Ends with
"RESULT passed=N failed=M"; skipped where nats-server or libnats is not installed.

    python3 tests/e2e_cluster.py          (builds demo_cluster_server with make cluster)

`make test` runs it through tests/run.sh, after building demo_cluster_server (its `cluster`
prerequisite); .ci/run installs nats-server and libnats-dev, so CI runs every test here.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DEVNULL, HOST, ROOT, TIMEOUT, ChatTestCase, frame, free_port, main,  # noqa: E402
                     recv_frame, recv_until_closed)

# ctest passes the CMake build's folder (CHATSOCK_BIN_DIR): the node is taken from there, never
# built, and the tests are skipped when CMake found no libnats. Otherwise: make cluster.
BIN_DIR = os.environ.get("CHATSOCK_BIN_DIR")
NODE_SERVER = os.path.join(BIN_DIR or ROOT, "demo_cluster_server")
NATS_SERVER = shutil.which("nats-server")
HAVE_LIBNATS = os.path.exists("/usr/include/nats/nats.h")
CLUSTER_UP = 30.0  # JetStream elects its leaders: the slowest start, on a loaded machine
NODE_LOST = 5.0 + 1.0  # ClusterOptions: node_lost_after, plus a heartbeat
NAME_TTL = 15.0  # ClusterOptions: name_ttl, the bound on a dead node's names
# make sanitize / make tsan run the nodes built with sanitizers (CHATSOCK_SANITIZED=1): each test
# then ends by stopping its nodes as a user would (SIGTERM), so the checks made at exit (leaks,
# a destructor racing libnats' threads) run too, and wants exit status 0 from each.
SANITIZED = bool(os.environ.get("CHATSOCK_SANITIZED"))
SANITIZER_REPORT = re.compile(rb"^==\d+==ERROR: |^WARNING: ThreadSanitizer|^SUMMARY: \w+Sanitizer| runtime error: ", re.M)


def _missing():
    """Why the cluster tests cannot run here (None: they can). Each test is then skipped, saying
    so: a machine without NATS counts them as neither passed nor failed."""
    if not NATS_SERVER or not HAVE_LIBNATS:
        return "needs nats-server and libnats-dev (apt-get install nats-server libnats-dev)"
    if BIN_DIR and not os.access(NODE_SERVER, os.X_OK):
        return f"{NODE_SERVER} was not built (CMake found no libnats)"
    return None


MISSING = _missing()


def setUpModule():
    if MISSING or BIN_DIR:
        return  # nothing to build
    run = subprocess.run(["make", "-s", "cluster"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=600)
    if run.returncode != 0 or not os.path.exists(NODE_SERVER):
        raise RuntimeError("make cluster failed:\n" + run.stdout.decode(errors="replace"))


class Reader(threading.Thread):
    """A framed client: joins as `name`, then collects the (sender, text) pairs it receives."""

    def __init__(self, test, port, name):
        super().__init__(daemon=True)
        self.name, self.test = name, test
        self.sock = test.raw_connect(port, name)
        self.pairs, self.times, self.closed = [], [], False  # times: when each pair came
        self.cond = threading.Condition()
        self.start()

    def run(self):
        try:
            while True:
                _, sender = recv_frame(self.sock, timeout=3600)
                _, text = recv_frame(self.sock, timeout=3600)
                with self.cond:
                    self.pairs.append((sender.decode(), text.decode()))
                    self.times.append(time.monotonic())
                    self.cond.notify_all()
        except (AssertionError, OSError):
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def send(self, text):
        self.sock.sendall(frame(text))

    def wait(self, predicate, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.pairs):
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"{self.name}: {what} not seen within {timeout}s: {self.pairs}\n"
                                         + self.test.describe_nodes())
                self.cond.wait(min(left, 0.5))

    def wait_notice(self, text, timeout=TIMEOUT, prefix=False):
        self.wait(lambda pairs: any(s == "server" and (t.startswith(text) if prefix else t == text)
                                    for s, t in pairs), repr(text), timeout)

    def messages(self):
        with self.cond:
            return [(s, t) for s, t in self.pairs if s != "server"]


def nats_publish(port, subject, payloads):
    """Publishes raw payloads on a NATS server through its text protocol, as any client of the
    bus could, and waits for the server to have taken them (PING, PONG)."""
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"INFO ")
        out = b'CONNECT {"verbose":false,"pedantic":false}\r\n'
        for p in payloads:
            out += f"PUB {subject} {len(p)}\r\n".encode() + p + b"\r\n"
        s.sendall(out + b"PING\r\n")
        assert f.readline() == b"PONG\r\n"


def event(*fields):
    """An event in the bus encoding (cluster/cluster_wire.hpp)."""
    out = b"CS1"
    for field in fields:
        field = field.encode() if isinstance(field, str) else field
        out += b" %d:" % len(field) + field
    return out


@unittest.skipIf(MISSING, MISSING)
class ClusterTestCase(ChatTestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(self.check_nodes)  # cleanups run last-in first-out: before the reaping

    def check_nodes(self):
        """Fails the test when a node's stderr has a sanitizer's report (AddressSanitizer,
        LeakSanitizer, UndefinedBehaviorSanitizer, ThreadSanitizer), wherever the test stood.
        SANITIZED: the nodes still running are stopped first (SIGTERM, all at once), and each
        must exit 0; the harness would kill them (SIGKILL), and nothing is checked at exit."""
        nodes = [p for p in self.procs if p.args[0] == NODE_SERVER]
        running = [p for p in nodes if p.p.poll() is None] if SANITIZED else []
        for p in running:
            p.signal(signal.SIGTERM)
        problems = []
        for p in running:
            try:
                status = p.wait(timeout=4 * TIMEOUT)
            except AssertionError as e:
                problems.append(f"not stopped by SIGTERM: {e}")
                continue
            if status != 0:
                problems.append(f"exit status {status} after SIGTERM: {p.describe()}")
        problems += [f"a sanitizer's report: {p.label} {p.args[1:]}\n{p.err.decode(errors='replace')}"
                     for p in nodes if SANITIZER_REPORT.search(p.err)]
        if problems:
            self.fail("\n".join(problems))

    def start_nats(self, label, port=None, extra=()):
        port = port or free_port()
        n = self.spawn([NATS_SERVER, "-a", HOST, "-p", port, "-n", label, "-js", "-sd", self.path(label), *extra],
                       stdin=DEVNULL, label=label)
        n.wait_for("Server is ready", stream="err")
        return n, port

    def start_node(self, node, urls, env=None, flags=()):
        p = self.spawn([NODE_SERVER, *flags, HOST, 0, f"{node}.log", urls, node], stdin=DEVNULL,
                       label=f"node[{node}]", env=env)
        port = int(p.wait_for(re.compile(rb"listening on 127\.0\.0\.1:(\d+)")).group(1))
        self.nodes[node] = p
        return port

    def start_cluster(self, nodes=("a", "b", "c"), env=None, flags=()):
        """Three routed nats-servers and one chatsock node on each, which lists its own first and
        then the others (env, flags: for the nodes); returns {node: port}."""
        client_ports = [free_port() for _ in nodes]
        route_ports = [free_port() for _ in nodes]
        routes = ",".join(f"nats://{HOST}:{p}" for p in route_ports)
        self.nats, self.nats_ports = [], client_ports
        for i, node in enumerate(nodes):
            self.nats.append(self.start_nats(f"nats-{node}", client_ports[i], [
                "--cluster_name", "chatsock", "--cluster", f"nats://{HOST}:{route_ports[i]}", "--routes", routes])[0])
        self.nodes, ports = {}, {}
        for i, node in enumerate(nodes):
            ports[node] = self.start_node(node, ",".join(f"nats://{HOST}:{client_ports[(i + k) % len(nodes)]}"
                                                         for k in range(len(nodes))), env, flags)
        for node, p in self.nodes.items():
            p.wait_for("is ready", timeout=CLUSTER_UP)  # the names bucket
            for other in nodes:
                if other != node:
                    p.wait_for(f"node {other} is in the cluster", timeout=CLUSTER_UP)
        return ports

    def describe_nodes(self):
        """What every node printed: its diagnostics say what it dropped or missed."""
        return "\n".join(p.describe() for p in getattr(self, "nodes", {}).values())

    def wait_log(self, node, line, timeout=TIMEOUT):
        """Waits until node's conversation log has a line ending with `line` (tab-separated
        kind, who, text after the timestamp)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.path(f"{node}.log"), encoding="utf-8") as f:
                    if any(l.rstrip("\n").split("\t", 1)[-1] == line for l in f):
                        return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{line!r} not in {node}.log within {timeout}s")
            time.sleep(0.1)

    def join(self, port, name):
        c = Reader(self, port, name)
        c.wait(lambda pairs: any(s == "server" and t.startswith(f"welcome, {name}!") for s, t in pairs), "welcome")
        return c

    def wait_who(self, client, names, timeout=TIMEOUT):
        """Waits until /who on client's node lists every one of `names`: that node knows them.
        (Waiting for "x joined" instead would race: x's join can reach a node before the
        client is in, and then the client never hears it.)"""
        deadline = time.monotonic() + timeout
        while True:
            before = len(client.pairs)
            client.send("/who")
            client.wait(lambda pairs: any(s == "server" and " online" in t for s, t in pairs[before:]), "/who's answer")
            with client.cond:
                answer = next(t for s, t in client.pairs[before:] if s == "server" and " online" in t)
            if set(names) <= set(answer.partition(": ")[2].split(", ")):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{client.name}: /who lists {answer!r}, not all of {names}\n"
                                     + self.describe_nodes())
            time.sleep(0.1)


class Room(ClusterTestCase):
    def test_messages_reach_every_other_client_once_in_order(self):
        ports = self.start_cluster()
        clients = {}
        for node, names in (("a", ["a1", "a2"]), ("b", ["b1"]), ("c", ["c1"])):
            for name in names:
                clients[name] = self.join(ports[node], name)
        order = list(clients)
        for i, name in enumerate(order):  # each hears of those who came after it, wherever
            for later in order[i + 1:]:
                clients[name].wait_notice(f"{later} joined")
        count = 20
        for i in range(count):
            for name, c in clients.items():
                c.send(f"{name} says {i}")
        for name, c in clients.items():
            expected = sum(count for other in clients if other != name)
            c.wait(lambda pairs: len([p for p in pairs if p[0] != "server"]) >= expected,
                   f"{expected} messages", timeout=2 * TIMEOUT)
        time.sleep(0.5)  # a duplicate would arrive about now
        for name, c in clients.items():
            got = c.messages()
            for other in clients:
                from_other = [t for s, t in got if s == other]
                self.assertEqual(from_other, [] if other == name else [f"{other} says {i}" for i in range(count)],
                                 f"{name} from {other}")

    def test_a_newcomer_is_welcomed_to_the_whole_room(self):
        """The welcome counts every node's users, and the history holds every node's messages."""
        ports = self.start_cluster()
        a1, b1, c0 = self.join(ports["a"], "a1"), self.join(ports["b"], "b1"), self.join(ports["c"], "c0")
        self.wait_who(c0, ["a1", "b1", "c0"])
        for sender, text in ((a1, "hello from a"), (b1, "hello from b")):  # in this order at c
            sender.send(text)
            c0.wait(lambda pairs: any(t == text for _, t in pairs), text)
        c0.send("hello from c")
        b1.wait(lambda pairs: ("c0", "hello from c") in pairs, "c0's message")
        c1 = self.join(ports["c"], "c1")
        c1.wait(lambda pairs: len([t for s, t in pairs if s == "server" and "] " in t]) >= 3, "the history")
        time.sleep(0.2)
        notices = [t for s, t in c1.pairs if s == "server"]
        self.assertEqual(notices[0], "welcome, c1! 3 other users online")
        self.assertEqual([t.partition("] ")[2] for t in notices[1:4]],
                         ["a1: hello from a", "b1: hello from b", "c0: hello from c"])

    def test_a_leave_reaches_the_other_nodes(self):
        ports = self.start_cluster()
        a1, b1 = self.join(ports["a"], "a1"), self.join(ports["b"], "b1")
        self.wait_who(b1, ["a1", "b1"])
        a1.sock.shutdown(socket.SHUT_RDWR)  # close() alone sends nothing while a1's reader waits on it
        b1.wait_notice("a1 left", prefix=True)  # with the reason a1's node gives
        self.join(ports["a"], "a2")
        b1.wait_notice("a2 joined")
        self.nodes["a"].signal(signal.SIGTERM)  # a clean stop: its users leave, then it exits
        b1.wait_notice("a2 left (server stopping)")
        self.assertEqual(self.nodes["a"].wait(), 0, self.nodes["a"].describe())


class FloodControl(ClusterTestCase):
    def test_no_flood_control_turns_it_off(self):
        """demo_cluster_server --no-flood-control, as demo_server's (bench/cluster.sh runs the
        nodes so): 3,000 messages at once are read without a hold, so no "slow down" notice
        (with flood control on, 500 a second with a second's burst, they would be held 5 s)."""
        ports = self.start_cluster(("a", "b"), flags=["--no-flood-control"])
        fast, reader = self.join(ports["a"], "fast"), self.join(ports["b"], "reader")
        fast.wait_notice("reader joined")
        fast.sock.sendall(b"".join(frame(f"f{i}") for i in range(3000)))
        reader.wait(lambda pairs: ("fast", "f2999") in pairs, "all 3000", timeout=2 * TIMEOUT)
        self.assertEqual(reader.messages(), [("fast", f"f{i}") for i in range(3000)])
        time.sleep(0.5)
        self.assertFalse(any(s == "server" and t.startswith("slow down") for s, t in fast.pairs), fast.pairs)


class Names(ClusterTestCase):
    def test_a_name_taken_on_one_node_is_refused_on_another(self):
        ports = self.start_cluster()
        alice = self.join(ports["a"], "alice")
        other = self.join(ports["b"], "bob")
        self.wait_who(other, ["alice", "bob"])
        s = self.raw_connect(ports["b"], "ALICE")
        data = recv_until_closed(s)
        self.assertIn(b'name refused: the name "ALICE" is taken', data)
        time.sleep(0.3)
        self.assertNotIn(("server", "ALICE joined"), alice.pairs, "never announced on the node that holds it")
        self.assertFalse(alice.closed)

    def test_the_same_name_at_the_same_moment_on_two_nodes_goes_to_one(self):
        ports = self.start_cluster()
        first, second = self.raw_connect(ports["a"], "zed"), self.raw_connect(ports["b"], "zed")
        watcher = self.join(ports["c"], "watcher")
        watcher.wait_notice("zed joined")
        outcomes = []
        for s in (first, second):
            s.settimeout(2.0)
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        outcomes.append(("closed", data))
                        break
                    data += chunk
            except OSError:
                outcomes.append(("open", data))
        self.assertEqual(sorted(o for o, _ in outcomes), ["closed", "open"], outcomes)
        refused = next(d for o, d in outcomes if o == "closed")
        self.assertIn(b'name refused: the name "zed" is taken', refused)


class Commands(ClusterTestCase):
    """enable_commands is on in the demo, and ClusterOptions::commands: /msg, /me, /who and
    /nick reach users of every node."""

    def start_room(self):
        ports = self.start_cluster()
        alice, bob, carol = (self.join(ports[n], name) for n, name in (("a", "alice"), ("b", "bob"), ("c", "carol")))
        alice.wait_notice("carol joined")
        bob.wait_notice("carol joined")
        return ports, alice, bob, carol

    def test_msg_me_and_who_reach_other_nodes(self):
        ports, alice, bob, carol = self.start_room()
        alice.send("/msg BOB hello there")
        bob.wait_notice("private from alice: hello there")
        alice.wait_notice("private to bob: hello there")
        alice.send("/msg nobody hi")
        alice.wait_notice('no user named "nobody"')
        bob.send("/me waves")
        alice.wait_notice("bob waves")
        carol.wait_notice("bob waves")
        carol.send("/who")
        carol.wait_notice("3 online: alice, bob, carol")
        alice.send("/msg alice to myself")  # a local user: the core's /msg, as ever
        alice.wait_notice("private from alice: to myself")
        time.sleep(0.3)
        self.assertFalse(any("hello there" in t for _, t in carol.pairs), "only bob hears it")
        self.assertNotIn(("server", "bob waves"), bob.pairs, "an action is not echoed")
        self.assertEqual(alice.messages() + bob.messages() + carol.messages(), [], "commands are not relayed")
        self.wait_log("a", "private\talice\tto bob: hello there")  # the sender's node
        self.wait_log("b", "remote-private\talice@a\tto bob: hello there")  # the receiver's
        self.wait_log("b", "action\tbob\twaves")
        self.wait_log("a", "remote-action\tbob@b\twaves")

    def test_nick_is_claimed_across_the_cluster(self):
        ports, alice, bob, carol = self.start_room()
        bob.send("/nick carol")
        bob.wait_notice('name refused: the name "carol" is taken')  # carol is node c's
        bob.send("/nick CAROL")
        bob.wait(lambda pairs: pairs.count(("server", 'name refused: the name "CAROL" is taken')) == 1, "refused")
        alice.send("/nick ada")
        alice.send("first as ada")  # held until the claim is settled: after the announcement
        for c in (alice, bob, carol):
            c.wait_notice("alice is now known as ada")
        for c in (bob, carol):
            c.wait(lambda pairs: ("ada", "first as ada") in pairs, "the message under the new name")
            got = [p for p in c.pairs if p in (("server", "alice is now known as ada"), ("ada", "first as ada"))]
            self.assertEqual(got[0], ("server", "alice is now known as ada"), f"{c.name}: in order")
        bob.send("/msg ADA hi ada")
        alice.wait_notice("private from bob: hi ada")
        carol.send("/who")
        carol.wait_notice("3 online: ada, bob, carol")
        self.wait_log("a", "nick\talice\tada")
        self.wait_log("b", "nick\talice\tnode a: ada")
        # the old name is free again, on any node
        deadline = time.monotonic() + TIMEOUT
        while True:
            s = self.raw_connect(ports["c"], "alice")
            try:
                refused = b"name refused" in recv_until_closed(s, timeout=1.0)
            except AssertionError:
                refused = False  # still open: its claim held
            s.close()
            if not refused:
                break
            self.assertLess(time.monotonic(), deadline, "alice's name is still held")
        carol.send("/msg ada still you")
        alice.wait_notice("private from carol: still you")

    def test_the_same_nick_at_the_same_moment_on_two_nodes_goes_to_one(self):
        ports, alice, bob, carol = self.start_room()
        bob.send("/nick zed")
        carol.send("/nick zed")
        renamed = ("server", "bob is now known as zed"), ("server", "carol is now known as zed")
        refused = ("server", 'name refused: the name "zed" is taken')
        bob.wait(lambda pairs: refused in pairs or renamed[0] in pairs, "bob's answer")
        carol.wait(lambda pairs: refused in pairs or renamed[1] in pairs, "carol's answer")
        winner = 0 if renamed[0] in bob.pairs else 1
        loser = (bob, carol)[1 - winner]
        self.assertIn(refused, loser.pairs)
        alice.wait_notice(renamed[winner][1])
        time.sleep(0.5)
        for c in (alice, bob, carol):
            self.assertNotIn(renamed[1 - winner], c.pairs)
            self.assertEqual(sum(p in renamed for p in c.pairs), 1, c.name)


class BadInput(ClusterTestCase):
    def test_malformed_oversized_and_forged_events_are_logged_and_dropped(self):
        ports = self.start_cluster(("a", "b"))
        a1, b1 = self.join(ports["a"], "a1"), self.join(ports["b"], "b1")
        self.wait_who(b1, ["a1", "b1"])
        nats_publish(self.nats_ports[1], "chatsock.lobby.events", [
            b"hello",                                               # not an event
            b"CS1 4:evil",                                          # too few fields
            b"CS1 99:evil",                                         # a length past the end
            event("evil", "0123abcd", "1", "msg", "a1", "I am a1"),  # a1 is node a's
            event("evil", "0123abcd", "2", "shout", "x"),            # no such kind
            b"CS1 " + b"x" * (300 << 10),                           # over the size limit
            event("evil", "0123abcd", "3", "msg", "mallory", "hi"),  # a new user: fine
        ])
        b1.wait(lambda pairs: ("mallory", "hi") in pairs, "the well-formed event")
        node_b = self.nodes["b"]
        node_b.wait_for("dropped a malformed event of 5 bytes")
        node_b.wait_for("dropped a malformed event of 10 bytes")
        node_b.wait_for("dropped a malformed event of 11 bytes")
        node_b.wait_for('dropped node evil claims "a1", a user of node a')
        node_b.wait_for("dropped an event of unknown kind or size from node evil")
        node_b.wait_for(re.compile(rb"dropped an event of 30720\d bytes \(the limit is 262144\)"))
        self.assertEqual(b1.messages(), [("mallory", "hi")], "only the well-formed event is relayed")
        self.assertNotIn(("a1", "I am a1"), a1.pairs)


class NatsLoss(ClusterTestCase):
    """Node a's nats-server is lost while a1 (node a) and b1 (node b) each send a message every
    10 ms: node a moves to the next URL in its list, and nothing is lost either way, nor
    delivered twice, nor out of order. The names bucket has 3 replicas (CHATSOCK_NATS_REPLICAS),
    so it outlives the server."""

    def test_kill_9_of_a_nats_server(self):
        """The server's sockets close with it: node a notices at once; what it publishes until
        it is connected again waits in libnats' reconnect buffer."""
        self.lose_a_nats_server(signal.SIGKILL, "kill -9")

    def test_a_nats_server_that_stops_answering(self):
        """SIGSTOP: the connection stays open and silent, as when a machine or its network is
        lost. Node a notices by its pings (ping_interval 1 s, max_pings_out 2); what it sent
        into the silent connection meanwhile, and what it missed, is asked for again (resend)."""
        self.lose_a_nats_server(signal.SIGSTOP, "kill -STOP")

    def lose_a_nats_server(self, sig, what):
        ports = self.start_cluster(env={"CHATSOCK_NATS_REPLICAS": "3"})
        a1, b1, c1 = (self.join(ports[n], f"{n}1") for n in "abc")
        for c in (a1, b1):
            c.wait_notice("c1 joined")
        sent = {"a1": [], "b1": []}  # name -> [(text, time sent)]
        stop = threading.Event()

        def sender(client):
            for i in range(100000):
                if stop.is_set():
                    return
                sent[client.name].append((f"{client.name} {i}", time.monotonic()))
                client.send(f"{client.name} {i}")
                time.sleep(0.01)
        threads = [threading.Thread(target=sender, args=(c,), daemon=True) for c in (a1, b1)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        lost_at = time.monotonic()
        self.nats[0].signal(sig)
        m = self.nodes["a"].wait_for(re.compile(
            rb"connected to NATS at nats://127\.0\.0\.1:%d([^\n]*)" % self.nats_ports[1]), timeout=2 * TIMEOUT)
        switched = time.monotonic() - lost_at
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=TIMEOUT)

        def received(reader, sender_name):
            with reader.cond:
                return [(t, when) for (s, t), when in zip(reader.pairs, reader.times) if s == sender_name]
        for reader, sender_name in ((b1, "a1"), (c1, "a1"), (a1, "b1")):  # everything, or the deadline
            try:
                reader.wait(lambda pairs: sum(s == sender_name for s, _ in pairs) >= len(sent[sender_name]),
                            f"{sender_name}'s messages", timeout=2 * TIMEOUT)
            except AssertionError:
                pass
        time.sleep(0.5)  # a duplicate would arrive about now
        for reader, sender_name in ((b1, "a1"), (c1, "a1"), (a1, "b1")):
            texts = [t for t, _ in sent[sender_name]]
            got = [t for t, _ in received(reader, sender_name)]
            self.assertEqual(got, [t for t in texts if t in got], f"{reader.name}: in order, once")
            self.assertEqual(len(got), len(texts), f"{reader.name}: lost {[t for t in texts if t not in got]}\n"
                             + self.describe_nodes())
        sent_after = {t for t, when in sent["a1"] if when >= lost_at}
        arrivals = received(b1, "a1")
        first = min(when for t, when in arrivals if t in sent_after) - lost_at
        silence = max(later - earlier for (_, earlier), (_, later) in zip(arrivals, arrivals[1:]))
        resent = [l.split(": ", 1)[1] for p in self.nodes.values() for l in p.lines() if "missed our events" in l]
        print(f"  {what} of node a's nats-server: node a on the next URL after {switched:.2f} s"
              f"{m.group(1).decode()}; a1 and b1 sent {len(sent['a1'])} and {len(sent['b1'])}: none lost,"
              f" none twice; a1's first sent after the loss reached b1 {first:.2f} s after it; longest"
              f" silence at b1 {silence:.2f} s; resends: {resent or 'none'}", flush=True)
        a2 = self.join(ports["a"], "a2")  # the names bucket outlived its server
        b1.wait_notice("a2 joined", timeout=CLUSTER_UP)
        s = self.raw_connect(ports["a"], "b1")
        self.assertIn(b'name refused: the name "b1" is taken', recv_until_closed(s, timeout=CLUSTER_UP))
        a2.send("after")
        c1.wait(lambda pairs: ("a2", "after") in pairs, "a message after the switch-over")


class Resends(ClusterTestCase):
    def test_events_after_a_gap_wait_for_the_missing_ones_then_go_on(self):
        """A receiver holds what follows a gap in a node's numbers and asks that node to
        publish the missing events again (resend); they are applied in order, or given up
        after resend_wait. A node asked for its own events publishes those it keeps."""
        ports = self.start_cluster(("a", "b"))
        b1 = self.join(ports["b"], "b1")
        boot = "0123abcd"
        sent = time.monotonic()
        nats_publish(self.nats_ports[1], "chatsock.lobby.events", [
            event("evil", boot, "1", "msg", "mallory", "one"),
            event("evil", boot, "3", "msg", "mallory", "three"),  # 2 is missing: held
        ])
        b1.wait(lambda pairs: ("mallory", "one") in pairs, "the first event")
        self.nodes["b"].wait_for("missed 1 events from node evil", timeout=2 + TIMEOUT)  # never came
        print(f"  a gap never filled: given up after {time.monotonic() - sent:.1f} s", flush=True)
        b1.wait(lambda pairs: ("mallory", "three") in pairs, "the event after the gap")
        nats_publish(self.nats_ports[1], "chatsock.lobby.events", [
            event("evil", boot, "5", "msg", "mallory", "five"),  # 4 is late, not lost
            event("evil", boot, "4", "msg", "mallory", "four"),
            event("evil", boot, "4", "msg", "mallory", "four"),  # a duplicate
            event("evil", boot, "5", "msg", "mallory", "five"),  # one of the last applied
            event("evil", boot, "6", "resend", "a", "1", "3"),   # node a's first three again
            event("evil", boot, "7", "msg", "mallory", "seven"),  # b1 hears it after all those
        ])
        b1.wait(lambda pairs: ("mallory", "seven") in pairs, "the events after the late one")
        texts = ("one", "three", "four", "five", "seven")
        self.assertEqual(b1.messages(), [("mallory", t) for t in texts], "in order, each once")
        self.nodes["a"].wait_for("node evil missed our events 1-3: resent")
        self.assertEqual(b1.pairs.count(("server", "mallory joined")), 1, "resent events are duplicates to b")

    def test_a_leave_missed_for_good_is_made_up_by_the_next_roster(self):
        """A node's roster ends with roster-end: a receiver that missed a leave for good (beyond
        the resend window) learns from the whole list who is gone, and says so."""
        ports = self.start_cluster(("a", "b"))
        b1 = self.join(ports["b"], "b1")
        boot = "0123abcd"
        nats_publish(self.nats_ports[1], "chatsock.lobby.events", [
            event("evil", boot, "1", "join", "u1"),
            event("evil", boot, "2", "join", "u2"),
            # 3, "leave u1", is lost for good; then a roster (a who's answer) without u1
            event("evil", boot, "4", "roster", "u2"),
            event("evil", boot, "5", "roster-end"),
        ])
        b1.wait_notice("u1 left", timeout=2 + TIMEOUT)  # after the gap is given up
        self.nodes["b"].wait_for("missed 1 events from node evil")
        self.wait_who(b1, ["b1", "u2"])
        with b1.cond:
            self.assertNotIn(("server", "u2 left"), b1.pairs)
            self.assertEqual(b1.pairs.count(("server", "u1 left")), 1)
        self.wait_log("b", "leave\tu1\tnode evil: left")


class Auth(ClusterTestCase):
    """NATS servers that want credentials: the demo takes them from CHATSOCK_NATS_USER and
    CHATSOCK_NATS_PASSWORD, or CHATSOCK_NATS_TOKEN. A node with the right ones joins the
    cluster; one with wrong ones does not start, and says why."""

    def refused(self, node, url, env):
        p = self.spawn([NODE_SERVER, HOST, 0, f"{node}.log", url, node], stdin=DEVNULL, label=f"node[{node}]", env=env)
        self.assertEqual(p.wait(timeout=TIMEOUT), 2, p.describe())
        return p.err.decode()

    def test_user_and_password(self):
        _, port = self.start_nats("nats", extra=["--user", "chat", "--pass", "s3cret"])
        url = f"nats://{HOST}:{port}"
        good = {"CHATSOCK_NATS_USER": "chat", "CHATSOCK_NATS_PASSWORD": "s3cret"}
        self.nodes = {}
        ports = {n: self.start_node(n, url, good) for n in "ab"}
        for n, other in (("a", "b"), ("b", "a")):
            self.nodes[n].wait_for(f"connected to NATS at {url}")
            self.nodes[n].wait_for("is ready", timeout=CLUSTER_UP)
            self.nodes[n].wait_for(f"node {other} is in the cluster", timeout=CLUSTER_UP)
        a1, b1 = self.join(ports["a"], "a1"), self.join(ports["b"], "b1")
        self.wait_who(b1, ["a1", "b1"])
        a1.send("with credentials")
        b1.wait(lambda pairs: ("a1", "with credentials") in pairs, "a message across nodes")
        for env in ({**good, "CHATSOCK_NATS_PASSWORD": "wrong"}, {}):
            self.assertIn("demo_cluster_server: NATS refused this node's credentials (Authorization Violation):"
                          " check the user and password, or the token", self.refused("c", url, env))

    def test_token(self):
        _, port = self.start_nats("nats", extra=["--auth", "t0ken"])
        url = f"nats://{HOST}:{port}"
        self.nodes = {}
        self.start_node("a", url, {"CHATSOCK_NATS_TOKEN": "t0ken"})
        self.nodes["a"].wait_for(f"connected to NATS at {url}")
        self.nodes["a"].wait_for("is ready", timeout=CLUSTER_UP)
        self.assertIn("NATS refused this node's credentials (Authorization Violation)",
                      self.refused("b", url, {"CHATSOCK_NATS_TOKEN": "wrong"}))


class Startup(ClusterTestCase):
    def test_a_node_serves_its_room_without_nats_and_joins_when_it_appears(self):
        self.nodes = {}
        nats_port = free_port()
        port_a = self.start_node("a", f"nats://{HOST}:{nats_port}")
        self.nodes["a"].wait_for("NATS is unreachable: serving the local room only")
        x, y = self.join(port_a, "x"), self.join(port_a, "y")
        x.send("alone here")
        y.wait(lambda pairs: ("x", "alone here") in pairs, "a local message")
        self.start_nats("nats", nats_port)
        self.nodes["a"].wait_for(f"connected to NATS at nats://{HOST}:{nats_port}", timeout=CLUSTER_UP)
        self.nodes["a"].wait_for("is ready", timeout=CLUSTER_UP)
        port_b = self.start_node("b", f"nats://{HOST}:{nats_port}")
        z = self.join(port_b, "z")
        self.wait_who(z, ["x", "y", "z"], timeout=CLUSTER_UP)  # a's users, claimed once NATS came
        x.send("together now")
        z.wait(lambda pairs: ("x", "together now") in pairs, "a message across nodes")


class NodeLoss(ClusterTestCase):
    def test_a_killed_node_s_users_are_announced_as_left(self):
        ports = self.start_cluster()
        a1, c1 = self.join(ports["a"], "a1"), self.join(ports["c"], "c1")
        a1.wait_notice("c1 joined")
        killed = time.monotonic()
        self.nodes["c"].kill()
        a1.wait_notice("c1 left (node lost)", timeout=NODE_LOST + TIMEOUT)
        announced = time.monotonic() - killed
        while True:  # its name is free again within name_ttl
            s = self.raw_connect(ports["a"], "c1")
            try:  # welcomed, then refused and closed once the claim fails
                refused = b"name refused" in recv_until_closed(s, timeout=1.0)
            except AssertionError:
                refused = False  # still open: accepted, and its claim held
            s.close()
            if not refused:
                break
            self.assertLess(time.monotonic() - killed, NAME_TTL + TIMEOUT, "c1's name is still held")
            time.sleep(0.5)
        print(f"  kill -9 of node c: c1 announced as left after {announced:.1f} s, "
              f"its name free after {time.monotonic() - killed:.1f} s", flush=True)
        # a1's claim, made before the kill, would be gone by now too; its node renews it
        time.sleep(max(0.0, killed + NAME_TTL + 2.0 - time.monotonic()))
        s = self.raw_connect(ports["b"], "a1")
        self.assertIn(b'name refused: the name "a1" is taken', recv_until_closed(s))


if __name__ == "__main__":
    main(__name__, {"node": [NODE_SERVER], "nats": [NATS_SERVER or "nats-server (missing)"]})
