//! DHCP core tests: messages built like real clients' (dhclient, udhcpc, qemu iPXE).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, Message, MessageType, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};

use super::*;

struct Inv(HashMap<String, Reservation>);

impl Inventory for Inv {
    fn reservation(&self, mac: &str) -> Option<Reservation> {
        self.0.get(mac).cloned()
    }
}

const MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x11];
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);

fn inv(boot: BootMode) -> Inv {
    let mut m = HashMap::new();
    m.insert(
        "02:77:00:00:00:11".to_string(),
        Reservation {
            ip: IP,
            mask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(SERVER),
            dns: vec![Ipv4Addr::new(10, 77, 0, 2)],
            hostname: "web1".into(),
            boot,
        },
    );
    Inv(m)
}

fn core(proxy: bool) -> DhcpCore {
    core_with(proxy, PoolShare::default())
}

fn core_with(proxy: bool, pool_share: PoolShare) -> DhcpCore {
    DhcpCore::new(config(proxy, pool_share))
}

fn config(proxy: bool, pool_share: PoolShare) -> Config {
    Config {
        server_id: SERVER,
        boot: BootServers {
            tftp: SERVER,
            http_base: "http://10.77.0.1:8080".into(),
            ipxe_via_tftp: false,
        },
        lease_secs: 3600,
        proxy,
        pool_share,
        discovery: Default::default(),
    }
}

fn msg(mt: MessageType, mac: &[u8]) -> Message {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        mac,
    );
    m.opts_mut().insert(DhcpOption::MessageType(mt));
    m
}

fn roundtrip(c: &DhcpCore, m: &Message, inv: &Inv) -> Option<(Message, Dest)> {
    let (bytes, dest) = c.handle_bytes(Instant::now(), &m.to_vec().unwrap(), inv)?;
    assert!(bytes.len() >= 300, "BOOTP minimum length");
    Some((Message::from_bytes(&bytes).unwrap(), dest))
}

fn mt(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

#[test]
fn dora_gives_the_reserved_address_with_subnet_options() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let (offer, dest) = roundtrip(&c, &msg(MessageType::Discover, &MAC), &inv).unwrap();
    assert_eq!(
        (mt(&offer), offer.yiaddr(), dest),
        (MessageType::Offer, IP, Dest::Broadcast)
    );
    assert_eq!(offer.xid(), 0x1234_5678);
    assert_eq!(
        offer.opts().get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        offer.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        offer.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("web1".into()))
    );
    assert_eq!(
        offer.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    // A plain OS client gets no boot file.
    assert!(offer.opts().get(OptionCode::BootfileName).is_none());

    let mut req = msg(MessageType::Request, &MAC);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(IP));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    let (ack, _) = roundtrip(&c, &req, &inv).unwrap();
    assert_eq!((mt(&ack), ack.yiaddr()), (MessageType::Ack, IP));

    // RENEW: unicast to the client's address.
    let mut renew = msg(MessageType::Request, &MAC);
    renew.set_ciaddr(IP);
    let (ack, dest) = roundtrip(&c, &renew, &inv).unwrap();
    assert_eq!((mt(&ack), dest), (MessageType::Ack, Dest::Unicast(IP)));
}

#[test]
fn wrong_address_gets_nak_and_other_servers_are_respected() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let mut req = msg(MessageType::Request, &MAC);
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 99)));
    let (nak, dest) = roundtrip(&c, &req, &inv).unwrap();
    assert_eq!((mt(&nak), dest), (MessageType::Nak, Dest::Broadcast));
    assert_eq!(DhcpStats::get(&c.stats().naks), 1);
    // Client chose another server: silence.
    let mut other = msg(MessageType::Request, &MAC);
    other
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 77, 0, 9)));
    other.opts_mut().insert(DhcpOption::RequestedIpAddress(IP));
    assert!(roundtrip(&c, &other, &inv).is_none());
}

#[test]
fn unknown_macs_get_no_answer_and_release_decline_are_counted() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    assert!(roundtrip(&c, &msg(MessageType::Discover, &[2, 0, 0, 0, 0, 9]), &inv).is_none());
    assert_eq!(DhcpStats::get(&c.stats().unknown_client), 1);
    assert!(roundtrip(&c, &msg(MessageType::Release, &MAC), &inv).is_none());
    assert!(roundtrip(&c, &msg(MessageType::Decline, &MAC), &inv).is_none());
    assert_eq!(DhcpStats::get(&c.stats().releases), 1);
    assert_eq!(DhcpStats::get(&c.stats().declines), 1);
}

