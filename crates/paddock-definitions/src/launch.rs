//! Sandboxes launched from environment definitions. Each is a VM on the
//! definition's provider (`container`, `local` or `docker`), carrying in
//! `VmOptions::launch` the definition id and revision it was launched
//! from and its lifecycle settings; exec, files and PTYs are the VM
//! machinery's. An optional main command runs once the sandbox is up; with
//! `stop_on_terminal` its end stops the sandbox.

use std::collections::BTreeMap;

use paddock_core::error::CoreError;
use paddock_core::ids::{AccountId, VolumeId};
use paddock_core::launched::SandboxView;
use paddock_core::model::{
    DomainPattern, EgressDefault, EgressPolicy, Env, Ipv4Cidr, Launch, MountMode, MountRequest,
    Resources, VmOptions, VmSpec, VmStatus,
};

use crate::quantity::{parse_bytes, parse_cpu, parse_duration};
use crate::spec::{Definition, NetworkMode, ProviderKind};
use crate::{DefinitionError, Definitions, Violation};

/// What a launch may add to its definition.
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    /// The main command, run once the sandbox is up (argv).
    pub command: Vec<String>,
    /// Labels over the definition's.
    pub labels: BTreeMap<String, String>,
}

const MIB: u64 = 1024 * 1024;

/// The provider a definition's sandboxes run on, by its registry name.
fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Local => "local",
        ProviderKind::Docker => "docker",
        ProviderKind::Daytona => "daytona",
        ProviderKind::Container => "container",
    }
}

/// The egress policy of a `cidr_allow_list`: nothing but the listed IPv4
/// CIDRs and domains (validated when the definition was written).
fn allow_list_policy(allow: &[String]) -> EgressPolicy {
    let mut policy = EgressPolicy {
        default: EgressDefault::Deny,
        ..EgressPolicy::default()
    };
    for entry in allow {
        if let Ok(cidr) = Ipv4Cidr::parse(entry) {
            policy.allowed_cidrs.push(cidr);
        } else if let Ok(domain) = DomainPattern::parse(entry) {
            policy.allowed_domains.push(domain);
        }
    }
    policy
}

/// The tag a definition's inline Dockerfile is built under: one image per
/// definition revision.
fn definition_tag(def: &Definition) -> String {
    let short = def.revision.get(..16).unwrap_or(&def.revision);
    format!("paddock.local/definitions/{}:{short}", def.id)
}

fn invalid(field: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError::Invalid(vec![Violation::new(field, message)])
}

impl Definitions {
    /// Launches a sandbox from the account's definition `definition_id`
    /// and waits until it runs (or failed to start).
    pub async fn launch_sandbox(
        &self,
        account: &AccountId,
        definition_id: &str,
        request: LaunchRequest,
    ) -> Result<SandboxView, DefinitionError> {
        let def = self.get_definition(account, definition_id).await?;
        let name = provider_name(def.spec.provider);
        if self.core.vms().provider_named(name).is_none() {
            return Err(DefinitionError::ProviderUnavailable(
                match def.spec.provider {
                    ProviderKind::Daytona => {
                        "launching a daytona sandbox needs a Daytona endpoint, \
                                          and this server has none configured"
                            .into()
                    }
                    _ => format!("the {name} provider is not enabled on this server"),
                },
            ));
        }
        if let Some(bad) = request.command.first().filter(|c| c.is_empty()) {
            return Err(invalid(
                "command",
                format!("{bad:?}: the program must not be empty"),
            ));
        }
        let spec = self.launch_spec(account, &def, name, &request).await?;
        let vm = self.core.vms().create_vm(account, spec, true).await?;
        if vm.status != VmStatus::Running || request.command.is_empty() {
            return Ok(self.core.vms().view_of(vm, None));
        }
        let main = self
            .core
            .vms()
            .start_main_command(account, &vm, request.command)
            .await?;
        let vm = self.core.vms().get_vm(account, &vm.id).await?;
        Ok(self.core.vms().view_of(vm, Some(main)))
    }

