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
