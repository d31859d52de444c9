// Spectators: the plain-WebSocket JSON protocol on the broadcast port (/ws, /v2/ws), driven by a
// real `ws` client while the real socket.io-client plays observer, aux client and overlay.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startServer, observer, overlay, client, once, sendEvent, sleep, waitFor, uniqueCode } from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

const code = uniqueCode;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** A spectator connection that records every message. */
async function spectator(srv = server, path = "/ws", opts = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.broadcast}${path}`, opts);
  ws.messages = [];
  ws.arrived = new WeakMap(); // message → performance.now() when it was received
  ws.on("message", (d, isBinary) => {
    const m = isBinary ? { binary: true } : JSON.parse(String(d));
    ws.arrived.set(m, performance.now());
    ws.messages.push(m);
  });
  ws.closed = new Promise((r) => ws.on("close", (c) => r(c)));
  const upgrade = once(ws, "upgrade");
  await once(ws, "open");
  ws.shard = (await upgrade).headers["x-spectra-shard"];
  ws.sendJson = (m) => ws.send(JSON.stringify(m));
  ws.next = async (type, ms = 3000) => {
    let found;
    await waitFor(() => (found = ws.messages.find((m) => m.type === type && !m.seen)), ms, `${type}`);
    found.seen = true;
    return found;
  };
  ws.join = (room_code, spectator_name = "Viewer", game_name = "valorant") =>
    ws.sendJson({ type: "JoinAsSpectator", data: { game_name, room_code, spectator_name } });
  return ws;
}

test("joining a live match: SpectatorJoined, then GameData with the current snapshot", async () => {
  const group = code("SP");
  const obs = await observer(server, { groupCode: group, obsName: "Caster" });
  const ws = await spectator();
  ws.join(group.toLowerCase(), "  Coach  ");
  const joined = (await ws.next("SpectatorJoined")).data;
  assert.match(joined.room_id, UUID);
  assert.equal(joined.room_code, group);
  assert.match(joined.spectator_id, UUID);
  assert.equal(joined.game_name, "valorant");
  assert.equal(joined.current_players.length, 1);
  const p = joined.current_players[0];
  assert.deepEqual([p.name, p.is_authority, p.is_ready], ["Caster", true, true]);
  assert.match(p.id, UUID);
  assert.match(p.connected_at, TIME);
  assert.deepEqual(joined.current_spectators.map((s) => s.name), ["Coach"]);
  assert.equal(joined.current_spectators[0].id, joined.spectator_id);
  assert.equal(joined.spectator_count, 1);
  assert.equal(joined.lobby_state, "waiting");
  const first = (await ws.next("GameData")).data;
  assert.equal(first.from_player, p.id);
  assert.equal(first.data.groupCode, group);
  assert.equal(first.data.groupSecret, undefined);
  assert.equal(ws.messages.findIndex((m) => m.type === "GameData"), 1, "GameData follows SpectatorJoined");
  // Every change reaches the spectator, as an object.
  sendEvent(obs.socket, group, "game_mode", "swift");
  await waitFor(() => ws.messages.some((m) => m.type === "GameData" && m.data.data.matchType === "swift"), 3000, "swift");
  ws.close();
  obs.socket.close();
});

test("/v2/ws is an alias; Ping gets Pong", async () => {
  const ws = await spectator(server, "/v2/ws");
  ws.sendJson({ type: "Ping" });
  assert.deepEqual(await ws.next("Pong"), { type: "Pong", seen: true });
  ws.close();
});

test("join failures keep the connection open", async () => {
  const ws = await spectator();
  ws.join("NOSUCHROOM");
  assert.deepEqual((await ws.next("SpectatorJoinFailed")).data, {
    reason: "The requested room could not be found.", error_code: "ROOM_NOT_FOUND",
  });
  const group = code("GF");
  const obs = await observer(server, { groupCode: group });
  ws.join(group, "Viewer", "another-game");
  assert.equal((await ws.next("SpectatorJoinFailed")).data.error_code, "ROOM_NOT_FOUND");
  for (const data of [{}, { game_name: "valorant", room_code: group }, { game_name: "valorant", room_code: group, spectator_name: "x".repeat(33) },
    { game_name: "valorant", room_code: group, spectator_name: "   " }, { game_name: "valorant", room_code: group, spectator_name: "a\u0007b" }]) {
    ws.sendJson({ type: "JoinAsSpectator", data });
    assert.equal((await ws.next("SpectatorJoinFailed")).data.error_code, "INVALID_INPUT", JSON.stringify(data));
  }
  ws.join(group);
  await ws.next("SpectatorJoined");
  ws.join(group);
  assert.equal((await ws.next("SpectatorJoinFailed")).data.error_code, "ALREADY_SPECTATING");
  ws.sendJson({ type: "Ping" });
  await ws.next("Pong");
  ws.close();
  obs.socket.close();
});

test("malformed input gets INVALID_INPUT and the connection stays", async () => {
  const ws = await spectator();
  for (const bad of ["not json", "[1,2]", JSON.stringify({ type: "Dance" }), JSON.stringify({ data: {} })]) {
    ws.send(bad);
    assert.deepEqual((await ws.next("Error")).data, { message: "Invalid client message", error_code: "INVALID_INPUT" });
  }
  ws.send(Buffer.from([1, 2, 3]));
  assert.equal((await ws.next("Error")).data.error_code, "INVALID_INPUT");
  ws.sendJson({ type: "Ping", data: null });
  await ws.next("Pong");
  ws.close();
});

test("spectators are read-only: player actions are refused and change nothing", async () => {
  const group = code("RO");
  const obs = await observer(server, { groupCode: group });
  sendEvent(obs.socket, group, "map", "Ascent");
  const ov = await overlay(server, group);
  const ws = await spectator();
  ws.join(group);
  await ws.next("GameData");
  await sleep(300);
  const overlayBefore = ov.received.length;
  const spectatorBefore = ws.messages.filter((m) => m.type === "GameData").length;
  for (const type of ["GameData", "PlayerReady", "AuthorityRequest"]) {
    ws.sendJson({ type, data: { type: "map", data: "Bonsai", groupCode: group } });
    assert.equal((await ws.next("Error")).data.error_code, "SPECTATOR_READ_ONLY");
  }
  await sleep(400);
  assert.equal(ov.received.length, overlayBefore, "no new broadcast");
  assert.equal(ws.messages.filter((m) => m.type === "GameData").length, spectatorBefore);
  assert.equal(ov.received.at(-1).map, "Ascent");
  ws.close();
  ov.socket.close();
  obs.socket.close();
});

test("room events: lobby states, game start, players joining and leaving, authority", async () => {
  const group = code("EV");
  const obs = await observer(server, { groupCode: group, obsName: "Main" });
  const secret = obs.ack.reason;
  const ws = await spectator();
  ws.join(group);
  const joined = (await ws.next("SpectatorJoined")).data;
  const observerId = joined.current_players[0].id;
  sendEvent(obs.socket, group, "roster", { name: "A", tagline: "1", startTeam: 0, agentInternal: "Wushu", playerId: "pa", position: 0, locked: true, rank: 0 });
  assert.deepEqual((await ws.next("LobbyStateChanged")).data, { lobby_state: "lobby" });
  await sleep(300); // the roster's state is out
  const seenBefore = ws.messages.length;
  sendEvent(obs.socket, group, "match_start", `mid-${group}`);
  assert.deepEqual((await ws.next("LobbyStateChanged")).data, { lobby_state: "finalized" });
  const starting = (await ws.next("GameStarting")).data;
  assert.equal(starting.match_id, `mid-${group}`);
  assert.deepEqual(starting.peer_connections, [{ player_id: observerId, player_name: "Main", is_authority: true }]);
  // The two messages go out with the state of the match start, in the same write right before
  // it (one round of sends to the room instead of two): nothing between them, and they arrive
  // together — a separate publication of the messages would come 5 ms (the coalescing wait)
  // or more before the state.
  await waitFor(() => ws.messages.slice(seenBefore).some((m) => m.type === "GameData"), 3000, "GameData");
  const burst = ws.messages.slice(seenBefore);
  const started = burst.find((m) => m.type === "GameData");
  assert.equal(started.data.data.matchId, `mid-${group}`);
  assert.equal(started.data.data.isRunning, true);
  assert.deepEqual(burst.map((m) => m.type), ["LobbyStateChanged", "GameStarting", "GameData"]);
  const apart = ws.arrived.get(started) - ws.arrived.get(burst[0]);
  assert.ok(apart < 3, `the lobby change came ${apart.toFixed(1)} ms before its state`);
  // An aux client joins and leaves.
  const auxSock = client(server.ingest);
  const ackP = once(auxSock, "aux_logon_ack");
  auxSock.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "PlayerPC", matchId: `mid-${group}`, playerId: "pa" }));
  assert.equal(JSON.parse(await ackP).value, true);
  const pj = (await ws.next("PlayerJoined")).data.player;
  assert.deepEqual([pj.name, pj.is_authority, pj.is_ready], ["PlayerPC", false, true]);
  auxSock.close();
  assert.deepEqual((await ws.next("PlayerLeft")).data, { player_id: pj.id });
  // The observer drops and comes back with its secret.
  obs.socket.close();
  assert.deepEqual((await ws.next("PlayerLeft")).data, { player_id: observerId });
  assert.deepEqual((await ws.next("AuthorityChanged")).data, { authority_player: null, you_are_authority: false });
  const again = await observer(server, { groupCode: group, groupSecret: secret, obsName: "Main" });
  assert.equal(again.ack.reason, "reconnected");
  const back = (await ws.next("PlayerJoined")).data.player;
  assert.equal(back.is_authority, true);
  assert.deepEqual((await ws.next("AuthorityChanged")).data, { authority_player: back.id, you_are_authority: false });
  // Game end: the final state, then the room closes.
  sendEvent(again.socket, group, "round_info", { roundNumber: 13, roundPhase: "game_end" });
  const left = (await ws.next("SpectatorLeft")).data;
  assert.deepEqual(left, { room_id: joined.room_id, room_code: group, reason: "room_closed", current_spectators: [], spectator_count: 0 });
  const lastGameData = ws.messages.filter((m) => m.type === "GameData").at(-1);
  assert.equal(lastGameData.data.data.roundPhase, "game_end");
  assert.ok(ws.messages.indexOf(lastGameData) < ws.messages.findIndex((m) => m.type === "SpectatorLeft"));
  // The connection stays usable.
  ws.sendJson({ type: "Ping" });
  await ws.next("Pong");
  ws.close();
  again.socket.close();
});

test("spectator presence: joins, voluntary leave, disconnect; spectators on both shards", async () => {
  const group = code("PR");
  const obs = await observer(server, { groupCode: group });
  const first = await spectator();
  first.join(group, "First");
  await first.next("SpectatorJoined");
  const others = [];
  const shards = new Set([first.shard]);
  for (let i = 0; i < 30 && (others.length < 2 || shards.size < 2); i++) {
    const s = await spectator();
    s.join(group, `S${i}`);
    await s.next("SpectatorJoined");
    const seen = (await first.next("NewSpectatorJoined")).data;
    assert.equal(seen.spectator.name, `S${i}`);
    assert.equal(seen.spectator_count, i + 2);
    shards.add(s.shard);
    others.push(s);
  }
  assert.equal(shards.size, 2, "spectators on both shards");
  // Everyone, on both shards, gets the next GameData.
  sendEvent(obs.socket, group, "game_mode", "spikerush");
  for (const s of [first, ...others]) {
    await waitFor(() => s.messages.some((m) => m.type === "GameData" && m.data.data.matchType === "spikerush"), 3000, "GameData on every shard");
  }
  const leaver = others.pop();
  leaver.sendJson({ type: "LeaveSpectator" });
  const myLeft = (await leaver.next("SpectatorLeft")).data;
  assert.equal(myLeft.reason, "voluntary_leave");
  assert.equal(myLeft.room_code, group);
  let gone = (await first.next("SpectatorDisconnected")).data;
  assert.equal(gone.reason, "voluntary_leave");
  assert.equal(gone.spectator_count, others.length + 1);
  // After leaving, the connection gets no room traffic but may join again.
  sendEvent(obs.socket, group, "game_mode", "deathmatch");
  await sleep(300);
  assert.ok(!leaver.messages.some((m) => m.type === "GameData" && m.data.data.matchType === "deathmatch"));
  leaver.join(group, "Again");
  await leaver.next("SpectatorJoined");
  await first.next("NewSpectatorJoined");
  const closer = others.pop();
  closer.close();
  gone = (await first.next("SpectatorDisconnected")).data;
  assert.equal(gone.reason, "disconnected");
  for (const s of [first, leaver, ...others]) s.close();
  obs.socket.close();
});

test("limits: spectators per room, disabled spectating, oversized frames", async () => {
  const limited = await startServer({ shards: 2, env: { MAX_SPECTATORS_PER_ROOM: "2" } });
  try {
    const obs = await observer(limited, { groupCode: "LIM" });
    const a = await spectator(limited);
    const b = await spectator(limited);
    const c = await spectator(limited);
    a.join("LIM");
    await a.next("SpectatorJoined");
    b.join("LIM");
    await b.next("SpectatorJoined");
    c.join("LIM");
    assert.equal((await c.next("SpectatorJoinFailed")).data.error_code, "TOO_MANY_SPECTATORS");
    a.sendJson({ type: "LeaveSpectator" });
    await a.next("SpectatorLeft");
    c.join("LIM");
    await c.next("SpectatorJoined");
    for (const s of [a, b, c]) s.close();
    obs.socket.close();
  } finally {
    await limited.stop();
  }
  const closed = await startServer({ shards: 1, env: { ALLOW_SPECTATORS: "false" } });
  try {
    const obs = await observer(closed, { groupCode: "NOPE" });
    const s = await spectator(closed);
    s.join("NOPE");
    assert.equal((await s.next("SpectatorJoinFailed")).data.error_code, "SPECTATOR_NOT_ALLOWED");
    s.close();
    obs.socket.close();
  } finally {
    await closed.stop();
  }
  const big = await spectator();
  big.send(JSON.stringify({ type: "Ping", data: { pad: "x".repeat(70 * 1024) } }));
  assert.equal((await big.next("Error")).data.error_code, "MESSAGE_TOO_LARGE");
  assert.equal(await big.closed, 1009);
});

test("heartbeat: the server pings and closes a spectator that stops answering", async () => {
  const srv = await startServer({ shards: 1, args: ["--ping-interval-ms", "200", "--ping-timeout-ms", "200"] });
  try {
    const alive = await spectator(srv);
    const silent = await spectator(srv, "/ws", { autoPong: false });
    let pings = 0;
    silent.on("ping", () => pings++);
    const closedAt = await Promise.race([silent.closed.then(() => true), sleep(3000).then(() => false)]);
    assert.ok(closedAt, "the silent spectator was closed");
    assert.ok(pings >= 1);
    assert.equal(alive.readyState, WebSocket.OPEN, "a spectator that answers pings stays");
    alive.close();
  } finally {
    await srv.stop();
  }
});
