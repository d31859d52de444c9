//! Rule-family tests of the match engine (engine spec §4, §5, §7).

use serde_json::{Map, Value, json};

use super::{Logon, Match, Outcome};

fn logon(tools: Value) -> Logon {
    let data = json!({
        "type": "authenticate",
        "groupCode": "T",
        "leftTeam": {"name": "Left", "tricode": "LFT", "url": "l", "attackStart": true},
        "rightTeam": {"name": "Right", "tricode": "RGT", "url": "r", "attackStart": false},
        "toolsData": tools,
    });
    Logon {
        group_code: "T".into(),
        data: data.as_object().cloned().unwrap_or_default(),
        is_supporter: false,
        organization_id: String::new(),
    }
}

fn new_match() -> Match {
    Match::new(&logon(json!({"timeoutDuration": 60}))).expect("match")
}

fn ev(m: &mut Match, kind: &str, data: Value, ts: u64) -> Outcome {
    let mut e = Map::new();
    e.insert("obsName".into(), json!("O"));
    e.insert("groupCode".into(), json!("T"));
    e.insert("type".into(), json!(kind));
    e.insert("data".into(), data);
    e.insert("timestamp".into(), json!(ts));
    m.apply(&crate::Event::new(e))
}

fn aux(m: &mut Match, kind: &str, player: &str, data: Value, ts: u64) {
    let mut e = Map::new();
    e.insert("playerId".into(), json!(player));
    e.insert("matchId".into(), json!("M"));
    e.insert("type".into(), json!(kind));
    e.insert("data".into(), data);
    e.insert("timestamp".into(), json!(ts));
    m.apply(&crate::Event::new(e));
}

fn roster(m: &mut Match, name: &str, id: &str, team: i64, agent: &str) {
    ev(
        m,
        "roster",
        json!({"name": name, "tagline": "EUW", "startTeam": team, "agentInternal": agent,
               "playerId": id, "position": 0, "locked": true, "rank": 0}),
        1,
    );
}

fn board(m: &mut Match, id: &str, team: i64, money: i64, kills: i64, deaths: i64, alive: bool) {
    ev(
        m,
        "scoreboard",
        json!({"name": id, "tagline": "EUW", "playerId": id, "startTeam": team, "agentInternal": "Wushu",
               "isAlive": alive, "initialArmor": 2, "scoreboardWeaponInternal": "TX_Hud_Volcano",
               "currUltPoints": 1, "maxUltPoints": 7, "hasSpike": false, "money": money,
               "kills": kills, "deaths": deaths, "assists": 0}),
        10,
    );
}

fn snap(m: &Match) -> Value {
    m.snapshot()
}

fn round(m: &mut Match, n: i64, phase: &str, ts: u64) -> Outcome {
    ev(
        m,
        "round_info",
        json!({"roundNumber": n, "roundPhase": phase}),
        ts,
    )
}

