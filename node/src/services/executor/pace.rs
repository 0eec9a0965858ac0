//! Pacing of power-ons: the power-ons (and power cycles) one executor starts are at least a
//! gap apart, each shifted by a random part of it, so a location that powers many machines at
//! once (a mass deploy, machines coming back after a power loss) does not draw their inrush
//! current together. Pure: the caller supplies the clock and the jitter, and sleeps until the
//! slot it is given.
//!
//! Layer: part of `executor`; depends on tokio's `Instant` only.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    gap: Duration,
    /// The earliest start of the next power-on.
    next: Option<Instant>,
}

impl Pacer {
    /// Power-ons at least `gap` apart (`Duration::ZERO`: no pacing).
    pub fn new(gap: Duration) -> Self {
        Self { gap, next: None }
    }

    pub fn gap(&self) -> Duration {
        self.gap
    }

    /// When a power-on asked for at `now` may start: `jitter` (kept below the gap) after the
    /// later of `now` and the previous start plus the gap.
    pub fn slot(&mut self, now: Instant, jitter: Duration) -> Instant {
        if self.gap.is_zero() {
            return now;
        }
        let base = match self.next {
            Some(n) if n > now => n,
            _ => now,
        };
        let at = base + jitter.min(self.gap);
        self.next = Some(at + self.gap);
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_ons_asked_at_once_start_a_gap_apart_and_a_late_one_starts_at_once() {
        let t0 = Instant::now();
        let gap = Duration::from_millis(500);
        let mut p = Pacer::new(gap);
        let jitters = [0, 499, 10, 250, 0, 700];
        let slots: Vec<Instant> = jitters
            .iter()
            .map(|j| p.slot(t0, Duration::from_millis(*j)))
            .collect();
        assert_eq!(slots[0], t0);
        for w in slots.windows(2) {
            assert!(w[1] >= w[0] + gap, "{:?}", w[1] - w[0]);
            assert!(w[1] < w[0] + 2 * gap + Duration::from_millis(1));
        }
        // 100 machines at once take at least 99 gaps.
        let mut p = Pacer::new(gap);
        let last = (0..100)
            .map(|i| p.slot(t0, Duration::from_millis(i * 7 % 500)))
            .last()
            .unwrap();
        assert!(last - t0 >= gap * 99);
        // Long after the last one: only the jitter.
        let later = t0 + Duration::from_secs(3600);
        let mut p = Pacer::new(gap);
        p.slot(t0, Duration::ZERO);
        assert_eq!(
            p.slot(later, Duration::from_millis(30)),
            later + Duration::from_millis(30)
        );
        // No pacing.
        let mut p = Pacer::new(Duration::ZERO);
        assert_eq!(p.slot(t0, Duration::from_millis(30)), t0);
        assert_eq!(p.slot(t0, Duration::from_millis(30)), t0);
    }
}
