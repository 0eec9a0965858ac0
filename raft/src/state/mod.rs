//! The deterministic state machine of the inventory.
//!
//! [`State::apply`] takes a leader-stamped [`Request`] and mutates the typed tables; it reads no
//! clock, draws no randomness and does no I/O. The storage crate persists the rows each apply
//! touched ([`State::drain_changes`]) together with `last_applied` in one RocksDB batch, and
//! serializes the whole state for snapshots ([`StateSnapshot`]).
//!
//! Derived indexes (MAC → machine, IP → machine, names, token hashes) are rebuilt on load and
//! maintained by apply; they are never persisted.

mod blobs;
pub mod bmc_sessions;
pub mod cluster;
mod deploy;
mod inventory;
mod peers;
pub mod rules;
pub mod table;
pub mod tasks;
pub mod webhooks;
pub mod workflow;

#[cfg(test)]
mod idempotency_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod tests;

use imbl::OrdMap;

use rackd_types::{
    ApiError, ApiTokenView, ErrorCode, Event, Image, JoinTokenView, Location, Machine, Rack,
    Subnet, Task,
};
use serde::{Deserialize, Serialize};

use crate::cmd::{Applied, Command, Request, Response};
pub use deploy::deploy_token_check;
pub use rules::ApplyRules;
pub use table::{PersistedTable, RowChange, Table, TableKey};

/// Maximum number of journal events kept; older ones are dropped (deterministically, in apply).
pub const MAX_EVENTS: usize = 10_000;
/// How long a successful response is remembered for a client's `Idempotency-Key`.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 3600 * 1000;
/// How long the answer to an internal write (claim, finish, discovery, install callback) is
/// remembered: long enough for its retries (seconds to minutes), short enough that the
/// records of a busy site do not push clients' keys out of the shared bound.
pub const INTERNAL_IDEMPOTENCY_TTL_MS: u64 = 3600 * 1000;

/// How an idempotency record is stored: `actor NUL key` (keys are scoped by who sent them).
pub fn idempotency_full_key(actor: &str, key: &str) -> String {
    format!("{actor}\u{0}{key}")
}

/// The time-to-live of a stored idempotency key ([`idempotency_full_key`]). Client keys are scoped by
/// token id (`t<id>:<key>`, see the API); every other key is an internal write's.
pub fn idempotency_ttl(full_key: &str) -> u64 {
    let key = full_key.split_once('\u{0}').map_or(full_key, |(_, k)| k);
    let client = key
        .strip_prefix('t')
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if client {
        IDEMPOTENCY_TTL_MS
    } else {
        INTERNAL_IDEMPOTENCY_TTL_MS
    }
}
/// Upper bound on remembered idempotency keys.
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// Version of the state-machine row and snapshot encoding.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Table ids: the first byte of every state-machine row key in storage. Never reuse a number.
pub mod tables {
    pub const META: u8 = 1;
    pub const LOCATIONS: u8 = 2;
    pub const RACKS: u8 = 3;
    pub const MACHINES: u8 = 4;
    pub const SUBNETS: u8 = 5;
    pub const EVENTS: u8 = 6;
    pub const JOIN_TOKENS: u8 = 7;
    pub const API_TOKENS: u8 = 8;
    pub const IDEMPOTENCY: u8 = 9;
    pub const IMAGES: u8 = 10;
    pub const TASKS: u8 = 11;
    pub const BLOBS: u8 = 12;
    pub const WEBHOOKS: u8 = 13;
}

/// THE registry of state-machine tables: persistence ([`State::drain_changes`]), snapshot
/// install ([`State::all_rows`]) and loading ([`State::load_row`]) all walk this one list, so a
/// table cannot be persisted by one path and forgotten by another. Each entry names the table id
/// (never reused) and the `State` field; a unit test checks that every serialized field of
/// `State` other than `meta` is registered here, so a new field that is not fails the build's
/// tests rather than losing rows on restart.
macro_rules! state_tables {
    ($($id:ident => $field:ident),* $(,)?) => {
        /// Registered tables: (id, `State` field name).
        pub const TABLES: &[(u8, &str)] = &[$((tables::$id, stringify!($field))),*];

        impl State {
            fn tables_mut(&mut self) -> Vec<(u8, &'static str, &mut dyn PersistedTable)> {
                vec![$((tables::$id, stringify!($field), &mut self.$field as &mut dyn PersistedTable)),*]
            }
        }
    };
}

