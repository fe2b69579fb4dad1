//! The code interpreter (`e2b-code-interpreter`'s `run_code` and code
//! contexts): each context is a Jupyter kernel in the sandbox, driven by
//! a small Python driver (`interpreter_driver.py`, run through the core's
//! exec with its stdin held open) that turns the kernel's messages into
//! E2B's output lines. State persists between calls in one context; one
//! call runs at a time per context, as in a notebook.
//!
//! The kernel is ipykernel with jupyter_client (Debian's
//! `python3-ipykernel`, `python3-jupyter-client`, `python3-matplotlib`,
//! `python3-matplotlib-inline`), which the default image variant has from
//! the host's `/usr`. `bash` contexts are one bash process each, its
//! state kept between calls; other languages are refused (their
//! runtimes are not in the image).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use paddock_core::error::CoreError;
use paddock_core::exec::{ExecEvent, ExecRequest};
use paddock_core::ids::VmId;
use tokio::sync::{mpsc, Mutex};

use crate::{E2b, EnvdTarget};

const DRIVER: &str = include_str!("interpreter_driver.py");
/// How long a kernel has to start.
const STARTUP: Duration = Duration::from_secs(90);
/// How long an interrupted execution has to end before its kernel is
/// killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
/// Contexts one sandbox may hold (each a kernel process).
const MAX_CONTEXTS: usize = 16;
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;

/// A code context as the SDK sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeContext {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

/// What `run_code` asks.
#[derive(Debug, Clone, Default)]
pub struct RunCode {
    pub code: String,
    pub context_id: Option<String>,
    pub language: Option<String>,
    pub env_vars: BTreeMap<String, String>,
}

/// A running driver: its stdin, its output lines, its pid.
struct Driver {
    pid: Option<i32>,
    stdin: mpsc::Sender<Bytes>,
    lines: mpsc::Receiver<String>,
}

struct Context {
    info: CodeContext,
    /// `None` until started, and after the kernel died.
    driver: Arc<Mutex<Option<Driver>>>,
}

#[derive(Default)]
pub(crate) struct ContextTable {
    by_vm: SyncMutex<HashMap<VmId, HashMap<String, Arc<Context>>>>,
    next: std::sync::atomic::AtomicU64,
}

impl ContextTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, HashMap<String, Arc<Context>>>> {
        self.by_vm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn vms(&self) -> Vec<VmId> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn forget_vm(&self, vm: &VmId) {
        self.lock().remove(vm);
    }
}

/// Signals a driver (its process group; its kernel dies with it), as a
/// best effort: a driver already gone needs nothing.
async fn signal_driver(
    core: &paddock_core::service::Service,
    target: &EnvdTarget,
    pid: i32,
    signal: i32,
) {
    let _ = core
        .vms()
        .signal_command(&target.account, &target.vm, pid, signal)
        .await;
}

/// The default context of a language has this id.
fn default_id(language: &str) -> String {
    format!("default-{language}")
}

fn check_language(language: Option<&str>) -> Result<String, CoreError> {
    match language.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("python") | Some("python3") => Ok("python".to_owned()),
        Some("bash") => Ok("bash".to_owned()),
        Some(other) => Err(CoreError::invalid(
            "language",
            format!("{other}: this server's code interpreter runs python and bash (the runtimes its default image has)"),
        )),
    }
}

/// Splits an exec's stdout into lines; the rest of its events end it.
fn lines_of(mut stream: paddock_core::exec::ExecStream) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(event) = stream.recv().await {
            match event {
                Ok(ExecEvent::Stdout(chunk)) => {
                    pending.extend_from_slice(&chunk);
                    while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=at).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                        if tx.send(text).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(ExecEvent::Stderr(chunk)) => {
                    tracing::debug!(output = %String::from_utf8_lossy(&chunk), "code interpreter driver");
                }
                Ok(ExecEvent::Exit(_)) | Err(_) => return,
            }
        }
    });
    rx
}

fn line_type(line: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("type")?
        .as_str()
        .map(str::to_owned)
}

