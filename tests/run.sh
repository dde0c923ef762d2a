#!/usr/bin/env bash
# Runs every test suite and ends with one line: "N passed, N failed".
# Used by `make test` (after it has built the demos and the test binaries).
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

run_doctest "unit tests ($(uname -s) default poller)" tests/bin/unit
run_doctest "unit tests (poll() backend forced)" tests/bin/unit_poll
for script in tests/e2e_*.py; do
    [ -e "$script" ] && run_python "$(basename "$script")" python3 "$script"
done

run_python "mutation register: every entry still matches the header" python3 tools/mutate.py --check
run_python "the header's text: Windows in layer 1, 100 columns, its line budget" python3 tools/check_header.py
finish
