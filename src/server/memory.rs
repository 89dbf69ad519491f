//! Gives memory the shards have freed back to the operating system. mimalloc keeps freed pages
//! per thread and purges them (after `purge_delay`, 1 s) only when that thread calls into it
//! again: a shard that goes quiet after a burst of large answers kept its peak RSS for good
//! (1.2-1.7 GiB after greedy clients vanished, from under 100 MiB). It never frees anything
//! itself and holds no state.

use std::time::Duration;

/// How often each shard asks its allocator to return freed pages.
pub const MEMORY_RETURN_INTERVAL: Duration = Duration::from_secs(1);

// The allocator's C library, linked into every binary of this crate (the `enigmadb` binary
// makes it the global allocator; elsewhere collecting finds nothing to do).
extern crate mimalloc as _;

extern "C" {
    /// mimalloc.h: frees the calling thread's empty pages to its arenas and purges arena memory
    /// freed longer than `purge_delay` ago (all of it when `force`).
    fn mi_collect(force: bool);
}

/// Runs on a shard's executor until dropped: every [`MEMORY_RETURN_INTERVAL`], returns the
/// pages this thread freed. A collection visits the thread's pages once (microseconds for a
/// shard's MemTable and cache).
pub async fn return_freed_memory() {
    loop {
        glommio::timer::sleep(MEMORY_RETURN_INTERVAL).await;
        // SAFETY: mi_collect takes no pointers and may be called from any thread at any time;
        // it only touches the calling thread's heap and the allocator's shared arenas.
        unsafe { mi_collect(false) };
    }
}
