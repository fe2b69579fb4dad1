//! The command line: `serve`, `keys`, and `vm` (a client of the VM API).

pub mod image;
pub mod vm;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "paddock", version, about = "Self-hosted isolated environments")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on (default 127.0.0.1:7420).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Where state lives (default ./.paddock).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where records live: `postgres://…` or `sqlite:PATH` (default:
        /// SQLite in the data dir). Also `store` in the config file.
        #[arg(long)]
        store: Option<String>,
    },
    /// Manage API keys (on the local data dir).
    Keys {
        // Global: accepted before or after the subcommand
        // (`keys create --data-dir DIR`).
        #[arg(
            long,
            default_value = ".paddock",
            env = "PADDOCK_DATA_DIR",
            global = true
        )]
        data_dir: PathBuf,
        #[arg(long, global = true)]
        json: bool,
        /// The server's store, when it is not the data dir's SQLite.
        #[arg(long, env = "PADDOCK_STORE", hide_env_values = true, global = true)]
        store: Option<String>,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Replace the data dir's vault master key and re-seal every secret
    /// under the new one (with the server stopped).
    RotateMasterKey {
        #[arg(long, default_value = ".paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
        /// The server's store, when it is not the data dir's SQLite.
        #[arg(long, env = "PADDOCK_STORE", hide_env_values = true)]
        store: Option<String>,
    },
    /// Move a stopped server's records to another store (SQLite to
    /// PostgreSQL), verified by counts and checksums; the data dir then
    /// serves from the new store.
    MigrateStore {
        #[arg(long, default_value = ".paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
        /// The store to read (default: the data dir's).
        #[arg(long, hide_env_values = true)]
        from: Option<String>,
        /// The store to fill, which must be empty: `postgres://…` or
        /// `sqlite:PATH`.
        #[arg(long)]
        to: String,
    },
    /// Kill and remove every sandbox of a data dir (with its server stopped):
    /// its containers, network, docker containers and lxcfs views.
    Purge {
        #[arg(long, default_value = ".paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
        /// The server's config file, for its network and docker engine.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI document of every route.
    Openapi,
    /// Work with images on a server.
    Image {
        #[command(flatten)]
        client: vm::ClientArgs,
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Work with VMs on a server.
    Vm {
        #[command(flatten)]
        client: vm::ClientArgs,
        #[command(subcommand)]
        command: vm::VmCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        /// The account the key acts for (default: the first account).
        #[arg(long, conflicts_with = "new_account")]
        account: Option<String>,
        /// Create a new account with this name for the key.
        #[arg(long)]
        new_account: Option<String>,
        /// The user (an email address) the key acts for; default
        /// `admin@localhost`, the account's administrator.
        #[arg(long)]
        user: Option<String>,
        /// Make a dev token (`fabro_dev_…`, as environment-definition
        /// clients send) instead of a `pdk_…` API key; both authenticate
        /// the same way.
        #[arg(long)]
        dev_token: bool,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

/// A table in the style every command prints.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}