#[test]
fn construction_matches_the_schema() {
    let m = Match::new(&logon(json!({
        "timeoutCounter": {"max": 2, "left": 0, "right": 1},
        "sponsorInfo": {"enabled": true, "duration": 5000, "sponsors": ["s1"]},
        "watermarkInfo": {"spectraWatermark": false, "customTextEnabled": true, "customText": "hi"},
        "playercamsInfo": {"enable": true, "removeTricodes": true, "identifier": "ID", "secret": "SEC", "endTime": 123},
        "roundWinBox": {"type": "sponsors", "sponsors": [
            {"wonTeam": "left", "roundCeremony": ["x"], "iconUrl": "i1", "backdropUrl": "b1"},
            {"wonTeam": "right", "roundCeremony": ["y"], "iconUrl": "i2", "backdropUrl": "b2"}]},
    })))
    .expect("match");
    let s = snap(&m);
    assert_eq!(
        s["tools"]["timeoutCounter"],
        json!({"max": 2, "left": 2, "right": 2})
    );
    assert_eq!(
        s["tools"]["sponsorInfo"]["sponsors"],
        json!(["s1", "https://auto.valospectra.com/assets/misc/logo.webp"])
    );
    assert_eq!(
        s["tools"]["watermarkInfo"],
        json!({"spectraWatermark": true, "customTextEnabled": false, "customText": "hi"})
    );
    assert_eq!(
        s["tools"]["playercamsInfo"],
        json!({"enable": true, "removeTricodes": true, "identifier": "ID"})
    );
    assert_eq!(
        s["tools"]["roundWinBox"]["sponsors"],
        json!([{"wonTeam": "all", "roundCeremony": ["all"], "iconUrl": "i1", "backdropUrl": "b1"}])
    );
    assert_eq!(
        s["teams"][0]["roundRecord"].as_array().map(Vec::len),
        Some(25)
    );
    assert_eq!(s["teams"][1]["ingameTeamId"], json!(1));
    assert!(s.get("groupSecret").is_none());
    let keys: Vec<&String> = s
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys[..6],
        [
            "matchId",
            "matchType",
            "switchRound",
            "firstOtRound",
            "groupCode",
            "isRunning"
        ]
    );
}

#[test]
fn both_teams_attacking_is_rejected() {
    let mut l = logon(json!({}));
    l.data.insert(
        "rightTeam".into(),
        json!({"name": "R", "attackStart": true}),
    );
    assert!(Match::new(&l).is_err());
}

#[test]
fn side_switch_at_13_and_every_overtime_round_with_money_reset() {
    let mut m = new_match();
    roster(&mut m, "A", "a", 0, "Wushu");
    board(&mut m, "a", 0, 3900, 0, 0, true);
    for n in 1..=12 {
        round(&mut m, n, "shopping", 100);
    }
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(true));
    round(&mut m, 13, "shopping", 100);
    let s = snap(&m);
    assert_eq!(s["teams"][0]["isAttacking"], json!(false));
    assert_eq!(s["teams"][1]["isAttacking"], json!(true));
    assert_eq!(s["teams"][0]["players"][0]["money"], json!(800));
    for n in 14..=24 {
        round(&mut m, n, "shopping", 100);
    }
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(false));
    round(&mut m, 25, "shopping", 100);
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(true));
    assert_eq!(snap(&m)["hasEnteredOvertime"], json!(true));
    round(&mut m, 26, "shopping", 100);
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(false));
}

#[test]
fn swift_mode_switches_at_5_without_overtime() {
    let mut m = new_match();
    ev(&mut m, "game_mode", json!("swift"), 1);
    let s = snap(&m);
    assert_eq!(
        (s["switchRound"].clone(), s["firstOtRound"].clone()),
        (json!(5), json!(99))
    );
    for n in 1..=5 {
        round(&mut m, n, "shopping", 1);
    }
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(false));
    round(&mut m, 6, "shopping", 1);
    assert_eq!(snap(&m)["teams"][0]["isAttacking"], json!(false));
    ev(&mut m, "game_mode", json!("bomb#kit:1:2"), 1);
    assert_eq!(snap(&m)["matchType"], json!("bomb#kit:1:2"));
    assert_eq!(snap(&m)["switchRound"], json!(13));
}

#[test]
fn spike_plant_detected_by_plus_300_in_combat_only() {
    let mut m = new_match();
    roster(&mut m, "A", "a", 0, "Wushu");
    board(&mut m, "a", 0, 1000, 0, 0, true);
    board(&mut m, "a", 0, 1300, 0, 0, true); // not in combat
    assert_eq!(snap(&m)["spikeState"]["planted"], json!(false));
    round(&mut m, 1, "combat", 5000);
    assert_eq!(snap(&m)["roundTimeoutTime"], json!(104_000));
    board(&mut m, "a", 0, 1600, 0, 0, true);
    let s = snap(&m);
    assert_eq!(s["spikeState"]["planted"], json!(true));
    assert!(s.get("roundTimeoutTime").is_none());
    assert_eq!(s["spikeDetonationTime"], json!(45_010));
    ev(&mut m, "spike_detonated", json!(true), 20);
    assert!(snap(&m).get("spikeDetonationTime").is_none());
}

