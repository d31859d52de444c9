#!/usr/bin/env bash
# The NATS hop of cluster mode, measured: overlays on the origin vs overlays on an edge node, in
# a private network namespace this script creates (loopback only) and deletes. Needs root
# (ip netns) and the nats-server the test command installs (target/tools-venv/bin/nats-server,
# or $NATS_SERVER).
#
#   tools/bench-cluster.sh RUNS OVERLAYS
#   BENCH_BINS="before=/path/a after=/path/b" tools/bench-cluster.sh RUNS OVERLAYS
#
# With BENCH_BINS, the edge setting runs once per labelled binary (origin and edge both of that
# binary), interleaved in every round, so two builds are compared in one run ("edge-before",
# "edge-after"); the "origin" setting uses the first binary.
#
# Placement on a two-core machine: the node that serves the overlays is alone on CPU 1 (the one
# measured: CPU per delivery from /proc); the generator (observer + overlays) on CPU 0 — with
# nats-server and the origin beside it in the edge runs. "origin": one node, overlays on it, no
# NATS. "edge": the observer on node A (CPU 0), the overlays on node B (CPU 1), one nats-server
# (CPU 0). Prints each run's figures, B's bytes received from NATS per published frame, and a
# Markdown row of medians per setting. Everything it starts is ended by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=$1 overlays=$2
nats_bin=${NATS_SERVER:-target/tools-venv/bin/nats-server}
read -r -a bins <<<"${BENCH_BINS:-now=target/release/spectra-server}"
settings=(origin)
if [ -z "${BENCH_BINS:-}" ]; then
  settings+=(edge)
else
  for b in "${bins[@]}"; do settings+=("edge-${b%%=*}"); done
fi
bin_of() { # SETTING: the binary it runs
  local label=${1#edge-}
  for b in "${bins[@]}"; do
    if [ "${b%%=*}" = "$label" ]; then echo "${b#*=}"; return; fi
  done
  echo "${bins[0]#*=}"
}
source tools/lib/netns.sh
netns_create spectra-cluster
out=$(mktemp)

node() { # CPU PORT_BASE [env…]: starts a node, prints its PID
  local cpu=$1 base=$2
  shift 2
  ip netns exec "$ns" env "$@" taskset -c "$cpu" "$bin" --shards 1 --auth-key LGKEY --bind 127.0.0.1 \
    --ingest-port "$base" --rest-port $((base + 1)) --broadcast-port $((base + 2)) --replay-dir off \
    >/dev/null 2>&1 &
  echo $!
}

metric() { # URL NAME
  ip netns exec "$ns" curl -s "$1" | awk -v n="$2" 'index($0, n "{") == 1 { print $NF }'
}

for i in $(seq 1 "$runs"); do
  for setting in "${settings[@]}"; do
    bin=$(bin_of "$setting")
    data=$(mktemp -d)
    if [ "$setting" = origin ]; then
      b=$(node 1 6100)
      pids=("$b")
      ingest=6100
    else
      ip netns exec "$ns" taskset -c 0 "$nats_bin" -a 127.0.0.1 -p 4222 -js -sd "$data" >/dev/null 2>&1 &
      nats=$!
      sleep 0.5
      a=$(node 0 6000 CLUSTER_NATS_URL=nats://127.0.0.1:4222 NODE_ID=origin)
      b=$(node 1 6100 CLUSTER_NATS_URL=nats://127.0.0.1:4222 NODE_ID=edge)
      pids=("$b" "$a" "$nats")
      ingest=6000
    fi
    sleep 2
    ip netns exec "$ns" python3 - "$setting" "$b" "$ingest" "$overlays" >>"$out" <<'PY'
import json, resource, subprocess, sys, time
setting, server, ingest, overlays = sys.argv[1:5]
start = time.monotonic()
run = subprocess.run(["taskset", "-c", "0", "target/release/loadgen", "--key", "LGKEY",
                      "--ingest", f"127.0.0.1:{ingest}", "--broadcast", "127.0.0.1:6102",
                      "--overlays", overlays, "--server-pid", server, "--json",
                      "--duration", "10", "--warmup", "3"],
                     capture_output=True, text=True, check=True)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
line = next(l for l in run.stdout.splitlines() if l.startswith("{"))
result = json.loads(line)
result["setting"] = setting
result["generator_cpu_pct"] = round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1)
print(json.dumps(result))
PY
    if [ "$setting" != origin ]; then
      frames=$(metric http://127.0.0.1:6001/metrics spectra_cluster_frames_published_total)
      bytes=$(metric http://127.0.0.1:6101/metrics spectra_cluster_bytes_received_total)
      received=$(metric http://127.0.0.1:6101/metrics spectra_cluster_frames_received_total)
      echo "edge run $i: origin published $frames frames; edge received $received frames, $bytes bytes ($((bytes / (received > 0 ? received : 1))) B per frame)"
    fi
    tail -n 1 "$out"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    pids=()
    rm -rf "$data"
    sleep 1
  done
done
python3 tools/lib/median_rows.py "$out" setting "${settings[@]}"
rm -f "$out"
