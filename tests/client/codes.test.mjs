// Group codes are hostile text (issue "Hardening, second round", defects 1, 2, 3, 6): one rule
// at every door that names a match (overlay logon, spectator join, REST paths and queries), the
// same refusal everywhere, and in cluster mode nothing a client sends reaches the NATS protocol
// as is; an edge takes frames only from a node of its cluster. Real nats-server, real nodes,
// the real socket.io-client and ws; the forged NATS traffic comes from a raw NATS connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import WebSocket from "ws";
import { startServer, startNats, startClusterNode, observer, overlay, client, once, sendEvent, waitFor, uniqueCode, sleep } from "./lib/server.mjs";

const REFUSAL = "Invalid group code: use 1 to 64 letters, digits, '-', '_' or '.'.";
/** Codes no door may take: NATS protocol injection, wildcards, whitespace, too long. */
const HOSTILE = [
  "X\r\nPUB t.frames.ANY 2\r\nhi\r\nUNSUB 1\r\n",
  ">",
  "*",
  "A B",
  "A\tB",
  "G".repeat(65),
  "A/B",
];

/** An overlay logon's answer: `{ok}` (logon_success) or `{refused}` (logon_failure). */
async function overlayLogon(node, groupCode) {
  const socket = client(node.broadcast);
  const received = [];
  socket.on("match_data", (d) => received.push(JSON.parse(d)));
  const answer = new Promise((resolve) => {
    socket.once("logon_success", (d) => resolve({ ok: JSON.parse(d) }));
    socket.once("logon_failure", (d) => resolve({ refused: JSON.parse(d) }));
  });
  socket.emit("logon", JSON.stringify({ groupCode }));
  const timeout = sleep(5000).then(() => ({ timeout: true }));
  return { socket, received, ...(await Promise.race([answer, timeout])) };
}

