"""Runs `tools/loadgen` against Spectra and (optionally) the original Node.js server, one after
the other, inside the private network namespace `tools/bench-side-by-side.sh` made for it.

The server is pinned to one CPU, the generator to the others; every server this starts is ended
by its PID. Prints one JSON line per run on stdout as it goes and the table at the end; with
--bisect, finds for each server the largest number of overlays that is sustained (see
`sustained`) — the generator must stay valid (below its CPU limit, its count of deliveries
agreeing with the server's) for a point to count.

`--vary matches` makes N the number of matches instead (each with `--per-match` overlays): the
shape of a hosted service, many small rooms (B4 in BENCHMARKS.md, `tools/bench-b4.sh`).
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY = "LGKEY"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_port(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def start_server(kind, args):
    """Starts one server pinned to --server-cpu; returns its Popen (the server process itself)."""
    pin = ["taskset", "-c", args.server_cpu]
    if kind == "spectra":
        # One key runs every match of the generator: the per-key bound of live matches is
        # lifted (the original has none).
        cmd = pin + [args.spectra_bin, "--shards", "1", "--auth-key", KEY, "--bind", "127.0.0.1",
                     "--replay-dir", "off", "--max-matches-per-key", "1000000"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={"PATH": os.environ["PATH"]})
    else:
        # The original as its README runs it, without the `tsx` wrapper process (so the PID is
        # the server's own, for CPU and RSS).
        env = {"PATH": os.environ["PATH"], "INSECURE": "true", "REQUIRE_AUTH_KEY": "true",
               "AUTH_KEY": KEY, "HOME": os.environ.get("HOME", "/root")}
        proc = subprocess.Popen(pin + ["node", "--import", "tsx", "src/index.ts"], cwd=args.orig_dir,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    if not (wait_port(5100, 60) and wait_port(5200, 10) and wait_port(5101, 10)):
        stop_server(proc)
        raise RuntimeError(f"{kind} did not start listening on 5100/5200/5101")
    time.sleep(0.5)
    return proc


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_once(kind, n, args):
    proc = start_server(kind, args)
    try:
        cpus = args.gen_cpus.split(",")
        cmd = ["taskset", "-c", args.gen_cpus, os.path.join(REPO, "target/release/loadgen"),
               "--key", KEY, "--server-pid", str(proc.pid), "--json",
               *(["--matches", str(n), "--overlays", str(args.per_match)] if args.vary == "matches"
                 else ["--overlays", str(n)]),
               "--duration", str(args.duration), "--warmup", str(args.warmup),
               "--threads", str(len(cpus)), "--cpus", args.gen_cpus]
        if kind == "spectra":
            cmd += ["--metrics", "http://127.0.0.1:5101/metrics"]
        cmd += args.loadgen
        # The original's connect phase grows with N² (each logon re-broadcasts to the room):
        # loadgen waits up to 300 s for it to go quiet.
        limit = 120 + 300 + args.duration + args.warmup + n // 20 * (args.per_match if args.vary == "matches" else 1)
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"server": kind, "overlays": n, "error": f"loadgen did not finish in {limit} s"}
        lines = [l for l in run.stdout.splitlines() if l.startswith("{")]
        if not lines:
            return {"server": kind, "overlays": n,
                    "error": (run.stderr.strip().splitlines() or ["no report"])[-1]}
        r = json.loads(lines[-1])
        r["server"] = kind
        r["overlays"] = n
        r["server_exited"] = proc.poll() is not None
        return r
    finally:
        stop_server(proc)
        time.sleep(1)


def p99_bound(kind, args):
    return args.p99_ms if kind == "spectra" else args.p99_ms_original


def sustained(kind, r, args):
    """A point is sustained: every delivery (≥ 98 % of expected), no drop, no failed connection,
    p99 within the bound, server alive. None when the run says nothing (generator saturated)."""
    if "error" in r:
        return False
    if not r.get("valid", False):
        return None
    p99 = r["latency_ms"]["p99"]
    return (r["drops"] == 0 and r["connect_failures"] == 0 and not r["server_exited"]
            and r["deliveries_per_s"] >= 0.98 * r["expected_per_s"]
            and p99 is not None and p99 <= p99_bound(kind, args))


def median_run(kind, n, args, results):
    runs = []
    for _ in range(args.runs):
        r = run_once(kind, n, args)
        print(json.dumps(r), flush=True)
        results.append(r)
        runs.append(r)
    ok = [sustained(kind, r, args) for r in runs]
    if any(o is None for o in ok):
        return None
    return sum(1 for o in ok if o) * 2 > len(ok)


def bisect(kind, args, results):
    lo, hi = args.bisect
    log(f"{kind}: bisecting in [{lo}, {hi}]")
    verdict = median_run(kind, lo, args, results)
    if not verdict:
        return {"server": kind, "largest": None,
                "why": "generator saturated" if verdict is None else f"{lo} not sustained"}
    limited = None
    while hi - lo > max(args.resolution, lo * args.resolution_share):
        mid = (lo + hi) // 2
        verdict = median_run(kind, mid, args, results)
        log(f"{kind}: {mid} {args.vary} → {verdict}")
        if verdict is None:
            limited = mid
            hi = mid
        elif verdict:
            lo = mid
        else:
            hi = mid
    return {"server": kind, "largest": lo, "generator_limited_at": limited}


def per_event(r):
    """Server CPU per event the observers sent in the window (µs; each with its latency marker)."""
    return r.get("server_cpu_per_event_us")


def per_broadcast(r):
    """Server CPU per state sent to a room (µs): deliveries over receivers per room."""
    per_room = r.get("overlays_per_match", 0) + r.get("spectators_per_match", 0)
    if r.get("server_cpu_per_delivery_us") is None or not per_room:
        return None
    return r["server_cpu_per_delivery_us"] * per_room


def bytes_per_delivery(r):
    if not r.get("deliveries"):
        return None
    return r["payload_mb_per_s"] * 1e6 * r["window_s"] / r["deliveries"]


def fmt(v, f="{:.1f}"):
    return "–" if v is None else f.format(v)


def table(results, args):
    per_room = args.vary == "matches"
    rows = [f"| server | {'matches × ' + str(args.per_match) if per_room else 'overlays'} | deliveries/s (expected) | p50 / p99 / p999 ms | drops | "
            "server CPU per delivery | per event | per broadcast | bytes per delivery | server RSS max | generator CPU | valid |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda r: (r["server"], r["overlays"])
    for r in sorted(results, key=key):
        if "error" in r:
            rows.append(f"| {r['server']} | {r['overlays']:,} | {r['error']} | | | | | | | | | |")
            continue
        lat = r["latency_ms"]
        rows.append(
            f"| {r['server']} | {r['overlays']:,} | {r['deliveries_per_s']:,.0f} ({r['expected_per_s']:,.0f}) "
            f"| {fmt(lat['p50'])} / {fmt(lat['p99'])} / {fmt(lat['p999'])} "
            f"| {r['drops'] + r['connect_failures']} | {fmt(r['server_cpu_per_delivery_us'])} µs "
            f"| {fmt(per_event(r))} µs | {fmt(per_broadcast(r))} µs | {fmt(bytes_per_delivery(r), '{:,.0f}')} "
            f"| {fmt(r['server_rss_max_mb'])} MB | {fmt(r['generator_cpu_pct'], '{:.0f}')} % "
            f"| {'yes' if r['valid'] else 'no'} |")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--servers", default="spectra,original")
    p.add_argument("--n", default="100,500,1000", help="overlay (or match) counts, comma-separated")
    p.add_argument("--vary", choices=["overlays", "matches"], default="overlays",
                   help="what N counts: overlays of one match, or matches of --per-match overlays")
    p.add_argument("--per-match", type=int, default=2, help="overlays per match with --vary matches")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--bisect", type=int, nargs=2, metavar=("LO", "HI"))
    p.add_argument("--resolution", type=int, default=10)
    p.add_argument("--resolution-share", type=float, default=0.05)
    p.add_argument("--p99-ms", type=float, default=100.0)
    # The original broadcasts on a 100 ms timer, so its p99 is ~100 ms with one overlay: its
    # bound is that tick plus the same 100 ms.
    p.add_argument("--p99-ms-original", type=float, default=200.0)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--gen-cpus", default="1")
    p.add_argument("--spectra-bin", default=os.path.join(REPO, "target/release/spectra-server"))
    p.add_argument("--orig-dir", default=os.environ.get("ORIG_DIR"))
    p.add_argument("loadgen", nargs="*", help="more loadgen flags (after --)")
    args = p.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    if "original" in servers and not args.orig_dir:
        log("original: skipped (ORIG_DIR does not point at an installed checkout)")
        servers.remove("original")
    results, verdicts = [], []
    for kind in servers:
        if args.bisect:
            verdicts.append(bisect(kind, args, results))
        else:
            for n in [int(x) for x in args.n.split(",")]:
                median_run(kind, n, args, results)
    print(table(results, args))
    for v in verdicts:
        bound = p99_bound(v["server"], args)
        print(f"{v['server']}: largest sustained N = {v['largest']} {args.vary} (p99 ≤ {bound:.0f} ms, no drops, "
              f"≥ 98 % of deliveries; generator limited at {v.get('generator_limited_at')}; "
              f"{v.get('why', '')})")
        at = [r for r in results if r["server"] == v["server"] and r["overlays"] == v["largest"] and "error" not in r]
        if at:
            print(f"{v['server']}: {statistics.median(r['deliveries_per_s'] for r in at):,.0f} deliveries/s sustained")


if __name__ == "__main__":
    main()
