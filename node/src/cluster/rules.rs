//! The leader moves the cluster to this build's apply rules by committing `AdoptRules`, so
//! every node changes the rules it decides entries by at the same log index (see
//! `rackd_raft::state::rules`; a node that decided by its own build's rules from whenever it
//! restarted would diverge from the others).
//!
//! The leader adopts this build's rules only once every member (voters and learners) reports,
//! in its membership entry, a build that knows them ([`NodeInfo::known_rules`]; members report
//! on start, see `membership::readvertise`): a member of an older build could not decode the
//! `AdoptRules` entry, nor the commands that need the new rules. A rolling upgrade therefore
//! moves the cluster to the new rules when its last member restarts on the new build.
//!
//! Layer: cluster; uses only the [`Cluster`] contract.

use std::sync::Arc;
use std::time::Duration;

use rackd_raft::cmd::Command;
use rackd_raft::state::ApplyRules;
use rackd_raft::NodeInfo;

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
    let lagging = lagging_members(&node.status().members, ApplyRules::CURRENT);
    if !lagging.is_empty() {
        tracing::debug!(
            ?lagging,
            "apply rules not adopted: these members' builds do not know them yet"
        );
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

/// The members whose builds do not know `rules`, with the rules they know.
pub fn lagging_members(
    members: &std::collections::BTreeMap<u64, NodeInfo>,
    rules: ApplyRules,
) -> Vec<(u64, u32)> {
    members
        .iter()
        .filter(|(_, i)| i.known_rules() < rules.number())
        .map(|(id, i)| (*id, i.known_rules()))
        .collect()
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

    /// A rolling upgrade: while one member (here a learner) runs a build that did not report
    /// its rules, the leader keeps the old rules and refuses the commands that need the new
    /// ones; once that member reports this build's rules, the leader adopts them and the
    /// commands go through.
    #[tokio::test]
    async fn the_leader_waits_until_every_member_knows_the_rules() {
        let c = FakeCluster::new(1, 1_000);
        c.set_apply_rules(ApplyRules::Format2);
        let old_build = NodeInfo {
            apply_rules: 0,
            ..NodeInfo::new("127.0.0.1:8002", "127.0.0.1:9002")
        };
        c.add_node(2, old_build, true).await.unwrap();
        assert_eq!(
            lagging_members(&c.status().members, ApplyRules::CURRENT),
            [(2, 2)]
        );
        assert!(!step(c.as_ref()).await, "member 2 cannot decode rules 3");
        assert_eq!(adopts(&c), 0);
        let revoke = Command::RevokeJoinToken { id: 1 };
        let e = c.propose("admin", None, revoke.clone()).await.unwrap_err();
        assert!(e.message.contains("needs apply rules 3"), "{}", e.message);
        assert_eq!(c.log().len(), 0, "refused before the log");

        let upgraded = NodeInfo::new("127.0.0.1:8002", "127.0.0.1:9002");
        c.add_node(2, upgraded, true).await.unwrap();
        assert!(step(c.as_ref()).await);
        assert_eq!(c.state().meta.rules, ApplyRules::CURRENT);
        let e = c.propose("admin", None, revoke).await.unwrap_err();
        assert!(
            e.message.contains("join token 1"),
            "now decided by apply: {}",
            e.message
        );
    }

    #[tokio::test]
    async fn a_state_on_current_rules_proposes_nothing() {
        let c = FakeCluster::new(1, 1_000);
        assert!(!step(c.as_ref()).await);
        assert_eq!(adopts(&c), 0);
    }
}
