//! A small bounded map shared by readers, for the per-snapshot caches.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::RwLock;

/// Most entries one cache holds; when full it starts over (cheaper than tracking recency,
/// and a snapshot's working set is far smaller in practice).
pub const CACHE_CAPACITY: usize = 4096;

#[derive(Debug)]
pub(crate) struct BoundedCache<K, V>(RwLock<HashMap<K, Arc<V>>>);

impl<K: Hash + Eq, V> Default for BoundedCache<K, V> {
    fn default() -> Self {
        BoundedCache(RwLock::new(HashMap::new()))
    }
}

impl<K: Hash + Eq, V> BoundedCache<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.read().get(key).cloned()
    }

    pub fn insert(&self, key: K, value: Arc<V>) {
        let mut map = self.0.write();
        if map.len() >= CACHE_CAPACITY {
            map.clear();
        }
        map.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.0.read().len()
    }
}
