//! How a node becomes a member: [`resolve_identity`] decides from the data directory whether
//! this node bootstraps, joins or resumes (never re-initializing a cluster that exists);
//! [`bootstrap`] initializes a new cluster once; [`JoinCall`] is both phases of a join seen
//! from the joiner, and [`finish_join`] retries phase 2 until the cluster accepts or rejects.
//! A bootstrapping node picks the cluster id and creates the cluster CA and its own
//! certificate ([`super::pki`]) before anything else, so that they exist before it first
//! speaks to a peer.
//!
//! Restart safety: the cluster is initialized only when `node.json` says this node bootstraps
//! *and* Raft's own persisted state says it is uninitialized; a data directory that holds state
//! is always resumed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use openraft::ServerState;
use rackd_raft::cmd::Command;
use rackd_raft::NodeInfo;
use rackd_types::{ErrorCode, JoinRequest, JoinResponse};

use crate::client::{Client, ClientError};

use super::identity::{Identity, Origin, IDENTITY_VERSION};
use super::pki::{
    ca_hash, pinned_client_config, split_join_token, CaBundle, NodeKey, Pki, PIN_MISMATCH,
};
use super::secrets::{hash_secret, new_secret, write_secret_file};
use super::ClusterHandle;

/// What a retry loop logs: the first failure, then only a different one, or the same one
/// again after [`RetryLog::EVERY`] (not a line per attempt).
#[derive(Debug, Default)]
pub struct RetryLog {
    last: Option<(String, std::time::Instant)>,
}

impl RetryLog {
    pub const EVERY: Duration = Duration::from_secs(10);

    /// Whether a failure with `text` at `now` is worth a log line (and remember it if so).
    pub fn worth_saying(&mut self, text: &str, now: std::time::Instant) -> bool {
        let say = match &self.last {
            Some((t, at)) => t != text || now.saturating_duration_since(*at) >= Self::EVERY,
            None => true,
        };
        if say {
            self.last = Some((text.to_string(), now));
        }
        say
    }
}

/// Why a join call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused (unknown, used or expired token): final, not retried.
    #[error("join rejected: {0}")]
    Rejected(String),
    /// No leader, leader busy, connection refused, timeout: worth retrying.
    #[error("join failed: {0}")]
    Transient(String),
}

/// The joiner's view of what to do with a data directory.
pub struct JoinParams<'a> {
    pub join: Option<&'a str>,
    pub token: Option<&'a str>,
    pub learner: bool,
    pub api_addr: &'a str,
    pub peer_addr: &'a str,
}

