//! The container provider: each sandbox is a set of fresh namespaces on
//! this host with an overlay root, cgroup limits, dropped capabilities and
//! a seccomp filter, and the paddock agent as its PID 1. No external
//! runtime binary is involved: the server runs `paddock-agent boot`, which
//! does the namespace work (see `paddock-agent`'s `boot`).
//!
//! Per sandbox: its run dir, `DATA/sandboxes/<vm_id>/`, holds what outlives
//! a reboot (its disk image, its id range); its runtime dir on the
//! server's tmpfs, `DATA/run/<vm_id>/`, holds what dies with it (mount
//! points, the boot config, the agent's socket and log; see
//! `runtime_dirs`). A sandbox booted by a server before that split, or
//! one with no disk of its own, keeps everything in its run dir. Nothing
//! is mounted on the host: every mount lives in the sandbox's own mount
//! namespace and dies with it.

mod cgroup;
pub mod checkpoint;
pub mod disks;
pub mod ids;
mod loops;
pub mod mount_template;
pub mod proc_views;
pub mod procfs;
mod rootfs;
mod runtime_dirs;
mod trash;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use paddock_agent_protocol::config::{
    default_env, BindFile, BootConfig, Disk, HostUser, OverlayLayer, DISK_FD, LOOP_RECORD,
};
use paddock_core::ids::VmId;
use paddock_core::model::{
    ChangedTree, IdShift, ImageConfig, Resources, RootfsSpec, RuntimeHandle, Vm,
};
use paddock_core::provider::{Provider, SandboxChannel};
use paddock_core::RuntimeError;
use sha2::{Digest, Sha256};

use crate::agent_channel::{AgentChannel, AgentLocator};
use crate::agent_client::AgentAddress;
pub use cgroup::Cgroups;
pub use ids::IdRangeConfig;
use ids::IdRanges;
pub use rootfs::VariantSource;

/// Where host-process sandboxes work unless configured otherwise.
pub const DEFAULT_LOCAL_ROOT: &str = "/var/lib/paddock-local";

/// In a sandbox's runtime dir: a host mount (a volume) was injected into
/// its mount namespace at least once, so teardown must not keep that
/// namespace past the delete.
const INJECTED_MARK: &str = "mounts-injected";

/// The agent's socket, in a sandbox's runtime dir (or its run dir).
const AGENT_SOCKET: &str = "agent.sock";

/// The longest path a unix socket address can hold.
const MAX_SOCKET_PATH: usize = 107;
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean stop waits for the trash to finish the sandboxes
/// stopped before it.
const SETTLE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub data_dir: PathBuf,
    /// The `paddock-agent` binary.
    pub agent_path: PathBuf,
    /// Image variants by name.
    pub variants: BTreeMap<String, VariantSource>,
    /// Where the host's GPUs and their driver are.
    pub gpu: crate::gpu::GpuHost,
    /// The host ids sandboxes' user namespaces are cut from.
    pub ids: IdRangeConfig,
    /// The disk size most sandboxes get (`[limits] default_disk_mb`):
    /// disks of this size are made ahead of demand.
    pub default_disk_mb: u32,
    /// Whether sandboxes see their own size in `/proc` (through lxcfs,
    /// when it is installed).
    pub proc_views: bool,
    /// How many loop devices freed by deleted sandboxes are kept for the
    /// next boots.
    pub spare_loop_devices: usize,
    /// Where host-process (`local`) sandboxes get their working
    /// directories: outside the data dir, which their users cannot read.
    pub local_root: PathBuf,
}

pub struct ContainerProvider {
    pub(crate) config: ContainerConfig,
    sandboxes_dir: PathBuf,
    /// The server's tmpfs of sandboxes' runtime dirs.
    runtime_root: PathBuf,
    host_base: PathBuf,
    pub(crate) cgroups: Arc<Cgroups>,
    /// Exec, files and PTYs: through each sandbox's agent socket.
    agents: AgentChannel<ContainerAgents>,
    ids: Arc<IdRanges>,
    /// Run dirs being deleted in the background.
    trash: Arc<trash::Trash>,
    /// Whether sandboxes' PID 1s run, through a pidfd each.
    liveness: Arc<procfs::Liveness>,
    disks: Arc<disks::Disks>,
    loops: Arc<loops::FreeLoops>,
    /// The lean mount namespace sandboxes are unshared from.
    mount_template: mount_template::MountTemplate,
    /// The host CPUs sandboxes are spread over, and where the next one
    /// starts.
    host_cpus: Vec<usize>,
    next_cpu: std::sync::atomic::AtomicUsize,
}

/// Identifies this server's data dir among others on the same host, so two
/// servers never touch each other's cgroups.
pub fn instance_id(data_dir: &Path) -> String {
    let canonical = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..6])
}

fn host_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::host(what, e)
}

