//! The DHCP server of a location node: [`ReplicaInventory`] answers the sans-IO DHCP core
//! (`rackd_net::dhcp`) from this node's own replica of the inventory, so a site keeps booting
//! known machines when it is cut off from the voters; unknown MACs in a discovery location are
//! recorded as new machines through the leader.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rackd_net::dhcp::{BootMode, Inventory, Pool, Reservation};
use rackd_raft::cmd::Command;
use rackd_types::payload::CreateMachine;
use rackd_types::{ErrorCode, Subnet};

use crate::cluster::Cluster;
use crate::config::DhcpConfig;
use rackd_types::net::{parse_ipv4, Cidr4};
use rackd_types::MachineState;

/// Netmask, gateway and DNS servers a subnet hands to its clients.
fn subnet_options(s: &Subnet) -> Option<(Ipv4Addr, Option<Ipv4Addr>, Vec<Ipv4Addr>)> {
    let cidr = Cidr4::parse(&s.cidr).ok()?;
    Some((
        cidr.netmask(),
        s.gateway.as_deref().and_then(|g| parse_ipv4(g).ok()),
        s.dns.iter().filter_map(|d| parse_ipv4(d).ok()).collect(),
    ))
}

/// Reservations of one location, read from the local state machine at request time (so a
/// changed reservation takes effect on the next request).
pub struct ReplicaInventory {
    pub cluster: Arc<dyn Cluster>,
    pub location: String,
}

impl Inventory for ReplicaInventory {
    fn reservation(&self, mac: &str) -> Option<Reservation> {
        let st = self.cluster.state();
        let m = st.machine_by_mac(mac)?;
        if m.location != self.location {
            return None;
        }
        let boot = match m.state {
            MachineState::Deployed => BootMode::LocalDisk,
            _ => BootMode::Network,
        };
        for ip in &m.ips {
            let Ok(ip) = parse_ipv4(ip) else { continue };
            let Some((mask, gateway, dns)) = st
                .subnet_containing(&self.location, ip)
                .and_then(subnet_options)
            else {
                continue;
            };
            return Some(Reservation {
                ip,
                mask,
                gateway,
                dns,
                hostname: m.hostname.clone(),
                boot,
            });
        }
        None
    }

    fn discovery_pools(&self) -> Vec<Pool> {
        let st = self.cluster.state();
        if !st
            .location_by_name(&self.location)
            .is_some_and(|l| l.discovery)
        {
            return Vec::new();
        }
        let mut pools = Vec::new();
        for s in st.subnets.values().filter(|s| s.location == self.location) {
            let Some((mask, gateway, dns)) = subnet_options(s) else {
                continue;
            };
            for r in &s.dynamic_ranges {
                let (Ok(start), Ok(end)) = (parse_ipv4(&r.start), parse_ipv4(&r.end)) else {
                    continue;
                };
                pools.push(Pool {
                    start,
                    end,
                    mask,
                    gateway,
                    dns: dns.clone(),
                });
            }
        }
        pools
    }

    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.cluster
            .state()
            .machine_by_ip(&ip.to_string())
            .is_some()
    }
}

/// Record machines that DHCP discovered (unknown MACs in a discovery location) as `new`,
/// once each: the idempotency key and the MAC's cluster-wide uniqueness make retries and
/// several location nodes seeing the same client harmless.
///
/// The key is `discover:<mac>:<next entity id>` as this replica sees it when the MAC turns up
/// unknown: the same for every retry of one discovery, and new once a machine was created for
/// the MAC (which advanced the id), so a discovered machine that an operator deleted is
/// discovered again when it boots (with the bare MAC as key, the cached answer of the first
/// discovery would be returned for 24 h and nothing created).
async fn record_discovered(
    node: Arc<dyn Cluster>,
    location: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    while let Some(mac) = rx.recv().await {
        let next_id = {
            let st = node.state();
            if st.machine_by_mac(&mac).is_some() {
                continue;
            }
            st.meta.next_id
        };
        let key = format!("discover:{mac}:{next_id}");
        let cmd = Command::CreateMachine(CreateMachine {
            hostname: format!("discovered-{}", mac.replace(':', "")),
            location: location.clone(),
            rack_id: None,
            rack_unit: None,
            macs: vec![mac.clone()],
            ips: vec![],
            bmc: None,
            state: Some(rackd_types::MachineState::New),
            description: format!("discovered by DHCP on node {}", node.id()),
            tags: vec!["discovered".into()],
        });
        let actor = format!("node:{}", node.id());
        let mut delay = std::time::Duration::from_secs(1);
        for attempt in 1..=6 {
            match node
                .propose_anywhere(&actor, Some(key.clone()), cmd.clone())
                .await
            {
                Ok(_) => {
                    tracing::info!(%mac, %location, "recorded discovered machine");
                    break;
                }
                Err(e) if e.code == ErrorCode::Conflict => break, // already known
                Err(e) => {
                    tracing::warn!(%mac, attempt, error = %e.message, "could not record discovered machine yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    }
}

/// Start the DHCP server of `location` on the provisioning interface.
/// Returns the server's task and the discovery recorder's.
pub fn start(
    node: Arc<dyn Cluster>,
    location: &str,
    o: &DhcpConfig,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    let socket = rackd_net::dhcp::dhcp_socket(o.listen, Some(&o.interface))
        .with_context(|| format!("DHCP socket on {} ({})", o.listen, o.interface))?;
    let core = rackd_net::dhcp::DhcpCore::new(rackd_net::dhcp::Config {
        server_id: o.server_ip,
        boot: rackd_net::dhcp::BootServers {
            tftp: o.server_ip,
            http_base: o.http_base(),
            ipxe_via_tftp: o.ipxe_via_tftp,
        },
        lease_secs: o.lease_secs,
        proxy: o.proxy,
        pool_share: o.pool_share,
        discovery: o.discovery,
    });
    let inv = Arc::new(ReplicaInventory {
        cluster: node.clone(),
        location: location.to_string(),
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let discovery = tokio::spawn(record_discovered(node, location.to_string(), rx));
    let server = rackd_net::dhcp::DhcpServer::new(socket, core, inv)?.with_discovery_channel(tx);
    let stats = server.stats();
    crate::metrics::global().watch_dhcp(location, &stats);
    tracing::info!(interface = %o.interface, server_ip = %o.server_ip, %location, proxy = o.proxy, "DHCP server started");
    let server = tokio::spawn(async move {
        // The counters stay in the scrapes while the server runs.
        let _stats = stats;
        if let Err(e) = server.run().await {
            tracing::error!(error = %e, "DHCP server stopped");
        }
    });
    Ok((server, discovery))
}

#[cfg(test)]
#[path = "dhcp_tests.rs"]
mod tests;
