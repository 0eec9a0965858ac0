//! Location nodes: boot services run from the node's own replica and keep answering when the
//! site is cut off from the voters.

use std::process::Command;
use std::time::Duration;

use rackd_tests::Cluster;

use crate::util::sh;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_learner_keeps_serving_tftp_when_voters_are_gone() {
    let mut c = Cluster::start("site", 3, &[]).await.expect("cluster");
    let root = c.dir.join("tftproot");
    std::fs::create_dir_all(&root).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(root.join("undionly.kpxe"), &payload).unwrap();
    let root_s = root.display().to_string();
    let site = c
        .join_with(
            0,
            true,
            &[
                "--location",
                "dc-east",
                "--tftp-listen",
                "{ip}:0",
                "--tftp-root",
                &root_s,
                "--write-timeout-secs",
                "2",
            ],
        )
        .await
        .unwrap();
    let tftp_addr = std::fs::read_to_string(c.nodes[site].data_dir.join("tftp.addr")).unwrap();
    let (ip, port) = tftp_addr.trim().rsplit_once(':').unwrap();
    let fetch = |name: &str| {
        let out = c.dir.join(format!("dl-{name}"));
        let _ = std::fs::remove_file(&out);
        let st = Command::new("timeout")
            .args([
                "30",
                "atftp",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                "undionly.kpxe",
                "-l",
            ])
            .arg(&out)
            .args([ip, port])
            .status()
            .expect("run atftp (apt-get install atftp)");
        (st.success(), std::fs::read(&out).unwrap_or_default())
    };
    let (ok, got) = fetch("before");
    assert!(ok && got == payload, "TFTP download before the cut");
    // The iPXE first stages from Debian's ipxe package were installed into the root, without
    // overwriting the operator's own undionly.kpxe.
    let shipped = std::fs::read("/usr/lib/ipxe/ipxe.efi").expect("ipxe package installed");
    assert!(std::fs::read(root.join("ipxe.efi")).unwrap() == shipped);
    assert!(std::fs::read(root.join("undionly.kpxe")).unwrap() == payload);

    // Cut the site off: every voter dies. The site's writes now fail clearly...
    for i in 0..3 {
        c.nodes[i].kill();
    }
    let (s, v) = c
        .request(
            site,
            Method::POST,
            "/v1/locations",
            Some(json!({"name": "x"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 503, "{v}");
    // ...its local replica still answers stale reads, and TFTP keeps serving.
    let (s, _) = c
        .request(site, Method::GET, "/v1/locations?stale=true", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, got) = fetch("after");
    assert!(ok && got == payload, "TFTP download after the cut");
}

/// A client namespace joined by a veth to the test's namespace (where rackd runs); removed on
/// drop (deleting the namespace deletes both veth ends).
pub(crate) struct ClientNs {
    ns: String,
    pub(crate) host_if: String,
    pub(crate) net: String,
}

impl ClientNs {
    pub(crate) fn new(tag: u32) -> Self {
        let id = format!("{}{tag}", std::process::id() % 10_000);
        let c = ClientNs {
            ns: format!("rkdcli{id}"),
            host_if: format!("rkv{id}"),
            net: format!("10.198.{}", 10 + tag),
        };
        for a in [
            vec!["ip", "netns", "add", &c.ns],
            vec![
                "ip", "link", "add", &c.host_if, "type", "veth", "peer", "name", "eth0", "netns",
                &c.ns,
            ],
            vec![
                "ip",
                "addr",
                "add",
                &format!("{}.1/24", c.net),
                "dev",
                &c.host_if,
            ],
            vec!["ip", "link", "set", &c.host_if, "up"],
            vec![
                "ip",
                "-n",
                &c.ns,
                "link",
                "set",
                "eth0",
                "address",
                "02:77:00:00:01:01",
            ],
            vec!["ip", "-n", &c.ns, "link", "set", "eth0", "up"],
        ] {
            let (ok, out) = sh(&a);
            assert!(ok, "{a:?}: {out}");
        }
        std::fs::create_dir_all(format!("/etc/netns/{}", c.ns)).unwrap();
        std::fs::write(format!("/etc/netns/{}/resolv.conf", c.ns), "").unwrap();
        c
    }

    pub(crate) fn udhcpc(&self) -> (bool, String) {
        let _ = sh(&["ip", "-n", &self.ns, "-4", "addr", "flush", "dev", "eth0"]);
        let (ok, out) = sh(&[
            "ip", "netns", "exec", &self.ns, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5",
            "-T", "2",
        ]);
        (
            ok,
            format!(
                "{out}{}",
                sh(&["ip", "-n", &self.ns, "-4", "-br", "addr", "show", "eth0"]).1
            ),
        )
    }
}

impl Drop for ClientNs {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_node_answers_dhcp_from_the_replicated_inventory() {
    let lab = ClientNs::new(1);
    let server_ip = format!("{}.1", lab.net);
    let mut c = Cluster::start(
        "dhcp",
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
            "--write-timeout-secs",
            "2",
        ],
    )
    .await
    .expect("cluster");
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": format!("{}.0/24", lab.net), "gateway": server_ip,
                    "dns": ["192.0.2.53"]}),
        )
        .await
        .unwrap();
    let m: serde_json::Value = c
        .post_json(
            1,
            "/v1/machines",
            &json!({"hostname": "web1", "location": "dc1", "macs": ["02:77:00:00:01:01"],
                    "ips": [format!("{}.60", lab.net)]}),
        )
        .await
        .unwrap();
    // Every node of the site answers identically from its replica (reservation-based): the
    // client takes the first offer, whichever node sent it.
    let (ok, out) = lab.udhcpc();
    assert!(ok && out.contains(&format!("{}.60/24", lab.net)), "{out}");

    // A changed reservation takes effect on the next request.
    let id = m["id"].as_u64().unwrap();
    let (s, v) = c
        .request(
            2,
            Method::PATCH,
            &format!("/v1/machines/{id}"),
            Some(json!({"ips": [format!("{}.61", lab.net)]})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    // Let every replica apply the change (linearizable read on each node).
    for i in 0..3 {
        let _: serde_json::Value = c.get_json(i, &format!("/v1/machines/{id}")).await.unwrap();
    }
    let (ok, out) = lab.udhcpc();
    assert!(ok && out.contains(&format!("{}.61/24", lab.net)), "{out}");

    // Cut off from its voters, the site keeps answering for known machines.
    c.nodes[1].kill();
    c.nodes[2].kill();
    let (ok, out) = lab.udhcpc();
    assert!(
        ok && out.contains(&format!("{}.61/24", lab.net)),
        "after losing quorum: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_serves_per_machine_scripts_and_the_tftp_root() {
    let (c, base, _) = crate::http_boot::boot_node("httpboot", &[]).await;
    let root = c.nodes[0].data_dir.join("tftp");
    std::fs::write(root.join("ipxe.efi"), b"EFI-BINARY").unwrap();
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc2"}))
        .await
        .unwrap();
    let m: serde_json::Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "web1", "location": "dc1", "macs": ["52:54:00:aa:bb:01"]}),
        )
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "far", "location": "dc2", "macs": ["52:54:00:aa:bb:02"]}),
        )
        .await
        .unwrap();
    let get = |path: String| {
        let http = c.http.clone();
        let url = format!("{base}{path}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    // No token needed; the script is per machine.
    let (s, body) = get("/boot/52:54:00:aa:bb:01.ipxe".into()).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(s, 200);
    assert!(
        body.starts_with("#!ipxe\n") && body.contains("web1"),
        "{body}"
    );
    // MAC forms are normalized; machines of other locations and unknown MACs are not served.
    assert_eq!(get("/boot/52-54-00-AA-BB-01.ipxe".into()).await.0, 200);
    assert_eq!(get("/boot/52:54:00:aa:bb:02.ipxe".into()).await.0, 404);
    assert_eq!(get("/boot/52:54:00:aa:bb:99.ipxe".into()).await.0, 404);
    assert_eq!(get("/boot/garbage.ipxe".into()).await.0, 400);
    // A deployed machine is told to boot from its disk (after the change, on the next request).
    let id = m["id"].as_u64().unwrap();
    for st in ["ready", "deploying", "deployed"] {
        let (s, v) = c
            .request(
                0,
                Method::PATCH,
                &format!("/v1/machines/{id}"),
                Some(json!({"state": st})),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let (_, body) = get("/boot/52:54:00:aa:bb:01.ipxe".into()).await;
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains("deployed") && body.contains("\nexit\n"),
        "{body}"
    );
    // The TFTP root over HTTP, with the same escape rules.
    assert_eq!(
        get("/tftp/ipxe.efi".into()).await,
        (200, b"EFI-BINARY".to_vec())
    );
    assert_eq!(get("/tftp/missing.efi".into()).await.0, 404);
    assert_ne!(get("/tftp/..%2Fnode.json".into()).await.0, 200);
    assert_ne!(get("/tftp/%2E%2E/admin-token".into()).await.0, 200);
}

/// `n` nodes serving location `dc1` on `lab`'s interface (with `extra` arguments), `dc1` a
/// discovery location whose subnet hands out `.first`–`.last` of `lab`'s network (the subnet
/// written through the second node when there is one).
async fn discovery_site(
    lab: &ClientNs,
    test: &str,
    n: usize,
    extra: &[&str],
    (first, last): (u8, u8),
) -> Cluster {
    let server_ip = format!("{}.1", lab.net);
    let mut args = vec![
        "--location",
        "dc1",
        "--dhcp-interface",
        &lab.host_if,
        "--dhcp-server-ip",
        &server_ip,
        "--no-router-advertisements",
    ];
    args.extend_from_slice(extra);
    let c = Cluster::start(test, n, &args).await.expect("cluster");
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/locations",
            &json!({"name": "dc1", "discovery": true}),
        )
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(
            1 % n,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": format!("{}.0/24", lab.net), "gateway": server_ip,
                    "dynamic_ranges": [{"start": format!("{}.{first}", lab.net), "end": format!("{}.{last}", lab.net)}]}),
        )
        .await
        .unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_gives_unknown_machines_a_dynamic_address_and_records_them_once() {
    let lab = ClientNs::new(2);
    let c = discovery_site(&lab, "discover", 3, &[], (200, 210)).await;
    // Every node answers DHCP (all three see the client); the machine must be recorded once.
    for round in 0..2 {
        let (ok, out) = lab.udhcpc();
        assert!(
            ok && out.contains(&format!("{}.2", lab.net)),
            "round {round}: {out}"
        );
        let got = out
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{}.", lab.net)) && w.ends_with("/24"))
            .unwrap_or_default()
            .trim_end_matches("/24")
            .to_string();
        let last: u32 = got.rsplit('.').next().unwrap().parse().unwrap();
        assert!(
            (200..=210).contains(&last),
            "address {got} outside the dynamic range"
        );
    }
    c.wait_until(
        Duration::from_secs(30),
        "discovered machine recorded",
        |c| async move {
            c.get_json::<serde_json::Value>(2, "/v1/machines?location=dc1")
                .await
                .is_ok_and(|p| p["items"].as_array().is_some_and(|a| !a.is_empty()))
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page: serde_json::Value = c.get_json(0, "/v1/machines?location=dc1").await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "recorded once: {page}");
    assert_eq!(items[0]["macs"][0], "02:77:00:00:01:01");
    assert_eq!(items[0]["state"], "new");
}

/// One host inventing MAC addresses (perfdhcp, a third-party DHCP load generator, acting as a
/// relay for 100 made-up clients) cannot fill the inventory: the location node answers them,
/// but records only its discovery burst and then its per-minute rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_inventing_mac_addresses_cannot_fill_the_inventory() {
    let lab = ClientNs::new(3);
    let server_ip = format!("{}.1", lab.net);
    let limits = [
        "--dhcp-discovery-burst",
        "5",
        "--dhcp-discovery-per-minute",
        "6",
    ];
    let c = discovery_site(&lab, "discflood", 1, &limits, (20, 250)).await;
    let relay = format!("{}.5", lab.net);
    let (ok, out) = sh(&[
        "ip",
        "-n",
        &lab.ns,
        "addr",
        "add",
        &format!("{relay}/24"),
        "dev",
        "eth0",
    ]);
    assert!(ok, "{out}");
    let started = std::time::Instant::now();
    let (_, out) = sh(&[
        "ip", "netns", "exec", &lab.ns, "timeout", "30", "perfdhcp", "-4", "-l", &relay, "-r",
        "50", "-R", "100", "-p", "4", &server_ip,
    ]);
    let received: u64 = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("received packets:"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    assert!(received >= 50, "the node answered the clients: {out}");
    // Recording goes through the leader: give it time, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let count = || async {
        let p: serde_json::Value = c
            .get_json(0, "/v1/machines?location=dc1&limit=1000")
            .await
            .unwrap();
        p["items"].as_array().unwrap().len() as u64
    };
    let n = count().await;
    let allowed = 5 + started.elapsed().as_secs() / 10 + 1;
    assert!(
        (5..=allowed).contains(&n),
        "{n} machines recorded from 100 invented MACs (allowed 5..={allowed})"
    );
    let h = c.health(0).await.unwrap();
    assert!(h.last_applied.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_flow_with_artifacts_and_a_one_time_install_callback() {
    let c = Cluster::start(
        "deploy",
        2,
        &[
            "--location",
            "dc1",
            "--http-boot-listen",
            "{ip}:0",
            "--artifacts-dir",
            "{dir}/art",
        ],
    )
    .await
    .expect("cluster");
    // Node 2 (a follower) serves the machine: the callback must reach the leader.
    let site = 1;
    let art = c.nodes[site].data_dir.join("art");
    std::fs::create_dir_all(art.join("debian")).unwrap();
    std::fs::write(art.join("debian/vmlinuz"), b"KERNEL").unwrap();
    std::fs::write(art.join("debian/initrd.img"), b"INITRD").unwrap();
    let base = format!(
        "http://{}",
        std::fs::read_to_string(c.nodes[site].data_dir.join("http-boot.addr"))
            .unwrap()
            .trim()
    );
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/images",
            &json!({"name": "debian12", "kernel": "debian/vmlinuz", "initrd": "debian/initrd.img", "cmdline": "console=ttyS0"}),
        )
        .await
        .unwrap();
    let (s, _) = c
        .request(
            0,
            Method::POST,
            "/v1/images",
            Some(json!({"name": "bad", "kernel": "../x", "initrd": "y"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    let m: serde_json::Value = c
        .post_json(0, "/v1/machines", &json!({"hostname": "web1", "location": "dc1", "macs": ["52:54:00:aa:cc:01"], "state": "ready"}))
        .await
        .unwrap();
    let id = m["id"].as_u64().unwrap();
    let deploy = |img: &str| json!({"image": img});
    let (s, _) = c
        .request(
            1,
            Method::POST,
            &format!("/v1/machines/{id}/deploy"),
            Some(deploy("nope")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "unknown image");
    // Deployed with the CLI, which then follows the machine until it is deployed (below,
    // when the install callback comes).
    let waiting = std::process::Command::new(rackd_tests::rackd_bin())
        .args(["machines", "deploy", &id.to_string(), "--image", "debian12"])
        .args(["--wait", "--timeout", "120"])
        .env("RACKD_SERVER", c.url(1))
        .env("RACKD_TOKEN", &c.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.wait_until(
        Duration::from_secs(30),
        "the CLI's deploy",
        |c| async move {
            let v: serde_json::Value = c
                .get_json(0, &format!("/v1/machines/{id}"))
                .await
                .unwrap_or_default();
            v["state"] == "deploying" && v["image"] == "debian12"
        },
    )
    .await
    .unwrap();
    let (s, _) = c
        .request(
            1,
            Method::POST,
            &format!("/v1/machines/{id}/deploy"),
            Some(deploy("debian12")),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 409, "only ready machines deploy");

    let http = c.http.clone();
    let get = |p: String| {
        let http = http.clone();
        let url = format!("{base}{p}");
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
        }
    };
    // The replica of the serving node may lag the write by a moment.
    let mut script = String::new();
    for _ in 0..100 {
        let (_, body) = get("/boot/52:54:00:aa:cc:01.ipxe".into()).await;
        script = String::from_utf8(body).unwrap();
        if script.contains("kernel ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        script.contains(&format!("kernel {base}/artifacts/debian/vmlinuz console=ttyS0 rackd.callback={base}/boot/52:54:00:aa:cc:01/done rackd.token=")),
        "{script}"
    );
    assert!(
        script.contains(&format!("initrd {base}/artifacts/debian/initrd.img"))
            && script.ends_with("boot\n")
    );
    let token = script
        .split("rackd.token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // The token is stored as its hash and sealed for the location: no node writes it down
    // in clear (until the machine presents it to the callback, which burns it).
    for n in &c.nodes {
        let found = crate::util::files_holding(&n.data_dir, token.as_bytes());
        assert!(found.is_empty(), "the deploy token in clear in {found:?}");
    }
    assert_eq!(
        get("/artifacts/debian/vmlinuz".into()).await,
        (200, b"KERNEL".to_vec())
    );
    assert_ne!(get("/artifacts/../node.json".into()).await.0, 200);

    // The token is never shown by the API, the journal or the logs.
    let m: serde_json::Value = c.get_json(0, &format!("/v1/machines/{id}")).await.unwrap();
    let ev: serde_json::Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert!(!m.to_string().contains(&token) && !ev.to_string().contains(&token));

    // Install callback: wrong token refused; the right one once; then it is burnt.
    let cb = |t: String| {
        let http = http.clone();
        let url = format!("{base}/boot/52:54:00:aa:cc:01/done?token={t}");
        async move { http.post(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(cb("wrong".into()).await, 401);
    assert_eq!(cb(token.clone()).await, 200);
    // The CLI saw it: deploying, then deployed, and it ends successfully.
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("(web1) is deploying") && said.trim_end().ends_with("(web1) is deployed"),
        "{said}"
    );
    // The token is burnt; an installer retrying after a lost answer gets the first answer
    // (the callback's idempotency key), and nothing happens twice.
    assert_eq!(
        cb(token.clone()).await,
        200,
        "a retry gets the first answer"
    );
    let ev: serde_json::Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    let deployed = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("deploying -> deployed"))
        })
        .count();
    assert_eq!(deployed, 1, "{ev}");
    let m: serde_json::Value = c.get_json(1, &format!("/v1/machines/{id}")).await.unwrap();
    assert_eq!(m["state"], "deployed");
    let (_, body) = get("/boot/52:54:00:aa:cc:01.ipxe".into()).await;
    assert!(String::from_utf8(body).unwrap().contains("\nexit\n"));
    for n in &c.nodes {
        assert!(
            !std::fs::read_to_string(&n.log).unwrap().contains(&token),
            "token in {}",
            n.log.display()
        );
    }
}
