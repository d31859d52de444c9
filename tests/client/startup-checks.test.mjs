// Start-up checks (src/node/preflight.rs): where the host refuses what the shards need, the
// server says why and how to fix it, in one paragraph, and exits 78 — no panic, no backtrace.
// The seccomp filters are installed by a small helper (Debian's libseccomp through ctypes), as a
// container runtime would; `ulimit -l` by bash. And LOG_FORMAT=json is JSON on every line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import fs from "node:fs";
import os from "node:os";
import { binary, repoRoot, freePorts, observer, overlay, runProgram, startServer, waitFor, uniqueCode } from "./lib/server.mjs";

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

const profile = path.join(repoRoot, "deploy", "docker", "seccomp-io_uring.json");

/** Runs `argv` under a seccomp profile file through the helper; resolves with code and output. */
function underProfile(file, argv) {
  return runProgram("python3", [helper, "--profile", file, ...argv], { limitMs: 15000 });
}

test("deploy/docker/seccomp-io_uring.json loaded as a container runtime loads it: the server starts and serves an observer and an overlay, its health check passes, syscalls outside the list are refused; the same profile without its io_uring group refuses to start with the seccomp message", async () => {
  const server = await startServer({ shell: `exec python3 ${helper} --profile ${profile} "$0" "$@"` });
  try {
    const code = uniqueCode("SC");
    const obs = await observer(server, { groupCode: code });
    assert.equal(obs.ack.value, true, obs.ack.reason);
    const view = await overlay(server, code);
    await waitFor(() => view.received.length > 0, 5000, "a state under the profile");
    obs.socket.close();
    view.socket.close();
    // The container's HEALTHCHECK runs under the same profile.
    const health = await underProfile(profile, [binary, "--health-check", "--bind", "127.0.0.1", "--rest-port", String(server.ports.rest), "--insecure", "true"]);
    assert.equal(health.code, 0, health.err);
  } finally {
    assert.equal((await server.stop()).code, 0);
  }
  // Outside the list: namespaces, mounts, keyrings → EPERM (the default action); clone3 → ENOSYS
  // (so the C library falls back to clone, whose flags the profile can check).
  for (const [name, errno] of [["unshare", 1], ["mount", 1], ["keyctl", 1], ["bpf", 1], ["clone3", 38], ["getpid", 0]]) {
    const r = await underProfile(profile, ["--try", name]);
    assert.equal(r.out.trim(), `${name} errno=${errno}`, r.err);
  }
  // The runtime's default (the profile without its one addition) is what refuses io_uring.
  const json = JSON.parse(fs.readFileSync(profile, "utf8"));
  const added = json.syscalls.filter((g) => g.names.some((n) => n.startsWith("io_uring")));
  assert.deepEqual(added.flatMap((g) => g.names).sort(), ["io_uring_enter", "io_uring_register", "io_uring_setup"]);
  json.syscalls = json.syscalls.filter((g) => !added.includes(g));
  const without = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "spectra-seccomp-")), "runtime-default.json");
  fs.writeFileSync(without, JSON.stringify(json));
  const refused = await run(["python3", helper, "--profile", without]);
  refusedClearly(refused, /blocked by a seccomp policy/, /deploy\/docker\/seccomp-io_uring\.json/);
});

test("--health-check: 0 while the server answers UP, 1 with the reason once it is gone", async () => {
  const server = await startServer();
  const argv = ["--health-check", "--bind", "127.0.0.1", "--rest-port", String(server.ports.rest), "--insecure", "true"];
  const up = await runProgram(binary, argv, { limitMs: 10000 });
  assert.equal(up.code, 0, up.err);
  await server.stop();
  const down = await runProgram(binary, argv, { limitMs: 10000 });
  assert.equal(down.code, 1);
  // Refused once the port is closed; reset when the connection reached the listening socket in the
  // moment the exiting process's io_uring still held it (the kernel frees that ring after the exit).
  assert.match(down.err, /health check: http:\/\/127\.0\.0\.1:\d+\/status: .*(refused|reset)/i);
});

test("cluster mode without AUTH_KEY: exit 78 (each node would generate its own key and refuse the others' observers)", async () => {
  const r = await run([], { CLUSTER_NATS_URL: "nats://127.0.0.1:9", AUTH_KEY: "" });
  refusedClearly(r, /cluster mode \(CLUSTER_NATS_URL\) without AUTH_KEY/, /same AUTH_KEY/);
});
