#!/usr/bin/env python3
"""readme_lines.py — runs the build and run lines of README.md's ```sh blocks as written, in a
scratch copy of the repository (its tracked files, `git ls-files`), the way a new user would.

Every line of a ```sh block is either run or listed below in SKIPPED with the reason; a line
that is neither (a new one, or an old one edited) fails the run. What is run:

    g++ / clang++ / x86_64-w64-mingw32-g++ ... -o NAME   run as written; then NAME must start:
                                         demo_server listens on a free port and stops on SIGINT
                                         with status 0, demo_client rejects a bad port (status 2);
                                         an .exe runs under wine (status 53 from wine: a DLL it
                                         needs is missing, the failure to catch)
    make [demo_server|demo_client|all]   run as written; the programs built must start, as above
    make cluster                         run as written; demo_cluster_server must be built and
                                         start: it rejects a bad port (status 2), and with NATS
                                         unreachable (a closed port) it serves its local room:
                                         listens, a client joins, SIGINT stops it with status 0
    sudo apt-get install -y PACKAGES     run as written. As root without sudo, run without the
                                         word sudo, as README tells root to; as a user whose sudo
                                         wants a password, not run (the rest of the line is)
    ... && ./demo_server [host] [port]   started in its own process group, only if its port
                                         (1234 by default) is free; once it says "listening on
                                         host:port", a client joins it, then SIGINT stops it
                                         and it must exit 0
These can be chained with &&. Anything else must be in SKIPPED.

Also checked: the Python REPL exercise of "Teaching with chatsock" (the ```python block that
connects a socket) runs against a demo_server on a free port (its 1234 replaced by that port),
prints the welcome, and a recv() after a send, alone in the room, times out rather than hangs.

Each wait is bounded; every process started is stopped and reaped, its whole process group.
Loopback only. The last line is "README lines: N run, N skipped, N failed"; exit status 0 only
when none failed. --keep keeps the scratch copy.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = "README.md"

# Lines of README's ```sh blocks that are not run, each exactly as written (trailing spaces
# aside), with the reason. Edit a line in README and it must be listed again, or run.
SKIPPED = {
    "./demo_client":
        "interactive: asks for a username, then chats from the keyboard",
    "sudo apt-get install -y g++ make doctest-dev python3 && make test":
        "`make test` takes minutes; .ci/run runs it as its own step",
    "cmake -S . -B build && cmake --build build -j2 && ctest --test-dir build --output-on-failure":
        "builds and runs every test, minutes; .ci/run's last step is this build and ctest",
    "cmake -S chatsock -B chatsock-build -DCHATSOCK_BUILD_TESTS=OFF -DCHATSOCK_BUILD_DEMOS=OFF":
        "for the user's own project: expects the checkout in ./chatsock",
    "cmake --install chatsock-build --prefix /opt/chatsock":
        "installs into /opt/chatsock, outside any scratch copy",
    "sudo apt-get install -y g++ make python3 redis-server gnuplot-nox":
        "installs the benchmark's comparison servers and plotter, for the benchmark only",
    "bench/run.sh --redis --python --log-off-too --sweep --repeat 3   "
    "# prints the table, keeps bench/results/<time>/":
        "the full benchmark, about 20 minutes; .ci/run runs bench/run.sh --quick",
    "bench/plot.sh --from bench/results/<time>                        "
    "# redraws bench/deliveries.svg":
        "<time> is a placeholder for a results directory of a full benchmark run",
    "make mutate                                             # the whole register":
        "the whole mutation register, far too long; .ci/run runs a sample as its own step",
    'make mutate MUTATE_ARGS="--only max-payload-configured" # one entry':
        "builds and runs test binaries, minutes; .ci/run runs a sample of the register",
    "python3 tests/classic/classic_client.py 127.0.0.1 1234 guido     # terminal 2: a Python client":
        "interactive: reads the keyboard",
    "./demo_client 127.0.0.1 1234 bjarne                             # terminal 3: a C++ client":
        "interactive: reads the keyboard",
}

COMPILERS = ("g++", "clang++", "x86_64-w64-mingw32-g++")
FAST_MAKE_TARGETS = {"all": ("demo_server", "demo_client"),
                     "demo_server": ("demo_server",), "demo_client": ("demo_client",),
                     "cluster": ("demo_cluster_server",)}
SERVER_DEFAULT = ("127.0.0.1", 1234)
LINE_TIMEOUT = 300          # one line: an install, builds
START_TIMEOUT = 20          # a native program to start, listen or exit
WINE_TIMEOUT = 180          # the first wine run of a machine creates its prefix (~/.wine)
STOP_TIMEOUT = 15           # a server to exit after SIGINT
LISTENING = re.compile(rb"listening on (\S+):(\d+)")


class Failure(Exception):
    pass


def log(text=""):
    print(text, flush=True)


# --- README -------------------------------------------------------------------------------

def fenced_blocks(text):
    """Yields (language, line number of the first line, [lines]) for each ``` block, the
    lines unindented by the fence's own indentation (blocks inside list items)."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^( *)```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, body, start = len(m.group(1)), m.group(2).lower(), [], i + 2
        i += 1
        while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        yield lang, start, body


