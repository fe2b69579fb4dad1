//! The code interpreter's routes (port 49999 of an E2B sandbox, reached
//! through the sandbox URL): `POST /execute` streams E2B's output lines
//! (one JSON object per line), `/contexts` creates, lists, restarts and
//! removes code contexts.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paddock_e2b::{CodeContext, E2b, EnvdTarget, RunCode};
use serde::Deserialize;
use serde_json::json;

use super::RestError;

#[derive(Deserialize, Default)]
#[serde(default)]
struct ExecuteBody {
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContextBody {
    language: Option<String>,
    cwd: Option<String>,
}

fn context_json(c: &CodeContext) -> serde_json::Value {
    json!({ "id": c.id, "language": c.language, "cwd": c.cwd })
}

async fn body<T: serde::de::DeserializeOwned + Default>(request: Request) -> Result<T, RestError> {
    use axum::extract::FromRequest;
    Ok(super::extract::E2bJson::<T>::from_request(request, &())
        .await?
        .0)
}

pub async fn call(
    e2b: &E2b,
    target: &EnvdTarget,
    path: &str,
    request: Request,
) -> Result<Response, RestError> {
    let method = request.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["health"]) => Ok(StatusCode::NO_CONTENT.into_response()),
        (Method::POST, ["execute"]) => {
            let b: ExecuteBody = body(request).await?;
            let run = RunCode {
                code: b.code,
                context_id: b.context_id.filter(|c| !c.is_empty()),
                language: b.language.filter(|l| !l.is_empty()),
                env_vars: b.env_vars.unwrap_or_default(),
            };
            let lines = e2b.run_code(target, run).await?;
            use futures::StreamExt;
            let stream = tokio_stream::wrappers::ReceiverStream::new(lines)
                .map(|l| Ok::<_, std::convert::Infallible>(bytes::Bytes::from(format!("{l}\n"))));
            Ok((
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                Body::from_stream(stream),
            )
                .into_response())
        }
        (Method::POST, ["contexts"]) => {
            let b: ContextBody = body(request).await?;
            let made = e2b
                .create_code_context(target, b.language.as_deref(), b.cwd.as_deref())
                .await?;
            Ok(Json(context_json(&made)).into_response())
        }
        (Method::GET, ["contexts"]) => {
            let list: Vec<_> = e2b
                .list_code_contexts(target)
                .iter()
                .map(context_json)
                .collect();
            Ok(Json(list).into_response())
        }
        (Method::DELETE, ["contexts", id]) => {
            e2b.remove_code_context(target, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::POST, ["contexts", id, "restart"]) => {
            e2b.restart_code_context(target, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (m, _) => Err(RestError::new(
            StatusCode::NOT_FOUND,
            format!("the code interpreter has no route {m} {path}"),
        )),
    }
}
