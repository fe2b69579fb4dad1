//! The microVM provider: each sandbox is a qemu `microvm` with its own
//! kernel (the host distribution's), KVM where the host has hardware
//! virtualization and TCG where it does not.
//!
//! A microVM is a container's sandbox with a VM in the middle, and reuses
//! its parts: the same run dir, overlay layers and cgroups
//! ([`ContainerProvider`]), the same network namespace on paddock's bridge
//! (the tap is bridged to its `eth0`), and the same agent, which is PID 1
//! in the guest and reached over virtio-serial through the VM's monitor
//! (`paddock-agent vmm`), which serves the usual `agent.sock`. So exec,
//! files, PTYs, freezing, snapshots of the upper layer, teardown and
//! orphan cleanup are the container provider's code paths.

mod direct_io;
mod disk_view;
mod initrd;
mod kernel;
mod lower;
mod memory_image;
pub mod qemu;
mod qmp;
mod suspension;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paddock_agent_protocol::config::BootConfig;
use paddock_agent_protocol::config::VmmConfig;
use paddock_agent_protocol::config::{GuestConfig, GuestNetwork, GuestRoot};
use paddock_core::ids::VmId;
use paddock_core::model::{ChangedTree, Resources, RootfsSpec, RuntimeHandle, Vm};
use paddock_core::RuntimeError;

use crate::container::{self, ContainerProvider, Keep};
pub use qemu::Accelerator;

/// Host memory a VM's cgroup allows beyond the guest's own: qemu,
/// virtiofsd and the monitor.
const HOST_OVERHEAD_MB: u32 = 256;
/// How long a guest may take from qemu's start to its agent answering.
/// Under TCG on a loaded 2-core host a boot takes several seconds.
const GUEST_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// qemu's QMP socket, in the run dir.
const QMP_SOCKET: &str = "qmp.sock";

#[derive(Debug, Clone, Default)]
pub struct MicroVmConfig {
    /// A `vmlinuz-RELEASE` (with `/lib/modules/RELEASE`); the newest in
    /// `/boot` when unset.
    pub kernel: Option<PathBuf>,
    /// Forces an accelerator; detected when unset.
    pub accelerator: Option<Accelerator>,
    /// Where the uncompressed kernel and base initramfs are cached;
    /// `DATA/microvm` when unset. Servers may share one.
    pub cache_dir: Option<PathBuf>,
}

pub struct MicroVmProvider {
    container: Arc<ContainerProvider>,
    accelerator: Accelerator,
    /// Read once: every guest's `tsc_early_khz`.
    tsc_khz: Option<u64>,
    qemu: PathBuf,
    virtiofsd: PathBuf,
    kernel: kernel::GuestKernel,
    cache: PathBuf,
    /// The uncompressed kernel and the base initramfs, made on the first
    /// boot (seconds of work a server that runs no microVM never does).
    prepared: tokio::sync::OnceCell<(PathBuf, initrd::BaseInitrd)>,
}

impl MicroVmProvider {
    /// Finds qemu, virtiofsd and the guest kernel and picks the
    /// accelerator.
    pub fn new(
        container: Arc<ContainerProvider>,
        config: &MicroVmConfig,
    ) -> Result<Self, RuntimeError> {
        let missing = |what: &str| {
            RuntimeError::Setup(format!(
                "{what} is not installed (Debian: apt-get install qemu-system-x86)"
            ))
        };
        let qemu = qemu::find_qemu().ok_or_else(|| missing("qemu-system-x86_64"))?;
        let virtiofsd = qemu::find_virtiofsd().ok_or_else(|| missing("virtiofsd"))?;
        let cache = config
            .cache_dir
            .clone()
            .unwrap_or_else(|| container.config.data_dir.join("microvm"));
        let kernel = kernel::GuestKernel::find(config.kernel.as_deref())?;
        let accelerator = config.accelerator.unwrap_or_else(Accelerator::detect);
        Ok(Self {
            container,
            accelerator,
            tsc_khz: qemu::cpu_khz(),
            qemu,
            virtiofsd,
            kernel,
            cache,
            prepared: tokio::sync::OnceCell::new(),
        })
    }