def sh_lines(text):
    """(line number, line) for each command line of the ```sh blocks; a line ending in a
    backslash is joined with the next."""
    out = []
    for lang, start, body in fenced_blocks(text):
        if lang not in ("sh", "bash", "shell"):
            continue
        pending, first = "", None
        for n, line in enumerate(body, start):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if first is None:
                first = n
            if line.endswith("\\"):
                pending += line[:-1]
                continue
            out.append((first, (pending + line).rstrip()))
            pending, first = "", None
        if pending:
            out.append((first, pending.rstrip()))
    return out


# --- classifying a line -------------------------------------------------------------------

def segments(line):
    """The line as a list of (kind, tokens, text) joined by &&, or None when some part is not
    one this script knows how to run."""
    texts = [t.strip() for t in line.split("&&")]
    result = []
    for k, text in enumerate(texts):
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError:
            return None
        if not tokens or any(t in ("|", ";", "&", "||", ">", "<", ">>") for t in tokens) \
                or re.search(r"[|;<>`$]", text.split("#")[0]):
            return None
        if tokens[0] == "sudo":
            bare = tokens[1:]
        else:
            bare = tokens
        if bare[:3] == ["apt-get", "install", "-y"] and len(bare) > 3 and \
                all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", p) for p in bare[3:]):
            result.append(("install", tokens, text))
        elif tokens[0] == "make" and all(t in FAST_MAKE_TARGETS for t in tokens[1:]):
            result.append(("make", tokens, text))
        elif tokens[0] in COMPILERS and "-o" in tokens[:-1]:
            result.append(("compile", tokens, text))
        elif tokens[0] == "./demo_server" and len(tokens) <= 4 and k == len(texts) - 1 \
                and (len(tokens) < 3 or tokens[2].isdigit()):
            result.append(("serve", tokens, text))
        else:
            return None
    return result


def sudo_usable():
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=30).returncode == 0


def command_for(line, segs):
    """The command to run for the line: the line itself, unless it installs with sudo where
    sudo cannot be used (README: as root, leave out sudo). Returns (command, note)."""
    if not any(kind == "install" and tokens[0] == "sudo" for kind, tokens, _ in segs) \
            or sudo_usable():
        return line, ""
    if os.geteuid() == 0:
        parts = [re.sub(r"^sudo\s+", "", text) if kind == "install" else text
                 for kind, _, text in segs]
        return " && ".join(parts), "run without `sudo` (root, no sudo here), as README says"
    why = "sudo wants a password" if shutil.which("sudo") else "not root, and no sudo here"
    parts = [text for kind, _, text in segs if kind != "install"]
    if not parts:
        return None, f"not run: it installs packages ({why})"
    return " && ".join(parts), f"the install was not run ({why}); the rest was"


