//! Drive one BMC with the rackd IPMI driver, like a tiny ipmitool:
//! `cargo run -p rackd-hwctl --example ipmi -- HOST:PORT lanplus|lan USER PASS status|on|off|cycle|reset|pxe|info`
//! The password may also come from the IPMI_PASSWORD environment variable (pass `-`).

use rackd_hwctl::ipmi::LanVersion;
use rackd_hwctl::{Bmc, BootDevice, IpmiBmc};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: ipmi HOST:PORT lanplus|lan USER PASS|- ACTION");
        std::process::exit(2);
    }
    let target = a[1].parse().expect("HOST:PORT");
    let version = LanVersion::parse(&a[2]).expect("lanplus or lan");
    let pass = if a[4] == "-" {
        std::env::var("IPMI_PASSWORD").unwrap_or_default()
    } else {
        a[4].clone()
    };
    let bmc = IpmiBmc::new(target, version, &a[3], &pass);
    let t = std::time::Instant::now();
    let r = match a[5].as_str() {
        "status" => bmc.power_status().await.map(|s| format!("{s:?}")),
        "on" => bmc.power_on().await.map(|_| "ok".into()),
        "off" => bmc.power_off().await.map(|_| "ok".into()),
        "cycle" => bmc.power_cycle().await.map(|_| "ok".into()),
        "reset" => bmc.hard_reset().await.map(|_| "ok".into()),
        "pxe" => bmc
            .set_boot_device(BootDevice::Pxe, false)
            .await
            .map(|_| "ok".into()),
        "info" => bmc.info().await.map(|i| format!("{i:?}")),
        other => {
            eprintln!("unknown action {other}");
            std::process::exit(2);
        }
    };
    match r {
        Ok(s) => println!("{s} ({:?})", t.elapsed()),
        Err(e) => {
            println!("error: {e} ({:?})", t.elapsed());
            std::process::exit(1);
        }
    }
}