impl ContainerProvider {
    pub fn new(config: ContainerConfig) -> Result<Self, RuntimeError> {
        if !config.agent_path.is_file() {
            return Err(RuntimeError::Setup(format!(
                "the agent binary {} does not exist",
                config.agent_path.display()
            )));
        }
        let sandboxes_dir = config.data_dir.join("sandboxes");
        fs::create_dir_all(&sandboxes_dir)
            .map_err(host_err(sandboxes_dir.display().to_string()))?;
        let host_base = config.data_dir.join("images").join("host");
        if config.variants.values().any(|v| *v == VariantSource::Host) {
            rootfs::ensure_host_base(&host_base)?;
        }
        for (name, v) in &config.variants {
            if let VariantSource::Directory(d) = v {
                if !d.is_dir() {
                    return Err(RuntimeError::Setup(format!(
                        "variant {name}: {} is not a directory",
                        d.display()
                    )));
                }
            }
        }
        let cgroups = Arc::new(Cgroups::detect(&instance_id(&config.data_dir))?);
        config.ids.validate().map_err(RuntimeError::Setup)?;
        let ids = Arc::new(IdRanges::load(config.ids, &sandboxes_dir));
        let disks = Arc::new(disks::Disks::open(
            &config.data_dir,
            config.default_disk_mb,
        )?);
        // Before the mount template, which copies the host's mounts.
        let runtime_root = runtime_dirs::mount_under(&config.data_dir)
            .map_err(host_err("mount the sandboxes' runtime tmpfs"))?;
        let trash = Arc::new(
            trash::Trash::open(&[&config.data_dir, &runtime_root])
                .map_err(host_err("open the sandboxes' trash"))?,
        );
        let proc_views = if config.proc_views {
            proc_views::ensure(&config.data_dir)?
        } else {
            None
        };
        // After lxcfs: the template is a copy of the host's mounts now.
        let mount_template =
            mount_template::MountTemplate::create(proc_views.as_ref().map(|lxcfs| {
                mount_template::ViewsToStage {
                    lxcfs: lxcfs.clone(),
                    staging: config.data_dir.join("views"),
                }
            }))
            .map_err(host_err("make the sandboxes' mount namespace"))?;
        let host_cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            disks,
            loops: Arc::new(loops::FreeLoops::keeping(config.spare_loop_devices)),
            mount_template,
            host_cpus,
            next_cpu: std::sync::atomic::AtomicUsize::new(0),
            config,
            agents: AgentChannel::new(ContainerAgents {
                sandboxes_dir: sandboxes_dir.clone(),
                runtime_root: runtime_root.clone(),
                cgroups: Arc::clone(&cgroups),
            }),
            sandboxes_dir,
            runtime_root,
            host_base,
            cgroups,
            ids,
            trash,
            liveness: Arc::default(),
        })
    }

    pub fn cgroup_version(&self) -> &'static str {
        self.cgroups.version()
    }

    pub(crate) fn run_dir(&self, id: &VmId) -> PathBuf {
        self.sandboxes_dir.join(id.as_str())
    }

    /// This server's host-process working directories.
    fn local_dirs(&self) -> PathBuf {
        self.config
            .local_root
            .join(instance_id(&self.config.data_dir))
    }

    pub(crate) fn socket(&self, id: &VmId) -> PathBuf {
        agent_socket_of(&self.sandboxes_dir, &self.runtime_root, id.as_str())
    }

    /// Where the sandbox whose run dir is `run` keeps its runtime state
    /// this boot: its dir on the runtime tmpfs, or its run dir when it
    /// has no disk image of its own (made before disks had sizes): its
    /// overlays' upper dirs are there, and the overlays' options name
    /// them relative to the runtime dir, which a host path would show in
    /// the sandbox's mountinfo.
    fn live_dir_for(&self, vm: &Vm, run: &Path) -> PathBuf {
        if is_diskless(vm, run) {
            run.to_path_buf()
        } else {
            self.runtime_root.join(vm.id.as_str())
        }
    }

    async fn boot(
        &self,
        vm: &Vm,
        spec: &RootfsSpec,
        run: &Path,
        live: &Path,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let started = std::time::Instant::now();
        let disk = self.disk_for(vm, run, live).await?;
        let (layers, defaults, root) = self.rootfs(spec, run, live, disk.as_ref())?;
        let defaults = &defaults;
        let socket = agent_socket(live)?;
        let id_map = self.ids.for_run_dir(run)?;
        let cgroup_procs = self.cgroups.create(vm.id.as_str(), &vm.resources)?;
        let cgroups_done = started.elapsed();
        let mut env = sandbox_env(defaults, vm);
        let mut bind_files = resolv_conf(vm, live)?;
        for file in &bind_files {
            chown_to(&file.source, id_map)?;
        }
        let mut devices = Vec::new();
        if !vm.options.gpus.is_empty() {
            let gpu = self.config.gpu.binds(&vm.options.gpus);
            for g in &vm.options.gpus {
                let node = format!("/dev/nvidia{g}");
                if !gpu.devices.iter().any(|d| d.target == node) {
                    return Err(RuntimeError::Setup(format!("GPU {g} is not on this host")));
                }
            }
            devices = gpu.devices;
            bind_files.extend(gpu.files);
            for (k, v) in gpu.env {
                env.retain(|(ek, _)| *ek != k);
                env.push((k, v));
            }
            for (k, v) in env.iter_mut() {
                if k == "PATH" {
                    *v = crate::gpu::with_path(v, crate::gpu::BIN_DIR);
                }
            }
        }
        let config = BootConfig {
            on_host: false,
            netns: vm.network.as_ref().map(|n| n.netns.clone()),
            mount_namespace: Some(self.mount_template.path().to_path_buf()),
            bind_files,
            devices,
            hostname: "sandbox".into(),
            root_mountpoint: root,
            layers,
            cgroup_procs,
            socket_path: socket.clone(),
            log_path: live.join("agent.log"),
            env,
            cwd: defaults.working_dir.clone(),
            user: defaults.user.clone(),
            id_map: Some(id_map),
            disk,
            proc_views: self.mount_template.views().map(Path::to_path_buf),
            cpus: self.cpus_for(vm.resources.vcpu_count()),
            host_user: None,
        };
        let prepared = started.elapsed();
        let handle = self.launch_agent(live, &config).await?;
        if config.disk.is_some() {
            self.loops.taken();
        }
        tracing::debug!(
            vm_id = %vm.id,
            cgroups_us = cgroups_done.as_micros() as u64,
            prepared_us = prepared.as_micros() as u64,
            booted_us = started.elapsed().as_micros() as u64,
            "sandbox booted"
        );
        Ok(handle)
    }
}

