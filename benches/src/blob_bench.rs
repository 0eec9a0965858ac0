//! Artifact distribution benchmark: one blob (1 GiB by default) uploaded to a 3-voter
//! cluster, then fetched by 4 location nodes at once, as their machines would ask for it.
//!
//! Measures, in one run:
//! - the upload through the API (streamed and hashed into one node's store) until two voters
//!   hold a verified copy: seconds and MiB/s;
//! - the distribution: 4 location nodes (one per site) are asked for the blob on their HTTP
//!   boot servers at the same moment; each fetches it from a voter over the peer transport
//!   (verifying while it writes), then serves it: time until every client has every byte,
//!   aggregate MiB/s;
//! - peak memory (VmHWM) of every node before and after, to show that memory does not grow
//!   with the artifact's size;
//! - a yardstick: `sha256sum` of the same file (one core hashing from the page cache), the
//!   cost every copy pays once.
//!
//! Results go to `benches/results/blobs.json` (or `--out PATH`). Uses the `rackd` binary from
//! `RACKD_BIN` (point it at a release build for meaningful numbers).
//!
//! Usage: `blob-bench [--size-mib N] [--out PATH]`

use std::time::Instant;

use anyhow::{bail, Context};
use rackd_tests::{proc_status_kib, Cluster};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct NodeMemory {
    node: usize,
    role: &'static str,
    vm_hwm_before_kib: u64,
    vm_hwm_after_kib: u64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    date_unix: u64,
    rackd_bin: String,
    size_bytes: u64,
    upload_secs: f64,
    upload_mib_per_sec: f64,
    location_nodes: usize,
    distribution_secs: f64,
    distribution_mib_per_sec_aggregate: f64,
    per_site_secs: Vec<f64>,
    sha256sum_secs: f64,
    sha256sum_mib_per_sec: f64,
    memory: Vec<NodeMemory>,
    max_hwm_growth_kib: u64,
}

/// Pseudo-random bytes (xorshift) written in 8 MiB pieces.
fn write_file(path: &std::path::Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut left = size;
    let mut buf = vec![0u8; 8 << 20];
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// `sha256:<hex>` of a file, by coreutils' `sha256sum`.
fn sha256sum(path: &std::path::Path) -> anyhow::Result<String> {
    let o = std::process::Command::new("sha256sum").arg(path).output()?;
    let hex = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .context("sha256sum output")?
        .to_string();
    Ok(format!("sha256:{hex}"))
}

fn hwm(c: &Cluster, i: usize) -> u64 {
    c.nodes[i]
        .child
        .as_ref()
        .and_then(|ch| proc_status_kib(ch.id(), "VmHWM:"))
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let size_mib: u64 = arg("--size-mib").map_or(Ok(1024), |s| s.parse())?;
    let out = arg("--out")
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/results/blobs.json").to_string());
    let size = size_mib << 20;
    let sites = 4;

    let mut c = Cluster::start("blob-bench", 3, &["--blob-check-secs", "1"]).await?;
    for s in 0..sites {
        let _: serde_json::Value = c
            .post_json(0, "/v1/locations", &json!({"name": format!("site{s}")}))
            .await?;
        let site = format!("site{s}");
        c.join_with(
            0,
            true,
            &[
                "--location",
                &site,
                "--http-boot-listen",
                "{ip}:0",
                "--tftp-root",
                "{dir}/tftp",
            ],
        )
        .await?;
    }
    let file = c.dir.join("artifact.bin");
    write_file(&file, size)?;
    let t = Instant::now();
    let digest = sha256sum(&file)?;
    let sha_secs = t.elapsed().as_secs_f64();
    let before: Vec<u64> = (0..c.nodes.len()).map(|i| hwm(&c, i)).collect();

    // Upload through a follower, streamed from the file.
    let l = c.wait_leader(std::time::Duration::from_secs(30)).await?;
    let via = (l + 1) % 3;
    let t = Instant::now();
    let f = tokio::fs::File::open(&file).await?;
    let r = c
        .http
        .put(format!("{}/v1/blobs/{digest}", c.url(via)))
        .bearer_auth(&c.token)
        .header("content-length", size)
        .body(reqwest::Body::from(f))
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("upload: {} {}", r.status(), r.text().await?);
    }
    let upload_secs = t.elapsed().as_secs_f64();
    let initrd_file = c.dir.join("initrd");
    std::fs::write(&initrd_file, b"tiny initrd")?;
    let initrd = sha256sum(&initrd_file)?;
    let r = c
        .http
        .put(format!("{}/v1/blobs/{initrd}", c.url(0)))
        .bearer_auth(&c.token)
        .body(b"tiny initrd".to_vec())
        .send()
        .await?;
    if r.status().as_u16() != 201 {
        bail!("upload initrd: {}", r.status());
    }
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/images",
            &json!({"name": "big", "kernel": digest, "initrd": initrd}),
        )
        .await?;

    // Every site at once: its HTTP boot server fetches the blob and streams it.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 3..3 + sites {
        let base = std::fs::read_to_string(c.nodes[i].data_dir.join("http-boot.addr"))?;
        let url = format!("http://{}/blobs/{digest}", base.trim());
        let http = reqwest::Client::new();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut r = http.get(&url).send().await?;
            if !r.status().is_success() {
                bail!("{url}: {}", r.status());
            }
            let mut n = 0u64;
            while let Some(chunk) = r.chunk().await? {
                n += chunk.len() as u64;
            }
            Ok::<_, anyhow::Error>((n, t.elapsed().as_secs_f64()))
        }));
    }
    let mut per_site = Vec::new();
    for task in tasks {
        let (n, secs) = task.await??;
        if n != size {
            bail!("a site sent {n} of {size} bytes");
        }
        per_site.push(secs);
    }
    let dist_secs = t.elapsed().as_secs_f64();
    let after: Vec<u64> = (0..c.nodes.len()).map(|i| hwm(&c, i)).collect();
    let memory: Vec<NodeMemory> = (0..c.nodes.len())
        .map(|i| NodeMemory {
            node: i + 1,
            role: if i < 3 { "voter" } else { "location" },
            vm_hwm_before_kib: before[i],
            vm_hwm_after_kib: after[i],
        })
        .collect();
    let mib = size as f64 / (1 << 20) as f64;
    let report = Report {
        benchmark: "blob distribution",
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        rackd_bin: rackd_tests::rackd_bin().display().to_string(),
        size_bytes: size,
        upload_secs,
        upload_mib_per_sec: mib / upload_secs,
        location_nodes: sites,
        distribution_secs: dist_secs,
        distribution_mib_per_sec_aggregate: mib * sites as f64 / dist_secs,
        per_site_secs: per_site,
        sha256sum_secs: sha_secs,
        sha256sum_mib_per_sec: mib / sha_secs,
        max_hwm_growth_kib: memory
            .iter()
            .map(|m| m.vm_hwm_after_kib.saturating_sub(m.vm_hwm_before_kib))
            .max()
            .unwrap_or(0),
        memory,
    };
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(&out, &text).with_context(|| format!("write {out}"))?;
    println!("{text}");
    Ok(())
}
