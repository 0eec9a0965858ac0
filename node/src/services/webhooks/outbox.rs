//! One webhook's delivery, sans I/O: which event to send next, the backoff after a failure,
//! and when the progress is worth a Raft record (`RecordWebhookDelivery`). The shell
//! (`super`) owns the HTTP client and the clock and feeds the outcomes back.
//!
//! Delivery is at least once, in journal order: an event is sent until a 2xx acknowledges it
//! (later events wait behind it), and progress is recorded in the replicated state at most
//! [`RECORD_EVERY`] late, at once when the webhook starts or stops failing or has nothing
//! more to send. A new leader resumes from the record, so what it sends again is at most the
//! last second's deliveries, each under the same event id.
//!
//! Layer: pure; depends on `rackd_types` and the journal's table type only.

use std::time::Duration;

use rackd_raft::state::Table;
use rackd_types::{Event, Webhook, WebhookDelivery};
use tokio::time::Instant;

/// Progress is recorded at most this late while events flow.
pub const RECORD_EVERY: Duration = Duration::from_secs(1);
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Unwanted events skipped per step (a long run of them does not hold the worker).
const SKIP_PER_STEP: usize = 4096;

/// The delay before attempt `failures + 1`, scaled by `jitter` (0.8..=1.2 in the shell, so
/// many webhooks that failed together do not retry together).
pub fn backoff(failures: u64, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20) as u32;
    let base = FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF);
    base.mul_f64(jitter.clamp(0.5, 1.5))
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send this event.
    Send(Event),
    /// A retry is due at this instant.
    RetryAt(Instant),
    /// Nothing to send until the journal grows.
    Idle,
}

