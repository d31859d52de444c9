// Replay logs and crash recovery: every accepted event is in the match's replay file; a server
// killed with SIGKILL mid-match rebuilds the match from its log, the observer rejoins with its group
// secret, and the match finishes with the same final snapshot as a run that was never interrupted.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer, observer, overlay, waitFor, uniqueCode, sleep, referenceMatch } from "./lib/server.mjs";

const { events, logon } = referenceMatch();
const logonFields = ({ groupCode, groupSecret = "" }) => logon(groupCode, groupSecret);

/** Sends events [from, to) as obs_data for `code`, yielding now and then so the socket drains. */
async function send(socket, code, from, to) {
  for (let i = from; i < to; i++) {
    const { timestamp, ...event } = events[i];
    socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
    if (i % 50 === 49) await sleep(5);
  }
}

const lines = (file) => fs.readFileSync(file, "utf8").split("\n");
const replayFiles = (dir) => fs.readdirSync(dir).filter((f) => f.endsWith(".replay"));

/** Waits for the overlay's game-end snapshot. */
async function finalSnapshot(view) {
  await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 30000, "the game_end snapshot");
  return view.received.at(-1);
}

/** The two runs differ in their group code and in the server's receipt times of the events
 * (server clock, stamped on arrival: `agentSelectStartTime` is one); nothing else may differ. */
const withoutCode = (snapshot) => ({ ...snapshot, groupCode: "<code>", agentSelectStartTime: "<receipt time>" });

async function uninterrupted() {
  const server = await startServer({ shards: 2 });
  try {
    const code = uniqueCode("REF");
    const view = await overlay(server, code);
    const obs = await observer(server, logonFields({ groupCode: code }));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    await send(obs.socket, code, 0, events.length);
    const snapshot = await finalSnapshot(view);
    obs.socket.close();
    view.socket.close();
    return snapshot;
  } finally {
    await server.stop();
  }
}

test("replay log: header, then one line per accepted event, in the original's format", async () => {
  const server = await startServer({ shards: 2 });
  try {
    const code = uniqueCode("LOG");
    const obs = await observer(server, logonFields({ groupCode: code }));
    assert.equal(obs.ack.value, true);
    await send(obs.socket, code, 0, 40);
    const [name] = await (async () => {
      await waitFor(() => replayFiles(server.replayDir).length === 1, 5000, "the replay file");
      return replayFiles(server.replayDir);
    })();
    assert.match(name, new RegExp(`^Match_${code}_\\d{13}\\.replay$`));
    const file = path.join(server.replayDir, name);
    await waitFor(() => lines(file).length === 41, 5000, "40 events on disk");
    const parsed = JSON.parse(`[${fs.readFileSync(file, "utf8")}]`);
    assert.equal(parsed.length, 41);
    const [h, ...logged] = parsed;
    assert.equal(h.groupCode, code);
    assert.equal(h.key, undefined, "the access key is not logged");
    assert.equal(h.type, undefined);
    assert.equal(Object.keys(h).at(-1), "logStartTime");
    assert.equal(String(h.logStartTime), name.match(/_(\d+)\.replay$/)[1]);
    assert.equal(h.spectraServer.groupSecret, obs.ack.reason, "the group secret, for recovery");
    for (let i = 0; i < 40; i++) {
      assert.equal(logged[i].type, events[i].type);
      assert.deepEqual(logged[i].data, events[i].data);
      assert.equal(typeof logged[i].timestamp, "number", "the server's timestamp");
    }
    assert.ok(!fs.readFileSync(file, "utf8").endsWith("\n"), "no trailing newline");
    obs.socket.close();
  } finally {
    await server.stop();
  }
});