#[test]
fn round_reasons_written_at_the_next_shopping() {
    let mut m = new_match();
    round(&mut m, 1, "shopping", 1);
    round(&mut m, 1, "combat", 1);
    ev(&mut m, "spike_planted", json!(true), 2);
    ev(&mut m, "spike_detonated", json!(true), 3);
    ev(&mut m, "score", json!({"team_0": 1, "team_1": 0}), 4);
    round(&mut m, 1, "end", 5);
    round(&mut m, 2, "shopping", 6);
    let s = snap(&m);
    assert_eq!(s["attackersWon"], json!(true));
    assert_eq!(
        s["teams"][0]["roundRecord"][0],
        json!({"type": "detonated", "wasAttack": true, "round": 1})
    );
    assert_eq!(
        s["teams"][1]["roundRecord"][0],
        json!({"type": "lost", "wasAttack": false, "round": 1})
    );
    assert_eq!(s["teams"][0]["roundsWon"], json!(1));
    // Defenders win by defuse in round 2.
    round(&mut m, 2, "combat", 7);
    ev(&mut m, "spike_defused", json!(true), 8);
    ev(&mut m, "score", json!({"team_0": 1, "team_1": 1}), 9);
    round(&mut m, 3, "shopping", 10);
    let s = snap(&m);
    assert_eq!(s["teams"][1]["roundRecord"][1]["type"], json!("defused"));
    assert_eq!(s["teams"][0]["roundRecord"][1]["type"], json!("lost"));
    // A time-out round: the score arrives after the round timer ran out, before `end`.
    round(&mut m, 3, "combat", 1000);
    ev(
        &mut m,
        "score",
        json!({"team_0": 1, "team_1": 2}),
        1000 + 99_000,
    );
    round(&mut m, 4, "shopping", 200_000);
    assert_eq!(
        snap(&m)["teams"][1]["roundRecord"][2]["type"],
        json!("timeout")
    );
    // Skipped rounds leave no holes (QUIRK E25 fixed).
    round(&mut m, 30, "shopping", 300_000);
    let rec = snap(&m)["teams"][0]["roundRecord"].clone();
    assert_eq!(rec.as_array().map(Vec::len), Some(34));
    assert!(
        rec.as_array()
            .is_some_and(|a| a.iter().all(Value::is_object))
    );
}

#[test]
fn timeout_grace_period_countdown_and_natural_end() {
    let mut m = Match::new(&logon(
        json!({"timeoutDuration": 5, "timeoutCancellationGracePeriod": 2}),
    ))
    .expect("match");
    ev(&mut m, "left_timeout", json!(true), 0);
    assert_eq!(
        snap(&m)["timeoutState"],
        json!({"techPause": false, "leftTeam": true, "rightTeam": false, "timeRemaining": 5})
    );
    m.advance(1000);
    assert_eq!(snap(&m)["timeoutState"]["timeRemaining"], json!(4));
    // Cancelled inside the grace period (remaining 4 > 5 - 2): nothing deducted.
    ev(&mut m, "left_timeout", json!(true), 1100);
    assert_eq!(snap(&m)["tools"]["timeoutCounter"]["left"], json!(2));
    assert_eq!(snap(&m)["timeoutState"]["leftTeam"], json!(false));
    // Started again and cancelled after the grace period: one deducted.
    ev(&mut m, "left_timeout", json!(true), 2000);
    m.advance(5000);
    assert_eq!(snap(&m)["timeoutState"]["timeRemaining"], json!(2));
    assert_eq!(snap(&m)["timeoutGracePeriodPassed"], json!(true));
    ev(&mut m, "left_timeout", json!(true), 5100);
    assert_eq!(snap(&m)["tools"]["timeoutCounter"]["left"], json!(1));
    // Natural end: deducted, flags cleared; the end timer wins the tie with the last tick.
    ev(&mut m, "right_timeout", json!(true), 10_000);
    let before = m.event_number();
    m.advance(15_000);
    let s = snap(&m);
    assert_eq!(s["tools"]["timeoutCounter"]["right"], json!(1));
    assert_eq!(s["timeoutState"]["rightTeam"], json!(false));
    assert_eq!(s["timeoutState"]["timeRemaining"], json!(1));
    assert!(m.event_number() > before);
    // No timeouts left: nothing starts.
    ev(&mut m, "right_timeout", json!(true), 20_000);
    m.advance(26_000);
    assert_eq!(snap(&m)["tools"]["timeoutCounter"]["right"], json!(0));
    ev(&mut m, "right_timeout", json!(true), 30_000);
    assert_eq!(snap(&m)["timeoutState"]["rightTeam"], json!(false));
}

