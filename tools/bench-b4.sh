#!/usr/bin/env bash
# B4: many small matches on one core — the shape of a hosted service. M matches, each with an
# observer at the kit's pace (10 events/s with up to 200 ms of jitter) and 2 overlays; the server
# on one shard pinned to CPU 0, the generator on CPU 1, in a private network namespace (see
# tools/bench-side-by-side.sh, which this drives). 10 % of the overlays measure latency, the rest
# count frames by their headers; a run is valid when the generator stays below 70 % of its core
# and its count of deliveries agrees with the server's. The table adds server CPU per event and
# per broadcast, and bytes on the wire per delivery.
#
#   tools/bench-b4.sh --n 100,500,1000 [--runs 3] [--servers spectra,original]
#   tools/bench-b4.sh --bisect 500 4000 [--runs 3]     largest M with p99 ≤ 100 ms, no drops
#
# Needs root (ip netns) and `cargo build --release --bin spectra-server --bin loadgen`; the
# original runs when ORIG_DIR points at an installed checkout of it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec tools/bench-side-by-side.sh --vary matches --per-match 2 "$@" -- \
  --rate 10 --jitter-ms 200 --probe-share 0.1
