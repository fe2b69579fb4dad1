//! [`HostNetwork`]: the network port on this host.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use paddock_core::ids::VmId;
use paddock_core::model::{EgressPolicy, InterceptedRequest, Interception, Ipv4Cidr, VaultCa};
use paddock_core::network_backend::{LiveNetwork, NetworkBackend, VmNetwork};
use paddock_core::RuntimeError;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use crate::dns::{self, Policies};
use crate::intercept::{self, Interceptions, Upstreams};
use crate::nft::{self, Layout, VmRules};
use crate::segment::{Segment, Segments, BRIDGE_PORTS};
use crate::{link, netns, NetError};

#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The first segment's bridge; also the name of this server's
    /// nftables tables.
    pub bridge: String,
    /// VM addresses, cut into segments (see [`crate::segment`]); `.1` of
    /// each is its gateway and resolver.
    pub subnet: Ipv4Cidr,
    /// Addresses per segment, each segment a bridge of its own.
    pub addresses_per_bridge: u32,
    /// Ranges no VM reaches whatever its policy (private ranges, the
    /// metadata range); the subnet itself is always added.
    pub blocked: Vec<Ipv4Cidr>,
    /// Where the resolver forwards the queries it answers.
    pub dns_upstream: Vec<SocketAddr>,
    /// How many namespaces to keep prepared.
    pub warm: usize,
    /// Where the namespace files are pinned.
    pub state_dir: PathBuf,
    /// The policy prepared namespaces get their rules for ahead of demand
    /// (the server's default): a VM with it costs no nftables change.
    pub prepared_policy: EgressPolicy,
    /// Vault services: fixed addresses for hosts (the operator's split
    /// horizon; otherwise the host's resolver is asked), and certificates
    /// trusted beside the host's roots when connecting to them.
    pub vault_upstreams: HashMap<String, SocketAddr>,
    pub vault_extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl NetworkConfig {
    fn layout(&self) -> Layout {
        Layout {
            table: self.bridge.clone(),
            subnet: self.subnet,
            blocked: self.blocked.clone(),
            retired: link::retired_prefix(link::retired_group(&self.bridge)),
        }
    }

    pub fn segments(&self) -> Result<Segments, NetError> {
        Segments::new(self.subnet, self.addresses_per_bridge, &self.bridge)
    }

    fn ns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }
}

pub struct HostNetwork {
    config: NetworkConfig,
    layout: Layout,
    state: Arc<PoolState>,
    /// What the vault proxies sent, until the core takes it.
    intercepted: Mutex<Option<UnboundedReceiver<InterceptedRequest>>>,
}

/// Addresses in use and namespaces prepared, shared with the refill task.
struct PoolState {
    config: NetworkConfig,
    layout: Layout,
    segments: Segments,
    /// The segments whose bridge, rule elements and resolver are in
    /// place, by index; held while one is brought up.
    up: tokio::sync::Mutex<BTreeSet<usize>>,
    /// Every address held (by a VM or by a prepared namespace), and which
    /// is handed out next.
    addresses: Mutex<crate::addresses::AddressPool>,
    warm: Mutex<Vec<Ipv4Addr>>,
    /// Namespaces the refill task is preparing now: held addresses that
    /// will be warm in a moment.
    preparing: std::sync::atomic::AtomicUsize,
    refill: Notify,
    /// The link group released ports wait in until
    /// [`PoolState::release_forever`] deletes them.
    retired: u32,
    /// Released VMs' rules, waiting for [`PoolState::release_forever`],
    /// with the addresses to free once their rules are gone.
    removals: Mutex<Vec<Removal>>,
    remove: Notify,
    /// An attach waits for an address that a release holds: the releases
    /// gathered so far are finished at once.
    address_wanted: Notify,
    /// Addresses released and not yet free: held a moment longer.
    releasing: std::sync::atomic::AtomicUsize,
    started: std::sync::Once,
    /// The policy in force by address, shared with the resolver: its
    /// elements are in the ruleset, and DNS answers by it. A VM's, or the
    /// prepared policy of a namespace no VM took yet.
    policies: Policies,
    learned: dns::Learned,
    /// Vault services by VM address, shared with the resolver and the
    /// proxies on the gateways.
    interceptions: Interceptions,
    upstreams: Arc<Upstreams>,
    intercepted: UnboundedSender<InterceptedRequest>,
}

