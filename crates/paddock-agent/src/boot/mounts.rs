//! The sandbox's root filesystem, built inside its own mount namespace:
//! overlays of the image layers, a minimal /dev, a fresh /proc with the
//! kernel's sensitive files masked, a read-only /sys, then a pivot into it.
//!
//! With a user namespace, each lower layer is first bound idmapped
//! through it under the run dir (`lower/N`), so host-root-owned layers
//! look root-owned inside; the overlay is mounted from the run dir with
//! relative paths, so the sandbox's `/proc/self/mountinfo` names no host
//! path.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use paddock_agent_protocol::config::LOOP_RECORD;

use super::{nix_step, step, BindFile, BootConfig, BootError, IdMap, Phases};
use crate::sys;

const NONE: Option<&str> = None;

pub(super) fn build_root(
    config: &BootConfig,
    idmap: Option<BorrowedFd<'_>>,
    owner: Option<IdMap>,
    phases: &mut Phases,
) -> Result<(), BootError> {
    mount_layers(config, idmap, phases)?;
    let root = &config.root_mountpoint;
    build_dev(root, owner)?;
    phases.mark("dev");
    // A sandbox with a user namespace of its own gets low ports (see
    // `build_proc`); one without runs as host root and has them.
    build_proc(root, owner.is_some())?;
    phases.mark("proc");
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
    phases.mark("sys");
    if let Some(views) = &config.proc_views {
        bind_views(root, views)?;
        phases.mark("proc_views");
    }
    bind_files(root, &config.bind_files, Staging::On(&root.join("dev")))?;
    bind_devices(root, &config.devices, idmap)?;
    phases.mark("bind_files");
    Ok(())
}

/// Makes the mount tree private (nothing mounted after may propagate back
/// to the host), mounts the sandbox's disk if it has one, and mounts its
/// overlays on its root mountpoint; with `idmap`, over idmapped binds of
/// the lower layers, and with upper dirs owned by the sandbox's root.
pub(crate) fn mount_layers(
    config: &BootConfig,
    idmap: Option<BorrowedFd<'_>>,
    phases: &mut Phases,
) -> Result<(), BootError> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(nix_step("make the mount tree private"))?;
    phases.mark("private");
    let root = &config.root_mountpoint;
    // Paths in the overlays' options are relative to the run dir.
    let run = root.parent().unwrap_or(Path::new("/")).to_path_buf();
    nix::unistd::chdir(&run).map_err(nix_step("enter the run dir"))?;
    if let Some(disk) = &config.disk {
        mount_disk(disk, phases)?;
    }
    let owner = config.id_map.filter(|_| idmap.is_some());
    let mut bound = 0usize;
    for layer in &config.layers {
        ensure_dir(&layer.upper)?;
        ensure_dir(&layer.work)?;
        // The overlay's top directory is its upper dir's.
        give_to_root(&layer.upper, owner, &layer.target)?;
        let mut lower = Vec::with_capacity(layer.lower.len());
        for dir in &layer.lower {
            match idmap {
                Some(ns) => {
                    let at = PathBuf::from(format!("lower/{bound}"));
                    bound += 1;
                    bind_idmapped(dir, &run.join(&at), ns)?;
                    lower.push(at.display().to_string());
                }
                None => lower.push(dir.display().to_string()),
            }
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            relative_to(&run, &layer.upper).display(),
            relative_to(&run, &layer.work).display()
        );
        let target = root.join(layer.target.trim_start_matches('/'));
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(nix_step(format!("mount the overlay for {}", layer.target)))?;
    }
    phases.mark("layers");
    Ok(())
}

/// Mounts the sandbox's disk image on a loop device that goes when the
/// mount does (with the last process of this mount namespace), and pins
/// the disk's root at [`super::DISK_FD`].
fn mount_disk(disk: &super::Disk, phases: &mut Phases) -> Result<(), BootError> {
    let image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk.image)
        .map_err(step(format!("open the disk {}", disk.image.display())))?;
    let (device, _held) =
        sys::loop_attach(image.as_fd()).map_err(step("attach the disk to a loop device"))?;
    // For the server, which removes the device once the sandbox is gone
    // (the kernel only unbinds it); the run dir is this directory.
    if let Some(n) = device
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_prefix("loop"))
    {
        fs::write(LOOP_RECORD, n).map_err(step("record the disk's loop device"))?;
    }
    phases.mark("loop");
    ensure_dir(&disk.mountpoint)?;
    mount(
        Some(device.as_path()),
        &disk.mountpoint,
        Some("ext4"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        // No background zeroing of inode tables: it would write the
        // whole sparse image's tables out on the host.
        Some("noinit_itable"),
    )
    .map_err(nix_step("mount the disk"))?;
    let dir = fs::File::open(&disk.mountpoint).map_err(step("open the disk's root"))?;
    sys::dup_to_cloexec(dir.as_fd(), super::DISK_FD).map_err(step("pin the disk's root"))?;
    phases.mark("disk_mount");
    Ok(())
}

