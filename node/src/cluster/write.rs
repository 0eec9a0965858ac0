//! Writes: [`ClusterHandle::propose`] on the leader (the one place a request is stamped with
//! the leader's clock) and [`ClusterHandle::propose_anywhere`] for cluster-internal writes from
//! any node (through the leader's `Propose` RPC).

use std::time::Duration;

use openraft::errors::{ClientWriteError, ForwardReason, ForwardToLeader, RaftError};
use rackd_raft::cmd::{Applied, Command, Request};
use rackd_raft::TypeConfig;
use rackd_types::{ApiError, ErrorCode, RETRY_SAME_KEY};

use super::ClusterHandle;

/// Milliseconds since the Unix epoch (used only to stamp proposals on the leader).
pub fn now_ms() -> u64 {
    epoch_ms(std::time::SystemTime::now())
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub fn epoch_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ClusterHandle {
    /// Propose a command on this node, which must be the leader. Time is stamped here.
    pub async fn propose(
        &self,
        actor: &str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> Result<Applied, ApiError> {
        self.sm.read().state.admits_proposal(&cmd)?;
        let req = Request {
            time_ms: now_ms(),
            actor: actor.to_string(),
            idempotency_key,
            cmd,
        };
        let r = match tokio::time::timeout(self.write_timeout, self.raft.client_write(req)).await {
            Err(_) => Err(ApiError::unavailable(format!(
                "write not confirmed by a quorum within {}s; it is not reported as done: \
                 {RETRY_SAME_KEY}",
                self.write_timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(write_error(&e)),
            Ok(Ok(resp)) => resp.data.0,
        };
        if let Err(e) = &r {
            crate::metrics::global().proposal_failed(e.code.as_str());
        }
        r
    }

    /// Propose a command wherever the leader is (cluster-internal writes, e.g. discovery):
    /// locally when leading, else through the leader's `Propose` RPC. Retried until the write
    /// timeout; use an idempotency key so a retry is applied at most once.
    pub async fn propose_anywhere(
        &self,
        actor: &str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> Result<Applied, ApiError> {
        let deadline = tokio::time::Instant::now() + self.write_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((leader, info)) = self.wait_leader(remaining).await else {
                return Err(ApiError::no_leader());
            };
            let err = if leader == self.id {
                match self
                    .propose(actor, idempotency_key.clone(), cmd.clone())
                    .await
                {
                    Err(e) if e.code == ErrorCode::Unavailable => e.message,
                    other => return other,
                }
            } else {
                let req = rackd_raft::network::ProposeRequest {
                    actor: actor.to_string(),
                    idempotency_key: idempotency_key.clone(),
                    cmd: cmd.clone(),
                };
                match self.net.propose(leader, &info.peer, &req, remaining).await {
                    Ok(resp) => return resp.0,
                    Err(e) => e,
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::unavailable(format!("write not confirmed: {err}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a failed `client_write` means to the user, in our words (openraft's own texts, such as
/// "has to forward request to: None, None", are not for operators). Every case is a 503: the
/// write was not applied, or its outcome is unknown; a retry with the same key is safe. The
/// words "not accepted" are kept for writes that were certainly not applied (clients, and the
/// robustness checker, rely on that); an unknown outcome never says them.
pub fn write_error(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ApiError {
    match e {
        // Refused before its entry was appended (openraft): certainly not applied.
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match why_refused(f) {
            None => ApiError::no_leader(),
            Some(why) => {
                ApiError::unavailable(format!("{why}: write not accepted; {RETRY_SAME_KEY}"))
            }
        },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
            ApiError::unavailable(format!(
                "the leader changed during the write and its outcome is unknown; {RETRY_SAME_KEY}"
            ))
        }
        // The entry may have been appended and replicated before Raft stopped (a shutdown
        // mid-write): the outcome is unknown, never "not accepted".
        RaftError::Fatal(f) => ApiError::unavailable(format!(
            "this node's Raft has stopped ({f}); the outcome of the write is unknown: \
             {RETRY_SAME_KEY}"
        )),
        RaftError::APIError(other) => {
            ApiError::unavailable(format!("write not confirmed ({other}); {RETRY_SAME_KEY}"))
        }
    }
}

const NO_LEADER: &str = "no leader at the moment (election in progress)";

/// Why this node refused a proposal before appending it, when it is not the plain "no leader
/// known" case (`None`: [`ApiError::no_leader`]). A leader whose lease lapsed (it has not heard
/// back from a majority of voters within `election_timeout_max`) is still the leader, so
/// saying "election in progress" would send the operator looking in the wrong place.
fn why_refused(f: &ForwardToLeader<TypeConfig>) -> Option<String> {
    match (f.reason, f.leader_id) {
        (ForwardReason::LeaseExpired, _) => Some(
            "this leader has not heard back from a majority of voters within its lease \
             (peers unreachable, or their round trip is longer than the heartbeat interval)"
                .to_string(),
        ),
        (ForwardReason::LeadershipTransfer, Some(l)) => {
            Some(format!("leadership is being handed to node {l}"))
        }
        (_, Some(l)) => Some(format!("leadership moved to node {l}")),
        (_, None) => None,
    }
}

/// A membership change (join's learner and voter steps, member removal) that Raft refused or
/// did not confirm, in our words. These carry no idempotency key: the join is safe to repeat
/// as a whole, and a removal is checked against the membership before it is retried.
pub fn membership_error(
    what: &str,
    e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            let why = why_refused(f).unwrap_or_else(|| NO_LEADER.to_string());
            ApiError::unavailable(format!("{why}: {what} not done; retry"))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ApiError::unavailable(format!("{what} refused by Raft: {c}; retry"))
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ApiError::unavailable(
            format!("the leader changed during the {what}; its outcome is unknown; retry"),
        ),
        RaftError::Fatal(f) => ApiError::unavailable(format!(
            "this node's Raft has stopped ({f}) during the {what}; its outcome is unknown; retry"
        )),
        RaftError::APIError(other) => {
            ApiError::unavailable(format!("{what} not confirmed ({other}); retry"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(leader_id: Option<u64>) -> RaftError<TypeConfig, ClientWriteError<TypeConfig>> {
        forward_because(ForwardReason::NotLeader, leader_id)
    }

    fn forward_because(
        reason: ForwardReason,
        leader_id: Option<u64>,
    ) -> RaftError<TypeConfig, ClientWriteError<TypeConfig>> {
        let mut f = ForwardToLeader::<TypeConfig>::empty();
        f.leader_id = leader_id;
        f.reason = reason;
        RaftError::APIError(ClientWriteError::ForwardToLeader(f))
    }

    #[test]
    fn elections_are_told_in_our_words_with_the_retry_rule() {
        let cases = [
            (
                forward(None),
                "no leader at the moment (election in progress)",
            ),
            (forward(Some(3)), "leadership moved to node 3"),
            (
                forward_because(ForwardReason::LeaseExpired, None),
                "not heard back from a majority of voters within its lease",
            ),
            (
                forward_because(ForwardReason::LeadershipTransfer, Some(2)),
                "being handed to node 2",
            ),
            (
                RaftError::APIError(ClientWriteError::LogEntryDiscarded(ForwardToLeader::empty())),
                "outcome is unknown",
            ),
            (
                RaftError::Fatal(openraft::errors::Fatal::Stopped),
                "outcome of the write is unknown",
            ),
        ];
        for (e, want) in cases {
            // "not accepted" means certainly not applied (refused before the entry was
            // appended); an unknown outcome (the entry may have been appended) never says it.
            let unknown = !matches!(e, RaftError::APIError(ClientWriteError::ForwardToLeader(_)));
            let a = write_error(&e);
            assert_eq!(a.code, ErrorCode::Unavailable);
            assert!(a.message.contains(want), "{:?}", a.message);
            assert!(a.message.contains(RETRY_SAME_KEY), "{:?}", a.message);
            // openraft's internal wording never reaches the user.
            assert!(!a.message.contains("has to forward"), "{:?}", a.message);
            assert!(!a.message.contains("None"), "{:?}", a.message);
            assert_eq!(
                a.message.contains("not accepted"),
                !unknown,
                "{:?}",
                a.message
            );
        }
    }

    #[test]
    fn membership_changes_are_told_in_our_words() {
        let cases = [
            (
                forward(None),
                "no leader at the moment (election in progress)",
            ),
            (forward(Some(2)), "leadership moved to node 2"),
            (
                forward_because(ForwardReason::LeaseExpired, None),
                "not heard back from a majority of voters within its lease",
            ),
            (
                RaftError::APIError(ClientWriteError::LogEntryDiscarded(ForwardToLeader::empty())),
                "outcome is unknown",
            ),
            (
                RaftError::Fatal(openraft::errors::Fatal::Stopped),
                "outcome is unknown",
            ),
        ];
        for (e, want) in cases {
            let a = membership_error("promotion to voter", &e);
            assert_eq!(a.code, ErrorCode::Unavailable);
            assert!(a.message.contains(want), "{:?}", a.message);
            assert!(a.message.contains("promotion to voter"), "{:?}", a.message);
            assert!(!a.message.contains("has to forward"), "{:?}", a.message);
            assert!(!a.message.contains("None"), "{:?}", a.message);
            // No key travels with a membership change: never point the user at one.
            assert!(!a.message.contains("Idempotency-Key"), "{:?}", a.message);
        }
    }
}
