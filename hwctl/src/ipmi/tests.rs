//! Byte-vector tests of the IPMI wire format and client, and randomized malformed input.

use rand::{rngs::StdRng, Rng, SeedableRng};

use super::client::{Client, ClientConfig, ClientError, LanVersion, Step};
use super::commands;
use super::wire::{self, V20Keys, WireError};
use crate::bmc::{BootDevice, PowerState};

fn cfg(version: LanVersion, suite: u8) -> ClientConfig {
    ClientConfig {
        version,
        cipher_suite: suite,
        username: "admin".into(),
        password: b"labpass".to_vec(),
        privilege: 4,
        allow_straight: false,
    }
}

#[test]
fn request_framing_and_checksums() {
    // Get Chassis Status, rqSeq 1: rsAddr 0x20, netFn 0x00<<2, chk 0xe0; rqAddr 0x81, seq 1<<2,
    // cmd 0x01, chk = -(0x81 + 0x04 + 0x01) = 0x7a.
    let m = wire::encode_request(0x00, 0x01, 1, &[]);
    assert_eq!(m, vec![0x20, 0x00, 0xe0, 0x81, 0x04, 0x01, 0x7a]);
    // A response to it: rqAddr 0x81, netFn 0x01<<2, chk, rsAddr 0x20, seq, cmd, cc, data, chk.
    let mut r = vec![0x81, 0x04];
    r.push(wire::checksum(&r));
    let start = r.len();
    r.extend([0x20, 0x04, 0x01, 0x00, 0x01, 0x10, 0x00]);
    r.push(wire::checksum(&r[start..]));
    let d = wire::decode_response(&r).unwrap();
    assert_eq!((d.netfn, d.cmd, d.rq_seq, d.cc), (0x01, 0x01, 1, 0));
    assert_eq!(commands::parse_chassis_status(&d.data), PowerState::On);
    let mut bad = r.clone();
    bad[7] ^= 1;
    assert_eq!(wire::decode_response(&bad), Err(WireError::Checksum));
}

#[test]
fn v15_md5_packets_round_trip_and_authenticate() {
    let pass = wire::pad_password::<16>(b"labpass");
    let msg = wire::encode_request(0x06, 0x3b, 3, &[4]);
    let p = wire::encode_v15(wire::AUTH_MD5, &pass, 0x1234, 7, &msg);
    let d = wire::decode_v15(wire::strip_rmcp(&p).unwrap()).unwrap();
    assert_eq!(
        (d.auth, d.session_id, d.seq, d.msg),
        (wire::AUTH_MD5, 0x1234, 7, &msg[..])
    );
    let want = wire::auth_code_v15(wire::AUTH_MD5, &pass, 0x1234, 7, &msg);
    assert_eq!(d.auth_code, Some(want));
    let other = wire::auth_code_v15(
        wire::AUTH_MD5,
        &wire::pad_password(b"wrong"),
        0x1234,
        7,
        &msg,
    );
    assert_ne!(want, other);
}

#[test]
fn v20_packets_round_trip_with_integrity_and_aes() {
    let keys = V20Keys {
        k1: Some([7u8; 20]),
        aes: Some([9u8; 16]),
    };
    for len in [0usize, 1, 14, 15, 16, 17, 40] {
        let payload: Vec<u8> = (0..len as u8).collect();
        let p = wire::encode_v20(wire::PAYLOAD_IPMI, 0xdead, 5, &payload, &keys, [3; 16]);
        // auth type .. next header is a multiple of 4 bytes.
        assert_eq!((p.len() - 4 - 12) % 4, 0);
        let d = wire::decode_v20(wire::strip_rmcp(&p).unwrap(), &keys).unwrap();
        assert_eq!((d.payload_type, d.session_id, d.seq), (0, 0xdead, 5));
        assert_eq!(d.payload, payload);
        // Any flipped bit is caught by the integrity check.
        for i in [4, 10, p.len() / 2, p.len() - 13, p.len() - 1] {
            let mut t = p.clone();
            t[i] ^= 0x10;
            assert!(
                wire::decode_v20(wire::strip_rmcp(&t).unwrap(), &keys).is_err(),
                "byte {i}"
            );
        }
    }
    // Without keys (cipher suite 0) the payload is plain.
    let p = wire::encode_v20(
        wire::PAYLOAD_RAKP1,
        0,
        0,
        b"abc",
        &V20Keys::default(),
        [0; 16],
    );
    assert_eq!(&p[p.len() - 3..], b"abc");
}