impl ContainerProvider {
    /// The overlay layers of a sandbox on `spec` whose run dir is `run`
    /// and whose writable state is on `disk` (or in `run`, for a sandbox
    /// without one), the image's defaults, and the empty directory the
    /// root is mounted on (in its runtime dir `live`). The agent makes
    /// the upper and work dirs.
    pub(crate) fn rootfs(
        &self,
        spec: &RootfsSpec,
        run: &Path,
        live: &Path,
        disk: Option<&Disk>,
    ) -> Result<(Vec<OverlayLayer>, ImageConfig, PathBuf), RuntimeError> {
        let state = disk.map_or(run, |d| d.mountpoint.as_path());
        let (layers, defaults) = match spec {
            RootfsSpec::Variant {
                name,
                layers,
                defaults,
            } => {
                let source = self.config.variants.get(name).ok_or_else(|| {
                    RuntimeError::Invalid(format!("unknown image variant {name}"))
                })?;
                (
                    rootfs::layers(source, &self.host_base, layers, state),
                    defaults.clone(),
                )
            }
            RootfsSpec::Layers { dirs, defaults } => {
                (rootfs::image_layers(dirs, state), defaults.clone())
            }
            RootfsSpec::Reference(r) => {
                return Err(RuntimeError::Invalid(format!(
                    "paddock's sandboxes run images from its store, not {r:?}"
                )))
            }
        };
        let root = live.join("root");
        fs::create_dir_all(&root).map_err(host_err(root.display().to_string()))?;
        Ok((layers, defaults, root))
    }

    /// Starts the agent as an ordinary host process (no namespaces, no
    /// root of its own) in the sandbox's cgroups, as `user` (`None`: a
    /// host uid of the sandbox's own, from the id ranges), serving
    /// commands in its private working directory `LOCAL_ROOT/<instance>/
    /// <vm>` (0700, the user's) with `env`: the `local` provider. A
    /// working directory left by a halt is kept.
    pub async fn start_on_host(
        &self,
        vm: &Vm,
        mut env: Vec<(String, String)>,
        cwd: Option<String>,
        user: Option<HostUser>,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let run = self.run_dir(&vm.id);
        fs::create_dir_all(&run).map_err(host_err(run.display().to_string()))?;
        let user = match user {
            Some(u) => u,
            None => {
                let own = self.ids.for_run_dir(&run)?;
                HostUser {
                    uid: own.host_base,
                    gid: own.host_base,
                }
            }
        };
        let work = self.local_work_dir(&vm.id, user)?;
        for (k, v) in [
            ("HOME", work.display().to_string()),
            ("USER", "sandbox".into()),
        ] {
            env.retain(|(ek, _)| *ek != k);
            env.push((k.to_owned(), v));
        }
        let cwd = cwd.unwrap_or_else(|| work.display().to_string());
        match self.boot_on_host(vm, &run, env, cwd, user).await {
            Ok(handle) => Ok(handle),
            Err(e) => {
                self.clean_failed_start(&vm.id, Keep::Files);
                Err(e)
            }
        }
    }

    /// Where the host-process sandbox `id` works (see `local_work_dir`).
    pub(crate) fn local_work_path(&self, id: &VmId) -> PathBuf {
        self.local_dirs().join(id.as_str())
    }

