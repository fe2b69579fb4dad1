//! Desktops for computer use: a VM of the `computer-use` image variant
//! runs a display (Xvfb), a window manager (openbox), a VNC server on its
//! loopback (x11vnc) and noVNC served by websockify on port 6080, which a
//! private share publishes as the viewer. The image is built at first use
//! (per account, from the default image, whose `/usr` is the host's
//! Debian packages: `scripts/deps.sh`) and cached in the account's
//! library.
//!
//! The desktop's control API (`/v1/computeruse/{session}/…`: screenshot,
//! mouse, keyboard, recordings) is served by the server, which runs the X
//! tools in the desktop through the agent: no control daemon runs in the
//! desktop, and nothing but the share's port listens beyond its loopback.

pub mod control;
mod recordings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_core::build::BuildRequest;
use paddock_core::exec::ExecRequest;
use paddock_core::ids::{AccountId, SessionId};
use paddock_core::model::{NewShare, Share, Vm, VmSpec, VmStatus};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde_json::json;

pub use control::{Action, ActionResult};
pub use recordings::{Recording, RecordingQuery, RecordingStatus};

/// The image variant a VM asks for to be a desktop.
pub const VARIANT: &str = "computer-use";

/// The metadata key that marks a VM as a desktop, with its display's size.
pub const MARK: &str = "paddock.desktop";

/// Where noVNC (websockify) listens in the desktop.
pub const VIEWER_PORT: u16 = 6080;

/// The X display the desktop runs.
const DISPLAY: &str = ":1";

/// How long a new desktop's viewer may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(45);

/// The script that starts the desktop, written into its image.
const START_SCRIPT: &str = r#"#!/bin/sh
# paddock's desktop: a display, a window manager, VNC on loopback only,
# and noVNC (websockify) on port 6080 for the viewer's share.
set -e
width="${1:-1280}"; height="${2:-800}"
export DISPLAY=:1 HOME=/root
mkdir -p /tmp/.X11-unix /root
Xvfb :1 -screen 0 "${width}x${height}x24" -nolisten tcp > /tmp/.paddock-xvfb.log 2>&1 &
# The display is up once a client can paint its root window.
i=0
until xsetroot -solid '#2f6f8f' 2> /dev/null; do
  i=$((i + 1))
  if [ "$i" -gt 200 ]; then
    echo "the display (Xvfb) did not start:" >&2
    cat /tmp/.paddock-xvfb.log >&2
    exit 1
  fi
  sleep 0.05
done
# openbox clears the root window as it starts: it paints it again once up.
openbox --startup "xsetroot -solid '#2f6f8f'" > /tmp/.paddock-openbox.log 2>&1 &
x11vnc -display :1 -forever -shared -nopw -localhost -rfbport 5900 -quiet > /tmp/.paddock-vnc.log 2>&1 &
exec websockify --web /usr/share/novnc 6080 localhost:5900
"#;

#[derive(Debug, Clone)]
pub struct DesktopConfig {
    pub width: u32,
    pub height: u32,
    /// The least memory a desktop gets, in MiB.
    pub min_memory_mb: u32,
    /// Where recordings are kept.
    pub recordings_dir: PathBuf,
}

/// A running desktop's viewer: its share and a one-time login for it.
#[derive(Debug)]
pub struct Viewer {
    pub vm: Vm,
    pub share: Share,
    pub login: String,
}

/// The desktops product.
pub struct Desktops {
    core: Arc<Service>,
    config: DesktopConfig,
    /// One image build per account at a time.
    building: paddock_core::keyed_locks::KeyedLocks<AccountId>,
    recorder: recordings::Recorder,
}

fn shell(argv: Vec<String>, env: Vec<(String, String)>) -> ExecRequest {
    ExecRequest {
        argv,
        env,
        cwd: Some("/root".into()),
        stdin: None,
        stdin_stream: None,
        timeout: Some(Duration::from_secs(60)),
        started: None,
        user: None,
    }
}

/// Whether `spec` asks for a desktop.
pub fn is_desktop(spec: &VmSpec) -> bool {
    spec.image_variant == VARIANT
}

impl Desktops {
    pub fn new(core: Arc<Service>, config: DesktopConfig) -> Arc<Self> {
        let recorder = recordings::Recorder::new(Arc::clone(&core), config.recordings_dir.clone());
        Arc::new(Self {
            core,
            config,
            building: Default::default(),
            recorder,
        })
    }

    /// The desktop image in the account's library, built at its first use.
    async fn image(&self, account: &AccountId) -> Result<String, CoreError> {
        use sha2::Digest;
        let hash = hex::encode(&sha2::Sha256::digest(START_SCRIPT.as_bytes())[..6]);
        let tag = format!("paddock.local/desktop:{hash}");
        let _one = self.building.lock(account).await;
        if self.core.images().find(account, &tag).await?.is_some() {
            return Ok(tag);
        }
        let dockerfile = format!(
            "FROM default\n\
             RUN for tool in Xvfb x11vnc websockify openbox xdotool ffmpeg xsetroot; do \
             command -v $tool > /dev/null || {{ echo \"$tool is not installed on the host (scripts/deps.sh installs it)\" >&2; exit 1; }}; done; \
             test -e /usr/share/novnc/vnc.html\n\
             COPY --chmod=755 <<PADDOCK_DESKTOP /opt/paddock/desktop.sh\n{START_SCRIPT}PADDOCK_DESKTOP\n"
        );
        let vms = self.core.vms();
        let slot = vms.start_image_build(account).await?;
        let (events, mut log) = tokio::sync::mpsc::channel(64);
        let said = tokio::spawn(async move {
            let mut out = String::new();
            while let Some(e) = log.recv().await {
                if let paddock_core::build::BuildEvent::Stderr(b) = e {
                    out.push_str(&String::from_utf8_lossy(&b));
                }
            }
            out
        });
        let request = BuildRequest {
            dockerfile,
            tag: tag.clone(),
            build_args: Vec::new(),
            context: Default::default(),
        };
        let built = vms.build_image(account, slot, request, events).await;
        let said = said.await.unwrap_or_default();
        built.map_err(|e| {
            CoreError::Unavailable(format!(
                "the desktop image could not be built: {e} {}",
                said.trim()
            ))
        })?;
        Ok(tag)
    }