#[test]
fn boot_flags_and_device_id() {
    let (_, cmd, d) = commands::set_boot_device(BootDevice::Pxe, false, false);
    assert_eq!((cmd, d), (0x08, vec![0x05, 0x80, 0x04, 0, 0, 0]));
    let (_, _, d) = commands::set_boot_device(BootDevice::Disk, true, true);
    assert_eq!(d, vec![0x05, 0xe0, 0x08, 0, 0, 0]);
    let info =
        commands::parse_device_id(&[0, 0x23, 9, 8, 0x02, 0x9f, 0x91, 0x12, 0, 0x02, 0x0f]).unwrap();
    assert_eq!((info.manufacturer_id, info.product_id), (0x1291, 0x0f02));
    assert_eq!(
        (info.firmware.as_str(), info.ipmi_version.as_str()),
        ("9.08", "2.0")
    );
    assert!(commands::parse_device_id(&[0; 5]).is_none());
}

#[test]
fn unsupported_settings_are_refused_and_secrets_stay_out_of_debug() {
    let Err(ClientError::Unsupported(m)) =
        Client::new(cfg(LanVersion::V20, 17), StdRng::seed_from_u64(1))
    else {
        panic!("suite 17 accepted")
    };
    assert!(m.contains("cipher suite 17"));
    let mut long = cfg(LanVersion::V15, 3);
    long.password = vec![b'x'; 17];
    assert!(Client::new(long, StdRng::seed_from_u64(1)).is_err());
    assert!(!format!("{:?}", cfg(LanVersion::V20, 3)).contains("labpass"));
}

#[test]
fn first_packet_asks_for_authentication_capabilities() {
    let mut c = Client::new(cfg(LanVersion::V20, 3), StdRng::seed_from_u64(1)).unwrap();
    let p = c.start();
    let d = wire::decode_v15(wire::strip_rmcp(&p).unwrap()).unwrap();
    assert_eq!(d.auth, wire::AUTH_NONE);
    assert_eq!(&d.msg[5..8], &[0x38, 0x8e, 0x04]);
    assert!(
        c.request(0, 1, &[]).is_err(),
        "no request before the session exists"
    );
    assert_eq!(c.resend(), p);
}

/// Garbage and truncated packets in every phase are ignored or refused, never a panic.
#[test]
fn random_and_truncated_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(42);
    let keys = V20Keys {
        k1: Some([1; 20]),
        aes: Some([2; 16]),
    };
    let valid = [
        wire::encode_v20(
            wire::PAYLOAD_OPEN_RSP,
            0,
            0,
            &[0u8; 36],
            &V20Keys::default(),
            [0; 16],
        ),
        wire::encode_v20(
            wire::PAYLOAD_RAKP2,
            0,
            0,
            &[0u8; 60],
            &V20Keys::default(),
            [0; 16],
        ),
        wire::encode_v20(wire::PAYLOAD_IPMI, 1, 1, &[0u8; 20], &keys, [0; 16]),
        wire::encode_v15(wire::AUTH_MD5, &[0; 16], 1, 1, &[0u8; 12]),
    ];
    for version in [LanVersion::V20, LanVersion::V15] {
        for _ in 0..3000 {
            let mut c = Client::new(cfg(version, 3), StdRng::seed_from_u64(rng.random())).unwrap();
            c.start();
            let pkt: Vec<u8> = if rng.random_bool(0.5) {
                let v = &valid[rng.random_range(0..valid.len())];
                let mut v = v[..rng.random_range(0..=v.len())].to_vec();
                if !v.is_empty() {
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                }
                v
            } else {
                let n = rng.random_range(0..80);
                let mut v: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                if v.len() > 4 {
                    v[..4].copy_from_slice(&[6, 0, 0xff, 7]);
                }
                v
            };
            let _ = c.handle(&pkt);
            let _ = wire::decode_v20(&pkt, &keys);
            let _ = wire::decode_v15(&pkt);
            let _ = wire::decode_response(&pkt);
            assert!(!matches!(c.handle(&pkt), Ok(Step::Ready)));
        }
    }
}

/// A scripted IPMI 1.5 BMC: answers the client's last request with `data`, wrapped with the
/// given session authentication.
fn answer(req_pkt: &[u8], auth: u8, session_id: u32, seq: u32, data: &[u8]) -> Vec<u8> {
    let req = wire::decode_v15(wire::strip_rmcp(req_pkt).unwrap()).unwrap();
    let m = req.msg;
    let (netfn, rq_seq, cmd) = (m[1] >> 2, m[4], m[5]);
    let mut r = vec![0x81, (netfn + 1) << 2];
    r.push(wire::checksum(&r));
    let start = r.len();
    r.extend([0x20, rq_seq, cmd, 0x00]);
    r.extend_from_slice(data);
    r.push(wire::checksum(&r[start..]));
    wire::encode_v15(auth, &wire::pad_password(b"labpass"), session_id, seq, &r)
}

