//! Building images from inline Dockerfiles. Each `RUN` runs in one of
//! paddock's own sandboxes on the layers so far; what it changed becomes a
//! layer. `COPY` heredocs become layers directly; the other instructions
//! change only the config. A step's layer is cached under a key of its
//! parent image, every instruction before it and its own text, so a
//! rebuild with no change reuses every layer and runs nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::component::Vms;
use crate::clock::Timestamp;
use crate::dockerfile::{self, Instruction, Step};
use crate::error::CoreError;
use crate::exec::{ExecEvent, ExecRequest};
use crate::ids::AccountId;
use crate::images::BuiltLayer;
use crate::model::{Env, Image, ImageConfig, LayerInfo, RootfsSpec, VmSpec};

/// What a build reports as it goes.
#[derive(Debug, Clone)]
pub enum BuildEvent {
    Step {
        index: usize,
        total: usize,
        line: usize,
        text: String,
        cached: bool,
    },
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A request to build an image.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub dockerfile: String,
    /// The reference the image is stored under.
    pub tag: String,
    pub build_args: Vec<(String, String)>,
    /// The files `COPY src dest` takes, by their path in the context
    /// (relative, `/`-separated); empty when the build has none.
    pub context: BuildContext,
}

/// A build's context: files by their relative path, with their mode.
pub type BuildContext = std::collections::BTreeMap<String, (Vec<u8>, u32)>;

/// The files `COPY src dest` names in `context`, placed as Docker places
/// them: a file at `dest` (inside it when `dest` ends with `/`), a
/// directory's files under `dest`. Empty when nothing matches.
pub fn context_files(
    context: &BuildContext,
    src: &str,
    dest: &str,
    mode: Option<u32>,
) -> Vec<crate::images::LayerFile> {
    let src = src.trim_start_matches("./").trim_end_matches('/');
    let place = |rel: &str| -> String {
        let base = if dest.starts_with('/') {
            dest.to_owned()
        } else {
            format!("/{dest}")
        };
        format!("{}/{rel}", base.trim_end_matches('/'))
    };
    let file = |path: String, (content, m): &(Vec<u8>, u32)| crate::images::LayerFile {
        path,
        content: content.clone(),
        mode: mode.unwrap_or(*m),
    };
    if let Some(f) = context.get(src) {
        let target = if dest.ends_with('/') {
            place(src.rsplit('/').next().unwrap_or(src))
        } else {
            place("").trim_end_matches('/').to_owned()
        };
        return vec![file(target, f)];
    }
    let prefix = if src.is_empty() || src == "." {
        String::new()
    } else {
        format!("{src}/")
    };
    context
        .iter()
        .filter_map(|(path, f)| {
            let rel = path.strip_prefix(&prefix)?;
            (!rel.is_empty()).then(|| file(place(rel), f))
        })
        .collect()
}

const RUN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

fn set(list: &mut Vec<(String, String)>, key: &str, value: String) {
    list.retain(|(k, _)| k != key);
    list.push((key.to_owned(), value));
}

struct State {
    layers: Vec<LayerInfo>,
    diff_ids: Vec<String>,
    config: ImageConfig,
    args: Vec<(String, String)>,
    /// The cache key of everything so far.
    key: String,
}

impl State {
    /// Chains `step` into the cache key; `copied` are the files a `COPY`
    /// from the context takes, whose content is part of the step.
    fn advance(&mut self, step: &Step, copied: Option<&[crate::images::LayerFile]>) {
        let mut h = Sha256::new();
        h.update(self.key.as_bytes());
        h.update(b"\n");
        h.update(step.text.as_bytes());
        if let Instruction::Copy { content, .. } = &step.instruction {
            h.update(content.as_bytes());
        }
        for f in copied.unwrap_or_default() {
            h.update(f.path.as_bytes());
            h.update(f.mode.to_be_bytes());
            h.update(Sha256::digest(&f.content));
        }
        for (k, v) in &self.args {
            h.update(format!("\n{k}={v}").as_bytes());
        }
        self.key = hex::encode(h.finalize());
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.args
            .iter()
            .chain(self.config.env.iter())
            .cloned()
            .collect()
    }
}

impl Vms {
    /// Parses a Dockerfile, as a build would; errors name the line.
    pub fn parse_dockerfile(text: &str) -> Result<Vec<Step>, CoreError> {
        dockerfile::parse(text).map_err(|e| CoreError::invalid("dockerfile", e.to_string()))
    }

