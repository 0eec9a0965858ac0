//! The API checked by a third party (issue 13, item 4): schemathesis (PyPI, pinned in
//! `scripts/install-deps.sh`) reads `openapi/rackd.json` and sends generated requests, valid
//! and invalid, to every operation of a live node of a 3-node cluster that holds an inventory
//! (location, rack, subnet, machines with simulated BMCs, a task). It fails on any 5xx, and on
//! any answer whose status, content type, headers or body the document does not allow.

use std::process::Command;
use std::time::Duration;

use rackd_tests::Cluster;
use serde_json::{json, Value};

/// The schemathesis CLI: `$RACKD_SCHEMATHESIS`, else the virtualenv install-deps.sh makes.
fn schemathesis() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("RACKD_SCHEMATHESIS") {
        return p.into();
    }
    let home = std::env::var_os("HOME").expect("HOME");
    std::path::Path::new(&home).join(".cache/rackd-venv/bin/st")
}

/// What every response must satisfy (the "no 5xx, and every response conforms").
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,ignored_auth";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} missing: run scripts/install-deps.sh test",
        st.display()
    );
    // Webhooks the fuzzer registers are sent through a proxy on the discard port: whatever
    // host it makes up, nothing leaves loopback (members talk to each other directly).
    let mut c = Cluster::new("schemathesis");
    c.common_args = ["--location", "dc1"].map(String::from).to_vec();
    for v in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        c.common_env.push((v.into(), "http://127.0.0.1:9".into()));
    }
    c.bootstrap().await.expect("bootstrap");
    for _ in 1..3 {
        c.join(0, false).await.expect("join");
    }
    // An inventory for the generated requests to meet.
    let loc: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let rack: Value = c
        .post_json(
            0,
            "/v1/racks",
            &json!({"name": "r1", "location": "dc1", "height_units": 42}),
        )
        .await
        .unwrap();
    let _: Value = c
        .post_json(
            0,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1"}),
        )
        .await
        .unwrap();
    for i in 0..3 {
        let _: Value = c
            .post_json(
                0,
                "/v1/machines",
                &json!({
                    "hostname": format!("m{i}"), "location": "dc1", "rack_id": rack["id"], "rack_unit": 1 + i * 2,
                    "macs": [format!("52:54:00:00:09:0{i}")],
                    "bmc": {"driver": "sim", "address": format!("sim{i}"), "password": "pw"},
                }),
            )
            .await
            .unwrap();
    }
    assert!(loc["id"].as_u64().is_some());

    let openapi = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/rackd.json");
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let node = (leader + 1) % 3; // a follower: its writes are forwarded
                                 // Endless event streams (follow=true) are read up to their first message.
    let config = c.dir.join("schemathesis.toml");
    std::fs::write(&config, "max-stream-events = 1\n").unwrap();
    let mut cmd = Command::new(&st);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&openapi)
        .args(["--url", &c.url(node)])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .args(["--checks", CHECKS])
        .args(["--max-examples", "20", "--seed", "7", "--workers", "2"])
        // A time budget for the whole run (CI's); every operation is reached well within it.
        .args(["--request-timeout", "20", "--max-time", "240"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // Removing members of the cluster under test ends the test, not the API (removal is
        // tested in cluster.rs and removed.rs).
        .args(["--exclude-name", "DELETE /v1/cluster/members/{id}"])
        .args(["--generation-codec", "utf-8"])
        .args(["--no-color"])
        .current_dir(&c.dir);
    if let Some(ca) = &c.ca_pem {
        let path = c.dir.join("ca.pem");
        std::fs::write(&path, ca).unwrap();
        cmd.arg("--tls-verify").arg(path);
    }
    let out = cmd.output().expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::write(c.dir.join("schemathesis.txt"), stdout.as_bytes()).unwrap();
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}"
    );
    // It tested every operation of the document (none skipped as untestable).
    let doc: Value = serde_json::from_slice(&std::fs::read(&openapi).unwrap()).unwrap();
    let ops: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    let tested = format!("Tested: {}", ops - 1);
    assert!(
        stdout.contains(&format!("Selected: {}/{ops}", ops - 1)) && stdout.contains(&tested),
        "expected every operation but member removal tested ({tested}):\n{stdout}"
    );
}
