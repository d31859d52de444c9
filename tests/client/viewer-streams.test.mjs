// Viewer streams (viewer-streams.md): delta frames for native spectators, checked with an RFC 6902
// library from npm (fast-json-patch); the spectator delay; the read-only HTTP API with ETags and
// Server-Sent Events (the npm `eventsource` client and `curl -N`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import WebSocket from "ws";
import jsonpatch from "fast-json-patch";
import { EventSource } from "eventsource";
import { startServer, observer, overlay, sendEvent, once, sleep, waitFor, uniqueCode, referenceMatch } from "./lib/server.mjs";

const { events, logon: logonFields } = referenceMatch();

/** Sends events [from, to) of the reference match (all of it by default), a few at a time. */
async function replay(socket, code, from = 0, to = events.length) {
  for (let i = from; i < to; i++) {
    const { timestamp, ...event } = events[i];
    socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
    if (i % 4 === 3) await sleep(2);
  }
}

/** A spectator that records every message and when it came. */
async function spectator(server, code, { delta = false, name = "Viewer" } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push({ ...JSON.parse(String(d)), at: Date.now() }));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: name, delta } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined"), 3000, "SpectatorJoined");
  ws.joined = ws.messages.find((m) => m.type === "SpectatorJoined").data;
  return ws;
}

/** Rebuilds a delta spectator's states by seq; every delta must apply on top of the state before. */
function rebuild(messages) {
  const states = new Map();
  let doc;
  let seq;
  let fulls = 0;
  for (const m of messages) {
    if (m.type === "GameData") {
      doc = structuredClone(m.data.data);
      seq = m.data.seq;
      fulls++;
      states.set(seq, structuredClone(doc));
    } else if (m.type === "GameDataDelta") {
      assert.equal(m.data.base_seq, seq, `delta ${m.data.seq} applies to ${m.data.base_seq}, the client is at ${seq}`);
      assert.equal(m.data.seq, m.data.base_seq + 1);
      doc = jsonpatch.applyPatch(doc, m.data.patch, true, false).newDocument;
      seq = m.data.seq;
      states.set(seq, structuredClone(doc));
    }
  }
  return { states, fulls };
}

function fullStates(messages) {
  const states = new Map();
  for (const m of messages) if (m.type === "GameData") states.set(m.data.seq, m.data.data);
  return states;
}

/** Parses Server-Sent Events text into { event, id, data } records. */
function parseSse(text) {
  return text
    .split("\n\n")
    .filter((block) => block.trim() && !block.startsWith(":") && !block.startsWith("retry"))
    .map((block) => {
      const rec = {};
      for (const line of block.split("\n")) {
        const i = line.indexOf(": ");
        if (i > 0) rec[line.slice(0, i)] = line.slice(i + 2);
      }
      return rec;
    });
}

