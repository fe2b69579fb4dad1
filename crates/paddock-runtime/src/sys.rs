//! The ioctls the runtime needs, which nix declares no wrapper for:
//! `FICLONE` (reflink a whole file) and `FIFREEZE`/`FITHAW` (hold every
//! writer of a filesystem while it is copied) for volumes, and
//! `LOOP_CTL_REMOVE` (a sandbox's freed loop device goes with it); and
//! `pidfd_open`, which neither wraps.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

nix::ioctl_write_int!(ficlone, 0x94, 9);
nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);
nix::ioctl_write_int_bad!(loop_ctl_remove, 0x4C81);

/// Makes `dst` share `src`'s blocks (copy-on-write). Fails with
/// `EOPNOTSUPP`/`EXDEV`/`EINVAL` where the filesystem cannot.
pub fn reflink(src: impl AsFd, dst: impl AsFd) -> io::Result<()> {
    let src_fd = src.as_fd().as_raw_fd() as libc::c_ulong;
    // SAFETY: both descriptors are live for the call; FICLONE takes the
    // source descriptor by value.
    unsafe { ficlone(dst.as_fd().as_raw_fd(), src_fd) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Freezes the filesystem that `dir` (an open directory on it) belongs to.
pub fn freeze(dir: impl AsFd) -> io::Result<()> {
    let mut unused: libc::c_int = 0;
    // SAFETY: dir is live; the kernel ignores the argument.
    unsafe { fifreeze(dir.as_fd().as_raw_fd(), &mut unused) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Thaws what [`freeze`] froze.
pub fn thaw(dir: impl AsFd) -> io::Result<()> {
    let mut unused: libc::c_int = 0;
    // SAFETY: dir is live; the kernel ignores the argument.
    unsafe { fithaw(dir.as_fd().as_raw_fd(), &mut unused) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Removes loop device `n` if it is free: bound to no file and opened by
/// no one. One that is taken again (the kernel handed the freed number
/// to another sandbox, which removes it in its turn) or already gone is
/// left be; returns whether it was removed.
///
/// The kernel never removes a loop device by itself, and every one that
/// exists is a line of `/proc/diskstats`, which lxcfs reads whole for
/// each sandbox's view of it: after 5,000 sandboxes had come and gone,
/// one read cost 20-60 ms of kernel time.
pub fn remove_free_loop(n: u32) -> io::Result<bool> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // SAFETY: control is live; LOOP_CTL_REMOVE takes the device number
    // by value and fails with EBUSY for a bound or opened device.
    match unsafe { loop_ctl_remove(control.as_raw_fd(), n as libc::c_int) } {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EBUSY | nix::errno::Errno::ENODEV) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// A pidfd of process `pid`: readable once it exits, and it keeps
/// referring to that process whatever later reuses the pid.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (or
    // -1), which nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: a fresh fd, owned from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
