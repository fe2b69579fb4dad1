//! The network port: gives a VM a network namespace wired to the host
//! with its egress policy enforced, and takes it back. Implemented by
//! `paddock-net` (a bridge, veths, nftables and a policy-aware DNS
//! resolver). The service calls it under the VM's lock.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use async_trait::async_trait;

use crate::error::RuntimeError;
use crate::ids::VmId;
use crate::model::{EgressPolicy, InterceptedRequest, Interception, VaultCa};

/// Why a server without VM networking has no vault services.
const NO_INTERCEPTION: &str =
    "vault services need VM networking, which is off on this server ([network] enabled)";

/// A VM's place on the host network, recorded with the VM so that a
/// restarted server finds it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNetwork {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The prepared network namespace the sandbox joins at boot.
    pub netns: PathBuf,
}

/// One connection a VM made, as its packets showed it: where to, how many
/// bytes each way, and (when asked for) the first bytes it carried.
#[derive(Debug, Clone)]
pub struct EgressFlow {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    pub remote: std::net::SocketAddrV4,
    /// The name the VM looked up for the remote address, when it did.
    pub host: Option<String>,
    pub local_port: u16,
    /// Payload bytes the VM sent, and received.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// The far end answered (for TCP, its SYN-ACK): a connection the
    /// egress policy refused never is.
    pub established: bool,
    pub started_at: crate::clock::Timestamp,
    pub duration: std::time::Duration,
    /// The first bytes each way, when content is recorded.
    pub content_out: Option<bytes::Bytes>,
    pub content_in: Option<bytes::Bytes>,
}

/// A live VM's network and the policy in force on it, for reconciling.
#[derive(Debug, Clone)]
pub struct LiveNetwork {
    pub vm: VmId,
    pub network: VmNetwork,
    pub policy: EgressPolicy,
}

#[async_trait]
pub trait NetworkBackend: Send + Sync + 'static {
    /// False where the server runs without networking: VMs then get a
    /// loopback-only namespace and policies cannot be set.
    fn enabled(&self) -> bool;

    /// Whether one more VM can get a network now; the reason when it
    /// cannot (a full subnet, a bridge at its port limit), so a create
    /// is refused up front instead of making a failed VM.
    fn room(&self) -> Result<(), String> {
        Ok(())
    }

    /// How many bytes the VM has sent out of its interface since it was
    /// attached; `None` where the backend cannot say.
    fn egress_bytes(&self, _network: &VmNetwork) -> Option<u64> {
        None
    }

    /// The VM's connections from now on, each told when it ends (or when
    /// the receiver is dropped, those still open); with `content`, the
    /// first bytes each carried. Unsupported where the backend sees no
    /// packets.
    fn watch_egress(
        &self,
        _network: &VmNetwork,
        _content: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<EgressFlow>, RuntimeError> {
        Err(RuntimeError::Unsupported(
            "this network backend does not see a VM's connections".into(),
        ))
    }

    /// Takes a prepared namespace for `vm` and puts `policy` in force on
    /// it before the VM can send a packet.
    async fn attach(&self, vm: &VmId, policy: &EgressPolicy) -> Result<VmNetwork, RuntimeError>;

    /// Replaces the policy of an attached VM, at once and atomically.
    async fn set_policy(
        &self,
        vm: &VmId,
        network: &VmNetwork,
        policy: &EgressPolicy,
    ) -> Result<(), RuntimeError>;

    /// Frees the namespace, its links and its rules. Idempotent.
    async fn release(&self, vm: &VmId, network: &VmNetwork) -> Result<(), RuntimeError>;

    /// Frees many VMs' networks at once (a bulk delete), as
    /// [`NetworkBackend::release`] does each; a backend may batch the
    /// host's work. By default one by one; the first failure is returned
    /// after every one was tried.
    async fn release_many(&self, vms: &[(VmId, VmNetwork)]) -> Result<(), RuntimeError> {
        let mut first = Ok(());
        for (vm, network) in vms {
            if let Err(e) = self.release(vm, network).await {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// After a restart: rebuilds the rules of `live` VMs and frees every
    /// namespace, link and rule that belongs to none of them.
    async fn reconcile(&self, live: &[LiveNetwork]) -> Result<(), RuntimeError>;

    /// A new certificate authority for `vm`'s vault services, which its
    /// sandbox will trust.
    fn issue_vault_ca(&self, _vm: &VmId) -> Result<VaultCa, RuntimeError> {
        Err(RuntimeError::Unsupported(NO_INTERCEPTION.into()))
    }

    /// Puts `interception` in force for the VM at `network`: its vault
    /// services' hosts resolve to paddock, whose egress path adds their
    /// credentials. `None` ends it. Idempotent.
    async fn set_interception(
        &self,
        _network: &VmNetwork,
        interception: Option<Interception>,
    ) -> Result<(), RuntimeError> {
        match interception {
            None => Ok(()),
            Some(_) => Err(RuntimeError::Unsupported(NO_INTERCEPTION.into())),
        }
    }

    /// The requests the egress path sends with credentials, for the
    /// vaults' logs. Handed out once; `None` after, or without networking.
    fn take_intercepted_requests(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<InterceptedRequest>> {
        None
    }

    /// A TCP connection made from inside the VM's namespace to `ip:port`
    /// (its loopback, for a port forwarded over SSH): it is the VM's own
    /// connection, under the VM's egress rules.
    async fn connect_inside(
        &self,
        network: &VmNetwork,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError>;
}

/// The backend of a server without networking.
pub struct NoNetwork;

#[async_trait]
impl NetworkBackend for NoNetwork {
    fn enabled(&self) -> bool {
        false
    }

    async fn attach(&self, _vm: &VmId, _policy: &EgressPolicy) -> Result<VmNetwork, RuntimeError> {
        Err(RuntimeError::Setup(
            "networking is disabled on this server".into(),
        ))
    }

    async fn set_policy(
        &self,
        _vm: &VmId,
        _network: &VmNetwork,
        _policy: &EgressPolicy,
    ) -> Result<(), RuntimeError> {
        Err(RuntimeError::Setup(
            "networking is disabled on this server".into(),
        ))
    }

    async fn release(&self, _vm: &VmId, _network: &VmNetwork) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn connect_inside(
        &self,
        _network: &VmNetwork,
        _ip: std::net::IpAddr,
        _port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        Err(RuntimeError::Invalid(
            "this server runs without networking: VM ports cannot be reached".into(),
        ))
    }

    async fn reconcile(&self, _live: &[LiveNetwork]) -> Result<(), RuntimeError> {
        Ok(())
    }
}
