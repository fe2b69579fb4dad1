//! Per-account quotas, set by the operator by default and per account:
//! what one account may hold at once (VMs, memory, vCPUs) and how fast it
//! may call. Capacity is checked when a VM is created, under a lock per
//! account held until the VM's row exists, in this process and in every
//! other sharing the store, so two racing creates cannot both slip under
//! a cap. Rates are a token bucket per account, spent when a key is
//! authenticated, so every surface and the SSH gateway share it; one
//! bucket for every process sharing the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::error::CoreError;
use crate::ids::AccountId;
use crate::keyed_locks::KeyedLocks;

/// One account's limits; none (`null`): no limit.
// Read from config, where an account's own quota leaves out what it takes
// from the default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = QuotaLimits))]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// VMs that hold host resources at once (creating, running, stopping).
    pub max_vms: Option<u64>,
    /// Their memory together.
    pub max_memory_mb: Option<u64>,
    /// Their vCPUs together.
    pub max_vcpus: Option<u64>,
    /// The sizes of the account's volumes together.
    pub max_volume_mb: Option<u64>,
    /// The sizes of its snapshots together; one at or past it cannot take
    /// another (a snapshot's size is known once taken).
    pub max_snapshot_mb: Option<u64>,
    /// Image builds running at once.
    pub max_image_builds: Option<u64>,
    /// Authenticated requests per second, sustained.
    pub requests_per_second: Option<u32>,
    /// Requests above the rate a client may make in a burst.
    pub burst: Option<u32>,
}

impl Quota {
    /// The token bucket of its request rate: tokens a second and how many
    /// it holds (the rate and the burst); `None` without a rate.
    pub fn request_bucket(&self) -> Option<(u32, f64)> {
        let rate = self.requests_per_second.filter(|r| *r > 0)?;
        Some((rate, f64::from(rate) + f64::from(self.burst.unwrap_or(0))))
    }
}

/// How many tokens a process takes from a bucket of `capacity` it shares
/// with others at once: a sixteenth of it, so a busy account costs the
/// store one write per that many requests, and the tokens one process
/// holds unspent (which no other can spend) are a sixteenth of the
/// bucket at most.
pub fn shared_take(capacity: f64) -> u32 {
    ((capacity / 16.0).floor() as u32).max(1)
}

/// How long a bucket holding `tokens` takes to hold one at `rate` a
/// second.
pub fn wait_for_a_token(tokens: f64, rate: u32) -> Duration {
    Duration::from_secs_f64(((1.0 - tokens) / f64::from(rate.max(1))).max(0.0))
}

/// What an account holds now, against its capacity limits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = QuotaUsage))]
pub struct Usage {
    pub vms: u64,
    pub memory_mb: u64,
    pub vcpus: u64,
    // These three are filled by `Service::quota_and_usage`; the store's VM
    // usage leaves them 0.
    /// The sizes of its volumes together.
    pub volume_mb: u64,
    pub snapshot_mb: u64,
    pub image_builds: u64,
}

/// A token bucket: `tokens` as of `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Quotas {
    default: Quota,
    /// By account id or name, as the operator wrote them.
    per_account: HashMap<String, Quota>,
    buckets: Mutex<HashMap<AccountId, Bucket>>,
    /// Tokens this process took from a bucket it shares with other
    /// processes (the store's) ahead of its requests.
    taken: Mutex<HashMap<AccountId, u32>>,
    creates: KeyedLocks<AccountId>,
    /// Image builds running, per account.
    builds: Arc<Mutex<HashMap<AccountId, u64>>>,
    /// Quotas resolved through an account's name, kept: every request
    /// needs its account's quota, and names do not change.
    by_name: Mutex<HashMap<AccountId, Quota>>,
}

/// One running image build of an account; its place is freed on drop.
pub struct BuildSlot {
    builds: Arc<Mutex<HashMap<AccountId, u64>>>,
    account: AccountId,
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = builds.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                builds.remove(&self.account);
            }
        }
    }
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("default", &self.default)
            .field("per_account", &self.per_account)
            .finish_non_exhaustive()
    }
}

