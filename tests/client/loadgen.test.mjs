// tools/loadgen reports its own CPU and whether the run is valid (the generator below its share
// of its cores), and cross-checks its delivery count with the server's spectra_deliveries_total;
// probes measure latency while the other connections count by frame headers, and both kinds of
// counting agree with the server.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";
import os from "node:os";
import { spawn } from "node:child_process";
import { startServer, runProgram, repoRoot, waitFor } from "./lib/server.mjs";

const tool = path.join(repoRoot, "target", "debug", "loadgen");
const kitReplay = path.resolve(repoRoot, "..", "shared", "kit", "reference", "match.replay");

/** loadgen against `server`: short, with its PID and /metrics, JSON report. */
function baseArgs(server, overlays, spectators) {
  return [
    "--ingest", `127.0.0.1:${server.ports.ingest}`, "--broadcast", `127.0.0.1:${server.ports.broadcast}`,
    "--key", "LGKEY", "--overlays", String(overlays), "--spectators", String(spectators),
    "--duration", "3", "--warmup", "1", "--replay", kitReplay, "--server-pid", String(server.child.pid),
    "--json", "--metrics", `${server.rest}/metrics`,
  ];
}

async function loadgen(args) {
  const { code, out, err } = await runProgram(tool, args, { limitMs: 60000 });
  return { code, err, report: JSON.parse(out.trim().split("\n").at(-1)) };
}

test("loadgen: its own CPU, validity, and the server's own delivery count beside its own", async () => {
  const server = await startServer({ shards: 1, key: "LGKEY" });
  try {
    const base = baseArgs(server, 20, 5);
    const logFile = path.join(os.tmpdir(), `loadgen-latency-${process.pid}.log`);
    const { code, report } = await loadgen([...base, "--latency-log", logFile]);
    assert.equal(code, 0);
    assert.ok(report.deliveries > 400, `deliveries ${report.deliveries}`);
    // Every latency sample, with its event, client, send and receipt time (µs since the epoch).
    const samples = fs.readFileSync(logFile, "utf8").trim().split("\n").map((l) => l.split(" ").map(Number));
    fs.rmSync(logFile);
    assert.equal(samples.length, report.latency_samples);
    for (const [event, client, sent, got] of samples) {
      assert.ok(event >= 1 && client >= 0 && got >= sent && sent > 1.7e15, `${event} ${client} ${sent} ${got}`);
    }
    const slowest = Math.max(...samples.map(([, , sent, got]) => (got - sent) / 1000));
    assert.ok(Math.abs(slowest - report.latency_ms.max) < 0.01, `${slowest} vs ${report.latency_ms.max}`);
    // States the server replaced in a queue by a newer one: none for 25 readers at 10 a second.
    assert.equal(report.server_skipped, 0);
    // Packet loss on the way (retransmitted segments in this namespace, full-backlog drops).
    assert.ok(Number.isInteger(report.tcp_retransmits) && report.tcp_retransmits >= 0);
    assert.ok(Number.isInteger(report.backlog_drops) && report.backlog_drops >= 0);
    assert.equal(typeof report.server_deliveries, "number");
    // The server counts what it handed to writers in the window, the generator what arrived:
    // equal up to the frames in flight at the window's two edges (one tick of 25 receivers).
    assert.ok(Math.abs(report.server_deliveries - report.deliveries) <= 60,
      `server ${report.server_deliveries} vs generator ${report.deliveries}`);
    // The server's own time per state handed to its subscribers, from its /metrics histogram.
    // (3 s at 10 states a second)
    assert.ok(report.server_fanout_ms.states >= 20, JSON.stringify(report.server_fanout_ms));
    assert.ok(report.server_fanout_ms.mean > 0 && report.server_fanout_ms.mean < 100);
    assert.ok(report.server_fanout_ms.p99_at_most >= report.server_fanout_ms.mean);
    assert.equal(typeof report.generator_cpu_pct, "number");
    assert.ok(report.generator_cores >= 1);
    assert.equal(report.valid, report.generator_cpu_pct <= 70);
    // Its cores' whole occupancy (the generator's work and the kernel's receive processing
    // charged to no process), from /proc/stat.
    assert.equal(typeof report.generator_cores_busy_pct, "number");
    assert.ok(report.generator_cores_busy_pct > 0 && report.generator_cores_busy_pct <= 100,
      `busy ${report.generator_cores_busy_pct}`);
    assert.ok(report.generator_cores_softirq_pct >= 0 &&
      report.generator_cores_softirq_pct <= report.generator_cores_busy_pct);
    // A limit below what it used marks the run invalid and says so.
    const strict = await loadgen([...base, "--max-generator-share", "0.001"]);
    assert.equal(strict.report.valid, false);
    assert.match(strict.err, /INVALID run: the generator used/);
  } finally {
    await server.stop();
  }
});

