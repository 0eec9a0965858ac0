//! Secrets sealed per location (review security M1). A BMC password is stored, logged by Raft
//! and snapshotted only as `rackd-sealed:v1:<purpose>:<location id>:<hex>`: AES-256-GCM under
//! the key of the machine's location. Location keys are derived from the cluster's secrets
//! root, which is derived from the cluster CA key (HKDF-SHA256, its own label), so exactly the
//! nodes that hold the CA key (voters) hold every location key, and nothing new has to be
//! handed out to them. A location learner never holds the CA key: it asks a voter for the key
//! of the location it serves (`LocationKey` peer RPC, over mutual TLS) and keeps it in
//! `pki/location-<id>.key` (0600), so a site keeps powering its machines when cut off, and a
//! stolen learner disk yields that site's passwords only.
//!
//! Sealing is deterministic (the nonce is an HMAC of the purpose, location and plaintext under
//! the location key, as in SIV constructions): a retried request seals to the same text, so
//! its idempotency record still matches. It reveals that two machines of one location share a
//! password, nothing else.
//!
//! Layer: a leaf of `cluster` (ring, rcgen for the CA key's DER); no Raft, no storage.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::{hkdf, hmac};

/// What a sealed value is for (bound into the ciphertext: one cannot stand in for another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    BmcPassword,
    DeployToken,
    /// A webhook's signing secret, sealed with [`SecretsRoot::voters_key`].
    WebhookSecret,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::BmcPassword => "bmc-password",
            Purpose::DeployToken => "deploy-token",
            Purpose::WebhookSecret => "webhook-secret",
        }
    }
}

const PREFIX: &str = "rackd-sealed:v1:";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("not a sealed value")]
    NotSealed,
    #[error("sealed for {found}, not {wanted}")]
    WrongPurpose { wanted: String, found: String },
    #[error("sealed for location {0}, and this node holds no key for it")]
    NoKey(u64),
    #[error(
        "the sealed value does not open with location {0}'s key (damaged, or another cluster's)"
    )]
    Damaged(u64),
    #[error("the cluster CA key cannot be read: {0}")]
    CaKey(String),
}

/// Whether a stored secret is sealed (values stored before sealing are plaintext).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// The location a sealed value was sealed for.
pub fn sealed_location(value: &str) -> Option<u64> {
    let rest = value.strip_prefix(PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    let _purpose = parts.next()?;
    parts.next()?.parse().ok()
}

/// The key of one location (32 bytes). Secret: never logged (no Debug of the bytes).
#[derive(Clone)]
pub struct LocationKey {
    pub location_id: u64,
    bytes: [u8; 32],
}

impl std::fmt::Debug for LocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocationKey")
            .field("location_id", &self.location_id)
            .finish_non_exhaustive()
    }
}

impl LocationKey {
    /// The key of location `location_id`, derived from the cluster CA's key (where it is held).
    pub fn of_ca(ca: &super::pki::CaBundle, location_id: u64) -> Result<LocationKey, SealError> {
        SecretsRoot::from_ca_key(ca.key_pem()).map(|r| r.location_key(location_id))
    }

    /// The voters' key ([`SecretsRoot::voters_key`]) of the cluster CA (where it is held).
    pub fn voters_of_ca(ca: &super::pki::CaBundle) -> Result<LocationKey, SealError> {
        SecretsRoot::from_ca_key(ca.key_pem()).map(|r| r.voters_key())
    }

    pub fn from_hex(location_id: u64, hex_text: &str) -> Option<LocationKey> {
        let v = hex::decode(hex_text.trim()).ok()?;
        let bytes: [u8; 32] = v.try_into().ok()?;
        Some(LocationKey { location_id, bytes })
    }

    /// The key as hex (for the `LocationKey` RPC and the key file; secret).
    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    fn aad(&self, purpose: Purpose) -> String {
        format!("{PREFIX}{}:{}:", purpose.as_str(), self.location_id)
    }

    /// Seal `plaintext` for `purpose` (deterministic, see the module header).
    pub fn seal(&self, purpose: Purpose, plaintext: &str) -> String {
        let aad = self.aad(purpose);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.bytes),
            &[aad.as_bytes(), b"\0", plaintext.as_bytes()].concat(),
        );
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32-byte AES-256 key"),
        );
        let mut buf = plaintext.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .expect("AES-GCM seals any plaintext this size");
        format!("{aad}{}{}", hex::encode(nonce), hex::encode(buf))
    }

    /// Open a value this key sealed for `purpose`.
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Result<String, SealError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SealError::NotSealed)?;
        let mut parts = rest.splitn(3, ':');
        let (Some(p), Some(loc), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::NotSealed);
        };
        if p != purpose.as_str() {
            return Err(SealError::WrongPurpose {
                wanted: purpose.as_str().into(),
                found: p.into(),
            });
        }
        let loc: u64 = loc.parse().map_err(|_| SealError::NotSealed)?;
        if loc != self.location_id {
            return Err(SealError::NoKey(loc));
        }
        let damaged = || SealError::Damaged(loc);
        let raw = hex::decode(body).map_err(|_| damaged())?;
        if raw.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.bytes).expect("32-byte AES-256 key"),
        );
        let mut buf = ct.to_vec();
        let aad = self.aad(purpose);
        let plain = key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| damaged())?;
        String::from_utf8(plain.to_vec()).map_err(|_| damaged())
    }
}

