//! Routes Socket.IO-level happenings of a session to its application (ingest on 5100, broadcast
//! on 5200; on a single port the first event decides: `obs_logon`/`aux_logon` make an ingest
//! client, `logon` an overlay). Handlers here must not borrow the session itself: the caller may
//! hold it.

use std::rc::Rc;

use crate::shard::Shard;
use crate::transport::engineio::AppState;

/// A Socket.IO event on the main namespace.
pub fn on_event(shard: &Rc<Shard>, sid: &str, name: &str, arg: Option<&str>) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let ingest = {
        let mut s = cell.borrow_mut();
        if matches!(s.app, AppState::Undecided) {
            match name {
                "obs_logon" | "aux_logon" => s.app = AppState::Ingest(Default::default()),
                "logon" => s.app = AppState::Broadcast(Default::default()),
                _ => return, // nothing else means anything before a logon
            }
        }
        match s.app {
            AppState::Ingest(_) => true,
            AppState::Broadcast(_) => false,
            AppState::Undecided | AppState::Service => return,
        }
    };
    drop(cell);
    if ingest {
        crate::ingest::on_event(shard, sid, name, arg);
    } else {
        crate::broadcast::on_event(shard, sid, name, arg);
    }
}

/// The socket left the namespace (client or server side, or the session ended). The state is
/// reset: a new namespace connection starts as a new socket, as in Socket.IO.
pub fn on_disconnect(shard: &Rc<Shard>, sid: &str, app: &mut AppState) {
    match app {
        AppState::Ingest(state) => {
            crate::ingest::on_disconnect(shard, state);
            *state = Default::default();
        }
        AppState::Broadcast(state) => {
            crate::broadcast::leave(shard, sid, state);
            *state = Default::default();
        }
        AppState::Undecided | AppState::Service => {}
    }
}

/// The session leaves this shard (closed or moving): drop shard-local references to it.
pub fn on_detach(shard: &Rc<Shard>, sid: &str, app: &AppState) {
    if let AppState::Broadcast(state) = app
        && let Some(room) = &state.room
    {
        shard.subscribers.borrow_mut().remove_overlay(room, sid);
    }
}

/// The session arrived on this shard: restore shard-local references.
pub fn on_attach(shard: &Rc<Shard>, sid: &str, app: &AppState) {
    if let AppState::Broadcast(state) = app
        && let Some(room) = &state.room
    {
        shard.subscribers.borrow_mut().add_overlay(room, sid);
    }
}
