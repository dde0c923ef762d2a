#!/usr/bin/env bash
# bench/plot.sh — deliveries/s against client count (2 to 500 clients, 64-byte messages), one
# line per server, drawn with gnuplot into bench/deliveries.svg.
#
#   bench/plot.sh [--redis] [--python] [--quick]   runs the sweep (bench/run.sh --sweep-only), then plots
#   bench/plot.sh --from DIR                       plots DIR/sweep.tsv of an earlier run.sh --sweep
#   bench/plot.sh ... --svg FILE                   writes FILE instead of bench/deliveries.svg
#
# Needs gnuplot (Debian: apt-get install gnuplot-nox).
set -u
cd "$(dirname "$0")/.."
FROM="" SVG=bench/deliveries.svg
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --from) FROM="$2"; shift ;;
        --svg) SVG="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done
command -v gnuplot > /dev/null || { echo "plot.sh: gnuplot is not installed (apt-get install gnuplot-nox)" >&2; exit 2; }

if [ -z "$FROM" ]; then
    FROM=bench/results/sweep-$(date +%Y%m%d-%H%M%S)
    bench/run.sh --sweep-only --out "$FROM" "${ARGS[@]+"${ARGS[@]}"}"
fi
TSV=$FROM/sweep.tsv
[ -s "$TSV" ] || { echo "plot.sh: no $TSV (run bench/run.sh --sweep first)" >&2; exit 2; }

COLUMNS=$(head -1 "$TSV" | awk -F'\t' '{print NF}')
gnuplot <<EOF
set terminal svg size 800,500 dynamic enhanced font "sans,12" background rgb "white"
set output "$SVG"
set datafile separator "\t"
set datafile missing "NaN"
set title "Messages delivered per second by client count (64-byte messages, every client sends, loopback)"
set xlabel "clients"
set ylabel "deliveries per second"
set logscale xy
set xtics (2, 10, 50, 100, 200, 500)
set format y "%.0s%c"
set grid
set pointsize 1.2
set key top left
plot for [i=2:$COLUMNS] "$TSV" using 1:i with linespoints linewidth 2 pointtype 7 title columnhead(i)
EOF
echo "plot.sh: wrote $SVG from $TSV"
