//! The definitions surface's OpenAPI paths and schemas, built from one
//! table of its routes. The definition's schema follows the seed
//! (`additionalProperties: false`, every setting required); a unit test
//! checks it names every field the core's type serializes.

use serde_json::{json, Map, Value};

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

/// The settings of a definition, shared by create, replace and the
/// response.
fn settings() -> Map<String, Value> {
    let Value::Object(m) = json!({
        "provider": {"type": "string", "enum": ["local", "docker", "daytona", "container"]},
        "cwd": nullable("string"),
        "image": {"type": "object", "additionalProperties": false, "required": ["docker", "dockerfile"],
            "description": "Dockerfile sources are inline-only; local paths are rejected.",
            "properties": {
                "docker": nullable("string"),
                "dockerfile": {"type": ["object", "null"], "required": ["type", "value"],
                    "properties": {"type": {"type": "string", "enum": ["inline"]}, "value": {"type": "string"}}},
            }},
        "resources": {"type": "object", "additionalProperties": false, "required": ["cpu", "memory", "disk"],
            "properties": {
                "cpu": {"type": ["number", "string", "null"], "description": "cores: 2, 1.5 or 500m"},
                "memory": {"type": ["string", "null"], "description": "a quantity: 512Mi, 4Gi, 16GB"},
                "disk": {"type": ["string", "null"], "description": "a quantity"},
            }},
        "network": {"type": "object", "additionalProperties": false, "required": ["allow"],
            "properties": {
                "mode": {"type": "string", "enum": ["allow_all", "block", "cidr_allow_list"],
                    "description": "derived from allow when omitted: empty is block"},
                "allow": {"type": "array", "items": {"type": "string"}, "description": "IPv4 CIDRs and domain patterns"},
            }},
        "lifecycle": {"type": "object", "additionalProperties": false, "required": ["preserve", "stop_on_terminal", "auto_stop"],
            "properties": {
                "preserve": {"type": "boolean"},
                "stop_on_terminal": {"type": "boolean"},
                "auto_stop": {"type": ["string", "null"], "description": "an idle duration: 30m"},
            }},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "volumes": {"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["id", "mount_path"],
            "properties": {"id": {"type": "string"}, "mount_path": {"type": "string"}, "subpath": nullable("string")}}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    }) else {
        return Map::new();
    };
    m
}

/// The settings every definition body must hold (the seed's contract;
/// the server refuses a body without them, naming each).
pub(super) const REQUIRED: [&str; 8] = [
    "provider",
    "image",
    "resources",
    "network",
    "lifecycle",
    "labels",
    "volumes",
    "env",
];

/// Settings inside those that the server needs too; the others (the
/// image's two keys, every resource, `auto_stop`, `mode`) may be left out
/// or null: the server's defaults apply.
pub(super) const REQUIRED_INSIDE: &[(&str, &[&str])] = &[
    ("network", &["allow"]),
    ("lifecycle", &["preserve", "stop_on_terminal"]),
];

fn id_schema() -> Value {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$", "example": "docker"})
}