#[test]
fn relayed_requests_are_answered_to_the_relay() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let mut d = msg(MessageType::Discover, &MAC);
    d.set_giaddr(Ipv4Addr::new(10, 78, 0, 1));
    d.set_hops(1);
    let (offer, dest) = roundtrip(&c, &d, &inv).unwrap();
    assert_eq!(dest, Dest::Relay(Ipv4Addr::new(10, 78, 0, 1)));
    assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 78, 0, 1));
}

#[test]
fn inform_gets_options_without_lease() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let mut i = msg(MessageType::Inform, &MAC);
    i.set_ciaddr(IP);
    let (ack, dest) = roundtrip(&c, &i, &inv).unwrap();
    assert_eq!(
        (mt(&ack), dest, ack.yiaddr()),
        (MessageType::Ack, Dest::Unicast(IP), Ipv4Addr::UNSPECIFIED)
    );
    assert!(ack.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(ack.opts().get(OptionCode::SubnetMask).is_some());
}

#[test]
fn broadcast_flag_is_echoed() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let mut d = msg(MessageType::Discover, &MAC);
    d.set_flags(Flags::default().set_broadcast());
    let (offer, _) = roundtrip(&c, &d, &inv).unwrap();
    assert!(offer.flags().broadcast());
}

fn pxe_discover(ipxe: bool) -> Message {
    let mut d = msg(MessageType::Discover, &MAC);
    d.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    d.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(Architecture(0)));
    if ipxe {
        d.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        d.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(175),
            vec![19, 1, 1],
        )));
    }
    d
}

#[test]
fn pxe_rom_chains_to_ipxe_and_ipxe_gets_its_script() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let (offer, _) = roundtrip(&c, &pxe_discover(false), &inv).unwrap();
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "undionly.kpxe"
    );
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(
        offer.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    let (offer, _) = roundtrip(&c, &pxe_discover(true), &inv).unwrap();
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "http://10.77.0.1:8080/boot/02:77:00:00:00:11.ipxe"
    );
    // no-pxedhcp so iPXE does not wait for ProxyDHCP offers
    match offer.opts().get(OptionCode::Unknown(175)) {
        Some(DhcpOption::Unknown(u)) => assert_eq!(u.data(), &[176, 1, 1]),
        other => panic!("no option 175: {other:?}"),
    }
}

#[test]
fn disk_boot_machines_get_no_boot_file() {
    let c = core(false);
    let inv = inv(BootMode::LocalDisk);
    let (offer, _) = roundtrip(&c, &pxe_discover(false), &inv).unwrap();
    assert_eq!(offer.yiaddr(), IP);
    assert!(offer.opts().get(OptionCode::BootfileName).is_none());
}

#[test]
fn proxy_mode_answers_only_pxe_and_never_gives_addresses() {
    let c = core(true);
    let inv = Inv(HashMap::new());
    let (offer, _) = roundtrip(&c, &pxe_discover(false), &inv).unwrap();
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        offer.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "undionly.kpxe"
    );
    assert!(roundtrip(&c, &msg(MessageType::Discover, &MAC), &inv).is_none());
    let mut req = msg(MessageType::Request, &MAC);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(IP));
    assert!(roundtrip(&c, &req, &inv).is_none());
}

#[test]
fn malformed_and_hostile_packets_are_dropped_and_counted() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let good = msg(MessageType::Discover, &MAC).to_vec().unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![0xff; 10],
        good[..100].to_vec(),
        good[..239].to_vec(),
    ];
    // A reply (op 2) sent to the server, and a non-Ethernet hardware type.
    let mut reply = good.clone();
    reply[0] = 2;
    cases.push(reply);
    let mut htype = good.clone();
    htype[1] = 6;
    cases.push(htype);
    // No message type option at all.
    let mut no_mt = Message::new_with_id(
        1,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &MAC,
    );
    no_mt.opts_mut().insert(DhcpOption::Hostname("x".into()));
    cases.push(no_mt.to_vec().unwrap());
    for case in &cases {
        assert!(
            c.handle_bytes(Instant::now(), case, &inv).is_none(),
            "answered {case:?}"
        );
    }
    // Random mutations of a valid DISCOVER never panic.
    let mut x: u64 = 0xDEAD_BEEF_1234_5678;
    for _ in 0..20_000 {
        let mut b = good.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pos = (x as usize) % b.len();
            b[pos] = (x >> 32) as u8;
        }
        x ^= x << 13;
        b.truncate((x as usize) % (b.len() + 1));
        let _ = c.handle_bytes(Instant::now(), &b, &inv);
    }
    assert!(DhcpStats::get(&c.stats().malformed) >= 4);
}

