//! Copying volume images cheaply: a reflink where the data dir's
//! filesystem supports one (btrfs, XFS with reflink, bcachefs), else a
//! sparse copy that moves only the allocated extents. std's `fs::copy`
//! would fill every hole, turning a 10 GiB volume holding 1 MiB into a
//! 10 GiB write, and no crate does hole-aware copies, hence this module.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

use crate::sys;

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Reflink,
    Sparse,
}

/// Copies `src` to the new file `dst` (mode 0600), keeping holes.
pub fn copy_image(src: &Path, dst: &Path) -> io::Result<CopyKind> {
    let from = File::open(src)?;
    let to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)?;
    let result = match sys::reflink(&from, &to) {
        Ok(()) => Ok(CopyKind::Reflink),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
            ) =>
        {
            sparse_copy(&from, &to).map(|()| CopyKind::Sparse)
        }
        Err(e) => Err(e),
    };
    match result.and_then(|kind| to.sync_all().map(|()| kind)) {
        Ok(kind) => Ok(kind),
        Err(e) => {
            let _ = std::fs::remove_file(dst);
            Err(e)
        }
    }
}

fn sparse_copy(from: &File, to: &File) -> io::Result<()> {
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let len = i64::try_from(len).map_err(|_| io::Error::other("file too large"))?;
    let mut pos: i64 = 0;
    while pos < len {
        let data = match lseek(from, pos, Whence::SeekData) {
            Ok(d) => d,
            // No data after `pos`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(from, data, Whence::SeekHole)?;
        let mut off_in = data;
        let mut off_out = data;
        while off_in < hole {
            let chunk = usize::try_from(hole - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let n = nix::fcntl::copy_file_range(
                from,
                Some(&mut off_in),
                to,
                Some(&mut off_out),
                chunk,
            )?;
            if n == 0 {
                return Err(io::Error::other("the source shrank while it was copied"));
            }
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_keep_content_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src.img");
        let mut f = File::create(&src).expect("create");
        f.set_len(64 << 20).expect("write");
        f.seek(SeekFrom::Start(1 << 20)).expect("write");
        f.write_all(&[7u8; 8192]).expect("write");
        f.seek(SeekFrom::Start(40 << 20)).expect("write");
        f.write_all(b"tail").expect("write");
        f.sync_all().expect("write");
        let dst = dir.path().join("dst.img");
        copy_image(&src, &dst).expect("copy");
        assert_eq!(
            std::fs::read(&src).expect("src"),
            std::fs::read(&dst).expect("dst")
        );
        // Far less than 64 MiB is allocated: the holes stayed holes.
        assert!(std::fs::metadata(&dst).expect("stat").blocks() * 512 < 4 << 20);
        // The destination must be new.
        assert!(copy_image(&src, &dst).is_err());
    }
}