/// Load this node's identity from `dir`, or create it: a bootstrap identity (node 1) for an
/// empty directory without `--join`, or a node id allocated by the cluster (join phase 1).
pub async fn resolve_identity(
    dir: &Path,
    http: &reqwest::Client,
    p: JoinParams<'_>,
) -> anyhow::Result<Identity> {
    Ok(match Identity::load(dir)? {
        Some(id) if id.removed => anyhow::bail!(
            "node {} was removed from cluster {}; it does not start again on this data \
             directory. To add this machine back, start it with an empty data directory and a \
             new join token",
            id.node_id,
            id.cluster_id.as_deref().unwrap_or("?")
        ),
        Some(id) => {
            if p.join.is_some() && id.complete {
                tracing::warn!(
                    "data directory already belongs to node {}; ignoring --join",
                    id.node_id
                );
            }
            id
        }
        None if dir.join("db").exists() => anyhow::bail!(
            "{} holds a Raft database but no node.json: this node's identity is lost, and \
             starting it as a new node would reuse another member's vote and log. Restore \
             node.json from a backup, or remove this member from the cluster and start with an \
             empty data directory",
            dir.display()
        ),
        None => match p.join {
            None => {
                let cluster_id = new_secret("")[..16].to_string();
                let node_id = rackd_raft::state::cluster::BOOTSTRAP_NODE_ID;
                create_cluster_pki(dir, &cluster_id, node_id, p.api_addr)?;
                let id = Identity {
                    version: IDENTITY_VERSION,
                    node_id,
                    origin: Origin::Bootstrap,
                    complete: false,
                    cluster_id: Some(cluster_id),
                    removed: false,
                };
                id.save(dir)?;
                id
            }
            Some(url) => {
                let (token, pin) = split_join_token(p.token.context("--join needs --token")?);
                let http = &join_client(url, pin, http)?;
                let csr = join_csr(dir)?;
                // Transient failures (no leader yet, leader busy, connection refused) are
                // retried; a rejected token is final.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let call = JoinCall {
                    url,
                    token,
                    api: p.api_addr,
                    peer: p.peer_addr,
                    learner: p.learner,
                };
                let mut delay = Duration::from_millis(250);
                let mut said = RetryLog::default();
                let resp = loop {
                    match call.send(http, None, Some(&csr)).await {
                        Ok(r) => break r,
                        Err(e @ JoinError::Rejected(_)) => return Err(e.into()),
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            return Err(anyhow::Error::from(e).context(format!(
                                "gave up joining through {url} after 60 s (is the URL a \
                                 member's API, and is that member up?)"
                            )))
                        }
                        Err(e) => {
                            let left =
                                deadline.saturating_duration_since(tokio::time::Instant::now());
                            if said.worth_saying(&e.to_string(), std::time::Instant::now()) {
                                tracing::warn!(
                                    error = %e,
                                    gives_up_in_secs = left.as_secs(),
                                    "cannot join yet; retrying"
                                );
                            }
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                };
                save_join_cert(dir, &resp, pin)?;
                let id = Identity {
                    version: IDENTITY_VERSION,
                    node_id: resp.node_id,
                    origin: Origin::Join {
                        join_url: url.to_string(),
                        learner: p.learner,
                    },
                    complete: false,
                    cluster_id: Some(resp.cluster_id),
                    removed: false,
                };
                id.save(dir)?;
                eprintln!("rackd: allocated node id {} by the cluster", resp.node_id);
                id
            }
        },
    })
}

/// The HTTP client of join phase 1. Over TLS the server must present the CA the token's pin
/// names (checked in the handshake, before the secret is sent); a token without a pin cannot
/// join over TLS (the joiner would have nothing to check the cluster against). Plain HTTP is
/// the caller's choice of URL; the pin is then checked on the answer.
fn join_client(
    url: &str,
    pin: Option<&str>,
    plain: &reqwest::Client,
) -> anyhow::Result<reqwest::Client> {
    if !url.starts_with("https://") {
        return Ok(plain.clone());
    }
    let pin = pin.context(
        "this join token carries no CA hash (`:sha256:...`), so the cluster at the https URL \
         cannot be checked; create a new join token",
    )?;
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .use_preconfigured_tls((*pinned_client_config(pin)?).clone())
        .build()
        .context("build the join client")
}

/// The CSR a joining node sends in phase 1, for the key it keeps in `pki/node.key` (made now,
/// or kept from an earlier attempt, so the certificate always matches the key on disk).
fn join_csr(dir: &Path) -> anyhow::Result<String> {
    let pki = Pki::in_data_dir(dir);
    let key = match pki.node_key()? {
        Some(pem) => NodeKey::from_key_pem(&pem)?,
        None => {
            let k = NodeKey::generate()?;
            pki.save_node_key(&k.key_pem)?;
            k
        }
    };
    Ok(key.csr_pem)
}

/// Keep the certificate phase 1 answered with (before `node.json`, so a node never runs
/// without one), after checking that it names this node and matches the key.
fn save_join_cert(dir: &Path, resp: &JoinResponse, pin: Option<&str>) -> anyhow::Result<()> {
    let (Some(ca), Some(cert)) = (resp.ca_pem.as_deref(), resp.cert_pem.as_deref()) else {
        anyhow::bail!(
            "the cluster answered the join without a certificate (is it an older rackd?)"
        );
    };
    if let Some(pin) = pin {
        let got = ca_hash(ca)?;
        if !got.eq_ignore_ascii_case(pin) {
            anyhow::bail!(
                "refusing the join: the cluster's CA is {got}, but the join token names {pin}"
            );
        }
    }
    let pki = Pki::in_data_dir(dir);
    let key = pki
        .node_key()?
        .context("pki/node.key vanished during the join")?;
    super::pki::NodeTls::new(&resp.cluster_id, resp.node_id, ca, cert, &key)
        .context("the certificate the cluster issued")?;
    pki.save_node_cert(ca, cert)?;
    Ok(())
}

