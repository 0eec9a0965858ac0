//! The executor's planning rules against [`FakeCluster`]: states built by the real apply rules
//! at a clock the test moves, so "expired" means what the leader will decide.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::{Command, PowerObservation};
use rackd_types::payload::CreateMachine;
use rackd_types::TaskKind;

use super::{forget_finished, next_tasks, stale_machines, Next};
use crate::cluster::fake::{machine_spec, sim_bmc, FakeCluster};
use crate::cluster::Cluster;

pub(in crate::services::executor) const LEASE_MS: u64 = 10_000;

pub(in crate::services::executor) fn location(c: &FakeCluster, name: &str) {
    c.create_location(name);
}

pub(in crate::services::executor) fn machine(
    c: &FakeCluster,
    location: &str,
    host: &str,
    bmc: bool,
) -> u64 {
    c.create_machine(CreateMachine {
        bmc: bmc.then(sim_bmc),
        ..machine_spec(host, location)
    })
}

pub(in crate::services::executor) fn task(c: &FakeCluster, machine_id: u64, kind: TaskKind) -> u64 {
    c.apply_ok("t", Command::CreateTask { kind, machine_id })
        .into_task()
        .unwrap()
        .meta
        .id
}

pub(in crate::services::executor) fn claim(c: &FakeCluster, id: u64, node: u64) -> u64 {
    let generation = c.state().tasks.get(&id).unwrap().generation;
    c.apply_ok(
        "node",
        Command::ClaimTask {
            id,
            node,
            generation,
            lease_ms: LEASE_MS,
        },
    );
    generation
}

fn ids(v: &[Next]) -> Vec<(char, u64)> {
    v.iter()
        .map(|n| match n {
            Next::Claim(t) => ('c', t.meta.id),
            Next::Adopt(t) => ('a', t.meta.id),
        })
        .collect()
}

fn plan(
    c: &Arc<FakeCluster>,
    node: u64,
    active: &[u64],
    unconfirmed: &[(u64, u64)],
) -> Vec<(char, u64)> {
    let active: HashSet<u64> = active.iter().copied().collect();
    let unconfirmed: HashMap<u64, u64> = unconfirmed.iter().copied().collect();
    ids(&next_tasks(
        &c.state(),
        "dc1",
        node,
        c.now_ms(),
        &active,
        &unconfirmed,
    ))
}

#[test]
fn the_oldest_pending_task_of_each_free_machine_of_our_location_is_claimable() {
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    location(&c, "dc2");
    let m1 = machine(&c, "dc1", "a", true);
    let m2 = machine(&c, "dc1", "b", true);
    let other = machine(&c, "dc2", "c", true);
    let t1 = task(&c, m1, TaskKind::PowerOn);
    task(&c, m1, TaskKind::PowerOff); // waits behind t1
    let t3 = task(&c, m2, TaskKind::PowerCycle);
    task(&c, other, TaskKind::PowerOn);

    // t2 waits behind t1 on the same machine; dc2's task is not ours.
    assert_eq!(plan(&c, 2, &[], &[]), vec![('c', t1), ('c', t3)]);
    // A task already running here is not planned again.
    assert_eq!(plan(&c, 2, &[t3], &[]), vec![('c', t1)]);

    // Once t1 runs (under anybody's live lease) its machine is busy: t2 still waits.
    claim(&c, t1, 3);
    assert_eq!(plan(&c, 2, &[], &[]), vec![('c', t3)]);
}

#[test]
fn a_running_task_is_taken_over_only_after_its_lease_expired_at_leader_time() {
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    let m = machine(&c, "dc1", "a", true);
    let t = task(&c, m, TaskKind::PowerOn);
    claim(&c, t, 3);

    c.advance(Duration::from_millis(LEASE_MS));
    assert_eq!(
        plan(&c, 2, &[], &[]),
        vec![],
        "lease still valid at its last ms"
    );
    c.advance(Duration::from_millis(1));
    assert_eq!(plan(&c, 2, &[], &[]), vec![('c', t)], "expired: take over");
    // The claim the plan proposes is accepted by apply at the same time.
    let g = claim(&c, t, 2);
    assert_eq!(c.state().tasks.get(&t).unwrap().generation, g + 1);
    assert_eq!(c.state().tasks.get(&t).unwrap().assignee, Some(2));
}

#[test]
fn a_claim_whose_answer_was_lost_is_adopted_but_someone_elses_is_not() {
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    let m = machine(&c, "dc1", "a", true);
    let t = task(&c, m, TaskKind::PowerOn);
    let g = claim(&c, t, 2);

    // We (node 2) proposed the claim from generation g; it committed, the answer was lost.
    assert_eq!(plan(&c, 2, &[], &[(t, g)]), vec![('a', t)]);
    // Node 4 with the same belief adopts nothing: the task runs under node 2.
    assert_eq!(plan(&c, 4, &[], &[(t, g)]), vec![]);
    // A belief about an older generation is not ours any more.
    assert_eq!(plan(&c, 2, &[], &[(t, g.wrapping_sub(1))]), vec![]);

    // Finished tasks are forgotten.
    c.apply_ok(
        "node",
        Command::FinishTask {
            id: t,
            generation: g + 1,
            error: None,
            observed_power: Some(rackd_types::PowerState::On),
        },
    );
    let mut unconfirmed = HashMap::from([(t, g), (999, 0)]);
    forget_finished(&c.state(), &mut unconfirmed);
    assert!(unconfirmed.is_empty(), "{unconfirmed:?}");
}

