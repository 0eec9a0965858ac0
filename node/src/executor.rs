//! Task executor of a location node: takes pending tasks of machines in its location from its
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rackd_hwctl::ipmi::LanVersion;
use rackd_hwctl::{
    AnyBmc, BootDevice, IpmiBmc, PowerAction, PowerController, PowerState, SimBmc, VerifyPolicy,
};
use rackd_raft::cmd::Command;
use rackd_types::{Task, TaskKind, TaskState};

use crate::runtime::Node;

const LEASE_MS: u64 = 120_000;

/// Power control settings of a location node.
#[derive(Debug, Clone)]
pub struct PowerOptions {
    /// Global bound on concurrent BMC sessions of this node.
    pub max_sessions: usize,
    /// Poll machines whose observed power is older than this; `None` turns the sync off.
    pub sync_interval: Option<Duration>,
    /// At most this many sync polls started per second.
    pub sync_rate: u32,
    /// Per-datagram IPMI timeout and retransmissions.
    pub ipmi_timeout: Duration,
    pub ipmi_retries: u32,
}

impl Default for PowerOptions {
    fn default() -> Self {
        Self {
            max_sessions: 32,
            sync_interval: Some(Duration::from_secs(60)),
            sync_rate: 50,
            ipmi_timeout: Duration::from_millis(1000),
            ipmi_retries: 2,
        }
    }
}

/// What a task asks of the BMC.
enum Work {
    Power(PowerAction),
    Boot(BootDevice, bool),
}

fn work(kind: TaskKind) -> Work {
    match kind {
        TaskKind::PowerOn => Work::Power(PowerAction::On),
        TaskKind::PowerOff => Work::Power(PowerAction::Off),
        TaskKind::PowerCycle => Work::Power(PowerAction::Cycle),
        TaskKind::PowerReset => Work::Power(PowerAction::Reset),
        TaskKind::PowerStatus => Work::Power(PowerAction::Status),
        TaskKind::BootPxe => Work::Boot(BootDevice::Pxe, false),
        TaskKind::BootPxePersistent => Work::Boot(BootDevice::Pxe, true),
        TaskKind::BootDisk => Work::Boot(BootDevice::Disk, false),
        TaskKind::BootDiskPersistent => Work::Boot(BootDevice::Disk, true),
    }
}

fn power_str(p: PowerState) -> String {
    match p {
        PowerState::On => "on",
        PowerState::Off => "off",
        PowerState::Unknown => "unknown",
    }
    .to_string()
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
    node: Arc<Node>,
    location: String,
    power: Arc<PowerController>,
    policy: VerifyPolicy,
    opts: PowerOptions,
}