impl E2b {
    async fn start_driver(
        &self,
        target: &EnvdTarget,
        cwd: &str,
        language: &str,
    ) -> Result<Driver, CoreError> {
        let (stdin_tx, stdin_rx) = mpsc::channel(16);
        let (pid_tx, mut pid_rx) = tokio::sync::oneshot::channel();
        let request = ExecRequest {
            argv: vec![
                "python3".to_owned(),
                "-X".to_owned(),
                "frozen_modules=off".to_owned(),
                "-c".to_owned(),
                DRIVER.to_owned(),
                cwd.to_owned(),
                language.to_owned(),
            ],
            env: vec![("PYDEVD_DISABLE_FILE_VALIDATION".to_owned(), "1".to_owned())],
            cwd: Some(cwd.to_owned()),
            stdin: None,
            stdin_stream: Some(stdin_rx),
            timeout: None,
            started: Some(pid_tx),
            user: None,
        };
        let stream = self
            .core
            .vms()
            .exec(&target.account, &target.vm, request)
            .await?;
        let pid = pid_rx.try_recv().ok();
        let mut lines = lines_of(stream);
        let first = tokio::time::timeout(STARTUP, lines.recv()).await;
        let unavailable = |why: String| {
            CoreError::Unavailable(format!("the code interpreter could not start: {why}"))
        };
        match first {
            Ok(Some(line)) if line_type(&line).as_deref() == Some("ready") => Ok(Driver {
                pid,
                stdin: stdin_tx,
                lines,
            }),
            Ok(Some(line)) => {
                let why = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or(line);
                Err(unavailable(format!(
                    "{why} (the sandbox's image needs python3 with ipykernel and jupyter_client)"
                )))
            }
            Ok(None) => Err(unavailable(
                "python3 ended at once (the sandbox's image needs python3 with ipykernel and jupyter_client)".to_owned(),
            )),
            Err(_) => {
                if let Some(pid) = pid {
                    signal_driver(&self.core, target, pid, SIGKILL).await;
                }
                Err(unavailable(format!("no kernel within {} s", STARTUP.as_secs())))
            }
        }
    }

    fn context(&self, target: &EnvdTarget, id: &str) -> Option<Arc<Context>> {
        self.contexts.lock().get(&target.vm)?.get(id).cloned()
    }

    /// Refuses one more context where the sandbox holds its most
    /// (`id` may be one it holds).
    fn room_for_context(
        of_vm: Option<&HashMap<String, Arc<Context>>>,
        id: &str,
    ) -> Result<(), CoreError> {
        match of_vm {
            Some(c) if c.len() >= MAX_CONTEXTS && !c.contains_key(id) => {
                Err(CoreError::ResourceExhausted(format!(
                    "a sandbox holds at most {MAX_CONTEXTS} code contexts; remove one first"
                )))
            }
            _ => Ok(()),
        }
    }

    fn insert_context(&self, target: &EnvdTarget, ctx: Arc<Context>) -> Result<(), CoreError> {
        let mut all = self.contexts.lock();
        Self::room_for_context(all.get(&target.vm), &ctx.info.id)?;
        all.entry(target.vm.clone())
            .or_default()
            .entry(ctx.info.id.clone())
            .or_insert(ctx);
        Ok(())
    }

