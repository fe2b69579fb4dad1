//! The VM / sandbox API, wire-compatible with InstaVM's: `/v1/vms`,
//! sessions, `/execute`, files and PTYs, plus paddock's streaming exec and
//! streamed file transfer. A thin adapter: it parses, calls the core, and
//! renders the core's errors through [`error::ApiError`].

pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod browser;
pub(crate) mod bulk_delete;
pub(crate) mod computer_use;
pub mod domains;
pub mod dto;
pub(crate) mod egress;
pub mod error;
pub(crate) mod execute;
pub(crate) mod extract;
pub(crate) mod files;
pub(crate) mod images;
pub(crate) mod lifecycle;
pub(crate) mod placement;
pub(crate) mod pty;
pub(crate) mod quotas;
pub(crate) mod sessions;
pub mod shares;
pub(crate) mod snapshots;
pub(crate) mod ssh_keys;
pub(crate) mod tapes;
pub(crate) mod templates;
pub(crate) mod usage;
pub(crate) mod users;
pub(crate) mod vault_services;
pub(crate) mod vaults;
pub(crate) mod vm_metrics;
pub(crate) mod volumes;
pub(crate) mod webhooks;

use std::collections::BTreeMap;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use paddock_core::ids::{SessionId, VaultId, VmId};
use paddock_core::model::{validate_name, Env, VmOptions, VmSpec};
use paddock_core::service::Service;
use serde_json::Value;

use crate::AppState;
use error::ApiError;

