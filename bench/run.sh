#!/usr/bin/env bash
# bench/run.sh — chatsock's benchmark: fixed workloads against demo_server (and, on request,
# Redis pub/sub and the classic Python select() server), one markdown table at the end.
# demo_server runs with --no-flood-control: the workloads send as fast as they can, which flood
# control would (rightly) slow down; what is measured is the relay.
#
#   bench/run.sh [--quick] [--redis] [--python] [--log-off-too] [--no-log] [--server 'CMD {port}']
#                [--server-proto chatsock|classic] [--sweep | --sweep-only] [--out DIR]
#                [--wait-quiet SECONDS] [--repeat K] [--no-pin]
#
#   --quick         scaled-down workloads: a smoke run of a minute or two
#   --redis         also run the workloads on redis-server (must be installed: apt-get install
#                   redis-server); it is started here on 127.0.0.1 and a free port, no persistence
#   --python        also run them on tests/classic/classic_server.py
#   --log-off-too   also run the throughput workloads on a second demo_server without its log
#                   (column "nolog"), to show what the conversation log costs
#   --no-log        demo_server without its conversation log. demo_server has no switch for
#                   that; its third argument is the log path and an empty one means no log, so
#                   it is started with "" (the default run logs to a file in a temp directory)
#   --server CMD    benchmark this command instead of demo_server; {port} becomes a free port
#   --server-proto  what the --server command speaks: chatsock (welcome notice; the default)
#                   or classic (no notices)
#   --sweep         also run the client-count sweep (2..500 clients) that bench/plot.sh draws
#   --sweep-only    only the sweep
#   --out DIR       where results go (default bench/results/YYYYmmdd-HHMMSS)
#   --repeat K      run every workload K times (interleaved across servers); the table shows
#                   the median of each figure
#   --wait-quiet S  first wait up to S seconds for the machine to be idle (other processes using
#                   under 15% of the CPUs): on a 2-core machine anything else running skews results
#   --no-pin        do not pin: by default, with 2 or more CPUs and taskset, every server runs on
#                   the last CPU and the load generator on CPU 0, so that the two never share a
#                   core. Not pinned even so: the raw ceilings (their writer and reader are free)
#                   and the load generator in latency runs, where it reads 98,000 deliveries a
#                   second and is busy 70-90% of a core: pinned, it queues behind itself
#
# Workloads (the full run's sizes; --quick sends fewer messages and connects fewer clients):
#   pair, c50, c500, big4k   2, 50 and 500 clients with 64 B messages, 50 with 4 KiB: each client
#               sends flat out and receives everyone else's; deliveries/s (big4k also MB/s)
#   mixed       c50's room (50 clients x 2,000 x 64 B) made of the three kinds of client a chatsock
#               server takes on one port: 17 framed, 17 line (nc/telnet) and 16 WebSocket clients,
#               interleaved (chatsock_bench --mix); deliveries/s, shown next to c50's all-framed
#               figure. Only on servers that speak all three: demo_server, or --server with
#               --server-proto chatsock
#   latency     50 clients, 2,000 messages/s in all: p50/p99/max from send to receipt
#   idle_small, idle   1,000 and 10,000 idle clients: connect time, one broadcast to all, RSS
#   sweepN      (--sweep) N = 2..500 clients: the deliveries/s curve bench/plot.sh draws
#
# Each run is one bench/chatsock_bench invocation printing one JSON line; they are collected
# in DIR/results.jsonl with the server and workload added, then tabulated into DIR/table.md.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0 REDIS=0 PYTHON=0 NOLOG=0 NOLOG_TOO=0 SWEEP=0 MAIN=1 PIN=1
CUSTOM="" CUSTOM_PROTO=chatsock OUT="" WAIT_QUIET=0 REPEAT=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --redis) REDIS=1 ;;
        --python) PYTHON=1 ;;
        --no-log) NOLOG=1 ;;
        --log-off-too) NOLOG_TOO=1 ;;
        --no-pin) PIN=0 ;;
        --sweep) SWEEP=1 ;;
        --sweep-only) SWEEP=1 MAIN=0 ;;
        --server) CUSTOM="$2"; shift ;;
        --server-proto) CUSTOM_PROTO="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --wait-quiet) WAIT_QUIET="$2"; shift ;;
        --repeat) REPEAT="$2"; shift ;;
        -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

