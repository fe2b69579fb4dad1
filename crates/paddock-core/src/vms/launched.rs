//! Sandboxes launched from a definition (`VmOptions::launch`) as the VM
//! core keeps them: their main command, run as a job of the sandbox so a
//! restart finds it again (with `stop_on_terminal` its end stops the
//! sandbox), and the views a product shows of them. What a definition
//! is, and how it becomes a launch, is the definitions product's.

use std::sync::Arc;

use super::component::Vms;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::exec::ExecRequest;
use crate::ids::{AccountId, ExecutionId, VmId};
use crate::lifecycle::REASON_MAIN_ENDED;
use crate::model::{Execution, Vm, VmStatus, VmStatusSet};

/// A launched sandbox and its main command's record, if it has one.
#[derive(Debug, Clone)]
pub struct SandboxView {
    pub vm: Vm,
    pub main: Option<Execution>,
    /// Where relative paths of its files API start
    /// ([`Vms::sandbox_work_dir`]).
    pub work_dir: String,
}

impl Vms {
    /// Where relative paths of a launched sandbox's files API start: the
    /// definition's `cwd`, else the provider's own working directory (a
    /// local sandbox's private directory), else `/`.
    pub fn sandbox_work_dir(&self, vm: &Vm) -> String {
        vm.options
            .launch
            .as_ref()
            .and_then(|l| l.cwd.clone())
            .or_else(|| self.provider_of(vm).ok()?.working_dir(vm))
            .unwrap_or_else(|| "/".to_owned())
    }

    pub fn view_of(&self, vm: Vm, main: Option<Execution>) -> SandboxView {
        SandboxView {
            work_dir: self.sandbox_work_dir(&vm),
            vm,
            main,
        }
    }
}

impl Vms {
    /// Runs a launched sandbox's main command in the background; with
    /// `stop_on_terminal`, its end stops the sandbox.
    pub async fn start_main_command(
        self: &Arc<Self>,
        account: &AccountId,
        vm: &Vm,
        argv: Vec<String>,
    ) -> Result<Execution, CoreError> {
        let request = ExecRequest {
            started: None,
            user: None,
            argv,
            env: Vec::new(),
            cwd: None,
            stdin: None,
            stdin_stream: None,
            timeout: None,
        };
        // A job of the sandbox, so a restart of the server finds it again;
        // no use of the sandbox (idleness is the absence of exec, PTY,
        // file and share traffic: `auto_stop`).
        let started = self.start_job_recorded(account, vm, request).await?;
        let (execution, done) = (started.execution, started.done);
        {
            let _guard = self.lock_vm(&vm.id).await;
            if let Some(mut current) = self.store.find_vm(&vm.id).await? {
                if let Some(l) = current.options.launch.as_mut() {
                    l.main_execution_id = Some(execution.id.to_string());
                    l.main_is_job = started.is_job;
                }
                self.store.update_vm(&current).await?;
            }
        }
        let stop_on_end = vm
            .options
            .launch
            .as_ref()
            .is_some_and(|l| l.stop_on_terminal);
        let this = Arc::clone(self);
        let vm_id = vm.id.clone();
        tokio::spawn(async move {
            let ended = done.await;
            if !stop_on_end || ended.is_err() {
                return;
            }
            if let Err(e) = this.halt_vm(&vm_id, REASON_MAIN_ENDED).await {
                // Already stopped or deleted: nothing to do.
                tracing::debug!(vm_id = %vm_id, error = %error_chain(&e), "stop on terminal skipped");
            }
        });
        Ok(execution)
    }

    /// A launched sandbox of the account, with its main command's record.
    pub async fn launched_sandbox(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<SandboxView, CoreError> {
        let vm = self.get_vm(account, id).await?;
        if vm.options.launch.is_none() {
            return Err(CoreError::not_found("sandbox", id));
        }
        self.sandbox_view(account, vm).await
    }

    async fn sandbox_view(&self, account: &AccountId, vm: Vm) -> Result<SandboxView, CoreError> {
        let main = match vm
            .options
            .launch
            .as_ref()
            .and_then(|l| l.main_execution_id.as_deref())
            .and_then(|id| id.parse::<ExecutionId>().ok())
        {
            Some(id) => self.store.get_execution(account, &id).await?,
            None => None,
        };
        Ok(self.view_of(vm, main))
    }

    /// The account's launched sandboxes that are not deleted, newest
    /// first; only those of `definition` when given.
    pub async fn launched_sandboxes(
        &self,
        account: &AccountId,
        definition: Option<&str>,
    ) -> Result<Vec<SandboxView>, CoreError> {
        let statuses = VmStatusSet::of(&[
            VmStatus::Creating,
            VmStatus::Running,
            VmStatus::Stopping,
            VmStatus::Stopped,
            VmStatus::Failed,
        ]);
        let mut out = Vec::new();
        let filter = crate::model::VmFilter {
            statuses,
            limit: 10_000,
            ..Default::default()
        };
        for vm in self.store.list_vms(account, &filter).await? {
            let Some(launch) = &vm.options.launch else {
                continue;
            };
            if definition.is_some_and(|d| d != launch.definition_id) {
                continue;
            }
            out.push(self.sandbox_view(account, vm).await?);
        }
        out.sort_by_key(|v| std::cmp::Reverse(v.vm.created_at));
        Ok(out)
    }

    /// Deletes a launched sandbox and everything it kept.
    pub async fn delete_launched_sandbox(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<SandboxView, CoreError> {
        self.launched_sandbox(account, id).await?;
        let vm = self.delete_vm(account, id).await?;
        Ok(self.view_of(vm, None))
    }
}
