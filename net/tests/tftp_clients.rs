//! The TFTP server against real third-party clients on loopback: tftp-hpa, atftp (blksize and
//! windowsize), busybox tftp and curl must download files byte-identical; path traversal and
//! writes are refused. Every download starts from a cold page cache (the files are on a disk,
//! evicted before each client), so the blocks come through the server's disk path. Needs the `tftp-hpa`, `atftp`, `busybox` and `curl` packages (.ci/run
//! installs them).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rackd_net::tftp::{Limits, TftpServer, TftpStats};

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x & 0xff) as u8
        })
        .collect()
}

struct Fixture {
    root: tempfile::TempDir,
    out: tempfile::TempDir,
    addr: SocketAddr,
    stats: std::sync::Arc<TftpStats>,
    files: Vec<(String, Vec<u8>)>,
}

async fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let files = vec![
        ("small.bin".to_string(), pattern(1000, 1)),
        ("exact.bin".to_string(), pattern(512 * 8, 2)),
        ("empty.bin".to_string(), vec![]),
        ("boot/undionly.kpxe".to_string(), pattern(70_000, 3)),
        // 512-byte blocks: more than 65535 blocks, so block numbers roll over.
        ("big.bin".to_string(), pattern(34 * 1024 * 1024 + 77, 4)),
    ];
    std::fs::create_dir_all(root.path().join("boot")).unwrap();
    for (name, data) in &files {
        std::fs::write(root.path().join(name), data).unwrap();
        std::fs::File::open(root.path().join(name))
            .unwrap()
            .sync_all()
            .unwrap();
    }
    std::fs::write(
        root.path().parent().unwrap().join("rackd-tftp-outside.txt"),
        b"outside",
    )
    .ok();
    let server = TftpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        root.path(),
        Limits::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    tokio::spawn(server.run());
    Fixture {
        root,
        out: tempfile::tempdir().unwrap(),
        addr,
        stats,
        files,
    }
}

/// Drop `root`'s files from the page cache, so the next read of them goes to the disk (on
/// tmpfs it cannot: the caller checks the server's count of disk reads).
fn evict(root: &Path, files: &[(String, Vec<u8>)]) {
    for (name, _) in files {
        let f = std::fs::File::open(root.join(name)).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
}

fn require(bin: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{bin} is not installed (apt-get install tftp-hpa atftp busybox curl)"
    );
}

