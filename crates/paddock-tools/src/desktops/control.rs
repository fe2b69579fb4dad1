//! The desktop's control API: what `computer_use.get/post(…)` reaches.
//! Each action runs an X tool in the desktop (`ffmpeg`'s x11grab for a
//! screenshot, `xdotool` for the mouse and keyboard) through the agent,
//! with the arguments as argv (never a shell line).

use paddock_core::ids::{AccountId, VmId};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde_json::{json, Value};

use super::x_command;
use super::Recording;

/// The paths the control API serves, for an unknown path's answer.
pub const PATHS: &str = "GET screenshot, GET display, GET mouse, POST mouse/move {x, y}, \
POST mouse/click {x?, y?, button?, double?}, POST mouse/scroll {direction, amount?}, \
POST keyboard/type {text}, POST keyboard/key {keys}, POST recordings/start, POST recordings/stop";

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Screenshot,
    Display,
    MousePosition,
    MouseMove {
        x: u32,
        y: u32,
    },
    Click {
        at: Option<(u32, u32)>,
        button: u8,
        double: bool,
    },
    Scroll {
        up: bool,
        amount: u32,
    },
    Type {
        text: String,
    },
    Key {
        keys: Vec<String>,
    },
    StartRecording,
    StopRecording,
}

#[derive(Debug)]
pub enum ActionResult {
    Json(Value),
    Recording(Recording),
}

fn coordinate(body: &Value, field: &str) -> Result<u32, CoreError> {
    body[field]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v <= 16_384)
        .ok_or_else(|| CoreError::invalid(field, "must be a whole number of pixels, 0 to 16384"))
}

impl Action {
    /// The action `method path` with `body` names; `None` when the control
    /// API has no such path.
    pub fn parse(method: &str, path: &str, body: &Value) -> Result<Option<Self>, CoreError> {
        let path = path.trim_matches('/');
        Ok(Some(match (method, path) {
            ("GET", "screenshot") => Self::Screenshot,
            ("GET", "display") => Self::Display,
            ("GET", "mouse") => Self::MousePosition,
            ("POST", "mouse/move") => Self::MouseMove {
                x: coordinate(body, "x")?,
                y: coordinate(body, "y")?,
            },
            ("POST", "mouse/click") => {
                let at = match (body.get("x"), body.get("y")) {
                    (None, None) => None,
                    _ => Some((coordinate(body, "x")?, coordinate(body, "y")?)),
                };
                let button = match body["button"].as_str().unwrap_or("left") {
                    "left" => 1,
                    "middle" => 2,
                    "right" => 3,
                    _ => {
                        return Err(CoreError::invalid(
                            "button",
                            "must be left, middle or right",
                        ))
                    }
                };
                Self::Click {
                    at,
                    button,
                    double: body["double"].as_bool().unwrap_or(false),
                }
            }
            ("POST", "mouse/scroll") => {
                let up = match body["direction"].as_str() {
                    Some("up") => true,
                    Some("down") => false,
                    _ => return Err(CoreError::invalid("direction", "must be up or down")),
                };
                let amount = body["amount"].as_u64().unwrap_or(3);
                if !(1..=100).contains(&amount) {
                    return Err(CoreError::invalid("amount", "must be 1 to 100"));
                }
                Self::Scroll {
                    up,
                    amount: amount as u32,
                }
            }
            ("POST", "keyboard/type") => {
                let text = body["text"]
                    .as_str()
                    .filter(|t| !t.is_empty() && t.len() <= 10_000)
                    .ok_or_else(|| CoreError::invalid("text", "must be 1 to 10,000 characters"))?;
                Self::Type {
                    text: text.to_owned(),
                }
            }
            ("POST", "keyboard/key") => {
                let keys: Vec<String> = match &body["keys"] {
                    Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                };
                let valid = !keys.is_empty()
                    && keys.len() <= 32
                    && keys.iter().all(|k| {
                        !k.is_empty()
                            && k.len() <= 64
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+_-".contains(&b))
                    });
                if !valid {
                    return Err(CoreError::invalid(
                        "keys",
                        "must be 1 to 32 key names such as Return, ctrl+l or alt+Tab",
                    ));
                }
                Self::Key { keys }
            }
            ("POST", "recordings/start") => Self::StartRecording,
            ("POST", "recordings/stop") => Self::StopRecording,
            _ => return Ok(None),
        }))
    }
}

