// Backend mode against a stub backend (a real HTTP server on loopback): every logon outcome, each
// call at the right moment with the right method, path, headers and body, and a misbehaving
// backend never holding up other matches.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { startServer, observer, overlay, sendEvent, sleep, waitFor, uniqueCode } from "./lib/server.mjs";
import { startStub } from "./lib/stub-backend.mjs";

let stub;
let server;
/** The backend-mode environment pointing at the stub. */
const backendEnv = () => ({
  USE_BACKEND: "true",
  BACKEND_URL: stub.url,
  BACKEND_TOKEN: "backend-token",
  SUPPORTER_CHECK_URL: `${stub.url}/supporter`,
  STATS_BACKEND_URL: `${stub.url}/stats`,
  STATS_BACKEND_TOKEN: "stats-token",
  BACKEND_TIMEOUT_MS: "800",
  STATS_FETCH_DELAY_MS: "300",
  PLAYERCAM_URL: `${stub.url}/pc`,
  TEBEX_BASE_URL: `${stub.url}/tebex`,
  TEBEX_STORE_ID: "store1",
  TEBEX_EXTENSION_ID: "ext1",
  DISCORD_CLIENT_ID: "cid",
  DISCORD_CLIENT_SECRET: "csecret",
  DISCORD_REDIRECT_URI: "http://localhost/cb",
  DISCORD_OAUTH_URL: `${stub.url}/discord/token`,
  DISCORD_USER_URL: `${stub.url}/discord/user`,
  SPECTRA_CLIENT_DEEPLINK: "spectra://discord-info",
});
before(async () => {
  stub = await startStub();
  stub.route("GET", /^\/system\/validateAccessKey\/good$/, { body: { id: "org1", name: "Org One" } });
  stub.route("GET", /^\/supporter\/org1$/, { body: { isSupporter: true } });
  stub.route("GET", /^\/system\/validateAccessKey\/plain$/, { body: { id: "org2", name: "Org Two" } });
  stub.route("GET", /^\/supporter\/org2$/, { status: 500, body: {} });
  stub.route("GET", /^\/system\/validateAccessKey\/bad$/, { status: 401 });
  stub.route("GET", /^\/system\/validateAccessKey\/expired$/, { status: 403 });
  stub.route("GET", /^\/system\/validateAccessKey\/boom$/, { status: 500 });
  stub.route("GET", /^\/system\/validateAccessKey\/slow$/, { hang: true });
  stub.route("POST", /^\/system\/match\/[^/]+\/register$/, { body: {} });
  stub.route("PUT", /^\/system\/match\/[^/]+\/(update|complete)$/, { body: {} });
  stub.route("POST", /^\/stats\/(addMatch|updateMatchRegion|fetchMatchStats)$/, { body: {} });
  stub.route("GET", /^\/pc\/api\/getNameOverridesAndPlayercams\/cam\/sec$/, { body: { nameOverrides: '[["A#1","Alpha"]]', enabledPlayers: ["A#1"] } });
  stub.route("GET", /^\/tebex\/packages\/store1\?extensionId=ext1$/, { body: [{ id: 7, name: "Gold" }] });
  stub.route("POST", /^\/discord\/token$/, { body: { token_type: "Bearer", access_token: "abc" } });
  stub.route("GET", /^\/discord\/user$/, { body: { id: "42", username: "bob", global_name: "<Bob>", avatar: "av1" } });
  stub.route("POST", /^\/stats\/fetchPlayerMMR$/, { body: { results: [{ puuid: "puuid-a", currentMMRTier: 21, peakMMRTier: 24 }] } });
  server = await startServer({ shards: 2, key: "static-key", env: backendEnv() });
});
after(async () => {
  await server.stop();
  await stub.close();
});

const code = uniqueCode;

