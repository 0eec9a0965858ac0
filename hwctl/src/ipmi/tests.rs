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
