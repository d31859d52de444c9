//! A shard's inbox loop: receives mesh messages and hands each to the module that owns it.

use std::rc::Rc;

use super::Shard;
use super::messages::ShardMsg;
use crate::transport::engineio;

pub async fn run_inbox(shard: Rc<Shard>, inbox: flume::Receiver<ShardMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        dispatch(&shard, msg);
        // Drain what is already queued before yielding, so a broadcast tick sees events that
        // arrived together (an event and the next one) applied together.
        for _ in 0..256 {
            match inbox.try_recv() {
                Ok(msg) => dispatch(&shard, msg),
                Err(_) => break,
            }
        }
    }
}

/// Runs one message's handler on this shard.
pub fn dispatch(shard: &Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Poll { sid, post, reply } => engineio::poll_local(shard, &sid, post, reply),
        ShardMsg::Probe { sid } => engineio::probe_local(shard, &sid),
        ShardMsg::Migrate { sid, to, reply } => {
            let _ = reply.send(engineio::detach_local(shard, &sid, to));
        }
        ShardMsg::Deliver { sid, action } => engineio::deliver_local(shard, &sid, action),
        ShardMsg::CreateMatch { logon, from, owner } => {
            crate::registry::create_match(shard, *logon, from, owner)
        }
        ShardMsg::FindMatchId { match_id, reply } => {
            let _ = reply.send(crate::registry::find_match_id(shard, &match_id));
        }
        ShardMsg::IngestEvent { code, event } => crate::registry::ingest_event(shard, &code, event),
        ShardMsg::Shutdown {
            phase,
            deadline,
            done,
        } => super::shutdown::run_phase(shard, phase, deadline, done),
        ShardMsg::AuxDisconnected { code, player_id } => {
            crate::registry::aux_disconnected(shard, &code, &player_id)
        }
        ShardMsg::Room { code, frame } => crate::fanout::subscribers::deliver(shard, &code, &frame),
        ShardMsg::SnapshotRequest { code, from } => {
            crate::registry::snapshot_request(shard, &code, from)
        }
        ShardMsg::KickGroup { code } => crate::ingest::kick_group(shard, &code),
        ShardMsg::SpectatorJoin { code, spectator } => {
            crate::registry::spectator_join(shard, &code, spectator)
        }
        ShardMsg::SpectatorLeave {
            code,
            spectator_id,
            reason,
        } => crate::registry::spectator_leave(shard, &code, &spectator_id, reason),
        ShardMsg::SpectatorDirect {
            conn,
            texts,
            joined,
        } => crate::spectator::deliver_local(shard, conn, texts, joined),
        ShardMsg::Rest { query, reply } => {
            let _ = reply.send(crate::rest::answer(shard, query));
        }
        ShardMsg::PlayerPresence { code, join, leave } => {
            crate::registry::player_presence(shard, &code, join, leave)
        }
    }
}
