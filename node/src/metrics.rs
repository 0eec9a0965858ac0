//! The node's Prometheus metrics (prometheus-client), served by the API at `GET /metrics`.
//!
//! Two kinds: instruments that events update as they happen — API requests and their
//! latency, proposals that failed, leader changes, BMC calls, task results and HTTP boot
//! requests — kept in one
//! process-wide set ([`global`]); and counters the location services already keep (DHCP,
//! TFTP), which register themselves here ([`Metrics::watch_dhcp`], [`Metrics::watch_tftp`])
//! and are read at each scrape. Values derived from the replica and the Raft status (term,
//! indexes, members, machines and tasks by state) are read at scrape time by the API's
//! collector (`api::metrics`), which calls [`Metrics::register`] for the rest.
//!
//! Layer: the bottom of the node crate beside `abort`: depends on prometheus-client,
//! `rackd_net`'s counters and `rackd_storage`'s instruments (WAL fsyncs, snapshots) only; never imports `cluster`, `api`, `services`, `server` or `cli`.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rackd_net::dhcp::DhcpStats;
use rackd_net::tftp::TftpStats;

/// `Content-Type` of the Prometheus text format the API answers.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of an API request: method, route template (`/v1/machines/{id}`), status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

/// Labels of an API request's latency: method and route template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// Why a proposal failed (the API error code: `unavailable`, `conflict`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: String,
}

/// A BMC call by driver, operation and result (`ok`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcLabels {
    pub driver: String,
    pub op: String,
    pub result: String,
}

/// A task's kind and how its attempt ended (`succeeded`, `failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub kind: String,
    pub result: String,
}

/// An HTTP boot request: the location, what it asked for (`script`, `callback`, `blob`,
/// `file`, `other`) and its status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BootLabels {
    pub location: String,
    pub kind: String,
    pub status: String,
}

/// A webhook delivery attempt's result (`ok`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Builds latency histograms: 1 ms to ~16 s in powers of two.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 2.0, 15))
    }
}

/// Builds task duration histograms: 10 ms to ~3 h in powers of four.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskBuckets;

impl MetricConstructor<Histogram> for TaskBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.01, 4.0, 11))
    }
}

/// The process-wide instruments, and the services' counters registered for scrapes.
#[derive(Debug)]
pub struct Metrics {
    pub api_requests: Family<RequestLabels, Counter>,
    pub api_latency: Family<RouteLabels, Histogram, LatencyBuckets>,
    pub proposals_failed: Family<CodeLabels, Counter>,
    pub leader_changes: Counter,
    pub bmc_calls: Family<BmcLabels, Counter>,
    pub bmc_latency: Family<BmcLabels, Histogram, LatencyBuckets>,
    pub task_results: Family<TaskLabels, Histogram, TaskBuckets>,
    pub http_boot_requests: Family<BootLabels, Counter>,
    /// Event streams (`GET /v1/events?follow=true`) open on this node.
    pub event_streams: Gauge,
    /// Webhook delivery attempts by result (sent by the leader).
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    services: Arc<Services>,
}

