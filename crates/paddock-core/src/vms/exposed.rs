//! Creating a VM with its port shared and a custom domain routed to the
//! share: one operation that checks everything it can before it makes
//! anything, and takes back what it made when a later step fails, so a
//! client never gets an error for a VM that runs anyway.

use std::sync::Arc;

use super::component::Vms;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::AccountId;
use crate::model::{CustomDomain, DnsCredentials, NewShare, Vm, VmSpec};

/// A custom domain asked for with a VM.
#[derive(Debug, Clone)]
pub struct DomainRequest {
    pub domain: String,
    pub dns_provider: Option<String>,
    pub dns_credentials: Option<DnsCredentials>,
}

/// A port of the new VM to share, and optionally a domain for it.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub port: u16,
    pub is_public: bool,
    pub domain: Option<DomainRequest>,
}

/// The VM made, with its share and domain when they were asked for and
/// the VM came up (a VM that failed to boot is not shared).
#[derive(Debug)]
pub struct CreatedVm {
    pub vm: Vm,
    pub share: Option<NewShare>,
    pub domain: Option<CustomDomain>,
}

/// Why the VM a failed exposure made was deleted.
const REASON_UNDONE: &str = "its share or custom domain could not be made";

impl Vms {
    /// Creates a VM and exposes it as asked.
    pub async fn create_exposed_vm(
        self: &Arc<Self>,
        account: &AccountId,
        spec: VmSpec,
        wait: bool,
        exposure: Option<Exposure>,
    ) -> Result<CreatedVm, CoreError> {
        if let Some(e) = &exposure {
            self.check_exposure(e).await?;
        }
        let vm = self.create_vm(account, spec, wait).await?;
        let Some(exposure) = exposure.filter(|_| vm.status.is_active()) else {
            return Ok(CreatedVm {
                vm,
                share: None,
                domain: None,
            });
        };
        match self.expose(account, &vm, exposure).await {
            Ok((share, domain)) => Ok(CreatedVm {
                vm,
                share: Some(share),
                domain,
            }),
            Err(e) => {
                // The share and the domain go with the VM.
                if let Err(undo) = self.terminate(vm.id.clone(), REASON_UNDONE).await {
                    tracing::error!(vm_id = %vm.id, error = %error_chain(&undo), "could not delete a VM whose exposure failed");
                }
                Err(e)
            }
        }
    }

    /// Everything about an exposure that can be known before the VM
    /// exists: networking, the port, the domain's name, provider and
    /// credentials, and that no share routes the name yet.
    async fn check_exposure(&self, e: &Exposure) -> Result<(), CoreError> {
        self.check_share_port(e.port)?;
        if let Some(d) = &e.domain {
            self.parts
                .shares
                .check_new_custom_domain(
                    &d.domain,
                    d.dns_provider.as_deref(),
                    d.dns_credentials.as_ref(),
                )
                .await?;
        }
        Ok(())
    }

    async fn expose(
        &self,
        account: &AccountId,
        vm: &Vm,
        e: Exposure,
    ) -> Result<(NewShare, Option<CustomDomain>), CoreError> {
        let share = self
            .create_share(account, &vm.id, e.port, e.is_public)
            .await?;
        let domain = match e.domain {
            Some(d) => Some(
                self.parts
                    .shares
                    .create_custom_domain(
                        account,
                        &share.share.id,
                        &d.domain,
                        d.dns_provider.as_deref(),
                        d.dns_credentials,
                    )
                    .await?,
            ),
            None => None,
        };
        Ok((share, domain))
    }
}
