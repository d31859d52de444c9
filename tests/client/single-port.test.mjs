// Single-port mode (`--port N` / `PORT=N`): ingest, overlays, spectators and REST on one port. A
// Socket.IO session is an ingest client or an overlay by its first event; `/ws` is spectators;
// everything else is REST. Driven by the real socket.io-client (polling, WebSocket, upgrade), a
// real `ws` spectator, fetch, and the client kit pointed at the one port.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { startServer, observer, overlay, sendEvent, waitFor, uniqueCode, once, client, logonPayload, runProgram, repoRoot } from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({ shards: 2, single: true, key: "single-key" });
});
after(async () => {
  await server.stop();
});

test("one port: the ready line names it and nothing listens on the three default ports", async () => {
  assert.match(server.stdout(), new RegExp(`ingest, rest and broadcast on one port 127\\.0\\.0\\.1:${server.ports.ingest}`));
  const status = await fetch(`${server.rest}/status`);
  assert.equal(status.status, 200);
  assert.deepEqual(await status.json(), { status: "UP", matchesRunning: 0 });
});

for (const transports of [["polling", "websocket"], ["websocket"], ["polling"]]) {
  test(`observer, overlay, spectator and REST on one port (${transports.join(" → ")})`, async () => {
    const code = uniqueCode("ONE");
    const obs = await observer(server, { groupCode: code }, { transports });
    assert.equal(obs.ack.value, true, JSON.stringify(obs.ack));
    const view = await overlay(server, code, { transports });
    assert.equal(view.ok.groupCode, code);

    const spectator = new WebSocket(`ws://127.0.0.1:${server.ports.ingest}/ws`);
    const seen = [];
    spectator.on("message", (d) => seen.push(JSON.parse(String(d))));
    await once(spectator, "open");
    spectator.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: "One" } }));
    await waitFor(() => seen.some((m) => m.type === "SpectatorJoined"), 5000, "the spectator joined");

    sendEvent(obs.socket, code, "game_mode", "swift");
    await waitFor(() => view.received.some((s) => s.matchType === "swift"), 5000, "the overlay got the state");
    await waitFor(() => seen.some((m) => m.type === "GameData" && JSON.stringify(m).includes("swift")), 5000, "the spectator got the state");

    const status = await (await fetch(`${server.rest}/status`)).json();
    assert.ok(status.matchesRunning >= 1);
    const team = await fetch(`${server.rest}/getTeamInfoForCode`);
    assert.deepEqual([team.status, await team.json()], [400, { error: "Group code is required" }]);

    // An overlay event on an ingest session means nothing (it stays an ingest client), and an
    // observer event on an overlay session is not applied.
    view.socket.emit("obs_data", JSON.stringify({ obsName: "x", groupCode: code, type: "game_mode", data: "hacked" }));
    obs.socket.emit("logon", JSON.stringify({ groupCode: code }));
    sendEvent(obs.socket, code, "game_mode", "escalation");
    await waitFor(() => view.received.some((s) => s.matchType === "escalation"), 5000, "the next state");
    assert.ok(!view.received.some((s) => s.matchType === "hacked"), "an overlay cannot send events");
    spectator.close();
    obs.socket.close();
    view.socket.close();
  });
}

test("a session that sends nothing but unknown events stays undecided and harmless", async () => {
  const running = async () => (await (await fetch(`${server.rest}/status`)).json()).matchesRunning;
  const before = await running();
  const s = client(server.ingest, { transports: ["websocket"] });
  await once(s, "connect");
  s.emit("obs_data", JSON.stringify({ groupCode: "NOPE", type: "game_mode", data: "swift" }));
  s.emit("whatever", "x");
  // Then it logs on as an observer, and from then on it is one.
  const ack = once(s, "obs_logon_ack");
  s.emit("obs_logon", JSON.stringify({ ...logonPayload({ key: server.key, groupCode: uniqueCode("LATE") }) }));
  assert.equal(JSON.parse(await ack).value, true);
  assert.equal(await running(), before + 1);
  assert.equal(s.connected, true);
  s.close();
});

test("REST keeps its own body limit and answers unknown paths with 404", async () => {
  const big = await fetch(`${server.rest}/createPreview`, { method: "PUT", headers: { "content-type": "application/json" }, body: "x".repeat(200 * 1024) });
  assert.equal(big.status, 413);
  const missing = await fetch(`${server.rest}/nothing-here`);
  assert.equal(missing.status, 404);
  const plainWs = await fetch(`${server.rest}/ws`);
  assert.equal(plainWs.status, 404, "/ws without an upgrade is not a spectator");
});

test("the client kit pointed at one port: observer.mjs replays the reference match to frontend.mjs overlays", async () => {
  const kitSource = path.resolve(repoRoot, "..", "shared", "kit");
  const kit = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-kit-one-"));
  fs.cpSync(kitSource, kit, {
    recursive: true,
    filter: (src) => !src.includes(`${path.sep}node_modules`) && !src.includes(`${path.sep}results`),
  });
  fs.symlinkSync(path.resolve(repoRoot, "tests", "client", "node_modules"), path.join(kit, "node_modules"));
  const run = (script, args) => runProgram(process.execPath, [script, ...args], { cwd: kit });
  const lastJson = (text) => JSON.parse(text.trim().split("\n").filter((l) => l.startsWith("{")).at(-1));
  try {
    const one = `127.0.0.1:${server.ports.ingest}`;
    const record = path.join(kit, "fe.jsonl");
    const fe = run("frontend.mjs", ["--server", one, "--group", "KITONE", "-n", "3", "--idle", "3", "--duration", "90", "--record", record]);
    await new Promise((r) => setTimeout(r, 1500));
    const obs = await run("observer.mjs", [
      "--file", "reference/match.replay", "--server", one, "--key", "single-key", "--group", "KITONE",
      "--mode", "delay", "--delay", "3", "--marker", "--quiet",
    ]);
    assert.equal(obs.code, 0, obs.err);
    const summary = lastJson(obs.out);
    assert.equal(summary.ok, true);
    assert.equal(summary.sent, 2463);
    assert.equal(summary.stopReason, "game_end");
    const feResult = await fe;
    assert.equal(feResult.code, 0, feResult.err);
    const feSummary = lastJson(feResult.out);
    assert.equal(feSummary.loggedOn, 3);
    assert.equal(feSummary.disconnects, 0);
    const payloads = fs.readFileSync(record, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(payloads.at(-1).roundPhase, "game_end");
    assert.equal(payloads.at(-1).map, "Haven");
  } finally {
    fs.rmSync(kit, { recursive: true, force: true });
  }
});
