//! Ranks: what a pool offers and who holds them. Holdings are not kept
//! apart from the resources: an environment holds its connection's ranks
//! while connected (or on its way in or out), a batch job while it is
//! pending or running, so the records are the ledger and a restart loses
//! nothing. Placement runs under one lock, the store's, so two placements
//! (of this process or another sharing the store) never see the same free
//! ranks.
//!
//! Ranks are on hosts: this machine alone, or, when several nodes share
//! the store, every live node (the `host` cluster is all of them). A
//! pool's annotations `nodes.paddock.dev/<label>: <value>` select the
//! nodes whose labels match; a GPU connection's ranks are GPUs of one node
//! (best fit: the node with the fewest free GPUs that still has enough,
//! so large asks find a whole node), and its sandbox runs there.

use std::collections::{BTreeMap, BTreeSet};

use crate::Gateway;
use paddock_core::error::CoreError;
use paddock_core::ids::{AccountId, NodeId};
use paddock_core::model::gateway::{
    BatchJob, Environment, NodePool, NodePoolBackend, NodePoolStats, RankKind,
};

use crate::node_pools::HOST_CPU_POOL_ID;

/// Who holds ranks on a pool.
#[derive(Debug, Clone)]
pub(crate) struct Holding {
    pub account_id: AccountId,
    pub pool_id: String,
    pub ranks: u32,
    pub gpus: Vec<u32>,
    /// The node its GPUs are on (several nodes sharing the store).
    pub node: Option<NodeId>,
    /// The holder: `environment/<id>` or `batch_job/<id>`.
    pub holder: String,
    /// A batch job's state, for the pool's statistics.
    pub job_state: Option<&'static str>,
}

impl Holding {
    /// What an environment holds: its connection's ranks while it is
    /// connected or on its way in or out.
    pub fn of_environment(env: &Environment) -> Option<Self> {
        let c = env
            .connection
            .as_ref()
            .filter(|_| env.state.holds_ranks())?;
        Some(Self {
            account_id: env.account_id.clone(),
            pool_id: c.node_pool_id.clone(),
            ranks: c.num_ranks,
            gpus: c.gpus.clone(),
            node: c.node.clone(),
            holder: format!("environment/{}", env.id),
            job_state: None,
        })
    }

    /// What a batch job holds: its ranks while pending or running.
    pub fn of_job(job: &BatchJob) -> Option<Self> {
        job.state.holds_ranks().then(|| Self {
            account_id: job.account_id.clone(),
            pool_id: job.node_pool_id.clone(),
            ranks: job.num_ranks,
            gpus: job.gpus.clone(),
            node: job.node.clone(),
            holder: format!("batch_job/{}", job.id),
            job_state: Some(job.state.as_str()),
        })
    }
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The annotation prefix a pool selects nodes by.
pub(crate) const NODE_SELECTOR_PREFIX: &str = "nodes.paddock.dev/";

/// The node labels a pool asks for.
pub(crate) fn selector(pool: &NodePool) -> BTreeMap<String, String> {
    pool.annotations
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(NODE_SELECTOR_PREFIX)?.to_owned(), v.clone())))
        .collect()
}

/// A machine ranks are on.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// `None`: this machine, alone (no nodes share its store).
    pub node: Option<NodeId>,
    /// One CPU rank each.
    pub cpus: u32,
    /// Its GPUs (the N of `/dev/nvidiaN`), one GPU rank each.
    pub gpus: Vec<u32>,
    pub labels: BTreeMap<String, String>,
}

/// The machines ranks are on, as read for one decision.
#[derive(Debug, Clone)]
pub(crate) struct Hosts(pub Vec<Host>);

impl Hosts {
    /// The hosts `pool` selects.
    fn of<'h>(&'h self, pool: &NodePool) -> impl Iterator<Item = &'h Host> {
        let wanted = selector(pool);
        self.0
            .iter()
            .filter(move |h| wanted.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
    }

    pub fn have_gpus(&self) -> bool {
        self.0.iter().any(|h| !h.gpus.is_empty())
    }

    /// CPU ranks on every host.
    pub fn cpus(&self) -> u32 {
        self.0.iter().map(|h| h.cpus).fold(0, u32::saturating_add)
    }
}

