//! The servers under test, in the server namespace: one rackd location node (DHCP, TFTP and
//! HTTP boot from its replicated inventory of N reserved machines, populated through its API),
//! or the yardstick pair dnsmasq (DHCP with the same N reservations, TFTP) + nginx (HTTP,
//! sendfile, the scripts as static files). Both serve the same files from the same tmpfs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

pub struct Net {
    pub ns: String,
    pub iface: String,
    pub server_ip: Ipv4Addr,
    pub work: PathBuf,
}

/// A running server set; killed on drop.
pub struct Running {
    pub name: &'static str,
    children: Vec<Child>,
    /// HTTP boot base URL.
    pub http_base: String,
    /// The API's base URL and an admin token (rackd only).
    pub api: Option<(String, String)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    rackd_tests::proc_status_kib(pid, field).unwrap_or(0)
}

/// Children of `pid` (nginx's workers).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: the comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

impl Running {
    fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for c in &self.children {
            pids.push(c.id());
            pids.extend(children_of(c.id()));
        }
        pids
    }

    /// Resident memory now, summed over the set's processes (KiB).
    pub fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| status_kib(*p, "VmRSS:")).sum()
    }

    /// CPU time (user + system) used so far by the set's processes, in clock ticks
    /// (`getconf CLK_TCK`, 100 on Linux).
    pub fn cpu_ticks(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .map(|stat| {
                // After the comm: state is field 3, utime 14, stime 15.
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse().unwrap_or(0))
                    .collect();
                f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
            })
            .sum()
    }

    /// Open file descriptors of the set's processes (one per TFTP transfer's socket).
    pub fn open_fds(&self) -> usize {
        self.pids()
            .iter()
            .map(|p| {
                std::fs::read_dir(format!("/proc/{p}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Peak resident memory since start, summed over the set's processes (KiB).
    pub fn peak_rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| status_kib(*p, "VmHWM:")).sum()
    }
}

fn in_ns(net: &Net, prog: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &net.ns, prog]);
    c
}

fn log_file(net: &Net, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
    let f = std::fs::File::create(net.work.join(format!("{name}.log")))?;
    Ok((f.try_clone()?.into(), f.into()))
}

