//! The server's configuration: built-in defaults, then an optional TOML
//! file, then `PADDOCK_*` environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use paddock_core::model::{EgressPolicy, Ipv4Cidr, Limits};
use paddock_runtime::container::VariantSource;
use serde::{Deserialize, Serialize};

/// The config's top-level keys: what the `PADDOCK_*` filter takes as
/// configuration. Read from the config itself, so a new section is
/// settable from the environment with no list to keep in step.
fn config_keys() -> Vec<String> {
    serde_json::to_value(Config::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where records live: `postgres://…` (shared by several paddock
    /// processes) or `sqlite:PATH`; unset, SQLite in the data dir. May
    /// carry a password: never logged.
    #[serde(default)]
    pub store: Option<String>,
    /// The `paddock-agent` binary; default: beside this executable.
    pub agent_path: Option<PathBuf>,
    pub default_variant: String,
    pub variants: BTreeMap<String, VariantConfig>,
    pub limits: Limits,
    /// `text` or `json`.
    pub log_format: String,
    /// Per registry host (`host:port`): `insecure` (plain HTTP),
    /// `username`, `password`. Never logged.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryEntry>,
    /// Pull and push only to the registries listed under `registries`;
    /// a reference to any other is refused (403) before a connection is
    /// made. Off: any registry a reference names.
    #[serde(default)]
    pub only_listed_registries: bool,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub shares: SharesSection,
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub ssh: SshSection,
    #[serde(default)]
    pub providers: ProvidersSection,
    pub microvm: MicroVmSection,
    #[serde(default)]
    pub userns: UsernsSection,
    #[serde(default)]
    pub sandbox: SandboxSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub quotas: QuotasSection,
    #[serde(default)]
    pub usage: UsageSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub webhooks: WebhooksSection,
    #[serde(default)]
    pub e2b: E2bSection,
    #[serde(default)]
    pub browser: BrowserSection,
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// `[cluster]`: this node among the nodes sharing a PostgreSQL store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `node`: this process runs sandboxes and registers as a node (the
    /// default); `api`: an API replica, which runs none and places every
    /// VM API create on a node.
    pub role: String,
    /// The URL other nodes and replicas reach this node's API at
    /// (default: `http://` and the listen address).
    pub address: Option<String>,
    /// How often the node records that it lives, in seconds.
    pub heartbeat_seconds: u64,
    /// How long after its last heartbeat a silent node's VMs are marked
    /// `lost`, in seconds. Longer than a few heartbeats, so that a slow
    /// store does not lose a live node's VMs.
    pub lease_seconds: u64,
    /// The operator's labels for this node (GPU model, zone, …).
    pub labels: BTreeMap<String, String>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            role: "node".to_owned(),
            address: None,
            heartbeat_seconds: 5,
            lease_seconds: 30,
            labels: BTreeMap::new(),
        }
    }
}

impl ClusterSection {
    /// Whether this process runs sandboxes (`role`, checked).
    pub fn runs_sandboxes(&self) -> anyhow::Result<bool> {
        match self.role.as_str() {
            "node" => Ok(true),
            "api" => Ok(false),
            other => anyhow::bail!("[cluster] role must be \"node\" or \"api\", not {other:?}"),
        }
    }

    /// The heartbeat and the lease, checked: a lease must outlast two
    /// heartbeats.
    pub fn timing(&self) -> anyhow::Result<(Duration, Duration)> {
        if self.heartbeat_seconds == 0 || self.lease_seconds < 2 * self.heartbeat_seconds {
            anyhow::bail!(
                "[cluster] lease_seconds ({}) must be at least twice heartbeat_seconds ({}), which must be at least 1",
                self.lease_seconds,
                self.heartbeat_seconds
            );
        }
        Ok((
            Duration::from_secs(self.heartbeat_seconds),
            Duration::from_secs(self.lease_seconds),
        ))
    }
}

/// `[browser]`: browser sessions of the VM API (`/v1/browser/…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserSection {
    /// Chromium's binary as a sandbox sees it (the default variant sees
    /// the host's `/usr`: Debian's `chromium` package, `scripts/deps.sh`).
    pub chromium: String,
    /// Memory of a session's sandbox, in MiB.
    pub memory_mb: u32,
    /// A session nobody used for this long ends.
    pub idle_timeout_seconds: u64,
    /// The most sessions one account may hold at once.
    pub max_sessions_per_account: usize,
}