    /// The working directory of the host-process sandbox `id`, made (or
    /// kept) private to `user`; the directories above it are only
    /// traversable.
    fn local_work_dir(&self, id: &VmId, user: HostUser) -> Result<PathBuf, RuntimeError> {
        use std::os::unix::fs::PermissionsExt;
        let base = self.local_dirs();
        fs::create_dir_all(&base).map_err(host_err(base.display().to_string()))?;
        for dir in [self.config.local_root.as_path(), base.as_path()] {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
                .map_err(host_err(dir.display().to_string()))?;
        }
        let work = self.local_work_path(id);
        match fs::create_dir(&work) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(RuntimeError::host(work.display().to_string(), e)),
        }
        std::os::unix::fs::chown(&work, Some(user.uid), Some(user.gid))
            .map_err(host_err(work.display().to_string()))?;
        fs::set_permissions(&work, fs::Permissions::from_mode(0o700))
            .map_err(host_err(work.display().to_string()))?;
        Ok(work)
    }

    async fn boot_on_host(
        &self,
        vm: &Vm,
        run: &Path,
        env: Vec<(String, String)>,
        cwd: String,
        user: HostUser,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let socket = agent_socket(run)?;
        let cgroup_procs = self.cgroups.create(vm.id.as_str(), &vm.resources)?;
        let config = BootConfig {
            on_host: true,
            netns: None,
            mount_namespace: None,
            bind_files: Vec::new(),
            devices: Vec::new(),
            hostname: String::new(),
            root_mountpoint: run.to_path_buf(),
            layers: Vec::new(),
            cgroup_procs,
            socket_path: socket,
            log_path: run.join("agent.log"),
            env,
            cwd: Some(cwd),
            user: None,
            id_map: None,
            disk: None,
            proc_views: None,
            cpus: Vec::new(),
            host_user: Some(user),
        };
        self.launch_agent(run, &config).await
    }

    /// Writes `config` as the run dir's `boot.json` and runs
    /// `paddock-agent boot` on it: the agent's host pid once it serves.
    async fn launch_agent(
        &self,
        run: &Path,
        config: &BootConfig,
    ) -> Result<RuntimeHandle, RuntimeError> {
        self.launch_helper(run, "boot", config, "the boot helper")
            .await
    }

    /// Writes `config` as the run dir's `<command>.json` (for operators to
    /// read) and runs `paddock-agent <command> - <vm id>` with it on
    /// stdin; the helper prints the pid of what it left running (a
    /// sandbox's init, a microVM's monitor).
    pub(crate) async fn launch_helper(
        &self,
        run: &Path,
        command: &str,
        config: &impl serde::Serialize,
        what: &str,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let config_path = run.join(format!("{command}.json"));
        let json = serde_json::to_vec(config)
            .map_err(|e| RuntimeError::Setup(format!("encode the {command} config: {e}")))?;
        fs::write(&config_path, &json).map_err(host_err(config_path.display().to_string()))?;
        let label = run.file_name().unwrap_or_default();
        let stdout = crate::agent_helper::run(
            &self.config.agent_path,
            &[command.as_ref(), "-".as_ref(), label],
            Some(json),
            BOOT_TIMEOUT,
            what,
        )
        .await?;
        let line = String::from_utf8_lossy(&stdout);
        let (pid, phases) = parse_launched(&line)
            .ok_or_else(|| RuntimeError::Setup(format!("{what} reported no pid")))?;
        tracing::debug!(sandbox = ?label, %phases, "{what} finished (µs per step)");
        let start_ticks = procfs::start_ticks(pid)
            .ok_or_else(|| RuntimeError::Setup("the sandbox exited right after boot".into()))?;
        Ok(RuntimeHandle { pid, start_ticks })
    }

    /// Tears a sandbox down off the async runtime (it waits on the
    /// kernel to empty cgroups).
    pub(crate) async fn teardown_blocking(
        &self,
        id: &VmId,
        handle: Option<RuntimeHandle>,
        keep: Keep,
    ) -> Result<(), RuntimeError> {
        let id = id.as_str().to_owned();
        let this = self.provider_ref();
        tokio::task::spawn_blocking(move || this.teardown(&id, handle, keep))
            .await
            .map_err(|e| RuntimeError::Agent(format!("teardown task failed: {e}")))?
    }

    fn provider_ref(&self) -> ProviderRef {
        ProviderRef {
            sandboxes_dir: self.sandboxes_dir.clone(),
            runtime_root: self.runtime_root.clone(),
            local_dirs: self.local_dirs(),
            cgroups: Arc::clone(&self.cgroups),
            ids: Some(Arc::clone(&self.ids)),
            loops: Some(Arc::clone(&self.loops)),
            trash: Some(Arc::clone(&self.trash)),
            liveness: Some(Arc::clone(&self.liveness)),
        }
    }

    /// Frees what a start that failed left behind (keeping `keep`).
    pub(crate) fn clean_failed_start(&self, id: &VmId, keep: Keep) {
        if let Err(cleanup) = self.provider_ref().teardown(id.as_str(), None, keep) {
            tracing::error!(vm_id = %id, error = %cleanup, "cleanup after a failed start failed");
        }
    }
}

/// Why a container sandbox cannot be suspended with its memory.
const CANNOT_CHECKPOINT: &str = "a container sandbox cannot be suspended with its memory: its \
     network, mount, UTS and IPC namespaces belong to the host's user namespace (so that root \
     in it can change none of them), and CRIU checkpoints only processes whose namespaces \
     belong to their own; a microVM started from an image (provider microvm, image_variant) \
     can be suspended";

