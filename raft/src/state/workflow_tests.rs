//! Workflows: a deploy and a release driven step by step, fencing of steps by generation and
//! attempt, timeouts by leader time, events ending waits, cancel, retry, and the machine
//! following its workflow.

use rackd_types::payload::{CreateImage, CreateLocation, CreateMachine, UpdateMachine};
use rackd_types::{
    ApiError, BmcSpec, ErrorCode, MachineState, PowerState, StepKind, StepState, Task, TaskKind,
    TaskState,
};

use crate::cmd::{Command, Request, Secret, StepOutcome};
use crate::state::{deploy_token_check, ApplyRules, State};

const MAC: &str = "02:00:00:00:00:aa";
const TOKEN: &str = "tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt";
const LEASE: u64 = 10_000;

fn apply(s: &mut State, t: u64, cmd: Command) -> Result<rackd_types::Task, ApiError> {
    let idempotency_key = cmd.internal_key();
    s.apply(&Request {
        time_ms: t,
        actor: "node:1".into(),
        idempotency_key,
        cmd,
    })
    .0
    .and_then(|a| a.into_task())
}

fn run(s: &mut State, t: u64, cmd: Command) -> crate::cmd::Applied {
    s.apply(&Request {
        time_ms: t,
        actor: "op".into(),
        idempotency_key: None,
        cmd,
    })
    .0
    .unwrap_or_else(|e| panic!("unexpected error {e:?}"))
}

fn refused(s: &mut State, t: u64, cmd: Command) -> ErrorCode {
    match s
        .apply(&Request {
            time_ms: t,
            actor: "op".into(),
            idempotency_key: None,
            cmd,
        })
        .0
    {
        Ok(v) => panic!("unexpected success {v:?}"),
        Err(e) => e.code,
    }
}

/// A state with a ready machine (sim BMC unless `bmc` is false) and an image: (state, machine).
fn setup(bmc: bool) -> (State, u64) {
    let mut s = State::default();
    run(
        &mut s,
        1,
        Command::Bootstrap {
            cluster_id: "c1".into(),
            admin_token_hash: "a".repeat(64),
        },
    );
    run(
        &mut s,
        2,
        Command::CreateLocation(CreateLocation {
            name: "dc1".into(),
            description: String::new(),
            discovery: false,
        }),
    );
    run(
        &mut s,
        3,
        Command::CreateImage(CreateImage {
            name: "deb".into(),
            kernel: "deb/vmlinuz".into(),
            initrd: "deb/initrd".into(),
            cmdline: String::new(),
            rootfs: None,
        }),
    );
    let m = run(
        &mut s,
        4,
        Command::CreateMachine(CreateMachine {
            hostname: "web1".into(),
            location: "dc1".into(),
            rack_id: None,
            rack_unit: None,
            macs: vec![MAC.into()],
            ips: vec![],
            bmc: bmc.then(|| BmcSpec {
                driver: "sim".parse().unwrap(),
                address: "x".into(),
                port: 623,
                username: String::new(),
                password: None,
                cipher_suite: None,
            }),
            state: Some(MachineState::Ready),
            description: String::new(),
            tags: vec![],
        }),
    )
    .into_machine()
    .unwrap();
    (s, m.meta.id)
}

fn deploy(id: u64, boot_ms: Option<u64>) -> Command {
    Command::Deploy {
        id,
        if_match: None,
        image: "deb".into(),
        token: Secret(deploy_token_check(TOKEN)),
        sealed_token: Some(Secret("rackd-sealed:v1:deploy-token:1:00".into())),
        boot_timeout_ms: boot_ms,
        install_timeout_ms: None,
    }
}

fn machine_state(s: &State, id: u64) -> (MachineState, String) {
    let m = &s.machines.get(&id).unwrap().machine;
    (m.state, m.state_cause.clone())
}

fn task(s: &State, id: u64) -> Task {
    s.tasks.get(&id).unwrap().clone()
}

fn claim(s: &mut State, t: u64, id: u64) -> Task {
    let generation = task(s, id).generation;
    apply(
        s,
        t,
        Command::ClaimTask {
            id,
            node: 2,
            generation,
            lease_ms: LEASE,
        },
    )
    .unwrap()
}

fn start(s: &mut State, t: u64, id: u64, step: u32) -> Result<Task, ApiError> {
    let task = task(s, id);
    let attempt = task.steps[step as usize].attempts + 1;
    apply(
        s,
        t,
        Command::StartStep {
            id,
            generation: task.generation,
            step,
            attempt,
        },
    )
}

