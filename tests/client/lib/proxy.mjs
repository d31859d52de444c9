// A TCP proxy the test controls, between a node and its nats-server (loopback only): `cut()`
// closes every connection through it and refuses new ones (the node sees its link to NATS go
// down while it stays up itself); `heal()` lets connections through again. What a partition
// harness needs and nothing more.
import net from "node:net";

/** Starts a proxy on a free loopback port in front of `127.0.0.1:targetPort`. */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = [client, upstream];
    for (const s of pair) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        for (const other of pair) other.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    get open() {
      return open;
    },
    /** Closes every connection through the proxy and refuses new ones until `heal()`. */
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    heal() {
      open = true;
    },
    async stop() {
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
