//! Sans-IO state machine of one TFTP read transfer (server side).
//!
//! Negotiates RFC 2347 options (blksize RFC 2348, timeout and tsize RFC 2349, windowsize
//! RFC 7440), sends windows of blocks, advances on ACKs (mapping 16-bit block numbers onto an
//! absolute position so files larger than 65535 blocks roll over), and retransmits the
//! unacknowledged window when the timeout passes. Duplicate ACKs never trigger a resend
//! (no Sorcerer's Apprentice). It reads no file and touches no socket or clock: the caller
//! passes `now`, and gets back [`Output`]s to perform.

use std::time::{Duration, Instant};

use super::proto::{code, Packet};

/// Server-side limits for option negotiation.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    pub default_timeout: Duration,
    /// Largest `timeout` option accepted (RFC 2349 allows up to 255 s; a larger request is
    /// declined, and the client keeps its default): it bounds how long a silent client holds
    /// a transfer.
    pub max_timeout_secs: u64,
    pub max_retries: u32,
    /// Transfers open at once (the server shell's bound); more requests are dropped, and
    /// their clients retry.
    pub max_transfers: usize,
    /// Transfers open at once for one client address.
    pub max_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_blksize: 65464,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_timeout_secs: 10,
            max_retries: 5,
            max_transfers: 4096,
            max_per_client: 64,
        }
    }
}

/// Something the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this packet (OACK or ERROR).
    Packet(Packet),
    /// Send a DATA packet: block number `block` carrying file bytes `[offset, offset+len)`.
    Data { block: u16, offset: u64, len: usize },
    /// The transfer finished successfully.
    Done,
    /// The transfer is over without success (reason for logs/metrics).
    Failed(String),
}

#[derive(Debug)]
pub struct ReadTransfer {
    file_len: u64,
    blksize: u64,
    window: u64,
    timeout: Duration,
    max_retries: u32,
    /// Absolute number of the last block (blocks are 1..=last; the last may be empty).
    last_block: u64,
    /// Highest block acknowledged (0 = none, or OACK acknowledged).
    acked: u64,
    /// Highest block sent so far.
    sent: u64,
    /// Waiting for the ACK of our OACK (block 0).
    oack_pending: Option<Vec<(String, String)>>,
    deadline: Instant,
    retries: u32,
    finished: bool,
}

impl ReadTransfer {
    /// Start a transfer of a `file_len`-byte file for a RRQ with `options`. Returns the state
    /// machine and the first packets to send.
    pub fn start(
        now: Instant,
        file_len: u64,
        options: &[(String, String)],
        limits: &Limits,
    ) -> (Self, Vec<Output>) {
        let mut blksize: u64 = 512;
        let mut window: u64 = 1;
        let mut timeout = limits.default_timeout;
        let mut accepted = Vec::new();
        for (name, value) in options {
            match name.as_str() {
                "blksize" => {
                    if let Ok(v) = value.parse::<u64>() {
                        if v >= 8 {
                            blksize = v.min(limits.max_blksize as u64);
                            accepted.push((name.clone(), blksize.to_string()));
                        }
                    }
                }
                "windowsize" => {
                    if let Ok(v) = value.parse::<u64>() {
                        if v >= 1 {
                            window = v.min(limits.max_windowsize as u64);
                            accepted.push((name.clone(), window.to_string()));
                        }
                    }
                }
                "timeout" => {
                    if let Ok(v) = value.parse::<u64>() {
                        if (1..=limits.max_timeout_secs.min(255)).contains(&v) {
                            timeout = Duration::from_secs(v);
                            accepted.push((name.clone(), v.to_string()));
                        }
                    }
                }
                // An empty file is not announced as `tsize 0`: curl 7.88 aborts on that OACK
                // (getpeername errno 107); without it the client still ends on the short block.
                "tsize" if file_len > 0 => accepted.push((name.clone(), file_len.to_string())),
                _ => {} // unknown options are ignored (RFC 2347)
            }
        }
        let mut t = Self {
            file_len,
            blksize,
            window,
            timeout,
            max_retries: limits.max_retries,
            last_block: file_len / blksize + 1,
            acked: 0,
            sent: 0,
            oack_pending: None,
            deadline: now + timeout,
            retries: 0,
            finished: false,
        };
        let out = if accepted.is_empty() {
            t.send_window(now)
        } else {
            t.oack_pending = Some(accepted.clone());
            vec![Output::Packet(Packet::Oack { options: accepted })]
        };
        (t, out)
    }

    pub fn blksize(&self) -> u64 {
        self.blksize
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// When [`ReadTransfer::on_timeout`] should be called next.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn data(&self, abs: u64) -> Output {
        let offset = (abs - 1) * self.blksize;
        let len = self.file_len.saturating_sub(offset).min(self.blksize) as usize;
        Output::Data {
            block: (abs % 65536) as u16,
            offset,
            len,
        }
    }

