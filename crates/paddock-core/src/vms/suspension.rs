//! Suspend and resume: a running VM saved whole (memory and filesystem)
//! into the data dir by its provider, holding no process, memory or CPU
//! while `suspended`, and continued where it was. Its identity stays: the
//! same id, session, network address, shares and egress policy. A
//! suspended VM does not expire; resuming it starts its lifetime again.
//! With `auto_suspend` an expiring VM is suspended instead of ended; with
//! `auto_resume` a call that needs it live resumes it first.

use crate::cluster::NodeCall;
use std::sync::Arc;

use super::component::Vms;
use super::sealed_keys::{key_unusable, memory_key_aad};
use crate::clock::Timestamp;
use crate::error::{error_chain, CoreError};
use crate::ids::{AccountId, VmId};
use crate::model::{Vm, VmStatus};
use crate::secrets::DataKey;

impl Vms {
    /// Suspends a running VM. Under the VM's lock, so a second suspend
    /// waits for the first and then finds the VM suspended (409). A failed
    /// suspend leaves the VM running.
    pub async fn suspend_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Suspend {
                account: account.clone(),
                vm: id.clone(),
            };
            return self.vm_on(&node, call).await;
        }
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let mut vm = self.get_vm(account, id).await?;
        let handle = match (vm.status, vm.runtime) {
            (VmStatus::Running, Some(handle)) => handle,
            (VmStatus::Suspended, _) => {
                return Err(CoreError::FailedPrecondition(
                    "the VM is already suspended".into(),
                ))
            }
            (status, _) => {
                return Err(CoreError::FailedPrecondition(format!(
                    "the VM is {}; only a running VM can be suspended",
                    status.as_str()
                )))
            }
        };
        let provider = self.provider_of(&vm)?;
        provider.can_suspend(&vm.image_variant)?;
        let began = std::time::Instant::now();
        // The saved memory is sealed under a key of its own, made here and
        // kept (sealed) on the VM's record until it resumes.
        let key = DataKey::generate();
        let sealed_key = key
            .seal(&self.parts.keyring, &memory_key_aad(&vm.id))
            .map_err(key_unusable)?;
        provider.suspend(&vm, handle, &key).await?;
        vm.options.memory_key = Some(sealed_key);
        vm.status = VmStatus::Suspended;
        vm.runtime = None;
        vm.expires_at = None;
        vm.updated_at = Timestamp::now();
        self.store.update_vm(&vm).await?;
        let _ = self.stuck_agents.clear(&vm.id);
        self.vm_event(&vm, "vm.suspended").await;
        tracing::info!(vm_id = %vm.id, ms = began.elapsed().as_millis() as u64, "VM suspended");
        Ok(vm)
    }

    /// Resumes a suspended VM. A failed resume leaves it suspended, with
    /// the reason on its record.
    pub async fn resume_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        if let Some(node) = self.owner_elsewhere(id).await? {
            let call = NodeCall::Resume {
                account: account.clone(),
                vm: id.clone(),
            };
            return self.vm_on(&node, call).await;
        }
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let mut vm = self.get_vm(account, id).await?;
        if vm.status != VmStatus::Suspended {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a suspended VM can be resumed",
                vm.status.as_str()
            )));
        }
        let provider = self.provider_of(&vm)?;
        // A suspended VM holds none of the account's capacity: it takes its
        // place again only if there is room.
        let _room = self.reserve_room(account, &vm.resources).await?;
        let began = std::time::Instant::now();
        // A VM suspended before memory was sealed has no key.
        let key = vm
            .options
            .memory_key
            .as_ref()
            .map(|sealed| DataKey::open(&self.parts.keyring, &memory_key_aad(&vm.id), sealed))
            .transpose()
            .map_err(key_unusable)?;
        match provider.resume(&vm, key.as_ref()).await {
            Ok(handle) => {
                vm.options.memory_key = None;
                vm.status = VmStatus::Running;
                vm.status_reason = None;
                vm.runtime = Some(handle);
                // After a server restart the egress path has forgotten them.
                if let Err(e) = self.apply_vault_services(&mut vm).await {
                    tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "vault services not in force after resume");
                }
                vm.expires_at = vm
                    .lifetime_seconds
                    .map(|l| Timestamp::now().plus_seconds(l));
                vm.updated_at = Timestamp::now();
                self.store.update_vm(&vm).await?;
                self.activity.touch(&vm.id);
                self.vm_event(&vm, "vm.resumed").await;
                tracing::info!(vm_id = %vm.id, ms = began.elapsed().as_millis() as u64, "VM resumed");
                Ok(vm)
            }
            Err(e) => {
                let reason = error_chain(&e);
                tracing::warn!(vm_id = %vm.id, error = %reason, "VM resume failed");
                vm.status_reason = Some(format!("resume failed: {reason}"));
                vm.updated_at = Timestamp::now();
                self.store.update_vm(&vm).await?;
                Err(e.into())
            }
        }
    }

    /// Starts resuming a suspended VM and returns at once, the VM still
    /// `suspended` until it runs (what `wait=false` asks). A resume that
    /// then fails leaves the reason on the VM's record, as a waited one
    /// does.
    pub async fn dispatch_resume(
        self: &Arc<Self>,
        account: &AccountId,
        id: &VmId,
    ) -> Result<Vm, CoreError> {
        let vm = self.get_vm(account, id).await?;
        if vm.status != VmStatus::Suspended {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a suspended VM can be resumed",
                vm.status.as_str()
            )));
        }
        let (this, account, id) = (Arc::clone(self), account.clone(), id.clone());
        tokio::spawn(async move {
            if let Err(e) = this.resume_vm(&account, &id).await {
                tracing::debug!(vm_id = %id, error = %error_chain(&e), "dispatched resume failed");
            }
        });
        Ok(vm)
    }

    /// `vm` live for a call that needs it: resumed first when it is
    /// suspended with `auto_resume`; as it is otherwise.
    pub(crate) async fn live(&self, vm: Vm) -> Result<Vm, CoreError> {
        if vm.status == VmStatus::Suspended && vm.options.auto_resume {
            tracing::info!(vm_id = %vm.id, "resuming a suspended VM for a call (auto_resume)");
            return self.resume_vm(&vm.account_id, &vm.id).await;
        }
        Ok(vm)
    }

    /// At the end of `vm`'s lifetime, with `auto_suspend`: suspended
    /// instead of ended. Whether it was.
    pub(crate) async fn suspend_expired(&self, vm: &Vm) -> bool {
        if !vm.options.auto_suspend || vm.status != VmStatus::Running {
            return false;
        }
        match self.suspend_vm(&vm.account_id, &vm.id).await {
            Ok(_) => {
                tracing::info!(vm_id = %vm.id, "lifetime expired: suspended (auto_suspend)");
                true
            }
            Err(e) => {
                tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "lifetime expired: could not suspend, ending it");
                false
            }
        }
    }
}
