//! The matches owned by this shard: creation and reconnection at observer logon, events applied in
//! arrival order, publication of changes (5 ms after they arrive when the match's broadcast budget
//! allows — one per 100 ms on average, see `broadcast::budget` — one encode per publication; the
//! periodic tick advances timers and publishes what changed without an event), game end and idle
//! removal. Runs only on the owner shard of each group code; sessions are reached via `deliver`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::app::AuthRecord;
use crate::budget::Budget;
use crate::cluster::Claim;
use crate::engine::{Event, Kind, Match, ObsKind, Outcome};
use crate::shard::Shard;
use crate::shard::messages::{
    FrameSet, LeaveReason, MatchIdClaim, ObsLogon, ReplyBody, RestAnswer, RoomFrame,
};
use crate::shard::messages::{MatchMsg, SessionAction, SessionRef, ShardMsg};
use crate::shard::messages::{PlayerInfo, SpectatorInfo};
use crate::spectator::room::{JoinRequest, Room};
use crate::spectator::wire;
use crate::transport::packets::{event_packet, event_packet_buf, event_packet_of_known};
use crate::viewer::stream::game_data;

/// One live match and its broadcast bookkeeping.
pub struct Entry {
    pub game: Match,
    secret: String,
    /// Creation order across all shards.
    seq: u64,
    /// The Valorant match id this match reported with `match_start` and when (in `match_seq`
    /// order across all shards): the aux logon's tie-break (see `pick_match_id_claim`).
    claim: Option<(String, u64)>,
    last_sent_event: u64,
    last_sent_at: Instant,
    /// A change waits for its publication (see `schedule_flush`).
    flush_pending: bool,
    /// The broadcast rate limit (one per interval on average, see `broadcast::budget`).
    budget: Budget,
    /// The last encoded snapshot and the counter it was built at.
    frames: Option<(u64, FrameSet)>,
    /// The last snapshot JSON and the counter it was built at.
    json: Option<(u64, Rc<str>)>,
    /// The match's spectator room.
    pub room: Room,
    /// The match's replay log (`None` when logs are off).
    log: Option<crate::replay::log::ReplayLog>,
    /// Counts the match against its creator's key and address until it ends.
    slot: Option<crate::limits::MatchSlot>,
}

impl Entry {
    fn new(game: Match, secret: String, seq: u64, room: Room) -> Entry {
        Entry {
            game,
            secret,
            seq,
            claim: None,
            last_sent_event: 0,
            last_sent_at: Instant::now(),
            flush_pending: false,
            budget: Budget::new(Instant::now()),
            frames: None,
            json: None,
            room,
            log: None,
            slot: None,
        }
    }
}

/// Finished-game team info kept for `/getTeamInfoForCode`.
#[derive(Debug, Clone)]
pub struct TeamInfo {
    pub body: Value,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Registry {
    pub live: HashMap<String, Entry>,
    pub finished: HashMap<String, TeamInfo>,
    /// With a spectator delay: the public codes this shard keeps (it owns them by hash), each
    /// with its match's group code and room id.
    aliases: HashMap<String, (String, String)>,
    /// Rooms of ended matches that still hold delayed states, by room id: until their viewers
    /// reach the end, the result stays unpublished (`Closing::team_info`) and `GET /matches`
    /// answers from them.
    closing: HashMap<String, Closing>,
}

/// The room of an ended match while its delayed viewers catch up.
struct Closing {
    code: String,
    room: Room,
    /// The finished game's team info, published when the room closes (`None`: expired).
    team_info: Option<Value>,
}

/// This shard's live matches (the registry's shard-local state).
pub fn matches(shard: &Shard) -> Rc<RefCell<Registry>> {
    shard.state()
}

fn new_secret() -> String {
    crate::random::random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 12)
}

/// A new match's spectator room: with a spectator delay it has a public code, which the shard
/// that keeps that code is told of.
fn new_room(shard: &Rc<Shard>, code: &str) -> Room {
    let mut room = Room::new(shard.config.spectator_delay);
    if let Some(key) = &shard.config.public_code_key {
        let public = crate::code::public_code(key, code);
        // Through the inbox even to this shard: the caller may hold the registry.
        shard.mesh.send(
            shard.owner_of(&public),
            ShardMsg::Match(MatchMsg::Alias {
                public: public.clone(),
                group: Some(code.to_string()),
                room: room.id.clone(),
            }),
        );
        room.set_public(public);
    }
    room
}

/// The room is gone for good: its public code goes too.
fn forget_public(shard: &Rc<Shard>, room: &Room) {
    if let Some(public) = room.public() {
        shard.mesh.send(
            shard.owner_of(public),
            ShardMsg::Match(MatchMsg::Alias {
                public: public.to_string(),
                group: None,
                room: room.id.clone(),
            }),
        );
    }
}

/// An accepted observer logon; with a spectator delay the acknowledgement also carries the
/// match's public code (`publicCode`) for the operator to hand to the public.
fn logon_accepted(
    from: &SessionRef,
    shard: &Rc<Shard>,
    reason: &str,
    auth: AuthRecord,
    public: Option<&str>,
) {
    let mut ack = json!({ "type": "authenticate", "value": true, "reason": reason });
    if let Some(public) = public {
        ack["publicCode"] = Value::String(public.to_string());
    }
    shard.deliver(
        from.shard,
        &from.sid,
        SessionAction::App(crate::app::SpectraAction::LogonResult {
            ack: event_packet("obs_logon_ack", &ack.to_string()),
            auth: Some(auth),
            disconnect: false,
            credential_failure: None,
        }),
    );
}

fn logon_result(
    from: &SessionRef,
    shard: &Rc<Shard>,
    value: bool,
    reason: &str,
    auth: Option<AuthRecord>,
) {
    logon_result_with(from, shard, value, reason, auth, None);
}

fn logon_result_with(
    from: &SessionRef,
    shard: &Rc<Shard>,
    value: bool,
    reason: &str,
    auth: Option<AuthRecord>,
    credential_failure: Option<u64>,
) {
    let ack = json!({ "type": "authenticate", "value": value, "reason": reason }).to_string();
    shard.deliver(
        from.shard,
        &from.sid,
        SessionAction::App(crate::app::SpectraAction::LogonResult {
            ack: event_packet("obs_logon_ack", &ack),
            auth,
            disconnect: !value,
            credential_failure,
        }),
    );
}

/// Observer logon, step 5: create the match, or rejoin it with the group secret.
pub fn create_match(
    shard: &Rc<Shard>,
    logon: ObsLogon,
    from: SessionRef,
    owner: crate::limits::MatchOwner,
) {
    create_match_with(shard, logon, from, owner, new_secret());
}