test("logon outcomes from the backend's key check", async () => {
  for (const [key, value, reason] of [["bad", false, "Invalid Key"], ["expired", false, "Expired Key"], ["boom", false, "Unknown Error"]]) {
    const { socket, ack } = await observer({ ...server, key }, { groupCode: code("K") });
    assert.deepEqual(ack, { type: "authenticate", value, reason }, key);
    socket.close();
  }
  const call = stub.find("GET", "/system/validateAccessKey/expired")[0];
  assert.equal(call.headers["x-user-token"], "backend-token");
  assert.equal(call.headers["content-type"], "application/json");
  // The static key never reaches the backend.
  const before = stub.calls.length;
  const st = await observer(server, { groupCode: code("ST") });
  assert.equal(st.ack.value, true);
  assert.equal(stub.calls.length, before);
  st.socket.close();
  // Each backend request is in the latency histogram of /metrics.
  const metrics = await (await fetch(`${server.rest}/metrics`)).text();
  const value = (re) => Number(metrics.match(re)?.[1]);
  const count = value(/^spectra_backend_request_seconds_count (\S+)$/m);
  assert.ok(count >= 3, `backend requests counted: ${count}`);
  assert.equal(value(/^spectra_backend_request_seconds_bucket\{le="\+Inf"\} (\S+)$/m), count);
  assert.match(metrics, /^# TYPE spectra_backend_request_seconds histogram$/m);
});

test("a hanging backend ends in Unknown Error within the timeout (the original hung)", async () => {
  const start = Date.now();
  const { socket, ack } = await observer({ ...server, key: "slow" }, { groupCode: code("SLOW") });
  assert.deepEqual(ack, { type: "authenticate", value: false, reason: "Unknown Error" });
  assert.ok(Date.now() - start < 3000, `${Date.now() - start} ms`);
  socket.close();
});

test("other matches keep broadcasting on time while the backend hangs", async () => {
  const group = code("LIVE");
  const obs = await observer(server, { groupCode: group });
  const ov = await overlay(server, group);
  await waitFor(() => ov.received.length >= 1, 3000, "first snapshot");
  const hanging = [1, 2, 3].map(() => observer({ ...server, key: "slow" }, { groupCode: code("H") }));
  const latencies = [];
  for (let r = 1; r <= 8; r++) {
    const sent = Date.now();
    sendEvent(obs.socket, group, "round_info", { roundNumber: r, roundPhase: "shopping" });
    await waitFor(() => ov.received.at(-1)?.roundNumber === r, 2000, `round ${r}`);
    latencies.push(Date.now() - sent);
    await sleep(100);
  }
  assert.ok(Math.max(...latencies) < 400, `latencies ${latencies}`);
  for (const h of await Promise.all(hanging)) {
    assert.equal(h.ack.reason, "Unknown Error");
    h.socket.close();
  }
  obs.socket.close();
  ov.socket.close();
});

test("supporter organisations: flags on the match and no forced watermark", async () => {
  const group = code("SUP");
  const obs = await observer({ ...server, key: "good" }, {
    groupCode: group,
    organizationId: "spoofed",
    toolsData: { watermarkInfo: { spectraWatermark: false, customTextEnabled: true, customText: "hi" } },
  });
  assert.equal(obs.ack.value, true);
  const ov = await overlay(server, group);
  await waitFor(() => ov.received.length >= 1, 3000, "snapshot");
  const s = ov.received.at(-1);
  assert.equal(s.orgIsSupporter, true);
  assert.equal(s.organizationId, "org1");
  assert.deepEqual(s.tools.watermarkInfo, { spectraWatermark: false, customTextEnabled: true, customText: "hi" });
  assert.equal(stub.find("GET", "/supporter/org1").length >= 1, true);
  obs.socket.close();
  ov.socket.close();
  // A failing supporter check means "not a supporter".
  const plain = await observer({ ...server, key: "plain" }, { groupCode: code("PLN") });
  assert.equal(plain.ack.value, true);
  plain.socket.close();
});

test("match lifecycle calls: register, stats, MMR, update, complete, fetchMatchStats", async () => {
  const group = code("LIFE");
  const obs = await observer({ ...server, key: "good" }, { groupCode: group });
  const secret = obs.ack.reason;
  const ov = await overlay(server, group);
  sendEvent(obs.socket, group, "roster", { name: "A", tagline: "1", startTeam: 0, agentInternal: "Wushu", playerId: "puuid-a", position: 0, locked: true, rank: 0 });
  sendEvent(obs.socket, group, "roster", { name: "B", tagline: "2", startTeam: 1, agentInternal: "Clay", playerId: "puuid-b", position: 5, locked: true, rank: 0 });
  const matchId = `mid-${group}`;
  sendEvent(obs.socket, group, "match_start", matchId);
  await waitFor(() => stub.find("POST", "/stats/fetchPlayerMMR").some((c) => JSON.parse(c.body).matchUuid === matchId), 3000, "MMR call");
  const register = stub.find("POST", `/system/match/${matchId}/register`);
  assert.equal(register.length, 1);
  const regBody = JSON.parse(register[0].body);
  assert.equal(regBody.match.matchId, matchId);
  assert.equal(regBody.match.groupSecret, secret);
  assert.equal(regBody.match.organizationId, "org1");
  assert.equal(register[0].headers["x-user-token"], "backend-token");
  const stats = (p) => stub.find("POST", `/stats/${p}`).filter((c) => JSON.parse(c.body).matchUuid === matchId);
  assert.deepEqual(JSON.parse(stats("addMatch")[0].body), { code: group, matchUuid: matchId });
  assert.equal(stats("addMatch")[0].headers.authentication, "stats-token");
  assert.deepEqual(JSON.parse(stats("updateMatchRegion")[0].body), { matchUuid: matchId, accountPuuid: "puuid-a" });
  assert.deepEqual(JSON.parse(stats("fetchPlayerMMR")[0].body), { matchUuid: matchId, accountPuuids: ["puuid-a", "puuid-b"] });
  assert.ok(register[0].at <= stats("addMatch")[0].at && stats("addMatch")[0].at <= stats("updateMatchRegion")[0].at);
  await waitFor(() => ov.received.at(-1)?.teams[0].players[0]?.currentMMRTier === 21, 3000, "MMR applied");
  const snap = ov.received.at(-1);
  assert.equal(snap.isRegistered, true);
  assert.equal(snap.teams[0].players[0].peakMMRTier, 24);
  assert.equal(snap.teams[1].players[0].currentMMRTier, null);
  // Round 1 shopping: no update; round 2 shopping: update.
  sendEvent(obs.socket, group, "round_info", { roundNumber: 1, roundPhase: "shopping" });
  await sleep(200);
  assert.equal(stub.find("PUT", `/system/match/${matchId}/update`).length, 0);
  sendEvent(obs.socket, group, "round_info", { roundNumber: 2, roundPhase: "shopping" });
  await waitFor(() => stub.find("PUT", `/system/match/${matchId}/update`).length === 1, 3000, "update");
  assert.equal(JSON.parse(stub.find("PUT", `/system/match/${matchId}/update`)[0].body).match.roundNumber, 2);
  sendEvent(obs.socket, group, "round_info", { roundNumber: 2, roundPhase: "game_end" });
  await waitFor(() => stub.find("PUT", `/system/match/${matchId}/complete`).length === 1, 3000, "complete");
  const completeAt = stub.find("PUT", `/system/match/${matchId}/complete`)[0].at;
  await waitFor(() => stats("fetchMatchStats").length === 1, 3000, "fetchMatchStats");
  assert.ok(stats("fetchMatchStats")[0].at - completeAt >= 250, "stats fetched after the delay");
  obs.socket.close();
  ov.socket.close();
});

test("getOrgForKey and createPreview use the backend", async () => {
  let r = await fetch(`${server.rest}/getOrgForKey?key=good`);
  assert.deepEqual([r.status, await r.json()], [200, { id: "org1", name: "Org One", isSupporter: true }]);
  r = await fetch(`${server.rest}/getOrgForKey?key=bad`);
  assert.deepEqual([r.status, await r.text()], [401, "401 Unauthorized"]);
  r = await fetch(`${server.rest}/getOrgForKey?key=slow`);
  assert.equal(r.status, 502);
  const body = (key) => JSON.stringify({ key, previewCode: "", leftTeam: { name: "L" }, rightTeam: { name: "R" }, toolsData: {} });
  r = await fetch(`${server.rest}/createPreview`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: body("good") });
  assert.equal(r.status, 200);
  r = await fetch(`${server.rest}/createPreview`, { method: "PUT", headers: { "Content-Type": "application/json" }, body: body("expired") });
  assert.equal(r.status, 403);
});