    async fn launch_spec(
        &self,
        account: &AccountId,
        def: &Definition,
        provider: &'static str,
        request: &LaunchRequest,
    ) -> Result<VmSpec, DefinitionError> {
        let s = &def.spec;
        let image_variant = match (&s.image.docker, &s.image.dockerfile, s.provider) {
            (_, _, ProviderKind::Local) => String::new(),
            (Some(reference), _, _) => reference.clone(),
            (None, Some(d), ProviderKind::Container) => {
                self.definition_image(account, def, &d.value).await?
            }
            (None, Some(d), _) => {
                let tag = definition_tag(def);
                let network = crate::network_mode(s) != NetworkMode::Block;
                let builder = self.core.vms().provider_named(provider).ok_or_else(|| {
                    DefinitionError::ProviderUnavailable(format!("no {provider} provider"))
                })?;
                builder
                    .build_image(&tag, &d.value, network)
                    .await
                    .map_err(|e| match e {
                        paddock_core::RuntimeError::Invalid(m) => {
                            invalid("image.dockerfile.value", m)
                        }
                        paddock_core::RuntimeError::Unsupported(m) => {
                            DefinitionError::ProviderUnavailable(m)
                        }
                        other => CoreError::from(other).into(),
                    })?;
                tag
            }
            (None, None, _) => self.core.config().default_variant.clone(),
        };
        let cores = s.resources.cpu.as_ref().and_then(|c| parse_cpu(c).ok());
        // A fraction of a CPU is a quota on the CPUs it rounds up to.
        let vcpu = cores.map(|c| c.ceil() as i64);
        let cpu_millis = cores.map(|c| (c * 1000.0).round() as u32);
        // A quantity (validated with the definition) in whole MiB.
        let mib = |q: Option<&str>| {
            q.and_then(|q| parse_bytes(q).ok())
                .map(|b| b.div_ceil(MIB) as i64)
        };
        let memory_mb = mib(s.resources.memory.as_deref());
        let disk_mb = mib(s.resources.disk.as_deref());
        let resources = Resources::with_disk(memory_mb, vcpu, disk_mb, &self.core.config().limits)
            .and_then(|r| r.with_cpu_millis(cpu_millis))
            .map_err(|e| invalid("resources", e.to_string()))?;
        let env =
            Env::new(s.env.clone()).map_err(|e| invalid(&format!("env.{}", e.name), e.reason))?;
        let mut labels = s.labels.clone();
        labels.extend(request.labels.clone());
        let metadata = labels
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut volumes = Vec::new();
        for (i, v) in s.volumes.iter().enumerate() {
            let volume_id =
                v.id.parse::<VolumeId>()
                    .map_err(|_| invalid(&format!("volumes[{i}].id"), "no such volume"))?;
            volumes.push(MountRequest {
                volume_id,
                mount_path: v.mount_path.clone(),
                mode: MountMode::ReadWrite,
                checkpoint_id: None,
                subpath: v.subpath.clone(),
            });
        }
        // Host processes and engine containers have their own networks;
        // a blocked network needs no rules where the server gives
        // sandboxes no network at all.
        let uses_network = self
            .core
            .vms()
            .provider_named(provider)
            .is_some_and(|p| p.uses_paddock_network());
        let egress = match crate::network_mode(s) {
            _ if !uses_network => None,
            // A blocked sandbox joins no network (see `attach_network`).
            NetworkMode::Block => None,
            // Without a sandbox network every sandbox is cut off anyway.
            NetworkMode::AllowAll if !self.core.vms().network_enabled() => None,
            NetworkMode::AllowAll => Some(EgressPolicy::allow_all()),
            NetworkMode::CidrAllowList => Some(allow_list_policy(&s.network.allow)),
        };
        let idle_stop_seconds = s
            .lifecycle
            .auto_stop
            .as_deref()
            .and_then(|d| parse_duration(d).ok())
            .map(|d| d.as_secs().max(1));
        Ok(VmSpec {
            session_id: None,
            lifetime_seconds: None,
            resources,
            metadata,
            env,
            image_variant,
            options: VmOptions {
                egress_policy: egress,
                launch: Some(Launch {
                    definition_id: def.id.clone(),
                    revision: def.revision.clone(),
                    preserve: s.lifecycle.preserve,
                    stop_on_terminal: s.lifecycle.stop_on_terminal,
                    idle_stop_seconds,
                    command: request.command.clone(),
                    main_execution_id: None,
                    main_is_job: false,
                    labels,
                    stopped_at: None,
                    cwd: s.cwd.clone(),
                    network_allowed: crate::network_mode(s) != NetworkMode::Block,
                }),
                ..VmOptions::default()
            },
            volumes,
            provider: Some(provider.to_owned()),
            placement: paddock_core::model::Placement::AnyNode,
        })
    }

    /// The image of a definition's inline Dockerfile, built once per
    /// revision (and per account) and kept under a tag naming both.
    async fn definition_image(
        &self,
        account: &AccountId,
        def: &Definition,
        dockerfile: &str,
    ) -> Result<String, DefinitionError> {
        let tag = definition_tag(def);
        if self.core.images().find(account, &tag).await?.is_some() {
            return Ok(tag);
        }
        let (events, mut drain) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move { while drain.recv().await.is_some() {} });
        let request = paddock_core::build::BuildRequest {
            dockerfile: dockerfile.to_owned(),
            tag: tag.clone(),
            build_args: Vec::new(),
            context: Default::default(),
        };
        let slot = self.core.vms().start_image_build(account).await?;
        self.core
            .vms()
            .build_image(account, slot, request, events)
            .await
            .map_err(|e| match e {
                CoreError::InvalidArgument { message, .. } => {
                    invalid("image.dockerfile.value", message)
                }
                other => other.into(),
            })?;
        Ok(tag)
    }
}
