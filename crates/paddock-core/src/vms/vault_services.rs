//! The VMs' side of vault services: a running VM whose vaults bind hosts
//! gets an interception on the egress path (its services, with their
//! credentials, and a certificate authority of its own that its sandbox
//! trusts), kept in step as its vaults, their services and credentials
//! change, and put back after a restart or a resume. The records' side
//! is `storage/vault_services.rs`.

use std::sync::Arc;

use bytes::Bytes;

use super::component::Vms;
use super::sealed_keys::vault_ca_aad;
use crate::error::{error_chain, CoreError};
use crate::exec::{FileContent, SandboxPath};
use crate::ids::{AccountId, VaultId};
use crate::model::{Interception, StoredVaultCa, VaultCa, Vm, VmStatus, VmStatusSet};
use crate::vaults::{VaultChange, VaultWatcher};

/// Where the CA goes in a sandbox, and the bundle of it with the
/// sandbox's own roots.
const CA_FILE: &str = "/etc/paddock/vault-ca.pem";
const BUNDLE_FILE: &str = "/etc/paddock/ca-bundle.pem";
/// The system bundles of the common distributions (Debian and Ubuntu,
/// Fedora and RHEL, Alpine): the first one found gets the CA appended.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// A system bundle larger than this is not read.
const MAX_BUNDLE: usize = 8 << 20;

impl Vms {
    /// Brings the egress interception of the running `vm` in line with
    /// its vaults' services. The first time it has any, its CA is made,
    /// installed in the sandbox and kept (sealed) on its record, which the
    /// caller saves.
    pub(crate) async fn apply_vault_services(&self, vm: &mut Vm) -> Result<(), CoreError> {
        let Some(network) = vm.network.clone() else {
            return Ok(());
        };
        if !self.network.enabled() {
            return Ok(());
        }
        let services = if vm.options.vault_ids.is_empty() {
            Vec::new()
        } else {
            self.parts
                .vaults
                .intercepted_services(&vm.account_id, &vm.options.vault_ids)
                .await?
        };
        if services.is_empty() {
            // An interception needs the VM's CA: without one there was never
            // any to end (most VMs: nothing to do on their start).
            if vm.options.vault_ca.is_some() {
                self.network.set_interception(&network, None).await?;
            }
            return Ok(());
        }
        let ca = self.vault_ca_of(vm).await?;
        self.network
            .set_interception(
                &network,
                Some(Interception {
                    vm_id: vm.id.clone(),
                    account_id: vm.account_id.clone(),
                    ca,
                    services,
                }),
            )
            .await?;
        Ok(())
    }

    /// The VM's CA: opened from its record, or made and installed now.
    async fn vault_ca_of(&self, vm: &mut Vm) -> Result<VaultCa, CoreError> {
        let keyring = &self.parts.keyring;
        let aad = vault_ca_aad(&vm.id);
        let unusable = |e: crate::secrets::SealError| {
            CoreError::Unavailable(format!("the VM's vault CA: {e}"))
        };
        if let Some(stored) = &vm.options.vault_ca {
            return Ok(VaultCa {
                cert_pem: stored.cert_pem.clone(),
                key_pem: keyring.open(&aad, &stored.key).map_err(unusable)?,
            });
        }
        let ca = self.network.issue_vault_ca(&vm.id)?;
        self.install_vault_ca(vm, &ca.cert_pem).await?;
        vm.options.vault_ca = Some(StoredVaultCa {
            cert_pem: ca.cert_pem.clone(),
            key: keyring.seal(&aad, &ca.key_pem).map_err(unusable)?,
        });
        Ok(ca)
    }

