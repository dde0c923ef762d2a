"""harness.py — process plumbing shared by the end-to-end suites (tests/e2e_*.py).

Not a test suite itself (run.sh runs tests/e2e_*.py only). Everything here is python3 stdlib:
spawn the demo programs or the classic Python chat programs with pipes, collect their output
on background threads, wait for expected output with deadlines, and make sure every process
is reaped and every temporary directory removed.

Which demo programs run, from the environment (tests/run_windows.sh sets these):
  CHATSOCK_SERVER_CMD   a command prefix for the server, e.g. "wine /abs/path/demo_server.exe"
  CHATSOCK_CLIENT_CMD   the same for the client
  CHATSOCK_BIN_DIR      a folder holding demo_server and demo_client (ctest passes the CMake one)
A program chosen through the environment must exist already: it is never built. Otherwise it is
./demo_server or ./demo_client in the source tree, built with make when needed.
(tests/e2e_attacks.py reads CHATSOCK_ATTACK_SERVER the same way for its attack_server.)
A command naming a .exe is a Windows program: its stdout and stderr are read with "\r\n" as
"\n" (the C runtime's text mode), and tests that cannot apply to it are skipped with a reason.
"""
import errno
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import tempfile
import time
import unittest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NATIVE_SERVER = [os.path.join(ROOT, "demo_server")]
NATIVE_CLIENT = [os.path.join(ROOT, "demo_client")]


def _program(variable, name):
    """The command (a list) that runs demo program `name`, and whether the environment chose
    it; see the module's docstring."""
    if os.environ.get(variable):
        return shlex.split(os.environ[variable]), True
    bin_dir = os.environ.get("CHATSOCK_BIN_DIR")
    if bin_dir:
        path = os.path.join(bin_dir, name)
        exe = not os.path.exists(path) and os.path.exists(path + ".exe")
        return [path + ".exe" if exe else path], True
    return [os.path.join(ROOT, name)], False


def is_windows(command):
    """Whether a command (a list or a shell string) runs a Windows program."""
    text = command if isinstance(command, str) else " ".join(str(a) for a in command)
    return ".exe" in text.lower()


# Lists: spawn([*DEMO_SERVER, args...]).
DEMO_SERVER, _SERVER_GIVEN = _program("CHATSOCK_SERVER_CMD", "demo_server")
DEMO_CLIENT, _CLIENT_GIVEN = _program("CHATSOCK_CLIENT_CMD", "demo_client")
SERVER_ON_WINDOWS = is_windows(DEMO_SERVER)
CLIENT_ON_WINDOWS = is_windows(DEMO_CLIENT)
CLASSIC_SERVER = os.path.join(TESTS, "classic", "classic_server.py")
CLASSIC_CLIENT = os.path.join(TESTS, "classic", "classic_client.py")

HOST = "127.0.0.1"
TIMEOUT = 5.0  # the bound on any single wait for something that should happen at once

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


def build_demos():
    """Builds the demo programs not chosen through the environment with make, in the source
    tree (a no-op when `make test` already did). Those chosen through the environment are only
    checked: they must exist already, and make does not run for them."""
    to_build = []
    for command, given, name in ((DEMO_SERVER, _SERVER_GIVEN, "demo_server"),
                                 (DEMO_CLIENT, _CLIENT_GIVEN, "demo_client")):
        if not given:
            to_build.append(name)
            continue
        files = [a for a in command[1:] if os.path.sep in a]  # e.g. the .exe after "wine"
        if not shutil.which(command[0]) or any(not os.path.isfile(f) for f in files):
            raise RuntimeError(f"demo program not found: {shlex.join(command)}")
    if not to_build:
        return
    run = subprocess.run(["make", "-s", *to_build], cwd=ROOT,
                         stdout=PIPE, stderr=subprocess.STDOUT, timeout=600)
    if run.returncode != 0 or not all(os.access(os.path.join(ROOT, n), os.X_OK) for n in to_build):
        raise RuntimeError("building the demos failed:\n" + run.stdout.decode(errors="replace"))


# tests/bin/attack_server (demo_server with its limits on the command line), or the one the
# caller chose (ctest, make sanitize): built with make only when nobody chose one.
ATTACK_SERVER = (os.environ.get("CHATSOCK_ATTACK_SERVER")
                 or os.path.join(ROOT, "tests", "bin", "attack_server"))


