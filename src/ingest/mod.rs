//! Ingest side (port 5100): `obs_logon` / `aux_logon` with every check of the spec in order, and
//! `obs_data` / `aux_data` forwarded, stamped and in order, to the match owner. Runs on the
//! session's shard; match state is never touched here (that is `registry`'s job on the owner).

pub mod auth;
pub mod version;

use std::rc::Rc;

use serde_json::{Map, Value, json};

use crate::app::{AppState, AuthRecord, IngestState, SpectraAction};
use crate::engine::{AuxKind, Event, Kind};
use crate::shard::Shard;
use crate::shard::messages::{MatchMsg, ObsLogon, ReplyBody, SessionAction, SessionRef, ShardMsg};
use crate::transport::packets::event_packet;
use crate::util::now_ms;

/// Server version shown in the "not compatible" logon failure.
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// JavaScript string interpolation of a JSON value (`undefined` when absent).
fn js_text(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

pub fn on_event(shard: &Rc<Shard>, sid: &str, name: &str, arg: Option<&str>) {
    match name {
        "obs_logon" => obs_logon(shard, sid, arg),
        "aux_logon" => aux_logon(shard, sid, arg),
        "obs_data" | "aux_data" => data(shard, sid, name == "aux_data", arg),
        _ => {}
    }
}

/// Marks a once-only logon handler as used; returns `None` if it was used already, else whether
/// the socket is already authenticated. A recovered, authenticated socket that logs on again
/// (clients do on every `connect`) gets its successful logon's answer again instead, once per
/// recovery, and nothing else happens (no new logon, no presence change).
fn take_once(shard: &Rc<Shard>, sid: &str, aux: bool) -> Option<bool> {
    let (result, again) = shard
        .eio
        .with_data(sid, |data, _| {
            let AppState::Ingest(state) = data else {
                return (None, None);
            };
            if state.recovered && state.auth.as_ref().is_some_and(|a| a.is_aux == aux) {
                state.recovered = false;
                return (None, state.logon_ack.clone());
            }
            let used = if aux {
                &mut state.aux_logon_used
            } else {
                &mut state.obs_logon_used
            };
            if *used {
                return (None, None);
            }
            *used = true;
            (Some(state.auth.is_some()), None)
        })
        .unwrap_or((None, None));
    if let Some(ack) = again {
        shard.deliver(shard.id, sid, SessionAction::Packets(vec![ack]));
    }
    result
}

fn failure(shard: &Rc<Shard>, sid: &str, event: &str, ack_type: &str, reason: &str) {
    send_failure(shard, sid, event, ack_type, reason, None);
}

/// A wrong access key: the failure also counts against the address's logon attempts.
fn key_failure(shard: &Rc<Shard>, sid: &str, key_id: u64, reason: &str) {
    send_failure(
        shard,
        sid,
        "obs_logon_ack",
        "authenticate",
        reason,
        Some(key_id),
    );
}

fn send_failure(
    shard: &Rc<Shard>,
    sid: &str,
    event: &str,
    ack_type: &str,
    reason: &str,
    credential_failure: Option<u64>,
) {
    // One line per refused logon, with its reason (reasons never carry a key or a secret).
    let peer = peer_of(shard, sid);
    tracing::warn!("ingest: {event} refused for {sid} ({peer:?}): {reason}");
    let ack = json!({ "type": ack_type, "value": false, "reason": reason }).to_string();
    shard.deliver(
        shard.id,
        sid,
        SessionAction::App(SpectraAction::LogonResult {
            ack: event_packet(event, &ack),
            auth: None,
            disconnect: true,
            credential_failure,
        }),
    );
}

/// The address a session's client connected from.
fn peer_of(shard: &Rc<Shard>, sid: &str) -> Option<std::net::IpAddr> {
    shard.eio.with_data(sid, |_, peer| peer).flatten()
}

fn version_failure(client_version: Option<&Value>) -> Option<String> {
    let ok = matches!(client_version, Some(Value::String(v)) if version::is_compatible(v));
    (!ok).then(|| {
        format!(
            "Client version {} is not compatible with server version {} (compatible: {}).",
            js_text(client_version),
            SERVER_VERSION,
            version::RANGE
        )
    })
}

pub use crate::code::{MAX_GROUP_CODE_CHARS, valid_group_code};

/// Longest observer / aux client name kept (it is shown to every spectator of the room).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest player id an aux client may log on with (Valorant's are 36-character UUIDs).
pub const MAX_ID_CHARS: usize = 128;
/// Largest logon object (JSON text). The kit's logon with full tools data is 1.6 KB.
pub const MAX_LOGON_BYTES: usize = 64 * 1024;

fn obs_logon(shard: &Rc<Shard>, sid: &str, arg: Option<&str>) {
    const ACK: &str = "obs_logon_ack";
    let fail = |reason: &str| failure(shard, sid, ACK, "authenticate", reason);
    match take_once(shard, sid, false) {
        None | Some(true) => return,
        Some(false) => {}
    }
    if arg.is_some_and(|a| a.len() > MAX_LOGON_BYTES) {
        return fail("Invalid packet: logon data over 64 KB.");
    }
    let obj = match arg.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(obj))) => obj,
        _ => return fail("Invalid packet: logon data is not a JSON object."),
    };
    if obj.get("type").and_then(Value::as_str) != Some("authenticate") {
        return fail("Invalid packet.");
    }
    let key = obj.get("key").and_then(Value::as_str).map(String::from);
    // Failures count per address and key: guesses from an address do not lock out a logon that
    // comes from it with another (the right) key.
    let peer = peer_of(shard, sid);
    let key_id = crate::limits::key_id(key.as_deref());
    if let Some(wait) = shard.global.limits.logon_blocked(peer, key_id) {
        crate::metrics::bump(|s| &s.logons_throttled);
        return fail(&format!(
            "Too many failed logon attempts from your address; try again in {wait} s."
        ));
    }
    if let Some(reason) = version_failure(obj.get("clientVersion")) {
        return fail(&reason);
    }
    match auth::check_key(&shard.config, key.as_deref()) {
        auth::KeyCheck::Valid => finish_obs_logon(shard, sid, obj, false, None),
        auth::KeyCheck::Invalid(reason) => match (shard.backend.clone(), key) {
            (Some(backend), Some(key)) => {
                let shard = shard.clone();
                let sid = sid.to_string();
                glommio::spawn_local(async move {
                    match backend.validate_key(&key).await {
                        crate::backend::KeyValidity::Valid {
                            organization_id,
                            is_supporter,
                            ..
                        } => finish_obs_logon(&shard, &sid, obj, is_supporter, organization_id),
                        crate::backend::KeyValidity::Invalid(reason) => {
                            key_failure(&shard, &sid, key_id, reason)
                        }
                    }
                })
                .detach();
            }
            _ => key_failure(shard, sid, key_id, reason),
        },
    }
}

