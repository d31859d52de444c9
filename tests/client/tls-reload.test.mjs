// Certificate reload (#18): SIGHUP, or a change of the files, makes new TLS connections use the new
// SERVER_KEY/SERVER_CERT while open connections keep theirs; a broken pair is refused with a log
// line and the previous certificate stays in use.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { execFileSync } from "node:child_process";
import WebSocket from "ws";
import { startServer, waitFor } from "./lib/server.mjs";

/** A fresh self-signed pair made by openssl, with `cn` as its subject. */
function makePair(dir, cn) {
  const key = path.join(dir, `${cn}.key`);
  const cert = path.join(dir, `${cn}.crt`);
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${cn}`,
  ], { stdio: "ignore" });
  return { key, cert };
}

/** Replaces `dst` atomically (what certbot's deploy step amounts to). */
function replace(src, dst) {
  fs.copyFileSync(src, `${dst}.new`);
  fs.renameSync(`${dst}.new`, dst);
}

/** The subject CN of the certificate a new TLS connection to `port` is shown. */
function peerCn(port) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
      const cn = s.getPeerCertificate().subject?.CN;
      s.end();
      resolve(cn);
    });
    s.on("error", reject);
  });
}

function pong(ws) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no pong on the held WebSocket")), 3000);
    ws.once("pong", () => {
      clearTimeout(timer);
      resolve();
    });
    ws.ping();
  });
}

test("SIGHUP and changed files reload the certificate; open connections stay; a broken pair is refused", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-reload-"));
  const live = { key: path.join(dir, "server.key"), cert: path.join(dir, "server.crt") };
  const first = makePair(dir, "first");
  replace(first.key, live.key);
  replace(first.cert, live.cert);
  const server = await startServer({
    shards: 2,
    env: { INSECURE: "false", SERVER_KEY: live.key, SERVER_CERT: live.cert, TLS_RELOAD_CHECK_SECONDS: "0" },
  });
  const port = server.ports.broadcast;
  try {
    assert.equal(await peerCn(port), "first");
    const held = new WebSocket(`wss://127.0.0.1:${port}/ws`, { rejectUnauthorized: false });
    await new Promise((resolve, reject) => {
      held.once("open", resolve);
      held.once("error", reject);
    });
    assert.equal(held._socket.getPeerCertificate().subject.CN, "first");

    // New pair + SIGHUP: new connections see it, the held WebSocket still works.
    const second = makePair(dir, "second");
    replace(second.key, live.key);
    replace(second.cert, live.cert);
    assert.equal(await peerCn(port), "first", "nothing changes before the signal (checks are off)");
    process.kill(server.child.pid, "SIGHUP");
    await waitFor(() => /tls: reloaded .*SIGHUP/.test(server.log()), 5000, "the reload log line");
    assert.equal(await peerCn(port), "second");
    assert.equal(await peerCn(server.ports.ingest), "second");
    assert.equal(await peerCn(server.ports.rest), "second");
    await pong(held);
    assert.equal(held.readyState, WebSocket.OPEN);

    // A key that does not belong to the certificate: refused, logged, the second pair stays.
    const third = makePair(dir, "third");
    replace(third.key, live.key); // certificate still "second"
    process.kill(server.child.pid, "SIGHUP");
    await waitFor(() => /tls: reload \(SIGHUP\) refused, the previous certificate stays in use: .*do not match/.test(server.log()), 5000, "the refusal");
    assert.equal(await peerCn(port), "second");
    // An unreadable certificate: refused as well.
    fs.writeFileSync(live.cert, "not a certificate\n");
    process.kill(server.child.pid, "SIGHUP");
    await waitFor(() => (server.log().match(/tls: reload \(SIGHUP\) refused/g) ?? []).length >= 2, 5000, "the second refusal");
    assert.equal(await peerCn(port), "second");
    await pong(held);
    assert.equal(server.exited, false);
    held.close();
  } finally {
    await server.stop();
  }

  // With TLS_RELOAD_CHECK_SECONDS=1 a change of the files is enough.
  const again = makePair(dir, "again");
  replace(again.key, live.key);
  replace(again.cert, live.cert);
  const watcher = await startServer({
    shards: 1,
    env: { INSECURE: "false", SERVER_KEY: live.key, SERVER_CERT: live.cert, TLS_RELOAD_CHECK_SECONDS: "1" },
  });
  try {
    assert.equal(await peerCn(watcher.ports.rest), "again");
    const fourth = makePair(dir, "fourth");
    replace(fourth.key, live.key);
    replace(fourth.cert, live.cert);
    await waitFor(() => /tls: reloaded .*the files changed/.test(watcher.log()), 5000, "the reload on a file change");
    assert.equal(await peerCn(watcher.ports.rest), "fourth");
  } finally {
    await watcher.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