/// In a cluster, a code not live on this node must be free in the whole cluster first: its
/// ownership record is created (or found to be this node's) before the match is.
fn create_in_cluster(
    shard: &Rc<Shard>,
    cluster: std::sync::Arc<crate::cluster::Cluster>,
    logon: ObsLogon,
    from: SessionRef,
    owner: crate::limits::MatchOwner,
) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let code = logon.group_code.clone();
        let secret = new_secret();
        let presented = logon.group_secret.clone();
        let refusal = match cluster.claim(&code, &secret, Some(&presented)).await {
            Claim::Mine(epoch) => {
                create_match_with(&shard, logon, from, owner, secret);
                fence(&shard, &cluster, &code, epoch);
                return;
            }
            Claim::Takeover(replay, epoch) => {
                take_over(&shard, logon, from, owner, &replay);
                fence(&shard, &cluster, &code, epoch);
                return;
            }
            Claim::Live(node) => {
                tracing::warn!("match {code}: observer logon refused: live on node {node}");
                format!("Game with Group Code {code} exists and is still live.")
            }
            Claim::Unavailable(why) => {
                tracing::warn!("match {code}: observer logon refused: cluster unavailable: {why}");
                format!(
                    "The cluster cannot confirm that group code {code} is free ({why}); try again shortly."
                )
            }
        };
        logon_result_with(&from, &shard, false, &refusal, None, None);
    })
    .detach();
}

/// After a claim: the match created here carries its epoch (its viewers' seqs go on from it);
/// when it could not be created after all, its record goes.
fn fence(shard: &Rc<Shard>, cluster: &crate::cluster::Cluster, code: &str, epoch: u64) {
    match matches(shard).borrow_mut().live.get_mut(code) {
        Some(entry) => entry.room.fence(epoch),
        None => cluster.release(code),
    }
}

/// Why a match could not be rebuilt from its log.
enum Unrebuilt {
    /// The logon record is not a valid logon (the reason).
    Invalid(String),
    /// The game ended within the log.
    Ended,
}

/// A match rebuilt from its logon record and its logged events (crash recovery, cluster
/// takeover): the events applied in order, its clock advanced to now. In backend mode a match
/// that saw `match_start` was registered then; its updates and completion go on (the
/// registration itself is not repeated).
fn rebuild(shard: &Shard, logon: &ObsLogon, events: &[Event]) -> Result<Match, Unrebuilt> {
    let mut game =
        Match::new(&logon.match_logon()).map_err(|e| Unrebuilt::Invalid(e.to_string()))?;
    if events
        .iter()
        .any(|event| game.apply(event) == Outcome::GameEnded)
    {
        return Err(Unrebuilt::Ended);
    }
    game.advance(crate::util::now_ms());
    let started = events
        .iter()
        .any(|e| e.kind() == Kind::Obs(ObsKind::MatchStart));
    if shard.backend.is_some() && started && !game.match_id_text().is_empty() {
        game.set_registered();
    }
    Ok(game)
}

/// In a cluster: the match's origin stopped and its observer logged on here with the group
/// secret; the match is rebuilt from its event log (like crash recovery from a replay file)
/// and continues here with the same secret; the observer gets `reconnected`.
fn take_over(
    shard: &Rc<Shard>,
    logon: ObsLogon,
    from: SessionRef,
    owner: crate::limits::MatchOwner,
    replay: &str,
) {
    let code = logon.group_code.clone();
    let refuse = |reason: &str| {
        tracing::warn!("match {code}: takeover refused: {reason}");
        logon_result(&from, shard, false, reason, None);
    };
    let file = match crate::replay::parse(replay) {
        Ok(f) => f,
        Err(e) => return refuse(&format!("The match's log cannot be read: {e}.")),
    };
    let Some((stored, _)) = file.logon() else {
        return refuse("The match's log has no logon record.");
    };
    let game = match rebuild(shard, &stored, &file.events) {
        Ok(g) => g,
        Err(Unrebuilt::Invalid(e)) => return refuse(&format!("Invalid logon data: {e}.")),
        Err(Unrebuilt::Ended) => return refuse(&format!("Game with Group Code {code} has ended.")),
    };
    let slot = match shard.global.limits.match_slot(owner) {
        Ok(slot) => slot,
        Err(refusal) => return refuse(&refusal.message()),
    };
    let secret = logon.group_secret.clone();
    let player = PlayerInfo::new(&logon.obs_name, true);
    let auth = AuthRecord {
        name: logon.obs_name.clone(),
        group_code: code.clone(),
        is_aux: false,
        player_id: String::new(),
        client_id: player.id.clone(),
    };
    let mut room = new_room(shard, &code);
    room.player_joined(shard, &code, player);
    room.inherit_viewers();
    let public = room.public().map(String::from);
    let seq = shard.global.match_seq.fetch_add(1, Ordering::Relaxed);
    let mut entry = Entry::new(game, secret.clone(), seq, room);
    entry.slot = Some(slot);
    note_claim(shard, &mut entry);
    if let Some(dir) = &shard.config.replay_dir {
        // This node's own replay log of the match: the same header and events.
        let start = file.start_ms();
        let path = dir.join(crate::replay::file_name(&code, crate::util::now_ms()));
        let header = crate::replay::header(&stored, &secret, start);
        let log = crate::replay::log::ReplayLog::create(path, &header);
        for event in &file.events {
            log.append(event.envelope());
        }
        entry.log = Some(log);
    }
    let events = file.events.len();
    {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        if reg.live.contains_key(&code) {
            drop(reg);
            return refuse(&format!(
                "Game with Group Code {code} exists and is still live."
            ));
        }
        reg.live.insert(code.clone(), entry);
        if let (Some(backend), Some(entry)) = (shard.backend.clone(), reg.live.get(&code)) {
            refresh_playercams(shard, backend, &code, &entry.game);
        }
    }
    shard.global.matches_running.fetch_add(1, Ordering::Relaxed);
    crate::metrics::gauge(|s| &s.matches, 1);
    tracing::info!(
        "match {code}: taken over on shard {} from the cluster's event log ({events} events)",
        shard.id
    );
    logon_accepted(&from, shard, "reconnected", auth, public.as_deref());
}

