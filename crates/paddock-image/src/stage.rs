//! Staging a snapshot's layer: a sandbox's changes are copied straight
//! into a new layer directory (the form overlayfs stacks), while the tar
//! they make is hashed on another thread and never written. The layer is
//! stored as that plain tar (`application/vnd.oci.image.layer.v1.tar`):
//! its digest is its diff id, and its blob is written only when something
//! needs the bytes (another node's fetch, a push, which compresses it),
//! by packing the staged directory again ([`crate::pack::write_tar`]).
//!
//! That is sound only if packing the staged directory gives the very tar
//! that was hashed. The copy keeps what the tar records (names in order,
//! kind, mode, owners as the sandbox sees them, mtime, portable xattrs,
//! hard links, whiteouts, opaque directories), and a blob made later is
//! verified against the digest before anyone gets it. A sandbox's
//! writable layer (one tree at `/`, or a host sandbox's `/` with `/usr`
//! mounted over it) is hashed as it is copied, in the order the staged
//! directory will list; other sets of trees are copied first and the
//! staged directory hashed after.
//!
//! Why: packing into zstd and unpacking the blob again read and wrote a
//! GiB of changes four times over and hashed it three times (11 s/GiB on
//! a 2-core host); this copies it once and hashes it once.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use paddock_core::model::{ChangedTree, IdShift};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::pack::{self, portable_xattrs};
use crate::sys;

/// How much of the tar the copying thread hands the hashing one at once,
/// and how much of a file a walk reads and writes per call.
pub(crate) const CHUNK: usize = 1 << 20;

/// A staged layer: the digest and length of the tar its directory packs
/// into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub digest: Digest,
    pub size: u64,
}

/// The layer directory a walk copies into, next to the tar it writes.
pub(crate) struct Stage<'a> {
    pub root: &'a Path,
}

impl Stage<'_> {
    pub fn at(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

fn owners(meta: &fs::Metadata, ids: Option<IdShift>) -> (Uid, Gid) {
    let view = |id: u32| ids.map_or(id, |s| s.to_sandbox(id));
    (
        Uid::from_raw(view(meta.uid())),
        Gid::from_raw(view(meta.gid())),
    )
}

fn at(path: &Path) -> impl FnOnce(nix::Error) -> io::Error + '_ {
    move |e| io::Error::other(format!("{}: {e}", path.display()))
}

/// The source's owner (as the sandbox sees it) on a staged entry, a
/// symlink itself rather than what it points to.
fn chown(path: &Path, meta: &fs::Metadata, ids: Option<IdShift>) -> io::Result<()> {
    let (uid, gid) = owners(meta, ids);
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(uid),
        Some(gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(at(path))
}

/// Owner, then mode (a chown clears set-id bits), of a staged entry that
/// is not a symlink.
fn own(path: &Path, meta: &fs::Metadata, ids: Option<IdShift>) -> io::Result<()> {
    chown(path, meta, ids)?;
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
}

/// The source's times on a staged entry (a directory's once its entries
/// are in: adding them changed it).
pub(crate) fn times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(at(path))
}

fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    for (name, value) in portable_xattrs(from)? {
        sys::lsetxattr(to, &name, &value)?;
    }
    Ok(())
}

/// A directory, without its entries or times; an opaque one stays opaque.
pub(crate) fn dir(
    target: &Path,
    source: &Path,
    meta: &fs::Metadata,
    ids: Option<IdShift>,
) -> io::Result<()> {
    fs::create_dir(target)?;
    own(target, meta, ids)?;
    copy_xattrs(source, target)?;
    if sys::lgetxattr(source, pack::OPAQUE_XATTR).as_deref() == Some(b"y") {
        sys::lsetxattr(target, pack::OPAQUE_XATTR, b"y")?;
    }
    Ok(())
}

