// Hostile clients over real sockets (issue "Hardening"): each test sends what an attacker would,
// asserts the server stays up with bounded memory, the refusal is clear, and honest clients keep
// their data. Raw Engine.IO / WebSocket / TCP where the real client cannot produce the attack.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import WebSocket from "ws";
import {
  startServer, observer, overlay, client, once, sendEvent, waitFor, uniqueCode, sleep, raw, metric,
} from "./lib/server.mjs";

/** Resident memory of the server process in MB (from /proc/<pid>/status). */
function rssMb(server) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${server.child.pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

const last = (o) => o.received[o.received.length - 1];

function rosterLine(name, id, team) {
  return { name, tagline: "EUW", startTeam: team, agentInternal: "Wushu", playerId: id, position: 0, locked: true, rank: 0 };
}

function board(id, team, kills, deaths = 0) {
  return { name: id, tagline: "EUW", playerId: id, startTeam: team, agentInternal: "Wushu", isAlive: true,
    initialArmor: 2, scoreboardWeaponInternal: "TX_Hud_Volcano", currUltPoints: 1, maxUltPoints: 7,
    hasSpike: false, money: 800, kills, deaths, assists: 0 };
}

/** An observer with a started match (match id `matchId`), two players, and an overlay. */
async function startedMatch(server, prefix, matchId) {
  const code = uniqueCode(prefix);
  const o = await observer(server, { groupCode: code });
  assert.equal(o.ack.value, true);
  const ov = await overlay(server, code);
  sendEvent(o.socket, code, "roster", rosterLine("Ada", "p-ada", 0));
  sendEvent(o.socket, code, "roster", rosterLine("Bo", "p-bo", 1));
  sendEvent(o.socket, code, "match_start", matchId);
  await waitFor(() => last(ov)?.matchId === matchId, 5000, "match_start broadcast");
  return { code, o, ov };
}

async function auxClient(server, matchId, playerId) {
  const socket = client(server.ingest);
  const ackP = once(socket, "aux_logon_ack");
  socket.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "Aux", matchId, playerId }));
  assert.deepEqual(JSON.parse(await ackP), { type: "aux_authenticate", value: true });
  return socket;
}

const auxEvent = (socket, matchId, playerId, type, data, name = "aux_data") =>
  socket.emit(name, JSON.stringify({ playerId, matchId, type, data }));

test("round numbers, strings and counters from a client cannot size the state (1)", async () => {
  const server = await startServer();
  try {
    const { code, o, ov } = await startedMatch(server, "BIG", "mid-big");
    const before = rssMb(server);
    for (const n of [1e8, 1e6, 9.2e18, 9223372036854775807, -1e9, 1e300]) {
      sendEvent(o.socket, code, "round_info", { roundNumber: n, roundPhase: "shopping" });
    }
    sendEvent(o.socket, code, "round_info", { roundNumber: "x".repeat(60000), roundPhase: "shopping" });
    for (let i = 0; i < 2000; i++) {
      sendEvent(o.socket, code, "killfeed", { attacker: "Bo", victim: `v${i}`, weaponKillfeedInternal: `w${i}`.repeat(100), isTeamkill: false, assists: [] });
    }
    // The honest observer's next event still arrives, and the snapshot stays small.
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => last(ov)?.map === "Ascent", 10000, "honest event after the attack");
    const snap = last(ov);
    assert.ok(JSON.stringify(snap).length < 64 * 1024, `snapshot ${JSON.stringify(snap).length} bytes`);
    for (const t of snap.teams) assert.ok(t.roundRecord.length <= 205, `roundRecord ${t.roundRecord.length}`);
    assert.ok(snap.roundNumber.length <= 256);
    assert.ok(rssMb(server) - before < 100, `RSS grew from ${before} to ${rssMb(server)} MB`);
    assert.equal(server.exited, false);
    o.socket.close();
    ov.socket.close();
  } finally {
    await server.stop();
  }
});

