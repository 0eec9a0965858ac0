//! Cluster behaviour with real processes: bootstrap, join, forwarding, failover, restarts,
//! snapshot catch-up, learners, member removal, quorum loss.

use std::time::Duration;

use rackd_tests::Cluster;
use rackd_types::ClusterInfo;
use reqwest::Method;
use serde_json::{json, Value};

use crate::util::{create_machine, machine_count, setup_location};

const T: Duration = Duration::from_secs(30);

/// The apply rules of this build, as members report them.
const CURRENT_RULES: u32 = rackd_raft::state::ApplyRules::CURRENT.number();

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_two_joins_follower_write_visible_everywhere() {
    let mut c = Cluster::start("three", 3, &[]).await.expect("cluster");
    let l = c.wait_leader(T).await.unwrap();
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    assert_eq!(ci.members.len(), 3);
    assert!(ci.members.iter().all(|m| m.role == "voter"), "{ci:?}");
    // Every member reports its build's apply rules (at bootstrap and join), and the cluster
    // decides entries by them.
    assert!(
        ci.members.iter().all(|m| m.apply_rules == CURRENT_RULES),
        "{ci:?}"
    );
    assert_eq!(ci.apply_rules, CURRENT_RULES);
    let ids: Vec<u64> = ci.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3], "node ids are allocated in order");

    // Write through a follower; every node serves it with a linearizable read right away.
    let follower = (l + 1) % 3;
    setup_location(&c, follower).await;
    let id = create_machine(&c, follower, 1).await;
    for i in 0..3 {
        let m: Value = c.get_json(i, &format!("/v1/machines/{id}")).await.unwrap();
        assert_eq!(m["hostname"], "host-1", "node {i}");
        let h = c.health(i).await.unwrap();
        assert_eq!(h.leader_id, Some(ci.leader_id.unwrap()));
    }
    // Exactly one leader, same term everywhere.
    let mut leaders = 0;
    for i in 0..3 {
        if c.health(i).await.unwrap().raft_state == "leader" {
            leaders += 1;
        }
    }
    assert_eq!(leaders, 1);
}

/// The bootstrapping node creates the cluster CA and its own certificate, and openssl (a third
/// party) agrees: the node certificate chains to the CA and names node 1 of this cluster, the
/// CA may sign only end-entity certificates, and the keys are private to the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_creates_the_cluster_ca_and_node_1s_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::new("pki");
    c.bootstrap().await.expect("bootstrap");
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let pki = c.nodes[0].data_dir.join("pki");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&pki)
            .output()
            .expect("openssl (apt-get install openssl)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = openssl(&["verify", "-CAfile", "ca.pem", "node.pem"]);
    assert!(ok, "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        "node.pem",
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("DNS:node-1.{}.rackd", ci.cluster_id)),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication")
            && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        "ca.pem",
        "-noout",
        "-ext",
        "basicConstraints",
    ]);
    assert!(
        ok && text.contains("CA:TRUE") && text.contains("pathlen:0"),
        "{text}"
    );
    // The key matches the certificate.
    let (_, cert_pub) = openssl(&["x509", "-in", "node.pem", "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&["pkey", "-in", "node.key", "-pubout"]);
    assert_eq!(cert_pub, key_pub);
    let mode = |p: &str| std::fs::metadata(pki.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode("."), mode("ca.key"), mode("node.key")),
        (0o700, 0o600, 0o600)
    );
    // Restarted, the node keeps its PKI (nothing is regenerated).
    let before = std::fs::read_to_string(pki.join("ca.pem")).unwrap();
    c.nodes[0].stop();
    c.nodes[0].start().unwrap();
    c.wait_leader(T).await.unwrap();
    assert_eq!(std::fs::read_to_string(pki.join("ca.pem")).unwrap(), before);
    // Everything under the data directory is the node's alone (RocksDB, snapshots, keys,
    // tokens): no file or directory grants anything to group or others.
    let data = &c.nodes[0].data_dir;
    let mut stack = vec![data.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let m = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(m & 0o077, 0, "{} is {:o}", d.display(), m & 0o777);
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().permissions().mode();
                assert_eq!(m & 0o077, 0, "{} is {:o}", p.display(), m & 0o777);
                seen += 1;
            }
        }
    }
    assert!(seen >= 8, "only {seen} files checked");
}

