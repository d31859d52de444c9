#!/usr/bin/env bash
# The bare fan-out baseline measured like the server: `fanout-baseline` (one pre-built frame
# written to N sockets at 10 Hz, nothing else) pinned to CPU 0 and `loadgen --raw` (counting by
# frame headers) pinned to CPU 1, in a private network namespace this script creates (loopback
# only) and deletes. Prints each run's baseline and generator figures as JSON, then a Markdown
# row of the medians. Needs root (ip netns) and
# `cargo build --release --bin fanout-baseline --bin loadgen`.
#
#   tools/bench-baseline.sh CONNECTIONS RUNS [loadgen flags…, e.g. --count-pace-ms 300]
#   BASELINE_FLAGS="--per-room 2 --rate 5" tools/bench-baseline.sh 200 3     many small rooms (B4)
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 runs=$2
shift 2
source tools/lib/netns.sh
netns_create spectra-baseline
out=$(mktemp)
for i in $(seq 1 "$runs"); do
  base_out=$(mktemp)
  ip netns exec "$ns" taskset -c 0 target/release/fanout-baseline --port 5300 --connections "$n" \
    --duration 10 ${BASELINE_FLAGS:-} >"$base_out" 2>/dev/null &
  baseline=$!
  sleep 0.5
  gen=$(ip netns exec "$ns" taskset -c 1 target/release/loadgen --raw --broadcast 127.0.0.1:5300 \
    --overlays "$n" --duration 12 --warmup 0 --json "$@" 2>/dev/null | tail -n 1)
  wait "$baseline" || true
  python3 - "$base_out" "$gen" >>"$out" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
base = json.loads(lines[-1])
gen = json.loads(sys.argv[2])
print(json.dumps({"baseline": base, "generator_cpu_pct": gen.get("generator_cpu_pct"),
                  "generator_deliveries_per_s": gen.get("deliveries_per_s"), "valid": gen.get("valid")}))
PY
  tail -n 1 "$out"
  rm -f "$base_out"
  sleep 1
done
python3 - "$out" "$n" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
m = lambda f: statistics.median(f(r) for r in runs)
print(f"| baseline, {int(sys.argv[2]):,} sockets | {m(lambda r: r['baseline']['deliveries_per_s']):,.0f} "
      f"| {m(lambda r: r['baseline']['cpu_per_delivery_us']):.2f} µs "
      f"| {m(lambda r: r['generator_cpu_pct'] or 0):.0f} % | {len(runs)} |")
PY
rm -f "$out"
