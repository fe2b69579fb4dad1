//! The filesystem ioctls volumes need, which nix declares no wrapper for:
//! `FICLONE` (reflink a whole file) and `FIFREEZE`/`FITHAW` (hold every
//! writer of a filesystem while it is copied).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

nix::ioctl_write_int!(ficlone, 0x94, 9);
nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

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
