//! The backup file: a consistent copy of the replicated state, and the cluster CA sealed with
//! the operator's passphrase, in one versioned, checksummed file (`rackd backup create`).
//!
//! Layout (format 1):
//!
//! ```text
//! RACKDBAK 1\n                         magic and format
//! {header JSON}\n                      [`Header`]: cluster, when, the index it stands at, the
//!                                      state's length and SHA-256, the sealed CA
//! <state bytes>                        the state as a Raft snapshot encodes it
//! \n<sha256 hex of all the above>\n    the whole file's digest
//! ```
//!
//! The CA's key is what lets a restored cluster keep its identity: node certificates and
//! location keys (and so the sealed BMC passwords and deploy tokens) all derive from it. It
//! never leaves a node in the clear: it is sealed with AES-256-GCM under a key stretched from
//! the passphrase by PBKDF2-HMAC-SHA256 ([`PBKDF2_ITERATIONS`]), with the header's other
//! fields as associated data, so a file whose header was edited cannot be opened either.
//!
//! Pure: bytes in, bytes out; no I/O. Layer 0: depends on `rackd_raft` and `rackd_storage`'s
//! state encoding only.

use std::num::NonZeroU32;

use base64::Engine;
use rackd_raft::state::State;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line of every backup.
pub const MAGIC: &[u8] = b"RACKDBAK 1\n";
/// PBKDF2 rounds (OWASP's 2023 figure for HMAC-SHA256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// A passphrase shorter than this is refused.
pub const MIN_PASSPHRASE: usize = 12;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub cluster_id: String,
    /// When the copy was taken (the serving node's clock, ms since the epoch).
    pub created_at: u64,
    /// The node that took it.
    pub node_id: u64,
    /// The log index the state stands at (everything up to it applied, nothing after).
    pub applied_index: u64,
    /// Journal events and records, for a reader who wants to know what is inside.
    pub counts: Counts,
    pub state_len: u64,
    pub state_sha256: String,
    pub ca: SealedCa,
}

/// How many records of each kind the state holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub locations: u64,
    pub racks: u64,
    pub machines: u64,
    pub subnets: u64,
    pub images: u64,
    pub tasks: u64,
    pub api_tokens: u64,
    pub blobs: u64,
    pub events: u64,
    /// Absent in files from before webhooks (they held none).
    #[serde(default)]
    pub webhooks: u64,
}

impl Counts {
    pub fn of(s: &State) -> Counts {
        Counts {
            locations: s.locations.len() as u64,
            racks: s.racks.len() as u64,
            machines: s.machines.len() as u64,
            subnets: s.subnets.len() as u64,
            images: s.images.len() as u64,
            tasks: s.tasks.len() as u64,
            api_tokens: s.api_tokens.len() as u64,
            blobs: s.blobs.len() as u64,
            events: s.events.len() as u64,
            webhooks: s.webhooks.len() as u64,
        }
    }
}

/// The cluster CA (certificate and key, PEM), sealed with a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCa {
    pub kdf: String,
    pub iterations: u32,
    pub salt: String,
    pub nonce: String,
    pub ciphertext: String,
}

/// The CA as sealed: its certificate and key in PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a rackd backup (no RACKDBAK header)")]
    NotABackup,
    #[error("backup format {0} is not one this build reads")]
    Format(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("the passphrase is wrong, or the backup's header was altered")]
    WrongPassphrase,
    #[error("the passphrase must be at least {MIN_PASSPHRASE} characters")]
    WeakPassphrase,
    #[error("cannot encode the backup: {0}")]
    Encode(String),
}

/// What a verified backup holds.
#[derive(Debug, Clone)]
pub struct Backup {
    pub header: Header,
    pub state: State,
}

/// Everything [`Header`] carries but the state's digest and the sealed CA: the parts the
/// seal binds (as associated data).
fn bound_fields(h: &Header) -> Vec<u8> {
    format!(
        "{}\0{}\0{}\0{}",
        h.cluster_id, h.created_at, h.node_id, h.applied_index
    )
    .into_bytes()
}

fn stretch(passphrase: &str, salt: &[u8], iterations: u32) -> LessSafeKey {
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations.max(1)).expect("non-zero"),
        salt,
        passphrase.as_bytes(),
        &mut key,
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("32-byte key"))
}