/// Run a client command (blocking) in a worker thread with a timeout.
async fn run(cmd: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .arg("120")
            .args(&cmd)
            .output()
            .expect("spawn client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

fn client_cmd(client: &str, addr: SocketAddr, remote: &str, local: &Path) -> Vec<String> {
    let (ip, port) = (addr.ip().to_string(), addr.port().to_string());
    let l = local.display().to_string();
    let v: Vec<&str> = match client {
        "tftp-hpa" => vec!["tftp", &ip, &port, "-m", "binary", "-c", "get", remote, &l],
        "atftp" => vec!["atftp", "-g", "-r", remote, "-l", &l, &ip, &port],
        "atftp-blksize" => vec![
            "atftp",
            "--option",
            "blksize 1468",
            "-g",
            "-r",
            remote,
            "-l",
            &l,
            &ip,
            &port,
        ],
        "atftp-window" => vec![
            "atftp",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 16",
            "--option",
            "tsize 0",
            "-g",
            "-r",
            remote,
            "-l",
            &l,
            &ip,
            &port,
        ],
        "busybox" => vec![
            "busybox", "tftp", "-b", "1468", "-g", "-r", remote, "-l", &l, &ip, &port,
        ],
        other => panic!("unknown client {other}"),
    };
    v.into_iter().map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_download_byte_identical_files() {
    for b in ["tftp", "atftp", "busybox", "curl"] {
        require(b);
    }
    let f = fixture().await;
    let clients = [
        "tftp-hpa",
        "atftp",
        "atftp-blksize",
        "atftp-window",
        "busybox",
        "curl",
    ];
    for client in clients {
        evict(f.root.path(), &f.files);
        for (name, data) in &f.files {
            // The 34 MiB file only with lock-step 512-byte clients (the rollover case) and the
            // windowed client; the rest use the small files.
            if name == "big.bin" && !matches!(client, "tftp-hpa" | "atftp-window") {
                continue;
            }
            let local = f
                .out
                .path()
                .join(format!("{client}-{}", name.replace('/', "_")));
            let cmd = if client == "curl" {
                vec![
                    "curl".to_string(),
                    "-sS".into(),
                    "--tftp-blksize".into(),
                    "1468".into(),
                    "-o".into(),
                    local.display().to_string(),
                    format!("tftp://{}/{}", f.addr, name),
                ]
            } else {
                client_cmd(client, f.addr, name, &local)
            };
            let (ok, text) = run(cmd).await;
            assert!(ok, "{client} {name}: {text}");
            let got = std::fs::read(&local).unwrap_or_default();
            assert!(
                got == *data,
                "{client} {name}: {} bytes, want {}",
                got.len(),
                data.len()
            );
        }
    }
    // Give the last transfers' final ACKs a moment to be counted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 6 clients x 4 files + 2 runs of the big file; every client ACKs its last block.
    let (done, failed) = (
        TftpStats::get(&f.stats.completed),
        TftpStats::get(&f.stats.failed),
    );
    assert_eq!((done, failed), (26, 0), "completed/failed transfers");
    // Every client started cold: the first block of each file at least came from the disk
    // (on the blocking pool), and still arrived byte-identical above.
    let from_disk = TftpStats::get(&f.stats.blocks_from_disk);
    assert!(
        from_disk >= 6,
        "{from_disk} blocks read from disk: is {} on tmpfs?",
        f.root.path().display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_missing_files_and_writes_are_refused() {
    require("atftp");
    require("curl");
    let f = fixture().await;
    for bad in [
        "../rackd-tftp-outside.txt",
        "/../rackd-tftp-outside.txt",
        "boot/../../rackd-tftp-outside.txt",
        "missing.bin",
    ] {
        let local = f.out.path().join("bad");
        let (ok, text) = run(client_cmd("atftp", f.addr, bad, &local)).await;
        assert!(!ok, "{bad} was served: {text}");
        assert!(std::fs::read(&local)
            .map(|d| d != b"outside")
            .unwrap_or(true));
    }
    // Upload refused (read-only).
    let src = f.out.path().join("up.txt");
    std::fs::write(&src, b"upload").unwrap();
    let (ok, _) = run(vec![
        "curl".into(),
        "-sS".into(),
        "-T".into(),
        src.display().to_string(),
        format!("tftp://{}/up.txt", f.addr),
    ])
    .await;
    assert!(!ok, "upload accepted");
    assert!(TftpStats::get(&f.stats.refused) >= 5);

    // Garbage to the request port is dropped and counted, and the server keeps serving.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [
        &b"\x00"[..],
        b"\x00\x09zz",
        b"\x00\x01noterminator",
        b"\xff\xff\xff\xff",
    ] {
        s.send_to(junk, f.addr).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.stats.malformed.load(Ordering::Relaxed) >= 4);
    let local = f.out.path().join("after-junk");
    let (ok, text) = run(client_cmd("atftp", f.addr, "small.bin", &local)).await;
    assert!(ok, "{text}");
}

async fn recv_within(
    sock: &tokio::net::UdpSocket,
    buf: &mut [u8],
    ms: u64,
) -> Option<(usize, SocketAddr)> {
    tokio::time::timeout(Duration::from_millis(ms), sock.recv_from(buf))
        .await
        .ok()?
        .ok()
}

#[tokio::test]
async fn stopping_the_server_ends_its_transfers_in_progress() {
    // A client that takes the first block and never acknowledges it: the transfer would
    // retransmit for `max_retries` timeouts. Once the server task is gone, nothing more comes.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f.bin"), pattern(100_000, 9)).unwrap();
    let limits = Limits {
        default_timeout: Duration::from_millis(200),
        max_retries: 20,
        ..Limits::default()
    };
    let server = TftpServer::bind("127.0.0.1:0".parse().unwrap(), root.path(), limits)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(server.run());
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(b"f.bin\0octet\0");
    client.send_to(&rrq, addr).await.unwrap();
    let mut buf = [0u8; 1024];
    // The first block, then at least one retransmission of it: the transfer is running.
    for _ in 0..2 {
        let (n, from) = recv_within(&client, &mut buf, 700).await.expect("DATA");
        assert_ne!(from, addr, "DATA comes from the transfer's own port");
        assert_eq!(&buf[..4], &[0, 3, 0, 1], "DATA block 1 ({n} bytes)");
    }
    task.abort();
    let _ = task.await;
    // Drop what was already queued, then silence for several timeouts (the transfer alone
    // would retransmit every 200 ms for 20 more tries).
    tokio::time::sleep(Duration::from_millis(50)).await;
    while client.try_recv_from(&mut buf).is_ok() {}
    assert!(
        tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .is_err(),
        "the transfer kept sending after its server stopped"
    );
}
