//! The SSH gateway. A user logs in as the environment they want
//! (`ssh -p 7423 my-env@host`) with a key they registered
//! (`POST /v1/ssh-keys`); the key's user must be able to see the
//! environment, which must be connected. A shell or a command with a
//! terminal runs in a PTY of the environment's sandbox; a command without
//! one runs through exec, its stdin streamed, its stdout and stderr apart
//! and its exit status returned, as OpenSSH clients and editors' remote
//! modes (which pipe a script into a shell) expect.

mod host_key;
mod session;

use std::sync::Arc;
use std::time::Duration;

use paddock_core::service::Service;
use russh::server::Server as _;
use tokio::net::TcpListener;

pub use host_key::{load_or_create_host_key, HostKeyError};

/// Serves SSH on `listener` with `host_key` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    environments: Arc<paddock_gateway::Gateway>,
    host_key: russh::keys::PrivateKey,
) {
    let key = host_key;
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        // Wrong keys are answered after a pause, so keys cannot be tried
        // in bulk.
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        ..Default::default()
    });
    let mut server = session::Gateway {
        service,
        environments,
    };
    if let Err(e) = server.run_on_socket(config, &listener).await {
        tracing::error!(error = %e, "the SSH gateway stopped");
    }
}