impl Quotas {
    pub fn new(default: Quota, per_account: HashMap<String, Quota>) -> Self {
        Self {
            default,
            per_account,
            buckets: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
            creates: KeyedLocks::default(),
            builds: Arc::new(Mutex::new(HashMap::new())),
            by_name: Mutex::new(HashMap::new()),
        }
    }

    /// No limits at all (key management, tests).
    pub fn unlimited() -> Self {
        Self::new(Quota::default(), HashMap::new())
    }

    /// The account's quota: its own (by id, then by name), else the default.
    pub fn quota_of(&self, account: &AccountId, name: Option<&str>) -> Quota {
        self.per_account
            .get(account.as_str())
            .or_else(|| name.and_then(|n| self.per_account.get(n)))
            .copied()
            .unwrap_or(self.default)
    }

    /// Whether some account's quota is set by name, so that resolving one
    /// needs the account's name.
    pub fn names_matter(&self) -> bool {
        self.per_account.keys().any(|k| !k.starts_with("acct_"))
    }

    /// The quota an earlier [`Quotas::remember`] kept for the account.
    pub fn remembered(&self, account: &AccountId) -> Option<Quota> {
        let by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name.get(account).copied()
    }

    /// Keeps the account's quota as resolved through its name.
    pub fn remember(&self, account: &AccountId, quota: Quota) {
        let mut by_name = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        by_name.insert(account.clone(), quota);
    }

    /// Spends one request of the account's rate from this process's own
    /// bucket; a 429 with the wait when none is left.
    pub fn admit_request(&self, account: &AccountId, quota: &Quota) -> Result<(), CoreError> {
        let Some((rate, capacity)) = quota.request_bucket() else {
            return Ok(());
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(account.clone()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * f64::from(rate);
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(CoreError::RateLimited {
            retry_after: wait_for_a_token(bucket.tokens, rate),
        })
    }

    /// Spends a token this process took ahead from a shared bucket;
    /// false when it holds none for the account.
    pub fn spend_taken(&self, account: &AccountId) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        match taken.get_mut(account) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps `n` tokens taken from a shared bucket for the account's next
    /// requests.
    pub fn keep_taken(&self, account: &AccountId, n: u32) {
        if n == 0 {
            return;
        }
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        *taken.entry(account.clone()).or_default() += n;
    }

    /// This process's part of [`crate::accounts::Accounts::lock_creates`]:
    /// held from a capacity check until what it admitted is recorded (a
    /// VM, a volume, a snapshot).
    pub async fn lock_creates(&self, account: &AccountId) -> OwnedMutexGuard<()> {
        self.creates.lock(account).await
    }

    /// A place for one more image build of the account, or a 403 naming
    /// `max_image_builds`.
    pub fn start_build(&self, account: &AccountId, quota: &Quota) -> Result<BuildSlot, CoreError> {
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        let running = builds.get(account).copied().unwrap_or(0);
        if let Some(limit) = quota.max_image_builds.filter(|l| running >= *l) {
            return Err(CoreError::PermissionDenied(format!(
                "quota max_image_builds exceeded: the account runs {running} of {limit} image builds"
            )));
        }
        builds.insert(account.clone(), running + 1);
        Ok(BuildSlot {
            builds: Arc::clone(&self.builds),
            account: account.clone(),
        })
    }

    /// Image builds the account runs now.
    pub fn builds_running(&self, account: &AccountId) -> u64 {
        let builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        builds.get(account).copied().unwrap_or(0)
    }
}

/// `bytes` in MiB, rounded up: what stored-size quotas count in.
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1024 * 1024)
}

/// Refuses `asked` more of a stored size (volumes, snapshots: MiB) that
/// would take the account past `limit`, naming the quota.
pub fn check_stored(
    name: &str,
    limit: Option<u64>,
    used_mb: u64,
    asked_mb: u64,
) -> Result<(), CoreError> {
    match limit.filter(|l| used_mb.saturating_add(asked_mb) > *l) {
        Some(l) => Err(CoreError::PermissionDenied(format!(
            "quota {name} exceeded: the account holds {used_mb} MiB of {l} MiB and this asks for {asked_mb} MiB more"
        ))),
        None => Ok(()),
    }
}

