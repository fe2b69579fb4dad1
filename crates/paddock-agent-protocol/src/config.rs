//! What the server hands the agent to start a sandbox: the boot helper's
//! config (container and local sandboxes), the microVM monitor's, and the
//! microVM guest's, all written as JSON by the server.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One overlay mount of the sandbox's root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayLayer {
    /// Where it goes inside the sandbox (`/`, `/usr`).
    pub target: String,
    /// Read-only lower directories, topmost first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Everything the boot helper needs, written by the server as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootConfig {
    /// Run as an ordinary host process: no namespaces, no root of its
    /// own, only the cgroups (the `local` provider). Every field about
    /// the root filesystem, network and devices is ignored.
    #[serde(default)]
    pub on_host: bool,
    pub hostname: String,
    /// An empty host directory the root overlay is mounted on (inside the
    /// sandbox's mount namespace only).
    pub root_mountpoint: PathBuf,
    /// `/` first, then mounts below it.
    pub layers: Vec<OverlayLayer>,
    /// `cgroup.procs` files to join before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Host path of the agent's listening socket.
    pub socket_path: PathBuf,
    /// Host path of the agent's own log.
    pub log_path: PathBuf,
    /// Environment every command starts with.
    pub env: Vec<(String, String)>,
    /// Working directory of commands that name none (the image's
    /// `WorkingDir`); `$HOME` or `/` when unset.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The user commands run as (the image's `User`: `name`, `uid`,
    /// `name:group` or `uid:gid`), resolved in the sandbox's own
    /// `/etc/passwd` and `/etc/group`; root when unset.
    #[serde(default)]
    pub user: Option<String>,
    /// A prepared network namespace to join; without one the sandbox gets
    /// a fresh namespace with loopback only.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// A mount namespace to join before the sandbox unshares its own
    /// (the server's lean template: see the runtime's `mount_template`);
    /// without one the sandbox copies the host's.
    #[serde(default)]
    pub mount_namespace: Option<PathBuf>,
    /// Host files bound over files of the root (`/etc/resolv.conf`, GPU
    /// driver libraries).
    #[serde(default)]
    pub bind_files: Vec<BindFile>,
    /// Host device nodes the sandbox may use (GPUs), bound under `/dev`.
    #[serde(default)]
    pub devices: Vec<BindFile>,
    /// The sandbox's own user namespace and its range of host ids;
    /// without one, sandbox root is host root (with capabilities cut).
    #[serde(default)]
    pub id_map: Option<IdMap>,
    /// The filesystem the overlays' upper and work dirs live on, whose
    /// size is the sandbox's disk limit; without one they are host
    /// directories with no limit.
    #[serde(default)]
    pub disk: Option<Disk>,
    /// Where the server staged lxcfs's per-sandbox `/proc` and `/sys`
    /// files ([`PROC_VIEW_FILES`] that lxcfs serves, by the same relative
    /// paths, in the mount namespace the sandbox is copied from): bound
    /// over the sandbox's, so it sees its own memory, CPUs, uptime and
    /// load.
    #[serde(default)]
    pub proc_views: Option<PathBuf>,
    /// The host CPUs the sandbox's processes start on (as many as its
    /// vCPUs), so `nproc` counts its own; empty: every CPU.
    #[serde(default)]
    pub cpus: Vec<usize>,
    /// With `on_host`: the unprivileged host user the agent and all it
    /// runs become once it is set up (never the server's own user).
    #[serde(default)]
    pub host_user: Option<HostUser>,
}

/// A host user and group, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
}

/// An ext4 image mounted (inside the sandbox's mount namespace only) at
/// `mountpoint`, under which the layers' upper and work dirs are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disk {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
}

/// The descriptor, in the process that mounted a sandbox's disk (its
/// PID 1, a microVM's monitor), that holds the disk's root open: the
/// mount itself is gone with the host's root after the pivot, so the
/// server reads the sandbox's changes through `/proc/PID/fd/DISK_FD`.
/// Close-on-exec, so no command inherits it; PID 1 is not dumpable, so
/// nothing in the sandbox can follow it.
pub const DISK_FD: i32 = 200;

