//! Tests of the table registry: every table of [`State`] is registered, and every registered
//! table survives each persistence path (row drain → load, full rewrite → load, snapshot
//! encode → decode) with its derived indexes rebuilt identically.

use std::collections::BTreeSet;

use rackd_types::payload::{CreateImage, CreateLocation, CreateMachine, CreateRack, CreateSubnet};
use rackd_types::BmcSpec;

use super::*;
use crate::cmd::{Command, Request};

fn apply_ok(s: &mut State, t: u64, key: Option<&str>, cmd: Command) -> serde_json::Value {
    let r = s.apply(&Request {
        time_ms: t,
        actor: "test".into(),
        idempotency_key: key.map(str::to_string),
        cmd,
    });
    r.0.unwrap_or_else(|e| panic!("unexpected error {e:?}"))
        .body()
}

/// A state with at least one row in every table, made through apply only.
pub(super) fn populated() -> State {
    let mut s = State::default();
    let mut t = 0;
    let mut next = |s: &mut State, key: Option<&str>, cmd| {
        t += 1;
        apply_ok(s, t, key, cmd)
    };
    next(
        &mut s,
        None,
        Command::Bootstrap {
            cluster_id: "c1".into(),
            admin_token_hash: "a".repeat(64),
        },
    );
    next(
        &mut s,
        Some("k1"),
        Command::CreateLocation(CreateLocation {
            name: "dc1".into(),
            description: String::new(),
            discovery: false,
        }),
    );
    let rack = next(
        &mut s,
        None,
        Command::CreateRack(CreateRack {
            location: "dc1".into(),
            name: "r1".into(),
            height_units: 42,
        }),
    )["id"]
        .as_u64();
    next(
        &mut s,
        None,
        Command::CreateSubnet(CreateSubnet {
            location: "dc1".into(),
            cidr: "10.0.0.0/24".into(),
            gateway: Some("10.0.0.1".into()),
            dns: vec![],
            dynamic_ranges: vec![],
            reserved_ranges: vec![],
        }),
    );
    let mid = next(
        &mut s,
        None,
        Command::CreateMachine(CreateMachine {
            hostname: "m1".into(),
            location: "dc1".into(),
            rack_id: rack,
            rack_unit: Some(1),
            macs: vec!["52:54:00:00:00:01".into()],
            ips: vec!["10.0.0.10".into()],
            bmc: Some(BmcSpec {
                driver: "sim".parse().unwrap(),
                address: "x".into(),
                port: 623,
                username: "u".into(),
                password: Some("p".into()),
                cipher_suite: None,
            }),
            state: None,
            description: String::new(),
            tags: vec![],
        }),
    )["id"]
        .as_u64()
        .unwrap();
    next(
        &mut s,
        None,
        Command::CreateImage(CreateImage {
            name: "debian".into(),
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: String::new(),
            rootfs: None,
        }),
    );
    next(
        &mut s,
        None,
        Command::CreateJoinToken {
            token_hash: "b".repeat(64),
            ttl_ms: 3_600_000,
            description: "j".into(),
            location: None,
        },
    );
    next(
        &mut s,
        None,
        Command::CreateTask {
            kind: rackd_types::TaskKind::PowerOn,
            machine_id: mid,
        },
    );
    next(
        &mut s,
        None,
        Command::RecordBlob {
            digest: rackd_types::Digest::from_sha256(&[9; 32]),
            size: 4096,
            node: 1,
        },
    );
    next(
        &mut s,
        None,
        Command::CreateWebhook(rackd_types::payload::CreateWebhook {
            name: "pager".into(),
            url: "http://127.0.0.1:9/hook".into(),
            kinds: vec!["machine".into()],
            secret: Some(rackd_types::SecretText("sealed".into())),
            enabled: true,
        }),
    );
    s
}

fn json(s: &State) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn every_state_field_is_a_registered_table() {
    let v = serde_json::to_value(State::default()).unwrap();
    let fields: BTreeSet<&str> = v
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "meta")
        .collect();
    let registered: BTreeSet<&str> = TABLES.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        fields, registered,
        "every persisted State field must be listed in state_tables! (mod.rs)"
    );
    let ids: BTreeSet<u8> = TABLES.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), TABLES.len(), "table ids are unique");
    assert!(!ids.contains(&tables::META));
}

#[test]
fn every_table_survives_every_persistence_path() {
    let mut s = populated();
    for (name, n) in s.table_sizes() {
        assert!(
            n > 0,
            "the fixture must put a row in table `{name}` (add one to populated())"
        );
    }
    let want = json(&s);

    // Path 1: the rows each apply batch persists, loaded at startup.
    let mut via_drain = s.clone();
    let rows = via_drain.drain_changes();
    let mut loaded = State::default();
    for r in &rows {
        match &r.value {
            Some(v) => loaded.load_row(r.table, &r.key, v).unwrap(),
            None => panic!("the fixture deletes nothing"),
        }
    }
    loaded.rebuild_indexes();
    assert_eq!(json(&loaded), want, "drain_changes → load_row");
    assert!(via_drain.drain_changes().is_empty(), "drain leaves nothing");
    let mut loaded_tables: BTreeSet<u8> = rows.iter().map(|r| r.table).collect();
    loaded_tables.remove(&tables::META);
    assert_eq!(
        loaded_tables,
        TABLES.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(),
        "every table has rows in the persisted batch"
    );

    // Path 2: the full rewrite after a snapshot install.
    let mut via_all = s.clone();
    let mut full = State::default();
    for r in via_all.all_rows() {
        full.load_row(r.table, &r.key, r.value.as_ref().unwrap())
            .unwrap();
    }
    full.rebuild_indexes();
    assert_eq!(json(&full), want, "all_rows → load_row");
    assert!(
        via_all.drain_changes().is_empty(),
        "all_rows clears changes"
    );

    // Path 3: the snapshot encoding.
    let snap = serde_json::to_vec(&StateSnapshot {
        format_version: STATE_FORMAT_VERSION,
        state: s.clone(),
    })
    .unwrap();
    let mut back: StateSnapshot = serde_json::from_slice(&snap).unwrap();
    back.state.rebuild_indexes();
    assert_eq!(json(&back.state), want, "snapshot round trip");

    // Indexes maintained by apply equal the ones rebuilt from the tables.
    let mut rebuilt = s.clone();
    rebuilt.rebuild_indexes();
    assert_eq!(s.idx, rebuilt.idx);
    assert_eq!(loaded.idx, s.idx);
}

#[test]
fn deletes_reach_storage_for_every_table_that_deletes() {
    let mut s = populated();
    s.drain_changes();
    let mid = *s.machines.first_key().unwrap();
    apply_ok(
        &mut s,
        100,
        None,
        Command::DeleteMachine {
            id: mid,
            if_match: None,
        },
    );
    let rows = s.drain_changes();
    assert!(rows
        .iter()
        .any(|r| r.table == tables::MACHINES && r.value.is_none()));
}
