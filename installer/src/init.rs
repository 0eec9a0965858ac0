//! PID 1 of the appliance (`rackd appliance-init`, exec'd by the initramfs `/init`).
//!
//! Mounts the kernel filesystems, loads the image's kernel modules, reads the seed (seed
//! partition + `rackd.*` kernel parameters), optionally installs the appliance to a disk,
//! mounts the data partition, configures the network and hostname, then runs `rackd up` and
//! supervises it: restart with backoff when it exits, a status screen on the consoles (address,
//! role, leader, bootstrap tokens), and a clean shutdown (SIGTERM to rackd, sync, unmount, power
//! off) on the ACPI power button or SIGTERM/SIGINT to PID 1. Never exits: the kernel would
//! panic. Uses busybox for mount/ip/udhcpc/insmod/blkid.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::layout;
use crate::seed::{Addressing, Seed};

const DATA: &str = "/data";
const API_PORT: u16 = 7080;
const PEER_PORT: u16 = 7081;

fn say(msg: &str) {
    println!("rackd-init: {msg}");
    let _ = std::io::stdout().flush();
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    match Command::new(cmd).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("{cmd}: {e}")),
    }
}

fn mount_basics() {
    for (fs, dir, opts) in [
        ("proc", "/proc", ""),
        ("sysfs", "/sys", ""),
        ("devtmpfs", "/dev", ""),
        ("tmpfs", "/run", "mode=0755"),
        ("tmpfs", "/tmp", "mode=1777"),
    ] {
        let _ = std::fs::create_dir_all(dir);
        let mut args = vec!["-t", fs, fs, dir];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        if let Err(e) = sh("/bin/mount", &args) {
            say(&format!("mount {dir}: {e}"));
        }
    }
}

fn load_modules() {
    let list = std::fs::read_to_string("/lib/modules/load.list").unwrap_or_default();
    let (mut ok, mut failed) = (0, Vec::new());
    for m in list.lines().filter(|l| !l.is_empty()) {
        match sh("/bin/insmod", &[&format!("/lib/modules/{m}.ko")]) {
            Ok(_) => ok += 1,
            Err(e) if e.contains("File exists") => ok += 1,
            Err(_) => failed.push(m.to_string()),
        }
    }
    say(&format!(
        "loaded {ok} kernel modules{}",
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " ({} not for this hardware: {})",
                failed.len(),
                failed.join(" ")
            )
        }
    ));
}

/// Device holding the filesystem labelled `label`, from blkid (busybox's on the appliance).
pub fn device_with_label(label: &str) -> Option<String> {
    let out = sh("blkid", &[]).ok()?;
    out.lines().find_map(|l| {
        let (dev, rest) = l.split_once(':')?;
        rest.contains(&format!("LABEL=\"{label}\""))
            .then(|| dev.to_string())
    })
}

