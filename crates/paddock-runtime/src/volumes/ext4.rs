//! The ext4 side of volumes: making, checking and resizing a filesystem in
//! an image file, reading its usage, and loop-mounting it on the host.
//! e2fsprogs and util-linux do the work; `mount -o loop` allocates and
//! auto-clears the loop device, a dance with races that util-linux has
//! already got right.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use tokio::process::Command;

/// The filesystem block size every volume uses.
pub const BLOCK: u64 = 4096;

/// A failed helper command, with what it printed.
#[derive(Debug, thiserror::Error)]
#[error("{program} failed ({status}): {stderr}")]
pub struct CommandFailed {
    pub program: &'static str,
    pub status: String,
    pub stderr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("could not run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Failed(#[from] CommandFailed),
}

/// Runs `program args`; `ok` says which exit codes are success.
async fn run(program: &'static str, args: &[&str], ok: &[i32]) -> Result<(), Ext4Error> {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| Ext4Error::Spawn { program, source })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        return Ok(());
    }
    Err(CommandFailed {
        program,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
    .into())
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// Formats `image` (already of its final length). No blocks are reserved
/// for root: the whole size is the tenant's.
pub async fn mkfs(image: &Path) -> Result<(), Ext4Error> {
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-m",
            "0",
            "-E",
            "nodiscard,root_owner=0:0",
            "-L",
            "paddock-volume",
            arg(image),
        ],
        &[0],
    )
    .await
}

/// Checks and repairs an unmounted image (resize2fs insists on it).
pub async fn fsck(image: &Path) -> Result<(), Ext4Error> {
    // 0: clean, 1: errors corrected.
    run("e2fsck", &["-f", "-p", arg(image)], &[0, 1]).await
}

/// Resizes the filesystem in an unmounted, checked image to `bytes`.
pub async fn resize(image: &Path, bytes: u64) -> Result<(), Ext4Error> {
    let blocks = format!("{}", bytes / BLOCK);
    run("resize2fs", &[arg(image), &blocks], &[0]).await
}

/// Loop-mounts `image` at `dir`: nosuid and nodev always, read-only (with
/// no journal replay) when asked.
pub async fn mount(image: &Path, dir: &Path, read_only: bool) -> Result<(), Ext4Error> {
    let options = if read_only {
        "loop,nosuid,nodev,ro,noload"
    } else {
        "loop,nosuid,nodev"
    };
    run(
        "mount",
        &["-t", "ext4", "-o", options, arg(image), arg(dir)],
        &[0],
    )
    .await
}

/// Whether something is mounted at `dir` (it sits on another device than
/// its parent).
pub fn is_mountpoint(dir: &Path) -> bool {
    match (std::fs::metadata(dir), std::fs::metadata(dir.join(".."))) {
        (Ok(d), Ok(parent)) => d.dev() != parent.dev(),
        _ => false,
    }
}

/// Unmounts `dir`; detaches lazily if a host process still uses it.
pub fn unmount(dir: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    if !is_mountpoint(dir) {
        return Ok(());
    }
    match umount2(dir, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(dir, MntFlags::MNT_DETACH).map_err(Into::into),
        Err(e) => Err(e.into()),
    }
}

/// Bytes in use on the mounted filesystem at `dir`.
pub fn used_mounted(dir: &Path) -> io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    Ok((s.blocks() - s.blocks_free()) * s.fragment_size())
}

/// Bytes in use in an unmounted image, from its superblock (the counts an
/// unmount writes back), counted as statfs counts them. Layout: `struct ext4_super_block` in the kernel's
/// fs/ext4/ext4.h.
pub fn used_unmounted(image: &Path) -> io::Result<u64> {
    let mut sb = [0u8; 1024];
    File::open(image)?.read_exact_at(&mut sb, 1024)?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
    if u16_at(0x38) != 0xEF53 {
        return Err(io::Error::other("not an ext4 image"));
    }
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let (blocks_hi, free_hi) = if incompat_64bit {
        (u32_at(0x150), u32_at(0x158))
    } else {
        (0, 0)
    };
    let blocks = (blocks_hi << 32) | u32_at(0x4);
    let free = (free_hi << 32) | u32_at(0xC);
    // Metadata blocks, which statfs leaves out of a mounted volume's
    // usage too (e2fsprogs 1.46+ records them at mkfs time).
    let overhead = u32_at(0x248);
    let block_size = 1024u64 << u32_at(0x18).min(6);
    Ok(blocks.saturating_sub(free).saturating_sub(overhead) * block_size)
}
