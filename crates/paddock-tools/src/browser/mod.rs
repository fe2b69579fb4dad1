//! Browser sessions: headless Chromium, each in a sandbox of its own (a VM
//! of the account, counted against its limits, under its egress policy),
//! driven by the server over the DevTools protocol.
//!
//! A session's id is its VM's id: the VM carries the session's settings in
//! its metadata ([`MARK`]), so a restarted server finds its sessions again
//! and reconnects on first use; the VM API shows the VM, and its egress
//! endpoint sets the policy the browser browses under. Chromium runs as a
//! job of the sandbox (it outlives the server), listening for DevTools on
//! the sandbox's loopback only, which the server reaches through a stream
//! into the sandbox's network namespace: nothing else can.
//!
//! An idle session ends by itself: its VM's lifetime is the idle timeout,
//! pushed forward by each use.

mod cdp;
mod interactions;
mod session;
mod share_fetch;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_core::exec::ExecRequest;
use paddock_core::ids::{AccountId, VmId};
use paddock_core::model::{
    Env, ExecutionStatus, Metadata, Vm, VmFilter, VmOptions, VmSpec, VmStatus, VmStatusSet,
};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde::{Deserialize, Serialize};

pub use cdp::CdpError;
pub use interactions::{
    Clip, ContentRequest, NavigateResult, Screenshot, ScreenshotRequest, WaitCondition,
};
use session::Session;

/// The metadata key that marks a VM as a browser session, holding the
/// session's settings.
pub const MARK: &str = "paddock.browser";

/// Where Chromium listens for DevTools inside its sandbox (loopback).
const DEVTOOLS_PORT: u16 = 9222;

/// How long a new session's browser may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A use pushes the session's end forward at most this often (each push
/// is a write of the VM's record).
const EXTEND_EVERY: Duration = Duration::from_secs(15);

/// The browser product's settings.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// Chromium's own binary as the sandbox sees it (Debian's
    /// `/usr/bin/chromium` is a wrapper that reads `/etc/chromium.d`).
    pub chromium: String,
    /// Memory of a session's sandbox.
    pub memory_mb: u32,
    /// A session nobody used for this long ends.
    pub idle_timeout: Duration,
    /// The most sessions one account may hold at once.
    pub max_sessions_per_account: usize,
    /// The share proxy's domain: a page's requests to `*.{domain}` are
    /// carried to the share proxy by the server (the sandbox cannot reach
    /// the host), as a client on the internet would reach a share.
    pub share_domain: Option<String>,
    /// Where the share proxy listens.
    pub share_proxy: Option<SocketAddr>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            chromium: "/usr/lib/chromium/chromium".to_owned(),
            memory_mb: 2048,
            idle_timeout: Duration::from_secs(15 * 60),
            max_sessions_per_account: 5,
            share_domain: None,
            share_proxy: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("no element matches the selector {selector:?}")]
    ElementNotFound { selector: String },
    #[error("{0}")]
    Timeout(String),
    /// The page refused what was asked (a navigation that failed, an
    /// element that cannot be filled, a script error).
    #[error("{0}")]
    Page(String),
    #[error("the session's browser is not answering: {0}")]
    Browser(#[from] CdpError),
}

/// What a new session asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionSettings {
    pub viewport_width: u32,
    pub viewport_height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl SessionSettings {
    fn check(&self) -> Result<(), CoreError> {
        if !(200..=7680).contains(&self.viewport_width) {
            return Err(CoreError::invalid(
                "viewport_width",
                "must be between 200 and 7680 pixels",
            ));
        }
        if !(200..=4320).contains(&self.viewport_height) {
            return Err(CoreError::invalid(
                "viewport_height",
                "must be between 200 and 4320 pixels",
            ));
        }
        if let Some(ua) = &self.user_agent {
            if ua.is_empty() || ua.len() > 512 || ua.chars().any(char::is_control) {
                return Err(CoreError::invalid(
                    "user_agent",
                    "must be 1 to 512 characters without control characters",
                ));
            }
        }
        Ok(())
    }
}

/// A session as the API shows it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub vm: Vm,
    pub settings: SessionSettings,
    /// The page it shows, when the browser answered.
    pub url: Option<String>,
    pub title: Option<String>,
}

