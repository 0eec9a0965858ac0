//! [`ReplicaInventory`] against [`FakeCluster`]: what the DHCP core is told about known MACs,
//! dynamic pools and reserved addresses, read from the replica at request time.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rackd_net::dhcp::{BootMode, Inventory, Pool};
use rackd_raft::cmd::Command;
use rackd_types::payload::{
    CreateLocation, CreateMachine, CreateSubnet, UpdateLocation, UpdateMachine,
};
use rackd_types::{IpRange, MachineState};

use super::ReplicaInventory;
use crate::cluster::fake::{machine_spec, FakeCluster};
use crate::cluster::Cluster;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn location(c: &FakeCluster, name: &str, discovery: bool) -> u64 {
    c.apply_ok(
        "t",
        Command::CreateLocation(CreateLocation {
            name: name.into(),
            description: String::new(),
            discovery,
        }),
    )
    .into_location()
    .unwrap()
    .meta
    .id
}

fn subnet(c: &FakeCluster, location: &str, cidr: &str, gw: &str, range: Option<(&str, &str)>) {
    c.apply_ok(
        "t",
        Command::CreateSubnet(CreateSubnet {
            location: location.into(),
            cidr: cidr.into(),
            gateway: Some(gw.into()),
            dns: vec!["192.0.2.53".into()],
            dynamic_ranges: range
                .map(|(s, e)| {
                    vec![IpRange {
                        start: s.into(),
                        end: e.into(),
                    }]
                })
                .unwrap_or_default(),
            reserved_ranges: vec![],
        }),
    );
}

fn machine(c: &FakeCluster, location: &str, host: &str, mac: &str, ips: &[&str]) -> u64 {
    c.create_machine(CreateMachine {
        macs: vec![mac.into()],
        ips: ips.iter().map(|s| s.to_string()).collect(),
        ..machine_spec(host, location)
    })
}

fn setup() -> (Arc<FakeCluster>, ReplicaInventory) {
    let c = FakeCluster::new(1, 1_000);
    location(&c, "dc1", false);
    location(&c, "dc2", false);
    subnet(
        &c,
        "dc1",
        "10.1.0.0/24",
        "10.1.0.1",
        Some(("10.1.0.100", "10.1.0.199")),
    );
    subnet(&c, "dc2", "10.2.0.0/24", "10.2.0.1", None);
    let inv = ReplicaInventory {
        cluster: c.clone(),
        location: "dc1".into(),
    };
    (c, inv)
}

#[test]
fn a_known_mac_of_this_location_gets_its_address_and_the_subnets_options() {
    let (c, inv) = setup();
    machine(&c, "dc1", "web1", "52:54:00:00:00:01", &["10.1.0.10"]);
    let r = inv.reservation("52:54:00:00:00:01").expect("reserved");
    assert_eq!(r.ip, ip("10.1.0.10"));
    assert_eq!(r.mask, ip("255.255.255.0"));
    assert_eq!(r.gateway, Some(ip("10.1.0.1")));
    assert_eq!(r.dns, vec![ip("192.0.2.53")]);
    assert_eq!(r.hostname, "web1");
    assert_eq!(r.boot, BootMode::Network);
    assert!(inv.is_reserved(ip("10.1.0.10")));
    assert!(!inv.is_reserved(ip("10.1.0.11")));
}

#[test]
fn machines_elsewhere_unknown_macs_and_machines_without_an_address_get_no_reservation() {
    let (c, inv) = setup();
    machine(&c, "dc2", "far", "52:54:00:00:00:02", &["10.2.0.10"]);
    machine(&c, "dc1", "noip", "52:54:00:00:00:04", &[]);
    for mac in [
        "52:54:00:00:00:02",
        "52:54:00:00:00:04",
        "52:54:00:00:00:99",
    ] {
        assert_eq!(inv.reservation(mac), None, "{mac}");
    }
}

#[test]
fn a_change_in_the_replica_takes_effect_on_the_next_request() {
    let (c, inv) = setup();
    let m = machine(&c, "dc1", "web1", "52:54:00:00:00:01", &["10.1.0.10"]);
    assert_eq!(
        inv.reservation("52:54:00:00:00:01").unwrap().boot,
        BootMode::Network
    );

    c.apply_ok(
        "t",
        Command::UpdateMachine {
            id: m,
            if_match: None,
            patch: UpdateMachine {
                ips: Some(vec!["10.1.0.20".into()]),
                ..Default::default()
            },
        },
    );
    let r = inv.reservation("52:54:00:00:00:01").unwrap();
    assert_eq!(r.ip, ip("10.1.0.20"));
    assert!(!inv.is_reserved(ip("10.1.0.10")));

    // A deployed machine boots from its disk.
    c.apply_ok(
        "t",
        Command::CreateMachine(CreateMachine {
            hostname: "db1".into(),
            location: "dc1".into(),
            rack_id: None,
            rack_unit: None,
            macs: vec!["52:54:00:00:00:05".into()],
            ips: vec!["10.1.0.30".into()],
            bmc: None,
            state: Some(MachineState::Deployed),
            description: String::new(),
            tags: vec![],
        }),
    );
    let r = inv.reservation("52:54:00:00:00:05").unwrap();
    assert_eq!(
        r.boot,
        BootMode::LocalDisk,
        "deployed machines boot from disk"
    );
}

#[test]
fn dynamic_pools_are_offered_only_when_the_location_discovers() {
    let (c, inv) = setup();
    assert_eq!(inv.discovery_pools(), vec![]);
    let dc1 = c.state().location_by_name("dc1").unwrap().meta.id;
    c.apply_ok(
        "t",
        Command::UpdateLocation {
            id: dc1,
            if_match: None,
            patch: UpdateLocation {
                description: None,
                discovery: Some(true),
            },
        },
    );
    assert_eq!(
        inv.discovery_pools(),
        vec![Pool {
            start: ip("10.1.0.100"),
            end: ip("10.1.0.199"),
            mask: ip("255.255.255.0"),
            gateway: Some(ip("10.1.0.1")),
            dns: vec![ip("192.0.2.53")],
        }]
    );
}
