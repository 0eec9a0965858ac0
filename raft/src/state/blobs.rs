//! Apply handlers for the blob records: which nodes hold a verified copy of each
//! content-addressed artifact. The bytes never enter the log; a record only names the digest,
//! the size and the holders. A removed member leaves every record it held
//! ([`State::drop_holder_everywhere`], from `MarkNodeRemoved`).

use rackd_types::{ApiError, Blob, Digest};

use super::State;
use crate::cmd::Applied;

impl State {
    pub(super) fn record_blob(
        &mut self,
        now: u64,
        actor: &str,
        digest: &Digest,
        size: u64,
        node: u64,
    ) -> Result<Applied, ApiError> {
        if self.meta.removed_nodes.contains(&node) {
            return Err(ApiError::conflict(format!(
                "node {node} was removed from the cluster: it holds nothing"
            )));
        }
        let key = digest.as_str().to_string();
        let blob = match self.blobs.get(&key).cloned() {
            Some(mut b) => {
                if b.size != size {
                    return Err(ApiError::conflict(format!(
                        "blob {digest} is recorded with {} bytes, not {size}",
                        b.size
                    )));
                }
                if let Err(at) = b.holders.binary_search(&node) {
                    b.holders.insert(at, node);
                    self.blobs.insert(key, b.clone());
                }
                b
            }
            None => {
                let b = Blob {
                    digest: digest.clone(),
                    size,
                    holders: vec![node],
                    created_at: now,
                };
                self.blobs.insert(key, b.clone());
                self.journal(
                    now,
                    actor,
                    "blob.stored",
                    "blob",
                    None,
                    format!("blob {digest} ({size} bytes) stored on node {node}"),
                );
                b
            }
        };
        Ok(Applied::Blob(blob))
    }

    pub(super) fn drop_blob_holder(
        &mut self,
        now: u64,
        actor: &str,
        digest: &Digest,
        node: u64,
    ) -> Result<Applied, ApiError> {
        let key = digest.as_str().to_string();
        let Some(mut b) = self.blobs.get(&key).cloned() else {
            return Err(ApiError::not_found(format!("blob {digest} not found")));
        };
        if let Ok(at) = b.holders.binary_search(&node) {
            b.holders.remove(at);
            self.blobs.insert(key, b.clone());
            self.journal(
                now,
                actor,
                "blob.copy_lost",
                "blob",
                None,
                format!(
                    "node {node} lost its copy of blob {digest}; {} copies left",
                    b.holders.len()
                ),
            );
        }
        Ok(Applied::Blob(b))
    }

    pub(super) fn forget_blob(
        &mut self,
        now: u64,
        actor: &str,
        digest: &Digest,
    ) -> Result<Applied, ApiError> {
        if let Some(img) = self.image_using_blob(digest) {
            return Err(ApiError::conflict(format!(
                "blob {digest} is part of image {}: change or delete the image first",
                img.name
            )));
        }
        if self.blobs.remove(&digest.as_str().to_string()).is_none() {
            return Err(ApiError::not_found(format!("blob {digest} not found")));
        }
        self.journal(
            now,
            actor,
            "blob.forgotten",
            "blob",
            None,
            format!("blob {digest} forgotten; its holders remove their copies"),
        );
        Ok(Applied::Done)
    }

    /// Member `node` left the cluster: it holds nothing any more.
    pub(super) fn drop_holder_everywhere(&mut self, node: u64) {
        let held: Vec<Blob> = self
            .blobs
            .values()
            .filter(|b| b.holders.binary_search(&node).is_ok())
            .cloned()
            .collect();
        for mut b in held {
            b.holders.retain(|&h| h != node);
            self.blobs.insert(b.digest.as_str().to_string(), b);
        }
    }

