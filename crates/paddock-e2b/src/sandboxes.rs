//! E2B's sandboxes over the core's VMs: create from a template, look up,
//! list with metadata and state filters, kill, set the timeout, pause,
//! and connect (which resumes a paused sandbox).

use std::collections::BTreeMap;

use paddock_core::clock::Timestamp;
use paddock_core::error::CoreError;
use paddock_core::ids::{AccountId, SnapshotId, VmId};
use paddock_core::model::{
    Env, Metadata, Vm, VmFilter, VmOptions, VmPatch, VmSpec, VmStatus, VmStatusSet,
};

use crate::{E2b, EnvdTarget};

/// The envd version sandboxes report. The SDK gates features on it:
/// 0.4.0 lets it leave the user to the server's default, 0.5.2 closes
/// stdin, 0.5.7 uploads as `application/octet-stream`; what needs more
/// (file metadata, entries in watch events) it does not ask of 0.5.7.
pub const ENVD_VERSION: &str = "0.5.7";

/// Where paddock keeps what it knows of a sandbox as E2B sees it, in
/// its VM's metadata: `{"template": …}`. Keys under `paddock.` are the
/// server's, never a client's.
const MARK: &str = "paddock.e2b";
const RESERVED_PREFIX: &str = "paddock.";
/// Templates that mean the server's default image: E2B's base template
/// and the code interpreter SDK's default.
const DEFAULT_TEMPLATES: [&str; 2] = ["base", "code-interpreter-v1"];
/// E2B's default sandbox timeout.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
const ACCESS_TOKEN_PURPOSE: &str = "e2b-envd";
const TRAFFIC_TOKEN_PURPOSE: &str = "e2b-traffic";

/// A sandbox to create.
#[derive(Debug, Clone, Default)]
pub struct NewSandbox {
    pub template: String,
    pub timeout_seconds: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub env_vars: BTreeMap<String, String>,
    /// Pause instead of ending when the timeout passes.
    pub auto_pause: bool,
    /// A call that needs the sandbox resumes it when paused.
    pub auto_resume: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Running,
    Paused,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Running, Self::Paused]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A sandbox as E2B's control plane describes it.
#[derive(Debug, Clone)]
pub struct SandboxInfo {
    pub sandbox_id: String,
    pub template_id: String,
    pub started_at: Timestamp,
    pub end_at: Timestamp,
    pub cpu_count: u32,
    pub memory_mb: u32,
    pub disk_size_mb: u32,
    pub state: SandboxState,
    pub metadata: BTreeMap<String, String>,
    pub envd_version: &'static str,
    /// The token the SDK sends envd as `X-Access-Token`.
    pub envd_access_token: String,
    /// The token the SDK sends to the sandbox's other ports (the code
    /// interpreter's) as `E2B-Traffic-Access-Token`.
    pub traffic_access_token: String,
    pub domain: Option<String>,
}

/// A listing's filters and page.
#[derive(Debug, Clone, Default)]
pub struct SandboxQuery {
    /// Every pair must be in the sandbox's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Empty: running and paused.
    pub states: Vec<SandboxState>,
    /// The last sandbox of the previous page.
    pub next_token: Option<String>,
    pub limit: u32,
}

/// The most sandboxes one page lists.
pub const MAX_PAGE: u32 = 100;

