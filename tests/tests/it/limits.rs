//! What strangers can cost a node (issue 11, item 8), against a real `rackd` process: one host
//! holding thousands of idle API connections plus a slowloris client does not take the API
//! (health included) away from anyone else, and the hoarder's connections are closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// This test process needs a few thousand descriptors; raise its own limit (`prlimit` on
/// itself: the workspace denies unsafe code, so no setrlimit here).
fn raise_own_fd_limit(n: u64) {
    let pid = std::process::id().to_string();
    let ok = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "prlimit (util-linux) could not raise the open-file limit"
    );
}

async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    sock.connect(to).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_hoarders_and_slowloris_do_not_take_the_api() {
    raise_own_fd_limit(8192);
    let mut c = Cluster::new("limits");
    c.common_args = vec!["--api-header-timeout-secs".into(), "3".into()];
    c.bootstrap().await.expect("bootstrap");
    let api: SocketAddr = c.nodes[0].api.clone().unwrap().parse().unwrap();

    // The attacker, from 127.0.0.3: 2,000 idle connections and one slowloris client.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match connect_from("127.0.0.3", api).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let mut slow = connect_from("127.0.0.3", api).await.unwrap();
    let slowloris = tokio::spawn(async move {
        let t0 = Instant::now();
        for b in b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut b = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(30), slow.read(&mut b)).await;
        t0.elapsed()
    });

    // Everyone else: health and an authenticated read answer within a second, repeatedly.
    for _ in 0..5 {
        let t0 = Instant::now();
        let h = c.health(0).await.expect("health answers");
        assert_eq!(h.raft_state, "leader");
        c.get_json::<serde_json::Value>(0, "/v1/machines")
            .await
            .expect("an authenticated read answers");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The hoarder's connections are closed: all beyond its share at once, the rest after the
    // header timeout (3 s here).
    let mut closed = 0;
    for s in idle.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_secs(6), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 2000, "every idle connection is closed in the end");
    let cut_after = slowloris.await.unwrap();
    assert!(
        cut_after < Duration::from_secs(10),
        "the slowloris client is cut by the header timeout, not after sending its whole head: {cut_after:?}"
    );
    // The node still answers, and held no more than its limits.
    c.health(0).await.expect("health answers afterwards");
}
