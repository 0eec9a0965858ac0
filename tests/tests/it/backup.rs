//! Backup and disaster recovery (issue 13, item 5): `rackd backup create` against a voter of a
//! 3-node cluster writes one checked file holding every acknowledged write and the cluster CA
//! sealed with the passphrase; `rackd backup inspect` reads it back offline; a damaged file, a
//! wrong passphrase, a short one and an existing FILE are refused with a clear error. Then
//! every node is destroyed, `rackd backup restore` seeds a new node that leads a cluster with
//! the same id, CA and records, and two new nodes join it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rackd_tests::{rackd_bin, Cluster};
use rackd_types::{Location, Machine, Page};
use serde_json::{json, Value};

const PASS: &str = "a passphrase of some length";

fn cli(c: &Cluster, node: usize, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rackd_bin())
        .args(args)
        .env("RACKD_SERVER", c.url(node))
        .env("RACKD_TOKEN", &c.token)
        .env("RACKD_LOGIN_FILE", c.dir.join("no-login.json"))
        .env_remove("RACKD_BACKUP_PASSPHRASE")
        .output()
        .expect("run rackd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rackd backup restore FILE` into the data directory `Cluster::start_seeded` hands it, on
/// the addresses it picked; the restored admin token.
fn restore_with_cli(
    file: &Path,
    pass: &Path,
) -> impl FnOnce(&Path, &str, &str) -> anyhow::Result<String> {
    let (file, pass) = (file.to_path_buf(), pass.to_path_buf());
    move |dir, api, peer| {
        let out = Command::new(rackd_bin())
            .args(["-o", "json", "backup", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir)
            .args(["--api", api, "--peer", peer, "--passphrase-file"])
            .arg(&pass)
            .env_remove("RACKD_BACKUP_PASSPHRASE")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "restore: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["admin_token"].as_str().unwrap_or_default().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_every_acknowledged_write_and_the_sealed_ca() {
    let mut c = Cluster::start("backup", 3, &[]).await.expect("cluster");
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let follower = (leader + 1) % 3;
    for i in 0..4 {
        let loc = format!("site{i}");
        let _: Value = c
            .post_json(i % 3, "/v1/locations", &json!({"name": loc}))
            .await
            .unwrap();
        for k in 0..5 {
            let _: Value = c
                .post_json(
                    (i + k) % 3,
                    "/v1/machines",
                    &json!({
                        "hostname": format!("m{i}-{k}"), "location": loc,
                        "bmc": {"driver": "sim", "address": format!("b{i}{k}"), "password": "pw"},
                    }),
                )
                .await
                .unwrap();
        }
    }
    // Acknowledged through the other follower just before the backup: it must be in it.
    let last: Value = c
        .post_json(
            (leader + 2) % 3,
            "/v1/locations",
            &json!({"name": "last-one"}),
        )
        .await
        .unwrap();

    let dir = c.dir.clone();
    let pass = dir.join("pass");
    std::fs::write(&pass, format!("{PASS}\n")).unwrap();
    let file = dir.join("cluster.backup");
    let (ok, stdout, stderr) = cli(
        &c,
        follower,
        &[
            "backup",
            "create",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(" 20 machines,"), "{stdout}");
    assert!(!dir.join("cluster.backup.part").exists());

    // Read it back with the format's own reader: the records the API lists are all there.
    let bytes = std::fs::read(&file).unwrap();
    let b = rackd::backup::decode(&bytes).expect("a sound backup");
    let machines: Page<Machine> = c.get_json(leader, "/v1/machines?limit=1000").await.unwrap();
    let locations: Page<Location> = c
        .get_json(leader, "/v1/locations?limit=1000")
        .await
        .unwrap();
    assert_eq!(b.state.machines.len(), machines.items.len());
    for m in &machines.items {
        let stored = b
            .state
            .machines
            .get(&m.meta.id)
            .expect("machine in the backup");
        assert_eq!(stored.machine.hostname, m.hostname);
        assert_eq!(stored.machine.meta.version, m.meta.version);
    }
    assert_eq!(b.state.locations.len(), locations.items.len());
    assert!(b
        .state
        .locations
        .get(&last["id"].as_u64().unwrap())
        .is_some());
    assert_eq!(b.header.counts.machines, 20);
    // The CA opens with the passphrase and is the cluster's.
    let ca = rackd::backup::open_ca(&b.header, PASS).expect("the CA opens");
    let on_disk = std::fs::read_to_string(c.nodes[0].data_dir.join("pki/ca.pem")).unwrap();
    assert_eq!(ca.cert_pem.trim(), on_disk.trim());
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"));

    // Offline inspection, with and without the passphrase.
    let (ok, stdout, stderr) = cli(
        &c,
        follower,
        &[
            "backup",
            "inspect",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("opens with the passphrase"), "{stdout}");
    let (ok, stdout, _) = cli(
        &c,
        follower,
        &["-o", "json", "backup", "inspect", file.to_str().unwrap()],
    );
    assert!(ok);
    let h: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(h["counts"]["machines"], 20);
    assert_eq!(h["cluster_id"], json!(b.header.cluster_id));

    // Refusals.
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not the passphrase at all\n").unwrap();
    let (ok, _, stderr) = cli(
        &c,
        follower,
        &[
            "backup",
            "inspect",
            file.to_str().unwrap(),
            "--passphrase-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("passphrase is wrong"), "{stderr}");
    let mut damaged = bytes.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x20;
    let bad = dir.join("damaged.backup");
    std::fs::write(&bad, &damaged).unwrap();
    let (ok, _, stderr) = cli(&c, follower, &["backup", "inspect", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("damaged"), "{stderr}");
    let (ok, _, stderr) = cli(
        &c,
        follower,
        &[
            "backup",
            "create",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    let short = dir.join("short");
    std::fs::write(&short, "short\n").unwrap();
    let other = dir.join("other.backup");
    let (ok, _, stderr) = cli(
        &c,
        follower,
        &[
            "backup",
            "create",
            other.to_str().unwrap(),
            "--passphrase-file",
            short.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("at least 12"), "{stderr}");
    assert!(!other.exists() && !dir.join("other.backup.part").exists());

    // Disaster: every node and its data are gone. A new node restored from the file leads a
    // cluster with the same id, CA and records; two new nodes join it.
    let old_token = c.token.clone();
    for n in &mut c.nodes {
        n.kill();
        std::fs::remove_dir_all(&n.data_dir).unwrap();
    }
    let mut r = Cluster::new("restored");
    let first = r
        .start_seeded(restore_with_cli(&file, &pass))
        .await
        .expect("the restored node starts and leads");
    // Restoring over a node that exists is refused.
    let (ok, _, stderr) = cli(
        &r,
        first,
        &[
            "backup",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            r.nodes[first].data_dir.to_str().unwrap(),
            "--api",
            "127.0.0.1:1",
            "--peer",
            "127.0.0.1:2",
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(!ok && stderr.contains("already holds a node"), "{stderr}");
    for _ in 0..2 {
        r.join(first, false)
            .await
            .expect("a new node joins the restored cluster");
    }
    let info: rackd_types::ClusterInfo = r.get_json(2, "/v1/cluster").await.unwrap();
    assert_eq!(info.cluster_id, b.header.cluster_id);
    assert_eq!(info.members.iter().filter(|m| m.role == "voter").count(), 3);
    // Every record, read through the newest node.
    let again: Page<Machine> = r.get_json(2, "/v1/machines?limit=1000").await.unwrap();
    let key = |m: &Machine| {
        (
            m.meta.id,
            m.hostname.clone(),
            m.meta.version,
            m.location.clone(),
        )
    };
    let mut want: Vec<_> = machines.items.iter().map(key).collect();
    let mut got: Vec<_> = again.items.iter().map(key).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let again: Page<Location> = r.get_json(1, "/v1/locations?limit=1000").await.unwrap();
    assert_eq!(again.items.len(), locations.items.len());
    // The same CA, on every new node; the old admin token still works; writes work.
    for n in &r.nodes {
        let pem = std::fs::read_to_string(n.data_dir.join("pki/ca.pem")).unwrap();
        assert_eq!(pem.trim(), on_disk.trim());
    }
    r.token = old_token;
    let _: Value = r
        .post_json(1, "/v1/locations", &json!({"name": "after-restore"}))
        .await
        .expect("a write with the old admin token");
}

/// A cluster that lost its quorum for good (two of three voters and their disks gone) comes
/// back from the survivor's data directory: an offline backup of it, restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_lost_its_quorum_comes_back_from_a_survivors_data_dir() {
    let mut c = Cluster::start("quorum-loss", 3, &[])
        .await
        .expect("cluster");
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let survivor = (leader + 1) % 3;
    let _: Value = c
        .post_json(leader, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    for k in 0..6 {
        let _: Value = c
            .post_json(
                leader,
                "/v1/machines",
                &json!({"hostname": format!("m{k}"), "location": "dc1"}),
            )
            .await
            .unwrap();
    }
    let written: Page<Machine> = c.get_json(leader, "/v1/machines?limit=1000").await.unwrap();
    // The survivor applied all of it (a stale read of its own replica).
    c.wait_until(
        Duration::from_secs(20),
        "the survivor caught up",
        move |c| async move {
            c.get_json::<Page<Machine>>(survivor, "/v1/machines?limit=1000&stale=true")
                .await
                .is_ok_and(|p| p.items.len() == 6)
        },
    )
    .await
    .unwrap();
    for i in 0..3 {
        if i != survivor {
            c.nodes[i].kill();
            std::fs::remove_dir_all(&c.nodes[i].data_dir).unwrap();
        }
    }
    c.nodes[survivor].stop();

    let pass = c.dir.join("pass");
    std::fs::write(&pass, PASS).unwrap();
    let file = c.dir.join("survivor.backup");
    let (ok, stdout, stderr) = cli(
        &c,
        survivor,
        &[
            "backup",
            "create",
            file.to_str().unwrap(),
            "--data-dir",
            c.nodes[survivor].data_dir.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(" 6 machines,"), "{stdout}");

    let mut r = Cluster::new("quorum-back");
    r.start_seeded(restore_with_cli(&file, &pass))
        .await
        .expect("the restored node leads");
    let back: Page<Machine> = r.get_json(0, "/v1/machines?limit=1000").await.unwrap();
    let names = |p: &Page<Machine>| {
        let mut v: Vec<_> = p
            .items
            .iter()
            .map(|m| (m.meta.id, m.hostname.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&back), names(&written));
}