/// Released VMs' network, for [`PoolState::release_forever`] to finish.
struct Removal {
    /// Their rule elements.
    rules: Vec<nft::Element>,
    /// Their addresses, free once the rules are gone.
    addresses: Vec<Ipv4Addr>,
    /// Their namespaces, unpinned and held here until the batch ends:
    /// tearing a namespace down holds the rtnl lock (its devices are
    /// unregistered) and waits out grace periods, and the kernel tears
    /// down all the namespaces let go at once in one pass.
    namespaces: Vec<OwnedFd>,
}

/// How long an attach waits for a namespace being prepared when every
/// address is held.
const PREPARED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long released VMs' ports and rule elements wait to be deleted
/// together with those released after them. Deleting links and set
/// elements holds the kernel's rtnl lock and the ruleset's commit mutex
/// for RCU grace periods, once per batch whatever its size; done after
/// every delete, they were there when the next delete's port went down
/// and was renamed (which takes both), and made each delete wait for the
/// last one's cleanup.
const RELEASE_GATHER: std::time::Duration = std::time::Duration::from_millis(250);

/// How long the pool waits after a namespace is taken before refilling.
const REFILL_DELAY: std::time::Duration = std::time::Duration::from_millis(100);
/// How long a freed address rests before it is handed out again while
/// others are free.
const ADDRESS_COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(5);

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Host { what, source }
}

impl HostNetwork {
    /// Sets up the bridge, forwarding, an empty ruleset and the resolver.
    /// VMs get namespaces once [`NetworkBackend::reconcile`] has run.
    pub async fn start(config: NetworkConfig) -> Result<Self, NetError> {
        let segments = config.segments()?;
        let layout = config.layout();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(io_err("enable IPv4 forwarding"))?;
        nft::apply(&nft::full_ruleset(&layout, &[], &[])).await?;
        std::fs::create_dir_all(config.ns_dir())
            .map_err(io_err(config.ns_dir().display().to_string()))?;
        let policies: Policies = Arc::new(RwLock::new(HashMap::new()));
        let learned: dns::Learned = Arc::default();
        let (intercepted, intercepted_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut blocked = config.blocked.clone();
        blocked.push(config.subnet);
        let upstreams = Arc::new(
            Upstreams::new(
                &config.vault_extra_roots,
                config.dns_upstream.clone(),
                config.vault_upstreams.clone(),
                blocked,
            )
            .map_err(|e| NetError::Config(format!("the vault proxy's TLS: {e}")))?,
        );
        let state = Arc::new(PoolState {
            config: config.clone(),
            layout: layout.clone(),
            segments: segments.clone(),
            up: tokio::sync::Mutex::new(BTreeSet::new()),
            addresses: Mutex::default(),
            warm: Mutex::new(Vec::new()),
            preparing: std::sync::atomic::AtomicUsize::new(0),
            refill: Notify::new(),
            retired: link::retired_group(&config.bridge),
            removals: Mutex::default(),
            remove: Notify::new(),
            address_wanted: Notify::new(),
            releasing: std::sync::atomic::AtomicUsize::new(0),
            started: std::sync::Once::new(),
            policies,
            learned,
            interceptions: Interceptions::default(),
            upstreams,
            intercepted,
        });
        let first = segments
            .get(0)
            .ok_or_else(|| NetError::Exhausted(config.subnet.to_string()))?;
        state.bring_up(&first).await?;
        // Ports a previous run retired and did not get to delete.
        link::reap(state.retired).await?;
        tokio::spawn(Arc::clone(&state).release_forever());
        tracing::info!(
            bridge = %config.bridge,
            subnet = %config.subnet,
            segments = segments.count(),
            capacity = segments.capacity(),
            warm = config.warm,
            "VM networking ready"
        );
        Ok(Self {
            config,
            layout,
            state,
            intercepted: Mutex::new(Some(intercepted_rx)),
        })
    }

    /// Removes everything a server with `config` made, without a server:
    /// for `paddock purge`.
    pub async fn purge(config: &NetworkConfig) -> Result<usize, NetError> {
        let layout = config.layout();
        let segments = config.segments()?;
        let mut removed = 0;
        for segment in segments.iter() {
            for port in link::ports_of(&segment.bridge) {
                if let Some(a) = link::port_address(&port) {
                    link::remove_port(a).await?;
                    removed += 1;
                }
            }
        }
        link::reap(link::retired_group(&config.bridge)).await?;
        for ns in netns::list(&config.ns_dir()) {
            netns::remove(&ns).map_err(io_err(ns.display().to_string()))?;
        }
        nft::apply_each(&[
            format!("delete table inet {}", layout.table),
            format!("delete table bridge {}", layout.table),
        ])
        .await;
        for segment in segments.iter() {
            link::remove_bridge(&segment.bridge).await?;
        }
        Ok(removed)
    }
}

impl PoolState {
    fn netns_path(&self, address: Ipv4Addr) -> PathBuf {
        self.config.ns_dir().join(address.to_string())
    }

