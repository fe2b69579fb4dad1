//! The `docker` provider: each sandbox is a container of a Docker Engine
//! reached through its API ([`bollard`]). The engine resolves the image
//! reference itself; the container runs a sleeping shell as its main
//! process and every command is a `docker exec`. Files go in and out as
//! tar archives through the engine's archive endpoints; volumes are moved
//! into the container's mount namespace by paddock's mount helper.
//!
//! Containers are named `paddock-<instance>-<vm>` and labelled with the
//! instance, so two servers on one engine never touch each other's, and a
//! restarted server finds and cleans its own.
//!
//! A sandbox allowed the network joins the server's own engine network,
//! `paddock-<instance>`, not the engine's default one: a bridge of a
//! known name (`pdk<instance>`, [`DockerProvider::bridge`]) with no
//! traffic between its containers, which the server guards as it guards
//! its own bridge (`paddock_net::guard`: no host port, no blocked range).

mod archive;
mod build;
mod exec;
mod jobs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use paddock_core::exec::{
    ByteStream, ExecRequest, ExecStream, FileContent, PtyConnection, PtyInfo, PtySpec, SandboxPath,
};
use paddock_core::ids::VmId;
use paddock_core::model::{ChangedTree, Resources, RootfsSpec, RuntimeHandle, Vm};
use paddock_core::provider::{Provider, SandboxChannel};
use paddock_core::RuntimeError;

use crate::container::procfs;

/// The label every container of this server carries.
const INSTANCE_LABEL: &str = "dev.paddock.instance";
const VM_LABEL: &str = "dev.paddock.vm";
/// The container's own process: a shell that sleeps until stopped, so
/// commands can be exec'd into it.
const KEEPALIVE: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";
/// How long a stop waits for the keepalive before killing it.
const STOP_GRACE_SECONDS: i32 = 2;

/// The engine network of `instance`'s sandboxes, and its bridge.
pub fn network_of(instance: &str) -> (String, String) {
    (
        format!("paddock-{instance}"),
        // Interface names hold 15 bytes; the instance id is 12 hex digits.
        format!("pdk{}", &instance[..instance.len().min(12)]),
    )
}

pub struct DockerProvider {
    docker: Docker,
    instance: String,
    /// The `paddock-agent` binary, whose `attach` moves volume mounts
    /// into a running container's mount namespace.
    agent_path: PathBuf,
    /// Variables staged per sandbox (vault secrets): Docker has no place
    /// to keep them but each exec's environment, so they stay here, in
    /// memory only.
    staged: Mutex<HashMap<VmId, Vec<(String, String)>>>,
}

fn engine_err(what: &str, e: DockerError) -> RuntimeError {
    RuntimeError::Setup(format!("docker engine: {what}: {e}"))
}

