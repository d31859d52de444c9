//! What the engine fuzz targets share: the match they drive (a valid logon, one team attacking).

use serde_json::{Value, json};
use spectra::engine::Logon;
use spectra::engine::Match;

pub fn new_match() -> Match {
    let data = json!({
        "type": "authenticate", "clientVersion": "0.3.3", "obsName": "Fuzz", "groupCode": "FUZZ",
        "leftTeam": {"name": "L", "tricode": "LLL", "url": "", "attackStart": true},
        "rightTeam": {"name": "R", "tricode": "RRR", "url": "", "attackStart": false},
        "toolsData": {"timeoutCounter": {"max": 2, "left": 2, "right": 2}},
    });
    let Value::Object(data) = data else {
        unreachable!("a JSON object literal")
    };
    let logon = Logon {
        group_code: "FUZZ".into(),
        data,
        is_supporter: false,
        organization_id: String::new(),
    };
    Match::new(&logon).expect("a valid logon")
}
