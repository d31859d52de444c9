// tools/replay: replays a .replay file into a server over a real Socket.IO connection, at once,
// with a fixed delay or with the recorded gaps; continues a match with --from/--secret.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { startServer, overlay, waitFor, uniqueCode, repoRoot } from "./lib/server.mjs";

const tool = path.join(repoRoot, "target", "debug", "replay");
const kitReplay = path.resolve(repoRoot, "..", "shared", "kit", "reference", "match.replay");
let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

function replay(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, ["--server", `127.0.0.1:${server.ports.ingest}`, "--key", server.key, ...args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => process.kill(child.pid, "SIGKILL"), 60000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, err, summary: out.trim() ? JSON.parse(out.trim().split("\n").at(-1)) : null });
    });
  });
}

test("instant: the whole reference match, stopping at the game end; overlays see the final state", async () => {
  const code = uniqueCode("RPL");
  const view = await overlay(server, code);
  const res = await replay(["--file", kitReplay, "--group", code, "--mode", "instant"]);
  assert.equal(res.code, 0, res.err);
  assert.equal(res.summary.groupCode, code);
  assert.equal(res.summary.stopReason, "game_end");
  assert.equal(res.summary.sent, 2463, "every event up to the game end (as the kit's observer sends)");
  assert.match(res.summary.groupSecret, /^[A-Z0-9]{12}$/);
  await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 20000, "the game end");
  assert.equal(view.received.at(-1).map, "Haven");
  view.socket.close();
});

test("--limit, then --from with the group secret continues the same match", async () => {
  const code = uniqueCode("RPC");
  const view = await overlay(server, code);
  const first = await replay(["--file", kitReplay, "--group", code, "--limit", "1000"]);
  assert.equal(first.code, 0, first.err);
  assert.deepEqual([first.summary.sent, first.summary.stopReason], [1000, "limit"]);
  const wrong = await replay(["--file", kitReplay, "--group", code, "--from", "1000"]);
  assert.equal(wrong.code, 1, "without the secret the live match refuses the logon");
  assert.match(wrong.err, /logon refused: Game with Group Code .* exists and is still live\./);
  const rest = await replay(["--file", kitReplay, "--group", code, "--from", "1000", "--secret", first.summary.groupSecret]);
  assert.equal(rest.code, 0, rest.err);
  assert.equal(rest.summary.groupSecret, first.summary.groupSecret);
  assert.equal(rest.summary.sent, 2463 - 1000);
  assert.equal(rest.summary.stopReason, "game_end");
  await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 20000, "the game end");
  view.socket.close();
});

test("delay and timestamps modes keep their pace; a file cut by a crash still replays", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-replay-tool-"));
  try {
    const [header, ...events] = JSON.parse(`[${fs.readFileSync(kitReplay, "utf8")}]`);
    const t0 = 1767268800000;
    const picked = events.slice(0, 4).map((e, i) => ({ ...e, timestamp: t0 + i * 300 }));
    const file = path.join(dir, "Match_SMALL_1.replay");
    // The last record is cut short, as a crash would leave it.
    fs.writeFileSync(file, [header, ...picked].map((x) => JSON.stringify(x)).join(",\n") + ',\n{"obsName":"Kit');
    const timed = await replay(["--file", file, "--group", uniqueCode("TS"), "--mode", "timestamps", "--speed", "2"]);
    assert.equal(timed.code, 0, timed.err);
    assert.equal(timed.summary.sent, 4);
    assert.match(timed.err, /1 unreadable line\(s\) skipped/);
    assert.ok(timed.summary.seconds >= 0.45, `3 gaps of 300 ms at speed 2 take at least 450 ms (${timed.summary.seconds} s)`);
    const delayed = await replay(["--file", file, "--group", uniqueCode("DL"), "--mode", "delay", "--delay-ms", "150"]);
    assert.equal(delayed.code, 0, delayed.err);
    assert.ok(delayed.summary.seconds >= 0.45, `3 pauses of 150 ms (${delayed.summary.seconds} s)`);
    const missing = await replay(["--file", path.join(dir, "nope.replay")]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nope\.replay: No such file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