/// Whether the engine answered 404 (no such container, exec or path).
fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerProvider {
    /// Connects to the engine at `host` (`unix:///run/docker.sock`) and
    /// checks it answers. `instance` tells this server's containers from
    /// others'.
    pub async fn connect(
        host: &str,
        instance: &str,
        agent_path: PathBuf,
    ) -> Result<Self, RuntimeError> {
        let mut this = Self::connect_only(host, instance).await?;
        this.agent_path = agent_path;
        this.ensure_network().await?;
        Ok(this)
    }

    /// A client of the engine at `host`, checked to answer, that has made
    /// nothing yet.
    async fn connect_only(host: &str, instance: &str) -> Result<Self, RuntimeError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| RuntimeError::Setup(format!("docker engine at {host}: {e}")))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Setup(format!("docker engine at {host}: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| RuntimeError::Setup(format!("docker engine at {host}: {e}")))?;
        Ok(Self {
            docker,
            agent_path: PathBuf::new(),
            instance: instance.to_owned(),
            staged: Mutex::new(HashMap::new()),
        })
    }

    /// The host interface of the engine network this server's sandboxes
    /// use, which the server guards.
    pub fn bridge(&self) -> String {
        network_of(&self.instance).1
    }

    /// Makes the server's engine network unless the engine has it.
    async fn ensure_network(&self) -> Result<(), RuntimeError> {
        let (name, bridge) = network_of(&self.instance);
        if self
            .docker
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok()
        {
            return Ok(());
        }
        let options = HashMap::from([
            ("com.docker.network.bridge.name".to_owned(), bridge),
            (
                "com.docker.network.bridge.enable_icc".to_owned(),
                "false".to_owned(),
            ),
        ]);
        let request = bollard::models::NetworkCreateRequest {
            name,
            driver: Some("bridge".into()),
            options: Some(options),
            labels: Some(HashMap::from([(
                INSTANCE_LABEL.to_owned(),
                self.instance.clone(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => Ok(()),
            // Made meanwhile by another start of this server.
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine_err("create the sandbox network", e)),
        }
    }

    /// Removes every container and the network of `instance` from the
    /// engine at `host`: `paddock purge`.
    pub async fn purge(host: &str, instance: &str) -> Result<usize, RuntimeError> {
        let this = Self::connect_only(host, instance).await?;
        let removed = this.cleanup_orphans(&[]).await?;
        let (name, _) = network_of(instance);
        match this.docker.remove_network(&name).await {
            Ok(()) => Ok(removed),
            Err(e) if is_not_found(&e) => Ok(removed),
            Err(e) => Err(engine_err("remove the sandbox network", e)),
        }
    }

    fn name_of(&self, id: &VmId) -> String {
        format!("paddock-{}-{}", self.instance, id.as_str())
    }

    fn staged_env(&self, id: &VmId) -> Vec<(String, String)> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    async fn create(&self, vm: &Vm, image: &str) -> Result<(), RuntimeError> {
        let launch = vm.options.launch.clone().unwrap_or_default();
        let mut labels: HashMap<String, String> = launch.labels.clone().into_iter().collect();
        labels.insert(INSTANCE_LABEL.into(), self.instance.clone());
        labels.insert(VM_LABEL.into(), vm.id.to_string());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into(), KEEPALIVE.into()]),
            cmd: Some(Vec::new()),
            env: Some(vm.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            hostname: Some("sandbox".into()),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(vm.resources.cpu_millis()) * 1_000_000),
                memory: i64::try_from(vm.resources.memory_bytes()).ok(),
                pids_limit: Some(i64::from(vm.resources.pids_max())),
                // `allow_all` is the server's guarded engine network;
                // anything else gets none at all.
                network_mode: Some(if launch.network_allowed {
                    network_of(&self.instance).0
                } else {
                    "none".into()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(self.name_of(&vm.id)),
            ..Default::default()
        };
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(RuntimeError::Setup(format!(
                "the docker engine has no image {image:?} (it is not pulled or imported there)"
            ))),
            Err(e) => Err(engine_err("create the container", e)),
        }
    }

    /// The running container's main process, as a handle.
    async fn handle(&self, id: &VmId) -> Result<RuntimeHandle, RuntimeError> {
        let info = self
            .docker
            .inspect_container(&self.name_of(id), None::<InspectContainerOptions>)
            .await
            .map_err(|e| engine_err("inspect the container", e))?;
        let pid = info
            .state
            .and_then(|s| s.pid)
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| RuntimeError::Setup("the container is not running".into()))?;
        let start_ticks = procfs::start_ticks(pid)
            .ok_or_else(|| RuntimeError::Setup("the container exited right after start".into()))?;
        Ok(RuntimeHandle { pid, start_ticks })
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_err("remove the container", e)),
        }
    }

    fn unsupported(what: &str) -> RuntimeError {
        RuntimeError::Unsupported(format!("docker sandboxes do not support {what}"))
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn resolves_images(&self) -> bool {
        true
    }

    fn uses_paddock_network(&self) -> bool {
        false
    }

    /// The engine's own checkpoint (`docker checkpoint`, experimental)
    /// runs CRIU, which writes the container's memory to the engine's
    /// disk in clear; paddock keeps a suspended sandbox's memory sealed,
    /// so it does not use it.
    fn can_suspend(&self, _image_variant: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unsupported(
            "a docker sandbox cannot be suspended with its memory: the engine's checkpoint \
             (experimental, over CRIU) would write its memory to disk in clear; stopping it \
             keeps its files"
                .into(),
        ))
    }

    async fn build_image(
        &self,
        tag: &str,
        dockerfile: &str,
        network: bool,
    ) -> Result<(), RuntimeError> {
        build::build(&self.docker, tag, dockerfile, network).await
    }

    async fn start(&self, vm: &Vm, rootfs: &RootfsSpec) -> Result<RuntimeHandle, RuntimeError> {
        let RootfsSpec::Reference(image) = rootfs else {
            return Err(RuntimeError::Invalid(
                "docker sandboxes run engine image references".into(),
            ));
        };
        let name = self.name_of(&vm.id);
        // A container a preserving stop kept is started again as it is.
        let exists = match self
            .docker
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
        {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(engine_err("inspect the container", e)),
        };
        if !exists {
            self.create(vm, image).await?;
        }
        let started = async {
            self.docker
                .start_container(
                    &name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|e| engine_err("start the container", e))?;
            self.handle(&vm.id).await
        };
        match started.await {
            Ok(h) => Ok(h),
            Err(e) => {
                if !exists {
                    let _ = self.remove(&name).await;
                }
                Err(e)
            }
        }
    }

    async fn stop(&self, id: &VmId, _handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        self.staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.remove(&self.name_of(id)).await
    }

    async fn halt(&self, id: &VmId, _handle: Option<RuntimeHandle>) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(STOP_GRACE_SECONDS),
            ..Default::default()
        };
        match self
            .docker
            .stop_container(&self.name_of(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(engine_err("stop the container", e)),
        }
    }

    fn changes(&self, _vm: &Vm) -> Vec<ChangedTree> {
        Vec::new()
    }

    async fn set_frozen(&self, id: &VmId, frozen: bool) -> Result<(), RuntimeError> {
        let name = self.name_of(id);
        let result = if frozen {
            self.docker.pause_container(&name).await
        } else {
            self.docker.unpause_container(&name).await
        };
        result.map_err(|e| engine_err("pause the container", e))
    }

    /// Volumes go in as the container provider's do: the engine runs
    /// here, so its container's main process is a host process, and the
    /// mount helper clones the volume's host mount into that process's
    /// mount namespace (an engine bind could only be set at creation).
    async fn attach(
        &self,
        _id: &VmId,
        handle: RuntimeHandle,
        source: &Path,
        target: &str,
        read_only: bool,
    ) -> Result<(), RuntimeError> {
        crate::agent_helper::attach(&self.agent_path, handle, source, target, read_only).await
    }

    async fn detach(
        &self,
        _id: &VmId,
        handle: RuntimeHandle,
        target: &str,
    ) -> Result<(), RuntimeError> {
        crate::agent_helper::detach(&self.agent_path, handle, target).await
    }

    fn is_alive(&self, _id: &VmId, handle: RuntimeHandle) -> bool {
        // The engine runs on this host: its container's main process is
        // a host process.
        procfs::is_running(handle.pid, handle.start_ticks)
    }

    async fn update_resources(&self, _id: &VmId, _r: &Resources) -> Result<(), RuntimeError> {
        Err(Self::unsupported("changing resources of a running sandbox"))
    }

    async fn cleanup_orphans(&self, live: &[VmId]) -> Result<usize, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{INSTANCE_LABEL}={}", self.instance)],
            )])),
            ..Default::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_err("list containers", e))?;
        let mut removed = 0;
        for c in containers {
            let vm = c
                .labels
                .as_ref()
                .and_then(|l| l.get(VM_LABEL))
                .cloned()
                .unwrap_or_default();
            if live.iter().any(|l| l.as_str() == vm) {
                continue;
            }
            if let Some(id) = c.id {
                tracing::info!(vm_id = %vm, container = %id, "removing orphaned docker sandbox");
                self.remove(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn channel(&self) -> &dyn SandboxChannel {
        self
    }
}

#[async_trait]
impl SandboxChannel for DockerProvider {
    async fn stage_env(&self, id: &VmId, env: Vec<(String, String)>) -> Result<(), RuntimeError> {
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vars = staged.entry(id.clone()).or_default();
        for (k, v) in env {
            vars.retain(|(ek, _)| *ek != k);
            vars.push((k, v));
        }
        Ok(())
    }
    async fn unstage_env(&self, id: &VmId, names: Vec<String>) -> Result<(), RuntimeError> {
        if let Some(vars) = self
            .staged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(id)
        {
            vars.retain(|(k, _)| !names.contains(k));
        }
        Ok(())
    }
    async fn exec(&self, id: &VmId, request: ExecRequest) -> Result<ExecStream, RuntimeError> {
        let staged = self.staged_env(id);
        exec::run(&self.docker, &self.name_of(id), staged, request).await
    }
    async fn job_start(
        &self,
        id: &VmId,
        job: &str,
        request: ExecRequest,
    ) -> Result<(), RuntimeError> {
        let staged = self.staged_env(id);
        jobs::start(&self.docker, &self.name_of(id), staged, job, request).await
    }
    async fn job_attach(
        &self,
        id: &VmId,
        job: &str,
        stdout_from: u64,
        stderr_from: u64,
    ) -> Result<ExecStream, RuntimeError> {
        Ok(jobs::attach(
            self.docker.clone(),
            self.name_of(id),
            job,
            stdout_from,
            stderr_from,
        ))
    }
    async fn read_file(&self, id: &VmId, path: &SandboxPath) -> Result<FileContent, RuntimeError> {
        archive::read(&self.docker, &self.name_of(id), path).await
    }
    async fn write_file(
        &self,
        id: &VmId,
        path: &SandboxPath,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<u64, RuntimeError> {
        archive::write(&self.docker, &self.name_of(id), path, mode, body).await
    }
    async fn pty_create(&self, _: &VmId, _: PtySpec) -> Result<PtyInfo, RuntimeError> {
        Err(Self::unsupported("PTY sessions"))
    }
    async fn pty_list(&self, _: &VmId) -> Result<Vec<PtyInfo>, RuntimeError> {
        Ok(Vec::new())
    }
    async fn pty_get(&self, _: &VmId, pty: &str) -> Result<PtyInfo, RuntimeError> {
        Err(RuntimeError::PtyNotFound(pty.to_owned()))
    }
    async fn pty_resize(&self, _: &VmId, pty: &str, _: u16, _: u16) -> Result<(), RuntimeError> {
        Err(RuntimeError::PtyNotFound(pty.to_owned()))
    }
    async fn pty_kill(&self, _: &VmId, pty: &str) -> Result<(), RuntimeError> {
        Err(RuntimeError::PtyNotFound(pty.to_owned()))
    }
    async fn pty_attach(&self, _: &VmId, pty: &str) -> Result<PtyConnection, RuntimeError> {
        Err(RuntimeError::PtyNotFound(pty.to_owned()))
    }
}
