//! Sans-IO IPMI-over-LAN client session: IPMI 1.5 (auth none/straight/MD5) and IPMI 2.0 RMCP+
//! (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128; cipher suites 0–3). The caller owns the socket:
//! it sends what [`Client::start`], [`Client::request`], [`Client::resend`] and
//! [`Client::handle`] return and feeds every received datagram to `handle`. Randomness (session
//! ids, RAKP nonces, IVs) comes from an RNG given at construction. Must not depend on sockets,
//! clocks or the async runtime.

use rand::{Rng, RngCore};

use super::wire::{self, LanResponse, V20Keys, WireError};

/// IPMI over LAN flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanVersion {
    /// IPMI 1.5 (`ipmitool -I lan`).
    V15,
    /// IPMI 2.0 RMCP+ (`ipmitool -I lanplus`).
    V20,
}

#[derive(Clone)]
pub struct ClientConfig {
    pub version: LanVersion,
    /// RMCP+ cipher suite (0–3 supported); ignored for IPMI 1.5.
    pub cipher_suite: u8,
    pub username: String,
    pub password: Vec<u8>,
    /// Requested session privilege (4 = administrator, 3 = operator).
    pub privilege: u8,
    /// IPMI 1.5 only: use "straight password" authentication, which sends the password in
    /// clear, when the BMC offers nothing better. Off unless the machine explicitly allows it.
    pub allow_straight: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("version", &self.version)
            .field("cipher_suite", &self.cipher_suite)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("privilege", &self.privilege)
            .field("allow_straight", &self.allow_straight)
            .finish()
    }
}

/// Why a session could not be used. No variant carries the password or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("malformed packet from BMC: {0}")]
    Wire(#[from] WireError),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{step} refused by BMC: {reason}")]
    Refused { step: &'static str, reason: String },
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("no session: {0}")]
    NotReady(&'static str),
}

/// What the caller should do after feeding a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this packet next (session set-up continues).
    Send(Vec<u8>),
    /// The session is established with the requested privilege; requests may be sent.
    Ready,
    /// Answer to the outstanding request.
    Response(LanResponse),
    /// Packet not for us (stale retransmission, unrelated); keep waiting.
    Ignore,
}

const APP: u8 = 0x06;
const CMD_AUTH_CAPS: u8 = 0x38;
const CMD_CHALLENGE: u8 = 0x39;
const CMD_ACTIVATE: u8 = 0x3a;
const CMD_SET_PRIV: u8 = 0x3b;
const CMD_CLOSE: u8 = 0x3c;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AuthCaps,
    Challenge,
    Activate,
    OpenSession,
    Rakp1,
    Rakp3,
    SetPrivilege,
    Ready,
}

/// Session state of the IPMI 1.5 flavour.
#[derive(Clone, Default)]
struct V15 {
    auth: u8,
    pass: [u8; 16],
    session_id: u32,
    seq: u32,
}

/// Session state of RMCP+.
#[derive(Clone, Default)]
struct V20 {
    console_id: u32,
    managed_id: u32,
    rm: [u8; 16],
    rc: [u8; 16],
    guid: [u8; 16],
    role: u8,
    kuid: [u8; 20],
    seq: u32,
    keys: V20Keys,
    integrity: bool,
    confidentiality: bool,
}

pub struct Client<R: RngCore> {
    cfg: ClientConfig,
    rng: R,
    phase: Phase,
    rq_seq: u8,
    v15: V15,
    v20: V20,
    /// Last packet of the session set-up (resent verbatim on loss).
    last: Vec<u8>,
    /// Outstanding in-session request: netfn, cmd, data, rq_seq.
    pending: Option<(u8, u8, Vec<u8>, u8)>,
}

fn status_text(code: u8) -> &'static str {
    match code {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "unknown status",
    }
}

/// (authentication, integrity, confidentiality) algorithm numbers of a cipher suite.
fn suite(n: u8) -> Option<(u8, u8, u8)> {
    match n {
        0 => Some((0, 0, 0)),
        1 => Some((1, 0, 0)),
        2 => Some((1, 1, 0)),
        3 => Some((1, 1, 1)),
        _ => None,
    }
}

