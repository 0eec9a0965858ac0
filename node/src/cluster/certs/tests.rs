//! When a certificate is due for renewal, for every reason, and when not.

use super::*;
use crate::cluster::pki::CaBundle;
use std::time::UNIX_EPOCH;

const CID: &str = "0123456789abcdef";
const DAY: Duration = Duration::from_secs(86_400);

fn cert_at(now: SystemTime, api: &str) -> String {
    let ca = CaBundle::generate(CID, now).unwrap();
    let k = NodeKey::generate().unwrap();
    ca.issue_for(&k.csr_pem, 2, CID, Some(api), now).unwrap()
}

#[test]
fn a_certificate_is_due_when_expiring_moved_or_requested_and_only_then() {
    let issued = SystemTime::now();
    let api = "10.0.0.2:8443";
    let cert = cert_at(issued, api);
    let ms_of = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    // Fresh, same address, no request.
    assert_eq!(due(&cert, issued, api, 0, 0).unwrap(), None);
    assert_eq!(
        due(&cert, issued, "https://10.0.0.2:8443", 0, 0).unwrap(),
        None
    );
    // Wildcard addresses name no host: nothing to miss.
    assert_eq!(due(&cert, issued, "0.0.0.0:8443", 0, 0).unwrap(), None);
    // Expiring: just inside the window, not just outside it.
    let expiry = issued + NODE_CERT_VALIDITY;
    let inside = expiry - RENEW_BEFORE + DAY;
    let outside = expiry - RENEW_BEFORE - DAY;
    assert!(matches!(
        due(&cert, inside, api, 0, 0).unwrap(),
        Some(Why::Expiring { .. })
    ));
    assert_eq!(due(&cert, outside, api, 0, 0).unwrap(), None);
    assert!(matches!(
        due(&cert, expiry + DAY, api, 0, 0).unwrap(),
        Some(Why::Expiring { left_secs: 0 })
    ));
    // The API address moved to another host.
    assert_eq!(
        due(&cert, issued, "10.0.0.9:8443", 0, 0).unwrap(),
        Some(Why::ApiHostChanged)
    );
    assert_eq!(
        due(&cert, issued, "rackd-2.example:8443", 0, 0).unwrap(),
        Some(Why::ApiHostChanged)
    );
    // An operator's request after the certificate was issued; once handled, never again.
    let later = ms_of(issued) + 5_000;
    assert_eq!(
        due(&cert, issued, api, later, 0).unwrap(),
        Some(Why::Requested { before_ms: later })
    );
    assert_eq!(due(&cert, issued, api, later, later).unwrap(), None);
    // A request before the certificate was issued (a node that joined since) changes nothing.
    let earlier = ms_of(issued) - 5_000;
    assert_eq!(due(&cert, issued, api, earlier, 0).unwrap(), None);
}

#[test]
fn the_handled_request_survives_a_restart_and_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pki")).unwrap();
    let h = Handled::in_data_dir(dir.path());
    assert_eq!(h.get(), 0);
    h.set(1234).unwrap();
    assert_eq!(Handled::in_data_dir(dir.path()).get(), 1234);
}
