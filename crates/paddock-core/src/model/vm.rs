//! A VM: one sandbox, its requested shape, and where it is in its life.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::ids::{AccountId, NodeId, SessionId, SnapshotId, VaultId, VmId};
use crate::model::{EgressPolicy, MountRequest, Resources};
use crate::network_backend::VmNetwork;

/// Where a VM is in its life. The allowed moves are in [`VmStatus::can_become`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmStatus {
    Creating,
    Running,
    Stopping,
    Stopped,
    /// Its memory and filesystem saved to the data dir; nothing of it
    /// runs. Resume continues it where it was.
    Suspended,
    Terminated,
    Failed,
    /// Its node stopped answering (its lease ran out in the shared
    /// store): nobody knows whether it runs. The node, back, adopts it
    /// (`running`) or ends it (`failed`); a delete meanwhile ends its
    /// record, and the node frees the sandbox when it returns.
    Lost,
}

impl VmStatus {
    pub const ALL: [VmStatus; 8] = [
        Self::Creating,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Suspended,
        Self::Terminated,
        Self::Failed,
        Self::Lost,
    ];

    /// The state machine in one place:
    /// `creating → running → stopping → stopped → terminated`, and `failed`
    /// from any state that still holds resources. `terminated` is final; a
    /// launched sandbox restarts from `stopped` (`stopped → creating`).
    pub fn can_become(self, next: VmStatus) -> bool {
        use VmStatus::*;
        matches!(
            (self, next),
            (Creating, Running)
                | (Creating, Stopping)
                | (Creating, Failed)
                | (Running, Stopping)
                | (Running, Failed)
                | (Stopping, Stopped)
                | (Stopping, Terminated)
                | (Stopping, Failed)
                | (Stopped, Terminated)
                | (Stopped, Stopping)
                | (Stopped, Creating)
                | (Failed, Stopping)
                | (Failed, Terminated)
                | (Running, Suspended)
                | (Suspended, Running)
                | (Suspended, Stopping)
                | (Suspended, Terminated)
                | (Creating, Lost)
                | (Running, Lost)
                | (Stopping, Lost)
                | (Lost, Running)
                | (Lost, Stopping)
                | (Lost, Failed)
        )
    }

    /// Whether the VM may still hold host resources that must be freed
    /// (a lost VM's node may still run it).
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Running | Self::Stopping | Self::Lost
        )
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Creating | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// A set of statuses, for filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmStatusSet(Vec<VmStatus>);

impl VmStatusSet {
    pub fn of(statuses: &[VmStatus]) -> Self {
        let mut v = statuses.to_vec();
        v.dedup();
        Self(v)
    }

    pub fn active() -> Self {
        Self(vec![VmStatus::Creating, VmStatus::Running])
    }

    pub fn holding_resources() -> Self {
        Self(vec![
            VmStatus::Creating,
            VmStatus::Running,
            VmStatus::Stopping,
            VmStatus::Lost,
        ])
    }

    pub fn iter(&self) -> impl Iterator<Item = VmStatus> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Environment variables: names are POSIX-ish, values have no NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Env(BTreeMap<String, String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("env var {name:?}: {reason}")]
pub struct EnvError {
    pub name: String,
    pub reason: &'static str,
}

impl Env {
    pub fn new(vars: BTreeMap<String, String>) -> Result<Self, EnvError> {
        for (name, value) in &vars {
            let valid_name = !name.is_empty()
                && name.len() <= 256
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(EnvError {
                    name: name.clone(),
                    reason: "names must match [A-Za-z_][A-Za-z0-9_]* (at most 256 chars)",
                });
            }
            if value.contains('\0') || value.len() > 128 * 1024 {
                return Err(EnvError {
                    name: name.clone(),
                    reason: "values must have no NUL byte and at most 128 KiB",
                });
            }
        }
        Ok(Self(vars))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Free-form client metadata: a JSON object, kept as given.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// What a client asked for, validated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmSpec {
    pub session_id: Option<SessionId>,
    pub lifetime_seconds: Option<u64>,
    pub resources: Resources,
    pub metadata: Metadata,
    pub env: Env,
    /// A variant name from the server's config, or an image reference.
    pub image_variant: String,
    pub options: VmOptions,
    /// Volumes to mount before the VM runs its first command.
    pub volumes: Vec<MountRequest>,
    /// The provider to run on; the server's default when `None`.
    pub provider: Option<String>,
    /// Whether another node sharing the store may run it. A spec sent to
    /// a node is made there (never sent on).
    #[serde(skip)]
    pub placement: Placement,
}

/// Where a new VM may run, when several nodes share the store. A VM that
/// mounts volumes runs on their node whatever this says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Placement {
    /// On the node that received the create: the caller goes on with the
    /// sandbox here (a browser's CDP, a desktop's display), or placed it
    /// already (the VM API places whole requests).
    #[default]
    ThisNode,
    /// On the live node with the most memory left (see
    /// [`crate::cluster::Membership::place`]).
    AnyNode,
    /// Like `AnyNode`, among the nodes whose labels include all of these
    /// (a node pool's selector).
    Matching(BTreeMap<String, String>),
    /// On this node: what the VM holds is there (a gateway connection's
    /// GPUs).
    Node(crate::ids::NodeId),
}

