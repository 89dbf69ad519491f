//! Gives memory the shards have freed back to the operating system. mimalloc keeps freed pages
//! per thread and purges them (after `purge_delay`) only when that thread calls into it
//! again: a shard that goes quiet after a burst of large answers kept its peak RSS for good
//! (1.2-1.7 GiB after greedy clients vanished, from under 100 MiB). It never frees anything
//! itself and holds no state.
//!
//! The purge delay is [`PURGE_DELAY`], not mimalloc's 1 s: under a steady write load, pages
//! purged after 1 s were faulted back in (as 2 MiB transparent huge pages, zeroed by the
//! kernel) moments later, 6-13% of a shard's CPU in a write surge.

use std::ffi::{c_int, c_long};
use std::time::Duration;

/// How often each shard asks its allocator to return freed pages.
pub const MEMORY_RETURN_INTERVAL: Duration = Duration::from_secs(1);

/// How long freed memory stays with the process before it is returned: long enough that a
/// steady load reuses it, short enough that memory after a burst goes back within seconds.
pub const PURGE_DELAY: Duration = Duration::from_secs(10);

/// mimalloc.h's `mi_option_purge_delay` (milliseconds; -1 never purges).
const MI_OPTION_PURGE_DELAY: c_int = 15;
/// The environment variable through which mimalloc reads the option itself.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

// The allocator's C library, linked into every binary of this crate (the `enigmadb` binary
// makes it the global allocator; elsewhere collecting finds nothing to do).
extern crate mimalloc as _;

extern "C" {
    /// mimalloc.h: frees the calling thread's empty pages to its arenas and purges arena memory
    /// freed longer than `purge_delay` ago (all of it when `force`).
    fn mi_collect(force: bool);
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Sets the allocator's purge delay to [`PURGE_DELAY`], unless the operator chose one in
/// `MIMALLOC_PURGE_DELAY`. Called once at start, before the shards allocate.
pub fn configure_allocator() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: setting an option takes no pointers; mimalloc reads options with atomics.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY.as_millis() as c_long) };
}

/// The allocator's purge delay in milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reading an option takes no pointers.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index names mimalloc's purge delay: its default (1 s) reads back before the
    /// setting, and the setting reads back after (unless the environment chose one).
    #[test]
    fn purge_delay_option_is_the_one_set() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return;
        }
        assert_eq!(purge_delay_ms(), 1000, "mimalloc's default purge delay");
        configure_allocator();
        assert_eq!(purge_delay_ms(), PURGE_DELAY.as_millis() as i64);
    }
}
