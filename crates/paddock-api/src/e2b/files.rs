//! envd's REST file routes: `GET /files` downloads a file, `POST /files`
//! uploads one (`application/octet-stream`, the path in the query) or
//! several (`multipart/form-data`, each part's filename its path);
//! parents are made, and an interrupted upload leaves no partial file.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use paddock_core::exec::FileContent;
use paddock_e2b::{E2b, Entry, EntryKind, EnvdTarget};
use serde_json::json;

use super::RestError;

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct FileQuery {
    path: Option<String>,
    username: Option<String>,
}

impl FileQuery {
    pub fn parse(uri: &axum::http::Uri) -> Result<Self, RestError> {
        axum::extract::Query::<Self>::try_from_uri(uri)
            .map(|q| q.0)
            .map_err(|e| {
                RestError::new(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text()))
            })
    }

    fn user(&self) -> Option<&str> {
        self.username.as_deref().filter(|u| !u.is_empty())
    }
}

fn written(e: &Entry) -> serde_json::Value {
    let kind = match e.kind {
        EntryKind::Directory => "dir",
        _ => "file",
    };
    json!({ "name": e.name, "type": kind, "path": e.path })
}

pub async fn download(e2b: &E2b, target: &EnvdTarget, q: FileQuery) -> Result<Response, RestError> {
    let raw = q
        .path
        .as_deref()
        .ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "path: required"))?;
    let path = paddock_e2b::resolve_path(raw, q.user(), "path")?;
    match e2b.read_file(target, &path).await? {
        FileContent::Directory(_) => Err(RestError::new(
            StatusCode::BAD_REQUEST,
            format!("{} is a directory", path.as_str()),
        )),
        FileContent::File { size, data, .. } => Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            Body::from_stream(data),
        )
            .into_response()),
    }
}

pub async fn upload(
    e2b: &Arc<E2b>,
    target: &EnvdTarget,
    q: FileQuery,
    request: Request,
) -> Result<Response, RestError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if request.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(RestError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed uploads are not supported; send the file uncompressed",
        ));
    }
    let mut entries = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| RestError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let bad = |e: axum::extract::multipart::MultipartError| {
            RestError::new(StatusCode::BAD_REQUEST, format!("multipart: {e}"))
        };
        let mut parts = 0usize;
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            parts += 1;
            // One file: the query may name it; several: each part's
            // filename is its path.
            let raw = match (field.file_name(), q.path.as_deref()) {
                (_, Some(p)) if parts == 1 => p.to_owned(),
                (Some(name), _) => name.to_owned(),
                (None, _) => {
                    return Err(RestError::new(
                        StatusCode::BAD_REQUEST,
                        "a part names no file: give it a filename or the query a path",
                    ))
                }
            };
            let path = paddock_e2b::resolve_path(&raw, q.user(), "path")?;
            let e2b = Arc::clone(e2b);
            let target = target.clone();
            let entry = crate::vms::files::stream_field(&mut field, move |body| async move {
                e2b.write_file(&target, &path, body).await
            })
            .await?;
            entries.push(written(&entry));
        }
        if entries.is_empty() {
            return Err(RestError::new(
                StatusCode::BAD_REQUEST,
                "the form holds no file",
            ));
        }
    } else {
        let raw = q
            .path
            .as_deref()
            .ok_or_else(|| RestError::new(StatusCode::BAD_REQUEST, "path: required"))?;
        let path = paddock_e2b::resolve_path(raw, q.user(), "path")?;
        let body = request
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        let entry = e2b.write_file(target, &path, Box::pin(body)).await?;
        entries.push(written(&entry));
    }
    Ok(axum::Json(entries).into_response())
}