/// A device node, fifo or whiteout (a 0/0 character device).
pub(crate) fn node(target: &Path, meta: &fs::Metadata, ids: Option<IdShift>) -> io::Result<()> {
    let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
    mknod(
        target,
        kind,
        Mode::from_bits_truncate(meta.mode() & 0o7777),
        makedev(
            u64::from(libc::major(meta.rdev())),
            u64::from(libc::minor(meta.rdev())),
        ),
    )
    .map_err(at(target))?;
    own(target, meta, ids)?;
    times(target, meta)
}

pub(crate) fn symlink(
    target: &Path,
    points_to: &Path,
    meta: &fs::Metadata,
    ids: Option<IdShift>,
) -> io::Result<()> {
    std::os::unix::fs::symlink(points_to, target)?;
    chown(target, meta, ids)?;
    times(target, meta)
}

/// A regular file's contents on their way into the tar, read a chunk at
/// a time into a buffer one walk lends every file, and written to the
/// staged copy as they are read when there is one. The tar crate reads 8
/// KiB at a time, and a syscall per 8 KiB would cost more than the copy;
/// a chunk-sized buffer per file would cost a mapping per file.
pub(crate) struct Tee<'b> {
    source: fs::File,
    copy: Option<fs::File>,
    buf: &'b mut [u8],
    start: usize,
    end: usize,
}

impl<'b> Tee<'b> {
    /// Reads `source`, copying nothing.
    pub fn reading(source: &Path, buf: &'b mut [u8]) -> io::Result<Self> {
        let source = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(source)?;
        // Read in one sweep: a sandbox's changes are mostly on its disk,
        // not in its (memory-limited) page cache, and a wider readahead
        // keeps the disk busy while the copy is written.
        let _ = nix::fcntl::posix_fadvise(
            &source,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
        );
        Ok(Self {
            source,
            copy: None,
            buf,
            start: 0,
            end: 0,
        })
    }

    /// Reads `source` into a new file at `target`.
    pub fn copying(source: &Path, target: &Path, buf: &'b mut [u8]) -> io::Result<Self> {
        let mut tee = Self::reading(source, buf)?;
        tee.copy = Some(
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(target)?,
        );
        Ok(tee)
    }

    /// Gives the copy the source's owner, mode, xattrs and times.
    pub fn finish(
        self,
        target: &Path,
        source: &Path,
        meta: &fs::Metadata,
        ids: Option<IdShift>,
    ) -> io::Result<()> {
        drop(self.copy);
        own(target, meta, ids)?;
        copy_xattrs(source, target)?;
        times(target, meta)
    }
}

impl Read for Tee<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            let n = self.source.read(self.buf)?;
            if n == 0 {
                return Ok(0);
            }
            if let Some(copy) = &mut self.copy {
                copy.write_all(&self.buf[..n])?;
            }
            (self.start, self.end) = (0, n);
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// A writer that hashes on a thread of its own what is written to it, so
/// the copy and the hash (SHA-256 is about 0.65 s/GiB here) overlap.
pub(crate) struct HashingThread {
    buf: Vec<u8>,
    chunks: Option<mpsc::SyncSender<Vec<u8>>>,
    worker: Option<std::thread::JoinHandle<(Sha256, u64)>>,
}

impl HashingThread {
    pub fn start() -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let worker = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn(move || {
                let (mut hasher, mut len) = (Sha256::new(), 0u64);
                for chunk in rx {
                    hasher.update(&chunk);
                    len += chunk.len() as u64;
                }
                (hasher, len)
            })?;
        Ok(Self {
            buf: Vec::with_capacity(CHUNK),
            chunks: Some(tx),
            worker: Some(worker),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.chunks
            .as_ref()
            .and_then(|tx| tx.send(chunk).ok())
            .ok_or_else(|| io::Error::other("the layer's hashing thread stopped"))
    }

    /// The digest and length of everything written.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        self.send()?;
        self.chunks = None;
        let (hasher, len) = self
            .worker
            .take()
            .ok_or_else(|| io::Error::other("the layer's hashing thread is gone"))?
            .join()
            .map_err(|_| io::Error::other("the layer's hashing thread panicked"))?;
        Ok((Digest::from_hasher(hasher), len))
    }
}