fn seal_ca(ca: &CaPem, passphrase: &str, bound: &[u8]) -> Result<SealedCa, BackupError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(BackupError::WeakPassphrase);
    }
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
        .map_err(|_| BackupError::Encode("no randomness".into()))?;
    let key = stretch(passphrase, &salt, PBKDF2_ITERATIONS);
    let mut data = serde_json::to_vec(ca).map_err(|e| BackupError::Encode(e.to_string()))?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(bound),
        &mut data,
    )
    .map_err(|_| BackupError::Encode("sealing failed".into()))?;
    Ok(SealedCa {
        kdf: "pbkdf2-hmac-sha256/aes-256-gcm".into(),
        iterations: PBKDF2_ITERATIONS,
        salt: B64.encode(salt),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(data),
    })
}

/// Write a backup of `state` (at `applied_index`) with `ca` sealed under `passphrase`.
pub fn encode(
    cluster_id: &str,
    node_id: u64,
    created_at: u64,
    applied_index: u64,
    state: &State,
    ca: &CaPem,
    passphrase: &str,
) -> Result<Vec<u8>, BackupError> {
    let body = rackd_storage::sm_store::encode_state(state)
        .map_err(|e| BackupError::Encode(e.to_string()))?;
    let mut header = Header {
        cluster_id: cluster_id.to_string(),
        created_at,
        node_id,
        applied_index,
        counts: Counts::of(state),
        state_len: body.len() as u64,
        state_sha256: hex::encode(Sha256::digest(&body)),
        ca: SealedCa {
            kdf: String::new(),
            iterations: 0,
            salt: String::new(),
            nonce: String::new(),
            ciphertext: String::new(),
        },
    };
    header.ca = seal_ca(ca, passphrase, &bound_fields(&header))?;
    let head = serde_json::to_vec(&header).map_err(|e| BackupError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + head.len() + body.len() + 66);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&head);
    out.push(b'\n');
    out.extend_from_slice(&body);
    let digest = hex::encode(Sha256::digest(&out));
    out.push(b'\n');
    out.extend_from_slice(digest.as_bytes());
    out.push(b'\n');
    Ok(out)
}

/// Check a backup whole (magic, format, the file's and the state's digests) and decode it.
/// The CA stays sealed: [`open_ca`] opens it with the passphrase.
pub fn decode(file: &[u8]) -> Result<Backup, BackupError> {
    if !file.starts_with(b"RACKDBAK ") {
        return Err(BackupError::NotABackup);
    }
    if !file.starts_with(MAGIC) {
        let line = file.split(|b| *b == b'\n').next().unwrap_or_default();
        return Err(BackupError::Format(
            String::from_utf8_lossy(&line[9..]).into_owned(),
        ));
    }
    let damaged = |s: &str| BackupError::Damaged(s.to_string());
    // The trailer: "\n" + 64 hex + "\n".
    if file.len() < MAGIC.len() + 66 || !file.ends_with(b"\n") {
        return Err(damaged("it is cut short"));
    }
    let (signed, trailer) = file.split_at(file.len() - 66);
    let want = std::str::from_utf8(&trailer[1..65]).map_err(|_| damaged("no digest"))?;
    if trailer[0] != b'\n' || hex::encode(Sha256::digest(signed)) != want {
        return Err(damaged("its SHA-256 does not match (cut short or altered)"));
    }
    let rest = &signed[MAGIC.len()..];
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| damaged("no header"))?;
    let header: Header = serde_json::from_slice(&rest[..nl])
        .map_err(|e| BackupError::Damaged(format!("header: {e}")))?;
    let body = &rest[nl + 1..];
    if body.len() as u64 != header.state_len
        || hex::encode(Sha256::digest(body)) != header.state_sha256
    {
        return Err(damaged("the state does not match its header"));
    }
    let state = rackd_storage::sm_store::decode_state(body)
        .map_err(|e| BackupError::Damaged(e.to_string()))?;
    if Counts::of(&state) != header.counts {
        return Err(damaged(
            "the state's records do not match the header's counts",
        ));
    }
    Ok(Backup { header, state })
}