    /// Creates a desktop VM from `spec` (which asks for [`VARIANT`]): its
    /// image built at first use, its display, VNC and viewer started. It
    /// answers once the viewer answers.
    pub async fn create(&self, account: &AccountId, mut spec: VmSpec) -> Result<Vm, CoreError> {
        spec.image_variant = self.image(account).await?;
        if spec.resources.memory_mb() < self.config.min_memory_mb {
            spec.resources = self.core.vms().resources(
                Some(i64::from(self.config.min_memory_mb)),
                Some(i64::from(spec.resources.vcpu_count())),
                Some(i64::from(spec.resources.disk_mb())).filter(|d| *d > 0),
            )?;
        }
        spec.metadata.insert(
            MARK.to_owned(),
            json!({"width": self.config.width, "height": self.config.height, "display": DISPLAY}),
        );
        let vms = self.core.vms();
        let vm = vms.create_vm(account, spec, true).await?;
        if vm.status != VmStatus::Running {
            return Ok(vm);
        }
        let argv = [
            "/opt/paddock/desktop.sh".to_owned(),
            self.config.width.to_string(),
            self.config.height.to_string(),
        ]
        .to_vec();
        let job = vms
            .start_background(account, &vm.id, shell(argv, Vec::new()))
            .await?;
        let deadline = Instant::now() + START_DEADLINE;
        let loopback = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        loop {
            if vms
                .connect_in_vm(account, &vm.id, loopback, VIEWER_PORT)
                .await
                .is_ok()
            {
                return vms.get_vm(account, &vm.id).await;
            }
            let run = vms.get_execution(account, &job.id).await?;
            let ended = run.status != paddock_core::model::ExecutionStatus::Running;
            if ended || Instant::now() > deadline {
                let _ = vms.delete_vm(account, &vm.id).await;
                return Err(CoreError::Unavailable(format!(
                    "the desktop did not start: {}",
                    run.stderr.trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The account's running desktop of session `session`.
    pub async fn desktop_of(&self, account: &AccountId, session: &str) -> Result<Vm, CoreError> {
        let not_found = || CoreError::not_found("desktop", session);
        let id: SessionId = session.parse().map_err(|_| not_found())?;
        let vm = self
            .core
            .vms()
            .session_latest_vm(account, &id)
            .await
            .map_err(|_| not_found())?;
        if !vm.metadata.contains_key(MARK) {
            return Err(not_found());
        }
        if vm.status != VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the desktop is {}",
                vm.status.as_str()
            )));
        }
        Ok(vm)
    }

    /// The session's desktop viewer: the private share of its noVNC (made
    /// once) and a fresh one-time login for it.
    pub async fn viewer(&self, account: &AccountId, session: &str) -> Result<Viewer, CoreError> {
        let vm = self.desktop_of(account, session).await?;
        let vms = self.core.vms();
        let existing = vms
            .list_shares(account, Some(&vm.id))
            .await?
            .into_iter()
            .find(|s| s.port == VIEWER_PORT);
        let (share, login) = match existing {
            Some(share) => {
                let login = vms.share_login(account, &share.id).await?;
                (share, login)
            }
            None => {
                let NewShare { share, login, .. } = vms
                    .create_share(account, &vm.id, VIEWER_PORT, false)
                    .await?;
                let login = match login {
                    Some(login) => login,
                    None => vms.share_login(account, &share.id).await?,
                };
                (share, login)
            }
        };
        Ok(Viewer {
            vm,
            share,
            login: login.expose().to_owned(),
        })
    }

    /// Runs one action of the control API in the session's desktop.
    pub async fn act(
        &self,
        account: &AccountId,
        session: &str,
        action: Action,
    ) -> Result<ActionResult, CoreError> {
        let vm = self.desktop_of(account, session).await?;
        match action {
            Action::StartRecording => Ok(ActionResult::Recording(
                self.recorder.start(account, &vm, self.size(&vm)).await?,
            )),
            Action::StopRecording => Ok(ActionResult::Recording(
                self.recorder.stop(account, &vm).await?,
            )),
            other => control::act(&self.core, account, &vm.id, self.size(&vm), other).await,
        }
    }

    fn size(&self, vm: &Vm) -> (u32, u32) {
        let mark = vm.metadata.get(MARK);
        let dim = |k: &str, d: u32| {
            mark.and_then(|m| m[k].as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(d)
        };
        (
            dim("width", self.config.width),
            dim("height", self.config.height),
        )
    }

    pub fn recordings(&self) -> &recordings::Recorder {
        &self.recorder
    }
}

/// The VM a desktop action runs in, with the display set.
pub(crate) fn x_command(argv: &[&str]) -> ExecRequest {
    shell(
        argv.iter().map(|s| (*s).to_owned()).collect(),
        vec![("DISPLAY".into(), DISPLAY.into())],
    )
}