#[test]
fn tech_pause_toggles_and_clears_team_timeouts() {
    let mut m = new_match();
    ev(&mut m, "right_timeout", json!(true), 0);
    ev(&mut m, "tech_pause", json!(true), 1);
    let s = snap(&m);
    assert_eq!(s["timeoutState"]["techPause"], json!(true));
    assert_eq!(s["timeoutState"]["rightTeam"], json!(false));
    assert_eq!(s["tools"]["timeoutCounter"]["right"], json!(2));
    ev(&mut m, "tech_pause", json!(true), 2);
    assert_eq!(snap(&m)["timeoutState"]["techPause"], json!(false));
}

#[test]
fn toast_shows_expires_and_toggles() {
    let mut m = new_match();
    let n0 = m.event_number();
    let toast = json!({"title": "T", "message": "M", "duration": 600, "selectedTeam": "left", "eventLogoEnabled": false});
    ev(&mut m, "toast", toast.clone(), 1000);
    assert_eq!(m.event_number(), n0 + 2);
    assert_eq!(
        snap(&m)["toastInfo"],
        json!({"title": "T", "message": "M", "duration": 600, "selectedTeam": "left", "eventLogoEnabled": false, "active": true})
    );
    m.advance(1500);
    assert_eq!(snap(&m)["toastInfo"]["active"], json!(true));
    m.advance(1600);
    assert_eq!(snap(&m)["toastInfo"]["active"], json!(false));
    // A persistent toast is hidden by the next toast event.
    ev(
        &mut m,
        "toast",
        json!({"title": "P", "message": "", "duration": null, "selectedTeam": "none", "eventLogoEnabled": true}),
        2000,
    );
    m.advance(100_000);
    assert_eq!(snap(&m)["toastInfo"]["active"], json!(true));
    ev(&mut m, "toast", toast, 100_001);
    assert_eq!(snap(&m)["toastInfo"]["active"], json!(false));
}

#[test]
fn swaps() {
    let mut m = new_match();
    ev(&mut m, "left_timeout", json!(true), 0);
    ev(&mut m, "left_timeout", json!(true), 20_000);
    m.advance(1);
    ev(&mut m, "score", json!({"team_0": 3, "team_1": 1}), 1);
    ev(&mut m, "swap_left_right", json!(true), 2);
    let s = snap(&m);
    assert_eq!(s["teams"][0]["teamName"], json!("Right"));
    assert_eq!(s["tools"]["timeoutCounter"]["right"], json!(2));
    ev(&mut m, "swap_attacker_defender", json!(true), 3);
    let s = snap(&m);
    assert_eq!(s["teams"][0]["isAttacking"], json!(true));
    assert_eq!(s["teams"][0]["roundsWon"], json!(3));
    assert_eq!(s["teams"][1]["roundsWon"], json!(1));
}

