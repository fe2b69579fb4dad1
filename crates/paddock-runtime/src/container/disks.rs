//! Sandboxes' disks: each sandbox's writable layer (the overlays' upper
//! and work dirs) lives on an ext4 filesystem of its own, a sparse image
//! in its run dir (`disk.img`) whose size is the sandbox's disk limit.
//! Writing past it fails with ENOSPC inside the sandbox; the host's free
//! space and other sandboxes are untouched. The image is mounted only
//! inside the sandbox's mount namespace (by `paddock-agent`), on a loop
//! device that goes with the mount, so nothing of it is on the host's
//! mount table.
//!
//! Formatting costs ~20 ms and a process, so each size is formatted once,
//! as a template (`DATA/disks/template-<MiB>-<kind>.img`), and every disk
//! is a sparse copy of its template: only the ~240 KiB the format wrote
//! are copied (extent by extent, `SEEK_DATA`/`SEEK_HOLE` and
//! `copy_file_range`). The format leaves out the blocks reserved for
//! growing the file system online (`^resize_inode`), which a sandbox's
//! disk never does: at a 10 GiB disk they were 4 MiB of the 4.3 MiB each
//! copy wrote and flushed, about a tenth of the host's CPU under churn. Images of the default size
//! are also made ahead of demand in `DATA/disks/pool/` and renamed into a
//! run dir when a sandbox starts (a rename on the same filesystem is
//! O(1)). ext4 does not mind copies sharing a filesystem UUID.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use paddock_core::RuntimeError;

/// The image file in a sandbox's run dir.
pub const IMAGE: &str = "disk.img";
/// Where the image is mounted, inside the sandbox's mount namespace.
pub const MOUNTPOINT: &str = "disk";
/// Images of the default size kept ready.
const POOL_TARGET: usize = 4;
/// Which format a template was made with (part of its name): templates
/// of another are removed at open.
const TEMPLATE_KIND: &str = "noresize";

#[derive(Debug)]
pub struct Disks {
    dir: PathBuf,
    pool: PathBuf,
    default_mb: u32,
    refilling: AtomicBool,
    /// Serializes making a template (each size is made once).
    templates: tokio::sync::Mutex<()>,
}

fn host_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::host(what, e)
}

impl Disks {
    /// The pool under `data_dir`, emptied of images a crash left half
    /// made.
    pub fn open(data_dir: &Path, default_mb: u32) -> Result<Self, RuntimeError> {
        let dir = data_dir.join("disks");
        let pool = dir.join("pool");
        fs::create_dir_all(&pool).map_err(host_err(pool.display().to_string()))?;
        for d in [&dir, &pool] {
            for entry in fs::read_dir(d).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old_template = name.starts_with("template-")
                    && !name.ends_with(&format!("-{TEMPLATE_KIND}.img"));
                if name.starts_with(".tmp-") || old_template {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            dir,
            pool,
            default_mb,
            refilling: AtomicBool::new(false),
            templates: tokio::sync::Mutex::new(()),
        })
    }

    /// Gives the run dir `run` a disk of `size_mb` unless it has one
    /// (a sandbox stopped with its files keeps its disk): from the pool
    /// when it is of the default size, else formatted now.
    pub async fn provide(self: &Arc<Self>, run: &Path, size_mb: u32) -> Result<(), RuntimeError> {
        let image = run.join(IMAGE);
        if image.exists() {
            return Ok(());
        }
        let taken = size_mb == self.default_mb && self.take(&image);
        if size_mb == self.default_mb {
            self.refill();
        }
        if !taken {
            let tmp = run.join(format!(".{IMAGE}.tmp"));
            self.make(&tmp, size_mb, Cache::Keep).await?;
            fs::rename(&tmp, &image).map_err(host_err(image.display().to_string()))?;
        }
        Ok(())
    }