    /// The blob record of `digest`, if any.
    pub fn blob(&self, digest: &Digest) -> Option<&Blob> {
        self.blobs.get(&digest.as_str().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Command;
    use crate::state::test_apply as apply;

    fn d(n: u8) -> Digest {
        Digest::from_sha256(&[n; 32])
    }

    #[test]
    fn holders_are_added_once_dropped_and_removed_members_leave_every_record() {
        let mut s = State::default();
        let rec = |node| Command::RecordBlob {
            digest: d(1),
            size: 10,
            node,
        };
        apply(&mut s, 1, rec(2)).unwrap();
        apply(&mut s, 2, rec(1)).unwrap();
        let b = apply(&mut s, 3, rec(2)).unwrap().into_blob().unwrap();
        assert_eq!(b.holders, vec![1, 2]);
        assert_eq!(b.created_at, 1);
        // Another size under the same digest is refused and changes nothing.
        let e = apply(
            &mut s,
            4,
            Command::RecordBlob {
                digest: d(1),
                size: 11,
                node: 3,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, rackd_types::ErrorCode::Conflict);
        assert_eq!(s.blob(&d(1)).unwrap().holders, vec![1, 2]);
        apply(
            &mut s,
            5,
            Command::RecordBlob {
                digest: d(2),
                size: 5,
                node: 2,
            },
        )
        .unwrap();
        let b = apply(
            &mut s,
            6,
            Command::DropBlobHolder {
                digest: d(1),
                node: 1,
            },
        )
        .unwrap()
        .into_blob()
        .unwrap();
        assert_eq!(b.holders, vec![2]);
        apply(&mut s, 7, Command::MarkNodeRemoved { node_id: 2 }).unwrap();
        assert!(s.blob(&d(1)).unwrap().holders.is_empty());
        assert!(s.blob(&d(2)).unwrap().holders.is_empty());
        // A removed member records nothing.
        assert!(apply(&mut s, 8, rec(2)).is_err());
        apply(&mut s, 9, Command::ForgetBlob { digest: d(1) }).unwrap();
        assert!(s.blob(&d(1)).is_none());
        let e = apply(&mut s, 10, Command::ForgetBlob { digest: d(1) }).unwrap_err();
        assert_eq!(e.code, rackd_types::ErrorCode::NotFound);
    }

    #[test]
    fn images_name_stored_blobs_only_and_a_blob_in_use_is_not_forgotten() {
        use rackd_types::payload::{CreateImage, UpdateImage};
        let mut s = State::default();
        let image = |kernel: &Digest, rootfs: Option<&Digest>| {
            Command::CreateImage(CreateImage {
                name: "deb".into(),
                kernel: kernel.to_string(),
                initrd: "deb/initrd".into(),
                cmdline: String::new(),
                rootfs: rootfs.map(Digest::to_string),
            })
        };
        // Not stored yet: refused.
        let e = apply(&mut s, 1, image(&d(1), None)).unwrap_err();
        assert_eq!(e.code, rackd_types::ErrorCode::Conflict, "{e:?}");
        assert!(e.message.contains("upload it first"), "{e:?}");
        for n in [1, 2, 3] {
            apply(
                &mut s,
                2,
                Command::RecordBlob {
                    digest: d(n),
                    size: 1,
                    node: 1,
                },
            )
            .unwrap();
        }
        // A rootfs must be a digest; a malformed digest is a 400.
        let mut bad = image(&d(1), None);
        if let Command::CreateImage(c) = &mut bad {
            c.rootfs = Some("deb/rootfs".into());
        }
        assert_eq!(
            apply(&mut s, 3, bad).unwrap_err().code,
            rackd_types::ErrorCode::InvalidRequest
        );
        let mut bad = image(&d(1), None);
        if let Command::CreateImage(c) = &mut bad {
            c.kernel = "sha256:00".into();
        }
        assert_eq!(
            apply(&mut s, 3, bad).unwrap_err().code,
            rackd_types::ErrorCode::InvalidRequest
        );
        let img = apply(&mut s, 4, image(&d(1), Some(&d(2))))
            .unwrap()
            .into_image()
            .unwrap();
        assert_eq!(img.blobs().collect::<Vec<_>>(), vec![d(1), d(2)]);
        // Both are in use; the third is not.
        for n in [1, 2] {
            let e = apply(&mut s, 5, Command::ForgetBlob { digest: d(n) }).unwrap_err();
            assert!(e.message.contains("part of image deb"), "{e:?}");
        }
        // Moved to another kernel: the old one may go.
        apply(
            &mut s,
            6,
            Command::UpdateImage {
                id: img.meta.id,
                if_match: None,
                patch: UpdateImage {
                    kernel: Some(d(3).to_string()),
                    ..Default::default()
                },
            },
        )
        .unwrap();
        apply(&mut s, 7, Command::ForgetBlob { digest: d(1) }).unwrap();
        assert!(apply(&mut s, 8, Command::ForgetBlob { digest: d(3) }).is_err());
        // Under rules 3 a digest is an artifact path like any other (as such logs decided).
        let mut old = State::default();
        old.meta.rules = crate::state::ApplyRules::Rules3;
        apply(&mut old, 1, image(&d(9), None)).unwrap();
    }
}