test("replay logs go to replays/ under the working directory by default; REPLAY_DIR=off writes none", async () => {
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-cwd-"));
  try {
    for (const [dirSetting, expectFiles] of [["replays", true], ["off", false]]) {
      const server = await startServer({ shards: 1, cwd, env: { REPLAY_DIR: dirSetting } });
      try {
        const code = uniqueCode("CWD");
        const obs = await observer(server, logonFields({ groupCode: code }));
        assert.equal(obs.ack.value, true);
        await send(obs.socket, code, 0, 5);
        const dir = path.join(cwd, "replays");
        if (expectFiles) {
          await waitFor(() => fs.existsSync(dir) && replayFiles(dir).some((f) => f.includes(code)), 5000, "the log");
        } else {
          await sleep(300);
          const everything = fs.readdirSync(cwd, { recursive: true }).map(String);
          assert.deepEqual(everything.filter((f) => f.includes(code)), [], "no log anywhere with REPLAY_DIR=off");
          assert.ok(!everything.includes("off"), "no directory named off");
        }
        obs.socket.close();
      } finally {
        await server.stop();
      }
    }
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});

test("SIGKILL mid-match: the match is rebuilt from its log and finishes like an uninterrupted run", async () => {
  const expected = await uninterrupted();
  assert.equal(expected.roundPhase, "game_end");

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-recovery-"));
  try {
    const code = uniqueCode("CRASH");
    const half = Math.floor(events.length / 2);
    let server = await startServer({ shards: 2, replayDir: dir });
    const before = await overlay(server, code);
    const obs = await observer(server, logonFields({ groupCode: code }));
    assert.equal(obs.ack.value, true);
    const secret = obs.ack.reason;
    await send(obs.socket, code, 0, half);
    // Every event sent so far is on disk (the log writes as events arrive), then the crash.
    const [name] = replayFiles(dir);
    await waitFor(() => lines(path.join(dir, name)).length === half + 1, 10000, "half the match on disk");
    await sleep(300); // the last broadcast of the first half
    const lastBefore = before.received.at(-1);
    obs.socket.close();
    before.socket.close();
    const killed = await server.stop("SIGKILL");
    assert.equal(killed.signal, "SIGKILL");

    server = await startServer({ shards: 2, replayDir: dir });
    try {
      // The log (stderr) may arrive after the ready line (stdout).
      const recovered = new RegExp(`match ${code}: recovered on shard \\d from .*\\(${half} events\\)`);
      await waitFor(() => recovered.test(server.log()), 5000, "the recovery logged");
      // Overlays see the state from before the crash.
      const after = await overlay(server, code);
      await waitFor(() => after.received.length > 0, 5000, "the logon snapshot");
      assert.deepEqual(after.received[0], lastBefore);
      // A logon without the secret is refused; with it, the observer rejoins.
      const intruder = await observer(server, logonFields({ groupCode: code }));
      assert.equal(intruder.ack.value, false);
      intruder.socket.close();
      const back = await observer(server, logonFields({ groupCode: code, groupSecret: secret }));
      assert.deepEqual(back.ack, { type: "authenticate", value: true, reason: "reconnected" });
      await send(back.socket, code, half, events.length);
      const final = await finalSnapshot(after);
      assert.deepEqual(withoutCode(final), withoutCode(expected));
      // The same file was continued: header + every event, still one JSON array when wrapped.
      assert.deepEqual(replayFiles(dir), [name]);
      await waitFor(() => lines(path.join(dir, name)).length === events.length + 1, 10000, "the whole match on disk");
      assert.equal(JSON.parse(`[${fs.readFileSync(path.join(dir, name), "utf8")}]`).length, events.length + 1);
      back.socket.close();
      after.socket.close();
    } finally {
      await server.stop();
    }
    // A finished match is not recovered again.
    const third = await startServer({ shards: 2, replayDir: dir });
    try {
      assert.doesNotMatch(third.log(), /recovered/);
      const status = await (await fetch(`${third.rest}/status`)).json();
      assert.equal(status.matchesRunning, 0, "no live match after the game end");
    } finally {
      await third.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
