//! Mount injection: binds a host directory into a running sandbox, or
//! takes it out again. The server runs this as `paddock-agent attach` and
//! `paddock-agent detach`, short-lived single-threaded processes: `setns`
//! into a mount namespace refuses a multi-threaded caller, and the
//! sandbox's own agent cannot mount anything (it has no CAP_SYS_ADMIN and
//! its seccomp filter refuses mount calls).
//!
//! The tree is cloned from the host mount with `open_tree`, made read-only
//! (when asked), nosuid and nodev while still detached, and only then moved
//! into the sandbox, so no process there ever sees it writable by mistake.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0} is not an absolute path")]
    BadTarget(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InjectError {
    let what = what.into();
    move |source| InjectError::Io { what, source }
}

fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> InjectError {
    let what = what.into();
    move |e| InjectError::Io {
        what,
        source: std::io::Error::from(e),
    }
}

fn c_path(path: &str) -> Result<CString, InjectError> {
    CString::new(path).map_err(|_| InjectError::BadTarget(path.to_owned()))
}

/// Enters the mount namespace of `pid`; the caller's root and working
/// directory become that namespace's root.
fn enter_mount_namespace(pid: i32) -> Result<(), InjectError> {
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = File::open(&ns_path).map_err(io(format!("open {ns_path}")))?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).map_err(errno("enter the sandbox's mount namespace"))
}

/// The user namespace of the sandbox whose PID 1 is `pid`, when it has
/// one of its own: a volume is then idmapped through it, so its files
/// are stored with the sandbox's own view of their owners (and move
/// between sandboxes unchanged).
fn sandbox_user_namespace(pid: i32) -> Result<Option<File>, InjectError> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/{pid}/ns/user");
    let ns = File::open(&path).map_err(io(format!("open {path}")))?;
    let theirs = ns.metadata().map_err(io(format!("stat {path}")))?;
    let ours = std::fs::metadata("/proc/self/ns/user").map_err(io("stat our user namespace"))?;
    Ok((theirs.ino() != ours.ino() || theirs.dev() != ours.dev()).then_some(ns))
}

/// Binds the host directory `source` at `target` inside the sandbox whose
/// PID 1 is `pid`, creating `target` if it is missing.
pub fn attach(pid: i32, source: &Path, target: &str, read_only: bool) -> Result<(), InjectError> {
    if !target.starts_with('/') {
        return Err(InjectError::BadTarget(target.to_owned()));
    }
    let source_c = c_path(&source.to_string_lossy())?;
    let tree = sys::open_tree_clone(&source_c)
        .map_err(io(format!("clone the mount at {}", source.display())))?;
    let mut attrs = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= sys::MOUNT_ATTR_RDONLY;
    }
    let userns = sandbox_user_namespace(pid)?;
    sys::set_mount_attrs(tree.as_fd(), attrs, userns.as_ref().map(|ns| ns.as_fd()))
        .map_err(io("set the mount's attributes"))?;
    enter_mount_namespace(pid)?;
    // Paths now resolve inside the sandbox: its symlinks cannot lead out.
    std::fs::create_dir_all(target).map_err(io(format!("create {target} in the sandbox")))?;
    sys::move_mount_to(tree.as_fd(), &c_path(target)?)
        .map_err(io(format!("mount at {target} in the sandbox")))
}

/// Unmounts what is mounted at `target` inside the sandbox whose PID 1 is
/// `pid`. Nothing mounted there is not an error.
pub fn detach(pid: i32, target: &str) -> Result<(), InjectError> {
    if !target.starts_with('/') {
        return Err(InjectError::BadTarget(target.to_owned()));
    }
    enter_mount_namespace(pid)?;
    match umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(format!("unmount {target} in the sandbox"))(e)),
    }
}