fn create_match_with(
    shard: &Rc<Shard>,
    logon: ObsLogon,
    from: SessionRef,
    owner: crate::limits::MatchOwner,
    secret: String,
) {
    let code = logon.group_code.clone();
    let player = PlayerInfo::new(&logon.obs_name, true);
    let auth = AuthRecord {
        name: logon.obs_name.clone(),
        group_code: code.clone(),
        is_aux: false,
        player_id: String::new(),
        client_id: player.id.clone(),
    };
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    if let Some(entry) = reg.live.get_mut(&code) {
        let same = !logon.group_secret.is_empty()
            && crate::util::constant_time_eq(
                logon.group_secret.as_bytes(),
                entry.secret.as_bytes(),
            );
        if same {
            entry.room.player_joined(shard, &code, player);
        }
        let public = entry.room.public().map(String::from);
        drop(reg);
        if same {
            tracing::info!(
                "match {code}: observer logon accepted (reconnected with the group secret)"
            );
            logon_accepted(&from, shard, "reconnected", auth, public.as_deref());
        } else {
            // A wrong secret (not a missing one) counts as a guess.
            let guessed = (!logon.group_secret.is_empty()).then_some(owner.key);
            let reason = format!("Game with Group Code {code} exists and is still live.");
            let how = if guessed.is_some() {
                "a wrong group secret"
            } else {
                "no group secret"
            };
            tracing::warn!("match {code}: observer logon refused ({how}): {reason}");
            logon_result_with(&from, shard, false, &reason, None, guessed);
        }
        return;
    }
    let slot = match shard.global.limits.match_slot(owner) {
        Ok(slot) => slot,
        Err(refusal) => {
            drop(reg);
            tracing::warn!("match {code}: logon refused: {}", refusal.message());
            return logon_result(&from, shard, false, &refusal.message(), None);
        }
    };
    match Match::new(&logon.match_logon()) {
        Ok(game) => {
            let mut room = new_room(shard, &code);
            room.player_joined(shard, &code, player);
            let public = room.public().map(String::from);
            let seq = shard.global.match_seq.fetch_add(1, Ordering::Relaxed);
            let mut entry = Entry::new(game, secret.clone(), seq, room);
            entry.slot = Some(slot);
            if let Some(dir) = &shard.config.replay_dir {
                let start = crate::util::now_ms();
                let path = dir.join(crate::replay::file_name(&code, start));
                let header = crate::replay::header(&logon, &secret, start);
                entry.log = Some(crate::replay::log::ReplayLog::create(path, &header));
            }
            if let Some(cluster) = crate::cluster::of(shard) {
                // The cluster's event log of the match (without its secret): what another
                // node rebuilds it from when this one stops.
                let header = crate::replay::header(&logon, "", crate::util::now_ms());
                cluster.log_start(&code, &header);
            }
            reg.live.insert(code.clone(), entry);
            if let (Some(backend), Some(entry)) = (shard.backend.clone(), reg.live.get(&code)) {
                refresh_playercams(shard, backend, &code, &entry.game);
            }
            drop(reg);
            shard.global.matches_running.fetch_add(1, Ordering::Relaxed);
            crate::metrics::gauge(|s| &s.matches, 1);
            tracing::info!(
                "match {code}: created on shard {} (observer logon accepted)",
                shard.id
            );
            logon_accepted(&from, shard, &secret, auth, public.as_deref());
        }
        Err(cause) => {
            drop(reg);
            tracing::warn!("match {code}: logon rejected: {cause}");
            let reason = format!("Invalid logon data: {cause}.");
            logon_result(&from, shard, false, &reason, None);
        }
    }
}

/// Crash recovery at start-up: rebuilds the live matches this shard owns from their replay
/// logs (see `replay::recover`), keeping their group secrets; their logs are continued.
pub fn recover(shard: &Rc<Shard>) {
    let (Some(dir), true) = (&shard.config.replay_dir, shard.config.recover_matches) else {
        return;
    };
    let found =
        crate::replay::recover::candidates(dir, shard.id, shard.shards(), shard.config.match_idle);
    for candidate in found {
        let Some((logon, secret)) = candidate.file.logon() else {
            continue;
        };
        let code = logon.group_code.clone();
        let name = candidate.path.display().to_string();
        let game = match rebuild(shard, &logon, &candidate.file.events) {
            Ok(game) => game,
            Err(Unrebuilt::Invalid(e)) => {
                tracing::warn!("recovery: {name}: the logon is not valid ({e}); skipped");
                continue;
            }
            // The game ended before the stop: nothing to recover.
            Err(Unrebuilt::Ended) => continue,
        };
        let seq = shard.global.match_seq.fetch_add(1, Ordering::Relaxed);
        let mut entry = Entry::new(game, secret, seq, new_room(shard, &code));
        note_claim(shard, &mut entry);
        entry.log = Some(crate::replay::log::ReplayLog::resume(
            candidate.path.clone(),
            candidate.file.valid_len,
        ));
        let events = candidate.file.events.len();
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        if reg.live.contains_key(&code) {
            continue;
        }
        let secret_for_claim = entry.secret.clone();
        reg.live.insert(code.clone(), entry);
        if let Some(cluster) = crate::cluster::of(shard) {
            // The recovered match is this node's again (its record may name this node's
            // previous id).
            let code = code.clone();
            let shard = shard.clone();
            glommio::spawn_local(async move {
                match cluster.claim(&code, &secret_for_claim, None).await {
                    Claim::Mine(epoch) => {
                        if let Some(entry) = matches(&shard).borrow_mut().live.get_mut(&code) {
                            entry.room.fence(epoch);
                        }
                    }
                    // Another node serves it now: this node's copy is not the match any more.
                    Claim::Live(node) => step_down(
                        &shard,
                        &code,
                        &format!("Group code {code} is served by node {node} now; log on again."),
                    ),
                    claim => {
                        tracing::warn!("match {code}: recovered, but the cluster says {claim:?}")
                    }
                }
            })
            .detach();
        }
        if let (Some(backend), Some(entry)) = (shard.backend.clone(), reg.live.get(&code)) {
            refresh_playercams(shard, backend, &code, &entry.game);
        }
        shard.global.matches_running.fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge(|s| &s.matches, 1);
        let skipped = candidate.file.skipped;
        tracing::info!(
            "match {code}: recovered on shard {} from {name} ({events} events{})",
            shard.id,
            if skipped > 0 {
                format!(", {skipped} unreadable line(s) skipped")
            } else {
                String::new()
            }
        );
    }
}

/// Backend calls an event triggers: register (and stats) at `match_start`, update at each new
/// round. They run on the backend workers; the shard goes on.
fn backend_hooks(
    shard: &Rc<Shard>,
    backend: std::sync::Arc<crate::backend::Backend>,
    code: &str,
    entry: &mut Entry,
    event: &Event,
) {
    let kind = event.kind();
    let data = event.data();
    if kind == Kind::Obs(ObsKind::RoundInfo)
        && data
            .and_then(|d| d.get("roundPhase"))
            .and_then(Value::as_str)
            == Some("shopping")
    {
        refresh_playercams(shard, backend.clone(), code, &entry.game);
    }
    if kind == Kind::Obs(ObsKind::MatchStart) {
        let (id, state) = (
            entry.game.match_id_text(),
            entry.game.backend_state(&entry.secret),
        );
        glommio::spawn_local(match_start_calls(
            shard.clone(),
            backend,
            code.to_string(),
            id,
            state,
        ))
        .detach();
    } else if kind == Kind::Obs(ObsKind::RoundInfo)
        && data
            .and_then(|d| d.get("roundPhase"))
            .and_then(Value::as_str)
            == Some("shopping")
        && data.and_then(|d| d.get("roundNumber")) != Some(&json!(1))
        && entry.game.is_registered()
    {
        let (id, state) = (
            entry.game.match_id_text(),
            entry.game.backend_state(&entry.secret),
        );
        glommio::spawn_local(async move {
            let _ = backend.match_call("PUT", &id, "update", state).await;
        })
        .detach();
    }
}