state_tables! {
    LOCATIONS => locations,
    RACKS => racks,
    MACHINES => machines,
    SUBNETS => subnets,
    EVENTS => events,
    JOIN_TOKENS => join_tokens,
    API_TOKENS => api_tokens,
    IDEMPOTENCY => idempotency,
    IMAGES => images,
    TASKS => tasks,
    BLOBS => blobs,
    WEBHOOKS => webhooks,
}

/// Singleton counters and cluster identity (stored as one row of the META table).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SmMeta {
    pub cluster_id: String,
    /// Next entity id (shared by all entity tables).
    pub next_id: u64,
    /// Next node id to hand out at join. Node 1 is the bootstrap node.
    pub next_node_id: u64,
    pub next_event_seq: u64,
    /// Highest leader-stamped time applied so far; apply uses `max(this, request.time_ms)`.
    pub last_time: u64,
    /// Node ids removed from the cluster: never admitted again.
    #[serde(default)]
    pub removed_nodes: std::collections::BTreeSet<u64>,
    /// The apply rules entries are decided by ([`rules`]); changed only by `AdoptRules`.
    #[serde(default = "ApplyRules::unrecorded")]
    pub rules: ApplyRules,
    /// Node certificates issued before this time (leader's clock, ms) are renewed by their
    /// nodes (`RenewCerts`); 0: never asked.
    #[serde(default)]
    pub certs_renew_before_ms: u64,
    /// The location each node joined for (from its join token): the only location whose
    /// secrets' key it is handed. Nodes absent here are bound to none.
    #[serde(default)]
    pub node_sites: std::collections::BTreeMap<u64, String>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredMachine {
    pub machine: Machine,
    /// BMC password; write-only over the API, never logged.
    #[serde(default)]
    pub bmc_password: Option<String>,
    /// One-time install-callback token of the current deployment, as apply checks it:
    /// `sha256:<hex>` of the secret (entries from before sealing: the secret itself); never
    /// returned or logged.
    #[serde(default)]
    pub deploy_token: Option<String>,
    /// The same secret sealed for the machine's location (`rackd-sealed:v1:deploy-token:…`), for
    /// the location node that puts it in the boot script; absent before sealing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_token_sealed: Option<String>,
    /// Who may reach the BMC through the IPMI proxy, until when (expired ones are dropped at
    /// the next grant).
    #[serde(default)]
    pub bmc_sessions: Vec<rackd_types::BmcSession>,
}

impl std::fmt::Debug for StoredMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredMachine")
            .field("machine", &self.machine)
            .field(
                "bmc_password",
                &self.bmc_password.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "deploy_token",
                &self.deploy_token.as_ref().map(|_| "<redacted>"),
            )
            .field("bmc_sessions", &self.bmc_sessions)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredJoinToken {
    pub view: JoinTokenView,
    pub hash: String,
    /// Addresses of the node that consumed the token (lets an interrupted join retry).
    #[serde(default)]
    pub joined_api: Option<String>,
    #[serde(default)]
    pub joined_peer: Option<String>,
    /// Set when the node it admitted completed join phase 2: the token is burnt.
    #[serde(default)]
    pub joined: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredApiToken {
    pub view: ApiTokenView,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyRecord {
    pub time: u64,
    /// The first answer. Records written before answers were typed hold the answer's JSON;
    /// they decode as [`Applied::Legacy`].
    pub response: Response,
    /// [`Command::idempotency_digest`] of the request that made the record; a later request
    /// with the same key and another digest is refused. Empty in records written before the
    /// digest existed (they match any request, as they did then).
    #[serde(default)]
    pub digest: String,
}

/// The replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub meta: SmMeta,
    pub locations: Table<u64, Location>,
    pub racks: Table<u64, Rack>,
    pub machines: Table<u64, StoredMachine>,
    pub subnets: Table<u64, Subnet>,
    pub events: Table<u64, Event>,
    pub join_tokens: Table<u64, StoredJoinToken>,
    pub api_tokens: Table<u64, StoredApiToken>,
    pub idempotency: Table<String, IdempotencyRecord>,
    #[serde(default)]
    pub images: Table<u64, Image>,
    #[serde(default)]
    pub tasks: Table<u64, Task>,
    /// Content-addressed artifacts and the nodes holding them, by digest (`sha256:<hex>`).
    #[serde(default)]
    pub blobs: Table<String, rackd_types::Blob>,
    /// Registered webhooks with their sealed secrets.
    #[serde(default)]
    pub webhooks: Table<u64, webhooks::StoredWebhook>,
    #[serde(skip)]
    meta_dirty: bool,
    #[serde(skip)]
    idx: Indexes,
}

/// Derived indexes: persistent maps like the tables, so cloning a `State` (snapshot builds,
/// apply on a copy) is O(1) and never copies per-row data under a lock.
#[derive(Debug, Clone, Default, PartialEq)]
struct Indexes {
    mac: OrdMap<String, u64>,
    ip: OrdMap<String, u64>,
    /// (location, lower-case hostname, machine): a multimap, as logs decided before rules 6
    /// may hold two machines of one name.
    host: OrdMap<(String, String, u64), ()>,
    location_by_name: OrdMap<String, u64>,
    join_token_by_hash: OrdMap<String, u64>,
    api_token_by_hash: OrdMap<String, u64>,
    /// (expiry time, key) for idempotency expiry, soonest first.
    idem_by_expiry: OrdMap<(u64, String), ()>,
    /// (machine, task) of every pending or running task: the per-machine checks of claims,
    /// observations and executors never scan finished tasks.
    active_tasks: OrdMap<(u64, u64), ()>,
    /// (finished at, task) of every finished task, oldest first, for retention.
    finished_tasks: OrdMap<(u64, u64), ()>,
}

/// Versioned envelope of a serialized snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateSnapshot {
    pub format_version: u32,
    pub state: State,
}