    fn segment_of(&self, address: Ipv4Addr) -> Result<Segment, NetError> {
        self.segments.of(address).ok_or_else(|| {
            NetError::Exhausted(format!("{address} is outside {}", self.config.subnet))
        })
    }

    fn network(&self, address: Ipv4Addr, segment: &Segment) -> VmNetwork {
        VmNetwork {
            address,
            gateway: segment.gateway(),
            netns: self.netns_path(address),
        }
    }

    /// Brings a segment up unless it is: its bridge, its elements in the
    /// rule sets, and a resolver on its gateway. Idempotent across server
    /// restarts (the bridge outlives the server).
    async fn bring_up(&self, segment: &Segment) -> Result<(), NetError> {
        let mut up = self.up.lock().await;
        if up.contains(&segment.index) {
            return Ok(());
        }
        let gateway = segment.gateway();
        link::ensure_bridge(&segment.bridge, gateway, segment.cidr).await?;
        nft::change(&self.layout.table, nft::add_segment(segment)).await?;
        dns::serve(
            SocketAddr::from((gateway, 53)),
            self.layout.clone(),
            self.config.dns_upstream.clone(),
            Arc::clone(&self.policies),
            Arc::clone(&self.learned),
            Arc::clone(&self.interceptions),
        )
        .await
        .map_err(io_err(format!("serve DNS on {gateway}:53")))?;
        intercept::serve(
            SocketAddr::from((gateway, 443)),
            Arc::clone(&self.interceptions),
            Arc::clone(&self.policies),
            Arc::clone(&self.upstreams),
            self.intercepted.clone(),
        )
        .await
        .map_err(io_err(format!("serve vault services on {gateway}:443")))?;
        up.insert(segment.index);
        if segment.index > 0 {
            tracing::info!(bridge = %segment.bridge, segment = %segment.cidr, "VM network segment up");
        }
        Ok(())
    }

    /// The next VM address ([`crate::addresses`]), now held.
    fn allocate(&self) -> Result<Ipv4Addr, NetError> {
        let mut pool = self
            .addresses
            .lock()
            .map_err(|_| NetError::Exhausted("poisoned".into()))?;
        if pool.held() >= self.segments.capacity() {
            return Err(NetError::Exhausted(format!(
                "{} ({} segments, each a bridge of at most {BRIDGE_PORTS} ports)",
                self.config.subnet,
                self.segments.count()
            )));
        }
        pool.allocate(&self.segments, ADDRESS_COOL_DOWN, std::time::Instant::now())
            .ok_or_else(|| NetError::Exhausted(self.config.subnet.to_string()))
    }

    fn free(&self, address: Ipv4Addr) {
        if let Ok(mut pool) = self.addresses.lock() {
            pool.free(address, std::time::Instant::now());
        }
    }

    /// Prepares one namespace: pinned, wired, addressed, and with the
    /// rules of the prepared policy in place.
    async fn prepare(&self) -> Result<Ipv4Addr, NetError> {
        let address = self.allocate()?;
        self.wire_up(address).await
    }

