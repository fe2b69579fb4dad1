//! The gateway surface's part of the OpenAPI document. Its operations are
//! the handlers' annotations, its schemas the types they take and return
//! (`wire.rs`, `views.rs`); what is added here holds for every operation
//! of the surface, or follows from how read masks work.

use serde_json::{json, Value};
use utoipa::OpenApi;

use super::{batch_jobs, clusters, environments, node_pools, snapshots, views};

#[derive(OpenApi)]
#[openapi(
    paths(
        clusters::list,
        clusters::create,
        clusters::get,
        clusters::update,
        clusters::delete,
        clusters::get_connection_info,
        node_pools::list,
        node_pools::create,
        node_pools::get,
        node_pools::update,
        node_pools::delete,
        node_pools::get_stats,
        node_pools::batch_delete,
        environments::list,
        environments::create,
        environments::get,
        environments::update,
        environments::delete,
        environments::connect,
        environments::disconnect,
        environments::batch_delete,
        batch_jobs::list,
        batch_jobs::create,
        batch_jobs::get,
        batch_jobs::update,
        batch_jobs::delete,
        batch_jobs::cancel,
        batch_jobs::logs,
        batch_jobs::batch_delete,
        snapshots::list,
        snapshots::get,
        snapshots::delete,
    ),
    components(schemas(views::StatusError))
)]
pub struct GatewayDoc;

/// The schemas a read mask can cut down to any subset of their fields,
/// nested ones included: none of their fields is required.
const MASKED: &[&str] = &[
    "Cluster",
    "NodePool",
    "NodePoolStats",
    "Environment",
    "EnvironmentConnection",
    "Snapshot",
    "BatchJob",
    "GatewayStatus",
];

/// Statuses any gateway operation can answer (google.rpc.Status bodies):
/// a bad argument or precondition, a denied call, an unknown resource, a
/// conflict.
const COMMON: &[&str] = &["400", "403", "404", "409"];

/// Adds the surface's common error statuses to each of its operations and
/// frees the masked schemas' fields.
pub fn complete(doc: &mut Value) {
    if let Some(Value::Object(paths)) = doc.get_mut("paths") {
        let gateway = paths
            .iter_mut()
            .filter(|(path, _)| path.starts_with("/v1/accounts/"));
        for (_, item) in gateway {
            let Value::Object(ops) = item else { continue };
            for op in ops.values_mut() {
                let Some(Value::Object(responses)) = op.get_mut("responses") else {
                    continue;
                };
                for status in COMMON {
                    responses.entry(*status).or_insert_with(|| {
                        json!({"description": "google.rpc.Status: {code, message, details}",
                            "content": {"application/json": {"schema":
                                {"$ref": "#/components/schemas/GatewayStatusError"}}}})
                    });
                }
            }
        }
    }
    if let Some(Value::Object(schemas)) = doc.pointer_mut("/components/schemas") {
        for name in MASKED {
            if let Some(Value::Object(schema)) = schemas.get_mut(*name) {
                schema.remove("required");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire;

    fn properties(doc: &Value, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Filters, orders and read masks name the fields a listing declares;
    /// they must be the fields its view serializes.
    #[test]
    fn each_listing_names_exactly_its_views_fields() {
        let doc = serde_json::to_value(GatewayDoc::openapi()).expect("document");
        for (listing, schema) in [
            (&wire::CLUSTERS, "Cluster"),
            (&wire::NODE_POOLS, "NodePool"),
            (&wire::ENVIRONMENTS, "Environment"),
            (&wire::SNAPSHOTS, "Snapshot"),
            (&wire::BATCH_JOBS, "BatchJob"),
        ] {
            let mut fields: Vec<String> = listing.fields.iter().map(|f| f.to_string()).collect();
            fields.sort();
            assert_eq!(fields, properties(&doc, schema), "{schema}");
        }
    }

    #[test]
    fn masked_schemas_require_nothing_and_errors_are_listed() {
        let mut doc = serde_json::to_value(GatewayDoc::openapi()).expect("document");
        complete(&mut doc);
        for name in MASKED {
            let schema = &doc["components"]["schemas"][*name];
            assert!(schema.is_object(), "{name} is in the document");
            assert!(schema.get("required").is_none(), "{name}");
        }
        let op = &doc["paths"]["/v1/accounts/{account_id}/clusters/{cluster_id}"]["get"];
        for status in ["200", "400", "403", "404", "409"] {
            assert!(op["responses"].get(status).is_some(), "{status}");
        }
    }
}
