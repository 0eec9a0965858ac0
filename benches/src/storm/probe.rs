//! Latency probes run beside a load phase: every few milliseconds one small request to each
//! target (a machine's boot script; for rackd also its API's health), one at a time, so a
//! server whose workers are stuck (on a cold disk, say) shows as slow answers here even when
//! its bulk throughput looks fine. Records each request's time, or its failure.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One target: a label, a URL, and a bearer token if it needs one.
#[derive(Clone)]
pub struct Target {
    pub label: &'static str,
    pub url: String,
    pub token: Option<String>,
}

/// Probes running until [`Probes::stop`].
pub struct Probes {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<(&'static str, Vec<f64>, u64)>>,
}

impl Probes {
    pub fn start(targets: Vec<Target>, every: Duration) -> Probes {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let tasks = targets
            .into_iter()
            .map(|t| {
                let rx = rx.clone();
                tokio::spawn(probe(t, every, rx))
            })
            .collect();
        Probes { stop, tasks }
    }

    /// Stop probing; per target: count, failures, p50/p99/max in milliseconds.
    pub async fn stop(self) -> Value {
        let _ = self.stop.send(true);
        let mut out = serde_json::Map::new();
        for t in self.tasks {
            let Ok((label, mut ms, failed)) = t.await else {
                continue;
            };
            ms.sort_by(f64::total_cmp);
            let at = |q: f64| -> Value {
                if ms.is_empty() {
                    return Value::Null;
                }
                let i = ((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1;
                json!((ms[i] * 10.0).round() / 10.0)
            };
            out.insert(
                label.to_string(),
                json!({"requests": ms.len(), "failed": failed,
                       "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}),
            );
        }
        Value::Object(out)
    }
}

async fn probe(
    t: Target,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (&'static str, Vec<f64>, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a reqwest client");
    let (mut ms, mut failed) = (Vec::new(), 0u64);
    while !*stop.borrow() {
        let t0 = Instant::now();
        let mut req = client.get(&t.url);
        if let Some(tok) = &t.token {
            req = req.bearer_auth(tok);
        }
        let ok = match req.send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
            _ => false,
        };
        if ok {
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(every.saturating_sub(t0.elapsed())) => {}
            _ = stop.changed() => {}
        }
    }
    (t.label, ms, failed)
}
