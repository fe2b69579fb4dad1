//! Sessions: the VM that serves a session, restarted with the same
//! settings when its lifetime ended.

use std::sync::Arc;

use super::component::{Vms, REASON_LIFETIME_EXPIRED};
use crate::error::CoreError;
use crate::ids::{AccountId, SessionId};
use crate::model::{Vm, VmOptions, VmSpec, VmStatus};

impl Vms {
    /// Ends a session: deletes its newest VM, and answers it as it ended.
    pub async fn end_session(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Vm, CoreError> {
        let vm = self.session_latest_vm(account, session).await?;
        self.delete_vm(account, &vm.id).await
    }

    /// The VM that serves a session: its newest VM when running; when that
    /// VM's lifetime ended, a fresh VM with the same settings.
    pub async fn session_vm(
        self: &Arc<Self>,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Vm, CoreError> {
        let vm = self
            .store
            .latest_vm_of_session(account, session)
            .await?
            .ok_or_else(|| CoreError::not_found("session", session))?;
        let vm = self.live(vm).await?;
        match vm.status {
            VmStatus::Running => Ok(vm),
            VmStatus::Terminated
                if vm.status_reason.as_deref() == Some(REASON_LIFETIME_EXPIRED) =>
            {
                let spec = VmSpec {
                    session_id: Some(vm.session_id.clone()),
                    lifetime_seconds: vm.lifetime_seconds,
                    resources: vm.resources,
                    metadata: vm.metadata.clone(),
                    env: vm.env.clone(),
                    image_variant: vm.image_variant.clone(),
                    // The session's egress policy carries over.
                    options: VmOptions {
                        egress_policy: vm.options.egress_policy.clone(),
                        ..Default::default()
                    },
                    volumes: Vec::new(),
                    provider: Some(vm.provider.clone()),
                    placement: crate::model::Placement::ThisNode,
                };
                let fresh = self.create_vm(account, spec, true).await?;
                if fresh.status == VmStatus::Running {
                    Ok(fresh)
                } else {
                    Err(CoreError::Unavailable(format!(
                        "the session's VM could not be restarted: {}",
                        fresh.status_reason.unwrap_or_default()
                    )))
                }
            }
            other => Err(CoreError::FailedPrecondition(format!(
                "the session's VM is {}",
                other.as_str()
            ))),
        }
    }

    /// The session's newest VM, whatever its status.
    pub async fn session_latest_vm(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<Vm, CoreError> {
        self.store
            .latest_vm_of_session(account, session)
            .await?
            .ok_or_else(|| CoreError::not_found("session", session))
    }

    /// The account's VMs, newest first, ended ones included, whose
    /// metadata holds every key of `filter` with the same value; at most
    /// `limit`.
    pub async fn find_vms_by_metadata(
        &self,
        account: &AccountId,
        filter: &crate::model::Metadata,
        limit: usize,
    ) -> Result<Vec<Vm>, CoreError> {
        const PAGE: u32 = 500;
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list_vms(
                    account,
                    &crate::model::VmFilter {
                        session_id: None,
                        statuses: crate::model::VmStatusSet::default(),
                        after: after.clone(),
                        limit: PAGE,
                    },
                )
                .await?;
            let last = page.last().map(|vm| vm.id.clone());
            let full = page.len() == PAGE as usize;
            found.extend(
                page.into_iter()
                    .filter(|vm| filter.iter().all(|(k, v)| vm.metadata.get(k) == Some(v))),
            );
            if found.len() >= limit || !full {
                found.truncate(limit);
                return Ok(found);
            }
            after = last;
        }
    }

    /// A URL for the session's app on `port`: the share of its newest VM
    /// on that port, or a new private one (its token in this answer only)
    /// when it has none. Whether it was made here comes with it.
    pub async fn session_app_share(
        &self,
        account: &AccountId,
        session: &SessionId,
        port: u16,
    ) -> Result<(Vm, crate::model::NewShare, bool), CoreError> {
        let vm = self.session_latest_vm(account, session).await?;
        let existing = self
            .list_shares(account, Some(&vm.id))
            .await?
            .into_iter()
            .find(|s| s.port == port);
        if let Some(share) = existing {
            let share = crate::model::NewShare {
                share,
                token: None,
                login: None,
            };
            return Ok((vm, share, false));
        }
        let made = self.create_share(account, &vm.id, port, false).await?;
        Ok((vm, made, true))
    }

    /// What the session's VMs consumed, all of them and all days together.
    pub async fn session_usage(
        &self,
        account: &AccountId,
        session: &SessionId,
    ) -> Result<(Vec<Vm>, crate::model::UsageRecord), CoreError> {
        let vms = self
            .store
            .list_vms(
                account,
                &crate::model::VmFilter {
                    session_id: Some(session.clone()),
                    statuses: crate::model::VmStatusSet::default(),
                    after: None,
                    limit: 1000,
                },
            )
            .await?;
        if vms.is_empty() {
            return Err(CoreError::not_found("session", session));
        }
        let ids: Vec<_> = vms.iter().map(|vm| vm.id.clone()).collect();
        let total = self.parts.usage.of_vms(&ids).await?;
        Ok((vms, total))
    }
}
