// Protocol conformance of the transport layers, through the conformance example
// (crates/transport/examples/conformance.rs: the transport crate alone — the very HTTP, WebSocket,
// Engine.IO and Socket.IO code that serves Spectra's ports).
// These are the project's own tests of every behaviour the official engine.io-protocol (24
// cases) and socket.io-protocol (32 cases) test suites check; scripts/conformance runs the
// official suites themselves when they are present beside the repository.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import WebSocket from "ws";
import { repoRoot } from "./lib/server.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
const binary = process.env.CONFORMANCE_BIN || path.join(repoRoot, "target", "debug", "examples", "conformance");
let child;
let base;

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts the conformance example with `args`; resolves with the process and its address. */
async function spawnExample(args = []) {
  const port = await freePort();
  const shards = args.includes("--shards") ? [] : ["--shards", "1"];
  const proc = spawn(binary, ["--port", String(port), ...shards, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  proc.stderr.resume();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("conformance server did not start")), 10000);
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      if (out.includes("ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on("exit", (code) => reject(new Error(`conformance server exited ${code}`)));
  });
  return { proc, address: `127.0.0.1:${port}` };
}

before(async () => {
  const started = await spawnExample();
  child = started.proc;
  base = started.address;
});

after(() => {
  if (child && child.exitCode === null) child.kill("SIGTERM");
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function request(prefix, query, init) {
  return fetch(`http://${base}${prefix}?${query}`, init);
}

async function openPolling(prefix) {
  const res = await request(prefix, "EIO=4&transport=polling");
  const text = await res.text();
  return JSON.parse(text.slice(1)).sid;
}

// A WebSocket whose messages queue up, so that none is missed when several arrive together.
function socket(prefix, query = "EIO=4&transport=websocket", host = base) {
  const ws = new WebSocket(`ws://${host}${prefix}?${query}`);
  ws.binaryType = "nodebuffer";
  const queue = [];
  const waiters = [];
  ws.on("message", (data, isBinary) => {
    const item = isBinary ? Buffer.from(data) : data.toString();
    const w = waiters.shift();
    if (w) w(item);
    else queue.push(item);
  });
  ws.on("error", () => {});
  ws.closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  ws.opened = new Promise((resolve, reject) => {
    ws.on("open", resolve);
    ws.on("close", () => reject(new Error("closed before open")));
  });
  ws.opened.catch(() => {});
  ws.next = (ms = 2000) =>
    queue.length
      ? Promise.resolve(queue.shift())
      : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no message in time")), ms);
          waiters.push((m) => {
            clearTimeout(timer);
            resolve(m);
          });
        });
  // The next message that is not a ping (answered, like a client).
  ws.nextNonPing = async () => {
    for (;;) {
      const m = await ws.next();
      if (m === "2") ws.send("3");
      else return m;
    }
  };
  return ws;
}

