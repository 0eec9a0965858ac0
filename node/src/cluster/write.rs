//! Writes: [`ClusterHandle::propose`] on the leader (the one place a request is stamped with
//! the leader's clock) and [`ClusterHandle::propose_anywhere`] for cluster-internal writes from
//! any node (through the leader's `Propose` RPC).

use std::time::Duration;

use rackd_raft::cmd::{Applied, Command, Request};
use rackd_types::{ApiError, ErrorCode};

use super::ClusterHandle;

/// Milliseconds since the Unix epoch (used only to stamp proposals on the leader).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
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
        let req = Request {
            time_ms: now_ms(),
            actor: actor.to_string(),
            idempotency_key,
            cmd,
        };
        match tokio::time::timeout(self.write_timeout, self.raft.client_write(req)).await {
            Err(_) => Err(ApiError::unavailable(format!(
                "write not confirmed by a quorum within {}s; it is not reported as done",
                self.write_timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(ApiError::unavailable(format!("write not confirmed: {e}"))),
            Ok(Ok(resp)) => resp.data.0,
        }
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
                return Err(ApiError::unavailable("no leader"));
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
