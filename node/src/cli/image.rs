//! `rackd appliance …` (formerly `rackd image …`): thin CLI glue over [`rackd_installer`].

use anyhow::Context;
use rackd_installer::{build, install, layout};

use crate::cli::ImageCmd;

/// The disk the running appliance booted from (parent of the RACKDSYS partition).
fn running_disk() -> anyhow::Result<std::path::PathBuf> {
    let dev = rackd_installer::init::device_with_label(layout::LABEL_SYS)
        .context("no RACKDSYS partition found: pass --from IMAGE")?;
    Ok(rackd_installer::init::parent_disk(&dev).into())
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::Build {
            out,
            kernel_deb,
            rackd,
            seed,
            size_mib,
            cmdline,
            no_qcow2,
        } => {
            let mut o = build::BuildOptions::new(out)?;
            o.kernel_deb = kernel_deb;
            if let Some(r) = rackd {
                o.rackd = r;
            }
            o.seed = seed;
            o.disk_size = size_mib * layout::MIB;
            o.cmdline = cmdline;
            o.qcow2 = !no_qcow2;
            let r = build::build(&o)?;
            crate::out!("{}", serde_json::to_string_pretty(&r)?);
        }
        ImageCmd::Install {
            disk,
            from,
            seed,
            force,
        } => {
            let from = match from {
                Some(f) => f,
                None => running_disk()?,
            };
            let r = install::install(&from, &disk, seed.as_deref(), force)?;
            crate::out!(
                "installed onto {} ({} MiB; data partition {} MiB)",
                disk.display(),
                r.target_bytes / layout::MIB,
                r.data_bytes / layout::MIB
            );
        }
        ImageCmd::Upgrade { disk, image } => install::upgrade(&disk, &image)?,
        ImageCmd::Seed { disk, seed } => {
            install::set_seed(&disk, &seed)?;
            crate::out!("seed written to {}", disk.display());
        }
    }
    Ok(())
}
