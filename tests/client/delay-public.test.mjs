// A spectator delay that holds (issue "Hardening, second round", defects 4 and 9;
// ../shared/spec/viewer-streams.md §4): with SPECTATOR_DELAY_MS the public knows a match by its
// public code only. No public channel — spectators, HTTP streams, GET /matches, an overlay logon
// with the public code, team info — holds a state or the result before the delay has passed
// since the overlays got it; the group code opens no public door. Real socket.io-client, ws,
// EventSource, fetch and the kit's observer.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { EventSource } from "eventsource";
import { startServer, startNats, startClusterNode, observer, overlay, client, once, sleep, waitFor, uniqueCode, referenceMatch, metric, runProgram, repoRoot } from "./lib/server.mjs";

const DELAY = 5000;
const { events, logon } = referenceMatch();

async function spectator(server, code) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push({ ...JSON.parse(String(d)), at: Date.now(), raw: String(d) }));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: "Public" } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed"), 3000, "the join answer");
  ws.answer = ws.messages.find((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed");
  return ws;
}

test("SPECTATOR_DELAY_MS=5000: public viewers get nothing, not even the result, sooner than 5 s after the overlays; the group code opens no public door", async (t) => {
  const server = await startServer({ shards: 2, env: { SPECTATOR_DELAY_MS: String(DELAY) } });
  const cleanup = [];
  try {
    const code = uniqueCode("GHOST");
    const obs = await observer(server, logon(code));
    // The acknowledgement: the usual fields, plus the public code for the operator.
    assert.equal(obs.ack.value, true);
    assert.equal(obs.ack.type, "authenticate");
    assert.equal(typeof obs.ack.reason, "string");
    const pub = obs.ack.publicCode;
    assert.match(pub, /^PUB-[0-9A-F]{24}$/);
    assert.ok(!pub.includes(code));
    // The status page lists it beside the group code, for the operator.
    const live = await (await fetch(`${server.rest}/status/live`)).json();
    assert.equal(live.matches.find((m) => m.groupCode === code)?.publicCode, pub);
    // A group code starting like a public code is refused while a delay is on.
    const squatter = await observer(server, logon(`PUB-${code}`));
    assert.equal(squatter.ack.value, false);
    assert.match(squatter.ack.reason, /PUB-/);
    squatter.socket.close();

    // Overlays: the group code works live; the public code is refused (no state).
    // (WebSocket only: long-polling would add its own latency to the overlay's clock.)
    const view = await overlay(server, code, { transports: ["websocket"] });
    const byPublic = client(server.broadcast);
    const publicStates = [];
    byPublic.on("match_data", (d) => publicStates.push(d));
    const refused = once(byPublic, "logon_failure");
    byPublic.emit("logon", JSON.stringify({ groupCode: pub }));
    assert.match(JSON.parse(await refused).error, /public code/);
    // Public doors with the group code: like an unknown room.
    const withGroup = await spectator(server, code);
    assert.equal(withGroup.answer.type, "SpectatorJoinFailed");
    assert.equal(withGroup.answer.data.error_code, "ROOM_NOT_FOUND");
    withGroup.close();
    for (const url of [`/matches/${code}`, `/matches/${code}/stream`, `/matches/${code.toLowerCase()}`]) {
      const r = await fetch(`${server.rest}${url}`);
      assert.equal(r.status, 404, url);
      await r.body?.cancel();
    }

    // The public's doors with the public code.
    const ws = await spectator(server, pub);
    assert.equal(ws.answer.type, "SpectatorJoined", JSON.stringify(ws.answer));
    assert.equal(ws.answer.data.room_code, pub);
    const lower = await spectator(server, pub.toLowerCase());
    assert.equal(lower.answer.type, "SpectatorJoined");
    const es = new EventSource(`${server.rest}/matches/${pub}/stream`);
    cleanup.push(() => es.close());
    const sse = [];
    es.addEventListener("snapshot", (e) => sse.push({ at: Date.now(), data: e.data }));
    es.addEventListener("delta", (e) => sse.push({ at: Date.now(), data: e.data }));
    let streamEnd;
    es.addEventListener("end", () => (streamEnd = Date.now()));
    const polls = [];
    let polling = true;
    cleanup.push(() => (polling = false));
    const poller = (async () => {
      while (polling) {
        const r = await fetch(`${server.rest}/matches/${pub}`);
        const body = await r.text();
        const info = await fetch(`${server.rest}/getTeamInfoForCode?groupCode=${code}`);
        polls.push({ at: Date.now(), status: r.status, body, info: info.status });
        await info.body?.cancel();
        await sleep(100);
      }
    })();

    // Markers 300 ms apart: the overlay's receipt of each is the clock.
    const seenByOverlay = new Map();
    let endedAt;
    view.socket.on("match_data", (d) => {
      const state = JSON.parse(d);
      if (!seenByOverlay.has(state.matchType)) seenByOverlay.set(state.matchType, Date.now());
      if (state.roundPhase === "game_end") endedAt ??= Date.now();
    });
    const markers = ["m1", "m2", "m3", "m4", "m5", "m6"];
    for (const m of markers) {
      obs.socket.emit("obs_data", JSON.stringify({ obsName: "Obs", groupCode: code, type: "game_mode", data: m }));
      await sleep(300);
    }
    // Then the whole reference match, fast, to its end.
    for (let i = 0; i < events.length; i++) {
      const { timestamp, ...event } = events[i];
      obs.socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
      if (i % 4 === 3) await sleep(5);
    }
    await waitFor(() => endedAt !== undefined, 30000, "game end at the overlay");
    await waitFor(() => ws.messages.some((m) => m.type === "SpectatorLeft"), DELAY + 5000, "room_closed");
    const closedAt = ws.messages.find((m) => m.type === "SpectatorLeft").at;
    await waitFor(() => streamEnd !== undefined, 3000, "the stream's end");
    await sleep(300);
    polling = false;
    await poller;

    // Every state a public viewer got came ≥ 5 s after the overlay got the same round and phase,
    // and carries the public code, never the group code.
    const games = ws.messages.filter((m) => m.type === "GameData");
    assert.ok(games.length > 10, `${games.length} states`);
    for (const m of ws.messages) assert.ok(!m.raw.includes(code), `the group code in ${m.raw.slice(0, 120)}`);
    for (const s of sse) assert.ok(!s.data.includes(code), "the group code in a stream record");
    let earliest = Infinity;
    const firstAt = new Map();
    for (const m of games) {
      assert.equal(m.data.data.groupCode, pub);
      if (!firstAt.has(m.data.data.matchType)) firstAt.set(m.data.data.matchType, m.at);
    }
    for (const m of markers) {
      assert.ok(seenByOverlay.has(m) && firstAt.has(m), `${m} seen by the overlay and the spectator`);
      earliest = Math.min(earliest, firstAt.get(m) - seenByOverlay.get(m));
    }
    assert.ok(earliest >= DELAY - 50, `a spectator got a state ${earliest} ms after the overlay`);
    for (const s of sse) {
      const type = JSON.parse(s.data).matchType ?? JSON.parse(s.data).patch?.find((op) => op.path === "/matchType")?.value;
      const at = markers.includes(type) ? seenByOverlay.get(type) : undefined;
      if (at !== undefined) assert.ok(s.at - at >= DELAY - 50, `a stream record ${s.at - at} ms after the overlay`);
    }
    for (const p of polls.filter((p) => p.status === 200)) {
      const body = JSON.parse(p.body);
      assert.equal(body.groupCode, pub);
      assert.ok(!p.body.includes(code), "the group code in GET /matches");
    }
    for (const m of markers) {
      const first = polls.find((p) => p.status === 200 && JSON.parse(p.body).matchType === m);
      assert.ok(first, `GET /matches showed ${m}`);
      assert.ok(first.at - seenByOverlay.get(m) >= DELAY - 50, `GET /matches showed ${m} ${first.at - seenByOverlay.get(m)} ms after the overlay`);
    }
    // The result: hidden until the delayed viewers reach the end — the match stays readable, the
    // team info unpublished, the counts unchanged.
    assert.ok(closedAt - endedAt >= DELAY - 100, `room_closed ${closedAt - endedAt} ms after the game end`);
    assert.ok(streamEnd - endedAt >= DELAY - 100, `the stream's end ${streamEnd - endedAt} ms after the game end`);
    const beforeClose = polls.filter((p) => p.at >= endedAt && p.at < endedAt + DELAY - 200);
    assert.ok(beforeClose.length > 10, `${beforeClose.length} polls between the end and the delayed end`);
    for (const p of beforeClose) {
      assert.equal(p.status, 200, `GET /matches/{public} ${p.at - endedAt} ms after the end`);
      assert.equal(p.info, 404, `team info ${p.at - endedAt} ms after the end`);
    }
    const after = polls.filter((p) => p.at > closedAt + 200);
    assert.ok(after.length > 0 && after.every((p) => p.status === 404 && p.info === 200), "published after the delayed end");
    assert.equal(publicStates.length, 0, "the overlay with the public code got no state");
    assert.equal(await metric(server, "spectra_matches"), 0);
    t.diagnostic(`earliest public state ${earliest} ms after the overlay; room_closed ${closedAt - endedAt} ms after the game end`);
    for (const s of [ws, lower]) s.close();
    es.close();
    byPublic.close();
    view.socket.close();
    obs.socket.close();
  } finally {
    for (const f of cleanup) f();
    await server.stop();
  }
});

test("the kit's observer (the real client's logon) works unchanged when the acknowledgement carries publicCode", async () => {
  const server = await startServer({ shards: 2, key: "kit-auth-key", env: { SPECTATOR_DELAY_MS: "1000" } });
  const kit = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-kit-delay-"));
  try {
    const source = path.resolve(repoRoot, "..", "shared", "kit");
    fs.cpSync(source, kit, { recursive: true, filter: (src) => !src.includes(`${path.sep}node_modules`) && !src.includes(`${path.sep}results`) });
    fs.symlinkSync(path.resolve(repoRoot, "tests", "client", "node_modules"), path.join(kit, "node_modules"));
    const view = await overlay(server, "KITPUB");
    const obs = await runProgram(process.execPath, [
      "observer.mjs", "--file", "reference/match.replay", "--server", `127.0.0.1:${server.ports.ingest}`,
      "--key", "kit-auth-key", "--group", "KITPUB", "--mode", "delay", "--delay", "1", "--quiet",
    ], { cwd: kit, limitMs: 120000 });
    assert.equal(obs.code, 0, obs.err);
    const summary = JSON.parse(obs.out.trim().split("\n").filter((l) => l.startsWith("{")).at(-1));
    assert.equal(summary.ok, true);
    assert.match(JSON.parse(summary.ack).publicCode, /^PUB-/);
    assert.equal(summary.stopReason, "game_end");
    await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 5000, "the overlay's game end");
    view.socket.close();
  } finally {
    await server.stop();
    fs.rmSync(kit, { recursive: true, force: true });
  }
});

