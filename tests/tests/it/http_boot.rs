//! The HTTP boot server's file transfers against curl: streaming with bounded memory, `HEAD`,
//! single ranges and resumed downloads, validators and conditional requests, path rules, the
//! transfer cap's queue and the cut-off of stalled clients.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use rackd_tests::Cluster;

use crate::util::sh;

/// A dc1 location node whose HTTP boot server listens on a port of its own address.
pub const BOOT_NODE_ARGS: [&str; 6] = [
    "--location",
    "dc1",
    "--http-boot-listen",
    "{ip}:0",
    "--tftp-root",
    "{dir}/tftp",
];

/// A one-node cluster serving location dc1 with HTTP boot; (cluster, base URL, artifacts dir).
pub async fn boot_node(test: &str, extra: &[&str]) -> (Cluster, String, PathBuf) {
    let mut args = BOOT_NODE_ARGS.to_vec();
    args.extend_from_slice(extra);
    let c = Cluster::start(test, 1, &args).await.expect("cluster");
    let base = format!(
        "http://{}",
        std::fs::read_to_string(c.nodes[0].data_dir.join("http-boot.addr"))
            .unwrap()
            .trim()
    );
    let artifacts = c.nodes[0].data_dir.join("artifacts");
    (c, base, artifacts)
}

/// curl with `-sS` and a `-w` of status and size; (status, bytes, stderr).
fn curl(args: &[&str]) -> (u16, u64, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-m", "60", "-w", "%{http_code} %{size_download}"])
        .args(args)
        .output()
        .expect("curl");
    let w = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = w.split_whitespace().rev();
    let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let code = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        code,
        size,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i * 131 % 251) as u8).collect()
}

