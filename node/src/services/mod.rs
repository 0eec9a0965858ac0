//! The location services of a node started with `--location NAME`: DHCP ([`dhcp`]), TFTP
//! ([`tftp`]), HTTP boot ([`http_boot`]), the IPMI proxy ([`ipmi_proxy`]) and the task executor
//! ([`executor`]); and, on every node, the leader's task [`reaper`]. They answer from this node's own replica of the inventory, so a site keeps
//! booting known machines when it is cut off from the voters, and they write through the
//! cluster handle only.
//!
//! [`ServiceSet`] owns every task they run: dropping it (shutdown, or this node learned it was
//! removed) stops them all. Layer: depends on `config` and `cluster`; must never import `api`
//! or `server`.

pub mod blobs;
pub mod dhcp;
pub mod executor;
pub mod http_boot;
pub mod ipmi_proxy;
pub mod node_watch;
pub mod reaper;
pub mod reseal;
pub mod tftp;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::abort::AbortOnDrop;
use crate::cluster::Cluster;
use crate::config::{LocationConfig, ProxyConfig};

/// Whether the outcome of a failed internal write is unknown (it may have committed: no
/// quorum, a lost answer, a timeout) rather than refused by apply.
pub fn outcome_unknown(e: &rackd_types::ApiError) -> bool {
    use rackd_types::ErrorCode;
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal)
}

/// The running location services; every task stops when this is dropped.
/// Get this node's location key (`cluster::sealing`) as soon as the location exists, so that a
/// site cut off from the voters before its first power task or deployment still opens its
/// machines' BMC passwords and deploy tokens. Retries with backoff; ends once the key is held.
async fn keep_location_key(cluster: Arc<dyn Cluster>, location: String) {
    let mut pause = Duration::from_secs(1);
    loop {
        let id = cluster
            .state()
            .location_by_name(&location)
            .map(|l| l.meta.id);
        let Some(id) = id else {
            // Not created yet: look again soon.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        match cluster.location_key(id).await {
            Ok(_) => {
                tracing::debug!(%location, "holds its location's key");
                return;
            }
            Err(e) => tracing::debug!(%location, error = %e.message, "location key not yet held"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

#[derive(Default)]
pub struct ServiceSet {
    tasks: Vec<AbortOnDrop>,
    /// Router advertisements on the DHCP interface (a thread, stopped on drop).
    _ra: Option<rackd_net::ra::RaSender>,
    /// Members' BMC tunnels are answered while this lives.
    _tunnels: Option<ServeTunnels>,
}

/// Stops answering BMC tunnels when dropped.
struct ServeTunnels(Arc<crate::cluster::link::Link>);

impl Drop for ServeTunnels {
    fn drop(&mut self) {
        self.0.serve_bmc_tunnels(None);
    }
}

impl ServiceSet {
    /// Start the services `cfg` asks for (none when the node serves no location).
    pub async fn start(
        (cfg, proxy): (Option<&LocationConfig>, Option<&ProxyConfig>),
        data_dir: &Path,
        cluster: Arc<dyn Cluster>,
        blobs: Arc<crate::blobs::BlobStore>,
        link: Option<Arc<crate::cluster::link::Link>>,
    ) -> anyhow::Result<Self> {
        let mut set = ServiceSet::default();
        // The IPMI proxy, on any node that asks for one.
        if let Some(p) = proxy {
            set.tasks.push(AbortOnDrop(
                ipmi_proxy::start(
                    cluster.clone(),
                    cfg.map(|c| c.name.clone()),
                    p.clone(),
                    link.clone(),
                )
                .await?,
            ));
        }
        let Some(cfg) = cfg else {
            return Ok(set);
        };
        // Members' BMC tunnels reach this location's BMCs (until the services stop).
        if let Some(link) = &link {
            link.serve_bmc_tunnels(Some(ipmi_proxy::tunnel_resolver(
                cluster.clone(),
                cfg.name.clone(),
            )));
            set._tunnels = Some(ServeTunnels(link.clone()));
        }
        let location = cfg.name.as_str();
        if let Some(addr) = cfg.tftp_listen {
            set.tasks.push(
                tftp::start(&cfg.tftp_root, &cfg.tftp_limits, addr, data_dir, location).await?,
            );
        }

        let mut http_base = None;
        if let Some(h) = &cfg.http_boot {
            let started = http_boot::start(
                h,
                cluster.clone(),
                blobs.clone(),
                location,
                &cfg.tftp_root,
                data_dir,
            )
            .await?;
            http_base = Some(format!("http://{}", started.bound));
            set.tasks.push(started.task);
        }

        if let Some(d) = &cfg.dhcp {
            let mut d = d.clone();
            if d.http_base.is_none() {
                d.http_base = http_base.clone();
            }
            if cfg.tftp_listen.is_some() {
                // The first-stage script iPXE clients get over TFTP with --ipxe-via-tftp.
                std::fs::write(
                    cfg.tftp_root.join(rackd_net::dhcp::boot::IPXE_TFTP_SCRIPT),
                    rackd_net::dhcp::boot::ipxe_tftp_script(&d.http_base()),
                )
                .context("write boot.ipxe into the TFTP root")?;
            }
            if d.router_advertisements {
                match rackd_net::ra::RaSender::start(&d.interface, Duration::from_secs(3)) {
                    Ok(r) => set._ra = Some(r),
                    Err(e) => {
                        tracing::warn!(interface = %d.interface, error = %e, "cannot send router advertisements")
                    }
                }
            }
            let (server, discovery) = dhcp::start(cluster.clone(), location, &d)?;
            set.tasks.push(AbortOnDrop(server));
            set.tasks.push(AbortOnDrop(discovery));
        }

        set.tasks.push(AbortOnDrop(
            executor::Executor::new(
                cluster.clone(),
                location.to_string(),
                cfg.power.clone(),
                Some(blobs),
            )
            .spawn(),
        ));
        set.tasks.push(AbortOnDrop(tokio::spawn(keep_location_key(
            cluster.clone(),
            location.to_string(),
        ))));
        Ok(set)
    }
}
