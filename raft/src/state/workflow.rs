//! Apply handlers for workflows (apply rules 5): multi-step tasks that drive a machine through
//! a deploy or a release, as replicated step state.
//!
//! A workflow is a [`Task`] of kind `deploy` or `release` with [`Task::steps`]. It is claimed,
//! leased, taken over and fenced like any task (`tasks.rs`); its executor then runs the current
//! step: `StartStep` records an attempt (with a deadline, leader time) before the executor
//! acts, `FinishStep` records how it ended. Wait steps end by events from the world instead:
//! `BootScriptServed` (a location node served the deploy script) and the install callback
//! (`DeployDone`); an executor may time a wait out only once its deadline has passed by the
//! leader's clock. A new executor (after a leader change or a lost lease) resumes at the
//! step where the workflow stands; an attempt after one that may have acted is numbered, so
//! the executor knows not to repeat what must not run twice (a power cycle).
//!
//! The machine follows its workflow: `deploying` → `deployed` when the deploy's last step
//! is done, `releasing` → `ready` after a release, and `failed` (with the step named) when a
//! workflow fails or is cancelled; `RetryTask` resumes a failed workflow at its failed step.
//!
//! This module must not depend on storage or the node.

use rackd_types::{
    ApiError, ErrorCode, MachineState, StepKind, StepState, Task, TaskKind, TaskState, TaskStep,
};

use super::{precondition, State};
use crate::cmd::{Applied, StepOutcome, Wipe};

/// The steps of a deploy, with the waits' timeouts (`None`: the default).
pub fn deploy_steps(boot_ms: Option<u64>, install_ms: Option<u64>) -> Vec<TaskStep> {
    use StepKind::*;
    [Prepare, BootPxe, PowerOn, WaitBoot, WaitInstall, BootDisk]
        .into_iter()
        .map(|k| {
            let timeout = match k {
                WaitBoot => boot_ms,
                WaitInstall => install_ms,
                _ => None,
            };
            TaskStep::new(k, timeout.unwrap_or_else(|| k.default_timeout_ms()))
        })
        .collect()
}

/// The steps of a release; with a wipe (its waits' timeouts, `None`: the defaults), the
/// machine first boots the wipe image, which calls back when it is done.
pub fn release_steps(wipe: Option<(Option<u64>, Option<u64>)>) -> Vec<TaskStep> {
    use StepKind::*;
    let kinds: &[StepKind] = match wipe {
        None => &[PowerOff],
        Some(_) => &[Prepare, BootPxe, PowerOn, WaitBoot, WaitWipe, PowerOff],
    };
    let (boot_ms, wipe_ms) = wipe.unwrap_or_default();
    kinds
        .iter()
        .map(|&k| {
            let timeout = match k {
                WaitBoot => boot_ms,
                WaitWipe => wipe_ms,
                _ => None,
            };
            TaskStep::new(k, timeout.unwrap_or_else(|| k.default_timeout_ms()))
        })
        .collect()
}

fn stale(message: String) -> ApiError {
    ApiError::new(ErrorCode::PreconditionFailed, message)
}

/// What a workflow of `kind` is called in messages.
fn what(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Deploy => "deploy",
        TaskKind::Release => "release",
        _ => "task",
    }
}

impl State {
    /// The machine's pending or running workflow, if any.
    pub fn active_workflow(&self, machine: u64) -> Option<&Task> {
        self.machine_active_tasks(machine)
            .find(|t| t.kind.is_workflow())
    }

    /// Create a workflow task of `kind` on `machine_id` (its checks are the caller's); returns
    /// its id.
    pub(super) fn create_workflow(
        &mut self,
        now: u64,
        actor: &str,
        kind: TaskKind,
        (machine_id, image): (u64, Option<String>),
        steps: Vec<TaskStep>,
    ) -> u64 {
        let hostname = self
            .machines
            .get(&machine_id)
            .map(|m| m.machine.hostname.clone())
            .unwrap_or_default();
        let names: Vec<&str> = steps.iter().map(|s| s.kind.as_str()).collect();
        let message = format!("{kind:?} on {hostname}: {}", names.join(" → "));
        self.add_pending_task(now, actor, kind, (machine_id, image), steps, message)
            .meta
            .id
    }

