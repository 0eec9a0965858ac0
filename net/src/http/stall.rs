//! When to cut off a client that stopped reading (sans-IO; the caller passes `now`).
//!
//! A server's write only waits when the client's receive window is full, that is, when the
//! client reads slower than we send. [`StallClock`] adds up the time writes spent waiting
//! ("pressure") until the client has taken `min_bytes`; once `window` of pressure has passed
//! without that, the connection is cut. So a stalled or trickling client holds a transfer
//! slot and its buffers for about `window`, while a client that is waiting for us (queued for
//! a transfer slot, between requests, or reading a response that ended) accrues nothing:
//! idle connections are the header-read timeout's business.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct StallClock {
    window: Duration,
    min_bytes: u64,
    /// Pressure of finished waits since the client last took `min_bytes`.
    pressure: Duration,
    /// Start of the wait in progress.
    wait_start: Option<Instant>,
    /// Bytes the client took since it last took `min_bytes`.
    bytes: u64,
}

/// What a waiting write should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep waiting; ask again at this instant if the write is still waiting.
    WaitUntil(Instant),
    /// `window` of pressure passed with less than `min_bytes` taken: cut the connection.
    Stalled,
}

impl StallClock {
    pub fn new(window: Duration, min_bytes: u64) -> Self {
        Self {
            window,
            min_bytes,
            pressure: Duration::ZERO,
            wait_start: None,
            bytes: 0,
        }
    }

    /// A write completed: the client took `n` bytes.
    pub fn written(&mut self, now: Instant, n: usize) {
        if let Some(start) = self.wait_start.take() {
            self.pressure += now.saturating_duration_since(start);
        }
        self.bytes += n as u64;
        if self.bytes >= self.min_bytes {
            self.bytes = 0;
            self.pressure = Duration::ZERO;
        }
    }

    /// A write is waiting on the client.
    pub fn waiting(&mut self, now: Instant) -> Verdict {
        let start = *self.wait_start.get_or_insert(now);
        let total = self.pressure + now.saturating_duration_since(start);
        if total >= self.window {
            Verdict::Stalled
        } else {
            Verdict::WaitUntil(now + (self.window - total))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_after_one_window_of_waiting() {
        let t0 = Instant::now();
        let mut c = StallClock::new(W, 1000);
        c.written(t0, 50_000);
        assert_eq!(c.waiting(t0), Verdict::WaitUntil(t0 + W));
        // Spurious wake-ups keep the same deadline.
        assert_eq!(c.waiting(secs(t0, 3.0)), Verdict::WaitUntil(t0 + W));
        assert_eq!(c.waiting(t0 + W), Verdict::Stalled);
    }

    #[test]
    fn a_trickling_client_is_cut_and_a_slow_but_steady_one_is_not() {
        let t0 = Instant::now();
        let mut trickle = StallClock::new(W, 1000);
        let mut steady = StallClock::new(W, 1000);
        let mut cut_at = None;
        // Every write waits a second for the client, which then takes 10 (200) bytes.
        for s in 0..60u64 {
            let now = secs(t0, s as f64);
            if cut_at.is_none() {
                if trickle.waiting(now) == Verdict::Stalled {
                    cut_at = Some(s);
                } else {
                    trickle.written(secs(t0, s as f64 + 1.0), 10);
                }
            }
            assert_ne!(steady.waiting(now), Verdict::Stalled, "steady cut at {s}s");
            steady.written(secs(t0, s as f64 + 1.0), 200);
        }
        assert_eq!(cut_at, Some(10));
    }

    #[test]
    fn time_without_waiting_writes_does_not_count() {
        let t0 = Instant::now();
        let mut c = StallClock::new(W, 1000);
        // The end of a response: a short wait, the last 500 bytes taken.
        assert!(matches!(c.waiting(t0), Verdict::WaitUntil(_)));
        c.written(secs(t0, 2.0), 500);
        // An hour later (keep-alive, next response) a write waits again: 2 s + 0 s so far.
        let later = secs(t0, 3600.0);
        assert_eq!(
            c.waiting(later),
            Verdict::WaitUntil(later + Duration::from_secs(8))
        );
        assert_eq!(c.waiting(later + Duration::from_secs(8)), Verdict::Stalled);
    }

    #[test]
    fn a_fast_client_with_short_waits_is_never_cut() {
        let t0 = Instant::now();
        let mut c = StallClock::new(W, 1000);
        for s in 0..1000u64 {
            let now = t0 + Duration::from_millis(s * 300);
            assert_ne!(c.waiting(now), Verdict::Stalled);
            c.written(now + Duration::from_millis(200), 64 * 1024);
        }
    }
}
