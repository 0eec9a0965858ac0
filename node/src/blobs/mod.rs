//! Content-addressed artifacts (kernels, initrds, root filesystems) stored by their SHA-256
//! outside the Raft log. [`store`] keeps one node's verified copies on disk; the replicated
//! record of who holds what is `rackd_raft::state::State::blobs`; the API streams uploads into
//! the store (`api::blobs`) and `services::blobs` copies each blob to a second voter, records
//! holders that lost their copy and removes copies of forgotten blobs.
//!
//! Layer: a leaf of the node (std, tokio, ring and `rackd_types` only): never imports `api`,
//! `cluster` or `services`.

pub mod store;

pub use store::{BlobError, BlobStore, Chunks};

use std::collections::BTreeSet;

use futures::StreamExt;
use rackd_types::{Blob, Digest};

/// How many voters must hold a copy of every blob: two, or every voter when fewer.
pub fn copies_wanted(voters: usize) -> usize {
    voters.min(2)
}

/// How many of `voters` hold a copy of `b`.
pub fn voter_copies(b: &Blob, voters: &BTreeSet<u64>) -> usize {
    b.holders.iter().filter(|h| voters.contains(h)).count()
}

/// `chunks` hashed as they pass: if the whole did not hash to `digest`, the stream ends with
/// an error instead of a clean end (the receiver sees a broken transfer, never a wrong blob).
pub fn verified(digest: Digest, chunks: Chunks) -> Chunks {
    struct Pass {
        inner: Chunks,
        ctx: Option<ring::digest::Context>,
        digest: Digest,
    }
    let pass = Pass {
        inner: chunks,
        ctx: Some(ring::digest::Context::new(&ring::digest::SHA256)),
        digest,
    };
    Box::pin(futures::stream::unfold(pass, |mut p| async move {
        let ctx = p.ctx.as_mut()?;
        match p.inner.next().await {
            Some(Ok(c)) => {
                ctx.update(&c);
                Some((Ok(c), p))
            }
            Some(Err(e)) => {
                p.ctx = None;
                Some((Err(e), p))
            }
            None => {
                let actual = store::finish(p.ctx.take()?);
                if actual == p.digest {
                    None
                } else {
                    let e = format!(
                        "the bytes of {} hash to {actual}: transfer cut off",
                        p.digest
                    );
                    Some((Err(e), p))
                }
            }
        }
    }))
}

/// `chunks`, ended with an error when no chunk arrives for `idle` (a stalled peer).
pub fn with_idle_timeout(chunks: Chunks, idle: std::time::Duration) -> Chunks {
    Box::pin(futures::stream::unfold(
        Some(chunks),
        move |state| async move {
            let mut c = state?;
            match tokio::time::timeout(idle, c.next()).await {
                Ok(Some(item)) => Some((item, Some(c))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(format!("no data for {idle:?}: transfer given up")),
                    None,
                )),
            }
        },
    ))
}