/// The VM API's routes: JSON bodies up to the JSON limit, commands up to
/// the command limit; the file routes have no limit (they stream).
pub(crate) fn router(
    limits: &crate::server::HttpLimits,
    budget: &crate::body_budget::BodyBudget,
) -> Router<AppState> {
    let commands = Router::new()
        .route("/v1/vms/{vm_id}/exec", post(execute::stream_exec))
        .route("/execute", post(execute::execute))
        .route("/execute_async", post(execute::execute_async))
        .layer(crate::body_limit(limits.command_body_bytes))
        .layer(budget.on(limits.command_body_bytes));
    let streamed = Router::new()
        .route(
            "/v1/vms/{vm_id}/files",
            get(files::get_file)
                .put(files::put_file)
                .delete(files::delete_file),
        )
        .route("/upload", post(files::upload))
        .route(
            "/v1/volumes/{volume_id}/files/upload",
            post(volumes::upload_file),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route(
            "/v1/vms",
            post(lifecycle::create).get(lifecycle::list_active),
        )
        .route("/v1/vms/", get(lifecycle::list_all))
        .route("/v1/vms/bulk-delete", post(bulk_delete::bulk_delete))
        .route("/v1/quotas", get(quotas::get))
        .route(
            "/v1/vms/{vm_id}",
            get(lifecycle::get)
                .patch(lifecycle::patch)
                .delete(lifecycle::delete),
        )
        .route(
            "/v1/vms/{vm_id}/pty/sessions",
            post(pty::create_for_vm).get(pty::list_for_vm),
        )
        .route(
            "/v1/vms/{vm_id}/pty/sessions/{pty_id}",
            get(pty::get_for_vm).delete(pty::kill_for_vm),
        )
        .route(
            "/v1/vms/{vm_id}/pty/sessions/{pty_id}/resize",
            post(pty::resize_for_vm),
        )
        .route(
            "/v1/vms/{vm_id}/pty/{pty_id}/connect",
            get(pty::connect_for_vm),
        )
        .route("/v1/sessions/session", post(sessions::create))
        .route(
            "/v1/sessions/session/{session_id}",
            get(sessions::get).delete(sessions::end),
        )
        .route("/v1/sessions/status/{session_id}", get(sessions::status))
        .route("/kill", post(sessions::kill))
        .route(
            "/v1/sessions/{session_id}/pty/sessions",
            post(pty::create_for_session).get(pty::list_for_session),
        )
        .route(
            "/v1/sessions/{session_id}/pty/sessions/{pty_id}",
            get(pty::get_for_session).delete(pty::kill_for_session),
        )
        .route(
            "/v1/sessions/{session_id}/pty/sessions/{pty_id}/resize",
            post(pty::resize_for_session),
        )
        .route(
            "/v1/sessions/{session_id}/pty/{pty_id}/connect",
            get(pty::connect_for_session),
        )
        .route("/v1/executions/{task_id}", get(execute::get_execution))
        .route("/download", post(files::download))
        .route("/v1/vms/{vm_id}/snapshot", post(snapshots::snapshot_vm))
        .route("/v1/vms/{vm_id}/suspend", post(lifecycle::suspend))
        .route("/v1/vms/{vm_id}/resume", post(lifecycle::resume))
        .route("/v1/vms/{vm_id}/metrics", get(vm_metrics::vm_metrics))
        .route("/v1/vms/{vm_id}/clone", post(snapshots::clone_vm))
        .route("/v1/vms/{vm_id}/stage-env", post(vaults::stage_env))
        .route(
            "/v1/snapshots",
            post(snapshots::create).get(snapshots::list),
        )
        .route(
            "/v1/snapshots/{snapshot_id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/v1/snapshots/{snapshot_id}/push", post(snapshots::push))
        .route("/v1/vaults", post(vaults::create).get(vaults::list))
        .route(
            "/v1/vaults/{vault_id}",
            get(vaults::get)
                .patch(vaults::update)
                .delete(vaults::delete),
        )
        .route("/v1/vaults/{vault_id}/discover", get(vaults::discover))
        .route("/v1/vaults/catalog", get(vault_services::service_catalog))
        .route(
            "/v1/vaults/{vault_id}/services",
            post(vault_services::add_service).get(vault_services::list_services),
        )
        .route(
            "/v1/vaults/{vault_id}/services:from_template",
            post(vault_services::add_services_from_templates),
        )
        .route(
            "/v1/vaults/{vault_id}/services/{service_id}",
            get(vault_services::get_service)
                .patch(vault_services::update_service)
                .delete(vault_services::delete_service),
        )
        .route(
            "/v1/vaults/{vault_id}/request-logs",
            get(vault_services::service_request_logs),
        )
        .route(
            "/v1/vaults/{vault_id}/credentials",
            post(vaults::add_credential).get(vaults::list_credentials),
        )
        .route(
            "/v1/vaults/{vault_id}/credentials/{credential_id}",
            axum::routing::delete(vaults::delete_credential),
        )
        .route(
            "/v1/vaults/{vault_id}/credentials/{credential_id}/rotate",
            post(vaults::rotate_credential),
        )
        .route("/v1/volumes", post(volumes::create).get(volumes::list))
        .route("/v1/shares", post(shares::create).get(shares::list))
        .route("/v1/ssh-keys", post(ssh_keys::add).get(ssh_keys::list))
        .route("/v1/api-keys/", post(api_keys::create).get(api_keys::list))
        .route("/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route(
            "/v1/api-keys/{key_id}",
            get(api_keys::get)
                .patch(api_keys::update)
                .delete(api_keys::delete),
        )
        .route("/v1/users/me", get(users::me))
        .route(
            "/v1/webhooks/endpoints",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/v1/webhooks/endpoints/{endpoint_id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/webhooks/endpoints/{endpoint_id}/test",
            post(webhooks::test),
        )
        .route(
            "/v1/webhooks/endpoints/{endpoint_id}/verify",
            post(webhooks::verify),
        )
        .route(
            "/v1/volumes/{volume_id}/files",
            get(volumes::list_files).delete(volumes::delete_file),
        )
        .route(
            "/v1/volumes/{volume_id}/files/download",
            post(volumes::download_file),
        )
        .route("/v1/webhooks/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/webhooks/deliveries/{delivery_id}/replay",
            post(webhooks::replay),
        )
        .route("/v1/audit/catalog", get(audit::catalog))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/events/{event_id}", get(audit::event))
        .route("/v1/users/me/usage-breakdown", get(usage::breakdown))
        .route("/v1/sessions/usage/{session_id}", get(usage::session))
        .route("/v1/sessions/sandboxes", get(sessions::sandboxes))
        .route("/v1/sessions/app-url/{session_id}", get(sessions::app_url))
        .route(
            "/v1/ssh-keys/{key_id}",
            axum::routing::delete(ssh_keys::delete),
        )
        .route(
            "/v1/custom-domains",
            post(domains::create).get(domains::list),
        )
        .route(
            "/v1/custom-domains/{domain_id}",
            get(domains::get).delete(domains::delete),
        )
        .route(
            "/v1/custom-domains/{domain_id}/verify",
            post(domains::verify),
        )
        .route(
            "/v1/custom-domains/{domain_id}/health",
            get(domains::health),
        )
        .route(
            "/v1/shares/{share_id}",
            get(shares::get)
                .patch(shares::update)
                .delete(shares::delete),
        )
        .route(
            "/v1/vms/{vm_id}/shares",
            post(shares::create_for_vm).get(shares::list_for_vm),
        )
        .route(
            "/v1/vms/{vm_id}/shares/{share_id}",
            axum::routing::delete(shares::delete_for_vm),
        )
        .route(
            "/v1/egress/vm/{vm_id}",
            get(egress::get_vm).post(egress::set_vm),
        )
        .route(
            "/v1/egress/session/{session_id}",
            get(egress::get_session).post(egress::set_session),
        )
        .route(
            "/v1/volumes/{volume_id}",
            get(volumes::get)
                .patch(volumes::update)
                .delete(volumes::delete),
        )
        .route(
            "/v1/volumes/{volume_id}/checkpoints",
            post(volumes::create_checkpoint).get(volumes::list_checkpoints),
        )
        .route(
            "/v1/volumes/{volume_id}/checkpoints/{checkpoint_id}",
            axum::routing::delete(volumes::delete_checkpoint),
        )
        .route(
            "/v1/vms/{vm_id}/volumes",
            post(volumes::mount).get(volumes::list_mounts),
        )
        .route(
            "/v1/vms/{vm_id}/volumes/{volume_id}",
            axum::routing::delete(volumes::unmount),
        )
        .route(
            "/v1/browser/sessions/",
            post(browser::create_session).get(browser::list_sessions),
        )
        .route(
            "/v1/browser/sessions",
            post(browser::create_session).get(browser::list_sessions),
        )
        .route(
            "/v1/browser/sessions/{session_id}",
            get(browser::get_session).delete(browser::close_session),
        )
        .route("/v1/browser/interactions/navigate", post(browser::navigate))
        .route("/v1/browser/interactions/click", post(browser::click))
        .route("/v1/browser/interactions/type", post(browser::type_text))
        .route("/v1/browser/interactions/fill", post(browser::fill))
        .route("/v1/browser/interactions/scroll", post(browser::scroll))
        .route("/v1/browser/interactions/wait", post(browser::wait))
        .route(
            "/v1/browser/interactions/screenshot",
            post(browser::screenshot),
        )
        .route("/v1/browser/interactions/extract", post(browser::extract))
        .route("/v1/browser/interactions/content", post(browser::content))
        .route(
            "/v1/computeruse/{session_id}/viewer-url",
            get(computer_use::viewer_url),
        )
        .route(
            "/v1/computeruse/{session_id}/vnc/websockify",
            get(computer_use::vnc_websockify),
        )
        .route(
            "/v1/computeruse/{session_id}/{*path}",
            get(computer_use::control_get)
                .post(computer_use::control_post)
                .fallback(computer_use::control_other),
        )
        .route("/v1/recordings", get(computer_use::list_recordings))
        .route(
            "/v1/recordings/{recording_id}",
            get(computer_use::get_recording).delete(computer_use::delete_recording),
        )
        .route(
            "/v1/recordings/{recording_id}/download",
            get(computer_use::download_recording),
        )
        .route(
            "/v1/recordings/{recording_id}/content",
            get(computer_use::recording_content),
        )
        .route(
            "/v1/templates",
            get(templates::list).post(templates::publish),
        )
        .route(
            "/v1/templates/{slug}",
            get(templates::get).delete(templates::delete),
        )
        .route("/v1/templates/{slug}/runs", post(templates::run))
        .route("/v1/sessions/{session_id}/tape/start", post(tapes::start))
        .route("/v1/tapes", get(tapes::list))
        .route("/v1/tapes/{tape_id}", get(tapes::get).delete(tapes::delete))
        .route("/v1/tapes/{tape_id}/stop", post(tapes::stop))
        .route(
            "/v1/tapes/{tape_id}/events",
            get(tapes::events).post(tapes::append),
        )
        .route("/v1/tapes/{tape_id}/lanes", get(tapes::lanes))
        .route("/v1/tapes/{tape_id}/diff", get(tapes::diff))
        .route("/v1/tapes/{tape_id}/branch", post(tapes::branch))
        .route("/v1/tapes/{tape_id}/export", get(tapes::export))
        .route("/v1/images", post(images::pull).get(images::list))
        .route("/v1/images/pulls/{pull_id}", get(images::pull_status))
        .route("/v1/images/build", post(images::build))
        .route("/v1/images/{key}/push", post(images::push))
        .route(
            "/v1/images/{key}",
            get(images::inspect).delete(images::remove),
        )
        .layer(crate::body_limit(limits.json_body_bytes))
        .layer(budget.on(limits.json_body_bytes))
        .merge(commands)
        .merge(streamed)
}

/// A VM id from a path: one that cannot exist is simply not found.
pub(crate) fn vm_id(raw: &str) -> Result<VmId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("VM"))
}

