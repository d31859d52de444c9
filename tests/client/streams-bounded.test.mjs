// HTTP event streams that do not read (issue "Hardening, second round", defects 7 and 8): a
// resume with Last-Event-ID serves the room's one history (no copy per request), and a stream
// whose client stopped reading is closed after ping interval + ping timeout, like a spectator.
// The non-reading clients are real TCP sockets with a small receive buffer (Python), so the
// server's writes back up as they would behind a stalled browser tab.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { spawn } from "node:child_process";
import { EventSource } from "eventsource";
import { startServer, observer, sleep, waitFor, uniqueCode, referenceMatch, metric } from "./lib/server.mjs";

const { events, logon } = referenceMatch();

function rssMb(server) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${server.child.pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** `n` streams of `code` resuming from `lastId` that never read: a Python process holding real
 * sockets with a 2 KB receive buffer for at most `holdS` seconds (ended by PID by the caller). */
async function silentStreams(port, code, n, lastId, holdS = 40) {
  const script = `
import socket, sys, time
port, code, n, last, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
socks = []
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect(("127.0.0.1", port))
    s.sendall(("GET /matches/%s/stream HTTP/1.1\\r\\nHost: x\\r\\nLast-Event-ID: %s\\r\\n\\r\\n" % (code, last)).encode())
    socks.append(s)
print("open", flush=True)
time.sleep(hold)
`;
  const child = spawn("python3", ["-c", script, String(port), code, String(n), String(lastId), String(holdS)], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  await waitFor(() => out.includes("open"), 10000, "the silent streams");
  return child;
}

test("HTTP streams: resumes share the room's history (RSS flat for 200 non-reading resumes); streams that stop reading are closed after ping interval + timeout", async (t) => {
  const server = await startServer({
    shards: 1,
    env: { BROADCAST_INTERVAL_MS: "20", PING_INTERVAL_MS: "500", PING_TIMEOUT_MS: "500", STREAM_HEARTBEAT_MS: "200" },
  });
  let silent;
  try {
    const code = uniqueCode("SB");
    const obs = await observer(server, logon(code));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    obs.socket.emit("obs_data", JSON.stringify({ ...events[0], timestamp: undefined, groupCode: code }));
    // A reading stream from the start: deltas are built and kept as the resume history.
    const es = new EventSource(`${server.rest}/matches/${code}/stream`);
    let firstId;
    let records = 0;
    es.addEventListener("snapshot", (e) => { firstId ??= Number(e.lastEventId); records++; });
    es.addEventListener("delta", () => records++);
    await waitFor(() => firstId !== undefined, 5000, "the reader's snapshot");
    // Most of the match (it stays live), paced so the history holds every delta.
    const until = Math.floor(events.length * 0.9);
    for (let i = 1; i < until; i++) {
      const { timestamp, ...event } = events[i];
      obs.socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
      if (i % 4 === 3) await sleep(3);
    }
    await sleep(500);
    // What one resume from the first state carries (read whole once).
    const ctl = new AbortController();
    const res = await fetch(`${server.rest}/matches/${code}/stream`, { headers: { "Last-Event-ID": String(firstId) }, signal: ctl.signal });
    const reader = res.body.getReader();
    let history = 0;
    const start = Date.now();
    let last = Date.now();
    while (Date.now() - last < 300 && Date.now() - start < 5000) {
      const r = await Promise.race([reader.read(), sleep(300).then(() => null)]);
      if (!r || r.done) break;
      history += r.value.length;
      last = Date.now();
    }
    ctl.abort();
    assert.ok(history > 100_000, `one resume carries ${history} bytes`);

    // 200 resumes that never read: memory does not grow by 200 copies of that history.
    await sleep(300);
    const before = rssMb(server);
    silent = await silentStreams(server.ports.rest, code, 200, firstId);
    await waitFor(async () => (await metric(server, "spectra_streams")) === 201, 10000, "201 streams open");
    const grown = rssMb(server) - before;
    const copies = (200 * history) / 1e6;
    assert.ok(grown < Math.min(20, copies / 4), `RSS grew ${grown.toFixed(1)} MB (200 copies of the history: ${copies.toFixed(0)} MB)`);

    // They take nothing: closed within ping interval + timeout (1 s) and a check; the reading
    // stream stays and keeps getting the match.
    const open = Date.now();
    await waitFor(async () => (await metric(server, "spectra_streams")) === 1, 8000, "the silent streams closed");
    const took = Date.now() - open;
    const seen = records;
    for (let i = until; i < until + 20 && i < events.length - 1; i++) {
      const { timestamp, ...event } = events[i];
      obs.socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
    }
    await waitFor(() => records > seen, 5000, "the reading stream goes on");
    assert.equal(es.readyState, EventSource.OPEN);
    assert.ok(took < 8000, `closed after ${took} ms`);
    t.diagnostic(`one resume ${history} bytes; 200 silent resumes: RSS +${grown.toFixed(1)} MB; all closed ${took} ms after they were open`);
    es.close();
    obs.socket.close();
  } finally {
    if (silent && silent.exitCode === null) process.kill(silent.pid, "SIGTERM");
    await server.stop();
  }
});
