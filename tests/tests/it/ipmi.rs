//! IPMI against OpenIPMI's `ipmi_sim` in a network namespace: the rackd driver over RMCP+
//! (every supported cipher suite) and IPMI 1.5, safe power semantics, errors for a wrong
//! password and a dead BMC, session cleanup; then end to end through a rackd node: power
//! tasks, the power-state sync, and `ipmitool` through the rackd IPMI proxy.

use std::time::{Duration, Instant};

use rackd_hwctl::ipmi::LanVersion;
use rackd_hwctl::{Bmc, BmcError, BootDevice, IpmiBmc, PowerAction, PowerController, PowerState};
use rackd_hwctl::{PowerError, VerifyPolicy};
use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::{json, Value};

use crate::ipmi_sim::{ipmitool, IpmiSim, PASS, USER};
use crate::util::{files_holding, post_task};

fn policy() -> VerifyPolicy {
    VerifyPolicy {
        timeout: Duration::from_secs(15),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        retries: 2,
    }
}

fn bmc(sim: &IpmiSim, v: LanVersion, pass: &str) -> IpmiBmc {
    let mut b = IpmiBmc::new(sim.target(), v, USER, pass);
    b.timeout = Duration::from_millis(400);
    b
}

fn count(s: &str, what: &str) -> usize {
    s.lines().filter(|l| l.contains(what)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_driver_drives_openipmi_bmc_over_lanplus_and_lan15() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(0, tmp.path());
    let pc = PowerController::new(4);
    for v in [LanVersion::V20, LanVersion::V15] {
        let b = bmc(&sim, v, PASS);
        b.power_off().await.unwrap();
        assert_eq!(b.power_status().await.unwrap(), PowerState::Off, "{v:?}");

        let on0 = count(&sim.calls(), "set power 1");
        let o = pc.execute(&b, PowerAction::On, &policy()).await.unwrap();
        assert_eq!(
            (o.before, o.after, o.command_sent),
            (PowerState::Off, PowerState::On, true)
        );
        assert_eq!(
            count(&sim.calls(), "set power 1"),
            on0 + 1,
            "{v:?}: one power-up"
        );
        // Already on: nothing is sent (a cycle would show as "set power 0").
        let off0 = count(&sim.calls(), "set power 0");
        let o = pc.execute(&b, PowerAction::On, &policy()).await.unwrap();
        assert!(!o.command_sent);
        assert_eq!(count(&sim.calls(), "set power 0"), off0);

        // Cycle of a machine that is on: the chassis goes off, then on again.
        let (on1, off1) = (
            count(&sim.calls(), "set power 1"),
            count(&sim.calls(), "set power 0"),
        );
        let o = pc.execute(&b, PowerAction::Cycle, &policy()).await.unwrap();
        assert_eq!(o.after, PowerState::On);
        let t0 = Instant::now();
        while count(&sim.calls(), "set power 1") == on1 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(count(&sim.calls(), "set power 0"), off1 + 1, "{v:?}");
        assert_eq!(count(&sim.calls(), "set power 1"), on1 + 1, "{v:?}");

        let r0 = count(&sim.calls(), "set reset 1");
        pc.execute(&b, PowerAction::Reset, &policy()).await.unwrap();
        assert_eq!(count(&sim.calls(), "set reset 1"), r0 + 1);

        let o = pc.execute(&b, PowerAction::Off, &policy()).await.unwrap();
        assert_eq!(o.after, PowerState::Off);

        let p0 = count(&sim.calls(), "set boot pxe");
        b.set_boot_device(BootDevice::Pxe, false).await.unwrap();
        assert_eq!(count(&sim.calls(), "set boot pxe"), p0 + 1, "{v:?}");

        let info = b.info().await.unwrap();
        assert_eq!((info.manufacturer_id, info.product_id), (0x1291, 0x0f02));
    }

    // Every RMCP+ cipher suite we offer works against the BMC.
    for suite in 0..=3u8 {
        let mut b = bmc(&sim, LanVersion::V20, PASS);
        b.config.cipher_suite = suite;
        assert_eq!(
            b.power_status().await.unwrap(),
            PowerState::Off,
            "suite {suite}"
        );
    }

    // Wrong password: a clear credentials error without the password in it.
    for v in [LanVersion::V20, LanVersion::V15] {
        let e = bmc(&sim, v, "not-the-password")
            .power_status()
            .await
            .unwrap_err();
        assert!(matches!(e, BmcError::Auth { .. }), "{v:?}: {e}");
        assert!(!e.to_string().contains("not-the-password"));
        eprintln!("{v:?} wrong password: {e}");
    }

    // Dead BMC (nothing at .3): a timeout error, bounded, not a hang.
    let mut dead = bmc(&sim, LanVersion::V20, PASS);
    let net = sim.addr.rsplit_once('.').unwrap().0;
    dead.target = format!("{net}.3:623").parse().unwrap();
    let t0 = Instant::now();
    let e = dead.power_status().await.unwrap_err();
    assert!(matches!(e, BmcError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = pc
        .execute(&dead, PowerAction::On, &policy())
        .await
        .unwrap_err();
    assert!(
        matches!(e, PowerError::Bmc(BmcError::Timeout { .. })),
        "{e}"
    );

    // Sessions are closed: after 80 more calls (more than the BMC's 63 session slots) the
    // BMC reports at most ipmitool's own session as active.
    let b = bmc(&sim, LanVersion::V20, PASS);
    for i in 0..80 {
        b.power_status()
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    let ns = sim.ns.clone().unwrap();
    let (ok, out) = crate::util::sh(&[
        "ip", "netns", "exec", &ns, "ipmitool", "-I", "lanplus", "-C", "3", "-H", &sim.addr, "-U",
        USER, "-P", PASS, "session", "info", "active",
    ]);
    assert!(ok, "{out}");
    let active: u32 = out
        .lines()
        .find(|l| l.starts_with("active sessions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no session count in {out}"));
    assert!(active <= 2, "sessions leaked: {out}");
}

async fn run_task(c: &Cluster, machine: u64, action: &str) -> Value {
    let path = format!("/v1/machines/{machine}/power");
    post_task(c, 0, 0, &path, json!({"action": action}), TASK_WAIT).await
}

async fn boot_task(c: &Cluster, machine: u64, body: Value) -> Value {
    let path = format!("/v1/machines/{machine}/boot-device");
    post_task(c, 0, 0, &path, body, TASK_WAIT).await
}

const TASK_WAIT: Duration = Duration::from_secs(60);

/// Waits (30 s) until the machine's observed power state is `want`.
async fn wait_power_state(c: &Cluster, id: u64, want: &str, what: &str) {
    let t0 = Instant::now();
    loop {
        let m = machine(c, id).await;
        if m["power_state"] == want {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}: {m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn machine(c: &Cluster, id: u64) -> Value {
    c.get_json(0, &format!("/v1/machines/{id}")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_tasks_sync_and_ipmitool_through_the_rackd_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(1, tmp.path());
    let base = 21000u16;
    let base_arg = base.to_string();
    let c = Cluster::start(
        "ipmiproxy",
        1,
        &[
            "--location",
            "dc1",
            "--ipmi-proxy-listen",
            "{ip}",
            "--ipmi-proxy-base-port",
            &base_arg,
            "--ipmi-proxy-idle-secs",
            "5",
            "--power-sync-secs",
            "2",
            "--ipmi-timeout-ms",
            "400",
        ],
    )
    .await
    .expect("cluster");
    for l in ["dc1", "dc2"] {
        let _: Value = c
            .post_json(0, "/v1/locations", &json!({"name": l}))
            .await
            .unwrap();
    }
    let mk = |host: &str, loc: &str, driver: &str, pass: &str| {
        json!({"hostname": host, "location": loc,
               "bmc": {"driver": driver, "address": sim.addr, "username": USER, "password": pass}})
    };
    let mut ids = vec![];
    for (h, l, d, p) in [
        ("m-plus", "dc1", "ipmi", PASS),
        ("m-15", "dc1", "ipmi15", PASS),
        ("m-wrong", "dc1", "ipmi", "wrong-secret"),
        ("m-other", "dc2", "ipmi", PASS),
    ] {
        let v: Value = c
            .post_json(0, "/v1/machines", &mk(h, l, d, p))
            .await
            .unwrap();
        ids.push(v["id"].as_u64().unwrap());
    }
    let (plus, v15, wrong, other) = (ids[0], ids[1], ids[2], ids[3]);

    // Power on through a task: verified, recorded, and the BMC really got a power-up.
    let t = run_task(&c, plus, "on").await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["observed_power"], "on");
    assert!(sim.calls().contains("set power 1"));
    let m = machine(&c, plus).await;
    assert_eq!(m["power_state"], "on");
    assert!(m["power_observed_at"].as_u64().is_some());
    let t = run_task(&c, v15, "status").await;
    assert_eq!(
        (t["state"].as_str(), t["observed_power"].as_str()),
        (Some("succeeded"), Some("on"))
    );

    // Boot device through a task: next boot from PXE, then disk for every boot.
    let (s, b) = c
        .request(
            0,
            Method::POST,
            &format!("/v1/machines/{plus}/boot-device"),
            Some(json!({"device": "floppy"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{b}");
    let boots = count(&sim.calls(), "set boot");
    let t = boot_task(&c, plus, json!({"device": "pxe"})).await;
    assert_eq!(
        (t["state"].as_str(), t["kind"].as_str()),
        (Some("succeeded"), Some("boot_pxe")),
        "{t}"
    );
    assert!(sim.calls().contains("set boot pxe"));
    let t = boot_task(&c, v15, json!({"device": "disk", "persistent": true})).await;
    assert_eq!(t["kind"], "boot_disk_persistent");
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(count(&sim.calls(), "set boot"), boots + 2);

    // Wrong password: the task fails with a clear error that does not contain the password.
    let t = run_task(&c, wrong, "on").await;
    assert_eq!(t["state"], "failed");
    let err = t["error"].as_str().unwrap();
    assert!(err.contains("rejected the credentials"), "{err}");
    assert!(!err.contains("wrong-secret") && !t.to_string().contains("wrong-secret"));

    // ipmitool through the proxy, lanplus and lan 1.5: nothing gets through before an
    // operator opens a BMC session for the address it calls from.
    let node_ip = c.nodes[0].ip.clone();
    let port = base + plus as u16;
    let status = |intf: &str, port: u16| {
        ipmitool(intf, &node_ip, port, PASS, &["chassis", "power", "status"])
    };
    let (ok, out) = status("lanplus", port);
    assert!(!ok, "the proxy relayed without a BMC session: {out}");
    // Through the CLI (POST /v1/machines/{id}/bmc-session).
    let out = std::process::Command::new(rackd_tests::rackd_bin())
        .args(["--server", &c.url(0), "--api-token", &c.token, "-o", "json"])
        .args(["machines", "bmc-session", &plus.to_string()])
        .args(["--source", "127.0.0.1", "--ttl", "600"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (g["source"].as_str(), g["machine_id"].as_u64()),
        (Some("127.0.0.1"), Some(plus))
    );
    // The location node applies the grant within its table refresh (1 s).
    let t0 = Instant::now();
    loop {
        let (ok, out) = status("lanplus", port);
        if ok {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{out}");
    }
    // Another machine of the location is still closed to this address.
    let (ok, out) = status("lanplus", base + v15 as u16);
    assert!(!ok, "a machine without a session was reachable: {out}");
    for intf in ["lanplus", "lan"] {
        let (ok, out) = status(intf, port);
        assert!(ok && out.contains("Chassis Power is on"), "{intf}: {out}");
    }
    // Cipher suite 0 (RAKP-none): the BMC itself lets in anyone who knows a user name, with
    // any password; the proxy drops such openings, so through it the same call gets nowhere.
    let suite0 = |host: &str, port: u16| {
        crate::util::sh(&[
            "ipmitool",
            "-I",
            "lanplus",
            "-C",
            "0",
            "-H",
            host,
            "-p",
            &port.to_string(),
            "-U",
            USER,
            "-P",
            "not-the-password",
            "-R",
            "1",
            "-N",
            "1",
            "chassis",
            "power",
            "status",
        ])
    };
    let (ok, out) = suite0(&sim.addr, 623);
    assert!(
        ok && out.contains("Chassis Power is on"),
        "the BMC itself should accept cipher suite 0 (the attack the proxy stops): {out}"
    );
    let (ok, out) = suite0(&node_ip, port);
    assert!(!ok, "cipher suite 0 went through the proxy: {out}");
    let (ok, out) = ipmitool(
        "lanplus",
        &node_ip,
        port,
        PASS,
        &["chassis", "power", "off"],
    );
    assert!(ok, "{out}");
    let (ok, out) = ipmitool(
        "lanplus",
        &node_ip,
        port,
        PASS,
        &["chassis", "power", "status"],
    );
    assert!(ok && out.contains("Chassis Power is off"), "{out}");
    let (ok, out) = ipmitool("lanplus", &node_ip, port, PASS, &["chassis", "power", "on"]);
    assert!(ok, "{out}");

    // Concurrent operators on the same machine: separate flows, every call answered.
    let node = node_ip.clone();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let node = node.clone();
            std::thread::spawn(move || {
                (0..4)
                    .map(|_| {
                        ipmitool(
                            "lanplus",
                            &node,
                            port,
                            PASS,
                            &["chassis", "power", "status"],
                        )
                    })
                    .filter(|(ok, out)| *ok && out.contains("Chassis Power is on"))
                    .count()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 4, "a concurrent ipmitool session failed");
    }

    // A machine of another location, and a port with no machine, are not reachable.
    for p in [base + other as u16, base + 999] {
        let (ok, out) = status("lanplus", p);
        assert!(!ok, "port {p} reached a BMC: {out}");
    }

    // The sync notices a change made behind rackd's back (power off through the proxy).
    let (ok, out) = ipmitool(
        "lanplus",
        &node_ip,
        port,
        PASS,
        &["chassis", "power", "off"],
    );
    assert!(ok, "{out}");
    wait_power_state(&c, plus, "off", "sync never saw the power-off").await;
    // The unreachable-credentials machine is recorded as unknown, never off.
    wait_power_state(&c, wrong, "unknown", "sync never recorded unknown").await;
    let events: Value = c.get_json(0, "/v1/events?limit=1000").await.unwrap();
    assert!(
        !events.to_string().contains(PASS) && !events.to_string().contains("wrong-secret"),
        "a password reached the journal"
    );
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(
        !log.contains("wrong-secret") && !log.contains(PASS),
        "a password reached the log"
    );

    // The open session is listed; closing it (through the CLI) shuts the proxy again.
    let cli = |args: &[&str]| {
        std::process::Command::new(rackd_tests::rackd_bin())
            .args(["--server", &c.url(0), "--api-token", &c.token, "-o", "json"])
            .args(args)
            .output()
            .unwrap()
    };
    let id = plus.to_string();
    let out = cli(&["machines", "bmc-sessions", &id]);
    let open: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(open[0]["source"], "127.0.0.1", "{open}");
    let out = cli(&[
        "machines",
        "bmc-session-close",
        &id,
        "--source",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    loop {
        let (ok, _) = status("lanplus", port);
        if !ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the closed session still relays"
        );
    }
    let out = cli(&["machines", "bmc-sessions", &id]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    let again = cli(&["machines", "bmc-session-close", &id]);
    assert!(
        !again.status.success(),
        "closing what is not open is an error"
    );
}

/// A UDP link between the driver and the BMC that drops chosen datagrams: the Nth datagram
/// toward the BMC (`up`) or toward the driver (`down`), counted from 0.
struct LossyLink {
    addr: std::net::SocketAddr,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyLink {
    async fn start(bmc: std::net::SocketAddr, up: &[usize], down: &[usize]) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
        back.connect(bmc).await.unwrap();
        let addr = front.local_addr().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (up, down) = (up.to_vec(), down.to_vec());
        let d = dropped.clone();
        let task = tokio::spawn(async move {
            let (mut nu, mut nd) = (0usize, 0usize);
            let mut client = None;
            let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut a) => {
                        client = Some(from);
                        if up.contains(&nu) { d.fetch_add(1, SeqCst); } else { let _ = back.send(&a[..n]).await; }
                        nu += 1;
                    }
                    Ok(n) = back.recv(&mut b) => {
                        if down.contains(&nd) { d.fetch_add(1, SeqCst); }
                        else if let Some(c) = client { let _ = front.send_to(&b[..n], c).await; }
                        nd += 1;
                    }
                }
            }
        });
        LossyLink {
            addr,
            dropped,
            task,
        }
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lost datagrams: set-up packets and idempotent commands are retransmitted; a cycle whose
/// answer is lost is reported as unconfirmed and never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_driver_retransmits_lost_datagrams_and_never_repeats_a_cycle() {
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(2, tmp.path());
    let via = |link: &LossyLink| {
        let mut b = IpmiBmc::new(link.addr, LanVersion::V20, USER, PASS);
        b.timeout = Duration::from_millis(300);
        b
    };
    // RMCP+ set-up is 5 exchanges (auth caps, open session, RAKP 1/3, set privilege), then the
    // command (6th), then close. Lose the open-session request and the RAKP 2 answer.
    let link = LossyLink::start(sim.target(), &[1], &[2]).await;
    assert_eq!(via(&link).power_status().await.unwrap(), PowerState::Off);
    assert_eq!(link.dropped.load(SeqCst), 2);

    // Lose the answer to "power up": the command is retransmitted and succeeds.
    let link = LossyLink::start(sim.target(), &[], &[5]).await;
    via(&link).power_on().await.unwrap();
    assert_eq!(link.dropped.load(SeqCst), 1);
    assert_eq!(
        bmc(&sim, LanVersion::V20, PASS)
            .power_status()
            .await
            .unwrap(),
        PowerState::On
    );

    // Lose the answer to "power cycle": unconfirmed, and the chassis was cycled exactly once.
    let offs = count(&sim.calls(), "set power 0");
    let link = LossyLink::start(sim.target(), &[], &[5]).await;
    let e = via(&link).power_cycle().await.unwrap_err();
    assert!(matches!(e, BmcError::Unconfirmed { .. }), "{e}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&sim.calls(), "set power 0"),
        offs + 1,
        "cycle sent twice"
    );
}

/// BMC passwords are sealed per location (issue 11, item 6): a location learner, which holds
/// no CA key, gets its own location's key from a voter and powers its machine on through
/// ipmi_sim; it never gets another location's key; and no node's data directory (Raft log,
/// RocksDB, snapshots) holds a password in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_learner_opens_only_its_own_sites_sealed_bmc_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(4, tmp.path());
    let mut c = Cluster::start("sealed", 1, &[]).await.expect("cluster");
    let site = c
        .join_with(0, true, &["--location", "dc1", "--ipmi-timeout-ms", "400"])
        .await
        .expect("location learner");
    let mut loc_ids = vec![];
    for l in ["dc1", "dc2"] {
        let v: Value = c
            .post_json(0, "/v1/locations", &json!({"name": l}))
            .await
            .unwrap();
        loc_ids.push(v["id"].as_u64().unwrap());
    }
    let other_secret = "dc2-only-Secret";
    let mut ids = vec![];
    for (h, l, p) in [("s1", "dc1", PASS), ("s2", "dc2", other_secret)] {
        let v: Value = c
            .post_json(
                site,
                "/v1/machines",
                &json!({"hostname": h, "location": l,
                        "bmc": {"driver": "ipmi", "address": sim.addr, "username": USER, "password": p}}),
            )
            .await
            .unwrap();
        assert_eq!(v["bmc"]["password_set"], true, "{v}");
        ids.push(v["id"].as_u64().unwrap());
    }
    // The site fetches its key as soon as its location exists, before any work needs it (so
    // a site cut off later still opens its secrets).
    let own = c.nodes[site]
        .data_dir
        .join(format!("pki/location-{}.key", loc_ids[0]));
    c.wait_until(
        std::time::Duration::from_secs(20),
        "the site holds its key",
        |_| {
            let own = own.clone();
            async move { own.exists() }
        },
    )
    .await
    .unwrap();
    let t = run_task(&c, ids[0], "on").await;
    assert_eq!(t["state"], "succeeded", "{t}");
    let learner_id = c.health(site).await.unwrap().node_id;
    assert_eq!(
        t["assignee"].as_u64(),
        Some(learner_id),
        "the site's node ran it: {t}"
    );
    assert!(sim.calls().contains("set power 1"));

    let pki = c.nodes[site].data_dir.join("pki");
    let own = pki.join(format!("location-{}.key", loc_ids[0]));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&own)
            .expect("the site keeps its key")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!pki.join(format!("location-{}.key", loc_ids[1])).exists());
    assert!(!pki.join("ca.key").exists());
    for n in &c.nodes {
        for secret in [PASS, other_secret] {
            let found = files_holding(&n.data_dir, secret.as_bytes());
            assert!(found.is_empty(), "{secret:?} in clear in {found:?}");
        }
    }
}

/// An IPMI proxy on a voter that serves no location reaches a remote site's BMC through a BMC
/// tunnel over the QUIC link to the site's node: ipmitool at the voter drives the BMC once an
/// operator opened a BMC session, and not before nor after it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_through_a_voters_proxy_reaches_a_remote_sites_bmc_over_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = IpmiSim::in_netns(5, tmp.path());
    let base = 21500u16;
    let base_arg = base.to_string();
    let mut c = Cluster::start(
        "ipmitunnel",
        1,
        &[
            "--ipmi-proxy-listen",
            "{ip}",
            "--ipmi-proxy-base-port",
            &base_arg,
        ],
    )
    .await
    .expect("cluster");
    let _: Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let site = c
        .join_with(0, true, &["--location", "dc1", "--power-sync-secs", "0"])
        .await
        .expect("location learner");
    let m: Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "far", "location": "dc1",
                    "bmc": {"driver": "ipmi", "address": sim.addr, "username": USER, "password": PASS}}),
        )
        .await
        .unwrap();
    let id = m["id"].as_u64().unwrap();
    let voter_ip = c.nodes[0].ip.clone();
    let port = base + id as u16;
    let status = || {
        ipmitool(
            "lanplus",
            &voter_ip,
            port,
            PASS,
            &["chassis", "power", "status"],
        )
    };
    let (ok, out) = status();
    assert!(!ok, "relayed without a BMC session: {out}");

    let _: Value = c
        .post_json(
            0,
            &format!("/v1/machines/{id}/bmc-session"),
            &json!({"source": "127.0.0.1", "ttl_secs": 600}),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        let (ok, out) = status();
        if ok {
            assert!(out.contains("Chassis Power is"), "{out}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{out}");
    }
    let (ok, out) = ipmitool(
        "lanplus",
        &voter_ip,
        port,
        PASS,
        &["chassis", "power", "on"],
    );
    assert!(ok, "{out}");
    assert!(
        sim.calls().contains("set power 1"),
        "the BMC got the power-up"
    );
    let site_log = std::fs::read_to_string(&c.nodes[site].log).unwrap();
    assert!(
        site_log.contains("BMC tunnel opened"),
        "not through the site's node"
    );

    // Closed again: nothing gets through (the voter drops the flow; a new tunnel would be
    // refused by the site too).
    let (s, _) = c
        .request(
            0,
            Method::DELETE,
            &format!("/v1/machines/{id}/bmc-sessions"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, out) = status();
    assert!(!ok, "relayed after the session was closed: {out}");
}