/// Asks the playercam service for name overrides and player cams; applies an acceptable answer.
fn refresh_playercams(
    shard: &Rc<Shard>,
    backend: std::sync::Arc<crate::backend::Backend>,
    code: &str,
    game: &Match,
) {
    let (identifier, secret) = game.playercam_ids();
    if identifier.is_empty() || secret.is_empty() || backend.config.playercam_url.is_empty() {
        return;
    }
    let (shard, code) = (shard.clone(), code.to_string());
    glommio::spawn_local(async move {
        if let Some((overrides, enabled)) = backend.playercams(&identifier, &secret).await
            && let Some(entry) = matches(&shard).borrow_mut().live.get_mut(&code)
        {
            entry.game.apply_playercams(overrides, enabled);
        }
    })
    .detach();
}

/// `match_start` in backend mode: register, then the stats calls in sequence, then the players'
/// MMR tiers (ingest spec §8.2), each step on the worker pool.
async fn match_start_calls(
    shard: Rc<Shard>,
    backend: std::sync::Arc<crate::backend::Backend>,
    code: String,
    match_id: String,
    state: Value,
) {
    // (The caller holds the registry: nothing here may touch it before the first await.)
    if backend
        .match_call("POST", &match_id, "register", state)
        .await
        .is_err()
    {
        return; // network failure: the match stays unregistered (logged by the worker)
    }
    let puuids = {
        let reg_cell = matches(&shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(&code) else {
            return;
        };
        entry.game.set_registered();
        [entry.game.team_puuids(0), entry.game.team_puuids(1)]
    };
    let _ = backend
        .stats("/addMatch", json!({"code": code, "matchUuid": match_id}))
        .await;
    let first = puuids[0].first().cloned().unwrap_or_default();
    let _ = backend
        .stats(
            "/updateMatchRegion",
            json!({"matchUuid": match_id, "accountPuuid": first}),
        )
        .await;
    let all: Vec<String> = puuids.concat();
    if let Ok((200, body)) = backend
        .stats(
            "/fetchPlayerMMR",
            json!({"matchUuid": match_id, "accountPuuids": all}),
        )
        .await
    {
        let results = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("results").and_then(Value::as_array).cloned())
            .unwrap_or_default();
        if let Some(entry) = matches(&shard).borrow_mut().live.get_mut(&code) {
            entry.game.apply_mmr(&results);
        }
    }
}

/// `complete` for a registered match that ends or expires; after a game end, stats are
/// fetched later.
fn complete_call(shard: &Rc<Shard>, entry: &Entry, fetch_stats: bool) {
    let Some(backend) = shard.backend.clone() else {
        return;
    };
    if !entry.game.is_registered() {
        return;
    }
    let id = entry.game.match_id_text();
    let state = entry.game.backend_state(&entry.secret);
    glommio::spawn_local(async move {
        let _ = backend.match_call("PUT", &id, "complete", state).await;
        if fetch_stats {
            glommio::timer::sleep(backend.config.stats_fetch_delay).await;
            let _ = backend
                .stats("/fetchMatchStats", json!({"matchUuid": id}))
                .await;
        }
    })
    .detach();
}

/// A message for the matches this shard owns.
pub fn on_shard_msg(shard: &Rc<Shard>, msg: MatchMsg) {
    match msg {
        MatchMsg::Create { logon, from, owner } => {
            let local = matches(shard).borrow().live.contains_key(&logon.group_code);
            match crate::cluster::of(shard) {
                Some(cluster) if !local => create_in_cluster(shard, cluster, *logon, from, owner),
                _ => create_match(shard, *logon, from, owner),
            }
        }
        MatchMsg::FindMatchId { match_id, from } => {
            let claims = find_match_id(shard, &match_id);
            shard.reply(from, ReplyBody::MatchIdClaims(claims));
        }
        MatchMsg::Event { code, event } => ingest_event(shard, &code, event),
        MatchMsg::AuxDisconnected { code, player_id } => aux_disconnected(shard, &code, &player_id),
        MatchMsg::SnapshotRequest { code, from } => snapshot_request(shard, &code, from),
        MatchMsg::PlayerPresence { code, join, leave } => {
            player_presence(shard, &code, join, leave)
        }
        MatchMsg::SpectatorJoin {
            code,
            spectator,
            via_public,
        } => match public_viewer(shard, &code, via_public) {
            Viewer::Match(code) => spectator_join(shard, &code, spectator),
            Viewer::Elsewhere(group) => shard.send_to(
                shard.owner_of(&group),
                ShardMsg::Match(MatchMsg::SpectatorJoin {
                    code: group,
                    spectator,
                    via_public: true,
                }),
            ),
            Viewer::Unknown => not_here(
                shard,
                MatchMsg::SpectatorJoin {
                    code,
                    spectator,
                    via_public,
                },
            ),
            Viewer::Refused => unanswered(
                shard,
                MatchMsg::SpectatorJoin {
                    code,
                    spectator,
                    via_public,
                },
            ),
        },
        MatchMsg::SpectatorLeave {
            code,
            spectator_id,
            reason,
        } => spectator_leave(shard, &code, &spectator_id, reason),
        MatchMsg::StreamJoin {
            code,
            shard: to,
            conn,
            last_seq,
            node,
            via_public,
        } => {
            let msg = |code, via_public| MatchMsg::StreamJoin {
                code,
                shard: to,
                conn,
                last_seq,
                node: node.clone(),
                via_public,
            };
            match public_viewer(shard, &code, via_public) {
                Viewer::Match(code) => stream_join(shard, &code, (to, conn, node), last_seq),
                Viewer::Elsewhere(group) => {
                    shard.send_to(shard.owner_of(&group), ShardMsg::Match(msg(group, true)))
                }
                Viewer::Unknown => not_here(shard, msg(code, via_public)),
                Viewer::Refused => unanswered(shard, msg(code, via_public)),
            }
        }
        MatchMsg::Alias {
            public,
            group,
            room,
        } => {
            let reg_cell = matches(shard);
            let mut reg = reg_cell.borrow_mut();
            match group {
                Some(group) => {
                    reg.aliases.insert(public, (group, room));
                }
                None if reg.aliases.get(&public).is_some_and(|(_, r)| *r == room) => {
                    reg.aliases.remove(&public);
                }
                None => {}
            }
        }
        MatchMsg::StreamLeave { code } => {
            let reg_cell = matches(shard);
            let mut reg = reg_cell.borrow_mut();
            if let Some(entry) = reg.live.get_mut(&code) {
                entry.room.stream_leave();
            } else {
                drop(reg);
                forward(shard, MatchMsg::StreamLeave { code });
            }
        }
    }
}

/// Where a public viewer's code (a spectator's room code, an HTTP stream's code) leads.
enum Viewer {
    /// Handle it here with this code (no delay, or the group code a public code named).
    Match(String),
    /// A public code of this shard's: the match is this group code, on its owner shard.
    Elsewhere(String),
    /// A public code this shard does not know (perhaps another node's).
    Unknown,
    /// With a delay, a code that is not a public code: refused like an unknown room.
    Refused,
}

