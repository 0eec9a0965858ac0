//! The QUIC link between nodes (quinn, mutual TLS with the cluster's node certificates, ALPN
//! `rackd-link/1`): what location nodes fetch from the cluster rides it, next to Raft's own
//! gRPC transport. Every node runs one QUIC endpoint on the UDP port of its peer address (so
//! nothing new is advertised): it answers members' requests and opens its own, one
//! connection per peer, reused, with keep-alives; a connection that died is opened again at
//! the next request.
//!
//! Requests so far: a byte range of a blob (a location node filling its site's cache), and a
//! BMC tunnel ([`tunnel`]: an IPMI proxy on any node reaching another location's BMC network
//! through a node of that location). The framing is [`frame`] (sans-IO); this module is the
//! shell that owns the socket. The caller
//! of a connection is who its client certificate names, and must be a member the cluster has
//! not removed.
//!
//! Layer: part of `cluster`; uses `blobs` (the store it serves from) and the peer TLS setup.

pub mod frame;
pub mod tunnel;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use openraft::async_runtime::WatchReceiver;
use rackd_raft::network::FetchBlobRequest;
use rackd_raft::peer_tls::PeerAuth;
use rackd_raft::NodeId;
use rackd_types::Digest;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::blobs::{BlobStore, Chunks};
use frame::{LinkReply, LinkRequest};

/// The link's ALPN protocol.
pub const ALPN: &[u8] = b"rackd-link/1";
const CHUNK: usize = 256 * 1024;

/// This node's QUIC endpoint: server for members, client to them.
pub struct Link {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    auth: Arc<dyn PeerAuth>,
    conns: Mutex<HashMap<NodeId, (SocketAddr, quinn::Connection)>>,
    /// What this node's BMC tunnels reach (set by a location node's services).
    tunnels: Mutex<Option<tunnel::TunnelResolver>>,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(30)).expect("30 s is a valid timeout"),
    ));
    // Room for a fast transfer in flight on a LAN, and a bound on what one connection
    // buffers (a voter serving many sites holds at most this much per site).
    t.stream_receive_window(quinn::VarInt::from_u32(4 << 20));
    t.receive_window(quinn::VarInt::from_u32(8 << 20));
    t.send_window(8 << 20);
    Arc::new(t)
}

impl Link {
    /// Bind the endpoint on UDP `addr` and serve members from `blobs`. `raft` tells who is a
    /// member.
    pub fn start(
        addr: SocketAddr,
        auth: Arc<dyn PeerAuth>,
        raft: super::Raft,
        blobs: Arc<BlobStore>,
    ) -> anyhow::Result<Arc<Link>> {
        let link = Link::new(addr, auth)?;
        tokio::spawn(accept_loop(link.clone(), raft, blobs));
        Ok(link)
    }

