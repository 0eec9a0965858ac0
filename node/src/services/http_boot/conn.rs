//! The HTTP boot server's connections: our own HTTP/1.1 loop (heads parsed by
//! `rackd_net::http::head`), the axum router as the one routing table, and file bodies sent
//! with `sendfile(2)` straight from the page cache.
//!
//! - At most `max_connections` are open; beyond that, new ones wait in the listen backlog.
//! - A request head must arrive within `header_timeout` (also the keep-alive idle limit) and
//!   fit in [`MAX_HEAD`]; a request body (only the install callback has one, and it is empty)
//!   must have a `Content-Length` of at most [`MAX_BODY`]. Violations get 400/411/413/431 and
//!   the connection is closed.
//! - A client that stops reading is cut ([`StallClock`]): its transfer slot is freed.
//! - Dynamic answers (scripts, callback) are small and sent whole, bounded by
//!   [`MAX_RESPONSE`]; file answers carry a [`SendFile`] and are never buffered.
//! - The connections live in the server's `JoinSet`: stopping the server (shutdown, node
//!   removed) closes every one of them, keep-alive ones included.
//!
//! Layer: a leaf of `services::http_boot`; knows the routes only through the router.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response};
use axum::Router;
use rackd_net::http::head::{self, BodyLen, Parsed, RequestHead};
use rackd_net::http::stall::{StallClock, Verdict};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use super::files::{SendFile, SendFileExt};

/// Largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest dynamic answer.
pub const MAX_RESPONSE: usize = 1 << 20;
/// Bytes handed to one `sendfile` call, which runs on the async thread; they are read into the
/// page cache on the blocking pool first when they are not there ([`rackd_net::pagecache`]).
const SENDFILE_STEP: usize = 1 << 20;

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
        let app = app.clone();
        let limits = limits.clone();
        conns.spawn(async move {
            if let Err(e) = connection(stream, app, &limits).await {
                tracing::debug!(%peer, error = %e, "HTTP boot connection ended");
            }
        });
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Read more bytes into `buf` by `deadline`; `Ok(0)` at end of stream.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<usize> {
    let mut tmp = [0u8; 4096];
    match tokio::time::timeout_at(deadline, stream.read(&mut tmp)).await {
        Ok(r) => {
            let n = r?;
            buf.extend_from_slice(&tmp[..n]);
            Ok(n)
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head timeout",
        )),
    }
}

/// Wait until the socket takes bytes again, or fail once the client has stalled.
async fn wait_writable(stream: &TcpStream, clock: &mut StallClock) -> io::Result<()> {
    loop {
        match clock.waiting(now()) {
            Verdict::Stalled => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client stopped reading",
                ))
            }
            Verdict::WaitUntil(t) => {
                if let Ok(r) =
                    tokio::time::timeout_at(Instant::from_std(t), stream.writable()).await
                {
                    return r;
                }
            }
        }
    }
}

