//! The leader moves the cluster to this build's apply rules by committing `AdoptRules`, so
//! every node changes the rules it decides entries by at the same log index (see
//! `rackd_raft::state::rules`; a node that decided by its own build's rules from whenever it
//! restarted would diverge from the others).
//!
//! Today only a state left by the format-1 migration applies under older rules. A cluster of
//! format-1 builds cannot take format-2 members (docs/architecture.md, "Upgrades"), so once a
//! format-2 build leads, every member knows format 2's rules. A later rules version must also
//! wait until every member reports that its build knows them: members do not report that yet.
//!
//! Layer: cluster; uses only the [`Cluster`] contract.

use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_raft::state::ApplyRules;

use super::Cluster;

/// Check every `tick`; stops only when its task is aborted.
pub async fn run(node: Arc<dyn Cluster>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        step(node.as_ref()).await;
    }
}

/// One check: on the leader, when the state decides entries by older rules than this build's,
/// propose this build's. Returns whether `AdoptRules` was committed.
pub async fn step(node: &dyn Cluster) -> bool {
    let was = node.state().meta.rules;
    if !node.is_leader() || was >= ApplyRules::CURRENT {
        return false;
    }
    let actor = format!("node:{}", node.id());
    let cmd = Command::AdoptRules {
        rules: ApplyRules::CURRENT,
    };
    match node.propose(&actor, None, cmd).await {
        Ok(_) => {
            tracing::info!(
                %was,
                now = %ApplyRules::CURRENT,
                "the cluster decides entries by this build's apply rules from now on"
            );
            true
        }
        Err(e) => {
            tracing::info!(error = %e.message, "apply rules not adopted yet; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::FakeCluster;

    fn adopts(c: &FakeCluster) -> usize {
        c.log()
            .iter()
            .filter(|r| matches!(r.cmd, Command::AdoptRules { .. }))
            .count()
    }

    #[tokio::test]
    async fn the_leader_adopts_this_builds_rules_once_and_a_follower_never() {
        let c = FakeCluster::new(1, 1_000);
        c.set_apply_rules(ApplyRules::Format1);
        c.set_leading(false);
        assert!(!step(c.as_ref()).await, "a follower proposes nothing");
        assert_eq!(adopts(&c), 0);
        c.set_leading(true);
        assert!(step(c.as_ref()).await);
        assert_eq!(c.state().meta.rules, ApplyRules::CURRENT);
        assert!(!step(c.as_ref()).await, "nothing more to adopt");
        assert_eq!(adopts(&c), 1);
    }

    #[tokio::test]
    async fn a_state_on_current_rules_proposes_nothing() {
        let c = FakeCluster::new(1, 1_000);
        assert!(!step(c.as_ref()).await);
        assert_eq!(adopts(&c), 0);
    }
}
