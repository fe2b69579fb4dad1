//! `paddock serve`: wires the store, the provider, the service and the
//! HTTP API together, and runs until SIGINT or SIGTERM. Sandboxes are not
//! stopped on shutdown: they keep running and the next start adopts them.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use paddock_api::{AppState, MetricsHandle};
use paddock_core::ids::NodeId;
use paddock_core::network_backend::{NetworkBackend, NoNetwork};
use paddock_core::service::{Backends, Service, ServiceConfig};
use paddock_runtime::container::{ContainerConfig, ContainerProvider};
use paddock_store::SqlStore;
use tokio::sync::watch;

use crate::config::Config;

pub fn agent_path(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    match &config.agent_path {
        Some(p) => Ok(p.clone()),
        None => {
            let exe = std::env::current_exe().context("locate the paddock binary")?;
            Ok(exe.with_file_name("paddock-agent"))
        }
    }
}

/// The store `url` names; without one, the store the data dir's server
/// last served from (`store.url`), else the data dir's SQLite database.
/// A server records its store there, so that `paddock keys` and a start
/// without `--store` find the same records.
pub async fn open_store(data_dir: &Path, url: Option<&str>) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("create the data dir {}", data_dir.display()))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restrict the data dir {}", data_dir.display()))?;
    let recorded = recorded_store(data_dir)?;
    let store = match url.or(recorded.as_deref()) {
        Some(url) => SqlStore::open(url).await,
        None => SqlStore::open_sqlite(&data_dir.join("paddock.db")).await,
    }
    .context("open the database")?;
    Ok(store)
}

/// This data dir's node id: made at its first start, kept in `node.id`.
fn node_id(data_dir: &Path) -> anyhow::Result<NodeId> {
    let path = data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) => id
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::generate();
            std::fs::write(&path, id.as_str())
                .with_context(|| format!("write {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

const STORE_URL_FILE: &str = "store.url";

/// The store URL recorded in the data dir, if any.
pub fn recorded_store(data_dir: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(STORE_URL_FILE)) {
        Ok(url) => Ok(Some(url.trim().to_owned()).filter(|u| !u.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("read the data dir's store.url"),
    }
}

/// Records the store a server serves from (owner-only: a PostgreSQL URL
/// may carry its password), or forgets it for the data dir's SQLite.
pub fn record_store(data_dir: &Path, url: Option<&str>) -> anyhow::Result<()> {
    let path = data_dir.join(STORE_URL_FILE);
    match url {
        Some(url) => {
            let tmp = data_dir.join("store.url.tmp");
            let _ = std::fs::remove_file(&tmp);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, url.as_bytes()))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .with_context(|| format!("write {}", path.display()))
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("remove {}", path.display()))
            }
            _ => Ok(()),
        },
    }
}

/// This node as it registers: where its API answers, what it offers.
fn this_node(
    config: &Config,
    id: &NodeId,
    providers: Vec<String>,
    lease: std::time::Duration,
) -> paddock_core::model::Node {
    let memory_mb = nix::sys::sysinfo::sysinfo()
        .map(|i| i.ram_total() >> 20)
        .unwrap_or(0);
    let vcpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let now = paddock_core::clock::Timestamp::now();
    paddock_core::model::Node {
        id: id.clone(),
        address: config
            .cluster
            .address
            .clone()
            .unwrap_or_else(|| format!("http://{}", config.listen)),
        providers,
        memory_mb,
        vcpus,
        gpus: config.gateway.to_core().gpus,
        labels: config.cluster.labels.clone(),
        started_at: now,
        heartbeat_at: now,
        lease,
    }
}