fn finish(
    s: &mut State,
    t: u64,
    id: u64,
    step: u32,
    outcome: StepOutcome,
) -> Result<Task, ApiError> {
    let task = task(s, id);
    apply(
        s,
        t,
        Command::FinishStep {
            id,
            generation: task.generation,
            step,
            attempt: task.steps[step as usize].attempts,
            outcome,
            observed_power: None,
            start_next: false,
        },
    )
}

fn done(note: &str) -> StepOutcome {
    StepOutcome::Succeeded { note: note.into() }
}

fn events_saying(s: &State, what: &str) -> usize {
    s.events
        .values()
        .filter(|e| e.message.contains(what))
        .count()
}

#[test]
fn a_deploy_runs_its_steps_to_deployed_and_the_callback_only_ends_a_wait() {
    let (mut s, m) = setup(true);
    let v = run(&mut s, 10, deploy(m, None)).into_machine().unwrap();
    assert_eq!(v.state, MachineState::Deploying);
    let id = v.workflow.expect("the deploy has a workflow");
    let t = task(&s, id);
    assert_eq!(t.kind, TaskKind::Deploy);
    let kinds: Vec<StepKind> = t.steps.iter().map(|s| s.kind).collect();
    use StepKind::*;
    assert_eq!(
        kinds,
        [Prepare, BootPxe, PowerOn, WaitBoot, WaitInstall, BootDisk]
    );
    assert!(t.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(t.current_step(), Some(0));
    // Steps need a claim first.
    assert_eq!(
        start(&mut s, 11, id, 0).unwrap_err().code,
        ErrorCode::PreconditionFailed
    );
    claim(&mut s, 12, id);
    let t = start(&mut s, 13, id, 0).unwrap();
    assert_eq!(t.steps[0].state, StepState::Running);
    assert_eq!(t.steps[0].attempts, 1);
    assert_eq!(t.steps[0].deadline, Some(13 + Prepare.default_timeout_ms()));
    // Only the current step, and only the next attempt.
    assert_eq!(
        start(&mut s, 14, id, 1).unwrap_err().code,
        ErrorCode::PreconditionFailed
    );
    finish(&mut s, 15, id, 0, done("image deb ready")).unwrap();
    for (i, at) in [(1u32, 20u64), (2, 30)] {
        start(&mut s, at, id, i).unwrap();
        finish(&mut s, at + 1, id, i, done("ok")).unwrap();
    }
    // The machine fetched its script; then the installer called back.
    start(&mut s, 40, id, 3).unwrap();
    run(
        &mut s,
        41,
        Command::BootScriptServed {
            mac: MAC.into(),
            node: 2,
        },
    );
    let t = task(&s, id);
    assert_eq!(t.steps[3].state, StepState::Succeeded);
    assert_eq!(
        t.steps[3].note.as_deref(),
        Some("deploy script served by node 2")
    );
    let cb = run(
        &mut s,
        50,
        Command::DeployDone {
            mac: MAC.into(),
            token: Secret(TOKEN.into()),
        },
    )
    .into_deploy_done()
    .unwrap();
    assert_eq!(
        cb.state, "deploying",
        "deployed after the workflow's last step"
    );
    assert_eq!(task(&s, id).current_step(), Some(5));
    assert_eq!(machine_state(&s, m).0, MachineState::Deploying);
    assert!(
        s.machines.get(&m).unwrap().deploy_token.is_none(),
        "the token is burnt"
    );
    start(&mut s, 60, id, 5).unwrap();
    let t = finish(&mut s, 61, id, 5, done("boots from disk")).unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.error, None);
    let (st, cause) = machine_state(&s, m);
    assert_eq!(st, MachineState::Deployed);
    assert!(cause.contains(&format!("task {id}")), "{cause}");
    assert_eq!(events_saying(&s, "deploying -> deployed"), 1);
    // Finished: nothing more is accepted.
    assert!(finish(&mut s, 62, id, 5, done("again")).is_err());
}