impl State {
    /// Rebuild every derived index from the tables (after load or snapshot install).
    pub fn rebuild_indexes(&mut self) {
        let mut idx = Indexes::default();
        for (id, m) in self.machines.iter() {
            idx.host.insert(
                (
                    m.machine.location.clone(),
                    m.machine.hostname.to_ascii_lowercase(),
                    *id,
                ),
                (),
            );
            for mac in &m.machine.macs {
                idx.mac.insert(mac.clone(), *id);
            }
            for ip in &m.machine.ips {
                idx.ip.insert(ip.clone(), *id);
            }
        }
        for (id, l) in self.locations.iter() {
            idx.location_by_name.insert(l.name.clone(), *id);
        }
        for (id, t) in self.join_tokens.iter() {
            idx.join_token_by_hash.insert(t.hash.clone(), *id);
        }
        for (id, t) in self.api_tokens.iter() {
            idx.api_token_by_hash.insert(t.hash.clone(), *id);
        }
        for (id, t) in self.tasks.iter() {
            match (t.state.is_terminal(), t.finished_at) {
                (false, _) => {
                    idx.active_tasks.insert((t.machine_id, *id), ());
                }
                (true, f) => {
                    idx.finished_tasks.insert((f.unwrap_or(0), *id), ());
                }
            }
        }
        for (k, r) in self.idempotency.iter() {
            let expires = r.time.saturating_add(self.meta.rules.idempotency_ttl(k));
            idx.idem_by_expiry.insert((expires, k.clone()), ());
        }
        self.idx = idx;
    }

    /// Apply one request. Deterministic: the result depends only on `self` and `req`, under
    /// the rules the state records ([`SmMeta::rules`]).
    pub fn apply(&mut self, req: &Request) -> Response {
        let now = self.meta.last_time.max(req.time_ms);
        if now != self.meta.last_time {
            self.meta.last_time = now;
            self.meta_dirty = true;
        }
        match self.meta.rules {
            ApplyRules::Format1 => self.apply_format1(now, req),
            ApplyRules::Format2
            | ApplyRules::Rules3
            | ApplyRules::Rules4
            | ApplyRules::Rules5
            | ApplyRules::Rules6 => self.apply_format2(now, req),
        }
    }

    fn apply_format2(&mut self, now: u64, req: &Request) -> Response {
        let idem_key = req
            .idempotency_key
            .as_ref()
            .map(|k| idempotency_full_key(&req.actor, k));
        let digest = idem_key.as_ref().map(|_| req.cmd.idempotency_digest());
        // Expired records are gone before the lookup, not only after the next write.
        self.expire_idempotency(now);
        if let (Some(k), Some(d)) = (&idem_key, &digest) {
            if let Some(rec) = self.idempotency.get(k) {
                if rec.digest.is_empty() || rec.digest == *d {
                    if let Some(e) = self.outdated_claim_answer(&req.cmd, &rec.response) {
                        return Response(Err(e));
                    }
                    return rec.response.clone();
                }
                return Response(Err(ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request",
                )));
            }
        }

        let resp = match self.dispatch(now, &req.actor, &req.cmd) {
            Ok(v) => Response(Ok(v)),
            Err(e) => Response(Err(e)),
        };

