"""Prints one Markdown row of medians per group of loadgen JSON reports (bench-ab.sh,
bench-cluster.sh): `median_rows.py FILE FIELD VALUE…` groups the JSON lines of FILE by FIELD."""
import json
import statistics
import sys

path, field, values = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = [json.loads(l) for l in open(path) if l.startswith("{")]
for value in values:
    rs = [r for r in runs if r[field] == value]
    if not rs:
        continue
    m = lambda f: statistics.median(f(r) for r in rs)
    print(f"| {value} | {m(lambda r: r['deliveries_per_s']):,.0f} ({rs[0]['expected_per_s']:,.0f}) "
          f"| {m(lambda r: r['latency_ms']['p50']):.1f} / {m(lambda r: r['latency_ms']['p99']):.1f} "
          f"| {m(lambda r: r['server_cpu_per_delivery_us'] or 0):.1f} µs "
          f"| {m(lambda r: r['generator_cpu_pct']):.0f} % | {m(lambda r: r['server_rss_max_mb']):.1f} MB | {len(rs)} |")
