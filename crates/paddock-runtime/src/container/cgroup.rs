//! Resource limits through cgroups, on cgroup v1 hosts (this build machine:
//! memory, pids and cpu each on its own v1 hierarchy) and pure v2 hosts.
//!
//! Each server instance owns `paddock/<instance>/` in every hierarchy it
//! uses, and each sandbox one directory below it, named by its VM id. The
//! boot helper joins the sandbox's directories before it forks, so every
//! process of the sandbox is accounted and limited from its first
//! instruction, and killing "everything in the cgroup" is exact.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock_core::model::{Resources, UsageCounters};
use paddock_core::RuntimeError;

const V1_CONTROLLERS: [&str; 6] = ["memory", "pids", "cpu", "freezer", "cpuacct", "cpuset"];
/// Hierarchies a v1 host may lack: the freezer (snapshots pause without
/// it), and cpuacct and cpuset, which lxcfs reads a sandbox's CPU
/// figures through (it finds the quota under the sandbox's cpuset path).
const V1_OPTIONAL: [&str; 3] = ["freezer", "cpuacct", "cpuset"];
/// The CFS period quotas are set against: the kernel's default, which
/// v1 cpu cgroups start with (v2's `cpu.max` is written with it).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
enum Layout {
    /// One directory per controller hierarchy, each the instance's base.
    V1 { bases: Vec<(String, PathBuf)> },
    /// The instance's base in the unified hierarchy.
    V2 { base: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Cgroups {
    layout: Layout,
}

/// A v1 cpuset starts with no CPUs and no memory nodes, and no process
/// may join it so: each directory from the root down to the instance's
/// takes its parent's, and the instance's new children copy it
/// (`cgroup.clone_children`). Sandboxes are not pinned by their cpuset:
/// it holds every CPU.
fn inherit_cpusets(root: &Path, rel: &Path) -> Result<(), RuntimeError> {
    let mut parent = root.to_path_buf();
    for part in rel.components() {
        let dir = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = fs::read_to_string(dir.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let inherited = fs::read_to_string(parent.join(file))
                    .map_err(host_err(parent.join(file).display().to_string()))?;
                write(&dir.join(file), inherited.trim())?;
            }
        }
        parent = dir;
    }
    write(&parent.join("cgroup.clone_children"), "1")
}

fn host_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::host(what, e)
}

/// Mount points of cgroup filesystems, from /proc/self/mountinfo:
/// `(fstype, mount point, super options)`.
fn cgroup_mounts() -> io::Result<Vec<(String, PathBuf, String)>> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let _source = r.next()?;
            let options = r.next().unwrap_or("");
            (fstype == "cgroup" || fstype == "cgroup2").then(|| {
                (
                    fstype.to_owned(),
                    PathBuf::from(mount_point),
                    options.to_owned(),
                )
            })
        })
        .collect())
}

impl Cgroups {
    /// Finds the host's cgroup layout and prepares `paddock/<instance>`.
    pub fn detect(instance: &str) -> Result<Self, RuntimeError> {
        let mounts = cgroup_mounts().map_err(host_err("/proc/self/mountinfo"))?;
        let rel = Path::new("paddock").join(instance);
        let v1_memory = mounts
            .iter()
            .any(|(t, _, o)| t == "cgroup" && o.split(',').any(|x| x == "memory"));
        if !v1_memory {
            let (_, root, _) = mounts
                .iter()
                .find(|(t, _, _)| t == "cgroup2")
                .ok_or_else(|| RuntimeError::Setup("no cgroup filesystem is mounted".into()))?;
            return Self::v2_at(root, &rel);
        }
        let layout = {
            let mut bases = Vec::new();
            for controller in V1_CONTROLLERS {
                let Some((_, mp, _)) = mounts
                    .iter()
                    .find(|(t, _, o)| t == "cgroup" && o.split(',').any(|x| x == controller))
                else {
                    if V1_OPTIONAL.contains(&controller) {
                        continue;
                    }
                    return Err(RuntimeError::Setup(format!(
                        "cgroup v1 host without the {controller} controller"
                    )));
                };
                let base = mp.join(&rel);
                // Co-mounted controllers (`cpu,cpuacct`) share a directory.
                if bases.iter().any(|(_, b)| *b == base) {
                    continue;
                }
                fs::create_dir_all(&base).map_err(host_err(base.display().to_string()))?;
                if controller == "cpuset" {
                    inherit_cpusets(mp, &rel)?;
                }
                bases.push((controller.to_owned(), base));
            }
            Layout::V1 { bases }
        };
        Ok(Self { layout })
    }

