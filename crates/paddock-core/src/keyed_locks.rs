//! Async locks by key: one mutex per key (a VM, a gateway resource, a blob
//! digest), made on first use and dropped once nobody holds or awaits it,
//! so the map never grows past the keys in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<AsyncMutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for `key`'s lock; it is held until the guard drops.
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            // A held or awaited lock has a clone outside the map.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_unused_keys_go() {
        let locks = KeyedLocks::<String>::default();
        let a = locks.lock(&"a".to_owned()).await;
        // Another key is free while `a` is held.
        let b = locks.lock(&"b".to_owned()).await;
        drop(b);
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            locks.lock(&"a".to_owned()),
        )
        .await;
        assert!(waiting.is_err(), "a second holder of a");
        drop(a);
        let _again = locks.lock(&"a".to_owned()).await;
        let len = locks.locks.lock().map(|m| m.len()).unwrap_or_default();
        assert_eq!(len, 1, "b was dropped from the map");
    }
}
