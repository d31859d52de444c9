// 1,000 spectators (spread over both shards) receive every GameData of a replayed match: each
// spectator's count equals the number of broadcasts an overlay of the same match received, and
// every event's latency marker reaches every spectator.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import WebSocket from "ws";
import { startServer, observer, overlay, sleep, waitFor, repoRoot } from "./lib/server.mjs";

const SPECTATORS = 1000;
const EVENTS = 60;
const DELAY_MS = 200;

let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

const markerOf = (text) => {
  const m = /"matchType":"bomb#kit:(\d+):/.exec(text);
  return m ? Number(m[1]) : 0;
};

test(`${SPECTATORS} spectators receive every GameData of a replayed match`, { timeout: 120000 }, async () => {
  const replay = fs.readFileSync(path.resolve(repoRoot, "..", "shared", "kit", "reference", "match.replay"), "utf8");
  const events = JSON.parse(`[${replay}]`).slice(1, 1 + EVENTS);
  const group = "SCALE";
  const obs = await observer(server, { groupCode: group });
  const ov = await overlay(server, group);

  const spectators = [];
  const shards = new Set();
  for (let batch = 0; batch < SPECTATORS / 100; batch++) {
    const opened = [];
    for (let i = 0; i < 100; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`, { perMessageDeflate: false });
      ws.gameData = 0;
      ws.markers = new Set();
      ws.joined = false;
      ws.on("upgrade", (res) => shards.add(res.headers["x-spectra-shard"]));
      ws.on("message", (d) => {
        const text = String(d);
        if (text.startsWith('{"type":"GameData"')) {
          ws.gameData++;
          ws.markers.add(markerOf(text));
        } else if (text.startsWith('{"type":"SpectatorJoined"')) ws.joined = true;
      });
      opened.push(new Promise((resolve, reject) => {
        ws.once("open", () => {
          ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: group, spectator_name: `S${batch * 100 + i}` } }));
          resolve();
        });
        ws.once("error", reject);
      }));
      spectators.push(ws);
    }
    await Promise.all(opened);
  }
  await waitFor(() => spectators.every((s) => s.joined && s.gameData >= 1), 20000, "all joined");
  assert.equal(shards.size, 2, "spectators on both shards");
  await sleep(500);
  for (const s of spectators) {
    s.gameData = 0;
    s.markers.clear();
  }
  const overlayStart = ov.received.length;

  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    obs.socket.emit("obs_data", JSON.stringify({ obsName: "TestObserver", groupCode: group, type: e.type, data: e.data }));
    obs.socket.emit("obs_data", JSON.stringify({ obsName: "TestObserver", groupCode: group, type: "game_mode", data: `bomb#kit:${i + 1}:${Date.now()}` }));
    await sleep(DELAY_MS);
  }
  await waitFor(() => spectators.every((s) => s.markers.has(EVENTS)), 20000, "last marker everywhere");
  await sleep(500);
  const sent = ov.received.length - overlayStart;
  assert.ok(sent >= EVENTS * 0.9, `overlay received ${sent} broadcasts for ${EVENTS} events`);
  // Each spectator got the broadcasts the overlay got. When an event and its marker land in two
  // broadcasts a few ms apart (the budget allows two in quick succession), a spectator whose
  // writer has not yet taken the first gets only the second — latest wins, by design — so a
  // count may be one or two short; no state is lost (the marker check below).
  const counts = new Map();
  for (const s of spectators) counts.set(s.gameData, (counts.get(s.gameData) ?? 0) + 1);
  assert.ok(spectators.every((s) => s.gameData <= sent && s.gameData >= sent - 2),
    `every spectator got the broadcasts sent (${sent}): ${JSON.stringify([...counts.entries()])}`);
  for (const s of spectators) {
    for (let m = 1; m <= EVENTS; m++) if (!s.markers.has(m) && !s.markers.has(m + 1)) assert.fail(`marker ${m} missing`);
  }
  for (const s of spectators) s.close();
  obs.socket.close();
  ov.socket.close();
});
