//! A shard's inbox loop: receives mesh messages and hands each to the module that owns it.

use std::rc::Rc;

use crate::shard::Shard;
use crate::shard::messages::{RemoteMsg, ReplyBody, ShardMsg};
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

/// Hands one message to the domain that handles it.
pub fn dispatch(shard: &Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Session(m) => engineio::on_shard_msg(&shard.eio, m),
        ShardMsg::Match(m) => crate::registry::on_shard_msg(shard, m),
        ShardMsg::Room { code, frame } => crate::fanout::subscribers::deliver(shard, &code, &frame),
        ShardMsg::KickGroup { code, reason } => {
            crate::ingest::kick_group(shard, &code, reason.as_deref())
        }
        ShardMsg::SpectatorDirect {
            conn,
            texts,
            joined,
        } => crate::spectator::deliver_local(shard, conn, texts, joined),
        ShardMsg::StreamStart { conn, start } => crate::viewer::sse::on_start(shard, conn, start),
        ShardMsg::Remote(RemoteMsg::SnapshotAsk { code, reply }) => {
            crate::registry::snapshot_for_cluster(shard, &code, reply)
        }
        ShardMsg::Remote(RemoteMsg::Ingest { msg, reply }) => {
            crate::registry::remote_ingest(shard, msg, reply)
        }
        ShardMsg::Remote(RemoteMsg::Unanswered { msg }) => crate::registry::unanswered(shard, msg),
        ShardMsg::Remote(RemoteMsg::StepDown { code, reason }) => {
            crate::registry::step_down(shard, &code, &reason)
        }
        ShardMsg::Remote(RemoteMsg::Frames { sid, frames }) => shard.deliver(
            shard.id,
            &sid,
            crate::shard::messages::SessionAction::Frames(frames),
        ),
        ShardMsg::Rest { query, from } => {
            let answer = crate::rest::answer(shard, query);
            shard.reply(from, ReplyBody::Rest(answer));
        }
        ShardMsg::Reply { id, body } => shard.on_reply(id, body),
        ShardMsg::Shutdown {
            phase,
            deadline,
            done,
        } => super::shutdown::run_phase(shard, phase, deadline, done),
    }
}
