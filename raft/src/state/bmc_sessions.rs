//! IPMI proxy grants (issue 11, item 7): an operator opens the proxy to one machine's BMC for
//! one source address until an expiry (leader time); the proxies of the machine's location
//! relay only grants' traffic. Grants live with the machine (`StoredMachine::bmc_sessions`),
//! at most [`MAX_GRANTS_PER_MACHINE`] unexpired ones; a new grant for the same source replaces
//! the old one, and expired ones are dropped when the next one is made.
//!
//! Layer: part of `state`; pure.

use std::net::IpAddr;

use rackd_types::{ApiError, BmcSession, BMC_SESSION_MAX_TTL_SECS};

use super::State;
use crate::cmd::Applied;

/// Unexpired grants one machine may have at once.
pub const MAX_GRANTS_PER_MACHINE: usize = 16;

impl State {
    pub(super) fn grant_bmc_session(
        &mut self,
        now: u64,
        actor: &str,
        machine_id: u64,
        source: &str,
        ttl_ms: u64,
    ) -> Result<Applied, ApiError> {
        let ip: IpAddr = source
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid(format!("source {source:?} is not an IP address")))?;
        if ttl_ms == 0 || ttl_ms > BMC_SESSION_MAX_TTL_SECS * 1000 {
            return Err(ApiError::invalid(format!(
                "a BMC session lasts from 1 s to {BMC_SESSION_MAX_TTL_SECS} s"
            )));
        }
        let mut stored = self.machines.fetch(machine_id, "machine")?;
        if !stored
            .machine
            .bmc
            .as_ref()
            .is_some_and(|b| b.driver.is_ipmi())
        {
            return Err(ApiError::conflict(format!(
                "machine {machine_id} has no IPMI BMC"
            )));
        }
        let source = ip.to_string();
        stored
            .bmc_sessions
            .retain(|g| g.expires_at > now && g.source != source);
        if stored.bmc_sessions.len() >= MAX_GRANTS_PER_MACHINE {
            return Err(ApiError::conflict(format!(
                "machine {machine_id} already has {MAX_GRANTS_PER_MACHINE} open BMC sessions"
            )));
        }
        let grant = BmcSession {
            machine_id,
            source: source.clone(),
            expires_at: now.saturating_add(ttl_ms),
        };
        stored.bmc_sessions.push(grant.clone());
        self.machines.insert(machine_id, stored);
        self.journal(
            now,
            actor,
            "machine.bmc_session",
            "machine",
            Some(machine_id),
            format!(
                "{source} may reach the BMC of machine {machine_id} through the IPMI proxy for {} s",
                ttl_ms / 1000
            ),
        );
        Ok(Applied::BmcSession(grant))
    }

    /// Close the proxy of machine `machine_id` to `source`, or to every source: its grants are
    /// deleted (the proxies close the flows at their next datagram). Closing what is not open
    /// is 404.
    pub(super) fn revoke_bmc_session(
        &mut self,
        now: u64,
        actor: &str,
        machine_id: u64,
        source: Option<&str>,
    ) -> Result<Applied, ApiError> {
        let source = match source {
            None => None,
            Some(s) => Some(
                s.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| ApiError::invalid(format!("source {s:?} is not an IP address")))?
                    .to_string(),
            ),
        };
        let mut stored = self.machines.fetch(machine_id, "machine")?;
        let closed = |g: &BmcSession| source.as_ref().is_none_or(|s| *s == g.source);
        let had = stored
            .bmc_sessions
            .iter()
            .filter(|g| g.expires_at > now && closed(g))
            .count();
        if had == 0 {
            return Err(ApiError::not_found(match &source {
                Some(s) => format!("machine {machine_id} has no open BMC session for {s}"),
                None => format!("machine {machine_id} has no open BMC session"),
            }));
        }
        stored
            .bmc_sessions
            .retain(|g| g.expires_at > now && !closed(g));
        self.machines.insert(machine_id, stored);
        self.journal(
            now,
            actor,
            "machine.bmc_session_closed",
            "machine",
            Some(machine_id),
            match &source {
                Some(s) => format!("{s} may no longer reach the BMC of machine {machine_id}"),
                None => format!("nobody may reach the BMC of machine {machine_id} any more"),
            },
        );
        Ok(Applied::Done)
    }

    /// Whether `source` holds an unexpired grant for machine `machine_id` at `now_ms`.
    pub fn bmc_session_allows(&self, machine_id: u64, source: IpAddr, now_ms: u64) -> bool {
        self.machines
            .get(&machine_id)
            .is_some_and(|m| grants_admit(&m.bmc_sessions, source, now_ms))
    }
}

/// The one rule for a machine's grants: `source` holds one that has not expired at `now_ms`
/// (the IPMI proxy asks it for every datagram, from its copy of the grants).
pub fn grants_admit(grants: &[BmcSession], source: IpAddr, now_ms: u64) -> bool {
    grants
        .iter()
        .any(|g| g.expires_at > now_ms && g.source.parse::<IpAddr>().is_ok_and(|ip| ip == source))
}
