//! PID 1 must reap every process that exits in the sandbox, its own
//! children and orphans reparented to it alike. One task does all reaping
//! on SIGCHLD with `wait4(-1)` and hands each status to whoever spawned
//! that pid; orphans' statuses are dropped.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::sys::{self, Reaped};

#[derive(Default)]
pub(crate) struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<Reaped>>>,
}

impl Reaper {
    pub fn start() -> io::Result<Arc<Self>> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Self::default());
        let this = Arc::clone(&reaper);
        tokio::spawn(async move {
            loop {
                this.reap_all();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns the child with a receiver of its exit.
    /// The lock is held across the spawn so the reaper cannot hand out a
    /// status before its receiver is registered.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<Reaped>)> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    fn reap_all(&self) {
        while let Some(reaped) = sys::reap_one() {
            let waiter = self
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&reaped.pid);
            if let Some(tx) = waiter {
                let _ = tx.send(reaped);
            }
        }
    }
}