def build_attack_server():
    if os.environ.get("CHATSOCK_ATTACK_SERVER"):
        if not os.access(ATTACK_SERVER, os.X_OK):
            raise RuntimeError(f"attack_server not found: {ATTACK_SERVER}")
        return
    run = subprocess.run(["make", "-s", "tests/bin/attack_server"], cwd=ROOT, stdout=PIPE,
                         stderr=subprocess.STDOUT, timeout=600)
    if run.returncode != 0:
        raise RuntimeError("building tests/bin/attack_server failed:\n" + run.stdout.decode(errors="replace"))


def frame(payload):
    """One frame the way the classic Python programs write it: f"{len:<10}" + payload."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return f"{len(payload):<10}".encode() + payload


def free_port():
    """A port nobody listens on right now (bound, read back and released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# wine: no debug chatter on stderr, where the tests look for the programs' own messages.
CHILD_ENV = dict(os.environ, WINEDEBUG=os.environ.get("WINEDEBUG", "-all"))


class Proc:
    """A child process with its stdout and stderr collected as they arrive. With crlf (a
    Windows program), "\r\n" reads as "\n"; raw_out keeps the bytes exactly as written."""

    def __init__(self, args, cwd, stdin=PIPE, label=None, crlf=False, env=None):
        self.label = label or os.path.basename(args[0])
        self.args = args
        self.crlf = crlf
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:  # a session of its own, so kill() also ends the children of a shell pipeline
                self.p = subprocess.Popen(args, cwd=cwd, stdin=stdin, stdout=PIPE, stderr=PIPE,
                                          start_new_session=True, env=dict(CHILD_ENV, **(env or {})))
                break
            except OSError as e:  # "text file busy": a concurrent `make` is rewriting the binary
                if e.errno != errno.ETXTBSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._cond = threading.Condition()
        self._data = {"out": bytearray(), "err": bytearray()}
        self._raw = {"out": bytearray(), "err": bytearray()}
        self._open = {"out": True, "err": True}
        self._threads = [threading.Thread(target=self._pump, args=(self.p.stdout, "out"), daemon=True),
                         threading.Thread(target=self._pump, args=(self.p.stderr, "err"), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, pipe, key):
        fd = pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                raw = self._raw[key]
                pending_cr = self.crlf and raw.endswith(b"\r")  # held back: half of a "\r\n"?
                raw += chunk
                if not self.crlf:
                    self._data[key] += chunk
                elif chunk:
                    text = (b"\r" if pending_cr else b"") + chunk
                    text = text[:-1] if text.endswith(b"\r") else text
                    self._data[key] += text.replace(b"\r\n", b"\n")
                elif pending_cr:
                    self._data[key] += b"\r"  # the stream ended on a lone "\r"
                if not chunk:
                    self._open[key] = False
                self._cond.notify_all()
            if not chunk:
                return

    # ---- output ------------------------------------------------------------------------------
    @property
    def out(self):
        with self._cond:
            return bytes(self._data["out"])

    @property
    def err(self):
        with self._cond:
            return bytes(self._data["err"])

    @property
    def raw_out(self):
        """stdout byte for byte, line endings as the program wrote them."""
        with self._cond:
            return bytes(self._raw["out"])

    def lines(self):
        """stdout split at "\n" only (a stray "\r" must not look like a line break)."""
        text = self.out.decode("utf-8", "replace")
        return text[:-1].split("\n") if text.endswith("\n") else text.split("\n")

    def describe(self):
        return (f"{self.label} {self.args[1:]} (exit {self.p.poll()})\n"
                f"  stdout: {self.out!r}\n  stderr: {self.err!r}")

    def wait_for(self, pattern, timeout=TIMEOUT, stream="out"):
        """Waits until the stream contains `pattern` (bytes/str substring or compiled regex);
        returns the regex match or True. Fails (AssertionError) at the deadline, or as soon as
        the stream has ended without it."""
        if isinstance(pattern, str):
            pattern = pattern.encode("utf-8")
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                data = bytes(self._data[stream])
                if isinstance(pattern, bytes):
                    if pattern in data:
                        return True
                else:
                    m = pattern.search(data)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._open[stream]:
                    break
                self._cond.wait(min(left, 0.5))
        raise AssertionError(f"{pattern!r} not seen on std{stream} within {timeout}s: {self.describe()}")

    # ---- input and lifetime ------------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def close_stdin(self):
        if self.p.stdin and not self.p.stdin.closed:
            try:
                self.p.stdin.close()
            except OSError:
                pass

    def wait(self, timeout=TIMEOUT):
        """The exit code; fails if the process is still running at the deadline."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s: {self.describe()}") from None
        for t in self._threads:  # the pipes end with the process (or its children)
            t.join(timeout=TIMEOUT)
        return rc

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def kill(self):
        self.close_stdin()
        if self.p.poll() is None:  # not reaped yet, so its group id is still ours
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # the process and anything it started
            except OSError:
                self.p.kill()
        try:
            self.p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for t in self._threads:
            t.join(timeout=1)
        for pipe in (self.p.stdout, self.p.stderr):
            try:
                pipe.close()
            except OSError:
                pass


# A server's first line, after the note it writes when `ulimit -n` is too low for max_clients.
DESCRIPTOR_NOTE = rb"the descriptor limit \(ulimit -n\) is \d+: accepting \d+ clients, not max_clients \d+\n"
LISTENING_DEMO = re.compile(rb"\A(?:" + DESCRIPTOR_NOTE + rb")?listening on 127\.0\.0\.1:(\d+) \((\w+)\)\n")
LISTENING_CLASSIC = re.compile(rb"Listening for connections on 127\.0\.0\.1:(\d+)\.\.\.\n")


class ChatTestCase(unittest.TestCase):
    """Each test runs in its own temporary directory; every process it spawns is killed and
    reaped afterwards, whatever happened."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="chatsock-e2e-")
        self.dir = self._tmp.name
        self.procs = []
        self.addCleanup(self._tmp.cleanup)
        self.addCleanup(self._reap)  # cleanups run last-in first-out: reap, then remove the dir

    def _reap(self):
        for p in reversed(self.procs):
            p.kill()

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, args, stdin=PIPE, label=None, env=None):
        """Starts a process (env: variables set for it, on top of ours), killed at the end."""
        args = [str(a) for a in args]
        p = Proc(args, self.dir, stdin=stdin, label=label, crlf=is_windows(args), env=env)
        self.procs.append(p)
        return p

    # ---- demo programs -----------------------------------------------------------------------
    def start_server(self, log="chat.log", program=None):
        """demo_server (or `program`, a command list) on an ephemeral port; returns (process, port)."""
        args = [*(program or DEMO_SERVER), HOST, 0] + ([log] if log is not None else [])
        for attempt in (1, 2):
            server = self.spawn(args, stdin=DEVNULL, label="demo_server")
            try:
                m = server.wait_for(LISTENING_DEMO)
                return server, int(m.group(1))
            except AssertionError:
                # wine itself failing to start the program (its wineserver going away between
                # two tests: "wine client error") is retried once; anything else is a failure.
                if attempt == 2 or b"wine client error" not in server.err:
                    raise

    def client(self, port, name=None, stdin=PIPE, joined=True, program=None):
        """demo_client (or `program`) as `name`; with `joined`, waits for the server's welcome."""
        args = [*(program or DEMO_CLIENT), HOST, port] + ([name] if name is not None else [])
        c = self.spawn(args, stdin=stdin, label=f"demo_client[{name}]")
        if joined and name is not None:
            c.wait_for(f"server > welcome, {name}!")
        return c

    # ---- classic programs --------------------------------------------------------------------
    def start_classic_server(self):
        server = self.spawn([sys.executable, CLASSIC_SERVER, HOST, 0], stdin=DEVNULL, label="classic_server")
        m = server.wait_for(LISTENING_CLASSIC)
        return server, int(m.group(1))

    def classic_client(self, port, name):
        return self.spawn([sys.executable, CLASSIC_CLIENT, HOST, port, name], label=f"classic_client[{name}]")

    def poke_until(self, classic, pattern, timeout=TIMEOUT):
        """The classic client only reads the socket after a line of input: press Enter (an
        empty line, which it does not send) until `pattern` shows up."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                classic.send(b"\n")
            except OSError:
                pass  # it has exited; wait_for below reports what it printed
            try:
                return classic.wait_for(pattern, timeout=0.1)
            except AssertionError:
                if time.monotonic() >= deadline or classic.p.poll() is not None:
                    return classic.wait_for(pattern, timeout=0)

    # ---- raw sockets -------------------------------------------------------------------------
    def raw_connect(self, port, name=None):
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(s.close)
        if name is not None:
            s.sendall(frame(name))
        return s


def recv_exactly(sock, n, timeout=TIMEOUT):
    """n bytes from a socket; fails at the deadline or if the peer closes first."""
    deadline = time.monotonic() + timeout
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {data!r} of {n} bytes within {timeout}s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError(f"connection closed after {data!r} of {n} bytes")
        data += chunk
    return data


def recv_frame(sock, timeout=TIMEOUT):
    """(header bytes, payload bytes) of the next frame, read the classic way."""
    header = recv_exactly(sock, 10, timeout)
    return header, recv_exactly(sock, int(header.decode("ascii").strip()), timeout)


def recv_until_closed(sock, timeout=TIMEOUT):
    """Everything the peer sends until it closes the connection."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not closed within {timeout}s; received {data!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


# ---- what the server has read, seen from /proc/net/tcp ----------------------------------------
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
HAVE_PROC_NET_TCP = os.path.exists(PROC_NET_TCP[0])
_SKIPPED_STATES = {0x03, 0x06}  # SYN_RECV (a request, no socket yet) and TIME_WAIT: no queues


class NotReadError(AssertionError):
    """wait_until_read's deadline passed with bytes still unread (a test failure, not an error)."""


def _address(raw, port):
    """(address bytes, port), an IPv4-mapped IPv6 address reduced to its 4 IPv4 bytes."""
    if len(raw) == 16 and raw[:12] == bytes(10) + b"\xff\xff":
        raw = raw[12:]
    return raw, port


def _socket_address(addr):
    """getsockname()/getpeername() of an AF_INET or AF_INET6 socket, as _address()."""
    host = addr[0].split("%", 1)[0]  # an IPv6 scope id is not part of the address
    return _address(socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host), addr[1])


