//! Shares: publishing a VM's port through the share proxy. The [`Shares`]
//! component keeps the records, tokens and custom domains; the VMs side
//! (`vms/shares.rs`) checks the VM a share is made for and answers the proxy's
//! one question: where does this share go (and [`Shares`]: may this
//! caller in).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::domain_backend::DomainBackend;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, ShareId, VmId};
use crate::model::{hash_token, NewShare, Share, ShareSecret};
use crate::secrets::Keyring;
use crate::store::ShareRecords;

/// How long a one-time login URL stays usable.
const LOGIN_TTL_SECONDS: u64 = 24 * 3600;

/// Where the proxy sends a share's traffic.
#[derive(Debug, Clone)]
pub struct ShareRoute {
    pub share: Share,
    pub address: Ipv4Addr,
    /// The VM's node when it is another one: its address is reached
    /// through that node ([`crate::vms::Vms::open_port_on`]).
    pub node: Option<crate::ids::NodeId>,
}

/// Where a VM's published port is: its address, and its node when that
/// is another one.
#[derive(Debug, Clone)]
pub struct PortRoute {
    pub address: Ipv4Addr,
    pub node: Option<crate::ids::NodeId>,
}

/// Shares and the custom domains routed to them: their records, tokens
/// and DNS, over the store, the keyring and the DNS port. What needs a
/// VM (creating a share, routing traffic) stays with the VMs.
pub struct Shares {
    pub(super) store: Arc<dyn ShareRecords>,
    pub(super) keyring: Arc<Keyring>,
    pub(super) domain_dns: Arc<dyn DomainBackend>,
    /// Bumped on every share change (see `share_generation`).
    generation: AtomicU64,
    /// `share.created` and `share.deleted` go out through it.
    webhooks: Arc<crate::networking::webhooks::Webhooks>,
}

impl Shares {
    pub fn new(
        store: Arc<dyn ShareRecords>,
        keyring: Arc<Keyring>,
        domain_dns: Arc<dyn DomainBackend>,
        webhooks: Arc<crate::networking::webhooks::Webhooks>,
    ) -> Self {
        Self {
            store,
            keyring,
            domain_dns,
            webhooks,
            generation: AtomicU64::new(0),
        }
    }

    /// Records a share of `port` of the VM `vm` (checked by the caller).
    /// A private share gets an access token and a one-time login token,
    /// returned only here.
    pub async fn record(
        &self,
        account: &AccountId,
        vm: &VmId,
        port: u16,
        is_public: bool,
    ) -> Result<NewShare, CoreError> {
        let token = (!is_public).then(ShareSecret::generate);
        let share = Share {
            id: ShareId::generate(),
            account_id: account.clone(),
            vm_id: vm.clone(),
            port,
            is_public,
            token_hash: token.as_ref().map(ShareSecret::hash).unwrap_or_default(),
            created_at: Timestamp::now(),
        };
        self.store.insert_share(&share).await?;
        self.share_changed();
        let data = serde_json::json!({
            "share_id": share.id.as_str(), "vm_id": vm.as_str(), "port": port, "is_public": is_public,
        });
        self.webhooks.emit(account, "share.created", data).await;
        let login = match token {
            Some(_) => Some(self.new_share_login(&share.id).await?),
            None => None,
        };
        Ok(NewShare {
            share,
            token,
            login,
        })
    }

