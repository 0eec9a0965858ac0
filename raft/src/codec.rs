//! Versioned encoding of everything rackd persists or sends between peers: one format byte
//! followed by a JSON body. A reader refuses formats it does not know instead of guessing.

use serde::{de::DeserializeOwned, Serialize};

/// Current encoding: JSON.
pub const FORMAT_V1_JSON: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty payload")]
    Empty,
    #[error("unknown encoding format {0}")]
    UnknownFormat(u8),
    #[error("malformed payload")]
    Json(#[source] serde_json::Error),
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_V1_JSON);
    // Our types always serialize (no non-string map keys outside serde_json's support).
    serde_json::to_writer(&mut out, v).expect("rackd types serialize to JSON");
    out
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, CodecError> {
    match b.first() {
        None => Err(CodecError::Empty),
        Some(&FORMAT_V1_JSON) => serde_json::from_slice(&b[1..]).map_err(CodecError::Json),
        Some(&f) => Err(CodecError::UnknownFormat(f)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v = vec![1u64, 2, 3];
        assert_eq!(decode::<Vec<u64>>(&encode(&v)).unwrap(), v);
        assert!(matches!(decode::<Vec<u64>>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Vec<u64>>(&[9, b'[']),
            Err(CodecError::UnknownFormat(9))
        ));
        assert!(matches!(
            decode::<Vec<u64>>(&[1, b'[']),
            Err(CodecError::Json(_))
        ));
    }
}