    /// A fresh disk of `size_mb` at `path`: a sparse copy of the size's
    /// template, formatted first if this is the size's first disk.
    async fn make(&self, path: &Path, size_mb: u32, cache: Cache) -> Result<(), RuntimeError> {
        let template = self.dir.join(template_name(size_mb));
        if !template.exists() {
            let _made = self.templates.lock().await;
            if !template.exists() {
                let tmp = self.dir.join(format!(".tmp-template-{size_mb}.img"));
                format(&tmp, size_mb).await?;
                fs::rename(&tmp, &template).map_err(host_err(template.display().to_string()))?;
            }
        }
        let (from, to) = (template, path.to_path_buf());
        tokio::task::spawn_blocking(move || sparse_copy(&from, &to, cache))
            .await
            .map_err(|e| RuntimeError::Setup(format!("copy a disk: {e}")))?
            .map_err(host_err(path.display().to_string()))
    }

    /// The images of the default size waiting in the pool.
    fn pooled(&self) -> impl Iterator<Item = fs::DirEntry> {
        let prefix = format!("{}-", self.default_mb);
        fs::read_dir(&self.pool)
            .into_iter()
            .flatten()
            .flatten()
            .filter(move |e| e.file_name().to_string_lossy().starts_with(&prefix))
    }

    /// Moves a pooled image to `image`; false when the pool is empty.
    fn take(&self, image: &Path) -> bool {
        self.pooled()
            // Another start may take the same one first: then the next.
            .any(|e| fs::rename(e.path(), image).is_ok())
    }

    /// Tops the pool up in the background, one refill at a time.
    fn refill(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let prefix = format!("{}-", this.default_mb);
            loop {
                let ready = this.pooled().count();
                if ready >= POOL_TARGET {
                    break;
                }
                let name = format!("{}{:016x}.img", prefix, rand::random::<u64>());
                let tmp = this.pool.join(format!(".tmp-{name}"));
                let made = this
                    .make(&tmp, this.default_mb, Cache::Drop)
                    .await
                    .and_then(|()| {
                        fs::rename(&tmp, this.pool.join(&name))
                            .map_err(host_err(tmp.display().to_string()))
                    });
                if let Err(e) = made {
                    let _ = fs::remove_file(&tmp);
                    tracing::warn!(error = %e, "could not make a sandbox disk ahead of demand");
                    break;
                }
            }
            this.refilling.store(false, Ordering::Release);
        });
    }
}

fn template_name(size_mb: u32) -> String {
    format!("template-{size_mb}-{TEMPLATE_KIND}.img")
}

/// What a disk copy leaves in the host's page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// Nothing: the copy is written out and its pages dropped. For disks
    /// made ahead of demand: the sandbox's loop device does direct I/O,
    /// around the host's page cache, so cached pages of the copy would
    /// only crowd it (4 MiB a disk, and thousands of disks).
    Drop,
    /// Whatever the kernel keeps: for a disk a create waits for, which
    /// must not wait for the writeback too.
    Keep,
}

/// Copies the sparse file `from` to a new file `to` of the same length,
/// holes kept: only the extents that hold data are read and written.
fn sparse_copy(from: &Path, to: &Path, cache: Cache) -> std::io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let src = fs::File::open(from)?;
    let len = i64::try_from(src.metadata()?.len()).map_err(std::io::Error::other)?;
    let dst = fs::File::create(to)?;
    dst.set_len(len as u64)?;
    let mut offset = 0i64;
    while offset < len {
        let data = match lseek(&src, offset, Whence::SeekData) {
            Ok(d) => d,
            // No data past `offset`: the rest is a hole.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(&src, data, Whence::SeekHole)?;
        let (mut from_at, mut to_at) = (data, data);
        while from_at < hole {
            let want = (hole - from_at) as usize;
            let n = nix::fcntl::copy_file_range(
                &src,
                Some(&mut from_at),
                &dst,
                Some(&mut to_at),
                want,
            )?;
            if n == 0 {
                break;
            }
        }
        offset = hole;
    }
    // A direct read of a range still dirty in the page cache writes it
    // out first, so the sandbox reads the copy either way.
    if cache == Cache::Keep {
        return Ok(());
    }
    dst.sync_data()?;
    nix::fcntl::posix_fadvise(
        &dst,
        0,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )?;
    Ok(())
}

