//! The IPMI [`Bmc`] driver: a thin tokio shell around the sans-IO [`Client`]. Each call opens
//! one session (RMCP+ or IPMI 1.5), raises it to the configured privilege, sends one command,
//! and closes the session, so no BMC session slot is leaked. Lost datagrams are retransmitted
//! (set-up packets and idempotent commands only); a cycle or reset whose answer is lost is
//! reported as unconfirmed, never repeated. Must not depend on the replicated state.

use std::net::SocketAddr;
use std::time::Duration;

use rand::{rngs::StdRng, SeedableRng};
use tokio::net::UdpSocket;

use super::client::{Client, ClientConfig, ClientError, LanVersion, Step};
use super::commands::{self as c, ChassisControl};
use super::wire::LanResponse;
use crate::bmc::{Bmc, BmcError, BmcInfo, BootDevice, PowerState};

/// Where and how to reach one BMC.
#[derive(Debug, Clone)]
pub struct IpmiBmc {
    pub target: SocketAddr,
    pub config: ClientConfig,
    /// Wait for each answer this long before retransmitting.
    pub timeout: Duration,
    /// Retransmissions per packet.
    pub retries: u32,
    /// Mark boot devices for EFI firmware.
    pub efi: bool,
}

impl IpmiBmc {
    pub fn new(target: SocketAddr, version: LanVersion, username: &str, password: &str) -> Self {
        Self {
            target,
            config: ClientConfig {
                version,
                cipher_suite: 3,
                username: username.to_string(),
                password: password.as_bytes().to_vec(),
                privilege: 4,
                allow_straight: false,
            },
            timeout: Duration::from_millis(1000),
            retries: 2,
            efi: false,
        }
    }

    fn timeout_error(&self, step: &str) -> BmcError {
        let waited = self.timeout.as_millis() as u64 * (self.retries as u64 + 1);
        if step == "Activate Session" {
            // IPMI 1.5 BMCs drop an Activate Session whose auth code does not verify.
            return BmcError::Auth {
                address: self.address(),
                reason: format!(
                    "no answer to Activate Session within {waited} ms (wrong password?)"
                ),
            };
        }
        BmcError::Timeout {
            address: self.address(),
            timeout_ms: waited,
        }
    }

    fn client_error(&self, e: ClientError) -> BmcError {
        let address = self.address();
        match e {
            ClientError::Auth(reason) => BmcError::Auth { address, reason },
            ClientError::Unsupported(operation) => BmcError::Unsupported { address, operation },
            other => BmcError::Bmc {
                address,
                message: other.to_string(),
            },
        }
    }

    /// Waits for the next datagram until `deadline`.
    async fn recv(
        sock: &UdpSocket,
        buf: &mut [u8],
        deadline: tokio::time::Instant,
    ) -> Option<usize> {
        match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
            Ok(Ok(n)) => Some(n),
            Err(_) => None,
            // ICMP unreachable and the like: treat as silence, keep the pacing.
            Ok(Err(_)) => {
                tokio::time::sleep_until(deadline).await;
                None
            }
        }
    }

    /// One session, one command. `idempotent` commands are retransmitted on loss.
    async fn exchange(
        &self,
        name: &str,
        request: (u8, u8, Vec<u8>),
        idempotent: bool,
    ) -> Result<LanResponse, BmcError> {
        let rsp = self.exchange_any(name, request, idempotent).await?;
        if rsp.cc != 0 {
            return Err(BmcError::Bmc {
                address: self.address(),
                message: format!(
                    "{name}: completion code {:#04x} ({})",
                    rsp.cc,
                    c::completion_text(rsp.cc)
                ),
            });
        }
        Ok(rsp)
    }

    /// [`Self::exchange`] that returns an answer whatever its completion code.
    async fn exchange_any(
        &self,
        name: &str,
        (netfn, cmd, data): (u8, u8, Vec<u8>),
        idempotent: bool,
    ) -> Result<LanResponse, BmcError> {
        let io = |e: std::io::Error| BmcError::Bmc {
            address: self.address(),
            message: format!("socket: {e}"),
        };
        let bind: SocketAddr = if self.target.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let sock = UdpSocket::bind(bind).await.map_err(io)?;
        sock.connect(self.target).await.map_err(io)?;
        let mut client = Client::new(self.config.clone(), StdRng::from_os_rng())
            .map_err(|e| self.client_error(e))?;
        let mut buf = vec![0u8; 1024];

        // Session set-up.
        let mut out = client.start();
        let mut tries = 0;
        'setup: loop {
            sock.send(&out).await.map_err(io)?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let Some(n) = Self::recv(&sock, &mut buf, deadline).await else {
                    tries += 1;
                    if tries > self.retries {
                        return Err(self.timeout_error(client.step_name()));
                    }
                    out = client.resend();
                    continue 'setup;
                };
                match client.handle(&buf[..n]) {
                    Ok(Step::Send(p)) => {
                        out = p;
                        tries = 0;
                        continue 'setup;
                    }
                    Ok(Step::Ready) => break 'setup,
                    Ok(_) | Err(ClientError::Wire(_)) => continue,
                    Err(e) => return Err(self.client_error(e)),
                }
            }
        }

        // The command.
        let mut out = client
            .request(netfn, cmd, &data)
            .map_err(|e| self.client_error(e))?;
        let mut tries = 0;
        let rsp = 'cmd: loop {
            sock.send(&out).await.map_err(io)?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let Some(n) = Self::recv(&sock, &mut buf, deadline).await else {
                    tries += 1;
                    if !idempotent {
                        self.close(&sock, &mut client, &mut buf).await;
                        return Err(BmcError::Unconfirmed {
                            address: self.address(),
                            operation: name.to_string(),
                            timeout_ms: self.timeout.as_millis() as u64,
                        });
                    }
                    if tries > self.retries {
                        self.close(&sock, &mut client, &mut buf).await;
                        return Err(self.timeout_error(name));
                    }
                    out = client.resend();
                    continue 'cmd;
                };
                match client.handle(&buf[..n]) {
                    Ok(Step::Response(r)) => break 'cmd r,
                    Ok(_) | Err(ClientError::Wire(_)) => continue,
                    Err(e) => return Err(self.client_error(e)),
                }
            }
        };
        self.close(&sock, &mut client, &mut buf).await;
        Ok(rsp)
    }

    /// Close Session, waiting briefly for the answer so the BMC frees the slot before we go.
    async fn close(&self, sock: &UdpSocket, client: &mut Client<StdRng>, buf: &mut [u8]) {
        let Some(pkt) = client.close() else { return };
        if sock.send(&pkt).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.timeout.min(Duration::from_millis(300));
        while let Some(n) = Self::recv(sock, buf, deadline).await {
            if matches!(client.handle(&buf[..n]), Ok(Step::Response(_))) {
                return;
            }
        }
    }

    async fn control(&self, name: &str, ctl: ChassisControl) -> Result<(), BmcError> {
        let idempotent = matches!(ctl, ChassisControl::PowerUp | ChassisControl::PowerDown);
        self.exchange(name, ctl.request(), idempotent)
            .await
            .map(|_| ())
    }
}