def _proc_address(text):
    """An address of /proc/net/tcp{,6}: the address as hex 32-bit words, each printed from the
    host's memory order (127.0.0.1 is "0100007F" on a little-endian machine), a colon, the port
    in hex. tcp6 shows an IPv4 client of a dual-stack socket as ::ffff:a.b.c.d."""
    host, port = text.split(":")
    raw = b"".join(struct.pack("=I", int(host[i:i + 8], 16)) for i in range(0, len(host), 8))
    return _address(raw, int(port, 16))


def tcp_queues(local, remote):
    """[(state, tx_queue, rx_queue)] of every socket in /proc/net/tcp and /proc/net/tcp6 from
    `local` to `remote` (_socket_address form), TIME_WAIT and SYN_RECV entries left out. For an
    established socket, tx_queue is what it sent and the peer's kernel has not acknowledged,
    rx_queue what arrived and its program has not read yet."""
    found = []
    ports = (f":{local[1]:04X}", f":{remote[1]:04X}")  # a cheap first look at each line
    for path in PROC_NET_TCP:
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue  # no IPv6
        for line in lines:
            fields = line.split()
            if len(fields) < 5 or not (fields[1].endswith(ports[0]) and fields[2].endswith(ports[1])):
                continue
            if int(fields[3], 16) in _SKIPPED_STATES:
                continue
            if _proc_address(fields[1]) == local and _proc_address(fields[2]) == remote:
                tx, rx = fields[4].split(":")
                found.append((int(fields[3], 16), int(tx, 16), int(rx, 16)))
    return found


