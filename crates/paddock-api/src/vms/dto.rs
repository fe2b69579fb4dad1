//! The VM API's wire types, as InstaVM's clients send and read them.

use std::collections::BTreeMap;

use paddock_core::exec::{DirEntry, PtyInfo};
use paddock_core::model::{Vm, VmStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// `POST /v1/vms` (the seed's `VMCreateRequest`). Fields that later
/// features make work are accepted only unset.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateVmRequest {
    pub session_id: Option<String>,
    pub vm_lifetime_seconds: Option<i64>,
    pub memory_mb: Option<i64>,
    pub vcpu_count: Option<i64>,
    /// paddock's own: the size of the VM's writable layer (its root
    /// filesystem's changes, `/tmp` included) in MiB; writing past it
    /// fails with ENOSPC inside. The server's `[limits] default_disk_mb`
    /// when unset.
    pub disk_mb: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub env: Option<BTreeMap<String, String>>,
    /// Where the VM's traffic may go; the server's default when unset.
    #[schema(value_type = Option<EgressPolicyBody>)]
    pub egress_policy: Option<Value>,
    /// Start from this snapshot (its filesystem, over its base).
    pub snapshot_id: Option<String>,
    /// Snapshot the VM when it ends (delete, lifetime expiry).
    pub snapshot_on_terminate: Option<bool>,
    /// The name of that snapshot.
    pub snapshot_name: Option<String>,
    /// Publish this port of the VM once it runs (see `POST /v1/shares`).
    #[schema(value_type = Option<super::shares::ShareRequest>)]
    pub share: Option<Value>,
    /// Route this hostname to the VM's `share` (which it needs).
    #[schema(value_type = Option<super::domains::VmDomainRequest>)]
    pub custom_domain: Option<Value>,
    pub image_variant: Option<String>,
    /// What runs the sandbox: `container` (the default: namespaces on
    /// this host's kernel) or `microvm` (a qemu microVM with its own
    /// kernel; see `accelerator` on the VM).
    pub provider: Option<String>,
    /// Volumes to mount before the VM runs its first command.
    pub volumes: Option<Vec<super::volumes::MountVolumeRequest>>,
    /// Vaults whose secrets become env vars in every command.
    pub vault_ids: Option<Vec<String>>,
    /// At the end of its lifetime the VM is suspended instead of ended
    /// (a provider that cannot suspend it is a 422 naming why).
    pub auto_suspend: Option<bool>,
    /// A call that needs the VM live (exec, files, PTYs, share traffic)
    /// resumes it when suspended.
    pub auto_resume: Option<bool>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait until the VM runs (or failed). Default true.
    pub wait: Option<bool>,
}

/// A VM as every VM endpoint returns it: the seed's `VMCreateResponse`
/// fields, then paddock's.
#[derive(Debug, Serialize, ToSchema)]
pub struct VmResponse {
    pub vm_id: String,
    pub session_id: String,
    /// `creating`, `active` (running), `stopping`, `stopped`, `terminated`
    /// or `failed`.
    pub status: String,
    /// The share made with the VM (its token only in the create response).
    #[schema(value_type = Option<super::shares::ShareResponse>)]
    pub share: Option<Value>,
    /// The custom domain made with the VM.
    #[schema(value_type = Option<super::domains::DomainResponse>)]
    pub custom_domain: Option<Value>,
    /// `none` (no vault), `ready` (secrets staged) or `error`.
    pub env_status: String,
    /// Which vault failed, when `env_status` is `error`.
    pub env_error: Option<String>,
    /// The snapshot the VM started from.
    pub snapshot_id: Option<String>,
    pub snapshot_on_terminate: bool,
    pub snapshot_name: Option<String>,
    pub vault_ids: Vec<String>,
    pub auto_suspend: bool,
    pub auto_resume: bool,
    /// The VM's own egress policy; null when it follows the server's
    /// default (`GET /v1/egress/vm/{vm_id}` gives the policy in force).
    #[schema(value_type = Option<EgressPolicyBody>)]
    pub egress_policy: Option<Value>,
    /// The VM's address on the host bridge, while it has one.
    pub ip_address: Option<String>,
    /// Why the VM failed or ended.
    pub status_reason: Option<String>,
    pub provider: String,
    /// How a microVM's guest runs: `kvm` (hardware virtualization) or
    /// `tcg` (qemu's emulation); null for containers.
    pub accelerator: Option<String>,
    pub image_variant: String,
    /// The digest of the image the VM runs, when it runs an image.
    pub image_digest: Option<String>,
    pub memory_mb: u32,
    pub vcpu_count: u32,
    /// The writable layer's size in MiB; 0 for a VM made before disks
    /// had sizes (unlimited).
    pub disk_mb: u32,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, Value>,
    /// Names of the VM's env vars (values are never returned).
    pub env_keys: Vec<String>,
    pub vm_lifetime_seconds: Option<u64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub expires_at: Option<String>,
    pub terminated_at: Option<String>,
    /// For a template's VM (a devbox): the name it was run with.
    pub devbox_name: Option<String>,
    /// For a template's VM: the template it runs.
    pub devbox_template_slug: Option<String>,
}

