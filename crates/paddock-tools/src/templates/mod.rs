//! Devbox templates: a named, versioned manifest (an image or snapshot,
//! its shape, setup and runtime commands, a terminal, an app port) that
//! `publish` turns into a snapshot with paddock's builder and `run` starts
//! as a VM, with a share for its app.
//!
//! Who sees what: an account sees its own templates (drafts included);
//! everyone, without a key, sees the catalog — the built-in templates and
//! those the operator's account (the one made at first start) publishes.
//! A template runs from its snapshot for its publisher; another account
//! gets the template's image built into a snapshot of its own at first
//! run, from the same recipe (the builder's cache makes it quick), as
//! snapshots never cross accounts.

mod builtin;
pub mod manifest;
mod runs;

use std::sync::Arc;

use paddock_core::build::BuildRequest;
use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, SnapshotId};
use paddock_core::model::{Snapshot, SnapshotKind, SnapshotStatus};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use manifest::Manifest;
pub use runs::{Run, RunRequest, MARK as DEVBOX_MARK};

const KIND: &str = "vm_template";
const RECIPE_KIND: &str = "template_recipe";
const BUILD_KIND: &str = "template_build";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateStatus {
    Verifying,
    Active,
    Failed,
}

impl TemplateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verifying => "verifying",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }
}

/// A template as its document keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// The slug: unique in its account.
    pub id: String,
    pub account_id: AccountId,
    pub version: String,
    /// The manifest as published.
    pub manifest: Value,
    /// What the template runs from, in its publisher's account.
    pub snapshot_id: Option<SnapshotId>,
    /// How that snapshot's image is built, when paddock built it: how
    /// another account gets its own.
    pub dockerfile: Option<String>,
    pub status: TemplateStatus,
    pub verify_error: Option<String>,
    /// Shipped with paddock (and built from its recipe at first use).
    #[serde(default)]
    pub builtin: bool,
    /// In the catalog: visible to everyone.
    #[serde(default)]
    pub public: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

paddock_core::document!(Template, KIND,
    created: |t| t.created_at,
    updated: |t| t.updated_at,
    state: |t| t.status.as_str(),
);

/// How a snapshot made from `build_args` was built.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Recipe {
    /// The snapshot's id.
    id: String,
    account_id: AccountId,
    dockerfile: String,
    created_at: Timestamp,
}

paddock_core::document!(Recipe, RECIPE_KIND,
    created: |r| r.created_at,
    updated: |r| r.created_at,
    state: |_r| "ready",
);

/// A catalog template's snapshot built for another account.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountBuild {
    /// `{slug}@{version}`.
    id: String,
    account_id: AccountId,
    snapshot_id: SnapshotId,
    created_at: Timestamp,
}

paddock_core::document!(AccountBuild, BUILD_KIND,
    created: |b| b.created_at,
    updated: |b| b.created_at,
    state: |_b| "ready",
);

/// What `POST /v1/snapshots` may say of its build (`build_args`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildArgs {
    /// Run over the image, its changes kept in the snapshot.
    pub post_build_cmd: Option<String>,
    /// The app's command, run at each start of a VM of the snapshot.
    pub template_app_cmd: Option<String>,
    pub template_app_cwd: Option<String>,
}

/// A `RUN` of `command` however it is written: one line as it is; more
/// than one written into the image as a script (a heredoc `COPY`, whose
/// end marker is the script's hash, so no line of it ends the heredoc)
/// and run by `sh`, which every image has.
fn run_lines(command: &str) -> String {
    if command.contains('\n') || command.contains('\\') {
        use sha2::Digest;
        let hash = hex::encode(&sha2::Sha256::digest(command.as_bytes())[..8]);
        let path = format!("/tmp/.paddock-step-{hash}.sh");
        format!(
            "COPY --chmod=755 <<PADDOCK_{hash} {path}\n{command}\nPADDOCK_{hash}\nRUN sh -e {path}\n"
        )
    } else {
        format!("RUN {command}\n")
    }
}

