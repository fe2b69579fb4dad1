//! Snapshots: a VM's filesystem captured as an image whose top layer is
//! exactly what the VM changed, and what a VM restored from one starts on.

use crate::clock::Timestamp;
use crate::ids::{AccountId, SnapshotId, VmId};
use crate::model::Image;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStatus {
    Creating,
    Ready,
    Failed,
}

impl SnapshotStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Creating, Self::Ready, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// `user` snapshots are the account's own; `system` ones are templates
/// (the SDK's reusable build snapshots). Only a label here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    User,
    System,
    /// A dev environment's disconnect snapshot (the gateway's).
    Environment,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::System => "system",
            Self::Environment => "environment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::System, Self::Environment]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub account_id: AccountId,
    /// Unique per account.
    pub name: String,
    pub kind: SnapshotKind,
    pub status: SnapshotStatus,
    pub error: Option<String>,
    /// The VM it was taken from; `None` for one made from an image.
    pub vm_id: Option<VmId>,
    /// What the VM ran: a variant name or an image reference.
    pub source: String,
    /// The configured variant its layers sit on; `None` when its layers
    /// are a whole image.
    pub base_variant: Option<String>,
    /// Its image (digest, config, layers); absent until it is ready.
    pub image: Option<Image>,
    /// Bytes of its own top layer (what the VM changed).
    pub size: u64,
    pub created_at: Timestamp,
}
