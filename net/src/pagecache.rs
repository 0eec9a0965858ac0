//! Page-cache residency for files served from async tasks. A read or `sendfile(2)` that has
//! to go to the disk blocks the async worker it runs on, and every connection, transfer, API
//! request and Raft message that worker serves, for the disk's latency (a cold 2 GiB image
//! fetched by many machines after a restart, or the iPXE first stage read by a thousand TFTP
//! clients). `preadv2(RWF_NOWAIT)` reads only what is cached and fails with `EAGAIN` instead
//! of waiting; on `EAGAIN` the bytes are read on the blocking pool instead. A file system
//! without `RWF_NOWAIT` counts as cached (a plain read, the behaviour before these checks).
//!
//! - [`cached`] / [`ensure_cached`]: HTTP boot, before each `sendfile` step.
//! - [`read_at`]: TFTP, for each block.
//!
//! At most [`DISK_READERS`] such reads run at once, process-wide: a storm's clients all miss
//! the cache together, and a blocking task each would start as many threads, each with its
//! buffer, for a disk that serves them no faster (measured: +14 MiB peak RSS for 50 clients
//! of a cold image without the bound).
//!
//! Layer: a leaf; std, rustix and tokio's blocking pool only.

use std::fs::File;
use std::io;

/// Blocking disk reads running at once (see the module header).
pub const DISK_READERS: usize = 8;
static READERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DISK_READERS);

/// Run `read` (disk work: a read, an open, a path lookup) on the blocking pool, at most
/// [`DISK_READERS`] at once.
pub async fn on_blocking_pool<T: Send + 'static>(
    read: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let _permit = READERS.acquire().await.map_err(io::Error::other)?;
    tokio::task::spawn_blocking(read)
        .await
        .map_err(io::Error::other)?
}

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
    let mut buf = vec![0u8; (64 << 10).min(len.max(1))];
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

/// How a read was served: from the page cache on the calling thread, or from the disk on
/// the blocking pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Cached,
    FromDisk,
}

/// Fill `buf[from..]` with `file`'s bytes from `off` on (fewer at the end of the file),
/// without blocking the calling async worker on the disk: what is cached is read at once; if
/// anything is not, the rest is read on the blocking pool. The buffer is moved there and
/// back, so the caller's allocation is kept; it is returned with the number of bytes read
/// into it (from `from`). `buf[..from]` is left as it was (a packet's header, say).
pub async fn read_at(
    file: &std::sync::Arc<File>,
    mut buf: Vec<u8>,
    from: usize,
    off: u64,
) -> io::Result<(Vec<u8>, usize, Served)> {
    let from = from.min(buf.len());
    let len = buf.len() - from;
    let mut filled = 0;
    while filled < len {
        let mut bufs = [io::IoSliceMut::new(&mut buf[from + filled..])];
        let at = off + filled as u64;
        match rustix::io::preadv2(&**file, &mut bufs, at, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => return Ok((buf, filled, Served::Cached)), // end of file
            Ok(n) => filled += n,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => {}
            // No RWF_NOWAIT on this file system (tmpfs, whose pages are memory anyway; an old
            // kernel): a plain read here, as before these checks.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL) => {
                return read_here(file, buf, from, filled, off);
            }
            Err(e) => return Err(e.into()),
        }
    }
    if filled == len {
        return Ok((buf, filled, Served::Cached));
    }
    let f = file.clone();
    on_blocking_pool(move || {
        let (buf, filled, _) = read_here(&f, buf, from, filled, off)?;
        Ok((buf, filled, Served::FromDisk))
    })
    .await
}