test("loadgen: header-only counting agrees with probes and with the server; threads pinned", async () => {
  const server = await startServer({ shards: 1, key: "LGKEY" });
  try {
    const base = baseArgs(server, 60, 20);
    // 80 clients, 5 %: the minimum of 20 probes applies; the other 60 count by headers.
    const sampled = await loadgen([...base, "--threads", "2", "--cpus", "0,1"]);
    assert.equal(sampled.code, 0);
    assert.equal(sampled.report.probes, 20);
    assert.equal(sampled.report.generator_cores, 2);
    assert.ok(sampled.report.latency_samples > 0, "probes measure latency");
    assert.ok(Math.abs(sampled.report.server_deliveries - sampled.report.deliveries) <= 2 * 80,
      `server ${sampled.report.server_deliveries} vs generator ${sampled.report.deliveries}`);
    // Every client a probe: the same deliveries per second within the edges of the window.
    const full = await loadgen([...base, "--probe-share", "1"]);
    assert.equal(full.report.probes, 80);
    const rate = (r) => r.deliveries_per_s / r.expected_per_s;
    assert.ok(Math.abs(rate(sampled.report) - rate(full.report)) < 0.1,
      `sampled ${rate(sampled.report)} vs full ${rate(full.report)}`);
  } finally {
    await server.stop();
  }
});

test("loadgen --count-pace-ms: counting connections that read at most every 300 ms still count what the server sent", async () => {
  const server = await startServer({ shards: 1, key: "LGKEY" });
  try {
    const paced = await loadgen([...baseArgs(server, 60, 20), "--count-pace-ms", "300"]);
    assert.equal(paced.code, 0);
    assert.equal(paced.report.probes, 20);
    assert.ok(paced.report.latency_samples > 0, "probes (never paced) measure latency");
    // A paced read takes up to three ticks at once: the window's edges move by as much
    // (80 clients); a connection that stopped reading would be 30 deliveries short each.
    assert.ok(Math.abs(paced.report.server_deliveries - paced.report.deliveries) <= 4 * 80,
      `server ${paced.report.server_deliveries} vs generator ${paced.report.deliveries}`);
    assert.equal(paced.report.drops, 0);
  } finally {
    await server.stop();
  }
});

test("loadgen --probe-thread: probes and observers on a thread of their own still measure, counts agree", async () => {
  const server = await startServer({ shards: 1, key: "LGKEY" });
  try {
    const r = await loadgen([...baseArgs(server, 60, 20), "--probe-thread", "--count-pace-ms", "300"]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.report.generator_threads, 2);
    assert.equal(r.report.probes, 20);
    assert.ok(r.report.latency_samples > 0, "probes on their own thread measure latency");
    assert.ok(Math.abs(r.report.server_deliveries - r.report.deliveries) <= 4 * 80,
      `server ${r.report.server_deliveries} vs generator ${r.report.deliveries}`);
    assert.equal(r.report.drops, 0);
    // The server's CPU split: its kernel part is reported beside the total.
    assert.equal(typeof r.report.server_system_per_delivery_us, "number");
    assert.ok(r.report.server_system_per_delivery_us <= r.report.server_cpu_per_delivery_us);
  } finally {
    await server.stop();
  }
});