impl Write for HashingThread {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Copies `trees` into `dest` (created here; the caller removes it on an
/// error) and returns the digest of the tar the staged directory packs
/// into.
pub fn stage_layer(trees: &[ChangedTree], dest: &Path) -> Result<Staged, ImageError> {
    fs::create_dir(dest).map_err(ImageError::io(format!("create {}", dest.display())))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io(format!("create {}", dest.display())))?;
    let stage = Stage { root: dest };
    let (digest, size) = match trees {
        [root, mounts @ ..] if root.at.is_empty() && mounted_at_top(mounts) => {
            let mut b = tar::Builder::new(
                HashingThread::start().map_err(ImageError::io("start hashing a layer"))?,
            );
            b.follow_symlinks(false);
            pack::walk_mounted(&mut b, root, mounts, Some(&stage))
                .map_err(ImageError::io("stage a layer"))?;
            b.into_inner()
                .and_then(HashingThread::finish)
                .map_err(ImageError::io("hash a layer"))?
        }
        _ => {
            for tree in trees {
                stage_tree(tree, &stage)?;
            }
            let mut hashing =
                HashingThread::start().map_err(ImageError::io("start hashing a layer"))?;
            pack::write_tar(dest, &mut hashing).map_err(ImageError::io("hash a layer"))?;
            hashing.finish().map_err(ImageError::io("hash a layer"))?
        }
    };
    Ok(Staged { digest, size })
}

/// Whether `mounts` each sit on a distinct top-level directory (`usr`), so
/// that one walk of the root can show them in its own order.
fn mounted_at_top(mounts: &[ChangedTree]) -> bool {
    let top = |at: &str| !at.is_empty() && !at.contains('/') && at != "." && at != "..";
    mounts
        .iter()
        .enumerate()
        .all(|(i, m)| top(&m.at) && mounts[..i].iter().all(|earlier| earlier.at != m.at))
}

/// One tree copied in at its place, replacing what an earlier tree put
/// there (overlayfs shows `/usr`'s own mount over the root's `usr`). The
/// place's parents are the sandbox's own directories, staged from an
/// earlier tree: one that is a symlink (or not a directory) is refused,
/// never followed out of the layer.
fn stage_tree(tree: &ChangedTree, stage: &Stage<'_>) -> Result<(), ImageError> {
    let place = crate::unpack::Ctx {
        layer: "a snapshot's",
        root: stage.root,
    };
    let rel = place.relative(Path::new(&tree.at))?;
    let Some(name) = rel.file_name() else {
        return pack::walk_under(
            &mut tar::Builder::new(io::sink()),
            &tree.dir,
            &rel,
            tree.ids,
            Some(stage),
        )
        .map_err(ImageError::io("stage a layer"));
    };
    let target = place.parent_dir(&rel)?.join(name);
    stage_tree_at(tree, &target, &rel, stage).map_err(ImageError::io("stage a layer"))
}

/// [`stage_tree`] of a tree whose place, `target` (at `rel` in the layer),
/// has real directories for parents.
fn stage_tree_at(
    tree: &ChangedTree,
    target: &Path,
    rel: &Path,
    stage: &Stage<'_>,
) -> io::Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(target)?,
        Ok(_) => fs::remove_file(target)?,
        Err(_) => {}
    }
    let meta = fs::symlink_metadata(&tree.dir)?;
    dir(target, &tree.dir, &meta, tree.ids)?;
    pack::walk_under(
        &mut tar::Builder::new(io::sink()),
        &tree.dir,
        rel,
        tree.ids,
        Some(stage),
    )?;
    times(target, &meta)
}

#[cfg(test)]
mod tests;
