// Graceful shutdown: on SIGTERM/SIGINT the server publishes the changes not yet broadcast (final
// snapshots), closes overlays and spectators with "going away", writes the replay logs and exits 0
// within SHUTDOWN_TIMEOUT_MS; the matches are recovered by the next start.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { startServer, observer, overlay, once, waitFor, uniqueCode, referenceMatch } from "./lib/server.mjs";

const { events, logon } = referenceMatch();
function send(socket, code, from, to) {
  for (let i = from; i < to; i++) {
    const { timestamp, ...event } = events[i];
    socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
  }
}
const loggedEvents = (dir) => {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".replay"));
  return files.length === 1 ? fs.readFileSync(path.join(dir, files[0]), "utf8").split("\n").length - 1 : -1;
};

async function spectator(server, code) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push(JSON.parse(String(d))));
  ws.closed = new Promise((r) => ws.on("close", (c, reason) => r({ code: c, reason: String(reason) })));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: "Viewer" } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined"), 5000, "SpectatorJoined");
  return ws;
}

const disconnectReason = (socket) => new Promise((r) => socket.on("disconnect", (reason) => r(reason)));

test("SIGTERM: final snapshots, 1001 closes, logs written, exit 0; the match survives the restart", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-shutdown-"));
  // A long broadcast interval: once the budget's burst of two is spent, a change would wait
  // about 10 s, so only the shutdown can deliver the third batch in time.
  const env = { BROADCAST_INTERVAL_MS: "10000", SHUTDOWN_TIMEOUT_MS: "4000" };
  try {
    const server = await startServer({ shards: 2, replayDir: dir, env });
    const code = uniqueCode("TERM");
    const viaWs = await overlay(server, code, { transports: ["websocket"] });
    const viaPolling = await overlay(server, code, { transports: ["polling"] });
    const obs = await observer(server, logon(code));
    assert.equal(obs.ack.value, true);
    const closes = [disconnectReason(viaWs.socket), disconnectReason(viaPolling.socket), disconnectReason(obs.socket)];
    send(obs.socket, code, 0, 40);
    await waitFor(() => viaWs.received.length > 0 && viaPolling.received.length > 0, 5000, "the first broadcast");
    const spec = await spectator(server, code);
    send(obs.socket, code, 40, 80);
    await waitFor(() => viaWs.received.length > 1, 5000, "the second broadcast (the burst)");
    const seenBefore = viaWs.received.length;
    send(obs.socket, code, 80, 120);
    await waitFor(() => loggedEvents(dir) === 120, 5000, "120 events accepted");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(viaWs.received.length, seenBefore, "the third batch waits for the budget");

    const exit = await server.stop("SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, server.log());
    assert.match(server.log(), /SIGTERM: shutting down/);
    assert.match(server.log(), /stopped cleanly/);
    assert.deepEqual(await Promise.all(closes), ["transport close", "transport close", "transport close"]);
    assert.deepEqual(await spec.closed, { code: 1001, reason: "server shutting down" });
    assert.equal(loggedEvents(dir), 120, "every accepted event is in the log");
    const finalWs = viaWs.received.at(-1);
    assert.ok(viaWs.received.length > seenBefore, "the final snapshot reached the WebSocket overlay");
    assert.deepEqual(viaPolling.received.at(-1), finalWs, "and the polling overlay");
    const lastGameData = spec.messages.filter((m) => m.type === "GameData").at(-1);
    assert.deepEqual(lastGameData.data.data, finalWs, "and the spectator");

    // Nothing was ended: the next start recovers the match in exactly that state.
    const next = await startServer({ shards: 2, replayDir: dir });
    try {
      // The log (stderr) may arrive after the ready line (stdout).
      const recovered = new RegExp(`match ${code}: recovered .*\\(120 events\\)`);
      await waitFor(() => recovered.test(next.log()), 5000, "the recovery logged");
      const view = await overlay(next, code);
      await waitFor(() => view.received.length > 0, 5000, "the recovered snapshot");
      assert.deepEqual(view.received[0], finalWs);
      view.socket.close();
    } finally {
      await next.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("SIGINT shuts down the same way; an idle server stops at once with exit 0", async () => {
  const server = await startServer({ shards: 2 });
  const exit = await server.stop("SIGINT");
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.match(server.log(), /SIGINT: shutting down/);
});
