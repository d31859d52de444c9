// TLS on all three ports with a generated self-signed certificate (what the original's Docker
// entrypoint does), used by the real socket.io-client with verification off (as the observer does).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import https from "node:https";
import { startServer, once, logonPayload, client, runProgram, repoRoot, waitFor } from "./lib/server.mjs";

let server;
let dir;
before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-tls-"));
  server = await startServer({
    shards: 2,
    env: { INSECURE: "false", SERVER_KEY: path.join(dir, "k.pem"), SERVER_CERT: path.join(dir, "c.pem") },
  });
});
after(async () => {
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

const tls = (url) => url.replace("http://", "https://");

test("self-signed certificate is generated and written", () => {
  assert.match(fs.readFileSync(path.join(dir, "c.pem"), "utf8"), /BEGIN CERTIFICATE/);
  assert.match(fs.readFileSync(path.join(dir, "k.pem"), "utf8"), /BEGIN PRIVATE KEY/);
});

test("REST answers over HTTPS", async () => {
  const body = await new Promise((resolve, reject) => {
    https
      .get(`${tls(server.rest)}/status`, { rejectUnauthorized: false }, (res) => {
        let b = "";
        res.on("data", (d) => (b += d));
        res.on("end", () => resolve(b));
      })
      .on("error", reject);
  });
  assert.deepEqual(JSON.parse(body), { status: "UP", matchesRunning: 0 });
});

for (const transports of [["polling", "websocket"], ["websocket"]]) {
  test(`observer and overlay over TLS (${transports.join(" → ")})`, async () => {
    const obs = client(tls(server.ingest), { rejectUnauthorized: false, transports });
    const ackP = once(obs, "obs_logon_ack");
    const group = `TLS${transports.length}`;
    obs.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, groupCode: group })));
    assert.equal(JSON.parse(await ackP).value, true);
    const ov = client(tls(server.broadcast), { rejectUnauthorized: false, transports });
    const data = once(ov, "match_data");
    ov.emit("logon", JSON.stringify({ groupCode: group }));
    assert.equal(JSON.parse(await data).groupCode, group);
    obs.close();
    ov.close();
  });
}

test("plain HTTP is refused on a TLS port", async () => {
  await assert.rejects(fetch(`${server.rest}/status`));
});

test("tools/replay over TLS: verified against the generated certificate, the overlay sees the match", async () => {
  const code = "TLSRPL";
  const ov = client(tls(server.broadcast), { rejectUnauthorized: false, transports: ["websocket"] });
  const states = [];
  ov.on("match_data", (d) => states.push(JSON.parse(d)));
  ov.emit("logon", JSON.stringify({ groupCode: code }));
  const kitReplay = path.resolve(repoRoot, "..", "shared", "kit", "reference", "match.replay");
  const res = await runProgram(path.join(repoRoot, "target", "debug", "replay"), [
    "--server", `127.0.0.1:${server.ports.ingest}`, "--key", server.key, "--file", kitReplay, "--group", code,
    "--limit", "50", "--ca", path.join(dir, "c.pem"),
  ]);
  assert.equal(res.code, 0, res.err);
  const summary = JSON.parse(res.out.trim().split("\n").at(-1));
  assert.equal(summary.sent, 50);
  assert.equal(summary.tls.resumed, false);
  assert.ok(summary.tls.handshakeMs > 0);
  await waitFor(() => states.length > 0, 5000, "a state over wss");
  assert.equal(states.at(-1).groupCode, code);
  ov.close();
});
