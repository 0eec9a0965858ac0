//! The DHCP server against real clients in network namespaces: busybox udhcpc and ISC dhclient
//! get their reserved address (with gateway and DNS), an unknown MAC gets nothing, and
//! dhclient's RELEASE reaches the server. Needs root, iproute2, udhcpc and isc-dhcp-client
//! (.ci/run installs them). Namespaces are removed even when a test fails.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rackd_net::dhcp::{
    dhcp_socket, BootMode, BootServers, Config, DhcpCore, DhcpServer, DhcpStats, Inventory,
    Reservation,
};

static N: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must(args: &[&str]) {
    let (ok, out) = sh(args);
    assert!(ok, "{args:?}: {out}");
}

/// Two namespaces joined by a veth: `srv` (10.199.N.1/24 on srv0) and `cli` (eth0, no address).
struct Lab {
    srv: String,
    cli: String,
    net: String,
}

impl Lab {
    fn new() -> Self {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id() % 100_000);
        let lab = Lab {
            srv: format!("rkds{id}"),
            cli: format!("rkdc{id}"),
            net: format!("10.199.{}", 10 + n),
        };
        must(&["ip", "netns", "add", &lab.srv]);
        must(&["ip", "netns", "add", &lab.cli]);
        must(&[
            "ip", "-n", &lab.srv, "link", "add", "srv0", "type", "veth", "peer", "name", "eth0",
            "netns", &lab.cli,
        ]);
        must(&[
            "ip",
            "-n",
            &lab.srv,
            "addr",
            "add",
            &format!("{}.1/24", lab.net),
            "dev",
            "srv0",
        ]);
        must(&["ip", "-n", &lab.srv, "link", "set", "srv0", "up"]);
        must(&["ip", "-n", &lab.srv, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &lab.cli, "link", "set", "lo", "up"]);
        // Client scripts write resolv.conf; `ip netns exec` bind-mounts this one over the host's.
        std::fs::create_dir_all(format!("/etc/netns/{}", lab.cli)).unwrap();
        std::fs::write(format!("/etc/netns/{}/resolv.conf", lab.cli), "").unwrap();
        lab
    }

    fn set_client_mac(&self, mac: &str) {
        must(&["ip", "-n", &self.cli, "link", "set", "eth0", "down"]);
        must(&["ip", "-n", &self.cli, "link", "set", "eth0", "address", mac]);
        must(&["ip", "-n", &self.cli, "-4", "addr", "flush", "dev", "eth0"]);
        must(&["ip", "-n", &self.cli, "link", "set", "eth0", "up"]);
    }

    fn client_addr(&self) -> String {
        sh(&["ip", "-n", &self.cli, "-4", "-br", "addr", "show", "eth0"]).1
    }
}

/// A DHCP server socket on `device`, created inside namespace `ns`.
fn socket_in(ns: &str, device: &str) -> std::net::UdpSocket {
    let (ns, device) = (ns.to_string(), device.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
        // setns only affects this helper thread; the socket stays in the namespace.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns");
        dhcp_socket("0.0.0.0:67".parse().unwrap(), Some(&device)).expect("dhcp socket")
    })
    .join()
    .unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            &self.cli,
            "pkill",
            "-f",
            &format!("dhclient.*{}", self.cli),
        ]);
        let _ = sh(&["ip", "netns", "del", &self.cli]);
        let _ = sh(&["ip", "netns", "del", &self.srv]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.cli));
    }
}

struct Inv(HashMap<String, Reservation>);

impl Inventory for Inv {
    fn reservation(&self, mac: &str) -> Option<Reservation> {
        self.0.get(mac).cloned()
    }
}

fn start_server(lab: &Lab, reserved: &[(&str, Ipv4Addr)]) -> Arc<DhcpStats> {
    let server_ip: Ipv4Addr = format!("{}.1", lab.net).parse().unwrap();
    let mut m = HashMap::new();
    for (mac, ip) in reserved {
        m.insert(
            mac.to_string(),
            Reservation {
                ip: *ip,
                mask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: Some(server_ip),
                dns: vec![Ipv4Addr::new(192, 0, 2, 53)],
                hostname: "web1".into(),
                boot: BootMode::Network,
            },
        );
    }
    serve(socket_in(&lab.srv, "srv0"), server_ip, m)
}

