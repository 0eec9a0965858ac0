//! The appliance disk layout and its MBR partition table (pure; no I/O besides byte slices).
//!
//! ```text
//! sector 0          MBR: syslinux boot code (440 bytes) + partition table
//! 1 MiB             p1 RACKDSYS   FAT32, bootable: syslinux, kernel, initramfs  (system part)
//! 1 MiB + SYS       p2 RACKDSEED  FAT16: rackd.toml (this node's settings)
//! ...               p3 RACKDDATA  ext4: the node's data directory (RocksDB), rest of the disk
//! ```
//! An upgrade rewrites p1 only; p2 and p3 are kept. Sizes are fixed by [`LAYOUT_VERSION`] so an
//! image of a newer build fits the system part of an older installation.

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1024 * 1024;
/// Bumped when partition sizes or roles change; recorded in the system part.
pub const LAYOUT_VERSION: u32 = 1;
pub const SYS_START: u64 = MIB;
pub const SYS_SIZE: u64 = 256 * MIB;
pub const SEED_START: u64 = SYS_START + SYS_SIZE;
pub const SEED_SIZE: u64 = 16 * MIB;
pub const DATA_START: u64 = SEED_START + SEED_SIZE;
/// Smallest data partition we create.
pub const MIN_DATA_SIZE: u64 = 256 * MIB;

pub const LABEL_SYS: &str = "RACKDSYS";
pub const LABEL_SEED: &str = "RACKDSEED";
pub const LABEL_DATA: &str = "RACKDDATA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub bootable: bool,
    pub kind: u8,
    /// Byte offset and length (multiples of the sector size).
    pub start: u64,
    pub size: u64,
}

/// The three partitions for a disk of `disk_size` bytes.
pub fn partitions(disk_size: u64) -> Result<[Partition; 3], String> {
    if disk_size < DATA_START + MIN_DATA_SIZE {
        return Err(format!(
            "disk of {} MiB is too small (need at least {} MiB)",
            disk_size / MIB,
            (DATA_START + MIN_DATA_SIZE) / MIB
        ));
    }
    let data_size = (disk_size - DATA_START) / MIB * MIB;
    Ok([
        Partition {
            bootable: true,
            kind: 0x0c, // FAT32 LBA
            start: SYS_START,
            size: SYS_SIZE,
        },
        Partition {
            bootable: false,
            kind: 0x0e, // FAT16 LBA
            start: SEED_START,
            size: SEED_SIZE,
        },
        Partition {
            bootable: false,
            kind: 0x83, // Linux
            start: DATA_START,
            size: data_size,
        },
    ])
}

/// Writes the partition table and signature into a 512-byte MBR, keeping its boot code.
pub fn write_table(mbr: &mut [u8; 512], parts: &[Partition]) {
    for (i, p) in parts.iter().enumerate().take(4) {
        let e = &mut mbr[446 + i * 16..446 + (i + 1) * 16];
        e[0] = if p.bootable { 0x80 } else { 0 };
        // CHS fields unused (LBA only): the conventional "beyond 8 GiB" marker.
        e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[4] = p.kind;
        e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
        e[8..12].copy_from_slice(&((p.start / SECTOR) as u32).to_le_bytes());
        e[12..16].copy_from_slice(&((p.size / SECTOR) as u32).to_le_bytes());
    }
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
}

/// Reads the partition table of an MBR (None if there is no valid signature).
pub fn read_table(mbr: &[u8]) -> Option<Vec<Partition>> {
    if mbr.len() < 512 || mbr[510] != 0x55 || mbr[511] != 0xaa {
        return None;
    }
    Some(
        (0..4)
            .map(|i| &mbr[446 + i * 16..446 + (i + 1) * 16])
            .filter(|e| e[4] != 0)
            .map(|e| Partition {
                bootable: e[0] == 0x80,
                kind: e[4],
                start: u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64 * SECTOR,
                size: u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64 * SECTOR,
            })
            .collect(),
    )
}

/// Whether a disk's first megabyte shows it is in use (a partition table, a filesystem or any
/// non-zero byte): `install` refuses such a disk unless forced.
pub fn looks_used(first_mib: &[u8]) -> bool {
    first_mib.iter().any(|b| *b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_round_trips_and_keeps_boot_code() {
        let parts = partitions(2048 * MIB).unwrap();
        assert_eq!(parts[2].start, DATA_START);
        assert_eq!(parts[2].size, 2048 * MIB - DATA_START);
        let mut mbr = [0u8; 512];
        mbr[..4].copy_from_slice(b"boot");
        write_table(&mut mbr, &parts);
        assert_eq!(&mbr[..4], b"boot");
        assert_eq!(read_table(&mbr).unwrap(), parts.to_vec());
        assert!(read_table(&[0u8; 512]).is_none());
    }

    #[test]
    fn small_disks_are_refused_and_used_disks_detected() {
        assert!(partitions(100 * MIB).is_err());
        assert!(!looks_used(&vec![0u8; MIB as usize]));
        let mut d = vec![0u8; MIB as usize];
        d[4000] = 1;
        assert!(looks_used(&d));
    }
}
