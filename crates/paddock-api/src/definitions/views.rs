//! What the definitions surface answers, as types: each one's serde form
//! is the response and its `ToSchema` the schema in `/openapi.json`.

use std::collections::BTreeMap;

use paddock_core::exec::ExitStatus;
use paddock_core::model::{ExecutionStatus, VmStatus};
use paddock_definitions::{Definition, SandboxView};
use serde::Serialize;
use utoipa::ToSchema;

/// A sandbox's state in this surface's words.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleted,
    Failed,
}

impl From<VmStatus> for SandboxState {
    fn from(s: VmStatus) -> Self {
        match s {
            VmStatus::Creating => Self::Starting,
            VmStatus::Running => Self::Running,
            VmStatus::Stopping => Self::Stopping,
            // A suspended sandbox (through the VM API) runs nothing, as a
            // stopped one; the definitions API has no state of its own for it.
            VmStatus::Stopped | VmStatus::Suspended => Self::Stopped,
            VmStatus::Terminated => Self::Deleted,
            // Its node is gone: whether it runs is unknown until it is back.
            VmStatus::Failed | VmStatus::Lost => Self::Failed,
        }
    }
}

/// CPUs as the definition wrote them: an integer when whole, a fraction
/// for a quota (0.5).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Cpus {
    Whole(u32),
    Fraction(f64),
}

impl Cpus {
    fn of_millis(millis: u32) -> Self {
        if millis.is_multiple_of(1000) {
            Self::Whole(millis / 1000)
        } else {
            Self::Fraction(f64::from(millis) / 1000.0)
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxResources {
    /// CPUs; a fraction is a quota.
    #[schema(value_type = f64)]
    pub cpu: Cpus,
    pub memory_mb: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxLifecycle {
    pub preserve: bool,
    pub stop_on_terminal: bool,
    pub auto_stop_seconds: Option<u64>,
}

/// How the main command went.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Running,
    Exited,
    Failed,
}

/// The main command the sandbox was launched with, and its run.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxCommand {
    pub argv: Vec<String>,
    pub execution_id: Option<String>,
    pub state: Option<CommandState>,
    pub exit_code: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
}

/// A sandbox launched from a definition.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DefinitionSandbox)]
pub struct SandboxResource {
    pub id: String,
    pub environment_id: String,
    pub environment_revision: String,
    pub provider: String,
    pub state: SandboxState,
    pub state_reason: Option<String>,
    pub image: Option<String>,
    /// Where commands start and relative file paths resolve.
    pub work_dir: String,
    pub resources: SandboxResources,
    pub labels: BTreeMap<String, String>,
    pub lifecycle: SandboxLifecycle,
    pub command: Option<SandboxCommand>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub stopped_at: Option<String>,
}

impl From<&SandboxView> for SandboxResource {
    fn from(view: &SandboxView) -> Self {
        let vm = &view.vm;
        let launch = vm.options.launch.clone().unwrap_or_default();
        let command = (!launch.command.is_empty()).then(|| {
            let main = view.main.as_ref();
            SandboxCommand {
                argv: launch.command.clone(),
                execution_id: main.map(|m| m.id.to_string()),
                state: main.map(|m| match m.status {
                    ExecutionStatus::Running => CommandState::Running,
                    ExecutionStatus::Completed => CommandState::Exited,
                    _ => CommandState::Failed,
                }),
                exit_code: main.and_then(|m| m.exit_code),
                stdout: main.map(|m| m.stdout.clone()),
                stderr: main.map(|m| m.stderr.clone()),
            }
        });
        Self {
            id: vm.id.to_string(),
            environment_id: launch.definition_id,
            environment_revision: launch.revision,
            provider: vm.provider.clone(),
            state: vm.status.into(),
            state_reason: vm.status_reason.clone(),
            image: (!vm.image_variant.is_empty()).then(|| vm.image_variant.clone()),
            work_dir: view.work_dir.clone(),
            resources: SandboxResources {
                cpu: Cpus::of_millis(vm.resources.cpu_millis()),
                memory_mb: vm.resources.memory_mb(),
            },
            labels: launch.labels,
            lifecycle: SandboxLifecycle {
                preserve: launch.preserve,
                stop_on_terminal: launch.stop_on_terminal,
                auto_stop_seconds: launch.idle_stop_seconds,
            },
            command,
            created_at: vm.created_at.to_rfc3339(),
            started_at: vm.started_at.map(|t| t.to_rfc3339()),
            stopped_at: launch.stopped_at.map(|t| t.to_rfc3339()),
        }
    }
}

/// Where a list's page sits in the whole.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageMeta {
    pub total: usize,
    pub has_more: bool,
    pub limit: usize,
    pub offset: usize,
}

/// One page of definitions, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    pub data: Vec<Definition>,
    pub meta: PageMeta,
}

/// One page of sandboxes, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DefinitionSandboxList)]
pub struct SandboxList {
    pub data: Vec<SandboxResource>,
    pub meta: PageMeta,
}

/// A command's end.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SandboxExecResult)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Output past the collection limit was dropped.
    pub truncated: bool,
    pub duration_ms: u64,
}

impl ExecResult {
    pub fn new(status: &ExitStatus, stdout: &[u8], stderr: &[u8], truncated: bool) -> Self {
        Self {
            exit_code: status.exit_code(),
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            timed_out: status.timed_out,
            truncated,
            duration_ms: u64::try_from(status.wall_time.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A file written.
#[derive(Debug, Serialize, ToSchema)]
pub struct WrittenFile {
    pub path: String,
    pub bytes: u64,
}

/// A directory read: its entries' names.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryEntries {
    pub path: String,
    pub entries: Vec<String>,
}
