//! What reaches inside a running VM through its agent: exec (streamed,
//! collected, or as a recorded job), files and terminals; and what an
//! agent's answer or silence means for the VM (a stuck agent is marked,
//! a vanished sandbox is recorded as failed).

use std::sync::Arc;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::{CoreError, RuntimeError};
use crate::exec::{collect_output, ExecOutput};
use crate::exec::{
    ByteStream, DirEntry, ExecRequest, ExecStream, FileContent, PathChange, PathOp, PtyConnection,
    PtyInfo, PtySpec, SandboxPath,
};
use crate::ids::{AccountId, ExecutionId, VmId};
use crate::model::{Env, Execution, Vm, VmStatus};
use crate::provider::Provider;

impl Vms {
    pub(crate) async fn running_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, CoreError> {
        let vm = self.live(self.get_vm(account, id).await?).await?;
        if vm.status != VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}, not running",
                vm.status.as_str()
            )));
        }
        Ok(vm)
    }

    /// A running VM whose agent a call is about to use, with its
    /// provider: refused at once while that agent was stuck moments ago,
    /// or when this server no longer runs its provider.
    async fn agent_vm(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<(Vm, Arc<dyn Provider>), CoreError> {
        let vm = self.running_vm(account, id).await?;
        self.stuck_agents.check(&vm.id)?;
        let provider = self.provider_of(&vm)?;
        Ok((vm, provider))
    }

    /// What an agent call's result means for the VM: a missed deadline
    /// marks it (and its record's `status_reason`), an answer clears the
    /// mark, a vanished sandbox is recorded as failed.
    async fn agent_result<T>(
        &self,
        vm: &Vm,
        result: Result<T, RuntimeError>,
    ) -> Result<T, CoreError> {
        match result {
            Ok(v) => {
                if self.stuck_agents.clear(&vm.id) {
                    self.set_stuck_reason(&vm.id, false).await;
                }
                Ok(v)
            }
            Err(e @ RuntimeError::AgentTimeout(_)) => {
                tracing::warn!(vm_id = %vm.id, error = %e, "a VM's agent missed its deadline");
                self.stuck_agents.mark(&vm.id);
                self.set_stuck_reason(&vm.id, true).await;
                Err(e.into())
            }
            Err(e) => Err(self.check_gone(vm, e).await),
        }
    }

    async fn set_stuck_reason(&self, id: &VmId, stuck: bool) {
        let reason = crate::stuck_agents::STUCK_REASON;
        let _guard = self.lock_vm(id).await;
        let Ok(Some(mut vm)) = self.store.find_vm(id).await else {
            return;
        };
        if vm.status != VmStatus::Running {
            return;
        }
        let changed = match (stuck, vm.status_reason.as_deref()) {
            (true, None) => {
                vm.status_reason = Some(reason.to_owned());
                true
            }
            (false, Some(r)) if r == reason => {
                vm.status_reason = None;
                true
            }
            _ => false,
        };
        if changed {
            vm.updated_at = Timestamp::now();
            if let Err(e) = self.store.update_vm(&vm).await {
                tracing::error!(vm_id = %id, error = %error_chain(&e), "could not record a stuck agent");
            }
        }
    }

    pub async fn exec(
        &self,
        account: &AccountId,
        id: &VmId,
        request: ExecRequest,
    ) -> Result<ExecStream, CoreError> {
        request.check()?;
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let watch = self.exec_watch(&vm.id, &request);
        let started = provider.channel().exec(&vm.id, request).await;
        let stream = self.agent_result(&vm, started).await?;
        Ok(match watch {
            Some(watch) => self.observed_exec(&vm.id, watch, stream),
            None => stream,
        })
    }

    /// When the provider says a sandbox is gone, record it.
    async fn check_gone(&self, vm: &Vm, e: RuntimeError) -> CoreError {
        // Another node's sandbox is that node's to judge: its process
        // handle means nothing here.
        if matches!(e, RuntimeError::SandboxGone | RuntimeError::Agent(_)) && self.is_local(vm) {
            if let Some(h) = vm.runtime {
                if !self.is_alive(vm, h) {
                    let _ = self
                        .mark_failed(&vm.id, "the sandbox's processes exited")
                        .await;
                    return CoreError::FailedPrecondition("the VM is not running".into());
                }
            }
        }
        e.into()
    }

    /// Runs a command to its end and collects its output.
    pub async fn exec_collect(
        &self,
        account: &AccountId,
        id: &VmId,
        request: ExecRequest,
    ) -> Result<ExecOutput, CoreError> {
        let _busy = self.activity.busy(id);
        let stream = self.exec(account, id, request).await?;
        collect_output(stream, self.config.max_collected_output).await
    }

    /// Starts a command in the background; its result is read with
    /// [`Vms::get_execution`].
    pub async fn exec_async(
        self: &Arc<Self>,
        account: &AccountId,
        vm: &Vm,
        request: ExecRequest,
    ) -> Result<Execution, CoreError> {
        Ok(self.exec_recorded(account, vm, request, true).await?.0)
    }

    /// Starts a command whose output and end are recorded as an
    /// [`Execution`]; the task yields the final record. `in_use`: the VM
    /// is not idle while it runs (a client's command; a definition's main
    /// command is not use, so `auto_stop` can end a sandbox it keeps
    /// busy).
    pub(crate) async fn exec_recorded(
        self: &Arc<Self>,
        account: &AccountId,
        vm: &Vm,
        request: ExecRequest,
        in_use: bool,
    ) -> Result<(Execution, tokio::task::JoinHandle<Execution>), CoreError> {
        let busy = in_use.then(|| self.activity.busy(&vm.id));
        let stream = self.exec(account, &vm.id, request).await?;
        let execution = Execution::started(ExecutionId::generate(), vm);
        self.store.insert_execution(&execution).await?;
        let this = Arc::clone(self);
        let record = execution.clone();
        let done = tokio::spawn(async move {
            let _busy = busy;
            this.record_execution(stream, record).await
        });
        Ok((execution, done))
    }

    pub async fn get_execution(
        &self,
        account: &AccountId,
        id: &ExecutionId,
    ) -> Result<Execution, CoreError> {
        self.store
            .get_execution(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("execution", id))
    }

    // ---- files and terminals ------------------------------------------------

    pub async fn read_file(
        &self,
        account: &AccountId,
        id: &VmId,
        path: &SandboxPath,
    ) -> Result<FileContent, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let read = provider.channel().read_file(&vm.id, path).await;
        let content = self.agent_result(&vm, read).await?;
        if let FileContent::File { size, .. } = &content {
            self.observe_transfer(&vm.id, path.as_str(), false, *size)
                .await;
        }
        Ok(content)
    }

    pub async fn write_file(
        &self,
        account: &AccountId,
        id: &VmId,
        path: &SandboxPath,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<u64, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let written = provider
            .channel()
            .write_file(&vm.id, path, mode, body)
            .await;
        let written = self.agent_result(&vm, written).await?;
        self.observe_transfer(&vm.id, path.as_str(), true, written)
            .await;
        Ok(written)
    }

    /// Looks at or changes one path in the VM; the entry it names
    /// afterwards (`None` after a removal).
    pub async fn path_op(
        &self,
        account: &AccountId,
        id: &VmId,
        op: PathOp,
    ) -> Result<Option<DirEntry>, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let done = provider.channel().path_op(&vm.id, op).await;
        self.agent_result(&vm, done).await
    }

    /// Watches a directory of the VM: its changes until the receiver is
    /// dropped.
    pub async fn watch_dir(
        &self,
        account: &AccountId,
        id: &VmId,
        path: &SandboxPath,
        recursive: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<PathChange>, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        let watching = provider.channel().watch(&vm.id, path, recursive).await;
        self.agent_result(&vm, watching).await
    }

    /// The VM's counters now (CPU time used, memory charged), where its
    /// provider keeps them.
    pub async fn usage_now(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<Option<crate::model::UsageCounters>, CoreError> {
        Ok(self.running_usage(account, id).await?.1)
    }

    /// A running VM and its counters now ([`Vms::usage_now`]), read
    /// together for a caller that also needs the VM.
    pub async fn running_usage(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<(Vm, Option<crate::model::UsageCounters>), CoreError> {
        let vm = self.running_vm(account, id).await?;
        let counters = self.provider_of(&vm)?.usage(&vm.id);
        Ok((vm, counters))
    }

    /// Sends `signal` to a command of the VM (the process group its pid
    /// leads).
    pub async fn signal_command(
        &self,
        account: &AccountId,
        id: &VmId,
        pid: i32,
        signal: i32,
    ) -> Result<(), CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        let sent = provider.channel().signal(&vm.id, pid, signal).await;
        self.agent_result(&vm, sent).await
    }

    pub async fn pty_create(
        &self,
        account: &AccountId,
        id: &VmId,
        spec: PtySpec,
    ) -> Result<PtyInfo, CoreError> {
        if spec.cols == 0 || spec.rows == 0 {
            return Err(CoreError::invalid(
                "cols",
                "cols and rows must be at least 1",
            ));
        }
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let created = provider.channel().pty_create(&vm.id, spec).await;
        self.agent_result(&vm, created).await
    }

    pub async fn pty_list(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<Vec<PtyInfo>, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        let listed = provider.channel().pty_list(&vm.id).await;
        self.agent_result(&vm, listed).await
    }

    pub async fn pty_get(
        &self,
        account: &AccountId,
        id: &VmId,
        pty: &str,
    ) -> Result<PtyInfo, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        let got = provider.channel().pty_get(&vm.id, pty).await;
        self.agent_result(&vm, got).await
    }

    pub async fn pty_resize(
        &self,
        account: &AccountId,
        id: &VmId,
        pty: &str,
        cols: u16,
        rows: u16,
    ) -> Result<PtyInfo, CoreError> {
        if cols == 0 || rows == 0 {
            return Err(CoreError::invalid(
                "cols",
                "cols and rows must be at least 1",
            ));
        }
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let resized = provider.channel().pty_resize(&vm.id, pty, cols, rows).await;
        self.agent_result(&vm, resized).await?;
        let info = provider.channel().pty_get(&vm.id, pty).await;
        self.agent_result(&vm, info).await
    }

    pub async fn pty_kill(
        &self,
        account: &AccountId,
        id: &VmId,
        pty: &str,
    ) -> Result<(), CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        let killed = provider.channel().pty_kill(&vm.id, pty).await;
        self.agent_result(&vm, killed).await
    }

    pub async fn pty_attach(
        &self,
        account: &AccountId,
        id: &VmId,
        pty: &str,
    ) -> Result<PtyConnection, CoreError> {
        let (vm, provider) = self.agent_vm(account, id).await?;
        self.activity.touch(&vm.id);
        let attached = provider.channel().pty_attach(&vm.id, pty).await;
        let connection = self.agent_result(&vm, attached).await?;
        Ok(self.observed_pty(&vm.id, pty, connection))
    }
}