# ---- build, limits, scratch ------------------------------------------------------------------
make -s demo_server bench || { echo "run.sh: build failed" >&2; exit 2; }
BENCH=$ROOT/bench/chatsock_bench

HARD=$(ulimit -Hn)
ulimit -n "$HARD" 2>/dev/null || echo "run.sh: could not raise ulimit -n to $HARD" >&2
NOFILE=$(ulimit -n)
# fits N: the bench may open N connections (and a few descriptors of its own).
fits() { [ "$NOFILE" = unlimited ] || [ "$NOFILE" -ge $(($1 + 64)) ]; }

# Pinning: the server on the last CPU, the load generator on CPU 0.
SERVER_PIN=() BENCH_PIN=() WRITER_CPU=() PIN_NOTE="not pinned"
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset > /dev/null; then
    SERVER_PIN=(taskset -c "$(($(nproc) - 1))") BENCH_PIN=(taskset -c 0)
    WRITER_CPU=(--writer-cpu "$(($(nproc) - 1))")  # the broadcast floor's writer, where servers run
    PIN_NOTE="servers on CPU $(($(nproc) - 1)), load generator on CPU 0 except in latency runs (taskset)"
fi

[ -n "$OUT" ] || OUT=$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
TMP=$(mktemp -d /tmp/chatsock-bench.XXXXXX)
cleanup() {
    stop_all 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { printf '%s\n' "$*" >&2; }

# Percent of all CPUs busy over two seconds, from /proc/stat.
busy_pct() {
    local a b
    a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
    echo "$a $b" | awk '{ d = $4 - $2; print (d > 0 ? int(100 * ($3 - $1) / d) : 0) }'
}
BUSY=$(busy_pct)
if [ "$WAIT_QUIET" -gt 0 ]; then
    waited=0
    while [ "$BUSY" -ge 15 ] && [ "$waited" -lt "$WAIT_QUIET" ]; do
        printf 'run.sh: the machine is %s%% busy; waiting for it to be quiet\n' "$BUSY" >&2
        sleep 8; waited=$((waited + 10))
        BUSY=$(busy_pct)
    done
fi
[ "$BUSY" -ge 15 ] && printf 'run.sh: note: other processes keep the CPUs %s%% busy: expect noisy results\n' "$BUSY" >&2

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- chatsock.hpp 2>/dev/null || echo ' (chatsock.hpp modified)')"
    echo "ulimit -n: $NOFILE"
    echo "pinning: $PIN_NOTE"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); CPUs busy before the runs: $BUSY%"
} > "$OUT/env.txt"

