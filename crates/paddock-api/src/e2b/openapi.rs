//! The E2B surface's part of the OpenAPI document: its control plane
//! (sandboxes and templates). envd's routes (Connect-RPC and `/files`,
//! under `/e2b/sandbox`) follow E2B's own protocol documents and are not
//! repeated here.

use utoipa::OpenApi;

use super::{control, templates, views};

#[derive(OpenApi)]
#[openapi(
    paths(
        control::create_v1,
        control::create_v2,
        control::list_v1,
        control::list_v2,
        control::get_sandbox,
        control::kill,
        control::set_timeout,
        control::refresh,
        control::pause,
        control::connect,
        control::connect_v2,
        control::resume,
        control::metrics,
        control::snapshot,
        control::snapshots,
        templates::request_build,
        templates::start_build,
        templates::build_status,
        templates::files,
        templates::list,
        templates::list_v2,
        templates::get,
        templates::alias,
        templates::delete,
    ),
    components(schemas(views::E2bError))
)]
pub struct E2bDoc;
