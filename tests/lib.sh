# shellcheck shell=bash
# tests/lib.sh — shared by run.sh and run_windows.sh (sourced, not run): each function runs one
# suite, shows the end of its output and adds its counts to $passed and $failed. A suite that
# dies before its summary counts as one failure. Skipped tests count as neither.
passed=0
failed=0
skipped=0
SUITE_TIMEOUT=${SUITE_TIMEOUT:-600}

# run_doctest NAME COMMAND...: a doctest binary; counts test cases from doctest's summary line.
# A test case that printed "MESSAGE: SKIPPED: why" (cst::skip) counts as skipped, not passed.
run_doctest() {
    local name=$1 out rc line p f s
    shift
    echo "== $name"
    out=$(timeout "$SUITE_TIMEOUT" "$@" --no-intro 2>&1)
    rc=$?
    echo "$out" | tail -n 25
    line=$(echo "$out" | grep -E '^\[doctest\] test cases:' | tail -n 1)
    p=$(echo "$line" | sed -nE 's/.*\| *([0-9]+) passed.*/\1/p')
    f=$(echo "$line" | sed -nE 's/.*\| *([0-9]+) failed.*/\1/p')
    if [ -z "$p" ]; then p=0; f=1; fi        # crashed before its summary
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    s=$(echo "$out" | grep -c 'MESSAGE: SKIPPED: ')
    if [ "$s" -gt 0 ]; then echo "$out" | grep 'MESSAGE: SKIPPED: '; fi
    p=$((p > s ? p - s : 0))
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
}

# run_python NAME COMMAND...: a Python suite (unittest, see tests/harness.py) that ends with
# "RESULT passed=N failed=N skipped=N".
run_python() {
    local name=$1 out rc line p f s
    shift
    echo "== $name"
    out=$(timeout "$SUITE_TIMEOUT" "$@" 2>&1)
    rc=$?
    echo "$out" | tail -n 40
    line=$(echo "$out" | grep -E '^RESULT passed=[0-9]+ failed=[0-9]+' | tail -n 1)
    p=$(echo "$line" | sed -nE 's/^RESULT passed=([0-9]+) .*/\1/p')
    f=$(echo "$line" | sed -nE 's/^RESULT passed=[0-9]+ failed=([0-9]+).*/\1/p')
    s=$(echo "$line" | sed -nE 's/.* skipped=([0-9]+).*/\1/p')
    if [ -z "$p" ]; then p=0; f=1; fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + ${s:-0}))
}

# finish: the last line, "N passed, N failed"; the status says whether all passed.
finish() {
    if [ "$skipped" -gt 0 ]; then echo "($skipped skipped: the SKIPPED lines above say why)"; fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
