//! Page-cache residency for `sendfile`. `sendfile(2)` runs on the async worker threads, and a
//! page it has to read from disk blocks that worker, and every connection, API request and
//! Raft message it serves, for the disk's latency (a cold 2 GiB image fetched by many machines
//! after a restart). Before each step the connection loop asks whether the step's bytes are
//! cached: `preadv2(RWF_NOWAIT)` fails with `EAGAIN` instead of reading. If they are not,
//! they are read in on the blocking pool first, so that sendfile finds them in memory. A file
//! system without `RWF_NOWAIT` counts as cached (the behaviour before this check).
//!
//! Layer: a leaf of `services::http_boot`.

use std::fs::File;
use std::io;

/// Whether `file`'s bytes `off..off + len` look cached: a byte at their start, middle and end
/// can be read without waiting for the disk.
pub fn cached(file: &File, off: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let last = off + len as u64 - 1;
    [off, off + (len as u64) / 2, last].into_iter().all(|at| {
        let mut b = [0u8; 1];
        let mut bufs = [io::IoSliceMut::new(&mut b)];
        match rustix::io::preadv2(file, &mut bufs, at, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(_) => true,
            Err(e) => e != rustix::io::Errno::AGAIN,
        }
    })
}

/// Read `off..off + len` of `file` into the page cache. Blocks: call on the blocking pool.
pub fn warm(file: &File, off: u64, len: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let _ = rustix::fs::fadvise(
        file,
        off,
        std::num::NonZeroU64::new(len as u64),
        rustix::fs::Advice::WillNeed,
    );
    let mut buf = vec![0u8; (256 << 10).min(len.max(1))];
    let mut done = 0;
    while done < len {
        let want = buf.len().min(len - done);
        match file.read_at(&mut buf[..want], off + done as u64)? {
            0 => break, // end of file
            n => done += n,
        }
    }
    Ok(())
}

/// Make sure `off..off + len` of `file` is cached before it is sent, reading it in on the
/// blocking pool when it is not.
pub async fn ensure_cached(file: &File, off: u64, len: usize) -> io::Result<()> {
    if cached(file, off, len) {
        return Ok(());
    }
    let f = file.try_clone()?;
    tokio::task::spawn_blocking(move || warm(&f, off, len))
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file evicted from the page cache (on a disk-backed file system: tmpfs pages cannot
    /// be evicted) is seen as not cached, and is cached after `ensure_cached`.
    #[tokio::test]
    async fn an_evicted_range_is_read_in_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.img");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 4 << 20]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        assert!(cached(&f, 0, 1 << 20), "just written");
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(
            !cached(&f, 0, 1 << 20),
            "evicted (is {} on tmpfs?)",
            dir.path().display()
        );
        ensure_cached(&f, 0, 1 << 20).await.unwrap();
        assert!(cached(&f, 0, 1 << 20));
        assert!(cached(&f, 0, 0));
    }
}
