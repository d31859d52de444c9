//! Graceful shutdown (SIGTERM/SIGINT), in two phases that every shard finishes before the next
//! starts, so a final snapshot sent by a match's owner reaches the other shards' inboxes before
//! they close their connections:
//!
//! 1. `Quiesce`: stop accepting work (new sessions, WebSocket upgrades, spectators and REST get
//!    503; only polls of existing sessions are served) and publish every match's unsent change
//!    (the final snapshots).
//! 2. `Close`: end every Engine.IO session (a pending poll gets CLOSE, a polling client between
//!    two polls gets it at its next poll, a WebSocket a 1001 close frame after what is already
//!    queued — its session lives until the client answers, so what the client sent before it saw
//!    the close is still handled) and every spectator (1001), close the replay logs, and wait —
//!    up to the deadline — until the sockets and logs are written; then close the listeners.
//!
//! 3. `Settle`: answered at once; messages the shards sent each other during `Close` are
//!    handled before it (in cluster mode the matches are released after, `Running::shutdown`).
//!
//! Matches are not ended: their logs stay live, so a restart recovers them.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::shard::messages::Phase;
use crate::shard::{Mesh, Shard};

/// How long the shutdown waits for polling clients to collect their CLOSE packet.
const FAREWELL_WAIT: Duration = Duration::from_secs(1);

/// Runs both phases on every shard (called from the main thread); false when a shard did not
/// answer by `deadline`.
pub fn run(mesh: &Mesh, deadline: Instant) -> bool {
    for phase in [Phase::Quiesce, Phase::Close, Phase::Settle] {
        let (done, answers) = flume::unbounded();
        for shard in 0..mesh.len() {
            mesh.send(
                shard,
                crate::shard::messages::ShardMsg::Shutdown {
                    phase,
                    deadline,
                    done: done.clone(),
                },
            );
        }
        for _ in 0..mesh.len() {
            if answers.recv_deadline(deadline).is_err() {
                return false;
            }
        }
    }
    true
}

/// One phase on this shard; answers on `done` when it is complete.
pub fn run_phase(shard: &Rc<Shard>, phase: Phase, deadline: Instant, done: flume::Sender<usize>) {
    match phase {
        Phase::Quiesce => {
            shard.stopping.set(true);
            crate::registry::publish_unsent(shard);
            let _ = done.send(shard.id);
        }
        Phase::Close => {
            let mut queues = crate::transport::engineio::close_all(&shard.eio);
            queues.extend(crate::spectator::close_all(shard));
            let shard = shard.clone();
            // A live polling client is back within a round trip; one that is not within a
            // second has gone (its session would only have ended at the ping timeout).
            let farewells_until = Instant::now() + FAREWELL_WAIT;
            glommio::spawn_local(async move {
                let written = async {
                    // WebSocket clients answer the close: until then what they sent is
                    // handled (and logged), so the logs close after.
                    while crate::transport::engineio::shutting_pending(&shard.eio) > 0 {
                        glommio::timer::sleep(Duration::from_millis(2)).await;
                    }
                    for log in crate::registry::close_logs(&shard) {
                        log.await;
                    }
                    while queues.iter().any(|q| !q.is_finished())
                        || (crate::transport::engineio::farewells_pending(&shard.eio) > 0
                            && Instant::now() < farewells_until)
                    {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                };
                let left = deadline.saturating_duration_since(Instant::now());
                futures_lite::future::or(written, glommio::timer::sleep(left)).await;
                for listener in shard.listeners.borrow_mut().drain(..) {
                    listener.cancel();
                }
                let _ = done.send(shard.id);
            })
            .detach();
        }
        Phase::Settle => {
            let _ = done.send(shard.id);
        }
    }
}