    /// The endpoint on UDP `addr` with `auth`'s TLS configurations, not answering anyone yet
    /// (a client; [`Link::start`] also serves).
    pub fn new(addr: SocketAddr, auth: Arc<dyn PeerAuth>) -> anyhow::Result<Arc<Link>> {
        let mut server_tls = (*auth.server_config()).clone();
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut client_tls = (*auth.client_config()).clone();
        client_tls.alpn_protocols = vec![ALPN.to_vec()];
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(server_tls))
            .map_err(|e| anyhow::anyhow!("QUIC server TLS: {e}"))?;
        let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(client_tls))
            .map_err(|e| anyhow::anyhow!("QUIC client TLS: {e}"))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport());
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport());
        let endpoint = match quinn::Endpoint::server(server.clone(), addr) {
            Ok(e) => e,
            Err(e) => {
                // Without its port this node still fetches over the link; members asking it
                // fall back to another holder.
                tracing::warn!(%addr, error = %e, "UDP port of the peer address taken: the QUIC link serves no one");
                quinn::Endpoint::server(server, SocketAddr::new(addr.ip(), 0))
                    .map_err(|e| anyhow::anyhow!("bind the QUIC link on UDP {addr}: {e}"))?
            }
        };
        tracing::info!(%addr, "QUIC link listening");
        Ok(Arc::new(Link {
            endpoint,
            client,
            auth,
            conns: Mutex::new(HashMap::new()),
            tunnels: Mutex::new(None),
        }))
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// A connection to member `target` at `addr` (its peer address), reused while it lives.
    async fn connection(&self, target: NodeId, addr: &str) -> Result<quinn::Connection, String> {
        let sa = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("resolve {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to nothing"))?;
        if let Some((a, c)) = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
        {
            if *a == sa && c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let name = match self.auth.server_name(target) {
            ServerName::DnsName(n) => n.as_ref().to_string(),
            other => return Err(format!("node {target} has no DNS name: {other:?}")),
        };
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), sa, &name)
            .map_err(|e| format!("QUIC link to node {target} at {sa}: {e}"))?;
        let c = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| format!("QUIC link to node {target} at {sa}: no handshake in 5 s"))?
            .map_err(|e| format!("QUIC link to node {target} at {sa}: {e}"))?;
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target, (sa, c.clone()));
        Ok(c)
    }

    /// Answer members' BMC tunnels with `r` (a location node's services; `None` stops).
    pub fn serve_bmc_tunnels(&self, r: Option<tunnel::TunnelResolver>) {
        *self.tunnels.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }

    /// Open a tunnel to the BMC of `machine_id` through member `target` (a node of the
    /// machine's location), for an operator at `source`.
    pub async fn open_bmc_tunnel(
        &self,
        target: NodeId,
        addr: &str,
        machine_id: u64,
        source: std::net::IpAddr,
    ) -> Result<(tunnel::TunnelTx, tunnel::TunnelRx), String> {
        let conn = self.connection(target, addr).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("QUIC link to node {target}: {e}"))?;
        let req = LinkRequest::BmcTunnel {
            machine_id,
            source: source.to_string(),
        };
        send.write_all(&frame::encode(&req))
            .await
            .map_err(|e| format!("QUIC link to node {target}: {e}"))?;
        let reply: LinkReply = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut recv))
            .await
            .map_err(|_| format!("node {target} did not answer over the QUIC link"))??;
        match reply {
            LinkReply::Tunnel { .. } => Ok((tunnel::TunnelTx(send), tunnel::TunnelRx(recv))),
            LinkReply::Refused { reason } => Err(format!("node {target}: {reason}")),
            LinkReply::Bytes { .. } => Err(format!("node {target}: an answer of another kind")),
        }
    }

    /// Stream a byte range of a blob from member `target` (the bytes are not verified here:
    /// the receiver hashes them).
    pub async fn fetch_blob(
        &self,
        target: NodeId,
        addr: &str,
        req: &FetchBlobRequest,
    ) -> Result<Chunks, String> {
        let conn = self.connection(target, addr).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| format!("QUIC link to node {target}: {e}"))?;
        send.write_all(&frame::encode(&LinkRequest::FetchBlob(req.clone())))
            .await
            .map_err(|e| format!("QUIC link to node {target}: {e}"))?;
        let _ = send.finish();
        let reply: LinkReply = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut recv))
            .await
            .map_err(|_| format!("node {target} did not answer over the QUIC link"))??;
        let len = match reply {
            LinkReply::Bytes { len } => len,
            LinkReply::Refused { reason } => return Err(format!("node {target}: {reason}")),
            LinkReply::Tunnel { .. } => {
                return Err(format!("node {target}: an answer of another kind"))
            }
        };
        tracing::info!(node = target, digest = %req.digest, len, "fetching over the QUIC link");
        let state = (recv, len, send);
        Ok(Box::pin(futures::stream::unfold(
            Some(state),
            move |st| async move {
                let (mut recv, left, send) = st?;
                if left == 0 {
                    return None;
                }
                match recv.read_chunk(CHUNK.min(left as usize), true).await {
                    Ok(Some(c)) => {
                        let n = c.bytes.len() as u64;
                        Some((
                            Ok(c.bytes.to_vec()),
                            Some((recv, left.saturating_sub(n), send)),
                        ))
                    }
                    Ok(None) => Some((
                        Err(format!(
                            "the QUIC link stream from node {target} ended early"
                        )),
                        None,
                    )),
                    Err(e) => Some((Err(format!("QUIC link from node {target}: {e}")), None)),
                }
            },
        )))
    }
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| format!("read a link frame: {e}"))?;
    let n = frame::frame_len(prefix)?;
    let mut body = vec![0u8; n];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("read a link frame: {e}"))?;
    frame::decode(&body)
}