pub(crate) fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Session"))
}

/// The settings shared by `POST /v1/vms` and `POST /v1/sessions/session`.
#[derive(Default)]
pub(crate) struct VmSettings {
    pub session_id: Option<String>,
    pub vm_lifetime_seconds: Option<i64>,
    pub memory_mb: Option<i64>,
    pub vcpu_count: Option<i64>,
    pub disk_mb: Option<i64>,
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub env: Option<BTreeMap<String, String>>,
    pub image_variant: Option<String>,
    pub snapshot_id: Option<String>,
    pub snapshot_on_terminate: Option<bool>,
    pub snapshot_name: Option<String>,
    pub vault_ids: Option<Vec<String>>,
    pub volumes: Option<Vec<volumes::MountVolumeRequest>>,
    pub egress_policy: Option<Value>,
    pub provider: Option<String>,
    pub auto_suspend: Option<bool>,
    pub auto_resume: Option<bool>,
}

/// The providers a VM of this API may ask for: the others (`local`,
/// `docker`) run environment definitions' sandboxes.
const VM_PROVIDERS: &[&str] = &["container", "microvm"];

fn vm_provider(raw: &str) -> Result<String, ApiError> {
    if VM_PROVIDERS.contains(&raw) {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::body_field(
            "provider",
            format!("must be one of {}", VM_PROVIDERS.join(", ")),
        ))
    }
}