    /// Creates a context and starts its kernel.
    pub async fn create_code_context(
        &self,
        target: &EnvdTarget,
        language: Option<&str>,
        cwd: Option<&str>,
    ) -> Result<CodeContext, CoreError> {
        let language = check_language(language)?;
        let cwd = crate::filesystem::resolve(
            cwd.unwrap_or(crate::filesystem::DEFAULT_HOME),
            None,
            "cwd",
        )?;
        let info = CodeContext {
            id: format!(
                "ctx{}",
                self.contexts
                    .next
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            language,
            cwd: cwd.as_str().to_owned(),
        };
        // Refused before a kernel starts.
        Self::room_for_context(self.contexts.lock().get(&target.vm), &info.id)?;
        let driver = self.start_driver(target, &info.cwd, &info.language).await?;
        let ctx = Arc::new(Context {
            info: info.clone(),
            driver: Arc::new(Mutex::new(Some(driver))),
        });
        self.insert_context(target, ctx)?;
        Ok(info)
    }

    pub fn list_code_contexts(&self, target: &EnvdTarget) -> Vec<CodeContext> {
        let mut list: Vec<CodeContext> = self
            .contexts
            .lock()
            .get(&target.vm)
            .map(|c| c.values().map(|c| c.info.clone()).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Ends a context's kernel and forgets it.
    pub async fn remove_code_context(
        &self,
        target: &EnvdTarget,
        id: &str,
    ) -> Result<(), CoreError> {
        let ctx = {
            let mut all = self.contexts.lock();
            all.get_mut(&target.vm)
                .and_then(|c| c.remove(id))
                .ok_or_else(|| CoreError::not_found("context", id))?
        };
        self.stop_driver(target, &ctx).await;
        Ok(())
    }

    /// Restarts a context's kernel: its state is gone, its id stays.
    pub async fn restart_code_context(
        &self,
        target: &EnvdTarget,
        id: &str,
    ) -> Result<(), CoreError> {
        let ctx = self
            .context(target, id)
            .ok_or_else(|| CoreError::not_found("context", id))?;
        self.stop_driver(target, &ctx).await;
        let driver = self
            .start_driver(target, &ctx.info.cwd, &ctx.info.language)
            .await?;
        *ctx.driver.lock().await = Some(driver);
        Ok(())
    }

    async fn stop_driver(&self, target: &EnvdTarget, ctx: &Context) {
        let old = ctx.driver.lock().await.take();
        if let Some(Driver { pid: Some(pid), .. }) = old {
            // Its kernel dies with it (PR_SET_PDEATHSIG).
            signal_driver(&self.core, target, pid, SIGKILL).await;
        }
    }

    /// Runs code in a context (the language's default one unless named):
    /// E2B's output lines as they come. A caller that goes away
    /// interrupts the run.
    pub async fn run_code(
        &self,
        target: &EnvdTarget,
        run: RunCode,
    ) -> Result<mpsc::Receiver<String>, CoreError> {
        let ctx = match &run.context_id {
            Some(id) => {
                if run.language.is_some() {
                    return Err(CoreError::invalid(
                        "language",
                        "give a context or a language, not both",
                    ));
                }
                self.context(target, id)
                    .ok_or_else(|| CoreError::not_found("context", id))?
            }
            None => {
                let language = check_language(run.language.as_deref())?;
                let id = default_id(&language);
                match self.context(target, &id) {
                    Some(c) => c,
                    None => {
                        let ctx = Arc::new(Context {
                            info: CodeContext {
                                id,
                                language,
                                cwd: crate::filesystem::DEFAULT_HOME.to_owned(),
                            },
                            driver: Arc::new(Mutex::new(None)),
                        });
                        self.insert_context(target, Arc::clone(&ctx))?;
                        // Another call may have put it there first.
                        self.context(target, &ctx.info.id).unwrap_or(ctx)
                    }
                }
            }
        };
        let mut guard = Arc::clone(&ctx.driver).lock_owned().await;
        if guard.is_none() {
            *guard = Some(
                self.start_driver(target, &ctx.info.cwd, &ctx.info.language)
                    .await?,
            );
        }
        let request = serde_json::json!({ "code": run.code, "env_vars": run.env_vars });
        let sent = match guard.as_ref() {
            Some(d) => d
                .stdin
                .send(Bytes::from(format!("{request}\n")))
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            *guard = None;
            return Err(CoreError::Unavailable(
                "the context's kernel is gone; run the code again to start a new one".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(256);
        let core = Arc::clone(&self.core);
        let target = target.clone();
        tokio::spawn(async move {
            let mut caller_gone = false;
            let mut interrupted_at = None;
            loop {
                let Some(driver) = guard.as_mut() else { return };
                let next = match interrupted_at {
                    Some(at) => {
                        let left = INTERRUPT_GRACE.saturating_sub(tokio::time::Instant::now() - at);
                        tokio::time::timeout(left, driver.lines.recv())
                            .await
                            .unwrap_or(None)
                    }
                    None => tokio::select! {
                        line = driver.lines.recv() => line,
                        () = tx.closed(), if !caller_gone => {
                            caller_gone = true;
                            if let Some(pid) = driver.pid {
                                signal_driver(&core, &target, pid, SIGINT).await;
                            }
                            interrupted_at = Some(tokio::time::Instant::now());
                            continue;
                        }
                    },
                };
                let Some(line) = next else {
                    // The driver died, or would not stop: a new kernel
                    // next time.
                    if let Some(Driver { pid: Some(pid), .. }) = guard.take() {
                        signal_driver(&core, &target, pid, SIGKILL).await;
                    }
                    if !caller_gone {
                        let died = serde_json::json!({
                            "type": "error", "name": "KernelDied",
                            "value": "the kernel ended while the code ran; its state is lost",
                            "traceback": "",
                        });
                        let _ = tx.send(died.to_string()).await;
                    }
                    return;
                };
                if line_type(&line).as_deref() == Some("end") {
                    return;
                }
                if !caller_gone && tx.send(line).await.is_err() {
                    caller_gone = true;
                    if let Some(pid) = guard.as_ref().and_then(|d| d.pid) {
                        signal_driver(&core, &target, pid, SIGINT).await;
                    }
                    interrupted_at = Some(tokio::time::Instant::now());
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_is_the_language() {
        assert_eq!(check_language(None).ok().as_deref(), Some("python"));
        assert_eq!(
            check_language(Some("Python")).ok().as_deref(),
            Some("python")
        );
        assert_eq!(check_language(Some("bash")).ok().as_deref(), Some("bash"));
        assert!(check_language(Some("r")).is_err());
    }

    #[test]
    fn lines_are_typed() {
        assert_eq!(line_type(r#"{"type":"end"}"#).as_deref(), Some("end"));
        assert_eq!(line_type("junk"), None);
    }
}
