//! The executor's planning rules, pure functions of a replica snapshot and the clock: which
//! tasks to claim or adopt ([`next_tasks`]) and which machines' power state to poll
//! ([`stale_machines`]). No I/O and no locks here, so the rules are unit-tested directly.
//!
//! Layer: below `executor`; depends on `rackd_raft::state` and `rackd_types` only.

use std::collections::{HashMap, HashSet};

use rackd_raft::state::State;
use rackd_types::{Task, TaskState};

/// How long a pending task is left to the node its id prefers ([`prefers`]) before another
/// node of the location claims it (leader time, ms).
pub const PREFERRED_GRACE_MS: u64 = 2_000;

/// The node of `location` that should start task `task` first: one of the nodes bound to the
/// location (and `me`), chosen by a hash of the task id, so that a site's nodes share its work and
/// do not all propose a claim for every task (the losers' claims are refused, but each is a
/// log entry).
pub fn prefers(state: &State, location: &str, me: u64, task: u64) -> u64 {
    let mut nodes: Vec<u64> = state
        .meta
        .node_sites
        .iter()
        .filter(|(_, site)| site.as_str() == location)
        .map(|(id, _)| *id)
        .collect();
    if !nodes.contains(&me) {
        nodes.push(me);
    }
    nodes.sort_unstable();
    // Ids come from one counter shared by every entity: mixed, so that a pattern in them
    // (a machine, then its task, …) does not send every task to the same node.
    let mixed = task.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    nodes[(mixed % nodes.len() as u64) as usize]
}

/// What to do with one task of the location.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Propose a claim (the local replica says the leader accepts it).
    Claim(Task),
    /// Our claim whose answer was lost did commit: run the task.
    Adopt(Task),
}

/// Drop the unconfirmed claims whose task finished or vanished.
pub fn forget_finished(state: &State, unconfirmed: &mut HashMap<u64, u64>) {
    unconfirmed.retain(|id, _| state.tasks.get(id).is_some_and(|t| !t.state.is_terminal()));
}

/// The tasks of machines in `location`, oldest first, that node `node` should act on at leader
/// time `now`: not running here (`active`), and either ours from a claim whose answer was lost
/// (`unconfirmed`: task → generation we claimed from, adopted when the task now runs under
/// the next generation assigned to us) or claimable now by the rule apply uses (pending with
/// the machine free, or running under an expired lease). A pending task another node of the
/// location is preferred for ([`prefers`]) is left to it for [`PREFERRED_GRACE_MS`].
pub fn next_tasks(
    state: &State,
    location: &str,
    node: u64,
    now: u64,
    active: &HashSet<u64>,
    unconfirmed: &HashMap<u64, u64>,
) -> Vec<Next> {
    let mut tasks: Vec<&Task> = state.active_tasks().collect();
    tasks.sort_by_key(|t| t.meta.id);
    tasks
        .into_iter()
        .filter(|t| !active.contains(&t.meta.id))
        .filter(|t| {
            state
                .machines
                .get(&t.machine_id)
                .is_some_and(|m| m.machine.location == location)
        })
        .filter_map(|t| {
            let ours = t.state == TaskState::Running
                && t.assignee == Some(node)
                && unconfirmed
                    .get(&t.meta.id)
                    .is_some_and(|g| g.checked_add(1) == Some(t.generation));
            if ours {
                return Some(Next::Adopt(t.clone()));
            }
            // A pending task is another node's to start first, for a while.
            let theirs = t.state == TaskState::Pending
                && prefers(state, location, node, t.meta.id) != node
                && now.saturating_sub(t.meta.updated_at) < PREFERRED_GRACE_MS;
            if theirs {
                return None;
            }
            state
                .claimable(t.meta.id, now)
                .ok()
                .map(|_| Next::Claim(t.clone()))
        })
        .collect()
}

/// A filter of [`next_tasks`]: claims of workflows only while this executor runs fewer than
/// `max` (of the tasks in `active`); everything else passes.
pub fn workflow_slots<'a>(
    state: &'a State,
    active: &HashSet<u64>,
    max: usize,
) -> impl FnMut(&Next) -> bool + 'a {
    let mut free = max.saturating_sub(
        active
            .iter()
            .filter(|id| state.tasks.get(id).is_some_and(|t| t.kind.is_workflow()))
            .count(),
    );
    move |n| match n {
        Next::Claim(t) if t.kind.is_workflow() => {
            let ok = free > 0;
            free = free.saturating_sub(1);
            ok
        }
        _ => true,
    }
}

/// Machines of `location` with a BMC, no task pending or running, and an observed power state
/// at least `every_ms` older than `now` (or none), oldest observation first.
pub fn stale_machines(state: &State, location: &str, now: u64, every_ms: u64) -> Vec<u64> {
    let busy: HashSet<u64> = state.active_tasks().map(|t| t.machine_id).collect();
    let mut v: Vec<(u64, u64)> = state
        .machines
        .values()
        .filter(|m| m.machine.location == location && m.machine.bmc.is_some())
        .filter(|m| !busy.contains(&m.machine.meta.id))
        .map(|m| (m.machine.power_observed_at.unwrap_or(0), m.machine.meta.id))
        .filter(|(at, _)| now.saturating_sub(*at) >= every_ms)
        .collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(super) mod tests;
