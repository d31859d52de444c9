// Socket.IO connection state recovery (RECOVERY_WINDOW_MS) with the real socket.io-client 4.8.1:
// observers, aux clients and overlays whose connection drops come back as the same socket, with
// their logon and room, over WebSocket and over long-polling; spectators of the room see no
// leave/join; after the window the socket is gone and a fresh logon works. The raw handshake
// (pid in the CONNECT ack, {pid, offset} in the CONNECT, offsets on match_data) is checked on
// the wire, across both shards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startServer, client, once, observer, sendEvent, waitFor, sleep, uniqueCode, logonPayload, metric } from "./lib/server.mjs";

const code = uniqueCode;
let server; // default window (120 s)
let short; // RECOVERY_WINDOW_MS=700

before(async () => {
  server = await startServer();
  short = await startServer({ env: { RECOVERY_WINDOW_MS: "700" } });
});
after(async () => {
  await server.stop();
  await short.stop();
});

/** A socket.io client that reconnects by itself, quickly, like the real clients do. */
function reconnecting(url, transports, opts = {}) {
  return client(url, { transports, reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100, ...opts });
}

/** A spectator of the room that records every message. */
async function spectator(srv, room) {
  const ws = new WebSocket(`ws://127.0.0.1:${srv.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push(JSON.parse(String(d))));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: room, spectator_name: "Watcher" } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined"), 3000, "SpectatorJoined");
  ws.presence = () => ws.messages.filter((m) => ["PlayerJoined", "PlayerLeft", "AuthorityChanged"].includes(m.type));
  return ws;
}

/** Drops the client's connection (not a disconnect it asked for) and waits for it to reconnect. */
async function dropAndReconnect(socket) {
  const again = once(socket, "connect", 5000);
  socket.io.engine.close();
  await again;
}

/** An overlay (socket.io-client) that records every match_data with all its arguments. */
async function overlay(srv, group, transports) {
  const socket = reconnecting(srv.broadcast, transports);
  const received = [];
  socket.on("match_data", (...args) => received.push({ state: JSON.parse(args[0]), args }));
  const ok = once(socket, "logon_success");
  socket.emit("logon", JSON.stringify({ groupCode: group }));
  await ok;
  return { socket, received };
}

for (const transports of [["websocket"], ["polling"]]) {
  const via = transports[0];

  test(`${via}: a dropped observer is recovered: same socket, its logon kept, no presence churn`, async () => {
    const group = code("RO");
    const socket = reconnecting(server.ingest, transports);
    const ackP = once(socket, "obs_logon_ack");
    socket.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: group, obsName: "Main" })));
    assert.equal(JSON.parse(await ackP).value, true);
    const ws = await spectator(server, group);
    const watcher = await overlay(server, group, ["websocket"]);
    const id = socket.id;
    const recoveredBefore = await metric(server, "spectra_sessions_recovered_total");

    await dropAndReconnect(socket);
    assert.equal(socket.recovered, true, "socket.recovered");
    assert.equal(socket.id, id, "same socket id");
    // No new logon: the next obs_data is applied.
    sendEvent(socket, group, "game_mode", "swift");
    await waitFor(() => watcher.received.some((m) => m.state.matchType === "swift"), 3000, "obs_data applied after recovery");
    // A logon on the recovered socket (real clients send one on every connect) gets the same
    // successful ack, and changes nothing.
    const again = once(socket, "obs_logon_ack");
    socket.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: group, obsName: "Main" })));
    assert.equal(JSON.parse(await again).value, true);
    sendEvent(socket, group, "game_mode", "unrated");
    await waitFor(() => watcher.received.some((m) => m.state.matchType === "unrated"), 3000, "still applied");
    await sleep(200);
    assert.deepEqual(ws.presence(), [], "the spectator saw no leave/join");
    assert.ok((await metric(server, "spectra_sessions_recovered_total")) > recoveredBefore, "counted");
    socket.close();
    watcher.socket.close();
    ws.close();
  });

  test(`${via}: a dropped aux client is recovered and its aux_data is applied without a new logon`, async () => {
    const group = code("RA");
    const obs = await observer(server, { groupCode: group });
    sendEvent(obs.socket, group, "match_start", `mid-${group}`);
    await sleep(100);
    const ws = await spectator(server, group);
    const aux = reconnecting(server.ingest, transports);
    const ackP = once(aux, "aux_logon_ack");
    const auxLogon = JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "PlayerPC", matchId: `mid-${group}`, playerId: "pa" });
    aux.emit("aux_logon", auxLogon);
    assert.equal(JSON.parse(await ackP).value, true);
    await waitFor(() => ws.presence().length === 1, 3000, "PlayerJoined of the aux client");
    const id = aux.id;

    await dropAndReconnect(aux);
    assert.equal(aux.recovered, true);
    assert.equal(aux.id, id);
    const again = once(aux, "aux_logon_ack");
    aux.emit("aux_logon", auxLogon);
    assert.deepEqual(JSON.parse(await again), { type: "aux_authenticate", value: true });
    // aux_data of its player is applied to the match (counted), not refused.
    const [applied, refused] = [await metric(server, "spectra_events_total"), await metric(server, "spectra_events_refused_total")];
    aux.emit("aux_data", JSON.stringify({ playerId: "pa", matchId: `mid-${group}`, type: "aux_health", data: { health: 80 } }));
    await waitFor(async () => (await metric(server, "spectra_events_total")) === applied + 1, 3000, "aux_data applied");
    assert.equal(await metric(server, "spectra_events_refused_total"), refused);
    assert.deepEqual(ws.presence().map((m) => m.type), ["PlayerJoined"], "no leave/join for the recovery");
    aux.close();
    await waitFor(() => ws.presence().length === 2, 3000, "PlayerLeft when it really leaves");
    obs.socket.close();
    ws.close();
  });

  test(`${via}: a recovered overlay gets the newest state at once`, async () => {
    const group = code("RV");
    const obs = await observer(server, { groupCode: group });
    const ov = await overlay(server, group, transports);
    await waitFor(() => ov.received.length > 0, 3000, "first state");
    const id = ov.socket.id;
    // The state changes while the overlay is away.
    const again = once(ov.socket, "connect", 5000);
    ov.socket.io.engine.close();
    sendEvent(obs.socket, group, "game_mode", "deathmatch");
    await again;
    assert.equal(ov.socket.recovered, true);
    assert.equal(ov.socket.id, id);
    await waitFor(() => ov.received.some((m) => m.state.matchType === "deathmatch"), 1000, "newest state after recovery");
    // match_data carries its offset (a string) for recovery; the state stays the first argument.
    assert.equal(ov.received.at(-1).args.length, 2);
    assert.equal(typeof ov.received.at(-1).args[1], "string");
    // A logon again on the recovered socket is answered again.
    const ok = once(ov.socket, "logon_success");
    ov.socket.emit("logon", JSON.stringify({ groupCode: group }));
    assert.equal(JSON.parse(await ok).groupCode, group);
    // Still subscribed: later states arrive.
    sendEvent(obs.socket, group, "game_mode", "swift");
    await waitFor(() => ov.received.some((m) => m.state.matchType === "swift"), 3000, "later states");
    ov.socket.close();
    obs.socket.close();
  });
}

test("after RECOVERY_WINDOW_MS the socket is gone: the client connects afresh, the room saw it leave, a new logon works", async () => {
  const group = code("RX");
  const socket = reconnecting(short.ingest, ["websocket"], { reconnectionDelay: 1500, reconnectionDelayMax: 1500 });
  const ackP = once(socket, "obs_logon_ack");
  socket.emit("obs_logon", JSON.stringify(logonPayload({ key: short.key, groupCode: group, obsName: "Main" })));
  const first = JSON.parse(await ackP);
  assert.equal(first.value, true);
  const secret = first.reason;
  const ws = await spectator(short, group);
  const expiredBefore = await metric(short, "spectra_sessions_recovery_expired_total");
  const id = socket.id;
  const back = once(socket, "connect", 5000);
  socket.io.engine.close();
  await waitFor(() => ws.presence().some((m) => m.type === "PlayerLeft"), 3000, "PlayerLeft once the window closed");
  assert.equal(await metric(short, "spectra_sessions_held"), 0);
  await back;
  assert.equal(socket.recovered, false);
  assert.notEqual(socket.id, id);
  // The fresh socket is not logged on; a new logon works.
  const ack = once(socket, "obs_logon_ack");
  socket.emit("obs_logon", JSON.stringify(logonPayload({ key: short.key, groupCode: group, groupSecret: secret, obsName: "Main" })));
  assert.equal(JSON.parse(await ack).reason, "reconnected");
  await waitFor(() => ws.presence().filter((m) => m.type === "PlayerJoined").length === 1, 3000, "PlayerJoined of the new logon");
  assert.ok((await metric(short, "spectra_sessions_recovery_expired_total")) > expiredBefore, "counted");
  socket.close();
  ws.close();
});

test("a disconnect the client asked for is not recoverable", async () => {
  const group = code("RD");
  const socket = reconnecting(server.ingest, ["websocket"]);
  const ackP = once(socket, "obs_logon_ack");
  socket.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: group })));
  assert.equal(JSON.parse(await ackP).value, true);
  const ws = await spectator(server, group);
  socket.disconnect();
  await waitFor(() => ws.presence().some((m) => m.type === "PlayerLeft"), 3000, "PlayerLeft at once");
  socket.connect();
  await once(socket, "connect");
  assert.equal(socket.recovered, false);
  socket.close();
  ws.close();
});

test("recovery off (RECOVERY_WINDOW_MS=0): no pid, no offsets, the wire of the original", async () => {
  const off = await startServer({ env: { RECOVERY_WINDOW_MS: "0" } });
  try {
    const ws = await rawSocket(off.ingest);
    ws.send("40");
    assert.match(await ws.next(/^40/), /^40\{"sid":"[^"]+"\}$/);
    ws.close();
  } finally {
    await off.stop();
  }
});

/** A raw Engine.IO/Socket.IO WebSocket: `next(re)` resolves with the next message matching. */
async function rawSocket(base) {
  const ws = new WebSocket(`${base.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
  const queue = [];
  const waiters = [];
  ws.on("message", (d) => {
    const text = String(d);
    if (text === "2") return ws.send("3");
    queue.push(text);
    for (const w of [...waiters]) w();
  });
  ws.next = (re, ms = 3000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timeout waiting for ${re}`)), ms);
      const check = () => {
        const i = queue.findIndex((t) => re.test(t));
        if (i < 0) return;
        clearTimeout(timer);
        waiters.splice(waiters.indexOf(check), 1);
        resolve(queue.splice(i, 1)[0]);
      };
      waiters.push(check);
      check();
    });
  await once(ws, "open");
  ws.eioShard = JSON.parse((await ws.next(/^0/)).slice(1)).sid.slice(0, 2);
  return ws;
}

test("the recovery handshake on the wire, on both shards: pid in the ack, {pid, offset} restores it, unknown pids connect afresh", async () => {
  const ws = await rawSocket(server.ingest);
  ws.send("40");
  const ack = JSON.parse((await ws.next(/^40/)).slice(2));
  assert.match(ack.sid, /^[\w-]{20}$/);
  assert.match(ack.pid, /^[0-9a-f]{2}[\w-]{18}$/);
  const pidShard = ack.pid.slice(0, 2);
  // The server holds the socket once it saw the connection close.
  const held = async () => waitFor(async () => (await metric(server, "spectra_sessions_held")) === 1, 3000, "socket held");
  ws.terminate();
  await held();
  // Reconnect until one lands on the shard that holds the socket and one on the other.
  const landed = new Set();
  for (let i = 0; i < 40 && landed.size < 2; i++) {
    const again = await rawSocket(server.ingest);
    again.send(`40${JSON.stringify({ pid: ack.pid, offset: "0" })}`);
    const back = JSON.parse((await again.next(/^40/)).slice(2));
    assert.deepEqual(back, { sid: ack.sid, pid: ack.pid }, "same socket id and pid");
    landed.add(again.eioShard === pidShard ? "same shard" : "other shard");
    again.terminate();
    await held();
  }
  assert.deepEqual([...landed].sort(), ["other shard", "same shard"]);
  // An unknown pid, or a pid that is connected right now (not held), gets a new socket.
  const live = await rawSocket(server.ingest);
  live.send(`40${JSON.stringify({ pid: ack.pid })}`);
  assert.equal(JSON.parse((await live.next(/^40/)).slice(2)).sid, ack.sid);
  for (const pid of [ack.pid, "00nonexistentpid000000", "x".repeat(5000)]) {
    const other = await rawSocket(server.ingest);
    other.send(`40${JSON.stringify({ pid, offset: "1" })}`);
    const fresh = JSON.parse((await other.next(/^40/)).slice(2));
    assert.notEqual(fresh.sid, ack.sid);
    assert.notEqual(fresh.pid, pid);
    other.close();
  }
  live.close();
});

test("RECOVERY_MAX_HELD bounds the sockets held per shard: beyond it the one held longest is let go", async () => {
  const srv = await startServer({ shards: 1, env: { RECOVERY_MAX_HELD: "2" } });
  try {
    const group = code("RM");
    const obs = await observer(srv, { groupCode: group });
    const overlays = [];
    for (let i = 0; i < 3; i++) overlays.push(await overlay(srv, group, ["websocket"]));
    for (const ov of overlays) {
      ov.socket.io.reconnection(false);
      ov.socket.io.engine.close();
      await sleep(50);
    }
    await waitFor(async () => (await metric(srv, "spectra_sessions_recovery_expired_total")) === 1, 3000, "one let go");
    assert.equal(await metric(srv, "spectra_sessions_held"), 2);
    obs.socket.close();
  } finally {
    await srv.stop();
  }
});
