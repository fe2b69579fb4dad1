//! Tapes: what happens in a session's VM, recorded step by step — each
//! command with its output, exit code and timing, a terminal's input and
//! output, files moved in and out, and (with `record_fs`) a checkpoint of
//! the files after each step that holds only what changed. A tape can be
//! read back (events, lanes), compared between two steps (diff), branched
//! into a new VM whose files are the tape's at a step, exported whole,
//! stopped and deleted; it ends itself after its retention.
//!
//! The record is a core document (the tape) and an append-only log of
//! events in the store beside it (`tape/{id}`, each event one entry whose
//! sequence number orders it); checkpoints live under the tapes
//! directory. The core tells the recorder what happens in a VM it watches
//! (`Vms::add_observer`), whichever surface caused it.

mod branch;
pub mod checkpoints;
mod diff;
mod recorder;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use paddock_core::clock::Timestamp;
use paddock_core::ids::{AccountId, SessionId, VmId};
use paddock_core::service::Service;
use paddock_core::store::JobLogChunk;
use paddock_core::CoreError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use branch::Branched;
pub use diff::{PathChange, TapeDiff};
use recorder::Recorder;

const KIND: &str = "tape";

/// The most events one `events` answer carries.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// The most bytes of an appended event's payload.
const MAX_PAYLOAD_BYTES: usize = 256 << 10;

/// The most bytes one tape's checkpoints may store.
const MAX_TAPE_BYTES: u64 = 4 << 30;

/// The most bytes an export carries (its contents base64 inline).
const MAX_EXPORT_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapeStatus {
    Recording,
    Stopped,
}

impl TapeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recording => "recording",
            Self::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "recording" => Ok(Self::Recording),
            "stopped" => Ok(Self::Stopped),
            _ => Err(CoreError::invalid("status", "must be recording or stopped")),
        }
    }
}

/// A tape as its document keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tape {
    pub id: String,
    pub account_id: AccountId,
    pub session_id: String,
    pub vm_id: VmId,
    pub status: TapeStatus,
    pub record_fs: bool,
    pub record_egress_content: bool,
    pub retention_days: u32,
    /// The last step given out (0: the start, whose checkpoint is the
    /// files as they were when recording began).
    pub steps: u64,
    /// The last event's sequence number.
    pub events: u64,
    pub checkpoints: u64,
    /// What its checkpoints store.
    pub bytes_stored: u64,
    /// Why checkpoints stopped, when they did.
    #[serde(default)]
    pub checkpoint_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub stopped_at: Option<Timestamp>,
    /// When it is deleted.
    pub expires_at: Timestamp,
    /// For a branch's tape: the tape and step it branched from.
    #[serde(default)]
    pub parent_tape_id: Option<String>,
    #[serde(default)]
    pub parent_step_id: Option<u64>,
}

paddock_core::document!(Tape, KIND,
    created: |t| t.created_at,
    updated: |t| t.updated_at,
    state: |t| t.status.as_str(),
);

/// One recorded event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapeEvent {
    /// Its place in the tape's log.
    pub seq: u64,
    pub step_id: u64,
    pub parent_step_id: Option<u64>,
    pub kind: String,
    pub payload: Value,
    /// The checkpoint of the files after this step, when one was taken.
    pub checkpoint_id: Option<String>,
    /// When it was recorded (RFC 3339).
    pub ts: String,
}

/// What starting a tape asks for.
#[derive(Debug, Clone)]
pub struct TapeSettings {
    pub record_fs: bool,
    pub record_egress_content: bool,
    pub retention_days: u32,
}

/// A listing's filter.
#[derive(Debug, Clone, Default)]
pub struct TapeQuery {
    pub session_id: Option<String>,
    pub vm_id: Option<String>,
    pub status: Option<TapeStatus>,
    pub limit: u32,
    pub offset: u32,
}

/// An event a client appends (a tool call's span).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: String,
    pub payload: Value,
    pub step_id: Option<u64>,
    pub parent_step_id: Option<u64>,
    pub checkpoint_id: Option<String>,
}

/// The tapes product.
pub struct Tapes {
    core: Arc<Service>,
    dir: PathBuf,
    recorder: Arc<Recorder>,
}

