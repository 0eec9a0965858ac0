//! The leader's reaper: nothing waits forever on an executor that is gone (issue 21 R6).
//!
//! On the leader only, it watches the tasks that wait for an executor
//! ([`State::waiting_for_executor`]: a running task whose lease expired and that nobody took
//! over, or a pending task that could start and nobody started). Once one has waited
//! `--task-lost-secs` by the leader's monotonic clock, it proposes `LoseTasks`, which fails it
//! and the tasks queued behind it on its machine as "executor lost" (apply refuses it if the
//! task was claimed meanwhile). A live executor takes an expired task over within about a
//! lease, so the limit (a few leases) only ends the wait when the site has no executor left.
//! Time spent as a follower does not count: a new leader measures afresh.
//!
//! Runs on every node, not only location nodes. Layer: services; depends on `cluster` only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_raft::state::State;
use tokio::time::Instant;

use crate::cluster::{now_ms, Cluster};

/// When each waiting task (by id and generation) was first seen waiting.
#[derive(Debug, Default)]
pub struct Watch {
    since: HashMap<(u64, u64), Instant>,
}

impl Watch {
    /// The `LoseTasks` commands due at `now`: one per task that has waited at least `limit`.
    /// Tasks no longer waiting (claimed, finished, a new generation) are forgotten.
    pub fn due(
        &mut self,
        state: &State,
        now_ms: u64,
        now: Instant,
        limit: Duration,
    ) -> Vec<Command> {
        let mut seen = HashMap::new();
        let mut due = Vec::new();
        for t in state.active_tasks() {
            if !state.waiting_for_executor(t, now_ms) {
                continue;
            }
            let key = (t.meta.id, t.generation);
            let since = self.since.get(&key).copied().unwrap_or(now);
            seen.insert(key, since);
            let waited = now.saturating_duration_since(since);
            if waited >= limit {
                due.push(Command::LoseTasks {
                    machine_id: t.machine_id,
                    head: t.meta.id,
                    generation: t.generation,
                    waited_ms: waited.as_millis() as u64,
                });
            }
        }
        self.since = seen;
        due
    }

    /// Forget everything (this node is not the leader).
    pub fn reset(&mut self) {
        self.since.clear();
    }
}

/// The reaper loop; stops only when its task is aborted.
pub async fn run(node: Arc<dyn Cluster>, limit: Duration) {
    let tick = (limit / 10).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let actor = format!("node:{}", node.id());
    let mut watch = Watch::default();
    loop {
        tokio::time::sleep(tick).await;
        if !node.is_leader() {
            watch.reset();
            continue;
        }
        let due = watch.due(&node.state(), now_ms(), Instant::now(), limit);
        for cmd in due {
            let key = cmd.internal_key();
            match node.propose(&actor, key, cmd.clone()).await {
                Ok(_) => tracing::warn!(
                    ?cmd,
                    "task lost its executor; failed with the tasks queued behind it"
                ),
                Err(e) => tracing::info!(?cmd, error = %e.message, "lost task not failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rackd_types::payload::CreateMachine;
    use rackd_types::TaskKind;

    use super::*;
    use crate::cluster::fake::{machine_spec, sim_bmc, FakeCluster};

    /// A cluster (clock at 200 ms) with a machine with a BMC and `n` power tasks on it:
    /// (cluster, machine, task ids).
    fn cluster_with_tasks(n: usize) -> (Arc<FakeCluster>, u64, Vec<u64>) {
        let c = FakeCluster::new(1, 200);
        c.create_location("dc1");
        let m = c.create_machine(CreateMachine {
            bmc: Some(sim_bmc()),
            ..machine_spec("m", "dc1")
        });
        let ids = (0..n)
            .map(|_| {
                let kind = TaskKind::PowerOn;
                let t = c.apply_ok(
                    "t",
                    Command::CreateTask {
                        kind,
                        machine_id: m,
                    },
                );
                t.into_task().unwrap().meta.id
            })
            .collect();
        (c, m, ids)
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_is_due_only_after_waiting_the_whole_limit_at_one_generation() {
        let limit = Duration::from_secs(9);
        let (c, m, ids) = cluster_with_tasks(2);
        let (t1, t2) = (ids[0], ids[1]);
        let mut w = Watch::default();
        let t0 = Instant::now();
        // t1 can start and nobody starts it; t2 waits behind t1, not for an executor.
        assert!(w.due(&c.state(), 200, t0, limit).is_empty());
        assert!(w.due(&c.state(), 200, t0 + limit / 2, limit).is_empty());
        let due = w.due(&c.state(), 200, t0 + limit, limit);
        assert!(
            matches!(
                due.as_slice(),
                [Command::LoseTasks { machine_id, head, generation: 0, waited_ms: 9000 }]
                    if *machine_id == m && *head == t1
            ),
            "{due:?}"
        );
        // Claimed now: it is no longer waiting, and the clock starts again when its lease
        // expires (at a new generation).
        c.apply_ok(
            "node:5",
            Command::ClaimTask {
                id: t1,
                node: 5,
                generation: 0,
                lease_ms: 3000,
            },
        );
        let t1b = t0 + limit + Duration::from_secs(1);
        assert!(
            w.due(&c.state(), 3200, t1b, limit).is_empty(),
            "under its lease"
        );
        assert!(
            w.due(&c.state(), 3201, t1b, limit).is_empty(),
            "expired, seen now"
        );
        let almost = t1b + limit - Duration::from_millis(1);
        assert!(w.due(&c.state(), 3201, almost, limit).is_empty());
        let due = w.due(&c.state(), 3201, t1b + limit, limit);
        assert_eq!(due.len(), 1);
        assert!(
            matches!(due[0], Command::LoseTasks { head, generation: 1, .. } if head == t1),
            "{due:?}"
        );
        // Applied, it fails t1 and t2; nothing is due any more.
        c.advance(Duration::from_secs(20));
        c.apply_ok("node:1", due[0].clone());
        let now_ms = c.now_ms();
        assert!(w.due(&c.state(), now_ms, t1b + limit * 2, limit).is_empty());
        assert_eq!(c.state().active_tasks().count(), 0, "{t2} failed with {t1}");
        // A leadership change forgets the watch: a new leader measures afresh.
        w.reset();
        assert!(w.since.is_empty());
    }
}
