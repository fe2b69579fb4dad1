//! envd's `process.Process` service: its JSON messages read into the
//! product's process calls, and their events written back, with the
//! keepalives and deadline the client asked for.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use paddock_e2b::{
    E2b, EnvdTarget, ProcessConfig, ProcessEvent, ProcessSelector, ProcessStart, ProcessStream,
    PtySize,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{self, ConnectError};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireSize {
    cols: u32,
    rows: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WirePty {
    size: Option<WireSize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireSelector {
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireInput {
    stdin: Option<String>,
    pty: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StartRequest {
    process: Option<WireConfig>,
    pty: Option<WirePty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SelectorRequest {
    process: Option<WireSelector>,
    pty: Option<WirePty>,
    input: Option<WireInput>,
    signal: Option<Value>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ConnectError> {
    serde_json::from_value(v).map_err(|e| ConnectError::invalid(e.to_string()))
}

fn selector(s: Option<WireSelector>) -> Result<ProcessSelector, ConnectError> {
    match s {
        Some(WireSelector { pid: Some(pid), .. }) => Ok(ProcessSelector::Pid(pid)),
        Some(WireSelector { tag: Some(tag), .. }) => Ok(ProcessSelector::Tag(tag)),
        _ => Err(ConnectError::invalid("process: a pid or a tag is required")),
    }
}

fn size(p: Option<WirePty>, field: &str) -> Result<Option<PtySize>, ConnectError> {
    let Some(size) = p.and_then(|p| p.size) else {
        return Ok(None);
    };
    let dim = |n: u32, what: &str| {
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConnectError::invalid(format!("{field}.size.{what}: must be 1 to 65535"))
        })
    };
    Ok(Some(PtySize {
        cols: dim(size.cols, "cols")?,
        rows: dim(size.rows, "rows")?,
    }))
}

fn decode(b64: &str, field: &str) -> Result<Bytes, ConnectError> {
    B64.decode(b64)
        .map(Bytes::from)
        .map_err(|_| ConnectError::invalid(format!("{field}: not base64")))
}

/// A ProcessEvent message.
fn event_json(ev: &ProcessEvent) -> Value {
    match ev {
        ProcessEvent::Start { pid } => json!({ "start": { "pid": pid } }),
        ProcessEvent::Stdout(b) => json!({ "data": { "stdout": B64.encode(b) } }),
        ProcessEvent::Stderr(b) => json!({ "data": { "stderr": B64.encode(b) } }),
        ProcessEvent::Pty(b) => json!({ "data": { "pty": B64.encode(b) } }),
        ProcessEvent::End(end) => {
            let mut e = json!({
                "exitCode": end.exit_code,
                "exited": end.exited,
                "status": end.status,
            });
            if let Some(err) = &end.error {
                e["error"] = json!(err);
            }
            json!({ "end": e })
        }
    }
}

/// A server stream of a process's events, each as `{"event": …}`, ended
/// by the process's end; the client's deadline ends the stream, not the
/// process.
fn event_stream(events: ProcessStream, headers: &HeaderMap) -> Response {
    connect::server_stream(
        events,
        headers,
        connect::ServerStream {
            opening: None,
            message: |ev| {
                let last = matches!(ev, ProcessEvent::End(_));
                (json!({ "event": event_json(ev) }), last)
            },
            keepalive: json!({ "event": { "keepalive": {} } }),
            cut_short:
                "the process's stream ended before it did (the sandbox was paused or killed)",
            deadline_error: Some("the stream's deadline passed; the process goes on"),
        },
    )
}

/// Serves one call of the process service.
pub async fn call(
    e2b: &E2b,
    target: &EnvdTarget,
    method: &str,
    headers: &HeaderMap,
    user: Option<String>,
    body: axum::body::Body,
) -> Response {
    let streaming = match connect::is_streaming(headers) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    if method == "StreamInput" {
        return stream_input(e2b, target, body).await;
    }
    let bytes = match axum::body::to_bytes(body, connect::MAX_MESSAGE + 5).await {
        Ok(b) => b,
        Err(e) => {
            let e = ConnectError::invalid(format!("the request body could not be read: {e}"));
            return if streaming {
                connect::stream_error(e)
            } else {
                connect::unary(Err(e))
            };
        }
    };
    match method {
        "Start" | "Connect" => {
            let message = match connect::single_message(&bytes) {
                Ok(m) => m,
                Err(e) => return connect::stream_error(e),
            };
            let started = if method == "Start" {
                start(e2b, target, message, user).await
            } else {
                parse::<SelectorRequest>(message)
                    .and_then(|r| selector(r.process))
                    .and_then(|s| e2b.connect_process(target, &s).map_err(ConnectError::from))
                    .map(|(pid, stream)| (Some(pid), stream))
            };
            match started {
                Ok((pid, stream)) => {
                    let stream = match pid {
                        // A connection starts by naming what it joined.
                        Some(pid) => prepend_start(pid, stream),
                        None => stream,
                    };
                    event_stream(stream, headers)
                }
                Err(e) => connect::stream_error(e),
            }
        }
        _ => {
            let result = match connect::unary_message(&bytes) {
                Ok(message) => unary_call(e2b, target, method, message).await,
                Err(e) => Err(e),
            };
            connect::unary(result)
        }
    }
}

fn prepend_start(pid: u32, mut rest: ProcessStream) -> ProcessStream {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        if tx.send(ProcessEvent::Start { pid }).await.is_err() {
            return;
        }
        while let Some(ev) = rest.recv().await {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    rx
}

async fn start(
    e2b: &E2b,
    target: &EnvdTarget,
    message: Value,
    user: Option<String>,
) -> Result<(Option<u32>, ProcessStream), ConnectError> {
    let r: StartRequest = parse(message)?;
    let config = r
        .process
        .ok_or_else(|| ConnectError::invalid("process: required"))?;
    let start = ProcessStart {
        config: ProcessConfig {
            cmd: config.cmd,
            args: config.args,
            envs: config.envs,
            cwd: config.cwd.filter(|c| !c.is_empty()),
        },
        pty: size(r.pty, "pty")?,
        tag: r.tag,
        stdin: r.stdin.unwrap_or(false),
        user,
    };
    let stream = e2b.start_process(target, start).await?;
    Ok((None, stream))
}

async fn unary_call(
    e2b: &E2b,
    target: &EnvdTarget,
    method: &str,
    message: Value,
) -> Result<Value, ConnectError> {
    match method {
        "List" => {
            let processes: Vec<Value> = e2b
                .list_processes(target)
                .into_iter()
                .map(|p| {
                    let mut config = json!({
                        "cmd": p.config.cmd,
                        "args": p.config.args,
                        "envs": p.config.envs,
                    });
                    if let Some(cwd) = p.config.cwd {
                        config["cwd"] = json!(cwd);
                    }
                    let mut info = json!({ "config": config, "pid": p.pid });
                    if let Some(tag) = p.tag {
                        info["tag"] = json!(tag);
                    }
                    info
                })
                .collect();
            Ok(json!({ "processes": processes }))
        }
        "SendInput" => {
            let r: SelectorRequest = parse(message)?;
            let sel = selector(r.process)?;
            let (data, to_pty) = match r.input {
                Some(WireInput { pty: Some(p), .. }) => (decode(&p, "input.pty")?, true),
                Some(WireInput { stdin: Some(s), .. }) => (decode(&s, "input.stdin")?, false),
                _ => return Err(ConnectError::invalid("input: stdin or pty is required")),
            };
            e2b.send_input(target, &sel, data, to_pty).await?;
            Ok(json!({}))
        }
        "SendSignal" => {
            let r: SelectorRequest = parse(message)?;
            let sel = selector(r.process)?;
            let signal = match r.signal {
                Some(Value::String(s)) if s == "SIGNAL_SIGKILL" => 9,
                Some(Value::String(s)) if s == "SIGNAL_SIGTERM" => 15,
                Some(Value::Number(n)) if matches!(n.as_i64(), Some(9 | 15)) => {
                    n.as_i64().map_or(9, |n| n as i32)
                }
                _ => {
                    return Err(ConnectError::invalid(
                        "signal: SIGNAL_SIGKILL or SIGNAL_SIGTERM",
                    ))
                }
            };
            e2b.signal_process(target, &sel, signal).await?;
            Ok(json!({}))
        }
        "CloseStdin" => {
            let r: SelectorRequest = parse(message)?;
            e2b.close_stdin(target, &selector(r.process)?)?;
            Ok(json!({}))
        }
        "Update" => {
            let r: SelectorRequest = parse(message)?;
            let sel = selector(r.process)?;
            if let Some(size) = size(r.pty, "pty")? {
                e2b.resize_pty(target, &sel, size).await?;
            }
            Ok(json!({}))
        }
        other => Err(ConnectError::new(
            "unimplemented",
            format!("process.Process/{other} does not exist"),
        )),
    }
}

/// `StreamInput`: the client streams input to one process (its first
/// message names it); answered with one empty message when the client
/// ends its stream.
async fn stream_input(e2b: &E2b, target: &EnvdTarget, body: axum::body::Body) -> Response {
    use futures::StreamExt;
    let mut data = body.into_data_stream();
    let mut reader = connect::EnvelopeReader::default();
    let mut process: Option<ProcessSelector> = None;
    let outcome: Result<(), ConnectError> = async {
        loop {
            while let Some(message) = reader.next_message()? {
                if let Some(start) = message.get("start") {
                    let r: SelectorRequest = parse(start.clone())?;
                    process = Some(selector(r.process)?);
                } else if let Some(d) = message.get("data") {
                    let sel = process
                        .as_ref()
                        .ok_or_else(|| ConnectError::invalid("data before start"))?;
                    let input: WireInput = parse(d.get("input").cloned().unwrap_or(Value::Null))?;
                    let (bytes, to_pty) = match input {
                        WireInput { pty: Some(p), .. } => (decode(&p, "input.pty")?, true),
                        WireInput { stdin: Some(s), .. } => (decode(&s, "input.stdin")?, false),
                        _ => continue,
                    };
                    e2b.send_input(target, sel, bytes, to_pty).await?;
                }
            }
            match data.next().await {
                Some(Ok(chunk)) => reader.push(&chunk),
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        "canceled",
                        format!("the input stream broke: {e}"),
                    ))
                }
                None => return Ok(()),
            }
        }
    }
    .await;
    let frames = match outcome {
        Ok(()) => vec![
            connect::envelope(0, &json!({})),
            connect::end_of_stream(None),
        ],
        Err(e) => vec![connect::end_of_stream(Some(&e))],
    };
    connect::stream_response(futures::stream::iter(frames))
}
