//! Root filesystems of image variants.
//!
//! The built-in `host` kind needs nothing from the network: the host's
//! `/usr` (system software, not host data) as a read-only lower layer of
//! its own overlay, under a small base layer paddock writes once: top-level
//! directories, usr-merge symlinks and a synthesized `/etc` with a handful
//! of files copied from the host's (dynamic linker cache, alternatives,
//! CA certificates, shell profiles). Nothing else of the host is visible.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_agent_protocol::config::OverlayLayer;
use paddock_core::RuntimeError;

/// How a variant's root filesystem is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantSource {
    /// The host's /usr under paddock's base layer.
    Host,
    /// A directory holding a whole root filesystem, used read-only.
    Directory(PathBuf),
}

/// Host files copied into the base layer's /etc, if present.
const ETC_FROM_HOST: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "login.defs",
    "mime.types",
    "os-release",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "python3.12",
    "services",
    "skel",
    "ssl",
    "terminfo",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
user:x:1000:1000:user:/home/user:/bin/bash\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";

const GROUP: &str =
    "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\nuser:x:1000:\nnogroup:x:65534:\n";

const HOSTS: &str = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n";

const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::host(what, e)
}

/// Builds the `host` variant's base layer in `dir` once; later calls find
/// it complete and return at once. Built beside and renamed into place, so
/// a crash halfway leaves no half-built layer in use.
pub fn ensure_host_base(dir: &Path) -> Result<(), RuntimeError> {
    if dir.join(".paddock-complete").exists() {
        return Ok(());
    }
    let usr_merged = ["bin", "sbin", "lib"].iter().all(|d| {
        fs::symlink_metadata(Path::new("/").join(d))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    });
    if !usr_merged {
        return Err(RuntimeError::Setup(
            "the host variant needs a merged-/usr host (/bin, /sbin and /lib as links into /usr)"
                .into(),
        ));
    }
    let tmp = dir.with_extension("building");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io_err(tmp.display().to_string()))?;
    build_host_base(&tmp).map_err(io_err(format!(
        "build the host base layer in {}",
        tmp.display()
    )))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir).map_err(io_err(dir.display().to_string()))?;
    Ok(())
}

fn build_host_base(root: &Path) -> io::Result<()> {
    for (d, mode) in [
        ("usr", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("var/log", 0o755),
        ("var/lib", 0o755),
        ("var/cache", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("home/user", 0o755),
        ("opt", 0o755),
        ("mnt", 0o755),
        ("srv", 0o755),
        ("media", 0o755),
    ] {
        let p = root.join(d);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    }
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000))?;
    for link in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(link);
        if let Ok(target) = fs::read_link(&host) {
            symlink(target, root.join(link))?;
        }
    }
    let etc = root.join("etc");
    for name in ETC_FROM_HOST {
        let src = Path::new("/etc").join(name);
        if fs::symlink_metadata(&src).is_ok() {
            copy_tree(&src, &etc.join(name))?;
        }
    }
    for (name, content) in [
        ("passwd", PASSWD),
        ("group", GROUP),
        ("hosts", HOSTS),
        ("hostname", "sandbox\n"),
        ("nsswitch.conf", NSSWITCH),
        (
            "resolv.conf",
            "# no network: DNS comes with egress policies\n",
        ),
    ] {
        fs::write(etc.join(name), content)?;
    }
    fs::write(root.join(".paddock-complete"), "")?;
    Ok(())
}

/// Copies a file, directory or symlink, keeping links as links and modes.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        symlink(fs::read_link(src)?, dst)
    } else if ft.is_dir() {
        fs::create_dir_all(dst)?;
        fs::set_permissions(dst, meta.permissions())?;
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        Ok(())
    } else if ft.is_file() {
        fs::copy(src, dst).map(|_| ())
    } else {
        Ok(())
    }
}

/// A sandbox's writable layers (dirs in its run dir) and where each sits
/// in its filesystem: what a snapshot captures.
pub const UPPER_DIRS: [(&str, &str); 2] = [("upper", ""), ("usr-upper", "usr")];

/// The overlay layers of a sandbox whose writable state lives in `run`,
/// with a snapshot's `extra` layers (topmost first) over the variant's.
pub fn layers(
    source: &VariantSource,
    host_base: &Path,
    extra: &[PathBuf],
    run: &Path,
) -> Vec<OverlayLayer> {
    let over = |base: PathBuf| extra.iter().cloned().chain([base]).collect::<Vec<_>>();
    match source {
        VariantSource::Host => vec![
            OverlayLayer {
                target: "/".into(),
                lower: over(host_base.to_path_buf()),
                upper: run.join("upper"),
                work: run.join("work"),
            },
            OverlayLayer {
                target: "/usr".into(),
                // What a snapshot changed under /usr is its layer's usr/.
                lower: extra
                    .iter()
                    .map(|l| l.join("usr"))
                    .filter(|d| d.is_dir())
                    .chain([PathBuf::from("/usr")])
                    .collect(),
                upper: run.join("usr-upper"),
                work: run.join("usr-work"),
            },
        ],
        VariantSource::Directory(dir) => vec![OverlayLayer {
            target: "/".into(),
            lower: over(dir.clone()),
            upper: run.join("upper"),
            work: run.join("work"),
        }],
    }
}

/// The overlay of an image's unpacked layers (topmost first) with the
/// sandbox's own writable layer on top.
pub fn image_layers(dirs: &[PathBuf], run: &Path) -> Vec<OverlayLayer> {
    vec![OverlayLayer {
        target: "/".into(),
        lower: dirs.to_vec(),
        upper: run.join("upper"),
        work: run.join("work"),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_base_has_etc_and_links() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().join("host");
        ensure_host_base(&base).expect("base builds");
        assert!(base.join(".paddock-complete").exists());
        assert_eq!(
            fs::read_link(base.join("bin")).ok(),
            fs::read_link("/bin").ok()
        );
        let passwd = fs::read_to_string(base.join("etc/passwd")).expect("passwd");
        assert!(passwd.starts_with("root:x:0:0"));
        // The host's own account database is never copied in.
        assert!(!base.join("etc/shadow").exists());
        ensure_host_base(&base).expect("second call is a no-op");
    }
}