/// The Dockerfile of a template's image: `base` with `commands` run over
/// it.
pub(crate) fn dockerfile(base: &str, commands: &[&str]) -> String {
    let mut out = format!("FROM {base}\n");
    for command in commands {
        out.push_str(&run_lines(command));
    }
    out
}

fn not_found(slug: &str) -> CoreError {
    CoreError::not_found("template", slug)
}

/// The templates product.
pub struct Templates {
    core: Arc<Service>,
    /// The account whose templates are the catalog (the operator's).
    catalog: Option<AccountId>,
}

impl Templates {
    pub fn new(core: Arc<Service>, catalog: Option<AccountId>) -> Arc<Self> {
        Arc::new(Self { core, catalog })
    }

    /// A snapshot of `oci_image` with `build_args` applied: its record
    /// at once, ready when the build ends (the SDK's `publish` polls it).
    pub async fn build_snapshot(
        &self,
        account: &AccountId,
        oci_image: &str,
        name: Option<String>,
        kind: SnapshotKind,
        build_args: BuildArgs,
    ) -> Result<Snapshot, CoreError> {
        if oci_image.trim().is_empty() {
            return Err(CoreError::invalid("oci_image", "must not be empty"));
        }
        for (field, value) in [
            ("build_args.post_build_cmd", &build_args.post_build_cmd),
            ("build_args.template_app_cmd", &build_args.template_app_cmd),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.trim().is_empty() || v.len() > 64 << 10)
            {
                return Err(CoreError::invalid(field, "must be 1 byte to 64 KiB"));
            }
        }
        if let Some(cwd) = &build_args.template_app_cwd {
            if !cwd.starts_with('/') {
                return Err(CoreError::invalid(
                    "build_args.template_app_cwd",
                    "must be an absolute path",
                ));
            }
        }
        let commands: Vec<&str> = build_args
            .post_build_cmd
            .iter()
            .map(String::as_str)
            .collect();
        let mut dockerfile = dockerfile(oci_image, &commands);
        if let Some(cwd) = &build_args.template_app_cwd {
            dockerfile.push_str(&format!("WORKDIR {cwd}\n"));
        }
        if let Some(app) = &build_args.template_app_cmd {
            let cmd = serde_json::to_string(&["/bin/sh", "-c", app])
                .map_err(|e| CoreError::Unavailable(e.to_string()))?;
            dockerfile.push_str(&format!("CMD {cmd}\n"));
        }
        self.snapshot_of(account, name, kind, dockerfile).await
    }

    /// Starts building `dockerfile` into a snapshot; remembers the recipe.
    async fn snapshot_of(
        &self,
        account: &AccountId,
        name: Option<String>,
        kind: SnapshotKind,
        dockerfile: String,
    ) -> Result<Snapshot, CoreError> {
        use sha2::Digest;
        let hash = hex::encode(&sha2::Sha256::digest(dockerfile.as_bytes())[..8]);
        let request = BuildRequest {
            dockerfile: dockerfile.clone(),
            tag: format!("paddock.local/templates/{hash}:latest"),
            build_args: Vec::new(),
            context: Default::default(),
        };
        let snapshot = self
            .core
            .vms()
            .snapshot_from_build(account, name, kind, request)
            .await?;
        let recipe = Recipe {
            id: snapshot.id.to_string(),
            account_id: account.clone(),
            dockerfile,
            created_at: Timestamp::now(),
        };
        self.core.documents().insert(&recipe).await?;
        Ok(snapshot)
    }

    /// Publishes a template (a new one, or a new version of the
    /// account's): `verify` starts a VM of it, runs its runtime commands
    /// and checks its app, and the template is `active` once that passed.
    pub async fn publish(
        self: &Arc<Self>,
        account: &AccountId,
        raw_manifest: Value,
        snapshot_id: &str,
        verify: bool,
    ) -> Result<Template, CoreError> {
        let manifest = Manifest::parse(&raw_manifest)?;
        if builtin::find(&manifest.slug).is_some() {
            return Err(CoreError::Conflict(format!(
                "{} is a built-in template's slug",
                manifest.slug
            )));
        }
        let snapshot_id: SnapshotId =
            snapshot_id
                .parse()
                .map_err(|e: paddock_core::ids::InvalidId| {
                    CoreError::invalid("snapshot_id", e.to_string())
                })?;
        let snapshot = self.core.snapshots().get(account, &snapshot_id).await?;
        if snapshot.status != SnapshotStatus::Ready {
            return Err(CoreError::FailedPrecondition(format!(
                "snapshot {snapshot_id} is {}; publish once it is ready",
                snapshot.status.as_str()
            )));
        }
        let public = self.catalog.as_ref() == Some(account);
        if public {
            // One catalog: a slug is the catalog's once.
            let taken = self
                .catalog_templates()
                .await?
                .into_iter()
                .any(|t| t.id == manifest.slug && &t.account_id != account);
            if taken {
                return Err(CoreError::Conflict(format!("{} is taken", manifest.slug)));
            }
        }
        let recipe: Option<Recipe> = self
            .core
            .documents()
            .load(account, snapshot_id.as_str())
            .await?;
        let now = Timestamp::now();
        let documents = self.core.documents();
        let _guard = documents.lock::<Template>(account, &manifest.slug).await?;
        let previous: Option<Template> = documents.load(account, &manifest.slug).await?;
        let template = Template {
            id: manifest.slug.clone(),
            account_id: account.clone(),
            version: manifest.version.clone(),
            manifest: raw_manifest,
            snapshot_id: Some(snapshot_id.clone()),
            dockerfile: recipe.map(|r| r.dockerfile),
            status: if verify {
                TemplateStatus::Verifying
            } else {
                TemplateStatus::Active
            },
            verify_error: None,
            builtin: false,
            public,
            created_at: previous.as_ref().map_or(now, |p| p.created_at),
            updated_at: now,
        };
        if previous.is_some() {
            documents.save(&template).await?;
        } else {
            documents.insert(&template).await?;
        }
        if verify {
            let this = Arc::clone(self);
            let (account, slug) = (account.clone(), manifest.slug.clone());
            tokio::spawn(async move {
                let outcome = runs::verify(&this.core, &account, &manifest, &snapshot_id).await;
                if let Err(e) = this.settle(&account, &slug, outcome).await {
                    tracing::warn!(template = %slug, error = %e, "could not record a template's verification");
                }
            });
        }
        Ok(template)
    }

    async fn settle(
        &self,
        account: &AccountId,
        slug: &str,
        outcome: Result<(), String>,
    ) -> Result<(), CoreError> {
        let documents = self.core.documents();
        let _guard = documents.lock::<Template>(account, slug).await?;
        let Some(mut template): Option<Template> = documents.load(account, slug).await? else {
            return Ok(());
        };
        match outcome {
            Ok(()) => template.status = TemplateStatus::Active,
            Err(why) => {
                template.status = TemplateStatus::Failed;
                template.verify_error = Some(why);
            }
        }
        template.updated_at = Timestamp::now();
        documents.save(&template).await
    }

    async fn catalog_templates(&self) -> Result<Vec<Template>, CoreError> {
        match &self.catalog {
            Some(catalog) => self.core.documents().load_all(Some(catalog)).await,
            None => Ok(Vec::new()),
        }
    }

    /// The templates `viewer` may see (the catalog's active ones without a
    /// key), by slug: an account's own first, then the built-ins, then the
    /// catalog.
    pub async fn list(&self, viewer: Option<&AccountId>) -> Result<Vec<Template>, CoreError> {
        let mut out: Vec<Template> = Vec::new();
        if let Some(viewer) = viewer {
            out.extend(
                self.core
                    .documents()
                    .load_all::<Template>(Some(viewer))
                    .await?,
            );
        }
        out.extend(builtin::all());
        for t in self.catalog_templates().await? {
            if t.status == TemplateStatus::Active && !out.iter().any(|o| o.id == t.id) {
                out.push(t);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Template `slug` as `viewer` sees it.
    pub async fn get(&self, viewer: Option<&AccountId>, slug: &str) -> Result<Template, CoreError> {
        if let Some(viewer) = viewer {
            if let Some(own) = self.core.documents().load::<Template>(viewer, slug).await? {
                return Ok(own);
            }
        }
        if let Some(t) = builtin::find(slug) {
            return Ok(t);
        }
        self.catalog_templates()
            .await?
            .into_iter()
            .find(|t| t.id == slug && t.status == TemplateStatus::Active)
            .ok_or_else(|| not_found(slug))
    }

    /// Deletes the account's template `slug` (its snapshot stays).
    pub async fn delete(&self, account: &AccountId, slug: &str) -> Result<Template, CoreError> {
        let documents = self.core.documents();
        let _guard = documents.lock::<Template>(account, slug).await?;
        let template: Template = documents
            .load(account, slug)
            .await?
            .ok_or_else(|| not_found(slug))?;
        documents.delete::<Template>(account, slug).await?;
        Ok(template)
    }

    /// The snapshot `account` runs `template` from: the publisher's own,
    /// or one built for the account from the template's recipe (at first
    /// use, then kept).
    async fn snapshot_for(
        &self,
        account: &AccountId,
        template: &Template,
    ) -> Result<SnapshotId, CoreError> {
        if &template.account_id == account {
            if let Some(id) = &template.snapshot_id {
                return Ok(id.clone());
            }
        }
        let key = format!("{}@{}", template.id, template.version);
        let documents = self.core.documents();
        let _guard = documents.lock::<AccountBuild>(account, &key).await?;
        if let Some(built) = documents.load::<AccountBuild>(account, &key).await? {
            if let Ok(s) = self.core.snapshots().get(account, &built.snapshot_id).await {
                if s.status == SnapshotStatus::Ready {
                    return Ok(built.snapshot_id);
                }
            }
            documents.delete::<AccountBuild>(account, &key).await?;
        }
        let dockerfile = template.dockerfile.clone().ok_or_else(|| {
            CoreError::FailedPrecondition(format!(
                "template {} runs from a snapshot of its publisher's that paddock did not build, \
                 so it cannot be built for another account",
                template.id
            ))
        })?;
        let snapshot = self
            .snapshot_of(
                account,
                Some(format!("template/{key}")),
                SnapshotKind::System,
                dockerfile,
            )
            .await?;
        let ready = self.wait_ready(account, &snapshot.id).await?;
        documents
            .insert(&AccountBuild {
                id: key,
                account_id: account.clone(),
                snapshot_id: ready.clone(),
                created_at: Timestamp::now(),
            })
            .await?;
        Ok(ready)
    }

    async fn wait_ready(
        &self,
        account: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotId, CoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1800);
        loop {
            let s = self.core.snapshots().get(account, id).await?;
            match s.status {
                SnapshotStatus::Ready => return Ok(s.id),
                SnapshotStatus::Failed => {
                    return Err(CoreError::FailedPrecondition(format!(
                        "the template's image could not be built: {}",
                        s.error.unwrap_or_default()
                    )))
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(CoreError::DeadlineExceeded(
                        "the template's image took over 30 minutes to build".into(),
                    ))
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_run_lines_that_survive_any_text() {
        assert_eq!(
            dockerfile("default", &["pip install x && echo ok"]),
            "FROM default\nRUN pip install x && echo ok\n"
        );
        let multi = dockerfile("img:1", &["echo a\necho b"]);
        let steps = paddock_core::service::Vms::parse_dockerfile(&multi).expect("parses");
        assert_eq!(steps.len(), 3, "{multi}");
        assert!(
            multi.contains("\necho a\necho b\n") && multi.contains("RUN sh -e /tmp/.paddock-step-")
        );
    }
}