/// Where a holder's ranks are: the node its sandbox must run on (for
/// GPUs; `None`: wherever placement puts it) and the GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Placed {
    pub node: Option<NodeId>,
    pub gpus: Vec<u32>,
}

impl Gateway {
    /// The hosts ranks are on now: this machine, or every live node.
    pub(crate) async fn hosts(&self) -> Result<Hosts, CoreError> {
        Ok(Hosts(match self.core.vms().cluster_nodes().await? {
            None => vec![Host {
                node: None,
                cpus: self.config.cpu_nodes,
                gpus: self.config.gpus.clone(),
                labels: BTreeMap::new(),
            }],
            Some(nodes) => nodes
                .into_iter()
                .map(|n| Host {
                    node: Some(n.id),
                    cpus: n.vcpus,
                    gpus: n.gpus,
                    labels: n.labels,
                })
                .collect(),
        }))
    }

    /// Nodes and ranks per node of a pool.
    pub(crate) fn pool_shape(&self, pool: &NodePool, hosts: &Hosts) -> (u32, u32) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match (&pool.backend, pool.rank_kind()) {
            (NodePoolBackend::Eks(_), _) => (0, 0),
            (_, RankKind::Gpu) => {
                let with_gpus: Vec<&Host> = hosts.of(pool).filter(|h| !h.gpus.is_empty()).collect();
                let most = with_gpus.iter().map(|h| h.gpus.len()).max().unwrap_or(0);
                (count(with_gpus.len()), count(most))
            }
            (NodePoolBackend::Fake(f), RankKind::Cpu) => {
                if pool.id == HOST_CPU_POOL_ID {
                    let cpus = hosts.of(pool).map(|h| h.cpus).fold(0, u32::saturating_add);
                    return (cpus, 1);
                }
                // A pool whose selector no node matches has no ranks.
                if hosts.of(pool).next().is_none() {
                    return (0, 1);
                }
                let max = u32::try_from(pool.max_node_count.max(0)).unwrap_or(0);
                let asked = u32::try_from(f.num_nodes.max(0)).unwrap_or(0);
                (if asked == 0 { max } else { asked.min(max) }, 1)
            }
        }
    }

    pub(crate) fn pool_capacity(&self, pool: &NodePool, hosts: &Hosts) -> u32 {
        if pool.rank_kind() == RankKind::Gpu && !matches!(pool.backend, NodePoolBackend::Eks(_)) {
            let gpus = hosts.of(pool).map(|h| h.gpus.len()).sum::<usize>();
            return u32::try_from(gpus).unwrap_or(u32::MAX);
        }
        let (nodes, per_node) = self.pool_shape(pool, hosts);
        nodes.saturating_mul(per_node)
    }

    /// Every environment's holding on this host, in every account.
    pub(crate) async fn environment_holdings(&self) -> Result<Vec<Holding>, CoreError> {
        Ok(self
            .docs
            .load_all::<Environment>(None)
            .await?
            .iter()
            .filter_map(Holding::of_environment)
            .collect())
    }

    /// Every holding on this host, in every account.
    pub(crate) async fn holdings(&self) -> Result<Vec<Holding>, CoreError> {
        let mut out = self.environment_holdings().await?;
        let jobs = self.docs.load_all::<BatchJob>(None).await?;
        out.extend(jobs.iter().filter_map(Holding::of_job));
        Ok(out)
    }

    /// A pool's shape and what `holdings` hold on it.
    fn stats_of(&self, pool: &NodePool, holdings: &[Holding], hosts: &Hosts) -> NodePoolStats {
        let (nodes, per_node) = self.pool_shape(pool, hosts);
        let mut stats = NodePoolStats {
            node_count: clamp_i32(nodes),
            ranks_per_node: clamp_i32(per_node),
            ..NodePoolStats::default()
        };
        for h in holdings {
            if h.account_id != pool.account_id || h.pool_id != pool.id {
                continue;
            }
            let ranks = clamp_i32(h.ranks);
            match h.job_state {
                None => {
                    stats.environment_count += 1;
                    stats.environment_ranks += ranks;
                }
                Some(state) => {
                    *stats.batch_job_count.entry(state.to_owned()).or_default() += 1;
                    *stats.batch_job_ranks.entry(state.to_owned()).or_default() += ranks;
                }
            }
        }
        stats
    }

    pub async fn node_pool_stats(&self, pool: &NodePool) -> Result<NodePoolStats, CoreError> {
        Ok(self.stats_of(pool, &self.holdings().await?, &self.hosts().await?))
    }

    /// The account's pools with their statistics, from one reading of the
    /// holdings.
    pub async fn list_node_pools_with_stats(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(NodePool, NodePoolStats)>, CoreError> {
        let holdings = self.holdings().await?;
        let hosts = self.hosts().await?;
        Ok(self
            .list_node_pools(account)
            .await?
            .into_iter()
            .map(|p| {
                let stats = self.stats_of(&p, &holdings, &hosts);
                (p, stats)
            })
            .collect())
    }

    /// Takes the placement lock: hold it from [`Service::place`] until the
    /// holder's record is saved. It is the store's, so processes sharing
    /// a store place one at a time too.
    pub(crate) async fn placement_lock(
        &self,
    ) -> Result<paddock_core::documents::DocumentLock, CoreError> {
        self.docs.lock_key("gateway/placement").await
    }

    /// Finds `ranks` free ranks on `pool` for a holder (whose own current
    /// holding, if any, counts as free), and the GPUs they are on a GPU
    /// pool, on `pinned`'s node when it is set (the holder's home volume
    /// is there), among `hosts` as the caller read them. `Ok(None)`: they
    /// are not free now. Call under [`Gateway::placement_lock`].
    pub(crate) async fn place(
        &self,
        pool: &NodePool,
        ranks: u32,
        holder: &str,
        pinned: Option<&NodeId>,
        hosts: &Hosts,
    ) -> Result<Option<Placed>, CoreError> {
        Ok(self.place_among(pool, ranks, holder, pinned, &self.holdings().await?, hosts))
    }

    /// [`Gateway::place`] over holdings and hosts already read (the
    /// scheduler reads them once per pass and adds each job it places).
    pub(crate) fn place_among(
        &self,
        pool: &NodePool,
        ranks: u32,
        holder: &str,
        pinned: Option<&NodeId>,
        holdings: &[Holding],
        hosts: &Hosts,
    ) -> Option<Placed> {
        let others = || {
            holdings
                .iter()
                .filter(move |h| h.holder != holder || h.account_id != pool.account_id)
        };
        let used: u32 = others()
            .filter(|h| h.account_id == pool.account_id && h.pool_id == pool.id)
            .map(|h| h.ranks)
            .sum();
        if used.saturating_add(ranks) > self.pool_capacity(pool, hosts) {
            return None;
        }
        if pool.rank_kind() == RankKind::Cpu {
            return Some(Placed::default());
        }
        // GPUs are physical: any pool, of any account, may hold one. The
        // fullest node that still fits takes them.
        hosts
            .of(pool)
            .filter(|h| pinned.is_none() || h.node.as_ref() == pinned)
            .filter_map(|h| {
                let taken: BTreeSet<u32> = others()
                    .filter(|o| o.node == h.node)
                    .flat_map(|o| o.gpus.iter().copied())
                    .collect();
                let free: Vec<u32> = h
                    .gpus
                    .iter()
                    .copied()
                    .filter(|g| !taken.contains(g))
                    .collect();
                (free.len() >= ranks as usize).then_some((free, h))
            })
            .min_by_key(|(free, _)| free.len())
            .map(|(free, h)| Placed {
                node: h.node.clone(),
                gpus: free.into_iter().take(ranks as usize).collect(),
            })
    }

    /// Whether a pool could ever hold `ranks`.
    pub(crate) fn check_fits(
        &self,
        pool: &NodePool,
        ranks: u32,
        hosts: &Hosts,
    ) -> Result<(), CoreError> {
        let capacity = self.pool_capacity(pool, hosts);
        if ranks > capacity {
            return Err(CoreError::ResourceExhausted(format!(
                "node pool {:?} has {capacity} ranks in all; {ranks} asked",
                pool.id
            )));
        }
        Ok(())
    }
}
