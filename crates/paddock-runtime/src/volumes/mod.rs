//! Volumes on the host: each is a sparse ext4 image of exactly its size,
//! so the size is a hard limit (writes past it fail with ENOSPC inside the
//! VM) and the host disk only holds what was written. While some VM uses a
//! volume it is loop-mounted under the data dir, and the container
//! provider binds that mount into each VM.
//!
//! Layout under `volumes/<volume id>/`:
//! - `disk.img`: the live filesystem;
//! - `checkpoints/<checkpoint id>.img`: checkpoints, reflinked copies of
//!   `disk.img` where the data dir's filesystem can (btrfs, XFS), else
//!   sparse copies of its allocated blocks;
//! - `mnt/live`, `mnt/<checkpoint id>`: host mount points.
//!
//! XFS project quotas on a shared directory would avoid the images, but
//! need the data dir on XFS mounted with `prjquota`; an image works on any
//! host filesystem and makes checkpoints one file copy.

mod copy;
mod ext4;
mod files;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;
use async_trait::async_trait;
use paddock_core::error::{CoreError, RuntimeError};
use paddock_core::ids::{CheckpointId, VolumeId};
use paddock_core::volume_backend::{MountSource, Spooled, VolumeBackend, VolumeFile};

pub use copy::CopyKind;
use ext4::Ext4Error;

const LIVE: &str = "live";

pub struct Ext4Volumes {
    root: PathBuf,
}

