//! Keeping the warm pool filled, and a create claiming from it (see
//! warm_pool.rs for what a prepared sandbox is).

use std::sync::Arc;
use std::time::Duration;

use super::component::Vms;
use super::warm_pool::Prepared;
use crate::error::{error_chain, CoreError};
use crate::ids::AccountId;
use crate::model::{Resources, RuntimeHandle, Vm, VmSpec};
use crate::shutdown::Shutdown;

/// How long the pool waits before trying again after a sandbox failed to
/// boot (a broken variant must not spin the host).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

impl Vms {
    /// The resources of a VM that asks for none.
    fn default_resources(&self) -> Option<Resources> {
        Resources::with_disk(None, None, None, &self.config.limits).ok()
    }

    /// Whether `vm` (not yet stored) has exactly the shape the pool
    /// prepares, so a prepared sandbox can be it.
    fn fits_warm_pool(&self, vm: &Vm, has_volumes: bool) -> bool {
        !has_volumes
            && vm.provider == self.provider.name()
            && vm.image_variant == self.config.default_variant
            && self.provider.has_variant(&vm.image_variant)
            && Some(vm.resources) == self.default_resources()
            && vm.options.snapshot_id.is_none()
            && vm.options.egress_policy.is_none()
            && vm.options.gpus.is_empty()
            && vm.options.launch.is_none()
    }

    /// Gives `vm` (not yet stored) a prepared sandbox when it fits one:
    /// the VM takes the sandbox's id, and its network; the sandbox's
    /// handle goes to [`Vms::finish_start`].
    pub(crate) fn claim_prepared(&self, vm: &mut Vm, has_volumes: bool) -> Option<RuntimeHandle> {
        if self.config.warm_pool == 0 || !self.fits_warm_pool(vm, has_volumes) {
            return None;
        }
        while let Some(prepared) = self.warm_pool.take() {
            if !self.provider.is_alive(&prepared.id, prepared.handle) {
                tracing::warn!(vm_id = %prepared.id, "a prepared sandbox died in the pool");
                self.discard_prepared(prepared);
                continue;
            }
            vm.id = prepared.id;
            vm.network = prepared.network;
            return Some(prepared.handle);
        }
        None
    }

    /// Makes the prepared sandbox `handle` the stored VM `vm`'s: the
    /// variables of its `env`, which a booted sandbox gets at boot.
    pub(crate) async fn adopt_prepared(
        &self,
        vm: &Vm,
        handle: RuntimeHandle,
    ) -> Result<RuntimeHandle, CoreError> {
        if !vm.env.is_empty() {
            let env = vm.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if let Err(e) = self.provider.channel().stage_env(&vm.id, env).await {
                self.discard_prepared(Prepared {
                    id: vm.id.clone(),
                    handle,
                    network: None,
                });
                return Err(e.into());
            }
        }
        tracing::debug!(vm_id = %vm.id, "VM took a prepared sandbox");
        Ok(handle)
    }

    /// Stops the prepared sandbox a VM claimed but could not be stored
    /// with (its network goes with it).
    pub(crate) fn give_back_prepared(&self, vm: &Vm, handle: Option<RuntimeHandle>) {
        if let Some(handle) = handle {
            self.discard_prepared(Prepared {
                id: vm.id.clone(),
                handle,
                network: vm.network.clone(),
            });
        }
    }

    /// Stops a prepared sandbox that no VM will take, off the caller's
    /// path.
    fn discard_prepared(&self, prepared: Prepared) {
        let provider = Arc::clone(&self.provider);
        let network = Arc::clone(&self.network);
        tokio::spawn(async move { stop_prepared(provider, network, prepared).await });
    }

    /// Boots one sandbox in the default shape, recorded nowhere.
    async fn prepare_sandbox(&self) -> Result<Prepared, CoreError> {
        let resources = self.default_resources().ok_or_else(|| {
            CoreError::FailedPrecondition(
                "the default sandbox size is outside the server's limits".into(),
            )
        })?;
        let spec = VmSpec {
            session_id: None,
            lifetime_seconds: None,
            resources,
            metadata: Default::default(),
            env: Default::default(),
            image_variant: self.config.default_variant.clone(),
            options: Default::default(),
            volumes: Vec::new(),
            provider: None,
            placement: crate::model::Placement::ThisNode,
        };
        // The sandbox belongs to no account until a VM claims it: this
        // record is never stored, and its account is used for nothing.
        let mut vm = self.new_vm(&AccountId::generate(), spec);
        let rootfs = self.rootfs_for(&mut vm).await?;
        vm.network = self.network_for(&vm).await?;
        match self.provider.start(&vm, &rootfs).await {
            Ok(handle) => Ok(Prepared {
                id: vm.id,
                handle,
                network: vm.network,
            }),
            Err(e) => {
                if let Some(network) = &vm.network {
                    if let Err(release) = self.network.release(&vm.id, network).await {
                        tracing::error!(vm_id = %vm.id, error = %error_chain(&release), "could not free a prepared sandbox's network");
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Keeps `[sandbox] warm_pool` sandboxes prepared until `shutdown`,
    /// then stops those no VM took.
    pub async fn run_warm_pool(self: Arc<Self>, mut shutdown: Shutdown) {
        let target = self.config.warm_pool;
        if target == 0 || !self.provider.has_variant(&self.config.default_variant) {
            return;
        }
        loop {
            // A boot under way is never cancelled (that would leave half a
            // sandbox): shutdown waits for it, and then stops it with the
            // rest.
            while self.warm_pool.len() < target && !*shutdown.0.borrow() {
                match self.prepare_sandbox().await {
                    Ok(p) => self.warm_pool.push(p),
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "could not prepare a sandbox for the warm pool");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.warm_pool.wake.notified() => {}
            }
        }
        for prepared in self.warm_pool.drain() {
            stop_prepared(
                Arc::clone(&self.provider),
                Arc::clone(&self.network),
                prepared,
            )
            .await;
        }
    }
}

async fn stop_prepared(
    provider: Arc<dyn crate::provider::Provider>,
    network: Arc<dyn crate::network_backend::NetworkBackend>,
    prepared: Prepared,
) {
    if let Err(e) = provider.stop(&prepared.id, Some(prepared.handle)).await {
        tracing::error!(vm_id = %prepared.id, error = %error_chain(&e), "could not stop a prepared sandbox");
    }
    if let Some(n) = &prepared.network {
        if let Err(e) = network.release(&prepared.id, n).await {
            tracing::error!(vm_id = %prepared.id, error = %error_chain(&e), "could not free a prepared sandbox's network");
        }
    }
}
