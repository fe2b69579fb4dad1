//! The E2B-compatible product: what the `e2b` and `e2b-code-interpreter`
//! SDKs need of a server, over the VM core. An E2B sandbox is a core VM
//! (its id is the VM's id) marked with the template it came from;
//! envd's services, which E2B runs as a daemon in every sandbox, run
//! here in the server over the core's agent calls, so a sandbox needs
//! no extra process and any provider serves them.
//!
//! The wire formats (REST, Connect-RPC, multipart) are the API crate's;
//! this crate keeps the rules: templates, timeouts, pause and connect,
//! who may reach a sandbox's envd, the commands it runs and their
//! output, and paths as envd describes them.

mod filesystem;
mod interpreter;
mod janitor;
mod metrics;
mod processes;
mod sandboxes;
mod templates;
mod uploads;
mod watchers;

use std::sync::Arc;

use paddock_core::service::Service;

pub use filesystem::{resolve as resolve_path, Entry, EntryKind};
pub use interpreter::{CodeContext, RunCode};
pub use metrics::SandboxMetric;
pub use processes::{
    ProcessConfig, ProcessEnd, ProcessEvent, ProcessInfo, ProcessSelector, ProcessStart,
    ProcessStream, PtySize,
};
pub use sandboxes::{NewSandbox, SandboxInfo, SandboxQuery, SandboxState, ENVD_VERSION, MAX_PAGE};
pub use templates::{BuildSpec, BuildStatus, BuildStep, LogLine, Template};

/// What the server tells the SDKs about where sandboxes are.
#[derive(Debug, Clone, Default)]
pub struct E2bConfig {
    /// The domain the SDK's `get_host(port)` builds
    /// `{port}-{sandbox id}.{domain}` on: the share proxy's domain.
    pub domain: Option<String>,
    /// The provider sandboxes run on; the server's default when `None`.
    pub provider: Option<String>,
    /// Where template builds' uploaded files are kept; `COPY` steps are
    /// refused without it.
    pub uploads_dir: Option<std::path::PathBuf>,
}

/// The E2B product, over the VM core.
pub struct E2b {
    core: Arc<Service>,
    config: E2bConfig,
    processes: Arc<processes::ProcessTable>,
    watchers: watchers::WatcherTable,
    contexts: interpreter::ContextTable,
    build_logs: Arc<templates::BuildLogs>,
    cpu_readings: metrics::CpuReadings,
}

/// A sandbox an envd request may reach: its owner and id, the access
/// token checked.
#[derive(Debug, Clone)]
pub struct EnvdTarget {
    pub account: paddock_core::ids::AccountId,
    pub vm: paddock_core::ids::VmId,
}

impl E2b {
    pub fn new(core: Arc<Service>, config: E2bConfig) -> Self {
        Self {
            core,
            config,
            processes: Arc::default(),
            watchers: watchers::WatcherTable::default(),
            contexts: interpreter::ContextTable::default(),
            build_logs: Arc::default(),
            cpu_readings: metrics::CpuReadings::default(),
        }
    }

    /// Drops what runs for a sandbox that ended or was paused: its
    /// commands' streams end, its watchers stop.
    fn forget_vm(&self, vm: &paddock_core::ids::VmId) {
        self.processes.forget_vm(vm);
        self.watchers.forget_vm(vm);
        self.contexts.forget_vm(vm);
        self.cpu_readings.forget_vm(vm);
    }
}
