//! Boot-storm benchmark: N reserved machines PXE-boot at once from one location node.
//!
//! Runs inside the client network namespace (`benches/scripts/storm_bench.sh` makes the two
//! namespaces and the veth, then runs this). For each server set — a rackd location node, then
//! dnsmasq (DHCP + TFTP) + nginx (HTTP) from Debian as the yardstick — it runs the phases a
//! datacenter power-on goes through, each with all N clients at once:
//!
//! 1. DHCP: perfdhcp (relay mode) makes N DORA exchanges from the N reserved MACs;
//! 2. TFTP: N downloads of the iPXE first stage (`undionly.kpxe`), PXE-ROM style, then the
//!    same N by curl's TFTP client (a third-party client, one process each); for both, the
//!    server's CPU per transfer, its open sockets and its memory per open transfer;
//! 3. HTTP: N machines each fetch their script, the kernel and the initrd over one keep-alive
//!    connection;
//! 4. image: M clients fetch one large image (default 1 GiB) at once, from the page cache;
//! 5. cold image: the same from a disk with the image evicted from the page cache (when the
//!    script mounted a disk directory at `www/artifacts/cold`).
//!
//! During both image phases, probes time small requests one after another (a machine's boot
//! script; rackd's API health): a server whose workers wait on the disk answers them late.
//!
//! It writes per-phase times, failures, retransmissions, p50/p99 per file, probe latencies,
//! each set's idle and peak RSS, and the ratios rackd / yardstick, to `--out` (JSON).
//! `--phases tftp,image` (say) runs only those of `dhcp`, `tftp`, `http` and `image` (to
//! compare two rackd builds on one thing); the default is all.

mod storm;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use storm::servers::{self, Net, Running};

struct Args {
    machines: usize,
    kernel_mib: u64,
    initrd_mib: u64,
    image_mib: u64,
    image_clients: usize,
    dhcp_rate: u32,
    out: PathBuf,
    net: Net,
    client_ip: Ipv4Addr,
    rackd: PathBuf,
    max_transfers: usize,
    /// The phases to run: `dhcp`, `tftp` (both client kinds), `http`, `image` (warm and cold).
    phases: Vec<String>,
    /// The servers' read limit on the cold image's disk (set by the script's cgroup), if any.
    cold_read_mibps: Option<u64>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        machines: 1000,
        kernel_mib: 8,
        initrd_mib: 32,
        image_mib: 1024,
        image_clients: 50,
        dhcp_rate: 2000,
        out: PathBuf::from("benches/results/storm.json"),
        net: Net {
            ns: String::new(),
            iface: "srv0".into(),
            server_ip: Ipv4Addr::new(10, 199, 0, 1),
            work: PathBuf::new(),
        },
        client_ip: Ipv4Addr::new(10, 199, 0, 5),
        rackd: PathBuf::from("rackd"),
        max_transfers: 64,
        phases: ["dhcp", "tftp", "http", "image"].map(String::from).to_vec(),
        cold_read_mibps: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--machines" => a.machines = v.parse()?,
            "--kernel-mib" => a.kernel_mib = v.parse()?,
            "--initrd-mib" => a.initrd_mib = v.parse()?,
            "--image-mib" => a.image_mib = v.parse()?,
            "--image-clients" => a.image_clients = v.parse()?,
            "--dhcp-rate" => a.dhcp_rate = v.parse()?,
            "--out" => a.out = v.into(),
            "--server-ns" => a.net.ns = v,
            "--iface" => a.net.iface = v,
            "--server-ip" => a.net.server_ip = v.parse()?,
            "--client-ip" => a.client_ip = v.parse()?,
            "--work" => a.net.work = v.into(),
            "--rackd" => a.rackd = v.into(),
            "--max-transfers" => a.max_transfers = v.parse()?,
            "--cold-read-mibps" => a.cold_read_mibps = Some(v.parse()?),
            "--phases" => {
                a.phases = v.split(',').map(String::from).collect();
                if let Some(p) = a
                    .phases
                    .iter()
                    .find(|p| !["dhcp", "tftp", "http", "image"].contains(&p.as_str()))
                {
                    bail!("unknown phase {p} (dhcp, tftp, http, image)");
                }
            }
            _ => bail!("unknown argument {k}"),
        }
    }
    if a.net.ns.is_empty() || a.net.work.as_os_str().is_empty() {
        bail!("--server-ns and --work are required (run benches/scripts/storm_bench.sh)");
    }
    Ok(a)
}