test("an aux session may send only aux_data of aux types for its own player (2)", async () => {
  const server = await startServer();
  try {
    const { code, o, ov } = await startedMatch(server, "AUX", "mid-aux");
    sendEvent(o.socket, code, "score", { team_0: 1, team_1: 0 });
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => last(ov)?.map === "Ascent");
    const aux = await auxClient(server, "mid-aux", "p-ada");
    const refusedBefore = await metric(server, "spectra_events_refused_total");
    // Observer events through either event name, and aux events for another player.
    for (const name of ["obs_data", "aux_data"]) {
      auxEvent(aux, "mid-aux", "p-ada", "score", { team_0: 0, team_1: 13 }, name);
      auxEvent(aux, "mid-aux", "p-ada", "map", "Haven", name);
      auxEvent(aux, "mid-aux", "p-ada", "round_info", { roundNumber: 30, roundPhase: "game_end" }, name);
    }
    aux.emit("obs_data", JSON.stringify({ obsName: "x", groupCode: code, type: "score", data: { team_0: 0, team_1: 13 } }));
    auxEvent(aux, "mid-aux", "p-bo", "aux_health", 1);
    auxEvent(aux, "mid-aux", "p-ada", "aux_scoreboard", board("p-bo", 1, 40));
    // Its own player's data is applied.
    auxEvent(aux, "mid-aux", "p-ada", "aux_health", 42);
    await waitFor(() => last(ov)?.teams[0].players[0].health === 42, 5000, "own aux health");
    await waitFor(async () => (await metric(server, "spectra_events_refused_total")) - refusedBefore >= 9, 5000, "refusals counted");
    const snap = last(ov);
    assert.equal(snap.map, "Ascent");
    assert.equal(snap.isRunning, true);
    assert.deepEqual(snap.teams.map((t) => t.roundsWon), [1, 0]);
    assert.equal(snap.teams[1].players[0].health, 100);
    assert.equal(snap.teams[1].players[0].kills, 0);
    assert.match(server.log(), /aux client may send only aux_data/);
    assert.match(server.log(), /aux client of player p-ada sent an event for player p-bo/);
    // The match is still live and its observer still connected.
    assert.equal(o.socket.connected, true);
    const status = await (await fetch(`${server.rest}/status`)).json();
    assert.ok(JSON.stringify(status).length > 0);
    aux.close();
    o.socket.close();
    ov.socket.close();
  } finally {
    await server.stop();
  }
});

test("a match id re-sent by another match does not capture the players' aux clients (7)", async () => {
  const server = await startServer({ shards: 2 });
  try {
    // The attacker's match exists first; the real match reports its id; then the attacker
    // re-sends the same id in match_start.
    const evil = await startedMatch(server, "EVIL", "evil-first");
    const real = await startedMatch(server, "REAL", "mid-victim");
    sendEvent(evil.o.socket, evil.code, "match_start", "mid-victim");
    await waitFor(() => last(evil.ov)?.matchId === "mid-victim");
    const aux = await auxClient(server, "mid-victim", "p-ada");
    auxEvent(aux, "mid-victim", "p-ada", "aux_health", 7);
    await waitFor(() => last(real.ov)?.teams[0].players[0].health === 7, 5000, "aux data in the real match");
    await sleep(200);
    assert.equal(last(evil.ov).teams[0].players[0].health, 100, "nothing reached the attacker's match");
    assert.match(server.log(), /match id mid-victim is claimed by several matches/);
    for (const s of [aux, evil.o.socket, evil.ov.socket, real.o.socket, real.ov.socket]) s.close();
  } finally {
    await server.stop();
  }
});

test("events nested deeper than the limit are refused live, as recovery would (8)", async () => {
  const server = await startServer();
  try {
    const code = uniqueCode("DEEP");
    const o = await observer(server, { groupCode: code });
    const ov = await overlay(server, code);
    const deep = (n) => JSON.parse(`${"[".repeat(n)}1${"]".repeat(n)}`);
    sendEvent(o.socket, code, "toast", { title: "deep", message: deep(200), duration: null });
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => last(ov)?.map === "Ascent");
    assert.equal(last(ov).toastInfo.active, false, "the deep event was not applied");
    assert.match(server.log(), /event nests deeper than the limit of 32/);
    assert.ok((await metric(server, "spectra_events_refused_total")) >= 1);
    o.socket.close();
    ov.socket.close();
  } finally {
    await server.stop();
  }
});

