//! Task leases, fencing, internal idempotency keys and power-observation ordering.

use rackd_types::payload::{CreateLocation, CreateMachine};
use rackd_types::{ApiError, BmcSpec, ErrorCode, TaskKind, TaskState};
use serde_json::Value;

use super::{Claim, EXECUTOR_LOST, MAX_TASK_ATTEMPTS};
use crate::cmd::{Command, PowerObservation, Request};
use crate::state::State;

fn apply(s: &mut State, t: u64, actor: &str, cmd: Command) -> Result<Value, ApiError> {
    let idempotency_key = cmd.internal_key();
    s.apply(&Request {
        time_ms: t,
        actor: actor.into(),
        idempotency_key,
        cmd,
    })
    .0
    .map(|a| a.body())
}

fn ok(s: &mut State, t: u64, cmd: Command) -> Value {
    apply(s, t, "node:1", cmd).unwrap_or_else(|e| panic!("unexpected error {e:?}"))
}

fn refused(s: &mut State, t: u64, cmd: Command) -> ErrorCode {
    match apply(s, t, "node:1", cmd) {
        Ok(v) => panic!("unexpected success {v:?}"),
        Err(e) => e.code,
    }
}

/// A state with one machine (with a BMC) and two tasks on it: (state, machine, t1, t2).
fn setup() -> (State, u64, u64, u64) {
    let mut s = State::default();
    ok(
        &mut s,
        1,
        Command::Bootstrap {
            cluster_id: "c1".into(),
            admin_token_hash: "a".repeat(64),
        },
    );
    ok(
        &mut s,
        2,
        Command::CreateLocation(CreateLocation {
            name: "dc1".into(),
            description: String::new(),
            discovery: false,
        }),
    );
    let m = ok(
        &mut s,
        3,
        Command::CreateMachine(CreateMachine {
            hostname: "m".into(),
            location: "dc1".into(),
            rack_id: None,
            rack_unit: None,
            macs: vec![],
            ips: vec![],
            bmc: Some(BmcSpec {
                driver: "sim".parse().unwrap(),
                address: "x".into(),
                port: 623,
                username: String::new(),
                password: None,
                cipher_suite: None,
            }),
            state: None,
            description: String::new(),
            tags: vec![],
        }),
    )["id"]
        .as_u64()
        .unwrap();
    let t1 = create_task(&mut s, 4, m, TaskKind::PowerOff);
    let t2 = create_task(&mut s, 5, m, TaskKind::PowerOn);
    (s, m, t1, t2)
}

/// Creates a task of `kind` on machine `m` at time `t`; its id.
fn create_task(s: &mut State, t: u64, m: u64, kind: TaskKind) -> u64 {
    ok(
        s,
        t,
        Command::CreateTask {
            kind,
            machine_id: m,
        },
    )["id"]
        .as_u64()
        .unwrap()
}

fn claim(id: u64, node: u64, generation: u64) -> Command {
    Command::ClaimTask {
        id,
        node,
        generation,
        lease_ms: 1000,
    }
}

fn renew(id: u64, generation: u64) -> Command {
    Command::RenewTaskLease {
        id,
        generation,
        lease_ms: 1000,
    }
}

fn finish(id: u64, generation: u64, power: &str) -> Command {
    Command::FinishTask {
        id,
        generation,
        error: None,
        observed_power: Some(power.parse().unwrap()),
    }
}

fn observe(machine_id: u64, power: &str, observed_at_ms: u64) -> Command {
    Command::ObservePower {
        observations: vec![PowerObservation {
            machine_id,
            power: power.parse().unwrap(),
            observed_at_ms,
        }],
    }
}