    pub(crate) async fn new_share_login(&self, share: &ShareId) -> Result<ShareSecret, CoreError> {
        let login = ShareSecret::generate();
        self.store
            .insert_share_login(
                &login.hash(),
                share,
                Timestamp::now().plus_seconds(LOGIN_TTL_SECONDS),
            )
            .await?;
        Ok(login)
    }
    pub async fn get_share(&self, account: &AccountId, id: &ShareId) -> Result<Share, CoreError> {
        self.store
            .get_share(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("share", id))
    }
    /// Makes a share public or private. Turning it private issues a new
    /// token (and login token), returned only here.
    pub async fn set_share_visibility(
        &self,
        account: &AccountId,
        id: &ShareId,
        is_public: bool,
    ) -> Result<NewShare, CoreError> {
        let mut share = self.get_share(account, id).await?;
        let mut fresh = NewShare {
            share: share.clone(),
            token: None,
            login: None,
        };
        if share.is_public == is_public {
            return Ok(fresh);
        }
        share.is_public = is_public;
        if is_public {
            share.token_hash = String::new();
        } else {
            let token = ShareSecret::generate();
            share.token_hash = token.hash();
            fresh.token = Some(token);
        }
        self.store.update_share(&share).await?;
        self.share_changed();
        if !is_public {
            fresh.login = Some(self.new_share_login(&share.id).await?);
        }
        fresh.share = share;
        Ok(fresh)
    }
    pub async fn delete_share(&self, account: &AccountId, id: &ShareId) -> Result<(), CoreError> {
        self.delete_share_of(account, id, None).await
    }

    /// Deletes a share; with `vm`, only if it is that VM's (else it is
    /// not found).
    pub async fn delete_share_of(
        &self,
        account: &AccountId,
        id: &ShareId,
        vm: Option<&VmId>,
    ) -> Result<(), CoreError> {
        if let Some(vm) = vm {
            if self.get_share(account, id).await?.vm_id != *vm {
                return Err(CoreError::not_found("share", id));
            }
        }
        if !self.store.delete_share(account, id).await? {
            return Err(CoreError::not_found("share", id));
        }
        self.share_changed();
        let data = serde_json::json!({"share_id": id.as_str()});
        self.webhooks.emit(account, "share.deleted", data).await;
        Ok(())
    }
    /// Whether `token` opens the private share `share`: its access token,
    /// or the cookie value a login set.
    pub fn share_token_matches(&self, share: &Share, token: &str) -> bool {
        !share.token_hash.is_empty()
            && (crate::secrets::constant_time_eq(
                hash_token(token).as_bytes(),
                share.token_hash.as_bytes(),
            ) || crate::secrets::constant_time_eq(
                token.as_bytes(),
                self.share_cookie_token(share).as_bytes(),
            ))
    }
    /// The cookie value that opens a private share: a MAC of the share and
    /// its current token, so it dies when the token is rotated and no
    /// token is ever stored in clear.
    pub fn share_cookie_token(&self, share: &Share) -> String {
        self.keyring
            .mac(&format!("share-cookie:{}:{}", share.id, share.token_hash))
    }
    /// Consumes a one-time login token: true when it was issued for
    /// `share` and had not been used or expired.
    pub async fn take_share_login(&self, share: &ShareId, login: &str) -> Result<bool, CoreError> {
        let found = self
            .store
            .take_share_login(&hash_token(login), Timestamp::now())
            .await?;
        Ok(found.as_ref() == Some(share))
    }
    /// Changes whenever a share changes or goes, so the proxy's cache
    /// never serves a revoked route.
    pub fn share_generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub fn share_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
    /// The share `id`, whoever's it is (for the proxy).
    pub(crate) async fn find(&self, id: &ShareId) -> Result<Option<Share>, CoreError> {
        Ok(self.store.find_share(id).await?)
    }

    /// The account's shares, newest first; only `vm`'s when given.
    pub(crate) async fn list(
        &self,
        account: &AccountId,
        vm: Option<&VmId>,
    ) -> Result<Vec<Share>, CoreError> {
        Ok(self.store.list_shares(account, vm).await?)
    }

    /// Ends the shares of a VM that ended.
    pub async fn end_shares(&self, vm: &VmId) {
        match self.store.delete_shares_of_vm(vm).await {
            Ok(0) => {}
            Ok(_) => self.share_changed(),
            Err(e) => {
                tracing::error!(vm_id = %vm, error = %error_chain(&e), "could not end a VM's shares")
            }
        }
    }
}
