//! The storm's TFTP clients: N concurrent downloads of the iPXE first stage, each from its own
//! UDP socket, as a PXE ROM does it (RRQ with `blksize` and `tsize`, lock-step ACKs, a
//! retransmission after `timeout`). Records each transfer's time and how often it had to
//! retransmit; a storm is clean when no client retransmits at all.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

pub struct Outcome {
    pub secs: f64,
    pub retransmits: u32,
    pub error: Option<String>,
}

const BLKSIZE: usize = 1432;
const MAX_RETRIES: u32 = 8;

fn rrq(file: &str) -> Vec<u8> {
    let mut p = vec![0, 1];
    for s in [file, "octet", "blksize", &BLKSIZE.to_string(), "tsize", "0"] {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, 4, b[0], b[1]]
}

/// One download; `expect` is the file's size.
pub async fn fetch(
    local: std::net::IpAddr,
    server: SocketAddr,
    file: &str,
    expect: u64,
    timeout: Duration,
) -> Outcome {
    let t0 = Instant::now();
    let mut retransmits = 0;
    let r = fetch_inner(local, server, file, expect, timeout, &mut retransmits).await;
    Outcome {
        secs: t0.elapsed().as_secs_f64(),
        retransmits,
        error: r.err(),
    }
}

async fn fetch_inner(
    local: std::net::IpAddr,
    server: SocketAddr,
    file: &str,
    expect: u64,
    timeout: Duration,
    retransmits: &mut u32,
) -> Result<u64, String> {
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let mut last: Vec<u8> = rrq(file);
    let mut dest = server;
    let mut peer: Option<SocketAddr> = None;
    let mut blksize = 512usize;
    let mut next: u16 = 1;
    let mut got = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut tries = 0;
    sock.send_to(&last, dest).await.map_err(|e| e.to_string())?;
    loop {
        let (n, from) = match tokio::time::timeout(timeout, sock.recv_from(&mut buf)).await {
            Ok(r) => r.map_err(|e| format!("recv: {e}"))?,
            Err(_) => {
                tries += 1;
                if tries > MAX_RETRIES {
                    return Err(format!("gave up after {MAX_RETRIES} retransmissions"));
                }
                *retransmits += 1;
                sock.send_to(&last, dest).await.map_err(|e| e.to_string())?;
                continue;
            }
        };
        if peer.is_some_and(|p| p != from) || n < 4 {
            continue;
        }
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            // OACK: the server's options; its new port is the transfer's peer.
            6 => {
                if peer.is_some() {
                    continue;
                }
                let mut it = buf[2..n].split(|b| *b == 0);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    if k.eq_ignore_ascii_case(b"blksize") {
                        blksize = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(512);
                    }
                }
                peer = Some(from);
                dest = from;
                last = ack(0).to_vec();
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if peer.is_none() {
                    peer = Some(from);
                    dest = from;
                }
                if block != next {
                    // A duplicate: re-ACK it so the server moves on.
                    sock.send_to(&ack(block), dest)
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                let data = n - 4;
                got += data as u64;
                next = next.wrapping_add(1);
                last = ack(block).to_vec();
                if data < blksize {
                    sock.send_to(&last, dest).await.map_err(|e| e.to_string())?;
                    return if got == expect {
                        Ok(got)
                    } else {
                        Err(format!("got {got} bytes, expected {expect}"))
                    };
                }
            }
            5 => {
                return Err(format!(
                    "TFTP error: {}",
                    String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
                ))
            }
            _ => continue,
        }
        tries = 0;
        sock.send_to(&last, dest).await.map_err(|e| e.to_string())?;
    }
}
