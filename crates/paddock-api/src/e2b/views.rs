//! The E2B control plane's JSON, as E2B's API names it: what the
//! handlers write, and what `/openapi.json` documents.

use std::collections::BTreeMap;

use paddock_e2b::{SandboxInfo, SandboxMetric, Template};
use serde::Serialize;
use utoipa::ToSchema;

/// An error: the HTTP status again, and what went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct E2bError {
    pub code: u16,
    pub message: String,
}

/// A sandbox as create and connect answer (E2B's `Sandbox`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub envd_version: &'static str,
    /// What the SDK sends envd as `X-Access-Token`.
    pub envd_access_token: String,
    /// What the SDK sends the sandbox's other ports (the code
    /// interpreter's) as `E2B-Traffic-Access-Token`.
    pub traffic_access_token: String,
    /// The domain of `get_host(port)`'s names (`{port}-{id}.{domain}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl From<&SandboxInfo> for SandboxView {
    fn from(s: &SandboxInfo) -> Self {
        Self {
            template_id: s.template_id.clone(),
            sandbox_id: s.sandbox_id.clone(),
            client_id: "paddock",
            envd_version: s.envd_version,
            envd_access_token: s.envd_access_token.clone(),
            traffic_access_token: s.traffic_access_token.clone(),
            domain: s.domain.clone(),
        }
    }
}

/// A listed sandbox (E2B's `ListedSandbox`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: &'static str,
    pub started_at: String,
    pub end_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    /// `running` or `paused`.
    pub state: &'static str,
    pub envd_version: &'static str,
    pub metadata: BTreeMap<String, String>,
}

impl From<&SandboxInfo> for ListedSandbox {
    fn from(s: &SandboxInfo) -> Self {
        Self {
            template_id: s.template_id.clone(),
            sandbox_id: s.sandbox_id.clone(),
            client_id: "paddock",
            started_at: s.started_at.to_rfc3339(),
            end_at: s.end_at.to_rfc3339(),
            cpu_count: s.cpu_count,
            memory_mb: s.memory_mb,
            disk_size_mb: s.disk_size_mb,
            state: s.state.as_str(),
            envd_version: s.envd_version,
            metadata: s.metadata.clone(),
        }
    }
}

/// One sandbox in detail (E2B's `SandboxDetail`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDetail {
    #[serde(flatten)]
    pub listed: ListedSandbox,
    pub envd_access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl From<&SandboxInfo> for SandboxDetail {
    fn from(s: &SandboxInfo) -> Self {
        Self {
            listed: s.into(),
            envd_access_token: s.envd_access_token.clone(),
            domain: s.domain.clone(),
        }
    }
}

/// A sandbox's resource use (E2B's `SandboxMetric`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    pub timestamp: String,
    pub timestamp_unix: i64,
    pub cpu_count: u32,
    pub cpu_used_pct: f64,
    pub mem_used: u64,
    pub mem_total: u64,
    pub mem_cache: u64,
    pub disk_used: u64,
    pub disk_total: u64,
}

impl From<&SandboxMetric> for MetricView {
    fn from(m: &SandboxMetric) -> Self {
        Self {
            timestamp: m.at.to_rfc3339(),
            timestamp_unix: m.at.unix_millis() / 1000,
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_used: m.mem_used,
            mem_total: m.mem_total,
            mem_cache: m.mem_cache,
            disk_used: m.disk_used,
            disk_total: m.disk_total,
        }
    }
}

/// A template (E2B's `Template`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u32,
    pub public: bool,
    pub aliases: Vec<String>,
    pub names: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<String>,
    pub last_spawned_at: Option<String>,
    pub spawn_count: u64,
    pub build_count: u32,
    pub envd_version: &'static str,
    /// `waiting`, `building`, `ready` or `error`.
    pub build_status: &'static str,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        Self {
            template_id: t.id.clone(),
            build_id: t.build_id.clone(),
            cpu_count: t.cpu_count,
            memory_mb: t.memory_mb,
            disk_size_mb: 0,
            public: false,
            aliases: vec![t.name.clone()],
            names: vec![t.name.clone()],
            created_at: t.create_time.to_rfc3339(),
            updated_at: t.update_time.to_rfc3339(),
            created_by: None,
            last_spawned_at: None,
            spawn_count: 0,
            build_count: t.build_count,
            envd_version: paddock_e2b::ENVD_VERSION,
            build_status: t.status.as_str(),
        }
    }
}

/// One build of a template.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildView {
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
}

/// A template with its builds (E2B's `TemplateWithBuilds`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateWithBuilds {
    #[serde(flatten)]
    pub template: TemplateView,
    pub builds: Vec<BuildView>,
}

/// A registered build (E2B's `TemplateRequestResponseV3`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildRequested {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub public: bool,
    pub names: Vec<String>,
    pub aliases: Vec<String>,
    pub tags: Vec<String>,
}

/// A line of a build's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildLogEntry {
    pub timestamp: String,
    /// `info`, `warn` or `error`.
    pub level: &'static str,
    pub message: String,
}

/// Why a build failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildReason {
    pub message: String,
}

/// A build's status and its log from the asked offset (E2B's
/// `TemplateBuildInfo`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatusView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "buildID")]
    pub build_id: String,
    pub status: &'static str,
    pub logs: Vec<String>,
    pub log_entries: Vec<BuildLogEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<BuildReason>,
}

/// A template found by its alias.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasView {
    #[serde(rename = "templateID")]
    pub template_id: String,
    pub public: bool,
}

/// Whether a `COPY` step's files are here, and where to upload them.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilesLink {
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A snapshot of a sandbox (E2B's `SnapshotInfo`): `Sandbox.create`
/// takes its id as a template.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotView {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

impl From<&paddock_core::model::Snapshot> for SnapshotView {
    fn from(s: &paddock_core::model::Snapshot) -> Self {
        Self {
            snapshot_id: s.id.to_string(),
            names: vec![s.name.clone()],
        }
    }
}
