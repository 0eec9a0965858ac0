//! PXE boot-file policy: from what the client says it is (option 60 vendor class, 93
//! architecture, 77 user class / 175 iPXE features) decide what it should load next.
//!
//! Pure functions; unit-tested with the option values real ROMs send (see the lab notes:
//! qemu's iPXE ROM sends `PXEClient:Arch:00000:UNDI:002001`, arch 0, option 175, user class
//! `iPXE`).

use std::net::Ipv4Addr;

/// What kind of network-boot client sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Not a network-boot client (an OS DHCP client).
    Plain,
    /// A PXE ROM (option 60 starts with `PXEClient`) of the given RFC 4578 architecture.
    Pxe { arch: u16 },
    /// UEFI HTTP boot (option 60 starts with `HTTPClient`).
    HttpBoot { arch: u16 },
    /// iPXE (user class `iPXE` or option 175 present): can fetch scripts over HTTP.
    Ipxe { arch: u16 },
}

/// What the machine should do at boot, from its lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// Network boot (iPXE chain to the per-machine script).
    Network,
    /// Boot from the local disk: no boot file is offered.
    LocalDisk,
}

/// Where to fetch boot files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootServers {
    pub tftp: Ipv4Addr,
    /// Base URL of the HTTP boot server, e.g. `http://10.0.0.1:8080`.
    pub http_base: String,
    /// Send iPXE clients to [`IPXE_TFTP_SCRIPT`] over TFTP (which chains their HTTP script)
    /// instead of straight to the HTTP script.
    pub ipxe_via_tftp: bool,
}

/// The first-stage iPXE script a location node writes into its TFTP root: it chains the
/// requesting machine's own script on the HTTP boot server.
pub const IPXE_TFTP_SCRIPT: &str = "boot.ipxe";

/// Contents of [`IPXE_TFTP_SCRIPT`] for an HTTP boot server at `http_base`.
pub fn ipxe_tftp_script(http_base: &str) -> String {
    format!(
        "#!ipxe\necho rackd: chaining the per-machine script\nchain {}/boot/${{net0/mac}}.ipxe\n",
        http_base.trim_end_matches('/')
    )
}

/// The answer to put in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAnswer {
    /// `file` field / option 67.
    pub filename: String,
    /// `siaddr` / option 66 (TFTP), absent for HTTP URLs.
    pub next_server: Option<Ipv4Addr>,
    /// Option 60 to echo (`PXEClient` / `HTTPClient`), required by PXE and HTTP-boot ROMs.
    pub vendor_class: Option<&'static str>,
    /// Send iPXE `no-pxedhcp` (175.176 = 1) so iPXE does not wait for ProxyDHCP offers.
    pub ipxe_no_pxedhcp: bool,
}

pub fn classify(
    vendor_class: Option<&[u8]>,
    arch: Option<u16>,
    user_class: Option<&[u8]>,
    has_opt175: bool,
) -> Client {
    let arch = arch.unwrap_or(0);
    let is_ipxe = has_opt175 || user_class.is_some_and(|u| contains(u, b"iPXE"));
    let vc = vendor_class.unwrap_or(&[]);
    if vc.starts_with(b"HTTPClient") {
        return Client::HttpBoot { arch };
    }
    if is_ipxe {
        return Client::Ipxe { arch };
    }
    if vc.starts_with(b"PXEClient") {
        return Client::Pxe { arch };
    }
    Client::Plain
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// First-stage iPXE binary for a PXE ROM of this architecture (files from Debian's `ipxe`).
pub fn first_stage(arch: u16) -> &'static str {
    match arch {
        // RFC 4578 / IANA: 6 EFI IA32, 7 EFI BC (x64), 9 EFI x86-64
        6 => "ipxe32.efi",
        7 | 9 => "ipxe.efi",
        // 10 ARM32 UEFI, 11 ARM64 UEFI
        11 => "ipxe-arm64.efi",
        // 0 BIOS and anything unknown: the UNDI chainloader
        _ => "undionly.kpxe",
    }
}

