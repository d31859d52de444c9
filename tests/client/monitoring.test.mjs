// The Grafana dashboard (deploy/grafana/spectra.json) and the Prometheus alert rules
// (deploy/prometheus/spectra-alerts.yml) query only series a running server exports: every
// metric name in every expression is a sample name of /metrics, and every label they group by
// or print is a label of those series (or one Prometheus adds: instance, job; le of histograms).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { startServer, repoRoot } from "./lib/server.mjs";

const dashboard = JSON.parse(fs.readFileSync(path.join(repoRoot, "deploy/grafana/spectra.json"), "utf8"));
const rules = YAML.parse(fs.readFileSync(path.join(repoRoot, "deploy/prometheus/spectra-alerts.yml"), "utf8"));
const ADDED_BY_PROMETHEUS = new Set(["instance", "job"]);

/** {sampleName: Set(labelNames)} from Prometheus text. */
function samples(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? /);
    if (!m) continue;
    const labels = out.get(m[1]) ?? new Set();
    for (const pair of (m[3] ?? "").split(",").filter(Boolean)) labels.add(pair.split("=")[0]);
    out.set(m[1], labels);
  }
  return out;
}

/** Checks one PromQL expression (and the labels its legend or annotations print) against /metrics. */
function check(where, expr, printed, exported) {
  const names = [...expr.matchAll(/\b(spectra_[a-z_]+)\b/g)].map((m) => m[1]);
  const others = [...expr.matchAll(/\b([a-z_]+)\s*[{[]/g)].map((m) => m[1]).filter((n) => !n.startsWith("spectra_"));
  for (const n of others) assert.ok(n === "up", `${where}: ${n} is not a series of the server`);
  assert.ok(names.length > 0 || others.includes("up"), `${where}: queries no spectra series: ${expr}`);
  const labels = new Set([...ADDED_BY_PROMETHEUS]);
  for (const n of names) {
    assert.ok(exported.has(n), `${where}: ${n} is not in /metrics`);
    for (const l of exported.get(n)) labels.add(l);
  }
  const grouped = [...expr.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((m) => m[1].split(",").map((s) => s.trim()));
  for (const l of [...grouped, ...printed]) assert.ok(labels.has(l), `${where}: label ${l} is not on ${names.join(", ") || "up"}`);
  return names;
}

test("every series the dashboard and the alert rules query exists in /metrics", async () => {
  // Backend mode, so the backend latency histogram is exported too (no request is made).
  const server = await startServer({ shards: 2, env: { USE_BACKEND: "true", BACKEND_URL: "http://127.0.0.1:9" } });
  let exported;
  try {
    const res = await fetch(`${server.rest}/metrics`);
    assert.equal(res.status, 200);
    exported = samples(await res.text());
  } finally {
    await server.stop();
  }
  assert.ok(exported.size > 20, `${exported.size} sample names`);

  // The dashboard: well-formed panels, each on the chosen data source, each query valid.
  assert.equal(dashboard.uid, "spectra-server");
  const variables = dashboard.templating.list.map((v) => v.name);
  assert.deepEqual(variables, ["datasource", "instance"]);
  const ids = new Set();
  const used = new Set();
  for (const panel of dashboard.panels) {
    assert.ok(!ids.has(panel.id), `panel id ${panel.id} twice`);
    ids.add(panel.id);
    assert.equal(panel.datasource.uid, "${datasource}", panel.title);
    for (const k of ["x", "y", "w", "h"]) assert.equal(typeof panel.gridPos[k], "number", panel.title);
    assert.ok(panel.targets.length > 0, `${panel.title} has no query`);
    for (const t of panel.targets) {
      assert.match(t.expr, /instance=~"\$instance"/, `${panel.title}: not filtered by the node variable`);
      const printed = [...(t.legendFormat ?? "").matchAll(/\{\{\s*(\w+)\s*\}\}/g)].map((m) => m[1]);
      for (const n of check(`panel "${panel.title}"`, t.expr, printed, exported)) used.add(n);
    }
  }
  const variableQuery = dashboard.templating.list[1].query.query;
  check("variable instance", variableQuery, [], exported);
  // What the issue asks the dashboard to show.
  for (const n of ["spectra_connections", "spectra_matches", "spectra_deliveries_total", "spectra_skipped_frames_total",
    "spectra_dropped_frames_total", "spectra_shard_cpu_seconds_total", "spectra_backend_request_seconds_bucket"]) {
    assert.ok(used.has(n), `the dashboard does not show ${n}`);
  }

  // The alert rules.
  const alerts = rules.groups.flatMap((g) => g.rules);
  assert.ok(alerts.length >= 8, `${alerts.length} rules`);
  const names = new Set();
  for (const rule of alerts) {
    assert.match(rule.alert, /^Spectra[A-Za-z]+$/);
    assert.ok(!names.has(rule.alert), `${rule.alert} twice`);
    names.add(rule.alert);
    assert.ok(["critical", "warning", "info"].includes(rule.labels?.severity), `${rule.alert}: severity`);
    assert.equal(typeof rule.annotations?.summary, "string", `${rule.alert}: summary`);
    if (rule.for !== undefined) assert.match(rule.for, /^\d+[smh]$/);
    const text = Object.values(rule.annotations).join(" ");
    const printed = [...text.matchAll(/\$labels\.(\w+)/g)].map((m) => m[1]);
    check(`alert ${rule.alert}`, String(rule.expr), printed, exported);
  }
});