/// An inventory with one reservation (.50) and a discovery pool .100-.102.
struct PoolInv {
    reserved: Inv,
    pools: Vec<Pool>,
}

impl Inventory for PoolInv {
    fn reservation(&self, mac: &str) -> Option<Reservation> {
        self.reserved.reservation(mac)
    }
    fn discovery_pools(&self) -> Vec<Pool> {
        self.pools.clone()
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reserved.0.values().any(|r| r.ip == ip)
    }
}

fn pool_inv(start: u8, end: u8) -> PoolInv {
    PoolInv {
        reserved: inv(BootMode::Network),
        pools: vec![Pool {
            start: Ipv4Addr::new(10, 77, 0, start),
            end: Ipv4Addr::new(10, 77, 0, end),
            mask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(SERVER),
            dns: vec![],
        }],
    }
}

fn dyn_offer(c: &DhcpCore, now: Instant, mac: &[u8], inv: &PoolInv) -> Option<Ipv4Addr> {
    let (bytes, _) =
        c.handle_bytes(now, &msg(MessageType::Discover, mac).to_vec().unwrap(), inv)?;
    Some(Message::from_bytes(&bytes).unwrap().yiaddr())
}

#[test]
fn discovery_pool_never_offers_an_address_twice() {
    let c = core(false);
    let inv = pool_inv(49, 52); // .50 is reserved for MAC and must be skipped
    let t0 = Instant::now();
    let a = dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 1], &inv).unwrap();
    let b = dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 2], &inv).unwrap();
    let d = dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 3], &inv).unwrap();
    assert_eq!(
        (a, b, d),
        (
            Ipv4Addr::new(10, 77, 0, 49),
            Ipv4Addr::new(10, 77, 0, 51),
            Ipv4Addr::new(10, 77, 0, 52)
        )
    );
    // The same client gets the same address again; a fourth client finds the pool exhausted.
    assert_eq!(dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 1], &inv), Some(a));
    assert_eq!(dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 4], &inv), None);
    // Each unknown MAC is reported once.
    assert_eq!(c.take_discovered().len(), 3);
    assert!(c.take_discovered().is_empty());
    // Offers that were never requested expire and free the address.
    let later = t0 + OFFER_HOLD + Duration::from_secs(1);
    assert!(dyn_offer(&c, later, &[2, 0, 0, 0, 0, 4], &inv).is_some());
}

#[test]
fn discovered_client_completes_dora_and_release_frees_the_address() {
    let c = core(false);
    let inv = pool_inv(100, 100);
    let t0 = Instant::now();
    let mac = [2, 0, 0, 0, 0, 7];
    let ip = dyn_offer(&c, t0, &mac, &inv).unwrap();
    let mut req = msg(MessageType::Request, &mac);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    let (bytes, _) = c.handle_bytes(t0, &req.to_vec().unwrap(), &inv).unwrap();
    let ack = Message::from_bytes(&bytes).unwrap();
    assert_eq!(
        (ack.opts().msg_type(), ack.yiaddr()),
        (Some(MessageType::Ack), ip)
    );
    // Held for the lease time, long after the offer hold.
    let t1 = t0 + OFFER_HOLD * 2;
    assert_eq!(dyn_offer(&c, t1, &[2, 0, 0, 0, 0, 8], &inv), None);
    let mut rel = msg(MessageType::Release, &mac);
    rel.set_ciaddr(ip);
    assert!(c.handle_bytes(t1, &rel.to_vec().unwrap(), &inv).is_none());
    assert_eq!(dyn_offer(&c, t1, &[2, 0, 0, 0, 0, 8], &inv), Some(ip));
}

#[test]
fn declined_addresses_are_kept_out_of_the_pool() {
    let c = core(false);
    let inv = pool_inv(100, 101);
    let t0 = Instant::now();
    let ip = dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 9], &inv).unwrap();
    assert!(c
        .handle_bytes(
            t0,
            &msg(MessageType::Decline, &[2, 0, 0, 0, 0, 9])
                .to_vec()
                .unwrap(),
            &inv
        )
        .is_none());
    let next = dyn_offer(&c, t0, &[2, 0, 0, 0, 0, 10], &inv).unwrap();
    assert_ne!(next, ip);
}