/// Makes `path` itself (not what it holds or points to) the sandbox
/// root's, when the sandbox has ids of its own (`owner`); `what` names
/// it in errors.
fn give_to_root(path: &Path, owner: Option<IdMap>, what: &str) -> Result<(), BootError> {
    match owner {
        Some(o) => std::os::unix::fs::lchown(path, Some(o.host_base), Some(o.host_base))
            .map_err(step(format!("give {what} to the sandbox's root"))),
        None => Ok(()),
    }
}

fn relative_to<'a>(base: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(base).unwrap_or(path)
}

/// Binds the directory `source` read-only at `target` (made if missing),
/// idmapped through the user namespace `ns`.
fn bind_idmapped(source: &Path, target: &Path, ns: BorrowedFd<'_>) -> Result<(), BootError> {
    ensure_dir(target)?;
    bind_tree(
        source,
        target,
        sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
        Some(ns),
    )
}

/// Binds `source` at the existing `target` with the new mount API: a
/// detached clone gets `attrs` (and its idmap) before anyone can see it.
fn bind_tree(
    source: &Path,
    target: &Path,
    attrs: u64,
    idmap: Option<BorrowedFd<'_>>,
) -> Result<(), BootError> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| BootError::Child(format!("{} has a NUL byte", p.display())))
    };
    let what = source.display();
    let tree = sys::open_tree_clone(&c(source)?).map_err(step(format!("clone {what}")))?;
    sys::set_mount_attrs(tree.as_fd(), attrs, idmap).map_err(step(format!("idmap {what}")))?;
    sys::move_mount_to(tree.as_fd(), &c(target)?).map_err(step(format!("bind {what}")))
}

/// Where [`bind_files`] stages the copies of writable files.
pub(crate) enum Staging<'a> {
    /// A directory of a tmpfs the sandbox has already (its `/dev`): no
    /// file system more. Every file system a sandbox mounts registers a
    /// memory-cgroup-aware shrinker, and the kernel sizes every memory
    /// cgroup on the host by how many there are (1 KiB per 64), so a
    /// file system per sandbox is memory taken from every other (see
    /// `/dev/shm` in `build_dev`). The copies are unlinked once bound:
    /// the binds keep them, and the sandbox finds nothing in `/dev`.
    On(&'a Path),
    /// A small tmpfs of its own mounted beside the root (a microVM's
    /// monitor, which builds no `/dev`).
    OwnTmpfs,
}

/// Binds host files over files of the root at `root`. Writable ones
/// (`/etc/resolv.conf`) are copies staged on a tmpfs of the sandbox's
/// own (`staging`): a bind shows its source's path in the sandbox's
/// mountinfo, and no host path may show there; and what the sandbox
/// writes to them is bounded by that tmpfs, not the host's disk.
pub(crate) fn bind_files(
    root: &Path,
    files: &[BindFile],
    staging: Staging<'_>,
) -> Result<(), BootError> {
    let (files, copies) = stage_writable(root, files, staging)?;
    for file in &files {
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
    for copy in copies {
        fs::remove_file(&copy).map_err(step(format!("unlink {}", copy.display())))?;
    }
    Ok(())
}

/// `files` with each writable one replaced by a copy (same owner and
/// mode) on a tmpfs of this mount namespace only, and the copies to
/// unlink once bound (none on a tmpfs of their own).
fn stage_writable(
    root: &Path,
    files: &[BindFile],
    staging: Staging<'_>,
) -> Result<(Vec<BindFile>, Vec<PathBuf>), BootError> {
    use std::os::unix::fs::MetadataExt;
    if files.iter().all(|f| f.read_only) {
        return Ok((files.to_vec(), Vec::new()));
    }
    let (dir, prefix, unlink) = match staging {
        Staging::On(dir) => (dir.to_path_buf(), ".staged-", true),
        Staging::OwnTmpfs => {
            let dir = root.with_file_name("staged");
            ensure_dir(&dir)?;
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("mode=755,size=1m"),
            )
            .map_err(nix_step("mount the staging tmpfs"))?;
            (dir, "", false)
        }
    };
    let mut copies = Vec::new();
    let staged = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.read_only {
                return Ok(f.clone());
            }
            let copy = dir.join(format!("{prefix}{i}"));
            fs::copy(&f.source, &copy).map_err(step(format!("stage {}", f.target)))?;
            let meta = fs::metadata(&f.source).map_err(step(format!("stat {}", f.target)))?;
            std::os::unix::fs::lchown(&copy, Some(meta.uid()), Some(meta.gid()))
                .map_err(step(format!("stage {}", f.target)))?;
            if unlink {
                copies.push(copy.clone());
            }
            Ok(BindFile {
                source: copy,
                ..f.clone()
            })
        })
        .collect::<Result<Vec<_>, BootError>>()?;
    Ok((staged, copies))
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
    restrict(target, &file.target, flags | ro)
}

/// Applies `flags` to the bind at `target` (named `what` in errors).
fn restrict(target: &Path, what: &str, flags: MsFlags) -> Result<(), BootError> {
    mount(
        NONE,
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
        NONE,
    )
    .map_err(nix_step(format!("restrict {what}")))
}