fn host(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CoreError {
    let what = what.into();
    move |e| CoreError::Runtime(RuntimeError::host(what, e))
}

/// A file operation's failure as the core's error: the path's fault is
/// the caller's (422, 404, 409), the host's is a runtime error.
fn file_error(e: files::FileError) -> CoreError {
    use files::FileError as F;
    match e {
        F::BadPath(m) => CoreError::invalid("path", m),
        F::NotFound(p) => CoreError::not_found("file", p),
        F::Exists(p) => CoreError::Conflict(format!(
            "{p} already exists; overwrite it with overwrite=true"
        )),
        F::IsDirectory(p) => CoreError::FailedPrecondition(format!("{p} is a directory")),
        F::NotEmpty(p) => {
            CoreError::FailedPrecondition(format!("{p} is a directory that is not empty"))
        }
        F::Full => {
            CoreError::FailedPrecondition("the volume is full: grow it, or delete files".into())
        }
        e @ F::TooLarge(..) => CoreError::invalid("path", e.to_string()),
        F::Io { what, source } => CoreError::Runtime(RuntimeError::host(what, source)),
    }
}

fn tool(e: Ext4Error) -> CoreError {
    CoreError::Runtime(RuntimeError::Setup(e.to_string()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CoreError> + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Unavailable(format!("volume task failed: {e}")))?
}

fn mkdir_private(dir: &Path) -> Result<(), CoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(host(dir.display().to_string()))
}

impl Ext4Volumes {
    /// Volumes under `root` (created 0700 if missing).
    pub fn open(root: &Path) -> Result<Self, CoreError> {
        if root.to_str().is_none() {
            return Err(CoreError::invalid(
                "data_dir",
                "must be a UTF-8 path (it is passed to mount and e2fsprogs)",
            ));
        }
        mkdir_private(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn dir(&self, volume: &VolumeId) -> PathBuf {
        self.root.join(volume.as_str())
    }

    fn disk(&self, volume: &VolumeId) -> PathBuf {
        self.dir(volume).join("disk.img")
    }

    fn checkpoint_image(&self, volume: &VolumeId, c: &CheckpointId) -> PathBuf {
        self.dir(volume)
            .join("checkpoints")
            .join(format!("{}.img", c.as_str()))
    }

    fn mountpoint(&self, source: &MountSource) -> PathBuf {
        let name = source.checkpoint.as_ref().map_or(LIVE, |c| c.as_str());
        self.dir(&source.volume).join("mnt").join(name)
    }

    fn live(&self, volume: &VolumeId) -> MountSource {
        MountSource {
            volume: volume.clone(),
            checkpoint: None,
        }
    }

    /// Copies `src` over `dst` through a temporary file, so `dst` is
    /// either the old or the new content.
    async fn replace_with_copy(src: PathBuf, dst: PathBuf) -> Result<CopyKind, CoreError> {
        blocking(move || {
            let tmp = dst.with_extension("img.tmp");
            let _ = fs::remove_file(&tmp);
            let kind = copy::copy_image(&src, &tmp).map_err(host(format!(
                "copy {} to {}",
                src.display(),
                tmp.display()
            )))?;
            fs::rename(&tmp, &dst).map_err(host(dst.display().to_string()))?;
            Ok(kind)
        })
        .await
    }
}

/// Every host mount point under `root` that has something mounted.
fn mounted_under(root: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    for volume in fs::read_dir(root).into_iter().flatten().flatten() {
        let mnt = volume.path().join("mnt");
        for m in fs::read_dir(&mnt).into_iter().flatten().flatten() {
            let path = m.path();
            if ext4::is_mountpoint(&path) {
                out.push((
                    volume.file_name().to_string_lossy().into_owned(),
                    m.file_name().to_string_lossy().into_owned(),
                    path,
                ));
            }
        }
    }
    out
}

/// Unmounts every volume mount under `data_dir` (for `paddock purge`);
/// returns how many.
pub fn purge(data_dir: &Path) -> Result<usize, RuntimeError> {
    let mounts = mounted_under(&data_dir.join("volumes"));
    for (_, _, path) in &mounts {
        ext4::unmount(path).map_err(|e| RuntimeError::host(path.display().to_string(), e))?;
    }
    Ok(mounts.len())
}

#[async_trait]
impl VolumeBackend for Ext4Volumes {
    async fn create(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), CoreError> {
        let dir = self.dir(volume);
        mkdir_private(&dir)?;
        let tmp = dir.join("disk.img.tmp");
        let made = async {
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(host(tmp.display().to_string()))?;
            file.set_len(size_bytes / ext4::BLOCK * ext4::BLOCK)
                .map_err(host(tmp.display().to_string()))?;
            drop(file);
            ext4::mkfs(&tmp).await.map_err(tool)?;
            fs::rename(&tmp, self.disk(volume)).map_err(host(tmp.display().to_string()))
        }
        .await;
        if made.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    async fn resize(&self, volume: &VolumeId, size_bytes: u64) -> Result<(), CoreError> {
        let disk = self.disk(volume);
        if ext4::is_mountpoint(&self.mountpoint(&self.live(volume))) {
            return Err(CoreError::Conflict("the volume is mounted".into()));
        }
        let new_len = size_bytes / ext4::BLOCK * ext4::BLOCK;
        let old_len = fs::metadata(&disk)
            .map_err(host(disk.display().to_string()))?
            .len();
        ext4::fsck(&disk).await.map_err(tool)?;
        let set_len = |len: u64| {
            fs::OpenOptions::new()
                .write(true)
                .open(&disk)
                .and_then(|f| f.set_len(len))
                .map_err(host(disk.display().to_string()))
        };
        if new_len > old_len {
            set_len(new_len)?;
            if let Err(e) = ext4::resize(&disk, new_len).await {
                set_len(old_len)?;
                return Err(tool(e));
            }
        } else if new_len < old_len {
            ext4::resize(&disk, new_len).await.map_err(|e| {
                CoreError::Conflict(format!(
                    "the volume's content does not fit in {size_bytes} bytes ({e})"
                ))
            })?;
            set_len(new_len)?;
        }
        Ok(())
    }

    async fn remove(&self, volume: &VolumeId) -> Result<(), CoreError> {
        let dir = self.dir(volume);
        blocking(move || {
            for m in fs::read_dir(dir.join("mnt"))
                .into_iter()
                .flatten()
                .flatten()
            {
                ext4::unmount(&m.path()).map_err(host(m.path().display().to_string()))?;
            }
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(host(dir.display().to_string())(e))
                }
                _ => Ok(()),
            }
        })
        .await
    }

    async fn used_bytes(&self, volume: &VolumeId) -> Result<u64, CoreError> {
        let live = self.mountpoint(&self.live(volume));
        let disk = self.disk(volume);
        blocking(move || {
            if ext4::is_mountpoint(&live) {
                ext4::used_mounted(&live).map_err(host(live.display().to_string()))
            } else {
                ext4::used_unmounted(&disk).map_err(host(disk.display().to_string()))
            }
        })
        .await
    }

    async fn checkpoint(&self, volume: &VolumeId, c: &CheckpointId) -> Result<(), CoreError> {
        let disk = self.disk(volume);
        let image = self.checkpoint_image(volume, c);
        let live = self.mountpoint(&self.live(volume));
        let kind = blocking(move || {
            mkdir_private(image.parent().unwrap_or(Path::new("/")))?;
            // A mounted volume is frozen for the copy: its writers wait,
            // and the image on disk is a consistent filesystem.
            let frozen = if ext4::is_mountpoint(&live) {
                let dir = fs::File::open(&live).map_err(host(live.display().to_string()))?;
                sys::freeze(&dir).map_err(host(format!("freeze {}", live.display())))?;
                Some(dir)
            } else {
                None
            };
            let copied = copy::copy_image(&disk, &image);
            if let Some(dir) = &frozen {
                if let Err(e) = sys::thaw(dir) {
                    tracing::error!(path = %live.display(), error = %e, "could not thaw a volume");
                }
            }
            copied.map_err(host(format!("copy {}", disk.display())))
        })
        .await?;
        tracing::debug!(volume_id = %volume, checkpoint_id = %c, ?kind, "checkpoint copied");
        Ok(())
    }

    async fn remove_checkpoint(
        &self,
        volume: &VolumeId,
        c: &CheckpointId,
    ) -> Result<(), CoreError> {
        let source = MountSource {
            volume: volume.clone(),
            checkpoint: Some(c.clone()),
        };
        self.unmount(&source).await?;
        let image = self.checkpoint_image(volume, c);
        match fs::remove_file(&image) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(host(image.display().to_string())(e))
            }
            _ => Ok(()),
        }
    }

    async fn restore(&self, volume: &VolumeId, c: &CheckpointId) -> Result<(), CoreError> {
        self.unmount(&self.live(volume)).await?;
        Self::replace_with_copy(self.checkpoint_image(volume, c), self.disk(volume)).await?;
        Ok(())
    }

    async fn mount(&self, source: &MountSource) -> Result<PathBuf, CoreError> {
        let dir = self.mountpoint(source);
        if ext4::is_mountpoint(&dir) {
            return Ok(dir);
        }
        mkdir_private(&dir)?;
        let image = match &source.checkpoint {
            Some(c) => self.checkpoint_image(&source.volume, c),
            None => self.disk(&source.volume),
        };
        ext4::mount(&image, &dir, source.checkpoint.is_some())
            .await
            .map_err(tool)?;
        Ok(dir)
    }

    async fn unmount(&self, source: &MountSource) -> Result<(), CoreError> {
        let dir = self.mountpoint(source);
        blocking(move || ext4::unmount(&dir).map_err(host(dir.display().to_string()))).await
    }

    async fn spool(
        &self,
        volume: &VolumeId,
        mut data: paddock_core::exec::ByteStream,
        max_bytes: u64,
    ) -> Result<Spooled, CoreError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let dir = self.dir(volume).join("uploads");
        mkdir_private(&dir)?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}", std::process::id()));
        let mut spooled = Spooled { path, size: 0 };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spooled.path)
            .await
            .map_err(host("an upload's spool file"))?;
        while let Some(chunk) = data.next().await {
            let chunk = chunk
                .map_err(|e| CoreError::invalid("file", format!("the upload broke off: {e}")))?;
            spooled.size += chunk.len() as u64;
            if spooled.size > max_bytes {
                return Err(CoreError::FailedPrecondition(format!(
                    "the upload is larger than the volume ({max_bytes} bytes): grow it first"
                )));
            }
            file.write_all(&chunk)
                .await
                .map_err(host("an upload's spool file"))?;
        }
        file.flush().await.map_err(host("an upload's spool file"))?;
        Ok(spooled)
    }

    async fn list_files(
        &self,
        volume: &VolumeId,
        prefix: &str,
        recursive: bool,
        limit: usize,
    ) -> Result<Vec<VolumeFile>, CoreError> {
        let dir = self.mountpoint(&self.live(volume));
        let prefix = prefix.to_owned();
        blocking(move || files::list(&dir, &prefix, recursive, limit).map_err(file_error)).await
    }

    async fn read_file(
        &self,
        volume: &VolumeId,
        path: &str,
        max_bytes: u64,
    ) -> Result<Vec<u8>, CoreError> {
        let dir = self.mountpoint(&self.live(volume));
        let path = path.to_owned();
        blocking(move || files::read(&dir, &path, max_bytes).map_err(file_error)).await
    }

    async fn place_file(
        &self,
        volume: &VolumeId,
        upload: &Spooled,
        path: &str,
        overwrite: bool,
    ) -> Result<u64, CoreError> {
        let dir = self.mountpoint(&self.live(volume));
        let (source, path) = (upload.path.clone(), path.to_owned());
        blocking(move || files::place(&dir, &source, &path, overwrite).map_err(file_error)).await
    }

    async fn delete_file(&self, volume: &VolumeId, path: &str) -> Result<(), CoreError> {
        let dir = self.mountpoint(&self.live(volume));
        let path = path.to_owned();
        blocking(move || files::delete(&dir, &path).map_err(file_error)).await
    }

    async fn unmount_all_except(&self, keep: &[MountSource]) -> Result<usize, CoreError> {
        let keep: Vec<PathBuf> = keep.iter().map(|s| self.mountpoint(s)).collect();
        let root = self.root.clone();
        blocking(move || {
            let mut n = 0;
            for (_, _, path) in mounted_under(&root) {
                if !keep.contains(&path) {
                    ext4::unmount(&path).map_err(host(path.display().to_string()))?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }
}