/// With a spectator delay, public viewers name a match only by its public code (never by its
/// group code, which would show them the match before the delay); without one, by its code.
fn public_viewer(shard: &Rc<Shard>, code: &str, via_public: bool) -> Viewer {
    if via_public || shard.config.public_code_key.is_none() {
        return Viewer::Match(code.to_string());
    }
    if !crate::code::is_public_form(code) {
        return Viewer::Refused;
    }
    let reg_cell = matches(shard);
    let reg = reg_cell.borrow();
    // (Public codes are upper-case: `code::public_code`.)
    let found = reg
        .aliases
        .get(&code.to_ascii_uppercase())
        .map(|(group, _)| group.clone());
    match found {
        Some(group) if shard.owner_of(&group) == shard.id => Viewer::Match(group),
        Some(group) => Viewer::Elsewhere(group),
        None => Viewer::Unknown,
    }
}

/// A viewer's message for a code no match here has: to the cluster (perhaps another node's
/// match), else answered as for no such match.
fn not_here(shard: &Rc<Shard>, msg: MatchMsg) {
    match crate::cluster::of(shard) {
        Some(cluster) => cluster.forward(msg, shard.id),
        None => unanswered(shard, msg),
    }
}

/// The live match of `code` on this shard, matched case-insensitively (spectators and HTTP
/// clients type codes): its key.
fn find_code(reg: &Registry, code: &str) -> Option<String> {
    if reg.live.contains_key(code) {
        return Some(code.to_string());
    }
    reg.live
        .keys()
        .find(|k| k.eq_ignore_ascii_case(code))
        .cloned()
}

/// An HTTP event stream of `code` starts (`viewer::sse`); answered on its shard.
fn stream_join(shard: &Rc<Shard>, code: &str, to: (usize, u64, String), last_seq: Option<u64>) {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    match find_code(&reg, code).and_then(|k| reg.live.get_mut(&k).map(|e| (k, e))) {
        Some((key, entry)) => entry.room.stream_join(shard, &key, to, last_seq),
        None => {
            drop(reg);
            // Perhaps another node's match: its origin answers the stream.
            let msg = MatchMsg::StreamJoin {
                code: code.to_string(),
                shard: to.0,
                conn: to.1,
                last_seq,
                node: to.2,
                via_public: shard.config.public_code_key.is_some(),
            };
            not_here(shard, msg);
        }
    }
}

/// In a cluster, a message for a match that does not live here goes to its origin; it is
/// dropped on a single node.
fn forward(shard: &Rc<Shard>, msg: MatchMsg) {
    if let Some(cluster) = crate::cluster::of(shard) {
        cluster.forward(msg, shard.id);
    }
}

/// Another node forwarded a message for the owner of a match: handled (and acknowledged) when
/// the match lives here; others stay silent (the origin answers).
pub fn remote_ingest(shard: &Rc<Shard>, mut msg: MatchMsg, reply: String) {
    // A viewer's public code this shard keeps: handled (resolved) here.
    let public = matches!(
        &msg,
        MatchMsg::SpectatorJoin {
            via_public: false,
            ..
        } | MatchMsg::StreamJoin {
            via_public: false,
            ..
        }
    ) && msg.code().is_some_and(|c| public_group(shard, c).is_some());
    if public {
        if let Some(cluster) = crate::cluster::of(shard) {
            cluster.ack(reply);
        }
        return on_shard_msg(shard, msg);
    }
    let key = msg
        .code()
        .and_then(|code| find_code(&matches(shard).borrow(), code));
    let (Some(key), Some(code)) = (key, msg.code_mut()) else {
        return;
    };
    // Handled under the match's own spelling of the code: never forwarded again from here.
    *code = key;
    if let Some(cluster) = crate::cluster::of(shard) {
        cluster.ack(reply);
    }
    on_shard_msg(shard, msg);
}

/// No node has the match a message was for: joins are answered as on a single node.
pub fn unanswered(shard: &Rc<Shard>, msg: MatchMsg) {
    match msg {
        MatchMsg::SpectatorJoin { spectator, .. } => {
            let text =
                wire::join_failed("ROOM_NOT_FOUND", "The requested room could not be found.");
            crate::spectator::room::direct(shard, &spectator, vec![text], None);
        }
        MatchMsg::StreamJoin {
            shard: to, conn, ..
        } => {
            shard.send_to(to, ShardMsg::StreamStart { conn, start: None });
        }
        _ => {}
    }
}

/// The group code of a public code this shard keeps (`None` without a spectator delay).
pub fn public_group(shard: &Rc<Shard>, code: &str) -> Option<String> {
    shard.config.public_code_key.as_ref()?;
    match public_viewer(shard, code, false) {
        Viewer::Match(group) | Viewer::Elsewhere(group) => Some(group),
        Viewer::Unknown | Viewer::Refused => None,
    }
}

/// `GET /matches/{code}`: the state viewers see now, versioned by its seq (also of an ended
/// match whose delayed viewers have not reached its end yet).
pub fn viewer_snapshot(shard: &Rc<Shard>, code: &str) -> RestAnswer {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    let Some(entry) = find_code(&reg, code).and_then(|k| reg.live.get_mut(&k)) else {
        let closing = reg
            .closing
            .values()
            .find(|c| c.code.eq_ignore_ascii_case(code))
            .and_then(|c| c.room.released());
        return match closing {
            Some((seq, json)) => RestAnswer {
                status: 200,
                body: json.to_string(),
                etag: Some(seq),
            },
            None => RestAnswer::error(404, crate::code::NO_LIVE_MATCH),
        };
    };
    if let Some((seq, json)) = entry.room.released() {
        return RestAnswer {
            status: 200,
            body: json.to_string(),
            etag: Some(seq),
        };
    }
    if shard.config.spectator_delay.is_zero() {
        // Not broadcast yet: the current state (seq 0).
        let json = current_json(entry);
        return RestAnswer {
            status: 200,
            body: json.to_string(),
            etag: Some(0),
        };
    }
    RestAnswer::error(
        404,
        "This match has no public state yet: it is younger than the spectator delay",
    )
}

/// `GET /matches`: this shard's live matches (code, score, phase, spectators, streams).
pub fn live_list(shard: &Rc<Shard>) -> Vec<Value> {
    let reg_cell = matches(shard);
    let reg = reg_cell.borrow();
    reg.live
        .iter()
        .map(|(code, e)| {
            let summary = e.game.summary();
            json!({
                "code": code,
                "publicCode": e.room.public(),
                "score": summary["score"],
                "teams": summary["teams"],
                "map": summary["map"],
                "round": summary["roundNumber"],
                "phase": summary["roundPhase"],
                "spectators": e.room.spectator_count(),
                "streams": e.room.stream_count(),
            })
        })
        .collect()
}

