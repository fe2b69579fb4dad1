//! Starting a template's VM (a run) and verifying a published template:
//! a VM from the template's snapshot, its runtime commands run in order,
//! its app started and its health path asked until it answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Empty;
use paddock_core::exec::ExecRequest;
use paddock_core::ids::{AccountId, SnapshotId, VaultId, VmId};
use paddock_core::model::{
    Env, Metadata, NewShare, Vm, VmFilter, VmOptions, VmSpec, VmStatus, VmStatusSet,
};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde_json::{json, Value};

use super::manifest::Manifest;
use super::{Template, TemplateStatus, Templates};

/// The metadata key that marks a VM as a template's devbox.
pub const MARK: &str = "paddock.devbox";

/// How long an app has to answer its health path.
const APP_READY: Duration = Duration::from_secs(60);

/// What a run asks for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Seconds, or a duration such as `30m`, `2h`, `1d`.
    pub vm_lifetime: Option<Value>,
    pub auto_suspend: Option<bool>,
    pub auto_resume: Option<bool>,
    pub vault_ids: Option<Vec<String>>,
    /// The devbox's name, unique among the account's running devboxes.
    pub name: Option<String>,
}

/// A started run.
#[derive(Debug)]
pub struct Run {
    pub template: Template,
    pub manifest: Manifest,
    pub vm: Vm,
    /// The app's share, when the template has an app.
    pub share: Option<NewShare>,
    /// Whether the app answered its health path.
    pub app_ready: bool,
}

/// The longest a run's VM lives: what `max` asks for.
const MAX_LIFETIME_SECONDS: u64 = 30 * 86_400;

/// A lifetime as the SDK and CLI give it: seconds (a number or its
/// digits), digits followed by `s`, `m`, `h` or `d`, or `max`.
pub fn lifetime(raw: &Value) -> Result<u64, CoreError> {
    let bad = || {
        CoreError::invalid(
            "vm_lifetime",
            "must be seconds, a duration such as 30m, 2h or 1d, or max (30 days)",
        )
    };
    if raw == "max" {
        return Ok(MAX_LIFETIME_SECONDS);
    }
    let seconds = match raw {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let (digits, unit) = match s.char_indices().last() {
                Some((at, c)) if c.is_ascii_alphabetic() => (&s[..at], c),
                _ => (s, 's'),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let scale = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            n.checked_mul(scale).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if seconds == 0 || seconds > MAX_LIFETIME_SECONDS {
        return Err(bad());
    }
    Ok(seconds)
}

fn shell(command: &str, cwd: Option<&str>) -> ExecRequest {
    ExecRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), command.to_owned()],
        env: Vec::new(),
        cwd: cwd.map(str::to_owned),
        stdin: None,
        stdin_stream: None,
        timeout: Some(Duration::from_secs(600)),
        started: None,
        user: None,
    }
}

/// Runs the manifest's `command` and `update` steps in order: the first
/// step that must succeed and does not, named with what it said.
async fn runtime_steps(
    core: &Service,
    account: &AccountId,
    vm: &VmId,
    m: &Manifest,
) -> Result<(), String> {
    for (i, step) in m.runtime.iter().enumerate() {
        let Some(command) = step
            .command
            .as_deref()
            .filter(|_| step.kind != "stage_secret")
        else {
            continue;
        };
        let name = step.name.clone().unwrap_or_else(|| format!("runtime[{i}]"));
        let out = core
            .vms()
            .exec_collect(account, vm, shell(command, m.terminal.cwd.as_deref()))
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if out.status.code != Some(0) && !step.optional {
            let said = String::from_utf8_lossy(&out.stderr);
            let tail: String = said
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{name} exited with {:?}: {}",
                out.status.code,
                tail.trim()
            ));
        }
    }
    Ok(())
}

/// Whether `GET path` on `port` inside the VM answers 2xx or 3xx.
async fn answers(core: &Service, account: &AccountId, vm: &VmId, port: u16, path: &str) -> bool {
    let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    let Ok(stream) = core.vms().connect_in_vm(account, vm, loopback, port).await else {
        return false;
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(io).await else {
        return false;
    };
    tokio::spawn(connection);
    let Ok(request) = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<bytes::Bytes>::new())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await,
        Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
    )
}

/// Starts the app (the terminal's command, in the background) and waits
/// for its health path; whether it answered.
async fn start_app(
    core: &Arc<Service>,
    account: &AccountId,
    vm: &VmId,
    m: &Manifest,
) -> Result<bool, CoreError> {
    let (Some(app), Some(command)) = (&m.app, m.terminal.command.as_deref()) else {
        return Ok(true);
    };
    core.vms()
        .start_background(account, vm, shell(command, m.terminal.cwd.as_deref()))
        .await?;
    let path = app.health_path.as_deref().unwrap_or("/");
    let deadline = Instant::now() + APP_READY;
    while Instant::now() < deadline {
        if answers(core, account, vm, app.port, path).await {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}

fn vm_spec(
    core: &Service,
    m: &Manifest,
    snapshot: SnapshotId,
    metadata: Metadata,
    lifetime: Option<u64>,
) -> Result<VmSpec, CoreError> {
    Ok(VmSpec {
        session_id: None,
        lifetime_seconds: lifetime,
        resources: core.vms().resources(
            m.vm.memory_mb.map(i64::from),
            m.vm.vcpus.map(i64::from),
            None,
        )?,
        metadata,
        env: Env::default(),
        image_variant: String::new(),
        options: VmOptions {
            snapshot_id: Some(snapshot),
            ..VmOptions::default()
        },
        volumes: Vec::new(),
        provider: None,
        placement: paddock_core::model::Placement::ThisNode,
    })
}

/// Verifies a template: its VM starts, its runtime commands succeed, its
/// app answers; the VM is deleted after, whatever happened.
pub(super) async fn verify(
    core: &Arc<Service>,
    account: &AccountId,
    m: &Manifest,
    snapshot: &SnapshotId,
) -> Result<(), String> {
    let mut metadata = Metadata::new();
    metadata.insert("paddock.template_verify".into(), json!(m.slug));
    let spec =
        vm_spec(core, m, snapshot.clone(), metadata, Some(900)).map_err(|e| e.to_string())?;
    let vm = core
        .vms()
        .create_vm(account, spec, true)
        .await
        .map_err(|e| format!("its VM could not be created: {e}"))?;
    let outcome = async {
        if vm.status != VmStatus::Running {
            return Err(format!(
                "its VM did not start: {}",
                vm.status_reason.clone().unwrap_or_default()
            ));
        }
        runtime_steps(core, account, &vm.id, m).await?;
        match start_app(core, account, &vm.id, m).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "its app did not answer on port {} within {} s",
                m.app.as_ref().map_or(0, |a| a.port),
                APP_READY.as_secs()
            )),
            Err(e) => Err(format!("its app could not start: {e}")),
        }
    }
    .await;
    let _ = core.vms().delete_vm(account, &vm.id).await;
    outcome
}