#[test]
fn machines_are_polled_when_their_observation_is_stale_and_no_task_is_active() {
    let c = FakeCluster::new(1, 100_000);
    location(&c, "dc1");
    location(&c, "dc2");
    let fresh = machine(&c, "dc1", "fresh", true);
    let never = machine(&c, "dc1", "never", true);
    let old = machine(&c, "dc1", "old", true);
    let busy = machine(&c, "dc1", "busy", true);
    machine(&c, "dc1", "nobmc", false);
    machine(&c, "dc2", "elsewhere", true);
    c.apply_ok(
        "node",
        Command::ObservePower {
            observations: vec![
                PowerObservation {
                    machine_id: fresh,
                    power: rackd_types::PowerState::On,
                    observed_at_ms: 95_000,
                },
                PowerObservation {
                    machine_id: old,
                    power: rackd_types::PowerState::Off,
                    observed_at_ms: 50_000,
                },
            ],
        },
    );
    task(&c, busy, TaskKind::PowerOn);

    let now = c.now_ms();
    // Never observed first, then the oldest observation; fresh, busy, BMC-less and other
    // locations' machines are not polled.
    assert_eq!(
        stale_machines(&c.state(), "dc1", now, 30_000),
        vec![never, old]
    );
    assert_eq!(
        stale_machines(&c.state(), "dc1", now, 1_000),
        vec![never, old, fresh]
    );
}

/// An executor claims workflows only up to its bound (counting the ones it runs); single
/// commands are never held back.
#[test]
fn workflows_are_claimed_only_up_to_the_executors_bound() {
    use super::workflow_slots;
    use rackd_types::payload::CreateImage;
    use rackd_types::MachineState;
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    c.apply_ok(
        "t",
        Command::CreateImage(CreateImage {
            name: "img".into(),
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: String::new(),
            rootfs: None,
        }),
    );
    let mut workflows = Vec::new();
    for h in ["a", "b", "c"] {
        let m = c.create_machine(CreateMachine {
            bmc: Some(sim_bmc()),
            state: Some(MachineState::Ready),
            ..machine_spec(h, "dc1")
        });
        let v = c
            .apply_ok(
                "t",
                Command::Deploy {
                    id: m,
                    if_match: None,
                    image: "img".into(),
                    token: rackd_raft::cmd::Secret("t".repeat(64)),
                    sealed_token: None,
                    boot_timeout_ms: None,
                    install_timeout_ms: None,
                },
            )
            .into_machine()
            .unwrap();
        workflows.push(v.workflow.unwrap());
    }
    let power = task(&c, machine(&c, "dc1", "d", true), TaskKind::PowerOn);
    let st = c.state();
    let plan = |active: &HashSet<u64>, max: usize| -> Vec<(char, u64)> {
        let next = next_tasks(&st, "dc1", 2, 1_000, active, &HashMap::new());
        let kept: Vec<Next> = next
            .into_iter()
            .filter(workflow_slots(&st, active, max))
            .collect();
        ids(&kept)
    };
    let none = HashSet::new();
    let w = &workflows;
    assert_eq!(
        plan(&none, 8),
        vec![('c', w[0]), ('c', w[1]), ('c', w[2]), ('c', power)]
    );
    assert_eq!(plan(&none, 2), vec![('c', w[0]), ('c', w[1]), ('c', power)]);
    // One running here already: one more slot of two.
    let running: HashSet<u64> = [w[0]].into();
    assert_eq!(plan(&running, 2), vec![('c', w[1]), ('c', power)]);
}

/// The nodes bound to a location share its pending tasks by task id: a node leaves the others'
/// to them for a grace period (so they do not all claim every task), then takes them.
#[test]
fn pending_tasks_go_to_their_preferred_node_first_then_to_anyone() {
    use super::{prefers, PREFERRED_GRACE_MS};
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1");
    let tasks: Vec<u64> = ["a", "b", "c", "d"]
        .iter()
        .map(|h| task(&c, machine(&c, "dc1", h, true), TaskKind::PowerOn))
        .collect();
    let mut st = c.state();
    st.meta.node_sites.insert(2, "dc1".into());
    st.meta.node_sites.insert(3, "dc1".into());
    st.meta.node_sites.insert(4, "dc2".into());
    let plan = |node: u64, now: u64| -> Vec<u64> {
        next_tasks(&st, "dc1", node, now, &HashSet::new(), &HashMap::new())
            .iter()
            .map(|n| match n {
                Next::Claim(t) | Next::Adopt(t) => t.meta.id,
            })
            .collect()
    };
    let created = st.tasks.get(&tasks[0]).unwrap().meta.updated_at;
    let mine = |node: u64| -> Vec<u64> {
        tasks
            .iter()
            .copied()
            .filter(|t| prefers(&st, "dc1", node, *t) == node)
            .collect()
    };
    // Nodes 2 and 3 split the tasks (dc2's node 4 is not one of them).
    assert_eq!(mine(2).len() + mine(3).len(), tasks.len());
    assert!(!mine(2).is_empty() && !mine(3).is_empty());
    assert_eq!(plan(2, created), mine(2));
    assert_eq!(plan(3, created), mine(3));
    // After the grace period either node takes any of them.
    assert_eq!(plan(2, created + PREFERRED_GRACE_MS), tasks);
    // A node serving the location without a binding prefers itself too: it shares nothing
    // and waits for no one.
    let with_9: BTreeSet<u64> = (0..64).map(|t| prefers(&st, "dc1", 9, t)).collect();
    assert_eq!(with_9, [2, 3, 9].into(), "every node gets some");
}
