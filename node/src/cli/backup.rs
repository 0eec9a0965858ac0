//! `rackd backup create FILE` and `rackd backup inspect FILE`: take a backup from a voter
//! (streamed with progress, checked whole and opened with the passphrase before it is renamed
//! into place, so a FILE that exists is a good backup), and read one back offline.
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

pub async fn create(
    c: &Client,
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
        let n = c
            .download_backup(&pass, &part, progress("backed up"))
            .await?;
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
        "{} locations, {} racks, {} machines, {} subnets, {} images, {} tasks, {} API tokens, {} blobs, {} events",
        k.locations,
        k.racks,
        k.machines,
        k.subnets,
        k.images,
        k.tasks,
        k.api_tokens,
        k.blobs,
        k.events
    );
}
