//! The gateway surface's OpenAPI paths and schemas. Its handlers take a
//! whole path segment (`my-env:connect`) and render hand-built JSON, so
//! the document is built here from one table of its routes, and from the
//! same field lists the listing code uses; `openapi.json` drifts from
//! neither without a test failing.

use serde_json::{json, Map, Value};

use super::wire;

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn status_error() -> Value {
    json!({"description": "google.rpc.Status: {code, message, details}", "content": {"application/json": {"schema": reference("GatewayStatusError")}}})
}

fn ok(schema: Value) -> Value {
    json!({"description": "A successful response.", "content": {"application/json": {"schema": schema}}})
}

fn param(name: &str, location: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "description": description, "schema": {"type": kind}})
}

fn list_params() -> Vec<Value> {
    vec![
        param("pageSize", "query", "integer", "default 50, at most 200"),
        param("pageToken", "query", "string", "a previous nextPageToken"),
        param("filter", "query", "string", "AIP-160"),
        param(
            "orderBy",
            "query",
            "string",
            "fields, each optionally `desc`",
        ),
        param("readMask", "query", "string", "fields to return"),
    ]
}

fn operation(
    tag: &str,
    id: &str,
    summary: &str,
    params: Vec<Value>,
    body: Option<Value>,
    response: Value,
) -> Value {
    let mut op = json!({
        "tags": [tag],
        "operationId": id,
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": ok(response),
            "400": status_error(), "401": status_error(), "403": status_error(),
            "404": status_error(), "409": status_error(), "429": status_error(),
        },
    });
    if let Some(b) = body {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    op
}

/// One collection: its paths with their operations.
struct Collection<'a> {
    plural: &'a str,
    id_param: &'a str,
    schema: &'a str,
    /// The resource's name in operation ids: the schema's, but for dev
    /// environments, whose ids must not be the definitions API's.
    noun: &'a str,
    /// The create body's wrapper key (`environment`); `None`: a bare body.
    wrapper: Option<&'a str>,
    /// Item-level custom methods: (name, HTTP method, body schema).
    methods: &'a [(&'a str, &'a str, Option<&'a str>)],
    batch_delete: bool,
    patch: bool,
}

fn collection_paths(c: &Collection, paths: &mut Map<String, Value>) {
    let base = format!("/v1/accounts/{{account_id}}/{}", c.plural);
    let account = param("account_id", "path", "string", "the key's account");
    let id = param(c.id_param, "path", "string", "the resource id");
    let tag = c.plural;
    let create_body = match c.wrapper {
        Some(w) => json!({"type": "object", "required": [w, format!("{w}Id")],
            "properties": {w: reference(c.schema), format!("{w}Id"): {"type": "string"}}}),
        None => reference(c.schema),
    };
    let mut create_params = vec![account.clone()];
    if c.wrapper.is_none() && c.plural == "batchJobs" {
        create_params.push(param(
            "batchJobId",
            "query",
            "string",
            "the job's id; generated when absent",
        ));
    }
    let mut collection = Map::new();
    let list_response = json!({"type": "object", "properties": {
        c.plural: {"type": "array", "items": reference(c.schema)},
        "nextPageToken": {"type": "string"}, "totalSize": {"type": "integer"}}});
    collection.insert(
        "get".into(),
        operation(
            tag,
            &format!("list{}s", c.noun),
            &format!("List {}", c.plural),
            [vec![account.clone()], list_params()].concat(),
            None,
            list_response,
        ),
    );
    if c.plural != "snapshots" {
        collection.insert(
            "post".into(),
            operation(
                tag,
                &format!("create{}", c.noun),
                &format!("Create a {}", c.schema),
                create_params,
                Some(create_body),
                reference(c.schema),
            ),
        );
    }
    paths.insert(base.clone(), Value::Object(collection));

    let mut item = Map::new();
    let item_params = vec![account.clone(), id.clone()];
    item.insert(
        "get".into(),
        operation(
            tag,
            &format!("get{}", c.noun),
            &format!("Get a {}", c.schema),
            [
                item_params.clone(),
                vec![param("readMask", "query", "string", "fields to return")],
            ]
            .concat(),
            None,
            reference(c.schema),
        ),
    );
    if c.patch {
        item.insert(
            "patch".into(),
            operation(
                tag,
                &format!("update{}", c.noun),
                &format!("Update a {}", c.schema),
                [
                    item_params.clone(),
                    vec![param(
                        "updateMask",
                        "query",
                        "string",
                        "comma-separated fields to change (AIP-134); without it, the fields in the body",
                    )],
                ]
                .concat(),
                Some(reference(c.schema)),
                reference(c.schema),
            ),
        );
    }
    item.insert(
        "delete".into(),
        operation(
            tag,
            &format!("delete{}", c.noun),
            &format!("Delete a {}", c.schema),
            item_params.clone(),
            None,
            json!({"type": "object"}),
        ),
    );
    paths.insert(format!("{base}/{{{}}}", c.id_param), Value::Object(item));

    for (name, method, body) in c.methods {
        let response = match *name {
            "getStats" => reference("NodePoolStats"),
            "getLogs" => reference("BatchJobLogs"),
            "getConnectionInfo" => json!({"type": "object"}),
            _ => json!({"type": "object"}),
        };
        let params = if *name == "getLogs" {
            [
                item_params.clone(),
                vec![
                    param("pageSize", "query", "integer", "chunks, default 1000"),
                    param("pageToken", "query", "string", "a previous nextPageToken"),
                ],
            ]
            .concat()
        } else {
            item_params.clone()
        };
        let id = match name.strip_prefix("get") {
            Some(rest) => format!("get{}{rest}", c.noun),
            None => format!("{name}{}", c.noun),
        };
        let op = operation(tag, &id, name, params, body.map(reference), response);
        paths.insert(
            format!("{base}/{{{}}}:{name}", c.id_param),
            json!({ *method: op }),
        );
    }
    if c.batch_delete {
        let body = json!({"type": "object", "properties": {
            "names": {"type": "array", "items": {"type": "string"}},
            "ids": {"type": "array", "items": {"type": "string"}}}});
        paths.insert(
            format!("{base}:batchDelete"),
            json!({"post": operation(tag, &format!("batchDelete{}s", c.noun), "Delete several", vec![account], Some(body), json!({"type": "object"}))}),
        );
    }
}

