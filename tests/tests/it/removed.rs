//! A member removed while it was down learns of its removal when it comes back: it stops
//! campaigning (its term stops rising) and its location services, says so in its health
//! answer and its log, and refuses to start again on the same data directory.

use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use reqwest::Method;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_down_stops_and_says_so() {
    let mut c = Cluster::start("removed", 3, &[]).await.expect("cluster");
    let gone = 2;
    let gone_id = c.health(gone).await.unwrap().node_id;
    c.nodes[gone].kill();
    let l = c.wait_leader(T).await.unwrap();
    let (s, v) = c
        .request(
            l,
            Method::DELETE,
            &format!("/v1/cluster/members/{gone_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 204, "{v}");

    // Back up, now also serving a location (HTTP boot): it never saw the entry that removed
    // it.
    let ip = c.nodes[gone].ip.clone();
    c.nodes[gone].args.extend([
        "--location".to_string(),
        "dc1".to_string(),
        "--http-boot-listen".to_string(),
        format!("{ip}:0"),
    ]);
    c.nodes[gone].start().unwrap();
    let boot_file = c.nodes[gone].data_dir.join("http-boot.addr");
    let deadline = Instant::now() + T;
    let boot = loop {
        match std::fs::read_to_string(&boot_file) {
            Ok(a) if !a.trim().is_empty() => break a,
            _ => {
                assert!(Instant::now() < deadline, "HTTP boot never started");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    c.wait_until(T, "removed node reports its removal", |c| async move {
        c.health(gone)
            .await
            .is_ok_and(|h| h.removed && h.raft_state == "removed")
    })
    .await
    .unwrap();
    // Its location services stop (they would serve a replica that no longer follows the
    // cluster); the API stays up to say why.
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(boot.trim()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "HTTP boot still serving after the removal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(c.health(gone).await.is_ok());
    // Alive, but not ready: its readiness says why.
    let (s, v) = c
        .request(gone, reqwest::Method::GET, "/v1/ready", None, &[])
        .await
        .unwrap();
    assert!(
        s == 503
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("removed"),
        "{s} {v}"
    );
    let t1 = c.health(gone).await.unwrap().term;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.health(gone).await.unwrap().term, t1, "no more campaigns");
    let log = std::fs::read_to_string(&c.nodes[gone].log).unwrap();
    assert!(
        log.contains("this node was removed from the cluster"),
        "logged"
    );
    // The remaining members are unaffected.
    let l = c.wait_leader(T).await.unwrap();
    assert_ne!(l, gone);

    // Restarted on the same data directory it refuses to run, with the reason.
    c.nodes[gone].stop();
    let _ = c.nodes[gone].start();
    let deadline = Instant::now() + T;
    while c.nodes[gone].is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !c.nodes[gone].is_running(),
        "a removed node must not run again"
    );
    let log = std::fs::read_to_string(&c.nodes[gone].log).unwrap();
    assert!(log.contains("was removed from cluster"), "says why: {log}");
}

/// R7: only authoritative evidence removes a member. A leader deposed by a partition keeps
/// saying it leads, with the membership it last knew; a member that joined after it was cut
/// off, and now reaches only it, must not take that one answer as its removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_old_membership_does_not_make_a_member_remove_itself() {
    let mut c = Cluster::new_in_netns("deposed").expect("netns cluster");
    c.bootstrap().await.expect("bootstrap");
    c.join(0, false).await.expect("join n2");
    c.join(0, false).await.expect("join n3");
    let old = c.health(0).await.unwrap();
    assert_eq!(old.leader_id, Some(old.node_id), "n1 leads: {old:?}");

    // Depose n1: cut it from n2 and n3, which elect a leader of their own.
    c.partition(0, 1).unwrap();
    c.partition(0, 2).unwrap();
    c.wait_until(T, "n2 and n3 elect a new leader", |c| async move {
        c.health(1)
            .await
            .is_ok_and(|h| h.leader_id.is_some_and(|l| l != old.node_id))
    })
    .await
    .unwrap();
    // n4 joins through the new majority; n1 never hears of it.
    let n4 = c.join(1, false).await.expect("join n4 through n2");
    let id4 = c.health(n4).await.unwrap().node_id;
    let stale = c.health(0).await.unwrap();
    assert!(
        !stale.members.contains(&id4),
        "n1 knows only the old membership: {stale:?}"
    );

    // Cut n4 from n2 and n3: it has no leader, and the only member it reaches is n1, over
    // HTTP only (its vote requests would make n1 step down, ending the stale claim).
    c.cut_peer_port(n4, 0).unwrap();
    c.partition(n4, 1).unwrap();
    c.partition(n4, 2).unwrap();
    // The watcher asks after 3 s without a leader, then every few seconds.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let h4 = c.health(n4).await.unwrap();
    assert!(
        !h4.removed && h4.raft_state != "removed",
        "n4 took n1's stale answer ({:?}) for its removal: {h4:?}",
        c.health(0).await.ok()
    );
    let log = std::fs::read_to_string(&c.nodes[n4].log).unwrap();
    assert!(
        !log.contains("this node was removed from the cluster"),
        "{log}"
    );

    // Healed, n4 is a member that follows the leader.
    c.heal().unwrap();
    c.wait_until(T, "n4 follows a leader again", |c| async move {
        c.health(n4)
            .await
            .is_ok_and(|h| h.leader_id.is_some() && !h.removed && h.members.contains(&id4))
    })
    .await
    .unwrap();
}
