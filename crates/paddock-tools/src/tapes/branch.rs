//! Branching a tape: a new VM of the taped VM's image and shape at a step
//! of the tape. `live`: the VM starts from the image, then the writable
//! layer as the tape held it at that step is laid over it through the
//! agent (removals, directories and links by one script, files written
//! one by one, then modes and owners). `replay`: the tape's commands up
//! to the step run again in it.

use paddock_core::exec::{ExecRequest, SandboxPath};
use paddock_core::model::{Metadata, VmOptions, VmSpec, VmStatus};
use paddock_core::service::Service;
use paddock_core::CoreError;
use serde_json::json;

use super::checkpoints::{CheckpointStore, Entry};
use super::Tape;

/// A script is cut into pieces of at most this many bytes.
const SCRIPT_PIECE_BYTES: usize = 1 << 20;

/// The most restore failures an answer names.
const SKIPPED_NAMED: usize = 50;

/// The new VM, and how its files were laid.
#[derive(Debug, Clone)]
pub struct Branched {
    pub vm: paddock_core::model::Vm,
    /// Files restored (`live`), or commands that ran again (`replay`).
    pub files_restored: u64,
    /// Paths that could not be restored, with why (at most 50 named).
    pub skipped: Vec<(String, String)>,
    pub skipped_count: u64,
    /// The tape that records the branch.
    pub tape: Option<Tape>,
}

/// `s` as one single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A new VM of the taped VM's image and shape, running.
async fn new_vm_like(
    core: &Service,
    tape: &Tape,
    at_step: u64,
    mode: &str,
) -> Result<paddock_core::model::Vm, CoreError> {
    let account = &tape.account_id;
    let vms = core.vms();
    let taped = vms
        .get_vm(account, &tape.vm_id)
        .await
        .map_err(|e| match e {
            CoreError::NotFound { .. } => CoreError::FailedPrecondition(
                "the taped VM's record is gone: its image is unknown".into(),
            ),
            other => other,
        })?;
    let mut metadata = Metadata::new();
    metadata.insert(
        "paddock.tape".to_owned(),
        json!({"tape_id": tape.id, "at_step": at_step, "mode": mode}),
    );
    let spec = VmSpec {
        session_id: None,
        lifetime_seconds: taped.lifetime_seconds,
        resources: taped.resources,
        metadata,
        env: taped.env.clone(),
        image_variant: taped.image_variant.clone(),
        options: VmOptions {
            snapshot_id: taped.options.snapshot_id.clone(),
            egress_policy: taped.options.egress_policy.clone(),
            ..VmOptions::default()
        },
        volumes: Vec::new(),
        provider: Some(taped.provider.clone()),
        placement: paddock_core::model::Placement::ThisNode,
    };
    let vm = vms.create_vm(account, spec, true).await?;
    if vm.status != VmStatus::Running {
        let why = vm.status_reason.clone().unwrap_or_default();
        let _ = vms.delete_vm(account, &vm.id).await;
        return Err(CoreError::Unavailable(format!(
            "the branch's VM did not start: {why}"
        )));
    }
    Ok(vm)
}

/// `replay`: a new VM from the taped VM's image in which the tape's
/// commands up to `at_step` run again, in order, as they ran (a command
/// that fails is named and the replay goes on). Terminals and uploads are
/// not replayed.
pub(super) async fn replay(
    core: &Service,
    tape: &Tape,
    commands: Vec<(Vec<String>, Option<String>)>,
    at_step: u64,
) -> Result<Branched, CoreError> {
    let vm = new_vm_like(core, tape, at_step, "replay").await?;
    let mut skipped = Vec::new();
    let mut skipped_count = 0u64;
    let mut replayed = 0u64;
    for (argv, cwd) in commands {
        let request = ExecRequest {
            argv: argv.clone(),
            env: Vec::new(),
            cwd,
            stdin: None,
            stdin_stream: None,
            timeout: Some(std::time::Duration::from_secs(600)),
            started: None,
            user: None,
        };
        let ran = core
            .vms()
            .exec_collect(&tape.account_id, &vm.id, request)
            .await;
        let failed = match ran {
            Ok(out) if out.status.code == Some(0) => None,
            Ok(out) => Some(format!("exit code {:?}", out.status.code)),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            None => replayed += 1,
            Some(why) => {
                skipped_count += 1;
                if skipped.len() < SKIPPED_NAMED {
                    skipped.push((argv.join(" "), why));
                }
            }
        }
    }
    Ok(Branched {
        vm,
        files_restored: replayed,
        skipped,
        skipped_count,
        tape: None,
    })
}