test("loadgen --delta-share: delta spectators are probed like the others and cost fewer bytes", async () => {
  const server = await startServer({ shards: 1, key: "LGKEY" });
  try {
    const full = await loadgen([...baseArgs(server, 0, 20), "--probe-share", "1", "--min-probes", "1"]);
    const delta = await loadgen([...baseArgs(server, 0, 20), "--probe-share", "1", "--min-probes", "1", "--delta-share", "1"]);
    for (const r of [full, delta]) {
      assert.equal(r.code, 0, r.err);
      assert.ok(r.report.deliveries > 200, `deliveries ${r.report.deliveries}`);
      assert.ok(r.report.latency_samples > 100, `latency samples ${r.report.latency_samples}`);
      assert.equal(r.report.drops, 0);
    }
    // Bytes per delivery (payloads as sent, deflated): a delta is a fraction of the full state.
    const per = (r) => r.report.payload_mb_per_s / r.report.deliveries_per_s;
    assert.ok(per(delta) < per(full) / 3, `delta ${per(delta)} vs full ${per(full)} MB per delivery`);
  } finally {
    await server.stop();
  }
});

test("loadgen --raw measures the bare baseline from its first broadcast (no waiting for quiet)", async () => {
  // fanout-baseline broadcasts without pause once its connections are there; the generator
  // must not wait for the quiet an Engine.IO server leaves after logons, or its window would
  // open only after the baseline stopped.
  const baseline = path.join(repoRoot, "target", "debug", "fanout-baseline");
  const source = spawn(baseline, ["--port", "0", "--connections", "30", "--duration", "6", "--replay", kitReplay],
    { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  source.stdout.on("data", (d) => (out += d));
  const exited = new Promise((resolve) => source.on("exit", resolve));
  try {
    await waitFor(() => out.includes("ready"), 10000, "fanout-baseline listening");
    const port = /ready on 127\.0\.0\.1:(\d+)/.exec(out)[1];
    const r = await loadgen(["--raw", "--broadcast", `127.0.0.1:${port}`, "--overlays", "30", "--duration", "3",
      "--warmup", "0", "--replay", kitReplay, "--json"]);
    assert.equal(r.code, 0);
    assert.equal(r.report.settle_s, 0);
    // 30 sockets × 10 states/s × 3 s, less what the window's edges cut.
    assert.ok(r.report.deliveries >= 800, `deliveries ${r.report.deliveries}`);
    assert.equal(r.report.drops, 0);
  } finally {
    if (source.exitCode === null) process.kill(source.pid, "SIGTERM");
    await exited;
  }
});

test("loadgen --tls: overlays, spectators and the observer over TLS; handshakes reported, counts agree over https /metrics", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loadgen-tls-"));
  const [key, cert] = [path.join(dir, "k.pem"), path.join(dir, "c.pem")];
  const server = await startServer({ shards: 1, key: "LGKEY", env: { INSECURE: "false", SERVER_KEY: key, SERVER_CERT: cert } });
  try {
    // https, and by the name the certificate carries.
    const args = baseArgs(server, 30, 10).map((a) => a.replace("http://127.0.0.1", "https://localhost"));
    // The generated certificate names localhost: verified against it as the CA.
    const r = await loadgen([...args, "--tls", "--ca", cert]);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.report.tls.handshakes, 40, "one handshake per overlay and spectator");
    assert.equal(r.report.tls.resumed_share, 0, "first connections make full handshakes");
    assert.ok(r.report.tls.handshake_ms.p50 > 0);
    assert.equal(r.report.tls.cipher_suite, "TLS13_AES_128_GCM_SHA256", "offered in browsers' order");
    assert.equal(r.report.connect_failures, 0);
    assert.ok(r.report.latency_samples > 0);
    assert.equal(r.report.counts_agree, true, `server ${r.report.server_deliveries} vs generator ${r.report.deliveries}`);
    // A CA that did not sign the server's certificate: refused, and said so.
    const other = path.join(dir, "other.pem");
    await (await startServer({ shards: 1, env: { INSECURE: "false", SERVER_KEY: path.join(dir, "other.key"), SERVER_CERT: other } })).stop();
    const small = baseArgs(server, 1, 0).map((a) => a.replace("http://127.0.0.1", "https://localhost"));
    const refused = await runProgram(tool, [...small, "--tls", "--ca", other], { limitMs: 60000 });
    assert.notEqual(refused.code, 0);
    assert.match(refused.err, /tls handshake: .*(UnknownIssuer|certificate)/i);
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
