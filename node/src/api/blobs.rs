//! Blob endpoints: content-addressed artifacts streamed in and out of the cluster.
//!
//! `PUT /v1/blobs/{digest}` is never forwarded to the leader: the node that receives the body
//! hashes it while writing it to its own store (memory bounded whatever the size), keeps it
//! only if it matches the digest, records itself as a holder, and answers once enough voters
//! hold a copy ([`crate::blobs::copies_wanted`]; the other voters copy it from a holder over
//! the peer transport). `GET` streams this node's copy, or a holder's through this node, with
//! `Range` support; a full body is verified as it streams and cut off if it does not match.
//!
//! Layer: part of `api`; uses `blobs` (the local store) and the cluster trait.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use futures::StreamExt;
use rackd_net::http::file::{plan, FileMeta, Plan, Request as RangeRequest};
use rackd_raft::cmd::Command;
use rackd_types::{ApiError, Blob, Digest, ErrorCode, ListQuery, Page};

use super::inventory::{page_params_with, query, read_barrier};
use super::{idempotency_key, Actor, AppState, HttpError, HttpResult};
use crate::blobs::{copies_wanted, voter_copies, BlobError};

fn parse_digest(s: &str) -> HttpResult<Digest> {
    Digest::parse(s).map_err(|e| HttpError(ApiError::invalid(e)))
}

fn blob_error(e: BlobError) -> HttpError {
    let code = match &e {
        BlobError::Mismatch { .. } | BlobError::Short { .. } | BlobError::Source(_) => {
            ErrorCode::InvalidRequest
        }
        BlobError::TooLarge { .. } => ErrorCode::TooLarge,
        BlobError::NoSpace => ErrorCode::InsufficientStorage,
        BlobError::Io(_) => ErrorCode::Internal,
    };
    HttpError(ApiError::new(code, e.to_string()))
}