/// Whether a VM's vault secrets reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum EnvStatus {
    /// The VM asked for no vault.
    #[default]
    None,
    Ready,
    Error,
}

impl EnvStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Ready => "ready",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::None, Self::Ready, Self::Error]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

/// A VM's state-related settings: where it started from, what happens to
/// its filesystem when it ends, and which vaults feed its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmOptions {
    /// The snapshot it was restored from.
    pub snapshot_id: Option<SnapshotId>,
    pub snapshot_on_terminate: bool,
    /// The name of the snapshot taken when it ends.
    pub snapshot_name: Option<String>,
    pub vault_ids: Vec<VaultId>,
    /// At the end of its lifetime the VM is suspended instead of ended.
    pub auto_suspend: bool,
    /// A call that needs the VM live (exec, files, PTYs, shares) resumes
    /// it when suspended.
    pub auto_resume: bool,
    /// Every port of the VM is reachable through the share proxy at
    /// `{port}-{vm id}.{domain}`, without a share and without a key, as
    /// E2B's sandbox URLs are: the unguessable VM id is the capability.
    pub published_ports: bool,
    /// The names (never the values) of the variables its vaults staged in
    /// the sandbox, so that a change of vaults takes exactly those off.
    pub vault_vars: Vec<String>,
    pub env_status: EnvStatus,
    pub env_error: Option<String>,
    /// The VM's own egress policy; `None` follows the server's default.
    pub egress_policy: Option<EgressPolicy>,
    /// Host GPUs (the N of `/dev/nvidiaN`) passed into the sandbox.
    pub gpus: Vec<u32>,
    /// How a microVM's guest runs (`kvm` or `tcg`); unset for sandboxes
    /// that are not VMs.
    pub accelerator: Option<String>,
    /// Set on sandboxes launched from an environment definition.
    pub launch: Option<Launch>,
    /// While suspended: the key its saved memory is sealed under, itself
    /// sealed under the master key. Never shown.
    #[serde(skip)]
    pub memory_key: Option<super::Sealed>,
    /// The certificate authority its vault services' certificates come
    /// from (trusted in its sandbox), its key sealed under the master key.
    /// Never shown.
    #[serde(skip)]
    pub vault_ca: Option<StoredVaultCa>,
}

/// A VM's vault CA as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVaultCa {
    pub cert_pem: String,
    pub key: super::Sealed,
}

/// Where a sandbox launched from an environment definition came from and
/// how its lifecycle runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    pub definition_id: String,
    /// The definition's revision when the sandbox was launched.
    pub revision: String,
    /// A stop keeps the sandbox's filesystem for the next start.
    pub preserve: bool,
    /// The sandbox stops when its main command ends.
    pub stop_on_terminal: bool,
    /// The sandbox stops after this long without exec, PTY or share
    /// traffic.
    pub idle_stop_seconds: Option<u64>,
    /// The main command the sandbox was launched with.
    #[serde(default)]
    pub command: Vec<String>,
    /// Its execution record, while and after it runs.
    #[serde(default)]
    pub main_execution_id: Option<String>,
    /// Whether it runs as a job of the sandbox (named by its execution
    /// id): a restarted server attaches to it again.
    #[serde(default)]
    pub main_is_job: bool,
    /// The labels of the definition, plus the launch's own.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the sandbox last stopped.
    #[serde(default)]
    pub stopped_at: Option<Timestamp>,
    /// The working directory of commands (the `local` provider's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Whether the sandbox may reach any network, for providers with
    /// networks of their own (a Docker engine's `none` network when not).
    #[serde(default)]
    pub network_allowed: bool,
}

