//! Conditional and range requests on a static file (RFC 9110 §8.8, §13, §14), sans-IO.
//!
//! [`plan`] turns a file's validators ([`FileMeta`]) and a request's headers ([`Request`])
//! into what to send: the whole file, one byte range of it, 304, 412 or 416. Only single
//! ranges are served; a request for several ranges gets the whole file (RFC 9110 §14.2 lets a
//! server ignore `Range`), as does a `Range` that does not parse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators and size of one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    /// Modification time, truncated to whole seconds (what `Last-Modified` can say).
    pub modified: SystemTime,
    /// Strong entity tag, quoted (`"…"`).
    pub etag: String,
}

impl FileMeta {
    /// Validators of a file from its inode number, length and modification time: a file
    /// replaced (new inode), rewritten in place (new mtime) or resized gets a new tag.
    pub fn new(inode: u64, len: u64, modified: SystemTime) -> Self {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self {
            len,
            modified: UNIX_EPOCH + Duration::from_secs(since.as_secs()),
            etag: format!("\"{inode:x}-{len:x}-{:x}\"", since.as_nanos()),
        }
    }

    /// The `Last-Modified` value (IMF-fixdate).
    pub fn last_modified(&self) -> String {
        http_date(self.modified)
    }
}

/// A time as an HTTP date (IMF-fixdate), as `Date` and `Last-Modified` carry it.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The request header fields that decide the answer (raw values; `None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `HEAD` (no body; `Range` does not apply) rather than `GET`.
    pub head: bool,
    pub range: Option<&'a str>,
    pub if_range: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
}

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..=end` (`Content-Range: bytes start-end/len`).
    Partial { start: u64, end: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 412: an `If-Match`/`If-Unmodified-Since` precondition is false.
    PreconditionFailed,
    /// 416 (`Content-Range: bytes */len`): the one range asked for starts past the end.
    Unsatisfiable,
}

impl Plan {
    pub fn status(self) -> u16 {
        match self {
            Plan::Full => 200,
            Plan::Partial { .. } => 206,
            Plan::NotModified => 304,
            Plan::PreconditionFailed => 412,
            Plan::Unsatisfiable => 416,
        }
    }

    /// The byte range to send (`start`, length); `None` when no body is sent.
    pub fn body(self, len: u64) -> Option<(u64, u64)> {
        match self {
            Plan::Full => Some((0, len)),
            Plan::Partial { start, end } => Some((start, end - start + 1)),
            _ => None,
        }
    }

    /// The `Content-Range` value, for 206 and 416.
    pub fn content_range(self, len: u64) -> Option<String> {
        match self {
            Plan::Partial { start, end } => Some(format!("bytes {start}-{end}/{len}")),
            Plan::Unsatisfiable => Some(format!("bytes */{len}")),
            _ => None,
        }
    }
}

/// Decide the answer, in the order RFC 9110 §13.2.2 gives.
pub fn plan(meta: &FileMeta, req: &Request) -> Plan {
    if let Some(v) = req.if_match {
        if !tag_list_matches(v, &meta.etag, true) {
            return Plan::PreconditionFailed;
        }
    } else if let Some(date) = req.if_unmodified_since.and_then(parse_date) {
        if meta.modified > date {
            return Plan::PreconditionFailed;
        }
    }
    if let Some(v) = req.if_none_match {
        if tag_list_matches(v, &meta.etag, false) {
            return Plan::NotModified;
        }
    } else if let Some(date) = req.if_modified_since.and_then(parse_date) {
        if meta.modified <= date {
            return Plan::NotModified;
        }
    }
    if req.head {
        return Plan::Full;
    }
    let Some(range) = req.range else {
        return Plan::Full;
    };
    if let Some(v) = req.if_range {
        if !if_range_holds(v.trim(), meta) {
            return Plan::Full;
        }
    }
    match parse_range(range, meta.len) {
        RangeSpec::Ignore => Plan::Full,
        RangeSpec::Unsatisfiable => Plan::Unsatisfiable,
        RangeSpec::Bytes { start, end } => Plan::Partial { start, end },
    }
}

fn parse_date(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s.trim()).ok()
}

/// `If-Range`: an entity tag (strong comparison) or the exact `Last-Modified` date.
fn if_range_holds(v: &str, meta: &FileMeta) -> bool {
    if v.starts_with('"') || v.starts_with("W/") {
        return !v.starts_with("W/") && v == meta.etag;
    }
    parse_date(v) == Some(meta.modified)
}

/// Does an `If-Match`/`If-None-Match` list (`*` or comma-separated tags) match `etag`?
/// Strong comparison refuses weak tags; weak comparison ignores the `W/` prefix.
fn tag_list_matches(list: &str, etag: &str, strong: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    list.split(',')
        .map(str::trim)
        .any(|t| match t.strip_prefix("W/") {
            Some(weak) => !strong && weak == etag,
            None => t == etag,
        })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve the whole file: not a single byte range we understand.
    Ignore,
    Unsatisfiable,
    Bytes {
        start: u64,
        end: u64,
    },
}

/// One `bytes=` range against a file of `len` bytes: `a-b`, `a-` or `-n` (the last n bytes).
fn parse_range(v: &str, len: u64) -> RangeSpec {
    let v = v.trim();
    let Some((unit, set)) = v.split_once('=') else {
        return RangeSpec::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-n`: the last n bytes (all of them when n ≥ len).
        (true, false) => match num(last) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if len == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeSpec::Ignore,
        },
        (false, _) => {
            let Some(start) = num(first) else {
                return RangeSpec::Ignore;
            };
            let end = if last.trim().is_empty() {
                u64::MAX
            } else {
                match num(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeSpec::Ignore,
                }
            };
            if start >= len {
                return RangeSpec::Unsatisfiable;
            }
            RangeSpec::Bytes {
                start,
                end: end.min(len - 1),
            }
        }
        (true, true) => RangeSpec::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta {
        FileMeta::new(
            7,
            1000,
            UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        )
    }

    fn get(range: &str) -> Plan {
        plan(
            &meta(),
            &Request {
                range: Some(range),
                ..Default::default()
            },
        )
    }

    #[test]
    fn validators_change_with_inode_length_and_mtime() {
        let m = meta();
        assert_eq!(m.last_modified(), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert!(m.etag.starts_with('"') && m.etag.ends_with('"'));
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        for other in [
            FileMeta::new(8, 1000, t),
            FileMeta::new(7, 1001, t),
            FileMeta::new(7, 1000, t + Duration::from_nanos(1)),
        ] {
            assert_ne!(other.etag, m.etag);
        }
    }

    #[test]
    fn single_ranges_of_every_form() {
        assert_eq!(get("bytes=0-99"), Plan::Partial { start: 0, end: 99 });
        assert_eq!(
            get("bytes=990-"),
            Plan::Partial {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            get("bytes=990-5000"),
            Plan::Partial {
                start: 990,
                end: 999
            }
        );
        assert_eq!(
            get("bytes=-10"),
            Plan::Partial {
                start: 990,
                end: 999
            }
        );
        assert_eq!(get("bytes=-5000"), Plan::Partial { start: 0, end: 999 });
        assert_eq!(get("BYTES = 5-5"), Plan::Partial { start: 5, end: 5 });
        assert_eq!(
            get("bytes=999-999"),
            Plan::Partial {
                start: 999,
                end: 999
            }
        );
        let p = get("bytes=10-19");
        assert_eq!(p.status(), 206);
        assert_eq!(p.body(1000), Some((10, 10)));
        assert_eq!(p.content_range(1000).unwrap(), "bytes 10-19/1000");
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable_and_odd_ones_ignored() {
        for r in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
            assert_eq!(get(r), Plan::Unsatisfiable, "{r}");
        }
        assert_eq!(
            Plan::Unsatisfiable.content_range(1000).unwrap(),
            "bytes */1000"
        );
        for r in [
            "bytes=0-1,5-6",
            "bytes=9-3",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "items=0-1",
            "bytes 0-1",
            "bytes=0-1-2",
            "",
        ] {
            assert_eq!(get(r), Plan::Full, "{r:?}");
        }
        let empty = FileMeta::new(1, 0, UNIX_EPOCH);
        let req = |r| Request {
            range: Some(r),
            ..Default::default()
        };
        assert_eq!(plan(&empty, &req("bytes=0-")), Plan::Unsatisfiable);
        assert_eq!(plan(&empty, &req("bytes=-5")), Plan::Unsatisfiable);
        assert_eq!(plan(&empty, &Request::default()).body(0), Some((0, 0)));
    }

    #[test]
    fn head_ignores_range() {
        let p = plan(
            &meta(),
            &Request {
                head: true,
                range: Some("bytes=0-1"),
                ..Default::default()
            },
        );
        assert_eq!(p, Plan::Full);
    }

    #[test]
    fn conditional_requests() {
        let m = meta();
        let lm = m.last_modified();
        let earlier = httpdate::fmt_http_date(m.modified - Duration::from_secs(1));
        let with = |r: Request| plan(&m, &r);
        let none_match = |v| Request {
            if_none_match: Some(v),
            ..Default::default()
        };
        let ims = |v| Request {
            if_modified_since: Some(v),
            ..Default::default()
        };
        let if_match = |v| Request {
            if_match: Some(v),
            ..Default::default()
        };
        let ius = |v| Request {
            if_unmodified_since: Some(v),
            ..Default::default()
        };
        // If-None-Match: weak comparison, lists, `*`; it wins over If-Modified-Since.
        assert_eq!(with(none_match(&m.etag)), Plan::NotModified);
        let weak = format!("W/{}", m.etag);
        assert_eq!(with(none_match(&weak)), Plan::NotModified);
        let list = format!("\"x\", {}", m.etag);
        assert_eq!(with(none_match(&list)), Plan::NotModified);
        assert_eq!(with(none_match("*")), Plan::NotModified);
        assert_eq!(
            with(Request {
                if_none_match: Some("\"other\""),
                if_modified_since: Some(&lm),
                ..Default::default()
            }),
            Plan::Full
        );
        // If-Modified-Since: not modified at or after the file's second; bad dates ignored.
        assert_eq!(with(ims(&lm)), Plan::NotModified);
        assert_eq!(with(ims(&earlier)), Plan::Full);
        assert_eq!(with(ims("yesterday")), Plan::Full);
        // If-Match is strong; If-Unmodified-Since.
        assert_eq!(with(if_match(&m.etag)), Plan::Full);
        assert_eq!(with(if_match(&weak)), Plan::PreconditionFailed);
        assert_eq!(with(if_match("\"x\"")), Plan::PreconditionFailed);
        assert_eq!(with(ius(&earlier)), Plan::PreconditionFailed);
        assert_eq!(with(ius(&lm)), Plan::Full);
        assert_eq!(Plan::PreconditionFailed.body(1000), None);
        assert_eq!(Plan::NotModified.status(), 304);
    }

    #[test]
    fn if_range_serves_the_range_only_for_the_same_version() {
        let m = meta();
        let lm = m.last_modified();
        let earlier = httpdate::fmt_http_date(m.modified - Duration::from_secs(1));
        let weak = format!("W/{}", m.etag);
        let with = |if_range: &str| {
            plan(
                &m,
                &Request {
                    range: Some("bytes=100-"),
                    if_range: Some(if_range),
                    ..Default::default()
                },
            )
        };
        let part = Plan::Partial {
            start: 100,
            end: 999,
        };
        assert_eq!(with(&m.etag), part);
        assert_eq!(with(&lm), part);
        assert_eq!(with("\"older\""), Plan::Full);
        assert_eq!(with(&weak), Plan::Full);
        assert_eq!(with(&earlier), Plan::Full);
        assert_eq!(with("garbage"), Plan::Full);
    }
}