/// An accepted event for a match of this shard.
pub fn ingest_event(shard: &Rc<Shard>, code: &str, event: Event) {
    let mut flush_in = None;
    let outcome = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(code) else {
            // The match ended meanwhile — or, in a cluster, lives on another node (an aux
            // client of it logged on here).
            drop(reg);
            forward(
                shard,
                MatchMsg::Event {
                    code: code.to_string(),
                    event,
                },
            );
            return;
        };
        // Logged before it is applied, like the original (ignored events included).
        if let Some(log) = &entry.log {
            log.append(event.envelope());
        }
        if let Some(cluster) = crate::cluster::of(shard) {
            cluster.log_event(code, event.envelope());
        }
        let outcome = entry.game.apply(&event);
        crate::metrics::bump(|s| &s.events);
        let claimed_before = entry.claim.as_ref().map(|c| c.0.clone());
        note_claim(shard, entry);
        if let Some((id, _)) = &entry.claim
            && claimed_before.as_ref() != Some(id)
            && let Some(cluster) = crate::cluster::of(shard)
        {
            // Aux clients of this Valorant match may log on at any node.
            cluster.put(
                crate::cluster::Shared::MatchIds,
                id,
                json!({ "code": code }).to_string(),
            );
        }
        if !entry.flush_pending && entry.game.event_number() > entry.last_sent_event {
            entry.flush_pending = true;
            let wait = entry.budget.wait(Instant::now(), shard.config.tick);
            flush_in = Some(wait.max(COALESCE));
        }
        let lobby = entry.game.lobby_state();
        let match_id = entry.game.match_id_text();
        // With a publication scheduled, a lobby change goes out with that state.
        let state_follows = entry.flush_pending;
        entry
            .room
            .lobby_state(shard, code, lobby, &match_id, state_follows);
        if let Some(backend) = shard.backend.clone() {
            backend_hooks(shard, backend, code, entry, &event);
        }
        outcome
    };
    if outcome == Outcome::GameEnded {
        end_match(shard, code);
    } else if let Some(delay) = flush_in {
        schedule_flush(shard, code, delay);
    }
}

/// Records when the match first reported its current Valorant match id.
fn note_claim(shard: &Shard, entry: &mut Entry) {
    let id = entry.game.match_id_text();
    if id.is_empty() || entry.claim.as_ref().is_some_and(|c| c.0 == id) {
        return;
    }
    let at = shard.global.match_seq.fetch_add(1, Ordering::Relaxed);
    entry.claim = Some((id, at));
}

/// How long the first change after a quiet period waits for companions (an observer's event
/// and the kit's latency marker travel together) before it is published.
const COALESCE: Duration = Duration::from_millis(5);

/// Publishes a changed match early instead of at the next tick: as soon as its broadcast budget
/// allows, and at least `COALESCE` after the change. The periodic tick leaves matches with a
/// pending flush alone.
fn schedule_flush(shard: &Rc<Shard>, code: &str, delay: Duration) {
    let (shard, code) = (shard.clone(), code.to_string());
    glommio::spawn_local(async move {
        glommio::timer::sleep(delay).await;
        flush_match(&shard, &code);
    })
    .detach();
}

fn flush_match(shard: &Rc<Shard>, code: &str) {
    let frames = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(code) else {
            return;
        };
        entry.flush_pending = false;
        entry.game.advance(crate::util::now_ms());
        let n = entry.game.event_number();
        if n <= entry.last_sent_event {
            // Published meanwhile; room messages held for this publication go now.
            entry.room.release(shard, code);
            return;
        }
        let now = Instant::now();
        if !entry.budget.take(now, shard.config.tick) {
            // Not yet (a publication meanwhile spent the budget): when it allows.
            entry.flush_pending = true;
            let wait = entry.budget.wait(now, shard.config.tick);
            drop(reg);
            schedule_flush(shard, code, wait.max(Duration::from_micros(200)));
            return;
        }
        let frames = current_frames(shard, entry);
        entry.last_sent_event = n;
        entry.last_sent_at = now;
        frames
    };
    publish(shard, code, frames);
}

pub fn aux_disconnected(shard: &Rc<Shard>, code: &str, player_id: &str) {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    if let Some(entry) = reg.live.get_mut(code) {
        entry.game.aux_disconnected(player_id);
    } else {
        drop(reg);
        forward(
            shard,
            MatchMsg::AuxDisconnected {
                code: code.to_string(),
                player_id: player_id.to_string(),
            },
        );
    }
}

/// A match that changed this recently counts as observed for the aux logon's choice.
const CLAIM_ACTIVE: Duration = Duration::from_secs(60);

/// This shard's live matches that reported `match_id`.
pub fn find_match_id(shard: &Rc<Shard>, match_id: &str) -> Vec<MatchIdClaim> {
    matches(shard)
        .borrow()
        .live
        .iter()
        .filter(|(_, e)| e.game.match_id_text() == match_id)
        .map(|(code, e)| MatchIdClaim {
            claimed: e.claim.as_ref().map_or(e.seq, |c| c.1),
            active: e.last_sent_at.elapsed() < CLAIM_ACTIVE,
            group_code: code.clone(),
        })
        .collect()
}

/// The one match an aux client of `match_id` joins, among every live match that reported it.
/// The first claim among the matches being observed wins: the real observer reports the id when
/// the game starts, and anyone else can only copy it from the overlay afterwards, so another key
/// holder cannot capture the players' aux clients by re-sending it. When none is observed any
/// more, the newest claim wins (an operator who restarted the match under a new group code).
pub fn pick_match_id_claim(mut claims: Vec<MatchIdClaim>) -> Option<MatchIdClaim> {
    claims.sort_by_key(|c| c.claimed);
    match claims.iter().position(|c| c.active) {
        Some(i) => Some(claims.swap_remove(i)),
        None => claims.pop(),
    }
}

/// Encodes a snapshot once for every transport. With connection state recovery on, the
/// event carries the state's counter as its offset (what the overlay saw last).
pub fn encode_frames(shard: &Shard, snapshot_json: &str, counter: u64) -> FrameSet {
    let offset = shard.config.recovery_window.map(|_| counter.to_string());
    let packet = event_packet_buf("match_data", snapshot_json, offset.as_deref());
    FrameSet::of_packet(packet, &mut shard.compressor.borrow_mut())
}

/// The match's snapshot serialised once into both its JSON text and its `match_data` frames
/// (`encode_frames(shard, &json, counter)`, without a second pass to escape the JSON).
fn encode_snapshot(
    shard: &Shard,
    game: &Match,
    counter: u64,
    size_hint: usize,
) -> (FrameSet, String) {
    let offset = shard.config.recovery_window.map(|_| counter.to_string());
    // Parts kept with their JSON give their escaped text too: copied, not escaped again.
    match event_packet_of_known(
        "match_data",
        &game.snapshot_serialize(),
        offset.as_deref(),
        size_hint,
        &|fragment| game.escaped_part(fragment),
    ) {
        Some((packet, json)) => (
            FrameSet::of_packet(packet, &mut shard.compressor.borrow_mut()),
            json,
        ),
        None => {
            let json = game.snapshot_json();
            (encode_frames(shard, &json, counter), json)
        }
    }
}

