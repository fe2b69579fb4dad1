//! Recordings of desktop sessions: `ffmpeg` captures the display inside
//! the desktop (x11grab, MPEG-4 in MP4) until asked to stop; the file is
//! then copied out through the agent to the server's recordings
//! directory and recorded. A download goes through a short-lived signed
//! URL, as a presigned object-store URL would, so the SDK can fetch it
//! without its key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use paddock_core::clock::Timestamp;
use paddock_core::exec::{FileContent, SandboxPath};
use paddock_core::ids::{AccountId, VmId};
use paddock_core::model::{Vm, VmStatus};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::x_command;

const KIND: &str = "desktop_recording";

/// The longest one recording runs.
const MAX_SECONDS: u32 = 3600;

/// How long a signed download URL works.
pub const DOWNLOAD_TTL_SECONDS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingStatus {
    /// The display is being captured.
    Recording,
    /// Captured; being copied out of the desktop.
    Uploading,
    Ready,
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Uploading => "uploading",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "recording" => Ok(Self::Recording),
            "uploading" => Ok(Self::Uploading),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            _ => Err(CoreError::invalid(
                "status",
                "must be recording, uploading, ready or failed",
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recording {
    pub id: String,
    pub account_id: AccountId,
    pub session_id: String,
    pub vm_id: VmId,
    pub status: RecordingStatus,
    /// `mp4`.
    pub format: String,
    pub size_bytes: u64,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

paddock_core::document!(Recording, KIND,
    created: |r| r.created_at,
    updated: |r| r.finished_at.unwrap_or(r.created_at),
    state: |r| r.status.as_str(),
);

#[derive(Debug, Clone, Default)]
pub struct RecordingQuery {
    pub session_id: Option<String>,
    pub status: Option<RecordingStatus>,
    pub limit: u32,
    pub offset: u32,
}

/// Where a recording is captured inside its desktop.
fn capture_path(id: &str) -> String {
    format!("/tmp/.paddock-recording-{id}.mp4")
}

fn not_found(id: &str) -> CoreError {
    CoreError::not_found("recording", id)
}

pub struct Recorder {
    core: Arc<Service>,
    dir: PathBuf,
}

impl Recorder {
    pub(super) fn new(core: Arc<Service>, dir: PathBuf) -> Self {
        Self { core, dir }
    }

    /// Where a ready recording's file is on the server.
    pub fn file(&self, recording: &Recording) -> PathBuf {
        self.dir
            .join(recording.account_id.as_str())
            .join(format!("{}.mp4", recording.id))
    }

    async fn save(&self, r: &Recording) -> Result<(), CoreError> {
        self.core.documents().save(r).await
    }

    /// The recording capturing `vm` now, if one is.
    async fn capturing(
        &self,
        account: &AccountId,
        vm: &VmId,
    ) -> Result<Option<Recording>, CoreError> {
        Ok(self
            .core
            .documents()
            .load_all::<Recording>(Some(account))
            .await?
            .into_iter()
            .find(|r| &r.vm_id == vm && r.status == RecordingStatus::Recording))
    }

    pub(super) async fn start(
        &self,
        account: &AccountId,
        vm: &Vm,
        (w, h): (u32, u32),
    ) -> Result<Recording, CoreError> {
        if self.capturing(account, &vm.id).await?.is_some() {
            return Err(CoreError::Conflict(
                "the desktop is already being recorded; stop that recording first".into(),
            ));
        }
        let id = format!("rec_{}", &VmId::generate().as_str()[3..]);
        let size = format!("{w}x{h}");
        let path = capture_path(&id);
        let max = MAX_SECONDS.to_string();
        let argv = [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "x11grab",
            "-framerate",
            "10",
            "-video_size",
            &size,
            "-i",
            ":1",
            "-c:v",
            "mpeg4",
            "-q:v",
            "5",
            "-t",
            &max,
            &path,
        ];
        self.core
            .vms()
            .start_background(account, &vm.id, x_command(&argv))
            .await?;
        let recording = Recording {
            id,
            account_id: account.clone(),
            session_id: vm.session_id.to_string(),
            vm_id: vm.id.clone(),
            status: RecordingStatus::Recording,
            format: "mp4".into(),
            size_bytes: 0,
            duration_ms: None,
            error: None,
            created_at: Timestamp::now(),
            finished_at: None,
        };
        self.core.documents().insert(&recording).await?;
        Ok(recording)
    }

    /// Stops the desktop's recording: the capture ends (SIGINT, so the
    /// file is finished), the file is copied out, the recording is ready.
    pub(super) async fn stop(&self, account: &AccountId, vm: &Vm) -> Result<Recording, CoreError> {
        let mut recording = self.capturing(account, &vm.id).await?.ok_or_else(|| {
            CoreError::FailedPrecondition("the desktop is not being recorded".into())
        })?;
        let path = capture_path(&recording.id);
        let vms = self.core.vms();
        let _ = vms
            .exec_collect(account, &vm.id, x_command(&["pkill", "-INT", "-f", &path]))
            .await;
        for _ in 0..100 {
            let running = vms
                .exec_collect(account, &vm.id, x_command(&["pgrep", "-f", &path]))
                .await
                .is_ok_and(|o| o.status.code == Some(0));
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        recording.status = RecordingStatus::Uploading;
        self.save(&recording).await?;
        match self.copy_out(account, &vm.id, &recording, &path).await {
            Ok(size) => {
                recording.status = RecordingStatus::Ready;
                recording.size_bytes = size;
            }
            Err(e) => {
                recording.status = RecordingStatus::Failed;
                recording.error = Some(e.to_string());
            }
        }
        let now = Timestamp::now();
        recording.finished_at = Some(now);
        recording.duration_ms =
            u64::try_from(now.unix_millis() - recording.created_at.unix_millis()).ok();
        self.save(&recording).await?;
        let _ = vms
            .exec_collect(account, &vm.id, x_command(&["rm", "-f", &path]))
            .await;
        Ok(recording)
    }

    async fn copy_out(
        &self,
        account: &AccountId,
        vm: &VmId,
        r: &Recording,
        path: &str,
    ) -> Result<u64, CoreError> {
        let source = SandboxPath::parse(path).map_err(|e| CoreError::Unavailable(e.to_string()))?;
        let FileContent::File { mut data, .. } =
            self.core.vms().read_file(account, vm, &source).await?
        else {
            return Err(CoreError::Unavailable("the capture is not a file".into()));
        };
        let target = self.file(r);
        let io =
            |e: std::io::Error| CoreError::Unavailable(format!("the recordings directory: {e}"));
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let mut out = tokio::fs::File::create(&target).await.map_err(io)?;
        let mut size = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(io)?;
            size += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        if size == 0 {
            return Err(CoreError::Unavailable("the capture is empty".into()));
        }
        Ok(size)
    }

    /// A recording whose desktop ended while it captured failed.
    async fn settled(&self, mut r: Recording) -> Recording {
        if r.status != RecordingStatus::Recording {
            return r;
        }
        let running = self
            .core
            .vms()
            .get_vm(&r.account_id, &r.vm_id)
            .await
            .is_ok_and(|vm| vm.status == VmStatus::Running);
        if !running {
            r.status = RecordingStatus::Failed;
            r.error = Some("the desktop ended while it was being recorded".into());
            r.finished_at = Some(Timestamp::now());
            let _ = self.save(&r).await;
        }
        r
    }

    pub async fn get(&self, account: &AccountId, id: &str) -> Result<Recording, CoreError> {
        let r: Recording = self
            .core
            .documents()
            .load(account, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        Ok(self.settled(r).await)
    }

    /// The account's recordings, newest first.
    pub async fn list(
        &self,
        account: &AccountId,
        q: &RecordingQuery,
    ) -> Result<Vec<Recording>, CoreError> {
        if !(1..=200).contains(&q.limit) {
            return Err(CoreError::invalid("limit", "must be between 1 and 200"));
        }
        let mut all = Vec::new();
        for r in self
            .core
            .documents()
            .load_all::<Recording>(Some(account))
            .await?
        {
            all.push(self.settled(r).await);
        }
        all.retain(|r| {
            q.session_id.as_ref().is_none_or(|s| &r.session_id == s)
                && q.status.is_none_or(|s| r.status == s)
        });
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(all
            .into_iter()
            .skip(q.offset as usize)
            .take(q.limit as usize)
            .collect())
    }

    /// Deletes a recording and its file.
    pub async fn delete(&self, account: &AccountId, id: &str) -> Result<Recording, CoreError> {
        let r = self.get(account, id).await?;
        match tokio::fs::remove_file(self.file(&r)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(CoreError::Unavailable(format!("the recording's file: {e}")))
            }
            _ => {}
        }
        self.core
            .documents()
            .delete::<Recording>(account, id)
            .await?;
        Ok(r)
    }

    fn signature(&self, account: &AccountId, id: &str, expires: u64) -> String {
        self.core.vms().account_credential(
            "recording-download",
            account,
            &format!("{id}:{expires}"),
        )
    }

    /// The query of a signed download URL of a ready recording: it works
    /// without a key until it expires.
    pub async fn download_query(&self, account: &AccountId, id: &str) -> Result<String, CoreError> {
        let r = self.get(account, id).await?;
        if r.status != RecordingStatus::Ready {
            return Err(CoreError::FailedPrecondition(format!(
                "the recording is {}",
                r.status.as_str()
            )));
        }
        let expires = u64::try_from(Timestamp::now().unix_millis() / 1000).unwrap_or(0)
            + DOWNLOAD_TTL_SECONDS;
        Ok(format!(
            "account={account}&expires={expires}&signature={}",
            self.signature(account, id, expires)
        ))
    }

    /// The ready recording a signed URL names, when its signature holds
    /// and it has not expired; not found otherwise (whatever was wrong).
    pub async fn signed(
        &self,
        account: &str,
        id: &str,
        expires: u64,
        signature: &str,
    ) -> Result<(Recording, PathBuf), CoreError> {
        let account: AccountId = account.parse().map_err(|_| not_found(id))?;
        let now = u64::try_from(Timestamp::now().unix_millis() / 1000).unwrap_or(u64::MAX);
        let expected = self.signature(&account, id, expires);
        let matches =
            paddock_core::secrets::constant_time_eq(expected.as_bytes(), signature.as_bytes());
        if !matches || expires < now {
            return Err(not_found(id));
        }
        let r = self.get(&account, id).await?;
        if r.status != RecordingStatus::Ready {
            return Err(not_found(id));
        }
        let file = self.file(&r);
        Ok((r, file))
    }
}
