//! Environment definitions: reusable templates a workflow engine stores
//! and launches sandboxes from (the definitions surface,
//! `/api/v1/environments`). A definition is a document in the store; its
//! revision is the SHA-256 of its canonical JSON, so it is the same for
//! the same content whatever the key order or the process that wrote it,
//! and replace/delete take the revision they expect (optimistic
//! concurrency under the document's lock: exactly one racing writer wins).
//!
//! A product over the VM core: it keeps its definitions in the core's
//! document store and launches sandboxes through the core's public API
//! ([`Service::create_vm`], the launched-sandbox machinery of
//! `paddock_core::launched`); the core knows nothing of it.

mod launch;
mod quantity;
mod spec;
mod validate;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use launch::LaunchRequest;
pub use paddock_core::launched::SandboxView;
pub use quantity::{parse_bytes, parse_duration, parse_quantity};
pub use spec::{
    Definition, DefinitionSpec, DockerfileSource, ImageSettings, LifecycleSettings, NetworkMode,
    NetworkSettings, ProviderKind, ResourceSettings, VolumeSettings,
};
pub use validate::{network_mode, validate_definition_id, Violation};

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::{AccountId, VolumeId};
use paddock_core::model::gateway::Resource;
use paddock_core::service::Service;

/// The id of the synthetic definition of the `local` provider: listed
/// while that provider is enabled, never stored, never written.
pub const LOCAL_DEFINITION_ID: &str = "local";

/// Why a definitions call failed, in the terms the surface answers with.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The body broke rules; every broken rule is listed.
    #[error("the definition is invalid")]
    Invalid(Vec<Violation>),
    /// A write came without `If-Match`.
    #[error("this request needs an If-Match header holding the definition's revision")]
    RevisionRequired,
    /// `If-Match` is not a revision.
    #[error("If-Match must hold a revision (64 hex digits, optionally quoted) or *")]
    RevisionMalformed,
    /// `If-Match` names another revision than the stored one.
    #[error("the definition changed: its revision is {current}, not the one in If-Match")]
    RevisionMismatch { current: String },
    /// `local` is the local provider's own definition.
    #[error("{LOCAL_DEFINITION_ID} is reserved for the local provider's built-in definition")]
    Reserved,
    /// The definition's provider cannot launch here (not enabled, or
    /// `daytona` without an endpoint).
    #[error("{0}")]
    ProviderUnavailable(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<paddock_core::StoreError> for DefinitionError {
    fn from(e: paddock_core::StoreError) -> Self {
        Self::Core(e.into())
    }
}

/// The definitions product: its records and launches, over the VM core.
pub struct Definitions {
    core: Arc<Service>,
    /// Where its definitions are kept.
    docs: Arc<paddock_core::documents::Documents>,
}

/// A definition as stored: the spec, normalized, and its bookkeeping.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDefinition {
    pub id: String,
    pub account_id: AccountId,
    pub revision: String,
    pub spec: DefinitionSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Resource for StoredDefinition {
    const KIND: &'static str = "environment_definition";
    fn id(&self) -> &str {
        &self.id
    }
    fn account_id(&self) -> &AccountId {
        &self.account_id
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
    fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
    fn state_name(&self) -> &'static str {
        "stored"
    }
}

impl StoredDefinition {
    pub fn view(&self) -> Definition {
        Definition {
            id: self.id.clone(),
            revision: self.revision.clone(),
            spec: self.spec.clone(),
        }
    }
}

/// The SHA-256 hex of the definition's canonical JSON: keys sorted at
/// every level, no whitespace.
pub fn revision_of(id: &str, spec: &DefinitionSpec) -> String {
    let mut value = serde_json::to_value(spec).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("id".into(), serde_json::Value::String(id.to_owned()));
    }
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Reads an `If-Match` value: a quoted or bare revision, a weak tag, or
/// `*` (any revision). `None` when it is none of those.
pub fn parse_if_match(raw: &str) -> Option<IfMatch> {
    let raw = raw.trim();
    if raw == "*" {
        return Some(IfMatch::Any);
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw);
    let tag = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    (tag.len() == 64 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| IfMatch::Revision(tag.to_owned()))
}

/// A definition id (from a path or a body) that breaks the pattern is an
/// `Invalid` naming `id`, which the surface answers with 400.
pub fn check_id(id: &str) -> Result<(), DefinitionError> {
    validate_definition_id(id).map_err(|v| DefinitionError::Invalid(vec![v]))
}

/// The preconditions of a replace or delete, checked before any body is
/// read: the id is valid and writable, and `If-Match` is present and well
/// formed. Returns the revision the write expects.
pub fn check_write(id: &str, if_match: Option<&str>) -> Result<IfMatch, DefinitionError> {
    check_id(id)?;
    if id == LOCAL_DEFINITION_ID {
        return Err(DefinitionError::Reserved);
    }
    let raw = if_match.ok_or(DefinitionError::RevisionRequired)?;
    parse_if_match(raw).ok_or(DefinitionError::RevisionMalformed)
}

/// What a write expects the stored revision to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Revision(String),
}

