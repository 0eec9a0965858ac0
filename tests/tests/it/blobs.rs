//! Content-addressed artifacts on a real cluster: an upload through a follower (with the CLI)
//! is answered once two voters hold a verified copy; every node serves it (a node without a
//! copy streams a holder's), whole and by range, as `sha256sum` and the bytes agree; a body
//! that is not what its digest says is refused and leaves nothing; a voter whose copy is lost
//! says so and another voter copies the blob again; a forgotten blob's copies are removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rackd_tests::Cluster;
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
    let put = c.cli(follower, ["blobs", "put", file.to_str().unwrap()]);
    assert!(put.ok, "{}", put.stderr);
    assert_eq!(put.stdout.trim(), digest);
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
    let get = c.cli(
        learner,
        ["blobs", "get", &digest, out_file.to_str().unwrap()],
    );
    assert!(get.ok, "{}", get.stderr);
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
    let rm = c.cli(learner, ["blobs", "remove", &digest]);
    assert!(rm.ok, "{}", rm.stderr);
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

/// Upload `data` as a blob through node `i` (raw PUT); its digest.
async fn put(c: &Cluster, i: usize, name: &str, data: &[u8]) -> String {
    let file = c.dir.join(name);
    std::fs::write(&file, data).unwrap();
    let digest = sha256sum(&file);
    let r = c
        .http
        .put(format!("{}/v1/blobs/{digest}", c.url(i)))
        .bearer_auth(&c.token)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    digest
}

/// curl a URL into a file; (HTTP status, the file's digest).
fn curl(url: &str, out: &Path, extra: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "-m", "60", "-w", "%{http_code}", "-o"])
        .arg(out)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let d = if out.exists() {
        sha256sum(out)
    } else {
        String::new()
    };
    (code, d)
}