# ---- servers ----------------------------------------------------------------------------------
# Every server runs for the whole benchmark (an idle one costs nothing), and each workload goes
# to each server in turn, so that anything else happening on the machine hits all of them alike.
declare -A PID PORT PROTO

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for_port_line PID FILE REGEX SECONDS: the port in the "127.0.0.1:PORT" of the matching line
wait_for_port_line() {
    local pid=$1 file=$2 regex=$3 limit=$4 i=0 line
    while [ $i -lt $((limit * 10)) ]; do
        if line=$(grep -m1 -E "$regex" "$file" 2>/dev/null); then
            echo "$line" | grep -oE '127\.0\.0\.1:[0-9]+' | head -1 | cut -d: -f2
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

wait_for_connect() {  # PID PORT SECONDS
    local i=0
    while [ $i -lt $(($3 * 10)) ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

# start_server NAME: chatsock (demo_server), nolog (demo_server without its log), floor
# (bench/floor_relay), redis, python or custom.
start_server() {
    local name=$1 log=$TMP/conversation-$1.log pid port="" out=$OUT/server-$1.out
    [ "$NOLOG" = 1 ] || [ "$name" = nolog ] && log=""
    # Emptied here, not only by the background job's redirect: a restarted server's port must
    # not be read from the line its predecessor left in the file.
    : > "$out"
    case "$name" in
        chatsock|nolog)
            "${SERVER_PIN[@]}" ./demo_server --no-flood-control 127.0.0.1 0 "$log" > "$out" 2>&1 &
            pid=$!; PROTO[$name]=chatsock
            port=$(wait_for_port_line "$pid" "$out" '^listening on' 10) ;;
        floor)
            "${SERVER_PIN[@]}" ./bench/floor_relay 127.0.0.1 0 > "$out" 2>&1 &
            pid=$!; PROTO[$name]=classic
            port=$(wait_for_port_line "$pid" "$out" '^listening on' 10) ;;
        python)
            "${SERVER_PIN[@]}" python3 -u tests/classic/classic_server.py 127.0.0.1 0 > "$out" 2>&1 &
            pid=$!; PROTO[$name]=classic
            port=$(wait_for_port_line "$pid" "$out" '^Listening for connections' 10) ;;
        redis)
            port=$(free_port)
            "${SERVER_PIN[@]}" redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --save '' --appendonly no \
                --maxclients 20000 --daemonize no --logfile "$OUT/server-redis.log" > "$out" 2>&1 &
            pid=$!; PROTO[$name]=redis
            wait_for_connect "$pid" "$port" 10 || port="" ;;
        custom)
            port=$(free_port)
            "${SERVER_PIN[@]}" bash -c "exec ${CUSTOM//\{port\}/$port}" > "$out" 2>&1 &
            pid=$!; PROTO[$name]=$CUSTOM_PROTO
            wait_for_connect "$pid" "$port" 10 || port="" ;;
    esac
    PID[$name]=$pid
    if [ -z "$port" ]; then
        note "run.sh: server $name did not start; see $out"
        stop_server "$name"
        return 1
    fi
    PORT[$name]=$port
    sleep 0.2
    note "== $name: pid $pid, port $port"
}

stop_server() {
    local pid=${PID[$1]:-} i=0
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    PID[$1]=""
}

stop_all() { local s; for s in "${!PID[@]}"; do stop_server "$s"; done; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo -1; }

# The previous run's clients are gone once the server stops using CPU (a chat server announces
# every leave to everyone left, which takes a while after 10,000 clients).
quiesce() {
    local pid=$1 i=0 a b
    a=$(cpu_ticks "$pid")
    while [ $i -lt 300 ]; do
        sleep 0.3
        b=$(cpu_ticks "$pid")
        [ $((b - a)) -le 1 ] && return 0
        a=$b; i=$((i + 1))
    done
}

record() {  # SERVER WORKLOAD JSON — adds the server, the workload and the load average
    local server=$1 workload=$2 json=$3 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    [ -n "$json" ] || json='{"ok":false,"error":"no output"}'
    printf '%s\n' "{\"server\":\"$server\",\"workload\":\"$workload\",\"load1\":$load,${json#\{}" >> "$RESULTS"
}

record_rss() {  # SERVER WHAT
    record "$1" "rss_$2" "{\"rss_kb\":$(rss_kb "${PID[$1]}"),\"hwm_kb\":$(hwm_kb "${PID[$1]}")}"
}

# run SERVER WORKLOAD TIMEOUT BENCH-ARGS...
run() {
    local server=$1 workload=$2 timeout=$3 json
    shift 3
    [ -n "${PID[$server]:-}" ] || return 0
    quiesce "${PID[$server]}"
    note "   $server $workload: $*"
    local pin=("${BENCH_PIN[@]}")
    [ "$workload" = latency ] && pin=()  # see --no-pin above
    json=$("${pin[@]}" "$BENCH" --port "${PORT[$server]}" --proto "${PROTO[$server]}" --server-pid "${PID[$server]}" \
        --timeout "$timeout" --label "$server:$workload" "$@" 2>>"$OUT/bench-stderr.txt" | tail -1)
    record "$server" "$workload" "$json"
    note "   -> $(printf '%s' "$json" | grep -oE '"(ok|deliveries_per_s|payload_MBps|lat_p50_us|lat_p99_us|connect_ms|broadcast_ms|refused)":[^,}]*' | tr '\n' ' ')"
}

