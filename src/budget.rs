//! A match's broadcast budget: a token bucket refilled with one broadcast per broadcast interval
//! (100 ms), holding at most `BURST`. In the long run a match is broadcast at most once per
//! interval, like the original's tick, but a change is never held back just because the previous
//! one came a little late: a rigid "once per slot" or "one interval since the last broadcast"
//! rule locks a steady 10 Hz input onto the worst phase after a single delayed event (every later
//! change then waits up to a whole interval), which a bucket of two absorbs. Pure arithmetic.

use std::time::{Duration, Instant};

/// Broadcasts a quiet match may make in quick succession.
pub const BURST: f64 = 2.0;

#[derive(Debug, Clone)]
pub struct Budget {
    tokens: f64,
    burst: f64,
    refilled_at: Instant,
}

impl Budget {
    /// A new match may broadcast at once.
    pub fn new(now: Instant) -> Budget {
        Budget::with_burst(now, BURST)
    }

    /// A bucket holding `burst` (other rate limits: spectator joins, presence notices).
    pub fn with_burst(now: Instant, burst: f64) -> Budget {
        Budget {
            tokens: burst,
            burst,
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant, period: Duration) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let gained = elapsed.as_secs_f64() / period.as_secs_f64().max(1e-6);
        self.tokens = (self.tokens + gained).min(self.burst);
        self.refilled_at = now;
    }

    /// How long until a broadcast is allowed (zero when it is allowed now).
    pub fn wait(&mut self, now: Instant, period: Duration) -> Duration {
        self.refill(now, period);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            period.mul_f64(1.0 - self.tokens)
        }
    }

    /// Spends one broadcast if allowed now.
    pub fn take(&mut self, now: Instant, period: Duration) -> bool {
        self.refill(now, period);
        // A timer that fires a few µs early still counts as on time.
        if self.tokens >= 1.0 - 1e-3 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(100);

    #[test]
    fn a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        assert!(b.take(t0, P));
        assert!(b.take(t0 + Duration::from_millis(5), P));
        assert!(!b.take(t0 + Duration::from_millis(10), P));
        let wait = b.wait(t0 + Duration::from_millis(10), P);
        assert!(wait > Duration::from_millis(50) && wait <= P, "{wait:?}");
        assert!(b.take(t0 + Duration::from_millis(10) + wait, P));
        // Over a long run: at most one per interval plus the burst.
        let mut sent = 0;
        let mut t = t0 + Duration::from_secs(1);
        let mut b = Budget::new(t);
        for _ in 0..1000 {
            if b.take(t, P) {
                sent += 1;
            }
            t += Duration::from_millis(10);
        }
        assert!((100..=102).contains(&sent), "{sent} broadcasts in 10 s");
    }

    #[test]
    fn a_late_change_does_not_lock_the_next_ones_onto_a_worse_phase() {
        // Changes every 100 ms; one arrives 60 ms late. The ones after it go out at once.
        let t0 = Instant::now();
        let mut b = Budget::new(t0);
        let mut t = t0;
        for i in 0..50 {
            let arrival = if i == 10 {
                t + Duration::from_millis(60)
            } else {
                t
            };
            assert_eq!(b.wait(arrival, P), Duration::ZERO, "change {i}");
            assert!(b.take(arrival, P));
            t += P;
        }
    }
}
