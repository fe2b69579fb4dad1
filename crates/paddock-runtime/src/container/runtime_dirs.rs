//! Sandboxes' runtime state on a tmpfs of the server's: `DATA/run/<vm>/`
//! holds what lives only as long as the sandbox's processes (its mount
//! points, the agent's socket and log, the boot config, the `resolv.conf`
//! it is given and its loop device's record). What must outlive a reboot
//! (its disk image, its id range) stays in its run dir on the data dir,
//! as container runtimes keep `/run` apart from `/var/lib`.
//!
//! Why: a sandbox made and deleted about a dozen such files on the data
//! dir's file system, and ext4 without a journal (this project's hosts)
//! skips every inode freed in the last seconds when it allocates one,
//! checking each in the buffer cache: under churn that search was the
//! largest single item of the host's CPU (17%), and churn with the data
//! dir on a tmpfs ran 25% faster.
//!
//! The tmpfs is mounted on the host (not in the server's own namespace)
//! so that it outlives a server restart along with the sandboxes, and is
//! found again by the next server; `paddock purge` unmounts it. What the
//! agents write there (their logs) is charged to the sandbox's own memory
//! cgroup, so it is bounded by the sandbox's memory, where the data dir
//! bounded it by nothing.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The tmpfs under the data dir.
const DIR: &str = "run";

/// The runtime root of the server whose data dir is `data_dir`.
pub(crate) fn root(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// Mounts the runtime tmpfs under `data_dir` unless a server before this
/// one did (a restart: its sandboxes' sockets are there); its path.
pub(crate) fn mount_under(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = root(data_dir);
    std::fs::create_dir_all(&dir)?;
    if is_mount_point(&dir)? {
        return Ok(dir);
    }
    mount(
        Some("tmpfs"),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=700"),
    )
    .map_err(io::Error::from)?;
    Ok(dir)
}

/// Unmounts the runtime tmpfs under `data_dir` (for `purge`, once every
/// sandbox is gone) and removes its mount point.
pub(crate) fn unmount_under(data_dir: &Path) {
    let dir = root(data_dir);
    if is_mount_point(&dir).unwrap_or(false) {
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
}

/// Whether `dir` is the root of a file system mounted over its parent's.
fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_once_found_again_and_unmounted_by_purge() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let data = tempfile::tempdir().expect("tempdir");
        let dir = mount_under(data.path()).expect("mount");
        assert!(is_mount_point(&dir).expect("stat"));
        let kind = nix::sys::statfs::statfs(&dir).expect("statfs");
        assert_eq!(kind.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        std::fs::write(dir.join("kept"), "x").expect("write");
        // A second server finds the first one's tmpfs, and what is in it.
        assert_eq!(mount_under(data.path()).expect("again"), dir);
        assert!(dir.join("kept").exists());
        unmount_under(data.path());
        assert!(!dir.exists());
    }
}