/// Observer logon after a successful key check: on to the match owner.
fn finish_obs_logon(
    shard: &Rc<Shard>,
    sid: &str,
    obj: Map<String, Value>,
    is_supporter: bool,
    organization_id: Option<String>,
) {
    let group_code = match obj.get("groupCode") {
        Some(Value::String(c)) if !c.is_empty() => c.clone(),
        _ => {
            return failure(
                shard,
                sid,
                "obs_logon_ack",
                "authenticate",
                "Invalid packet: groupCode is missing.",
            );
        }
    };
    if !valid_group_code(&group_code) {
        return failure(
            shard,
            sid,
            "obs_logon_ack",
            "authenticate",
            crate::code::INVALID_GROUP_CODE,
        );
    }
    if shard.config.public_code_key.is_some() && crate::code::is_public_form(&group_code) {
        return failure(
            shard,
            sid,
            "obs_logon_ack",
            "authenticate",
            "Invalid group code: codes starting with PUB- are the public codes of delayed matches.",
        );
    }
    let owner =
        crate::limits::MatchOwner::new(obj.get("key").and_then(Value::as_str), peer_of(shard, sid));
    let logon = ObsLogon {
        group_secret: obj
            .get("groupSecret")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        obs_name: crate::engine::js::short(&js_text(obj.get("obsName")), MAX_NAME_CHARS),
        group_code: group_code.clone(),
        data: obj,
        is_supporter,
        organization_id: organization_id.unwrap_or_default(),
    };
    let from = SessionRef {
        shard: shard.id,
        sid: sid.to_string(),
    };
    shard.send_to(
        shard.owner_of(&group_code),
        ShardMsg::Match(MatchMsg::Create {
            logon: Box::new(logon),
            from,
            owner,
        }),
    );
}

