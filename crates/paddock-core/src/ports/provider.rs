//! The provider trait: what a sandbox backend (containers, host processes,
//! a Docker engine; microVMs later) must do. The service calls only this.

use std::path::Path;

use async_trait::async_trait;

use crate::error::RuntimeError;
use crate::exec::{
    ByteStream, DirEntry, ExecRequest, ExecStream, FileContent, PathChange, PathOp, PtyConnection,
    PtyInfo, PtySpec, SandboxPath,
};
use crate::ids::VmId;
use crate::model::{ChangedTree, Resources, RootfsSpec, RuntimeHandle, Vm, VmStatus};

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name recorded on each VM (`container`, …).
    fn name(&self) -> &'static str;

    /// Whether the named image variant can be started by this provider;
    /// one that resolves no variants (host processes, an engine's own
    /// images) starts none.
    fn has_variant(&self, _variant: &str) -> bool {
        false
    }

    /// Whether the provider resolves a VM's image reference itself (a
    /// Docker engine pulls its own images; host processes need none), so
    /// paddock's image store is not consulted: `start` then gets
    /// [`RootfsSpec::Reference`].
    fn resolves_images(&self) -> bool {
        false
    }

    /// The accounts (by id or name) whose sandboxes may run on this
    /// provider; `None`: every account. The operator limits a provider
    /// that isolates nothing (`local`) to the accounts it names.
    fn admitted_accounts(&self) -> Option<&std::collections::BTreeSet<String>> {
        None
    }

    /// Builds an inline Dockerfile into the provider's own image store
    /// under `tag` (for providers that [resolve images
    /// themselves](Provider::resolves_images)); `network` says whether its
    /// steps may reach the network.
    async fn build_image(
        &self,
        _tag: &str,
        _dockerfile: &str,
        _network: bool,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "the {} provider does not build Dockerfiles",
            self.name()
        )))
    }

    /// How the provider's guests run, for providers that run VMs (`kvm`
    /// or `tcg`); recorded on each VM.
    fn accelerator(&self) -> Option<&'static str> {
        None
    }

    /// Whether the sandbox joins paddock's sandbox network (a namespace
    /// on its bridge, under its egress rules). Host processes and a
    /// Docker engine's containers have networks of their own.
    fn uses_paddock_network(&self) -> bool {
        true
    }

    /// The sandbox's own working directory where the provider chooses one
    /// (a host-process sandbox's private directory), for relative paths of
    /// the files API; `None`: `/`.
    fn working_dir(&self, _vm: &Vm) -> Option<String> {
        None
    }

    /// Starts the sandbox for `vm` on `rootfs` and returns once its agent
    /// answers. On failure nothing of the sandbox is left behind.
    async fn start(&self, vm: &Vm, rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError>;

    /// Stops the sandbox and frees every host resource it held. Idempotent:
    /// stopping what is already gone succeeds. When it returns, no process
    /// of the sandbox runs its own code again and its paths are free; a
    /// provider may free the rest (cgroups, devices, files) just after,
    /// off the caller's path ([`Provider::settle`] waits for that).
    async fn stop(&self, id: &VmId, handle: Option<RuntimeHandle>) -> Result<(), RuntimeError>;

    /// Waits (a bounded while) until what stopped sandboxes left for later
    /// is freed: for a clean stop of the server.
    async fn settle(&self) {}

    /// Stops every process of the sandbox but keeps its filesystem, so a
    /// later `start` of the same VM resumes it. Providers that cannot keep
    /// one stop the sandbox outright.
    async fn halt(&self, id: &VmId, handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        self.stop(id, handle).await
    }

    /// Whether a sandbox of `image_variant` on this provider can be
    /// suspended (asked when a VM wants `auto_suspend`); why not if not.
    fn can_suspend(&self, _image_variant: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "{} sandboxes cannot be suspended with their memory on this server",
            self.name()
        )))
    }

    /// Saves the running sandbox whole, its memory and filesystem, into
    /// its run dir and stops it: afterwards nothing of it runs and its
    /// memory is the host's again. What holds its memory is sealed under
    /// `key`, never on disk in clear. On failure it keeps running.
    /// Providers that cannot say why.
    async fn suspend(
        &self,
        vm: &Vm,
        _handle: RuntimeHandle,
        _key: &crate::secrets::DataKey,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "{} sandboxes cannot be suspended with their memory on this server",
            vm.provider
        )))
    }

    /// Continues a sandbox [`Provider::suspend`] saved, where it was: the
    /// same processes with the same memory, opened with the `key` it was
    /// saved under (none for a sandbox saved before memory was sealed). On
    /// failure it stays saved.
    async fn resume(
        &self,
        vm: &Vm,
        _key: Option<&crate::secrets::DataKey>,
    ) -> Result<RuntimeHandle, RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "{} sandboxes cannot be resumed on this server",
            vm.provider
        )))
    }

    /// The trees holding everything the running sandbox `vm` changed in
    /// its filesystem (overlay upper layers); empty when it has none.
    fn changes(&self, vm: &Vm) -> Vec<ChangedTree>;

    /// Freezes every process of the sandbox (or thaws them), returning
    /// once the whole sandbox is in that state.
    async fn set_frozen(&self, id: &VmId, frozen: bool) -> Result<(), RuntimeError>;

    /// Holds what `vm` (running or suspended) changed in its filesystem
    /// still and readable on the host until [`Provider::release_changes`]:
    /// the trees to read, empty when it has none the host can read. The
    /// default freezes a running sandbox's processes over [`Provider::changes`].
    async fn hold_changes(&self, vm: &Vm) -> Result<Vec<ChangedTree>, RuntimeError> {
        hold_by_freezing(self, vm).await
    }

    /// Ends a [`Provider::hold_changes`] that returned trees: the sandbox
    /// goes on as before.
    async fn release_changes(&self, vm: &Vm) -> Result<(), RuntimeError> {
        release_by_thawing(self, vm).await
    }

    /// Binds the host directory `source` at `target` inside the running
    /// sandbox, read-only (enforced by the kernel) when asked. A provider
    /// that cannot refuses: host processes have no mount namespace of
    /// their own (a mount would land on the host), and a running microVM
    /// has no device to hotplug it through.
    async fn attach(
        &self,
        _id: &VmId,
        _handle: RuntimeHandle,
        _source: &Path,
        _target: &str,
        _read_only: bool,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(format!(
            "{} sandboxes cannot mount volumes: use the container provider",
            self.name()
        )))
    }

    /// Unmounts what [`Provider::attach`] put at `target`; where nothing
    /// can be attached there is nothing to undo.
    async fn detach(
        &self,
        _id: &VmId,
        _handle: RuntimeHandle,
        _target: &str,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Whether the sandbox behind `handle` still runs.
    fn is_alive(&self, id: &VmId, handle: RuntimeHandle) -> bool;

    /// The sandbox's CPU time and memory so far, from the host's own
    /// accounting (its cgroup); `None` where the provider keeps none.
    fn usage(&self, _id: &VmId) -> Option<crate::model::UsageCounters> {
        None
    }

    /// Applies new limits to a running sandbox.
    async fn update_resources(&self, id: &VmId, resources: &Resources) -> Result<(), RuntimeError>;

    /// Frees everything this provider holds on the host for sandboxes not
    /// in `live` (after a crash or restart). Returns how many it removed.
    async fn cleanup_orphans(&self, live: &[VmId]) -> Result<usize, RuntimeError>;

    /// The sandbox's channel: exec, jobs, files, PTYs and staged env.
    fn channel(&self) -> &dyn SandboxChannel;

    /// The socket the sandbox's agent answers on, where it has one on
    /// this host: what another node's tunnel to it is spliced onto.
    fn agent_socket(&self, _id: &VmId) -> Option<std::path::PathBuf> {
        None
    }
}

