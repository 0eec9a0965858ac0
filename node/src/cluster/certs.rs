//! Certificate renewal without downtime. Every node renews its own certificate: it generates
//! a new key (the key never leaves the node), gets the CSR signed (a voter signs locally, it
//! holds the CA key; a learner asks the voters over `RenewCert`, authenticated by its current
//! certificate), stores the pair (`Pki::save_renewed`, crash-safe) and swaps it under every
//! TLS configuration (`NodeTls::renewed`): new handshakes use the new certificate, open
//! connections finish on the old one, and both stay valid until they expire.
//!
//! A node renews when ([`due`]): its certificate has less than [`RENEW_BEFORE`] left; it does
//! not name the host of the node's current API address (the address changed); or an operator
//! asked every node to (`rackd certs rotate`: the replicated `certs_renew_before_ms`, handled
//! once per request, see [`Handled`]).
//!
//! A removed node's certificate is refused by every member whatever its expiry
//! (`NodePeerAuth::admitted`); the CA itself is not rotated here.
//!
//! Layer: cluster; uses `pki`, the peer network and the Raft metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::pki::{self, NodeKey, Pki, NODE_CERT_VALIDITY};
use super::write::epoch_ms;
use super::ClusterHandle;

/// Renew when less than this is left (a third of the validity: four months of a year).
pub const RENEW_BEFORE: Duration = Duration::from_secs(NODE_CERT_VALIDITY.as_secs() / 3);

/// Why a certificate is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It expires within [`RENEW_BEFORE`].
    Expiring { left_secs: u64 },
    /// It does not name the host of the node's API address.
    ApiHostChanged,
    /// An operator asked every node to renew certificates issued before this time (ms).
    Requested { before_ms: u64 },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Expiring { left_secs } => write!(f, "it expires in {} days", left_secs / 86_400),
            Why::ApiHostChanged => write!(f, "it does not name this node's API address"),
            Why::Requested { before_ms } => {
                write!(
                    f,
                    "an operator asked for certificates issued before {before_ms} ms"
                )
            }
        }
    }
}

/// Whether the certificate `cert_pem` must be renewed now. Pure: `requested_before_ms` is the
/// replicated request, `handled_ms` the last request this node already renewed for.
pub fn due(
    cert_pem: &str,
    now: SystemTime,
    api_addr: &str,
    requested_before_ms: u64,
    handled_ms: u64,
) -> Result<Option<Why>, pki::PkiError> {
    let (issued, expires) = pki::cert_validity(cert_pem)?;
    let left = expires.duration_since(now).unwrap_or_default();
    if left < RENEW_BEFORE {
        return Ok(Some(Why::Expiring {
            left_secs: left.as_secs(),
        }));
    }
    if !pki::names_api_host(cert_pem, api_addr)? {
        return Ok(Some(Why::ApiHostChanged));
    }
    // Issue times have a resolution of one second: a certificate issued in the second of the
    // request counts as older; `handled` keeps that from repeating.
    if requested_before_ms > handled_ms && epoch_ms(issued) < requested_before_ms {
        return Ok(Some(Why::Requested {
            before_ms: requested_before_ms,
        }));
    }
    Ok(None)
}

/// The last renewal request this node handled (`pki/renewed-for`, ms), so one request renews
/// once even when the issuing voter's clock is behind the leader's.
pub struct Handled {
    path: std::path::PathBuf,
}

impl Handled {
    pub fn in_data_dir(dir: &std::path::Path) -> Handled {
        Handled {
            path: dir.join("pki").join("renewed-for"),
        }
    }

    pub fn get(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn set(&self, ms: u64) -> std::io::Result<()> {
        super::secrets::write_file_atomically(&self.path, &ms.to_string(), 0o644)
    }
}

/// Get a certificate for `csr_pem` naming this node: signed here when this node holds the CA
/// key, else by a voter (the leader first).
async fn sign(node: &ClusterHandle, csr_pem: &str) -> Result<String, String> {
    let pki = Pki::in_data_dir(&node.data_dir);
    if let Some(ca) = pki.load_ca().map_err(|e| e.to_string())? {
        return ca
            .issue_for(
                csr_pem,
                node.id,
                &node.tls.cluster_id,
                Some(&node.api_addr),
                SystemTime::now(),
            )
            .map_err(|e| e.to_string());
    }
    let mut errors = Vec::new();
    for (id, addr) in node.other_voters_leader_first() {
        match node
            .net
            .renew_cert(id, &addr, csr_pem, Duration::from_secs(10))
            .await
        {
            Ok(cert) => return Ok(cert),
            Err(e) => errors.push(format!("node {id}: {e}")),
        }
    }
    Err(format!(
        "no voter signed the renewal: {}",
        errors.join("; ")
    ))
}

/// Renew this node's certificate now.
pub async fn renew(node: &ClusterHandle, why: &Why) -> Result<(), String> {
    let tls = &node.tls;
    let key = NodeKey::generate().map_err(|e| e.to_string())?;
    let cert = sign(node, &key.csr_pem).await?;
    let pki = Pki::in_data_dir(&node.data_dir);
    // Checked before it is stored, stored before it is used: a restart loads what is in use.
    tls.check_renewal(&cert, &key.key_pem)
        .map_err(|e| format!("the signed certificate is unusable: {e}"))?;
    pki.save_renewed(&key.key_pem, &cert)
        .map_err(|e| e.to_string())?;
    tls.renewed(&cert, &key.key_pem)
        .map_err(|e| e.to_string())?;
    let (_, expires) = pki::cert_validity(&cert).map_err(|e| e.to_string())?;
    tracing::info!(%why, expires_ms = epoch_ms(expires), "renewed this node's certificate");
    Ok(())
}

/// One check: renew if [`due`]. Returns whether the certificate was renewed.
pub async fn step(node: &ClusterHandle) -> bool {
    let handled = Handled::in_data_dir(&node.data_dir);
    let requested = node.sm.read().state.meta.certs_renew_before_ms;
    let why = match due(
        &node.tls.cert_pem(),
        SystemTime::now(),
        &node.api_addr,
        requested,
        handled.get(),
    ) {
        Ok(Some(why)) => why,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(error = %e, "cannot read this node's certificate");
            return false;
        }
    };
    match renew(node, &why).await {
        Ok(()) => {
            if let Why::Requested { before_ms } = why {
                if let Err(e) = handled.set(before_ms) {
                    tracing::warn!(error = %e, "cannot record the renewal request as handled");
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(%why, error = %e, "certificate renewal failed; will retry");
            false
        }
    }
}

/// Check every `tick`; stops only when aborted.
pub async fn run(node: Arc<ClusterHandle>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        step(&node).await;
    }
}

#[cfg(test)]
mod tests;
