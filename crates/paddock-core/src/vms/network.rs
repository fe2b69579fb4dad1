//! The service's networking operations: attaching a starting VM to the
//! host network under its egress policy, changing the policy of a live
//! VM, and freeing the attachment when the VM ends.

use super::component::Vms;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, SessionId, VmId};
use crate::model::{EgressPolicy, Vm, VmStatus};
use crate::network_backend::{LiveNetwork, VmNetwork};

impl Vms {
    /// A TCP connection to `ip:port` as seen from inside a running VM (its
    /// loopback included): an SSH client's forwarded port.
    pub async fn connect_in_vm(
        &self,
        account: &AccountId,
        id: &VmId,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<crate::provider::PortStream, CoreError> {
        let vm = self.running_vm(account, id).await?;
        if let Some(node) = vm.node.clone().filter(|_| !self.is_local(&vm)) {
            let remote = self.remote_nodes.as_ref().ok_or_else(|| {
                CoreError::Unavailable(format!(
                    "VM {id} runs on node {node}, which this server cannot reach"
                ))
            })?;
            return Ok(remote.open_port(&node, id, port, Some(ip)).await?);
        }
        Ok(Box::pin(self.connect_inside_here(&vm, ip, port).await?))
    }

    /// [`Vms::connect_in_vm`] for another node, which checked its caller:
    /// VM `id` must run here.
    pub async fn connect_in_local_vm(
        &self,
        id: &VmId,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<tokio::net::TcpStream, CoreError> {
        let vm = self.running_here(id).await?;
        self.connect_inside_here(&vm, ip, port).await
    }

    async fn connect_inside_here(
        &self,
        vm: &Vm,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<tokio::net::TcpStream, CoreError> {
        let network = vm.network.as_ref().ok_or_else(|| {
            CoreError::FailedPrecondition("the VM has no network namespace to reach into".into())
        })?;
        Ok(self.network.connect_inside(network, ip, port).await?)
    }

    /// The connections running VM `id` makes from now on (see
    /// [`NetworkBackend::watch_egress`](crate::network_backend::NetworkBackend::watch_egress)).
    pub async fn watch_egress(
        &self,
        account: &AccountId,
        id: &VmId,
        content: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<crate::network_backend::EgressFlow>, CoreError> {
        let vm = self.running_vm(account, id).await?;
        let network = vm.network.ok_or_else(|| {
            CoreError::FailedPrecondition("the VM has no network to watch".into())
        })?;
        Ok(self.network.watch_egress(&network, content)?)
    }

    /// The policy in force on `vm`: its own, or the server's default.
    pub fn effective_egress(&self, vm: &Vm) -> EgressPolicy {
        vm.options
            .egress_policy
            .clone()
            .unwrap_or_else(|| self.config.default_egress.clone())
    }

    pub fn network_enabled(&self) -> bool {
        self.network.enabled()
    }

    /// Refuses a policy on a server that cannot enforce one.
    pub(crate) fn check_policy_supported(
        &self,
        policy: Option<&EgressPolicy>,
    ) -> Result<(), CoreError> {
        if policy.is_some() && !self.network.enabled() {
            return Err(CoreError::FailedPrecondition(
                "networking is disabled on this server, so egress policies cannot be enforced"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Gives a starting VM its network (when the server has networking),
    /// recorded before the sandbox boots so a crash never leaks it.
    pub(crate) async fn attach_network(&self, vm: &mut Vm) -> Result<(), CoreError> {
        let Some(network) = self.network_for(vm).await? else {
            return Ok(());
        };
        vm.network = Some(network);
        if let Err(e) = self.store.update_vm(vm).await {
            self.release_network(vm).await;
            return Err(e.into());
        }
        Ok(())
    }

    /// Whether `vm` gets a network of paddock's when it starts.
    pub(crate) fn wants_network(&self, vm: &Vm) -> bool {
        // A definition that blocks the network gets none at all: a fresh
        // namespace with loopback only, and no rules to write.
        self.network.enabled()
            && self
                .provider_named(&vm.provider)
                .is_none_or(|p| p.uses_paddock_network())
            && vm.options.launch.as_ref().is_none_or(|l| l.network_allowed)
    }

    /// A network for `vm` under its policy, when it gets one at all.
    pub(crate) async fn network_for(
        &self,
        vm: &Vm,
    ) -> Result<Option<crate::network_backend::VmNetwork>, CoreError> {
        if !self.wants_network(vm) {
            return Ok(None);
        }
        let policy = self.effective_egress(vm);
        Ok(Some(self.network.attach(&vm.id, &policy).await?))
    }

    /// Frees a VM's network; failures are logged, never returned, since
    /// they must not keep a VM from ending (reconcile retries them).
    pub(crate) async fn release_network(&self, vm: &mut Vm) {
        if !self.is_local(vm) {
            // Its node's network: that node frees it when it comes back.
            vm.network = None;
            return;
        }
        if let Some(network) = vm.network.take() {
            vm.network = self.free_network(&vm.id, network).await;
        }
    }

    /// Frees the network of the local VM `id`: `None` once free, the
    /// network back when that failed (logged; reconcile retries).
    pub(crate) async fn free_network(&self, id: &VmId, network: VmNetwork) -> Option<VmNetwork> {
        match self.network.release(id, &network).await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(vm_id = %id, error = %error_chain(&e), "could not free a VM's network");
                Some(network)
            }
        }
    }

    pub async fn get_vm_egress(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<EgressPolicy, CoreError> {
        let vm = self.get_vm(account, id).await?;
        Ok(self.effective_egress(&vm))
    }

    /// Sets a VM's egress policy; on a running VM it applies at once.
    pub async fn set_vm_egress(
        &self,
        account: &AccountId,
        id: &VmId,
        policy: EgressPolicy,
    ) -> Result<EgressPolicy, CoreError> {
        self.check_policy_supported(Some(&policy))?;
        self.get_vm(account, id).await?;
        let _guard = self.lock_vm(id).await;
        let mut vm = self.get_vm(account, id).await?;
        self.apply_egress(&mut vm, policy).await
    }

    /// Applies `policy` to a VM whose lock the caller holds.
    pub(crate) async fn apply_egress(
        &self,
        vm: &mut Vm,
        policy: EgressPolicy,
    ) -> Result<EgressPolicy, CoreError> {
        if !vm.status.is_active() {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a creating or running VM can be changed",
                vm.status.as_str()
            )));
        }
        if let Some(network) = &vm.network {
            self.network.set_policy(&vm.id, network, &policy).await?;
        }
        vm.options.egress_policy = Some(policy.clone());
        vm.updated_at = crate::clock::Timestamp::now();
        self.store.update_vm(vm).await?;
        Ok(policy)
    }

    /// The policy of a session's newest VM.
    pub async fn get_session_egress(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<EgressPolicy, CoreError> {
        let vm = self.session_latest_vm(account, session).await?;
        Ok(self.effective_egress(&vm))
    }

    /// Sets the policy of a session: on its current VM at once, and on the
    /// VMs the session gets later (they inherit it).
    pub async fn set_session_egress(
        &self,
        account: &AccountId,
        session: &SessionId,
        policy: EgressPolicy,
    ) -> Result<EgressPolicy, CoreError> {
        self.check_policy_supported(Some(&policy))?;
        let vm = self.session_latest_vm(account, session).await?;
        let _guard = self.lock_vm(&vm.id).await;
        let mut vm = self.get_vm(account, &vm.id).await?;
        if !vm.status.is_active() {
            // An ended session VM keeps the policy for its successor.
            vm.options.egress_policy = Some(policy.clone());
            self.store.update_vm(&vm).await?;
            return Ok(policy);
        }
        self.apply_egress(&mut vm, policy).await
    }

    /// Rebuilds the rules of the VMs that survived a restart and frees
    /// every other network resource.
    pub(crate) async fn reconcile_network(&self, live: &[Vm]) -> Result<(), CoreError> {
        if !self.network.enabled() {
            return Ok(());
        }
        let live: Vec<LiveNetwork> = live
            .iter()
            // A suspended VM keeps its address, namespace and tap.
            .filter(|vm| matches!(vm.status, VmStatus::Running | VmStatus::Suspended))
            .filter_map(|vm| {
                vm.network.clone().map(|network| LiveNetwork {
                    vm: vm.id.clone(),
                    network,
                    policy: self.effective_egress(vm),
                })
            })
            .collect();
        self.network.reconcile(&live).await?;
        Ok(())
    }
}
