//! HTTP/1.1 request heads and response heads for the boot server's own connection loop
//! (RFC 9112), sans-IO: [`parse`] reads one request head from the bytes received so far;
//! [`response_head`] writes a status line and fields.
//!
//! Only what boot clients need is accepted: a request body must have a `Content-Length`
//! (firmware never sends chunked requests; they get 411), heads are bounded (431), and
//! anything that does not parse is a 400 after which the connection is closed.

/// Most header fields in one request.
const MAX_HEADERS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    Complete(RequestHead),
    /// Answer 400 and close.
    Invalid,
    /// The head is longer than allowed: answer 431 and close.
    TooLarge,
}

/// What the request says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    Bytes(usize),
    /// `Transfer-Encoding` (chunked): not accepted (411).
    Unsupported,
    /// A malformed or conflicting `Content-Length` (400).
    Invalid,
}

/// Parse one request head from the start of `buf`.
pub fn parse(buf: &[u8], max_head: usize) -> Parsed {
    // Tolerate blank lines before a request (RFC 9112 §2.2).
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(&buf[skip..]) {
        Ok(httparse::Status::Complete(n)) if skip + n <= max_head => {
            let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version)
            else {
                return Parsed::Invalid;
            };
            Parsed::Complete(RequestHead {
                method: method.to_string(),
                target: target.to_string(),
                minor,
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                    .collect(),
                len: skip + n,
            })
        }
        Ok(httparse::Status::Complete(_)) => Parsed::TooLarge,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Parsed::TooLarge,
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLarge,
        Err(_) => Parsed::Invalid,
    }
}

impl RequestHead {
    /// The first value of a field (name in lower case), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after the answer (HTTP/1.1 unless `close`;
    /// HTTP/1.0 only with `keep-alive`).
    pub fn keep_alive(&self) -> bool {
        if self.minor >= 1 {
            !self.connection_has("close")
        } else {
            self.connection_has("keep-alive")
        }
    }

    /// `Expect: 100-continue` (the client waits before sending its body).
    pub fn expects_continue(&self) -> bool {
        self.header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    pub fn body_len(&self) -> BodyLen {
        if self.headers.iter().any(|(n, _)| n == "transfer-encoding") {
            return BodyLen::Unsupported;
        }
        let mut len = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            let Some(n) = std::str::from_utf8(v)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<usize>().ok())
            else {
                return BodyLen::Invalid;
            };
            if len.is_some_and(|l| l != n) {
                return BodyLen::Invalid;
            }
            len = Some(n);
        }
        BodyLen::Bytes(len.unwrap_or(0))
    }
}

/// A response's status line and fields, ending with the blank line.
pub fn response_head<'a>(
    status: u16,
    reason: &str,
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(b: &[u8]) -> RequestHead {
        match parse(b, 8192) {
            Parsed::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_parse_incrementally_and_leave_the_rest() {
        let req =
            b"GET /artifacts/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\nGET /next";
        for cut in 0..req.len() - 9 {
            assert_eq!(parse(&req[..cut], 8192), Parsed::Partial, "{cut}");
        }
        let h = complete(req);
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/artifacts/vmlinuz");
        assert_eq!(h.header("range"), Some("bytes=0-9"));
        assert_eq!(&req[h.len..], b"GET /next");
        assert!(h.keep_alive());
        assert_eq!(h.body_len(), BodyLen::Bytes(0));
        // Leading blank lines are skipped and counted.
        let h = complete(b"\r\nHEAD / HTTP/1.0\r\n\r\n");
        assert_eq!((h.method.as_str(), h.len), ("HEAD", 21));
        assert!(!h.keep_alive());
    }

    #[test]
    fn bad_and_oversized_heads_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad, 8192), Parsed::Invalid, "{bad:?}");
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(long.as_bytes(), 8192), Parsed::TooLarge);
        assert_eq!(parse(&long.as_bytes()[..8500], 8192), Parsed::TooLarge);
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes(), 65536), Parsed::TooLarge);
    }

    #[test]
    fn connection_and_body_rules() {
        let h = complete(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!h.keep_alive());
        let h = complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive());
        let h = complete(b"POST /x HTTP/1.1\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.body_len(), BodyLen::Bytes(12));
        assert!(h.expects_continue());
        let h = complete(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.body_len(), BodyLen::Unsupported);
        for cl in ["-1", "1a", "", "1, 2", "99999999999999999999999"] {
            let r = format!("POST /x HTTP/1.1\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(complete(r.as_bytes()).body_len(), BodyLen::Invalid, "{cl}");
        }
        let h = complete(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(h.body_len(), BodyLen::Invalid);
        let h = complete(b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.body_len(), BodyLen::Bytes(3));
    }

    #[test]
    fn response_heads() {
        let h = response_head(206, "Partial Content", [("content-length", &b"10"[..])]);
        assert_eq!(
            h,
            b"HTTP/1.1 206 Partial Content\r\ncontent-length: 10\r\n\r\n".to_vec()
        );
    }
}
