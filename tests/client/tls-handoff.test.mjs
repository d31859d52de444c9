// After a TLS 1.3 handshake the server keeps only the connection's traffic keys (its records are
// sealed and opened by the server itself, rustls's connection dropped); TLS 1.2 connections stay
// with rustls. Node's own TLS client (OpenSSL) must not see a difference: records that span the
// server's reads, a request sent right behind the client's Finished, pipelined requests, the
// close_notify at the end — over both versions, with /metrics counting the hand-offs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import net from "node:net";
import { startServer, once, logonPayload, client, sendEvent, raw } from "./lib/server.mjs";

let server;
let dir;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-tls-handoff-"));
  server = await startServer({
    shards: 2,
    env: { INSECURE: "false", SERVER_KEY: path.join(dir, "k.pem"), SERVER_CERT: path.join(dir, "c.pem") },
  });
});
after(async () => {
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes `requests` on one TLS connection at once; resolves with what came back and how. */
function exchange(port, requests, options = {}) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false, ...options });
    const chunks = [];
    let protocol = null;
    let ended = false;
    socket.on("secureConnect", () => {
      protocol = socket.getProtocol();
      socket.write(Buffer.concat(requests.map((r) => Buffer.from(r))));
    });
    socket.on("data", (d) => chunks.push(d));
    socket.on("end", () => (ended = true));
    socket.on("error", reject);
    socket.on("close", () => resolve({ protocol, ended, text: Buffer.concat(chunks).toString("latin1") }));
  });
}

const get = (p, connection) => `GET ${p} HTTP/1.1\r\nHost: localhost\r\nConnection: ${connection}\r\n\r\n`;

/** The sum of a counter family's samples, read over TLS from /metrics (the read's own TLS 1.3
 * connection counts among the hand-offs). */
async function metric(family) {
  const { text } = await exchange(server.ports.rest, [get("/metrics", "close")]);
  let sum = 0;
  for (const line of text.split("\n")) if (line.startsWith(`${family}{`)) sum += Number(line.split(" ").pop());
  return sum;
}

const handoffs = () => metric("spectra_tls_handoffs_total");

for (const version of ["TLSv1.3", "TLSv1.2"]) {
  test(`${version}: a 60 KB body and pipelined requests on one connection, then close_notify`, async () => {
    const before = await handoffs();
    // Four records from the client (16 KB of plaintext each): each spans two of the server's
    // reads. The body is refused (no such route) after being read whole; the request behind it
    // on the same connection is answered, then the server closes.
    const body = "x".repeat(60_000);
    const post = `POST /nowhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\n\r\n${body}`;
    const res = await exchange(server.ports.rest, [post, get("/status", "close")], {
      minVersion: version,
      maxVersion: version,
    });
    assert.equal(res.protocol, version);
    const answers = res.text.split("HTTP/1.1 ").slice(1);
    assert.equal(answers.length, 2, res.text.slice(0, 500));
    assert.match(answers[0], /^404 /);
    assert.match(answers[1], /^200 /);
    assert.deepEqual(JSON.parse(answers[1].slice(answers[1].indexOf("\r\n\r\n") + 4)), { status: "UP", matchesRunning: 0 });
    assert.ok(res.ended, "the server ended the stream (close_notify and FIN), not reset it");
    // This connection was handed off only over TLS 1.3 (plus the /metrics request's own).
    assert.equal(await handoffs(), before + (version === "TLSv1.3" ? 1 : 0) + 1);
  });
}

test("TLSv1.2 and TLSv1.3 overlays of one match get the same states over wss", async () => {
  const previous = tls.DEFAULT_MAX_VERSION;
  const obs = client(server.ingest.replace("http://", "https://"), { rejectUnauthorized: false, transports: ["websocket"] });
  const ack = once(obs, "obs_logon_ack");
  obs.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: "HANDOFF" })));
  assert.equal(JSON.parse(await ack).value, true);
  const overlays = [];
  const before = await handoffs();
  try {
    for (const version of ["TLSv1.2", "TLSv1.3"]) {
      tls.DEFAULT_MAX_VERSION = version; // socket.io-client's ws takes the process default
      const ov = client(server.broadcast.replace("http://", "https://"), { rejectUnauthorized: false, transports: ["websocket"] });
      const data = once(ov, "match_data");
      ov.emit("logon", JSON.stringify({ groupCode: "HANDOFF" }));
      assert.equal(JSON.parse(await data).groupCode, "HANDOFF");
      overlays.push(ov);
    }
  } finally {
    tls.DEFAULT_MAX_VERSION = previous;
  }
  assert.equal(await handoffs(), before + 1 + 1, "the TLS 1.3 overlay was handed off, the TLS 1.2 one not");
  // A state after both joined reaches both.
  const next = overlays.map((ov) => once(ov, "match_data"));
  sendEvent(obs, "HANDOFF", "game_mode", "edge");
  const states = (await Promise.all(next)).map((d) => JSON.parse(d));
  assert.deepEqual(states[0], states[1]);
  for (const ov of overlays) ov.close();
  obs.close();
});

test("a handshake record longer than TLS allows is refused at once, not waited for", async () => {
  // A record header announcing 65,535 bytes (TLS allows 16 KB + 2 KB), then nothing: the server
  // closes the connection instead of holding it (and a buffer) until its handshake timeout.
  const started = Date.now();
  const out = await raw(server.ports.broadcast, Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00]), 3000);
  assert.ok(!out.endsWith("<timeout>"), "the connection was closed");
  assert.ok(Date.now() - started < 2500);
});

test("a tampered record after the hand-off closes that connection and is counted", async () => {
  const count = () => metric("spectra_tls_record_errors_total");
  const before = await count();
  // A proxy between the client and the REST port that flips the last bit (in the AEAD tag) of the
  // first chunk the client sends once told to: the record of a request after the handshake.
  let tamper = false;
  const proxy = net.createServer((down) => {
    const up = net.connect(server.ports.rest, "127.0.0.1");
    down.on("data", (d) => {
      if (tamper) {
        tamper = false;
        d = Buffer.from(d);
        d[d.length - 1] ^= 1;
      }
      up.write(d);
    });
    up.on("data", (d) => down.write(d));
    up.on("close", () => down.destroy());
    down.on("close", () => up.destroy());
    up.on("error", () => down.destroy());
    down.on("error", () => up.destroy());
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  try {
    const answer = await new Promise((resolve, reject) => {
      const socket = tls.connect({ host: "127.0.0.1", port: proxy.address().port, servername: "localhost", rejectUnauthorized: false });
      let text = "";
      socket.on("secureConnect", () => {
        // Let the handshake's last bytes pass the proxy untouched first.
        setTimeout(() => {
          tamper = true;
          socket.write(get("/status", "close"));
        }, 200);
      });
      socket.on("data", (d) => (text += d));
      socket.on("error", () => {}); // a reset is a fine way for it to end
      const timer = setTimeout(() => reject(new Error("the connection stayed open")), 5000);
      socket.on("close", () => (clearTimeout(timer), resolve(text)));
    });
    assert.equal(answer, "", "nothing is answered to a record that does not authenticate");
    assert.equal(await count(), before + 1);
  } finally {
    proxy.close();
  }
});