fn status_field(pid: u32, field: &str) -> u64 {
    rackd_tests::proc_status_kib(pid, field)
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_files_honour_head_ranges_resume_and_validators() {
    let (c, base, artifacts) = boot_node("hbfiles", &[]).await;
    let data = pattern(3 * 1024 * 1024 + 17);
    std::fs::write(artifacts.join("vmlinuz"), &data).unwrap();
    let url = format!("{base}/artifacts/vmlinuz");
    let out = c.dir.join("out");
    let out_s = out.display().to_string();

    // Whole file.
    let (code, size, err) = curl(&["-o", &out_s, &url]);
    assert_eq!((code, size), (200, data.len() as u64), "{err}");
    assert!(std::fs::read(&out).unwrap() == data);

    // HEAD: the headers of a GET, no body.
    let (ok, head) = sh(&["curl", "-sS", "-I", &url]);
    let head = head.to_ascii_lowercase();
    assert!(ok, "{head}");
    for want in [
        "http/1.1 200".to_string(),
        format!("content-length: {}", data.len()),
        "accept-ranges: bytes".into(),
        "etag: \"".into(),
        "last-modified: ".into(),
    ] {
        assert!(head.contains(&want), "{want} missing in {head}");
    }

    // Single ranges of each form, and one past the end.
    let (code, size, err) = curl(&["-r", "1000-1999", "-o", &out_s, &url]);
    assert_eq!((code, size), (206, 1000), "{err}");
    assert!(std::fs::read(&out).unwrap() == data[1000..2000]);
    let (code, _, _) = curl(&["-r", "-500", "-o", &out_s, &url]);
    assert_eq!(code, 206);
    assert!(std::fs::read(&out).unwrap() == data[data.len() - 500..]);
    let (ok, hdrs) = sh(&[
        "curl",
        "-sS",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-r",
        "99999999-",
        &url,
    ]);
    assert!(ok && hdrs.starts_with("HTTP/1.1 416"), "{hdrs}");
    assert!(
        hdrs.to_ascii_lowercase()
            .contains(&format!("content-range: bytes */{}", data.len())),
        "{hdrs}"
    );
    // Several ranges at once: the whole file (a server may ignore Range).
    let (code, size, _) = curl(&["-r", "0-1,5-6", "-o", &out_s, &url]);
    assert_eq!((code, size), (200, data.len() as u64));

    // A download cut off after 1 MiB resumes where it stopped (`-C -` sends Range).
    std::fs::write(&out, &data[..1024 * 1024]).unwrap();
    let (code, size, err) = curl(&["-C", "-", "-o", &out_s, &url]);
    assert_eq!(
        (code, size),
        (206, (data.len() - 1024 * 1024) as u64),
        "{err}"
    );
    assert!(std::fs::read(&out).unwrap() == data);

    // ETag: an unchanged file is not sent again; a rewritten one is.
    let etag = c.dir.join("etag").display().to_string();
    let (code, _, _) = curl(&["--etag-save", &etag, "-o", "/dev/null", &url]);
    assert_eq!(code, 200);
    let (code, size, _) = curl(&["--etag-compare", &etag, "-o", "/dev/null", &url]);
    assert_eq!((code, size), (304, 0));
    // If-Modified-Since, both ways (`-z` with a date in the future / the past).
    let (code, _, _) = curl(&[
        "-z",
        "Fri, 01 Jan 2100 00:00:00 GMT",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(code, 304);
    let (code, _, _) = curl(&[
        "-z",
        "Thu, 01 Jan 2015 00:00:00 GMT",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!(code, 200);
    let mut changed = data.clone();
    changed[0] ^= 0xff;
    std::fs::write(artifacts.join("vmlinuz"), &changed).unwrap();
    let (code, _, _) = curl(&["--etag-compare", &etag, "-o", &out_s, &url]);
    assert_eq!(code, 200);
    assert!(std::fs::read(&out).unwrap() == changed);
    // If-Range with the old tag: the range is not applied to the new file.
    let old = std::fs::read_to_string(c.dir.join("etag")).unwrap();
    let (code, size, _) = curl(&[
        "-H",
        &format!("If-Range: {}", old.trim()),
        "-r",
        "0-9",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert_eq!((code, size), (200, data.len() as u64));

    // Path rules: no way out of the root, directories and missing files are not found.
    std::os::unix::fs::symlink("/etc/passwd", artifacts.join("passwd")).unwrap();
    std::fs::create_dir_all(artifacts.join("sub")).unwrap();
    std::fs::write(c.nodes[0].data_dir.join("tftp").join("ipxe.efi"), b"EFI").unwrap();
    for (path, want) in [
        ("/artifacts/passwd", 403),
        ("/artifacts/../tftp/ipxe.efi", 403),
        ("/artifacts/%2e%2e/%2e%2e/etc/passwd", 403),
        ("/artifacts/sub", 404),
        ("/artifacts/missing", 404),
        ("/tftp/ipxe.efi", 200),
    ] {
        let (code, _, err) = curl(&["--path-as-is", "-o", "/dev/null", &format!("{base}{path}")]);
        assert_eq!(code, want, "{path}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_memory_does_not_grow_with_image_size_or_clients() {
    let (c, base, artifacts) = boot_node("hbmem", &[]).await;
    const SIZE: u64 = 128 * 1024 * 1024;
    const CLIENTS: usize = 12;
    let f = std::fs::File::create(artifacts.join("image.img")).unwrap();
    f.set_len(SIZE).unwrap();
    drop(f);
    let pid = c.nodes[0].child.as_ref().unwrap().id();
    let url = format!("{base}/artifacts/image.img");
    // Warm up the server's paths once, then take the baseline.
    assert_eq!(curl(&["-r", "0-0", "-o", "/dev/null", &url]).0, 206);
    let idle_kib = status_field(pid, "VmRSS:");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::process::Command::new("curl")
                .args([
                    "-sS",
                    "-m",
                    "300",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download}",
                ])
                .arg(&url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for cl in clients {
        let out = cl.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("200 {SIZE}"),
            "every client gets the whole image"
        );
    }
    let peak_kib = status_field(pid, "VmHWM:");
    let grew_mib = peak_kib.saturating_sub(idle_kib) / 1024;
    eprintln!(
        "{CLIENTS} clients x {} MiB: RSS idle {} MiB, peak {} MiB (+{grew_mib} MiB)",
        SIZE >> 20,
        idle_kib / 1024,
        peak_kib / 1024
    );
    // Reading whole files would need CLIENTS x SIZE = 1.5 GiB.
    assert!(grew_mib < 64, "peak RSS grew by {grew_mib} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_queues_beyond_its_cap_and_cuts_stalled_clients() {
    let (_c, base, artifacts) = boot_node(
        "hbstall",
        &[
            "--http-boot-max-transfers",
            "1",
            "--http-boot-stall-secs",
            "2",
        ],
    )
    .await;
    std::fs::File::create(artifacts.join("big.img"))
        .unwrap()
        .set_len(256 * 1024 * 1024)
        .unwrap();
    let small = pattern(1024 * 1024);
    std::fs::write(artifacts.join("initrd"), &small).unwrap();

    // A client that asks for the big image and never reads: it takes the only slot.
    let addr = base.trim_start_matches("http://").to_string();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"GET /artifacts/big.img HTTP/1.1\r\nHost: rackd\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Eight more clients queue behind it; every one is served once the stalled one is cut.
    let url = format!("{base}/artifacts/initrd");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl(&["-o", "/dev/null", &url]))
        })
        .collect();
    for cl in clients {
        let (code, size, err) = cl.join().unwrap();
        assert_eq!((code, size), (200, small.len() as u64), "{err}");
    }

    // The stalled connection was closed by the server, long before the image was sent.
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stalled.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("stalled connection still open after {got} bytes: {e}"),
        }
    }
    assert!(
        got < 128 * 1024 * 1024,
        "{got} bytes reached the stalled client"
    );
}

/// Everything the server sent on `s` until it closed the connection (or 10 s passed).
fn read_all(s: &mut std::net::TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_boot_speaks_http11_to_pipelining_and_malformed_clients() {
    let (_c, base, artifacts) = boot_node("hbproto", &[]).await;
    std::fs::write(artifacts.join("a.txt"), b"0123456789").unwrap();
    let addr = base.trim_start_matches("http://").to_string();
    let send = |req: &[u8]| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(req).unwrap();
        read_all(&mut s)
    };
    // Two pipelined requests in one write: two answers, in order; the second closes.
    let out = send(
        b"GET /artifacts/a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n\
          HEAD /artifacts/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let (first, second) = out.split_once("234").expect(&out);
    assert!(
        first.starts_with("HTTP/1.1 206 Partial Content\r\n"),
        "{out}"
    );
    assert!(
        first
            .to_ascii_lowercase()
            .contains("content-range: bytes 2-4/10"),
        "{out}"
    );
    assert!(first.to_ascii_lowercase().contains("\r\ndate: "), "{out}");
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        second.to_ascii_lowercase().contains("content-length: 10"),
        "{out}"
    );
    assert!(second.ends_with("\r\n\r\n"), "HEAD has no body: {out}");
    // HTTP/1.0 without keep-alive: one answer, then the server closes.
    let out = send(b"GET /artifacts/a.txt HTTP/1.0\r\n\r\n");
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("0123456789"),
        "{out}"
    );
    // Malformed, chunked, oversized: a status and a closed connection, never a hang.
    for (req, want) in [
        (&b"GARBAGE\x01\x02\r\n\r\n"[..], "HTTP/1.1 400 "),
        (
            b"POST /boot/52:54:00:00:00:01/done HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 411 ",
        ),
        (
            b"POST /boot/52:54:00:00:00:01/done HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
            "HTTP/1.1 413 ",
        ),
    ] {
        let out = send(req);
        assert!(out.starts_with(want), "{want}: {out}");
    }
    let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000));
    assert!(send(huge.as_bytes()).starts_with("HTTP/1.1 431 "));
    // Dynamic answers keep working on a kept-alive connection after a file.
    let out = send(
        b"GET /artifacts/a.txt HTTP/1.1\r\n\r\nGET /boot/52:54:00:00:00:99.ipxe HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.contains("0123456789HTTP/1.1 404 Not Found\r\n"),
        "{out}"
    );
    assert!(out.ends_with("exit 1\n"), "{out}");
}