/// The tools are kept as broadcast between snapshots: a later change (playercams) shows in the
/// next snapshot, and the private keys are never in the kept text.
#[test]
fn kept_tools_follow_changes_and_keep_secrets_out() {
    let mut m = Match::new(&logon(json!({
        "playercamsInfo": {"enable": true, "removeTricodes": true, "identifier": "ID", "secret": "SEC", "endTime": 123},
    })))
    .expect("match");
    let before = m.snapshot_json();
    assert!(
        !before.contains("SEC") && !before.contains("endTime"),
        "{before}"
    );
    m.apply_playercams(json!({"Alpha": "Al"}), json!(["Alpha"]));
    let after = m.snapshot_json();
    assert_ne!(before, after);
    assert!(
        !after.contains("SEC") && !after.contains("endTime"),
        "{after}"
    );
    let s: Value = serde_json::from_str(&after).expect("json");
    assert_eq!(
        s["tools"]["playercamsInfo"]["enabledPlayers"],
        json!(["Alpha"])
    );
    assert_eq!(after, m.clone().snapshot_json(), "kept = full encode");
}

#[test]
fn roster_scoreboard_killfeed_and_aux() {
    let mut m = Match::new(&logon(json!({"playercamsInfo": {"enable": true, "removeTricodes": true, "identifier": "", "secret": "", "endTime": 0}})))
        .expect("match");
    roster(&mut m, "LFT Alpha", "a", 0, "Smonk");
    roster(&mut m, "Bravo", "b", 1, "Wushu");
    roster(&mut m, "Nobody", "x", 7, "Wushu"); // no such in-game team: ignored
    let s = snap(&m);
    let p = &s["teams"][0]["players"][0];
    assert_eq!(
        (p["name"].clone(), p["fullName"].clone()),
        (json!("Alpha"), json!("LFT Alpha#EUW"))
    );
    assert_eq!(p["agentProper"], json!("Clove"));
    assert_eq!(s["teams"][1]["playerCount"], json!(1));
    // Killfeed fallback before any scoreboard line.
    ev(
        &mut m,
        "killfeed",
        json!({"attacker": "Alpha", "victim": "Bravo", "weaponKillfeedInternal": "W",
                                  "headshotKill": true, "assists": [], "isTeamkill": false}),
        5,
    );
    let s = snap(&m);
    assert_eq!(s["teams"][0]["players"][0]["kills"], json!(1));
    assert_eq!(
        s["teams"][0]["players"][0]["killedPlayerNames"],
        json!(["Bravo"])
    );
    assert_eq!(s["teams"][0]["players"][0]["headshotRatio"], json!(null));
    assert_eq!(s["teams"][1]["players"][0]["isAlive"], json!(false));
    ev(&mut m, "observing", json!("Bravo #EUW"), 6);
    assert_eq!(
        snap(&m)["teams"][1]["players"][0]["isObserved"],
        json!(true)
    );
    // Unknown weapon and armor make the keys disappear.
    ev(
        &mut m,
        "scoreboard",
        json!({"playerId": "b", "startTeam": 1, "agentInternal": "Wushu", "isAlive": true,
        "initialArmor": 9, "scoreboardWeaponInternal": "", "currUltPoints": 0, "maxUltPoints": 7,
        "hasSpike": false, "money": 800, "kills": 0, "deaths": 1, "assists": 0}),
        7,
    );
    let p = snap(&m)["teams"][1]["players"][0].clone();
    assert!(p.get("armorName").is_none() && p.get("highestWeapon").is_none());
    assert_eq!(p["kdRatio"], json!(0));
    // Aux data for the aux client's own player.
    aux(&mut m, "aux_health", "b", json!(42), 8);
    aux(
        &mut m,
        "aux_abilities",
        "b",
        json!({"grenade": 1, "ability_1": 2, "ability_2": 0}),
        9,
    );
    let p = snap(&m)["teams"][1]["players"][0].clone();
    assert_eq!(p["health"], json!(42));
    assert_eq!(
        p["abilities"],
        json!({"grenade": 1, "ability1": 2, "ability2": 0})
    );
    assert_eq!(
        p["auxiliaryAvailable"],
        json!({"health": true, "abilities": true, "scoreboard": false})
    );
    let n = m.event_number();
    m.aux_disconnected("b");
    assert!(
        m.event_number() > n,
        "aux disconnect advances the counter (QUIRK E3 fixed)"
    );
    assert_eq!(
        snap(&m)["teams"][1]["players"][0]["auxiliaryAvailable"]["health"],
        json!(false)
    );
    // Teammate lines go to the sender's team (QUIRK E8 fixed).
    round(&mut m, 1, "shopping", 10);
    let lines = json!([{"playerId": "a", "agentInternal": "Smonk", "isAlive": true, "initialArmor": 1,
        "scoreboardWeaponInternal": "TX_Hud_Volcano", "currUltPoints": 2, "maxUltPoints": 8, "hasSpike": false,
        "money": 1234, "kills": 1, "deaths": 0, "assists": 0}]).to_string();
    aux(&mut m, "aux_scoreboard_team", "a", Value::String(lines), 11);
    assert_eq!(snap(&m)["teams"][0]["players"][0]["money"], json!(1234));
}