/** A native spectator's join answer. */
async function spectatorJoin(node, code, name = "Viewer") {
  const ws = new WebSocket(`ws://127.0.0.1:${node.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push(JSON.parse(String(d))));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: name } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed"), 5000, "the join answer");
  ws.answer = ws.messages.find((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed");
  return ws;
}

/** Every door refuses `code` with the same words. */
async function assertRefusedEverywhere(node, code) {
  const label = JSON.stringify(code);
  const ov = await overlayLogon(node, code);
  assert.deepEqual(ov.refused, { error: REFUSAL }, `overlay ${label}`);
  ov.socket.close();
  const sp = await spectatorJoin(node, code);
  assert.equal(sp.answer.type, "SpectatorJoinFailed", label);
  assert.deepEqual(sp.answer.data, { reason: REFUSAL, error_code: "INVALID_INPUT" }, label);
  sp.close();
  const enc = encodeURIComponent(code);
  for (const url of [`${node.rest}/matches/${enc}`, `${node.rest}/matches/${enc}/stream`, `${node.rest}/getTeamInfoForCode?groupCode=${enc}`]) {
    const r = await fetch(url);
    assert.equal(r.status, 400, `${url}`);
    assert.deepEqual(await r.json(), { error: REFUSAL }, url);
  }
}

test("one group-code rule at every door: overlays, spectators, /matches, streams and team info refuse the same codes with the same words", async () => {
  const server = await startServer();
  try {
    for (const code of HOSTILE) await assertRefusedEverywhere(server, code);
    // Valid codes still pass every door (no match: the usual answers).
    const code = uniqueCode("OK.code_-");
    const ov = await overlayLogon(server, code);
    assert.equal(ov.ok.groupCode, code);
    ov.socket.close();
    const sp = await spectatorJoin(server, code);
    assert.equal(sp.answer.data.error_code, "ROOM_NOT_FOUND");
    sp.close();
    assert.equal((await fetch(`${server.rest}/matches/${code}`)).status, 404);
    assert.equal((await fetch(`${server.rest}/getTeamInfoForCode?groupCode=${code}`)).status, 404);
  } finally {
    await server.stop();
  }
});

/** A raw NATS connection (the protocol by hand): publishes anything, records what it gets. */
async function natsRaw(url) {
  const { port } = new URL(url);
  const sock = net.connect(Number(port), "127.0.0.1");
  let buf = Buffer.alloc(0);
  const msgs = [];
  let pongs = 0;
  sock.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const end = buf.indexOf("\r\n");
      if (end < 0) return;
      const line = buf.subarray(0, end).toString();
      const parts = line.split(" ");
      if (parts[0] === "MSG" || parts[0] === "HMSG") {
        const total = Number(parts.at(-1));
        const headerLen = parts[0] === "HMSG" ? Number(parts.at(-2)) : 0;
        if (buf.length < end + 2 + total + 2) return;
        const body = buf.subarray(end + 2, end + 2 + total);
        msgs.push({ subject: parts[1], headers: body.subarray(0, headerLen).toString(), payload: Buffer.from(body.subarray(headerLen)) });
        buf = buf.subarray(end + 2 + total + 2);
      } else {
        if (parts[0] === "PING") sock.write("PONG\r\n");
        if (parts[0] === "PONG") pongs++;
        buf = buf.subarray(end + 2);
      }
    }
  });
  await once(sock, "connect");
  sock.write('CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n');
  const flush = async () => {
    const want = pongs + 1;
    sock.write("PING\r\n");
    await waitFor(() => pongs >= want, 3000, "PONG");
  };
  await flush();
  let sid = 0;
  return {
    msgs,
    flush,
    sub: async (subject) => { sock.write(`SUB ${subject} ${++sid}\r\n`); await flush(); },
    pub: async (subject, payload, reply = "", headers = null) => {
      const p = Buffer.from(payload);
      const r = reply ? ` ${reply}` : "";
      if (headers) {
        const h = Buffer.from(`NATS/1.0\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n`);
        sock.write(Buffer.concat([Buffer.from(`HPUB ${subject}${r} ${h.length} ${h.length + p.length}\r\n`), h, p, Buffer.from("\r\n")]));
      } else {
        sock.write(Buffer.concat([Buffer.from(`PUB ${subject}${r} ${p.length}\r\n`), p, Buffer.from("\r\n")]));
      }
      await flush();
    },
    close: () => sock.destroy(),
  };
}

/** A cluster metric of a node (`undefined` when the series is missing). */
async function clusterMetric(node, name) {
  const line = (await (await fetch(`${node.rest}/metrics`)).text()).split("\n").find((l) => l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.split(" ").at(-1));
}

const hex = (code) => Buffer.from(code).toString("hex");

test("cluster: hostile codes on an edge reach no NATS protocol; frames without a node and foreign message kinds are dropped and counted", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const a = await startClusterNode(nats, "ha");
    const b = await startClusterNode(nats, "hb");
    nodes.push(a, b);
    const code = uniqueCode("HC");
    const obs = await observer(a, { groupCode: code });
    assert.equal(obs.ack.value, true, obs.ack.reason);
    const onA = await overlay(a, code);
    const onB = await overlay(b, code);
    const watcher = await natsRaw(nats.url);
    // The origin publishes under the code's token, with its node header.
    await watcher.sub(`t.frames.${hex(code)}`);
    sendEvent(obs.socket, code, "game_mode", "before");
    await waitFor(() => onB.received.at(-1)?.matchType === "before", 5000, "the first state on B");
    await waitFor(() => watcher.msgs.length > 0, 3000, "a frame seen on NATS");
    assert.match(watcher.msgs[0].headers, /Spectra-Node: ha/);
    assert.match(watcher.msgs[0].headers, /Spectra-Epoch: 1/);
    const captured = watcher.msgs[0].payload;

    // The attack of defects 1, 2, 3 and 6, on edge B: every hostile code at every door.
    for (const bad of HOSTILE) await assertRefusedEverywhere(b, bad);

    // B kept its NATS connection and its subscriptions: states still reach B's overlay, a
    // spectator on B still joins A's room (its join travels to A through NATS).
    sendEvent(obs.socket, code, "game_mode", "after");
    for (const v of [onA, onB]) await waitFor(() => v.received.at(-1)?.matchType === "after", 5000, "the next state");
    const sp = await spectatorJoin(b, code);
    assert.equal(sp.answer.type, "SpectatorJoined", JSON.stringify(sp.answer));
    sp.close();
    assert.equal(await clusterMetric(b, "spectra_cluster_connected"), 1);
    assert.doesNotMatch(b.log(), /lost NATS/);

    // A frame without the node header (an old, real frame replayed by someone on NATS) is not
    // shown to B's viewers; it is counted (on A too, which listens for its own room's frames).
    for (const n of [a, b]) assert.equal(await clusterMetric(n, "spectra_cluster_untrusted_dropped_total"), 0);
    const before = onB.received.length;
    await watcher.pub(`t.frames.${hex(code)}`, captured);
    await waitFor(async () => (await clusterMetric(b, "spectra_cluster_untrusted_dropped_total")) === 1, 3000, "the forged frame counted on B");
    // With a node but no epoch: dropped too. With an epoch older than the one the edge has
    // seen (or, on the origin, not newer than its own): dropped as stale — a fenced origin.
    await watcher.pub(`t.frames.${hex(code)}`, captured, "", { "Spectra-Node": "forger" });
    await waitFor(async () => (await clusterMetric(b, "spectra_cluster_untrusted_dropped_total")) === 2, 3000, "the frame without an epoch counted on B");
    await watcher.pub(`t.frames.${hex(code)}`, captured, "", { "Spectra-Node": "forger", "Spectra-Epoch": "0" });
    for (const n of [a, b]) {
      await waitFor(async () => (await clusterMetric(n, "spectra_cluster_stale_frames_dropped_total")) === 1, 3000, "the stale frame counted");
    }
    await sleep(300);
    assert.equal(onB.received.length, before, "a forged frame reached B's overlay");
    assert.equal(onB.received.at(-1).matchType, "after");
    assert.equal(onA.received.at(-1).matchType, "after");
    // On the ingest subject, a message of a kind nodes never forward (a snapshot request for
    // a session), about another code than its subject's, for an invalid code, or without the
    // sending node is dropped, counted.
    const session = { shard: 0, sid: "forged" };
    const node = { "Spectra-Node": "forger" };
    await watcher.pub(`t.ingest.${hex(code)}`, JSON.stringify({ SnapshotRequest: { code, from: session } }), "t.forged.reply", node);
    await watcher.pub(`t.ingest.${hex(code)}`, JSON.stringify({ StreamLeave: { code: `${code}X` } }), "t.forged.reply", node);
    await watcher.pub(`t.ingest.${hex("A B")}`, JSON.stringify({ StreamLeave: { code: "A B" } }), "t.forged.reply", node);
    await watcher.pub(`t.ingest.${hex(code)}`, JSON.stringify({ StreamLeave: { code } }), "t.forged.reply");
    // (Every node listens on the ingest subjects: A and B both count them.)
    for (const n of [a, b]) {
      await waitFor(async () => (await clusterMetric(n, "spectra_cluster_untrusted_dropped_total")) === 6, 3000, "four foreign messages counted");
    }
    // And the match goes on everywhere.
    sendEvent(obs.socket, code, "game_mode", "end");
    for (const v of [onA, onB]) await waitFor(() => v.received.at(-1)?.matchType === "end", 5000, "the last state");
    watcher.close();
    for (const s of [obs.socket, onA.socket, onB.socket]) s.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});
