#!/usr/bin/env bash
# A/B fan-out benchmark of two server binaries (before/after a change), runs alternating A, B,
# A, B … so both see the same machine state. Everything happens in a private network namespace
# this script creates (loopback only) and deletes; the server is pinned to CPU 0, the load
# generator to CPU 1, and the generator's own CPU is reported next to the server's so that a
# saturated generator is not mistaken for a saturated server. Needs root (ip netns).
#
#   tools/bench-ab.sh BIN_A BIN_B RUNS SHARDS [loadgen flags…]
#   e.g. tools/bench-ab.sh target/base/release/spectra-server target/release/spectra-server 3 1 --overlays 1000
#
# Prints each run's figures and a Markdown row of the medians per binary. Servers are ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 runs=$3 shards=$4
shift 4
source tools/lib/netns.sh
netns_create spectra-ab
out=$(mktemp)
for i in $(seq 1 "$runs"); do
  for which in A B; do
    bin=${!which}
    replays=$(mktemp -d)
    # `ip netns exec` and `taskset` exec the server: $! is the server's PID.
    ip netns exec "$ns" taskset -c 0 "$bin" --shards "$shards" --auth-key LGKEY --bind 127.0.0.1 \
      --replay-dir "$replays" >/dev/null 2>&1 &
    server=$!
    sleep 1
    ip netns exec "$ns" python3 - "$which" "$server" "$@" >>"$out" <<'PY'
import json, resource, subprocess, sys, time
which, server, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
start = time.monotonic()
run = subprocess.run(["taskset", "-c", "1", "target/release/loadgen", "--key", "LGKEY",
                      "--server-pid", server, "--json", "--duration", "10", "--warmup", "3", *flags],
                     capture_output=True, text=True, check=True)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
line = next(l for l in run.stdout.splitlines() if l.startswith("{"))
result = json.loads(line)
result["binary"] = which
# The generator's share over the whole run (connecting and warm-up too), beside loadgen's own
# figure for the measured window (`generator_cpu_pct`, which decides `valid`).
result["generator_cpu_pct_whole_run"] = round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1)
print(json.dumps(result))
PY
    tail -n 1 "$out"
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$replays"
    sleep 1
  done
done
python3 tools/lib/median_rows.py "$out" binary A B
rm -f "$out"