impl Executor {
    pub fn new(node: Arc<Node>, location: String, opts: PowerOptions) -> Arc<Self> {
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
            opts,
        })
    }

    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Some(every) = self.opts.sync_interval {
                tokio::spawn(self.clone().sync_loop(every));
            }
            loop {
                self.clone().tick().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// Builds the driver for a machine from the local replica.
    async fn bmc_for(&self, machine_id: u64) -> Result<AnyBmc, String> {
        let (view, password, on) = {
            let a = self.node.sm.read();
            let m = a
                .state
                .machines
                .get(&machine_id)
                .ok_or_else(|| format!("machine {machine_id} no longer exists"))?;
            let view = m
                .machine
                .bmc
                .clone()
                .ok_or_else(|| format!("machine {machine_id} has no BMC"))?;
            let on = m.machine.power_state.as_deref() == Some("on");
            (view, m.bmc_password.clone().unwrap_or_default(), on)
        };
        if view.driver == "sim" {
            return Ok(AnyBmc::Sim(SimBmc::new(&format!("sim-{machine_id}"), on)));
        }
        let version = LanVersion::parse(&view.driver)
            .ok_or_else(|| format!("unknown BMC driver {:?}", view.driver))?;
        let target: SocketAddr = tokio::net::lookup_host((view.address.as_str(), view.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve BMC address {:?}", view.address))?;
        let mut bmc = IpmiBmc::new(target, version, &view.username, &password);
        bmc.config.cipher_suite = view.cipher_suite.unwrap_or(3);
        bmc.timeout = self.opts.ipmi_timeout;
        bmc.retries = self.opts.ipmi_retries;
        Ok(AnyBmc::Ipmi(bmc))
    }

    async fn tick(self: Arc<Self>) {
        let mine: Vec<Task> = {
            let a = self.node.sm.read();
            a.state
                .pending_tasks()
                .filter(|t| {
                    a.state
                        .machines
                        .get(&t.machine_id)
                        .is_some_and(|m| m.machine.location == self.location)
                })
                .cloned()
                .collect()
        };
        for task in mine {
            let claim = Command::ClaimTask {
                id: task.meta.id,
                node: self.node.id,
                generation: task.generation,
                lease_ms: LEASE_MS,
            };
            let actor = format!("node:{}", self.node.id);
            let Ok(v) = self.node.propose_anywhere(&actor, None, claim).await else {
                continue; // another node took it, or no quorum right now
            };
            let generation = v["generation"].as_u64().unwrap_or(task.generation + 1);
            let this = self.clone();
            tokio::spawn(async move {
                let (error, observed) = this.run(&task).await;
                let finish = Command::FinishTask {
                    id: task.meta.id,
                    generation,
                    error,
                    observed_power: observed,
                };
                if let Err(e) = this.node.propose_anywhere(&actor, None, finish).await {
                    tracing::warn!(task = task.meta.id, error = %e.message, "could not record task result");
                }
            });
        }
    }

    async fn run(&self, task: &Task) -> (Option<String>, Option<String>) {
        let bmc = match self.bmc_for(task.machine_id).await {
            Ok(b) => b,
            Err(e) => return (Some(e), None),
        };
        match work(task.kind) {
            Work::Power(action) => match self.power.execute(&bmc, action, &self.policy).await {
                Ok(o) => (None, Some(power_str(o.after))),
                Err(e) => (Some(error_text(&e)), None),
            },
            Work::Boot(dev, persistent) => match self
                .power
                .set_boot_device(&bmc, dev, persistent, &self.policy)
                .await
            {
                Ok(()) => (None, None),
                Err(e) => (Some(error_text(&e)), None),
            },
        }
    }

    /// Machines of this location with a BMC, no task pending or running, and an observed power
    /// state older than `every` (or none).
    fn stale_machines(&self, every: Duration) -> Vec<u64> {
        let a = self.node.sm.read();
        let busy: std::collections::HashSet<u64> = a
            .state
            .tasks
            .values()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
            .map(|t| t.machine_id)
            .collect();
        let now = crate::now_ms();
        let every = every.as_millis() as u64;
        let mut v: Vec<(u64, u64)> = a
            .state
            .machines
            .values()
            .filter(|m| m.machine.location == self.location && m.machine.bmc.is_some())
            .filter(|m| !busy.contains(&m.machine.meta.id))
            .map(|m| (m.machine.power_observed_at.unwrap_or(0), m.machine.meta.id))
            .filter(|(at, _)| now.saturating_sub(*at) >= every)
            .collect();
        v.sort(); // oldest observation first
        v.into_iter().map(|(_, id)| id).collect()
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
                    let actor = format!("node:{}", self.node.id);
                    let cmd = Command::ObservePower { observations };
                    if let Err(e) = self.node.propose_anywhere(&actor, None, cmd).await {
                        tracing::warn!(error = %e.message, "could not record power sync");
                    }
                }
            }
            let pause = (every / 4).clamp(Duration::from_millis(200), Duration::from_secs(15));
            tokio::time::sleep_until(started + pause).await;
        }
    }

    /// Polls the machines' power status at no more than `sync_rate` starts per second; the
    /// power controller bounds the concurrent sessions.
    async fn poll_all(self: Arc<Self>, ids: Vec<u64>) -> Vec<(u64, String)> {
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
                let r = this.power.execute(&bmc, PowerAction::Status, &policy).await;
                Some((
                    id,
                    power_str(r.map(|o| o.after).unwrap_or(PowerState::Unknown)),
                ))
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