fn aux_logon(shard: &Rc<Shard>, sid: &str, arg: Option<&str>) {
    const ACK: &str = "aux_logon_ack";
    // Failures use type "aux_authenticate" so the real aux client shows the reason (QUIRK A1).
    let fail = |reason: &str| failure(shard, sid, ACK, "aux_authenticate", reason);
    match take_once(shard, sid, true) {
        None | Some(true) => return,
        Some(false) => {}
    }
    if arg.is_some_and(|a| a.len() > MAX_LOGON_BYTES) {
        return fail("Invalid packet: logon data over 64 KB.");
    }
    let obj = match arg.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(obj))) => obj,
        _ => return fail("Invalid packet: logon data is not a JSON object."),
    };
    if obj.get("type").and_then(Value::as_str) != Some("aux_authenticate") {
        return fail("Invalid packet.");
    }
    if let Some(reason) = version_failure(obj.get("clientVersion")) {
        return fail(&reason);
    }
    if obj
        .get("playerId")
        .and_then(Value::as_str)
        .is_some_and(|p| p.chars().count() > MAX_ID_CHARS)
    {
        return fail(&format!(
            "Invalid packet: playerId over {MAX_ID_CHARS} characters."
        ));
    }
    let match_id = js_text(obj.get("matchId"));
    let record = AuthRecord {
        name: crate::engine::js::short(&js_text(obj.get("name")), MAX_NAME_CHARS),
        group_code: String::new(),
        client_id: String::new(),
        is_aux: true,
        player_id: obj
            .get("playerId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    };
    let shard2 = shard.clone();
    let sid = sid.to_string();
    glommio::spawn_local(async move {
        // An empty match id would attach to any match that has not started (QUIRK A2).
        let found = if match_id.is_empty() || obj.get("matchId").is_none() {
            None
        } else {
            find_match_by_id(&shard2, &match_id).await
        };
        match found {
            None => failure(
                &shard2,
                &sid,
                ACK,
                "aux_authenticate",
                &format!("Game with Match ID {match_id} not found."),
            ),
            Some(code) => {
                let ack = json!({ "type": "aux_authenticate", "value": true }).to_string();
                tracing::info!(
                    "match {code}: aux logon accepted for {sid} (player {:?})",
                    record.player_id
                );
                let player = crate::shard::messages::PlayerInfo::new(&record.name, false);
                let auth = AuthRecord {
                    group_code: code.clone(),
                    client_id: player.id.clone(),
                    ..record
                };
                presence(&shard2, code, Some(player), None);
                shard2.deliver(
                    shard2.id,
                    &sid,
                    SessionAction::App(SpectraAction::LogonResult {
                        ack: event_packet(ACK, &ack),
                        auth: Some(auth),
                        disconnect: false,
                        credential_failure: None,
                    }),
                );
            }
        }
    })
    .detach();
}

/// The group code of the live match an aux client of this Valorant match id joins, from every
/// shard's claims (`registry::pick_match_id_claim`).
async fn find_match_by_id(shard: &Rc<Shard>, match_id: &str) -> Option<String> {
    // This shard's claims at once; every other shard's by request.
    let mut claims = crate::registry::find_match_id(shard, match_id);
    let mut replies = Vec::with_capacity(shard.shards());
    for s in (0..shard.shards()).filter(|s| *s != shard.id) {
        let (from, rx) = shard.request();
        shard.mesh.send(
            s,
            ShardMsg::Match(MatchMsg::FindMatchId {
                match_id: match_id.to_string(),
                from,
            }),
        );
        replies.push(rx);
    }
    for rx in replies {
        if let Ok(ReplyBody::MatchIdClaims(more)) = rx.await {
            claims.extend(more);
        }
    }
    if claims.is_empty()
        && let Some(cluster) = crate::cluster::of(shard)
    {
        // A match of another node of the cluster (the aux client's events go there).
        let found = cluster
            .get(crate::cluster::Shared::MatchIds, match_id)
            .await
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("code").and_then(Value::as_str).map(String::from));
        if found.is_some() {
            return found;
        }
    }
    if claims.len() > 1 {
        let codes: Vec<&str> = claims.iter().map(|c| c.group_code.as_str()).collect();
        tracing::warn!("ingest: match id {match_id} is claimed by several matches: {codes:?}");
    }
    crate::registry::pick_match_id_claim(claims).map(|c| c.group_code)
}

