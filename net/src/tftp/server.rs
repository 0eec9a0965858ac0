//! The TFTP server's I/O shell: one UDP socket for requests, one ephemeral socket per transfer
//! (RFC 1350 transfer ids), driving [`ReadTransfer`]. Read-only; every path is resolved inside
//! the root (no `..`, no absolute escape, no symlink pointing outside). Malformed packets are
//! dropped and counted. Nothing here waits on the disk on an async worker: a request's path
//! is resolved and its file opened on the blocking pool, and a block not in the page cache is
//! read there too ([`crate::pagecache`]), so a cold disk slows the transfers that need it and
//! not the request loop, the other transfers or the rest of the node. At most
//! `Limits::max_transfers` transfers are open, and `Limits::max_per_client` per client
//! address; a request beyond either is dropped and counted (`busy`), and its client retries.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::proto::{self, code, Packet, MAX_PACKET};
use super::transfer::{Limits, Output, ReadTransfer};
use crate::pagecache;

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct TftpStats {
    pub requests: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    pub malformed: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Requests dropped because the server, or their client, had its limit of transfers open
    /// (`Limits::max_transfers`, `Limits::max_per_client`); the client retries.
    pub busy: AtomicU64,
    /// Blocks that were not in the page cache, read on the blocking pool.
    pub blocks_from_disk: AtomicU64,
}

impl TftpStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path leaves the TFTP root")]
    Escape,
    #[error("file not found")]
    NotFound,
}

/// Resolve a requested file name inside `root` (which must be canonical).
pub fn resolve(root: &Path, name: &str) -> Result<PathBuf, PathError> {
    // PXE clients sometimes send DOS separators.
    let name = name.replace('\\', "/");
    let mut rel = PathBuf::new();
    for c in Path::new(name.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Escape)
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(PathError::NotFound);
    }
    let full = root.join(rel);
    let canon = full.canonicalize().map_err(|_| PathError::NotFound)?;
    if !canon.starts_with(root) {
        return Err(PathError::Escape);
    }
    if !canon.is_file() {
        return Err(PathError::NotFound);
    }
    Ok(canon)
}

/// A requested file, opened (on the blocking pool: resolving and opening touch the disk).
enum Opened {
    /// Outside the root, missing, or not a file: refused from the request port.
    Refused(PathError),
    /// Resolved but not openable (gone meanwhile, or no permission): an error packet from
    /// the transfer's port.
    Unreadable(std::io::Error),
    Ready(Arc<std::fs::File>, u64),
}

/// Resolve `name` inside `root` and open it. Blocks: call on the blocking pool.
fn open_in_root(root: &Path, name: &str) -> Opened {
    let path = match resolve(root, name) {
        Ok(p) => p,
        Err(e) => return Opened::Refused(e),
    };
    match std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f))) {
        Ok((len, f)) => Opened::Ready(Arc::new(f), len),
        Err(e) => Opened::Unreadable(e),
    }
}

pub struct TftpServer {
    socket: Arc<UdpSocket>,
    root: PathBuf,
    limits: Limits,
    stats: Arc<TftpStats>,
}