    /// The uncompressed kernel and base initramfs, made once.
    async fn prepared(&self) -> Result<&(PathBuf, initrd::BaseInitrd), RuntimeError> {
        self.prepared
            .get_or_try_init(|| async {
                let kernel = self.kernel.clone();
                let cache = self.cache.clone();
                let agent = self.container.config.agent_path.clone();
                tokio::task::spawn_blocking(move || {
                    let vmlinux = kernel.vmlinux(&cache)?;
                    let base = initrd::base(&agent, &kernel, &cache)?;
                    Ok::<_, RuntimeError>((vmlinux, base))
                })
                .await
                .map_err(|e| RuntimeError::Setup(format!("prepare the guest kernel: {e}")))?
            })
            .await
    }

    pub fn accelerator_kind(&self) -> Accelerator {
        self.accelerator
    }

    /// The guest kernel's release.
    pub fn kernel_release(&self) -> &str {
        &self.kernel.release
    }

    async fn boot(
        &self,
        vm: &Vm,
        spec: &RootfsSpec,
        run: &Path,
    ) -> Result<RuntimeHandle, RuntimeError> {
        if !vm.options.gpus.is_empty() {
            return Err(RuntimeError::Unsupported(
                "microVMs cannot use GPUs yet: use the container provider".into(),
            ));
        }
        let (vmlinux, base_initrd) = self.prepared().await?;
        let disk = self.container.disk_for(vm, run, run).await?;
        let (layers, defaults, root) = self.container.rootfs(spec, run, run, disk.as_ref())?;
        // An image's microVM boots from block devices (its layers merged
        // into a cached read-only disk, the sandbox's disk as the upper),
        // which qemu can save with the VM; a variant's shares the host's
        // directories over virtiofs.
        let blocks = match (spec, &disk) {
            (RootfsSpec::Layers { dirs, .. }, Some(disk)) => {
                let dirs = dirs.clone();
                let cache = self.cache.join("lower");
                let lower = tokio::task::spawn_blocking(move || lower::lower_image(&dirs, &cache))
                    .await
                    .map_err(|e| RuntimeError::Setup(format!("make the lower disk: {e}")))??;
                Some((lower, disk.image.clone()))
            }
            _ => None,
        };
        let socket = container::agent_socket(run)?;
        let port_socket = container::socket_in(run, "port.sock")?;
        let virtiofs_socket = container::socket_in(run, "virtiofs.sock")?;
        let cgroup_procs = self
            .container
            .cgroups
            .create(vm.id.as_str(), &host_limits(vm))?;
        let guest = GuestConfig {
            modules: base_initrd
                .modules
                .iter()
                .filter(|m| blocks.is_some() || !kernel::is_block_root_module(m))
                .cloned()
                .collect(),
            network: vm.network.as_ref().map(|n| GuestNetwork {
                address: n.address.to_string(),
                gateway: n.gateway.to_string(),
            }),
            hostname: "sandbox".into(),
            env: container::sandbox_env(&defaults, vm),
            cwd: defaults.working_dir.clone(),
            user: defaults.user.clone(),
            root: match &blocks {
                Some(_) => GuestRoot::Blocks {
                    lower: "/dev/vda".into(),
                    upper: "/dev/vdb".into(),
                    resolv_conf: vm
                        .network
                        .as_ref()
                        .map(|n| format!("nameserver {}\n", n.gateway)),
                },
                None => GuestRoot::Virtiofs,
            },
        };
        let initrd = run.join("initrd.cpio");
        initrd::for_vm(base_initrd, &guest, &initrd)?;
        let console_socket = container::socket_in(run, "console.sock")?;
        let tap = vm.network.as_ref().map(|_| "tap0");
        let machine = qemu::Machine {
            qemu: &self.qemu,
            accelerator: self.accelerator,
            name: vm.id.as_str(),
            memory_mb: vm.resources.memory_mb(),
            vcpus: vm.resources.vcpu_count(),
            tsc_khz: self.tsc_khz,
            kernel: vmlinux,
            initrd: &initrd,
            console_socket: &console_socket,
            port_socket: &port_socket,
            qmp_socket: &container::socket_in(run, QMP_SOCKET)?,
            root: match &blocks {
                Some((lower, upper)) => qemu::MachineRoot::Blocks { lower, upper },
                None => qemu::MachineRoot::Virtiofs(&virtiofs_socket),
            },
            nic: vm
                .network
                .as_ref()
                .zip(tap)
                .map(|(n, tap)| (tap, qemu::mac_for(n.address))),
        };
        let config = VmmConfig {
            sandbox: BootConfig {
                on_host: false,
                hostname: "sandbox".into(),
                root_mountpoint: root,
                // On block devices the guest assembles its root itself.
                layers: if blocks.is_some() { Vec::new() } else { layers },
                cgroup_procs,
                socket_path: socket.clone(),
                log_path: run.join("vmm.log"),
                env: Vec::new(),
                cwd: None,
                user: None,
                netns: vm.network.as_ref().map(|n| n.netns.clone()),
                // The monitor keeps the host's root (qemu, the kernel,
                // virtiofsd) and opens the network namespace after its
                // unshare, so it stays in the host's mount namespace.
                mount_namespace: None,
                bind_files: if blocks.is_some() {
                    Vec::new()
                } else {
                    container::resolv_conf(vm, run)?
                },
                devices: Vec::new(),
                // The guest's kernel is the boundary; virtiofsd stores
                // the guest's own ids.
                id_map: None,
                disk: if blocks.is_some() { None } else { disk },
                // The guest's own kernel describes its size.
                proc_views: None,
                cpus: Vec::new(),
                host_user: None,
            },
            virtiofsd: if blocks.is_some() {
                Vec::new()
            } else {
                vec![
                    self.virtiofsd.display().to_string(),
                    "-o".into(),
                    // Only the guest changes its root while it runs, so its
                    // kernel may keep names and attributes; data is still
                    // written through (no writeback), so snapshots read it.
                    "cache=always".into(),
                    "-o".into(),
                    "sandbox=chroot".into(),
                ]
            },
            virtiofs_socket: virtiofs_socket.clone(),
            qemu: machine.argv(),
            port_socket: port_socket.clone(),
            console_socket: console_socket.clone(),
            console_log: run.join("console.log"),
            tap: tap.map(str::to_owned),
            session_handshake: true,
        };
        let started = std::time::Instant::now();
        let handle = self
            .container
            .launch_helper(run, "vmm", &config, "the microVM monitor")
            .await?;
        let monitor_up = started.elapsed();
        if let Err(e) = crate::agent_client::ping_within(GUEST_BOOT_TIMEOUT, &socket).await {
            return Err(self.boot_failure(run, &format!("{e}")));
        }
        tracing::info!(
            vm_id = %vm.id,
            accelerator = self.accelerator.as_str(),
            monitor_ms = monitor_up.as_millis() as u64,
            booted_ms = started.elapsed().as_millis() as u64,
            "microVM booted"
        );
        Ok(handle)
    }

