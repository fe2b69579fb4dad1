//! Unpacking one OCI layer into a directory in overlayfs's own format, as
//! the OCI layer spec describes:
//! - `.wh.NAME` becomes a whiteout (a 0/0 character device) named NAME;
//! - `.wh..wh..opq` marks its directory opaque (`trusted.overlay.opaque=y`);
//! - regular files, directories, symlinks, hard links, device nodes and
//!   fifos keep their mode, ownership, mtime and xattrs.
//!
//! Safety: entry paths are taken relative to the layer's root, `..` is
//! refused, no entry is ever written through a symlink (every ancestor is
//! checked with lstat), and hard link targets must lie inside the layer.
//! Files are created with `O_EXCL | O_NOFOLLOW`.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::ImageError;
use crate::sys;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A layer directory being written, and the layer's name for errors.
pub(crate) struct Ctx<'a> {
    pub layer: &'a str,
    pub root: &'a Path,
}

impl Ctx<'_> {
    fn unsafe_entry(&self, entry: &Path, reason: &'static str) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.to_owned(),
            entry: entry.display().to_string(),
            reason,
        }
    }

    /// The entry's path relative to the root, refusing `..`.
    pub(crate) fn relative(&self, raw: &Path) -> Result<PathBuf, ImageError> {
        let mut out = PathBuf::new();
        for c in raw.components() {
            match c {
                Component::Normal(p) => out.push(p),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir => {
                    return Err(self.unsafe_entry(raw, "'..' escapes the layer"))
                }
                Component::Prefix(_) => return Err(self.unsafe_entry(raw, "path prefix")),
            }
        }
        Ok(out)
    }

    /// Ensures every ancestor of `rel` is a real directory inside the root
    /// (creating missing ones), never a symlink.
    pub(crate) fn parent_dir(&self, rel: &Path) -> Result<PathBuf, ImageError> {
        let mut dir = self.root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                dir.push(c);
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(self.unsafe_entry(rel, "its path goes through a symlink"))
                    }
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(self.unsafe_entry(rel, "a parent is not a directory")),
                    Err(_) => fs::create_dir(&dir)
                        .map_err(ImageError::io(format!("create {}", dir.display())))?,
                }
            }
        }
        Ok(dir)
    }
}

fn remove_existing(path: &Path, keep_dir: bool) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && keep_dir => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(ImageError::io(format!("replace {}", path.display())))
        }
        Ok(_) => {
            fs::remove_file(path).map_err(ImageError::io(format!("replace {}", path.display())))
        }
        Err(_) => Ok(()),
    }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |e| ImageError::Io {
        what: format!("unpack {}", path.display()),
        source: e,
    }
}

fn nix_at(path: &Path) -> impl FnOnce(nix::Error) -> ImageError + '_ {
    move |e| ImageError::Io {
        what: format!("unpack {}", path.display()),
        source: e.into(),
    }
}

/// Hashes the blob at `blob` and checks it against `digest` before use.
fn verify(blob: &Path, digest: &Digest) -> Result<(), ImageError> {
    let mut file = BufReader::new(
        fs::File::open(blob).map_err(ImageError::io(format!("open blob {digest}")))?,
    );
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(ImageError::io(format!("read blob {digest}")))?;
    let actual = Digest::from_hasher(hasher);
    if &actual != digest {
        return Err(ImageError::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// Unpacks the layer blob at `blob` (gzip, zstd or plain tar, told by its
/// first bytes) into `dest`, once: an existing `dest` is complete.
pub fn unpack_layer(blob: &Path, digest: &Digest, dest: &Path) -> Result<(), ImageError> {
    if dest.is_dir() {
        return Ok(());
    }
    verify(blob, digest)?;
    let tmp = dest.with_extension(format!("unpacking-{}", rand::random::<u32>()));
    fs::create_dir_all(&tmp).map_err(ImageError::io(format!("create {}", tmp.display())))?;
    let result = unpack_into(blob, digest, &tmp).and_then(|()| {
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io_at(&tmp))?;
        fs::rename(&tmp, dest).map_err(ImageError::io(format!("finish {}", dest.display())))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// The layer's tar stream, decompressed as its first bytes say.
fn decoded(blob: &Path) -> Result<Box<dyn Read>, ImageError> {
    let file = fs::File::open(blob).map_err(ImageError::io(format!("open {}", blob.display())))?;
    let mut reader = BufReader::new(file);
    let magic = reader
        .fill_buf()
        .map_err(ImageError::io("read a layer"))?
        .to_vec();
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(ImageError::io("open a zstd layer"))?,
        )
    } else {
        Box::new(reader)
    })
}

/// The digest of a layer's uncompressed tar (its diff id).
pub fn uncompressed_digest(blob: &Path) -> Result<Digest, ImageError> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut decoded(blob)?, &mut hasher).map_err(ImageError::io("hash a layer"))?;
    Ok(Digest::from_hasher(hasher))
}

