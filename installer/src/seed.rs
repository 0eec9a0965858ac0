//! The node seed: the few settings that make one appliance image serve every node. Read from
//! `rackd.toml` on the seed partition (label RACKDSEED); `rackd.*` kernel command-line
//! parameters override it. Pure (parsing and validation only).
//!
//! ```toml
//! hostname = "rack-a1"
//! [network]
//! address = "10.0.0.11/24"     # or "dhcp" (the default)
//! gateway = "10.0.0.1"
//! interface = "eth0"           # default: the first Ethernet interface
//! [cluster]
//! bootstrap = true             # or: join = "http://10.0.0.11:7080" with token = "..."
//! location = "dc1"             # also serve this location's boot services
//! [install]                    # optional: write the appliance to a disk at boot
//! disk = "/dev/vdb"
//! then = "poweroff"            # or "reboot" / "continue"
//! ```

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub cluster: ClusterSeed,
    #[serde(default)]
    pub install: Option<InstallSeed>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `dhcp` or ADDRESS/PREFIX.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
}

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSeed {
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub join: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub learner: bool,
    #[serde(default)]
    pub location: Option<String>,
    /// Extra `rackd up` arguments (e.g. DHCP settings of a location node).
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The address the API and peer ports listen on (default: the management address, so a
    /// location node's provisioning network never reaches them; `0.0.0.0` for every one).
    #[serde(default)]
    pub listen: Option<String>,
    /// Let `rackd.join`, `rackd.token` and `rackd.bootstrap` kernel parameters replace what
    /// this seed says (off: anyone at the boot menu could point the node at another cluster).
    #[serde(default)]
    pub allow_kernel_overrides: bool,
}

impl std::fmt::Debug for ClusterSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSeed")
            .field("bootstrap", &self.bootstrap)
            .field("join", &self.join)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("learner", &self.learner)
            .field("location", &self.location)
            .field("extra_args", &self.extra_args)
            .field("listen", &self.listen)
            .field("allow_kernel_overrides", &self.allow_kernel_overrides)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSeed {
    pub disk: String,
    #[serde(default)]
    pub force: bool,
    #[serde(default = "default_then")]
    pub then: String,
}

fn default_then() -> String {
    "poweroff".into()
}

/// Static address or DHCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Dhcp,
    Static {
        address: std::net::Ipv4Addr,
        prefix: u8,
        gateway: Option<std::net::Ipv4Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("seed is not valid TOML: {0}")]
    Toml(String),
    #[error("seed: {0}")]
    Invalid(String),
}

impl Seed {
    pub fn parse(text: &str) -> Result<Self, SeedError> {
        toml::from_str(text).map_err(|e| SeedError::Toml(e.to_string()))
    }

    /// Applies `rackd.KEY=VALUE` kernel parameters (hostname, address, gateway, interface,
    /// bootstrap, join, token, learner, location). Which cluster the node belongs to is the
    /// seed's to say: `join`, `token` and `bootstrap` fill in what the seed leaves unset but
    /// do not replace what it sets, unless the seed has `allow_kernel_overrides = true`.
    /// Returns the parameters that were ignored for that reason (their names, not values).
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<Vec<String>, SeedError> {
        let seeded =
            self.cluster.bootstrap || self.cluster.join.is_some() || self.cluster.token.is_some();
        let locked = seeded && !self.cluster.allow_kernel_overrides;
        let mut ignored = Vec::new();
        for word in cmdline.split_whitespace() {
            let Some(kv) = word.strip_prefix("rackd.") else {
                continue;
            };
            let (k, v) = kv.split_once('=').unwrap_or((kv, "1"));
            let flag = || matches!(v, "1" | "true" | "yes");
            if locked && matches!(k, "bootstrap" | "join" | "token") {
                ignored.push(format!("rackd.{k}"));
                continue;
            }
            match k {
                "hostname" => self.hostname = Some(v.into()),
                "address" => self.network.address = Some(v.into()),
                "gateway" => self.network.gateway = Some(v.into()),
                "interface" => self.network.interface = Some(v.into()),
                "bootstrap" => self.cluster.bootstrap = flag(),
                "join" => self.cluster.join = Some(v.into()),
                "token" => self.cluster.token = Some(v.into()),
                "learner" => self.cluster.learner = flag(),
                "location" => self.cluster.location = Some(v.into()),
                // Parameters of the boot itself (rackd.callback, …) are not seed settings.
                _ => {}
            }
        }
        Ok(ignored)
    }