        if let (Some(k), Ok(_)) = (idem_key, &resp.0) {
            self.remember(now, k, resp.clone(), digest.unwrap_or_default());
        }
        self.expire_idempotency(now);
        resp
    }

    /// Store the first answer under an idempotency key, expiring by the state's rules.
    fn remember(&mut self, now: u64, key: String, response: Response, digest: String) {
        let expires = now.saturating_add(self.meta.rules.idempotency_ttl(&key));
        self.idx.idem_by_expiry.insert((expires, key.clone()), ());
        self.idempotency.insert(
            key,
            IdempotencyRecord {
                time: now,
                response,
                digest,
            },
        );
    }

    fn dispatch(&mut self, now: u64, actor: &str, cmd: &Command) -> Result<Applied, ApiError> {
        match cmd {
            Command::Bootstrap {
                cluster_id,
                admin_token_hash,
            } => self.bootstrap(now, actor, cluster_id, admin_token_hash),
            Command::CreateLocation(c) => self.create_location(now, actor, c),
            Command::UpdateLocation {
                id,
                if_match,
                patch,
            } => self.update_location(now, actor, *id, *if_match, patch),
            Command::DeleteLocation { id, if_match } => {
                self.delete_location(now, actor, *id, *if_match)
            }
            Command::CreateRack(c) => self.create_rack(now, actor, c),
            Command::UpdateRack {
                id,
                if_match,
                patch,
            } => self.update_rack(now, actor, *id, *if_match, patch),
            Command::DeleteRack { id, if_match } => self.delete_rack(now, actor, *id, *if_match),
            Command::CreateMachine(c) => self.create_machine(now, actor, c),
            Command::UpdateMachine {
                id,
                if_match,
                patch,
            } => self.update_machine(now, actor, *id, *if_match, patch),
            Command::DeleteMachine { id, if_match } => {
                self.delete_machine(now, actor, *id, *if_match)
            }
            Command::CreateSubnet(c) => self.create_subnet(now, actor, c),
            Command::UpdateSubnet {
                id,
                if_match,
                patch,
            } => self.update_subnet(now, actor, *id, *if_match, patch),
            Command::DeleteSubnet { id, if_match } => {
                self.delete_subnet(now, actor, *id, *if_match)
            }
            Command::CreateImage(c) => self.create_image(now, actor, c),
            Command::UpdateImage {
                id,
                if_match,
                patch,
            } => self.update_image(now, actor, *id, *if_match, patch),
            Command::DeleteImage { id, if_match } => self.delete_image(now, actor, *id, *if_match),
            Command::Deploy {
                id,
                if_match,
                image,
                token,
                sealed_token,
                boot_timeout_ms,
                install_timeout_ms,
            } => self.deploy(
                now,
                actor,
                *id,
                *if_match,
                (image, *boot_timeout_ms, *install_timeout_ms),
                (&token.0, sealed_token.as_ref().map(|s| s.0.as_str())),
            ),
            Command::Release { id, if_match, wipe } => {
                self.release(now, actor, *id, *if_match, wipe.as_ref())
            }
            Command::StartStep {
                id,
                generation,
                step,
                attempt,
            } => self.start_step(now, actor, (*id, *generation), *step, *attempt),
            Command::FinishStep {
                id,
                generation,
                step,
                attempt,
                outcome,
                observed_power,
                start_next,
            } => self.finish_step(
                now,
                actor,
                (*id, *generation, *step, *attempt),
                outcome,
                *observed_power,
                *start_next,
            ),
            Command::BootScriptServed { mac, node } => {
                self.boot_script_served(now, actor, mac, *node)
            }
            Command::RetryTask { id } => self.retry_task(now, actor, *id),
            Command::DeployDone { mac, token } => self.deploy_done(now, actor, mac, &token.0),
            Command::CreateTask { kind, machine_id } => {
                self.create_task(now, actor, *kind, *machine_id)
            }
            Command::CancelTask { id } => self.cancel_task(now, actor, *id),
            Command::ClaimTask {
                id,
                node,
                generation,
                lease_ms,
            } => self.claim_task(now, actor, *id, *node, *generation, *lease_ms),
            Command::RenewTaskLease {
                id,
                generation,
                lease_ms,
            } => self.renew_task_lease(now, *id, *generation, *lease_ms),
            Command::FinishTask {
                id,
                generation,
                error,
                observed_power,
            } => self.finish_task(now, actor, *id, *generation, error.clone(), *observed_power),
            Command::ObservePower { observations } => self.observe_power(now, actor, observations),
            Command::LoseTasks {
                machine_id,
                head,
                generation,
                waited_ms,
            } => self.lose_tasks(now, actor, *machine_id, *head, *generation, *waited_ms),
            Command::CreateJoinToken {
                token_hash,
                ttl_ms,
                description,
                location,
            } => self.create_join_token(
                now,
                actor,
                token_hash,
                *ttl_ms,
                description,
                location.as_deref(),
            ),
            Command::AllocateNodeId {
                token_hash,
                api,
                peer,
            } => self.allocate_node_id(now, actor, token_hash, api, peer),
            Command::CompleteJoin {
                token_hash,
                node_id,
            } => self.complete_join(now, actor, token_hash, *node_id),
            Command::MarkNodeRemoved { node_id } => self.mark_node_removed(now, actor, *node_id),
            Command::AdoptRules { rules } => self.adopt_rules(now, actor, *rules),
            Command::CreateApiToken {
                name,
                token_hash,
                role,
                ttl_ms,
            } => {
                let expires_at = ttl_ms.map(|t| now.saturating_add(t));
                self.create_api_token(now, actor, name, token_hash, *role, expires_at)
            }
            Command::RevokeApiToken { id } => self.revoke_api_token(now, actor, *id),
            Command::RevokeJoinToken { id } => self.revoke_join_token(now, actor, *id),
            Command::RenewCerts {} => self.renew_certs(now, actor),
            Command::RevokeBmcSession { machine_id, source } => {
                self.revoke_bmc_session(now, actor, *machine_id, source.as_deref())
            }
            Command::GrantBmcSession {
                machine_id,
                source,
                ttl_ms,
            } => self.grant_bmc_session(now, actor, *machine_id, source, *ttl_ms),
            Command::RecordBlob { digest, size, node } => {
                self.record_blob(now, actor, digest, *size, *node)
            }
            Command::DropBlobHolder { digest, node } => {
                self.drop_blob_holder(now, actor, digest, *node)
            }
            Command::ForgetBlob { digest } => self.forget_blob(now, actor, digest),
            Command::CreateWebhook(c) => self.create_webhook(now, actor, c),
            Command::UpdateWebhook {
                id,
                if_match,
                patch,
            } => self.update_webhook(now, actor, *id, *if_match, patch),
            Command::DeleteWebhook { id, if_match } => {
                self.delete_webhook(now, actor, *id, *if_match)
            }
            Command::RecordWebhookDelivery { id, delivery } => {
                self.record_webhook_delivery(now, actor, *id, delivery)
            }
            Command::Journal {
                kind,
                entity,
                entity_id,
                message,
            } => {
                self.journal(now, actor, kind, entity, *entity_id, message.clone());
                Ok(Applied::Done)
            }
        }
    }

    fn alloc_id(&mut self) -> u64 {
        if self.meta.next_id == 0 {
            self.meta.next_id = 1;
        }
        let id = self.meta.next_id;
        self.meta.next_id += 1;
        self.meta_dirty = true;
        id
    }

    pub(crate) fn journal(
        &mut self,
        now: u64,
        actor: &str,
        kind: &str,
        entity: &str,
        entity_id: Option<u64>,
        message: String,
    ) {
        self.meta.next_event_seq += 1;
        self.meta_dirty = true;
        let seq = self.meta.next_event_seq;
        self.events.insert(
            seq,
            Event {
                seq,
                time: now,
                actor: actor.to_string(),
                kind: kind.to_string(),
                entity: entity.to_string(),
                entity_id,
                message,
            },
        );
        while self.events.len() > MAX_EVENTS {
            let Some(first) = self.events.first_key().copied() else {
                break;
            };
            self.events.remove(&first);
        }
    }

    fn expire_idempotency(&mut self, now: u64) {
        while let Some(((t, k), _)) = self.idx.idem_by_expiry.iter().next() {
            if *t >= now && self.idempotency.len() <= MAX_IDEMPOTENCY_KEYS {
                break;
            }
            let key = (*t, k.clone());
            self.idx.idem_by_expiry.remove(&key);
            self.idempotency.remove(&key.1);
        }
    }

    /// Take every row changed since the last call (for the storage batch).
    pub fn drain_changes(&mut self) -> Vec<RowChange> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.meta_dirty) {
            out.push(self.meta_row());
        }
        for (id, _, t) in self.tables_mut() {
            t.drain_changes_dyn(id, &mut out);
        }
        out
    }

    /// Every row (after a snapshot install the storage rewrites the tables from this).
    pub fn all_rows(&mut self) -> Vec<RowChange> {
        self.meta_dirty = false;
        let mut out = vec![self.meta_row()];
        for (id, _, t) in self.tables_mut() {
            t.all_rows_dyn(id, &mut out);
        }
        out
    }

    fn meta_row(&self) -> RowChange {
        RowChange {
            table: tables::META,
            key: b"meta".to_vec(),
            value: Some(serde_json::to_vec(&self.meta).expect("meta serializes")),
        }
    }

    /// Load one persisted row at startup. Call [`State::rebuild_indexes`] after the last row.
    pub fn load_row(&mut self, table: u8, key: &[u8], value: &[u8]) -> Result<(), String> {
        if table == tables::META {
            self.meta = serde_json::from_slice(value).map_err(|e| e.to_string())?;
            return Ok(());
        }
        match self
            .tables_mut()
            .into_iter()
            .find(|(id, _, _)| *id == table)
        {
            Some((_, _, t)) => t.load_dyn(key, value),
            None => Err(format!("unknown state table id {table}")),
        }
    }

    /// Row counts per registered table, by name (diagnostics and tests).
    pub fn table_sizes(&mut self) -> Vec<(&'static str, usize)> {
        self.tables_mut()
            .into_iter()
            .map(|(_, name, t)| (name, t.len_dyn()))
            .collect()
    }

    // ---- read helpers used by the API layer -------------------------------------------------

    pub fn cluster_id(&self) -> &str {
        &self.meta.cluster_id
    }

    pub fn location_by_name(&self, name: &str) -> Option<&Location> {
        self.idx
            .location_by_name
            .get(name)
            .and_then(|id| self.locations.get(id))
    }

    pub fn machine_by_mac(&self, mac: &str) -> Option<&Machine> {
        self.idx
            .mac
            .get(mac)
            .and_then(|id| self.machines.get(id))
            .map(|m| &m.machine)
    }

    /// The subnet of `location` whose CIDR contains `ip`.
    pub fn subnet_containing(&self, location: &str, ip: std::net::Ipv4Addr) -> Option<&Subnet> {
        self.subnets
            .values()
            .filter(|s| s.location == location)
            .find(|s| rackd_types::net::Cidr4::parse(&s.cidr).is_ok_and(|c| c.contains(ip)))
    }

    pub fn image_by_name(&self, name: &str) -> Option<&Image> {
        self.images.values().find(|i| i.name == name)
    }

    /// The stored record (with secrets) of the machine owning `mac`.
    /// Whether an answer is remembered under `actor`'s idempotency key `key` (a retried
    /// request would get it back).
    pub fn remembers(&self, actor: &str, key: &str) -> bool {
        self.idempotency
            .get(&idempotency_full_key(actor, key))
            .is_some()
    }

    pub fn stored_machine_by_mac(&self, mac: &str) -> Option<&StoredMachine> {
        self.idx.mac.get(mac).and_then(|id| self.machines.get(id))
    }

    pub fn machine_by_ip(&self, ip: &str) -> Option<&Machine> {
        self.idx
            .ip
            .get(ip)
            .and_then(|id| self.machines.get(id))
            .map(|m| &m.machine)
    }

    pub fn api_token_by_hash(&self, hash: &str) -> Option<&StoredApiToken> {
        self.idx
            .api_token_by_hash
            .get(hash)
            .and_then(|id| self.api_tokens.get(id))
    }

    /// Whether node `id` was removed from the cluster (it is never admitted again).
    pub fn is_removed_node(&self, id: u64) -> bool {
        self.meta.removed_nodes.contains(&id)
    }

    pub fn join_token_by_hash(&self, hash: &str) -> Option<&StoredJoinToken> {
        self.idx
            .join_token_by_hash
            .get(hash)
            .and_then(|id| self.join_tokens.get(id))
    }
}

/// Apply `cmd` stamped at `t` by actor `test` (the unit tests' one way to write).
#[cfg(test)]
pub(crate) fn test_apply(s: &mut State, t: u64, cmd: Command) -> Result<Applied, ApiError> {
    s.apply(&Request {
        time_ms: t,
        actor: "test".into(),
        idempotency_key: None,
        cmd,
    })
    .0
}

pub(crate) fn precondition(current: u64, if_match: Option<u64>) -> Result<(), ApiError> {
    match if_match {
        Some(v) if v != current => Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            format!("version mismatch: If-Match {v}, current version {current}"),
        )),
        _ => Ok(()),
    }
}
