#!/usr/bin/env bash
# The server's CPU per delivery as a ratio to the bare fan-out baseline's, in one run: alternates
# `fanout-baseline` (one pre-built frame `send`-ed to N sockets at 10 Hz) and `spectra-server`
# (one match, N overlays), each pinned to CPU 0, with `loadgen` pinned to CPU 1, in a private
# network namespace this script creates (loopback only) and deletes. Besides the CPU (user and
# system) per delivery it samples /proc/interrupts during each measured window and reports, per
# delivery, the function-call IPIs CPU 1 received (`CAL`: on loopback with receive packet
# steering, each one is the sender's core handing CPU 1 a non-empty backlog) and the rescheduling
# IPIs (`RES`) of both cores. Needs root (ip netns) and
# `cargo build --release --bin spectra-server --bin fanout-baseline --bin loadgen`.
#
#   [RPS_CPUS=2] tools/bench-ratio.sh N RUNS [loadgen flags for both, e.g. --count-pace-ms 300]
#   SERVER_FLAGS="--probe-thread" adds loadgen flags for the server's runs only;
#   BASELINE_FLAGS="--touch-lines 4" adds flags to fanout-baseline.
#
# Prints one JSON line per run and a Markdown table of the medians of the valid runs (a run is
# valid when the generator stayed below its share and received ≥ 95 % of what was sent).
set -euo pipefail
cd "$(dirname "$0")/.."
n=$1 runs=$2
shift 2
source tools/lib/netns.sh
netns_create spectra-ratio
out=$(mktemp)
irq() { # CAL_cpu1 RES_cpu0 RES_cpu1
  awk '$1=="CAL:"{c=$3} $1=="RES:"{r0=$2; r1=$3} END{print c, r0, r1}' /proc/interrupts
}
# Samples interrupts from $1 s to $1+$2 s after now; writes "dCAL1 dRES0 dRES1 seconds" to $3.
sample_irq() {
  (
    sleep "$1"
    read -r c0 a0 b0 < <(irq)
    sleep "$2"
    read -r c1 a1 b1 < <(irq)
    echo "$((c1 - c0)) $((a1 - a0)) $((b1 - b0)) $2" >"$3"
  ) &
}
for i in $(seq 1 "$runs"); do
  # The bare baseline: 14 s of broadcasting, interrupts sampled from 4 s to 12 s.
  base_out=$(mktemp) irq_out=$(mktemp)
  # shellcheck disable=SC2086
  ip netns exec "$ns" taskset -c 0 target/release/fanout-baseline --port 5300 --connections "$n" \
    --duration 14 ${BASELINE_FLAGS:-} >"$base_out" 2>/dev/null &
  baseline=$!
  pids+=("$baseline")
  sleep 0.5
  sample_irq 4 8 "$irq_out"
  gen=$(ip netns exec "$ns" taskset -c 1 target/release/loadgen --raw --broadcast 127.0.0.1:5300 \
    --overlays "$n" --duration 14 --warmup 0 --json "$@" 2>/dev/null | grep '^{' | tail -n 1)
  wait "$baseline" || true
  wait  # the interrupt sampler
  python3 - "$base_out" "$gen" "$(cat "$irq_out")" >>"$out" <<'PY'
import json, sys
base = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])
gen = json.loads(sys.argv[2])
cal, res0, res1, secs = (float(x) for x in sys.argv[3].split())
per = base["deliveries_per_s"] * secs
print(json.dumps({"who": "baseline", "cpu_us": base["cpu_per_delivery_us"],
                  "user_us": base["user_per_delivery_us"], "system_us": base["system_per_delivery_us"],
                  "deliveries_per_s": base["deliveries_per_s"], "cal1": cal / per,
                  "res0": res0 / per, "res1": res1 / per,
                  "generator_deliveries_per_s": gen.get("deliveries_per_s"),
                  "generator_connect_s": gen.get("connect_s"),
                  "generator_cpu_pct": gen.get("generator_cpu_pct"),
                  # valid: the generator below its share, and it received what was sent
                  "valid": bool(gen.get("valid")) and
                           (gen.get("deliveries_per_s") or 0) >= 0.95 * base["deliveries_per_s"]}))
PY
  tail -n 1 "$out"
  rm -f "$base_out" "$irq_out"
  sleep 1
  # The server: loadgen connects, settles, warms up 3 s and measures 10 s; interrupts sampled
  # 7 s of that window (from 5 s after the start; connecting and settling take ≤ 2 s here).
  replays=$(mktemp -d) irq_out=$(mktemp)
  ip netns exec "$ns" taskset -c 0 target/release/spectra-server --shards 1 --auth-key LGKEY \
    --bind 127.0.0.1 --replay-dir "$replays" >/dev/null 2>&1 &
  server=$!
  pids+=("$server")
  sleep 1
  sample_irq 5 7 "$irq_out"
  # shellcheck disable=SC2086
  gen=$(ip netns exec "$ns" taskset -c 1 target/release/loadgen --key LGKEY --server-pid "$server" \
    --metrics http://127.0.0.1:5101/metrics --json --duration 10 --warmup 3 --overlays "$n" \
    "$@" ${SERVER_FLAGS:-} 2>/dev/null | grep '^{' | tail -n 1)
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  wait  # the interrupt sampler
  python3 - "$gen" "$(cat "$irq_out")" >>"$out" <<'PY'
import json, sys
gen = json.loads(sys.argv[1])
cal, res0, res1, secs = (float(x) for x in sys.argv[2].split())
per = gen["deliveries_per_s"] * secs
total = gen["server_cpu_per_delivery_us"]
system = gen["server_system_per_delivery_us"]
print(json.dumps({"who": "server", "cpu_us": total, "user_us": round(total - system, 3),
                  "system_us": system, "deliveries_per_s": gen["deliveries_per_s"],
                  "cal1": cal / per, "res0": res0 / per, "res1": res1 / per,
                  "p99_ms": gen["latency_ms"]["p99"], "drops": gen["drops"],
                  "server_deliveries": gen.get("server_deliveries"),
                  "generator_cpu_pct": gen.get("generator_cpu_pct"), "valid": gen.get("valid")}))
PY
  tail -n 1 "$out"
  rm -rf "$replays" "$irq_out"
  sleep 1
done
python3 - "$out" "$n" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
rows = {}
print(f"\n{int(sys.argv[2]):,} sockets/overlays, {len(runs) // 2} runs each, medians of the valid "
      f"ones (valid: {sum(1 for r in runs if r['valid'])} of {len(runs)})\n")
print("| | CPU per delivery | user | system | CAL IPIs to CPU 1 per delivery | RES per delivery (CPU 0 / 1) | generator CPU |")
print("|---|---|---|---|---|---|---|")
for who in ("baseline", "server"):
    rs = [r for r in runs if r["who"] == who and r["valid"]] or [r for r in runs if r["who"] == who]
    m = lambda k: statistics.median(r[k] or 0 for r in rs)
    rows[who] = m("cpu_us")
    print(f"| {who} | {m('cpu_us'):.2f} µs | {m('user_us'):.2f} µs | {m('system_us'):.2f} µs "
          f"| {m('cal1'):.3f} | {m('res0'):.3f} / {m('res1'):.3f} | {m('generator_cpu_pct'):.0f} % |")
if rows.get("baseline"):
    print(f"\nratio server / baseline (medians): {rows['server'] / rows['baseline']:.2f}×")
PY
rm -f "$out"