    /// `Release`: a deployed or failed machine without a workflow in progress becomes
    /// `releasing`, with a release workflow (wiping it first with `wipe`).
    pub(super) fn release(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        wipe: Option<&Wipe>,
    ) -> Result<Applied, ApiError> {
        let stored = self.machines.fetch(id, "machine")?;
        precondition(stored.machine.meta.version, if_match)?;
        let from = stored.machine.state;
        if !matches!(from, MachineState::Deployed | MachineState::Failed) {
            return Err(ApiError::conflict(format!(
                "machine {id} is {}, only deployed or failed machines are released",
                from.as_str()
            )));
        }
        if let Some(t) = self.active_workflow(id) {
            return Err(ApiError::conflict(format!(
                "machine {id} has a {} in progress (task {})",
                what(t.kind),
                t.meta.id
            )));
        }
        if let Some(w) = wipe {
            if self.image_by_name(&w.image).is_none() {
                return Err(ApiError::invalid(format!(
                    "image {:?} does not exist",
                    w.image
                )));
            }
            if w.token.0.len() < 32 {
                return Err(ApiError::internal("wipe token too short"));
            }
            for (what, t) in [("boot", w.boot_timeout_ms), ("wipe", w.wipe_timeout_ms)] {
                if t.is_some_and(|t| t == 0 || t > super::deploy::MAX_WAIT_MS) {
                    return Err(ApiError::invalid(format!(
                        "{what}_timeout_secs must be from 1 to {}",
                        super::deploy::MAX_WAIT_MS / 1000
                    )));
                }
            }
        }
        let steps = release_steps(wipe.map(|w| (w.boot_timeout_ms, w.wipe_timeout_ms)));
        let image = wipe.map(|w| w.image.clone());
        let task = self.create_workflow(now, actor, TaskKind::Release, (id, image), steps);
        let mut stored = self.machines.fetch(id, "machine")?;
        let m = &mut stored.machine;
        m.state = MachineState::Releasing;
        m.state_cause = format!("release requested by {actor} (task {task})");
        m.workflow = Some(task);
        m.meta.version += 1;
        m.meta.updated_at = now;
        if let Some(w) = wipe {
            m.state_cause = format!(
                "release with a wipe ({}) requested by {actor} (task {task})",
                w.image
            );
        }
        let view = m.clone();
        // The wipe image's one-time callback token (none without a wipe).
        stored.deploy_token = wipe.map(|w| w.token.0.clone());
        stored.deploy_token_sealed =
            wipe.and_then(|w| w.sealed_token.as_ref().map(|s| s.0.clone()));
        self.machines.insert(id, stored);
        self.journal(
            now,
            actor,
            "machine.state_changed",
            "machine",
            Some(id),
            format!(
                "machine {} {} -> releasing (task {task})",
                view.hostname,
                from.as_str()
            ),
        );
        Ok(Applied::Machine(view))
    }

    /// Whether the executor of attempt `generation` of workflow `id` may start attempt
    /// `attempt` of step `step` now. Apply's rule for `StartStep`, and the executor's before
    /// it proposes one.
    pub fn step_startable(
        &self,
        id: u64,
        generation: u64,
        step: u32,
        attempt: u32,
    ) -> Result<&Task, ApiError> {
        let t = self
            .tasks
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
        if !t.kind.is_workflow() {
            return Err(ApiError::conflict(format!("task {id} has no steps")));
        }
        if t.state != TaskState::Running || t.generation != generation {
            return Err(stale(format!(
                "stale step of task {id} (generation {generation}; the task is {:?} at \
                 generation {})",
                t.state, t.generation
            )));
        }
        let current = t.current_step();
        if current != Some(step as usize) {
            return Err(stale(format!(
                "step {step} of task {id} is not its current step ({current:?})"
            )));
        }
        let s = &t.steps[step as usize];
        if s.attempts.checked_add(1) != Some(attempt) {
            return Err(stale(format!(
                "step {} of task {id} had {} attempts; attempt {attempt} is not the next",
                s.kind, s.attempts
            )));
        }
        Ok(t)
    }