/// Every wire field as a loose property; the documented types of the
/// common ones are set after.
fn object_schema(fields: &[&str], types: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    for f in fields {
        props.insert((*f).to_owned(), json!({}));
    }
    for (f, t) in types {
        props.insert((*f).to_owned(), t.clone());
    }
    json!({"type": "object", "properties": props})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time", "readOnly": true})
}

fn map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn schemas() -> Map<String, Value> {
    let status = reference("GatewayStatus");
    let mut s = Map::new();
    s.insert(
        "GatewayStatus".into(),
        json!({"type": "object", "properties": {
        "code": {"type": "string", "enum": ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
            "UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
            "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"]},
        "message": string()}}),
    );
    s.insert(
        "GatewayStatusError".into(),
        json!({"type": "object", "properties": {
        "code": {"type": "integer"}, "message": string(),
        "details": {"type": "array", "items": {"type": "object"}}}}),
    );
    s.insert(
        "EnvironmentConnection".into(),
        json!({"type": "object", "required": ["nodePoolId"], "properties": {
        "nodePoolId": string(), "numRanks": {"type": "integer", "default": 1},
        "role": string(), "zone": {"type": "string", "readOnly": true},
        "useLocalStorage": {"type": "boolean"}}}),
    );
    s.insert(
        "ConnectEnvironmentBody".into(),
        json!({"type": "object", "required": ["connection"], "properties": {
        "connection": reference("EnvironmentConnection"), "vscodeVersion": string()}}),
    );
    s.insert(
        "DisconnectEnvironmentBody".into(),
        json!({"type": "object", "properties": {
        "force": {"type": "boolean"}, "resetSnapshots": {"type": "boolean"}}}),
    );
    s.insert("Environment".into(), object_schema(wire::ENVIRONMENTS.fields, &[
        ("name", json!({"type": "string", "readOnly": true})),
        ("displayName", string()), ("baseImageRef", string()), ("shared", json!({"type": "boolean"})),
        ("annotations", map()), ("createTime", time()), ("updateTime", time()),
        ("state", json!({"type": "string", "readOnly": true, "enum": ["STATE_UNSPECIFIED", "CREATING",
            "DISCONNECTED", "CONNECTING", "CONNECTED", "DISCONNECTING", "RECONNECTING", "DELETING"]})),
        ("status", status.clone()), ("connection", reference("EnvironmentConnection")),
        ("vmId", json!({"type": "string", "readOnly": true, "description": "the connected sandbox, a VM of the VM API"})),
    ]));
    s.insert("Cluster".into(), object_schema(wire::CLUSTERS.fields, &[
        ("displayName", string()), ("createTime", time()), ("updateTime", time()),
        ("eksCluster", json!({"type": "object"})), ("fakeCluster", json!({"type": "object"})),
        ("state", json!({"type": "string", "enum": ["STATE_UNSPECIFIED", "CREATING", "READY", "DELETING", "FAILED"]})),
        ("status", status.clone()),
    ]));
    s.insert(
        "NodePoolStats".into(),
        json!({"type": "object", "properties": {
        "nodeCount": {"type": "integer"}, "ranksPerNode": {"type": "integer"},
        "environmentCount": {"type": "integer"}, "environmentRanks": {"type": "integer"},
        "batchJobCount": {"type": "object", "additionalProperties": {"type": "integer"}},
        "batchJobRanks": {"type": "object", "additionalProperties": {"type": "integer"}}}}),
    );
    s.insert(
        "NodePool".into(),
        object_schema(
            wire::NODE_POOLS.fields,
            &[
                ("displayName", string()),
                ("clusterId", json!({"type": "string", "description":
                    "paddock's: the cluster the pool belongs to (default `host`); set at creation"})),
                ("createTime", time()),
                ("updateTime", time()),
                ("minNodeCount", json!({"type": "integer"})),
                ("maxNodeCount", json!({"type": "integer"})),
                ("overprovisionNodeCount", json!({"type": "integer"})),
                ("annotations", map()),
                ("fakeNodePool", json!({"type": "object"})),
                ("eksNodePool", json!({"type": "object"})),
                (
                    "state",
                    json!({"type": "string", "enum": ["CREATING", "READY", "DELETING", "FAILED"]}),
                ),
                ("status", status.clone()),
                ("nodePoolStats", reference("NodePoolStats")),
            ],
        ),
    );
    s.insert("BatchJob".into(), object_schema(wire::BATCH_JOBS.fields, &[
        ("displayName", string()), ("nodePoolId", string()), ("environmentId", string()),
        ("snapshotId", string()), ("imageRef", string()), ("numRanks", json!({"type": "integer"})),
        ("envVars", map()), ("annotations", map()), ("shared", json!({"type": "boolean"})),
        ("shellExecutor", json!({"type": "object", "properties": {"command": string()}})),
        ("pythonExecutor", json!({"type": "object", "properties": {"targetType": string(), "target": string(),
            "args": {"type": "array", "items": string()}}})),
        ("notebookExecutor", json!({"type": "object", "properties": {"notebookFilename": string()}})),
        ("state", json!({"type": "string", "enum": ["STATE_UNSPECIFIED", "CREATING", "QUEUED", "PENDING",
            "RUNNING", "COMPLETED", "FAILED", "CANCELLING", "CANCELLED", "DELETING"]})),
        ("status", status.clone()),
        ("createTime", time()), ("startTime", time()), ("endTime", time()), ("updateTime", time()),
    ]));
    s.insert(
        "BatchJobLogs".into(),
        json!({"type": "object", "properties": {
        "logs": string(),
        "entries": {"type": "array", "items": {"type": "object", "properties": {
            "stream": string(), "text": string(), "time": time()}}},
        "nextPageToken": string()}}),
    );
    s.insert(
        "Snapshot".into(),
        object_schema(
            wire::SNAPSHOTS.fields,
            &[
                (
                    "state",
                    json!({"type": "string", "enum": ["CREATING", "READY", "FAILED"]}),
                ),
                ("status", status),
                ("createTime", time()),
                ("updateTime", time()),
                ("layerCount", json!({"type": "integer"})),
                ("sizeBytes", json!({"type": "integer"})),
            ],
        ),
    );
    s
}