#[test]
fn a_takeover_resumes_at_the_current_step_and_counts_its_attempts() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    claim(&mut s, 11, id);
    for i in 0..2 {
        start(&mut s, 12, id, i).unwrap();
        finish(&mut s, 12, id, i, done("ok")).unwrap();
    }
    // Power-on attempt 1 starts, then its executor vanishes.
    let old = start(&mut s, 13, id, 2).unwrap();
    assert_eq!(old.steps[2].attempts, 1);
    let t = claim(&mut s, 13 + LEASE + 1, id);
    assert_eq!(t.generation, old.generation + 1);
    assert_eq!(t.current_step(), Some(2), "resumed where it stood");
    // The old executor's result is refused; the new one starts attempt 2, which knows that
    // an earlier attempt may have acted.
    let stale = Command::FinishStep {
        id,
        generation: old.generation,
        step: 2,
        attempt: 1,
        outcome: done("cycled"),
        observed_power: None,
        start_next: false,
    };
    assert_eq!(
        apply(&mut s, 13 + LEASE + 2, stale).unwrap_err().code,
        ErrorCode::PreconditionFailed
    );
    let t = start(&mut s, 13 + LEASE + 3, id, 2).unwrap();
    assert_eq!(t.steps[2].attempts, 2);
    // Workflows end by their steps, never by FinishTask.
    let ft = Command::FinishTask {
        id,
        generation: t.generation,
        error: None,
        observed_power: None,
    };
    assert_eq!(
        apply(&mut s, 13 + LEASE + 4, ft).unwrap_err().code,
        ErrorCode::Conflict
    );
}

#[test]
fn a_wait_times_out_only_after_its_deadline_and_a_retry_resumes_it() {
    let (mut s, m) = setup(false);
    let id = run(&mut s, 10, deploy(m, Some(60_000)))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    claim(&mut s, 11, id);
    for i in 0..3 {
        start(&mut s, 12, id, i).unwrap();
        let note = "no BMC: the operator powers the machine".to_string();
        finish(&mut s, 12, id, i, StepOutcome::Skipped { note }).unwrap();
    }
    let t = start(&mut s, 100, id, 3).unwrap();
    assert_eq!(t.steps[3].deadline, Some(60_100));
    assert_eq!(
        finish(&mut s, 60_099, id, 3, StepOutcome::TimedOut)
            .unwrap_err()
            .code,
        ErrorCode::PreconditionFailed,
        "not before the deadline, by the leader's clock"
    );
    let t = finish(&mut s, 60_100, id, 3, StepOutcome::TimedOut).unwrap();
    assert_eq!(t.state, TaskState::Failed);
    let want =
        "step wait_boot: timed out after 60s waiting for the machine to fetch its deploy script";
    assert_eq!(t.error.as_deref(), Some(want));
    assert_eq!(t.steps[3].state, StepState::Failed);
    let (st, cause) = machine_state(&s, m);
    assert_eq!(st, MachineState::Failed);
    assert!(
        cause.starts_with("deploy failed at step wait_boot: "),
        "{cause}"
    );
    // The script is not served to a failed machine's event: nothing changes.
    run(
        &mut s,
        60_200,
        Command::BootScriptServed {
            mac: MAC.into(),
            node: 2,
        },
    );
    assert_eq!(task(&s, id).state, TaskState::Failed);
    // Only workflows are retried, and only failed ones.
    let t = apply(&mut s, 60_300, Command::RetryTask { id }).unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.current_step(), Some(3));
    assert_eq!(t.steps[3].state, StepState::Pending);
    assert!(t.steps[3].note.as_deref().unwrap().contains("timed out"));
    assert_eq!(machine_state(&s, m).0, MachineState::Deploying);
    assert_eq!(
        refused(&mut s, 60_301, Command::RetryTask { id }),
        ErrorCode::Conflict
    );
    // The token survived the failure: the retried deploy completes by the callback.
    claim(&mut s, 60_400, id);
    start(&mut s, 60_401, id, 3).unwrap();
    let cb = Command::DeployDone {
        mac: MAC.into(),
        token: Secret(TOKEN.into()),
    };
    run(&mut s, 60_500, cb);
    let t = task(&s, id);
    assert!(t.steps[3].state.is_done() && t.steps[4].state.is_done());
    assert_eq!(t.current_step(), Some(5));
}

#[test]
fn cancelling_or_an_operator_state_change_stops_the_workflow() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    claim(&mut s, 11, id);
    start(&mut s, 12, id, 0).unwrap();
    let t = apply(&mut s, 13, Command::CancelTask { id }).unwrap();
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(t.steps[0].state, StepState::Cancelled);
    let (st, cause) = machine_state(&s, m);
    assert_eq!(st, MachineState::Failed);
    assert!(
        cause.starts_with("deploy cancelled at step prepare: cancelled by node:1"),
        "{cause}"
    );
    // Retried, then the operator marks the machine broken: the workflow stops, and the
    // machine stays as the operator set it.
    apply(&mut s, 14, Command::RetryTask { id }).unwrap();
    run(
        &mut s,
        15,
        Command::UpdateMachine {
            id: m,
            if_match: None,
            patch: UpdateMachine {
                state: Some(MachineState::Broken),
                ..Default::default()
            },
        },
    );
    assert_eq!(task(&s, id).state, TaskState::Cancelled);
    assert_eq!(machine_state(&s, m).0, MachineState::Broken);
    assert!(s.active_workflow(m).is_none());
}