function checkOpen(text, upgrades) {
  assert.equal(text[0], "0");
  const open = JSON.parse(text.slice(1));
  assert.deepEqual(Object.keys(open).sort(), ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"]);
  assert.equal(typeof open.sid, "string");
  assert.deepEqual(open.upgrades, upgrades);
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  assert.equal(open.maxPayload, 1000000);
}

// Engine.IO behaviour shared by both paths.
for (const prefix of ["/engine.io/", "/socket.io/"]) {
  const t = (name, fn) => test(`${prefix} ${name}`, fn);

  t("polling handshake opens a session", async () => {
    const res = await request(prefix, "EIO=4&transport=polling");
    assert.equal(res.status, 200);
    checkOpen(await res.text(), ["websocket"]);
  });

  t("bad EIO, bad transport and bad handshake methods get 400", async () => {
    for (const q of ["transport=polling", "EIO=abc&transport=polling", "EIO=4", "EIO=4&transport=abc"]) {
      assert.equal((await request(prefix, q)).status, 400, q);
    }
    for (const method of ["POST", "PUT"]) {
      assert.equal((await request(prefix, "EIO=4&transport=polling", { method, body: "" })).status, 400, method);
    }
  });

  t("WebSocket handshake opens a session; bad queries are refused", async () => {
    const ws = socket(prefix);
    checkOpen(await ws.next(), []);
    ws.close();
    for (const q of ["transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc"]) {
      const bad = socket(prefix, q);
      await assert.rejects(bad.opened, q);
    }
  });

  t("polling heartbeat: three ping/pong rounds", async () => {
    const sid = await openPolling(prefix);
    for (let i = 0; i < 3; i++) {
      const poll = await request(prefix, `EIO=4&transport=polling&sid=${sid}`);
      assert.equal(poll.status, 200);
      assert.equal(await poll.text(), "2");
      const push = await request(prefix, `EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "3" });
      assert.equal(push.status, 200);
    }
  });

  t("polling session without pong times out", async () => {
    const sid = await openPolling(prefix);
    await sleep(PING_INTERVAL + PING_TIMEOUT + 20);
    assert.equal((await request(prefix, `EIO=4&transport=polling&sid=${sid}`)).status, 400);
  });

  t("WebSocket heartbeat: three rounds, then silence closes", async () => {
    const ws = socket(prefix);
    await ws.next();
    for (let i = 0; i < 3; i++) {
      assert.equal(await ws.next(), "2");
      ws.send("3");
    }
    ws.close();
    const idle = socket(prefix);
    await idle.next();
    const started = Date.now();
    await idle.closed;
    assert.ok(Date.now() - started < 1500);
  });

  t("client close: a pending poll ends with noop, then the session is gone", async () => {
    const sid = await openPolling(prefix);
    const poll = request(prefix, `EIO=4&transport=polling&sid=${sid}`);
    await sleep(20);
    await request(prefix, `EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "1" });
    const res = await poll;
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "6");
    assert.equal((await request(prefix, `EIO=4&transport=polling&sid=${sid}`)).status, 400);
    const ws = socket(prefix);
    await ws.next();
    ws.send("1");
    await ws.closed;
  });

  t("upgrade: probe, noop for the poll, then the WebSocket carries the session", async () => {
    const sid = await openPolling(prefix);
    const ws = socket(prefix, `EIO=4&transport=websocket&sid=${sid}`);
    await ws.opened;
    ws.send("2probe");
    assert.equal(await ws.next(), "3probe");
    const poll = await request(prefix, `EIO=4&transport=polling&sid=${sid}`);
    assert.equal(poll.status, 200);
    assert.equal(await poll.text(), "6");
    ws.send("5");
    await sleep(30);
    // After the upgrade, polls and a second WebSocket with the same sid are refused.
    assert.equal((await request(prefix, `EIO=4&transport=polling&sid=${sid}`)).status, 400);
    const second = socket(prefix, `EIO=4&transport=websocket&sid=${sid}`);
    await second.closed;
    // The upgraded session still answers pings.
    assert.equal(await ws.next(), "2");
    ws.send("3");
    ws.close();
  });

  t("2probe and 5 sent back to back complete the upgrade; later polls are refused", async () => {
    const sid = await openPolling(prefix);
    const ws = socket(prefix, `EIO=4&transport=websocket&sid=${sid}`);
    await ws.opened;
    ws.send("2probe");
    ws.send("5");
    assert.equal(await ws.next(), "3probe");
    await sleep(50);
    const poll = await request(prefix, `EIO=4&transport=polling&sid=${sid}`);
    assert.equal(poll.status, 400);
    ws.close();
  });
}

// Engine.IO messages (the example echoes every message on /engine.io/).
const E = "/engine.io/";

test("engine.io: polling payloads of text and binary packets are echoed", async () => {
  for (const body of ["4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA=="]) {
    const sid = await openPolling(E);
    const push = await request(E, `EIO=4&transport=polling&sid=${sid}`, { method: "POST", body });
    assert.equal(push.status, 200);
    assert.equal(await push.text(), "ok");
    const poll = await request(E, `EIO=4&transport=polling&sid=${sid}`);
    assert.equal(await poll.text(), body);
  }
});