async fn accept_loop(link: Arc<Link>, raft: super::Raft, blobs: Arc<BlobStore>) {
    while let Some(incoming) = link.endpoint.accept().await {
        let (link, raft, blobs) = (link.clone(), raft.clone(), blobs.clone());
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC link handshake failed");
                    return;
                }
            };
            let caller = match caller(&link, &raft, &conn) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(remote = %conn.remote_address(), error = %e, "QUIC link refused");
                    conn.close(quinn::VarInt::from_u32(1), e.as_bytes());
                    return;
                }
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(
                    caller,
                    send,
                    recv,
                    blobs.clone(),
                    link.clone(),
                ));
            }
        });
    }
}

/// Who the connection's client certificate names; refused unless a member not removed.
fn caller(link: &Link, raft: &super::Raft, conn: &quinn::Connection) -> Result<NodeId, String> {
    let certs = conn
        .peer_identity()
        .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("no client certificate")?;
    let id = certs
        .first()
        .and_then(|c| link.auth.identify(c))
        .ok_or("a certificate that names no node of this cluster")?;
    if !link.auth.admitted(id) {
        return Err(format!("node {id} was removed from the cluster"));
    }
    let m = raft.metrics().borrow_watched().clone();
    if m.membership_config.membership().get_node(&id).is_none() {
        return Err(format!("node {id} is no member of this cluster"));
    }
    Ok(id)
}

async fn serve_stream(
    caller: NodeId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    blobs: Arc<BlobStore>,
    link: Arc<Link>,
) {
    let req: Result<LinkRequest, String> = read_frame(&mut recv).await;
    let r = match req {
        Ok(LinkRequest::FetchBlob(r)) => r,
        Ok(LinkRequest::BmcTunnel { machine_id, source }) => {
            let resolver = link
                .tunnels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            tunnel::serve(caller, send, recv, resolver, (machine_id, source)).await;
            return;
        }
        Err(e) => {
            let _ = send
                .write_all(&frame::encode(&LinkReply::Refused { reason: e }))
                .await;
            let _ = send.finish();
            return;
        }
    };
    let opened = open_range(&blobs, &r).await;
    let (len, mut chunks) = match opened {
        Ok(v) => v,
        Err(reason) => {
            let _ = send
                .write_all(&frame::encode(&LinkReply::Refused { reason }))
                .await;
            let _ = send.finish();
            return;
        }
    };
    tracing::debug!(node = caller, digest = %r.digest, len, "sending a blob over the QUIC link");
    if send
        .write_all(&frame::encode(&LinkReply::Bytes { len }))
        .await
        .is_err()
    {
        return;
    }
    while let Some(c) = chunks.next().await {
        match c {
            Ok(b) => {
                if send.write_all(&b).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // The asker sees the stream end short of the announced length.
                tracing::warn!(digest = %r.digest, error = %e, "a blob read failed mid-transfer");
                let _ = send.reset(quinn::VarInt::from_u32(2));
                return;
            }
        }
    }
    let _ = send.finish();
    let _ = send.stopped().await;
}

/// The announced length and the chunks of the range asked for, from a sound local copy.
async fn open_range(blobs: &Arc<BlobStore>, r: &FetchBlobRequest) -> Result<(u64, Chunks), String> {
    let d = Digest::parse(&r.digest)?;
    let (s, d2) = (blobs.clone(), d.clone());
    let sound = tokio::task::spawn_blocking(move || s.check(&d2))
        .await
        .map_err(|e| e.to_string())?;
    match sound {
        Ok(true) => {}
        Ok(false) => return Err(format!("this node's copy of {d} was damaged (removed)")),
        Err(_) => return Err(format!("this node holds no copy of {d}")),
    }
    let size = blobs
        .size(&d)
        .ok_or_else(|| format!("this node holds no copy of {d}"))?;
    let start = r.offset.min(size);
    let len = r.len.min(size - start);
    let chunks = blobs
        .read(&d, start, len)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("this node holds no copy of {d}"))?;
    Ok((len, chunks))
}
