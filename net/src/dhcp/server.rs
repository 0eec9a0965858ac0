//! The DHCP server's I/O shell: a UDP socket on port 67 (broadcast enabled, optionally bound
//! to the provisioning interface) feeding [`DhcpCore`]. Replies go to 255.255.255.255:68,
//! `ciaddr:68` or `giaddr:67` as the core decides.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::core::{Dest, DhcpCore, DhcpStats, Inventory};

pub struct DhcpServer {
    socket: UdpSocket,
    core: DhcpCore,
    inventory: Arc<dyn Inventory + Send + Sync>,
    discovered: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// A UDP socket suitable for a DHCP server: `SO_BROADCAST`, `SO_REUSEADDR`, bound to
/// `addr` and, when given, to `device` (so broadcasts leave through that interface).
pub fn dhcp_socket(addr: SocketAddr, device: Option<&str>) -> std::io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    if let Some(d) = device {
        s.bind_device(Some(d.as_bytes()))?;
    }
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    let rcvbuf = crate::sockbuf::enlarge_receive_buffer(&s, crate::sockbuf::STORM_RCVBUF);
    tracing::debug!(rcvbuf, "DHCP socket receive buffer");
    Ok(s.into())
}

impl DhcpServer {
    /// Serve on an already created socket (see [`dhcp_socket`]).
    pub fn new(
        socket: std::net::UdpSocket,
        core: DhcpCore,
        inventory: Arc<dyn Inventory + Send + Sync>,
    ) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            core,
            inventory,
            discovered: None,
        })
    }

    /// Send the MAC of every newly seen unknown machine (discovery) to `tx`.
    pub fn with_discovery_channel(
        mut self,
        tx: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Self {
        self.discovered = Some(tx);
        self
    }

    pub fn stats(&self) -> Arc<DhcpStats> {
        self.core.stats()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub async fn run(self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "dhcp recv error");
                    continue;
                }
            };
            let answer = self.core.handle_bytes(
                std::time::Instant::now(),
                &buf[..n],
                self.inventory.as_ref(),
            );
            if let Some(tx) = &self.discovered {
                for mac in self.core.take_discovered() {
                    let _ = tx.send(mac);
                }
            }
            let Some((reply, dest)) = answer else {
                continue;
            };
            let to = match dest {
                Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
                Dest::Unicast(ip) => SocketAddrV4::new(ip, 68),
                Dest::Relay(ip) => SocketAddrV4::new(ip, 67),
            };
            if let Err(e) = self.socket.send_to(&reply, to).await {
                tracing::info!(%peer, %to, error = %e, "dhcp send failed");
            }
        }
    }
}
