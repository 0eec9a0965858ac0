//! Helpers the benchmark binaries share: `--flag value` arguments, latency percentiles, the
//! leader's log index (Raft entries a run cost) and the wall clock in Unix seconds. Depends on
//! the test harness (`rackd-tests`) only; no benchmark logic lives here.

use std::time::Duration;

use rackd_tests::Cluster;
use serde::Serialize;

/// The process's `--name value` arguments.
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Self {
        Self(std::env::args().collect())
    }

    /// The value after `name`, if given.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1).cloned())
    }

    /// The value after `name` parsed, or `default` when absent.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|e| anyhow::anyhow!("{name} {s:?}: {e}")),
        }
    }

    /// `--out PATH`, or `benches/results/<file>`.
    pub fn out(&self, file: &str) -> String {
        self.get("--out")
            .unwrap_or_else(|| format!("{}/results/{file}", env!("CARGO_MANIFEST_DIR")))
    }
}

/// p50, p99 and max of a set of durations in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Percentiles of `v` (nearest rank; zeros when empty).
pub fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)));
    Latency {
        p50_ms: at(0.5).copied().unwrap_or(0.0),
        p99_ms: at(0.99).copied().unwrap_or(0.0),
        max_ms: v.last().copied().unwrap_or(0.0),
    }
}

/// The current leader's last log index.
pub async fn log_index(c: &mut Cluster) -> anyhow::Result<u64> {
    let l = c.wait_leader(Duration::from_secs(30)).await?;
    Ok(c.health(l).await?.last_log_index.unwrap_or(0))
}

/// Creates a machine from each body through node 0 (16 requests in flight); their ids, in
/// the bodies' order.
pub async fn create_machines(
    c: &Cluster,
    bodies: impl Iterator<Item = serde_json::Value>,
) -> anyhow::Result<Vec<u64>> {
    use anyhow::Context;
    use futures::StreamExt;
    futures::stream::iter(bodies)
        .map(|body| async move {
            let m: serde_json::Value = c.post_json(0, "/v1/machines", &body).await?;
            m["id"].as_u64().context("machine id")
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Copies every node's log to `$RACKD_BENCH_LOGS/n<i>.log` when that variable is set.
pub fn keep_logs(c: &Cluster) -> anyhow::Result<()> {
    if let Ok(dir) = std::env::var("RACKD_BENCH_LOGS") {
        std::fs::create_dir_all(&dir)?;
        for (i, node) in c.nodes.iter().enumerate() {
            let _ = std::fs::copy(&node.log, format!("{dir}/n{}.log", i + 1));
        }
    }
    Ok(())
}