/// The current frames of a match, encoded at most once per counter value.
fn current_frames(shard: &Shard, entry: &mut Entry) -> FrameSet {
    let n = entry.game.event_number();
    if let Some((at, frames)) = &entry.frames
        && *at == n
    {
        return frames.clone();
    }
    let frames = match &entry.json {
        Some((at, json)) if *at == n => encode_frames(shard, json, n),
        _ => {
            let hint = entry
                .json
                .as_ref()
                .map_or(16 * 1024, |(_, j)| j.len() + 256);
            let (frames, json) = encode_snapshot(shard, &entry.game, n, hint);
            entry.json = Some((n, Rc::from(json)));
            frames
        }
    };
    entry.frames = Some((n, frames.clone()));
    frames
}

/// The current snapshot JSON, serialised at most once per counter value.
fn current_json(entry: &mut Entry) -> Rc<str> {
    let n = entry.game.event_number();
    match &entry.json {
        Some((at, json)) if *at == n => json.clone(),
        _ => {
            let json: Rc<str> = Rc::from(entry.game.snapshot_json());
            entry.json = Some((n, json.clone()));
            json
        }
    }
}

/// The spectators' `GameData` message for the current state before the first broadcast (seq 0).
fn game_data_text(entry: &mut Entry) -> Bytes {
    let from = entry.room.authority();
    game_data(&from, &current_json(entry), 0)
}

/// A spectator asks to join the room of `code` (matched case-insensitively).
pub fn spectator_join(shard: &Rc<Shard>, code: &str, spectator: SpectatorInfo) {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    let key = find_code(&reg, code);
    let Some(entry) = key.as_ref().and_then(|k| reg.live.get_mut(k)) else {
        drop(reg);
        // Perhaps another node's match: its origin keeps the room.
        let via_public = shard.config.public_code_key.is_some();
        return not_here(
            shard,
            MatchMsg::SpectatorJoin {
                code: code.to_string(),
                spectator,
                via_public,
            },
        );
    };
    let data = game_data_text(entry);
    let code = key.unwrap_or_default();
    entry
        .room
        .join(shard, &code, JoinRequest { spectator }, |_| data);
}

pub fn spectator_leave(shard: &Rc<Shard>, code: &str, spectator_id: &str, reason: LeaveReason) {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    if let Some(entry) = reg.live.get_mut(code) {
        entry.room.leave(shard, code, spectator_id, reason.as_str());
    } else {
        drop(reg);
        forward(
            shard,
            MatchMsg::SpectatorLeave {
                code: code.to_string(),
                spectator_id: spectator_id.to_string(),
                reason,
            },
        );
    }
}

/// An ingest client of the match connected or went away.
pub fn player_presence(
    shard: &Rc<Shard>,
    code: &str,
    join: Option<PlayerInfo>,
    leave: Option<String>,
) {
    let reg_cell = matches(shard);
    let mut reg = reg_cell.borrow_mut();
    let Some(entry) = reg.live.get_mut(code) else {
        drop(reg);
        let msg = MatchMsg::PlayerPresence {
            code: code.to_string(),
            join,
            leave,
        };
        forward(shard, msg);
        return;
    };
    if let Some(p) = join {
        entry.room.player_joined(shard, code, p);
    }
    if let Some(id) = leave {
        entry.room.player_left(shard, code, &id);
    }
}

/// An overlay logged on: it alone gets the current snapshot.
pub fn snapshot_request(shard: &Rc<Shard>, code: &str, from: SessionRef) {
    let frames = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(code) else {
            drop(reg);
            // Another node's match: the newest frames this node received of it.
            if let Some(cluster) = crate::cluster::of(shard) {
                cluster.latest(code, from.shard, &from.sid);
            }
            return;
        };
        current_frames(shard, entry)
    };
    shard.deliver(from.shard, &from.sid, SessionAction::Frames(frames));
}

/// Another node asks for the current frames of `code` (its first viewer arrived there): answered
/// when the match lives here; silence otherwise (the origin answers).
pub fn snapshot_for_cluster(shard: &Rc<Shard>, code: &str, reply: String) {
    let Some(cluster) = crate::cluster::of(shard) else {
        return;
    };
    let frames = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(code) else {
            return;
        };
        current_frames(shard, entry)
    };
    let frame = RoomFrame::State {
        overlay: Some(frames),
        viewers: None,
    };
    cluster.reply(code, reply, Some(&frame));
}

/// Publishes a new state to the room's subscribers on every shard: the overlays' frames, and
/// the viewers' (built once by the room's viewer stream) unless the spectator delay holds them.
pub fn publish(shard: &Rc<Shard>, code: &str, frames: FrameSet) {
    let viewers = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        match reg.live.get_mut(code) {
            Some(entry) => {
                let json = current_json(entry);
                let game = &entry.game;
                entry
                    .room
                    .push_state(shard, code, || Rc::new(game.snapshot()), json)
            }
            None => None,
        }
    };
    shard.fanout.publish(
        shard,
        code,
        RoomFrame::State {
            overlay: Some(frames),
            viewers,
        },
    );
}

/// Shutdown: publishes every match's change that has not gone out yet (final snapshots).
pub fn publish_unsent(shard: &Rc<Shard>) {
    let mut to_publish = Vec::new();
    {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        for (code, entry) in reg.live.iter_mut() {
            entry.game.advance(crate::util::now_ms());
            if entry.game.event_number() > entry.last_sent_event {
                entry.last_sent_event = entry.game.event_number();
                entry.flush_pending = false;
                to_publish.push((code.clone(), current_frames(shard, entry)));
            }
        }
    }
    for (code, frames) in to_publish {
        publish(shard, &code, frames);
    }
}

/// Shutdown: closes every replay log; the futures resolve once each is written.
pub fn close_logs(shard: &Rc<Shard>) -> Vec<impl std::future::Future<Output = ()> + use<>> {
    let reg_cell = matches(shard);
    let reg = reg_cell.borrow();
    reg.live
        .values()
        .filter_map(|e| e.log.as_ref())
        .map(|log| {
            log.close();
            log.finished()
        })
        .collect()
}

/// One broadcast tick: every changed match is encoded once and published; idle ones removed.
pub fn tick(shard: &Rc<Shard>) {
    let idle_limit = shard.config.match_idle;
    let mut to_publish: Vec<(String, FrameSet)> = Vec::new();
    let mut idle: Vec<String> = Vec::new();
    {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let now = Instant::now();
        let now_ms = crate::util::now_ms();
        for (code, entry) in reg.live.iter_mut() {
            entry.room.flush_presence(shard, code);
            if entry.flush_pending {
                // Its early publication is scheduled; it also releases what the room holds
                // (room messages waiting to go out with that state).
                continue;
            }
            entry.room.release(shard, code);
            entry.game.advance(now_ms);
            let n = entry.game.event_number();
            if n > entry.last_sent_event && entry.budget.take(now, shard.config.tick) {
                let frames = current_frames(shard, entry);
                entry.last_sent_event = n;
                entry.last_sent_at = now;
                to_publish.push((code.clone(), frames));
            } else if now.duration_since(entry.last_sent_at) > idle_limit {
                idle.push(code.clone());
            }
        }
        reg.finished.retain(|_, info| info.expires > now);
    }
    for (code, frames) in to_publish {
        publish(shard, &code, frames);
    }
    for code in idle {
        tracing::info!(
            "match {code}: removed after {}s without events",
            idle_limit.as_secs()
        );
        if let Some(entry) = matches(shard).borrow().live.get(&code) {
            complete_call(shard, entry, false);
        }
        remove_match(shard, &code);
    }
}

