//! Apply handlers for tasks: create, claim (compare-and-set on the generation: one executor
//! wins) and finish (accepted only for the current generation, so a stale executor cannot
//! complete a task twice). Power results update the machine's observed power state.

use rackd_types::{ApiError, ErrorCode, Meta, Task, TaskKind, TaskState};
use serde_json::Value;

use super::{to_value, State};

impl State {
    pub(super) fn create_task(
        &mut self,
        now: u64,
        actor: &str,
        kind: TaskKind,
        machine_id: u64,
    ) -> Result<Value, ApiError> {
        let m = self
            .machines
            .get(&machine_id)
            .ok_or_else(|| ApiError::not_found(format!("machine {machine_id} not found")))?;
        if m.machine.bmc.is_none() {
            return Err(ApiError::conflict(format!(
                "machine {machine_id} has no BMC configured"
            )));
        }
        let hostname = m.machine.hostname.clone();
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
        };
        self.tasks.insert(id, t.clone());
        self.journal(
            now,
            actor,
            "task.created",
            "task",
            Some(id),
            format!("{kind:?} on {hostname}"),
        );
        to_value(&t)
    }

    pub(super) fn claim_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        node: u64,
        generation: u64,
        lease_ms: u64,
    ) -> Result<Value, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if t.state != TaskState::Pending || t.generation != generation {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                format!("task {id} is {:?} at generation {}", t.state, t.generation),
            ));
        }
        // One command at a time per machine (so per BMC), cluster-wide, in task order.
        if self.tasks.values().any(|o| {
            o.machine_id == t.machine_id
                && o.meta.id != id
                && (o.state == TaskState::Running
                    || (o.state == TaskState::Pending && o.meta.id < id))
        }) {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                format!("machine {} has an earlier or running task", t.machine_id),
            ));
        }
        t.state = TaskState::Running;
        t.assignee = Some(node);
        t.attempt += 1;
        t.generation += 1;
        t.started_at = Some(now);
        t.lease_expires_at = Some(now.saturating_add(lease_ms));
        t.meta.version += 1;
        t.meta.updated_at = now;
        self.tasks.insert(id, t.clone());
        self.journal(
            now,
            actor,
            "task.started",
            "task",
            Some(id),
            format!("task {id} attempt {} on node {node}", t.attempt),
        );
        to_value(&t)
    }

    pub(super) fn observe_power(
        &mut self,
        now: u64,
        actor: &str,
        observations: &[(u64, String)],
    ) -> Result<Value, ApiError> {
        if let Some((_, bad)) = observations
            .iter()
            .find(|(_, p)| !matches!(p.as_str(), "on" | "off" | "unknown"))
        {
            return Err(ApiError::invalid(format!("power state {bad:?}")));
        }
        let mut recorded = 0u64;
        for (id, power) in observations {
            let Some(mut m) = self.machines.get(id).cloned() else {
                continue;
            };
            let changed = m.machine.power_state.as_deref() != Some(power.as_str());
            m.machine.power_state = Some(power.clone());
            m.machine.power_observed_at = Some(now);
            self.machines.insert(*id, m);
            recorded += 1;
            if changed {
                self.journal(
                    now,
                    actor,
                    "machine.power_observed",
                    "machine",
                    Some(*id),
                    format!("machine {id} power is {power}"),
                );
            }
        }
        Ok(serde_json::json!({ "recorded": recorded }))
    }

    pub(super) fn finish_task(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        generation: u64,
        error: Option<String>,
        observed_power: Option<String>,
    ) -> Result<Value, ApiError> {
        let mut t = self.tasks.fetch(id, "task")?;
        if t.state != TaskState::Running || t.generation != generation {
            return Err(ApiError::new(
                ErrorCode::PreconditionFailed,
                format!(
                    "stale result for task {id} (generation {generation}, current {})",
                    t.generation
                ),
            ));
        }
        t.state = if error.is_none() {
            TaskState::Succeeded
        } else {
            TaskState::Failed
        };
        t.error = error;
        t.observed_power = observed_power.clone();
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
        self.tasks.insert(id, t.clone());
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
        to_value(&t)
    }

    /// Pending tasks (for executors), oldest first.
    pub fn pending_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks
            .values()
            .filter(|t| t.state == TaskState::Pending)
    }
}
