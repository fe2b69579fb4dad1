//! Booting a sandbox: run on the host by the server as
//! `paddock-agent boot CONFIG.json`.
//!
//! 1. join the sandbox's cgroups (so every process of it is accounted from
//!    the first instruction);
//! 2. unshare mount, uts, ipc, net, pid and cgroup namespaces;
//! 3. fork: the child is PID 1 of the new pid namespace. It builds the
//!    root filesystem (overlays, /dev, /proc), binds the agent socket at a
//!    host path, pivots into the root, drops capabilities, sets
//!    no_new_privs and a seccomp filter, then reports ready on a pipe and
//!    serves;
//! 4. the parent waits for that report, prints the child's host pid and
//!    exits, so the sandbox is nobody's child on the host and outlives the
//!    server.
//!
//! Every mount is made inside the sandbox's own mount namespace: when its
//! last process exits the kernel unmounts all of it, so a sandbox can
//! never leak a mount on the host.

pub(crate) mod mounts;
mod phases;
mod security;
mod userns;

pub use paddock_agent_protocol::config::{
    default_env, BindFile, BootConfig, Disk, HostUser, OverlayLayer, DISK_FD,
};
pub use phases::Phases;
pub use userns::IdMap;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sched::{unshare, CloneFlags};

use crate::sys;

/// Why a sandbox could not boot; reported to the server on stderr.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("could not read the boot config {path}")]
    Config {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the boot config is not valid JSON")]
    ConfigJson(#[source] serde_json::Error),
    #[error("{step}")]
    Step {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Child(String),
}

/// What a helper left running: its host pid, and how long each step of
/// getting it there took ([`Phases`], rendered).
#[derive(Debug)]
pub struct Launched {
    pub pid: i32,
    pub phases: String,
}

/// The helper's one line on stdout, which the server parses: the pid,
/// then the phases.
impl std::fmt::Display for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.phases.is_empty() {
            write!(f, "{}", self.pid)
        } else {
            write!(f, "{} {}", self.pid, self.phases)
        }
    }
}

pub(crate) fn step(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let step = step.into();
    move |source| BootError::Step { step, source }
}

pub(crate) fn nix_step(s: impl Into<String>) -> impl FnOnce(nix::Error) -> BootError {
    let f = step(s);
    move |e| f(std::io::Error::from(e))
}

/// Runs the boot helper on the config at `config_path` (`-`: standard
/// input, so the sandbox's command line names no host path); on success
/// prints the sandbox's host pid and returns. The sandbox's PID 1 never
/// returns from here: it serves until it is killed.
pub fn boot(config_path: &Path) -> Result<Launched, BootError> {
    let mut phases = Phases::start();
    let config: BootConfig = read_config(config_path)?;
    phases.mark("config");
    join_cgroups(&config.cgroup_procs)?;
    phases.mark("cgroups");
    set_affinity(&config.cpus)?;
    phases.mark("affinity");
    // Bound before the sandbox's namespaces exist: the socket belongs to
    // the host's network namespace, so the sandbox's `/proc/net/unix`
    // never lists it (nor its host path).
    let listener = bind_agent_socket(&config.socket_path)?;
    phases.mark("socket");
    let user_namespace = match config.id_map {
        Some(map) if !config.on_host => Some(userns::create(map)?),
        _ => None,
    };
    phases.mark("userns");
    if !config.on_host {
        unshare_namespaces(&config)?;
    }
    phases.mark("unshare");
    let launched = fork_reporting("the sandbox's init", |mut ready| {
        let mut phases = Phases::start();
        let prepared = if config.on_host {
            init_on_host(&config)
        } else {
            init(&config, user_namespace.as_ref(), &mut phases)
        };
        match prepared {
            Ok(user) => {
                let _ = ready.write_all(format!("ok {phases}").as_bytes());
                drop(ready);
                let defaults = crate::serve::Defaults {
                    env: config.env.clone(),
                    cwd: config.cwd.clone(),
                    user,
                    // A container's disk is the host's to quiesce (its
                    // cgroup freezes); the agent has none to offer.
                    disk: None,
                };
                match crate::serve(listener, defaults) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("paddock-agent: serve failed: {e}");
                        1
                    }
                }
            }
            Err(e) => {
                let _ = ready.write_all(error_chain(&e).as_bytes());
                1
            }
        }
    })?;
    phases.mark("init");
    Ok(Launched {
        pid: launched.pid,
        phases: format!("{phases} {}", launched.phases),
    })
}

