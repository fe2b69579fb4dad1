//! The VMs' side of shares: a share is made for a running VM's port,
//! and the share proxy asks where a share goes.

use super::component::Vms;
use crate::error::CoreError;
use crate::ids::{AccountId, ShareId, VmId};
use crate::model::{NewShare, Share, VmStatus};
use crate::shares::ShareRoute;

impl Vms {
    /// Whether a port of a VM can be shared on this server at all.
    pub(crate) fn check_share_port(&self, port: u16) -> Result<(), CoreError> {
        if !self.network.enabled() {
            return Err(CoreError::FailedPrecondition(
                "networking is disabled on this server, so VM ports cannot be shared".into(),
            ));
        }
        if port == 0 {
            return Err(CoreError::invalid("port", "must be from 1 to 65535"));
        }
        Ok(())
    }

    /// Publishes `port` of a VM. A private share gets an access token and
    /// a one-time login token, returned only here.
    pub async fn create_share(
        &self,
        account: &AccountId,
        vm_id: &VmId,
        port: u16,
        is_public: bool,
    ) -> Result<NewShare, CoreError> {
        let vm = self.get_vm(account, vm_id).await?;
        if !vm.status.is_active() {
            return Err(CoreError::FailedPrecondition(format!(
                "the VM is {}; only a creating or running VM can be shared",
                vm.status.as_str()
            )));
        }
        self.check_share_port(port)?;
        self.parts
            .shares
            .record(account, &vm.id, port, is_public)
            .await
    }

    /// The account's shares, or one VM's (404 when the VM is not the
    /// account's).
    pub async fn list_shares(
        &self,
        account: &AccountId,
        vm: Option<&VmId>,
    ) -> Result<Vec<Share>, CoreError> {
        if let Some(vm) = vm {
            self.get_vm(account, vm).await?;
        }
        self.parts.shares.list(account, vm).await
    }

    /// A fresh one-time login for the account's private share `id` (a URL
    /// with it sets the share's cookie in a browser).
    pub async fn share_login(
        &self,
        account: &AccountId,
        id: &crate::ids::ShareId,
    ) -> Result<crate::model::ShareSecret, CoreError> {
        let share = self.parts.shares.get_share(account, id).await?;
        if share.is_public {
            return Err(CoreError::FailedPrecondition(
                "the share is public: it needs no login".into(),
            ));
        }
        self.parts.shares.new_share_login(&share.id).await
    }

    /// Records a request through one of the VM's shares: it is in use.
    pub fn note_share_traffic(&self, vm: &VmId) {
        self.activity.touch(vm);
    }

    /// Where traffic to port `port` of VM `id` goes, when the VM publishes
    /// its ports ([`crate::model::VmOptions::published_ports`]): its
    /// address while it runs (resumed first where it auto-resumes).
    pub async fn published_port_route(
        &self,
        id: &VmId,
        port: u16,
    ) -> Result<crate::shares::PortRoute, CoreError> {
        let not_found = || CoreError::not_found("sandbox port", format!("{port}-{id}"));
        let vm = self.store.find_vm(id).await?.ok_or_else(not_found)?;
        if !vm.options.published_ports || port == 0 {
            return Err(not_found());
        }
        let vm = self.live(vm).await?;
        self.activity.touch(&vm.id);
        match (&vm.network, vm.status) {
            (Some(net), VmStatus::Running) => Ok(crate::shares::PortRoute {
                address: net.address,
                node: self.node_elsewhere(&vm),
            }),
            _ => Err(CoreError::Unavailable(format!(
                "the sandbox is {}",
                vm.status.as_str()
            ))),
        }
    }

    /// Where a share's traffic goes: its running VM's address and port.
    pub async fn share_route(&self, id: &ShareId) -> Result<ShareRoute, CoreError> {
        let share = self
            .parts
            .shares
            .find(id)
            .await?
            .ok_or_else(|| CoreError::not_found("share", id))?;
        let vm = self
            .store
            .find_vm(&share.vm_id)
            .await?
            .ok_or_else(|| CoreError::not_found("share", id))?;
        let vm = self.live(vm).await?;
        self.activity.touch(&vm.id);
        match (&vm.network, vm.status) {
            (Some(net), VmStatus::Running) => Ok(ShareRoute {
                address: net.address,
                node: self.node_elsewhere(&vm),
                share,
            }),
            _ => Err(CoreError::Unavailable(format!(
                "the shared VM is {}",
                vm.status.as_str()
            ))),
        }
    }

    /// `vm`'s node when it is not this one.
    fn node_elsewhere(&self, vm: &crate::model::Vm) -> Option<crate::ids::NodeId> {
        vm.node.clone().filter(|_| !self.is_local(vm))
    }

    /// A TCP connection to `port` of VM `vm`, which runs on `node`, made
    /// by that node.
    pub async fn open_port_on(
        &self,
        node: &crate::ids::NodeId,
        vm: &VmId,
        port: u16,
    ) -> Result<crate::provider::PortStream, CoreError> {
        let remote = self.remote_nodes.as_ref().ok_or_else(|| {
            CoreError::Unavailable(format!(
                "VM {vm} runs on node {node}, which this server cannot reach"
            ))
        })?;
        Ok(remote.open_port(node, vm, port, None).await?)
    }

    /// Where `port` of VM `id` answers, for another node's connection to
    /// it: the VM must run here, on the VM network.
    pub async fn local_port_address(
        &self,
        id: &VmId,
        port: u16,
    ) -> Result<std::net::SocketAddr, CoreError> {
        let vm = self.running_here(id).await?;
        self.activity.touch(&vm.id);
        let net = vm
            .network
            .as_ref()
            .ok_or_else(|| CoreError::FailedPrecondition("the VM has no network address".into()))?;
        Ok(std::net::SocketAddr::from((net.address, port)))
    }
}
