//! Apply handlers for locations, racks, machines and subnets, with the uniqueness rules
//! (MAC, IP, names) enforced here so that no two replicas can ever disagree about them.

use std::net::Ipv4Addr;

use crate::cmd::Applied;
use rackd_types::net::{normalize_mac, parse_ipv4, Cidr4};
use rackd_types::payload::{
    CreateLocation, CreateMachine, CreateRack, CreateSubnet, UpdateLocation, UpdateMachine,
    UpdateRack, UpdateSubnet,
};
use rackd_types::{
    ApiError, BmcDriver, BmcSpec, BmcView, IpRange, Location, Machine, MachineState, Meta, Rack,
    Subnet,
};

use super::{precondition, State, StoredMachine};

const MAX_NAME: usize = 253;

pub(super) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(ApiError::invalid(format!(
            "{what} must be 1..={MAX_NAME} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(ApiError::invalid(format!(
            "{what} {name:?} may only contain letters, digits, '-', '.', '_'"
        )));
    }
    Ok(())
}

/// Rules 6: a BMC address is an IP address (IPv6 with or without brackets) or a DNS name
/// (labels of letters, digits and inner hyphens; no scheme, port, path or spaces).
pub fn check_bmc_address(a: &str) -> Result<(), ApiError> {
    let a = a.trim();
    let bare = a
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(a);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let name = a.strip_suffix('.').unwrap_or(a);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        // All digits and dots would be a mistyped IPv4 address.
        && !name.chars().all(|c| c.is_ascii_digit() || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "BMC address {a:?} is neither an IP address nor a host name (give the port in \
             `port`, not in the address)"
        )))
    }
}

/// Rules 6: tags are 1..=64 characters without spaces or control characters.
pub fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    for t in tags {
        if t.is_empty()
            || t.chars().count() > 64
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::invalid(format!(
                "tag {t:?}: tags are 1..=64 characters without spaces"
            )));
        }
    }
    Ok(())
}

