//! Reads: [`ClusterHandle::linearize`] makes the next read of the local replica linearizable
//! (ReadIndex through the leader, then wait until the replica has applied it).

use openraft::ReadPolicy;
use rackd_types::ApiError;

use super::ClusterHandle;

impl ClusterHandle {
    /// Make the next local read linearizable: obtain a ReadIndex from the leader (or confirm
    /// our own leadership) and wait until the local state machine has applied it.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        let timeout = self.write_timeout;
        let (leader, info) = self.wait_leader(timeout).await.ok_or_else(|| {
            ApiError::unavailable("no leader: cannot serve a linearizable read (use ?stale=true)")
        })?;
        let index = if leader == self.id {
            let r = tokio::time::timeout(
                timeout,
                self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| ApiError::unavailable("leadership not confirmed in time"))?
            .map_err(|e| ApiError::unavailable(format!("leadership not confirmed: {e}")))?;
            r.log_id().index()
        } else {
            self.net
                .read_index(leader, &info.peer, timeout)
                .await
                .map_err(|e| {
                    ApiError::unavailable(format!("read index from leader {leader}: {e}"))
                })?
        };
        if !self.sm.wait_applied(index, timeout).await {
            return Err(ApiError::unavailable(format!(
                "local replica did not reach index {index} in time"
            )));
        }
        Ok(())
    }
}
