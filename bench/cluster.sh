#!/usr/bin/env bash
# bench/cluster.sh — one room on one chatsock server against the same room split over the three
# nodes of a cluster (demo_cluster_server on three routed nats-servers with JetStream), in the
# same run, and one markdown table with the ratios. Loopback and ephemeral ports only; every
# process started here is stopped at the end, and every wait is bounded.
#
#   bench/cluster.sh [--quick] [--repeat K] [--out DIR] [--no-pin]
#
#   --quick     fewer messages and 3 x 300 idle clients instead of 3 x 3,000: a smoke run
#   --repeat K  run the c30 and latency workloads K times (5), interleaved across the setups;
#               the table shows each figure's median
#   --out DIR   where results go (default bench/results/cluster-YYYYmmdd-HHMMSS)
#   --no-pin    do not pin (see below)
#
# Setups (every server with --no-flood-control and its conversation log on, as bench/run.sh
# runs demo_server):
#   one     demo_server alone, no NATS
#   node    node a of the cluster with every client on it: its events still go through NATS
#           to nodes b and c, which have no clients
#   three   the clients round robin over nodes a, b and c (chatsock_bench --ports): a message
#           reaches its sender's node's clients directly and the other two nodes' through NATS
# Workloads:
#   c30      30 clients x 1,000 messages x 64 B, each sending flat out: deliveries/s
#   latency  30 clients, 1,000 messages/s in all (100 each): p50/p99, send to receipt
#   idle     9,000 idle clients (3 x 3,000 on three), on fresh servers: connect time (to the
#            last welcome), one message from client 0 to the 8,999 others, server RSS
#
# Pinning, as bench/run.sh: with 2 or more CPUs and taskset, every server (chatsock and NATS)
# runs on the last CPU and the load generator on CPU 0 (not pinned in latency runs). Each setup
# gets the same one CPU, so the ratio is what going through NATS costs, not what more machines
# would bring (docs/CLUSTER.md, "Scaling", says what they would).
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

QUICK=0 REPEAT=5 OUT="" PIN=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeat) REPEAT="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --no-pin) PIN=0 ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

command -v nats-server > /dev/null || { echo "cluster.sh: needs nats-server (apt-get install nats-server)" >&2; exit 2; }
make -s demo_server cluster bench/chatsock_bench || { echo "cluster.sh: build failed" >&2; exit 2; }
[ -x ./demo_cluster_server ] || { echo "cluster.sh: needs libnats (apt-get install libnats-dev)" >&2; exit 2; }
BENCH=$ROOT/bench/chatsock_bench

if [ "$QUICK" = 1 ]; then PER_NODE=300 C30_M=100 LAT_M=30; else PER_NODE=3000 C30_M=1000 LAT_M=100; fi
IDLE_N=$((3 * PER_NODE)) LAT_RATE=1000
ulimit -n "$(ulimit -Hn)" 2>/dev/null
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_N + 64)) ]; then
    echo "cluster.sh: ulimit -n is $(ulimit -n), too few for $IDLE_N clients" >&2; exit 2
fi

SERVER_PIN=() BENCH_PIN=() PIN_NOTE="not pinned"
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset > /dev/null; then
    SERVER_PIN=(taskset -c "$(($(nproc) - 1))") BENCH_PIN=(taskset -c 0)
    PIN_NOTE="chatsock and NATS servers on CPU $(($(nproc) - 1)), load generator on CPU 0 except in latency runs"
fi