impl Default for BrowserSection {
    fn default() -> Self {
        let d = paddock_tools::BrowserConfig::default();
        Self {
            chromium: d.chromium,
            memory_mb: d.memory_mb,
            idle_timeout_seconds: d.idle_timeout.as_secs(),
            max_sessions_per_account: d.max_sessions_per_account,
        }
    }
}

/// `[e2b]`: how sandboxes made through the E2B-compatible API (`/e2b`)
/// run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct E2bSection {
    /// The provider they run on (`microvm` for sandboxes whose `pause`
    /// keeps their memory); default: the server's default provider.
    pub provider: Option<String>,
}

/// `[webhooks]`: where deliveries may go. By default only to public
/// addresses: loopback, private, link-local and shared ones are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Off: every endpoint URL is refused, and nothing is resolved or
    /// sent (a server that must make no outbound connection).
    pub enabled: bool,
    /// Let endpoints resolve to loopback and private addresses (an
    /// operator's own receivers; the tests' listeners).
    pub allow_private: bool,
    /// IPv4 CIDRs no endpoint may resolve to, even with `allow_private`.
    pub blocked: Vec<String>,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private: false,
            blocked: Vec::new(),
        }
    }
}

impl WebhooksSection {
    pub fn sender(
        &self,
    ) -> anyhow::Result<std::sync::Arc<dyn paddock_core::ports::webhook_sender::WebhookSender>>
    {
        if !self.enabled {
            return Ok(std::sync::Arc::new(
                paddock_core::ports::webhook_sender::NoWebhooks,
            ));
        }
        let blocked = self
            .blocked
            .iter()
            .map(|c| {
                paddock_core::model::Ipv4Cidr::parse(c)
                    .map_err(|e| anyhow::anyhow!("[webhooks] blocked: {c:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(std::sync::Arc::new(
            crate::webhook_sender::HttpWebhookSender::new(self.allow_private, blocked),
        ))
    }
}

/// `[audit]`: how long audit events are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    pub retention_days: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

impl AuditSection {
    pub fn retention(&self) -> anyhow::Result<std::time::Duration> {
        anyhow::ensure!(
            (1..=36_500).contains(&self.retention_days),
            "[audit] retention_days must be between 1 and 36500"
        );
        Ok(std::time::Duration::from_secs(self.retention_days * 86_400))
    }
}

/// `[usage]`: how often each sandbox's consumption is sampled, and the
/// rates usage reports price it at (dollars; 0: not priced).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    pub sample_seconds: u64,
    pub cpu_hour_dollars: f64,
    pub ram_gib_hour_dollars: f64,
    pub storage_gib_hour_dollars: f64,
    pub egress_gib_dollars: f64,
}

impl Default for UsageSection {
    fn default() -> Self {
        Self {
            sample_seconds: 15,
            cpu_hour_dollars: 0.0,
            ram_gib_hour_dollars: 0.0,
            storage_gib_hour_dollars: 0.0,
            egress_gib_dollars: 0.0,
        }
    }
}

impl UsageSection {
    /// The sampling interval; refused when 0 or over an hour, or a rate
    /// is negative or not a number.
    pub fn interval(&self) -> anyhow::Result<std::time::Duration> {
        anyhow::ensure!(
            (1..=3600).contains(&self.sample_seconds),
            "[usage] sample_seconds must be between 1 and 3600"
        );
        for (name, rate) in [
            ("cpu_hour_dollars", self.cpu_hour_dollars),
            ("ram_gib_hour_dollars", self.ram_gib_hour_dollars),
            ("storage_gib_hour_dollars", self.storage_gib_hour_dollars),
            ("egress_gib_dollars", self.egress_gib_dollars),
        ] {
            anyhow::ensure!(
                rate.is_finite() && rate >= 0.0,
                "[usage] {name} must be a non-negative number"
            );
        }
        Ok(std::time::Duration::from_secs(self.sample_seconds))
    }

