//! The mount namespace sandboxes are made from.
//!
//! A sandbox's boot unshares its mount namespace, which copies every
//! mount of the namespace it starts in, and then makes them all private
//! and detaches them at the pivot: three passes over the whole mount
//! table. In the host's namespace that table grows with the sandboxes,
//! because each one's network namespace is pinned by a bind mount (as
//! `ip netns` does), so each create cost more than the last (create
//! p50 28 ms at 500 live VMs, 56 ms at 2,000).
//!
//! So the server keeps one lean namespace: a private copy of the host's,
//! made once at start (after lxcfs is mounted), with every namespace pin
//! (`nsfs` mount) detached. The boot helper joins it before it unshares,
//! so a sandbox copies the few dozen mounts the host had at start,
//! whatever runs beside it. Nothing a sandbox needs is mounted on the
//! host later: its disk is mounted inside its own namespace, and volumes
//! are injected into a running sandbox from the host's.
//!
//! No pin is needed: a parked thread of the server holds the namespace,
//! and sandboxes are only booted while the server runs.
//!
//! The template also stages lxcfs's per-sandbox views: each file lxcfs
//! serves is bound over an empty file on a small tmpfs of the template's
//! own, and a boot binds them from there. Reaching a file across a mount
//! asks lxcfs nothing; looking it up in lxcfs's tree makes the kernel
//! ask lxcfs to revalidate and stat it, and lxcfs reads the host's whole
//! `/proc/diskstats` (a line per block device, read back quadratically)
//! to stat that one: with 5,000 loop devices, eight concurrent boots
//! waited up to 1.4 s on it (create p99 3.5 s).

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use paddock_agent_protocol::config::PROC_VIEW_FILES;

/// `mount`'s absent source, file system type or data.
const NONE: Option<&str> = None;

/// The template; dropping it lets its thread end.
pub struct MountTemplate {
    path: PathBuf,
    views: Option<PathBuf>,
    _release: mpsc::Sender<()>,
}

/// lxcfs's views to stage: its mount, and the host directory (empty on
/// the host) where the template mounts its staging.
pub struct ViewsToStage {
    pub lxcfs: PathBuf,
    pub staging: PathBuf,
}

impl MountTemplate {
    /// Makes the template in a new thread that stays parked in it.
    pub fn create(views: Option<ViewsToStage>) -> io::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (release, parked) = mpsc::channel::<()>();
        if let Some(v) = &views {
            std::fs::create_dir_all(&v.staging)?;
        }
        let staged = views.as_ref().map(|v| v.staging.clone());
        std::thread::Builder::new()
            .name("sandbox-mounts".into())
            .spawn(move || {
                let made = enter_lean_namespace().and_then(|tid| {
                    if let Some(v) = &views {
                        stage_views(v)?;
                    }
                    Ok(tid)
                });
                let ok = made.is_ok();
                let _ = ready_tx.send(made);
                if ok {
                    // Holds the namespace until the template is dropped.
                    let _ = parked.recv();
                }
            })?;
        let tid = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the template thread ended early"))??;
        Ok(Self {
            path: PathBuf::from(format!("/proc/{}/task/{tid}/ns/mnt", std::process::id())),
            views: staged,
            _release: release,
        })
    }

    /// The namespace file the boot helper joins.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Where lxcfs's views are staged in the template, if they are.
    pub fn views(&self) -> Option<&std::path::Path> {
        self.views.as_deref()
    }
}

/// Binds each of [`PROC_VIEW_FILES`] that lxcfs serves over an empty file
/// of the same relative path on a tmpfs at `staging` (in the template
/// only; the host sees an empty directory). A file lxcfs does not serve
/// (an older version) is left out, so a boot need not ask.
fn stage_views(v: &ViewsToStage) -> io::Result<()> {
    mount(
        Some("tmpfs"),
        &v.staging,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700,size=64k"),
    )?;
    for file in PROC_VIEW_FILES {
        let source = v.lxcfs.join(file);
        if !source.exists() {
            continue;
        }
        let target = v.staging.join(file);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::File::create(&target)?;
        mount(Some(&source), &target, NONE, MsFlags::MS_BIND, NONE)?;
    }
    Ok(())
}