impl Vms {
    /// Replaces a running VM's vault variables with `env`: the names its
    /// vaults staged are removed, then `env` is staged; the VM's record
    /// keeps the new names.
    pub(crate) async fn swap_vault_env(
        &self,
        vm: &mut Vm,
        env: Vec<(String, String)>,
    ) -> Result<(), CoreError> {
        let names: Vec<String> = env.iter().map(|(k, _)| k.clone()).collect();
        let mut staged = vm.options.vault_vars.clone();
        if staged.is_empty() {
            // A VM started before its record kept these names: its vaults'
            // current credentials name them.
            for id in &vm.options.vault_ids {
                if let Ok(credentials) =
                    self.parts.vaults.list_credentials(&vm.account_id, id).await
                {
                    staged.extend(credentials.into_iter().map(|c| c.name));
                }
            }
        }
        let gone: Vec<String> = staged
            .into_iter()
            .filter(|name| !names.contains(name))
            .collect();
        let provider = self.provider_of(vm)?;
        let channel = provider.channel();
        if !gone.is_empty() {
            let unstaged = channel.unstage_env(&vm.id, gone).await;
            self.agent_result(vm, unstaged).await?;
        }
        if !env.is_empty() {
            let staged = channel.stage_env(&vm.id, env).await;
            self.agent_result(vm, staged).await?;
        }
        vm.options.vault_vars = names;
        Ok(())
    }

    /// Stages variables into a running VM's environment for every later
    /// command. The values stay in the sandbox agent's memory only.
    pub async fn stage_env(
        &self,
        account: &AccountId,
        id: &VmId,
        env: Env,
    ) -> Result<usize, CoreError> {
        let vm = self.running_vm(account, id).await?;
        let vars: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let n = vars.len();
        self.provider_of(&vm)?
            .channel()
            .stage_env(&vm.id, vars)
            .await?;
        Ok(n)
    }
}