    /// A boot failure, with the end of the guest's console for why.
    fn boot_failure(&self, run: &Path, what: &str) -> RuntimeError {
        let console = std::fs::read_to_string(run.join("console.log")).unwrap_or_default();
        let vmm = std::fs::read_to_string(run.join("vmm.log")).unwrap_or_default();
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(8)..].join("\n")
        };
        RuntimeError::Setup(format!(
            "the microVM did not boot: {what}\nconsole:\n{}\nmonitor:\n{}",
            tail(&console),
            tail(&vmm)
        ))
    }
}

crate::over_container::provider_over_container!(MicroVmProvider {
    fn name(&self) -> &'static str {
        "microvm"
    }

    fn has_variant(&self, variant: &str) -> bool {
        self.container.has_variant(variant)
    }

    fn accelerator(&self) -> Option<&'static str> {
        Some(self.accelerator.as_str())
    }

    async fn start(&self, vm: &Vm, rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        let run = self.container.run_dir(&vm.id);
        std::fs::create_dir_all(&run)
            .map_err(|e| RuntimeError::host(run.display().to_string(), e))?;
        match self.boot(vm, rootfs, &run).await {
            Ok(handle) => Ok(handle),
            Err(e) => {
                self.container
                    .clean_failed_start(&vm.id, Keep::after_failed_start(vm));
                Err(e)
            }
        }
    }

    fn can_suspend(&self, image_variant: &str) -> Result<(), RuntimeError> {
        if self.container.has_variant(image_variant) {
            return Err(RuntimeError::Unsupported(format!(
                "a microVM on the {image_variant} variant shares its root with the host over \
                 virtiofs, which qemu cannot save; a microVM started from an image can be suspended"
            )));
        }
        Ok(())
    }

    async fn suspend(
        &self,
        vm: &Vm,
        handle: RuntimeHandle,
        key: &paddock_core::secrets::DataKey,
    ) -> Result<(), RuntimeError> {
        self.save(vm, handle, key).await
    }

    async fn resume(
        &self,
        vm: &Vm,
        key: Option<&paddock_core::secrets::DataKey>,
    ) -> Result<RuntimeHandle, RuntimeError> {
        self.restore(vm, key).await
    }

    fn changes(&self, vm: &Vm) -> Vec<ChangedTree> {
        // A root on block devices keeps its changes on the guest's own
        // disk: readable only while held (`hold_changes`).
        if on_block_devices(&self.container.run_dir(&vm.id)).unwrap_or(false) {
            return Vec::new();
        }
        // The guest's root is the sandbox's overlay, served by virtiofsd
        // without a write-back cache: its writes are in the upper layer.
        self.container.changes(vm)
    }

    async fn hold_changes(&self, vm: &Vm) -> Result<Vec<ChangedTree>, RuntimeError> {
        let run = self.container.run_dir(&vm.id);
        if !on_block_devices(&run)? {
            return paddock_core::provider::hold_by_freezing(self, vm).await;
        }
        self.hold_disk(vm, &run).await
    }

    async fn release_changes(&self, vm: &Vm) -> Result<(), RuntimeError> {
        let run = self.container.run_dir(&vm.id);
        if !on_block_devices(&run)? {
            return paddock_core::provider::release_by_thawing(self, vm).await;
        }
        self.release_disk(vm, &run).await
    }

    async fn update_resources(
        &self,
        _id: &VmId,
        _resources: &Resources,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(
            "a microVM's memory and vCPUs are fixed when it boots".into(),
        ))
    }
});

/// The monitor's config a microVM booted with (`vmm.json` in its run dir).
fn saved_config(run: &Path) -> Result<VmmConfig, RuntimeError> {
    let path = run.join("vmm.json");
    let text =
        std::fs::read(&path).map_err(|e| RuntimeError::host(path.display().to_string(), e))?;
    serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Setup(format!("read {}: {e}", path.display())))
}

/// Whether the microVM booted from the run dir `run` has its root on
/// block devices (its monitor runs no virtiofsd).
fn on_block_devices(run: &Path) -> Result<bool, RuntimeError> {
    Ok(saved_config(run)?.virtiofsd.is_empty())
}

/// What the host gives a microVM's cgroups: its memory and qemu's own
/// overhead, its vCPUs, its pids.
fn host_limits(vm: &Vm) -> Resources {
    Resources::from_stored(
        vm.resources.memory_mb().saturating_add(HOST_OVERHEAD_MB),
        vm.resources.vcpu_count(),
        vm.resources.pids_max(),
    )
}
