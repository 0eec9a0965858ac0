//! rackd-installer: the bootable appliance (DESIGN §1, §8).
//!
//! - [`layout`]: the disk layout (system / seed / data partitions) and its MBR.
//! - [`seed`]: a node's settings (TOML seed partition + `rackd.*` kernel parameters).
//! - [`cpio`]: the initramfs archive writer.
//! - [`build`]: `rackd appliance build` — kernel, initramfs with rackd, syslinux, partitions.
//! - [`install`]: `install --disk`, `upgrade` (system part only), `seed`.
//! - [`init`]: PID 1 of the appliance: mounts, seed, network, runs and supervises rackd.
//!
//! Must not depend on the node runtime (the `rackd` binary calls in here, not the reverse).

pub mod build;
pub mod cpio;
pub mod init;
pub mod install;
pub mod layout;
pub mod seed;
pub mod tools;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool}: {detail}")]
    Tool { tool: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
}

/// Maps an I/O error to [`ImageError::Io`] saying what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let what = what.into();
    move |source| ImageError::Io { what, source }
}
