// Observer and auxiliary logon through the real socket.io-client, over every transport setup.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  startServer, observer, client, once, sendEvent, logonPayload, sleep, waitFor, uniqueCode,
} from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

const transports = {
  "default (polling, then upgrade)": {},
  "polling only": { transports: ["polling"] },
  "websocket only": { transports: ["websocket"] },
};

const code = uniqueCode;

for (const [name, opts] of Object.entries(transports)) {
  test(`observer logon accepted over ${name}`, async () => {
    const { socket, ack } = await observer(server, { groupCode: code("OK") }, opts);
    assert.equal(ack.type, "authenticate");
    assert.equal(ack.value, true);
    assert.match(ack.reason, /^[A-Z0-9]{12}$/);
    assert.ok(socket.connected);
    socket.close();
  });

  test(`wrong key rejected over ${name}, then server-side disconnect`, async () => {
    const socket = client(server.ingest, opts);
    const ackP = once(socket, "obs_logon_ack");
    const discP = once(socket, "disconnect");
    socket.emit("obs_logon", JSON.stringify(logonPayload({ key: "wrong", groupCode: code("WK") })));
    assert.deepEqual(JSON.parse(await ackP), { type: "authenticate", value: false, reason: "Invalid Key" });
    assert.equal(await discP, "io server disconnect");
    socket.close();
  });
}

test("incompatible client version is rejected with the compatible range", async () => {
  const { socket, ack } = await observer(server, { clientVersion: "0.2.9", groupCode: code("V") });
  assert.equal(ack.value, false);
  assert.match(ack.reason, /^Client version 0\.2\.9 is not compatible with server version \S+ \(compatible: >=0\.3\.3 <0\.3\.25\)\.$/);
  socket.close();
});

test("pre-release and missing versions are rejected; v-prefix and build metadata accepted", async () => {
  for (const [v, ok] of [["0.3.5-beta", false], [undefined, false], ["v0.3.5", true], ["0.3.5+b1", true]]) {
    const { socket, ack } = await observer(server, { clientVersion: v, groupCode: code("SV") });
    assert.equal(ack.value, ok, `version ${v}`);
    socket.close();
  }
});

test("wrong packet type is rejected as Invalid packet.", async () => {
  const { socket, ack } = await observer(server, { type: "hello", groupCode: code("T") });
  assert.deepEqual(ack, { type: "authenticate", value: false, reason: "Invalid packet." });
  socket.close();
});

test("malformed logon JSON gets a clear failure ack (the original hung)", async () => {
  const socket = client(server.ingest);
  const ackP = once(socket, "obs_logon_ack");
  const discP = once(socket, "disconnect");
  socket.emit("obs_logon", "{not json");
  const ack = JSON.parse(await ackP);
  assert.equal(ack.value, false);
  assert.match(ack.reason, /not a JSON object/);
  assert.equal(await discP, "io server disconnect");
  socket.close();
});

test("duplicate group code is rejected while the match is live", async () => {
  const group = code("DUP");
  const first = await observer(server, { groupCode: group });
  assert.equal(first.ack.value, true);
  const second = await observer(server, { groupCode: group });
  assert.deepEqual(second.ack, {
    type: "authenticate",
    value: false,
    reason: `Game with Group Code ${group} exists and is still live.`,
  });
  const wrongSecret = await observer(server, { groupCode: group, groupSecret: "NOTTHESECRET" });
  assert.equal(wrongSecret.ack.value, false);
  first.socket.close();
  second.socket.close();
  wrongSecret.socket.close();
});

test("reconnect with the group secret keeps the match", async () => {
  const group = code("REC");
  const first = await observer(server, { groupCode: group });
  const secret = first.ack.reason;
  sendEvent(first.socket, group, "map", "Ascent");
  first.socket.close();
  await sleep(100);
  const again = await observer(server, { groupCode: group, groupSecret: secret }, { transports: ["websocket"] });
  assert.deepEqual(again.ack, { type: "authenticate", value: true, reason: "reconnected" });
  // The reconnected observer may write into its match.
  sendEvent(again.socket, group, "game_mode", "swift");
  again.socket.close();
});

test("a second obs_logon on the same socket is ignored", async () => {
  const { socket, ack } = await observer(server, { groupCode: code("TW") });
  assert.equal(ack.value, true);
  let extra = 0;
  socket.on("obs_logon_ack", () => extra++);
  socket.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: code("TW") })));
  await sleep(300);
  assert.equal(extra, 0);
  assert.ok(socket.connected);
  socket.close();
});

test("aux logon: unknown match id fails with a reason the aux client shows", async () => {
  const socket = client(server.ingest);
  const ackP = once(socket, "aux_logon_ack");
  socket.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "P", matchId: "nope", playerId: "p1" }));
  assert.deepEqual(JSON.parse(await ackP), {
    type: "aux_authenticate", value: false, reason: "Game with Match ID nope not found.",
  });
  socket.close();
});

test("aux logon: empty match id does not attach to an unstarted match", async () => {
  const obs = await observer(server, { groupCode: code("AXE") });
  const socket = client(server.ingest);
  const ackP = once(socket, "aux_logon_ack");
  socket.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "P", matchId: "", playerId: "p1" }));
  assert.equal(JSON.parse(await ackP).value, false);
  socket.close();
  obs.socket.close();
});

test("aux logon succeeds for a started match on any shard", async () => {
  // Several matches so that their owners cover both shards.
  const observers = [];
  for (let i = 0; i < 6; i++) {
    const group = code("AUX");
    const o = await observer(server, { groupCode: group });
    sendEvent(o.socket, group, "match_start", `match-id-${group}`);
    observers.push({ ...o, group });
  }
  await sleep(200);
  for (const o of observers) {
    const socket = client(server.ingest, { transports: ["websocket"] });
    const ackP = once(socket, "aux_logon_ack");
    socket.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "P", matchId: `match-id-${o.group}`, playerId: "p1" }));
    assert.deepEqual(JSON.parse(await ackP), { type: "aux_authenticate", value: true });
    socket.close();
    o.socket.close();
  }
});

test("bad packets on the wire never crash the server", async () => {
  const { default: WebSocket } = await import("ws");
  const url = server.ingest.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
  const ws = new WebSocket(url);
  const openPacket = once(ws, "message");
  await once(ws, "open");
  assert.match(String(await openPacket), /^0\{"sid":/);
  for (const p of ["40", "421[\"obs_logon\",\"{}\"]", "451-[\"obs_data\",{\"_placeholder\":true,\"num\":0}]", "4x", "49", "42[1,2", "40/admin,"]) {
    ws.send(p);
  }
  ws.send(Buffer.from([1, 2, 3]));
  ws.send("zzz");
  await sleep(200);
  ws.close();
  const status = await fetch(`${server.rest}/status`).then((r) => r.json());
  assert.equal(status.status, "UP");
  const { socket, ack } = await observer(server, { groupCode: code("ALIVE") });
  assert.equal(ack.value, true);
  socket.close();
});

test("/status counts live matches", async () => {
  const before = (await fetch(`${server.rest}/status`).then((r) => r.json())).matchesRunning;
  const { socket } = await observer(server, { groupCode: code("ST") });
  await waitFor(async () => (await fetch(`${server.rest}/status`).then((r) => r.json())).matchesRunning === before + 1, 3000, "matchesRunning + 1");
  socket.close();
});