    pub fn prices(&self) -> paddock_core::usage::UsagePrices {
        paddock_core::usage::UsagePrices {
            cpu_hour: self.cpu_hour_dollars,
            ram_gib_hour: self.ram_gib_hour_dollars,
            storage_gib_hour: self.storage_gib_hour_dollars,
            egress_gib: self.egress_gib_dollars,
        }
    }
}

/// `[quotas]`: what each account may hold and how fast it may call, by
/// default; `[quotas.accounts."NAME or ID"]` sets an account's own (a
/// field left out there is the default's). 0: no limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasSection {
    pub max_vms: u64,
    pub max_memory_mb: u64,
    pub max_vcpus: u64,
    pub max_volume_mb: u64,
    pub max_snapshot_mb: u64,
    pub max_image_builds: u64,
    pub requests_per_second: u32,
    pub burst: u32,
    /// An account's own quota: a field left out is the default's, 0 is
    /// no limit.
    pub accounts: BTreeMap<String, paddock_core::quotas::Quota>,
}

impl Default for QuotasSection {
    fn default() -> Self {
        Self {
            max_vms: 0,
            max_memory_mb: 0,
            max_vcpus: 0,
            max_volume_mb: 0,
            max_snapshot_mb: 0,
            max_image_builds: 0,
            requests_per_second: 500,
            burst: 1000,
            accounts: BTreeMap::new(),
        }
    }
}

impl QuotasSection {
    pub fn to_quotas(&self) -> paddock_core::quotas::Quotas {
        use paddock_core::quotas::Quota;
        let limit = |n: u64| (n > 0).then_some(n);
        let default = Quota {
            max_vms: limit(self.max_vms),
            max_memory_mb: limit(self.max_memory_mb),
            max_vcpus: limit(self.max_vcpus),
            max_volume_mb: limit(self.max_volume_mb),
            max_snapshot_mb: limit(self.max_snapshot_mb),
            max_image_builds: limit(self.max_image_builds),
            requests_per_second: (self.requests_per_second > 0).then_some(self.requests_per_second),
            burst: Some(self.burst),
        };
        let per_account = self
            .accounts
            .iter()
            .map(|(who, q)| {
                let own = Quota {
                    max_vms: q.max_vms.map_or(default.max_vms, limit),
                    max_memory_mb: q.max_memory_mb.map_or(default.max_memory_mb, limit),
                    max_vcpus: q.max_vcpus.map_or(default.max_vcpus, limit),
                    max_volume_mb: q.max_volume_mb.map_or(default.max_volume_mb, limit),
                    max_snapshot_mb: q.max_snapshot_mb.map_or(default.max_snapshot_mb, limit),
                    max_image_builds: q.max_image_builds.map_or(default.max_image_builds, limit),
                    requests_per_second: q
                        .requests_per_second
                        .map_or(default.requests_per_second, |r| (r > 0).then_some(r)),
                    burst: q.burst.or(default.burst),
                };
                (who.clone(), own)
            })
            .collect();
        paddock_core::quotas::Quotas::new(default, per_account)
    }
}

/// `[http]`: what the API listener allows a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// A request head must arrive within this many seconds of the
    /// connection waiting for one (new, or idle after a response): the
    /// slow-header and the keep-alive idle timeout.
    pub header_read_timeout_secs: u64,
    /// A request body must send data at least this often.
    pub body_read_timeout_secs: u64,
    /// Open connections, in all and from one client address; over
    /// either, a connection gets 503 and is closed.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// JSON request bodies, on every surface (file uploads stream and
    /// have no limit).
    pub json_body_mb: usize,
    /// The bodies of the routes that take a command (commands themselves
    /// are at most 16 MiB).
    pub command_body_mb: usize,
    /// Request bodies read whole at once, server-wide; a request that
    /// does not fit gets 503 with `Retry-After` before it is read.
    pub body_budget_mb: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        let d = paddock_api::server::HttpLimits::default();
        Self {
            header_read_timeout_secs: d.header_read_timeout.as_secs(),
            body_read_timeout_secs: d.body_read_timeout.as_secs(),
            max_connections: d.max_connections,
            max_connections_per_client: d.max_connections_per_client,
            json_body_mb: d.json_body_bytes / (1024 * 1024),
            command_body_mb: d.command_body_bytes / (1024 * 1024),
            body_budget_mb: d.body_budget_bytes / (1024 * 1024),
        }
    }
}