#[test]
fn a_lost_executor_fails_the_workflow_and_its_machine() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    let mut now = 11;
    for _ in 0..super::super::tasks::MAX_TASK_ATTEMPTS {
        claim(&mut s, now, id);
        now += LEASE + 1;
    }
    let t = claim(&mut s, now, id);
    assert_eq!(t.state, TaskState::Failed);
    assert!(t.error.as_deref().unwrap().starts_with("executor lost"));
    assert_eq!(t.steps[0].state, StepState::Failed);
    let (st, cause) = machine_state(&s, m);
    assert_eq!(st, MachineState::Failed);
    assert!(cause.contains("at step prepare: executor lost"), "{cause}");
}

#[test]
fn a_release_powers_off_and_returns_the_machine_to_ready() {
    let (mut s, m) = setup(true);
    assert_eq!(
        refused(
            &mut s,
            9,
            Command::Release {
                id: m,
                if_match: None,
                wipe: None,
            }
        ),
        ErrorCode::Conflict,
        "a ready machine is not released"
    );
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    assert_eq!(
        refused(
            &mut s,
            11,
            Command::Release {
                id: m,
                if_match: None,
                wipe: None,
            }
        ),
        ErrorCode::Conflict,
        "not while deploying"
    );
    apply(&mut s, 12, Command::CancelTask { id }).unwrap();
    // A failed machine may be released.
    let v = run(
        &mut s,
        13,
        Command::Release {
            id: m,
            if_match: None,
            wipe: None,
        },
    )
    .into_machine()
    .unwrap();
    assert_eq!(v.state, MachineState::Releasing);
    let rid = v.workflow.unwrap();
    assert_ne!(rid, id);
    let t = task(&s, rid);
    assert_eq!(t.kind, TaskKind::Release);
    assert_eq!(t.steps.len(), 1);
    assert_eq!(t.steps[0].kind, StepKind::PowerOff);
    let t = claim(&mut s, 14, rid);
    start(&mut s, 15, rid, 0).unwrap();
    let off = Command::FinishStep {
        id: rid,
        generation: t.generation,
        step: 0,
        attempt: 1,
        outcome: done("powered off"),
        observed_power: Some(PowerState::Off),
        start_next: false,
    };
    let t = apply(&mut s, 16, off).unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    let mm = &s.machines.get(&m).unwrap().machine;
    assert_eq!(mm.state, MachineState::Ready);
    assert_eq!(mm.power_state, Some(PowerState::Off));
    assert_eq!(mm.image, None);
    assert_eq!(events_saying(&s, "releasing -> ready"), 1);
}

#[test]
fn workflows_are_not_created_as_tasks_nor_before_rules_5() {
    let (mut s, m) = setup(true);
    for kind in [TaskKind::Deploy, TaskKind::Release] {
        assert_eq!(
            refused(
                &mut s,
                10,
                Command::CreateTask {
                    kind,
                    machine_id: m
                }
            ),
            ErrorCode::InvalidRequest
        );
    }
    let (mut s, m) = setup(true);
    s.meta.rules = ApplyRules::Rules4;
    let v = run(&mut s, 10, deploy(m, None)).into_machine().unwrap();
    assert_eq!(v.workflow, None);
    assert!(s.tasks.is_empty());
}

#[test]
fn a_workflow_waiting_for_its_machine_is_not_lost_before_the_wait_ends() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, Some(600_000)))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    claim(&mut s, 11, id);
    // During a BMC step an expired lease waits for an executor ...
    start(&mut s, 12, id, 0).unwrap();
    let t = task(&s, id);
    assert!(s.waiting_for_executor(&t, 12 + LEASE + 1));
    for i in 0..3 {
        if i > 0 {
            start(&mut s, 13, id, i).unwrap();
        }
        finish(&mut s, 13, id, i, done("ok")).unwrap();
    }
    // ... during a wait, not before the wait's deadline (a site cut off keeps booting it).
    start(&mut s, 20, id, 3).unwrap();
    let t = task(&s, id);
    assert!(!s.waiting_for_executor(&t, 20 + LEASE + 1));
    let lose = Command::LoseTasks {
        machine_id: m,
        head: id,
        generation: t.generation,
        waited_ms: 60_000,
    };
    assert_eq!(
        apply(&mut s, 20 + LEASE + 1, lose.clone())
            .unwrap_err()
            .code,
        ErrorCode::PreconditionFailed
    );
    assert!(s.waiting_for_executor(&t, 20 + 600_000 + 1));
    let t = apply(&mut s, 20 + 600_001, lose).unwrap();
    assert_eq!(t.state, TaskState::Failed);
}

