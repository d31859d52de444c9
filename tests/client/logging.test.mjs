// Logs (tracing): LOG_FORMAT=json gives one JSON object per line with level, target and message;
// a refused logon is one line with its reason and without the key; RUST_LOG filters; neither an
// access key nor a group secret ever reaches a log line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, observer, waitFor, uniqueCode, metric } from "./lib/server.mjs";

test("LOG_FORMAT=json: every line is JSON; logons accepted and refused are logged without secrets", async () => {
  const server = await startServer({ env: { LOG_FORMAT: "json" } });
  try {
    const code = uniqueCode("LOGS");
    const ok = await observer(server, { groupCode: code });
    assert.equal(ok.ack.value, true);
    const secret = ok.ack.reason;
    const guess = "not-the-key-7f3a9c";
    const bad = await observer(server, { groupCode: uniqueCode("LOGS"), key: guess });
    assert.equal(bad.ack.reason, "Invalid Key");
    const thief = await observer(server, { groupCode: code, groupSecret: "WRONG-SECRET-123" });
    assert.equal(thief.ack.value, false);
    // Both refusals, by their own words (the start-up check's open-file warning also says
    // "refused", so counting lines with that word could stop before the second is written).
    await waitFor(
      () => server.log().includes("Invalid Key") && server.log().includes("observer logon refused (a wrong group secret)"),
      5000,
      "refusals logged",
    );
    const lines = server.log().split("\n").filter((l) => l.trim());
    const records = lines.map((l) => {
      const r = JSON.parse(l); // throws (fails the test) on any line that is not JSON
      assert.ok(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].includes(r.level), l);
      assert.equal(typeof r.target, "string", l);
      assert.equal(typeof r.message, "string", l);
      return r;
    });
    const refusedKey = records.filter((r) => r.message.includes("obs_logon_ack refused") && r.message.includes("Invalid Key"));
    assert.equal(refusedKey.length, 1, "one line for the refused logon, with its reason");
    assert.equal(refusedKey[0].level, "WARN");
    assert.ok(records.some((r) => r.level === "INFO" && r.message.includes(`match ${code}: created`)));
    assert.ok(records.some((r) => r.level === "WARN" && r.message.includes(`match ${code}: observer logon refused (a wrong group secret)`)));
    for (const needle of [guess, secret, "WRONG-SECRET-123", server.key]) {
      assert.ok(!server.log().includes(needle), `a log line contains ${needle}`);
    }
    for (const s of [ok.socket, bad.socket, thief.socket]) s.close();
  } finally {
    await server.stop();
  }
});

test("RUST_LOG=warn silences info lines but keeps warnings", async () => {
  const server = await startServer({ env: { RUST_LOG: "warn" } });
  try {
    const code = uniqueCode("QUIET");
    const ok = await observer(server, { groupCode: code });
    assert.equal(ok.ack.value, true);
    const bad = await observer(server, { groupCode: uniqueCode("QUIET"), key: "wrong" });
    assert.equal(bad.ack.value, false);
    await waitFor(() => /obs_logon_ack refused .*Invalid Key/.test(server.log()), 5000, "the warning");
    assert.doesNotMatch(server.log(), /created on shard/);
    assert.doesNotMatch(server.log(), / INFO /);
    ok.socket.close();
    bad.socket.close();
  } finally {
    await server.stop();
  }
});

test("a flood of refused events is counted, and logged at most ten times a second per shard", async () => {
  const server = await startServer({ shards: 1 });
  try {
    const code = uniqueCode("FLOODLOG");
    const o = await observer(server, { groupCode: code });
    const started = Date.now();
    for (let i = 0; i < 500; i++) o.socket.emit("obs_data", "{not json");
    await waitFor(async () => (await metric(server, "spectra_events_refused_total")) === 500, 5000, "500 refusals counted");
    const seconds = Math.ceil((Date.now() - started) / 1000) + 1;
    const lines = server.log().split("\n").filter((l) => l.includes("ingest: event from"));
    assert.ok(lines.length >= 10 && lines.length <= 10 * seconds, `${lines.length} lines in ${seconds} s`);
    assert.match(server.log(), /more events refused this second; counted in spectra_events_refused_total/);
    o.socket.close();
  } finally {
    await server.stop();
  }
});
