//! Human-readable tables for the CLI (`-o json` prints the API's JSON instead), and the one
//! way the CLI writes to stdout ([`out!`](crate::out)): a reader that went away (`| head`)
//! ends the process quietly, as a Unix tool killed by SIGPIPE would, instead of a panic.

/// `println!` for the CLI: see [`line`].
#[macro_export]
macro_rules! out {
    () => { $crate::cli::output::line(format_args!("")) };
    ($($t:tt)*) => { $crate::cli::output::line(format_args!($($t)*)) };
}

/// Write one line to stdout; when stdout is closed (the reader went away) exit at once with
/// success: nobody is left to read the rest, and that is not an error of the command.
pub fn line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if writeln!(o, "{args}").is_err() {
        std::process::exit(0);
    }
}

/// Print rows under headers with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        crate::out!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Print one line and flush it; false when stdout is closed (the reader went away, as
/// `| head` does), which ends a command that streams quietly instead of panicking.
pub fn emit(line: &str) -> bool {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").and_then(|()| o.flush()).is_ok()
}

/// Whether stdout's reader went away (a pipe whose other end closed): a command that waits
/// for something to print checks this while it waits, so `rackd events --follow | head`
/// ends when head does, not at the next event.
pub fn stdout_closed() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|x| x.to_string())
        .unwrap_or_else(|| "-".to_string())
}

pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    // days since epoch → civil date (Howard Hinnant's algorithm)
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_formats_utc() {
        assert_eq!(super::time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time(1_795_000_000_000), "2026-11-18T11:06:40Z");
    }
}
