//! Running the external tools the image build needs (mkfs.fat, mcopy, syslinux, mke2fs,
//! qemu-img, dpkg-deb, ldd), with errors that name the tool and the package that has it.

use std::path::Path;
use std::process::Command;

use crate::ImageError;

/// Debian package that provides each tool (for error messages).
fn package_of(tool: &str) -> &'static str {
    match tool {
        "mkfs.fat" => "dosfstools",
        "mcopy" | "mmd" => "mtools",
        "syslinux" => "syslinux",
        "mke2fs" => "e2fsprogs",
        "qemu-img" => "qemu-utils",
        "dpkg-deb" => "dpkg",
        "objcopy" => "binutils",
        "ldd" => "libc-bin",
        "xz" => "xz-utils",
        _ => "?",
    }
}

pub fn run(tool: &str, args: &[&str]) -> Result<String, ImageError> {
    run_bytes(tool, args).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// Like [`run`], with stdout as bytes (decompressors).
pub fn run_bytes(tool: &str, args: &[&str]) -> Result<Vec<u8>, ImageError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| ImageError::Tool {
            tool: tool.into(),
            detail: format!(
                "cannot run it ({e}); install the {} package",
                package_of(tool)
            ),
        })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            tool: tool.into(),
            detail: format!(
                "{} {}: {}",
                tool,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

pub fn path_str(p: &Path) -> Result<&str, ImageError> {
    p.to_str()
        .ok_or_else(|| ImageError::Invalid(format!("path {} is not UTF-8", p.display())))
}

/// Shared libraries (and the dynamic loader) an ELF binary needs, from `ldd`.
pub fn libraries(binary: &Path) -> Result<Vec<String>, ImageError> {
    let out = match run("ldd", &[path_str(binary)?]) {
        Ok(o) => o,
        // Static binaries: "not a dynamic executable" (ldd exits 1).
        Err(ImageError::Tool { detail, .. }) if detail.contains("not a dynamic") => {
            return Ok(vec![])
        }
        Err(e) => return Err(e),
    };
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    Ok(libs)
}

/// Writes a FAT filesystem image of `size_kib` with `label` holding `files` (dest, source).
pub fn fat_image(
    out: &Path,
    fat_bits: u8,
    label: &str,
    size_kib: u64,
    dirs: &[&str],
    files: &[(&str, &Path)],
) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(out);
    let o = path_str(out)?;
    run(
        "mkfs.fat",
        &[
            "-F",
            &fat_bits.to_string(),
            "-n",
            label,
            "-C",
            o,
            &size_kib.to_string(),
        ],
    )?;
    for d in dirs {
        run("mmd", &["-i", o, &format!("::/{d}")])?;
    }
    for (dest, src) in files {
        run(
            "mcopy",
            &["-o", "-i", o, path_str(src)?, &format!("::/{dest}")],
        )?;
    }
    Ok(())
}
