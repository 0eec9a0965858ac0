//! A decoder of server-sent events (`text/event-stream`, the WHATWG HTML "event stream
//! interpretation"): bytes in, complete messages out, however the bytes were split. Pure: no
//! I/O, no clock. Lines end in LF, CRLF or CR; `:` lines are comments; a message is
//! dispatched at an empty line when it carried data.
//!
//! Leaf module: no crate imports.

/// A line longer than this is refused (a server gone wrong, not a message).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The `event:` type (`None`: the default type, "message").
    pub event: Option<String>,
    /// The `id:` field, when the message carried one.
    pub id: Option<String>,
    /// The `data:` lines joined with LF.
    pub data: String,
}

/// The stream broke the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line is longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// Decoder state between chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last chunk ended in CR: an LF opening the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

impl Decoder {
    /// Feed `bytes`; returns the messages they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Message>, SseError> {
        let mut out = Vec::new();
        for &b in bytes {
            if std::mem::take(&mut self.after_cr) && b == b'\n' {
                continue;
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(m) = self.line_ended(&line) {
                        out.push(m);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_ended(&mut self, line: &[u8]) -> Option<Message> {
        if line.is_empty() {
            let event = self.event.take();
            let id = self.id.take();
            return self.data.take().map(|mut data| {
                data.pop(); // the LF after the last data line
                Message { event, id, data }
            });
        }
        if line[0] == b':' {
            return None;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        match field {
            "data" => {
                let d = self.data.get_or_insert_with(String::new);
                d.push_str(value);
                d.push('\n');
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // retry, unknown fields: ignored
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIRE: &str =
        ": keep-alive\n\nid: 1\ndata: {\"a\":1}\n\nevent: gap\r\ndata:{\"after\":1}\r\n\r\n\
                        data: one\rdata: two\r\rid\ndata\n\n";

    fn want() -> Vec<Message> {
        vec![
            Message {
                event: None,
                id: Some("1".into()),
                data: "{\"a\":1}".into(),
            },
            Message {
                event: Some("gap".into()),
                id: None,
                data: "{\"after\":1}".into(),
            },
            Message {
                event: None,
                id: None,
                data: "one\ntwo".into(),
            },
            Message {
                event: None,
                id: Some(String::new()),
                data: String::new(),
            },
        ]
    }

    #[test]
    fn decodes_every_field_and_line_ending() {
        let mut d = Decoder::default();
        assert_eq!(d.push(WIRE.as_bytes()).unwrap(), want());
    }

    /// However the wire is cut into chunks, the same messages come out.
    #[test]
    fn any_split_gives_the_same_messages() {
        let wire = WIRE.as_bytes();
        for a in 0..wire.len() {
            for b in a..wire.len() {
                let mut d = Decoder::default();
                let mut got = d.push(&wire[..a]).unwrap();
                got.extend(d.push(&wire[a..b]).unwrap());
                got.extend(d.push(&wire[b..]).unwrap());
                assert_eq!(got, want(), "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn a_message_without_data_or_an_unended_one_is_not_dispatched() {
        let mut d = Decoder::default();
        assert!(d.push(b"event: x\nid: 3\n\n").unwrap().is_empty());
        assert!(d.push(b"data: half").unwrap().is_empty());
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut d = Decoder::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut r = Ok(Vec::new());
        for _ in 0..17 {
            r = d.push(&chunk);
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(SseError::LineTooLong));
    }
}
