//! What observers of VMs are told, and the registry of them (kept apart
//! from `Vms`, which holds it). Observers of what happens in VMs: a
//! product that records a VM's
//! activity (the tools product's tapes) sees each command, its output and
//! its end, a terminal's input and output, and each file transferred, as
//! they happen, whichever surface caused them. The core asks the
//! observers whether they watch a VM on each call; a VM nobody watches
//! costs that one check.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use crate::ids::VmId;

/// One thing that happened in a VM.
#[derive(Debug, Clone)]
pub enum Activity {
    /// A command started; `exec` names it in the events that follow.
    ExecStarted {
        exec: u64,
        argv: Vec<String>,
        cwd: Option<String>,
    },
    ExecOutput {
        exec: u64,
        stderr: bool,
        data: Bytes,
    },
    /// It ended: its exit code, or the error that ended its stream.
    ExecEnded {
        exec: u64,
        exit_code: Option<i32>,
        timed_out: bool,
        took: Duration,
        error: Option<String>,
    },
    PtyInput {
        pty: String,
        data: Bytes,
    },
    PtyOutput {
        pty: String,
        data: Bytes,
    },
    /// A file was written into the VM, or read out of it.
    FileTransfer {
        path: String,
        upload: bool,
        bytes: u64,
    },
}

/// Something that watches VMs' activity.
pub trait ActivityObserver: Send + Sync {
    /// Whether it watches `vm` now; asked on every call, so cheap.
    fn observes(&self, vm: &VmId) -> bool;
    /// Told each thing that happens in a VM it watches, in order per
    /// command and per terminal; must not block. For the end of a step
    /// (a command's end, an upload) it may answer a receiver: the caller
    /// sees the step end only once it fires (or after [`SETTLE_MAX`]), so
    /// what the observer reads of the VM then (its files) is what the
    /// step left, before the caller's next step runs.
    fn observe(&self, vm: &VmId, activity: Activity) -> Option<Settled>;
}

/// Fires when an observer is done with the end of a step.
pub type Settled = tokio::sync::oneshot::Receiver<()>;

/// The longest a step's end waits for its observers.
pub const SETTLE_MAX: Duration = Duration::from_secs(30);

/// Who watches a command that is about to start, and what it runs.
pub(crate) struct ExecWatch {
    pub(super) observers: Vec<Arc<dyn ActivityObserver>>,
    pub(super) argv: Vec<String>,
    pub(super) cwd: Option<String>,
}

/// The observers the composition root added.
#[derive(Default)]
pub(crate) struct Observers {
    pub(super) all: RwLock<Vec<Arc<dyn ActivityObserver>>>,
    pub(super) next_exec: std::sync::atomic::AtomicU64,
}

impl Observers {
    /// Those that watch `vm`; `None` when none does.
    pub(super) fn of(&self, vm: &VmId) -> Option<Vec<Arc<dyn ActivityObserver>>> {
        let all = self
            .all
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let watching: Vec<_> = all.iter().filter(|o| o.observes(vm)).cloned().collect();
        (!watching.is_empty()).then_some(watching)
    }
}

/// Tells `activity` to each observer; those that want the caller to wait.
pub(super) fn tell(
    observers: &[Arc<dyn ActivityObserver>],
    vm: &VmId,
    activity: Activity,
) -> Vec<Settled> {
    let mut waits = Vec::new();
    if let Some((last, rest)) = observers.split_last() {
        for o in rest {
            waits.extend(o.observe(vm, activity.clone()));
        }
        waits.extend(last.observe(vm, activity));
    }
    waits
}

/// Waits until every observer is done with a step's end, at most
/// [`SETTLE_MAX`] in all.
pub(super) async fn settle(waits: Vec<Settled>) {
    if waits.is_empty() {
        return;
    }
    let all = futures::future::join_all(waits);
    if tokio::time::timeout(SETTLE_MAX, all).await.is_err() {
        tracing::warn!("an observer took over {SETTLE_MAX:?} with a step's end; going on");
    }
}
