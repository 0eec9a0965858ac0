//! Validation and normalization of network identifiers: MAC addresses, IPv4 addresses, CIDRs.
//!
//! Pure functions; used by the state machine (uniqueness is enforced on normalized forms) and by
//! the API layer for early 400s.

use std::net::Ipv4Addr;

/// Normalize a MAC address to lower-case colon form `aa:bb:cc:dd:ee:ff`.
///
/// Accepts `:`/`-` separated, Cisco dotted (`aabb.ccdd.eeff`) and bare 12-hex-digit forms.
pub fn normalize_mac(input: &str) -> Result<String, String> {
    let hex: String = input
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("invalid MAC address {input:?}"));
    }
    let lower = hex.to_ascii_lowercase();
    let parts: Vec<&str> = (0..6).map(|i| &lower[i * 2..i * 2 + 2]).collect();
    Ok(parts.join(":"))
}

/// A parsed IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr4 {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr4 {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: missing /prefix"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: bad address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: bad prefix"))?;
        if prefix > 32 {
            return Err(format!("invalid CIDR {s:?}: prefix > 32"));
        }
        let mask = Self::mask(prefix);
        let network = Ipv4Addr::from(u32::from(addr) & mask);
        if network != addr {
            return Err(format!(
                "invalid CIDR {s:?}: host bits set (network is {network}/{prefix})"
            ));
        }
        Ok(Self { network, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    /// The netmask, e.g. 255.255.255.0 for a /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(Self::mask(self.prefix))
    }

    /// The broadcast address (the last address of the block).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) & Self::mask(self.prefix)) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Cidr4) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

impl std::fmt::Display for Cidr4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("invalid IPv4 address {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms_normalize() {
        for m in [
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "aabb.ccdd.eeff",
            "AABBCCDDEEFF",
        ] {
            assert_eq!(normalize_mac(m).unwrap(), "aa:bb:cc:dd:ee:ff");
        }
        assert!(normalize_mac("aa:bb:cc:dd:ee").is_err());
        assert!(normalize_mac("zz:bb:cc:dd:ee:ff").is_err());
        assert!(normalize_mac("").is_err());
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr4::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr4::parse("10.1.0.1/16").is_err());
        assert!(Cidr4::parse("10.1.0.0/33").is_err());
        assert!(Cidr4::parse("10.1.0.0").is_err());
        let all = Cidr4::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(all.overlaps(&c));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert_eq!(all.netmask(), Ipv4Addr::UNSPECIFIED);
        let host = Cidr4::parse("10.1.2.3/32").unwrap();
        assert_eq!(
            (host.netmask(), host.broadcast()),
            (Ipv4Addr::BROADCAST, Ipv4Addr::new(10, 1, 2, 3))
        );
    }
}
