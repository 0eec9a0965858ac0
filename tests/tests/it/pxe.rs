//! A diskless qemu VM (TCG) PXE-boots from a rackd location node: its iPXE ROM gets its
//! reservation over DHCP, is sent to its per-machine script on the HTTP boot server, fetches
//! and runs it (the script's echo appears on the VM's serial console). Needs root, iproute2,
//! qemu-system-x86 and ipxe-qemu (.ci/run installs them). The tap is removed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackd_tests::Cluster;

use crate::util::sh;
use serde_json::json;

struct Tap {
    name: String,
    vm: Option<Child>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        if let Some(mut vm) = self.vm.take() {
            let _ = vm.kill();
            let _ = vm.wait();
        }
        let _ = sh(&["ip", "link", "del", &self.name]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_ipxe_rom_boots_its_per_machine_script_from_rackd() {
    boot_vm(0, false).await;
}

/// The lab's flow: DHCP, then a first stage over TFTP (`boot.ipxe`), then the per-machine
/// script over HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_ipxe_rom_loads_a_first_stage_over_tftp_then_its_script_over_http() {
    boot_vm(1, true).await;
}

async fn boot_vm(tag: u32, via_tftp: bool) {
    assert!(
        sh(&["sh", "-c", "command -v qemu-system-x86_64"]).0,
        "qemu-system-x86_64 missing (apt-get install qemu-system-x86 ipxe-qemu)"
    );
    let n = std::process::id() % 200 + 20;
    let mut tap = Tap {
        name: format!("rkt{}x{tag}", std::process::id() % 100_000),
        vm: None,
    };
    let net = format!("10.{}.{n}", 196 + tag);
    let server_ip = format!("{net}.1");
    for a in [
        vec!["ip", "tuntap", "add", "dev", &tap.name, "mode", "tap"],
        vec![
            "ip",
            "addr",
            "add",
            &format!("{server_ip}/24"),
            "dev",
            &tap.name,
        ],
        vec!["ip", "link", "set", &tap.name, "up"],
    ] {
        let (ok, out) = sh(&a);
        assert!(ok, "{a:?}: {out}");
    }
    let http_listen = format!("{server_ip}:0");
    let tftp_listen = format!("{server_ip}:69");
    let mut args = vec![
        "--location",
        "dc1",
        "--dhcp-interface",
        &tap.name,
        "--dhcp-server-ip",
        &server_ip,
        "--http-boot-listen",
        &http_listen,
    ];
    if via_tftp {
        args.extend(["--tftp-listen", &tftp_listen, "--ipxe-via-tftp"]);
    }
    let c = Cluster::start("pxe", 1, &args).await.expect("cluster");
    let _: serde_json::Value = c
        .post_json(0, "/v1/locations", &json!({"name": "dc1"}))
        .await
        .unwrap();
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/subnets",
            &json!({"location": "dc1", "cidr": format!("{net}.0/24"), "gateway": server_ip}),
        )
        .await
        .unwrap();
    let mac = "52:54:00:77:00:01";
    let _: serde_json::Value = c
        .post_json(
            0,
            "/v1/machines",
            &json!({"hostname": "pxevm", "location": "dc1", "macs": [mac], "ips": [format!("{net}.50")]}),
        )
        .await
        .unwrap();

    let sercon = c.dir.join("sercon-port.bin");
    std::fs::write(&sercon, [0xf8u8, 0x03]).unwrap();
    let serial = c.dir.join("vm.serial");
    tap.vm = Some(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-name",
                "rackdpxe",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-fw_cfg")
            .arg(format!("name=etc/sercon-port,file={}", sercon.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={},script=no,downscript=no", tap.name),
            ])
            .args([
                "-device",
                &format!("virtio-net-pci,netdev=n0,mac={mac}"),
                "-boot",
                "n",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu"),
    );
    let t0 = Instant::now();
    let want = "rackd: pxevm is new";
    loop {
        let console =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).replace('\r', "");
        if console.contains(want) {
            let ipxe_ip = console.contains(&format!("{net}.50"));
            eprintln!(
                "VM ran its rackd script {:.1}s after start (iPXE showed reserved IP: {ipxe_ip})",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "VM did not run its script within 120s; console tail:\n{}",
            console
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap();
    assert!(
        log.contains("served boot script") && log.contains(mac),
        "HTTP boot server did not log the script"
    );
    if via_tftp {
        assert!(
            log.lines()
                .any(|l| l.contains("tftp read request") && l.contains("boot.ipxe")),
            "the VM did not load boot.ipxe over TFTP"
        );
        let console =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).to_string();
        assert!(
            console.contains("rackd: chaining the per-machine script"),
            "first stage did not run"
        );
    }
}
