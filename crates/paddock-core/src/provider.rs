//! The provider trait: what a sandbox backend (containers today; microVMs,
//! plain processes and Docker later) must do. The service calls only this.

use std::path::Path;

use async_trait::async_trait;

use crate::error::RuntimeError;
use crate::exec::{
    ByteStream, ExecRequest, ExecStream, FileContent, PtyConnection, PtyInfo, PtySpec, SandboxPath,
};
use crate::ids::VmId;
use crate::model::{ChangedTree, Resources, RootfsSpec, RuntimeHandle, Vm};

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The name recorded on each VM (`container`, …).
    fn name(&self) -> &'static str;

    /// Whether the named image variant can be started by this provider.
    fn has_variant(&self, variant: &str) -> bool;

    /// Starts the sandbox for `vm` on `rootfs` and returns once its agent
    /// answers. On failure nothing of the sandbox is left behind.
    async fn start(&self, vm: &Vm, rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError>;

    /// Stops the sandbox and frees every host resource it held. Idempotent:
    /// stopping what is already gone succeeds.
    async fn stop(&self, id: &VmId, handle: Option<RuntimeHandle>) -> Result<(), RuntimeError>;

    /// The trees holding everything the sandbox changed in its
    /// filesystem (overlay upper layers); empty when it has none.
    fn changes(&self, id: &VmId) -> Vec<ChangedTree>;

    /// Freezes every process of the sandbox (or thaws them), returning
    /// once the whole sandbox is in that state.
    async fn set_frozen(&self, id: &VmId, frozen: bool) -> Result<(), RuntimeError>;

    /// Adds variables to the environment of every later exec and PTY in
    /// the sandbox. Kept in the sandbox's memory only, never on disk.
    async fn stage_env(&self, id: &VmId, env: Vec<(String, String)>) -> Result<(), RuntimeError>;

    /// Binds the host directory `source` at `target` inside the running
    /// sandbox, read-only (enforced by the kernel) when asked.
    async fn attach(
        &self,
        id: &VmId,
        handle: RuntimeHandle,
        source: &Path,
        target: &str,
        read_only: bool,
    ) -> Result<(), RuntimeError>;

    /// Unmounts what [`Provider::attach`] put at `target`.
    async fn detach(
        &self,
        id: &VmId,
        handle: RuntimeHandle,
        target: &str,
    ) -> Result<(), RuntimeError>;

    /// Whether the sandbox behind `handle` still runs.
    fn is_alive(&self, id: &VmId, handle: RuntimeHandle) -> bool;

    /// Applies new limits to a running sandbox.
    async fn update_resources(&self, id: &VmId, resources: &Resources) -> Result<(), RuntimeError>;

    async fn exec(&self, id: &VmId, request: ExecRequest) -> Result<ExecStream, RuntimeError>;

    async fn read_file(&self, id: &VmId, path: &SandboxPath) -> Result<FileContent, RuntimeError>;

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

    /// Frees everything this provider holds on the host for sandboxes not
    /// in `live` (after a crash or restart). Returns how many it removed.
    async fn cleanup_orphans(&self, live: &[VmId]) -> Result<usize, RuntimeError>;
}
