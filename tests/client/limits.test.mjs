// Hardening limits over real sockets: connections in all and per address, long-polling sessions,
// failed logons per address and key (access key and group secret guessing, also through createPreview),
// request head and body sizes, WebSocket message size. Each limit is set small for its server.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import WebSocket from "ws";
import { startServer, observer, client, once, waitFor, uniqueCode, sleep, raw, metric } from "./lib/server.mjs";

/** Opens a keep-alive connection that the server has surely admitted (one request answered
 * 200) and keeps it open; retries briefly while a closing connection still holds its slot. */
async function hold(port) {
  for (let attempt = 0; attempt < 40; attempt++) {
    const s = await new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => s.write("GET /status HTTP/1.1\r\nHost: x\r\n\r\n"));
      s.once("data", (d) => resolve(String(d).startsWith("HTTP/1.1 200") ? s : (s.destroy(), null)));
      s.on("error", reject);
    });
    if (s) return s;
    await sleep(50);
  }
  throw new Error("no connection slot became free");
}

const STATUS = "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

test("connections per address: the next one gets 503 until one closes", async () => {
  const server = await startServer({ shards: 2, env: { MAX_CONNECTIONS_PER_IP: "4", LIMIT_LOOPBACK: "true" } });
  try {
    const held = await Promise.all([1, 2, 3, 4].map(() => hold(server.ports.rest)));
    const refused = await raw(server.ports.rest, STATUS);
    assert.match(refused, /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    assert.match(refused, /Too many connections from your address\./);
    held[0].destroy();
    await waitFor(async () => (await raw(server.ports.rest, STATUS)).startsWith("HTTP/1.1 200"), 5000, "a freed slot");
    for (const s of held) s.destroy();
    await sleep(100);
    assert.ok((await metric(server, "spectra_connections_refused_total")) >= 1);
  } finally {
    await server.stop();
  }
});

test("loopback is exempt from the per-address limit by default; the total limit holds for everyone", async () => {
  const server = await startServer({ shards: 2, env: { MAX_CONNECTIONS_PER_IP: "2", MAX_CONNECTIONS: "5" } });
  try {
    const held = await Promise.all([1, 2, 3, 4].map(() => hold(server.ports.rest)));
    const ok = await raw(server.ports.rest, STATUS);
    assert.match(ok, /^HTTP\/1\.1 200/, "5th connection: within the total, per-address limit not applied to loopback");
    held.push(await hold(server.ports.rest));
    const refused = await raw(server.ports.rest, STATUS);
    assert.match(refused, /^HTTP\/1\.1 503 /);
    assert.match(refused, /Server at its connection limit/);
    for (const s of held) s.destroy();
  } finally {
    await server.stop();
  }
});

test("long-polling sessions: beyond the limit the handshake gets 503; WebSocket clients still connect", async () => {
  const server = await startServer({ shards: 2, env: { MAX_POLLING_SESSIONS: "2" } });
  try {
    const handshake = () => fetch(`${server.broadcast}/socket.io/?EIO=4&transport=polling`);
    const first = await handshake();
    const second = await handshake();
    assert.deepEqual([first.status, second.status], [200, 200]);
    const third = await handshake();
    assert.equal(third.status, 503);
    assert.match((await third.json()).message, /Too many polling sessions/);
    const ws = client(server.broadcast, { transports: ["websocket"] });
    await once(ws, "connect");
    ws.close();
    // A polling client that upgrades gives its slot back.
    const upgrading = client(server.ingest);
    // (no free slot yet: the two sessions above are still open)
    const err = await once(upgrading, "connect_error");
    assert.ok(err);
    upgrading.close();
  } finally {
    await server.stop();
  }
});

test("a polling session that upgrades to WebSocket frees its polling slot", async () => {
  const server = await startServer({ shards: 2, env: { MAX_POLLING_SESSIONS: "1" } });
  try {
    const a = client(server.ingest);
    await once(a, "connect");
    await waitFor(() => a.io.engine.transport.name === "websocket", 5000, "the upgrade");
    // The client switches transports as it sends the upgrade packet; the server frees the slot
    // when it has handled it (on the session's home shard), a moment later. A handshake in
    // between gets 503, so the second client tries again until the slot is free.
    const b = client(server.ingest, { reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    await once(b, "connect");
    await waitFor(() => b.io.engine.transport.name === "websocket", 5000, "the second upgrade");
    a.close();
    b.close();
  } finally {
    await server.stop();
  }
});

test("failed logons per address and key: guesses lock out the guessed key, not the right one", async () => {
  const server = await startServer({ shards: 2, env: { LOGON_FAILURES_PER_MINUTE: "3", LIMIT_LOOPBACK: "true" } });
  try {
    const code = uniqueCode("LIM");
    const owner = await observer(server, { groupCode: code });
    assert.equal(owner.ack.value, true);
    // Three wrong logons with one wrong key: that key is refused from this address for the minute.
    for (let i = 0; i < 3; i++) {
      const o = await observer(server, { groupCode: uniqueCode("X"), key: "guess-1" });
      assert.deepEqual([o.ack.value, o.ack.reason], [false, "Invalid Key"]);
      o.socket.close();
    }
    const again = await observer(server, { groupCode: uniqueCode("X"), key: "guess-1" });
    assert.match(again.ack.reason, /^Too many failed logon attempts from your address; try again in \d+ s\.$/);
    again.socket.close();
    // The right key from the same address still logs on.
    const honest = await observer(server, { groupCode: uniqueCode("Y") });
    assert.equal(honest.ack.value, true);
    honest.socket.close();
    // Guessing the live match's secret with the right key: three failures lock that key out too.
    for (let i = 0; i < 3; i++) {
      const thief = await observer(server, { groupCode: code, groupSecret: `WRONGSECRET${i}` });
      assert.equal(thief.ack.value, false);
      thief.socket.close();
    }
    const locked = await observer(server, { groupCode: uniqueCode("Y") });
    assert.equal(locked.ack.value, false);
    assert.match(locked.ack.reason, /^Too many failed logon attempts from your address; try again in \d+ s\.$/);
    locked.socket.close();
    // createPreview's key check is throttled as well (same address and key).
    const preview = await fetch(`${server.rest}/createPreview`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: "test-key" }),
    });
    assert.equal(preview.status, 429);
    assert.match(preview.headers.get("retry-after"), /^\d+$/);
    assert.ok((await metric(server, "spectra_logons_throttled_total")) >= 3);
    // The live match was never touched: its observer is still connected.
    assert.equal(owner.socket.connected, true);
    owner.socket.close();
  } finally {
    await server.stop();
  }
});

test("request head over 16 KB gets 431, a polling body over maxPayload gets 413, a WebSocket message over it closes 1009", async () => {
  const server = await startServer({ shards: 2 });
  try {
    const head = await raw(server.ports.rest, `GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20000)}\r\n\r\n`);
    assert.match(head, /^HTTP\/1\.1 431 /);
    const hs = await (await fetch(`${server.ingest}/socket.io/?EIO=4&transport=polling`)).text();
    const sid = JSON.parse(hs.slice(1)).sid;
    const big = await fetch(`${server.ingest}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: "POST", body: "4" + "x".repeat(1_100_000),
    });
    assert.equal(big.status, 413);
    const ws = new WebSocket(`ws://127.0.0.1:${server.ports.ingest}/socket.io/?EIO=4&transport=websocket`);
    const closed = new Promise((r) => ws.on("close", (c) => r(c)));
    await once(ws, "open");
    ws.send("4" + "x".repeat(1_100_000));
    assert.equal(await closed, 1009);
  } finally {
    await server.stop();
  }
});
