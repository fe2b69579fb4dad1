//! envd's `filesystem.Filesystem` service: stat, list to a depth, make a
//! directory, move, remove, as JSON messages. Watching a directory is not
//! served yet (`unimplemented`, which the SDK surfaces as its own error).

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use paddock_e2b::{E2b, Entry, EntryKind, EnvdTarget};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, ConnectError};

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathRequest {
    path: String,
    depth: u32,
    source: String,
    destination: String,
}

/// An EntryInfo message.
pub fn entry_json(e: &Entry) -> Value {
    let kind = match e.kind {
        EntryKind::File => "FILE_TYPE_FILE",
        EntryKind::Directory => "FILE_TYPE_DIRECTORY",
        EntryKind::Symlink => "FILE_TYPE_SYMLINK",
        EntryKind::Other => "FILE_TYPE_UNSPECIFIED",
    };
    let mut v = json!({
        "name": e.name,
        "type": kind,
        "path": e.path,
        // int64 is a string in proto3's JSON.
        "size": e.size.to_string(),
        "mode": e.mode,
        "permissions": e.permissions(),
        "owner": e.owner,
        "group": e.group,
        "modifiedTime": paddock_core::clock::Timestamp::from_unix_millis(e.modified_unix * 1000).to_rfc3339(),
    });
    if let Some(t) = &e.symlink_target {
        v["symlinkTarget"] = json!(t);
    }
    v
}

/// Serves one call of the filesystem service; `user` is the SDK's
/// `username` (relative paths start at that user's home).
pub async fn call(
    e2b: &E2b,
    target: &EnvdTarget,
    method: &str,
    headers: &HeaderMap,
    user: Option<&str>,
    body: axum::body::Body,
) -> Response {
    let streaming = match connect::is_streaming(headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if streaming {
        return connect::stream_error(ConnectError::unimplemented(&format!(
            "filesystem.Filesystem/{method}"
        )));
    }
    let result = match axum::body::to_bytes(body, connect::MAX_MESSAGE).await {
        Ok(bytes) => match connect::unary_message(&bytes) {
            Ok(message) => unary_call(e2b, target, method, user, message).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(ConnectError::invalid(format!(
            "the request body could not be read: {e}"
        ))),
    };
    connect::unary(result)
}

async fn unary_call(
    e2b: &E2b,
    target: &EnvdTarget,
    method: &str,
    user: Option<&str>,
    message: Value,
) -> Result<Value, ConnectError> {
    let r: PathRequest =
        serde_json::from_value(message).map_err(|e| ConnectError::invalid(e.to_string()))?;
    let path = |raw: &str, field: &str| paddock_e2b::resolve_path(raw, user, field);
    match method {
        "Stat" => {
            let entry = e2b.stat(target, &path(&r.path, "path")?).await?;
            Ok(json!({ "entry": entry_json(&entry) }))
        }
        "ListDir" => {
            let entries = e2b
                .list_dir(target, &path(&r.path, "path")?, r.depth)
                .await?;
            let entries: Vec<Value> = entries.iter().map(entry_json).collect();
            Ok(json!({ "entries": entries }))
        }
        "MakeDir" => {
            let entry = e2b.make_dir(target, &path(&r.path, "path")?).await?;
            Ok(json!({ "entry": entry_json(&entry) }))
        }
        "Move" => {
            let from = path(&r.source, "source")?;
            let to = path(&r.destination, "destination")?;
            let entry = e2b.rename(target, &from, &to).await?;
            Ok(json!({ "entry": entry_json(&entry) }))
        }
        "Remove" => {
            e2b.remove(target, &path(&r.path, "path")?).await?;
            Ok(json!({}))
        }
        "CreateWatcher" | "GetWatcherEvents" | "RemoveWatcher" | "WatchDir" => Err(
            ConnectError::unimplemented(&format!("filesystem.Filesystem/{method}")),
        ),
        other => Err(ConnectError::new(
            "unimplemented",
            format!("filesystem.Filesystem/{other} does not exist"),
        )),
    }
}