impl Templates {
    /// Starts template `slug` as a VM of the account: its runtime steps
    /// run, its app started and shared.
    pub async fn run(
        self: &Arc<Self>,
        account: &AccountId,
        slug: &str,
        request: RunRequest,
    ) -> Result<Run, CoreError> {
        let template = self.get(Some(account), slug).await?;
        if template.status != TemplateStatus::Active {
            return Err(CoreError::FailedPrecondition(format!(
                "template {slug} is {}; it runs once it is active",
                template.status.as_str()
            )));
        }
        let manifest = Manifest::parse(&template.manifest)?;
        let lifetime = request.vm_lifetime.as_ref().map(lifetime).transpose()?;
        let name = request.name.clone().filter(|n| !n.is_empty());
        if let Some(name) = &name {
            let ok = name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(CoreError::invalid(
                    "name",
                    "must be 1 to 63 letters, digits, '-', '_' or '.'",
                ));
            }
            if self.devbox_named(account, name).await?.is_some() {
                return Err(CoreError::Conflict(format!(
                    "a running devbox is already named {name}"
                )));
            }
        }
        let vault_ids = request
            .vault_ids
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|v| {
                v.parse::<VaultId>()
                    .map_err(|e| CoreError::invalid("vault_ids", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = self.snapshot_for(account, &template).await?;
        let mut metadata = Metadata::new();
        metadata.insert(
            MARK.to_owned(),
            json!({"name": name, "template_slug": template.id, "template_version": template.version}),
        );
        let mut spec = vm_spec(&self.core, &manifest, snapshot, metadata, lifetime)?;
        spec.options.vault_ids = vault_ids;
        spec.options.auto_suspend = request.auto_suspend.unwrap_or(false);
        spec.options.auto_resume = request.auto_resume.unwrap_or(false);
        let vms = self.core.vms();
        let vm = vms.create_vm(account, spec, true).await?;
        if vm.status != VmStatus::Running {
            let why = vm.status_reason.clone().unwrap_or_default();
            let _ = vms.delete_vm(account, &vm.id).await;
            return Err(CoreError::Unavailable(format!(
                "the template's VM did not start: {why}"
            )));
        }
        let started = async {
            runtime_steps(&self.core, account, &vm.id, &manifest)
                .await
                .map_err(|why| {
                    CoreError::FailedPrecondition(format!("a runtime step failed: {why}"))
                })?;
            let app_ready = start_app(&self.core, account, &vm.id, &manifest).await?;
            let share = match &manifest.app {
                Some(app) => Some(
                    vms.create_share(account, &vm.id, app.port, app.share == "public")
                        .await?,
                ),
                None => None,
            };
            Ok::<_, CoreError>((share, app_ready))
        }
        .await;
        match started {
            Ok((share, app_ready)) => Ok(Run {
                vm: vms.get_vm(account, &vm.id).await?,
                template,
                manifest,
                share,
                app_ready,
            }),
            Err(e) => {
                let _ = vms.delete_vm(account, &vm.id).await;
                Err(e)
            }
        }
    }

    /// The account's running devbox named `name`.
    async fn devbox_named(&self, account: &AccountId, name: &str) -> Result<Option<Vm>, CoreError> {
        let filter = VmFilter {
            statuses: VmStatusSet::of(&[
                VmStatus::Creating,
                VmStatus::Running,
                VmStatus::Suspended,
            ]),
            limit: 10_000,
            ..Default::default()
        };
        Ok(self
            .core
            .vms()
            .list_vms(account, &filter)
            .await?
            .into_iter()
            .find(|vm| vm.metadata.get(MARK).and_then(|m| m["name"].as_str()) == Some(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::lifetime;
    use serde_json::json;

    #[test]
    fn lifetimes_read_as_people_write_them() {
        assert_eq!(lifetime(&json!(3600)).expect("n"), 3600);
        assert_eq!(lifetime(&json!("90")).expect("s"), 90);
        assert_eq!(lifetime(&json!("30m")).expect("m"), 1800);
        assert_eq!(lifetime(&json!("2h")).expect("h"), 7200);
        assert_eq!(lifetime(&json!("1d")).expect("d"), 86_400);
        assert_eq!(lifetime(&json!("max")).expect("max"), 30 * 86_400);
        for bad in [
            json!(0),
            json!("2w"),
            json!("soon"),
            json!(-5),
            json!(true),
            json!("31d"),
        ] {
            assert!(lifetime(&bad).is_err(), "{bad}");
        }
    }
}