    /// A place for one more image build of the account (`max_image_builds`),
    /// taken before a build's answer starts streaming.
    pub async fn start_image_build(
        &self,
        account: &AccountId,
    ) -> Result<crate::quotas::BuildSlot, CoreError> {
        let quota = self.parts.accounts.quota(account).await?;
        self.parts.accounts.quotas().start_build(account, &quota)
    }

    /// A snapshot of the image `request` builds: its record at once
    /// (`pending`), `ready` when the build ends, `failed` with the build's
    /// last output when it does not. The image stays in the account's
    /// library under the request's tag.
    pub async fn snapshot_from_build(
        self: &Arc<Self>,
        account: &AccountId,
        name: Option<String>,
        kind: crate::model::SnapshotKind,
        request: BuildRequest,
    ) -> Result<crate::model::Snapshot, CoreError> {
        Self::parse_dockerfile(&request.dockerfile)?;
        self.parts.images.require_reference("tag", &request.tag)?;
        let slot = self.start_image_build(account).await?;
        let snapshot = self
            .parts
            .snapshots
            .begin(account, name, kind, None, request.tag.clone())
            .await?;
        let (this, account, pending) = (Arc::clone(self), account.clone(), snapshot.clone());
        tokio::spawn(async move {
            let (events, mut log) = mpsc::channel(256);
            let tail = tokio::spawn(async move {
                let mut tail = std::collections::VecDeque::new();
                while let Some(event) = log.recv().await {
                    let text = match event {
                        BuildEvent::Step { text, .. } => text,
                        BuildEvent::Stdout(b) | BuildEvent::Stderr(b) => {
                            String::from_utf8_lossy(&b).into_owned()
                        }
                    };
                    for line in text.lines() {
                        if tail.len() == 20 {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_owned());
                    }
                }
                tail.into_iter().collect::<Vec<_>>().join("\n")
            });
            let built = this.build_image(&account, slot, request, events).await;
            let said = tail.await.unwrap_or_default();
            let result = match built {
                Ok(image) => {
                    let variant = image.config.base_variant().map(str::to_owned);
                    Ok((image, variant, 0))
                }
                Err(e) if said.is_empty() => Err(e),
                Err(e) => Err(CoreError::FailedPrecondition(format!(
                    "{e}; the build's last output:\n{said}"
                ))),
            };
            if let Err(e) = this.parts.snapshots.finish(pending, result).await {
                tracing::warn!(error = %crate::error::error_chain(&e), "a snapshot's build failed");
            }
        });
        Ok(snapshot)
    }

