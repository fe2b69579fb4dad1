//! The sandbox's own user namespace: sandbox root is not host root.
//!
//! Each sandbox gets a range of host ids ([`IdMap`]): sandbox uid/gid `n`
//! is host id `host_base + n`. Everything privileged about the sandbox
//! (its mounts, its network and uts namespaces, `/proc`, `/sys`) is set
//! up by the boot helper as host root *before* PID 1 enters the
//! namespace, so those namespaces stay owned by the host's user namespace
//! and nothing inside can change them, whatever capability it holds
//! within its own.
//!
//! The image layers stay owned by host root on disk; PID 1 sees them
//! through idmapped mounts (`MOUNT_ATTR_IDMAP`) of this namespace, so an
//! image's files look as they should inside. What the sandbox writes lands
//! in its overlay upper dir owned by its mapped host ids.

use std::fs;

pub use paddock_agent_protocol::config::IdMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

use super::{nix_step, step, BootError};
use crate::sys;

/// Makes a user namespace with `map` and returns a descriptor of it.
///
/// A process cannot map ids it does not own into a namespace it made
/// itself, so a child unshares the namespace and waits while this
/// (privileged) process writes its maps; the descriptor then keeps the
/// namespace alive after the child exits.
pub(super) fn create(map: IdMap) -> Result<OwnedFd, BootError> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(nix_step("create the user namespace pipe"))?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(nix_step("create the user namespace pipe"))?;
    let child = match sys::fork().map_err(step("fork the user namespace holder"))? {
        sys::Forked::Child => {
            drop(ready_r);
            drop(done_w);
            let code = match unshare(CloneFlags::CLONE_NEWUSER) {
                Ok(()) => {
                    let _ = fs::File::from(ready_w).write_all(b"k");
                    // Held until the parent has the namespace's descriptor.
                    let _ = fs::File::from(done_r).read(&mut [0u8; 1]);
                    0
                }
                Err(_) => 1,
            };
            sys::exit_now(code);
        }
        sys::Forked::Parent { child } => child,
    };
    drop(ready_w);
    drop(done_r);
    let result = (|| {
        let mut ack = [0u8; 1];
        let n = fs::File::from(ready_r)
            .read(&mut ack)
            .map_err(step("wait for the user namespace"))?;
        if n == 0 {
            return Err(BootError::Child(
                "could not create a user namespace (is user.max_user_namespaces 0?)".into(),
            ));
        }
        let line = map.map_line();
        for file in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{child}/{file}"), &line)
                .map_err(step(format!("write the sandbox's {file}")))?;
        }
        let ns = fs::File::open(format!("/proc/{child}/ns/user"))
            .map_err(step("open the sandbox's user namespace"))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(done_w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    result
}

/// Moves this (single-threaded) process into the user namespace `ns` as
/// its root: host id `host_base`, no supplementary groups, and every
/// capability *within that namespace only*.
pub(super) fn enter(ns: &OwnedFd) -> Result<(), BootError> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(nix_step("enter the sandbox's user namespace"))?;
    setgroups(&[]).map_err(nix_step("drop supplementary groups"))?;
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(nix_step("become the sandbox's root group"))?;
    let root = Uid::from_raw(0);
    setresuid(root, root, root).map_err(nix_step("become the sandbox's root"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_maps_the_whole_range() {
        let map = IdMap {
            host_base: 1 << 20,
            count: 65536,
        };
        assert_eq!(map.map_line(), "0 1048576 65536\n");
    }
}
