//! Static files of the HTTP boot server (the TFTP root over HTTP, image artifacts): the
//! handler answers with the head and a [`SendFile`] that the connection loop (`conn`) sends
//! from the page cache with `sendfile(2)`, never read into memory, so memory does not grow
//! with image size or clients; `HEAD`, single `Range`, `ETag`/`Last-Modified` and conditional
//! requests follow `rackd_net::http::file`.
//!
//! Every body holds one of the node's transfer slots ([`Transfers`]) until it is sent or its
//! connection dies; requests beyond the cap wait in FIFO order (none is refused, none
//! starves). Path rules are the TFTP server's (no `..`, no symlink out of the root).
//! Layer: a leaf of `services::http_boot`; no cluster state here.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use rackd_net::http::file::{plan, FileMeta, Plan, Request};
use rackd_net::tftp::server::{resolve, PathError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's transfer slots: at most `cap` file bodies are being sent at once.
#[derive(Clone)]
pub struct Transfers {
    slots: Arc<Semaphore>,
}

impl Transfers {
    pub fn new(cap: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(cap.max(1))),
        }
    }

    /// Wait (FIFO) for a slot.
    async fn acquire(&self) -> OwnedSemaphorePermit {
        // Never closed: `Transfers` owns the semaphore and never calls `close`.
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("transfer semaphore is never closed")
    }
}

/// A short `text/plain` answer (refusals, scripts).
pub fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Open `path` under `root` and read its validators (blocking; run off the async threads).
fn open(root: &Path, path: &str) -> Result<(std::fs::File, FileMeta), StatusCode> {
    let root = root.canonicalize().map_err(|_| StatusCode::NOT_FOUND)?;
    let p = resolve(&root, path).map_err(|e| match e {
        PathError::Escape => StatusCode::FORBIDDEN,
        _ => StatusCode::NOT_FOUND,
    })?;
    let f = std::fs::File::open(&p).map_err(|_| StatusCode::NOT_FOUND)?;
    let m = f.metadata().map_err(|_| StatusCode::NOT_FOUND)?;
    if !m.is_file() {
        return Err(StatusCode::NOT_FOUND);
    }
    let modified = m.modified().unwrap_or(std::time::UNIX_EPOCH);
    Ok((f, FileMeta::new(m.ino(), m.len(), modified)))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Answer a `GET`/`HEAD` for `path` under `root`.
pub async fn serve(
    root: PathBuf,
    path: String,
    method: &Method,
    headers: &HeaderMap,
    transfers: &Transfers,
) -> Response {
    let opened = tokio::task::spawn_blocking(move || open(&root, &path)).await;
    let (file, meta) = match opened {
        Ok(Ok(v)) => v,
        Ok(Err(StatusCode::FORBIDDEN)) => return text(StatusCode::FORBIDDEN, "forbidden\n"),
        Ok(Err(_)) => return text(StatusCode::NOT_FOUND, "not found\n"),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"),
    };
    let head = *method == Method::HEAD;
    let req = Request {
        head,
        range: header_str(headers, header::RANGE),
        if_range: header_str(headers, header::IF_RANGE),
        if_match: header_str(headers, header::IF_MATCH),
        if_none_match: header_str(headers, header::IF_NONE_MATCH),
        if_modified_since: header_str(headers, header::IF_MODIFIED_SINCE),
        if_unmodified_since: header_str(headers, header::IF_UNMODIFIED_SINCE),
    };
    let p = plan(&meta, &req);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::from_u16(p.status()).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).expect("validators are ASCII");
    h.insert(header::ETAG, value(&meta.etag));
    h.insert(header::LAST_MODIFIED, value(&meta.last_modified()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = p.content_range(meta.len) {
        h.insert(header::CONTENT_RANGE, value(&cr));
    }
    let Some((start, len)) = p.body(meta.len) else {
        // A 304 may only state the length a 200 would have (RFC 9110 §8.6); say it rather
        // than let a default `0` through.
        let n = if p == Plan::NotModified { meta.len } else { 0 };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return resp;
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if head || len == 0 {
        return resp;
    }
    let slot = transfers.acquire().await;
    resp.extensions_mut().insert(SendFileExt::new(SendFile {
        file,
        start,
        len,
        _slot: slot,
    }));
    resp
}

/// A file body for the connection loop to send with `sendfile(2)` (no copy through user
/// space): the handler answers with the head and this; the loop writes the head, then the
/// bytes. The transfer slot is held until the value is dropped (sent, or the client gone).
pub struct SendFile {
    pub file: std::fs::File,
    pub start: u64,
    pub len: u64,
    _slot: OwnedSemaphorePermit,
}

/// [`SendFile`] as a response extension (extensions must be `Clone`; only one taker gets it).
#[derive(Clone)]
pub struct SendFileExt(Arc<std::sync::Mutex<Option<SendFile>>>);

impl SendFileExt {
    fn new(f: SendFile) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(f))))
    }

    pub fn take(&self) -> Option<SendFile> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}
