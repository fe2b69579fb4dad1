//! The one system call neither std nor nix wraps for this crate: binding
//! a packet socket to an interface (`bind` with a `sockaddr_ll`), which
//! is how a VM's connections are watched on its host-side veth.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;

/// Binds packet socket `fd` to the interface with index `ifindex`, for
/// frames of every protocol.
pub fn bind_packet_socket(fd: &OwnedFd, ifindex: i32) -> std::io::Result<()> {
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket we own; `addr` is a fully initialized
    // `sockaddr_ll` that outlives the call, and `len` is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Registers `fd` with the runtime's reactor, for waiting on it.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the descriptor is owned by the `AsyncFd` from here on: it is
    // registered once, not closed while registered, and deregistered
    // before it is closed when the `AsyncFd` drops.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}