test("a backend that is down: logons fail cleanly and the server stays up", async () => {
  const down = await startServer({ shards: 1, key: "static-key", env: { USE_BACKEND: "true", BACKEND_URL: "http://127.0.0.1:9", BACKEND_TIMEOUT_MS: "500" } });
  try {
    const { socket, ack } = await observer({ ...down, key: "anything" }, { groupCode: "DOWN" });
    assert.deepEqual(ack, { type: "authenticate", value: false, reason: "Unknown Error" });
    socket.close();
    const r = await fetch(`${down.rest}/getOrgForKey?key=x`);
    assert.equal(r.status, 502);
    const ok = await observer(down, { groupCode: "UP" });
    assert.equal(ok.ack.value, true);
    ok.socket.close();
  } finally {
    await down.stop();
  }
});

test("name overrides and player cams: at creation and at every shopping phase", async () => {
  const group = code("CAM");
  const obs = await observer({ ...server, key: "good" }, {
    groupCode: group,
    toolsData: { playercamsInfo: { enable: true, removeTricodes: false, identifier: "cam", secret: "sec", endTime: 1 } },
  });
  const ov = await overlay(server, group);
  await waitFor(() => ov.received.at(-1)?.tools.playercamsInfo.enabledPlayers, 3000, "refresh applied");
  const s = ov.received.at(-1);
  assert.deepEqual(s.tools.playercamsInfo, { enable: true, removeTricodes: false, identifier: "cam", enabledPlayers: ["A#1"] });
  assert.deepEqual(s.tools.nameOverrides, { overrides: '[["A#1","Alpha"]]' });
  const before = stub.find("GET", "/pc/api/getNameOverridesAndPlayercams/cam/sec").length;
  sendEvent(obs.socket, group, "round_info", { roundNumber: 1, roundPhase: "shopping" });
  await waitFor(() => stub.find("GET", "/pc/api/getNameOverridesAndPlayercams/cam/sec").length === before + 1, 3000, "refresh at shopping");
  obs.socket.close();
  ov.socket.close();
});

