// Heartbeats, timeouts and start-up configuration (.env, generated access key).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { startServer, observer, client, once, sleep } from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({
    shards: 2,
    args: ["--ping-interval-ms", "200", "--ping-timeout-ms", "200", "--connect-timeout-ms", "600"],
  });
});
after(async () => {
  await server.stop();
});

for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
  test(`a live client answers pings and stays connected (${transports.join(" → ")})`, async () => {
    const socket = client(server.broadcast, { transports });
    await once(socket, "connect");
    let disconnected = false;
    socket.on("disconnect", () => (disconnected = true));
    await sleep(1500); // about 7 ping rounds
    assert.equal(disconnected, false);
    assert.ok(socket.connected);
    socket.close();
  });
}

function rawSocket(port) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  ws.received = [];
  ws.on("message", (d) => ws.received.push(String(d)));
  ws.closed = new Promise((r) => ws.on("close", () => r(Date.now())));
  return ws;
}

test("a client that does not answer pings is closed after interval + timeout", async () => {
  const ws = rawSocket(server.ports.broadcast);
  await once(ws, "open");
  ws.send("40");
  const start = Date.now();
  const closedAt = await Promise.race([ws.closed, sleep(3000).then(() => 0)]);
  assert.ok(closedAt > 0, "closed");
  assert.ok(closedAt - start >= 300, `not before interval + timeout (${closedAt - start} ms)`);
  assert.ok(ws.received.includes("2"), "a ping was sent");
});

test("a connection that never joins a namespace is closed after the connect timeout", async () => {
  const ws = rawSocket(server.ports.ingest);
  await once(ws, "open");
  const pong = setInterval(() => ws.readyState === 1 && ws.send("3"), 100);
  const start = Date.now();
  const closedAt = await Promise.race([ws.closed, sleep(3000).then(() => 0)]);
  clearInterval(pong);
  assert.ok(closedAt > 0, "closed");
  assert.ok(closedAt - start >= 500, `after the connect timeout (${closedAt - start} ms)`);
});

test("a polling session that stops polling expires", async () => {
  const base = `${server.broadcast}/socket.io/?EIO=4&transport=polling`;
  const sid = JSON.parse((await (await fetch(base)).text()).slice(1)).sid;
  await fetch(`${base}&sid=${sid}`, { method: "POST", body: "40" });
  await sleep(1000);
  const r = await fetch(`${base}&sid=${sid}`);
  assert.equal(r.status, 400);
  assert.deepEqual(await r.json(), { code: 1, message: "Session ID unknown" });
});

test("the client's close packet ends the session", async () => {
  const ws = rawSocket(server.ports.broadcast);
  await once(ws, "open");
  ws.send("40");
  await sleep(50);
  ws.send("1");
  const closedAt = await Promise.race([ws.closed, sleep(2000).then(() => 0)]);
  assert.ok(closedAt > 0);
});

test("without AUTH_KEY a key is generated, printed, and required", async () => {
  const s = await startServer({ shards: 1, key: null });
  try {
    const key = s.stdout().match(/generated access key for this run: (\S+)/)?.[1];
    assert.ok(key && key.length >= 16, s.stdout());
    const ok = await observer({ ...s, key }, { groupCode: "GEN" });
    assert.equal(ok.ack.value, true);
    ok.socket.close();
    const bad = await observer({ ...s, key: "" }, { groupCode: "GEN2" });
    assert.deepEqual(bad.ack, { type: "authenticate", value: false, reason: "Invalid Key" });
    bad.socket.close();
  } finally {
    await s.stop();
  }
});

test("settings are read from .env in the working directory; the environment wins", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-env-"));
  fs.writeFileSync(path.join(dir, ".env"), "AUTH_KEY=from-dotenv\nREQUIRE_AUTH_KEY=true\nINSECURE=false\n");
  const s = await startServer({ shards: 1, key: null, cwd: dir });
  try {
    const ok = await observer({ ...s, key: "from-dotenv" }, { groupCode: "ENV" });
    assert.equal(ok.ack.value, true); // INSECURE=true from the environment beat .env's false
    ok.socket.close();
  } finally {
    await s.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("REQUIRE_AUTH_KEY=false accepts any key", async () => {
  const s = await startServer({ shards: 1, env: { REQUIRE_AUTH_KEY: "false" } });
  try {
    const ok = await observer({ ...s, key: "anything" }, { groupCode: "OPEN" });
    assert.equal(ok.ack.value, true);
    ok.socket.close();
  } finally {
    await s.stop();
  }
});

test("a second server on the same ports refuses to start", async () => {
  const { spawnSync } = await import("node:child_process");
  const { binary } = await import("./lib/server.mjs");
  const r = spawnSync(binary, [
    "--bind", "127.0.0.1", "--ingest-port", String(server.ports.ingest),
    "--rest-port", String(server.ports.rest), "--broadcast-port", String(server.ports.broadcast),
  ], { env: { PATH: process.env.PATH, INSECURE: "true", AUTH_KEY: "x" }, timeout: 10000 });
  assert.equal(r.status, 1);
  assert.match(String(r.stderr), /cannot listen on 127\.0\.0\.1:\d+ \(ingest port\)/);
});

test("two services named on one port refuse to start (the kernel would split their connections)", async () => {
  const { spawnSync } = await import("node:child_process");
  const { binary } = await import("./lib/server.mjs");
  // The port is not listened on: the refusal comes from the settings, before any bind.
  const port = String(server.ports.ingest + 7);
  const r = spawnSync(binary, [
    "--bind", "127.0.0.1", "--ingest-port", "0", "--rest-port", port, "--broadcast-port", port,
  ], { env: { PATH: process.env.PATH, INSECURE: "true", AUTH_KEY: "x" }, timeout: 10000 });
  assert.equal(r.status, 1);
  assert.match(String(r.stderr), new RegExp(`the rest port and the broadcast port are both ${port}: .*--port`));
});