/// Starts the sandbox on `cpus` (inherited by every process of it). Its
/// CPU limit is the cgroup's quota; this is what `nproc` and
/// `sched_getaffinity` report.
fn set_affinity(cpus: &[usize]) -> Result<(), BootError> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .map_err(nix_step(format!("select CPU {cpu}")))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(nix_step("set the sandbox's CPUs"))
}

fn bind_agent_socket(path: &Path) -> Result<UnixListener, BootError> {
    let _ = fs::remove_file(path);
    UnixListener::bind(path).map_err(step(format!("bind the agent socket {}", path.display())))
}

/// Reads and parses a JSON config the server wrote (the boot helper's,
/// the VM monitor's, a microVM guest's).
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BootError> {
    let read = if path == Path::new("-") {
        let mut raw = Vec::new();
        std::io::stdin().read_to_end(&mut raw).map(|_| raw)
    } else {
        fs::read(path)
    };
    let raw = read.map_err(|source| BootError::Config {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&raw).map_err(BootError::ConfigJson)
}

/// Moves this process into each of the `cgroup.procs` files given.
pub(crate) fn join_cgroups(procs: &[PathBuf]) -> Result<(), BootError> {
    let me = std::process::id().to_string();
    for p in procs {
        fs::write(p, &me).map_err(step(format!("join cgroup {}", p.display())))?;
    }
    Ok(())
}

/// Forks `child` (named `what` in errors) and waits for its ready report
/// on a pipe: `ok`, optionally followed by its phases, returns the
/// child's pid; anything else (or the pipe closing unwritten) is the
/// error. The child's return value is its exit code; it never returns
/// here.
pub(crate) fn fork_reporting(
    what: &str,
    child: impl FnOnce(fs::File) -> i32,
) -> Result<Launched, BootError> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(nix_step("create the ready pipe"))?;
    match sys::fork().map_err(step(format!("fork {what}")))? {
        sys::Forked::Parent { child } => {
            drop(ready_w);
            let mut report = String::new();
            fs::File::from(ready_r)
                .read_to_string(&mut report)
                .map_err(step(format!("read the ready report of {what}")))?;
            if report == "ok" || report.starts_with("ok ") {
                return Ok(Launched {
                    pid: child,
                    phases: report[2..].trim().to_owned(),
                });
            }
            if report.is_empty() {
                return Err(BootError::Child(format!(
                    "{what} exited before it was ready"
                )));
            }
            Err(BootError::Child(report))
        }
        sys::Forked::Child => {
            drop(ready_r);
            std::process::exit(child(fs::File::from(ready_w)));
        }
    }
}

/// Gives the sandbox its own namespaces (joining a prepared network
/// namespace when it has one); the next fork is its PID 1.
fn unshare_namespaces(config: &BootConfig) -> Result<(), BootError> {
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    match &config.netns {
        Some(path) => {
            join_network_namespace(path)?;
        }
        None => namespaces |= CloneFlags::CLONE_NEWNET,
    }
    if let Some(path) = &config.mount_namespace {
        let ns = fs::File::open(path)
            .map_err(step(format!("open the mount namespace {}", path.display())))?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNS)
            .map_err(nix_step("join the sandboxes' mount namespace"))?;
    }
    unshare(namespaces).map_err(nix_step("unshare namespaces"))
}

