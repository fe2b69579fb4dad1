//! Several nodes over one store: a create that may run anywhere goes to
//! the node [`Membership::place`] picks, and a change to a VM another node
//! runs (delete, stop, start, suspend, resume, patch, snapshot) is made by
//! that node, as a [`NodeCall`] through the internal channel. So every
//! surface that makes or changes VMs through [`Vms`] (E2B, the gateway,
//! definitions, the VM API) works whichever node its request reached.
//! One node alone (SQLite) has no membership and none of this runs.

use std::sync::Arc;

use crate::cluster::{Membership, NodeAnswer, NodeCall, NodeCallFailure};
use crate::error::{error_chain, CoreError};
use crate::ids::{AccountId, NodeId, VmId};
use crate::model::{Placement, Snapshot, Vm, VmSpec};

use super::component::Vms;

impl Vms {
    /// Lets this node place creates on, and send changes to, the other
    /// nodes sharing its store. Set once, at start.
    pub fn join_cluster(&self, membership: Arc<Membership>) {
        if self.membership.set(membership).is_err() {
            tracing::warn!("the node's membership was set twice; the first stays");
        }
    }

    /// The node `spec` is placed on when it is not this one. A spec bound
    /// to this node (its caller goes on with the sandbox here, it mounts
    /// this node's volumes, or it holds this node's GPUs) stays.
    pub(crate) async fn placed_elsewhere(&self, spec: &VmSpec) -> Option<NodeId> {
        let membership = self.membership.get()?;
        if spec.placement != Placement::AnyNode
            || !spec.volumes.is_empty()
            || !spec.options.gpus.is_empty()
        {
            return None;
        }
        let provider = spec.provider.as_deref().unwrap_or(self.provider.name());
        match membership
            .place(provider, u64::from(spec.resources.memory_mb()))
            .await
        {
            Ok(node) => node.map(|n| n.id),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "placement failed; making the VM here");
                None
            }
        }
    }

    /// Creates the VM on `node`; `None` when that node did not answer
    /// (the caller makes it here instead).
    pub(crate) async fn create_on(
        &self,
        node: &NodeId,
        account: &AccountId,
        spec: &VmSpec,
        wait: bool,
    ) -> Option<Result<Vm, CoreError>> {
        let call = NodeCall::Create {
            account: account.clone(),
            spec: spec.clone(),
            wait,
        };
        match self.send(node, &call).await {
            Err(e @ NodeCallFailure::Unreachable { .. }) => {
                tracing::warn!(node = %node, error = %e, "the node placed on did not answer; making the VM here");
                None
            }
            Err(NodeCallFailure::Refused(e)) => Some(Err(e)),
            Ok(answer) => Some(self.vm_answered(answer).await),
        }
    }

    /// The node that must make a change to VM `id`: another live node's
    /// VM; `None` here (this node's, a lost one's, or no node at all).
    pub(crate) async fn owner_elsewhere(&self, id: &VmId) -> Result<Option<NodeId>, CoreError> {
        if self.membership.get().is_none() {
            return Ok(None);
        }
        self.node_of(id).await
    }

    /// Makes `call` on `node` and reads back the VM it changed.
    pub(crate) async fn vm_on(&self, node: &NodeId, call: NodeCall) -> Result<Vm, CoreError> {
        let answer = self.send(node, &call).await?;
        self.vm_answered(answer).await
    }

    /// Makes `call` on `node` and reads back the snapshot it took.
    pub(crate) async fn snapshot_on(
        &self,
        node: &NodeId,
        account: &AccountId,
        call: NodeCall,
    ) -> Result<Snapshot, CoreError> {
        match self.send(node, &call).await? {
            NodeAnswer::Snapshot(id) => self.parts.snapshots.get(account, &id).await,
            NodeAnswer::Vm(id) => Err(CoreError::Unavailable(format!(
                "node {node} answered a snapshot with VM {id}"
            ))),
        }
    }

    async fn send(&self, node: &NodeId, call: &NodeCall) -> Result<NodeAnswer, NodeCallFailure> {
        let Some(remote) = &self.remote_nodes else {
            return Err(NodeCallFailure::Unreachable {
                node: node.to_string(),
                why: "this server reaches no other node".into(),
            });
        };
        tracing::debug!(node = %node, call = call.what(), "sending a call to the VM's node");
        remote.call(node, call).await
    }

    async fn vm_answered(&self, answer: NodeAnswer) -> Result<Vm, CoreError> {
        let NodeAnswer::Vm(id) = answer else {
            return Err(CoreError::Unavailable(
                "the node answered a VM call with a snapshot".into(),
            ));
        };
        self.store
            .find_vm(&id)
            .await?
            .ok_or_else(|| CoreError::not_found("VM", &id))
    }

    /// Makes a call another node sent, as this node's own caller would
    /// have: the VM is this node's (or, for a create, becomes so).
    pub async fn answer_node_call(
        self: &Arc<Self>,
        call: NodeCall,
    ) -> Result<NodeAnswer, CoreError> {
        let vm = match call {
            NodeCall::Create {
                account,
                spec,
                wait,
            } => self.create_vm(&account, spec, wait).await?,
            NodeCall::Delete { account, vm } => self.delete_vm(&account, &vm).await?,
            NodeCall::Stop { account, vm } => self.stop_vm(&account, &vm).await?,
            NodeCall::Halt { vm, reason } => self.halt_vm(&vm, &reason).await?,
            NodeCall::Start { account, vm, wait } => self.start_vm(&account, &vm, wait).await?,
            NodeCall::Suspend { account, vm } => self.suspend_vm(&account, &vm).await?,
            NodeCall::Resume { account, vm } => self.resume_vm(&account, &vm).await?,
            NodeCall::Patch { account, vm, patch } => self.patch_vm(&account, &vm, patch).await?,
            NodeCall::Snapshot { account, vm, name } => {
                let snapshot = self.snapshot_vm(&account, &vm, name).await?;
                return Ok(NodeAnswer::Snapshot(snapshot.id));
            }
        };
        Ok(NodeAnswer::Vm(vm.id))
    }
}
