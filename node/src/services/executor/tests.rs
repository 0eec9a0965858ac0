//! Fencing of the executor's attempts against [`FakeCluster`] (the real apply rules): an attempt
//! starts only after a renewal that commits now, and its fence follows the renewals that
//! commit, closing when they stop (refused or unanswered); its result is recorded once through
//! lost answers and leaderless periods.

use std::time::Duration;

use rackd_types::TaskKind;
use tokio::time::Instant;

use super::plan::tests::{claim, location, machine, task, LEASE_MS};
use super::{confirm_lease, record_result, renew_lease};
use crate::cluster::fake::FakeCluster;

const LEASE: Duration = Duration::from_millis(LEASE_MS);

/// A cluster with one task claimed by node 1: (cluster, task id, node 1's generation).
fn claimed() -> (std::sync::Arc<FakeCluster>, u64, u64) {
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    let m = machine(&c, "dc1", "m1", true);
    let t = task(&c, m, TaskKind::PowerOn);
    let g = claim(&c, t, 1) + 1;
    (c, t, g)
}

#[tokio::test(start_paused = true)]
async fn an_attempt_starts_only_on_a_lease_confirmed_now() {
    let (c, t, g) = claimed();
    let before = c.log().len();
    let sent = Instant::now();
    let fence = confirm_lease(&*c, "node:1", t, g, LEASE).await.unwrap();
    assert_eq!(
        c.log().len(),
        before + 1,
        "one renewal went through the log"
    );
    assert!(fence.is_open());
    assert_eq!(fence.deadline(), sent + LEASE - LEASE / 10);

    // The lease runs out in leader time and node 2 takes the task over. Node 1's attempt of
    // the old generation (a cached claim answer, an adopted claim) is refused before it runs.
    c.advance(LEASE + Duration::from_secs(1));
    claim(&c, t, 2);
    let e = confirm_lease(&*c, "node:1", t, g, LEASE).await.unwrap_err();
    assert!(e.contains("stale lease renewal"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn without_a_leader_the_fence_never_opens() {
    let (c, t, g) = claimed();
    c.set_leading(false);
    let start = Instant::now();
    let e = confirm_lease(&*c, "node:1", t, g, LEASE).await.unwrap_err();
    assert!(e.contains("no leader"), "{e}");
    // Retried for about one lease, then given up.
    assert!(start.elapsed() >= LEASE, "{:?}", start.elapsed());
    assert!(start.elapsed() < LEASE * 2, "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_fence_follows_committed_renewals_and_closes_when_they_stop() {
    let (c, t, g) = claimed();
    let fence = confirm_lease(&*c, "node:1", t, g, LEASE).await.unwrap();
    let first = fence.deadline();
    let keeper = tokio::spawn(renew_lease(
        c.clone(),
        "node:1".into(),
        t,
        g,
        LEASE,
        fence.clone(),
    ));
    // Renewals commit every third of the lease: the fence stays open well past the first one.
    tokio::time::sleep(LEASE * 2).await;
    assert!(fence.is_open());
    assert!(fence.deadline() > first + LEASE);

    // Cut off from the leader: renewals go unanswered; the fence closes by the local clock
    // within one lease, although nothing refused the lease.
    c.set_leading(false);
    let cut = Instant::now();
    fence.closed().await;
    assert!(cut.elapsed() <= LEASE, "{:?}", cut.elapsed());
    assert!(!keeper.is_finished(), "unanswered renewals are retried");

    // Back with a leader after a takeover: the next renewal is refused and the keeper ends.
    c.set_leading(true);
    c.advance(LEASE * 3);
    claim(&c, t, 2);
    let why = keeper.await.unwrap();
    assert!(why.contains("stale lease renewal"), "{why}");
    assert!(!fence.is_open());
}

fn finish(t: u64, generation: u64) -> rackd_raft::cmd::Command {
    rackd_raft::cmd::Command::FinishTask {
        id: t,
        generation,
        error: None,
        observed_power: Some(rackd_types::PowerState::On),
    }
}

fn finish_proposals(c: &FakeCluster) -> usize {
    c.log()
        .iter()
        .filter(|r| matches!(r.cmd, rackd_raft::cmd::Command::FinishTask { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_result_is_retried_through_lost_answers_and_no_leader_and_applied_once() {
    let (c, t, g) = claimed();
    // The first two answers are lost after the result committed, then there is no leader for
    // a while: the executor keeps sending the same result under its key.
    c.lose_answers(2);
    let cluster = c.clone();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.set_leading(false);
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster.set_leading(true);
    });
    let start = Instant::now();
    record_result(&*c, "node:1", finish(t, g)).await.unwrap();
    heal.await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(10),
        "retried until a leader came back"
    );
    // Two applied with their answers lost, then (proposals without a leader never reach the
    // log) the one whose answer came back.
    assert_eq!(finish_proposals(&c), 3);
    // Applied once: one journal entry, the task finished at the attempt's generation.
    let st = crate::cluster::Cluster::state(&*c);
    let task = st.tasks.get(&t).unwrap();
    assert_eq!(task.state, rackd_types::TaskState::Succeeded, "{task:?}");
    assert_eq!(task.generation, g);
    let finished = st
        .events
        .values()
        .filter(|e| e.kind == "task.finished" && e.entity_id == Some(t))
        .count();
    assert_eq!(finished, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_result_is_not_retried() {
    let (c, t, g) = claimed();
    c.advance(LEASE * 3);
    claim(&c, t, 2); // taken over: the old generation's result is stale
    let before = finish_proposals(&c);
    let e = record_result(&*c, "node:1", finish(t, g))
        .await
        .unwrap_err();
    assert_eq!(e.code, rackd_types::ErrorCode::PreconditionFailed, "{e:?}");
    assert_eq!(finish_proposals(&c), before + 1, "sent once");
}
