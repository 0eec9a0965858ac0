//! `rackd blobs …`: upload, download, list and forget content-addressed artifacts; `rackd
//! images …`: OS images made of them.
//!
//! Layer: part of `cli`; talks to the API through `client` only.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::Context;
use rackd_types::{Blob, CreateImage, Digest, Image, UpdateImage};

use crate::cli::output::{table, time};
use crate::cli::{BlobCmd, OsImageCmd};
use crate::client::{blobs::Progress, Client};

/// A progress line on stderr when it is a terminal (nothing otherwise).
pub fn progress(verb: &'static str) -> Progress {
    let tty = std::io::stderr().is_terminal();
    let last = std::sync::Mutex::new(0u64);
    Arc::new(move |done, total| {
        if !tty {
            return;
        }
        let pct = (done * 100).checked_div(total).unwrap_or(0);
        let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
        if pct != *l || done == total {
            *l = pct;
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            eprint!("\r{verb} {:.1}/{:.1} MiB ({pct}%)", mib(done), mib(total));
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    })
}

fn digest(s: &str) -> anyhow::Result<Digest> {
    Digest::parse(s).map_err(anyhow::Error::msg)
}

pub async fn run(c: &Client, json: bool, cmd: BlobCmd) -> anyhow::Result<()> {
    match cmd {
        BlobCmd::Put { file } => {
            let b = c.put_blob(&file, progress("uploaded")).await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                crate::out!("{}", b.digest);
            }
        }
        BlobCmd::Get { digest: d, file } => {
            let n = c
                .get_blob(&digest(&d)?, &file, progress("downloaded"))
                .await?;
            if !json {
                crate::out!("{} bytes written to {}", n, file.display());
            }
        }
        BlobCmd::List => {
            let bs: Vec<Blob> = c.get_all("/v1/blobs").await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&bs)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = bs
                .iter()
                .map(|b| {
                    let holders: Vec<String> = b.holders.iter().map(u64::to_string).collect();
                    vec![
                        b.digest.to_string(),
                        b.size.to_string(),
                        holders.join(","),
                        time(b.created_at),
                    ]
                })
                .collect();
            table(&["DIGEST", "SIZE", "HOLDERS", "CREATED"], &rows);
        }
        BlobCmd::Remove { digest: d } => {
            c.delete(&format!("/v1/blobs/{}", digest(&d)?), None)
                .await?;
        }
    }
    Ok(())
}

/// `rackd images …`: OS images made of blobs.
pub async fn images(c: &Client, json: bool, cmd: OsImageCmd) -> anyhow::Result<()> {
    match cmd {
        OsImageCmd::Upload {
            name,
            kernel,
            initrd,
            rootfs,
            cmdline,
        } => {
            let put = |what: &'static str, f: std::path::PathBuf| async move {
                c.put_blob(&f, progress(what))
                    .await
                    .map(|b| b.digest.to_string())
                    .with_context(|| format!("upload {}", f.display()))
            };
            let kernel = put("kernel", kernel).await?;
            let initrd = put("initrd", initrd).await?;
            let rootfs = match rootfs {
                Some(f) => Some(put("rootfs", f).await?),
                None => None,
            };
            let existing: Vec<Image> = c.get_all("/v1/images").await?;
            let img: Image = match existing.iter().find(|i| i.name == name) {
                None => {
                    let body = CreateImage {
                        name,
                        kernel,
                        initrd,
                        cmdline,
                        rootfs,
                    };
                    c.post("/v1/images", &body).await?
                }
                Some(i) => {
                    let patch = UpdateImage {
                        kernel: Some(kernel),
                        initrd: Some(initrd),
                        cmdline: Some(cmdline),
                        rootfs,
                    };
                    c.patch(
                        &format!("/v1/images/{}", i.meta.id),
                        &patch,
                        Some(i.meta.version),
                    )
                    .await?
                }
            };
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&img)?);
            } else {
                crate::out!(
                    "image {} (id {}): kernel {}",
                    img.name,
                    img.meta.id,
                    img.kernel
                );
            }
        }
        OsImageCmd::List => {
            let is: Vec<Image> = c.get_all("/v1/images").await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&is)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = is
                .iter()
                .map(|i| {
                    vec![
                        i.meta.id.to_string(),
                        i.name.clone(),
                        i.kernel.clone(),
                        i.initrd.clone(),
                        i.rootfs.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            table(&["ID", "NAME", "KERNEL", "INITRD", "ROOTFS"], &rows);
        }
        OsImageCmd::Show { image } => {
            let id = crate::cli::resolve::image(c, &image).await?;
            let i: Image = c.get(&format!("/v1/images/{id}")).await?;
            if json {
                crate::out!("{}", serde_json::to_string_pretty(&i)?);
                return Ok(());
            }
            crate::out!("id:      {}", i.meta.id);
            crate::out!("name:    {}", i.name);
            crate::out!("kernel:  {}", i.kernel);
            crate::out!("initrd:  {}", i.initrd);
            crate::out!("rootfs:  {}", i.rootfs.as_deref().unwrap_or("-"));
            crate::out!("cmdline: {}", i.cmdline);
            crate::out!("version: {}", i.meta.version);
        }
        OsImageCmd::Delete { name } => {
            let is: Vec<Image> = c.get_all("/v1/images").await?;
            let Some(i) = is.iter().find(|i| i.name == name) else {
                anyhow::bail!("no image named {name:?}");
            };
            c.delete(&format!("/v1/images/{}", i.meta.id), Some(i.meta.version))
                .await?;
        }
    }
    Ok(())
}
