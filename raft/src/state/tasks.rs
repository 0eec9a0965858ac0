//! Apply handlers for tasks: create, claim (compare-and-set on the generation: one executor
//! wins), lease renewal and finish (accepted only for the current generation, so a stale
//! executor cannot complete a task twice). Power results update the machine's observed power
//! state.
//!
//! Leases: a claim gives the executor a lease (leader time). The executor renews it while it
//! works; once it has expired, the next claim takes the task over under a new generation (or
//! fails it as "executor lost" after [`MAX_TASK_ATTEMPTS`] attempts), so no task stays
//! running without a live executor. [`State::claimable`] is the one rule, used by apply and
//! by executors deciding what to propose.

use std::collections::BTreeSet;

use crate::cmd::{Applied, Command, Response};
use rackd_types::{ApiError, ErrorCode, Meta, PowerState, Task, TaskKind, TaskState, TaskStep};

use super::State;
use crate::cmd::PowerObservation;

/// Attempts a task gets: when the lease of the last one expires, the task fails.
pub const MAX_TASK_ATTEMPTS: u32 = 3;

/// At most this many tasks pending or running per machine: more is refused (409) at creation,
/// so a script in a loop cannot queue unbounded work against one BMC.
pub const MAX_ACTIVE_TASKS_PER_MACHINE: usize = 16;

/// Finished tasks are kept this long (leader time) ...
pub const TASK_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// ... and at most this many; older ones are dropped in apply (the journal keeps their story).
pub const MAX_FINISHED_TASKS: usize = 50_000;

/// Error text of a task whose last executor stopped renewing its lease.
pub const EXECUTOR_LOST: &str = "executor lost";

/// What a claim of a task does at a given time (see [`State::claimable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Start the first attempt of a pending task.
    Start,
    /// Take over a running task whose lease expired: a new attempt under a new generation.
    TakeOver,
    /// The lease of the last allowed attempt expired: the task fails ("executor lost").
    Fail,
}

fn precondition_failed(message: String) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, message)
}

impl State {
    pub(super) fn create_task(
        &mut self,
        now: u64,
        actor: &str,
        kind: TaskKind,
        machine_id: u64,
    ) -> Result<Applied, ApiError> {
        let m = self
            .machines
            .get(&machine_id)
            .ok_or_else(|| ApiError::not_found(format!("machine {machine_id} not found")))?;
        if kind.is_workflow() {
            return Err(ApiError::invalid(format!(
                "{kind:?} tasks are created by the machine's deploy and release actions"
            )));
        }
        if m.machine.bmc.is_none() {
            return Err(ApiError::conflict(format!(
                "machine {machine_id} has no BMC configured"
            )));
        }
        let active = self.machine_active_tasks(machine_id).count();
        if active >= MAX_ACTIVE_TASKS_PER_MACHINE {
            return Err(ApiError::conflict(format!(
                "machine {machine_id} already has {active} tasks pending or running (at most \
                 {MAX_ACTIVE_TASKS_PER_MACHINE}); wait for them or cancel one"
            )));
        }
        let message = format!("{kind:?} on {}", m.machine.hostname);
        let t = self.add_pending_task(now, actor, kind, (machine_id, None), Vec::new(), message);
        Ok(Applied::Task(t))
    }

    /// Adds a new pending task (a fresh id, created now) and journals its creation with
    /// `message`; every kind of task is created through here.
    pub(super) fn add_pending_task(
        &mut self,
        now: u64,
        actor: &str,
        kind: TaskKind,
        (machine_id, image): (u64, Option<String>),
        steps: Vec<TaskStep>,
        message: String,
    ) -> Task {
        let id = self.alloc_id();
        let t = Task {
            meta: Meta {
                id,
                version: 1,
                created_at: now,
                updated_at: now,
            },
            kind,
            machine_id,
            state: TaskState::Pending,
            attempt: 0,
            assignee: None,
            generation: 0,
            lease_expires_at: None,
            started_at: None,
            finished_at: None,
            error: None,
            observed_power: None,
            image,
            steps,
        };
        self.put_task(now, t.clone());
        self.journal(now, actor, "task.created", "task", Some(id), message);
        t
    }