    /// [`PoolState::prepare`] for the warm pool: counted in `preparing`
    /// from the moment it holds an address until it is warm (or gone), so
    /// a create meanwhile knows a namespace is coming.
    async fn prepare_warm(&self) -> Result<(), NetError> {
        use std::sync::atomic::Ordering;
        let address = self.allocate()?;
        self.preparing.fetch_add(1, Ordering::SeqCst);
        let prepared = self.wire_up(address).await;
        if prepared.is_ok() {
            if let Ok(mut w) = self.warm.lock() {
                w.push(address);
            }
        }
        self.preparing.fetch_sub(1, Ordering::SeqCst);
        prepared.map(|_| ())
    }

    /// Makes the namespace of a held `address`; on failure frees it.
    async fn wire_up(&self, address: Ipv4Addr) -> Result<Ipv4Addr, NetError> {
        let path = self.netns_path(address);
        let result = async {
            let segment = self.segment_of(address)?;
            self.bring_up(&segment).await?;
            let p = path.clone();
            tokio::task::spawn_blocking(move || netns::create(&p))
                .await
                .map_err(|e| NetError::Tool {
                    tool: "netns",
                    message: e.to_string(),
                })?
                .map_err(io_err(format!("create the namespace {}", path.display())))?;
            link::wire(
                &path,
                &segment.bridge,
                address,
                segment.gateway(),
                segment.cidr.prefix(),
            )
            .await?;
            let port = link::port_name(address);
            let rules = VmRules {
                address,
                port: &port,
                policy: &self.config.prepared_policy,
            };
            nft::change(&self.layout.table, nft::add_vm(&rules)).await?;
            self.set_in_force(address, self.config.prepared_policy.clone());
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(address),
            Err(e) => {
                self.discard(address).await;
                Err(e)
            }
        }
    }

    fn set_in_force(&self, address: Ipv4Addr, policy: EgressPolicy) {
        if let Ok(mut policies) = self.policies.write() {
            policies.insert(address, policy);
        }
    }

    fn in_force(&self, address: Ipv4Addr) -> Option<EgressPolicy> {
        self.policies.read().ok()?.get(&address).cloned()
    }

    /// What `address` looked up, forgotten.
    fn take_learned(&self, address: Ipv4Addr) -> Vec<Ipv4Addr> {
        self.learned
            .lock()
            .ok()
            .and_then(|mut l| l.remove(&address))
            .map(|set| set.into_iter().collect())
            .unwrap_or_default()
    }

    /// Replaces the policy in force on `address` with `policy`.
    async fn apply_policy(&self, address: Ipv4Addr, policy: &EgressPolicy) -> Result<(), NetError> {
        let old = self
            .in_force(address)
            .unwrap_or_else(|| self.config.prepared_policy.clone());
        if old != *policy {
            nft::change(
                &self.layout.table,
                nft::replace_policy(address, &old, policy),
            )
            .await?;
        }
        self.set_in_force(address, policy.clone());
        if policy.domain_patterns().is_empty() {
            let learned = self.take_learned(address);
            if !learned.is_empty() {
                nft::change_each(&self.layout.table, nft::forget_learned(address, &learned)).await;
            }
        }
        Ok(())
    }

    /// Frees a namespace, its rules, its port and its address.
    async fn discard(&self, address: Ipv4Addr) {
        self.discard_many(&[address]).await;
    }

    /// Forgets the policy, learned addresses and vault services of
    /// `address`; the rule changes that remove it.
    fn forget(&self, address: Ipv4Addr) -> Vec<nft::Element> {
        self.interceptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&address);
        let policy = self
            .policies
            .write()
            .ok()
            .and_then(|mut m| m.remove(&address));
        let learned = self.take_learned(address);
        let port = link::port_name(address);
        nft::remove_vm(address, &port, policy.as_ref(), &learned)
    }

