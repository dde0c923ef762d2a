#!/usr/bin/env bash
# Runs every test suite and ends with one line: "N passed, N failed".
# Used by `make test` (after it has built the demos and the test binaries).
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0

# doctest binaries: count test cases from doctest's summary line.
run_doctest() {
    local name=$1 bin=$2 out
    echo "== $name"
    out=$("$bin" --no-intro 2>&1)
    local rc=$?
    echo "$out" | tail -n 25
    local line p f
    line=$(echo "$out" | grep -E '^\[doctest\] test cases:' | tail -n 1)
    p=$(echo "$line" | sed -nE 's/.*\| *([0-9]+) passed.*/\1/p')
    f=$(echo "$line" | sed -nE 's/.*\| *([0-9]+) failed.*/\1/p')
    if [ -z "$p" ]; then p=0; f=1; fi        # crashed before its summary
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
}

# Python end-to-end suites (unittest): they print "RESULT passed=N failed=N".
run_python() {
    local name=$1 script=$2 out
    echo "== $name"
    out=$(timeout 600 python3 "$script" 2>&1)
    local rc=$?
    echo "$out" | tail -n 40
    local p f
    p=$(echo "$out" | sed -nE 's/^RESULT passed=([0-9]+) failed=([0-9]+)$/\1/p' | tail -n 1)
    f=$(echo "$out" | sed -nE 's/^RESULT passed=([0-9]+) failed=([0-9]+)$/\2/p' | tail -n 1)
    if [ -z "$p" ]; then p=0; f=1; fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
}

run_doctest "unit tests ($(uname -s) default poller)" tests/bin/unit
run_doctest "unit tests (poll() backend forced)" tests/bin/unit_poll
for script in tests/e2e_*.py; do
    [ -e "$script" ] && run_python "$(basename "$script")" "$script"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
