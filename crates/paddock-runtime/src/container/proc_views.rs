//! A sandbox's own view of its size: `/proc/meminfo`, `cpuinfo`, `stat`,
//! `uptime`, `loadavg`, `swaps`, `diskstats` and
//! `/sys/devices/system/cpu/online` as lxcfs serves them (the field's
//! tool, as LXC and Incus use it), computed per reader from its cgroups:
//! its memory limit, its CPU quota, its own uptime and load. Without it
//! pip, node, the JVM and build tools size themselves for the host.
//!
//! One lxcfs per data dir, mounted at `DATA/lxcfs`, started detached (in
//! its own process group, nobody's child once the server goes) so the
//! views stay up across server restarts: a restarted server finds the
//! mount answering and uses it. `purge` unmounts it and stops it.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_core::RuntimeError;

const MOUNT_WAIT: Duration = Duration::from_secs(10);

fn mountpoint(data_dir: &Path) -> PathBuf {
    data_dir.join("lxcfs")
}

fn pidfile(data_dir: &Path) -> PathBuf {
    data_dir.join("lxcfs.pid")
}

/// Whether lxcfs answers at `dir`.
fn answering(dir: &Path) -> bool {
    fs::metadata(dir.join("proc/meminfo")).is_ok()
}

/// The lxcfs mount of `data_dir`, started if it is not up; `None` (with
/// a warning) when lxcfs is not installed or cannot run here, in which
/// case sandboxes see the host's figures.
pub fn ensure(data_dir: &Path) -> Result<Option<PathBuf>, RuntimeError> {
    let dir = mountpoint(data_dir);
    if answering(&dir) {
        return Ok(Some(dir));
    }
    // A mount whose daemon died answers ENOTCONN: take it away first.
    stop(data_dir);
    fs::create_dir_all(&dir).map_err(|e| RuntimeError::host(dir.display().to_string(), e))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("lxcfs.log"))
        .map_err(|e| RuntimeError::host("DATA/lxcfs.log", e))?;
    let spawned = Command::new("lxcfs")
        // CPU figures from the CPU quota, a per-sandbox load average.
        .args(["--enable-cfs", "--enable-loadavg", "--pidfile"])
        .arg(pidfile(data_dir))
        .arg(&dir)
        .env_clear()
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(
                "lxcfs is not installed (Debian's lxcfs): sandboxes see the host's memory and CPUs in /proc"
            );
            return Ok(None);
        }
        Err(e) => return Err(RuntimeError::host("start lxcfs", e)),
    };
    let started = Instant::now();
    while !answering(&dir) {
        if let Ok(Some(status)) = child.try_wait() {
            tracing::warn!(%status, "lxcfs exited at start (see DATA/lxcfs.log): sandboxes see the host's figures in /proc");
            return Ok(None);
        }
        if started.elapsed() > MOUNT_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RuntimeError::Setup(
                "lxcfs did not mount its views in time".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reaped when it exits, so it never lingers as a zombie of the server.
    std::thread::spawn(move || child.wait());
    Ok(Some(dir))
}

/// Unmounts `data_dir`'s lxcfs views and stops their daemon.
pub fn stop(data_dir: &Path) {
    let dir = mountpoint(data_dir);
    let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
    if let Some(pid) = fs::read_to_string(pidfile(data_dir))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    {
        // Only an lxcfs serving this data dir: a recycled pid is left be.
        let ours = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
            .unwrap_or(false);
        if ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let _ = fs::remove_file(pidfile(data_dir));
}