def outputs(segs):
    """The programs the line builds, in order, as paths relative to the scratch copy."""
    out = []
    for kind, tokens, _ in segs:
        if kind == "compile":
            name = tokens[tokens.index("-o") + 1]
            if tokens[0].startswith("x86_64-w64-mingw32") and not os.path.splitext(name)[1]:
                name += ".exe"          # MinGW adds it
            out.append(name)
        elif kind == "make":
            for target in tokens[1:] or ["all"]:
                out.extend(FAST_MAKE_TARGETS[target])
    return out


# --- processes ----------------------------------------------------------------------------

class Group:
    """A command in a process group of its own, output to a file; stop() always reaps it."""

    def __init__(self, argv, cwd, out_path, env):
        self.out_path = out_path
        self.out = open(out_path, "wb")
        self.p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.out,
                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self):
        with open(self.out_path, "rb") as f:
            return f.read()

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig):
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self):
        """SIGKILL to whatever is left of the group, then reap."""
        if self.p.poll() is None:
            self.signal(signal.SIGKILL)
            self.p.wait(10)
        self.out.close()


def tail(data, n=25):
    """The last n lines of a program's output, indented, or a note that there was none."""
    lines = data.decode("utf-8", "replace").rstrip("\n").split("\n")
    if lines == [""]:
        return "      (no output)"
    return "\n".join("      | " + l for l in lines[-n:])


def port_free(host, port):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def closed_port():
    """A loopback port nothing listens on (the OS picked it, then it was closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(text):
    data = text.encode()
    return f"{len(data):<10}".encode() + data


def join_once(port, name="readme-check"):
    """A client joins the server on 127.0.0.1:port and must be welcomed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(frame(name))
        got = b""
        deadline = time.monotonic() + 5
        while b"welcome" not in got and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    if b"welcome, " + name.encode() not in got:
        raise Failure(f"a client joining 127.0.0.1:{port} was not welcomed: got {got!r}")