/// Counters of the location services running in this process, by location.
#[derive(Debug, Default)]
struct Services {
    dhcp: Mutex<Vec<(String, Weak<DhcpStats>)>>,
    tftp: Mutex<Vec<(String, Weak<TftpStats>)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(LatencyBuckets),
            proposals_failed: Family::default(),
            leader_changes: Counter::default(),
            bmc_calls: Family::default(),
            bmc_latency: Family::new_with_constructor(LatencyBuckets),
            task_results: Family::new_with_constructor(TaskBuckets),
            http_boot_requests: Family::default(),
            event_streams: Gauge::default(),
            webhook_deliveries: Family::default(),
            services: Arc::default(),
        }
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = Metrics::default();
        // Exported from the start (at 0), so rates and alerts on it work before the first.
        drop(m.proposals_failed.get_or_create(&CodeLabels {
            code: "Unavailable".to_string(),
        }));
        for result in ["ok", "error"] {
            drop(m.webhook_deliveries.get_or_create(&ResultLabels {
                result: result.to_string(),
            }));
        }
        m
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counts the DHCP server of `location` in scrapes for as long as `stats` lives.
    pub fn watch_dhcp(&self, location: &str, stats: &Arc<DhcpStats>) {
        let mut v = lock(&self.services.dhcp);
        v.retain(|(_, w)| w.strong_count() > 0);
        v.push((location.to_string(), Arc::downgrade(stats)));
    }

    /// Counts the TFTP server of `location` in scrapes for as long as `stats` lives.
    pub fn watch_tftp(&self, location: &str, stats: &Arc<TftpStats>) {
        let mut v = lock(&self.services.tftp);
        v.retain(|(_, w)| w.strong_count() > 0);
        v.push((location.to_string(), Arc::downgrade(stats)));
    }

    /// Records one API request.
    pub fn api_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.api_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.api_latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Records one webhook delivery attempt.
    pub fn webhook_delivery(&self, ok: bool) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
    }

    /// Records one BMC call.
    pub fn bmc_call(&self, driver: &str, op: &str, ok: bool, seconds: f64) {
        let labels = BmcLabels {
            driver: driver.to_string(),
            op: op.to_string(),
            result: if ok { "ok" } else { "error" }.to_string(),
        };
        self.bmc_calls.get_or_create(&labels).inc();
        self.bmc_latency.get_or_create(&labels).observe(seconds);
    }

    /// Records one HTTP boot request.
    pub fn http_boot_request(&self, location: &str, kind: &str, status: u16) {
        self.http_boot_requests
            .get_or_create(&BootLabels {
                location: location.to_string(),
                kind: kind.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Records a proposal that failed with `code`.
    pub fn proposal_failed(&self, code: &str) {
        self.proposals_failed
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Registers every instrument and the services' counters in `reg` (prefix `rackd`).
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "api_requests",
            "API requests by method, route template and status code",
            self.api_requests.clone(),
        );
        reg.register_with_unit(
            "api_request_duration",
            "API request latency by method and route template",
            Unit::Seconds,
            self.api_latency.clone(),
        );
        reg.register(
            "raft_proposals_failed",
            "Proposals through this node that failed, by error code (unavailable: no leader or outcome unknown)",
            self.proposals_failed.clone(),
        );
        reg.register(
            "raft_leader_changes",
            "Times this node saw the leader change (a new leader, or none)",
            self.leader_changes.clone(),
        );
        reg.register(
            "bmc_calls",
            "BMC calls made by this node's executor, by driver, operation and result",
            self.bmc_calls.clone(),
        );
        reg.register_with_unit(
            "bmc_call_duration",
            "BMC call latency by driver, operation and result",
            Unit::Seconds,
            self.bmc_latency.clone(),
        );
        reg.register_with_unit(
            "task_duration",
            "Run time of task attempts this node executed, by kind and result",
            Unit::Seconds,
            self.task_results.clone(),
        );
        reg.register(
            "http_boot_requests",
            "HTTP boot requests by location, kind (script, callback, blob, file) and status code",
            self.http_boot_requests.clone(),
        );
        reg.register(
            "api_event_streams",
            "Event streams (GET /v1/events?follow=true) open on this node",
            self.event_streams.clone(),
        );
        reg.register(
            "webhook_deliveries",
            "Webhook delivery attempts by result (on the leader)",
            self.webhook_deliveries.clone(),
        );
        reg.register_collector(Box::new(ServiceCounters(self.services.clone())));
        rackd_storage::stats::stats().register(reg);
    }
}

/// The DHCP and TFTP counters of the live services, labelled by location.
struct ServiceCounters(Arc<Services>);

impl fmt::Debug for ServiceCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceCounters")
    }
}