    pub(super) fn start_step(
        &mut self,
        now: u64,
        actor: &str,
        (id, generation): (u64, u64),
        step: u32,
        attempt: u32,
    ) -> Result<Applied, ApiError> {
        let mut t = self.step_startable(id, generation, step, attempt)?.clone();
        self.begin_step(now, actor, &mut t, step as usize);
        t.meta.version += 1;
        t.meta.updated_at = now;
        self.put_task(now, t.clone());
        Ok(Applied::Task(t))
    }

    /// Start the next attempt of step `i` of `t` (running, under the task's generation, with
    /// its deadline), journaled; the caller stores `t`.
    fn begin_step(&mut self, now: u64, actor: &str, t: &mut Task, i: usize) {
        let (id, generation, node) = (t.meta.id, t.generation, t.assignee.unwrap_or_default());
        let s = &mut t.steps[i];
        s.state = StepState::Running;
        s.attempts += 1;
        s.generation = generation;
        s.started_at = Some(now);
        s.deadline = Some(now.saturating_add(s.timeout_ms));
        s.finished_at = None;
        s.error = None;
        let message = format!(
            "task {id} step {} attempt {} on node {node}",
            s.kind, s.attempts
        );
        self.journal(now, actor, "task.step_started", "task", Some(id), message);
    }

