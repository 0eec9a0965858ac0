//! Task executor of a location node: takes tasks of machines in its location from its
//! replica, claims them through the leader (compare-and-set on the generation, so one node
//! wins), runs them through [`rackd_hwctl::PowerController`] and records the result. It also
//! runs the periodic power-state sync: machines of the location whose observed power state is
//! older than the sync interval are polled (rate-limited, under the same global bound on BMC
//! sessions) and the results recorded in one `ObservePower` entry per round. Because the
//! freshness test reads the replicated `power_observed_at`, several nodes of one location do
//! not poll the same BMC every round.
//!
//! Drivers: `ipmi` (RMCP+, cipher suite from the BMC settings, default 3) and `ipmi15`
//! (IPMI 1.5) through [`rackd_hwctl::IpmiBmc`]; `sim`, a simulated BMC whose chassis starts in
//! the machine's last observed (replicated) power state, so every node of the location
//! simulates the same machine (tests and demos). Only one task per machine runs at a time,
//! cluster-wide (enforced when a task is claimed).
//!
//! Liveness: a claim comes with a lease (`--task-lease-secs`), renewed every third of it while
//! the task runs and until its result is recorded. A task whose lease expired is taken over
//! under a new generation by the next claim (or failed as "executor lost" after the last
//! attempt), so a killed executor does not wedge its machine. The executor proposes a claim
//! only when its replica says the leader will accept it ([`rackd_raft::state::State::claimable`],
//! the rule apply uses), so blocked tasks cost no log entries. It looks again as soon as its
//! replica applies something (a new task reaches it without a polling delay), at least every
//! 200 ms. Internal writes carry
//! deterministic idempotency keys ([`Command::internal_key`]): a retry after a lost answer gets
//! the first answer. A result is retried until it commits or is refused as stale.

mod metered;
pub mod pace;
pub mod plan;
mod workflow;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use rackd_hwctl::ipmi::LanVersion;
use rackd_hwctl::{
    AnyBmc, BmcError, Fence, Fenced, IpmiBmc, PowerAction, PowerController, PowerError, PowerState,
    SimBmc, VerifyPolicy,
};
use rackd_raft::cmd::{Command, PowerObservation};
use rackd_types::{ApiError, BmcDriver, Task, TaskState, TaskWork};

use self::metered::Metered;
use self::plan::Next;
use crate::abort::AbortOnDrop;
use crate::cluster::{now_ms, Cluster};
use crate::config::PowerConfig;
use crate::services::outcome_unknown;

/// An expired lease is taken over only this long after it ended by the local clock, so a clock
/// slightly ahead of the leader's does not propose claims the leader refuses.
const TAKEOVER_MARGIN_MS: u64 = 500;

/// Claims one executor has in flight at once.
const CLAIMS_IN_FLIGHT: usize = 64;