fn log_key(tape: &str) -> String {
    format!("tape/{tape}")
}

fn tape_not_found(id: &str) -> CoreError {
    CoreError::not_found("tape", id)
}

fn checkpoint_id(step: u64) -> String {
    format!("cp_{step}")
}

impl Tapes {
    /// The tapes product over `core`, its checkpoints kept under `dir`.
    /// It watches the core's VMs from now on.
    pub fn new(core: Arc<Service>, dir: PathBuf) -> Arc<Self> {
        let recorder = Recorder::new(Arc::clone(&core), dir.clone());
        core.vms().add_observer(Arc::clone(&recorder) as _);
        Arc::new(Self {
            core,
            dir,
            recorder,
        })
    }

    fn store_of(&self, tape: &str) -> checkpoints::CheckpointStore {
        checkpoints::CheckpointStore::new(self.dir.join(tape))
    }

    /// Records again the tapes that were recording when the server
    /// stopped, whose VMs still run.
    pub async fn recover(&self) -> Result<(), CoreError> {
        let tapes: Vec<Tape> = self.core.documents().load_all(None).await?;
        for tape in tapes {
            if tape.status != TapeStatus::Recording {
                continue;
            }
            let running = self
                .core
                .vms()
                .get_vm(&tape.account_id, &tape.vm_id)
                .await
                .is_ok_and(|vm| vm.status == paddock_core::model::VmStatus::Running);
            if running {
                self.recorder.watch(&tape);
            } else {
                self.finish(&tape.account_id, &tape.id).await?;
            }
        }
        Ok(())
    }

    /// Starts recording session `session`'s VM.
    pub async fn start(
        &self,
        account: &AccountId,
        session: &str,
        settings: TapeSettings,
    ) -> Result<Tape, CoreError> {
        if !(1..=365).contains(&settings.retention_days) {
            return Err(CoreError::invalid(
                "retention_days",
                "must be between 1 and 365",
            ));
        }
        let session_id: SessionId = session
            .parse()
            .map_err(|_| CoreError::not_found("session", session))?;
        let vm = self
            .core
            .vms()
            .session_latest_vm(account, &session_id)
            .await?;
        if vm.status != paddock_core::model::VmStatus::Running {
            return Err(CoreError::FailedPrecondition(format!(
                "the session's VM is {}",
                vm.status.as_str()
            )));
        }
        self.record_vm(account, &vm, settings, None).await
    }

    /// Starts a tape of running VM `vm`; a branch's names its parent.
    pub(crate) async fn record_vm(
        &self,
        account: &AccountId,
        vm: &paddock_core::model::Vm,
        settings: TapeSettings,
        parent: Option<(String, u64)>,
    ) -> Result<Tape, CoreError> {
        if self.recorder.tape_of(&vm.id).is_some() {
            return Err(CoreError::Conflict(
                "a tape already records this session's VM; stop it first".into(),
            ));
        }
        let now = Timestamp::now();
        let mut tape = Tape {
            id: format!("tape_{}", &VmId::generate().as_str()[3..]),
            account_id: account.clone(),
            session_id: vm.session_id.to_string(),
            vm_id: vm.id.clone(),
            status: TapeStatus::Recording,
            record_fs: settings.record_fs,
            record_egress_content: settings.record_egress_content,
            retention_days: settings.retention_days,
            steps: 0,
            events: 0,
            checkpoints: 0,
            bytes_stored: 0,
            checkpoint_error: None,
            created_at: now,
            updated_at: now,
            stopped_at: None,
            expires_at: now.plus_seconds(u64::from(settings.retention_days) * 86_400),
            parent_tape_id: parent.as_ref().map(|(t, _)| t.clone()),
            parent_step_id: parent.map(|(_, s)| s),
        };
        if tape.record_fs {
            // Step 0: the files as they are when recording begins.
            let store = self.store_of(&tape.id);
            let captured = self
                .core
                .vms()
                .read_changes(account, &vm.id, async |trees| {
                    tokio::task::block_in_place(|| store.capture(trees, 0))
                })
                .await?;
            match captured {
                Ok((delta, stored)) => {
                    tape.bytes_stored = stored;
                    tape.checkpoints = u64::from(!delta.is_empty());
                }
                Err(e) => {
                    let _ = store.remove();
                    return Err(CoreError::Unavailable(format!(
                        "the VM's files could not be read for the tape's first checkpoint: {e}"
                    )));
                }
            }
        }
        self.core.documents().insert(&tape).await?;
        self.recorder.watch(&tape);
        Ok(tape)
    }

