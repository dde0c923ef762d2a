#!/usr/bin/env python3
"""check_header.py — the promises about chatsock.hpp's text that a compiler cannot check.

  * Every Winsock/BSD difference lives in layer 1: `_WIN32` appears nowhere after the line
    that opens "// ==== 2. Poller".
  * No line is over 100 columns (the header, the demos).
  * Each layer stays within its line budget (LAYER_BUDGETS), so that the header stays a book
    read in one sitting. The textbook issue brought the whole header to 1,950 lines; the
    budgets are that header's layers plus what later issues added, with a little room.
  * docs/WALKTHROUGH.md, the header as a course, follows the header: every banner or
    subsection it quotes (`// ==== ...` or `// ---- ...` in backticks) is still in the header,
    and each layer 1 to 8 has a section (a "## " heading) that quotes its banner.
It prints the size of each layer.

Each check is one test; the last line is "RESULT passed=N failed=N skipped=0" (tests/run.sh).
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_COLUMNS = 100
BANNER, SUBSECTION = "// ==== ", "// ---- "
# The manual and includes before layer 1 count with it.
LAYER_BUDGETS = {"1": 790, "2": 115, "3": 235, "4": 480, "5": 190, "6": 985, "7": 190, "8": 90}


def lines_of(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def title_of(banner):
    """A banner's or subsection's title: the text after its marker, up to the first run of
    '=' or '-' padding, trimmed ("3. Framing and protocol rules: pure functions, no I/O.")."""
    return re.split(r"[=-]{2,}", banner.strip()[len(BANNER):], maxsplit=1)[0].strip()


def quotes_title(quoted, title):
    """Whether a quoted title names this title: all of it, or a start that ends a word."""
    rest = title[len(quoted):]
    return bool(quoted) and title.startswith(quoted) and not (rest and rest[0].isalnum())


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
    check_walkthrough(header, check)
    print(f"RESULT passed={passed} failed={len(failures)} skipped=0")
    return 1 if failures else 0


def check_walkthrough(header, check):
    """docs/WALKTHROUGH.md names banners and subsections, never line numbers: each one it
    quotes must be in the header, and each layer must have a section quoting its banner."""
    name = os.path.join("docs", "WALKTHROUGH.md")
    check(os.path.isfile(os.path.join(ROOT, name)), f"{name} exists")
    if not os.path.isfile(os.path.join(ROOT, name)):
        return
    titles = {marker: [title_of(line) for line in header if line.strip().startswith(marker)]
              for marker in (BANNER, SUBSECTION)}
    # The text before the first "## " heading is no layer's section.
    sections = re.split(r"^## ", "\n".join(lines_of(name)), flags=re.MULTILINE)
    quoted = [[(q[:len(BANNER)], title_of(q))
               for q in re.findall(r"`(// (?:====|----) [^`]*)`", text)] for text in sections]
    stale = [f"{marker.strip()} {title}" for quotes in quoted for marker, title in quotes
             if not any(quotes_title(title, t) for t in titles[marker])]
    count = sum(len(quotes) for quotes in quoted)
    check(count > 0 and not stale, f"{name}: the {count} banners and subsections it quotes "
          "are in the header" + (f" (not found: {stale})" if stale else ""))
    layers = {title.split(".")[0]: title for title in titles[BANNER]}
    for number in sorted(LAYER_BUDGETS):
        title = layers.get(number)
        covered = title is not None and any(
            marker == BANNER and quoted_title.startswith(number + ".") and
            quotes_title(quoted_title, title)
            for quotes in quoted[1:] for marker, quoted_title in quotes)
        check(covered, f"{name}: layer {number} has a section quoting its banner")


if __name__ == "__main__":
    sys.exit(main())
