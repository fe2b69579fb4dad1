//! Files in and out of a VM. InstaVM's `/upload` (multipart) and
//! `/download` (base64 JSON), and paddock's streamed
//! `GET`/`PUT /v1/vms/{vm_id}/files?path=`, which never hold a file in
//! memory.

use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use paddock_core::exec::{FileContent, PathOp, SandboxPath};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::dto::{DirectoryListing, FileEntry, FileQuery, FileWritten};
use super::error::{ApiError, ErrorDetail, HttpValidationError};
use super::extract::{Caller, ValidPath, ValidQuery};
use super::{session_id, vm_id};
use crate::AppState;

/// Where a relative `remote_path` lands.
const RELATIVE_BASE: &str = "/root";
/// `/download` answers in memory (base64 JSON); larger files must use the
/// streamed route.
const MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;

fn path_param(raw: &str, field: &[&str]) -> Result<SandboxPath, ApiError> {
    SandboxPath::parse(raw).map_err(|e| ApiError::field(field, e.0, "value_error"))
}

fn parse_mode(raw: Option<&str>) -> Result<Option<u32>, ApiError> {
    raw.map(|m| {
        u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ApiError::field(
                    &["query", "mode"],
                    "must be octal permission bits, like 644",
                    "value_error",
                )
            })
    })
    .transpose()
}

/// Read a file (streamed, `application/octet-stream`) or list a directory
/// (JSON).
#[utoipa::path(get, path = "/v1/vms/{vm_id}/files", tag = "files",
    params(("vm_id" = String, Path), FileQuery),
    responses((status = 200, description = "the file's bytes, or a DirectoryListing for a directory", body = DirectoryListing), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn get_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<FileQuery>,
) -> Result<Response, ApiError> {
    let id = vm_id(&raw)?;
    let path = path_param(&q.path, &["query", "path"])?;
    match state.vms().read_file(&account, &id, &path).await? {
        FileContent::Directory(entries) => Ok(Json(DirectoryListing {
            path: path.as_str().to_owned(),
            entries: entries.into_iter().map(FileEntry::from).collect(),
        })
        .into_response()),
        FileContent::File { size, mode, data } => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
                (
                    header::HeaderName::from_static("x-file-mode"),
                    format!("{mode:o}"),
                ),
            ],
            Body::from_stream(data),
        )
            .into_response()),
    }
}

/// Write a file from the request body, streamed; parent directories are
/// created; an interrupted upload leaves no partial file.
#[utoipa::path(put, path = "/v1/vms/{vm_id}/files", tag = "files",
    params(("vm_id" = String, Path), FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = FileWritten), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn put_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<FileQuery>,
    body: Body,
) -> Result<Json<FileWritten>, ApiError> {
    let id = vm_id(&raw)?;
    let path = path_param(&q.path, &["query", "path"])?;
    let mode = parse_mode(q.mode.as_deref())?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let size = state
        .vms()
        .write_file(&account, &id, &path, mode, Box::pin(stream))
        .await?;
    Ok(Json(FileWritten {
        path: path.as_str().to_owned(),
        size,
    }))
}

/// What a removal answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct FileRemoved {
    pub path: String,
    /// Always `true`: a path that is not there is a 404.
    pub removed: bool,
}

/// Remove a file, a symlink or a whole directory tree.
#[utoipa::path(delete, path = "/v1/vms/{vm_id}/files", tag = "files",
    params(("vm_id" = String, Path), FileQuery),
    responses((status = 200, body = FileRemoved), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn delete_file(
    State(state): State<AppState>,
    Caller(account): Caller,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(q): ValidQuery<FileQuery>,
) -> Result<Json<FileRemoved>, ApiError> {
    let id = vm_id(&raw)?;
    let path = path_param(&q.path, &["query", "path"])?;
    if path.as_str() == "/" {
        return Err(ApiError::field(
            &["query", "path"],
            "the root directory cannot be removed",
            "value_error",
        ));
    }
    // A missing path is the agent's not-found, a 404.
    state
        .vms()
        .path_op(&account, &id, PathOp::Remove(path.clone()))
        .await?;
    Ok(Json(FileRemoved {
        path: path.as_str().to_owned(),
        removed: true,
    }))
}

/// What InstaVM's `upload_file` reads back.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// Always `success`.
    pub status: String,
    pub remote_path: String,
    pub size: u64,
    pub session_id: String,
}