#[test]
fn game_end_ends_the_match() {
    let mut m = new_match();
    ev(&mut m, "match_start", json!("uuid-1"), 1);
    assert_eq!(m.match_id_text(), "uuid-1");
    assert_eq!(round(&mut m, 24, "game_end", 2), Outcome::GameEnded);
    let s = snap(&m);
    assert_eq!(
        (s["isRunning"].clone(), s["roundPhase"].clone()),
        (json!(false), json!("game_end"))
    );
}

#[test]
fn unknown_events_only_advance_the_counter() {
    let mut m = new_match();
    let before = snap(&m);
    let n = m.event_number();
    ev(&mut m, "team_is_attacker", json!(true), 1);
    ev(&mut m, "something_new", json!({"x": 1}), 1);
    assert_eq!(m.event_number(), n + 2);
    assert_eq!(snap(&m), before);
}

#[test]
fn kills_this_round_is_the_difference_from_the_round_start() {
    let mut m = new_match();
    roster(&mut m, "Ada", "a", 0, "Wushu");
    board(&mut m, "a", 0, 800, 19, 5, true);
    round(&mut m, 28, "shopping", 10);
    let ktr = |m: &Match| snap(m)["teams"][0]["players"][0]["killsThisRound"].clone();
    // The reference match's round 28: 19 → 20 → 19 → 21 is two kills, not three increases.
    for k in [20, 19, 21] {
        board(&mut m, "a", 0, 800, k, 5, true);
    }
    assert_eq!(ktr(&m), json!(2));
    board(&mut m, "a", 0, 800, 18, 6, true);
    assert_eq!(ktr(&m), json!(0), "never negative");
    assert_eq!(
        snap(&m)["teams"][0]["players"][0]["deathsThisRound"],
        json!(1)
    );
    round(&mut m, 29, "shopping", 20);
    assert_eq!(ktr(&m), json!(0));
}

#[test]
fn client_numbers_cannot_size_the_state() {
    for n in [
        json!(1e8),
        json!(1e6),
        json!(i64::MAX),
        json!(9.2e18),
        json!(-5),
        json!(1e300),
    ] {
        let mut m = new_match();
        ev(&mut m, "score", json!({"team_0": 1, "team_1": 0}), 5);
        round(&mut m, 0, "shopping", 1);
        ev(
            &mut m,
            "round_info",
            json!({"roundNumber": n, "roundPhase": "shopping"}),
            10,
        );
        let s = m.snapshot_json();
        assert!(s.len() < 64 * 1024, "{n}: snapshot of {} bytes", s.len());
    }
    // Stored strings and structures are cut; per-key counters hold a bounded number of keys.
    let mut m = new_match();
    roster(&mut m, &"N".repeat(100_000), "a", 0, "Wushu");
    roster(&mut m, "B", "b", 1, "Wushu");
    ev(&mut m, "match_start", json!("x".repeat(500_000)), 2);
    ev(
        &mut m,
        "round_info",
        json!({"roundNumber": vec![1; 100_000], "roundPhase": "y".repeat(100_000)}),
        3,
    );
    ev(
        &mut m,
        "toast",
        json!({"title": "t".repeat(100_000), "message": "m", "duration": 1e300}),
        4,
    );
    for i in 0..5_000 {
        ev(
            &mut m,
            "killfeed",
            json!({"attacker": "B", "victim": format!("v{i}"), "weaponKillfeedInternal": format!("w{i}"),
                   "isTeamkill": false, "assists": []}),
            5,
        );
    }
    let s = m.snapshot_json();
    assert!(s.len() < 64 * 1024, "snapshot of {} bytes", s.len());
    m.advance(u64::MAX);
}