fn wait_for_label(label: &str, timeout: Duration) -> Option<String> {
    let t0 = Instant::now();
    loop {
        if let Some(d) = device_with_label(label) {
            return Some(d);
        }
        if t0.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `/dev/vda1` → `/dev/vda`, `/dev/nvme0n1p1` → `/dev/nvme0n1`.
pub fn parent_disk(part: &str) -> String {
    let trimmed = part.trim_end_matches(|c: char| c.is_ascii_digit());
    match trimmed.strip_suffix('p') {
        Some(base) if base.ends_with(|c: char| c.is_ascii_digit()) => base.to_string(),
        _ => trimmed.to_string(),
    }
}

fn read_seed() -> Seed {
    let mut seed = Seed::default();
    match wait_for_label(layout::LABEL_SEED, Duration::from_secs(5)) {
        Some(dev) => {
            let _ = std::fs::create_dir_all("/seed");
            match sh("/bin/mount", &["-t", "vfat", "-o", "ro", &dev, "/seed"]) {
                Ok(_) => match std::fs::read_to_string("/seed/rackd.toml") {
                    Ok(text) => match Seed::parse(&text) {
                        Ok(s) => seed = s,
                        Err(e) => say(&format!("ignoring {dev}/rackd.toml: {e}")),
                    },
                    Err(_) => say(&format!("seed partition {dev} has no rackd.toml")),
                },
                Err(e) => say(&format!("cannot mount the seed partition: {e}")),
            }
        }
        None => say("no seed partition; using kernel parameters only"),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match seed.apply_cmdline(&cmdline) {
        Ok(ignored) if !ignored.is_empty() => say(&format!(
            "ignoring kernel parameters {}: the seed sets the cluster (allow_kernel_overrides \
             is off)",
            ignored.join(", ")
        )),
        Ok(_) => {}
        Err(e) => say(&format!("kernel parameters: {e}")),
    }
    seed
}

fn maybe_install(seed: &Seed, sys_dev: &str, stop: &Arc<AtomicBool>) {
    let Some(inst) = &seed.install else { return };
    let source = parent_disk(sys_dev);
    if inst.disk == source {
        return; // running from the installed disk
    }
    say(&format!(
        "installing the appliance from {source} onto {}",
        inst.disk
    ));
    // The installed node keeps this seed without its [install] section.
    let mut target_seed = seed.clone();
    target_seed.install = None;
    let seed_path = Path::new("/tmp/installed-seed.toml");
    let written = toml::to_string(&target_seed)
        .map_err(|e| e.to_string())
        .and_then(|t| std::fs::write(seed_path, t).map_err(|e| e.to_string()));
    let r = written.map_err(|e| e.to_string()).and_then(|_| {
        crate::install::install(
            Path::new(&source),
            Path::new(&inst.disk),
            Some(seed_path),
            inst.force,
        )
        .map_err(|e| e.to_string())
    });
    match r {
        Ok(rep) => say(&format!(
            "installed onto {} ({} MiB, data {} MiB)",
            inst.disk,
            rep.target_bytes / layout::MIB,
            rep.data_bytes / layout::MIB
        )),
        Err(e) => {
            say(&format!("install failed: {e}"));
            return;
        }
    }
    match inst.then.as_str() {
        "reboot" => shutdown(None, false),
        "continue" => {}
        _ => {
            stop.store(true, Ordering::SeqCst);
            shutdown(None, true)
        }
    }
}

fn first_ethernet() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo" && Path::new(&format!("/sys/class/net/{n}/device")).exists())
        .collect();
    names.sort();
    names.into_iter().next()
}

fn ipv4_of(ifname: &str) -> Option<String> {
    let out = sh("/bin/ip", &["-4", "-o", "addr", "show", "dev", ifname]).ok()?;
    let inet = out.split_whitespace().skip_while(|w| *w != "inet").nth(1)?;
    Some(inet.split('/').next()?.to_string())
}

fn network(seed: &Seed) -> Option<(String, String)> {
    let _ = sh("/bin/ip", &["link", "set", "lo", "up"]);
    let t0 = Instant::now();
    let ifname = loop {
        if let Some(i) = seed.network.interface.clone().or_else(first_ethernet) {
            if Path::new(&format!("/sys/class/net/{i}")).exists() {
                break i;
            }
        }
        if t0.elapsed() > Duration::from_secs(15) {
            say("no network interface found");
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = sh("/bin/ip", &["link", "set", &ifname, "up"]);
    match seed.addressing() {
        Ok(Addressing::Static {
            address,
            prefix,
            gateway,
        }) => {
            let _ = sh(
                "/bin/ip",
                &[
                    "addr",
                    "add",
                    &format!("{address}/{prefix}"),
                    "dev",
                    &ifname,
                ],
            );
            if let Some(g) = gateway {
                let _ = sh(
                    "/bin/ip",
                    &["route", "add", "default", "via", &g.to_string()],
                );
            }
        }
        Ok(Addressing::Dhcp) => {
            let _ = Command::new("/bin/udhcpc")
                .args([
                    "-i",
                    &ifname,
                    "-s",
                    "/etc/udhcpc/default.script",
                    "-t",
                    "60",
                ])
                .args(["-T", "1", "-b", "-p", "/run/udhcpc.pid"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
        Err(e) => say(&format!("network settings: {e}")),
    }
    let t0 = Instant::now();
    loop {
        if let Some(ip) = ipv4_of(&ifname) {
            say(&format!("{ifname}: {ip}"));
            return Some((ifname, ip));
        }
        if t0.elapsed() > Duration::from_secs(90) {
            say(&format!("{ifname} got no IPv4 address"));
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Watches every "Power Button" input device; sets `stop` on a key press.
fn watch_power_button(stop: Arc<AtomicBool>) {
    let Ok(rd) = std::fs::read_dir("/sys/class/input") else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let dev_name = std::fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
        if !dev_name.contains("Power Button") {
            continue;
        }
        let stop = stop.clone();
        std::thread::spawn(move || {
            let Ok(mut f) = std::fs::File::open(format!("/dev/input/{name}")) else {
                return;
            };
            let mut ev = [0u8; 24];
            while f.read_exact(&mut ev).is_ok() {
                let (ty, code, value) = (
                    u16::from_le_bytes([ev[16], ev[17]]),
                    u16::from_le_bytes([ev[18], ev[19]]),
                    i32::from_le_bytes([ev[20], ev[21], ev[22], ev[23]]),
                );
                if ty == 1 && code == 116 && value == 1 {
                    say("power button pressed");
                    stop.store(true, Ordering::SeqCst);
                }
            }
        });
    }
}

/// `GET /v1/health` on the local API: over TLS (the API's default off loopback), verified
/// against the cluster CA in the data directory as this node's certificate name (which,
/// unlike the address, never changes); plain HTTP when the node serves that.
fn local_health(listen: &str) -> Option<serde_json::Value> {
    let body = local_health_tls(listen).or_else(|| {
        let mut s = local_socket(listen)?;
        s.write_all(b"GET /v1/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    })?;
    serde_json::from_str(body.split("\r\n\r\n").nth(1)?).ok()
}

fn local_socket(listen: &str) -> Option<std::net::TcpStream> {
    // A wildcard listener is reached on loopback.
    let host = match listen {
        "0.0.0.0" => "127.0.0.1",
        "[::]" => "[::1]",
        h => h,
    };
    let s = std::net::TcpStream::connect_timeout(
        &format!("{host}:{API_PORT}").parse().ok()?,
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

fn local_health_tls(listen: &str) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    let ca = std::fs::read(format!("{DATA}/rackd/pki/ca.pem")).ok()?;
    let node: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{DATA}/rackd/node.json")).ok()?).ok()?;
    let name = format!(
        "node-{}.{}.rackd",
        node["node_id"].as_u64()?,
        node["cluster_id"].as_str()?
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.ok()?).ok()?;
    }
    #[allow(deprecated)] // ring: see node/src/cluster/pki.rs
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        rustls::pki_types::ServerName::try_from(name).ok()?,
    )
    .ok()?;
    let mut tls = rustls::StreamOwned::new(conn, local_socket(listen)?);
    tls.write_all(b"GET /v1/health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    // A peer that closes without close_notify still gave us the whole HTTP/1.0 answer.
    let _ = tls.read_to_string(&mut body);
    (!body.is_empty()).then_some(body)
}

struct Status {
    hostname: String,
    ip: String,
    seed: Seed,
    join_token: Arc<Mutex<Option<String>>>,
}

impl Status {
    fn render(&self, health: &serde_json::Value) -> String {
        let admin = std::fs::read_to_string(format!("{DATA}/rackd/admin-token"))
            .ok()
            .map(|t| t.trim().to_string());
        let mut s = format!(
            "\n==================== rackd appliance ====================\n\
             host     {}  (API {}://{}:{API_PORT})\n\
             node     {}   raft {}   leader {}\n\
             role     {}{}\n",
            self.hostname,
            if self
                .seed
                .cluster
                .extra_args
                .iter()
                .any(|a| a == "--api-plain-http")
            {
                "http"
            } else {
                "https"
            },
            self.ip,
            health["node_id"],
            health["raft_state"].as_str().unwrap_or("?"),
            health["leader_id"],
            if self.seed.cluster.learner {
                "learner"
            } else {
                "voter"
            },
            self.seed
                .cluster
                .location
                .as_deref()
                .map(|l| format!(", location {l}"))
                .unwrap_or_default(),
        );
        // The tokens are printed once, when rackd creates them; this screen stays on tty1
        // for anyone walking past, so it says where the admin token is, not what it is.
        if admin.is_some() {
            s.push_str(&format!(
                "admin    token in {DATA}/rackd/admin-token (printed once at bootstrap)\n"
            ));
        }
        if self.join_token.lock().ok().is_some_and(|j| j.is_some()) {
            s.push_str("join     a bootstrap join token was printed above (one node, 1 h)\n");
        }
        s.push_str("=========================================================\n");
        s
    }
}

fn show(text: &str) {
    print!("{text}");
    let _ = std::io::stdout().flush();
    if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty1") {
        let _ = tty.write_all(text.replace('\n', "\r\n").as_bytes());
    }
}

fn spawn_rackd(args: &[String], join_token: &Arc<Mutex<Option<String>>>) -> Option<Pid> {
    let mut child = match Command::new("/bin/rackd")
        .args(args)
        .env("RACKD_LOG", "info,openraft=warn")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            say(&format!("cannot start rackd: {e}"));
            return None;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    if let Some(out) = child.stdout.take() {
        let jt = join_token.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                if let Some(t) = line.strip_prefix("join token:") {
                    if let Ok(mut j) = jt.lock() {
                        *j = Some(t.trim().to_string());
                    }
                }
            }
        });
    }
    // The child is reaped by the supervisor's waitpid(-1) loop, not through `child`.
    drop(child);
    Some(pid)
}

fn shutdown(rackd: Option<Pid>, power_off: bool) -> ! {
    say(if power_off {
        "powering off"
    } else {
        "rebooting"
    });
    if let Some(pid) = rackd {
        let _ = kill(pid, Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    nix::unistd::sync();
    for m in [DATA, "/seed"] {
        let _ = sh("/bin/umount", &[m]);
    }
    nix::unistd::sync();
    let mode = if power_off {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    } else {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    };
    let _ = nix::sys::reboot::reboot(mode);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The address rackd's API and peer ports listen on: the seed's `listen`, or the management
/// address (an IPv6 one in brackets).
fn listen_address(seed: &Seed, ip: &str) -> String {
    let host = seed.cluster.listen.as_deref().unwrap_or(ip);
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// The `rackd up` arguments for this node.
pub fn rackd_args(seed: &Seed, ip: &str) -> Vec<String> {
    // The management address only, unless the seed says otherwise: a location node's
    // provisioning network (where any booting machine sits) never reaches the API or peers.
    let listen = listen_address(seed, ip);
    let mut a: Vec<String> = vec![
        "up".into(),
        "--data-dir".into(),
        format!("{DATA}/rackd"),
        "--api".into(),
        format!("{listen}:{API_PORT}"),
        "--peer".into(),
        format!("{listen}:{PEER_PORT}"),
        "--advertise-api".into(),
        format!("{ip}:{API_PORT}"),
        "--advertise-peer".into(),
        format!("{ip}:{PEER_PORT}"),
    ];
    if let (false, Some(join)) = (seed.cluster.bootstrap, &seed.cluster.join) {
        a.extend(["--join".into(), join.clone()]);
        if let Some(t) = &seed.cluster.token {
            a.extend(["--token".into(), t.clone()]);
        }
    }
    if seed.cluster.learner {
        a.push("--learner".into());
    }
    if let Some(l) = &seed.cluster.location {
        a.extend(["--location".into(), l.clone()]);
    }
    a.extend(seed.cluster.extra_args.iter().cloned());
    a
}

/// Entry point of PID 1.
pub fn run() -> ! {
    mount_basics();
    say(&format!(
        "rackd appliance {} (layout {})",
        env!("CARGO_PKG_VERSION"),
        layout::LAYOUT_VERSION
    ));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    load_modules();
    watch_power_button(stop.clone());
    let sys = wait_for_label(layout::LABEL_SYS, Duration::from_secs(15));
    let seed = read_seed();
    if let Some(sys) = &sys {
        maybe_install(&seed, sys, &stop);
    }
    if let Err(e) = seed.validate_cluster() {
        say(&format!(
            "{e}; fix the seed (rackd.toml on the RACKDSEED partition)"
        ));
    }
    // Data partition.
    let _ = std::fs::create_dir_all(DATA);
    loop {
        match wait_for_label(layout::LABEL_DATA, Duration::from_secs(10)) {
            Some(dev) => match sh("/bin/mount", &["-t", "ext4", &dev, DATA]) {
                Ok(_) => {
                    say(&format!("data partition {dev} mounted on {DATA}"));
                    break;
                }
                Err(e) => say(&format!("cannot mount data partition {dev}: {e}")),
            },
            None => say("no RACKDDATA partition found"),
        }
        if stop.load(Ordering::SeqCst) {
            shutdown(None, true);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let hostname = seed.hostname.clone().unwrap_or_else(|| "rackd".into());
    let _ = std::fs::write("/proc/sys/kernel/hostname", &hostname);
    let (_ifname, ip) = network(&seed).unwrap_or_else(|| ("lo".into(), "127.0.0.1".into()));
    let join_token = Arc::new(Mutex::new(None));
    let status = Status {
        hostname,
        ip: ip.clone(),
        seed: seed.clone(),
        join_token: join_token.clone(),
    };
    let args = rackd_args(&seed, &ip);
    say(&format!("starting rackd {}", redact_args(&args)));
    let mut rackd = spawn_rackd(&args, &join_token);
    let mut started = Instant::now();
    let mut backoff = Backoff::default();
    let mut restart_at: Option<Instant> = rackd
        .is_none()
        .then(|| Instant::now() + backoff.next(Duration::ZERO));
    let mut shown = String::new();
    let mut last_check = Instant::now() - Duration::from_secs(10);
    loop {
        if stop.load(Ordering::SeqCst) {
            shutdown(rackd, true);
        }
        // Reap every exited child; notice rackd's exit.
        while let Ok(ws) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            let pid = match ws {
                WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => p,
                _ => break,
            };
            if Some(pid) == rackd {
                let wait = backoff.next(started.elapsed());
                say(&format!("rackd exited ({ws:?}); restarting in {wait:?}"));
                rackd = None;
                restart_at = Some(Instant::now() + wait);
            }
        }
        if rackd.is_none() && restart_at.is_some_and(|t| Instant::now() >= t) {
            rackd = spawn_rackd(&args, &join_token);
            started = Instant::now();
            restart_at = rackd
                .is_none()
                .then(|| Instant::now() + backoff.next(Duration::ZERO));
        }
        if last_check.elapsed() > Duration::from_secs(3) {
            last_check = Instant::now();
            if let Some(h) = local_health(&listen_address(&seed, &ip)) {
                let text = status.render(&h);
                if text != shown {
                    show(&text);
                    shown = text;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Restart delays for rackd: 1 s, doubling to 30 s while it keeps failing; back to 1 s after
/// it ran for a minute.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay before the next start, given how long the last run lasted.
    pub fn next(&mut self, ran_for: Duration) -> Duration {
        if ran_for > Duration::from_secs(60) {
            self.next = Duration::from_secs(1);
        }
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }
}

fn redact_args(args: &[String]) -> String {
    let mut out = Vec::new();
    let mut hide = false;
    for a in args {
        out.push(if hide {
            "<redacted>".to_string()
        } else {
            a.clone()
        });
        hide = a == "--token";
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_and_recover_after_a_long_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_secs(2);
        let waits: Vec<u64> = (0..7).map(|_| b.next(quick).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.next(Duration::from_secs(120)).as_secs(), 1);
        assert_eq!(b.next(quick).as_secs(), 2);
    }

    #[test]
    fn parent_disks_and_rackd_arguments() {
        assert_eq!(parent_disk("/dev/vda1"), "/dev/vda");
        assert_eq!(parent_disk("/dev/sdb3"), "/dev/sdb");
        assert_eq!(parent_disk("/dev/nvme0n1p1"), "/dev/nvme0n1");
        assert_eq!(parent_disk("/dev/mmcblk0p2"), "/dev/mmcblk0");
        let mut seed = Seed::default();
        seed.cluster.join = Some("http://10.0.0.1:7080".into());
        seed.cluster.token = Some("tok".into());
        seed.cluster.learner = true;
        let a = rackd_args(&seed, "10.0.0.2").join(" ");
        assert!(a.contains("--advertise-api 10.0.0.2:7080"));
        // The API and peer ports listen on the management address only...
        assert!(
            a.contains("--api 10.0.0.2:7080 --peer 10.0.0.2:7081"),
            "{a}"
        );
        assert!(!a.contains("0.0.0.0"), "{a}");
        assert!(rackd_args(&seed, "fd00::2")
            .join(" ")
            .contains("--api [fd00::2]:7080"));
        // ...unless the seed says otherwise.
        let mut all = seed.clone();
        all.cluster.listen = Some("0.0.0.0".into());
        assert!(rackd_args(&all, "10.0.0.2")
            .join(" ")
            .contains("--api 0.0.0.0:7080 --peer 0.0.0.0:7081"));
        assert!(a.contains("--join http://10.0.0.1:7080 --token tok --learner"));
        assert!(!redact_args(&rackd_args(&seed, "x")).contains("tok "));
        seed.cluster.bootstrap = true;
        assert!(!rackd_args(&seed, "x").join(" ").contains("--join"));
    }
}
