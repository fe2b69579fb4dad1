//! Watching directories as envd offers it: a stream of changes
//! (`WatchDir`), or a watcher the SDK polls (`CreateWatcher`, then
//! `GetWatcherEvents` for what happened since the last call, then
//! `RemoveWatcher`). A poll-style watcher keeps its changes here until
//! they are read, at most [`MAX_BUFFERED`] of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use paddock_core::error::CoreError;
use paddock_core::exec::{PathChange, SandboxPath};
use paddock_core::ids::VmId;
use tokio::sync::mpsc;

use crate::{E2b, EnvdTarget};

/// Changes a poll-style watcher keeps before it drops the oldest.
pub const MAX_BUFFERED: usize = 10_000;
/// Poll-style watchers one sandbox may hold.
const MAX_WATCHERS: usize = 64;

struct Watcher {
    changes: Arc<Mutex<Vec<PathChange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Ends the watch: the receiver goes, and the agent stops.
        self.task.abort();
    }
}

#[derive(Default)]
pub(crate) struct WatcherTable {
    by_vm: Mutex<HashMap<VmId, HashMap<String, Watcher>>>,
    next: std::sync::atomic::AtomicU64,
}

impl WatcherTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, HashMap<String, Watcher>>> {
        self.by_vm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn vms(&self) -> Vec<VmId> {
        self.lock().keys().cloned().collect()
    }

    pub(crate) fn forget_vm(&self, vm: &VmId) {
        self.lock().remove(vm);
    }
}

impl E2b {
    /// A directory's changes as they happen, until the receiver goes.
    pub async fn watch_dir(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
        recursive: bool,
    ) -> Result<mpsc::Receiver<PathChange>, CoreError> {
        self.core
            .vms()
            .watch_dir(&target.account, &target.vm, path, recursive)
            .await
    }

    /// Starts a watcher the caller polls; its id.
    pub async fn create_watcher(
        &self,
        target: &EnvdTarget,
        path: &SandboxPath,
        recursive: bool,
    ) -> Result<String, CoreError> {
        if self
            .watchers
            .lock()
            .get(&target.vm)
            .is_some_and(|w| w.len() >= MAX_WATCHERS)
        {
            return Err(CoreError::ResourceExhausted(format!(
                "a sandbox holds at most {MAX_WATCHERS} watchers; remove one first"
            )));
        }
        let mut rx = self.watch_dir(target, path, recursive).await?;
        let changes = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&changes);
        let task = tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let mut kept = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.len() >= MAX_BUFFERED {
                    kept.remove(0);
                }
                kept.push(change);
            }
        });
        let id = format!(
            "w{}",
            self.watchers
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        self.watchers
            .lock()
            .entry(target.vm.clone())
            .or_default()
            .insert(id.clone(), Watcher { changes, task });
        Ok(id)
    }

    /// What a watcher saw since the last call.
    pub fn watcher_events(
        &self,
        target: &EnvdTarget,
        id: &str,
    ) -> Result<Vec<PathChange>, CoreError> {
        let all = self.watchers.lock();
        let w = all
            .get(&target.vm)
            .and_then(|w| w.get(id))
            .ok_or_else(|| CoreError::not_found("watcher", id))?;
        let taken = std::mem::take(&mut *w.changes.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(taken)
    }

    pub fn remove_watcher(&self, target: &EnvdTarget, id: &str) -> Result<(), CoreError> {
        let mut all = self.watchers.lock();
        let removed = all.get_mut(&target.vm).and_then(|w| w.remove(id));
        if all.get(&target.vm).is_some_and(HashMap::is_empty) {
            all.remove(&target.vm);
        }
        removed
            .map(drop)
            .ok_or_else(|| CoreError::not_found("watcher", id))
    }
}
