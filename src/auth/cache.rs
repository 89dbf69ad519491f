//! A per-shard cache whose entries expire after a fixed validity (Cassandra's roles_validity
//! and permissions_validity): within it a check reads no table; after it the next check reads
//! the table again. Bounded: at most `capacity` entries. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct ExpiringCache<V> {
    entries: HashMap<String, (Instant, V)>,
    validity: Duration,
    capacity: usize,
}

impl<V: Clone> ExpiringCache<V> {
    pub fn new(validity: Duration, capacity: usize) -> ExpiringCache<V> {
        ExpiringCache { entries: HashMap::new(), validity, capacity: capacity.max(1) }
    }

    /// The entry of `key` if it was stored less than the validity before `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<V> {
        let (at, value) = self.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.validity).then(|| value.clone())
    }

    /// Stores `value` as of `now`. When full, expired entries go first, then everything (a
    /// burst of distinct roles costs table reads, never memory).
    pub fn insert(&mut self, key: &str, value: V, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            let validity = self.validity;
            self.entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < validity);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        self.entries.insert(key.to_owned(), (now, value));
    }

    /// Forgets everything: after a change made on this shard, its next checks read the tables.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_validity_and_the_size_is_bounded() {
        let t0 = Instant::now();
        let mut cache = ExpiringCache::new(Duration::from_secs(2), 2);
        cache.insert("a", 1, t0);
        assert_eq!(cache.get("a", t0 + Duration::from_secs(1)), Some(1));
        assert_eq!(cache.get("a", t0 + Duration::from_secs(2)), None, "expired at the validity");
        cache.insert("b", 2, t0 + Duration::from_secs(3));
        cache.insert("c", 3, t0 + Duration::from_secs(3));
        assert_eq!(cache.len(), 2, "the expired entry made room");
        cache.insert("d", 4, t0 + Duration::from_secs(3));
        assert!(cache.len() <= 2);
        assert_eq!(cache.get("d", t0 + Duration::from_secs(3)), Some(4));
        cache.clear();
        assert!(cache.is_empty());
    }
}