test("cluster: a spectator on an edge joins a delayed match by its public code (resolved at the origin), never by its group code", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    for (const id of ["pa", "pb"]) {
      nodes.push(await startClusterNode(nats, id, { SPECTATOR_DELAY_MS: "1000", PUBLIC_CODE_KEY: "cluster-key" }));
    }
    const [a, b] = nodes;
    const code = uniqueCode("CPUB");
    const obs = await observer(a, logon(code));
    const pub = obs.ack.publicCode;
    assert.match(pub, /^PUB-/);
    const byGroup = await spectator(b, code);
    assert.equal(byGroup.answer.data.error_code, "ROOM_NOT_FOUND");
    byGroup.close();
    const ws = await spectator(b, pub);
    assert.equal(ws.answer.type, "SpectatorJoined", JSON.stringify(ws.answer));
    assert.equal(ws.answer.data.room_code, pub);
    obs.socket.emit("obs_data", JSON.stringify({ obsName: "Obs", groupCode: code, type: "game_mode", data: "edge" }));
    await waitFor(() => ws.messages.some((m) => m.type === "GameData" && m.data.data.matchType === "edge"), 5000, "the delayed state on the edge");
    for (const m of ws.messages) assert.ok(!m.raw.includes(code), "the group code reached the edge's spectator");
    ws.close();
    obs.socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});