/// Formats a sparse ext4 image of `size_mb` at `path`, root-owned (the
/// sandbox's own directories on it are made by the agent).
async fn format(path: &Path, size_mb: u32) -> Result<(), RuntimeError> {
    let file = fs::File::create(path).map_err(host_err(path.display().to_string()))?;
    file.set_len(u64::from(size_mb) << 20)
        .map_err(host_err(path.display().to_string()))?;
    drop(file);
    let out = tokio::process::Command::new("mkfs.ext4")
        .env("LC_ALL", "C")
        .args(["-q", "-F", "-b", "4096", "-m", "0", "-L", "paddock-disk"])
        // No blocks reserved for online growth: a sandbox's disk keeps its
        // size, and they were nearly all of what each copy wrote.
        .args(["-O", "^resize_inode"])
        // Lazy: nothing is zeroed now (the image stays sparse), and the
        // agent mounts with `noinit_itable`, so nothing is zeroed later.
        .args(["-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .output()
        .await
        .map_err(host_err("run mkfs.ext4 (install e2fsprogs)"))?;
    if !out.status.success() {
        let _ = fs::remove_file(path);
        return Err(RuntimeError::Setup(format!(
            "mkfs.ext4 failed for a sandbox disk: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_mkfs() -> bool {
        std::process::Command::new("mkfs.ext4")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[tokio::test]
    async fn a_default_size_disk_is_a_small_copy_and_old_templates_go() {
        if !have_mkfs() {
            eprintln!("skipped: no mkfs.ext4 (scripts/deps.sh installs e2fsprogs)");
            return;
        }
        let data = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(data.path().join("disks")).expect("disks dir");
        let old = data.path().join("disks/template-10240.img");
        fs::write(&old, "made with the format before").expect("old template");
        let disks = Arc::new(Disks::open(data.path(), 10 * 1024).expect("open"));
        assert!(!old.exists(), "a template of another format is removed");
        let run = data.path().join("a");
        fs::create_dir_all(&run).expect("run dir");
        disks.provide(&run, 10 * 1024).await.expect("disk");
        let written =
            std::os::unix::fs::MetadataExt::blocks(&fs::metadata(run.join(IMAGE)).expect("image"))
                * 512;
        // With the online-growth reserve it was 4.3 MiB.
        assert!(
            written < 1 << 20,
            "{written} bytes written for a 10 GiB disk"
        );
    }

    #[tokio::test]
    async fn disks_come_from_the_pool_or_are_made_to_size() {
        if !have_mkfs() {
            eprintln!("skipped: no mkfs.ext4 (scripts/deps.sh installs e2fsprogs)");
            return;
        }
        let data = tempfile::tempdir().expect("tempdir");
        let disks = Arc::new(Disks::open(data.path(), 64).expect("open"));
        let run = data.path().join("a");
        fs::create_dir_all(&run).expect("run dir");
        disks.provide(&run, 64).await.expect("default size");
        let image = run.join(IMAGE);
        assert_eq!(fs::metadata(&image).expect("image").len(), 64 << 20);
        // Kept, not replaced, on the next start.
        fs::write(run.join("marker"), "x").expect("marker");
        let before = fs::metadata(&image)
            .expect("image")
            .modified()
            .expect("mtime");
        disks.provide(&run, 64).await.expect("again");
        assert_eq!(
            fs::metadata(&image)
                .expect("image")
                .modified()
                .expect("mtime"),
            before
        );
        // Another size is made to measure.
        let other = data.path().join("b");
        fs::create_dir_all(&other).expect("run dir");
        disks.provide(&other, 80).await.expect("other size");
        assert_eq!(
            fs::metadata(other.join(IMAGE)).expect("image").len(),
            80 << 20
        );
        // Each size was formatted once, as a template, and copied sparse.
        let template = data.path().join("disks").join(template_name(80));
        assert!(template.is_file());
        let blocks =
            |p: &Path| std::os::unix::fs::MetadataExt::blocks(&fs::metadata(p).expect("stat"));
        assert!(blocks(&other.join(IMAGE)) <= blocks(&template));
        assert!(
            blocks(&other.join(IMAGE)) * 512 < 1 << 20,
            "the copy stayed sparse, and small"
        );
        // The pool fills in the background.
        for _ in 0..100 {
            let n = fs::read_dir(data.path().join("disks/pool"))
                .expect("pool")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("64-"))
                .count();
            if n >= POOL_TARGET {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the pool never filled");
    }
}
