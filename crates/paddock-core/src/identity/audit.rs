//! The audit log as the core keeps it: events appended by the API (one
//! per mutating call, refused key, and a key's first use from an
//! address), read back by their account, pruned after the retention.
//!
//! A call does not wait for its event's write: events go through a queue
//! to a writer that appends them in batches, one transaction each (a
//! write per exec would add a third of a millisecond to every exec). A
//! read of the log first waits for what was queued before it, so a
//! caller always finds its own calls. What a crash can lose is what was
//! queued and not yet written: the last few milliseconds. A full queue
//! makes the call write its event itself.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::error_chain;
use crate::error::CoreError;
use crate::ids::{AccountId, AuditEventId};
use crate::model::{AuditEvent, AuditFilter};
use crate::shutdown::Shutdown;
use crate::store::AuditStore;

/// How many (key, address) pairs the log remembers in memory before it
/// asks the store again.
const KNOWN_ADDRESSES: usize = 65_536;

/// How many events may wait for the writer.
const QUEUE: usize = 65_536;
/// The most events one transaction appends.
const BATCH: usize = 512;

pub struct Audit {
    store: Arc<dyn AuditStore>,
    retention: Duration,
    queue: tokio::sync::mpsc::Sender<AuditEvent>,
    /// The writer's end, until the writer takes it.
    pending: Mutex<Option<tokio::sync::mpsc::Receiver<AuditEvent>>>,
    /// How many events were queued, and how many of those are written.
    queued: std::sync::atomic::AtomicU64,
    written: tokio::sync::watch::Sender<u64>,
    /// (key, address) pairs already recorded, so a key's every call does
    /// not ask the store.
    known: Mutex<HashSet<(String, String)>>,
}

/// A page of events and the cursor of the next (older) one.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>, retention: Duration) -> Self {
        let (queue, pending) = tokio::sync::mpsc::channel(QUEUE);
        Self {
            store,
            retention,
            queue,
            pending: Mutex::new(Some(pending)),
            queued: std::sync::atomic::AtomicU64::new(0),
            written: tokio::sync::watch::channel(0).0,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Appends an event (through the writer's queue). The log is
    /// append-only: nothing else writes it.
    pub async fn record(&self, event: AuditEvent) -> Result<(), CoreError> {
        use std::sync::atomic::Ordering;
        // Counted first, so a reader that sees it queued waits for it.
        self.queued.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(event) {
            Ok(()) => Ok(()),
            // The writer is behind (or gone): this call writes its own.
            Err(tokio::sync::mpsc::error::TrySendError::Full(event))
            | Err(tokio::sync::mpsc::error::TrySendError::Closed(event)) => {
                let written = self.store.insert_audit_events(&[event]).await;
                self.written.send_modify(|n| *n += 1);
                written?;
                Ok(())
            }
        }
    }

    /// Appends queued events in batches until shutdown, then what is left.
    pub async fn run_writer(self: Arc<Self>, mut shutdown: Shutdown) {
        let Some(mut pending) = self.pending.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                n = pending.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                }
                _ = shutdown.cancelled() => {
                    pending.close();
                    while pending.recv_many(&mut batch, BATCH).await > 0 {
                        self.write(&batch).await;
                        batch.clear();
                    }
                    return;
                }
            }
            self.write(&batch).await;
        }
    }

    async fn write(&self, batch: &[AuditEvent]) {
        if let Err(e) = self.store.insert_audit_events(batch).await {
            tracing::error!(error = %error_chain(&e), count = batch.len(),
                "audit: events could not be written");
        }
        self.written.send_modify(|n| *n += batch.len() as u64);
    }

    /// Waits (at most 5 s) until every event queued before now is written.
    async fn caught_up(&self) {
        let target = self.queued.load(std::sync::atomic::Ordering::SeqCst);
        let mut written = self.written.subscribe();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), written.wait_for(|n| *n >= target)).await;
    }

    /// Whether this is `key`'s first use from `address` (recorded now).
    pub async fn first_use_from(&self, key: &str, address: &str) -> Result<bool, CoreError> {
        let pair = (key.to_owned(), address.to_owned());
        if self.known.lock().is_ok_and(|k| k.contains(&pair)) {
            return Ok(false);
        }
        let first = self.store.note_key_address(key, address).await?;
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= KNOWN_ADDRESSES {
                known.clear();
            }
            known.insert(pair);
        }
        Ok(first)
    }

    /// The account's events matching `filter`, newest first; `cursor` is
    /// a previous page's `next_cursor`.
    pub async fn events(
        &self,
        account: &AccountId,
        mut filter: AuditFilter,
        cursor: Option<&str>,
    ) -> Result<AuditPage, CoreError> {
        filter.before_seq = crate::paging::before(filter.limit, cursor)?;
        self.caught_up().await;
        let rows = self.store.list_audit_events(account, &filter).await?;
        let (events, next_cursor) = crate::paging::split(rows, filter.limit);
        Ok(AuditPage {
            events,
            next_cursor,
        })
    }

    pub async fn event(&self, account: &AccountId, id: &str) -> Result<AuditEvent, CoreError> {
        let not_found = || CoreError::not_found("audit event", id);
        let id: AuditEventId = id.parse().map_err(|_| not_found())?;
        self.caught_up().await;
        self.store
            .get_audit_event(account, &id)
            .await?
            .ok_or_else(not_found)
    }

    /// Removes events past the retention, hourly, until shutdown.
    pub async fn run_retention(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let cutoff = Timestamp::from_unix_millis(
                Timestamp::now().unix_millis()
                    - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX),
            );
            match self.store.prune_audit_events(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "audit events past their retention removed"),
                Err(e) => tracing::warn!(error = %error_chain(&e), "audit: prune failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
