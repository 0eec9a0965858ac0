//! Writing the appliance to disks: `install --disk` (from the booted appliance's own disk or an
//! image file onto an empty disk), `upgrade` (replace the system part, keep seed and data) and
//! `seed` (write a node's seed partition). Targets may be block devices or image files.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::build::{read_full, seed_image};
use crate::layout::{self, Partition, MIB};
use crate::tools::{path_str, run};
use crate::{io, ImageError};

fn open_rw(p: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map_err(io(format!("open {}", p.display())))
}

fn size_of(f: &mut File) -> Result<u64, ImageError> {
    let n = f.seek(SeekFrom::End(0)).map_err(io("size the disk"))?;
    f.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    Ok(n)
}

fn read_at(f: &mut File, at: u64, len: usize) -> Result<Vec<u8>, ImageError> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(at)).map_err(io("seek"))?;
    let n = read_full(f, &mut buf).map_err(io("read"))?;
    buf.truncate(n);
    Ok(buf)
}

/// The partition table of an appliance disk, checked against this build's layout.
fn appliance_table(f: &mut File, what: &str) -> Result<Vec<Partition>, ImageError> {
    let mbr = read_at(f, 0, 512)?;
    let parts = layout::read_table(&mbr)
        .ok_or_else(|| ImageError::Invalid(format!("{what} has no partition table")))?;
    let ok = parts.len() == 3
        && parts[0].start == layout::SYS_START
        && parts[0].size == layout::SYS_SIZE
        && parts[1].start == layout::SEED_START
        && parts[1].size == layout::SEED_SIZE
        && parts[2].start == layout::DATA_START;
    if !ok {
        return Err(ImageError::Invalid(format!(
            "{what} is not a rackd appliance disk of layout {}",
            layout::LAYOUT_VERSION
        )));
    }
    Ok(parts)
}

/// Copies `len` bytes at `at` from `src` to the same offset of `dst`.
fn copy_range(src: &mut File, dst: &mut File, at: u64, len: u64) -> Result<(), ImageError> {
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    src.seek(SeekFrom::Start(at)).map_err(io("seek source"))?;
    dst.seek(SeekFrom::Start(at)).map_err(io("seek target"))?;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = read_full(src, &mut buf[..want]).map_err(io("read source"))?;
        if n == 0 {
            return Err(ImageError::Invalid("source ended early".into()));
        }
        dst.write_all(&buf[..n]).map_err(io("write target"))?;
        done += n as u64;
    }
    Ok(())
}

fn write_seed(target: &mut File, seed_toml: Option<&Path>) -> Result<(), ImageError> {
    let tmp = tempfile::tempdir().map_err(io("temporary directory"))?;
    let img = tmp.path().join("seed.img");
    seed_image(&img, seed_toml)?;
    let data = std::fs::read(&img).map_err(io("read seed image"))?;
    target
        .seek(SeekFrom::Start(layout::SEED_START))
        .map_err(io("seek seed"))?;
    target.write_all(&data).map_err(io("write seed"))
}

/// Replaces the seed partition of an appliance disk (or image) with one holding `seed_toml`.
pub fn set_seed(disk: &Path, seed_toml: &Path) -> Result<(), ImageError> {
    let text =
        std::fs::read_to_string(seed_toml).map_err(io(format!("read {}", seed_toml.display())))?;
    crate::seed::Seed::parse(&text)?;
    let mut d = open_rw(disk)?;
    appliance_table(&mut d, &disk.display().to_string())?;
    write_seed(&mut d, Some(seed_toml))?;
    d.sync_all().map_err(io("sync"))
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallReport {
    pub target_bytes: u64,
    pub data_bytes: u64,
}

/// Writes the appliance from `source` (a booted appliance disk or an image file) onto
/// `target`: boot code, partition table, system part, a seed (the given one, or none), and a
/// fresh data partition spanning the rest of the target. Refuses a target that holds data.
pub fn install(
    source: &Path,
    target: &Path,
    seed_toml: Option<&Path>,
    force: bool,
) -> Result<InstallReport, ImageError> {
    if source.canonicalize().ok() == target.canonicalize().ok() {
        return Err(ImageError::Invalid(
            "the target is the disk the appliance runs from".into(),
        ));
    }
    let mut src = File::open(source).map_err(io(format!("open {}", source.display())))?;
    appliance_table(&mut src, &source.display().to_string())?;
    let mut dst = open_rw(target)?;
    let size = size_of(&mut dst)?;
    let head = read_at(&mut dst, 0, MIB as usize)?;
    if layout::looks_used(&head) && !force {
        return Err(ImageError::Refused(format!(
            "{} holds data (its first MiB is not empty); use --force to overwrite it",
            target.display()
        )));
    }
    let parts = layout::partitions(size).map_err(ImageError::Invalid)?;
    eprintln!("installing onto {} ({} MiB)", target.display(), size / MIB);
    let mut mbr = [0u8; 512];
    mbr[..440].copy_from_slice(&read_at(&mut src, 0, 440)?);
    layout::write_table(&mut mbr, &parts);
    dst.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    dst.write_all(&mbr).map_err(io("write MBR"))?;
    // Wipe what lay between the MBR and the first partition (old boot loaders, GPT headers).
    dst.write_all(&vec![0u8; (layout::SYS_START - 512) as usize])
        .map_err(io("clear"))?;
    eprintln!("  system part ({} MiB)", layout::SYS_SIZE / MIB);
    copy_range(&mut src, &mut dst, layout::SYS_START, layout::SYS_SIZE)?;
    eprintln!("  seed");
    write_seed(&mut dst, seed_toml)?;
    dst.sync_all().map_err(io("sync"))?;
    drop(dst);
    eprintln!("  data partition (ext4, {} MiB)", parts[2].size / MIB);
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            layout::LABEL_DATA,
            "-E",
            &format!("offset={}", parts[2].start),
            path_str(target)?,
            &format!("{}k", parts[2].size / 1024),
        ],
    )?;
    Ok(InstallReport {
        target_bytes: size,
        data_bytes: parts[2].size,
    })
}

/// Replaces the system part (and boot code) of an installed appliance disk with those of a
/// newer image; the seed and the data partition are kept.
pub fn upgrade(disk: &Path, image: &Path) -> Result<(), ImageError> {
    let mut img = File::open(image).map_err(io(format!("open {}", image.display())))?;
    appliance_table(&mut img, &image.display().to_string())?;
    let mut d = open_rw(disk)?;
    let parts = appliance_table(&mut d, &disk.display().to_string())?;
    let code = read_at(&mut img, 0, 440)?;
    d.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
    d.write_all(&code).map_err(io("write boot code"))?;
    copy_range(&mut img, &mut d, parts[0].start, parts[0].size)?;
    d.sync_all().map_err(io("sync"))?;
    eprintln!(
        "upgraded the system part of {} from {}; seed and data kept",
        disk.display(),
        image.display()
    );
    Ok(())
}
