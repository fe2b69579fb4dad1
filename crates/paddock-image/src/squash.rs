//! Squashing: several change trees in overlay form (a snapshot's stacked
//! layers, then a sandbox's upper dir), applied bottom first onto one
//! staging tree that is their sum as a single overlay diff, which `pack`
//! then turns into one layer. The rules are overlayfs's own:
//! - a whiteout (0/0 character device) removes what lies below and stays,
//!   so it still hides the base image's file;
//! - an opaque directory (`trusted.overlay.opaque=y`) replaces what lies
//!   below and stays opaque;
//! - anything else replaces the entry below (directories merge).
//!
//! Files are hard links into the trees (no data is copied; the staging
//! tree is removed once packed), copies only when a tree is on another
//! filesystem.

use std::fs;
use std::io;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use paddock_core::model::ChangedTree;

use crate::error::ImageError;
use crate::sys;

const OPAQUE: &str = "trusted.overlay.opaque";

/// Applies `trees`, bottom first, onto the empty directory `staging`.
pub fn squash(trees: &[ChangedTree], staging: &Path) -> Result<(), ImageError> {
    for tree in trees {
        let at = if tree.at.is_empty() {
            staging.to_path_buf()
        } else {
            staging.join(&tree.at)
        };
        fs::create_dir_all(&at).map_err(ImageError::io(format!("create {}", at.display())))?;
        apply(&tree.dir, &at).map_err(ImageError::io(format!("squash {}", tree.dir.display())))?;
    }
    Ok(())
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A directory like `src`'s: mode and owner.
fn make_dir_like(src: &Path, meta: &fs::Metadata, dst: &Path) -> io::Result<()> {
    fs::create_dir(dst)?;
    lchown(dst, Some(meta.uid()), Some(meta.gid()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    if sys::lgetxattr(src, OPAQUE).as_deref() == Some(b"y") {
        sys::lsetxattr(dst, OPAQUE, b"y")?;
    }
    Ok(())
}

/// Links (or, across filesystems, copies) one non-directory entry.
fn place(src: &Path, meta: &fs::Metadata, dst: &Path) -> io::Result<()> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: another filesystem.
            if meta.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
            } else if meta.is_file() {
                fs::copy(src, dst)?;
            } else {
                return Err(e);
            }
            lchown(dst, Some(meta.uid()), Some(meta.gid()))
        }
        Err(e) => Err(e),
    }
}

fn apply(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let s = entry.path();
        let d = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&s)?;
        if meta.is_dir() {
            let opaque = sys::lgetxattr(&s, OPAQUE).as_deref() == Some(b"y");
            let existing_dir = fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir());
            if opaque || !existing_dir {
                remove_any(&d)?;
                make_dir_like(&s, &meta, &d)?;
            } else {
                fs::set_permissions(&d, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            }
            apply(&s, &d)?;
        } else {
            // A file, link, device or whiteout: it replaces what was there.
            remove_any(&d)?;
            place(&s, &meta, &d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn is_whiteout(meta: &fs::Metadata) -> bool {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_char_device() && meta.rdev() == 0
    }

    fn whiteout(p: &Path) {
        let ok = std::process::Command::new("mknod")
            .arg(p)
            .args(["c", "0", "0"])
            .status()
            .expect("mknod");
        assert!(ok.success());
    }

    fn tree(dir: &Path) -> ChangedTree {
        ChangedTree {
            ids: None,
            dir: PathBuf::from(dir),
            at: String::new(),
        }
    }

    #[test]
    fn later_trees_win_and_whiteouts_and_opaque_dirs_survive() {
        let root = tempfile::tempdir().expect("tempdir");
        let (l1, l2, upper, out) = (
            root.path().join("l1"),
            root.path().join("l2"),
            root.path().join("upper"),
            root.path().join("out"),
        );
        for d in [&l1, &l2, &upper, &out] {
            fs::create_dir(d).expect("dir");
        }
        // l1: adds a, d/x, e/y; hides the base's b.
        fs::write(l1.join("a"), "a1").expect("a");
        fs::create_dir(l1.join("d")).expect("d");
        fs::write(l1.join("d/x"), "x").expect("x");
        fs::create_dir(l1.join("e")).expect("e");
        fs::write(l1.join("e/y"), "y").expect("y");
        whiteout(&l1.join("b"));
        // l2: changes a, removes d/x, makes e opaque with only z.
        fs::write(l2.join("a"), "a2").expect("a");
        fs::create_dir(l2.join("d")).expect("d");
        whiteout(&l2.join("d/x"));
        fs::create_dir(l2.join("e")).expect("e");
        sys::lsetxattr(&l2.join("e"), OPAQUE, b"y").expect("opaque");
        fs::write(l2.join("e/z"), "z").expect("z");
        // upper: a new file under a new dir.
        fs::create_dir(upper.join("n")).expect("n");
        fs::write(upper.join("n/f"), "f").expect("f");

        squash(&[tree(&l1), tree(&l2), tree(&upper)], &out).expect("squash");
        assert_eq!(fs::read_to_string(out.join("a")).expect("a"), "a2");
        assert!(is_whiteout(
            &fs::symlink_metadata(out.join("b")).expect("b")
        ));
        assert!(is_whiteout(
            &fs::symlink_metadata(out.join("d/x")).expect("d/x")
        ));
        assert!(!out.join("e/y").exists());
        assert_eq!(fs::read_to_string(out.join("e/z")).expect("z"), "z");
        assert_eq!(
            sys::lgetxattr(&out.join("e"), OPAQUE).as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(fs::read_to_string(out.join("n/f")).expect("f"), "f");
        // The sources are untouched.
        assert_eq!(fs::read_to_string(l1.join("a")).expect("a"), "a1");
        assert!(l1.join("e/y").exists());
    }
}
