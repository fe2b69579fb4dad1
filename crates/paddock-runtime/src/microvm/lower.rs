//! A microVM's read-only lower disk: an image's layers merged into one
//! ext4 image, made once per layer stack and cached. With it and the
//! sandbox's own disk as the upper, the guest's root is on block devices
//! and shares nothing with the host, so qemu can save the whole VM (its
//! `vhost-user-fs` root cannot be migrated: qemu 7.2 refuses with "State
//! blocked by non-migratable device").

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use paddock_core::RuntimeError;
use sha2::{Digest, Sha256};

const NONE: Option<&str> = None;

fn setup(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Setup(format!("{what}: {e}"))
}

/// The lower image of `layers` (topmost first, as overlayfs lists them)
/// in `cache`, made if missing. Layer directories are content-addressed,
/// so their paths name the stack.
pub fn lower_image(layers: &[PathBuf], cache: &Path) -> Result<PathBuf, RuntimeError> {
    let mut h = Sha256::new();
    for l in layers {
        h.update(l.as_os_str().as_encoded_bytes());
        h.update(b"\n");
    }
    let key = hex::encode(&h.finalize()[..12]);
    let image = cache.join(format!("lower-{key}.ext4"));
    if image.is_file() {
        return Ok(image);
    }
    fs::create_dir_all(cache).map_err(setup(cache.display().to_string()))?;
    let partial = image.with_extension(format!("{}.partial", std::process::id()));
    let layers = layers.to_vec();
    let target = partial.clone();
    // The merge is mounted in a mount namespace of a short-lived thread's
    // own, so nothing of it is seen on the host, and gone with the thread.
    let made = std::thread::spawn(move || build(&layers, &target))
        .join()
        .map_err(|_| RuntimeError::Setup("the lower image's thread panicked".into()))?;
    if let Err(e) = made {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, &image).map_err(setup(image.display().to_string()))?;
    Ok(image)
}

/// In this thread's own mount namespace: the layers merged (read-only
/// overlay) and copied into a fresh ext4 image at `image`.
fn build(layers: &[PathBuf], image: &Path) -> Result<(), RuntimeError> {
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
        .map_err(|e| RuntimeError::Setup(format!("unshare a mount namespace: {e}")))?;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| RuntimeError::Setup(format!("make the mounts private: {e}")))?;
    // Beside the image; the mount is gone with this namespace, the empty
    // directory removed below.
    let merged = image.with_extension("merge");
    fs::create_dir_all(&merged).map_err(setup(merged.display().to_string()))?;
    let made = copy_merged(layers, &merged, image);
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    let _ = fs::remove_dir(&merged);
    made
}

fn copy_merged(layers: &[PathBuf], merged: &Path, image: &Path) -> Result<(), RuntimeError> {
    let source = match layers {
        [] => return Err(RuntimeError::Invalid("an image without layers".into())),
        [only] => only.clone(),
        _ => {
            let lower: Vec<String> = layers.iter().map(|l| l.display().to_string()).collect();
            // Read-only overlays take two lower dirs at least, and no
            // upper: exactly this merge.
            mount(
                Some("overlay"),
                merged,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(format!("lowerdir={}", lower.join(":")).as_str()),
            )
            .map_err(|e| RuntimeError::Setup(format!("merge the image's layers: {e}")))?;
            merged.to_path_buf()
        }
    };
    let bytes = tree_bytes(&source);
    // Room for the files, their inodes and ext4's own metadata.
    let size_mb = bytes / (1 << 20) + bytes / (4 << 20) + 64;
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "paddock-lower", "-m", "0", "-d"])
        .arg(&source)
        .arg(image)
        .arg(format!("{size_mb}M"))
        .output()
        .map_err(setup("run mkfs.ext4 (e2fsprogs)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Setup(format!(
            "make the lower image: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The bytes of the files under `dir`, each rounded up to a 4 KiB block.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += meta.len().div_ceil(4096) * 4096 + 256;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}