    /// Stops recording; the tape stays until its retention ends.
    pub async fn stop(&self, account: &AccountId, id: &str) -> Result<Tape, CoreError> {
        self.get(account, id).await?;
        self.finish(account, id).await
    }

    async fn finish(&self, account: &AccountId, id: &str) -> Result<Tape, CoreError> {
        self.recorder.unwatch(id).await;
        change_tape(&self.core, account, id, async |tape: &mut Tape| {
            if tape.status == TapeStatus::Recording {
                tape.status = TapeStatus::Stopped;
                tape.stopped_at = Some(Timestamp::now());
            }
            Ok(tape.clone())
        })
        .await
    }

    pub async fn get(&self, account: &AccountId, id: &str) -> Result<Tape, CoreError> {
        self.core
            .documents()
            .load(account, id)
            .await?
            .ok_or_else(|| tape_not_found(id))
    }

    /// The account's tapes, newest first.
    pub async fn list(
        &self,
        account: &AccountId,
        query: &TapeQuery,
    ) -> Result<Vec<Tape>, CoreError> {
        if query.limit == 0 || query.limit > 500 {
            return Err(CoreError::invalid("limit", "must be between 1 and 500"));
        }
        let mut tapes: Vec<Tape> = self.core.documents().load_all(Some(account)).await?;
        tapes.retain(|t| {
            query.session_id.as_ref().is_none_or(|s| &t.session_id == s)
                && query.vm_id.as_ref().is_none_or(|v| t.vm_id.as_str() == v)
                && query.status.is_none_or(|s| t.status == s)
        });
        tapes.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(tapes
            .into_iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .collect())
    }

    /// Deletes a tape: its document, events and checkpoints.
    pub async fn delete(&self, account: &AccountId, id: &str) -> Result<Tape, CoreError> {
        let tape = self.get(account, id).await?;
        self.recorder.unwatch(id).await;
        self.erase(&tape).await?;
        Ok(tape)
    }

