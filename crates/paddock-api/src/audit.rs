//! The audit layer: around every request of every surface, it notes who
//! called (the key the surface's auth extractor accepted, through a slot
//! in the request), and afterwards records an audit event for each
//! mutating call, each refused key, and each key's first call from an
//! address. What a call is (`vms.create`, `gateway.environments.connect`)
//! comes from the route it matched; bodies are never recorded, so no
//! secret can be; the query is dropped (a WebSocket client's key rides
//! there).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use paddock_core::clock::Timestamp;
use paddock_core::ids::AuditEventId;
use paddock_core::model::{AuditEvent, AuditStatus, Principal};
use paddock_core::service::error_chain;

use crate::AppState;

/// The caller an auth extractor accepted, for the audit layer.
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Option<Actor>>>);

#[derive(Clone, Debug)]
pub struct Actor {
    pub who: Principal,
    pub key_id: String,
}

impl AuditSlot {
    pub fn set(&self, actor: Actor) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(actor);
        }
    }

    fn take(&self) -> Option<Actor> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// The biggest JSON answer read back for the ids it names (a create's new
/// VM) or the message of an error.
const MAX_READ_BACK: usize = 64 * 1024;
const REQUEST_ID: &str = "x-request-id";

/// What a call was, from the route it matched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Classified {
    pub group: String,
    pub event_type: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub vm_id: Option<String>,
    pub session_id: Option<String>,
}

fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::PUT => "replace",
        Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => "read",
    }
}

/// The event a call to `template` (the route, `/v1/vms/{vm_id}`) on
/// `path` (the path called) is. The group is the surface's collection
/// (`vms`, `api-keys`; `gateway` and `definitions` for those surfaces);
/// the type is the group, the route's other fixed segments, and the
/// verb (`create`, `update`, `delete`, `replace`, or a gateway custom
/// method such as `connect`).
pub fn classify(method: &Method, template: &str, path: &str) -> Classified {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let values: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Classified::default();
    let mut statics: Vec<String> = Vec::new();
    let mut custom: Option<String> = None;
    for (i, part) in parts.iter().enumerate() {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.split_once('}')) {
            let (name, rest) = name;
            let value = values.get(i).copied().unwrap_or_default();
            // A gateway item segment carries its custom method after a
            // colon, in the value or the route itself.
            let (id, method) = match value.split_once(':') {
                Some((id, m)) if rest.is_empty() => (id, Some(m)),
                _ => (value, rest.strip_prefix(':')),
            };
            if let Some(m) = method {
                custom = Some(m.to_owned());
            }
            match name {
                "account_id" => {}
                "vm_id" => out.vm_id = Some(id.to_owned()),
                "session_id" => out.session_id = Some(id.to_owned()),
                _ => {}
            }
            if name != "account_id" {
                out.resource_type = Some(name.trim_end_matches("_id").to_owned());
                out.resource_id = Some(id.to_owned());
            }
        } else {
            match part.split_once(':') {
                Some((collection, m)) => {
                    statics.push(collection.to_owned());
                    custom = Some(m.to_owned());
                }
                None => statics.push((*part).to_owned()),
            }
        }
    }
    // `/v1/...` and `/api/v1/...`: the version is not part of the name.
    let statics: Vec<String> = statics
        .into_iter()
        .filter(|s| s != "v1" && s != "api")
        .collect();
    let (group, rest) = if template.starts_with("/v1/accounts/") {
        (
            "gateway".to_owned(),
            statics.get(1..).unwrap_or_default().to_vec(),
        )
    } else if template.starts_with("/api/v1/") {
        ("definitions".to_owned(), statics.clone())
    } else if parts.len() == 1 {
        // The session routes at the root: `/execute`, `/upload`, `/kill`.
        ("sessions".to_owned(), statics.clone())
    } else {
        match statics.split_first() {
            Some((g, rest)) => (g.clone(), rest.to_vec()),
            None => ("api".to_owned(), Vec::new()),
        }
    };
    let mut name = vec![group.clone()];
    name.extend(rest);
    name.push(custom.unwrap_or_else(|| verb(method).to_owned()));
    out.group = group;
    out.event_type = name.join(".");
    out
}

fn is_mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Each group's event types, from every mutating operation of the
/// OpenAPI document, and the auth events.
pub fn catalog() -> &'static std::collections::BTreeMap<String, Vec<String>> {
    static CATALOG: OnceLock<std::collections::BTreeMap<String, Vec<String>>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        out.insert(
            "auth".into(),
            vec!["auth.failure".into(), "auth.new_address".into()],
        );
        // Logins through the SSH gateway (`paddock-ssh`).
        out.insert("ssh".into(), vec!["ssh.login".into()]);
        let doc: serde_json::Value =
            serde_json::from_str(&crate::openapi::document_json()).unwrap_or_default();
        if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
            for (template, item) in paths {
                for method in item.as_object().map(|o| o.keys()).into_iter().flatten() {
                    let Ok(m) = method.to_ascii_uppercase().parse::<Method>() else {
                        continue;
                    };
                    if !is_mutating(&m) {
                        continue;
                    }
                    let c = classify(&m, template, template);
                    let types = out.entry(c.group).or_default();
                    if !types.contains(&c.event_type) {
                        types.push(c.event_type);
                    }
                }
            }
        }
        for types in out.values_mut() {
            types.sort();
        }
        out
    })
}

