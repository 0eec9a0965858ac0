//! The watch API (`GET /v1/events?follow=true`) against three real nodes and three kinds of
//! client at once: curl (a third-party reader of server-sent events) on one follower, the
//! `rackd events --follow` CLI on the other, the typed client on the leader. Each sees the
//! journal the leader pages out, event for event; the CLI rides through a restart of the
//! node it follows without losing or repeating an event; a stream resumes on another node
//! from where it stopped; and `rackd events --follow | head`, like every listing piped to a
//! reader that went away, ends quietly.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackd::client::sse::Decoder;
use rackd::client::Followed;
use rackd_tests::{rackd_bin, Cluster};
use rackd_types::{Event, EventQuery, Page};
use serde_json::json;

/// A child process whose stdout is collected by a thread; killed when dropped.
struct Reader {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Reader {
    fn spawn(mut cmd: Command) -> Reader {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a reader");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Reader { child, out }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (seq, kind, entity id) of an event: what every reader must agree on.
type Seen = (u64, String, Option<u64>);

fn seen(e: &Event) -> Seen {
    (e.seq, e.kind.clone(), e.entity_id)
}

/// The events curl printed, decoded (its first message is the stream's open).
fn curl_events(text: &str) -> (Option<String>, Vec<Seen>) {
    let mut d = Decoder::default();
    let msgs = d.push(text.as_bytes()).unwrap();
    let first = msgs.first().and_then(|m| m.event.clone());
    let events = msgs
        .iter()
        .filter(|m| m.event.is_none())
        .map(|m| seen(&serde_json::from_str(&m.data).unwrap()))
        .collect();
    (first, events)
}

/// The events the CLI printed as JSON lines.
fn cli_events(text: &str) -> Vec<Seen> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| seen(&serde_json::from_str(l).unwrap()))
        .collect()
}

async fn wait_for<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The journal after `after`, paged from node `i`.
async fn journal(c: &Cluster, i: usize, after: u64) -> Vec<Seen> {
    let page: Page<Event> = c
        .get_json(i, &format!("/v1/events?after={after}&limit=1000"))
        .await
        .unwrap();
    page.items.iter().map(seen).collect()
}

/// Writes through node `i` that journal events: locations and machines, then updates.
async fn write_some(c: &Cluster, i: usize, tag: &str, n: usize) {
    for k in 0..n {
        let loc = format!("{tag}-l{k}");
        let _: serde_json::Value = c
            .post_json(i, "/v1/locations", &json!({"name": loc}))
            .await
            .unwrap();
        let _: serde_json::Value = c
            .post_json(
                i,
                "/v1/machines",
                &json!({"hostname": format!("{tag}-m{k}"), "location": loc}),
            )
            .await
            .unwrap();
    }
}

/// `rackd ARGS | READER` against node `i` (bash with pipefail: rackd's exit status counts).
fn piped(c: &Cluster, i: usize, args: &str, reader: &str) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} {args} | {reader}",
            rackd_bin().display()
        ))
        .env("RACKD_SERVER", c.url(i))
        .env("RACKD_TOKEN", &c.token)
        .env("RACKD_LOGIN_FILE", c.dir.join("no-login.json"))
        .output()
        .expect("run bash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_streams_the_same_journal_and_a_follower_rides_a_restart() {
    let mut c = Cluster::start("watch", 3, &[]).await.expect("cluster");
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);

    // The typed client on the leader, from now: the open message says where "now" is.
    let mut typed = c
        .client(leader)
        .follow_events(&EventQuery::default())
        .await
        .unwrap();
    let start = typed.position().expect("the stream said where it opened");

    // curl on one follower, the CLI on the other, both after `start`.
    let mut curl = Command::new("curl");
    curl.args(["-sS", "-N", "--max-time", "300"])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .arg(format!("{}/v1/events?follow=true&after={start}", c.url(f1)));
    if let Some(ca) = &c.ca_pem {
        let path = c.dir.join("ca.pem");
        std::fs::write(&path, ca).unwrap();
        curl.arg("--cacert").arg(path);
    }
    let curl = Reader::spawn(curl);
    let mut cli = Command::new(rackd_bin());
    cli.args([
        "-o",
        "json",
        "events",
        "--follow",
        "--after",
        &start.to_string(),
    ])
    .env("RACKD_SERVER", c.url(f2))
    .env("RACKD_TOKEN", &c.token)
    .env("RACKD_LOGIN_FILE", c.dir.join("no-login.json"));
    let mut cli = Reader::spawn(cli);

    write_some(&c, leader, "a", 10).await;
    let want = journal(&c, leader, start).await;
    assert!(want.len() >= 20, "{want:?}");
    assert_eq!(want.first().map(|s| s.0), Some(start + 1));

    let mut got = Vec::new();
    while got.len() < want.len() {
        match tokio::time::timeout(Duration::from_secs(10), typed.next()).await {
            Ok(Ok(Followed::Event(e))) => got.push(seen(&e)),
            other => panic!("typed stream: {other:?} after {got:?}"),
        }
    }
    assert_eq!(got, want, "the leader's stream is its journal");
    wait_for("curl's events", Duration::from_secs(10), || {
        curl_events(&curl.text()).1.len() >= want.len()
    })
    .await;
    let (first, events) = curl_events(&curl.text());
    assert_eq!(first.as_deref(), Some("open"), "{}", curl.text());
    assert_eq!(events, want, "curl on a follower sees the same journal");
    wait_for("the CLI's events", Duration::from_secs(10), || {
        cli_events(&cli.text()).len() >= want.len()
    })
    .await;
    assert_eq!(cli_events(&cli.text()), want, "{}", cli.stderr());

    // Restart the node the CLI follows, writing while it is down and after it is back: the
    // CLI reconnects by itself and prints each event once.
    c.nodes[f2].stop();
    write_some(&c, leader, "b", 3).await;
    c.nodes[f2].start().unwrap();
    write_some(&c, leader, "c", 3).await;
    let want_all = journal(&c, leader, start).await;
    let later = &want_all[want.len()..];
    assert!(later.len() >= 12, "{later:?}");
    wait_for(
        "the CLI's events after the restart",
        Duration::from_secs(45),
        || cli_events(&cli.text()).len() >= want_all.len(),
    )
    .await;
    let printed = cli_events(&cli.text());
    assert_eq!(printed, want_all, "{}", cli.stderr());

    // The typed stream stops where it is and resumes on a follower.
    let at = typed.position().unwrap();
    drop(typed);
    let mut resumed = c
        .client(f1)
        .follow_events(&EventQuery {
            after: Some(at),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < later.len() {
        match tokio::time::timeout(Duration::from_secs(10), resumed.next()).await {
            Ok(Ok(Followed::Event(e))) => got.push(seen(&e)),
            other => panic!("resumed stream: {other:?} after {got:?}"),
        }
    }
    assert_eq!(got, later, "resumed on another node where it stopped");

    // A filtered follow with the CLI, piped into head: it prints, then ends quietly when
    // head goes away.
    let out = piped(
        &c,
        f1,
        &format!("events --follow --after {start} --kind machine"),
        "head -n 3",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("SEQ"), "{stdout}");
    assert!(
        lines[1..].iter().all(|l| l.contains("machine.")),
        "{stdout}"
    );

    // Every kind of output (tables, JSON, text) to a reader that is already gone: the
    // command ends quietly instead of panicking on the closed pipe.
    for args in [
        "machines list",
        "-o json machines list",
        "events --limit 1000",
        "locations list",
        "status",
        "tasks list",
    ] {
        let out = piped(&c, f1, args, "true");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rackd {args} | true: {stderr}");
        assert!(!stderr.contains("panicked"), "rackd {args}: {stderr}");
    }
}