[ -n "$OUT" ] || OUT=$ROOT/bench/results/cluster-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
TMP=$(mktemp -d /tmp/chatsock-cluster-bench.XXXXXX)
PIDS=()  # every process started here, stopped by cleanup
cleanup() {  # stops them all, keeps what the servers printed: $OUT/<phase>-<server>.out
    local pid i f
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    PIDS=()
    [ "${PHASE:-}" = "" ] || for f in "$TMP"/*.out; do cp "$f" "$OUT/$((PHASE + 1))-$(basename "$f")" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
note() { printf '%s\n' "$*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_line() {  # PID FILE REGEX SECONDS: waits for a matching line of FILE, while PID lives
    local i=0
    while [ $i -lt $(($4 * 10)) ]; do
        grep -qE "$3" "$2" 2>/dev/null && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1; i=$((i + 1))
    done
    return 1
}
listening_port() { grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$1" | cut -d: -f2; }
cpu_ticks() { local p t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
rss_kb() { local p t=0; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
quiesce() {  # PIDS...: until they stop using CPU (the last run's clients gone), 90 s at most
    local i=0 a b
    a=$(cpu_ticks "$@")
    while [ $i -lt 300 ]; do
        sleep 0.3
        b=$(cpu_ticks "$@")
        [ $((b - a)) -le 1 ] && return 0
        a=$b; i=$((i + 1))
    done
}

declare -A PID PORT
NATS_PIDS=() NODE_PIDS=()
start_servers() {  # demo_server, three nats-servers, three nodes: fresh
    local i node out urls
    : > "$TMP/one.out"
    "${SERVER_PIN[@]}" ./demo_server --no-flood-control 127.0.0.1 0 "$TMP/one.log" > "$TMP/one.out" 2>&1 &
    PID[one]=$!; PIDS+=("$!")
    wait_line "${PID[one]}" "$TMP/one.out" '^listening on' 10 || { note "cluster.sh: demo_server did not start"; exit 1; }
    PORT[one]=$(listening_port "$TMP/one.out")
    local client=() route=()
    for i in 0 1 2; do client[i]=$(free_port); route[i]=$(free_port); done
    local routes="nats://127.0.0.1:${route[0]},nats://127.0.0.1:${route[1]},nats://127.0.0.1:${route[2]}"
    NATS_PIDS=()
    for i in 0 1 2; do
        rm -rf "$TMP/js$i"; : > "$TMP/nats$i.out"
        "${SERVER_PIN[@]}" nats-server -a 127.0.0.1 -p "${client[i]}" -n "nats$i" -js -sd "$TMP/js$i" \
            --cluster_name bench --cluster "nats://127.0.0.1:${route[i]}" --routes "$routes" > "$TMP/nats$i.out" 2>&1 &
        NATS_PIDS+=("$!"); PIDS+=("$!")
    done
    for i in 0 1 2; do
        wait_line "${NATS_PIDS[i]}" "$TMP/nats$i.out" 'Server is ready' 30 || { note "cluster.sh: nats-server $i did not start"; exit 1; }
    done
    NODE_PIDS=()
    for i in 0 1 2; do
        node=$(printf '%s' abc | cut -c$((i + 1)))
        urls="nats://127.0.0.1:${client[i]},nats://127.0.0.1:${client[(i + 1) % 3]},nats://127.0.0.1:${client[(i + 2) % 3]}"
        out=$TMP/node-$node.out; : > "$out"
        "${SERVER_PIN[@]}" ./demo_cluster_server --no-flood-control 127.0.0.1 0 "$TMP/node-$node.log" "$urls" "$node" > "$out" 2>&1 &
        PID[$node]=$!; NODE_PIDS+=("$!"); PIDS+=("$!")
    done
    for node in a b c; do
        out=$TMP/node-$node.out
        wait_line "${PID[$node]}" "$out" '^listening on' 10 && wait_line "${PID[$node]}" "$out" 'names bucket .* is ready' 60 \
            || { note "cluster.sh: node $node did not start:"; tail -5 "$out" >&2; exit 1; }
        PORT[$node]=$(listening_port "$out")
    done
    for node in a b c; do
        for other in a b c; do
            [ "$node" = "$other" ] || wait_line "${PID[$node]}" "$TMP/node-$node.out" "node $other is in the cluster" 30 \
                || { note "cluster.sh: node $node never heard of node $other"; exit 1; }
        done
    done
    note "== servers: one (demo_server) port ${PORT[one]}; nodes a, b, c ports ${PORT[a]}, ${PORT[b]}, ${PORT[c]}; nats ${client[*]}"
}
PHASE=0
stop_servers() {
    cleanup
    PHASE=$((PHASE + 1))
    TMP=$(mktemp -d /tmp/chatsock-cluster-bench.XXXXXX)
}

record() {  # SETUP WORKLOAD JSON [EXTRA-JSON-FIELDS]
    local json=$3
    [ -n "$json" ] || json='{"ok":false,"error":"no output"}'
    printf '%s\n' "{\"setup\":\"$1\",\"workload\":\"$2\",\"load1\":$(cut -d' ' -f1 /proc/loadavg),${4:+$4,}${json#\{}" >> "$RESULTS"
    note "   $1 $2 -> $(printf '%s' "$json" | grep -oE '"(ok|deliveries_per_s|lat_p50_us|lat_p99_us|connect_ms|broadcast_ms|server_rss_loaded_kb)":[^,}]*' | tr '\n' ' ')"
}

run() {  # SETUP WORKLOAD TIMEOUT BENCH-ARGS...
    local setup=$1 workload=$2 timeout=$3 ports pids pin=("${BENCH_PIN[@]}") json extra
    shift 3
    case "$setup" in
        one) ports=${PORT[one]} pids=${PID[one]} ;;
        node) ports=${PORT[a]} pids=${PID[a]} ;;
        three) ports=${PORT[a]},${PORT[b]},${PORT[c]} pids=${PID[a]},${PID[b]},${PID[c]} ;;
    esac
    quiesce "${PID[one]}" "${NODE_PIDS[@]}" "${NATS_PIDS[@]}"
    [ "$workload" = latency ] && pin=()
    extra="\"nats_rss_before_kb\":$(rss_kb "${NATS_PIDS[@]}")"
    json=$("${pin[@]}" "$BENCH" --ports "$ports" --server-pid "$pids" --timeout "$timeout" \
        --label "$setup:$workload" "$@" 2>>"$OUT/bench-stderr.txt" | tail -1)
    record "$setup" "$workload" "$json" "$extra,\"nats_rss_after_kb\":$(rss_kb "${NATS_PIDS[@]}")"
}

BUSY=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; sleep 2
       awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
BUSY=$(echo "$BUSY" | tr '\n' ' ' | awk '{ d = $4 - $2; print (d > 0 ? int(100 * ($3 - $1) / d) : 0) }')
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024) " MiB"}' /proc/meminfo)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- . ':!*.md' 2>/dev/null || echo ' (modified)')"
    echo "nats-server: $(nats-server --version 2>&1)"
    echo "pinning: $PIN_NOTE"
    echo "CPUs busy before the runs: $BUSY%"
    echo "workloads: c30 30x${C30_M}x64 B; latency 30 clients ${LAT_RATE}/s x ${LAT_M} each; idle ${IDLE_N}; repeats: $REPEAT"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

# Idle first, on fresh servers, so that the RSS is the clients'.
start_servers
for setup in one three; do
    run "$setup" idle 300 --clients "$IDLE_N" --idle --size 64 --connect-batch 256
done
stop_servers
start_servers
for _ in $(seq "$REPEAT"); do
    for setup in one node three; do run "$setup" c30 120 --clients 30 --messages "$C30_M" --size 64; done
    for setup in one node three; do run "$setup" latency 120 --clients 30 --messages "$LAT_M" --size 64 --rate "$LAT_RATE"; done
done
stop_servers

python3 - "$RESULTS" "$PER_NODE" "$C30_M" "$LAT_M" "$LAT_RATE" <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
per_node, c30_m, lat_m, rate = (int(a) for a in sys.argv[2:6])
def figure(setup, workload, key):
    vals = [r[key] for r in rows if r["setup"] == setup and r["workload"] == workload and r.get("ok") and key in r]
    return statistics.median(vals) if vals else None
def fmt(v, unit):
    if v is None: return "–"
    if unit == "/s": return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k"
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"
print("| workload | one: demo_server | node: 1 node of the cluster | three: 3 nodes | three / one |")
print("|---|---|---|---|---|")
table = [
    (f"30 clients × {c30_m:,} × 64 B — deliveries/s", "c30", "deliveries_per_s", "/s"),
    (f"latency, 30 clients, {rate:,} msg/s — p50 µs (lower is better)", "latency", "lat_p50_us", "us"),
    (f"latency, 30 clients, {rate:,} msg/s — p99 µs (lower is better)", "latency", "lat_p99_us", "us"),
    (f"{3 * per_node:,} idle clients — connect + welcome, ms", "idle", "connect_ms", "ms"),
    (f"{3 * per_node:,} idle clients — one message to all, ms", "idle", "broadcast_ms", "ms"),
    (f"{3 * per_node:,} idle clients — chatsock servers' RSS, KiB (summed)", "idle", "server_rss_loaded_kb", "kb"),
    (f"{3 * per_node:,} idle clients — RSS per client, KiB", "idle", "server_rss_per_client_kb", "kb"),
    (f"{3 * per_node:,} idle clients — the 3 NATS servers' RSS before the run, KiB", "idle", "nats_rss_before_kb", "kb"),
    (f"{3 * per_node:,} idle clients — the 3 NATS servers' RSS just after it, KiB", "idle", "nats_rss_after_kb", "kb"),
]
for label, workload, key, unit in table:
    vals = [figure(s, workload, key) for s in ("one", "node", "three")]
    if key.startswith("nats_"): vals[0] = None
    ratio = f"{vals[2] / vals[0]:.2f}×" if vals[0] and vals[2] is not None else "–"
    print(f"| {label} | {' | '.join(fmt(v, unit) for v in vals)} | {ratio} |")
failed = [f"{r['setup']}:{r['workload']}" for r in rows if not r.get("ok")]
runs = {w: sum(1 for r in rows if r["workload"] == w and r["setup"] == "one") for w in ("c30", "latency", "idle")}
print(f"\nc30 and latency: the median of {runs['c30']} run{'s' if runs['c30'] != 1 else ''} each; idle: one run, on fresh servers."
      + (f" Failed runs (left out): {', '.join(failed)}." if failed else " Every run passed: every delivery checked."))
EOF
# What the nodes said, once ready, that a run should not cause: a node counted lost, events
# missed, renewals failed, events dropped, the names bucket lost.
if awk '/names bucket .* is ready/ { ready[FILENAME] = 1; next }
        ready[FILENAME] && /node lost|missed [0-9]+ events|could not renew|dropped|unavailable/' \
        "$OUT"/*-node-*.out > "$OUT/warnings.txt" && [ -s "$OUT/warnings.txt" ]; then
    note "cluster.sh: the nodes said (all in $OUT/warnings.txt):"; head -5 "$OUT/warnings.txt" >&2
else
    note "the nodes said nothing of lost nodes, missed events, failed renewals or dropped events"
fi
note "results: $OUT"
if grep -q '"ok":false' "$RESULTS"; then note "cluster.sh: some runs failed (see $OUT/bench-stderr.txt)"; exit 1; fi
exit 0