    /// Frees namespaces, their rules, ports and addresses, together.
    ///
    /// Each port is retired at once (down and renamed: see
    /// [`link::retire_ports`]), which cuts the VM off and frees the
    /// port's name, and its namespace is unpinned. What waits out RCU
    /// grace periods in the kernel is left to [`PoolState::release_forever`],
    /// off the caller's path: deleting the retired links and the VMs'
    /// rule elements (every deletion of elements waits one out, 8-16 ms
    /// here, however few). The port goes down before the rules go, so a
    /// sandbox still dying behind it cannot send as another address
    /// meanwhile.
    async fn discard_many(&self, addresses: &[Ipv4Addr]) {
        let began = std::time::Instant::now();
        let rules: Vec<nft::Element> = addresses.iter().flat_map(|a| self.forget(*a)).collect();
        // The namespaces are unpinned on a thread of their own while the
        // ports are retired: an unmount waits out a grace period too.
        let pins: Vec<PathBuf> = addresses.iter().map(|a| self.netns_path(*a)).collect();
        let unpin = tokio::task::spawn_blocking(move || {
            pins.iter()
                .filter_map(|path| {
                    let held = netns::hold(path);
                    if let Err(e) = netns::remove(path) {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove a namespace");
                    }
                    held
                })
                .collect::<Vec<OwnedFd>>()
        });
        let retire = async {
            if let Err(e) = link::retire_ports(addresses, self.retired).await {
                tracing::warn!(count = addresses.len(), error = %e, "could not retire VM ports; deleting them");
                if let Err(e) = link::remove_ports(addresses).await {
                    tracing::warn!(count = addresses.len(), error = %e, "could not remove VM ports");
                }
            }
            began.elapsed()
        };
        let (namespaces, retired) = tokio::join!(unpin, retire);
        self.releasing
            .fetch_add(addresses.len(), std::sync::atomic::Ordering::SeqCst);
        self.removals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Removal {
                rules,
                addresses: addresses.to_vec(),
                // A failed unpinning task leaves the namespaces to their
                // processes, which are dying.
                namespaces: namespaces.unwrap_or_default(),
            });
        self.remove.notify_one();
        tracing::debug!(
            count = addresses.len(),
            retire_us = retired.as_micros() as u64,
            took_us = began.elapsed().as_micros() as u64,
            "VM networks released"
        );
    }

    /// Finishes releases, all that wait each time it wakes: deletes the
    /// retired ports (one request for them all), then removes their VMs'
    /// rules (one transaction), then frees their addresses. In that
    /// order, a port's bridge slot and its address's rules are gone
    /// before the address can be handed out again. A release waits up to
    /// [`RELEASE_GATHER`] for others to join its batch, unless an attach
    /// needs its address.
    async fn release_forever(self: Arc<Self>) {
        loop {
            self.remove.notified().await;
            tokio::select! {
                () = tokio::time::sleep(RELEASE_GATHER) => {}
                () = self.address_wanted.notified() => {}
            }
            let batch = std::mem::take(
                &mut *self
                    .removals
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if let Err(e) = link::reap(self.retired).await {
                tracing::warn!(error = %e, "could not delete retired VM ports");
            }
            let mut rules = Vec::new();
            let mut addresses = Vec::new();
            for removal in batch {
                rules.extend(removal.rules);
                addresses.extend(removal.addresses);
                // Let go together: the kernel tears them down in one pass.
                drop(removal.namespaces);
            }
            nft::change_each(&self.layout.table, rules).await;
            for address in addresses {
                self.free(address);
                self.releasing
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    fn take_warm(&self) -> Option<Ipv4Addr> {
        self.warm.lock().ok()?.pop()
    }

    fn preparing(&self) -> usize {
        self.preparing.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn releasing(&self) -> usize {
        self.releasing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A namespace for an attach: a warm one, else one made now, else
    /// (every address held, some by namespaces being prepared or by VMs
    /// just released) the next one the refill task finishes, or one made
    /// on an address once it is free.
    async fn take_or_prepare(&self) -> Result<Ipv4Addr, NetError> {
        let deadline = tokio::time::Instant::now() + PREPARED_WAIT;
        loop {
            // Read before trying: an address freed after this read is
            // seen by the try, so none is missed.
            let coming = self.preparing() > 0 || self.releasing() > 0;
            if let Some(a) = self.take_warm() {
                return Ok(a);
            }
            match self.prepare().await {
                Err(NetError::Exhausted(why))
                    if !coming || tokio::time::Instant::now() >= deadline =>
                {
                    return Err(NetError::Exhausted(why));
                }
                Err(NetError::Exhausted(_)) => self.address_wanted.notify_one(),
                other => return other,
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Keeps `warm` namespaces prepared, refilling whenever one is taken.
    async fn refill_forever(self: Arc<Self>) {
        loop {
            while self.warm.lock().map(|w| w.len()).unwrap_or(usize::MAX) < self.config.warm {
                match self.prepare_warm().await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not prepare a network namespace");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
            self.refill.notified().await;
            // Let the start that took a namespace finish first: refilling
            // forks `ip` and `nft`, which would compete with it for CPU.
            tokio::time::sleep(REFILL_DELAY).await;
        }
    }
}

#[async_trait]
impl NetworkBackend for HostNetwork {
    /// What the host end of the VM's veth received: every byte the VM
    /// sent, wherever it went.
    fn watch_egress(
        &self,
        network: &VmNetwork,
        content: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<paddock_core::network_backend::EgressFlow>, RuntimeError>
    {
        let port = crate::link::port_name(network.address);
        crate::flows::watch(&port, network.address, network.gateway, content).map_err(|e| {
            RuntimeError::Unsupported(format!("the VM's veth {port} cannot be watched: {e}"))
        })
    }

    fn egress_bytes(&self, network: &VmNetwork) -> Option<u64> {
        let port = crate::link::port_name(network.address);
        std::fs::read_to_string(format!("/sys/class/net/{port}/statistics/rx_bytes"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn enabled(&self) -> bool {
        true
    }

    fn room(&self) -> Result<(), String> {
        let warm = self.state.warm.lock().map(|w| w.len()).unwrap_or(0);
        let held = self.state.addresses.lock().map(|p| p.held()).unwrap_or(0);
        let capacity = self.state.segments.capacity();
        if warm > 0 || self.state.preparing() > 0 || self.state.releasing() > 0 || held < capacity {
            return Ok(());
        }
        Err(format!(
            "no VM network left on this host: {held} of {capacity} held (the subnet {} in {} \
             segments, each a bridge of at most {BRIDGE_PORTS} ports); delete VMs or give the \
             server a larger [network] subnet",
            self.config.subnet,
            self.state.segments.count(),
        ))
    }

    async fn attach(&self, vm: &VmId, policy: &EgressPolicy) -> Result<VmNetwork, RuntimeError> {
        let address = self.state.take_or_prepare().await?;
        self.state.refill.notify_one();
        if let Err(e) = self.state.apply_policy(address, policy).await {
            self.state.discard(address).await;
            return Err(e.into());
        }
        tracing::debug!(vm_id = %vm, %address, "VM network attached");
        let segment = self.state.segment_of(address)?;
        Ok(self.state.network(address, &segment))
    }

    async fn set_policy(
        &self,
        _vm: &VmId,
        network: &VmNetwork,
        policy: &EgressPolicy,
    ) -> Result<(), RuntimeError> {
        self.state.apply_policy(network.address, policy).await?;
        Ok(())
    }

    async fn release(&self, vm: &VmId, network: &VmNetwork) -> Result<(), RuntimeError> {
        let address = network.address;
        self.state.discard(address).await;
        tracing::debug!(vm_id = %vm, %address, "VM network released");
        Ok(())
    }

    async fn release_many(&self, vms: &[(VmId, VmNetwork)]) -> Result<(), RuntimeError> {
        let addresses: Vec<Ipv4Addr> = vms.iter().map(|(_, n)| n.address).collect();
        self.state.discard_many(&addresses).await;
        tracing::debug!(count = addresses.len(), "VM networks released together");
        Ok(())
    }

    fn issue_vault_ca(&self, vm: &VmId) -> Result<VaultCa, RuntimeError> {
        intercept::issue_ca(vm.as_str())
            .map_err(|e| RuntimeError::Setup(format!("make the VM's vault CA: {e}")))
    }

    async fn set_interception(
        &self,
        network: &VmNetwork,
        interception: Option<Interception>,
    ) -> Result<(), RuntimeError> {
        let entry = interception
            .map(|i| intercept::VmInterception::new(i).map(Arc::new))
            .transpose()
            .map_err(RuntimeError::Setup)?;
        let mut map = self
            .state
            .interceptions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match entry {
            Some(entry) => map.insert(network.address, entry),
            None => map.remove(&network.address),
        };
        Ok(())
    }

    fn take_intercepted_requests(&self) -> Option<UnboundedReceiver<InterceptedRequest>> {
        self.intercepted.lock().ok()?.take()
    }

    async fn connect_inside(
        &self,
        network: &VmNetwork,
        ip: std::net::IpAddr,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        let path = network.netns.clone();
        let addr = std::net::SocketAddr::new(ip, port);
        let stream = tokio::task::spawn_blocking(move || {
            crate::netns::connect_inside(&path, addr, std::time::Duration::from_secs(10))
        })
        .await
        .map_err(|e| RuntimeError::host("connect inside a VM", std::io::Error::other(e)))?
        .map_err(|e| RuntimeError::host(format!("connect to {addr} inside the VM"), e))?;
        stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
            .map_err(|e| RuntimeError::host("adopt a VM connection", e))
    }

    async fn reconcile(&self, live: &[LiveNetwork]) -> Result<(), RuntimeError> {
        // The segments of the VMs that survived come up first (their
        // bridges are there; their resolvers are not), and the ruleset
        // is made anew over all the segments that are up, with the `up`
        // lock held so no segment comes up half-way through.
        for l in live {
            let segment = self.state.segment_of(l.network.address)?;
            self.state.bring_up(&segment).await?;
        }
        let up = self.state.up.lock().await;
        let segments: Vec<Segment> = up
            .iter()
            .filter_map(|i| self.state.segments.get(*i))
            .collect();
        let ports: Vec<String> = live
            .iter()
            .map(|l| link::port_name(l.network.address))
            .collect();
        let rules: Vec<VmRules<'_>> = live
            .iter()
            .zip(&ports)
            .map(|(l, port)| VmRules {
                address: l.network.address,
                port,
                policy: &l.policy,
            })
            .collect();
        nft::apply(&nft::full_ruleset(&self.layout, &segments, &rules)).await?;
        drop(up);
        let keep: BTreeSet<Ipv4Addr> = live.iter().map(|l| l.network.address).collect();
        // The ruleset was made anew: these are its policies, and nothing
        // is learned yet.
        if let Ok(mut p) = self.state.policies.write() {
            *p = live
                .iter()
                .map(|l| (l.network.address, l.policy.clone()))
                .collect();
        }
        if let Ok(mut learned) = self.state.learned.lock() {
            learned.clear();
        }
        if let Ok(mut pool) = self.state.addresses.lock() {
            pool.reset(keep.clone());
        }
        // Namespaces prepared before the restart are not trusted: they go
        // with every other leftover, and the pool is filled afresh.
        let mut orphans = 0;
        for path in netns::list(&self.config.ns_dir()) {
            let address = file_address(&path);
            if address.is_some_and(|a| keep.contains(&a)) {
                continue;
            }
            // Cleanup is best effort: one stuck leftover must not keep
            // the server from starting (the next start tries again).
            match netns::remove(&path) {
                Ok(()) => orphans += 1,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a leftover namespace")
                }
            }
        }
        let ports = self
            .state
            .segments
            .iter()
            .flat_map(|segment| link::ports_of(&segment.bridge));
        for port in ports {
            if let Some(a) = link::port_address(&port).filter(|a| !keep.contains(a)) {
                match link::remove_port(a).await {
                    Ok(()) => orphans += 1,
                    Err(e) => {
                        tracing::warn!(port = %port, error = %e, "could not remove a leftover port")
                    }
                }
            }
        }
        if orphans > 0 {
            tracing::info!(count = orphans, "orphaned VM network parts removed");
        }
        let state = Arc::clone(&self.state);
        self.state.started.call_once(|| {
            tokio::spawn(state.refill_forever());
        });
        Ok(())
    }
}

fn file_address(path: &Path) -> Option<Ipv4Addr> {
    path.file_name()?.to_str()?.parse().ok()
}
