//! Recording a command's run as an [`Execution`]: its output saved as it
//! comes (so what was printed survives a restart of the server), and one
//! meaning per end on every provider: `Completed` with the exit code when
//! the command ended, by itself or killed (a sandbox's stop kills it:
//! 137, SIGKILL, as a Docker engine reports it), `Failed` when it could
//! not run or its end is unknown.

use std::time::Duration;

use bytes::Bytes;

use crate::clock::Timestamp;
use crate::exec::{ExecEvent, ExecStream};
use crate::model::{Execution, ExecutionStatus, VmStatus};
use crate::service::{error_chain, Service};

/// Output is saved at least this often while it comes.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The exit code of a command killed with SIGKILL.
const KILLED: i32 = 128 + 9;

/// Appends `chunk` to `text` within `cap` bytes; whether it was cut.
fn append(text: &mut Vec<u8>, chunk: &Bytes, cap: usize) -> bool {
    let room = cap.saturating_sub(text.len());
    text.extend_from_slice(&chunk[..chunk.len().min(room)]);
    chunk.len() > room
}

impl Service {
    /// Drains `stream` into `record` (stored, `Running`), saving the
    /// output so far every [`SAVE_EVERY`], and records how it ended.
    pub(crate) async fn record_execution(
        &self,
        mut stream: ExecStream,
        mut record: Execution,
    ) -> Execution {
        let cap = self.config.max_collected_output;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut unsaved = false;
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                event = stream.recv() => match event {
                    Some(Ok(ExecEvent::Stdout(b))) => {
                        append(&mut stdout, &b, cap);
                        unsaved = true;
                    }
                    Some(Ok(ExecEvent::Stderr(b))) => {
                        append(&mut stderr, &b, cap);
                        unsaved = true;
                    }
                    Some(Ok(ExecEvent::Exit(status))) => break Ok(status),
                    Some(Err(e)) => break Err(error_chain(&e)),
                    None => break Err("the command's output ended without an exit status".to_owned()),
                },
                _ = tick.tick(), if unsaved => {
                    record.stdout = String::from_utf8_lossy(&stdout).into_owned();
                    record.stderr = String::from_utf8_lossy(&stderr).into_owned();
                    if let Err(e) = self.store.update_execution(&record).await {
                        tracing::warn!(task_id = %record.id, error = %error_chain(&e), "could not save a command's output so far");
                    }
                    unsaved = false;
                }
            }
        };
        record.stdout = String::from_utf8_lossy(&stdout).into_owned();
        record.stderr = String::from_utf8_lossy(&stderr).into_owned();
        match ended {
            Ok(status) => {
                record.status = ExecutionStatus::Completed;
                record.exit_code = Some(status.exit_code());
                record.execution_time = Some(status.wall_time.as_secs_f64());
                record.cpu_time = Some(status.cpu_time.as_secs_f64());
            }
            // A sandbox that stops (or goes) kills its commands with it,
            // agent included, so no exit arrives: that is their end.
            Err(_) if self.vm_was_ended(&record).await => {
                record.status = ExecutionStatus::Completed;
                record.exit_code = Some(KILLED);
                record.error = Some("killed when the sandbox stopped".to_owned());
            }
            Err(reason) => {
                record.status = ExecutionStatus::Failed;
                record.error = Some(reason);
            }
        }
        record.completed_at = Some(Timestamp::now());
        if let Err(e) = self.store.update_execution(&record).await {
            tracing::error!(task_id = %record.id, error = %error_chain(&e), "could not save execution result");
        }
        record
    }

    /// Whether the VM of `record` is stopping, stopped or gone.
    async fn vm_was_ended(&self, record: &Execution) -> bool {
        match self.store.find_vm(&record.vm_id).await {
            Ok(Some(vm)) => !matches!(vm.status, VmStatus::Running | VmStatus::Creating),
            Ok(None) => true,
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_kept_within_its_cap() {
        let mut text = b"ab".to_vec();
        assert!(!append(&mut text, &Bytes::from_static(b"cd"), 4));
        assert!(append(&mut text, &Bytes::from_static(b"ef"), 4));
        assert_eq!(text, b"abcd");
    }
}
