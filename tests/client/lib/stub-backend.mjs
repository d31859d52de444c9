// A stub of the Spectra backend, supporter check and stats backend: a real HTTP server on
// loopback that records every call and answers per route (status/body, delay, or never).
import http from "node:http";

export async function startStub() {
  const calls = [];
  const routes = [];
  const hanging = new Set();
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const call = { method: req.method, path: req.url, headers: req.headers, body, at: Date.now() };
      calls.push(call);
      const route = routes.find((r) => r.method === req.method && r.path.test(req.url));
      if (!route) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end('{"error":"no route"}');
        return;
      }
      if (route.hang) {
        hanging.add(res);
        return;
      }
      setTimeout(() => {
        res.writeHead(route.status ?? 200, { "content-type": "application/json" });
        res.end(typeof route.body === "string" ? route.body : JSON.stringify(route.body ?? {}));
      }, route.delayMs ?? 0);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    calls,
    route(method, path, answer) {
      routes.unshift({ method, path, ...answer });
    },
    find(method, path) {
      return calls.filter((c) => c.method === method && (path instanceof RegExp ? path.test(c.path) : c.path === path));
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections?.();
      await new Promise((r) => server.close(r));
    },
  };
}