/// One counter family of per-location values.
fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: &[(Vec<(&'static str, String)>, u64)],
) -> fmt::Result {
    if values.is_empty() {
        return Ok(());
    }
    let mut family = enc.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for ServiceCounters {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let dhcp: Vec<(String, Arc<DhcpStats>)> = lock(&self.0.dhcp)
            .iter()
            .filter_map(|(l, w)| Some((l.clone(), w.upgrade()?)))
            .collect();
        let tftp: Vec<(String, Arc<TftpStats>)> = lock(&self.0.tftp)
            .iter()
            .filter_map(|(l, w)| Some((l.clone(), w.upgrade()?)))
            .collect();
        let loc = |l: &str| vec![("location", l.to_string())];
        let with = |l: &str, k: &'static str, v: &str| {
            vec![("location", l.to_string()), (k, v.to_string())]
        };

        let mut received = Vec::new();
        let mut replies = Vec::new();
        let mut dropped = Vec::new();
        for (l, s) in &dhcp {
            for (t, c) in [
                ("discover", &s.discovers),
                ("request", &s.requests),
                ("inform", &s.informs),
                ("release", &s.releases),
                ("decline", &s.declines),
            ] {
                received.push((with(l, "type", t), get(c)));
            }
            for (t, c) in [("offer", &s.offers), ("ack", &s.acks), ("nak", &s.naks)] {
                replies.push((with(l, "type", t), get(c)));
            }
            for (why, c) in [
                ("malformed", &s.malformed),
                ("ignored", &s.ignored),
                ("unknown_client", &s.unknown_client),
            ] {
                dropped.push((with(l, "reason", why), get(c)));
            }
        }
        counter_family(
            &mut enc,
            "dhcp_packets",
            "DHCP messages received, all types",
            None,
            &dhcp
                .iter()
                .map(|(l, s)| (loc(l), get(&s.received)))
                .collect::<Vec<_>>(),
        )?;
        counter_family(
            &mut enc,
            "dhcp_messages",
            "DHCP client messages decoded, by message type",
            None,
            &received,
        )?;
        counter_family(
            &mut enc,
            "dhcp_replies",
            "DHCP replies sent, by message type",
            None,
            &replies,
        )?;
        counter_family(
            &mut enc,
            "dhcp_dropped",
            "DHCP messages not answered, by reason (malformed, not for this server, unknown client)",
            None,
            &dropped,
        )?;
        counter_family(
            &mut enc,
            "dhcp_discovery_offers",
            "Dynamic (discovery pool) offers and acks",
            None,
            &dhcp
                .iter()
                .map(|(l, s)| (loc(l), get(&s.dynamic)))
                .collect::<Vec<_>>(),
        )?;

        let mut transfers = Vec::new();
        for (l, s) in &tftp {
            for (r, c) in [
                ("completed", &s.completed),
                ("failed", &s.failed),
                ("refused", &s.refused),
                ("busy", &s.busy),
                ("malformed", &s.malformed),
            ] {
                transfers.push((with(l, "result", r), get(c)));
            }
        }
        counter_family(
            &mut enc,
            "tftp_requests",
            "TFTP read requests received",
            None,
            &tftp
                .iter()
                .map(|(l, s)| (loc(l), get(&s.requests)))
                .collect::<Vec<_>>(),
        )?;
        counter_family(
            &mut enc,
            "tftp_transfers",
            "TFTP requests by outcome (completed, failed, refused, busy, malformed)",
            None,
            &transfers,
        )?;
        counter_family(
            &mut enc,
            "tftp_sent",
            "TFTP payload bytes sent",
            Some(&Unit::Bytes),
            &tftp
                .iter()
                .map(|(l, s)| (loc(l), get(&s.bytes_sent)))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

/// Encodes `reg` in the Prometheus text format.
pub fn encode(reg: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a label set.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, reg) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}

/// The snake_case name serde gives an enum value (`power_on`), as a label value.
pub fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

/// A registry with rackd's prefix.
pub fn registry() -> Registry {
    Registry::with_prefix("rackd")
}
