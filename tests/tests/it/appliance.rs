//! The bootable appliance, end to end under qemu (TCG): build the image with `rackd appliance
//! build`, boot three VMs from it on a bridge in a network namespace (one bootstraps, two join
//! through their seeds; one of them takes its address from a DHCP server), reach all three APIs from the host; power a VM off with the ACPI power
//! button and on again (it rejoins with its data); replace a VM's system part with a rebuilt
//! image (it rejoins); cut the power of all three, boot one alone and check that its local
//! replica did not go back in time; install onto an empty disk from the booted image (BIOS) and boot that
//! disk alone (UEFI). The kernel comes from $RACKD_KERNEL_DEB, ~/.cache/rackd-kernel/*.deb (.ci/run
//! downloads it) or the installed kernel. Namespace, links and VMs are removed on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackd::client::Client;
use serde_json::{json, Value};

use crate::util::sh;

/// `rackd appliance build` into `out`; returns the build time in seconds.
fn build_image(out: &Path, extra: &[&str]) -> f64 {
    let t0 = Instant::now();
    let mut cmd = Command::new(rackd_tests::rackd_bin());
    cmd.args(["appliance", "build", "--out"])
        .arg(out)
        .args(extra);
    if let Some(deb) = crate::util::kernel_deb() {
        cmd.arg("--kernel-deb").arg(deb);
    }
    let o = cmd.output().expect("run rackd appliance build");
    assert!(
        o.status.success(),
        "image build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    t0.elapsed().as_secs_f64()
}

fn rackd(args: &[&str]) -> String {
    let o = Command::new(rackd_tests::rackd_bin())
        .args(args)
        .output()
        .expect("run rackd");
    assert!(
        o.status.success(),
        "rackd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Vm {
    name: String,
    child: Option<Child>,
    serial: PathBuf,
    monitor: PathBuf,
}

impl Vm {
    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).replace('\r', "")
    }

    fn tail(&self) -> String {
        let c = self.console();
        let lines: Vec<&str> = c.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// The ACPI power button (qemu `system_powerdown`).
    fn power_button(&self) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).expect("monitor");
        s.write_all(b"system_powerdown\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return true;
                }
            } else {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bridge in a fresh namespace, reachable from the host through a veth at NET.1.
struct Lab {
    ns: String,
    host_if: String,
    net: String,
    dir: PathBuf,
    vms: Vec<Vm>,
    dhcpd: Option<Child>,
}

impl Lab {
    fn new(tag: u32, dir: &Path) -> Self {
        let n = std::process::id() % 200 + 20;
        let ns = format!("rka{}t{tag}", std::process::id() % 100_000);
        let lab = Lab {
            host_if: format!("{ns}h"),
            net: format!("10.{}.{n}", 210 + tag),
            ns: ns.clone(),
            dir: dir.to_path_buf(),
            vms: Vec::new(),
            dhcpd: None,
        };
        let _ = sh(&["ip", "netns", "del", &ns]);
        let _ = sh(&["ip", "link", "del", &lab.host_if]);
        let peer = format!("{ns}p");
        let nsx = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns.as_str()];
            v.extend_from_slice(args);
            v.iter().map(|s| s.to_string()).collect::<Vec<String>>()
        };
        let mut cmds: Vec<Vec<String>> = vec![
            vec!["ip", "netns", "add", &ns],
            vec![
                "ip",
                "link",
                "add",
                &lab.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["ip", "link", "set", &peer, "netns", &ns],
            vec![
                "ip",
                "addr",
                "add",
                &format!("{}.1/24", lab.net),
                "dev",
                &lab.host_if,
            ],
            vec!["ip", "link", "set", &lab.host_if, "up"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
        cmds.push(nsx(&["ip", "link", "add", "br0", "type", "bridge"]));
        cmds.push(nsx(&["ip", "link", "set", "br0", "up"]));
        cmds.push(nsx(&["ip", "link", "set", &peer, "master", "br0"]));
        cmds.push(nsx(&["ip", "link", "set", &peer, "up"]));
        cmds.push(nsx(&["ip", "link", "set", "lo", "up"]));
        for c in cmds {
            let a: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
            let (ok, out) = sh(&a);
            assert!(ok, "{a:?}: {out}");
        }
        lab
    }

    /// A DHCP server on the bridge (busybox udhcpd at NET.2) that gives VM `i` (by its MAC)
    /// the address [`Lab::ip`]`(i)`.
    fn dhcp_server(&mut self, static_vms: &[u32]) {
        let ns = self.ns.clone();
        let (ok, out) = sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{}.2/24", self.net),
            "dev",
            "br0",
        ]);
        assert!(ok, "{out}");
        let mut conf = format!(
            "interface br0\nstart {n}.100\nend {n}.150\noption subnet 255.255.255.0\n\
             option router {n}.1\noption lease 3600\nlease_file {d}/udhcpd.leases\n\
             pidfile {d}/udhcpd.pid\n",
            n = self.net,
            d = self.dir.display()
        );
        for i in static_vms {
            conf.push_str(&format!("static_lease {} {}\n", mac(*i), self.ip(*i)));
        }
        let path = self.dir.join("udhcpd.conf");
        std::fs::write(&path, conf).unwrap();
        std::fs::write(self.dir.join("udhcpd.leases"), b"").unwrap();
        self.dhcpd = Some(
            Command::new("ip")
                .args(["netns", "exec", &ns, "busybox", "udhcpd", "-f"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start udhcpd"),
        );
    }

    fn ip(&self, i: u32) -> String {
        format!("{}.{}", self.net, 10 + i)
    }

    /// Boots a VM (inside the namespace, on a tap in br0) from `disks`; returns its index.
    fn boot(&mut self, name: &str, i: u32, disks: &[&Path]) -> usize {
        self.boot_with(name, i, disks, None)
    }

    /// Like [`Lab::boot`], with UEFI firmware when `bios` names an OVMF image.
    fn boot_with(&mut self, name: &str, i: u32, disks: &[&Path], bios: Option<&str>) -> usize {
        let tap = format!("{}v{i}", self.ns);
        let ns = self.ns.clone();
        let _ = sh(&["ip", "netns", "exec", &ns, "ip", "link", "del", &tap]);
        for a in [
            vec![
                "ip", "netns", "exec", &ns, "ip", "tuntap", "add", "dev", &tap, "mode", "tap",
            ],
            vec![
                "ip", "netns", "exec", &ns, "ip", "link", "set", &tap, "master", "br0",
            ],
            vec!["ip", "netns", "exec", &ns, "ip", "link", "set", &tap, "up"],
        ] {
            let (ok, out) = sh(&a);
            assert!(ok, "{a:?}: {out}");
        }
        let serial = self.dir.join(format!("{name}.serial"));
        let monitor = self.dir.join(format!("{name}.mon"));
        let _ = std::fs::remove_file(&monitor);
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &ns,
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "768",
        ])
        .args(["-nodefaults", "-display", "none", "-name", name])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()))
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={}", mac(i)),
        ]);
        if let Some(b) = bios {
            cmd.args(["-bios", b]);
        }
        for d in disks {
            let fmt = if d.extension().is_some_and(|x| x == "qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            cmd.arg("-drive")
                .arg(format!("file={},format={fmt},if=virtio", d.display()));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        self.vms.push(Vm {
            name: name.to_string(),
            child: Some(child),
            serial,
            monitor,
        });
        self.vms.len() - 1
    }
}

