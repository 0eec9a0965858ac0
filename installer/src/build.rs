//! `rackd appliance build`: the bootable appliance disk image.
//!
//! Inputs, all from the local machine (works offline): a Debian kernel (an installed
//! `linux-image-*` package, or its `.deb` given with `--kernel-deb`, e.g. from
//! `apt-get download`), this `rackd` binary, busybox, and the tools named in [`crate::tools`].
//! Output: `rackd.raw` (and `rackd.qcow2`) with the [`crate::layout`] partitions: syslinux
//! (BIOS) and syslinux.efi (UEFI) on the system part, which holds the kernel and an initramfs
//! with rackd, its shared libraries, busybox, the kernel modules for disks/NICs/filesystems, and
//! `/init` (rackd's appliance supervisor). Progress goes to stderr, one line per step.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cpio::Cpio;
use crate::layout::{self, MIB};
use crate::tools::{self, path_str, run};
use crate::{io, ImageError};

/// Kernel modules loaded at boot (with their dependencies): virtual and common server disks
/// and NICs, filesystems, the ACPI power button and input events.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "sd_mod",
    "ahci",
    "ata_piix",
    "nvme",
    "megaraid_sas",
    "mpt3sas",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "ice",
    "tg3",
    "bnx2",
    "bnxt_en",
    "r8169",
    "mlx4_en",
    "mlx5_core",
    "crc32c_generic",
    "crc32c-intel",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "button",
    "evdev",
    "af_packet",
];

/// Busybox applets linked into /bin.
const APPLETS: &[&str] = &[
    "sh", "mount", "umount", "insmod", "ip", "udhcpc", "blkid", "hostname", "poweroff", "reboot",
    "sleep", "cat", "ls", "mkdir", "sync", "dd", "kill", "ps", "dmesg", "echo", "grep", "sed",
    "route", "ifconfig", "blockdev", "mdev", "uname", "df", "free", "top", "vi",
];

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// The rackd binary to ship (default: this executable).
    pub rackd: PathBuf,
    /// A linux-image .deb; else the newest /boot/vmlinuz-* with /lib/modules.
    pub kernel_deb: Option<PathBuf>,
    pub busybox: PathBuf,
    pub seed: Option<PathBuf>,
    pub disk_size: u64,
    pub modules: Vec<String>,
    /// Extra kernel command line.
    pub cmdline: String,
    pub qcow2: bool,
}

