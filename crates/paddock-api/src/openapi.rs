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
        vms::bulk_delete::bulk_delete,
        vms::lifecycle::suspend, vms::lifecycle::resume, vms::vm_metrics::vm_metrics,
        vms::sessions::create, vms::sessions::get, vms::sessions::status, vms::sessions::end, vms::sessions::kill,
        vms::execute::execute, vms::execute::execute_async, vms::execute::get_execution, vms::execute::stream_exec,
        vms::files::get_file, vms::files::put_file, vms::files::delete_file, vms::files::upload, vms::files::download,
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
        vms::vault_services::add_service, vms::vault_services::list_services,
        vms::vault_services::get_service, vms::vault_services::update_service,
        vms::vault_services::delete_service, vms::vault_services::add_services_from_templates,
        vms::vault_services::service_catalog, vms::vault_services::service_request_logs,
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
        vms::quotas::get,
        vms::api_keys::create, vms::api_keys::list, vms::api_keys::get, vms::api_keys::update,
        vms::api_keys::delete, vms::users::me, vms::usage::breakdown, vms::usage::session,
        vms::sessions::sandboxes, vms::sessions::app_url,
        vms::audit::catalog, vms::audit::events, vms::audit::event,
        vms::webhooks::create, vms::webhooks::list, vms::webhooks::get, vms::webhooks::update,
        vms::webhooks::delete, vms::webhooks::rotate_secret, vms::webhooks::test,
        vms::webhooks::verify, vms::webhooks::deliveries, vms::webhooks::replay,
        vms::volumes::list_files, vms::volumes::download_file, vms::volumes::upload_file,
        vms::volumes::delete_file,
        vms::browser::create_session, vms::browser::list_sessions, vms::browser::get_session,
        vms::browser::close_session, vms::browser::navigate, vms::browser::click,
        vms::browser::type_text, vms::browser::fill, vms::browser::scroll, vms::browser::wait,
        vms::browser::screenshot, vms::browser::extract, vms::browser::content,
        vms::tapes::start, vms::tapes::stop, vms::tapes::get, vms::tapes::list,
        vms::tapes::delete, vms::tapes::events, vms::tapes::append, vms::tapes::lanes,
        vms::tapes::diff, vms::tapes::branch, vms::tapes::export,
        vms::templates::list, vms::templates::get, vms::templates::publish,
        vms::templates::delete, vms::templates::run,
        vms::computer_use::viewer_url, vms::computer_use::vnc_websockify,
        vms::computer_use::control_get, vms::computer_use::control_post,
        vms::computer_use::list_recordings, vms::computer_use::get_recording,
        vms::computer_use::delete_recording, vms::computer_use::download_recording,
        vms::computer_use::recording_content,
    ),
    modifiers(&ApiKeyAuth),
    security(("api_key" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct ApiKeyAuth;

/// Which key a request is judged by, when it sends more than one.
const AUTH_RULE: &str = "One key decides: `X-API-Key` when present and not empty, \
else `Authorization: Bearer`, else (for WebSocket clients) a `paddock.key.<key>` entry in \
`Sec-WebSocket-Protocol` (the server selects `paddock.v1`), else the `api_key` query parameter. \
A request that sends both headers is judged by `X-API-Key` alone: a wrong one is 401 \
even beside a valid Bearer token.";

impl utoipa::Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                AUTH_RULE,
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(AUTH_RULE))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON (the committed file's form): the VM API's
/// paths, the account gateway's and the environment definitions', each
/// generated from its handlers and types.
pub fn document_json() -> String {
    let mut api = ApiDoc::openapi();
    api.merge(crate::gateway::openapi::GatewayDoc::openapi());
    api.merge(crate::definitions::openapi::DefinitionsDoc::openapi());
    api.merge(crate::e2b::openapi::E2bDoc::openapi());
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    crate::gateway::openapi::complete(&mut doc);
    crate::definitions::openapi::complete(&mut doc);
    complete(&mut doc);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// What every operation of a surface can answer whatever its handler does,
/// added where an operation does not list it: the key check (401), the
/// account's request rate (429), a
/// parameter or body that does not parse (the surface's validation
/// status), an unknown id in the path (404), a body over its limit (413).
/// On the VM API also: a WebSocket route called without an upgrade (400),
/// and a VM that is not in a state for the call (409) on every route that
/// addresses one. VM API operation ids are `{tag}_{handler}`, unique and
/// stable as long as handler names are.
fn complete(doc: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(Value::Object(paths)) = doc.get_mut("paths") else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Value::Object(operations) = item else {
            continue;
        };
        let surface = crate::rejections::Surface::of(path);
        for op in operations.values_mut() {
            let Value::Object(op) = op else { continue };
            let common = common_statuses(surface, path, op);
            if surface == crate::rejections::Surface::Vms {
                qualify_operation_id(op);
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(responses) = responses {
                for (status, response) in common {
                    responses.entry(status).or_insert(response);
                }
                for (status, response) in responses.iter_mut() {
                    describe_by_status(status, response);
                }
            }
        }
    }
}

/// A response its annotation left undescribed gets its status's reason
/// phrase (OpenAPI requires a description).
fn describe_by_status(status: &str, response: &mut serde_json::Value) {
    let undescribed = response
        .get("description")
        .and_then(|d| d.as_str())
        .is_none_or(str::is_empty);
    let reason = status
        .parse::<u16>()
        .ok()
        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason());
    if let (true, Some(reason)) = (undescribed, reason) {
        response["description"] = serde_json::Value::String(reason.to_owned());
    }
}

/// The common statuses of one operation with their bodies.
fn common_statuses(
    surface: crate::rejections::Surface,
    path: &str,
    op: &serde_json::Map<String, serde_json::Value>,
) -> Vec<(String, serde_json::Value)> {
    use crate::rejections::Surface;
    let has_body = op.contains_key("requestBody");
    let params = op.get("parameters").and_then(|p| p.as_array());
    let has_params = has_body || params.is_some_and(|p| !p.is_empty());
    let has_path_params = path.contains('{');
    let error = |schema: &str, what: &str| {
        serde_json::json!({"description": what,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
    };
    let (plain, invalid, invalid_status) = match surface {
        Surface::Vms => ("ErrorDetail", "HttpValidationError", "422"),
        Surface::Gateway => ("GatewayStatusError", "GatewayStatusError", "400"),
        Surface::Definitions => ("ErrorResponse", "ErrorResponse", "422"),
        Surface::E2b => ("E2bError", "E2bError", "400"),
    };
    let mut out = vec![
        (
            "401".to_owned(),
            error(plain, "No key, or a key that is unknown, revoked or expired"),
        ),
        (
            "429".to_owned(),
            error(
                plain,
                "The account's request rate is spent ([quotas] requests_per_second, burst); Retry-After says when to call again",
            ),
        ),
    ];
    if has_params {
        out.push((
            invalid_status.to_owned(),
            error(
                invalid,
                "A parameter or the body is invalid; the error names it",
            ),
        ));
    }
    if has_body {
        out.push((
            "413".to_owned(),
            error(plain, "The body is over this route's limit"),
        ));
        if surface == Surface::Definitions {
            out.push(("400".to_owned(), error(plain, "The body is not JSON")));
        }
    }
    if has_path_params {
        out.push((
            "404".to_owned(),
            error(plain, "No such resource in the caller's account"),
        ));
    }
    if surface == Surface::Vms {
        let responses = op.get("responses").and_then(|r| r.as_object());
        if responses.is_some_and(|r| r.contains_key("101")) {
            out.push((
                "400".to_owned(),
                error(plain, "Not a WebSocket upgrade request"),
            ));
        }
        const ROOT_SESSION_ROUTES: &[&str] = &[
            "/execute",
            "/execute_async",
            "/upload",
            "/download",
            "/kill",
        ];
        if path.contains("{vm_id}")
            || path.contains("{session_id}")
            || ROOT_SESSION_ROUTES.contains(&path)
        {
            out.push((
                "409".to_owned(),
                error(
                    plain,
                    "The VM is not in a state for this call (stopped, terminated, busy)",
                ),
            ));
        }
    }
    out
}

/// `create` in the `vms` tag becomes `vms_create`.
fn qualify_operation_id(op: &mut serde_json::Map<String, serde_json::Value>) {
    let tag = op
        .get("tags")
        .and_then(|t| t.get(0))
        .and_then(|t| t.as_str())
        .map(|t| t.replace('-', "_"));
    let id = op.get("operationId").and_then(|i| i.as_str());
    if let (Some(tag), Some(id)) = (tag, id) {
        if !id.starts_with(&format!("{tag}_")) {
            let qualified = format!("{tag}_{id}");
            op.insert("operationId".into(), serde_json::Value::String(qualified));
        }
    }
}
