//! Where this node gets the key of a location's sealed secrets ([`super::sealing`]): derived
//! from the CA key when this node holds it (voters); else its own copy in
//! `pki/location-<id>.key` (0600); else asked of the voters (leader first, `LocationKey` over
//! mutual TLS) and kept, so a cut-off location node still opens its machines' passwords.
//!
//! Layer: part of `cluster`; uses `pki`, `sealing` and the peer network.

use std::time::Duration;

use rackd_types::ApiError;

use super::pki::Pki;
use super::sealing::LocationKey;
use super::ClusterHandle;

fn key_file(data_dir: &std::path::Path, location_id: u64) -> std::path::PathBuf {
    data_dir
        .join("pki")
        .join(format!("location-{location_id}.key"))
}

impl ClusterHandle {
    pub async fn location_key(&self, location_id: u64) -> Result<LocationKey, ApiError> {
        let unavailable = |e: String| ApiError::unavailable(e);
        match Pki::in_data_dir(&self.data_dir).load_ca() {
            Ok(Some(ca)) => {
                return LocationKey::of_ca(&ca, location_id).map_err(|e| unavailable(e.to_string()))
            }
            Ok(None) => {}
            Err(e) => return Err(unavailable(format!("cluster CA: {e}"))),
        }
        let path = key_file(&self.data_dir, location_id);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return LocationKey::from_hex(location_id, &text).ok_or_else(|| {
                ApiError::internal(format!("{} is not a location key", path.display()))
            });
        }
        let mut errors = Vec::new();
        for (id, addr) in self.other_voters_leader_first() {
            match self
                .net
                .location_key(id, &addr, location_id, Duration::from_secs(5))
                .await
            {
                Ok(hex_key) => {
                    let key = LocationKey::from_hex(location_id, &hex_key).ok_or_else(|| {
                        ApiError::internal(format!("node {id} sent no location key"))
                    })?;
                    super::secrets::write_file_atomically(&path, &key.to_hex(), 0o600)
                        .map_err(|e| ApiError::internal(format!("keep {}: {e}", path.display())))?;
                    tracing::info!(
                        location_id,
                        from = id,
                        "keeps the key of its location's secrets"
                    );
                    return Ok(key);
                }
                Err(e) => errors.push(format!("node {id}: {e}")),
            }
        }
        Err(unavailable(format!(
            "no voter handed out location {location_id}'s key: {}",
            errors.join("; ")
        )))
    }
}