test("support packages: checkout links, cached", async () => {
  let r = await fetch(`${server.rest}/getSupportPackages`);
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), [{ id: 7, name: "Gold", checkoutUrl: `${stub.url}/tebex/checkout/store1/7?extensionId=ext1` }]);
  const calls = stub.find("GET", /^\/tebex\//).length;
  r = await fetch(`${server.rest}/getSupportPackages`);
  assert.equal(r.status, 200);
  assert.equal(stub.find("GET", /^\/tebex\//).length, calls, "served from the cache");
});

test("Discord OAuth callback: code exchange, user lookup, deep-link page", async () => {
  const r = await fetch(`${server.rest}/client/oauth-callback?code=the%20code`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  const html = await r.text();
  assert.match(html, /<title>Discord OAuth Success<\/title>/);
  assert.match(html, /Welcome, &lt;Bob&gt;!/);
  assert.match(html, /spectra:\/\/discord-info\?userId=42&amp;username=bob&amp;avatar=av1/);
  const token = stub.find("POST", "/discord/token").at(-1);
  assert.equal(token.headers["content-type"], "application/x-www-form-urlencoded");
  const form = new URLSearchParams(token.body);
  assert.deepEqual(Object.fromEntries(form), { client_id: "cid", client_secret: "csecret", grant_type: "authorization_code", code: "the code", redirect_uri: "http://localhost/cb" });
  assert.equal(stub.find("GET", "/discord/user").at(-1).headers.authorization, "Bearer abc");
});

test("an idle registered match is completed when it expires", async () => {
  const idle = await startServer({
    shards: 2, key: "static-key",
    args: ["--match-idle-seconds", "1"],
    env: { USE_BACKEND: "true", BACKEND_URL: stub.url, SUPPORTER_CHECK_URL: `${stub.url}/supporter`, STATS_BACKEND_URL: `${stub.url}/stats`, BACKEND_TIMEOUT_MS: "800" },
  });
  try {
    const obs = await observer({ ...idle, key: "good" }, { groupCode: "IDLE" });
    sendEvent(obs.socket, "IDLE", "match_start", "mid-idle");
    await waitFor(() => stub.find("PUT", "/system/match/mid-idle/complete").length === 1, 6000, "complete after expiry");
    const status = await (await fetch(`${idle.rest}/status`)).json();
    assert.equal(status.matchesRunning, 0);
    obs.socket.close();
  } finally {
    await idle.stop();
  }
});

test("a match recovered after a crash keeps its registration: updates and completion go on", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "spectra-backend-recovery-"));
  try {
    let srv = await startServer({ shards: 2, key: "static-key", env: backendEnv(), replayDir: dir });
    const group = code("REC");
    const obs = await observer({ ...srv, key: "good" }, { groupCode: group });
    const secret = obs.ack.reason;
    const matchId = `mid-${group}`;
    sendEvent(obs.socket, group, "roster", { name: "A", tagline: "1", startTeam: 0, agentInternal: "Wushu", playerId: "puuid-a", position: 0, locked: true, rank: 0 });
    sendEvent(obs.socket, group, "match_start", matchId);
    await waitFor(() => stub.find("POST", `/system/match/${matchId}/register`).length === 1, 3000, "register");
    await waitFor(() => {
      const [file] = fs.readdirSync(dir);
      return file && fs.readFileSync(path.join(dir, file), "utf8").includes("match_start");
    }, 3000, "match_start on disk");
    obs.socket.close();
    await srv.stop("SIGKILL");
    srv = await startServer({ shards: 2, key: "static-key", env: backendEnv(), replayDir: dir });
    try {
      // The log (stderr) may arrive after the ready line (stdout).
      await waitFor(() => new RegExp(`match ${group}: recovered`).test(srv.log()), 5000, "the recovery logged");
      const back = await observer({ ...srv, key: "good" }, { groupCode: group, groupSecret: secret });
      assert.equal(back.ack.reason, "reconnected");
      sendEvent(back.socket, group, "round_info", { roundNumber: 2, roundPhase: "shopping" });
      await waitFor(() => stub.find("PUT", `/system/match/${matchId}/update`).length === 1, 3000, "update after recovery");
      sendEvent(back.socket, group, "round_info", { roundNumber: 2, roundPhase: "game_end" });
      await waitFor(() => stub.find("PUT", `/system/match/${matchId}/complete`).length === 1, 3000, "complete after recovery");
      assert.equal(stub.find("POST", `/system/match/${matchId}/register`).length, 1, "not registered twice");
      back.socket.close();
    } finally {
      await srv.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