# ---- workloads --------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
    PAIR_M=10000 C50_M=200 C500_M=10 BIG_M=100 LAT_M=40 IDLE_N=1000 SMALL_IDLE_N=200
    RAW_BYTES=$((512 << 20)) SWEEP_DELIVERIES=200000
else
    PAIR_M=100000 C50_M=2000 C500_M=100 BIG_M=1000 LAT_M=200 IDLE_N=10000 SMALL_IDLE_N=1000
    RAW_BYTES=$((4 << 30)) SWEEP_DELIVERIES=2000000
fi
LAT_RATE=2000
# mixed: c50's shape (50 clients, C50_M messages of 64 B each), a third of each kind.
MIX=frames:17,lines:17,websocket:16
echo "workloads: pair 2x${PAIR_M}x64, c50 50x${C50_M}x64, mixed 50 ($MIX)x${C50_M}x64, c500 500x${C500_M}x64, big 50x${BIG_M}x4096, latency 50 clients ${LAT_RATE}/s x ${LAT_M} each, idle ${IDLE_N} and ${SMALL_IDLE_N}; repeats: $REPEAT" >> "$OUT/env.txt"

# The Python server relays with one blocking sendall() per recipient: its heaviest runs are
# scaled down (deliveries/s is a rate, so the numbers stay comparable) to keep it to minutes.
scaled() {  # SERVER M -> M for that server
    if [ "$1" = python ]; then echo $(( $2 / 5 > 0 ? $2 / 5 : 1 )); else echo "$2"; fi
}

SERVERS=()
if [ -n "$CUSTOM" ]; then SERVERS+=(custom); else SERVERS+=(chatsock); fi
if [ "$REDIS" = 1 ]; then
    if command -v redis-server > /dev/null; then SERVERS+=(redis)
    else note "run.sh: --redis: redis-server is not installed (apt-get install redis-server); skipped"; fi
fi
[ "$PYTHON" = 1 ] && SERVERS+=(python)
[ "$NOLOG_TOO" = 1 ] && [ -z "$CUSTOM" ] && [ "$NOLOG" = 0 ] && SERVERS+=(nolog)
[ -z "$CUSTOM" ] && SERVERS+=(floor)

# The log-off server only runs the throughput workloads: it is there to show the log's cost.
# bench/floor_relay only runs the latency workload: the least a relay can do per message (one
# recv, one send per recipient, nothing else) is the floor chatsock's latency is compared with.
# The mixed room needs line and WebSocket clients: Redis and the classic server have neither.
takes() {  # SERVER WORKLOAD
    case "$1" in
        nolog) case "$2" in pair|c50|c500|big4k) return 0 ;; *) return 1 ;; esac ;;
        floor) [ "$2" = latency ] ;;
        redis|python) [ "$2" != mixed ] ;;
        custom) [ "$2" != mixed ] || [ "$CUSTOM_PROTO" = chatsock ] ;;
        *) return 0 ;;
    esac
}

each() {  # WORKLOAD TIMEOUT BENCH-ARGS... on every server, REPEAT times
    local workload=$1 timeout=$2 s r
    shift 2
    for r in $(seq "$REPEAT"); do
        for s in "${SERVERS[@]}"; do takes "$s" "$workload" && run "$s" "$workload" "$timeout" "$@"; done
    done
}

for s in "${SERVERS[@]}"; do
    start_server "$s" && record_rss "$s" start
done

