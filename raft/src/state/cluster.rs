//! Apply handlers for cluster metadata: bootstrap, join tokens (stored hashed, expiring, one
//! node each), node id allocation (monotonic, never reused) and API tokens (stored hashed).

use crate::cmd::Applied;
use rackd_types::{ApiError, ApiTokenView, ErrorCode, JoinTokenView};

use super::{State, StoredApiToken, StoredJoinToken};

/// How long a join token is kept after it expired.
pub const JOIN_TOKEN_RETAIN_MS: u64 = 7 * 24 * 3600 * 1000;

/// The node id of the node that bootstraps a cluster.
pub const BOOTSTRAP_NODE_ID: u64 = 1;

impl State {
    pub(super) fn bootstrap(
        &mut self,
        now: u64,
        actor: &str,
        cluster_id: &str,
        admin_hash: &str,
    ) -> Result<Applied, ApiError> {
        if !self.meta.cluster_id.is_empty() {
            return Err(ApiError::conflict("cluster already bootstrapped"));
        }
        // Everything that can fail comes before the first mutation: an error leaves no trace.
        if admin_hash.len() != 64 {
            return Err(ApiError::invalid("token hash must be 64 hex characters"));
        }
        if cluster_id.is_empty() {
            return Err(ApiError::invalid("cluster id must not be empty"));
        }
        self.meta.cluster_id = cluster_id.to_string();
        self.meta.next_node_id = BOOTSTRAP_NODE_ID + 1;
        self.meta_dirty = true;
        self.create_api_token(now, actor, "admin", admin_hash)?;
        self.journal(
            now,
            actor,
            "cluster.bootstrapped",
            "cluster",
            None,
            format!("cluster {cluster_id} bootstrapped"),
        );
        Ok(Applied::Bootstrapped {
            cluster_id: cluster_id.to_string(),
        })
    }

    pub(super) fn create_join_token(
        &mut self,
        now: u64,
        actor: &str,
        hash: &str,
        ttl_ms: u64,
        description: &str,
    ) -> Result<Applied, ApiError> {
        if hash.len() != 64 {
            return Err(ApiError::invalid("token hash must be 64 hex characters"));
        }
        if self.idx.join_token_by_hash.contains_key(hash) {
            return Err(ApiError::conflict("join token already exists"));
        }
        self.prune_join_tokens(now);
        let id = self.alloc_id();
        let view = JoinTokenView {
            id,
            created_at: now,
            expires_at: now.saturating_add(ttl_ms),
            used_by_node: None,
            description: description.to_string(),
        };
        self.idx.join_token_by_hash.insert(hash.to_string(), id);
        self.join_tokens.insert(
            id,
            StoredJoinToken {
                view: view.clone(),
                hash: hash.to_string(),
                joined_api: None,
                joined_peer: None,
            },
        );
        self.journal(
            now,
            actor,
            "token.join_created",
            "join_token",
            Some(id),
            format!("join token {id} created"),
        );
        Ok(Applied::JoinToken(view))
    }

    /// Join tokens are kept for [`JOIN_TOKEN_RETAIN_MS`] after they expire (a used one keeps
    /// refusing replays meanwhile; after that it is unknown, which refuses them too), so the
    /// table stays bounded. Deterministic: leader time only.
    fn prune_join_tokens(&mut self, now: u64) {
        let cutoff = now.saturating_sub(JOIN_TOKEN_RETAIN_MS);
        let old: Vec<(u64, String)> = self
            .join_tokens
            .iter()
            .filter(|(_, t)| t.view.expires_at < cutoff)
            .map(|(id, t)| (*id, t.hash.clone()))
            .collect();
        for (id, hash) in old {
            self.join_tokens.remove(&id);
            self.idx.join_token_by_hash.remove(&hash);
        }
    }

    pub(super) fn allocate_node_id(
        &mut self,
        now: u64,
        actor: &str,
        hash: &str,
        api: &str,
        peer: &str,
    ) -> Result<Applied, ApiError> {
        let reject = |m: &str| ApiError::new(ErrorCode::JoinRejected, m.to_string());
        let id = *self
            .idx
            .join_token_by_hash
            .get(hash)
            .ok_or_else(|| reject("unknown join token"))?;
        let mut tok = self
            .join_tokens
            .get(&id)
            .cloned()
            .ok_or_else(|| reject("unknown join token"))?;
        if let Some(node) = tok.view.used_by_node {
            // Retrying an interrupted join from the same addresses gets the same id back.
            if tok.joined_api.as_deref() == Some(api) && tok.joined_peer.as_deref() == Some(peer) {
                return Ok(Applied::NodeAllocated {
                    node_id: node,
                    cluster_id: self.meta.cluster_id.clone(),
                });
            }
            return Err(reject("join token already used by another node"));
        }
        if now >= tok.view.expires_at {
            return Err(reject("join token expired"));
        }
        if self.meta.next_node_id <= BOOTSTRAP_NODE_ID {
            self.meta.next_node_id = BOOTSTRAP_NODE_ID + 1;
        }
        let node = self.meta.next_node_id;
        self.meta.next_node_id += 1;
        self.meta_dirty = true;
        tok.view.used_by_node = Some(node);
        tok.joined_api = Some(api.to_string());
        tok.joined_peer = Some(peer.to_string());
        self.join_tokens.insert(id, tok);
        self.journal(
            now,
            actor,
            "cluster.node_id_allocated",
            "node",
            Some(node),
            format!("node id {node} allocated to api={api} peer={peer} (join token {id})"),
        );
        Ok(Applied::NodeAllocated {
            node_id: node,
            cluster_id: self.meta.cluster_id.clone(),
        })
    }

    pub(super) fn create_api_token(
        &mut self,
        now: u64,
        actor: &str,
        name: &str,
        hash: &str,
    ) -> Result<Applied, ApiError> {
        if name.is_empty() || name.len() > 64 {
            return Err(ApiError::invalid("token name must be 1..=64 characters"));
        }
        if hash.len() != 64 {
            return Err(ApiError::invalid("token hash must be 64 hex characters"));
        }
        if self.idx.api_token_by_hash.contains_key(hash) {
            return Err(ApiError::conflict("API token already exists"));
        }
        let id = self.alloc_id();
        let view = ApiTokenView {
            id,
            name: name.to_string(),
            created_at: now,
        };
        self.idx.api_token_by_hash.insert(hash.to_string(), id);
        self.api_tokens.insert(
            id,
            StoredApiToken {
                view: view.clone(),
                hash: hash.to_string(),
            },
        );
        self.journal(
            now,
            actor,
            "token.api_created",
            "api_token",
            Some(id),
            format!("API token {name:?} created"),
        );
        Ok(Applied::ApiToken(view))
    }
}
