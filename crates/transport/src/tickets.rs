//! TLS session tickets (stateless resumption): a reconnecting client presents the ticket it got
//! and skips the certificate and key exchange. Owns the ticket keys and their rotation; must not
//! touch sockets or the rest of the TLS configuration (`tls.rs` installs it).
//!
//! Time is cut into periods of `period` aligned to the Unix epoch (period `n` is
//! `[n·period, (n+1)·period)`), so every node and a test can tell which period a moment is in.
//! Each period has its own random key, made when the period's first ticket is issued: tickets
//! are sealed with the current period's key and accepted while their key is the current or the
//! previous one — so a ticket lives between one and two periods, and `lifetime()` tells clients
//! two. Older keys are dropped at the next rotation. Keys live only in memory: a restarted node
//! makes full handshakes until its clients hold its new tickets.
//!
//! Ticket layout: key name (16 random bytes) ‖ nonce (12) ‖ ChaCha20-Poly1305(state) ‖ tag (16).

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

const NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;

struct Key {
    period: u64,
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

#[derive(Default)]
struct Keys {
    current: Option<Key>,
    previous: Option<Key>,
}

/// The ticketer of every listener of a process (shared by the shards; locked only during
/// handshakes, never per message).
pub struct Tickets {
    period_ms: u64,
    keys: RwLock<Keys>,
    random: SystemRandom,
    /// Longest ticket sealed so far: anything longer is refused without trying to open it.
    longest: AtomicUsize,
    /// Tickets presented that were not accepted (key expired, not ours, or altered).
    refused: AtomicU64,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("period_ms", &self.period_ms)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// Keys rotate every `period` (at least one second).
    pub fn new(period: Duration) -> Tickets {
        Tickets {
            period_ms: (period.as_millis() as u64).max(1000),
            keys: RwLock::new(Keys::default()),
            random: SystemRandom::new(),
            longest: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Presented tickets refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn period_at(&self, now: SystemTime) -> u64 {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        ms / self.period_ms
    }

    fn new_key(&self, period: u64) -> Option<Key> {
        let mut bytes = [0u8; 32];
        let mut name = [0u8; NAME_LEN];
        self.random.fill(&mut bytes).ok()?;
        self.random.fill(&mut name).ok()?;
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).ok()?);
        Some(Key { period, name, key })
    }

    fn seal(&self, key: &Key, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut body = Vec::with_capacity(plain.len() + TAG_LEN);
        body.extend_from_slice(plain);
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut body,
            )
            .ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        self.longest.fetch_max(out.len(), Ordering::Relaxed);
        Some(out)
    }

    fn encrypt_at(&self, now: SystemTime, plain: &[u8]) -> Option<Vec<u8>> {
        let period = self.period_at(now);
        {
            let keys = self.keys.read().ok()?;
            if let Some(key) = keys.current.as_ref().filter(|k| k.period == period) {
                return self.seal(key, plain);
            }
        }
        let fresh = self.new_key(period)?;
        let mut keys = self.keys.write().ok()?;
        if keys.current.as_ref().is_none_or(|k| k.period < period) {
            let old = keys.current.replace(fresh);
            // The old key stays for one more period only if it is the previous period's.
            keys.previous = old.filter(|k| k.period + 1 == period);
        }
        let key = keys.current.as_ref()?;
        self.seal(key, plain)
    }

    fn decrypt_at(&self, now: SystemTime, ticket: &[u8]) -> Option<Vec<u8>> {
        let opened = self.open(self.period_at(now), ticket);
        if opened.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        opened
    }

    fn open(&self, period: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < NAME_LEN + NONCE_LEN + TAG_LEN
            || ticket.len() > self.longest.load(Ordering::Relaxed)
        {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.read().ok()?;
        let key = [keys.current.as_ref(), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.name == name && (k.period == period || k.period + 1 == period))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain_len = key
            .key
            .open_in_place(nonce, Aad::from(&key.name), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// What clients are told (seconds): the longest a ticket can be accepted.
    fn lifetime(&self) -> u32 {
        u32::try_from(self.period_ms.saturating_mul(2) / 1000).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(SystemTime::now(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(SystemTime::now(), ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_ticket_lives_in_its_period_and_the_next() {
        let t = Tickets::new(Duration::from_secs(10));
        assert_eq!(t.lifetime(), 20);
        let late = t.encrypt_at(at(19_900), b"state").expect("sealed");
        assert_eq!(
            t.decrypt_at(at(19_950), &late).as_deref(),
            Some(&b"state"[..])
        );
        // After one rotation (a new key issues tickets), the old one still opens.
        let next = t.encrypt_at(at(20_100), b"other").expect("sealed");
        assert_ne!(
            next[..NAME_LEN],
            late[..NAME_LEN],
            "a new period has a new key"
        );
        assert_eq!(
            t.decrypt_at(at(29_999), &late).as_deref(),
            Some(&b"state"[..])
        );
        assert_eq!(t.refused(), 0);
        // From the period after next it is refused, even with no ticket issued meanwhile.
        assert_eq!(t.decrypt_at(at(30_000), &late), None);
        assert_eq!(t.refused(), 1);
        assert_eq!(
            t.decrypt_at(at(30_000), &next).as_deref(),
            Some(&b"other"[..])
        );
    }

    #[test]
    fn keys_two_periods_old_are_dropped_at_rotation() {
        let t = Tickets::new(Duration::from_secs(1));
        let old = t.encrypt_at(at(1_500), b"a").expect("sealed");
        // Nothing issued in period 2: at period 3 the key of period 1 is not kept as previous.
        let _ = t.encrypt_at(at(3_100), b"b").expect("sealed");
        let keys = t.keys.read().expect("lock");
        assert!(keys.previous.is_none());
        drop(keys);
        assert_eq!(t.decrypt_at(at(2_900), &old), None, "its key is gone");
    }

    #[test]
    fn altered_short_long_and_foreign_tickets_are_refused() {
        let t = Tickets::new(Duration::from_secs(60));
        let good = t.encrypt_at(at(1_000), b"secret").expect("sealed");
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(t.decrypt_at(at(1_000), &bad), None);
        assert_eq!(t.decrypt_at(at(1_000), &good[..20]), None);
        let mut long = good.clone();
        long.push(0);
        assert_eq!(t.decrypt_at(at(1_000), &long), None);
        let other = Tickets::new(Duration::from_secs(60));
        let foreign = other.encrypt_at(at(1_000), b"secret").expect("sealed");
        assert_eq!(t.decrypt_at(at(1_000), &foreign), None);
        assert_eq!(t.refused(), 4);
        assert_eq!(
            t.decrypt_at(at(1_000), &good).as_deref(),
            Some(&b"secret"[..])
        );
    }
}