    pub(super) fn finish_step(
        &mut self,
        now: u64,
        actor: &str,
        (id, generation, step, attempt): (u64, u64, u32, u32),
        outcome: &StepOutcome,
        observed_power: Option<rackd_types::PowerState>,
        start_next: bool,
    ) -> Result<Applied, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        let running = t.kind.is_workflow()
            && t.state == TaskState::Running
            && t.generation == generation
            && t.current_step() == Some(step as usize)
            && t.steps[step as usize].state == StepState::Running
            && t.steps[step as usize].attempts == attempt;
        if !running {
            return Err(stale(format!(
                "stale result of step {step} attempt {attempt} of task {id} (generation \
                 {generation}; the task is {:?} at generation {})",
                t.state, t.generation
            )));
        }
        let s = &mut t.steps[step as usize];
        let kind = s.kind;
        let failure = match outcome {
            StepOutcome::Succeeded { note } | StepOutcome::Skipped { note } => {
                s.state = match outcome {
                    StepOutcome::Skipped { .. } => StepState::Skipped,
                    _ => StepState::Succeeded,
                };
                s.note = Some(note.clone());
                None
            }
            StepOutcome::Failed { error } => Some(error.clone()),
            StepOutcome::TimedOut => {
                let deadline = s.deadline.unwrap_or(u64::MAX);
                if now < deadline {
                    return Err(stale(format!(
                        "step {kind} of task {id} runs until {deadline}; it has not timed out"
                    )));
                }
                let secs = s.timeout_ms.div_ceil(1000);
                Some(if kind.is_wait() {
                    format!("timed out after {secs}s waiting for {}", kind.waits_for())
                } else {
                    format!("timed out after {secs}s")
                })
            }
        };
        s.finished_at = Some(now);
        s.deadline = None;
        if let Some(e) = &failure {
            s.state = StepState::Failed;
            s.error = Some(e.clone());
        }
        let message = match (&failure, &s.note) {
            (Some(e), _) => format!("task {id} step {kind} failed: {e}"),
            (None, Some(n)) => format!("task {id} step {kind} {:?}: {n}", s.state),
            (None, None) => format!("task {id} step {kind} {:?}", s.state),
        };
        t.meta.version += 1;
        t.meta.updated_at = now;
        if let (Some(p), Some(mut m)) = (observed_power, self.machines.get(&t.machine_id).cloned())
        {
            t.observed_power = Some(p);
            m.machine.power_state = Some(p);
            m.machine.power_observed_at = Some(now);
            self.machines.insert(t.machine_id, m);
        }
        self.journal(now, actor, "task.step_finished", "task", Some(id), message);
        let t = match failure {
            Some(e) => self.end_workflow(
                now,
                actor,
                t,
                TaskState::Failed,
                Some(format!("step {kind}: {e}")),
            ),
            None if t.current_step().is_none() => {
                self.end_workflow(now, actor, t, TaskState::Succeeded, None)
            }
            None => {
                let mut t = t;
                if let Some(next) = t.current_step().filter(|_| start_next) {
                    self.begin_step(now, actor, &mut t, next);
                }
                self.put_task(now, t.clone());
                t
            }
        };
        Ok(Applied::Task(t))
    }

    /// Mark the wait step `kind` of workflow `t` (and the waits before it) done by an event
    /// with `note`: nothing when the step is done already. Ends the workflow when nothing is
    /// left. Returns the task as stored.
    pub(super) fn complete_wait(
        &mut self,
        now: u64,
        actor: &str,
        mut t: Task,
        kind: StepKind,
        note: &str,
    ) -> Task {
        let Some(at) = t.steps.iter().position(|s| s.kind == kind) else {
            return t;
        };
        if t.steps[at].state.is_done() {
            return t;
        }
        let id = t.meta.id;
        for s in t.steps[..=at].iter_mut() {
            if !s.kind.is_wait() || s.state.is_done() {
                continue;
            }
            s.state = StepState::Succeeded;
            s.finished_at = Some(now);
            s.deadline = None;
            s.note = Some(if s.kind == kind {
                note.to_string()
            } else {
                format!("implied: {note}")
            });
            let message = format!("task {id} step {} done: {note}", s.kind);
            self.journal(now, actor, "task.step_finished", "task", Some(id), message);
        }
        t.meta.version += 1;
        t.meta.updated_at = now;
        if t.current_step().is_none() {
            return self.end_workflow(now, actor, t, TaskState::Succeeded, None);
        }
        self.put_task(now, t.clone());
        t
    }

    /// `BootScriptServed`: the deploying machine with `mac` fetched its script from `node`.
    pub(super) fn boot_script_served(
        &mut self,
        now: u64,
        actor: &str,
        mac: &str,
        node: u64,
    ) -> Result<Applied, ApiError> {
        let Some(t) = self
            .machine_by_mac(mac)
            .and_then(|m| self.active_workflow(m.meta.id))
            .cloned()
        else {
            return Ok(Applied::Done);
        };
        let note = format!("deploy script served by node {node}");
        Ok(Applied::Task(self.complete_wait(
            now,
            actor,
            t,
            StepKind::WaitBoot,
            &note,
        )))
    }

    /// End workflow `t` in `state` (terminal) with `error`; its machine follows.
    pub(super) fn end_workflow(
        &mut self,
        now: u64,
        actor: &str,
        mut t: Task,
        state: TaskState,
        error: Option<String>,
    ) -> Task {
        let id = t.meta.id;
        t.state = state;
        t.finished_at = Some(now);
        t.lease_expires_at = None;
        t.meta.version += 1;
        t.meta.updated_at = now;
        t.error = error;
        let message = format!(
            "task {id} {state:?}{}",
            t.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
        self.put_task(now, t.clone());
        self.journal(now, actor, "task.finished", "task", Some(id), message);
        self.settle_workflow(now, actor, &t);
        t
    }

    /// A workflow ended other than by its steps (cancelled, its executor lost): its current
    /// step is marked with `why`.
    pub(super) fn stop_current_step(now: u64, t: &mut Task, state: TaskState, why: &str) {
        if let Some(i) = t.current_step() {
            let s = &mut t.steps[i];
            s.state = if state == TaskState::Cancelled {
                StepState::Cancelled
            } else {
                StepState::Failed
            };
            s.finished_at = Some(now);
            s.deadline = None;
            s.error = Some(why.to_string());
        }
    }

    /// The machine follows its workflow's end: `deployed`/`ready` after success, `failed`
    /// (step named) otherwise. Nothing when the machine is gone, has moved on (an operator
    /// changed its state), or another workflow drives it.
    pub(super) fn settle_workflow(&mut self, now: u64, actor: &str, t: &Task) {
        let Some(mut stored) = self.machines.get(&t.machine_id).cloned() else {
            return;
        };
        if stored.machine.workflow != Some(t.meta.id) {
            return;
        }
        let id = t.meta.id;
        let during = match t.kind {
            TaskKind::Deploy => MachineState::Deploying,
            TaskKind::Release => MachineState::Releasing,
            _ => return,
        };
        if stored.machine.state != during {
            return;
        }
        let (to, cause) = match t.state {
            TaskState::Succeeded if t.kind == TaskKind::Deploy => (
                MachineState::Deployed,
                format!(
                    "deployed {} (task {id})",
                    stored.machine.image.as_deref().unwrap_or_default()
                ),
            ),
            TaskState::Succeeded => (MachineState::Ready, format!("released (task {id})")),
            TaskState::Failed | TaskState::Cancelled => {
                let stopped = t
                    .steps
                    .iter()
                    .find(|s| matches!(s.state, StepState::Failed | StepState::Cancelled));
                let step = stopped.map(|s| s.kind.as_str()).unwrap_or("?");
                let why = stopped
                    .and_then(|s| s.error.as_deref())
                    .or(t.error.as_deref())
                    .unwrap_or_default();
                let verb = if t.state == TaskState::Failed {
                    "failed"
                } else {
                    "cancelled"
                };
                (
                    MachineState::Failed,
                    format!("{} {verb} at step {step}: {why} (task {id})", what(t.kind)),
                )
            }
            _ => return,
        };
        let m = &mut stored.machine;
        m.state = to;
        m.state_cause = cause;
        m.meta.version += 1;
        m.meta.updated_at = now;
        if to == MachineState::Ready {
            m.image = None;
        }
        let message = format!(
            "machine {} {} -> {} ({})",
            m.hostname,
            during.as_str(),
            to.as_str(),
            m.state_cause
        );
        // A failed deploy keeps its token for a retry (nothing accepts it unless the machine
        // is deploying again).
        if to != MachineState::Failed {
            stored.deploy_token = None;
            stored.deploy_token_sealed = None;
        }
        self.machines.insert(t.machine_id, stored);
        self.journal(
            now,
            actor,
            "machine.state_changed",
            "machine",
            Some(t.machine_id),
            message,
        );
    }

    /// `RetryTask`: a failed or cancelled workflow, the last of its `failed` machine, runs
    /// again from its failed step (pending, for an executor to claim); the machine goes back
    /// to `deploying` or `releasing`.
    pub(super) fn retry_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
    ) -> Result<Applied, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if !t.kind.is_workflow() {
            return Err(ApiError::conflict(format!(
                "task {id} is a single {:?} command: create it again instead",
                t.kind
            )));
        }
        if !matches!(t.state, TaskState::Failed | TaskState::Cancelled) {
            return Err(ApiError::conflict(format!(
                "task {id} is {:?}; only failed or cancelled workflows are retried",
                t.state
            )));
        }
        let mid = t.machine_id;
        let stored = self
            .machines
            .get(&mid)
            .ok_or_else(|| ApiError::conflict(format!("machine {mid} no longer exists")))?;
        if stored.machine.workflow != Some(id) || stored.machine.state != MachineState::Failed {
            return Err(ApiError::conflict(format!(
                "machine {mid} is {} and task {id} is not the workflow it failed in",
                stored.machine.state.as_str()
            )));
        }
        if let Some(i) = t.current_step() {
            let s = &mut t.steps[i];
            s.state = StepState::Pending;
            s.note = s.error.take().map(|e| format!("retried after: {e}"));
            s.deadline = None;
            s.finished_at = None;
        }
        let step = t
            .current_step()
            .map(|i| t.steps[i].kind.as_str())
            .unwrap_or("?");
        let message = format!("task {id} retried by {actor} from step {step}");
        self.idx
            .finished_tasks
            .remove(&(t.finished_at.unwrap_or(0), id));
        t.state = TaskState::Pending;
        t.attempt = 0;
        t.assignee = None;
        t.lease_expires_at = None;
        t.started_at = None;
        t.finished_at = None;
        t.error = None;
        t.meta.version += 1;
        t.meta.updated_at = now;
        self.put_task(now, t.clone());
        self.journal(now, actor, "task.retried", "task", Some(id), message);

        let mut stored = self.machines.fetch(mid, "machine")?;
        let to = match t.kind {
            TaskKind::Release => MachineState::Releasing,
            _ => MachineState::Deploying,
        };
        let m = &mut stored.machine;
        m.state = to;
        m.state_cause = format!(
            "{} retried by {actor} from step {step} (task {id})",
            what(t.kind)
        );
        m.meta.version += 1;
        m.meta.updated_at = now;
        let message = format!(
            "machine {} failed -> {} ({})",
            m.hostname,
            to.as_str(),
            m.state_cause
        );
        self.machines.insert(mid, stored);
        self.journal(
            now,
            actor,
            "machine.state_changed",
            "machine",
            Some(mid),
            message,
        );
        Ok(Applied::Task(t))
    }
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