    /// An operator's cancel: a pending or running task becomes `Cancelled`; a finished one is
    /// left as it is (409).
    pub(super) fn cancel_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
    ) -> Result<Applied, ApiError> {
        let t = self.tasks.fetch(id, "task")?;
        if t.state.is_terminal() {
            return Err(ApiError::conflict(format!(
                "task {id} is already {:?}",
                t.state
            )));
        }
        let t = self.cancel_active_task(now, actor, t, format!("cancelled by {actor}"));
        Ok(Applied::Task(t))
    }

    /// End an active task as `Cancelled` with `why` (see [`State::end_active_task`]).
    pub(super) fn cancel_active_task(
        &mut self,
        now: u64,
        actor: &str,
        t: Task,
        why: String,
    ) -> Task {
        self.end_active_task(now, actor, t, TaskState::Cancelled, why)
    }

    /// End an active task in the terminal `state` with `why`, journaled. A running attempt is
    /// fenced: its lease renewals and its result are refused from now on (the task is no
    /// longer running), so its executor stops driving the BMC within its lease.
    fn end_active_task(
        &mut self,
        now: u64,
        actor: &str,
        mut t: Task,
        state: TaskState,
        why: String,
    ) -> Task {
        if t.kind.is_workflow() {
            Self::stop_current_step(now, &mut t, state, &why);
            return self.end_workflow(now, actor, t, state, Some(why));
        }
        let id = t.meta.id;
        t.state = state;
        t.finished_at = Some(now);
        t.lease_expires_at = None;
        t.meta.version += 1;
        t.meta.updated_at = now;
        let message = format!("task {id} {state:?}: {why}");
        t.error = Some(why);
        self.put_task(now, t.clone());
        self.journal(now, actor, "task.finished", "task", Some(id), message);
        t
    }

    /// Whether a claim of task `id` at leader time `now` is accepted, and what it does. Apply
    /// uses it for `ClaimTask`; executors use it on their replica (with their own clock) to
    /// propose only claims that can succeed, so the two cannot disagree on the rule:
    ///
    /// - a pending task may start when its machine has no running task and no earlier pending
    ///   one (one command per machine, so per BMC, cluster-wide, in task order);
    /// - a running task whose lease expired before `now` is taken over, or failed after
    ///   [`MAX_TASK_ATTEMPTS`] attempts;
    /// - nothing else can be claimed.
    pub fn claimable(&self, id: u64, now: u64) -> Result<Claim, ApiError> {
        let t = self
            .tasks
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
        match t.state {
            TaskState::Pending => {
                if let Some(o) = self.machine_active_tasks(t.machine_id).find(|o| {
                    o.meta.id != id
                        && (o.state == TaskState::Running
                            || (o.state == TaskState::Pending && o.meta.id < id))
                }) {
                    return Err(precondition_failed(format!(
                        "machine {} has an earlier or running task ({})",
                        t.machine_id, o.meta.id
                    )));
                }
                Ok(Claim::Start)
            }
            TaskState::Running => {
                let expires = t.lease_expires_at.unwrap_or(0);
                if expires >= now {
                    Err(precondition_failed(format!(
                        "task {id} is running at generation {} under a lease until {expires}",
                        t.generation
                    )))
                } else if t.attempt >= MAX_TASK_ATTEMPTS {
                    Ok(Claim::Fail)
                } else {
                    Ok(Claim::TakeOver)
                }
            }
            state => Err(precondition_failed(format!("task {id} is {state:?}"))),
        }
    }

    pub(super) fn claim_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        node: u64,
        generation: u64,
        lease_ms: u64,
    ) -> Result<Applied, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if t.generation != generation {
            return Err(precondition_failed(format!(
                "task {id} is {:?} at generation {}",
                t.state, t.generation
            )));
        }
        let claim = self.claimable(id, now)?;
        let previous = t.assignee;
        t.generation += 1;
        t.meta.version += 1;
        t.meta.updated_at = now;
        let (kind, message) = match claim {
            Claim::Start | Claim::TakeOver => {
                t.state = TaskState::Running;
                t.assignee = Some(node);
                t.attempt += 1;
                t.started_at = Some(now);
                t.lease_expires_at = Some(now.saturating_add(lease_ms));
                let mut m = format!("task {id} attempt {} on node {node}", t.attempt);
                if claim == Claim::TakeOver {
                    m.push_str(&format!(
                        " (lease of node {} expired)",
                        previous.unwrap_or_default()
                    ));
                }
                ("task.started", m)
            }
            Claim::Fail => {
                let error = format!(
                    "{EXECUTOR_LOST}: the lease of attempt {} (node {}) expired",
                    t.attempt,
                    previous.unwrap_or_default()
                );
                if t.kind.is_workflow() {
                    t.meta.version -= 1; // end_workflow counts this write
                    Self::stop_current_step(now, &mut t, TaskState::Failed, &error);
                    let t = self.end_workflow(now, actor, t, TaskState::Failed, Some(error));
                    return Ok(Applied::Task(t));
                }
                t.state = TaskState::Failed;
                t.finished_at = Some(now);
                t.lease_expires_at = None;
                let m = format!("task {id} Failed: {error}");
                t.error = Some(error);
                ("task.finished", m)
            }
        };
        self.put_task(now, t.clone());
        self.journal(now, actor, kind, "task", Some(id), message);
        Ok(Applied::Task(t))
    }

    /// A retried claim gets its first answer only while that answer is still true: the task
    /// still runs at the generation the claim gave it. Once it was taken over (or finished or
    /// cancelled), the retry is refused, so a claimer whose answer was lost across a takeover
    /// never acts on it.
    pub(super) fn outdated_claim_answer(
        &self,
        cmd: &Command,
        first: &Response,
    ) -> Option<ApiError> {
        let Command::ClaimTask { id, .. } = cmd else {
            return None;
        };
        let granted = first.0.clone().ok()?.into_task().ok()?;
        if granted.state != TaskState::Running {
            return None; // the claim ended the task ("executor lost"): that answer stays true
        }
        match self.tasks.get(id) {
            Some(t) if t.state == TaskState::Running && t.generation == granted.generation => None,
            Some(t) => Some(precondition_failed(format!(
                "stale claim of task {id}: it granted generation {}, but the task is now {:?} at \
                 generation {}",
                granted.generation, t.state, t.generation
            ))),
            None => Some(ApiError::not_found(format!("task {id} not found"))),
        }
    }

    pub(super) fn renew_task_lease(
        &mut self,
        now: u64,
        id: u64,
        generation: u64,
        lease_ms: u64,
    ) -> Result<Applied, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if t.state != TaskState::Running || t.generation != generation {
            return Err(precondition_failed(format!(
                "stale lease renewal for task {id} (generation {generation}; task is {:?} at \
                 generation {})",
                t.state, t.generation
            )));
        }
        let until = now.saturating_add(lease_ms);
        if t.lease_expires_at.is_some_and(|e| e >= until) {
            return Ok(Applied::Task(t));
        }
        t.lease_expires_at = Some(until);
        t.meta.version += 1;
        t.meta.updated_at = now;
        self.put_task(now, t.clone());
        Ok(Applied::Task(t))
    }

    pub(super) fn observe_power(
        &mut self,
        now: u64,
        actor: &str,
        observations: &[PowerObservation],
    ) -> Result<Applied, ApiError> {
        // A running task changes the power state and records the result itself.
        let busy: BTreeSet<u64> = self
            .active_tasks()
            .filter(|t| t.state == TaskState::Running)
            .map(|t| t.machine_id)
            .collect();
        let mut recorded = 0u64;
        for o in observations {
            if busy.contains(&o.machine_id) {
                continue;
            }
            let Some(mut m) = self.machines.get(&o.machine_id).cloned() else {
                continue;
            };
            // The poll time, never later than the entry's (a fast clock cannot make an
            // observation win over later ones); 0 is an entry from before the field existed.
            let at = match o.observed_at_ms {
                0 => now,
                t => t.min(now),
            };
            if m.machine.power_observed_at.is_some_and(|cur| at < cur) {
                continue; // a newer result (task or poll) is already recorded
            }
            let id = o.machine_id;
            let power = o.power;
            let changed = m.machine.power_state != Some(power);
            m.machine.power_state = Some(power);
            m.machine.power_observed_at = Some(at);
            self.machines.insert(id, m);
            recorded += 1;
            if changed {
                self.journal(
                    now,
                    actor,
                    "machine.power_observed",
                    "machine",
                    Some(id),
                    format!("machine {id} power is {power}"),
                );
            }
        }
        Ok(Applied::PowerObserved { recorded })
    }

    pub(super) fn finish_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        generation: u64,
        error: Option<String>,
        observed_power: Option<PowerState>,
    ) -> Result<Applied, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if t.state != TaskState::Running || t.generation != generation {
            return Err(precondition_failed(format!(
                "stale result for task {id} (generation {generation}; task is {:?} at \
                 generation {})",
                t.state, t.generation
            )));
        }
        if t.kind.is_workflow() {
            return Err(ApiError::conflict(format!(
                "task {id} is a workflow: its steps record their results"
            )));
        }
        t.state = if error.is_none() {
            TaskState::Succeeded
        } else {
            TaskState::Failed
        };
        t.error = error;
        t.observed_power = observed_power;
        t.finished_at = Some(now);
        t.lease_expires_at = None;
        t.meta.version += 1;
        t.meta.updated_at = now;
        if let (Some(p), Some(mut m)) = (observed_power, self.machines.get(&t.machine_id).cloned())
        {
            m.machine.power_state = Some(p);
            m.machine.power_observed_at = Some(now);
            self.machines.insert(t.machine_id, m);
        }
        self.put_task(now, t.clone());
        self.journal(
            now,
            actor,
            "task.finished",
            "task",
            Some(id),
            format!(
                "task {id} {:?}{}",
                t.state,
                t.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ),
        );
        Ok(Applied::Task(t))
    }

    /// Store a task and keep the task indexes in step: every task write goes through here.
    /// A finished task enters retention; the oldest finished tasks beyond
    /// [`TASK_RETENTION_MS`] or [`MAX_FINISHED_TASKS`] are dropped (deterministic: leader time).
    pub(super) fn put_task(&mut self, now: u64, t: Task) {
        let id = t.meta.id;
        if t.state.is_terminal() {
            self.idx.active_tasks.remove(&(t.machine_id, id));
            self.idx
                .finished_tasks
                .insert((t.finished_at.unwrap_or(0), id), ());
        } else {
            self.idx.active_tasks.insert((t.machine_id, id), ());
        }
        self.tasks.insert(id, t);
        let cutoff = now.saturating_sub(TASK_RETENTION_MS);
        while let Some(&(at, old)) = self.idx.finished_tasks.keys().next() {
            if at >= cutoff && self.idx.finished_tasks.len() <= MAX_FINISHED_TASKS {
                break;
            }
            self.idx.finished_tasks.remove(&(at, old));
            self.tasks.remove(&old);
        }
    }

    /// Pending and running tasks, by machine then task id (oldest first per machine).
    pub fn active_tasks(&self) -> impl Iterator<Item = &Task> + '_ {
        self.idx
            .active_tasks
            .keys()
            .filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Whether task `t` waits for an executor at leader time `now`: it runs under a lease that
    /// expired (nobody took it over yet), or it is pending and could start (no earlier or
    /// running task of its machine is in its way). The leader's reaper measures how long a
    /// task stays so, and `LoseTasks` is applied only while it still does.
    ///
    /// A workflow waiting for its machine (a wait step before its deadline) does not wait for
    /// an executor: a site cut off from the voters cannot renew its lease, yet its machine
    /// boots on, and what the site saw is reported when its link returns; the wait's own
    /// deadline bounds it.
    pub fn waiting_for_executor(&self, t: &Task, now: u64) -> bool {
        let machine_waits = t.current_step().is_some_and(|i| {
            let s = &t.steps[i];
            s.kind.is_wait() && s.deadline.is_some_and(|d| d > now)
        });
        match t.state {
            TaskState::Running => t.lease_expires_at.unwrap_or(0) < now && !machine_waits,
            TaskState::Pending => matches!(self.claimable(t.meta.id, now), Ok(Claim::Start)),
            _ => false,
        }
    }

    /// `LoseTasks`: fail `head` (still waiting for an executor at `generation`) as "executor
    /// lost", and every task queued behind it on the same machine, which waits for the same
    /// missing executor.
    pub(super) fn lose_tasks(
        &mut self,
        now: u64,
        actor: &str,
        machine_id: u64,
        head: u64,
        generation: u64,
        waited_ms: u64,
    ) -> Result<Applied, ApiError> {
        let t = self.tasks.fetch(head, "task")?;
        if t.machine_id != machine_id
            || t.generation != generation
            || !self.waiting_for_executor(&t, now)
        {
            return Err(precondition_failed(format!(
                "task {head} is {:?} at generation {}; it is not waiting for an executor at \
                 generation {generation}",
                t.state, t.generation
            )));
        }
        let location = self
            .machines
            .get(&machine_id)
            .map(|m| m.machine.location.clone())
            .unwrap_or_default();
        let secs = waited_ms.div_ceil(1000);
        let why = match t.state {
            TaskState::Running => format!(
                "{EXECUTOR_LOST}: the lease of attempt {} (node {}) expired and no executor of \
                 location {location} took the task over within {secs}s",
                t.attempt,
                t.assignee.unwrap_or_default()
            ),
            _ => format!("{EXECUTOR_LOST}: no executor of location {location} started the task within {secs}s"),
        };
        let head_task = self.end_active_task(now, actor, t, TaskState::Failed, why);
        let queued: Vec<Task> = self
            .machine_active_tasks(machine_id)
            .filter(|o| o.meta.id != head)
            .cloned()
            .collect();
        for o in queued {
            let why = format!(
                "{EXECUTOR_LOST}: task {head}, queued before it on this machine, lost its executor"
            );
            self.end_active_task(now, actor, o, TaskState::Failed, why);
        }
        Ok(Applied::Task(head_task))
    }

    /// Pending and running tasks of one machine, oldest first.
    pub fn machine_active_tasks(&self, machine: u64) -> impl Iterator<Item = &Task> + '_ {
        self.idx
            .active_tasks
            .range((machine, 0)..=(machine, u64::MAX))
            .filter_map(|((_, id), _)| self.tasks.get(id))
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