    async fn erase(&self, tape: &Tape) -> Result<(), CoreError> {
        let documents = self.core.documents();
        documents
            .store()
            .delete_job_log(&tape.account_id, &log_key(&tape.id))
            .await?;
        let store = self.store_of(&tape.id);
        tokio::task::spawn_blocking(move || store.remove())
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string()))?
            .map_err(|e| CoreError::Unavailable(format!("the tape's files: {e}")))?;
        documents.delete::<Tape>(&tape.account_id, &tape.id).await
    }

    /// Every event of the tape, oldest first.
    async fn all_events(&self, tape: &Tape) -> Result<Vec<TapeEvent>, CoreError> {
        let store = self.core.documents().store();
        let key = log_key(&tape.id);
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let chunks = store.job_log(&tape.account_id, &key, after, 1000).await?;
            let Some(last) = chunks.last() else {
                break;
            };
            after = last.seq;
            out.extend(
                chunks
                    .iter()
                    .filter_map(|c| serde_json::from_str(&c.data).ok()),
            );
        }
        // A step's event is written when the step ends (a command with
        // its checkpoint), so a later step's may come first in the log.
        out.sort_by_key(|e: &TapeEvent| (e.step_id, e.seq));
        Ok(out)
    }

    /// Events after step `after_step`, of `kind` when given, at most
    /// `limit`, in the order they were recorded.
    pub async fn events(
        &self,
        account: &AccountId,
        id: &str,
        after_step: Option<u64>,
        kind: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TapeEvent>, CoreError> {
        if limit == 0 || limit > MAX_EVENTS_PAGE {
            return Err(CoreError::invalid(
                "limit",
                format!("must be between 1 and {MAX_EVENTS_PAGE}"),
            ));
        }
        let tape = self.get(account, id).await?;
        Ok(self
            .all_events(&tape)
            .await?
            .into_iter()
            .filter(|e| after_step.is_none_or(|s| e.step_id > s))
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .take(limit as usize)
            .collect())
    }

    /// Appends a client's event (a tool call's start or end): a new step,
    /// or part of `step_id`.
    pub async fn append(
        &self,
        account: &AccountId,
        id: &str,
        event: NewEvent,
    ) -> Result<TapeEvent, CoreError> {
        let valid_kind = !event.kind.is_empty()
            && event.kind.len() <= 64
            && event
                .kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-:".contains(&b));
        if !valid_kind {
            return Err(CoreError::invalid(
                "kind",
                "must be 1 to 64 letters, digits, '_', '.', '-' or ':'",
            ));
        }
        if !event.payload.is_object() {
            return Err(CoreError::invalid("payload", "must be an object"));
        }
        if event.payload.to_string().len() > MAX_PAYLOAD_BYTES {
            return Err(CoreError::invalid(
                "payload",
                "must be at most 256 KiB as JSON",
            ));
        }
        let tape = self.get(account, id).await?;
        if tape.status != TapeStatus::Recording {
            return Err(CoreError::FailedPrecondition(
                "the tape is stopped: events are appended while it records".into(),
            ));
        }
        for (field, step) in [
            ("step_id", event.step_id),
            ("parent_step_id", event.parent_step_id),
        ] {
            if step.is_some_and(|s| s > tape.steps) {
                return Err(CoreError::invalid(
                    field,
                    format!("the tape's last step is {}", tape.steps),
                ));
            }
        }
        if let Some(cp) = &event.checkpoint_id {
            let known = cp
                .strip_prefix("cp_")
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s <= tape.steps);
            if !known {
                return Err(CoreError::invalid(
                    "checkpoint_id",
                    "names no checkpoint of this tape",
                ));
            }
        }
        self.record(
            account,
            id,
            Pending {
                step: event.step_id,
                parent_step_id: event.parent_step_id,
                kind: event.kind,
                payload: event.payload,
                checkpoint: event.checkpoint_id.map(Checkpoint::Named),
            },
        )
        .await
    }

    /// Writes one event: a step for it (a new one unless it names one),
    /// the next sequence number, the entry in the log, the tape's
    /// counters.
    pub(crate) async fn record(
        &self,
        account: &AccountId,
        id: &str,
        pending: Pending,
    ) -> Result<TapeEvent, CoreError> {
        record(&self.core, account, id, pending).await
    }

    /// How many events of each kind the tape holds.
    pub async fn lanes(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<(Tape, BTreeMap<String, u64>), CoreError> {
        let tape = self.get(account, id).await?;
        let mut lanes: BTreeMap<String, u64> = BTreeMap::new();
        for e in self.all_events(&tape).await? {
            *lanes.entry(e.kind).or_default() += 1;
        }
        Ok((tape, lanes))
    }

    fn fs_store(&self, tape: &Tape) -> Result<checkpoints::CheckpointStore, CoreError> {
        if !tape.record_fs {
            return Err(CoreError::FailedPrecondition(
                "the tape does not record the VM's files (record_fs is off)".into(),
            ));
        }
        Ok(self.store_of(&tape.id))
    }

    fn check_step(tape: &Tape, field: &str, step: u64) -> Result<(), CoreError> {
        if step > tape.steps {
            return Err(CoreError::invalid(
                field,
                format!("the tape's steps run from 0 to {}", tape.steps),
            ));
        }
        Ok(())
    }

    /// What changed in the VM's files from step `from` to step `to`.
    pub async fn diff(
        &self,
        account: &AccountId,
        id: &str,
        from: u64,
        to: u64,
    ) -> Result<TapeDiff, CoreError> {
        let tape = self.get(account, id).await?;
        Self::check_step(&tape, "from", from)?;
        Self::check_step(&tape, "to", to)?;
        let store = self.fs_store(&tape)?;
        tokio::task::spawn_blocking(move || {
            let before = store.state_at(from)?;
            let after = store.state_at(to)?;
            Ok::<_, std::io::Error>(diff::diff(&store, &before, &after))
        })
        .await
        .map_err(|e| CoreError::Unavailable(e.to_string()))?
        .map_err(|e| CoreError::Unavailable(format!("the tape's checkpoints: {e}")))
    }

    /// A new VM at `at_step` of the tape: its files as the tape held them
    /// (`live`), or the tape's commands run again (`replay`).
    pub async fn branch(
        &self,
        account: &AccountId,
        id: &str,
        at_step: u64,
        mode: &str,
    ) -> Result<Branched, CoreError> {
        let tape = self.get(account, id).await?;
        Self::check_step(&tape, "at_step", at_step)?;
        let mut branched = match mode {
            "live" => {
                let store = self.fs_store(&tape)?;
                branch::branch(&self.core, &tape, &store, at_step).await?
            }
            "replay" => {
                let commands = self
                    .all_events(&tape)
                    .await?
                    .into_iter()
                    .filter(|e| e.kind == "exec" && e.step_id <= at_step)
                    .filter_map(|e| {
                        let argv: Vec<String> =
                            serde_json::from_value(e.payload.get("argv")?.clone()).ok()?;
                        let cwd = e.payload["cwd"].as_str().map(str::to_owned);
                        (!argv.is_empty()).then_some((argv, cwd))
                    })
                    .collect();
                branch::replay(&self.core, &tape, commands, at_step).await?
            }
            _ => {
                return Err(CoreError::invalid(
                    "mode",
                    "must be live (the files as the tape held them at the step) or replay \
                     (the tape's commands up to the step run again)",
                ))
            }
        };
        // The branch is recorded from where it starts, as its own tape.
        let settings = TapeSettings {
            record_fs: tape.record_fs,
            record_egress_content: tape.record_egress_content,
            retention_days: tape.retention_days,
        };
        branched.tape = Some(
            self.record_vm(
                account,
                &branched.vm,
                settings,
                Some((tape.id.clone(), at_step)),
            )
            .await?,
        );
        Ok(branched)
    }

    /// The whole tape as one JSON document: its record, every event, each
    /// checkpoint's delta, and the stored contents (base64).
    pub async fn export(&self, account: &AccountId, id: &str) -> Result<Value, CoreError> {
        let tape = self.get(account, id).await?;
        let events = self.all_events(&tape).await?;
        let store = self.store_of(&tape.id);
        let fs = tape.record_fs;
        let files = tokio::task::spawn_blocking(move || -> std::io::Result<Option<Value>> {
            use base64::Engine;
            if !fs {
                return Ok(None);
            }
            if store.bytes() > MAX_EXPORT_BYTES {
                return Err(std::io::Error::other(format!(
                    "the tape's files are over {} MiB: too big for one export",
                    MAX_EXPORT_BYTES >> 20
                )));
            }
            let mut checkpoints = Vec::new();
            for step in store.steps()? {
                checkpoints.push(json!({"id": checkpoint_id(step), "step_id": step, "delta": store.delta(step)?}));
            }
            let mut contents = serde_json::Map::new();
            for sha in store.blobs()? {
                let bytes = store.read_blob(&sha, MAX_EXPORT_BYTES)?;
                contents.insert(sha, json!(base64::engine::general_purpose::STANDARD.encode(bytes)));
            }
            Ok(Some(json!({"checkpoints": checkpoints, "contents": contents})))
        })
        .await
        .map_err(|e| CoreError::Unavailable(e.to_string()))?
        .map_err(|e| CoreError::FailedPrecondition(e.to_string()))?;
        Ok(json!({
            "format": "paddock-tape/1",
            "exported_at": Timestamp::now().to_rfc3339(),
            "tape": tape,
            "events": events,
            "files": files,
        }))
    }

    /// Deletes tapes whose retention ended, every hour until `shutdown`.
    pub async fn run_retention(self: Arc<Self>, mut shutdown: paddock_core::service::Shutdown) {
        loop {
            if let Err(e) = self.purge_expired(Timestamp::now()).await {
                tracing::warn!(error = %e, "could not delete expired tapes");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }

    /// Deletes the tapes that expired by `now`; how many.
    pub async fn purge_expired(&self, now: Timestamp) -> Result<usize, CoreError> {
        let tapes: Vec<Tape> = self.core.documents().load_all(None).await?;
        let mut gone = 0;
        for tape in tapes.into_iter().filter(|t| t.expires_at <= now) {
            self.recorder.unwatch(&tape.id).await;
            self.erase(&tape).await?;
            gone += 1;
        }
        Ok(gone)
    }
}

/// Where an event's checkpoint comes from.
#[derive(Debug, Clone)]
pub(crate) enum Checkpoint {
    /// Taken for this step (its delta is stored under the step).
    Taken,
    /// Named by a client.
    Named(String),
}

/// An event about to be written.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub step: Option<u64>,
    pub parent_step_id: Option<u64>,
    pub kind: String,
    pub payload: Value,
    pub checkpoint: Option<Checkpoint>,
}

/// Changes tape `id` under its lock and saves it, stamped now; what
/// `change` made of it.
async fn change_tape<T>(
    core: &Service,
    account: &AccountId,
    id: &str,
    change: impl AsyncFnOnce(&mut Tape) -> Result<T, CoreError>,
) -> Result<T, CoreError> {
    let documents = core.documents();
    let _guard = documents.lock::<Tape>(account, id).await?;
    let mut tape: Tape = documents
        .load(account, id)
        .await?
        .ok_or_else(|| tape_not_found(id))?;
    let out = change(&mut tape).await?;
    tape.updated_at = Timestamp::now();
    documents.save(&tape).await?;
    Ok(out)
}

/// Reserves the next step of tape `id`.
pub(crate) async fn next_step(
    core: &Service,
    account: &AccountId,
    id: &str,
) -> Result<u64, CoreError> {
    change_tape(core, account, id, async |tape: &mut Tape| {
        tape.steps += 1;
        Ok(tape.steps)
    })
    .await
}

pub(crate) async fn record(
    core: &Service,
    account: &AccountId,
    id: &str,
    pending: Pending,
) -> Result<TapeEvent, CoreError> {
    change_tape(core, account, id, async |tape: &mut Tape| {
        let step_id = match pending.step {
            Some(step) => step,
            None => {
                tape.steps += 1;
                tape.steps
            }
        };
        tape.events += 1;
        let checkpoint_id = match pending.checkpoint {
            Some(Checkpoint::Taken) => {
                tape.checkpoints += 1;
                Some(checkpoint_id(step_id))
            }
            Some(Checkpoint::Named(id)) => Some(id),
            None => None,
        };
        let now = Timestamp::now();
        let event = TapeEvent {
            seq: tape.events,
            step_id,
            parent_step_id: pending.parent_step_id,
            kind: pending.kind,
            payload: pending.payload,
            checkpoint_id,
            ts: now.to_rfc3339(),
        };
        let chunk = JobLogChunk {
            seq: i64::try_from(event.seq).unwrap_or(i64::MAX),
            stream: event.kind.clone(),
            data: serde_json::to_string(&event)
                .map_err(|e| CoreError::Unavailable(e.to_string()))?,
            created_at: now,
        };
        core.documents()
            .store()
            .append_job_log(account, &log_key(id), &[chunk])
            .await?;
        Ok(event)
    })
    .await
}

/// Adds what a checkpoint stored to the tape's counters; whether the tape
/// may store more.
pub(crate) async fn note_stored(
    core: &Service,
    account: &AccountId,
    id: &str,
    stored: u64,
    error: Option<String>,
) -> Result<bool, CoreError> {
    change_tape(core, account, id, async |tape: &mut Tape| {
        tape.bytes_stored += stored;
        if error.is_some() {
            tape.checkpoint_error = error;
        } else if tape.bytes_stored > MAX_TAPE_BYTES {
            tape.checkpoint_error = Some(format!(
                "the tape's checkpoints reached {} GiB; no more are taken",
                MAX_TAPE_BYTES >> 30
            ));
        }
        Ok(tape.checkpoint_error.is_none())
    })
    .await
}