/// Game end: the final state is broadcast (the original never sent it), the team info is kept
/// for the post-match pages, then the match is removed.
fn end_match(shard: &Rc<Shard>, code: &str) {
    let frames = {
        let reg_cell = matches(shard);
        let mut reg = reg_cell.borrow_mut();
        let Some(entry) = reg.live.get_mut(code) else {
            return;
        };
        let frames = current_frames(shard, entry);
        entry.last_sent_event = entry.game.event_number();
        let (r0, r1) = entry.game.teams_rounds_won();
        let body = json!({
            "leftTeam": entry.game.logon_left,
            "rightTeam": entry.game.logon_right,
            "higherScore": if r0 > r1 { 0 } else { 1 },
            "tournamentInfo": entry.game.tool("tournamentInfo"),
            "sponsorInfo": entry.game.tool("sponsorInfo"),
            "isSupporter": entry.game.org_is_supporter(),
        });
        complete_call(shard, entry, true);
        (frames, body)
    };
    publish(shard, code, frames.0);
    tracing::info!("match {code}: game ended");
    remove_match_with(shard, code, Some(frames.1));
}

/// Publishes a finished game's team info (`/getTeamInfoForCode`, and to the cluster).
fn publish_team_info(shard: &Rc<Shard>, code: &str, body: Value) {
    if let Some(cluster) = crate::cluster::of(shard) {
        cluster.put(crate::cluster::Shared::TeamInfo, code, body.to_string());
    }
    // Kept one hour from its publication (QUIRK G1: the original counted from creation).
    matches(shard).borrow_mut().finished.insert(
        code.to_string(),
        TeamInfo {
            body,
            expires: Instant::now() + TEAM_INFO_TTL,
        },
    );
}

/// Removes a match and disconnects its ingest clients on every shard.
pub fn remove_match(shard: &Rc<Shard>, code: &str) {
    remove_match_with(shard, code, None);
}

/// Removes a match (`team_info`: its finished game's). With a spectator delay its room stays
/// until the delayed viewers reach the end; only then are the result (team info), the match's
/// leaving the counts and its public code published or dropped (the public sees the end when
/// the delayed viewers do, not before).
fn remove_match_with(shard: &Rc<Shard>, code: &str, team_info: Option<Value>) {
    let Some(mut entry) = matches(shard).borrow_mut().live.remove(code) else {
        return;
    };
    if let Some(cluster) = crate::cluster::of(shard) {
        cluster.release(code);
    }
    let mut room = std::mem::replace(&mut entry.room, Room::new(Duration::ZERO));
    if room.close(shard, code) {
        let id = room.id.clone();
        matches(shard).borrow_mut().closing.insert(
            id.clone(),
            Closing {
                code: code.to_string(),
                room,
                team_info,
            },
        );
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                let due = matches(&shard)
                    .borrow()
                    .closing
                    .get(&id)
                    .and_then(|c| c.room.next_due());
                let Some(at) = due else { break };
                glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                // Out of the registry while it publishes (nothing it calls borrows it).
                let taken = matches(&shard).borrow_mut().closing.remove(&id);
                if let Some(mut closing) = taken {
                    closing.room.release(&shard, &closing.code);
                    matches(&shard)
                        .borrow_mut()
                        .closing
                        .insert(id.clone(), closing);
                }
            }
            let done = matches(&shard).borrow_mut().closing.remove(&id);
            if let Some(closing) = done {
                closed(&shard, &closing.code, &closing.room, closing.team_info);
            }
        })
        .detach();
    } else {
        closed(shard, code, &room, team_info);
    }
    kick_group(shard, code, None);
}

/// Disconnects the ingest clients of `code` on every shard.
fn kick_group(shard: &Rc<Shard>, code: &str, reason: Option<&str>) {
    shard.mesh.send_to_others(shard.id, || ShardMsg::KickGroup {
        code: code.to_string(),
        reason: reason.map(String::from),
    });
    shard.send_to(
        shard.id,
        ShardMsg::KickGroup {
            code: code.to_string(),
            reason: reason.map(String::from),
        },
    );
}

/// In a cluster: another node took the match of `code` over (`../shared/spec/cluster.md`
/// §6.4). It stops here without ending: no more events, timers or publications, its ingest
/// clients are disconnected with the reason (they reconnect through the load balancer), its
/// replay log is closed and kept, its record and event log are left to the new origin. Its
/// local overlays and spectators stay connected: they are subscribers of the code like an
/// edge's, and get the new origin's frames from NATS from now on.
pub fn step_down(shard: &Rc<Shard>, code: &str, reason: &str) {
    let Some(entry) = matches(shard).borrow_mut().live.remove(code) else {
        return;
    };
    if let Some(log) = &entry.log {
        log.close();
    }
    forget_public(shard, &entry.room);
    shard.global.matches_running.fetch_sub(1, Ordering::Relaxed);
    crate::metrics::gauge(|s| &s.matches, -1);
    tracing::warn!("match {code}: no longer served here: {reason}");
    kick_group(shard, code, Some(reason));
}

/// A removed match's room is closed for its viewers too: the result is published, the match
/// leaves the counts, its public code is forgotten.
fn closed(shard: &Rc<Shard>, code: &str, room: &Room, team_info: Option<Value>) {
    if let Some(body) = team_info {
        publish_team_info(shard, code, body);
    }
    forget_public(shard, room);
    shard.global.matches_running.fetch_sub(1, Ordering::Relaxed);
    crate::metrics::gauge(|s| &s.matches, -1);
}

/// How long finished-game team info stays available.
pub const TEAM_INFO_TTL: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod claim_tests {
    use super::{MatchIdClaim, pick_match_id_claim};

    fn claim(at: u64, active: bool, code: &str) -> MatchIdClaim {
        MatchIdClaim {
            claimed: at,
            active,
            group_code: code.into(),
        }
    }

    #[test]
    fn first_observed_claim_wins_else_the_newest() {
        let pick = |c| pick_match_id_claim(c).map(|c| c.group_code);
        assert_eq!(pick(vec![]), None);
        // A hijacker re-sends the real match's id later: the first observed claim keeps it.
        let hijack = vec![claim(9, true, "LATE"), claim(2, true, "REAL")];
        assert_eq!(pick(hijack), Some("REAL".into()));
        // An older match that is no longer observed does not win.
        let restart = vec![claim(9, true, "NEW"), claim(2, false, "OLD")];
        assert_eq!(pick(restart), Some("NEW".into()));
        let none = vec![claim(1, false, "A"), claim(7, false, "B")];
        assert_eq!(pick(none), Some("B".into()));
    }
}
