//! [`FakeCluster`]: a [`Cluster`] that applies commands to an in-memory [`State`] with the
//! real apply rules, stamped with a clock the test sets, so API handlers, the DHCP inventory
//! view and the executor's planning rules are unit-tested without Raft, RocksDB or processes.
//! It is one voter that leads unless a test takes its leadership away.
//!
//! Layer: test support inside `cluster`; depends on `rackd_raft` only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use rackd_raft::cmd::{Applied, Command, Request};
use rackd_raft::state::State;
use rackd_raft::NodeInfo;
use rackd_types::payload::{CreateLocation, CreateMachine};
use rackd_types::{ApiError, BmcDriver, BmcSpec};

use super::contract::{check_removal, Cluster, MemberRole, RaftRole, RaftStatus};

struct Inner {
    state: State,
    now_ms: u64,
    leading: bool,
    members: BTreeMap<u64, NodeInfo>,
    voters: BTreeSet<u64>,
    log: Vec<Request>,
    removed: bool,
    failure: Option<String>,
    /// Proposals still to be applied with their answer lost (see `lose_answers`).
    lost_answers: u32,
    /// Calls of `linearize` so far (each a ReadIndex round on a real node).
    linearizations: u64,
    /// The fake's cluster CA, made on first use.
    ca: Option<super::pki::CaBundle>,
}

pub struct FakeCluster {
    id: u64,
    inner: Mutex<Inner>,
    /// Requests applied so far (the fake's applied index), for `applied_since`.
    applied: tokio::sync::watch::Sender<u64>,
}

