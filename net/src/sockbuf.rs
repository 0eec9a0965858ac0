//! Receive buffers sized for a boot storm.
//!
//! When a rack powers on, hundreds of DHCP DISCOVERs or TFTP read requests reach one socket
//! within milliseconds. Linux's default receive buffer (`net.core.rmem_default`, ~208 KiB)
//! holds only a few hundred such datagrams (each costs a full buffer's truesize), so the rest
//! are dropped and those clients wait out their first retransmission timeout. The request
//! sockets therefore ask for [`STORM_RCVBUF`]: with `SO_RCVBUFFORCE` when the node may
//! (CAP_NET_ADMIN, as the appliance runs), else `SO_RCVBUF`, which the kernel caps at
//! `net.core.rmem_max`.

use std::os::fd::AsFd;

use nix::sys::socket::{setsockopt, sockopt};

/// Receive buffer asked for on request sockets (the kernel doubles it for bookkeeping).
pub const STORM_RCVBUF: usize = 4 << 20;

/// Raise `sock`'s receive buffer to `bytes` as far as allowed; the size the kernel reports.
pub fn enlarge_receive_buffer<S: AsFd>(sock: &S, bytes: usize) -> usize {
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(sock, sockopt::RcvBuf, &bytes);
    }
    nix::sys::socket::getsockopt(sock, sockopt::RcvBuf).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_grows_past_the_default() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = nix::sys::socket::getsockopt(&s, sockopt::RcvBuf).unwrap();
        let after = enlarge_receive_buffer(&s, STORM_RCVBUF);
        assert!(after >= before, "{before} -> {after}");
        // As root (the test machines and the appliance), the full size is granted.
        if nix::unistd::geteuid().is_root() {
            assert!(after >= STORM_RCVBUF, "{after}");
        }
    }
}