fn mac(i: u32) -> String {
    format!("52:54:00:aa:00:{i:02x}")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for vm in &mut self.vms {
            vm.kill();
        }
        if let Some(mut d) = self.dhcpd.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = sh(&["ip", "netns", "del", &self.ns]);
        let _ = sh(&["ip", "link", "del", &self.host_if]);
    }
}

/// The typed client (the CLI's) for the VM at `ip`: writes carry one Idempotency-Key and are
/// retried through elections and restarts, as any careful client does with a 503. The bound is
/// wide: under TCG on a loaded 2-core machine a guest can stall long enough for its leader's
/// lease to lapse (seen: about a minute of 503s after vm2 left, with vm1 and vm3 running).
fn api(ip: &str, token: &str) -> Client {
    Client::with_http(&base(ip), Some(token.to_string()), client_for(ip))
        .with_timeout(Duration::from_secs(5))
        .with_retry(Duration::from_secs(180))
        .retry_unreachable()
}

/// What each node says of itself and of the cluster, and the console tail of every VM still
/// running (for a failure message).
async fn diagnose(lab: &Lab, ips: &[String], admin: &str) -> String {
    let mut out = String::new();
    for ip in ips {
        let health = get(ip, "/v1/health", "").await;
        let cluster = get(ip, "/v1/cluster?stale=true", admin).await;
        out.push_str(&format!(
            "--- {ip}: health {health:?}\ncluster {cluster:?}\n"
        ));
    }
    for vm in lab.vms.iter().filter(|v| v.child.is_some()) {
        out.push_str(&format!("--- console of {}:\n{}\n", vm.name, vm.tail()));
    }
    out
}