/// A host file the sandbox sees at `target` (created if missing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindFile {
    pub source: PathBuf,
    pub target: String,
    /// Bound read-only (host files the sandbox must not change).
    #[serde(default)]
    pub read_only: bool,
}

/// The environment the agent gives every command when the VM sets none.
pub fn default_env() -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// A sandbox's ids on the host: sandbox id `n` (`n < count`) is host id
/// `host_base + n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_base: u32,
    pub count: u32,
}

impl IdMap {
    /// The line `uid_map` and `gid_map` take.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.count)
    }
}

/// Everything the monitor needs, written by the server as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmmConfig {
    /// The root filesystem, cgroups, network namespace, the `agent.sock`
    /// to serve and the monitor's log. Its env, user and hostname are the
    /// guest's business and unused here.
    pub sandbox: BootConfig,
    /// `virtiofsd` and its arguments (without the socket and source,
    /// which the monitor adds); empty when the guest's root is on block
    /// devices and nothing is shared.
    pub virtiofsd: Vec<String>,
    pub virtiofs_socket: PathBuf,
    /// qemu and its arguments.
    pub qemu: Vec<String>,
    /// The unix socket qemu serves the agent's virtio-serial port on.
    pub port_socket: PathBuf,
    /// The unix socket qemu serves the guest's serial console on, and
    /// the file the monitor keeps its first first MiB (the monitor's `CONSOLE_LOG_MAX`) bytes in.
    pub console_socket: PathBuf,
    pub console_log: PathBuf,
    /// The tap device qemu's NIC uses, made in the network namespace.
    pub tap: Option<String>,
    /// Whether the guest's agent opens each session with the handshake
    /// (`paddock-agent`'s `mux/handshake.rs`). A guest booted by an older
    /// server's agent does not, and keeps that agent through a save: its
    /// saved config has no such field.
    #[serde(default)]
    pub session_handshake: bool,
}

/// Where the guest's config sits in the initramfs.
pub const CONFIG_PATH: &str = "/paddock/guest.json";

/// The virtio-serial port the host's monitor talks to.
pub const PORT_NAME: &str = "paddock.agent";

/// The virtiofs tag of the root filesystem.
pub const ROOT_TAG: &str = "root";

/// What the guest's PID 1 needs, written by the host into the initramfs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestConfig {
    /// Kernel modules (paths in the initramfs), in load order.
    pub modules: Vec<PathBuf>,
    pub network: Option<GuestNetwork>,
    pub hostname: String,
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub root: GuestRoot,
}

/// Where a microVM's root filesystem comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestRoot {
    /// The sandbox's overlay on the host, shared over virtiofs
    /// ([`ROOT_TAG`]).
    #[default]
    Virtiofs,
    /// Block devices, so that nothing is shared with the host and qemu can
    /// save the whole VM: `lower` (read-only ext4: the image's layers
    /// merged) and `upper` (the sandbox's writable ext4 disk), put together
    /// by the guest as an overlay.
    Blocks {
        lower: String,
        upper: String,
        /// Written as the root's `/etc/resolv.conf` (a container gets it
        /// bound from the host).
        resolv_conf: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// `eth0`'s address: a /32 with an on-link route to the gateway, so the
    /// guest needs no subnet (and talks to nothing on it but the gateway).
    pub address: String,
    pub gateway: String,
}

/// The files lxcfs computes per reader that a sandbox sees instead of the
/// kernel's, relative to `/` (and to [`BootConfig::proc_views`]).
pub const PROC_VIEW_FILES: [&str; 8] = [
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/loadavg",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "sys/devices/system/cpu/online",
];

/// The file in a sandbox's run dir where the boot helper records the
/// number of the loop device its disk is on (`N` of `/dev/loopN`), so
/// the server can remove the device once the sandbox is gone.
pub const LOOP_RECORD: &str = "disk.loop";