impl TftpServer {
    pub async fn bind(listen: SocketAddr, root: &Path, limits: Limits) -> std::io::Result<Self> {
        let root = root.canonicalize()?;
        let socket = UdpSocket::bind(listen).await?;
        let rcvbuf = crate::sockbuf::enlarge_receive_buffer(&socket, crate::sockbuf::STORM_RCVBUF);
        tracing::debug!(rcvbuf, "TFTP request socket receive buffer");
        Ok(Self {
            socket: Arc::new(socket),
            root,
            limits,
            stats: Arc::new(TftpStats::default()),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn stats(&self) -> Arc<TftpStats> {
        self.stats.clone()
    }

    /// Serve until the task is dropped. The server owns its transfers: dropping it (the
    /// node's services stopping) ends every transfer in progress too, sockets included.
    pub async fn run(self) -> std::io::Result<()> {
        let local_ip = self.socket.local_addr()?.ip();
        let mut buf = vec![0u8; MAX_PACKET + 1];
        let mut transfers = tokio::task::JoinSet::new();
        let clients = Arc::new(crate::per_source::PerSource::default());
        loop {
            while transfers.try_join_next().is_some() {}
            let (n, peer) = match self.socket.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "tftp recv error");
                    continue;
                }
            };
            let packet = match proto::decode(&buf[..n]) {
                Ok(p) => p,
                Err(e) => {
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "dropped malformed tftp packet");
                    continue;
                }
            };
            match packet {
                Packet::Rrq {
                    filename,
                    mode,
                    options,
                } => {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let reply_err = move |code: u16, msg: &str| Packet::Error {
                        code,
                        message: msg.to_string(),
                    };
                    if mode != "octet" && mode != "netascii" {
                        self.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = self
                            .socket
                            .send_to(
                                &reply_err(code::ILLEGAL_OPERATION, "unsupported mode").to_bytes(),
                                peer,
                            )
                            .await;
                        continue;
                    }
                    // Over the server's or this client's bound: dropped (the client retries
                    // after its timeout), so one host cannot hold every socket of the node.
                    let slot = (transfers.len() < self.limits.max_transfers.max(1))
                        .then(|| clients.take(peer.ip(), self.limits.max_per_client.max(1)))
                        .flatten();
                    let Some(slot) = slot else {
                        self.stats.busy.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "tftp request dropped: too many transfers");
                        continue;
                    };
                    let (root, requests) = (self.root.clone(), self.socket.clone());
                    let limits = self.limits.clone();
                    let stats = self.stats.clone();
                    transfers.spawn(async move {
                        let _slot = slot;
                        let name = filename.clone();
                        // On the blocking pool, a bounded number at once: a storm's thousand
                        // requests must not start a thread each.
                        let opened =
                            pagecache::on_blocking_pool(move || Ok(open_in_root(&root, &name)))
                                .await
                                .unwrap_or_else(Opened::Unreadable);
                        let file = match opened {
                            Opened::Refused(e) => {
                                stats.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(%peer, file = %filename, error = %e, "tftp request refused");
                                let c = if e == PathError::Escape {
                                    code::ACCESS_VIOLATION
                                } else {
                                    code::FILE_NOT_FOUND
                                };
                                let _ = requests
                                    .send_to(&reply_err(c, &e.to_string()).to_bytes(), peer)
                                    .await;
                                return;
                            }
                            Opened::Unreadable(e) => Err(e),
                            Opened::Ready(f, len) => Ok((f, len)),
                        };
                        tracing::info!(%peer, file = %filename, "tftp read request");
                        match serve_read(local_ip, peer, &filename, file, &options, &limits, &stats)
                            .await
                        {
                            Ok(true) => {
                                stats.completed.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(%peer, error = %e, "tftp transfer failed");
                            }
                        }
                    });
                }
                Packet::Wrq { .. } => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    let p = Packet::Error {
                        code: code::ACCESS_VIOLATION,
                        message: "read-only server".into(),
                    };
                    let _ = self.socket.send_to(&p.to_bytes(), peer).await;
                }
                _ => {
                    // DATA/ACK/ERROR/OACK to the request port: not part of any transfer.
                    self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Largest datagram a client sends during a read transfer that we read whole.
const CLIENT_PACKET_MAX: usize = 1024;

/// Run one read transfer of `file` (opened, with its length, or why it could not be) on its
/// own socket. `Ok(true)` when the client got the whole file.
async fn serve_read(
    local_ip: std::net::IpAddr,
    peer: SocketAddr,
    name: &str,
    file: std::io::Result<(Arc<std::fs::File>, u64)>,
    options: &[(String, String)],
    limits: &Limits,
    stats: &TftpStats,
) -> std::io::Result<bool> {
    let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    sock.connect(peer).await?;
    // A file resolved but not openable (gone meanwhile, no permission): the client gets an
    // error packet from the transfer's port rather than silence until its timeout.
    let (file, len) = match file {
        Ok(x) => x,
        Err(e) => {
            let (c, message) = match e.kind() {
                std::io::ErrorKind::PermissionDenied => (code::ACCESS_VIOLATION, "access denied"),
                _ => (code::FILE_NOT_FOUND, "file not found"),
            };
            let p = Packet::Error {
                code: c,
                message: message.into(),
            };
            let _ = sock.send(&p.to_bytes()).await;
            tracing::info!(%peer, file = %name, error = %e, "tftp file cannot be opened");
            return Ok(false);
        }
    };
    let (mut t, out) = ReadTransfer::start(Instant::now(), len, options, limits);
    let mut pkt = Vec::with_capacity(4 + t.blksize() as usize);
    // A client sends ACKs and ERRORs only (4 bytes plus a message): a small buffer keeps a
    // storm's thousand concurrent transfers from costing 64 KiB each. Longer datagrams are
    // truncated and then fail to decode, as they would as a whole.
    let mut recv = vec![0u8; CLIENT_PACKET_MAX];
    let mut result = perform(&sock, &file, out, &mut pkt, stats).await?;
    // One timer per transfer, moved to each new deadline (not a new timer per packet).
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(t.deadline()));
    tokio::pin!(timer);
    while result.is_none() {
        let deadline = tokio::time::Instant::from_std(t.deadline());
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let out = tokio::select! {
            r = sock.recv(&mut recv) => match r {
                Ok(n) => match proto::decode(&recv[..n]) {
                    Ok(p) => t.on_packet(Instant::now(), &p),
                    Err(_) => {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        vec![]
                    }
                },
                // ICMP port unreachable: the client is gone.
                Err(_) => return Ok(false),
            },
            _ = &mut timer => t.on_timeout(Instant::now()),
        };
        result = perform(&sock, &file, out, &mut pkt, stats).await?;
    }
    Ok(result == Some(true))
}

/// Execute outputs; `Some(done_ok)` when the transfer ended.
async fn perform(
    sock: &UdpSocket,
    file: &Arc<std::fs::File>,
    out: Vec<Output>,
    pkt: &mut Vec<u8>,
    stats: &TftpStats,
) -> std::io::Result<Option<bool>> {
    for o in out {
        match o {
            Output::Packet(p) => {
                pkt.clear();
                p.encode(pkt);
                let _ = sock.send(pkt).await;
            }
            Output::Data { block, offset, len } => {
                let mut buf = std::mem::take(pkt);
                buf.clear();
                buf.extend_from_slice(&3u16.to_be_bytes());
                buf.extend_from_slice(&block.to_be_bytes());
                buf.resize(4 + len, 0);
                // Fewer bytes than asked: the file shrank; send what we have.
                let (buf, filled, how) = pagecache::read_at(file, buf, 4, offset).await?;
                *pkt = buf;
                if how == pagecache::Served::FromDisk {
                    stats.blocks_from_disk.fetch_add(1, Ordering::Relaxed);
                }
                pkt.truncate(4 + filled);
                if sock.send(pkt).await.is_ok() {
                    stats.bytes_sent.fetch_add(filled as u64, Ordering::Relaxed);
                }
            }
            Output::Done => return Ok(Some(true)),
            Output::Failed(reason) => {
                tracing::info!(%reason, "tftp transfer ended");
                return Ok(Some(false));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str) -> Vec<u8> {
        Packet::Rrq {
            filename: name.into(),
            mode: "octet".into(),
            options: vec![],
        }
        .to_bytes()
    }

    /// The first packet `s` receives within `wait`, if any.
    async fn first_packet(s: &UdpSocket, wait: std::time::Duration) -> Option<Packet> {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(wait, s.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        proto::decode(&buf[..n]).ok()
    }

    /// One client address gets `max_per_client` transfers at once; its next request is
    /// dropped (and counted) while another address is still served.
    #[tokio::test]
    async fn a_client_over_its_share_of_transfers_is_dropped_and_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.bin"), vec![1u8; 100_000]).unwrap();
        let limits = Limits {
            max_per_client: 2,
            ..Limits::default()
        };
        let server = TftpServer::bind("127.0.0.1:0".parse().unwrap(), dir.path(), limits)
            .await
            .unwrap();
        let (addr, stats) = (server.local_addr().unwrap(), server.stats());
        let task = tokio::spawn(server.run());
        let wait = std::time::Duration::from_millis(500);
        let mut held = Vec::new();
        for _ in 0..2 {
            // Clients that never ACK: their transfers stay open (retransmitting).
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(&rrq("f.bin"), addr).await.unwrap();
            assert!(matches!(
                first_packet(&c, wait).await,
                Some(Packet::Data { .. })
            ));
            held.push(c);
        }
        let third = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        third.send_to(&rrq("f.bin"), addr).await.unwrap();
        assert!(first_packet(&third, wait).await.is_none(), "dropped");
        assert_eq!(TftpStats::get(&stats.busy), 1);
        let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        other.send_to(&rrq("f.bin"), addr).await.unwrap();
        assert!(matches!(
            first_packet(&other, wait).await,
            Some(Packet::Data { .. })
        ));
        task.abort();
    }

    /// A file resolved but gone when its transfer opens it: the client gets FILE_NOT_FOUND
    /// from the transfer's port at once, not silence until its timeout.
    #[tokio::test]
    async fn a_file_gone_before_its_transfer_starts_gets_an_error_packet() {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = client.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stats = TftpStats::default();
        let gone = std::fs::File::open(dir.path().join("vanished.kpxe")).map(|f| (Arc::new(f), 0));
        let served = serve_read(
            peer.ip(),
            peer,
            "vanished.kpxe",
            gone,
            &[],
            &Limits::default(),
            &stats,
        )
        .await
        .unwrap();
        assert!(!served);
        let mut buf = [0u8; 600];
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("an error packet, not silence")
            .unwrap();
        match proto::decode(&buf[..n]).unwrap() {
            Packet::Error { code, .. } => assert_eq!(code, code::FILE_NOT_FOUND),
            p => panic!("unexpected {p:?}"),
        }
    }

    #[test]
    fn resolve_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.bin"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        std::os::unix::fs::symlink("sub/a.bin", root.join("inner-link")).unwrap();
        assert_eq!(resolve(&root, "sub/a.bin").unwrap(), root.join("sub/a.bin"));
        assert_eq!(
            resolve(&root, "/sub/a.bin").unwrap(),
            root.join("sub/a.bin")
        );
        assert_eq!(
            resolve(&root, "sub\\a.bin").unwrap(),
            root.join("sub/a.bin")
        );
        assert_eq!(
            resolve(&root, "./sub/./a.bin").unwrap(),
            root.join("sub/a.bin")
        );
        assert_eq!(
            resolve(&root, "inner-link").unwrap(),
            root.join("sub/a.bin")
        );
        assert_eq!(resolve(&root, "../etc/passwd"), Err(PathError::Escape));
        assert_eq!(
            resolve(&root, "sub/../../etc/passwd"),
            Err(PathError::Escape)
        );
        assert_eq!(resolve(&root, "link"), Err(PathError::Escape));
        assert_eq!(resolve(&root, "sub"), Err(PathError::NotFound));
        assert_eq!(resolve(&root, ""), Err(PathError::NotFound));
        assert_eq!(resolve(&root, "missing"), Err(PathError::NotFound));
    }
}
