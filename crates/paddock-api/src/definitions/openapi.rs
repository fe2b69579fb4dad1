//! The definitions surface's part of the OpenAPI document: its handlers'
//! annotations, over the types they take and return (the definition's
//! own types in `paddock-definitions`, `views.rs`). Definitions follow
//! the seed: `additionalProperties: false`, every setting required.

use serde_json::Value;
use utoipa::OpenApi;

use super::{environments, sandboxes};

#[derive(OpenApi)]
#[openapi(paths(
    environments::list,
    environments::create,
    environments::retrieve,
    environments::replace,
    environments::delete,
    sandboxes::list_of_environment,
    sandboxes::launch,
    sandboxes::retrieve_of_environment,
    sandboxes::delete_of_environment,
    sandboxes::list,
    sandboxes::retrieve,
    sandboxes::delete,
    sandboxes::stop,
    sandboxes::start,
    sandboxes::exec,
    sandboxes::read_file,
    sandboxes::write_file,
))]
pub struct DefinitionsDoc;

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

/// The document of this surface, as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(DefinitionsDoc::openapi()).unwrap_or_default();
    complete(&mut doc);
    doc
}

/// The types that flatten a definition's settings beside fields of their
/// own (`#[serde(flatten)]`).
const FLATTENED: &[&str] = &["Definition", "CreateEnvironmentRequest"];

/// Writes each flattened type as the one object it is on the wire. utoipa
/// renders serde's flatten as `allOf`, and under `allOf` the settings'
/// `additionalProperties: false` would refuse the fields beside them.
pub fn complete(doc: &mut Value) {
    let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    for name in FLATTENED {
        let Some(parts) = schemas
            .get(*name)
            .and_then(|s| s.get("allOf"))
            .and_then(Value::as_array)
            .cloned()
        else {
            continue;
        };
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        let mut closed = false;
        for part in &parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(r) => r
                    .strip_prefix("#/components/schemas/")
                    .and_then(|n| schemas.get(n))
                    .cloned()
                    .unwrap_or_default(),
                None => part.clone(),
            };
            if let Some(Value::Object(p)) = part.get("properties") {
                properties.extend(p.clone());
            }
            if let Some(Value::Array(r)) = part.get("required") {
                required.extend(r.iter().cloned());
            }
            closed |= part.get("additionalProperties") == Some(&Value::Bool(false));
        }
        let description = schemas[*name].get("description").cloned();
        let mut object = serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": !closed,
        });
        if let Some(d) = description {
            object["description"] = d;
        }
        schemas.insert((*name).to_owned(), object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let props = &schemas["Definition"]["properties"];
        // A nested settings object is a reference to its own schema.
        let resolve = |v: &Value| match v.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => v.clone(),
        };
        for (k, v) in value.as_object().expect("object") {
            assert!(props.get(k).is_some(), "{k} is missing from the schema");
            if let Value::Object(inner) = v {
                for ik in inner.keys() {
                    let nested = &resolve(&props[k])["properties"];
                    assert!(
                        nested.get(ik).is_some() || k == "labels" || k == "env",
                        "{k}.{ik} is missing"
                    );
                }
            }
        }
    }

    /// A body that leaves out a setting the schema requires is refused
    /// naming it: the two lists are one.
    #[test]
    fn the_required_settings_are_the_schemas() {
        let doc = document();
        let required = |schema: &str| -> Vec<String> {
            let mut r: Vec<String> = doc["components"]["schemas"][schema]["required"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            r.sort();
            r
        };
        let mut ours: Vec<String> = REQUIRED.iter().map(|s| s.to_string()).collect();
        ours.sort();
        assert_eq!(ours, required("DefinitionSpec"));
        for (parent, fields) in REQUIRED_INSIDE {
            let schema = match *parent {
                "network" => "NetworkSettings",
                "lifecycle" => "LifecycleSettings",
                other => panic!("no schema for {other}"),
            };
            for f in *fields {
                assert!(required(schema).contains(&f.to_string()), "{parent}.{f}");
            }
        }
        let spec = &doc["components"]["schemas"]["DefinitionSpec"];
        assert_eq!(spec["additionalProperties"], json!(false));
    }
}