#[async_trait]
impl Provider for ContainerProvider {
    fn name(&self) -> &'static str {
        "container"
    }

    fn has_variant(&self, variant: &str) -> bool {
        self.config.variants.contains_key(variant)
    }

    /// Not with CRIU, even where `criu check` passes: CRIU checkpoints a
    /// process tree only when every namespace it is in belongs to its own
    /// user namespace (CRIU 4.2, tried on a sandbox: "One or more
    /// namespaces doesn't belong to the target user namespace"), and a
    /// sandbox's are the host's by design (SECURITY.md: its root can
    /// change none of them). Giving them to the sandbox's user namespace
    /// would hand its root CAP_NET_ADMIN and CAP_SYS_ADMIN over them.
    fn can_suspend(&self, _image_variant: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(CANNOT_CHECKPOINT.into()))
    }

    async fn start(&self, vm: &Vm, rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        let run = self.run_dir(&vm.id);
        let live = self.live_dir_for(vm, &run);
        for dir in [&run, &live] {
            fs::create_dir_all(dir).map_err(host_err(dir.display().to_string()))?;
        }
        match self.boot(vm, rootfs, &run, &live).await {
            Ok(handle) => Ok(handle),
            Err(e) => {
                self.clean_failed_start(&vm.id, Keep::after_failed_start(vm));
                Err(e)
            }
        }
    }

    async fn stop(&self, id: &VmId, handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        self.teardown_blocking(id, handle, Keep::Nothing).await
    }

    async fn halt(&self, id: &VmId, handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        self.teardown_blocking(id, handle, Keep::Files).await
    }

    async fn settle(&self) {
        let trash = Arc::clone(&self.trash);
        let settled = tokio::task::spawn_blocking(move || trash.settle(SETTLE_WITHIN)).await;
        if !matches!(settled, Ok(true)) {
            tracing::warn!("the trash was not empty at stop; the next start empties it");
        }
    }

    fn changes(&self, vm: &Vm) -> Vec<ChangedTree> {
        let run = self.run_dir(&vm.id);
        let state = if run.join(disks::IMAGE).exists() {
            // The disk is mounted only in the sandbox's own namespace;
            // the process that mounted it holds its root open.
            match vm.runtime {
                Some(h) if procfs::is_running(h.pid, h.start_ticks) => {
                    PathBuf::from(format!("/proc/{}/fd/{DISK_FD}", h.pid))
                }
                _ => return Vec::new(),
            }
        } else {
            run.clone()
        };
        let shift = ids::read(&run).map(|m| IdShift {
            host_base: m.host_base,
            count: m.count,
        });
        rootfs::UPPER_DIRS
            .iter()
            .map(|(dir, at)| ChangedTree {
                dir: state.join(dir),
                at: (*at).to_owned(),
                ids: shift,
            })
            .filter(|t| t.dir.is_dir())
            .collect()
    }

    async fn set_frozen(&self, id: &VmId, frozen: bool) -> Result<(), RuntimeError> {
        let cgroups = Arc::clone(&self.cgroups);
        let id = id.as_str().to_owned();
        tokio::task::spawn_blocking(move || cgroups.set_frozen(&id, frozen))
            .await
            .map_err(|e| RuntimeError::Agent(format!("freeze task failed: {e}")))?
    }

    async fn attach(
        &self,
        id: &VmId,
        handle: RuntimeHandle,
        source: &Path,
        target: &str,
        read_only: bool,
    ) -> Result<(), RuntimeError> {
        // Recorded first, for teardown (see `INJECTED_MARK`).
        let live = self.runtime_root.join(id.as_str());
        if live.is_dir() {
            let mark = live.join(INJECTED_MARK);
            fs::write(&mark, "").map_err(host_err(mark.display().to_string()))?;
        }
        crate::agent_helper::attach(&self.config.agent_path, handle, source, target, read_only)
            .await
    }

    async fn detach(
        &self,
        _id: &VmId,
        handle: RuntimeHandle,
        target: &str,
    ) -> Result<(), RuntimeError> {
        crate::agent_helper::detach(&self.config.agent_path, handle, target).await
    }

    fn usage(&self, id: &VmId) -> Option<paddock_core::model::UsageCounters> {
        self.cgroups.usage(id.as_str())
    }

    fn is_alive(&self, _id: &VmId, handle: RuntimeHandle) -> bool {
        self.liveness.is_running(handle.pid, handle.start_ticks)
    }

    async fn update_resources(&self, id: &VmId, resources: &Resources) -> Result<(), RuntimeError> {
        self.cgroups.apply(id.as_str(), resources)
    }

    async fn cleanup_orphans(&self, live: &[VmId]) -> Result<usize, RuntimeError> {
        let live: BTreeSet<&str> = live.iter().map(VmId::as_str).collect();
        let this = self.provider_ref();
        let orphans: Vec<String> = this
            .sandbox_ids()
            .into_iter()
            .filter(|id| !live.contains(id.as_str()))
            .collect();
        let count = orphans.len();
        tokio::task::spawn_blocking(move || {
            for id in orphans {
                tracing::info!(vm_id = %id, "removing orphaned sandbox");
                this.teardown(&id, None, Keep::Nothing)?;
            }
            Ok::<_, RuntimeError>(())
        })
        .await
        .map_err(|e| RuntimeError::Agent(format!("cleanup task failed: {e}")))??;
        Ok(count)
    }

    fn channel(&self) -> &dyn SandboxChannel {
        &self.agents
    }

    fn agent_socket(&self, id: &VmId) -> Option<PathBuf> {
        Some(self.socket(id))
    }
}

/// Where the container provider's agents answer: each sandbox's
/// `agent.sock` in its runtime dir (or its run dir), its OOM kills in its
/// cgroup.
pub(crate) struct ContainerAgents {
    sandboxes_dir: PathBuf,
    runtime_root: PathBuf,
    cgroups: Arc<Cgroups>,
}

impl AgentLocator for ContainerAgents {
    fn agent_of(&self, id: &VmId) -> AgentAddress {
        AgentAddress::Socket(agent_socket_of(
            &self.sandboxes_dir,
            &self.runtime_root,
            id.as_str(),
        ))
    }

    fn oom_kills(&self, id: &VmId) -> Box<dyn Fn() -> u64 + Send + 'static> {
        let cgroups = Arc::clone(&self.cgroups);
        let id = id.as_str().to_owned();
        Box::new(move || cgroups.oom_kills(&id))
    }
}

/// The agent socket of the sandbox `id`: in its runtime dir, unless its
/// run dir has it (a sandbox without a disk of its own, a host-process
/// one, or one a server before the runtime tmpfs booted and this one
/// adopted).
fn agent_socket_of(sandboxes_dir: &Path, runtime_root: &Path, id: &str) -> PathBuf {
    let live = runtime_root.join(id).join(AGENT_SOCKET);
    if live.exists() {
        return live;
    }
    let run = sandboxes_dir.join(id).join(AGENT_SOCKET);
    if run.exists() {
        run
    } else {
        live
    }
}

/// The parts of the provider that teardown needs, movable to a blocking
/// thread.
struct ProviderRef {
    sandboxes_dir: PathBuf,
    /// The runtime tmpfs.
    runtime_root: PathBuf,
    /// Host-process sandboxes' working directories.
    local_dirs: PathBuf,
    cgroups: Arc<Cgroups>,
    /// Freed as run dirs go (`None` in `purge`, which has no server).
    ids: Option<Arc<IdRanges>>,
    /// Freed loop devices kept for boots (`None` in `purge`: all go).
    loops: Option<Arc<loops::FreeLoops>>,
    /// Where run dirs go to be deleted off the caller's path (`None` in
    /// `purge`, which deletes them itself).
    trash: Option<Arc<trash::Trash>>,
    /// The pidfds the server checks sandboxes through (`None` in `purge`).
    liveness: Option<Arc<procfs::Liveness>>,
}