/// Decide the boot answer, or `None` when no boot information should be sent.
pub fn answer(
    client: Client,
    mode: BootMode,
    mac: &str,
    servers: &BootServers,
) -> Option<BootAnswer> {
    if client == Client::Plain || mode == BootMode::LocalDisk {
        return None;
    }
    let script = format!(
        "{}/boot/{}.ipxe",
        servers.http_base.trim_end_matches('/'),
        mac
    );
    Some(match client {
        Client::Plain => return None,
        Client::Ipxe { .. } if servers.ipxe_via_tftp => BootAnswer {
            filename: IPXE_TFTP_SCRIPT.to_string(),
            next_server: Some(servers.tftp),
            vendor_class: None,
            ipxe_no_pxedhcp: true,
        },
        Client::Ipxe { .. } => BootAnswer {
            filename: script,
            next_server: None,
            vendor_class: None,
            ipxe_no_pxedhcp: true,
        },
        Client::HttpBoot { arch } => BootAnswer {
            filename: format!(
                "{}/tftp/{}",
                servers.http_base.trim_end_matches('/'),
                first_stage(arch)
            ),
            next_server: None,
            vendor_class: Some("HTTPClient"),
            ipxe_no_pxedhcp: false,
        },
        Client::Pxe { arch } => BootAnswer {
            filename: first_stage(arch).to_string(),
            next_server: Some(servers.tftp),
            vendor_class: Some("PXEClient"),
            ipxe_no_pxedhcp: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> BootServers {
        BootServers {
            tftp: Ipv4Addr::new(10, 77, 0, 1),
            http_base: "http://10.77.0.1:8080".into(),
            ipxe_via_tftp: false,
        }
    }

    #[test]
    fn ipxe_via_tftp_gets_the_chain_script() {
        let s = BootServers {
            ipxe_via_tftp: true,
            ..servers()
        };
        let a = answer(Client::Ipxe { arch: 0 }, BootMode::Network, "m", &s).unwrap();
        assert_eq!(
            (a.filename.as_str(), a.next_server),
            (IPXE_TFTP_SCRIPT, Some(s.tftp))
        );
        assert_eq!(
            ipxe_tftp_script("http://10.77.0.1:8080/"),
            "#!ipxe\necho rackd: chaining the per-machine script\nchain http://10.77.0.1:8080/boot/${net0/mac}.ipxe\n"
        );
    }

    #[test]
    fn qemu_ipxe_rom_gets_its_script_over_http() {
        let c = classify(
            Some(b"PXEClient:Arch:00000:UNDI:002001"),
            Some(0),
            Some(b"iPXE"),
            true,
        );
        assert_eq!(c, Client::Ipxe { arch: 0 });
        let a = answer(c, BootMode::Network, "52:54:00:12:34:56", &servers()).unwrap();
        assert_eq!(
            a.filename,
            "http://10.77.0.1:8080/boot/52:54:00:12:34:56.ipxe"
        );
        assert!(a.ipxe_no_pxedhcp);
    }

    #[test]
    fn bios_and_uefi_pxe_get_first_stages_over_tftp() {
        let bios = classify(
            Some(b"PXEClient:Arch:00000:UNDI:002001"),
            Some(0),
            None,
            false,
        );
        let a = answer(bios, BootMode::Network, "m", &servers()).unwrap();
        assert_eq!(
            (a.filename.as_str(), a.next_server),
            ("undionly.kpxe", Some(servers().tftp))
        );
        assert_eq!(a.vendor_class, Some("PXEClient"));
        let efi = classify(
            Some(b"PXEClient:Arch:00007:UNDI:003016"),
            Some(7),
            None,
            false,
        );
        assert_eq!(
            answer(efi, BootMode::Network, "m", &servers())
                .unwrap()
                .filename,
            "ipxe.efi"
        );
        let efi9 = classify(
            Some(b"PXEClient:Arch:00009:UNDI:003016"),
            Some(9),
            None,
            false,
        );
        assert_eq!(
            answer(efi9, BootMode::Network, "m", &servers())
                .unwrap()
                .filename,
            "ipxe.efi"
        );
    }

    #[test]
    fn uefi_http_boot_gets_a_url() {
        let c = classify(
            Some(b"HTTPClient:Arch:00016:UNDI:003001"),
            Some(16),
            None,
            false,
        );
        let a = answer(c, BootMode::Network, "m", &servers()).unwrap();
        assert!(a.filename.starts_with("http://10.77.0.1:8080/"));
        assert_eq!(a.vendor_class, Some("HTTPClient"));
        assert_eq!(a.next_server, None);
    }

    #[test]
    fn plain_clients_and_disk_boot_get_no_boot_file() {
        assert_eq!(
            classify(Some(b"udhcp 1.36.1"), None, None, false),
            Client::Plain
        );
        assert_eq!(
            answer(Client::Plain, BootMode::Network, "m", &servers()),
            None
        );
        let pxe = Client::Pxe { arch: 0 };
        assert_eq!(answer(pxe, BootMode::LocalDisk, "m", &servers()), None);
    }
}
