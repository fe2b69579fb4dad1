//! Providers built on the container provider's parts (`local`,
//! `microvm`) keep their sandboxes in its run dirs and cgroups and reach
//! their agent through the same `agent.sock`, so they pass those calls
//! straight to it.

/// `#[async_trait] impl Provider for $ty`, with the type's own methods,
/// and delegated to its `container` field: the lifecycle calls that act on
/// the sandbox's processes and cgroups (stop, halt, freeze — for a
/// microVM, freezing the cgroup stops qemu's vCPU threads — and liveness),
/// and every call that only talks to the sandbox's agent (env staging,
/// exec, files, PTYs). Orphan cleanup is the container provider's: given
/// every live VM, it covers these sandboxes too.
macro_rules! provider_over_container {
    ($ty:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl paddock_core::provider::Provider for $ty {
            $($own)*

            async fn stop(
                &self,
                id: &paddock_core::ids::VmId,
                handle: Option<paddock_core::model::RuntimeHandle>,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.stop(id, handle).await
            }

            async fn halt(
                &self,
                id: &paddock_core::ids::VmId,
                handle: Option<paddock_core::model::RuntimeHandle>,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.halt(id, handle).await
            }

            async fn set_frozen(
                &self,
                id: &paddock_core::ids::VmId,
                frozen: bool,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.set_frozen(id, frozen).await
            }

            fn is_alive(
                &self,
                id: &paddock_core::ids::VmId,
                handle: paddock_core::model::RuntimeHandle,
            ) -> bool {
                self.container.is_alive(id, handle)
            }

            async fn cleanup_orphans(
                &self,
                _live: &[paddock_core::ids::VmId],
            ) -> Result<usize, paddock_core::RuntimeError> {
                Ok(0)
            }

            async fn stage_env(
                &self,
                id: &paddock_core::ids::VmId,
                env: Vec<(String, String)>,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.stage_env(id, env).await
            }

            async fn exec(
                &self,
                id: &paddock_core::ids::VmId,
                request: paddock_core::exec::ExecRequest,
            ) -> Result<paddock_core::exec::ExecStream, paddock_core::RuntimeError> {
                self.container.exec(id, request).await
            }

            async fn job_start(
                &self,
                id: &paddock_core::ids::VmId,
                job: &str,
                request: paddock_core::exec::ExecRequest,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.job_start(id, job, request).await
            }

            async fn job_attach(
                &self,
                id: &paddock_core::ids::VmId,
                job: &str,
                stdout_from: u64,
                stderr_from: u64,
            ) -> Result<paddock_core::exec::ExecStream, paddock_core::RuntimeError> {
                self.container
                    .job_attach(id, job, stdout_from, stderr_from)
                    .await
            }

            async fn read_file(
                &self,
                id: &paddock_core::ids::VmId,
                path: &paddock_core::exec::SandboxPath,
            ) -> Result<paddock_core::exec::FileContent, paddock_core::RuntimeError> {
                self.container.read_file(id, path).await
            }

            async fn write_file(
                &self,
                id: &paddock_core::ids::VmId,
                path: &paddock_core::exec::SandboxPath,
                mode: Option<u32>,
                body: paddock_core::exec::ByteStream,
            ) -> Result<u64, paddock_core::RuntimeError> {
                self.container.write_file(id, path, mode, body).await
            }

            async fn pty_create(
                &self,
                id: &paddock_core::ids::VmId,
                spec: paddock_core::exec::PtySpec,
            ) -> Result<paddock_core::exec::PtyInfo, paddock_core::RuntimeError> {
                self.container.pty_create(id, spec).await
            }

            async fn pty_list(
                &self,
                id: &paddock_core::ids::VmId,
            ) -> Result<Vec<paddock_core::exec::PtyInfo>, paddock_core::RuntimeError> {
                self.container.pty_list(id).await
            }

            async fn pty_get(
                &self,
                id: &paddock_core::ids::VmId,
                pty: &str,
            ) -> Result<paddock_core::exec::PtyInfo, paddock_core::RuntimeError> {
                self.container.pty_get(id, pty).await
            }

            async fn pty_resize(
                &self,
                id: &paddock_core::ids::VmId,
                pty: &str,
                cols: u16,
                rows: u16,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.pty_resize(id, pty, cols, rows).await
            }

            async fn pty_kill(
                &self,
                id: &paddock_core::ids::VmId,
                pty: &str,
            ) -> Result<(), paddock_core::RuntimeError> {
                self.container.pty_kill(id, pty).await
            }

            async fn pty_attach(
                &self,
                id: &paddock_core::ids::VmId,
                pty: &str,
            ) -> Result<paddock_core::exec::PtyConnection, paddock_core::RuntimeError> {
                self.container.pty_attach(id, pty).await
            }
        }
    };
}

pub(crate) use provider_over_container;
