//! The IPMI proxy of a location node: the tokio shell around [`rackd_hwctl::relay::Relay`].
//! Machine N of this location is reached at `LISTEN:BASE+N` (`ipmitool -I lanplus -H node -p
//! BASE+N …`); ports are stable (derived from the machine id, no extra replicated state) and the
//! same on every node of the location. Listening sockets follow the replica (opened for machines
//! with an IPMI BMC in this location, closed when they leave); each flow has its own upstream
//! socket. Only addresses an operator opened a BMC session for (`POST /v1/machines/{id}/
//! bmc-session`, replicated with the machine) get through, until the grant expires. Must not
//! depend on the HTTP API.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rackd_hwctl::relay::{FlowId, Input, Output, Relay, RelayConfig, Resolve};
use tokio::net::UdpSocket;
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

/// A machine's BMC and the sessions granted for it.
struct Target {
    bmc: SocketAddr,
    grants: Vec<rackd_types::BmcSession>,
}

/// Machine id → BMC and grants of machines of `location` with an IPMI BMC (IP literals only).
fn bmc_table(node: &dyn Cluster, location: &str) -> HashMap<u64, Target> {
    node.state()
        .machines
        .values()
        .filter(|m| m.machine.location == location)
        .filter_map(|m| {
            let b = m.machine.bmc.as_ref()?;
            if !b.driver.is_ipmi() {
                return None;
            }
            let ip: IpAddr = b.address.trim().parse().ok()?;
            let grants = m.bmc_sessions.clone();
            let bmc = SocketAddr::new(ip, b.port);
            Some((m.machine.meta.id, Target { bmc, grants }))
        })
        .collect()
}

struct Shell {
    node: Arc<dyn Cluster>,
    location: String,
    opts: ProxyConfig,
    tx: mpsc::Sender<Event>,
    table: HashMap<u64, Target>,
    listeners: HashMap<u16, (Arc<UdpSocket>, JoinHandle<()>)>,
    upstream: HashMap<FlowId, (Arc<UdpSocket>, SocketAddr, JoinHandle<()>)>,
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
        self.table = bmc_table(&*self.node, &self.location);
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

    async fn apply(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Open { flow, bmc } => {
                    let bind = if bmc.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                    let Ok(sock) = UdpSocket::bind(bind).await else {
                        continue;
                    };
                    let sock = Arc::new(sock);
                    let task =
                        self.reader(&sock, move |from, data| Event::Bmc { flow, from, data });
                    self.upstream.insert(flow, (sock, bmc, task));
                    tracing::debug!(flow, %bmc, "IPMI proxy flow opened");
                }
                Output::ToBmc { flow, data } => {
                    if let Some((sock, bmc, _)) = self.upstream.get(&flow) {
                        let _ = sock.send_to(&data, *bmc).await;
                    }
                }
                Output::ToClient { port, client, data } => {
                    if let Some((sock, _)) = self.listeners.get(&port) {
                        let _ = sock.send_to(&data, client).await;
                    }
                }
                Output::Close { flow } => {
                    if let Some((_, _, task)) = self.upstream.remove(&flow) {
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
        for (_, (_, _, task)) in self.upstream.drain() {
            task.abort();
        }
    }
}

/// Starts the proxy; the returned task owns every socket (abort it to stop the proxy).
pub async fn start(
    node: Arc<dyn Cluster>,
    location: String,
    opts: ProxyConfig,
) -> anyhow::Result<JoinHandle<()>> {
    let (tx, mut rx) = mpsc::channel(1024);
    let mut shell = Shell {
        node,
        location,
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
            shell.apply(outputs).await;
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
        let proxy = start(c.clone(), "dc1".into(), opts).await.unwrap();
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