test("killsThisRound is the difference from the round start (12)", async () => {
  const server = await startServer();
  try {
    const { code, o, ov } = await startedMatch(server, "KTR", "mid-ktr");
    sendEvent(o.socket, code, "scoreboard", board("p-ada", 0, 19));
    sendEvent(o.socket, code, "round_info", { roundNumber: 28, roundPhase: "shopping" });
    for (const k of [20, 19, 21]) sendEvent(o.socket, code, "scoreboard", board("p-ada", 0, k));
    await waitFor(() => last(ov)?.teams[0].players[0].kills === 21);
    assert.equal(last(ov).teams[0].players[0].killsThisRound, 2);
    o.socket.close();
    ov.socket.close();
  } finally {
    await server.stop();
  }
});


/** A WebSocket upgrade on a raw TCP socket that then neither reads nor writes anything. */
function silentWebSocket(port, path) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    s.once("data", (d) => {
      if (!String(d).startsWith("HTTP/1.1 101")) return reject(new Error(String(d)));
      s.pause(); // never reads again, never answers a ping or a close
      resolve(s);
    });
    s.on("error", () => {});
  });
}

async function openConnections(server, port) {
  const text = await (await fetch(`${server.rest}/metrics`)).text();
  let n = 0;
  for (const line of text.split("\n")) if (line.startsWith(`spectra_connections{port="${port}"`)) n += Number(line.split(" ").pop());
  return n;
}

