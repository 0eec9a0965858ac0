//! Log output of `rackd up` that never blocks the node.
//!
//! On the appliance, stderr is the console: a serial port at 115200 baud (about 11 KB/s, far
//! less under emulation). Written synchronously from the async threads, a burst of warnings
//! (a peer down: one per heartbeat) made the node itself slow enough to miss its own Raft
//! deadlines. Here each log line goes through a bounded queue to one thread that writes
//! stderr; when the console cannot keep up, lines are dropped and counted, and the count is
//! written once the console catches up. Layer: `cli` (the binary's edge).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

enum Msg {
    Line(Vec<u8>),
    /// Answer once every line queued before this one is written.
    Flush(Sender<()>),
}

/// Lines waiting for the console at most.
const QUEUE_LINES: usize = 4096;

/// A `MakeWriter` for tracing-subscriber: one line per event, handed off without blocking.
#[derive(Clone)]
pub struct NonBlockingStderr {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl NonBlockingStderr {
    /// Start the writer thread.
    pub fn start() -> Self {
        Self::with_sink(QUEUE_LINES, std::io::stderr())
    }

    fn with_sink<W: Write + Send + 'static>(lines: usize, mut sink: W) -> Self {
        let (tx, rx) = sync_channel::<Msg>(lines);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("rackd-log".into())
            .spawn(move || {
                for msg in rx {
                    let lost = seen.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ =
                            writeln!(sink, "rackd: {lost} log lines dropped (console too slow)");
                    }
                    match msg {
                        Msg::Line(line) => {
                            let _ = sink.write_all(&line);
                            let _ = sink.flush();
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            // No thread: the sender's queue fills and every line is counted as dropped.
            eprintln!("rackd: cannot start the log writer thread: {e}");
        }
        Self { tx, dropped }
    }

    /// Wait (at most `limit`) until the lines logged so far are written: called before the
    /// process exits, so the cause of an exit reaches the console.
    pub fn flush(&self, limit: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(limit);
        }
    }
}

/// One event's line, sent when tracing drops the writer.
pub struct Line {
    buf: Vec<u8>,
    out: NonBlockingStderr,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self
            .out
            .tx
            .try_send(Msg::Line(std::mem::take(&mut self.buf)))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.out.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlockingStderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::new(),
            out: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// A console that takes 50 ms per write (and records what it got).
    struct SlowConsole(Arc<Mutex<Vec<u8>>>);

    impl Write for SlowConsole {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_millis(50));
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_slow_console_costs_dropped_lines_not_time() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let w = NonBlockingStderr::with_sink(4, SlowConsole(got.clone()));
        let t0 = Instant::now();
        for i in 0..100 {
            let mut l = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            writeln!(l, "line {i}").unwrap();
        }
        // 100 lines through a 50 ms console would take 5 s written in place.
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // One more line after the burst carries the count of the dropped ones.
            let mut l = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
            writeln!(l, "after").unwrap();
            drop(l);
            std::thread::sleep(Duration::from_millis(300));
            let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
            if text.contains("log lines dropped") && text.contains("after") {
                assert!(text.contains("line 0\n"), "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "{text}");
        }
    }
}