/// The message of an error answer in any surface's format.
fn error_message(body: &serde_json::Value) -> Option<String> {
    let text = match body {
        serde_json::Value::Object(m) => m
            .get("detail")
            .or_else(|| m.get("message"))
            .cloned()
            .or_else(|| body.pointer("/errors/0/detail").cloned()),
        _ => None,
    }?;
    let text = match text {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Some(text.chars().take(500).collect())
}

pub async fn layer(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // Another node's call through the internal endpoints is audited by
    // that node, which took the tenant's call it serves. A VM API call
    // it placed here is audited here, where the caller's key is checked,
    // from the address its client called that node from.
    let from_a_node = crate::internal::calling_node(&state, request.headers()).is_some();
    let placed = crate::vms::placement::placed_by_a_node(&state, request.headers());
    let address = placed
        .then(|| forwarded_client(request.headers()))
        .flatten()
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let presented = crate::auth::presented_in(request.headers(), request.uri());

    let response = next.run(request).await;
    if from_a_node
        || response
            .extensions()
            .get::<crate::vms::placement::Forwarded>()
            .is_some()
    {
        return response;
    }
    let status = response.status().as_u16();
    let mut actor = slot.take();
    let audit = state.service.audit();
    if status == 401 && actor.is_none() {
        // A refused key its account still knows (an expired one): the
        // refusal goes to that account's log.
        if let Some(key) = &presented {
            if let Ok(Some(known)) = state.service.accounts().identify(key).await {
                actor = Some(Actor {
                    who: Principal {
                        account_id: known.account_id,
                        user_email: known.user_email,
                    },
                    key_id: known.id.to_string(),
                });
            }
        }
    }

    if let Some(actor) = actor.as_ref().filter(|_| status != 401) {
        match audit.first_use_from(&actor.key_id, &address).await {
            Ok(true) => {
                let event = base_event(&actor_fields(Some(actor)), &address, &method, &path);
                let event = AuditEvent {
                    event_group: "auth".into(),
                    event_type: "auth.new_address".into(),
                    status: AuditStatus::Success,
                    request_id: request_id.clone().unwrap_or_else(new_request_id),
                    http_status: status,
                    ..event
                };
                write(audit, event).await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %error_chain(&e), "audit: note a key's address"),
        }
    }
    let refused_key = status == 401;
    if !(is_mutating(&method) || refused_key) {
        return response;
    }
    let (response, body) = read_back(response).await;
    let mut c = match &template {
        Some(t) => classify(&method, t, &path),
        None => Classified {
            group: "api".into(),
            event_type: format!("api.{}", verb(&method)),
            ..Classified::default()
        },
    };
    if refused_key {
        c.group = "auth".into();
        c.event_type = "auth.failure".into();
    }
    if let Some(body) = &body {
        let text = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if c.vm_id.is_none() {
            c.vm_id = text("vm_id");
        }
        if c.session_id.is_none() {
            c.session_id = text("session_id");
        }
        if c.resource_id.is_none() && status < 300 {
            c.resource_id = text("id")
                .or_else(|| text("vm_id"))
                .or_else(|| text("name"));
            c.resource_type = c.resource_id.as_ref().map(|_| c.group.clone());
        }
    }
    let response_id = response
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event = AuditEvent {
        event_group: c.group,
        event_type: c.event_type,
        status: AuditStatus::of_http(status),
        vm_id: c.vm_id,
        session_id: c.session_id,
        resource_type: c.resource_type,
        resource_id: c.resource_id,
        request_id: response_id.or(request_id).unwrap_or_else(new_request_id),
        http_status: status,
        error_message: (status >= 400)
            .then(|| body.as_ref().and_then(error_message))
            .flatten(),
        ..base_event(&actor_fields(actor.as_ref()), &address, &method, &path)
    };
    write(audit, event).await;
    response
}

/// The client address a node sent with a call it placed here.
fn forwarded_client(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(crate::vms::placement::CLIENT_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_string())
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

struct ActorFields {
    account_id: Option<paddock_core::ids::AccountId>,
    key_id: Option<String>,
    user_email: Option<String>,
}

fn actor_fields(actor: Option<&Actor>) -> ActorFields {
    ActorFields {
        account_id: actor.map(|a| a.who.account_id.clone()),
        key_id: actor.map(|a| a.key_id.clone()),
        user_email: actor.map(|a| a.who.user_email.clone()),
    }
}

fn base_event(actor: &ActorFields, address: &str, method: &Method, path: &str) -> AuditEvent {
    AuditEvent {
        id: AuditEventId::generate(),
        account_id: actor.account_id.clone(),
        created_at: Timestamp::now(),
        event_group: String::new(),
        event_type: String::new(),
        status: AuditStatus::Success,
        actor_key_id: actor.key_id.clone(),
        user_email: actor.user_email.clone(),
        vm_id: None,
        session_id: None,
        resource_type: None,
        resource_id: None,
        request_id: String::new(),
        source_address: address.to_owned(),
        method: method.to_string(),
        path: path.chars().take(1000).collect(),
        http_status: 0,
        error_message: None,
    }
}

async fn write(audit: &paddock_core::audit::Audit, event: AuditEvent) {
    let event_type = event.event_type.clone();
    if let Err(e) = audit.record(event).await {
        tracing::error!(error = %error_chain(&e), %event_type,
            "audit: an event could not be recorded");
    }
}

/// A small JSON answer read whole (it is in memory already) for what it
/// names, and rebuilt; any other answer passes untouched.
async fn read_back(response: Response) -> (Response, Option<serde_json::Value>) {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // A body built whole (a `Json` answer) knows its exact size; a
    // streamed one does not, and is never held here.
    let small = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .is_some_and(|n| n <= MAX_READ_BACK as u64);
    if !(is_json && small) {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, MAX_READ_BACK).await {
        Ok(bytes) => {
            let value = serde_json::from_slice(&bytes).ok();
            (Response::from_parts(parts, Body::from(bytes)), value)
        }
        // The body failed as it was read: the client would have seen
        // the same failure.
        Err(_) => (Response::from_parts(parts, Body::empty()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(method: Method, template: &str, path: &str) -> (String, String) {
        let c = classify(&method, template, path);
        (c.group, c.event_type)
    }

    #[test]
    fn calls_are_named_by_their_route() {
        let cases = [
            (Method::POST, "/v1/vms", "/v1/vms", "vms", "vms.create"),
            (
                Method::DELETE,
                "/v1/vms/{vm_id}",
                "/v1/vms/vm_1",
                "vms",
                "vms.delete",
            ),
            (
                Method::POST,
                "/v1/vms/{vm_id}/snapshot",
                "/v1/vms/vm_1/snapshot",
                "vms",
                "vms.snapshot.create",
            ),
            (
                Method::PATCH,
                "/v1/api-keys/{key_id}",
                "/v1/api-keys/key_1",
                "api-keys",
                "api-keys.update",
            ),
            (
                Method::POST,
                "/execute",
                "/execute",
                "sessions",
                "sessions.execute.create",
            ),
            (
                Method::POST,
                "/v1/accounts/{account_id}/environments/{environment_id}",
                "/v1/accounts/acct_1/environments/dev:connect",
                "gateway",
                "gateway.environments.connect",
            ),
            (
                Method::POST,
                "/v1/accounts/{account_id}/environments/{environment_id}:connect",
                "/v1/accounts/{account_id}/environments/{environment_id}:connect",
                "gateway",
                "gateway.environments.connect",
            ),
            (
                Method::POST,
                "/v1/accounts/{account_id}/nodePools:batchDelete",
                "/v1/accounts/acct_1/nodePools:batchDelete",
                "gateway",
                "gateway.nodePools.batchDelete",
            ),
            (
                Method::PUT,
                "/api/v1/environments/{id}",
                "/api/v1/environments/docker",
                "definitions",
                "definitions.environments.replace",
            ),
        ];
        for (method, template, path, group, event_type) in cases {
            assert_eq!(
                kind(method, template, path),
                (group.to_owned(), event_type.to_owned()),
                "{template}"
            );
        }
        let c = classify(&Method::DELETE, "/v1/vms/{vm_id}", "/v1/vms/vm_1");
        assert_eq!(c.vm_id.as_deref(), Some("vm_1"));
        assert_eq!(c.resource_type.as_deref(), Some("vm"));
        let c = classify(
            &Method::PATCH,
            "/v1/accounts/{account_id}/clusters/{cluster_id}",
            "/v1/accounts/acct_1/clusters/c1",
        );
        assert_eq!(c.resource_id.as_deref(), Some("c1"));
        assert_eq!(c.resource_type.as_deref(), Some("cluster"));
    }

    #[test]
    fn error_messages_are_read_in_each_surfaces_format() {
        for body in [
            serde_json::json!({"detail": "VM not found"}),
            serde_json::json!({"code": 5, "message": "VM not found"}),
            serde_json::json!({"errors": [{"detail": "VM not found"}]}),
        ] {
            assert_eq!(error_message(&body).as_deref(), Some("VM not found"));
        }
    }
}
