//! Differential replay: `../shared/kit/reference/match.replay` is applied event by event (each
//! followed by the kit's latency marker, exactly as the reference recording was made) and after
//! every event the snapshot must equal the original server's state for that event
//! (`orig-delay150-marker.match_data.jsonl.gz`), masking only the server-clock and timer fields
//! (as `compare.mjs --mode marker --timers`) and the deliberate differences in
//! `tests/compat-masks.txt`.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use serde_json::{Map, Value, json};
use spectra::engine::Logon;
use spectra::engine::{Event, Match, Outcome};

const ALWAYS_MASKED: &[&str] = &[
    "agentSelectStartTime",
    "roundTimeoutTime",
    "spikeDetonationTime",
];
const TIMER_MASKS: &[&str] = &[
    "timeoutState.timeRemaining",
    "timeoutState.leftTeam",
    "timeoutState.rightTeam",
    "timeoutGracePeriodPassed",
    "tools.timeoutCounter.left",
    "tools.timeoutCounter.right",
    "toastInfo.active",
];

fn kit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference")
}

fn compat_masks() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat-masks.txt");
    std::fs::read_to_string(path)
        .expect("tests/compat-masks.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn mask(v: &mut Value, parts: &[&str]) {
    let Some((head, rest)) = parts.split_first() else {
        return;
    };
    let targets: Vec<String> = match v {
        Value::Object(m) if *head == "*" => m.keys().cloned().collect(),
        Value::Object(m) if m.contains_key(*head) => vec![head.to_string()],
        Value::Array(a) if *head == "*" => (0..a.len()).map(|i| i.to_string()).collect(),
        _ => return,
    };
    for t in targets {
        let slot = match v {
            Value::Object(m) => m.get_mut(&t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        let Some(slot) = slot else { continue };
        if rest.is_empty() {
            *slot = json!("<masked>");
        } else {
            mask(slot, rest);
        }
    }
}

fn normalize(mut v: Value, masks: &[String]) -> Value {
    for m in ALWAYS_MASKED.iter().chain(TIMER_MASKS) {
        mask(&mut v, &m.split('.').collect::<Vec<_>>());
    }
    for m in masks {
        mask(&mut v, &m.split('.').collect::<Vec<_>>());
    }
    if let Some(Value::String(mt)) = v.get_mut("matchType")
        && let Some(i) = mt.find("#kit:")
    {
        mt.truncate(i);
    }
    if let Some(g) = v.get_mut("groupCode") {
        *g = json!("<group>");
    }
    v
}

/// Differences between two JSON values, key order included (like compare.mjs).
fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() > 10 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().filter(|k| y.contains_key(*k)).collect();
            let ky: Vec<&String> = y.keys().filter(|k| x.contains_key(*k)).collect();
            if kx != ky {
                out.push(format!("{path} key order: ref {kx:?} ours {ky:?}"));
            }
            for k in x.keys().filter(|k| !y.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing in ours (ref {})", x[k]));
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: extra in ours ({})", y[k]));
            }
            for k in kx {
                diff(&x[k], &y[k], &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!("{path}.length: ref {} ours {}", x.len(), y.len()));
            }
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(p), Value::Number(q)) if p.as_f64() == q.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: ref {a} ours {b}")),
    }
}

fn marker_seq(raw: &str) -> Option<u64> {
    let i = raw.find("\"matchType\":\"")? + 13;
    let rest = &raw[i..];
    let v = &rest[..rest.find('"')?];
    let k = v.find("#kit:")? + 5;
    v[k..].split(':').next()?.parse().ok()
}

#[test]
fn replay_matches_the_original_event_by_event() {
    let text = std::fs::read_to_string(kit().join("match.replay")).expect("match.replay");
    let events: Vec<Value> = serde_json::from_str(&format!("[{text}]")).expect("replay parses");
    let header = events[0].as_object().expect("header").clone();

    let mut gz = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(kit().join("orig-delay150-marker.match_data.jsonl.gz"))
            .expect("reference"),
    )
    .read_to_end(&mut gz)
    .expect("gunzip");
    let gz = String::from_utf8(gz).expect("utf8");
    let mut reference: HashMap<u64, Value> = HashMap::new();
    for line in gz.lines().filter(|l| !l.is_empty()) {
        if let Some(seq) = marker_seq(line) {
            reference
                .entry(seq)
                .or_insert_with(|| serde_json::from_str(line).expect("reference json"));
        }
    }
    assert!(
        reference.len() > 2400,
        "reference states: {}",
        reference.len()
    );

    let masks = compat_masks();
    let logon = Logon {
        group_code: "REFDELAY".into(),
        data: header,
        is_supporter: false,
        organization_id: String::new(),
    };
    let mut game = Match::new(&logon).expect("match");
    let mut compared = 0;
    let mut failures = Vec::new();
    for (i, event) in events[1..].iter().enumerate() {
        let seq = i as u64 + 1;
        let mut envelope: Map<String, Value> = event.as_object().expect("event").clone();
        let ts = envelope
            .get("timestamp")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let outcome = game.apply(&Event::new(envelope.clone()));
        envelope.clear();
        envelope.insert("type".into(), json!("game_mode"));
        envelope.insert("data".into(), json!(format!("bomb#kit:{seq}:0")));
        envelope.insert("timestamp".into(), json!(ts));
        if outcome == Outcome::Continue {
            game.apply(&Event::new(envelope));
        }
        let Some(expected) = reference.get(&seq) else {
            continue;
        };
        // The JSON text overlays get is the value the viewer deltas are computed from, key for
        // key and in the same order.
        let value = game.snapshot();
        let text = game.snapshot_json();
        let value_text = value.to_string();
        if text != value_text && failures.len() < 5 {
            failures.push(format!(
                "event {seq}: snapshot_json() is not snapshot() as text"
            ));
        }
        let ours = normalize(value, &masks);
        let theirs = normalize(expected.clone(), &masks);
        let mut d = Vec::new();
        diff(&theirs, &ours, "$", &mut d);
        compared += 1;
        if !d.is_empty() && failures.len() < 5 {
            failures.push(format!(
                "event {seq} ({}):\n  {}",
                event["type"],
                d.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} states compared; first differences:\n{}",
        compared,
        failures.join("\n")
    );
    assert!(compared > 2400, "compared {compared}");
}
