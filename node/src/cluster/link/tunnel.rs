//! BMC tunnels over the QUIC link: an IPMI proxy on any node reaches the BMC network of
//! another location through a node of that location. The asker opens a stream with
//! [`LinkRequest::BmcTunnel`]; the location node checks the request (its resolver: a machine
//! of its own location, with an IPMI BMC, and a BMC session the operator's address holds),
//! answers [`LinkReply::Tunnel`], and relays the stream's datagrams to the BMC from a socket of
//! its own and the BMC's answers back, until either side finishes or the tunnel idles for
//! [`IDLE`]. The asking proxy keeps its own checks (RMCP only, no unauthenticated sessions).
//!
//! Layer: part of `cluster::link`; no replicated state here (the resolver is the caller's).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rackd_raft::NodeId;
use tokio::net::UdpSocket;

use super::frame::{self, LinkReply};

/// What a location node's BMC tunnels may reach: `(machine, operator address) → BMC`, or why
/// not.
pub type TunnelResolver = Arc<dyn Fn(u64, IpAddr) -> Result<SocketAddr, String> + Send + Sync>;

/// A tunnel is closed after this long without a datagram either way.
pub const IDLE: Duration = Duration::from_secs(120);

/// The sending half of a tunnel.
pub struct TunnelTx(pub(super) quinn::SendStream);

/// The receiving half of a tunnel.
pub struct TunnelRx(pub(super) quinn::RecvStream);

impl TunnelTx {
    pub async fn send(&mut self, d: &[u8]) -> Result<(), String> {
        let f = frame::encode_datagram(d).ok_or("a datagram too long for the tunnel")?;
        self.0.write_all(&f).await.map_err(|e| e.to_string())
    }

    /// End the tunnel from this side.
    pub fn finish(&mut self) {
        let _ = self.0.finish();
    }
}

impl TunnelRx {
    /// The next datagram; `None` once the other side finished or the stream broke.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let mut prefix = [0u8; 2];
        self.0.read_exact(&mut prefix).await.ok()?;
        let n = frame::datagram_len(prefix).ok()?;
        let mut d = vec![0u8; n];
        self.0.read_exact(&mut d).await.ok()?;
        Some(d)
    }
}

/// Serve one tunnel request from member `caller` on a stream whose request was read.
pub(super) async fn serve(
    caller: NodeId,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    resolver: Option<TunnelResolver>,
    (machine_id, source): (u64, String),
) {
    let refuse = |reason: String| frame::encode(&LinkReply::Refused { reason });
    let resolved = match (resolver, source.trim().parse::<IpAddr>()) {
        (None, _) => Err("this node serves no location's BMCs".to_string()),
        (_, Err(_)) => Err(format!("source {source:?} is not an IP address")),
        (Some(r), Ok(ip)) => r(machine_id, ip),
    };
    let bmc = match resolved {
        Ok(b) => b,
        Err(reason) => {
            tracing::info!(node = caller, machine = machine_id, %reason, "BMC tunnel refused");
            let _ = send.write_all(&refuse(reason)).await;
            let _ = send.finish();
            return;
        }
    };
    let bind = if bmc.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) if s.connect(bmc).await.is_ok() => s,
        _ => {
            let _ = send
                .write_all(&refuse(format!("cannot open a socket toward {bmc}")))
                .await;
            let _ = send.finish();
            return;
        }
    };
    let ok = frame::encode(&LinkReply::Tunnel {
        bmc: bmc.to_string(),
    });
    if send.write_all(&ok).await.is_err() {
        return;
    }
    tracing::info!(node = caller, machine = machine_id, %bmc, %source, "BMC tunnel opened");
    let (mut tx, mut rx) = (TunnelTx(send), TunnelRx(recv));
    let mut buf = vec![0u8; frame::MAX_DATAGRAM];
    let (mut up, mut down) = (0u64, 0u64);
    loop {
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    up += 1;
                    let _ = sock.send(&d).await;
                }
                None => break,
            },
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    down += 1;
                    if tx.send(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                // ICMP unreachable and the like: the BMC is not there now; keep waiting.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = tokio::time::sleep(IDLE) => break,
        }
    }
    tx.finish();
    tracing::info!(
        node = caller,
        machine = machine_id,
        up,
        down,
        "BMC tunnel closed"
    );
}
