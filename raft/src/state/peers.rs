//! What a member may propose over the peer transport (`Propose`, issue 11 item 2). Operators'
//! writes never travel that way (a follower forwards them to the leader's API, where the
//! operator's token is checked again); the peer transport carries only the cluster-internal
//! writes that nodes make themselves, in their own name:
//!
//! - a machine that DHCP discovered (no BMC: discovery never knows one);
//! - an executor's claim of a task (for itself), the renewal of its lease and its result (of a
//!   task it holds);
//! - power states its periodic sync observed;
//! - an install callback it received (checked against the machine's deploy token by apply),
//!   in the machine's name;
//! - that it holds a verified copy of a blob, or lost one (for itself only);
//! - the start and end of a step of a workflow it holds, and that it served a deploying
//!   machine its deploy script (for itself only).
//!
//! Anything else a member sends is refused before it reaches the log, so a member's
//! certificate (a location learner's too) cannot create API tokens, change the inventory or
//! remove members. The check reads the leader's replica, outside apply; apply's own rules
//! (generations, tokens) still hold for what passes it.
//!
//! Layer: part of `state`; pure over [`State`] and [`Command`].

use super::State;
use crate::cmd::Command;

impl State {
    /// Whether member `caller` may propose `cmd` over the peer transport in the name of
    /// `actor`: its own (`node:<id>`), or for an install callback the machine's
    /// (`machine:<mac>`, the name its retries are recognized by).
    pub fn node_may_propose(&self, caller: u64, actor: &str, cmd: &Command) -> Result<(), String> {
        let own = actor == format!("node:{caller}");
        let relayed =
            matches!(cmd, Command::DeployDone { mac, .. } if actor == format!("machine:{mac}"));
        if !own && !relayed {
            return Err(format!(
                "node {caller} may not write in the name of {actor:?}"
            ));
        }
        match cmd {
            Command::CreateMachine(m) if m.bmc.is_none() => Ok(()),
            Command::ObservePower { .. } | Command::DeployDone { .. } => Ok(()),
            Command::ClaimTask { node, .. } if *node == caller => Ok(()),
            Command::ClaimTask { node, .. } => Err(format!(
                "node {caller} may not claim a task for node {node}"
            )),
            Command::RecordBlob { node, .. } | Command::DropBlobHolder { node, .. }
                if *node == caller =>
            {
                Ok(())
            }
            Command::RecordBlob { node, .. } | Command::DropBlobHolder { node, .. } => Err(
                format!("node {caller} may not speak for node {node}'s blob store"),
            ),
            Command::BootScriptServed { node, .. } if *node == caller => Ok(()),
            Command::BootScriptServed { node, .. } => Err(format!(
                "node {caller} may not report what node {node} served"
            )),
            Command::RenewTaskLease { id, .. }
            | Command::FinishTask { id, .. }
            | Command::StartStep { id, .. }
            | Command::FinishStep { id, .. } => {
                match self.tasks.get(id).map(|t| t.assignee) {
                    // Unknown task: apply refuses it.
                    None => Ok(()),
                    Some(Some(a)) if a == caller => Ok(()),
                    Some(holder) => Err(format!(
                        "node {caller} does not hold task {id} (held by {})",
                        holder.map_or("nobody".to_string(), |h| format!("node {h}"))
                    )),
                }
            }
            other => Err(format!(
                "node {caller} may not propose {} over the peer transport (operators' writes \
                 go through the API)",
                other.name()
            )),
        }
    }
}
