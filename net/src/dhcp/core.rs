//! Sans-IO DHCPv4 server core: decides the reply to one client message from the inventory's
//! reservations. No sockets, no clock, no lease table: a site answers from reservations (MAC →
//! IP from the replicated inventory), so two location nodes answer identically and need no
//! failover protocol.
//!
//! Handles DISCOVER → OFFER, REQUEST → ACK/NAK (SELECTING, INIT-REBOOT, RENEW/REBIND),
//! INFORM → ACK, RELEASE and DECLINE (counted, no reply), relayed requests (answered to the
//! relay), PXE/iPXE/HTTP-boot answers ([`super::boot`]) and proxy-DHCP mode (boot information
//! only, no address). Anything malformed is dropped and counted; nothing panics.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dhcproto::v4::{
    Architecture, DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Decodable, Encodable};

use super::boot::{self, BootMode, BootServers};

/// A machine's address reservation, resolved from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: String,
    pub boot: BootMode,
}

/// A dynamic range of one subnet, used for machines the inventory does not know yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

/// Read access to the reservations this server answers for (the node's local replica).
pub trait Inventory {
    /// Reservation of a normalized MAC (`aa:bb:cc:dd:ee:ff`), if the machine is known here.
    fn reservation(&self, mac: &str) -> Option<Reservation>;
    /// Dynamic pools for unknown machines; empty when discovery is off for this location.
    fn discovery_pools(&self) -> Vec<Pool> {
        Vec::new()
    }
    /// Whether an address is assigned to a machine (never handed out dynamically).
    fn is_reserved(&self, _ip: Ipv4Addr) -> bool {
        false
    }
}

/// How long an offered dynamic address is held for the client that was offered it.
pub const OFFER_HOLD: Duration = Duration::from_secs(60);
/// How long a declined address (in use on the wire) is kept out of the pool.
pub const DECLINE_HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct DynLease {
    ip: Ipv4Addr,
    pool: Pool,
    expires: Instant,
}

/// Dynamic leases of this server (in memory: discovery is best effort; reserved machines
/// need no lease state at all).
#[derive(Debug, Default)]
struct Leases {
    by_mac: HashMap<String, DynLease>,
    by_ip: HashMap<Ipv4Addr, String>,
    declined: HashMap<Ipv4Addr, Instant>,
    reported: HashSet<String>,
    discovered: Vec<String>,
    budget: Budget,
}

/// How many unknown machines one server reports for recording (each report becomes a machine
/// through the leader): a token bucket holding `burst`, refilled at `per_minute`. An unknown
/// client beyond it still gets its dynamic address and is reported when it comes back with
/// budget left (clients retry DHCP), so a host inventing MAC addresses cannot create machines
/// faster than this, while a rack powered on for discovery is recorded at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for DiscoveryLimit {
    fn default() -> Self {
        DiscoveryLimit {
            per_minute: 60,
            burst: 200,
        }
    }
}

/// MACs remembered as reported; beyond this the memory is cleared (a MAC reported again is
/// known by then, and the recorder skips known MACs).
const REPORTED_MAX: usize = 65_536;