#[test]
fn an_expired_lease_is_taken_over_with_a_new_generation_and_the_old_result_is_refused() {
    let (mut s, _, t1, t2) = setup();
    let c = ok(&mut s, 100, claim(t1, 1, 0));
    assert_eq!(
        (c["generation"].as_u64(), c["lease_expires_at"].as_u64()),
        (Some(1), Some(1100))
    );
    // While the lease runs, nobody takes the task, and the next task of the machine waits.
    assert_eq!(
        s.claimable(t1, 1100).unwrap_err().code,
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        refused(&mut s, 1100, claim(t1, 2, 1)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        s.claimable(t2, 5000).unwrap_err().code,
        ErrorCode::PreconditionFailed
    );
    // Expired (leader time): node 2 takes it over under generation 2, as attempt 2.
    assert_eq!(s.claimable(t1, 1101), Ok(Claim::TakeOver));
    let c = ok(&mut s, 1101, claim(t1, 2, 1));
    assert_eq!(
        (
            c["state"].as_str(),
            c["generation"].as_u64(),
            c["attempt"].as_u64()
        ),
        (Some("running"), Some(2), Some(2)),
        "{c}"
    );
    assert_eq!(
        (c["assignee"].as_u64(), c["lease_expires_at"].as_u64()),
        (Some(2), Some(2101))
    );
    // The lost executor's renewal and result are stale now; the new executor's are accepted.
    assert_eq!(
        refused(&mut s, 1200, renew(t1, 1)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        refused(&mut s, 1200, finish(t1, 1, "on")),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(s.tasks.get(&t1).unwrap().state, TaskState::Running);
    ok(&mut s, 1300, finish(t1, 2, "off"));
    assert_eq!(s.tasks.get(&t1).unwrap().state, TaskState::Succeeded);
    // Now the second task may start.
    assert_eq!(s.claimable(t2, 1301), Ok(Claim::Start));
    ok(&mut s, 1301, claim(t2, 1, 0));
}

#[test]
fn renewal_keeps_the_lease_and_a_stale_generation_cannot_renew() {
    let (mut s, _, t1, _) = setup();
    ok(&mut s, 100, claim(t1, 1, 0));
    // Renewed at 800: the lease runs to 1800, so a claim at 1500 is refused.
    let r = ok(&mut s, 800, renew(t1, 1));
    assert_eq!(r["lease_expires_at"].as_u64(), Some(1800));
    assert_eq!(
        refused(&mut s, 1500, claim(t1, 2, 1)),
        ErrorCode::PreconditionFailed
    );
    // A renewal for a generation that never existed, or after the take-over, is refused.
    assert_eq!(
        refused(&mut s, 1500, renew(t1, 0)),
        ErrorCode::PreconditionFailed
    );
    ok(&mut s, 1801, claim(t1, 2, 1));
    assert_eq!(
        refused(&mut s, 1802, renew(t1, 1)),
        ErrorCode::PreconditionFailed
    );
    let r = ok(&mut s, 1900, renew(t1, 2));
    assert_eq!(r["lease_expires_at"].as_u64(), Some(2900));
    // A renewal of a finished task is refused.
    ok(&mut s, 2000, finish(t1, 2, "off"));
    assert_eq!(
        refused(&mut s, 2001, renew(t1, 2)),
        ErrorCode::PreconditionFailed
    );
}

#[test]
fn a_task_fails_as_executor_lost_after_the_last_attempt_and_frees_the_machine() {
    let (mut s, _, t1, t2) = setup();
    let mut now = 100;
    for generation in 0..u64::from(MAX_TASK_ATTEMPTS) {
        ok(&mut s, now, claim(t1, 1 + generation, generation));
        now += 2000; // every executor vanishes
    }
    assert_eq!(s.claimable(t1, now), Ok(Claim::Fail));
    let c = ok(&mut s, now, claim(t1, 9, u64::from(MAX_TASK_ATTEMPTS)));
    assert_eq!(c["state"], "failed", "{c}");
    assert!(
        c["error"].as_str().unwrap().starts_with(EXECUTOR_LOST),
        "{c}"
    );
    assert_eq!(c["attempt"].as_u64(), Some(u64::from(MAX_TASK_ATTEMPTS)));
    // No executor runs it any more, and the machine's next task may start.
    assert!(s.claimable(t1, now + 1).is_err());
    assert_eq!(
        refused(&mut s, now, finish(t1, u64::from(MAX_TASK_ATTEMPTS), "on")),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(s.claimable(t2, now + 1), Ok(Claim::Start));
}

fn lose(machine_id: u64, head: u64, generation: u64) -> Command {
    Command::LoseTasks {
        machine_id,
        head,
        generation,
        waited_ms: 9000,
    }
}

fn task(s: &State, id: u64) -> rackd_types::Task {
    s.tasks.get(&id).cloned().expect("task")
}

#[test]
fn a_running_task_nobody_took_over_is_lost_with_the_tasks_queued_behind_it() {
    let (mut s, m, t1, t2) = setup();
    let t3 = create_task(&mut s, 6, m, TaskKind::PowerCycle);
    ok(&mut s, 100, claim(t1, 7, 0));
    let waiting = |s: &State, id, now| s.waiting_for_executor(&task(s, id), now);
    // Under its lease, t1 is not waiting; t2 and t3 wait behind it, not for an executor.
    assert!(!waiting(&s, t1, 1100));
    assert!(!waiting(&s, t2, 1100) && !waiting(&s, t3, 1100));
    assert_eq!(
        refused(&mut s, 1100, lose(m, t1, 1)),
        ErrorCode::PreconditionFailed
    );
    // The lease expired: t1 waits for an executor; a stale generation or another machine's
    // id is refused.
    assert!(waiting(&s, t1, 1101));
    assert_eq!(
        refused(&mut s, 5000, lose(m, t1, 0)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        refused(&mut s, 5000, lose(m + 1, t1, 1)),
        ErrorCode::PreconditionFailed
    );
    let lost = ok(&mut s, 5000, lose(m, t1, 1));
    assert_eq!(lost["state"], "failed", "{lost}");
    let e = lost["error"].as_str().unwrap();
    assert!(e.starts_with(EXECUTOR_LOST), "{e}");
    assert!(
        e.contains("node 7") && e.contains("dc1") && e.contains("9s"),
        "{e}"
    );
    for q in [t2, t3] {
        let t = task(&s, q);
        assert_eq!(t.state, TaskState::Failed, "{t:?}");
        assert!(
            t.error.as_deref().unwrap().contains(&format!("task {t1}")),
            "{t:?}"
        );
    }
    assert_eq!(s.machine_active_tasks(m).count(), 0);
    assert!(indexes_consistent(&s));
    // The late executor's result is refused; the machine takes new work.
    assert_eq!(
        refused(&mut s, 5001, finish(t1, 1, "on")),
        ErrorCode::PreconditionFailed
    );
    let t4 = create_task(&mut s, 5002, m, TaskKind::PowerOn);
    assert_eq!(s.claimable(t4, 5003), Ok(Claim::Start));
    // Applied again (a retry with the same internal key) it answers the same, once.
    let again = ok(&mut s, 5004, lose(m, t1, 1));
    assert_eq!(again["state"], "failed");
    assert_eq!(task(&s, t4).state, TaskState::Pending);
}

#[test]
fn a_pending_task_nobody_started_is_lost_but_a_claimed_one_is_not() {
    let (mut s, m, t1, t2) = setup();
    let waiting = |s: &State, id, now| s.waiting_for_executor(&task(s, id), now);
    assert!(waiting(&s, t1, 10) && !waiting(&s, t2, 10));
    // Claimed meanwhile: the leader's decision came too late and is refused.
    ok(&mut s, 20, claim(t1, 3, 0));
    assert_eq!(
        refused(&mut s, 30, lose(m, t1, 0)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(task(&s, t1).state, TaskState::Running);
    ok(&mut s, 40, finish(t1, 1, "off"));
    // t2 can start now but nobody starts it.
    assert!(waiting(&s, t2, 50));
    let lost = ok(&mut s, 9050, lose(m, t2, 0));
    assert_eq!(lost["state"], "failed");
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("no executor of location dc1 started"),
        "{lost}"
    );
    assert_eq!(task(&s, t1).state, TaskState::Succeeded);
}

#[test]
fn a_retried_claim_or_result_gets_the_first_answer() {
    let (mut s, _, t1, _) = setup();
    // The first claim commits but its answer is lost; the retry (same command, same key)
    // returns the same claim instead of "task is running at generation 1".
    let first = ok(&mut s, 100, claim(t1, 1, 0));
    let retry = ok(&mut s, 150, claim(t1, 1, 0));
    assert_eq!(first, retry);
    assert_eq!(s.tasks.get(&t1).unwrap().attempt, 1);
    // Another node's claim of the same generation is still refused.
    assert_eq!(
        apply(&mut s, 160, "node:2", claim(t1, 2, 0))
            .unwrap_err()
            .code,
        ErrorCode::PreconditionFailed
    );
    let done = ok(&mut s, 200, finish(t1, 1, "off"));
    assert_eq!(ok(&mut s, 250, finish(t1, 1, "off")), done);
    // Keys are derived from the command: deterministic, and distinct per task and generation.
    assert_eq!(
        claim(t1, 1, 0).internal_key(),
        claim(t1, 1, 0).internal_key()
    );
    assert_ne!(
        claim(t1, 1, 0).internal_key(),
        claim(t1, 1, 1).internal_key()
    );
    assert_ne!(
        finish(t1, 1, "on").internal_key(),
        claim(t1, 1, 1).internal_key()
    );
    // Power observations carry no key (applying a round twice changes nothing, see below),
    // so sync rounds do not fill the shared idempotency bound.
    assert_eq!(observe(1, "on", 5).internal_key(), None);
    let done = |token: &str| Command::DeployDone {
        mac: "02:00:00:00:00:01".into(),
        token: crate::cmd::Secret(token.into()),
    };
    let k = done("secret-token").internal_key().unwrap();
    assert!(k.starts_with("deploy-done:02:00:00:00:00:01:") && !k.contains("secret-token"));
    assert_ne!(done("other").internal_key(), Some(k));
}

#[test]
fn a_retried_claim_is_refused_once_the_task_was_taken_over() {
    let (mut s, _, t1, _) = setup();
    // Node 1 claims at 100 (lease 1000); its answer is lost and it stays away past the lease.
    ok(&mut s, 100, claim(t1, 1, 0));
    // Node 2 takes the task over at 1101 (generation 1 -> 2).
    let taken = apply(&mut s, 1101, "node:2", claim(t1, 2, 1)).unwrap();
    assert_eq!(taken["generation"], 2);
    assert_eq!(taken["assignee"], 2);
    // Node 1's retry of its first claim (same command, same key) must not answer "running on
    // node 1" any more: acting on it would drive the BMC beside node 2.
    let e = apply(&mut s, 1200, "node:1", claim(t1, 1, 0)).unwrap_err();
    assert_eq!(e.code, ErrorCode::PreconditionFailed, "{e:?}");
    assert!(e.message.contains("stale claim"), "{e:?}");
    // Nothing changed: node 2 holds the task.
    let t = s.tasks.get(&t1).unwrap();
    assert_eq!((t.generation, t.assignee), (2, Some(2)));
    // After the task finished, a retry of node 2's own claim is refused too (nothing to run).
    ok(&mut s, 1300, finish(t1, 2, "off"));
    let e = apply(&mut s, 1400, "node:2", claim(t1, 2, 1)).unwrap_err();
    assert_eq!(e.code, ErrorCode::PreconditionFailed, "{e:?}");
}

#[test]
fn a_cancelled_task_never_runs_and_a_running_attempt_is_fenced() {
    let (mut s, _, t1, t2) = setup();
    // t1 runs on node 1; t2 waits behind it.
    ok(&mut s, 100, claim(t1, 1, 0));
    let cancel = |id: u64| Command::CancelTask { id };
    let c = apply(&mut s, 150, "admin", cancel(t1)).unwrap();
    assert_eq!(c["state"], "cancelled", "{c}");
    assert!(
        c["error"].as_str().unwrap().contains("cancelled by admin"),
        "{c}"
    );
    // The running attempt can neither keep its lease nor record a result...
    assert_eq!(
        refused(&mut s, 160, renew(t1, 1)),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        refused(&mut s, 170, finish(t1, 1, "off")),
        ErrorCode::PreconditionFailed
    );
    // ... nor be claimed again, also not by a retry of its first claim.
    assert!(s.claimable(t1, 10_000).is_err());
    assert_eq!(
        refused(&mut s, 180, claim(t1, 1, 0)),
        ErrorCode::PreconditionFailed
    );
    // The machine is free for the next task.
    assert_eq!(s.claimable(t2, 190), Ok(Claim::Start));
    // A pending task is cancelled before it ever starts; a finished one cannot be (409), and
    // a missing one is 404; nothing changes on a refusal.
    assert_eq!(
        apply(&mut s, 200, "admin", cancel(t2)).unwrap()["state"],
        "cancelled"
    );
    let version = s.tasks.get(&t2).unwrap().meta.version;
    assert_eq!(
        apply(&mut s, 210, "admin", cancel(t2)).unwrap_err().code,
        ErrorCode::Conflict
    );
    assert_eq!(s.tasks.get(&t2).unwrap().meta.version, version);
    assert_eq!(
        apply(&mut s, 220, "admin", cancel(9_999)).unwrap_err().code,
        ErrorCode::NotFound
    );
    assert!(indexes_consistent(&s));
    assert_eq!(s.active_tasks().count(), 0);
}

#[test]
fn pending_tasks_per_machine_are_bounded() {
    use super::MAX_ACTIVE_TASKS_PER_MACHINE;
    let (mut s, m, _, _) = setup();
    // setup() made two; fill up to the bound.
    for i in 2..MAX_ACTIVE_TASKS_PER_MACHINE {
        create_task(&mut s, 100 + i as u64, m, TaskKind::PowerStatus);
    }
    let over = Command::CreateTask {
        kind: TaskKind::PowerStatus,
        machine_id: m,
    };
    let before = s.tasks.len();
    let e = apply(&mut s, 500, "admin", over.clone()).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
    assert!(e.message.contains("cancel one"), "{e:?}");
    assert_eq!(s.tasks.len(), before, "nothing created");
    // Cancelling one makes room again.
    let first = s.machine_active_tasks(m).next().unwrap().meta.id;
    apply(&mut s, 510, "admin", Command::CancelTask { id: first }).unwrap();
    apply(&mut s, 520, "admin", over).unwrap();
}

#[test]
fn power_observations_never_overwrite_newer_results() {
    let (mut s, m, t1, _) = setup();
    let power = |s: &State| {
        let m = &s.machines.get(&m).unwrap().machine;
        (m.power_state, m.power_observed_at)
    };
    // Polled at 900 (on), committed at 1000.
    assert_eq!(ok(&mut s, 1000, observe(m, "on", 900))["recorded"], 1);
    assert_eq!(power(&s), (Some("on".parse().unwrap()), Some(900)));
    // An older poll that commits later is dropped.
    assert_eq!(ok(&mut s, 1100, observe(m, "off", 800))["recorded"], 0);
    assert_eq!(power(&s), (Some("on".parse().unwrap()), Some(900)));
    // While a task runs, polls are dropped: the task records the result.
    ok(&mut s, 1200, claim(t1, 1, 0));
    assert_eq!(ok(&mut s, 1250, observe(m, "unknown", 1240))["recorded"], 0);
    ok(&mut s, 2000, finish(t1, 1, "off"));
    assert_eq!(power(&s), (Some("off".parse().unwrap()), Some(2000)));
    // A poll started before the task's result, committed after it, does not undo it.
    assert_eq!(ok(&mut s, 3000, observe(m, "on", 1900))["recorded"], 0);
    assert_eq!(power(&s), (Some("off".parse().unwrap()), Some(2000)));
    // A newer poll is recorded with its own time; a clock ahead of the leader is capped.
    assert_eq!(ok(&mut s, 3100, observe(m, "off", 3050))["recorded"], 1);
    assert_eq!(power(&s), (Some("off".parse().unwrap()), Some(3050)));
    assert_eq!(ok(&mut s, 3200, observe(m, "on", 99_999))["recorded"], 1);
    assert_eq!(power(&s), (Some("on".parse().unwrap()), Some(3200)));
}

#[test]
fn observations_from_old_log_entries_still_decode() {
    let old = r#"{"type":"observe_power","observations":[[7,"on"],[8,"off"]]}"#;
    let Command::ObservePower { observations } = serde_json::from_str(old).unwrap() else {
        panic!("wrong command");
    };
    assert_eq!(
        observations[0],
        PowerObservation {
            machine_id: 7,
            power: "on".parse().unwrap(),
            observed_at_ms: 0
        }
    );
    let new = observe(7, "on", 5);
    let back: Command = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
    assert_eq!(back.internal_key(), new.internal_key());
    // An old entry (no poll time) is stamped with the entry's time.
    let (mut s, m, _, _) = setup();
    let c: Command = serde_json::from_str(&old.replace('7', &m.to_string())).unwrap();
    assert_eq!(ok(&mut s, 500, c)["recorded"], 1);
    assert_eq!(
        s.machines.get(&m).unwrap().machine.power_observed_at,
        Some(500)
    );
}

/// The derived task indexes of `s` equal the ones rebuilt from its tables (what a restart or a
/// snapshot install computes).
fn indexes_consistent(s: &State) -> bool {
    let mut rebuilt = s.clone();
    rebuilt.rebuild_indexes();
    rebuilt.idx == s.idx
}

#[test]
fn finished_tasks_are_dropped_after_the_retention_and_the_active_index_follows() {
    use super::TASK_RETENTION_MS;
    let (mut s, m, t1, t2) = setup();
    assert_eq!(s.active_tasks().count(), 2);
    assert_eq!(
        s.machine_active_tasks(m)
            .map(|t| t.meta.id)
            .collect::<Vec<_>>(),
        [t1, t2]
    );
    ok(&mut s, 100, claim(t1, 1, 0));
    ok(&mut s, 200, finish(t1, 1, "off"));
    assert!(indexes_consistent(&s));
    assert_eq!(
        s.active_tasks().map(|t| t.meta.id).collect::<Vec<_>>(),
        [t2]
    );
    assert_eq!(s.claimable(t2, 300), Ok(Claim::Start));
    // The finished task is still there within the retention...
    let t3 = create_task(
        &mut s,
        201 + TASK_RETENTION_MS / 2,
        m,
        TaskKind::PowerStatus,
    );
    assert!(s.tasks.get(&t1).is_some());
    // ... and dropped by the first task write after it (leader time, so on every replica).
    ok(&mut s, 201 + TASK_RETENTION_MS, claim(t2, 1, 0));
    assert!(s.tasks.get(&t1).is_none(), "t1 pruned");
    assert!(s.tasks.get(&t2).is_some() && s.tasks.get(&t3).is_some());
    assert!(indexes_consistent(&s));
}

#[test]
fn at_most_max_finished_tasks_are_kept() {
    use super::MAX_FINISHED_TASKS;
    let (mut s, m, t1, t2) = setup();
    let mut t = 10;
    let mut run = |s: &mut State, id: u64| {
        t += 1;
        ok(s, t, claim(id, 1, 0));
        ok(s, t, finish(id, 1, "on"));
    };
    run(&mut s, t1);
    run(&mut s, t2);
    let mut last = 0;
    for _ in 0..MAX_FINISHED_TASKS {
        last = create_task(&mut s, 20, m, TaskKind::PowerStatus);
        run(&mut s, last);
    }
    assert_eq!(s.tasks.len(), MAX_FINISHED_TASKS);
    assert!(
        s.tasks.get(&t1).is_none() && s.tasks.get(&t2).is_none(),
        "oldest dropped"
    );
    assert!(s.tasks.get(&last).is_some());
    assert!(indexes_consistent(&s));
}

#[test]
fn internal_idempotency_keys_expire_sooner_than_clients_keys() {
    use crate::state::{idempotency_ttl, IDEMPOTENCY_TTL_MS, INTERNAL_IDEMPOTENCY_TTL_MS};
    assert_eq!(idempotency_ttl("admin\u{0}t12:my-key"), IDEMPOTENCY_TTL_MS);
    assert_eq!(
        idempotency_ttl("node:3\u{0}claim:7:0"),
        INTERNAL_IDEMPOTENCY_TTL_MS
    );
    // A token named like a node still has a client key (scoped by token id).
    assert_eq!(
        idempotency_ttl("node:3\u{0}t5:claim:7:0"),
        IDEMPOTENCY_TTL_MS
    );
    assert_eq!(idempotency_ttl("x\u{0}t:k"), INTERNAL_IDEMPOTENCY_TTL_MS);
    let (mut s, _, t1, _) = setup();
    let first = ok(&mut s, 100, claim(t1, 1, 0));
    // Within the TTL a retry gets the first answer; after it the record is gone (the retry
    // is then judged on its own: refused as stale, never applied twice).
    assert_eq!(
        ok(
            &mut s,
            100 + INTERNAL_IDEMPOTENCY_TTL_MS - 1,
            claim(t1, 1, 0)
        ),
        first
    );
    let later = 200 + INTERNAL_IDEMPOTENCY_TTL_MS;
    assert_eq!(
        refused(&mut s, later, claim(t1, 1, 0)),
        ErrorCode::PreconditionFailed
    );
    assert!(indexes_consistent(&s));
}

#[test]
fn deleting_a_machine_cancels_its_active_tasks() {
    let (mut s, m, t1, t2) = setup();
    ok(&mut s, 100, claim(t1, 1, 0));
    ok(
        &mut s,
        200,
        Command::DeleteMachine {
            id: m,
            if_match: None,
        },
    );
    for t in [t1, t2] {
        let task = s.tasks.get(&t).unwrap();
        assert_eq!(task.state, TaskState::Cancelled, "{task:?}");
        assert_eq!(task.finished_at, Some(200));
    }
    assert_eq!(s.active_tasks().count(), 0);
    // The running attempt's result is refused as stale.
    assert_eq!(
        refused(&mut s, 300, finish(t1, 1, "off")),
        ErrorCode::PreconditionFailed
    );
    assert!(indexes_consistent(&s));
}
