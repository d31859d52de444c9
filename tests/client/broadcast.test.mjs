// Overlays on the broadcast port: logon, snapshots to the newcomer only, ticks, game end, and
// matches whose observer and overlays sit on different shards.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  startServer, observer, overlay, client, once, sendEvent, sleep, waitFor, uniqueCode,
} from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

const code = uniqueCode;

test("overlay logon gets logon_success, then match_data once the match exists", async () => {
  const group = code("BC");
  const o = await overlay(server, group);
  assert.deepEqual(o.ok, { groupCode: group, msg: `Logon succeeded for group code ${group}` });
  const obs = await observer(server, { groupCode: group });
  await waitFor(() => o.received.length >= 1, 3000, "first match_data");
  const snap = o.received.at(-1);
  assert.equal(snap.groupCode, group);
  assert.equal(snap.roundPhase, "LOBBY");
  assert.equal(snap.teams[0].teamName, "Left Team");
  assert.equal(snap.groupSecret, undefined);
  sendEvent(obs.socket, group, "map", "Ascent");
  sendEvent(obs.socket, group, "game_mode", "bomb#kit:1:123");
  await waitFor(() => o.received.at(-1)?.matchType === "bomb#kit:1:123", 3000, "game_mode echoed");
  assert.equal(o.received.at(-1).map, "Ascent");
  obs.socket.close();
  o.socket.close();
});

test("a second overlay's logon sends the snapshot to it alone", async () => {
  const group = code("NEW");
  const obs = await observer(server, { groupCode: group });
  const first = await overlay(server, group);
  await waitFor(() => first.received.length >= 1, 3000, "snapshot for the first overlay");
  await sleep(300); // let any tick settle
  const before = first.received.length;
  const second = await overlay(server, group);
  await waitFor(() => second.received.length >= 1, 3000, "snapshot for the second overlay");
  await sleep(300);
  assert.equal(first.received.length, before, "the first overlay got nothing new");
  assert.equal(second.received.length, 1);
  obs.socket.close();
  first.socket.close();
  second.socket.close();
});

test("changes within one tick are coalesced into one complete snapshot", async () => {
  const group = code("TICK");
  const obs = await observer(server, { groupCode: group });
  const o = await overlay(server, group);
  await waitFor(() => o.received.length >= 1, 3000, "initial snapshot");
  await sleep(250);
  const start = o.received.length;
  for (let i = 1; i <= 50; i++) sendEvent(obs.socket, group, "round_info", { roundNumber: i, roundPhase: "shopping" });
  await waitFor(() => o.received.at(-1)?.roundNumber === 50, 3000, "round 50");
  const got = o.received.length - start;
  assert.ok(got >= 1 && got < 50, `coalesced: ${got} snapshots for 50 events`);
  obs.socket.close();
  o.socket.close();
});

test("game end: the final state is broadcast, the observer is disconnected, the match removed", async () => {
  const group = code("END");
  const obs = await observer(server, { groupCode: group });
  const o = await overlay(server, group);
  await waitFor(() => o.received.length >= 1, 3000, "initial snapshot");
  const disc = once(obs.socket, "disconnect");
  sendEvent(obs.socket, group, "round_info", { roundNumber: 24, roundPhase: "game_end" });
  assert.equal(await disc, "io server disconnect");
  await waitFor(() => o.received.at(-1)?.roundPhase === "game_end", 3000, "final snapshot");
  assert.equal(o.received.at(-1).isRunning, false);
  // The group code is free again.
  const again = await observer(server, { groupCode: group });
  assert.equal(again.ack.value, true);
  again.socket.close();
  obs.socket.close();
  o.socket.close();
});

test("events for another group are not applied to it", async () => {
  const a = code("GA");
  const b = code("GB");
  const obsA = await observer(server, { groupCode: a });
  const obsB = await observer(server, { groupCode: b });
  const o = await overlay(server, b);
  await waitFor(() => o.received.length >= 1, 3000, "snapshot of B");
  sendEvent(obsA.socket, b, "map", "Canyon");
  sendEvent(obsB.socket, b, "map", "Jam");
  await waitFor(() => o.received.at(-1)?.map === "Lotus", 3000, "B's own event");
  assert.ok(o.received.every((s) => s.map !== "Fracture"));
  obsA.socket.close();
  obsB.socket.close();
  o.socket.close();
});