/// The cluster's secrets root, derived from the CA key (held by voters only).
pub struct SecretsRoot {
    prk: hkdf::Prk,
}

impl SecretsRoot {
    /// From the cluster CA key (PEM).
    pub fn from_ca_key(ca_key_pem: &str) -> Result<SecretsRoot, SealError> {
        let der = rcgen::KeyPair::from_pem(ca_key_pem)
            .map_err(|e| SealError::CaKey(e.to_string()))?
            .serialize_der();
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"rackd secrets root v1");
        Ok(SecretsRoot {
            prk: salt.extract(&der),
        })
    }

    /// The key of secrets only voters open (webhook secrets: the leader, always a voter,
    /// signs with them). It seals as "location 0", an id no location has, and is derived
    /// under its own label, so no location's key opens it and it is never handed to a
    /// learner (the `LocationKey` RPC hands out the key of the learner's location only).
    pub fn voters_key(&self) -> LocationKey {
        LocationKey {
            location_id: 0,
            bytes: self.derive(b"rackd voters key v1"),
        }
    }

    /// The key of location `location_id` (ids are never reused, names may change).
    pub fn location_key(&self, location_id: u64) -> LocationKey {
        let info = format!("rackd location key v1:{location_id}");
        LocationKey {
            location_id,
            bytes: self.derive(info.as_bytes()),
        }
    }

    /// 32 bytes expanded from the root under the label `info`.
    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let info = [info];
        let okm = self
            .prk
            .expand(&info, KeyLen)
            .expect("HKDF-SHA256 yields 32 bytes");
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes).expect("HKDF-SHA256 yields 32 bytes");
        bytes
    }
}

struct KeyLen;

impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pki::CaBundle;

    fn root() -> SecretsRoot {
        let ca = CaBundle::generate("c1", std::time::SystemTime::now()).unwrap();
        SecretsRoot::from_ca_key(ca.key_pem()).unwrap()
    }

    #[test]
    fn sealed_values_open_with_their_location_key_only() {
        let r = root();
        let (k1, k2) = (r.location_key(1), r.location_key(2));
        let s = k1.seal(Purpose::BmcPassword, "hunter2");
        assert!(is_sealed(&s) && !s.contains("hunter2"), "{s}");
        assert_eq!(sealed_location(&s), Some(1));
        assert_eq!(k1.open(Purpose::BmcPassword, &s).unwrap(), "hunter2");
        assert_eq!(k2.open(Purpose::BmcPassword, &s), Err(SealError::NoKey(1)));
        // The same location id under another cluster's root: refused, not garbage.
        let other = root().location_key(1);
        assert_eq!(
            other.open(Purpose::BmcPassword, &s),
            Err(SealError::Damaged(1))
        );
        // Relabelled for another location, or tampered with: refused.
        let moved = s.replacen(":1:", ":2:", 1);
        assert!(k2.open(Purpose::BmcPassword, &moved).is_err());
        let mut bad = s.clone();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            k1.open(Purpose::BmcPassword, &bad),
            Err(SealError::Damaged(1))
        );
        assert_eq!(
            k1.open(Purpose::BmcPassword, "hunter2"),
            Err(SealError::NotSealed)
        );
        // Empty and non-ASCII passwords round-trip.
        for p in ["", "pässwörd 🔑"] {
            assert_eq!(
                k1.open(Purpose::BmcPassword, &k1.seal(Purpose::BmcPassword, p))
                    .unwrap(),
                p
            );
        }
    }

    #[test]
    fn the_voters_key_is_no_location_key() {
        let r = root();
        let v = r.voters_key();
        let s = v.seal(Purpose::WebhookSecret, "whsec");
        assert_eq!(sealed_location(&s), Some(0));
        assert_eq!(v.open(Purpose::WebhookSecret, &s).unwrap(), "whsec");
        assert_ne!(v.to_hex(), r.location_key(0).to_hex());
        assert_eq!(
            r.location_key(0).open(Purpose::WebhookSecret, &s),
            Err(SealError::Damaged(0))
        );
        assert!(v.open(Purpose::BmcPassword, &s).is_err());
    }

    #[test]
    fn sealing_is_deterministic_per_key_and_the_root_per_ca() {
        let ca = CaBundle::generate("c1", std::time::SystemTime::now()).unwrap();
        let a = SecretsRoot::from_ca_key(ca.key_pem())
            .unwrap()
            .location_key(7);
        // Another voter holding the same CA key (as handed over: same PEM) derives the same key.
        let b = SecretsRoot::from_ca_key(&format!("{}\n", ca.key_pem().trim()))
            .unwrap()
            .location_key(7);
        assert_eq!(a.to_hex(), b.to_hex());
        let s = a.seal(Purpose::BmcPassword, "x");
        assert_eq!(
            s,
            b.seal(Purpose::BmcPassword, "x"),
            "a retried request seals alike"
        );
        assert_ne!(s, a.seal(Purpose::BmcPassword, "y"));
        assert_eq!(
            LocationKey::from_hex(7, &a.to_hex())
                .unwrap()
                .open(Purpose::BmcPassword, &s)
                .unwrap(),
            "x"
        );
        assert!(
            !format!("{a:?}").contains(&a.to_hex()),
            "no key bytes in Debug"
        );
    }
}