impl Definitions {
    pub fn new(core: Arc<Service>) -> Self {
        Self {
            docs: Arc::clone(core.documents()),
            core,
        }
    }

    /// Whether this server runs the `local` provider for `account` (and
    /// so lists its synthetic definition to it).
    pub async fn local_provider_enabled(&self, account: &AccountId) -> Result<bool, CoreError> {
        match self.core.vms().provider_named("local") {
            Some(p) => self.core.vms().may_use(p.as_ref(), account).await,
            None => Ok(false),
        }
    }

    /// The built-in definition of the `local` provider.
    pub fn local_definition(&self) -> Definition {
        let spec = DefinitionSpec {
            provider: ProviderKind::Local,
            cwd: None,
            image: ImageSettings {
                docker: None,
                dockerfile: None,
            },
            resources: ResourceSettings {
                cpu: None,
                memory: None,
                disk: None,
            },
            network: NetworkSettings {
                mode: Some(NetworkMode::AllowAll),
                allow: Vec::new(),
            },
            lifecycle: LifecycleSettings {
                preserve: false,
                stop_on_terminal: true,
                auto_stop: None,
            },
            labels: Default::default(),
            volumes: Vec::new(),
            env: Default::default(),
        };
        Definition {
            id: LOCAL_DEFINITION_ID.into(),
            revision: revision_of(LOCAL_DEFINITION_ID, &spec),
            spec,
        }
    }

    /// Validates `spec` against every rule, the account's volumes
    /// included, and returns it normalized (the network mode made
    /// explicit).
    async fn checked_spec(
        &self,
        account: &AccountId,
        mut spec: DefinitionSpec,
    ) -> Result<DefinitionSpec, DefinitionError> {
        let core = &self.core;
        let mut violations = validate::validate_spec(&spec, &|r| core.images().is_reference(r));
        for (i, v) in spec.volumes.iter().enumerate() {
            let exists = match v.id.parse::<VolumeId>() {
                Ok(id) => match self.core.volumes().get(account, &id).await {
                    Ok(_) => true,
                    Err(CoreError::NotFound { .. }) => false,
                    Err(e) => return Err(e.into()),
                },
                Err(_) => false,
            };
            if !exists && !v.id.is_empty() {
                violations.push(Violation::new(
                    format!("volumes[{i}].id"),
                    format!("no volume {:?} in this account", v.id),
                ));
            }
        }
        if !violations.is_empty() {
            return Err(DefinitionError::Invalid(violations));
        }
        spec.network.mode = Some(network_mode(&spec));
        Ok(spec)
    }

    pub async fn create_definition(
        &self,
        account: &AccountId,
        id: &str,
        spec: DefinitionSpec,
    ) -> Result<Definition, DefinitionError> {
        check_id(id)?;
        if id == LOCAL_DEFINITION_ID {
            return Err(DefinitionError::Reserved);
        }
        let spec = self.checked_spec(account, spec).await?;
        let now = Timestamp::now();
        let stored = StoredDefinition {
            id: id.to_owned(),
            account_id: account.clone(),
            revision: revision_of(id, &spec),
            spec,
            created_at: now,
            updated_at: now,
        };
        let _lock = self.docs.lock::<StoredDefinition>(account, id).await?;
        self.docs.insert(&stored).await?;
        tracing::info!(account_id = %account, definition = id, revision = %stored.revision, "environment definition created");
        Ok(stored.view())
    }