/// How the server finds a running sandbox again after a restart: its PID 1
/// on the host and that process's start time, which tells a recycled pid
/// from the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeHandle {
    pub pid: i32,
    pub start_ticks: u64,
}

#[derive(Debug, Clone)]
pub struct Vm {
    pub id: VmId,
    pub account_id: AccountId,
    pub session_id: SessionId,
    pub status: VmStatus,
    pub status_reason: Option<String>,
    pub provider: String,
    pub image_variant: String,
    /// The digest of the image the VM runs, when it runs an image.
    pub image_digest: Option<String>,
    pub resources: Resources,
    pub metadata: Metadata,
    pub env: Env,
    pub lifetime_seconds: Option<u64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub terminated_at: Option<Timestamp>,
    pub runtime: Option<RuntimeHandle>,
    pub options: VmOptions,
    /// Its place on the host network while it holds one.
    pub network: Option<VmNetwork>,
    /// The node it runs on, in a store several nodes share; `None` for a
    /// VM made before nodes were recorded (its node's, whichever opens
    /// the store).
    pub node: Option<NodeId>,
}

/// A listing filter; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct VmFilter {
    pub session_id: Option<SessionId>,
    pub statuses: VmStatusSet,
    /// Return VMs created before this one (keyset pagination, newest first).
    pub after: Option<VmId>,
    pub limit: u32,
}

/// A change to a VM's settings; `None` fields stay as they are.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct VmPatch {
    pub metadata: Option<Metadata>,
    /// Resets the lifetime: the VM ends this many seconds from now.
    pub lifetime_seconds: Option<u64>,
    pub memory_mb: Option<i64>,
    pub vcpu_count: Option<i64>,
    pub snapshot_on_terminate: Option<bool>,
    pub snapshot_name: Option<String>,
    /// Replaces the egress policy; applies to a running VM at once.
    pub egress_policy: Option<EgressPolicy>,
    /// Replaces the vaults whose secrets the VM's commands see; a running
    /// VM gets the new set at once (the old set's variables removed).
    pub vault_ids: Option<Vec<crate::ids::VaultId>>,
    pub auto_suspend: Option<bool>,
    pub auto_resume: Option<bool>,
}

impl VmPatch {
    pub fn is_empty(&self) -> bool {
        self.metadata.is_none()
            && self.lifetime_seconds.is_none()
            && self.memory_mb.is_none()
            && self.vcpu_count.is_none()
            && self.snapshot_on_terminate.is_none()
            && self.snapshot_name.is_none()
            && self.egress_policy.is_none()
            && self.vault_ids.is_none()
            && self.auto_suspend.is_none()
            && self.auto_resume.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminated_is_final() {
        for s in VmStatus::ALL {
            assert!(!VmStatus::Terminated.can_become(s));
        }
        assert!(VmStatus::Creating.can_become(VmStatus::Running));
        assert!(!VmStatus::Running.can_become(VmStatus::Creating));
    }

    #[test]
    fn status_round_trips() {
        for s in VmStatus::ALL {
            assert_eq!(VmStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(VmStatus::parse("bogus"), None);
    }

    #[test]
    fn env_names_are_checked() {
        let mut m = BTreeMap::new();
        m.insert("GOOD_1".to_owned(), "x".to_owned());
        assert!(Env::new(m.clone()).is_ok());
        m.insert("1BAD".to_owned(), "x".to_owned());
        assert_eq!(Env::new(m).map_err(|e| e.name), Err("1BAD".to_owned()));
        let mut m = BTreeMap::new();
        m.insert("A".to_owned(), "a\0b".to_owned());
        assert!(Env::new(m).is_err());
    }
}
