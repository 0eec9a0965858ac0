//! Byte layouts of IPMI over LAN: the RMCP header, the IPMI 1.5 and IPMI 2.0 (RMCP+) session
//! wrappers and the IPMB-style message inside them (IPMI v2.0 spec §13). Pure functions over
//! byte slices; every decoder returns an error on short or inconsistent input, never panics.
//! Must not depend on sockets or clocks.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

pub const RMCP_VERSION: u8 = 0x06;
pub const RMCP_CLASS_IPMI: u8 = 0x07;
/// Address of the BMC on the IPMB, and the software ID we use as requester.
pub const BMC_ADDR: u8 = 0x20;
pub const CONSOLE_SWID: u8 = 0x81;

/// IPMI 1.5 authentication types.
pub const AUTH_NONE: u8 = 0x00;
pub const AUTH_MD5: u8 = 0x02;
pub const AUTH_STRAIGHT: u8 = 0x04;
/// Marks an IPMI 2.0 (RMCP+) session header.
pub const AUTH_RMCPP: u8 = 0x06;

/// RMCP+ payload types.
pub const PAYLOAD_IPMI: u8 = 0x00;
pub const PAYLOAD_OPEN_REQ: u8 = 0x10;
pub const PAYLOAD_OPEN_RSP: u8 = 0x11;
pub const PAYLOAD_RAKP1: u8 = 0x12;
pub const PAYLOAD_RAKP2: u8 = 0x13;
pub const PAYLOAD_RAKP3: u8 = 0x14;
pub const PAYLOAD_RAKP4: u8 = 0x15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet too short for {0}")]
    Short(&'static str),
    #[error("not an IPMI RMCP packet")]
    NotIpmi,
    #[error("bad checksum in IPMB message")]
    Checksum,
    #[error("integrity check failed")]
    Integrity,
    #[error("bad confidentiality padding")]
    Padding,
    #[error("unsupported authentication type {0:#04x}")]
    AuthType(u8),
}

/// Two's-complement checksum of IPMB messages.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// `rsAddr netFn/LUN chk rqAddr rqSeq/LUN cmd data chk` — a request to the BMC.
pub fn encode_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    let start = m.len();
    m.extend([CONSOLE_SWID, (rq_seq & 0x3f) << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[start..]));
    m
}

/// A response from the BMC: completion code first, then the command's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanResponse {
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub cc: u8,
    pub data: Vec<u8>,
}

pub fn decode_response(m: &[u8]) -> Result<LanResponse, WireError> {
    if m.len() < 8 {
        return Err(WireError::Short("IPMB response"));
    }
    if checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(WireError::Checksum);
    }
    Ok(LanResponse {
        netfn: m[1] >> 2,
        rq_seq: m[4] >> 2,
        cmd: m[5],
        cc: m[6],
        data: m[7..m.len() - 1].to_vec(),
    })
}

/// Strips the RMCP header of an IPMI-class packet.
pub fn strip_rmcp(p: &[u8]) -> Result<&[u8], WireError> {
    if p.len() < 4 {
        return Err(WireError::Short("RMCP header"));
    }
    if p[0] != RMCP_VERSION || p[3] & 0x1f != RMCP_CLASS_IPMI {
        return Err(WireError::NotIpmi);
    }
    Ok(&p[4..])
}

fn rmcp() -> Vec<u8> {
    vec![RMCP_VERSION, 0x00, 0xff, RMCP_CLASS_IPMI]
}

/// Password padded to 16 bytes (IPMI 1.5) or 20 bytes (RMCP+ Kuid).
pub fn pad_password<const N: usize>(password: &[u8]) -> [u8; N] {
    let mut k = [0u8; N];
    let n = password.len().min(N);
    k[..n].copy_from_slice(&password[..n]);
    k
}

/// IPMI 1.5 auth code of a message (spec §22.17.1).
pub fn auth_code_v15(auth: u8, pass: &[u8; 16], session_id: u32, seq: u32, msg: &[u8]) -> [u8; 16] {
    match auth {
        AUTH_MD5 => {
            let mut h = Md5::new();
            h.update(pass);
            h.update(session_id.to_le_bytes());
            h.update(msg);
            h.update(seq.to_le_bytes());
            h.update(pass);
            h.finalize().into()
        }
        _ => *pass,
    }
}

/// An IPMI 1.5 session packet (also used, with auth type none, before any session exists).
pub fn encode_v15(auth: u8, pass: &[u8; 16], session_id: u32, seq: u32, msg: &[u8]) -> Vec<u8> {
    let mut p = rmcp();
    p.push(auth);
    p.extend(seq.to_le_bytes());
    p.extend(session_id.to_le_bytes());
    if auth != AUTH_NONE {
        p.extend(auth_code_v15(auth, pass, session_id, seq, msg));
    }
    p.push(msg.len() as u8);
    p.extend_from_slice(msg);
    p
}

/// A decoded IPMI 1.5 session packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V15Packet<'a> {
    pub auth: u8,
    pub seq: u32,
    pub session_id: u32,
    pub auth_code: Option<[u8; 16]>,
    pub msg: &'a [u8],
}