async fn run(
    core: &Service,
    account: &AccountId,
    vm: &VmId,
    argv: &[&str],
) -> Result<Vec<u8>, CoreError> {
    let out = core
        .vms()
        .exec_collect(account, vm, x_command(argv))
        .await?;
    if out.status.code != Some(0) {
        return Err(CoreError::Unavailable(format!(
            "{} failed in the desktop: {}",
            argv[0],
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout.to_vec())
}

pub(super) async fn act(
    core: &Service,
    account: &AccountId,
    vm: &VmId,
    (width, height): (u32, u32),
    action: Action,
) -> Result<ActionResult, CoreError> {
    use base64::Engine;
    let done = |extra: Value| {
        let mut v = json!({"success": true});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        Ok(ActionResult::Json(v))
    };
    match action {
        Action::Screenshot => {
            let size = format!("{width}x{height}");
            let png = run(
                core,
                account,
                vm,
                &[
                    "ffmpeg",
                    "-loglevel",
                    "error",
                    "-f",
                    "x11grab",
                    "-video_size",
                    &size,
                    "-i",
                    ":1",
                    "-frames:v",
                    "1",
                    "-f",
                    "image2pipe",
                    "-vcodec",
                    "png",
                    "-",
                ],
            )
            .await?;
            done(json!({
                "screenshot": base64::engine::general_purpose::STANDARD.encode(png),
                "format": "png", "width": width, "height": height,
            }))
        }
        Action::Display => done(json!({"width": width, "height": height, "display": ":1"})),
        Action::MousePosition => {
            let out = run(
                core,
                account,
                vm,
                &["xdotool", "getmouselocation", "--shell"],
            )
            .await?;
            let text = String::from_utf8_lossy(&out);
            let read = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .and_then(|v| v.trim().parse::<i64>().ok())
            };
            done(json!({"x": read("X"), "y": read("Y")}))
        }
        Action::MouseMove { x, y } => {
            run(
                core,
                account,
                vm,
                &["xdotool", "mousemove", &x.to_string(), &y.to_string()],
            )
            .await?;
            done(json!({"x": x, "y": y}))
        }
        Action::Click { at, button, double } => {
            let mut argv: Vec<String> = vec!["xdotool".into()];
            if let Some((x, y)) = at {
                argv.extend(["mousemove".into(), x.to_string(), y.to_string()]);
            }
            argv.push("click".into());
            if double {
                argv.extend(["--repeat".into(), "2".into()]);
            }
            argv.push(button.to_string());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            run(core, account, vm, &argv).await?;
            done(json!({"button": button, "double": double}))
        }
        Action::Scroll { up, amount } => {
            let button = if up { "4" } else { "5" };
            run(
                core,
                account,
                vm,
                &["xdotool", "click", "--repeat", &amount.to_string(), button],
            )
            .await?;
            done(json!({"direction": if up { "up" } else { "down" }, "amount": amount}))
        }
        Action::Type { text } => {
            run(
                core,
                account,
                vm,
                &["xdotool", "type", "--delay", "5", "--", &text],
            )
            .await?;
            done(json!({"typed": text.chars().count()}))
        }
        Action::Key { keys } => {
            let mut argv = vec!["xdotool", "key", "--"];
            argv.extend(keys.iter().map(String::as_str));
            run(core, account, vm, &argv).await?;
            done(json!({"keys": keys}))
        }
        Action::StartRecording | Action::StopRecording => Err(CoreError::FailedPrecondition(
            "recordings are the desktop's, not a control action".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_bodies_become_actions_or_name_the_field() {
        let parse = |m: &str, p: &str, b: Value| Action::parse(m, p, &b);
        assert_eq!(
            parse("GET", "/screenshot", json!({})).expect("ok"),
            Some(Action::Screenshot)
        );
        assert_eq!(
            parse(
                "POST",
                "mouse/click",
                json!({"x": 5, "y": 6, "button": "right"})
            )
            .expect("ok"),
            Some(Action::Click {
                at: Some((5, 6)),
                button: 3,
                double: false
            })
        );
        assert_eq!(
            parse("POST", "keyboard/key", json!({"keys": "ctrl+l Return"})).expect("ok"),
            Some(Action::Key {
                keys: vec!["ctrl+l".into(), "Return".into()]
            })
        );
        assert_eq!(parse("GET", "nothing", json!({})).expect("ok"), None);
        let field = |m: &str, p: &str, b: Value| match Action::parse(m, p, &b) {
            Err(CoreError::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field("POST", "mouse/move", json!({"x": -1, "y": 2})), "x");
        assert_eq!(
            field("POST", "mouse/click", json!({"button": "fourth"})),
            "button"
        );
        assert_eq!(
            field("POST", "keyboard/key", json!({"keys": "$(reboot)"})),
            "keys"
        );
        assert_eq!(
            field("POST", "mouse/scroll", json!({"direction": "left"})),
            "direction"
        );
    }
}