test("the whole reference match: a delta spectator, an EventSource client and curl -N rebuild every state a full spectator got", async () => {
  const server = await startServer({ shards: 2, env: { BROADCAST_INTERVAL_MS: "10" } });
  const children = [];
  try {
    const code = uniqueCode("DL");
    const obs = await observer(server, logonFields(code));
    assert.equal(obs.ack.value, true);
    const full = await spectator(server, code, { name: "Full" });
    const delta = await spectator(server, code, { delta: true, name: "Delta" });
    assert.equal(delta.joined.delta, true);
    assert.equal(delta.joined.delay_ms, 0);
    const view = await overlay(server, code);

    // An EventSource client (the npm `eventsource` package) and curl -N on the REST port.
    const streamUrl = `${server.rest}/matches/${code.toLowerCase()}/stream`;
    const es = new EventSource(streamUrl);
    const sse = { states: new Map(), doc: null, seq: null, ended: false, fulls: 0 };
    const opened = new Promise((r) => es.addEventListener("open", r));
    es.addEventListener("snapshot", (e) => {
      sse.doc = JSON.parse(e.data);
      sse.seq = Number(e.lastEventId);
      sse.fulls++;
      sse.states.set(sse.seq, structuredClone(sse.doc));
    });
    es.addEventListener("delta", (e) => {
      const d = JSON.parse(e.data);
      assert.equal(d.base_seq, sse.seq, "an SSE delta applies to the state before it");
      assert.equal(Number(e.lastEventId), d.seq);
      sse.doc = jsonpatch.applyPatch(sse.doc, d.patch, true, false).newDocument;
      sse.seq = d.seq;
      sse.states.set(sse.seq, structuredClone(sse.doc));
    });
    es.addEventListener("end", () => {
      sse.ended = true;
      es.close();
    });
    await opened;
    const curl = spawn("curl", ["-sN", "--max-time", "60", streamUrl], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(curl);
    let curlOut = "";
    curl.stdout.on("data", (d) => (curlOut += d));
    const curlDone = new Promise((r) => curl.on("exit", r));
    await waitFor(() => curlOut.includes("event: snapshot"), 3000, "curl's first snapshot");

    await replay(obs.socket, code);
    await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 30000, "game end at the overlay");
    await waitFor(() => full.messages.some((m) => m.type === "SpectatorLeft"), 10000, "room_closed");
    await waitFor(() => sse.ended, 10000, "the stream's end event");
    await curlDone;

    const fullByseq = fullStates(full.messages);
    const { states: deltaBySeq, fulls } = rebuild(delta.messages);
    assert.ok(fullByseq.size > 100, `full spectator states: ${fullByseq.size}`);
    let compared = 0;
    for (const [seq, state] of deltaBySeq) {
      if (!fullByseq.has(seq)) continue;
      assert.deepEqual(state, fullByseq.get(seq), `seq ${seq}`);
      compared++;
    }
    assert.ok(compared > 100, `states compared: ${compared}`);
    const deltas = delta.messages.filter((m) => m.type === "GameDataDelta").length;
    assert.ok(deltas > fulls * 10, `deltas ${deltas}, full states ${fulls}`);
    // The last state of all three is the game end the overlays got.
    const lastSeq = Math.max(...fullByseq.keys());
    assert.equal(fullByseq.get(lastSeq).roundPhase, "game_end");
    assert.deepEqual(deltaBySeq.get(lastSeq), fullByseq.get(lastSeq));
    assert.deepEqual(sse.states.get(lastSeq), fullByseq.get(lastSeq));
    for (const [seq, state] of sse.states) if (fullByseq.has(seq)) assert.deepEqual(state, fullByseq.get(seq), `SSE seq ${seq}`);
    // curl saw the same stream: it starts with a snapshot, then deltas, and ends with `end`.
    const records = parseSse(curlOut);
    assert.equal(records[0].event, "snapshot");
    assert.equal(records.at(-1).event, "end");
    let doc = JSON.parse(records[0].data);
    let seq = Number(records[0].id);
    for (const r of records.slice(1, -1)) {
      const d = JSON.parse(r.data);
      if (r.event === "snapshot") doc = d;
      else {
        assert.equal(d.base_seq, seq);
        doc = jsonpatch.applyPatch(doc, d.patch, true, false).newDocument;
      }
      seq = Number(r.id);
    }
    assert.equal(seq, lastSeq);
    assert.deepEqual(doc, fullByseq.get(lastSeq));
    // No stripped field ever appears in a patch.
    for (const m of delta.messages.filter((m) => m.type === "GameDataDelta")) {
      for (const op of m.data.patch) assert.ok(!/groupSecret/.test(op.path), op.path);
    }
    // What the delta spectator cost on the wire (permessage-deflate on both).
    const bytesFull = full._socket.bytesRead;
    const bytesDelta = delta._socket.bytesRead;
    console.log(`# wire bytes: full ${bytesFull}, delta ${bytesDelta} (${((100 * bytesDelta) / bytesFull).toFixed(1)} %) over ${fullByseq.size} states`);
    assert.ok(bytesDelta < bytesFull / 3, `delta ${bytesDelta} vs full ${bytesFull}`);
    full.close();
    delta.close();
    view.socket.close();
    obs.socket.close();
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill();
    await server.stop();
  }
});