/// Machine i: MAC 52:54:00:5b:xx:xx, IP in the server's /16 from .1.2 on.
fn machines(n: usize, server: Ipv4Addr) -> Vec<(String, Ipv4Addr)> {
    let base = u32::from(server) & 0xffff_0000;
    (0..n)
        .map(|i| {
            let mac = format!("52:54:00:5b:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff);
            let ip = Ipv4Addr::from(base + 0x100 + 2 + (i as u32 / 250) * 256 + i as u32 % 250);
            (mac, ip)
        })
        .collect()
}

/// A file of `mib` MiB of incompressible bytes (one random MiB repeated).
fn write_file(path: &std::path::Path, mib: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut block = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for _ in 0..mib {
        f.write_all(&block)?;
    }
    f.flush()?;
    f.into_inner()?.sync_all()?;
    Ok(())
}

/// Where the cold image lives: a directory the script mounted from a disk. `None` when it is
/// missing or on tmpfs, whose pages cannot be evicted.
fn cold_dir(work: &std::path::Path) -> Option<PathBuf> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let d = work.join("www/artifacts/cold");
    let fs = rustix::fs::statfs(&d).ok()?;
    (fs.f_type as i64 != TMPFS_MAGIC).then_some(d)
}

/// Drop a file's pages from the page cache (it was synced when written).
fn evict(path: &std::path::Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// M clients fetch `path` at once while probes time a boot script and (rackd) the API.
async fn image_phase(a: &Args, server: &Running, path: &str, first_mac: &str) -> Value {
    let mut targets = vec![storm::probe::Target {
        label: "boot_script",
        url: format!("{}/boot/{first_mac}.ipxe", server.http_base),
        token: None,
    }];
    if let Some((api, token)) = &server.api {
        targets.push(storm::probe::Target {
            label: "api_health",
            url: format!("{api}/v1/health"),
            token: Some(token.clone()),
        });
    }
    let probes = storm::probe::Probes::start(targets, Duration::from_millis(50));
    let boots = (0..a.image_clients)
        .map(|_| vec![("image", path.to_string(), Some(a.image_mib << 20))])
        .collect();
    let mut image = http_phase(&server.http_base, boots).await;
    image["probes"] = probes.stop().await;
    let secs = image["secs"].as_f64().unwrap_or(0.0);
    image["gib_per_s"] = json!(round3(
        (a.image_clients as f64 * a.image_mib as f64 / 1024.0) / secs.max(1e-9)
    ));
    image
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn time_stats(mut v: Vec<f64>) -> Value {
    json!({
        "p50_s": round3(percentile(&mut v, 0.5)),
        "p99_s": round3(percentile(&mut v, 0.99)),
        "max_s": round3(percentile(&mut v, 1.0)),
    })
}

async fn dhcp_phase(a: &Args, macs_file: &std::path::Path) -> anyhow::Result<Value> {
    let n = a.machines.to_string();
    let t0 = Instant::now();
    let out = tokio::process::Command::new("perfdhcp")
        .args(["-4", "-l", &a.client_ip.to_string()])
        .args(["-r", &a.dhcp_rate.to_string(), "-n", &n, "-R", &n])
        .arg("-M")
        .arg(macs_file)
        .args(["-W", "500000", &a.net.server_ip.to_string()])
        .output()
        .await
        .context("perfdhcp (apt-get install kea-admin)")?;
    let secs = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let nums = |key: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|v| v.trim_start_matches(':').trim().parse().ok())
            .collect()
    };
    let sent = nums("sent packets");
    let received = nums("received packets");
    let drops = nums("drops");
    // The second exchange (REQUEST/ACK) completes a DORA.
    let completed = received.get(1).copied().unwrap_or(0);
    Ok(json!({
        "secs": round3(secs),
        "exchanges": a.machines,
        "completed": completed,
        "failed": (a.machines as u64).saturating_sub(completed),
        "sent": sent, "received": received, "drops": drops,
    }))
}