def wait_until_read(sock, timeout=TIMEOUT):
    """Waits until the program at the other end of a connected TCP socket (the server) has
    read everything sent on `sock` so far: in /proc/net/tcp, `sock`'s own line shows tx_queue 0
    (all of it acknowledged by the peer's kernel) and the peer's socket for this connection
    shows rx_queue 0 (its program has read it all). So the next bytes sent arrive in a read of
    their own. Polls every millisecond; returns the seconds it waited. Raises NotReadError at
    the deadline (or while the peer has no socket for the connection, e.g. after it closed it),
    unittest.SkipTest where there is no /proc/net/tcp. Works for a program under wine as well:
    its sockets are Linux sockets."""
    if not HAVE_PROC_NET_TCP:
        raise unittest.SkipTest("no /proc/net/tcp: cannot tell what the server has read")
    local, remote = _socket_address(sock.getsockname()), _socket_address(sock.getpeername())
    start = time.monotonic()
    while True:
        mine, theirs = tcp_queues(local, remote), tcp_queues(remote, local)
        if mine and theirs and all(tx == 0 for _, tx, _ in mine) and all(rx == 0 for _, _, rx in theirs):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise NotReadError(
                f"the peer has not read everything sent from {sock.getsockname()} to {sock.getpeername()} "
                f"within {timeout}s; (state, tx_queue, rx_queue) here {mine}, at the peer {theirs}")
        time.sleep(0.001)


