//! Lookup tables of the original translator (`tables.json`, copied from the spec's
//! `translator-tables.json`), parsed once.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

pub struct Tables {
    agents: HashMap<String, String>,
    weapons: HashMap<String, String>,
    maps: HashMap<String, String>,
    map_fallback: String,
    armor: Vec<String>,
    pub preview_left: Vec<(String, String)>,
    pub preview_right: Vec<(String, String)>,
}

fn string_map(v: &Value) -> HashMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let p = p.as_array()?;
                    Some((
                        p.first()?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        // The file is part of the source tree; a parse failure is a build defect caught by tests.
        let raw: Value = serde_json::from_str(include_str!("tables.json")).unwrap_or(Value::Null);
        let maps = &raw["maps"];
        let fallback_key = maps["fallbackKey"].as_str().unwrap_or("Rook");
        let map_table = string_map(&maps["table"]);
        Tables {
            agents: string_map(&raw["agents"]["table"]),
            weapons: string_map(&raw["weaponsAndAbilities"]["table"]),
            map_fallback: map_table
                .get(fallback_key)
                .cloned()
                .unwrap_or_else(|| "Corrode".into()),
            maps: map_table,
            armor: raw["armor"]["table"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            preview_left: pairs(&raw["previewPlayers"]["left"]),
            preview_right: pairs(&raw["previewPlayers"]["right"]),
        }
    })
}

impl Tables {
    /// `agents[key]` when non-empty.
    pub fn agent(&self, key: &str) -> Option<&str> {
        self.agents
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Display name of an internal agent code, falling back to the code itself.
    pub fn agent_proper(&self, internal: &str) -> String {
        self.agent(internal).unwrap_or(internal).to_string()
    }

    pub fn weapon(&self, key: &str) -> Option<&str> {
        self.weapons.get(key).map(String::as_str)
    }

    pub fn map(&self, key: &str) -> String {
        self.maps
            .get(key)
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| self.map_fallback.clone())
    }

    /// `armor[index]` for an integral in-range index.
    pub fn armor(&self, index: &Value) -> Option<&str> {
        let f = index.as_f64()?;
        if f.fract() != 0.0 || f < 0.0 {
            return None;
        }
        self.armor.get(f as usize).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookups() {
        let t = tables();
        assert_eq!(t.agent_proper("Smonk"), "Clove");
        assert_eq!(t.agent_proper(""), "No Agent selected");
        assert_eq!(t.agent_proper("NewAgent"), "NewAgent");
        assert_eq!(t.agent("TX_Killfeed_Jett"), Some("Wushu"));
        assert_eq!(t.map("Triad"), "Haven");
        assert_eq!(t.map("Nope"), "Corrode");
        assert_eq!(t.armor(&json!(2)), Some("Heavy"));
        assert_eq!(t.armor(&json!(7)), None);
        assert_eq!(t.weapon("TX_Hud_Rifles_Volcano"), Some("Vandal"));
        assert_eq!(t.preview_left.len(), 5);
    }
}