/// Upload a file into a session's VM (InstaVM's multipart form: `file`,
/// `remote_path`, `session_id`).
#[utoipa::path(post, path = "/upload", tag = "files",
    request_body(content_type = "multipart/form-data", description = "fields remote_path, session_id, file"),
    responses((status = 200, body = Uploaded), (status = 404, body = ErrorDetail), (status = 422, body = HttpValidationError)))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Caller(account): Caller,
    mut form: Multipart,
) -> Result<Json<Uploaded>, ApiError> {
    let bad_form = |e: axum::extract::multipart::MultipartError| {
        ApiError::field(&["body"], e.body_text(), "value_error")
    };
    let (mut remote_path, mut session) = (None::<String>, None::<String>);
    while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
        match field.name().unwrap_or("") {
            "remote_path" => remote_path = Some(field.text().await.map_err(bad_form)?),
            "session_id" => session = Some(field.text().await.map_err(bad_form)?),
            "file" => {
                let remote = remote_path.clone().ok_or_else(|| {
                    ApiError::field(
                        &["body", "remote_path"],
                        "Field required before the file",
                        "missing",
                    )
                })?;
                let sid = session.clone().ok_or_else(|| {
                    ApiError::field(
                        &["body", "session_id"],
                        "Field required before the file",
                        "missing",
                    )
                })?;
                let mut remote = remote;
                if remote.ends_with('/') {
                    let name = field
                        .file_name()
                        .and_then(|n| n.rsplit('/').next())
                        .unwrap_or("upload");
                    remote.push_str(name);
                }
                let path = SandboxPath::parse_relative_to(&remote, RELATIVE_BASE)
                    .map_err(|e| ApiError::body_field("remote_path", e.0))?;
                let vm = state
                    .vms()
                    .session_latest_vm(&account, &session_id(&sid)?)
                    .await?;
                let service = state.service.clone();
                let (acct, vm_id, p) = (account.clone(), vm.id.clone(), path.clone());
                let size = stream_field(&mut field, move |body| async move {
                    service
                        .vms()
                        .write_file(&acct, &vm_id, &p, None, body)
                        .await
                })
                .await?;
                return Ok(Json(Uploaded {
                    status: "success".to_owned(),
                    remote_path: path.as_str().to_owned(),
                    size,
                    session_id: vm.session_id.to_string(),
                }));
            }
            _ => {}
        }
    }
    Err(ApiError::field(
        &["body", "file"],
        "Field required",
        "missing",
    ))
}

/// Hands a multipart field's bytes to `write` as a stream while they
/// arrive (never the whole file in memory), and returns what it returns
/// once the field has ended. A field that breaks off ends the stream
/// with an error.
pub(crate) async fn stream_field<T, F, Fut>(
    field: &mut axum::extract::multipart::Field<'_>,
    write: F,
) -> Result<T, paddock_core::CoreError>
where
    F: FnOnce(paddock_core::exec::ByteStream) -> Fut,
    Fut: std::future::Future<Output = Result<T, paddock_core::CoreError>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let writer = tokio::spawn(write(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )));
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                break;
            }
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| paddock_core::CoreError::Unavailable(format!("the upload's writer: {e}")))?
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DownloadForm {
    filename: String,
    session_id: String,
}

/// Download a file from a session's VM as base64 JSON (InstaVM's
/// `/download`; form fields `filename`, `session_id`). Up to 256 MiB;
/// larger files stream from `GET /v1/vms/{vm_id}/files`.
#[utoipa::path(post, path = "/download", tag = "files",
    request_body(content = DownloadForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "{content (base64), filename, size}"), (status = 404, body = ErrorDetail), (status = 413, body = ErrorDetail)))]
pub(crate) async fn download(
    State(state): State<AppState>,
    Caller(account): Caller,
    form: Result<Form<DownloadForm>, axum::extract::rejection::FormRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Form(form) = form.map_err(|e| ApiError::field(&["body"], e.body_text(), "value_error"))?;
    let path = SandboxPath::parse_relative_to(&form.filename, RELATIVE_BASE)
        .map_err(|e| ApiError::body_field("filename", e.0))?;
    let vm = state
        .vms()
        .session_latest_vm(&account, &session_id(&form.session_id)?)
        .await?;
    match state.vms().read_file(&account, &vm.id, &path).await? {
        FileContent::Directory(_) => Err(ApiError::body_field(
            "filename",
            format!("{} is a directory", path.as_str()),
        )),
        FileContent::File { size, .. } if size > MAX_DOWNLOAD => Err(ApiError::Status(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} is larger than 256 MiB: use GET /v1/vms/{}/files",
                path.as_str(),
                vm.id
            ),
        )),
        FileContent::File { size, mut data, .. } => {
            let mut content = Vec::with_capacity(size as usize);
            while let Some(chunk) = data.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::Status(axum::http::StatusCode::BAD_GATEWAY, e.to_string())
                })?;
                content.extend_from_slice(&chunk);
            }
            Ok(Json(json!({
                "status": "success",
                "filename": path.as_str(),
                "size": content.len(),
                "content": base64::engine::general_purpose::STANDARD.encode(&content),
            })))
        }
    }
}
