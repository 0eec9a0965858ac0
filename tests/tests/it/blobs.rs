//! Content-addressed artifacts on a real cluster: an upload through a follower (with the CLI)
//! is answered once two voters hold a verified copy; every node serves it (a node without a
//! copy streams a holder's), whole and by range, as `sha256sum` and the bytes agree; a body
//! that is not what its digest says is refused and leaves nothing; a voter whose copy is lost
//! says so and another voter copies the blob again; a forgotten blob's copies are removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rackd_tests::{rackd_bin, Cluster};
use rackd_types::{Blob, ClusterInfo, Page};
use reqwest::Method;

const T: Duration = Duration::from_secs(60);

/// Pseudo-random bytes (xorshift), so that nothing compresses or repeats.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `sha256:<hex>` of a file, by coreutils' `sha256sum`.
fn sha256sum(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    format!("sha256:{}", s.split_whitespace().next().unwrap())
}

fn copy_path(c: &Cluster, i: usize, digest: &str) -> PathBuf {
    c.nodes[i]
        .data_dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

async fn record(c: &Cluster, i: usize, digest: &str) -> Option<Blob> {
    let p: Page<Blob> = c.get_json(i, "/v1/blobs").await.ok()?;
    p.items.into_iter().find(|b| b.digest.as_str() == digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_live_on_two_voters_stream_from_any_node_and_heal() {
    let args = ["--blob-check-secs", "1", "--blob-orphan-secs", "2"];
    let mut c = Cluster::start("blobs", 3, &args).await.expect("cluster");
    let learner = c.join(0, true).await.expect("learner");
    let l = c.wait_leader(T).await.unwrap();
    let follower = (l + 1) % 3;
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let voter_ids: Vec<u64> = ci
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.id)
        .collect();
    assert_eq!(voter_ids.len(), 3);

    // 40 MiB through a follower, with the CLI: it is answered once two voters hold it.
    let file = c.dir.join("artifact.bin");
    let data = bytes(40 << 20, 7);
    std::fs::write(&file, &data).unwrap();
    let digest = sha256sum(&file);
    let token = c.token.clone();
    let cli = |url: String, args: &[&str]| {
        let out = Command::new(rackd_bin())
            .args(args)
            .env("RACKD_SERVER", url)
            .env("RACKD_TOKEN", &token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(c.url(follower), &["blobs", "put", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(out, digest);
    let b = record(&c, l, &digest).await.expect("recorded");
    assert_eq!(b.size, data.len() as u64);
    let voter_copies = |b: &Blob| b.holders.iter().filter(|h| voter_ids.contains(h)).count();
    assert!(voter_copies(&b) >= 2, "{b:?}");
    assert!(b.holders.contains(&(follower as u64 + 1)), "{b:?}");
    for h in &b.holders {
        assert_eq!(sha256sum(&copy_path(&c, *h as usize - 1, &digest)), digest);
    }
    // Nothing half-written is left in any store.
    for n in &c.nodes {
        let tmp = n.data_dir.join("blobs/tmp");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{tmp:?}");
    }

    // The learner holds no copy: it streams a holder's. The CLI verifies before renaming.
    assert!(!copy_path(&c, learner, &digest).exists());
    let out_file = c.dir.join("downloaded.bin");
    let (ok, _, err) = cli(
        c.url(learner),
        &["blobs", "get", &digest, out_file.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert_eq!(sha256sum(&out_file), digest);
    // Ranges, from a holder and through the learner.
    for i in [b.holders[0] as usize - 1, learner] {
        let r = c
            .http
            .get(format!("{}/v1/blobs/{digest}", c.url(i)))
            .bearer_auth(&c.token)
            .header("range", "bytes=1000000-1999999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 206, "node {i}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes 1000000-1999999/{}", data.len())
        );
        let body = r.bytes().await.unwrap();
        assert!(
            body[..] == data[1_000_000..2_000_000],
            "node {i}: range bytes"
        );
        let h = c
            .http
            .head(format!("{}/v1/blobs/{digest}", c.url(i)))
            .bearer_auth(&c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(h.status().as_u16(), 200);
        assert_eq!(
            h.headers()["etag"].to_str().unwrap(),
            format!("\"{digest}\"")
        );
    }

    // A body that is not what its digest says: 400, nothing stored or recorded.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let r = c
        .http
        .put(format!("{}/v1/blobs/{wrong}", c.url(follower)))
        .bearer_auth(&c.token)
        .body(bytes(3 << 20, 9))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("SHA-256"),
        "{v}"
    );
    assert!(record(&c, l, &wrong).await.is_none());
    assert!(!copy_path(&c, follower, &wrong).exists());
    // A malformed digest is a 400 too; a reader token may not upload.
    let (s, _) = c
        .request(follower, Method::PUT, "/v1/blobs/sha256:xyz", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 400);

    // A voter loses its copy (its disk was replaced): it says so, and the blob is copied
    // again until two voters hold it.
    let lost = b
        .holders
        .iter()
        .map(|h| *h as usize - 1)
        .find(|i| *i != l && *i < 3)
        .unwrap_or(b.holders[0] as usize - 1);
    c.nodes[lost].stop();
    std::fs::remove_file(copy_path(&c, lost, &digest)).unwrap();
    c.nodes[lost].start().unwrap();
    let lost_id = lost as u64 + 1;
    let any = (lost + 1) % 3;
    c.wait_until(T, "the lost copy recorded", |c| {
        let d = digest.clone();
        async move {
            record(c, any, &d)
                .await
                .is_some_and(|b| !b.holders.contains(&lost_id) || copy_path(c, lost, &d).exists())
        }
    })
    .await
    .unwrap();
    c.wait_until(T, "two voters hold the blob again", |c| {
        let d = digest.clone();
        let voter_ids = voter_ids.clone();
        async move {
            record(c, any, &d).await.is_some_and(|b| {
                b.holders.iter().filter(|h| voter_ids.contains(h)).count() >= 2
                    && b.holders
                        .iter()
                        .all(|h| copy_path(c, *h as usize - 1, &d).exists())
            })
        }
    })
    .await
    .unwrap();
    let b = record(&c, any, &digest).await.unwrap();
    for h in &b.holders {
        assert_eq!(sha256sum(&copy_path(&c, *h as usize - 1, &digest)), digest);
    }
    let events: Page<rackd_types::Event> = c.get_json(any, "/v1/events?limit=1000").await.unwrap();
    assert!(
        events.items.iter().any(|e| e.kind == "blob.copy_lost"),
        "the loss is journalled"
    );

    // Forgotten: every copy is removed.
    let (ok, _, err) = cli(c.url(learner), &["blobs", "remove", &digest]);
    assert!(ok, "{err}");
    assert!(record(&c, l, &digest).await.is_none());
    c.wait_until(T, "every copy removed", |c| {
        let d = digest.clone();
        async move { (0..c.nodes.len()).all(|i| !copy_path(c, i, &d).exists()) }
    })
    .await
    .unwrap();
    let r = c
        .http
        .get(format!("{}/v1/blobs/{digest}", c.url(learner)))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