test("two shards: overlays on both shards and polling-only overlays all receive every change", async () => {
  const group = code("X");
  const overlays = [];
  const shardsSeen = new Set();
  // Connect until overlays sit on both shards (the engine session id starts with its shard).
  for (let i = 0; i < 40 && (overlays.length < 6 || shardsSeen.size < 2); i++) {
    const o = await overlay(server, group, i % 3 === 0 ? { transports: ["polling"] } : {});
    shardsSeen.add(o.socket.io.engine.id.slice(0, 2));
    overlays.push(o);
  }
  assert.equal(shardsSeen.size, 2, "overlays landed on both shards");
  const observers = [];
  for (let i = 0; i < 2; i++) observers.push(await observer(server, { groupCode: `${group}${i}` }));
  const obs = await observer(server, { groupCode: group });
  for (let r = 1; r <= 5; r++) {
    sendEvent(obs.socket, group, "round_info", { roundNumber: r, roundPhase: "combat" });
    await waitFor(() => overlays.every((o) => o.received.at(-1)?.roundNumber === r), 3000, `round ${r} everywhere`);
  }
  for (const o of overlays) o.socket.close();
  for (const x of [...observers, obs]) x.socket.close();
});

test("WebSocket permessage-deflate is negotiated without server context takeover", async () => {
  const group = code("DEF");
  const obs = await observer(server, { groupCode: group });
  const url = server.broadcast.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
  const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
  const messages = [];
  ws.on("message", (d) => messages.push(String(d)));
  const upgrade = once(ws, "upgrade");
  await once(ws, "open");
  const res = await upgrade;
  assert.match(res.headers["sec-websocket-extensions"], /permessage-deflate; server_no_context_takeover/);
  ws.send("40");
  await waitFor(() => messages.some((m) => m.startsWith("40{")), 3000, "connect ack");
  ws.send('42["logon","{\\"groupCode\\":\\"' + group + '\\"}"]');
  await waitFor(() => messages.some((m) => m.startsWith('42["match_data"')), 3000, "match_data over deflate");
  const snap = JSON.parse(JSON.parse(messages.find((m) => m.startsWith('42["match_data"')).slice(2))[1]);
  assert.equal(snap.groupCode, group);
  ws.close();
  obs.socket.close();
});

