#!/usr/bin/env bash
# Runs one fan-out scenario several times against a fresh release server each time and prints
# every run's loadgen JSON plus a Markdown row of the medians (the BENCHMARKS.md tables).
#
#   tools/bench-fanout.sh LABEL RUNS SHARDS [loadgen flags…]
#   e.g. tools/bench-fanout.sh "B1 s2 N=1000" 3 2 --overlays 1000
#
# Server: target/release/spectra-server on 127.0.0.1 (replay logs in a temporary directory),
# ended by PID with SIGTERM after each run. Needs `cargo build --release --bin spectra-server
# --bin loadgen` first. Talks only to 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
label=$1 runs=$2 shards=$3
shift 3
ulimit -n 20000 2>/dev/null || true
out=$(mktemp)
for i in $(seq 1 "$runs"); do
  replays=$(mktemp -d)
  target/release/spectra-server --shards "$shards" --auth-key LGKEY --bind 127.0.0.1 \
    --replay-dir "$replays" >/dev/null 2>&1 &
  server=$!
  sleep 1
  target/release/loadgen --key LGKEY --server-pid "$server" --json --duration 10 --warmup 3 "$@" \
    | tee -a "$out"
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$replays"
  sleep 1
done
python3 - "$label" "$out" <<'PY'
import json, statistics, sys
label, path = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(path) if l.startswith("{")]
m = lambda f: statistics.median(f(r) for r in runs)
print(f"| {label} | {m(lambda r: r['deliveries_per_s']):,.0f} ({runs[0]['expected_per_s']:,.0f}) "
      f"| {m(lambda r: r['latency_ms']['p50']):.1f} / {m(lambda r: r['latency_ms']['p99']):.1f} / {m(lambda r: r['latency_ms']['p999']):.1f} "
      f"| {m(lambda r: r['drops']):.0f} | {m(lambda r: r['server_cpu_per_delivery_us'] or 0):.1f} µs "
      f"| {m(lambda r: r['server_rss_per_idle_connection_kb'] or 0):.1f} KB | {m(lambda r: r['server_rss_max_mb']):.1f} MB | {len(runs)} |")
PY
rm -f "$out"
