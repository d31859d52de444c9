// Helpers the cluster tests share: the kit's reference match sent to a node, its final state on
// one uninterrupted node, and a node's cluster metrics.
import { startServer, observer, overlay, waitFor, uniqueCode, referenceMatch, sleep } from "./server.mjs";

export const { events, logon, header: refHeader } = referenceMatch();

/** Sends events [from, to) of the reference match, about one per millisecond. */
export async function send(socket, code, from = 0, to = events.length) {
  for (let i = from; i < to; i++) {
    const { timestamp, ...event } = events[i];
    socket.emit("obs_data", JSON.stringify({ ...event, groupCode: code }));
    if (i % 10 === 9) await sleep(10);
  }
}

export async function metricsText(node) {
  return (await fetch(`${node.rest}/metrics`)).text();
}

/** A metric's value on a node (the first sample whose line starts with `name`). */
export async function clusterMetric(node, name) {
  const line = (await metricsText(node)).split("\n").find((l) => l.startsWith(`${name}{`));
  return line === undefined ? undefined : Number(line.split(" ").at(-1));
}

/** Two runs differ in their group code and in the server's receipt times of the events. */
export const withoutCode = (snapshot) => ({ ...snapshot, groupCode: "<code>", agentSelectStartTime: "<receipt time>" });

/** The final state of the reference match on one node, never interrupted. */
export async function uninterrupted() {
  const server = await startServer({ shards: 2 });
  try {
    const code = uniqueCode("REF");
    const view = await overlay(server, code);
    const obs = await observer(server, logon(code));
    await send(obs.socket, code);
    await waitFor(() => view.received.at(-1)?.roundPhase === "game_end", 30000, "the reference game end");
    obs.socket.close();
    view.socket.close();
    return view.received.at(-1);
  } finally {
    await server.stop();
  }
}

/**
 * An observer behind a load balancer: logged on to a node, it sends the reference match's
 * events; when its node closes it, it logs on again with its secret to the next node `up()`
 * offers that accepts (refusals — the match still live elsewhere — are retried), and the
 * events it is given meanwhile wait, in order, as socket.io-client buffers them, and go out
 * after the logon.
 */
export class FollowingObserver {
  /** `canSend(node)`: whether events may go to that node now (default: always). */
  constructor(up, code, canSend = () => true) {
    this.canSend = canSend;
    this.up = up;
    this.code = code;
    this.socket = null;
    this.secret = "";
    this.waiting = [];
    this.logons = [];
    this.closed = false;
    this.turn = 0;
    this.unsent = 0;
    this.dropped = 0;
  }

  async start(node) {
    const obs = await observer(node, logon(this.code));
    if (obs.ack.value !== true) throw new Error(`logon refused: ${obs.ack.reason}`);
    this.secret = obs.ack.reason;
    this.attach(obs.socket, node);
  }

  attach(socket, node) {
    this.socket = socket;
    this.node = node;
    // What the client never wrote to the wire when its connection closed is the client's to
    // send again: it goes first after the next logon. What it did write, the server must handle.
    // Two places hold it: engine.io-client's write buffer (left readable on `close` for this),
    // and what `ws` dropped — once the server's close frame is in, `ws` is CLOSING and `send`
    // discards data without a word (no callback given), while engine.io-client still counts the
    // packet as written ("fake drain") and removes it from its buffer.
    const engine = socket.io.engine;
    const dropped = [];
    const watch = (transport) => {
      const ws = transport?.ws;
      if (!ws || typeof ws.send !== "function") return;
      const send = ws.send.bind(ws);
      ws.send = (data, ...rest) => {
        if (ws.readyState !== 1) dropped.push(data);
        return send(data, ...rest);
      };
    };
    watch(engine.transport);
    engine.on("upgrade", watch);
    engine.on("close", () => {
      const unsent = [];
      const packets = [...dropped, ...(engine.writeBuffer ?? []).map((p) => (p.type === "message" ? `4${p.data}` : ""))];
      for (const data of packets) {
        if (typeof data !== "string" || !data.startsWith("42")) continue;
        const [name, text] = JSON.parse(data.slice(2));
        if (name === "obs_data") unsent.push(text);
      }
      this.dropped += dropped.length;
      this.unsent += unsent.length;
      this.waiting.unshift(...unsent);
    });
    socket.on("disconnect", () => {
      if (this.socket !== socket || this.closed) return;
      this.socket = null;
      this.again();
    });
    this.flush();
  }

  async again() {
    while (!this.closed && !(this.finished && this.waiting.length === 0)) {
      const nodes = this.up();
      const node = nodes[this.turn++ % Math.max(1, nodes.length)];
      if (node) {
        try {
          const obs = await observer(node, logon(this.code, this.secret), {});
          this.logons.push({ node: node.id, ok: obs.ack.value === true, reason: obs.ack.reason });
          if (obs.ack.value === true) {
            this.attach(obs.socket, node);
            return;
          }
          obs.socket.close();
        } catch (e) {
          this.logons.push({ node: node.id, ok: false, reason: String(e.message ?? e) });
        }
      }
      await sleep(100);
    }
  }

