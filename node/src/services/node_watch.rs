//! The leader journals members that stop answering it, and that answer again:
//! `node.unreachable` once a member has not acknowledged the leader for [`DOWN_AFTER`],
//! `node.reachable` when it does again (events webhooks and `rackd events --follow` see, as
//! "node down" alerts). Each change is journalled once: the journal itself says which members
//! were last reported down, so a new leader goes on from there instead of reporting again.
//! Time counts on the leader's monotonic clock from when it saw the member silent; time as a
//! follower does not count (a new leader has not heard from anyone yet).
//!
//! Runs on every node, acts on the leader. Layer: services; depends on `cluster` only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_raft::state::State;
use tokio::time::Instant;

use crate::cluster::{Cluster, RaftStatus};

/// How long a member is silent before it is reported unreachable.
pub const DOWN_AFTER: Duration = Duration::from_secs(10);
pub const UNREACHABLE: &str = "node.unreachable";
pub const REACHABLE: &str = "node.reachable";

/// The members the journal last reported unreachable (and not reachable since).
pub fn reported_down(state: &State) -> BTreeSet<u64> {
    let mut last: BTreeMap<u64, bool> = BTreeMap::new();
    for e in state.events.values() {
        if let (Some(id), true) = (e.entity_id, e.entity == "node") {
            match e.kind.as_str() {
                UNREACHABLE => {
                    last.insert(id, true);
                }
                REACHABLE => {
                    last.insert(id, false);
                }
                _ => {}
            }
        }
    }
    last.into_iter()
        .filter(|(_, d)| *d)
        .map(|(id, _)| id)
        .collect()
}

/// Since when each member has been silent, as this leader saw it, and whether each member
/// answered at the last look (for the log: one line per change).
#[derive(Debug, Default)]
pub struct Watch {
    silent_since: BTreeMap<u64, Instant>,
    answering: BTreeMap<u64, bool>,
}

impl Watch {
    /// The journal entries due at `now` (`status` is this leader's).
    pub fn due(&mut self, status: &RaftStatus, state: &State, now: Instant) -> Vec<Command> {
        let down = reported_down(state);
        let mut out = Vec::new();
        let mut silent = BTreeMap::new();
        for id in status
            .members
            .keys()
            .filter(|id| Some(**id) != status.leader_id)
        {
            let reachable = status.followers.get(id).is_some_and(|f| f.reachable());
            if reachable {
                if down.contains(id) {
                    out.push(journal(
                        REACHABLE,
                        *id,
                        format!("node {id} answers the leader again"),
                    ));
                }
                continue;
            }
            let since = self.silent_since.get(id).copied().unwrap_or(now);
            silent.insert(*id, since);
            let waited = now.saturating_duration_since(since);
            if waited >= DOWN_AFTER && !down.contains(id) {
                let last = status
                    .followers
                    .get(id)
                    .and_then(|f| f.last_ack_ms)
                    .map_or("never since this leader took over".to_string(), |ms| {
                        format!("last {} s ago", ms / 1000)
                    });
                out.push(journal(
                    UNREACHABLE,
                    *id,
                    format!("node {id} does not answer the leader ({last})"),
                ));
            }
        }
        self.silent_since = silent;
        out
    }

    /// The members whose answering changed since the last look (`true`: answers again). A
    /// member seen for the first time is reported only when it does not answer; one that never
    /// acknowledged this leader (joining, or silent since the election) is not judged yet (the
    /// journal's `node.unreachable` covers it after [`DOWN_AFTER`]).
    pub fn log_changes(&mut self, status: &RaftStatus) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        let mut now = BTreeMap::new();
        for id in status
            .members
            .keys()
            .filter(|id| Some(**id) != status.leader_id)
        {
            let Some(f) = status.followers.get(id).filter(|f| f.last_ack_ms.is_some()) else {
                continue;
            };
            let answers = f.reachable();
            match self.answering.get(id) {
                Some(was) if *was != answers => out.push((*id, answers)),
                None if !answers => out.push((*id, false)),
                _ => {}
            }
            now.insert(*id, answers);
        }
        self.answering = now;
        out
    }

    /// Forget what was seen (this node is not the leader).
    pub fn reset(&mut self) {
        self.silent_since.clear();
        self.answering.clear();
    }
}

fn journal(kind: &str, id: u64, message: String) -> Command {
    Command::Journal {
        kind: kind.to_string(),
        entity: "node".to_string(),
        entity_id: Some(id),
        message,
    }
}