    pub fn addressing(&self) -> Result<Addressing, SeedError> {
        let bad = |m: String| SeedError::Invalid(m);
        match self.network.address.as_deref() {
            None | Some("dhcp") => Ok(Addressing::Dhcp),
            Some(a) => {
                let (ip, prefix) = a
                    .split_once('/')
                    .ok_or_else(|| bad(format!("network.address {a:?} needs /PREFIX")))?;
                let address = ip
                    .parse()
                    .map_err(|_| bad(format!("network.address {a:?} is not IPv4")))?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| (1..=32).contains(p))
                    .ok_or_else(|| bad(format!("network.address {a:?}: bad prefix")))?;
                let gateway = match &self.network.gateway {
                    None => None,
                    Some(g) => Some(
                        g.parse()
                            .map_err(|_| bad(format!("network.gateway {g:?} is not IPv4")))?,
                    ),
                };
                Ok(Addressing::Static {
                    address,
                    prefix,
                    gateway,
                })
            }
        }
    }

    /// Checks what a node needs to start: bootstrap XOR join (with a token).
    pub fn validate_cluster(&self) -> Result<(), SeedError> {
        let c = &self.cluster;
        match (c.bootstrap, &c.join) {
            (true, Some(_)) => Err(SeedError::Invalid(
                "cluster.bootstrap and cluster.join are exclusive".into(),
            )),
            (false, None) => Err(SeedError::Invalid(
                "set cluster.bootstrap = true, or cluster.join with cluster.token".into(),
            )),
            (false, Some(_)) if c.token.as_deref().unwrap_or("").is_empty() => Err(
                SeedError::Invalid("cluster.join needs cluster.token".into()),
            ),
            _ => Ok(()),
        }?;
        self.addressing().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_seed_with_cmdline_overrides() {
        let mut s = Seed::parse(
            r#"
hostname = "a1"
[network]
address = "10.0.0.11/24"
gateway = "10.0.0.1"
[cluster]
join = "http://10.0.0.10:7080"
token = "secret-token"
"#,
        )
        .unwrap();
        s.validate_cluster().unwrap();
        assert_eq!(
            s.addressing().unwrap(),
            Addressing::Static {
                address: "10.0.0.11".parse().unwrap(),
                prefix: 24,
                gateway: Some("10.0.0.1".parse().unwrap())
            }
        );
        assert!(!format!("{s:?}").contains("secret-token"));
        s.apply_cmdline("console=ttyS0 rackd.hostname=b2 rackd.address=dhcp quiet")
            .unwrap();
        assert_eq!(s.hostname.as_deref(), Some("b2"));
        assert_eq!(s.addressing().unwrap(), Addressing::Dhcp);
    }

    /// Kernel parameters cannot move a seeded node to another cluster: the seed's join URL,
    /// token and bootstrap flag stand, unless the seed allows overrides; a node without
    /// cluster settings in its seed takes them from the kernel command line.
    #[test]
    fn kernel_parameters_do_not_override_the_seeds_cluster() {
        let seeded = "[cluster]\njoin = \"http://10.0.0.10:7080\"\ntoken = \"seed-secret\"\n";
        let attack =
            "rackd.join=http://evil:7080 rackd.token=evil rackd.bootstrap=1 rackd.location=x";
        let mut s = Seed::parse(seeded).unwrap();
        let ignored = s.apply_cmdline(attack).unwrap();
        assert_eq!(ignored, ["rackd.join", "rackd.token", "rackd.bootstrap"]);
        assert_eq!(s.cluster.join.as_deref(), Some("http://10.0.0.10:7080"));
        assert_eq!(s.cluster.token.as_deref(), Some("seed-secret"));
        assert!(!s.cluster.bootstrap);
        assert_eq!(
            s.cluster.location.as_deref(),
            Some("x"),
            "other settings apply"
        );
        s.validate_cluster().unwrap();

        let mut open = Seed::parse(&format!("{seeded}allow_kernel_overrides = true\n")).unwrap();
        assert!(open.apply_cmdline(attack).unwrap().is_empty());
        assert_eq!(open.cluster.token.as_deref(), Some("evil"));

        let mut blank = Seed::default();
        assert!(blank.apply_cmdline(attack).unwrap().is_empty());
        assert_eq!(blank.cluster.join.as_deref(), Some("http://evil:7080"));
    }

    #[test]
    fn bad_seeds_get_clear_errors() {
        assert!(matches!(
            Seed::parse("hostname = "),
            Err(SeedError::Toml(_))
        ));
        assert!(Seed::parse("colour = 1").is_err(), "unknown keys refused");
        let s = Seed::default();
        assert!(s.validate_cluster().is_err());
        let mut s = Seed::default();
        s.cluster.join = Some("http://x".into());
        assert!(s
            .validate_cluster()
            .unwrap_err()
            .to_string()
            .contains("token"));
        let mut s = Seed::default();
        s.cluster.bootstrap = true;
        s.network.address = Some("10.0.0.1".into());
        assert!(s.validate_cluster().is_err());
        s.network.address = Some("10.0.0.1/40".into());
        assert!(s.validate_cluster().is_err());
        s.network.address = Some("10.0.0.1/8".into());
        s.validate_cluster().unwrap();
    }
}
