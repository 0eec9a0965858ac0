//! Apply handlers for cluster metadata: bootstrap, join tokens (stored hashed, expiring, one
//! node each), node id allocation (monotonic, never reused) and API tokens (stored hashed).

use crate::cmd::Applied;
use rackd_types::{ApiError, ApiRole, ApiTokenView, ErrorCode, JoinTokenView};

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
        self.create_api_token(now, actor, "admin", admin_hash, ApiRole::Admin, None)?;
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
        location: Option<&str>,
    ) -> Result<Applied, ApiError> {
        if let Some(l) = location {
            super::inventory::check_name("location", l)?;
        }
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
            location: location.map(str::to_string),
        };
        self.idx.join_token_by_hash.insert(hash.to_string(), id);
        self.join_tokens.insert(
            id,
            StoredJoinToken {
                view: view.clone(),
                hash: hash.to_string(),
                joined_api: None,
                joined_peer: None,
                joined: false,
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

    /// Join phase 1's rule, shared by apply and by the API (which refuses from its replica
    /// before a junk join costs a Raft entry): `Ok(Some(node))` for a retry of the join that
    /// consumed the token (same addresses), `Ok(None)` when the token may allocate a new id.
    pub fn join_token_admits(
        &self,
        hash: &str,
        api: &str,
        peer: &str,
        now: u64,
    ) -> Result<Option<u64>, ApiError> {
        let reject = |m: &str| ApiError::new(ErrorCode::JoinRejected, m.to_string());
        let tok = self
            .join_token_by_hash(hash)
            .ok_or_else(|| reject("unknown join token"))?;
        match tok.view.used_by_node {
            Some(node) if self.is_removed_node(node) => Err(reject(&format!(
                "node {node}, admitted with this join token, was removed from the cluster; \
                 create a new join token"
            ))),
            // Retrying an interrupted join from the same addresses gets the same id back.
            Some(node)
                if tok.joined_api.as_deref() == Some(api)
                    && tok.joined_peer.as_deref() == Some(peer) =>
            {
                Ok(Some(node))
            }
            Some(_) => Err(reject("join token already used by another node")),
            None if now >= tok.view.expires_at => Err(reject("join token expired")),
            None => Ok(None),
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
        if let Some(node) = self.join_token_admits(hash, api, peer, now)? {
            return Ok(Applied::NodeAllocated {
                node_id: node,
                cluster_id: self.meta.cluster_id.clone(),
            });
        }
        let unknown = || ApiError::new(ErrorCode::JoinRejected, "unknown join token");
        let id = *self.idx.join_token_by_hash.get(hash).ok_or_else(unknown)?;
        let mut tok = self.join_tokens.get(&id).cloned().ok_or_else(unknown)?;
        if self.meta.next_node_id <= BOOTSTRAP_NODE_ID {
            self.meta.next_node_id = BOOTSTRAP_NODE_ID + 1;
        }
        let node = self.meta.next_node_id;
        self.meta.next_node_id += 1;
        self.meta_dirty = true;
        tok.view.used_by_node = Some(node);
        if let Some(l) = &tok.view.location {
            self.meta.node_sites.insert(node, l.clone());
        }
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

    pub(super) fn complete_join(
        &mut self,
        now: u64,
        actor: &str,
        hash: &str,
        node: u64,
    ) -> Result<Applied, ApiError> {
        let reject = |m: String| ApiError::new(ErrorCode::JoinRejected, m);
        let id = *self
            .idx
            .join_token_by_hash
            .get(hash)
            .ok_or_else(|| reject("unknown join token".into()))?;
        let mut tok = self
            .join_tokens
            .get(&id)
            .cloned()
            .ok_or_else(|| reject("unknown join token".into()))?;
        if tok.view.used_by_node != Some(node) {
            return Err(reject(format!("join token {id} did not admit node {node}")));
        }
        if self.is_removed_node(node) {
            return Err(reject(format!("node {node} was removed from the cluster")));
        }
        if !tok.joined {
            tok.joined = true;
            self.join_tokens.insert(id, tok.clone());
            self.journal(
                now,
                actor,
                "cluster.node_joined",
                "node",
                Some(node),
                format!("node {node} completed its join; join token {id} is burnt"),
            );
        }
        Ok(Applied::JoinToken(tok.view))
    }

    pub(super) fn mark_node_removed(
        &mut self,
        now: u64,
        actor: &str,
        node: u64,
    ) -> Result<Applied, ApiError> {
        if self.meta.removed_nodes.insert(node) {
            self.meta_dirty = true;
            self.journal(
                now,
                actor,
                "cluster.member_removed",
                "node",
                Some(node),
                format!("node {node} removed; its id is never admitted again"),
            );
        }
        self.drop_holder_everywhere(node);
        Ok(Applied::Done)
    }

    pub(super) fn create_api_token(
        &mut self,
        now: u64,
        actor: &str,
        name: &str,
        hash: &str,
        role: ApiRole,
        expires_at: Option<u64>,
    ) -> Result<Applied, ApiError> {
        if name.is_empty() || name.len() > 64 {
            return Err(ApiError::invalid("token name must be 1..=64 characters"));
        }
        if self.meta.rules.validates_input() {
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._@".contains(c))
            {
                return Err(ApiError::invalid(format!(
                    "token name {name:?} may only contain letters, digits, '-', '.', '_', '@'"
                )));
            }
            if let Some(t) = self.api_tokens.values().find(|t| t.view.name == name) {
                return Err(ApiError::conflict(format!(
                    "API token {} is already named {name:?} (revoke it, or pick another name)",
                    t.view.id
                )));
            }
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
            role,
            expires_at,
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
            format!("API token {name:?} created ({})", role.as_str()),
        );
        Ok(Applied::ApiToken(view))
    }

    /// Whether node `node` may hold the key of location `location_id`'s secrets: a node
    /// bound to that location by its join token. (Voters derive every key from the CA key and
    /// never ask.)
    pub fn node_may_hold_location_key(&self, node: u64, location_id: u64) -> Result<(), String> {
        let Some(site) = self.meta.node_sites.get(&node) else {
            return Err(format!(
                "node {node} is bound to no location (its join token named none): it gets no \
                 location's key"
            ));
        };
        match self.locations.get(&location_id) {
            Some(l) if l.name == *site => Ok(()),
            _ => Err(format!(
                "node {node} is bound to location {site:?}, not to location {location_id}"
            )),
        }
    }

    /// `RenewCerts`: every node renews a certificate issued before now (each node asks for its
    /// own: its key never leaves it).
    pub(super) fn renew_certs(&mut self, now: u64, actor: &str) -> Result<Applied, ApiError> {
        self.meta.certs_renew_before_ms = now;
        self.meta_dirty = true;
        self.journal(
            now,
            actor,
            "cluster.certs_renewal_requested",
            "cluster",
            None,
            "every node renews its certificate".to_string(),
        );
        Ok(Applied::Done)
    }

    /// Delete join token `id`: neither join phase admits it from then on.
    pub(super) fn revoke_join_token(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
    ) -> Result<Applied, ApiError> {
        let tok = self
            .join_tokens
            .remove(&id)
            .ok_or_else(|| ApiError::not_found(format!("join token {id} not found")))?;
        self.idx.join_token_by_hash.remove(&tok.hash);
        let used = match tok.view.used_by_node {
            Some(n) => format!(" (it had admitted node {n})"),
            None => String::new(),
        };
        self.journal(
            now,
            actor,
            "token.join_revoked",
            "join_token",
            Some(id),
            format!("join token {id} revoked{used}"),
        );
        Ok(Applied::Done)
    }

    /// Delete API token `id`; it is refused from then on. The last admin token that does not
    /// expire stays: without it nobody could administer the cluster.
    pub(super) fn revoke_api_token(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
    ) -> Result<Applied, ApiError> {
        let tok = self
            .api_tokens
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("API token {id} not found")))?;
        let lasting_admin = |v: &ApiTokenView| v.role == ApiRole::Admin && v.expires_at.is_none();
        if lasting_admin(&tok.view)
            && !self
                .api_tokens
                .values()
                .any(|t| t.view.id != id && lasting_admin(&t.view))
        {
            return Err(ApiError::conflict(
                "this is the last admin token without an expiry; create another one first",
            ));
        }
        self.api_tokens.remove(&id);
        self.idx.api_token_by_hash.remove(&tok.hash);
        self.journal(
            now,
            actor,
            "token.api_revoked",
            "api_token",
            Some(id),
            format!("API token {:?} revoked", tok.view.name),
        );
        Ok(Applied::Done)
    }
}
