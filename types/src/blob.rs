//! Content-addressed artifacts ("blobs"): the digest that names one, and the replicated record
//! of which nodes hold it. The bytes live outside the Raft log, in each holder's blob store.
//!
//! Plain data only (no I/O, no hashing library): the node's store computes digests.

use serde::{Deserialize, Serialize};

/// A SHA-256 content digest, written `sha256:<64 lower-case hex digits>` (the OCI spelling).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// The algorithm prefix of every digest.
pub const DIGEST_PREFIX: &str = "sha256:";

impl Digest {
    /// Parse `sha256:<hex>`; upper-case hex is refused (one spelling per blob).
    pub fn parse(s: &str) -> Result<Digest, String> {
        let hex = s.strip_prefix(DIGEST_PREFIX).ok_or_else(|| {
            format!("invalid digest {s:?}: expected sha256:<64 lower-case hex digits>")
        })?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "invalid digest {s:?}: expected sha256:<64 lower-case hex digits>"
            ));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of raw SHA-256 output.
    pub fn from_sha256(bytes: &[u8; 32]) -> Digest {
        let mut s = String::with_capacity(71);
        s.push_str(DIGEST_PREFIX);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part (a file name in a blob store).
    pub fn hex(&self) -> &str {
        &self.0[DIGEST_PREFIX.len()..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl schemars::JsonSchema for Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Digest".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^sha256:[0-9a-f]{64}$",
            "description": "SHA-256 content digest"
        })
    }
}

/// The replicated record of one stored artifact: its size and the nodes holding a verified
/// copy. An upload answers once at least two voters (or every voter, when fewer) hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    /// Node ids holding a verified copy, ascending.
    pub holders: Vec<u64>,
    /// When the first copy was recorded (leader's clock, ms since the epoch).
    pub created_at: u64,
}

/// Raw bytes (`application/octet-stream`) as a request or response body in the endpoint
/// table: blob uploads and downloads stream, they are never JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Octets;

/// Metrics in the Prometheus text exposition format (`text/plain; version=0.0.4`) as a
/// response body in the endpoint table (`GET /metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposition;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_in_one_spelling() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        let d = Digest::parse(&ok).unwrap();
        assert_eq!(d.as_str(), ok);
        assert_eq!(d.hex(), "ab".repeat(32));
        for bad in [
            String::new(),
            "ab".repeat(32),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}/..", "ab".repeat(31)),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(Digest::from_sha256(&[0xab; 32]), d);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