    /// The unified (v2) hierarchy mounted at `root`, with this instance at
    /// `root/rel`; controllers are enabled in every ancestor.
    fn v2_at(root: &Path, rel: &Path) -> Result<Self, RuntimeError> {
        let base = root.join(rel);
        fs::create_dir_all(&base).map_err(host_err(base.display().to_string()))?;
        let mut dir = root.to_path_buf();
        enable_v2_controllers(&dir)?;
        for part in rel.components() {
            dir.push(part);
            enable_v2_controllers(&dir)?;
        }
        Ok(Self {
            layout: Layout::V2 { base },
        })
    }

    /// Creates the sandbox's cgroups with `resources` applied; returns the
    /// `cgroup.procs` files the boot helper joins.
    pub fn create(&self, id: &str, resources: &Resources) -> Result<Vec<PathBuf>, RuntimeError> {
        let dirs = self.dirs(id);
        for d in &dirs {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RuntimeError::host(d.display().to_string(), e)),
            }
        }
        if let Err(e) = self.apply(id, resources) {
            let _ = self.remove(id);
            return Err(e);
        }
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 { bases } => bases.iter().map(|(_, b)| b.join(id)).collect(),
            Layout::V2 { base } => vec![base.join(id)],
        }
    }

    fn v1_dir(&self, controller: &str, id: &str) -> Option<PathBuf> {
        match &self.layout {
            Layout::V1 { bases } => bases
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, b)| b.join(id)),
            Layout::V2 { .. } => None,
        }
    }

    /// Applies limits to an existing sandbox's cgroups.
    pub fn apply(&self, id: &str, r: &Resources) -> Result<(), RuntimeError> {
        let memory = r.memory_bytes();
        let quota = u64::from(r.cpu_millis()) * CPU_PERIOD_US / 1000;
        match &self.layout {
            Layout::V1 { .. } => {
                let mem = self
                    .v1_dir("memory", id)
                    .ok_or_else(|| RuntimeError::Setup("no memory cgroup".into()))?;
                set_v1_memory(&mem, memory)?;
                if let Some(pids) = self.v1_dir("pids", id) {
                    write(&pids.join("pids.max"), &r.pids_max().to_string())?;
                }
                if let Some(cpu) = self.v1_dir("cpu", id) {
                    // The period is the kernel's default (every new cpu
                    // cgroup starts with it, and nothing here changes
                    // it): writing it again would cost a second walk of
                    // every cpu cgroup on the host, which the kernel makes
                    // on each bandwidth write (`__cfs_schedulable`).
                    write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            Layout::V2 { base } => {
                let d = base.join(id);
                write(&d.join("memory.max"), &memory.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
                write(&d.join("pids.max"), &r.pids_max().to_string())?;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// How many processes the OOM killer has ended in the sandbox so far.
    pub fn oom_kills(&self, id: &str) -> u64 {
        let (file, key) = match &self.layout {
            Layout::V1 { .. } => match self.v1_dir("memory", id) {
                Some(d) => (d.join("memory.oom_control"), "oom_kill"),
                None => return 0,
            },
            Layout::V2 { base } => (base.join(id).join("memory.events"), "oom_kill"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// The sandbox's CPU time so far and the memory charged to it now
    /// (page cache included: it is host memory the sandbox holds); `None`
    /// when its cgroup is gone.
    pub fn usage(&self, id: &str) -> Option<UsageCounters> {
        let number =
            |path: PathBuf| -> Option<u64> { fs::read_to_string(path).ok()?.trim().parse().ok() };
        match &self.layout {
            Layout::V1 { .. } => {
                // cpuacct is often co-mounted with cpu, under cpu's name.
                let cpu = self
                    .v1_dir("cpuacct", id)
                    .or_else(|| self.v1_dir("cpu", id))?;
                let memory = self.v1_dir("memory", id)?;
                Some(UsageCounters {
                    cpu_ns: number(cpu.join("cpuacct.usage"))?,
                    memory_bytes: number(memory.join("memory.usage_in_bytes"))?,
                })
            }
            Layout::V2 { base } => {
                let dir = base.join(id);
                let stat = fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let usec: u64 = stat.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "usage_usec").then(|| v.trim().parse().ok()).flatten()
                })?;
                Some(UsageCounters {
                    cpu_ns: usec.saturating_mul(1000),
                    memory_bytes: number(dir.join("memory.current"))?,
                })
            }
        }
    }

    /// Kills every process left in the sandbox's cgroups and removes them.
    /// Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dirs = self.dirs(id);
        if let Layout::V2 { base } = &self.layout {
            let kill = base.join(id).join("cgroup.kill");
            if kill.exists() {
                let _ = fs::write(&kill, "1");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in dirs {
            loop {
                match fs::read_to_string(d.join("cgroup.procs")) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(RuntimeError::host(d.display().to_string(), e)),
                    Ok(procs) => {
                        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        match fs::remove_dir(&d) {
                            Ok(()) => break,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                            // Busy until the killed processes are gone.
                            Err(e) if Instant::now() >= deadline => {
                                return Err(RuntimeError::host(d.display().to_string(), e))
                            }
                            // Killed processes leave within a millisecond or two.
                            Err(_) => std::thread::sleep(Duration::from_micros(500)),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Freezes (or thaws) every process of the sandbox, and waits until
    /// the kernel reports the whole group in that state, so a snapshot
    /// taken in between sees no half-written change.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), RuntimeError> {
        let (file, value, done): (PathBuf, &str, &str) = match &self.layout {
            Layout::V1 { .. } => {
                let dir = self.v1_dir("freezer", id).ok_or_else(|| {
                    RuntimeError::Setup("the freezer cgroup controller is not mounted".into())
                })?;
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (dir.join("freezer.state"), v, v)
            }
            Layout::V2 { base } => {
                let v = if frozen { "1" } else { "0" };
                (base.join(id).join("cgroup.freeze"), v, v)
            }
        };
        write(&file, value)?;
        // v1 reports FREEZING, v2 keeps `frozen 0` in cgroup.events, until
        // every task has stopped.
        let (state_file, want) = match &self.layout {
            Layout::V1 { .. } => (file.clone(), done.to_owned()),
            Layout::V2 { base } => (
                base.join(id).join("cgroup.events"),
                format!("frozen {}", if frozen { 1 } else { 0 }),
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = fs::read_to_string(&state_file)
                .map_err(host_err(state_file.display().to_string()))?;
            if now.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Setup(format!(
                    "the sandbox did not reach {want:?} within 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The sandbox ids that have a cgroup under this instance.
    pub fn list(&self) -> BTreeSet<String> {
        let bases: Vec<PathBuf> = match &self.layout {
            Layout::V1 { bases } => bases.iter().map(|(_, b)| b.clone()).collect(),
            Layout::V2 { base } => vec![base.clone()],
        };
        bases
            .iter()
            .filter_map(|b| fs::read_dir(b).ok())
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Removes this instance's own (empty) cgroup directories, once it
    /// has no sandboxes. A directory that still holds one stays.
    pub fn remove_instance(&self) {
        let bases: Vec<&PathBuf> = match &self.layout {
            Layout::V1 { bases } => bases.iter().map(|(_, b)| b).collect(),
            Layout::V2 { base } => vec![base],
        };
        for base in bases {
            let _ = fs::remove_dir(base);
        }
    }

    pub fn version(&self) -> &'static str {
        match self.layout {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(host_err(format!("{} <- {value}", path.display())))
}

fn set_v1_memory(dir: &Path, bytes: u64) -> Result<(), RuntimeError> {
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        return write(&limit, &bytes.to_string());
    }
    // memsw must stay >= the limit: raise memsw first when growing, the
    // limit first when shrinking. One order fails where the other works.
    let v = bytes.to_string();
    if write(&memsw, &v).is_ok() {
        write(&limit, &v)
    } else {
        write(&limit, &v)?;
        write(&memsw, &v)
    }
}

fn enable_v2_controllers(dir: &Path) -> Result<(), RuntimeError> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(host_err(dir.display().to_string()))?;
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in ["memory", "pids", "cpu"] {
        if !available.split_whitespace().any(|a| a == c) {
            return Err(RuntimeError::Setup(format!(
                "the cgroup v2 controller {c} is not available in {}",
                dir.display()
            )));
        }
        if !enabled.split_whitespace().any(|a| a == c) {
            fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"))
                .map_err(host_err(format!("enable {c} in {}", dir.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_core::model::Limits;

    /// A directory tree shaped like cgroupfs v2: what paddock writes is
    /// checked here; the kernel's side is exercised on v2 hosts.
    fn fake_v2() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .expect("write");
        fs::write(root.path().join("cgroup.subtree_control"), "").expect("write");
        root
    }

    /// cgroupfs creates a new cgroup's files itself; the fake must too.
    fn populate(dir: &Path) {
        for f in ["cgroup.controllers", "cgroup.subtree_control"] {
            if !dir.join(f).exists() {
                fs::write(
                    dir.join(f),
                    if f == "cgroup.controllers" {
                        "cpu memory pids"
                    } else {
                        ""
                    },
                )
                .expect("write");
            }
        }
    }

    #[test]
    fn v2_limits_are_written_where_the_kernel_reads_them() {
        let root = fake_v2();
        let rel = Path::new("paddock").join("inst");
        fs::create_dir_all(root.path().join(&rel)).expect("mkdir");
        populate(&root.path().join("paddock"));
        populate(&root.path().join(&rel));
        let cg = Cgroups::v2_at(root.path(), &rel).expect("v2 layout");
        assert_eq!(cg.version(), "v2");
        // subtree_control receives "+controller" writes, one at a time.
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).expect("read"),
            "+cpu"
        );

        let limits = Limits {
            pids_max: 99,
            ..Limits::default()
        };
        let r = Resources::new(Some(256), Some(2), &limits).expect("valid");
        let sandbox = root.path().join(&rel).join("vm_x");
        fs::create_dir_all(&sandbox).expect("mkdir");
        fs::write(sandbox.join("memory.swap.max"), "max").expect("write");
        let procs = cg.create("vm_x", &r).expect("create");
        assert_eq!(procs, vec![sandbox.join("cgroup.procs")]);
        let read = |f: &str| fs::read_to_string(sandbox.join(f)).expect(f);
        assert_eq!(read("memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(read("pids.max"), "99");
        assert_eq!(read("cpu.max"), "200000 100000");

        fs::write(
            sandbox.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .expect("write");
        assert_eq!(cg.oom_kills("vm_x"), 2);
        fs::write(
            sandbox.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\n",
        )
        .expect("write");
        fs::write(sandbox.join("memory.current"), "4096\n").expect("write");
        assert_eq!(
            cg.usage("vm_x"),
            Some(UsageCounters {
                cpu_ns: 1_500_000,
                memory_bytes: 4096
            })
        );
        assert_eq!(cg.usage("vm_gone"), None);
        assert_eq!(
            cg.list().into_iter().collect::<Vec<_>>(),
            vec!["vm_x".to_owned()]
        );
    }

    #[test]
    fn a_missing_v2_controller_is_a_clear_error() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("cgroup.controllers"), "cpu pids").expect("write");
        fs::write(root.path().join("cgroup.subtree_control"), "").expect("write");
        let err =
            Cgroups::v2_at(root.path(), Path::new("paddock/x")).expect_err("no memory controller");
        assert!(
            err.to_string().contains("could not be managed") || err.to_string().contains("memory"),
            "{err}"
        );
    }
}
