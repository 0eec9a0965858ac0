//! [`NodePeerAuth`]: this node's answer to the peer transport's questions (`rackd_raft::
//! peer_tls::PeerAuth`): its TLS configurations from [`NodeTls`], which member a certificate
//! names ([`super::pki::peer_node_id`]), whether the cluster removed that node (from the local
//! replica, so a removal stops the removed node's connections as soon as this node has applied
//! it), and keeping the CA key the leader hands over before promoting this node to voter.
//!
//! Layer: part of `cluster`; depends on `pki` and the storage crate's state machine handle.

use std::sync::Arc;

use rackd_raft::peer_tls::PeerAuth;
use rackd_raft::NodeId;
use rackd_storage::StateMachineStore;
use rustls::pki_types::{CertificateDer, ServerName};

use super::pki::{peer_node_id, NodeTls, Pki, PkiError};

pub struct NodePeerAuth {
    tls: NodeTls,
    pki: Pki,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    sm: StateMachineStore,
}

impl NodePeerAuth {
    pub fn new(tls: NodeTls, pki: Pki, sm: StateMachineStore) -> Result<Self, PkiError> {
        Ok(NodePeerAuth {
            pki,
            server: tls.server_config()?,
            client: tls.client_config()?,
            tls,
            sm,
        })
    }
}

impl PeerAuth for NodePeerAuth {
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    fn identify(&self, cert: &CertificateDer<'_>) -> Option<NodeId> {
        peer_node_id(cert, &self.tls.cluster_id)
    }

    fn server_name(&self, node: NodeId) -> ServerName<'static> {
        self.tls.server_name(node)
    }

    fn admitted(&self, node: NodeId) -> bool {
        !self.sm.read().state.is_removed_node(node)
    }

    fn may_propose(
        &self,
        caller: NodeId,
        actor: &str,
        cmd: &rackd_raft::cmd::Command,
    ) -> Result<(), String> {
        self.sm.read().state.node_may_propose(caller, actor, cmd)
    }

    fn issue_cert(&self, caller: NodeId, api_addr: &str, csr_pem: &str) -> Result<String, String> {
        let ca = self
            .pki
            .load_ca()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {} holds no CA key", self.tls.node_id))?;
        let api = (!api_addr.is_empty()).then_some(api_addr);
        ca.issue_for(
            csr_pem,
            caller,
            &self.tls.cluster_id,
            api,
            std::time::SystemTime::now(),
        )
        .map_err(|e| e.to_string())
    }

    fn location_key(&self, caller: NodeId, location_id: u64) -> Result<String, String> {
        self.sm
            .read()
            .state
            .node_may_hold_location_key(caller, location_id)?;
        let ca = self
            .pki
            .load_ca()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("node {} holds no CA key", self.tls.node_id))?;
        super::sealing::LocationKey::of_ca(&ca, location_id)
            .map(|k| k.to_hex())
            .map_err(|e| e.to_string())
    }

    fn store_ca_key(&self, key_pem: &str) -> Result<(), String> {
        self.pki
            .adopt_ca_key(key_pem)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
