//! A wake-up for tasks of one executor waiting on shard state ("a flush finished", "the writes
//! of this MemTable are applied"). Single-threaded: no locks, no atomics.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct Signal {
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes every task waiting now; each re-checks its condition.
    pub fn notify_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        waiters.into_iter().for_each(Waker::wake);
    }

    /// Resolves once `ready()` holds, checking it again after every notification.
    pub async fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
