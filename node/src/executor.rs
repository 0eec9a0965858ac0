//! Task executor of a location node: takes pending tasks of machines in its location from its
//! replica, claims them through the leader (compare-and-set on the generation, so one node
//! wins), runs them through [`rackd_hwctl::PowerController`] and records the result.
//!
//! Drivers: `sim`, a simulated BMC whose chassis starts each task in the machine's last
//! observed (replicated) power state, so every node of the location simulates the same
//! machine (for tests and demos). The IPMI driver is not implemented yet: such tasks fail with
//! a clear error. Only one task per machine runs at a time, cluster-wide (enforced when a task
//! is claimed).

use std::sync::Arc;
use std::time::Duration;

use rackd_hwctl::{PowerAction, PowerController, PowerState, SimBmc, VerifyPolicy};
use rackd_raft::cmd::Command;
use rackd_types::{Task, TaskKind};

use crate::runtime::Node;

const LEASE_MS: u64 = 120_000;

fn action(kind: TaskKind) -> PowerAction {
    match kind {
        TaskKind::PowerOn => PowerAction::On,
        TaskKind::PowerOff => PowerAction::Off,
        TaskKind::PowerCycle => PowerAction::Cycle,
        TaskKind::PowerReset => PowerAction::Reset,
        TaskKind::PowerStatus => PowerAction::Status,
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

pub struct Executor {
    node: Arc<Node>,
    location: String,
    power: Arc<PowerController>,
    policy: VerifyPolicy,
}

impl Executor {
    pub fn new(node: Arc<Node>, location: String) -> Arc<Self> {
        Arc::new(Self {
            node,
            location,
            power: Arc::new(PowerController::new(32)),
            policy: VerifyPolicy {
                timeout: Duration::from_secs(60),
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                retries: 3,
            },
        })
    }

    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.clone().tick().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    async fn tick(self: Arc<Self>) {
        let mine: Vec<(Task, String)> = {
            let a = self.node.sm.read();
            a.state
                .pending_tasks()
                .filter_map(|t| {
                    let m = a.state.machines.get(&t.machine_id)?;
                    (m.machine.location == self.location).then(|| {
                        (
                            t.clone(),
                            m.machine
                                .bmc
                                .as_ref()
                                .map(|b| b.driver.clone())
                                .unwrap_or_default(),
                        )
                    })
                })
                .collect()
        };
        for (task, driver) in mine {
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
                let (error, observed) = this.run(&task, &driver).await;
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

    async fn run(&self, task: &Task, driver: &str) -> (Option<String>, Option<String>) {
        match driver {
            "sim" => {
                let on = {
                    let a = self.node.sm.read();
                    a.state
                        .machines
                        .get(&task.machine_id)
                        .is_some_and(|m| m.machine.power_state.as_deref() == Some("on"))
                };
                let bmc = Arc::new(SimBmc::new(&format!("sim-{}", task.machine_id), on));
                match self
                    .power
                    .execute(&*bmc, action(task.kind), &self.policy)
                    .await
                {
                    Ok(o) => (None, Some(power_str(o.after))),
                    Err(e) => (
                        Some(format!(
                            "{e}: {}",
                            std::error::Error::source(&e)
                                .map(|s| s.to_string())
                                .unwrap_or_default()
                        )),
                        None,
                    ),
                }
            }
            other => (
                Some(format!(
                    "BMC driver {other:?} is not implemented yet (only \"sim\")"
                )),
                None,
            ),
        }
    }
}
