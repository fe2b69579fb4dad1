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

/// Where placement put a VM that is not made here.
pub(crate) enum Target {
    /// The node with the most room: if it does not answer, the VM is
    /// made here instead.
    May(NodeId),
    /// The node that holds what the VM needs (its volumes, its GPUs).
    Must(NodeId),
}

impl Target {
    fn node(&self) -> &NodeId {
        match self {
            Self::May(node) | Self::Must(node) => node,
        }
    }
}

impl Vms {
    /// The live nodes sharing the store; `None` for a lone node (no
    /// shared store), whose own machine is all there is.
    pub async fn cluster_nodes(&self) -> Result<Option<Vec<crate::model::Node>>, CoreError> {
        match self.membership.get() {
            Some(membership) => Ok(Some(membership.live_nodes().await?)),
            None => Ok(None),
        }
    }

    /// The node volume `id`'s files are on, when nodes share the store
    /// and it is known (`None` for a lone node's volumes).
    pub async fn volume_node(
        &self,
        account: &AccountId,
        id: &crate::ids::VolumeId,
    ) -> Result<Option<NodeId>, CoreError> {
        if self.membership.get().is_none() {
            return Ok(None);
        }
        Ok(self.parts.volumes.get(account, id).await?.node)
    }

    /// Lets this node place creates on, and send changes to, the other
    /// nodes sharing its store. Set once, at start.
    pub fn join_cluster(&self, membership: Arc<Membership>) {
        if let Some(remote) = &self.remote_nodes {
            self.parts
                .volumes
                .join_cluster(Arc::clone(&membership), Arc::clone(remote));
        }
        if self.membership.set(membership).is_err() {
            tracing::warn!("the node's membership was set twice; the first stays");
        }
    }

    /// The node `spec` is made on when it is not this one. A VM that
    /// mounts volumes runs on their node; one bound to a node (its GPUs
    /// are there) on that node; one that may run anywhere on the node
    /// [`Membership::place`] picks; the rest here.
    pub(crate) async fn placed_elsewhere(
        &self,
        account: &AccountId,
        spec: &VmSpec,
    ) -> Result<Option<Target>, CoreError> {
        let Some(membership) = self.membership.get() else {
            return Ok(None);
        };
        let this = membership.node_id();
        if !spec.volumes.is_empty() {
            let node = self.volumes_node(account, spec).await?;
            return Ok(node.filter(|n| n != this).map(Target::Must));
        }
        let labels = match &spec.placement {
            Placement::ThisNode => return Ok(None),
            Placement::Node(node) => {
                return Ok((node != this).then(|| Target::Must(node.clone())));
            }
            // This node's GPUs were picked for it.
            _ if !spec.options.gpus.is_empty() => return Ok(None),
            Placement::AnyNode => Default::default(),
            Placement::Matching(labels) => labels.clone(),
        };
        let provider = spec.provider.as_deref().unwrap_or(self.provider.name());
        match membership
            .place(
                Some(provider),
                u64::from(spec.resources.memory_mb()),
                &labels,
            )
            .await
        {
            Ok(Some(node)) => Ok(Some(Target::May(node.id))),
            // Here, unless here is not among the nodes asked for.
            Ok(None) if !labels.is_empty() && !here_matches(membership, &labels) => {
                Err(CoreError::ResourceExhausted(format!(
                    "no live node carries the labels {labels:?} with room for the VM"
                )))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "placement failed; making the VM here");
                Ok(None)
            }
        }
    }

    /// The node the volumes `spec` mounts are on: all on one, or the
    /// create is refused. `None` when they are this node's or older than
    /// nodes (or not found: the create's own checks say so).
    async fn volumes_node(
        &self,
        account: &AccountId,
        spec: &VmSpec,
    ) -> Result<Option<NodeId>, CoreError> {
        let mut nodes = std::collections::BTreeSet::new();
        for mount in &spec.volumes {
            match self.parts.volumes.get(account, &mount.volume_id).await {
                Ok(volume) => {
                    nodes.insert(volume.node);
                }
                Err(CoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if nodes.len() > 1 {
            return Err(CoreError::invalid(
                "volumes",
                "the volumes are on different nodes: a VM mounts volumes of one node (volumes are node-local)",
            ));
        }
        Ok(nodes.into_iter().next().flatten())
    }

    /// Creates the VM on `node`.
    pub(crate) async fn create_on(
        &self,
        node: &NodeId,
        account: &AccountId,
        spec: &VmSpec,
        wait: bool,
    ) -> Result<Vm, NodeCallFailure> {
        let call = NodeCall::Create {
            account: account.clone(),
            spec: Box::new(spec.clone()),
            wait,
        };
        let answer = self.send(node, &call).await?;
        self.vm_answered(answer)
            .await
            .map_err(NodeCallFailure::Refused)
    }

    /// Makes the VM `spec` asks where placement put it: `None` when that
    /// is here (also when the node a VM merely may run on did not
    /// answer: it is made here instead).
    pub(crate) async fn create_elsewhere(
        &self,
        account: &AccountId,
        spec: &VmSpec,
        wait: bool,
    ) -> Option<Result<Vm, CoreError>> {
        let target = match self.placed_elsewhere(account, spec).await {
            Ok(target) => target?,
            Err(e) => return Some(Err(e)),
        };
        match (
            self.create_on(target.node(), account, spec, wait).await,
            target,
        ) {
            (Ok(vm), _) => Some(Ok(vm)),
            (Err(NodeCallFailure::Refused(e)), _) => Some(Err(e)),
            (Err(e), Target::May(node)) => {
                tracing::warn!(node = %node, error = %e, "the node placed on did not answer; making the VM here");
                None
            }
            (Err(e), Target::Must(_)) => Some(Err(e.into())),
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
            other => Err(CoreError::Unavailable(format!(
                "node {node} answered a snapshot with {other:?}"
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
            } => self.create_vm(&account, *spec, wait).await?,
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
            NodeCall::CreateVolume {
                account,
                name,
                size_bytes,
            } => {
                let volume = self
                    .parts
                    .volumes
                    .create(&account, name, size_bytes)
                    .await?;
                return Ok(NodeAnswer::Volume(volume.id));
            }
            NodeCall::DeleteVolume { account, volume } => {
                self.parts.volumes.delete(&account, &volume).await?;
                return Ok(NodeAnswer::Volume(volume));
            }
        };
        Ok(NodeAnswer::Vm(vm.id))
    }
}

/// Whether this process may take a VM its pool's `labels` ask for: it
/// runs sandboxes and carries them.
fn here_matches(
    membership: &Membership,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    membership.runs_sandboxes() && membership.this_node().has_labels(labels)
}