/// An event that is not applied: logged with its reason and counted, never forwarded.
/// At most this many refused events are logged per second and shard; the rest are counted in
/// `spectra_events_refused_total` only (a client sending garbage must not fill the disk).
const REFUSALS_LOGGED_PER_SECOND: u32 = 10;

thread_local! {
    /// The second (Unix time) and how many refusals this shard logged in it.
    static REFUSALS_LOGGED: std::cell::Cell<(u64, u32)> = const { std::cell::Cell::new((0, 0)) };
}

fn refuse(sid: &str, reason: &str) {
    crate::metrics::bump(|s| &s.events_refused);
    let second = now_ms() / 1000;
    let n = REFUSALS_LOGGED.with(|c| {
        let (at, n) = c.get();
        let n = if at == second { n.saturating_add(1) } else { 1 };
        c.set((second, n));
        n
    });
    if n <= REFUSALS_LOGGED_PER_SECOND {
        tracing::warn!("ingest: event from {sid} refused: {reason}");
    } else if n == REFUSALS_LOGGED_PER_SECOND + 1 {
        tracing::warn!(
            "ingest: more events refused this second; counted in spectra_events_refused_total, not logged"
        );
    }
}

/// What an aux session may do: `aux_data` of the aux types (`Kind::Aux`), for its own player.
/// The player is the logon's `playerId`, or else the first non-empty one its events carry.
/// Returns the player to bind the session to, if it learned it now.
fn aux_permits(
    auth: &AuthRecord,
    is_aux_event: bool,
    event: &Event,
) -> Result<Option<String>, String> {
    if !is_aux_event {
        return Err("an aux client may send only aux_data".into());
    }
    let Kind::Aux(kind) = event.kind() else {
        return Err(format!(
            "event type {:?} is not an aux event",
            event.type_name()
        ));
    };
    let obj = event.envelope();
    let Some(player) = obj.get("playerId").and_then(Value::as_str) else {
        return Err("aux event without a playerId".into());
    };
    if !auth.player_id.is_empty() && player != auth.player_id {
        return Err(format!(
            "aux client of player {} sent an event for player {player}",
            auth.player_id
        ));
    }
    // The aux player's own scoreboard line must be its own (teammates' lines come only as
    // `aux_scoreboard_team`, which fills only lines the observer does not have).
    if kind == AuxKind::Scoreboard
        && obj
            .get("data")
            .and_then(|d| d.get("playerId"))
            .and_then(Value::as_str)
            .is_some_and(|line| line != player)
    {
        return Err("aux_scoreboard line of another player".into());
    }
    Ok((auth.player_id.is_empty() && !player.is_empty()).then(|| player.to_string()))
}