test("binary packets are refused on Spectra's ports before anything is buffered (3)", async () => {
  const server = await startServer();
  try {
    const before = rssMb(server);
    const mb = Buffer.alloc(1024 * 1024, 7);
    const closes = await Promise.all(Array.from({ length: 20 }, () => new Promise((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.ports.ingest}/socket.io/?EIO=4&transport=websocket`);
      ws.on("message", (m) => {
        if (String(m).startsWith("0")) {
          ws.send("40");
          const announce = `4564-["obs_data",${Array.from({ length: 64 }, (_, i) => `{"_placeholder":true,"num":${i}}`).join(",")}]`;
          ws.send(announce);
          for (let i = 0; i < 8; i++) ws.send(mb, () => {});
        }
      });
      ws.on("close", () => resolve(true));
      ws.on("error", () => {});
      setTimeout(() => resolve(false), 5000);
    })));
    assert.ok(closes.every(Boolean), "every session was closed");
    assert.match(server.log(), /binary packet on a port that takes none/);
    assert.ok(rssMb(server) - before < 150, `RSS grew from ${before} to ${rssMb(server)} MB`);
    // An honest observer still logs on.
    const o = await observer(server, { groupCode: uniqueCode("BIN") });
    assert.equal(o.ack.value, true);
    o.socket.close();
  } finally {
    await server.stop();
  }
});

test("silent WebSocket sessions are released after the ping timeout (4)", async () => {
  const server = await startServer({
    env: { PING_INTERVAL_MS: "300", PING_TIMEOUT_MS: "300", MAX_CONNECTIONS: "8" },
  });
  try {
    const silent = [];
    for (let i = 0; i < 3; i++) silent.push(await silentWebSocket(server.ports.ingest, "/socket.io/?EIO=4&transport=websocket"));
    for (let i = 0; i < 2; i++) silent.push(await silentWebSocket(server.ports.broadcast, "/ws"));
    assert.equal(await openConnections(server, "ingest"), 3);
    // Ping timeout (0.6 s), then at most the 2 s close grace: every slot is free again, although
    // none of the peers ever answered or closed.
    await waitFor(async () => (await openConnections(server, "ingest")) === 0 && (await openConnections(server, "broadcast")) === 0,
      8000, "silent sessions released");
    // The connection limit (8, one held by this test's fetch) counts them no more: five new clients and a request get in.
    const clients = [];
    for (let i = 0; i < 5; i++) clients.push(await silentWebSocket(server.ports.broadcast, "/ws"));
    assert.match(await raw(server.ports.rest, "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), /^HTTP\/1\.1 200/);
    for (const s of [...silent, ...clients]) s.destroy();
  } finally {
    await server.stop();
  }
});

test("ambiguous HTTP framing gets 400 and the appended request is not served (9)", async () => {
  const server = await startServer();
  try {
    const smuggled = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
    const heads = [
      "Content-Length: 5\r\nTransfer-Encoding: chunked",
      "Content-Length: 5\r\nContent-Length: 6",
      "Content-Length: +5",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ];
    for (const head of heads) {
      const out = await raw(server.ports.rest, `PUT /createPreview HTTP/1.1\r\nHost: x\r\n${head}\r\n\r\n0\r\n\r\n${smuggled}`);
      assert.match(out, /^HTTP\/1\.1 400 /, head);
      assert.equal(out.match(/HTTP\/1\.1/g).length, 1, `${head}: only one answer`);
    }
  } finally {
    await server.stop();
  }
});

/** A spectator that counts what it receives. */
function viewer(server, room, name) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
    ws.bytes = 0;
    ws.messages = [];
    ws.on("message", (d) => {
      ws.bytes += d.length;
      ws.messages.push(JSON.parse(String(d)));
      if (ws.messages.at(-1).type === "SpectatorJoined") resolve(ws);
    });
    ws.closeCode = new Promise((r) => ws.on("close", (c) => r(c)));
    ws.on("open", () => ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: room, spectator_name: name } })));
    ws.on("error", reject);
  });
}

test("a join/leave flood is rate-limited and presence notices are coalesced (6)", async () => {
  const server = await startServer();
  try {
    const code = uniqueCode("FLOOD");
    const o = await observer(server, { groupCode: code });
    const audience = await Promise.all(Array.from({ length: 20 }, (_, i) => viewer(server, code, `V${i}`)));
    await sleep(1500); // the audience's own join notices are spent
    const before = audience.map((w) => w.bytes);
    const attacker = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
    const replies = [];
    attacker.on("message", (d) => replies.push(JSON.parse(String(d))));
    const closed = new Promise((r) => attacker.on("close", (c) => r(c)));
    await new Promise((r) => attacker.on("open", r));
    const join = JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: "Flood" } });
    const leave = JSON.stringify({ type: "LeaveSpectator" });
    for (let i = 0; i < 10000 && attacker.readyState === WebSocket.OPEN; i++) {
      attacker.send(join);
      attacker.send(leave);
    }
    assert.equal(await closed, 1008, "the flooding connection is closed (policy)");
    assert.ok(replies.some((m) => m.type === "Error" && m.data.error_code === "RATE_LIMITED"));
    // The canary still gets the match, promptly.
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => audience[0].messages.some((m) => m.type === "GameData" && m.data.data.map === "Ascent"), 3000, "canary GameData");
    await sleep(500);
    const presence = audience[0].messages.filter((m) => m.type === "NewSpectatorJoined" || m.type === "SpectatorDisconnected");
    const received = audience.map((w, i) => w.bytes - before[i]);
    // At most 5 accepted joins/leaves reach the room, and notices are at most ~4 per second.
    assert.ok(received.every((b) => b < 200_000), `bytes per spectator ${Math.max(...received)}`);
    assert.ok(presence.length < 20 + 10, `presence notices ${presence.length}`);
    assert.equal(server.exited, false);
    for (const w of audience) w.close();
    o.socket.close();
  } finally {
    await server.stop();
  }
});

test("an unused polling handshake expires and one address cannot take every polling slot (5)", async () => {
  const server = await startServer({ env: { LIMIT_LOOPBACK: "true", MAX_POLLING_SESSIONS_PER_IP: "20", MAX_CONNECTIONS_PER_IP: "1000" } });
  try {
    const handshake = () => fetch(`${server.broadcast}/socket.io/?EIO=4&transport=polling`);
    const answers = await Promise.all(Array.from({ length: 60 }, handshake));
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 20);
    const refused = answers.find((r) => r.status === 503);
    assert.match((await refused.json()).message, /from your address/);
    // Unused handshakes free their slots after 10 s; then the address gets in again.
    await sleep(10500);
    await waitFor(async () => (await handshake()).status === 200, 3000, "a freed polling slot");
  } finally {
    await server.stop();
  }
});

test("group codes are validated and live matches are capped per key and per address (10)", async () => {
  const server = await startServer({ env: { LIMIT_LOOPBACK: "true", MAX_MATCHES_PER_IP: "3", MAX_MATCHES_PER_KEY: "100" } });
  try {
    for (const bad of ["A".repeat(60_000), "A\nmatch FAKE: created", "../../etc", "A B", "x".repeat(65)]) {
      const o = await observer(server, { groupCode: bad });
      assert.equal(o.ack.value, false);
      assert.match(o.ack.reason, /^Invalid group code/);
      o.socket.close();
    }
    const huge = await observer(server, { groupCode: "A".repeat(200_000) });
    assert.equal(huge.ack.reason, "Invalid packet: logon data over 64 KB.");
    huge.socket.close();
    assert.doesNotMatch(server.log(), /match FAKE/);
    const live = [];
    for (let i = 0; i < 3; i++) {
      const o = await observer(server, { groupCode: uniqueCode("CAP") });
      assert.equal(o.ack.value, true);
      live.push(o);
    }
    const refused = await observer(server, { groupCode: uniqueCode("CAP") });
    assert.equal(refused.ack.value, false);
    assert.match(refused.ack.reason, /Your address already has 3 live matches/);
    refused.socket.close();
    for (const o of live) o.socket.close();
  } finally {
    await server.stop();
  }
  const perKey = await startServer({ env: { MAX_MATCHES_PER_KEY: "2" } });
  try {
    const codes = [uniqueCode("KEY"), uniqueCode("KEY")];
    const live = [];
    for (const c of codes) live.push(await observer(perKey, { groupCode: c }));
    assert.ok(live.every((o) => o.ack.value));
    const refused = await observer(perKey, { groupCode: uniqueCode("KEY") });
    assert.match(refused.ack.reason, /This access key already has 2 live matches/);
    // The first match ends (game_end): a new one is accepted.
    sendEvent(live[0].socket, codes[0], "round_info", { roundNumber: 1, roundPhase: "game_end" });
    await waitFor(async () => (await observer(perKey, { groupCode: uniqueCode("KEY") })).ack.value === true, 5000, "a freed match place");
    for (const o of live) o.socket.close();
  } finally {
    await perKey.stop();
  }
});

/** Opens a keep-alive connection with one answered request carrying `headers`; resolves with
 * the socket and the first answer. */
function heldRequest(port, headers = "") {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(`GET /status HTTP/1.1\r\nHost: x\r\n${headers}\r\n`));
    s.once("data", (d) => resolve({ socket: s, answer: String(d) }));
    s.on("error", reject);
  });
}

test("exposure: private replay files, operator endpoints behind ADMIN_TOKEN, limits per forwarded client (11)", async () => {
  const dir = fs.mkdtempSync("/tmp/spectra-exposure-");
  const replays = `${dir}/replays`;
  const server = await startServer({
    replayDir: replays,
    env: { ADMIN_TOKEN: "s3cret-admin", TRUSTED_PROXIES: "127.0.0.1", MAX_CONNECTIONS_PER_IP: "2" },
  });
  try {
    const o = await observer(server, { groupCode: uniqueCode("EXP") });
    assert.equal(o.ack.value, true);
    await waitFor(() => fs.readdirSync(replays).length === 1, 5000, "replay file");
    assert.equal(fs.statSync(replays).mode & 0o777, 0o700);
    assert.equal(fs.statSync(`${replays}/${fs.readdirSync(replays)[0]}`).mode & 0o777, 0o600);
    // Operator endpoints: refused without the token, served with it; /status stays open.
    for (const path of ["/", "/status/live", "/metrics"]) {
      const denied = await fetch(`${server.rest}${path}`);
      assert.equal(denied.status, 401, path);
      assert.match((await denied.json()).error, /ADMIN_TOKEN/);
      assert.equal((await fetch(`${server.rest}${path}`, { headers: { Authorization: "Bearer wrong" } })).status, 401);
      assert.equal((await fetch(`${server.rest}${path}`, { headers: { Authorization: "Bearer s3cret-admin" } })).status, 200, path);
    }
    assert.equal((await fetch(`${server.rest}/status/live?token=s3cret-admin`)).status, 200);
    assert.equal((await fetch(`${server.rest}/status`)).status, 200);
    // Behind the trusted proxy (127.0.0.1) the forwarded client is the one limited: two
    // connections for 203.0.113.1, the third refused, while another client still gets in.
    const a1 = await heldRequest(server.ports.rest, "X-Forwarded-For: 203.0.113.1\r\n");
    const a2 = await heldRequest(server.ports.rest, "X-Forwarded-For: 6.6.6.6, 203.0.113.1\r\n");
    const a3 = await heldRequest(server.ports.rest, "X-Forwarded-For: 203.0.113.1\r\n");
    assert.match(a1.answer, /^HTTP\/1\.1 200/);
    assert.match(a2.answer, /^HTTP\/1\.1 200/);
    assert.match(a3.answer, /^HTTP\/1\.1 503/);
    assert.match(a3.answer, /Too many connections from your address/);
    const b = await heldRequest(server.ports.rest, "X-Forwarded-For: 198.51.100.2\r\n");
    assert.match(b.answer, /^HTTP\/1\.1 200/);
    for (const c of [a1, a2, a3, b]) c.socket.destroy();
    o.socket.close();
  } finally {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // Without ADMIN_TOKEN: direct loopback clients only (a proxy header means someone else).
  const open = await startServer();
  try {
    assert.equal((await fetch(`${open.rest}/metrics`)).status, 200);
    const viaProxy = await fetch(`${open.rest}/status/live`, { headers: { "X-Forwarded-For": "203.0.113.5" } });
    assert.equal(viaProxy.status, 401);
    assert.match((await viaProxy.json()).error, /only local clients/);
  } finally {
    await open.stop();
  }
});

test("a replay log that cannot be written is marked incomplete and never restored as if whole (8)", async () => {
  const dir = fs.mkdtempSync("/tmp/spectra-fsize-");
  const code = uniqueCode("FULL");
  // The file size limit stands in for a full disk: writes past 40 KB fail (EFBIG).
  const server = await startServer({ replayDir: dir, shell: 'trap "" XFSZ; ulimit -f 40' });
  try {
    const o = await observer(server, { groupCode: code });
    const ov = await overlay(server, code);
    sendEvent(o.socket, code, "roster", rosterLine("Ada", "p-ada", 0));
    for (let i = 0; i < 200; i++) sendEvent(o.socket, code, "scoreboard", board("p-ada", 0, i));
    await waitFor(() => /the log is incomplete/.test(server.log()), 10000, "write failure logged");
    assert.match(server.log(), /renamed to .*\.replay\.incomplete; it will not be recovered/);
    assert.equal(await metric(server, "spectra_replay_incomplete_total"), 1);
    // The match goes on for its overlay.
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => last(ov)?.map === "Ascent");
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.endsWith(".replay")), []);
    await server.stop("SIGKILL");
  } finally {
    if (!server.exited) await server.stop("SIGKILL");
  }
  // After the crash the incomplete log is not recovered: no silent rewind.
  const again = await startServer({ replayDir: dir });
  try {
    assert.doesNotMatch(again.log(), new RegExp(`match ${code}: recovered`));
    const status = await (await fetch(`${again.rest}/status`)).json();
    assert.equal(status.matchesRunning, 0);
  } finally {
    await again.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** An overlay on a raw socket: Engine.IO over WebSocket without deflate, logs on, then stops
 * reading for good (its kernel buffers fill, the server's writes block). */
function stuckOverlay(server, code) {
  return new Promise((resolve, reject) => {
    const s = net.connect(server.ports.broadcast, "127.0.0.1", () =>
      s.write("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
    const frame = (text) => {
      const payload = Buffer.from(text);
      const mask = Buffer.from([1, 2, 3, 4]);
      const head = payload.length < 126 ? Buffer.from([0x81, 0x80 | payload.length]) : Buffer.from([0x81, 0xfe, payload.length >> 8, payload.length & 255]);
      return Buffer.concat([head, mask, payload.map((b, i) => b ^ mask[i % 4])]);
    };
    s.once("data", (d) => {
      if (!String(d).startsWith("HTTP/1.1 101")) return reject(new Error(String(d)));
      s.write(frame("40"));
      s.write(frame(`42["logon",${JSON.stringify(JSON.stringify({ groupCode: code }))}]`));
      setTimeout(() => (s.pause(), resolve(s)), 200);
    });
    s.on("error", () => {});
  });
}

test("overlays that stop reading are closed and release their sockets (4)", async () => {
  const server = await startServer({
    env: { PING_INTERVAL_MS: "4000", PING_TIMEOUT_MS: "3000", BROADCAST_INTERVAL_MS: "20" },
  });
  try {
    const code = uniqueCode("STUCK");
    const o = await observer(server, { groupCode: code });
    const honest = await overlay(server, code);
    for (let i = 0; i < 10; i++) {
      sendEvent(o.socket, code, "roster", { ...rosterLine(`${i}${"n".repeat(300)}`, `p${i}${"i".repeat(300)}`, i < 5 ? 0 : 1),
        position: ["p".repeat(900)], locked: ["l".repeat(900)], agentInternal: ["a".repeat(900)] });
    }
    const stuck = await Promise.all(Array.from({ length: 5 }, () => stuckOverlay(server, code)));
    const slowBefore = await metric(server, "spectra_slow_consumer_disconnects_total");
    // Big snapshots (~40 KB, uncompressed for the stuck ones) about 50 times a second.
    const started = Date.now();
    const pump = setInterval(() => sendEvent(o.socket, code, "observing", `x${Date.now()}`), 20);
    try {
      // Ping interval + timeout (7 s), then the 2 s grace: the blocked writers are abandoned.
      await waitFor(async () => (await metric(server, "spectra_slow_consumer_disconnects_total")) - slowBefore >= 5,
        20000, "blocked writers released");
      await waitFor(async () => (await openConnections(server, "broadcast")) <= 2, 5000, "stuck sockets closed");
    } finally {
      clearInterval(pump);
    }
    assert.ok(Date.now() - started < 15000);
    // The honest overlay kept receiving all along.
    const n = honest.received.length;
    sendEvent(o.socket, code, "map", "Ascent");
    await waitFor(() => last(honest)?.map === "Ascent");
    assert.ok(honest.received.length > n);
    for (const s of stuck) s.destroy();
    o.socket.close();
    honest.socket.close();
  } finally {
    await server.stop();
  }
});

/** Splits what a server sent on a WebSocket (unmasked frames) into frames; `rest` is an
 * incomplete frame at the end. Throws on anything that is not a whole, final text or control
 * frame (a frame sent twice in part, or cut short, shows up as garbage here). */
function serverFrames(buf) {
  const frames = [];
  let at = 0;
  while (at + 2 <= buf.length) {
    const fin = buf[at] & 0x80, opcode = buf[at] & 0x0f;
    let len = buf[at + 1] & 0x7f, head = 2;
    if (buf[at + 1] & 0x80) throw new Error(`masked frame from the server at ${at}`);
    if (len === 126) { if (at + 4 > buf.length) break; len = buf.readUInt16BE(at + 2); head = 4; }
    else if (len === 127) { if (at + 10 > buf.length) break; len = Number(buf.readBigUInt64BE(at + 2)); head = 10; }
    if (at + head + len > buf.length) break;
    if (!fin || ![1, 8, 9, 10].includes(opcode)) throw new Error(`unexpected frame (fin ${fin}, opcode ${opcode}) at ${at}`);
    frames.push({ opcode, text: buf.subarray(at + head, at + head + len).toString() });
    at += head + len;
  }
  return { frames, rest: buf.length - at };
}

test("an overlay that stops reading for a while gets whole frames when it reads again, the newest state last", async () => {
  const server = await startServer({
    shards: 1,
    env: { PING_INTERVAL_MS: "30000", PING_TIMEOUT_MS: "20000", BROADCAST_INTERVAL_MS: "20" },
  });
  try {
    const code = uniqueCode("PAUSE");
    const o = await observer(server, { groupCode: code });
    for (let i = 0; i < 10; i++) {
      sendEvent(o.socket, code, "roster", { ...rosterLine(`${i}${"n".repeat(300)}`, `p${i}${"i".repeat(300)}`, i < 5 ? 0 : 1),
        position: ["p".repeat(900)], locked: ["l".repeat(900)], agentInternal: ["a".repeat(900)] });
    }
    const s = await stuckOverlay(server, code); // paused after logon
    const chunks = [];
    s.on("data", (d) => chunks.push(d));
    const skippedBefore = await metric(server, "spectra_skipped_frames_total");
    // Snapshots of ~40 KB, uncompressed, 50 a second: the socket's buffers fill, the server's
    // sends are taken in part, the rest waits in the connection's queue.
    const pump = setInterval(() => sendEvent(o.socket, code, "observing", `x${Date.now()}`), 20);
    try {
      await waitFor(async () => (await metric(server, "spectra_skipped_frames_total")) > skippedBefore,
        20000, "the overlay's socket full (snapshots replaced in its queue)");
      await sleep(500);
    } finally {
      clearInterval(pump);
    }
    sendEvent(o.socket, code, "map", "Ascent");
    s.resume();
    let seen;
    await waitFor(() => {
      const { frames } = serverFrames(Buffer.concat(chunks));
      const states = frames.filter((f) => f.text.startsWith('42["match_data"'));
      seen = states.length;
      return states.length > 0 && JSON.parse(JSON.parse(states[states.length - 1].text.slice(2))[1]).map === "Ascent";
    }, 15000, "the newest state after reading again");
    // Every frame is whole: each state parses as the packet it was sent as.
    const { frames, rest } = serverFrames(Buffer.concat(chunks));
    assert.equal(rest, 0);
    for (const f of frames.filter((f) => f.opcode === 1 && f.text.startsWith("42"))) {
      const [event, data] = JSON.parse(f.text.slice(2));
      assert.equal(event, "match_data");
      assert.equal(typeof JSON.parse(data), "object");
    }
    assert.ok(seen > 1, `states received: ${seen}`);
    s.destroy();
    o.socket.close();
  } finally {
    await server.stop();
  }
});

test("what a session keeps (and a recovery holds) is bounded: aux logon size and player id, overlay group codes", async () => {
  const server = await startServer();
  try {
    const aux = async (fields, pad = "") => {
      const socket = client(server.ingest, { transports: ["websocket"] });
      const ack = once(socket, "aux_logon_ack");
      socket.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "P", matchId: "m", ...fields, pad }));
      const reply = JSON.parse(await ack);
      socket.close();
      return reply;
    };
    assert.deepEqual(await aux({ playerId: "p" }, "x".repeat(70_000)), { type: "aux_authenticate", value: false, reason: "Invalid packet: logon data over 64 KB." });
    assert.equal((await aux({ playerId: "p".repeat(129) })).reason, "Invalid packet: playerId over 128 characters.");
    // An overlay logon with a code no match can have is refused, and holds nothing.
    const long = "G".repeat(50_000);
    const ov = client(server.broadcast);
    const refused = once(ov, "logon_failure");
    ov.emit("logon", JSON.stringify({ groupCode: long }));
    assert.match(JSON.parse(await refused).error, /^Invalid group code/);
    ov.close();
    const status = await fetch(`${server.rest}/status`).then((r) => r.json());
    assert.equal(status.status, "UP");
  } finally {
    await server.stop();
  }
});

test("with a spectator delay, aux clients that churn hold bounded memory: a room lists at most 32 ingest clients and its waiting messages share one player list per change (5)", async (t) => {
  const server = await startServer({ shards: 1, env: { SPECTATOR_DELAY_MS: "30000" } });
  try {
    const { code, o, ov } = await startedMatch(server, "CHURN", "mid-churn");
    const before = rssMb(server);
    const kept = [];
    for (let i = 0; i < 200; i++) kept.push(await auxClient(server, "mid-churn", `p-${i}`));
    // Churn: one leaves, one arrives, 400 times (every join and leave is a delayed message).
    for (let i = 0; i < 400; i++) {
      kept.shift().close();
      kept.push(await auxClient(server, "mid-churn", `q-${i}`));
    }
    await sleep(500);
    const grown = rssMb(server) - before;
    t.diagnostic(`RSS +${grown.toFixed(1)} MB after 200 aux clients and 400 churns with a 30 s delay`);
    assert.ok(grown < 40, `RSS grew ${grown.toFixed(1)} MB`);
    // The match goes on for its overlays.
    sendEvent(o.socket, code, "game_mode", "after-churn");
    await waitFor(() => last(ov)?.matchType === "after-churn", 5000, "the state after the churn");
    for (const s of kept) s.close();
    o.socket.close();
    ov.socket.close();
  } finally {
    await server.stop();
  }
});
