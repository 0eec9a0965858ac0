//! The API over TLS (issue 11, items 3 and 4): nodes on non-loopback addresses (one network
//! namespace each) serve their API over TLS by default, with their certificate from the
//! cluster CA; curl holding the CA reaches it and curl without it fails verification; joins
//! go over https and check the CA against the token's pin; followers forward writes to the
//! leader over TLS; the CLI verifies with `--ca-file` and refuses https without one. A joiner
//! whose token names another CA refuses a server before sending it anything.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rackd::cluster::pki::{CaBundle, NodeKey, NodeTls};
use rackd_tests::{rackd_bin, Cluster};
use rackd_types::ClusterInfo;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn curl(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_tls_with_the_cluster_ca_and_pinned_joins() {
    // No flag: TLS is the default on any address but loopback.
    let mut c = Cluster::new_in_netns("apitls").expect("netns cluster");
    c.bootstrap().await.expect("bootstrap");
    assert!(c.nodes[0].tls, "node 1 advertises an https API");
    let url0 = c.url(0);
    assert!(url0.starts_with("https://10."), "{url0}");
    // Joins go through https, with the CA pinned by the token.
    c.join(0, false).await.expect("join n2 over https");
    c.join(1, false)
        .await
        .expect("join n3 through a follower over https");
    let ci: ClusterInfo = c.get_json(2, "/v1/cluster").await.unwrap();
    assert_eq!(ci.members.len(), 3, "{ci:?}");
    assert!(
        ci.members
            .iter()
            .all(|m| m.api_addr.starts_with("https://")),
        "{ci:?}"
    );

    // curl with the CA reaches every node; without it, verification fails.
    let ca = c.nodes[0].data_dir.join("pki/ca.pem");
    let ca = ca.to_str().unwrap();
    for i in 0..3 {
        let (code, out) = curl(&["--cacert", ca, &format!("{}/v1/health", c.url(i))]);
        assert_eq!(code, 0, "node {i}: {out}");
        assert!(out.contains("\"raft_state\""), "{out}");
    }
    let (code, out) = curl(&[&format!("{url0}/v1/health")]);
    assert_eq!(
        code, 60,
        "curl without the CA must fail verification: {out}"
    );
    // Plain HTTP to a TLS port gets no API answer.
    let plain = url0.replacen("https://", "http://", 1);
    let (code, out) = curl(&[&format!("{plain}/v1/health")]);
    assert!(
        code != 0 || !out.contains("raft_state"),
        "plain HTTP answered: {out}"
    );

    // Writes through a follower are forwarded to the leader over TLS.
    let leader = c.wait_leader(T).await.unwrap();
    let follower = (leader + 1) % 3;
    let (s, v) = c
        .request(
            follower,
            reqwest::Method::POST,
            "/v1/locations",
            Some(json!({"name": "tls-site"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");

    // The CLI verifies: with --ca-file it works, with none it refuses https outright.
    let cli = |extra: &[&str]| {
        std::process::Command::new(rackd_bin())
            .args(["--server", &url0, "--api-token", &c.token])
            .args(extra)
            .args(["-o", "json", "locations", "list"])
            .env("RACKD_LOGIN_FILE", c.dir.join("no-login.json"))
            .output()
            .expect("run the CLI")
    };
    let ok = cli(&["--ca-file", ca]);
    assert!(
        ok.status.success() && String::from_utf8_lossy(&ok.stdout).contains("tls-site"),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let refused = cli(&[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ca-file"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let other_ca = c.dir.join("other-ca.pem");
    let other = CaBundle::generate("other", std::time::SystemTime::now()).unwrap();
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let wrong = cli(&["--ca-file", other_ca.to_str().unwrap()]);
    assert!(
        !wrong.status.success(),
        "a CA of another cluster was accepted"
    );

    // rackd login learns the CA by its hash over a pinned handshake, checks the token, and
    // keeps server, token and CA (0600) for the commands after it, which then need nothing.
    let login_file = c.dir.join("cli-config/login.json");
    let run = |args: &[&str]| {
        std::process::Command::new(rackd_bin())
            .args(args)
            .env("RACKD_LOGIN_FILE", &login_file)
            .env_remove("RACKD_SERVER")
            .env_remove("RACKD_TOKEN")
            .env_remove("RACKD_CA_FILE")
            .output()
            .expect("run the CLI")
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let pin = rackd::cluster::pki::ca_hash(&std::fs::read_to_string(ca).unwrap()).unwrap();
    let other_pin = rackd::cluster::pki::ca_hash(&other.cert_pem).unwrap();
    let o = run(&[
        "login",
        &url0,
        "--api-token",
        &c.token,
        "--ca-pin",
        &other_pin,
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(rackd::cluster::pki::PIN_MISMATCH),
        "{}",
        text(&o)
    );
    let o = run(&[
        "login",
        &url0,
        "--api-token",
        "rackd-api-made-up",
        "--ca-pin",
        &pin,
    ]);
    assert!(
        !o.status.success(),
        "a made-up token logged in: {}",
        text(&o)
    );
    assert!(!login_file.exists(), "nothing kept from a refused login");
    let o = run(&["login", &url0, "--api-token", &c.token, "--ca-pin", &pin]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&ci.cluster_id), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&login_file), 0o600);
    assert_eq!(mode(login_file.parent().unwrap()), 0o700);
    let o = run(&["-o", "json", "locations", "list"]);
    assert!(
        o.status.success() && text(&o).contains("tls-site"),
        "{}",
        text(&o)
    );
}

/// A joiner whose token pins this cluster's CA, sent to a server with another CA (someone
/// posing as the cluster), refuses in the handshake: the server never receives a byte of the
/// request, so it never sees the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_refuses_a_server_whose_ca_is_not_the_pinned_one() {
    let c = Cluster::start("pin", 1, &[]).await.expect("cluster");
    let tok: rackd_types::CreatedJoinToken = c
        .post_json(0, "/v1/tokens/join", &json!({"ttl_secs": 600}))
        .await
        .unwrap();
    assert!(tok.token.contains(":sha256:"), "{}", tok.token);
    let ca_pem = std::fs::read_to_string(c.nodes[0].data_dir.join("pki/ca.pem")).unwrap();
    assert!(
        tok.token
            .ends_with(&rackd::cluster::pki::ca_hash(&ca_pem).unwrap()),
        "the token pins the cluster's CA"
    );

    // The impostor: a TLS server with its own CA and a valid certificate for 127.0.0.1.
    let now = std::time::SystemTime::now();
    let fake_ca = CaBundle::generate("impostor", now).unwrap();
    let key = NodeKey::generate().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let cert = fake_ca
        .issue_for(&key.csr_pem, 1, "impostor", Some(&addr.to_string()), now)
        .unwrap();
    let tls = NodeTls::new("impostor", 1, &fake_ca.cert_pem, &cert, &key.key_pem).unwrap();
    let config = tls.api_server_config().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(AtomicUsize::new(0));
    {
        let (received, handshakes) = (received.clone(), handshakes.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut tcp) = stream else { continue };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let mut s = rustls::Stream::new(&mut conn, &mut tcp);
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    received.fetch_add(n, Ordering::SeqCst);
                }
            }
        });
    }
    // The same impostor is trusted when the pin is its own: the harness can see a request.
    let own_pin = rackd::cluster::pki::ca_hash(&fake_ca.cert_pem).unwrap();
    let secret = tok.token.split(":sha256:").next().unwrap().to_string();
    let run = |token: String, name: &str| {
        let dir = c.dir.join(name);
        std::process::Command::new(rackd_bin())
            .args(["up", "--data-dir"])
            .arg(&dir)
            .args(["--api", "127.0.0.1:0", "--peer", "127.0.0.1:0"])
            .args(["--join", &format!("https://{addr}"), "--token", &token])
            .output()
            .expect("run the joiner")
    };
    let out = run(tok.token.clone(), "joiner");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing to join"), "{stderr}");
    assert!(
        handshakes.load(Ordering::SeqCst) >= 1,
        "the joiner never dialled"
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "the impostor received request bytes"
    );
    // Control: with the impostor's own pin the joiner does send its request.
    let _ = std::process::Command::new(rackd_bin())
        .args(["up", "--data-dir"])
        .arg(c.dir.join("control"))
        .args(["--api", "127.0.0.1:0", "--peer", "127.0.0.1:0"])
        .args(["--join", &format!("https://{addr}")])
        .args(["--token", &format!("{secret}:{own_pin}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|mut child| {
            let t0 = std::time::Instant::now();
            while received.load(Ordering::SeqCst) == 0 && t0.elapsed() < T {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        });
    assert!(
        received.load(Ordering::SeqCst) > 0,
        "with a matching pin the joiner sends its request (the harness can see one)"
    );
    // A token without a pin cannot join over https at all.
    let out = run(secret, "nopin");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("carries no CA hash"), "{stderr}");
    let _: Value = c.get_json(0, "/v1/cluster").await.unwrap();
}

/// Make a CA of the operator's own and an API certificate it signs for `name` (openssl, a
/// third party), in `dir`; returns (CA, certificate, key) paths.
fn corporate_cert(dir: &std::path::Path, name: &str, tag: &str) -> [std::path::PathBuf; 3] {
    let p = |f: &str| dir.join(format!("{tag}-{f}"));
    std::fs::write(
        p("ext"),
        format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    let s = |x: std::path::PathBuf| x.to_str().unwrap().to_string();
    let script = format!(
        "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {cak} -out {ca} \
 -days 30 -subj /CN=corp-ca-{tag} -addext basicConstraints=critical,CA:TRUE \
 -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {key} -out {csr} \
 -subj /CN={name} 2>/dev/null
openssl x509 -req -in {csr} -CA {ca} -CAkey {cak} -CAcreateserial -out {cert} -days 30 \
 -extfile {ext} 2>/dev/null",
        cak = s(p("ca.key")),
        ca = s(p("ca.pem")),
        key = s(p("api.key")),
        csr = s(p("api.csr")),
        cert = s(p("api.pem")),
        ext = s(p("ext")),
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    [p("ca.pem"), p("api.pem"), p("api.key")]
}

/// The operator's own API certificate (`--api-cert`, `--api-key`): curl dialling the API by
/// its DNS name gets it and verifies it with the operator's CA; clients dialling an IP address
/// (members forwarding writes, the test harness) still get the node's certificate from the
/// cluster CA; replacing the files changes what the API serves without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_operators_certificate_to_clients_that_name_it() {
    let name = "api.corp.test";
    let mut c = Cluster::new("byocert");
    let dir = c.dir.clone();
    let [corp_ca, cert, key] = corporate_cert(&dir, name, "one");
    let (cert_s, key_s) = (
        cert.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    c.common_args = vec![
        "--api-cert".into(),
        cert_s.clone(),
        "--api-key".into(),
        key_s.clone(),
    ];
    c.bootstrap().await.expect("bootstrap");
    c.join(0, false).await.expect("join");
    assert!(c.nodes[0].tls, "--api-cert implies https");
    let addr = c.nodes[0].api.clone().unwrap();
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let by_name = format!("https://{name}:{port}/v1/health");
    let resolve = format!("{name}:{port}:{ip}");
    let cluster_ca = c.nodes[0].data_dir.join("pki/ca.pem");
    let cluster_ca = cluster_ca.to_str().unwrap();
    let corp = corp_ca.to_str().unwrap();
    let (code, out) = curl(&["--resolve", &resolve, "--cacert", corp, &by_name]);
    assert_eq!(code, 0, "by name with the operator's CA: {out}");
    assert!(out.contains("raft_state"), "{out}");
    let (code, out) = curl(&["--resolve", &resolve, "--cacert", cluster_ca, &by_name]);
    assert_ne!(
        code, 0,
        "by name the cluster's certificate was served: {out}"
    );
    let (code, out) = curl(&["--cacert", cluster_ca, &format!("https://{addr}/v1/health")]);
    assert_eq!(code, 0, "by address with the cluster CA: {out}");
    // Members dial each other by address: a write through the follower is forwarded.
    let leader = c.wait_leader(T).await.unwrap();
    let (s, v) = c
        .request(
            (leader + 1) % 2,
            reqwest::Method::POST,
            "/v1/locations",
            Some(json!({"name": "byo-site"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");

    // Replaced files (another CA even) are served without a restart.
    let [corp2, cert2, key2] = corporate_cert(&dir, name, "two");
    std::fs::copy(&key2, &key).unwrap();
    std::fs::copy(&cert2, &cert).unwrap();
    let corp2 = corp2.to_str().unwrap().to_string();
    let t0 = std::time::Instant::now();
    loop {
        let (code, _) = curl(&["--resolve", &resolve, "--cacert", &corp2, &by_name]);
        if code == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the replaced certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, _) = curl(&["--resolve", &resolve, "--cacert", corp, &by_name]);
    assert_ne!(code, 0, "the old certificate is still served");
}
