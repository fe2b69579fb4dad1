//! Providers built on the container provider's parts (`local`,
//! `microvm`) keep their sandboxes in its run dirs and cgroups and reach
//! their agent through the same `agent.sock`, so they pass those calls
//! straight to it.

/// `#[async_trait] impl Provider for $ty`, with the type's own methods,
/// and delegated to its `container` field: the lifecycle calls that act on
/// the sandbox's processes and cgroups (stop, halt, freeze — for a
/// microVM, freezing the cgroup stops qemu's vCPU threads — liveness and
/// usage, which for a microVM is its monitor's: what the host gives it).
/// Its channel (env staging, exec, files, PTYs) is the container
/// provider's own, on the same `agent.sock`. Orphan cleanup is the
/// container provider's: given every live VM, it covers these sandboxes
/// too.
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

            async fn settle(&self) {
                paddock_core::provider::Provider::settle(self.container.as_ref()).await
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

            fn usage(
                &self,
                id: &paddock_core::ids::VmId,
            ) -> Option<paddock_core::model::UsageCounters> {
                self.container.cgroups.usage(id.as_str())
            }

            async fn cleanup_orphans(
                &self,
                _live: &[paddock_core::ids::VmId],
            ) -> Result<usize, paddock_core::RuntimeError> {
                Ok(0)
            }

            fn channel(&self) -> &dyn paddock_core::provider::SandboxChannel {
                paddock_core::provider::Provider::channel(self.container.as_ref())
            }

            fn agent_socket(
                &self,
                id: &paddock_core::ids::VmId,
            ) -> Option<std::path::PathBuf> {
                paddock_core::provider::Provider::agent_socket(self.container.as_ref(), id)
            }
        }
    };
}

pub(crate) use provider_over_container;
