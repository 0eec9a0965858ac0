//! The IPMI proxy: the tokio shell around [`rackd_hwctl::relay::Relay`]. Machine N is reached
//! at `LISTEN:BASE+N` (`ipmitool -I lanplus -H node -p BASE+N …`); ports are stable (derived
//! from the machine id, no extra replicated state) and the same on every node. Listening
//! sockets follow the replica: machines with an IPMI BMC of this node's location are relayed
//! directly (each flow its own upstream socket); machines of other locations, when a member
//! bound to that location exists, through a BMC tunnel over the QUIC link to that member
//! (`cluster::link::tunnel`), which relays to the BMC from its site. Only addresses an operator
//! opened a BMC session for (`POST /v1/machines/{id}/bmc-session`, replicated with the machine)
//! get through, until the grant expires (the tunnel's far end checks it again). Must not depend
//! on the HTTP API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rackd_hwctl::relay::{FlowId, Input, Output, Relay, RelayConfig, Resolve};
use tokio::net::UdpSocket;

use crate::cluster::link::tunnel::TunnelResolver;
use crate::cluster::link::Link;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::Cluster;
use crate::config::ProxyConfig;

enum Event {
    Client {
        port: u16,
        client: SocketAddr,
        data: Vec<u8>,
    },
    Bmc {
        flow: FlowId,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Tick,
}

/// A machine's BMC and the sessions granted for it; `via`: the member (id, peer address)
/// whose site reaches it, for a machine of another location.
struct Target {
    bmc: SocketAddr,
    grants: Vec<rackd_types::BmcSession>,
    via: Option<(u64, String)>,
}

/// An IPMI BMC given by IP literal.
fn ipmi_bmc(m: &rackd_types::Machine) -> Option<SocketAddr> {
    let b = m.bmc.as_ref()?;
    if !b.driver.is_ipmi() {
        return None;
    }
    let ip: IpAddr = b.address.trim().parse().ok()?;
    Some(SocketAddr::new(ip, b.port))
}

/// Machine id → BMC and grants of the machines this proxy reaches: those of `location`
/// directly; with a link, those of other locations through a member bound to theirs (the
/// lowest id among those serving it, so every proxy picks the same one).
fn bmc_table(node: &dyn Cluster, location: Option<&str>, tunnels: bool) -> HashMap<u64, Target> {
    let state = node.state();
    let members = node.status().members;
    let me = node.id();
    let via = |loc: &str| -> Option<(u64, String)> {
        state
            .meta
            .node_sites
            .iter()
            .filter(|(id, site)| site.as_str() == loc && **id != me)
            .find_map(|(id, _)| members.get(id).map(|i| (*id, i.peer.clone())))
    };
    state
        .machines
        .values()
        .filter_map(|m| {
            let bmc = ipmi_bmc(&m.machine)?;
            let here = location == Some(m.machine.location.as_str());
            let via = match here {
                true => None,
                false if tunnels => Some(via(&m.machine.location)?),
                false => return None,
            };
            let grants = m.bmc_sessions.clone();
            Some((m.machine.meta.id, Target { bmc, grants, via }))
        })
        .collect()
}

/// What this location node's BMC tunnels reach: a machine of `location` with an IPMI BMC,
/// for an address holding a BMC session for it (checked again at the far end of a tunnel).
pub fn tunnel_resolver(node: Arc<dyn Cluster>, location: String) -> TunnelResolver {
    Arc::new(move |machine_id, source| {
        let state = node.state();
        let m = state
            .machines
            .get(&machine_id)
            .filter(|m| m.machine.location == location)
            .ok_or_else(|| format!("machine {machine_id} is not one of location {location}"))?;
        let bmc =
            ipmi_bmc(&m.machine).ok_or_else(|| format!("machine {machine_id} has no IPMI BMC"))?;
        let now = crate::cluster::now_ms();
        if !rackd_raft::state::bmc_sessions::grants_admit(&m.bmc_sessions, source, now) {
            return Err(format!(
                "{source} holds no BMC session for machine {machine_id}"
            ));
        }
        Ok(bmc)
    })
}

/// Where a flow's datagrams go.
enum Upstream {
    /// A socket of this node toward the BMC.
    Udp(Arc<UdpSocket>, SocketAddr, JoinHandle<()>),
    /// A BMC tunnel (its task owns the stream; datagrams go to it over `tx`).
    Tunnel(mpsc::Sender<Vec<u8>>, JoinHandle<()>),
}

struct Shell {
    node: Arc<dyn Cluster>,
    location: Option<String>,
    link: Option<Arc<Link>>,
    opts: ProxyConfig,
    tx: mpsc::Sender<Event>,
    table: HashMap<u64, Target>,
    listeners: HashMap<u16, (Arc<UdpSocket>, JoinHandle<()>)>,
    upstream: HashMap<FlowId, Upstream>,
}

impl Shell {
    fn port_of(&self, id: u64) -> Option<u16> {
        u16::try_from(self.opts.base_port as u64 + id).ok()
    }