/// Adds the gateway's paths and schemas to the document.
pub fn extend(doc: &mut Value) {
    let mut paths = Map::new();
    let collections = [
        Collection {
            plural: "clusters",
            id_param: "cluster_id",
            schema: "Cluster",
            noun: "Cluster",
            wrapper: Some("cluster"),
            methods: &[("getConnectionInfo", "get", None)],
            batch_delete: false,
            patch: true,
        },
        Collection {
            plural: "nodePools",
            id_param: "node_pool_id",
            schema: "NodePool",
            noun: "NodePool",
            wrapper: Some("nodePool"),
            methods: &[("getStats", "get", None)],
            batch_delete: true,
            patch: true,
        },
        Collection {
            plural: "environments",
            id_param: "environment_id",
            schema: "Environment",
            noun: "DevEnvironment",
            wrapper: Some("environment"),
            methods: &[
                ("connect", "post", Some("ConnectEnvironmentBody")),
                ("disconnect", "post", Some("DisconnectEnvironmentBody")),
            ],
            batch_delete: true,
            patch: true,
        },
        Collection {
            plural: "batchJobs",
            id_param: "batch_job_id",
            schema: "BatchJob",
            noun: "BatchJob",
            wrapper: None,
            methods: &[("cancel", "post", None), ("getLogs", "get", None)],
            batch_delete: true,
            patch: true,
        },
        Collection {
            plural: "snapshots",
            id_param: "snapshot_id",
            schema: "Snapshot",
            noun: "Snapshot",
            wrapper: None,
            methods: &[],
            batch_delete: false,
            patch: false,
        },
    ];
    for c in &collections {
        collection_paths(c, &mut paths);
    }
    crate::openapi::merge(doc, paths, schemas());
}
