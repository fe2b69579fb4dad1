//! E2B's templates over paddock's image builder: a template is a named
//! image an account builds from the SDK's steps (`FROM`, `RUN`, `ENV`,
//! `WORKDIR`, `USER`), translated into an inline Dockerfile that the
//! core builds in paddock's own sandboxes, with the build's log kept for
//! the SDK to poll. A sandbox created from the template's name runs its
//! image, then its start command (in the background), and is answered
//! once its ready command succeeds.
//!
//! Templates are documents in the core's store; a build's log lives in
//! the server's memory (a restart keeps the template and its status, not
//! the log). `COPY` steps take the files the SDK uploaded (`uploads.rs`)
//! as the build's context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::Resource;
use paddock_core::service::Service;
use serde::{Deserialize, Serialize};

use crate::E2b;

const KIND: &str = "e2b_template";
/// Log lines one build keeps (the oldest go first).
const MAX_LOG_LINES: usize = 20_000;
/// How long a sandbox's ready command has to succeed.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
/// The SDK's default base image, and E2B's base templates: paddock's
/// default image variant stands for them.
const DEFAULT_BASES: [&str; 3] = ["e2bdev/base", "base", "code-interpreter-v1"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Waiting,
    Building,
    Ready,
    Error,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Building => "building",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }
}

/// A template as its document keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    pub account_id: AccountId,
    pub name: String,
    pub tags: Vec<String>,
    pub cpu_count: u32,
    pub memory_mb: u32,
    /// The latest build.
    pub build_id: String,
    pub build_count: u32,
    pub status: BuildStatus,
    /// Why the latest build failed.
    pub reason: Option<String>,
    /// The image the last ready build made.
    pub image: Option<String>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

impl Resource for Template {
    const KIND: &'static str = KIND;
    fn id(&self) -> &str {
        &self.id
    }
    fn account_id(&self) -> &AccountId {
        &self.account_id
    }
    fn created_at(&self) -> Timestamp {
        self.create_time
    }
    fn updated_at(&self) -> Timestamp {
        self.update_time
    }
    fn state_name(&self) -> &'static str {
        self.status.as_str()
    }
}

/// One step of a build, as the SDK sends it.
#[derive(Debug, Clone, Default)]
pub struct BuildStep {
    pub kind: String,
    pub args: Vec<String>,
    pub files_hash: Option<String>,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    pub from_image: Option<String>,
    pub from_template: Option<String>,
    pub steps: Vec<BuildStep>,
    pub start_cmd: Option<String>,
    pub ready_cmd: Option<String>,
}

/// A line of a build's log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: Timestamp,
    pub level: &'static str,
    pub message: String,
}

/// Builds' logs, by build id.
#[derive(Default)]
pub(crate) struct BuildLogs(SyncMutex<HashMap<String, Vec<LogLine>>>);

impl BuildLogs {
    fn push(&self, build: &str, level: &'static str, message: impl Into<String>) {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let log = all.entry(build.to_owned()).or_default();
        if log.len() >= MAX_LOG_LINES {
            log.remove(0);
        }
        log.push(LogLine {
            at: Timestamp::now(),
            level,
            message: message.into(),
        });
    }

    fn from(&self, build: &str, offset: usize, limit: usize) -> Vec<LogLine> {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.get(build)
            .map(|l| l.iter().skip(offset).take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

fn random_id(prefix: &str) -> String {
    // Ids of the core's kind: lowercase letters and digits.
    let vm = paddock_core::ids::VmId::generate();
    format!("{prefix}{}", &vm.as_str()[3..])
}

fn check_name(name: &str) -> Result<(), CoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(
            "name",
            format!("{name:?}: 1 to 128 of a-z, 0-9, '-', '_' and '.'"),
        ))
    }
}