# For a test that calls wait_until_read: skipped at once, not at its first call.
needs_proc_net_tcp = unittest.skipUnless(HAVE_PROC_NET_TCP, "no /proc/net/tcp: cannot tell what the server has read")


def skip_if_windows_server(reason):
    """Skips a test that cannot apply to a Windows demo_server (under wine), saying why."""
    return unittest.skipIf(SERVER_ON_WINDOWS, f"Windows server: {reason}")


# ---- a terminal: a process in a pseudo-terminal, and what its screen shows --------------------
import fcntl  # noqa: E402  (POSIX only, like everything above that spawns programs)
import pty  # noqa: E402
import select  # noqa: E402
import termios  # noqa: E402
import unicodedata  # noqa: E402

TERMINAL_ROWS, TERMINAL_COLUMNS = 50, 200  # room enough that nothing scrolls or wraps

# Runs in the child, in the new session start_new_session made: takes the pseudo-terminal on
# stdin as the controlling terminal (so the line discipline turns a typed Ctrl+C into SIGINT for
# the program), puts back the signal dispositions Python changed, then becomes the program.
_CONTROLLING_TERMINAL = """\
import errno, fcntl, os, signal, sys, termios, time
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
for name in ("SIGPIPE", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
deadline = time.monotonic() + 5
while True:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as e:  # "text file busy": a concurrent `make` is rewriting the binary
        if e.errno != errno.ETXTBSY or time.monotonic() > deadline:
            raise
        time.sleep(0.05)
"""

_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")


