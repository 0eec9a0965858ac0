//! The IPMI commands rackd uses, as (netfn, cmd, data) requests and parsed responses: Get
//! Chassis Status, Chassis Control, Set System Boot Options (boot flags), Get Device ID.
//! Pure; must not depend on sessions or sockets.

use crate::bmc::{BmcInfo, BootDevice, PowerState};

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;
pub const CMD_CHASSIS_STATUS: u8 = 0x01;
pub const CMD_CHASSIS_CONTROL: u8 = 0x02;
pub const CMD_SET_BOOT_OPTIONS: u8 = 0x08;
pub const CMD_GET_DEVICE_ID: u8 = 0x01;

/// Chassis Control data byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown = 0,
    PowerUp = 1,
    PowerCycle = 2,
    HardReset = 3,
}

impl ChassisControl {
    pub fn request(self) -> (u8, u8, Vec<u8>) {
        (NETFN_CHASSIS, CMD_CHASSIS_CONTROL, vec![self as u8])
    }
}

pub fn chassis_status() -> (u8, u8, Vec<u8>) {
    (NETFN_CHASSIS, CMD_CHASSIS_STATUS, vec![])
}

/// Current power state from a Get Chassis Status response (data after the completion code).
pub fn parse_chassis_status(data: &[u8]) -> PowerState {
    match data.first() {
        Some(b) if b & 0x01 != 0 => PowerState::On,
        Some(_) => PowerState::Off,
        None => PowerState::Unknown,
    }
}

/// Set System Boot Options, parameter 5 (boot flags), marked valid.
pub fn set_boot_device(dev: BootDevice, persistent: bool, efi: bool) -> (u8, u8, Vec<u8>) {
    let mut flags1 = 0x80;
    if persistent {
        flags1 |= 0x40;
    }
    if efi {
        flags1 |= 0x20;
    }
    let device = match dev {
        BootDevice::Pxe => 0x04,
        BootDevice::Disk => 0x08,
    };
    (
        NETFN_CHASSIS,
        CMD_SET_BOOT_OPTIONS,
        vec![0x05, flags1, device, 0x00, 0x00, 0x00],
    )
}

pub fn get_device_id() -> (u8, u8, Vec<u8>) {
    (NETFN_APP, CMD_GET_DEVICE_ID, vec![])
}

pub fn parse_device_id(d: &[u8]) -> Option<BmcInfo> {
    if d.len() < 11 {
        return None;
    }
    Some(BmcInfo {
        manufacturer_id: u32::from_le_bytes([d[6], d[7], d[8], 0]),
        product_id: u16::from_le_bytes([d[9], d[10]]),
        firmware: format!("{}.{:02x}", d[2] & 0x7f, d[3]),
        ipmi_version: format!("{}.{}", d[4] & 0x0f, d[4] >> 4),
    })
}

/// Generic completion code meanings (IPMI v2.0 §5.2), for error text.
pub fn completion_text(cc: u8) -> &'static str {
    match cc {
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc2 => "command invalid for given LUN",
        0xc3 => "timeout while processing command",
        0xc4 => "out of space",
        0xc5 => "reservation canceled or invalid",
        0xc6 => "request data truncated",
        0xc7 => "request data length invalid",
        0xc8 => "request data field length limit exceeded",
        0xc9 => "parameter out of range",
        0xca => "cannot return number of requested data bytes",
        0xcb => "requested sensor, data, or record not present",
        0xcc => "invalid data field in request",
        0xcd => "command illegal for specified sensor or record type",
        0xce => "command response could not be provided",
        0xcf => "cannot execute duplicated request",
        0xd0 => "SDR repository in update mode",
        0xd1 => "device in firmware update mode",
        0xd2 => "BMC initialization in progress",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege level",
        0xd5 => "command not supported in present state",
        0xd6 => "command sub-function disabled or unavailable",
        _ => "unspecified error",
    }
}
