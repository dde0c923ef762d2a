#!/usr/bin/env bash
# The Windows builds under wine: the unit tests (unit.exe), the end-to-end suites against
# demo_server.exe and demo_client.exe, then mixed runs (the Windows server with the Linux
# client and the Linux server with the Windows client) and the mixed-chat and UTF-8 checks.
# e2e_console.py's WindowsConsole tests (the .exe programs in a terminal: wine's console) run here.
# Ends with one line: "N passed, N failed". Used by `make test-windows` (after `make windows all`).
set -u
cd "$(dirname "$0")/.." || exit 1
. tests/lib.sh

export WINEDEBUG=-all  # wine's own diagnostics would mix with the programs' stderr
ROOT=$PWD
WIN_SERVER="wine $ROOT/demo_server.exe"
WIN_CLIENT="wine $ROOT/demo_client.exe"

# The first wine command of a session creates or updates the prefix (~/.wine), which takes
# seconds and may print to stderr: do that now, not inside a timed test. (demo_client exits at
# once on a bad port.)
wine "$ROOT/demo_client.exe" 127.0.0.1 not-a-port >/dev/null 2>&1

# One wine process lives for the whole run, so the wineserver does too: it otherwise exits 3 s
# after its last process, and a wine program starting just then dies with "wine client error:0:
# recvmsg: Connection reset by peer". It is a demo_server on a port of its own; SIGINT (which
# wine delivers as Ctrl+C) stops it at the end.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/chatsock-wine-XXXXXX")
wine "$ROOT/demo_server.exe" 127.0.0.1 0 "$scratch/keepalive.log" </dev/null >/dev/null 2>&1 &
keepalive=$!
cleanup() {
    kill -INT "$keepalive" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$keepalive" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$keepalive" 2>/dev/null
    wait "$keepalive" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT

# unit.exe runs in the scratch directory: anything a test leaves behind stays out of the tree.
# shellcheck disable=SC2016  # $1 and $@ are the inner shell's
run_doctest "unit tests (Windows, WSAPoll, under wine)" \
    sh -c 'cd "$1" && shift && exec "$@"' sh "$scratch" wine "$ROOT/tests/bin/unit.exe"

# The suites that run the demos through harness.py's DEMO_SERVER and DEMO_CLIENT.
for script in tests/e2e_demos.py tests/e2e_interop.py tests/e2e_console.py tests/e2e_web.py; do
    run_python "$(basename "$script") (Windows server and client)" \
        env CHATSOCK_SERVER_CMD="$WIN_SERVER" CHATSOCK_CLIENT_CMD="$WIN_CLIENT" python3 "$script"
done
run_python "e2e_demos.py (Windows server, Linux client)" \
    env CHATSOCK_SERVER_CMD="$WIN_SERVER" CHATSOCK_CLIENT_CMD="$ROOT/demo_client" python3 tests/e2e_demos.py
run_python "e2e_demos.py (Linux server, Windows client)" \
    env CHATSOCK_SERVER_CMD="$ROOT/demo_server" CHATSOCK_CLIENT_CMD="$WIN_CLIENT" python3 tests/e2e_demos.py
run_python "e2e_mixed.py (both in one chat; UTF-8 through the Windows client)" \
    python3 tests/windows/e2e_mixed.py

finish