/// Quotes a value for the Dockerfile's `ARG k=v` form.
fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The inline Dockerfile of a build: its base, then each step. The
/// SDK's variables are build-time only (E2B's `set_envs`), so they are
/// `ARG`s; a `RUN` with a user of its own runs as that user and the
/// user before it is back after.
pub(crate) fn dockerfile(
    base: &str,
    steps: &[BuildStep],
) -> Result<(String, Vec<String>), CoreError> {
    let mut out = format!("FROM {base}\n");
    let mut hashes = Vec::new();
    let mut user: Option<String> = None;
    for (i, step) in steps.iter().enumerate() {
        let field = format!("steps[{i}]");
        let arg = |n: usize| {
            step.args
                .get(n)
                .filter(|a| !a.trim().is_empty())
                .ok_or_else(|| {
                    CoreError::invalid(&field, format!("{} needs argument {}", step.kind, n + 1))
                })
        };
        match step.kind.as_str() {
            "RUN" => {
                // A continuation keeps a multi-line script one RUN.
                let run = format!("RUN {}\n", arg(0)?.replace('\n', " \\\n"));
                match step.args.get(1).filter(|u| !u.is_empty()) {
                    Some(as_user) => {
                        let back = user.as_deref().unwrap_or("root");
                        out.push_str(&format!("USER {as_user}\n{run}USER {back}\n"));
                    }
                    None => out.push_str(&run),
                }
            }
            "ENV" => {
                if step.args.len() % 2 != 0 || step.args.is_empty() {
                    return Err(CoreError::invalid(&field, "ENV takes name and value pairs"));
                }
                for pair in step.args.chunks(2) {
                    out.push_str(&format!("ARG {}={}\n", pair[0], quoted(&pair[1])));
                }
            }
            "WORKDIR" => out.push_str(&format!("WORKDIR {}\n", arg(0)?)),
            "USER" => {
                let u = arg(0)?.clone();
                out.push_str(&format!("USER {u}\n"));
                user = Some(u);
            }
            "COPY" => {
                // The step's files are the archive the SDK uploaded under
                // their hash, which the build's context holds at
                // `<hash>/`: the source is found there (a glob's matches
                // are the whole archive).
                let src = arg(0)?;
                let dest = arg(1)?;
                let hash = step
                    .files_hash
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| {
                        CoreError::invalid(&field, "COPY needs its files' hash (filesHash)")
                    })?;
                let chmod = match step.args.get(3).map(|m| m.trim()).filter(|m| !m.is_empty()) {
                    Some(m) => {
                        let mode = u32::from_str_radix(m, 8).map_err(|_| {
                            CoreError::invalid(&field, format!("mode {m:?} is not octal"))
                        })?;
                        format!(" --chmod={mode:o}")
                    }
                    None => String::new(),
                };
                let src = src.trim_start_matches("./");
                let from = if src.contains(['*', '?', '[']) || src.is_empty() || src == "." {
                    hash.to_owned()
                } else {
                    format!("{hash}/{src}")
                };
                out.push_str(&format!("COPY{chmod} \"{from}\" \"{dest}\"\n"));
                if let Some(owner) = step.args.get(2).filter(|u| !u.trim().is_empty()) {
                    out.push_str(&format!("RUN chown -R {owner} \"{dest}\"\n"));
                }
                hashes.push(hash.to_owned());
            }
            other => {
                return Err(CoreError::invalid(
                    &field,
                    format!("unknown step type {other:?}"),
                ))
            }
        }
    }
    hashes.sort();
    hashes.dedup();
    Ok((out, hashes))
}

impl E2b {
    fn docs(&self) -> &paddock_core::documents::Documents {
        self.core.documents()
    }

