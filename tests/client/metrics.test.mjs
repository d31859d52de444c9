// Operator endpoints on the REST port: `/metrics` parsed by the official Python Prometheus client's
// text parser, and the live status page rendered by headless Chromium (DOM and screenshot).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { PNG } from "pngjs";
import { chromium, runChromium } from "./lib/chromium.mjs";
import { startServer, observer, overlay, once, sendEvent, waitFor, uniqueCode, parsePrometheus } from "./lib/server.mjs";


const sum = (family, filter = () => true) =>
  family.samples.filter((s) => filter(s.labels)).reduce((a, s) => a + s.value, 0);

let server;
let code;
let obs;
let view;
let spectator;
const EVENTS = 12;

before(async () => {
  // Broadcasts as often as the headless page's test feeds events (every 10 ms): Chromium runs
  // the page in virtual time, so its samples may be only milliseconds apart in real time, and
  // with the default 100 ms budget two of them could see no delivery in between.
  server = await startServer({ shards: 2, env: { BROADCAST_INTERVAL_MS: "10" } });
  code = uniqueCode("MET");
  view = await overlay(server, code);
  obs = await observer(server, { groupCode: code });
  spectator = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
  spectator.messages = [];
  spectator.on("message", (d) => spectator.messages.push(JSON.parse(String(d))));
  await once(spectator, "open");
  spectator.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: "Op" } }));
  await waitFor(() => spectator.messages.some((m) => m.type === "SpectatorJoined"), 5000, "spectator joined");
  for (let i = 0; i < EVENTS; i++) sendEvent(obs.socket, code, "game_mode", i % 2 ? "swift" : "bomb");
  await waitFor(() => view.received.some((s) => s.matchType === "swift"), 5000, "a broadcast");
});

after(async () => {
  spectator.close();
  obs.socket.close();
  view.socket.close();
  await server.stop();
});

