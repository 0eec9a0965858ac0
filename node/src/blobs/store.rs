//! One node's blob store: `DIR/sha256/<hex>` holds verified copies, `DIR/tmp/` uploads in
//! progress. A body is hashed while it is written (memory stays bounded by a few chunks,
//! whatever the size); only a body whose SHA-256 is the digest it claimed is fsynced and
//! renamed into place (then the directory is fsynced), so a file under `sha256/` is always a
//! complete, verified copy, and a crash leaves at most a temporary file, removed at the next
//! start. Reads stream a byte range in chunks from a blocking thread.
//!
//! Copies in flight are held ([`BlobStore::hold`]) so that the sweep of unrecorded copies
//! never removes a copy between its rename and its record.
//!
//! Layer: part of `blobs`; std, tokio, ring and `rackd_types` only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::{Stream, StreamExt};
use rackd_types::Digest;

/// Bytes per chunk read from disk or sent to a peer.
pub const CHUNK: usize = 256 * 1024;
/// Chunks queued between a body and the writer thread (the memory an upload may use).
const QUEUE: usize = 8;

/// Chunks of a blob as they are read, or why reading stopped.
pub type Chunks = std::pin::Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the body's SHA-256 is {actual}, not the {expected} it was sent as: nothing stored")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("the body is larger than this node accepts ({max} bytes): nothing stored")]
    TooLarge { max: u64 },
    #[error("the body ended after {got} of the {declared} bytes it declared: nothing stored")]
    Short { declared: u64, got: u64 },
    #[error("no space left on the node's disk: nothing stored")]
    NoSpace,
    #[error("the body could not be read: {0}")]
    Source(String),
    #[error("blob store: {0}")]
    Io(#[from] std::io::Error),
}

fn io_error(e: std::io::Error) -> BlobError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        BlobError::NoSpace
    } else {
        BlobError::Io(e)
    }
}

/// A node's blob store (cheap to share behind an `Arc`).
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    max_size: u64,
    held: Mutex<HashMap<Digest, usize>>,
    /// One fetch at a time per digest ([`BlobStore::fetch_lock`]).
    fetching: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// The copies known good since this process started, by what their file looked like
    /// when they were written or last hashed ([`BlobStore::check`]).
    known_good: Mutex<HashMap<Digest, FileId>>,
    /// When each copy was last hashed (or written) by this process: the periodic scrub
    /// hashes again what has not been for a while, since rot on disk changes no file time.
    hashed_at: Mutex<HashMap<Digest, std::time::Instant>>,
}

/// What identifies one version of a file: a copy rewritten or replaced gets another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    inode: u64,
    len: u64,
    modified: SystemTime,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            inode: m.ino(),
            len: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// Keeps the sweep away from one digest while it lives ([`BlobStore::hold`]).
pub struct Hold {
    store: Arc<BlobStore>,
    digest: Digest,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut h = self.store.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = h.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                h.remove(&self.digest);
            }
        }
    }
}

