//! The packets waiting for a long-polling client's next request. A state (a complete snapshot
//! the application marks as such) replaces the older state still waiting — latest wins, as on
//! a WebSocket (`outbound`) — so a slow poller never receives stale states; every other packet
//! is kept in order.

use bytes::Bytes;

use crate::packets::encode_payload;

#[derive(Default, Debug)]
pub struct PollBuffer {
    packets: Vec<Bytes>,
    bytes: usize,
    /// Where the state still waiting sits in `packets`.
    state_at: Option<usize>,
}

impl PollBuffer {
    /// Appends packets.
    pub fn push(&mut self, packet: Bytes) {
        self.bytes += packet.len();
        self.packets.push(packet);
    }

    /// Appends a state, dropping the older state still waiting; true when one was dropped.
    pub fn push_state(&mut self, packet: Bytes) -> bool {
        let replaced = match self.state_at.take() {
            Some(pos) if pos < self.packets.len() => {
                let old = self.packets.remove(pos);
                self.bytes -= old.len();
                true
            }
            _ => false,
        };
        self.state_at = Some(self.packets.len());
        self.push(packet);
        replaced
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Everything waiting as one polling payload; the buffer is empty afterwards.
    pub fn take_payload(&mut self) -> Bytes {
        let payload = encode_payload(&self.packets);
        self.clear();
        payload
    }

    /// Everything waiting, packet by packet (for a session that moves to a WebSocket).
    pub fn take(&mut self) -> Vec<Bytes> {
        let packets = std::mem::take(&mut self.packets);
        self.clear();
        packets
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.state_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_state_wins_and_order_is_kept() {
        let mut b = PollBuffer::default();
        b.push(Bytes::from_static(b"40"));
        assert!(!b.push_state(Bytes::from_static(b"42[\"s\",1]")));
        b.push(Bytes::from_static(b"42[\"note\"]"));
        assert!(b.push_state(Bytes::from_static(b"42[\"s\",2]")));
        assert_eq!(b.bytes(), 2 + 10 + 9);
        assert_eq!(&b.take_payload()[..], b"40\x1e42[\"note\"]\x1e42[\"s\",2]");
        assert!(b.is_empty());
        assert!(
            !b.push_state(Bytes::from_static(b"42[\"s\",3]")),
            "no old state after a take"
        );
        assert_eq!(b.take(), vec![Bytes::from_static(b"42[\"s\",3]")]);
        assert_eq!(b.bytes(), 0);
    }
}