/// Device nodes (GPUs) into the sandbox's own `/dev` tmpfs, which paddock
/// built and no image controls; only targets under `/dev` are taken.
///
/// With a user namespace each node is bound idmapped, so the sandbox's
/// root has the access to it that host root has (a node's host owner is
/// unmapped inside otherwise, leaving only its "other" bits); where the
/// node's filesystem cannot be idmapped, it is a plain bind.
fn bind_devices(
    root: &Path,
    devices: &[BindFile],
    idmap: Option<BorrowedFd<'_>>,
) -> Result<(), BootError> {
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
        if let Some(ns) = idmap {
            match bind_tree(
                &device.source,
                &target,
                sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NOEXEC,
                Some(ns),
            ) {
                Ok(()) => continue,
                // Not idmappable there (EINVAL) or not allowed (EPERM).
                Err(BootError::Step { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) => {}
                Err(e) => return Err(e),
            }
        }
        bind(device, &target, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)?;
    }
    Ok(())
}

/// lxcfs's per-reader files, read-only, over the sandbox's own `/proc`
/// and `/sys` ones. `views` is the server's staging of them (its mount
/// template binds each file lxcfs serves under it, and only those): a
/// bind from there reaches lxcfs's files by crossing a mount, which asks
/// lxcfs nothing, where a lookup in lxcfs's own tree would ask it to
/// revalidate and stat each file (and lxcfs reads the host's whole
/// `/proc/diskstats` to stat that one; with thousands of loop devices
/// that kept concurrent boots waiting for a second).
fn bind_views(root: &Path, views: &Path) -> Result<(), BootError> {
    for file in paddock_agent_protocol::config::PROC_VIEW_FILES {
        let (source, target) = (views.join(file), root.join(file));
        if !target.exists() {
            continue;
        }
        match mount(Some(&source), &target, NONE, MsFlags::MS_BIND, NONE) {
            // Not staged: lxcfs does not serve it, the kernel's stays.
            Err(nix::errno::Errno::ENOENT) => continue,
            bound => bound.map_err(nix_step(format!("bind /{file}")))?,
        }
        restrict(
            &target,
            &format!("/{file}"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        )?;
    }
    Ok(())
}

fn ensure_dir(p: &Path) -> Result<(), BootError> {
    fs::create_dir_all(p).map_err(step(format!("create {}", p.display())))
}

/// The `uid=…,gid=…` options that make a tmpfs root-owned inside a
/// sandbox whose ids are `owner` (empty without one).
fn owner_options(owner: Option<IdMap>) -> String {
    owner.map_or_else(String::new, |o| format!(",uid={0},gid={0}", o.host_base))
}

fn build_dev(root: &Path, owner: Option<IdMap>) -> Result<(), BootError> {
    let dev = root.join("dev");
    ensure_dir(&dev)?;
    let owned = owner_options(owner);
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(format!("mode=755,size=65536k{owned}").as_str()),
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
        give_to_root(&p, owner, &format!("/dev/{name}"))?;
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
    // /dev/shm is a directory of /dev's tmpfs, bound over itself to be
    // nodev, not a tmpfs of its own: every file system a sandbox mounts
    // registers a memory-cgroup-aware shrinker, and each memory cgroup on
    // the host is sized by how many there are (1 KiB per 64), so one file
    // system less per sandbox is memory saved in every other.
    let shm = dev.join("shm");
    ensure_dir(&shm)?;
    fs::set_permissions(&shm, fs::Permissions::from_mode(0o1777))
        .map_err(step("chmod /dev/shm"))?;
    give_to_root(&shm, owner, "/dev/shm")?;
    mount(Some(&shm), &shm, NONE, MsFlags::MS_BIND, NONE).map_err(nix_step("bind /dev/shm"))?;
    mount(
        NONE,
        &shm,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        NONE,
    )
    .map_err(nix_step("make /dev/shm nodev"))?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let p = dev.join(link);
        symlink(to, &p).map_err(step(format!("link /dev/{link}")))?;
        give_to_root(&p, owner, &format!("/dev/{link}"))?;
    }
    Ok(())
}

/// Mounts the sandbox's `/proc`, masked and partly read-only as runc
/// does; with `allow_low_ports`, first lets any of its processes bind a
/// port below 1024.
fn build_proc(root: &Path, allow_low_ports: bool) -> Result<(), BootError> {
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
    if allow_low_ports {
        // Binding a port below 1024 needs `CAP_NET_BIND_SERVICE` in the
        // user namespace that owns the network namespace, the host's: in
        // the sandbox's own namespace any process may bind any port, as a
        // root of a machine of its own could. Written by this process
        // (host root, in the sandbox's network namespace) through the
        // sandbox's own `/proc`, not the host's: every network
        // namespace's `/proc/sys/net` entries that were ever looked up
        // through one proc mount share its dcache chain, which the kernel
        // walks on each lookup (12 ms a boot with 5,000 live sandboxes).
        fs::write(
            proc_dir.join("sys/net/ipv4/ip_unprivileged_port_start"),
            "0",
        )
        .map_err(step("allow low ports in the sandbox's network namespace"))?;
    }
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
