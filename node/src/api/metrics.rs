//! `GET /metrics`: this node's metrics in the Prometheus text format (API requests are counted
//! by `super::observe`).
//!
//! A scrape registers the process-wide instruments ([`crate::metrics::global`]) and a
//! collector that reads, at that moment, the Raft status (role, term, leader, commit / applied
//! / last log / snapshot indexes, apply lag, members) and the local replica (machines by
//! location and state, tasks by kind and state). Every node answers for itself; the replica
//! counts are the same on every caught-up node.
//!
//! Layer: part of `api`; reads the cluster through the [`Cluster`] trait only.

use std::collections::BTreeMap;
use std::fmt;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::AppState;
use crate::cluster::{RaftRole, RaftStatus};
use crate::metrics;
use rackd_raft::state::State as Replica;

/// The body of `GET /metrics` (its own type, so the endpoint table can declare it).
pub struct Scrape(String);

impl IntoResponse for Scrape {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], self.0).into_response()
    }
}

/// `GET /metrics`.
pub async fn scrape(State(node): State<AppState>) -> Scrape {
    let collector = ClusterGauges {
        status: node.status(),
        removed: node.is_removed(),
        replica: node.state(),
    };
    // Counting a large inventory and encoding are CPU work: off the async threads.
    let text = tokio::task::spawn_blocking(move || {
        let mut reg = metrics::registry();
        metrics::global().register(&mut reg);
        reg.register_collector(Box::new(collector));
        metrics::encode(&reg)
    })
    .await
    .unwrap_or_default();
    Scrape(text)
}

/// Gauges read from the Raft status and the replica at scrape time.
struct ClusterGauges {
    status: RaftStatus,
    removed: bool,
    replica: Replica,
}

impl fmt::Debug for ClusterGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterGauges")
    }
}

type Labels = Vec<(&'static str, String)>;

fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ClusterGauges {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.status;
        let idx = |i: Option<u64>| i.map_or(0, |v| v as i64);
        gauge(&mut enc, "raft_term", "Current Raft term", s.term as i64)?;
        gauges(
            &mut enc,
            "raft_role",
            "This node's Raft role (1 for the current one)",
            [
                RaftRole::Leader,
                RaftRole::Follower,
                RaftRole::Learner,
                RaftRole::Candidate,
                RaftRole::Shutdown,
            ]
            .into_iter()
            .map(|r| (vec![("role", r.as_str().to_string())], (r == s.role) as i64)),
        )?;
        gauge(
            &mut enc,
            "raft_has_leader",
            "1 if this node knows a leader",
            s.leader_id.is_some() as i64,
        )?;
        gauge(
            &mut enc,
            "raft_leader_id",
            "The leader's node id as this node knows it (0: none)",
            s.leader_id.unwrap_or(0) as i64,
        )?;
        gauge(
            &mut enc,
            "raft_commit_index",
            "Highest log index known committed",
            idx(s.commit_index),
        )?;
        gauge(
            &mut enc,
            "raft_applied_index",
            "Highest log index applied to this node's state machine",
            idx(s.last_applied),
        )?;
        gauge(
            &mut enc,
            "raft_last_log_index",
            "Highest log index in this node's log",
            idx(s.last_log_index),
        )?;
        gauge(
            &mut enc,
            "raft_snapshot_index",
            "Log index of this node's last snapshot",
            idx(s.snapshot_index),
        )?;
        gauge(
            &mut enc,
            "raft_log_entries",
            "Entries in this node's log (last log index - purged index)",
            idx(s.last_log_index)
                .saturating_sub(idx(s.purged_index))
                .max(0),
        )?;
        gauge(
            &mut enc,
            "raft_apply_lag",
            "Committed entries not yet applied here (commit index - applied index)",
            idx(s.commit_index)
                .saturating_sub(idx(s.last_applied))
                .max(0),
        )?;
        let voters = s.voters.len() as i64;
        gauges(
            &mut enc,
            "raft_members",
            "Members of the cluster by role",
            [
                (vec![("role", "voter".to_string())], voters),
                (
                    vec![("role", "learner".to_string())],
                    s.members.len() as i64 - voters,
                ),
            ],
        )?;
        // On the leader: how far each member is, and whether it answers (labelled with the
        // location a location node is bound to).
        let member = |id: &u64| {
            vec![
                ("member", id.to_string()),
                (
                    "location",
                    self.replica
                        .meta
                        .node_sites
                        .get(id)
                        .cloned()
                        .unwrap_or_default(),
                ),
            ]
        };
        gauges(
            &mut enc,
            "raft_replication_lag",
            "On the leader: entries each member is behind (last log index - the member's matched index)",
            s.followers
                .iter()
                .map(|(id, f)| (member(id), f.lag(s.last_log_index) as i64)),
        )?;
        gauges(
            &mut enc,
            "raft_member_reachable",
            "On the leader: 1 if the member acknowledged the leader within the last 5 seconds",
            s.followers
                .iter()
                .map(|(id, f)| (member(id), f.reachable() as i64)),
        )?;
        gauge(
            &mut enc,
            "node_removed",
            "1 once this node learned the cluster removed it",
            self.removed as i64,
        )?;

        let r = &self.replica;
        let mut machines: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for m in r.machines.values() {
            let m = &m.machine;
            *machines
                .entry((m.location.clone(), m.state.as_str()))
                .or_default() += 1;
        }
        gauges(
            &mut enc,
            "machines",
            "Machines in this node's replica by location and lifecycle state",
            machines
                .into_iter()
                .map(|((l, st), n)| (vec![("location", l), ("state", st.to_string())], n)),
        )?;
        let mut tasks: BTreeMap<(String, String), i64> = BTreeMap::new();
        for t in r.tasks.values() {
            *tasks
                .entry((metrics::label(&t.kind), metrics::label(&t.state)))
                .or_default() += 1;
        }
        gauges(
            &mut enc,
            "tasks",
            "Tasks kept in this node's replica by kind and state",
            tasks
                .into_iter()
                .map(|((k, st), n)| (vec![("kind", k), ("state", st)], n)),
        )?;
        gauge(
            &mut enc,
            "locations",
            "Locations in this node's replica",
            r.locations.len() as i64,
        )?;
        Ok(())
    }
}
