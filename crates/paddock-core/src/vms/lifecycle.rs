//! Stopping and restarting a sandbox in place, and stopping idle ones:
//! the lifecycle of sandboxes launched from environment definitions
//! (`VmOptions::launch`). A stop with `preserve` keeps the sandbox's
//! filesystem (its overlay upper dirs, or a local sandbox's working
//! directory) so the next start resumes it; without, the next start
//! begins from the image again. Either way the VM keeps its id, volumes
//! and settings, and rests in `stopped` until started or deleted.

use crate::cluster::NodeCall;
use std::sync::Arc;
use std::time::Instant;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, VmId};
use crate::model::{Vm, VmStatus};

pub const REASON_STOPPED: &str = "stopped on request";
pub const REASON_IDLE: &str = "stopped after its auto_stop idle time";
pub const REASON_MAIN_ENDED: &str = "stopped when its main command ended";

/// What the caller of a halt knows about the sandbox's processes.
#[derive(Debug, Clone, Copy)]
enum Liveness {
    Unknown,
    Dead,
}

impl Vms {
    /// Stops a launched sandbox, keeping its filesystem when its
    /// definition said `preserve`.
    pub async fn stop_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Stop {
                account: account.clone(),
                vm: id.clone(),
            };
            return self.vm_on(&node, call).await;
        }
        let vm = self.get_vm(account, id).await?;
        self.halt_vm(&vm.id, REASON_STOPPED).await
    }

    /// The stop itself, for the caller's request and the server's own
    /// lifecycle rules. Stopping a stopped VM is a no-op.
    pub(crate) async fn halt_vm(&self, id: &VmId, reason: &str) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Halt {
                vm: id.clone(),
                reason: reason.to_owned(),
            };
            return self.vm_on(&node, call).await;
        }
        self.halt_vm_as(id, reason, Liveness::Unknown).await
    }

    /// [`Vms::halt_vm`] for a sandbox whose processes are known to be
    /// gone: when the provider cannot be reached to tidy it up (a Docker
    /// engine restarting under it), the VM still stops; what it keeps
    /// (a container, a disk) is found again by the next start.
    pub(crate) async fn halt_dead_vm(&self, id: &VmId, reason: &str) -> Result<Vm, CoreError> {
        self.halt_vm_as(id, reason, Liveness::Dead).await
    }

    async fn halt_vm_as(
        &self,
        id: &VmId,
        reason: &str,
        liveness: Liveness,
    ) -> Result<Vm, CoreError> {
        let _guard = self.lock_vm(id).await;
        let mut vm = self
            .store
            .find_vm(id)
            .await?
            .ok_or_else(|| CoreError::not_found("VM", id))?;
        let Some(launch) = vm.options.launch.clone() else {
            return Err(CoreError::FailedPrecondition(
                "only sandboxes launched from an environment definition stop and start; \
                 delete this VM instead"
                    .into(),
            ));
        };
        match vm.status {
            VmStatus::Stopped => return Ok(vm),
            VmStatus::Running => {}
            other => {
                return Err(CoreError::FailedPrecondition(format!(
                    "the sandbox is {}",
                    other.as_str()
                )))
            }
        }
        vm.status = VmStatus::Stopping;
        vm.updated_at = Timestamp::now();
        self.store.update_vm(&vm).await?;
        let stopped = match self.provider_named(&vm.provider) {
            Some(p) if launch.preserve => p.halt(&vm.id, vm.runtime).await,
            Some(p) => p.stop(&vm.id, vm.runtime).await,
            // Nothing of it runs here to stop.
            None => Ok(()),
        };
        match (stopped, liveness) {
            (Ok(()), _) => {}
            (Err(e), Liveness::Dead) => {
                tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "could not tidy up a dead sandbox; stopping it anyway");
            }
            (Err(e), Liveness::Unknown) => {
                tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not stop a sandbox");
                vm.status = VmStatus::Running;
                vm.updated_at = Timestamp::now();
                if let Err(restore) = self.store.update_vm(&vm).await {
                    tracing::warn!(vm_id = %vm.id, error = %restore, "could not restore a VM's status after a failed stop");
                }
                return Err(e.into());
            }
        }
        self.parts.shares.end_shares(&vm.id).await;
        self.release_network(&mut vm).await;
        self.activity.forget(&vm.id);
        let now = Timestamp::now();
        vm.status = VmStatus::Stopped;
        vm.status_reason = Some(reason.to_owned());
        vm.runtime = None;
        if let Some(l) = vm.options.launch.as_mut() {
            l.stopped_at = Some(now);
        }
        vm.updated_at = now;
        self.store.update_vm(&vm).await?;
        tracing::info!(vm_id = %vm.id, reason, preserved = launch.preserve, "sandbox stopped");
        self.settle_main_command(&vm).await;
        Ok(vm)
    }

    /// Waits a moment for the record of a stopped sandbox's main command
    /// to say how it ended (its follower learns of the kill at once from
    /// an agent, within a poll from a Docker engine), so the stop's
    /// answer shows it.
    async fn settle_main_command(&self, vm: &Vm) {
        let Some(id) = vm
            .options
            .launch
            .as_ref()
            .and_then(|l| l.main_execution_id.as_deref())
            .and_then(|id| id.parse::<crate::ids::ExecutionId>().ok())
        else {
            return;
        };
        let until = Instant::now() + std::time::Duration::from_secs(2);
        while Instant::now() < until {
            match self.store.get_execution(&vm.account_id, &id).await {
                Ok(Some(e)) if e.status == crate::model::ExecutionStatus::Running => {}
                _ => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Starts a stopped sandbox again, on what its stop kept.
    pub async fn start_vm(
        self: &Arc<Self>,
        account: &AccountId,
        id: &VmId,
        wait: bool,
    ) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Start {
                account: account.clone(),
                vm: id.clone(),
                wait,
            };
            return self.vm_on(&node, call).await;
        }
        {
            let _guard = self.lock_vm(id).await;
            let mut vm = self.get_vm(account, id).await?;
            match vm.status {
                VmStatus::Running | VmStatus::Creating => return Ok(vm),
                VmStatus::Stopped if vm.options.launch.is_some() => {}
                other => {
                    return Err(CoreError::FailedPrecondition(format!(
                        "the sandbox is {}, not stopped",
                        other.as_str()
                    )))
                }
            }
            // A stopped sandbox holds no memory or CPU: starting it again
            // is checked against the account's capacity as a create is.
            let _creates = self.reserve_room(account, &vm.resources).await?;
            vm.status = VmStatus::Creating;
            vm.status_reason = None;
            vm.updated_at = Timestamp::now();
            self.store.update_vm(&vm).await?;
        }
        let this = Arc::clone(self);
        let vm_id = id.clone();
        let started = tokio::spawn(async move { this.finish_start(&vm_id, None).await });
        if !wait {
            return self.get_vm(account, id).await;
        }
        match started.await {
            Ok(result) => result,
            Err(join) => Err(CoreError::Unavailable(format!(
                "sandbox start task failed: {join}"
            ))),
        }
    }

    /// Stops the launched sandboxes among `running` (the VMs the liveness
    /// sweep found alive) that were idle longer than their `auto_stop`.
    pub(crate) async fn sweep_idle(&self, running: &[Vm]) {
        for vm in running {
            let Some(limit) = vm.options.launch.as_ref().and_then(|l| l.idle_stop_seconds) else {
                continue;
            };
            let Some(idle) = self.activity.idle_for(&vm.id, self.started_at) else {
                continue;
            };
            let running_for = vm
                .started_at
                .map(|s| {
                    let ms = Timestamp::now().unix_millis() - s.unix_millis();
                    u64::try_from(ms / 1000).unwrap_or(0)
                })
                .unwrap_or(u64::MAX);
            if idle.as_secs() >= limit && running_for >= limit {
                if let Err(e) = self.halt_vm(&vm.id, REASON_IDLE).await {
                    tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not stop an idle sandbox");
                }
            }
        }
    }
}
