//! Sessions: the VM that serves a session, restarted with the same
//! settings when its lifetime ended.

use std::sync::Arc;

use crate::error::CoreError;
use crate::ids::{AccountId, SessionId};
use crate::model::{Vm, VmOptions, VmSpec, VmStatus};
use crate::service::{Service, REASON_LIFETIME_EXPIRED};

impl Service {
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
}
