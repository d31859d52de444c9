// Start-up checks (src/node/preflight.rs): where the host refuses what the shards need, the
// server says why and how to fix it, in one paragraph, and exits 78 — no panic, no backtrace.
// The seccomp filters are installed by a small helper (Debian's libseccomp through ctypes), as a
// container runtime would; `ulimit -l` by bash. And LOG_FORMAT=json is JSON on every line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { binary, repoRoot, freePorts, observer, overlay, startServer, waitFor, uniqueCode } from "./lib/server.mjs";

const helper = path.join(repoRoot, "tests", "client", "lib", "seccomp-exec.py");

/** Runs the server through `wrap` (argv before the binary) until it exits or is ready (then
 * SIGTERM); resolves with its exit code, stdout and stderr. */
async function run(wrap, env = {}) {
  const [ingest, rest, broadcast] = await freePorts(3);
  const args = ["--shards", "2", "--bind", "127.0.0.1", "--ingest-port", String(ingest), "--rest-port", String(rest), "--broadcast-port", String(broadcast), "--replay-dir", "off"];
  const [command, ...prefix] = [...wrap, binary];
  const child = spawn(command, [...prefix, ...args], { env: { PATH: process.env.PATH, AUTH_KEY: "k", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let ready = false;
  child.stdout.on("data", (d) => {
    stdout += d;
    if (!ready && stdout.includes("spectra-server ready")) {
      ready = true;
      process.kill(child.pid, "SIGTERM");
    }
  });
  child.stderr.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.exitCode === null && process.kill(child.pid, "SIGKILL"), 15000);
  const code = await new Promise((resolve) => child.on("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr, ready };
}

const deny = ["python3", helper, "--deny-io-uring"];
const allowAll = ["python3", helper, "--allow-all"];
const memlock64 = ["bash", "-c", 'ulimit -l 64; exec "$0" "$@"'];

function refusedClearly(r, cause, fix) {
  assert.equal(r.code, 78, `exit code (stderr: ${r.stderr})`);
  assert.equal(r.ready, false);
  assert.doesNotMatch(r.stderr + r.stdout, /panicked|backtrace|RUST_BACKTRACE|Romulus|shard stopped/i);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one paragraph: ${r.stderr}`);
  assert.match(lines[0], cause);
  assert.match(lines[0], fix);
}

test("io_uring blocked by a seccomp filter (EPERM for the three io_uring calls): exit 78, the cause and the fix named; the same helper allowing everything starts", async () => {
  const refused = await run(deny);
  refusedClearly(refused, /blocked by a seccomp policy/, /allows those three calls.*--security-opt seccomp=/);
  assert.match(refused.stderr, /Docker 25|containerd 2\.0|RuntimeDefault/);
  const control = await run(allowAll);
  assert.equal(control.ready, true, control.stderr);
  assert.equal(control.code, 0);
});

test("RLIMIT_MEMLOCK of 64 KiB: exit 78 naming the limit, the minimum and how to raise it; 512 KiB starts", async () => {
  const refused = await run(memlock64);
  refusedClearly(refused, /RLIMIT_MEMLOCK\) is 64 KiB.*at least 512 KiB/, /ulimit -l .*--ulimit memlock.*LimitMEMLOCK/);
  const control = await run(["bash", "-c", 'ulimit -l 512; exec "$0" "$@"']);
  assert.equal(control.ready, true, control.stderr);
});

test("LOG_FORMAT=json: a refused start is one JSON line too (check, exit code, message)", async () => {
  for (const wrap of [deny, memlock64]) {
    const r = await run(wrap, { LOG_FORMAT: "json" });
    assert.equal(r.code, 78);
    assert.equal(r.stdout, "");
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    const line = JSON.parse(lines[0]);
    assert.equal(line.level, "ERROR");
    assert.equal(line.exit_code, 78);
    assert.match(line.check, /^(io_uring|memlock)$/);
    assert.match(line.message, /cannot start/);
  }
});

test("LOG_FORMAT=json: every line on stdout and stderr is one JSON object from start to exit (the generated key and the ready line are events)", async () => {
  const server = await startServer({ key: null, env: { LOG_FORMAT: "json", RUST_LOG: "debug" } });
  const code = uniqueCode("JS");
  const obs = await observer(server, { groupCode: code, key: JSON.parse(server.stdout().split("\n").find((l) => l.includes("generated_key"))).key });
  assert.equal(obs.ack.value, true, obs.ack.reason);
  const view = await overlay(server, code);
  await waitFor(() => view.received.length > 0, 5000, "a state");
  obs.socket.close();
  view.socket.close();
  const exit = await server.stop();
  assert.equal(exit.code, 0);
  const lines = (server.stdout() + server.log()).split("\n").filter((l) => l !== "");
  assert.ok(lines.length > 5, `${lines.length} lines`);
  for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `not JSON: ${l}`);
  const events = lines.map((l) => JSON.parse(l));
  const ready = events.find((e) => e.event === "ready");
  assert.equal(ready.ports.ingest, server.ports.ingest);
  assert.equal(ready.shards, 2);
  assert.equal(events.find((e) => e.event === "generated_key").key.length > 10, true);
});