pub fn decode_v15(after_rmcp: &[u8]) -> Result<V15Packet<'_>, WireError> {
    let b = after_rmcp;
    if b.len() < 10 {
        return Err(WireError::Short("IPMI 1.5 session header"));
    }
    let auth = b[0];
    let seq = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
    let session_id = u32::from_le_bytes([b[5], b[6], b[7], b[8]]);
    let (auth_code, rest) = match auth {
        AUTH_NONE => (None, &b[9..]),
        AUTH_MD5 | AUTH_STRAIGHT | 0x01 | 0x05 => {
            if b.len() < 26 {
                return Err(WireError::Short("IPMI 1.5 auth code"));
            }
            let mut c = [0u8; 16];
            c.copy_from_slice(&b[9..25]);
            (Some(c), &b[25..])
        }
        other => return Err(WireError::AuthType(other)),
    };
    let len = rest[0] as usize;
    if rest.len() < 1 + len {
        return Err(WireError::Short("IPMI 1.5 message"));
    }
    Ok(V15Packet {
        auth,
        seq,
        session_id,
        auth_code,
        msg: &rest[1..1 + len],
    })
}

/// Keys of an established RMCP+ session (none for cipher suite 0).
#[derive(Clone, Default)]
pub struct V20Keys {
    /// K1: HMAC-SHA1-96 integrity key.
    pub k1: Option<[u8; 20]>,
    /// First 16 bytes of K2: AES-CBC-128 key.
    pub aes: Option<[u8; 16]>,
}

impl std::fmt::Debug for V20Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("V20Keys(<redacted>)")
    }
}

type HmacSha1 = Hmac<Sha1>;

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut m = HmacSha1::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// An RMCP+ packet. `iv` is used only when the payload is encrypted.
pub fn encode_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: &V20Keys,
    iv: [u8; 16],
) -> Vec<u8> {
    let mut p = rmcp();
    let mut ptype = payload_type;
    let body = match &keys.aes {
        Some(key) => {
            ptype |= 0x80;
            let mut plain = payload.to_vec();
            let pad = (16 - (plain.len() + 1) % 16) % 16;
            plain.extend((1..=pad as u8).collect::<Vec<_>>());
            plain.push(pad as u8);
            let enc = cbc::Encryptor::<aes::Aes128>::new(key.into(), &iv.into())
                .encrypt_padded_vec_mut::<NoPadding>(&plain);
            let mut b = iv.to_vec();
            b.extend(enc);
            b
        }
        None => payload.to_vec(),
    };
    if keys.k1.is_some() {
        ptype |= 0x40;
    }
    p.push(AUTH_RMCPP);
    p.push(ptype);
    p.extend(session_id.to_le_bytes());
    p.extend(seq.to_le_bytes());
    p.extend((body.len() as u16).to_le_bytes());
    p.extend(body);
    if let Some(k1) = &keys.k1 {
        // Pad so that auth type .. next header is a multiple of 4 bytes.
        let covered = p.len() - 4 + 2;
        let pad = (4 - covered % 4) % 4;
        p.extend(std::iter::repeat_n(0xff, pad));
        p.push(pad as u8);
        p.push(0x07);
        let code = hmac_sha1(k1, &[&p[4..]]);
        p.extend_from_slice(&code[..12]);
    }
    p
}

/// A decoded (verified and decrypted) RMCP+ packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V20Packet {
    pub payload_type: u8,
    pub session_id: u32,
    pub seq: u32,
    pub payload: Vec<u8>,
}

pub fn decode_v20(after_rmcp: &[u8], keys: &V20Keys) -> Result<V20Packet, WireError> {
    let b = after_rmcp;
    if b.len() < 12 {
        return Err(WireError::Short("RMCP+ session header"));
    }
    if b[0] != AUTH_RMCPP {
        return Err(WireError::AuthType(b[0]));
    }
    let ptype = b[1];
    let session_id = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let seq = u32::from_le_bytes([b[6], b[7], b[8], b[9]]);
    let len = u16::from_le_bytes([b[10], b[11]]) as usize;
    if b.len() < 12 + len {
        return Err(WireError::Short("RMCP+ payload"));
    }
    let body = &b[12..12 + len];
    if ptype & 0x40 != 0 {
        let k1 = keys.k1.as_ref().ok_or(WireError::Integrity)?;
        let trailer = &b[12 + len..];
        if trailer.len() < 14 {
            return Err(WireError::Short("RMCP+ integrity trailer"));
        }
        let code_at = b.len() - 12;
        let code = hmac_sha1(k1, &[&b[..code_at]]);
        if code[..12] != b[code_at..] {
            return Err(WireError::Integrity);
        }
    } else if keys.k1.is_some() && session_id != 0 {
        // An established authenticated session never accepts unauthenticated payloads.
        return Err(WireError::Integrity);
    }
    let payload = if ptype & 0x80 != 0 {
        let key = keys.aes.as_ref().ok_or(WireError::Padding)?;
        if body.len() < 32 || !body.len().is_multiple_of(16) {
            return Err(WireError::Padding);
        }
        let (iv, data) = body.split_at(16);
        let iv: [u8; 16] = iv.try_into().map_err(|_| WireError::Padding)?;
        let plain = cbc::Decryptor::<aes::Aes128>::new(key.into(), &iv.into())
            .decrypt_padded_vec_mut::<NoPadding>(data)
            .map_err(|_| WireError::Padding)?;
        let pad = *plain.last().ok_or(WireError::Padding)? as usize;
        if pad + 1 > plain.len() {
            return Err(WireError::Padding);
        }
        plain[..plain.len() - 1 - pad].to_vec()
    } else {
        body.to_vec()
    };
    Ok(V20Packet {
        payload_type: ptype & 0x3f,
        session_id,
        seq,
        payload,
    })
}