impl Bmc for IpmiBmc {
    fn address(&self) -> String {
        self.target.to_string()
    }

    async fn power_status(&self) -> Result<PowerState, BmcError> {
        let r = self
            .exchange("Get Chassis Status", c::chassis_status(), true)
            .await?;
        Ok(c::parse_chassis_status(&r.data))
    }

    async fn power_on(&self) -> Result<(), BmcError> {
        self.control("Chassis Control power up", ChassisControl::PowerUp)
            .await
    }

    async fn power_off(&self) -> Result<(), BmcError> {
        self.control("Chassis Control power down", ChassisControl::PowerDown)
            .await
    }

    async fn power_cycle(&self) -> Result<(), BmcError> {
        self.control("Chassis Control power cycle", ChassisControl::PowerCycle)
            .await
    }

    async fn hard_reset(&self) -> Result<(), BmcError> {
        self.control("Chassis Control hard reset", ChassisControl::HardReset)
            .await
    }

    /// A BMC that refuses the request itself (no such command, a parameter or data field it
    /// does not take: some BMCs, and `ipmi_sim` driving a VM) answers `Unsupported`, never
    /// retried; other completion codes are errors.
    async fn set_boot_device(&self, dev: BootDevice, persistent: bool) -> Result<(), BmcError> {
        let name = "Set System Boot Options";
        let rsp = self
            .exchange_any(name, c::set_boot_device(dev, persistent, self.efi), true)
            .await?;
        let said = |cc: u8| {
            format!(
                "{name}: completion code {cc:#04x} ({})",
                c::completion_text(cc)
            )
        };
        match rsp.cc {
            0 => Ok(()),
            cc @ (0x80 | 0xc1 | 0xc9 | 0xcc) => Err(BmcError::Unsupported {
                address: self.address(),
                operation: format!("setting the boot device ({})", said(cc)),
            }),
            cc => Err(BmcError::Bmc {
                address: self.address(),
                message: said(cc),
            }),
        }
    }

    async fn info(&self) -> Result<BmcInfo, BmcError> {
        let r = self
            .exchange("Get Device ID", c::get_device_id(), true)
            .await?;
        c::parse_device_id(&r.data).ok_or_else(|| BmcError::Bmc {
            address: self.address(),
            message: "Get Device ID: short response".into(),
        })
    }
}

impl LanVersion {
    /// `lanplus` (IPMI 2.0) or `lan` (IPMI 1.5), as ipmitool names them, or rackd's BMC
    /// driver names `ipmi` and `ipmi15`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lanplus" | "ipmi" | "2.0" => Some(Self::V20),
            "lan" | "ipmi15" | "1.5" => Some(Self::V15),
            _ => None,
        }
    }
}
