//! Prometheus metrics (issue 13): every node's `GET /metrics` passes `promtool check metrics`
//! (Debian's prometheus package), a real Prometheus server scrapes a 3-node cluster over TLS
//! with a reader token and answers queries about it, and every metric that the shipped alert
//! rules (`monitoring/alerts.yml`, also checked by `promtool check rules`) and Grafana
//! dashboard (`monitoring/grafana-dashboard.json`) name is one the nodes export.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use serde_json::{json, Value};

use crate::location::ClientNs;
use crate::util::{post_task, sh};

/// The repository's `monitoring/` directory.
fn monitoring() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring")
}

/// Node `i`'s `/metrics` text with `token`: (status, content type, body).
async fn scrape(c: &Cluster, i: usize, token: Option<&str>) -> (u16, String, String) {
    let mut rb = c.http.get(format!("{}/metrics", c.url(i)));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("GET /metrics");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.text().await.unwrap_or_default())
}

/// `promtool check metrics` on `text`: (ok, output).
fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus)");
    use std::io::Write;
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of the sample `name{labels…}` whose labels include every `want` pair.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())
            .flatten()
        })
        .next()
}

/// Metric names (`rackd_…`) in a PromQL text, without the series suffixes of histograms.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = promql;
    while let Some(i) = rest.find("rackd_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Kills the Prometheus server when the test ends, however it ends.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_node_and_the_shipped_rules_and_dashboard_name_real_metrics() {
    let lab = ClientNs::new(7);
    let server_ip = format!("{}.1", lab.net);
    let c = Cluster::start(
        "metrics",
        3,
        &[
            "--location",
            "dc1",
            "--dhcp-interface",
            &lab.host_if,
            "--dhcp-server-ip",
            &server_ip,
            "--dhcp-listen",
            "0.0.0.0:67",
            "--tftp-listen",
            "{ip}:0",
            "--tftp-root",
            "{dir}/tftp",
            "--http-boot-listen",
            "{ip}:0",
        ],
    )
    .await
    .expect("cluster");
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let _: Value = c
        .post_json(
            0,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": format!("{}.0/24", lab.net), "gateway": server_ip}),
        )
        .await
        .unwrap();
    let m: Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "web1", "location": "dc1", "macs": ["02:77:00:00:01:01"],
                    "ips": [format!("{}.60", lab.net)],
                    "bmc": {"driver": "sim", "address": "web1"}}),
        )
        .await
        .unwrap();
    let id = m["id"].as_u64().unwrap();
    // Traffic for every family: a DHCP lease (udhcpc), a TFTP download (tftp-hpa), a power
    // task through the simulated BMC, and API requests.
    let (ok, out) = lab.udhcpc();
    assert!(ok, "udhcpc: {out}");
    let tftp = std::fs::read_to_string(c.nodes[0].data_dir.join("tftp.addr")).unwrap();
    let (tip, tport) = tftp.trim().rsplit_once(':').unwrap();
    let dl = c.dir.join("undionly.kpxe");
    let (ok, out) = sh(&[
        "timeout",
        "30",
        "tftp",
        tip,
        tport,
        "-m",
        "binary",
        "-c",
        "get",
        "undionly.kpxe",
        &dl.display().to_string(),
    ]);
    assert!(ok && dl.exists(), "tftp: {out}");
    // The machine's iPXE script from node 0's HTTP boot server.
    let boot = std::fs::read_to_string(c.nodes[0].data_dir.join("http-boot.addr")).unwrap();
    let script = c
        .http
        .get(format!(
            "http://{}/boot/02:77:00:00:01:01.ipxe",
            boot.trim()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let task = post_task(
        &c,
        0,
        0,
        &format!("/v1/machines/{id}/power"),
        json!({"action": "on"}),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");

    // A reader token is enough; no token is refused like any other read.
    let reader: Value = c
        .post_json(
            0,
            "/v1/tokens/api",
            &json!({"name": "prometheus", "role": "reader"}),
        )
        .await
        .unwrap();
    let reader = reader["token"].as_str().unwrap().to_string();
    let (s, _, body) = scrape(&c, 1, None).await;
    assert_eq!(s, 401, "{body}");

    let mut exported = BTreeSet::new();
    let mut dhcp_replies = 0.0;
    let mut tftp_bytes = 0.0;
    let mut bmc_ok = 0.0;
    for i in 0..3 {
        let (s, ct, text) = scrape(&c, i, Some(&reader)).await;
        assert_eq!(s, 200, "{text}");
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let (ok, out) = promtool_check_metrics(&text);
        assert!(ok, "promtool check metrics on node {i}: {out}\n{text}");
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            exported.insert(l.split_whitespace().nth(2).unwrap().to_string());
        }
        // The replica's view is the same on every node.
        assert_eq!(
            sample(&text, "rackd_machines", &[("location", "dc1")]),
            Some(1.0),
            "node {i}"
        );
        assert_eq!(sample(&text, "rackd_raft_has_leader", &[]), Some(1.0));
        // Every node syncs its WAL, several writes per fsync at most.
        let syncs = sample(&text, "rackd_storage_wal_sync_duration_seconds_count", &[]);
        let synced = sample(&text, "rackd_storage_wal_sync_requests_total", &[]);
        assert!(
            syncs.is_some_and(|n| n >= 1.0) && synced >= syncs,
            "node {i}: {syncs:?} fsyncs for {synced:?} writes"
        );
        assert_eq!(
            sample(&text, "rackd_raft_members", &[("role", "voter")]),
            Some(3.0)
        );
        dhcp_replies +=
            sample(&text, "rackd_dhcp_replies_total", &[("type", "ack")]).unwrap_or(0.0);
        tftp_bytes += sample(&text, "rackd_tftp_sent_bytes_total", &[]).unwrap_or(0.0);
        bmc_ok += sample(
            &text,
            "rackd_bmc_calls_total",
            &[("driver", "sim"), ("result", "ok")],
        )
        .unwrap_or(0.0);
        // The API counts by route template, not by id.
        assert!(
            !text.contains(&format!("route=\"/v1/machines/{id}")),
            "raw paths in labels"
        );
    }
    assert!(dhcp_replies >= 1.0, "no DHCP ack counted");
    let (_, _, text) = scrape(&c, 0, Some(&reader)).await;
    assert_eq!(
        sample(
            &text,
            "rackd_http_boot_requests_total",
            &[("location", "dc1"), ("kind", "script"), ("status", "200")]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        tftp_bytes >= std::fs::metadata(&dl).unwrap().len() as f64,
        "TFTP bytes not counted"
    );
    assert!(bmc_ok >= 1.0, "no BMC call counted");

    // Every metric the shipped rules and dashboard use is exported (histograms by family).
    let rules = monitoring().join("alerts.yml");
    let (ok, out) = sh(&["promtool", "check", "rules", &rules.display().to_string()]);
    assert!(ok, "promtool check rules: {out}");
    let mut used = metric_names(&std::fs::read_to_string(&rules).unwrap());
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            used.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() > 10, "{used:?}");
    for name in &used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(family),
            "{name} is used by the rules or the dashboard but no node exports it; exported: {exported:?}"
        );
    }

    // A real Prometheus scrapes all three over TLS (the cluster CA) with the reader token.
    let dir = c.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), &reader).unwrap();
    let targets: Vec<String> = (0..3)
        .map(|i| c.url(i).split("://").nth(1).unwrap().to_string())
        .collect();
    let scheme = c.url(0).split("://").next().unwrap().to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: rackd\n    scheme: {scheme}\n\
         \x20   authorization:\n      credentials_file: {tok}\n\
         \x20   tls_config:\n      ca_file: {ca}\n\
         \x20   static_configs:\n      - targets: [{targets}]\n",
        tok = dir.join("token").display(),
        ca = c.nodes[0].data_dir.join("pki/ca.pem").display(),
        targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus (apt-get install prometheus)"),
    );
    let plain = reqwest::Client::new();
    let query = |q: &'static str| {
        let plain = plain.clone();
        async move {
            let v: Value = plain
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", q)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = query("sum(up{job=\"rackd\"})").await;
        let leaders = query("sum(rackd_raft_role{role=\"leader\"})").await;
        let machines = query("max(rackd_machines{location=\"dc1\"})").await;
        if up == Some(3.0) && leaders == Some(1.0) && machines == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the cluster: up {up:?}, leaders {leaders:?}, machines {machines:?}\n{config}\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A rate over the API counter works once two scrapes exist.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query("sum(rate(rackd_api_requests_total[10s])) >= 0")
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "no API request rate in Prometheus"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
