//! Certificate renewal without downtime (issue 11, item 1): `rackd certs rotate` makes every
#![allow(clippy::needless_range_loop)] // nodes are indexed alike in several vectors
//! node (voters, which sign for themselves, and a learner, which asks a voter over the peer
//! port) renew its certificate with a new key, while the processes keep running; the API and
//! the peer port present the new certificates (checked with openssl, a third party), the
//! cluster keeps replicating, each node renews once per request, and a restarted node comes
//! back with its renewed pair.

use std::process::Command;
use std::time::Duration;

use rackd_tests::{rackd_bin, Cluster};
use rackd_types::Health;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl (apt-get install openssl)");
    let input = stdin.unwrap_or_default().to_vec();
    let mut i = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        let _ = i.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The SHA-256 fingerprint of a PEM certificate.
fn fingerprint(pem: &[u8]) -> String {
    let out = openssl(&["x509", "-noout", "-fingerprint", "-sha256"], Some(pem));
    out.trim()
        .rsplit_once('=')
        .map(|(_, f)| f.to_string())
        .unwrap_or_else(|| panic!("no fingerprint: {out}"))
}

/// The certificate a TLS server at `addr` presents (openssl s_client, no client certificate).
fn presented(addr: &str) -> String {
    let out = openssl(&["s_client", "-connect", addr, "-showcerts"], Some(b""));
    let start = out
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate from {addr}: {out}"));
    let end = out[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    fingerprint(&out.as_bytes()[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_rotate_renews_every_node_without_a_restart() {
    let args = ["--api-tls", "--cert-check-secs", "1"];
    let mut c = Cluster::start("certs", 3, &args).await.expect("cluster");
    let learner = c.join(0, true).await.expect("learner");
    let n = c.nodes.len();
    let node_pem =
        |c: &Cluster, i: usize| std::fs::read(c.nodes[i].data_dir.join("pki/node.pem")).unwrap();
    let before: Vec<String> = (0..n).map(|i| fingerprint(&node_pem(&c, i))).collect();
    let pids: Vec<u32> = (0..n)
        .map(|i| c.nodes[i].child.as_ref().unwrap().id())
        .collect();
    for i in 0..n {
        let api = c.nodes[i].api.clone().unwrap();
        assert_eq!(
            presented(&api),
            before[i],
            "node {i} serves its certificate"
        );
    }
    // Nothing is due on its own: a few checks later, no node renewed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..n {
        assert_eq!(
            fingerprint(&node_pem(&c, i)),
            before[i],
            "node {i} renewed unasked"
        );
    }

    // Through the learner (writes are forwarded to the leader), with the CLI verifying the CA.
    let ca = c.nodes[0].data_dir.join("pki/ca.pem");
    let out = Command::new(rackd_bin())
        .args(["certs", "rotate", "--ca-file", ca.to_str().unwrap()])
        .env("RACKD_SERVER", c.url(learner))
        .env("RACKD_TOKEN", &c.token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("every node renews"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    c.wait_until(T, "every node renewed its certificate", |c| {
        let before = before.clone();
        async move {
            (0..c.nodes.len()).all(|i| {
                std::fs::read(c.nodes[i].data_dir.join("pki/node.pem"))
                    .is_ok_and(|p| fingerprint(&p) != before[i])
            })
        }
    })
    .await
    .unwrap();
    let after: Vec<String> = (0..n).map(|i| fingerprint(&node_pem(&c, i))).collect();
    for i in 0..n {
        assert_eq!(
            c.nodes[i].child.as_ref().unwrap().id(),
            pids[i],
            "node {i} was not restarted"
        );
        let pem = c.nodes[i].data_dir.join("pki/node.pem");
        let verify = openssl(
            &[
                "verify",
                "-CAfile",
                ca.to_str().unwrap(),
                pem.to_str().unwrap(),
            ],
            None,
        );
        assert!(verify.contains(": OK"), "node {i}: {verify}");
        let api = c.nodes[i].api.clone().unwrap();
        assert_eq!(
            presented(&api),
            after[i],
            "node {i} serves its new certificate"
        );
        let h: Health = c.health(i).await.unwrap();
        assert!(h.cert_issued_at_ms.is_some() && h.cert_expires_at_ms > h.cert_issued_at_ms);
    }
    assert!(
        !c.nodes[learner].data_dir.join("pki/ca.key").exists(),
        "the learner renewed through a voter, and still holds no CA key"
    );
    // The key changed with the certificate (a renewal is a new key, not a re-signature).
    for i in 0..n {
        let key = std::fs::read(c.nodes[i].data_dir.join("pki/node.key")).unwrap();
        let pubkey = |args: &[&str], input: &[u8]| openssl(args, Some(input));
        assert_eq!(
            pubkey(&["pkey", "-pubout"], &key),
            pubkey(&["x509", "-noout", "-pubkey"], &node_pem(&c, i)),
            "node {i}: the stored key is the certificate's"
        );
    }

    // The cluster keeps working over the new certificates, and each node renewed once.
    c.client(learner)
        .post::<_, serde_json::Value>("/v1/locations", &json!({"name": "after-rotate"}))
        .await
        .expect("a write through the learner after the rotation");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..n {
        assert_eq!(
            fingerprint(&node_pem(&c, i)),
            after[i],
            "node {i} renewed twice"
        );
    }
    let events: serde_json::Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert!(events["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "cluster.certs_renewal_requested"));

    // A restarted node comes back with its renewed pair and rejoins the replication.
    c.nodes[learner].stop();
    c.nodes[learner].start().unwrap();
    assert_eq!(fingerprint(&node_pem(&c, learner)), after[learner]);
    c.wait_until(T, "the restarted learner catches up", |c| async move {
        let want = c.health(0).await.ok().and_then(|h| h.last_applied);
        let got = c.health(learner).await.ok().and_then(|h| h.last_applied);
        want.is_some() && got >= want
    })
    .await
    .unwrap();
}
