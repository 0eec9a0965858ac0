//! The framing of the QUIC link between nodes (sans-IO: bytes in, values out). One request per
//! bidirectional stream: the asker writes a [`Head`]-framed [`LinkRequest`] and finishes its
//! side; the answerer writes a framed [`LinkReply`] and, for a blob, exactly the bytes it
//! announced, then finishes. A frame is `u32` big-endian length, then the payload in the peer
//! codec (a version byte and JSON), at most [`MAX_HEAD`] bytes.
//!
//! Layer: pure; depends on `rackd_raft::codec` and the peer request types only.

use rackd_raft::network::FetchBlobRequest;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest request or reply head.
pub const MAX_HEAD: usize = 64 * 1024;

/// What one stream asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkRequest {
    /// A byte range of a blob this node holds.
    FetchBlob(FetchBlobRequest),
}

/// The answer's head: for a blob, the number of bytes that follow it on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkReply {
    Bytes {
        len: u64,
    },
    /// The asker is not a member, the node has no copy, or the request made no sense.
    Refused {
        reason: String,
    },
}

/// `value` as a frame.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = rackd_raft::codec::encode(value);
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The length a frame's first four bytes announce, refused beyond [`MAX_HEAD`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, String> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > MAX_HEAD {
        return Err(format!("a link frame of {n} bytes (at most {MAX_HEAD})"));
    }
    Ok(n)
}

/// A frame's payload (after its length).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    rackd_raft::codec::decode(payload).map_err(|e| format!("a malformed link frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_or_malformed_ones_are_refused() {
        let req = LinkRequest::FetchBlob(FetchBlobRequest {
            digest: format!("sha256:{}", "ab".repeat(32)),
            offset: 7,
            len: 1 << 30,
        });
        let f = encode(&req);
        let n = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, f.len() - 4);
        let LinkRequest::FetchBlob(back) = decode::<LinkRequest>(&f[4..]).unwrap();
        assert_eq!((back.offset, back.len), (7, 1 << 30));
        let r = LinkReply::Refused {
            reason: "no copy".into(),
        };
        let f = encode(&r);
        assert_eq!(decode::<LinkReply>(&f[4..]).unwrap(), r);
        assert!(frame_len((MAX_HEAD as u32 + 1).to_be_bytes()).is_err());
        assert!(decode::<LinkReply>(b"\x01{\"kind\":\"bytes\"}").is_err());
        assert!(decode::<LinkReply>(b"").is_err());
    }
}
