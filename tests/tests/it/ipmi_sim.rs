//! OpenIPMI's BMC simulator (`ipmi_sim`) as a test peer: in its own network namespace behind a
//! veth pair (the "isolated management network"), or on a host address with a qemu VM as its
//! chassis. Configuration comes from tests/fixtures/ipmi. Everything it created (process,
//! namespace, links, VM) is removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::sh;

pub const USER: &str = "admin";
pub const PASS: &str = "labpass";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ipmi")
}

pub struct IpmiSim {
    pub ns: Option<String>,
    host_if: Option<String>,
    /// The BMC's address (port 623).
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl IpmiSim {
    /// A stand-alone BMC with a fake chassis, in a fresh namespace at 10.X.Y.2.
    pub fn in_netns(tag: u32, dir: &Path) -> Self {
        assert!(
            sh(&["sh", "-c", "command -v ipmi_sim"]).0,
            "ipmi_sim missing (apt-get install openipmi)"
        );
        let n = std::process::id() % 200 + 20;
        let name = format!("rki{}t{tag}", std::process::id() % 100_000);
        let net = format!("10.{}.{n}", 201 + tag);
        let mut sim = IpmiSim {
            ns: Some(name.clone()),
            host_if: Some(format!("{name}h")),
            addr: format!("{net}.2"),
            dir: dir.to_path_buf(),
            child: None,
        };
        let (hif, nif) = (format!("{name}h"), format!("{name}n"));
        let _ = sh(&["ip", "netns", "del", &name]);
        let _ = sh(&["ip", "link", "del", &hif]);
        for a in [
            vec!["ip", "netns", "add", &name],
            vec![
                "ip", "link", "add", &hif, "type", "veth", "peer", "name", &nif,
            ],
            vec!["ip", "link", "set", &nif, "netns", &name],
            vec!["ip", "addr", "add", &format!("{net}.1/24"), "dev", &hif],
            vec!["ip", "link", "set", &hif, "up"],
            vec![
                "ip",
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                &nif,
            ],
            vec![
                "ip", "netns", "exec", &name, "ip", "link", "set", &nif, "up",
            ],
            vec![
                "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
            ],
        ] {
            let (ok, out) = sh(&a);
            assert!(ok, "{a:?}: {out}");
        }
        sim.start("lan.conf.in", &[]);
        sim
    }

    /// A BMC on a host address whose chassis is a qemu VM started by `vm_start` (a script).
    pub fn with_vm(addr: &str, dir: &Path, vm_port: u16) -> Self {
        let mut sim = IpmiSim {
            ns: None,
            host_if: None,
            addr: addr.to_string(),
            dir: dir.to_path_buf(),
            child: None,
        };
        sim.start("lan-vm.conf.in", &[("@VMPORT@", vm_port.to_string())]);
        sim
    }

    fn start(&mut self, template: &str, extra: &[(&str, String)]) {
        let f = fixtures();
        std::fs::create_dir_all(self.dir.join("state")).unwrap();
        std::fs::copy(
            f.join("chassis_control.sh"),
            self.dir.join("chassis_control.sh"),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(f.join(template))
            .unwrap()
            .replace("@ADDR@", &self.addr)
            .replace("@DIR@", &self.dir.display().to_string());
        for (k, v) in extra {
            conf = conf.replace(k, v);
        }
        let conf_path = self.dir.join("lan.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "ipmi_sim"]);
                c
            }
            None => Command::new("ipmi_sim"),
        };
        let log = std::fs::File::create(self.dir.join("ipmi_sim.log")).unwrap();
        cmd.arg("-c")
            .arg(&conf_path)
            .arg("-f")
            .arg(f.join("sim.emu"))
            .arg("-s")
            .arg(self.dir.join("state"))
            .arg("-n")
            .env("IPMI_STATE", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("start ipmi_sim"));
        let t0 = Instant::now();
        let want = format!("{}:623", self.addr);
        loop {
            let mut ss = vec!["ss", "-Hnul"];
            let ns_args;
            if let Some(ns) = &self.ns {
                ns_args = ["ip", "netns", "exec", ns.as_str()];
                ss.splice(0..0, ns_args);
            }
            if sh(&ss).1.contains(&want) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "ipmi_sim not listening: {}",
                std::fs::read_to_string(self.dir.join("ipmi_sim.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the BMC asked its fake chassis to do, one call per line.
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    pub fn target(&self) -> std::net::SocketAddr {
        format!("{}:623", self.addr).parse().unwrap()
    }

    /// Creates machine `hostname` in `location` (which must exist) with this BMC; its id.
    pub async fn add_machine(
        &self,
        c: &rackd_tests::Cluster,
        location: &str,
        hostname: &str,
    ) -> u64 {
        let m: serde_json::Value = c
            .post_json(
                0,
                "/v1/machines",
                &serde_json::json!({"hostname": hostname, "location": location,
                        "bmc": {"driver": "ipmi", "address": self.addr, "username": USER,
                                "password": PASS}}),
            )
            .await
            .unwrap();
        m["id"].as_u64().unwrap()
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(ns) = &self.ns {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        if let Some(h) = &self.host_if {
            let _ = sh(&["ip", "link", "del", h]);
        }
    }
}

/// `ipmitool` with the given interface against HOST:PORT; (success, output).
pub fn ipmitool(intf: &str, host: &str, port: u16, pass: &str, args: &[&str]) -> (bool, String) {
    let port = port.to_string();
    let mut a = vec!["ipmitool", "-I", intf];
    if intf == "lanplus" {
        a.extend(["-C", "3"]);
    }
    a.extend([
        "-H", host, "-p", &port, "-U", USER, "-P", pass, "-R", "2", "-N", "1",
    ]);
    a.extend(args);
    sh(&a)
}
