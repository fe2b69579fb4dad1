//! A sandbox channel over the agent protocol: exec, jobs, files, PTYs and
//! staged env, each one connection to the sandbox's agent. Where the agent
//! answers is the locator's: a socket on this host (container, local and
//! microVM sandboxes) or another node's tunnel to one.

use async_trait::async_trait;
use paddock_agent_protocol::proto::Request;
use paddock_core::exec::{
    ByteStream, DirEntry, ExecRequest, ExecStream, FileContent, PathChange, PathOp, PtyConnection,
    PtyInfo, PtySpec, SandboxPath,
};
use paddock_core::ids::{PtyId, VmId};
use paddock_core::provider::SandboxChannel;
use paddock_core::RuntimeError;

use crate::agent_client::{self, AgentAddress};

/// Where each sandbox's agent answers, and how its OOM kills are read.
pub trait AgentLocator: Send + Sync + 'static {
    fn agent_of(&self, id: &VmId) -> AgentAddress;
    /// Reads the sandbox's OOM-kill counter (0 where this host cannot).
    fn oom_kills(&self, id: &VmId) -> Box<dyn Fn() -> u64 + Send + 'static>;
}

pub struct AgentChannel<L> {
    locator: L,
}

impl<L: AgentLocator> AgentChannel<L> {
    pub fn new(locator: L) -> Self {
        Self { locator }
    }
}

#[async_trait]
impl<L: AgentLocator> SandboxChannel for AgentChannel<L> {
    async fn stage_env(&self, id: &VmId, env: Vec<(String, String)>) -> Result<(), RuntimeError> {
        agent_client::stage_env(&self.locator.agent_of(id), env).await
    }
    async fn unstage_env(&self, id: &VmId, names: Vec<String>) -> Result<(), RuntimeError> {
        agent_client::unstage_env(&self.locator.agent_of(id), names).await
    }
    async fn exec(&self, id: &VmId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        let oom_kills = self.locator.oom_kills(id);
        agent_client::exec(&self.locator.agent_of(id), request, oom_kills).await
    }
    async fn job_start(
        &self,
        id: &VmId,
        job: &str,
        request: ExecRequest,
    ) -> Result<(), RuntimeError> {
        agent_client::job_start(&self.locator.agent_of(id), job, request).await
    }
    async fn job_attach(
        &self,
        id: &VmId,
        job: &str,
        stdout_from: u64,
        stderr_from: u64,
    ) -> Result<ExecStream, RuntimeError> {
        let oom_kills = self.locator.oom_kills(id);
        agent_client::job_attach(
            &self.locator.agent_of(id),
            job,
            stdout_from,
            stderr_from,
            oom_kills,
        )
        .await
    }
    async fn read_file(&self, id: &VmId, path: &SandboxPath) -> Result<FileContent, RuntimeError> {
        agent_client::read_file(&self.locator.agent_of(id), path.as_str()).await
    }
    async fn path_op(&self, id: &VmId, op: PathOp) -> Result<Option<DirEntry>, RuntimeError> {
        agent_client::path_op(&self.locator.agent_of(id), op).await
    }
    async fn watch(
        &self,
        id: &VmId,
        path: &SandboxPath,
        recursive: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<PathChange>, RuntimeError> {
        agent_client::watch(&self.locator.agent_of(id), path.as_str(), recursive).await
    }
    async fn signal(&self, id: &VmId, pid: i32, signal: i32) -> Result<(), RuntimeError> {
        agent_client::signal(&self.locator.agent_of(id), pid, signal).await
    }
    async fn write_file(
        &self,
        id: &VmId,
        path: &SandboxPath,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<u64, RuntimeError> {
        agent_client::write_file(&self.locator.agent_of(id), path.as_str(), mode, body).await
    }
    async fn pty_create(&self, id: &VmId, spec: PtySpec) -> Result<PtyInfo, RuntimeError> {
        let request = Request::PtyCreate {
            id: spec.id.unwrap_or_else(PtyId::generate).to_string(),
            cols: spec.cols,
            rows: spec.rows,
            command: agent_client::pty_command(spec.command),
        };
        agent_client::pty_request(&self.locator.agent_of(id), request)
            .await?
            .pop()
            .ok_or_else(|| RuntimeError::Agent("no PTY in the reply".into()))
    }
    async fn pty_list(&self, id: &VmId) -> Result<Vec<PtyInfo>, RuntimeError> {
        agent_client::pty_request(&self.locator.agent_of(id), Request::PtyList).await
    }
    async fn pty_get(&self, id: &VmId, pty: &str) -> Result<PtyInfo, RuntimeError> {
        agent_client::pty_request(
            &self.locator.agent_of(id),
            Request::PtyGet { id: pty.to_owned() },
        )
        .await?
        .pop()
        .ok_or_else(|| RuntimeError::PtyNotFound(pty.to_owned()))
    }
    async fn pty_resize(
        &self,
        id: &VmId,
        pty: &str,
        cols: u16,
        rows: u16,
    ) -> Result<(), RuntimeError> {
        let request = Request::PtyResize {
            id: pty.to_owned(),
            cols,
            rows,
        };
        agent_client::pty_request(&self.locator.agent_of(id), request)
            .await
            .map(|_| ())
    }
    async fn pty_kill(&self, id: &VmId, pty: &str) -> Result<(), RuntimeError> {
        agent_client::pty_request(
            &self.locator.agent_of(id),
            Request::PtyKill { id: pty.to_owned() },
        )
        .await
        .map(|_| ())
    }
    async fn pty_attach(&self, id: &VmId, pty: &str) -> Result<PtyConnection, RuntimeError> {
        agent_client::pty_attach(&self.locator.agent_of(id), pty).await
    }
}