/// Token roles on a three-node cluster, checked on every node: a reader reads and is refused
/// writes (403), an operator writes inventory through any node (followers forward it) but may
/// not create tokens, and no refused request changes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_roles_hold_on_every_node() {
    let mut c = Cluster::start("roles", 3, &[]).await.expect("cluster");
    c.wait_leader(T).await.unwrap();
    let mut tokens = std::collections::BTreeMap::new();
    let mut ids = std::collections::BTreeMap::new();
    for role in ["reader", "operator"] {
        let (st, v) = c
            .request(
                0,
                Method::POST,
                "/v1/tokens/api",
                Some(json!({"name": role, "role": role})),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(st, 201, "{v}");
        tokens.insert(role, v["token"].as_str().unwrap().to_string());
        ids.insert(role, v["id"].as_u64().unwrap());
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |i: usize, role: &str, method: Method, path: &str, body: Option<Value>| {
        let mut rb = http
            .request(method, format!("{}{path}", c.url(i)))
            .bearer_auth(&tokens[role]);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        async move {
            let r = rb.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for i in 0..3 {
        let loc = json!({"name": format!("site-{i}")});
        let (st, v) = send(i, "reader", Method::GET, "/v1/machines", None).await;
        assert_eq!(st, 200, "node {i}: reader reads: {v}");
        let (st, v) = send(
            i,
            "reader",
            Method::POST,
            "/v1/locations",
            Some(loc.clone()),
        )
        .await;
        assert_eq!(st, 403, "node {i}: reader writes: {v}");
        assert_eq!(v["error"]["code"], "Forbidden");
        let (st, v) = send(i, "reader", Method::GET, "/v1/tokens/api", None).await;
        assert_eq!(st, 403, "node {i}: reader lists tokens: {v}");
        let (st, v) = send(i, "operator", Method::POST, "/v1/locations", Some(loc)).await;
        assert_eq!(st, 201, "node {i}: operator writes: {v}");
        let (st, v) = send(
            i,
            "operator",
            Method::POST,
            "/v1/tokens/api",
            Some(json!({"name": "x", "role": "admin"})),
        )
        .await;
        assert_eq!(st, 403, "node {i}: operator mints a token: {v}");
    }
    let locs: Value = c.get_json(1, "/v1/locations").await.unwrap();
    assert_eq!(locs["items"].as_array().unwrap().len(), 3, "{locs}");
    let toks: Value = c.get_json(2, "/v1/tokens/api").await.unwrap();
    let roles: Vec<&str> = toks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["admin", "reader", "operator"], "{toks}");

    // Revoked through one node, the operator token is refused by every node within a second.
    let (st, v) = c
        .request(
            2,
            Method::DELETE,
            &format!("/v1/tokens/api/{}", ids["operator"]),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(st, 204, "{v}");
    let revoked = std::time::Instant::now();
    for i in 0..3 {
        loop {
            let (st, _) = send(i, "operator", Method::GET, "/v1/machines", None).await;
            if st == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "node {i} still accepts the revoked token ({st})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (st, _) = send(0, "reader", Method::GET, "/v1/machines", None).await;
    assert_eq!(st, 200, "other tokens keep working");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_failover_then_restart_catches_up() {
    let mut c = Cluster::start("failover", 3, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    create_machine(&c, 0, 1).await;
    let old = c.wait_leader(T).await.unwrap();
    let old_term = c.health(old).await.unwrap().term;
    c.nodes[old].kill();

    let survivor = (old + 1) % 3;
    // Writes through a surviving node succeed once a new leader is elected.
    let mut done = false;
    for attempt in 0..100 {
        let (s, _) = c
            .request(
                survivor,
                Method::POST,
                "/v1/machines",
                Some(crate::util::machine_body(100 + attempt)),
                &[],
            )
            .await
            .unwrap();
        if s == 201 {
            done = true;
            break;
        }
        assert_eq!(s, 503, "only 'unavailable' is acceptable while electing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done, "no write succeeded after leader kill");
    let new = c.wait_leader(T).await.unwrap();
    assert_ne!(new, old);
    assert!(c.health(new).await.unwrap().term > old_term);
    for i in 0..5 {
        create_machine(&c, (old + 2) % 3, 200 + i).await;
    }
    let expected = machine_count(&c, new, false).await.unwrap();

    // The killed node comes back with its data and catches up.
    c.nodes[old].start().unwrap();
    c.wait_until(T, "restarted node catches up", |c| async move {
        machine_count(c, old, true).await.ok() == Some(expected)
    })
    .await
    .unwrap();
    assert_eq!(c.health(old).await.unwrap().node_id as usize, old + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_restart_keeps_all_data() {
    let mut c = Cluster::start("restart", 3, &[]).await.expect("cluster");
    setup_location(&c, 1).await;
    for i in 0..20 {
        create_machine(&c, (i % 3) as usize, i).await;
    }
    let before: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    // Stop all three: two cleanly, one by SIGKILL.
    c.nodes[0].stop();
    c.nodes[1].kill();
    c.nodes[2].stop();
    for i in 0..3 {
        c.nodes[i].start().unwrap();
    }
    c.wait_leader(T).await.unwrap();
    let after: ClusterInfo = c.get_json(2, "/v1/cluster").await.unwrap();
    assert_eq!(after.cluster_id, before.cluster_id, "no re-initialization");
    assert_eq!(after.members.len(), 3);
    for i in 0..3 {
        assert_eq!(machine_count(&c, i, false).await.unwrap(), 20, "node {i}");
    }
    // And the cluster still takes writes.
    create_machine(&c, 0, 99).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_catches_up_via_snapshot() {
    let mut c = Cluster::start("snapshot", 2, &["--snapshot-logs", "20"])
        .await
        .expect("cluster");
    setup_location(&c, 0).await;
    for i in 0..120 {
        create_machine(&c, 0, i).await;
    }
    let l = c.wait_leader(T).await.unwrap();
    c.wait_until(
        T,
        "leader purged its log after a snapshot",
        |c| async move {
            c.health(l)
                .await
                .is_ok_and(|h| h.purged_index.unwrap_or(0) > 20)
        },
    )
    .await
    .unwrap();
    let j = c.join(0, false).await.unwrap();
    c.wait_until(T, "joiner has every machine", |c| async move {
        machine_count(c, j, true).await.ok() == Some(120)
    })
    .await
    .unwrap();
    let h = c.health(j).await.unwrap();
    assert!(
        h.snapshot_index.is_some(),
        "the joiner must have installed a snapshot: {h:?}"
    );
    // The log before the leader's purge point never reached the joiner: it came by snapshot.
    let joiner_log = std::fs::read_to_string(&c.nodes[j].log).unwrap();
    assert!(
        joiner_log.contains("installed snapshot"),
        "no snapshot install in joiner log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_stays_learner_and_members_can_be_removed() {
    let mut c = Cluster::start("learner", 3, &[]).await.expect("cluster");
    let lrn = c.join(1, true).await.unwrap();
    setup_location(&c, 0).await;
    for i in 0..10 {
        create_machine(&c, 0, i).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let learner_id = (lrn + 1) as u64;
    let m = ci.members.iter().find(|m| m.id == learner_id).unwrap();
    assert_eq!(m.role, "learner");
    assert_eq!(c.health(lrn).await.unwrap().raft_state, "learner");
    // The learner serves linearizable reads and forwards writes.
    assert_eq!(machine_count(&c, lrn, false).await.unwrap(), 10);
    create_machine(&c, lrn, 50).await;

    // Remove the learner, then a voter.
    let (s, _) = c
        .request(
            0,
            Method::DELETE,
            &format!("/v1/cluster/members/{learner_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204);
    let (s, _) = c
        .request(0, Method::DELETE, "/v1/cluster/members/3", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 204);
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    let ids: Vec<u64> = ci.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2]);
    // Removing an unknown member is a 404; the cluster still writes with two voters.
    let (s, _) = c
        .request(0, Method::DELETE, "/v1/cluster/members/77", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 404);
    create_machine(&c, 1, 60).await;
    let ev: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert!(ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "cluster.member_removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_without_quorum_is_503_and_not_applied() {
    let mut c = Cluster::start("quorum", 3, &["--write-timeout-secs", "2"])
        .await
        .expect("cluster");
    setup_location(&c, 0).await;
    let l = c.wait_leader(T).await.unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    for o in &others {
        c.nodes[*o].kill();
    }
    let (s, v) = c
        .request(
            l,
            Method::POST,
            "/v1/locations",
            Some(json!({"name": "lost"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "Unavailable");
    // Linearizable reads refuse too, stale reads still answer from the local replica.
    let (s, _) = c
        .request(l, Method::GET, "/v1/locations", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 503);
    let (s, v) = c
        .request(l, Method::GET, "/v1/locations?stale=true", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["name"] != "lost"));
    // Bring one back: the cluster writes again.
    let back = others[0];
    c.nodes[back].start().unwrap();
    c.wait_until(T, "writes resume", |c| async move {
        c.request(
            back,
            Method::POST,
            "/v1/locations",
            Some(json!({"name": "back"})),
            &[],
        )
        .await
        .is_ok_and(|(s, _)| s == 201)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_single_use_and_checked() {
    let mut c = Cluster::start("tokens", 1, &[]).await.expect("cluster");
    let key = rackd::cluster::pki::NodeKey::generate().unwrap();
    let csr = key.csr_pem.clone();
    let body = |tok: &str, api: &str| json!({"token": tok, "api_addr": api, "peer_addr": "127.0.0.9:1", "csr": csr, "apply_rules": CURRENT_RULES});
    let (s, v) = c
        .request(
            0,
            Method::POST,
            "/v1/cluster/join",
            Some(body("rackd-join-bogus", "a:1")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("JoinRejected"))
    );

    let tok: rackd_types::CreatedJoinToken = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 60}))
        .await
        .unwrap();
    // A joiner whose build does not know the cluster's apply rules (one from before joiners
    // sent them) is refused, and the token is not spent.
    let mut old_build = body(&tok.token, "a:1");
    old_build.as_object_mut().unwrap().remove("apply_rules");
    let (s, v) = c
        .request(0, Method::POST, "/v1/cluster/join", Some(old_build), &[])
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("JoinRejected"))
    );
    assert!(
        v.to_string()
            .contains(&format!("apply rules {CURRENT_RULES}")),
        "{v}"
    );
    // Phase 1 needs a sound CSR; without one the token is not spent.
    for bad in [
        json!({"token": tok.token, "api_addr": "a:1", "peer_addr": "127.0.0.9:1", "apply_rules": CURRENT_RULES}),
        json!({"token": tok.token, "api_addr": "a:1", "peer_addr": "127.0.0.9:1", "apply_rules": CURRENT_RULES, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}),
    ] {
        let (s, v) = c
            .request(0, Method::POST, "/v1/cluster/join", Some(bad), &[])
            .await
            .unwrap();
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("InvalidRequest")),
            "{v}"
        );
    }
    let (s, v) = c
        .request(
            0,
            Method::POST,
            "/v1/cluster/join",
            Some(body(&tok.token, "a:1")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let first = v["node_id"].as_u64().unwrap();
    // The answer carries the node's certificate, from the cluster CA, naming the new id.
    let cluster_id = v["cluster_id"].as_str().unwrap();
    let ca = v["ca_pem"].as_str().expect("CA certificate");
    assert_eq!(
        ca.trim_end(),
        std::fs::read_to_string(c.nodes[0].data_dir.join("pki/ca.pem"))
            .unwrap()
            .trim_end()
    );
    rackd::cluster::pki::NodeTls::new(
        cluster_id,
        first,
        ca,
        v["cert_pem"].as_str().expect("node certificate"),
        &key.key_pem,
    )
    .expect("the issued certificate names the new node");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(c.nodes[0].data_dir.join("pki/ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin
                .take()
                .unwrap()
                .write_all(v["cert_pem"].as_str().unwrap().as_bytes())?;
            p.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Retry from the same node: same id. Another node: rejected.
    let (_, v) = c
        .request(
            0,
            Method::POST,
            "/v1/cluster/join",
            Some(body(&tok.token, "a:1")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(v["node_id"].as_u64(), Some(first));
    let (s, _) = c
        .request(
            0,
            Method::POST,
            "/v1/cluster/join",
            Some(body(&tok.token, "b:1")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 403);
    // A revoked token admits nobody, and is no longer listed.
    let revoked: rackd_types::CreatedJoinToken = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 60}))
        .await
        .unwrap();
    let (s, v) = c
        .request(
            0,
            Method::DELETE,
            &format!("/v1/tokens/join/{}", revoked.id),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");
    let (s, v) = c
        .request(
            0,
            Method::POST,
            "/v1/cluster/join",
            Some(body(&revoked.token, "c:1")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("JoinRejected")),
        "{v}"
    );
    let (_, v) = c
        .request(0, Method::GET, "/v1/tokens/join", None, &[])
        .await
        .unwrap();
    assert!(
        !v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == revoked.id),
        "{v}"
    );
    // Tokens are listed without their secret.
    let (_, v) = c
        .request(0, Method::GET, "/v1/tokens/join", None, &[])
        .await
        .unwrap();
    assert!(!v.to_string().contains(&tok.token));
    // A node id is never reused: the next join gets a fresh one.
    let j = c.join(0, false).await.unwrap();
    assert_eq!(c.health(j).await.unwrap().node_id, first + 1);
    // Stored hashed: the secret is not in the data directory.
    let mut grep = std::process::Command::new("grep");
    grep.args(["-r", "-l", &tok.token]).arg(&c.dir);
    let out = grep.output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "join token secret found on disk: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = c.leader().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_join_is_retried_by_restarting_the_node() {
    let mut c = Cluster::start("rejoin", 2, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    for i in 0..30 {
        create_machine(&c, 0, i).await;
    }
    // Start a joiner and SIGKILL it as soon as it has its node id (mid-join).
    let tok: rackd_types::CreatedJoinToken = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 600}))
        .await
        .unwrap();
    let args = vec![
        "--join".to_string(),
        c.url(0),
        "--token".to_string(),
        tok.token,
    ];
    let mut n = rackd_tests::NodeProc {
        name: "joiner".into(),
        ip: format!("{}.7", c.nodes[1].ip.rsplit_once('.').unwrap().0),
        data_dir: c.dir.join("joiner"),
        log: c.dir.join("joiner.log"),
        child: None,
        api: None,
        peer: None,
        tls: false,
        args,
        netns: None,
        env: vec![],
    };
    n.start().unwrap();
    let id_file = n.data_dir.join("node.json");
    let t0 = std::time::Instant::now();
    while !id_file.exists() && t0.elapsed() < T {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n.kill();
    let ident: Value = serde_json::from_slice(&std::fs::read(&id_file).unwrap()).unwrap();
    let id = ident["node_id"].as_u64().unwrap();
    assert_eq!(id, 3);
    // Restart with the same data directory: the join resumes (same id) and completes.
    n.start().unwrap();
    c.nodes.push(n);
    let j = c.nodes.len() - 1;
    c.wait_until(
        Duration::from_secs(60),
        "rejoined as voter",
        |c| async move {
            c.get_json::<ClusterInfo>(0, "/v1/cluster")
                .await
                .is_ok_and(|ci| ci.members.iter().any(|m| m.id == id && m.role == "voter"))
        },
    )
    .await
    .unwrap();
    c.wait_until(T, "joiner has the data", |c| async move {
        machine_count(c, j, true).await.ok() == Some(30)
    })
    .await
    .unwrap();
    assert_eq!(c.health(j).await.unwrap().node_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_joined_member_can_be_removed() {
    let c = Cluster::start("halfjoin", 2, &[]).await.expect("cluster");
    let tok: rackd_types::CreatedJoinToken = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 600}))
        .await
        .unwrap();
    // A node that never comes up: phase 1 gives it an id, phase 2 adds it as a learner that
    // can never catch up (the client gives up waiting).
    let csr = rackd::cluster::pki::NodeKey::generate().unwrap().csr_pem;
    let body = |id: Option<u64>| json!({"token": tok.token, "api_addr": "127.0.0.1:9", "peer_addr": "127.0.0.1:9", "node_id": id, "csr": csr, "apply_rules": CURRENT_RULES});
    let (s, v) = c
        .request(0, Method::POST, "/v1/cluster/join", Some(body(None)), &[])
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let id = v["node_id"].as_u64().unwrap();
    let r = c
        .http
        .post(format!("{}/v1/cluster/join", c.url(1)))
        .json(&body(Some(id)))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    if let Ok(resp) = r {
        let status = resp.status();
        panic!(
            "phase 2 finished for a node that is not running: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }
    c.wait_until(T, "half-joined learner in membership", |c| async move {
        c.get_json::<ClusterInfo>(0, "/v1/cluster")
            .await
            .is_ok_and(|ci| ci.members.iter().any(|m| m.id == id && m.role == "learner"))
    })
    .await
    .unwrap();
    // The cluster keeps working and the half-joined member is removed.
    setup_location(&c, 1).await;
    let (s, _) = c
        .request(
            1,
            Method::DELETE,
            &format!("/v1/cluster/members/{id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204);
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    assert_eq!(ci.members.len(), 2);

    // Removed stays removed: replaying its token, from its old addresses or new ones, in
    // either phase, is refused at once and admits nothing.
    let moved = |id: Option<u64>| json!({"token": tok.token, "api_addr": "127.0.0.1:19", "peer_addr": "127.0.0.1:19", "node_id": id, "csr": csr, "apply_rules": CURRENT_RULES});
    for (what, b) in [
        ("phase 2", body(Some(id))),
        ("phase 2, new addresses", moved(Some(id))),
        ("phase 1", body(None)),
        ("phase 1, new addresses", moved(None)),
    ] {
        let r = c
            .http
            .post(format!("{}/v1/cluster/join", c.url(1)))
            .json(&b)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 403, "{what}: {text}");
        assert!(text.contains("removed"), "{what}: {text}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ci: ClusterInfo = c.get_json(0, "/v1/cluster").await.unwrap();
    assert_eq!(ci.members.len(), 2, "{ci:?}");
}

/// A member restarted on new addresses (a new DHCP lease, a moved VM) re-advertises them: the
/// membership is updated and the node gets the cluster's writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_restarted_on_new_addresses_readvertises_them() {
    let mut c = Cluster::start("readvert", 3, &[]).await.expect("cluster");
    setup_location(&c, 0).await;
    let leader = c.wait_leader(T).await.unwrap();
    let moved = (leader + 1) % 3;
    let id = c.health(moved).await.unwrap().node_id;
    c.nodes[moved].stop();
    let old_ip = c.nodes[moved].ip.clone();
    let new_ip = format!("{}.9", old_ip.rsplit_once('.').unwrap().0);
    c.nodes[moved].ip = new_ip.clone();
    c.nodes[moved].api = None;
    c.nodes[moved].peer = None;
    create_machine(&c, leader, 1).await; // written while it is away
    c.nodes[moved].start().unwrap();
    let new_peer = c.nodes[moved].peer.clone().unwrap();
    assert!(new_peer.starts_with(&new_ip));
    c.wait_until(T, "membership shows the new addresses", |c| {
        let new_peer = new_peer.clone();
        async move {
            c.get_json::<ClusterInfo>(leader, "/v1/cluster")
                .await
                .is_ok_and(|ci| {
                    ci.members
                        .iter()
                        .any(|m| m.id == id && m.peer_addr == new_peer)
                })
        }
    })
    .await
    .unwrap();
    // It receives replication at the new address: a new write is readable there.
    create_machine(&c, leader, 2).await;
    c.wait_until(T, "the moved node has both machines", |c| async move {
        machine_count(c, moved, false).await.is_ok_and(|n| n == 2)
    })
    .await
    .unwrap();
}

/// Health that tells the truth (issue 13 item 7): `/v1/ready` answers 200 on every member of a
/// healthy cluster and 503 saying why without a leader; `rackd status` through any node shows
/// each member's reachability, lag and last contact as the leader sees them, marks a killed
/// member unreachable, and exits non-zero when there is no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_status_tell_the_truth() {
    let mut c = Cluster::start("ready", 3, &[]).await.expect("cluster");
    let learner = c.join(0, true).await.unwrap();
    for i in 0..4 {
        let (s, v) = c
            .request(i, Method::GET, "/v1/ready", None, &[])
            .await
            .unwrap();
        assert_eq!(s, 200, "node {i}: {v}");
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let leader_id = c.health(leader).await.unwrap().node_id;
    // The leader's view, asked through the learner (which is not the leader).
    let view = |c: &Cluster| {
        let out = c.cli(learner, ["-o", "json", "status"]);
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status JSON ({e}): {} {}", out.stdout, out.stderr));
        (out.ok, v)
    };
    let (ok, v) = view(&c);
    assert!(ok, "{v}");
    let members = v["leader_view"]["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 4, "{v}");
    for m in &members {
        if m["id"] == leader_id {
            assert!(m.get("progress").is_none(), "{m}");
            continue;
        }
        assert_eq!(m["progress"]["reachable"], true, "{m}");
        assert!(m["progress"]["lag"].as_u64().unwrap() < 50, "{m}");
        assert!(
            m["progress"]["last_contact_ms"].as_u64().unwrap() < 5_000,
            "{m}"
        );
    }
    let out = c.cli(learner, ["status"]);
    assert!(out.ok && out.stdout.contains("REACHABLE"), "{}", out.stdout);

    // A killed follower voter is marked unreachable by the leader within seconds.
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let follower_id = c.health(follower).await.unwrap().node_id;
    c.nodes[follower].kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = view(&c);
        let gone = v["leader_view"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"] == follower_id)
            .map(|m| m["progress"]["reachable"] == false);
        if gone == Some(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "killed member still reachable: {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Kill the leader too: the last voter has no quorum and elects no one.
    c.nodes[leader].kill();
    let last = (0..3).find(|i| *i != leader && *i != follower).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = c
            .request(last, Method::GET, "/v1/ready", None, &[])
            .await
            .unwrap();
        let out = c.cli(last, ["status"]);
        if s == 503 && !out.ok {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("not ready:"),
                "{v}"
            );
            assert!(out.stderr.contains("no leader"), "{}", out.stderr);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready without a quorum: {s} {v}; status ok={} {}",
            out.ok,
            out.stdout
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
