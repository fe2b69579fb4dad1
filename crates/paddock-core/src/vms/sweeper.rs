//! Background work: reconciling VMs with what runs after a restart, and
//! the sweeper that ends expired VMs and records sandboxes that died.

use std::sync::Arc;

use super::component::{Vms, REASON_DELETED, REASON_LIFETIME_EXPIRED};
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{ExecutionId, VmId};
use crate::model::{Vm, VmStatus, VmStatusSet};
use crate::shutdown::Shutdown;

impl Vms {
    /// Brings the records in line with what really runs, after a restart or
    /// a crash: live sandboxes stay, dead ones are marked failed, and every
    /// host resource no record owns is freed.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), CoreError> {
        let cut_short = self
            .parts
            .snapshots
            .fail_unfinished("the server restarted while the snapshot was made")
            .await?;
        if !cut_short.is_empty() {
            tracing::warn!(
                count = cut_short.len(),
                "snapshots lost in a restart marked failed"
            );
        }
        let mut live = Vec::new();
        for vm in self
            .store
            .list_vms_in(&VmStatusSet::holding_resources())
            .await?
        {
            match (vm.status, vm.runtime) {
                (VmStatus::Running, Some(h)) if self.is_alive(&vm, h) => {
                    tracing::info!(vm_id = %vm.id, pid = h.pid, "VM survived the restart");
                    live.push(vm);
                }
                (VmStatus::Running, _) => {
                    self.end_dead_sandbox(
                        &vm,
                        "the sandbox's processes exited while the server was down",
                    )
                    .await?;
                }
                // Marked lost while this node was silent: back with it.
                (VmStatus::Lost, Some(h)) if self.is_alive(&vm, h) => {
                    live.push(self.found_again(vm).await?);
                }
                (VmStatus::Lost, _) => {
                    self.end_dead_sandbox(&vm, "its node was gone and the sandbox with it")
                        .await?;
                }
                (VmStatus::Creating, _) => {
                    self.mark_failed(
                        &vm.id,
                        "the server restarted while the VM was being created",
                    )
                    .await?;
                }
                _ => {
                    self.terminate(vm.id, REASON_DELETED).await?;
                }
            }
        }
        // Main commands that run as jobs of surviving sandboxes are taken
        // back; every other command that was running is lost.
        let adopted = self.adoptable_jobs(&live).await;
        let kept: Vec<ExecutionId> = adopted.iter().map(|a| a.record.id.clone()).collect();
        let failed = self
            .store
            .fail_unfinished_executions(
                "the server restarted while the command ran",
                Timestamp::now(),
                &kept,
            )
            .await?;
        if failed > 0 {
            tracing::warn!(count = failed, "executions lost in a restart marked failed");
        }
        self.adopt_jobs(adopted);
        self.parts.volumes.reconcile(&live).await?;
        // A snapshot cut short left its VM held (frozen); suspended ones
        // are among them too.
        let suspended = self
            .store
            .list_vms_in(&VmStatusSet::of(&[VmStatus::Suspended]))
            .await?;
        for vm in live.iter().chain(&suspended) {
            if cut_short.contains(&vm.id) {
                self.release_held_changes(vm).await;
            }
        }
        // A suspended VM keeps its network (address, namespace, tap) and
        // its run dir (disks and saved memory) for its resume.
        let with_suspended: Vec<Vm> = live.iter().chain(&suspended).cloned().collect();
        self.reconcile_network(&with_suspended).await?;
        let mut live: Vec<VmId> = live.into_iter().chain(suspended).map(|vm| vm.id).collect();
        // A stopped sandbox keeps its files (and any volume attachments)
        // for its next start.
        live.extend(
            self.store
                .list_vms_in(&VmStatusSet::of(&[VmStatus::Stopped]))
                .await?
                .into_iter()
                .filter(|vm| vm.options.launch.is_some())
                .map(|vm| vm.id),
        );
        let mut removed = 0;
        for provider in self.providers.values() {
            removed += provider.cleanup_orphans(&live).await?;
        }
        if removed > 0 {
            tracing::info!(count = removed, "orphaned sandboxes cleaned");
        }
        self.restore_vault_services().await;
        Ok(())
    }

    /// A lost VM whose sandbox survived its node's absence: running again.
    async fn found_again(&self, mut vm: Vm) -> Result<Vm, CoreError> {
        let _guard = self.lock_vm(&vm.id).await;
        vm.status = VmStatus::Running;
        vm.status_reason = None;
        vm.updated_at = Timestamp::now();
        self.store.update_vm(&vm).await?;
        tracing::info!(vm_id = %vm.id, "lost VM found again: its node is back and so is it");
        Ok(vm)
    }

    /// Ends VMs whose lifetime is over and notices sandboxes that died,
    /// until `shutdown`.
    pub async fn run_sweeper(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            n += 1;
            if let Err(e) = self.sweep_expired().await {
                tracing::error!(error = %error_chain(&e), "lifetime sweep failed");
            }
            // Liveness and idleness are cheaper to check less often than
            // lifetimes; both read the running VMs, once.
            if n.is_multiple_of(8) {
                match self.sweep_dead().await {
                    Ok(alive) => self.sweep_idle(&alive).await,
                    Err(e) => tracing::error!(error = %error_chain(&e), "liveness sweep failed"),
                }
            }
        }
    }

    async fn sweep_expired(&self) -> Result<(), CoreError> {
        for vm in self.store.list_expired_vms(Timestamp::now()).await? {
            // A VM still starting is left to its start, which sets its
            // lifetime again from when it runs (a slow boot does not use
            // it up): ending it mid-start would race the start, and one
            // that suspends at its end (`auto_suspend`) can only be
            // suspended running.
            if vm.status == VmStatus::Creating {
                continue;
            }
            tracing::info!(vm_id = %vm.id, "lifetime expired");
            if self.suspend_expired(&vm).await {
                continue;
            }
            if let Err(e) = self.terminate(vm.id.clone(), REASON_LIFETIME_EXPIRED).await {
                tracing::error!(vm_id = %vm.id, error = %error_chain(&e), "could not end expired VM");
            }
        }
        Ok(())
    }

    /// Records that `vm`'s sandbox died outside paddock (its processes
    /// killed, its Docker engine restarted): a launched sandbox that keeps
    /// its filesystem stops, so `start` resumes it; any other VM fails.
    async fn end_dead_sandbox(&self, vm: &Vm, reason: &str) -> Result<(), CoreError> {
        if vm.options.launch.as_ref().is_some_and(|l| l.preserve) {
            let reason = format!("{reason}; its filesystem is kept, start resumes it");
            match self.halt_dead_vm(&vm.id, &reason).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(vm_id = %vm.id, error = %error_chain(&e), "could not stop a dead sandbox; marking it failed");
                }
            }
        }
        self.mark_failed(&vm.id, reason).await
    }

    /// Marks running VMs whose sandbox died as failed; returns the others.
    async fn sweep_dead(&self) -> Result<Vec<Vm>, CoreError> {
        let mut alive = Vec::new();
        for vm in self
            .store
            .list_vms_in(&VmStatusSet::of(&[VmStatus::Running]))
            .await?
        {
            match vm.runtime {
                Some(h) if !self.is_alive(&vm, h) => {
                    self.end_dead_sandbox(&vm, "the sandbox's processes exited")
                        .await?;
                }
                _ => alive.push(vm),
            }
        }
        Ok(alive)
    }

    /// Waits until every provider has freed what the sandboxes it stopped
    /// left for later (for a clean stop of the server).
    pub async fn settle_providers(&self) {
        for provider in self.providers.values() {
            provider.settle().await;
        }
    }

    pub async fn count_vms_by_status(&self) -> Result<Vec<(VmStatus, u64)>, CoreError> {
        Ok(self.store.count_vms_by_status().await?)
    }
}