/// The largest state a client can make a match hold stays below the 1 MB WebSocket message
/// limit, so no overlay is ever sent a snapshot it must refuse.
#[test]
fn the_worst_case_snapshot_fits_one_message() {
    let mut m = new_match();
    let big = |c: char| c.to_string().repeat(100_000);
    let blob = json!([big('x'), big('x')]); // structured values are dropped when over 1 KB
    let kb = json!(["y".repeat(500)]); // ...and kept when just under
    for (i, team) in [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 1),
        (6, 1),
        (7, 1),
        (8, 1),
        (9, 1),
    ] {
        let name = format!("{i}{}", "é".repeat(300));
        ev(
            &mut m,
            "roster",
            json!({"name": name, "tagline": big('t'), "startTeam": team, "agentInternal": kb,
                   "playerId": format!("{i}{}", big('p')), "position": kb, "locked": kb}),
            1,
        );
    }
    let snap = m.snapshot();
    let names: Vec<String> = snap["teams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["players"].as_array().into_iter().flatten())
        .map(|p| p["name"].as_str().unwrap_or("").to_string())
        .collect();
    let ids: Vec<String> = snap["teams"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["players"].as_array().into_iter().flatten())
        .map(|p| p["riotId"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names.len(), 10);
    for (id, team) in ids.iter().zip([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]) {
        ev(
            &mut m,
            "scoreboard",
            json!({"playerId": id, "startTeam": team, "agentInternal": kb, "isAlive": kb,
                   "initialArmor": kb, "scoreboardWeaponInternal": kb, "currUltPoints": kb,
                   "maxUltPoints": kb, "hasSpike": kb, "money": kb, "kills": kb, "deaths": kb,
                   "assists": blob}),
            2,
        );
        aux(
            &mut m,
            "aux_abilities",
            id,
            json!({"grenade": kb, "ability_1": kb, "ability_2": kb}),
            3,
        );
        aux(&mut m, "aux_health", id, kb.clone(), 3);
    }
    round(&mut m, 1, "combat", 4);
    for attacker in &names {
        for k in 0..100 {
            ev(
                &mut m,
                "killfeed",
                json!({"attacker": attacker, "victim": format!("{k}{}", big('v')),
                       "weaponKillfeedInternal": format!("{k}{}", big('w')),
                       "headshotKill": true, "assists": [], "isTeamkill": k % 2 == 0}),
                5,
            );
        }
    }
    let toast: Map<String, Value> = (0..100)
        .map(|k| (format!("{k}{}", big('k')), json!(big('m'))))
        .collect();
    ev(&mut m, "toast", Value::Object(toast), 6);
    ev(&mut m, "match_start", kb.clone(), 7);
    ev(&mut m, "game_mode", kb.clone(), 7);
    ev(&mut m, "score", json!({"team_0": kb, "team_1": kb}), 8);
    for r in 2..=250 {
        round(&mut m, r, "shopping", 9);
    }
    let s = m.snapshot_json();
    eprintln!("worst-case snapshot: {} bytes", s.len());
    assert!(
        s.len() < 1_000_000,
        "worst-case snapshot of {} bytes",
        s.len()
    );
}
