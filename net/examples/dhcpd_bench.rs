//! DHCP server for benchmarks: rackd's DHCP core and socket shell, with an inventory that has a
//! reservation for every MAC (IP derived from the MAC inside 10.195.0.0/16), so perfdhcp's
//! generated clients are all "known machines". Usage: `dhcpd_bench INTERFACE SERVER_IP`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rackd_net::dhcp::{
    dhcp_socket, BootMode, BootServers, Config, DhcpCore, DhcpServer, Inventory, Reservation,
};

struct EveryMac;

impl Inventory for EveryMac {
    fn reservation(&self, mac: &str) -> Option<Reservation> {
        let h = mac.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let host = (h % 65_000) as u32 + 256;
        Some(Reservation {
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 195, 0, 0)) + host),
            mask: Ipv4Addr::new(255, 255, 0, 0),
            gateway: Some(Ipv4Addr::new(10, 195, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 195, 0, 1)],
            hostname: String::new(),
            boot: BootMode::Network,
        })
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iface = args.get(1).cloned().unwrap_or_else(|| "srv0".into());
    let server_ip: Ipv4Addr = args
        .get(2)
        .map(|s| s.parse().expect("server ip"))
        .unwrap_or(Ipv4Addr::new(10, 195, 0, 1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sock = dhcp_socket("0.0.0.0:67".parse().expect("addr"), Some(&iface))?;
        let core = DhcpCore::new(Config {
            server_id: server_ip,
            boot: BootServers {
                tftp: server_ip,
                http_base: format!("http://{server_ip}:8080"),
                ipxe_via_tftp: false,
            },
            lease_secs: 3600,
            proxy: false,
            pool_share: Default::default(),
            discovery: Default::default(),
        });
        DhcpServer::new(sock, core, Arc::new(EveryMac))?.run().await
    })
}