fn schemas() -> Map<String, Value> {
    let mut create = settings();
    create.insert("id".into(), id_schema());
    let mut definition = create.clone();
    definition.insert(
        "revision".into(),
        json!({"type": "string", "pattern": "^[0-9a-f]{64}$",
            "description": "sha256 of the canonical definition; send it back in If-Match"}),
    );
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        let mut r = extra.to_vec();
        r.extend(REQUIRED);
        r
    }
    let Value::Object(m) = json!({
        "EnvironmentDefinition": {"type": "object", "additionalProperties": false,
            "required": with(&["id", "revision"]), "properties": definition},
        "CreateEnvironmentRequest": {"type": "object", "additionalProperties": false,
            "required": with(&["id"]), "properties": create},
        "ReplaceEnvironmentRequest": {"type": "object", "additionalProperties": false,
            "required": with(&[]), "properties": settings()},
        "EnvironmentList": {"type": "object", "properties": {
            "data": {"type": "array", "items": reference("EnvironmentDefinition")},
            "meta": {"type": "object", "properties": {"total": {"type": "integer"}, "has_more": {"type": "boolean"},
                "limit": {"type": "integer"}, "offset": {"type": "integer"}}}}},
        "ErrorResponse": {"type": "object", "required": ["errors"], "properties": {
            "errors": {"type": "array", "items": {"type": "object", "required": ["status", "title", "detail"], "properties": {
                "status": {"type": "string"}, "title": {"type": "string"}, "detail": {"type": "string"},
                "code": {"type": "string"}, "request_id": {"type": "string"}}}},
            "request_id": {"type": "string"}}},
        "LaunchSandboxRequest": {"type": "object", "additionalProperties": false, "properties": {
            "command": {"description": "the main command: an argv list, or a string for /bin/sh -c",
                "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "DefinitionSandbox": {"type": "object", "properties": {
            "id": {"type": "string"}, "environment_id": {"type": "string"}, "environment_revision": {"type": "string"},
            "provider": {"type": "string"},
            "state": {"type": "string", "enum": ["starting", "running", "stopping", "stopped", "deleted", "failed"]},
            "state_reason": nullable("string"), "image": nullable("string"),
            "work_dir": {"type": "string", "description": "where commands start and relative file paths resolve"},
            "resources": {"type": "object", "properties": {"cpu": {"type": "number", "description": "CPUs; a fraction is a quota"}, "memory_mb": {"type": "integer"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "lifecycle": {"type": "object", "properties": {"preserve": {"type": "boolean"},
                "stop_on_terminal": {"type": "boolean"}, "auto_stop_seconds": nullable("integer")}},
            "command": {"type": ["object", "null"], "properties": {
                "argv": {"type": "array", "items": {"type": "string"}}, "execution_id": nullable("string"),
                "state": nullable("string"), "exit_code": nullable("integer"),
                "stdout": nullable("string"), "stderr": nullable("string")}},
            "created_at": {"type": "string"}, "started_at": nullable("string"), "stopped_at": nullable("string")}},
        "DefinitionSandboxList": {"type": "object", "properties": {
            "data": {"type": "array", "items": reference("DefinitionSandbox")},
            "meta": {"type": "object", "properties": {"total": {"type": "integer"}, "has_more": {"type": "boolean"}}}}},
        "SandboxExecRequest": {"type": "object", "additionalProperties": false, "required": ["command"], "properties": {
            "command": {"oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
            "cwd": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "stdin": {"type": "string"}, "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 3600}}},
        "SandboxExecResult": {"type": "object", "properties": {
            "exit_code": {"type": "integer"}, "stdout": {"type": "string"}, "stderr": {"type": "string"},
            "timed_out": {"type": "boolean"}, "truncated": {"type": "boolean"}, "duration_ms": {"type": "integer"}}},
    }) else {
        return Map::new();
    };
    m
}

fn error_responses(statuses: &[&str]) -> Map<String, Value> {
    statuses
        .iter()
        .map(|s| {
            (
                (*s).to_owned(),
                json!({"description": "ErrorResponse", "content": {"application/json": {"schema": reference("ErrorResponse")}}}),
            )
        })
        .collect()
}

/// One operation: its success status and body, request body, extra
/// parameters and error statuses.
struct Op<'a> {
    method: &'a str,
    summary: &'a str,
    id: &'a str,
    ok: (&'a str, Option<&'a str>),
    body: Option<&'a str>,
    if_match: bool,
    errors: &'a [&'a str],
}

fn operation(op: &Op, path_params: &[&str]) -> Value {
    let mut params: Vec<Value> = path_params
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if op.ok.1.is_some_and(|schema| schema.ends_with("List")) {
        params.push(json!({"name": "limit", "in": "query", "required": false,
            "description": "at most this many (default 50, at most 500); also `page[limit]`",
            "schema": {"type": "integer", "minimum": 1, "default": 50}}));
        params.push(json!({"name": "offset", "in": "query", "required": false,
            "description": "skip this many; also `page[offset]`",
            "schema": {"type": "integer", "minimum": 0, "default": 0}}));
    }
    if op.if_match {
        params.push(json!({"name": "If-Match", "in": "header", "required": true,
            "description": "the current revision (quoted or bare); missing is 428, stale is 409",
            "schema": {"type": "string"}}));
    }
    let mut responses = error_responses(op.errors);
    let ok = match op.ok.1 {
        Some(schema) => {
            json!({"description": "OK", "content": {"application/json": {"schema": reference(schema)}}})
        }
        None => json!({"description": "No content"}),
    };
    responses.insert(op.ok.0.to_owned(), ok);
    let mut v = json!({
        "tags": ["environment definitions"],
        "summary": op.summary,
        "operationId": op.id,
        "parameters": params,
        "responses": responses,
        "security": [{"bearer": []}],
    });
    if let Some(b) = op.body {
        v["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": reference(b)}}});
    }
    v
}

pub fn extend(doc: &mut Value) {
    const COMMON: &[&str] = &["401", "404", "422"];
    let table: Vec<(&str, Vec<Op>)> = vec![
        (
            "/api/v1/environments",
            vec![
                Op {
                    method: "get",
                    summary: "List environment definitions",
                    id: "listEnvironments",
                    ok: ("200", Some("EnvironmentList")),
                    body: None,
                    if_match: false,
                    errors: &["400", "401"],
                },
                Op {
                    method: "post",
                    summary: "Create an environment definition",
                    id: "createEnvironment",
                    ok: ("201", Some("EnvironmentDefinition")),
                    body: Some("CreateEnvironmentRequest"),
                    if_match: false,
                    errors: &["400", "401", "409", "422"],
                },
            ],
        ),
        (
            "/api/v1/environments/{id}",
            vec![
                Op {
                    method: "get",
                    summary: "Retrieve an environment definition",
                    id: "retrieveEnvironment",
                    ok: ("200", Some("EnvironmentDefinition")),
                    body: None,
                    if_match: false,
                    errors: &["400", "401", "404"],
                },
                Op {
                    method: "put",
                    summary: "Replace an environment definition",
                    id: "replaceEnvironment",
                    ok: ("200", Some("EnvironmentDefinition")),
                    body: Some("ReplaceEnvironmentRequest"),
                    if_match: true,
                    errors: &["400", "401", "404", "409", "422", "428"],
                },
                Op {
                    method: "delete",
                    summary: "Delete an environment definition",
                    id: "deleteEnvironment",
                    ok: ("204", None),
                    body: None,
                    if_match: true,
                    errors: &["400", "401", "404", "409", "428"],
                },
            ],
        ),
        (
            "/api/v1/environments/{id}/sandboxes",
            vec![
                Op {
                    method: "get",
                    summary: "List the definition's sandboxes",
                    id: "listEnvironmentSandboxes",
                    ok: ("200", Some("DefinitionSandboxList")),
                    body: None,
                    if_match: false,
                    errors: &["401", "404"],
                },
                Op {
                    method: "post",
                    summary: "Launch a sandbox from the definition",
                    id: "launchEnvironmentSandbox",
                    ok: ("201", Some("DefinitionSandbox")),
                    body: Some("LaunchSandboxRequest"),
                    if_match: false,
                    errors: &["401", "403", "404", "409", "422", "502", "503"],
                },
            ],
        ),
        (
            "/api/v1/environments/{id}/sandboxes/{sandbox_id}",
            vec![
                Op {
                    method: "get",
                    summary: "Retrieve one of the definition's sandboxes",
                    id: "retrieveEnvironmentSandbox",
                    ok: ("200", Some("DefinitionSandbox")),
                    body: None,
                    if_match: false,
                    errors: &["401", "404"],
                },
                Op {
                    method: "delete",
                    summary: "Delete one of the definition's sandboxes",
                    id: "deleteEnvironmentSandbox",
                    ok: ("204", None),
                    body: None,
                    if_match: false,
                    errors: &["401", "404"],
                },
            ],
        ),
        (
            "/api/v1/sandboxes",
            vec![Op {
                method: "get",
                summary: "List sandboxes launched from definitions",
                id: "listSandboxes",
                ok: ("200", Some("DefinitionSandboxList")),
                body: None,
                if_match: false,
                errors: &["400", "401"],
            }],
        ),
        (
            "/api/v1/sandboxes/{sandbox_id}",
            vec![
                Op {
                    method: "get",
                    summary: "Retrieve a sandbox",
                    id: "retrieveSandbox",
                    ok: ("200", Some("DefinitionSandbox")),
                    body: None,
                    if_match: false,
                    errors: &["401", "404"],
                },
                Op {
                    method: "delete",
                    summary: "Delete a sandbox and what it kept",
                    id: "deleteSandbox",
                    ok: ("204", None),
                    body: None,
                    if_match: false,
                    errors: &["401", "404"],
                },
            ],
        ),
        (
            "/api/v1/sandboxes/{sandbox_id}/stop",
            vec![Op {
                method: "post",
                summary: "Stop a sandbox (its files stay when the definition preserves them)",
                id: "stopSandbox",
                ok: ("200", Some("DefinitionSandbox")),
                body: None,
                if_match: false,
                errors: &["401", "404", "409"],
            }],
        ),
        (
            "/api/v1/sandboxes/{sandbox_id}/start",
            vec![Op {
                method: "post",
                summary: "Start a stopped sandbox",
                id: "startSandbox",
                ok: ("200", Some("DefinitionSandbox")),
                body: None,
                if_match: false,
                errors: &["401", "404", "409"],
            }],
        ),
        (
            "/api/v1/sandboxes/{sandbox_id}/exec",
            vec![Op {
                method: "post",
                summary: "Run a command to its end",
                id: "execSandbox",
                ok: ("200", Some("SandboxExecResult")),
                body: Some("SandboxExecRequest"),
                if_match: false,
                errors: &["401", "404", "409", "422"],
            }],
        ),
    ];
    let mut paths = Map::new();
    for (path, ops) in &table {
        let params: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let item: Map<String, Value> = ops
            .iter()
            .map(|op| (op.method.to_owned(), operation(op, &params)))
            .collect();
        paths.insert((*path).to_owned(), Value::Object(item));
    }
    let file_param = json!({"name": "path", "in": "query", "required": true, "description": "a path in the sandbox: absolute, or relative to its work_dir", "schema": {"type": "string"}});
    let id_param =
        json!({"name": "sandbox_id", "in": "path", "required": true, "schema": {"type": "string"}});
    let mut read = error_responses(COMMON);
    read.insert("200".into(), json!({"description": "the file's bytes, or a directory's entries", "content": {"application/octet-stream": {}}}));
    let mut write = error_responses(COMMON);
    write.insert("200".into(), json!({"description": "written", "content": {"application/json": {"schema": {"type": "object", "properties": {"path": {"type": "string"}, "bytes": {"type": "integer"}}}}}}));
    paths.insert(
        "/api/v1/sandboxes/{sandbox_id}/files".into(),
        json!({
            "get": {"tags": ["environment definitions"], "summary": "Read a file", "operationId": "readSandboxFile",
                "parameters": [id_param, file_param], "responses": read, "security": [{"bearer": []}]},
            "put": {"tags": ["environment definitions"], "summary": "Write a file (parents created)", "operationId": "writeSandboxFile",
                "parameters": [id_param, file_param],
                "requestBody": {"required": true, "content": {"application/octet-stream": {}}},
                "responses": write, "security": [{"bearer": []}]},
        }),
    );
    crate::openapi::merge(doc, paths, schemas());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_field_of_a_definition() {
        let spec: paddock_definitions::DefinitionSpec = serde_json::from_value(json!({
            "provider": "docker", "cwd": "/w",
            "image": {"docker": "busybox", "dockerfile": null},
            "resources": {"cpu": 1, "memory": "1Gi", "disk": "2Gi"},
            "network": {"mode": "block", "allow": []},
            "lifecycle": {"preserve": true, "stop_on_terminal": true, "auto_stop": "30m"},
            "labels": {}, "volumes": [{"id": "v", "mount_path": "/m", "subpath": "s"}], "env": {}
        }))
        .expect("spec");
        let def = paddock_definitions::Definition {
            id: "x".into(),
            revision: "0".repeat(64),
            spec,
        };
        let value = serde_json::to_value(&def).expect("json");
        let schema = Value::Object(schemas());
        let props = &schema["EnvironmentDefinition"]["properties"];
        for (k, v) in value.as_object().expect("object") {
            assert!(props.get(k).is_some(), "{k} is missing from the schema");
            if let Value::Object(inner) = v {
                for ik in inner.keys() {
                    let nested = &props[k]["properties"];
                    assert!(
                        nested.get(ik).is_some() || k == "labels" || k == "env",
                        "{k}.{ik} is missing"
                    );
                }
            }
        }
    }
}