/// Create a new cluster's CA and the bootstrapping node's key and certificate in `dir`
/// (replacing any left by an earlier attempt that never got as far as saving `node.json`).
fn create_cluster_pki(
    dir: &Path,
    cluster_id: &str,
    node_id: u64,
    api_addr: &str,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now();
    let pki = Pki::in_data_dir(dir);
    let ca = CaBundle::generate(cluster_id, now)?;
    let key = NodeKey::generate()?;
    let cert = ca.issue_for(&key.csr_pem, node_id, cluster_id, Some(api_addr), now)?;
    pki.save_ca(&ca)?;
    pki.save_node_key(&key.key_pem)?;
    pki.save_node_cert(&ca.cert_pem, &cert)?;
    Ok(())
}

/// Finish what `identity` says is unfinished: bootstrap the cluster or join phase 2.
pub async fn complete(
    node: &ClusterHandle,
    identity: Identity,
    token: Option<&str>,
) -> anyhow::Result<()> {
    match identity.origin.clone() {
        Origin::Bootstrap => bootstrap(node, identity).await,
        Origin::Join { join_url, learner } => {
            finish_join(node, identity, &join_url, token, learner).await
        }
    }
}

/// Initialize a new single-node cluster (once), apply the Bootstrap command, write the admin
/// token file and print the tokens.
pub async fn bootstrap(node: &ClusterHandle, mut identity: Identity) -> anyhow::Result<()> {
    if !node.raft.is_initialized().await? {
        let mut members = BTreeMap::new();
        members.insert(
            node.id,
            NodeInfo::new(node.api_addr.clone(), node.peer_addr.clone()),
        );
        node.raft
            .initialize(members)
            .await
            .context("initialize cluster")?;
    }
    node.raft
        .wait(Some(Duration::from_secs(60)))
        .state(ServerState::Leader, "bootstrap leader")
        .await
        .context("become leader after bootstrap")?;

    let token_path = node.data_dir.join("admin-token");
    let admin = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = new_secret("rackd-admin-");
            write_secret_file(&token_path, &t)?;
            t
        }
    };
    // Read after a linearizable barrier: a Bootstrap entry committed before a crash may not be
    // re-applied yet, and proposing a second one would fail forever.
    node.linearize()
        .await
        .map_err(|e| anyhow::anyhow!("read barrier before bootstrap: {e}"))?;
    let existing = node.sm.read().state.cluster_id().to_string();
    let cluster_id = if existing.is_empty() {
        // Chosen with the CA when the identity was made (an identity from before the PKI
        // has none: choose now).
        let cid = match identity.cluster_id.clone() {
            Some(c) => c,
            None => new_secret("")[..16].to_string(),
        };
        node.propose(
            "system",
            None,
            Command::Bootstrap {
                cluster_id: cid.clone(),
                admin_token_hash: hash_secret(&admin),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap command: {e}"))?;
        cid
    } else {
        existing
    };
    let join = super::membership::create_join_token(
        node,
        "system",
        None,
        3600,
        "created at bootstrap",
        None,
    )
    .await
    .map_err(|e| anyhow::anyhow!("create join token: {e}"))?;
    let pki = Pki::in_data_dir(&node.data_dir);
    if pki.load_node(&cluster_id, node.id)?.is_none() {
        create_cluster_pki(&node.data_dir, &cluster_id, node.id, &node.api_addr)?;
    }
    let ca = pki
        .load_ca()?
        .context("the cluster CA is missing after bootstrap")?;
    identity.complete = true;
    identity.cluster_id = Some(cluster_id.clone());
    identity.save(&node.data_dir)?;
    println!(
        "rackd: bootstrapped new cluster {cluster_id} (node {})",
        node.id
    );
    println!(
        "cluster CA:  {} ({})",
        ca_hash(&ca.cert_pem)?,
        node.data_dir.join("pki/ca.pem").display()
    );
    println!("admin token: {admin}");
    println!(
        "  (saved to {}, mode 0600; export RACKD_TOKEN=$(cat {}))",
        token_path.display(),
        token_path.display()
    );
    println!("join token:  {} (one node, expires in 1h)", join.token);
    println!(
        "add a node:  rackd join {} --token {} --data-dir DIR --api HOST:PORT --peer HOST:PORT",
        rackd_types::api_url(&node.api_addr),
        join.token
    );
    if node.api_addr.starts_with("https://") {
        println!(
            "CLI:         export RACKD_SERVER={} RACKD_CA_FILE={}",
            rackd_types::api_url(&node.api_addr),
            node.data_dir.join("pki/ca.pem").display()
        );
    }
    Ok(())
}

/// One join call's fixed parts: where, with which token, for which addresses and role.
pub struct JoinCall<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub api: &'a str,
    pub peer: &'a str,
    pub learner: bool,
}

