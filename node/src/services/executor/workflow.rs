//! The executor's runner of workflow tasks (deploy, release): step by step, under the
//! attempt's lease and fence, from the step where the replicated task stands (so a node that
//! took the task over resumes there).
//!
//! Each attempt of a step is recorded (`StartStep`, committed before anything is sent to the
//! BMC) and ended (`FinishStep`). A failed attempt of a BMC step is tried again with backoff
//! up to the step's attempts; the power-on step of an attempt after one that may have acted
//! only checks the power, so a machine found on is never cycled twice. Wait steps are ended
//! by events that apply records (the script fetch, the install callback); the executor only
//! times them out, once their deadline has passed (apply checks it by the leader's clock).
//!
//! Layer: part of `executor`; depends on `cluster`, `blobs` and `services::blobs`.

use std::time::Duration;

use rackd_hwctl::{BmcError, BootDevice, Fence, Fenced, PowerAction, PowerError, PowerState};
use rackd_raft::cmd::{Command, StepOutcome};
use rackd_types::{StepKind, StepState, Task, TaskState};

use super::{error_text, record_result, Executor, TAKEOVER_MARGIN_MS};
use crate::cluster::now_ms;

/// How often a wait step re-reads the replica.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Backoff before attempt `n + 1` of a failed step (1 s, 2 s, 4 s, … at most 30 s).
fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// What an attempt of a step came to: an outcome to record, or nothing (fenced, or the task
/// moved on).
type Attempt = Option<(StepOutcome, Option<PowerState>)>;

fn skipped(note: &str) -> StepOutcome {
    StepOutcome::Skipped {
        note: note.to_string(),
    }
}

fn succeeded(note: impl Into<String>) -> StepOutcome {
    StepOutcome::Succeeded { note: note.into() }
}