/// Write all of `data`, cutting a client that stalls.
pub async fn write_guarded(
    stream: &TcpStream,
    mut data: &[u8],
    clock: &mut StallClock,
) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => {
                clock.written(now(), n);
                data = &data[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(stream, clock).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send `f`'s bytes with `sendfile(2)`, cutting a client that stalls.
async fn send_file(stream: &TcpStream, f: &SendFile, clock: &mut StallClock) -> io::Result<()> {
    let mut off = i64::try_from(f.start).map_err(io::Error::other)?;
    let end = f.start + f.len;
    while (off as u64) < end {
        let count = ((end - off as u64) as usize).min(SENDFILE_STEP);
        // A page-cache miss inside sendfile would block this async worker on the disk.
        rackd_net::pagecache::ensure_cached(&f.file, off as u64, count).await?;
        let r = stream.try_io(Interest::WRITABLE, || {
            nix::sys::sendfile::sendfile64(stream.as_fd(), f.file.as_fd(), Some(&mut off), count)
                .map_err(io::Error::from)
        });
        match r {
            Ok(0) => {
                // The file shrank under us: end the connection, so the client sees a short
                // body rather than wrong bytes.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
            }
            Ok(n) => clock.written(now(), n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(stream, clock).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answer with a bare status and close.
async fn refuse(
    stream: &TcpStream,
    status: u16,
    reason: &str,
    clock: &mut StallClock,
) -> io::Result<()> {
    let h = head::response_head(
        status,
        reason,
        [("content-length", &b"0"[..]), ("connection", b"close")],
    );
    write_guarded(stream, &h, clock).await
}

fn to_request(h: &RequestHead, body: Vec<u8>) -> Option<Request<Body>> {
    let mut b = Request::builder()
        .method(h.method.as_bytes())
        .uri(h.target.as_str())
        .version(if h.minor == 0 {
            axum::http::Version::HTTP_10
        } else {
            axum::http::Version::HTTP_11
        });
    for (n, v) in &h.headers {
        b = b.header(n.as_str(), v.as_slice());
    }
    b.body(Body::from(body)).ok()
}

async fn connection(mut stream: TcpStream, app: Router, limits: &Limits) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut clock = StallClock::new(limits.stall_window, limits.stall_min_bytes);
    loop {
        let deadline = Instant::now() + limits.header_timeout;
        let h = loop {
            match head::parse(&buf, MAX_HEAD) {
                Parsed::Complete(h) => break h,
                Parsed::Partial => {
                    if read_more(&mut stream, &mut buf, deadline).await? == 0 {
                        return Ok(());
                    }
                }
                Parsed::Invalid => return refuse(&stream, 400, "Bad Request", &mut clock).await,
                Parsed::TooLarge => {
                    return refuse(&stream, 431, "Request Header Fields Too Large", &mut clock)
                        .await
                }
            }
        };
        buf.drain(..h.len);
        let len = match h.body_len() {
            BodyLen::Bytes(n) if n <= MAX_BODY => n,
            BodyLen::Bytes(_) => {
                return refuse(&stream, 413, "Content Too Large", &mut clock).await
            }
            BodyLen::Unsupported => {
                return refuse(&stream, 411, "Length Required", &mut clock).await
            }
            BodyLen::Invalid => return refuse(&stream, 400, "Bad Request", &mut clock).await,
        };
        if len > buf.len() && h.expects_continue() {
            write_guarded(&stream, b"HTTP/1.1 100 Continue\r\n\r\n", &mut clock).await?;
        }
        while buf.len() < len {
            if read_more(&mut stream, &mut buf, deadline).await? == 0 {
                return Ok(());
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let keep = h.keep_alive();
        let is_head = h.method == "HEAD";
        let Some(req) = to_request(&h, body) else {
            return refuse(&stream, 400, "Bad Request", &mut clock).await;
        };
        let resp = match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        respond(&stream, resp, is_head, keep, &mut clock).await?;
        if !keep {
            return Ok(());
        }
    }
}

async fn respond(
    stream: &TcpStream,
    resp: Response<Body>,
    is_head: bool,
    keep: bool,
    clock: &mut StallClock,
) -> io::Result<()> {
    let (mut parts, body) = resp.into_parts();
    let file = parts.extensions.get::<SendFileExt>().and_then(|e| e.take());
    let status = parts.status;
    let bodiless = is_head
        || status.is_informational()
        || status == axum::http::StatusCode::NO_CONTENT
        || status == axum::http::StatusCode::NOT_MODIFIED;
    let bytes = if file.is_some() || bodiless {
        Default::default()
    } else {
        axum::body::to_bytes(body, MAX_RESPONSE)
            .await
            .map_err(|e| io::Error::other(format!("answer body: {e}")))?
    };
    let h = &mut parts.headers;
    if file.is_none() && !bodiless {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    }
    if !h.contains_key(header::DATE) {
        let date = rackd_net::http::file::http_date(std::time::SystemTime::now());
        h.insert(
            header::DATE,
            HeaderValue::from_str(&date).map_err(io::Error::other)?,
        );
    }
    if !keep {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = head::response_head(
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        h.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    if !bodiless {
        out.extend_from_slice(&bytes);
    }
    write_guarded(stream, &out, clock).await?;
    if let Some(f) = file.filter(|_| !bodiless) {
        send_file(stream, &f, clock).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (s, c)
    }

    /// R10: stopping the server (node shutdown, removal, fail-stop) also closes the idle
    /// keep-alive connections it owns; a detached connection task would keep them open until
    /// the header timeout (30 s).
    #[tokio::test]
    async fn stopping_the_server_closes_its_keep_alive_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let app = Router::new().route("/x", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve(l, app, Limits::default()));
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1024];
        while !got.ends_with(b"ok") {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        assert!(
            !String::from_utf8_lossy(&got).contains("close"),
            "kept alive"
        );
        server.abort();
        let _ = server.await;
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the idle keep-alive connection was left open");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_is_cut_when_its_reader_stops() {
        let (server, mut client) = pair().await;
        let mut clock = StallClock::new(Duration::from_secs(20), 1000);
        let start = Instant::now();
        // Far more than the socket buffers hold; the client never reads.
        let data = vec![7u8; 64 << 20];
        let err = write_guarded(&server, &data, &mut clock).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(20) && waited < Duration::from_secs(21),
            "{waited:?}"
        );
        client.shutdown().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_writer_whose_reader_keeps_up_is_not_cut() {
        let (server, mut client) = pair().await;
        let mut clock = StallClock::new(Duration::from_secs(20), 1000);
        let total = 16usize << 20;
        // A slow but steady reader: 1 MiB a second.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = vec![0u8; 1 << 20];
            while got < total {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let mut chunk = 0;
                while chunk < (1 << 20) && got < total {
                    let n = client.read(&mut buf[..(1 << 20) - chunk]).await.unwrap();
                    chunk += n;
                    got += n;
                }
            }
        });
        write_guarded(&server, &vec![1u8; total], &mut clock)
            .await
            .unwrap();
        reader.await.unwrap();
    }
}