impl HttpSection {
    pub fn to_limits(&self) -> anyhow::Result<paddock_api::server::HttpLimits> {
        use std::time::Duration;
        if self.header_read_timeout_secs == 0 || self.body_read_timeout_secs == 0 {
            anyhow::bail!("http: the timeouts must be at least 1 second");
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            anyhow::bail!("http: the connection caps must be at least 1");
        }
        if !(1..=1024).contains(&self.json_body_mb) {
            anyhow::bail!("http.json_body_mb: 1 to 1024");
        }
        if !(1..=1024).contains(&self.command_body_mb) {
            anyhow::bail!("http.command_body_mb: 1 to 1024");
        }
        if self.body_budget_mb < self.json_body_mb.max(self.command_body_mb) {
            anyhow::bail!("http.body_budget_mb: at least the largest body limit");
        }
        Ok(paddock_api::server::HttpLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            json_body_bytes: self.json_body_mb * 1024 * 1024,
            command_body_bytes: self.command_body_mb * 1024 * 1024,
            body_budget_bytes: self.body_budget_mb * 1024 * 1024,
            ..Default::default()
        })
    }
}

/// `[sandbox]`: what container sandboxes see of themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSection {
    /// `/proc/meminfo`, `cpuinfo`, `stat`, `uptime`, `loadavg`, `swaps`
    /// and the online CPUs describe the sandbox (through lxcfs, which
    /// `scripts/deps.sh` installs), not the host.
    pub proc_views: bool,
    /// How many sandboxes of the default shape (the default variant,
    /// size, disk and egress policy) are kept booted ahead of demand, so
    /// that creating one is only claiming it; 0: none.
    pub warm_pool: usize,
    /// How many loop devices freed by deleted sandboxes are kept for the
    /// next boots (making one costs a boot about a millisecond); the rest
    /// are removed, since every one that exists lengthens the
    /// `/proc/diskstats` lxcfs reads for each sandbox.
    pub spare_loop_devices: usize,
}

impl Default for SandboxSection {
    fn default() -> Self {
        Self {
            proc_views: true,
            warm_pool: 4,
            spare_loop_devices: 32,
        }
    }
}

/// `[userns]`: the host ids container sandboxes' user namespaces are cut
/// from: sandbox ids `0..count` of the Nth sandbox are host ids
/// `base + N*count ..`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsernsSection {
    pub base: u32,
    pub count: u32,
}

impl Default for UsernsSection {
    fn default() -> Self {
        let d = paddock_runtime::container::IdRangeConfig::default();
        Self {
            base: d.base,
            count: d.count,
        }
    }
}

impl UsernsSection {
    pub fn to_runtime(&self) -> paddock_runtime::container::IdRangeConfig {
        paddock_runtime::container::IdRangeConfig {
            base: self.base,
            count: self.count,
        }
    }
}

/// `[providers]`: the providers sandboxes of environment definitions may
/// run on besides paddock's own containers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersSection {
    /// The `local` provider: commands as host processes, with no
    /// isolation. Off unless an operator opts in.
    pub local: bool,
    /// The accounts that may use it, by id or name (`"default"` is the
    /// account made at first start); none unless listed.
    pub local_accounts: Vec<String>,
    /// The unprivileged host user (name or uid) its sandboxes run as;
    /// unset: a host uid of each sandbox's own. Never root.
    pub local_user: Option<String>,
    /// Where its sandboxes' working directories are (outside the data
    /// dir, which they cannot read).
    pub local_root: Option<PathBuf>,
    /// The `docker` provider's engine (`unix:///run/docker.sock`); off
    /// when unset.
    pub docker: Option<String>,
    /// The `microvm` provider (`"provider": "microvm"` on `POST /v1/vms`):
    /// on unless set to false; when qemu, virtiofsd or a guest kernel is
    /// missing the server says so and runs without it.
    pub microvm: Option<bool>,
}

/// `[microvm]`: how the microVM provider runs its guests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MicroVmSection {
    /// The guest kernel (`/boot/vmlinuz-RELEASE`, with its
    /// `/lib/modules/RELEASE`); the newest in /boot when unset.
    pub kernel: Option<PathBuf>,
    /// `kvm` or `tcg`; detected when unset (KVM needs /dev/kvm and a CPU
    /// with vmx or svm).
    pub accelerator: Option<paddock_runtime::microvm::Accelerator>,
    /// Where the uncompressed kernel and the base initramfs are cached
    /// (`DATA/microvm` when unset); servers may share one.
    pub cache_dir: Option<PathBuf>,
}