/// The appliance serves its API over TLS (it listens on all addresses): the base URL of a VM.
fn base(ip: &str) -> String {
    format!("https://{ip}:7080")
}

/// The cluster CA's hash of each lab (by its network), from the bootstrap console line
/// `cluster CA:  sha256:...`; the tests' clients accept only a server of that CA, as a joiner
/// with a pinned token does.
static PINS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn lab_net(ip: &str) -> &str {
    ip.rsplit_once('.').map_or(ip, |(net, _)| net)
}

fn pin_of(ip: &str) -> Option<String> {
    let pins = PINS.lock().unwrap_or_else(|p| p.into_inner());
    pins.iter()
        .find(|(net, _)| net == lab_net(ip))
        .map(|(_, pin)| pin.clone())
}

/// Learns the lab's pin from `vm`'s console once it printed the bootstrap lines.
fn learn_pin(lab: &Lab, vm: usize, ip: &str) {
    if pin_of(ip).is_some() {
        return;
    }
    let console = lab.vms[vm].console();
    let Some(pin) = console
        .lines()
        .filter_map(|l| l.strip_prefix("cluster CA:"))
        .find_map(|rest| rest.split_whitespace().next())
    else {
        return;
    };
    PINS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((lab_net(ip).to_string(), pin.to_string()));
}

/// A client for the VM at `ip`: it accepts only its lab's cluster CA (nothing before the
/// pin is known).
fn client_for(ip: &str) -> reqwest::Client {
    let b = reqwest::Client::builder().timeout(Duration::from_secs(5));
    match pin_of(ip) {
        Some(pin) => b
            .use_preconfigured_tls(
                (*rackd::cluster::pki::pinned_client_config(&pin).unwrap()).clone(),
            )
            .build()
            .unwrap(),
        None => b.build().unwrap(),
    }
}

