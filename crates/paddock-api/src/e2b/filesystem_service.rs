//! envd's `filesystem.Filesystem` service: stat, list to a depth, make a
//! directory, move, remove, and watch a directory (streamed, or polled
//! through a watcher), as JSON messages.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use paddock_core::exec::{PathChange, PathChangeKind};
use paddock_e2b::{E2b, Entry, EntryKind, EnvdTarget};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, ConnectError};

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PathRequest {
    path: String,
    depth: u32,
    source: String,
    destination: String,
    recursive: bool,
    watcher_id: String,
}

/// A FilesystemEvent message.
fn change_json(c: &PathChange) -> Value {
    let kind = match c.kind {
        PathChangeKind::Create => "EVENT_TYPE_CREATE",
        PathChangeKind::Write => "EVENT_TYPE_WRITE",
        PathChangeKind::Remove => "EVENT_TYPE_REMOVE",
        PathChangeKind::Rename => "EVENT_TYPE_RENAME",
        PathChangeKind::Chmod => "EVENT_TYPE_CHMOD",
    };
    json!({ "name": c.name, "type": kind })
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
        if method != "WatchDir" {
            return connect::stream_error(ConnectError::new(
                "unimplemented",
                format!("filesystem.Filesystem/{method} is not a stream"),
            ));
        }
        return watch_dir(e2b, target, headers, user, body).await;
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

/// `WatchDir`: a start message, then each change, with keepalives, until
/// the client goes or its deadline passes.
async fn watch_dir(
    e2b: &E2b,
    target: &EnvdTarget,
    headers: &HeaderMap,
    user: Option<&str>,
    body: axum::body::Body,
) -> Response {
    let opened = async {
        let bytes = axum::body::to_bytes(body, connect::MAX_MESSAGE + 5)
            .await
            .map_err(|e| {
                ConnectError::invalid(format!("the request body could not be read: {e}"))
            })?;
        let r: PathRequest = serde_json::from_value(connect::single_message(&bytes)?)
            .map_err(|e| ConnectError::invalid(e.to_string()))?;
        let path = paddock_e2b::resolve_path(&r.path, user, "path")?;
        Ok::<_, ConnectError>(e2b.watch_dir(target, &path, r.recursive).await?)
    }
    .await;
    let changes = match opened {
        Ok(c) => c,
        Err(e) => return connect::stream_error(e),
    };
    connect::server_stream(
        changes,
        headers,
        connect::ServerStream {
            opening: Some(json!({ "start": {} })),
            message: |change| (json!({ "filesystem": change_json(change) }), false),
            keepalive: json!({ "keepalive": {} }),
            cut_short: "the watch ended (the sandbox was paused or killed)",
            deadline_error: None,
        },
    )
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
        "CreateWatcher" => {
            let id = e2b
                .create_watcher(target, &path(&r.path, "path")?, r.recursive)
                .await?;
            Ok(json!({ "watcherId": id }))
        }
        "GetWatcherEvents" => {
            let events: Vec<Value> = e2b
                .watcher_events(target, &r.watcher_id)?
                .iter()
                .map(change_json)
                .collect();
            Ok(json!({ "events": events }))
        }
        "RemoveWatcher" => {
            e2b.remove_watcher(target, &r.watcher_id)?;
            Ok(json!({}))
        }
        other => Err(ConnectError::new(
            "unimplemented",
            format!("filesystem.Filesystem/{other} does not exist"),
        )),
    }
}
