//! The match's `tools` object: defaults merged with the observer's `toolsData` (engine §2.2) and
//! the supporter rules (engine §2.3).

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use super::js::{loose_eq, truthy};

pub const SPECTRA_LOGO: &str = "https://auto.valospectra.com/assets/misc/logo.webp";

fn defaults() -> Map<String, Value> {
    let v = json!({
        "seriesInfo": {"needed": 1, "wonLeft": 0, "wonRight": 0, "mapInfo": []},
        "seedingInfo": {"left": "", "right": ""},
        "tournamentInfo": {"name": "", "logoUrl": "", "backdropUrl": ""},
        "timeoutDuration": 60,
        "timeoutCounter": {"max": 2, "left": 2, "right": 2},
        "timeoutCancellationGracePeriod": 10,
        "sponsorInfo": {"enabled": false, "duration": 5, "sponsors": []},
        "watermarkInfo": {"spectraWatermark": true, "customTextEnabled": false, "customText": ""},
        "playercamsInfo": {"enable": false, "removeTricodes": false, "identifier": "", "secret": "", "endTime": 0, "enabledPlayers": []},
        "nameOverrides": {"overrides": "[]"},
        "roundWinBox": {"type": "disabled", "sponsors": []},
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Defaults with every client key replacing the default wholesale; counters start full.
pub fn merge(tools_data: Option<&Value>) -> Map<String, Value> {
    let mut tools = defaults();
    if let Some(Value::Object(client)) = tools_data {
        for (k, v) in client {
            tools.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Object(counter)) = tools.get_mut("timeoutCounter") {
        match counter.get("max").cloned() {
            Some(max) => {
                counter.insert("left".into(), max.clone());
                counter.insert("right".into(), max);
            }
            None => {
                counter.shift_remove("left");
                counter.shift_remove("right");
            }
        }
    }
    tools
}

/// Applies the supporter rules once at construction. Fails like the original when sponsors are
/// enabled without a sponsor list.
pub fn supporter_rules(tools: &mut Map<String, Value>, supporter: bool) -> Result<(), String> {
    if let Some(Value::Object(sponsor)) = tools.get_mut("sponsorInfo")
        && truthy(sponsor.get("enabled"))
        && !supporter
    {
        match sponsor.get_mut("sponsors") {
            Some(Value::Array(list)) => list.push(Value::String(SPECTRA_LOGO.into())),
            _ => return Err("toolsData.sponsorInfo.sponsors must be an array".into()),
        }
    }
    if let Some(Value::Object(w)) = tools.get_mut("watermarkInfo") {
        if !truthy(w.get("spectraWatermark")) {
            w.insert("spectraWatermark".into(), Value::Bool(!supporter));
        }
        if truthy(w.get("customTextEnabled")) {
            w.insert("customTextEnabled".into(), Value::Bool(supporter));
        }
    }
    if let Some(Value::Object(rwb)) = tools.get_mut("roundWinBox")
        && loose_eq(rwb.get("type"), Some(&json!("sponsors")))
        && !supporter
        && let Some(Value::Array(sponsors)) = rwb.get_mut("sponsors")
        && sponsors.len() > 1
    {
        sponsors.truncate(1);
        if let Some(Value::Object(first)) = sponsors.first_mut() {
            first.insert("roundCeremony".into(), json!(["all"]));
            first.insert("wonTeam".into(), json!("all"));
        }
    }
    Ok(())
}

/// `tools` as broadcast: the playercam secret and end time are never sent (serialised from the
/// stored map; nothing copied).
pub struct BroadcastView<'a>(pub &'a Map<String, Value>);

/// Keys of `playercamsInfo` that stay on the server.
const PLAYERCAM_PRIVATE: [&str; 2] = ["secret", "endTime"];

impl Serialize for BroadcastView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                Value::Object(p) if k == "playercamsInfo" => {
                    m.serialize_entry(k, &Public(p))?;
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

/// The tools are kept in the snapshot as broadcast: private keys left out.
impl crate::cached::SnapshotPart for Map<String, Value> {
    fn write_snapshot<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        BroadcastView(self).serialize(s)
    }
}

/// `playercamsInfo` without its private keys.
struct Public<'a>(&'a Map<String, Value>);

impl Serialize for Public<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.0 {
            if !PLAYERCAM_PRIVATE.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}
