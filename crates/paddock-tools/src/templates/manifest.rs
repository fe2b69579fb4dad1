//! A devbox template's manifest as the SDK sends it (`instavm.yaml`'s
//! `kind: devbox`, flattened by `TemplatesManager._manifest_payload`),
//! checked field by field.

use paddock_core::CoreError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BuildStep {
    pub name: String,
    pub command: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuntimeStep {
    /// `stage_secret`, `update` or `command`.
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub secrets: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Terminal {
    pub tmux_session: String,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct App {
    pub port: u16,
    #[serde(default)]
    pub health_path: Option<String>,
    /// `public` or `private`.
    #[serde(default = "private")]
    pub share: String,
    #[serde(default)]
    pub query: Option<String>,
}

fn private() -> String {
    "private".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shape {
    pub memory_mb: Option<u32>,
    pub vcpus: Option<u32>,
}

/// The fields of a manifest the server acts on; the whole manifest is
/// kept as sent beside them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub slug: String,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    pub vm: Shape,
    #[serde(default)]
    pub build: Vec<BuildStep>,
    #[serde(default)]
    pub runtime: Vec<RuntimeStep>,
    pub terminal: Terminal,
    #[serde(default)]
    pub app: Option<App>,
}

fn invalid(field: &str, message: impl Into<String>) -> CoreError {
    CoreError::invalid(format!("manifest.{field}"), message)
}

/// A slug: 1 to 63 lowercase letters, digits and dashes, starting with a
/// letter or digit.
pub fn check_slug(slug: &str) -> Result<(), String> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 63 lowercase letters, digits or '-', not starting with '-'".into())
    }
}

impl Manifest {
    /// Reads and checks `raw`, naming the first field that is wrong.
    pub fn parse(raw: &Value) -> Result<Self, CoreError> {
        if !raw.is_object() {
            return Err(CoreError::invalid("manifest", "must be an object"));
        }
        if let Some(kind) = raw.get("kind") {
            if kind != "devbox" {
                return Err(invalid("kind", "must be devbox"));
            }
        }
        let manifest: Manifest = serde_json::from_value(raw.clone()).map_err(|e| {
            CoreError::invalid("manifest", format!("is not a devbox manifest: {e}"))
        })?;
        check_slug(&manifest.slug).map_err(|m| invalid("slug", m))?;
        if manifest.name.trim().is_empty() || manifest.name.len() > 128 {
            return Err(invalid("name", "must be 1 to 128 characters"));
        }
        let version_ok = !manifest.version.is_empty()
            && manifest.version.len() <= 64
            && manifest
                .version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_+".contains(&b));
        if !version_ok {
            return Err(invalid(
                "version",
                "must be 1 to 64 letters, digits, '.', '-', '_' or '+'",
            ));
        }
        for (i, step) in manifest.runtime.iter().enumerate() {
            if !["stage_secret", "update", "command"].contains(&step.kind.as_str()) {
                return Err(invalid(
                    &format!("runtime[{i}].kind"),
                    "must be stage_secret, update or command",
                ));
            }
            if step.kind != "stage_secret" && step.command.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(&format!("runtime[{i}].command"), "is required"));
            }
        }
        if let Some(app) = &manifest.app {
            if app.port == 0 {
                return Err(invalid("app.port", "must be between 1 and 65535"));
            }
            if !["public", "private"].contains(&app.share.as_str()) {
                return Err(invalid("app.share", "must be public or private"));
            }
            if app
                .health_path
                .as_ref()
                .is_some_and(|p| !p.starts_with('/'))
            {
                return Err(invalid("app.health_path", "must start with '/'"));
            }
            if manifest
                .terminal
                .command
                .as_deref()
                .is_none_or(str::is_empty)
            {
                return Err(invalid(
                    "terminal.command",
                    "is required with an app: it is the app's command",
                ));
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "schema_version": 2, "kind": "devbox", "slug": "py-box", "name": "Py box",
            "version": "1.0.0", "audience": "devbox", "vm": {"memory_mb": 512, "vcpus": 1},
            "build": [{"name": "tools", "command": "true"}],
            "runtime": [{"kind": "command", "command": "true", "optional": false, "secrets": []}],
            "terminal": {"tmux_session": "main", "command": "bash", "cwd": "/root"},
            "app": null
        })
    }

    #[test]
    fn a_manifest_is_read_and_its_wrong_fields_named() {
        let m = Manifest::parse(&base()).expect("valid");
        assert_eq!((m.slug.as_str(), m.vm.memory_mb), ("py-box", Some(512)));
        let field = |edit: &dyn Fn(&mut Value)| {
            let mut v = base();
            edit(&mut v);
            match Manifest::parse(&v) {
                Err(CoreError::InvalidArgument { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(&|v| v["slug"] = json!("Py Box")), "manifest.slug");
        assert_eq!(field(&|v| v["kind"] = json!("service")), "manifest.kind");
        assert_eq!(field(&|v| v["version"] = json!("1 0")), "manifest.version");
        assert_eq!(
            field(&|v| v["runtime"][0]["kind"] = json!("x")),
            "manifest.runtime[0].kind"
        );
        assert_eq!(
            field(&|v| v["app"] = json!({"port": 8000, "share": "world"})),
            "manifest.app.share"
        );
        assert_eq!(field(&|v| v["terminal"] = json!(3)), "manifest");
    }
}
