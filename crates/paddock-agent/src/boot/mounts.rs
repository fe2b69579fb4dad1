//! The sandbox's root filesystem, built inside its own mount namespace:
//! overlays of the image layers, a minimal /dev, a fresh /proc with the
//! kernel's sensitive files masked, a read-only /sys, then a pivot into it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::{nix_step, step, BindFile, BootConfig, BootError};
use crate::sys;

const NONE: Option<&str> = None;

pub(super) fn build_root(config: &BootConfig) -> Result<(), BootError> {
    mount_layers(config)?;
    let root = &config.root_mountpoint;
    build_dev(root)?;
    build_proc(root)?;
    let sys_dir = root.join("sys");
    ensure_dir(&sys_dir)?;
    mount(
        Some("sysfs"),
        &sys_dir,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(nix_step("mount /sys"))?;
    bind_files(root, &config.bind_files)?;
    bind_devices(root, &config.devices)?;
    Ok(())
}

/// Makes the mount tree private (nothing mounted after may propagate back
/// to the host) and mounts the sandbox's overlays on its root mountpoint.
pub(crate) fn mount_layers(config: &BootConfig) -> Result<(), BootError> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(nix_step("make the mount tree private"))?;
    let root = &config.root_mountpoint;
    for layer in &config.layers {
        let target = root.join(layer.target.trim_start_matches('/'));
        let lower = layer
            .lower
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let options = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            layer.upper.display(),
            layer.work.display()
        );
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(nix_step(format!("mount the overlay for {}", layer.target)))?;
    }
    Ok(())
}

/// Binds host files over files of the root at `root`.
pub(crate) fn bind_files(root: &Path, files: &[BindFile]) -> Result<(), BootError> {
    for file in files {
        let target = root.join(file.target.trim_start_matches('/'));
        if let Some(dir) = target.parent() {
            // Still on the host's root here: a symlinked directory in the
            // image (`/etc -> /`) must not lead this outside the sandbox,
            // so each directory is checked (or made) without following.
            let mut walked = root.to_path_buf();
            for part in dir.strip_prefix(root).unwrap_or(dir).components() {
                walked.push(part);
                match fs::symlink_metadata(&walked) {
                    Ok(m) if m.is_dir() => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        fs::create_dir(&walked)
                            .map_err(step(format!("create {}", walked.display())))?;
                    }
                    _ => {
                        return Err(BootError::Child(format!(
                            "{} is not a plain directory in the image",
                            walked.display()
                        )))
                    }
                }
            }
        }
        // A symlink here (Debian images point resolv.conf elsewhere) is
        // replaced: following it could land outside the root.
        if fs::symlink_metadata(&target).is_ok_and(|m| !m.is_file()) {
            fs::remove_file(&target).map_err(step(format!("replace {}", file.target)))?;
        }
        if !target.exists() {
            fs::File::create(&target).map_err(step(format!("create {}", file.target)))?;
        }
        bind(file, &target, MsFlags::MS_NOSUID | MsFlags::MS_NODEV)?;
    }
    Ok(())
}

/// Binds a host file at `target`, then applies `flags` (and read-only
/// when asked) with a remount: a bind ignores them on its first mount.
fn bind(file: &BindFile, target: &Path, flags: MsFlags) -> Result<(), BootError> {
    mount(
        Some(file.source.as_path()),
        target,
        NONE,
        MsFlags::MS_BIND,
        NONE,
    )
    .map_err(nix_step(format!("bind {}", file.target)))?;
    let ro = if file.read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro,
        NONE,
    )
    .map_err(nix_step(format!("restrict {}", file.target)))
}

/// Device nodes (GPUs) into the sandbox's own `/dev` tmpfs, which paddock
/// built and no image controls; only targets under `/dev` are taken.
fn bind_devices(root: &Path, devices: &[BindFile]) -> Result<(), BootError> {
    for device in devices {
        let Some(rel) = device
            .target
            .strip_prefix("/dev/")
            .filter(|r| !r.split('/').any(|p| p.is_empty() || p == "." || p == ".."))
        else {
            return Err(BootError::Child(format!(
                "device {} is not under /dev",
                device.target
            )));
        };
        let target = root.join("dev").join(rel);
        if let Some(dir) = target.parent() {
            ensure_dir(dir)?;
        }
        fs::File::create(&target).map_err(step(format!("create {}", device.target)))?;
        bind(device, &target, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    Ok(())
}

fn ensure_dir(p: &Path) -> Result<(), BootError> {
    fs::create_dir_all(p).map_err(step(format!("create {}", p.display())))
}

fn build_dev(root: &Path) -> Result<(), BootError> {
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(nix_step("mount /dev"))?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(nix_step(format!("create /dev/{name}")))?;
        // mknod is subject to the umask; devices must be usable by all.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
            .map_err(step(format!("chmod /dev/{name}")))?;
    }
    let pts = dev.join("pts");
    ensure_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(nix_step("mount /dev/pts"))?;
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    mount(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=65536k"),
    )
    .map_err(nix_step("mount /dev/shm"))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(step(format!("link /dev/{link}")))?;
    }
    Ok(())
}

fn build_proc(root: &Path) -> Result<(), BootError> {
    let proc_dir = root.join("proc");
    ensure_dir(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        NONE,
    )
    .map_err(nix_step("mount /proc"))?;
    // As runc does: hide what tells about or changes the host kernel.
    let null = root.join("dev/null");
    for masked in [
        "kcore",
        "keys",
        "timer_list",
        "sysrq-trigger",
        "latency_stats",
    ] {
        let p = proc_dir.join(masked);
        if p.exists() {
            mount(Some(&null), &p, NONE, MsFlags::MS_BIND, NONE)
                .map_err(nix_step(format!("mask /proc/{masked}")))?;
        }
    }
    for read_only in ["sys", "irq", "bus", "fs"] {
        let p = proc_dir.join(read_only);
        if p.exists() {
            mount(Some(&p), &p, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
                .map_err(nix_step(format!("bind /proc/{read_only}")))?;
            mount(
                NONE,
                &p,
                NONE,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                NONE,
            )
            .map_err(nix_step(format!("make /proc/{read_only} read-only")))?;
        }
    }
    Ok(())
}

/// Makes `root` the root of this mount namespace and detaches the host's.
pub(super) fn pivot(root: &Path) -> Result<(), BootError> {
    nix::unistd::chdir(root).map_err(nix_step("enter the new root"))?;
    sys::pivot_root_here().map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(nix_step("detach the host's root"))?;
    nix::unistd::chdir("/").map_err(nix_step("chdir /"))?;
    Ok(())
}