/// Authentication capabilities offering the types in `offered` (a bitmap of auth types).
fn caps(offered: u8) -> Vec<u8> {
    vec![0x01, offered, 0x04, 0x00, 0, 0, 0, 0]
}

fn v15_client(allow_straight: bool) -> Client<StdRng> {
    let mut c = cfg(LanVersion::V15, 0);
    c.allow_straight = allow_straight;
    Client::new(c, StdRng::seed_from_u64(3)).unwrap()
}

fn sent(step: Result<Step, ClientError>) -> Vec<u8> {
    match step {
        Ok(Step::Send(p)) => p,
        other => panic!("expected a packet to send, got {other:?}"),
    }
}

/// The client never sends the password in clear unless the machine allows it: a BMC that
/// offers only "straight password" is refused, MD5 is preferred whenever it is offered.
#[test]
fn v15_straight_password_only_when_allowed() {
    let straight = 1 << wire::AUTH_STRAIGHT;
    let md5 = 1 << wire::AUTH_MD5;
    let mut c = v15_client(false);
    let first = c.start();
    let e = c
        .handle(&answer(&first, 0, 0, 0, &caps(straight)))
        .unwrap_err();
    assert!(e.to_string().contains("in clear"), "{e}");

    for (offered, allowed, want) in [
        (straight, true, wire::AUTH_STRAIGHT),
        (straight | md5, true, wire::AUTH_MD5),
        (straight | md5, false, wire::AUTH_MD5),
    ] {
        let mut c = v15_client(allowed);
        let first = c.start();
        let challenge = sent(c.handle(&answer(&first, 0, 0, 0, &caps(offered))));
        let d = wire::decode_v15(wire::strip_rmcp(&challenge).unwrap()).unwrap();
        // Get Session Challenge names the authentication type first.
        assert_eq!(d.msg[6], want, "offered {offered:#04x}, allowed {allowed}");
    }
}

/// Drives an MD5 opening up to the Activate Session request; returns the client and it.
fn md5_up_to_activate() -> (Client<StdRng>, Vec<u8>) {
    let mut c = v15_client(false);
    let first = c.start();
    let challenge = sent(c.handle(&answer(&first, 0, 0, 0, &caps(1 << wire::AUTH_MD5))));
    let mut ch = vec![0x11, 0x22, 0x33, 0x44];
    ch.extend([0xab; 16]);
    let activate = sent(c.handle(&answer(&challenge, 0, 0, 0, &ch)));
    (c, activate)
}

/// The Activate Session answer: the session's auth type, its id, the first sequence number.
fn activated(auth: u8, sid: u32) -> Vec<u8> {
    let mut act = vec![auth];
    act.extend(sid.to_le_bytes());
    act.extend(10u32.to_le_bytes());
    act.push(4);
    act
}

/// Drives an MD5 session to Ready; returns the client and the session id.
fn md5_session() -> (Client<StdRng>, u32) {
    let (mut c, activate) = md5_up_to_activate();
    let sid = 0x5566_7788u32;
    let act = activated(wire::AUTH_MD5, sid);
    let setpriv = sent(c.handle(&answer(&activate, 0, 0x1122_3344, 0, &act)));
    let ready = c.handle(&answer(&setpriv, wire::AUTH_MD5, sid, 1, &[4]));
    assert!(matches!(ready, Ok(Step::Ready)), "{ready:?}");
    (c, sid)
}

/// In a session, an answer without the session's authentication (type none, or straight) is
/// dropped like a forged one; the authenticated answer is taken.
#[test]
fn v15_in_session_answers_need_the_session_authentication() {
    let (mut c, sid) = md5_session();
    let req = c.request(0x00, 0x01, &[]).unwrap();
    for forged_auth in [wire::AUTH_NONE, wire::AUTH_STRAIGHT] {
        let forged = answer(&req, forged_auth, sid, 2, &[0x01, 0, 0, 0]);
        assert!(
            matches!(c.handle(&forged), Ok(Step::Ignore)),
            "an answer with auth type {forged_auth} was taken"
        );
    }
    let real = answer(&req, wire::AUTH_MD5, sid, 2, &[0x01, 0, 0, 0]);
    assert!(matches!(c.handle(&real), Ok(Step::Response(_))));
}

/// A BMC that activates the session with another authentication type than the one asked
/// for (a downgrade to none or to cleartext) is refused.
#[test]
fn v15_a_session_downgraded_at_activation_is_refused() {
    for downgraded in [wire::AUTH_NONE, wire::AUTH_STRAIGHT] {
        let (mut c, activate) = md5_up_to_activate();
        let act = activated(downgraded, 7);
        let e = c.handle(&answer(&activate, 0, 0x1122_3344, 0, &act));
        assert!(
            matches!(&e, Err(ClientError::Auth(m)) if m.contains("instead of")),
            "{e:?}"
        );
    }
}