/// Refuses a VM of `memory_mb` and `vcpus` that would take the account
/// past a limit, naming the quota, what is used and what was asked.
pub fn check_room(
    quota: &Quota,
    usage: &Usage,
    memory_mb: u64,
    vcpus: u64,
) -> Result<(), CoreError> {
    let over = |name: &str, limit: Option<u64>, used: u64, asked: u64, unit: &str| {
        limit
            .filter(|l| used.saturating_add(asked) > *l)
            .map(|l| {
                CoreError::PermissionDenied(format!(
                    "quota {name} exceeded: the account holds {used}{unit} of {l}{unit} and this asks for {asked}{unit} more"
                ))
            })
    };
    let refusal = over("max_vms", quota.max_vms, usage.vms, 1, "")
        .or_else(|| {
            over(
                "max_memory_mb",
                quota.max_memory_mb,
                usage.memory_mb,
                memory_mb,
                " MiB",
            )
        })
        .or_else(|| over("max_vcpus", quota.max_vcpus, usage.vcpus, vcpus, " vCPUs"));
    match refusal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> AccountId {
        AccountId::generate()
    }

    #[test]
    fn the_accounts_own_quota_wins_by_id_then_name() {
        let by_name = Quota {
            max_vms: Some(2),
            ..Quota::default()
        };
        let by_id = Quota {
            max_vms: Some(3),
            ..Quota::default()
        };
        let a = id();
        let q = Quotas::new(
            Quota {
                max_vms: Some(1),
                ..Quota::default()
            },
            HashMap::from([("team".to_owned(), by_name), (a.to_string(), by_id)]),
        );
        assert_eq!(q.quota_of(&a, Some("team")), by_id);
        assert_eq!(q.quota_of(&id(), Some("team")), by_name);
        assert_eq!(q.quota_of(&id(), None).max_vms, Some(1));
        assert!(q.names_matter());
    }

    #[test]
    fn capacity_names_the_quota_it_would_pass() {
        let quota = Quota {
            max_vms: Some(3),
            max_memory_mb: Some(1024),
            ..Quota::default()
        };
        let usage = Usage {
            vms: 2,
            memory_mb: 768,
            vcpus: 2,
            ..Usage::default()
        };
        assert!(check_room(&quota, &usage, 256, 1).is_ok());
        let e = check_room(&quota, &usage, 512, 1).expect_err("over memory");
        assert!(e.to_string().contains("max_memory_mb"), "{e}");
        assert!(e.to_string().contains("768 MiB of 1024 MiB"), "{e}");
        let full = Usage { vms: 3, ..usage };
        let e = check_room(&quota, &full, 1, 1).expect_err("over count");
        assert!(e.to_string().contains("max_vms"), "{e}");
    }

    #[test]
    fn tokens_taken_ahead_are_spent_once_each_by_their_account() {
        let q = Quotas::unlimited();
        let (a, b) = (AccountId::generate(), AccountId::generate());
        q.keep_taken(&a, 2);
        assert!(q.spend_taken(&a));
        assert!(!q.spend_taken(&b));
        assert!(q.spend_taken(&a));
        assert!(!q.spend_taken(&a));
        assert_eq!(shared_take(4.0), 1);
        assert_eq!(shared_take(1500.0), 93);
    }

    #[test]
    fn the_rate_allows_a_burst_then_refuses_with_the_wait() {
        let q = Quotas::unlimited();
        let quota = Quota {
            requests_per_second: Some(10),
            burst: Some(5),
            ..Quota::default()
        };
        let a = id();
        for _ in 0..15 {
            q.admit_request(&a, &quota).expect("within rate and burst");
        }
        match q.admit_request(&a, &quota) {
            Err(CoreError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(q.admit_request(&id(), &quota).is_ok(), "per account");
    }
}