/// The VM API's name for a status: InstaVM calls a running VM `active`.
pub fn wire_status(s: VmStatus) -> &'static str {
    match s {
        VmStatus::Running => "active",
        other => other.as_str(),
    }
}

pub fn parse_wire_status(s: &str) -> Option<VmStatus> {
    match s {
        "active" | "running" => Some(VmStatus::Running),
        other => VmStatus::parse(other),
    }
}

impl From<&Vm> for VmResponse {
    fn from(vm: &Vm) -> Self {
        Self {
            vm_id: vm.id.to_string(),
            session_id: vm.session_id.to_string(),
            status: wire_status(vm.status).to_owned(),
            share: None,
            custom_domain: None,
            env_status: vm.options.env_status.as_str().into(),
            env_error: vm.options.env_error.clone(),
            egress_policy: vm.options.egress_policy.as_ref().map(|p| p.to_json()),
            ip_address: vm.network.as_ref().map(|n| n.address.to_string()),
            snapshot_id: vm.options.snapshot_id.as_ref().map(ToString::to_string),
            snapshot_on_terminate: vm.options.snapshot_on_terminate,
            snapshot_name: vm.options.snapshot_name.clone(),
            vault_ids: vm
                .options
                .vault_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
            auto_suspend: vm.options.auto_suspend,
            auto_resume: vm.options.auto_resume,
            status_reason: vm.status_reason.clone(),
            provider: vm.provider.clone(),
            accelerator: vm.options.accelerator.clone(),
            image_variant: vm.image_variant.clone(),
            image_digest: vm.image_digest.clone(),
            memory_mb: vm.resources.memory_mb(),
            vcpu_count: vm.resources.vcpu_count(),
            disk_mb: vm.resources.disk_mb(),
            metadata: vm.metadata.clone(),
            env_keys: vm.env.iter().map(|(k, _)| k.clone()).collect(),
            vm_lifetime_seconds: vm.lifetime_seconds,
            created_at: vm.created_at.to_rfc3339(),
            started_at: vm.started_at.map(|t| t.to_rfc3339()),
            expires_at: vm.expires_at.map(|t| t.to_rfc3339()),
            terminated_at: vm.terminated_at.map(|t| t.to_rfc3339()),
            devbox_name: devbox(vm, "name"),
            devbox_template_slug: devbox(vm, "template_slug"),
        }
    }
}

/// A field of a devbox's mark ([`paddock_tools::templates::DEVBOX_MARK`]).
fn devbox(vm: &Vm, field: &str) -> Option<String> {
    vm.metadata
        .get(paddock_tools::templates::DEVBOX_MARK)?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListVmsQuery {
    pub session_id: Option<String>,
    /// Only VMs in this status (`active`, `creating`, `terminated`, …).
    pub status: Option<String>,
    /// Include ended VMs (by default only creating and active ones).
    pub include_terminated: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// The `x-next-cursor` header of the previous page.
    pub cursor: Option<String>,
}

/// `PATCH /v1/vms/{vm_id}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct PatchVmRequest {
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Ends the VM this many seconds from now.
    pub vm_lifetime_seconds: Option<i64>,
    pub memory_mb: Option<i64>,
    pub vcpu_count: Option<i64>,
    pub snapshot_on_terminate: Option<bool>,
    pub snapshot_name: Option<String>,
    /// Replaces the egress policy; a running VM gets it at once.
    #[schema(value_type = Option<EgressPolicyBody>)]
    pub egress_policy: Option<Value>,
    /// Replaces the VM's vaults: a running VM's commands see the new
    /// vaults' secrets at once and no longer the old ones'; `[]` removes
    /// them all, null changes nothing.
    pub vault_ids: Option<Vec<String>>,
    pub auto_suspend: Option<bool>,
    pub auto_resume: Option<bool>,
}

/// `POST /v1/sessions/session`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateSessionRequest {
    /// Accepted in the body as InstaVM's SDK sends it.
    pub api_key: Option<String>,
    pub vm_lifetime_seconds: Option<i64>,
    pub memory_mb: Option<i64>,
    pub vcpu_count: Option<i64>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    pub env: Option<BTreeMap<String, String>>,
    pub image_variant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub session_id: String,
    pub vm_id: String,
    pub status: String,
    /// The session's VM status, as InstaVM's `is_session_active` reads it.
    pub vm_status: String,
    pub vm_alive: bool,
    pub created_at: String,
    pub expires_at: Option<String>,
}

