//! The composition root: [`Service`] builds every component of the core
//! over the store and the host's ports, each given only what it uses, and
//! hands them out. It holds no operation of its own beyond the few that
//! span components (an account's quota beside its holdings, resealing
//! every secret). VM operations are the [`Vms`] component's.

use std::sync::Arc;

use crate::domain_backend::DomainBackend;
use crate::error::CoreError;
use crate::ids::AccountId;
use crate::images::ImageBackend;
use crate::network_backend::NetworkBackend;
use crate::provider::Provider;
use crate::secrets::Keyring;
use crate::store::Store;
use crate::volume_backend::VolumeBackend;

pub use crate::error::error_chain;
pub use crate::exec::{collect_output, ExecOutput};
pub use crate::shutdown::Shutdown;
pub use crate::vms::component::{ServiceConfig, VmBackends, Vms, REASON_LIFETIME_EXPIRED};

/// The host-side ports the core drives: sandboxes, images, volumes, VM
/// networking, custom domains' DNS and webhook deliveries.
pub struct Backends {
    pub provider: Arc<dyn Provider>,
    /// Further providers a VM may name (`local`, `docker`).
    pub more_providers: Vec<Arc<dyn Provider>>,
    pub images: Arc<dyn ImageBackend>,
    pub volumes: Arc<dyn VolumeBackend>,
    pub network: Arc<dyn NetworkBackend>,
    pub domain_dns: Arc<dyn DomainBackend>,
    /// Where webhook deliveries go out.
    pub webhooks: Arc<dyn crate::ports::webhook_sender::WebhookSender>,
    /// The other nodes' sandboxes, in a store several nodes share.
    pub remote_nodes: Option<Arc<dyn crate::provider::RemoteNodes>>,
}

