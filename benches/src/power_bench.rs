//! Power-status polls per second one location node sustains, with the bound on concurrent BMC
//! sessions respected.
//!
//! 1. Real IPMI: `K` OpenIPMI `ipmi_sim` BMCs on loopback addresses (127.77.0.x:623), polled
//!    over RMCP+ (cipher suite 3) by rackd's IPMI driver through the `PowerController` (one
//!    full session per poll: auth caps, open session, RAKP 1–4, set privilege, chassis status,
//!    close), for several session bounds.
//! 2. Simulated BMCs: 1000 `SimBmc`s answering after a fixed latency, which shows the bound as
//!    the limit (polls/s ≈ bound / latency).
//!
//! Writes `benches/results/power.json` (or `--out PATH`). Needs `ipmi_sim` (openipmi).
//! Usage: `power-bench [--secs N] [--bmcs K] [--out PATH]`

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackd_hwctl::ipmi::LanVersion;
use rackd_hwctl::{Bmc, IpmiBmc, PowerAction, PowerController, SimBmc, VerifyPolicy};
use serde::Serialize;

#[derive(Serialize)]
struct Run {
    driver: &'static str,
    bmcs: usize,
    session_bound: usize,
    pollers: usize,
    seconds: f64,
    polls: u64,
    errors: u64,
    polls_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_sessions_seen: u32,
}

const CONF: &str = r#"name "bench"
set_working_mc 0x20
  startlan 1
    addr @ADDR@ 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  user 1   false   ""       "unused"  user     10       none md2 md5 straight
  user 2   true    "admin"  "benchpw" admin    10       none md2 md5 straight
"#;

struct Sims(Vec<Child>);
impl Drop for Sims {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_sims(k: usize, dir: &std::path::Path) -> anyhow::Result<Sims> {
    let emu = dir.join("sim.emu");
    std::fs::write(
        &emu,
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
    )?;
    let mut sims = Sims(Vec::new());
    for i in 0..k {
        let d = dir.join(format!("bmc{i}"));
        std::fs::create_dir_all(d.join("state"))?;
        let addr = format!("127.77.0.{}", i + 1);
        std::fs::write(d.join("lan.conf"), CONF.replace("@ADDR@", &addr))?;
        sims.0.push(
            Command::new("ipmi_sim")
                .arg("-c")
                .arg(d.join("lan.conf"))
                .arg("-f")
                .arg(&emu)
                .arg("-s")
                .arg(d.join("state"))
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(sims)
}

async fn load<B: Bmc + 'static>(
    driver: &'static str,
    bmcs: Arc<Vec<B>>,
    bound: usize,
    pollers: usize,
    secs: f64,
) -> Run {
    let pc = Arc::new(PowerController::new(bound));
    let stop = Arc::new(AtomicBool::new(false));
    let policy = VerifyPolicy {
        retries: 0,
        ..VerifyPolicy::default()
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pollers {
        let (pc, stop, bmcs, policy) = (pc.clone(), stop.clone(), bmcs.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            let mut i = p;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match pc
                    .execute(&bmcs[i % bmcs.len()], PowerAction::Status, &policy)
                    .await
                {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
                i += pollers;
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("poller");
        lat.extend(l);
        errors += e;
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let r = Run {
        driver,
        bmcs: bmcs.len(),
        session_bound: bound,
        pollers,
        seconds,
        polls: lat.len() as u64,
        errors,
        polls_per_sec: lat.len() as f64 / seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_sessions_seen: pc.max_sessions_seen(),
    };
    eprintln!(
        "{driver:5} bmcs={:4} bound={:3} polls/s={:8.1} p50={:.2}ms p99={:.2}ms errors={} max_sessions={}",
        r.bmcs, bound, r.polls_per_sec, r.p50_ms, r.p99_ms, r.errors, r.max_sessions_seen
    );
    assert!(
        r.max_sessions_seen as usize <= bound,
        "session bound exceeded"
    );
    r
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let secs: f64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let k: usize = arg("--bmcs").and_then(|s| s.parse().ok()).unwrap_or(32);
    let out = arg("--out").unwrap_or_else(|| "benches/results/power.json".into());
    let tmp = tempfile::tempdir()?;
    let _sims = start_sims(k, tmp.path())?;
    let ipmi: Arc<Vec<IpmiBmc>> = Arc::new(
        (0..k)
            .map(|i| {
                let mut b = IpmiBmc::new(
                    format!("127.77.0.{}:623", i + 1).parse().expect("addr"),
                    LanVersion::V20,
                    "admin",
                    "benchpw",
                );
                b.timeout = Duration::from_millis(500);
                b
            })
            .collect(),
    );
    let mut runs = Vec::new();
    for bound in [1, 4, 16, 32] {
        runs.push(load("ipmi", ipmi.clone(), bound, 64, secs).await);
    }
    let sims: Arc<Vec<SimBmc>> = Arc::new(
        (0..1000)
            .map(|i| {
                let b = SimBmc::new(&format!("sim{i}"), true);
                b.latency_ms.store(5, Ordering::Relaxed);
                b
            })
            .collect(),
    );
    for bound in [8, 32, 128] {
        runs.push(load("sim", sims.clone(), bound, 256, secs).await);
    }
    let report = serde_json::json!({
        "benchmark": "power-status polls per second, one node",
        "machine": "2 cores; ipmi_sim BMCs on loopback share the cores with the poller",
        "runs": runs,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {out}");
    Ok(())
}
