// TLS session resumption with Node's own TLS client (OpenSSL, as browsers and the observer use
// it): a client that comes back with its session ticket skips the full handshake; the ticket keys
// rotate on the clock (TLS_TICKET_SECONDS periods aligned to the Unix epoch), a ticket is still
// accepted after one rotation and refused once its key is two periods old — while the client
// still offers it (its lifetime hint is two periods), so the refusal is the server's.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { startServer, parsePrometheus } from "./lib/server.mjs";

const PERIOD_MS = 2000;
let dir;
const servers = [];

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-tls-resume-"));
});
after(async () => {
  for (const s of servers) await s.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function start(name, env) {
  const server = await startServer({
    shards: 2,
    env: {
      INSECURE: "false",
      SERVER_KEY: path.join(dir, `${name}.key`),
      SERVER_CERT: path.join(dir, `${name}.crt`),
      ...env,
    },
  });
  servers.push(server);
  return server;
}

/** One HTTPS request over a fresh TLS connection, offering `session` when given. */
function get(port, pathname, session) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername: "localhost", rejectUnauthorized: false, session });
    const sessions = [];
    let reused = null;
    let protocol = null;
    let body = "";
    socket.on("session", (s) => sessions.push(s));
    socket.on("secureConnect", () => {
      reused = socket.isSessionReused();
      protocol = socket.getProtocol();
      socket.write(`GET ${pathname} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    });
    socket.setEncoding("utf8");
    socket.on("data", (d) => (body += d));
    socket.on("error", reject);
    socket.on("close", () => {
      if (reused === null) return reject(new Error("no TLS connection"));
      resolve({ reused, session: sessions.at(-1), body: body.slice(body.indexOf("\r\n\r\n") + 4), protocol });
    });
  });
}

async function metric(server, name, labels = "") {
  const { body } = await get(server.ports.rest, "/metrics");
  let sum = 0;
  for (const line of body.split("\n")) {
    if (line.startsWith(`${name}{${labels}`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Waits until the clock is `phaseMs` into a ticket period; returns that period's number. */
async function phase(phaseMs) {
  const now = Date.now();
  let wait = phaseMs - (now % PERIOD_MS);
  if (wait < 0) wait += PERIOD_MS;
  await sleep(wait);
  return Math.floor(Date.now() / PERIOD_MS);
}

test("a returning client resumes with its ticket; /metrics counts full and resumed handshakes", async () => {
  const server = await start("a", {});
  const first = await get(server.ports.rest, "/status");
  assert.equal(first.reused, false);
  assert.equal(first.protocol, "TLSv1.3");
  assert.ok(first.session, "the server sent a session ticket");
  assert.deepEqual(JSON.parse(first.body), { status: "UP", matchesRunning: 0 });
  const resumedBefore = await metric(server, "spectra_tls_handshakes_total", 'kind="resumed"');
  const again = await get(server.ports.rest, "/status", first.session);
  assert.equal(again.reused, true, "the second connection skipped the full handshake");
  assert.deepEqual(JSON.parse(again.body), { status: "UP", matchesRunning: 0 });
  assert.equal(await metric(server, "spectra_tls_handshakes_total", 'kind="resumed"'), resumedBefore + 1);
  assert.ok((await metric(server, "spectra_tls_handshakes_total", 'kind="full"')) >= 2);
  assert.equal(await metric(server, "spectra_tls_tickets_refused_total"), 0);
  const families = parsePrometheus((await get(server.ports.rest, "/metrics")).body);
  assert.equal(families.spectra_tls_handshakes.type, "counter");
  assert.deepEqual(new Set(families.spectra_tls_handshakes.samples.map((s) => s.labels.kind)), new Set(["full", "resumed"]));
  assert.equal(families.spectra_tls_tickets_refused.type, "counter");
  assert.equal(families.spectra_tls_handshake_failures.type, "counter");
  // Kernel TLS is probed at start, reported in the log and as a gauge (this kernel may lack it).
  const ulps = fs.existsSync("/proc/sys/net/ipv4/tcp_available_ulp") ? fs.readFileSync("/proc/sys/net/ipv4/tcp_available_ulp", "utf8") : "";
  const kernel = families.spectra_tls_kernel_available.samples[0].value;
  assert.ok(kernel === 0 || kernel === 1);
  if (ulps.split(/\s+/).includes("tls")) assert.equal(kernel, 1);
  assert.match(server.log(), kernel ? /kernel TLS \(kTLS\) is available: TLS 1\.3 connections hand their records to the kernel/ : /no kernel TLS \(.+\); TLS records are sealed in user space/);
  // Connections whose records the kernel took (KERNEL_TLS=auto, the default): none without it.
  assert.equal(families.spectra_tls_kernel.type, "counter");
  const handedToKernel = families.spectra_tls_kernel.samples.reduce((sum, s) => sum + s.value, 0);
  if (kernel) assert.ok(handedToKernel > 0, "TLS 1.3 connections handed to the kernel");
  else assert.equal(handedToKernel, 0);
  // The ticket is bound to nothing but this process's keys: any port of the node takes it.
  assert.equal((await get(server.ports.broadcast, "/", first.session)).reused, true);
});

test("a ticket is accepted after one key rotation and refused after two (TLS_TICKET_SECONDS)", async () => {
  const server = await start("b", { TLS_TICKET_SECONDS: String(PERIOD_MS / 1000) });
  const period = await phase(200);
  const early = await get(server.ports.rest, "/status"); // issued at the start of `period`
  await phase(PERIOD_MS - 500);
  const late = await get(server.ports.rest, "/status"); // issued at its end
  assert.equal(Math.floor(Date.now() / PERIOD_MS), period, "both tickets come from one period");

  assert.equal(await phase(300), period + 1);
  const refusedBefore = await metric(server, "spectra_tls_tickets_refused_total");
  const afterRotation = await get(server.ports.rest, "/status", early.session);
  assert.equal(afterRotation.reused, true, "accepted with the previous period's key");

  assert.equal(await phase(300), period + 2);
  // `late` is ~2.8 s old, its lifetime hint 4 s: the client offers it, the server refuses it.
  const expired = await get(server.ports.rest, "/status", late.session);
  assert.equal(expired.reused, false, "refused: its key is two periods old");
  assert.deepEqual(JSON.parse(expired.body), { status: "UP", matchesRunning: 0 }, "a full handshake serves it");
  assert.equal(await metric(server, "spectra_tls_tickets_refused_total"), refusedBefore + 1);
});

test("TLS_TICKET_SECONDS=0 and TLS_SESSION_CACHE=0: every connection is a full handshake", async () => {
  const server = await start("c", { TLS_TICKET_SECONDS: "0", TLS_SESSION_CACHE: "0" });
  const first = await get(server.ports.rest, "/status");
  assert.equal(first.reused, false);
  if (first.session) assert.equal((await get(server.ports.rest, "/status", first.session)).reused, false);
  assert.equal(await metric(server, "spectra_tls_handshakes_total", 'kind="resumed"'), 0);
});