/// Every component of the core, composed once.
pub struct Service {
    vms: Arc<Vms>,
    accounts: Arc<crate::accounts::Accounts>,
    images: Arc<crate::artifacts::library::ImageLibrary>,
    snapshots: Arc<crate::snapshots::Snapshots>,
    volumes: Arc<crate::volumes::Volumes>,
    vaults: Arc<crate::vaults::Vaults>,
    shares: Arc<crate::shares::Shares>,
    ssh_keys: crate::ssh_keys::SshKeys,
    usage: Arc<crate::usage::Usage>,
    audit: Arc<crate::audit::Audit>,
    webhooks: Arc<crate::networking::webhooks::Webhooks>,
    /// The products' documents.
    documents: Arc<crate::documents::Documents>,
    /// For what spans every part of the store: resealing secrets and an
    /// account's holdings.
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        backends: Backends,
        keyring: Arc<Keyring>,
        config: ServiceConfig,
    ) -> Arc<Self> {
        use crate::store as parts;
        let accounts = Arc::new(crate::accounts::Accounts::with_quotas(
            Arc::clone(&store) as Arc<dyn parts::AccountStore>,
            Arc::clone(&config.quotas),
        ));
        let webhooks = Arc::new(crate::networking::webhooks::Webhooks::new(
            Arc::clone(&store) as Arc<dyn parts::WebhookStore>,
            Arc::clone(&keyring),
            backends.webhooks,
        ));
        let images = crate::artifacts::library::ImageLibrary::new(
            Arc::clone(&store) as Arc<dyn parts::ImageStore>,
            Arc::clone(&backends.images),
        );
        let snapshots = crate::snapshots::Snapshots::new(
            Arc::clone(&store) as Arc<dyn parts::SnapshotStore>,
            Arc::clone(&images),
            Arc::clone(&backends.images),
            Arc::clone(&accounts),
            Arc::clone(&webhooks),
        );
        let volumes = Arc::new(crate::volumes::Volumes::new(
            Arc::clone(&store) as Arc<dyn parts::VolumeStore>,
            backends.volumes,
            Arc::clone(&accounts),
            Arc::clone(&webhooks),
            config.node.clone(),
        ));
        let vaults = Arc::new(crate::vaults::Vaults::new(
            Arc::clone(&store) as Arc<dyn parts::VaultStore>,
            Arc::clone(&keyring),
        ));
        let shares = Arc::new(crate::shares::Shares::new(
            Arc::clone(&store) as Arc<dyn parts::ShareRecords>,
            Arc::clone(&keyring),
            backends.domain_dns,
            Arc::clone(&webhooks),
        ));
        let usage = Arc::new(crate::usage::Usage::new(
            Arc::clone(&store) as Arc<dyn parts::UsageStore>,
            config.usage_prices,
        ));
        let audit = Arc::new(crate::audit::Audit::new(
            Arc::clone(&store) as Arc<dyn parts::AuditStore>,
            config.audit_retention,
        ));
        let vms = Vms::new(
            Arc::clone(&store) as Arc<dyn parts::VmRecords>,
            VmBackends {
                provider: backends.provider,
                more_providers: backends.more_providers,
                images: backends.images,
                network: backends.network,
                remote_nodes: backends.remote_nodes,
            },
            config,
            crate::vms::component::VmParts {
                accounts: Arc::clone(&accounts),
                images: Arc::clone(&images),
                snapshots: Arc::clone(&snapshots),
                volumes: Arc::clone(&volumes),
                vaults: Arc::clone(&vaults),
                shares: Arc::clone(&shares),
                usage: Arc::clone(&usage),
                webhooks: Arc::clone(&webhooks),
                keyring: Arc::clone(&keyring),
            },
        );
        let watcher: Arc<dyn crate::vaults::VaultWatcher> = Arc::clone(&vms) as _;
        vaults.watch(Arc::downgrade(&watcher));
        Arc::new(Self {
            vms,
            accounts,
            images,
            snapshots,
            volumes,
            vaults,
            shares,
            ssh_keys: crate::ssh_keys::SshKeys::new(
                Arc::clone(&store) as Arc<dyn parts::SshKeyStore>
            ),
            usage,
            audit,
            webhooks,
            documents: crate::documents::Documents::new(
                Arc::clone(&store) as Arc<dyn parts::ResourceStore>
            ),
            store,
            keyring,
        })
    }

    /// What this node shows the others sharing the store on their
    /// internal endpoints: its id and the MAC of the master key they
    /// share over it, never stored or given to tenants.
    pub fn internal_token(&self) -> String {
        crate::cluster::node_token(&self.keyring, &self.node_id())
    }

    /// The node that sent `token`, when it is one of this installation's.
    pub fn internal_caller(&self, token: &str) -> Option<crate::ids::NodeId> {
        crate::cluster::token_node(&self.keyring, token)
    }

    fn node_id(&self) -> crate::ids::NodeId {
        // A server always has one (`serve` sets it); an embedded service
        // without one speaks for no node, and its token opens nothing.
        self.vms
            .config()
            .node
            .clone()
            .unwrap_or_else(crate::ids::NodeId::generate)
    }

    /// VMs: their lifecycle, the agent channel, sessions, networking.
    pub fn vms(&self) -> &Arc<Vms> {
        &self.vms
    }

    pub fn config(&self) -> &ServiceConfig {
        self.vms.config()
    }

    /// Accounts, their API keys and dev tokens.
    pub fn accounts(&self) -> &crate::accounts::Accounts {
        &self.accounts
    }

    /// The accounts' images: records, pulls, removal.
    pub fn images(&self) -> &Arc<crate::artifacts::library::ImageLibrary> {
        &self.images
    }

    /// Snapshots' records, and snapshots made from images.
    pub fn snapshots(&self) -> &Arc<crate::snapshots::Snapshots> {
        &self.snapshots
    }

    /// Volumes and their checkpoints.
    pub fn volumes(&self) -> &crate::volumes::Volumes {
        &self.volumes
    }

    /// Vaults of secrets and their credentials.
    pub fn vaults(&self) -> &crate::vaults::Vaults {
        &self.vaults
    }

    /// Shares and custom domains.
    pub fn shares(&self) -> &crate::shares::Shares {
        &self.shares
    }

    /// The SSH keys of an account's users.
    pub fn ssh_keys(&self) -> &crate::ssh_keys::SshKeys {
        &self.ssh_keys
    }

    /// What accounts consumed, as reports.
    pub fn usage(&self) -> &crate::usage::Usage {
        &self.usage
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<crate::audit::Audit> {
        &self.audit
    }

    /// Webhook endpoints, events and their deliveries.
    pub fn webhooks(&self) -> &Arc<crate::networking::webhooks::Webhooks> {
        &self.webhooks
    }

    /// The documents of the products built over the core.
    pub fn documents(&self) -> &Arc<crate::documents::Documents> {
        &self.documents
    }

    /// The account's quota and what it holds of it now.
    pub async fn quota_and_usage(
        &self,
        account: &AccountId,
    ) -> Result<(crate::quotas::Quota, crate::quotas::Usage), CoreError> {
        let quota = self.accounts.quota(account).await?;
        let usage = crate::quotas::Usage {
            volume_mb: self.volumes.mb_held(account, None).await?,
            snapshot_mb: self.snapshots.mb_held(account).await?,
            image_builds: self.accounts.quotas().builds_running(account),
            ..self.store.account_usage(account).await?
        };
        Ok((quota, usage))
    }

    /// After a restart: secrets sealed under an older master key are
    /// resealed, then the VMs reconciled with what runs on the host.
    pub async fn reconcile(&self) -> Result<(), CoreError> {
        self.reseal_secrets().await?;
        self.vms.reconcile().await
    }

    /// Re-seals every value sealed under an older master key with the
    /// current one (run at start, so a rotated key can then be dropped).
    pub async fn reseal_secrets(&self) -> Result<usize, CoreError> {
        crate::vaults::reseal_secrets(self.store.as_ref(), &self.keyring).await
    }
}