    /// Builds `request` for the account in the place `_slot` holds,
    /// reporting progress on `events`, and stores the image under its tag.
    pub async fn build_image(
        self: &Arc<Self>,
        account: &AccountId,
        _slot: crate::quotas::BuildSlot,
        request: BuildRequest,
        events: mpsc::Sender<BuildEvent>,
    ) -> Result<Image, CoreError> {
        let steps = Self::parse_dockerfile(&request.dockerfile)?;
        self.parts.images.require_reference("tag", &request.tag)?;
        let mut st = State {
            layers: Vec::new(),
            diff_ids: Vec::new(),
            config: ImageConfig::default(),
            args: Vec::new(),
            key: String::new(),
        };
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            // A COPY's files are found once: they are its cache key's
            // content and its layer.
            let mut copied = match &step.instruction {
                Instruction::CopyContext { src, dest, mode } => {
                    let vars = st.vars();
                    let sub = |s: &str| dockerfile::substitute(s, &vars);
                    Some(context_files(
                        &request.context,
                        &sub(src),
                        &sub(dest),
                        *mode,
                    ))
                }
                _ => None,
            };
            st.advance(step, copied.as_deref());
            let produces_layer = matches!(
                step.instruction,
                Instruction::Run(_) | Instruction::Copy { .. } | Instruction::CopyContext { .. }
            );
            let cached = if produces_layer {
                self.parts.images.built_step(&st.key).await?
            } else {
                None
            };
            let _ = events
                .send(BuildEvent::Step {
                    index: i + 1,
                    total,
                    line: step.line,
                    text: step.text.clone(),
                    cached: cached.is_some(),
                })
                .await;
            if let Some(layer) = cached {
                st.layers.push(layer.info);
                st.diff_ids.push(layer.diff_id);
                continue;
            }
            let vars = st.vars();
            let sub = |s: &str| dockerfile::substitute(s, &vars);
            match &step.instruction {
                Instruction::Arg(name, default) => {
                    let value = request
                        .build_args
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .or_else(|| default.clone())
                        .unwrap_or_default();
                    set(&mut st.args, name, value);
                }
                Instruction::From(reference) => {
                    let name = sub(reference);
                    if name == "scratch" {
                        // The empty base, as in every Dockerfile builder.
                        st.layers.clear();
                        st.diff_ids.clear();
                        st.config = ImageConfig::default();
                        st.key = format!("scratch:{}", st.key);
                    } else if self.provider.has_variant(&name) {
                        st.layers.clear();
                        st.diff_ids.clear();
                        st.config = ImageConfig::default();
                        st.config
                            .labels
                            .insert(crate::model::BASE_VARIANT_LABEL.to_owned(), name.clone());
                        st.key = format!("variant:{name}:{}", st.key);
                    } else {
                        // An image the account holds (built or pulled)
                        // resolves before any pull.
                        let base = self.parts.images.ensure(account, &name).await?;
                        let mut diff_ids = self.image_backend.diff_ids(&base.config_digest).await?;
                        diff_ids.resize(base.layers.len(), String::new());
                        st.layers = base.layers;
                        st.diff_ids = diff_ids;
                        st.config = base.config;
                        st.key = format!("{}:{}", base.digest, st.key);
                    }
                }
                Instruction::Env(kvs) => {
                    for (k, v) in kvs {
                        let v = sub(v);
                        set(&mut st.config.env, k, v);
                    }
                }
                Instruction::Workdir(w) => st.config.working_dir = Some(sub(w)),
                Instruction::User(u) => st.config.user = Some(sub(u)),
                Instruction::Label(kvs) => {
                    for (k, v) in kvs {
                        st.config.labels.insert(k.clone(), sub(v));
                    }
                }
                Instruction::Cmd(argv) => st.config.cmd = argv.clone(),
                Instruction::Entrypoint(argv) => st.config.entrypoint = argv.clone(),
                Instruction::Copy {
                    dest,
                    content,
                    mode,
                } => {
                    let file = crate::images::LayerFile {
                        path: sub(dest),
                        content: content.as_bytes().to_vec(),
                        mode: mode.unwrap_or(0o644),
                    };
                    let layer = self.image_backend.files_layer(&[file]).await?;
                    self.parts.images.keep_built_step(&st.key, &layer).await?;
                    st.layers.push(layer.info);
                    st.diff_ids.push(layer.diff_id);
                }
                Instruction::CopyContext { src, .. } => {
                    let files = copied.take().unwrap_or_default();
                    if files.is_empty() {
                        return Err(CoreError::invalid(
                            "dockerfile",
                            format!(
                                "line {}: COPY {src}: no such file in the build's context{}",
                                step.line,
                                if request.context.is_empty() {
                                    " (this build was sent no files: use a heredoc, COPY <<EOF /path)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                    let layer = self.image_backend.files_layer(&files).await?;
                    self.parts.images.keep_built_step(&st.key, &layer).await?;
                    st.layers.push(layer.info);
                    st.diff_ids.push(layer.diff_id);
                }
                Instruction::Run(command) => {
                    let layer = self.run_step(account, &st, step, command, &events).await?;
                    self.parts.images.keep_built_step(&st.key, &layer).await?;
                    st.layers.push(layer.info);
                    st.diff_ids.push(layer.diff_id);
                }
            }
        }
        let written = self
            .image_backend
            .write_image(&st.layers, &st.diff_ids, &st.config)
            .await?;
        let image = Image {
            account_id: account.clone(),
            digest: written.manifest_digest,
            reference: request.tag,
            config_digest: written.config_digest,
            size: st.layers.iter().map(|l| l.size).sum(),
            config: st.config,
            layers: st.layers,
            created_at: Timestamp::now(),
        };
        self.parts.images.save(&image).await?;
        Ok(image)
    }

    /// Runs one `RUN` in a fresh sandbox on the layers so far and packs
    /// what it changed. The sandbox is stopped whatever happens.
    async fn run_step(
        &self,
        account: &AccountId,
        st: &State,
        step: &Step,
        command: &str,
        events: &mpsc::Sender<BuildEvent>,
    ) -> Result<BuiltLayer, CoreError> {
        // Not stored: a build sandbox is no VM of the account's. An orphan
        // left by a crash is removed at the next start like any other.
        let spec = VmSpec {
            session_id: None,
            lifetime_seconds: None,
            resources: self.resources(
                Some(2048.min(i64::from(self.config.limits.max_memory_mb))),
                None,
                None,
            )?,
            metadata: Default::default(),
            env: Env::default(),
            image_variant: "build".into(),
            options: Default::default(),
            volumes: Vec::new(),
            provider: None,
            placement: crate::model::Placement::ThisNode,
        };
        let mut vm = self.new_vm(account, spec);
        let mut defaults = st.config.clone();
        for (k, v) in &st.args {
            if !defaults.env.iter().any(|(ek, _)| ek == k) {
                defaults.env.push((k.clone(), v.clone()));
            }
        }
        let dirs = self.image_backend.layer_dirs(&st.layers);
        let rootfs = match st.config.base_variant() {
            Some(name) => RootfsSpec::Variant {
                name: name.to_owned(),
                layers: dirs,
                defaults,
            },
            None => RootfsSpec::Layers { dirs, defaults },
        };
        let handle = self.provider.start(&vm, &rootfs).await?;
        vm.runtime = Some(handle);
        let result = async {
            let request = ExecRequest {
                argv: vec!["/bin/sh".into(), "-c".into(), command.to_owned()],
                timeout: Some(RUN_TIMEOUT),
                ..ExecRequest::default()
            };
            let mut stream = self.provider.channel().exec(&vm.id, request).await?;
            let status = loop {
                match stream.recv().await {
                    Some(Ok(ExecEvent::Stdout(b))) => {
                        let _ = events.send(BuildEvent::Stdout(b)).await;
                    }
                    Some(Ok(ExecEvent::Stderr(b))) => {
                        let _ = events.send(BuildEvent::Stderr(b)).await;
                    }
                    Some(Ok(ExecEvent::Exit(s))) => break s,
                    Some(Err(e)) => return Err(CoreError::from(e)),
                    None => {
                        return Err(CoreError::Unavailable(
                            "the build step's output ended early".into(),
                        ))
                    }
                }
            };
            if status.exit_code() != 0 {
                return Err(CoreError::invalid(
                    "dockerfile",
                    format!(
                        "line {}: `{}` failed with exit code {}",
                        step.line,
                        step.text,
                        status.exit_code()
                    ),
                ));
            }
            let trees = self.provider.changes(&vm);
            if trees.is_empty() {
                return Err(CoreError::Unavailable(
                    "the build sandbox has no writable layer".into(),
                ));
            }
            self.image_backend.pack_changes(&trees).await
        }
        .await;
        if let Err(e) = self.provider.stop(&vm.id, Some(handle)).await {
            tracing::warn!(vm_id = %vm.id, error = %e, "could not stop a build sandbox");
        }
        result
    }

    /// Pushes the account's image to `target`; returns the pushed digest.
    pub async fn push_image(
        &self,
        account: &AccountId,
        key: &str,
        target: &str,
    ) -> Result<String, CoreError> {
        self.parts.images.require_reference("target", target)?;
        let image = self.parts.images.get(account, key).await?;
        self.image_backend
            .push(&image.layers, &image.config_digest, target)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BuildContext {
        let mut c = BuildContext::new();
        c.insert("app/run.sh".into(), (b"#!/bin/sh\n".to_vec(), 0o755));
        c.insert("app/lib/x.py".into(), (b"x = 1\n".to_vec(), 0o644));
        c.insert("README".into(), (b"hi".to_vec(), 0o644));
        c
    }

    fn paths(files: &[crate::images::LayerFile]) -> Vec<&str> {
        files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn copies_place_files_as_docker_does() {
        let c = ctx();
        assert_eq!(
            paths(&context_files(&c, "README", "/doc/README.md", None)),
            ["/doc/README.md"]
        );
        assert_eq!(
            paths(&context_files(&c, "README", "/doc/", None)),
            ["/doc/README"]
        );
        assert_eq!(
            paths(&context_files(&c, "app", "/srv", None)),
            ["/srv/lib/x.py", "/srv/run.sh"]
        );
        assert_eq!(
            paths(&context_files(&c, "./app/", "srv/", None)),
            ["/srv/lib/x.py", "/srv/run.sh"]
        );
        let run = context_files(&c, "app/run.sh", "/bin/run", Some(0o700));
        assert_eq!(run[0].mode, 0o700);
        assert!(context_files(&c, "missing", "/x", None).is_empty());
        assert!(context_files(&c, "ap", "/x", None).is_empty());
    }
}
