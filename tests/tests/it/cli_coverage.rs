//! Every API capability has a CLI command (issue 13, item 8), checked over the API's own
//! endpoint table: the CLI alone drives a 3-node cluster through every resource's life
//! (naming each by name where it has one), then the nodes' request counters
//! (`rackd_api_requests_total`, by method and route template) must show every endpoint of
//! the table called, save the ones listed in `NOT_CLI` with the reason. An endpoint added
//! without a CLI command fails here.

use std::collections::BTreeSet;

use rackd::api::endpoints::ENDPOINTS;
use rackd_tests::Cluster;
use serde_json::Value;

/// Endpoints no CLI command calls, and why.
const NOT_CLI: &[(&str, &str, &str)] = &[(
    "GET",
    "/metrics",
    "scraped by Prometheus (README, Monitoring); curl shows it",
)];

/// (method, route) of every request the nodes counted.
async fn called(c: &Cluster) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for i in 0..c.nodes.len() {
        let Ok((200, Value::String(text))) = c
            .request(i, reqwest::Method::GET, "/metrics", None, &[])
            .await
        else {
            continue;
        };
        for line in text
            .lines()
            .filter(|l| l.starts_with("rackd_api_requests_total{"))
        {
            let label = |name: &str| {
                let k = format!("{name}=\"");
                let rest = &line[line.find(&k)? + k.len()..];
                Some(rest[..rest.find('"')?].to_string())
            };
            if let (Some(m), Some(r)) = (label("method"), label("route")) {
                out.insert((m, r));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_every_endpoint_of_the_api() {
    let c = Cluster::start("cli-coverage", 3, &[]).await.unwrap();
    let dir = c.dir.clone();
    let run = |args: &[&str]| -> String {
        let out = c.cli(0, args);
        assert!(
            out.ok,
            "rackd {}: {}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        out.stdout
    };
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let text = run(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    };

    run(&["status"]);
    // Several endpoints: a dead one first, the request goes on to the next (a write too,
    // under one idempotency key).
    let listed = std::process::Command::new(rackd_tests::rackd_bin())
        .args(["-o", "json", "locations", "add", "dc0"])
        .env("RACKD_SERVER", format!("http://127.0.0.1:9,{}", c.url(1)))
        .env("RACKD_TOKEN", &c.token)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    run(&["locations", "delete", "dc0"]);
    run(&["members", "list"]);
    run(&["events", "--limit", "5"]);
    run(&["certs", "rotate"]);

    // Inventory, named by name wherever it has one.
    run(&["locations", "add", "dc1", "--description", "first"]);
    run(&["locations", "list"]);
    run(&[
        "locations",
        "update",
        "dc1",
        "--description",
        "the first site",
    ]);
    let loc = json(&["locations", "show", "dc1"]);
    assert_eq!(loc["description"], "the first site");
    run(&[
        "subnets",
        "add",
        "--location",
        "dc1",
        "--cidr",
        "10.30.0.0/24",
        "--gateway",
        "10.30.0.1",
        "--dynamic",
        "10.30.0.200-10.30.0.250",
    ]);
    run(&["subnets", "list"]);
    run(&[
        "subnets",
        "update",
        "10.30.0.0/24",
        "--dns",
        "10.30.0.2",
        "--reserved",
        "10.30.0.2-10.30.0.9",
    ]);
    let sn = json(&["subnets", "show", "10.30.0.0/24"]);
    assert_eq!(sn["dns"][0], "10.30.0.2");
    run(&["racks", "add", "--location", "dc1", "--name", "r1"]);
    run(&["racks", "list"]);
    run(&["racks", "update", "r1", "--height", "48"]);
    let rack = json(&["racks", "show", "r1"]);
    assert_eq!(rack["rack"]["height_units"], 48);
    let rack_id = rack["rack"]["id"].as_u64().unwrap().to_string();
    run(&[
        "machines",
        "add",
        "--hostname",
        "web1",
        "--location",
        "dc1",
        "--rack",
        &rack_id,
        "--unit",
        "3",
        "--mac",
        "02:00:00:00:30:01",
        "--ip",
        "10.30.0.11",
        "--bmc-driver",
        "ipmi",
        "--bmc-address",
        "10.30.1.11",
        "--bmc-user",
        "admin",
    ]);
    run(&[
        "machines",
        "add",
        "--hostname",
        "web2",
        "--location",
        "dc1",
        "--mac",
        "02:00:00:00:30:02",
        "--bmc-driver",
        "sim",
        "--bmc-address",
        "sim-web2",
        "--state",
        "ready",
    ]);
    run(&["machines", "list"]);
    run(&["machines", "update", "web1", "--description", "front"]);
    assert_eq!(json(&["machines", "show", "web1"])["description"], "front");
    // What PATCH can change, the CLI can: rack and unit, BMC fields (the others kept), IPs
    // and tags cleared, the rack left.
    let m = json(&[
        "machines",
        "update",
        "web2",
        "--rack",
        "r1",
        "--unit",
        "7",
        "--bmc-user",
        "ops",
        "--bmc-password",
        "pw",
        "--tag",
        "gpu",
    ]);
    assert_eq!(
        (m["rack_id"].to_string(), m["rack_unit"].as_u64()),
        (rack_id.clone(), Some(7)),
        "{m}"
    );
    assert_eq!(m["bmc"]["address"], "sim-web2", "{m}");
    assert_eq!(m["bmc"]["username"], "ops", "{m}");
    assert_eq!(m["bmc"]["password_set"], true, "{m}");
    let m = json(&["machines", "update", "web1", "--no-ips", "--no-tags"]);
    assert_eq!(m["ips"], serde_json::json!([]), "{m}");
    let m = json(&["machines", "update", "web2", "--no-rack"]);
    assert_eq!(m["rack_id"], Value::Null, "{m}");
    // A name nothing has is refused, saying so.
    let out = c.cli(0, ["machines", "show", "nosuch"]);
    assert!(
        !out.ok && out.stderr.contains("no machine is named"),
        "{}",
        out.stderr
    );
    let rack = json(&["racks", "show", "r1"]);
    assert_eq!(rack["machines"][0]["hostname"], "web1", "{rack}");

    // Power, boot device, IPMI proxy sessions, tasks.
    let t = json(&["machines", "power", "web1", "on", "--no-wait"]);
    let task = t["meta"]["id"]
        .as_u64()
        .or(t["id"].as_u64())
        .unwrap()
        .to_string();
    run(&["machines", "boot-device", "web1", "pxe", "--no-wait"]);
    run(&["machines", "bmc-session", "web1", "--source", "127.0.0.1"]);
    run(&["machines", "bmc-sessions", "web1"]);
    run(&["machines", "bmc-session-close", "web1"]);
    run(&["tasks", "list"]);
    run(&["tasks", "show", &task]);
    run(&["tasks", "cancel", &task]);

    // Blobs and images, deploy and release (nothing executes here: tasks wait, and are
    // cancelled and retried by hand).
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd");
    let spare = dir.join("spare");
    std::fs::write(&kernel, b"a kernel").unwrap();
    std::fs::write(&initrd, b"an initrd").unwrap();
    std::fs::write(&spare, b"another artifact").unwrap();
    let (k, i) = (kernel.to_str().unwrap(), initrd.to_str().unwrap());
    run(&["images", "upload", "debian", "--kernel", k, "--initrd", i]);
    run(&[
        "images",
        "upload",
        "debian",
        "--kernel",
        k,
        "--initrd",
        i,
        "--cmdline",
        "quiet",
    ]);
    run(&["images", "list"]);
    assert_eq!(json(&["images", "show", "debian"])["cmdline"], "quiet");
    let digest = run(&["blobs", "put", spare.to_str().unwrap()])
        .trim()
        .to_string();
    run(&["blobs", "list"]);
    run(&["blobs", "get", &digest, dir.join("copy").to_str().unwrap()]);
    run(&["blobs", "remove", &digest]);
    let m = json(&["machines", "deploy", "web2", "--image", "debian"]);
    assert_eq!(m["state"], "deploying", "{m}");
    let tasks: Value = json(&["tasks", "list"]);
    let deploy = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "deploy")
        .expect("a deploy task")["id"]
        .as_u64()
        .unwrap()
        .to_string();
    run(&["tasks", "cancel", &deploy]);
    run(&["tasks", "retry", &deploy]);
    run(&["tasks", "cancel", &deploy]);
    let m = json(&["machines", "release", "web2"]);
    assert_eq!(m["state"], "releasing", "{m}");

    // Webhooks and tokens.
    run(&[
        "webhooks",
        "create",
        "pager",
        "http://127.0.0.1:9/hook",
        "--kind",
        "machine",
        "--disabled",
    ]);
    run(&["webhooks", "list"]);
    run(&["webhooks", "update", "pager", "--kind", "task"]);
    run(&["webhooks", "show", "pager"]);
    run(&["webhooks", "remove", "pager"]);
    let jt = json(&["tokens", "create", "--ttl", "60"]);
    run(&["tokens", "list"]);
    run(&["tokens", "revoke", &jt["id"].as_u64().unwrap().to_string()]);
    run(&["tokens", "create-api", "ci", "--role", "reader"]);
    run(&["tokens", "list-api"]);
    run(&["tokens", "revoke-api", "ci"]);

    // A backup, then everything goes again.
    let pass = dir.join("pass");
    std::fs::write(&pass, "a passphrase of some length\n").unwrap();
    run(&[
        "backup",
        "create",
        dir.join("b.backup").to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    run(&["machines", "delete", "web2"]);
    run(&["machines", "delete", "web1"]);
    run(&["images", "delete", "debian"]);
    run(&["racks", "delete", "r1"]);
    run(&["subnets", "delete", "10.30.0.0/24"]);
    run(&["locations", "delete", "dc1"]);
    run(&["members", "remove", "3"]);

    let seen = called(&c).await;
    let mut missing = Vec::new();
    for e in ENDPOINTS {
        let method = e.verb.http().to_string();
        if NOT_CLI.iter().any(|(m, p, _)| *m == method && *p == e.path) {
            continue;
        }
        if !seen.contains(&(method.clone(), e.path.to_string())) {
            missing.push(format!("{method} {}", e.path));
        }
    }
    assert!(
        missing.is_empty(),
        "no CLI command reached these endpoints: {missing:?}\ncalled: {seen:?}"
    );
}

/// `rackd completion bash` in a real bash: the script asks the binary, which completes
/// subcommands, flags and fixed values from the same command tree it parses with.
#[test]
fn bash_completes_commands_flags_and_values_through_the_binary() {
    let bin = rackd_tests::rackd_bin();
    let dir = bin.parent().unwrap().display().to_string();
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let script = format!(
            "source <(rackd completion bash) && COMP_WORDS=(rackd {}) && \
             COMP_CWORD={} && _rackd && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            quoted.join(" "),
            words.len()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .env(
                "PATH",
                format!("{dir}:{}", std::env::var("PATH").unwrap_or_default()),
            )
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(complete(&["webh"]), ["webhooks"]);
    assert_eq!(
        complete(&["machines", "power", "web1", ""]),
        ["cycle", "off", "on", "reset", "status"]
    );
    assert_eq!(complete(&["-o", ""]), ["json", "table"]);
    assert!(
        complete(&["webhooks", "create", "x", "u", "--"]).contains(&"--secret-file".to_string())
    );
    assert_eq!(complete(&["appliance", "up"]), ["upgrade"]);
}

/// `rackd up --config FILE`: a node starts from a TOML file of its flags (a flag on the
/// command line wins over the file), and a file with a key that is no flag is refused before
/// anything starts, naming the file and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_from_a_config_file_and_the_command_line_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = free.local_addr().unwrap().to_string();
    drop(free);
    let file = tmp.path().join("rackd.toml");
    std::fs::write(
        &file,
        format!(
            "data-dir = {:?}\napi = \"127.0.0.1:0\"\npeer = \"127.0.0.1:1\"\ntask_lease_secs = 20\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(rackd_tests::rackd_bin())
        .args(["up", "--config", file.to_str().unwrap(), "--peer", &peer])
        .env_remove("RACKD_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let api = loop {
        if let Ok(a) = std::fs::read_to_string(data.join("api.addr")) {
            if !a.trim().is_empty() && !a.trim().ends_with(":0") {
                break a.trim().to_string();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no api.addr in {}",
            data.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let health: Value = loop {
        if let Ok(r) = reqwest::get(format!("http://{api}/v1/health")).await {
            if let Ok(v) = r.json::<Value>().await {
                if v["raft_state"] == "leader" {
                    break v;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node from the config file never led"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health["node_id"], 1);
    let bound_peer = std::fs::read_to_string(data.join("peer.addr")).unwrap();
    assert_eq!(
        bound_peer.trim(),
        peer,
        "the command line's --peer wins over the file's"
    );

    std::fs::write(&file, "data-dir = \"/tmp/x\"\ncolour = \"red\"\n").unwrap();
    let out = std::process::Command::new(rackd_tests::rackd_bin())
        .args(["up", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rackd.toml") && err.contains("\"colour\" is not a flag"),
        "{err}"
    );
}
