//! The API's connections: our accept loop over hyper's HTTP/1.1 server, with the limits that
//! keep one host from taking a voter's API (and its health) away from everyone else:
//!
//! - at most [`Limits::per_source`] open connections per client address; a connection beyond
//!   that is closed at once (and counted), so one host holding thousands of idle
//!   connections costs us a bounded number of descriptors and never the API;
//! - at most [`Limits::max_connections`] in all; beyond that new connections wait in the listen
//!   backlog;
//! - a request head must arrive whole within [`Limits::header_timeout`], which is also how long
//!   an idle keep-alive connection is kept (slowloris, idle hoarders);
//! - heads larger than [`MAX_HEAD`] are refused;
//! - with TLS (`--api-tls`), the handshake must finish within the same head timeout.
//!
//! Stopping (`stop` turns true) lets connections finish their request in progress, then
//! closes them.
//!
//! Layer: a leaf of `api` (hyper, hyper-util, axum's router as a tower service; its limits
//! are `config`'s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

pub use crate::config::ApiLimits as Limits;

/// What the loop refused, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections closed at once because their source had `per_source` open.
    pub refused_per_source: AtomicU64,
}

/// Serve `app` on `listener` (over TLS with `tls`) until `stop` turns true, then drain the
/// connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<Stats>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let sources = Arc::new(rackd_net::per_source::PerSource::default());
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if conns.len() >= limits.max_connections.max(1) => continue,
            a = listener.accept(), if conns.len() < limits.max_connections.max(1) => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = sources.take(peer.ip(), limits.per_source.max(1)) else {
            stats.refused_per_source.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "API connection refused: too many from this source");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = TowerToHyperService::new(app.clone());
        let header_timeout = limits.header_timeout;
        let stop = stop.clone();
        let acceptor = acceptor.clone();
        conns.spawn(async move {
            let _slot = slot;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, svc, header_timeout, stop, peer).await;
            };
            // The handshake counts against the head's time limit (a stalled handshake is a
            // slowloris too).
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(tls, svc, header_timeout, stop, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
            }
        });
    }
    // Stopping: connections finish the request in hand (bounded by the caller's drain).
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// One HTTP/1.1 connection until it ends or `stop` turns true (then after its request in hand).
async fn serve_connection<IO>(
    io: IO,
    svc: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "API connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: Limits) -> (std::net::SocketAddr, Arc<Stats>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        let stats = Arc::new(Stats::default());
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let s = stats.clone();
        tokio::spawn(async move {
            let _tx = _tx;
            serve(l, app, limits, s, None, rx).await
        });
        (addr, stats)
    }

    /// GET /ok from `from` (a loopback address of our choosing) over a fresh connection.
    async fn get_from(
        from: std::net::IpAddr,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<String> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(std::net::SocketAddr::new(from, 0))?;
        let mut s = sock.connect(addr).await?;
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// One source holding more connections than its share gets the rest closed at once;
    /// another source is served meanwhile.
    #[tokio::test]
    async fn a_source_over_its_share_is_closed_and_others_are_served() {
        let (addr, stats) = start(Limits {
            per_source: 8,
            ..Limits::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut ninth = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), ninth.read(&mut b))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "the ninth connection is closed");
        assert_eq!(stats.refused_per_source.load(Ordering::Relaxed), 1);
        let answer = get_from("127.0.0.2".parse().unwrap(), addr).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Closing one of the eight gives its place back.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = get_from("127.0.0.1".parse().unwrap(), addr).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// A client that sends its head a byte at a time, or nothing at all, is cut after the
    /// header timeout.
    #[tokio::test]
    async fn slow_and_silent_clients_are_cut_after_the_header_timeout() {
        let (addr, _) = start(Limits {
            header_timeout: Duration::from_millis(500),
            ..Limits::default()
        })
        .await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let t0 = std::time::Instant::now();
        let trickle = tokio::spawn(async move {
            for b in b"GET /ok HTTP/1.1\r\nHost: x\r\n".iter() {
                if slow.write_all(&[*b]).await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut buf = [0u8; 64];
            matches!(slow.read(&mut buf).await, Ok(0) | Err(_))
        });
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut b))
            .await
            .expect("the silent client is cut")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(trickle.await.unwrap(), "the trickling client is cut");
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    }
}