pub async fn list_blobs(
    State(node): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> HttpResult<Json<Page<Blob>>> {
    let q = query(q)?;
    let (cursor, limit) = page_params_with(&q, |c| parse_digest(c).map(String::from))?;
    read_barrier(&node, q.stale).await?;
    let st = node.state();
    let mut items = Vec::new();
    let mut next_cursor = None;
    for (_, b) in st.blobs.range_after(cursor.as_ref()) {
        if items.len() == limit {
            next_cursor = items.last().map(|b: &Blob| b.digest.to_string());
            break;
        }
        items.push(b.clone());
    }
    Ok(Json(Page { items, next_cursor }))
}

/// How long an upload waits for the other voters' copies: the write timeout, plus time to
/// copy the blob at a modest 20 MiB/s.
fn replication_wait(node: &AppState, size: u64) -> Duration {
    node.write_timeout() + Duration::from_secs(10 + size / (20 << 20))
}

pub async fn put_blob(
    State(node): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<(StatusCode, Json<Blob>)> {
    let digest = parse_digest(&digest)?;
    let me = node.id();
    let record = Command::RecordBlob {
        digest: digest.clone(),
        size: 0,
        node: me,
    };
    node.state().admits_proposal(&record)?;
    let store = node.blobs.clone();
    let _hold = store.hold(&digest);
    let size = match store.size(&digest) {
        // A copy is here already (a retried upload): the body is read and dropped (a
        // client still sending would otherwise see its connection reset, not the answer).
        Some(n) => {
            let mut rest = body.into_data_stream();
            while let Some(Ok(_)) = rest.next().await {}
            n
        }
        None => {
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let chunks = body
                .into_data_stream()
                .map(|c| c.map_err(|e| format!("upload interrupted: {e}")));
            store
                .receive(&digest, declared, chunks)
                .await
                .map_err(blob_error)?
        }
    };
    let cmd = Command::RecordBlob {
        digest: digest.clone(),
        size,
        node: me,
    };
    // Recorded in this node's own name (it may say so over the peer transport when it is
    // not the leader); the journal names the node that holds the copy.
    node.propose_anywhere(&format!("node:{me}"), None, cmd)
        .await?;
    let deadline = tokio::time::Instant::now() + replication_wait(&node, size);
    loop {
        let st = node.state();
        let voters = node.status().voters;
        if let Some(b) = st.blob(&digest) {
            if b.holders.contains(&me) && voter_copies(b, &voters) >= copies_wanted(voters.len()) {
                return Ok((StatusCode::CREATED, Json(b.clone())));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let holders = st
                .blob(&digest)
                .map(|b| b.holders.clone())
                .unwrap_or_default();
            return Err(HttpError(ApiError::unavailable(format!(
                "blob {digest} is stored on node {me}, but not yet on {} voters (holders: \
                 {holders:?}); the copy continues: GET /v1/blobs shows it, or retry the same \
                 PUT (the body is not stored twice)",
                copies_wanted(voters.len())
            ))));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

pub async fn get_blob(
    State(node): State<AppState>,
    Path(digest): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let digest = parse_digest(&digest)?;
    let local = match node.blobs.size(&digest) {
        // A copy this process has not checked is hashed first (once); a damaged one is
        // removed and the blob served from a holder.
        Some(n) if !node.blobs.is_known_good(&digest) => {
            let (s, d) = (node.blobs.clone(), digest.clone());
            match tokio::task::spawn_blocking(move || s.check(&d)).await {
                Ok(Ok(true)) => Some(n),
                _ => None,
            }
        }
        other => other,
    };
    let record = match node.state().blob(&digest).cloned() {
        Some(b) => Some(b),
        None if local.is_none() => {
            node.linearize().await?;
            node.state().blob(&digest).cloned()
        }
        None => None,
    };
    let (size, created_at) = match (local, &record) {
        (Some(n), r) => (n, r.as_ref().map_or(0, |b| b.created_at)),
        (None, Some(b)) => (b.size, b.created_at),
        (None, None) => {
            return Err(HttpError(ApiError::not_found(format!(
                "blob {digest} not found"
            ))))
        }
    };
    let meta = FileMeta {
        len: size,
        modified: std::time::UNIX_EPOCH + Duration::from_secs(created_at / 1000),
        etag: format!("\"{digest}\""),
    };
    let req = RangeRequest {
        head: method == Method::HEAD,
        range: header_str(&headers, header::RANGE),
        if_range: header_str(&headers, header::IF_RANGE),
        if_match: header_str(&headers, header::IF_MATCH),
        if_none_match: header_str(&headers, header::IF_NONE_MATCH),
        if_modified_since: header_str(&headers, header::IF_MODIFIED_SINCE),
        if_unmodified_since: header_str(&headers, header::IF_UNMODIFIED_SINCE),
    };
    let p = plan(&meta, &req);
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::from_u16(p.status()).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).expect("validators are ASCII");
    h.insert(header::ETAG, value(&meta.etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    if let Some(cr) = p.content_range(size) {
        h.insert(header::CONTENT_RANGE, value(&cr));
    }
    let Some((start, len)) = p.body(size) else {
        let n = if p == Plan::NotModified { size } else { 0 };
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return Ok(resp);
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if req.head || len == 0 {
        return Ok(resp);
    }
    let chunks = match node.blobs.read(&digest, start, len) {
        Ok(Some(c)) => c,
        Ok(None) | Err(_) => from_holders(&node, record.as_ref(), &digest, start, len).await?,
    };
    // A whole body is hashed as it goes and cut off (an error, not a clean end) if it is not
    // the blob it claims to be; a range cannot be checked and is the client's to verify.
    let chunks = if start == 0 && len == size {
        crate::blobs::verified(digest, chunks)
    } else {
        chunks
    };
    *resp.body_mut() =
        Body::from_stream(chunks.map(|c| c.map(Bytes::from).map_err(std::io::Error::other)));
    Ok(resp)
}

/// Open the range from the first holder (voters first) that answers.
async fn from_holders(
    node: &AppState,
    record: Option<&Blob>,
    digest: &Digest,
    start: u64,
    len: u64,
) -> HttpResult<crate::blobs::Chunks> {
    let voters = node.status().voters;
    let mut holders: Vec<u64> = record
        .map(|b| b.holders.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|h| *h != node.id())
        .collect();
    holders.sort_by_key(|h| (!voters.contains(h), *h));
    let mut errors = Vec::new();
    for h in holders {
        match node.fetch_blob(h, digest, start, len).await {
            Ok(c) => return Ok(c),
            Err(e) => errors.push(format!("node {h}: {}", e.message)),
        }
    }
    Err(HttpError(ApiError::unavailable(format!(
        "no holder of blob {digest} answered: {}",
        if errors.is_empty() {
            "it has no holder".to_string()
        } else {
            errors.join("; ")
        }
    ))))
}

pub async fn delete_blob(
    State(node): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    let digest = parse_digest(&digest)?;
    node.propose(
        &actor.0,
        idempotency_key(&headers, &actor)?,
        Command::ForgetBlob { digest },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