/// Bounds of the backoff between attempts to record a result.
const FINISH_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const FINISH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Records an attempt's result (`FinishTask`) until it commits or apply refuses it (`Err`, a
/// stale generation). An unknown outcome (no leader, a lost answer, a timeout) is retried with
/// backoff under the command's internal key, so the result is applied once however often it
/// is sent, and a retry of a committed result gets the first answer.
async fn record_result(
    node: &dyn Cluster,
    actor: &str,
    finish: Command,
) -> Result<rackd_raft::cmd::Applied, ApiError> {
    let key = finish.internal_key();
    let mut delay = FINISH_FIRST_BACKOFF;
    loop {
        match node
            .propose_anywhere(actor, key.clone(), finish.clone())
            .await
        {
            Ok(v) => return Ok(v),
            Err(e) if outcome_unknown(&e) => {
                tracing::warn!(?finish, error = %e.message, retry_in = ?delay, "task result not recorded yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(FINISH_MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Error text with its source chain (BMC text verbatim; never a password).
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub struct Executor {
    node: Arc<dyn Cluster>,
    location: String,
    power: Arc<PowerController>,
    policy: VerifyPolicy,
    opts: PowerConfig,
    /// This node's blob store: a deploy's first step brings the image's blobs into it.
    blobs: Option<Arc<crate::blobs::BlobStore>>,
    /// Spaces the power-ons this executor starts.
    pacer: Mutex<pace::Pacer>,
    /// Tasks this process runs (or records the result of): never claimed again here.
    active: Mutex<HashSet<u64>>,
    /// Claims whose answer was lost: task id -> the generation it was claimed from.
    unconfirmed: Mutex<HashMap<u64, u64>>,
    /// The power-sync loop and every task run: all aborted when the executor's task is
    /// (shutdown, or this node learned that it was removed).
    children: Mutex<tokio::task::JoinSet<()>>,
}

/// Aborts the executor's children when the executor's own task ends or is aborted.
struct AbortChildren(Arc<Executor>);

impl Drop for AbortChildren {
    fn drop(&mut self) {
        lock(&self.0.children).abort_all();
    }
}

/// Removes a task from the executor's active set when its run ends, even by a panic.
struct ActiveGuard(Arc<Executor>, u64);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        lock(&self.0.active).remove(&self.1);
    }
}

impl Executor {
    /// The executor of `location`; `blobs` is this node's blob store, where a deploy's first
    /// step brings the image's blobs.
    pub fn new(
        node: Arc<dyn Cluster>,
        location: String,
        opts: PowerConfig,
        blobs: Option<Arc<crate::blobs::BlobStore>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node,
            location,
            power: Arc::new(PowerController::new(opts.max_sessions)),
            policy: VerifyPolicy {
                timeout: Duration::from_secs(60),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                retries: 3,
            },
            pacer: Mutex::new(pace::Pacer::new(opts.power_on_gap)),
            opts,
            blobs,
            active: Mutex::new(HashSet::new()),
            unconfirmed: Mutex::new(HashMap::new()),
            children: Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    /// Waits for this executor's next power-on slot (see [`pace`]).
    async fn pace_power_on(&self, machine: u64) {
        let slot = {
            let mut p = lock(&self.pacer);
            let gap = p.gap().as_millis() as u64;
            let jitter = Duration::from_millis(if gap == 0 {
                0
            } else {
                rand::random::<u64>() % gap
            });
            p.slot(tokio::time::Instant::now(), jitter)
        };
        let wait = slot.saturating_duration_since(tokio::time::Instant::now());
        if wait > Duration::from_millis(50) {
            tracing::debug!(machine, ?wait, "power-on paced");
        }
        tokio::time::sleep_until(slot).await;
    }

    fn actor(&self) -> String {
        format!("node:{}", self.node.id())
    }

    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let _children = AbortChildren(self.clone());
            if let Some(every) = self.opts.sync_interval {
                lock(&self.children).spawn(self.clone().sync_loop(every));
            }
            loop {
                self.clone().tick().await;
                // Reap finished runs.
                while lock(&self.children).try_join_next().is_some() {}
                // Next pass as soon as the replica applies something (a new task, a lease
                // that lapsed is noticed within the bound), at most every 10 ms.
                tokio::time::sleep(Duration::from_millis(10)).await;
                self.node.applied_changed(Duration::from_millis(200)).await;
            }
        })
    }

    /// Builds the driver for a machine from the local replica.
    async fn bmc_for(&self, machine_id: u64) -> Result<AnyBmc, String> {
        let (view, password, on, cleartext) = {
            let state = self.node.state();
            let m = state
                .machines
                .get(&machine_id)
                .ok_or_else(|| format!("machine {machine_id} no longer exists"))?;
            let view = m
                .machine
                .bmc
                .clone()
                .ok_or_else(|| format!("machine {machine_id} has no BMC"))?;
            let on = m.machine.power_state == Some(PowerState::On);
            let cleartext = m
                .machine
                .tags
                .iter()
                .any(|t| t == rackd_types::TAG_IPMI15_CLEARTEXT);
            (
                view,
                m.bmc_password.clone().unwrap_or_default(),
                on,
                cleartext,
            )
        };
        // Passwords are stored sealed for the machine's location (plaintext before sealing).
        let password = match crate::cluster::sealing::sealed_location(&password) {
            None => password,
            Some(loc) => {
                let key = self
                    .node
                    .location_key(loc)
                    .await
                    .map_err(|e| format!("cannot open the BMC password: {}", e.message))?;
                key.open(crate::cluster::sealing::Purpose::BmcPassword, &password)
                    .map_err(|e| format!("cannot open the BMC password: {e}"))?
            }
        };
        let version = match view.driver {
            BmcDriver::Sim => {
                return Ok(AnyBmc::Sim(SimBmc::new(&format!("sim-{machine_id}"), on)));
            }
            BmcDriver::Ipmi => LanVersion::V20,
            BmcDriver::Ipmi15 => LanVersion::V15,
            BmcDriver::Unsupported => return Err("unsupported BMC driver".to_string()),
        };
        let target: SocketAddr = tokio::net::lookup_host((view.address.as_str(), view.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve BMC address {:?}", view.address))?;
        let mut bmc = IpmiBmc::new(target, version, &view.username, &password);
        bmc.config.cipher_suite = view.cipher_suite.unwrap_or(3);
        bmc.config.allow_straight = cleartext;
        bmc.timeout = self.opts.ipmi_timeout;
        bmc.retries = self.opts.ipmi_retries;
        Ok(AnyBmc::Ipmi(bmc))
    }

    /// One pass over the location's tasks, oldest first: claim what the leader would grant
    /// now (pending tasks whose machine is free, running tasks whose lease expired), judged on
    /// the local replica with the rule apply uses, and adopt claims whose answer was lost.
    async fn tick(self: Arc<Self>) {
        let now = now_ms().saturating_sub(TAKEOVER_MARGIN_MS);
        let next: Vec<Next> = {
            let state = self.node.state();
            let active = lock(&self.active);
            let mut unconfirmed = lock(&self.unconfirmed);
            plan::forget_finished(&state, &mut unconfirmed);
            plan::next_tasks(
                &state,
                &self.location,
                self.node.id(),
                now,
                &active,
                &unconfirmed,
            )
            .into_iter()
            .filter(plan::workflow_slots(
                &state,
                &active,
                self.opts.max_workflows,
            ))
            .collect()
        };
        let mut claims = Vec::new();
        for n in next {
            match n {
                Next::Adopt(task) => {
                    lock(&self.unconfirmed).remove(&task.meta.id);
                    tracing::info!(
                        task = task.meta.id,
                        generation = task.generation,
                        "claim committed although its answer was lost; running the task"
                    );
                    self.clone().start(task);
                }
                Next::Claim(task) => claims.push(task),
            }
        }
        // Claims go out together (the leader commits them in few batches), not one round
        // trip after another; the next pass waits for all of them, so none is sent twice.
        futures::stream::iter(claims)
            .for_each_concurrent(CLAIMS_IN_FLIGHT, |task| self.clone().claim(task))
            .await;
    }

    async fn claim(self: Arc<Self>, task: Task) {
        let id = task.meta.id;
        let cmd = Command::ClaimTask {
            id,
            node: self.node.id(),
            generation: task.generation,
            lease_ms: lease_ms(self.opts.task_lease),
        };
        let key = cmd.internal_key();
        match self.node.propose_anywhere(&self.actor(), key, cmd).await {
            Ok(v) => {
                lock(&self.unconfirmed).remove(&id);
                match v.into_task() {
                    Ok(t)
                        if t.state == TaskState::Running && t.assignee == Some(self.node.id()) =>
                    {
                        if t.attempt > 1 {
                            tracing::info!(
                                task = id,
                                attempt = t.attempt,
                                generation = t.generation,
                                "took over a task whose lease expired"
                            );
                        }
                        self.start(t)
                    }
                    Ok(t) => {
                        tracing::warn!(task = id, state = ?t.state, error = ?t.error, "task ended without a live executor")
                    }
                    Err(e) => tracing::warn!(task = id, error = %e, "undecodable claim answer"),
                }
            }
            // Outcome unknown: the claim may have committed. The task is re-read on the next
            // tick: ours (adopted) if it did, else claimed again with the same key, which
            // returns the first answer.
            Err(e) if outcome_unknown(&e) => {
                lock(&self.unconfirmed).insert(id, task.generation);
                tracing::warn!(task = id, error = %e.message, "claim not confirmed; re-reading the task");
            }
            // Refused: another node took it, or this replica was behind.
            Err(e) => {
                lock(&self.unconfirmed).remove(&id);
                tracing::debug!(task = id, error = %e.message, "claim refused");
            }
        }
    }

    /// Runs a task claimed by this node in the background.
    fn start(self: Arc<Self>, task: Task) {
        let id = task.meta.id;
        if !lock(&self.active).insert(id) {
            return;
        }
        let guard = ActiveGuard(self.clone(), id);
        let this = self.clone();
        lock(&self.children).spawn(async move {
            let _guard = guard;
            this.execute(task).await;
        });
    }

    /// One attempt: confirm the lease, run the task while the lease is kept, then record the
    /// result until it commits or is refused as stale (retried with the same key, so it is
    /// applied once).
    ///
    /// Fencing: the BMC is driven only through a [`Fenced`] wrapper whose deadline is this
    /// node's own view of the lease (see [`fence_deadline`]). It is set by a renewal that
    /// commits before any BMC command (renew-then-act: the claim that started this attempt may
    /// be an old claim's idempotency record, a claim adopted after its answer was lost, or one
    /// applied late) and moved forward by each later renewal that commits. When it passes,
    /// whether renewals were refused or never answered, the run stops and the BMC hears
    /// nothing more; no result is recorded, so the task is taken over under a new generation.
    async fn execute(&self, task: Task) {
        let (id, generation) = (task.meta.id, task.generation);
        let actor = self.actor();
        let lease = self.opts.task_lease;
        let fence = match confirm_lease(&*self.node, &actor, id, generation, lease).await {
            Ok(f) => f,
            Err(why) => {
                tracing::warn!(task = id, generation, reason = %why, "lease not confirmed; attempt not started, nothing sent to the BMC");
                return;
            }
        };
        // The renewals stop with this attempt, also when the run is aborted.
        let mut keeper = AbortOnDrop(tokio::spawn(renew_lease(
            self.node.clone(),
            actor.clone(),
            id,
            generation,
            lease,
            fence.clone(),
        )));
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            r = self.run(&task, &fence) => r,
            lost = &mut keeper.0 => {
                let why = lost.unwrap_or_else(|e| e.to_string());
                tracing::warn!(task = id, generation, reason = %why, "lease lost; attempt abandoned");
                None
            }
            _ = fence.closed() => None,
        };
        let Some((error, observed_power)) = outcome else {
            if !fence.is_open() {
                tracing::warn!(task = id, generation, "lease ran out by this node's clock; attempt fenced, nothing more sent to the BMC");
            }
            return;
        };
        crate::metrics::global()
            .task_results
            .get_or_create(&crate::metrics::TaskLabels {
                kind: crate::metrics::label(&task.kind),
                result: if error.is_none() {
                    "succeeded"
                } else {
                    "failed"
                }
                .to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        let finish = Command::FinishTask {
            id,
            generation,
            error,
            observed_power,
        };
        if let Err(e) = record_result(&*self.node, &actor, finish).await {
            tracing::warn!(task = id, generation, error = %e.message, "task result refused");
        }
    }

    /// The task's BMC work through a fenced BMC: `(error, observed power)`, or `None` when the
    /// fence stopped it (nothing to record).
    async fn run(
        &self,
        task: &Task,
        fence: &Fence,
    ) -> Option<(Option<String>, Option<PowerState>)> {
        let Some(work) = task.kind.work() else {
            // A workflow records its steps' results itself.
            self.run_workflow(task, fence).await;
            return None;
        };
        let bmc = match self.bmc_for(task.machine_id).await {
            Ok(b) => b,
            Err(e) => return Some((Some(e), None)),
        };
        let metered = Metered::new(&bmc);
        let bmc = Fenced::new(&metered, fence.clone());
        if matches!(work, TaskWork::Power(PowerAction::On | PowerAction::Cycle)) {
            self.pace_power_on(task.machine_id).await;
        }
        let r = match work {
            TaskWork::Power(action) => self
                .power
                .execute(&bmc, action, &self.policy)
                .await
                .map(|o| Some(o.after)),
            TaskWork::Boot {
                device: dev,
                persistent,
            } => self
                .power
                .set_boot_device(&bmc, dev, persistent, &self.policy)
                .await
                .map(|()| None),
        };
        match r {
            Ok(observed) => Some((None, observed)),
            Err(PowerError::Bmc(BmcError::Fenced { .. })) => None,
            Err(e) => Some((Some(error_text(&e)), None)),
        }
    }

    /// Machines of this location with a BMC, no task pending or running, and an observed power
    /// state older than `every` (or none).
    fn stale_machines(&self, every: Duration) -> Vec<u64> {
        plan::stale_machines(
            &self.node.state(),
            &self.location,
            now_ms(),
            every.as_millis() as u64,
        )
    }

    async fn sync_loop(self: Arc<Self>, every: Duration) {
        // Spread the nodes of one location apart so they do not poll the same machines.
        let jitter = Duration::from_millis(rand::random::<u64>() % 2000);
        tokio::time::sleep(jitter).await;
        loop {
            let started = tokio::time::Instant::now();
            let ids = self.stale_machines(every);
            if !ids.is_empty() {
                let n = ids.len();
                let observations = self.clone().poll_all(ids).await;
                tracing::debug!(
                    polled = n,
                    recorded = observations.len(),
                    "power sync round"
                );
                if !observations.is_empty() {
                    let cmd = Command::ObservePower { observations };
                    let key = cmd.internal_key();
                    if let Err(e) = self.node.propose_anywhere(&self.actor(), key, cmd).await {
                        tracing::warn!(error = %e.message, "could not record power sync");
                    }
                }
            }
            let pause = (every / 4).clamp(Duration::from_millis(200), Duration::from_secs(15));
            tokio::time::sleep_until(started + pause).await;
        }
    }

    /// Polls the machines' power status at no more than `sync_rate` starts per second; the
    /// power controller bounds the concurrent sessions. Each observation carries the time its
    /// poll started, so apply never lets it overwrite a newer result.
    async fn poll_all(self: Arc<Self>, ids: Vec<u64>) -> Vec<PowerObservation> {
        let gap = Duration::from_secs(1) / self.opts.sync_rate.max(1);
        let policy = VerifyPolicy {
            retries: 0,
            ..self.policy.clone()
        };
        let mut set = tokio::task::JoinSet::new();
        for id in ids {
            let this = self.clone();
            let policy = policy.clone();
            set.spawn(async move {
                let bmc = this.bmc_for(id).await.ok()?;
                let observed_at_ms = now_ms();
                let r = this
                    .power
                    .execute(&Metered::new(&bmc), PowerAction::Status, &policy)
                    .await;
                Some(PowerObservation {
                    machine_id: id,
                    power: r.map(|o| o.after).unwrap_or(PowerState::Unknown),
                    observed_at_ms,
                })
            });
            tokio::time::sleep(gap).await;
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some(o)) = r {
                out.push(o);
            }
        }
        out
    }
}

/// This node's view of a lease confirmed by a renewal sent at `sent`: the lease less a tenth.
/// The leader stamps the renewal after it was sent, so the lease it records ends later than
/// `sent + lease`; the tenth absorbs a difference in clock rates between this node and the
/// leader, and the takeover waits a further margin (`TAKEOVER_MARGIN_MS`).
fn fence_deadline(sent: tokio::time::Instant, lease: Duration) -> tokio::time::Instant {
    sent + lease - lease / 10
}

/// A lease as the log carries it (milliseconds, at least 1).
fn lease_ms(lease: Duration) -> u64 {
    (lease.as_millis() as u64).max(1)
}

fn renewal(id: u64, generation: u64, lease: Duration) -> Command {
    Command::RenewTaskLease {
        id,
        generation,
        lease_ms: lease_ms(lease),
    }
}

/// Renew-then-act: a renewal that commits now proves this node still holds attempt
/// `generation` of the task; it opens the fence. A renewal whose outcome is unknown is retried
/// for at most one lease; a refused one (the task moved on) ends the attempt before it starts.
async fn confirm_lease(
    node: &dyn Cluster,
    actor: &str,
    id: u64,
    generation: u64,
    lease: Duration,
) -> Result<Fence, String> {
    let give_up = tokio::time::Instant::now() + lease;
    loop {
        let sent = tokio::time::Instant::now();
        match node
            .propose_anywhere(actor, None, renewal(id, generation, lease))
            .await
        {
            Ok(_) => return Ok(Fence::until(fence_deadline(sent, lease))),
            Err(e) if outcome_unknown(&e) && tokio::time::Instant::now() < give_up => {
                tracing::warn!(task = id, error = %e.message, "lease not confirmed yet; retrying");
                tokio::time::sleep((lease / 10).max(Duration::from_millis(50))).await;
            }
            Err(e) => return Err(e.message),
        }
    }
}

/// Renews a task's lease every third of it, moving the fence forward after each renewal that
/// commits; returns why it stopped when a renewal is refused (another executor took the task
/// over, or it finished). A renewal that cannot reach a quorum is retried at the next period
/// (the fence is not moved, so the run stops when it passes).
async fn renew_lease(
    node: Arc<dyn Cluster>,
    actor: String,
    id: u64,
    generation: u64,
    lease: Duration,
    fence: Fence,
) -> String {
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let sent = tokio::time::Instant::now();
        match node
            .propose_anywhere(&actor, None, renewal(id, generation, lease))
            .await
        {
            Ok(_) => fence.extend(fence_deadline(sent, lease)),
            Err(e) if outcome_unknown(&e) => {
                tracing::warn!(task = id, error = %e.message, "task lease not renewed; retrying");
            }
            Err(e) => return e.message,
        }
    }
}

#[cfg(test)]
mod tests;