/// A location node serves the blobs of its machines' images from its own store: fetched
/// ahead of a deploy (and on demand), kept within its cache bound (least recently used and
/// unneeded first), served to curl whole and by range — also once every voter is gone. The
/// leader forgets a blob no image uses; a blob an image uses cannot be forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_node_caches_image_blobs_and_serves_them_cut_off() {
    let args = ["--blob-check-secs", "1", "--blob-gc-secs", "15"];
    let mut c = Cluster::start("blobsite", 3, &args).await.expect("cluster");
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &serde_json::json!({"name": "dc1"}))
        .await
        .unwrap();
    let site = c
        .join_with(
            0,
            true,
            &[
                &crate::http_boot::BOOT_NODE_ARGS[..],
                &["--blob-cache-bytes", "14680064"],
            ]
            .concat(),
        )
        .await
        .expect("location learner");
    let site_id = site as u64 + 1;
    let boot = format!(
        "http://{}",
        std::fs::read_to_string(c.nodes[site].data_dir.join("http-boot.addr"))
            .unwrap()
            .trim()
    );
    // An unused blob first (the leader forgets it), then an image's kernel, initrd and root
    // filesystem, and another image's kernel.
    let unused = put(&c, 1, "unused", &bytes(1 << 20, 5)).await;
    // The image through the CLI: its files become blobs, the image names their digests.
    let mut files = Vec::new();
    for (name, n, seed) in [
        ("kernel", 4 << 20, 1),
        ("initrd", 6 << 20, 2),
        ("rootfs", 2 << 20, 3),
    ] {
        let f = c.dir.join(name);
        std::fs::write(&f, bytes(n, seed)).unwrap();
        files.push(f);
    }
    let (kernel, initrd, rootfs) = (
        sha256sum(&files[0]),
        sha256sum(&files[1]),
        sha256sum(&files[2]),
    );
    let mut args: Vec<std::ffi::OsString> = ["images", "upload", "deb", "-o", "json"]
        .iter()
        .map(Into::into)
        .collect();
    for (flag, f) in [
        ("--kernel", &files[0]),
        ("--initrd", &files[1]),
        ("--rootfs", &files[2]),
    ] {
        args.push(flag.into());
        args.push(f.into());
    }
    args.extend(["--cmdline".into(), "console=ttyS0".into()]);
    let out = c.cli(1, args);
    assert!(out.ok, "{}", out.stderr);
    let img: rackd_types::Image = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (
            img.kernel.as_str(),
            img.initrd.as_str(),
            img.rootfs.as_deref()
        ),
        (kernel.as_str(), initrd.as_str(), Some(rootfs.as_str()))
    );
    let other = put(&c, 0, "other", &bytes(5 << 20, 4)).await;
    let img2 = serde_json::json!({"name": "other", "kernel": other, "initrd": initrd});
    let _: serde_json::Value = c.post_json(0, "/v1/images", &img2).await.unwrap();
    // An image naming a blob that is not stored is refused.
    let missing = format!("sha256:{}", "cd".repeat(32));
    let (s, v) = c
        .request(
            0,
            Method::POST,
            "/v1/images",
            Some(serde_json::json!({"name": "x", "kernel": missing, "initrd": initrd})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 409, "{v}");

    let m: serde_json::Value = c
        .post_json(
            0,
            "/v1/machines",
            &serde_json::json!({"hostname": "web1", "location": "dc1",
                "macs": ["52:54:00:bb:00:01"], "state": "ready"}),
        )
        .await
        .unwrap();
    let (s, v) = c
        .request(
            0,
            Method::POST,
            &format!("/v1/machines/{}/deploy", m["id"]),
            Some(serde_json::json!({"image": "deb"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");

    // The location node fetches the deploying machine's blobs ahead of it and says it holds
    // them (its site's other nodes may copy from it).
    let needed = [kernel.clone(), initrd.clone(), rootfs.clone()];
    c.wait_until(T, "the location node holds the image's blobs", |c| {
        let needed = needed.clone();
        async move {
            let mut all = true;
            for d in &needed {
                all &= copy_path(c, site, d).exists()
                    && record(c, 0, d)
                        .await
                        .is_some_and(|b| b.holders.contains(&site_id));
            }
            all
        }
    })
    .await
    .unwrap();
    // The site fetched them over its QUIC link (mutual TLS, the peer port's UDP twin).
    let log = std::fs::read_to_string(&c.nodes[site].log).unwrap();
    assert!(
        log.contains("fetching over the QUIC link"),
        "no QUIC fetch logged"
    );
    let script = reqwest::get(format!("{boot}/boot/52:54:00:bb:00:01.ipxe"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains(&format!("kernel {boot}/blobs/{kernel} ")),
        "{script}"
    );
    assert!(
        script.contains(&format!("initrd {boot}/blobs/{initrd}\n")),
        "{script}"
    );
    assert!(
        script.contains(&format!("rackd.rootfs={boot}/blobs/{rootfs} ")),
        "{script}"
    );

    // Another image's kernel, asked for directly: fetched on demand and served; then it is
    // the one dropped to keep the cache within 14 MiB (the deploying machine's stay).
    let out = c.dir.join("got");
    let (code, d) = curl(&format!("{boot}/blobs/{other}"), &out, &[]);
    assert_eq!((code, d.as_str()), (200, other.as_str()));
    c.wait_until(T, "the unneeded copy is evicted", |c| {
        let other = other.clone();
        async move {
            !copy_path(c, site, &other).exists()
                && record(c, 0, &other)
                    .await
                    .is_some_and(|b| !b.holders.contains(&site_id))
        }
    })
    .await
    .unwrap();
    for d in &needed {
        assert!(copy_path(&c, site, d).exists(), "{d} kept");
    }
    // A damaged copy is never served: the site's cached kernel rotted in place is hashed,
    // removed and fetched again; a voter's damaged copy is removed instead of sent (the site
    // takes the next holder's), and the voters copy the blob again.
    let rot = |p: &Path| {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.seek(std::io::SeekFrom::Start(1000)).unwrap();
        f.write_all(b"bit rot").unwrap();
    };
    rot(&copy_path(&c, site, &kernel));
    let (code, d) = curl(&format!("{boot}/blobs/{kernel}"), &c.dir.join("k1"), &[]);
    assert_eq!((code, d.as_str()), (200, kernel.as_str()));
    let first = *record(&c, 0, &other)
        .await
        .unwrap()
        .holders
        .iter()
        .find(|h| **h != site_id)
        .unwrap();
    rot(&copy_path(&c, first as usize - 1, &other));
    let (code, d) = curl(&format!("{boot}/blobs/{other}"), &c.dir.join("o1"), &[]);
    assert_eq!((code, d.as_str()), (200, other.as_str()));
    c.wait_until(T, "two sound voter copies again", |c| {
        let other = other.clone();
        async move {
            let Some(b) = record(c, 0, &other).await else {
                return false;
            };
            let voters: Vec<u64> = b.holders.iter().copied().filter(|h| *h <= 3).collect();
            voters.len() >= 2
                && voters.iter().all(|h| {
                    let p = copy_path(c, *h as usize - 1, &other);
                    p.exists() && sha256sum(&p) == other
                })
        }
    })
    .await
    .unwrap();
    // A blob no image uses is not served to machines, and the leader forgets it.
    let (code, _) = curl(&format!("{boot}/blobs/{unused}"), &c.dir.join("no"), &[]);
    assert_eq!(code, 404);
    c.wait_until(T, "the unused blob is forgotten", |c| {
        let unused = unused.clone();
        async move { record(c, 0, &unused).await.is_none() }
    })
    .await
    .unwrap();
    for d in [&kernel, &initrd, &rootfs, &other] {
        assert!(record(&c, 0, d).await.is_some(), "{d} is used by an image");
    }
    let (s, v) = c
        .request(0, Method::DELETE, &format!("/v1/blobs/{kernel}"), None, &[])
        .await
        .unwrap();
    assert_eq!(s, 409, "{v}");

    // Every voter gone: the site still serves its machines' artifacts, whole and by range.
    for i in 0..3 {
        c.nodes[i].kill();
    }
    for d in &needed {
        let out = c.dir.join("cut-off");
        let _ = std::fs::remove_file(&out);
        let (code, got) = curl(&format!("{boot}/blobs/{d}"), &out, &[]);
        assert_eq!((code, got.as_str()), (200, d.as_str()));
    }
    let out = c.dir.join("range");
    let (code, _) = curl(&format!("{boot}/blobs/{kernel}"), &out, &["-r", "100-199"]);
    assert_eq!(code, 206);
    assert!(std::fs::read(&out).unwrap()[..] == bytes(4 << 20, 1)[100..200]);
}

/// Two location nodes of one site: the second fetches from the first (its site's holder,
/// over the QUIC link) when the voters are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_node_fetches_from_its_sibling_when_the_voters_are_gone() {
    let mut c = Cluster::start("blobsibling", 3, &["--blob-check-secs", "1"])
        .await
        .expect("cluster");
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &serde_json::json!({"name": "dc1"}))
        .await
        .unwrap();
    let site_args = crate::http_boot::BOOT_NODE_ARGS;
    let a = c.join_with(0, true, &site_args).await.expect("site node a");
    let b = c.join_with(0, true, &site_args).await.expect("site node b");
    let boot = |i: usize| {
        format!(
            "http://{}",
            std::fs::read_to_string(c.nodes[i].data_dir.join("http-boot.addr"))
                .unwrap()
                .trim()
        )
    };
    let (boot_a, boot_b) = (boot(a), boot(b));
    let kernel = put(&c, 0, "kernel", &bytes(3 << 20, 11)).await;
    let initrd = put(&c, 1, "initrd", &bytes(1 << 20, 12)).await;
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/images",
            &serde_json::json!({"name": "deb", "kernel": kernel, "initrd": initrd}),
        )
        .await
        .unwrap();
    // Site node a is asked first: it fetches from a voter and says it holds the kernel.
    let (code, d) = curl(&format!("{boot_a}/blobs/{kernel}"), &c.dir.join("a"), &[]);
    assert_eq!((code, d.as_str()), (200, kernel.as_str()));
    let a_id = a as u64 + 1;
    // b's own replica knows a holds it (b may be cut off from here on).
    c.wait_until(T, "site node b knows a holds the kernel", |c| {
        let kernel = kernel.clone();
        async move {
            let p: Result<Page<Blob>, _> = c.get_json(b, "/v1/blobs?stale=true").await;
            p.is_ok_and(|p| {
                p.items
                    .iter()
                    .any(|x| x.digest.as_str() == kernel && x.holders.contains(&a_id))
            })
        }
    })
    .await
    .unwrap();
    for i in 0..3 {
        c.nodes[i].kill();
    }
    let (code, d) = curl(&format!("{boot_b}/blobs/{kernel}"), &c.dir.join("b"), &[]);
    assert_eq!((code, d.as_str()), (200, kernel.as_str()));
    let log = std::fs::read_to_string(&c.nodes[b].log).unwrap();
    // The log's colour escapes removed.
    let plain = |l: &str| {
        let mut out = String::new();
        let mut esc = false;
        for ch in l.chars() {
            match (esc, ch) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (false, c) => out.push(c),
                _ => {}
            }
        }
        out
    };
    assert!(
        log.lines()
            .map(plain)
            .any(|l| l.contains("fetching over the QUIC link")
                && l.contains(&format!("node={a_id} "))),
        "site node b fetched from its sibling over the link"
    );
}
