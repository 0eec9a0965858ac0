//! Versions of the apply rules: which rules [`State::apply`] decides an entry by.
//!
//! A change to apply that can decide an old entry differently (another entity id, Ok where it
//! was Err) must not re-decide history: the replicated state records the rules it applies
//! under ([`super::SmMeta::rules`]), a log written under older rules is replayed under those
//! rules, and every node moves to newer rules at the same log index, when the leader commits
//! [`crate::cmd::Command::AdoptRules`]. The rules of an older version kept here are frozen:
//! they exist to replay history exactly as it was decided, and must never change.
//!
//! What differs between versions:
//! - [`ApplyRules::Format1`] (the rules of on-disk format 1, up to 2026-11-29): an
//!   idempotency record answers any request under its key (no request digest, no check that a
//!   claim is still current); every record lives 24 h; records expire only after an entry was
//!   decided afresh, never before the lookup. A retry 1–24 h later was answered from the record
//!   and created nothing, so replaying it under today's rules would allocate an id and shift
//!   every later id (review integrity-2, R2).
//! - [`ApplyRules::Format2`]: the rules of on-disk format 2 up to 2026-12-06 (digest, claim
//!   check, 1 h for internal keys, expiry before the lookup). An `UpdateMachine` that moved the
//!   BMC (another address, port or driver) without a password kept the stored password.
//! - [`ApplyRules::Rules3`]: today's rules (same disk format). Moving the BMC without a new
//!   password clears the stored one (it was the old BMC's secret, and would otherwise be sent
//!   to whatever now answers at the new address). Since these rules, the leader also proposes
//!   the commands of [`crate::cmd::Command::needs_rules`] (token revocation, BMC session grants).
//! - [`ApplyRules::Rules4`]: rules 3 plus the blob records (content-addressed artifacts); no
//!   older entry is decided differently, the version exists so that blob commands are
//!   proposed only once every member decodes them.
//! - [`ApplyRules::Rules5`]: rules 4 plus workflows: a `Deploy` also creates the deploy
//!   workflow task, and the install callback ends the workflow's wait (the machine becomes
//!   `deployed` after the last step, no longer at the callback).
//! - [`ApplyRules::Rules6`]: rules 5 plus webhooks (`CreateWebhook`, `UpdateWebhook`,
//!   `DeleteWebhook`, `RecordWebhookDelivery`), and input older rules accepted is refused: a
//!   machine hostname another machine of its location has (letter case aside), a BMC address
//!   that is neither an IP address nor a host name, empty or blank tags, an API token name
//!   another token has or with characters other than `[A-Za-z0-9-._@]`.
//!
//! A cluster moves to newer rules only when every member reports that its build knows them
//! ([`crate::NodeInfo::known_rules`]): a member of an older build could not decode the
//! `AdoptRules` entry, nor commands introduced with the new rules.
//!
//! Other changes to apply since format 1 (the gateway check, cancel-on-delete, the power
//! observation filters, join-token pruning) are not forked: the format-1 migration compares
//! the replayed tables with the ones format 1 stored and refuses the directory if a change
//! made any difference.
//!
//! This module must not depend on storage or the node.

use serde::{Deserialize, Serialize};

use super::{State, IDEMPOTENCY_TTL_MS};
use crate::cmd::{Request, Response};

/// A version of the apply rules (stored as its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub enum ApplyRules {
    /// The rules of on-disk format 1 (frozen).
    Format1,
    /// The rules of on-disk format 2 before rules 3 (frozen).
    Format2,
    /// Moving a BMC clears its password (frozen since rules 4).
    Rules3,
    /// Rules 3, and the blob records (`RecordBlob`, `DropBlobHolder`, `ForgetBlob`) older
    /// builds cannot decode (frozen since rules 5).
    Rules4,
    /// Rules 4, and workflows. A `Deploy` also creates the machine's deploy workflow task,
    /// and its install callback completes the workflow's wait instead of making the machine
    /// `deployed` at once (the workflow does, after its last step); `Release`, `StartStep`,
    /// `FinishStep`, `BootScriptServed`, `RetryTask` (frozen since rules 6).
    Rules5,
    /// Today's rules: rules 5, the webhook records older builds cannot decode, and the input
    /// checks of [`ApplyRules::validates_input`].
    Rules6,
}