#[test]
fn location_nodes_with_their_own_pool_shares_never_offer_one_address_twice() {
    let with_share = |index, count| core_with(false, PoolShare { index, count });
    // Two location nodes of one site; every unknown machine asks both (broadcast).
    let (a, b) = (with_share(0, 2), with_share(1, 2));
    let inv = pool_inv(100, 109);
    let t0 = Instant::now();
    let mut from_a = std::collections::BTreeSet::new();
    let mut from_b = std::collections::BTreeSet::new();
    for i in 0..5u8 {
        let mac = [2, 0, 0, 0, 1, i];
        from_a.insert(dyn_offer(&a, t0, &mac, &inv).unwrap());
        from_b.insert(dyn_offer(&b, t0, &mac, &inv).unwrap());
    }
    // Each share holds half the range, the shares are disjoint and cover it all.
    assert_eq!((from_a.len(), from_b.len()), (5, 5));
    assert!(from_a.is_disjoint(&from_b), "{from_a:?} {from_b:?}");
    assert_eq!(from_a.len() + from_b.len(), 10);
    // A share is exhausted on its own half.
    assert_eq!(dyn_offer(&a, t0, &[2, 0, 0, 0, 1, 9], &inv), None);
    assert_eq!(
        PoolShare::parse("2/2"),
        Ok(PoolShare { index: 1, count: 2 })
    );
    for bad in ["0/2", "3/2", "1/0", "x", "1/"] {
        assert!(PoolShare::parse(bad).is_err(), "{bad}");
    }
}

/// Unknown machines are reported for recording within the discovery budget only: a burst at
/// once, then the per-minute rate; a client over the budget still gets its address, is counted,
/// and is reported when it comes back with budget left; a MAC is reported once.
#[test]
fn discovery_reports_unknown_machines_within_the_budget_only() {
    let c = DhcpCore::new(Config {
        discovery: DiscoveryLimit {
            per_minute: 6,
            burst: 3,
        },
        ..config(false, PoolShare::default())
    });
    let inv = pool_inv(100, 200);
    let t0 = Instant::now();
    let mac = |i: u8| [2, 0, 0, 0, 1, i];
    for i in 0..10 {
        assert!(
            dyn_offer(&c, t0, &mac(i), &inv).is_some(),
            "client {i} got no address"
        );
    }
    assert_eq!(c.take_discovered().len(), 3, "the burst");
    let limited = || DhcpStats::get(&c.stats().discovery_limited);
    assert_eq!(limited(), 7);
    // 6 per minute: one more every 10 s. The same clients retry.
    let t10 = t0 + Duration::from_secs(10);
    for i in 0..10 {
        dyn_offer(&c, t10, &mac(i), &inv);
    }
    assert_eq!(c.take_discovered(), vec!["02:00:00:00:01:03".to_string()]);
    // A minute later the rate allows six more (the burst caps what accumulates).
    let t70 = t10 + Duration::from_secs(60);
    for i in 0..10 {
        dyn_offer(&c, t70, &mac(i), &inv);
    }
    assert_eq!(c.take_discovered().len(), 3, "the burst caps the refill");
    // Reported MACs are not reported again, whatever the budget.
    let t_late = t70 + Duration::from_secs(3600);
    for i in 0..7 {
        dyn_offer(&c, t_late, &mac(i), &inv);
    }
    assert!(c.take_discovered().is_empty());
}

#[test]
fn stats_count_messages_and_replies_by_type() {
    let c = core(false);
    let inv = inv(BootMode::Network);
    let get = |f: fn(&DhcpStats) -> &std::sync::atomic::AtomicU64| DhcpStats::get(f(&c.stats()));
    let (offer, _) = roundtrip(&c, &msg(MessageType::Discover, &MAC), &inv).unwrap();
    let mut req = msg(MessageType::Request, &MAC);
    req.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    let (ack, _) = roundtrip(&c, &req, &inv).unwrap();
    assert_eq!(mt(&ack), MessageType::Ack);
    // A request for an address not reserved for the client is refused.
    let mut wrong = msg(MessageType::Request, &MAC);
    wrong
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 77, 0, 99)));
    wrong
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(SERVER));
    let (nak, _) = roundtrip(&c, &wrong, &inv).unwrap();
    assert_eq!(mt(&nak), MessageType::Nak);
    // An unknown client's discover is dropped, and garbage is counted as malformed.
    assert!(roundtrip(&c, &msg(MessageType::Discover, &[2, 0, 0, 0, 0, 9]), &inv).is_none());
    assert!(c.handle_bytes(Instant::now(), b"junk", &inv).is_none());
    assert_eq!(get(|s| &s.received), 5);
    assert_eq!(get(|s| &s.discovers), 2);
    assert_eq!(get(|s| &s.requests), 2);
    assert_eq!(get(|s| &s.offers), 1);
    assert_eq!(get(|s| &s.acks), 1);
    assert_eq!(get(|s| &s.naks), 1);
    assert_eq!(get(|s| &s.unknown_client), 1);
    assert_eq!(get(|s| &s.malformed), 1);
    assert_eq!(get(|s| &s.replied), 3);
}
