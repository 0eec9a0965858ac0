//! IPv6 Router Advertisements on the provisioning segment, sent only so that network-boot
//! firmware stops waiting: iPXE's "Configuring (net0)" solicits routers with backoff and only
//! fetches its boot file when that times out (~13 s, see the lab notes) unless a Router
//! Advertisement arrives. The RA carries router lifetime 0 (we are nobody's default router)
//! and no prefix, so it changes no client's IPv6 configuration.
//!
//! [`build_ra`] is the pure encoder; [`RaSender`] is a small thread that answers Router
//! Solicitations and advertises periodically on one interface (raw ICMPv6 socket: root).

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;

/// An ICMPv6 Router Advertisement (RFC 4861 §4.2) with no options. The checksum is left 0:
/// the kernel fills it for ICMPv6 raw sockets.
pub fn build_ra(router_lifetime_secs: u16) -> Vec<u8> {
    let mut b = vec![ICMPV6_ROUTER_ADVERTISEMENT, 0, 0, 0];
    b.push(64); // cur hop limit
    b.push(0); // M=0 O=0: no DHCPv6
    b.extend_from_slice(&router_lifetime_secs.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // reachable time: unspecified
    b.extend_from_slice(&0u32.to_be_bytes()); // retrans timer: unspecified
    b
}

/// Whether an ICMPv6 message (as read from a raw socket, no IPv6 header) is a Router
/// Solicitation.
pub fn is_router_solicitation(b: &[u8]) -> bool {
    b.len() >= 8 && b[0] == ICMPV6_ROUTER_SOLICITATION && b[1] == 0
}

fn ifindex(interface: &str) -> std::io::Result<u32> {
    let s = std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex"))?;
    s.trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad ifindex for {interface}")))
}

/// Periodic and solicited RAs on one interface; stops when dropped.
pub struct RaSender {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
}

impl RaSender {
    pub fn start(interface: &str, period: Duration) -> std::io::Result<Self> {
        let idx = ifindex(interface)?;
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        s.bind_device(Some(interface.as_bytes()))?;
        s.set_multicast_hops_v6(255)?;
        s.set_unicast_hops_v6(255)?;
        s.set_multicast_if_v6(idx)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let dest = SockAddr::from(SocketAddrV6::new(
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            0,
            0,
            idx,
        ));
        let iface = interface.to_string();
        std::thread::Builder::new()
            .name(format!("rackd-ra-{iface}"))
            .spawn(move || {
                let ra = build_ra(0);
                let mut buf = [0u8; 1500];
                let mut next = Instant::now();
                while !stop2.load(Ordering::Relaxed) {
                    let solicited =
                        matches!((&s).read(&mut buf), Ok(n) if is_router_solicitation(&buf[..n]));
                    if solicited || Instant::now() >= next {
                        match s.send_to(&ra, &dest) {
                            Ok(_) => {
                                sent2.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                tracing::debug!(interface = %iface, error = %e, "RA send failed")
                            }
                        }
                        next = Instant::now() + period;
                    }
                }
            })?;
        Ok(Self { stop, sent })
    }
}

impl Drop for RaSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ra_layout() {
        let ra = build_ra(0);
        assert_eq!(ra.len(), 16);
        assert_eq!(ra[0], 134);
        assert_eq!(
            &ra[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert_eq!(ra[5], 0, "no managed/other flags");
    }

    #[test]
    fn rs_detection() {
        assert!(is_router_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 0]));
        assert!(!is_router_solicitation(&[]));
    }
}