def terminal_screen(data, rows=TERMINAL_ROWS, columns=TERMINAL_COLUMNS):
    """The lines a terminal shows after receiving `data` (bytes, UTF-8), lines that scrolled
    off the top included, trailing blanks dropped. Enough of a VT100/xterm for what programs
    here write and wine's console draws with: text, CR, LF, BS, TAB, cursor moves (CSI A B C D
    E F G H d f), erasing (CSI J K X), inserting and deleting characters (CSI @ P), saving and
    restoring the cursor (ESC 7, ESC 8); colours, modes and titles are ignored. A wide
    character (CJK) takes two columns, as in a real terminal."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data
    history, screen = [], [[] for _ in range(rows)]  # a line is a list of cells
    row = col = 0
    saved = (0, 0)

    def line_feed():
        nonlocal row
        if row == rows - 1:
            history.append(screen.pop(0))
            screen.append([])
        else:
            row += 1

    def put(ch):
        nonlocal col
        width = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if unicodedata.combining(ch) and col > 0:
            line = screen[row]
            if col - 1 < len(line):
                line[col - 1] += ch
            return
        if col + width > columns:  # autowrap
            col = 0
            line_feed()
        line = screen[row]
        line.extend([" "] * (col + width - len(line)))
        line[col] = ch
        if width == 2:
            line[col + 1] = ""
        col += width

    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = _CSI.match(text, i)
            if m:
                i = m.end()
                params, final = m.group(1), m.group(3)
                if params.startswith(("?", ">", "=")):
                    continue  # private modes (cursor shown or hidden, ...)
                nums = [int(p) if p.isdigit() else 0 for p in params.split(";")] if params else []
                n = max(nums[0], 1) if nums else 1
                line = screen[row]
                if final == "A":
                    row = max(row - n, 0)
                elif final == "B":
                    row = min(row + n, rows - 1)
                elif final == "C":
                    col = min(col + n, columns - 1)
                elif final == "D":
                    col = max(col - n, 0)
                elif final in "EF":
                    row = min(row + n, rows - 1) if final == "E" else max(row - n, 0)
                    col = 0
                elif final == "G":
                    col = min(n, columns) - 1
                elif final == "d":
                    row = min(n, rows) - 1
                elif final in "Hf":
                    row = min(max(nums[0], 1), rows) - 1 if nums else 0
                    col = min(max(nums[1], 1), columns) - 1 if len(nums) > 1 else 0
                elif final == "K":
                    mode = nums[0] if nums else 0
                    if mode == 0:
                        del line[col:]
                    elif mode == 1:
                        line[:col + 1] = [" "] * min(col + 1, len(line))
                    else:
                        line.clear()
                elif final == "J":
                    mode = nums[0] if nums else 0
                    if mode == 0:
                        del line[col:]
                        for r in range(row + 1, rows):
                            screen[r] = []
                    elif mode == 1:
                        line[:col + 1] = [" "] * min(col + 1, len(line))
                        for r in range(row):
                            screen[r] = []
                    else:
                        screen = [[] for _ in range(rows)]
                elif final == "X":
                    for c in range(col, min(col + n, len(line))):
                        line[c] = " "
                elif final == "P":
                    del line[col:col + n]
                elif final == "@":
                    if col < len(line):
                        line[col:col] = [" "] * n
                continue  # anything else (colours, ...) changes nothing shown
            m = _OSC.match(text, i)
            if m:
                i = m.end()
                continue
            nxt = text[i + 1:i + 2]
            if nxt == "7":
                saved = (row, col)
            elif nxt == "8":
                row, col = saved
            i += 2
            continue
        i += 1
        if ch == "\r":
            col = 0
        elif ch in "\n\x0b\x0c":
            line_feed()
        elif ch == "\b":
            col = max(col - 1, 0)
        elif ch == "\t":
            col = min((col // 8 + 1) * 8, columns - 1)
        elif ch >= " " and ch != "\x7f" and not ("\x80" <= ch <= "\x9f"):
            put(ch)
    lines = ["".join(cells).rstrip(" ") for cells in history + screen]
    while lines and not lines[-1]:
        lines.pop()
    return lines


class TerminalProc:
    """A child process in a pseudo-terminal of its own, as if started from a terminal window:
    stdin, stdout and stderr all on the terminal, which is also its controlling terminal, in a
    session of its own (so type(b"\\x03") is a Ctrl+C: SIGINT from the line discipline). The
    terminal is TERMINAL_ROWS x TERMINAL_COLUMNS, with the default settings of a new pseudo-
    terminal (canonical mode, echo, ISIG); `termios_change` may alter them first. Everything it
    shows is collected on a background thread; screen() renders it (terminal_screen)."""

    def __init__(self, args, cwd, label=None, termios_change=None):
        self.label = label or os.path.basename(str(args[0]))
        self.args = [str(a) for a in args]
        master, slave = pty.openpty()
        try:
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0))
            if termios_change:
                attrs = termios.tcgetattr(slave)
                termios_change(attrs)
                termios.tcsetattr(slave, termios.TCSANOW, attrs)
            self.terminal = os.ttyname(slave)  # e.g. /dev/pts/3
            self.p = subprocess.Popen([sys.executable, "-c", _CONTROLLING_TERMINAL, *self.args], cwd=cwd,
                                      stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                      env=dict(CHILD_ENV, TERM="xterm"))
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self._cond = threading.Condition()
        self._raw = bytearray()
        self._open = True
        self._stop = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        while True:
            with self._cond:
                if self._stop:
                    return
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                chunk = b""
            with self._cond:
                self._raw += chunk
                if not chunk:
                    self._open = False
                self._cond.notify_all()
            if not chunk:
                return

    @property
    def raw(self):
        """Every byte the terminal received, escape sequences and all."""
        with self._cond:
            return bytes(self._raw)

    def screen(self):
        """The lines the terminal shows (see terminal_screen)."""
        return terminal_screen(self.raw)

    def describe(self):
        raw = self.raw
        return (f"{self.label} {self.args[1:]} in a terminal (exit {self.p.poll()})\n"
                "  screen:\n" + "".join(f"    | {line}\n" for line in self.screen()) +
                f"  bytes received{' (the last 3000)' if len(raw) > 3000 else ''}: {raw[-3000:]!r}")

    def wait_for(self, pattern, timeout=TIMEOUT):
        """Waits until the screen shows `pattern` (a str, found within the lines joined by
        "\\n", or a compiled str regex searched there); returns the match or True. Fails at the
        deadline, or as soon as the terminal has closed without it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "\n".join(terminal_screen(bytes(self._raw)))
                if isinstance(pattern, str):
                    if pattern in text:
                        return True
                else:
                    m = pattern.search(text)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._open:
                    break
                self._cond.wait(min(left, 0.5))
        raise AssertionError(f"{pattern!r} not shown within {timeout}s: {self.describe()}")

    def type(self, data):
        """Keys typed at the terminal: bytes (or str, as UTF-8) to the pseudo-terminal's master."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        while data:
            data = data[os.write(self.master, data):]

    def wait_for_key_by_key_input(self, timeout=TIMEOUT):
        """Waits until the terminal is out of canonical mode (ICANON off), i.e. the program
        reads keys one by one and edits lines itself, as wine's console does while a Windows
        program reads it. Keys typed before that go through the terminal's own line editing
        (Enter becomes "\n", echoed by the terminal), not the program's."""
        deadline = time.monotonic() + timeout
        while True:
            fd = os.open(self.terminal, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                canonical = termios.tcgetattr(fd)[3] & termios.ICANON
            finally:
                os.close(fd)
            if not canonical:
                return
            if time.monotonic() > deadline or self.p.poll() is not None:
                raise AssertionError(f"the terminal is still in canonical mode after {timeout}s: "
                                     f"{self.describe()}")
            time.sleep(0.01)

    def wait(self, timeout=TIMEOUT):
        """The exit status, once the output has been read to its end; fails if the process is
        still running at the deadline."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout}s: {self.describe()}") from None
        self._thread.join(timeout=TIMEOUT)  # the terminal closes once its last holder is gone
        return rc

    def kill(self):
        if self.p.poll() is None:  # not reaped yet, so its group id is still ours
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # stopped (Ctrl+Z) or not, and its children
            except OSError:
                self.p.kill()
        try:
            self.p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        with self._cond:
            self._stop = True
        self._thread.join(timeout=1)
        if not self._thread.is_alive() and self.master is not None:
            os.close(self.master)
            self.master = None


def spawn_in_terminal(test, args, label=None, termios_change=None):
    """A TerminalProc in `test`'s directory (a ChatTestCase), killed and reaped with its
    other processes."""
    proc = TerminalProc(args, test.dir, label=label, termios_change=termios_change)
    test.procs.append(proc)
    return proc


# ---- a server that accepts, reads, and never answers or closes ----------------------------------
class SilentServer:
    """A listening socket on loopback that accepts every connection and reads (and drops)
    everything sent, but never sends a byte and never closes a connection, not even once the
    peer has shut its side down: a peer waiting for it to close waits in vain. `accepted`
    holds the monotonic time of each accept. close() stops it and closes everything; use it
    as a context manager or register close() as a cleanup."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted = []
        self.received = 0
        self._conns = []  # read from
        self._ended = []  # the peer has shut down its side or reset: held open, not read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener, *self._conns], [], [], 0.1)
            for s in ready:
                if s is self.listener:
                    conn, _ = s.accept()
                    self.accepted.append(time.monotonic())
                    self._conns.append(conn)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                self.received += len(data)
                if not data:
                    self._conns.remove(s)
                    self._ended.append(s)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=TIMEOUT)
        for s in [self.listener, *self._conns, *self._ended]:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(module_name, programs=None):
    """Runs the module's tests (or those named on the command line, e.g. "Conversation" or
    "Names.test_bad_names_are_refused") and ends with the line run.sh parses. A skipped test
    counts as neither passed nor failed. `programs` ({role: command}) is printed first; by
    default, the demo server and client under test."""
    module = sys.modules[module_name]
    names = sys.argv[1:]
    loader = unittest.defaultTestLoader
    suite = loader.loadTestsFromNames(names, module) if names else loader.loadTestsFromModule(module)
    for role, command in (programs or {"server": DEMO_SERVER, "client": DEMO_CLIENT}).items():
        print(f"{role}: {shlex.join(command)}", flush=True)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    bad = result.failures + result.errors + [(t, "") for t in result.unexpectedSuccesses]
    failed = {getattr(t, "test_case", t).id() for t, _ in bad}  # a test with failed subtests counts once
    skipped = {t.id() for t, _ in result.skipped} - failed
    passed = max(result.testsRun - len(failed) - len(skipped), 0)
    sys.stdout.flush()
    for test, reason in result.skipped:
        print(f"SKIPPED {test.id()}: {reason}")
    print(f"RESULT passed={passed} failed={len(failed)} skipped={len(skipped)}", flush=True)
    sys.exit(1 if failed or result.testsRun == 0 else 0)


# ---- memory of a running process (the attack suites) ---------------------------------------
def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssSampler(threading.Thread):
    """A process's peak RSS while it runs, sampled every 10 ms (Linux: /proc)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_bytes(pid), threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.01):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self):
        self.done.set()
        self.join(TIMEOUT)
        return self.peak