/// `live`: a new VM whose files are the tape's at `at_step`.
pub(super) async fn branch(
    core: &Service,
    tape: &Tape,
    store: &CheckpointStore,
    at_step: u64,
) -> Result<Branched, CoreError> {
    let account = &tape.account_id;
    let vms = core.vms();
    let state = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.state_at(at_step))
            .await
            .map_err(|e| CoreError::Unavailable(e.to_string()))?
            .map_err(|e| CoreError::Unavailable(format!("the tape's checkpoints: {e}")))?
    };
    let vm = new_vm_like(core, tape, at_step, "live").await?;
    let mut layout = Vec::new();
    let mut owners = Vec::new();
    for (path, entry) in &state {
        let p = quote(path);
        match entry {
            Entry::Removed => layout.push(format!("rm -rf -- {p}")),
            Entry::Dir {
                mode,
                uid,
                gid,
                opaque,
            } => {
                if *opaque {
                    layout.push(format!("rm -rf -- {p}"));
                }
                layout.push(format!("mkdir -p -- {p}"));
                owners.push(format!("chown {uid}:{gid} -- {p}; chmod {mode:o} -- {p}"));
            }
            Entry::Symlink { target, uid, gid } => {
                layout.push(format!("rm -rf -- {p}; ln -s -- {} {p}", quote(target)));
                owners.push(format!("chown -h {uid}:{gid} -- {p}"));
            }
            Entry::File { mode, uid, gid, .. } => {
                layout.push(format!(
                    "if [ -d {p} ] && [ ! -L {p} ]; then rm -rf -- {p}; fi"
                ));
                owners.push(format!("chown {uid}:{gid} -- {p}; chmod {mode:o} -- {p}"));
            }
            Entry::Special { .. } => {}
        }
    }
    let mut skipped = Vec::new();
    let mut skipped_count = 0u64;
    let mut skip = |path: &str, why: String| {
        skipped_count += 1;
        if skipped.len() < SKIPPED_NAMED {
            skipped.push((path.to_owned(), why));
        }
    };
    for failure in run_script(core, tape, &vm.id, &layout).await? {
        skip("(layout)", failure);
    }
    let mut files_restored = 0;
    for (path, entry) in &state {
        let Entry::File { sha256, mode, .. } = entry else {
            continue;
        };
        let content = {
            let (store, sha256) = (store.clone(), sha256.clone());
            tokio::task::spawn_blocking(move || store.read_blob(&sha256, u64::MAX))
                .await
                .map_err(|e| CoreError::Unavailable(e.to_string()))?
        };
        let written = match (content, SandboxPath::parse(path)) {
            (Ok(bytes), Ok(target)) => {
                let body: paddock_core::exec::ByteStream =
                    Box::pin(futures::stream::once(async move {
                        Ok(bytes::Bytes::from(bytes))
                    }));
                vms.write_file(account, &vm.id, &target, Some(*mode), body)
                    .await
                    .map_err(|e| e.to_string())
            }
            (Err(e), _) => Err(format!("its stored content: {e}")),
            (_, Err(e)) => Err(e.to_string()),
        };
        match written {
            Ok(_) => files_restored += 1,
            Err(why) => skip(path, why),
        }
    }
    for failure in run_script(core, tape, &vm.id, &owners).await? {
        skip("(owners and modes)", failure);
    }
    Ok(Branched {
        vm,
        files_restored,
        skipped,
        skipped_count,
        tape: None,
    })
}

/// Runs `lines` in the VM as root, in pieces; what each failing piece
/// said.
async fn run_script(
    core: &Service,
    tape: &Tape,
    vm: &paddock_core::ids::VmId,
    lines: &[String],
) -> Result<Vec<String>, CoreError> {
    let mut pieces: Vec<String> = Vec::new();
    let mut piece = String::new();
    for line in lines {
        if !piece.is_empty() && piece.len() + line.len() > SCRIPT_PIECE_BYTES {
            pieces.push(std::mem::take(&mut piece));
        }
        piece.push_str(line);
        piece.push('\n');
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    let mut failures = Vec::new();
    for script in pieces {
        let request = ExecRequest {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            env: Vec::new(),
            cwd: Some("/".into()),
            stdin: None,
            stdin_stream: None,
            timeout: Some(std::time::Duration::from_secs(300)),
            started: None,
            user: None,
        };
        let out = core
            .vms()
            .exec_collect(&tape.account_id, vm, request)
            .await?;
        if out.status.code != Some(0) {
            failures.push(
                String::from_utf8_lossy(&out.stderr)
                    .chars()
                    .take(500)
                    .collect(),
            );
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn paths_are_quoted_as_one_shell_word() {
        assert_eq!(quote("/a b"), "'/a b'");
        assert_eq!(quote("/it's"), r"'/it'\''s'");
    }
}
