//! Location nodes: boot services run from the node's own replica and keep answering when the
//! site is cut off from the voters.

use std::process::Command;
use std::time::Duration;

use rackd_tests::Cluster;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_learner_keeps_serving_tftp_when_voters_are_gone() {
    let mut c = Cluster::start("site", 3, &[]).await.expect("cluster");
    let root = c.dir.join("tftproot");
    std::fs::create_dir_all(&root).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(root.join("undionly.kpxe"), &payload).unwrap();
    let root_s = root.display().to_string();
    let site = c
        .join_with(
            0,
            true,
            &[
                "--location",
                "dc-east",
                "--tftp-listen",
                "{ip}:0",
                "--tftp-root",
                &root_s,
                "--write-timeout-secs",
                "2",
            ],
        )
        .await
        .unwrap();
    let tftp_addr = std::fs::read_to_string(c.nodes[site].data_dir.join("tftp.addr")).unwrap();
    let (ip, port) = tftp_addr.trim().rsplit_once(':').unwrap();
    let fetch = |name: &str| {
        let out = c.dir.join(format!("dl-{name}"));
        let _ = std::fs::remove_file(&out);
        let st = Command::new("timeout")
            .args([
                "30",
                "atftp",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                "undionly.kpxe",
                "-l",
            ])
            .arg(&out)
            .args([ip, port])
            .status()
            .expect("run atftp (apt-get install atftp)");
        (st.success(), std::fs::read(&out).unwrap_or_default())
    };
    let (ok, got) = fetch("before");
    assert!(ok && got == payload, "TFTP download before the cut");

    // Cut the site off: every voter dies. The site's writes now fail clearly...
    for i in 0..3 {
        c.nodes[i].kill();
    }
    let (s, v) = c
        .request(
            site,
            Method::POST,
            "/v1/locations",
            Some(json!({"name": "x"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(s, 503, "{v}");
    // ...its local replica still answers stale reads, and TFTP keeps serving.
    let (s, _) = c
        .request(site, Method::GET, "/v1/locations?stale=true", None, &[])
        .await
        .unwrap();
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, got) = fetch("after");
    assert!(ok && got == payload, "TFTP download after the cut");
}
