//! Ranks: what a pool offers and who holds them. Holdings are not kept
//! apart from the resources: an environment holds its connection's ranks
//! while connected (or on its way in or out), a batch job while it is
//! pending or running, so the records are the ledger and a restart loses
//! nothing. Placement runs under one lock, the store's, so two placements
//! (of this process or another sharing the store) never see the same free
//! ranks.

use std::collections::BTreeSet;

use crate::Gateway;
use paddock_core::error::CoreError;
use paddock_core::ids::AccountId;
use paddock_core::model::gateway::{
    BatchJob, Environment, NodePool, NodePoolBackend, NodePoolStats, RankKind,
};

use crate::node_pools::{HOST_CPU_POOL_ID, HOST_GPU_POOL_ID};

/// Who holds ranks on a pool.
#[derive(Debug, Clone)]
pub(crate) struct Holding {
    pub account_id: AccountId,
    pub pool_id: String,
    pub ranks: u32,
    pub gpus: Vec<u32>,
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
            holder: format!("batch_job/{}", job.id),
            job_state: Some(job.state.as_str()),
        })
    }
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Gateway {
    /// Nodes and ranks per node of a pool on this host.
    pub(crate) fn pool_shape(&self, pool: &NodePool) -> (u32, u32) {
        let gpus = u32::try_from(self.config.gpus.len()).unwrap_or(u32::MAX);
        match (&pool.backend, pool.rank_kind()) {
            (NodePoolBackend::Eks(_), _) => (0, 0),
            (_, RankKind::Gpu) => (u32::from(gpus > 0), gpus),
            (NodePoolBackend::Fake(f), RankKind::Cpu) => {
                if pool.id == HOST_CPU_POOL_ID {
                    return (self.config.cpu_nodes, 1);
                }
                let max = u32::try_from(pool.max_node_count.max(0)).unwrap_or(0);
                let asked = u32::try_from(f.num_nodes.max(0)).unwrap_or(0);
                (if asked == 0 { max } else { asked.min(max) }, 1)
            }
        }
    }

    pub(crate) fn pool_capacity(&self, pool: &NodePool) -> u32 {
        let (nodes, per_node) = self.pool_shape(pool);
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
    fn stats_of(&self, pool: &NodePool, holdings: &[Holding]) -> NodePoolStats {
        let (nodes, per_node) = self.pool_shape(pool);
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
        Ok(self.stats_of(pool, &self.holdings().await?))
    }

    /// The account's pools with their statistics, from one reading of the
    /// holdings.
    pub async fn list_node_pools_with_stats(
        &self,
        account: &AccountId,
    ) -> Result<Vec<(NodePool, NodePoolStats)>, CoreError> {
        let holdings = self.holdings().await?;
        Ok(self
            .list_node_pools(account)
            .await?
            .into_iter()
            .map(|p| {
                let stats = self.stats_of(&p, &holdings);
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
    /// pool. `Ok(None)`: they are not free now. Call under
    /// [`Service::placement_lock`].
    pub(crate) async fn place(
        &self,
        pool: &NodePool,
        ranks: u32,
        holder: &str,
    ) -> Result<Option<Vec<u32>>, CoreError> {
        Ok(self.place_among(pool, ranks, holder, &self.holdings().await?))
    }

    /// [`Service::place`] over holdings already read (the scheduler reads
    /// them once per pass and adds each job it places).
    pub(crate) fn place_among(
        &self,
        pool: &NodePool,
        ranks: u32,
        holder: &str,
        holdings: &[Holding],
    ) -> Option<Vec<u32>> {
        let others = || {
            holdings
                .iter()
                .filter(move |h| h.holder != holder || h.account_id != pool.account_id)
        };
        let used: u32 = others()
            .filter(|h| h.account_id == pool.account_id && h.pool_id == pool.id)
            .map(|h| h.ranks)
            .sum();
        if used.saturating_add(ranks) > self.pool_capacity(pool) {
            return None;
        }
        if pool.rank_kind() == RankKind::Cpu {
            return Some(Vec::new());
        }
        // GPUs are physical: any pool, of any account, may hold one.
        let taken: BTreeSet<u32> = others().flat_map(|h| h.gpus.iter().copied()).collect();
        let free: Vec<u32> = self
            .config
            .gpus
            .iter()
            .copied()
            .filter(|g| !taken.contains(g))
            .take(ranks as usize)
            .collect();
        (free.len() == ranks as usize).then_some(free)
    }

    /// Whether a pool could ever hold `ranks`.
    pub(crate) fn check_fits(&self, pool: &NodePool, ranks: u32) -> Result<(), CoreError> {
        let capacity = self.pool_capacity(pool);
        if ranks > capacity {
            return Err(CoreError::ResourceExhausted(format!(
                "node pool {:?} has {capacity} ranks in all; {ranks} asked",
                pool.id
            )));
        }
        Ok(())
    }

    /// The id of the built-in GPU pool, when this host has GPUs.
    pub(crate) fn host_gpu_pool(&self) -> Option<&'static str> {
        (!self.config.gpus.is_empty()).then_some(HOST_GPU_POOL_ID)
    }
}