/// Open the sealed CA of a decoded backup with `passphrase`.
pub fn open_ca(header: &Header, passphrase: &str) -> Result<CaPem, BackupError> {
    let s = &header.ca;
    let bad = || BackupError::Damaged("the sealed CA is malformed".into());
    let salt = B64.decode(&s.salt).map_err(|_| bad())?;
    let nonce: [u8; NONCE_LEN] = B64
        .decode(&s.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(bad)?;
    let mut data = B64.decode(&s.ciphertext).map_err(|_| bad())?;
    if s.iterations == 0 || s.iterations > 100 * PBKDF2_ITERATIONS {
        return Err(bad());
    }
    let key = stretch(passphrase, &salt, s.iterations);
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound_fields(header)),
            &mut data,
        )
        .map_err(|_| BackupError::WrongPassphrase)?;
    serde_json::from_slice(plain).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackd_raft::cmd::{Command, Request};
    use rackd_types::payload::CreateLocation;

    const PASS: &str = "correct horse battery";

    fn ca() -> CaPem {
        CaPem {
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    fn state() -> State {
        let mut s = State::default();
        for (i, name) in ["dc1", "dc2"].iter().enumerate() {
            let r = Request {
                time_ms: 1_000 + i as u64,
                actor: "t".into(),
                idempotency_key: None,
                cmd: Command::CreateLocation(CreateLocation {
                    name: name.to_string(),
                    description: String::new(),
                    discovery: false,
                }),
            };
            s.apply(&r);
        }
        s
    }

    fn file() -> Vec<u8> {
        encode("c1", 2, 5_000, 42, &state(), &ca(), PASS).unwrap()
    }

    #[test]
    fn a_backup_reads_back_whole_and_its_ca_opens_with_the_passphrase_only() {
        let f = file();
        let b = decode(&f).unwrap();
        assert_eq!(b.header.cluster_id, "c1");
        assert_eq!(b.header.applied_index, 42);
        assert_eq!(b.header.counts.locations, 2);
        assert_eq!(b.state.locations.len(), 2);
        assert_eq!(
            serde_json::to_value(&b.state.locations).unwrap(),
            serde_json::to_value(&state().locations).unwrap()
        );
        assert_eq!(open_ca(&b.header, PASS).unwrap(), ca());
        assert_eq!(
            open_ca(&b.header, "wrong passphrase!").unwrap_err(),
            BackupError::WrongPassphrase
        );
        // The key never appears in the clear.
        let text = String::from_utf8_lossy(&f);
        assert!(
            !text.contains("secret"),
            "the CA key is in the file in clear"
        );
    }

    /// Every single-byte change anywhere in the file is detected, and every cut.
    #[test]
    fn any_altered_or_cut_file_is_refused() {
        let f = file();
        for i in (0..f.len()).step_by(7) {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(decode(&g).is_err(), "a change at byte {i} went unnoticed");
        }
        for cut in [0, 5, MAGIC.len(), f.len() / 2, f.len() - 1] {
            assert!(decode(&f[..cut]).is_err(), "a cut at {cut} went unnoticed");
        }
        assert_eq!(decode(b"hello").unwrap_err(), BackupError::NotABackup);
        assert!(matches!(
            decode(b"RACKDBAK 9\n...").unwrap_err(),
            BackupError::Format(_)
        ));
    }

    /// A header edited and its digests recomputed (a forger without the passphrase) still
    /// cannot open the CA: the seal binds the header's fields.
    #[test]
    fn an_edited_header_cannot_open_the_ca() {
        let b = decode(&file()).unwrap();
        let mut h = b.header.clone();
        h.applied_index = 43;
        assert_eq!(open_ca(&h, PASS).unwrap_err(), BackupError::WrongPassphrase);
        let mut h = b.header;
        h.cluster_id = "other".into();
        assert_eq!(open_ca(&h, PASS).unwrap_err(), BackupError::WrongPassphrase);
    }

    #[test]
    fn a_short_passphrase_is_refused() {
        let e = encode("c1", 2, 5_000, 42, &state(), &ca(), "short").unwrap_err();
        assert_eq!(e, BackupError::WeakPassphrase);
    }
}
