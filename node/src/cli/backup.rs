//! `rackd backup create FILE` (from a running voter, streamed with progress, or offline from
//! a stopped voter's data directory; checked whole and its CA opened with the passphrase
//! before it is renamed into place, so a FILE that exists is a good backup), `rackd backup
//! inspect FILE` (offline) and `rackd backup restore FILE` (seeds a new cluster's first node).
//!
//! The passphrase comes from `--passphrase-file` or `RACKD_BACKUP_PASSPHRASE`, never from the
//! command line (where `ps` would show it).
//!
//! Layer: part of `cli`; depends on `backup` (the format) and `client`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use sha2::Digest;

use crate::backup::{self, Backup};
use crate::cli::blobs::progress;
use crate::client::Client;
use crate::out;

/// The passphrase: the first line of `file`, else `$RACKD_BACKUP_PASSPHRASE`.
pub fn passphrase(file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("read the passphrase from {}", f.display()))?;
        return Ok(text.lines().next().unwrap_or_default().to_string());
    }
    match std::env::var("RACKD_BACKUP_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!("give the passphrase with --passphrase-file FILE or RACKD_BACKUP_PASSPHRASE"),
    }
}

/// Where a backup is taken from.
pub enum From<'a> {
    /// A running cluster, through this node (a voter).
    Node(&'a Client),
    /// A stopped voter's data directory (offline).
    DataDir(&'a Path),
}

pub async fn create(
    from: From<'_>,
    json: bool,
    file: &Path,
    pass_file: Option<&Path>,
) -> anyhow::Result<()> {
    let pass = passphrase(pass_file)?;
    if file.exists() {
        bail!(
            "{} exists: choose another name or remove it",
            file.display()
        );
    }
    let part = PathBuf::from(format!("{}.part", file.display()));
    let result = async {
        let n = match from {
            From::Node(c) => {
                c.download_backup(&pass, &part, progress("backed up"))
                    .await?
            }
            From::DataDir(dir) => {
                let bytes = crate::cluster::restore::backup_data_dir(dir, &pass).await?;
                let mut f = std::fs::File::create(&part)?;
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()?;
                bytes.len() as u64
            }
        };
        let bytes = tokio::fs::read(&part).await?;
        let b = tokio::task::spawn_blocking(move || -> anyhow::Result<Backup> {
            let b = backup::decode(&bytes)?;
            backup::open_ca(&b.header, &pass)?;
            Ok(b)
        })
        .await??;
        std::fs::rename(&part, file)?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        anyhow::Ok((b, n))
    }
    .await;
    let (b, n) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.context("backup not written"));
        }
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&b.header)?);
        return Ok(());
    }
    describe(&b);
    out!("{n} bytes written to {} (checked)", file.display());
    Ok(())
}

pub fn inspect(json: bool, file: &Path, pass_file: Option<&Path>) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let b = backup::decode(&bytes).with_context(|| format!("{}", file.display()))?;
    let ca = match pass_file.is_some() || std::env::var_os("RACKD_BACKUP_PASSPHRASE").is_some() {
        true => Some(backup::open_ca(&b.header, &passphrase(pass_file)?)?),
        false => None,
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&b.header)?);
        return Ok(());
    }
    describe(&b);
    match ca {
        Some(ca) => out!(
            "the cluster CA opens with the passphrase (certificate sha256 {})",
            hex::encode(sha2::Sha256::digest(ca.cert_pem.as_bytes()))
        ),
        None => out!("the cluster CA is sealed (give the passphrase to check it)"),
    }
    Ok(())
}

/// `rackd backup restore`: seed `data_dir` from the backup (see `cluster::restore`).
pub async fn restore(
    json: bool,
    file: &Path,
    data_dir: &Path,
    (api, tls): (&str, bool),
    peer: &str,
    pass_file: Option<&Path>,
) -> anyhow::Result<()> {
    let pass = passphrase(pass_file)?;
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let (b, ca) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let b = backup::decode(&bytes)?;
        let ca = backup::open_ca(&b.header, &pass)?;
        Ok((b, ca))
    })
    .await??;
    let advertised = match tls {
        true => format!("https://{api}"),
        false => api.to_string(),
    };
    let counts = b.header.counts.clone();
    let r = crate::cluster::restore::restore(data_dir, b, ca, &advertised, peer).await?;
    if json {
        out!(
            "{}",
            serde_json::json!({
                "cluster_id": r.cluster_id, "node_id": r.node_id,
                "applied_index": r.applied_index, "admin_token": r.admin_token,
            })
        );
        return Ok(());
    }
    out!(
        "restored cluster {} at log index {} into {} as node {} ({} machines, {} locations)",
        r.cluster_id,
        r.applied_index,
        data_dir.display(),
        r.node_id,
        counts.machines,
        counts.locations
    );
    out!(
        "admin token: {} (also in {}, mode 0600; the backup's tokens work too)",
        r.admin_token,
        data_dir.join("admin-token").display()
    );
    out!(
        "start it:    rackd up --data-dir {} --api {api} --peer {peer}{}",
        data_dir.display(),
        if tls { "" } else { " --api-plain-http" }
    );
    out!("then join more nodes with `rackd tokens create` and `rackd join`");
    Ok(())
}

fn describe(b: &Backup) {
    let h = &b.header;
    let k = &h.counts;
    out!(
        "backup of cluster {} at log index {}, taken {} by node {}",
        h.cluster_id,
        h.applied_index,
        crate::cli::output::time(h.created_at),
        h.node_id
    );
    out!(
        "{} locations, {} racks, {} machines, {} subnets, {} images, {} tasks, {} API tokens, {} blobs, {} webhooks, {} events",
        k.locations,
        k.racks,
        k.machines,
        k.subnets,
        k.images,
        k.tasks,
        k.api_tokens,
        k.blobs,
        k.webhooks,
        k.events
    );
}