    async fn stored_definition(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<StoredDefinition, DefinitionError> {
        self.docs
            .load::<StoredDefinition>(account, id)
            .await?
            .ok_or_else(|| CoreError::not_found("environment", id).into())
    }

    pub async fn get_definition(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Definition, DefinitionError> {
        if id == LOCAL_DEFINITION_ID && self.local_provider_enabled(account).await? {
            return Ok(self.local_definition());
        }
        Ok(self.stored_definition(account, id).await?.view())
    }

    /// The account's definitions by id, the local provider's first when
    /// it is enabled.
    pub async fn list_definitions(
        &self,
        account: &AccountId,
    ) -> Result<Vec<Definition>, DefinitionError> {
        let mut all: Vec<Definition> = self
            .docs
            .load_all::<StoredDefinition>(Some(account))
            .await?
            .iter()
            .map(StoredDefinition::view)
            .collect();
        if self.local_provider_enabled(account).await? {
            all.push(self.local_definition());
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    fn check_revision(
        expected: &IfMatch,
        stored: &StoredDefinition,
    ) -> Result<(), DefinitionError> {
        match expected {
            IfMatch::Revision(r) if *r != stored.revision => {
                Err(DefinitionError::RevisionMismatch {
                    current: stored.revision.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    pub async fn replace_definition(
        &self,
        account: &AccountId,
        id: &str,
        if_match: Option<&str>,
        spec: DefinitionSpec,
    ) -> Result<Definition, DefinitionError> {
        let expected = check_write(id, if_match)?;
        let spec = self.checked_spec(account, spec).await?;
        let _lock = self.docs.lock::<StoredDefinition>(account, id).await?;
        let mut stored = self.stored_definition(account, id).await?;
        Self::check_revision(&expected, &stored)?;
        stored.revision = revision_of(id, &spec);
        stored.spec = spec;
        stored.updated_at = Timestamp::now();
        self.docs.save(&stored).await?;
        tracing::info!(account_id = %account, definition = id, revision = %stored.revision, "environment definition replaced");
        Ok(stored.view())
    }

    /// Deletes a definition. Sandboxes launched from it keep running: they
    /// carry what they were launched with.
    pub async fn delete_definition(
        &self,
        account: &AccountId,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), DefinitionError> {
        let expected = check_write(id, if_match)?;
        let _lock = self.docs.lock::<StoredDefinition>(account, id).await?;
        let stored = self.stored_definition(account, id).await?;
        Self::check_revision(&expected, &stored)?;
        self.docs.delete::<StoredDefinition>(account, id).await?;
        tracing::info!(account_id = %account, definition = id, "environment definition deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DefinitionSpec {
        serde_json::from_value(serde_json::json!({
            "provider": "docker",
            "image": {"docker": "busybox:1.36", "dockerfile": null},
            "resources": {"cpu": 2, "memory": "4Gi", "disk": null},
            "network": {"allow": []},
            "lifecycle": {"preserve": false, "stop_on_terminal": true, "auto_stop": "30m"},
            "labels": {"b": "2", "a": "1"},
            "volumes": [],
            "env": {"Z": "1", "A": "2"}
        }))
        .expect("spec")
    }

    #[test]
    fn the_revision_ignores_key_order_and_follows_content() {
        let a = spec();
        let b: DefinitionSpec = serde_json::from_str(
            r#"{"env":{"A":"2","Z":"1"},"volumes":[],"labels":{"a":"1","b":"2"},
            "lifecycle":{"auto_stop":"30m","stop_on_terminal":true,"preserve":false},
            "network":{"allow":[]},"resources":{"disk":null,"memory":"4Gi","cpu":2},
            "image":{"dockerfile":null,"docker":"busybox:1.36"},"provider":"docker"}"#,
        )
        .expect("spec");
        assert_eq!(revision_of("x", &a), revision_of("x", &b));
        assert_ne!(revision_of("x", &a), revision_of("y", &a));
        let mut c = spec();
        c.labels.insert("c".into(), "3".into());
        assert_ne!(revision_of("x", &a), revision_of("x", &c));
        let r = revision_of("x", &a);
        assert_eq!(r.len(), 64);
        assert!(r.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn if_match_forms() {
        let rev = "a".repeat(64);
        for raw in [rev.clone(), format!("\"{rev}\""), format!("W/\"{rev}\"")] {
            assert_eq!(parse_if_match(&raw), Some(IfMatch::Revision(rev.clone())));
        }
        assert_eq!(parse_if_match("*"), Some(IfMatch::Any));
        assert_eq!(parse_if_match("abc"), None);
        assert_eq!(parse_if_match(&"A".repeat(64)), None);
    }
}
