//! Snapshots of a large state never stall the cluster: 100,000 machines are written to a
//! 3-node cluster that builds snapshots every 40,000 entries; meanwhile linearizable reads on a
//! follower keep answering, and no election happens (the term and the leader stay the same).
//! Prints the snapshot build time and size, and the slowest read, for the notes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackd_tests::Cluster;
use serde_json::{json, Value};

use crate::util::setup_location;

const MACHINES: u32 = 100_000;
const WRITERS: u32 = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_of_100k_machines_do_not_stall_reads_or_cause_elections() {
    let mut c = Cluster::start("snap100k", 3, &["--snapshot-logs", "40000"])
        .await
        .expect("cluster");
    setup_location(&c, 0).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let h0 = c.health(leader).await.unwrap();
    let follower = (leader + 1) % 3;
    let c = Arc::new(c);

    let done = Arc::new(AtomicBool::new(false));
    let slowest_read_us = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (c, done, slow, errs, reads) = (
            c.clone(),
            done.clone(),
            slowest_read_us.clone(),
            read_errors.clone(),
            reads.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                match c.get_json::<Value>(follower, "/v1/locations").await {
                    Ok(_) => {
                        slow.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("read failed: {e}");
                        errs.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut i = w;
            while i < MACHINES {
                let body = json!({
                    "hostname": format!("m{i}"),
                    "location": "dc1",
                    "macs": [format!("06:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)],
                });
                let key = format!("m{i}");
                // Retried with the same key until acknowledged: nothing is created twice.
                loop {
                    let r = c
                        .request(
                            (i % 3) as usize,
                            reqwest::Method::POST,
                            "/v1/machines",
                            Some(body.clone()),
                            &[("Idempotency-Key", key.as_str())],
                        )
                        .await;
                    match r {
                        Ok((201, _)) => break,
                        Ok((s, v)) => eprintln!("create m{i}: {s} {v}"),
                        Err(e) => eprintln!("create m{i}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                i += WRITERS;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    // Both snapshots (at 40k and 80k entries) were built while the load ran.
    let h = c.health(leader).await.unwrap();
    done.store(true, Ordering::Relaxed);
    reader.await.unwrap();

    let log = std::fs::read_to_string(&c.nodes[leader].log).unwrap();
    let builds: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("built snapshot"))
        .collect();
    eprintln!(
        "100k machines in {load_secs:.1}s; {} reads on a follower, slowest {} ms; snapshots: {builds:#?}",
        reads.load(Ordering::Relaxed),
        slowest_read_us.load(Ordering::Relaxed) / 1000
    );
    // The second snapshot covers at least the first 80,000 entries (indexes 0..=79,999); it
    // lands exactly there when an apply batch ends at that index.
    assert!(
        h.snapshot_index.unwrap_or(0) >= 79_999,
        "the leader built snapshots of the large state: {h:?}"
    );
    assert_eq!(
        read_errors.load(Ordering::Relaxed),
        0,
        "every read answered"
    );
    // Reads kept flowing: a stall of the runtime during a snapshot build (encoding under the
    // lock, blocking I/O on a runtime thread) shows as a read slower than the election timeout.
    assert!(
        reads.load(Ordering::Relaxed) > 100,
        "reads ran during the load"
    );
    let slowest = Duration::from_micros(slowest_read_us.load(Ordering::Relaxed));
    assert!(
        slowest < Duration::from_millis(1500),
        "slowest follower read {slowest:?} during snapshot builds"
    );
    assert_eq!(h.term, h0.term, "no election during the snapshots");
    assert_eq!(h.leader_id, h0.leader_id);
    let n = crate::util::machine_count(&c, follower, false)
        .await
        .unwrap();
    assert_eq!(n, MACHINES as usize);

    // Restart time of a follower with the large state (for the notes): SIGTERM, start, then
    // the first linearizable page read it answers.
    let mut c = Arc::try_unwrap(c)
        .ok()
        .expect("no other handle on the cluster");
    let t = Instant::now();
    tokio::task::block_in_place(|| {
        c.nodes[follower].stop();
        c.nodes[follower].start()
    })
    .expect("restart the follower");
    let up = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c
        .get_json::<Value>(follower, "/v1/machines?limit=100")
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the restarted follower never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "follower restart with {MACHINES} machines: API up {up:?}, serving linearizable reads \
         {:?} after the stop",
        t.elapsed()
    );
    assert_eq!(
        crate::util::machine_count(&c, follower, false)
            .await
            .unwrap(),
        MACHINES as usize
    );
}
