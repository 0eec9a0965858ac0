//! Sans-IO core of the IPMI proxy: relays IPMI-over-LAN datagrams between operators' tools
//! (ipmitool at a desk) and BMCs on a location's isolated management network.
//!
//! Scheme: every machine has its own listening port on the location node; which BMC a port
//! reaches, and whether the client's address may reach it (an operator's grant through the API),
//! is asked of the caller for every client datagram (the replica decides, so only machines of
//! the node's location are reachable, and only by addresses granted a session; a flow whose
//! grant ended is closed at its next datagram). A *flow* is one (listening port, client address) pair and has
//! its own upstream socket, so each operator's sessions reach the BMC from a distinct source
//! port: session ids and sequence numbers of concurrent users are never mixed, and answers go
//! back only to the client whose flow they arrived on. Flows idle longer than the configured
//! time are closed; the number of flows is bounded. Datagrams that are not RMCP are dropped and
//! counted, and so are RMCP+ session openings that ask for no authentication (RAKP-none, which
//! cipher suite 0 uses, or no authentication algorithm named): such a session lets anyone who
//! knows a user name drive the BMC without its password. Must not depend on sockets, clocks or
//! the replicated state.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub type FlowId = u64;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub idle: Duration,
    pub max_flows: usize,
    /// Flows one client address may hold at once (over all machines).
    pub max_flows_per_source: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            max_flows: 1024,
            max_flows_per_source: 16,
        }
    }
}

/// What a listening port reaches for one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// This BMC.
    Bmc(SocketAddr),
    /// No machine of this location with an IPMI BMC has this port.
    NoMachine,
    /// The machine exists, but this address holds no open BMC session for it.
    NotGranted,
}

