//! The shard's cache of verified data blocks, shared by every SSTable of the shard (O_DIRECT
//! bypasses the kernel's page cache, so this is the read path's only cache). Keyed by (SSTable
//! id, block offset), bounded by a byte budget, evicted with CLOCK. It holds only blocks whose
//! checksum and structure were verified, so a hit is trusted without re-checking; it never holds
//! more than its budget, and it is never shared across shards (`Rc`, `RefCell`, no locks).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::format::DataBlock;
use super::SstableId;

/// Bytes charged per cached block on top of its payload (map entry, slot, `Rc` header).
pub const CACHE_ENTRY_OVERHEAD: usize = 96;

/// Counters since the cache was created, and its current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Bytes charged for the blocks held (never above the budget).
    pub bytes: usize,
    pub entries: usize,
}

type Key = (SstableId, u64);

struct Slot {
    key: Key,
    block: Rc<DataBlock>,
    charge: usize,
    /// CLOCK's reference bit: set by a hit, cleared when the hand passes.
    referenced: bool,
}

struct Inner {
    budget: usize,
    bytes: usize,
    map: HashMap<Key, usize, ahash::RandomState>,
    /// Slot storage; `None` slots are on `free`. Bounded by budget / CACHE_ENTRY_OVERHEAD live
    /// slots plus the free ones, which are reused first.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    stats: CacheStats,
}

/// A per-shard block cache (create one per shard with [`BlockCache::new`]).
pub struct BlockCache {
    inner: RefCell<Inner>,
}

impl BlockCache {
    /// A cache holding at most `budget_bytes` (0 disables caching).
    pub fn new(budget_bytes: usize) -> Rc<BlockCache> {
        Rc::new(BlockCache {
            inner: RefCell::new(Inner {
                budget: budget_bytes,
                bytes: 0,
                map: HashMap::default(),
                slots: Vec::new(),
                free: Vec::new(),
                hand: 0,
                stats: CacheStats::default(),
            }),
        })
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.borrow();
        CacheStats { bytes: inner.bytes, entries: inner.map.len(), ..inner.stats }
    }

    pub fn budget(&self) -> usize {
        self.inner.borrow().budget
    }

    /// Drops every block of SSTable `id` (call when the file is deleted, so its blocks do not
    /// wait for eviction). Linear in the number of cached blocks.
    pub fn forget_sstable(&self, id: SstableId) {
        let mut inner = self.inner.borrow_mut();
        let victims: Vec<usize> = inner.map.iter().filter(|((sst, _), _)| *sst == id).map(|(_, slot)| *slot).collect();
        for slot in victims {
            inner.remove_slot(slot);
        }
    }

    /// The cached block at `offset` of SSTable `id`, counting a hit or a miss.
    pub(crate) fn get(&self, id: SstableId, offset: u64) -> Option<Rc<DataBlock>> {
        let mut inner = self.inner.borrow_mut();
        let found = inner.map.get(&(id, offset)).copied();
        match found.and_then(|i| inner.slots[i].as_mut()) {
            Some(slot) => {
                slot.referenced = true;
                let block = slot.block.clone();
                inner.stats.hits += 1;
                Some(block)
            }
            None => {
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Caches a verified block of SSTable `id`, evicting others as needed. A block larger than
    /// the whole budget is not cached. It enters unreferenced, so blocks read once (scans) are
    /// the first to go and do not push out blocks that were hit.
    pub(crate) fn insert(&self, id: SstableId, block: Rc<DataBlock>) {
        let mut inner = self.inner.borrow_mut();
        let key = (id, block.offset);
        let charge = block.memory() + CACHE_ENTRY_OVERHEAD;
        if charge > inner.budget || inner.map.contains_key(&key) {
            return;
        }
        while inner.bytes + charge > inner.budget {
            if !inner.evict_one() {
                return;
            }
        }
        let slot = Slot { key, block, charge, referenced: false };
        let index = match inner.free.pop() {
            Some(i) => {
                inner.slots[i] = Some(slot);
                i
            }
            None => {
                inner.slots.push(Some(slot));
                inner.slots.len() - 1
            }
        };
        inner.map.insert(key, index);
        inner.bytes += charge;
    }
}

impl Inner {
    fn remove_slot(&mut self, index: usize) {
        if let Some(slot) = self.slots[index].take() {
            self.map.remove(&slot.key);
            self.bytes -= slot.charge;
            self.free.push(index);
        }
    }

    /// Evicts one block with CLOCK: the hand clears reference bits until it finds a block
    /// without one. Two sweeps always suffice (the first clears every bit).
    fn evict_one(&mut self) -> bool {
        let len = self.slots.len();
        if self.map.is_empty() || len == 0 {
            return false;
        }
        for _ in 0..2 * len {
            let i = self.hand % len;
            self.hand = (i + 1) % len;
            match self.slots[i].as_mut() {
                None => {}
                Some(slot) if slot.referenced => slot.referenced = false,
                Some(_) => {
                    self.remove_slot(i);
                    self.stats.evictions += 1;
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block whose memory is `len` bytes.
    fn block(offset: u64, len: usize) -> Rc<DataBlock> {
        Rc::new(DataBlock::unverified_for_tests(offset, len - BLOCK_OVERHEAD))
    }

    const BLOCK_OVERHEAD: usize = crate::sstable::format::BLOCK_HEADER_LEN + crate::sstable::format::CRC_LEN;

    #[test]
    fn budget_is_respected_and_hit_blocks_survive_eviction() {
        let charge = 1000 + CACHE_ENTRY_OVERHEAD;
        let cache = BlockCache::new(4 * charge);
        for i in 0..4 {
            cache.insert(1, block(i * 1000, 1000));
        }
        assert_eq!(cache.stats().entries, 4);
        // Block 0 is hot.
        assert!(cache.get(1, 0).is_some());
        for i in 4..20 {
            cache.insert(1, block(i * 1000, 1000));
            let s = cache.stats();
            assert!(s.bytes <= 4 * charge, "{s:?}");
            // Keep block 0 hot.
            assert!(cache.get(1, 0).is_some(), "hot block evicted at {i}");
        }
        let s = cache.stats();
        assert_eq!(s.evictions, 16);
        assert_eq!(s.entries, 4);
        assert!(cache.get(1, 1000).is_none());
    }

    #[test]
    fn oversized_blocks_are_not_cached_and_zero_budget_disables() {
        let cache = BlockCache::new(500);
        cache.insert(1, block(0, 1000));
        assert_eq!(cache.stats().entries, 0);
        let off = BlockCache::new(0);
        off.insert(1, block(0, 20));
        assert!(off.get(1, 0).is_none());
    }

    #[test]
    fn forget_drops_only_that_sstable() {
        let cache = BlockCache::new(1 << 20);
        cache.insert(1, block(0, 20));
        cache.insert(2, block(0, 20));
        cache.insert(1, block(20, 20));
        cache.forget_sstable(1);
        let s = cache.stats();
        assert_eq!(s.entries, 1);
        assert_eq!(s.bytes, 20 + CACHE_ENTRY_OVERHEAD);
        assert!(cache.get(2, 0).is_some());
        assert!(cache.get(1, 0).is_none());
        // Freed slots are reused.
        cache.insert(3, block(0, 20));
        assert_eq!(cache.inner.borrow().slots.len(), 3);
    }
}