/// Start a rackd location node and give it `machines` (MAC, IP) through its API.
pub async fn rackd(
    net: &Net,
    bin: &Path,
    machines: &[(String, Ipv4Addr)],
    max_transfers: usize,
) -> anyhow::Result<Running> {
    let dir = net.work.join("rackd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ip = net.server_ip;
    let (out, err) = log_file(net, "rackd")?;
    // Started with the open-file limits a process usually gets (soft 1,024; hard 4,096 as a
    // PID 1 without systemd hands out), not the raised ones the bench script runs under: rackd
    // must raise its own limit to hold a storm's sockets.
    let child = in_ns(net, "prlimit")
        .args(["--nofile=1024:4096", "--"])
        .arg(bin)
        .arg("up")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--api", &format!("{ip}:0"), "--peer", &format!("{ip}:0")])
        // The probes time the API as earlier runs did (plain HTTP), to stay comparable.
        .arg("--api-plain-http")
        .args(["--location", "dc1", "--dhcp-interface", &net.iface])
        .args(["--dhcp-server-ip", &ip.to_string()])
        .args(["--tftp-listen", &format!("{ip}:69")])
        .arg("--tftp-root")
        .arg(net.work.join("tftp"))
        .args(["--http-boot-listen", &format!("{ip}:8080")])
        .arg("--artifacts-dir")
        .arg(net.work.join("www/artifacts"))
        .args(["--http-boot-max-transfers", &max_transfers.to_string()])
        // The load generator's clients share one address; real machines each have their own.
        .args(["--tftp-max-per-client", &(machines.len() + 16).to_string()])
        .env("RACKD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("start rackd")?;
    let mut running = Running {
        name: "rackd",
        children: vec![child],
        http_base: format!("http://{ip}:8080"),
        api: None,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (token, api) = loop {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        if let (Some(t), Some(a)) = (read("admin-token"), read("api.addr")) {
            break (t, a);
        }
        if Instant::now() > deadline {
            bail!(
                "rackd did not start; see {}",
                net.work.join("rackd.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    running.api = Some((format!("http://{api}"), token.clone()));
    let http = reqwest::Client::builder().no_proxy().build()?;
    let api = Arc::new((http, format!("http://{api}"), token));
    let post = |path: &'static str, body: serde_json::Value| {
        let api = api.clone();
        async move {
            let (http, base, token) = &*api;
            for _ in 0..100 {
                match http
                    .post(format!("{base}{path}"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    // Not ready yet (bootstrap still electing itself): try again.
                    Ok(r) if r.status().as_u16() == 503 => {}
                    Ok(r) => bail!("POST {path}: {} {}", r.status(), r.text().await?),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bail!("POST {path}: no answer")
        }
    };
    post("/v1/locations", json!({"name": "dc1"})).await?;
    post(
        "/v1/subnets",
        json!({"location": "dc1", "cidr": format!("{}/16", Ipv4Addr::from(u32::from(ip) & 0xffff_0000)), "gateway": ip.to_string()}),
    )
    .await?;
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut set = tokio::task::JoinSet::new();
    for (i, (mac, mip)) in machines.iter().enumerate() {
        let permit = sem.clone().acquire_owned().await?;
        let body = json!({"hostname": format!("m{i}"), "location": "dc1", "macs": [mac], "ips": [mip.to_string()]});
        let f = post("/v1/machines", body);
        set.spawn(async move {
            let _p = permit;
            f.await
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    eprintln!(
        "rackd: {} machines created in {:.1}s",
        machines.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(running)
}

/// Start dnsmasq (DHCP + TFTP) and nginx (HTTP) with the same machines and files.
pub async fn dnsmasq_nginx(
    net: &Net,
    machines: &[(String, Ipv4Addr)],
    tftp_max: usize,
) -> anyhow::Result<Running> {
    let w = &net.work;
    let ip = net.server_ip;
    let hosts: String = machines
        .iter()
        .map(|(mac, mip)| format!("{mac},{mip}\n"))
        .collect();
    std::fs::write(w.join("dnsmasq.hosts"), hosts)?;
    let _ = std::fs::remove_file(w.join("dnsmasq.leases"));
    let (out, err) = log_file(net, "dnsmasq")?;
    let net16 = Ipv4Addr::from(u32::from(ip) & 0xffff_0000);
    let dnsmasq = in_ns(net, "dnsmasq")
        .args([
            "-k",
            "--port=0",
            "--bind-interfaces",
            "--user=root",
            "--no-ping",
        ])
        .arg(format!("--interface={}", net.iface))
        .arg(format!("--dhcp-range={net16},static,255.255.0.0,1h"))
        .arg(format!(
            "--dhcp-hostsfile={}",
            w.join("dnsmasq.hosts").display()
        ))
        .arg(format!(
            "--dhcp-leasefile={}",
            w.join("dnsmasq.leases").display()
        ))
        .args([
            "--dhcp-authoritative",
            "--enable-tftp",
            "--dhcp-boot=undionly.kpxe",
        ])
        .arg(format!("--tftp-root={}", w.join("tftp").display()))
        .arg(format!("--tftp-max={tftp_max}"))
        .arg(format!(
            "--log-facility={}",
            w.join("dnsmasq-daemon.log").display()
        ))
        .arg("--pid-file=")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("start dnsmasq")?;
    let prefix = w.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = format!(
        "user root;\nworker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 10000;\n  \
         default_type application/octet-stream;\n  \
         server {{ listen {ip}:8080 backlog=4096; root {www}; }}\n}}\n",
        p = prefix.display(),
        www = w.join("www").display()
    );
    std::fs::write(prefix.join("nginx.conf"), conf)?;
    let (out, err) = log_file(net, "nginx")?;
    let nginx = in_ns(net, "nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("start nginx")?;
    let mut running = Running {
        name: "dnsmasq+nginx",
        children: vec![dnsmasq, nginx],
        http_base: format!("http://{ip}:8080"),
        api: None,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    for c in &mut running.children {
        if let Some(st) = c.try_wait()? {
            bail!(
                "a yardstick server exited at start ({st}); logs in {}",
                w.display()
            );
        }
    }
    Ok(running)
}
