//! A volume's files, read and written from the host while it is mounted
//! there. Every path is resolved by the kernel inside the volume
//! (`openat2` with `RESOLVE_IN_ROOT`): a symlink a tenant left in the
//! volume, absolute or full of `..`, resolves within it, so no operation
//! here can reach a host file. Files are written whole: the upload is
//! copied into a hidden file beside its target and renamed over it, so
//! an interrupted upload leaves no partial file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, renameat2, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use paddock_core::volume_backend::VolumeFile;

/// Why a file operation failed, in terms a caller can answer with.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    BadPath(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} is a directory")]
    IsDirectory(String),
    #[error("{0} is not empty")]
    NotEmpty(String),
    #[error("the volume is full")]
    Full,
    #[error("{0} is over the {1} bytes a download may hold")]
    TooLarge(String, u64),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &str, e: impl Into<io::Error>) -> FileError {
    let source = e.into();
    match source.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => FileError::Full,
        _ => FileError::Io {
            what: what.to_owned(),
            source,
        },
    }
}

fn errno(what: &str, e: Errno) -> FileError {
    match e {
        Errno::ENOENT => FileError::NotFound(what.to_owned()),
        Errno::EEXIST => FileError::Exists(what.to_owned()),
        Errno::EISDIR => FileError::IsDirectory(what.to_owned()),
        Errno::ENOTEMPTY => FileError::NotEmpty(what.to_owned()),
        e => io_err(what, io::Error::from(e)),
    }
}

/// A path inside the volume, as its components: relative, no `.` or
/// `..`, no empty or NUL-bearing part. A leading `/` is the volume's root.
pub fn components(path: &str) -> Result<Vec<&str>, FileError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if path.len() > 4096 || path.contains('\0') {
        return Err(FileError::BadPath(
            "a path is at most 4096 bytes, without NUL".into(),
        ));
    }
    if parts
        .iter()
        .any(|p| *p == "." || *p == ".." || p.len() > 255)
    {
        return Err(FileError::BadPath(format!(
            "{path:?}: no `.` or `..` parts, each at most 255 bytes"
        )));
    }
    Ok(parts)
}

/// Opens `rel` under `root`, resolved inside it.
fn open_in(root: impl AsFd, rel: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how)
}

fn open_root(dir: &Path) -> Result<OwnedFd, FileError> {
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno("the volume's mount", e))
}

