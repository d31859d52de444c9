//! Admission limits against floods and guessing: open connections (total and per address),
//! long-polling sessions (total and per address), and failed logons per address (access key or group secret
//! guessing). Shared by every shard; touched only when a connection opens or closes, a polling
//! session starts or ends, or a logon fails — never per message. Per-address state sits in
//! striped maps so shards rarely meet on one lock. Loopback addresses are exempt from the
//! per-address limits unless `LIMIT_LOOPBACK=true` (behind a reverse proxy on the same host, every
//! client would otherwise share 127.0.0.1).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limits' settings (from `Config`).
#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_polling_sessions: usize,
    pub max_polling_sessions_per_ip: usize,
    pub logon_failures: u32,
    pub logon_window: Duration,
    pub max_matches_per_key: usize,
    pub max_matches_per_ip: usize,
    pub limit_loopback: bool,
}

/// The identity of an access key in the per-key maps (a hash: the key itself is not kept).
pub fn key_id(key: Option<&str>) -> u64 {
    let mut x: u64 = 0xcbf29ce484222325;
    for b in key.unwrap_or("").bytes() {
        x ^= u64::from(b);
        x = x.wrapping_mul(0x100000001b3);
    }
    x
}

/// Failed logons from one address with any key, as a multiple of the per-key limit, after which
/// the address is refused whatever key it brings (guessing keys from one address).
const ADDRESS_FAILURE_FACTOR: u32 = 10;

#[derive(Default)]
struct PerIp {
    connections: usize,
    polling: usize,
    matches: usize,
    /// Failed logons in the current window with each key (by `key_id`), and in all.
    key_failures: HashMap<u64, u32>,
    failures: u32,
    window_start: Option<Instant>,
}

impl PerIp {
    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.connections == 0
            && self.polling == 0
            && self.matches == 0
            && self.window_start.is_none_or(|s| now - s >= window)
    }
}

const STRIPES: usize = 64;

pub struct Limits {
    pub config: LimitConfig,
    connections: AtomicUsize,
    polling: AtomicUsize,
    stripes: Vec<Mutex<HashMap<IpAddr, PerIp>>>,
    /// Live matches per access key (by a hash of the key; touched at match creation and end).
    matches_per_key: Mutex<HashMap<u64, usize>>,
}

/// Who created a match: a hash of the access key it was created with, and the address.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchOwner {
    pub key: u64,
    pub ip: Option<IpAddr>,
}

impl MatchOwner {
    pub fn new(key: Option<&str>, ip: Option<IpAddr>) -> MatchOwner {
        MatchOwner {
            key: key_id(key),
            ip,
        }
    }
}

/// A live match counted against its key and address; released when dropped (the match ended).
pub struct MatchSlot {
    limits: Arc<Limits>,
    owner: MatchOwner,
}

impl Drop for MatchSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.limits.matches_per_key.lock()
            && let Some(n) = map.get_mut(&self.owner.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.owner.key);
            }
        }
        if let Some(ip) = self.owner.ip {
            self.limits
                .with_ip(ip, |p| p.matches = p.matches.saturating_sub(1));
        }
    }
}

/// Why a new match was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchRefusal {
    PerKey(usize),
    PerAddress(usize),
}

impl MatchRefusal {
    pub fn message(self) -> String {
        match self {
            MatchRefusal::PerKey(n) => format!(
                "This access key already has {n} live matches (the limit); end one or wait until one expires."
            ),
            MatchRefusal::PerAddress(n) => format!(
                "Your address already has {n} live matches (the limit); end one or wait until one expires."
            ),
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerAddress,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Total => "Server at its connection limit; try again later.",
            Refusal::PerAddress => "Too many connections from your address.",
        }
    }
}

/// An admitted connection; releases its slots when dropped.
pub struct Admitted {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    /// Counted in the total (false for the per-address slot of a client behind a proxy).
    total: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.total {
            self.limits.connections.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(ip) = self.ip {
            self.limits
                .with_ip(ip, |p| p.connections = p.connections.saturating_sub(1));
        }
    }
}

/// A polling session slot; released when dropped.
pub struct PollingSlot {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
}

impl Drop for PollingSlot {
    fn drop(&mut self) {
        self.limits.polling.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            self.limits
                .with_ip(ip, |p| p.polling = p.polling.saturating_sub(1));
        }
    }
}

impl std::fmt::Debug for PollingSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PollingSlot")
    }
}

impl Limits {
    pub fn new(config: LimitConfig) -> Arc<Limits> {
        Arc::new(Limits {
            config,
            connections: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            matches_per_key: Mutex::default(),
        })
    }

