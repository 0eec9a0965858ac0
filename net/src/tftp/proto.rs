//! TFTP packets (RFC 1350) with option extension (RFC 2347 OACK): pure decode/encode.
//!
//! `decode` never panics: any input either parses or returns a [`DecodeError`].

/// Largest packet we accept or build: 4-byte header + max blksize (RFC 2348: 65464).
pub const MAX_PACKET: usize = 4 + 65464;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq {
        filename: String,
        mode: String,
        /// Options in request order, names lower-cased.
        options: Vec<(String, String)>,
    },
    Wrq {
        filename: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    Oack {
        options: Vec<(String, String)>,
    },
}

/// TFTP error codes (RFC 1350 §5, RFC 2347 code 8).
pub mod code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const UNKNOWN_TID: u16 = 5;
    pub const OPTION_REFUSED: u16 = 8;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet shorter than its header")]
    Truncated,
    #[error("unknown opcode {0}")]
    Opcode(u16),
    #[error("string field not NUL-terminated")]
    Unterminated,
    #[error("string field is not valid text")]
    NotText,
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("packet longer than {MAX_PACKET} bytes")]
    TooLong,
}

fn take_str(b: &[u8]) -> Result<(&str, &[u8]), DecodeError> {
    let nul = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(DecodeError::Unterminated)?;
    let s = std::str::from_utf8(&b[..nul]).map_err(|_| DecodeError::NotText)?;
    Ok((s, &b[nul + 1..]))
}

fn take_options(mut b: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (name, rest) = take_str(b)?;
        if rest.is_empty() {
            // Some clients pad with a trailing NUL; a name without value is an error.
            if name.is_empty() {
                break;
            }
            return Err(DecodeError::OptionWithoutValue(name.to_string()));
        }
        let (value, rest) = take_str(rest)?;
        out.push((name.to_ascii_lowercase(), value.to_string()));
        b = rest;
    }
    Ok(out)
}

pub fn decode(b: &[u8]) -> Result<Packet, DecodeError> {
    if b.len() > MAX_PACKET {
        return Err(DecodeError::TooLong);
    }
    if b.len() < 2 {
        return Err(DecodeError::Truncated);
    }
    let op = u16::from_be_bytes([b[0], b[1]]);
    let body = &b[2..];
    match op {
        1 | 2 => {
            let (filename, rest) = take_str(body)?;
            let (mode, rest) = take_str(rest)?;
            let options = take_options(rest)?;
            let (filename, mode) = (filename.to_string(), mode.to_ascii_lowercase());
            Ok(if op == 1 {
                Packet::Rrq {
                    filename,
                    mode,
                    options,
                }
            } else {
                Packet::Wrq {
                    filename,
                    mode,
                    options,
                }
            })
        }
        3 => {
            if body.len() < 2 {
                return Err(DecodeError::Truncated);
            }
            Ok(Packet::Data {
                block: u16::from_be_bytes([body[0], body[1]]),
                data: body[2..].to_vec(),
            })
        }
        4 => {
            if body.len() < 2 {
                return Err(DecodeError::Truncated);
            }
            Ok(Packet::Ack {
                block: u16::from_be_bytes([body[0], body[1]]),
            })
        }
        5 => {
            if body.len() < 2 {
                return Err(DecodeError::Truncated);
            }
            let code = u16::from_be_bytes([body[0], body[1]]);
            // Be lenient: a missing terminator still yields the text.
            let msg = &body[2..];
            let end = msg.iter().position(|&c| c == 0).unwrap_or(msg.len());
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(&msg[..end]).into_owned(),
            })
        }
        6 => Ok(Packet::Oack {
            options: take_options(body)?,
        }),
        other => Err(DecodeError::Opcode(other)),
    }
}

impl Packet {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Rrq {
                filename,
                mode,
                options,
            }
            | Packet::Wrq {
                filename,
                mode,
                options,
            } => {
                let op: u16 = if matches!(self, Packet::Rrq { .. }) {
                    1
                } else {
                    2
                };
                out.extend_from_slice(&op.to_be_bytes());
                put_str(out, filename);
                put_str(out, mode);
                for (k, v) in options {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                put_str(out, message);
            }
            Packet::Oack { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_from_atftp_with_options() {
        // atftp --option "blksize 1468" --option "windowsize 8" -g -r big64.bin
        let mut b = vec![0, 1];
        b.extend_from_slice(b"big64.bin\0octet\0blksize\x001468\0windowsize\x008\0");
        let p = decode(&b).unwrap();
        assert_eq!(
            p,
            Packet::Rrq {
                filename: "big64.bin".into(),
                mode: "octet".into(),
                options: vec![
                    ("blksize".into(), "1468".into()),
                    ("windowsize".into(), "8".into())
                ],
            }
        );
        assert_eq!(p.to_bytes(), b);
    }

    #[test]
    fn round_trips() {
        for p in [
            Packet::Ack { block: 65535 },
            Packet::Data {
                block: 7,
                data: vec![1, 2, 3],
            },
            Packet::Data {
                block: 0,
                data: vec![],
            },
            Packet::Error {
                code: 1,
                message: "File not found".into(),
            },
            Packet::Oack {
                options: vec![("tsize".into(), "42".into())],
            },
            Packet::Wrq {
                filename: "x".into(),
                mode: "netascii".into(),
                options: vec![],
            },
        ] {
            assert_eq!(decode(&p.to_bytes()).unwrap(), p);
        }
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x00",
            b"\x00\x01",
            b"\x00\x01file",
            b"\x00\x01file\0",
            b"\x00\x01file\0octet\0blksize\0",
            b"\x00\x01\xff\xfe\0octet\0",
            b"\x00\x03\x00",
            b"\x00\x04",
            b"\x00\x05\x00",
            b"\x00\x09\x00\x01",
            b"\xff\xff",
        ];
        for c in cases {
            assert!(decode(c).is_err(), "{c:?} decoded");
        }
        assert_eq!(
            decode(&vec![0u8; MAX_PACKET + 1]),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn option_names_are_case_insensitive() {
        let mut b = vec![0, 1];
        b.extend_from_slice(b"f\0OCTET\0BlkSize\x00512\0");
        match decode(&b).unwrap() {
            Packet::Rrq { mode, options, .. } => {
                assert_eq!(mode, "octet");
                assert_eq!(options, vec![("blksize".to_string(), "512".to_string())]);
            }
            p => panic!("{p:?}"),
        }
    }

    /// Random and mutated inputs never panic, and whatever decodes re-encodes to a packet that
    /// decodes to the same value.
    #[test]
    fn random_inputs_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = {
            let mut b = vec![0, 1];
            b.extend_from_slice(b"pxelinux.0\0octet\0blksize\x001468\0tsize\x000\0");
            b
        };
        for i in 0..200_000 {
            let mut b = if i % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let mut b = seed.clone();
                for _ in 0..(next() % 4 + 1) {
                    let pos = (next() as usize) % b.len();
                    b[pos] = next() as u8;
                }
                b.truncate((next() as usize) % (b.len() + 1));
                b
            };
            if i % 3 == 0 {
                b[..].reverse();
            }
            if let Ok(p) = decode(&b) {
                assert_eq!(decode(&p.to_bytes()), Ok(p));
            }
        }
    }
}
