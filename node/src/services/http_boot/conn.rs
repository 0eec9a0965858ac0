//! The HTTP boot server's connections: our own accept loop over hyper's HTTP/1.1, so that
//! every connection is bounded and owned.
//!
//! - At most `max_connections` are open; beyond that, new ones wait in the listen backlog.
//! - A request's head must arrive within `header_timeout` (also the keep-alive idle limit).
//! - A client that stops reading a body is cut by [`StallGuard`] (`rackd_net::http::stall`),
//!   which frees its transfer slot and buffers.
//! - hyper buffers at most [`MAX_BUF`] per connection before it stops pulling the body.
//! - The connections live in the server's `JoinSet`: stopping the server (shutdown, node
//!   removed) closes every one of them, keep-alive ones included.
//!
//! Layer: a leaf of `services::http_boot`; knows nothing of the routes it serves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rackd_net::http::stall::{StallClock, Verdict};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

/// hyper's per-connection buffer cap (read and write): a little over one file chunk.
pub const MAX_BUF: usize = super::files::CHUNK + 16 * 1024;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Time a client may keep our writes waiting without taking `stall_min_bytes`.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            stall_window: Duration::from_secs(20),
            stall_min_bytes: 64 * 1024,
        }
    }
}

/// Serve `app` on `listener` until this future is dropped (which closes every connection).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let mut conns = JoinSet::new();
    loop {
        if conns.len() >= limits.max_connections.max(1) {
            conns.join_next().await;
            continue;
        }
        let accepted = tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "HTTP boot accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(StallGuard::new(
            stream,
            StallClock::new(limits.stall_window, limits.stall_min_bytes),
        ));
        let svc = TowerToHyperService::new(app.clone());
        let header_timeout = limits.header_timeout;
        conns.spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(MAX_BUF)
                .keep_alive(true);
            if let Err(e) = b.serve_connection(io, svc).await {
                tracing::debug!(%peer, error = %e, "HTTP boot connection ended");
            }
        });
    }
}

/// A connection's stream that fails a write once the client has kept it waiting too long
/// (see [`StallClock`]); everything else passes through.
pub struct StallGuard<T> {
    inner: T,
    clock: StallClock,
    sleep: Pin<Box<Sleep>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, clock: StallClock) -> Self {
        Self {
            inner,
            clock,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    fn judge(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                self.clock.written(Instant::now().into_std(), n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => loop {
                match self.clock.waiting(Instant::now().into_std()) {
                    Verdict::Stalled => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client stopped reading",
                        )))
                    }
                    Verdict::WaitUntil(t) => {
                        let t = Instant::from_std(t);
                        if self.sleep.deadline() != t {
                            self.sleep.as_mut().reset(t);
                        }
                        if self.sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
            },
            other => other,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.judge(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.judge(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn guard<T>(io: T) -> StallGuard<T> {
        StallGuard::new(io, StallClock::new(Duration::from_secs(20), 1000))
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_is_cut_when_its_reader_stops() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut w = guard(a);
        let start = Instant::now();
        // The reader takes 8 KiB, then stops.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            b.read_exact(&mut buf).await.unwrap();
            b
        });
        let err = loop {
            if let Err(e) = w.write_all(&[7u8; 1024]).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
            "{waited:?}"
        );
        drop(reader.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_whose_reader_keeps_up_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = guard(a);
        // A slow but steady reader: 512 bytes a second, for two minutes.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            for _ in 0..110 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                b.read_exact(&mut buf).await.unwrap();
            }
        });
        for _ in 0..110 {
            w.write_all(&[1u8; 512]).await.unwrap();
        }
        reader.await.unwrap();
    }
}
