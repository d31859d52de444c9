//! Routes Socket.IO-level happenings of a session to its application (ingest on 5100, broadcast
//! on 5200). Handlers here must not borrow the session itself: the caller may hold it.

use std::rc::Rc;

use crate::shard::Shard;
use crate::transport::engineio::AppState;

/// A Socket.IO event on the main namespace.
pub fn on_event(shard: &Rc<Shard>, sid: &str, name: &str, arg: Option<&str>) {
    let kind = shard
        .sessions
        .borrow()
        .get(sid)
        .map(|c| matches!(c.borrow().app, AppState::Ingest(_)));
    match kind {
        Some(true) => crate::ingest::on_event(shard, sid, name, arg),
        Some(false) => crate::broadcast::on_event(shard, sid, name, arg),
        None => {}
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
        AppState::Service => {}
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
