//! The records paddock keeps and the rules that make them valid.

mod account;
mod audit;
mod domain;
mod egress;
/// Commands, files and terminals inside a sandbox, and their output.
pub mod exec;
mod execution;
pub mod gateway;
mod image;
mod node;
mod resources;
mod share;
mod snapshot;
mod ssh_key;
mod usage;
mod vault;
mod vault_service;
mod vm;
mod volume;
mod webhook;

pub use account::{
    key_fingerprint, validate_email, Account, ApiKey, ApiKeySecret, KeyKind, KeyPatch, KeySettings,
    NewApiKey, Principal, DEFAULT_USER_EMAIL,
};
pub use audit::{AuditEvent, AuditFilter, AuditStatus};
pub use domain::{validate_domain, CustomDomain, DnsCredentials, DomainStatus, DNS_PROVIDERS};
pub use egress::{
    DomainPattern, EgressDefault, EgressPolicy, Ipv4Cidr, PolicyError, PACKAGE_REGISTRY_DOMAINS,
};
pub use execution::{Execution, ExecutionStatus};
pub use image::{
    push_layer, without_repeats, ChangedTree, IdShift, Image, ImageConfig, LayerInfo,
    LayerProgress, PullPhase, PullProgress, PullState, PulledImage, RootfsSpec, BASE_VARIANT_LABEL,
};
pub use node::Node;
pub use resources::{Limits, ResourceError, Resources};
pub use share::{hash_token, NewShare, Share, ShareSecret};
pub use snapshot::{Snapshot, SnapshotKind, SnapshotStatus};
pub use ssh_key::{parse_ssh_key, ParsedSshKey, SshKey};
pub use usage::{usage_day, UsageCounters, UsageCursor, UsageRecord};
pub use vault::{Credential, Sealed, SecretValue, Vault};
pub use vault_service::{
    AuthConfigError, Injection, InterceptedRequest, InterceptedService, Interception, ServiceAuth,
    VaultCa, VaultRequestLog, VaultService,
};
pub use vm::{
    Env, EnvError, EnvStatus, Launch, Metadata, Placement, RuntimeHandle, StoredVaultCa, Vm,
    VmFilter, VmOptions, VmPatch, VmSpec, VmStatus, VmStatusSet,
};
pub use volume::{validate_mount_path, Attachment, Checkpoint, MountMode, MountRequest, Volume};
pub use webhook::{
    pattern_matches, retry_delay_ms, webhook_signature, DeliveryFilter, DeliveryStatus,
    WebhookDelivery, WebhookEndpoint,
};

/// The name of a snapshot, vault, volume or checkpoint: 1 to 128
/// characters, not blank, no control characters.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err("must be 1 to 128 characters, not blank, without control characters");
    }
    Ok(())
}