/// The browser product, over the VM core.
pub struct Browser {
    core: Arc<Service>,
    config: BrowserConfig,
    sessions: Mutex<HashMap<VmId, Arc<Session>>>,
    /// Serializes creates per account, so the session cap holds.
    creating: paddock_core::keyed_locks::KeyedLocks<AccountId>,
    share_client: reqwest::Client,
}

impl Browser {
    pub fn new(core: Arc<Service>, config: BrowserConfig) -> Self {
        Self {
            core,
            config,
            sessions: Mutex::default(),
            creating: Default::default(),
            share_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Starts a session: a sandbox, Chromium in it, and the server's
    /// DevTools connection to its page.
    pub async fn create_session(
        self: &Arc<Self>,
        account: &AccountId,
        settings: SessionSettings,
    ) -> Result<SessionInfo, BrowserError> {
        settings.check()?;
        let vms = self.core.vms();
        let vm = {
            let _one_at_a_time = self.creating.lock(account).await;
            let held = self.live_session_vms(account).await?.len();
            if held >= self.config.max_sessions_per_account {
                return Err(CoreError::ResourceExhausted(format!(
                    "the account holds {held} browser sessions, the most it may; close one first"
                ))
                .into());
            }
            let mut metadata = Metadata::new();
            metadata.insert(
                MARK.to_owned(),
                serde_json::to_value(&settings)
                    .map_err(|e| CoreError::Unavailable(e.to_string()))?,
            );
            let spec = VmSpec {
                session_id: None,
                // Idleness counts from when the browser is up: a start
                // slower than a short idle timeout must not end it.
                lifetime_seconds: Some(
                    self.config
                        .idle_timeout
                        .as_secs()
                        .max(START_DEADLINE.as_secs() + 30),
                ),
                resources: vms.resources(Some(i64::from(self.config.memory_mb)), None, None)?,
                metadata,
                env: Env::default(),
                image_variant: vms.config().default_variant.clone(),
                options: VmOptions::default(),
                volumes: Vec::new(),
                provider: None,
                placement: paddock_core::model::Placement::ThisNode,
            };
            vms.create_vm(account, spec, true).await?
        };
        if vm.status != VmStatus::Running {
            let why = vm
                .status_reason
                .clone()
                .unwrap_or_else(|| format!("the sandbox is {}", vm.status.as_str()));
            let _ = vms.delete_vm(account, &vm.id).await;
            return Err(CoreError::Unavailable(why).into());
        }
        match self.start_browser(account, &vm, &settings).await {
            Ok(session) => {
                let idle = paddock_core::model::VmPatch {
                    lifetime_seconds: Some(self.config.idle_timeout.as_secs().max(1)),
                    ..Default::default()
                };
                if let Err(e) = vms.patch_vm(account, &vm.id, idle).await {
                    let _ = vms.delete_vm(account, &vm.id).await;
                    return Err(e.into());
                }
                lock(&self.sessions).insert(vm.id.clone(), Arc::new(session));
                Ok(SessionInfo {
                    vm,
                    settings,
                    url: Some("about:blank".to_owned()),
                    title: Some(String::new()),
                })
            }
            Err(e) => {
                // A session whose browser never started is not left behind.
                let _ = vms.delete_vm(account, &vm.id).await;
                Err(e)
            }
        }
    }

    /// Runs Chromium in `vm` and connects to its page.
    async fn start_browser(
        &self,
        account: &AccountId,
        vm: &Vm,
        settings: &SessionSettings,
    ) -> Result<Session, BrowserError> {
        let vms = self.core.vms();
        let execution = vms
            .start_background(account, &vm.id, self.chromium_command(settings))
            .await?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            match self.connect(account, vm, settings.clone()).await {
                Ok(session) => return Ok(session),
                Err(e) if Instant::now() >= deadline => {
                    return Err(CoreError::Unavailable(format!(
                        "the browser did not start within {} s: {e}",
                        START_DEADLINE.as_secs()
                    ))
                    .into())
                }
                Err(_) => {}
            }
            let run = vms.get_execution(account, &execution.id).await?;
            if run.status != ExecutionStatus::Running {
                let said = run.stderr.lines().rev().find(|l| !l.trim().is_empty());
                return Err(CoreError::Unavailable(format!(
                    "the browser exited at start (exit code {}): {}",
                    run.exit_code.unwrap_or(-1),
                    said.unwrap_or("it printed nothing")
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Chromium's command: its profile, caches and font configuration in
    /// the sandbox's `/tmp` (the default image's `/etc` has no fonts
    /// configuration), DevTools on loopback only, the settings as
    /// arguments (never spliced into the script).
    fn chromium_command(&self, settings: &SessionSettings) -> ExecRequest {
        const SCRIPT: &str = r#"set -e
chromium="$1"; width="$2"; height="$3"; agent="$4"
if [ ! -x "$chromium" ]; then
  echo "Chromium is not installed ($chromium): install Debian's chromium package on the host" >&2
  exit 127
fi
home=/tmp/.paddock-browser
mkdir -p "$home/fontconfig"
printf '%s\n' '<?xml version="1.0"?>' '<!DOCTYPE fontconfig SYSTEM "fonts.dtd">' \
  "<fontconfig><dir>/usr/share/fonts</dir><cachedir>$home/fontconfig</cachedir></fontconfig>" \
  > "$home/fonts.conf"
export HOME="$home" FONTCONFIG_FILE="$home/fonts.conf"
set -- "$chromium" --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
  --no-first-run --no-default-browser-check --disable-extensions --disable-sync \
  --disable-background-networking --disable-component-update --mute-audio \
  --remote-debugging-address=127.0.0.1 --remote-debugging-port=9222 \
  --user-data-dir="$home/profile" --window-size="$width,$height" \
  ${agent:+"--user-agent=$agent"} about:blank
exec "$@"
"#;
        let argv = [
            "sh",
            "-c",
            SCRIPT,
            "chromium",
            &self.config.chromium,
            &settings.viewport_width.to_string(),
            &settings.viewport_height.to_string(),
            settings.user_agent.as_deref().unwrap_or(""),
        ]
        .map(str::to_owned)
        .to_vec();
        ExecRequest {
            argv,
            env: Vec::new(),
            cwd: Some("/tmp".to_owned()),
            stdin: None,
            stdin_stream: None,
            timeout: None,
            started: None,
            user: None,
        }
    }

    /// A DevTools connection to the page of the browser in `vm`.
    async fn connect(
        &self,
        account: &AccountId,
        vm: &Vm,
        settings: SessionSettings,
    ) -> Result<Session, BrowserError> {
        let vms = self.core.vms();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let stream = vms
            .connect_in_vm(account, &vm.id, loopback, DEVTOOLS_PORT)
            .await?;
        let path = cdp::Cdp::page_path(stream).await?;
        let stream = vms
            .connect_in_vm(account, &vm.id, loopback, DEVTOOLS_PORT)
            .await?;
        let cdp = cdp::Cdp::connect(stream, &path).await?;
        let shares = match (&self.config.share_domain, self.config.share_proxy) {
            (Some(domain), Some(proxy)) => Some(share_fetch::ShareRoute {
                domain: domain.clone(),
                proxy,
                client: self.share_client.clone(),
                core: Arc::clone(&self.core),
                account: account.clone(),
                vm: vm.id.clone(),
            }),
            _ => None,
        };
        Session::open(account.clone(), vm.id.clone(), cdp, settings, shares).await
    }

    /// The account's session `id`, connected: from the table, or found
    /// again from its VM (after a restart of the server, or a browser
    /// connection that broke).
    async fn session(&self, account: &AccountId, id: &VmId) -> Result<Arc<Session>, BrowserError> {
        let known = lock(&self.sessions).get(id).cloned();
        if let Some(session) = known {
            if &session.account != account {
                return Err(not_found(id));
            }
            if session.is_connected() {
                self.extend(&session).await;
                return Ok(session);
            }
        }
        let vm = self.session_vm(account, id).await?;
        let settings = settings_of(&vm).ok_or_else(|| not_found(id))?;
        let session = Arc::new(self.connect(account, &vm, settings).await?);
        lock(&self.sessions).insert(id.clone(), Arc::clone(&session));
        self.extend(&session).await;
        Ok(session)
    }

    /// The running VM of the account's session `id`.
    async fn session_vm(&self, account: &AccountId, id: &VmId) -> Result<Vm, BrowserError> {
        let vm = self
            .core
            .vms()
            .get_vm(account, id)
            .await
            .map_err(|e| match e {
                CoreError::NotFound { .. } => not_found(id),
                other => other.into(),
            })?;
        if settings_of(&vm).is_none() || !matches!(vm.status, VmStatus::Running) {
            lock(&self.sessions).remove(id);
            return Err(not_found(id));
        }
        Ok(vm)
    }

    /// Pushes the session's end forward by the idle timeout, at most once
    /// every [`EXTEND_EVERY`].
    async fn extend(&self, session: &Session) {
        if !session.due_for_extension(EXTEND_EVERY) {
            return;
        }
        let patch = paddock_core::model::VmPatch {
            lifetime_seconds: Some(self.config.idle_timeout.as_secs().max(1)),
            ..Default::default()
        };
        if let Err(e) = self
            .core
            .vms()
            .patch_vm(&session.account, &session.vm, patch)
            .await
        {
            tracing::debug!(vm_id = %session.vm, error = %e, "could not extend a browser session");
        }
    }

    /// The account's session `id`, with the page it shows.
    pub async fn get_session(
        &self,
        account: &AccountId,
        id: &VmId,
    ) -> Result<SessionInfo, BrowserError> {
        let session = self.session(account, id).await?;
        let page = session.page_info().await.ok();
        let vm = self.session_vm(account, id).await?;
        Ok(SessionInfo {
            vm,
            settings: session.settings.clone(),
            url: page.as_ref().map(|p| p.url.clone()),
            title: page.map(|p| p.title),
        })
    }

    /// The account's live sessions, newest first.
    pub async fn list_sessions(&self, account: &AccountId) -> Result<Vec<SessionInfo>, CoreError> {
        Ok(self
            .live_session_vms(account)
            .await?
            .into_iter()
            .filter_map(|vm| {
                let settings = settings_of(&vm)?;
                Some(SessionInfo {
                    vm,
                    settings,
                    url: None,
                    title: None,
                })
            })
            .collect())
    }

    async fn live_session_vms(&self, account: &AccountId) -> Result<Vec<Vm>, CoreError> {
        let filter = VmFilter {
            statuses: VmStatusSet::of(&[VmStatus::Creating, VmStatus::Running]),
            limit: 10_000,
            ..Default::default()
        };
        Ok(self
            .core
            .vms()
            .list_vms(account, &filter)
            .await?
            .into_iter()
            .filter(|vm| settings_of(vm).is_some())
            .collect())
    }

    /// Ends session `id`: its browser and its sandbox.
    pub async fn close_session(&self, account: &AccountId, id: &VmId) -> Result<(), BrowserError> {
        self.session_vm(account, id).await?;
        lock(&self.sessions).remove(id);
        self.core.vms().delete_vm(account, id).await?;
        Ok(())
    }

    /// Runs `use_page` on the account's session `id`, one interaction at a
    /// time per session.
    pub(crate) async fn with_session<T>(
        &self,
        account: &AccountId,
        id: &VmId,
        use_page: impl AsyncFnOnce(&Session) -> Result<T, BrowserError>,
    ) -> Result<T, BrowserError> {
        let session = self.session(account, id).await?;
        let _turn = session.turn.lock().await;
        use_page(&session).await
    }
}

/// A session's settings, when `vm` is one.
fn settings_of(vm: &Vm) -> Option<SessionSettings> {
    serde_json::from_value(vm.metadata.get(MARK)?.clone()).ok()
}

fn not_found(id: &VmId) -> BrowserError {
    CoreError::not_found("browser session", id).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(w: u32, h: u32, ua: Option<&str>) -> SessionSettings {
        SessionSettings {
            viewport_width: w,
            viewport_height: h,
            user_agent: ua.map(str::to_owned),
        }
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        assert!(settings(1920, 1080, None).check().is_ok());
        let field = |s: SessionSettings| match s.check() {
            Err(CoreError::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(settings(10, 1080, None)), "viewport_width");
        assert_eq!(field(settings(1920, 99_999, None)), "viewport_height");
        assert_eq!(field(settings(1920, 1080, Some("a\nb"))), "user_agent");
    }
}