    async fn template_by_name_or_id(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Option<Template>, CoreError> {
        if let Some(t) = self.docs().load::<Template>(account, key).await? {
            return Ok(Some(t));
        }
        let name = key.split(':').next().unwrap_or(key);
        Ok(self
            .docs()
            .load_all::<Template>(Some(account))
            .await?
            .into_iter()
            .find(|t| t.name == name))
    }

    /// Registers a build of template `name` (made if new): its ids.
    pub async fn request_template_build(
        &self,
        account: &AccountId,
        name: &str,
        tags: Vec<String>,
        cpu_count: Option<u32>,
        memory_mb: Option<u32>,
    ) -> Result<Template, CoreError> {
        let name = name.split(':').next().unwrap_or(name).to_owned();
        check_name(&name)?;
        if DEFAULT_BASES.contains(&name.as_str()) {
            return Err(CoreError::Conflict(format!(
                "{name} is a built-in template"
            )));
        }
        let defaults = self.core.vms().resources(None, None, None)?;
        let now = Timestamp::now();
        let existing = self.template_by_name_or_id(account, &name).await?;
        let _lock = match &existing {
            Some(t) => Some(self.docs().lock::<Template>(account, &t.id).await?),
            None => None,
        };
        let template = match existing {
            Some(mut t) => {
                if matches!(t.status, BuildStatus::Building | BuildStatus::Waiting) {
                    return Err(CoreError::Conflict(format!(
                        "template {name} has a build in progress ({})",
                        t.build_id
                    )));
                }
                t.build_id = random_id("bld");
                t.build_count += 1;
                t.status = BuildStatus::Waiting;
                t.reason = None;
                t.tags = tags;
                t.cpu_count = cpu_count.unwrap_or(t.cpu_count);
                t.memory_mb = memory_mb.unwrap_or(t.memory_mb);
                t.update_time = now;
                self.docs().save(&t).await?;
                t
            }
            None => {
                let t = Template {
                    id: random_id("tpl"),
                    account_id: account.clone(),
                    name,
                    tags,
                    cpu_count: cpu_count.unwrap_or(defaults.vcpu_count()),
                    memory_mb: memory_mb.unwrap_or(defaults.memory_mb()),
                    build_id: random_id("bld"),
                    build_count: 1,
                    status: BuildStatus::Waiting,
                    reason: None,
                    image: None,
                    start_cmd: None,
                    ready_cmd: None,
                    create_time: now,
                    update_time: now,
                };
                self.docs().insert(&t).await?;
                t
            }
        };
        self.build_logs.push(
            &template.build_id,
            "info",
            format!(
                "Template {} registered for build {}",
                template.name, template.build_id
            ),
        );
        Ok(template)
    }

    /// Starts a registered build: the image is built in the background;
    /// its progress is [`E2b::template_build`]'s.
    pub async fn start_template_build(
        &self,
        account: &AccountId,
        template_id: &str,
        build_id: &str,
        spec: BuildSpec,
    ) -> Result<(), CoreError> {
        let _lock = self.docs().lock::<Template>(account, template_id).await?;
        let mut t = self
            .docs()
            .load::<Template>(account, template_id)
            .await?
            .filter(|t| t.build_id == build_id)
            .ok_or_else(|| CoreError::not_found("template build", build_id))?;
        if t.status != BuildStatus::Waiting {
            return Err(CoreError::Conflict(format!(
                "build {build_id} is {}",
                t.status.as_str()
            )));
        }
        let base = match (&spec.from_image, &spec.from_template) {
            (Some(_), Some(_)) => {
                return Err(CoreError::invalid(
                    "fromTemplate",
                    "give fromImage or fromTemplate, not both",
                ))
            }
            (Some(b), None) | (None, Some(b)) if DEFAULT_BASES.contains(&b.as_str()) => {
                self.core.vms().config().default_variant.clone()
            }
            (Some(image), None) => image.clone(),
            (None, Some(name)) => self.template_image(account, name).await?.ok_or_else(|| {
                CoreError::invalid("fromTemplate", format!("no ready template {name}"))
            })?,
            (None, None) => self.core.vms().config().default_variant.clone(),
        };
        let (dockerfile, hashes) = dockerfile(&base, &spec.steps)?;
        let context = self.build_context(account, &hashes).await?;
        let slot = self.core.vms().start_image_build(account).await?;
        t.status = BuildStatus::Building;
        t.start_cmd = spec.start_cmd.filter(|c| !c.trim().is_empty());
        t.ready_cmd = spec.ready_cmd.filter(|c| !c.trim().is_empty());
        t.update_time = Timestamp::now();
        self.docs().save(&t).await?;
        let tag = format!("paddock.local/e2b/{}:{}", t.id, t.build_id);
        let core = Arc::clone(&self.core);
        let logs = Arc::clone(&self.build_logs);
        logs.push(
            &t.build_id,
            "info",
            format!("Building from {base} as {tag}"),
        );
        tokio::spawn(run_build(core, logs, t, slot, dockerfile, context, tag));
        Ok(())
    }

    /// A template and its build's log from `offset` (at most `limit`
    /// lines).
    pub async fn template_build(
        &self,
        account: &AccountId,
        template_id: &str,
        build_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Template, Vec<LogLine>), CoreError> {
        let t = self
            .docs()
            .load::<Template>(account, template_id)
            .await?
            .filter(|t| t.build_id == build_id)
            .ok_or_else(|| CoreError::not_found("template build", build_id))?;
        let lines = self.build_logs.from(build_id, offset, limit);
        Ok((t, lines))
    }

    pub async fn list_templates(&self, account: &AccountId) -> Result<Vec<Template>, CoreError> {
        let mut all = self.docs().load_all::<Template>(Some(account)).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub async fn get_template(
        &self,
        account: &AccountId,
        key: &str,
    ) -> Result<Template, CoreError> {
        self.template_by_name_or_id(account, key)
            .await?
            .ok_or_else(|| CoreError::not_found("template", key))
    }

    pub async fn delete_template(&self, account: &AccountId, key: &str) -> Result<(), CoreError> {
        let t = self.get_template(account, key).await?;
        let _lock = self.docs().lock::<Template>(account, &t.id).await?;
        self.docs().delete::<Template>(account, &t.id).await
    }

    /// The image of the account's ready template `name`.
    pub(crate) async fn template_image(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<String>, CoreError> {
        Ok(self
            .template_by_name_or_id(account, name)
            .await?
            .filter(|t| t.status == BuildStatus::Ready)
            .and_then(|t| t.image))
    }

    /// Runs a new sandbox's start command in the background (an envd
    /// process tagged `start_cmd`) and waits until its ready command
    /// succeeds.
    pub(crate) async fn start_template_commands(
        &self,
        account: &AccountId,
        vm: &paddock_core::ids::VmId,
        t: &Template,
    ) -> Result<(), CoreError> {
        let target = crate::EnvdTarget {
            account: account.clone(),
            vm: vm.clone(),
        };
        if let Some(cmd) = &t.start_cmd {
            let start = crate::ProcessStart {
                config: crate::ProcessConfig {
                    cmd: "/bin/sh".to_owned(),
                    args: vec!["-c".to_owned(), cmd.clone()],
                    ..Default::default()
                },
                tag: Some("start_cmd".to_owned()),
                ..Default::default()
            };
            // Nobody reads its output here; it stays connectable by tag.
            drop(self.start_process(&target, start).await?);
        }
        let Some(ready) = &t.ready_cmd else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            let request = paddock_core::exec::ExecRequest {
                argv: vec!["/bin/sh".to_owned(), "-c".to_owned(), ready.clone()],
                timeout: Some(std::time::Duration::from_secs(10)),
                ..Default::default()
            };
            let out = self.core.vms().exec_collect(account, vm, request).await?;
            if out.status.exit_code() == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoreError::Unavailable(format!(
                    "template {}'s ready command did not succeed within {} s",
                    t.name,
                    READY_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The account's ready template `name`, if it has one.
    pub(crate) async fn ready_template(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<Template>, CoreError> {
        Ok(self
            .template_by_name_or_id(account, name)
            .await?
            .filter(|t| t.status == BuildStatus::Ready && t.image.is_some()))
    }
}

async fn run_build(
    core: Arc<Service>,
    logs: Arc<BuildLogs>,
    mut t: Template,
    slot: paddock_core::quotas::BuildSlot,
    dockerfile: String,
    context: paddock_core::build::BuildContext,
    tag: String,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let build = t.build_id.clone();
    let sink = Arc::clone(&logs);
    let forward = tokio::spawn(async move {
        use paddock_core::build::BuildEvent;
        while let Some(ev) = rx.recv().await {
            match ev {
                BuildEvent::Step {
                    index,
                    total,
                    text,
                    cached,
                    ..
                } => sink.push(
                    &build,
                    "info",
                    format!(
                        "[{}/{total}] {text}{}",
                        index + 1,
                        if cached { " (cached)" } else { "" }
                    ),
                ),
                BuildEvent::Stdout(b) => {
                    for line in String::from_utf8_lossy(&b).lines() {
                        sink.push(&build, "info", line);
                    }
                }
                BuildEvent::Stderr(b) => {
                    for line in String::from_utf8_lossy(&b).lines() {
                        sink.push(&build, "warn", line);
                    }
                }
            }
        }
    });
    let request = paddock_core::build::BuildRequest {
        dockerfile,
        tag: tag.clone(),
        build_args: Vec::new(),
        context,
    };
    let built = core
        .vms()
        .build_image(&t.account_id, slot, request, tx)
        .await;
    let _ = forward.await;
    match built {
        Ok(_) => {
            t.status = BuildStatus::Ready;
            t.image = Some(tag);
            logs.push(&t.build_id, "info", "Build finished");
        }
        Err(e) => {
            let why = match &e {
                CoreError::Runtime(_) | CoreError::Store(_) => {
                    tracing::error!(template = %t.id, error = %paddock_core::error::error_chain(&e), "a template build failed");
                    "the build failed; see the server log".to_owned()
                }
                other => other.to_string(),
            };
            logs.push(&t.build_id, "error", why.clone());
            t.status = BuildStatus::Error;
            t.reason = Some(why);
        }
    }
    t.update_time = Timestamp::now();
    let docs = core.documents();
    let _lock = match docs.lock::<Template>(&t.account_id, &t.id).await {
        Ok(lock) => lock,
        Err(e) => {
            tracing::error!(template = %t.id, error = %paddock_core::error::error_chain(&e), "could not record a template build's end");
            return;
        }
    };
    // A template deleted meanwhile stays deleted.
    if let Ok(Some(current)) = docs.load::<Template>(&t.account_id, &t.id).await {
        if current.build_id == t.build_id {
            if let Err(e) = docs.save(&t).await {
                tracing::error!(template = %t.id, error = %paddock_core::error::error_chain(&e), "could not record a template build's end");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(kind: &str, args: &[&str]) -> BuildStep {
        BuildStep {
            kind: kind.to_owned(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            files_hash: None,
        }
    }

    #[test]
    fn steps_become_a_dockerfile() {
        let (d, _) = dockerfile(
            "default",
            &[
                step("ENV", &["A", "one \"two\""]),
                step("WORKDIR", &["/app"]),
                step("RUN", &["echo hi > f"]),
                step("RUN", &["id -u", "nobody"]),
                step("USER", &["app"]),
            ],
        )
        .expect("dockerfile");
        assert_eq!(
            d,
            "FROM default\nARG A=\"one \\\"two\\\"\"\nWORKDIR /app\nRUN echo hi > f\nUSER nobody\nRUN id -u\nUSER root\nUSER app\n"
        );
        // COPY needs its files' hash; with it, the source is found under it.
        assert!(dockerfile("default", &[step("COPY", &["a", "/b"])]).is_err());
        let mut copy = step("COPY", &["./app", "/srv/", "nobody", "0755"]);
        copy.files_hash = Some("abc".into());
        let (d, hashes) = dockerfile("default", &[copy]).expect("copy");
        assert_eq!(
            d,
            "FROM default\nCOPY --chmod=755 \"abc/app\" \"/srv/\"\nRUN chown -R nobody \"/srv/\"\n"
        );
        assert_eq!(hashes, ["abc"]);
        assert!(dockerfile("default", &[step("ENV", &["A"])]).is_err());
        assert!(dockerfile("default", &[step("RUN", &[])]).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-env.v1").is_ok());
        assert!(check_name("My Env").is_err());
        assert!(check_name("").is_err());
    }
}