/// `POST /execute` and `/execute_async` (InstaVM's `CommandRequest`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteRequest {
    pub command: Option<String>,
    /// Alias of `command`.
    pub code: Option<String>,
    pub session_id: Option<String>,
    /// `python` runs the code with python3; `bash` with bash; the default
    /// (or `sh`) with `/bin/sh -c`.
    pub language: Option<String>,
    /// Seconds, 1 to 600 (default 60); the command is killed after it.
    pub timeout: Option<i64>,
    pub api_key: Option<String>,
    /// Vaults whose secrets become env vars of this command only.
    pub vault_ids: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteResponse {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    /// Wall-clock seconds.
    pub execution_time: f64,
    /// CPU seconds of the command and its waited-for children.
    pub cpu_time: f64,
    pub timed_out: bool,
    /// The OOM killer ended a process of the VM during the command.
    pub oom_killed: bool,
    /// The output was longer than the server keeps (16 MiB per stream).
    pub truncated: bool,
    pub session_id: String,
    pub vm_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecuteAsyncResponse {
    pub task_id: String,
    pub status: String,
    pub session_id: String,
    pub vm_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResponse {
    pub task_id: String,
    pub status: String,
    pub is_complete: bool,
    pub serialized_stdout: String,
    pub serialized_stderr: String,
    pub exit_code: Option<i32>,
    pub execution_time: Option<f64>,
    pub cpu_time: Option<f64>,
    pub error: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

/// `POST /v1/vms/{vm_id}/exec`: paddock's streaming exec.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamExecRequest {
    /// A shell command line (run with `/bin/sh -c`) or an argv array.
    #[schema(value_type = Object)]
    pub command: Value,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    /// Text fed to the command's stdin.
    pub stdin: Option<String>,
    pub timeout_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits, in octal.
    pub mode: String,
    pub modified_at: i64,
}

impl From<DirEntry> for FileEntry {
    fn from(e: DirEntry) -> Self {
        Self {
            name: e.name,
            kind: e.kind.as_str().to_owned(),
            size: e.size,
            mode: format!("{:o}", e.mode),
            modified_at: e.modified_unix,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DirectoryListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// Absolute path inside the VM.
    pub path: String,
    /// Permission bits for a new file, in octal (`755`).
    pub mode: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileWritten {
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreatePtyRequest {
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    /// A command line, run with `/bin/bash -lc`.
    pub command: Option<String>,
    /// A shell program, run directly.
    pub shell: Option<String>,
    /// The PTY session id (generated when absent).
    pub id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResizePtyRequest {
    pub cols: u16,
    pub rows: u16,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PtyResponse {
    /// The PTY session's id (InstaVM's SDK reads `session_id`).
    pub session_id: String,
    pub vm_id: String,
    #[serde(flatten)]
    pub pty: PtyInfo,
}

impl PtyResponse {
    pub fn new(vm_id: &str, pty: PtyInfo) -> Self {
        Self {
            session_id: pty.id.clone(),
            vm_id: vm_id.to_owned(),
            pty,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PtyListResponse {
    pub sessions: Vec<PtyResponse>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct KillRequest {
    pub session_id: String,
}

/// An egress policy. First match wins: the operator's blocked ranges
/// (host, metadata, private ranges, other VMs) are always refused; then
/// `denied_cidrs` refuse; `allowed_cidrs` allow; addresses looked up
/// through paddock's resolver for an allowed domain are allowed for the
/// answer's TTL; `allow_http` / `allow_https` allow TCP 80 / 443
/// anywhere; then `default`. Omitted fields are false or empty and
/// `default` is `deny`, so `{}` allows nothing and `{"default": "allow"}`
/// everything. Unknown fields are refused.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct EgressPolicyBody {
    /// `allow` or `deny`: what happens to traffic no rule matched.
    pub default: Option<String>,
    /// TCP port 80 to any address.
    pub allow_http: Option<bool>,
    /// TCP and UDP port 443 to any address.
    pub allow_https: Option<bool>,
    /// The package registries of pip, npm, apt, apk, cargo, go and gem
    /// (`allow_package_managers` is accepted as another name).
    pub allow_public_repos: Option<bool>,
    /// `example.com` or `*.example.com` (names below it). Only these
    /// names resolve when nothing else allows traffic.
    pub allowed_domains: Option<Vec<String>>,
    /// IPv4 addresses or CIDRs reachable on any port.
    pub allowed_cidrs: Option<Vec<String>>,
    /// IPv4 addresses or CIDRs refused before any allow rule.
    pub denied_cidrs: Option<Vec<String>>,
}

/// A PATCH field that is present, `null` included (serde reads a `null`
/// `Option` as absent): `deserialize_with` it, beside `default`.
pub(crate) fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A nullable text field of a PATCH read with [`present`]: absent
/// (unchanged), `null` (cleared) or a string.
pub(crate) fn nullable_text(
    field: &str,
    raw: Option<Value>,
) -> Result<Option<Option<String>>, super::error::ApiError> {
    match raw {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s))),
        Some(_) => Err(super::error::ApiError::body_field(
            field,
            "must be a string or null",
        )),
    }
}
