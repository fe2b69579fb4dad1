//! Persistent network namespaces: a namespace kept alive by a bind mount
//! of its nsfs file, as `ip netns add` does, but under paddock's own data
//! dir so that each server owns its own.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// `mount`'s absent file system type or data.
const NONE: Option<&str> = None;

/// Creates a fresh network namespace pinned at `path`. A short-lived
/// thread enters the new namespace and binds it: namespaces are per
/// thread, so the server's own threads never leave the host's.
pub fn create(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::File::create(path)?;
    let target = path.to_path_buf();
    let pinned = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)?;
        let own = Path::new("/proc/thread-self/ns/net");
        mount(Some(own), &target, NONE, MsFlags::MS_BIND, NONE)?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if let Err(e) = pinned {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Opens a TCP connection from inside the namespace pinned at `path` (to
/// its own loopback, say). A short-lived thread enters the namespace and
/// connects; the socket stays in that namespace after the thread ends.
pub fn connect_inside(
    path: &Path,
    addr: std::net::SocketAddr,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let ns = fs::File::open(path)?;
    std::thread::spawn(move || -> io::Result<std::net::TcpStream> {
        setns(&ns, CloneFlags::CLONE_NEWNET)?;
        std::net::TcpStream::connect_timeout(&addr, timeout)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// A reference to the namespace pinned at `path` (which keeps it past its
/// unpinning and its last process), if it is there.
pub fn hold(path: &Path) -> Option<OwnedFd> {
    fs::File::open(path).ok().map(OwnedFd::from)
}

/// Unpins and removes a namespace file; the namespace itself ends when its
/// last process does. Removing what is not there succeeds.
pub fn remove(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The namespace files under `dir`.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}
