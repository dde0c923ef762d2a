#!/usr/bin/env python3
"""check_header.py — the promises about chatsock.hpp's text that a compiler cannot check.

  * Every Winsock/BSD difference lives in layer 1: `_WIN32` appears nowhere after the line
    that opens "// ==== 2. Poller".
  * No line is over 100 columns (the header, the demos).
  * The header is at most 1,950 lines (`wc -l`): the budget of the textbook issue, so that it
    stays a book read in one sitting.

Each check is one test; the last line is "RESULT passed=N failed=N skipped=0" (tests/run.sh).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_COLUMNS = 100
MAX_LINES = 1950


def lines_of(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def width(line):
    """Columns as a byte-counting tool sees them: a "─" of the diagrams counts 3."""
    return len(line.encode("utf-8"))


def main():
    header = lines_of("chatsock.hpp")
    failures, passed = [], 0

    def check(ok, what):
        nonlocal passed
        if ok:
            passed += 1
            print(f"ok    {what}")
        else:
            failures.append(what)
            print(f"FAIL  {what}")

    starts = [i for i, line in enumerate(header) if line.startswith("// ==== 2. Poller")]
    check(len(starts) == 1, "the header has one '// ==== 2. Poller' section line")
    if starts:
        outside = [i + 1 for i, line in enumerate(header) if "_WIN32" in line and i > starts[0]]
        check(not outside, "no _WIN32 outside the platform layer" +
              (f" (lines {outside})" if outside else ""))
    for name in ("chatsock.hpp", "demo_server.cpp", "demo_client.cpp"):
        long_lines = [i + 1 for i, line in enumerate(lines_of(name)) if width(line) > MAX_COLUMNS]
        check(not long_lines, f"{name}: no line over {MAX_COLUMNS} columns" +
              (f" (lines {long_lines})" if long_lines else ""))
    check(len(header) <= MAX_LINES,
          f"chatsock.hpp: {len(header)} lines, within the budget of {MAX_LINES}")
    print(f"RESULT passed={passed} failed={len(failures)} skipped=0")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