test("a delta spectator that stalls and resumes keeps applying; Resync answers with a full state", async () => {
  const server = await startServer({ shards: 2, env: { BROADCAST_INTERVAL_MS: "10" } });
  try {
    const code = uniqueCode("ST");
    const obs = await observer(server, logonFields(code));
    const ws = await spectator(server, code, { delta: true });
    await replay(obs.socket, code, 0, 600);
    ws._socket.pause(); // the reader stalls while the match goes on
    await replay(obs.socket, code, 600, 1200);
    await sleep(1000);
    ws._socket.resume();
    await sleep(300);
    const before = ws.messages.filter((m) => m.type === "GameData").length;
    ws.send(JSON.stringify({ type: "Resync" }));
    await waitFor(() => ws.messages.filter((m) => m.type === "GameData").length > before, 3000, "the full state after Resync");
    await replay(obs.socket, code, 1200);
    await waitFor(() => ws.messages.some((m) => m.type === "SpectatorLeft"), 30000, "room_closed");
    const { states, fulls } = rebuild(ws.messages); // asserts every delta applies
    assert.ok(fulls >= 2, `full states ${fulls}`);
    const last = ws.messages.filter((m) => m.type === "GameData" || m.type === "GameDataDelta").at(-1);
    assert.equal(states.get(last.data.seq).roundPhase, "game_end");
    // Resync is rate-limited: a burst of them gets a few full states and then RATE_LIMITED.
    const fullsBefore = ws.messages.filter((m) => m.type === "GameData").length;
    for (let i = 0; i < 20; i++) ws.send(JSON.stringify({ type: "Resync" }));
    await waitFor(() => ws.messages.some((m) => m.type === "Error" && m.data.error_code === "RATE_LIMITED"), 3000, "RATE_LIMITED");
    await sleep(200);
    const granted = ws.messages.filter((m) => m.type === "GameData").length - fullsBefore;
    assert.ok(granted <= 4, `full states for 20 Resyncs: ${granted}`);
    // Resync outside a room is an error, not a crash.
    const idle = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`);
    await once(idle, "open");
    idle.send(JSON.stringify({ type: "Resync" }));
    const reply = await once(idle, "message");
    assert.equal(JSON.parse(String(reply)).data.error_code, "INVALID_INPUT");
    idle.close();
    ws.close();
    obs.socket.close();
  } finally {
    await server.stop();
  }
});

test("SPECTATOR_DELAY_MS=2000: states reach spectators 2-2.5 s after the overlays, presence at once, late joiners see the past", async () => {
  const server = await startServer({ shards: 2, env: { SPECTATOR_DELAY_MS: "2000" } });
  try {
    const code = uniqueCode("DY");
    const obs = await observer(server, logonFields(code));
    // Public viewers know the match by its public code only (see the anti-ghosting tests).
    const pub = obs.ack.publicCode;
    assert.match(pub, /^PUB-[0-9A-F]{24}$/);
    const view = await overlay(server, code);
    const seenByOverlay = new Map();
    view.socket.on("match_data", (d) => {
      const t = JSON.parse(d).matchType;
      if (!seenByOverlay.has(t)) seenByOverlay.set(t, Date.now());
    });
    await sleep(2200); // the match's first state is public
    const ws = await spectator(server, pub, { delta: true });
    assert.equal(ws.joined.delay_ms, 2000);
    const modes = ["m1", "m2", "m3", "m4", "m5"];
    for (const m of modes) {
      sendEvent(obs.socket, code, "game_mode", m);
      await sleep(300);
    }
    // A spectator joining now sees the state of two seconds ago, not m5.
    const late = await spectator(server, pub, { name: "Late" });
    await waitFor(() => late.messages.some((m) => m.type === "GameData"), 3000, "the late joiner's state");
    assert.notEqual(late.messages.find((m) => m.type === "GameData").data.data.matchType, "m5");
    // Presence is not delayed: the first spectator hears of the late one at once.
    await waitFor(() => ws.messages.some((m) => m.type === "NewSpectatorJoined"), 1000, "presence at once");
    // The first HTTP answer is delayed too.
    const early = await (await fetch(`${server.rest}/matches/${pub}`)).json();
    assert.notEqual(early.matchType, "m5");
    await waitFor(() => {
      const { states } = rebuild(ws.messages);
      return [...states.values()].some((s) => s.matchType === "m5");
    }, 5000, "m5 at the spectator");
    const { states } = rebuild(ws.messages);
    const seqAt = new Map();
    for (const m of ws.messages) {
      if (m.type !== "GameData" && m.type !== "GameDataDelta") continue;
      const t = states.get(m.data.seq).matchType;
      if (!seqAt.has(t)) seqAt.set(t, m.at);
    }
    for (const m of modes) {
      assert.ok(seenByOverlay.has(m), `overlay saw ${m}`);
      const lag = seqAt.get(m) - seenByOverlay.get(m);
      assert.ok(lag >= 1950 && lag < 2500, `${m}: spectator ${lag} ms after the overlay`);
    }
    const now = await (await fetch(`${server.rest}/matches/${pub}`)).json();
    assert.equal(now.matchType, "m5");
    // The game ends: the overlays get the final state at once; spectators still get the last two
    // seconds — the final state — and only then room_closed.
    sendEvent(obs.socket, code, "round_info", { roundNumber: 1, roundPhase: "game_end" });
    await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 3000, "game end at the overlay");
    const endedAt = Date.now();
    await waitFor(() => ws.messages.some((m) => m.type === "SpectatorLeft"), 4000, "room_closed");
    const closed = ws.messages.find((m) => m.type === "SpectatorLeft");
    assert.equal(closed.data.reason, "room_closed");
    assert.ok(closed.at - endedAt >= 1900, `room_closed ${closed.at - endedAt} ms after the game end`);
    const { states: endStates } = rebuild(ws.messages);
    const lastState = [...endStates.entries()].sort((a, b) => a[0] - b[0]).at(-1)[1];
    assert.equal(lastState.roundPhase, "game_end", "the final state came before room_closed");
    late.close();
    ws.close();
    view.socket.close();
    obs.socket.close();
  } finally {
    await server.stop();
  }
});

test("GET /matches/{code}: the snapshot with its seq as ETag, 304 when unchanged, 404 for no match; Last-Event-ID resumes with deltas", async () => {
  const server = await startServer({ shards: 2, env: { BROADCAST_INTERVAL_MS: "20" } });
  try {
    const code = uniqueCode("HT");
    const missing = await fetch(`${server.rest}/matches/NOPE${code}`);
    assert.equal(missing.status, 404);
    assert.match((await missing.json()).error, /No live match/);
    assert.equal((await fetch(`${server.rest}/matches/NOPE${code}/stream`)).status, 404);
    const obs = await observer(server, logonFields(code));
    sendEvent(obs.socket, code, "game_mode", "first");
    await sleep(200);
    const a = await fetch(`${server.rest}/matches/${code}`);
    assert.equal(a.status, 200);
    assert.equal(a.headers.get("access-control-allow-origin"), "*");
    const etag = a.headers.get("etag");
    assert.match(etag, /^"\d+"$/);
    const body = await a.json();
    assert.equal(body.groupCode, code);
    assert.equal(body.matchType, "first");
    assert.equal(body.groupSecret, undefined);
    const b = await fetch(`${server.rest}/matches/${code}`, { headers: { "If-None-Match": etag } });
    assert.equal(b.status, 304);
    sendEvent(obs.socket, code, "game_mode", "second");
    await sleep(200);
    const c = await fetch(`${server.rest}/matches/${code}`, { headers: { "If-None-Match": etag } });
    assert.equal(c.status, 200);
    assert.notEqual(c.headers.get("etag"), etag);

    // A stream that went away and comes back with its Last-Event-ID gets the deltas after it:
    // no snapshot, no gap.
    const ctl0 = new AbortController();
    const res0 = await fetch(`${server.rest}/matches/${code}/stream`, { signal: ctl0.signal });
    const r0 = res0.body.getReader();
    let text0 = "";
    while (!parseSse(text0).length) text0 += new TextDecoder().decode((await r0.read()).value);
    const snap0 = parseSse(text0)[0];
    assert.equal(snap0.event, "snapshot");
    const from = Number(snap0.id);
    const body0 = JSON.parse(snap0.data);
    ctl0.abort();
    for (const m of ["third", "fourth"]) {
      sendEvent(obs.socket, code, "game_mode", m);
      await sleep(100);
    }
    const ctl = new AbortController();
    const res = await fetch(`${server.rest}/matches/${code}/stream`, { headers: { "Last-Event-ID": String(from) }, signal: ctl.signal });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /^text\/event-stream/);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    let text = "";
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    const reading = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += dec.decode(value);
      }
    })().catch(() => {});
    await waitFor(() => parseSse(text).length >= 1, 3000, "the resumed events");
    const recs = parseSse(text);
    assert.equal(recs[0].event, "delta", "resumed with a delta");
    assert.equal(JSON.parse(recs[0].data).base_seq, from);
    let doc = structuredClone(body0);
    let seq = from;
    for (const r of recs) {
      const d = JSON.parse(r.data);
      assert.equal(d.base_seq, seq);
      doc = jsonpatch.applyPatch(doc, d.patch, true, false).newDocument;
      seq = d.seq;
    }
    const current = await (await fetch(`${server.rest}/matches/${code}`)).json();
    assert.deepEqual(doc, current);
    assert.equal(current.matchType, "fourth");
    // Hostile Last-Event-IDs (the largest u64, beyond it, junk) resume with a snapshot.
    for (const id of ["18446744073709551615", "18446744073709551616", "-1", "x".repeat(500)]) {
      const r = await fetch(`${server.rest}/matches/${code}/stream`, { headers: { "Last-Event-ID": id } });
      assert.equal(r.status, 200, id);
      const rd = r.body.getReader();
      let t = "";
      while (!parseSse(t).length) t += dec.decode((await rd.read()).value);
      assert.equal(parseSse(t)[0].event, "snapshot", id);
      await rd.cancel();
    }
    // An unknown seq resumes with a snapshot.
    const res2 = await fetch(`${server.rest}/matches/${code}/stream`, { headers: { "Last-Event-ID": "999999" } });
    const r2 = res2.body.getReader();
    const first = dec.decode((await r2.read()).value);
    const firstRecs = parseSse(first.includes("event:") ? first : first + dec.decode((await r2.read()).value));
    assert.equal(firstRecs[0].event, "snapshot");
    await r2.cancel();
    ctl.abort();
    await reading;
    obs.socket.close();
  } finally {
    await server.stop();
  }
});

test("GET /matches is for the ADMIN_TOKEN's bearer only (404 without a token)", async () => {
  const plain = await startServer({ shards: 1 });
  try {
    assert.equal((await fetch(`${plain.rest}/matches`)).status, 404);
  } finally {
    await plain.stop();
  }
  const server = await startServer({ shards: 2, env: { ADMIN_TOKEN: "s3cret" } });
  try {
    const code = uniqueCode("LS");
    const obs = await observer(server, logonFields(code));
    const view = await overlay(server, code);
    const ws = await spectator(server, code);
    assert.equal((await fetch(`${server.rest}/matches`)).status, 401);
    const res = await fetch(`${server.rest}/matches`, { headers: { Authorization: "Bearer s3cret" } });
    assert.equal(res.status, 200);
    const { matches } = await res.json();
    const m = matches.find((x) => x.code === code);
    assert.ok(m, JSON.stringify(matches));
    assert.deepEqual([m.overlays, m.spectators, m.streams, m.viewers], [1, 1, 0, 2]);
    assert.ok(Array.isArray(m.score) && "phase" in m);
    ws.close();
    view.socket.close();
    obs.socket.close();
  } finally {
    await server.stop();
  }
});