    /// Makes the sandbox trust `ca`: the system bundle (where the image
    /// has one) gets it appended, `/etc/paddock` holds it alone and in a
    /// bundle with the system's roots, and the variables TLS stacks read
    /// (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`,
    /// `NODE_EXTRA_CA_CERTS`) point there for every later command.
    async fn install_vault_ca(&self, vm: &Vm, ca: &str) -> Result<(), CoreError> {
        let provider = self.provider_of(vm)?;
        let channel = provider.channel();
        let mut bundle = String::new();
        for path in SYSTEM_BUNDLES {
            let Ok(path) = SandboxPath::parse(path) else {
                continue;
            };
            let Ok(FileContent::File { size, data, .. }) = channel.read_file(&vm.id, &path).await
            else {
                continue;
            };
            if size as usize > MAX_BUNDLE {
                continue;
            }
            bundle = with_pem_appended(read_text(data).await?, ca);
            channel
                .write_file(&vm.id, &path, Some(0o644), one_chunk(bundle.clone()))
                .await?;
            break;
        }
        if bundle.is_empty() {
            bundle = ca.to_owned();
        }
        for (path, text) in [(CA_FILE, ca.to_owned()), (BUNDLE_FILE, bundle)] {
            let path = SandboxPath::parse(path)
                .map_err(|e| CoreError::Unavailable(format!("{path}: {e}")))?;
            channel
                .write_file(&vm.id, &path, Some(0o644), one_chunk(text))
                .await?;
        }
        let env = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"]
            .into_iter()
            .map(|k| (k.to_owned(), BUNDLE_FILE.to_owned()))
            .chain([("NODE_EXTRA_CA_CERTS".to_owned(), CA_FILE.to_owned())])
            .collect();
        channel.stage_env(&vm.id, env).await?;
        Ok(())
    }

    /// Puts back the interceptions of running VMs after a restart (the
    /// egress path keeps them in memory only).
    pub(crate) async fn restore_vault_services(&self) {
        self.reapply_vault_services(|vm| !vm.options.vault_ids.is_empty(), false)
            .await;
    }

    /// Re-applies the interception (and with `restage`, the variables) of
    /// every running VM that `uses` picks, each under its lock, and saves
    /// its record (a CA made now, the names staged).
    async fn reapply_vault_services(&self, uses: impl Fn(&Vm) -> bool, restage: bool) {
        let running = match self
            .store
            .list_vms_in(&VmStatusSet::of(&[VmStatus::Running]))
            .await
        {
            Ok(vms) => vms,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the VMs to bring their vault services up to date");
                return;
            }
        };
        for vm in running.into_iter().filter(|vm| uses(vm)) {
            let id = vm.id.clone();
            let _guard = self.lock_vm(&id).await;
            let refreshed = async {
                let Some(mut vm) = self.store.find_vm(&id).await? else {
                    return Ok(());
                };
                if vm.status != VmStatus::Running {
                    return Ok(());
                }
                if restage {
                    let env = self
                        .parts
                        .vaults
                        .command_secrets(&vm.account_id, &vm.options.vault_ids)
                        .await?;
                    self.swap_vault_env(&mut vm, env).await?;
                }
                self.apply_vault_services(&mut vm).await?;
                self.store.update_vm(&vm).await?;
                Ok::<(), CoreError>(())
            };
            if let Err(e) = refreshed.await {
                tracing::warn!(vm_id = %id, error = %error_chain(&e), "could not bring a VM's vault services up to date");
            }
        }
    }

    /// Copies what the egress path sent with credentials into the vaults'
    /// request logs, until the server stops.
    pub fn spawn_vault_request_log(self: &Arc<Self>) {
        let Some(mut requests) = self.network.take_intercepted_requests() else {
            return;
        };
        let vaults = Arc::clone(&self.parts.vaults);
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                if let Err(e) = vaults.record_request(&request).await {
                    tracing::warn!(vault_id = %request.vault_id, error = %error_chain(&e), "could not log a vault service request");
                }
            }
        });
    }
}

/// A change to a vault reaches every running VM that has it: after a
/// change to its credentials or services, the VM's variables
/// (placeholders where a service injects) and its interception anew;
/// after its deletion, no services from it (the variables it staged stay,
/// as they always have: they are the VM's now). A VM that cannot is
/// logged and keeps what it had.
#[async_trait::async_trait]
impl VaultWatcher for Vms {
    async fn vault_changed(&self, account: &AccountId, vault: &VaultId, change: VaultChange) {
        self.reapply_vault_services(
            |vm| &vm.account_id == account && vm.options.vault_ids.contains(vault),
            change == VaultChange::Contents,
        )
        .await;
    }
}

/// `bundle` with the PEM `pem` after it, on a line of its own.
fn with_pem_appended(mut bundle: String, pem: &str) -> String {
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(pem);
    bundle
}

/// `text` as a one-chunk byte stream.
fn one_chunk(text: String) -> crate::exec::ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok::<_, std::io::Error>(Bytes::from(text))
    }))
}

/// A small file's bytes as text.
async fn read_text(mut data: crate::exec::ByteStream) -> Result<String, CoreError> {
    use futures::StreamExt;
    let mut bytes = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| CoreError::Unavailable(format!("read a CA bundle: {e}")))?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_BUNDLE {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
