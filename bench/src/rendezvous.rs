//! A reusable meeting point for the threads of one benchmark run (the driver and one thread per
//! shard executor), so that every shard starts its workload at the same moment and the driver
//! can read counters between phases. Unlike `std::sync::Barrier` it can be abandoned: if a
//! party cannot come (an executor failed to start), the others are released instead of hanging.

use std::sync::{Condvar, Mutex, MutexGuard};

pub struct Rendezvous {
    parties: usize,
    state: Mutex<State>,
    all_here: Condvar,
}

struct State {
    arrived: usize,
    /// Completed meetings; a waiter leaves when this moves past the one it joined.
    generation: u64,
    abandoned: bool,
}

impl Rendezvous {
    pub fn new(parties: usize) -> Rendezvous {
        assert!(parties > 0, "a rendezvous needs at least one party");
        Rendezvous {
            parties,
            state: Mutex::new(State { arrived: 0, generation: 0, abandoned: false }),
            all_here: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked (every update is one step).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Blocks until all parties have called `wait` for this meeting; true if they did, false if
    /// the rendezvous was abandoned (now or earlier).
    pub fn wait(&self) -> bool {
        let mut st = self.lock();
        if st.abandoned {
            return false;
        }
        let joined = st.generation;
        st.arrived += 1;
        if st.arrived == self.parties {
            st.arrived = 0;
            st.generation += 1;
            self.all_here.notify_all();
            return true;
        }
        while st.generation == joined && !st.abandoned {
            st = self.all_here.wait(st).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        st.generation != joined
    }

    /// Releases every waiter, now and later, with `false`.
    pub fn abandon(&self) {
        self.lock().abandoned = true;
        self.all_here.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parties_meet_repeatedly_then_an_abandoned_rendezvous_releases_everyone() {
        let r = Arc::new(Rendezvous::new(3));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || (r.wait(), r.wait(), r.wait()))
            })
            .collect();
        assert!(r.wait());
        assert!(r.wait());
        r.abandon();
        for t in threads {
            let (first, second, third) = t.join().unwrap();
            assert!(first && second && !third);
        }
        assert!(!r.wait());
    }
}