    fn send_window(&mut self, now: Instant) -> Vec<Output> {
        let end = (self.acked + self.window).min(self.last_block);
        let out: Vec<Output> = (self.acked + 1..=end).map(|b| self.data(b)).collect();
        self.sent = end;
        self.deadline = now + self.timeout;
        out
    }

    /// A packet from the client's transfer id.
    pub fn on_packet(&mut self, now: Instant, p: &Packet) -> Vec<Output> {
        if self.finished {
            return vec![];
        }
        match p {
            Packet::Ack { block } => {
                if self.oack_pending.is_some() {
                    if *block != 0 {
                        return vec![];
                    }
                    self.oack_pending = None;
                    self.retries = 0;
                    return self.send_window(now);
                }
                // Map the 16-bit number to an absolute block in (acked, sent].
                let base = self.acked;
                let distance = (*block as u64).wrapping_sub(base % 65536) % 65536;
                let abs = base + distance;
                if distance == 0 || abs > self.sent {
                    // Duplicate or stale ACK: ignore (never resend on a duplicate).
                    return vec![];
                }
                self.acked = abs;
                self.retries = 0;
                if self.acked >= self.last_block {
                    self.finished = true;
                    return vec![Output::Done];
                }
                self.send_window(now)
            }
            Packet::Error { code, message } => {
                self.finished = true;
                vec![Output::Failed(format!("client error {code}: {message}"))]
            }
            _ => {
                self.finished = true;
                vec![
                    Output::Packet(Packet::Error {
                        code: code::ILLEGAL_OPERATION,
                        message: "unexpected packet during read transfer".into(),
                    }),
                    Output::Failed("unexpected packet".into()),
                ]
            }
        }
    }

