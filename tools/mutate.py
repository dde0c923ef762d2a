#!/usr/bin/env python3
"""mutate.py — plants each one-line bug of the mutation register in a copy of the sources
(chatsock.hpp, or a header of the cluster add-on) and checks that the test named for it fails.
`make mutate` runs the whole register.

The register, tests/mutations.txt, is a list of blocks separated by blank lines:

    id:      max-payload-configured
    promise: max_payload is the largest frame the server accepts (README, Defaults and limits)
    find:    auto c = std::make_unique<Connection>(options_.max_payload);
    replace: auto c = std::make_unique<Connection>(detail::default_max_payload);
    test:    unit test_server -tc="max_payload: a frame of that size*"

An entry may name the file the bug goes in, on a line `file:` (after `promise:`); without it,
chatsock.hpp. The others: cluster/chatsock_cluster.hpp and cluster/cluster_wire.hpp.

    file:    cluster/chatsock_cluster.hpp

`find` must occur exactly once in that file, on one line; `replace` (empty: delete) is what it
becomes. `test` is the narrowest command that must catch it:
    unit FILE DOCTEST-ARGS...      tests/FILE.cpp alone, built against the mutant, run with the
                                   doctest arguments (a filter, in shell quoting); no libnats is
                                   linked (cluster_wire.hpp can be tested so, not the add-on)
    unit-poll FILE DOCTEST-ARGS... the same with the poll() backend forced
    tsan FILE DOCTEST-ARGS...      the same under ThreadSanitizer (a race fails the test)
    e2e SCRIPT TEST...             demo_server, demo_client and attack_server built from the
                                   mutant, then python3 tests/SCRIPT with the named tests; for
                                   e2e_cluster.py, demo_cluster_server instead (-lnats), which
                                   the script is told to take as it is (CHATSOCK_BIN_DIR), never
                                   rebuilding it from the real sources

Each mutation ends as one of:
    caught    its test failed (or hung past --timeout)
    survived  its test passed: the promise is not tested
    stale     `find` no longer occurs exactly once: update the register with the code
    broken    the mutant does not build: not a useful mutation
    skipped   not run: its test needs nats-server and libnats-dev, which this machine lacks (as
              tests/e2e_cluster.py skips its tests there). That is an e2e_cluster.py test, or
              any test of cluster/chatsock_cluster.hpp. It counts as none of the above, and
              --check still checks its `find`.
Before the mutants, every test command that will be used runs once on the real sources and
must pass, having run at least one test; otherwise the register itself is wrong.

    tools/mutate.py                      the whole register
    tools/mutate.py --only ID [ID ...]   some entries
    tools/mutate.py --budget S --sample-from HASH
                                         a sample for CI: entries in a rotation that starts at
                                         a place chosen by HASH (a commit), until S seconds
                                         have gone; successive commits cover the register
    tools/mutate.py --check              only that every `find` still matches (no builds);
                                         `make test` runs this, one test per entry

The last line is "mutations: N caught, N survived, N stale, N broken" (the line before it says
how many were skipped, if any); the exit status is 0 only when every mutation run was caught
and none is stale.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTER = os.path.join(ROOT, "tests", "mutations.txt")
HEADER = "chatsock.hpp"
# The files a mutation may go in (`file:`; chatsock.hpp when not given).
SOURCES = (HEADER, "cluster/chatsock_cluster.hpp", "cluster/cluster_wire.hpp")
KEYS = ("id", "promise", "file", "find", "replace", "test")
REQUIRED = ("id", "promise", "find", "replace", "test")
CLUSTER_SCRIPT = "e2e_cluster.py"  # its node, demo_cluster_server, links libnats
CXX = os.environ.get("CXX", "g++")
# No -Werror: a mutant that only warns (an unused variable) must still build and be tested.
CXXFLAGS = ["-std=c++17", "-O1", "-w"]


class RegisterError(Exception):
    pass


def read_register(path):
    """The register's entries, as dicts with KEYS, in file order."""
    entries, current, line_no = [], {}, 0

    def close_entry():
        if not current:
            return
        missing = [k for k in REQUIRED if k not in current]
        if missing:
            raise RegisterError(f"{path}:{current['line']}: entry without {', '.join(missing)}")
        entries.append(dict(current))
        current.clear()

    with open(path, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if line.startswith("#"):
                continue
            if not line.strip():
                close_entry()
                continue
            m = re.match(r"^(\w+):(?: (.*))?$", line)
            if not m or m.group(1) not in KEYS:
                raise RegisterError(f"{path}:{line_no}: expected one of {', '.join(KEYS)}: {line}")
            key, value = m.group(1), m.group(2) or ""
            if key in current:
                raise RegisterError(f"{path}:{line_no}: {key} given twice in one entry")
            if key in ("promise", "test", "id", "file"):
                value = value.strip()
            elif key in ("find", "replace"):
                value = value.lstrip(" ")  # "find:    text" aligns the text; its own spaces count
            current.setdefault("line", line_no)
            current[key] = value
    close_entry()
    ids = [e["id"] for e in entries]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RegisterError(f"{path}: duplicate ids: {', '.join(sorted(dup))}")
    for e in entries:
        e.setdefault("file", HEADER)
        if e["file"] not in SOURCES:
            raise RegisterError(f"{path}:{e['line']}: {e['id']}: file must be one of "
                                f"{', '.join(SOURCES)}: {e['file']}")
        if not e["find"]:
            raise RegisterError(f"{path}:{e['line']}: {e['id']}: empty find")
        if e["find"] == e["replace"]:
            raise RegisterError(f"{path}:{e['line']}: {e['id']}: replace is the same as find")
        parse_test(e)
    return entries


def parse_test(entry):
    words = shlex.split(entry["test"])
    if len(words) < 2 or words[0] not in ("unit", "unit-poll", "tsan", "e2e"):
        raise RegisterError(f"{entry['id']}: test must be 'unit FILE ...', 'unit-poll FILE ...' "
                            f"or 'e2e SCRIPT TEST...': {entry['test']}")
    if words[0] == "e2e" and len(words) < 3:
        raise RegisterError(f"{entry['id']}: an e2e test names at least one test")
    return words[0], words[1], words[2:]


def needs_nats(entry):
    """Whether an entry's test needs nats-server and libnats: an e2e_cluster.py test, or any
    test of the add-on (which links libnats)."""
    kind, name, _ = parse_test(entry)
    if entry["file"] == "cluster/chatsock_cluster.hpp":
        return True
    return kind == "e2e" and name == CLUSTER_SCRIPT


def nats_missing():
    """Why the entries that need NATS cannot run here (None: they can): the same check as
    tests/e2e_cluster.py's, which would skip their tests."""
    if not shutil.which("nats-server") or not os.path.exists("/usr/include/nats/nats.h"):
        return "needs nats-server and libnats-dev (apt-get install nats-server libnats-dev)"
    return None


def nats_libs():
    """How to link libnats, as the Makefile finds it."""
    try:
        p = subprocess.run(["pkg-config", "--libs", "libnats"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        if p.returncode == 0 and p.stdout.split():
            return p.stdout.decode().split()
    except OSError:
        pass
    return ["-lnats"]


def read_sources(folder):
    """{file: text} for each file a mutation may go in."""
    texts = {}
    for name in SOURCES:
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            texts[name] = f.read()
    return texts


def mutate(source, entry):
    """The mutant's text, or None when `find` does not occur exactly once (stale)."""
    if source.count(entry["find"]) != 1 or "\n" in entry["find"]:
        return None
    return source.replace(entry["find"], entry["replace"], 1)


class Workspace:
    """A copy of what the tests need, in a temporary folder, with one source swapped per run."""

    def __init__(self, originals, keep=False):
        self.dir = tempfile.mkdtemp(prefix="chatsock-mutate-")
        self.keep = keep
        for name in (HEADER, "demo_server.cpp", "demo_client.cpp", "demo_cluster_server.cpp",
                     "Makefile"):
            shutil.copy2(os.path.join(ROOT, name), self.dir)
        for folder in ("tests", "fuzz", "cluster"):  # the tests include fuzz/reference.hpp
            shutil.copytree(os.path.join(ROOT, folder), os.path.join(self.dir, folder),
                            ignore=shutil.ignore_patterns("bin", "__pycache__", "corpus*"))
        self.bin = os.path.join(self.dir, "tests", "bin")
        os.makedirs(self.bin)
        self.originals = originals  # {file: text}, the real sources
        self.current = read_sources(self.dir)  # what is in the folder now
        self.main_o = None
        self.built = {}  # target -> the sources it was built from (a tuple, as in SOURCES)

    def close(self):
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def plant(self, file=None, text=None):
        """Puts the real sources in place, with `file` as `text` (a mutant) when given."""
        for name, original in self.originals.items():
            want = text if name == file else original
            if self.current[name] == want:
                continue
            path = os.path.join(self.dir, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(want)
            self.current[name] = want
            # make compares times: the mutant (or the real file back after one) must look newer
            # than anything built before it.
            now = time.time()
            os.utime(path, (now + 2, now + 2))

    def run(self, args, timeout, env=None):
        try:
            p = subprocess.run(args, cwd=self.dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=timeout, env=env)
            return p.returncode, p.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace")
            return None, out

    def build(self, kind, name):
        """Builds what a test needs from the sources now in place; returns (ok, output)."""
        key = (kind, name) if kind != "e2e" else ("e2e", name == CLUSTER_SCRIPT)
        sources = tuple(self.current[n] for n in SOURCES)
        if self.built.get(key) == sources:
            return True, ""
        if kind == "e2e" and name == CLUSTER_SCRIPT:  # its node only: the Makefile's rule
            rc, out = self.run([CXX, *CXXFLAGS, "demo_cluster_server.cpp", "-o",
                                "demo_cluster_server", *nats_libs(), "-pthread"], 600)
        elif kind == "e2e":
            flags = " ".join(CXXFLAGS)
            rc, out = self.run(["make", "-s", "-j2", f"CXX={CXX}", f"CXXFLAGS={flags}",
                                "demo_server", "demo_client", "tests/bin/attack_server"], 600)
        else:
            if self.main_o is None:
                self.main_o = os.path.join(self.bin, "main.o")
                rc, out = self.run([CXX, *CXXFLAGS, "-c", "tests/main.cpp", "-o", self.main_o], 600)
                if rc != 0:
                    return False, out
            # The test file and second_tu.cpp (which some tests call into) compile side by side.
            extra = {"unit-poll": ["-DCHATSOCK_USE_POLL"], "tsan": ["-fsanitize=thread"]}.get(kind, [])
            objects = [os.path.join(self.bin, f"{kind}-{src}.o") for src in (name, "second_tu")]
            jobs = [subprocess.Popen([CXX, *CXXFLAGS, *extra, "-I.", "-c", f"tests/{src}.cpp",
                                      "-o", obj], cwd=self.dir, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
                    for src, obj in zip((name, "second_tu"), objects)]
            outs = [j.communicate(timeout=600)[0].decode(errors="replace") for j in jobs]
            if any(j.returncode != 0 for j in jobs):
                return False, "".join(outs)
            rc, out = self.run([CXX, *objects, self.main_o, "-o", self.binary(kind, name),
                                "-pthread", *(["-fsanitize=thread"] if kind == "tsan" else [])],
                               600)
        if rc == 0:
            self.built[key] = sources
        return rc == 0, out

    def binary(self, kind, name):
        return os.path.join(self.bin, f"{kind}-{name}")

    def test(self, kind, name, args, timeout):
        """Runs a test command: (passed, tests_run, output); passed is None on a time-out."""
        if kind == "e2e":
            # e2e_cluster.py takes its node from CHATSOCK_BIN_DIR as it is, never running make:
            # the mutant's, not one rebuilt from the real sources.
            env = dict(os.environ, CHATSOCK_BIN_DIR=self.dir) if name == CLUSTER_SCRIPT else None
            rc, out = self.run([sys.executable, f"tests/{name}", *args], timeout, env)
            m = re.search(r"^RESULT passed=(\d+) failed=(\d+)", out, re.M)
            ran = int(m.group(1)) + int(m.group(2)) if m else 0
        else:
            rc, out = self.run([self.binary(kind, name), "--no-intro", *args], timeout)
            m = re.search(r"test cases:\s*(\d+)", out)
            ran = int(m.group(1)) if m else 0
            ran -= len(re.findall(r"MESSAGE: SKIPPED: ", out))
        return (None if rc is None else rc == 0), ran, out


def tail(text, n=30):
    return "\n".join(text.rstrip("\n").split("\n")[-n:])


def choose(entries, sample_from):
    """The order to run entries in: file order, or a rotation chosen by a commit hash."""
    if not sample_from:
        return entries
    start = int(re.sub(r"[^0-9a-fA-F]", "", sample_from)[:12] or "0", 16) % len(entries)
    return entries[start:] + entries[:start]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="ID")
    ap.add_argument("--budget", type=float, default=0, help="stop starting mutants after S seconds")
    ap.add_argument("--sample-from", metavar="HASH", help="where in the register to start")
    ap.add_argument("--timeout", type=float, default=180, help="per test run, seconds")
    ap.add_argument("--check", action="store_true", help="only check that every find matches")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--register", default=REGISTER)
    opts = ap.parse_args()

    try:
        entries = read_register(opts.register)
    except RegisterError as e:
        print(f"mutate: {e}")
        return 2
    originals = read_sources(ROOT)

    stale = [e for e in entries if mutate(originals[e["file"]], e) is None]
    for e in stale:
        n = originals[e["file"]].count(e["find"])
        print(f"STALE {e['id']}: find occurs {n} times in {e['file']} (must be once): {e['find']}")
    if opts.check:
        print(f"{len(entries)} mutations registered, {len(stale)} stale")
        print(f"RESULT passed={len(entries) - len(stale)} failed={len(stale)} skipped=0")
        return 1 if stale else 0

    if opts.only:
        unknown = set(opts.only) - {e["id"] for e in entries}
        if unknown:
            print(f"mutate: no such mutation: {', '.join(sorted(unknown))}")
            return 2
        entries = [e for e in entries if e["id"] in opts.only]
    live = [e for e in choose(entries, opts.sample_from) if e not in stale]
    missing = nats_missing()
    skipped = [e for e in live if missing and needs_nats(e)]
    for e in skipped:
        print(f"skipped  {e['id']}: {missing}")
    live = [e for e in live if e not in skipped]

    started = time.monotonic()
    ws = Workspace(originals, keep=opts.keep)
    results = []  # (entry, outcome, seconds)
    try:
        # Every test command that may run must pass on the real sources first.
        baseline_failed = False
        checked = set()
        ws.plant()
        for e in live:
            if opts.budget and time.monotonic() - started > opts.budget / 3 and checked:
                break  # a sample checks the commands of the mutants it will reach
            if e["test"] in checked:
                continue
            kind, name, args = parse_test(e)
            ok, out = ws.build(kind, name)
            if not ok:
                print(f"BASELINE {e['id']}: does not build on the real sources:\n{tail(out)}")
                baseline_failed = True
                break
            passed, ran, out = ws.test(kind, name, args, opts.timeout)
            checked.add(e["test"])
            if not passed or ran < 1:
                why = "timed out" if passed is None else "ran no test" if passed else "failed"
                print(f"BASELINE {e['id']}: its test {why} on the real sources: {e['test']}\n"
                      f"{tail(out)}")
                baseline_failed = True
        print(f"baseline: {len(checked)} test commands pass on the real sources "
              f"({time.monotonic() - started:.0f} s)", flush=True)
        if baseline_failed:
            print("mutations: the register's tests must pass on the real sources first")
            return 1

        for e in live:
            if opts.budget and time.monotonic() - started > opts.budget:
                break
            if e["test"] not in checked:
                continue  # a sample whose baseline was cut short
            t0 = time.monotonic()
            kind, name, args = parse_test(e)
            ws.plant(e["file"], mutate(originals[e["file"]], e))
            ok, out = ws.build(kind, name)
            if not ok:
                outcome, detail = "broken", tail(out, 15)
            else:
                passed, _, out = ws.test(kind, name, args, opts.timeout)
                outcome = "survived" if passed else "caught"
                detail = tail(out, 15) if passed else ("(timed out)" if passed is None else "")
            secs = time.monotonic() - t0
            results.append((e, outcome, secs))
            print(f"{outcome:8} {secs:5.1f} s  {e['id']}: {e['promise']}", flush=True)
            if outcome in ("survived", "broken"):
                print(f"         {e['find']!r} -> {e['replace']!r}\n         test: {e['test']}")
                if outcome == "broken":
                    print(detail)
    finally:
        ws.close()

    counts = {k: sum(1 for _, o, _ in results if o == k) for k in ("caught", "survived", "broken")}
    total = time.monotonic() - started
    not_run = (len(entries) - len(results) - len([e for e in stale if e in entries])
               - len(skipped))
    if not_run:
        print(f"{not_run} of {len(entries)} mutations not run in this sample")
    print(f"{len(results)} mutants in {total:.0f} s")
    if skipped:
        print(f"{len(skipped)} mutations skipped: {missing}")
    print(f"mutations: {counts['caught']} caught, {counts['survived']} survived, "
          f"{len(stale)} stale, {counts['broken']} broken")
    return 0 if not stale and counts["survived"] == 0 and counts["broken"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