/// How the server reaches a sandbox's insides: exec, jobs, files, PTYs
/// and staged environment. The container, local and microVM providers
/// share one (the agent behind the sandbox's `agent.sock`); a Docker
/// engine's is its exec API.
#[async_trait]
pub trait SandboxChannel: Send + Sync {
    /// Adds variables to the environment of every later exec and PTY in
    /// the sandbox. Kept in the sandbox's memory only, never on disk.
    async fn stage_env(&self, id: &VmId, env: Vec<(String, String)>) -> Result<(), RuntimeError>;
    /// Removes staged variables by name.
    async fn unstage_env(&self, id: &VmId, names: Vec<String>) -> Result<(), RuntimeError>;
    async fn exec(&self, id: &VmId, request: ExecRequest) -> Result<ExecStream, RuntimeError>;
    /// Starts a job, `job` naming it in the sandbox: a command that
    /// outlives the server's connection to the sandbox (and the server),
    /// its output kept in the sandbox until read with
    /// [`SandboxChannel::job_attach`]. Providers without jobs refuse.
    async fn job_start(
        &self,
        _id: &VmId,
        _job: &str,
        _request: ExecRequest,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this provider has no jobs".into(),
        ))
    }
    /// Job `job`'s output from these byte offsets (what the caller has
    /// already), live, then its exit; dropping the stream leaves the job
    /// running.
    async fn job_attach(
        &self,
        _id: &VmId,
        _job: &str,
        _stdout_from: u64,
        _stderr_from: u64,
    ) -> Result<ExecStream, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this provider has no jobs".into(),
        ))
    }
    async fn read_file(&self, id: &VmId, path: &SandboxPath) -> Result<FileContent, RuntimeError>;
    /// Looks at or changes one path: the entry it names afterwards
    /// (`None` after a removal).
    async fn path_op(&self, _id: &VmId, _op: PathOp) -> Result<Option<DirEntry>, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this provider cannot change paths one by one".into(),
        ))
    }
    /// Watches directory `path` (with `recursive`, its subdirectories
    /// too): its changes until the receiver is dropped.
    async fn watch(
        &self,
        _id: &VmId,
        _path: &SandboxPath,
        _recursive: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<PathChange>, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this provider cannot watch a directory".into(),
        ))
    }
    /// Sends `signal` to the process group a command of the sandbox leads
    /// (its pid from [`ExecRequest::started`] or a PTY's).
    async fn signal(&self, _id: &VmId, _pid: i32, _signal: i32) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this provider cannot signal a command".into(),
        ))
    }
    /// Writes `body` to `path`, creating parent directories; returns the
    /// number of bytes written. A failed write leaves no partial file.
    async fn write_file(
        &self,
        id: &VmId,
        path: &SandboxPath,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<u64, RuntimeError>;
    async fn pty_create(&self, id: &VmId, spec: PtySpec) -> Result<PtyInfo, RuntimeError>;
    async fn pty_list(&self, id: &VmId) -> Result<Vec<PtyInfo>, RuntimeError>;
    async fn pty_get(&self, id: &VmId, pty: &str) -> Result<PtyInfo, RuntimeError>;
    async fn pty_resize(
        &self,
        id: &VmId,
        pty: &str,
        cols: u16,
        rows: u16,
    ) -> Result<(), RuntimeError>;
    async fn pty_kill(&self, id: &VmId, pty: &str) -> Result<(), RuntimeError>;
    async fn pty_attach(&self, id: &VmId, pty: &str) -> Result<PtyConnection, RuntimeError>;
}