impl MicroVmSection {
    pub fn to_runtime(&self) -> paddock_runtime::microvm::MicroVmConfig {
        paddock_runtime::microvm::MicroVmConfig {
            kernel: self.kernel.clone(),
            accelerator: self.accelerator,
            cache_dir: self.cache_dir.clone(),
        }
    }
}

/// `[ssh]`: the SSH gateway to connected dev environments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshSection {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for SshSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7423)),
        }
    }
}

/// `[gateway]`: what the account gateway's built-in cluster offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Nodes of the built-in CPU pool (slices of this host, one rank
    /// each); default: the host's CPU count.
    pub cpu_nodes: Option<u32>,
    /// The host's GPUs for GPU pools: `N` of `/dev/nvidiaN`; default: every
    /// one found.
    pub gpus: Option<Vec<u32>>,
    /// Where the GPU device nodes are (default `/dev`).
    pub gpu_dev_dir: Option<PathBuf>,
    /// The zone connections report.
    pub zone: String,
    /// Size of each environment's home volume, in GiB.
    pub home_size_gib: u64,
    /// Size of a connection's scratch (`useLocalStorage`), in GiB.
    pub scratch_size_gib: u64,
    /// The disk of each node's sandbox (its writable layer), in GiB.
    pub node_disk_gib: u32,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            cpu_nodes: None,
            gpus: None,
            gpu_dev_dir: None,
            zone: "local".into(),
            home_size_gib: 4,
            scratch_size_gib: 4,
            node_disk_gib: 16,
        }
    }
}

impl ProvidersSection {
    pub fn local_root(&self) -> PathBuf {
        self.local_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(paddock_runtime::container::DEFAULT_LOCAL_ROOT))
    }

    /// The `local` provider's accounts and user, checked: the user exists
    /// and is not root.
    pub fn local_config(&self) -> anyhow::Result<paddock_runtime::local::LocalConfig> {
        let user = match self.local_user.as_deref() {
            None => None,
            Some(name) => {
                let found = match name.parse::<u32>() {
                    Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))?
                        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
                        .or(Some((uid, uid))),
                    Err(_) => nix::unistd::User::from_name(name)?
                        .map(|u| (u.uid.as_raw(), u.gid.as_raw())),
                };
                let Some((uid, gid)) = found else {
                    bail!("providers.local_user: no host user {name:?}");
                };
                if uid == 0 || gid == 0 {
                    bail!(
                        "providers.local_user: {name:?} is root; local sandboxes never run as root"
                    );
                }
                Some(paddock_agent::boot::HostUser { uid, gid })
            }
        };
        Ok(paddock_runtime::local::LocalConfig {
            accounts: self.local_accounts.iter().cloned().collect(),
            user,
        })
    }
}

impl GatewaySection {
    pub fn gpu_host(&self) -> paddock_runtime::gpu::GpuHost {
        let mut host = paddock_runtime::gpu::GpuHost::default();
        if let Some(dir) = &self.gpu_dev_dir {
            host.dev_dir = dir.clone();
        }
        host
    }

    pub fn to_core(&self) -> paddock_gateway::GatewayConfig {
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1);
        paddock_gateway::GatewayConfig {
            cpu_nodes: self.cpu_nodes.unwrap_or(cpus),
            gpus: self.gpus.clone().unwrap_or_else(|| self.gpu_host().gpus()),
            zone: self.zone.clone(),
            home_size_bytes: self.home_size_gib << 30,
            scratch_size_bytes: self.scratch_size_gib << 30,
            node_disk_mb: self.node_disk_gib.saturating_mul(1024),
            ..paddock_gateway::GatewayConfig::default()
        }
    }
}