/// Run rackd's DHCP server on `socket` with these reservations.
fn serve(
    socket: std::net::UdpSocket,
    server_ip: Ipv4Addr,
    reserved: HashMap<String, Reservation>,
) -> Arc<DhcpStats> {
    let core = DhcpCore::new(Config {
        server_id: server_ip,
        boot: BootServers {
            tftp: server_ip,
            http_base: format!("http://{server_ip}:8080"),
            ipxe_via_tftp: false,
        },
        lease_secs: 600,
        proxy: false,
        pool_share: Default::default(),
        discovery: Default::default(),
    });
    let server = DhcpServer::new(socket, core, Arc::new(Inv(reserved))).unwrap();
    let stats = server.stats();
    tokio::spawn(server.run());
    stats
}

async fn run(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        sh(&a)
    })
    .await
    .unwrap()
}

fn require(bin: &str) {
    let (ok, _) = sh(&["sh", "-c", &format!("command -v {bin}")]);
    assert!(
        ok,
        "{bin} missing (apt-get install udhcpc isc-dhcp-client iproute2)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_and_dhclient_get_their_reservation() {
    for b in ["ip", "udhcpc", "dhclient"] {
        require(b);
    }
    let lab = Lab::new();
    let ip: Ipv4Addr = format!("{}.50", lab.net).parse().unwrap();
    let stats = start_server(&lab, &[("02:77:00:00:00:11", ip)]);
    lab.set_client_mac("02:77:00:00:00:11");

    // busybox udhcpc: DISCOVER/OFFER/REQUEST/ACK, then its script configures eth0.
    let (ok, out) = run([
        "ip", "netns", "exec", &lab.cli, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    assert!(ok, "udhcpc: {out}");
    assert!(
        lab.client_addr().contains(&format!("{ip}/24")),
        "udhcpc address: {}",
        lab.client_addr()
    );
    let (_, route) = sh(&["ip", "-n", &lab.cli, "route"]);
    assert!(
        route.contains(&format!("default via {}.1", lab.net)),
        "gateway route: {route}"
    );

    // ISC dhclient: same reservation; then RELEASE.
    lab.set_client_mac("02:77:00:00:00:11");
    let lf = format!("/tmp/{}.leases", lab.cli);
    let pf = format!("/tmp/{}.pid", lab.cli);
    let (ok, out) = run([
        "ip", "netns", "exec", &lab.cli, "timeout", "30", "dhclient", "-4", "-v", "-1", "-lf", &lf,
        "-pf", &pf, "eth0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    assert!(ok, "dhclient: {out}");
    assert!(out.contains(&format!("bound to {ip}")), "{out}");
    assert!(
        lab.client_addr().contains(&format!("{ip}/24")),
        "dhclient address: {}",
        lab.client_addr()
    );
    let (ok, out) = run([
        "ip", "netns", "exec", &lab.cli, "dhclient", "-4", "-r", "-lf", &lf, "-pf", &pf, "eth0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    assert!(ok, "dhclient -r: {out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(DhcpStats::get(&stats.releases) >= 1, "RELEASE not seen");
    assert!(DhcpStats::get(&stats.replied) >= 4);
    let _ = std::fs::remove_file(&lf);
    let _ = std::fs::remove_file(&pf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_mac_gets_no_address() {
    require("udhcpc");
    let lab = Lab::new();
    let stats = start_server(
        &lab,
        &[(
            "02:77:00:00:00:11",
            format!("{}.50", lab.net).parse().unwrap(),
        )],
    );
    lab.set_client_mac("02:77:00:00:00:99");
    let (ok, _) = run([
        "ip", "netns", "exec", &lab.cli, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "2", "-T",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    assert!(!ok, "udhcpc got a lease for an unknown MAC");
    assert!(!lab.client_addr().contains(&lab.net));
    assert!(DhcpStats::get(&stats.unknown_client) >= 1);
}

/// client ns ── (10.194.K.0/24) ── relay ns running ISC dhcrelay ── (10.194.J.0/24) ── server ns
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_requests_through_isc_dhcrelay() {
    for b in ["ip", "udhcpc", "dhcrelay"] {
        require(b);
    }
    let lab = Lab::new(); // srv <-> cli veth is unused here except for the namespaces' lifetime
    let n = N.fetch_add(1, Ordering::SeqCst);
    let rly = format!("rkdr{}x{n}", std::process::id() % 100_000);
    let cli = format!("rkdq{}x{n}", std::process::id() % 100_000);
    struct Guard(Vec<String>);
    impl Drop for Guard {
        fn drop(&mut self) {
            for ns in &self.0 {
                for p in sh(&["ip", "netns", "pids", ns]).1.split_whitespace() {
                    let _ = sh(&["kill", p]);
                }
                let _ = sh(&["ip", "netns", "del", ns]);
                let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
            }
        }
    }
    let _g = Guard(vec![rly.clone(), cli.clone()]);
    let (srv_net, cli_net) = (
        format!("10.194.{}", 2 * n + 10),
        format!("10.194.{}", 2 * n + 11),
    );
    for a in [
        vec!["ip", "netns", "add", &rly],
        vec!["ip", "netns", "add", &cli],
        // server <-> relay
        vec![
            "ip", "-n", &lab.srv, "link", "add", "up0", "type", "veth", "peer", "name", "r1",
            "netns", &rly,
        ],
        vec![
            "ip",
            "-n",
            &lab.srv,
            "addr",
            "add",
            &format!("{srv_net}.1/24"),
            "dev",
            "up0",
        ],
        vec!["ip", "-n", &lab.srv, "link", "set", "up0", "up"],
        vec![
            "ip",
            "-n",
            &lab.srv,
            "route",
            "add",
            &format!("{cli_net}.0/24"),
            "via",
            &format!("{srv_net}.2"),
        ],
        vec![
            "ip",
            "-n",
            &rly,
            "addr",
            "add",
            &format!("{srv_net}.2/24"),
            "dev",
            "r1",
        ],
        vec!["ip", "-n", &rly, "link", "set", "r1", "up"],
        vec!["ip", "-n", &rly, "link", "set", "lo", "up"],
        // relay <-> client
        vec![
            "ip", "-n", &rly, "link", "add", "r0", "type", "veth", "peer", "name", "eth0", "netns",
            &cli,
        ],
        vec![
            "ip",
            "-n",
            &rly,
            "addr",
            "add",
            &format!("{cli_net}.1/24"),
            "dev",
            "r0",
        ],
        vec!["ip", "-n", &rly, "link", "set", "r0", "up"],
        vec![
            "ip",
            "-n",
            &cli,
            "link",
            "set",
            "eth0",
            "address",
            "02:77:00:00:00:21",
        ],
        vec!["ip", "-n", &cli, "link", "set", "eth0", "up"],
        vec!["ip", "-n", &cli, "link", "set", "lo", "up"],
    ] {
        must(&a);
    }
    std::fs::create_dir_all(format!("/etc/netns/{cli}")).unwrap();
    std::fs::write(format!("/etc/netns/{cli}/resolv.conf"), "").unwrap();

    let server_ip: Ipv4Addr = format!("{srv_net}.1").parse().unwrap();
    let ip: Ipv4Addr = format!("{cli_net}.50").parse().unwrap();
    let mut m = HashMap::new();
    m.insert(
        "02:77:00:00:00:21".to_string(),
        Reservation {
            ip,
            mask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(format!("{cli_net}.1").parse().unwrap()),
            dns: vec![],
            hostname: "relayed".into(),
            boot: BootMode::Network,
        },
    );
    // The server listens on its uplink to the relay.
    let stats = serve(socket_in(&lab.srv, "up0"), server_ip, m);

    // ISC dhcrelay between the client segment (r0) and the server (via r1).
    let relay = std::process::Command::new("ip")
        .args([
            "netns", "exec", &rly, "dhcrelay", "-4", "-d", "-q", "-i", "r0", "-i", "r1",
        ])
        .arg(server_ip.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dhcrelay");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _relay = Kill(relay);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = run([
        "ip", "netns", "exec", &cli, "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    let addr = sh(&["ip", "-n", &cli, "-4", "-br", "addr", "show", "eth0"]).1;
    assert!(
        ok && addr.contains(&format!("{ip}/24")),
        "udhcpc via relay: {out} {addr}"
    );
    assert!(DhcpStats::get(&stats.replied) >= 2);
}