impl<R: RngCore> Client<R> {
    pub fn new(cfg: ClientConfig, rng: R) -> Result<Self, ClientError> {
        if cfg.version == LanVersion::V20 && suite(cfg.cipher_suite).is_none() {
            return Err(ClientError::Unsupported(format!(
                "cipher suite {} (supported: 0, 1, 2, 3)",
                cfg.cipher_suite
            )));
        }
        if cfg.username.len() > 16 {
            return Err(ClientError::Unsupported(
                "user names longer than 16 bytes".into(),
            ));
        }
        let max_pw = if cfg.version == LanVersion::V15 {
            16
        } else {
            20
        };
        if cfg.password.len() > max_pw {
            return Err(ClientError::Unsupported(format!(
                "passwords longer than {max_pw} bytes"
            )));
        }
        Ok(Self {
            v15: V15 {
                pass: wire::pad_password(&cfg.password),
                ..V15::default()
            },
            v20: V20 {
                kuid: wire::pad_password(&cfg.password),
                ..V20::default()
            },
            cfg,
            rng,
            phase: Phase::Idle,
            rq_seq: 0,
            last: Vec::new(),
            pending: None,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// First packet: Get Channel Authentication Capabilities (outside any session).
    pub fn start(&mut self) -> Vec<u8> {
        let ext = if self.cfg.version == LanVersion::V20 {
            0x80
        } else {
            0
        };
        let data = [0x0e | ext, self.cfg.privilege];
        self.phase = Phase::AuthCaps;
        self.last = self.sessionless(CMD_AUTH_CAPS, &data);
        self.last.clone()
    }

    /// Name of the set-up step in progress, for timeout messages.
    pub fn step_name(&self) -> &'static str {
        match self.phase {
            Phase::Idle => "start",
            Phase::AuthCaps => "Get Channel Authentication Capabilities",
            Phase::Challenge => "Get Session Challenge",
            Phase::Activate => "Activate Session",
            Phase::OpenSession => "RMCP+ Open Session",
            Phase::Rakp1 => "RAKP message 1",
            Phase::Rakp3 => "RAKP message 3",
            Phase::SetPrivilege => "Set Session Privilege Level",
            Phase::Ready => "request",
        }
    }

    fn next_rq_seq(&mut self) -> u8 {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        self.rq_seq
    }

    fn sessionless(&mut self, cmd: u8, data: &[u8]) -> Vec<u8> {
        let seq = self.next_rq_seq();
        let msg = wire::encode_request(APP, cmd, seq, data);
        wire::encode_v15(wire::AUTH_NONE, &[0; 16], 0, 0, &msg)
    }

    /// Encodes an in-session IPMI message with the next session sequence number.
    fn in_session(&mut self, netfn: u8, cmd: u8, data: &[u8], rq_seq: u8) -> Vec<u8> {
        let msg = wire::encode_request(netfn, cmd, rq_seq, data);
        match self.cfg.version {
            LanVersion::V15 => {
                let s = &mut self.v15;
                if s.session_id != 0 {
                    s.seq = s.seq.wrapping_add(1).max(1);
                }
                wire::encode_v15(s.auth, &s.pass, s.session_id, s.seq, &msg)
            }
            LanVersion::V20 => {
                self.v20.seq = self.v20.seq.wrapping_add(1).max(1);
                let iv: [u8; 16] = self.rng.random();
                wire::encode_v20(
                    wire::PAYLOAD_IPMI,
                    self.v20.managed_id,
                    self.v20.seq,
                    &msg,
                    &self.v20.keys,
                    iv,
                )
            }
        }
    }

    /// Sends an IPMI request in the established session.
    pub fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> Result<Vec<u8>, ClientError> {
        if self.phase != Phase::Ready {
            return Err(ClientError::NotReady("session not established"));
        }
        let seq = self.next_rq_seq();
        self.pending = Some((netfn, cmd, data.to_vec(), seq));
        Ok(self.in_session(netfn, cmd, data, seq))
    }

    /// The packet to send again after a timeout: the same set-up packet, or the outstanding
    /// request with a fresh session sequence number (same IPMB sequence, so a BMC can match
    /// duplicates).
    pub fn resend(&mut self) -> Vec<u8> {
        match (&self.phase, self.pending.clone()) {
            (Phase::Ready, Some((netfn, cmd, data, seq))) => {
                self.in_session(netfn, cmd, &data, seq)
            }
            _ => self.last.clone(),
        }
    }

    /// Close Session for the established session (best effort: the caller need not wait).
    pub fn close(&mut self) -> Option<Vec<u8>> {
        if self.phase != Phase::Ready {
            return None;
        }
        let id = match self.cfg.version {
            LanVersion::V15 => self.v15.session_id,
            LanVersion::V20 => self.v20.managed_id,
        };
        let seq = self.next_rq_seq();
        self.pending = Some((APP, CMD_CLOSE, id.to_le_bytes().to_vec(), seq));
        Some(self.in_session(APP, CMD_CLOSE, &id.to_le_bytes(), seq))
    }

    /// Feeds one received datagram.
    pub fn handle(&mut self, pkt: &[u8]) -> Result<Step, ClientError> {
        let body = wire::strip_rmcp(pkt)?;
        if body.first() == Some(&wire::AUTH_RMCPP) {
            return self.handle_v20(body);
        }
        let p = wire::decode_v15(body)?;
        // In a session, an answer must carry the session's authentication and verify: one
        // without it (auth type none, or another type) is dropped like a forged one.
        if matches!(self.phase, Phase::Ready | Phase::SetPrivilege)
            && self.cfg.version == LanVersion::V15
            && self.v15.auth != wire::AUTH_NONE
        {
            let want = wire::auth_code_v15(p.auth, &self.v15.pass, p.session_id, p.seq, p.msg);
            if p.auth != self.v15.auth
                || p.auth_code != Some(want)
                || p.session_id != self.v15.session_id
            {
                return Ok(Step::Ignore);
            }
        }
        let rsp = wire::decode_response(p.msg)?;
        self.on_message(rsp)
    }

    fn handle_v20(&mut self, body: &[u8]) -> Result<Step, ClientError> {
        let p = wire::decode_v20(body, &self.v20.keys)?;
        match (self.phase, p.payload_type) {
            (Phase::OpenSession, wire::PAYLOAD_OPEN_RSP) => self.on_open_session(&p.payload),
            (Phase::Rakp1, wire::PAYLOAD_RAKP2) => self.on_rakp2(&p.payload),
            (Phase::Rakp3, wire::PAYLOAD_RAKP4) => self.on_rakp4(&p.payload),
            (_, wire::PAYLOAD_IPMI) => {
                if p.session_id != self.v20.console_id || self.v20.console_id == 0 {
                    return Ok(Step::Ignore);
                }
                let rsp = wire::decode_response(&p.payload)?;
                self.on_message(rsp)
            }
            _ => Ok(Step::Ignore),
        }
    }

    fn expect(&self, rsp: &LanResponse, cmd: u8) -> bool {
        rsp.netfn == APP + 1 && rsp.cmd == cmd && rsp.rq_seq == self.rq_seq
    }

    fn on_message(&mut self, rsp: LanResponse) -> Result<Step, ClientError> {
        match self.phase {
            Phase::AuthCaps if self.expect(&rsp, CMD_AUTH_CAPS) => self.on_auth_caps(&rsp),
            Phase::Challenge if self.expect(&rsp, CMD_CHALLENGE) => self.on_challenge(&rsp),
            Phase::Activate if self.expect(&rsp, CMD_ACTIVATE) => self.on_activate(&rsp),
            Phase::SetPrivilege if self.expect(&rsp, CMD_SET_PRIV) => {
                if rsp.cc != 0 {
                    return Err(Self::refused("Set Session Privilege Level", rsp.cc));
                }
                self.phase = Phase::Ready;
                self.pending = None;
                Ok(Step::Ready)
            }
            Phase::Ready => match &self.pending {
                Some((netfn, cmd, _, seq))
                    if rsp.netfn == netfn + 1 && rsp.cmd == *cmd && rsp.rq_seq == *seq =>
                {
                    self.pending = None;
                    Ok(Step::Response(rsp))
                }
                _ => Ok(Step::Ignore),
            },
            _ => Ok(Step::Ignore),
        }
    }

    fn refused(step: &'static str, cc: u8) -> ClientError {
        ClientError::Refused {
            step,
            reason: format!("completion code {cc:#04x}"),
        }
    }

    fn on_auth_caps(&mut self, rsp: &LanResponse) -> Result<Step, ClientError> {
        if rsp.cc != 0 {
            return Err(Self::refused(
                "Get Channel Authentication Capabilities",
                rsp.cc,
            ));
        }
        let d = &rsp.data;
        if d.len() < 8 {
            return Err(WireError::Short("authentication capabilities").into());
        }
        match self.cfg.version {
            LanVersion::V20 => {
                if d[1] & 0x80 == 0 || d[3] & 0x02 == 0 {
                    return Err(ClientError::Unsupported(
                        "the BMC does not offer IPMI 2.0 (RMCP+) sessions; use IPMI 1.5".into(),
                    ));
                }
                self.start_open_session()
            }
            LanVersion::V15 => {
                let offered = d[1];
                let auth = if offered & (1 << wire::AUTH_MD5) != 0 {
                    wire::AUTH_MD5
                } else if offered & (1 << wire::AUTH_STRAIGHT) != 0 && self.cfg.allow_straight {
                    wire::AUTH_STRAIGHT
                } else if offered & 1 != 0 && self.cfg.password.is_empty() {
                    wire::AUTH_NONE
                } else if offered & (1 << wire::AUTH_STRAIGHT) != 0 {
                    return Err(ClientError::Unsupported(
                        "the BMC offers only \"straight password\" IPMI 1.5 authentication, \
                         which sends the password in clear; it is used only for machines that \
                         explicitly allow it (or use IPMI 2.0)"
                            .into(),
                    ));
                } else {
                    return Err(ClientError::Unsupported(format!(
                        "IPMI 1.5 authentication types offered by the BMC ({offered:#04x}); \
                         MD5 needed"
                    )));
                };
                self.v15.auth = auth;
                let mut data = vec![auth];
                data.extend(wire::pad_password::<16>(self.cfg.username.as_bytes()));
                self.phase = Phase::Challenge;
                self.last = self.sessionless(CMD_CHALLENGE, &data);
                Ok(Step::Send(self.last.clone()))
            }
        }
    }

    fn on_challenge(&mut self, rsp: &LanResponse) -> Result<Step, ClientError> {
        match rsp.cc {
            0 => {}
            0x81 | 0x82 => {
                return Err(ClientError::Auth(
                    "the BMC does not know this user name".into(),
                ))
            }
            cc => return Err(Self::refused("Get Session Challenge", cc)),
        }
        if rsp.data.len() < 20 {
            return Err(WireError::Short("session challenge").into());
        }
        let temp_id = u32::from_le_bytes([rsp.data[0], rsp.data[1], rsp.data[2], rsp.data[3]]);
        let mut data = vec![self.v15.auth, self.cfg.privilege];
        data.extend_from_slice(&rsp.data[4..20]);
        let outbound: u32 = self.rng.random::<u32>().max(1);
        data.extend(outbound.to_le_bytes());
        self.v15.session_id = temp_id;
        self.v15.seq = 0;
        let seq = self.next_rq_seq();
        let msg = wire::encode_request(APP, CMD_ACTIVATE, seq, &data);
        self.phase = Phase::Activate;
        self.last = wire::encode_v15(self.v15.auth, &self.v15.pass, temp_id, 0, &msg);
        Ok(Step::Send(self.last.clone()))
    }

    fn on_activate(&mut self, rsp: &LanResponse) -> Result<Step, ClientError> {
        match rsp.cc {
            0 => {}
            0x81 => return Err(ClientError::Auth("no session slot available".into())),
            0x82..=0x86 => {
                return Err(ClientError::Auth(format!(
                    "Activate Session refused (completion code {:#04x})",
                    rsp.cc
                )))
            }
            cc => return Err(Self::refused("Activate Session", cc)),
        }
        let d = &rsp.data;
        if d.len() < 10 {
            return Err(WireError::Short("activate session response").into());
        }
        // The session keeps the authentication we asked for: a BMC (or someone posing as it)
        // must not switch it to cleartext or to none.
        if d[0] != self.v15.auth {
            return Err(ClientError::Auth(format!(
                "the BMC activated the session with authentication type {:#04x} instead of \
                 {:#04x}",
                d[0], self.v15.auth
            )));
        }
        self.v15.session_id = u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
        self.v15.seq = u32::from_le_bytes([d[5], d[6], d[7], d[8]]).wrapping_sub(1);
        self.phase = Phase::Ready; // in_session() needs the session fields, not the phase
        self.set_privilege()
    }

    fn set_privilege(&mut self) -> Result<Step, ClientError> {
        let seq = self.next_rq_seq();
        let pkt = self.in_session(APP, CMD_SET_PRIV, &[self.cfg.privilege], seq);
        self.phase = Phase::SetPrivilege;
        self.last = pkt.clone();
        Ok(Step::Send(pkt))
    }

    fn start_open_session(&mut self) -> Result<Step, ClientError> {
        let (a, i, c) = suite(self.cfg.cipher_suite).expect("checked in new()");
        self.v20.console_id = self.rng.random::<u32>().max(1);
        let mut p = vec![0x00, self.cfg.privilege, 0, 0];
        p.extend(self.v20.console_id.to_le_bytes());
        p.extend([0x00, 0, 0, 0x08, a, 0, 0, 0]);
        p.extend([0x01, 0, 0, 0x08, i, 0, 0, 0]);
        p.extend([0x02, 0, 0, 0x08, c, 0, 0, 0]);
        self.phase = Phase::OpenSession;
        self.last = wire::encode_v20(
            wire::PAYLOAD_OPEN_REQ,
            0,
            0,
            &p,
            &V20Keys::default(),
            [0; 16],
        );
        Ok(Step::Send(self.last.clone()))
    }

    fn on_open_session(&mut self, d: &[u8]) -> Result<Step, ClientError> {
        if d.len() >= 2 && d[1] != 0 {
            return Err(ClientError::Refused {
                step: "RMCP+ Open Session",
                reason: status_text(d[1]).into(),
            });
        }
        if d.len() < 36 {
            return Err(WireError::Short("open session response").into());
        }
        let console = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        if console != self.v20.console_id {
            return Ok(Step::Ignore);
        }
        self.v20.managed_id = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        let (a, i, c) = suite(self.cfg.cipher_suite).expect("checked in new()");
        if d[16] != a || d[24] != i || d[32] != c {
            return Err(ClientError::Refused {
                step: "RMCP+ Open Session",
                reason: format!(
                    "BMC chose algorithms {}/{}/{} instead of cipher suite {}",
                    d[16], d[24], d[32], self.cfg.cipher_suite
                ),
            });
        }
        self.v20.integrity = i != 0;
        self.v20.confidentiality = c != 0;
        self.rng.fill_bytes(&mut self.v20.rm);
        // Name-only lookup (0x10) with the requested privilege.
        self.v20.role = 0x10 | self.cfg.privilege;
        let user = self.cfg.username.as_bytes();
        let mut p = vec![0x01, 0, 0, 0];
        p.extend(self.v20.managed_id.to_le_bytes());
        p.extend(self.v20.rm);
        p.extend([self.v20.role, 0, 0, user.len() as u8]);
        p.extend_from_slice(user);
        self.phase = Phase::Rakp1;
        self.last = wire::encode_v20(wire::PAYLOAD_RAKP1, 0, 0, &p, &V20Keys::default(), [0; 16]);
        Ok(Step::Send(self.last.clone()))
    }

    fn on_rakp2(&mut self, d: &[u8]) -> Result<Step, ClientError> {
        if d.len() >= 2 && d[1] != 0 {
            let reason = status_text(d[1]);
            return Err(match d[1] {
                0x0d | 0x09 | 0x0a => ClientError::Auth(reason.into()),
                _ => ClientError::Refused {
                    step: "RAKP message 2",
                    reason: reason.into(),
                },
            });
        }
        let auth_alg = suite(self.cfg.cipher_suite).map_or(0, |s| s.0);
        let code_len = if auth_alg == 0 { 0 } else { 20 };
        if d.len() < 40 + code_len {
            return Err(WireError::Short("RAKP message 2").into());
        }
        if u32::from_le_bytes([d[4], d[5], d[6], d[7]]) != self.v20.console_id {
            return Ok(Step::Ignore);
        }
        self.v20.rc.copy_from_slice(&d[8..24]);
        self.v20.guid.copy_from_slice(&d[24..40]);
        let user = self.cfg.username.as_bytes();
        let ulen = [user.len() as u8];
        let role = [self.v20.role];
        let (sid_m, sid_c) = (
            self.v20.console_id.to_le_bytes(),
            self.v20.managed_id.to_le_bytes(),
        );
        if auth_alg != 0 {
            let want = wire::hmac_sha1(
                &self.v20.kuid,
                &[
                    &sid_m,
                    &sid_c,
                    &self.v20.rm,
                    &self.v20.rc,
                    &self.v20.guid,
                    &role,
                    &ulen,
                    user,
                ],
            );
            if want[..] != d[40..60] {
                return Err(ClientError::Auth("wrong user name or password".into()));
            }
        }
        let mut p = vec![0x02, 0, 0, 0];
        p.extend(sid_c);
        if auth_alg != 0 {
            let code = wire::hmac_sha1(&self.v20.kuid, &[&self.v20.rc, &sid_m, &role, &ulen, user]);
            p.extend(code);
        }
        self.phase = Phase::Rakp3;
        self.last = wire::encode_v20(wire::PAYLOAD_RAKP3, 0, 0, &p, &V20Keys::default(), [0; 16]);
        Ok(Step::Send(self.last.clone()))
    }

    fn on_rakp4(&mut self, d: &[u8]) -> Result<Step, ClientError> {
        if d.len() >= 2 && d[1] != 0 {
            let reason = status_text(d[1]);
            return Err(match d[1] {
                0x0f | 0x0d => ClientError::Auth(reason.into()),
                _ => ClientError::Refused {
                    step: "RAKP message 4",
                    reason: reason.into(),
                },
            });
        }
        if d.len() < 8 {
            return Err(WireError::Short("RAKP message 4").into());
        }
        let auth_alg = suite(self.cfg.cipher_suite).map_or(0, |s| s.0);
        if auth_alg != 0 {
            let user = self.cfg.username.as_bytes();
            let sik = wire::hmac_sha1(
                &self.v20.kuid,
                &[
                    &self.v20.rm,
                    &self.v20.rc,
                    &[self.v20.role],
                    &[user.len() as u8],
                    user,
                ],
            );
            if d.len() < 20 {
                return Err(WireError::Short("RAKP message 4 check value").into());
            }
            let icv = wire::hmac_sha1(
                &sik,
                &[
                    &self.v20.rm,
                    &self.v20.managed_id.to_le_bytes(),
                    &self.v20.guid,
                ],
            );
            if icv[..12] != d[8..20] {
                return Err(ClientError::Auth(
                    "BMC failed to prove the session key (RAKP 4)".into(),
                ));
            }
            if self.v20.integrity {
                self.v20.keys.k1 = Some(wire::hmac_sha1(&sik, &[&[0x01; 20]]));
            }
            if self.v20.confidentiality {
                let k2 = wire::hmac_sha1(&sik, &[&[0x02; 20]]);
                let mut aes = [0u8; 16];
                aes.copy_from_slice(&k2[..16]);
                self.v20.keys.aes = Some(aes);
            }
        }
        self.v20.seq = 0;
        self.phase = Phase::Ready;
        self.set_privilege()
    }
}
