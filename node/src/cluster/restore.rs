//! Restore: seed a new cluster's first node from a backup ([`crate::backup`]), offline, as
//! etcd's `snapshot restore` does. The data directory it writes starts (`rackd up`) as the only
//! voter of a cluster with the backup's id, CA and every record; other nodes then join it with
//! join tokens as usual.
//!
//! What it writes: the cluster CA opened from the backup (so every secret sealed under it, BMC
//! passwords and deploy tokens, still opens), a key and certificate for the new node, its
//! `node.json` (complete: nothing left to bootstrap), and a database holding the state as a
//! follower holds an installed snapshot: at the backup's log index, with a membership of this
//! node alone. The node takes a fresh id from the state's allocator, so no id of the old
//! cluster is reused. A new admin token is added (the old tokens keep working; the operator
//! may have lost them with the cluster) and printed once.
//!
//! Not in a backup: blob contents (kernels, initrds, root filesystems live outside the state;
//! their records stay, and the images that use them need them uploaded again).
//!
//! A cluster that lost its quorum for good is recovered the same way: [`backup_data_dir`]
//! takes a backup offline from a surviving voter's (stopped) data directory, and that file
//! is restored.
//!
//! Layer: part of `cluster`; depends on `backup`, `pki`, `identity`, `secrets` and storage.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use rackd_raft::cmd::{Command, Request};
use rackd_raft::NodeInfo;
use rackd_types::ApiRole;

use super::identity::{Identity, Origin, IDENTITY_VERSION};
use super::pki::{CaBundle, NodeKey, Pki};
use super::secrets::{hash_secret, new_secret, write_secret_file};
use crate::backup::Backup;

/// A backup taken offline from the data directory of a stopped node that holds the cluster
/// CA (a voter): what it applied, as of its last apply. Entries it had in its log but had not
/// applied are not in it (after a quorum loss nothing can tell whether they committed).
pub async fn backup_data_dir(dir: &Path, passphrase: &str) -> anyhow::Result<Vec<u8>> {
    let id = Identity::load(dir)?
        .with_context(|| format!("{} holds no node (no node.json)", dir.display()))?;
    let ca = Pki::in_data_dir(dir).load_ca()?.with_context(|| {
        format!(
            "{} holds no cluster CA key (a learner's): take the backup from a voter's data \
             directory, or the sealed BMC passwords and deploy tokens are lost",
            dir.display()
        )
    })?;
    let (_log, sm) = rackd_storage::open(dir).await.with_context(|| {
        format!(
            "open {} (stop the node first: its database is locked while it runs)",
            dir.display()
        )
    })?;
    let (state, index) = {
        let a = sm.read();
        (a.state.clone(), a.last_applied.map_or(0, |l| l.index))
    };
    let ca = crate::backup::CaPem {
        cert_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem().to_string(),
    };
    let pass = passphrase.to_string();
    let now = super::now_ms();
    let node = id.node_id;
    Ok(tokio::task::spawn_blocking(move || {
        let cluster = state.cluster_id().to_string();
        crate::backup::encode(&cluster, node, now, index, &state, &ca, &pass)
    })
    .await??)
}

/// What a restore made.
#[derive(Debug)]
pub struct Restored {
    pub cluster_id: String,
    pub node_id: u64,
    /// A new admin token (also in `DATA_DIR/admin-token`).
    pub admin_token: String,
    pub applied_index: u64,
}

/// Seed `dir` (empty or absent) from backup `b`, whose CA `ca` the passphrase opened, for a
/// node that will serve its API on `api_addr` and its peers on `peer_addr`.
pub async fn restore(
    dir: &Path,
    b: Backup,
    ca: crate::backup::CaPem,
    api_addr: &str,
    peer_addr: &str,
) -> anyhow::Result<Restored> {
    if dir.join("node.json").exists() || dir.join("db").exists() {
        bail!(
            "{} already holds a node: restore into an empty data directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut state = b.state;
    let cluster_id = state.cluster_id().to_string();
    if cluster_id != b.header.cluster_id {
        bail!(
            "the backup's state belongs to cluster {cluster_id:?}, its header says {:?}",
            b.header.cluster_id
        );
    }
    let ca = CaBundle::from_pem(&ca.cert_pem, &ca.key_pem).context("the backup's CA")?;

    // A fresh node id, and a new admin token, applied as the leader would (its time).
    let node_id = state
        .meta
        .next_node_id
        .max(rackd_raft::state::cluster::BOOTSTRAP_NODE_ID + 1);
    state.meta.next_node_id = node_id + 1;
    let admin = new_secret("rackd-admin-");
    let now = super::now_ms();
    let applied = state.apply(&Request {
        time_ms: now,
        actor: "restore".into(),
        idempotency_key: None,
        cmd: Command::CreateApiToken {
            name: format!("restore-admin-{now}"),
            token_hash: hash_secret(&admin),
            role: ApiRole::Admin,
            ttl_ms: None,
        },
    });
    applied
        .0
        .map_err(|e| anyhow::anyhow!("add the restore's admin token: {}", e.message))?;

    // PKI first: the node's certificate names its API address, as at bootstrap.
    let pki = Pki::in_data_dir(dir);
    let key = NodeKey::generate()?;
    let sys_now = std::time::SystemTime::now();
    let cert = ca.issue_for(&key.csr_pem, node_id, &cluster_id, Some(api_addr), sys_now)?;
    pki.save_ca(&ca)?;
    pki.save_node_key(&key.key_pem)?;
    pki.save_node_cert(&ca.cert_pem, &cert)?;

    // The database: the state at the backup's index, this node the only voter.
    let index = b.header.applied_index;
    let log_id = openraft::testing::log_id::<rackd_raft::TypeConfig>(1, node_id, index);
    let membership = rackd_raft::typ::Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, NodeInfo::new(api_addr, peer_addr))]),
    )
    .context("the new membership")?;
    let meta = rackd_raft::typ::SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: rackd_raft::typ::StoredMembership::new(Some(log_id), membership),
    };
    let bytes = tokio::task::spawn_blocking(move || rackd_storage::sm_store::encode_state(&state))
        .await??;
    rackd_storage::seed(dir, node_id, bytes, meta)
        .await
        .context("write the database")?;

    write_secret_file(&dir.join("admin-token"), &admin)?;
    Identity {
        version: IDENTITY_VERSION,
        node_id,
        origin: Origin::Bootstrap,
        complete: true,
        cluster_id: Some(cluster_id.clone()),
        removed: false,
    }
    .save(dir)?;
    Ok(Restored {
        cluster_id,
        node_id,
        admin_token: admin,
        applied_index: index,
    })
}