async fn get(ip: &str, path: &str, token: &str) -> Option<Value> {
    let r = client_for(ip)
        .get(format!("{}{path}", base(ip)))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

async fn wait_api(lab: &Lab, vm: usize, ip: &str, timeout: Duration) -> f64 {
    let t0 = Instant::now();
    loop {
        learn_pin(lab, vm, ip);
        if get(ip, "/v1/health", "").await.is_some() {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < timeout,
            "{} ({ip}) API never answered; console:\n{}",
            lab.vms[vm].name,
            lab.vms[vm].tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every node reports the same three voters and one leader.
async fn wait_three_voters(ips: &[String], token: &str, timeout: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let mut ok = true;
        let mut last = Value::Null;
        for ip in ips {
            match get(ip, "/v1/cluster", token).await {
                Some(c) => {
                    let voters = c["members"]
                        .as_array()
                        .map(|m| m.iter().filter(|m| m["role"] == "voter").count())
                        .unwrap_or(0);
                    ok &= voters == 3 && c["leader_id"].as_u64().is_some();
                    last = c;
                }
                None => ok = false,
            }
        }
        if ok {
            return last;
        }
        assert!(t0.elapsed() < timeout, "no 3-voter cluster: {last}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until a VM's serial console shows `needle` (e.g. the status screen's token line).
async fn wait_console(lab: &Lab, vm: usize, needle: &str, timeout: Duration) {
    let t0 = Instant::now();
    while !lab.vms[vm].console().contains(needle) {
        assert!(
            t0.elapsed() < timeout,
            "{} never showed {needle:?}:\n{}",
            lab.vms[vm].name,
            lab.vms[vm].tail()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn seed(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn vm_disk(image: &Path, disk: &Path, seed_file: &Path) {
    let (ok, out) = sh(&[
        "cp",
        "--sparse=always",
        &image.display().to_string(),
        &disk.display().to_string(),
    ]);
    assert!(ok, "{out}");
    // The old name of `rackd appliance` still works.
    rackd(&[
        "image",
        "seed",
        "--disk",
        &disk.display().to_string(),
        "--seed",
        &seed_file.display().to_string(),
    ]);
}

/// Raft timing for these nodes, set through the seed as an operator does for slow links. The
/// guests run an unoptimized rackd under TCG on a 2-core host shared with the rest of the suite:
/// a peer round trip regularly exceeds the default 100 ms heartbeat, and openraft times each
/// heartbeat out after one interval, so with the defaults a live majority stops acknowledging
/// in time, the leader's lease lapses and it refuses writes while no follower sees a reason to
/// elect (seen: three minutes of 503s with vm1 and vm3 both up). The rule is etcd's: the
/// heartbeat covers the worst round trip, the election timeout is about ten heartbeats.
const SLOW_LINKS: &str =
    "extra_args = [\"--heartbeat-ms\", \"500\", \"--election-timeout-ms\", \"5000\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_image_forms_a_three_node_cluster_survives_power_cycle_and_upgrade() {
    let tmp = tempfile::Builder::new()
        .prefix("rackd-appliance-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let mut lab = Lab::new(0, &dir);
    lab.dhcp_server(&[3]);
    let img = dir.join("img1");
    let build_s = build_image(&img, &["--no-qcow2"]);
    let image = img.join("rackd.raw");
    let ips: Vec<String> = (1..=3).map(|i| lab.ip(i)).collect();
    let net = lab.net.clone();

    // Node 1 bootstraps.
    let s1 = seed(
        &dir.join("s1.toml"),
        &format!(
            "hostname = \"rk1\"\n[network]\naddress = \"{}/24\"\n[cluster]\nbootstrap = true\n\
             {SLOW_LINKS}",
            ips[0]
        ),
    );
    let disks: Vec<PathBuf> = (1..=3).map(|i| dir.join(format!("vm{i}.raw"))).collect();
    vm_disk(&image, &disks[0], &s1);
    let v1 = lab.boot("vm1", 1, &[&disks[0]]);
    let boot_s = wait_api(&lab, v1, &ips[0], Duration::from_secs(240)).await;
    let t0 = Instant::now();
    let admin = loop {
        let c = lab.vms[v1].console();
        if let Some(l) = c.lines().find(|l| l.starts_with("admin token: ")) {
            break l["admin token: ".len()..].trim().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no admin token on the console"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // The status screen says where the admin token is, never the token itself.
    wait_console(&lab, v1, "admin    token in ", Duration::from_secs(30)).await;
    assert_eq!(
        lab.vms[v1].console().matches(&admin).count(),
        1,
        "the admin token is printed once, at bootstrap"
    );

    // Nodes 2 and 3 join through their seeds.
    for i in 2..=3u32 {
        let tok: Value = api(&ips[0], &admin)
            .post("/v1/tokens/join", &json!({"description": format!("vm{i}")}))
            .await
            .unwrap();
        // vm2 has a static address; vm3 gets its address over DHCP (a static lease).
        let network = if i == 2 {
            format!("address = \"{}/24\"\ngateway = \"{net}.1\"\n", ips[1])
        } else {
            "address = \"dhcp\"\n".to_string()
        };
        let s = seed(
            &dir.join(format!("s{i}.toml")),
            &format!(
                "hostname = \"rk{i}\"\n[network]\n{network}\
                 [cluster]\njoin = \"{}\"\ntoken = \"{}\"\n{SLOW_LINKS}",
                base(&ips[0]),
                tok["token"].as_str().unwrap()
            ),
        );
        vm_disk(&image, &disks[i as usize - 1], &s);
        lab.boot(&format!("vm{i}"), i, &[&disks[i as usize - 1]]);
    }
    let c = wait_three_voters(&ips, &admin, Duration::from_secs(300)).await;
    eprintln!(
        "image built in {build_s:.1}s; vm1 API answered {boot_s:.1}s after start; cluster: {c}"
    );

    // Power button on vm2: clean shutdown; a write while it is away; power on: it rejoins
    // with its data (same node id) and sees the write.
    let id2 = get(&ips[1], "/v1/health", "").await.unwrap()["node_id"].clone();
    lab.vms[1].power_button();
    assert!(
        lab.vms[1].wait_exit(Duration::from_secs(90)),
        "vm2 ignored the power button:\n{}",
        lab.vms[1].tail()
    );
    assert!(lab.vms[1].console().contains("powering off"));
    // vm2 may have been the leader: the write is retried (same idempotency key) through the
    // election, as any client does with a 503.
    if let Err(e) = api(&ips[0], &admin)
        .post::<_, Value>("/v1/locations", &json!({"name": "while-away"}))
        .await
    {
        panic!(
            "a write while vm2 is away: {e}\n{}",
            diagnose(&lab, &ips, &admin).await
        );
    }
    let v2b = lab.boot("vm2b", 2, &[&disks[1]]);
    wait_api(&lab, v2b, &ips[1], Duration::from_secs(240)).await;
    assert_eq!(
        get(&ips[1], "/v1/health", "").await.unwrap()["node_id"],
        id2
    );
    wait_three_voters(&ips, &admin, Duration::from_secs(120)).await;
    let locs = get(&ips[1], "/v1/locations", &admin).await.unwrap();
    assert!(locs.to_string().contains("while-away"), "{locs}");

    // Upgrade vm3: rebuilt image (marked on the kernel command line), system part replaced,
    // seed and data kept; it boots the new system and rejoins as the same node.
    let img2 = dir.join("img2");
    build_image(&img2, &["--no-qcow2", "--cmdline", "rackd.build=2"]);
    let id3 = get(&ips[2], "/v1/health", "").await.unwrap()["node_id"].clone();
    lab.vms[2].power_button();
    assert!(
        lab.vms[2].wait_exit(Duration::from_secs(90)),
        "vm3 did not power off"
    );
    rackd(&[
        "appliance",
        "upgrade",
        "--disk",
        &disks[2].display().to_string(),
        "--image",
        &img2.join("rackd.raw").display().to_string(),
    ]);
    let v3b = lab.boot("vm3b", 3, &[&disks[2]]);
    wait_api(&lab, v3b, &ips[2], Duration::from_secs(240)).await;
    assert!(
        lab.vms[v3b].console().contains("rackd.build=2"),
        "vm3 did not boot the new system part"
    );
    assert_eq!(
        get(&ips[2], "/v1/health", "").await.unwrap()["node_id"],
        id3
    );
    wait_three_voters(&ips, &admin, Duration::from_secs(120)).await;
    // A linearizable read on the upgraded node (retried: under emulation a read right after
    // the membership settles may still meet a 503 while the node catches up).
    let deadline = Instant::now() + Duration::from_secs(60);
    let locs = loop {
        if let Some(v) = get(&ips[2], "/v1/locations", &admin).await {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "vm3 never answered a linearizable read"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(locs.to_string().contains("while-away"));

    // Power loss: a write that vm3's own replica has served, then every VM loses power at
    // once (qemu killed: what the guests had not synced is gone with their RAM). vm3 boots
    // alone, with no quorum to catch up from: its local replica must not have gone back in
    // time (applied batches are durable before they are served).
    if let Err(e) = api(&ips[0], &admin)
        .post::<_, Value>("/v1/locations", &json!({"name": "before-power-loss"}))
        .await
    {
        panic!(
            "the write before the power loss: {e}\n{}",
            diagnose(&lab, &ips, &admin).await
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(&ips[2], "/v1/locations?stale=true", &admin)
        .await
        .is_some_and(|v| v.to_string().contains("before-power-loss"))
    {
        assert!(Instant::now() < deadline, "vm3 never applied the write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for vm in lab.vms.iter_mut() {
        vm.kill();
    }
    let v3c = lab.boot("vm3c", 3, &[&disks[2]]);
    wait_api(&lab, v3c, &ips[2], Duration::from_secs(240)).await;
    let local = get(&ips[2], "/v1/locations?stale=true", &admin).await;
    assert!(
        local
            .as_ref()
            .is_some_and(|v| v.to_string().contains("before-power-loss")),
        "vm3 went back in time after the power loss: {local:?}\n{}",
        lab.vms[v3c].tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_installs_itself_onto_an_empty_disk_that_then_boots_alone() {
    let tmp = tempfile::Builder::new()
        .prefix("rackd-install-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let mut lab = Lab::new(1, &dir);
    let ip = lab.ip(1);
    // The image itself carries an install seed: write the appliance to /dev/vdb, power off.
    let s = seed(
        &dir.join("install.toml"),
        &format!(
            "hostname = \"rk-installed\"\n[network]\naddress = \"{ip}/24\"\n[cluster]\n\
             bootstrap = true\n[install]\ndisk = \"/dev/vdb\"\nthen = \"poweroff\"\n"
        ),
    );
    let img = dir.join("img");
    build_image(&img, &["--seed", &s.display().to_string()]);
    let qcow2 = img.join("rackd.qcow2");
    assert!(qcow2.exists(), "no qcow2 image");

    // Host-side checks of install's refusal: a disk with data is refused unless forced.
    let used = dir.join("used.raw");
    std::fs::write(&used, vec![1u8; 4096]).unwrap();
    let (ok, _) = sh(&["truncate", "-s", "1G", &used.display().to_string()]);
    assert!(ok);
    let o = Command::new(rackd_tests::rackd_bin())
        .args(["appliance", "install", "--from"])
        .arg(img.join("rackd.raw"))
        .arg("--disk")
        .arg(&used)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds data"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(&used).unwrap()[..4096],
        vec![1u8; 4096][..],
        "refused install wrote"
    );

    // Boot the installer (qcow2 overlay over the built image) with an empty second disk.
    let overlay = dir.join("installer.qcow2");
    let (ok, out) = sh(&[
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        &qcow2.display().to_string(),
        &overlay.display().to_string(),
    ]);
    assert!(ok, "{out}");
    let target = dir.join("target.raw");
    let (ok, out) = sh(&["truncate", "-s", "2G", &target.display().to_string()]);
    assert!(ok, "{out}");
    let v = lab.boot("installer", 1, &[&overlay, &target]);
    assert!(
        lab.vms[v].wait_exit(Duration::from_secs(240)),
        "installer did not power off:\n{}",
        lab.vms[v].tail()
    );
    assert!(
        lab.vms[v].console().contains("installed onto /dev/vdb"),
        "{}",
        lab.vms[v].tail()
    );

    // The installed disk alone boots, with UEFI firmware this time (syslinux.efi on the system
    // part; the installer VM booted through the BIOS path), and becomes a bootstrapped node.
    let ovmf = "/usr/share/ovmf/OVMF.fd";
    assert!(
        Path::new(ovmf).exists(),
        "OVMF missing (apt-get install ovmf)"
    );
    let t0 = Instant::now();
    let v2 = lab.boot_with("installed", 1, &[&target], Some(ovmf));
    let s = wait_api(&lab, v2, &ip, Duration::from_secs(240)).await;
    eprintln!(
        "installed disk: API answered {s:.1}s after start ({:.1}s)",
        t0.elapsed().as_secs_f64()
    );
    wait_console(
        &lab,
        v2,
        "bootstrapped new cluster",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        !lab.vms[v2].console().contains("installing the appliance"),
        "the installed disk re-installed"
    );
}