    /// What a listening port reaches for `client` at `now_ms` (from the table refreshed
    /// every second; expiry is checked against the clock at each datagram).
    fn lookup(&self, port: u16, client: IpAddr, now_ms: u64) -> Resolve {
        let Some(t) = (port as u64)
            .checked_sub(self.opts.base_port as u64)
            .and_then(|id| self.table.get(&id))
        else {
            return Resolve::NoMachine;
        };
        if rackd_raft::state::bmc_sessions::grants_admit(&t.grants, client, now_ms) {
            Resolve::Bmc(t.bmc)
        } else {
            Resolve::NotGranted
        }
    }

    /// Feeds every datagram received on `sock` to the relay loop as `event(from, data)`.
    fn reader(
        &self,
        sock: &Arc<UdpSocket>,
        event: impl Fn(SocketAddr, Vec<u8>) -> Event + Send + 'static,
    ) -> JoinHandle<()> {
        let (s, tx) = (sock.clone(), self.tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                if tx.send(event(from, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        })
    }

    /// Opens listeners for new machines and closes those of machines that left.
    async fn reconcile(&mut self) {
        self.table = bmc_table(&*self.node, self.location.as_deref(), self.link.is_some());
        let want: std::collections::HashSet<u16> = self
            .table
            .keys()
            .filter_map(|id| self.port_of(*id))
            .collect();
        self.listeners.retain(|port, (_, task)| {
            let keep = want.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in want {
            if self.listeners.contains_key(&port) {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(self.opts.listen, port)).await {
                Ok(sock) => {
                    let sock = Arc::new(sock);
                    let task = self.reader(&sock, move |client, data| Event::Client {
                        port,
                        client,
                        data,
                    });
                    tracing::info!(port, "IPMI proxy listening");
                    self.listeners.insert(port, (sock, task));
                }
                Err(e) => tracing::warn!(port, error = %e, "IPMI proxy cannot listen"),
            }
        }
    }

    /// The member a new flow on `port` tunnels through, if its machine is of another location.
    fn via(&self, port: u16) -> Option<(u64, u64, String)> {
        let id = (port as u64).checked_sub(self.opts.base_port as u64)?;
        let (node, addr) = self.table.get(&id)?.via.clone()?;
        Some((id, node, addr))
    }

    /// A flow through a BMC tunnel: datagrams from the relay go to the stream, the BMC's
    /// answers come back as events from `bmc`. A tunnel that cannot open drops the flow's
    /// datagrams (the relay closes the flow when idle).
    fn tunnel(
        &self,
        flow: FlowId,
        bmc: SocketAddr,
        (machine, node, addr): (u64, u64, String),
        client: IpAddr,
    ) -> Upstream {
        let (up_tx, mut up_rx) = mpsc::channel::<Vec<u8>>(64);
        let (link, events) = (self.link.clone(), self.tx.clone());
        let task = tokio::spawn(async move {
            let Some(link) = link else { return };
            let (mut tx, mut rx) = match link.open_bmc_tunnel(node, &addr, machine, client).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(flow, machine, node, error = %e, "BMC tunnel not opened");
                    return;
                }
            };
            tracing::debug!(flow, machine, node, "IPMI proxy flow tunnelled");
            loop {
                tokio::select! {
                    d = up_rx.recv() => match d {
                        Some(d) => if tx.send(&d).await.is_err() { break },
                        None => break,
                    },
                    d = rx.recv() => match d {
                        Some(data) => {
                            if events.send(Event::Bmc { flow, from: bmc, data }).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            tx.finish();
        });
        Upstream::Tunnel(up_tx, task)
    }

    async fn apply(&mut self, outputs: Vec<Output>, relay: &Relay) {
        for o in outputs {
            match o {
                Output::Open { flow, bmc } => {
                    // A machine of another location: through a tunnel to its site.
                    let remote = relay
                        .flow(flow)
                        .and_then(|(port, client)| Some((self.via(port)?, client)));
                    if let Some((via, client)) = remote {
                        let up = self.tunnel(flow, bmc, via, client.ip());
                        self.upstream.insert(flow, up);
                        continue;
                    }
                    let bind = if bmc.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let Ok(sock) = UdpSocket::bind(bind).await else {
                        continue;
                    };
                    let sock = Arc::new(sock);
                    let task =
                        self.reader(&sock, move |from, data| Event::Bmc { flow, from, data });
                    self.upstream.insert(flow, Upstream::Udp(sock, bmc, task));
                    tracing::debug!(flow, %bmc, "IPMI proxy flow opened");
                }
                Output::ToBmc { flow, data } => match self.upstream.get(&flow) {
                    Some(Upstream::Udp(sock, bmc, _)) => {
                        let _ = sock.send_to(&data, *bmc).await;
                    }
                    Some(Upstream::Tunnel(tx, _)) => {
                        let _ = tx.try_send(data);
                    }
                    None => {}
                },
                Output::ToClient { port, client, data } => {
                    if let Some((sock, _)) = self.listeners.get(&port) {
                        let _ = sock.send_to(&data, client).await;
                    }
                }
                Output::Close { flow } => {
                    if let Some(Upstream::Udp(_, _, task) | Upstream::Tunnel(_, task)) =
                        self.upstream.remove(&flow)
                    {
                        task.abort();
                    }
                    tracing::debug!(flow, "IPMI proxy flow closed");
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        for (_, (_, task)) in self.listeners.drain() {
            task.abort();
        }
        for (_, up) in self.upstream.drain() {
            let (Upstream::Udp(_, _, task) | Upstream::Tunnel(_, task)) = up;
            task.abort();
        }
    }
}

/// Starts the proxy; the returned task owns every socket (abort it to stop the proxy).
pub async fn start(
    node: Arc<dyn Cluster>,
    location: Option<String>,
    opts: ProxyConfig,
    link: Option<Arc<Link>>,
) -> anyhow::Result<JoinHandle<()>> {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut shell = Shell {
        node,
        location,
        link,
        opts: opts.clone(),
        tx: tx.clone(),
        table: HashMap::new(),
        listeners: HashMap::new(),
        upstream: HashMap::new(),
    };
    shell.reconcile().await;
    let mut relay = Relay::new(RelayConfig {
        idle: opts.idle,
        ..RelayConfig::default()
    });
    Ok(tokio::spawn(async move {
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Event::Tick).await.is_err() {
                    break;
                }
            }
        });
        while let Some(ev) = rx.recv().await {
            let now = std::time::Instant::now();
            let input = match &ev {
                Event::Client { port, client, data } => Input::FromClient {
                    port: *port,
                    client: *client,
                    data,
                },
                Event::Bmc { flow, from, data } => Input::FromBmc {
                    flow: *flow,
                    from: *from,
                    data,
                },
                Event::Tick => Input::Tick,
            };
            let now_ms = crate::cluster::now_ms();
            let outputs = relay.handle(now, input, |p, ip| shell.lookup(p, ip, now_ms));
            shell.apply(outputs, &relay).await;
            if matches!(ev, Event::Tick) {
                shell.reconcile().await;
                tracing::trace!(stats = ?relay.stats, flows = relay.flows(), "IPMI proxy");
            }
        }
        ticker.abort();
    }))
}

#[cfg(test)]
mod tests {
    use rackd_types::payload::CreateMachine;
    use rackd_types::{BmcDriver, BmcSpec};

    use super::*;
    use crate::cluster::fake::{machine_spec, FakeCluster};

    /// The far end of a BMC tunnel reaches only machines of its own location with an IPMI BMC,
    /// and only for an address holding a BMC session for the machine.
    #[test]
    fn a_tunnel_reaches_only_its_sites_granted_bmcs() {
        let c = FakeCluster::new(1, crate::cluster::now_ms());
        c.create_location("dc1");
        c.create_location("dc2");
        let ipmi = |port| {
            Some(BmcSpec {
                driver: BmcDriver::Ipmi,
                address: "192.0.2.9".into(),
                port,
                username: String::new(),
                password: None,
                cipher_suite: None,
            })
        };
        let here = c.create_machine(CreateMachine {
            bmc: ipmi(623),
            ..machine_spec("a", "dc1")
        });
        let there = c.create_machine(CreateMachine {
            bmc: ipmi(624),
            ..machine_spec("b", "dc2")
        });
        let r = tunnel_resolver(c.clone(), "dc1".into());
        let op: IpAddr = "198.51.100.7".parse().unwrap();
        let e = r(here, op).unwrap_err();
        assert!(e.contains("holds no BMC session"), "{e}");
        for id in [here, there] {
            c.apply_ok(
                "t",
                rackd_raft::cmd::Command::GrantBmcSession {
                    machine_id: id,
                    source: op.to_string(),
                    ttl_ms: 600_000,
                },
            );
        }
        assert_eq!(r(here, op), Ok("192.0.2.9:623".parse().unwrap()));
        let e = r(there, op).unwrap_err();
        assert!(e.contains("not one of location dc1"), "{e}");
        assert!(r(here, "198.51.100.8".parse().unwrap()).is_err());
        assert!(r(999, op).is_err());
    }

    /// R10: stopping the proxy (removal, fail-stop, shutdown) closes every socket it owns, its
    /// listening ports and the upstream socket of a flow in progress, not only its loop.
    #[tokio::test]
    async fn stopping_the_proxy_closes_its_listeners_and_flows() {
        let bmc = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Grants expire by the wall clock: the fake cluster stamps with it too.
        let c = FakeCluster::new(1, crate::cluster::now_ms());
        c.create_location("dc1");
        let id = c.create_machine(CreateMachine {
            bmc: Some(BmcSpec {
                driver: BmcDriver::Ipmi,
                address: "127.0.0.1".into(),
                port: bmc.local_addr().unwrap().port(),
                username: String::new(),
                password: None,
                cipher_suite: None,
            }),
            ..machine_spec("m", "dc1")
        });
        c.apply_ok(
            "t",
            rackd_raft::cmd::Command::GrantBmcSession {
                machine_id: id,
                source: "127.0.0.1".into(),
                ttl_ms: 600_000,
            },
        );
        // A free port for the machine's listener (base + id).
        let port = UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = ProxyConfig {
            listen: "127.0.0.1".parse().unwrap(),
            base_port: port - id as u16,
            idle: Duration::from_secs(60),
        };
        let proxy = start(c.clone(), Some("dc1".into()), opts, None)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // An RMCP ping-shaped datagram (class 0x06) through the proxy reaches the BMC from the
        // flow's upstream socket.
        let rmcp = [0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 0, 0, 0];
        client.send_to(&rmcp, ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, upstream) = tokio::time::timeout(Duration::from_secs(5), bmc.recv_from(&mut buf))
            .await
            .expect("relayed to the BMC")
            .unwrap();
        assert_eq!(&buf[..n], &rmcp);
        let in_use = |port: u16| async move { UdpSocket::bind(("0.0.0.0", port)).await.is_err() };
        assert!(
            in_use(port).await && in_use(upstream.port()).await,
            "both open"
        );

        proxy.abort();
        let _ = proxy.await;
        // Aborted reader tasks drop their sockets when the runtime next runs them.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while in_use(port).await || in_use(upstream.port()).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "listening port open: {}, upstream socket open: {}",
                in_use(port).await,
                in_use(upstream.port()).await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