    /// Counts a new match against its key and address, unless either is at its limit.
    pub fn match_slot(self: &Arc<Self>, owner: MatchOwner) -> Result<MatchSlot, MatchRefusal> {
        let per_key = self.config.max_matches_per_key;
        {
            let mut map = match self.matches_per_key.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            let n = map.entry(owner.key).or_default();
            if *n >= per_key {
                return Err(MatchRefusal::PerKey(per_key));
            }
            *n += 1;
        }
        let ip = owner.ip.filter(|ip| self.limited(*ip));
        if let Some(ip) = ip {
            let max = self.config.max_matches_per_ip;
            if !self.take_per_ip(ip, max, |p| &mut p.matches) {
                // Dropping this returns the key's count; the address was not counted.
                drop(MatchSlot {
                    limits: self.clone(),
                    owner: MatchOwner { ip: None, ..owner },
                });
                return Err(MatchRefusal::PerAddress(max));
            }
        }
        Ok(MatchSlot {
            limits: self.clone(),
            owner: MatchOwner { ip, ..owner },
        })
    }

    fn limited(&self, ip: IpAddr) -> bool {
        self.config.limit_loopback || !ip.is_loopback()
    }

    fn with_ip<T>(&self, ip: IpAddr, f: impl FnOnce(&mut PerIp) -> T) -> T {
        let stripe = {
            let mut x: u64 = 0xcbf29ce484222325;
            let octets = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            for b in octets {
                x ^= u64::from(b);
                x = x.wrapping_mul(0x100000001b3);
            }
            (x % STRIPES as u64) as usize
        };
        let mut map = match self.stripes[stripe].lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        let window = self.config.logon_window;
        let entry = map.entry(ip).or_default();
        let out = f(entry);
        if entry.idle(now, window) {
            map.remove(&ip);
        }
        out
    }

    /// Adds one to a per-address count unless it is at `max`; says whether it did.
    fn take_per_ip(&self, ip: IpAddr, max: usize, count: fn(&mut PerIp) -> &mut usize) -> bool {
        self.with_ip(ip, |p| {
            let n = count(p);
            let ok = *n < max;
            *n += usize::from(ok);
            ok
        })
    }