/// One webhook's delivery state on the leader.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Where delivery stands here (ahead of the record by what was not recorded yet).
    pub delivery: WebhookDelivery,
    /// What the replicated state holds.
    recorded: WebhookDelivery,
    last_record: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Outbox {
    /// Resume where the replicated record stands (a new leader, or a changed webhook).
    pub fn resume(w: &Webhook) -> Outbox {
        Outbox {
            delivery: w.delivery.clone(),
            recorded: w.delivery.clone(),
            last_record: None,
            retry_at: None,
        }
    }

    /// The next thing to do: events the webhook does not want, and events that left the
    /// journal unsent (counted in `missed`), are passed over.
    pub fn next(&mut self, journal: &Table<u64, Event>, w: &Webhook, now: Instant) -> Next {
        let d = &mut self.delivery;
        if let Some(&oldest) = journal.first_key() {
            if oldest > d.delivered_through.saturating_add(1) {
                d.missed += oldest - d.delivered_through - 1;
                d.delivered_through = oldest - 1;
                d.failures = 0;
                d.failing_since = None;
                self.retry_at = None;
            }
        }
        for (seq, e) in journal
            .range_after(Some(&d.delivered_through))
            .take(SKIP_PER_STEP)
        {
            if w.wants(&e.kind) {
                return match self.retry_at {
                    Some(t) if t > now => Next::RetryAt(t),
                    _ => Next::Send(e.clone()),
                };
            }
            d.delivered_through = *seq;
        }
        match journal.range_after(Some(&d.delivered_through)).next() {
            Some(_) => Next::RetryAt(now), // more to pass over: go on at once
            None => Next::Idle,
        }
    }

    /// The receiver acknowledged event `seq` at `now_ms` (wall clock).
    pub fn delivered(&mut self, seq: u64, now_ms: u64) {
        let d = &mut self.delivery;
        d.delivered_through = d.delivered_through.max(seq);
        d.last_delivered_at = Some(now_ms);
        d.failures = 0;
        d.failing_since = None;
        d.last_error = None;
        self.retry_at = None;
    }

    /// An attempt failed with `error`; the next waits [`backoff`].
    pub fn failed(&mut self, error: String, now_ms: u64, now: Instant, jitter: f64) {
        let d = &mut self.delivery;
        d.failures += 1;
        d.failing_since.get_or_insert(now_ms);
        d.last_error = Some(error);
        self.retry_at = Some(now + backoff(d.failures, jitter));
    }

    /// The record to propose now, if one is due: progress differs from the record, and the
    /// webhook started or stopped failing, or is `idle`, or the last record is
    /// [`RECORD_EVERY`] old.
    pub fn record_due(&self, now: Instant, idle: bool) -> Option<WebhookDelivery> {
        if self.delivery == self.recorded {
            return None;
        }
        let turned = (self.delivery.failures > 0) != (self.recorded.failures > 0);
        let old = self
            .last_record
            .is_none_or(|t| now.saturating_duration_since(t) >= RECORD_EVERY);
        (turned || idle || old).then(|| self.delivery.clone())
    }

    /// `d` (from [`Outbox::record_due`]) is in the replicated state.
    pub fn recorded(&mut self, d: WebhookDelivery, now: Instant) {
        self.recorded = d;
        self.last_record = Some(now);
    }

    /// When the next record falls due while events flow (for the shell's sleeps).
    pub fn record_deadline(&self, now: Instant) -> Option<Instant> {
        (self.delivery != self.recorded).then(|| self.last_record.map_or(now, |t| t + RECORD_EVERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackd_types::Meta;

    fn journal(seqs: impl IntoIterator<Item = (u64, &'static str)>) -> Table<u64, Event> {
        let mut t = Table::default();
        for (seq, kind) in seqs {
            t.insert(
                seq,
                Event {
                    seq,
                    time: seq,
                    actor: "a".into(),
                    kind: kind.into(),
                    entity: "machine".into(),
                    entity_id: Some(1),
                    message: String::new(),
                },
            );
        }
        t
    }

    fn hook(kinds: &[&str], through: u64) -> Webhook {
        Webhook {
            meta: Meta {
                id: 1,
                version: 1,
                created_at: 0,
                updated_at: 0,
            },
            name: "h".into(),
            url: "http://h/".into(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            enabled: true,
            delivery: WebhookDelivery {
                delivered_through: through,
                ..WebhookDelivery::default()
            },
        }
    }

    /// Drive an outbox to idle against a receiver that fails the attempts `fail` says,
    /// returning the event ids sent (with repeats) and the ones acknowledged.
    fn drive(
        ob: &mut Outbox,
        j: &Table<u64, Event>,
        w: &Webhook,
        mut fail: impl FnMut(u64, u32) -> bool,
    ) -> (Vec<u64>, Vec<u64>) {
        let (mut sent, mut acked) = (Vec::new(), Vec::new());
        let mut now = Instant::now();
        let mut attempts = std::collections::HashMap::<u64, u32>::new();
        for _ in 0..100_000 {
            match ob.next(j, w, now) {
                Next::Send(e) => {
                    sent.push(e.seq);
                    let n = attempts.entry(e.seq).or_default();
                    *n += 1;
                    if fail(e.seq, *n) {
                        ob.failed("HTTP 503".into(), 0, now, 1.0);
                    } else {
                        ob.delivered(e.seq, 0);
                        acked.push(e.seq);
                    }
                }
                Next::RetryAt(t) => now = now.max(t),
                Next::Idle => return (sent, acked),
            }
        }
        panic!("never idle");
    }

    #[test]
    fn every_wanted_event_is_acknowledged_once_in_order_whatever_fails() {
        let kinds = [
            "machine.created",
            "task.finished",
            "machine.deleted",
            "blob.stored",
        ];
        let j = journal((1..=60).map(|s| (s, kinds[(s as usize * 7) % kinds.len()])));
        for filter in [
            vec![],
            vec!["machine"],
            vec!["task.finished", "blob"],
            vec!["none"],
        ] {
            for seed in 0..20u64 {
                let w = hook(&filter, 0);
                let mut ob = Outbox::resume(&w);
                // Fail some attempts (a pseudo-random pattern per seed), never forever.
                let (sent, acked) = drive(&mut ob, &j, &w, |seq, n| {
                    n < 4 && (seq * 31 + n as u64 * 17 + seed).is_multiple_of(5)
                });
                let want: Vec<u64> = j
                    .values()
                    .filter(|e| w.wants(&e.kind))
                    .map(|e| e.seq)
                    .collect();
                assert_eq!(acked, want, "filter {filter:?} seed {seed}");
                // Sends are the wanted events in order, each repeated only while it fails.
                let mut dedup = sent.clone();
                dedup.dedup();
                assert_eq!(dedup, want);
                assert_eq!(ob.delivery.delivered_through, 60);
                assert_eq!(ob.delivery.failures, 0);
            }
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_retries_wait_for_it() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(40, 1.0), MAX_BACKOFF);
        assert_eq!(backoff(u64::MAX, 1.2), MAX_BACKOFF.mul_f64(1.2));
        let j = journal([(1, "machine.created")]);
        let w = hook(&[], 0);
        let mut ob = Outbox::resume(&w);
        let now = Instant::now();
        assert!(matches!(ob.next(&j, &w, now), Next::Send(_)));
        ob.failed("refused".into(), 5, now, 1.0);
        ob.failed("refused".into(), 6, now, 1.0);
        assert_eq!(
            ob.next(&j, &w, now),
            Next::RetryAt(now + Duration::from_secs(2))
        );
        assert_eq!(
            ob.delivery.failing_since,
            Some(5),
            "since the first failure"
        );
        assert!(matches!(
            ob.next(&j, &w, now + Duration::from_secs(2)),
            Next::Send(_)
        ));
    }

    #[test]
    fn events_gone_from_the_journal_are_counted_missed_and_passed_over() {
        let j = journal([(50, "machine.created"), (51, "machine.deleted")]);
        let w = hook(&["machine.deleted"], 10);
        let mut ob = Outbox::resume(&w);
        match ob.next(&j, &w, Instant::now()) {
            Next::Send(e) => assert_eq!(e.seq, 51),
            other => panic!("{other:?}"),
        }
        assert_eq!(ob.delivery.missed, 39);
        assert_eq!(ob.delivery.delivered_through, 50);
    }

    #[test]
    fn records_fall_due_on_a_turn_when_idle_or_once_a_second() {
        let j = journal((1..=3).map(|s| (s, "machine.created")));
        let w = hook(&[], 0);
        let mut ob = Outbox::resume(&w);
        let t0 = Instant::now();
        assert_eq!(ob.record_due(t0, true), None, "nothing new");
        ob.delivered(1, 1);
        let d = ob.record_due(t0, false).expect("never recorded: due");
        ob.recorded(d, t0);
        ob.delivered(2, 2);
        assert_eq!(
            ob.record_due(t0, false),
            None,
            "busy, and recorded just now"
        );
        assert!(ob.record_due(t0, true).is_some(), "idle: record at once");
        assert!(ob.record_due(t0 + RECORD_EVERY, false).is_some());
        ob.failed("HTTP 500".into(), 3, t0, 1.0);
        assert!(ob.record_due(t0, false).is_some(), "started failing");
        let d = ob.record_due(t0, false).unwrap();
        ob.recorded(d, t0);
        ob.failed("HTTP 500".into(), 4, t0, 1.0);
        assert_eq!(
            ob.record_due(t0, false),
            None,
            "still failing, recorded now"
        );
        let _ = ob.next(&j, &w, t0);
    }
}