impl BuildOptions {
    pub fn new(out_dir: PathBuf) -> Result<Self, ImageError> {
        Ok(Self {
            out_dir,
            rackd: std::env::current_exe().map_err(|e| ImageError::Io {
                what: "locate the rackd executable".into(),
                source: e,
            })?,
            kernel_deb: None,
            busybox: which("busybox").unwrap_or_else(|| PathBuf::from("/bin/busybox")),
            seed: None,
            disk_size: 1024 * MIB,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            cmdline: String::new(),
            qcow2: true,
        })
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub raw: PathBuf,
    pub qcow2: Option<PathBuf>,
    pub kernel_version: String,
    pub kernel_bytes: u64,
    pub initramfs_bytes: u64,
    pub qcow2_bytes: Option<u64>,
    pub seconds: f64,
}

struct Progress {
    step: u32,
    total: u32,
    t0: Instant,
}

impl Progress {
    fn next(&mut self, what: &str) {
        self.step += 1;
        eprintln!(
            "[{}/{}] {:6.1}s {what}",
            self.step,
            self.total,
            self.t0.elapsed().as_secs_f64()
        );
    }
}

/// The kernel image and its module tree.
struct Kernel {
    version: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn find_kernel(deb: Option<&Path>) -> Result<Kernel, ImageError> {
    let (root, tmp) = match deb {
        Some(deb) => {
            let tmp = tempfile::tempdir().map_err(io("temporary directory"))?;
            run("dpkg-deb", &["-x", path_str(deb)?, path_str(tmp.path())?])?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
        None => (PathBuf::from("/"), None),
    };
    let mut versions: Vec<String> = std::fs::read_dir(root.join("boot"))
        .map_err(|_| ImageError::Invalid(no_kernel()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .filter(|v| root.join("lib/modules").join(v).is_dir())
        .collect();
    versions.sort();
    let version = versions
        .pop()
        .ok_or_else(|| ImageError::Invalid(no_kernel()))?;
    Ok(Kernel {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{version}")),
        modules: root.join("lib/modules").join(&version),
        version,
        _tmp: tmp,
    })
}

fn no_kernel() -> String {
    "no kernel found: install linux-image-amd64, or pass --kernel-deb with a linux-image-*.deb \
     (apt-get download linux-image-$(uname -r))"
        .into()
}

/// Module name (dashes as underscores) → file, for every module of the tree.
fn module_index(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = name.split(".ko").next().filter(|_| name.contains(".ko")) {
                    out.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    out
}

/// Reads a module (decompressing .xz/.zst) and its `depends=` list from .modinfo.
fn read_module(path: &Path) -> Result<(Vec<u8>, Vec<String>), ImageError> {
    let name = path.to_string_lossy();
    let bytes = if name.ends_with(".xz") {
        tools::run_bytes("xz", &["-dc", path_str(path)?])?
    } else if name.ends_with(".zst") {
        tools::run_bytes("zstd", &["-dc", path_str(path)?])?
    } else {
        std::fs::read(path).map_err(io(format!("read {name}")))?
    };
    let key = b"depends=";
    let deps = bytes
        .windows(key.len())
        .position(|w| w == key)
        .map(|i| {
            let rest = &bytes[i + key.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default();
    Ok((bytes, deps))
}

/// The wanted modules and their dependencies, dependencies first. Modules built into the kernel
/// (or absent from this kernel) are skipped.
fn module_closure(
    index: &BTreeMap<String, PathBuf>,
    wanted: &[String],
) -> Result<Vec<(String, Vec<u8>)>, ImageError> {
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<(), ImageError> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let Some(path) = index.get(&name) else {
            return Ok(()); // built in, or not in this kernel
        };
        let (bytes, deps) = read_module(path)?;
        for d in deps {
            visit(&d, index, seen, order)?;
        }
        order.push((name, bytes));
        Ok(())
    }
    for w in wanted {
        visit(w, index, &mut seen, &mut order)?;
    }
    Ok(order)
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# busybox udhcpc hook: apply the lease to the interface.
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done ;;
esac
exit 0
"#;

fn initramfs(
    opts: &BuildOptions,
    kernel: &Kernel,
    p: &mut Progress,
) -> Result<Vec<u8>, ImageError> {
    let mut c = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "etc",
        "etc/udhcpc",
        "lib",
        "lib64",
        "lib/modules",
        "usr",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "data",
        "seed",
        "mnt",
        "root",
        "var",
    ] {
        c.dir(d);
    }
    c.char_device("dev/console", 5, 1);
    c.char_device("dev/null", 1, 3);
    // Binaries and their libraries.
    let rackd_tmp = tempfile::tempdir().map_err(io("temporary directory"))?;
    let rackd = rackd_tmp.path().join("rackd");
    if run(
        "objcopy",
        &["--strip-debug", path_str(&opts.rackd)?, path_str(&rackd)?],
    )
    .is_err()
    {
        std::fs::copy(&opts.rackd, &rackd).map_err(io("copy rackd"))?;
    }
    let mut bins: Vec<(String, PathBuf)> = vec![
        ("bin/rackd".into(), rackd.clone()),
        ("bin/busybox".into(), opts.busybox.clone()),
    ];
    for tool in ["mke2fs", "mkfs.fat", "mcopy", "mmd"] {
        if let Some(p) = which(tool) {
            bins.push((format!("sbin/{tool}"), p));
        }
    }
    let mut libs = BTreeSet::new();
    for (_, src) in &bins {
        libs.extend(tools::libraries(src)?);
    }
    let mut dirs_made = BTreeSet::new();
    for (dest, src) in &bins {
        let data = std::fs::read(src).map_err(io(format!("read {}", src.display())))?;
        c.file(dest, 0o755, &data);
    }
    for lib in &libs {
        let rel = lib.trim_start_matches('/');
        let mut acc = String::new();
        if let Some((dir, _)) = rel.rsplit_once('/') {
            for part in dir.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                if !matches!(acc.as_str(), "lib" | "lib64" | "usr") && dirs_made.insert(acc.clone())
                {
                    c.dir(&acc);
                }
            }
        }
        let data = std::fs::read(lib).map_err(io(format!("read {lib}")))?;
        c.file(rel, 0o755, &data);
    }
    // mtools (seed writing during `install`) converts file names through glibc's iconv.
    let gconv = Path::new("/usr/lib/x86_64-linux-gnu/gconv");
    if gconv.is_dir() {
        for d in [
            "usr/lib",
            "usr/lib/x86_64-linux-gnu",
            "usr/lib/x86_64-linux-gnu/gconv",
            "usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d",
        ] {
            if dirs_made.insert(d.to_string()) {
                c.dir(d);
            }
        }
        for f in [
            "gconv-modules",
            "gconv-modules.cache",
            "IBM850.so",
            "IBM437.so",
            "gconv-modules.d/gconv-modules-extra.conf",
        ] {
            if let Ok(data) = std::fs::read(gconv.join(f)) {
                c.file(&format!("usr/lib/x86_64-linux-gnu/gconv/{f}"), 0o644, &data);
            }
        }
    }
    for a in APPLETS {
        c.symlink(&format!("bin/{a}"), "busybox");
    }
    c.symlink("sbin/init", "../init");
    c.file(
        "init",
        0o755,
        b"#!/bin/sh\n# rackd appliance: PID 1 is rackd's supervisor (mounts, seed, network, rackd).\nexport PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexec /bin/rackd appliance-init\n",
    );
    c.file("etc/udhcpc/default.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    c.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n");
    c.file("etc/rackd-release", 0o644, release(kernel).as_bytes());
    p.next(&format!(
        "kernel {}: resolving modules {}",
        kernel.version,
        opts.modules.join(",")
    ));
    let index = module_index(&kernel.modules);
    let mods = module_closure(&index, &opts.modules)?;
    let mut list = String::new();
    for (name, bytes) in &mods {
        c.file(&format!("lib/modules/{name}.ko"), 0o644, bytes);
        list.push_str(name);
        list.push('\n');
    }
    c.file("lib/modules/load.list", 0o644, list.as_bytes());
    let raw = c.finish();
    p.next(&format!(
        "initramfs: {} modules, {} libraries, {:.1} MiB uncompressed; compressing",
        mods.len(),
        libs.len(),
        raw.len() as f64 / MIB as f64
    ));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&raw).map_err(io("compress initramfs"))?;
    gz.finish().map_err(io("compress initramfs"))
}

/// A small scripted boot image: a Debian kernel and an initramfs holding busybox (with its
/// libraries), the kernel `modules` (with their dependencies, in `lib/modules/load.list`,
/// dependencies first) and `init`, a shell script run as PID 1. The deploy tests boot it as
/// the image a machine installs: its script loads the NIC driver, takes an address over DHCP
/// (`udhcpc` with the appliance's script) and calls rackd's install callback. Writes
/// `vmlinuz` and `initramfs.gz` into `out_dir`; returns their paths.
pub fn scripted_image(
    kernel_deb: Option<&Path>,
    modules: &[&str],
    init: &str,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), ImageError> {
    let kernel = find_kernel(kernel_deb)?;
    let busybox = which("busybox").unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    let mut c = Cpio::new();
    for d in [
        "bin",
        "sbin",
        "etc",
        "etc/udhcpc",
        "lib",
        "lib64",
        "lib/modules",
        "usr",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
    ] {
        c.dir(d);
    }
    c.char_device("dev/console", 5, 1);
    c.char_device("dev/null", 1, 3);
    let data = std::fs::read(&busybox).map_err(io(format!("read {}", busybox.display())))?;
    c.file("bin/busybox", 0o755, &data);
    let mut dirs = BTreeSet::new();
    for lib in tools::libraries(&busybox)? {
        let rel = lib.trim_start_matches('/');
        if let Some((dir, _)) = rel.rsplit_once('/') {
            let mut acc = String::new();
            for part in dir.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                if !matches!(acc.as_str(), "lib" | "lib64" | "usr") && dirs.insert(acc.clone()) {
                    c.dir(&acc);
                }
            }
        }
        let data = std::fs::read(&lib).map_err(io(format!("read {lib}")))?;
        c.file(rel, 0o755, &data);
    }
    for a in APPLETS.iter().chain(&["wget", "cut", "tr", "head"]) {
        c.symlink(&format!("bin/{a}"), "busybox");
    }
    c.file("etc/udhcpc/default.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    c.file("init", 0o755, init.as_bytes());
    let wanted: Vec<String> = modules.iter().map(|m| m.to_string()).collect();
    let mods = module_closure(&module_index(&kernel.modules), &wanted)?;
    let mut list = String::new();
    for (name, bytes) in &mods {
        c.file(&format!("lib/modules/{name}.ko"), 0o644, bytes);
        list.push_str(name);
        list.push('\n');
    }
    c.file("lib/modules/load.list", 0o644, list.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&c.finish())
        .map_err(io("compress initramfs"))?;
    let initramfs = gz.finish().map_err(io("compress initramfs"))?;
    let (vmlinuz, initrd) = (out_dir.join("vmlinuz"), out_dir.join("initramfs.gz"));
    std::fs::copy(&kernel.vmlinuz, &vmlinuz).map_err(io("copy the kernel"))?;
    std::fs::write(&initrd, initramfs).map_err(io("write the initramfs"))?;
    Ok((vmlinuz, initrd))
}

/// What the image holds (in the initramfs and on the system part).
fn release(kernel: &Kernel) -> String {
    format!(
        "rackd {}\nlayout {}\nkernel {}\n",
        env!("CARGO_PKG_VERSION"),
        layout::LAYOUT_VERSION,
        kernel.version
    )
}

fn syslinux_cfg(cmdline: &str) -> String {
    format!(
        "DEFAULT rackd\nPROMPT 0\nTIMEOUT 0\nSERIAL 0 115200\nLABEL rackd\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND console=tty0 console=ttyS0,115200 panic=10 {cmdline}\n"
    )
}

/// Copies `src` into `disk` at `offset`, skipping all-zero blocks (the disk file stays sparse).
pub fn copy_into(src: &Path, disk: &mut std::fs::File, offset: u64) -> Result<(), ImageError> {
    let mut f = std::fs::File::open(src).map_err(io(format!("open {}", src.display())))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut at = offset;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(io("read partition image"))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            disk.seek(SeekFrom::Start(at)).map_err(io("seek disk"))?;
            disk.write_all(&buf[..n]).map_err(io("write disk"))?;
        }
        at += n as u64;
    }
    Ok(())
}

pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// syslinux's BIOS MBR boot code (440 bytes).
pub fn mbr_code() -> Result<Vec<u8>, ImageError> {
    for p in [
        "/usr/lib/syslinux/mbr/mbr.bin",
        "/usr/share/syslinux/mbr.bin",
    ] {
        if let Ok(b) = std::fs::read(p) {
            return Ok(b[..440.min(b.len())].to_vec());
        }
    }
    Err(ImageError::Tool {
        tool: "mbr.bin".into(),
        detail: "syslinux MBR code not found; install syslinux-common".into(),
    })
}

/// Writes the seed partition image: a FAT16 filesystem labelled RACKDSEED with rackd.toml.
pub fn seed_image(out: &Path, seed_toml: Option<&Path>) -> Result<(), ImageError> {
    let files: Vec<(&str, &Path)> = seed_toml.map(|s| ("rackd.toml", s)).into_iter().collect();
    tools::fat_image(
        out,
        16,
        layout::LABEL_SEED,
        layout::SEED_SIZE / 1024,
        &[],
        &files,
    )
}

pub fn build(opts: &BuildOptions) -> Result<BuildReport, ImageError> {
    let mut p = Progress {
        step: 0,
        total: 8,
        t0: Instant::now(),
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(io("create the output directory"))?;
    if let Some(seed) = &opts.seed {
        let text = std::fs::read_to_string(seed).map_err(io(format!("read {}", seed.display())))?;
        crate::seed::Seed::parse(&text)?;
    }
    p.next("locating the kernel");
    let kernel = find_kernel(opts.kernel_deb.as_deref())?;
    let initrd = initramfs(opts, &kernel, &mut p)?;
    let work = tempfile::tempdir_in(&opts.out_dir).map_err(io("work directory"))?;
    let w = |n: &str| work.path().join(n);
    std::fs::write(w("initrd.img"), &initrd).map_err(io("write initrd"))?;
    std::fs::write(w("syslinux.cfg"), syslinux_cfg(&opts.cmdline)).map_err(io("write cfg"))?;
    std::fs::write(w("rackd-release"), release(&kernel)).map_err(io("write release"))?;

    p.next("system partition (FAT32): kernel, initramfs, syslinux (BIOS + UEFI)");
    let mut files: Vec<(&str, PathBuf)> = vec![
        ("vmlinuz", kernel.vmlinuz.clone()),
        ("initrd.img", w("initrd.img")),
        ("syslinux.cfg", w("syslinux.cfg")),
        ("rackd-release", w("rackd-release")),
    ];
    let efi_dir = Path::new("/usr/lib/SYSLINUX.EFI/efi64");
    let efi = efi_dir.join("syslinux.efi").is_file();
    if efi {
        files.push(("EFI/BOOT/BOOTX64.EFI", efi_dir.join("syslinux.efi")));
        files.push((
            "EFI/BOOT/ldlinux.e64",
            PathBuf::from("/usr/lib/syslinux/modules/efi64/ldlinux.e64"),
        ));
        files.push(("EFI/BOOT/syslinux.cfg", w("syslinux.cfg")));
    }
    let file_refs: Vec<(&str, &Path)> = files.iter().map(|(d, s)| (*d, s.as_path())).collect();
    let dirs: &[&str] = if efi { &["EFI", "EFI/BOOT"] } else { &[] };
    tools::fat_image(
        &w("sys.img"),
        32,
        layout::LABEL_SYS,
        layout::SYS_SIZE / 1024,
        dirs,
        &file_refs,
    )?;
    run("syslinux", &["--install", path_str(&w("sys.img"))?])?;

    p.next("seed partition (FAT16)");
    seed_image(&w("seed.img"), opts.seed.as_deref())?;

    p.next("data partition (ext4)");
    let parts = layout::partitions(opts.disk_size).map_err(ImageError::Invalid)?;
    run(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            layout::LABEL_DATA,
            path_str(&w("data.img"))?,
            &format!("{}k", parts[2].size / 1024),
        ],
    )?;

    p.next("assembling rackd.raw");
    let raw = opts.out_dir.join("rackd.raw");
    let _ = std::fs::remove_file(&raw);
    let mut disk = std::fs::File::create(&raw).map_err(io("create rackd.raw"))?;
    disk.set_len(opts.disk_size).map_err(io("size rackd.raw"))?;
    let mut mbr = [0u8; 512];
    mbr[..440].copy_from_slice(&mbr_code()?);
    layout::write_table(&mut mbr, &parts);
    disk.write_all(&mbr).map_err(io("write MBR"))?;
    copy_into(&w("sys.img"), &mut disk, parts[0].start)?;
    copy_into(&w("seed.img"), &mut disk, parts[1].start)?;
    copy_into(&w("data.img"), &mut disk, parts[2].start)?;
    disk.sync_all().map_err(io("sync rackd.raw"))?;
    drop(disk);

    let qcow2 = if opts.qcow2 {
        p.next("converting to rackd.qcow2");
        let q = opts.out_dir.join("rackd.qcow2");
        run(
            "qemu-img",
            &["convert", "-O", "qcow2", path_str(&raw)?, path_str(&q)?],
        )?;
        Some(q)
    } else {
        p.next("qcow2 skipped");
        None
    };
    let report = BuildReport {
        kernel_version: kernel.version.clone(),
        kernel_bytes: std::fs::metadata(&kernel.vmlinuz)
            .map(|m| m.len())
            .unwrap_or(0),
        initramfs_bytes: initrd.len() as u64,
        qcow2_bytes: qcow2
            .as_ref()
            .and_then(|q| std::fs::metadata(q).ok())
            .map(|m| m.len()),
        raw,
        qcow2,
        seconds: p.t0.elapsed().as_secs_f64(),
    };
    eprintln!(
        "done in {:.1}s: {} (kernel {:.1} MiB, initramfs {:.1} MiB{})",
        report.seconds,
        report.raw.display(),
        report.kernel_bytes as f64 / MIB as f64,
        report.initramfs_bytes as f64 / MIB as f64,
        report
            .qcow2_bytes
            .map(|b| format!(", qcow2 {:.1} MiB", b as f64 / MIB as f64))
            .unwrap_or_default()
    );
    Ok(report)
}