/// Parses an egress policy in a request body; an error names the field
/// (`["body", "egress_policy", "allowed_cidrs", 1]`).
pub(crate) fn egress_policy(
    raw: &Value,
    field: &str,
) -> Result<paddock_core::model::EgressPolicy, ApiError> {
    paddock_core::model::EgressPolicy::from_json(raw, field).map_err(|e| {
        let mut loc = vec!["body".to_owned()];
        for part in e.field.split('.').filter(|p| !p.is_empty()) {
            match part.split_once('[') {
                Some((name, index)) => {
                    loc.push(name.to_owned());
                    loc.push(index.trim_end_matches(']').to_owned());
                }
                None => loc.push(part.to_owned()),
            }
        }
        let loc: Vec<&str> = loc.iter().map(String::as_str).collect();
        ApiError::field(&loc, e.message, "value_error")
    })
}

/// Parses a body's `vault_ids`, naming the entry that is not a vault id.
pub(crate) fn vault_ids(raw: Option<Vec<String>>) -> Result<Vec<VaultId>, ApiError> {
    raw.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            raw.parse().map_err(|e: paddock_core::ids::InvalidId| {
                ApiError::field(&["body", "vault_ids", &i.to_string()], e.0, "value_error")
            })
        })
        .collect()
}

pub(crate) fn lifetime(raw: Option<i64>) -> Result<Option<u64>, ApiError> {
    raw.map(|l| {
        u64::try_from(l)
            .ok()
            .filter(|l| *l >= 1)
            .ok_or_else(|| ApiError::body_field("vm_lifetime_seconds", "must be at least 1"))
    })
    .transpose()
}

pub(crate) fn vm_spec(service: &Service, s: VmSettings) -> Result<VmSpec, ApiError> {
    let session_id = s
        .session_id
        .map(|raw| {
            raw.parse::<SessionId>()
                .map_err(|e| ApiError::body_field("session_id", e.to_string()))
        })
        .transpose()?;
    let env = Env::new(s.env.unwrap_or_default())
        .map_err(|e| ApiError::field(&["body", "env", &e.name], e.reason, "value_error"))?;
    let snapshot_id = s
        .snapshot_id
        .map(|raw| raw.parse().map_err(|_| ApiError::not_found("Snapshot")))
        .transpose()?;
    if let Some(name) = &s.snapshot_name {
        validate_name(name).map_err(|m| ApiError::body_field("snapshot_name", m))?;
    }
    let vault_ids = vault_ids(s.vault_ids)?;
    let options = VmOptions {
        snapshot_id,
        snapshot_on_terminate: s.snapshot_on_terminate.unwrap_or(false),
        snapshot_name: s.snapshot_name,
        vault_ids,
        egress_policy: s
            .egress_policy
            .filter(|v| !v.is_null())
            .map(|v| egress_policy(&v, "egress_policy"))
            .transpose()?,
        auto_suspend: s.auto_suspend.unwrap_or(false),
        auto_resume: s.auto_resume.unwrap_or(false),
        ..VmOptions::default()
    };
    let volumes = s
        .volumes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, raw)| volumes::mount_request(raw, &["body", "volumes", &i.to_string()]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VmSpec {
        options,
        volumes,
        session_id,
        lifetime_seconds: lifetime(s.vm_lifetime_seconds)?,
        resources: service
            .vms()
            .resources(s.memory_mb, s.vcpu_count, s.disk_mb)?,
        metadata: s.metadata.unwrap_or_default(),
        env,
        image_variant: s
            .image_variant
            .unwrap_or_else(|| service.config().default_variant.clone()),
        provider: s.provider.map(|p| vm_provider(&p)).transpose()?,
        placement: paddock_core::model::Placement::ThisNode,
    })
}