/// Writes the admin key file once, readable by its owner only.
fn write_admin_key(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

pub async fn run(mut config: Config) -> anyhow::Result<()> {
    // Settings that need no host are checked before anything is set up
    // (a network, lxcfs, the microVM kernel), so a typo costs nothing.
    let usage_interval = config.usage.interval()?;
    let (cluster_heartbeat, cluster_lease) = config.cluster.timing()?;
    let runs_sandboxes = config.cluster.runs_sandboxes()?;
    let audit_retention = config.audit.retention()?;
    let webhook_sender = config.webhooks.sender()?;
    let _held = crate::data_lock::lock(&config.data_dir, "serving it")?;
    // Absolute from here on: helpers resolve the paths they are given
    // from directories of their own (a sandbox's run dir, lxcfs's).
    config.data_dir = std::fs::canonicalize(&config.data_dir)
        .with_context(|| format!("resolve {}", config.data_dir.display()))?;
    // Only root reads the data dir: keys, the database, sandboxes' disks.
    std::fs::set_permissions(
        &config.data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .with_context(|| format!("restrict {}", config.data_dir.display()))?;
    let node = node_id(&config.data_dir)?;
    let store = open_store(&config.data_dir, config.store.as_deref())
        .await?
        .for_node(node.as_str())
        .await
        .context("claim the node's VMs")?;
    let store = Arc::new(store);
    if config.store.is_some() {
        record_store(&config.data_dir, config.store.as_deref())?;
    }
    tracing::info!(node = %node, backend = ?store.backend(), "records open");
    let provider = ContainerProvider::new(ContainerConfig {
        data_dir: config.data_dir.clone(),
        agent_path: agent_path(&config)?,
        variants: config.variants()?,
        gpu: config.gateway.gpu_host(),
        ids: config.userns.to_runtime(),
        default_disk_mb: config.limits.default_disk_mb,
        proc_views: config.sandbox.proc_views,
        spare_loop_devices: config.sandbox.spare_loop_devices,
        local_root: config.providers.local_root(),
    })
    .context("start the container provider")?;
    // `criu check` runs while the rest starts.
    let checkpoint = tokio::spawn(paddock_runtime::container::checkpoint::probe());
    let mut runtime_info = serde_json::json!({
        "cgroup": provider.cgroup_version(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    });
    let images = paddock_image::ImageStore::open(
        &config.data_dir.join("images"),
        config.registries(),
        config.only_listed_registries,
    )
    .context("open the image store")?;
    let volumes = paddock_runtime::volumes::Ext4Volumes::open(&config.data_dir.join("volumes"))
        .context("open the volume store")?;
    let network: Arc<dyn NetworkBackend> = match config.network()? {
        Some(n) => {
            let sandboxes = n.segments().map(|s| s.capacity()).unwrap_or(0);
            crate::host_limits::check(u64::try_from(sandboxes).unwrap_or(u64::MAX));
            Arc::new(
                paddock_net::HostNetwork::start(n)
                    .await
                    .context("start VM networking")?,
            )
        }
        None => {
            crate::host_limits::check(0);
            Arc::new(NoNetwork)
        }
    };
    let provider = Arc::new(provider);
    let mut more_providers: Vec<Arc<dyn paddock_core::provider::Provider>> = Vec::new();
    if config.providers.local {
        more_providers.push(Arc::new(paddock_runtime::local::LocalProvider::new(
            Arc::clone(&provider),
            config.providers.local_config()?,
        )));
    }
    if config.providers.microvm != Some(false) {
        match paddock_runtime::microvm::MicroVmProvider::new(
            Arc::clone(&provider),
            &config.microvm.to_runtime(),
        ) {
            Ok(microvm) => {
                tracing::info!(
                    accelerator = microvm.accelerator_kind().as_str(),
                    guest_kernel = microvm.kernel_release(),
                    "microVM provider ready"
                );
                runtime_info["microvm"] = serde_json::json!({
                    "accelerator": microvm.accelerator_kind().as_str(),
                    "guest_kernel": microvm.kernel_release(),
                });
                more_providers.push(Arc::new(microvm));
            }
            // Asked for outright, a missing part is fatal; by default the
            // server runs without microVMs and says why.
            Err(e) if config.providers.microvm.is_none() => {
                tracing::warn!(error = %e, "microVM provider unavailable");
                runtime_info["microvm"] = serde_json::json!({ "unavailable": e.to_string() });
            }
            Err(e) => return Err(anyhow::Error::new(e).context("start the microVM provider")),
        }
    }
    if let Some(host) = &config.providers.docker {
        let instance = paddock_runtime::container::instance_id(&config.data_dir);
        let docker =
            paddock_runtime::docker::DockerProvider::connect(host, &instance, agent_path(&config)?)
                .await
                .with_context(|| {
                    format!("connect to the docker engine ([providers] docker = {host:?})")
                })?;
        // Its sandboxes reach neither the host nor the blocked ranges.
        paddock_net::guard::install(&docker.bridge(), &config.blocked_ranges()?)
            .await
            .context("guard the docker provider's network")?;
        more_providers.push(Arc::new(docker));
    }
    // The other nodes sharing the store, the way to their sandboxes, and
    // to the layers of snapshots taken on them.
    let keyring =
        Arc::new(crate::master_key::load(&config.data_dir).context("load the vault master key")?);
    let directory = paddock_runtime::remote::NodeDirectory::new(
        Arc::clone(&store) as Arc<dyn paddock_core::store::NodeStore>,
        node.clone(),
        paddock_core::cluster::node_token(&keyring, &node),
    );
    images.set_peers(Arc::new(crate::peer_blobs::PeerBlobs(Arc::clone(
        &directory,
    ))));
    let service = Service::new(
        Arc::clone(&store) as Arc<dyn paddock_core::store::Store>,
        Backends {
            provider,
            more_providers,
            images: Arc::new(images),
            volumes: Arc::new(volumes),
            network,
            domain_dns: Arc::new(paddock_net::rfc2136::Rfc2136 {
                address: config.shares.public_address,
            }),
            webhooks: webhook_sender,
            remote_nodes: Some(
                Arc::clone(&directory) as Arc<dyn paddock_core::provider::RemoteNodes>
            ),
        },
        keyring,
        ServiceConfig {
            limits: config.limits()?,
            default_variant: config.default_variant.clone(),
            default_egress: config.default_egress()?,
            warm_pool: config.sandbox.warm_pool,
            quotas: Arc::new(config.quotas.to_quotas()),
            usage_interval,
            usage_prices: config.usage.prices(),
            audit_retention,
            node: Some(node.clone()),
            ..ServiceConfig::default()
        },
    );
    let membership = paddock_core::cluster::Membership::new(
        Arc::clone(&store) as Arc<dyn paddock_core::store::NodeStore>,
        this_node(
            &config,
            &node,
            service.vms().provider_names(),
            cluster_lease,
        ),
        paddock_core::cluster::MembershipConfig {
            heartbeat: cluster_heartbeat,
            runs_sandboxes,
        },
    );
    // Before reconciling: a node whose heartbeat is stale would have its
    // VMs marked lost by another node meanwhile.
    membership.join().await.context("register the node")?;
    directory.refresh().await.context("read the nodes")?;
    // Only a shared store can have other nodes to place VMs on.
    if store.backend() == paddock_store::Backend::Postgres {
        service.vms().join_cluster(Arc::clone(&membership));
    }

    if let Some((account, secret)) = service.accounts().bootstrap().await? {
        let path = config.data_dir.join("admin.key");
        write_admin_key(&path, secret.expose())?;
        // Printed once, to the terminal that started the first run; never logged.
        println!(
            "created account {} and its admin API key (also in {}, mode 0600):\n{}",
            account.id,
            path.display(),
            secret.expose()
        );
    }
    service.reconcile().await.context("reconcile sandboxes")?;
    // What the vault proxies send with credentials goes to the vaults' logs.
    service.vms().spawn_vault_request_log();
    let gateway = Arc::new(paddock_gateway::Gateway::new(
        Arc::clone(&service),
        config.gateway.to_core(),
    ));
    let definitions = Arc::new(paddock_definitions::Definitions::new(Arc::clone(&service)));
    gateway
        .recover_gateway()
        .await
        .context("recover the gateway's environments and jobs")?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let e2b_stop = stop_rx.clone();
    let tapes_stop = stop_rx.clone();
    tokio::spawn(Arc::clone(&membership).run(paddock_core::service::Shutdown(stop_rx.clone())));
    tokio::spawn(Arc::clone(&directory).run(
        cluster_heartbeat,
        paddock_core::service::Shutdown(stop_rx.clone()),
    ));
    let sweeper = tokio::spawn(
        Arc::clone(service.vms()).run_sweeper(paddock_core::service::Shutdown(stop_rx.clone())),
    );
    tokio::spawn(
        Arc::clone(&gateway).run_job_scheduler(paddock_core::service::Shutdown(stop_rx.clone())),
    );
    tokio::spawn(
        Arc::clone(service.vms()).run_metering(paddock_core::service::Shutdown(stop_rx.clone())),
    );
    tokio::spawn(
        Arc::clone(service.audit()).run_retention(paddock_core::service::Shutdown(stop_rx.clone())),
    );
    let audit_writer = tokio::spawn(
        Arc::clone(service.audit()).run_writer(paddock_core::service::Shutdown(stop_rx.clone())),
    );
    tokio::spawn(Arc::clone(service.webhooks()).run_deliverer(
        paddock_core::service::Shutdown(stop_rx.clone()),
        Arc::clone(&membership),
    ));
    let warm_pool = tokio::spawn(
        Arc::clone(service.vms()).run_warm_pool(paddock_core::service::Shutdown(stop_rx)),
    );
    let share_listener = tokio::net::TcpListener::bind(config.shares.listen)
        .await
        .with_context(|| format!("share proxy: listen on {}", config.shares.listen))?;
    let share_port = share_listener.local_addr()?.port();
    let tls_listener = tokio::net::TcpListener::bind(config.shares.tls_listen)
        .await
        .with_context(|| format!("share proxy: listen on {}", config.shares.tls_listen))?;
    let tls_port = tls_listener.local_addr()?.port();
    let router = Arc::new(paddock_proxy::Router::new(
        Arc::clone(&service),
        paddock_proxy::ProxyConfig {
            domain: config.shares.domain.clone(),
        },
    ));
    // The share listeners face the same clients as the API: the same
    // caps (counted per listener) and head timeout.
    let http_limits = config.http.to_limits()?;
    let connections = http_limits.connections();
    tokio::spawn(paddock_proxy::serve(
        share_listener,
        Arc::clone(&router),
        connections,
    ));
    tokio::spawn(paddock_proxy::serve_tls(
        tls_listener,
        router,
        Arc::new(paddock_proxy::Certificates::new(
            config.shares.certs_dir.clone(),
            &config.shares.domain,
        )),
        connections,
    ));
    tracing::info!(http = %config.shares.listen, https = %config.shares.tls_listen, domain = %config.shares.domain, "share proxy is serving");
    if config.ssh.enabled {
        let ssh_listener = tokio::net::TcpListener::bind(config.ssh.listen)
            .await
            .with_context(|| format!("SSH gateway: listen on {}", config.ssh.listen))?;
        let host_key =
            paddock_ssh::load_or_create_host_key(&config.data_dir.join("ssh_host_ed25519_key"))
                .context("the SSH gateway's host key")?;
        tokio::spawn(paddock_ssh::serve(
            ssh_listener,
            Arc::clone(&service),
            Arc::clone(&gateway),
            host_key,
        ));
        tracing::info!(listen = %config.ssh.listen, "SSH gateway is serving");
    }
    match checkpoint.await {
        Ok(support) => {
            if !support.works {
                tracing::info!(
                    reason = support.reason.as_deref().unwrap_or_default(),
                    "containers cannot be checkpointed on this host (criu check)"
                );
            }
            runtime_info["checkpoint"] = serde_json::json!(support);
        }
        Err(e) => {
            runtime_info["checkpoint"] =
                serde_json::json!({"works": false, "reason": e.to_string()})
        }
    }
    let e2b = Arc::new(paddock_e2b::E2b::new(
        Arc::clone(&service),
        paddock_e2b::E2bConfig {
            provider: config.e2b.provider.clone(),
            uploads_dir: Some(config.data_dir.join("e2b").join("uploads")),
            domain: Some(format!(
                "{}{}",
                config.shares.domain,
                config
                    .shares
                    .url_port
                    .or(Some(share_port))
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default()
            )),
        },
    ));
    tokio::spawn(Arc::clone(&e2b).run_janitor(paddock_core::service::Shutdown(e2b_stop)));
    // A page's requests to share hosts go to the share proxy on loopback
    // when it listens on every address.
    let mut share_proxy = config.shares.listen;
    share_proxy.set_port(share_port);
    if share_proxy.ip().is_unspecified() {
        share_proxy.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let browser = Arc::new(paddock_tools::Browser::new(
        Arc::clone(&service),
        paddock_tools::BrowserConfig {
            chromium: config.browser.chromium.clone(),
            memory_mb: config.browser.memory_mb,
            idle_timeout: std::time::Duration::from_secs(config.browser.idle_timeout_seconds),
            max_sessions_per_account: config.browser.max_sessions_per_account,
            share_domain: Some(config.shares.domain.clone()),
            share_proxy: Some(share_proxy),
        },
    ));
    // The catalog of templates everyone sees is the operator's: the
    // account made at first start.
    let catalog = service
        .accounts()
        .list_accounts()
        .await
        .context("list accounts")?
        .into_iter()
        .min_by_key(|a| a.created_at)
        .map(|a| a.id);
    let templates = paddock_tools::Templates::new(Arc::clone(&service), catalog);
    let desktops = paddock_tools::Desktops::new(
        Arc::clone(&service),
        paddock_tools::DesktopConfig {
            width: 1280,
            height: 800,
            min_memory_mb: 1024,
            recordings_dir: config.data_dir.join("recordings"),
        },
    );
    let tapes = paddock_tools::Tapes::new(Arc::clone(&service), config.data_dir.join("tapes"));
    tapes
        .recover()
        .await
        .context("recover the tapes that were recording")?;
    tokio::spawn(Arc::clone(&tapes).run_retention(paddock_core::service::Shutdown(tapes_stop)));
    let state = AppState {
        share_urls: paddock_api::vms::shares::ShareUrls {
            scheme: config.shares.url_scheme.clone(),
            domain: config.shares.domain.clone(),
            port: config.shares.url_port.or(Some(share_port)).filter(|p| {
                !matches!(
                    (config.shares.url_scheme.as_str(), p),
                    ("http", 80) | ("https", 443)
                )
            }),
            tls_port: Some(tls_port),
            certs_dir: config.shares.certs_dir.clone(),
        },
        e2b,
        browser,
        tapes,
        templates,
        desktops,
        definitions,
        gateway,
        service: Arc::clone(&service),
        metrics: MetricsHandle::install().context("install the metrics recorder")?,
        runtime_info,
        http: http_limits.clone(),
        // Placement reads every node's load: only where nodes share a
        // store (PostgreSQL); a lone SQLite node makes every VM itself.
        cluster: (store.backend() == paddock_store::Backend::Postgres)
            .then(|| Arc::clone(&membership)),
        cluster_http: reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("make the nodes' HTTP client")?,
    };
    tokio::spawn(crate::sys::trim_freed_memory_forever());
    let app = paddock_api::router(state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, data_dir = %config.data_dir.display(), "paddock is serving");
    paddock_api::server::serve(listener, app, http_limits, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    // What the audit writer still held is written before the process ends.
    let _ = audit_writer.await;
    // The pool's sandboxes belong to no VM: they stop with the server,
    // and what their stops left for later (cgroups, devices, files) goes
    // before it ends.
    let _ = warm_pool.await;
    service.vms().settle_providers().await;
    tracing::info!("stopped; sandboxes keep running");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}