test("engine.io: an invalid polling packet closes the session", async () => {
  const sid = await openPolling(E);
  const push = await request(E, `EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "abc" });
  assert.equal(push.status, 400);
  assert.equal((await request(E, `EIO=4&transport=polling&sid=${sid}`)).status, 400);
});

test("engine.io: overlapping polls close the session", async () => {
  const sid = await openPolling(E);
  const first = request(E, `EIO=4&transport=polling&sid=${sid}`);
  await sleep(20);
  const second = await request(E, `EIO=4&transport=polling&sid=${sid}&t=burst`);
  const res = await first;
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "1");
  assert.ok([400, 500].includes(second.status));
  assert.equal((await request(E, `EIO=4&transport=polling&sid=${sid}`)).status, 400);
});

test("engine.io: WebSocket text and binary messages are echoed; garbage closes", async () => {
  const ws = socket(E);
  await ws.next();
  ws.send("4hello");
  assert.equal(await ws.next(), "4hello");
  ws.send(Buffer.from([1, 2, 3, 4]));
  assert.deepEqual(await ws.next(), Buffer.from([1, 2, 3, 4]));
  ws.send("abc");
  await ws.closed;
});

test("engine.io: after an upgrade, messages flow on the WebSocket", async () => {
  const sid = await openPolling(E);
  const ws = socket(E, `EIO=4&transport=websocket&sid=${sid}`);
  await ws.opened;
  ws.send("2probe");
  assert.equal(await ws.next(), "3probe");
  ws.send("5");
  ws.send("4hello");
  assert.equal(await ws.nextNonPing(), "4hello");
  ws.close();
});

// Socket.IO.
const S = "/socket.io/";

async function sioConnect(connect = "40") {
  const ws = socket(S);
  await ws.next();
  ws.send(connect);
  return ws;
}

test("socket.io: connect to / and /custom, with and without a payload", async () => {
  for (const [packet, prefix, auth] of [
    ["40", "40", {}],
    ['40{"token":"123"}', "40", { token: "123" }],
    ["40/custom,", "40/custom,", {}],
    ['40/custom,{"token":"abc"}', "40/custom,", { token: "abc" }],
  ]) {
    const ws = await sioConnect(packet);
    const ack = await ws.next();
    assert.ok(ack.startsWith(prefix), ack);
    const hs = JSON.parse(ack.slice(prefix.length));
    assert.deepEqual(Object.keys(hs), ["sid"]);
    assert.equal(typeof hs.sid, "string");
    const nsp = prefix === "40" ? "" : "/custom,";
    assert.equal(await ws.next(), `42${nsp}${JSON.stringify(["auth", auth])}`);
    ws.close();
  }
});

test("socket.io: unknown namespace gets CONNECT_ERROR; bad handshake and no handshake close", async () => {
  const ws = await sioConnect("40/random");
  assert.equal(await ws.next(), '44/random,{"message":"Invalid namespace"}');
  ws.close();
  const bad = await sioConnect("4abc");
  await bad.closed;
  const silent = socket(S);
  await silent.next();
  await silent.closed;
});

async function sioReady() {
  const ws = await sioConnect("40");
  await ws.next(); // CONNECT ack
  await ws.next(); // auth
  return ws;
}

test("socket.io: leaving / is silent; leaving /custom keeps / working", async () => {
  const ws = await sioReady();
  ws.send("41");
  assert.equal(await ws.next(), "2");
  ws.close();
  const ws2 = await sioReady();
  ws2.send("40/custom");
  assert.ok((await ws2.nextNonPing()).startsWith("40/custom,"));
  assert.equal(await ws2.nextNonPing(), '42/custom,["auth",{}]');
  ws2.send("41/custom");
  ws2.send('42["message","message to main namespace"]');
  assert.equal(await ws2.nextNonPing(), '42["message-back","message to main namespace"]');
  ws2.close();
});

test("socket.io: events, acks and binary attachments are echoed", async () => {
  const ws = await sioReady();
  ws.send('42["message",1,"2",{"3":[true]}]');
  assert.equal(await ws.nextNonPing(), '42["message-back",1,"2",{"3":[true]}]');
  ws.send('42456["message-with-ack",1,"2",{"3":[false]}]');
  assert.equal(await ws.nextNonPing(), '43456[1,"2",{"3":[false]}]');
  const placeholders = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}';
  ws.send(`452-["message",${placeholders}]`);
  ws.send(Buffer.from([1, 2, 3]));
  ws.send(Buffer.from([4, 5, 6]));
  assert.equal(await ws.nextNonPing(), `452-["message-back",${placeholders}]`);
  assert.deepEqual(await ws.nextNonPing(), Buffer.from([1, 2, 3]));
  assert.deepEqual(await ws.nextNonPing(), Buffer.from([4, 5, 6]));
  ws.send(`452-789["message-with-ack",${placeholders}]`);
  ws.send(Buffer.from([1, 2, 3]));
  ws.send(Buffer.from([4, 5, 6]));
  assert.equal(await ws.nextNonPing(), `462-789[${placeholders}]`);
  assert.deepEqual(await ws.nextNonPing(), Buffer.from([1, 2, 3]));
  assert.deepEqual(await ws.nextNonPing(), Buffer.from([4, 5, 6]));
  ws.close();
});

test("socket.io: invalid packets close the connection", async () => {
  for (const bad of ["4abc", "42{}", '42abc["message-with-ack",1,"2",{"3":[false]}]']) {
    const ws = await sioReady();
    ws.send(bad);
    await ws.closed;
  }
});

test("socket.io connection state recovery (--recovery-ms): pid in the ack, {pid, offset} restores the socket on any shard, not after a client disconnect or the window", async () => {
  // Shards above the suites' one: the reconnects land on either, the socket is held where its
  // pid says.
  const ex = await spawnExample(["--recovery-ms", "600", "--shards", "2"]);
  const connect = async (packet) => {
    const ws = socket(S, "EIO=4&transport=websocket", ex.address);
    await ws.next();
    ws.send(packet);
    return ws;
  };
  try {
    const first = await connect("40");
    const hs = JSON.parse((await first.nextNonPing()).slice(2));
    assert.deepEqual(Object.keys(hs).sort(), ["pid", "sid"]);
    assert.equal(await first.nextNonPing(), `42${JSON.stringify(["auth", {}])}`, "on_connect");
    first.terminate();
    for (let i = 0; i < 6; i++) {
      await sleep(60);
      const again = await connect(`40${JSON.stringify({ pid: hs.pid, offset: `o${i}` })}`);
      assert.deepEqual(JSON.parse((await again.nextNonPing()).slice(2)), hs, "same sid and pid");
      // The application hears of the recovery (with the client's offset), not of a new socket.
      assert.equal(await again.nextNonPing(), `42${JSON.stringify(["recovered", `o${i}`])}`);
      again.terminate();
    }
    // A disconnect the client asked for ends the socket for good.
    await sleep(60);
    const leaving = await connect(`40${JSON.stringify({ pid: hs.pid })}`);
    assert.equal(JSON.parse((await leaving.nextNonPing()).slice(2)).sid, hs.sid);
    await leaving.nextNonPing();
    leaving.send("41");
    leaving.close();
    await sleep(60);
    const fresh = await connect(`40${JSON.stringify({ pid: hs.pid })}`);
    const other = JSON.parse((await fresh.nextNonPing()).slice(2));
    assert.notEqual(other.sid, hs.sid);
    assert.notEqual(other.pid, hs.pid);
    assert.equal(await fresh.nextNonPing(), `42${JSON.stringify(["auth", { pid: hs.pid }])}`);
    // After the window, a held socket is gone.
    fresh.terminate();
    await sleep(900);
    const late = await connect(`40${JSON.stringify({ pid: other.pid, offset: "x" })}`);
    assert.notEqual(JSON.parse((await late.nextNonPing()).slice(2)).sid, other.sid);
    late.close();
  } finally {
    ex.proc.kill("SIGTERM");
  }
});
