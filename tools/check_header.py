#!/usr/bin/env python3
"""check_header.py — the promises about chatsock.hpp's text that a compiler cannot check.

  * Every Winsock/BSD difference lives in layer 1: `_WIN32` appears nowhere after the line
    that opens "// ==== 2. Poller".
  * No line is over 100 columns (the header, the demos).
  * Each layer stays within its line budget (LAYER_BUDGETS), so that the header stays a book
    read in one sitting. The textbook issue brought the whole header to 1,950 lines; the
    budgets are that header's layers plus what later issues added, with a little room.
It prints the size of each layer.

Each check is one test; the last line is "RESULT passed=N failed=N skipped=0" (tests/run.sh).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_COLUMNS = 100
# The manual and includes before layer 1 count with it.
LAYER_BUDGETS = {"1": 790, "2": 115, "3": 235, "4": 480, "5": 190, "6": 960, "7": 190, "8": 90}


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
    # ctest lists the doctest cases by name, and CMake splits lists on ';'.
    import glob, re
    split = [m for f in sorted(glob.glob(os.path.join(ROOT, "tests", "**", "test_*.cpp"), recursive=True))
             for m in re.findall(r'TEST_CASE\(\s*"([^"]*;[^"]*)"\)', open(f, encoding="utf-8").read())]
    check(not split, "no test name has a ';' (ctest would split it)" + (f": {split}" if split else ""))
    starts = [(i, line[8]) for i, line in enumerate(header) if line.startswith("// ==== ")]
    check([n for _, n in starts] == sorted(LAYER_BUDGETS), "the layers are 1 to 8, in order")
    for k, (start, number) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(header)
        size = end - (0 if k == 0 else start)
        budget = LAYER_BUDGETS.get(number, 0)
        print(f"info  layer {number}: {size} lines (budget {budget}): {header[start][8:60]}")
        check(size <= budget, f"layer {number} within its budget of {budget} lines")
    print(f"info  chatsock.hpp: {len(header)} lines in all")
    print(f"RESULT passed={passed} failed={len(failures)} skipped=0")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
