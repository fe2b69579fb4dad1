//! The paddock binary: wires the libraries together. `serve` runs the
//! server; `keys` manages API keys; `vm` is a client of the VM API.

mod cli;
mod config;
mod data_lock;
mod host_limits;
mod keys;
mod master_key;
mod migrate_store;
mod peer_blobs;
mod serve;
mod sys;
mod term;
mod webhook_sender;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The process's one TLS crypto provider (ring), for every HTTP client:
    // registries when serving, the server when a client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            config,
            store,
        } => {
            let loaded = config::Config::load(config.as_deref()).map(|mut c| {
                if store.is_some() {
                    c.store = store;
                }
                if let Some(l) = listen {
                    c.listen = l;
                }
                if let Some(d) = data_dir {
                    c.data_dir = d;
                }
                c
            });
            match loaded {
                Ok(c) => {
                    init_tracing(c.log_format == "json");
                    serve::run(c).await.map(|()| 0)
                }
                Err(e) => Err(e),
            }
        }
        Command::Keys {
            data_dir,
            json,
            store,
            command,
        } => keys::run(&data_dir, store.as_deref(), command, json)
            .await
            .map(|()| 0),
        Command::RotateMasterKey { data_dir, store } => {
            match data_lock::lock(&data_dir, "rotating its master key") {
                Ok(_held) => keys::rotate_master_key(&data_dir, store.as_deref())
                    .await
                    .map(|n| {
                        eprintln!("re-sealed {n} secrets under the new master key");
                        0
                    }),
                Err(e) => Err(e),
            }
        }
        Command::Purge { data_dir, config } => purge(data_dir, config).await,
        Command::MigrateStore { data_dir, from, to } => {
            match data_lock::lock(&data_dir, "moving its records") {
                Ok(_held) => migrate_store::run(&data_dir, from.as_deref(), &to)
                    .await
                    .map(|()| 0),
                Err(e) => Err(e),
            }
        }
        Command::Openapi => {
            println!("{}", paddock_api::openapi::document_json());
            Ok(0)
        }
        Command::Image { client, command } => cli::image::run(client, command).await,
        Command::Vm { client, command } => cli::vm::run(client, command).await,
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("paddock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `paddock purge`: every sandbox, mount and network part of the server
/// whose data dir (and `[network]` config, from the environment) is given.
async fn purge(
    data_dir: std::path::PathBuf,
    config_file: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    let _held = data_lock::lock(&data_dir, "purging it")?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    let mut config = config::Config::load(config_file.as_deref())?;
    let n = paddock_runtime::container::purge(&data_dir, &config.providers.local_root())?;
    eprintln!("removed {n} sandboxes");
    if let Some(host) = &config.providers.docker {
        let instance = paddock_runtime::container::instance_id(&data_dir);
        let n = paddock_runtime::docker::DockerProvider::purge(host, &instance).await?;
        paddock_net::guard::remove(&paddock_runtime::docker::network_of(&instance).1).await;
        eprintln!("removed {n} docker containers and their network");
    }
    config.data_dir = data_dir;
    if let Some(network) = config.network()? {
        let ports = paddock_net::HostNetwork::purge(&network).await?;
        eprintln!(
            "removed {ports} VM network ports and bridge {}",
            network.bridge
        );
    }
    Ok(0)
}