fn new_meta(id: u64, now: u64) -> Meta {
    Meta {
        id,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

fn bump(meta: &mut Meta, now: u64) {
    meta.version += 1;
    meta.updated_at = now;
}

fn range_bounds(r: &IpRange, cidr: &Cidr4) -> Result<(u32, u32), ApiError> {
    let s = parse_ipv4(&r.start).map_err(ApiError::invalid)?;
    let e = parse_ipv4(&r.end).map_err(ApiError::invalid)?;
    if u32::from(s) > u32::from(e) {
        return Err(ApiError::invalid(format!(
            "range {}-{} is reversed",
            r.start, r.end
        )));
    }
    if !cidr.contains(s) || !cidr.contains(e) {
        return Err(ApiError::invalid(format!(
            "range {}-{} is outside {cidr}",
            r.start, r.end
        )));
    }
    Ok((u32::from(s), u32::from(e)))
}

fn in_ranges(ip: Ipv4Addr, ranges: &[IpRange]) -> bool {
    ranges
        .iter()
        .any(|r| match (parse_ipv4(&r.start), parse_ipv4(&r.end)) {
            (Ok(s), Ok(e)) => u32::from(s) <= u32::from(ip) && u32::from(ip) <= u32::from(e),
            _ => false,
        })
}

impl State {
    // ---- locations -----------------------------------------------------------------------

    pub(super) fn create_location(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateLocation,
    ) -> Result<Applied, ApiError> {
        check_name("location name", &c.name)?;
        if self.location_by_name(&c.name).is_some() {
            return Err(ApiError::conflict(format!(
                "location {:?} already exists",
                c.name
            )));
        }
        let id = self.alloc_id();
        let loc = Location {
            meta: new_meta(id, now),
            name: c.name.clone(),
            description: c.description.clone(),
            discovery: c.discovery,
        };
        self.idx.location_by_name.insert(loc.name.clone(), id);
        self.locations.insert(id, loc.clone());
        self.journal(
            now,
            actor,
            "location.created",
            "location",
            Some(id),
            format!("location {} created", c.name),
        );
        Ok(Applied::Location(loc))
    }

    pub(super) fn update_location(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        patch: &UpdateLocation,
    ) -> Result<Applied, ApiError> {
        let mut loc = self.locations.fetch(id, "location")?;
        precondition(loc.meta.version, if_match)?;
        if let Some(d) = &patch.description {
            loc.description = d.clone();
        }
        if let Some(d) = patch.discovery {
            loc.discovery = d;
        }
        bump(&mut loc.meta, now);
        self.locations.insert(id, loc.clone());
        self.journal(
            now,
            actor,
            "location.updated",
            "location",
            Some(id),
            format!("location {} updated", loc.name),
        );
        Ok(Applied::Location(loc))
    }

    pub(super) fn delete_location(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let loc = self.locations.fetch(id, "location")?;
        precondition(loc.meta.version, if_match)?;
        let used = self
            .machines
            .values()
            .any(|m| m.machine.location == loc.name)
            || self.racks.values().any(|r| r.location == loc.name)
            || self.subnets.values().any(|s| s.location == loc.name);
        if used {
            return Err(ApiError::conflict(format!(
                "location {} still has machines, racks or subnets",
                loc.name
            )));
        }
        self.locations.remove(&id);
        self.idx.location_by_name.remove(&loc.name);
        self.journal(
            now,
            actor,
            "location.deleted",
            "location",
            Some(id),
            format!("location {} deleted", loc.name),
        );
        Ok(Applied::Done)
    }

    fn require_location(&self, name: &str) -> Result<(), ApiError> {
        if self.location_by_name(name).is_none() {
            return Err(ApiError::invalid(format!(
                "location {name:?} does not exist"
            )));
        }
        Ok(())
    }

    // ---- racks ---------------------------------------------------------------------------

    pub(super) fn create_rack(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateRack,
    ) -> Result<Applied, ApiError> {
        check_name("rack name", &c.name)?;
        self.require_location(&c.location)?;
        if c.height_units == 0 || c.height_units > 100 {
            return Err(ApiError::invalid("height_units must be 1..=100"));
        }
        if self
            .racks
            .values()
            .any(|r| r.location == c.location && r.name == c.name)
        {
            return Err(ApiError::conflict(format!(
                "rack {:?} already exists in location {:?}",
                c.name, c.location
            )));
        }
        let id = self.alloc_id();
        let rack = Rack {
            meta: new_meta(id, now),
            location: c.location.clone(),
            name: c.name.clone(),
            height_units: c.height_units,
        };
        self.racks.insert(id, rack.clone());
        self.journal(
            now,
            actor,
            "rack.created",
            "rack",
            Some(id),
            format!("rack {} created in {}", c.name, c.location),
        );
        Ok(Applied::Rack(rack))
    }

    pub(super) fn update_rack(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        patch: &UpdateRack,
    ) -> Result<Applied, ApiError> {
        let mut rack = self.racks.fetch(id, "rack")?;
        precondition(rack.meta.version, if_match)?;
        if let Some(n) = &patch.name {
            check_name("rack name", n)?;
            if self
                .racks
                .iter()
                .any(|(rid, r)| *rid != id && r.location == rack.location && &r.name == n)
            {
                return Err(ApiError::conflict(format!("rack {n:?} already exists")));
            }
            rack.name = n.clone();
        }
        if let Some(h) = patch.height_units {
            if h == 0 || h > 100 {
                return Err(ApiError::invalid("height_units must be 1..=100"));
            }
            let too_high = self.machines.values().any(|m| {
                m.machine.rack_id == Some(id) && m.machine.rack_unit.is_some_and(|u| u > h)
            });
            if too_high {
                return Err(ApiError::conflict("a machine sits above the new height"));
            }
            rack.height_units = h;
        }
        bump(&mut rack.meta, now);
        self.racks.insert(id, rack.clone());
        self.journal(
            now,
            actor,
            "rack.updated",
            "rack",
            Some(id),
            format!("rack {} updated", rack.name),
        );
        Ok(Applied::Rack(rack))
    }

    pub(super) fn delete_rack(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let rack = self.racks.fetch(id, "rack")?;
        precondition(rack.meta.version, if_match)?;
        if self
            .machines
            .values()
            .any(|m| m.machine.rack_id == Some(id))
        {
            return Err(ApiError::conflict(format!(
                "rack {} still holds machines",
                rack.name
            )));
        }
        self.racks.remove(&id);
        self.journal(
            now,
            actor,
            "rack.deleted",
            "rack",
            Some(id),
            format!("rack {} deleted", rack.name),
        );
        Ok(Applied::Done)
    }

    // ---- machines ------------------------------------------------------------------------

    fn validate_macs(&self, id: Option<u64>, macs: &[String]) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::with_capacity(macs.len());
        for m in macs {
            let n = normalize_mac(m).map_err(ApiError::invalid)?;
            if out.contains(&n) {
                return Err(ApiError::invalid(format!("MAC {n} listed twice")));
            }
            if let Some(owner) = self.idx.mac.get(&n) {
                if Some(*owner) != id {
                    return Err(ApiError::conflict(format!(
                        "MAC {n} already belongs to machine {owner}"
                    )));
                }
            }
            out.push(n);
        }
        Ok(out)
    }

    fn validate_ips(
        &self,
        id: Option<u64>,
        location: &str,
        ips: &[String],
    ) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::with_capacity(ips.len());
        for s in ips {
            let ip = parse_ipv4(s).map_err(ApiError::invalid)?;
            let n = ip.to_string();
            if out.contains(&n) {
                return Err(ApiError::invalid(format!("IP {n} listed twice")));
            }
            if let Some(owner) = self.idx.ip.get(&n) {
                if Some(*owner) != id {
                    return Err(ApiError::conflict(format!(
                        "IP {n} already assigned to machine {owner}"
                    )));
                }
            }
            let subnet = self.subnet_containing(location, ip).ok_or_else(|| {
                ApiError::invalid(format!(
                    "IP {n} is not inside any subnet of location {location:?}"
                ))
            })?;
            let cidr = Cidr4::parse(&subnet.cidr).map_err(ApiError::internal)?;
            if cidr.prefix < 31 && (ip == cidr.network || ip == cidr.broadcast()) {
                return Err(ApiError::invalid(format!(
                    "IP {n} is the network or broadcast address of {cidr}"
                )));
            }
            if subnet.gateway.as_deref() == Some(n.as_str()) {
                return Err(ApiError::conflict(format!("IP {n} is the subnet gateway")));
            }
            if in_ranges(ip, &subnet.dynamic_ranges) {
                return Err(ApiError::conflict(format!(
                    "IP {n} lies in the dynamic range of {cidr}"
                )));
            }
            if in_ranges(ip, &subnet.reserved_ranges) {
                return Err(ApiError::conflict(format!(
                    "IP {n} lies in a reserved range of {cidr}"
                )));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn validate_rack(
        &self,
        location: &str,
        rack_id: Option<u64>,
        unit: Option<u32>,
    ) -> Result<(), ApiError> {
        match rack_id {
            None => {
                if unit.is_some() {
                    return Err(ApiError::invalid("rack_unit given without rack_id"));
                }
            }
            Some(r) => {
                let rack = self
                    .racks
                    .get(&r)
                    .ok_or_else(|| ApiError::invalid(format!("rack {r} does not exist")))?;
                if rack.location != location {
                    return Err(ApiError::invalid(format!(
                        "rack {r} is in location {:?}, not {location:?}",
                        rack.location
                    )));
                }
                if let Some(u) = unit {
                    if u == 0 || u > rack.height_units {
                        return Err(ApiError::invalid(format!(
                            "rack_unit {u} outside 1..={}",
                            rack.height_units
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_bmc(b: &BmcSpec) -> Result<(), ApiError> {
        if !BmcDriver::SUPPORTED.contains(&b.driver) {
            return Err(ApiError::invalid(
                "unknown BMC driver (supported: ipmi, ipmi15, sim)",
            ));
        }
        if b.cipher_suite.is_some_and(|c| c > 3) {
            return Err(ApiError::invalid(
                "BMC cipher_suite must be 0, 1, 2 or 3 (RAKP-HMAC-SHA1 suites)",
            ));
        }
        if b.address.trim().is_empty() {
            return Err(ApiError::invalid("BMC address is empty"));
        }
        if b.port == 0 {
            return Err(ApiError::invalid("BMC port must not be 0"));
        }
        Ok(())
    }

    /// The machine of `location` named `hostname` (letter case aside), other than `except`.
    pub fn machine_named(
        &self,
        location: &str,
        hostname: &str,
        except: Option<u64>,
    ) -> Option<u64> {
        let host = hostname.to_ascii_lowercase();
        let from = (location.to_string(), host.clone(), 0);
        self.idx
            .host
            .range(from..)
            .take_while(|((l, h, _), _)| l == location && *h == host)
            .map(|((_, _, id), _)| *id)
            .find(|id| Some(*id) != except)
    }

    /// What rules 6 refuse of a machine's new fields (checked before anything changes):
    /// a hostname another machine of its location has, malformed tags or BMC address.
    fn check_machine_input(
        &self,
        id: Option<u64>,
        named: Option<(&str, &str)>,
        tags: Option<&[String]>,
        bmc: Option<&BmcSpec>,
    ) -> Result<(), ApiError> {
        if !self.meta.rules.validates_input() {
            return Ok(());
        }
        if let Some((location, hostname)) = named {
            if let Some(other) = self.machine_named(location, hostname, id) {
                return Err(ApiError::conflict(format!(
                    "machine {other} of location {location:?} is already named {hostname:?} \
                     (host names are unique per location, letter case aside)"
                )));
            }
        }
        if let Some(t) = tags {
            check_tags(t)?;
        }
        if let Some(b) = bmc {
            check_bmc_address(&b.address)?;
        }
        Ok(())
    }

    fn index_machine(&mut self, id: u64, old: Option<&Machine>, new: Option<&Machine>) {
        if let Some(o) = old {
            self.idx
                .host
                .remove(&(o.location.clone(), o.hostname.to_ascii_lowercase(), id));
            for m in &o.macs {
                self.idx.mac.remove(m);
            }
            for ip in &o.ips {
                self.idx.ip.remove(ip);
            }
        }
        if let Some(n) = new {
            self.idx.host.insert(
                (n.location.clone(), n.hostname.to_ascii_lowercase(), id),
                (),
            );
            for m in &n.macs {
                self.idx.mac.insert(m.clone(), id);
            }
            for ip in &n.ips {
                self.idx.ip.insert(ip.clone(), id);
            }
        }
    }

    pub(super) fn create_machine(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateMachine,
    ) -> Result<Applied, ApiError> {
        check_name("hostname", &c.hostname)?;
        self.require_location(&c.location)?;
        self.check_machine_input(
            None,
            Some((&c.location, &c.hostname)),
            Some(&c.tags),
            c.bmc.as_ref(),
        )?;
        self.validate_rack(&c.location, c.rack_id, c.rack_unit)?;
        let macs = self.validate_macs(None, &c.macs)?;
        let ips = self.validate_ips(None, &c.location, &c.ips)?;
        if let Some(b) = &c.bmc {
            Self::validate_bmc(b)?;
        }
        let id = self.alloc_id();
        let machine = Machine {
            meta: new_meta(id, now),
            hostname: c.hostname.clone(),
            location: c.location.clone(),
            rack_id: c.rack_id,
            rack_unit: c.rack_unit,
            macs,
            ips,
            bmc: c.bmc.as_ref().map(bmc_view),
            state: c.state.unwrap_or(MachineState::New),
            state_cause: "created".to_string(),
            description: c.description.clone(),
            tags: c.tags.clone(),
            image: None,
            workflow: None,
            power_state: None,
            power_observed_at: None,
        };
        self.index_machine(id, None, Some(&machine));
        self.machines.insert(
            id,
            StoredMachine {
                machine: machine.clone(),
                bmc_password: c.bmc.as_ref().and_then(|b| b.password.clone()),
                deploy_token: None,
                deploy_token_sealed: None,
                bmc_sessions: Vec::new(),
            },
        );
        self.journal(
            now,
            actor,
            "machine.created",
            "machine",
            Some(id),
            format!(
                "machine {} created in {} (state {})",
                c.hostname,
                c.location,
                machine.state.as_str()
            ),
        );
        Ok(Applied::Machine(machine))
    }

    pub(super) fn update_machine(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        p: &UpdateMachine,
    ) -> Result<Applied, ApiError> {
        let stored = self.machines.fetch(id, "machine")?;
        precondition(stored.machine.meta.version, if_match)?;
        let old = stored.machine.clone();
        let renamed = (p.hostname.is_some() || p.location.is_some()).then(|| {
            (
                p.location.as_deref().unwrap_or(&old.location),
                p.hostname.as_deref().unwrap_or(&old.hostname),
            )
        });
        self.check_machine_input(
            Some(id),
            renamed,
            p.tags.as_deref(),
            p.bmc.as_ref().and_then(|b| b.as_ref()),
        )?;
        let mut m = stored.machine;
        let mut password = stored.bmc_password;
        let mut stored_token = stored.deploy_token;
        let mut stored_sealed = stored.deploy_token_sealed;
        let bmc_sessions = stored.bmc_sessions;

        if let Some(h) = &p.hostname {
            check_name("hostname", h)?;
            m.hostname = h.clone();
        }
        if let Some(l) = &p.location {
            self.require_location(l)?;
            m.location = l.clone();
        }
        if let Some(r) = p.rack_id {
            m.rack_id = r;
            if r.is_none() {
                m.rack_unit = None;
            }
        }
        if let Some(u) = p.rack_unit {
            m.rack_unit = u;
        }
        if p.location.is_some() && p.rack_id.is_none() && m.rack_id.is_some() {
            // Moving location without naming a rack keeps the rack only if it is in the new location.
            if self
                .racks
                .get(&m.rack_id.unwrap_or_default())
                .map(|r| r.location.as_str())
                != Some(m.location.as_str())
            {
                m.rack_id = None;
                m.rack_unit = None;
            }
        }
        self.validate_rack(&m.location, m.rack_id, m.rack_unit)?;
        if let Some(macs) = &p.macs {
            m.macs = self.validate_macs(Some(id), macs)?;
        }
        if p.ips.is_some() || p.location.is_some() {
            let ips = p.ips.clone().unwrap_or_else(|| m.ips.clone());
            m.ips = self.validate_ips(Some(id), &m.location, &ips)?;
        }
        if let Some(b) = &p.bmc {
            match b {
                None => {
                    m.bmc = None;
                    password = None;
                }
                Some(spec) => {
                    Self::validate_bmc(spec)?;
                    // The stored password is the old BMC's secret: never sent to another one.
                    let moved = m.bmc.as_ref().is_none_or(|v| {
                        v.address != spec.address.trim()
                            || v.port != spec.port
                            || v.driver != spec.driver
                    });
                    if moved && self.meta.rules.bmc_move_clears_password() {
                        password = None;
                    }
                    m.bmc = Some(bmc_view(spec));
                    if spec.password.is_some() {
                        password = spec.password.clone();
                    }
                    if let Some(v) = m.bmc.as_mut() {
                        v.password_set = password.is_some();
                    }
                }
            }
        }
        let mut stop_workflow = None;
        if let Some(s) = p.state {
            if s != m.state {
                stop_workflow = self.active_workflow(id).cloned();
            }
            if !m.state.can_transition_to(s) {
                return Err(ApiError::conflict(format!(
                    "machine {id} cannot go from {} to {}",
                    m.state.as_str(),
                    s.as_str()
                )));
            }
            if s != m.state {
                m.state_cause = p
                    .state_cause
                    .clone()
                    .unwrap_or_else(|| format!("set by {actor}"));
                self.journal(
                    now,
                    actor,
                    "machine.state_changed",
                    "machine",
                    Some(id),
                    format!(
                        "machine {} {} -> {} ({})",
                        m.hostname,
                        m.state.as_str(),
                        s.as_str(),
                        m.state_cause
                    ),
                );
            }
            if s != rackd_types::MachineState::Deploying {
                stored_token = None;
                stored_sealed = None;
            }
            m.state = s;
        }
        if let Some(d) = &p.description {
            m.description = d.clone();
        }
        if let Some(t) = &p.tags {
            m.tags = t.clone();
        }
        bump(&mut m.meta, now);
        self.index_machine(id, Some(&old), Some(&m));
        self.machines.insert(
            id,
            StoredMachine {
                machine: m.clone(),
                bmc_password: password,
                deploy_token: stored_token,
                deploy_token_sealed: stored_sealed,
                bmc_sessions,
            },
        );
        self.journal(
            now,
            actor,
            "machine.updated",
            "machine",
            Some(id),
            format!("machine {} updated", m.hostname),
        );
        // The operator moved the machine out of its workflow's hands: the workflow stops.
        if let Some(t) = stop_workflow {
            let why = format!("machine {id} set to {} by {actor}", m.state.as_str());
            self.cancel_active_task(now, actor, t, why);
        }
        Ok(Applied::Machine(m))
    }

    pub(super) fn delete_machine(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let stored = self.machines.fetch(id, "machine")?;
        precondition(stored.machine.meta.version, if_match)?;
        self.index_machine(id, Some(&stored.machine), None);
        self.machines.remove(&id);
        // Its pending and running tasks can never run now: cancel them (a running attempt's
        // result is then refused as stale), so no task stays active for a machine that is gone.
        let active: Vec<rackd_types::Task> = self.machine_active_tasks(id).cloned().collect();
        for t in active {
            self.cancel_active_task(now, actor, t, format!("machine {id} was deleted"));
        }
        self.journal(
            now,
            actor,
            "machine.deleted",
            "machine",
            Some(id),
            format!("machine {} deleted", stored.machine.hostname),
        );
        Ok(Applied::Done)
    }

    // ---- subnets -------------------------------------------------------------------------

    fn validate_subnet_fields(
        cidr: &Cidr4,
        gateway: Option<&str>,
        dns: &[String],
        dynamic: &[IpRange],
        reserved: &[IpRange],
    ) -> Result<(), ApiError> {
        if let Some(g) = gateway {
            let g = parse_ipv4(g).map_err(ApiError::invalid)?;
            if !cidr.contains(g) {
                return Err(ApiError::invalid(format!("gateway {g} is outside {cidr}")));
            }
        }
        for d in dns {
            parse_ipv4(d).map_err(ApiError::invalid)?;
        }
        let mut all = Vec::new();
        for r in dynamic.iter().chain(reserved) {
            all.push(range_bounds(r, cidr)?);
        }
        all.sort();
        for w in all.windows(2) {
            if w[1].0 <= w[0].1 {
                return Err(ApiError::invalid("dynamic/reserved ranges overlap"));
            }
        }
        Ok(())
    }

    pub(super) fn create_subnet(
        &mut self,
        now: u64,
        actor: &str,
        c: &CreateSubnet,
    ) -> Result<Applied, ApiError> {
        self.require_location(&c.location)?;
        let cidr = Cidr4::parse(&c.cidr).map_err(ApiError::invalid)?;
        Self::validate_subnet_fields(
            &cidr,
            c.gateway.as_deref(),
            &c.dns,
            &c.dynamic_ranges,
            &c.reserved_ranges,
        )?;
        if let Some(other) = self
            .subnets
            .values()
            .find(|s| Cidr4::parse(&s.cidr).is_ok_and(|o| o.overlaps(&cidr)))
        {
            return Err(ApiError::conflict(format!(
                "{cidr} overlaps subnet {} ({})",
                other.meta.id, other.cidr
            )));
        }
        let id = self.alloc_id();
        let subnet = Subnet {
            meta: new_meta(id, now),
            location: c.location.clone(),
            cidr: cidr.to_string(),
            gateway: match c.gateway.as_deref().map(str::trim) {
                None => None,
                Some(g) => Some(parse_ipv4(g).map_err(ApiError::invalid)?.to_string()),
            },
            dns: c.dns.clone(),
            dynamic_ranges: c.dynamic_ranges.clone(),
            reserved_ranges: c.reserved_ranges.clone(),
        };
        self.subnets.insert(id, subnet.clone());
        self.journal(
            now,
            actor,
            "subnet.created",
            "subnet",
            Some(id),
            format!("subnet {cidr} created in {}", c.location),
        );
        Ok(Applied::Subnet(subnet))
    }

    pub(super) fn update_subnet(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
        p: &UpdateSubnet,
    ) -> Result<Applied, ApiError> {
        let mut s = self.subnets.fetch(id, "subnet")?;
        precondition(s.meta.version, if_match)?;
        if let Some(g) = &p.gateway {
            // Stored in canonical form, so the equality checks against machine IPs hold.
            s.gateway = match g.as_deref().map(str::trim) {
                None => None,
                Some(g) => Some(parse_ipv4(g).map_err(ApiError::invalid)?.to_string()),
            };
            if let Some(g) = &s.gateway {
                if let Some(m) = self.idx.ip.get(g) {
                    return Err(ApiError::conflict(format!(
                        "gateway {g} is assigned to machine {m}"
                    )));
                }
            }
        }
        if let Some(d) = &p.dns {
            s.dns = d.clone();
        }
        if let Some(r) = &p.dynamic_ranges {
            s.dynamic_ranges = r.clone();
        }
        if let Some(r) = &p.reserved_ranges {
            s.reserved_ranges = r.clone();
        }
        let cidr = Cidr4::parse(&s.cidr).map_err(ApiError::internal)?;
        Self::validate_subnet_fields(
            &cidr,
            s.gateway.as_deref(),
            &s.dns,
            &s.dynamic_ranges,
            &s.reserved_ranges,
        )?;
        // Existing reservations must stay outside the dynamic/reserved ranges.
        for ip in self.idx.ip.keys() {
            if let Ok(a) = parse_ipv4(ip) {
                if cidr.contains(a)
                    && (in_ranges(a, &s.dynamic_ranges) || in_ranges(a, &s.reserved_ranges))
                {
                    return Err(ApiError::conflict(format!(
                        "assigned IP {ip} would fall inside a range"
                    )));
                }
            }
        }
        bump(&mut s.meta, now);
        self.subnets.insert(id, s.clone());
        self.journal(
            now,
            actor,
            "subnet.updated",
            "subnet",
            Some(id),
            format!("subnet {} updated", s.cidr),
        );
        Ok(Applied::Subnet(s))
    }

    pub(super) fn delete_subnet(
        &mut self,
        now: u64,
        actor: &str,
        id: u64,
        if_match: Option<u64>,
    ) -> Result<Applied, ApiError> {
        let s = self.subnets.fetch(id, "subnet")?;
        precondition(s.meta.version, if_match)?;
        let cidr = Cidr4::parse(&s.cidr).map_err(ApiError::internal)?;
        if self
            .idx
            .ip
            .keys()
            .any(|ip| parse_ipv4(ip).is_ok_and(|a| cidr.contains(a)))
        {
            return Err(ApiError::conflict(format!(
                "subnet {} still has assigned IPs",
                s.cidr
            )));
        }
        self.subnets.remove(&id);
        self.journal(
            now,
            actor,
            "subnet.deleted",
            "subnet",
            Some(id),
            format!("subnet {} deleted", s.cidr),
        );
        Ok(Applied::Done)
    }
}

fn bmc_view(b: &BmcSpec) -> BmcView {
    BmcView {
        driver: b.driver,
        address: b.address.trim().to_string(),
        port: b.port,
        username: b.username.clone(),
        password_set: b.password.is_some(),
        cipher_suite: b.cipher_suite,
    }
}
