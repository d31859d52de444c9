//! Broadcast side (port 5200): overlay logon (the overlay subscribes to its room in
//! `fanout::subscribers`). Snapshots are produced by the match owner (`registry`) and delivered
//! by the fan-out, never here (the owner's broadcast rate limit is `crate::budget`).

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::app::{AppState, OverlayState};
use crate::shard::Shard;
use crate::shard::messages::{MatchMsg, SessionRef, ShardMsg};
use crate::transport::socketio::emit;

pub fn on_event(shard: &Rc<Shard>, sid: &str, name: &str, arg: Option<&str>) {
    if name == "logon" {
        logon(shard, sid, arg);
    }
}

/// The refusal of an overlay logon with a public code.
const PUBLIC_CODE_REFUSAL: &str =
    "This is a public code for spectators: overlays log on with the match's group code.";

/// `logon` → join the room, `logon_success` to this overlay, then the current snapshot to this
/// overlay only (the original re-sent it to the whole room).
fn logon(shard: &Rc<Shard>, sid: &str, arg: Option<&str>) {
    let first = shard.eio.with_data(sid, |data, _| match data {
        AppState::Broadcast(state) if !state.logon_used => {
            state.logon_used = true;
            Ok(())
        }
        AppState::Broadcast(state) if state.recovered => {
            // A recovered overlay logs on again (clients do on every connect): the same
            // answer, idempotently; it already has its room and got the newest state.
            state.recovered = false;
            Err(state.room.as_deref().map(|code| logon_reply(Some(code))))
        }
        _ => Err(None),
    });
    match first {
        Some(Ok(())) => {}
        Some(Err(Some(reply))) => return emit(&shard.eio, sid, "logon_success", &reply),
        _ => return,
    }
    let parsed: Option<Map<String, Value>> = arg.and_then(|a| serde_json::from_str(a).ok());
    let Some(obj) = parsed else {
        tracing::info!("broadcast: logon from {sid} is not a JSON object; ignored");
        return;
    };
    let code = match obj.get("groupCode") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    // A code no match can have is refused with the words every door uses (`logon_failure`,
    // no `logon_success`): it subscribes to nothing, is not kept and reaches no map, log line
    // or NATS subject. No code at all is answered as the original does ("undefined").
    if let Some(c) = &code
        && !crate::code::valid_group_code(c)
    {
        let reply = serde_json::json!({ "error": crate::code::INVALID_GROUP_CODE }).to_string();
        return emit(&shard.eio, sid, "logon_failure", &reply);
    }
    // With a spectator delay the public code is for public viewers only: an overlay gets
    // everything live, so it must know the group code.
    if let Some(c) = &code
        && shard.config.public_code_key.is_some()
        && crate::code::is_public_form(c)
    {
        let reply = serde_json::json!({ "error": PUBLIC_CODE_REFUSAL }).to_string();
        return emit(&shard.eio, sid, "logon_failure", &reply);
    }
    let reply = logon_reply(code.as_deref());
    emit(&shard.eio, sid, "logon_success", &reply);
    let Some(code) = code else {
        return;
    };
    shard.eio.with_data(sid, |data, _| {
        if let AppState::Broadcast(state) = data {
            state.room = Some(code.clone());
        }
    });
    crate::fanout::subscribers::of(shard)
        .borrow_mut()
        .add_overlay(shard, &code, sid);
    request_snapshot(shard, sid, code);
}

/// The `logon_success` text for `code` (rebuilt for a recovered overlay's logon, not kept).
fn logon_reply(code: Option<&str>) -> String {
    let mut reply = Map::new();
    if let Some(code) = code {
        reply.insert("groupCode".into(), Value::String(code.to_string()));
    }
    reply.insert(
        "msg".into(),
        Value::String(format!(
            "Logon succeeded for group code {}",
            code.unwrap_or("undefined")
        )),
    );
    Value::Object(reply).to_string()
}

/// Asks the match owner for the current snapshot of `code`, for this overlay only.
pub fn request_snapshot(shard: &Rc<Shard>, sid: &str, code: String) {
    let owner = shard.owner_of(&code);
    let from = SessionRef {
        shard: shard.id,
        sid: sid.to_string(),
    };
    shard.send_to(
        owner,
        ShardMsg::Match(MatchMsg::SnapshotRequest { code, from }),
    );
}

/// The overlay left its namespace or the session ended.
pub fn leave(shard: &Rc<Shard>, sid: &str, state: &OverlayState) {
    if let Some(room) = &state.room {
        crate::fanout::subscribers::of(shard)
            .borrow_mut()
            .remove_overlay(room, sid);
    }
}
