//! A least-recently-used cache bounded by the bytes its values hold (the `lru` crate keeps the
//! order; this keeps the count of bytes). Not synchronised: its owners put it behind a lock.

use lru::LruCache;
use std::hash::Hash;
use std::sync::Arc;

/// Heap bytes a cached value holds, as counted against the cache's budget.
pub trait Weigh {
    fn weight(&self) -> u64;
}

impl Weigh for Vec<u8> {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

impl<T: Weigh> Weigh for Arc<T> {
    fn weight(&self) -> u64 {
        T::weight(self)
    }
}

/// Values by key, at most `budget` bytes of them: inserting past it drops the least recently
/// used; a value larger than the whole budget is not kept.
pub struct ByteLru<K: Hash + Eq, V: Weigh> {
    lru: LruCache<K, V>,
    bytes: u64,
    budget: u64,
}

impl<K: Hash + Eq, V: Weigh> ByteLru<K, V> {
    pub fn new(budget: u64) -> Self {
        ByteLru {
            lru: LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    /// Keeps `value` under `key` (in place of what was there) as the most recently used, then
    /// drops the least recently used values until the cache is within its budget.
    pub fn insert(&mut self, key: K, value: V) {
        let size = value.weight();
        if size > self.budget {
            self.remove(&key);
            return;
        }
        if let Some(old) = self.lru.put(key, value) {
            self.bytes -= old.weight();
        }
        self.bytes += size;
        while self.bytes > self.budget {
            match self.lru.pop_lru() {
                Some((_, v)) => self.bytes -= v.weight(),
                None => break,
            }
        }
    }

    /// The value under `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.lru.get(key)
    }

    /// Whether `key` is cached (without making it the most recently used).
    pub fn contains(&self, key: &K) -> bool {
        self.lru.contains(key)
    }

    /// Takes the value under `key` out of the cache.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let v = self.lru.pop(key)?;
        self.bytes -= v.weight();
        Some(v)
    }

    /// Bytes the cached values hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_drops_the_least_recently_used() {
        let mut c: ByteLru<u32, Vec<u8>> = ByteLru::new(1000);
        for i in 0..50 {
            c.insert(i, vec![0; 300]);
            assert!(c.bytes() <= 1000);
        }
        assert_eq!(c.len(), 3);
        assert!(c.contains(&49) && c.contains(&47) && !c.contains(&46));
        // A hit is kept over what was used before it.
        assert!(c.get(&47).is_some());
        c.insert(50, vec![0; 300]);
        assert!(c.contains(&47) && !c.contains(&48));
        // Replacing a value counts its new size only.
        c.insert(47, vec![0; 100]);
        assert_eq!(c.bytes(), 700);
        assert_eq!(c.remove(&47).map(|v| v.len()), Some(100));
        assert_eq!(c.bytes(), 600);
        // A value over the whole budget is not kept, and does not push the others out.
        c.insert(7, vec![0; 1001]);
        assert!(!c.contains(&7));
        assert_eq!(c.len(), 2);
        assert_eq!(c.bytes(), 600);
    }
}
