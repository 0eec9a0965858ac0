//! The TFTP server of a location node, and the iPXE first stages it serves (copied from
//! Debian's `ipxe` package into the TFTP root).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use crate::abort::AbortOnDrop;

/// Start the TFTP server of the location services; returns its task (aborted on drop).
pub async fn start(
    root: &Path,
    limits: &rackd_net::tftp::Limits,
    addr: SocketAddr,
    data_dir: &Path,
    location: &str,
) -> anyhow::Result<AbortOnDrop> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("create TFTP root {}", root.display()))?;
    install_ipxe_binaries(root, Path::new(IPXE_DIR));
    let server = rackd_net::tftp::TftpServer::bind(addr, root, limits.clone())
        .await
        .with_context(|| format!("bind TFTP {addr}"))?;
    let bound = server.local_addr()?;
    let stats = server.stats();
    crate::metrics::global().watch_tftp(location, &stats);
    std::fs::write(data_dir.join("tftp.addr"), bound.to_string())?;
    tracing::info!(%bound, root = %root.display(), %location, "TFTP server started");
    Ok(AbortOnDrop(tokio::spawn(async move {
        // The counters stay in the scrapes while the server runs.
        let _stats = stats;
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "TFTP server stopped");
        }
    })))
}

/// Where Debian's `ipxe` package installs the iPXE first stages.
pub const IPXE_DIR: &str = "/usr/lib/ipxe";
/// First stages handed to PXE ROMs (see `rackd_net::dhcp::boot::first_stage`).
pub const IPXE_FILES: &[&str] = &["undionly.kpxe", "ipxe.efi", "snponly.efi", "ipxe.pxe"];

/// Copy the iPXE first stages into the TFTP root where they are missing (copies, not
/// symlinks: the TFTP server refuses symlinks that leave its root). Files an operator put there
/// are never overwritten.
pub fn install_ipxe_binaries(root: &std::path::Path, from: &std::path::Path) {
    for f in IPXE_FILES {
        let (src, dst) = (from.join(f), root.join(f));
        if dst.exists() || !src.is_file() {
            continue;
        }
        match std::fs::copy(&src, &dst) {
            Ok(_) => {
                tracing::info!(file = %f, from = %src.display(), "installed iPXE first stage into the TFTP root")
            }
            Err(e) => tracing::warn!(file = %f, error = %e, "could not copy iPXE binary"),
        }
    }
    if !root.join("undionly.kpxe").exists() {
        tracing::warn!(root = %root.display(), "no undionly.kpxe in the TFTP root: BIOS PXE clients cannot chain to iPXE (apt-get install ipxe)");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipxe_binaries_are_copied_but_never_overwrite() {
        let from = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("undionly.kpxe"), b"debian").unwrap();
        std::fs::write(from.path().join("ipxe.efi"), b"debian-efi").unwrap();
        std::fs::write(root.path().join("ipxe.efi"), b"operator").unwrap();
        super::install_ipxe_binaries(root.path(), from.path());
        assert_eq!(
            std::fs::read(root.path().join("undionly.kpxe")).unwrap(),
            b"debian"
        );
        assert_eq!(
            std::fs::read(root.path().join("ipxe.efi")).unwrap(),
            b"operator"
        );
        assert!(!root.path().join("snponly.efi").exists());
    }
}