impl FakeCluster {
    /// A leading one-voter cluster with node id `id`, its clock at `now_ms`.
    pub fn new(id: u64, now_ms: u64) -> Arc<Self> {
        let info = NodeInfo::new(
            format!("127.0.0.1:{}", 8000 + id),
            format!("127.0.0.1:{}", 9000 + id),
        );
        Arc::new(FakeCluster {
            id,
            inner: Mutex::new(Inner {
                state: State::default(),
                now_ms,
                leading: true,
                members: BTreeMap::from([(id, info)]),
                voters: BTreeSet::from([id]),
                log: Vec::new(),
                removed: false,
                failure: None,
                lost_answers: 0,
                linearizations: 0,
                ca: None,
            }),
            applied: tokio::sync::watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `cmd` as the leader would (at the fake clock), panicking on refusal: test setup.
    pub fn apply_ok(&self, actor: &str, cmd: Command) -> Applied {
        self.apply(actor, None, cmd)
            .unwrap_or_else(|e| panic!("setup command refused: {e:?}"))
    }

    fn apply(
        &self,
        actor: &str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> Result<Applied, ApiError> {
        let mut g = self.lock();
        if !g.leading {
            return Err(ApiError::unavailable("no leader (fake)"));
        }
        g.state.admits_proposal(&cmd)?;
        let req = Request {
            time_ms: g.now_ms,
            actor: actor.to_string(),
            idempotency_key,
            cmd,
        };
        let r = g.state.apply(&req);
        g.log.push(req);
        self.applied.send_modify(|i| *i += 1);
        if g.lost_answers > 0 {
            g.lost_answers -= 1;
            return Err(ApiError::unavailable(
                "answer lost (fake): the write may have committed",
            ));
        }
        r.0
    }

    /// The next `n` proposals are applied, but their answers are lost (the caller sees
    /// `unavailable`, as after a timeout or a leader change after commit).
    pub fn lose_answers(&self, n: u32) {
        self.lock().lost_answers = n;
    }

    /// Move the leader's clock.
    pub fn advance(&self, d: Duration) {
        self.lock().now_ms += d.as_millis() as u64;
    }

    pub fn now_ms(&self) -> u64 {
        self.lock().now_ms
    }

    /// Take leadership away (writes and linearizable reads answer `unavailable`) or give it
    /// back.
    pub fn set_leading(&self, leading: bool) {
        self.lock().leading = leading;
    }

    /// Raft stopped on `cause` (as when the storage cannot write).
    pub fn set_failed(&self, cause: &str) {
        self.lock().failure = Some(cause.to_string());
    }

    /// Decide later entries by `rules` (test setup, as the format-1 migration leaves a state).
    pub fn set_apply_rules(&self, rules: rackd_raft::state::ApplyRules) {
        self.lock().state.meta.rules = rules;
    }

    /// How many times `linearize` was called (a ReadIndex round each on a real node).
    pub fn linearizations(&self) -> u64 {
        self.lock().linearizations
    }

    /// Every request proposed so far (applied or refused), in order.
    pub fn log(&self) -> Vec<Request> {
        self.lock().log.clone()
    }
}

impl Cluster for FakeCluster {
    fn id(&self) -> u64 {
        self.id
    }
    fn write_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn state(&self) -> State {
        self.lock().state.clone()
    }
    fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }
    fn applied_since(&self, seen: u64, at_most: Duration) -> BoxFuture<'_, ()> {
        let mut rx = self.applied.subscribe();
        Box::pin(async move {
            let _ = tokio::time::timeout(at_most, rx.wait_for(|i| *i > seen)).await;
        })
    }
    fn status(&self) -> RaftStatus {
        let g = self.lock();
        let index = g.log.len() as u64;
        RaftStatus {
            role: if g.leading {
                RaftRole::Leader
            } else {
                RaftRole::Follower
            },
            leader_id: g.leading.then_some(self.id),
            term: 1,
            members: g.members.clone(),
            voters: g.voters.clone(),
            commit_index: Some(index),
            last_applied: Some(index),
            last_log_index: Some(index),
            snapshot_index: None,
            purged_index: None,
            followers: Default::default(),
        }
    }
    fn is_removed(&self) -> bool {
        self.lock().removed
    }
    fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }
    fn leader(&self) -> Option<(u64, NodeInfo)> {
        let g = self.lock();
        g.leading
            .then(|| g.members.get(&self.id).map(|i| (self.id, i.clone())))
            .flatten()
    }
    fn wait_leader(&self, _timeout: Duration) -> BoxFuture<'_, Option<(u64, NodeInfo)>> {
        Box::pin(async move { self.leader() })
    }
    fn propose<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>> {
        Box::pin(async move { self.apply(actor, idempotency_key, cmd) })
    }
    fn propose_anywhere<'a>(
        &'a self,
        actor: &'a str,
        idempotency_key: Option<String>,
        cmd: Command,
    ) -> BoxFuture<'a, Result<Applied, ApiError>> {
        Box::pin(async move { self.apply(actor, idempotency_key, cmd) })
    }
    fn linearize(&self) -> BoxFuture<'_, Result<(), ApiError>> {
        Box::pin(async move {
            let mut inner = self.lock();
            inner.linearizations += 1;
            if inner.leading {
                Ok(())
            } else {
                Err(ApiError::unavailable("no leader (fake)"))
            }
        })
    }
    fn add_node(
        &self,
        id: u64,
        info: NodeInfo,
        learner: bool,
    ) -> BoxFuture<'_, Result<MemberRole, ApiError>> {
        Box::pin(async move {
            let mut g = self.lock();
            g.members.insert(id, info);
            if learner && !g.voters.contains(&id) {
                return Ok(MemberRole::Learner);
            }
            g.voters.insert(id);
            Ok(MemberRole::Voter)
        })
    }
    fn location_key(
        &self,
        location_id: u64,
    ) -> BoxFuture<'_, Result<super::sealing::LocationKey, ApiError>> {
        Box::pin(async move {
            let ca = self.cluster_ca()?;
            super::sealing::LocationKey::of_ca(&ca, location_id)
                .map_err(|e| ApiError::internal(e.to_string()))
        })
    }
    fn fetch_blob<'a>(
        &'a self,
        from: u64,
        digest: &'a rackd_types::Digest,
        _offset: u64,
        _len: u64,
    ) -> BoxFuture<'a, Result<crate::blobs::Chunks, ApiError>> {
        Box::pin(async move {
            Err(ApiError::unavailable(format!(
                "the fake cluster has no peers: node {from} cannot send {digest}"
            )))
        })
    }
    fn cluster_ca(&self) -> Result<super::pki::CaBundle, ApiError> {
        let mut g = self.lock();
        if g.ca.is_none() {
            let id = match g.state.cluster_id() {
                "" => "fake",
                id => id,
            }
            .to_string();
            let ca = super::pki::CaBundle::generate(&id, std::time::SystemTime::now())
                .map_err(|e| ApiError::internal(e.to_string()))?;
            g.ca = Some(ca);
        }
        Ok(g.ca.clone().expect("made above"))
    }

    fn remove_member<'a>(
        &'a self,
        _actor: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            check_removal(&self.status(), id)?;
            let mut g = self.lock();
            g.members.remove(&id);
            g.voters.remove(&id);
            Ok(())
        })
    }
}

/// Test fixtures: the inventory most tests need, created through the real apply rules.
impl FakeCluster {
    /// A location `name` (discovery off); its id.
    pub fn create_location(&self, name: &str) -> u64 {
        self.apply_ok(
            "t",
            Command::CreateLocation(CreateLocation {
                name: name.into(),
                description: String::new(),
                discovery: false,
            }),
        )
        .into_location()
        .unwrap_or_else(|e| panic!("{e:?}"))
        .meta
        .id
    }

    /// A machine; its id.
    pub fn create_machine(&self, m: CreateMachine) -> u64 {
        self.apply_ok("t", Command::CreateMachine(m))
            .into_machine()
            .unwrap_or_else(|e| panic!("{e:?}"))
            .meta
            .id
    }
}

/// A simulated BMC, as tests give machines.
pub fn sim_bmc() -> BmcSpec {
    BmcSpec {
        driver: BmcDriver::Sim,
        address: "127.0.0.1".into(),
        port: 623,
        username: String::new(),
        password: None,
        cipher_suite: None,
    }
}

/// Machine `host` of `location` with nothing else set (complete it with `..machine_spec(..)`).
pub fn machine_spec(host: &str, location: &str) -> CreateMachine {
    CreateMachine {
        hostname: host.into(),
        location: location.into(),
        rack_id: None,
        rack_unit: None,
        macs: vec![],
        ips: vec![],
        bmc: None,
        state: None,
        description: String::new(),
        tags: vec![],
    }
}