  /** Sends event `i` of the reference match now, or after the next logon. */
  emit(i) {
    const { timestamp, ...event } = events[i];
    const text = JSON.stringify({ ...event, groupCode: this.code });
    // (The game's last event ends the match: the server disconnects the observer then.)
    if (i === events.length - 1) this.finished = true;
    this.waiting.push(text);
    this.flush();
  }

  /** Sends what waits, if the observer is logged on to a node it may send to. */
  flush() {
    if (!this.socket?.connected || !this.canSend(this.node)) return;
    for (const e of this.waiting.splice(0)) this.socket.emit("obs_data", e);
  }

  /** Leaves its node (as an observer whose connection dropped): it logs on again. */
  move() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    socket.close();
    this.again();
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}

/**
 * An overlay behind a load balancer: when its node closes it, it logs on again to the next node
 * `up()` offers. Keeps every state with its arrival time.
 */
export class FollowingOverlay {
  constructor(up, code, start) {
    this.up = up;
    this.code = code;
    this.received = [];
    this.arrivals = [];
    this.moves = 0;
    this.closed = false;
    this.turn = start;
  }

  async start() {
    await this.again();
  }

  async again() {
    while (!this.closed) {
      const nodes = this.up();
      const node = nodes[this.turn++ % Math.max(1, nodes.length)];
      if (node) {
        try {
          const v = await overlay(node, this.code);
          this.socket = v.socket;
          v.socket.on("match_data", (d) => {
            this.received.push(JSON.parse(d));
            this.arrivals.push(Date.now());
          });
          v.socket.on("disconnect", () => {
            if (this.closed) return;
            this.moves++;
            this.again();
          });
          return;
        } catch {
          // that node is going away: the next one
        }
      }
      await sleep(100);
    }
  }

  /** The longest wait between two states within [from, to] (ms since the epoch). */
  gapWithin(from, to) {
    let gap = 0;
    let last = from;
    for (const t of this.arrivals) {
      if (t < from) continue;
      if (t > to) break;
      gap = Math.max(gap, t - last);
      last = t;
    }
    return Math.max(gap, to - last);
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }
}

/** The p-th percentile (0–100) of numbers. */
export function percentile(values, p) {
  const sorted = [...values].sort((x, y) => x - y);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * A spectator (`/ws`, JSON) behind a load balancer: when its connection closes it joins again on
 * the next node `up()` offers. Each connection checks that the `seq` of the states it gets
 * never goes back (a state of an older ownership epoch after one of a newer; seqs go on from
 * `epoch << 32`); `violations` lists any.
 */
export class FollowingSpectator {
  constructor(up, code, start, WebSocket) {
    this.up = up;
    this.code = code;
    this.turn = start;
    this.WebSocket = WebSocket;
    this.states = [];
    this.violations = [];
    this.moves = 0;
    this.closed = false;
    this.history = [];
    this.t0 = Date.now();
  }

  async start() {
    await this.again();
  }

  note(what) {
    this.history.push(`${what}@${Date.now() - this.t0}ms#${this.states.length}`);
  }

  async again() {
    while (!this.closed) {
      const nodes = this.up();
      const node = nodes[this.turn++ % Math.max(1, nodes.length)];
      if (node && (await this.join(node))) return;
      await sleep(200);
    }
  }

  join(node) {
    return new Promise((resolve) => {
      const ws = new this.WebSocket(`ws://127.0.0.1:${node.ports.broadcast}/ws`);
      let highest = -1;
      let answered = false;
      const done = (ok) => {
        if (answered) return;
        answered = true;
        if (!ok) ws.terminate();
        resolve(ok);
      };
      ws.on("error", (e) => {
        if (!answered) this.note(`${node.id}:error(${e.code ?? e.message})`);
        done(false);
      });
      // A join is answered (joined or failed) within the cluster's forward timeout; one that is
      // not after 10 s is noted (a server defect) and given up.
      const unanswered = setTimeout(() => {
        if (!answered) this.note(`${node.id}:no answer in 10 s`);
        done(false);
      }, 10000);
      ws.on("open", () => {
        ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: this.code, spectator_name: "watcher" } }));
      });
      ws.on("close", () => clearTimeout(unanswered));
      ws.on("message", (d) => {
        const m = JSON.parse(String(d));
        if (m.type === "SpectatorJoinFailed") {
          this.note(`${node.id}:failed(${m.data?.error_code ?? m.data?.reason ?? ""})`);
          return done(false);
        }
        if (m.type === "SpectatorJoined") {
          this.ws = ws;
          this.node = node.id;
          this.note(`${node.id}:joined`);
          done(true);
        }
        if (m.type === "GameData") {
          const seq = m.data.seq;
          if (seq < highest) this.violations.push(`node ${node.id}: seq ${seq} (epoch ${Math.floor(seq / 2 ** 32)}) after ${highest} (epoch ${Math.floor(highest / 2 ** 32)})`);
          highest = Math.max(highest, seq);
          this.lastSeq = seq;
          this.states.push(m.data.data);
        }
      });
      ws.on("close", () => {
        if (!answered) {
          this.note(`${node.id}:closed before an answer`);
          return done(false);
        }
        if (this.closed || this.ws !== ws) return;
        this.note(`${node.id}:closed`);
        this.moves++;
        this.again();
      });
    });
  }

  close() {
    this.closed = true;
    this.ws?.close();
  }
}

/** A seeded pseudo-random number generator (mulberry32): the same schedule for the same seed. */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