fn unpack_into(blob: &Path, digest: &Digest, root: &Path) -> Result<(), ImageError> {
    let decoded = decoded(blob)?;
    let ctx = Ctx {
        layer: digest.as_str(),
        root,
    };
    let mut archive = tar::Archive::new(decoded);
    let mut dir_times = Vec::new();
    for entry in archive
        .entries()
        .map_err(ImageError::io("read the layer's tar"))?
    {
        let mut entry = entry.map_err(ImageError::io("read a tar entry"))?;
        let raw = entry
            .path()
            .map_err(ImageError::io("read a tar entry's path"))?
            .into_owned();
        let rel = ctx.relative(&raw)?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the layer's root itself
        };
        let parent = ctx.parent_dir(&rel)?;
        if name == OPAQUE {
            sys::lsetxattr(&parent, "trusted.overlay.opaque", b"y").map_err(io_at(&parent))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(ctx.unsafe_entry(&raw, "bad whiteout name"));
            }
            let target = parent.join(hidden);
            remove_existing(&target, false)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(nix_at(&target))?;
            continue;
        }
        let path = parent.join(&name);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(io_at(&path))? & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                remove_existing(&path, true)?;
                if !path.is_dir() {
                    fs::create_dir(&path).map_err(io_at(&path))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_existing(&path, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_at(&path))?;
                std::io::copy(&mut entry, &mut f).map_err(io_at(&path))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_at(&path))?
                    .ok_or_else(|| ctx.unsafe_entry(&raw, "symlink without a target"))?;
                remove_existing(&path, false)?;
                symlink(target.as_ref(), &path).map_err(io_at(&path))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_at(&path))?
                    .ok_or_else(|| ctx.unsafe_entry(&raw, "hard link without a target"))?;
                let target_rel = ctx.relative(&target)?;
                let source = ctx
                    .parent_dir(&target_rel)?
                    .join(target_rel.file_name().unwrap_or_default());
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => return Err(ctx.unsafe_entry(&raw, "hard link to nothing in this layer")),
                }
                remove_existing(&path, false)?;
                fs::hard_link(&source, &path).map_err(io_at(&path))?;
                continue; // the link shares its target's metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                // Writers leave these fields empty for fifos (and some for
                // devices); empty means 0.
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let flag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(&path, false)?;
                mknod(
                    &path,
                    flag,
                    Mode::from_bits_truncate(mode),
                    makedev(major.into(), minor.into()),
                )
                .map_err(nix_at(&path))?;
            }
            // PAX and GNU long-name headers are consumed by the tar crate;
            // anything else carries nothing for a filesystem.
            _ => continue,
        }
        apply_metadata(
            &mut entry,
            &header,
            &path,
            mode,
            kind == tar::EntryType::Symlink,
        )?;
        if kind == tar::EntryType::Directory {
            dir_times.push((path, header.mtime().unwrap_or(0)));
        }
    }
    // Directory mtimes last: entries written inside them changed them.
    for (dir, mtime) in dir_times.into_iter().rev() {
        let t = TimeSpec::new(mtime as i64, 0);
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &dir,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

fn apply_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    header: &tar::Header,
    path: &Path,
    mode: u32,
    is_symlink: bool,
) -> Result<(), ImageError> {
    // Some writers leave ids empty; empty means root.
    let uid = header.uid().unwrap_or(0) as u32;
    let gid = header.gid().unwrap_or(0) as u32;
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(nix_at(path))?;
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
                continue;
            };
            // A layer may not set overlayfs's own or the kernel's trusted
            // attributes; file capabilities and user attributes pass.
            if name.starts_with("user.") || name == "security.capability" {
                sys::lsetxattr(path, name, ext.value_bytes()).map_err(io_at(path))?;
            }
        }
    }
    if !is_symlink {
        // After chown, which clears setuid and setgid bits.
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))?;
        let t = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(nix_at(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
