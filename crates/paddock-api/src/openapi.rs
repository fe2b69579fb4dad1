//! The OpenAPI document of every route, generated from the handlers'
//! annotations. `openapi.json` at the repository root is this document,
//! committed; a test fails when the two drift.

use utoipa::OpenApi;

use crate::vms;

#[derive(OpenApi)]
#[openapi(
    info(title = "paddock", description = "Self-hosted isolated environments: the VM / sandbox API (InstaVM-compatible) and the account gateway (/v1/accounts/{account_id}/…: clusters, node pools, dev environments, batch jobs)."),
    paths(
        vms::lifecycle::create, vms::lifecycle::list_active, vms::lifecycle::list_all,
        vms::lifecycle::get, vms::lifecycle::patch, vms::lifecycle::delete,
        vms::sessions::create, vms::sessions::get, vms::sessions::status, vms::sessions::end, vms::sessions::kill,
        vms::execute::execute, vms::execute::execute_async, vms::execute::get_execution, vms::execute::stream_exec,
        vms::files::get_file, vms::files::put_file, vms::files::upload, vms::files::download,
        vms::pty::create_for_vm, vms::pty::list_for_vm, vms::pty::get_for_vm, vms::pty::resize_for_vm,
        vms::pty::kill_for_vm, vms::pty::connect_for_vm,
        vms::pty::create_for_session, vms::pty::list_for_session, vms::pty::get_for_session,
        vms::pty::resize_for_session, vms::pty::kill_for_session, vms::pty::connect_for_session,
        vms::images::pull, vms::images::pull_status, vms::images::list, vms::images::inspect, vms::images::remove,
        vms::images::build, vms::images::push,
        vms::snapshots::snapshot_vm, vms::snapshots::clone_vm, vms::snapshots::create,
        vms::snapshots::list, vms::snapshots::get, vms::snapshots::delete, vms::snapshots::push,
        vms::vaults::create, vms::vaults::list, vms::vaults::get, vms::vaults::update,
        vms::vaults::delete, vms::vaults::discover, vms::vaults::list_credentials,
        vms::vaults::add_credential, vms::vaults::rotate_credential,
        vms::vaults::delete_credential, vms::vaults::stage_env,
        vms::volumes::create, vms::volumes::list, vms::volumes::get, vms::volumes::update,
        vms::volumes::delete, vms::volumes::create_checkpoint, vms::volumes::list_checkpoints,
        vms::volumes::delete_checkpoint, vms::volumes::mount, vms::volumes::list_mounts,
        vms::volumes::unmount,
        vms::shares::create, vms::shares::list, vms::shares::get, vms::shares::update,
        vms::shares::delete, vms::shares::create_for_vm, vms::shares::list_for_vm,
        vms::shares::delete_for_vm,
        vms::domains::create, vms::domains::list, vms::domains::get, vms::domains::verify,
        vms::domains::health, vms::domains::delete,
        vms::ssh_keys::add, vms::ssh_keys::list, vms::ssh_keys::delete,
        vms::egress::get_vm, vms::egress::set_vm, vms::egress::get_session, vms::egress::set_session,
    ),
    modifiers(&ApiKeyAuth),
    security(("api_key" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct ApiKeyAuth;

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Adds a hand-built surface's paths and component schemas to `doc`.
pub(crate) fn merge(
    doc: &mut serde_json::Value,
    paths: serde_json::Map<String, serde_json::Value>,
    schemas: serde_json::Map<String, serde_json::Value>,
) {
    use serde_json::{json, Value};
    if let Some(Value::Object(existing)) = doc.get_mut("paths") {
        existing.extend(paths);
    }
    let components = doc
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})));
    if let Some(Value::Object(c)) = components {
        if let Value::Object(s) = c.entry("schemas").or_insert_with(|| json!({})) {
            s.extend(schemas);
        }
    }
}

/// The document as pretty JSON (the committed file's form): the VM API's
/// generated paths, then the account gateway's, then the environment
/// definitions'.
pub fn document_json() -> String {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    crate::gateway::openapi::extend(&mut doc);
    crate::definitions::openapi::extend(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