#[test]
fn a_release_with_a_wipe_boots_the_wipe_image_and_waits_for_its_callback() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    apply(&mut s, 11, Command::CancelTask { id }).unwrap();
    let wipe = |image: &str| crate::cmd::Wipe {
        image: image.into(),
        token: Secret(deploy_token_check(TOKEN)),
        sealed_token: Some(Secret("rackd-sealed:v1:deploy-token:1:00".into())),
        boot_timeout_ms: None,
        wipe_timeout_ms: Some(120_000),
    };
    let release = |w| Command::Release {
        id: m,
        if_match: None,
        wipe: Some(w),
    };
    assert_eq!(
        refused(&mut s, 12, release(wipe("nope"))),
        ErrorCode::InvalidRequest
    );
    let v = run(&mut s, 13, release(wipe("deb")))
        .into_machine()
        .unwrap();
    let rid = v.workflow.unwrap();
    let t = task(&s, rid);
    assert_eq!(t.image.as_deref(), Some("deb"));
    let kinds: Vec<StepKind> = t.steps.iter().map(|s| s.kind).collect();
    use StepKind::*;
    assert_eq!(
        kinds,
        [Prepare, BootPxe, PowerOn, WaitBoot, WaitWipe, PowerOff]
    );
    assert_eq!(t.steps[4].timeout_ms, 120_000);
    claim(&mut s, 14, rid);
    for i in 0..3 {
        start(&mut s, 15, rid, i).unwrap();
        finish(&mut s, 15, rid, i, done("ok")).unwrap();
    }
    // The wipe image fetches its script and calls back with the release's token.
    run(
        &mut s,
        16,
        Command::BootScriptServed {
            mac: MAC.into(),
            node: 2,
        },
    );
    let cb = run(
        &mut s,
        17,
        Command::DeployDone {
            mac: MAC.into(),
            token: Secret(TOKEN.into()),
        },
    )
    .into_deploy_done()
    .unwrap();
    assert_eq!(cb.state, "releasing");
    let t = task(&s, rid);
    assert_eq!(t.steps[4].note.as_deref(), Some("wipe callback"));
    assert_eq!(t.current_step(), Some(5));
    start(&mut s, 18, rid, 5).unwrap();
    let t = finish(&mut s, 19, rid, 5, done("powered off")).unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(machine_state(&s, m).0, MachineState::Ready);
    assert!(s.machines.get(&m).unwrap().deploy_token.is_none());
}

#[test]
fn a_step_result_may_start_the_next_step_in_the_same_entry() {
    let (mut s, m) = setup(true);
    let id = run(&mut s, 10, deploy(m, None))
        .into_machine()
        .unwrap()
        .workflow
        .unwrap();
    let t = claim(&mut s, 11, id);
    start(&mut s, 12, id, 0).unwrap();
    let next = |step: u32, at: u64, s: &mut State| {
        apply(
            s,
            at,
            Command::FinishStep {
                id,
                generation: t.generation,
                step,
                attempt: 1,
                outcome: done("ok"),
                observed_power: None,
                start_next: true,
            },
        )
        .unwrap()
    };
    let after = next(0, 13, &mut s);
    let b = &after.steps[1];
    assert_eq!(
        (b.state, b.attempts, b.generation),
        (StepState::Running, 1, t.generation)
    );
    assert_eq!(b.deadline, Some(13 + b.timeout_ms));
    // Its result is accepted as attempt 1's; a StartStep of attempt 1 is not.
    assert_eq!(
        start(&mut s, 14, id, 1).unwrap().steps[1].attempts,
        2,
        "a StartStep is always the next attempt"
    );
    // A takeover executor starts the running step again as a new attempt: it knows an
    // earlier one (of another generation) may have acted.
    let t2 = claim(&mut s, 14 + LEASE + 1, id);
    let r = start(&mut s, 14 + LEASE + 2, id, 1).unwrap();
    assert_eq!(
        (r.steps[1].attempts, r.steps[1].generation),
        (3, t2.generation)
    );
}