/// The loop; stops only when its task is aborted.
pub async fn run(node: Arc<dyn Cluster>, tick: Duration) {
    let actor = format!("node:{}", node.id());
    let mut watch = Watch::default();
    loop {
        tokio::time::sleep(tick).await;
        if !node.is_leader() {
            watch.reset();
            continue;
        }
        let status = node.status();
        for (id, answers) in watch.log_changes(&status) {
            let addr = status
                .members
                .get(&id)
                .map(|m| m.api.clone())
                .unwrap_or_default();
            if answers {
                tracing::info!(node = id, api = %addr, "node {id} answers the leader again");
            } else {
                tracing::warn!(node = id, api = %addr, "node {id} does not answer the leader");
            }
        }
        for cmd in watch.due(&status, &node.state(), Instant::now()) {
            match &cmd {
                Command::Journal { kind, message, .. } if kind == UNREACHABLE => {
                    tracing::warn!(kind = %kind, "{message}")
                }
                Command::Journal { kind, message, .. } => tracing::info!(kind = %kind, "{message}"),
                _ => {}
            }
            if let Err(e) = node.propose(&actor, None, cmd).await {
                tracing::debug!(error = %e.message, "cannot journal a member's reachability");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Follower;
    use rackd_raft::cmd::Request;

    fn status(acks: &[(u64, Option<u64>)]) -> RaftStatus {
        let mut s = RaftStatus {
            leader_id: Some(1),
            ..RaftStatus::default()
        };
        s.members.insert(1, Default::default());
        for (id, ack) in acks {
            s.members.insert(*id, Default::default());
            s.followers.insert(
                *id,
                Follower {
                    matched: None,
                    last_ack_ms: *ack,
                },
            );
        }
        s
    }

    fn apply(state: &mut State, cmds: Vec<Command>) -> Vec<String> {
        cmds.into_iter()
            .map(|cmd| {
                state.apply(&Request {
                    time_ms: 1,
                    actor: "node:1".into(),
                    idempotency_key: None,
                    cmd,
                });
                state.events.values().last().unwrap().kind.clone()
            })
            .collect()
    }

    #[test]
    fn the_log_says_once_per_change_whether_a_member_answers() {
        let mut w = Watch::default();
        let up = status(&[(2, Some(100)), (3, Some(100))]);
        let down = status(&[(2, Some(100)), (3, Some(9_000))]);
        assert!(
            w.log_changes(&up).is_empty(),
            "answering from the start: nothing to say"
        );
        assert_eq!(w.log_changes(&down), [(3, false)]);
        assert!(w.log_changes(&down).is_empty(), "once, not at every look");
        assert_eq!(w.log_changes(&up), [(3, true)]);
        w.reset();
        assert_eq!(
            w.log_changes(&down),
            [(3, false)],
            "a new leader says who is silent"
        );
        let never = status(&[(2, Some(100)), (3, None)]);
        w.reset();
        assert!(
            w.log_changes(&never).is_empty(),
            "never acknowledged: not judged"
        );
    }

    #[test]
    fn a_silent_member_is_reported_once_after_the_delay_and_again_when_back() {
        let mut st = State::default();
        let mut w = Watch::default();
        let t0 = Instant::now();
        let silent = status(&[(2, Some(100)), (3, None)]);
        assert!(w.due(&silent, &st, t0).is_empty(), "3 just went silent");
        assert!(w.due(&silent, &st, t0 + DOWN_AFTER / 2).is_empty());
        let due = w.due(&silent, &st, t0 + DOWN_AFTER);
        let kinds = apply(&mut st, due);
        assert_eq!(kinds, [UNREACHABLE]);
        assert_eq!(reported_down(&st), BTreeSet::from([3]));
        assert!(w.due(&silent, &st, t0 + DOWN_AFTER * 3).is_empty(), "once");
        // A new leader (a fresh watch) reads the journal: no second report.
        let mut w2 = Watch::default();
        assert!(w2.due(&silent, &st, t0).is_empty());
        assert!(w2.due(&silent, &st, t0 + DOWN_AFTER * 2).is_empty());
        // Back: reported reachable once.
        let back = status(&[(2, Some(100)), (3, Some(50))]);
        let due = w2.due(&back, &st, t0);
        assert_eq!(apply(&mut st, due), [REACHABLE]);
        assert!(w2.due(&back, &st, t0).is_empty());
        assert!(reported_down(&st).is_empty());
        // Silent for a moment only (shorter than the delay): nothing.
        assert!(w2.due(&silent, &st, t0).is_empty());
        assert!(w2.due(&back, &st, t0 + DOWN_AFTER * 2).is_empty());
        assert!(w2.due(&silent, &st, t0 + DOWN_AFTER * 2).is_empty());
    }
}