/// The setup of a host-process agent: its own session, its log and its
/// working directory. It becomes the subreaper of what it runs, so
/// daemonized commands are still reaped by it (and die with its cgroup),
/// then drops to its host user for good: no capability, no setuid
/// escalation (`no_new_privs`), not dumpable.
fn init_on_host(config: &BootConfig) -> Result<Option<crate::serve::RunAs>, BootError> {
    nix::unistd::setsid().map_err(nix_step("setsid"))?;
    redirect_stdio(&config.log_path)?;
    sys::set_child_subreaper().map_err(step("become a subreaper"))?;
    if let Some(user) = config.host_user {
        use nix::unistd::{Gid, Uid};
        let gid = Gid::from_raw(user.gid);
        nix::unistd::setgroups(&[gid]).map_err(nix_step("set the host user's groups"))?;
        nix::unistd::setresgid(gid, gid, gid).map_err(nix_step("become the host group"))?;
        let uid = Uid::from_raw(user.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(nix_step("become the host user"))?;
        nix::sys::prctl::set_no_new_privs().map_err(nix_step("set no_new_privs"))?;
        nix::sys::prctl::set_dumpable(false).map_err(nix_step("make the agent non-dumpable"))?;
    }
    if let Some(cwd) = &config.cwd {
        fs::create_dir_all(cwd).map_err(step(format!("create the working directory {cwd}")))?;
    }
    Ok(None)
}

/// The setup PID 1 does before it serves. Everything that needs host
/// root (mounts, hostname, loopback) comes first; then PID 1 enters the
/// sandbox's user namespace, if it has one, and locks itself down.
fn init(
    config: &BootConfig,
    user_namespace: Option<&std::os::fd::OwnedFd>,
    phases: &mut Phases,
) -> Result<Option<crate::serve::RunAs>, BootError> {
    nix::unistd::setsid().map_err(nix_step("setsid"))?;
    redirect_stdio(&config.log_path)?;
    phases.mark("stdio");
    let owner = config.id_map.filter(|_| user_namespace.is_some());
    mounts::build_root(config, user_namespace.map(|ns| ns.as_fd()), owner, phases)?;
    nix::unistd::sethostname(&config.hostname).map_err(nix_step("set the hostname"))?;
    sys::loopback_up().map_err(step("bring up loopback"))?;
    phases.mark("loopback");
    mounts::pivot(&config.root_mountpoint)?;
    phases.mark("pivot");
    if let Some(ns) = user_namespace {
        userns::enter(ns)?;
    }
    let user = working_dir_and_user(config.cwd.as_deref(), config.user.as_deref())?;
    security::lock_down()?;
    phases.mark("lock_down");
    Ok(user)
}

/// Inside the sandbox's root: makes its working directory (as Docker
/// does, an image's WorkingDir exists once it runs) and resolves the user
/// its commands run as.
pub(crate) fn working_dir_and_user(
    cwd: Option<&str>,
    user: Option<&str>,
) -> Result<Option<crate::serve::RunAs>, BootError> {
    if let Some(cwd) = cwd {
        fs::create_dir_all(cwd).map_err(step(format!("create the working directory {cwd}")))?;
    }
    user.map(crate::serve::RunAs::resolve)
        .transpose()
        .map_err(BootError::Child)
}

/// Moves this thread into the network namespace at `path`.
pub(crate) fn join_network_namespace(path: &Path) -> Result<(), BootError> {
    let ns = fs::File::open(path).map_err(step(format!(
        "open the network namespace {}",
        path.display()
    )))?;
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(nix_step("join the network namespace"))
}

/// Points stdin at /dev/null and stdout/stderr at the agent's log, so the
/// server's pipes to the boot helper close when the helper exits.
pub(crate) fn redirect_stdio(log: &Path) -> Result<(), BootError> {
    let null = fs::File::open("/dev/null").map_err(step("open /dev/null"))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(step(format!("open the agent log {}", log.display())))?;
    let dup =
        |from: &fs::File, to: i32| sys::dup_onto(from.as_fd(), to).map_err(step("redirect stdio"));
    dup(&null, 0)?;
    dup(&log, 1)?;
    dup(&log, 2)?;
    Ok(())
}

/// An error and its causes on one line, as the boot helper reports them.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    for cause in std::iter::successors(e.source(), |c| c.source()) {
        line = format!("{line}: {cause}");
    }
    line
}
