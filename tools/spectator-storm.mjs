#!/usr/bin/env node
// Join storm: N spectators join one room as fast as the loopback allows; reports the bytes and
// messages all spectators received during the storm (the server's presence traffic) and the
// server's CPU time. Linear growth in N means presence costs O(N × limit), not O(N²).
//
// Usage: node tools/spectator-storm.mjs [--sizes 500,1000,2000] [--shards 2]
// Starts its own server (target/release/spectra-server if built, else target/debug) on free
// loopback ports and stops it by PID. Needs `npm ci` in tests/client.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", "tests", "client", "package.json"));
const WebSocket = require("ws");
const release = path.join(here, "..", "target", "release", "spectra-server");
if (!process.env.SPECTRA_BIN && fs.existsSync(release)) process.env.SPECTRA_BIN = release;
const { startServer, observer } = await import("../tests/client/lib/server.mjs");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const sizes = String(arg("sizes", "500,1000,2000")).split(",").map(Number);
const shards = Number(arg("shards", "2"));

function cpuSeconds(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function storm(n) {
  const server = await startServer({ shards });
  const obs = await observer(server, { groupCode: "STORM" });
  const cpu0 = cpuSeconds(server.child.pid);
  const t0 = Date.now();
  let bytes = 0;
  let messages = 0;
  let joined = 0;
  const sockets = [];
  await new Promise((resolve, reject) => {
    let opened = 0;
    const next = () => {
      while (opened < n && opened - joined < 200) {
        const i = opened++;
        const ws = new WebSocket(`ws://127.0.0.1:${server.ports.broadcast}/ws`, { perMessageDeflate: false });
        ws.on("open", () =>
          ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: "STORM", spectator_name: `Viewer${i}` } })),
        );
        ws.on("message", (d) => {
          bytes += d.length;
          messages++;
          if (d.toString("utf8", 0, 26) === '{"type":"SpectatorJoined",') {
            joined++;
            if (joined === n) resolve();
            else next();
          }
        });
        ws.on("error", reject);
        sockets.push(ws);
      }
    };
    next();
  });
  await new Promise((r) => setTimeout(r, 1000)); // let trailing presence messages arrive
  const result = {
    spectators: n,
    seconds: (Date.now() - t0) / 1000,
    bytesReceived: bytes,
    messages,
    bytesPerSpectator: Math.round(bytes / n),
    serverCpuSeconds: Number((cpuSeconds(server.child.pid) - cpu0).toFixed(2)),
  };
  for (const s of sockets) s.terminate();
  obs.socket.close();
  await server.stop();
  return result;
}

const results = [];
for (const n of sizes) results.push(await storm(n));
console.log(JSON.stringify(results, null, 1));
if (results.length > 1) {
  const a = results[0];
  const b = results.at(-1);
  console.log(`N ×${(b.spectators / a.spectators).toFixed(1)} → bytes ×${(b.bytesReceived / a.bytesReceived).toFixed(2)}, messages ×${(b.messages / a.messages).toFixed(2)}`);
}
