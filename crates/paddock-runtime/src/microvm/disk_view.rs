//! A read-only view, on the host, of a microVM's writable disk: how a
//! snapshot reads what a guest on block devices changed.
//!
//! The disk's file system is the guest's to write, so the host kernel
//! never mounts it: a crafted ext4 image would be parsed by the host's
//! kernel. `fuse2fs` (e2fsprogs) reads it in user space instead and
//! serves it over FUSE, read-only and without replaying its journal, to
//! root alone (no `allow_other`). The guest's disk must be clean on the
//! device while the view is open: its agent freezes it first (`FIFREEZE`
//! flushes the journal), or it was frozen when the VM was saved.

use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_core::error::RuntimeError;
use paddock_core::model::{ChangedTree, Vm, VmStatus};

use super::{container, MicroVmProvider};
use crate::agent_client;

/// The view's mountpoint in the run dir.
const VIEW_DIR: &str = "disk-view";
/// In the run dir while the saved guest's disk is frozen (it was frozen
/// for the save; the resumed guest thaws it).
const FROZEN_MARK: &str = "disk-frozen";
/// How long the guest may take to flush and freeze its disk.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(60);
/// Where the guest's root overlay keeps its upper dir on the disk.
const UPPER_ON_DISK: &str = "upper";

impl MicroVmProvider {
    /// Holds a block-root microVM's changes: a running guest freezes its
    /// disk; a suspended one's was frozen when it was saved. The view
    /// stays mounted until [`MicroVmProvider::release_disk`].
    pub(super) async fn hold_disk(
        &self,
        vm: &Vm,
        run: &Path,
    ) -> Result<Vec<ChangedTree>, RuntimeError> {
        let running = vm.status == VmStatus::Running;
        if running {
            freeze(run, true).await?;
        } else if !run.join(FROZEN_MARK).exists() {
            return Err(RuntimeError::Unsupported(
                "this microVM was suspended without its disk frozen (by an older server); \
                 resume it to snapshot it"
                    .into(),
            ));
        }
        match open(run, &run.join(crate::container::disks::IMAGE)).await {
            Ok(view) => Ok(vec![ChangedTree {
                dir: view.join(UPPER_ON_DISK),
                at: String::new(),
                // The guest's kernel stores its own ids.
                ids: None,
            }]),
            Err(e) => {
                if running {
                    let _ = freeze(run, false).await;
                }
                Err(e)
            }
        }
    }

    /// Ends [`MicroVmProvider::hold_disk`]: the view goes, a running
    /// guest's disk thaws.
    pub(super) async fn release_disk(&self, vm: &Vm, run: &Path) -> Result<(), RuntimeError> {
        let closed = close(run).await;
        if vm.status == VmStatus::Running {
            freeze(run, false).await?;
        }
        closed
    }
}

/// Has the guest of the run dir `run` freeze (or thaw) its disk.
pub(super) async fn freeze(run: &Path, frozen: bool) -> Result<(), RuntimeError> {
    let socket = container::agent_socket(run)?;
    tokio::time::timeout(FREEZE_TIMEOUT, agent_client::freeze_disk(&socket, frozen))
        .await
        .map_err(|_| {
            RuntimeError::Agent(format!(
                "the guest did not {} its disk within {}s",
                if frozen { "freeze" } else { "thaw" },
                FREEZE_TIMEOUT.as_secs()
            ))
        })?
}

/// Freezes a running guest's disk for its save, and marks it so.
pub(super) async fn freeze_for_save(run: &Path) -> Result<(), RuntimeError> {
    freeze(run, true).await?;
    let mark = run.join(FROZEN_MARK);
    if let Err(e) = std::fs::write(&mark, b"") {
        let _ = freeze(run, false).await;
        return Err(RuntimeError::host(mark.display().to_string(), e));
    }
    Ok(())
}

/// Thaws the disk of a guest that was frozen for a save: after a save
/// that failed (the guest runs on), or once the guest is resumed. A
/// guest saved before disks were frozen has no mark, and nothing to thaw.
pub(super) async fn thaw_after_save(run: &Path) -> Result<(), RuntimeError> {
    let mark = run.join(FROZEN_MARK);
    if !mark.exists() {
        return Ok(());
    }
    freeze(run, false).await?;
    std::fs::remove_file(&mark).map_err(|e| RuntimeError::host(mark.display().to_string(), e))
}
/// How long `fuse2fs` may take to open the image and mount it.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the view of the run dir `run`'s disk is mounted.
fn view_dir(run: &Path) -> PathBuf {
    run.join(VIEW_DIR)
}

/// Mounts the view of `image` at [`view_dir`]`(run)`, first taking down
/// one a crashed server may have left there.
pub(super) async fn open(run: &Path, image: &Path) -> Result<PathBuf, RuntimeError> {
    let at = view_dir(run);
    close(run).await?;
    std::fs::create_dir_all(&at).map_err(|e| RuntimeError::host(at.display().to_string(), e))?;
    let mounting = tokio::process::Command::new("fuse2fs")
        .arg(image)
        .arg(&at)
        .args(["-o", "ro,norecovery"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let mounted = match tokio::time::timeout(MOUNT_TIMEOUT, mounting).await {
        Err(_) => Err(RuntimeError::Setup(format!(
            "fuse2fs did not mount the disk within {}s",
            MOUNT_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(RuntimeError::Unsupported(
            "reading a microVM's disk needs fuse2fs (Debian: apt-get install fuse2fs)".into(),
        )),
        Ok(Err(e)) => Err(RuntimeError::host("run fuse2fs", e)),
        // fuse2fs returns once the mount is up (it then serves as a
        // daemon), but answers 0 on some failures: the mount is the proof.
        Ok(Ok(out)) if out.status.success() && is_mounted(&at) => Ok(()),
        Ok(Ok(out)) => Err(RuntimeError::Setup(format!(
            "fuse2fs could not open the disk: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    };
    if let Err(e) = mounted {
        // Whatever it got to: a mount that came up late, the directory.
        let _ = close(run).await;
        return Err(e);
    }
    Ok(at)
}

/// Unmounts the view of the run dir `run`, if it is mounted; its daemon
/// exits with it.
pub(super) async fn close(run: &Path) -> Result<(), RuntimeError> {
    let at = view_dir(run);
    tokio::task::spawn_blocking(move || {
        if is_mounted(&at) {
            use nix::mount::{umount2, MntFlags};
            // A reader that still holds a file open (a packer killed
            // mid-way) must not keep it: detach, the daemon ends when the
            // last one closes.
            umount2(&at, MntFlags::empty())
                .or_else(|_| umount2(&at, MntFlags::MNT_DETACH))
                .map_err(|e| RuntimeError::host(format!("unmount {}", at.display()), e.into()))?;
        }
        match std::fs::remove_dir(&at) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::host(at.display().to_string(), e))
            }
            _ => Ok(()),
        }
    })
    .await
    .map_err(|e| RuntimeError::Setup(format!("unmount the disk view: {e}")))?
}

/// Whether a FUSE file system is mounted at `at` (one whose daemon died
/// answers `ENOTCONN`, and is still mounted).
fn is_mounted(at: &Path) -> bool {
    match nix::sys::statfs::statfs(at) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC,
        Err(e) => e == nix::errno::Errno::ENOTCONN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_a_view() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(!is_mounted(dir.path()));
        assert!(!is_mounted(&dir.path().join("absent")));
    }
}
