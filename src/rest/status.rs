//! The operator's live status: `GET /status/live` (JSON gathered from every shard through the
//! mesh: matches with their score and audience, per-shard load) and the page at `/` that shows it
//! (`status.html`, self-contained, refreshes every second). Reads shard state; changes nothing.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use crate::shard::Shard;
use crate::shard::messages::RestQuery;
use crate::transport::http::Response;

/// The status page (no external resources).
pub const PAGE: &str = include_str!("status.html");

/// This shard's matches (owner data) and overlay counts per room (subscriber data).
pub fn shard_part(shard: &Rc<Shard>) -> Value {
    let reg_cell = crate::registry::matches(shard);
    let reg = reg_cell.borrow();
    let matches: Vec<Value> = reg
        .live
        .iter()
        .map(|(code, entry)| {
            let mut m = match entry.game.summary() {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            m.insert("groupCode".into(), json!(code));
            if let Some(public) = entry.room.public() {
                // For the operator to hand to the public (a spectator delay is on).
                m.insert("publicCode".into(), json!(public));
            }
            m.insert("shard".into(), json!(shard.id));
            m.insert("spectators".into(), json!(entry.room.spectator_count()));
            Value::Object(m)
        })
        .collect();
    let overlays: Map<String, Value> = crate::fanout::subscribers::of(shard)
        .borrow()
        .overlay_counts()
        .into_iter()
        .map(|(code, n)| (code, json!(n)))
        .collect();
    json!({ "matches": matches, "overlays": overlays })
}

/// `GET /status/live`: every shard's part, merged, plus the counters of `/metrics`.
pub async fn live(shard: &Rc<Shard>) -> Response {
    let mut matches: Vec<Value> = Vec::new();
    let mut overlays: Map<String, Value> = Map::new();
    for target in 0..shard.shards() {
        let Some(resp) = super::ask_shard(shard, target, RestQuery::Live).await else {
            continue;
        };
        let Ok(part) = serde_json::from_slice::<Value>(&resp.body) else {
            continue;
        };
        if let Some(list) = part.get("matches").and_then(Value::as_array) {
            matches.extend(list.iter().cloned());
        }
        if let Some(map) = part.get("overlays").and_then(Value::as_object) {
            for (code, n) in map {
                let sum = overlays.get(code).and_then(Value::as_u64).unwrap_or(0)
                    + n.as_u64().unwrap_or(0);
                overlays.insert(code.clone(), json!(sum));
            }
        }
    }
    for m in &mut matches {
        let code = m.get("groupCode").and_then(Value::as_str).unwrap_or("");
        let n = overlays.get(code).cloned().unwrap_or(json!(0));
        if let Value::Object(obj) = m {
            obj.insert("overlays".into(), n);
        }
    }
    matches.sort_by(|a, b| {
        let key = |v: &Value| {
            v.get("groupCode")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        key(a).cmp(&key(b))
    });
    let metrics = &shard.global.metrics;
    let shards: Vec<Value> = metrics
        .shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            json!({
                "shard": i,
                "connections": s.connections.iter().map(|c| c.load(Ordering::Relaxed)).sum::<i64>(),
                "sessions": s.io.sessions.load(Ordering::Relaxed),
                "spectators": s.spectators.load(Ordering::Relaxed),
                "matches": s.matches.load(Ordering::Relaxed),
                "events": load(&s.events),
                "deliveries": load(&s.io.deliveries),
                "bytesSent": load(&s.io.bytes_out),
                "cpuSeconds": crate::metrics::thread_cpu_seconds(s.tid.load(Ordering::Relaxed)).unwrap_or(0.0),
            })
        })
        .collect();
    let body = json!({
        "version": crate::ingest::SERVER_VERSION,
        "uptimeSeconds": shard.global.started.elapsed().as_secs(),
        "rssBytes": crate::metrics::rss_bytes().unwrap_or(0),
        "matches": matches,
        "shards": shards,
        "cluster": crate::cluster::summary(shard),
    });
    Response::json(200, body.to_string()).with_header("Cache-Control", "no-store")
}