impl ProviderRef {
    fn teardown(
        &self,
        id: &str,
        handle: Option<RuntimeHandle>,
        keep: Keep,
    ) -> Result<(), RuntimeError> {
        teardown(self, id, handle, keep)
    }

    /// The rest of a killed sandbox's teardown, for the trash to run once
    /// its run dir and runtime dir (in that order) are in it: its cgroups
    /// go once its processes have, then its loop device is kept for a
    /// later boot or left in its record for the trash to remove, and its
    /// user ids are free.
    fn reap(&self, id: &str, record_in_live: bool) -> trash::Reap {
        let id = id.to_owned();
        let cgroups = Arc::clone(&self.cgroups);
        let loops = self.loops.clone();
        let ids = self.ids.clone();
        Box::new(move |moved: &[Option<PathBuf>]| {
            let began = std::time::Instant::now();
            let (run, live) = match moved {
                [run, live] => (run.as_deref(), live.as_deref()),
                _ => (None, None),
            };
            let record = if record_in_live { live } else { run };
            match cgroups.remove(&id) {
                Ok(()) => {
                    if let (Some(loops), Some(record)) = (&loops, record) {
                        // Not kept: its record stays for the trash, which
                        // removes the device.
                        let _ = loops.release(record);
                    }
                    // Free for another sandbox only once no process of
                    // this one is left to share them with.
                    if let (Some(ids), Some(run)) = (&ids, run) {
                        ids.release(run);
                    }
                }
                // What is left is the next start's orphan to remove.
                Err(e) => {
                    tracing::warn!(vm_id = %id, error = %e, "could not remove a killed sandbox's cgroups")
                }
            }
            tracing::debug!(
                vm_id = %id,
                cgroups_us = began.elapsed().as_micros() as u64,
                "sandbox reaped"
            );
        })
    }

    /// Every sandbox this server has anything of on the host: a cgroup,
    /// a run dir, a runtime dir or a host-process working directory.
    fn sandbox_ids(&self) -> BTreeSet<String> {
        let mut ids = self.cgroups.list();
        for dir in [&self.sandboxes_dir, &self.runtime_root, &self.local_dirs] {
            if let Ok(entries) = fs::read_dir(dir) {
                ids.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        // The runtime tmpfs's own trash.
                        .filter(|name| dir != &self.runtime_root || name != trash::DIR),
                );
            }
        }
        ids
    }
}

/// A sandbox's environment: the agent's defaults, under the image's,
/// under the VM's own.
pub(crate) fn sandbox_env(image: &ImageConfig, vm: &Vm) -> Vec<(String, String)> {
    let mut env = default_env();
    let image_env = image.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let vm_env = vm.env.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (k, v) in image_env.chain(vm_env) {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_owned(), v.to_owned()));
    }
    env
}

/// With a network, names resolve through paddock's resolver on the
/// gateway, which enforces the VM's egress policy: the `resolv.conf` bound
/// into the sandbox (written in `run`).
pub(crate) fn resolv_conf(vm: &Vm, run: &Path) -> Result<Vec<BindFile>, RuntimeError> {
    let Some(net) = &vm.network else {
        return Ok(Vec::new());
    };
    let resolv = run.join("resolv.conf");
    fs::write(&resolv, format!("nameserver {}\n", net.gateway))
        .map_err(host_err(resolv.display().to_string()))?;
    Ok(vec![BindFile {
        source: resolv,
        target: "/etc/resolv.conf".into(),
        read_only: false,
    }])
}

impl ContainerProvider {
    /// The host CPUs a sandbox of `vcpus` starts on: the next ones round
    /// the host's, so sandboxes spread; every CPU when it asks for as
    /// many as the host has.
    fn cpus_for(&self, vcpus: u32) -> Vec<usize> {
        let n = self.host_cpus.len();
        let want = vcpus as usize;
        if want == 0 || want >= n {
            return Vec::new();
        }
        let start = self
            .next_cpu
            .fetch_add(want, std::sync::atomic::Ordering::Relaxed);
        (0..want).map(|i| self.host_cpus[(start + i) % n]).collect()
    }

    /// The disk the sandbox `vm` (run dir `run`) keeps its writable layer
    /// on, made now if it has none yet and mounted (in its namespace) in
    /// its runtime dir `live`; `None` for a sandbox without one.
    pub(crate) async fn disk_for(
        &self,
        vm: &Vm,
        run: &Path,
        live: &Path,
    ) -> Result<Option<Disk>, RuntimeError> {
        if is_diskless(vm, run) {
            return Ok(None);
        }
        self.disks.provide(run, vm.resources.disk_mb()).await?;
        Ok(Some(Disk {
            image: run.join(disks::IMAGE),
            mountpoint: live.join(disks::MOUNTPOINT),
        }))
    }
}

/// Whether the sandbox `vm` (run dir `run`) keeps its writable layer in
/// host directories, without a disk of its own: one asked for no disk,
/// or one made before disks had sizes, whose layer stays where it was.
fn is_diskless(vm: &Vm, run: &Path) -> bool {
    let legacy = run.join(rootfs::UPPER_DIRS[0].0).exists() && !run.join(disks::IMAGE).exists();
    vm.resources.disk_mb() == 0 || legacy
}