/// `[shares]`: the share proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharesSection {
    /// Where the proxy listens (plain HTTP).
    pub listen: SocketAddr,
    /// Share hosts are `{label}.{domain}`; wildcard DNS for it must point
    /// at the proxy (`*.localhost` is loopback without any DNS).
    pub domain: String,
    /// The scheme and port written in share URLs, when a front proxy
    /// serves them on others (`https`, 443); by default the listener's.
    pub url_scheme: String,
    pub url_port: Option<u16>,
    /// Where the proxy serves TLS (custom domains, and shares over https).
    pub tls_listen: SocketAddr,
    /// Operators' certificates: `{name}.crt` and `{name}.key` (PEM), by
    /// domain or `*.{domain}` for shares; others get self-signed ones.
    pub certs_dir: Option<PathBuf>,
    /// The address custom domains' DNS records point at.
    pub public_address: std::net::Ipv4Addr,
}

impl Default for SharesSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7421)),
            domain: "localhost".into(),
            url_scheme: "http".into(),
            url_port: None,
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 7422)),
            certs_dir: None,
            public_address: std::net::Ipv4Addr::LOCALHOST,
        }
    }
}

/// `[network]`: the host bridge VMs attach to and the egress defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// Without networking, VMs get loopback only and policies are refused.
    pub enabled: bool,
    /// The bridge, also the name of the server's nftables tables. Two
    /// servers on one host need different bridges and subnets.
    pub bridge: String,
    pub subnet: String,
    /// The subnet is cut into segments of this many addresses, each
    /// behind a bridge of its own (a bridge takes at most 1,023 ports): a
    /// power of two from 8 to 1024.
    pub addresses_per_bridge: u32,
    /// Ranges no VM reaches whatever its policy.
    pub blocked: Vec<String>,
    /// Resolvers the VM resolver forwards to (`ip` or `ip:port`); empty
    /// means the host's `/etc/resolv.conf`.
    pub dns_upstream: Vec<String>,
    /// Namespaces kept prepared ahead of demand.
    pub warm: usize,
    /// The egress policy of VMs that set none (the `egress_policy` schema).
    pub default_egress: serde_json::Value,
    /// Vault services: where to reach a bound host instead of asking the
    /// host's resolver (`"api.example.com" = "10.1.2.3:443"`), for a split
    /// horizon or a private endpoint; such an address may be in a blocked
    /// range.
    pub vault_upstreams: std::collections::BTreeMap<String, String>,
    /// A PEM file of certificates trusted beside the host's roots when
    /// the vault proxy connects to bound hosts (a private CA).
    pub vault_extra_roots: Option<PathBuf>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bridge: "paddock0".into(),
            subnet: "10.88.0.0/16".into(),
            addresses_per_bridge: paddock_net::segment::MAX_SEGMENT_ADDRESSES,
            blocked: [
                "0.0.0.0/8",
                "10.0.0.0/8",
                "100.64.0.0/10",
                "127.0.0.0/8",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "224.0.0.0/3",
            ]
            .map(String::from)
            .to_vec(),
            dns_upstream: Vec::new(),
            warm: 4,
            default_egress: serde_json::json!({"default": "allow"}),
            vault_upstreams: Default::default(),
            vault_extra_roots: None,
        }
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    #[serde(default)]
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A pull-through mirror (`host:port`, with its own entry) that this
    /// registry's images are pulled from instead.
    #[serde(default)]
    pub mirror: Option<String>,
}

impl std::fmt::Debug for RegistryEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryEntry")
            .field("insecure", &self.insecure)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("mirror", &self.mirror)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// `host` (the host's /usr under paddock's /etc) or `directory` (a
    /// root filesystem at `path`).
    pub kind: String,
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut variants = BTreeMap::new();
        variants.insert(
            "default".to_owned(),
            VariantConfig {
                kind: "host".into(),
                path: None,
            },
        );
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: PathBuf::from(".paddock"),
            store: None,
            cluster: ClusterSection::default(),
            agent_path: None,
            default_variant: "default".into(),
            variants,
            limits: Limits::default(),
            log_format: "text".into(),
            registries: BTreeMap::new(),
            only_listed_registries: false,
            network: NetworkSection::default(),
            gateway: GatewaySection::default(),
            e2b: E2bSection::default(),
            browser: BrowserSection::default(),
            ssh: SshSection::default(),
            shares: SharesSection::default(),
            providers: ProvidersSection::default(),
            microvm: MicroVmSection::default(),
            userns: UsernsSection::default(),
            sandbox: SandboxSection::default(),
            http: HttpSection::default(),
            quotas: QuotasSection::default(),
            usage: UsageSection::default(),
            audit: AuditSection::default(),
            webhooks: WebhooksSection::default(),
        }
    }
}

