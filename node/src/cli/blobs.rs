//! `rackd blobs …`: upload, download, list and forget content-addressed artifacts.
//!
//! Layer: part of `cli`; talks to the API through `client` only.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use rackd_types::{Blob, Digest};

use crate::cli::output::{table, time};
use crate::cli::BlobCmd;
use crate::client::{blobs::Progress, Client};

/// A progress line on stderr when it is a terminal (nothing otherwise).
fn progress(verb: &'static str) -> Progress {
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
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                println!("{}", b.digest);
            }
        }
        BlobCmd::Get { digest: d, file } => {
            let n = c
                .get_blob(&digest(&d)?, &file, progress("downloaded"))
                .await?;
            if !json {
                println!("{} bytes written to {}", n, file.display());
            }
        }
        BlobCmd::List => {
            let bs: Vec<Blob> = c.get_all("/v1/blobs").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&bs)?);
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
