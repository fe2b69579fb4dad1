//! Ending many VMs in one call: all those of a session, those whose
//! metadata matches, or a list. Each VM's sandbox, volumes and shares go
//! in parallel (a bounded number at a time, each under its own lock);
//! their networks are released in one batch, which the host does far
//! faster than one by one (one rule-set change, and the kernel tears the
//! namespaces and their links down together).

use futures::stream::{self, StreamExt};

use super::component::{Ending, EndingVm, NetworkRelease, Vms, REASON_DELETED};
use crate::error::{error_chain, CoreError};
use crate::ids::{AccountId, SessionId, VmId};
use crate::model::{Metadata, Vm, VmFilter, VmStatus, VmStatusSet};
use crate::network_backend::VmNetwork;

/// The most VMs one bulk delete names or ends.
pub const MAX_BULK_DELETE: usize = 10_000;
/// How many VMs are being stopped at once.
const PARALLEL: usize = 16;

/// Which of an account's VMs a bulk delete ends: every one that is named
/// in `vm_ids` (when given), in `session_id` (when given), and whose
/// metadata holds each pair of `metadata`. At least one must be given.
#[derive(Debug, Clone, Default)]
pub struct VmSelection {
    pub vm_ids: Vec<VmId>,
    pub session_id: Option<SessionId>,
    pub metadata: Metadata,
}

/// What a bulk delete did.
#[derive(Debug, Clone, Default)]
pub struct BulkDeleted {
    /// The VMs it ended.
    pub deleted: Vec<VmId>,
    /// Those it could not, and why (they are as a failed single delete
    /// leaves them).
    pub failed: Vec<(VmId, String)>,
}

impl Vms {
    /// Ends every VM of the account that `selection` picks and has not
    /// ended yet. A named VM the account does not have is a 404, and then
    /// nothing is ended.
    pub async fn delete_vms(
        &self,
        account: &AccountId,
        selection: VmSelection,
    ) -> Result<BulkDeleted, CoreError> {
        let picked = self.select_vms(account, &selection).await?;
        // Other nodes' VMs are ended by their nodes, a call each.
        let (elsewhere, picked): (Vec<Vm>, Vec<Vm>) = picked.into_iter().partition(|vm| {
            self.membership.get().is_some()
                && !self.is_local(vm)
                && vm.status != crate::model::VmStatus::Lost
        });
        let sent: Vec<(VmId, Result<Vm, CoreError>)> = stream::iter(elsewhere)
            .map(|vm| async move {
                let result = match vm.node.clone() {
                    Some(node) => {
                        let call = crate::cluster::NodeCall::Delete {
                            account: account.clone(),
                            vm: vm.id.clone(),
                        };
                        self.vm_on(&node, call).await
                    }
                    None => Ok(vm.clone()),
                };
                (vm.id, result)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let begun: Vec<(VmId, Result<Ending, CoreError>)> = stream::iter(picked)
            .map(|vm| async move {
                (
                    vm.id.clone(),
                    self.begin_ending(vm.id, NetworkRelease::ByCaller).await,
                )
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut outcome = BulkDeleted::default();
        for (id, sent) in sent {
            match sent {
                Ok(_) => outcome.deleted.push(id),
                Err(e) => outcome.failed.push((id, error_chain(&e))),
            }
        }
        let mut ending: Vec<EndingVm> = Vec::new();
        for (id, begun) in begun {
            match begun {
                Ok(Ending::Ending(e)) => ending.push(e),
                Ok(Ending::Already(_)) => {}
                Err(e) => outcome.failed.push((id, error_chain(&e))),
            }
        }
        self.release_networks(&mut ending).await;
        let finished: Vec<(VmId, Result<Vm, CoreError>)> = stream::iter(ending)
            .map(|e| async move { (e.vm.id.clone(), self.finish_ending(e, REASON_DELETED).await) })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (id, finished) in finished {
            match finished {
                Ok(_) => outcome.deleted.push(id),
                Err(e) => outcome.failed.push((id, error_chain(&e))),
            }
        }
        tracing::info!(
            deleted = outcome.deleted.len(),
            failed = outcome.failed.len(),
            "bulk delete"
        );
        Ok(outcome)
    }

    /// The networks of `ending` VMs released in one batch; a VM whose
    /// release failed keeps its network on its record, as a single
    /// delete's does.
    async fn release_networks(&self, ending: &mut [EndingVm]) {
        let taken: Vec<(usize, VmNetwork)> = ending
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| e.vm.network.take().map(|n| (i, n)))
            .collect();
        if taken.is_empty() {
            return;
        }
        let networks: Vec<(VmId, VmNetwork)> = taken
            .iter()
            .map(|(i, n)| (ending[*i].vm.id.clone(), n.clone()))
            .collect();
        if let Err(e) = self.network.release_many(&networks).await {
            tracing::error!(error = %error_chain(&e), count = networks.len(), "could not free VMs' networks together; one by one");
            for (i, network) in taken {
                ending[i].vm.network = Some(network);
                self.release_network(&mut ending[i].vm).await;
            }
        }
    }

    /// The account's VMs `selection` picks that have not ended.
    async fn select_vms(
        &self,
        account: &AccountId,
        selection: &VmSelection,
    ) -> Result<Vec<Vm>, CoreError> {
        if selection.vm_ids.is_empty()
            && selection.session_id.is_none()
            && selection.metadata.is_empty()
        {
            return Err(CoreError::invalid(
                "vm_ids",
                "name the VMs to delete: vm_ids, a session_id or metadata to match",
            ));
        }
        if selection.vm_ids.len() > MAX_BULK_DELETE {
            return Err(CoreError::invalid(
                "vm_ids",
                format!("at most {MAX_BULK_DELETE} VMs at a time"),
            ));
        }
        let matches = |vm: &Vm| {
            vm.status != VmStatus::Terminated
                && selection
                    .session_id
                    .as_ref()
                    .is_none_or(|s| &vm.session_id == s)
                && selection
                    .metadata
                    .iter()
                    .all(|(k, v)| vm.metadata.get(k) == Some(v))
        };
        if !selection.vm_ids.is_empty() {
            let mut named = Vec::with_capacity(selection.vm_ids.len());
            for id in &selection.vm_ids {
                let vm = self.get_vm(account, id).await?;
                if matches(&vm) && !named.iter().any(|n: &Vm| n.id == vm.id) {
                    named.push(vm);
                }
            }
            return Ok(named);
        }
        let mut picked = Vec::new();
        let mut after = None;
        const PAGE: u32 = 500;
        loop {
            let page = self
                .store
                .list_vms(
                    account,
                    &VmFilter {
                        session_id: selection.session_id.clone(),
                        statuses: VmStatusSet::default(),
                        after: after.clone(),
                        limit: PAGE,
                    },
                )
                .await?;
            after = page.last().map(|vm| vm.id.clone());
            let full = page.len() == PAGE as usize;
            picked.extend(page.into_iter().filter(|vm| matches(vm)));
            if picked.len() > MAX_BULK_DELETE {
                return Err(CoreError::invalid(
                    "metadata",
                    format!("matches more than {MAX_BULK_DELETE} VMs; narrow it"),
                ));
            }
            if !full {
                return Ok(picked);
            }
        }
    }
}