impl E2b {
    fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), CoreError> {
        if let Some(k) = metadata.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
            return Err(CoreError::invalid(
                "metadata",
                format!("{k:?}: keys starting with {RESERVED_PREFIX:?} are the server's"),
            ));
        }
        Ok(())
    }

    /// Creates a sandbox from `new.template` and waits until it runs.
    pub async fn create_sandbox(
        &self,
        account: &AccountId,
        new: NewSandbox,
    ) -> Result<SandboxInfo, CoreError> {
        Self::check_metadata(&new.metadata)?;
        let env =
            Env::new(new.env_vars).map_err(|e| CoreError::invalid("envVars", e.to_string()))?;
        let vms = self.core.vms();
        let template = new.template.trim().to_owned();
        if template.is_empty() {
            return Err(CoreError::invalid("templateID", "must not be empty"));
        }
        let mut from_template = None;
        let (image_variant, snapshot_id) = if DEFAULT_TEMPLATES.contains(&template.as_str()) {
            (vms.config().default_variant.clone(), None)
        } else if template.starts_with(SnapshotId::PREFIX) {
            let id = template
                .parse::<SnapshotId>()
                .map_err(|e| CoreError::invalid("templateID", e.to_string()))?;
            (String::new(), Some(id))
        } else if let Some(t) = self.ready_template(account, &template).await? {
            let image = t.image.clone().unwrap_or_default();
            from_template = Some(t);
            (image, None)
        } else {
            (template.clone(), None)
        };
        let resources = match &from_template {
            Some(t) => vms.resources(
                Some(i64::from(t.memory_mb)),
                Some(i64::from(t.cpu_count)),
                None,
            )?,
            None => vms.resources(None, None, None)?,
        };
        let mut metadata: Metadata = new
            .metadata
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        metadata.insert(MARK.to_owned(), serde_json::json!({ "template": template }));
        let spec = VmSpec {
            session_id: None,
            lifetime_seconds: Some(new.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)),
            resources,
            metadata,
            env,
            image_variant,
            options: VmOptions {
                snapshot_id,
                auto_suspend: new.auto_pause,
                auto_resume: new.auto_resume,
                published_ports: true,
                ..VmOptions::default()
            },
            volumes: Vec::new(),
            provider: self.config.provider.clone(),
            placement: paddock_core::model::Placement::AnyNode,
        };
        let vm = vms.create_vm(account, spec, true).await?;
        if vm.status != VmStatus::Running {
            let why = vm
                .status_reason
                .clone()
                .unwrap_or_else(|| format!("the sandbox is {}", vm.status.as_str()));
            // A sandbox that never ran is not left behind.
            let _ = vms.delete_vm(account, &vm.id).await;
            return Err(CoreError::Unavailable(why));
        }
        if let Some(t) = &from_template {
            if let Err(e) = self.start_template_commands(account, &vm.id, t).await {
                let _ = vms.delete_vm(account, &vm.id).await;
                return Err(e);
            }
        }
        Ok(self.info(&vm))
    }

    /// The account's sandbox `id`; another account's, or a VM not made
    /// through this surface, is not found.
    async fn sandbox_vm(&self, account: &AccountId, id: &str) -> Result<Vm, CoreError> {
        let not_found = || CoreError::not_found("sandbox", id);
        let vm_id = id.parse::<VmId>().map_err(|_| not_found())?;
        let vm = self
            .core
            .vms()
            .find_vm_of(account, &vm_id)
            .await?
            .ok_or_else(not_found)?;
        if !vm.metadata.contains_key(MARK) || state_of(vm.status).is_none() {
            return Err(not_found());
        }
        Ok(vm)
    }

    pub async fn get_sandbox(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<SandboxInfo, CoreError> {
        Ok(self.info(&self.sandbox_vm(account, id).await?))
    }

    /// A page of the account's sandboxes, newest first, and the token of
    /// the next page when there may be one.
    pub async fn list_sandboxes(
        &self,
        account: &AccountId,
        query: &SandboxQuery,
    ) -> Result<(Vec<SandboxInfo>, Option<String>), CoreError> {
        Self::check_metadata(&query.metadata)?;
        let limit = query.limit.clamp(1, MAX_PAGE) as usize;
        let mut after = match &query.next_token {
            Some(t) => Some(
                t.parse::<VmId>()
                    .map_err(|_| CoreError::invalid("nextToken", "not a token this server gave"))?,
            ),
            None => None,
        };
        let states = if query.states.is_empty() {
            &[SandboxState::Running, SandboxState::Paused][..]
        } else {
            &query.states[..]
        };
        let mut wanted = Vec::new();
        for state in states {
            match state {
                SandboxState::Running => wanted.extend([VmStatus::Creating, VmStatus::Running]),
                SandboxState::Paused => wanted.push(VmStatus::Suspended),
            }
        }
        let statuses = VmStatusSet::of(&wanted);
        let mut page = Vec::new();
        // VMs not made through this surface are skipped, so a page is
        // filled from as many store pages as it takes.
        loop {
            let filter = VmFilter {
                statuses: statuses.clone(),
                after: after.clone(),
                limit: (limit as u32 + 1).max(50),
                ..VmFilter::default()
            };
            let batch = self.core.vms().list_vms(account, &filter).await?;
            let exhausted = (batch.len() as u32) < filter.limit;
            for vm in batch {
                after = Some(vm.id.clone());
                if !vm.metadata.contains_key(MARK) || !matches_metadata(&vm, &query.metadata) {
                    continue;
                }
                if page.len() == limit {
                    let last = page.last().map(|s: &SandboxInfo| s.sandbox_id.clone());
                    return Ok((page, last));
                }
                page.push(self.info(&vm));
            }
            if exhausted {
                return Ok((page, None));
            }
        }
    }

    pub async fn kill_sandbox(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        let vm = self.sandbox_vm(account, id).await?;
        self.core.vms().delete_vm(account, &vm.id).await?;
        self.forget_vm(&vm.id);
        Ok(())
    }

    /// The sandbox ends `timeout_seconds` from now.
    pub async fn set_timeout(
        &self,
        account: &AccountId,
        id: &str,
        timeout_seconds: u64,
    ) -> Result<(), CoreError> {
        let vm = self.sandbox_vm(account, id).await?;
        self.set_lifetime(account, &vm.id, timeout_seconds).await?;
        Ok(())
    }

    async fn set_lifetime(
        &self,
        account: &AccountId,
        vm: &VmId,
        seconds: u64,
    ) -> Result<Vm, CoreError> {
        let patch = VmPatch {
            lifetime_seconds: Some(seconds),
            ..VmPatch::default()
        };
        self.core.vms().patch_vm(account, vm, patch).await
    }

    /// Pauses a running sandbox (its memory kept where the provider can);
    /// a paused one is a conflict, as E2B answers.
    pub async fn pause_sandbox(&self, account: &AccountId, id: &str) -> Result<(), CoreError> {
        let vm = self.sandbox_vm(account, id).await?;
        if vm.status == VmStatus::Suspended {
            return Err(CoreError::Conflict(format!(
                "sandbox {id} is already paused"
            )));
        }
        self.core.vms().suspend_vm(account, &vm.id).await?;
        // Only a pause that happened ends what ran through envd: a refused
        // one leaves the sandbox and its commands as they were.
        self.forget_vm(&vm.id);
        Ok(())
    }

    /// Snapshots a sandbox (running or paused); a new sandbox starts
    /// from it with the snapshot's id as its template.
    pub async fn snapshot_sandbox(
        &self,
        account: &AccountId,
        id: &str,
        name: Option<String>,
    ) -> Result<paddock_core::model::Snapshot, CoreError> {
        let vm = self.sandbox_vm(account, id).await?;
        self.core
            .vms()
            .snapshot_vm(account, &vm.id, name.filter(|n| !n.is_empty()))
            .await
    }

    /// The account's snapshots of its E2B sandboxes (of one sandbox, or
    /// by name, when asked), newest first.
    pub async fn list_snapshots(
        &self,
        account: &AccountId,
        sandbox_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<paddock_core::model::Snapshot>, CoreError> {
        let mut all: Vec<_> = self
            .core
            .snapshots()
            .list(account, Some(paddock_core::model::SnapshotKind::User))
            .await?
            .into_iter()
            .filter(|s| {
                sandbox_id.is_none_or(|id| s.vm_id.as_ref().is_some_and(|v| v.as_str() == id))
            })
            .filter(|s| name.is_none_or(|n| s.name == n))
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(all)
    }

    /// Connects to a sandbox: resumes it if paused, and with
    /// `timeout_seconds` sets when it ends.
    pub async fn connect_sandbox(
        &self,
        account: &AccountId,
        id: &str,
        timeout_seconds: Option<u64>,
    ) -> Result<SandboxInfo, CoreError> {
        let mut vm = self.sandbox_vm(account, id).await?;
        if vm.status == VmStatus::Suspended {
            vm = self.core.vms().resume_vm(account, &vm.id).await?;
        }
        if let Some(t) = timeout_seconds {
            // Connecting never shortens a sandbox's life.
            let left = vm
                .expires_at
                .map(|e| (e.unix_millis() - Timestamp::now().unix_millis()).max(0) as u64 / 1000);
            if left.is_none_or(|l| l < t) {
                vm = self.set_lifetime(account, &vm.id, t).await?;
            }
        }
        Ok(self.info(&vm))
    }

    fn info(&self, vm: &Vm) -> SandboxInfo {
        let template = vm
            .metadata
            .get(MARK)
            .and_then(|m| m.get("template"))
            .and_then(|t| t.as_str())
            .unwrap_or("base")
            .to_owned();
        let metadata = vm
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
            .map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k.clone(), v)
            })
            .collect();
        let started_at = vm.started_at.unwrap_or(vm.created_at);
        SandboxInfo {
            sandbox_id: vm.id.to_string(),
            template_id: template,
            started_at,
            end_at: vm
                .expires_at
                .unwrap_or_else(|| started_at.plus_seconds(86_400 * 365)),
            cpu_count: vm.resources.vcpu_count(),
            memory_mb: vm.resources.memory_mb(),
            disk_size_mb: vm.resources.disk_mb(),
            state: state_of(vm.status).unwrap_or(SandboxState::Running),
            metadata,
            envd_version: ENVD_VERSION,
            envd_access_token: self.access_token(&vm.account_id, &vm.id),
            traffic_access_token: self.traffic_token(&vm.account_id, &vm.id),
            domain: self.config.domain.clone(),
        }
    }

    fn access_token(&self, account: &AccountId, vm: &VmId) -> String {
        format!(
            "ea_{}",
            self.core
                .vms()
                .vm_credential(ACCESS_TOKEN_PURPOSE, account, vm)
        )
    }

    fn traffic_token(&self, account: &AccountId, vm: &VmId) -> String {
        format!(
            "et_{}",
            self.core
                .vms()
                .vm_credential(TRAFFIC_TOKEN_PURPOSE, account, vm)
        )
    }

    /// The owner of sandbox `id`, if it exists.
    async fn owner(&self, sandbox_id: &str) -> Result<(AccountId, VmId), CoreError> {
        let not_found = || CoreError::not_found("sandbox", sandbox_id);
        let vm: VmId = sandbox_id.parse().map_err(|_| not_found())?;
        let account = self.core.vms().owner_of(&vm).await?.ok_or_else(not_found)?;
        Ok((account, vm))
    }

    /// The sandbox an envd request names, when `token` is its access
    /// token.
    pub async fn envd_target(
        &self,
        sandbox_id: &str,
        token: Option<&str>,
    ) -> Result<EnvdTarget, CoreError> {
        self.port_target(sandbox_id, token, None).await
    }

    /// The sandbox a request to one of its ports names, when it carries
    /// the access token, or (for ports other than envd's: the code
    /// interpreter's) the traffic token.
    pub async fn port_target(
        &self,
        sandbox_id: &str,
        access_token: Option<&str>,
        traffic_token: Option<&str>,
    ) -> Result<EnvdTarget, CoreError> {
        let (account, vm) = self.owner(sandbox_id).await?;
        let matches = |given: Option<&str>, expected: String| {
            given.is_some_and(|t| {
                paddock_core::secrets::constant_time_eq(t.as_bytes(), expected.as_bytes())
            })
        };
        if matches(access_token, self.access_token(&account, &vm))
            || matches(traffic_token, self.traffic_token(&account, &vm))
        {
            Ok(EnvdTarget { account, vm })
        } else {
            Err(CoreError::Unauthenticated)
        }
    }
}

fn state_of(status: VmStatus) -> Option<SandboxState> {
    match status {
        VmStatus::Creating | VmStatus::Running => Some(SandboxState::Running),
        VmStatus::Suspended => Some(SandboxState::Paused),
        _ => None,
    }
}

fn matches_metadata(vm: &Vm, wanted: &BTreeMap<String, String>) -> bool {
    wanted
        .iter()
        .all(|(k, v)| vm.metadata.get(k).and_then(|x| x.as_str()) == Some(v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [SandboxState::Running, SandboxState::Paused] {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SandboxState::parse("dead"), None);
    }

    #[test]
    fn reserved_metadata_is_refused() {
        let mut m = BTreeMap::new();
        m.insert("paddock.e2b".to_owned(), "x".to_owned());
        assert!(E2b::check_metadata(&m).is_err());
        m.clear();
        m.insert("owner".to_owned(), "me".to_owned());
        assert!(E2b::check_metadata(&m).is_ok());
    }
}