async fn tftp_phase(a: &Args, expect: u64) -> Value {
    let server = SocketAddr::new(IpAddr::V4(a.net.server_ip), 69);
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.machines {
        let local = IpAddr::V4(a.client_ip);
        set.spawn(storm::tftp::fetch(
            local,
            server,
            "undionly.kpxe",
            expect,
            Duration::from_secs(1),
        ));
    }
    let mut times = Vec::new();
    let (mut failed, mut retrans, mut retried_clients) = (0, 0u64, 0);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        let Ok(o) = r else {
            failed += 1;
            continue;
        };
        times.push(o.secs);
        retrans += o.retransmits as u64;
        if o.retransmits > 0 {
            retried_clients += 1;
        }
        if let Some(e) = o.error {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    json!({
        "secs": round3(t0.elapsed().as_secs_f64()),
        "clients": a.machines, "failed": failed, "first_error": first_error,
        "retransmits": retrans, "clients_that_retransmitted": retried_clients,
        "transfer": time_stats(times),
    })
}

/// N concurrent downloads of the iPXE first stage by curl's TFTP client (a third-party
/// client: its own timers, option negotiation and retransmissions), one process each.
async fn tftp_curl_phase(a: &Args, expect: u64) -> Value {
    let url = format!("tftp://{}/undionly.kpxe", a.net.server_ip);
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..a.machines {
        let url = url.clone();
        set.spawn(async move {
            tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--tftp-blksize",
                    "1432",
                    "-m",
                    "120",
                    "-o",
                    "/dev/null",
                ])
                .args(["-w", "%{size_download} %{time_total}", &url])
                .stdin(std::process::Stdio::null())
                .output()
                .await
        });
    }
    let (mut times, mut failed, mut first_error) = (Vec::new(), 0, None);
    while let Some(r) = set.join_next().await {
        let out = match r {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("curl: {e}"));
                continue;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut f = text.split_whitespace();
        let size: u64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let secs: f64 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        if out.status.success() && size == expect {
            times.push(secs);
        } else {
            failed += 1;
            first_error.get_or_insert(format!(
                "{} ({size} of {expect} bytes): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    json!({
        "secs": round3(t0.elapsed().as_secs_f64()),
        "clients": a.machines, "failed": failed, "first_error": first_error,
        "transfer": time_stats(times),
    })
}

/// Run `phase` while sampling the server set: CPU it used, open file descriptors (each TFTP
/// transfer holds one socket) and resident memory, idle before and at their peak; added to
/// the phase's JSON as `server`, with the costs per transfer (`n` transfers).
async fn with_costs(
    server: &Running,
    n: usize,
    phase: impl std::future::Future<Output = Value>,
) -> Value {
    let (cpu0, fds0, rss0) = (server.cpu_ticks(), server.open_fds(), server.rss_kib());
    let (mut fds_peak, mut rss_peak) = (fds0, rss0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tokio::pin!(phase);
    let mut out = loop {
        tokio::select! {
            v = &mut phase => break v,
            _ = tick.tick() => {
                fds_peak = fds_peak.max(server.open_fds());
                rss_peak = rss_peak.max(server.rss_kib());
            }
        }
    };
    // CLK_TCK is 100 on Linux: one tick is 10 ms.
    let cpu_ms = (server.cpu_ticks() - cpu0) * 10;
    let open = fds_peak.saturating_sub(fds0);
    let rss_rise = rss_peak.saturating_sub(rss0);
    out["server"] = json!({
        "cpu_ms": cpu_ms,
        "cpu_ms_per_transfer": round3(cpu_ms as f64 / n.max(1) as f64),
        "fds_idle": fds0, "fds_peak": fds_peak,
        "rss_idle_kib": rss0, "rss_rise_kib": rss_rise,
        "rss_kib_per_open_transfer": (open > 0).then(|| round3(rss_rise as f64 / open as f64)),
    });
    out
}

async fn http_phase(base: &str, boots: Vec<Vec<(&'static str, String, Option<u64>)>>) -> Value {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let base: Arc<str> = base.into();
    for files in boots {
        let base = base.clone();
        set.spawn(async move { storm::http::boot(&base, &files, Duration::from_secs(900)).await });
    }
    let mut per_file: std::collections::BTreeMap<&'static str, Vec<f64>> = Default::default();
    let (mut failed, mut first_error) = (0, None);
    while let Some(r) = set.join_next().await {
        for f in r.unwrap_or_default() {
            per_file.entry(f.file).or_default().push(f.secs);
            if let Some(e) = f.error {
                failed += 1;
                first_error.get_or_insert(format!("{}: {e}", f.file));
            }
        }
    }
    let files: serde_json::Map<String, Value> = per_file
        .into_iter()
        .map(|(k, v)| (k.to_string(), time_stats(v)))
        .collect();
    json!({
        "secs": round3(t0.elapsed().as_secs_f64()),
        "failed_fetches": failed, "first_error": first_error, "files": files,
    })
}

async fn run_set(
    a: &Args,
    server: Running,
    macs: &[(String, Ipv4Addr)],
    macs_file: &std::path::Path,
) -> anyhow::Result<Value> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.rss_kib();
    let name = server.name;
    let secs = |v: &Value| v["secs"].as_f64().unwrap_or(0.0);
    let (mut dhcp, mut tftp, mut tftp_curl, mut http) =
        (Value::Null, Value::Null, Value::Null, Value::Null);
    let run = |p: &str| a.phases.iter().any(|x| x == p);
    eprintln!("{name}: idle RSS {} MiB", idle / 1024);
    if run("dhcp") {
        eprintln!("{name}: DHCP phase");
        dhcp = dhcp_phase(a, macs_file).await?;
        eprintln!("{name}: {dhcp}");
    }
    if run("tftp") {
        eprintln!("{name}: TFTP phase");
        let kpxe = std::fs::metadata(a.net.work.join("tftp/undionly.kpxe"))?.len();
        tftp = with_costs(&server, a.machines, tftp_phase(a, kpxe)).await;
        eprintln!("{name}: {tftp}\n{name}: TFTP phase, curl clients");
        tftp_curl = with_costs(&server, a.machines, tftp_curl_phase(a, kpxe)).await;
        eprintln!("{name}: {tftp_curl}");
    }
    if run("http") {
        eprintln!("{name}: HTTP phase");
        let boots = macs
            .iter()
            .map(|(mac, _)| {
                vec![
                    ("script", format!("/boot/{mac}.ipxe"), None),
                    (
                        "kernel",
                        "/artifacts/vmlinuz".into(),
                        Some(a.kernel_mib << 20),
                    ),
                    (
                        "initrd",
                        "/artifacts/initrd.img".into(),
                        Some(a.initrd_mib << 20),
                    ),
                ]
            })
            .collect();
        http = http_phase(&server.http_base, boots).await;
        eprintln!("{name}: {http}");
    }
    let storm_peak = server.peak_rss_kib();
    let storm_secs = secs(&dhcp) + secs(&tftp) + secs(&http);
    let (mut image, mut image_cold) = (Value::Null, Value::Null);
    if run("image") && a.image_clients > 0 && a.image_mib > 0 {
        let first_mac = macs.first().map_or("", |(m, _)| m.as_str());
        eprintln!(
            "{name}: image phase ({} x {} MiB)",
            a.image_clients, a.image_mib
        );
        image = image_phase(a, &server, "/artifacts/image.img", first_mac).await;
        eprintln!("{name}: {image}");
        if let Some(d) = cold_dir(&a.net.work) {
            eprintln!("{name}: cold image phase (from {})", d.display());
            evict(&d.join("image.img"))?;
            image_cold = image_phase(a, &server, "/artifacts/cold/image.img", first_mac).await;
            eprintln!("{name}: {image_cold}");
        }
    }
    let peak = server.peak_rss_kib();
    Ok(json!({
        "storm_secs": round3(storm_secs),
        "dhcp": dhcp, "tftp": tftp, "tftp_curl": tftp_curl, "http": http,
        "image": image, "image_cold": image_cold,
        "rss_idle_mib": idle / 1024,
        "rss_peak_storm_mib": storm_peak / 1024,
        "rss_peak_with_image_mib": peak / 1024,
    }))
}

fn ratio(a: &Value, b: &Value, path: &[&str]) -> Value {
    let get = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone()).as_f64();
    match (get(a), get(b)) {
        (Some(x), Some(y)) if y > 0.0 => json!(round3(x / y)),
        _ => Value::Null,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let w = &a.net.work;
    for d in ["tftp", "www/artifacts", "www/boot"] {
        std::fs::create_dir_all(w.join(d))?;
    }
    std::fs::copy("/usr/lib/ipxe/undionly.kpxe", w.join("tftp/undionly.kpxe"))
        .context("/usr/lib/ipxe/undionly.kpxe (apt-get install ipxe)")?;
    write_file(&w.join("www/artifacts/vmlinuz"), a.kernel_mib)?;
    write_file(&w.join("www/artifacts/initrd.img"), a.initrd_mib)?;
    if a.image_clients > 0 {
        write_file(&w.join("www/artifacts/image.img"), a.image_mib)?;
        if let Some(d) = cold_dir(w) {
            write_file(&d.join("image.img"), a.image_mib)?;
        }
    }
    let macs = machines(a.machines, a.net.server_ip);
    let macs_file = w.join("macs.txt");
    std::fs::write(
        &macs_file,
        macs.iter()
            .map(|(m, _)| format!("{m}\n"))
            .collect::<String>(),
    )?;
    // nginx serves each machine's script as a static file with what rackd would send.
    for (i, (mac, _)) in macs.iter().enumerate() {
        std::fs::write(
            w.join(format!("www/boot/{mac}.ipxe")),
            format!("#!ipxe\necho rackd: m{i} is new: no deployment scheduled\nsleep 3\nexit\n"),
        )?;
    }

    let rackd = servers::rackd(&a.net, &a.rackd, &macs, a.max_transfers).await?;
    let r = run_set(&a, rackd, &macs, &macs_file).await?;
    let peers = servers::dnsmasq_nginx(&a.net, &macs, a.machines).await?;
    let p = run_set(&a, peers, &macs, &macs_file).await?;

    let ratios = json!({
        "storm_secs": ratio(&r, &p, &["storm_secs"]),
        "dhcp_secs": ratio(&r, &p, &["dhcp", "secs"]),
        "tftp_secs": ratio(&r, &p, &["tftp", "secs"]),
        "tftp_curl_secs": ratio(&r, &p, &["tftp_curl", "secs"]),
        "tftp_cpu_per_transfer": ratio(&r, &p, &["tftp", "server", "cpu_ms_per_transfer"]),
        "tftp_rss_per_open_transfer": ratio(&r, &p, &["tftp", "server", "rss_kib_per_open_transfer"]),
        "http_secs": ratio(&r, &p, &["http", "secs"]),
        "image_secs": ratio(&r, &p, &["image", "secs"]),
        "image_cold_secs": ratio(&r, &p, &["image_cold", "secs"]),
        "image_cold_boot_script_p99": ratio(&r, &p, &["image_cold", "probes", "boot_script", "p99_ms"]),
        "rss_peak_storm": ratio(&r, &p, &["rss_peak_storm_mib"]),
        "rss_peak_with_image": ratio(&r, &p, &["rss_peak_with_image_mib"]),
    });
    let report = json!({
        "benchmark": "boot-storm",
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "machines": a.machines,
        "files": {"undionly.kpxe_bytes": std::fs::metadata(w.join("tftp/undionly.kpxe"))?.len(),
                  "kernel_mib": a.kernel_mib, "initrd_mib": a.initrd_mib,
                  "image_mib": a.image_mib, "image_clients": a.image_clients,
                  "cold_image": cold_dir(w).map(|_| json!({
                      "on": "a disk (ext4 under /var/tmp), evicted from the page cache first",
                      "servers_read_limit_mib_per_s": a.cold_read_mibps}))},
        "rackd_max_transfers": a.max_transfers,
        "phases": a.phases,
        "dnsmasq_tftp_max": a.machines,
        "note": "ratios are rackd / (dnsmasq + nginx): below 1 means rackd is faster or smaller",
        "results": {"rackd": r, "dnsmasq+nginx": p},
        "ratios": ratios,
    });
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)? + "\n")?;
    eprintln!(
        "ratios (rackd / dnsmasq+nginx): {ratios}\nwrote {}",
        a.out.display()
    );
    Ok(())
}