    /// Admits a new connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let total = self.connections.fetch_add(1, Ordering::Relaxed);
        if total >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let ip = ip.filter(|ip| self.limited(*ip));
        if let Some(ip) = ip {
            let max = self.config.max_connections_per_ip;
            if !self.take_per_ip(ip, max, |p| &mut p.connections) {
                self.connections.fetch_sub(1, Ordering::Relaxed);
                return Err(Refusal::PerAddress);
            }
        }
        Ok(Admitted {
            limits: self.clone(),
            ip,
            total: true,
        })
    }

    /// The per-address slot of a client whose connection was admitted through a trusted proxy
    /// (counted in the total already, under the proxy).
    pub fn admit_address(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let ip = Some(ip).filter(|ip| self.limited(*ip));
        if let Some(ip) = ip {
            let max = self.config.max_connections_per_ip;
            if !self.take_per_ip(ip, max, |p| &mut p.connections) {
                return Err(Refusal::PerAddress);
            }
        }
        Ok(Admitted {
            limits: self.clone(),
            ip,
            total: false,
        })
    }

    /// A slot for a new long-polling session from `ip`, unless a limit is reached.
    pub fn polling_slot(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<PollingSlot, Refusal> {
        let n = self.polling.fetch_add(1, Ordering::Relaxed);
        if n >= self.config.max_polling_sessions {
            self.polling.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        let ip = ip.filter(|ip| self.limited(*ip));
        if let Some(ip) = ip {
            let max = self.config.max_polling_sessions_per_ip;
            if !self.take_per_ip(ip, max, |p| &mut p.polling) {
                self.polling.fetch_sub(1, Ordering::Relaxed);
                return Err(Refusal::PerAddress);
            }
        }
        Ok(PollingSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Seconds until `ip` may try to log on again with the key `key` (`key_id`), if it is
    /// throttled now: after `logon_failures` failures with that key, or ten times as many with
    /// any keys, within the window. Another address, or the same one with another key, is not
    /// locked out by someone else's guesses.
    pub fn logon_blocked(&self, ip: Option<IpAddr>, key: u64) -> Option<u64> {
        let ip = ip.filter(|ip| self.limited(*ip))?;
        let (max, window) = (self.config.logon_failures, self.config.logon_window);
        self.with_ip(ip, |p| {
            let start = p.window_start?;
            let elapsed = start.elapsed();
            if elapsed >= window {
                p.window_start = None;
                p.failures = 0;
                p.key_failures.clear();
                return None;
            }
            let with_key = p.key_failures.get(&key).copied().unwrap_or(0);
            let blocked =
                with_key >= max || p.failures >= max.saturating_mul(ADDRESS_FAILURE_FACTOR);
            blocked.then(|| (window - elapsed).as_secs().max(1))
        })
    }

    /// Records a failed logon (wrong access key, or wrong group secret with key `key`) from `ip`.
    pub fn logon_failed(&self, ip: Option<IpAddr>, key: u64) {
        let Some(ip) = ip.filter(|ip| self.limited(*ip)) else {
            return;
        };
        let window = self.config.logon_window;
        self.with_ip(ip, |p| {
            let now = Instant::now();
            if p.window_start.is_none_or(|s| now - s >= window) {
                p.window_start = Some(now);
                p.failures = 0;
                p.key_failures.clear();
            }
            p.failures += 1;
            // Bounded: past the address limit every logon is refused before it can fail.
            *p.key_failures.entry(key).or_default() += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: usize, total: usize) -> Arc<Limits> {
        Limits::new(LimitConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            max_polling_sessions: 3,
            max_polling_sessions_per_ip: 2,
            logon_failures: 2,
            logon_window: Duration::from_secs(60),
            max_matches_per_key: 3,
            max_matches_per_ip: 2,
            limit_loopback: false,
        })
    }

    #[test]
    fn per_address_and_total_connections() {
        let l = limits(2, 3);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = l.admit(Some(a)).expect("1st");
        let _second = l.admit(Some(a)).expect("2nd");
        assert_eq!(l.admit(Some(a)).err(), Some(Refusal::PerAddress));
        let _third = l.admit(Some(b)).expect("other address");
        assert_eq!(l.admit(Some(b)).err(), Some(Refusal::Total));
        drop(first);
        let _again = l.admit(Some(a)).expect("a slot was released");
        // Loopback is exempt from the per-address limit, not from the total.
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(l.admit(Some(lo)).err(), Some(Refusal::Total));
    }

    #[test]
    fn polling_slots_and_logon_throttle() {
        let l = limits(10, 10);
        let ip: Option<IpAddr> = Some("10.0.0.9".parse().expect("ip"));
        let other: Option<IpAddr> = Some("10.0.0.8".parse().expect("ip"));
        let s1 = l.polling_slot(ip).expect("1");
        let _s2 = l.polling_slot(ip).expect("2");
        assert_eq!(l.polling_slot(ip).err(), Some(Refusal::PerAddress));
        let _s3 = l.polling_slot(other).expect("another address");
        assert_eq!(l.polling_slot(other).err(), Some(Refusal::Total));
        drop(s1);
        assert!(l.polling_slot(ip).is_ok());
        let (k, right) = (key_id(Some("guess")), key_id(Some("right")));
        assert_eq!(l.logon_blocked(ip, k), None);
        l.logon_failed(ip, k);
        assert_eq!(l.logon_blocked(ip, k), None);
        l.logon_failed(ip, k);
        assert!(l.logon_blocked(ip, k).is_some_and(|s| s <= 60));
        // The right key from the same address is not locked out by the guesses...
        assert_eq!(l.logon_blocked(ip, right), None);
        // ...until the address made ten times the limit of failures with any keys.
        for i in 0..18 {
            l.logon_failed(ip, key_id(Some(&format!("g{i}"))));
        }
        assert!(l.logon_blocked(ip, right).is_some());
        let lo: Option<IpAddr> = Some("127.0.0.1".parse().expect("ip"));
        for _ in 0..5 {
            l.logon_failed(lo, k);
        }
        assert_eq!(l.logon_blocked(lo, k), None, "loopback exempt by default");
    }

    #[test]
    fn matches_per_key_and_address() {
        let l = limits(10, 10);
        let a: Option<IpAddr> = Some("10.0.0.1".parse().expect("ip"));
        let b: Option<IpAddr> = Some("10.0.0.2".parse().expect("ip"));
        let m1 = l.match_slot(MatchOwner::new(Some("k"), a)).expect("1");
        let _m2 = l.match_slot(MatchOwner::new(Some("k"), a)).expect("2");
        let refused = l.match_slot(MatchOwner::new(Some("k"), a)).err();
        assert_eq!(refused, Some(MatchRefusal::PerAddress(2)));
        let _m3 = l.match_slot(MatchOwner::new(Some("k"), b)).expect("3");
        let refused = l.match_slot(MatchOwner::new(Some("k"), b)).err();
        assert_eq!(refused, Some(MatchRefusal::PerKey(3)));
        let _other = l
            .match_slot(MatchOwner::new(Some("other"), b))
            .expect("other key");
        drop(m1);
        assert!(l.match_slot(MatchOwner::new(Some("k"), a)).is_ok());
    }
}