/// The rest of [`read_at`]'s read, `filled` bytes in, on this thread (it may block).
fn read_here(
    file: &File,
    mut buf: Vec<u8>,
    from: usize,
    mut filled: usize,
    off: u64,
) -> io::Result<(Vec<u8>, usize, Served)> {
    use std::os::unix::fs::FileExt;
    while from + filled < buf.len() {
        match file.read_at(&mut buf[from + filled..], off + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((buf, filled, Served::Cached))
}

/// Make sure `off..off + len` of `file` is cached before it is sent, reading it in on the
/// blocking pool when it is not.
pub async fn ensure_cached(file: &File, off: u64, len: usize) -> io::Result<()> {
    if cached(file, off, len) {
        return Ok(());
    }
    let f = file.try_clone()?;
    on_blocking_pool(move || warm(&f, off, len)).await
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

    /// A file on disk, written, synced and evicted: its bytes are not in the page cache.
    fn evicted_file(dir: &std::path::Path, bytes: &[u8]) -> File {
        let path = dir.join("undionly.kpxe");
        let mut f = File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(
            !cached(&f, 0, bytes.len()),
            "evicted (is {} on tmpfs?)",
            dir.display()
        );
        f
    }

    /// `read_at` gives the file's bytes whether cached or not: an evicted range is read on the
    /// blocking pool (and said so), the same range again from the cache; a read past the end
    /// is short, and a read at the end is empty.
    #[tokio::test]
    async fn read_at_reads_evicted_bytes_on_the_blocking_pool_and_cached_ones_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let f = std::sync::Arc::new(evicted_file(dir.path(), &bytes));
        let (buf, n, how) = read_at(&f, vec![0; 1468], 0, 100_000).await.unwrap();
        assert_eq!((n, how), (1468, Served::FromDisk));
        assert_eq!(&buf[..n], &bytes[100_000..101_468]);
        let (buf, n, how) = read_at(&f, buf, 0, 100_000).await.unwrap();
        assert_eq!((n, how), (1468, Served::Cached));
        assert_eq!(&buf[..n], &bytes[100_000..101_468]);
        let (buf, n, _) = read_at(&f, buf, 0, 299_000).await.unwrap();
        assert_eq!(&buf[..n], &bytes[299_000..]);
        let (_, n, how) = read_at(&f, buf, 0, 300_000).await.unwrap();
        assert_eq!((n, how), (0, Served::Cached));
    }

    /// Part cached, part not: the cached part is read at once, the rest on the blocking pool,
    /// and the bytes come back whole and in order. (The read is far longer than the disk's
    /// readahead window, 8 MiB here, so the kernel cannot have brought it all in meanwhile.)
    #[tokio::test]
    async fn a_partly_cached_range_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..24u32 << 20).map(|i| (i % 241) as u8).collect();
        let f = std::sync::Arc::new(evicted_file(dir.path(), &bytes));
        warm(&f, 0, 64 << 10).unwrap();
        let (buf, n, how) = read_at(&f, vec![9; 20 << 20], 4, 0).await.unwrap();
        assert_eq!((n, how), ((20 << 20) - 4, Served::FromDisk));
        assert_eq!(&buf[..4], &[9; 4], "the bytes before `from` are kept");
        assert!(buf[4..] == bytes[..(20 << 20) - 4]);
    }

    /// On a file system without `RWF_NOWAIT` (tmpfs, where the storm bench keeps its files)
    /// the read happens in place: sending every block through the blocking pool tripled the
    /// TFTP server's CPU per transfer in the storm bench.
    #[tokio::test]
    async fn without_nowait_support_the_read_is_done_in_place() {
        let shm = std::path::Path::new("/dev/shm");
        if !shm.is_dir() {
            return;
        }
        let dir = tempfile::tempdir_in(shm).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(dir.path().join("f"), &bytes).unwrap();
        let f = std::sync::Arc::new(File::open(dir.path().join("f")).unwrap());
        let (buf, n, how) = read_at(&f, vec![0; 1000], 0, 9_500).await.unwrap();
        assert_eq!((n, how), (500, Served::Cached));
        assert_eq!(&buf[..n], &bytes[9_500..]);
    }
}