/// The files under `prefix` (a directory, or a path prefix of names in
/// one), `recursive` or not, at most `limit`, in path order.
pub fn list(
    dir: &Path,
    prefix: &str,
    recursive: bool,
    limit: usize,
) -> Result<Vec<VolumeFile>, FileError> {
    let root = open_root(dir)?;
    let parts = components(prefix)?;
    // `a/b` lists directory `a/b` if it is one, else names in `a`
    // starting with `b`.
    let joined = parts.join("/");
    let (start, name_prefix) = match open_in(
        &root,
        &joined,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    ) {
        Ok(_) => (joined, String::new()),
        Err(Errno::ENOENT | Errno::ENOTDIR) => match parts.split_last() {
            Some((last, parent)) => (parent.join("/"), (*last).to_owned()),
            None => return Ok(Vec::new()),
        },
        Err(e) => return Err(errno(prefix, e)),
    };
    let mut out = Vec::new();
    // Each directory to read, with the name prefix its entries must have
    // (only the first has one).
    let mut pending: Vec<(String, String)> = vec![(start, name_prefix)];
    while let Some((rel, name_prefix)) = pending.pop() {
        let fd = match open_in(
            &root,
            &rel,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => continue,
            Err(e) => return Err(errno(&rel, e)),
        };
        let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| errno(&rel, e))?;
        let mut names = Vec::new();
        for entry in d.iter() {
            let entry = entry.map_err(|e| errno(&rel, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let hidden = name == "." || name == ".." || (rel.is_empty() && name == "lost+found");
            if !hidden && name.starts_with(&name_prefix) && !name.starts_with(UPLOAD_PREFIX) {
                names.push(name);
            }
        }
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let st = fstatat(
                d.as_fd(),
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| errno(&path, e))?;
            let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            if is_dir && recursive {
                pending.push((path.clone(), String::new()));
            }
            out.push(VolumeFile {
                path,
                size: if is_dir {
                    0
                } else {
                    u64::try_from(st.st_size).unwrap_or(0)
                },
                is_dir,
                modified_unix_ms: st.st_mtime.saturating_mul(1000),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.truncate(limit);
    Ok(out)
}

/// What a hidden upload file's name starts with (listings skip them).
const UPLOAD_PREFIX: &str = ".paddock-upload-";

/// A regular file's bytes, at most `max`.
pub fn read(dir: &Path, path: &str, max: u64) -> Result<Vec<u8>, FileError> {
    let root = open_root(dir)?;
    let rel = components(path)?.join("/");
    if rel.is_empty() {
        return Err(FileError::BadPath(
            "name a file, not the volume's root".into(),
        ));
    }
    let fd = open_in(&root, &rel, OFlag::O_RDONLY, Mode::empty()).map_err(|e| errno(path, e))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        return Err(FileError::IsDirectory(path.to_owned()));
    }
    if !meta.is_file() {
        return Err(FileError::BadPath(format!("{path} is not a regular file")));
    }
    if meta.len() > max {
        return Err(FileError::TooLarge(path.to_owned(), max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_err(path, e))?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge(path.to_owned(), max));
    }
    Ok(bytes)
}

/// The directory `parts` names, made (with its parents) where missing.
fn make_dirs(root: &OwnedFd, parts: &[&str]) -> Result<OwnedFd, FileError> {
    let mut made = String::new();
    let mut dir = open_in(
        root,
        "",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| errno("/", e))?;
    for part in parts {
        if !made.is_empty() {
            made.push('/');
        }
        made.push_str(part);
        dir = match open_in(
            root,
            &made,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(&dir, *part, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(errno(&made, e)),
                }
                open_in(
                    root,
                    &made,
                    OFlag::O_DIRECTORY | OFlag::O_RDONLY,
                    Mode::empty(),
                )
                .map_err(|e| errno(&made, e))?
            }
            Err(Errno::ENOTDIR) => {
                return Err(FileError::BadPath(format!("{made} is not a directory")))
            }
            Err(e) => return Err(errno(&made, e)),
        };
    }
    Ok(dir)
}

/// Copies `source` (an upload spooled outside the volume) to `path`,
/// parents made; replaces a file there only when `overwrite`. Returns the
/// bytes written.
pub fn place(dir: &Path, source: &Path, path: &str, overwrite: bool) -> Result<u64, FileError> {
    let root = open_root(dir)?;
    let parts = components(path)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(FileError::BadPath(
            "name a file, not the volume's root".into(),
        ));
    };
    let parent = make_dirs(&root, parents)?;
    let hidden = format!("{UPLOAD_PREFIX}{}-{}", std::process::id(), unique());
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(&parent, hidden.as_str(), how).map_err(|e| errno(path, e))?;
    let mut out = File::from(fd);
    let copied = (|| {
        let mut input = File::open(source).map_err(|e| io_err("the upload", e))?;
        let n = io::copy(&mut input, &mut out).map_err(|e| io_err(path, e))?;
        out.flush().map_err(|e| io_err(path, e))?;
        out.sync_all().map_err(|e| io_err(path, e))?;
        let flags = if overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        renameat2(&parent, hidden.as_str(), &parent, *name, flags).map_err(|e| errno(path, e))?;
        Ok(n)
    })();
    if copied.is_err() {
        let _ = unlinkat(&parent, hidden.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    copied
}

/// A number no other upload of this process has.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Removes a file, or an empty directory.
pub fn delete(dir: &Path, path: &str) -> Result<(), FileError> {
    let root = open_root(dir)?;
    let parts = components(path)?;
    let Some((name, parents)) = parts.split_last() else {
        return Err(FileError::BadPath(
            "the volume's root cannot be deleted".into(),
        ));
    };
    let parent = open_in(
        &root,
        &parents.join("/"),
        OFlag::O_DIRECTORY | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map_err(|e| errno(path, e))?;
    let st = fstatat(&parent, *name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| errno(path, e))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    let flags = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    unlinkat(&parent, *name, flags).map_err(|e| errno(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_plain_components() {
        assert_eq!(components("/a/b//c").expect("ok"), ["a", "b", "c"]);
        assert!(components("a/../b").is_err());
        assert!(components("./a").is_err());
        assert!(components("a\0b").is_err());
    }

    /// A symlink out of the volume resolves inside it: reading through
    /// it finds nothing, writing through it lands in the volume.
    #[test]
    fn symlinks_cannot_leave_the_volume() {
        let volume = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "host").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), volume.path().join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), volume.path().join("dirlink")).expect("symlink");
        std::os::unix::fs::symlink("../../../../..", volume.path().join("up")).expect("symlink");
        assert!(matches!(
            read(volume.path(), "link", 1 << 20),
            Err(FileError::NotFound(_))
        ));
        let through = format!("up{}", outside.path().join("secret").display());
        assert!(read(volume.path(), &through, 1 << 20).is_err());

        let upload = outside.path().join("upload");
        std::fs::write(&upload, "data").expect("write");
        // The link's target, taken inside the volume, does not exist there
        // and cannot be made through a symlink: refused.
        assert!(place(volume.path(), &upload, "dirlink/planted", false).is_err());
        assert!(
            !outside.path().join("planted").exists(),
            "nothing written on the host"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).expect("read"),
            "host"
        );

        place(volume.path(), &upload, "a/b/c.txt", false).expect("placed");
        assert!(matches!(
            place(volume.path(), &upload, "a/b/c.txt", false),
            Err(FileError::Exists(_))
        ));
        place(volume.path(), &upload, "a/b/c.txt", true).expect("overwritten");
        assert_eq!(
            read(volume.path(), "/a/b/c.txt", 10).expect("read"),
            b"data"
        );
        assert!(matches!(
            read(volume.path(), "a/b/c.txt", 2),
            Err(FileError::TooLarge(..))
        ));
        let listed: Vec<String> = list(volume.path(), "a", true, 100)
            .expect("list")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(listed, ["a/b", "a/b/c.txt"]);
        let by_prefix: Vec<String> = list(volume.path(), "a/b/c", false, 100)
            .expect("list")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(by_prefix, ["a/b/c.txt"]);
        assert!(matches!(
            delete(volume.path(), "a/b"),
            Err(FileError::NotEmpty(_))
        ));
        delete(volume.path(), "a/b/c.txt").expect("deleted");
        delete(volume.path(), "a/b").expect("empty dir deleted");
        assert!(matches!(
            delete(volume.path(), "a/b"),
            Err(FileError::NotFound(_))
        ));
        delete(volume.path(), "link").expect("a symlink itself can go");
        assert!(outside.path().join("secret").exists());
    }
}
