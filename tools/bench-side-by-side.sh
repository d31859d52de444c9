#!/usr/bin/env bash
# Spectra and the original Node.js server measured by the same generator, side by side: in a
# private network namespace this script creates (loopback only) and deletes, each server in turn
# on the default ports pinned to CPU 0, `tools/loadgen` pinned to the other core(s). Prints one
# JSON line per run, then one table (deliveries/s vs expected, p50/p99/p999, drops, server CPU
# per delivery, server RSS, generator CPU, valid). Needs root (ip netns) and
# `cargo build --release --bin spectra-server --bin loadgen`.
#
#   tools/bench-side-by-side.sh [--n 100,500,1000] [--runs R] [--servers spectra,original] [-- loadgen flags]
#   tools/bench-side-by-side.sh --bisect LO HI [--runs R]     largest N with p99 ≤ bound, no drops
#
# The original runs when ORIG_DIR points at an installed checkout of it (its source with its
# dependencies installed, outside this repository; never committed). Its p99 bound is 200 ms
# (`--p99-ms-original`): it broadcasts on a 100 ms timer, so 100 ms is its floor. See
# `python3 tools/lib/side_by_side.py --help` for every option.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/lib/netns.sh
netns_create spectra-sbs
ip netns exec "$ns" python3 tools/lib/side_by_side.py "$@"