impl ApplyRules {
    /// The newest rules this build knows; a cluster moves to them by `AdoptRules`.
    pub const CURRENT: ApplyRules = ApplyRules::Rules6;

    pub const fn number(self) -> u32 {
        match self {
            ApplyRules::Format1 => 1,
            ApplyRules::Format2 => 2,
            ApplyRules::Rules3 => 3,
            ApplyRules::Rules4 => 4,
            ApplyRules::Rules5 => 5,
            ApplyRules::Rules6 => 6,
        }
    }

    /// Whether an `UpdateMachine` that moves the BMC without a new password clears the
    /// stored one.
    pub fn bmc_move_clears_password(self) -> bool {
        self >= ApplyRules::Rules3
    }

    /// Whether apply refuses duplicate hostnames per location, malformed BMC addresses and
    /// tags, and duplicate or malformed API token names.
    pub fn validates_input(self) -> bool {
        self >= ApplyRules::Rules6
    }

    /// What a state written before the rules were recorded applied under: rows of format 2
    /// (format-1 directories are labelled by their migration).
    pub fn unrecorded() -> ApplyRules {
        ApplyRules::Format2
    }

    /// How long the idempotency record under `full_key` lives.
    pub fn idempotency_ttl(self, full_key: &str) -> u64 {
        match self {
            ApplyRules::Format1 => IDEMPOTENCY_TTL_MS,
            ApplyRules::Format2
            | ApplyRules::Rules3
            | ApplyRules::Rules4
            | ApplyRules::Rules5
            | ApplyRules::Rules6 => super::idempotency_ttl(full_key),
        }
    }
}

impl Default for ApplyRules {
    fn default() -> Self {
        ApplyRules::CURRENT
    }
}

impl From<ApplyRules> for u32 {
    fn from(r: ApplyRules) -> u32 {
        r.number()
    }
}

impl TryFrom<u32> for ApplyRules {
    type Error = String;

    fn try_from(n: u32) -> Result<Self, String> {
        match n {
            1 => Ok(ApplyRules::Format1),
            2 => Ok(ApplyRules::Format2),
            3 => Ok(ApplyRules::Rules3),
            4 => Ok(ApplyRules::Rules4),
            5 => Ok(ApplyRules::Rules5),
            6 => Ok(ApplyRules::Rules6),
            n => Err(format!(
                "the replicated state applies under rules version {n}, and this rackd knows \
                 versions 1 to {}: upgrade this node to the cluster's release",
                ApplyRules::CURRENT.number()
            )),
        }
    }
}

impl std::fmt::Display for ApplyRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

impl State {
    /// Whether `cmd` may be proposed now: the cluster has adopted the rules it needs
    /// ([`crate::cmd::Command::needs_rules`]). Read on the leader before a proposal; a
    /// replica behind the leader only refuses longer.
    pub fn admits_proposal(&self, cmd: &crate::cmd::Command) -> Result<(), rackd_types::ApiError> {
        let needs = cmd.needs_rules();
        if self.meta.rules >= needs {
            return Ok(());
        }
        Err(rackd_types::ApiError::conflict(format!(
            "{} needs apply rules {needs}, and the cluster still decides entries by rules {}: \
             it moves to them once every member runs a build that knows them (GET /v1/cluster \
             shows each member's apply_rules); upgrade the members that lag",
            cmd.name(),
            self.meta.rules
        )))
    }

    /// [`State::apply`] under [`ApplyRules::Format1`], after `now` was taken.
    pub(super) fn apply_format1(&mut self, now: u64, req: &Request) -> Response {
        let idem_key = req
            .idempotency_key
            .as_ref()
            .map(|k| super::idempotency_full_key(&req.actor, k));
        if let Some(rec) = idem_key.as_ref().and_then(|k| self.idempotency.get(k)) {
            return rec.response.clone();
        }
        let resp = match self.dispatch(now, &req.actor, &req.cmd) {
            Ok(v) => Response(Ok(v)),
            Err(e) => Response(Err(e)),
        };
        if let (Some(k), Ok(_)) = (idem_key, &resp.0) {
            self.remember(now, k, resp.clone(), String::new());
        }
        self.expire_idempotency(now);
        resp
    }

