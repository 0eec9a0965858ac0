//! State machine unit tests: uniqueness, If-Match, idempotency, determinism, persistence.

use rackd_types::payload::{CreateLocation, CreateMachine, CreateSubnet, UpdateMachine};
use rackd_types::{ApiError, BmcSpec, ErrorCode, IpRange};
use serde_json::Value;

use super::*;
use crate::cmd::{Command, Request};

fn req(t: u64, cmd: Command) -> Request {
    Request {
        time_ms: t,
        actor: "test".into(),
        idempotency_key: None,
        cmd,
    }
}

fn ok(s: &mut State, t: u64, cmd: Command) -> Value {
    match s.apply(&req(t, cmd)).0 {
        Ok(v) => v.body(),
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn err(s: &mut State, t: u64, cmd: Command) -> ApiError {
    match s.apply(&req(t, cmd)).0 {
        Ok(v) => panic!("unexpected success {v:?}"),
        Err(e) => e,
    }
}

fn machine(host: &str, macs: &[&str], ips: &[&str]) -> Command {
    Command::CreateMachine(CreateMachine {
        hostname: host.into(),
        location: "dc1".into(),
        rack_id: None,
        rack_unit: None,
        macs: macs.iter().map(|s| s.to_string()).collect(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        bmc: None,
        state: None,
        description: String::new(),
        tags: vec![],
    })
}

fn base() -> State {
    let mut s = State::default();
    ok(
        &mut s,
        1,
        Command::Bootstrap {
            cluster_id: "c1".into(),
            admin_token_hash: "a".repeat(64),
        },
    );
    ok(
        &mut s,
        2,
        Command::CreateLocation(CreateLocation {
            name: "dc1".into(),
            description: String::new(),
            discovery: false,
        }),
    );
    ok(
        &mut s,
        3,
        Command::CreateSubnet(CreateSubnet {
            location: "dc1".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec!["10.0.0.2".into()],
            dynamic_ranges: vec![IpRange {
                start: "10.0.0.200".into(),
                end: "10.0.0.250".into(),
            }],
            reserved_ranges: vec![],
        }),
    );
    s
}

#[test]
fn mac_is_unique_after_normalization() {
    let mut s = base();
    ok(&mut s, 10, machine("a", &["AA:BB:CC:00:00:01"], &[]));
    let e = err(&mut s, 11, machine("b", &["aa-bb-cc-00-00-01"], &[]));
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(s.machines.len(), 1);
    assert!(s.machine_by_mac("aa:bb:cc:00:00:01").is_some());
}

#[test]
fn ip_is_unique_and_must_be_in_a_location_subnet() {
    let mut s = base();
    ok(&mut s, 10, machine("a", &[], &["10.0.0.10"]));
    assert_eq!(
        err(&mut s, 11, machine("b", &[], &["10.0.0.10"])).code,
        ErrorCode::Conflict
    );
    assert_eq!(
        err(&mut s, 12, machine("c", &[], &["10.9.0.10"])).code,
        ErrorCode::InvalidRequest
    );
    // dynamic range, gateway, network and broadcast are refused
    assert_eq!(
        err(&mut s, 13, machine("d", &[], &["10.0.0.210"])).code,
        ErrorCode::Conflict
    );
    assert_eq!(
        err(&mut s, 14, machine("e", &[], &["10.0.0.1"])).code,
        ErrorCode::Conflict
    );
    assert_eq!(
        err(&mut s, 15, machine("f", &[], &["10.0.0.0"])).code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        err(&mut s, 16, machine("g", &[], &["10.0.0.255"])).code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(s.machines.len(), 1);
}

#[test]
fn releasing_an_ip_makes_it_assignable_again() {
    let mut s = base();
    let a = ok(&mut s, 10, machine("a", &[], &["10.0.0.10"]));
    let id = a["id"].as_u64().unwrap();
    ok(
        &mut s,
        11,
        Command::UpdateMachine {
            id,
            if_match: None,
            patch: UpdateMachine {
                ips: Some(vec![]),
                ..Default::default()
            },
        },
    );
    ok(&mut s, 12, machine("b", &[], &["10.0.0.10"]));
}

#[test]
fn if_match_is_compare_and_set() {
    let mut s = base();
    let m = ok(&mut s, 10, machine("a", &[], &[]));
    let id = m["id"].as_u64().unwrap();
    assert_eq!(m["version"], 1);
    let patch = UpdateMachine {
        description: Some("x".into()),
        ..Default::default()
    };
    let up = ok(
        &mut s,
        11,
        Command::UpdateMachine {
            id,
            if_match: Some(1),
            patch: patch.clone(),
        },
    );
    assert_eq!(up["version"], 2);
    let e = err(
        &mut s,
        12,
        Command::UpdateMachine {
            id,
            if_match: Some(1),
            patch,
        },
    );
    assert_eq!(e.code, ErrorCode::PreconditionFailed);
    assert_eq!(s.machines.get(&id).unwrap().machine.meta.version, 2);
}

#[test]
fn idempotency_key_does_not_create_twice() {
    let mut s = base();
    let mut r = req(10, machine("a", &["00:00:00:00:00:01"], &[]));
    r.idempotency_key = Some("k1".into());
    let first = s.apply(&r);
    let second = s.apply(&r);
    assert_eq!(first, second);
    assert_eq!(s.machines.len(), 1);
    // A different actor with the same key is a different request.
    r.actor = "other".into();
    let third = s.apply(&r);
    assert_eq!(third.0.unwrap_err().code, ErrorCode::Conflict);
    // Keys expire after the TTL (by leader-stamped time).
    let later = req(
        10 + IDEMPOTENCY_TTL_MS + 1,
        Command::Journal {
            kind: "x".into(),
            entity: "x".into(),
            entity_id: None,
            message: String::new(),
        },
    );
    s.apply(&later);
    assert!(s.idempotency.is_empty());
}

#[test]
fn state_transitions_are_checked_and_journaled() {
    let mut s = base();
    let id = ok(&mut s, 10, machine("a", &[], &[]))["id"]
        .as_u64()
        .unwrap();
    let to = |st| Command::UpdateMachine {
        id,
        if_match: None,
        patch: UpdateMachine {
            state: Some(st),
            ..Default::default()
        },
    };
    assert_eq!(
        err(&mut s, 11, to(MachineStateAlias::Deployed)).code,
        ErrorCode::Conflict
    );
    ok(&mut s, 12, to(MachineStateAlias::Ready));
    assert!(s.events.values().any(|e| e.kind == "machine.state_changed"));
}

use rackd_types::MachineState as MachineStateAlias;

#[test]
fn bmc_password_is_write_only() {
    let mut s = base();
    let mut c = machine("a", &[], &[]);
    if let Command::CreateMachine(cm) = &mut c {
        cm.bmc = Some(BmcSpec {
            driver: "ipmi".parse().unwrap(),
            address: "10.1.0.5".into(),
            port: 623,
            username: "admin".into(),
            password: Some("hunter2".into()),
            cipher_suite: None,
        });
    }
    let v = ok(&mut s, 10, c);
    let text = v.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(v["bmc"]["password_set"], true);
    let stored = s.machines.get(&v["id"].as_u64().unwrap()).unwrap();
    assert!(!format!("{stored:?}").contains("hunter2"));
    assert_eq!(stored.bmc_password.as_deref(), Some("hunter2"));
}

/// Moving the BMC (address, port or driver) without a new password clears the stored one
/// under rules 3, for every way of moving it; keeping the endpoint (a new username) or giving
/// a password in the same request keeps or replaces it. Under the frozen format-2 rules the
/// password stayed, as history was decided.
#[test]
fn moving_the_bmc_clears_its_password_unless_a_new_one_is_given() {
    let spec = |address: &str, port: u16, driver: &str, password: Option<&str>| BmcSpec {
        driver: driver.parse().unwrap(),
        address: address.into(),
        port,
        username: "admin".into(),
        password: password.map(str::to_string),
        cipher_suite: None,
    };
    let patch = |id: u64, b: BmcSpec| Command::UpdateMachine {
        id,
        if_match: None,
        patch: UpdateMachine {
            bmc: Some(Some(b)),
            ..Default::default()
        },
    };
    let cases: [(&str, BmcSpec, Option<&str>); 6] = [
        ("address", spec("10.1.0.6", 623, "ipmi", None), None),
        ("port", spec("10.1.0.5", 624, "ipmi", None), None),
        ("driver", spec("10.1.0.5", 623, "ipmi15", None), None),
        (
            "new password",
            spec("10.1.0.6", 623, "ipmi", Some("s3")),
            Some("s3"),
        ),
        (
            "same endpoint",
            BmcSpec {
                username: "root".into(),
                ..spec(" 10.1.0.5 ", 623, "ipmi", None)
            },
            Some("hunter2"),
        ),
        (
            "same endpoint, new password",
            spec("10.1.0.5", 623, "ipmi", Some("s4")),
            Some("s4"),
        ),
    ];
    for rules in [ApplyRules::Rules3, ApplyRules::Format2] {
        for (what, b, want) in &cases {
            let mut s = base();
            s.meta.rules = rules;
            let mut c = machine("a", &[], &[]);
            if let Command::CreateMachine(cm) = &mut c {
                cm.bmc = Some(spec("10.1.0.5", 623, "ipmi", Some("hunter2")));
            }
            let id = ok(&mut s, 10, c)["id"].as_u64().unwrap();
            let v = ok(&mut s, 11, patch(id, b.clone()));
            let stored = s.machines.get(&id).unwrap().bmc_password.clone();
            let want = match (rules, *want) {
                (ApplyRules::Format2, None) => Some("hunter2"),
                (_, w) => w,
            };
            assert_eq!(stored.as_deref(), want, "{what} under rules {rules}");
            assert_eq!(v["bmc"]["password_set"], want.is_some(), "{what}");
        }
    }
}

/// A revoked join token is admitted by neither phase, whether it was unused or already
/// allocated a node id; revoking it again is 404.
#[test]
fn revoked_join_tokens_admit_nobody() {
    let mut s = base();
    for (i, used) in [(0u64, false), (1, true)] {
        let h = format!("{:064}", i + 7);
        let id = ok(
            &mut s,
            10,
            Command::CreateJoinToken {
                token_hash: h.clone(),
                ttl_ms: 1000,
                description: String::new(),
                location: None,
            },
        )["id"]
            .as_u64()
            .unwrap();
        let alloc = Command::AllocateNodeId {
            token_hash: h.clone(),
            api: "a".into(),
            peer: "p".into(),
        };
        if used {
            ok(&mut s, 11, alloc.clone());
        }
        ok(&mut s, 12, Command::RevokeJoinToken { id });
        assert_eq!(err(&mut s, 13, alloc).code, ErrorCode::JoinRejected);
        assert!(s.join_token_admits(&h, "a", "p", 13).is_err());
        assert!(s.join_tokens.get(&id).is_none());
        assert_eq!(
            err(&mut s, 14, Command::RevokeJoinToken { id }).code,
            ErrorCode::NotFound
        );
    }
}

/// A join token naming a location binds the node it admits to that location (by name: the
/// location may be created later); only that location's key may go to it, and a node whose
/// token named none is bound to nothing. A location name must be a valid name.
#[test]
fn a_join_token_binds_its_node_to_its_location() {
    let mut s = base();
    let token = |i: u64, location: Option<&str>| Command::CreateJoinToken {
        token_hash: format!("{:064}", i),
        ttl_ms: 1000,
        description: String::new(),
        location: location.map(str::to_string),
    };
    let alloc = |i: u64| Command::AllocateNodeId {
        token_hash: format!("{:064}", i),
        api: format!("a{i}"),
        peer: format!("p{i}"),
    };
    assert_eq!(
        err(&mut s, 10, token(9, Some("no spaces"))).code,
        ErrorCode::InvalidRequest
    );
    ok(&mut s, 10, token(1, Some("east")));
    ok(&mut s, 10, token(2, None));
    let bound = ok(&mut s, 11, alloc(1))["node_id"].as_u64().unwrap();
    let unbound = ok(&mut s, 11, alloc(2))["node_id"].as_u64().unwrap();
    assert_eq!(
        s.meta.node_sites.get(&bound).map(String::as_str),
        Some("east")
    );
    let east = ok(
        &mut s,
        12,
        Command::CreateLocation(CreateLocation {
            name: "east".into(),
            description: String::new(),
            discovery: false,
        }),
    )["id"]
        .as_u64()
        .unwrap();
    assert_eq!(s.node_may_hold_location_key(bound, east), Ok(()));
    let dc1 = s.location_by_name("dc1").unwrap().meta.id;
    assert!(s.node_may_hold_location_key(bound, dc1).is_err());
    assert!(s.node_may_hold_location_key(unbound, east).is_err());
    assert!(s.node_may_hold_location_key(99, east).is_err());
}

#[test]
fn join_token_allocates_fresh_ids_once() {
    let mut s = base();
    let h = "b".repeat(64);
    ok(
        &mut s,
        10,
        Command::CreateJoinToken {
            token_hash: h.clone(),
            ttl_ms: 1000,
            description: String::new(),
            location: None,
        },
    );
    let alloc = |api: &str| Command::AllocateNodeId {
        token_hash: h.clone(),
        api: api.into(),
        peer: "p".into(),
    };
    let a = ok(&mut s, 11, alloc("a"));
    assert_eq!(a["node_id"], 2);
    // retry from the same node: same id
    assert_eq!(ok(&mut s, 12, alloc("a"))["node_id"], 2);
    // another node: rejected
    assert_eq!(err(&mut s, 13, alloc("b")).code, ErrorCode::JoinRejected);
    // expired token
    let h2 = "c".repeat(64);
    ok(
        &mut s,
        14,
        Command::CreateJoinToken {
            token_hash: h2.clone(),
            ttl_ms: 5,
            description: String::new(),
            location: None,
        },
    );
    let e = err(
        &mut s,
        100,
        Command::AllocateNodeId {
            token_hash: h2,
            api: "c".into(),
            peer: "p".into(),
        },
    );
    assert_eq!(e.code, ErrorCode::JoinRejected);
    assert_eq!(s.meta.next_node_id, 3);
}

#[test]
fn a_completed_join_burns_its_token_and_a_removed_id_is_never_admitted_again() {
    let mut s = base();
    let h = "d".repeat(64);
    ok(
        &mut s,
        10,
        Command::CreateJoinToken {
            token_hash: h.clone(),
            ttl_ms: 60_000,
            description: String::new(),
            location: None,
        },
    );
    let alloc = |api: &str| Command::AllocateNodeId {
        token_hash: h.clone(),
        api: api.into(),
        peer: "p".into(),
    };
    let complete = |node_id| Command::CompleteJoin {
        token_hash: h.clone(),
        node_id,
    };
    let id = ok(&mut s, 11, alloc("a"))["node_id"].as_u64().unwrap();
    // Only the node the token admitted completes with it.
    assert_eq!(
        err(&mut s, 12, complete(id + 1)).code,
        ErrorCode::JoinRejected
    );
    assert!(!s.join_token_by_hash(&h).unwrap().joined);
    ok(&mut s, 13, complete(id));
    assert!(s.join_token_by_hash(&h).unwrap().joined);
    ok(&mut s, 14, complete(id)); // a retry changes nothing
    assert!(!s.is_removed_node(id));

    // Removed: neither phase admits the id again, from the old addresses or new ones.
    ok(&mut s, 20, Command::MarkNodeRemoved { node_id: id });
    ok(&mut s, 21, Command::MarkNodeRemoved { node_id: id }); // idempotent
    assert!(s.is_removed_node(id));
    for api in ["a", "b"] {
        let e = err(&mut s, 22, alloc(api));
        assert_eq!(e.code, ErrorCode::JoinRejected);
        if api == "a" {
            assert!(e.message.contains("was removed"), "{}", e.message);
        }
    }
    assert_eq!(err(&mut s, 23, complete(id)).code, ErrorCode::JoinRejected);
    let journaled = s
        .events
        .values()
        .filter(|e| e.kind == "cluster.member_removed")
        .count();
    assert_eq!(journaled, 1);
}

#[test]
fn apply_uses_leader_time_monotonically() {
    let mut s = base();
    let a = ok(&mut s, 1000, machine("a", &[], &[]));
    // A stale (earlier) stamp from a new leader never moves time backwards.
    let b = ok(&mut s, 500, machine("b", &[], &[]));
    assert_eq!(a["created_at"], 1000);
    assert_eq!(b["created_at"], 1000);
}

#[test]
fn same_log_gives_same_state_and_rows_round_trip() {
    let cmds: Vec<Request> = (0..50)
        .map(|i| {
            req(
                10 + i,
                machine(
                    &format!("h{i}"),
                    &[&format!("00:00:00:00:01:{:02x}", i % 40)],
                    &[],
                ),
            )
        })
        .collect();
    let mut a = base();
    let mut b = base();
    for r in &cmds {
        assert_eq!(a.apply(r), b.apply(r));
    }
    let sa = serde_json::to_string(&a).unwrap();
    assert_eq!(sa, serde_json::to_string(&b).unwrap());

    // Persisted rows reload into the same state.
    let mut rows = base_rows();
    rows.extend(a.drain_changes());
    let mut loaded = State::default();
    for r in rows.iter().filter(|r| r.value.is_some()) {
        loaded
            .load_row(r.table, &r.key, r.value.as_ref().unwrap())
            .unwrap();
    }
    loaded.rebuild_indexes();
    assert_eq!(serde_json::to_string(&loaded).unwrap(), sa);
    let mut a2 = a.clone();
    let mut full = State::default();
    for r in a2.all_rows() {
        full.load_row(r.table, &r.key, r.value.as_ref().unwrap())
            .unwrap();
    }
    full.rebuild_indexes();
    assert_eq!(serde_json::to_string(&full).unwrap(), sa);
    assert!(full.machine_by_mac("00:00:00:00:01:01").is_some());
}

fn base_rows() -> Vec<RowChange> {
    Vec::new()
}

#[test]
fn delete_refuses_referenced_entities() {
    let mut s = base();
    ok(&mut s, 10, machine("a", &[], &["10.0.0.5"]));
    let loc_id = s.location_by_name("dc1").unwrap().meta.id;
    assert_eq!(
        err(
            &mut s,
            11,
            Command::DeleteLocation {
                id: loc_id,
                if_match: None
            }
        )
        .code,
        ErrorCode::Conflict
    );
    let sub_id = *s.subnets.iter().next().unwrap().0;
    assert_eq!(
        err(
            &mut s,
            12,
            Command::DeleteSubnet {
                id: sub_id,
                if_match: None
            }
        )
        .code,
        ErrorCode::Conflict
    );
}

#[test]
fn events_are_bounded() {
    let mut s = base();
    for i in 0..(MAX_EVENTS as u64 + 20) {
        s.apply(&req(
            10 + i,
            Command::Journal {
                kind: "k".into(),
                entity: "e".into(),
                entity_id: None,
                message: String::new(),
            },
        ));
    }
    assert_eq!(s.events.len(), MAX_EVENTS);
}

/// For both forms of the token: as entries before sealing carry it (the secret), and as a
/// sealing leader proposes it (its hash, with the secret sealed beside).
#[test]
fn deploy_needs_a_ready_machine_and_the_callback_token_is_one_time() {
    deploy_flow(false);
    deploy_flow(true);
}

/// Under rules 4 (before workflows): the callback makes the machine deployed at once.
fn deploy_flow(hashed: bool) {
    use crate::cmd::Secret;
    let mut s = base();
    s.meta.rules = super::ApplyRules::Rules4;
    ok(
        &mut s,
        10,
        Command::CreateImage(rackd_types::payload::CreateImage {
            name: "deb".into(),
            kernel: "deb/vmlinuz".into(),
            initrd: "deb/initrd".into(),
            cmdline: String::new(),
            rootfs: None,
        }),
    );
    let id = ok(&mut s, 11, machine("a", &["02:00:00:00:00:aa"], &[]))["id"]
        .as_u64()
        .unwrap();
    let token = "t".repeat(64);
    let sealed = "rackd-sealed:v1:deploy-token:1:00";
    let deploy = |tok: &str| Command::Deploy {
        id,
        if_match: None,
        image: "deb".into(),
        token: Secret(if hashed {
            super::deploy_token_check(tok)
        } else {
            tok.into()
        }),
        sealed_token: hashed.then(|| Secret(sealed.into())),
        boot_timeout_ms: None,
        install_timeout_ms: None,
    };
    // `new` machines are not deployable.
    assert_eq!(err(&mut s, 12, deploy(&token)).code, ErrorCode::Conflict);
    ok(
        &mut s,
        13,
        Command::UpdateMachine {
            id,
            if_match: None,
            patch: UpdateMachine {
                state: Some(MachineStateAlias::Ready),
                ..Default::default()
            },
        },
    );
    let v = ok(&mut s, 14, deploy(&token));
    assert_eq!(v["state"], "deploying");
    assert!(!v.to_string().contains(&token));
    let stored = s.machines.get(&id).unwrap().clone();
    assert_eq!(
        stored.deploy_token_sealed.as_deref(),
        hashed.then_some(sealed)
    );
    if hashed {
        assert_ne!(
            stored.deploy_token.as_deref(),
            Some(token.as_str()),
            "only its hash"
        );
        // The hash itself is no token.
        let hash = stored.deploy_token.clone().unwrap();
        assert_eq!(
            err(
                &mut s,
                15,
                Command::DeployDone {
                    mac: "02:00:00:00:00:aa".into(),
                    token: Secret(hash)
                }
            )
            .code,
            ErrorCode::Unauthorized
        );
    }
    let done = |tok: &str| Command::DeployDone {
        mac: "02:00:00:00:00:aa".into(),
        token: Secret(tok.into()),
    };
    assert_eq!(err(&mut s, 15, done("nope")).code, ErrorCode::Unauthorized);
    ok(&mut s, 16, done(&token));
    assert_eq!(
        s.machines.get(&id).unwrap().machine.state,
        MachineStateAlias::Deployed
    );
    let stored = s.machines.get(&id).unwrap();
    assert!(stored.deploy_token.is_none() && stored.deploy_token_sealed.is_none());
    assert_eq!(err(&mut s, 17, done(&token)).code, ErrorCode::Unauthorized);
    assert!(
        !format!("{:?}", deploy(&token)).contains(&token),
        "Debug redacts the token"
    );
    // An image in use cannot be deleted.
    let img = *s.images.iter().next().unwrap().0;
    assert_eq!(
        err(
            &mut s,
            18,
            Command::DeleteImage {
                id: img,
                if_match: None
            }
        )
        .code,
        ErrorCode::Conflict
    );
}

#[test]
fn tasks_are_claimed_once_fenced_by_generation_and_ordered_per_machine() {
    use rackd_types::{TaskKind, TaskState};
    let mut s = base();
    let mut c = machine("a", &[], &[]);
    if let Command::CreateMachine(cm) = &mut c {
        cm.bmc = Some(BmcSpec {
            driver: "sim".parse().unwrap(),
            address: "x".into(),
            port: 623,
            username: String::new(),
            password: None,
            cipher_suite: None,
        });
    }
    let mid = ok(&mut s, 10, c)["id"].as_u64().unwrap();
    let t1 = ok(
        &mut s,
        11,
        Command::CreateTask {
            kind: TaskKind::PowerOn,
            machine_id: mid,
        },
    )["id"]
        .as_u64()
        .unwrap();
    let t2 = ok(
        &mut s,
        12,
        Command::CreateTask {
            kind: TaskKind::PowerOff,
            machine_id: mid,
        },
    )["id"]
        .as_u64()
        .unwrap();
    let claim = |id, node, generation| Command::ClaimTask {
        id,
        node,
        generation,
        lease_ms: 1000,
    };
    // The later task cannot start before the earlier one.
    assert_eq!(
        err(&mut s, 13, claim(t2, 1, 0)).code,
        ErrorCode::PreconditionFailed
    );
    let c1 = ok(&mut s, 14, claim(t1, 1, 0));
    assert_eq!(
        (c1["generation"].as_u64(), c1["attempt"].as_u64()),
        (Some(1), Some(1))
    );
    // A second executor with the old generation loses.
    assert_eq!(
        err(&mut s, 15, claim(t1, 2, 0)).code,
        ErrorCode::PreconditionFailed
    );
    // A stale result is refused; the current one is accepted once.
    let finish = |generation| Command::FinishTask {
        id: t1,
        generation,
        error: None,
        observed_power: Some("on".parse().unwrap()),
    };
    assert_eq!(
        err(&mut s, 16, finish(0)).code,
        ErrorCode::PreconditionFailed
    );
    ok(&mut s, 17, finish(1));
    assert_eq!(
        err(&mut s, 18, finish(1)).code,
        ErrorCode::PreconditionFailed
    );
    assert_eq!(s.tasks.get(&t1).unwrap().state, TaskState::Succeeded);
    assert_eq!(
        s.machines.get(&mid).unwrap().machine.power_state,
        Some(rackd_types::PowerState::On)
    );
    // Now the second task may run.
    ok(&mut s, 19, claim(t2, 2, 0));
}

#[test]
fn observed_power_is_stamped_with_the_entry_time_and_all_or_nothing() {
    let mut s = base();
    let a = ok(&mut s, 20, machine("a", &[], &[]))["id"]
        .as_u64()
        .unwrap();
    let b = ok(&mut s, 21, machine("b", &[], &[]))["id"]
        .as_u64()
        .unwrap();
    let obs = |v: Vec<(u64, &str)>| Command::ObservePower {
        observations: v
            .into_iter()
            .map(|(i, p)| crate::cmd::PowerObservation {
                machine_id: i,
                power: p.parse().unwrap(),
                observed_at_ms: 0,
            })
            .collect(),
    };
    // A power state outside the enum cannot even be decoded (the peer RPC refuses it).
    let bad = serde_json::json!({"type": "observe_power", "observations": [
        {"machine_id": a, "power": "on"}, {"machine_id": b, "power": "maybe"}]});
    assert!(serde_json::from_value::<Command>(bad).is_err());
    assert_eq!(s.machines.get(&a).unwrap().machine.power_state, None);
    // Unknown machines are skipped; time comes from the entry.
    let v = ok(
        &mut s,
        23,
        obs(vec![(a, "on"), (b, "unknown"), (999, "off")]),
    );
    assert_eq!(v["recorded"], 2);
    let m = &s.machines.get(&a).unwrap().machine;
    assert_eq!(
        (m.power_state, m.power_observed_at),
        (Some(rackd_types::PowerState::On), Some(23))
    );
    assert_eq!(
        s.machines.get(&b).unwrap().machine.power_state,
        Some(rackd_types::PowerState::Unknown)
    );
}

/// A BMC session grant: for a machine with an IPMI BMC, an IP source, a bounded lifetime;
/// a new grant for the same source replaces the old one; `bmc_session_allows` honours
/// source and expiry; at most 16 unexpired grants; expired ones make room.
#[test]
fn bmc_session_grants_are_checked_replaced_and_expire() {
    use std::net::IpAddr;
    let mut s = base();
    let with_bmc = |host: &str, mac: &str, driver: &str| {
        let mut c = machine(host, &[mac], &[]);
        if let Command::CreateMachine(cm) = &mut c {
            cm.bmc = Some(BmcSpec {
                driver: driver.parse().unwrap(),
                address: "10.1.0.5".into(),
                port: 623,
                username: "admin".into(),
                password: None,
                cipher_suite: None,
            });
        }
        c
    };
    let id = ok(&mut s, 10, with_bmc("a", "52:54:00:00:00:0a", "ipmi"))["id"]
        .as_u64()
        .unwrap();
    let sim = ok(&mut s, 10, with_bmc("b", "52:54:00:00:00:0b", "sim"))["id"]
        .as_u64()
        .unwrap();
    let grant = |m: u64, source: &str, ttl_ms: u64| Command::GrantBmcSession {
        machine_id: m,
        source: source.into(),
        ttl_ms,
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        err(&mut s, 11, grant(sim, "192.0.2.1", 1000)).code,
        ErrorCode::Conflict
    );
    assert_eq!(
        err(&mut s, 11, grant(999, "192.0.2.1", 1000)).code,
        ErrorCode::NotFound
    );
    assert_eq!(
        err(&mut s, 11, grant(id, "not-an-ip", 1000)).code,
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        err(&mut s, 11, grant(id, "192.0.2.1", 0)).code,
        ErrorCode::InvalidRequest
    );
    let g = ok(&mut s, 100, grant(id, " 192.0.2.1 ", 1000));
    assert_eq!(
        (g["source"].as_str(), g["expires_at"].as_u64()),
        (Some("192.0.2.1"), Some(1100))
    );
    assert!(s.bmc_session_allows(id, ip("192.0.2.1"), 1099));
    assert!(!s.bmc_session_allows(id, ip("192.0.2.1"), 1100), "expired");
    assert!(
        !s.bmc_session_allows(id, ip("192.0.2.2"), 500),
        "another source"
    );
    assert!(
        !s.bmc_session_allows(sim, ip("192.0.2.1"), 500),
        "another machine"
    );
    // Same source again: replaced (one grant, the new expiry).
    ok(&mut s, 200, grant(id, "192.0.2.1", 5000));
    assert_eq!(s.machines.get(&id).unwrap().bmc_sessions.len(), 1);
    assert!(s.bmc_session_allows(id, ip("192.0.2.1"), 5199));
    // At most 16 open grants; expired ones make room.
    for i in 2..=16 {
        ok(&mut s, 300, grant(id, &format!("192.0.2.{i}"), 1000));
    }
    assert_eq!(
        err(&mut s, 301, grant(id, "192.0.2.99", 1000)).code,
        ErrorCode::Conflict
    );
    ok(&mut s, 1300, grant(id, "192.0.2.99", 1000));
    // The grant survives an inventory update of the machine.
    ok(
        &mut s,
        1301,
        Command::UpdateMachine {
            id,
            if_match: None,
            patch: UpdateMachine {
                description: Some("d".into()),
                ..Default::default()
            },
        },
    );
    assert!(s.bmc_session_allows(id, ip("192.0.2.99"), 1400));

    // Closing: one source, then every source; what is not open is 404.
    let close = |source: Option<&str>| Command::RevokeBmcSession {
        machine_id: id,
        source: source.map(str::to_string),
    };
    ok(&mut s, 1400, grant(id, "192.0.2.7", 10_000));
    ok(&mut s, 1401, close(Some(" 192.0.2.99 ")));
    assert!(!s.bmc_session_allows(id, ip("192.0.2.99"), 1402));
    assert!(s.bmc_session_allows(id, ip("192.0.2.7"), 1402));
    assert_eq!(
        err(&mut s, 1403, close(Some("192.0.2.99"))).code,
        ErrorCode::NotFound
    );
    assert_eq!(
        err(&mut s, 1403, close(Some("nope"))).code,
        ErrorCode::InvalidRequest
    );
    ok(&mut s, 1404, close(None));
    assert!(!s.bmc_session_allows(id, ip("192.0.2.7"), 1405));
    assert!(s.machines.get(&id).unwrap().bmc_sessions.is_empty());
    assert_eq!(err(&mut s, 1406, close(None)).code, ErrorCode::NotFound);
    assert!(s
        .events
        .values()
        .any(|e| e.kind == "machine.bmc_session_closed"));
}

/// Rules 6 refuse input older rules accepted (duplicate hostnames per location, letter case
/// aside; malformed BMC addresses; blank tags; duplicate or malformed token names), and a log
/// decided under rules 5 is still decided as it was. A refused write changes nothing.
#[test]
fn rules_6_refuse_what_rules_5_accepted_and_rules_5_still_accept_it() {
    let bmc = |address: &str| BmcSpec {
        driver: rackd_types::BmcDriver::Sim,
        address: address.into(),
        port: 623,
        username: String::new(),
        password: None,
        cipher_suite: None,
    };
    let with = |host: &str, tags: &[&str], b: Option<BmcSpec>| {
        let Command::CreateMachine(mut c) = machine(host, &[], &[]) else {
            unreachable!()
        };
        c.tags = tags.iter().map(|t| t.to_string()).collect();
        c.bmc = b;
        Command::CreateMachine(c)
    };
    let token = |name: &str, n: u8| Command::CreateApiToken {
        name: name.into(),
        token_hash: format!("{n:02x}").repeat(32),
        role: rackd_types::ApiRole::Reader,
        ttl_ms: None,
    };
    let refused = [
        with("WEB1", &[], None),
        with("web1", &["ok", ""], None),
        with("web2", &["  "], None),
        with("web2", &["a b"], None),
        with("web2", &[], Some(bmc("http://10.0.0.9"))),
        with("web2", &[], Some(bmc("10.0.0.9:623"))),
        with("web2", &[], Some(bmc("bmc one"))),
        with("web2", &[], Some(bmc("10.0.0.256"))),
        with("web2", &[], Some(bmc("-bmc"))),
        token("admin", 1),
        token("ops team", 2),
        token("node:1", 3),
    ];
    for rules in [ApplyRules::Rules5, ApplyRules::Rules6] {
        let mut s = base();
        s.meta.rules = rules;
        ok(&mut s, 4, with("web1", &["rack-7"], Some(bmc("10.0.0.9"))));
        for cmd in refused.clone() {
            let before = (s.meta.clone(), s.events.len(), s.machines.len());
            let r = s.apply(&req(5, cmd.clone())).0;
            if rules.validates_input() {
                let e = r.expect_err(&format!("{cmd:?} under rules {rules}"));
                assert!(
                    matches!(e.code, ErrorCode::Conflict | ErrorCode::InvalidRequest),
                    "{e:?}"
                );
                let mut after = (s.meta.clone(), s.events.len(), s.machines.len());
                after.0.last_time = before.0.last_time;
                assert_eq!(before, after, "{cmd:?} changed something");
            } else {
                assert!(r.is_ok(), "rules {rules} decide {cmd:?} as before: {r:?}");
            }
        }
    }
    // Accepted under rules 6: IPv6 and host names as BMC addresses, a hostname in another
    // location, a rename to a free name; renaming onto a taken name (or moving a machine
    // into a location where its name is taken) is refused.
    let mut s = base();
    ok(&mut s, 4, with("web1", &[], Some(bmc("bmc-1.example.net"))));
    ok(&mut s, 4, with("web2", &[], Some(bmc("fd00::9"))));
    ok(&mut s, 4, with("web3", &[], Some(bmc("[fd00::a]"))));
    ok(
        &mut s,
        5,
        Command::CreateLocation(CreateLocation {
            name: "dc2".into(),
            description: String::new(),
            discovery: false,
        }),
    );
    let Command::CreateMachine(mut c) = with("web1", &[], None) else {
        unreachable!()
    };
    c.location = "dc2".into();
    let other = ok(&mut s, 6, Command::CreateMachine(c))["id"]
        .as_u64()
        .unwrap();
    let rename = |id: u64, host: Option<&str>, loc: Option<&str>| Command::UpdateMachine {
        id,
        if_match: None,
        patch: UpdateMachine {
            hostname: host.map(str::to_string),
            location: loc.map(str::to_string),
            ..UpdateMachine::default()
        },
    };
    let web2 = s.machine_named("dc1", "web2", None).unwrap();
    assert_eq!(
        err(&mut s, 7, rename(web2, Some("Web1"), None)).code,
        ErrorCode::Conflict
    );
    assert_eq!(
        err(&mut s, 7, rename(other, None, Some("dc1"))).code,
        ErrorCode::Conflict
    );
    ok(&mut s, 7, rename(web2, Some("web4"), None));
    ok(&mut s, 8, rename(web2, Some("WEB4"), None)); // its own name, in other letters
    assert_eq!(s.machine_named("dc1", "web2", None), None);
    assert_eq!(s.machine_named("dc1", "web4", None), Some(web2));
    // The index is rebuilt from the tables alike.
    let idx = s.idx.clone();
    s.rebuild_indexes();
    assert_eq!(s.idx, idx);
}