if [ "$MAIN" = 1 ]; then
    # The loopback ceilings: one connection (1 MiB writes), and the fan-out's shape — 49
    # connections written round robin from one 64 KiB buffer — with no work besides the I/O.
    note "== raw loopback ceilings"
    for r in $(seq "$REPEAT"); do
        record raw raw "$("$BENCH" --raw --raw-bytes "$RAW_BYTES" --timeout 60 --label raw 2>>"$OUT/bench-stderr.txt" | tail -1)"
        record raw raw49 "$("$BENCH" --raw --raw-streams 49 --raw-chunk 65536 --raw-bytes "$RAW_BYTES" --timeout 60 \
            --label raw49 2>>"$OUT/bench-stderr.txt" | tail -1)"
    done
    for r in $(seq "$REPEAT"); do
        for s in "${SERVERS[@]}"; do takes "$s" pair && run "$s" pair 180 --clients 2 --messages "$PAIR_M" --size 64; done
        for s in "${SERVERS[@]}"; do takes "$s" c50 && run "$s" c50 180 --clients 50 --messages "$(scaled "$s" "$C50_M")" --size 64; done
        for s in "${SERVERS[@]}"; do takes "$s" mixed && run "$s" mixed 180 --mix "$MIX" --messages "$C50_M" --size 64; done
        for s in "${SERVERS[@]}"; do takes "$s" c500 && run "$s" c500 300 --clients 500 --messages "$(scaled "$s" "$C500_M")" --size 64; done
        for s in "${SERVERS[@]}"; do takes "$s" big4k && run "$s" big4k 180 --clients 50 --messages "$(scaled "$s" "$BIG_M")" --size 4096; done
    done
    for s in "${SERVERS[@]}"; do [ -n "${PID[$s]:-}" ] && quiesce "${PID[$s]}" && record_rss "$s" after_big; done
    each latency 120 --clients 50 --messages "$LAT_M" --size 64 --rate "$LAT_RATE"
    if fits "$SMALL_IDLE_N"; then each idle_small 180 --clients "$SMALL_IDLE_N" --idle --size 64
    else note "run.sh: ulimit -n is $NOFILE (hard $HARD): the $SMALL_IDLE_N-client runs are skipped"; fi
fi
if [ "$SWEEP" = 1 ]; then
    for n in 2 10 50 100 200 500; do
        m=$(( SWEEP_DELIVERIES / (n * (n - 1)) ))
        [ "$m" -lt 10 ] && m=10
        [ "$m" -gt 500000 ] && m=500000
        for r in $(seq "$REPEAT"); do
            for s in "${SERVERS[@]}"; do
                takes "$s" "sweep$n" || continue
                ms=$m
                [ "$s" = python ] && [ "$m" -gt 20 ] && ms=$(( m / 4 ))
                run "$s" "sweep$n" 300 --clients "$n" --messages "$ms" --size 64
            done
        done
    done
fi
if [ "$MAIN" = 1 ] && ! fits "$IDLE_N"; then
    note "run.sh: ulimit -n is $NOFILE (hard $HARD): the $IDLE_N-client runs are skipped"
elif [ "$MAIN" = 1 ]; then
    # The floor of the broadcast: a plain loop of send() calls to as many idle connections,
    # one 90-byte chunk each (a delivery's size on the wire), read by the bench.
    note "== broadcast floor, $((IDLE_N - 1)) connections"
    for r in $(seq "$REPEAT"); do
        record raw raw_broadcast "$("${BENCH_PIN[@]}" "$BENCH" --raw-broadcast $((IDLE_N - 1)) --raw-chunk 90 \
            "${WRITER_CPU[@]}" --timeout 60 --label raw_broadcast 2>>"$OUT/bench-stderr.txt" | tail -1)"
    done
    # Many idle clients, each server fresh so that its RSS growth is the clients'. None for
    # Python (select() cannot watch descriptors past FD_SETSIZE, 1024).
    for s in "${SERVERS[@]}"; do
        [ "$s" = python ] && { note "   python idle: skipped (select() stops at 1,024 descriptors)"; continue; }
        takes "$s" idle || { stop_server "$s"; continue; }
        stop_server "$s"
        start_server "$s" || continue
        record_rss "$s" idle_start
        run "$s" idle 300 --clients "$IDLE_N" --idle --size 64 --connect-batch 256
        stop_server "$s"
    done
fi
stop_all
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/env.txt"

# ---- the table --------------------------------------------------------------------------------
python3 "$ROOT/bench/table.py" "$OUT" | tee "$OUT/table.md"
note "results: $OUT"
if grep -q '"ok":false' "$RESULTS"; then
    note "run.sh: some runs failed (see the table's notes and $OUT/bench-stderr.txt)"
    exit 1
fi
exit 0