def wait_listening(group, timeout, what):
    """Waits for "listening on host:port" in the group's output; returns the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = LISTENING.search(group.output())
        if m:
            return int(m.group(2))
        if group.p.poll() is not None:
            raise Failure(f"{what} exited with status {group.p.returncode} before listening"
                          + (": wine could not load a DLL it needs (status 53)"
                             if group.p.returncode == 53 else "")
                          + "\n" + tail(group.output()))
        time.sleep(0.1)
    raise Failure(f"{what} did not say 'listening on' within {timeout} s\n" + tail(group.output()))


def stop_server(group, what):
    group.signal(signal.SIGINT)
    rc = group.wait(STOP_TIMEOUT)
    if rc is None:
        raise Failure(f"{what} did not exit within {STOP_TIMEOUT} s of SIGINT\n"
                      + tail(group.output()))
    if rc != 0:
        raise Failure(f"{what} exited with status {rc} after SIGINT, not 0\n"
                      + tail(group.output()))


# --- the checks ---------------------------------------------------------------------------

class Runner:
    def __init__(self, scratch, work):
        self.scratch = scratch      # the copy of the repository
        self.work = work            # logs and logfiles, outside the copy
        self.counter = 0
        # wine: quiet, but for a DLL it cannot load ("Library libstdc++-6.dll ... not found").
        self.env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", WINEDEBUG="-all,err+module")
        for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
            self.env.pop(name, None)

    def out_path(self, what):
        self.counter += 1
        safe = re.sub(r"[^\w.-]", "_", what)[:40]
        return os.path.join(self.work, f"{self.counter:02d}-{safe}.out")

    def started(self, argv, what, cwd=None):
        return Group(argv, cwd or self.scratch, self.out_path(what), self.env)

    def run_line(self, command, segs):
        serve = segs[-1][0] == "serve"
        if serve:
            tokens = segs[-1][1]
            host = tokens[1] if len(tokens) > 1 else SERVER_DEFAULT[0]
            port = int(tokens[2]) if len(tokens) > 2 else SERVER_DEFAULT[1]
            if host not in ("127.0.0.1", "localhost"):
                raise Failure(f"./demo_server on {host}: only loopback servers are run")
            if port == 0 or not port_free("127.0.0.1", port):
                raise Failure(f"not run: 127.0.0.1:{port} is in use by another program "
                              f"(stop it, then run this again)")
        g = self.started(["bash", "-c", command], "line")
        try:
            if serve:
                got = wait_listening(g, LINE_TIMEOUT, "./demo_server")
                if got != port:
                    raise Failure(f"./demo_server listens on port {got}, not {port}")
                join_once(port)
                stop_server(g, "./demo_server")
            else:
                rc = g.wait(LINE_TIMEOUT)
                if rc is None:
                    raise Failure(f"still running after {LINE_TIMEOUT} s\n" + tail(g.output()))
                if rc != 0:
                    raise Failure(f"exit status {rc}\n" + tail(g.output()))
        finally:
            g.stop()
        for name in outputs(segs):
            self.check_starts(name)

    def check_starts(self, name):
        """The program NAME, just built, must start: a server listens, a client parses its
        arguments; an .exe runs under wine."""
        path = os.path.join(self.scratch, name)
        if not os.path.isfile(path):
            raise Failure(f"the line did not build {name}")
        base = os.path.basename(name)
        exe = base.endswith(".exe")
        prefix = ["wine"] if exe else []
        if exe and not shutil.which("wine"):
            raise Failure(f"{name} built, but wine is not installed to check that it starts")
        argv0 = path if exe else "./" + name
        timeout = WINE_TIMEOUT if exe else START_TIMEOUT
        what = ("wine " if exe else "") + name
        # demo_cluster_server also takes a log, NATS URLs and a node name: NATS on a closed
        # port, so it serves its local room only (it says so, and joins NATS if it appears).
        cluster = base == "demo_cluster_server"
        nats = ["nats://127.0.0.1:%d" % closed_port(), "readme"] if cluster else []
        # A bad port: the program's own message and status 2, so it got as far as main().
        g = self.started(prefix + [argv0, "127.0.0.1", "not-a-port"]
                         + ([os.path.join(self.work, "check.log")] + nats if cluster else []),
                         base + "-badport")
        try:
            rc = g.wait(timeout)
            if rc is None:
                raise Failure(f"`{what} 127.0.0.1 not-a-port` still running after {timeout} s")
            if rc == 53 and exe:
                raise Failure(f"`{what}` does not start: wine exit status 53, a DLL it needs "
                              f"is missing (build with -static)\n" + tail(g.output()))
            if rc != 2 or b"is not a port number" not in g.output():
                raise Failure(f"`{what} 127.0.0.1 not-a-port`: status {rc}, expected 2 and "
                              f"'is not a port number'\n" + tail(g.output()))
        finally:
            g.stop()
        if not base.startswith("demo_server") and not cluster:
            return
        # A server: listens on a port the OS picks, a client joins, SIGINT stops it cleanly.
        g = self.started(prefix + [argv0, "127.0.0.1", "0", os.path.join(self.work, "check.log")]
                         + nats, base + "-listen")
        try:
            port = wait_listening(g, timeout, what)
            if cluster and b"serving the local room only" not in g.output():
                raise Failure(f"{what}, NATS unreachable, did not say it serves its local room "
                              f"only\n" + tail(g.output()))
            join_once(port)
            stop_server(g, what)
        finally:
            g.stop()

    def check_python_exercise(self, text):
        blocks = [(start, body) for lang, start, body in fenced_blocks(text)
                  if lang == "python" and any("create_connection" in l for l in body)]
        if len(blocks) != 1:
            raise Failure(f"expected one ```python block with socket.create_connection in "
                          f"README, found {len(blocks)}")
        start, body = blocks[0]
        snippet = "\n".join(body)
        if snippet.count("1234") != 1:
            raise Failure(f"README.md:{start}: the Python exercise should name port 1234 once")
        server = os.path.join(self.scratch, "demo_server")
        if not os.path.isfile(server):
            raise Failure("no demo_server was built by the lines above to run the exercise against")
        g = self.started([server, "127.0.0.1", "0", os.path.join(self.work, "python.log")],
                         "python-server")
        try:
            port = wait_listening(g, START_TIMEOUT, "demo_server")
            # The snippet as a script, then: alone in the room, a send and a recv must end
            # with a timeout (the snippet's settimeout), not hang.
            program = snippet.replace("1234", str(port)) + "\n" + (
                "import time as _t\n"
                "_start = _t.monotonic()\n"
                "s.sendall(frame('hi'))\n"
                "try:\n"
                "    print('CHECK recv returned', s.recv(4096))\n"
                "except socket.timeout:\n"
                "    print('CHECK recv timed out after %.1f s' % (_t.monotonic() - _start))\n")
            path = os.path.join(self.work, "exercise.py")
            with open(path, "w") as f:
                f.write(program)
            p = self.started([sys.executable, path], "python-exercise", cwd=self.work)
            try:
                rc = p.wait(START_TIMEOUT)
                out = p.output()
                if rc is None:
                    raise Failure(f"README.md:{start}: the Python exercise still waits after "
                                  f"{START_TIMEOUT} s (a recv with no timeout?)\n" + tail(out))
                if rc != 0 or b"welcome, guido" not in out or b"CHECK recv timed out" not in out:
                    raise Failure(f"README.md:{start}: the Python exercise: status {rc}, expected "
                                  f"the welcome and then a recv timing out\n" + tail(out))
                log(tail(out, 5))
            finally:
                p.stop()
            stop_server(g, "demo_server")
        finally:
            g.stop()


def copy_tracked(dest):
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           stdout=subprocess.PIPE).stdout.decode().split("\0")
    for name in filter(None, names):
        src = os.path.join(ROOT, name)
        if not os.path.lexists(src):
            continue                    # deleted in the working tree
        dst = os.path.join(dest, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isfile(src):
            shutil.copy2(src, dst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy and the logs")
    args = ap.parse_args()

    with open(os.path.join(ROOT, README), encoding="utf-8") as f:
        text = f.read()
    top = tempfile.mkdtemp(prefix="chatsock-readme-")
    scratch, work = os.path.join(top, "chatsock"), os.path.join(top, "work")
    os.makedirs(work)
    os.makedirs(scratch)
    copy_tracked(scratch)
    log(f"README.md's ```sh lines, in a scratch copy of the tracked files: {scratch}")
    runner = Runner(scratch, work)
    ran = skipped = 0
    failures = []
    seen = set()
    try:
        for n, line in sh_lines(text):
            seen.add(line)
            where = f"README.md:{n}"
            if line in SKIPPED:
                skipped += 1
                log(f"skip  {where}: {line}\n      why: {SKIPPED[line]}")
                continue
            segs = segments(line)
            if segs is None:
                failures.append(where)
                log(f"FAIL  {where}: {line}\n      this line is neither run nor skipped: make it "
                    f"a line tools/readme_lines.py can run, or list it in SKIPPED there with "
                    f"the reason")
                continue
            command, note = command_for(line, segs)
            if command is None:
                skipped += 1
                log(f"skip  {where}: {line}\n      why: {note}")
                continue
            log(f"run   {where}: {line}" + (f"\n      ({note}: {command})" if note else ""))
            start = time.monotonic()
            try:
                runner.run_line(command, segs)
                ran += 1
                built = outputs(segs)
                log(f"      ok, {time.monotonic() - start:.1f} s"
                    + (f"; started: {', '.join(built)}" if built else "")
                    + ("; listened on its port, a client joined, SIGINT stopped it (status 0)"
                       if segs[-1][0] == "serve" else ""))
            except Failure as e:
                failures.append(where)
                log(f"FAIL  {where}: {line}\n      {e}")
        where = "README.md, Teaching with chatsock: the Python REPL exercise"
        log(f"run   {where}, against a demo_server on a free port")
        try:
            runner.check_python_exercise(text)
            ran += 1
            log("      ok")
        except Failure as e:
            failures.append(where)
            log(f"FAIL  {where}\n      {e}")
        for line in SKIPPED:
            if line not in seen:
                failures.append("SKIPPED")
                log(f"FAIL  tools/readme_lines.py lists a line README no longer has: {line}")
    finally:
        if args.keep:
            log(f"kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    log(f"README lines: {ran} run, {skipped} skipped, {len(failures)} failed"
        + (f" ({', '.join(failures)})" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