#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram from an operator's tool on listening port `port`.
    FromClient {
        port: u16,
        client: SocketAddr,
        data: &'a [u8],
    },
    /// A datagram on a flow's upstream socket, from `from`.
    FromBmc {
        flow: FlowId,
        from: SocketAddr,
        data: &'a [u8],
    },
    /// Time passes: idle flows are closed.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open an upstream socket for a new flow toward `bmc`.
    Open {
        flow: FlowId,
        bmc: SocketAddr,
    },
    ToBmc {
        flow: FlowId,
        data: Vec<u8>,
    },
    ToClient {
        port: u16,
        client: SocketAddr,
        data: Vec<u8>,
    },
    /// Close the flow's upstream socket.
    Close {
        flow: FlowId,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayStats {
    pub to_bmc: u64,
    pub to_client: u64,
    pub flows_opened: u64,
    pub flows_closed: u64,
    pub dropped_not_rmcp: u64,
    pub dropped_unknown_port: u64,
    pub dropped_stray: u64,
    pub dropped_too_many_flows: u64,
    /// RMCP+ Open Session requests asking for RAKP-none (cipher suite 0) or for no named
    /// authentication algorithm.
    pub dropped_insecure_open: u64,
    /// Datagrams from an address without an open BMC session for the machine.
    pub dropped_not_granted: u64,
}

struct Flow {
    port: u16,
    client: SocketAddr,
    bmc: SocketAddr,
    last: Instant,
}

#[derive(Default)]
pub struct Relay {
    cfg: RelayConfig,
    flows: HashMap<FlowId, Flow>,
    by_client: HashMap<(u16, SocketAddr), FlowId>,
    next: FlowId,
    pub stats: RelayStats,
}

/// RMCP version 1.0 header (ASF ping or IPMI class).
fn is_rmcp(d: &[u8]) -> bool {
    d.len() >= 4 && d.len() <= 1500 && d[0] == 0x06 && matches!(d[3] & 0x1f, 0x06 | 0x07)
}

/// An RMCP+ Open Session request (IPMI 2.0 §13.17) that does not ask for an authenticating
/// key exchange: RAKP-none (algorithm 0, as in cipher suite 0), an authentication record the
/// BMC may fill in itself (length 0), or one too short to tell.
fn is_insecure_open(d: &[u8]) -> bool {
    // RMCP (4) | auth type 0x06 | payload type | session id (4) | seq (4) | length (2) | payload
    const PAYLOAD: usize = 16;
    if d.len() < 6 || d[3] & 0x1f != 0x07 || d[4] != 0x06 || d[5] & 0x3f != 0x10 {
        return false;
    }
    let Some(p) = d.get(PAYLOAD..) else {
        return true;
    };
    // Payload: tag, privilege, 2 reserved, console session id (4), then the authentication
    // algorithm record: type 0x00, 2 reserved, length, algorithm, 3 reserved.
    match (p.get(8), p.get(11), p.get(12)) {
        (Some(0x00), Some(len), Some(alg)) => *len == 0 || alg & 0x3f == 0,
        _ => true,
    }
}

impl Relay {
    pub fn new(cfg: RelayConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// The listening port and client address of flow `id`, while it is open.
    pub fn flow(&self, id: FlowId) -> Option<(u16, SocketAddr)> {
        self.flows.get(&id).map(|f| (f.port, f.client))
    }

    fn close(&mut self, id: FlowId, out: &mut Vec<Output>) {
        if let Some(f) = self.flows.remove(&id) {
            self.by_client.remove(&(f.port, f.client));
            self.stats.flows_closed += 1;
            out.push(Output::Close { flow: id });
        }
    }

    /// `resolve(port, client)` says what a listening port reaches now for that client address.
    pub fn handle(
        &mut self,
        now: Instant,
        input: Input<'_>,
        resolve: impl Fn(u16, IpAddr) -> Resolve,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::FromClient { port, client, data } => {
                if !is_rmcp(data) {
                    self.stats.dropped_not_rmcp += 1;
                    return out;
                }
                if is_insecure_open(data) {
                    self.stats.dropped_insecure_open += 1;
                    return out;
                }
                let bmc = match resolve(port, client.ip()) {
                    Resolve::Bmc(bmc) => bmc,
                    refused => {
                        if refused == Resolve::NotGranted {
                            self.stats.dropped_not_granted += 1;
                        } else {
                            self.stats.dropped_unknown_port += 1;
                        }
                        if let Some(id) = self.by_client.get(&(port, client)).copied() {
                            self.close(id, &mut out);
                        }
                        return out;
                    }
                };
                let id = match self.by_client.get(&(port, client)).copied() {
                    // The machine's BMC moved: the old flow's sessions are meaningless.
                    Some(id) if self.flows[&id].bmc != bmc => {
                        self.close(id, &mut out);
                        None
                    }
                    other => other,
                };
                let id = match id {
                    Some(id) => id,
                    None => {
                        let from_source = self
                            .flows
                            .values()
                            .filter(|f| f.client.ip() == client.ip())
                            .count();
                        if self.flows.len() >= self.cfg.max_flows
                            || from_source >= self.cfg.max_flows_per_source
                        {
                            self.stats.dropped_too_many_flows += 1;
                            return out;
                        }
                        self.next += 1;
                        let id = self.next;
                        self.flows.insert(
                            id,
                            Flow {
                                port,
                                client,
                                bmc,
                                last: now,
                            },
                        );
                        self.by_client.insert((port, client), id);
                        self.stats.flows_opened += 1;
                        out.push(Output::Open { flow: id, bmc });
                        id
                    }
                };
                if let Some(f) = self.flows.get_mut(&id) {
                    f.last = now;
                }
                self.stats.to_bmc += 1;
                out.push(Output::ToBmc {
                    flow: id,
                    data: data.to_vec(),
                });
            }
            Input::FromBmc { flow, from, data } => {
                let Some(f) = self.flows.get_mut(&flow) else {
                    self.stats.dropped_stray += 1;
                    return out;
                };
                if from != f.bmc {
                    self.stats.dropped_stray += 1;
                    return out;
                }
                if !is_rmcp(data) {
                    self.stats.dropped_not_rmcp += 1;
                    return out;
                }
                f.last = now;
                self.stats.to_client += 1;
                out.push(Output::ToClient {
                    port: f.port,
                    client: f.client,
                    data: data.to_vec(),
                });
            }
            Input::Tick => {
                let idle: Vec<FlowId> = self
                    .flows
                    .iter()
                    .filter(|(_, f)| now.duration_since(f.last) >= self.cfg.idle)
                    .map(|(id, _)| *id)
                    .collect();
                for id in idle {
                    self.close(id, &mut out);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING: &[u8] = &[0x06, 0x00, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 0, 0, 0];
    // A sessionless IPMI 1.5 header (auth type none).
    const IPMI: &[u8] = &[0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn resolve(port: u16, _client: IpAddr) -> Resolve {
        match port {
            20001 => Resolve::Bmc(a("10.0.0.1:623")),
            20002 => Resolve::Bmc(a("10.0.0.2:623")),
            _ => Resolve::NoMachine,
        }
    }

    #[test]
    fn each_client_gets_its_own_flow_and_answers_go_back_to_it() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig::default());
        let (c1, c2) = (a("192.0.2.1:5000"), a("192.0.2.2:5000"));
        let o = r.handle(
            t,
            Input::FromClient {
                port: 20001,
                client: c1,
                data: IPMI,
            },
            resolve,
        );
        assert_eq!(
            o,
            vec![
                Output::Open {
                    flow: 1,
                    bmc: a("10.0.0.1:623")
                },
                Output::ToBmc {
                    flow: 1,
                    data: IPMI.to_vec()
                }
            ]
        );
        // Same client again: same flow, nothing reopened.
        let o = r.handle(
            t,
            Input::FromClient {
                port: 20001,
                client: c1,
                data: PING,
            },
            resolve,
        );
        assert_eq!(
            o,
            vec![Output::ToBmc {
                flow: 1,
                data: PING.to_vec()
            }]
        );
        // Another user of the same machine: a separate flow (separate upstream source port).
        let o = r.handle(
            t,
            Input::FromClient {
                port: 20001,
                client: c2,
                data: IPMI,
            },
            resolve,
        );
        assert_eq!(
            o[0],
            Output::Open {
                flow: 2,
                bmc: a("10.0.0.1:623")
            }
        );
        // The BMC's answer on flow 2 goes to c2 only.
        let o = r.handle(
            t,
            Input::FromBmc {
                flow: 2,
                from: a("10.0.0.1:623"),
                data: IPMI,
            },
            resolve,
        );
        assert_eq!(
            o,
            vec![Output::ToClient {
                port: 20001,
                client: c2,
                data: IPMI.to_vec()
            }]
        );
        assert_eq!(r.flows(), 2);
    }

    #[test]
    fn unknown_ports_strays_and_garbage_are_dropped_and_counted() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig::default());
        let c = a("192.0.2.1:5000");
        assert!(r
            .handle(
                t,
                Input::FromClient {
                    port: 20009,
                    client: c,
                    data: IPMI
                },
                resolve
            )
            .is_empty());
        assert!(r
            .handle(
                t,
                Input::FromClient {
                    port: 20001,
                    client: c,
                    data: b"GET / HTTP/1.0"
                },
                resolve
            )
            .is_empty());
        r.handle(
            t,
            Input::FromClient {
                port: 20001,
                client: c,
                data: IPMI,
            },
            resolve,
        );
        // Not from the flow's BMC, or for a flow that does not exist.
        assert!(r
            .handle(
                t,
                Input::FromBmc {
                    flow: 1,
                    from: a("10.0.0.9:623"),
                    data: IPMI
                },
                resolve
            )
            .is_empty());
        assert!(r
            .handle(
                t,
                Input::FromBmc {
                    flow: 7,
                    from: a("10.0.0.1:623"),
                    data: IPMI
                },
                resolve
            )
            .is_empty());
        let s = &r.stats;
        assert_eq!(
            (
                s.dropped_unknown_port,
                s.dropped_not_rmcp,
                s.dropped_stray,
                s.to_bmc
            ),
            (1, 1, 2, 1)
        );
    }

    #[test]
    fn idle_flows_close_and_moved_or_removed_machines_close_their_flows() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig {
            idle: Duration::from_secs(60),
            max_flows: 2,
            ..RelayConfig::default()
        });
        let c = a("192.0.2.1:5000");
        r.handle(
            t,
            Input::FromClient {
                port: 20001,
                client: c,
                data: IPMI,
            },
            resolve,
        );
        r.handle(
            t,
            Input::FromClient {
                port: 20002,
                client: c,
                data: IPMI,
            },
            resolve,
        );
        // The bound on flows holds.
        let c3 = a("192.0.2.3:5000");
        assert!(r
            .handle(
                t,
                Input::FromClient {
                    port: 20001,
                    client: c3,
                    data: IPMI
                },
                resolve
            )
            .is_empty());
        assert_eq!(r.stats.dropped_too_many_flows, 1);
        // Flow 2 stays busy, flow 1 goes idle.
        let later = t + Duration::from_secs(50);
        r.handle(
            later,
            Input::FromClient {
                port: 20002,
                client: c,
                data: IPMI,
            },
            resolve,
        );
        let o = r.handle(t + Duration::from_secs(61), Input::Tick, resolve);
        assert_eq!(o, vec![Output::Close { flow: 1 }]);
        // The machine behind port 20002 now has another BMC address: old flow closed, new one.
        let moved = |p: u16, _: IpAddr| match p {
            20002 => Resolve::Bmc(a("10.0.0.22:623")),
            _ => Resolve::NoMachine,
        };
        let o = r.handle(
            later,
            Input::FromClient {
                port: 20002,
                client: c,
                data: IPMI,
            },
            moved,
        );
        assert_eq!(o[0], Output::Close { flow: 2 });
        assert_eq!(
            o[1],
            Output::Open {
                flow: 3,
                bmc: a("10.0.0.22:623")
            }
        );
        // The machine left the location: its flow closes.
        let o = r.handle(
            later,
            Input::FromClient {
                port: 20002,
                client: c,
                data: IPMI,
            },
            |_, _| Resolve::NoMachine,
        );
        assert_eq!(o, vec![Output::Close { flow: 3 }]);
        assert_eq!(r.flows(), 0);
    }

    /// An RMCP+ Open Session request naming `auth_alg` in an authentication record of length
    /// `auth_len` (what `ipmitool -I lanplus -C N` sends first).
    fn open_session(auth_alg: u8, auth_len: u8) -> Vec<u8> {
        use crate::ipmi::wire;
        let mut p = vec![0x00, 4, 0, 0, 1, 0, 0, 0];
        p.extend([0x00, 0, 0, auth_len, auth_alg, 0, 0, 0]);
        p.extend([0x01, 0, 0, 8, 1, 0, 0, 0]);
        p.extend([0x02, 0, 0, 8, 1, 0, 0, 0]);
        wire::encode_v20(
            wire::PAYLOAD_OPEN_REQ,
            0,
            0,
            &p,
            &wire::V20Keys::default(),
            [0; 16],
        )
    }

    /// Openings that ask for no authentication (RAKP-none as in cipher suite 0, or leave the
    /// choice to the BMC) never reach it; RAKP-HMAC openings and everything else do.
    #[test]
    fn openings_without_authentication_are_dropped() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig::default());
        let client = a("192.0.2.9:5000");
        let mut send = |data: &[u8]| {
            r.handle(
                t,
                Input::FromClient {
                    port: 20001,
                    client,
                    data,
                },
                resolve,
            )
            .iter()
            .any(|o| matches!(o, Output::ToBmc { .. }))
        };
        assert!(!send(&open_session(0x00, 8)), "RAKP-none (cipher suite 0)");
        assert!(
            !send(&open_session(0x01, 0)),
            "authentication left to the BMC"
        );
        let truncated = open_session(0x01, 8);
        assert!(!send(&truncated[..20]), "truncated opening");
        assert!(send(&open_session(0x01, 8)), "RAKP-HMAC-SHA1 (suites 1-3)");
        assert!(send(&open_session(0x02, 8)), "RAKP-HMAC-MD5");
        assert!(send(IPMI), "IPMI 1.5 traffic");
        assert!(send(PING), "ASF ping");
        assert_eq!(r.stats.dropped_insecure_open, 3);
    }

    /// Only a granted address gets through: others are dropped and counted, and a flow whose
    /// grant ended is closed at its next datagram.
    #[test]
    fn only_granted_sources_reach_the_bmc() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig::default());
        let granted: IpAddr = "192.0.2.1".parse().unwrap();
        let only = |g: Option<IpAddr>| {
            move |port: u16, ip: IpAddr| match (port, g) {
                (20001, Some(g)) if g == ip => Resolve::Bmc(a("10.0.0.1:623")),
                (20001, _) => Resolve::NotGranted,
                _ => Resolve::NoMachine,
            }
        };
        let from = |c: &str| Input::FromClient {
            port: 20001,
            client: a(c),
            data: IPMI,
        };
        let o = r.handle(t, from("192.0.2.2:5000"), only(Some(granted)));
        assert!(o.is_empty(), "{o:?}");
        assert_eq!(r.stats.dropped_not_granted, 1);
        let o = r.handle(t, from("192.0.2.1:5000"), only(Some(granted)));
        assert_eq!(o.len(), 2, "granted: opened and relayed: {o:?}");
        // The grant ends: the next datagram closes the flow instead of relaying.
        let o = r.handle(t, from("192.0.2.1:5000"), only(None));
        assert_eq!(o, vec![Output::Close { flow: 1 }]);
        assert_eq!((r.flows(), r.stats.dropped_not_granted), (0, 2));
    }

    /// One address holds at most `max_flows_per_source` flows; another is still served.
    #[test]
    fn flows_per_source_are_bounded() {
        let t = Instant::now();
        let mut r = Relay::new(RelayConfig {
            max_flows_per_source: 2,
            ..RelayConfig::default()
        });
        let mut opened = |c: &str| {
            r.handle(
                t,
                Input::FromClient {
                    port: 20001,
                    client: a(c),
                    data: IPMI,
                },
                resolve,
            )
            .iter()
            .any(|o| matches!(o, Output::Open { .. }))
        };
        assert!(opened("192.0.2.1:5000"));
        assert!(opened("192.0.2.1:5001"));
        assert!(!opened("192.0.2.1:5002"), "a third flow from one address");
        assert!(opened("192.0.2.2:5000"), "another address");
    }
}