/// `obs_data` / `aux_data`: size, shape and permission checks, server timestamp, then to the
/// socket's own match.
fn data(shard: &Rc<Shard>, sid: &str, is_aux_event: bool, arg: Option<&str>) {
    let Some(auth) = shard
        .eio
        .with_data(sid, |data, _| match data {
            AppState::Ingest(state) => state.auth.clone(),
            _ => None,
        })
        .flatten()
    else {
        return; // not logged on: ignored, as in the original
    };
    let obj = match arg.map(crate::parse::parse_event) {
        Some(Ok(Value::Object(obj))) => obj,
        Some(Err(e)) => return refuse(sid, &format!("malformed: {e}")),
        _ => return refuse(sid, "not a JSON object"),
    };
    let authed_shape = (obj.contains_key("obsName") || obj.contains_key("playerId"))
        && (obj.contains_key("groupCode") || obj.contains_key("matchId"))
        && obj.contains_key("type")
        && obj.contains_key("data");
    if !authed_shape {
        return;
    }
    // The type is read here, once; everything after matches on the kind.
    let mut event = Event::new(obj);
    let obj = event.envelope();
    if let Some(code) = obj.get("groupCode")
        && code.as_str() != Some(auth.group_code.as_str())
    {
        return refuse(
            sid,
            &format!("group {} sent an event for group {code}", auth.group_code),
        );
    }
    let learned = if auth.is_aux {
        match aux_permits(&auth, is_aux_event, &event) {
            Err(reason) => return refuse(sid, &reason),
            Ok(player) => player,
        }
    } else if is_aux_event
        && auth.player_id.is_empty()
        && event.kind() == Kind::Aux(AuxKind::Scoreboard)
    {
        // An observer socket sending aux_data learns a player as in the original (spec §2.6.4).
        obj.get("playerId")
            .and_then(Value::as_str)
            .map(String::from)
    } else {
        None
    };
    if let Some(player) = learned {
        shard.eio.with_data(sid, |data, _| {
            if let AppState::Ingest(state) = data
                && let Some(a) = state.auth.as_mut()
            {
                a.player_id = player;
            }
        });
    }
    event.set("timestamp", Value::from(now_ms()));
    let code = auth.group_code;
    let owner = shard.owner_of(&code);
    shard.send_to(owner, ShardMsg::Match(MatchMsg::Event { code, event }));
}

/// Tells the match owner that an ingest client joined or left its room.
fn presence(
    shard: &Rc<Shard>,
    code: String,
    join: Option<crate::shard::messages::PlayerInfo>,
    leave: Option<String>,
) {
    shard.send_to(
        shard.owner_of(&code),
        ShardMsg::Match(MatchMsg::PlayerPresence { code, join, leave }),
    );
}

/// The socket left: its room presence ends; an auxiliary client's player loses its aux data.
pub fn on_disconnect(shard: &Rc<Shard>, state: &IngestState) {
    let Some(auth) = &state.auth else {
        return;
    };
    if !auth.client_id.is_empty() {
        presence(
            shard,
            auth.group_code.clone(),
            None,
            Some(auth.client_id.clone()),
        );
    }
    if auth.player_id.is_empty() {
        return;
    }
    let owner = shard.owner_of(&auth.group_code);
    let (code, player_id) = (auth.group_code.clone(), auth.player_id.clone());
    shard.send_to(
        owner,
        ShardMsg::Match(MatchMsg::AuxDisconnected { code, player_id }),
    );
}

/// The match of `code` was removed (or taken over by another node: `reason`, told to each client
/// first): namespace-disconnect this shard's ingest clients of it.
pub fn kick_group(shard: &Rc<Shard>, code: &str, reason: Option<&str>) {
    let sids = shard.eio.select(|data| {
        matches!(data, AppState::Ingest(IngestState { auth: Some(a), .. }) if a.group_code == code)
    });
    for sid in sids {
        if let Some(reason) = reason {
            crate::transport::socketio::emit(&shard.eio, &sid, "message", reason);
        }
        crate::transport::socketio::disconnect(&shard.eio, &sid);
    }
    // Held sockets of the match may not come back to it.
    crate::transport::engineio::forget_held(
        &shard.eio,
        |data| matches!(data, AppState::Ingest(IngestState { auth: Some(a), .. }) if a.group_code == code),
    );
}