/// [`Provider::hold_changes`] by default: [`Provider::changes`], with a
/// running sandbox's processes frozen.
pub async fn hold_by_freezing<P: Provider + ?Sized>(
    provider: &P,
    vm: &Vm,
) -> Result<Vec<ChangedTree>, RuntimeError> {
    let trees = provider.changes(vm);
    if !trees.is_empty() && vm.status == VmStatus::Running {
        provider.set_frozen(&vm.id, true).await?;
    }
    Ok(trees)
}

/// [`Provider::release_changes`] by default: a running sandbox thawed.
pub async fn release_by_thawing<P: Provider + ?Sized>(
    provider: &P,
    vm: &Vm,
) -> Result<(), RuntimeError> {
    if vm.status == VmStatus::Running {
        provider.set_frozen(&vm.id, false).await?;
    }
    Ok(())
}

/// A byte stream to a port of a sandbox, whichever way it goes.
pub trait PortIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> PortIo for T {}

pub type PortStream = std::pin::Pin<Box<dyn PortIo>>;

/// The sandboxes of the other nodes sharing the store: a provider per node
/// whose channel reaches that node's agents through it (exec, files,
/// PTYs); what only a sandbox's own node can do (create, start, stop,
/// suspend) is sent to that node as a [`crate::cluster::NodeCall`].
#[async_trait]
pub trait RemoteNodes: Send + Sync {
    /// The provider for `node`'s sandboxes; `None` while the node is not
    /// known (not registered, or not yet seen).
    fn provider_on(&self, node: &crate::ids::NodeId) -> Option<std::sync::Arc<dyn Provider>>;

    /// A TCP connection to `port` of VM `vm` on `node`, made by that node:
    /// to the VM's address (a share's or a published port's traffic), or,
    /// with `inside`, to that address as the sandbox sees it, from its
    /// network namespace (`ssh -L`).
    async fn open_port(
        &self,
        node: &crate::ids::NodeId,
        vm: &crate::ids::VmId,
        port: u16,
        inside: Option<std::net::IpAddr>,
    ) -> Result<PortStream, RuntimeError>;

    /// Makes `call` on `node`, which acts as if its own caller had.
    async fn call(
        &self,
        node: &crate::ids::NodeId,
        call: &crate::cluster::NodeCall,
    ) -> Result<crate::cluster::NodeAnswer, crate::cluster::NodeCallFailure>;
}