test("Engine.IO HTTP errors and CORS", async () => {
  const base = `${server.broadcast}/socket.io/`;
  let r = await fetch(`${base}?EIO=3&transport=polling`);
  assert.equal(r.status, 400);
  assert.deepEqual(await r.json(), { code: 5, message: "Unsupported protocol version" });
  r = await fetch(`${base}?EIO=4&transport=carrier-pigeon`);
  assert.deepEqual([r.status, await r.json()], [400, { code: 0, message: "Transport unknown" }]);
  r = await fetch(`${base}?EIO=4&transport=polling&sid=00doesnotexist`);
  assert.deepEqual([r.status, await r.json()], [400, { code: 1, message: "Session ID unknown" }]);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  r = await fetch(`${base}?EIO=4&transport=polling`, { method: "OPTIONS", headers: { "Access-Control-Request-Headers": "content-type" } });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get("access-control-allow-methods"), "GET,HEAD,PUT,PATCH,POST,DELETE");
  assert.equal(r.headers.get("access-control-allow-headers"), "content-type");
  r = await fetch(`${base}?EIO=4&transport=polling`);
  const open = await r.text();
  assert.match(open, /^0\{"sid":"[0-9a-f]{2}[A-Za-z0-9_-]{18}","upgrades":\["websocket"\],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000\}$/);
  const sid = JSON.parse(open.slice(1)).sid;
  r = await fetch(`${base}?EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "40/other," });
  assert.equal(await r.text(), "ok");
  r = await fetch(`${base}?EIO=4&transport=polling&sid=${sid}`);
  assert.equal(await r.text(), '44/other,{"message":"Invalid namespace"}');
  r = await fetch(`${server.broadcast}/`);
  assert.equal(r.status, 404);
  r = await fetch(`${server.rest}/status`);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.equal(r.headers.get("content-type"), "application/json; charset=utf-8");
});

test("a client's messages over maxPayload close its connection only", async () => {
  const url = server.ingest.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
  const ws = new WebSocket(url);
  await once(ws, "open");
  const closed = new Promise((r) => ws.on("close", (code) => r(code)));
  ws.send("4" + "x".repeat(1_000_001));
  assert.equal(await closed, 1009);
  const status = await fetch(`${server.rest}/status`);
  assert.equal(status.status, 200);
});

test("overlays that log on over long-polling and then upgrade (onto either shard) get every later change", async () => {
  const group = code("UPG");
  const obs = await observer(server, { groupCode: group });
  const base = `${server.broadcast}/socket.io/?EIO=4&transport=polling`;
  const overlays = [];
  // 8 overlays: each WebSocket lands on a shard of the kernel's choosing (SO_REUSEPORT), so
  // some of them move their logged-on session to the other shard (all stay: 1 in 256).
  for (let i = 0; i < 8; i++) {
    const sid = JSON.parse((await (await fetch(base)).text()).slice(1)).sid;
    const post = (body) => fetch(`${base}&sid=${sid}`, { method: "POST", body }).then((r) => r.text());
    const poll = () => fetch(`${base}&sid=${sid}`).then((r) => r.text());
    assert.equal(await post("40"), "ok");
    assert.match(await poll(), /^40\{"sid":/);
    assert.equal(await post(`42${JSON.stringify(["logon", JSON.stringify({ groupCode: group })])}`), "ok");
    let polled = "";
    while (!polled.includes("logon_success")) polled += await poll();
    const ws = new WebSocket(`${server.broadcast.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket&sid=${sid}`);
    const states = [];
    ws.on("message", (d) => {
      const m = String(d);
      if (m === "3probe") ws.send("5");
      else if (m === "2") ws.send("3");
      else if (m.startsWith('42["match_data"')) states.push(JSON.parse(JSON.parse(m.slice(2))[1]));
    });
    await once(ws, "open");
    ws.send("2probe");
    overlays.push({ ws, states });
  }
  // The upgrades are done once a state sent now reaches every WebSocket.
  for (let r = 1; r <= 3; r++) {
    sendEvent(obs.socket, group, "round_info", { roundNumber: r, roundPhase: "combat" });
    await waitFor(() => overlays.every((o) => o.states.at(-1)?.roundNumber === r), 3000, `round ${r} on every upgraded overlay`);
  }
  for (const o of overlays) o.ws.close();
  obs.socket.close();
});

test("a long-polling overlay that does not poll for a while gets only the newest state, after what else was queued", async () => {
  const group = code("LATEST");
  const obs = await observer(server, { groupCode: group });
  const base = `${server.broadcast}/socket.io/?EIO=4&transport=polling`;
  const open = await (await fetch(base)).text();
  const sid = JSON.parse(open.slice(1)).sid;
  const post = (body) => fetch(`${base}&sid=${sid}`, { method: "POST", body }).then((r) => r.text());
  const poll = () => fetch(`${base}&sid=${sid}`).then((r) => r.text());
  assert.equal(await post("40"), "ok");
  assert.match(await poll(), /^40\{"sid":/);
  assert.equal(await post(`42${JSON.stringify(["logon", JSON.stringify({ groupCode: group })])}`), "ok");
  // Not polling now: five states go out (each one broadcast interval apart).
  const modes = ["swift", "bomb", "deathmatch", "escalation", "spikerush"];
  for (const mode of modes) {
    sendEvent(obs.socket, group, "game_mode", mode);
    await sleep(250);
  }
  const packets = (await poll()).split("\x1e");
  const states = packets.filter((p) => p.startsWith('42["match_data"'));
  assert.ok(packets[0].startsWith('42["logon_success"'), `queued first: ${packets[0].slice(0, 40)}`);
  assert.equal(states.length, 1, `one state waiting, not ${states.length}`);
  assert.equal(JSON.parse(JSON.parse(states[0].slice(2))[1]).matchType, "spikerush", "the newest");
  obs.socket.close();
});