/// Gives `path` (itself, not what it holds) to the sandbox's root.
fn chown_to(path: &Path, ids: paddock_agent_protocol::config::IdMap) -> Result<(), RuntimeError> {
    std::os::unix::fs::lchown(path, Some(ids.host_base), Some(ids.host_base))
        .map_err(host_err(format!("give {} to the sandbox", path.display())))
}

/// The agent's socket in the run dir `run`, if its path fits a unix
/// socket address.
pub(crate) fn agent_socket(run: &Path) -> Result<PathBuf, RuntimeError> {
    socket_in(run, AGENT_SOCKET)
}

/// The socket `name` in the run dir `run`, if its path fits a unix
/// socket address.
pub(crate) fn socket_in(run: &Path, name: &str) -> Result<PathBuf, RuntimeError> {
    let socket = run.join(name);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(RuntimeError::Setup(format!(
            "the data dir path is too long for a unix socket ({})",
            socket.display()
        )));
    }
    Ok(socket)
}

impl Keep {
    /// What a start that failed leaves: a preserved sandbox keeps its
    /// files for the next try.
    pub(crate) fn after_failed_start(vm: &Vm) -> Self {
        if vm.options.launch.as_ref().is_some_and(|l| l.preserve) {
            Keep::Files
        } else {
            Keep::Nothing
        }
    }
}

/// What a teardown leaves of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    Nothing,
    /// The run dir: its overlay upper dirs (or working directory) for the
    /// next start.
    Files,
}