    /// The deadline passed without progress: resend the unacknowledged window (or OACK).
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Output> {
        if self.finished || now < self.deadline {
            return vec![];
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            self.finished = true;
            return vec![Output::Failed(format!(
                "no ACK after {} retries",
                self.max_retries
            ))];
        }
        if let Some(opts) = &self.oack_pending {
            self.deadline = now + self.timeout;
            return vec![Output::Packet(Packet::Oack {
                options: opts.clone(),
            })];
        }
        self.send_window(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(o: &[(&str, &str)]) -> Vec<(String, String)> {
        o.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn datas(out: &[Output]) -> Vec<(u16, u64, usize)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Data { block, offset, len } => Some((*block, *offset, *len)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plain_rfc1350_lockstep() {
        let t0 = Instant::now();
        let (mut t, out) = ReadTransfer::start(t0, 1000, &[], &Limits::default());
        assert_eq!(datas(&out), vec![(1, 0, 512)]);
        let out = t.on_packet(t0, &Packet::Ack { block: 1 });
        assert_eq!(datas(&out), vec![(2, 512, 488)]);
        assert_eq!(
            t.on_packet(t0, &Packet::Ack { block: 2 }),
            vec![Output::Done]
        );
    }

    #[test]
    fn exact_multiple_ends_with_empty_block() {
        let t0 = Instant::now();
        let (mut t, _) = ReadTransfer::start(t0, 1024, &[], &Limits::default());
        t.on_packet(t0, &Packet::Ack { block: 1 });
        let out = t.on_packet(t0, &Packet::Ack { block: 2 });
        assert_eq!(datas(&out), vec![(3, 1024, 0)]);
        assert_eq!(
            t.on_packet(t0, &Packet::Ack { block: 3 }),
            vec![Output::Done]
        );
        let (mut e, out) = ReadTransfer::start(t0, 0, &[], &Limits::default());
        assert_eq!(datas(&out), vec![(1, 0, 0)]);
        assert_eq!(
            e.on_packet(t0, &Packet::Ack { block: 1 }),
            vec![Output::Done]
        );
        // tsize is not announced for an empty file (see `start`).
        let (_, out) = ReadTransfer::start(t0, 0, &opts(&[("tsize", "0")]), &Limits::default());
        assert_eq!(datas(&out), vec![(1, 0, 0)]);
    }

    /// A client asking for a long timeout (RFC 2349 allows 255 s) does not get it: a silent
    /// client would hold its transfer for `max_retries` times that. The option is declined
    /// and the server keeps its own timeout.
    #[test]
    fn a_timeout_above_the_servers_bound_is_declined() {
        let t0 = Instant::now();
        let limits = Limits::default();
        let (t, out) = ReadTransfer::start(t0, 10, &opts(&[("timeout", "255")]), &limits);
        assert!(
            !matches!(&out[..], [Output::Packet(Packet::Oack { .. })]),
            "{out:?}"
        );
        assert_eq!(t.deadline(), t0 + limits.default_timeout);
        let (t, _) = ReadTransfer::start(t0, 10, &opts(&[("timeout", "10")]), &limits);
        assert_eq!(t.deadline(), t0 + Duration::from_secs(10));
    }

    #[test]
    fn options_are_negotiated_and_clamped() {
        let t0 = Instant::now();
        let (mut t, out) = ReadTransfer::start(
            t0,
            5000,
            &opts(&[
                ("blksize", "100000"),
                ("windowsize", "500"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("foo", "1"),
            ]),
            &Limits::default(),
        );
        assert_eq!(
            out,
            vec![Output::Packet(Packet::Oack {
                options: opts(&[
                    ("blksize", "65464"),
                    ("windowsize", "64"),
                    ("tsize", "5000"),
                    ("timeout", "3")
                ])
            })]
        );
        // DATA starts only after ACK 0.
        assert!(t.on_packet(t0, &Packet::Ack { block: 5 }).is_empty());
        let out = t.on_packet(t0, &Packet::Ack { block: 0 });
        assert_eq!(datas(&out), vec![(1, 0, 5000)]);
        // Refused values fall back to defaults and are left out of the OACK.
        let (_, out) = ReadTransfer::start(
            t0,
            10,
            &opts(&[("blksize", "4"), ("timeout", "0")]),
            &Limits::default(),
        );
        assert_eq!(datas(&out), vec![(1, 0, 10)]);
    }

    #[test]
    fn windowed_transfer_and_partial_ack() {
        let t0 = Instant::now();
        let (mut t, _) = ReadTransfer::start(
            t0,
            10 * 8,
            &opts(&[("blksize", "8"), ("windowsize", "4")]),
            &Limits::default(),
        );
        let out = t.on_packet(t0, &Packet::Ack { block: 0 });
        assert_eq!(
            datas(&out).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        // Client lost block 3: ACKs 2; the next window starts at 3.
        let out = t.on_packet(t0, &Packet::Ack { block: 2 });
        assert_eq!(
            datas(&out).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        // A duplicate ACK does not resend.
        assert!(t.on_packet(t0, &Packet::Ack { block: 2 }).is_empty());
        let out = t.on_packet(t0, &Packet::Ack { block: 6 });
        assert_eq!(
            datas(&out).iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        let out = t.on_packet(t0, &Packet::Ack { block: 10 });
        assert_eq!(datas(&out), vec![(11, 80, 0)]);
        assert_eq!(
            t.on_packet(t0, &Packet::Ack { block: 11 }),
            vec![Output::Done]
        );
    }

    #[test]
    fn timeout_retransmits_then_gives_up() {
        let t0 = Instant::now();
        let limits = Limits {
            max_retries: 2,
            ..Limits::default()
        };
        let (mut t, first) = ReadTransfer::start(t0, 100, &[], &limits);
        assert!(t.on_timeout(t0).is_empty(), "not yet due");
        let t1 = t.deadline();
        assert_eq!(t.on_timeout(t1), first);
        let t2 = t.deadline();
        assert_eq!(t.on_timeout(t2), first);
        let t3 = t.deadline();
        assert!(matches!(t.on_timeout(t3).as_slice(), [Output::Failed(_)]));
        assert!(t.is_finished());
    }

    #[test]
    fn block_numbers_roll_over_past_65535() {
        let t0 = Instant::now();
        let blocks: u64 = 70_000;
        let (mut t, _) = ReadTransfer::start(
            t0,
            blocks * 8 + 3,
            &opts(&[("blksize", "8"), ("windowsize", "16")]),
            &Limits::default(),
        );
        let mut out = t.on_packet(t0, &Packet::Ack { block: 0 });
        let mut expected_abs = 1u64;
        let mut done = false;
        while !done {
            let d = datas(&out);
            assert!(!d.is_empty());
            for (block, offset, _) in &d {
                assert_eq!(*block, (expected_abs % 65536) as u16);
                assert_eq!(*offset, (expected_abs - 1) * 8);
                expected_abs += 1;
            }
            let last = d.last().unwrap().0;
            out = t.on_packet(t0, &Packet::Ack { block: last });
            done = out == vec![Output::Done];
        }
        assert_eq!(expected_abs - 1, blocks + 1);
    }

    #[test]
    fn client_error_ends_transfer() {
        let t0 = Instant::now();
        let (mut t, _) = ReadTransfer::start(t0, 100, &[], &Limits::default());
        let out = t.on_packet(
            t0,
            &Packet::Error {
                code: 0,
                message: "abort".into(),
            },
        );
        assert!(matches!(out.as_slice(), [Output::Failed(_)]));
        assert!(t.on_timeout(t0 + Duration::from_secs(60)).is_empty());
    }
}