    /// `AdoptRules`: move to newer rules (never back). The idempotency records' expiry is
    /// recomputed under the new rules here, at this index on every node, as a restart would.
    pub(super) fn adopt_rules(
        &mut self,
        now: u64,
        actor: &str,
        rules: ApplyRules,
    ) -> Result<crate::cmd::Applied, rackd_types::ApiError> {
        if rules > self.meta.rules {
            let before = self.meta.rules;
            self.meta.rules = rules;
            self.meta_dirty = true;
            self.rebuild_indexes();
            self.journal(
                now,
                actor,
                "cluster.rules_adopted",
                "cluster",
                None,
                format!("entries are now decided by apply rules {rules} (were {before})"),
            );
        }
        Ok(crate::cmd::Applied::Done)
    }
}

/// Test support: the review's discovery-then-delete history (integrity-2, R2), with the ids
/// format 1 answered. Format 1 ends with machine `db1` (id 4) alone, a power task on it and an
/// image (which format 1 never persisted). Replayed under today's rules, the discovery retried
/// 2 h later creates a machine, every later id moves up by one, and the last delete (of id 5,
/// `web1` to format 1) removes `db1` instead.
#[doc(hidden)]
pub fn format1_discovery_history() -> Vec<Request> {
    use crate::cmd::Command;
    use rackd_types::payload::{CreateImage, CreateLocation, CreateMachine};
    use rackd_types::{BmcSpec, TaskKind};

    const MIN: u64 = 60 * 1000;
    const T0: u64 = 1_000 * MIN;
    let req = |time_ms: u64, actor: &str, key: Option<&str>, cmd: Command| Request {
        time_ms,
        actor: actor.into(),
        idempotency_key: key.map(str::to_string),
        cmd,
    };
    let machine = |host: &str, mac: &str| {
        Command::CreateMachine(CreateMachine {
            hostname: host.into(),
            location: "dc1".into(),
            rack_id: None,
            rack_unit: None,
            macs: vec![mac.into()],
            ips: vec![],
            bmc: Some(BmcSpec {
                driver: Default::default(),
                address: "192.0.2.10".into(),
                port: 623,
                username: "admin".into(),
                password: None,
                cipher_suite: None,
            }),
            state: None,
            description: String::new(),
            tags: vec![],
        })
    };
    let discovery = || machine("discovered-52540000000a", "52:54:00:00:00:0a");
    vec![
        req(
            T0 - 2 * MIN,
            "bootstrap",
            None,
            Command::Bootstrap {
                cluster_id: "c-format1".into(),
                admin_token_hash: "a".repeat(64),
            },
        ),
        req(
            T0 - MIN,
            "admin",
            Some("loc-1"),
            Command::CreateLocation(CreateLocation {
                name: "dc1".into(),
                description: String::new(),
                discovery: true,
            }),
        ),
        // Format 1 keyed a discovery by the bare MAC.
        req(
            T0,
            "node:2",
            Some("discover:52:54:00:00:00:0a"),
            discovery(),
        ),
        req(
            T0 + 10 * MIN,
            "admin",
            None,
            Command::DeleteMachine {
                id: 3,
                if_match: None,
            },
        ),
        // The machine PXE-boots again: format 1 answers from the record and creates nothing.
        req(
            T0 + 120 * MIN,
            "node:2",
            Some("discover:52:54:00:00:00:0a"),
            discovery(),
        ),
        req(
            T0 + 180 * MIN,
            "admin",
            None,
            machine("db1", "52:54:00:00:00:db"),
        ),
        req(
            T0 + 240 * MIN,
            "admin",
            None,
            machine("web1", "52:54:00:00:00:eb"),
        ),
        req(
            T0 + 250 * MIN,
            "admin",
            None,
            Command::CreateImage(CreateImage {
                name: "debian-13".into(),
                kernel: "vmlinuz".into(),
                initrd: "initrd.img".into(),
                cmdline: String::new(),
                rootfs: None,
            }),
        ),
        req(
            T0 + 260 * MIN,
            "admin",
            None,
            Command::CreateTask {
                kind: TaskKind::PowerOn,
                machine_id: 4,
            },
        ),
        req(
            T0 + 300 * MIN,
            "admin",
            None,
            Command::DeleteMachine {
                id: 5,
                if_match: None,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Command;

    fn replay(rules: ApplyRules) -> (State, Vec<Response>) {
        let mut s = State::default();
        s.meta.rules = rules;
        let answers = format1_discovery_history()
            .iter()
            .map(|r| s.apply(r))
            .collect();
        (s, answers)
    }

    fn hosts(s: &State) -> Vec<(u64, String)> {
        s.machines
            .iter()
            .map(|(id, m)| (*id, m.machine.hostname.clone()))
            .collect()
    }

    /// The history decided by format-1 rules gives the answers format 1 gave (the ids the
    /// history's later entries use); under today's rules the same log ends elsewhere. That
    /// difference is why the rules are versioned.
    #[test]
    fn format_1_history_replays_to_what_format_1_acknowledged_and_only_under_its_rules() {
        let (s, answers) = replay(ApplyRules::Format1);
        let ids: Vec<Option<u64>> = answers
            .iter()
            .map(|r| r.0.as_ref().ok().and_then(|a| a.body()["id"].as_u64()))
            .collect();
        assert_eq!(
            ids,
            [
                None,
                Some(2),
                Some(3),
                None,
                Some(3),
                Some(4),
                Some(5),
                Some(6),
                Some(7),
                None
            ],
            "{answers:?}"
        );
        assert!(answers.iter().all(|r| r.0.is_ok()), "{answers:?}");
        assert_eq!(hosts(&s), [(4, "db1".to_string())]);
        assert_eq!(s.tasks.get(&7).map(|t| t.machine_id), Some(4));
        assert_eq!(s.images.len(), 1);

        let (s, _) = replay(ApplyRules::Format2);
        assert_eq!(
            hosts(&s),
            [
                (4, "discovered-52540000000a".to_string()),
                (6, "web1".to_string())
            ],
            "today's rules re-decide the retry (if this changes, the sample no longer shows R2)"
        );
    }

    /// `AdoptRules` moves forward only, and from that index on entries are decided by the new
    /// rules: the same retry is answered from the record before and re-decided after.
    #[test]
    fn adopt_rules_moves_forward_only_and_takes_effect_at_its_index() {
        let history = format1_discovery_history();
        let mut s = State::default();
        s.meta.rules = ApplyRules::Format1;
        for r in &history[..4] {
            assert!(s.apply(r).0.is_ok());
        }
        let adopt = |s: &mut State, t: u64, rules: ApplyRules| {
            s.apply(&Request {
                time_ms: t,
                actor: "node:1".into(),
                idempotency_key: None,
                cmd: Command::AdoptRules { rules },
            })
        };
        let t = history[3].time_ms;
        assert!(adopt(&mut s, t + 1, ApplyRules::Format2).0.is_ok());
        assert_eq!(s.meta.rules, ApplyRules::Format2);
        assert!(adopt(&mut s, t + 2, ApplyRules::Format1).0.is_ok());
        assert_eq!(s.meta.rules, ApplyRules::Format2, "never back");
        assert!(s.events.values().any(|e| e.kind == "cluster.rules_adopted"));
        // The discovery record (a format-1 record of a bare-MAC key) now lives 1 h: the
        // retry 2 h after it is decided afresh.
        let mut retry = history[4].clone();
        retry.time_ms = history[2].time_ms + 2 * 3600 * 1000;
        let a = s.apply(&retry);
        assert_eq!(a.0.unwrap().body()["id"].as_u64(), Some(4));
    }

    #[test]
    fn unknown_rules_are_refused_when_decoded() {
        let next = (ApplyRules::CURRENT.number() + 1).to_string();
        let e = serde_json::from_str::<ApplyRules>(&next).unwrap_err();
        assert!(e.to_string().contains("upgrade this node"), "{e}");
        assert_eq!(serde_json::to_string(&ApplyRules::Format1).unwrap(), "1");
        let meta: super::super::SmMeta = serde_json::from_str(
            r#"{"cluster_id":"c","next_id":1,"next_node_id":2,"next_event_seq":0,"last_time":0}"#,
        )
        .unwrap();
        assert_eq!(
            meta.rules,
            ApplyRules::Format2,
            "rows before the field: format 2"
        );
    }
}