test("/metrics is Prometheus text that counts what happened", async () => {
  const res = await fetch(`${server.rest}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  const families = parsePrometheus(await res.text());
  const types = Object.fromEntries(Object.entries(families).map(([n, f]) => [n, f.type]));
  for (const [name, type] of Object.entries({
    spectra_connections: "gauge", spectra_sessions: "gauge", spectra_spectators: "gauge", spectra_matches: "gauge",
    spectra_events: "counter", spectra_deliveries: "counter", spectra_bytes_sent: "counter",
    spectra_skipped_frames: "counter", spectra_dropped_frames: "counter", spectra_slow_consumer_disconnects: "counter",
    spectra_replay_bytes: "counter", spectra_shard_cpu_seconds: "counter", spectra_resident_memory_bytes: "gauge",
    spectra_fanout_seconds: "histogram",
  })) {
    assert.equal(types[name], type, `${name} is a ${type}`);
  }
  const c = families.spectra_connections;
  assert.equal(new Set(c.samples.map((s) => s.labels.shard)).size, 2, "one series per shard");
  assert.ok(sum(c, (l) => l.port === "ingest") >= 1, "the observer's connection");
  assert.ok(sum(c, (l) => l.port === "broadcast") >= 2, "overlay and spectator");
  assert.ok(sum(c, (l) => l.port === "rest") >= 1, "this request");
  assert.equal(sum(families.spectra_matches), 1);
  assert.equal(sum(families.spectra_spectators), 1);
  assert.ok(sum(families.spectra_sessions) >= 2, "observer and overlay sessions");
  assert.equal(sum(families.spectra_events), EVENTS, "every event counted once");
  assert.ok(sum(families.spectra_deliveries) >= 2, "snapshots to the overlay and the spectator");
  assert.ok(sum(families.spectra_bytes_sent) > 0);
  assert.ok(sum(families.spectra_replay_bytes) > 0, "the replay log was written");
  assert.ok(families.spectra_resident_memory_bytes.samples[0].value > 1e6);
  assert.equal(families.spectra_backend_request_seconds, undefined, "no backend histogram without backend mode");
  // Each state handed to this room's subscribers on a shard is one observation; a handful of
  // subscribers on loopback take well under a tenth of a second.
  const fanout = families.spectra_fanout_seconds.samples;
  const count = fanout.find((s) => s.name === "spectra_fanout_seconds_count").value;
  assert.ok(count >= 1, `fan-out observations: ${count}`);
  assert.equal(fanout.find((s) => s.name === "spectra_fanout_seconds_bucket" && s.labels.le === "0.1").value, count);
  assert.ok(fanout.find((s) => s.name === "spectra_fanout_seconds_sum").value > 0);
});

test("/status/live gathers matches from the owner and overlays from every shard", async () => {
  const live = await (await fetch(`${server.rest}/status/live`)).json();
  const m = live.matches.find((x) => x.groupCode === code);
  assert.ok(m, JSON.stringify(live));
  assert.equal(m.overlays, 1);
  assert.equal(m.spectators, 1);
  assert.deepEqual(m.teams, ["LFT", "RGT"]);
  assert.equal(live.shards.length, 2);
  assert.equal(live.shards.reduce((a, s) => a + s.events, 0), EVENTS);
});

test("the status page renders in headless Chromium (DOM and screenshot)", async (t) => {
  assert.ok(fs.existsSync(chromium), `Chromium not found at ${chromium} (Debian package chromium; .ci/run installs it)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-chromium-"));
  const shot = path.join(dir, "status.png");
  const run = (extra) =>
    runChromium(dir, ["--window-size=1200,700", "--virtual-time-budget=3000", ...extra], `${server.rest}/`);
  // Events keep arriving while the page samples, so its charts have something to draw.
  let n = 0;
  const feed = setInterval(() => sendEvent(obs.socket, code, "game_mode", n++ % 2 ? "swift" : "bomb"), 10);
  try {
    const dom = await run(["--dump-dom"]);
    clearInterval(feed);
    assert.equal(dom.status, 0, dom.err);
    // The charts of the last minutes: drawn from at least two samples, one CPU line per shard.
    const svg = (id) => {
      const m = dom.out.match(new RegExp(`<svg id="${id}"[^>]*>([\\s\\S]*?)</svg>`));
      assert.ok(m, `${id} is drawn`);
      const attr = (name) => m[0].match(new RegExp(`data-${name}="([^"]*)"`))?.[1];
      const numbers = (name) => attr(name).split(",").map(Number);
      return { points: Number(attr("points")), series: Number(attr("series")), last: numbers("last"), max: numbers("max"), lines: (m[1].match(/<polyline/g) || []).length };
    };
    const events = svg("chart-events");
    assert.ok(events.points >= 2, `${events.points} samples in the events chart`);
    assert.ok(events.max[0] > 0, `events/s drawn: ${events.max}`);
    const deliveries = svg("chart-deliveries");
    assert.ok(deliveries.max[0] > 0, `deliveries/s drawn: ${deliveries.max}`);
    assert.ok(svg("chart-connections").last[0] >= 3, "observer, overlay and spectator connections");
    const cpu = svg("chart-cpu");
    assert.equal(cpu.series, 2, "one CPU series per shard");
    assert.equal(cpu.lines, 2);
    t.diagnostic(`charts: ${events.points} samples; max events/s ${events.max}, deliveries/s ${deliveries.max}, cpu ${cpu.max}`);
    assert.match(dom.out, /<span id="state"[^>]*>live<\/span>/, "the page reached /status/live");
    assert.match(dom.out, new RegExp(`<tr data-code="${code}">`), "the match is listed");
    assert.match(dom.out, /LFT 0 : 0 RGT/);
    assert.equal((dom.out.match(/<tr data-shard="/g) || []).length, 2, "one row per shard");

    const res = await run([`--screenshot=${shot}`]);
    assert.equal(res.status, 0, res.err);
    const png = PNG.sync.read(fs.readFileSync(shot));
    assert.deepEqual([png.width, png.height], [1200, 700]);
    const at = (x, y) => Array.from(png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3));
    // The header bar is drawn in the page's red (#ff4655), the body in its dark blue (#0f1923).
    assert.deepEqual(at(1190, 5), [0xff, 0x46, 0x55], "header colour");
    assert.deepEqual(at(5, 690), [0x0f, 0x19, 0x23], "background colour");
    const colours = new Set();
    for (let i = 0; i < png.data.length; i += 4 * 97) colours.add(png.data.readUInt32BE(i));
    assert.ok(colours.size > 10, `text and tables were drawn (${colours.size} colours sampled)`);
    t.diagnostic(`screenshot: ${png.width}x${png.height}, ${colours.size} colours sampled`);
  } finally {
    clearInterval(feed);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
