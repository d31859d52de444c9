// Headless Chromium (the engine of OBS browser sources, where overlays run) as an overlay: it
// negotiates permessage-deflate, logs on over Engine.IO/Socket.IO by hand and must inflate every
// `match_data` frame, message after message on one connection, to the states a socket.io-client
// overlay gets. A native spectator (`/ws`) in the same page checks the spectator frames the same
// way. (Chromium keeps one inflater per connection and fails it, 1002, when a message ends with a
// final DEFLATE block: one-shot compressors such as libdeflate cannot be used for these frames.)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import { chromium, runChromium } from "./lib/chromium.mjs";
import { startServer, observer, overlay, sendEvent, waitFor, uniqueCode } from "./lib/server.mjs";


let server;
let code;
let obs;
let view;

before(async () => {
  server = await startServer({ shards: 2, env: { BROADCAST_INTERVAL_MS: "10" } });
  code = uniqueCode("PMD");
  view = await overlay(server, code);
  obs = await observer(server, { groupCode: code });
  sendEvent(obs.socket, code, "game_mode", "bomb");
  await waitFor(() => view.received.length > 0, 5000, "a first state");
});

after(async () => {
  obs.socket.close();
  view.socket.close();
  await server.stop();
});

/** The page: an overlay and a spectator that report what they received into the DOM. Its load
 * event (after which --dump-dom prints the DOM) waits for an image the test serves late. */
function page(port, groupCode, waitUrl) {
  const script = `
    const out = { overlay: [], spectator: [], extensions: {}, errors: [] };
    const show = () => { document.getElementById("out").textContent = JSON.stringify(out); };
    const io = new WebSocket("ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket");
    io.onopen = () => { out.extensions.overlay = io.extensions; };
    io.onerror = () => { out.errors.push("overlay socket error"); show(); };
    io.onclose = (e) => { out.errors.push("overlay closed " + e.code + " " + e.reason + " after " + out.overlay.length); show(); };
    io.onmessage = (m) => {
      const t = String(m.data);
      if (t.startsWith("0{")) io.send("40");
      else if (t.startsWith("40")) io.send('42' + JSON.stringify(["logon", JSON.stringify({ groupCode: "${groupCode}" })]));
      else if (t === "2") io.send("3");
      else if (t.startsWith("42")) {
        const [name, arg] = JSON.parse(t.slice(2));
        if (name === "match_data") out.overlay.push(JSON.parse(arg));
      }
      show();
    };
    const ws = new WebSocket("ws://127.0.0.1:${port}/ws");
    ws.onopen = () => {
      out.extensions.spectator = ws.extensions;
      ws.send(JSON.stringify({ type: "JoinAsSpectator", data: { game_name: "valorant", room_code: "${groupCode}", spectator_name: "Chromium" } }));
    };
    ws.onerror = () => { out.errors.push("spectator socket error"); show(); };
    ws.onclose = (e) => { out.errors.push("spectator closed " + e.code + " " + e.reason + " after " + out.spectator.length); show(); };
    ws.onmessage = (m) => {
      const msg = JSON.parse(String(m.data));
      if (msg.type === "GameData") out.spectator.push(msg.data.data);
      show();
    };
  `;
  return `<html><body><pre id="out">{}</pre><script>${script}</script><img src="${waitUrl}"></body></html>`;
}

test("headless Chromium inflates every deflated match_data and spectator frame, message after message", async () => {
  assert.ok(fs.existsSync(chromium), `Chromium not found at ${chromium} (Debian package chromium; .ci/run installs it)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-chromium-"));
  // Serves the page from loopback (a page from elsewhere may not open loopback sockets) and
  // answers its image after 3 s: the page listens that long.
  const hold = http.createServer((req, res) => {
    if (req.url === "/wait") return setTimeout(() => res.writeHead(204).end(), 3000);
    const at = `http://127.0.0.1:${hold.address().port}`;
    res.writeHead(200, { "content-type": "text/html" }).end(page(server.ports.broadcast, code, `${at}/wait`));
  });
  await new Promise((r) => hold.listen(0, "127.0.0.1", r));
  // States that change while the page listens: several compressed frames in a row on one
  // connection, the later ones large enough for more than one DEFLATE block.
  let n = 0;
  const names = [];
  const feed = setInterval(() => {
    n++;
    if (n % 3 === 0 && names.length < 10) {
      const name = `Player${names.length}-${"x".repeat(20)}`;
      names.push(name);
      sendEvent(obs.socket, code, "roster", {
        name, tagline: "T", startTeam: names.length % 2, agentInternal: "", playerId: `id-${names.length}`,
        position: names.length, locked: false, rank: 10,
      });
    } else {
      sendEvent(obs.socket, code, "game_mode", n % 2 ? "swift" : "bomb");
    }
  }, 20);
  let result;
  try {
    result = await runChromium(dir, ["--dump-dom"], `http://127.0.0.1:${hold.address().port}/`);
  } finally {
    clearInterval(feed);
    hold.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  assert.equal(result.status, 0, result.err);
  const m = result.out.match(/<pre id="out">([\s\S]*?)<\/pre>/);
  assert.ok(m, result.out);
  const got = JSON.parse(m[1].replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"'));
  assert.deepEqual(got.errors, [], JSON.stringify({ ...got, overlay: got.overlay.length, spectator: got.spectator.length }));
  // Compression was on: without it the test would prove nothing about deflated frames.
  assert.match(got.extensions.overlay, /permessage-deflate/);
  assert.match(got.extensions.spectator, /permessage-deflate/);
  assert.ok(got.overlay.length >= 5, `${got.overlay.length} match_data states in Chromium`);
  assert.ok(got.spectator.length >= 5, `${got.spectator.length} spectator states in Chromium`);
  // Every state Chromium inflated is one the socket.io-client overlay got too, byte for byte
  // once parsed; the last ones carry the roster (several KB of JSON).
  const seen = new Set(view.received.map((s) => JSON.stringify(s)));
  for (const s of got.overlay) assert.ok(seen.has(JSON.stringify(s)), "a state the Node overlay did not get");
  const biggest = Math.max(...got.overlay.map((s) => JSON.stringify(s).length));
  assert.ok(biggest > 4000, `largest state ${biggest} B`);
  const players = (s) => s.teams.reduce((a, t) => a + t.players.length, 0);
  assert.ok(players(got.overlay.at(-1)) >= 2, "the roster reached Chromium");
  assert.ok(players(got.spectator.at(-1)) >= 2, "the roster reached the spectator");
});