impl JoinCall<'_> {
    /// POST `{url}/v1/cluster/join` once (the callers retry: a join takes no Idempotency-Key):
    /// phase 1 without `node_id` (with the CSR), phase 2 with it.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        node_id: Option<u64>,
        csr: Option<&str>,
    ) -> Result<JoinResponse, JoinError> {
        let body = JoinRequest {
            token: self.token.to_string(),
            api_addr: self.api.to_string(),
            peer_addr: self.peer.to_string(),
            learner: self.learner,
            node_id,
            csr: csr.map(str::to_string),
            apply_rules: Some(rackd_raft::state::ApplyRules::CURRENT.number()),
        };
        let client =
            Client::with_http(self.url, None, http.clone()).with_timeout(Duration::from_secs(300));
        client
            .post_once("/v1/cluster/join", &body)
            .await
            .map_err(|e| match e {
                ClientError::Api { error, .. } if error.code == ErrorCode::JoinRejected => {
                    JoinError::Rejected(format!("{:?}: {}", error.code, error.message))
                }
                ClientError::Transport { url, source } => {
                    let mut chain = source.to_string();
                    let mut cause = std::error::Error::source(&source);
                    while let Some(c) = cause {
                        chain = format!("{chain}: {c}");
                        cause = c.source();
                    }
                    if chain.contains(PIN_MISMATCH) {
                        JoinError::Rejected(format!(
                            "refusing to join {url}: {PIN_MISMATCH} (nothing was sent; check \
                             the URL and the token)"
                        ))
                    } else {
                        JoinError::Transient(format!("POST {url}: {chain}"))
                    }
                }
                other => JoinError::Transient(other.to_string()),
            })
    }
}

/// Phase 2 of join: ask the leader to add us (learner, catch up, then voter). Retries until the
/// cluster accepts us or rejects the token.
async fn finish_join(
    node: &ClusterHandle,
    mut identity: Identity,
    url: &str,
    token: Option<&str>,
    learner: bool,
) -> anyhow::Result<()> {
    let token = split_join_token(token.context("resuming an unfinished join needs --token")?).0;
    let mut delay = Duration::from_millis(200);
    let mut said = RetryLog::default();
    loop {
        let call = JoinCall {
            url,
            token,
            api: &node.api_addr,
            peer: &node.peer_addr,
            learner,
        };
        match call.send(&node.http, Some(node.id), None).await {
            Ok(resp) => {
                identity.complete = true;
                identity.cluster_id = Some(resp.cluster_id.clone());
                identity.save(&node.data_dir)?;
                println!(
                    "rackd: node {} joined cluster {} as {}",
                    node.id,
                    resp.cluster_id,
                    resp.role.unwrap_or_default()
                );
                return Ok(());
            }
            Err(e @ JoinError::Rejected(_)) => return Err(e.into()),
            Err(e) => {
                if said.worth_saying(&e.to_string(), std::time::Instant::now()) {
                    tracing::warn!(error = %e, "join not finished yet; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod retry_log_tests {
    use super::RetryLog;
    use std::time::{Duration, Instant};

    #[test]
    fn a_repeated_failure_is_said_once_per_interval_and_a_new_one_at_once() {
        let mut l = RetryLog::default();
        let t0 = Instant::now();
        assert!(l.worth_saying("refused", t0));
        let said = (1..40)
            .filter(|i| l.worth_saying("refused", t0 + Duration::from_millis(500 * i)))
            .count();
        assert_eq!(said, 1, "20 s of the same failure: one more line, at 10 s");
        assert!(l.worth_saying("no leader", t0 + Duration::from_secs(20)));
        assert!(!l.worth_saying("no leader", t0 + Duration::from_secs(21)));
    }
}
