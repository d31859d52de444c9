// REST on port 5101: status, previews, team info, org lookup, errors and CORS.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, observer, sendEvent, waitFor } from "./lib/server.mjs";

let server;
before(async () => {
  server = await startServer({ shards: 2 });
});
after(async () => {
  await server.stop();
});

const put = (path, body, headers = { "Content-Type": "application/json" }) =>
  fetch(`${server.rest}${path}`, { method: "PUT", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
const previewBody = (extra = {}) => ({
  type: "preview", clientVersion: "1.0.0", key: server.key, previewCode: "",
  leftTeam: { name: "L", tricode: "LT", url: "l.png" }, rightTeam: { name: "R", tricode: "RT", url: "r.png" },
  toolsData: { timeoutDuration: 45, playercamsInfo: { enable: true, identifier: "id", secret: "SECRET", endTime: 5 } },
  ...extra,
});

test("status and CORS preflight", async () => {
  const r = await fetch(`${server.rest}/status`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.deepEqual(await r.json(), { status: "UP", matchesRunning: 0 });
  const pre = await fetch(`${server.rest}/createPreview`, { method: "OPTIONS", headers: { "Access-Control-Request-Headers": "content-type" } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-methods"), "GET,HEAD,PUT,PATCH,POST,DELETE");
  assert.equal(pre.headers.get("access-control-allow-headers"), "content-type");
  assert.equal(pre.headers.get("vary"), "Access-Control-Request-Headers");
});

test("createPreview then preview: a clean 6-character code and the preview object", async () => {
  const r = await put("/createPreview", previewBody());
  assert.equal(r.status, 200);
  const { previewCode } = await r.json();
  assert.match(previewCode, /^[ABCDEFGHJKLMNPQRSTUVWXYZ0-9]{6}$/);
  const g = await fetch(`${server.rest}/preview/${previewCode}`);
  assert.equal(g.status, 200);
  assert.equal(g.headers.get("access-control-allow-origin"), "*");
  const p = await g.json();
  assert.deepEqual(Object.keys(p), ["groupCode", "isRunning", "map", "ranksEnabled", "roundNumber", "roundPhase", "spikeState", "switchRound", "teams", "timeoutState", "tools"]);
  assert.equal(p.groupCode, "PREVIEW");
  assert.equal(p.teams[0].teamName, "L");
  assert.equal(p.teams[0].players.length, 5);
  assert.equal(p.tools.timeoutDuration, 45);
  assert.equal(p.tools.playercamsInfo.secret, undefined, "the playercam secret is not handed out");
  // The same code again replaces the preview; random values are fixed per creation.
  const again = await (await fetch(`${server.rest}/preview/${previewCode}`)).json();
  assert.deepEqual(again, p);
  const mine = await put("/createPreview", previewBody({ previewCode: "MyCode", leftTeam: { name: "New", tricode: "N", url: "" } }));
  assert.deepEqual(await mine.json(), { previewCode: "MyCode" });
  assert.equal((await (await fetch(`${server.rest}/preview/MyCode`)).json()).teams[0].teamName, "New");
  // A missing previewCode gets a fresh 6-character code (the original answered "undefinedXXXXXX").
  const { previewCode: fresh } = await (await put("/createPreview", previewBody({ previewCode: undefined }))).json();
  assert.equal(fresh.length, 6);
});

test("createPreview errors", async () => {
  let r = await put("/createPreview", previewBody({ key: "wrong" }));
  assert.deepEqual([r.status, await r.json()], [403, { error: "Invalid or expired key" }]);
  r = await put("/createPreview", previewBody({ key: "" }));
  assert.deepEqual([r.status, await r.json()], [400, { error: "Missing or invalid key in preview data" }]);
  r = await put("/createPreview", "{broken", { "Content-Type": "application/json" });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error, "Invalid preview data");
  r = await put("/createPreview", "key=x", { "Content-Type": "text/plain" });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error, "Invalid preview data");
  r = await put("/createPreview", previewBody({ rightTeam: undefined }));
  assert.equal(r.status, 400);
  assert.match((await r.json()).details, /rightTeam/);
  r = await put("/createPreview", { key: server.key, pad: "x".repeat(200 * 1024) });
  assert.equal(r.status, 413);
  r = await fetch(`${server.rest}/preview/ABC`);
  assert.deepEqual([r.status, await r.json()], [400, { error: "Invalid preview code format" }]);
  r = await fetch(`${server.rest}/preview/ZZZZZZ`);
  assert.deepEqual([r.status, await r.json()], [404, { error: "Preview not found" }]);
});

test("getOrgForKey without the backend", async () => {
  let r = await fetch(`${server.rest}/getOrgForKey`);
  assert.deepEqual([r.status, await r.json()], [400, { error: "Key is required" }]);
  r = await fetch(`${server.rest}/getOrgForKey?key=a&key=b`);
  assert.equal(r.status, 400);
  r = await fetch(`${server.rest}/getOrgForKey?key=${server.key}`);
  assert.equal(r.status, 401);
  assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(await r.text(), "401 Unauthorized");
});

test("getTeamInfoForCode after a game ends, from any shard", async () => {
  let r = await fetch(`${server.rest}/getTeamInfoForCode`);
  assert.deepEqual([r.status, await r.json()], [400, { error: "Group code is required" }]);
  r = await fetch(`${server.rest}/getTeamInfoForCode?groupCode=NOPE`);
  assert.deepEqual([r.status, await r.json()], [404, { error: "Group code not found" }]);
  for (const group of ["TEAMINFO1", "TEAMINFO2", "TEAMINFO3", "TEAMINFO4"]) {
    const obs = await observer(server, {
      groupCode: group,
      toolsData: { tournamentInfo: { logoUrl: "t.png", backdropUrl: "b.png" }, sponsorInfo: { enabled: false, duration: 5000, sponsors: [] } },
    });
    sendEvent(obs.socket, group, "score", { team_0: 1, team_1: 3 });
    sendEvent(obs.socket, group, "round_info", { roundNumber: 4, roundPhase: "game_end" });
    let body;
    await waitFor(async () => {
      const res = await fetch(`${server.rest}/getTeamInfoForCode?groupCode=${group}`);
      if (res.status !== 200) return false;
      body = await res.json();
      return true;
    }, 3000, "team info");
    assert.deepEqual(Object.keys(body), ["leftTeam", "rightTeam", "higherScore", "tournamentInfo", "sponsorInfo", "isSupporter"]);
    assert.deepEqual(body.leftTeam, { name: "Left Team", tricode: "LFT", url: "https://example.org/l.png", attackStart: true });
    assert.equal(body.higherScore, 1);
    assert.deepEqual(body.tournamentInfo, { logoUrl: "t.png", backdropUrl: "b.png" });
    assert.equal(body.isSupporter, false);
    obs.socket.close();
  }
});

test("backend-only routes do not exist without the backend", async () => {
  for (const p of ["/getSupportPackages", "/client/oauth-callback?code=x"]) {
    const r = await fetch(`${server.rest}${p}`);
    assert.equal(r.status, 404, p);
  }
});

test("unknown routes get a JSON 404 with CORS", async () => {
  const r = await fetch(`${server.rest}/nope`);
  assert.equal(r.status, 404);
  assert.equal(r.headers.get("access-control-allow-origin"), "*");
  assert.deepEqual(await r.json(), { error: "Cannot GET /nope" });
});
