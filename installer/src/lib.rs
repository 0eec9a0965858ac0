//! rackd-installer: builds the bootable appliance image and installs it to a disk (issue 5).
//!
//! Planned: `build` (kernel + initramfs with rackd + bootloader + persistent data partition),
//! seed configuration (kernel command line / TOML seed partition), `install --disk`, and
//! upgrades that keep the data partition. Must not depend on the node runtime.
//!
//! Nothing is implemented yet; this crate exists so the workspace layout matches the design.