impl Config {
    /// Loads defaults ← `file` ← `PADDOCK_*` env (nested keys with `__`,
    /// e.g. `PADDOCK_LIMITS__PIDS_MAX=256`).
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.is_file() {
                bail!("config file {} does not exist", f.display());
            }
            figment = figment.merge(Toml::file(f));
        }
        figment
            .merge(
                // Only the config's own keys: other PADDOCK_* variables
                // (the CLI's PADDOCK_SERVER, a test's PADDOCK_BIN) are not
                // configuration.
                Env::prefixed("PADDOCK_").split("__").filter({
                    let keys = config_keys();
                    move |key| {
                        let top = key.as_str().split('.').next().unwrap_or("");
                        keys.iter().any(|k| k.eq_ignore_ascii_case(top))
                    }
                }),
            )
            .extract()
            .context("invalid configuration")
    }

    pub fn limits(&self) -> anyhow::Result<Limits> {
        let l = &self.limits;
        if l.min_memory_mb == 0
            || l.min_memory_mb > l.max_memory_mb
            || !(l.min_memory_mb..=l.max_memory_mb).contains(&l.default_memory_mb)
            || l.max_vcpu_count == 0
            || !(1..=l.max_vcpu_count).contains(&l.default_vcpu_count)
            || l.pids_max == 0
            || l.min_disk_mb < 16
            || !(l.min_disk_mb..=l.max_disk_mb).contains(&l.default_disk_mb)
        {
            bail!("limits: the bounds must be ordered and the defaults inside them");
        }
        Ok(*l)
    }

    /// The network settings, checked; `None` when networking is off.
    pub fn network(&self) -> anyhow::Result<Option<paddock_net::NetworkConfig>> {
        let n = &self.network;
        if !n.enabled {
            return Ok(None);
        }
        let cidr = |field: &str, s: &str| {
            Ipv4Cidr::parse(s).map_err(|e| anyhow::anyhow!("network.{field}: {s:?} {e}"))
        };
        let valid_bridge = !n.bridge.is_empty()
            && n.bridge.len() <= 15
            && n.bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_bridge {
            bail!("network.bridge: 1 to 15 letters, digits or underscores");
        }
        let upstream = if n.dns_upstream.is_empty() {
            host_resolvers()
        } else {
            n.dns_upstream
                .iter()
                .map(|s| {
                    s.parse::<std::net::SocketAddr>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
                        .map_err(|_| {
                            anyhow::anyhow!("network.dns_upstream: {s:?} is not ip or ip:port")
                        })
                })
                .collect::<anyhow::Result<_>>()?
        };
        let subnet = cidr("subnet", &n.subnet)?;
        paddock_net::segment::Segments::new(subnet, n.addresses_per_bridge, &n.bridge).map_err(
            |e| match e {
                paddock_net::NetError::Config(why) => {
                    anyhow::anyhow!("network.addresses_per_bridge: {why}")
                }
                other => anyhow::anyhow!("network.subnet: {other}"),
            },
        )?;
        Ok(Some(paddock_net::NetworkConfig {
            bridge: n.bridge.clone(),
            subnet,
            addresses_per_bridge: n.addresses_per_bridge,
            blocked: self.blocked_ranges()?,
            dns_upstream: upstream,
            warm: n.warm,
            state_dir: self.data_dir.join("net"),
            prepared_policy: self.default_egress()?,
            vault_upstreams: n
                .vault_upstreams
                .iter()
                .map(|(host, addr)| {
                    addr.parse::<std::net::SocketAddr>()
                        .map(|a| (host.to_ascii_lowercase(), a))
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "network.vault_upstreams.{host}: {addr:?} is not ip:port"
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?,
            vault_extra_roots: match &n.vault_extra_roots {
                None => Vec::new(),
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        anyhow::anyhow!("network.vault_extra_roots: {}: {e}", path.display())
                    })?;
                    use rustls::pki_types::pem::PemObject as _;
                    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| {
                            anyhow::anyhow!("network.vault_extra_roots: {}: {e}", path.display())
                        })?
                }
            },
        }))
    }

    /// The ranges no sandbox reaches (`network.blocked`): paddock's own
    /// bridge and the docker provider's engine network alike.
    pub fn blocked_ranges(&self) -> anyhow::Result<Vec<Ipv4Cidr>> {
        self.network
            .blocked
            .iter()
            .map(|s| Ipv4Cidr::parse(s).map_err(|e| anyhow::anyhow!("network.blocked: {s:?} {e}")))
            .collect()
    }

    pub fn default_egress(&self) -> anyhow::Result<EgressPolicy> {
        EgressPolicy::from_json(&self.network.default_egress, "network.default_egress")
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn registries(&self) -> BTreeMap<String, paddock_image::RegistryConfig> {
        self.registries
            .iter()
            .map(|(host, r)| {
                let config = paddock_image::RegistryConfig {
                    insecure: r.insecure,
                    username: r.username.clone(),
                    password: r.password.clone(),
                    mirror: r.mirror.clone(),
                };
                (host.clone(), config)
            })
            .collect()
    }

    pub fn variants(&self) -> anyhow::Result<BTreeMap<String, VariantSource>> {
        let mut out = BTreeMap::new();
        for (name, v) in &self.variants {
            let source = match (v.kind.as_str(), &v.path) {
                ("host", None) => VariantSource::Host,
                ("directory", Some(p)) => VariantSource::Directory(p.clone()),
                ("directory", None) => bail!("variant {name}: kind directory needs a path"),
                ("host", Some(_)) => bail!("variant {name}: kind host takes no path"),
                (other, _) => bail!("variant {name}: unknown kind {other:?} (host or directory)"),
            };
            out.insert(name.clone(), source);
        }
        if !out.contains_key(&self.default_variant) {
            bail!(
                "default_variant {:?} is not among the variants",
                self.default_variant
            );
        }
        Ok(out)
    }
}