/// Frees the host resources of one sandbox: its processes, its cgroups
/// and, unless kept, its run dir. Idempotent.
///
/// A running sandbox that goes whole (nothing kept, no host mount
/// injected into it, a trash to take it, its agent in its runtime dir:
/// a container sandbox with a pid namespace of its own; host-process,
/// microVM and diskless sandboxes keep theirs in their run dir and are
/// torn down here) is killed here and the rest is the trash's: waiting
/// until its processes are gone and removing its cgroups (2-10 ms,
/// growing with what the host's cgroup locks are busy with), then its
/// loop device, user ids and files. Killing PID 1 of its
/// pid namespace ends the sandbox (the kernel kills every other process
/// in it before the namespace's init is reaped, and no process of it runs
/// its own code again), its paths are free at once, and a server that
/// stops before the trash is done removes the cgroups left at its next
/// start ([`Provider::cleanup_orphans`]).
fn teardown(
    this: &ProviderRef,
    id: &str,
    handle: Option<RuntimeHandle>,
    keep: Keep,
) -> Result<(), RuntimeError> {
    let run = this.sandboxes_dir.join(id);
    let live = this.runtime_root.join(id);
    let mut mounts_hold = None;
    let mut reaped_by_trash = false;
    if let Some(h) = handle {
        if let Some(liveness) = &this.liveness {
            liveness.forget(h.pid, h.start_ticks);
        }
        if procfs::is_running(h.pid, h.start_ticks) {
            // The last of a sandbox's processes to exit tears its mount
            // namespace down, and the kill below waits for that: every
            // mount unmounted, each file system shut down (the disk's
            // with a journal commit and a superblock write), an RCU
            // grace period; 3-5 ms of a delete's 9-11. A sandbox bound
            // for the trash leaves that to the trash: this reference to
            // its mount namespace keeps the mounts past the sandbox's
            // exit, and the trash drops it, off the delete's path. Not
            // for a sandbox a host mount was injected into (a volume):
            // its mount must be gone when the delete returns, or the
            // volume's next mount could meet the file system still
            // alive. Those (and sandboxes booted by an older server,
            // which recorded no injection) keep just the disk's root,
            // and are torn down here.
            if keep == Keep::Nothing && this.trash.is_some() {
                let ns = format!("/proc/{}/ns/mnt", h.pid);
                let disk = format!("/proc/{}/fd/{DISK_FD}", h.pid);
                let whole_namespace =
                    live.join(AGENT_SOCKET).exists() && !live.join(INJECTED_MARK).exists();
                let holds = if whole_namespace {
                    vec![ns, disk]
                } else {
                    vec![disk]
                };
                mounts_hold = holds.iter().find_map(|path| {
                    nix::fcntl::open(
                        path.as_str(),
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .ok()
                });
                reaped_by_trash = whole_namespace;
            }
            // Killing PID 1 of a pid namespace kills every process in it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(h.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // The boot helper records the device where the sandbox's runtime
    // state is: its runtime dir, or its run dir.
    let record_in_live = live.join(LOOP_RECORD).exists();
    if let (true, Some(trash)) = (reaped_by_trash, &this.trash) {
        let reap = this.reap(id, record_in_live);
        let moved = trash.discard_after(&[&run, &live], mounts_hold, Some(reap));
        let work = remove_tree(&this.local_dirs.join(id));
        return moved
            .map_err(|e| RuntimeError::host(run.display().to_string(), e))
            .and(work);
    }
    let began = std::time::Instant::now();
    // Every process of the sandbox is in its cgroups: removing them kills
    // whatever survived PID 1.
    let cgroup_result = this.cgroups.remove(id);
    let cgroups_gone = began.elapsed();
    let record = if record_in_live { &live } else { &run };
    if cgroup_result.is_ok() {
        let remove = this
            .loops
            .as_ref()
            .is_none_or(|loops| loops.release(record));
        // A dir bound for the trash takes its device's record with it,
        // and the trash removes the device.
        if remove && (keep == Keep::Files || this.trash.is_none()) {
            loops::remove_recorded(record);
        }
    }
    if keep == Keep::Files {
        // The run dir stays for the next start; the runtime state is
        // stale (small, on a tmpfs: removed here).
        return cgroup_result.and(remove_tree(&live));
    }
    // Free for another sandbox only once no process of this one is left
    // to share them with (as the trash's reap does); ids kept by a
    // failed removal stay taken until the next start.
    if let (Ok(()), Some(ids)) = (&cgroup_result, &this.ids) {
        ids.release(&run);
    }
    let loop_gone = began.elapsed();
    let dir_result = match &this.trash {
        Some(trash) => trash
            .discard(&[&run, &live], mounts_hold)
            .map_err(|e| RuntimeError::host(run.display().to_string(), e)),
        None => remove_tree(&run).and(remove_tree(&live)),
    };
    let work_result = remove_tree(&this.local_dirs.join(id));
    tracing::debug!(
        vm_id = id,
        cgroups_us = cgroups_gone.as_micros() as u64,
        loop_us = (loop_gone - cgroups_gone).as_micros() as u64,
        files_us = (began.elapsed() - loop_gone).as_micros() as u64,
        "sandbox torn down"
    );
    // Every step runs; a failure of any is reported.
    cgroup_result.and(dir_result).and(work_result)
}

/// A helper's one line on stdout: the pid of what it left running (never
/// 0 or 1), then how long each of its steps took, if it says.
fn parse_launched(line: &str) -> Option<(i32, &str)> {
    let line = line.trim();
    let (pid, phases) = line.split_once(' ').unwrap_or((line, ""));
    let pid = pid.parse::<i32>().ok().filter(|p| *p > 1)?;
    Some((pid, phases.trim()))
}

/// Removes the directory tree at `path`; one that is not there is gone.
fn remove_tree(path: &Path) -> Result<(), RuntimeError> {
    trash::remove_tree(path).map_err(|e| RuntimeError::host(path.display().to_string(), e))
}

/// Kills and removes every sandbox of the server whose data dir is
/// `data_dir` (and whose host-process sandboxes work under
/// `local_root`), without a server: for tests and for `paddock`
/// operators resetting a host. Returns how many were removed.
pub fn purge(data_dir: &Path, local_root: &Path) -> Result<usize, RuntimeError> {
    let this = ProviderRef {
        cgroups: Arc::new(Cgroups::detect(&instance_id(data_dir))?),
        sandboxes_dir: data_dir.join("sandboxes"),
        runtime_root: runtime_dirs::root(data_dir),
        local_dirs: local_root.join(instance_id(data_dir)),
        ids: None,
        loops: None,
        trash: None,
        liveness: None,
    };
    let ids = this.sandbox_ids();
    // Side by side, as the server's trash works: without a trash, a
    // teardown waits for its loop device's removal and its disk's discard.
    let failed = std::sync::Mutex::new(None);
    trash::side_by_side(ids.iter(), |id| {
        if let Err(e) = teardown(&this, id, None, Keep::Nothing) {
            if let Ok(mut first) = failed.lock() {
                first.get_or_insert(e);
            }
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    this.cgroups.remove_instance();
    let _ = fs::remove_dir(&this.local_dirs);
    // What a stopped server's trash had not emptied yet: its loop devices
    // would be left unbound.
    trash::empty_all(&[data_dir, &this.runtime_root]);
    runtime_dirs::unmount_under(data_dir);
    proc_views::stop(data_dir);
    let mounts = crate::volumes::purge(data_dir)?;
    Ok(ids.len() + mounts)
}

#[cfg(test)]
mod launched_tests {
    use super::parse_launched;

    #[test]
    fn the_helpers_line_is_a_pid_then_its_steps() {
        assert_eq!(parse_launched("4242\n"), Some((4242, "")));
        assert_eq!(
            parse_launched("4242 config=5 cgroups=310 init=7200\n"),
            Some((4242, "config=5 cgroups=310 init=7200"))
        );
        for bad in ["", "\n", "x 1=2", "1", "0 a=1", "-5"] {
            assert_eq!(parse_launched(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod socket_tests {
    use super::agent_socket_of;

    #[test]
    fn an_agent_answers_in_its_runtime_dir_unless_its_run_dir_has_the_socket() {
        let data = tempfile::tempdir().expect("tempdir");
        let (sandboxes, runtime) = (data.path().join("sandboxes"), data.path().join("run"));
        for id in ["vm_new", "vm_old", "vm_both"] {
            std::fs::create_dir_all(sandboxes.join(id)).expect("run dir");
            std::fs::create_dir_all(runtime.join(id)).expect("runtime dir");
        }
        std::fs::write(runtime.join("vm_new/agent.sock"), "").expect("socket");
        // Booted by a server before the runtime tmpfs (or on the host).
        std::fs::write(sandboxes.join("vm_old/agent.sock"), "").expect("socket");
        // Booted again by this server after an older one halted it.
        std::fs::write(sandboxes.join("vm_both/agent.sock"), "").expect("socket");
        std::fs::write(runtime.join("vm_both/agent.sock"), "").expect("socket");
        let at = |id| agent_socket_of(&sandboxes, &runtime, id);
        assert_eq!(at("vm_new"), runtime.join("vm_new/agent.sock"));
        assert_eq!(at("vm_old"), sandboxes.join("vm_old/agent.sock"));
        assert_eq!(at("vm_both"), runtime.join("vm_both/agent.sock"));
        // Not running: where the next boot puts it.
        assert_eq!(at("vm_gone"), runtime.join("vm_gone/agent.sock"));
    }
}