/// Moves the calling thread into a private copy of its mount namespace
/// without namespace pins; returns its thread id.
fn enter_lean_namespace() -> io::Result<nix::unistd::Pid> {
    // A thread shares its filesystem context with the process until it
    // unshares it, and only then may it have a mount namespace of its own.
    unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)?;
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)?;
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo")?;
    // Deepest first, so a pin under another mount goes before it.
    for target in nsfs_mounts(&mountinfo).into_iter().rev() {
        // One that is already gone with its parent is not an error.
        let _ = umount2(target.as_str(), MntFlags::MNT_DETACH);
    }
    Ok(nix::unistd::gettid())
}

/// The mount points of `mountinfo`'s `nsfs` mounts (namespace pins), in
/// the order listed, with the kernel's octal escapes undone.
fn nsfs_mounts(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            (fs.split_whitespace().next() == Some("nsfs"))
                .then(|| fields.split_whitespace().nth(4).map(unescape))
                .flatten()
        })
        .collect()
}

/// `\040` and the like, as mountinfo writes space, tab, newline, `\`.
/// By hand: two fields of mountinfo are all that is read here, and the
/// `procfs` crate would bring a whole /proc model for them.
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_pins_are_found_by_their_filesystem() {
        let info = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
900 27 0:4 net:[4026532511] /tmp/d/net/netns/10.88.0.2 rw - nsfs nsfs rw
901 27 0:4 net:[4026532512] /tmp/my\\040dir/10.88.0.3 rw - nsfs nsfs rw
902 27 0:50 / /tmp/d/lxcfs rw - fuse.lxcfs lxcfs rw";
        assert_eq!(
            nsfs_mounts(info),
            ["/tmp/d/net/netns/10.88.0.2", "/tmp/my dir/10.88.0.3"]
        );
    }

    #[test]
    fn the_template_holds_no_pin() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // A namespace pinned on the host, as the network pool pins them.
        let dir = tempfile::tempdir().expect("dir");
        let pin = dir.path().join("10.99.0.2");
        paddock_net::netns::create(&pin).expect("pin");
        let pinned = pin.display().to_string();
        let host = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(nsfs_mounts(&host).contains(&pinned));

        let template = MountTemplate::create(None).expect("template");
        let ns = std::fs::read_link(template.path()).expect("ns link");
        let own = std::fs::read_link("/proc/thread-self/ns/mnt").expect("own ns");
        assert_ne!(ns, own, "a namespace of its own");
        // The parked thread's own mountinfo: /proc/PID/task/TID/mountinfo.
        let thread_dir = template
            .path()
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the thread's /proc dir");
        let lean = std::fs::read_to_string(thread_dir.join("mountinfo")).expect("mountinfo");
        assert!(nsfs_mounts(&lean).is_empty(), "{lean}");
        assert!(lean.lines().count() < host.lines().count());
        umount2(&pin, MntFlags::MNT_DETACH).expect("unpin");
    }

    #[test]
    fn views_are_staged_in_the_template_only() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        // Stands in for lxcfs: it serves meminfo and uptime, not cpuinfo.
        let lxcfs = dir.path().join("lxcfs");
        std::fs::create_dir_all(lxcfs.join("proc")).expect("proc");
        std::fs::write(lxcfs.join("proc/meminfo"), "MemTotal: 1 kB\n").expect("meminfo");
        std::fs::write(lxcfs.join("proc/uptime"), "1.0 1.0\n").expect("uptime");
        let staging = dir.path().join("views");
        let template = MountTemplate::create(Some(ViewsToStage {
            lxcfs,
            staging: staging.clone(),
        }))
        .expect("template");
        assert_eq!(template.views(), Some(staging.as_path()));
        // Seen from inside the template (its thread's root).
        let inside = template
            .path()
            .parent()
            .and_then(std::path::Path::parent)
            .expect("the thread's /proc dir")
            .join("root")
            .join(staging.strip_prefix("/").expect("absolute"));
        assert_eq!(
            std::fs::read_to_string(inside.join("proc/meminfo")).expect("staged"),
            "MemTotal: 1 kB\n"
        );
        assert!(inside.join("proc/uptime").is_file());
        assert!(
            !inside.join("proc/cpuinfo").exists(),
            "not served, not staged"
        );
        // The host sees the empty directory only.
        assert_eq!(std::fs::read_dir(&staging).expect("host dir").count(), 0);
        drop(template);
    }
}
