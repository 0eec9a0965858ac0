//! The framing of the QUIC link between nodes (sans-IO: bytes in, values out). One request per
//! bidirectional stream: the asker writes a framed [`LinkRequest`]; the answerer writes a
//! framed [`LinkReply`] and, for a blob, exactly the bytes it announced, then finishes. A frame
//! is `u32` big-endian length, then the payload in the peer codec (a version byte and JSON), at
//! most [`MAX_HEAD`] bytes. A BMC tunnel then carries datagrams both ways on the same stream,
//! each a `u16` big-endian length and at most [`MAX_DATAGRAM`] bytes, until either side
//! finishes.
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
    /// Relay IPMI datagrams between the asker's IPMI proxy and the BMC of machine
    /// `machine_id` of this node's location, for an operator at `source` (who must hold a
    /// BMC session for the machine).
    BmcTunnel { machine_id: u64, source: String },
}

/// The answer's head: for a blob, the number of bytes that follow it on the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkReply {
    Bytes {
        len: u64,
    },
    /// The tunnel to the BMC at `bmc` is open: datagrams follow.
    Tunnel {
        bmc: String,
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

/// Largest datagram a BMC tunnel carries (RMCP datagrams are far smaller).
pub const MAX_DATAGRAM: usize = 2048;

/// A datagram as a BMC tunnel carries it; `None` when it is too long.
pub fn encode_datagram(d: &[u8]) -> Option<Vec<u8>> {
    if d.len() > MAX_DATAGRAM {
        return None;
    }
    let mut out = Vec::with_capacity(2 + d.len());
    out.extend_from_slice(&(d.len() as u16).to_be_bytes());
    out.extend_from_slice(d);
    Some(out)
}

/// The length a tunnel datagram's two-byte prefix announces, refused beyond [`MAX_DATAGRAM`].
pub fn datagram_len(prefix: [u8; 2]) -> Result<usize, String> {
    let n = u16::from_be_bytes(prefix) as usize;
    if n > MAX_DATAGRAM {
        return Err(format!(
            "a tunnel datagram of {n} bytes (at most {MAX_DATAGRAM})"
        ));
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
        let LinkRequest::FetchBlob(back) = decode::<LinkRequest>(&f[4..]).unwrap() else {
            panic!("not a blob request")
        };
        assert_eq!((back.offset, back.len), (7, 1 << 30));
        let r = LinkReply::Refused {
            reason: "no copy".into(),
        };
        let f = encode(&r);
        assert_eq!(decode::<LinkReply>(&f[4..]).unwrap(), r);
        assert!(frame_len((MAX_HEAD as u32 + 1).to_be_bytes()).is_err());
        assert!(decode::<LinkReply>(b"\x01{\"kind\":\"bytes\"}").is_err());
        assert!(decode::<LinkReply>(b"").is_err());
        // Tunnel datagrams.
        let d = encode_datagram(b"rmcp").unwrap();
        assert_eq!(datagram_len(d[..2].try_into().unwrap()).unwrap(), 4);
        assert_eq!(&d[2..], b"rmcp");
        assert!(encode_datagram(&[0; MAX_DATAGRAM + 1]).is_none());
        assert!(datagram_len((MAX_DATAGRAM as u16 + 1).to_be_bytes()).is_err());
    }
}