#[derive(Debug, Default)]
struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    fn take(&mut self, now: Instant, limit: DiscoveryLimit) -> bool {
        let refill = match self.at {
            None => f64::from(limit.burst),
            Some(at) => {
                now.saturating_duration_since(at).as_secs_f64() * f64::from(limit.per_minute) / 60.0
            }
        };
        self.tokens = (self.tokens + refill).min(f64::from(limit.burst));
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Leases {
    fn holder(&self, ip: Ipv4Addr, now: Instant) -> Option<&str> {
        let mac = self.by_ip.get(&ip)?;
        let l = self.by_mac.get(mac)?;
        (l.ip == ip && l.expires > now).then_some(mac.as_str())
    }

    fn allocate(
        &mut self,
        now: Instant,
        mac: &str,
        pools: &[Pool],
        share: PoolShare,
        inv: &dyn Inventory,
    ) -> Option<DynLease> {
        let in_share = |p: &Pool, ip: Ipv4Addr| {
            p.start <= ip && ip <= p.end && share.holds(u32::from(ip) - u32::from(p.start))
        };
        if let Some(l) = self.by_mac.get(mac) {
            let still_ours = self.holder(l.ip, now).is_none_or(|m| m == mac);
            if still_ours && pools.iter().any(|p| in_share(p, l.ip)) && !inv.is_reserved(l.ip) {
                return Some(l.clone());
            }
        }
        self.declined.retain(|_, until| *until > now);
        for p in pools {
            for n in u32::from(p.start)..=u32::from(p.end) {
                let ip = Ipv4Addr::from(n);
                if !in_share(p, ip)
                    || self.holder(ip, now).is_some()
                    || self.declined.contains_key(&ip)
                    || inv.is_reserved(ip)
                {
                    continue;
                }
                let lease = DynLease {
                    ip,
                    pool: p.clone(),
                    expires: now,
                };
                if let Some(old) = self.by_mac.insert(mac.to_string(), lease.clone()) {
                    self.by_ip.remove(&old.ip);
                }
                self.by_ip.insert(ip, mac.to_string());
                return Some(lease);
            }
        }
        None
    }

    fn extend(&mut self, mac: &str, until: Instant) {
        if let Some(l) = self.by_mac.get_mut(mac) {
            if l.expires < until {
                l.expires = until;
            }
        }
    }

    fn remove(&mut self, mac: &str) -> Option<DynLease> {
        let l = self.by_mac.remove(mac)?;
        self.by_ip.remove(&l.ip);
        Some(l)
    }

    /// Report `mac` for recording, once, within the budget; false when over it.
    fn report(&mut self, now: Instant, mac: &str, limit: DiscoveryLimit) -> bool {
        if self.reported.contains(mac) {
            return true;
        }
        if !self.budget.take(now, limit) {
            return false;
        }
        if self.reported.len() >= REPORTED_MAX {
            self.reported.clear();
        }
        self.reported.insert(mac.to_string());
        self.discovered.push(mac.to_string());
        true
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Our address on the provisioning network (option 54).
    pub server_id: Ipv4Addr,
    pub boot: BootServers,
    pub lease_secs: u32,
    /// Proxy-DHCP: answer only the PXE part, never hand out addresses (RFC 4578 style).
    pub proxy: bool,
    /// The part of the discovery pools this server hands out (several location nodes of one
    /// site each take their own share, so they never offer one free address to two machines).
    pub pool_share: PoolShare,
    /// How fast unknown machines are reported for recording.
    pub discovery: DiscoveryLimit,
}

/// Share `index` of `count` of every dynamic range: the addresses whose offset in the range
/// is `index` modulo `count` (interleaved, so every share spans every range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShare {
    pub index: u32,
    pub count: u32,
}

impl Default for PoolShare {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl PoolShare {
    /// Parses `K/N` (1-based K, as operators number their nodes: `1/2` and `2/2`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| format!("pool share {s:?}: expected K/N, e.g. 1/2"))?;
        let k: u32 = k
            .trim()
            .parse()
            .map_err(|_| format!("pool share {s:?}: bad K"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("pool share {s:?}: bad N"))?;
        if n == 0 || k == 0 || k > n {
            return Err(format!("pool share {s:?}: need 1 <= K <= N"));
        }
        Ok(Self {
            index: k - 1,
            count: n,
        })
    }

    /// Whether the address at `offset` in its range belongs to this share.
    pub fn holds(&self, offset: u32) -> bool {
        offset % self.count.max(1) == self.index
    }
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:68 (the client has no address yet).
    Broadcast,
    /// `ip:68` (RENEW, INFORM: the client has an address).
    Unicast(Ipv4Addr),
    /// `giaddr:67` (relay agent).
    Relay(Ipv4Addr),
}

#[derive(Debug, Default)]
pub struct DhcpStats {
    pub received: AtomicU64,
    pub replied: AtomicU64,
    /// Client messages by type (releases and declines below).
    pub discovers: AtomicU64,
    pub requests: AtomicU64,
    pub informs: AtomicU64,
    /// Replies by type (naks below).
    pub offers: AtomicU64,
    pub acks: AtomicU64,
    pub malformed: AtomicU64,
    pub ignored: AtomicU64,
    pub unknown_client: AtomicU64,
    pub naks: AtomicU64,
    pub releases: AtomicU64,
    pub declines: AtomicU64,
    /// Dynamic (discovery) offers and acks.
    pub dynamic: AtomicU64,
    /// Unknown machines not reported for recording because the discovery budget was spent
    /// (they got their address; they are reported when they come back with budget left).
    pub discovery_limited: AtomicU64,
}

impl DhcpStats {
    fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// iPXE encapsulated option space and its `no-pxedhcp` setting.
const OPT_IPXE: u8 = 175;
const IPXE_NO_PXEDHCP: u8 = 176;
/// BOOTP minimum message length; some ROMs drop shorter replies.
const MIN_REPLY_LEN: usize = 300;

pub struct DhcpCore {
    cfg: Config,
    stats: std::sync::Arc<DhcpStats>,
    leases: Mutex<Leases>,
}

pub fn mac_string(chaddr: &[u8]) -> String {
    chaddr
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mask_prefix(mask: Ipv4Addr) -> u32 {
    u32::from(mask).leading_ones()
}

impl DhcpCore {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            stats: Default::default(),
            leases: Mutex::new(Leases::default()),
        }
    }

    /// MACs of unknown machines seen since the last call, each reported once per process.
    pub fn take_discovered(&self) -> Vec<String> {
        std::mem::take(
            &mut self
                .leases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .discovered,
        )
    }

    fn dynamic_reservation(l: &DynLease) -> Reservation {
        Reservation {
            ip: l.ip,
            mask: l.pool.mask,
            gateway: l.pool.gateway,
            dns: l.pool.dns.clone(),
            hostname: String::new(),
            boot: BootMode::Network,
        }
    }

    pub fn stats(&self) -> std::sync::Arc<DhcpStats> {
        self.stats.clone()
    }

    /// Decode, decide, encode. `None` = no reply (counted in the stats).
    pub fn handle_bytes(
        &self,
        now: Instant,
        bytes: &[u8],
        inv: &dyn Inventory,
    ) -> Option<(Vec<u8>, Dest)> {
        DhcpStats::inc(&self.stats.received);
        let msg = match Message::from_bytes(bytes) {
            Ok(m) => m,
            Err(_) => {
                DhcpStats::inc(&self.stats.malformed);
                return None;
            }
        };
        let (reply, dest) = self.handle(now, &msg, inv)?;
        let mut out = match reply.to_vec() {
            Ok(v) => v,
            Err(_) => {
                DhcpStats::inc(&self.stats.malformed);
                return None;
            }
        };
        if out.len() < MIN_REPLY_LEN {
            out.resize(MIN_REPLY_LEN, 0);
        }
        DhcpStats::inc(&self.stats.replied);
        match reply.opts().msg_type() {
            Some(MessageType::Offer) => DhcpStats::inc(&self.stats.offers),
            Some(MessageType::Ack) => DhcpStats::inc(&self.stats.acks),
            _ => {}
        }
        Some((out, dest))
    }

    /// Decide the reply to one decoded message.
    pub fn handle(
        &self,
        now: Instant,
        msg: &Message,
        inv: &dyn Inventory,
    ) -> Option<(Message, Dest)> {
        if msg.opcode() != Opcode::BootRequest || msg.htype() != HType::Eth || msg.hlen() != 6 {
            DhcpStats::inc(&self.stats.ignored);
            return None;
        }
        let Some(mt) = msg.opts().msg_type() else {
            DhcpStats::inc(&self.stats.malformed);
            return None;
        };
        match mt {
            MessageType::Discover => DhcpStats::inc(&self.stats.discovers),
            MessageType::Request => DhcpStats::inc(&self.stats.requests),
            MessageType::Inform => DhcpStats::inc(&self.stats.informs),
            _ => {}
        }
        let mac = mac_string(msg.chaddr());
        let client = self.classify(msg);
        let res = inv.reservation(&mac);
        match mt {
            MessageType::Discover => {
                if self.cfg.proxy {
                    return self.proxy_offer(msg, client, res.as_ref(), &mac);
                }
                if let Some(res) = res {
                    return Some(self.reply(msg, MessageType::Offer, Some(&res), client, &mac));
                }
                let pools = inv.discovery_pools();
                if pools.is_empty() {
                    DhcpStats::inc(&self.stats.unknown_client);
                    return None;
                }
                let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                let Some(lease) = leases.allocate(now, &mac, &pools, self.cfg.pool_share, inv)
                else {
                    tracing::warn!(%mac, "discovery pool exhausted");
                    DhcpStats::inc(&self.stats.unknown_client);
                    return None;
                };
                leases.extend(&mac, now + OFFER_HOLD);
                if !leases.report(now, &mac, self.cfg.discovery) {
                    DhcpStats::inc(&self.stats.discovery_limited);
                }
                drop(leases);
                DhcpStats::inc(&self.stats.dynamic);
                let r = Self::dynamic_reservation(&lease);
                Some(self.reply(msg, MessageType::Offer, Some(&r), client, &mac))
            }
            MessageType::Request => {
                if self.cfg.proxy {
                    DhcpStats::inc(&self.stats.ignored);
                    return None;
                }
                let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
                    Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
                    _ => None,
                };
                if server_id.is_some_and(|s| s != self.cfg.server_id) {
                    // The client selected another server's offer.
                    DhcpStats::inc(&self.stats.ignored);
                    return None;
                }
                let requested = match msg.opts().get(OptionCode::RequestedIpAddress) {
                    Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                    _ => msg.ciaddr(),
                };
                let res = res.or_else(|| {
                    // A machine we gave a dynamic address to (discovery).
                    let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                    let l = leases.by_mac.get(&mac).cloned()?;
                    if l.ip != requested || inv.is_reserved(l.ip) {
                        return None;
                    }
                    leases.extend(&mac, now + Duration::from_secs(self.cfg.lease_secs as u64));
                    if !leases.report(now, &mac, self.cfg.discovery) {
                        DhcpStats::inc(&self.stats.discovery_limited);
                    }
                    DhcpStats::inc(&self.stats.dynamic);
                    Some(Self::dynamic_reservation(&l))
                });
                match res {
                    Some(res) if requested == res.ip => {
                        Some(self.reply(msg, MessageType::Ack, Some(&res), client, &mac))
                    }
                    Some(_) => {
                        Some(self.nak(msg, "requested address is not reserved for this client"))
                    }
                    None if server_id.is_some() => Some(self.nak(msg, "unknown client")),
                    None => {
                        // INIT-REBOOT/RENEW of a client we know nothing about: stay silent.
                        DhcpStats::inc(&self.stats.unknown_client);
                        None
                    }
                }
            }
            MessageType::Inform => {
                if msg.ciaddr().is_unspecified() {
                    DhcpStats::inc(&self.stats.malformed);
                    return None;
                }
                let res = res.filter(|r| r.ip == msg.ciaddr());
                let (mut m, dest) = self.reply(msg, MessageType::Ack, res.as_ref(), client, &mac);
                m.set_yiaddr(Ipv4Addr::UNSPECIFIED);
                m.opts_mut().remove(OptionCode::AddressLeaseTime);
                m.opts_mut().remove(OptionCode::Renewal);
                m.opts_mut().remove(OptionCode::Rebinding);
                Some((m, dest))
            }
            MessageType::Release => {
                DhcpStats::inc(&self.stats.releases);
                let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                if leases
                    .by_mac
                    .get(&mac)
                    .is_some_and(|l| l.ip == msg.ciaddr())
                {
                    leases.remove(&mac);
                }
                None
            }
            MessageType::Decline => {
                DhcpStats::inc(&self.stats.declines);
                let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(l) = leases.remove(&mac) {
                    leases.declined.insert(l.ip, now + DECLINE_HOLD);
                }
                drop(leases);
                tracing::warn!(%mac, "client declined its reserved address (address conflict on the wire?)");
                None
            }
            _ => {
                DhcpStats::inc(&self.stats.ignored);
                None
            }
        }
    }

    fn classify(&self, msg: &Message) -> boot::Client {
        let opts = msg.opts();
        let vendor = match opts.get(OptionCode::ClassIdentifier) {
            Some(DhcpOption::ClassIdentifier(v)) => Some(v.as_slice()),
            _ => None,
        };
        let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(Architecture(a))) => Some(*a),
            _ => None,
        };
        let user = match opts.get(OptionCode::UserClass) {
            Some(DhcpOption::UserClass(v)) => Some(v.as_slice()),
            _ => None,
        };
        let has175 = opts.get(OptionCode::Unknown(OPT_IPXE)).is_some();
        boot::classify(vendor, arch, user, has175)
    }

    fn dest(&self, msg: &Message, mt: MessageType) -> Dest {
        if !msg.giaddr().is_unspecified() {
            Dest::Relay(msg.giaddr())
        } else if mt != MessageType::Nak && !msg.ciaddr().is_unspecified() {
            Dest::Unicast(msg.ciaddr())
        } else {
            Dest::Broadcast
        }
    }

    fn base_reply(&self, msg: &Message, mt: MessageType) -> Message {
        let mut m = Message::new_with_id(
            msg.xid(),
            msg.ciaddr(),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            msg.giaddr(),
            &msg.chaddr()[..6],
        );
        m.set_opcode(Opcode::BootReply);
        m.set_htype(HType::Eth);
        m.set_flags(msg.flags());
        m.opts_mut().insert(DhcpOption::MessageType(mt));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.cfg.server_id));
        m
    }

    fn reply(
        &self,
        msg: &Message,
        mt: MessageType,
        res: Option<&Reservation>,
        client: boot::Client,
        mac: &str,
    ) -> (Message, Dest) {
        let mut m = self.base_reply(msg, mt);
        let mode = res.map(|r| r.boot).unwrap_or(BootMode::Network);
        if let Some(r) = res {
            m.set_yiaddr(r.ip);
            let o = m.opts_mut();
            o.insert(DhcpOption::SubnetMask(r.mask));
            let prefix = mask_prefix(r.mask);
            if prefix < 31 {
                let bcast = u32::from(r.ip) | (u32::MAX >> prefix);
                o.insert(DhcpOption::BroadcastAddr(Ipv4Addr::from(bcast)));
            }
            if let Some(g) = r.gateway {
                o.insert(DhcpOption::Router(vec![g]));
            }
            if !r.dns.is_empty() {
                o.insert(DhcpOption::DomainNameServer(r.dns.clone()));
            }
            if !r.hostname.is_empty() {
                o.insert(DhcpOption::Hostname(r.hostname.clone()));
            }
            o.insert(DhcpOption::AddressLeaseTime(self.cfg.lease_secs));
            o.insert(DhcpOption::Renewal(self.cfg.lease_secs / 2));
            o.insert(DhcpOption::Rebinding(self.cfg.lease_secs / 8 * 7));
        }
        if res.is_some() {
            self.add_boot(&mut m, client, mode, mac);
        }
        let dest = self.dest(msg, mt);
        (m, dest)
    }

    fn add_boot(&self, m: &mut Message, client: boot::Client, mode: BootMode, mac: &str) {
        let Some(a) = boot::answer(client, mode, mac, &self.cfg.boot) else {
            return;
        };
        if a.filename.len() < 128 {
            m.set_fname_str(&a.filename);
        }
        m.opts_mut()
            .insert(DhcpOption::BootfileName(a.filename.into_bytes()));
        if let Some(ns) = a.next_server {
            m.set_siaddr(ns);
            m.opts_mut()
                .insert(DhcpOption::TFTPServerName(ns.to_string().into_bytes()));
        }
        if let Some(vc) = a.vendor_class {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()));
        }
        if a.ipxe_no_pxedhcp {
            m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::Unknown(OPT_IPXE),
                vec![IPXE_NO_PXEDHCP, 1, 1],
            )));
        }
    }

    fn proxy_offer(
        &self,
        msg: &Message,
        client: boot::Client,
        res: Option<&Reservation>,
        mac: &str,
    ) -> Option<(Message, Dest)> {
        if matches!(client, boot::Client::Plain) {
            DhcpStats::inc(&self.stats.ignored);
            return None;
        }
        let mode = res.map(|r| r.boot).unwrap_or(BootMode::Network);
        let mut m = self.base_reply(msg, MessageType::Offer);
        self.add_boot(&mut m, client, mode, mac);
        // No boot answer (e.g. the machine boots from disk): a proxy has nothing to say.
        m.opts().get(OptionCode::BootfileName)?;
        // A proxy offer always carries option 60 so ROMs recognise it.
        if m.opts().get(OptionCode::ClassIdentifier).is_none() {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        let dest = self.dest(msg, MessageType::Offer);
        Some((m, dest))
    }

    fn nak(&self, msg: &Message, why: &str) -> (Message, Dest) {
        DhcpStats::inc(&self.stats.naks);
        let mut m = self.base_reply(msg, MessageType::Nak);
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        m.opts_mut().insert(DhcpOption::Message(why.to_string()));
        if !msg.giaddr().is_unspecified() {
            m.set_flags(Flags::default().set_broadcast());
        }
        (m, self.dest(msg, MessageType::Nak))
    }
}
