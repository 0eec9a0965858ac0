//! Mutual TLS under the peer transport (DESIGN §7): every node-to-node connection is TLS 1.3
//! with a certificate on both sides, and the server knows which member is calling before any
//! RPC runs.
//!
//! - [`incoming`] turns a TCP listener into a stream of verified connections for tonic: the
//!   handshake (bounded in time and in how many run at once) must present a certificate from
//!   the cluster CA that names a member the cluster has not removed; anything else is dropped
//!   before HTTP/2 starts. Each connection carries its [`Caller`], which tonic hands to every
//!   request as an extension.
//! - [`connector`] is the client side: it dials, presents this node's certificate and accepts
//!   only the certificate of the node it meant to reach (by name, whatever address it dialled).
//!
//! What a certificate must say and how it is issued is not this module's business: the node
//! crate's `cluster::pki` implements [`PeerAuth`].
//!
//! Layer: used by `network`; depends on rustls, tokio-rustls, tonic's transport traits and the
//! command type only.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::codegen::http::Uri;

use crate::NodeId;

/// How long a connecting peer may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may run at once; connections beyond are closed at once (a real peer
/// reconnects), so strangers holding half-open handshakes cannot cost more than this.
pub const MAX_HANDSHAKES: usize = 256;

/// The node crate's answer to "who may connect and who is this".
pub trait PeerAuth: Send + Sync + 'static {
    /// TLS server configuration (requires a client certificate from the cluster CA).
    fn server_config(&self) -> Arc<rustls::ServerConfig>;
    /// TLS client configuration (presents this node's certificate, trusts the cluster CA).
    fn client_config(&self) -> Arc<rustls::ClientConfig>;
    /// The member a verified certificate names, if it names exactly one of this cluster.
    fn identify(&self, cert: &CertificateDer<'_>) -> Option<NodeId>;
    /// The name node `node`'s certificate carries (what a client verifies).
    fn server_name(&self, node: NodeId) -> ServerName<'static>;
    /// Whether `node` may still speak to this node (false once the cluster removed it).
    fn admitted(&self, node: NodeId) -> bool;
    /// Whether member `caller` may propose `cmd` in the name of `actor` over the peer
    /// transport (cluster-internal writes in its own name only: `State::node_may_propose`).
    fn may_propose(
        &self,
        caller: NodeId,
        actor: &str,
        cmd: &crate::cmd::Command,
    ) -> Result<(), String>;
    /// Keep the cluster CA key (PEM) the leader handed over before promoting this node to
    /// voter (`StoreCaKey`); refused unless it belongs to this node's CA certificate.
    fn store_ca_key(&self, key_pem: &str) -> Result<(), String>;
    /// Issue member `caller` a renewed certificate from its CSR, naming `api_addr` (its API
    /// address in the membership) too (`RenewCert`); refused where the CA key is not held.
    fn issue_cert(&self, caller: NodeId, api_addr: &str, csr_pem: &str) -> Result<String, String>;
    /// The key (hex) secrets of location `location_id` are sealed with, for member `caller`
    /// (`LocationKey`); refused where the CA key is not held.
    fn location_key(&self, caller: NodeId, location_id: u64) -> Result<String, String>;
}

/// The member on the other end of a verified connection (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller(pub NodeId);

/// Connections refused by [`incoming`], by cause (for the logs and tests).
#[derive(Debug, Default)]
pub struct RefusedStats {
    /// Handshake failed: no client certificate, another CA, bad TLS, or too slow.
    pub handshake: AtomicU64,
    /// A valid certificate of a member the cluster removed, or naming no member.
    pub identity: AtomicU64,
    /// Dropped because [`MAX_HANDSHAKES`] were already running.
    pub busy: AtomicU64,
}

/// A verified peer connection.
pub struct PeerStream {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    caller: Caller,
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller
    }
}

/// Verified connections from `listener`, for `Server::serve_with_incoming`. The accept loop
/// runs until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    auth: Arc<dyn PeerAuth>,
    stats: Arc<RefusedStats>,
) -> impl Stream<Item = Result<PeerStream, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<PeerStream>(64);
    let accept = tokio::spawn(accept_loop(listener, auth, stats, tx));
    let guard = AbortGuard(accept);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let s = rx.recv().await?;
        Some((Ok(s), (rx, guard)))
    })
}

struct AbortGuard(tokio::task::JoinHandle<()>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    auth: Arc<dyn PeerAuth>,
    stats: Arc<RefusedStats>,
    tx: tokio::sync::mpsc::Sender<PeerStream>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, from) = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.busy.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (auth, stats, tx) = (auth.clone(), stats.clone(), tx.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(tcp, auth.as_ref()).await {
                Ok(s) => {
                    let _ = tx.send(s).await;
                }
                Err(Refused::Handshake(e)) => {
                    stats.handshake.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, error = %e, "peer connection refused: TLS handshake");
                }
                Err(Refused::Identity(why)) => {
                    stats.identity.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, why, "peer connection refused");
                }
            }
        });
    }
}

enum Refused {
    Handshake(String),
    Identity(String),
}

async fn handshake(tcp: TcpStream, auth: &dyn PeerAuth) -> Result<PeerStream, Refused> {
    let acceptor = tokio_rustls::TlsAcceptor::from(auth.server_config());
    let io = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| Refused::Handshake("timed out".into()))?
        .map_err(|e| Refused::Handshake(e.to_string()))?;
    let cert = io
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| Refused::Handshake("no client certificate".into()))?;
    let node = auth.identify(cert).ok_or_else(|| {
        Refused::Identity("the certificate names no member of this cluster".into())
    })?;
    if !auth.admitted(node) {
        return Err(Refused::Identity(format!(
            "node {node} was removed from the cluster"
        )));
    }
    Ok(PeerStream {
        io,
        caller: Caller(node),
    })
}

/// The connector tonic dials node `target` with: TCP to the URI's authority, then TLS that
/// accepts only `target`'s certificate.
pub fn connector(
    auth: Arc<dyn PeerAuth>,
    target: NodeId,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Send
       + Clone
       + 'static {
    tower::service_fn(move |uri: Uri| {
        let auth = auth.clone();
        async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other(format!("no address in {uri}")))?
                .to_string();
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(auth.client_config())
                .connect(auth.server_name(target), tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}