/// The nameservers of the host's `/etc/resolv.conf`.
fn host_resolvers() -> Vec<std::net::SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| (ip, 53).into())
        .collect()
}

#[cfg(test)]
// figment::Jail's closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Every section of the config can be set from the environment, the
    /// ones added last (which a hand-kept list had missed) included.
    #[test]
    fn every_config_key_is_settable_from_the_environment() {
        assert!(config_keys().len() >= 20, "{:?}", config_keys());
        figment::Jail::expect_with(|jail| {
            jail.set_env("PADDOCK_WEBHOOKS__ALLOW_PRIVATE", "true");
            jail.set_env("PADDOCK_USAGE__SAMPLE_SECONDS", "7");
            jail.set_env("PADDOCK_AUDIT__RETENTION_DAYS", "3");
            jail.set_env("PADDOCK_MICROVM__CACHE_DIR", "/var/cache/pdk");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.webhooks.allow_private);
            assert_eq!(c.microvm.cache_dir, Some(PathBuf::from("/var/cache/pdk")));
            assert_eq!(c.usage.sample_seconds, 7);
            assert_eq!(c.audit.retention_days, 3);
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        assert!(c.limits().is_ok());
        assert_eq!(c.variants().expect("valid").len(), 1);
    }

    #[test]
    fn file_overrides_defaults() {
        // In a jail: jails are serialized, so another test's environment
        // cannot leak in.
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "paddock.toml",
                "listen = \"127.0.0.1:9999\"\n[limits]\npids_max = 77\nmin_memory_mb = 64\nmax_memory_mb = 1024\nmax_vcpu_count = 4\ndefault_memory_mb = 128\ndefault_vcpu_count = 1\nmax_lifetime_seconds = 60\n",
            )?;
            let c = Config::load(Some(Path::new("paddock.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9999);
            assert_eq!(c.limits().map_err(|e| e.to_string())?.pids_max, 77);
            Ok(())
        });
    }

    #[test]
    fn unrelated_env_vars_are_not_config() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PADDOCK_BIN", "/x");
            jail.set_env("PADDOCK_LIMITS__PIDS_MAX", "99");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.limits.pids_max, 99);
            Ok(())
        });
    }

    #[test]
    fn bad_variant_is_refused() {
        let mut c = Config::default();
        c.variants.insert(
            "x".into(),
            VariantConfig {
                kind: "nope".into(),
                path: None,
            },
        );
        assert!(c.variants().is_err());
    }
}