impl BlobStore {
    /// Open (creating) the store under `dir`; temporary files of interrupted uploads are
    /// removed. Bodies larger than `max_size` are refused.
    pub fn open(dir: &Path, max_size: u64) -> std::io::Result<Arc<BlobStore>> {
        let blobs = dir.join("sha256");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&blobs)?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Arc::new(BlobStore {
            blobs,
            tmp,
            max_size,
            held: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            known_good: Mutex::new(HashMap::new()),
            hashed_at: Mutex::new(HashMap::new()),
        }))
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The directory of verified copies: a copy's file name is its digest's hex.
    pub fn dir(&self) -> &Path {
        &self.blobs
    }

    /// The lock whoever fetches `d` holds, so that a boot storm asking a location node for
    /// an artifact it lacks starts one transfer, not one per machine.
    pub fn fetch_lock(&self, d: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut f = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|_, l| Arc::strong_count(l) > 1);
        f.entry(d.clone()).or_default().clone()
    }

    /// Mark the copy of `d` as used now (the cache evicts the least recently used first).
    pub fn touch(&self, d: &Digest) {
        let Ok(f) = File::options().write(true).open(self.path(d)) else {
            return;
        };
        let before = f.metadata().ok().map(|m| FileId::of(&m));
        if f.set_modified(SystemTime::now()).is_err() {
            return;
        }
        // Still the version known good: it stays known good with its new time.
        let mut k = self.known_good.lock().unwrap_or_else(|p| p.into_inner());
        if before.is_some() && k.get(d) == before.as_ref() {
            if let Ok(m) = f.metadata() {
                k.insert(d.clone(), FileId::of(&m));
            }
        }
    }

    fn remember_good(&self, d: &Digest) {
        self.hashed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.clone(), std::time::Instant::now());
        if let Ok(m) = std::fs::metadata(self.path(d)) {
            self.known_good
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(d.clone(), FileId::of(&m));
        }
    }

    /// Whether the local copy of `d` is sound: known good as it is (written or hashed by this
    /// process, unchanged since), or hashed now (blocking; the whole file). A copy that is not
    /// is removed (`Ok(false)`), so that it is fetched again and never served.
    pub fn check(&self, d: &Digest) -> std::io::Result<bool> {
        let m = std::fs::metadata(self.path(d))?;
        let known = self
            .known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .copied();
        if known == Some(FileId::of(&m)) {
            return Ok(true);
        }
        if self.verify(d)? {
            self.remember_good(d);
            return Ok(true);
        }
        self.known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(d);
        self.remove(d)?;
        Ok(false)
    }

    /// Hash the copy of `d` again whatever is known of it (the periodic scrub); a copy that
    /// does not match is removed (`Ok(false)`).
    pub fn rehash(&self, d: &Digest) -> std::io::Result<bool> {
        self.known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(d);
        self.check(d)
    }

    /// Whether this process has not hashed (or written) the copy of `d` within `age`.
    pub fn hashed_before(&self, d: &Digest, age: std::time::Duration) -> bool {
        self.hashed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            .is_none_or(|t| t.elapsed() >= age)
    }

    /// Whether the copy of `d` was checked by this process (and is unchanged since).
    pub fn is_known_good(&self, d: &Digest) -> bool {
        let Ok(m) = std::fs::metadata(self.path(d)) else {
            return false;
        };
        self.known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            == Some(&FileId::of(&m))
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Keep the sweep away from `d` until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, d: &Digest) -> Hold {
        *self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(d.clone())
            .or_insert(0) += 1;
        Hold {
            store: self.clone(),
            digest: d.clone(),
        }
    }

    pub fn is_held(&self, d: &Digest) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(d)
    }

    /// The size of the local copy of `d`, if there is one.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Every local copy: digest, size, modification time. Names that are no digest are
    /// skipped.
    pub fn list(&self) -> std::io::Result<Vec<(Digest, u64, SystemTime)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.blobs)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(d) = Digest::parse(&format!("{}{name}", rackd_types::blob::DIGEST_PREFIX))
            else {
                continue;
            };
            let m = e.metadata()?;
            if m.is_file() {
                out.push((d, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        Ok(out)
    }

    /// Remove the local copy of `d` (absent is fine).
    pub fn remove(&self, d: &Digest) -> std::io::Result<()> {
        self.known_good
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(d);
        match std::fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Store `body` as `digest`: hashed while written, kept only if it matches. `declared`
    /// is the body's announced length, if any (refused up front when beyond the cap, and a
    /// body that ends early is refused). Returns the size stored.
    pub async fn receive<S, E>(
        self: &Arc<Self>,
        digest: &Digest,
        declared: Option<u64>,
        body: S,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<E, String>> + Send,
        E: AsRef<[u8]> + Send + 'static,
    {
        if let Some(n) = declared {
            if n > self.max_size {
                return Err(BlobError::TooLarge { max: self.max_size });
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<E>(QUEUE);
        let store = self.clone();
        let d = digest.clone();
        let writer = tokio::task::spawn_blocking(move || store.write(&d, declared, rx));
        let mut body = std::pin::pin!(body);
        let mut failed = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    // Waits only when the writer is QUEUE chunks behind; a closed channel
                    // means the writer stopped (its result says why).
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(tx);
        if let Some(e) = failed {
            // The writer sees the channel close early; whatever it did is discarded.
            let _ = writer.await;
            return Err(BlobError::Source(e));
        }
        writer
            .await
            .map_err(|e| BlobError::Source(format!("blob writer: {e}")))?
    }

    /// The writer thread of [`BlobStore::receive`].
    fn write<E: AsRef<[u8]>>(
        &self,
        digest: &Digest,
        declared: Option<u64>,
        mut rx: tokio::sync::mpsc::Receiver<E>,
    ) -> Result<u64, BlobError> {
        let tmp = self
            .tmp
            .join(format!("{}.{:016x}", digest.hex(), rand::random::<u64>()));
        let result = (|| {
            let mut f = File::create(&tmp).map_err(io_error)?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut len = 0u64;
            while let Some(c) = rx.blocking_recv() {
                let c = c.as_ref();
                len += c.len() as u64;
                if len > self.max_size {
                    return Err(BlobError::TooLarge { max: self.max_size });
                }
                ctx.update(c);
                f.write_all(c).map_err(io_error)?;
            }
            if let Some(n) = declared {
                if len != n {
                    return Err(BlobError::Short {
                        declared: n,
                        got: len,
                    });
                }
            }
            let actual = finish(ctx);
            if &actual != digest {
                return Err(BlobError::Mismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
            f.sync_all().map_err(io_error)?;
            std::fs::rename(&tmp, self.path(digest)).map_err(io_error)?;
            File::open(&self.blobs)?.sync_all()?;
            self.remember_good(digest);
            Ok(len)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Stream `len` bytes of the local copy of `d` from `offset` (clamped to its end);
    /// `Ok(None)` when there is no copy.
    pub fn read(&self, d: &Digest, offset: u64, len: u64) -> std::io::Result<Option<Chunks>> {
        let mut f = match File::open(self.path(d)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = f.metadata()?.len();
        let start = offset.min(size);
        let mut left = len.min(size - start);
        f.seek(SeekFrom::Start(start))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(4);
        tokio::task::spawn_blocking(move || {
            while left > 0 {
                let mut buf = vec![0u8; (left as usize).min(CHUNK)];
                let r = f.read_exact(&mut buf).map_err(|e| e.to_string());
                let failed = r.is_err();
                if tx.blocking_send(r.map(|_| buf)).is_err() || failed {
                    return;
                }
                left -= (left).min(CHUNK as u64);
            }
        });
        Ok(Some(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async { rx.recv().await.map(|c| (c, rx)) },
        ))))
    }

    /// Hash the local copy of `d` again: whether it is still what its name says (blocking).
    pub fn verify(&self, d: &Digest) -> std::io::Result<bool> {
        let mut f = File::open(self.path(d))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(&finish(ctx) == d)
    }
}

/// The digest a SHA-256 context has computed.
pub fn finish(ctx: ring::digest::Context) -> Digest {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(ctx.finish().as_ref());
    Digest::from_sha256(&raw)
}

/// The SHA-256 digest of `bytes` (tests, small bodies).
pub fn digest_of(bytes: &[u8]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(bytes);
    finish(ctx)
}

impl rackd_raft::network::BlobSource for BlobStore {
    fn read_blob(
        &self,
        req: &rackd_raft::network::FetchBlobRequest,
    ) -> Result<Option<rackd_raft::network::BlobChunks>, String> {
        let d = Digest::parse(&req.digest)?;
        // A copy that is not sound is removed, never sent (the asker tries another holder).
        match self.check(&d) {
            Ok(true) => self
                .read(&d, req.offset, req.len)
                .map_err(|e| e.to_string()),
            Ok(false) => {
                tracing::warn!(digest = %d, "a damaged copy was removed instead of sent");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Vec<u8>, String>> + Send {
        futures::stream::iter(parts.into_iter().map(Ok))
    }

    async fn collect(c: Chunks) -> Vec<u8> {
        let parts: Vec<_> = c.collect().await;
        parts.into_iter().flat_map(|p| p.unwrap()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_body_matching_its_digest_is_kept_and_ranges_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 10 << 20).unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i * 7 % 251) as u8).collect();
        let d = digest_of(&data);
        let parts: Vec<Vec<u8>> = data.chunks(100_000).map(<[u8]>::to_vec).collect();
        // The wrong digest: refused, nothing left behind.
        let wrong = digest_of(b"other");
        let e = s
            .receive(&wrong, None, body(parts.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::Mismatch { .. }), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        // A body shorter than declared, or failing midway: refused.
        let e = s
            .receive(&d, Some(data.len() as u64 + 1), body(parts.clone()))
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::Short { .. }), "{e}");
        let failing = futures::stream::iter(vec![Ok(vec![1u8; 10]), Err("reset".to_string())]);
        let e = s.receive(&d, None, failing).await.unwrap_err();
        assert!(matches!(e, BlobError::Source(_)), "{e}");
        assert!(s.size(&d).is_none());
        // The right one is kept and reads back whole and by range.
        let n = s
            .receive(&d, Some(data.len() as u64), body(parts))
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(s.size(&d), Some(n));
        assert!(s.verify(&d).unwrap());
        assert_eq!(
            collect(s.read(&d, 0, u64::MAX).unwrap().unwrap()).await,
            data
        );
        let r = collect(
            s.read(&d, CHUNK as u64 - 5, CHUNK as u64 + 9)
                .unwrap()
                .unwrap(),
        )
        .await;
        assert_eq!(r, data[CHUNK - 5..2 * CHUNK + 4]);
        assert!(collect(s.read(&d, n + 10, 5).unwrap().unwrap())
            .await
            .is_empty());
        assert!(s.read(&wrong, 0, 1).unwrap().is_none());
        assert_eq!(s.list().unwrap().len(), 1);
        // Known good as written; touched, still known good.
        assert!(s.is_known_good(&d));
        s.touch(&d);
        assert!(s.is_known_good(&d));
        assert!(s.check(&d).unwrap());
        // A copy damaged on disk (in place: same inode) no longer verifies, is no longer
        // known good, and a check removes it.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("sha256").join(d.hex()))
            .unwrap();
        f.write_all(b"rot").unwrap();
        drop(f);
        assert!(!s.verify(&d).unwrap());
        assert!(!s.is_known_good(&d));
        assert!(!s.check(&d).unwrap());
        assert!(s.size(&d).is_none());
        // A sound copy this process did not write is hashed once, then known good.
        std::fs::write(dir.path().join("sha256").join(d.hex()), &data).unwrap();
        assert!(!s.is_known_good(&d));
        assert!(s.check(&d).unwrap());
        assert!(s.is_known_good(&d));
        // Rot that changes no file time (as on a failing disk) escapes the known-good
        // check; the periodic rehash finds it.
        {
            let p = dir.path().join("sha256").join(d.hex());
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all(b"rot").unwrap();
            f.set_modified(t).unwrap();
        }
        assert!(s.is_known_good(&d), "same inode, length and time");
        assert!(!s.hashed_before(&d, std::time::Duration::from_secs(3600)));
        assert!(s.hashed_before(&d, std::time::Duration::ZERO));
        assert!(!s.rehash(&d).unwrap());
        assert!(s.size(&d).is_none());
        std::fs::write(dir.path().join("sha256").join(d.hex()), b"rot").unwrap();
        s.remove(&d).unwrap();
        s.remove(&d).unwrap();
        assert!(s.list().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_beyond_the_cap_are_refused_declared_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 1000).unwrap();
        let data = vec![5u8; 1001];
        let d = digest_of(&data);
        let e = s.receive(&d, Some(1001), body(vec![])).await.unwrap_err();
        assert!(matches!(e, BlobError::TooLarge { max: 1000 }), "{e}");
        let e = s
            .receive(
                &d,
                None,
                body(vec![data[..600].to_vec(), data[600..].to_vec()]),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, BlobError::TooLarge { max: 1000 }), "{e}");
        assert!(s.list().unwrap().is_empty());
        // An interrupted upload's temporary file is gone at the next open.
        std::fs::write(dir.path().join("tmp").join("x"), b"partial").unwrap();
        let _ = BlobStore::open(dir.path(), 1000).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn holds_count_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path(), 1000).unwrap();
        let d = digest_of(b"x");
        let a = s.hold(&d);
        let b = s.hold(&d);
        drop(a);
        assert!(s.is_held(&d));
        drop(b);
        assert!(!s.is_held(&d));
    }
}