impl Executor {
    /// Runs attempt `generation` of workflow `task` until the workflow ends, the task moves
    /// on (cancelled, taken over) or the fence closes. Records every step's result itself.
    pub(super) async fn run_workflow(&self, task: &Task, fence: &Fence) {
        let (id, generation) = (task.meta.id, task.generation);
        let actor = self.actor();
        // Attempts this run made of the current step (a new step starts at 0).
        let mut tries: (usize, u32) = (usize::MAX, 0);
        // The task as the leader's last answer gave it (this node's replica may lag it).
        let mut known: Option<Task> = None;
        // The answer started the current step for this run (a step result starts the next
        // step in the same entry): act on it without a StartStep.
        let mut fresh = false;
        loop {
            if !fence.is_open() {
                return;
            }
            let t = match known.take() {
                Some(t) => t,
                None => match self.replica_task(id, generation).await {
                    Some(t) => t,
                    None => return,
                },
            };
            if t.state != TaskState::Running || t.generation != generation {
                return;
            }
            let Some(i) = t.current_step() else {
                return;
            };
            let kind = t.steps[i].kind;
            let ours =
                t.steps[i].state == StepState::Running && t.steps[i].generation == generation;
            let t = if std::mem::take(&mut fresh) && ours {
                t
            } else {
                let start = Command::StartStep {
                    id,
                    generation,
                    step: i as u32,
                    attempt: t.steps[i].attempts + 1,
                };
                let started = match record_result(&*self.node, &actor, start).await {
                    Ok(v) => v,
                    Err(e) => {
                        // The replica may be behind (an event ended the step, a takeover):
                        // look again shortly; the loop stops once the task moved on.
                        tracing::debug!(task = id, step = %kind, error = %e.message, "step not started");
                        tokio::time::sleep(WAIT_POLL).await;
                        continue;
                    }
                };
                let Ok(t) = started.into_task() else {
                    return;
                };
                t
            };
            known = Some(t.clone());
            if tries.0 != i {
                tries = (i, 0);
            }
            tries.1 += 1;
            let attempt = t.steps[i].attempts;
            tracing::info!(task = id, step = %kind, attempt, "workflow step started");
            let Some((outcome, power)) = self.run_step(&t, i, fence).await else {
                known = None; // an event ended the step: the replica has it
                continue;
            };
            if let StepOutcome::Failed { error } = &outcome {
                if tries.1 < kind.max_attempts() {
                    let pause = backoff(tries.1);
                    tracing::warn!(task = id, step = %kind, attempt, error = %error, retry_in = ?pause, "workflow step failed; trying again");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            let finish = Command::FinishStep {
                id,
                generation,
                step: i as u32,
                attempt,
                outcome,
                observed_power: power,
                start_next: true,
            };
            match record_result(&*self.node, &actor, finish).await {
                Ok(v) => {
                    known = v.into_task().ok();
                    fresh = true;
                }
                Err(e) => {
                    tracing::warn!(task = id, step = %kind, error = %e.message, "step result refused");
                    known = None;
                    if kind.is_wait() {
                        // A timeout the leader's clock does not agree with yet.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    return;
                }
            }
        }
    }

    /// Task `id` from this node's replica once the replica has caught up with attempt
    /// `generation` (the claim that started it was answered by the leader, and may not have
    /// reached this replica yet); `None` once the task moved past it (finished, cancelled,
    /// taken over) or is gone.
    async fn replica_task(&self, id: u64, generation: u64) -> Option<Task> {
        loop {
            let t = self.node.state().tasks.get(&id).cloned()?;
            if t.generation > generation || t.state.is_terminal() {
                return None;
            }
            if t.generation == generation && t.state == TaskState::Running {
                return Some(t);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One attempt of step `i` of `t` (started: `t` is the task as `StartStep` left it).
    async fn run_step(&self, t: &Task, i: usize, fence: &Fence) -> Attempt {
        let step = &t.steps[i];
        match step.kind {
            StepKind::Prepare => Some((self.prepare(t).await, None)),
            StepKind::WaitBoot | StepKind::WaitInstall | StepKind::WaitWipe => {
                self.wait(t, i, step.deadline.unwrap_or(0), fence).await
            }
            StepKind::BootPxe | StepKind::PowerOn | StepKind::BootDisk | StepKind::PowerOff => {
                let has_bmc = self
                    .node
                    .state()
                    .machines
                    .get(&t.machine_id)
                    .is_some_and(|m| m.machine.bmc.is_some());
                if !has_bmc {
                    return Some((
                        skipped("no BMC: power and boot device are the operator's"),
                        None,
                    ));
                }
                let limit = Duration::from_millis(step.timeout_ms.max(1));
                match tokio::time::timeout(limit, self.bmc_step(t, i, fence)).await {
                    Ok(r) => r,
                    Err(_) => Some((StepOutcome::TimedOut, None)),
                }
            }
        }
    }

    /// The BMC work of step `i`.
    async fn bmc_step(&self, t: &Task, i: usize, fence: &Fence) -> Attempt {
        let step = &t.steps[i];
        if step.kind == StepKind::PowerOn
            && t.step(StepKind::WaitBoot)
                .is_some_and(|s| s.state.is_done())
        {
            return Some((
                skipped("the machine already fetched its deploy script: it is booting"),
                None,
            ));
        }
        let bmc = match self.bmc_for(t.machine_id).await {
            Ok(b) => b,
            Err(e) => return Some((StepOutcome::Failed { error: e }, None)),
        };
        let metered = super::metered::Metered::new(&bmc);
        let bmc = Fenced::new(&metered, fence.clone());
        let power = |action| self.power.execute(&bmc, action, &self.policy);
        let boot = |device, persistent| {
            self.power
                .set_boot_device(&bmc, device, persistent, &self.policy)
        };
        let r: Result<(String, Option<PowerState>), PowerError> = match step.kind {
            StepKind::BootPxe => boot(BootDevice::Pxe, false)
                .await
                .map(|()| ("next boot from the network".to_string(), None)),
            StepKind::BootDisk => boot(BootDevice::Disk, true)
                .await
                .map(|()| ("every boot from the local disk".to_string(), None)),
            StepKind::PowerOff => power(PowerAction::Off)
                .await
                .map(|o| ("powered off".to_string(), Some(o.after))),
            _ => match power(PowerAction::Status).await {
                Err(e) => Err(e),
                // An earlier attempt may have powered it on or cycled it: never again.
                Ok(o) if step.attempts > 1 && o.after == PowerState::On => Ok((
                    "on after an earlier attempt that may have acted: not cycled again".into(),
                    Some(PowerState::On),
                )),
                Ok(o) if o.after == PowerState::On => {
                    self.pace_power_on(t.machine_id).await;
                    power(PowerAction::Cycle)
                        .await
                        .map(|o| ("was on: power cycled".to_string(), Some(o.after)))
                }
                Ok(_) => {
                    self.pace_power_on(t.machine_id).await;
                    power(PowerAction::On)
                        .await
                        .map(|o| ("was off: powered on".to_string(), Some(o.after)))
                }
            },
        };
        match r {
            Ok((note, after)) => Some((succeeded(note), after)),
            Err(PowerError::Bmc(BmcError::Fenced { .. })) => None,
            // A BMC that cannot set the boot device: the machine's own boot order must put
            // the network first (rackd's script then tells a deployed machine to boot from
            // its disk), as with any BMC-less PXE setup.
            Err(e @ PowerError::Bmc(BmcError::Unsupported { .. }))
                if matches!(step.kind, StepKind::BootPxe | StepKind::BootDisk) =>
            {
                Some((
                    skipped(&format!(
                        "{}: the machine boots by its own boot order (network first; a \
                         deployed machine's script sends it to its disk)",
                        error_text(&e)
                    )),
                    None,
                ))
            }
            Err(e) => Some((
                StepOutcome::Failed {
                    error: error_text(&e),
                },
                None,
            )),
        }
    }

    /// Check what the boot needs and bring the image's blobs into this node's cache.
    async fn prepare(&self, t: &Task) -> StepOutcome {
        let failed = |error: String| StepOutcome::Failed { error };
        let (image, ips) = {
            let st = self.node.state();
            let Some(m) = st.machines.get(&t.machine_id) else {
                return failed(format!("machine {} no longer exists", t.machine_id));
            };
            let m = &m.machine;
            if m.macs.is_empty() {
                return failed("the machine has no MAC address: nothing can boot it".into());
            }
            let name = t.image.clone().or(m.image.clone()).unwrap_or_default();
            let Some(image) = st.image_by_name(&name).cloned() else {
                return failed(format!("image {name:?} does not exist"));
            };
            (image, m.ips.clone())
        };
        let blobs: Vec<_> = image.blobs().collect();
        if let Some(store) = &self.blobs {
            for d in &blobs {
                if let Err(e) = crate::services::blobs::ensure_local(&*self.node, store, d).await {
                    return failed(format!("image {} blob {d}: {e}", image.name));
                }
            }
        }
        let address = if ips.is_empty() {
            "its address from DHCP".to_string()
        } else {
            format!("address {}", ips.join(", "))
        };
        succeeded(format!(
            "image {}: {} blob(s) cached at node {}; {address}",
            image.name,
            blobs.len(),
            self.node.id()
        ))
    }

    /// Wait until an event ends step `i` (nothing to record), or time it out once its
    /// deadline (leader time) has passed by this node's clock with a margin.
    async fn wait(&self, t: &Task, i: usize, deadline: u64, fence: &Fence) -> Attempt {
        let (id, generation) = (t.meta.id, t.generation);
        loop {
            tokio::select! {
                _ = fence.closed() => return None,
                _ = tokio::time::sleep(WAIT_POLL) => {}
            }
            let state = self.node.state();
            let t = state.tasks.get(&id)?;
            if t.state != TaskState::Running
                || t.generation != generation
                || t.steps[i].state.is_done()
            {
                return None;
            }
            if now_ms() > deadline.saturating_add(TAKEOVER_MARGIN_MS) {
                return Some((StepOutcome::TimedOut, None));
            }
        }
    }
}
